/*++
 * NAME
 *	submit-policy 3
 * SUMMARY
 *	tn-submit-milter's decisions (see submit-policy.h)
 * DESCRIPTION
 *	A table gives each refusing result its reply (code, enhanced
 *	code, text) and its message.rejected reason; settings switch the
 *	suspended answer between its permanent and temporary forms. Reply
 *	texts carry no user data (the client sent the address itself);
 *	the send-limit text carries the limit and the minutes to wait.
 *--*/
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "submit-policy.h"
#include "tn-log.h"

struct submit_policy_reply {
	const char *rcode, *xcode, *text, *reason;
};

static const char *const submit_policy_names[SUBMIT_POLICY_RESULTS] = {
	[SUBMIT_POLICY_PASS] = "pass",
	[SUBMIT_POLICY_UNCHECKED] = "unchecked",
	[SUBMIT_POLICY_UNLIMITED] = "unlimited",
	[SUBMIT_POLICY_UNAUTHENTICATED] = "unauthenticated",
	[SUBMIT_POLICY_NOT_OWNED] = "not_owned",
	[SUBMIT_POLICY_SUSPENDED] = "suspended",
	[SUBMIT_POLICY_TOO_LARGE] = "too_large",
	[SUBMIT_POLICY_RATE_LIMITED] = "rate_limited",
	[SUBMIT_POLICY_TEMPFAIL] = "tempfail",
};

static const struct submit_policy_reply submit_policy_replies[SUBMIT_POLICY_RESULTS] = {
	[SUBMIT_POLICY_UNAUTHENTICATED] = { "530", "5.7.0",
					    "Authentication required on the submission port",
					    NULL },
	[SUBMIT_POLICY_NOT_OWNED] = { "553", "5.7.1",
				      "Sender address rejected: not owned by the"
				      " authenticated user", "sender_not_owned" },
	[SUBMIT_POLICY_SUSPENDED] = { "550", "5.7.1", "Sending is suspended for this account",
				      NULL },
	[SUBMIT_POLICY_TOO_LARGE] = { "552", "5.3.4",
				      "Message size exceeds the limit of your plan",
				      "message_too_large" },
	[SUBMIT_POLICY_RATE_LIMITED] = { "450", "4.7.1", "Send limit reached, try again later",
					 "rate_limited" },
	[SUBMIT_POLICY_TEMPFAIL] = { "451", "4.3.0", "Temporary lookup failure, try again later",
				     NULL },
};

static const char *const submit_policy_limit_names[SUBMIT_LIMITS] = {
	[SUBMIT_LIMIT_NONE] = "none",
	[SUBMIT_LIMIT_MAILBOX_MESSAGES] = "mailbox_messages",
	[SUBMIT_LIMIT_TENANT_MESSAGES] = "tenant_messages",
	[SUBMIT_LIMIT_MAILBOX_RCPTS] = "mailbox_recipients",
	[SUBMIT_LIMIT_TENANT_RCPTS] = "tenant_recipients",
};

const char *submit_policy_result_name(enum submit_policy_result result)
{
	return result < SUBMIT_POLICY_RESULTS ? submit_policy_names[result] : "invalid";
}

const char *submit_policy_limit_name(enum submit_policy_limit limit)
{
	return limit < SUBMIT_LIMITS ? submit_policy_limit_names[limit] : "invalid";
}

const char *submit_policy_limit_scope(enum submit_policy_limit limit)
{
	return limit == SUBMIT_LIMIT_TENANT_MESSAGES || limit == SUBMIT_LIMIT_TENANT_RCPTS ?
		"tenant" : "mailbox";
}

const char *submit_policy_limit_unit(enum submit_policy_limit limit)
{
	return limit == SUBMIT_LIMIT_MAILBOX_RCPTS || limit == SUBMIT_LIMIT_TENANT_RCPTS ?
		"recipients" : "messages";
}

bool submit_policy_refuses(const struct submit_policy_decision *d)
{
	return d->rcode != NULL;
}

static void submit_policy_set(enum submit_policy_result result,
			      struct submit_policy_decision *d)
{
	const struct submit_policy_reply *r = &submit_policy_replies[result];

	d->result = result;
	d->rcode = r->rcode;
	d->xcode = r->xcode;
	d->text = r->text;
	d->reason = r->reason;
	d->how = NULL;
}

static void submit_policy_pass(const char *how, struct submit_policy_decision *d)
{
	submit_policy_set(SUBMIT_POLICY_PASS, d);
	d->how = how;
}

