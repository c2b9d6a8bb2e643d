/*++
 * NAME
 *	tn-outbox 3h
 * SUMMARY
 *	durable event outbox: append returns when the event is on disk
 * DESCRIPTION
 *	Every producer (milter threads, Dovecot processes running as the
 *	mail user, tn-provisiond) records billing events here; tn-hookd
 *	delivers them later (docs/outbox.md). tn_outbox_append() returns 0
 *	only when the event is durable on local disk: written to tmp/ (a
 *	line of its batch's segment), synced together with the tenant's
 *	counter, renamed into new/ and new/ fsync'ed. On -1 nothing of that
 *	event is visible in new/ and the tenant's sequence counter does not
 *	count it (the caller fails its request: provisioning refuses, a
 *	milter tempfails).
 *
 *	Group commit: the appends of one outbox object that arrive while
 *	another batch is being committed wait for it and are committed
 *	together by one of them (the leader), sharing one file and its
 *	syncs: the batch's events are the lines of one segment file, made
 *	durable with the counters by one syncfs(2) (or, sync =
 *	TN_OUTBOX_SYNC_FSYNC, an fdatasync of each counter, then of the
 *	segment), then renamed into new/, and one fsync of new/. syncfs
 *	also writes out whatever else is dirty on that file system: give the
 *	outbox a file system of its own, or use TN_OUTBOX_SYNC_FSYNC. Each
 *	event still gets its own line, number and result: a member that
 *	fails on its own (bad input, too large once numbered, its tenant
 *	locked elsewhere past lock_timeout_ms, its counter unreadable or not
 *	written) is left out of the segment before it is written and fails
 *	alone; a failure on the segment itself (its write, the sync, the
 *	rename, the fsync of new/) fails the batch, and then nothing of it
 *	is in new/. Share one outbox object between the threads of a process
 *	to get the benefit (a process normally has one).
 *
 *	Layout under dir (made by the install step, never by this code):
 *	tmp/ files being written, new/ durable events: segments
 *	"<id>.json", each the events of one batch (1 to
 *	TN_OUTBOX_SEGMENT_EVENTS), one envelope and a newline per line,
 *	tenant by tenant in sequence order, named after the first line's
 *	id (a one-event segment is one event file); seq/ one counter file
 *	per tenant. All three are mode 2770, group
 *	tenantmail; every producer's user is in that group; files are
 *	0660 whatever the process umask.
 *
 *	The envelope, one compact JSON object and a newline:
 *	{"id","type","occurred_at","tenant","sequence","origin","data"}:
 *	id is a UUIDv7, occurred_at RFC 3339 UTC with milliseconds (the
 *	time of the call), sequence the tenant's next number on this node
 *	(1, 2, ... across all processes using dir; a gap means an append
 *	that never returned), origin the node's name: receivers order and
 *	look for gaps per (tenant, origin).
 *
 *	Input rules (anything else is refused, nothing written):
 *	type    ^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$, at most 64 bytes;
 *	tenant  ^[a-z0-9][a-z0-9._-]{0,62}$ (lowercase only: the caller
 *	        lower-cases; LDAP compares tenant ids case-insensitively,
 *	        and one tenant must have one counter);
 *	data    a JSON object (borrowed: read during the call only);
 *	the encoded event at most TN_OUTBOX_EVENT_MAX bytes.
 *	origin (a setting) ^[A-Za-z0-9][A-Za-z0-9.-]{0,62}$; NULL or ""
 *	means gethostname(2). An invalid origin (or host name) makes
 *	tn_outbox_check() and every append fail with a message saying so.
 *
 *	Thread-safe; an outbox object may be shared by any number of
 *	threads, and any number of processes may use the same dir. Appends
 *	for one tenant are serialised by an exclusive flock(2) on the
 *	tenant's counter file, held by the leader for the batch, so
 *	sequence order is the order in which events become visible in
 *	new/ (a batch's events together). A leader never blocks on a lock while holding others: it
 *	tries the tenants of a batch in name order without waiting, and a
 *	member whose tenant is busy goes to a later batch, retrying with a
 *	back-off until lock_timeout_ms after the call (then an error, like
 *	any other failure), without delaying the other members.
 *
 *	Do not use an outbox object in a child forked while another thread
 *	was appending through it (the child would wait for a leader that
 *	is not there); a child makes its own object.
 *
 *	Errors: *error_r points to thread-local text naming the path and
 *	the system error, valid until the same thread's next outbox call.
 *--*/
