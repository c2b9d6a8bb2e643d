/*++
 * NAME
 *	mapd-metrics 3
 * SUMMARY
 *	tn-mapd's counters and /metrics (see mapd-metrics.h)
 *--*/
#include "tn-build.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <microhttpd.h>

#include "mapd-metrics.h"
#include "tn-mem.h"

static const char *const tn_mapd_result_names[TN_MAPD_NRESULTS] = {
	"ok", "notfound", "temp", "perm",
};

/* upper bounds in microseconds */
static const int64_t tn_mapd_bucket_us[TN_MAPD_NBUCKETS] = {
	50, 100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000,
	1000000, 5000000,
};

struct tn_mapd_metrics {
	struct MHD_Daemon *daemon;
	struct tn_mapd_stats *st;
	struct tn_lookup *lk;
};

static _Thread_local char tn_mapd_metrics_err[256];

void tn_mapd_metrics_add(uint64_t *counter, int64_t delta)
{
	__atomic_fetch_add(counter, (uint64_t)delta, __ATOMIC_RELAXED);
}

static uint64_t tn_mapd_metrics_get(const uint64_t *counter)
{
	return __atomic_load_n(counter, __ATOMIC_RELAXED);
}

void tn_mapd_metrics_request(struct tn_mapd_stats *st, unsigned map,
			     enum tn_mapd_result result, int64_t usec)
{
	if (map > TN_MAPD_NMAPS)
		map = TN_MAPD_NMAPS;
	tn_mapd_metrics_add(&st->requests[map][result], 1);
	for (int b = 0; b < TN_MAPD_NBUCKETS; b++) {
		if (usec <= tn_mapd_bucket_us[b]) {
			tn_mapd_metrics_add(&st->buckets[map][b], 1);
			break;
		}
	}
	tn_mapd_metrics_add(&st->lat_count[map], 1);
	tn_mapd_metrics_add(&st->lat_sum_us[map], usec);
}

static const char *tn_mapd_metrics_map(unsigned map)
{
	return map < TN_MAPD_NMAPS ? tn_mapd_map_name(map) : "none";
}

static void tn_mapd_metrics_histogram(FILE *f, struct tn_mapd_stats *st, unsigned map)
{
	const char *name = tn_mapd_metrics_map(map);
	uint64_t cum = 0;

	for (int b = 0; b < TN_MAPD_NBUCKETS; b++) {
		cum += tn_mapd_metrics_get(&st->buckets[map][b]);
		fprintf(f, "tn_mapd_request_seconds_bucket{map=\"%s\",le=\"%g\"} %llu\n", name,
			(double)tn_mapd_bucket_us[b] / 1e6, (unsigned long long)cum);
	}
	fprintf(f, "tn_mapd_request_seconds_bucket{map=\"%s\",le=\"+Inf\"} %llu\n", name,
		(unsigned long long)tn_mapd_metrics_get(&st->lat_count[map]));
	fprintf(f, "tn_mapd_request_seconds_sum{map=\"%s\"} %.6f\n", name,
		(double)tn_mapd_metrics_get(&st->lat_sum_us[map]) / 1e6);
	fprintf(f, "tn_mapd_request_seconds_count{map=\"%s\"} %llu\n", name,
		(unsigned long long)tn_mapd_metrics_get(&st->lat_count[map]));
}

static void tn_mapd_metrics_gauge(FILE *f, const char *type, const char *name,
				  const uint64_t *counter)
{
	fprintf(f, "# TYPE %s %s\n%s %llu\n", name, type, name,
		(unsigned long long)tn_mapd_metrics_get(counter));
}

char *tn_mapd_metrics_render(struct tn_mapd_stats *st, struct tn_lookup *lk)
{
	char *buf = NULL, *lookup;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);

	if (f == NULL)
		abort();
	fputs("# TYPE tn_mapd_requests_total counter\n", f);
	for (unsigned m = 0; m <= TN_MAPD_NMAPS; m++) {
		for (int r = 0; r < TN_MAPD_NRESULTS; r++)
			fprintf(f, "tn_mapd_requests_total{map=\"%s\",result=\"%s\"} %llu\n",
				tn_mapd_metrics_map(m), tn_mapd_result_names[r],
				(unsigned long long)tn_mapd_metrics_get(&st->requests[m][r]));
	}
	fputs("# TYPE tn_mapd_request_seconds histogram\n", f);
	for (unsigned m = 0; m < TN_MAPD_NMAPS; m++)
		tn_mapd_metrics_histogram(f, st, m);
	tn_mapd_metrics_gauge(f, "gauge", "tn_mapd_connections", &st->connections);
	tn_mapd_metrics_gauge(f, "counter", "tn_mapd_connections_total", &st->connections_total);
	tn_mapd_metrics_gauge(f, "counter", "tn_mapd_connections_refused_total",
			      &st->connections_refused);
	tn_mapd_metrics_gauge(f, "counter", "tn_mapd_protocol_errors_total", &st->protocol_errors);
	tn_mapd_metrics_gauge(f, "counter", "tn_mapd_invalid_keys_total", &st->invalid_keys);
	lookup = tn_lookup_metrics(lk, "tn_mapd");
	fputs(lookup, f);
	tn_mem_free(&lookup);
	fclose(f);
	return buf;
}

