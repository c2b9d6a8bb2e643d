/*++
 * NAME
 *	tn-bench-receiver 1
 * SUMMARY
 *	a fast webhook receiver that records what arrived and when
 * SYNOPSIS
 *	tn-bench-receiver [-l address:port] [-t threads] [-n capacity]
 *		[-r records-file] [-s whsec_...]... [-V]
 * DESCRIPTION
 *	A benchmark tool, not installed; bench/hookd drives it. It listens
 *	on address:port (default 127.0.0.1:0, a free port) with
 *	libmicrohttpd (epoll; one internal thread, or a pool of -t threads)
 *	and, once listening, prints one JSON line on stdout:
 *
 *	    {"ready":true,"port":PORT}
 *
 *	Every POST is answered 204 as soon as its body has arrived, and
 *	recorded: its webhook-id header and the receive time (CLOCK_REALTIME
 *	microseconds, taken when the body is complete). Up to -n capacity
 *	records (default 1048576) are kept in memory allocated at start;
 *	requests beyond that are counted as dropped. Ids are counted once
 *	each (unique) in a hash set beside the records.
 *
 *	With -V each POST is also verified before it is answered: the
 *	webhook-signature must match one of the -s secrets over the raw
 *	body (tn_webhook_verify(), 5 minutes tolerance), and the body must
 *	be a JSON object whose "id" is the webhook-id. A request that fails
 *	is answered 400, counted (bad_signature or bad_body) and recorded
 *	all the same. Without -V bodies are read and thrown away.
 *
 *	GET /stats answers the counters as JSON (not recorded):
 *
 *	    {"requests","unique","recorded","dropped","no_id","verified",
 *	     "bad_signature","bad_body","first_us","last_us","phase"}
 *
 *	Signals: SIGUSR1 writes the records of the current phase to
 *	records-file (one line per request, "<id> <receive_us>", in arrival
 *	order; default: records are not written), prints the counters as one
 *	JSON line {"dump":PHASE,...} on stdout, and starts a new phase with
 *	no records and zero counters. SIGTERM or SIGINT does the same and
 *	exits.
 * DIAGNOSTICS
 *	Exit 0 after SIGTERM; 2: bad usage or cannot listen; 1: the
 *	records file could not be written.
 *--*/
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <microhttpd.h>

#include "tn-log.h"
#include "tn-mem.h"
#include "tn-webhook.h"

#define RCV_NAME "tn-bench-receiver"
#define RCV_EXIT_USAGE 2
/* Longest webhook-id recorded (UUIDs have 36 characters). */
#define RCV_ID_MAX 39
/* Largest body kept for verification (the outbox's event limit). */
#define RCV_BODY_MAX (64 * 1024)
#define RCV_TOLERANCE_S 300
#define RCV_DEFAULT_CAPACITY (1u << 20)

struct rcv_record {
	char id[RCV_ID_MAX + 1];
	int64_t us;
};

struct rcv_counts {
	uint64_t requests, unique, dropped, no_id, verified, bad_signature, bad_body;
	int64_t first_us, last_us;
};

struct rcv_opts {
	const char *listen;
	unsigned threads;
	size_t capacity;
	const char *records_file;
	struct tn_webhook_secret secrets[TN_WEBHOOK_SECRETS_MAX];
	unsigned nsecrets;
	bool verify;
};

struct rcv_state {
	const struct rcv_opts *opts;
	pthread_mutex_t lock;		/* everything below */
	struct rcv_record *recs;
	size_t nrecs;
	uint32_t *slots;		/* hash set of ids: record index + 1; 0 empty */
	size_t nslots;			/* a power of two, at least 2 x capacity */
	struct rcv_counts counts;
	unsigned phase;
	struct MHD_Response *no_content, *bad_request;
};

/* One request being received (only with -V; otherwise a marker). */
struct rcv_request {
	char *body;
	size_t len;
	bool too_big;
};

static char rcv_marker;

/* --- records --------------------------------------------------------------- */

