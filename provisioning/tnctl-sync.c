/*++
 * NAME
 *	tnctl-sync 1
 * SUMMARY
 *	tnctl sync: reconcile the directory with an upstream feed
 * SYNOPSIS
 *	tnctl sync --kind K [--tenant T | --domain D] [--format csv|ndjson|ldif]
 *		[--map ATTR=FIELD]... [--fields F,...] [--apply] [--yes]
 *		[--suspend-missing|--ignore-missing|--allow-delete]
 *		[--update-passwords] [--max-changes N] [--parallel N] [--json] FEED
 * DESCRIPTION
 *	FEED (CSV, NDJSON or LDIF: the export of an HR or billing system)
 *	is the whole truth for one scope: the objects of kind K of tenant
 *	T or domain D (mailboxes, aliases: either; domains: --tenant;
 *	tenants: all the token sees). The directory side is read through
 *	the API (every page of the list, deleted objects included).
 *
 *	The plan, per key:
 *	  in the feed only                  create (every field the record has)
 *	  in both, a carried field differs  update: PATCH of those fields,
 *	                                    If-Match the ETag read
 *	  in both, suspended "sync: ..."    resume (after the update)
 *	  in both, suspended otherwise      held: never resumed by sync
 *	  in both, deleted                  held: restore is the operator's
 *	  in the directory only, active     suspend "sync: not in feed"
 *	                                    (--ignore-missing: nothing;
 *	                                    --allow-delete: soft delete,
 *	                                    suspended ones too)
 *	The carried fields are the feed's columns (CSV header, NDJSON
 *	members, LDIF attributes mapped); a record without one has none
 *	(null). --fields narrows what updates compare. The key and tenant
 *	are not compared; passwords (password, password_hash) never: they
 *	go into creates, and into updates only with --update-passwords.
 *	A feed carrying status or status_reason is refused (sync sets the
 *	status).
 *
 *	LDIF (tnctl-ldif.c): entries become records through the map, by
 *	default mail → address, displayName (else cn) → name, tnQuotaBytes
 *	→ quota_bytes, each where the kind has the field; --map ATTR=FIELD
 *	adds or replaces one. Entries without the key's attribute (the
 *	export's containers) are skipped.
 *
 *	Without --apply it prints the plan and writes nothing. --apply
 *	asks on a terminal (standard input) unless --yes, then runs the
 *	plan through tnctl-bulk.c (--parallel, retries; creates first,
 *	removals last), each request with an Idempotency-Key derived from
 *	the kind, key, action, the ETag read and the body, so a step
 *	retried or rerun from the same state is replayed, never done
 *	twice. A 412 (the object changed since it was read) fails that
 *	item only.
 *
 *	Guard: the plan is refused when it suspends or deletes more than
 *	10% of the scope's live objects (a truncated feed); --max-changes
 *	N replaces that with a limit of N changes in all.
 *
 *	Exit: dry run 0 (nothing to do) or 2 (changes pending); --apply 0
 *	(all done), 65 (an item failed; or the feed has invalid records:
 *	nothing is then written), 75 (server unreachable, interrupted),
 *	77 (token refused); 4 the guard refused the plan; 2 declined at
 *	the prompt; 64 usage; 66 FEED unreadable.
 *--*/
#include "tn-build.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sysexits.h>
#include <unistd.h>

#include "tn-log.h"
#include "tn-mem.h"
#include "tn-time.h"
#include "tnctl-api.h"
#include "tnctl-prov.h"

#define SYNC_FEED_MAX ((size_t)1 << 30)
#define SYNC_PARALLEL_MAX 256
#define SYNC_REASON "sync: not in feed"
#define SYNC_REASON_PREFIX "sync:"
#define SYNC_EX_PENDING 2	/* dry run: changes pending; declined */
#define SYNC_EX_REFUSED 4	/* the guard refused the plan */
#define SYNC_SHOW_INVALID 20

enum sync_action {
	A_CREATE, A_UPDATE, A_RESUME, A_SUSPEND, A_DELETE, A_N
};

static const char *const sync_action_names[A_N] = {
	"create", "update", "resume", "suspend", "delete",
};

enum sync_result { R_PENDING, R_DONE, R_FAILED };

static const char *const sync_result_names[] = { "not_tried", "done", "failed" };

struct sync_item {
	char *key;		/* normal form */
	unsigned line;		/* where the feed has it; 0: not there */
	json_t *want;		/* the feed's record, or NULL */
	json_t *have;		/* the directory's object, or NULL */
	unsigned planned;	/* 1 << enum sync_action */
	unsigned actions;	/* of those, not done yet */
	json_t *changes;	/* update: {field: new value} */
	char *note;		/* held, or why not */
	/* applying */
	char *etag;		/* the version the next step is conditional on */
	enum sync_action step;
	enum sync_result result;
	long http;
	char *error;
};

struct sync {
	struct tnctl *ctl;
	const struct tnctl_kind *k;
	const char *feed, *format;
	char *tenant, *domain;	/* the scope, normal form */
	bool apply, yes, json, allow_delete, ignore_missing, update_passwords;
	long max_changes;	/* -1: the 10% guard */
	unsigned parallel;
	json_t *only;		/* --fields: {field: true}, or NULL */
	json_t *map;		/* LDIF: [[attr, field], ...], first match wins */
	json_t *carried;	/* {field: true} */
	struct sync_item *items;
	size_t n, cap;
	json_t *index;		/* key → item index */
	json_t *invalid;	/* [{line, key, error}] */
	size_t counts[A_N], unchanged, held, live, skipped;
	char *refusal;
	struct tnctl_api *api;
	struct tnctl_bulk bulk;
	tn_msec_t start;
};

/* --- records of the feed -------------------------------------------------------------- */

static void sync_invalid(struct sync *s, unsigned line, const char *key, char *why)
{
	json_t *o = json_pack("{s:i,s:s}", "line", (int)line, "error", why);

	if (key != NULL)
		json_object_set_new(o, "key", json_string(key));
	json_array_append_new(s->invalid, o);
	tn_mem_free(&why);
}

static struct sync_item *sync_item_of(struct sync *s, const char *key)
{
	json_t *i = json_object_get(s->index, key);
	struct sync_item *it;

