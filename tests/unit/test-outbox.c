/*++
 * NAME
 *	test-outbox 1
 * SUMMARY
 *	unit tests: durable outbox envelope, ids, sequences, limits, threads,
 *	processes, crash safety, group commit, failing batch members, origin
 * DESCRIPTION
 *	Each test gets its own mkdtemp(3) directory under /tmp holding
 *	tmp/ new/ seq/ (mode 2770, as installed) and removes it after.
 *	Events are checked by reading new/ back with jansson.
 *--*/
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <dirent.h>
#include <ftw.h>
#include <pthread.h>
#include <regex.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <cmocka.h>

#include <jansson.h>

#include "tn-conf.h"
#include "tn-mem.h"
#include "tn-outbox.h"
#include "tn-time.h"

struct fx {
	char dir[64];
};

static const char *const subdirs[] = { "tmp", "new", "seq" };

/* --- fixture and helpers ------------------------------------------------- */

static int fx_setup(void **state)
{
	struct fx *fx = tn_mem_calloc(1, sizeof(*fx));
	char path[128];

	strcpy(fx->dir, "/tmp/tn-outbox-test-XXXXXX");
	assert_non_null(mkdtemp(fx->dir));
	for (size_t i = 0; i < 3; i++) {
		snprintf(path, sizeof(path), "%s/%s", fx->dir, subdirs[i]);
		assert_int_equal(mkdir(path, 0770), 0);
		assert_int_equal(chmod(path, 02770), 0);
	}
	*state = fx;
	return 0;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	return remove(path);
}

static int fx_teardown(void **state)
{
	struct fx *fx = *state;

	nftw(fx->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
	tn_mem_free(&fx);
	return 0;
}

static struct tn_outbox *fx_outbox(struct fx *fx, uint64_t max_events)
{
	struct tn_outbox_settings set = { .dir = fx->dir, .max_events = max_events };

	return tn_outbox_create(&set);
}

static char *fx_path(struct fx *fx, const char *sub, const char *name)
{
	return name != NULL ? tn_mem_printf("%s/%s/%s", fx->dir, sub, name) :
		tn_mem_printf("%s/%s", fx->dir, sub);
}

/* Whole file, NUL-terminated; NULL when missing. */
static char *read_text(const char *path, size_t *len_r)
{
	FILE *f = fopen(path, "r");
	char *buf;
	long len;

	if (f == NULL)
		return NULL;
	fseek(f, 0, SEEK_END);
	len = ftell(f);
	rewind(f);
	buf = tn_mem_alloc((size_t)len + 1);
	assert_int_equal(fread(buf, 1, (size_t)len, f), (size_t)len);
	buf[len] = '\0';
	fclose(f);
	if (len_r != NULL)
		*len_r = (size_t)len;
	return buf;
}

static char *seq_text(struct fx *fx, const char *tenant)
{
	char *path = fx_path(fx, "seq", tenant), *text = read_text(path, NULL);

	tn_mem_free(&path);
	return text;
}

static size_t count_entries(struct fx *fx, const char *sub)
{
	char *path = fx_path(fx, sub, NULL);
	DIR *dir = opendir(path);
	struct dirent *de;
	size_t n = 0;

	assert_non_null(dir);
	while ((de = readdir(dir)) != NULL) {
		if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
			n++;
	}
	closedir(dir);
	tn_mem_free(&path);
	return n;
}

/* One segment file of new/: whole lines, each one compact envelope that
 * parses, the first one's id its name; its events appended to all. */
static size_t load_segment(struct fx *fx, const char *name, json_t *all)
{
	char *path = fx_path(fx, "new", name), *text, *p, *nl;
	json_error_t jerr;
	json_t *root;
	size_t len, n = 0;

	text = read_text(path, &len);
	assert_non_null(text);
	assert_true(len > 1);
	assert_int_equal(text[len - 1], '\n');
	assert_int_equal(strlen(name), 36 + 5);
	for (p = text; p < text + len; p = nl + 1) {
		nl = memchr(p, '\n', (size_t)(text + len - p));
		assert_non_null(nl);
		assert_int_equal(strncmp(p, "{\"id\":\"", 7), 0);
		root = json_loadb(p, (size_t)(nl - p), JSON_REJECT_DUPLICATES, &jerr);
		if (root == NULL)
			fail_msg("%s line %zu: %s", path, n + 1, jerr.text);
		assert_true(json_is_object(root));
		if (n == 0)
			assert_memory_equal(json_string_value(json_object_get(root, "id")), name, 36);
		json_array_append_new(all, root);
		n++;
	}
	tn_mem_free(&text);
	tn_mem_free(&path);
	return n;
}

/* Every event in new/ (each segment checked by load_segment()); the
 * number of files in *files_r unless NULL. */
static json_t *load_events_files(struct fx *fx, size_t *files_r)
{
	char *path = fx_path(fx, "new", NULL);
	DIR *dir = opendir(path);
	json_t *all = json_array();
	struct dirent *de;
	size_t files = 0;

	assert_non_null(dir);
	while ((de = readdir(dir)) != NULL) {
		if (de->d_name[0] == '.')
			continue;
		load_segment(fx, de->d_name, all);
		files++;
	}
	closedir(dir);
	tn_mem_free(&path);
	if (files_r != NULL)
		*files_r = files;
	return all;
}

static json_t *load_events(struct fx *fx)
{
	return load_events_files(fx, NULL);
}

/* The number of events in new/. */
static size_t count_events(struct fx *fx)
{
	json_t *all = load_events(fx);
	size_t n = json_array_size(all);

	json_decref(all);
	return n;
}

/* The event of the id in name ("<id>.json"), wherever it is in new/. */
static json_t *load_event(struct fx *fx, const char *name)
{
	json_t *all = load_events(fx), *ev, *found = NULL;
	size_t i;

	json_array_foreach(all, i, ev) {
		if (strncmp(json_string_value(json_object_get(ev, "id")), name, 36) == 0)
			found = json_incref(ev);
	}
	json_decref(all);
	if (found == NULL)
		fail_msg("event %.36s is not in new/", name);
	return found;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* The tenant's sequences in new/ are exactly 1..n. */
static void assert_sequences(json_t *all, const char *tenant, size_t n)
{
	uint64_t *seqs = tn_mem_calloc(json_array_size(all) + 1, sizeof(uint64_t));
	size_t count = 0, i;
	json_t *ev;

	json_array_foreach(all, i, ev) {
		if (strcmp(json_string_value(json_object_get(ev, "tenant")), tenant) == 0)
			seqs[count++] = (uint64_t)json_integer_value(json_object_get(ev, "sequence"));
	}
	qsort(seqs, count, sizeof(uint64_t), cmp_u64);
	assert_int_equal(count, n);
	for (i = 0; i < count; i++) {
		if (seqs[i] != i + 1)
			fail_msg("tenant %s: sequence %zu is %" PRIu64, tenant, i + 1, seqs[i]);
	}
	tn_mem_free(&seqs);
}

static bool uuidv7_valid(const char *id)
{
	if (strlen(id) != 36)
		return false;
	for (int i = 0; i < 36; i++) {
		if (i == 8 || i == 13 || i == 18 || i == 23) {
			if (id[i] != '-')
				return false;
		} else if (strchr("0123456789abcdef", id[i]) == NULL || id[i] == '\0') {
			return false;
		}
	}
	return id[14] == '7' && strchr("89ab", id[19]) != NULL;
}

static uint64_t uuidv7_ms(const char *id)
{
	char hex[13];

	memcpy(hex, id, 8);
	memcpy(hex + 8, id + 9, 4);
	hex[12] = '\0';
	return strtoull(hex, NULL, 16);
}

static void append_ok(struct tn_outbox *ob, const char *type, const char *tenant,
		      json_t *data, char id_r[TN_OUTBOX_ID_SIZE], uint64_t *seq_r)
{
	const char *error = NULL;

	if (tn_outbox_append(ob, type, tenant, data, id_r, seq_r, &error) < 0)
		fail_msg("append %s %s: %s", type, tenant, error);
}

static uint64_t append_seq(struct tn_outbox *ob, const char *tenant)
{
	json_t *data = json_pack("{s:s}", "k", "v");
	char id[TN_OUTBOX_ID_SIZE];
	uint64_t seq;

	append_ok(ob, "test.event", tenant, data, id, &seq);
	json_decref(data);
	return seq;
}

/* --- envelope ------------------------------------------------------------ */

static void assert_rfc3339_ms(const char *ts, uint64_t id_ms)
{
	regex_t re;
	struct tm tm = { 0 };
	const char *rest;
	time_t sec, now = time(NULL);

	assert_int_equal(regcomp(&re, "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:"
				 "[0-9]{2}\\.[0-9]{3}Z$", REG_EXTENDED | REG_NOSUB), 0);
	assert_int_equal(regexec(&re, ts, 0, NULL, 0), 0);
	regfree(&re);
	rest = strptime(ts, "%Y-%m-%dT%H:%M:%S", &tm);
	assert_non_null(rest);
	sec = timegm(&tm);
	assert_true(sec >= now - 5 && sec <= now + 1);
	/* the id carries the same instant */
	assert_int_equal((uint64_t)sec * 1000 + (uint64_t)atoi(rest + 1), id_ms);
}

static void test_envelope(void **state)
{
	struct fx *fx = *state;
	struct tn_outbox *ob = fx_outbox(fx, 0);
	static const char *const keys[] = {
		"id", "type", "occurred_at", "tenant", "sequence", "origin", "data"
	};
	json_t *data = json_pack("{s:s,s:I,s:{s:[i,s,b,n]}}", "address", "a@acme.example",
				 "quota", (json_int_t)1 << 40, "nested", "x", 1,
				 "\xc3\xbc \"quoted\"\n", 1);
	char id[TN_OUTBOX_ID_SIZE], name[64], *path, *text;
	uint64_t seq;
	json_t *ev;
	const char *key;
	void *iter;
	struct stat st;
	size_t i = 0;

	append_ok(ob, "mailbox.created", "acme", data, id, &seq);
	assert_int_equal(seq, 1);
	assert_true(uuidv7_valid(id));
	snprintf(name, sizeof(name), "%s.json", id);
	ev = load_event(fx, name);
	for (iter = json_object_iter(ev); iter != NULL; iter = json_object_iter_next(ev, iter)) {
		key = json_object_iter_key(iter);
		assert_true(i < 7);
		assert_string_equal(key, keys[i]);
		i++;
	}
	assert_int_equal(i, 7);
	assert_string_equal(json_string_value(json_object_get(ev, "id")), id);
	assert_string_equal(json_string_value(json_object_get(ev, "type")), "mailbox.created");
	assert_string_equal(json_string_value(json_object_get(ev, "tenant")), "acme");
	assert_true(json_is_integer(json_object_get(ev, "sequence")));
	assert_int_equal(json_integer_value(json_object_get(ev, "sequence")), 1);
	assert_true(json_equal(json_object_get(ev, "data"), data));
	assert_rfc3339_ms(json_string_value(json_object_get(ev, "occurred_at")), uuidv7_ms(id));
	json_decref(ev);

	/* compact, and durable files only: nothing left in tmp/ */
	path = fx_path(fx, "new", name);
	text = read_text(path, NULL);
	assert_int_equal(strncmp(text, "{\"id\":\"", 7), 0);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0660);
	tn_mem_free(&text);
	tn_mem_free(&path);
	assert_int_equal(count_entries(fx, "tmp"), 0);

	/* the caller's data is borrowed: still ours, unchanged */
	assert_int_equal(data->refcount, 1);
	append_ok(ob, "mailbox.deleted", "acme", data, id, &seq);
	assert_int_equal(seq, 2);
	json_decref(data);
	text = seq_text(fx, "acme");
	assert_string_equal(text, "2\n");
	tn_mem_free(&text);
	tn_outbox_destroy(&ob);
	assert_null(ob);
}

/* --- ids -------------------------------------------------------------------- */

static void test_ids_increasing(void **state)
{
	struct fx *fx = *state;
	struct tn_outbox *ob = fx_outbox(fx, 0);
	json_t *data = json_object();
	char id[TN_OUTBOX_ID_SIZE], prev[TN_OUTBOX_ID_SIZE] = "";
	uint64_t seq;

	for (int i = 0; i < 10000; i++) {
		append_ok(ob, "test.id", "acme", data, id, &seq);
		if (!uuidv7_valid(id))
			fail_msg("not a UUIDv7: %s", id);
		if (strcmp(prev, id) >= 0)
			fail_msg("ids not increasing: %s then %s", prev, id);
		assert_int_equal(seq, (uint64_t)i + 1);
		memcpy(prev, id, sizeof(id));
	}
	assert_int_equal(count_events(fx), 10000);
	json_decref(data);
	tn_outbox_destroy(&ob);
}

/* --- sequences ----------------------------------------------------------------- */

static void test_sequence_per_tenant(void **state)
{
	struct fx *fx = *state;
	struct tn_outbox *ob = fx_outbox(fx, 0);
	static const struct {
		const char *tenant;
		uint64_t seq;
	} steps[] = {
		{ "acme", 1 }, { "globex", 1 }, { "acme", 2 }, { "initech.example", 1 },
		{ "acme", 3 }, { "globex", 2 }, { "0-day_co", 1 },
	};
	char *text;

	for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++)
		assert_int_equal(append_seq(ob, steps[i].tenant), steps[i].seq);
	text = seq_text(fx, "acme");
	assert_string_equal(text, "3\n");
	tn_mem_free(&text);
	text = seq_text(fx, "globex");
	assert_string_equal(text, "2\n");
	tn_mem_free(&text);
	/* a counter left by a rollback cut short ("41\n\n") still reads */
	text = fx_path(fx, "seq", "acme");
	FILE *f = fopen(text, "w");
	fputs("41\n\n", f);
	fclose(f);
	tn_mem_free(&text);
	assert_int_equal(append_seq(ob, "acme"), 42);
	tn_outbox_destroy(&ob);
}