/* --- HTTP ------------------------------------------------------------------------------ */

static enum MHD_Result tn_mapd_metrics_reply(struct MHD_Connection *conn, unsigned status,
					     char *text, enum MHD_ResponseMemoryMode mode)
{
	struct MHD_Response *resp;
	enum MHD_Result ret;

	resp = MHD_create_response_from_buffer(strlen(text), text, mode);
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE,
				"text/plain; version=0.0.4; charset=utf-8");
	ret = MHD_queue_response(conn, status, resp);
	MHD_destroy_response(resp);
	return ret;
}

static enum MHD_Result tn_mapd_metrics_handler(void *cls, struct MHD_Connection *conn,
					       const char *url, const char *method,
					       const char *version, const char *upload_data,
					       size_t *upload_data_size, void **con_cls)
{
	struct tn_mapd_metrics *m = cls;

	(void)version;
	(void)upload_data;
	(void)con_cls;
	if (*upload_data_size != 0) {
		*upload_data_size = 0;
		return MHD_YES;
	}
	if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0)
		return tn_mapd_metrics_reply(conn, MHD_HTTP_METHOD_NOT_ALLOWED,
					     "method not allowed\n", MHD_RESPMEM_PERSISTENT);
	if (strcmp(url, "/metrics") != 0)
		return tn_mapd_metrics_reply(conn, MHD_HTTP_NOT_FOUND, "not found\n",
					     MHD_RESPMEM_PERSISTENT);
	/* open_memstream's buffer is malloc'ed: MHD frees it with free() */
	return tn_mapd_metrics_reply(conn, MHD_HTTP_OK, tn_mapd_metrics_render(m->st, m->lk),
				     MHD_RESPMEM_MUST_FREE);
}

static int tn_mapd_metrics_parse(const char *listen, struct sockaddr_storage *ss,
				 const char **error_r)
{
	char host[128];
	const char *colon = strrchr(listen, ':');
	char *end;
	long port;

	*error_r = "mapd_metrics_listen: expected address:port with a numeric address";
	if (colon == NULL || (size_t)(colon - listen) >= sizeof(host))
		return -1;
	snprintf(host, sizeof(host), "%.*s", (int)(colon - listen), listen);
	port = strtol(colon + 1, &end, 10);
	if (*end != '\0' || port < 1 || port > 65535)
		return -1;
	memset(ss, 0, sizeof(*ss));
	if (host[0] == '[' && host[strlen(host) - 1] == ']') {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;

		host[strlen(host) - 1] = '\0';
		s6->sin6_family = AF_INET6;
		s6->sin6_port = htons((uint16_t)port);
		return inet_pton(AF_INET6, host + 1, &s6->sin6_addr) == 1 ? 0 : -1;
	}
	((struct sockaddr_in *)ss)->sin_family = AF_INET;
	((struct sockaddr_in *)ss)->sin_port = htons((uint16_t)port);
	return inet_pton(AF_INET, host, &((struct sockaddr_in *)ss)->sin_addr) == 1 ? 0 : -1;
}

struct tn_mapd_metrics *tn_mapd_metrics_start(const char *listen, struct tn_mapd_stats *st,
					      struct tn_lookup *lk, const char **error_r)
{
	struct tn_mapd_metrics *m;
	struct sockaddr_storage ss;
	unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL;

	if (tn_mapd_metrics_parse(listen, &ss, error_r) < 0)
		return NULL;
	if (ss.ss_family == AF_INET6)
		flags |= MHD_USE_IPv6;
	m = tn_mem_calloc(1, sizeof(*m));
	m->st = st;
	m->lk = lk;
	m->daemon = MHD_start_daemon(flags, 0, NULL, NULL, tn_mapd_metrics_handler, m,
				     MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
				     MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)10,
				     MHD_OPTION_CONNECTION_LIMIT, (unsigned)64,
				     MHD_OPTION_END);
	if (m->daemon == NULL) {
		snprintf(tn_mapd_metrics_err, sizeof(tn_mapd_metrics_err),
			 "cannot listen on %s for /metrics (address in use?)", listen);
		*error_r = tn_mapd_metrics_err;
		tn_mem_free(&m);
		return NULL;
	}
	return m;
}

void tn_mapd_metrics_stop(struct tn_mapd_metrics **mp)
{
	struct tn_mapd_metrics *m = *mp;

	if (m == NULL)
		return;
	*mp = NULL;
	MHD_stop_daemon(m->daemon);
	tn_mem_free(&m);
}
