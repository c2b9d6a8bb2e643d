/*++
 * NAME
 *	tnctl-spool 1
 * SUMMARY
 *	tnctl's reading of tn-hookd's spool and delivery log
 * DESCRIPTION
 *	The layout is docs/hookd.md's, and the names are parsed by
 *	lib/tn-hook-spool (tn_hook_qname_parse), so tnctl and tn-hookd read
 *	one format. Files with other names (editor backups, a
 *	half-written marker) are not entries and are skipped.
 *
 *	Only what is needed is held in memory: an entry is its parsed
 *	name, and tnctl_entries_sort() keeps the oldest "limit" of them,
 *	so "list --limit N" of a million waiting events stays small.
 *
 *	Text from the spool (types, tenants, log errors) goes through
 *	tnctl_safe() before it reaches a terminal.
 *
 *	Errors: *error_r points to a static buffer (tnctl is one thread),
 *	valid until the next call that fails.
 *--*/
#include "tn-build.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sysexits.h>
#include <time.h>
#include <unistd.h>

#include "tn-log.h"
#include "tn-mem.h"
#include "tnctl.h"

static char tnctl_errbuf[512];

static int tnctl_fail(const char **error_r, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static int tnctl_fail(const char **error_r, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(tnctl_errbuf, sizeof(tnctl_errbuf), fmt, ap);
	va_end(ap);
	*error_r = tnctl_errbuf;
	return -1;
}

int tnctl_spool_check(const char *spool)
{
	struct stat st;

	if (stat(spool, &st) < 0) {
		fprintf(stderr, "tnctl: outbox_dir %s: %s\n", spool, strerror(errno));
		return EX_TEMPFAIL;
	}
	if (!S_ISDIR(st.st_mode)) {
		fprintf(stderr, "tnctl: outbox_dir %s: not a directory\n", spool);
		return EX_TEMPFAIL;
	}
	return 0;
}

int tnctl_read_file(const char *path, size_t max, char **buf_r, size_t *len_r,
		    const char **error_r)
{
	char *buf = tn_mem_alloc(max + 2);
	size_t len = 0;
	ssize_t n = 1;
	int fd;

	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0) {
		tn_mem_free(&buf);
		return tnctl_fail(error_r, "%s: %s", path, strerror(errno));
	}
	while (len <= max && (n = read(fd, buf + len, max + 1 - len)) > 0)
		len += (size_t)n;
	close(fd);
	if (n < 0 || len > max) {
		tn_mem_free(&buf);
		return n < 0 ? tnctl_fail(error_r, "%s: %s", path, strerror(errno)) :
			tnctl_fail(error_r, "%s: larger than %zu bytes", path, max);
	}
	buf[len] = '\0';
	*buf_r = buf;
	*len_r = len;
	return 0;
}

/* --- endpoint directories --------------------------------------------------------- */

static int tnctl_name_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static bool tnctl_is_dir_at(DIR *d, const char *name)
{
	struct stat st;

	return fstatat(dirfd(d), name, &st, 0) == 0 && S_ISDIR(st.st_mode);
}

int tnctl_endpoint_dirs(const char *spool, struct tnctl_names *names, const char **error_r)
{
	char *hooks = tn_mem_printf("%s/hooks", spool);
	struct dirent *de;
	DIR *d = opendir(hooks);

	names->v = NULL;
	names->n = 0;
	if (d == NULL) {
		int ret = errno == ENOENT ? 0 :
			tnctl_fail(error_r, "%s: %s", hooks, strerror(errno));

		tn_mem_free(&hooks);
		return ret;
	}
	while ((de = readdir(d)) != NULL) {
		if (!tn_hook_name_valid(de->d_name) || !tnctl_is_dir_at(d, de->d_name))
			continue;
		names->v = tn_mem_realloc(names->v, (names->n + 1) * sizeof(*names->v));
		names->v[names->n++] = tn_mem_strdup(de->d_name);
	}
	closedir(d);
	tn_mem_free(&hooks);
	if (names->n > 1)
		qsort(names->v, names->n, sizeof(*names->v), tnctl_name_cmp);
	return 0;
}

bool tnctl_names_has(const struct tnctl_names *names, const char *name)
{
	for (size_t i = 0; i < names->n; i++) {
		if (strcmp(names->v[i], name) == 0)
			return true;
	}
	return false;
}

