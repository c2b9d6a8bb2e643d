/*++
 * NAME
 *	tnctl-import 1
 * SUMMARY
 *	tnctl import: many creates from CSV or NDJSON, in parallel, resumable
 * SYNOPSIS
 *	tnctl import [--kind K] [--format csv|ndjson] [--results FILE] [--resume]
 *		[--dry-run] [--parallel N] [--batch N] [--progress|--no-progress] FILE
 * DESCRIPTION
 *	Reads FILE whole and turns each line into the body of a create:
 *	CSV (RFC 4180, tnctl-csv.c) with a header naming the JSON fields
 *	and an optional "kind" column (an empty cell: the field is
 *	absent; values converted per the field's type, tnctl-fields.c),
 *	or NDJSON (one object per line, an optional "kind" member). Lines
 *	that fail the local checks (tnctl_check_create) are "invalid" and
 *	never sent.
 *
 *	Order: kinds in dependency order (tenants, domains, mailboxes,
 *	aliases), each kind in file order, with a barrier between kinds;
 *	within a kind up to --parallel (8) requests in flight on reused
 *	connections (one libcurl multi handle, tnctl-api.c; the runner and
 *	its retries are tnctl-bulk.c's, shared with sync).
 *
 *	Batches: consecutive lines of a kind go --batch (100) at a time in
 *	one POST /v1/batch/<coll>, whose results, one per item, are taken
 *	line by line as the single creates' answers: an item answered 409
 *	is checked with a GET once the kind's batches are done; one
 *	answered 503 or 429 was not written and goes into the next round of
 *	batches (5 times at most, after the batch's Retry-After, else 1 s);
 *	a batch too large (413, 400 on "items") is sent again in halves.
 *	A server without the route (404) gets single creates from then on,
 *	after one notice (with --progress). --batch 1: single creates only.
 *	A batch's Idempotency-Key is "<32 hex>-<first line>+<count>-<FNV-1a
 *	of its line numbers, 16 hex>": a resumed run that sends the same
 *	lines together replays the answer; items sent again after a 503 or
 *	429 add "-r<try>-<run>" (a replay would repeat the 503).
 *
 *	A single create carries Idempotency-Key "<sha256 of FILE, 32 hex>-
 *	<line>". A 409 is checked with a GET: the object of that kind
 *	under the tenant the line names (any, when it names none) is
 *	"exists", and so is a create answered from the server's
 *	Idempotency-Key store (an earlier run's). 503/429 are tried again
 *	after Retry-After (at most 5 times); no connection or a timeout 3
 *	times, then the import stops ("unreachable": rerun with --resume).
 *
 *	Results: one NDJSON record per line as it completes (flushed):
 *	{"line","kind","key","status":"created|exists|failed|invalid",
 *	"http","error","field"}, after a header record {"import","sha256",
 *	"resume","at"}. --resume reads them back and skips the lines whose
 *	last record is created or exists for the same key; the others are
 *	tried again. --dry-run checks every line and sends nothing.
 *
 *	Exit: 0 every line created or existing; 65 a line invalid or
 *	failed; 75 stopped (server unreachable, SIGINT) with lines left;
 *	77 the token was refused; 64 usage; 66 FILE unreadable; 73 the
 *	results file cannot be written.
 *--*/
#include "tn-build.h"

#include <errno.h>
#include <getopt.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>
#include <time.h>
#include <unistd.h>

#include "tn-log.h"
#include "tn-mem.h"
#include "tn-time.h"
#include "tnctl-api.h"
#include "tnctl-prov.h"

#define IMP_FILE_MAX ((size_t)4 << 30)
#define IMP_PARALLEL_MAX 256
#define IMP_BATCH_MAX 1000
#define IMP_BATCH_DEFAULT 100
#define IMP_ITEM_RETRIES 5	/* a batch item answered 503 or 429 */
#define IMP_SHOW_INVALID 10	/* invalid lines shown on stderr */
#define IMP_TTY_TICK_MS 200
#define IMP_PLAIN_TICK_MS 2000

enum imp_status { IMP_PENDING, IMP_CREATED, IMP_EXISTS, IMP_FAILED, IMP_INVALID, IMP_SKIPPED };

/* What a line still pending after a batch needs */
enum imp_next {
	IMP_NEXT_CREATE,	/* its create (in a batch with --batch > 1) */
	IMP_NEXT_CHECK,		/* the GET after a batch item's 409 */
	IMP_NEXT_SINGLE,	/* its create alone: the server has no batch route */
};

static const char *const imp_status_names[] = {
	"pending", "created", "exists", "failed", "invalid", "skipped",
};

struct imp_line {
	unsigned line;
	int kind;		/* index in tnctl_kinds, -1: unknown */
	enum imp_status status;
	char *key;
	char *tenant;		/* the tenant the line names, or NULL */
	char *body;		/* the create's JSON */
	char *error;		/* invalid: why */
	const char *field;
	bool checking;		/* the GET after a 409 */
	char *conflict;		/* the 409's description */
	enum imp_next next;
	unsigned item_tries;	/* 503/429 as a batch item */
};

struct imp_batch {
	struct imp_line **lines;
	size_t n;
};

struct imp {
	struct tnctl *ctl;
	const char *file;
	const char *results_path;
	int fixed_kind;		/* --kind, or -1 */
	const char *format;
	bool resume, dry_run, progress;
	unsigned parallel;
	unsigned batch;		/* lines per request (--batch) */
	unsigned batch_now;	/* less after a 413 */
	bool no_batch_route;	/* the server has none: single creates */
	long item_wait;		/* Retry-After of a batch with items to retry */
	char run_id[32];	/* this run's: keys of items sent again */
	char sha[65];		/* of the file's content */
	struct imp_line *lines;
	size_t nlines, cap;
	FILE *results;
	struct tnctl_api *api;
	struct tnctl_bulk bulk;
	size_t counts[6];	/* by enum imp_status */
	size_t total, done;	/* lines to send this run, and finished */
	size_t shown_invalid;
	tn_msec_t start, last_tick;
	bool tty;
};

