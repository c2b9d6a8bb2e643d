/*++
 * NAME
 *	tn-probe 1
 * SUMMARY
 *	drive the lookup library from integration tests
 * SYNOPSIS
 *	tn-probe -c config [-o name=value]... resolve ADDRESS...
 *	tn-probe -c config ... serve
 *	tn-probe -c config ... storm THREADS ADDRESS
 *	tn-probe -c config ... event COUNT TIMEOUT_MS ADDRESS_PREFIX
 * DESCRIPTION
 *	A test tool, not installed. Every answer is one JSON line.
 *
 *	resolve: one blocking resolve per address (no in-process cache).
 *	serve: a long-lived process with the in-process cache and the
 *	invalidation subscriber, reading commands from stdin:
 *	"resolve ADDRESS", "usage ADDRESS" (tn_lookup_resolve_usage: the
 *	answer, and "usage" with the counters read in the lookup's round
 *	trip, or "usage":null), "parallel ADDRESS...", "stats", "quit".
 *	storm: THREADS threads resolve ADDRESS at the same moment.
 *	event: a libevent loop with a 1 ms timer resolves COUNT addresses
 *	(prefix + number + "@" domain part of the prefix) through the
 *	libevent adapter and reports the largest gap between ticks.
 *--*/
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <unistd.h>

#include <event2/event.h>
#include <jansson.h>

#include "tn-conf.h"
#include "tn-dir.h"
#include "tn-log.h"
#include "tn-lookup-event.h"
#include "tn-lookup.h"
#include "tn-mem.h"

static const char *const probe_results[] = { "tempfail", "notfound", "found" };

static void probe_print(const char *query, enum tn_result rc, struct tn_account *acct,
			const char *error, int64_t us)
{
	char safe[TN_LOG_VALUE_MAX];
	json_t *o = json_pack("{s:s,s:s,s:f}", "query",
			      tn_log_sanitize(safe, sizeof(safe), query, strlen(query)), "result",
			      probe_results[rc + 1], "ms", (double)us / 1000.0);
	char *text;

	if (acct != NULL) {
		text = tn_account_to_json(acct, true);
		json_object_set_new(o, "account", json_loads(text, 0, NULL));
		json_object_set_new(o, "layer", json_string(tn_layer_name(acct->layer)));
		free(text);
	} else {
		json_object_set_new(o, "error", json_string(error != NULL ? error : ""));
	}
	text = json_dumps(o, JSON_COMPACT);
	printf("%s\n", text);
	fflush(stdout);
	free(text);
	json_decref(o);
}

static void probe_resolve(struct tn_lookup *lk, const char *addr)
{
	struct tn_account *acct = NULL;
	const char *error = NULL;
	int64_t t0 = tn_time_now_us();
	enum tn_result rc = tn_lookup_resolve(lk, addr, 0, &acct, &error);

	probe_print(addr, rc, acct, error, tn_time_now_us() - t0);
	tn_account_free(&acct);
}

static void probe_usage(struct tn_lookup *lk, const char *addr)
{
	struct tn_lookup_usage u;
	struct tn_account *acct = NULL;
	const char *error = NULL;
	enum tn_result rc = tn_lookup_resolve_usage(lk, addr, 0, &acct, &u, &error);
	json_t *o = json_pack("{s:s,s:s}", "result", probe_results[rc + 1], "layer",
			      acct != NULL ? tn_layer_name(acct->layer) : "");
	char *text;

	json_object_set_new(o, "usage", !u.known ? json_null() :
		json_pack("{s:I,s:I,s:I,s:I}", "mailbox_bytes", (json_int_t)u.mailbox_bytes,
			  "mailbox_messages", (json_int_t)u.mailbox_messages,
			  "tenant_bytes", (json_int_t)u.tenant_bytes,
			  "tenant_messages", (json_int_t)u.tenant_messages));
	text = json_dumps(o, JSON_COMPACT);
	printf("%s\n", text);
	free(text);
	json_decref(o);
	tn_account_free(&acct);
}

static void probe_stats(struct tn_lookup *lk)
{
	struct tn_lookup_stats s;
	struct tn_dir_stats ds;

	tn_lookup_get_stats(lk, &s);
	tn_lookup_get_dir_stats(lk, &ds);
	printf("{\"resolves\":%llu,\"memory\":%llu,\"redis\":%llu,\"ldap\":%llu,"
	       "\"tempfails\":%llu,\"coalesced\":%llu,\"subscribed\":%llu,"
	       "\"ldap_connects\":%llu}\n",
	       (unsigned long long)s.resolves, (unsigned long long)s.memory_answers,
	       (unsigned long long)s.redis_answers, (unsigned long long)s.ldap_answers,
	       (unsigned long long)s.tempfails, (unsigned long long)s.coalesced,
	       (unsigned long long)s.subscribed, (unsigned long long)ds.connects);
	fflush(stdout);
}

