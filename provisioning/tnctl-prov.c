/*++
 * NAME
 *	tnctl-prov 1
 * SUMMARY
 *	tnctl tenant|domain|mailbox|alias: provisioning through tn-provisiond
 * SYNOPSIS
 *	tnctl KIND create KEY [field options] [--set F=V]... [--body FILE|-] [--json]
 *	tnctl KIND get KEY [--json]
 *	tnctl KIND list [--tenant T] [--domain D] [--status S] [--limit N [--cursor C]] [--json]
 *	tnctl KIND update KEY [field options] [--set F=V]... [--body FILE|-] [--if-match ETAG] [--json]
 *	tnctl KIND suspend|resume KEY [--reason TEXT] [--if-match ETAG] [--json]
 *	tnctl KIND restore KEY [--json]
 *	tnctl KIND delete KEY [--if-match ETAG]
 *	tnctl KIND purge KEY
 *	tnctl tenant recount ID [--json]
 * DESCRIPTION
 *	Each verb is one request of tn-provisiond's REST API (tnctl-api.h),
 *	except list, which follows next_cursor to the last page unless
 *	--limit asks for one page. recount (tenants only) sets a tenant's
 *	plan counters from a count of its mailboxes. Field options (tnctl-fields.c) map onto
 *	the resource's JSON fields; --set name=value sets any field, its
 *	value read as JSON when it is JSON (else as a string); --body takes
 *	a whole JSON object, which the options then amend.
 *
 *	Passwords never come from the command line: --password-file FILE
 *	(its first line; "-" for standard input) or --password-prompt
 *	(asked twice on the terminal, without echo).
 *
 *	Output: the object as "field: value" lines, a list as an aligned
 *	table; --json prints the server's JSON. Errors: the server's
 *	message and field on standard error; the exit status is
 *	tnctl_api_exit()'s.
 *--*/
#include "tn-build.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>
#include <termios.h>
#include <unistd.h>

#include "tn-log.h"
#include "tn-mem.h"
#include "tnctl-api.h"
#include "tnctl-prov.h"

#define V_CREATE	0x001
#define V_GET		0x002
#define V_LIST		0x004
#define V_UPDATE	0x008
#define V_SUSPEND	0x010
#define V_RESUME	0x020
#define V_RESTORE	0x040
#define V_DELETE	0x080
#define V_PURGE		0x100
#define V_RECOUNT	0x200	/* tenants only */
#define V_ALL		0x3ff

#define OPT_FIELD	1000	/* + the field's index */
#define TNCTL_BODY_MAX (16 * 1024 * 1024)

struct tnctl_prov_run {
	struct tnctl *ctl;
	const struct tnctl_kind *k;
	const char *verb;
	const char *key;
	bool json;
	const char *if_match;
	const char *reason;
	const char *body_file;
	const char *password_file;
	bool password_prompt;
	json_t *fields;		/* from field options and --set */
	const char *tenant, *domain, *status, *cursor;
	long limit;		/* 0: all pages */
	struct tnctl_api *api;
};

static const struct {
	struct option o;
	unsigned verbs;
} tnctl_prov_options[] = {
	{ { "json", no_argument, NULL, 'j' }, V_ALL & ~(V_DELETE | V_PURGE) },
	{ { "if-match", required_argument, NULL, 'i' }, V_UPDATE | V_SUSPEND | V_RESUME | V_DELETE },
	{ { "reason", required_argument, NULL, 'r' }, V_SUSPEND | V_RESUME },
	{ { "set", required_argument, NULL, 's' }, V_CREATE | V_UPDATE },
	{ { "body", required_argument, NULL, 'b' }, V_CREATE | V_UPDATE },
	{ { "tenant", required_argument, NULL, 'T' }, V_LIST },
	{ { "domain", required_argument, NULL, 'D' }, V_LIST },
	{ { "status", required_argument, NULL, 'S' }, V_LIST },
	{ { "limit", required_argument, NULL, 'l' }, V_LIST },
	{ { "cursor", required_argument, NULL, 'c' }, V_LIST },
};