/* --- lines ----------------------------------------------------------------------- */

static struct imp_line *imp_add(struct imp *im, unsigned line)
{
	struct imp_line *l;

	if (im->nlines == im->cap) {
		im->cap = im->cap == 0 ? 1024 : 2 * im->cap;
		im->lines = tn_mem_realloc(im->lines, im->cap * sizeof(*im->lines));
	}
	l = &im->lines[im->nlines++];
	memset(l, 0, sizeof(*l));
	l->line = line;
	l->kind = im->fixed_kind;
	return l;
}

static void imp_invalid(struct imp_line *l, const char *field, char *why)
{
	l->status = IMP_INVALID;
	l->field = field;
	tn_mem_free(&l->error);
	l->error = why;
}

/* obj (consumed) becomes the line's body, or the line is invalid. */
static void imp_finish_line(struct imp_line *l, json_t *obj)
{
	const struct tnctl_kind *k;
	const char *field = NULL;
	char *why = NULL;

	if (l->status == IMP_INVALID) {
		json_decref(obj);
		return;
	}
	if (l->kind < 0) {
		imp_invalid(l, "kind", tn_mem_strdup("no kind: give --kind, or a kind column or "
						     "member (tenant, domain, mailbox, alias)"));
		json_decref(obj);
		return;
	}
	k = &tnctl_kinds[l->kind];
	if (json_is_string(json_object_get(obj, k->fields[0].name)))
		l->key = tn_mem_strdup(json_string_value(json_object_get(obj, k->fields[0].name)));
	if (tnctl_check_create(k, obj, &field, &why) < 0) {
		imp_invalid(l, field, why);
	} else {
		const char *t = json_string_value(json_object_get(obj, l->kind == 0 ? "id" :
								   "tenant"));

		l->tenant = t != NULL ? tn_mem_strdup(t) : NULL;
		l->body = json_dumps(obj, JSON_COMPACT);
	}
	json_decref(obj);
}

/* A kind's name in a line: 0, or -1 (the line is invalid). */
static int imp_kind_of(struct imp *im, struct imp_line *l, const char *name)
{
	const struct tnctl_kind *k = tnctl_kind_find(name);

	if (k == NULL) {
		imp_invalid(l, "kind", tn_mem_printf("kind: '%.64s' is none of tenant, domain, "
						     "mailbox, alias", name));
		return -1;
	}
	if (im->fixed_kind >= 0 && k != &tnctl_kinds[im->fixed_kind]) {
		imp_invalid(l, "kind", tn_mem_printf("kind: %s, but --kind %s", k->name,
						     tnctl_kinds[im->fixed_kind].name));
		return -1;
	}
	l->kind = (int)(k - tnctl_kinds);
	return 0;
}

/* --- NDJSON ------------------------------------------------------------------------ */

/* tnctl_bulk_line_fn */
static void imp_ndjson_line(void *ctx, unsigned lineno, const char *s, size_t len)
{
	struct imp *im = ctx;
	struct imp_line *l;
	json_error_t jerr;
	json_t *obj, *kind;

	while (len > 0 && (s[len - 1] == '\r' || s[len - 1] == ' ' || s[len - 1] == '\t'))
		len--;
	if (strspn(s, " \t") >= len)
		return;		/* blank */
	l = imp_add(im, lineno);
	obj = json_loadb(s, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!json_is_object(obj)) {
		imp_invalid(l, NULL, obj == NULL ? tn_mem_printf("malformed JSON: %s (column %d)",
								 jerr.text, jerr.column) :
			    tn_mem_strdup("not a JSON object"));
		json_decref(obj);
		return;
	}
	kind = json_object_get(obj, "kind");
	if (kind != NULL && !json_is_string(kind))
		imp_invalid(l, "kind", tn_mem_strdup("kind: must be a string"));
	else if (kind != NULL)
		imp_kind_of(im, l, json_string_value(kind));
	json_object_del(obj, "kind");
	imp_finish_line(l, obj);
}

/* --- CSV ----------------------------------------------------------------------------- */

/* The header: -1 after a message when a column is unknown or twice. */
static int imp_csv_header(struct imp *im, const struct tnctl_csv_record *h, int *kind_col_r)
{
	*kind_col_r = -1;
	for (size_t i = 0; i < h->n; i++) {
		const char *name = h->fields[i];

		for (size_t j = 0; j < i; j++) {
			if (strcmp(h->fields[j], name) == 0) {
				fprintf(stderr, "tnctl: %s:%u: column '%.64s' twice\n", im->file,
					h->line, name);
				return -1;
			}
		}
		if (strcmp(name, "kind") == 0) {
			*kind_col_r = (int)i;
		} else if (!tnctl_field_known(name) ||
			   (im->fixed_kind >= 0 &&
			    tnctl_field_find(&tnctl_kinds[im->fixed_kind], name) == NULL)) {
			fprintf(stderr, "tnctl: %s:%u: column '%.64s' is no field of a %s\n",
				im->file, h->line, name, im->fixed_kind >= 0 ?
				tnctl_kinds[im->fixed_kind].name : "tenant, domain, mailbox or alias");
			return -1;
		}
	}
	return 0;
}