/* --- refused input ----------------------------------------------------------- */

static json_t *big_data(size_t size)
{
	char *blob = tn_mem_alloc(size + 1);
	json_t *data;

	memset(blob, 'x', size);
	blob[size] = '\0';
	data = json_pack("{s:s}", "blob", blob);
	tn_mem_free(&blob);
	return data;
}

static void test_bad_input(void **state)
{
	struct fx *fx = *state;
	struct tn_outbox *ob = fx_outbox(fx, 0);
	static const struct {
		const char *type, *tenant;
		const char *error;
	} bad[] = {
		{ "mailbox", "acme", "invalid event type" },
		{ "Mailbox.created", "acme", "invalid event type" },
		{ "mailbox..created", "acme", "invalid event type" },
		{ "mailbox.", "acme", "invalid event type" },
		{ ".mailbox", "acme", "invalid event type" },
		{ "1mailbox.created", "acme", "invalid event type" },
		{ "mailbox.1created", "acme", "invalid event type" },
		{ "mailbox.created-now", "acme", "invalid event type" },
		{ "mailbox.created\n", "acme", "invalid event type" },
		{ "", "acme", "invalid event type" },
		{ NULL, "acme", "invalid event type" },
		{ "a.bcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyzabcdefghijkl",
		  "acme", "invalid event type" },		/* 65 bytes */
		{ "mailbox.created", "Acme", "invalid tenant" },
		{ "mailbox.created", "-acme", "invalid tenant" },
		{ "mailbox.created", ".acme", "invalid tenant" },
		{ "mailbox.created", "..", "invalid tenant" },
		{ "mailbox.created", "a/b", "invalid tenant" },
		{ "mailbox.created", "acme corp", "invalid tenant" },
		{ "mailbox.created", "", "invalid tenant" },
		{ "mailbox.created", NULL, "invalid tenant" },
		{ "mailbox.created", "abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyzabcdefghijkl",
		  "invalid tenant" },			/* 64 bytes */
	};
	json_t *data = json_object(), *not_objects[3], *big = big_data(70 * 1024), *utf8;
	char id[TN_OUTBOX_ID_SIZE] = "untouched", *before, *after;
	uint64_t seq = 777;
	const char *error;

	append_seq(ob, "acme");
	before = seq_text(fx, "acme");
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		error = NULL;
		assert_int_equal(tn_outbox_append(ob, bad[i].type, bad[i].tenant, data,
						  id, &seq, &error), -1);
		assert_non_null(error);
		if (strstr(error, bad[i].error) == NULL)
			fail_msg("case %zu: error '%s'", i, error);
		assert_true(tn_outbox_failed_on_input());
	}
	not_objects[0] = json_array();
	not_objects[1] = json_string("x");
	not_objects[2] = NULL;
	for (size_t i = 0; i < 3; i++) {
		assert_int_equal(tn_outbox_append(ob, "a.b", "acme", not_objects[i], id,
						  &seq, &error), -1);
		assert_non_null(strstr(error, "not a JSON object"));
		json_decref(not_objects[i]);
	}
	assert_int_equal(tn_outbox_append(ob, "a.b", "acme", big, id, &seq, &error), -1);
	assert_non_null(strstr(error, "event too large"));
	utf8 = json_pack("{s:o}", "s", json_stringn_nocheck("\xff\xfe", 2));
	assert_int_equal(tn_outbox_append(ob, "a.b", "acme", utf8, id, &seq, &error), -1);
	assert_non_null(strstr(error, "cannot be encoded"));
	assert_string_equal(id, "untouched");
	assert_int_equal(seq, 777);

	/* nothing written anywhere, counter as it was, no new counter */
	assert_int_equal(count_entries(fx, "tmp"), 0);
	assert_int_equal(count_events(fx), 1);
	assert_int_equal(count_entries(fx, "seq"), 1);
	after = seq_text(fx, "acme");
	assert_string_equal(before, after);

	/* the limits themselves are accepted */
	json_decref(big);
	big = big_data(60 * 1024);
	assert_int_equal(strlen(bad[11].type), TN_OUTBOX_TYPE_MAX + 1);
	assert_int_equal(strlen(bad[20].tenant), TN_OUTBOX_TENANT_MAX + 1);
	append_ok(ob, "a.bcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyzabcdefghijk",
		  "abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyzabcdefghijk", big, id, &seq);
	assert_int_equal(seq, 1);
	tn_mem_free(&before);
	tn_mem_free(&after);
	json_decref(utf8);
	json_decref(big);
	json_decref(data);
	tn_outbox_destroy(&ob);
}