void submit_policy_login_from_account(const struct tn_account *acct, enum tn_result res,
				      const char *address, struct submit_policy_login *l)
{
	memset(l, 0, sizeof(*l));
	l->address = address;
	l->res = res;
	if (res != TN_FOUND || acct == NULL)
		return;
	l->kind = acct->kind;
	l->tenant = acct->tenant;
	l->status = acct->status;
	l->max_size = acct->max_msg_size.value;
}

/* The directory's value, or the default when nothing set one. */
static int64_t submit_policy_limit_of(const struct tn_limit *lim, int64_t fallback)
{
	return lim->from == TN_LEVEL_DEFAULT ? fallback : lim->value;
}

void submit_policy_limits(const struct submit_policy_settings *set,
			  const struct tn_account *acct, struct submit_policy_limits *l)
{
	memset(l, 0, sizeof(*l));
	l->value[SUBMIT_LIMIT_MAILBOX_MESSAGES] =
		submit_policy_limit_of(&acct->send_rate, set->send_rate);
	l->value[SUBMIT_LIMIT_TENANT_MESSAGES] =
		submit_policy_limit_of(&acct->tenant_send_rate, set->tenant_send_rate);
	l->value[SUBMIT_LIMIT_MAILBOX_RCPTS] = set->rcpt_rate;
	l->value[SUBMIT_LIMIT_TENANT_RCPTS] = set->tenant_rcpt_rate;
	for (int i = 0; i < SUBMIT_LIMITS; i++) {
		if (l->value[i] < 0)
			l->value[i] = 0;
	}
}

static bool submit_policy_has_login(const struct submit_policy_login *login)
{
	return login->address != NULL && *login->address != '\0';
}

/* The login's own checks; true when they answered. */
static bool submit_policy_login_check(const struct submit_policy_settings *set,
				      const struct submit_policy_login *login, int64_t size,
				      struct submit_policy_decision *d)
{
	if (!submit_policy_has_login(login)) {
		if (set->require_auth)
			submit_policy_set(SUBMIT_POLICY_UNAUTHENTICATED, d);
		else
			submit_policy_set(SUBMIT_POLICY_UNCHECKED, d);
		return true;
	}
	if (login->res == TN_TEMPFAIL) {
		submit_policy_set(SUBMIT_POLICY_TEMPFAIL, d);
		return true;
	}
	if (login->res == TN_NOTFOUND || login->kind != TN_ACCOUNT_MAILBOX) {
		submit_policy_set(SUBMIT_POLICY_NOT_OWNED, d);
		return true;
	}
	if (login->status != TN_STATUS_ACTIVE) {
		submit_policy_set(SUBMIT_POLICY_SUSPENDED, d);
		if (set->suspended_temporary && login->status == TN_STATUS_SUSPENDED) {
			d->rcode = "450";
			d->xcode = "4.7.1";
		}
		return true;
	}
	if (size >= 0 && login->max_size > 0 && size > login->max_size) {
		submit_policy_set(SUBMIT_POLICY_TOO_LARGE, d);
		return true;
	}
	return false;
}

bool submit_policy_needs_sender(const struct submit_policy_settings *set,
				const struct submit_policy_login *login, const char *sender)
{
	(void)set;
	return submit_policy_has_login(login) && login->res == TN_FOUND &&
	       *sender != '\0' && strcmp(sender, login->address) != 0;
}

bool submit_policy_needs_domain(const struct submit_policy_settings *set,
				const struct submit_policy_sender *sender)
{
	return set->tenant_domains && sender->res == TN_NOTFOUND &&
	       strchr(sender->address, '@') != NULL;
}

static bool submit_policy_targets_include(const char *const *targets, const char *login)
{
	for (size_t i = 0; targets != NULL && targets[i] != NULL; i++) {
		if (strcmp(targets[i], login) == 0)
			return true;
	}
	return false;
}

static bool submit_policy_same(const char *a, const char *b)
{
	return a != NULL && b != NULL && strcmp(a, b) == 0;
}

