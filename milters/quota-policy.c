/*++
 * NAME
 *	quota-policy 3
 * SUMMARY
 *	tn-quota-milter's decisions (see quota-policy.h)
 * DESCRIPTION
 *	A table gives each refusing result its reply (code, enhanced
 *	code, text) and its message.rejected reason; the settings switch
 *	the over-quota and suspended answers between their temporary and
 *	permanent forms. Reply texts carry no user data: the recipient is
 *	on the client's own RCPT line.
 *--*/
#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "quota-policy.h"

struct quota_policy_reply {
	const char *rcode, *xcode, *text, *reason;
};

static const char *const quota_policy_names[QUOTA_POLICY_RESULTS] = {
	[QUOTA_POLICY_PASS] = "pass",
	[QUOTA_POLICY_FOREIGN] = "foreign",
	[QUOTA_POLICY_UNENFORCED] = "unenforced",
	[QUOTA_POLICY_UNKNOWN] = "unknown",
	[QUOTA_POLICY_DELETED] = "deleted",
	[QUOTA_POLICY_SUSPENDED] = "suspended",
	[QUOTA_POLICY_TOO_LARGE] = "too_large",
	[QUOTA_POLICY_OVER_QUOTA] = "over_quota",
	[QUOTA_POLICY_TEMPFAIL] = "tempfail",
};

static const struct quota_policy_reply quota_policy_replies[QUOTA_POLICY_RESULTS] = {
	[QUOTA_POLICY_UNKNOWN] = { "550", "5.1.1", "Recipient address rejected: no such user",
				   "unknown_recipient" },
	[QUOTA_POLICY_DELETED] = { "550", "5.1.1", "Recipient address rejected: no such user",
				   "deleted" },
	[QUOTA_POLICY_SUSPENDED] = { "550", "5.2.1",
				     "Recipient address rejected: mailbox disabled",
				     "suspended" },
	[QUOTA_POLICY_TOO_LARGE] = { "552", "5.3.4",
				     "Message size exceeds the recipient's limit",
				     "message_too_large" },
	[QUOTA_POLICY_OVER_QUOTA] = { "452", "4.2.2", "Recipient mailbox is full",
				      "over_quota" },
	[QUOTA_POLICY_TEMPFAIL] = { "451", "4.3.0",
				    "Temporary lookup failure, try again later", NULL },
};

const char *quota_policy_result_name(enum quota_policy_result result)
{
	return result < QUOTA_POLICY_RESULTS ? quota_policy_names[result] : "invalid";
}

bool quota_policy_refuses(const struct quota_policy_decision *d)
{
	return d->rcode != NULL;
}

static void quota_policy_set(const struct quota_policy_settings *set,
			     enum quota_policy_result result, struct quota_policy_decision *d)
{
	const struct quota_policy_reply *rep = &quota_policy_replies[result];

	memset(d, 0, sizeof(*d));
	d->result = result;
	d->rcode = rep->rcode;
	d->xcode = rep->xcode;
	d->text = rep->text;
	d->reason = rep->reason;
	if (result == QUOTA_POLICY_OVER_QUOTA && set->over_quota_permanent) {
		d->rcode = "552";
		d->xcode = "5.2.2";
	}
	if (result == QUOTA_POLICY_SUSPENDED && set->suspended_temporary) {
		d->rcode = "450";
		d->xcode = "4.2.1";
	}
}

void quota_policy_rcpt_from_account(const struct tn_account *acct,
				    struct quota_policy_rcpt *r)
{
	memset(r, 0, sizeof(*r));
	r->address = acct->address;
	r->tenant = acct->tenant;
	r->kind = acct->kind;
	r->status = acct->status;
	r->quota = acct->quota.value;
	r->tenant_storage = acct->tenant_storage.value;
	r->max_size = acct->max_msg_size.value;
}

bool quota_policy_needs_usage(const struct quota_policy_rcpt *r, bool *mailbox_r,
			      bool *tenant_r)
{
	bool mailbox = r->kind == TN_ACCOUNT_MAILBOX && r->status == TN_STATUS_ACTIVE;

	*mailbox_r = mailbox && r->quota > 0;
	*tenant_r = mailbox && r->tenant_storage > 0;
	return *mailbox_r || *tenant_r;
}

/* limit > 0 and the quota is full or the message would overflow it. */
static bool quota_policy_over(int64_t usage, int64_t size, int64_t limit)
{
	if (limit <= 0)
		return false;
	if (size < 0)
		size = 0;
	return usage >= limit || size > limit - usage;
}

