/*++
 * NAME
 *	tn-bench-hookd 1
 * SUMMARY
 *	the producer side of bench/hookd: timed outbox appends, and the
 *	plain libcurl ceiling
 * SYNOPSIS
 *	tn-bench-hookd append -c config [-o name=value]... -t threads -n events
 *		[-T tenants] [-r records-file]
 *	tn-bench-hookd ceiling -u url -s whsec_... [-s ...] -D dir -n count
 *		[-k threads]
 * DESCRIPTION
 *	A benchmark tool, not installed; bench/hookd drives it. Each mode
 *	prints one line of JSON on stdout.
 *
 *	append: threads threads each append events events through
 *	tn_outbox_append() to the outbox of the configuration (outbox_*
 *	parameters; -o overrides), all starting together. Event i of
 *	thread t is a "mailbox.created" event of tenant bench<(t+i) mod
 *	tenants> (-T, default 16) with data shaped like the example of
 *	docs/events.md (about 400 bytes encoded). The data is built before
 *	the clock of each append starts. Prints
 *
 *	    {"mode":"append","threads","events","tenants","ok","errors",
 *	     "elapsed_s","events_per_s","start_us","end_us",
 *	     "mean_us","p50_us","p90_us","p99_us","max_us"}
 *
 *	events_per_s is ok / elapsed (first start to last return);
 *	start_us and end_us are CLOCK_REALTIME microseconds of those two
 *	instants; the percentiles are of each append's own duration
 *	(CLOCK_MONOTONIC). With -r every appended event is written to
 *	records-file as "<id> <start_us> <end_us>" (CLOCK_REALTIME
 *	microseconds before the call and after it returned), for the
 *	event-to-receipt latency.
 *
 *	ceiling: the floor tn-hookd is measured against. Reads every
 *	"<id>.json" in dir (an outbox's new/: segments, one event per line,
 *	the bodies tn-hookd would send) and POSTs count requests to url
 *	from -k threads (default 1),
 *	each a plain libcurl easy handle reused for all its requests
 *	(keep-alive), one request at a time. Request i sends body i mod
 *	bodies (an event's line without its newline) with the headers a
 *	Standard Webhooks sender sends (docs/events.md), as tn-hookd
 *	sends them: Content-Type, an empty Expect, a User-Agent, webhook-id, webhook-timestamp (now) and webhook-signature computed
 *	for this request with tn_webhook_sign() (OpenSSL HMAC-SHA256) for
 *	every -s secret. Prints
 *
 *	    {"mode":"ceiling","threads","requests","bodies","body_bytes",
 *	     "ok","errors","elapsed_s","requests_per_s",
 *	     "mean_us","p50_us","p90_us","p99_us","max_us"}
 *
 *	A request is ok when it was answered 2xx.
 * DIAGNOSTICS
 *	Exit 0: every operation succeeded; 1: some failed (the JSON line is
 *	printed anyway, the last error on stderr); 2: bad usage or setup
 *	failure.
 *--*/
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <jansson.h>

#include "tn-conf.h"
#include "tn-hook-spool.h"
#include "tn-log.h"
#include "tn-mem.h"
#include "tn-outbox.h"
#include "tn-webhook.h"

#define BENCH_NAME "tn-bench-hookd"
#define BENCH_EXIT_USAGE 2
#define BENCH_EVENT_TYPE "mailbox.created"
#define BENCH_ERROR_MAX 256
#define BENCH_BODIES_MAX 1000000
#define BENCH_TIMEOUT_MS 15000L
/* As long as tn-hookd's, so that both send the same bytes. */
#define BENCH_USER_AGENT "tenantmail-bench/" PACKAGE_VERSION

enum bench_mode { BENCH_APPEND, BENCH_CEILING };

struct bench_opts {
	enum bench_mode mode;
	long threads;
	long n;			/* append: per thread; ceiling: in all */
	long tenants;
	const char *records;
	const char *url;
	const char *dir;
	struct tn_webhook_secret secrets[TN_WEBHOOK_SECRETS_MAX];
	unsigned nsecrets;
	bool have_conf;
};