	if (i != NULL)
		return &s->items[json_integer_value(i)];
	if (s->n == s->cap) {
		s->cap = s->cap == 0 ? 256 : 2 * s->cap;
		s->items = tn_mem_realloc(s->items, s->cap * sizeof(*s->items));
	}
	it = &s->items[s->n];
	memset(it, 0, sizeof(*it));
	it->key = tn_mem_strdup(key);
	json_object_set_new(s->index, key, json_integer((json_int_t)s->n++));
	return it;
}

/* The scope's check of a record: NULL, or why it is outside (fresh). */
static char *sync_out_of_scope(const struct sync *s, const char *key, json_t *rec)
{
	const char *t = json_string_value(json_object_get(rec, "tenant"));
	const char *at = strrchr(key, '@');

	if (s->tenant != NULL && s->k != &tnctl_kinds[0] && t != NULL &&
	    strcasecmp(t, s->tenant) != 0)
		return tn_mem_printf("tenant %.64s: outside the scope (--tenant %s)", t, s->tenant);
	if (s->domain != NULL && (at == NULL || strcmp(at + 1, s->domain) != 0))
		return tn_mem_printf("outside the scope (--domain %s)", s->domain);
	return NULL;
}

/* The body of the record's create: its non-null fields (and the scope's
 * tenant); NULL with *why_r (fresh) when the local checks refuse it. */
static json_t *sync_create_body(const struct sync *s, json_t *rec, char **why_r)
{
	json_t *body = json_object(), *v;
	const char *name, *field = NULL;

	json_object_foreach(rec, name, v) {
		if (!json_is_null(v))
			json_object_set(body, name, v);
	}
	if (s->tenant != NULL && s->k != &tnctl_kinds[0] &&
	    json_object_get(body, "tenant") == NULL)
		json_object_set_new(body, "tenant", json_string(s->tenant));
	if (tnctl_check_create(s->k, body, &field, why_r) < 0) {
		json_decref(body);
		return NULL;
	}
	return body;
}

/* A record of the feed (consumed): an item, or an invalid line. */
static void sync_record(struct sync *s, unsigned line, json_t *rec)
{
	const char *raw = json_string_value(json_object_get(rec, s->k->fields[0].name));
	const char *why = NULL;
	char *key = raw != NULL ? tnctl_key_norm(s->k, raw, &why) : NULL, *bad = NULL;
	struct sync_item *it = NULL;
	json_t *body = NULL;

	if (key == NULL)
		bad = tn_mem_printf("%s: %s", s->k->fields[0].name, raw == NULL ? "missing" : why);
	else if ((bad = sync_out_of_scope(s, key, rec)) == NULL &&
		 (body = sync_create_body(s, rec, &bad)) != NULL &&
		 (it = sync_item_of(s, key))->want != NULL)
		bad = tn_mem_printf("%s twice (line %u)", key, it->line);
	if (bad != NULL) {
		sync_invalid(s, line, key != NULL ? key : raw, bad);
	} else {
		json_object_set_new(rec, s->k->fields[0].name, json_string(key));
		it->want = json_incref(rec);
		it->line = line;
	}
	json_decref(body);
	json_decref(rec);
	tn_mem_free(&key);
}

/* A carried field: known to the kind, one sync may take. */
static int sync_carry(struct sync *s, const char *name, const char **why_r)
{
	const struct tnctl_field *f = tnctl_field_find(s->k, name);

	if (f == NULL)
		*why_r = "no field of this kind";
	else if (f->type == TNCTL_F_STATUS || strcmp(name, "status_reason") == 0)
		*why_r = "sync sets the status itself: leave it out of the feed";
	else
		json_object_set_new(s->carried, name, json_true());
	return f != NULL && json_object_get(s->carried, name) != NULL ? 0 : -1;
}

/* text as field name's value; empty: none (null). */
static json_t *sync_value(struct sync *s, const char *name, const char *text, const char **why_r)
{
	if (*text == '\0')
		return json_null();
	return tnctl_field_value(tnctl_field_find(s->k, name), text, why_r);
}

/* --- CSV, NDJSON ------------------------------------------------------------------------- */

static void sync_csv_record(struct sync *s, const struct tnctl_csv_record *h,
			    const struct tnctl_csv_record *rec)
{
	json_t *obj = json_object(), *v;
	const char *why = NULL;

	if (rec->n != h->n) {
		sync_invalid(s, rec->line, NULL, tn_mem_printf("%zu fields; the header has %zu",
							       rec->n, h->n));
		json_decref(obj);
		return;
	}
	for (size_t i = 0; i < h->n; i++) {
		if (strcmp(h->fields[i], "kind") == 0) {
			if (rec->fields[i][0] == '\0' || strcmp(rec->fields[i], s->k->name) == 0)
				continue;
			why = "not the --kind of this sync";
		} else if ((v = sync_value(s, h->fields[i], rec->fields[i], &why)) != NULL) {
			json_object_set_new(obj, h->fields[i], v);
			continue;
		}
		sync_invalid(s, rec->line, NULL, tn_mem_printf("%s: %s", h->fields[i], why));
		json_decref(obj);
		return;
	}
	sync_record(s, rec->line, obj);
}

static int sync_csv(struct sync *s, const char *buf, size_t len)
{
	struct tnctl_csv c;
	struct tnctl_csv_record h = { 0 }, rec = { 0 };
	const char *why = NULL;
	int ret;

	tnctl_csv_init(&c, buf, len);
	if ((ret = tnctl_csv_next(&c, &h, &why)) <= 0) {
		fprintf(stderr, "tnctl: %s: %s\n", s->feed, ret == 0 ? "no header line" : why);
		tnctl_csv_record_clear(&h);
		return -1;
	}
	for (size_t i = 0; i < h.n; i++) {
		if (strcmp(h.fields[i], "kind") != 0 && sync_carry(s, h.fields[i], &why) < 0) {
			fprintf(stderr, "tnctl: %s: column '%.64s': %s\n", s->feed, h.fields[i],
				why);
			tnctl_csv_record_clear(&h);
			return -1;
		}
	}
	while ((ret = tnctl_csv_next(&c, &rec, &why)) != 0) {
		if (ret > 0)
			sync_csv_record(s, &h, &rec);
		else
			sync_invalid(s, rec.line, NULL, tn_mem_printf("malformed CSV: %s", why));
	}
	tnctl_csv_record_clear(&rec);
	tnctl_csv_record_clear(&h);
	return 0;
}