static void imp_csv_record(struct imp *im, const struct tnctl_csv_record *h, int kind_col,
			   const struct tnctl_csv_record *rec)
{
	struct imp_line *l = imp_add(im, rec->line);
	json_t *obj = json_object();
	const char *why = NULL;

	if (rec->n != h->n) {
		imp_invalid(l, NULL, tn_mem_printf("%zu fields; the header has %zu", rec->n, h->n));
	} else if (kind_col >= 0 && rec->fields[kind_col][0] != '\0') {
		imp_kind_of(im, l, rec->fields[kind_col]);
	}
	for (size_t i = 0; l->status != IMP_INVALID && i < h->n; i++) {
		const struct tnctl_field *f;
		json_t *v;

		if ((int)i == kind_col || rec->fields[i][0] == '\0')
			continue;	/* an empty cell: the field is absent */
		f = l->kind >= 0 ? tnctl_field_find(&tnctl_kinds[l->kind], h->fields[i]) : NULL;
		if (l->kind >= 0 && f == NULL) {
			imp_invalid(l, h->fields[i], tn_mem_printf("%s: no field of a %s",
								   h->fields[i],
								   tnctl_kinds[l->kind].name));
		} else if (f != NULL && (v = tnctl_field_value(f, rec->fields[i], &why)) == NULL) {
			imp_invalid(l, f->name, tn_mem_printf("%s: %s", f->name, why));
		} else if (f != NULL) {
			json_object_set_new(obj, f->name, v);
		}
	}
	imp_finish_line(l, obj);
}

static int imp_csv(struct imp *im, const char *buf, size_t len)
{
	struct tnctl_csv c;
	struct tnctl_csv_record h = { 0 }, rec = { 0 };
	const char *why = NULL;
	int kind_col, ret;

	tnctl_csv_init(&c, buf, len);
	if ((ret = tnctl_csv_next(&c, &h, &why)) <= 0) {
		fprintf(stderr, "tnctl: %s: %s\n", im->file, ret == 0 ? "no header line" : why);
		tnctl_csv_record_clear(&h);
		return -1;
	}
	if (imp_csv_header(im, &h, &kind_col) < 0) {
		tnctl_csv_record_clear(&h);
		return -1;
	}
	while ((ret = tnctl_csv_next(&c, &rec, &why)) != 0) {
		if (ret > 0)
			imp_csv_record(im, &h, kind_col, &rec);
		else
			imp_invalid(imp_add(im, rec.line), NULL,
				    tn_mem_printf("malformed CSV: %s", why));
	}
	tnctl_csv_record_clear(&rec);
	tnctl_csv_record_clear(&h);
	return 0;
}

/* --- reading the file ------------------------------------------------------------------ */

static int imp_read(struct imp *im)
{
	const char *why = NULL;
	char *buf = NULL;
	size_t len = 0;
	int ret = 0;

	if (tnctl_bulk_read(im->file, IMP_FILE_MAX, &buf, &len, &why) < 0) {
		fprintf(stderr, "tnctl: %s: %s\n", im->file, why);
		return EX_NOINPUT;
	}
	tnctl_bulk_sha256(buf, len, im->sha);
	if (im->format == NULL)
		im->format = tnctl_bulk_format(im->file, buf, len);
	if (strcmp(im->format, "csv") == 0) {
		ret = imp_csv(im, buf, len) < 0 ? EX_DATAERR : 0;
	} else if (strcmp(im->format, "ndjson") == 0) {
		tnctl_bulk_lines(buf, len, imp_ndjson_line, im);
	} else {
		fprintf(stderr, "tnctl: %s: LDIF is read by sync, not import\n", im->file);
		ret = EX_DATAERR;
	}
	tn_mem_free(&buf);
	return ret;
}

/* --- results ---------------------------------------------------------------------------- */

struct imp_prev {
	unsigned line;
	size_t seq;		/* order in the file: the last record wins */
	enum imp_status status;
	char *key;
};

static int imp_prev_cmp(const void *a, const void *b)
{
	const struct imp_prev *x = a, *y = b;

	if (x->line != y->line)
		return x->line < y->line ? -1 : 1;
	return x->seq < y->seq ? -1 : x->seq > y->seq;
}

static enum imp_status imp_status_parse(const char *s)
{
	for (size_t i = 0; s != NULL && i < sizeof(imp_status_names) / sizeof(*imp_status_names);
	     i++) {
		if (strcmp(s, imp_status_names[i]) == 0)
			return (enum imp_status)i;
	}
	return IMP_PENDING;
}

/* The records of the results file with a line number, sorted. A torn
 * last record (kill -9) is no record. */
static struct imp_prev *imp_prev_read(FILE *f, size_t *n_r)
{
	struct imp_prev *prev = NULL;
	size_t n = 0, cap = 0, size = 0;
	char *line = NULL;

	while (getline(&line, &size, f) > 0) {
		json_t *o = json_loads(line, 0, NULL);
		json_t *ln = json_object_get(o, "line");
		const char *key = json_string_value(json_object_get(o, "key"));

		if (json_is_integer(ln) && json_integer_value(ln) > 0 &&
		    json_integer_value(ln) <= UINT32_MAX) {
			if (n == cap) {
				cap = cap == 0 ? 1024 : 2 * cap;
				prev = tn_mem_realloc(prev, cap * sizeof(*prev));
			}
			prev[n] = (struct imp_prev){ (unsigned)json_integer_value(ln), n,
				imp_status_parse(json_string_value(json_object_get(o, "status"))),
				key != NULL ? tn_mem_strdup(key) : NULL };
			n++;
		}
		json_decref(o);
	}
	free(line);
	if (n > 0)
		qsort(prev, n, sizeof(*prev), imp_prev_cmp);
	*n_r = n;
	return prev;
}

/* --resume: a line whose last record says created or exists, for the
 * same key, is skipped; every other line is tried (again). */