/* What every worker thread has. */
struct bench_worker {
	unsigned index;
	pthread_t thread;
	void *shared;
	int64_t *lat_ns;	/* one per operation done */
	size_t nlat;
	uint64_t errors;
	char last_error[BENCH_ERROR_MAX];
};

/* --- time and statistics ------------------------------------------------------- */

static int64_t bench_mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int64_t bench_wall_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static int bench_cmp_ns(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

	return (x > y) - (x < y);
}

/* Nearest rank: the smallest sample with at least p of them at or below. */
static double bench_pct_us(const int64_t *sorted, size_t n, double p)
{
	size_t rank = (size_t)(p * (double)n + 0.999999);

	if (n == 0)
		return 0;
	rank = rank < 1 ? 1 : rank > n ? n : rank;
	return (double)sorted[rank - 1] / 1000.0;
}

/* The workers' latencies, merged and sorted; their count in *n_r. */
static int64_t *bench_merge(struct bench_worker *w, long nw, size_t *n_r)
{
	size_t n = 0;
	int64_t *all;

	for (long i = 0; i < nw; i++)
		n += w[i].nlat;
	all = tn_mem_calloc(n > 0 ? n : 1, sizeof(int64_t));
	n = 0;
	for (long i = 0; i < nw; i++) {
		memcpy(all + n, w[i].lat_ns, w[i].nlat * sizeof(int64_t));
		n += w[i].nlat;
	}
	qsort(all, n, sizeof(int64_t), bench_cmp_ns);
	*n_r = n;
	return all;
}

/* Latency statistics and the error count of all workers into obj. */
static void bench_add_stats(json_t *obj, struct bench_worker *w, long nw)
{
	size_t n;
	int64_t *all = bench_merge(w, nw, &n);
	uint64_t errors = 0;
	double sum = 0;

	for (size_t i = 0; i < n; i++)
		sum += (double)all[i];
	for (long i = 0; i < nw; i++) {
		errors += w[i].errors;
		if (w[i].errors > 0)
			fprintf(stderr, "%s: thread %ld: %" PRIu64 " failed; last: %s\n",
				BENCH_NAME, i, w[i].errors, w[i].last_error);
	}
	json_object_set_new(obj, "ok", json_integer((json_int_t)n));
	json_object_set_new(obj, "errors", json_integer((json_int_t)errors));
	json_object_set_new(obj, "mean_us", json_real(n > 0 ? sum / (double)n / 1000.0 : 0));
	json_object_set_new(obj, "p50_us", json_real(bench_pct_us(all, n, 0.50)));
	json_object_set_new(obj, "p90_us", json_real(bench_pct_us(all, n, 0.90)));
	json_object_set_new(obj, "p99_us", json_real(bench_pct_us(all, n, 0.99)));
	json_object_set_new(obj, "max_us", json_real(n > 0 ? (double)all[n - 1] / 1000.0 : 0));
	tn_mem_free(&all);
}

static void bench_print(json_t *obj)
{
	json_dumpf(obj, stdout, JSON_COMPACT | JSON_PRESERVE_ORDER);
	fputc('\n', stdout);
	fflush(stdout);
	json_decref(obj);
}

static uint64_t bench_total_errors(const struct bench_worker *w, long nw)
{
	uint64_t errors = 0;

	for (long i = 0; i < nw; i++)
		errors += w[i].errors;
	return errors;
}

/* Start nw threads on fn, wait for them all; elapsed ns in *elapsed_r,
 * CLOCK_REALTIME of the start and the end in *start_us_r, *end_us_r. */
static void bench_run_workers(struct bench_worker *w, long nw, void *(*fn)(void *),
			      pthread_barrier_t *go, int64_t *elapsed_r,
			      int64_t *start_us_r, int64_t *end_us_r)
{
	int64_t t0;

	for (long i = 0; i < nw; i++) {
		w[i].index = (unsigned)i;
		if (pthread_create(&w[i].thread, NULL, fn, &w[i]) != 0) {
			fprintf(stderr, "%s: cannot start a thread\n", BENCH_NAME);
			exit(BENCH_EXIT_USAGE);
		}
	}
	t0 = bench_mono_ns();
	*start_us_r = bench_wall_us();
	pthread_barrier_wait(go);
	for (long i = 0; i < nw; i++)
		pthread_join(w[i].thread, NULL);
	*elapsed_r = bench_mono_ns() - t0;
	*end_us_r = bench_wall_us();
}

