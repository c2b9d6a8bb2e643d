/*++
 * NAME
 *	submit-policy 3h
 * SUMMARY
 *	tn-submit-milter's decisions: the sender, the send limits, the size
 * DESCRIPTION
 *	Pure functions (no libmilter, no network, no clock): what the
 *	submission milter answers, given the SASL login, the lookups'
 *	tri-state results (flattened into struct submit_policy_login and
 *	struct submit_policy_sender), the outcome of a send-limit
 *	reservation and the message size. tests/unit/test-submit-policy.c
 *	holds the golden cases.
 *
 *	MAIL FROM, checks in this order (the first that applies answers):
 *	no {auth_authen}                530 5.7.0  unauthenticated (continue,
 *	                                           unchecked, when
 *	                                           require_auth is off)
 *	login lookup TEMPFAIL           451 4.3.0
 *	login not found, or not a       553 5.7.1  sender_not_owned (a login
 *	  mailbox                                  we cannot place owns nothing)
 *	login deleted after cascade     550 5.7.1  (no event: the state is
 *	                                           the billing system's own)
 *	login suspended after cascade   550 5.7.1  (450 4.7.1 when
 *	                                           suspended_temporary)
 *	SIZE= > the login's max size    552 5.3.4  message_too_large
 *	null sender <>                  continue   (553 5.7.1 when
 *	                                           null_sender_refused)
 *	sender == login                 continue   how=own
 *	sender lookup TEMPFAIL          451 4.3.0
 *	sender an alias of the login's  continue   how=alias
 *	  tenant whose expanded
 *	  targets include the login
 *	sender in a domain of the       continue   how=tenant_domain (only
 *	  login's tenant                           with tenant_domains)
 *	  (domain lookup TEMPFAIL       451 4.3.0  only asked then)
 *	otherwise                       553 5.7.1  sender_not_owned
 *
 *	RCPT TO: the send-limit reservation's outcome (submit-redis.h):
 *	reserved -> continue; limit reached -> 450 4.7.1 rate_limited,
 *	with the time to wait in the text; Redis unanswered -> continue
 *	unchecked (451 4.3.0 when redis_unavailable_tempfail).
 *
 *	End of message: the real size against the login's max size
 *	(552 5.3.4); otherwise continue.
 *
 *	Limits (submit_policy_limits()): messages per hour per mailbox and
 *	per tenant come from the directory (tnSendRate on the mailbox or
 *	the tenant plan, tnTenantSendRate on the plan); when neither sets
 *	one, the configured defaults apply. Recipients per hour have no
 *	directory attribute: they are configuration only. 0 is unlimited.
 *--*/
#ifndef SUBMIT_POLICY_H
#define SUBMIT_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tn-record.h"

enum submit_policy_result {
	SUBMIT_POLICY_PASS,		/* checked: continue */
	SUBMIT_POLICY_UNCHECKED,	/* unauthenticated, allowed by setting */
	SUBMIT_POLICY_UNLIMITED,	/* Redis unanswered: continue, limits unenforced */
	SUBMIT_POLICY_UNAUTHENTICATED,
	SUBMIT_POLICY_NOT_OWNED,
	SUBMIT_POLICY_SUSPENDED,
	SUBMIT_POLICY_TOO_LARGE,
	SUBMIT_POLICY_RATE_LIMITED,
	SUBMIT_POLICY_TEMPFAIL,
	SUBMIT_POLICY_RESULTS		/* how many */
};

/* Which limit a reservation met (submit-redis.h answers the same). */
enum submit_policy_limit {
	SUBMIT_LIMIT_NONE,
	SUBMIT_LIMIT_MAILBOX_MESSAGES,
	SUBMIT_LIMIT_TENANT_MESSAGES,
	SUBMIT_LIMIT_MAILBOX_RCPTS,
	SUBMIT_LIMIT_TENANT_RCPTS,
	SUBMIT_LIMITS			/* how many (with NONE) */
};

struct submit_policy_settings {
	bool require_auth;		/* no login: 530 5.7.0 (else unchecked) */
	bool tenant_domains;		/* any address of a domain of the login's tenant */
	bool null_sender_refused;	/* <>: 553 5.7.1 (else allowed) */
	bool suspended_temporary;	/* 450 4.7.1 instead of 550 5.7.1 */
	bool redis_unavailable_tempfail; /* 451 4.3.0 instead of unlimited */
	int64_t send_rate;		/* default messages/hour per mailbox */
	int64_t tenant_send_rate;	/* default messages/hour per tenant */
	int64_t rcpt_rate;		/* recipients/hour per mailbox */
	int64_t tenant_rcpt_rate;	/* recipients/hour per tenant */
};