static void imp_resume(struct imp *im)
{
	FILE *f = fopen(im->results_path, "re");
	struct imp_prev *prev;
	size_t n = 0, j = 0;

	if (f == NULL)
		return;		/* nothing done yet */
	prev = imp_prev_read(f, &n);
	fclose(f);
	for (size_t i = 0; i < im->nlines; i++) {	/* both sorted by line */
		struct imp_line *l = &im->lines[i];
		const struct imp_prev *last = NULL;

		while (j < n && prev[j].line < l->line)
			j++;
		while (j < n && prev[j].line == l->line)
			last = &prev[j++];
		if (last != NULL && l->status == IMP_PENDING && last->key != NULL &&
		    l->key != NULL && strcmp(last->key, l->key) == 0 &&
		    (last->status == IMP_CREATED || last->status == IMP_EXISTS))
			l->status = IMP_SKIPPED;
	}
	for (size_t i = 0; i < n; i++)
		tn_mem_free(&prev[i].key);
	tn_mem_free(&prev);
}

static void imp_record(struct imp *im, const struct imp_line *l, long http)
{
	json_t *o;
	char *text;

	if (im->results == NULL)
		return;
	o = json_pack("{s:i,s:s?,s:s?,s:s}", "line", (int)l->line,
		      "kind", l->kind >= 0 ? tnctl_kinds[l->kind].name : NULL,
		      "key", l->key, "status", imp_status_names[l->status]);
	if (http > 0)
		json_object_set_new(o, "http", json_integer(http));
	if (l->error != NULL)
		json_object_set_new(o, "error", json_string(l->error));
	if (l->field != NULL)
		json_object_set_new(o, "field", json_string(l->field));
	text = json_dumps(o, JSON_COMPACT);
	fprintf(im->results, "%s\n", text);
	fflush(im->results);
	free(text);
	json_decref(o);
}

static int imp_open_results(struct imp *im)
{
	char at[64];
	time_t now = time(NULL);
	struct tm tm;
	json_t *o;
	char *text;

	im->results = fopen(im->results_path, im->resume ? "ae" : "we");
	if (im->results == NULL) {
		fprintf(stderr, "tnctl: %s: %s\n", im->results_path, strerror(errno));
		return EX_CANTCREAT;
	}
	gmtime_r(&now, &tm);
	strftime(at, sizeof(at), "%Y-%m-%dT%H:%M:%SZ", &tm);
	o = json_pack("{s:s,s:s,s:b,s:s}", "import", im->file, "sha256", im->sha,
		      "resume", im->resume, "at", at);
	text = json_dumps(o, JSON_COMPACT);
	fprintf(im->results, "%s\n", text);
	fflush(im->results);
	free(text);
	json_decref(o);
	return 0;
}

/* --- progress ----------------------------------------------------------------------------- */

static void imp_progress(struct imp *im, bool last)
{
	tn_msec_t now = tn_time_now_ms();
	double secs = (double)(now - im->start) / 1000.0;
	double rate = secs > 0 ? (double)im->done / secs : 0;
	double eta = rate > 0 ? (double)(im->total - im->done) / rate : 0;
	unsigned pct = im->total > 0 ? (unsigned)(100 * im->done / im->total) : 100;
	char bar[31];

	if (!im->progress || (!last && now - im->last_tick < (im->tty ? IMP_TTY_TICK_MS :
								IMP_PLAIN_TICK_MS)))
		return;
	im->last_tick = now;
	if (!im->tty) {
		fprintf(stderr, "import: %zu/%zu lines (%u%%), %.0f/s, ETA %.0fs\n", im->done,
			im->total, pct, rate, eta);
		return;
	}
	for (size_t i = 0; i < 30; i++)
		bar[i] = i < pct * 30 / 100 ? '#' : '.';
	bar[30] = '\0';
	if (im->done == 0)
		fprintf(stderr, "\r[%s] %zu/%zu %3u%% %6s/s ETA --:-- ", bar, im->done,
			im->total, pct, "-");
	else
		fprintf(stderr, "\r[%s] %zu/%zu %3u%% %6.0f/s ETA %d:%02d ", bar, im->done,
			im->total, pct, rate, (int)eta / 60, (int)eta % 60);
	if (last)
		fprintf(stderr, "\n");
}

/* --- sending ------------------------------------------------------------------------------ */

static void imp_done(struct imp *im, struct imp_line *l, enum imp_status st, long http,
		     char *error)
{
	l->status = st;
	if (error != NULL) {
		tn_mem_free(&l->error);
		l->error = error;
	}
	if (st == IMP_INVALID && im->shown_invalid++ < IMP_SHOW_INVALID)
		fprintf(stderr, "tnctl: %s:%u: %s\n", im->file, l->line, l->error);
	im->counts[st]++;
	im->done++;
	imp_record(im, l, http);
	tn_mem_free(&l->conflict);
	imp_progress(im, false);
}

/* tnctl_bulk_send_fn: the line's create */
static void imp_send(void *ctx, void *item, struct tnctl_api_req *rq)
{
	struct imp *im = ctx;
	struct imp_line *l = item;
	char *path = tn_mem_printf("/v1/%s", tnctl_kinds[l->kind].coll);
	char *idem = tn_mem_printf("%.32s-%u", im->sha, l->line);

	tnctl_api_req_init(rq, "POST", path, l->body, NULL, idem);
	tn_mem_free(&path);
	tn_mem_free(&idem);
}

/* The GET after a 409: is it this line's object? */
static void imp_check_init(struct imp_line *l, struct tnctl_api_req *rq)
{
	const struct tnctl_kind *k = &tnctl_kinds[l->kind];
	char *key = tnctl_api_escape(l->key);
	char *path = tn_mem_printf("/v1/%s/%s", k->coll, key);

	tnctl_api_req_init(rq, "GET", path, NULL, NULL, NULL);
	l->checking = true;
	tn_mem_free(&key);
	tn_mem_free(&path);
}