/* tnctl_bulk_line_fn */
static void sync_ndjson_line(void *ctx, unsigned line, const char *p, size_t len)
{
	struct sync *s = ctx;
	json_error_t jerr;
	json_t *obj, *v;
	const char *name, *why = NULL;

	if (strspn(p, " \t\r") >= len)
		return;		/* blank */
	obj = json_loadb(p, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!json_is_object(obj)) {
		sync_invalid(s, line, NULL, obj == NULL ?
			     tn_mem_printf("malformed JSON: %s (column %d)", jerr.text, jerr.column) :
			     tn_mem_strdup("not a JSON object"));
		json_decref(obj);
		return;
	}
	v = json_object_get(obj, "kind");
	if (v != NULL && (!json_is_string(v) || strcmp(json_string_value(v), s->k->name) != 0))
		why = "kind: not the --kind of this sync";
	json_object_del(obj, "kind");
	json_object_foreach(obj, name, v) {
		if (why == NULL && sync_carry(s, name, &why) < 0) {
			sync_invalid(s, line, NULL, tn_mem_printf("%.64s: %s", name, why));
			json_decref(obj);
			return;
		}
	}
	if (why != NULL) {
		sync_invalid(s, line, NULL, tn_mem_strdup(why));
		json_decref(obj);
		return;
	}
	sync_record(s, line, obj);
}

/* --- LDIF ------------------------------------------------------------------------------------ */

static void sync_map_add(struct sync *s, const char *attr, const char *field)
{
	json_array_append_new(s->map, json_pack("[s,s]", attr, field));
}

/* The default map, where the kind has the field, after --map's. */
static void sync_map_defaults(struct sync *s)
{
	static const char *const defaults[][2] = {
		{ "mail", "address" }, { "displayname", "name" }, { "cn", "name" },
		{ "tnquotabytes", "quota_bytes" },
	};

	for (size_t i = 0; i < sizeof(defaults) / sizeof(defaults[0]); i++) {
		if (tnctl_field_find(s->k, defaults[i][1]) != NULL)
			sync_map_add(s, defaults[i][0], defaults[i][1]);
	}
}

/* The values of field in entry under the map: the first attribute
 * mapped onto it that the entry has, or NULL. */
static json_t *sync_ldif_values(const struct sync *s, json_t *entry, const char *field)
{
	size_t i;
	json_t *pair, *v;

	json_array_foreach(s->map, i, pair) {
		if (strcmp(json_string_value(json_array_get(pair, 1)), field) == 0 &&
		    (v = json_object_get(entry, json_string_value(json_array_get(pair, 0)))) != NULL)
			return v;
	}
	return NULL;
}

/* One entry as a record: targets take every value, other fields the first. */
static void sync_ldif_entry(struct sync *s, unsigned line, json_t *entry)
{
	json_t *rec = json_object(), *vals, *v, *carried;
	const char *field, *why = NULL;

	if (sync_ldif_values(s, entry, s->k->fields[0].name) == NULL) {
		s->skipped++;	/* a container, or a person without a mail */
		json_decref(rec);
		return;
	}
	json_object_foreach(s->carried, field, carried) {
		const struct tnctl_field *f = tnctl_field_find(s->k, field);

		vals = sync_ldif_values(s, entry, field);
		if (vals == NULL)
			v = json_null();
		else if (f->type == TNCTL_F_TARGETS)
			v = json_copy(vals);
		else if ((v = sync_value(s, field, json_string_value(json_array_get(vals, 0)),
					 &why)) == NULL) {
			sync_invalid(s, line, NULL, tn_mem_printf("%s: %s", field, why));
			json_decref(rec);
			return;
		}
		json_object_set_new(rec, field, v);
	}
	sync_record(s, line, rec);
}

/* The fields the feed carries: those whose attributes some entry has. */
static int sync_ldif_carried(struct sync *s, json_t *entries)
{
	size_t i, j;
	json_t *pair, *e;
	const char *why = NULL;

	json_array_foreach(s->map, i, pair) {
		const char *field = json_string_value(json_array_get(pair, 1));

		json_array_foreach(entries, j, e) {
			if (json_object_get(json_object_get(e, "entry"),
					    json_string_value(json_array_get(pair, 0))) == NULL)
				continue;
			if (sync_carry(s, field, &why) < 0) {
				fprintf(stderr, "tnctl: %s: --map %s=%s: %s\n", s->feed,
					json_string_value(json_array_get(pair, 0)), field, why);
				return -1;
			}
			break;
		}
	}
	return 0;
}

static int sync_ldif(struct sync *s, const char *buf, size_t len)
{
	struct tnctl_ldif l;
	json_t *entries = json_array(), *entry, *e;
	const char *why = NULL;
	unsigned line;
	size_t i;
	int r;

	tnctl_ldif_init(&l, buf, len);
	while ((r = tnctl_ldif_next(&l, &entry, &line, &why)) != 0) {
		if (r < 0)
			sync_invalid(s, line, NULL, tn_mem_printf("malformed LDIF: %s", why));
		else
			json_array_append_new(entries, json_pack("{s:i,s:o}", "line", (int)line,
								 "entry", entry));
	}
	r = sync_ldif_carried(s, entries);
	json_array_foreach(entries, i, e) {
		if (r == 0)
			sync_ldif_entry(s, (unsigned)json_integer_value(json_object_get(e, "line")),
					json_object_get(e, "entry"));
	}
	json_decref(entries);
	return r;
}

/* --- reading the feed -------------------------------------------------------------------------- */

/* Every record a null for each carried field it lacks. */
static void sync_fill_carried(struct sync *s)
{
	const char *name;
	json_t *v;

	for (size_t i = 0; i < s->n; i++) {
		json_object_foreach(s->carried, name, v) {
			if (s->items[i].want != NULL &&
			    json_object_get(s->items[i].want, name) == NULL)
				json_object_set_new(s->items[i].want, name, json_null());
		}
	}
}

static int sync_read(struct sync *s)
{
	const char *why = NULL;
	char *buf = NULL;
	size_t len = 0;
	int ret = 0;

	if (tnctl_bulk_read(s->feed, SYNC_FEED_MAX, &buf, &len, &why) < 0) {
		fprintf(stderr, "tnctl: %s: %s\n", s->feed, why);
		return EX_NOINPUT;
	}
	if (s->format == NULL)
		s->format = tnctl_bulk_format(s->feed, buf, len);
	if (strcmp(s->format, "csv") == 0)
		ret = sync_csv(s, buf, len) < 0 ? EX_DATAERR : 0;
	else if (strcmp(s->format, "ndjson") == 0)
		tnctl_bulk_lines(buf, len, sync_ndjson_line, s);
	else
		ret = sync_ldif(s, buf, len) < 0 ? EX_DATAERR : 0;
	tn_mem_free(&buf);
	sync_fill_carried(s);
	return ret;
}