static void test_bad_counter(void **state)
{
	struct fx *fx = *state;
	struct tn_outbox *ob = fx_outbox(fx, 0);
	json_t *data = json_object();
	char id[TN_OUTBOX_ID_SIZE], *path = fx_path(fx, "seq", "acme"), *text;
	uint64_t seq;
	const char *error;
	FILE *f = fopen(path, "w");

	fputs("12abc\n", f);
	fclose(f);
	assert_int_equal(tn_outbox_append(ob, "a.b", "acme", data, id, &seq, &error), -1);
	assert_non_null(strstr(error, path));
	assert_non_null(strstr(error, "not a sequence number"));
	assert_int_equal(count_events(fx), 0);
	assert_int_equal(count_entries(fx, "tmp"), 0);
	text = seq_text(fx, "acme");
	assert_string_equal(text, "12abc\n");
	tn_mem_free(&text);
	tn_mem_free(&path);
	json_decref(data);
	tn_outbox_destroy(&ob);
}

/* --- missing directories --------------------------------------------------- */

static void assert_refused_unchanged(struct fx *fx, struct tn_outbox *ob,
				     const char *want_in_error)
{
	json_t *data = json_object();
	char id[TN_OUTBOX_ID_SIZE], *before = seq_text(fx, "acme"), *after;
	uint64_t seq;
	const char *error = NULL;

	assert_int_equal(tn_outbox_append(ob, "a.b", "acme", data, id, &seq, &error), -1);
	if (strstr(error, want_in_error) == NULL || strstr(error, "No such file") == NULL)
		fail_msg("error '%s' does not name %s", error, want_in_error);
	assert_false(tn_outbox_failed_on_input());	/* the disk's fault */
	after = seq_text(fx, "acme");
	assert_string_equal(before, after);
	tn_mem_free(&before);
	tn_mem_free(&after);
	json_decref(data);
}

static void test_missing_dirs(void **state)
{
	struct fx *fx = *state;
	struct tn_outbox *ob = fx_outbox(fx, 0), *gone;
	struct tn_outbox_settings set = { .dir = "/tmp/tn-outbox-test-does-not-exist" };
	char *sub = fx_path(fx, "new", NULL), *moved = fx_path(fx, "new.moved", NULL);
	const char *error;

	assert_int_equal(tn_outbox_check(ob, &error), 0);
	assert_int_equal(append_seq(ob, "acme"), 1);

	/* new/ gone: the counter moved to 2 and was rolled back */
	assert_int_equal(rename(sub, moved), 0);
	assert_refused_unchanged(fx, ob, sub);
	assert_int_equal(count_entries(fx, "tmp"), 0);
	assert_int_equal(tn_outbox_check(ob, &error), -1);
	assert_non_null(strstr(error, sub));
	assert_int_equal(rename(moved, sub), 0);
	assert_int_equal(append_seq(ob, "acme"), 2);

	/* tmp/ gone */
	tn_mem_free(&sub);
	tn_mem_free(&moved);
	sub = fx_path(fx, "tmp", NULL);
	moved = fx_path(fx, "tmp.moved", NULL);
	assert_int_equal(rename(sub, moved), 0);
	assert_refused_unchanged(fx, ob, sub);
	assert_int_equal(rename(moved, sub), 0);
	assert_int_equal(append_seq(ob, "acme"), 3);
	assert_int_equal(count_events(fx), 3);

	/* the whole outbox gone */
	gone = tn_outbox_create(&set);
	assert_int_equal(tn_outbox_check(gone, &error), -1);
	assert_non_null(strstr(error, set.dir));
	{
		json_t *data = json_object();
		char id[TN_OUTBOX_ID_SIZE];
		uint64_t seq;

		assert_int_equal(tn_outbox_append(gone, "a.b", "acme", data, id, &seq, &error), -1);
		assert_non_null(strstr(error, set.dir));
		json_decref(data);
	}
	tn_outbox_destroy(&gone);
	tn_mem_free(&sub);
	tn_mem_free(&moved);
	tn_outbox_destroy(&ob);
}

/* --- limits ------------------------------------------------------------------- */

static void test_limits(void **state)
{
	struct fx *fx = *state;
	struct tn_outbox *ob = fx_outbox(fx, 5);
	struct tn_outbox_settings set = { .dir = fx->dir, .min_free_bytes = UINT64_MAX };
	json_t *data = json_object();
	char id[TN_OUTBOX_ID_SIZE];
	uint64_t seq;
	const char *error;

	for (int i = 0; i < 5; i++)
		append_seq(ob, i % 2 == 0 ? "acme" : "globex");
	assert_int_equal(tn_outbox_append(ob, "a.b", "acme", data, id, &seq, &error), -1);
	assert_string_equal(error, "outbox full (5 events, limit 5)");
	tn_outbox_destroy(&ob);

	/* a fresh process (outbox) counts what is there */
	ob = fx_outbox(fx, 6);
	assert_int_equal(append_seq(ob, "acme"), 4);
	assert_int_equal(tn_outbox_append(ob, "a.b", "acme", data, id, &seq, &error), -1);
	assert_string_equal(error, "outbox full (6 events, limit 6)");
	tn_outbox_destroy(&ob);

	ob = tn_outbox_create(&set);
	assert_int_equal(tn_outbox_append(ob, "a.b", "acme", data, id, &seq, &error), -1);
	assert_non_null(strstr(error, "bytes free on"));
	assert_non_null(strstr(error, fx->dir));
	assert_int_equal(count_events(fx), 6);
	tn_outbox_destroy(&ob);
	json_decref(data);
}

/* A used segment file handed back in tmp/free.<n> is reused: renamed to
 * the next segment's name, overwritten and cut to its length (the same
 * inode ends up in new/); a free name that is a symbolic link or has a
 * second link is dropped, and its target left alone. */