static void imp_check(struct imp_line *l, struct tnctl_api_req *rq)
{
	l->conflict = tnctl_api_describe(rq);
	tnctl_api_req_clear(rq);
	imp_check_init(l, rq);
}

/* tnctl_bulk_send_fn: the check of a batch item answered 409 */
static void imp_send_check(void *ctx, void *item, struct tnctl_api_req *rq)
{
	(void)ctx;
	imp_check_init(item, rq);
}

static void imp_checked(struct imp *im, struct imp_line *l, struct tnctl_api_req *rq)
{
	json_t *obj = rq->http == 200 ? tnctl_api_json(rq) : NULL;
	const char *tenant = json_string_value(json_object_get(obj, l->kind == 0 ? "id" :
							       "tenant"));
	bool same = obj != NULL && (l->tenant == NULL ||
				    (tenant != NULL && strcasecmp(tenant, l->tenant) == 0));

	json_decref(obj);
	if (same)
		imp_done(im, l, IMP_EXISTS, 200, NULL);
	else
		imp_done(im, l, IMP_FAILED, 409, tn_mem_printf(
				 "%s%s", l->conflict, obj != NULL ? " (another tenant's)" : ""));
}

/* tnctl_bulk_answer_fn */
static bool imp_answer(void *ctx, void *item, struct tnctl_api_req *rq, const char *stopped)
{
	struct imp *im = ctx;
	struct imp_line *l = item;
	long http = rq->http;

	if (stopped != NULL) {
		imp_done(im, l, IMP_FAILED, 0, tn_mem_strdup(stopped));
	} else if (http == 0 || http == 503 || http == 429) {
		imp_done(im, l, IMP_FAILED, http, tnctl_api_describe(rq));
	} else if (l->checking) {
		imp_checked(im, l, rq);
	} else if (http == 200 || http == 201) {
		/* a replayed answer: an earlier run created it */
		imp_done(im, l, rq->replayed ? IMP_EXISTS : IMP_CREATED, http, NULL);
	} else if (http == 409) {
		imp_check(l, rq);
		return true;
	} else {
		l->field = NULL;
		imp_done(im, l, http == 400 || http == 413 ? IMP_INVALID : IMP_FAILED, http,
			 tnctl_api_describe(rq));
	}
	return false;
}

static void imp_tick(void *ctx)
{
	imp_progress(ctx, false);
}

/* --- batches ------------------------------------------------------------------------ */

/* "<sha>-<first line>+<count>-<digest of the line numbers>": the same
 * batch of a resumed run replays; a batch that starts at the same line
 * but holds other lines (some were done meanwhile) gets another key.
 * Lines sent again after a 503 or 429 as items get a key of this run
 * and try ("-r<try>-<run>"): the answer kept for the first key holds
 * those items' 503s, which a replay would only repeat. */
static char *imp_batch_key(const struct imp *im, const struct imp_batch *b)
{
	uint64_t h = 14695981039346656037ULL;	/* FNV-1a */
	unsigned tries = 0;

	for (size_t i = 0; i < b->n; i++) {
		for (unsigned v = b->lines[i]->line, j = 0; j < 4; j++, v >>= 8) {
			h ^= v & 0xff;
			h *= 1099511628211ULL;
		}
		if (b->lines[i]->item_tries > tries)
			tries = b->lines[i]->item_tries;
	}
	if (tries == 0)
		return tn_mem_printf("%.32s-%u+%zu-%016llx", im->sha, b->lines[0]->line, b->n,
				     (unsigned long long)h);
	return tn_mem_printf("%.32s-%u+%zu-%016llx-r%u-%s", im->sha, b->lines[0]->line, b->n,
			     (unsigned long long)h, tries, im->run_id);
}

/* {"items":[<body>,...]} */
static char *imp_batch_body(const struct imp_batch *b)
{
	size_t len = sizeof("{\"items\":[]}");
	char *body, *p;

	for (size_t i = 0; i < b->n; i++)
		len += strlen(b->lines[i]->body) + 1;
	p = body = tn_mem_alloc(len);
	p = stpcpy(p, "{\"items\":[");
	for (size_t i = 0; i < b->n; i++) {
		if (i > 0)
			*p++ = ',';
		p = stpcpy(p, b->lines[i]->body);
	}
	strcpy(p, "]}");
	return body;
}

/* tnctl_bulk_send_fn: POST /v1/batch/<coll> */
static void imp_batch_send(void *ctx, void *item, struct tnctl_api_req *rq)
{
	struct imp_batch *b = item;
	char *path = tn_mem_printf("/v1/batch/%s", tnctl_kinds[b->lines[0]->kind].coll);
	char *body = imp_batch_body(b);
	char *idem = imp_batch_key(ctx, b);

	tnctl_api_req_init(rq, "POST", path, body, NULL, idem);
	tn_mem_free(&path);
	tn_mem_free(&body);
	tn_mem_free(&idem);
}

/* One item's result, as the same create alone would have been
 * answered: final, or what the line needs next. */