struct probe_parallel {
	struct tn_lookup *lk;
	const char *addr;
	pthread_barrier_t *barrier;
	enum tn_result rc;
};

static void *probe_parallel_thread(void *arg)
{
	struct probe_parallel *pp = arg;
	struct tn_account *acct = NULL;
	const char *error;

	pthread_barrier_wait(pp->barrier);
	pp->rc = tn_lookup_resolve(pp->lk, pp->addr, 0, &acct, &error);
	tn_account_free(&acct);
	return NULL;
}

/* "parallel A B C ...": one thread per address, all at once (opens as
 * many pooled directory connections as run together); the results in
 * order. */
static void probe_parallel(struct tn_lookup *lk, char *list)
{
	struct probe_parallel pp[64];
	pthread_t th[64];
	pthread_barrier_t barrier;
	char *save = NULL, *a;
	unsigned n = 0;

	for (a = strtok_r(list, " ", &save); a != NULL && n < 64; a = strtok_r(NULL, " ", &save))
		pp[n++] = (struct probe_parallel){ .lk = lk, .addr = a, .barrier = &barrier };
	pthread_barrier_init(&barrier, NULL, n > 0 ? n : 1);
	for (unsigned i = 0; i < n; i++)
		pthread_create(&th[i], NULL, probe_parallel_thread, &pp[i]);
	for (unsigned i = 0; i < n; i++)
		pthread_join(th[i], NULL);
	pthread_barrier_destroy(&barrier);
	printf("{\"results\":[");
	for (unsigned i = 0; i < n; i++)
		printf("%s\"%s\"", i > 0 ? "," : "", probe_results[pp[i].rc + 1]);
	printf("]}\n");
}

static int probe_serve(struct tn_lookup *lk)
{
	char line[2048];
	const char *error;

	if (tn_lookup_start(lk, &error) < 0) {
		fprintf(stderr, "tn-probe: %s\n", error);
		return 1;
	}
	printf("{\"ready\":true}\n");
	fflush(stdout);
	while (fgets(line, sizeof(line), stdin) != NULL) {
		line[strcspn(line, "\r\n")] = '\0';
		if (strncmp(line, "resolve ", 8) == 0)
			probe_resolve(lk, line + 8);
		else if (strncmp(line, "usage ", 6) == 0)
			probe_usage(lk, line + 6);
		else if (strcmp(line, "stats") == 0)
			probe_stats(lk);
		else if (strncmp(line, "parallel ", 9) == 0)
			probe_parallel(lk, line + 9);
		else if (strcmp(line, "quit") == 0)
			break;
		else
			printf("{\"error\":\"unknown command\"}\n");
		fflush(stdout);
	}
	return 0;
}

struct probe_storm {
	struct tn_lookup *lk;
	const char *addr;
	pthread_barrier_t barrier;
	int counts[3];
	pthread_mutex_t lock;
};

static void *probe_storm_thread(void *arg)
{
	struct probe_storm *st = arg;
	struct tn_account *acct = NULL;
	const char *error;
	enum tn_result rc;

	pthread_barrier_wait(&st->barrier);
	rc = tn_lookup_resolve(st->lk, st->addr, 0, &acct, &error);
	pthread_mutex_lock(&st->lock);
	st->counts[rc + 1]++;
	pthread_mutex_unlock(&st->lock);
	tn_account_free(&acct);
	return NULL;
}

static int probe_storm(struct tn_lookup *lk, int nthreads, const char *addr)
{
	struct probe_storm st = { .lk = lk, .addr = addr };
	pthread_t *th = tn_mem_calloc((size_t)nthreads, sizeof(*th));
	struct tn_lookup_stats s;

	pthread_barrier_init(&st.barrier, NULL, (unsigned)nthreads);
	pthread_mutex_init(&st.lock, NULL);
	for (int i = 0; i < nthreads; i++)
		pthread_create(&th[i], NULL, probe_storm_thread, &st);
	for (int i = 0; i < nthreads; i++)
		pthread_join(th[i], NULL);
	tn_lookup_get_stats(lk, &s);
	printf("{\"found\":%d,\"notfound\":%d,\"tempfail\":%d,\"coalesced\":%llu}\n",
	       st.counts[2], st.counts[1], st.counts[0], (unsigned long long)s.coalesced);
	pthread_barrier_destroy(&st.barrier);
	pthread_mutex_destroy(&st.lock);
	tn_mem_free(&th);
	return 0;
}

struct probe_event {
	struct event_base *base;
	struct event *tick;
	int64_t last_tick_us, max_gap_us, start_us, max_done_us;
	long ticks;
	int pending, counts[3];
};