void tnctl_names_free(struct tnctl_names *names)
{
	for (size_t i = 0; i < names->n; i++)
		tn_mem_free(&names->v[i]);
	tn_mem_free(&names->v);
	names->n = 0;
}

/* --- entries ---------------------------------------------------------------------- */

static const char *const tnctl_state_names[] = { "new", "queued", "dead" };

const char *tnctl_state_name(enum tnctl_state state)
{
	return tnctl_state_names[state];
}

static char *tnctl_state_dir(const char *spool, const char *endpoint, enum tnctl_state state)
{
	if (state == TNCTL_NEW)
		return tn_mem_printf("%s/new", spool);
	return tn_mem_printf("%s/hooks/%s/%s", spool, endpoint,
			     state == TNCTL_QUEUED ? "queue" : "dead");
}

char *tnctl_entry_path(const char *spool, const struct tnctl_entry *e)
{
	char *dir = tnctl_state_dir(spool, e->endpoint, e->state), *path;
	char file[TN_HOOK_QNAME_SIZE];

	if (e->seg[0] != '\0')
		snprintf(file, sizeof(file), "%s.json", e->seg);
	else
		tn_hook_qname_format(&e->q, file);
	path = tn_mem_printf("%s/%s", dir, file);
	tn_mem_free(&dir);
	return path;
}

void tnctl_entries_add(struct tnctl_entries *out, const struct tn_hook_qname *q,
		       const char *endpoint, enum tnctl_state state)
{
	if (out->n == out->cap) {
		out->cap = out->cap == 0 ? 64 : out->cap * 2;
		out->v = tn_mem_realloc(out->v, out->cap * sizeof(*out->v));
	}
	out->v[out->n].q = *q;
	out->v[out->n].endpoint = endpoint;
	out->v[out->n].state = state;
	out->v[out->n].seg[0] = '\0';
	out->n++;
}

/* An entry per event line of segment dir/name; a file that went away
 * meanwhile (fanned out, delivered) has none. Lines that are not
 * events are left out (tn-hookd quarantines them). */
static void tnctl_scan_segment(const char *dir, const char *name, const char *seg_id,
			       const char *endpoint, enum tnctl_state state,
			       const char *only_id, struct tnctl_entries *out)
{
	char *path = tn_mem_printf("%s/%s", dir, name), *buf;
	struct tn_hook_qname q = { .attempts = 0 };
	const char *line, *error;
	size_t len, pos = 0, n;
	json_t *ev;

	if (tnctl_read_file(path, TNCTL_FILE_MAX, &buf, &len, &error) < 0) {
		tn_mem_free(&path);
		return;
	}
	while (tn_hook_segment_next(buf, len, &pos, &line, &n)) {
		if (!tn_hook_segment_line_id(line, n, q.id)) {
			if ((ev = tn_hook_envelope_parse(line, n, NULL, &error)) == NULL)
				continue;
			snprintf(q.id, sizeof(q.id), "%s",
				 json_string_value(json_object_get(ev, "id")));
			json_decref(ev);
		}
		if (only_id != NULL && strcmp(q.id, only_id) != 0)
			continue;
		tnctl_entries_add(out, &q, endpoint, state);
		memcpy(out->v[out->n - 1].seg, seg_id, TN_HOOK_ID_SIZE);
	}
	tn_mem_free(&buf);
	tn_mem_free(&path);
}

int tnctl_scan(const char *spool, const char *endpoint, enum tnctl_state state,
	       const char *only_id, size_t keep, struct tnctl_entries *out,
	       const char **error_r)
{
	char *dir = tnctl_state_dir(spool, endpoint, state);
	struct tn_hook_qname q;
	struct dirent *de;
	DIR *d = opendir(dir);

	if (d == NULL) {
		int ret = errno == ENOENT && state != TNCTL_NEW ? 0 :
			tnctl_fail(error_r, "%s: %s", dir, strerror(errno));

		tn_mem_free(&dir);
		return ret;
	}
	while ((de = readdir(d)) != NULL) {
		if (tn_hook_qname_parse(de->d_name, &q) < 0 ||
		    (state != TNCTL_QUEUED && q.attempts != 0))
			continue;
		if (state != TNCTL_DEAD && q.attempts == 0)
			tnctl_scan_segment(dir, de->d_name, q.id, endpoint, state, only_id, out);
		else if (only_id == NULL || strcmp(q.id, only_id) == 0)
			tnctl_entries_add(out, &q, endpoint, state);
		if (keep > 0 && out->n >= 2 * keep + 4096)
			tnctl_entries_sort(out, keep);
	}
	closedir(d);
	tn_mem_free(&dir);
	return 0;
}