static void imp_item(struct imp *im, struct imp_line *l, json_t *res, bool replayed,
		     long retry_after)
{
	json_t *st = json_object_get(res, "status"), *err = json_object_get(res, "error");
	long http = json_is_integer(st) ? (long)json_integer_value(st) : 0;

	if (http == 200 || http == 201) {
		imp_done(im, l, replayed ? IMP_EXISTS : IMP_CREATED, http, NULL);
	} else if (http == 409) {
		tn_mem_free(&l->conflict);
		l->conflict = tnctl_api_describe_error(http, err);
		l->next = IMP_NEXT_CHECK;
	} else if ((http == 503 || http == 429) && ++l->item_tries < IMP_ITEM_RETRIES &&
		   !tnctl_bulk_interrupted()) {
		l->next = IMP_NEXT_CREATE;	/* not written: in the next round */
		if (retry_after < 1)
			retry_after = 1;
		if (retry_after > im->item_wait)
			im->item_wait = retry_after > 10 ? 10 : retry_after;
	} else if (http < 400 || http > 599) {
		imp_done(im, l, IMP_FAILED, 200, tn_mem_printf(
				 "batch answer: item without an HTTP status (%ld)", http));
	} else {
		l->field = NULL;
		imp_done(im, l, http == 400 || http == 413 ? IMP_INVALID : IMP_FAILED, http,
			 tnctl_api_describe_error(http, err));
	}
}

/* The answer's "results", one object per item, or NULL */
static json_t *imp_batch_results(const struct tnctl_api_req *rq, size_t n)
{
	json_t *j = tnctl_api_json(rq), *res = json_object_get(j, "results"), *v;
	size_t i;

	if (!json_is_array(res) || json_array_size(res) != n) {
		json_decref(j);
		return NULL;
	}
	json_array_foreach(res, i, v) {
		if (!json_is_object(v)) {
			json_decref(j);
			return NULL;
		}
	}
	json_incref(res);
	json_decref(j);
	return res;
}

/* The batch refused whole: each line as its create alone would be (a
 * 413 only comes here for a batch of one line: too large itself) */
static void imp_batch_fail(struct imp *im, struct imp_batch *b, long http, const char *why)
{
	for (size_t i = 0; i < b->n; i++)
		imp_done(im, b->lines[i], http == 413 ? IMP_INVALID : IMP_FAILED, http,
			 tn_mem_strdup(why));
}

/* 409 for the whole batch: its Idempotency-Key still running after the
 * runner's waits (a killed run's request); each line is checked. */
static void imp_batch_check(struct imp_batch *b, const struct tnctl_api_req *rq)
{
	for (size_t i = 0; i < b->n; i++) {
		tn_mem_free(&b->lines[i]->conflict);
		b->lines[i]->conflict = tnctl_api_describe(rq);
		b->lines[i]->next = IMP_NEXT_CHECK;
	}
}

/* 404 to a batch: a server without the route; its lines, and all to
 * come, are sent one by one. */
static void imp_no_route(struct imp *im, struct imp_batch *b, const struct tnctl_api_req *rq)
{
	if (!im->no_batch_route && im->progress) {
		char *why = tnctl_api_describe(rq);

		fprintf(stderr, "%stnctl: import: no batch route on the server (%s %s: %s): "
			"one create per line\n", im->tty && im->last_tick != 0 ? "\n" : "",
			rq->method, rq->path, why);
		tn_mem_free(&why);
	}
	im->no_batch_route = true;
	for (size_t i = 0; i < b->n; i++)
		b->lines[i]->next = IMP_NEXT_SINGLE;
}

/* Too large for the server (413, 400 on "items"): its lines again in
 * batches half as large. */
static bool imp_batch_split(struct imp *im, struct imp_batch *b, const struct tnctl_api_req *rq)
{
	bool split = rq->http == 413;

	if (rq->http == 400) {
		json_t *j = tnctl_api_json(rq);
		const char *f = json_string_value(json_object_get(json_object_get(j, "error"),
								  "field"));

		split = f != NULL && strcmp(f, "items") == 0;
		json_decref(j);
	}
	if (!split || b->n < 2)
		return false;
	if (im->batch_now > b->n / 2)
		im->batch_now = (unsigned)(b->n / 2);
	return true;		/* the lines stay IMP_NEXT_CREATE */
}

/* tnctl_bulk_answer_fn of a batch */
static bool imp_batch_answer(void *ctx, void *item, struct tnctl_api_req *rq,
			     const char *stopped)
{
	struct imp *im = ctx;
	struct imp_batch *b = item;
	json_t *res;
	char *why;

	if (stopped != NULL) {
		imp_batch_fail(im, b, 0, stopped);
	} else if (rq->http == 404) {
		imp_no_route(im, b, rq);
	} else if (imp_batch_split(im, b, rq)) {
		/* again, smaller */
	} else if (rq->http == 409) {
		imp_batch_check(b, rq);
	} else if (rq->http == 200 && (res = imp_batch_results(rq, b->n)) != NULL) {
		for (size_t i = 0; i < b->n; i++)
			imp_item(im, b->lines[i], json_array_get(res, i), rq->replayed,
				 rq->retry_after);
		json_decref(res);
	} else {
		why = rq->http == 200 ? tn_mem_printf("batch answer without %zu results", b->n) :
			tnctl_api_describe(rq);
		imp_batch_fail(im, b, rq->http, why);
		tn_mem_free(&why);
	}
	return false;
}

/* The lines of kind still to do with next step next, in file order */
static size_t imp_pick(struct imp *im, int kind, enum imp_next next, void **out)
{
	size_t n = 0;

	for (size_t i = 0; i < im->nlines; i++) {
		struct imp_line *l = &im->lines[i];

		if (l->kind == kind && l->status == IMP_PENDING && l->next == next)
			out[n++] = l;
	}
	return n;
}

/* Wait secs (a batch had items to retry), or until ^C */
static void imp_pause(struct imp *im, long secs)
{
	tn_msec_t until = tn_time_now_ms() + (tn_msec_t)secs * 1000;

	while (tn_time_now_ms() < until && !tnctl_bulk_interrupted()) {
		usleep(50 * 1000);
		imp_progress(im, false);
	}
}

/* One round: lines in batches of im->batch_now, --parallel requests at
 * a time. */