/* --- reading: files, passwords ------------------------------------------------------ */

/* The first line of path ("-": standard input), without its line end. */
static char *tnctl_prov_password_file(const char *path, const char **why_r)
{
	FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "re");
	char *line = NULL;
	size_t size = 0;
	ssize_t n;

	if (f == NULL) {
		*why_r = strerror(errno);
		return NULL;
	}
	n = getline(&line, &size, f);
	if (f != stdin)
		fclose(f);
	while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
		line[--n] = '\0';
	if (n <= 0) {
		free(line);
		*why_r = "no password in its first line";
		return NULL;
	}
	return line;
}

static char *tnctl_prov_ask(FILE *tty, const char *prompt)
{
	struct termios old, noecho;
	char *line = NULL;
	size_t size = 0;
	ssize_t n;

	fprintf(tty, "%s", prompt);
	fflush(tty);
	if (tcgetattr(fileno(tty), &old) < 0)
		return NULL;
	noecho = old;
	noecho.c_lflag &= ~(tcflag_t)ECHO;
	noecho.c_lflag |= ECHONL;
	tcsetattr(fileno(tty), TCSAFLUSH, &noecho);
	n = getline(&line, &size, tty);
	tcsetattr(fileno(tty), TCSAFLUSH, &old);
	while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
		line[--n] = '\0';
	if (n <= 0) {
		free(line);
		return NULL;
	}
	return line;
}

static void tnctl_prov_wipe(char **s)
{
	if (*s != NULL)
		explicit_bzero(*s, strlen(*s));
	free(*s);
	*s = NULL;
}

/* Asked twice on the terminal, without echo. */
static char *tnctl_prov_password_prompt(const char **why_r)
{
	FILE *tty = fopen("/dev/tty", "r+e");
	char *a = NULL, *b = NULL;

	if (tty == NULL) {
		*why_r = "--password-prompt needs a terminal (use --password-file)";
		return NULL;
	}
	a = tnctl_prov_ask(tty, "Password: ");
	if (a != NULL)
		b = tnctl_prov_ask(tty, "Again: ");
	fclose(tty);
	if (a == NULL || b == NULL || strcmp(a, b) != 0) {
		*why_r = a == NULL || b == NULL ? "no password given" : "the passwords differ";
		tnctl_prov_wipe(&a);
		tnctl_prov_wipe(&b);
		return NULL;
	}
	tnctl_prov_wipe(&b);
	return a;
}

/* --- options ---------------------------------------------------------------------- */

static unsigned tnctl_prov_verb_bit(const char *verb)
{
	static const char *const verbs[] = { "create", "get", "list", "update", "suspend",
					     "resume", "restore", "delete", "purge",
					     "recount" };

	for (size_t i = 0; i < sizeof(verbs) / sizeof(verbs[0]); i++) {
		if (strcmp(verb, verbs[i]) == 0)
			return 1u << i;
	}
	return 0;
}

/* The long options of verb for kind k (tn_mem_free). */
static struct option *tnctl_prov_longopts(const struct tnctl_kind *k, unsigned verb)
{
	size_t n = 0, max = sizeof(tnctl_prov_options) / sizeof(tnctl_prov_options[0]) + 40;
	struct option *o = tn_mem_calloc(max, sizeof(*o));

	for (size_t i = 0; i < sizeof(tnctl_prov_options) / sizeof(tnctl_prov_options[0]); i++) {
		if ((tnctl_prov_options[i].verbs & verb) != 0)
			o[n++] = tnctl_prov_options[i].o;
	}
	for (size_t i = 0; k->fields[i].name != NULL && n + 3 < max; i++) {
		const struct tnctl_field *f = &k->fields[i];
		bool ok = ((verb & V_CREATE) != 0 && (f->flags & TNCTL_F_CREATE) != 0) ||
			((verb & V_UPDATE) != 0 && (f->flags & TNCTL_F_MODIFY) != 0);

		if (f->option != NULL && ok)
			o[n++] = (struct option){ f->option, required_argument, NULL,
						  OPT_FIELD + (int)i };
		if (f->type == TNCTL_F_PASSWORD && ok) {
			o[n++] = (struct option){ "password-file", required_argument, NULL, 'P' };
			o[n++] = (struct option){ "password-prompt", no_argument, NULL, 'p' };
		}
	}
	return o;
}

