/*++
 * NAME
 *	quota-policy 3h
 * SUMMARY
 *	tn-quota-milter's decisions: one recipient, one message
 * DESCRIPTION
 *	Pure functions (no libmilter, no network, no clock): what the
 *	milter answers for a recipient at RCPT TO, given the lookup's
 *	tri-state result, the account (flattened into struct
 *	quota_policy_rcpt), the usage read from Redis and the size the
 *	client declared; and what it answers for the whole message at end
 *	of message, given the real size. tests/unit/test-quota-policy.c
 *	holds the golden cases.
 *
 *	RCPT TO, checks in this order (the first that applies answers):
 *	lookup TEMPFAIL                 451 4.3.0  (never a 5xx)
 *	not found, domain ours          550 5.1.1  unknown_recipient
 *	not found, domain TEMPFAIL      451 4.3.0
 *	not found, domain not ours      continue   (Postfix's relay rules decide)
 *	deleted after the cascade       550 5.1.1  deleted
 *	suspended after the cascade     550 5.2.1  suspended (450 4.2.1 when
 *	                                           suspended_temporary)
 *	size > max message size         552 5.3.4  message_too_large
 *	alias                           continue   (its targets' quotas are
 *	                                           the stores' business)
 *	usage unknown (Redis failed)    continue, quota unenforced (451 4.3.0
 *	                                           when usage_unavailable_tempfail)
 *	mailbox full or would overflow  452 4.2.2  over_quota, scope mailbox
 *	                                           (552 5.2.2 when permanent)
 *	tenant pool likewise            452 4.2.2  over_quota, scope tenant
 *	otherwise                       continue
 *	"Full or would overflow": limit > 0 and (usage >= limit or usage +
 *	size > limit); an unknown size counts as 0. A limit of 0 is
 *	unlimited.
 *
 *	End of message: Postfix takes one answer for the whole message at
 *	that stage (a milter cannot refuse one recipient after DATA). The
 *	recipients accepted at RCPT are checked again with the real size
 *	against the usage read at RCPT; when every one of them now fails,
 *	the message is refused with the answer of the first (so a sender
 *	whose recipients are all full is told); when only some fail, the
 *	message is accepted and those recipients are left to the stores
 *	(the Dovecot tenant_quota plugin refuses at LMTP delivery).
 *--*/
#ifndef QUOTA_POLICY_H
#define QUOTA_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tn-record.h"

enum quota_policy_result {
	QUOTA_POLICY_PASS,		/* checked: continue */
	QUOTA_POLICY_FOREIGN,		/* not one of our domains: continue */
	QUOTA_POLICY_UNENFORCED,	/* usage unknown: continue unchecked */
	QUOTA_POLICY_UNKNOWN,
	QUOTA_POLICY_DELETED,
	QUOTA_POLICY_SUSPENDED,
	QUOTA_POLICY_TOO_LARGE,
	QUOTA_POLICY_OVER_QUOTA,
	QUOTA_POLICY_TEMPFAIL,
	QUOTA_POLICY_RESULTS		/* how many */
};

struct quota_policy_settings {
	bool over_quota_permanent;	/* 552 5.2.2 instead of 452 4.2.2 */
	bool suspended_temporary;	/* 450 4.2.1 instead of 550 5.2.1 */
	bool usage_unavailable_tempfail; /* Redis failed: 451 instead of unenforced */
};

/* What the milter keeps of a recipient's account (all it needs again
 * at end of message). Strings are borrowed. */
struct quota_policy_rcpt {
	const char *address;
	const char *tenant;		/* NULL: not found */
	enum tn_account_kind kind;
	enum tn_status status;
	int64_t quota;			/* mailbox storage, 0 = unlimited */
	int64_t tenant_storage;		/* pooled, 0 = unlimited */
	int64_t max_size;		/* max message size, 0 = unlimited */
	bool usage_known;		/* false: Redis did not answer */
	int64_t mailbox_bytes, tenant_bytes;
};

struct quota_policy_decision {
	enum quota_policy_result result;
	const char *rcode, *xcode;	/* NULL: continue */
	const char *text;		/* reply text (static, no user data) */
	const char *reason;		/* message.rejected reason, NULL: no event */
	const char *scope;		/* quota.exceeded: "mailbox" or "tenant" */
	int64_t usage, limit;		/* of that quota */
};

/* Fill r from an account (strings borrowed from acct). */
void quota_policy_rcpt_from_account(const struct tn_account *acct,
				    struct quota_policy_rcpt *r);
/* Which usage counters a decision needs (so that nothing is read from
 * Redis that cannot change the answer). */
bool quota_policy_needs_usage(const struct quota_policy_rcpt *r, bool *mailbox_r,
			      bool *tenant_r);

/* RCPT TO. lookup: the address's resolve; domain_lookup: the domain's,
 * asked only when lookup is TN_NOTFOUND (ignored otherwise); r: the
 * account when lookup is TN_FOUND (else may be NULL); size: SIZE= or -1. */
void quota_policy_rcpt(const struct quota_policy_settings *set, enum tn_result lookup,
		       enum tn_result domain_lookup, const struct quota_policy_rcpt *r,
		       int64_t size, struct quota_policy_decision *d_r);

/* End of message: rcpts[0..n-1] are the recipients accepted at RCPT
 * (with usage as read then), size the real size. *d_r PASS, or the
 * answer for the whole message; *failing_r how many recipients fail. */
void quota_policy_eom(const struct quota_policy_settings *set,
		      const struct quota_policy_rcpt *rcpts, size_t n, int64_t size,
		      struct quota_policy_decision *d_r, size_t *failing_r);

/* "pass", "unknown", ...: metric labels and log words. */
const char *quota_policy_result_name(enum quota_policy_result result);
/* True for results that refuse (a reply code is set). */
bool quota_policy_refuses(const struct quota_policy_decision *d);

/* The size of "SIZE=n" among MAIL FROM's ESMTP arguments (NULL-terminated
 * argv after the address), or -1 when absent or malformed. */
int64_t quota_policy_parse_size(char *const *esmtp_args);

#endif
