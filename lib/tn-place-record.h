/*++
 * NAME
 *	tn-place-record 3h
 * SUMMARY
 *	record a hash placement in the directory: tnMailHost, in a worker thread
 * DESCRIPTION
 *	A mailbox that has neither tnMailHost nor tnMailPool (its own or
 *	its tenant's) is placed on the member of the default pool that
 *	rendezvous hashing picks (tn-place.h). With hash-record, that
 *	member ("host:port", its name as configured) is written to the
 *	mailbox's tnMailHost, so that the mailbox stays there whatever
 *	later happens to the pool's member list: every router delivers to
 *	a tnMailHost, and the Dovecot proxy logs the user in on its host.
 *	Two programs place: tn-lmtp-router at a mailbox's first delivery
 *	(router_placement) and the Dovecot auth driver at its first login
 *	through the proxy (dovecot_placement). Both queue the write here.
 *
 *	The write goes through the provisioning core (tn-prov.h), the
 *	project's one directory-write path: LDAP modify, then the cache
 *	invalidation of the address (Redis DEL + PUBLISH, so every router
 *	and proxy sees the host within a second), then the event (none:
 *	docs/events.md, store placement is never part of an event). It is
 *	a compare-and-write: the entry is read (tn_prov_get), left alone
 *	when it has a host or a pool by then, or its tenant has a pool
 *	(another writer, or an admin, was first: the next lookup follows
 *	what is there), else modified under the ETag just read (If-Match:
 *	slapd's assertion control on entryCSN), so a concurrent change
 *	makes the write fail instead of being overwritten (the entry is
 *	then read once more and followed).
 *
 *	The caller never waits: tn_place_record_queue() queues the job for
 *	one worker thread (placements are rare: first uses only) and
 *	returns. A job for an address already queued or being written is
 *	not queued again; at most 1,000 wait (more are dropped and counted).
 *	A failed write (directory down, timed out, refused) is logged as a
 *	warning and forgotten: the mailbox still has no host at its next
 *	use, which tries again.
 *
 *	Log lines (info, or warning for a failure and for another writer's
 *	different choice), with the caller's session and tenant:
 *	    LABEL=<address> placement recorded: tnMailHost H
 *	    LABEL=<address> placement on H not recorded: STATUS: DETAIL;
 *	        tried again at the next RETRY
 *	    LABEL=<address> placement: the directory already says H
 *	    LABEL=<address> placement: the mailbox changed meanwhile, reading it again
 *	    LABEL=<address> placement: the tenant has pool P now: not placed
 *
 *	Locking: one mutex guards the queue, the job in flight and the
 *	counters; the worker holds it only to take a job and to finish it.
 * SECURITY
 *	The bind password is read at creation (as root, where the caller
 *	is) and kept only inside the provisioning core's directory pool.
 *	Addresses reach the directory through tn-prov, which validates and
 *	escapes them.
 *--*/
#ifndef TN_PLACE_RECORD_H
#define TN_PLACE_RECORD_H

#include <stdint.h>

#include "tn-conf.h"
#include "tn-lookup.h"

enum tn_place_result {
	TN_PLACE_RECORDED,	/* written to the directory */
	TN_PLACE_ALREADY,	/* the entry had a host or pool: left alone */
	TN_PLACE_FAILED,	/* not written (directory down, refused): retried
				   at the next use */
	TN_PLACE_DROPPED,	/* not even tried: the queue was full */
	TN_PLACE_N
};

/* How a program's lines read. */
struct tn_place_record_settings {
	const char *actor_id;	/* provisioning actor (system): "tn-lmtp-router" */
	const char *label;	/* the address on log lines: "to" gives to=<a> */
	const char *writer;	/* "router": "this router's deliveries before..." */
	const char *uses;	/* "deliveries" */
	const char *retry;	/* "delivery": "tried again at the next delivery" */
};

struct tn_place_record;

/* The program's own bind DN and password file parameters (dn_param,
 * pw_param; empty: prov_ldap_bind_dn / prov_ldap_bind_password_file)
 * put in place of the provisioning account's in conf. -1 with
 * *error_r when neither is set; mode names the setting that needs
 * them ("router_placement = hash-record"). */
int tn_place_record_credentials(struct tn_conf *conf, const char *mode, const char *dn_param,
				const char *pw_param, const char **error_r);
/* The provisioning write path (tn_prov_create: reads the password file
 * now) on conf's prov_* settings; lk is borrowed for the invalidation
 * and must outlive the recorder; set's strings too. The worker thread
 * starts at tn_place_record_start() or with the first job. NULL with
 * *error_r on bad settings. */
struct tn_place_record *tn_place_record_create(const struct tn_conf *conf, struct tn_lookup *lk,
					       const struct tn_place_record_settings *set,
					       const char **error_r);
/* Start the worker now (a program that wants a failure at start). */
int tn_place_record_start(struct tn_place_record *rec, const char **error_r);
/* Stops the worker once its write in flight is done (prov_timeout at
 * most); queued placements are dropped (retried at the next use). */
void tn_place_record_destroy(struct tn_place_record **rec);
/* Record host ("host:port") for address unless a placement of it is
 * already queued or running. Never blocks on the directory; tenant and
 * session (may be NULL) are for the log. */
void tn_place_record_queue(struct tn_place_record *rec, const char *address,
			   const char *host, const char *tenant, const char *session);
/* counters by result, and placements queued or running */
void tn_place_record_stats(struct tn_place_record *rec, uint64_t counts_r[TN_PLACE_N],
			   uint64_t *pending_r);
/* "recorded", "already_placed", "failed", "dropped" */
const char *tn_place_record_result_name(enum tn_place_result res);

#endif