/* --- the plan ---------------------------------------------------------------------------------- */

static int sync_strcasecmp(const void *a, const void *b)
{
	return strcasecmp(*(const char *const *)a, *(const char *const *)b);
}

/* Two targets lists as sets of addresses (case aside). */
static bool sync_same_targets(json_t *a, json_t *b)
{
	size_t n = json_array_size(a);
	const char **x, **y;
	bool same = json_is_array(a) && json_is_array(b) && n == json_array_size(b);

	if (!same)
		return false;
	x = tn_mem_calloc(n + 1, sizeof(*x));
	y = tn_mem_calloc(n + 1, sizeof(*y));
	for (size_t i = 0; i < n; i++) {
		x[i] = json_string_value(json_array_get(a, i));
		y[i] = json_string_value(json_array_get(b, i));
		same = same && x[i] != NULL && y[i] != NULL;
	}
	if (same) {
		qsort(x, n, sizeof(*x), sync_strcasecmp);
		qsort(y, n, sizeof(*y), sync_strcasecmp);
		for (size_t i = 0; same && i < n; i++)
			same = strcasecmp(x[i], y[i]) == 0;
	}
	tn_mem_free(&x);
	tn_mem_free(&y);
	return same;
}

/* A tenant limit that is absent reads as 0 (false): an empty cell, which
 * an update writes as null, is the 0 the directory then answers. */
static bool sync_zero(const struct tnctl_field *f, json_t *v)
{
	return (f->flags & TNCTL_F_ZERO) != 0 && v != NULL &&
	       (json_is_null(v) || json_is_false(v) ||
		(json_is_integer(v) && json_integer_value(v) == 0));
}

static bool sync_same(const struct tnctl_field *f, json_t *want, json_t *have)
{
	bool wn = want == NULL || json_is_null(want), hn = have == NULL || json_is_null(have);

	if ((f->flags & TNCTL_F_ZERO) != 0 && (wn || hn))
		return (wn || sync_zero(f, want)) && (hn || sync_zero(f, have));
	if (wn || hn)
		return wn && hn;
	if (f->type == TNCTL_F_TARGETS)
		return sync_same_targets(want, have);
	if (json_is_string(want) && json_is_string(have) &&
	    (f->type == TNCTL_F_ADDRESS || f->type == TNCTL_F_DOMAIN || f->type == TNCTL_F_HOST))
		return strcasecmp(json_string_value(want), json_string_value(have)) == 0;
	return json_equal(want, have);
}

static bool sync_password(const char *name)
{
	return strcmp(name, "password") == 0 || strcmp(name, "password_hash") == 0;
}

/* The carried fields that differ: {field: the feed's value}, or NULL. */
static json_t *sync_diff(const struct sync *s, const struct sync_item *it)
{
	json_t *changes = json_object(), *want;
	const char *name;

	json_object_foreach(it->want, name, want) {
		const struct tnctl_field *f = tnctl_field_find(s->k, name);

		if ((f->flags & TNCTL_F_MODIFY) == 0 || (f->flags & TNCTL_F_KEY) != 0 ||
		    (s->only != NULL && json_object_get(s->only, name) == NULL))
			continue;
		if (sync_password(name) ? s->update_passwords && !json_is_null(want) :
		    !sync_same(f, want, json_object_get(it->have, name)))
			json_object_set(changes, name, want);
	}
	if (json_object_size(changes) == 0) {
		json_decref(changes);
		return NULL;
	}
	return changes;
}

static void sync_note(struct sync *s, struct sync_item *it, char *note)
{
	it->note = note;
	s->held++;
}

/* An object in the feed and in the directory. */
static void sync_plan_both(struct sync *s, struct sync_item *it, const char *status)
{
	const char *reason = json_string_value(json_object_get(it->have, "status_reason"));
	char buf[TN_LOG_VALUE_MAX];

	if (strcmp(status, "deleted") == 0) {
		sync_note(s, it, tn_mem_printf("deleted in the directory: not restored by sync "
					       "(tnctl %s restore)", s->k->name));
		return;
	}
	if ((it->changes = sync_diff(s, it)) != NULL)
		it->actions |= 1u << A_UPDATE;
	if (strcmp(status, "suspended") != 0)
		return;
	if (reason != NULL && strncmp(reason, SYNC_REASON_PREFIX,
				      strlen(SYNC_REASON_PREFIX)) == 0)
		it->actions |= 1u << A_RESUME;
	else
		sync_note(s, it, tn_mem_printf("suspended (%s): not resumed by sync",
					       reason != NULL ? tnctl_safe(buf, reason) :
					       "no reason"));
}

static void sync_plan_item(struct sync *s, struct sync_item *it)
{
	const char *status = json_string_value(json_object_get(it->have, "status"));

	if (status == NULL)
		status = "active";
	if (it->have != NULL && strcmp(status, "deleted") != 0)
		s->live++;
	if (it->want != NULL && it->have == NULL)
		it->actions = 1u << A_CREATE;
	else if (it->want != NULL)
		sync_plan_both(s, it, status);
	else if (strcmp(status, "deleted") == 0 || s->ignore_missing)
		;	/* gone already, or left alone */
	else if (s->allow_delete)
		it->actions = 1u << A_DELETE;
	else if (strcmp(status, "active") == 0)
		it->actions = 1u << A_SUSPEND;
	for (int a = 0; a < A_N; a++)
		s->counts[a] += (it->actions >> a) & 1;
	it->planned = it->actions;
	if (it->actions == 0 && it->note == NULL && it->want != NULL)
		s->unchanged++;
}

static size_t sync_total(const struct sync *s)
{
	size_t n = 0;

	for (int a = 0; a < A_N; a++)
		n += s->counts[a];
	return n;
}

