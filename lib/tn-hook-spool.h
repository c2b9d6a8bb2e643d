/*++
 * NAME
 *	tn-hook-spool 3h
 * SUMMARY
 *	what tn-hookd and tnctl share: parameters, endpoint files, queue names
 * DESCRIPTION
 *	docs/hookd.md describes the spool: under outbox_dir, bad/ holds
 *	quarantined files and hooks/<endpoint>/{queue,dead}/ the per-endpoint
 *	queues; hooks/deliveries.log is the delivery log. This module knows
 *	the names and formats; it does no delivery.
 *
 *	Queue file names:
 *	    <id>.json                                  a segment (events never
 *	                                               attempted, one per line)
 *	    <id>.<attempts>.<first_ms>.<next_ms>.retry  one event, failed
 *	                                               <attempts> times
 *	tn_hook_qname_parse() accepts exactly these (ids are lower-case
 *	UUIDs) and rejects anything else, so foreign files are left alone.
 *
 *	Endpoint files: hookd_endpoints_dir/NAME.conf in tenantmail.conf
 *	syntax with the parameters of tn_hook_endpoint_params. Only names
 *	matching TN_HOOK_NAME_RE and ending in ".conf" are read; others are
 *	ignored (editor backups, dpkg files).
 *--*/
#ifndef TN_HOOK_SPOOL_H
#define TN_HOOK_SPOOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "tn-conf.h"
#include "tn-webhook.h"

#define TN_HOOK_NAME_RE "[a-z0-9][a-z0-9_-]{0,31}"
#define TN_HOOK_NAME_MAX 32
/* Longest queue file name plus NUL: id, 3 numbers, dots, ".retry". */
#define TN_HOOK_QNAME_SIZE 128
#define TN_HOOK_ID_SIZE 37

/* tenantmail.conf parameters of tn-hookd (tnctl reads them too). */
extern const struct tn_conf_param tn_hookd_params[];
/* The parameters of one endpoint file. */
extern const struct tn_conf_param tn_hook_endpoint_params[];

struct tn_hook_endpoint {
	char name[TN_HOOK_NAME_MAX + 1];
	char *path;			/* the .conf file */
	char *url;
	struct tn_webhook_secret secrets[TN_WEBHOOK_SECRETS_MAX];
	unsigned nsecrets;
	char **events;			/* NULL-terminated patterns: "a.b", "a.*", "*" */
	char **tenants;			/* NULL-terminated; empty: every tenant */
	unsigned concurrency;
	int64_t connect_timeout_ms;
	int64_t timeout_ms;
	char *tls_ca_file;		/* NULL: system CAs */
	bool enabled;
	bool world_readable;		/* the file's mode lets others read the secrets */
};

struct tn_hook_qname {
	char id[TN_HOOK_ID_SIZE];
	unsigned attempts;		/* 0: <id>.json */
	int64_t first_ms;		/* Unix ms of the first attempt (0 if none) */
	int64_t next_ms;		/* Unix ms of the earliest next attempt (0: now) */
};

/* A lower-case UUID, 36 characters. */
bool tn_hook_id_valid(const char *id);
/* The Unix ms of a UUIDv7 id (its first 48 bits); -1 for other ids. */
int64_t tn_hook_id_time_ms(const char *id);
/* An endpoint name per TN_HOOK_NAME_RE. */
bool tn_hook_name_valid(const char *name);

/* 0 and *q filled, or -1 when name is not a queue file name. */
int tn_hook_qname_parse(const char *name, struct tn_hook_qname *q);
/* The file name for q (attempts 0 → "<id>.json"). */
void tn_hook_qname_format(const struct tn_hook_qname *q, char buf[TN_HOOK_QNAME_SIZE]);

/* Read every endpoint file of dir. On success *eps_r is an array of
 * *count_r endpoints sorted by name (possibly none). -1 with *error_r
 * (thread-local, "file:line: ..." for a bad file) when dir cannot be
 * read or any file is bad: a half-read configuration is never used. */
int tn_hook_endpoints_load(const char *dir, struct tn_hook_endpoint **eps_r,
			   unsigned *count_r, const char **error_r);
void tn_hook_endpoints_free(struct tn_hook_endpoint **eps, unsigned count);
/* Free what one endpoint owns (and wipe its secrets); *ep stays. */
void tn_hook_endpoint_clear(struct tn_hook_endpoint *ep);
/* Whether ep's event and tenant filters select this event. */
bool tn_hook_endpoint_wants(const struct tn_hook_endpoint *ep, const char *type,
			    const char *tenant);

/* Check an event file's bytes (a trailing newline is allowed): one JSON
 * object with string id (== expect_id when not NULL), type, tenant,
 * occurred_at, and an integer sequence >= 1. Returns the object (new
 * reference) or NULL with a static reason in *error_r. */
json_t *tn_hook_envelope_parse(const char *buf, size_t len, const char *expect_id,
			       const char **error_r);

/* Segments: a file of new/ or of a queue named <id>.json holds the
 * events of one group commit, one envelope per line, the first one's id
 * its name (a one-event segment is an event file). Walk its lines: true
 * and the next line (without its newline) while there is one; *pos
 * starts at 0. */
bool tn_hook_segment_next(const char *buf, size_t len, size_t *pos, const char **line_r,
			  size_t *line_len_r);
/* The id a line of a segment begins with as the outbox writes it
 * ({"id":"<id>",...), copied into id_r; false for another shape. */
bool tn_hook_segment_line_id(const char *line, size_t len, char id_r[TN_HOOK_ID_SIZE]);
/* The envelope of event id in a segment's bytes (see
 * tn_hook_envelope_parse), or NULL with a static reason in *error_r. */
json_t *tn_hook_segment_find(const char *buf, size_t len, const char *id,
			     const char **error_r);

/* RFC 3339 UTC with milliseconds for Unix ms: "2026-11-22T21:30:01.512Z". */
void tn_hook_format_time(int64_t unix_ms, char buf[32]);
/* Unix ms now (wall clock). */
int64_t tn_hook_now_ms(void);

#endif