static int tnctl_entry_cmp(const void *a, const void *b)
{
	const struct tnctl_entry *x = a, *y = b;
	int c = strcmp(x->q.id, y->q.id);

	if (c != 0)
		return c;
	if ((x->endpoint == NULL) != (y->endpoint == NULL))
		return x->endpoint == NULL ? -1 : 1;
	if (x->endpoint != NULL && (c = strcmp(x->endpoint, y->endpoint)) != 0)
		return c;
	if (x->state != y->state)
		return (int)x->state - (int)y->state;
	/* the retry file (more attempts) before the segment's line */
	return x->q.attempts > y->q.attempts ? -1 : x->q.attempts < y->q.attempts;
}

static bool tnctl_entry_same(const struct tnctl_entry *x, const struct tnctl_entry *y)
{
	return strcmp(x->q.id, y->q.id) == 0 && x->state == y->state &&
	       (x->endpoint == NULL) == (y->endpoint == NULL) &&
	       (x->endpoint == NULL || strcmp(x->endpoint, y->endpoint) == 0);
}

void tnctl_entries_sort(struct tnctl_entries *entries, size_t limit)
{
	size_t n = 0;

	if (entries->n > 1)
		qsort(entries->v, entries->n, sizeof(*entries->v), tnctl_entry_cmp);
	for (size_t i = 0; i < entries->n; i++) {
		if (n == 0 || !tnctl_entry_same(&entries->v[n - 1], &entries->v[i]))
			entries->v[n++] = entries->v[i];
	}
	entries->n = n;
	if (limit > 0 && entries->n > limit)
		entries->n = limit;
}

void tnctl_entries_free(struct tnctl_entries *entries)
{
	tn_mem_free(&entries->v);
	entries->n = entries->cap = 0;
}

json_t *tnctl_envelope_load(const char *path, const char *id, const char **error_r)
{
	const char *why;
	json_t *ev;
	size_t len;
	char *buf;

	if (tnctl_read_file(path, TNCTL_FILE_MAX, &buf, &len, error_r) < 0)
		return NULL;
	if ((ev = tn_hook_segment_find(buf, len, id, &why)) == NULL)
		tnctl_fail(error_r, "%s: %s", path, why);
	tn_mem_free(&buf);
	return ev;
}

/* --- the delivery log ------------------------------------------------------------- */

/* Whether a line's "at" (RFC 3339 UTC, fixed width: compares as text) is
 * before since_at. Lines without one are kept for the parser to judge. */
static bool tnctl_log_line_before(const char *line, const char *since_at)
{
	const char *at = strstr(line, "\"at\":\"");

	if (at == NULL)
		return false;
	at += 6;
	return strncmp(at, since_at, strlen(since_at)) < 0;
}

static void tnctl_log_line(const char *line, const char *needle, const char *since_at,
			   tnctl_log_fn *fn, void *ctx)
{
	json_t *rec;
	const char *at;

	if ((needle != NULL && strstr(line, needle) == NULL) ||
	    (since_at != NULL && tnctl_log_line_before(line, since_at)))
		return;
	if ((rec = json_loads(line, JSON_REJECT_DUPLICATES, NULL)) == NULL)
		return;
	at = json_string_value(json_object_get(rec, "at"));
	if (json_is_object(rec) && at != NULL &&
	    (since_at == NULL || strcmp(at, since_at) >= 0))
		fn(rec, ctx);
	json_decref(rec);
}

static void tnctl_log_file(const char *path, char *line, const char *needle,
			   const char *since_at, tnctl_log_fn *fn, void *ctx)
{
	FILE *f = fopen(path, "re");
	bool skip = false;	/* in the middle of an overlong line */
	size_t len;

	if (f == NULL)
		return;
	while (fgets(line, TNCTL_LOG_LINE_MAX, f) != NULL) {
		len = strlen(line);
		if (len > 0 && line[len - 1] == '\n') {
			line[len - 1] = '\0';
		} else if (!feof(f)) {
			skip = true;
			continue;
		}
		if (!skip)
			tnctl_log_line(line, needle, since_at, fn, ctx);
		skip = false;
	}
	fclose(f);
}