static void test_reused_files(void **state)
{
	struct fx *fx = *state;
	struct tn_outbox *ob = fx_outbox(fx, 0);
	char *free1 = fx_path(fx, "tmp", "free.1"), *free2 = fx_path(fx, "tmp", "free.2");
	char *target = fx_path(fx, "seq", "victim"), *text, name[64], *path;
	char id[TN_OUTBOX_ID_SIZE];
	struct stat st, before;
	uint64_t seq;
	json_t *data = json_object(), *ev;
	FILE *f = fopen(free1, "w");

	for (int i = 0; i < 2000; i++)
		fputs("old segment bytes, longer than the next event\n", f);
	fclose(f);
	assert_int_equal(stat(free1, &before), 0);
	append_ok(ob, "test.reuse", "acme", data, id, &seq);
	snprintf(name, sizeof(name), "%s.json", id);
	path = fx_path(fx, "new", name);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_ino, before.st_ino);
	text = read_text(path, NULL);
	assert_null(strstr(text, "old segment"));
	assert_int_equal(strlen(text), (size_t)st.st_size);
	tn_mem_free(&text);
	ev = load_event(fx, name);
	assert_int_equal(json_integer_value(json_object_get(ev, "sequence")), 1);
	json_decref(ev);
	assert_int_equal(count_entries(fx, "tmp"), 0);

	/* a symbolic link, and a file with another name elsewhere */
	f = fopen(target, "w");
	fputs("keep\n", f);
	fclose(f);
	assert_int_equal(symlink(target, free1), 0);
	assert_int_equal(link(target, free2), 0);
	tn_outbox_destroy(&ob);
	ob = fx_outbox(fx, 0);		/* looks at tmp/ again */
	append_ok(ob, "test.reuse", "acme", data, id, &seq);
	append_ok(ob, "test.reuse", "acme", data, id, &seq);
	assert_int_equal(seq, 3);
	text = read_text(target, NULL);
	assert_string_equal(text, "keep\n");
	tn_mem_free(&text);
	assert_int_equal(count_entries(fx, "tmp"), 0);
	assert_int_equal(count_events(fx), 3);
	unlink(target);
	tn_mem_free(&target);
	tn_mem_free(&path);
	tn_mem_free(&free1);
	tn_mem_free(&free2);
	json_decref(data);
	tn_outbox_destroy(&ob);
}

/* --- modes ----------------------------------------------------------------------- */

static void assert_mode(struct fx *fx, const char *sub, const char *name, mode_t mode)
{
	char *path = fx_path(fx, sub, name);
	struct stat st;

	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 07777, mode);
	tn_mem_free(&path);
}

static void test_umask(void **state)
{
	struct fx *fx = *state;
	struct tn_outbox *ob = fx_outbox(fx, 0);
	struct tn_outbox_settings set = { .dir = fx->dir, .file_mode = 0640 };
	json_t *data = json_object();
	char id[TN_OUTBOX_ID_SIZE], name[64];
	uint64_t seq;
	mode_t old = umask(077);

	append_ok(ob, "a.b", "acme", data, id, &seq);
	snprintf(name, sizeof(name), "%s.json", id);
	assert_mode(fx, "new", name, 0660);
	assert_mode(fx, "seq", "acme", 0660);
	tn_outbox_destroy(&ob);

	ob = tn_outbox_create(&set);
	append_ok(ob, "a.b", "globex", data, id, &seq);
	snprintf(name, sizeof(name), "%s.json", id);
	assert_mode(fx, "new", name, 0640);
	assert_mode(fx, "seq", "globex", 0640);
	umask(old);
	json_decref(data);
	tn_outbox_destroy(&ob);
}

/* --- threads -------------------------------------------------------------------- */

#define N_THREADS 8
#define PER_THREAD 500

static const char *const thread_tenants[] = { "acme", "globex", "initech" };

struct worker {
	struct tn_outbox *ob;
	int index;
	int failures;
	int not_increasing;
	char error[256];
};

static void *worker_run(void *arg)
{
	struct worker *w = arg;
	char id[TN_OUTBOX_ID_SIZE], prev[TN_OUTBOX_ID_SIZE] = "";
	const char *error;
	uint64_t seq;
	json_t *data;

	for (int i = 0; i < PER_THREAD; i++) {
		data = json_pack("{s:i,s:i}", "thread", w->index, "i", i);
		if (tn_outbox_append(w->ob, "test.thread", thread_tenants[(w->index + i) % 3],
				     data, id, &seq, &error) < 0) {
			if (w->failures++ == 0)
				snprintf(w->error, sizeof(w->error), "%s", error);
		} else {
			/* one thread's ids come in order */
			if (strcmp(prev, id) >= 0)
				w->not_increasing++;
			memcpy(prev, id, sizeof(id));
		}
		json_decref(data);
	}
	return NULL;
}

static void test_threads(void **state)
{
	struct fx *fx = *state;
	struct worker w[N_THREADS];
	pthread_t th[N_THREADS];
	json_t *all;
	size_t total = 0;
	char *text;

	memset(w, 0, sizeof(w));
	for (int i = 0; i < N_THREADS; i++) {
		w[i].ob = fx_outbox(fx, 0);
		w[i].index = i;
		/* half the threads share one outbox object */
		if (i % 2 == 1) {
			tn_outbox_destroy(&w[i].ob);
			w[i].ob = w[i - 1].ob;
		}
	}
	for (int i = 0; i < N_THREADS; i++)
		pthread_create(&th[i], NULL, worker_run, &w[i]);
	for (int i = 0; i < N_THREADS; i++)
		pthread_join(th[i], NULL);
	for (int i = 0; i < N_THREADS; i++) {
		if (w[i].failures != 0)
			fail_msg("thread %d: %d failures, first: %s", i, w[i].failures, w[i].error);
		assert_int_equal(w[i].not_increasing, 0);
	}
	assert_int_equal(count_events(fx), N_THREADS * PER_THREAD);
	assert_int_equal(count_entries(fx, "tmp"), 0);
	all = load_events(fx);
	assert_int_equal(json_array_size(all), N_THREADS * PER_THREAD);
	for (int t = 0; t < 3; t++) {
		size_t n = 0;

		/* thread i sends event j to tenant (i + j) % 3 */
		for (int i = 0; i < N_THREADS; i++)
			for (int j = 0; j < PER_THREAD; j++)
				n += (i + j) % 3 == t;
		assert_sequences(all, thread_tenants[t], n);
		text = seq_text(fx, thread_tenants[t]);
		assert_int_equal(strtoull(text, NULL, 10), n);
		tn_mem_free(&text);
		total += n;
	}
	assert_int_equal(total, N_THREADS * PER_THREAD);
	json_decref(all);
	for (int i = 0; i < N_THREADS; i += 2)
		tn_outbox_destroy(&w[i].ob);
}

/* --- processes -------------------------------------------------------------------- */

#define N_CHILDREN 4
#define PER_CHILD 300

static void __attribute__((noreturn)) child_append(struct fx *fx, int count, int ready_fd)
{
	struct tn_outbox *ob = fx_outbox(fx, 0);
	json_t *data = json_pack("{s:i}", "pid", (int)getpid());
	char id[TN_OUTBOX_ID_SIZE];
	const char *error;
	uint64_t seq;

	for (int i = 0; count < 0 || i < count; i++) {
		if (tn_outbox_append(ob, "test.process", "acme", data, id, &seq, &error) < 0) {
			fprintf(stderr, "child %d: %s\n", (int)getpid(), error);
			_exit(1);
		}
		if (i == 0 && ready_fd >= 0 && write(ready_fd, "x", 1) != 1)
			_exit(1);
	}
	json_decref(data);
	tn_outbox_destroy(&ob);
	_exit(0);
}