static int tnctl_prov_bad_value(const struct tnctl_prov_run *r, const char *opt,
				const char *why)
{
	fprintf(stderr, "tnctl: %s %s: --%s: %s\n", r->k->name, r->verb, opt, why);
	return EX_DATAERR;
}

/* A field option: its value, converted per the field's type. */
static int tnctl_prov_field_opt(struct tnctl_prov_run *r, const struct tnctl_field *f,
				const char *text)
{
	const char *why = NULL;
	json_t *v, *old;

	if (*text == '\0' && strcmp(r->verb, "update") == 0)
		v = json_null();	/* an empty value removes the field */
	else if ((v = tnctl_field_value(f, text, &why)) == NULL)
		return tnctl_prov_bad_value(r, f->option, why);
	old = json_object_get(r->fields, f->name);
	if (f->type == TNCTL_F_TARGETS && json_is_array(old) && json_is_array(v)) {
		json_array_extend(old, v);	/* --target is repeatable */
		json_decref(v);
		return 0;
	}
	json_object_set_new(r->fields, f->name, v);
	return 0;
}

/* --set name=value: JSON when the value parses as JSON, else a string. */
static int tnctl_prov_set(struct tnctl_prov_run *r, const char *arg)
{
	const char *eq = strchr(arg, '=');
	char *name;
	json_t *v;

	if (eq == NULL || eq == arg)
		return tnctl_prov_bad_value(r, "set", "expected name=value");
	name = tn_mem_strndup(arg, (size_t)(eq - arg));
	if (strcmp(name, "password") == 0) {
		tn_mem_free(&name);
		return tnctl_prov_bad_value(r, "set", "no clear password on the command line: "
					    "use --password-file or --password-prompt");
	}
	v = json_loads(eq + 1, JSON_DECODE_ANY, NULL);
	if (v == NULL)
		v = json_string(eq + 1);
	json_object_set_new(r->fields, name, v);
	tn_mem_free(&name);
	return 0;
}

static int tnctl_prov_opt(struct tnctl_prov_run *r, int c, const char *arg)
{
	char *end;

	switch (c) {
	case 'j': r->json = true; return 0;
	case 'i': r->if_match = arg; return 0;
	case 'r': r->reason = arg; return 0;
	case 's': return tnctl_prov_set(r, arg);
	case 'b': r->body_file = arg; return 0;
	case 'T': r->tenant = arg; return 0;
	case 'D': r->domain = arg; return 0;
	case 'S': r->status = arg; return 0;
	case 'c': r->cursor = arg; return 0;
	case 'P': r->password_file = arg; return 0;
	case 'p': r->password_prompt = true; return 0;
	case 'l':
		r->limit = strtol(arg, &end, 10);
		if (*arg == '\0' || *end != '\0' || r->limit < 1 || r->limit > 1000000)
			return tnctl_prov_bad_value(r, "limit", "expected a number from 1");
		return 0;
	default:
		if (c >= OPT_FIELD)
			return tnctl_prov_field_opt(r, &r->k->fields[c - OPT_FIELD], arg);
		return EX_USAGE;
	}
}