/* Limits in force for one login, 0 = unlimited, indexed by
 * enum submit_policy_limit (NONE unused). */
struct submit_policy_limits {
	int64_t value[SUBMIT_LIMITS];
};

/* The authenticated login, as looked up. Strings borrowed. */
struct submit_policy_login {
	const char *address;		/* {auth_authen}, normalised; NULL or "": none */
	enum tn_result res;
	enum tn_account_kind kind;
	const char *tenant;
	enum tn_status status;
	int64_t max_size;		/* 0 = unlimited */
};

/* The envelope sender, as looked up (only what the decision needs). */
struct submit_policy_sender {
	const char *address;		/* normalised, "" for <> */
	enum tn_result res;		/* address lookup */
	enum tn_account_kind kind;
	const char *tenant;
	const char *const *targets;	/* alias: expanded, NULL-terminated */
	enum tn_result domain_res;	/* domain lookup, when asked */
	const char *domain_tenant;
};

struct submit_policy_decision {
	enum submit_policy_result result;
	const char *rcode, *xcode;	/* NULL: continue */
	const char *text;		/* reply text (no user data) */
	const char *reason;		/* message.rejected reason, NULL: no event */
	const char *how;		/* MAIL FROM pass: own, alias, tenant_domain, null */
	char text_buf[160];		/* text when it carries a figure */
};

/* Fill a login from an account (strings borrowed from acct). */
void submit_policy_login_from_account(const struct tn_account *acct, enum tn_result res,
				      const char *address, struct submit_policy_login *l_r);
/* The limits of a login's account after the configured defaults. */
void submit_policy_limits(const struct submit_policy_settings *set,
			  const struct tn_account *acct, struct submit_policy_limits *l_r);

/* Does the sender decision need a lookup of the sender address (*address_r)
 * or, after it, of the sender's domain (*domain_r)? Given what is known. */
bool submit_policy_needs_sender(const struct submit_policy_settings *set,
				const struct submit_policy_login *login,
				const char *sender);
bool submit_policy_needs_domain(const struct submit_policy_settings *set,
				const struct submit_policy_sender *sender);

/* MAIL FROM. sender may be NULL when no lookup was needed (then only
 * its address, sender_address, counts). size: SIZE= or -1. */
void submit_policy_mail(const struct submit_policy_settings *set,
			const struct submit_policy_login *login, const char *sender_address,
			const struct submit_policy_sender *sender, int64_t size,
			struct submit_policy_decision *d_r);

/* RCPT TO, after a reservation: limit NONE = reserved; redis_failed:
 * Redis did not answer; else the limit reached, its value and how many
 * milliseconds until a slot frees. */
void submit_policy_rcpt(const struct submit_policy_settings *set, bool redis_failed,
			enum submit_policy_limit limit, int64_t limit_value, int64_t retry_ms,
			struct submit_policy_decision *d_r);

/* End of message: the real size against the login's max size. */
void submit_policy_eom(const struct submit_policy_login *login, int64_t size,
		       struct submit_policy_decision *d_r);

const char *submit_policy_result_name(enum submit_policy_result result);
/* "mailbox" or "tenant" (ratelimit.exceeded's scope), "messages" or
 * "recipients" (the unit), and a metric label for a limit. */
const char *submit_policy_limit_scope(enum submit_policy_limit limit);
const char *submit_policy_limit_unit(enum submit_policy_limit limit);
const char *submit_policy_limit_name(enum submit_policy_limit limit);
bool submit_policy_refuses(const struct submit_policy_decision *d);

/* An SMTP path argument ("<a@b>", "a@b", "<>") into buf: without the
 * angle brackets, lower case, printable (tn_log_sanitize()), at most
 * SUBMIT_POLICY_ADDRESS_MAX bytes of the original. */
#define SUBMIT_POLICY_ADDRESS_MAX 320
void submit_policy_address(const char *arg, char *buf, size_t size);
/* The size of "SIZE=n" among MAIL FROM's ESMTP arguments (NULL-terminated),
 * or -1 when absent or malformed. */
int64_t submit_policy_parse_size(char *const *esmtp_args);

#endif