/* --- append ------------------------------------------------------------------------ */

struct bench_event {
	char id[TN_OUTBOX_ID_SIZE];
	int64_t start_us, end_us;
};

struct bench_append {
	const struct bench_opts *opts;
	struct tn_outbox *ob;
	char **tenants;
	pthread_barrier_t go;
	struct bench_event **events;	/* per thread */
};

/* Data like docs/events.md's mailbox.created example. */
static json_t *bench_event_data(const char *tenant, unsigned thread, long i)
{
	char addr[128], actor[192];

	snprintf(addr, sizeof(addr), "user%u-%ld@%s.example", thread, i, tenant);
	snprintf(actor, sizeof(actor), "cn=admin,tnTenantId=%s,ou=tenants,dc=example,dc=net",
		 tenant);
	return json_pack("{ss ss sn ss sn sn sn sn s{ss ss}}",
			 "address", addr, "name", "Bench User", "description",
			 "status", "active", "quota_bytes", "max_message_bytes",
			 "send_rate_per_hour", "pool",
			 "actor", "kind", "tenant_admin", "id", actor);
}

static void bench_append_one(struct bench_append *ap, struct bench_worker *w, long i)
{
	const char *tenant = ap->tenants[((long)w->index + i) % ap->opts->tenants];
	struct bench_event *ev = &ap->events[w->index][w->nlat];
	json_t *data = bench_event_data(tenant, w->index, i);
	const char *error;
	uint64_t seq;
	int64_t t0;
	int rc;

	ev->start_us = bench_wall_us();
	t0 = bench_mono_ns();
	rc = tn_outbox_append(ap->ob, BENCH_EVENT_TYPE, tenant, data, ev->id, &seq, &error);
	w->lat_ns[w->nlat] = bench_mono_ns() - t0;
	ev->end_us = bench_wall_us();
	json_decref(data);
	if (rc == 0) {
		w->nlat++;
		return;
	}
	w->errors++;
	snprintf(w->last_error, sizeof(w->last_error), "%s", error);
}

static void *bench_append_thread(void *arg)
{
	struct bench_worker *w = arg;
	struct bench_append *ap = w->shared;

	pthread_barrier_wait(&ap->go);
	for (long i = 0; i < ap->opts->n; i++)
		bench_append_one(ap, w, i);
	return NULL;
}

static int bench_write_events(const struct bench_append *ap, const struct bench_worker *w)
{
	FILE *fp = fopen(ap->opts->records, "w");

	if (fp == NULL) {
		fprintf(stderr, "%s: %s: %s\n", BENCH_NAME, ap->opts->records, strerror(errno));
		return -1;
	}
	for (long t = 0; t < ap->opts->threads; t++) {
		for (size_t i = 0; i < w[t].nlat; i++) {
			const struct bench_event *ev = &ap->events[t][i];

			fprintf(fp, "%s %" PRId64 " %" PRId64 "\n", ev->id, ev->start_us,
				ev->end_us);
		}
	}
	if (ferror(fp) || fclose(fp) != 0) {
		fprintf(stderr, "%s: %s: write failed\n", BENCH_NAME, ap->opts->records);
		return -1;
	}
	return 0;
}

static void bench_append_report(const struct bench_append *ap, struct bench_worker *w,
				int64_t elapsed_ns, int64_t start_us, int64_t end_us)
{
	const struct bench_opts *o = ap->opts;
	uint64_t ok = (uint64_t)o->threads * (uint64_t)o->n - bench_total_errors(w, o->threads);
	double secs = (double)elapsed_ns / 1e9;
	json_t *obj = json_pack("{ss si si si}", "mode", "append", "threads", (int)o->threads,
				"events", (int)(o->threads * o->n), "tenants", (int)o->tenants);

	bench_add_stats(obj, w, o->threads);
	json_object_set_new(obj, "elapsed_s", json_real(secs));
	json_object_set_new(obj, "events_per_s", json_real((double)ok / secs));
	json_object_set_new(obj, "start_us", json_integer(start_us));
	json_object_set_new(obj, "end_us", json_integer(end_us));
	bench_print(obj);
}