static int64_t rcv_now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static uint64_t rcv_hash(const char *id)
{
	uint64_t h = 14695981039346656037ULL;

	for (; *id != '\0'; id++)
		h = (h ^ (unsigned char)*id) * 1099511628211ULL;
	return h;
}

/* true when id was not seen before in this phase; adds it (index idx). */
static bool rcv_unique_add(struct rcv_state *st, const char *id, size_t idx)
{
	size_t mask = st->nslots - 1, i = rcv_hash(id) & mask;

	for (; st->slots[i] != 0; i = (i + 1) & mask) {
		if (strcmp(st->recs[st->slots[i] - 1].id, id) == 0)
			return false;
	}
	st->slots[i] = (uint32_t)(idx + 1);
	return true;
}

/* Record one request; id NULL or too long counts as no_id. */
static void rcv_record(struct rcv_state *st, const char *id, int64_t us)
{
	struct rcv_counts *c = &st->counts;
	size_t len = id != NULL ? strlen(id) : 0;

	pthread_mutex_lock(&st->lock);
	c->requests++;
	if (c->first_us == 0)
		c->first_us = us;
	c->last_us = us;
	if (len == 0 || len > RCV_ID_MAX) {
		c->no_id++;
	} else if (st->nrecs == st->opts->capacity) {
		c->dropped++;
	} else {
		struct rcv_record *r = &st->recs[st->nrecs];

		memcpy(r->id, id, len + 1);
		r->us = us;
		c->unique += rcv_unique_add(st, r->id, st->nrecs);
		st->nrecs++;
	}
	pthread_mutex_unlock(&st->lock);
}

static void rcv_count_verdict(struct rcv_state *st, int verdict)
{
	pthread_mutex_lock(&st->lock);
	if (verdict == 0)
		st->counts.verified++;
	else if (verdict == 1)
		st->counts.bad_signature++;
	else
		st->counts.bad_body++;
	pthread_mutex_unlock(&st->lock);
}

static json_t *rcv_counts_json(const struct rcv_counts *c, size_t recorded, unsigned phase)
{
	return json_pack("{sI sI sI sI sI sI sI sI sI sI sI}",
			 "requests", (json_int_t)c->requests, "unique", (json_int_t)c->unique,
			 "recorded", (json_int_t)recorded, "dropped", (json_int_t)c->dropped,
			 "no_id", (json_int_t)c->no_id, "verified", (json_int_t)c->verified,
			 "bad_signature", (json_int_t)c->bad_signature,
			 "bad_body", (json_int_t)c->bad_body,
			 "first_us", (json_int_t)c->first_us, "last_us", (json_int_t)c->last_us,
			 "phase", (json_int_t)phase);
}

static int rcv_write_records(const struct rcv_state *st, const char *path)
{
	FILE *fp = fopen(path, "w");
	int ret = 0;

	if (fp == NULL) {
		fprintf(stderr, "%s: %s: %s\n", RCV_NAME, path, strerror(errno));
		return -1;
	}
	for (size_t i = 0; i < st->nrecs; i++)
		fprintf(fp, "%s %" PRId64 "\n", st->recs[i].id, st->recs[i].us);
	if (ferror(fp) || fclose(fp) != 0) {
		fprintf(stderr, "%s: %s: write failed: %s\n", RCV_NAME, path, strerror(errno));
		ret = -1;
	}
	return ret;
}

/* Write the phase's records, print its counters, start the next phase. */
static int rcv_dump(struct rcv_state *st)
{
	json_t *obj;
	int ret = 0;

	pthread_mutex_lock(&st->lock);
	if (st->opts->records_file != NULL)
		ret = rcv_write_records(st, st->opts->records_file);
	obj = rcv_counts_json(&st->counts, st->nrecs, st->phase);
	json_object_set_new(obj, "dump", json_integer(st->phase));
	json_dumpf(obj, stdout, JSON_COMPACT);
	fputc('\n', stdout);
	fflush(stdout);
	json_decref(obj);
	memset(st->slots, 0, st->nslots * sizeof(*st->slots));
	memset(&st->counts, 0, sizeof(st->counts));
	st->nrecs = 0;
	st->phase++;
	pthread_mutex_unlock(&st->lock);
	return ret;
}

