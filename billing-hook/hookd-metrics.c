/*++
 * NAME
 *	hookd-metrics 3
 * SUMMARY
 *	tn-hookd's /metrics endpoint
 * DESCRIPTION
 *	libmicrohttpd with its own polling thread answers GET /metrics with
 *	the Prometheus text the render callback returns, and 404 to
 *	anything else. listen is "address:port" (IPv4 or [IPv6]:port).
 *--*/
#include "tn-build.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <microhttpd.h>

#include "hookd.h"
#include "tn-mem.h"

struct hookd_metrics {
	struct MHD_Daemon *daemon;
	char *(*render)(void *);
	void *arg;
};

static _Thread_local char hookd_metrics_err[256];

static enum MHD_Result hookd_metrics_reply(struct MHD_Connection *conn, unsigned status,
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

static enum MHD_Result hookd_metrics_handler(void *cls, struct MHD_Connection *conn,
					     const char *url, const char *method,
					     const char *version, const char *upload_data,
					     size_t *upload_data_size, void **con_cls)
{
	struct hookd_metrics *m = cls;

	(void)version;
	(void)upload_data;
	(void)con_cls;
	if (*upload_data_size != 0) {
		*upload_data_size = 0;
		return MHD_YES;
	}
	if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0)
		return hookd_metrics_reply(conn, MHD_HTTP_METHOD_NOT_ALLOWED,
					   "method not allowed\n", MHD_RESPMEM_PERSISTENT);
	if (strcmp(url, "/metrics") != 0)
		return hookd_metrics_reply(conn, MHD_HTTP_NOT_FOUND, "not found\n",
					   MHD_RESPMEM_PERSISTENT);
	return hookd_metrics_reply(conn, MHD_HTTP_OK, m->render(m->arg), MHD_RESPMEM_MUST_FREE);
}

static int hookd_metrics_parse(const char *listen, struct sockaddr_storage *ss,
			       const char **error_r)
{
	char host[128];
	const char *colon = strrchr(listen, ':');
	char *end;
	long port;

	if (colon == NULL || (size_t)(colon - listen) >= sizeof(host)) {
		*error_r = "hookd_metrics_listen: expected address:port";
		return -1;
	}
	snprintf(host, sizeof(host), "%.*s", (int)(colon - listen), listen);
	port = strtol(colon + 1, &end, 10);
	if (*end != '\0' || port < 1 || port > 65535) {
		*error_r = "hookd_metrics_listen: bad port";
		return -1;
	}
	memset(ss, 0, sizeof(*ss));
	if (host[0] == '[' && host[strlen(host) - 1] == ']') {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;

		host[strlen(host) - 1] = '\0';
		s6->sin6_family = AF_INET6;
		s6->sin6_port = htons((uint16_t)port);
		if (inet_pton(AF_INET6, host + 1, &s6->sin6_addr) == 1)
			return 0;
	} else {
		struct sockaddr_in *s4 = (struct sockaddr_in *)ss;

		s4->sin_family = AF_INET;
		s4->sin_port = htons((uint16_t)port);
		if (inet_pton(AF_INET, host, &s4->sin_addr) == 1)
			return 0;
	}
	*error_r = "hookd_metrics_listen: not a numeric IPv4 or [IPv6] address";
	return -1;
}

struct hookd_metrics *hookd_metrics_start(const char *listen, char *(*render)(void *),
					  void *arg, const char **error_r)
{
	struct hookd_metrics *m;
	struct sockaddr_storage ss;
	unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL;

	if (hookd_metrics_parse(listen, &ss, error_r) < 0)
		return NULL;
	if (ss.ss_family == AF_INET6)
		flags |= MHD_USE_IPv6;
	m = tn_mem_calloc(1, sizeof(*m));
	m->render = render;
	m->arg = arg;
	m->daemon = MHD_start_daemon(flags, 0, NULL, NULL, hookd_metrics_handler, m,
				     MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
				     MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)10,
				     MHD_OPTION_CONNECTION_LIMIT, (unsigned)64,
				     MHD_OPTION_END);
	if (m->daemon == NULL) {
		snprintf(hookd_metrics_err, sizeof(hookd_metrics_err),
			 "cannot listen on %s for /metrics (address in use?)", listen);
		*error_r = hookd_metrics_err;
		tn_mem_free(&m);
		return NULL;
	}
	return m;
}

void hookd_metrics_stop(struct hookd_metrics **mp)
{
	struct hookd_metrics *m = *mp;

	if (m == NULL)
		return;
	*mp = NULL;
	MHD_stop_daemon(m->daemon);
	tn_mem_free(&m);
}