static void bench_append_setup(struct bench_append *ap, struct bench_worker *w)
{
	const struct bench_opts *o = ap->opts;

	ap->tenants = tn_mem_calloc((size_t)o->tenants, sizeof(char *));
	for (long i = 0; i < o->tenants; i++)
		ap->tenants[i] = tn_mem_printf("bench%ld", i);
	ap->events = tn_mem_calloc((size_t)o->threads, sizeof(*ap->events));
	for (long t = 0; t < o->threads; t++) {
		ap->events[t] = tn_mem_calloc((size_t)o->n, sizeof(struct bench_event));
		w[t].lat_ns = tn_mem_calloc((size_t)o->n, sizeof(int64_t));
		w[t].shared = ap;
	}
	pthread_barrier_init(&ap->go, NULL, (unsigned)o->threads + 1);
}

static void bench_append_free(struct bench_append *ap, struct bench_worker *w)
{
	for (long i = 0; i < ap->opts->tenants; i++)
		tn_mem_free(&ap->tenants[i]);
	for (long t = 0; t < ap->opts->threads; t++) {
		tn_mem_free(&ap->events[t]);
		tn_mem_free(&w[t].lat_ns);
	}
	tn_mem_free(&ap->tenants);
	tn_mem_free(&ap->events);
	pthread_barrier_destroy(&ap->go);
}

static int bench_append_mode(const struct bench_opts *o, const struct tn_conf *conf)
{
	struct bench_append ap = { .opts = o };
	struct bench_worker *w;
	const char *error;
	int64_t elapsed, start_us, end_us;
	int ret;

	ap.ob = tn_outbox_create_conf(conf);
	if (tn_outbox_check(ap.ob, &error) < 0) {
		fprintf(stderr, "%s: %s\n", BENCH_NAME, error);
		tn_outbox_destroy(&ap.ob);
		return BENCH_EXIT_USAGE;
	}
	w = tn_mem_calloc((size_t)o->threads, sizeof(*w));
	bench_append_setup(&ap, w);
	bench_run_workers(w, o->threads, bench_append_thread, &ap.go, &elapsed,
			  &start_us, &end_us);
	bench_append_report(&ap, w, elapsed, start_us, end_us);
	ret = bench_total_errors(w, o->threads) > 0 ? 1 : 0;
	if (o->records != NULL && bench_write_events(&ap, w) < 0)
		ret = 1;
	bench_append_free(&ap, w);
	tn_mem_free(&w);
	tn_outbox_destroy(&ap.ob);
	return ret;
}

/* --- ceiling ----------------------------------------------------------------------- */

struct bench_body {
	char id[TN_HOOK_ID_SIZE];
	char *data;
	size_t len;
};

struct bench_ceiling {
	const struct bench_opts *opts;
	struct bench_body *bodies;
	size_t nbodies;
	pthread_barrier_t go;
};

static size_t bench_discard(char *ptr, size_t size, size_t nmemb, void *arg)
{
	(void)ptr;
	(void)arg;
	return size * nmemb;
}

static struct curl_slist *bench_headers(const struct bench_ceiling *c,
					const struct bench_body *b)
{
	char sig[TN_WEBHOOK_HEADER_SIZE], line[TN_WEBHOOK_HEADER_SIZE + 64];
	int64_t ts = (int64_t)time(NULL);
	struct curl_slist *h;

	tn_webhook_sign(c->opts->secrets, c->opts->nsecrets, b->id, ts, b->data, b->len,
			sig, sizeof(sig));
	h = curl_slist_append(NULL, "Content-Type: application/json");
	h = curl_slist_append(h, "Expect:");
	snprintf(line, sizeof(line), "webhook-id: %s", b->id);
	h = curl_slist_append(h, line);
	snprintf(line, sizeof(line), "webhook-timestamp: %" PRId64, ts);
	h = curl_slist_append(h, line);
	snprintf(line, sizeof(line), "webhook-signature: %s", sig);
	return curl_slist_append(h, line);
}

