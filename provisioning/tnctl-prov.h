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

/* --- tnctl-prov.c, tnctl-import.c --- */

/* tnctl tenant|domain|mailbox|alias VERB ...: argv[0] is the kind */
int tnctl_prov_kind(struct tnctl *ctl, int argc, char **argv);
#define TNCTL_PROV_USAGE(kind, key) \
	kind " create|get|list|update|suspend|resume|restore|delete|purge " key " [options]"
#define TNCTL_PROV_TENANT_USAGE \
	"tenant create|get|list|update|suspend|resume|restore|delete|purge|recount [ID] [options]"
/* tnctl import ... FILE */
int tnctl_import(struct tnctl *ctl, int argc, char **argv);
#define TNCTL_IMPORT_USAGE \
	"import [--kind tenant|domain|mailbox|alias] [--format csv|ndjson] [--results FILE]" \
	" [--resume] [--dry-run] [--parallel N] [--progress|--no-progress] FILE"

#endif
