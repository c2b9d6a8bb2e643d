/*++
 * NAME
 *	router-metrics 3
 * SUMMARY
 *	tn-lmtp-router's /metrics endpoint (Prometheus text)
 * DESCRIPTION
 *	libevent's own HTTP server (evhttp) in the router's loop answers
 *	GET /metrics, so the counters are read in the thread that writes
 *	them and need no lock (tn-hookd needs libmicrohttpd's thread
 *	because its loop is busy with libcurl; the router's is not); the
 *	placement worker's counters are the exception, read under its lock.
 *	listen is "address:port"; empty turns the endpoint off.
 *
 *	Series (prefix tn_router_):
 *	    sessions_active, sessions_total, sessions_refused_total,
 *	    messages_total, flow_control_pauses_total, spooled_total,
 *	    spool_errors_total, recipients_total{result},
 *	    store_up{store}, store_drained{store}, store_connections{store},
 *	    store_idle_connections{store}, store_transactions_total{store},
 *	    store_errors_total{store,kind},
 *	    store_latency_seconds{store} (histogram: final dot to the
 *	    store's last reply),
 *	    with router_placement = hash-record placements_total{result}
 *	    (recorded, already_placed, failed, dropped) and
 *	    placements_pending (read under the placement worker's lock),
 *	and the lookup library's counters (tn_router_lookup_*).
 *--*/
#include "tn-build.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "router.h"
#include "tn-lookup.h"
#include "tn-mem.h"

static const char *const metrics_results[TN_RR_N] = {
	"delivered", "store_refused", "unknown", "directory_tempfail", "no_route",
	"store_unavailable", "too_big", "loop",
};

static const char *const metrics_bounds[ROUTER_LAT_BUCKETS] = {
	"0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "1", "5",
};

static void metrics_header(struct evbuffer *b, const char *name, const char *type,
			   const char *help)
{
	evbuffer_add_printf(b, "# HELP tn_router_%s %s\n# TYPE tn_router_%s %s\n", name, help,
			    name, type);
}

static void metrics_router(struct tn_router *r, struct evbuffer *b)
{
	metrics_header(b, "sessions_active", "gauge", "LMTP client sessions open now");
	evbuffer_add_printf(b, "tn_router_sessions_active %u\n", r->nsessions);
	metrics_header(b, "sessions_total", "counter", "LMTP client sessions accepted");
	evbuffer_add_printf(b, "tn_router_sessions_total %llu\n",
			    (unsigned long long)r->sessions_total);
	metrics_header(b, "sessions_refused_total", "counter",
		       "sessions refused with 421 (router_max_sessions)");
	evbuffer_add_printf(b, "tn_router_sessions_refused_total %llu\n",
			    (unsigned long long)r->sessions_refused);
	metrics_header(b, "messages_total", "counter", "transactions that reached the final dot");
	evbuffer_add_printf(b, "tn_router_messages_total %llu\n", (unsigned long long)r->messages);
	metrics_header(b, "flow_control_pauses_total", "counter",
		       "times a session stopped reading the client (high watermark)");
	evbuffer_add_printf(b, "tn_router_flow_control_pauses_total %llu\n",
			    (unsigned long long)r->throttled);
	metrics_header(b, "spooled_total", "counter", "messages spooled to disk");
	evbuffer_add_printf(b, "tn_router_spooled_total %llu\n", (unsigned long long)r->spooled);
	metrics_header(b, "spool_errors_total", "counter",
		       "spool files that could not be made or written");
	evbuffer_add_printf(b, "tn_router_spool_errors_total %llu\n",
			    (unsigned long long)r->spool_errors);
	metrics_header(b, "recipients_total", "counter", "recipients routed, by result");
	for (int i = 0; i < TN_RR_N; i++)
		evbuffer_add_printf(b, "tn_router_recipients_total{result=\"%s\"} %llu\n",
				    metrics_results[i], (unsigned long long)r->results[i]);
}

static void metrics_gauge(struct tn_router *r, struct evbuffer *b, const char *name,
			  const char *help, unsigned (*get)(const struct tn_router_member *))
{
	metrics_header(b, name, "gauge", help);
	for (size_t i = 0; i < r->nmembers; i++)
		evbuffer_add_printf(b, "tn_router_%s{store=\"%s\"} %u\n", name, r->members[i]->name,
				    get(r->members[i]));
}

static unsigned metrics_up(const struct tn_router_member *m) { return m->up; }
static unsigned metrics_drained(const struct tn_router_member *m) { return m->drained; }
static unsigned metrics_conns(const struct tn_router_member *m) { return m->nconns; }
static unsigned metrics_idle(const struct tn_router_member *m) { return m->nidle; }

static void metrics_latency(struct tn_router *r, struct evbuffer *b)
{
	metrics_header(b, "store_latency_seconds", "histogram",
		       "from the final dot to the store's last reply");
	for (size_t i = 0; i < r->nmembers; i++) {
		const struct tn_router_member *m = r->members[i];

		for (int k = 0; k < ROUTER_LAT_BUCKETS; k++)
			evbuffer_add_printf(b, "tn_router_store_latency_seconds_bucket{store=\"%s\","
					    "le=\"%s\"} %llu\n", m->name, metrics_bounds[k],
					    (unsigned long long)m->lat_buckets[k]);
		evbuffer_add_printf(b, "tn_router_store_latency_seconds_bucket{store=\"%s\","
				    "le=\"+Inf\"} %llu\n", m->name,
				    (unsigned long long)m->lat_count);
		evbuffer_add_printf(b, "tn_router_store_latency_seconds_sum{store=\"%s\"} %.6f\n",
				    m->name, m->lat_sum);
		evbuffer_add_printf(b, "tn_router_store_latency_seconds_count{store=\"%s\"} %llu\n",
				    m->name, (unsigned long long)m->lat_count);
	}
}