static int tnctl_prov_parse(struct tnctl_prov_run *r, unsigned verb, int argc, char **argv)
{
	struct option *longopts = tnctl_prov_longopts(r->k, verb);
	int c, ret = 0;

	optind = 0;		/* glibc: start afresh, permuting */
	opterr = 1;
	while (ret == 0 && (c = getopt_long(argc, argv, "", longopts, NULL)) != -1)
		ret = c == '?' ? EX_USAGE : tnctl_prov_opt(r, c, optarg);
	tn_mem_free(&longopts);
	if (ret != 0)
		return ret;
	if ((verb & V_LIST) != 0) {
		if (optind != argc)
			return EX_USAGE;
		if (r->cursor != NULL && r->limit == 0) {
			fprintf(stderr, "tnctl: %s list: --cursor goes with --limit\n", r->k->name);
			return EX_USAGE;
		}
		return 0;
	}
	if (optind != argc - 1)
		return EX_USAGE;
	r->key = argv[optind];
	if (r->password_file != NULL && r->password_prompt)
		return EX_USAGE;
	return 0;
}

/* --- output ------------------------------------------------------------------------- */

static void tnctl_prov_print_json(json_t *v)
{
	char *text = json_dumps(v, JSON_INDENT(2) | JSON_ENCODE_ANY);

	if (text != NULL)
		printf("%s\n", text);
	free(text);
}

static bool tnctl_prov_is_bytes(const char *name)
{
	size_t len = strlen(name);

	return len > 6 && strcmp(name + len - 6, "_bytes") == 0;
}

char *tnctl_prov_text(const char *name, json_t *v, bool short_form)
{
	static const char *const units[] = { "B", "KiB", "MiB", "GiB", "TiB", "PiB" };
	char buf[TN_LOG_VALUE_MAX], *out = NULL, *item;
	double d;
	size_t u = 0;

	if (v == NULL || json_is_null(v))
		return tn_mem_strdup("-");
	if (json_is_string(v))
		return tn_mem_strdup(tnctl_safe(buf, json_string_value(v)));
	if (json_is_boolean(v))
		return tn_mem_strdup(json_is_true(v) ? "yes" : "no");
	if (json_is_integer(v)) {
		if (!tnctl_prov_is_bytes(name) || json_integer_value(v) == 0)
			return tn_mem_printf("%lld", (long long)json_integer_value(v));
		for (d = (double)json_integer_value(v); d >= 1024 && u < 5; u++)
			d /= 1024;
		if (short_form)
			return tn_mem_printf("%.*f %s", d == (long long)d ? 0 : 1, d, units[u]);
		return tn_mem_printf("%lld (%.1f %s)", (long long)json_integer_value(v), d,
				     units[u]);
	}
	if (json_is_array(v)) {
		for (size_t i = 0; i < json_array_size(v); i++) {
			item = tnctl_prov_text(name, json_array_get(v, i), true);
			char *joined = tn_mem_printf("%s%s%s", out != NULL ? out : "",
						     out != NULL ? ", " : "", item);

			tn_mem_free(&item);
			tn_mem_free(&out);
			out = joined;
		}
		return out != NULL ? out : tn_mem_strdup("-");
	}
	out = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
	item = tn_mem_strdup(tnctl_safe(buf, out != NULL ? out : ""));
	free(out);
	return item;
}

/* "field: value" lines, aligned */
static void tnctl_prov_print_object(json_t *obj)
{
	const char *name;
	size_t width = 0;
	json_t *v;

	json_object_foreach(obj, name, v) {
		if (strlen(name) > width)
			width = strlen(name);
	}
	json_object_foreach(obj, name, v) {
		char *text = tnctl_prov_text(name, v, false);

		printf("%s:%*s %s\n", name, (int)(width - strlen(name)), "", text);
		tn_mem_free(&text);
	}
}

static char *tnctl_prov_header(const char *column)
{
	size_t len = strlen(column);
	char *h = tn_mem_strndup(column, tnctl_prov_is_bytes(column) ? len - 6 : len);

	for (char *p = h; *p != '\0'; p++)
		*p = *p >= 'a' && *p <= 'z' ? (char)(*p - 'a' + 'A') : *p;
	return h;
}