/* The guard against a truncated or wrong feed. */
static void sync_guard(struct sync *s)
{
	size_t removals = s->counts[A_SUSPEND] + s->counts[A_DELETE], total = sync_total(s);

	if (s->max_changes >= 0 && total > (size_t)s->max_changes)
		s->refusal = tn_mem_printf("%zu changes, more than --max-changes %ld", total,
					   s->max_changes);
	else if (s->max_changes < 0 && removals * 10 > s->live)
		s->refusal = tn_mem_printf("it would suspend or delete %zu of the %zu live "
					   "objects in scope (more than 10%%): a truncated feed? "
					   "Check it, or allow with --max-changes %zu", removals,
					   s->live, total);
}

static int sync_items_cmp(const void *a, const void *b)
{
	return strcmp(((const struct sync_item *)a)->key, ((const struct sync_item *)b)->key);
}

/* The directory's side: every object in scope. */
static int sync_directory(struct sync *s)
{
	const bool tenant_kind = s->k == &tnctl_kinds[0];
	json_t *all, *o;
	const char *why = NULL;
	size_t i;
	int ret = 0;

	all = tnctl_prov_list_all(s->ctl, s->api, s->k, tenant_kind ? NULL : s->tenant,
				  s->domain, &ret);
	if (all == NULL)
		return ret;
	json_array_foreach(all, i, o) {
		const char *raw = json_string_value(json_object_get(o, s->k->fields[0].name));
		char *key = raw != NULL ? tnctl_key_norm(s->k, raw, &why) : NULL;

		if (key != NULL)
			sync_item_of(s, key)->have = json_incref(o);
		tn_mem_free(&key);
	}
	json_decref(all);
	qsort(s->items, s->n, sizeof(*s->items), sync_items_cmp);
	json_object_clear(s->index);	/* the order changed */
	for (i = 0; i < s->n; i++)
		sync_plan_item(s, &s->items[i]);
	sync_guard(s);
	return 0;
}

/* --- showing the plan ---------------------------------------------------------------------------- */

static char *sync_value_text(const char *name, json_t *v)
{
	return sync_password(name) && !json_is_null(v) ? tn_mem_strdup("(set)") :
		tnctl_prov_text(name, v, true);
}

/* "name: old -> new; ..." (update) or "name=value, ..." (create; not
 * the key) */
static char *sync_details(const struct sync *s, const struct sync_item *it, json_t *fields,
			  bool update)
{
	const char *name;
	json_t *v;
	char *out = tn_mem_strdup(""), *next, *nv, *ov;

	json_object_foreach(fields, name, v) {
		if (!update && (json_is_null(v) || strcmp(name, s->k->fields[0].name) == 0))
			continue;
		nv = sync_value_text(name, v);
		ov = update ? sync_value_text(name, json_object_get(it->have, name)) : NULL;
		next = update ? tn_mem_printf("%s%s%s: %s -> %s", out, *out ? "; " : "", name,
					     ov, nv) :
			tn_mem_printf("%s%s%s=%s", out, *out ? ", " : "", name, nv);
		tn_mem_free(&nv);
		tn_mem_free(&ov);
		tn_mem_free(&out);
		out = next;
	}
	return out;
}

static char *sync_row_text(const struct sync *s, const struct sync_item *it,
			   enum sync_action a)
{
	char buf[TN_LOG_VALUE_MAX];
	const char *reason = json_string_value(json_object_get(it->have, "status_reason"));

	switch (a) {
	case A_CREATE:
		return sync_details(s, it, it->want, false);
	case A_UPDATE:
		return sync_details(s, it, it->changes, true);
	case A_RESUME:
		return tn_mem_printf("back in the feed (suspended: %s)",
				     tnctl_safe(buf, reason != NULL ? reason : ""));
	case A_SUSPEND:
		return tn_mem_strdup("not in the feed: suspend, reason \"" SYNC_REASON "\"");
	default:
		return tn_mem_strdup("not in the feed: soft delete");
	}
}

static void sync_print_row(const char *action, const char *key, const char *text)
{
	char buf[TN_LOG_VALUE_MAX];

	printf("%-8s %-32s %s\n", action, tnctl_safe(buf, key), text);
}

static void sync_print_plan(const struct sync *s)
{
	printf("%-8s %-32s %s\n", "ACTION", "KEY", "CHANGES");
	for (size_t i = 0; i < s->n; i++) {
		const struct sync_item *it = &s->items[i];

		for (int a = 0; a < A_N; a++) {
			char *text;

			if ((it->planned & (1u << a)) == 0)
				continue;
			text = sync_row_text(s, it, (enum sync_action)a);
			sync_print_row(sync_action_names[a], it->key, text);
			tn_mem_free(&text);
		}
		if (it->note != NULL)
			sync_print_row("hold", it->key, it->note);
	}
	printf("plan: %zu create, %zu update, %zu resume, %zu suspend, %zu delete; "
	       "%zu unchanged, %zu held, %zu invalid\n", s->counts[A_CREATE],
	       s->counts[A_UPDATE], s->counts[A_RESUME], s->counts[A_SUSPEND],
	       s->counts[A_DELETE], s->unchanged, s->held, json_array_size(s->invalid));
}

static void sync_print_invalid(const struct sync *s)
{
	size_t i;
	json_t *o;
	char buf[TN_LOG_VALUE_MAX];

	json_array_foreach(s->invalid, i, o) {
		if (i == SYNC_SHOW_INVALID) {
			fprintf(stderr, "tnctl: ... %zu more invalid records\n",
				json_array_size(s->invalid) - i);
			break;
		}
		fprintf(stderr, "tnctl: %s:%d: %s\n", s->feed,
			(int)json_integer_value(json_object_get(o, "line")),
			tnctl_safe(buf, json_string_value(json_object_get(o, "error"))));
	}
}