static void metrics_stores(struct tn_router *r, struct evbuffer *b)
{
	metrics_gauge(r, b, "store_up", "1 while the store is considered up", metrics_up);
	metrics_gauge(r, b, "store_drained", "1 while the store is drained", metrics_drained);
	metrics_gauge(r, b, "store_connections", "open connections to the store", metrics_conns);
	metrics_gauge(r, b, "store_idle_connections", "idle pooled connections", metrics_idle);
	metrics_header(b, "store_transactions_total", "counter", "messages the store answered");
	for (size_t i = 0; i < r->nmembers; i++)
		evbuffer_add_printf(b, "tn_router_store_transactions_total{store=\"%s\"} %llu\n",
				    r->members[i]->name,
				    (unsigned long long)r->members[i]->transactions);
	metrics_header(b, "store_errors_total", "counter", "store failures, by kind");
	for (size_t i = 0; i < r->nmembers; i++) {
		for (int k = 0; k < TN_SE_N; k++)
			evbuffer_add_printf(b, "tn_router_store_errors_total{store=\"%s\","
					    "kind=\"%s\"} %llu\n", r->members[i]->name,
					    tn_router_store_error_name(k),
					    (unsigned long long)r->members[i]->errors[k]);
	}
	metrics_latency(r, b);
}

/* router_placement = hash-record only (the counters are the worker's:
 * read under its lock) */
static void metrics_placement(struct tn_router *r, struct evbuffer *b)
{
	uint64_t counts[TN_PLACE_N], pending;

	if (r->place == NULL)
		return;
	tn_place_record_stats(r->place, counts, &pending);
	metrics_header(b, "placements_total", "counter",
		       "hash placements to record in the directory, by result");
	for (int i = 0; i < TN_PLACE_N; i++)
		evbuffer_add_printf(b, "tn_router_placements_total{result=\"%s\"} %llu\n",
				    tn_place_record_result_name(i), (unsigned long long)counts[i]);
	metrics_header(b, "placements_pending", "gauge", "placements queued or being written");
	evbuffer_add_printf(b, "tn_router_placements_pending %llu\n", (unsigned long long)pending);
}

char *tn_router_metrics_render(struct tn_router *r)
{
	struct evbuffer *b = evbuffer_new();
	char *lookup = tn_lookup_metrics(r->lk, "tn_router_lookup");
	size_t len;
	char *text;

	metrics_router(r, b);
	metrics_stores(r, b);
	metrics_placement(r, b);
	if (lookup != NULL)
		evbuffer_add(b, lookup, strlen(lookup));
	free(lookup);
	len = evbuffer_get_length(b);
	text = tn_mem_alloc(len + 1);
	evbuffer_remove(b, text, len);
	text[len] = '\0';
	evbuffer_free(b);
	return text;
}

static void metrics_request(struct evhttp_request *req, void *arg)
{
	struct tn_router *r = arg;
	struct evbuffer *out;
	char *text;

	if (evhttp_request_get_command(req) != EVHTTP_REQ_GET) {
		evhttp_send_error(req, 405, "method not allowed");
		return;
	}
	text = tn_router_metrics_render(r);
	out = evbuffer_new();
	evbuffer_add(out, text, strlen(text));
	tn_mem_free(&text);
	evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
			  "text/plain; version=0.0.4; charset=utf-8");
	evhttp_send_reply(req, 200, "OK", out);
	evbuffer_free(out);
}

int tn_router_metrics_start(struct tn_router *r, const char *listen, const char **error_r)
{
	struct sockaddr_storage ss;
	struct evconnlistener *l;
	int len = sizeof(ss);
	char *host;
	unsigned port;

	if (*listen == '\0')
		return 0;
	if (tn_router_route_split(listen, &host, &port) < 0) {
		*error_r = "router_metrics_listen: expected address:port";
		return -1;
	}
	tn_mem_free(&host);
	r->http = evhttp_new(r->base);
	evhttp_set_cb(r->http, "/metrics", metrics_request, r);
	evhttp_set_timeout(r->http, 10);
	/* SO_REUSEPORT, as the LMTP listeners: a restarted router binds it
	 * while the old one finishes */
	if (evutil_parse_sockaddr_port(listen, (struct sockaddr *)&ss, &len) < 0 ||
	    (l = evconnlistener_new_bind(r->base, NULL, NULL, LEV_OPT_CLOSE_ON_FREE |
					 LEV_OPT_CLOSE_ON_EXEC | LEV_OPT_REUSEABLE |
					 LEV_OPT_REUSEABLE_PORT, 128,
					 (struct sockaddr *)&ss, len)) == NULL ||
	    evhttp_bind_listener(r->http, l) == NULL) {
		*error_r = "router_metrics_listen: cannot listen (address in use?)";
		return -1;
	}
	return 0;
}

void tn_router_metrics_stop(struct tn_router *r)
{
	if (r->http != NULL)
		evhttp_free(r->http);
	r->http = NULL;
}