static void test_processes(void **state)
{
	struct fx *fx = *state;
	pid_t pids[N_CHILDREN];
	json_t *all;
	int status;
	char *text;

	for (int i = 0; i < N_CHILDREN; i++) {
		pids[i] = fork();
		assert_true(pids[i] >= 0);
		if (pids[i] == 0)
			child_append(fx, PER_CHILD, -1);
	}
	for (int i = 0; i < N_CHILDREN; i++) {
		assert_int_equal(waitpid(pids[i], &status, 0), pids[i]);
		assert_true(WIFEXITED(status));
		assert_int_equal(WEXITSTATUS(status), 0);
	}
	all = load_events(fx);
	assert_sequences(all, "acme", N_CHILDREN * PER_CHILD);
	text = seq_text(fx, "acme");
	assert_string_equal(text, "1200\n");
	tn_mem_free(&text);
	json_decref(all);
}

/* A producer killed at a random point: nothing half-written in new/,
 * sequences 1..K, the counter at K or K+1, and appends go on from it. */
static void test_crash(void **state)
{
	struct fx *fx = *state;
	struct tn_outbox *ob;
	int pipefd[2], status;
	size_t k;
	uint64_t counter;
	char c, *text;
	json_t *all;
	pid_t pid;

	assert_int_equal(pipe(pipefd), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		close(pipefd[0]);
		child_append(fx, -1, pipefd[1]);
	}
	close(pipefd[1]);
	assert_int_equal(read(pipefd[0], &c, 1), 1);	/* first event is in */
	close(pipefd[0]);
	usleep(50000);
	assert_int_equal(kill(pid, SIGKILL), 0);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFSIGNALED(status));

	all = load_events(fx);			/* every file parses */
	k = json_array_size(all);
	assert_true(k >= 1);
	assert_sequences(all, "acme", k);
	text = seq_text(fx, "acme");
	counter = strtoull(text, NULL, 10);
	tn_mem_free(&text);
	if (counter != k && counter != k + 1)
		fail_msg("counter %" PRIu64 " after %zu events", counter, k);
	/* at most the one file the child was writing */
	assert_true(count_entries(fx, "tmp") <= 1);
	json_decref(all);

	ob = fx_outbox(fx, 0);
	assert_int_equal(append_seq(ob, "acme"), counter + 1);
	tn_outbox_destroy(&ob);
}

/* A producer holding the tenant's lock (stopped, or stuck on a disk)
 * costs the others one bounded wait, then an error; after it lets go,
 * appends continue without a gap. */
static void test_lock_timeout(void **state)
{
	struct fx *fx = *state;
	struct tn_outbox_settings set = { .dir = fx->dir, .lock_timeout_ms = 200 };
	struct tn_outbox *ob = tn_outbox_create(&set);
	json_t *data = json_object();
	char id[TN_OUTBOX_ID_SIZE];
	const char *error = NULL;
	char *seq_path = fx_path(fx, "seq", "acme");
	uint64_t seq, t0;
	int fd;

	assert_int_equal(append_seq(ob, "acme"), 1);
	fd = open(seq_path, O_RDWR);
	assert_true(fd >= 0);
	assert_int_equal(flock(fd, LOCK_EX), 0);	/* another "producer" */
	t0 = (uint64_t)tn_time_now_ms();
	assert_int_equal(tn_outbox_append(ob, "test.event", "acme", data, id, &seq, &error), -1);
	assert_true(tn_time_now_ms() - (tn_msec_t)t0 >= 200);
	assert_true(tn_time_now_ms() - (tn_msec_t)t0 < 1000);
	assert_non_null(strstr(error, "still locked"));
	assert_int_equal(count_events(fx), 1);
	/* other tenants are not held up */
	assert_int_equal(append_seq(ob, "globex"), 1);
	flock(fd, LOCK_UN);
	close(fd);
	assert_int_equal(append_seq(ob, "acme"), 2);
	json_decref(data);
	tn_mem_free(&seq_path);
	tn_outbox_destroy(&ob);
}

static void test_check(void **state)
{
	struct fx *fx = *state;
	struct tn_outbox *ob = fx_outbox(fx, 0);
	char *sub = fx_path(fx, "seq", NULL);
	const char *error;
	FILE *f;

	assert_int_equal(tn_outbox_check(ob, &error), 0);
	assert_int_equal(rmdir(sub), 0);
	f = fopen(sub, "w");
	fclose(f);
	assert_int_equal(tn_outbox_check(ob, &error), -1);
	assert_non_null(strstr(error, "not a directory"));
	assert_non_null(strstr(error, sub));
	tn_mem_free(&sub);
	tn_outbox_destroy(&ob);
}

/* --- group commit ------------------------------------------------------------ */

#define GC_THREADS 16
#define GC_PER_THREAD 150
#define GC_TENANTS 5

static const char *const gc_tenants[GC_TENANTS] = {
	"acme", "globex", "initech", "umbrella", "hooli"
};

struct gc_worker {
	struct tn_outbox *ob;
	struct fx *fx;
	int index;
	int failures;		/* appends that returned -1 */
	int missing;		/* returned 0 but the event is not in new/ */
	int wrong_seq;		/* its sequence in new/ is not the one returned */
	char error[256];
	size_t returned;	/* appends that returned 0: */
	char ids[2 * GC_PER_THREAD][TN_OUTBOX_ID_SIZE];
	uint64_t seqs[2 * GC_PER_THREAD];
};

/* Remember what an append returned, for gc_verify(). */
static void gc_check_returned(struct gc_worker *w, const char *id, uint64_t seq)
{
	assert_true(w->returned < 2 * GC_PER_THREAD);
	memcpy(w->ids[w->returned], id, TN_OUTBOX_ID_SIZE);
	w->seqs[w->returned++] = seq;
}

/* Every id the workers' appends returned is in new/ with the sequence
 * returned (counted in missing and wrong_seq). */
static void gc_verify(struct fx *fx, struct gc_worker *w, int n)
{
	json_t *all = load_events(fx), *by_id = json_object(), *ev;
	size_t i;

	json_array_foreach(all, i, ev)
		json_object_set(by_id, json_string_value(json_object_get(ev, "id")), ev);
	for (int t = 0; t < n; t++) {
		for (size_t j = 0; j < w[t].returned; j++) {
			ev = json_object_get(by_id, w[t].ids[j]);
			if (ev == NULL)
				w[t].missing++;
			else if ((uint64_t)json_integer_value(json_object_get(ev, "sequence")) !=
				 w[t].seqs[j])
				w[t].wrong_seq++;
		}
	}
	json_decref(by_id);
	json_decref(all);
}

static void *gc_worker_run(void *arg)
{
	struct gc_worker *w = arg;
	char id[TN_OUTBOX_ID_SIZE];
	const char *error;
	uint64_t seq;
	json_t *data;

	for (int i = 0; i < GC_PER_THREAD; i++) {
		data = json_pack("{s:i,s:i}", "thread", w->index, "i", i);
		if (tn_outbox_append(w->ob, "test.group", gc_tenants[(w->index + i) % GC_TENANTS],
				     data, id, &seq, &error) < 0) {
			if (w->failures++ == 0)
				snprintf(w->error, sizeof(w->error), "%s", error);
		} else {
			gc_check_returned(w, id, seq);
		}
		json_decref(data);
	}
	return NULL;
}

/* Many threads on one outbox object, mixed tenants: every sequence
 * 1..N of each tenant once, every returned id in new/ with the number
 * returned, nothing left in tmp/, counters at N. */