/* The plan (and results) as one JSON document. */
static json_t *sync_json(const struct sync *s, bool results)
{
	json_t *plan = json_array(), *counts = json_object(), *o;

	for (int a = 0; a < A_N; a++)
		json_object_set_new(counts, sync_action_names[a], json_integer((json_int_t)s->counts[a]));
	json_object_set_new(counts, "unchanged", json_integer((json_int_t)s->unchanged));
	json_object_set_new(counts, "held", json_integer((json_int_t)s->held));
	json_object_set_new(counts, "invalid", json_integer((json_int_t)json_array_size(s->invalid)));
	for (size_t i = 0; i < s->n; i++) {
		const struct sync_item *it = &s->items[i];
		json_t *actions, *changes, *v;
		const char *name;

		if (it->planned == 0 && it->note == NULL)
			continue;
		actions = json_array();
		changes = json_object();
		for (int a = 0; a < A_N; a++) {
			if ((it->planned & (1u << a)) != 0)
				json_array_append_new(actions, json_string(sync_action_names[a]));
		}
		json_object_foreach(it->changes, name, v) {
			json_object_set_new(changes, name, json_pack(
				"{s:O?,s:o}", "old", json_object_get(it->have, name),
				"new", sync_password(name) ? json_string("(set)") : json_incref(v)));
		}
		o = json_pack("{s:s,s:o,s:o}", "key", it->key, "actions", actions,
			      "changes", changes);
		if (it->note != NULL)
			json_object_set_new(o, "note", json_string(it->note));
		if (results && it->planned != 0) {
			json_object_set_new(o, "result", json_string(sync_result_names[it->result]));
			if (it->http > 0)
				json_object_set_new(o, "http", json_integer(it->http));
			if (it->error != NULL)
				json_object_set_new(o, "error", json_string(it->error));
		}
		json_array_append_new(plan, o);
	}
	o = json_pack("{s:s,s:s?,s:s?,s:s,s:s,s:o,s:o,s:O,s:b}", "kind", s->k->name,
		      "tenant", s->tenant, "domain", s->domain, "feed", s->feed, "format",
		      s->format, "counts", counts, "plan", plan, "invalid", s->invalid,
		      "applied", results);
	if (s->refusal != NULL)
		json_object_set_new(o, "refused", json_string(s->refusal));
	return o;
}

static void sync_print_json(json_t *doc)
{
	char *text = json_dumps(doc, JSON_INDENT(2));

	if (text != NULL)
		printf("%s\n", text);
	free(text);
	json_decref(doc);
}

/* --- applying ------------------------------------------------------------------------------------ */

/* Idempotency-Key: the step, its object's state and body, hashed. */
static char *sync_idem_key(const struct sync *s, const struct sync_item *it, const char *body)
{
	char *text = tn_mem_printf("%s\n%s\n%s\n%s\n%s", s->k->name, it->key,
				   sync_action_names[it->step], it->etag != NULL ? it->etag : "",
				   body != NULL ? body : "");
	char hex[65];

	tnctl_bulk_sha256(text, strlen(text), hex);
	explicit_bzero(text, strlen(text));	/* a password maybe */
	tn_mem_free(&text);
	return tn_mem_printf("sync-%.40s", hex);
}

/* The next step of an item into rq; false when none is left. */
static bool sync_next_step(struct sync *s, struct sync_item *it, struct tnctl_api_req *rq)
{
	static const enum sync_action order[] = { A_CREATE, A_UPDATE, A_RESUME, A_SUSPEND,
						  A_DELETE };
	char *key = tnctl_api_escape(it->key), *path, *body = NULL, *idem;
	size_t i;

	for (i = 0; i < A_N && (it->actions & (1u << order[i])) == 0; i++)
		;
	if (i == A_N) {
		tn_mem_free(&key);
		return false;
	}
	it->step = order[i];
	it->actions &= ~(1u << it->step);
	if (it->step == A_CREATE) {
		char *why = NULL;
		json_t *b = sync_create_body(s, it->want, &why);

		body = json_dumps(b, JSON_COMPACT);
		json_decref(b);
		tn_mem_free(&why);
		path = tn_mem_printf("/v1/%s", s->k->coll);
	} else if (it->step == A_UPDATE || it->step == A_DELETE) {
		body = it->step == A_UPDATE ? json_dumps(it->changes, JSON_COMPACT) : NULL;
		path = tn_mem_printf("/v1/%s/%s", s->k->coll, key);
	} else {
		body = tn_mem_strdup(it->step == A_SUSPEND ? "{\"reason\":\"" SYNC_REASON "\"}" :
				     "{}");
		path = tn_mem_printf("/v1/%s/%s/%s", s->k->coll, key,
				     sync_action_names[it->step]);
	}
	idem = sync_idem_key(s, it, body);
	tnctl_api_req_init(rq, it->step == A_UPDATE ? "PATCH" : it->step == A_DELETE ?
			   "DELETE" : "POST", path, body, it->etag, idem);
	if (body != NULL)
		explicit_bzero(body, strlen(body));
	free(body);
	tn_mem_free(&idem);
	tn_mem_free(&path);
	tn_mem_free(&key);
	return true;
}

/* tnctl_bulk_send_fn */
static void sync_send(void *ctx, void *item, struct tnctl_api_req *rq)
{
	struct sync_item *it = item;
	const char *etag = json_string_value(json_object_get(it->have, "etag"));

	it->etag = etag != NULL ? tn_mem_strdup(etag) : NULL;
	sync_next_step(ctx, it, rq);
}

static void sync_failed(struct sync_item *it, const struct tnctl_api_req *rq, const char *why)
{
	char *what = why != NULL ? NULL : tnctl_api_describe(rq);

	it->result = R_FAILED;
	it->http = rq->http;
	if (rq->http == 412 && what != NULL)
		it->error = tn_mem_printf("%s: changed since sync read it (%s); not overwritten, "
					  "run sync again", sync_action_names[it->step], what);
	else
		it->error = tn_mem_printf("%s: %s", sync_action_names[it->step],
					  why != NULL ? why : what);
	tn_mem_free(&what);
}

/* tnctl_bulk_answer_fn */
static bool sync_answer(void *ctx, void *item, struct tnctl_api_req *rq, const char *stopped)
{
	struct sync_item *it = item;
	json_t *obj;
	const char *etag;

	if (stopped != NULL || rq->http < 200 || rq->http > 299) {
		sync_failed(it, rq, stopped);
		return false;
	}
	it->http = rq->http;
	obj = tnctl_api_json(rq);
	etag = rq->etag != NULL ? rq->etag : json_string_value(json_object_get(obj, "etag"));
	tn_mem_free(&it->etag);
	it->etag = etag != NULL ? tn_mem_strdup(etag) : NULL;
	json_decref(obj);
	tnctl_api_req_clear(rq);
	if (sync_next_step(ctx, it, rq))
		return true;
	it->result = R_DONE;
	return false;
}

static int sync_item_rank(const struct sync_item *it)
{
	if ((it->actions & (1u << A_CREATE)) != 0)
		return 0;
	if ((it->actions & ((1u << A_UPDATE) | (1u << A_RESUME))) != 0)
		return 1;
	return 2;	/* removals last */
}