static void bench_post(CURL *h, struct bench_ceiling *c, struct bench_worker *w, long i)
{
	const struct bench_body *b = &c->bodies[(size_t)i % c->nbodies];
	struct curl_slist *headers = bench_headers(c, b);
	int64_t t0 = bench_mono_ns();
	long status = 0;
	CURLcode rc;

	curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);
	curl_easy_setopt(h, CURLOPT_POSTFIELDS, b->data);
	curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)b->len);
	rc = curl_easy_perform(h);
	w->lat_ns[w->nlat] = bench_mono_ns() - t0;
	curl_slist_free_all(headers);
	curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
	if (rc == CURLE_OK && status >= 200 && status < 300) {
		w->nlat++;
		return;
	}
	w->errors++;
	snprintf(w->last_error, sizeof(w->last_error), "%s (HTTP %ld)",
		 rc != CURLE_OK ? curl_easy_strerror(rc) : "not 2xx", status);
}

static void *bench_ceiling_thread(void *arg)
{
	struct bench_worker *w = arg;
	struct bench_ceiling *c = w->shared;
	CURL *h = curl_easy_init();

	curl_easy_setopt(h, CURLOPT_URL, c->opts->url);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, bench_discard);
	curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, 5000L);
	curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, BENCH_TIMEOUT_MS);
	curl_easy_setopt(h, CURLOPT_USERAGENT, BENCH_USER_AGENT);
	pthread_barrier_wait(&c->go);
	for (long i = (long)w->index; i < c->opts->n; i += c->opts->threads)
		bench_post(h, c, w, i);
	curl_easy_cleanup(h);
	return NULL;
}

/* "<36-character id>.json" */
static bool bench_body_name(const char *name)
{
	size_t len = strlen(name);

	return len == TN_HOOK_ID_SIZE - 1 + 5 && strcmp(name + len - 5, ".json") == 0;
}

/* The events of one file of new/ (a segment: one event per line, as
 * the outbox writes them, {"id":"<id>",...) become bodies, each without
 * its newline. */
static int bench_read_bodies(struct bench_ceiling *c, const char *name)
{
	char *path = tn_mem_printf("%s/%s", c->opts->dir, name), *buf, *p, *nl;
	FILE *fp = fopen(path, "r");
	size_t cap = TN_OUTBOX_SEGMENT_MAX + 1, len;

	if (fp == NULL) {
		fprintf(stderr, "%s: %s: %s\n", BENCH_NAME, path, strerror(errno));
		tn_mem_free(&path);
		return -1;
	}
	buf = tn_mem_alloc(cap);
	len = fread(buf, 1, cap, fp);
	fclose(fp);
	for (p = buf; p < buf + len && c->nbodies < BENCH_BODIES_MAX; p = nl + 1) {
		struct bench_body *b = &c->bodies[c->nbodies];

		if ((nl = memchr(p, '\n', (size_t)(buf + len - p))) == NULL ||
		    nl - p < 7 + TN_HOOK_ID_SIZE || strncmp(p, "{\"id\":\"", 7) != 0) {
			fprintf(stderr, "%s: %s: not an outbox segment\n", BENCH_NAME, path);
			break;
		}
		b->len = (size_t)(nl - p);
		b->data = tn_mem_alloc(b->len + 1);
		memcpy(b->data, p, b->len);
		memcpy(b->id, p + 7, TN_HOOK_ID_SIZE - 1);
		b->id[TN_HOOK_ID_SIZE - 1] = '\0';
		c->nbodies++;
	}
	tn_mem_free(&buf);
	tn_mem_free(&path);
	return p >= buf + len || c->nbodies == BENCH_BODIES_MAX ? 0 : -1;
}

