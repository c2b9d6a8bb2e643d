/*++
 * NAME
 *	tnctl 1h
 * SUMMARY
 *	what tnctl's command files share
 * DESCRIPTION
 *	tnctl.c holds main(), the configuration and the command table;
 *	each group of commands lives in a file of its own and exports a
 *	table of subcommands (struct tnctl_command, ended by a NULL name)
 *	that tnctl.c dispatches to and prints in its usage message.
 *
 *	A command's run() gets argv[0] = its own name and its arguments
 *	after it; getopt is reset before the call. It returns the exit
 *	status: 0, 1 (not found, mismatch), EX_USAGE (the dispatcher then
 *	prints the command's usage), EX_DATAERR, EX_TEMPFAIL, EX_CONFIG.
 *	Commands print their own messages; no library call exits.
 *
 *	tnctl-events.c   events emit, list, show, replay, stats, enable
 *	tnctl-spool.c    what those read: tn-hookd's spool and delivery log
 *	tnctl-verify.c   events verify (no configuration needed)
 *--*/
#ifndef TNCTL_H
#define TNCTL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "tn-conf.h"
#include "tn-hook-spool.h"
#include "tn-outbox.h"

struct tnctl {
	struct tn_conf *conf;
	const char *conf_path;
};

struct tnctl_command {
	const char *name;
	int (*run)(struct tnctl *ctl, int argc, char **argv);
	const char *usage;			/* "name args..." (NULL with sub) */
	const struct tnctl_command *sub;	/* subcommands instead of run */
};

/* --- tnctl-spool.c: reading tn-hookd's spool (docs/hookd.md) --- */

enum tnctl_state {
	TNCTL_NEW,		/* outbox_dir/new/<id>.json: not fanned out yet */
	TNCTL_QUEUED,		/* hooks/<e>/queue/<qname> */
	TNCTL_DEAD,		/* hooks/<e>/dead/<id>.json */
};

struct tnctl_entry {
	struct tn_hook_qname q;
	const char *endpoint;		/* NULL in new/; else owned by a tnctl_names */
	enum tnctl_state state;
	char seg[TN_HOOK_ID_SIZE];	/* a line of segment <seg>.json; "": its own file */
};

struct tnctl_entries {
	struct tnctl_entry *v;
	size_t n, cap;
};

struct tnctl_names {
	char **v;
	size_t n;
};

/* Largest file read whole: a segment (TN_OUTBOX_SEGMENT_MAX) and some. */
#define TNCTL_FILE_MAX (TN_OUTBOX_SEGMENT_MAX + 1024)

/* "outbox_dir" must be a directory: 0, or EX_TEMPFAIL after a message. */
int tnctl_spool_check(const char *spool);
/* path's bytes (at most max, NUL-terminated) in *buf_r (tn_mem_free). */
int tnctl_read_file(const char *path, size_t max, char **buf_r, size_t *len_r,
		    const char **error_r);
/* The endpoint directories under hooks/, sorted; none when hooks/ is missing. */
int tnctl_endpoint_dirs(const char *spool, struct tnctl_names *names,
			const char **error_r);
bool tnctl_names_has(const struct tnctl_names *names, const char *name);
void tnctl_names_free(struct tnctl_names *names);
/* Append the entries of new/ (endpoint NULL), or of endpoint's queue/ or
 * dead/, to out; only_id: only that event's. keep > 0: out may be cut to
 * its oldest keep entries on the way. A missing queue/ or dead/ is
 * empty; a missing new/ is an error. A segment (<id>.json in new/ or a
 * queue) gives an entry per event line; in a queue, every line until
 * the segment is gone (tn-hookd knows which of them are done). */
int tnctl_scan(const char *spool, const char *endpoint, enum tnctl_state state,
	       const char *only_id, size_t keep, struct tnctl_entries *out,
	       const char **error_r);
void tnctl_entries_add(struct tnctl_entries *out, const struct tn_hook_qname *q,
		       const char *endpoint, enum tnctl_state state);
/* Sort by id (UUIDv7: by time), endpoint, state; keep the first limit
 * (0: all). An event both in a segment and in a retry file of the same
 * queue (it failed and left the segment) is listed once, as the retry. */
void tnctl_entries_sort(struct tnctl_entries *entries, size_t limit);
void tnctl_entries_free(struct tnctl_entries *entries);
/* The file of an entry (tn_mem_free). */
char *tnctl_entry_path(const char *spool, const struct tnctl_entry *e);
const char *tnctl_state_name(enum tnctl_state state);
/* The envelope in path (tn_hook_envelope_parse), or NULL and *error_r. */
json_t *tnctl_envelope_load(const char *path, const char *id, const char **error_r);

/* Call fn for each record of hooks/deliveries.log.1 and deliveries.log,
 * oldest first, that contains needle (NULL: any) and whose "at" is not
 * before since_at (NULL: any). Missing logs are empty; lines that are
 * not JSON objects or longer than TNCTL_LOG_LINE_MAX are skipped. */
#define TNCTL_LOG_LINE_MAX 16384
typedef void tnctl_log_fn(json_t *record, void *ctx);
void tnctl_log_scan(const char *spool, const char *needle, const char *since_at,
		    tnctl_log_fn *fn, void *ctx);

/* RFC 3339 ("2026-11-22T21:30:01.512Z", "...+01:00") → Unix ms. */
int tnctl_parse_rfc3339(const char *text, int64_t *ms_r);
/* "45s", "3m12s", "2h05m", "3d04h" (negative: "0s"). */
void tnctl_format_span(int64_t ms, char buf[32]);
/* Untrusted text for a terminal (tn_log_sanitize); buf of TN_LOG_VALUE_MAX. */
const char *tnctl_safe(char *buf, const char *text);

/* events emit|list|show|replay|stats|enable|verify */
extern const struct tnctl_command tnctl_events_commands[];

/* usage reconcile (tnctl-usage.c) */
extern const struct tnctl_command tnctl_usage_commands[];

/* events verify: check a captured webhook request's signature. */
int tnctl_events_verify(struct tnctl *ctl, int argc, char **argv);

#endif