static void sync_print_results(const struct sync *s)
{
	size_t done = 0, failed = 0, pending = 0;
	char buf[TN_LOG_VALUE_MAX];

	for (size_t i = 0; i < s->n; i++) {
		const struct sync_item *it = &s->items[i];

		if (it->result == R_FAILED)
			fprintf(stderr, "tnctl: sync %s %s: %s\n", s->k->name,
				tnctl_safe(buf, it->key), it->error);
		done += it->result == R_DONE;
		failed += it->result == R_FAILED;
	}
	for (size_t i = 0; i < s->n; i++)
		pending += s->items[i].result == R_PENDING && s->items[i].planned != 0;
	printf("sync %s: %zu done, %zu failed, %zu not tried; %.1fs\n", s->k->name, done, failed,
	       pending, (double)(tn_time_now_ms() - s->start) / 1000.0);
}

static int sync_exit(const struct sync *s)
{
	if (s->bulk.refused) {
		fprintf(stderr, "tnctl: sync stopped: %s\n", s->bulk.stop_reason);
		return EX_NOPERM;
	}
	if (s->bulk.tls) {
		fprintf(stderr, "tnctl: sync stopped: %s\n", s->bulk.stop_reason);
		return EX_CONFIG;
	}
	if (s->bulk.unreachable || tnctl_bulk_interrupted()) {
		fprintf(stderr, "tnctl: sync stopped (%s): run it again\n",
			s->bulk.unreachable ? s->bulk.stop_reason : "interrupted");
		return EX_TEMPFAIL;
	}
	for (size_t i = 0; i < s->n; i++) {
		if (s->items[i].result == R_FAILED)
			return EX_DATAERR;
	}
	return 0;
}

static int sync_apply(struct sync *s)
{
	void **pending = tn_mem_calloc(s->n + 1, sizeof(*pending));
	size_t n = 0;

	for (int rank = 0; rank < 3; rank++) {
		for (size_t i = 0; i < s->n; i++) {
			if (s->items[i].actions != 0 && sync_item_rank(&s->items[i]) == rank)
				pending[n++] = &s->items[i];
		}
	}
	s->bulk = (struct tnctl_bulk){ .api = s->api, .parallel = s->parallel,
				       .send = sync_send, .answer = sync_answer, .ctx = s };
	s->start = tn_time_now_ms();
	tnctl_bulk_catch_sigint();
	tnctl_bulk_run(&s->bulk, pending, n);
	tnctl_bulk_release_sigint();
	tn_mem_free(&pending);
	/* items not tried keep their actions; finished ones have none left */
	return 0;
}

/* On a terminal: y or yes goes on. */
static bool sync_confirm(const struct sync *s)
{
	char *line = NULL;
	size_t size = 0;
	bool yes;

	if (s->yes || isatty(STDIN_FILENO) != 1 || strcmp(s->feed, "-") == 0)
		return true;
	fprintf(stderr, "Apply these %zu changes to the %s%s%s%s? [y/N] ", sync_total(s),
		s->k->coll, s->tenant != NULL ? " of tenant " : s->domain != NULL ?
		" of domain " : "", s->tenant != NULL ? s->tenant : "",
		s->domain != NULL ? s->domain : "");
	fflush(stderr);
	yes = getline(&line, &size, stdin) > 0 &&
		(strcasecmp(line, "y\n") == 0 || strcasecmp(line, "yes\n") == 0);
	free(line);
	return yes;
}

/* --- the command ------------------------------------------------------------------------------------ */

static int sync_usage_error(const char *why)
{
	fprintf(stderr, "tnctl: sync: %s\n", why);
	return EX_USAGE;
}

static int sync_opt_map(struct sync *s, const char *arg)
{
	const char *eq = strchr(arg, '=');
	char *attr;

	if (eq == NULL || eq == arg || eq[1] == '\0')
		return sync_usage_error("--map: expected ATTR=FIELD");
	attr = tn_mem_strndup(arg, (size_t)(eq - arg));
	for (char *p = attr; *p != '\0'; p++)
		*p = (char)(*p >= 'A' && *p <= 'Z' ? *p - 'A' + 'a' : *p);
	sync_map_add(s, attr, eq + 1);
	tn_mem_free(&attr);
	return 0;
}

static int sync_opt_fields(struct sync *s, const char *arg)
{
	char *copy = tn_mem_strdup(arg), *save = NULL;

	s->only = s->only != NULL ? s->only : json_object();
	for (char *f = strtok_r(copy, ", ", &save); f != NULL; f = strtok_r(NULL, ", ", &save))
		json_object_set_new(s->only, f, json_true());
	tn_mem_free(&copy);
	return 0;
}

static int sync_opt_number(const char *arg, long min, long max, long *v_r)
{
	char *end;

	errno = 0;
	*v_r = strtol(arg, &end, 10);
	return *arg != '\0' && *end == '\0' && errno == 0 && *v_r >= min && *v_r <= max ? 0 :
		-1;
}

static int sync_opt(struct sync *s, int c, const char *arg)
{
	long v;

	switch (c) {
	case 'k':
		return (s->k = tnctl_kind_find(arg)) != NULL ? 0 : EX_USAGE;
	case 'T': s->tenant = tn_mem_strdup(arg); return 0;
	case 'D': s->domain = tn_mem_strdup(arg); return 0;
	case 'f':
		s->format = arg;
		return strcmp(arg, "csv") == 0 || strcmp(arg, "ndjson") == 0 ||
			strcmp(arg, "ldif") == 0 ? 0 : EX_USAGE;
	case 'm': return sync_opt_map(s, arg);
	case 'F': return sync_opt_fields(s, arg);
	case 'a': s->apply = true; return 0;
	case 'y': s->yes = true; return 0;
	case 'S': return 0;	/* --suspend-missing: the default */
	case 'I': s->ignore_missing = true; return 0;
	case 'X': s->allow_delete = true; return 0;
	case 'P': s->update_passwords = true; return 0;
	case 'j': s->json = true; return 0;
	case 'M':
		return sync_opt_number(arg, 0, 1L << 40, &s->max_changes) == 0 ? 0 :
			sync_usage_error("--max-changes: a number from 0");
	case 'p':
		if (sync_opt_number(arg, 1, SYNC_PARALLEL_MAX, &v) < 0)
			return sync_usage_error("--parallel: 1 to 256");
		s->parallel = (unsigned)v;
		return 0;
	default:
		return EX_USAGE;
	}
}