/* One row per object of items, the kind's columns, aligned. */
static void tnctl_prov_print_table(const struct tnctl_kind *k, json_t *items)
{
	size_t ncol = 0, nrow = json_array_size(items) + 1, width[16] = { 0 };
	char **cells;

	while (k->columns[ncol] != NULL && ncol < 16)
		ncol++;
	cells = tn_mem_calloc(nrow * ncol, sizeof(*cells));
	for (size_t c = 0; c < ncol; c++)
		cells[c] = tnctl_prov_header(k->columns[c]);
	for (size_t r = 1; r < nrow; r++) {
		for (size_t c = 0; c < ncol; c++)
			cells[r * ncol + c] = tnctl_prov_text(
				k->columns[c],
				json_object_get(json_array_get(items, r - 1), k->columns[c]), true);
	}
	for (size_t i = 0; i < nrow * ncol; i++) {
		if (strlen(cells[i]) > width[i % ncol])
			width[i % ncol] = strlen(cells[i]);
	}
	for (size_t r = 0; r < nrow; r++) {
		for (size_t c = 0; c < ncol; c++) {
			const char *cell = cells[r * ncol + c];

			if (c + 1 < ncol)
				printf("%-*s  ", (int)width[c], cell);
			else
				printf("%s\n", cell);
		}
	}
	for (size_t i = 0; i < nrow * ncol; i++)
		tn_mem_free(&cells[i]);
	tn_mem_free(&cells);
}

/* --- requests ----------------------------------------------------------------------- */

static char *tnctl_prov_path(const struct tnctl_prov_run *r, const char *action)
{
	char *key = tnctl_api_escape(r->key);
	char *path = tn_mem_printf("/v1/%s/%s%s%s", r->k->coll, key, action != NULL ? "/" : "",
				   action != NULL ? action : "");

	tn_mem_free(&key);
	return path;
}

static int tnctl_prov_fail(const struct tnctl_prov_run *r, const struct tnctl_api_req *rq)
{
	char buf[TN_LOG_VALUE_MAX];
	char *what = tnctl_api_describe(rq);

	fprintf(stderr, "tnctl: %s %s%s%s: %s\n", r->k->name, r->verb, r->key != NULL ? " " : "",
		r->key != NULL ? tnctl_safe(buf, r->key) : "", what);
	tn_mem_free(&what);
	return tnctl_api_exit(rq);
}

/* Send one request; print the object it answers with (or nothing). */
static int tnctl_prov_send(struct tnctl_prov_run *r, const char *method, const char *path,
			   const char *body)
{
	char buf[TN_LOG_VALUE_MAX];
	struct tnctl_api_req rq;
	json_t *obj;
	int ret;

	tnctl_api_req_init(&rq, method, path, body, r->if_match, NULL);
	tnctl_api_call(r->api, &rq);
	if (rq.http < 200 || rq.http > 299) {
		ret = tnctl_prov_fail(r, &rq);
		tnctl_api_req_clear(&rq);
		return ret;
	}
	obj = tnctl_api_json(&rq);
	if (obj != NULL && r->json)
		tnctl_prov_print_json(obj);
	else if (json_is_object(obj))
		tnctl_prov_print_object(obj);
	else if (!r->json && rq.http == 204)
		printf("%s %s %s\n", r->k->name, tnctl_safe(buf, r->key),
		       strcmp(r->verb, "purge") == 0 ? "purged" : "deleted");
	json_decref(obj);
	tnctl_api_req_clear(&rq);
	return 0;
}