static void gc_many_threads(struct fx *fx, enum tn_outbox_sync sync)
{
	struct tn_outbox_settings set = { .dir = fx->dir, .sync = sync };
	struct gc_worker w[GC_THREADS];
	pthread_t th[GC_THREADS];
	size_t n[GC_TENANTS] = { 0 }, files;
	json_t *all;
	char *text;

	memset(w, 0, sizeof(w));
	w[0].ob = tn_outbox_create(&set);
	for (int i = 0; i < GC_THREADS; i++) {
		w[i].ob = w[0].ob;
		w[i].fx = fx;
		w[i].index = i;
		pthread_create(&th[i], NULL, gc_worker_run, &w[i]);
	}
	for (int i = 0; i < GC_THREADS; i++)
		pthread_join(th[i], NULL);
	gc_verify(fx, w, GC_THREADS);
	for (int i = 0; i < GC_THREADS; i++) {
		if (w[i].failures != 0)
			fail_msg("thread %d: %d failures, first: %s", i, w[i].failures, w[i].error);
		assert_int_equal(w[i].missing, 0);
		assert_int_equal(w[i].wrong_seq, 0);
		for (int j = 0; j < GC_PER_THREAD; j++)
			n[(i + j) % GC_TENANTS]++;
	}
	assert_int_equal(count_entries(fx, "tmp"), 0);
	all = load_events_files(fx, &files);
	assert_int_equal(json_array_size(all), GC_THREADS * GC_PER_THREAD);
	/* batches of several events share one file (a segment) */
	if (files >= json_array_size(all))
		fail_msg("%zu files for %zu events: no segment of several", files,
			 json_array_size(all));
	for (int t = 0; t < GC_TENANTS; t++) {
		assert_sequences(all, gc_tenants[t], n[t]);
		text = seq_text(fx, gc_tenants[t]);
		assert_int_equal(strtoull(text, NULL, 10), n[t]);
		tn_mem_free(&text);
	}
	json_decref(all);
	tn_outbox_destroy(&w[0].ob);
}

static void test_group_commit(void **state)
{
	gc_many_threads(*state, TN_OUTBOX_SYNC_SYNCFS);
}

static void test_group_commit_fsync(void **state)
{
	gc_many_threads(*state, TN_OUTBOX_SYNC_FSYNC);
}

/* One tenant per thread, each thread's events in order: the pipeline
 * (a batch made durable by the next one's barrier) loses nothing. */
static void *gc_own_tenant_run(void *arg)
{
	struct gc_worker *w = arg;
	char tenant[32], id[TN_OUTBOX_ID_SIZE];
	json_t *data = json_object();
	const char *error;
	uint64_t seq;

	snprintf(tenant, sizeof(tenant), "tenant-%d", w->index);
	for (int i = 0; i < GC_PER_THREAD; i++) {
		if (tn_outbox_append(w->ob, "test.own", tenant, data, id, &seq, &error) < 0) {
			if (w->failures++ == 0)
				snprintf(w->error, sizeof(w->error), "%s", error);
		} else if (seq != (uint64_t)i + 1) {
			w->wrong_seq++;
		} else {
			gc_check_returned(w, id, seq);
		}
	}
	json_decref(data);
	return NULL;
}

static void test_group_commit_own_tenants(void **state)
{
	struct fx *fx = *state;
	struct gc_worker w[GC_THREADS];
	pthread_t th[GC_THREADS];
	struct tn_outbox *ob = fx_outbox(fx, 0);

	memset(w, 0, sizeof(w));
	for (int i = 0; i < GC_THREADS; i++) {
		w[i].ob = ob;
		w[i].fx = fx;
		w[i].index = i;
		pthread_create(&th[i], NULL, gc_own_tenant_run, &w[i]);
	}
	for (int i = 0; i < GC_THREADS; i++)
		pthread_join(th[i], NULL);
	gc_verify(fx, w, GC_THREADS);
	for (int i = 0; i < GC_THREADS; i++) {
		if (w[i].failures != 0)
			fail_msg("thread %d: %d failures, first: %s", i, w[i].failures, w[i].error);
		assert_int_equal(w[i].missing, 0);
		assert_int_equal(w[i].wrong_seq, 0);
	}
	assert_int_equal(count_entries(fx, "tmp"), 0);
	assert_int_equal(count_events(fx), GC_THREADS * GC_PER_THREAD);
	tn_outbox_destroy(&ob);
}

/* --- failing members of a batch ---------------------------------------------- */

#define FM_THREADS 6
#define FM_PER_THREAD 60

enum fm_kind { FM_GOOD, FM_HELD, FM_BROKEN, FM_TOO_LARGE };

struct fm_worker {
	struct fx *fx;
	struct tn_outbox *ob;
	enum fm_kind kind;
	json_t *data;
	const char *tenant;
	int ok, failures;
	int input_faults;	/* failures tn_outbox_failed_on_input() blames on the event */
	int64_t max_us;		/* slowest append */
	char error[256];
};

static void *fm_worker_run(void *arg)
{
	struct fm_worker *w = arg;
	int count = w->kind == FM_HELD ? 2 : FM_PER_THREAD;
	char id[TN_OUTBOX_ID_SIZE];
	const char *error;
	uint64_t seq;
	int64_t t0;

	for (int i = 0; i < count; i++) {
		t0 = tn_time_now_us();
		if (tn_outbox_append(w->ob, "test.member", w->tenant, w->data, id, &seq,
				     &error) < 0) {
			if (w->failures++ == 0)
				snprintf(w->error, sizeof(w->error), "%s", error);
			w->input_faults += tn_outbox_failed_on_input();
		} else {
			w->ok++;
		}
		if (tn_time_now_us() - t0 > w->max_us)
			w->max_us = tn_time_now_us() - t0;
	}
	return NULL;
}

/* Data that fits with a one-digit sequence and not with two. */
static json_t *fm_boundary_data(struct fx *fx)
{
	struct tn_outbox *ob = fx_outbox(fx, 0);
	json_t *data = big_data(100);
	char id[TN_OUTBOX_ID_SIZE], name[64], *path, *text;
	size_t len, blob;
	uint64_t seq;

	/* measure an event of acme (sequence 1), then size the blob */
	append_ok(ob, "test.member", "acme", data, id, &seq);
	snprintf(name, sizeof(name), "%s.json", id);
	path = fx_path(fx, "new", name);
	text = read_text(path, &len);
	unlink(path);
	blob = 100 + TN_OUTBOX_EVENT_MAX - len;
	json_decref(data);
	tn_mem_free(&text);
	tn_mem_free(&path);
	tn_outbox_destroy(&ob);
	return big_data(blob);
}

/* In one stream of batches: a tenant locked by another producer past
 * lock_timeout, a tenant whose counter is broken, and events that turn
 * out too large only once their number is known. Each fails alone; the
 * good ones keep numbering without gaps, are not held up by the lock
 * wait, and nothing is left in tmp/. */