static void imp_batch_round(struct imp *im, void **lines, size_t n)
{
	size_t nb = (n + im->batch_now - 1) / im->batch_now;
	struct imp_batch *bs = tn_mem_calloc(nb, sizeof(*bs));
	void **items = tn_mem_calloc(nb, sizeof(*items));

	for (size_t i = 0; i < nb; i++) {
		bs[i].lines = (struct imp_line **)lines + i * im->batch_now;
		bs[i].n = i + 1 < nb ? im->batch_now : n - i * im->batch_now;
		items[i] = &bs[i];
	}
	im->item_wait = 0;
	im->bulk.send = imp_batch_send;
	im->bulk.answer = imp_batch_answer;
	tnctl_bulk_run(&im->bulk, items, nb);
	tn_mem_free(&items);
	tn_mem_free(&bs);
}

/* The lines of kind in batches, round after round while items are to
 * be tried again (503, 429, a batch too large). Lines left: a 409 to
 * check, or single creates (no batch route). */
static void imp_batches(struct imp *im, int kind, void **pending)
{
	size_t n;

	while ((n = imp_pick(im, kind, IMP_NEXT_CREATE, pending)) > 0 && !im->no_batch_route) {
		if (tnctl_bulk_stopping(&im->bulk)) {
			for (size_t i = 0; i < n; i++) {
				struct imp_line *l = pending[i];

				if (l->item_tries > 0)
					imp_done(im, l, IMP_FAILED, 0,
						 tn_mem_strdup("not tried again: stopped"));
			}
			return;
		}
		imp_batch_round(im, pending, n);
		if (im->item_wait > 0)
			imp_pause(im, im->item_wait);
	}
	if (im->no_batch_route) {
		for (size_t i = 0; i < n; i++)
			((struct imp_line *)pending[i])->next = IMP_NEXT_SINGLE;
	}
}

/* The lines of kind with next step next, one request each */
static void imp_lines(struct imp *im, int kind, enum imp_next next, void **pending)
{
	size_t n = imp_pick(im, kind, next, pending);

	im->bulk.send = next == IMP_NEXT_CHECK ? imp_send_check : imp_send;
	im->bulk.answer = imp_answer;
	tnctl_bulk_run(&im->bulk, pending, n);
}

/* A kind: in batches (--batch), else or then (no batch route) one
 * create per line; the 409s of batch items checked last. */
static void imp_kind(struct imp *im, int kind)
{
	void **pending = tn_mem_calloc(im->nlines + 1, sizeof(*pending));

	if (im->batch > 1)
		imp_batches(im, kind, pending);
	imp_lines(im, kind, im->batch > 1 ? IMP_NEXT_SINGLE : IMP_NEXT_CREATE, pending);
	imp_lines(im, kind, IMP_NEXT_CHECK, pending);
	tn_mem_free(&pending);
}

/* --- the command ------------------------------------------------------------------------- */

static int imp_options(struct imp *im, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "kind", required_argument, NULL, 'k' },
		{ "format", required_argument, NULL, 'f' },
		{ "results", required_argument, NULL, 'r' },
		{ "resume", no_argument, NULL, 'R' },
		{ "dry-run", no_argument, NULL, 'n' },
		{ "parallel", required_argument, NULL, 'p' },
		{ "batch", required_argument, NULL, 'b' },
		{ "progress", no_argument, NULL, 'P' },
		{ "no-progress", no_argument, NULL, 'Q' },
		{ NULL, 0, NULL, 0 },
	};
	const struct tnctl_kind *k;
	char *end;
	long v;
	int c;

	optind = 0;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'k':
			if ((k = tnctl_kind_find(optarg)) == NULL)
				return EX_USAGE;
			im->fixed_kind = (int)(k - tnctl_kinds);
			break;
		case 'f':
			if (strcmp(optarg, "csv") != 0 && strcmp(optarg, "ndjson") != 0)
				return EX_USAGE;
			im->format = optarg;
			break;
		case 'r': im->results_path = optarg; break;
		case 'R': im->resume = true; break;
		case 'n': im->dry_run = true; break;
		case 'P': im->progress = true; break;
		case 'Q': im->progress = false; break;
		case 'p':
			v = strtol(optarg, &end, 10);
			if (*optarg == '\0' || *end != '\0' || v < 1 || v > IMP_PARALLEL_MAX) {
				fprintf(stderr, "tnctl: import: --parallel: 1 to %d\n",
					IMP_PARALLEL_MAX);
				return EX_USAGE;
			}
			im->parallel = (unsigned)v;
			break;
		case 'b':
			v = strtol(optarg, &end, 10);
			if (*optarg == '\0' || *end != '\0' || v < 1 || v > IMP_BATCH_MAX) {
				fprintf(stderr, "tnctl: import: --batch: 1 to %d\n", IMP_BATCH_MAX);
				return EX_USAGE;
			}
			im->batch = (unsigned)v;
			break;
		default:
			return EX_USAGE;
		}
	}
	if (optind != argc - 1)
		return EX_USAGE;
	im->file = argv[optind];
	if (strcmp(im->file, "-") == 0 && im->results_path == NULL && !im->dry_run) {
		fprintf(stderr, "tnctl: import: standard input needs --results FILE\n");
		return EX_USAGE;
	}
	return 0;
}

/* The invalid lines are final before anything is sent. */
static void imp_count_local(struct imp *im)
{
	for (size_t i = 0; i < im->nlines; i++) {
		struct imp_line *l = &im->lines[i];

		if (l->status == IMP_INVALID) {
			im->counts[IMP_INVALID]++;
			if (im->shown_invalid++ < IMP_SHOW_INVALID)
				fprintf(stderr, "tnctl: %s:%u: %s\n", im->file, l->line, l->error);
			imp_record(im, l, 0);
		} else if (l->status == IMP_SKIPPED) {
			im->counts[IMP_SKIPPED]++;
		} else {
			im->total++;
		}
	}
}