#ifndef TN_OUTBOX_H
#define TN_OUTBOX_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include <jansson.h>

#include "tn-conf.h"

/* Largest encoded event, newline included. */
#define TN_OUTBOX_EVENT_MAX (64 * 1024)
/* Most events in one segment file (one group commit), and its largest size. */
#define TN_OUTBOX_SEGMENT_EVENTS 128
#define TN_OUTBOX_SEGMENT_MAX (TN_OUTBOX_SEGMENT_EVENTS * TN_OUTBOX_EVENT_MAX)
/* tmp/free.<n>: a delivered segment's file the consumer hands back for
 * reuse (docs/outbox.md, "Reused files"). */
#define TN_OUTBOX_FREE_PREFIX "free."
/* Longest type, tenant and origin. */
#define TN_OUTBOX_TYPE_MAX 64
#define TN_OUTBOX_TENANT_MAX 63
#define TN_OUTBOX_ORIGIN_MAX 63
/* Size of an id buffer: 36 characters and the NUL. */
#define TN_OUTBOX_ID_SIZE 37

/* How a batch makes its event files and counters durable. */
enum tn_outbox_sync {
	TN_OUTBOX_SYNC_SYNCFS,	/* one syncfs(2) on the outbox file system */
	TN_OUTBOX_SYNC_FSYNC,	/* one fdatasync(2) per file */
};

struct tn_outbox_settings {
	const char *dir;		/* holds tmp/ new/ seq/ */
	const char *origin;		/* node name; NULL or "": gethostname() */
	enum tn_outbox_sync sync;	/* 0: TN_OUTBOX_SYNC_SYNCFS */
	uint64_t max_events;		/* refuse at this many files (segments) in new/; 0: no limit */
	uint64_t min_free_bytes;	/* refuse below this free space; 0: no check */
	mode_t file_mode;		/* 0: 0660 */
	int64_t lock_timeout_ms;	/* wait for the tenant's lock; 0: 5 s */
};

struct tn_outbox;

extern const struct tn_conf_param tn_outbox_params[];

/* Never fails; touches no file (see tn_outbox_check()). */
struct tn_outbox *tn_outbox_create(const struct tn_outbox_settings *set);
/* The same from tenantmail.conf's outbox_* parameters (tn_outbox_params). */
struct tn_outbox *tn_outbox_create_conf(const struct tn_conf *conf);
void tn_outbox_destroy(struct tn_outbox **obp);

/* The origin written into this object's events (valid or not). */
const char *tn_outbox_origin(const struct tn_outbox *ob);

/* Append one event; 0 when durable, -1 with *error_r. On success
 * id_r holds the event id and *sequence_r its sequence number. */
int tn_outbox_append(struct tn_outbox *ob, const char *type, const char *tenant,
		     json_t *data, char id_r[TN_OUTBOX_ID_SIZE],
		     uint64_t *sequence_r, const char **error_r);

/* After tn_outbox_append() returned -1 in this thread: true when the
 * event itself was at fault (invalid, or too large once encoded), so
 * that retrying cannot help (tnctl exits 65, a daemon answers 4xx);
 * false for a failing disk, a full outbox or a lock timeout. */
bool tn_outbox_failed_on_input(void);

/* The input rules of tn_outbox_append() alone: 0, or -1 with *error_r
 * (for callers that must tell bad input from a failing disk). */
int tn_outbox_validate(const char *type, const char *tenant, json_t *data,
		       const char **error_r);

/* For start-up: the origin is valid; dir, tmp/, new/ and seq/ exist,
 * are directories this process may write, and tmp/, new/ and seq/
 * share one file system. */
int tn_outbox_check(struct tn_outbox *ob, const char **error_r);

#endif