static void test_failing_members(void **state)
{
	struct fx *fx = *state;
	struct tn_outbox_settings set = { .dir = fx->dir, .lock_timeout_ms = 1000 };
	static const struct {
		enum fm_kind kind;
		const char *tenant;
	} plan[FM_THREADS] = {
		{ FM_GOOD, "acme" }, { FM_GOOD, "globex" }, { FM_HELD, "held" },
		{ FM_BROKEN, "broken" }, { FM_TOO_LARGE, "acme" }, { FM_GOOD, "acme" },
	};
	struct fm_worker w[FM_THREADS];
	pthread_t th[FM_THREADS];
	json_t *small = json_object(), *boundary = fm_boundary_data(fx), *all;
	char *path, *text;
	size_t files;
	FILE *f;
	int held_fd;

	path = fx_path(fx, "seq", "broken");
	f = fopen(path, "w");
	fputs("x\n", f);
	fclose(f);
	tn_mem_free(&path);
	path = fx_path(fx, "seq", "acme");
	f = fopen(path, "w");
	fputs("9\n", f);		/* the boundary events would be 10 or more */
	fclose(f);
	tn_mem_free(&path);
	path = fx_path(fx, "seq", "held");
	held_fd = open(path, O_RDWR | O_CREAT, 0660);
	assert_int_equal(flock(held_fd, LOCK_EX), 0);
	tn_mem_free(&path);

	memset(w, 0, sizeof(w));
	w[0].ob = tn_outbox_create(&set);
	for (int i = 0; i < FM_THREADS; i++) {
		w[i].fx = fx;
		w[i].ob = w[0].ob;
		w[i].kind = plan[i].kind;
		w[i].tenant = plan[i].tenant;
		w[i].data = plan[i].kind == FM_TOO_LARGE ? boundary : small;
		pthread_create(&th[i], NULL, fm_worker_run, &w[i]);
	}
	for (int i = 0; i < FM_THREADS; i++)
		pthread_join(th[i], NULL);
	flock(held_fd, LOCK_UN);
	close(held_fd);

	for (int i = 0; i < FM_THREADS; i++) {
		if (w[i].kind == FM_GOOD) {
			if (w[i].failures != 0)
				fail_msg("%s: %d failures, first: %s", w[i].tenant,
					 w[i].failures, w[i].error);
			/* the held tenant's 1 s waits are not theirs */
			if (w[i].max_us >= 1000 * 1000)
				fail_msg("%s: an append took %lld us", w[i].tenant,
					 (long long)w[i].max_us);
			continue;
		}
		assert_int_equal(w[i].ok, 0);
		assert_non_null(strstr(w[i].error, w[i].kind == FM_HELD ? "still locked" :
				       w[i].kind == FM_BROKEN ? "not a sequence number" :
				       "event too large"));
		/* only the event's own fault is permanent */
		assert_int_equal(w[i].input_faults,
				 w[i].kind == FM_TOO_LARGE ? w[i].failures : 0);
	}
	assert_int_equal(count_entries(fx, "tmp"), 0);
	all = load_events_files(fx, &files);
	assert_int_equal(json_array_size(all), 3 * FM_PER_THREAD);
	/* the good events shared segments (with failing members left out) */
	assert_true(files < json_array_size(all));
	{
		/* acme continues from 9 without a gap: 10 .. 9 + 2 * PER */
		uint64_t seen[2 * FM_PER_THREAD] = { 0 };
		size_t i;
		json_t *ev;

		json_array_foreach(all, i, ev) {
			uint64_t s = (uint64_t)json_integer_value(json_object_get(ev, "sequence"));

			if (strcmp(json_string_value(json_object_get(ev, "tenant")), "acme") != 0)
				continue;
			assert_true(s >= 10 && s < 10 + 2 * FM_PER_THREAD);
			assert_int_equal(seen[s - 10]++, 0);
		}
	}
	assert_sequences(all, "globex", FM_PER_THREAD);
	text = seq_text(fx, "acme");
	assert_int_equal(strtoull(text, NULL, 10), 9 + 2 * FM_PER_THREAD);
	tn_mem_free(&text);
	text = seq_text(fx, "held");
	assert_string_equal(text, "");
	tn_mem_free(&text);
	text = seq_text(fx, "broken");
	assert_string_equal(text, "x\n");
	tn_mem_free(&text);
	json_decref(all);
	json_decref(small);
	json_decref(boundary);
	tn_outbox_destroy(&w[0].ob);
}

/* Another producer holds a tenant's lock for a while, then lets go:
 * the requests deferred meanwhile are all committed afterwards, in
 * order and without gaps, and the other tenant's go on meanwhile. */
#define LR_THREADS 8
#define LR_PER_THREAD 20

static void *lr_worker_run(void *arg)
{
	struct gc_worker *w = arg;
	json_t *data = json_object();
	char id[TN_OUTBOX_ID_SIZE];
	const char *error;
	uint64_t seq;

	for (int i = 0; i < 2 * LR_PER_THREAD; i++) {
		if (tn_outbox_append(w->ob, "test.release",
				     (i + w->index) % 2 == 0 ? "acme" : "globex",
				     data, id, &seq, &error) < 0) {
			if (w->failures++ == 0)
				snprintf(w->error, sizeof(w->error), "%s", error);
		} else {
			gc_check_returned(w, id, seq);
		}
	}
	json_decref(data);
	return NULL;
}

static void test_lock_released(void **state)
{
	struct fx *fx = *state;
	struct tn_outbox *ob = fx_outbox(fx, 0);
	struct gc_worker w[LR_THREADS];
	pthread_t th[LR_THREADS];
	char *path = fx_path(fx, "seq", "acme");
	int fd = open(path, O_RDWR | O_CREAT, 0660);
	json_t *all;

	assert_int_equal(flock(fd, LOCK_EX), 0);
	memset(w, 0, sizeof(w));
	for (int i = 0; i < LR_THREADS; i++) {
		w[i].ob = ob;
		w[i].fx = fx;
		w[i].index = i;
		pthread_create(&th[i], NULL, lr_worker_run, &w[i]);
	}
	/* the odd threads start with globex: one event each, then they
	 * wait for acme like the others */
	for (int i = 0; i < 500 && count_events(fx) < LR_THREADS / 2; i++)
		usleep(10000);
	usleep(100000);
	assert_int_equal(count_events(fx), LR_THREADS / 2);
	flock(fd, LOCK_UN);
	close(fd);
	for (int i = 0; i < LR_THREADS; i++)
		pthread_join(th[i], NULL);
	gc_verify(fx, w, LR_THREADS);
	for (int i = 0; i < LR_THREADS; i++) {
		if (w[i].failures != 0)
			fail_msg("thread %d: %d failures, first: %s", i, w[i].failures, w[i].error);
		assert_int_equal(w[i].missing, 0);
		assert_int_equal(w[i].wrong_seq, 0);
	}
	all = load_events(fx);
	assert_sequences(all, "acme", LR_THREADS * LR_PER_THREAD);
	assert_sequences(all, "globex", LR_THREADS * LR_PER_THREAD);
	assert_int_equal(count_entries(fx, "tmp"), 0);
	json_decref(all);
	tn_mem_free(&path);
	tn_outbox_destroy(&ob);
}

/* Several processes, each group-committing with several threads, on
 * the same tenants: the counter's flock still makes one sequence. */
#define PT_CHILDREN 3
#define PT_THREADS 4
#define PT_PER_THREAD 50

static void *pt_worker_run(void *arg)
{
	struct gc_worker *w = arg;
	json_t *data = json_pack("{s:i}", "pid", (int)getpid());
	char id[TN_OUTBOX_ID_SIZE];
	const char *error;
	uint64_t seq;

	for (int i = 0; i < PT_PER_THREAD; i++) {
		if (tn_outbox_append(w->ob, "test.process", gc_tenants[(w->index + i) % 2],
				     data, id, &seq, &error) < 0) {
			fprintf(stderr, "child %d: %s\n", (int)getpid(), error);
			w->failures++;
		}
	}
	json_decref(data);
	return NULL;
}

static void __attribute__((noreturn)) pt_child(struct fx *fx)
{
	struct gc_worker w[PT_THREADS];
	pthread_t th[PT_THREADS];
	int failures = 0;

	memset(w, 0, sizeof(w));
	w[0].ob = fx_outbox(fx, 0);
	for (int i = 0; i < PT_THREADS; i++) {
		w[i].ob = w[0].ob;
		w[i].index = i;
		pthread_create(&th[i], NULL, pt_worker_run, &w[i]);
	}
	for (int i = 0; i < PT_THREADS; i++) {
		pthread_join(th[i], NULL);
		failures += w[i].failures;
	}
	tn_outbox_destroy(&w[0].ob);
	_exit(failures == 0 ? 0 : 1);
}

static void test_processes_threads(void **state)
{
	struct fx *fx = *state;
	pid_t pids[PT_CHILDREN];
	json_t *all;
	int status;

	for (int i = 0; i < PT_CHILDREN; i++) {
		pids[i] = fork();
		assert_true(pids[i] >= 0);
		if (pids[i] == 0)
			pt_child(fx);
	}
	for (int i = 0; i < PT_CHILDREN; i++) {
		assert_int_equal(waitpid(pids[i], &status, 0), pids[i]);
		assert_true(WIFEXITED(status));
		assert_int_equal(WEXITSTATUS(status), 0);
	}
	all = load_events(fx);
	assert_sequences(all, gc_tenants[0], PT_CHILDREN * PT_THREADS * PT_PER_THREAD / 2);
	assert_sequences(all, gc_tenants[1], PT_CHILDREN * PT_THREADS * PT_PER_THREAD / 2);
	assert_int_equal(count_entries(fx, "tmp"), 0);
	json_decref(all);
}

/* A producer killed in the middle of group commits of several threads:
 * each tenant's events in new/ are exactly 1..K, the counter is at
 * least K and at most one per thread beyond, and appends go on. */
#define KILL_THREADS 8