/* The body of create and update: --body, then the options over it. */
static int tnctl_prov_body(struct tnctl_prov_run *r, char **text_r)
{
	const char *why = NULL;
	json_t *body = json_object();
	char *text, *password = NULL;
	size_t len = 0;

	if (r->body_file != NULL) {
		json_decref(body);
		text = NULL;
		if (tnctl_bulk_read(r->body_file, TNCTL_BODY_MAX, &text, &len, &why) == 0)
			body = json_loadb(text, len, JSON_REJECT_DUPLICATES, NULL);
		else
			body = NULL;
		tn_mem_free(&text);
		if (!json_is_object(body)) {
			json_decref(body);
			return tnctl_prov_bad_value(r, "body", why != NULL ? why :
						    "expected a JSON object");
		}
	}
	json_object_update(body, r->fields);
	if (r->password_file != NULL)
		password = tnctl_prov_password_file(r->password_file, &why);
	else if (r->password_prompt)
		password = tnctl_prov_password_prompt(&why);
	if ((r->password_file != NULL || r->password_prompt) && password == NULL) {
		json_decref(body);
		return tnctl_prov_bad_value(r, r->password_prompt ? "password-prompt" :
					    "password-file", why);
	}
	if (password != NULL)
		json_object_set_new(body, "password", json_string(password));
	tnctl_prov_wipe(&password);
	*text_r = json_dumps(body, JSON_COMPACT);
	json_decref(body);
	return 0;
}

/* --- verbs -------------------------------------------------------------------------- */

static int tnctl_prov_create(struct tnctl_prov_run *r)
{
	char *body = NULL, *path = tn_mem_printf("/v1/%s", r->k->coll);
	int ret;

	json_object_set_new(r->fields, r->k->fields[0].name, json_string(r->key));
	if ((ret = tnctl_prov_body(r, &body)) == 0)
		ret = tnctl_prov_send(r, "POST", path, body);
	tnctl_prov_wipe(&body);
	tn_mem_free(&path);
	return ret;
}

static int tnctl_prov_update(struct tnctl_prov_run *r)
{
	char *body = NULL, *path = tnctl_prov_path(r, NULL);
	int ret;

	if ((ret = tnctl_prov_body(r, &body)) == 0)
		ret = tnctl_prov_send(r, "PATCH", path, body);
	tnctl_prov_wipe(&body);
	tn_mem_free(&path);
	return ret;
}

static int tnctl_prov_get(struct tnctl_prov_run *r)
{
	char *path = tnctl_prov_path(r, NULL);
	int ret = tnctl_prov_send(r, "GET", path, NULL);

	tn_mem_free(&path);
	return ret;
}

/* suspend, resume, restore: POST .../<verb>, {"reason": ...} when given */
static int tnctl_prov_action(struct tnctl_prov_run *r)
{
	char *path = tnctl_prov_path(r, r->verb), *body;
	json_t *o = json_object();
	int ret;

	if (r->reason != NULL)
		json_object_set_new(o, "reason", json_string(r->reason));
	body = json_dumps(o, JSON_COMPACT);
	json_decref(o);
	ret = tnctl_prov_send(r, "POST", path, body);
	free(body);
	tn_mem_free(&path);
	return ret;
}

static int tnctl_prov_delete(struct tnctl_prov_run *r)
{
	char *path = tnctl_prov_path(r, NULL);
	int ret = tnctl_prov_send(r, "DELETE", path, NULL);

	tn_mem_free(&path);
	return ret;
}

static int tnctl_prov_purge(struct tnctl_prov_run *r)
{
	char *path = tnctl_prov_path(r, "purge");
	int ret = tnctl_prov_send(r, "POST", path, NULL);

	tn_mem_free(&path);
	return ret;
}

/* tenants only: POST .../recount with {} */
static int tnctl_prov_recount(struct tnctl_prov_run *r)
{
	char *path = tnctl_prov_path(r, "recount");
	int ret = tnctl_prov_send(r, "POST", path, "{}");

	tn_mem_free(&path);
	return ret;
}

static void tnctl_prov_query_arg(char **q, const char *name, const char *value)
{
	char *v, *nq;

	if (value == NULL)
		return;
	v = tnctl_api_escape(value);
	nq = tn_mem_printf("%s%c%s=%s", *q, strchr(*q, '?') != NULL ? '&' : '?', name, v);
	tn_mem_free(&v);
	tn_mem_free(q);
	*q = nq;
}