/* The scope's keys in their normal form, and the rules of scope. */
static int sync_scope(struct sync *s)
{
	const bool tenant_kind = s->k == &tnctl_kinds[0], domain_kind = s->k == &tnctl_kinds[1];
	const char *why = NULL;
	char *norm;

	if (tenant_kind && (s->tenant != NULL || s->domain != NULL))
		return sync_usage_error("tenants have no scope: no --tenant or --domain");
	if (domain_kind && (s->tenant == NULL || s->domain != NULL))
		return sync_usage_error("domains: the scope is --tenant T");
	if (!tenant_kind && !domain_kind && (s->tenant == NULL) == (s->domain == NULL))
		return sync_usage_error("the scope is mandatory: --tenant T or --domain D");
	if (s->tenant != NULL) {
		if ((norm = tnctl_key_norm(&tnctl_kinds[0], s->tenant, &why)) == NULL)
			return sync_usage_error(why);
		tn_mem_free(&s->tenant);
		s->tenant = norm;
	}
	if (s->domain != NULL) {
		if ((norm = tnctl_key_norm(&tnctl_kinds[1], s->domain, &why)) == NULL)
			return sync_usage_error(why);
		tn_mem_free(&s->domain);
		s->domain = norm;
	}
	return 0;
}

static int sync_check_options(struct sync *s)
{
	const char *name;
	json_t *v;

	if (s->k == NULL)
		return sync_usage_error("--kind is mandatory");
	if (s->ignore_missing && s->allow_delete)
		return sync_usage_error("--ignore-missing or --allow-delete, not both");
	json_object_foreach(s->only, name, v) {
		if (tnctl_field_find(s->k, name) == NULL) {
			fprintf(stderr, "tnctl: sync: --fields: %.64s is no field of a %s\n", name,
				s->k->name);
			return EX_USAGE;
		}
	}
	if (json_array_size(s->map) > 0 && s->format != NULL && strcmp(s->format, "ldif") != 0)
		return sync_usage_error("--map is for LDIF feeds");
	return sync_scope(s);
}

static int sync_options(struct sync *s, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "kind", required_argument, NULL, 'k' },
		{ "tenant", required_argument, NULL, 'T' },
		{ "domain", required_argument, NULL, 'D' },
		{ "format", required_argument, NULL, 'f' },
		{ "map", required_argument, NULL, 'm' },
		{ "fields", required_argument, NULL, 'F' },
		{ "apply", no_argument, NULL, 'a' },
		{ "yes", no_argument, NULL, 'y' },
		{ "suspend-missing", no_argument, NULL, 'S' },
		{ "ignore-missing", no_argument, NULL, 'I' },
		{ "allow-delete", no_argument, NULL, 'X' },
		{ "update-passwords", no_argument, NULL, 'P' },
		{ "max-changes", required_argument, NULL, 'M' },
		{ "parallel", required_argument, NULL, 'p' },
		{ "json", no_argument, NULL, 'j' },
		{ NULL, 0, NULL, 0 },
	};
	int c, ret;

	optind = 0;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		if ((ret = c == '?' ? EX_USAGE : sync_opt(s, c, optarg)) != 0)
			return ret;
	}
	if (optind != argc - 1)
		return EX_USAGE;
	s->feed = argv[optind];
	return sync_check_options(s);
}

/* Plan shown; then, with --apply, done. */
static int sync_run(struct sync *s)
{
	int ret;

	if ((ret = sync_directory(s)) != 0)
		return ret;
	if (!s->json)
		sync_print_plan(s);
	sync_print_invalid(s);
	if (s->refusal != NULL)
		fprintf(stderr, "tnctl: sync %s: %s\n", s->apply ? "refused" :
			"--apply would be refused", s->refusal);
	if (json_array_size(s->invalid) > 0) {
		fprintf(stderr, "tnctl: sync: the feed has %zu invalid records: nothing written "
			"(fix the feed)\n", json_array_size(s->invalid));
		ret = EX_DATAERR;
	} else if (!s->apply) {
		ret = sync_total(s) > 0 ? SYNC_EX_PENDING : 0;
		if (!s->json)
			printf("dry run: nothing written%s\n", sync_total(s) > 0 ?
			       "; --apply makes these changes" : "");
	} else if (s->refusal != NULL) {
		ret = SYNC_EX_REFUSED;
	} else if (sync_total(s) > 0 && !sync_confirm(s)) {
		fprintf(stderr, "tnctl: sync: not applied\n");
		ret = SYNC_EX_PENDING;
	} else if (sync_total(s) > 0) {
		sync_apply(s);
		if (!s->json)
			sync_print_results(s);
		ret = sync_exit(s);
	}
	if (s->json)
		sync_print_json(sync_json(s, s->bulk.slots != NULL));
	return ret;
}

static void sync_free(struct sync *s)
{
	for (size_t i = 0; i < s->n; i++) {
		struct sync_item *it = &s->items[i];

		tn_mem_free(&it->key);
		json_decref(it->want);
		json_decref(it->have);
		json_decref(it->changes);
		tn_mem_free(&it->note);
		tn_mem_free(&it->etag);
		tn_mem_free(&it->error);
	}
	tn_mem_free(&s->items);
	tn_mem_free(&s->tenant);
	tn_mem_free(&s->domain);
	tn_mem_free(&s->refusal);
	json_decref(s->only);
	json_decref(s->map);
	json_decref(s->carried);
	json_decref(s->index);
	json_decref(s->invalid);
	tnctl_bulk_clear(&s->bulk);
	tnctl_api_destroy(&s->api);
}

int tnctl_sync(struct tnctl *ctl, int argc, char **argv)
{
	struct sync s = { .ctl = ctl, .max_changes = -1, .parallel = 8, .map = json_array(),
			  .carried = json_object(), .index = json_object(),
			  .invalid = json_array() };
	int ret = sync_options(&s, argc, argv);

	if (ret == 0) {
		sync_map_defaults(&s);	/* after --map's: those win */
		ret = sync_read(&s);
	}
	if (ret == 0) {
		s.api = tnctl_api_create(ctl->conf, s.parallel);
		if (tnctl_api_error(s.api) != NULL) {
			fprintf(stderr, "tnctl: %s\n", tnctl_api_error(s.api));
			ret = EX_CONFIG;
		} else {
			ret = sync_run(&s);
		}
	}
	sync_free(&s);
	return ret;
}