void tnctl_log_scan(const char *spool, const char *needle, const char *since_at,
		    tnctl_log_fn *fn, void *ctx)
{
	static const char *const files[] = { "deliveries.log.1", "deliveries.log" };
	char *line = tn_mem_alloc(TNCTL_LOG_LINE_MAX);

	for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
		char *path = tn_mem_printf("%s/hooks/%s", spool, files[i]);

		tnctl_log_file(path, line, needle, since_at, fn, ctx);
		tn_mem_free(&path);
	}
	tn_mem_free(&line);
}

/* --- times ------------------------------------------------------------------------ */

/* n decimal digits at *p, advancing it. */
static int tnctl_digits(const char **p, int n, int *v_r)
{
	int v = 0;

	for (int i = 0; i < n; i++) {
		if ((*p)[i] < '0' || (*p)[i] > '9')
			return -1;
		v = v * 10 + ((*p)[i] - '0');
	}
	*p += n;
	*v_r = v;
	return 0;
}

/* ".fff..." (any number of digits; milliseconds kept) */
static int tnctl_parse_fraction(const char **p, int64_t *ms_r)
{
	int64_t ms = 0;
	int n = 0;

	*ms_r = 0;
	if (**p != '.')
		return 0;
	for ((*p)++; **p >= '0' && **p <= '9'; (*p)++, n++) {
		if (n < 3)
			ms = ms * 10 + (**p - '0');
	}
	for (int i = n; i < 3; i++)
		ms *= 10;
	*ms_r = ms;
	return n > 0 ? 0 : -1;
}

/* "Z" or "+hh:mm" / "-hh:mm" → seconds east of UTC */
static int tnctl_parse_offset(const char *p, int64_t *off_r)
{
	int sign, h, m;

	if ((p[0] == 'Z' || p[0] == 'z') && p[1] == '\0') {
		*off_r = 0;
		return 0;
	}
	if (p[0] != '+' && p[0] != '-')
		return -1;
	sign = *p++ == '-' ? -1 : 1;
	if (tnctl_digits(&p, 2, &h) < 0 || *p++ != ':' || tnctl_digits(&p, 2, &m) < 0 ||
	    *p != '\0' || h > 23 || m > 59)
		return -1;
	*off_r = (int64_t)sign * (h * 3600 + m * 60);
	return 0;
}

static bool tnctl_date_sep(int i, char c)
{
	static const char seps[] = "--T::";

	return c == seps[i] || (i == 2 && (c == 't' || c == ' '));
}

int tnctl_parse_rfc3339(const char *text, int64_t *ms_r)
{
	static const int widths[] = { 4, 2, 2, 2, 2, 2 };
	struct tm tm = { 0 };
	const char *p = text;
	int64_t ms, off;
	int f[6];

	for (int i = 0; i < 6; i++) {
		if (tnctl_digits(&p, widths[i], &f[i]) < 0 || (i < 5 && !tnctl_date_sep(i, *p++)))
			return -1;
	}
	if (f[1] < 1 || f[1] > 12 || f[2] < 1 || f[2] > 31 || f[3] > 23 || f[4] > 59 ||
	    f[5] > 60 || tnctl_parse_fraction(&p, &ms) < 0 || tnctl_parse_offset(p, &off) < 0)
		return -1;
	tm.tm_year = f[0] - 1900;
	tm.tm_mon = f[1] - 1;
	tm.tm_mday = f[2];
	tm.tm_hour = f[3];
	tm.tm_min = f[4];
	tm.tm_sec = f[5];
	*ms_r = ((int64_t)timegm(&tm) - off) * 1000 + ms;
	return 0;
}

void tnctl_format_span(int64_t ms, char buf[32])
{
	long long s = ms < 0 ? 0 : (long long)(ms / 1000);

	if (s < 60)
		snprintf(buf, 32, "%llds", s);
	else if (s < 3600)
		snprintf(buf, 32, "%lldm%02llds", s / 60, s % 60);
	else if (s < 86400)
		snprintf(buf, 32, "%lldh%02lldm", s / 3600, s % 3600 / 60);
	else
		snprintf(buf, 32, "%lldd%02lldh", s / 86400, s % 86400 / 3600);
}

const char *tnctl_safe(char *buf, const char *text)
{
	if (text == NULL)
		return "-";
	return tn_log_sanitize(buf, TN_LOG_VALUE_MAX, text, strlen(text));
}