static void probe_tick(evutil_socket_t fd, short what, void *arg)
{
	struct probe_event *pe = arg;
	int64_t now = tn_time_now_us();

	if (pe->last_tick_us != 0 && now - pe->last_tick_us > pe->max_gap_us)
		pe->max_gap_us = now - pe->last_tick_us;
	pe->last_tick_us = now;
	pe->ticks++;
}

static void probe_event_done(enum tn_result rc, struct tn_account *acct,
			     const char *error, void *context)
{
	struct probe_event *pe = context;
	int64_t took = tn_time_now_us() - pe->start_us;

	pe->counts[rc + 1]++;
	if (took > pe->max_done_us)
		pe->max_done_us = took;
	tn_account_free(&acct);
	if (--pe->pending == 0)
		event_base_loopbreak(pe->base);
}

static int probe_event(struct tn_lookup *lk, int count, long timeout_ms, const char *prefix)
{
	struct probe_event pe = { .base = event_base_new(), .pending = count };
	struct timeval ms1 = { 0, 1000 };
	const char *at = strchr(prefix, '@');
	struct tn_lookup_event *le = tn_lookup_event_create(pe.base, lk, 8);
	char addr[512];

	pe.tick = event_new(pe.base, -1, EV_PERSIST, probe_tick, &pe);
	event_add(pe.tick, &ms1);
	pe.start_us = tn_time_now_us();
	for (int i = 0; i < count; i++) {
		snprintf(addr, sizeof(addr), "%.*s%d%s", at != NULL ? (int)(at - prefix) :
			 (int)strlen(prefix), prefix, i, at != NULL ? at : "@acme.example");
		tn_lookup_event_resolve(le, addr, timeout_ms, probe_event_done, &pe);
	}
	event_base_dispatch(pe.base);
	printf("{\"found\":%d,\"notfound\":%d,\"tempfail\":%d,\"ticks\":%ld,"
	       "\"max_tick_gap_ms\":%.3f,\"max_done_ms\":%.3f}\n",
	       pe.counts[2], pe.counts[1], pe.counts[0], pe.ticks,
	       (double)pe.max_gap_us / 1000.0, (double)pe.max_done_us / 1000.0);
	tn_lookup_event_destroy(&le);
	event_free(pe.tick);
	event_base_free(pe.base);
	return 0;
}

static struct tn_conf *probe_conf(int argc, char **argv, int *next_r)
{
	static const struct tn_conf_param *const tables[] = { tn_lookup_params, NULL };
	struct tn_conf *conf = tn_conf_create("tn-probe", tables);
	const char *error;
	int c;

	while ((c = getopt(argc, argv, "+c:o:")) != -1) {
		char *eq = c == 'o' ? strchr(optarg, '=') : NULL;
		int ret = -1;

		if (c == 'c') {
			ret = tn_conf_load_file(conf, optarg, &error);
		} else if (eq != NULL) {
			*eq = '\0';
			ret = tn_conf_set(conf, optarg, eq + 1, &error);
		} else {
			error = "usage: tn-probe -c config [-o name=value] command ...";
		}
		if (ret < 0) {
			fprintf(stderr, "tn-probe: %s\n", error);
			tn_conf_destroy(&conf);
			return NULL;
		}
	}
	*next_r = optind;
	return conf;
}

int main(int argc, char **argv)
{
	struct tn_conf *conf;
	struct tn_lookup *lk;
	const char *error;
	const char *cmd;
	int i, ret = 0;

	signal(SIGPIPE, SIG_IGN);
	tn_log_init("tn-probe", TN_LOG_TO_STDERR, LOG_MAIL);
	if ((conf = probe_conf(argc, argv, &i)) == NULL || i >= argc)
		return 64;
	cmd = argv[i++];
	lk = tn_lookup_create(conf, strcmp(cmd, "resolve") == 0 ?
			      TN_LOOKUP_NO_MEMORY_CACHE : 0, &error);
	if (lk == NULL) {
		fprintf(stderr, "tn-probe: %s\n", error);
		return 78;
	}
	if (strcmp(cmd, "resolve") == 0) {
		for (; i < argc; i++)
			probe_resolve(lk, argv[i]);
	} else if (strcmp(cmd, "serve") == 0) {
		ret = probe_serve(lk);
	} else if (strcmp(cmd, "storm") == 0 && i + 2 == argc) {
		ret = probe_storm(lk, atoi(argv[i]), argv[i + 1]);
	} else if (strcmp(cmd, "event") == 0 && i + 3 == argc) {
		ret = probe_event(lk, atoi(argv[i]), atol(argv[i + 1]), argv[i + 2]);
	} else {
		ret = 64;
	}
	tn_lookup_destroy(&lk);
	tn_conf_destroy(&conf);
	return ret;
}