static void *kill_worker_run(void *arg)
{
	struct gc_worker *w = arg;
	json_t *data = json_object();
	char id[TN_OUTBOX_ID_SIZE];
	const char *error;
	uint64_t seq;

	for (int i = 0;; i++) {
		if (tn_outbox_append(w->ob, "test.kill", gc_tenants[(w->index + i) % 3],
				     data, id, &seq, &error) < 0) {
			fprintf(stderr, "%s\n", error);
			_exit(1);
		}
	}
	return NULL;
}

static void __attribute__((noreturn)) kill_child(struct fx *fx, int ready_fd)
{
	struct gc_worker w[KILL_THREADS];
	pthread_t th[KILL_THREADS];

	memset(w, 0, sizeof(w));
	w[0].ob = fx_outbox(fx, 0);
	append_seq(w[0].ob, "acme");
	if (write(ready_fd, "x", 1) != 1)
		_exit(1);
	for (int i = 0; i < KILL_THREADS; i++) {
		w[i].ob = w[0].ob;
		w[i].index = i;
		pthread_create(&th[i], NULL, kill_worker_run, &w[i]);
	}
	for (;;)
		pause();
}

static void test_crash_threads(void **state)
{
	struct fx *fx = *state;
	struct tn_outbox *ob;
	int pipefd[2], status;
	char c, *text;
	json_t *all;
	pid_t pid;

	assert_int_equal(pipe(pipefd), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		close(pipefd[0]);
		kill_child(fx, pipefd[1]);
	}
	close(pipefd[1]);
	assert_int_equal(read(pipefd[0], &c, 1), 1);
	close(pipefd[0]);
	usleep(150000);
	assert_int_equal(kill(pid, SIGKILL), 0);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFSIGNALED(status));

	all = load_events(fx);
	ob = fx_outbox(fx, 0);
	for (int t = 0; t < 3; t++) {
		size_t k = 0, i;
		uint64_t counter;
		json_t *ev;

		json_array_foreach(all, i, ev)
			k += strcmp(json_string_value(json_object_get(ev, "tenant")),
				    gc_tenants[t]) == 0;
		assert_sequences(all, gc_tenants[t], k);
		text = seq_text(fx, gc_tenants[t]);
		counter = strtoull(text, NULL, 10);
		tn_mem_free(&text);
		if (counter < k || counter > k + KILL_THREADS)
			fail_msg("%s: counter %" PRIu64 " after %zu events", gc_tenants[t],
				 counter, k);
		assert_int_equal(append_seq(ob, gc_tenants[t]), counter + 1);
	}
	assert_true(count_entries(fx, "tmp") <= KILL_THREADS);
	json_decref(all);
	tn_outbox_destroy(&ob);
}

/* --- origin ------------------------------------------------------------------ */

static const char *event_origin(struct fx *fx, const char *id, char *buf, size_t size)
{
	char name[64];
	json_t *ev;

	snprintf(name, sizeof(name), "%s.json", id);
	ev = load_event(fx, name);
	snprintf(buf, size, "%s", json_string_value(json_object_get(ev, "origin")));
	json_decref(ev);
	return buf;
}

static void test_origin(void **state)
{
	struct fx *fx = *state;
	struct tn_outbox_settings set = { .dir = fx->dir };
	struct tn_outbox *ob;
	json_t *data = json_object();
	char host[256] = "", id[TN_OUTBOX_ID_SIZE], buf[128];
	const char *error;
	uint64_t seq;

	/* default: the host name */
	assert_int_equal(gethostname(host, sizeof(host)), 0);
	ob = tn_outbox_create(&set);
	assert_string_equal(tn_outbox_origin(ob), host);
	assert_int_equal(tn_outbox_check(ob, &error), 0);
	append_ok(ob, "a.b", "acme", data, id, &seq);
	assert_string_equal(event_origin(fx, id, buf, sizeof(buf)), host);
	tn_outbox_destroy(&ob);

	/* "" is the default too; an explicit name is used as given */
	set.origin = "";
	ob = tn_outbox_create(&set);
	assert_string_equal(tn_outbox_origin(ob), host);
	tn_outbox_destroy(&ob);
	set.origin = "MX-2.node.example";
	ob = tn_outbox_create(&set);
	append_ok(ob, "a.b", "acme", data, id, &seq);
	assert_int_equal(seq, 2);
	assert_string_equal(event_origin(fx, id, buf, sizeof(buf)), "MX-2.node.example");
	tn_outbox_destroy(&ob);
	json_decref(data);
}

static void test_origin_invalid(void **state)
{
	struct fx *fx = *state;
	static const char *const bad[] = {
		"-node", ".node", "node_1", "node 1", "nöde", "node/1", "node\"1",
		"a123456789b123456789c123456789d123456789e123456789f123456789ghij",
	};
	struct tn_outbox_settings set = { .dir = fx->dir };
	json_t *data = json_object();
	char id[TN_OUTBOX_ID_SIZE];
	const char *error;
	uint64_t seq;

	assert_int_equal(strlen(bad[7]), TN_OUTBOX_ORIGIN_MAX + 1);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct tn_outbox *ob;

		set.origin = bad[i];
		ob = tn_outbox_create(&set);
		assert_int_equal(tn_outbox_check(ob, &error), -1);
		assert_non_null(strstr(error, "invalid origin"));
		assert_non_null(strstr(error, "outbox_origin"));
		assert_int_equal(tn_outbox_append(ob, "a.b", "acme", data, id, &seq, &error), -1);
		if (strstr(error, "invalid origin") == NULL)
			fail_msg("origin '%s': error '%s'", bad[i], error);
		tn_outbox_destroy(&ob);
	}
	assert_int_equal(count_entries(fx, "tmp"), 0);
	assert_int_equal(count_events(fx), 0);
	assert_int_equal(count_entries(fx, "seq"), 0);

	/* the longest and shortest names are fine */
	set.origin = "a123456789b123456789c123456789d123456789e123456789f123456789ghi";
	{
		struct tn_outbox *ob = tn_outbox_create(&set);

		append_ok(ob, "a.b", "acme", data, id, &seq);
		tn_outbox_destroy(&ob);
		set.origin = "7";
		ob = tn_outbox_create(&set);
		append_ok(ob, "a.b", "acme", data, id, &seq);
		tn_outbox_destroy(&ob);
	}
	json_decref(data);
}

/* outbox_origin and outbox_sync from tenantmail.conf. */
static void test_origin_conf(void **state)
{
	struct fx *fx = *state;
	const struct tn_conf_param *const tables[] = { tn_outbox_params, NULL };
	struct tn_conf *conf = tn_conf_create("test", tables);
	struct tn_outbox *ob;
	json_t *data = json_object();
	char id[TN_OUTBOX_ID_SIZE], buf[128], *text;
	const char *error;
	uint64_t seq;

	text = tn_mem_printf("outbox_dir = %s\noutbox_origin = node-7\noutbox_sync = fsync\n",
			     fx->dir);
	assert_int_equal(tn_conf_load_string(conf, "t.conf", text, &error), 0);
	ob = tn_outbox_create_conf(conf);
	append_ok(ob, "a.b", "acme", data, id, &seq);
	assert_string_equal(event_origin(fx, id, buf, sizeof(buf)), "node-7");
	tn_outbox_destroy(&ob);
	assert_int_equal(tn_conf_set(conf, "outbox_sync", "fdatasync", &error), -1);
	assert_int_equal(tn_conf_set(conf, "outbox_origin", "bad_name", &error), 0);
	ob = tn_outbox_create_conf(conf);
	assert_int_equal(tn_outbox_check(ob, &error), -1);
	assert_non_null(strstr(error, "bad_name"));
	tn_outbox_destroy(&ob);
	tn_mem_free(&text);
	json_decref(data);
	tn_conf_destroy(&conf);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_envelope, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_ids_increasing, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_sequence_per_tenant, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_bad_input, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_bad_counter, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_missing_dirs, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_limits, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_umask, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_reused_files, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_threads, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_processes, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_crash, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_lock_timeout, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_check, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_group_commit, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_group_commit_fsync, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_group_commit_own_tenants, fx_setup,
						fx_teardown),
		cmocka_unit_test_setup_teardown(test_failing_members, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_lock_released, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_processes_threads, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_crash_threads, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_origin, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_origin_invalid, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_origin_conf, fx_setup, fx_teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