/* One page; its JSON, or NULL after printing the error (*ret_r). */
static json_t *tnctl_prov_page(struct tnctl_prov_run *r, long limit, const char *cursor,
			       int *ret_r)
{
	char *path = tn_mem_printf("/v1/%s", r->k->coll), num[32];
	struct tnctl_api_req rq;
	json_t *page;

	snprintf(num, sizeof(num), "%ld", limit);
	tnctl_prov_query_arg(&path, "tenant", r->tenant);
	tnctl_prov_query_arg(&path, "domain", r->domain);
	tnctl_prov_query_arg(&path, "status", r->status);
	tnctl_prov_query_arg(&path, "limit", num);
	tnctl_prov_query_arg(&path, "cursor", cursor);
	tnctl_api_req_init(&rq, "GET", path, NULL, NULL, NULL);
	tn_mem_free(&path);
	tnctl_api_call(r->api, &rq);
	page = rq.http == 200 ? tnctl_api_json(&rq) : NULL;
	if (rq.http != 200) {
		*ret_r = tnctl_prov_fail(r, &rq);
	} else if (!json_is_array(json_object_get(page, "items"))) {
		fprintf(stderr, "tnctl: %s list: the answer holds no items\n", r->k->name);
		json_decref(page);
		page = NULL;
		*ret_r = EX_PROTOCOL;
	}
	tnctl_api_req_clear(&rq);
	return page;
}

/* The pages from r->cursor on (one with --limit, else all) into all:
 * the last page, or NULL (*ret_r); the next cursor in *cursor_r. */
static json_t *tnctl_prov_collect(struct tnctl_prov_run *r, json_t *all, char **cursor_r,
				  int *ret_r)
{
	long page_size = (long)tn_conf_int(r->ctl->conf, "prov_list_max");
	char *cursor = r->cursor != NULL ? tn_mem_strdup(r->cursor) : NULL;
	json_t *page = NULL;

	do {
		json_decref(page);
		page = tnctl_prov_page(r, r->limit > 0 ? r->limit : page_size, cursor, ret_r);
		tn_mem_free(&cursor);
		if (page == NULL)
			break;
		json_array_extend(all, json_object_get(page, "items"));
		if (json_string_value(json_object_get(page, "next_cursor")) != NULL)
			cursor = tn_mem_strdup(json_string_value(json_object_get(page,
										 "next_cursor")));
	} while (cursor != NULL && r->limit == 0);
	*cursor_r = cursor;
	return page;
}

json_t *tnctl_prov_list_all(struct tnctl *ctl, struct tnctl_api *api, const struct tnctl_kind *k,
			    const char *tenant, const char *domain, int *ret_r)
{
	struct tnctl_prov_run r = { .ctl = ctl, .k = k, .verb = "list", .tenant = tenant,
				    .domain = domain, .api = api };
	json_t *all = json_array(), *page;
	char *cursor = NULL;

	*ret_r = 0;
	page = tnctl_prov_collect(&r, all, &cursor, ret_r);
	tn_mem_free(&cursor);
	if (page == NULL) {
		json_decref(all);
		return NULL;
	}
	json_decref(page);
	return all;
}

static int tnctl_prov_list(struct tnctl_prov_run *r)
{
	json_t *all = json_array(), *page;
	char *cursor = NULL;
	int ret = 0;

	page = tnctl_prov_collect(r, all, &cursor, &ret);
	if (page != NULL && r->json && r->limit > 0)
		tnctl_prov_print_json(page);
	else if (page != NULL && r->json) {
		json_object_set(page, "items", all);	/* every page's, in one answer */
		tnctl_prov_print_json(page);
	}
	else if (page != NULL)
		tnctl_prov_print_table(r->k, all);
	if (page != NULL && !r->json && cursor != NULL)
		fprintf(stderr, "tnctl: more: --cursor %s\n", cursor);
	tn_mem_free(&cursor);
	json_decref(page);
	json_decref(all);
	return ret;
}