static void quota_policy_quota(const struct quota_policy_settings *set,
			       const struct quota_policy_rcpt *r, int64_t size,
			       struct quota_policy_decision *d)
{
	bool mailbox, tenant;

	if (!quota_policy_needs_usage(r, &mailbox, &tenant)) {
		quota_policy_set(set, QUOTA_POLICY_PASS, d);
		return;
	}
	if (!r->usage_known) {
		quota_policy_set(set, set->usage_unavailable_tempfail ? QUOTA_POLICY_TEMPFAIL :
				 QUOTA_POLICY_UNENFORCED, d);
		return;
	}
	if (mailbox && quota_policy_over(r->mailbox_bytes, size, r->quota)) {
		quota_policy_set(set, QUOTA_POLICY_OVER_QUOTA, d);
		d->scope = "mailbox";
		d->usage = r->mailbox_bytes;
		d->limit = r->quota;
	} else if (tenant && quota_policy_over(r->tenant_bytes, size, r->tenant_storage)) {
		quota_policy_set(set, QUOTA_POLICY_OVER_QUOTA, d);
		d->scope = "tenant";
		d->usage = r->tenant_bytes;
		d->limit = r->tenant_storage;
	} else {
		quota_policy_set(set, QUOTA_POLICY_PASS, d);
	}
}

/* The account was found: status, size, quotas. */
static void quota_policy_found(const struct quota_policy_settings *set,
			       const struct quota_policy_rcpt *r, int64_t size,
			       struct quota_policy_decision *d)
{
	if (r->status == TN_STATUS_DELETED)
		quota_policy_set(set, QUOTA_POLICY_DELETED, d);
	else if (r->status == TN_STATUS_SUSPENDED)
		quota_policy_set(set, QUOTA_POLICY_SUSPENDED, d);
	else if (r->max_size > 0 && size > r->max_size)
		quota_policy_set(set, QUOTA_POLICY_TOO_LARGE, d);
	else if (r->kind != TN_ACCOUNT_MAILBOX)
		quota_policy_set(set, QUOTA_POLICY_PASS, d);
	else
		quota_policy_quota(set, r, size, d);
}

void quota_policy_rcpt(const struct quota_policy_settings *set, enum tn_result lookup,
		       enum tn_result domain_lookup, const struct quota_policy_rcpt *r,
		       int64_t size, struct quota_policy_decision *d_r)
{
	if (lookup == TN_FOUND && r != NULL)
		quota_policy_found(set, r, size, d_r);
	else if (lookup == TN_NOTFOUND && domain_lookup == TN_FOUND)
		quota_policy_set(set, QUOTA_POLICY_UNKNOWN, d_r);
	else if (lookup == TN_NOTFOUND && domain_lookup == TN_NOTFOUND)
		quota_policy_set(set, QUOTA_POLICY_FOREIGN, d_r);
	else
		quota_policy_set(set, QUOTA_POLICY_TEMPFAIL, d_r);
}

void quota_policy_eom(const struct quota_policy_settings *set,
		      const struct quota_policy_rcpt *rcpts, size_t n, int64_t size,
		      struct quota_policy_decision *d_r, size_t *failing_r)
{
	struct quota_policy_decision first, d;

	*failing_r = 0;
	memset(&first, 0, sizeof(first));
	for (size_t i = 0; i < n; i++) {
		if (rcpts[i].tenant == NULL)
			continue;	/* foreign: nothing of ours to check */
		quota_policy_found(set, &rcpts[i], size, &d);
		if (!quota_policy_refuses(&d) || d.result == QUOTA_POLICY_TEMPFAIL)
			continue;
		if ((*failing_r)++ == 0)
			first = d;
	}
	if (n > 0 && *failing_r == n)
		*d_r = first;
	else
		quota_policy_set(set, QUOTA_POLICY_PASS, d_r);
}

int64_t quota_policy_parse_size(char *const *args)
{
	for (; args != NULL && *args != NULL; args++) {
		const char *v = *args;
		char *end;
		long long n;

		if (strncasecmp(v, "SIZE=", 5) != 0)
			continue;
		v += 5;
		if (!isdigit((unsigned char)*v) || strlen(v) > 18)
			return -1;
		errno = 0;
		n = strtoll(v, &end, 10);
		if (errno != 0 || *end != '\0')
			return -1;
		return n;
	}
	return -1;
}
