/*++
 * NAME
 *	tn-usage 3h
 * SUMMARY
 *	storage usage counters in Redis: atomic deltas, warnings, refusals
 * DESCRIPTION
 *	The counters of docs/redis-keys.md ("Usage counters"), under
 *	redis_key_prefix: usage:ten:<tenant> and usage:mbx:<address>, hashes
 *	{bytes, messages}; usage:warn:ten:<tenant> and
 *	usage:warn:mbx:<address>, hashes threshold -> 1 while crossed; usage:exc:ten:<tenant> and usage:exc:mbx:<address>,
 *	hashes {until, suppressed} rate-limiting quota.exceeded reports.
 *
 *	tn_usage_add() applies one store's delta to the tenant's counter
 *	(and the mailbox's mirror) in one script, so concurrent writers on
 *	any number of stores never lose an update, and in the same round
 *	trip arms the warnings: a threshold is reported once when a growing
 *	usage reaches it, and re-armed when usage falls back below it. A
 *	counter that would go below zero (mail stored before the counter
 *	existed, then expunged) is held at zero; reconciliation
 *	(tnctl usage reconcile) sets the true values.
 *
 *	Connections, timeouts and the fail-fast after a failure are the
 *	shared cache's (tn-cache.h): every call returns within redis_timeout
 *	(or its deadline), and -1 when Redis did not answer.
 *
 *	Thread-safe as tn-cache is. Errors: tn_cache_last_error().
 *--*/
#ifndef TN_USAGE_H
#define TN_USAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tn-conf.h"
#include "tn-time.h"

/* Most warning thresholds (percent) a caller may pass. */
#define TN_USAGE_THRESHOLDS_MAX 8

struct tn_usage;

struct tn_usage_result {
	int64_t bytes, messages;		/* the tenant's usage after the delta */
	int64_t mailbox_bytes, mailbox_messages;	/* the mailbox's (0: no address) */
	unsigned crossed[TN_USAGE_THRESHOLDS_MAX];	/* newly crossed by the tenant */
	unsigned n_crossed;
	unsigned crossed_mailbox[TN_USAGE_THRESHOLDS_MAX];	/* by the mailbox */
	unsigned n_crossed_mailbox;
};

/* Warnings to check with a delta: thresholds (percent, ascending) of the
 * tenant's and the mailbox's limits (0: that one unlimited, no check). */
struct tn_usage_limits {
	int64_t tenant_limit, mailbox_limit;
	const unsigned *thresholds;
	unsigned n_thresholds;
};

/* From tenantmail.conf's redis_* parameters (tn_lookup_params must be
 * among conf's tables). NULL with *error_r when Redis is disabled or a
 * password file is unreadable. No network traffic here. */
struct tn_usage *tn_usage_create(const struct tn_conf *conf, const char **error_r);
void tn_usage_destroy(struct tn_usage **usage);

/* Add (dbytes, dmessages) to usage:ten:<tenant> and, when address is not
 * NULL, to usage:mbx:<address>; with limits (NULL: none) and a growing
 * usage, report the thresholds each newly reaches (usage:warn:ten:,
 * usage:warn:mbx:), and re-arm those it is below. 0 with *result_r, or -1. */
int tn_usage_add(struct tn_usage *usage, const char *tenant, const char *address,
		 int64_t dbytes, int64_t dmessages, const struct tn_usage_limits *limits,
		 tn_msec_t deadline, struct tn_usage_result *result_r);
/* Read usage:<kind>:<id> (kind "ten" or "mbx"; absent reads as 0). */
int tn_usage_get(struct tn_usage *usage, const char *kind, const char *id,
		 tn_msec_t deadline, int64_t *bytes_r, int64_t *messages_r);
/* Read usage:mbx:<address> and usage:ten:<tenant> in one round trip
 * ({bytes, messages} each; absent reads as 0). 0 or -1. */
int tn_usage_get_pair(struct tn_usage *usage, const char *address, const char *tenant,
		      tn_msec_t deadline, int64_t mailbox_r[2], int64_t tenant_r[2]);
/* Overwrite usage:<kind>:<id> (reconciliation). 0 or -1. */
int tn_usage_set(struct tn_usage *usage, const char *kind, const char *id,
		 int64_t bytes, int64_t messages, tn_msec_t deadline);
/* Sum usage:mbx:<address> over addresses[0..n-1] and, when write, set
 * usage:ten:<tenant> to the sum -- read and written in one script: every
 * writer changes a mailbox and its tenant together, so the sum is exact
 * at that moment whatever other stores do. sums_r: {bytes, messages};
 * old_r: the tenant's counter before. 0 or -1. */
int tn_usage_sum_tenant(struct tn_usage *usage, const char *tenant,
			const char *const *addresses, size_t n, bool write,
			tn_msec_t deadline, int64_t sums_r[2], int64_t old_r[2]);
/* A refusal on a quota, kind "ten" (the tenant's pool) or "mbx" (a
 * mailbox): 1 when it is to be reported (*suppressed_r: refusals not
 * reported since the previous report), 0 when another was reported less
 * than window ms ago (this one is counted), -1 on failure. */
int tn_usage_exceeded(struct tn_usage *usage, const char *kind, const char *id,
		      tn_msec_t window, tn_msec_t deadline, int64_t *suppressed_r);
/* redis_timeout: the deadline callers give (now + this). */
tn_msec_t tn_usage_timeout(const struct tn_usage *usage);

/* The warning thresholds of a setting such as "80 95 100": percents
 * 1..1000, at most TN_USAGE_THRESHOLDS_MAX, sorted and made unique
 * into thresholds_r. Returns how many (0 for an empty text), or -1
 * with *error_r (static text). */
int tn_usage_parse_thresholds(const char *text, unsigned thresholds_r[TN_USAGE_THRESHOLDS_MAX],
			      const char **error_r);

#endif