static int imp_dry_run(struct imp *im)
{
	size_t per_kind[TNCTL_NKINDS] = { 0 };

	imp_count_local(im);
	for (size_t i = 0; i < im->nlines; i++) {
		if (im->lines[i].status == IMP_PENDING)
			per_kind[im->lines[i].kind]++;
	}
	printf("dry run: %zu lines: would create", im->nlines);
	for (size_t k = 0; k < TNCTL_NKINDS; k++)
		printf("%s %zu %s", k > 0 ? "," : "", per_kind[k], tnctl_kinds[k].name);
	printf("; %zu invalid\n", im->counts[IMP_INVALID]);
	if (im->shown_invalid > IMP_SHOW_INVALID)
		fprintf(stderr, "tnctl: ... %zu more invalid lines\n",
			im->shown_invalid - IMP_SHOW_INVALID);
	return im->counts[IMP_INVALID] > 0 ? EX_DATAERR : 0;
}

static int imp_summary(struct imp *im)
{
	double secs = (double)(tn_time_now_ms() - im->start) / 1000.0;
	size_t left = im->total - im->done;

	imp_progress(im, true);
	if (im->shown_invalid > IMP_SHOW_INVALID)
		fprintf(stderr, "tnctl: ... %zu more invalid lines (see %s)\n",
			im->shown_invalid - IMP_SHOW_INVALID, im->results_path);
	printf("import %s: %zu created, %zu exists, %zu failed, %zu invalid, %zu done before, "
	       "%zu not tried; %.1fs, %.0f lines/s\n", im->file, im->counts[IMP_CREATED],
	       im->counts[IMP_EXISTS], im->counts[IMP_FAILED], im->counts[IMP_INVALID],
	       im->counts[IMP_SKIPPED], left, secs, secs > 0 ? (double)im->done / secs : 0.0);
	if (im->bulk.refused) {
		fprintf(stderr, "tnctl: import stopped: %s\n", im->bulk.stop_reason);
		return EX_NOPERM;
	}
	if (im->bulk.tls) {
		fprintf(stderr, "tnctl: import stopped: %s: %zu lines not done; rerun with "
			"--resume\n", im->bulk.stop_reason, left + im->counts[IMP_FAILED]);
		return EX_CONFIG;
	}
	if (im->bulk.unreachable || tnctl_bulk_interrupted()) {
		fprintf(stderr, "tnctl: import stopped (%s): %zu lines not done; rerun with "
			"--resume\n", im->bulk.unreachable ? im->bulk.stop_reason : "interrupted",
			left + im->counts[IMP_FAILED]);
		return EX_TEMPFAIL;
	}
	return im->counts[IMP_FAILED] + im->counts[IMP_INVALID] > 0 ? EX_DATAERR : 0;
}

static int imp_run(struct imp *im)
{
	int ret;

	im->api = tnctl_api_create(im->ctl->conf, im->parallel);
	if (tnctl_api_error(im->api) != NULL) {
		fprintf(stderr, "tnctl: %s\n", tnctl_api_error(im->api));
		return EX_CONFIG;
	}
	if ((ret = imp_open_results(im)) != 0)
		return ret;
	im->bulk = (struct tnctl_bulk){ .api = im->api, .parallel = im->parallel,
					.send = imp_send, .answer = imp_answer, .tick = imp_tick,
					.ctx = im };
	im->start = tn_time_now_ms();
	snprintf(im->run_id, sizeof(im->run_id), "%llx.%x", (unsigned long long)im->start,
		 (unsigned)getpid());
	imp_count_local(im);
	tnctl_bulk_catch_sigint();
	if (im->progress && !im->tty)
		fprintf(stderr, "import: %zu lines to create (%zu done before, %zu invalid), "
			"%u in parallel, %u per request\n", im->total, im->counts[IMP_SKIPPED],
			im->counts[IMP_INVALID], im->parallel, im->batch);
	for (int k = 0; k < TNCTL_NKINDS && !tnctl_bulk_stopping(&im->bulk); k++)
		imp_kind(im, k);	/* a barrier between kinds */
	tnctl_bulk_release_sigint();
	return imp_summary(im);
}

static void imp_free(struct imp *im)
{
	for (size_t i = 0; i < im->nlines; i++) {
		tn_mem_free(&im->lines[i].key);
		tn_mem_free(&im->lines[i].tenant);
		tn_mem_free(&im->lines[i].body);
		tn_mem_free(&im->lines[i].error);
		tn_mem_free(&im->lines[i].conflict);
	}
	tn_mem_free(&im->lines);
	if (im->results != NULL)
		fclose(im->results);
	tnctl_bulk_clear(&im->bulk);
	tnctl_api_destroy(&im->api);
}

int tnctl_import(struct tnctl *ctl, int argc, char **argv)
{
	struct imp im = { .ctl = ctl, .fixed_kind = -1, .parallel = 8,
			  .batch = IMP_BATCH_DEFAULT, .progress = true };
	char *results = NULL;
	int ret;

	if ((ret = imp_options(&im, argc, argv)) != 0)
		return ret;
	im.batch_now = im.batch;
	im.tty = isatty(STDERR_FILENO) == 1;
	if (im.results_path == NULL)
		im.results_path = results = tn_mem_printf("%s.results", im.file);
	ret = imp_read(&im);
	if (ret == 0 && im.dry_run)
		ret = imp_dry_run(&im);
	else if (ret == 0) {
		if (im.resume)
			imp_resume(&im);
		ret = imp_run(&im);
	}
	imp_free(&im);
	tn_mem_free(&results);
	return ret;
}