/* The sender of an active login, looked up. */
static void submit_policy_owner(const struct submit_policy_settings *set,
				const struct submit_policy_login *login,
				const struct submit_policy_sender *s,
				struct submit_policy_decision *d)
{
	if (s == NULL || s->res == TN_TEMPFAIL) {
		submit_policy_set(SUBMIT_POLICY_TEMPFAIL, d);
		return;
	}
	if (s->res == TN_FOUND) {
		if (!submit_policy_same(s->tenant, login->tenant))
			submit_policy_set(SUBMIT_POLICY_NOT_OWNED, d);
		else if (s->kind == TN_ACCOUNT_ALIAS &&
			 submit_policy_targets_include(s->targets, login->address))
			submit_policy_pass("alias", d);
		else if (set->tenant_domains)
			submit_policy_pass("tenant_domain", d);
		else
			submit_policy_set(SUBMIT_POLICY_NOT_OWNED, d);
		return;
	}
	if (!submit_policy_needs_domain(set, s))
		submit_policy_set(SUBMIT_POLICY_NOT_OWNED, d);
	else if (s->domain_res == TN_TEMPFAIL)
		submit_policy_set(SUBMIT_POLICY_TEMPFAIL, d);
	else if (s->domain_res == TN_FOUND && submit_policy_same(s->domain_tenant, login->tenant))
		submit_policy_pass("tenant_domain", d);
	else
		submit_policy_set(SUBMIT_POLICY_NOT_OWNED, d);
}

void submit_policy_mail(const struct submit_policy_settings *set,
			const struct submit_policy_login *login, const char *sender_address,
			const struct submit_policy_sender *sender, int64_t size,
			struct submit_policy_decision *d)
{
	memset(d, 0, sizeof(*d));
	if (submit_policy_login_check(set, login, size, d))
		return;
	if (*sender_address == '\0') {
		if (set->null_sender_refused)
			submit_policy_set(SUBMIT_POLICY_NOT_OWNED, d);
		else
			submit_policy_pass("null", d);
		return;
	}
	if (strcmp(sender_address, login->address) == 0) {
		submit_policy_pass("own", d);
		return;
	}
	submit_policy_owner(set, login, sender, d);
}

void submit_policy_rcpt(const struct submit_policy_settings *set, bool redis_failed,
			enum submit_policy_limit limit, int64_t limit_value, int64_t retry_ms,
			struct submit_policy_decision *d)
{
	int64_t minutes;

	memset(d, 0, sizeof(*d));
	if (redis_failed) {
		submit_policy_set(set->redis_unavailable_tempfail ? SUBMIT_POLICY_TEMPFAIL :
				  SUBMIT_POLICY_UNLIMITED, d);
		return;
	}
	if (limit == SUBMIT_LIMIT_NONE || limit >= SUBMIT_LIMITS) {
		submit_policy_pass(NULL, d);
		return;
	}
	submit_policy_set(SUBMIT_POLICY_RATE_LIMITED, d);
	if (retry_ms < 0)
		retry_ms = 0;
	minutes = (retry_ms + 59999) / 60000;
	if (minutes < 1)
		minutes = 1;
	snprintf(d->text_buf, sizeof(d->text_buf),
		 "Send limit reached (%" PRId64 " %s per hour for this %s),"
		 " try again in %" PRId64 " minute%s", limit_value,
		 submit_policy_limit_unit(limit),
		 strcmp(submit_policy_limit_scope(limit), "tenant") == 0 ? "organisation" :
		 "mailbox", minutes, minutes == 1 ? "" : "s");
	d->text = d->text_buf;
}

void submit_policy_eom(const struct submit_policy_login *login, int64_t size,
		       struct submit_policy_decision *d)
{
	memset(d, 0, sizeof(*d));
	if (login != NULL && login->max_size > 0 && size > login->max_size)
		submit_policy_set(SUBMIT_POLICY_TOO_LARGE, d);
	else
		submit_policy_pass(NULL, d);
}

void submit_policy_address(const char *arg, char *buf, size_t size)
{
	size_t len = strlen(arg);
	char tmp[SUBMIT_POLICY_ADDRESS_MAX + 1];

	if (len >= 2 && arg[0] == '<' && arg[len - 1] == '>') {
		arg++;
		len -= 2;
	}
	if (len > SUBMIT_POLICY_ADDRESS_MAX)
		len = SUBMIT_POLICY_ADDRESS_MAX;
	for (size_t i = 0; i < len; i++)
		tmp[i] = (char)tolower((unsigned char)arg[i]);
	tn_log_sanitize(buf, size, tmp, len);
}

int64_t submit_policy_parse_size(char *const *args)
{
	for (size_t i = 0; args != NULL && args[i] != NULL; i++) {
		const char *v;
		char *end;
		long long n;

		if (strncasecmp(args[i], "SIZE=", 5) != 0)
			continue;
		v = args[i] + 5;
		if (!isdigit((unsigned char)*v))
			return -1;
		errno = 0;
		n = strtoll(v, &end, 10);
		if (errno != 0 || *end != '\0' || n < 0)
			return -1;
		return n;
	}
	return -1;
}