/* --- verification ------------------------------------------------------------ */

static const char *rcv_header(struct MHD_Connection *conn, const char *name)
{
	return MHD_lookup_connection_value(conn, MHD_HEADER_KIND, name);
}

/* The body is a JSON object whose "id" is id. */
static bool rcv_body_matches(const struct rcv_request *rq, const char *id)
{
	json_t *root = json_loadb(rq->body, rq->len, 0, NULL);
	const char *bid = json_string_value(json_object_get(root, "id"));
	bool ok = bid != NULL && id != NULL && strcmp(bid, id) == 0;

	json_decref(root);
	return ok;
}

/* 0 verified, 1 bad signature, 2 bad body. */
static int rcv_verify(const struct rcv_state *st, struct MHD_Connection *conn,
		      const struct rcv_request *rq)
{
	const char *id = rcv_header(conn, "webhook-id");
	const char *ts = rcv_header(conn, "webhook-timestamp");
	const char *sig = rcv_header(conn, "webhook-signature");
	const struct rcv_opts *o = st->opts;

	if (rq->too_big || id == NULL || ts == NULL || sig == NULL)
		return rq->too_big ? 2 : 1;
	if (tn_webhook_verify(o->secrets, o->nsecrets, id, ts, sig, rq->body, rq->len,
			      (int64_t)time(NULL), RCV_TOLERANCE_S, NULL) != TN_WEBHOOK_OK)
		return 1;
	return rcv_body_matches(rq, id) ? 0 : 2;
}

static void rcv_append_body(struct rcv_request *rq, const char *data, size_t len)
{
	if (rq->too_big || rq->len + len > RCV_BODY_MAX) {
		rq->too_big = true;
		return;
	}
	rq->body = tn_mem_realloc(rq->body, rq->len + len);
	memcpy(rq->body + rq->len, data, len);
	rq->len += len;
}

static void rcv_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
			  enum MHD_RequestTerminationCode toe)
{
	struct rcv_request *rq = *con_cls;

	(void)cls;
	(void)conn;
	(void)toe;
	if (rq != NULL && (void *)rq != (void *)&rcv_marker) {
		tn_mem_free(&rq->body);
		tn_mem_free(&rq);
	}
	*con_cls = NULL;
}

/* --- HTTP -------------------------------------------------------------------- */

static enum MHD_Result rcv_stats(struct rcv_state *st, struct MHD_Connection *conn)
{
	struct MHD_Response *resp;
	enum MHD_Result ret;
	json_t *obj;
	char *text;

	pthread_mutex_lock(&st->lock);
	obj = rcv_counts_json(&st->counts, st->nrecs, st->phase);
	pthread_mutex_unlock(&st->lock);
	text = json_dumps(obj, JSON_COMPACT);
	json_decref(obj);
	resp = MHD_create_response_from_buffer(strlen(text), text, MHD_RESPMEM_MUST_FREE);
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
	ret = MHD_queue_response(conn, MHD_HTTP_OK, resp);
	MHD_destroy_response(resp);
	return ret;
}

/* The last call of a POST: its body is complete. */
static enum MHD_Result rcv_post_done(struct rcv_state *st, struct MHD_Connection *conn,
				     struct rcv_request *rq)
{
	int64_t us = rcv_now_us();
	int verdict = 0;

	if (st->opts->verify) {
		verdict = rcv_verify(st, conn, rq);
		rcv_count_verdict(st, verdict);
	}
	rcv_record(st, rcv_header(conn, "webhook-id"), us);
	if (verdict != 0)
		return MHD_queue_response(conn, MHD_HTTP_BAD_REQUEST, st->bad_request);
	return MHD_queue_response(conn, MHD_HTTP_NO_CONTENT, st->no_content);
}

