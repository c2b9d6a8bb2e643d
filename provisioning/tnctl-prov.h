/*++
 * NAME
 *	tnctl-prov 3h
 * SUMMARY
 *	what tnctl's provisioning commands share: the resources' fields,
 *	CSV records, the commands
 * DESCRIPTION
 *	tnctl-fields.c  the four resources as tn-provisiond serves them:
 *	                their collections, fields and field types
 *	                (docs/provisioning.md); text to JSON per field type;
 *	                the checks of a create body that need no server
 *	                (the core's rules, through tn-prov-input.h).
 *	tnctl-csv.c     an RFC 4180 record reader over a buffer.
 *	tnctl-prov.c    tenant|domain|mailbox|alias create, get, list,
 *	                update, suspend, resume, restore, delete, purge;
 *	                tenant recount.
 *	tnctl-import.c  import: many creates from CSV or NDJSON, in
 *	                parallel, resumable.
 *	No file here exits or prints outside its command's run().
 *--*/
#ifndef TNCTL_PROV_H
#define TNCTL_PROV_H

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

#include "tnctl.h"

/* --- tnctl-fields.c --- */

enum tnctl_ftype {
	TNCTL_F_ID,		/* tenant id (the key of a tenant) */
	TNCTL_F_DOMAIN,
	TNCTL_F_ADDRESS,
	TNCTL_F_TENANT,		/* the owner of a domain, mailbox, alias */
	TNCTL_F_TEXT,
	TNCTL_F_NAME,		/* pool name */
	TNCTL_F_HOST,
	TNCTL_F_COUNT,		/* integer 0..2^53-1 */
	TNCTL_F_BOOL,
	TNCTL_F_STATUS,		/* active | suspended (at create) */
	TNCTL_F_PASSWORD,	/* clear text: never from the command line */
	TNCTL_F_HASH,
	TNCTL_F_TARGETS,	/* array of addresses */
};

#define TNCTL_F_KEY	0x01	/* the object's name */
#define TNCTL_F_CREATE	0x02	/* may be given at create */
#define TNCTL_F_MODIFY	0x04	/* may be changed by update */
#define TNCTL_F_REQUIRED 0x08	/* must be given at create */
#define TNCTL_F_BYTES	0x10	/* a count of bytes: k, m, g, t suffixes */
#define TNCTL_F_ZERO	0x20	/* absent reads as 0 / false (a tenant's limits) */

struct tnctl_field {
	const char *name;	/* JSON member */
	enum tnctl_ftype type;
	unsigned flags;
	size_t max;		/* TEXT: bytes */
	const char *option;	/* create/update option, or NULL (--set) */
};

struct tnctl_kind {
	const char *name;		/* "mailbox" */
	const char *coll;		/* "mailboxes": /v1/<coll> */
	const struct tnctl_field *fields;	/* the key first; NULL name ends */
	const char *const *columns;	/* list's table columns (JSON members) */
};

#define TNCTL_NKINDS 4
/* in dependency order: tenant, domain, mailbox, alias */
extern const struct tnctl_kind tnctl_kinds[TNCTL_NKINDS];

const struct tnctl_kind *tnctl_kind_find(const char *name);
const struct tnctl_field *tnctl_field_find(const struct tnctl_kind *k, const char *name);
/* Is name a field of any kind? */
bool tnctl_field_known(const char *name);

/* A key of kind k (id, domain, address) in its normal form (fresh:
 * tn_mem_free), or NULL and *why_r when it is not one. */
char *tnctl_key_norm(const struct tnctl_kind *k, const char *key, const char **why_r);

/* text as the JSON value of field f: integers (with k/m/g/t for
 * bytes; "unlimited" is 0; "null"/"none"/"inherit" null), booleans
 * (yes/no, true/false, on/off, 1/0), targets (a JSON array, or
 * addresses separated by commas or blanks), strings. NULL and *why_r
 * when text is not of the type. */
json_t *tnctl_field_value(const struct tnctl_field *f, const char *text, const char **why_r);

/* The checks of a create body that need no server: every member a
 * field that may be given at create, of its type and form, the
 * required ones present. 0, or -1 with the field at fault (or NULL)
 * and a message in *why_r (fresh). */
int tnctl_check_create(const struct tnctl_kind *k, json_t *obj, const char **field_r,
		       char **why_r);

/* --- tnctl-csv.c --- */

struct tnctl_csv {
	const char *p, *end;	/* what is left of the buffer */
	unsigned line;		/* physical line of p, from 1 */
};

struct tnctl_csv_record {
	char **fields;		/* NUL-terminated copies */
	size_t n, cap;
	unsigned line;		/* the line the record starts on */
};

void tnctl_csv_init(struct tnctl_csv *c, const char *buf, size_t len);
/* The next record: 1, 0 at the end, -1 for a malformed one (*why_r;
 * the reader then goes on after the record's end). Empty lines are
 * skipped. Fields keep embedded commas, quotes ("" -> ") and line
 * breaks; a record ends with LF or CRLF outside quotes. */
int tnctl_csv_next(struct tnctl_csv *c, struct tnctl_csv_record *rec, const char **why_r);
void tnctl_csv_record_clear(struct tnctl_csv_record *rec);

/* --- tnctl-ldif.c: LDIF (RFC 2849) content records --- */

struct tnctl_ldif {
	const char *p, *end;	/* what is left of the buffer */
	unsigned line;		/* physical line of p, from 1 */
};