static int bench_load_bodies(struct bench_ceiling *c)
{
	DIR *d = opendir(c->opts->dir);
	struct dirent *de;
	int ret = 0;

	if (d == NULL) {
		fprintf(stderr, "%s: %s: %s\n", BENCH_NAME, c->opts->dir, strerror(errno));
		return -1;
	}
	c->bodies = tn_mem_calloc(BENCH_BODIES_MAX, sizeof(*c->bodies));
	while (ret == 0 && c->nbodies < BENCH_BODIES_MAX && (de = readdir(d)) != NULL) {
		if (bench_body_name(de->d_name))
			ret = bench_read_bodies(c, de->d_name);
	}
	closedir(d);
	if (ret == 0 && c->nbodies == 0) {
		fprintf(stderr, "%s: %s: no <id>.json files\n", BENCH_NAME, c->opts->dir);
		ret = -1;
	}
	return ret;
}

static void bench_ceiling_report(const struct bench_ceiling *c, struct bench_worker *w,
				 int64_t elapsed_ns)
{
	const struct bench_opts *o = c->opts;
	uint64_t ok = (uint64_t)o->n - bench_total_errors(w, o->threads);
	double secs = (double)elapsed_ns / 1e9, bytes = 0;
	json_t *obj;

	for (size_t i = 0; i < c->nbodies; i++)
		bytes += (double)c->bodies[i].len;
	obj = json_pack("{ss si si si sf}", "mode", "ceiling", "threads", (int)o->threads,
			"requests", (int)o->n, "bodies", (int)c->nbodies,
			"body_bytes", bytes / (double)c->nbodies);
	bench_add_stats(obj, w, o->threads);
	json_object_set_new(obj, "elapsed_s", json_real(secs));
	json_object_set_new(obj, "requests_per_s", json_real((double)ok / secs));
	bench_print(obj);
}

static void bench_ceiling_free(struct bench_ceiling *c)
{
	for (size_t i = 0; i < c->nbodies; i++)
		tn_mem_free(&c->bodies[i].data);
	tn_mem_free(&c->bodies);
}

static int bench_ceiling_mode(const struct bench_opts *o)
{
	struct bench_ceiling c = { .opts = o };
	struct bench_worker *w;
	int64_t elapsed, start_us, end_us;
	int ret;

	if (bench_load_bodies(&c) < 0) {
		bench_ceiling_free(&c);
		return BENCH_EXIT_USAGE;
	}
	w = tn_mem_calloc((size_t)o->threads, sizeof(*w));
	for (long t = 0; t < o->threads; t++) {
		w[t].lat_ns = tn_mem_calloc((size_t)(o->n / o->threads + 1), sizeof(int64_t));
		w[t].shared = &c;
	}
	pthread_barrier_init(&c.go, NULL, (unsigned)o->threads + 1);
	bench_run_workers(w, o->threads, bench_ceiling_thread, &c.go, &elapsed,
			  &start_us, &end_us);
	bench_ceiling_report(&c, w, elapsed);
	ret = bench_total_errors(w, o->threads) > 0 ? 1 : 0;
	pthread_barrier_destroy(&c.go);
	for (long t = 0; t < o->threads; t++)
		tn_mem_free(&w[t].lat_ns);
	tn_mem_free(&w);
	bench_ceiling_free(&c);
	return ret;
}

/* --- command line -------------------------------------------------------------------- */

static void bench_usage(void)
{
	fprintf(stderr,
		"usage: %s append -c config [-o name=value]... -t threads -n events\n"
		"\t\t[-T tenants] [-r records-file]\n"
		"       %s ceiling -u url -s whsec_... [-s ...] -D dir -n count [-k threads]\n",
		BENCH_NAME, BENCH_NAME);
}

static int bench_number(const char *text, long min, long *value_r)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(text, &end, 10);
	if (errno != 0 || end == text || *end != '\0' || v < min || v > 100000000L) {
		fprintf(stderr, "%s: bad number '%s' (at least %ld)\n", BENCH_NAME, text, min);
		return -1;
	}
	*value_r = v;
	return 0;
}