static enum MHD_Result rcv_handler(void *cls, struct MHD_Connection *conn, const char *url,
				   const char *method, const char *version,
				   const char *upload_data, size_t *upload_data_size,
				   void **con_cls)
{
	struct rcv_state *st = cls;

	(void)version;
	if (strcmp(method, "POST") != 0) {
		if (strcmp(method, "GET") == 0 && strcmp(url, "/stats") == 0)
			return rcv_stats(st, conn);
		return MHD_queue_response(conn, MHD_HTTP_BAD_REQUEST, st->bad_request);
	}
	if (*con_cls == NULL) {		/* headers only: the body follows */
		*con_cls = st->opts->verify ? tn_mem_calloc(1, sizeof(struct rcv_request))
			: (void *)&rcv_marker;
		return MHD_YES;
	}
	if (*upload_data_size != 0) {
		if (st->opts->verify)
			rcv_append_body(*con_cls, upload_data, *upload_data_size);
		*upload_data_size = 0;
		return MHD_YES;
	}
	return rcv_post_done(st, conn, *con_cls);
}

static int rcv_parse_listen(const char *listen, struct sockaddr_in *sin)
{
	char host[64];
	const char *colon = strrchr(listen, ':');
	char *end;
	long port;

	if (colon == NULL || (size_t)(colon - listen) >= sizeof(host))
		return -1;
	snprintf(host, sizeof(host), "%.*s", (int)(colon - listen), listen);
	port = strtol(colon + 1, &end, 10);
	if (*end != '\0' || port < 0 || port > 65535)
		return -1;
	memset(sin, 0, sizeof(*sin));
	sin->sin_family = AF_INET;
	sin->sin_port = htons((uint16_t)port);
	return inet_pton(AF_INET, host, &sin->sin_addr) == 1 ? 0 : -1;
}

static struct MHD_Daemon *rcv_start(struct rcv_state *st)
{
	unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_USE_TURBO |
		MHD_USE_ERROR_LOG;
	struct sockaddr_in sin;
	/* The pool size only when there is a pool (MHD warns about 0 or 1). */
	struct MHD_OptionItem pool[] = {
		{ MHD_OPTION_THREAD_POOL_SIZE, (intptr_t)st->opts->threads, NULL },
		{ MHD_OPTION_END, 0, NULL },
	};

	if (rcv_parse_listen(st->opts->listen, &sin) < 0) {
		fprintf(stderr, "%s: -l %s: expected IPv4-address:port\n", RCV_NAME,
			st->opts->listen);
		return NULL;
	}
	return MHD_start_daemon(flags, 0, NULL, NULL, rcv_handler, st,
				MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sin,
				MHD_OPTION_ARRAY, st->opts->threads > 1 ? pool : pool + 1,
				MHD_OPTION_CONNECTION_LIMIT, 1024u,
				MHD_OPTION_CONNECTION_TIMEOUT, 60u,
				MHD_OPTION_LISTEN_BACKLOG_SIZE, 1024u,
				MHD_OPTION_NOTIFY_COMPLETED, rcv_completed, st,
				MHD_OPTION_END);
}

/* --- main ---------------------------------------------------------------------- */

static void rcv_state_init(struct rcv_state *st, const struct rcv_opts *o)
{
	memset(st, 0, sizeof(*st));
	st->opts = o;
	pthread_mutex_init(&st->lock, NULL);
	st->recs = tn_mem_calloc(o->capacity, sizeof(*st->recs));
	for (st->nslots = 1024; st->nslots < 2 * o->capacity; st->nslots *= 2)
		;
	st->slots = tn_mem_calloc(st->nslots, sizeof(*st->slots));
	st->no_content = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
	st->bad_request = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
	st->phase = 1;
}

static void rcv_state_deinit(struct rcv_state *st)
{
	MHD_destroy_response(st->no_content);
	MHD_destroy_response(st->bad_request);
	tn_mem_free(&st->recs);
	tn_mem_free(&st->slots);
	pthread_mutex_destroy(&st->lock);
}

static void rcv_block_signals(sigset_t *set)
{
	sigemptyset(set);
	sigaddset(set, SIGTERM);
	sigaddset(set, SIGINT);
	sigaddset(set, SIGUSR1);
	pthread_sigmask(SIG_BLOCK, set, NULL);
	signal(SIGPIPE, SIG_IGN);
}