void tnctl_ldif_init(struct tnctl_ldif *l, const char *buf, size_t len);
/* The next entry as a JSON object: "dn" and each attribute (its name
 * in lower case, options dropped) → an array of its values (strings;
 * "attr:: " base64 decoded). 1, 0 at the end, -1 for a malformed entry
 * (*why_r; the reader goes on after it). *line_r: where it starts.
 * Comments, folded lines (a leading space), "version:" and
 * "changetype: add" are understood; other change records and "attr:<"
 * URLs are malformed. */
int tnctl_ldif_next(struct tnctl_ldif *l, json_t **entry_r, unsigned *line_r,
		    const char **why_r);

/* --- tnctl-bulk.c: what import and sync share --- */

struct tnctl_api;
struct tnctl_api_req;

/* A whole file ("-": standard input) of at most max bytes,
 * NUL-terminated, in *buf_r (tn_mem_free). 0, or -1 with *why_r. */
int tnctl_bulk_read(const char *path, size_t max, char **buf_r, size_t *len_r,
		    const char **why_r);

/* SHA-256 of data in hex (64 digits and a NUL). */
void tnctl_bulk_sha256(const void *data, size_t len, char hex[65]);
/* fn for each line of buf (without its LF), numbered from 1. */
typedef void tnctl_bulk_line_fn(void *ctx, unsigned line, const char *p, size_t len);
void tnctl_bulk_lines(const char *buf, size_t len, tnctl_bulk_line_fn *fn, void *ctx);
/* The format of an input file by its name (.csv, .ndjson, .jsonl,
 * .json, .ldif), else by its first character ('{' ndjson; '#', "dn:",
 * "version:" ldif): "csv", "ndjson" or "ldif". */
const char *tnctl_bulk_format(const char *file, const char *buf, size_t len);

/* Put item's first request into rq (tnctl_api_req_init). */
typedef void tnctl_bulk_send_fn(void *ctx, void *item, struct tnctl_api_req *rq);
/* The final answer of item's request in rq (after the runner's
 * retries; http 0: none), or stopped: why it was given up without one.
 * true after putting the item's next request into rq (clear, then
 * tnctl_api_req_init); false: the item is finished. */
typedef bool tnctl_bulk_answer_fn(void *ctx, void *item, struct tnctl_api_req *rq,
				  const char *stopped);
typedef void tnctl_bulk_tick_fn(void *ctx);

struct tnctl_bulk_slot;

struct tnctl_bulk {
	/* the caller's */
	struct tnctl_api *api;
	unsigned parallel;		/* items in flight at once */
	tnctl_bulk_send_fn *send;
	tnctl_bulk_answer_fn *answer;
	tnctl_bulk_tick_fn *tick;	/* NULL, or called while waiting */
	void *ctx;
	/* the outcome */
	bool unreachable;		/* no answer after the retries */
	bool tls;			/* a TLS failure: not tried again (78) */
	bool refused;			/* 401 */
	char *stop_reason;		/* the answer that stopped the run */
	/* private */
	struct tnctl_bulk_slot *slots;
};

/* items in their order, b->parallel at a time, until all are finished
 * or the run stops (unreachable, refused, SIGINT): see tnctl-bulk.c. */
void tnctl_bulk_run(struct tnctl_bulk *b, void **items, size_t n);
bool tnctl_bulk_stopping(const struct tnctl_bulk *b);
void tnctl_bulk_clear(struct tnctl_bulk *b);
/* The first SIGINT stops the runs, a second one ends tnctl. */
void tnctl_bulk_catch_sigint(void);
void tnctl_bulk_release_sigint(void);
bool tnctl_bulk_interrupted(void);

/* --- tnctl-prov.c, tnctl-import.c --- */

/* A value of field name for people: sizes of *_bytes fields in KiB, MiB,
 * ...; "-" for none; untrusted text made safe (fresh: tn_mem_free).
 * short_form: for a table cell. */
char *tnctl_prov_text(const char *name, json_t *v, bool short_form);
/* Every object of kind k (deleted ones too) under the filters (NULL:
 * none), all pages: a JSON array, or NULL after a message on stderr with
 * the exit status in *ret_r. */
json_t *tnctl_prov_list_all(struct tnctl *ctl, struct tnctl_api *api, const struct tnctl_kind *k,
			    const char *tenant, const char *domain, int *ret_r);
/* tnctl tenant|domain|mailbox|alias VERB ...: argv[0] is the kind */
int tnctl_prov_kind(struct tnctl *ctl, int argc, char **argv);
#define TNCTL_PROV_USAGE(kind, key) \
	kind " create|get|list|update|suspend|resume|restore|delete|purge " key " [options]"
#define TNCTL_PROV_TENANT_USAGE \
	"tenant create|get|list|update|suspend|resume|restore|delete|purge|recount [ID] [options]"
/* tnctl import ... FILE */
int tnctl_import(struct tnctl *ctl, int argc, char **argv);
/* tnctl sync ... FEED (tnctl-sync.c) */
int tnctl_sync(struct tnctl *ctl, int argc, char **argv);
#define TNCTL_SYNC_USAGE \
	"sync --kind tenant|domain|mailbox|alias [--tenant T | --domain D]" \
	" [--format csv|ndjson|ldif] [--map ATTR=FIELD]... [--fields F,...] [--apply] [--yes]" \
	" [--suspend-missing|--ignore-missing|--allow-delete] [--update-passwords]" \
	" [--max-changes N] [--parallel N] [--json] FEED"
#define TNCTL_IMPORT_USAGE \
	"import [--kind tenant|domain|mailbox|alias] [--format csv|ndjson] [--results FILE]" \
	" [--resume] [--dry-run] [--parallel N] [--batch N] [--progress|--no-progress] FILE"

#endif
