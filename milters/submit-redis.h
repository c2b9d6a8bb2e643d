/*++
 * NAME
 *	submit-redis 3h
 * SUMMARY
 *	tn-submit-milter's Redis scripts: send-limit windows, traffic out
 * DESCRIPTION
 *	docs/redis-keys.md, "tn-submit-milter" is the layout. Send limits
 *	are sliding windows of window ms over sorted sets, one member per
 *	message (rate:mbx:<address>, rate:ten:<tenant>) or per recipient
 *	(rate:rcpt:mbx:<address>, rate:rcpt:ten:<tenant>):
 *
 *	reserve   at RCPT TO: one script drops the members that left the
 *	          window, checks every limit that is set (the message
 *	          limits only for the transaction's first reserved
 *	          recipient) and, only when all have room, adds pending
 *	          members "r:<resid>" / "r:<resid>:<n>" whose score is
 *	          shifted so that they leave the window hold ms after the
 *	          reservation: a reservation nobody commits or releases
 *	          (a milter killed mid-transaction) expires by itself.
 *	          Over a limit: which one, the count, when a slot frees,
 *	          and whether this is the first refusal since the scope
 *	          last had room (rate:note:{mbx,ten}:<id>: one
 *	          ratelimit.exceeded per crossing, at most one per window).
 *	commit    at end of message: the pending members are scored now
 *	          in place (ZADD XX; they keep their name: pending and
 *	          committed differ by score only), the first `count`
 *	          recipients, the rest dropped; only the keys that hold
 *	          members (the limits set) are touched. The message and its
 *	          bytes are counted in traffic:<tenant>:<YYYYMMDDHH>
 *	          (msgs_out, bytes_out), in the same script.
 *	release   on abort and close: the pending members go.
 *	rejected  the message.rejected limiter, rejected:<tenant>:<reason>,
 *	          shared with tn-quota-milter (same semantics).
 *
 *	Scripts run with EVALSHA (the SHA1 computed here) and fall back to
 *	EVAL when the server answers NOSCRIPT (a restarted or flushed
 *	Redis), which also loads them again. Every call goes through the
 *	shared cache code's pooled connections (lib/tn-cache.h): bounded
 *	by redis_timeout and the deadline, failing at once while Redis is
 *	marked down. Thread-safe.
 *--*/
#ifndef SUBMIT_REDIS_H
#define SUBMIT_REDIS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "submit-policy.h"
#include "tn-conf.h"
#include "tn-time.h"

struct submit_redis;

/* Reservation identifiers: 16 lower-case hex digits and the NUL. */
#define SUBMIT_REDIS_RESID_SIZE 17

struct submit_redis_outcome {
	enum submit_policy_limit limit;	/* NONE: reserved */
	int64_t count;			/* members in that window */
	int64_t retry_ms;		/* until the oldest member leaves it */
	bool notify;			/* first refusal of the crossing */
};

/* From the redis_* parameters; NULL with *error_r when Redis is
 * disabled or its password file unreadable. No traffic here. */
struct submit_redis *submit_redis_create(const struct tn_conf *conf, const char **error_r);
void submit_redis_destroy(struct submit_redis **sr);
tn_msec_t submit_redis_timeout(const struct submit_redis *sr);

/* A fresh random reservation id. */
void submit_redis_resid(char buf[SUBMIT_REDIS_RESID_SIZE]);

/* Reserve recipient number rcpt (1, 2, ...) of transaction resid, and
 * the message too when first. 0 with *out_r, or -1 (Redis failed). */
int submit_redis_reserve(struct submit_redis *sr, const char *mailbox, const char *tenant,
			 const char *resid, unsigned rcpt, bool first,
			 const struct submit_policy_limits *limits, tn_msec_t window,
			 tn_msec_t hold, tn_msec_t deadline, struct submit_redis_outcome *out_r);
/* One commit, with everything it needs (strings borrowed). */
struct submit_redis_commit {
	const char *mailbox, *tenant;
	char resid[SUBMIT_REDIS_RESID_SIZE];
	unsigned reserved, count;	/* recipients reserved; of them real */
	unsigned keys_used;		/* submit_redis_keys_used() at reserve */
	bool traffic;			/* count the message and its bytes */
	int64_t bytes, wall_time;	/* traffic goes to wall_time's hour */
	tn_msec_t window, hold;
	tn_msec_t reserved_at;		/* tn_time_now_ms() of the first reserve */
	const char *session, *queue_id;	/* the caller's log context (queue_id
					 * may be NULL); not sent */
};

/* Which rate keys hold members of a transaction (bit i: rate key i,
 * mbx, ten, rcpt mbx, rcpt ten): those whose limit is set, the message
 * ones when the message was reserved (msg), the recipient ones when
 * rcpts were. The commit touches those only. */
unsigned submit_redis_keys_used(const struct submit_policy_limits *limits, bool msg,
				unsigned rcpts);
/* Commit: the members reserved are scored now where they are (the first
 * count recipients; the rest removed); traffic: count the message and
 * its bytes for the tenant in the hour of wall_time. 0 or -1. */
int submit_redis_commit(struct submit_redis *sr, const struct submit_redis_commit *c,
			tn_msec_t deadline);
/* n (at most SUBMIT_REDIS_BATCH_MAX) commits in one pipeline on one
 * connection (one round trip). ok_r[i]: commits[i] landed. Returns how
 * many did. */
#define SUBMIT_REDIS_BATCH_MAX 64
unsigned submit_redis_commit_batch(struct submit_redis *sr,
				   const struct submit_redis_commit *const *commits, unsigned n,
				   bool *ok_r, tn_msec_t deadline);
/* Drop the pending members of resid (reserved recipients). 0 or -1. */
int submit_redis_release(struct submit_redis *sr, const char *mailbox, const char *tenant,
			 const char *resid, unsigned reserved, tn_msec_t deadline);
/* The message.rejected limiter: 1 report (*suppressed_r since the
 * previous report), 0 suppressed (counted), -1 Redis failed. */
int submit_redis_rejected(struct submit_redis *sr, const char *tenant, const char *reason,
			  tn_msec_t interval, tn_msec_t deadline, int64_t *suppressed_r);

/* "YYYYMMDDHH" of wall_time (UTC) into buf. */
void submit_redis_period(int64_t wall_time, char buf[11]);

#endif