/* Wait for signals until SIGTERM/SIGINT; the exit status. */
static int rcv_serve(struct rcv_state *st, const sigset_t *set)
{
	int sig, failed = 0;

	for (;;) {
		if (sigwait(set, &sig) != 0)
			continue;
		failed |= rcv_dump(st) < 0;
		if (sig != SIGUSR1)
			return failed ? 1 : 0;
	}
}

static void rcv_usage(void)
{
	fprintf(stderr, "usage: %s [-l address:port] [-t threads] [-n capacity] "
		"[-r records-file] [-s whsec_...]... [-V]\n", RCV_NAME);
}

static int rcv_number(const char *text, long min, long max, long *value_r)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(text, &end, 10);
	if (errno != 0 || end == text || *end != '\0' || v < min || v > max) {
		fprintf(stderr, "%s: bad number '%s' (%ld..%ld)\n", RCV_NAME, text, min, max);
		return -1;
	}
	*value_r = v;
	return 0;
}

static int rcv_add_secret(struct rcv_opts *o, const char *text)
{
	const char *error;

	if (o->nsecrets == TN_WEBHOOK_SECRETS_MAX) {
		fprintf(stderr, "%s: at most %d secrets\n", RCV_NAME, TN_WEBHOOK_SECRETS_MAX);
		return -1;
	}
	if (tn_webhook_secret_parse(text, &o->secrets[o->nsecrets], &error) < 0) {
		fprintf(stderr, "%s: -s: %s\n", RCV_NAME, error);
		return -1;
	}
	o->nsecrets++;
	return 0;
}

static int rcv_option(int c, struct rcv_opts *o)
{
	long v;

	switch (c) {
	case 'l':
		o->listen = optarg;
		return 0;
	case 't':
		if (rcv_number(optarg, 0, 64, &v) < 0)
			return -1;
		o->threads = (unsigned)v;
		return 0;
	case 'n':
		if (rcv_number(optarg, 1, 1L << 30, &v) < 0)
			return -1;
		o->capacity = (size_t)v;
		return 0;
	case 'r':
		o->records_file = optarg;
		return 0;
	case 's':
		return rcv_add_secret(o, optarg);
	case 'V':
		o->verify = true;
		return 0;
	default:
		return -1;
	}
}

static int rcv_parse(int argc, char **argv, struct rcv_opts *o)
{
	int c;

	while ((c = getopt(argc, argv, "l:t:n:r:s:V")) != -1) {
		if (rcv_option(c, o) < 0) {
			rcv_usage();
			return -1;
		}
	}
	if (optind != argc) {
		rcv_usage();
		return -1;
	}
	if (o->verify && o->nsecrets == 0) {
		fprintf(stderr, "%s: -V needs at least one -s secret\n", RCV_NAME);
		return -1;
	}
	return 0;
}

static void rcv_ready(struct MHD_Daemon *d)
{
	const union MHD_DaemonInfo *info = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
	json_t *obj = json_pack("{sb si}", "ready", 1, "port", info != NULL ? info->port : 0);

	json_dumpf(obj, stdout, JSON_COMPACT);
	fputc('\n', stdout);
	fflush(stdout);
	json_decref(obj);
}

int main(int argc, char **argv)
{
	struct rcv_opts opts = { .listen = "127.0.0.1:0", .capacity = RCV_DEFAULT_CAPACITY };
	struct rcv_state st;
	struct MHD_Daemon *d;
	sigset_t set;
	int ret;

	tn_log_init(RCV_NAME, TN_LOG_TO_STDERR, LOG_MAIL);
	if (rcv_parse(argc, argv, &opts) < 0)
		return RCV_EXIT_USAGE;
	rcv_block_signals(&set);
	rcv_state_init(&st, &opts);
	if ((d = rcv_start(&st)) == NULL) {
		fprintf(stderr, "%s: cannot listen on %s\n", RCV_NAME, opts.listen);
		rcv_state_deinit(&st);
		return RCV_EXIT_USAGE;
	}
	rcv_ready(d);
	ret = rcv_serve(&st, &set);
	MHD_stop_daemon(d);
	rcv_state_deinit(&st);
	return ret;
}