static const struct {
	const char *name;
	int (*run)(struct tnctl_prov_run *r);
} tnctl_prov_verbs[] = {
	{ "create", tnctl_prov_create }, { "get", tnctl_prov_get },
	{ "list", tnctl_prov_list }, { "update", tnctl_prov_update },
	{ "suspend", tnctl_prov_action }, { "resume", tnctl_prov_action },
	{ "restore", tnctl_prov_action }, { "delete", tnctl_prov_delete },
	{ "purge", tnctl_prov_purge }, { "recount", tnctl_prov_recount },
};

static int tnctl_prov_verb_usage(const struct tnctl_kind *k)
{
	const char *key = k->fields[0].name;

	fprintf(stderr, "usage: tnctl %s create %s [options] [--set FIELD=VALUE]... "
		"[--body FILE|-] [--json]\n", k->name, key);
	fprintf(stderr, "       tnctl %s get %s [--json]\n", k->name, key);
	fprintf(stderr, "       tnctl %s list [--tenant T] [--domain D] [--status S] "
		"[--limit N [--cursor C]] [--json]\n", k->name);
	fprintf(stderr, "       tnctl %s update %s [options] [--set FIELD=VALUE]... "
		"[--body FILE|-] [--if-match ETAG] [--json]\n", k->name, key);
	fprintf(stderr, "       tnctl %s suspend|resume %s [--reason TEXT] [--if-match ETAG] "
		"[--json]\n", k->name, key);
	fprintf(stderr, "       tnctl %s restore %s [--json]\n", k->name, key);
	fprintf(stderr, "       tnctl %s delete %s [--if-match ETAG]\n", k->name, key);
	fprintf(stderr, "       tnctl %s purge %s\n", k->name, key);
	if (k == &tnctl_kinds[0])
		fprintf(stderr, "       tnctl tenant recount %s [--json]\n", key);
	fprintf(stderr, "options of create and update:");
	for (const struct tnctl_field *f = k->fields; f->name != NULL; f++) {
		if (f->option != NULL)
			fprintf(stderr, " --%s", f->option);
		if (f->type == TNCTL_F_PASSWORD)
			fprintf(stderr, " --password-file FILE|- --password-prompt");
	}
	fprintf(stderr, "\n");
	return EX_USAGE;
}

int tnctl_prov_kind(struct tnctl *ctl, int argc, char **argv)
{
	struct tnctl_prov_run r = { .ctl = ctl, .k = tnctl_kind_find(argv[0]) };
	unsigned verb;
	size_t i, n = sizeof(tnctl_prov_verbs) / sizeof(tnctl_prov_verbs[0]);
	int ret;

	for (i = 0; argc > 1 && i < n; i++) {
		if (strcmp(argv[1], tnctl_prov_verbs[i].name) == 0)
			break;
	}
	if (r.k == NULL || argc < 2 || i == n)
		return tnctl_prov_verb_usage(r.k != NULL ? r.k : &tnctl_kinds[0]);
	if (tnctl_prov_verbs[i].run == tnctl_prov_recount && r.k != &tnctl_kinds[0]) {
		fprintf(stderr, "tnctl: %s recount: tenants only (tnctl tenant recount ID)\n",
			r.k->name);
		return tnctl_prov_verb_usage(r.k);
	}
	r.verb = tnctl_prov_verbs[i].name;
	verb = tnctl_prov_verb_bit(r.verb);
	r.fields = json_object();
	ret = tnctl_prov_parse(&r, verb, argc - 1, argv + 1);
	if (ret == EX_USAGE)
		tnctl_prov_verb_usage(r.k);
	if (ret == 0) {
		r.api = tnctl_api_create(ctl->conf, 1);
		if (tnctl_api_error(r.api) != NULL) {
			fprintf(stderr, "tnctl: %s\n", tnctl_api_error(r.api));
			ret = EX_CONFIG;
		} else {
			ret = tnctl_prov_verbs[i].run(&r);
		}
		tnctl_api_destroy(&r.api);
	}
	json_decref(r.fields);
	/* the dispatcher prints the short usage as well: keep EX_USAGE */
	return ret;
}