static int bench_override(struct tn_conf *conf, char *arg)
{
	char *eq = strchr(arg, '=');
	const char *error;

	if (eq == NULL) {
		fprintf(stderr, "%s: -o %s: expected name=value\n", BENCH_NAME, arg);
		return -1;
	}
	*eq = '\0';
	if (tn_conf_set(conf, arg, eq + 1, &error) < 0) {
		fprintf(stderr, "%s: %s\n", BENCH_NAME, error);
		return -1;
	}
	return 0;
}

static int bench_add_secret(struct bench_opts *o, const char *text)
{
	const char *error;

	if (o->nsecrets == TN_WEBHOOK_SECRETS_MAX) {
		fprintf(stderr, "%s: at most %d secrets\n", BENCH_NAME, TN_WEBHOOK_SECRETS_MAX);
		return -1;
	}
	if (tn_webhook_secret_parse(text, &o->secrets[o->nsecrets], &error) < 0) {
		fprintf(stderr, "%s: -s: %s\n", BENCH_NAME, error);
		return -1;
	}
	o->nsecrets++;
	return 0;
}

static int bench_load_conf(struct tn_conf *conf, struct bench_opts *o, const char *path)
{
	const char *error;

	if (tn_conf_load_file(conf, path, &error) < 0) {
		fprintf(stderr, "%s: %s\n", BENCH_NAME, error);
		return -1;
	}
	o->have_conf = true;
	return 0;
}

static int bench_option(int c, struct tn_conf *conf, struct bench_opts *o)
{
	switch (c) {
	case 'c':
		return bench_load_conf(conf, o, optarg);
	case 'o':
		return bench_override(conf, optarg);
	case 't':
	case 'k':
		return bench_number(optarg, 1, &o->threads);
	case 'n':
		return bench_number(optarg, 1, &o->n);
	case 'T':
		return bench_number(optarg, 1, &o->tenants);
	case 'r':
		o->records = optarg;
		return 0;
	case 'u':
		o->url = optarg;
		return 0;
	case 's':
		return bench_add_secret(o, optarg);
	case 'D':
		o->dir = optarg;
		return 0;
	default:
		return -1;
	}
}

static bool bench_complete(const struct bench_opts *o)
{
	if (o->n == 0)
		return false;
	if (o->mode == BENCH_APPEND)
		return o->have_conf;
	return o->url != NULL && o->dir != NULL && o->nsecrets > 0;
}

/* Options may come before and after the mode (GNU getopt permutes). */
static int bench_parse(int argc, char **argv, struct tn_conf *conf, struct bench_opts *o)
{
	int c;

	while ((c = getopt(argc, argv, "c:o:t:k:n:T:r:u:s:D:")) != -1) {
		if (bench_option(c, conf, o) < 0)
			return -1;
	}
	if (optind + 1 != argc)
		return -1;
	if (strcmp(argv[optind], "append") == 0)
		o->mode = BENCH_APPEND;
	else if (strcmp(argv[optind], "ceiling") == 0)
		o->mode = BENCH_CEILING;
	else
		return -1;
	return bench_complete(o) ? 0 : -1;
}

int main(int argc, char **argv)
{
	/* tn-hookd's parameters belong in a [tn-hookd] section: not read here. */
	static const struct tn_conf_param *const tables[] = { tn_outbox_params, NULL };
	struct tn_conf *conf = tn_conf_create(BENCH_NAME, tables);
	struct bench_opts opts = { .threads = 1, .tenants = 16 };
	int ret = BENCH_EXIT_USAGE;

	tn_log_init(BENCH_NAME, TN_LOG_TO_STDERR, LOG_MAIL);
	if (bench_parse(argc, argv, conf, &opts) < 0) {
		bench_usage();
	} else if (opts.mode == BENCH_APPEND) {
		ret = bench_append_mode(&opts, conf);
	} else if (curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK) {
		ret = bench_ceiling_mode(&opts);
		curl_global_cleanup();
	}
	tn_conf_destroy(&conf);
	return ret;
}
