/*++
 * NAME
 *	tn-provisiond 8
 * SUMMARY
 *	REST API over the provisioning core (tn-prov.h)
 * SYNOPSIS
 *	tn-provisiond [-c FILE] [-o NAME=VALUE]... [-e] [-n]
 * DESCRIPTION
 *	An HTTP/1.1 server (libmicrohttpd, one thread per connection) for
 *	tenants, domains, mailboxes and aliases: JSON in and out, routes
 *	/v1/<kind>s[/<key>[/suspend|/resume|/restore|/purge]]
 *	(provd-routes.c). Every request is one call of the core, which is
 *	blocking and thread-safe: one struct tn_prov serves all connection
 *	threads. Status codes are the core's (tn_prov_status_http()); 503
 *	answers carry Retry-After.
 *
 *	A request, in this order: a Content-Length beyond provd_max_body is
 *	answered 413 at once, before any of the body is read (a chunked body
 *	as it crosses the limit); then the bearer token (401,
 *	provd-tokens.c), the token's rate limit (429 + Retry-After), the
 *	Idempotency-Key of a POST (provd-idem.c, Redis), the route.
 *
 *	Authentication: "Authorization: Bearer <token>". The tokens file
 *	(provd_tokens_file) holds "<sha256-hex> admin", "<sha256-hex>
 *	billing" or "<sha256-hex> tenant:<id>" lines. A tenant token calls
 *	the core with that tenant as its scope; a billing token acts as an
 *	admin whose events carry actor kind "billing". SIGHUP reloads the
 *	file (a bad file leaves the old tokens in force).
 *
 *	TLS: with provd_tls_cert_file and provd_tls_key_file the listener
 *	speaks HTTPS only (libmicrohttpd with GnuTLS); both files are read
 *	before the privilege drop. Without them: plain HTTP, for a loopback
 *	address behind a TLS proxy. Plain HTTP on any other address (a
 *	private network, 0.0.0.0, ::) sends tokens and passwords in clear:
 *	refused at start unless provd_allow_plain_http says so, and then
 *	logged as a warning.
 *
 *	/metrics (Prometheus text, no token) is served on the same
 *	listener when provd_metrics is on.
 * SECURITY
 *	Tokens are kept as digests only; the token itself is never logged.
 *	Bodies beyond provd_max_body are never read (413). The TLS key is
 *	held in memory only, wiped at exit.
 *--*/
#include "tn-build.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sysexits.h>
#include <unistd.h>

#include "provd.h"
#include "tn-conf-shared.h"
#include "tn-daemon.h"
#include "tn-hook-spool.h"
#include "tn-idem.h"
#include "tn-log.h"
#include "tn-lookup.h"
#include "tn-mem.h"
#include "tn-outbox.h"

#define TN_MS(s) ((int64_t)(s) * 1000)
#define PROVD_PEM_MAX (1024 * 1024)
#define PROVD_IDEM_RUNNING_MARGIN 10000	/* ms beyond prov_timeout */

static const struct tn_conf_param tn_provd_params[] = {
	{ "provd_listen", TN_CONF_STR, "127.0.0.1:8080", 0, 0, NULL,
	  "address:port of the HTTP listener" },
	{ "provd_tokens_file", TN_CONF_STR, "/etc/tenantmail/provd-tokens", 0, 0, NULL,
	  "bearer tokens: lines '<sha256-hex> admin|billing|tenant:<id>'" },
	{ "provd_user", TN_CONF_STR, "tenantmail", 0, 0, NULL,
	  "user to run as when started as root" },
	{ "provd_max_body", TN_CONF_SIZE, "1m", 1024, 64 * 1024 * 1024, NULL,
	  "largest request body accepted (larger: 413)" },
	{ "provd_metrics", TN_CONF_BOOL, "yes", 0, 0, NULL,
	  "serve /metrics on the same listener" },
	{ "provd_threads_max", TN_CONF_INT, "256", 1, 65536, NULL,
	  "most connections served at once (one thread each)" },
	{ "provd_log_level", TN_CONF_ENUM, "info", 0, 0, "debug|info|warning|error",
	  "lowest log level written" },
	{ "provd_idempotency_ttl", TN_CONF_TIME, "24h", 1000, TN_MS(86400 * 30), NULL,
	  "how long the reply to a POST with an Idempotency-Key is kept for replays" },
	{ "provd_rate_limit", TN_CONF_INT, "0", 0, 1000000, NULL,
	  "requests per second one token may make (0: no limit)" },
	{ "provd_rate_burst", TN_CONF_INT, "0", 0, 10000000, NULL,
	  "requests one token may make at once (0: twice provd_rate_limit)" },
	{ "provd_tls_cert_file", TN_CONF_STR, "", 0, 0, NULL,
	  "PEM certificate chain for HTTPS (empty: plain HTTP)" },
	{ "provd_tls_key_file", TN_CONF_STR, "", 0, 0, NULL,
	  "PEM private key for HTTPS (empty: plain HTTP)" },
	{ "provd_batch_max", TN_CONF_INT, "500", 1, 10000, NULL,
	  "most items in one POST /v1/batch/<collection>" },
	{ "provd_allow_plain_http", TN_CONF_BOOL, "no", 0, 0, NULL,
	  "serve plain HTTP on an address other than loopback (without TLS)" },
	TN_CONF_END
};

static const unsigned provd_codes[PROVD_NCODES] = {
	200, 201, 204, 400, 401, 403, 404, 405, 409, 412, 413, 422, 429, 500, 503, 0,
};

/* --- responses --------------------------------------------------------------------------- */

static void provd_count(struct provd *pd, unsigned status)
{
	size_t i;

	for (i = 0; i < PROVD_NCODES - 1 && provd_codes[i] != 0; i++) {
		if (provd_codes[i] == status)
			break;
	}
	pthread_mutex_lock(&pd->mlock);
	pd->responses[i]++;
	pthread_mutex_unlock(&pd->mlock);
}

void provd_count_extra(struct provd *pd, uint64_t *counter)
{
	pthread_mutex_lock(&pd->mlock);
	(*counter)++;
	pthread_mutex_unlock(&pd->mlock);
}

static void provd_add_headers(struct MHD_Response *resp, const struct provd_reply *rp)
{
	char num[16];

	if (rp->etag != NULL) {
		char *quoted = tn_mem_printf("\"%s\"", rp->etag);

		MHD_add_response_header(resp, MHD_HTTP_HEADER_ETAG, quoted);
		tn_mem_free(&quoted);
	}
	if (rp->location != NULL)
		MHD_add_response_header(resp, MHD_HTTP_HEADER_LOCATION, rp->location);
	if (rp->retry_after > 0 || rp->status == 503) {
		snprintf(num, sizeof(num), "%u",
			 rp->retry_after > 0 ? rp->retry_after : PROVD_RETRY_AFTER);
		MHD_add_response_header(resp, MHD_HTTP_HEADER_RETRY_AFTER, num);
	}
	if (rp->status == 401)
		MHD_add_response_header(resp, MHD_HTTP_HEADER_WWW_AUTHENTICATE,
					"Bearer realm=\"tenantmail\"");
	if (rp->allow != NULL)
		MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, rp->allow);
	if (rp->replayed)
		MHD_add_response_header(resp, "Idempotent-Replayed", "true");
}

/* Queues the reply and clears it. */
static enum MHD_Result provd_send(struct provd *pd, struct MHD_Connection *conn,
				  struct provd_reply *rp)
{
	struct MHD_Response *resp;
	enum MHD_Result ret;

	if (rp->body != NULL) {
		resp = MHD_create_response_from_buffer(strlen(rp->body), rp->body,
						       MHD_RESPMEM_MUST_FREE);
		rp->body = NULL;	/* libmicrohttpd frees it */
		MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
	} else {
		resp = MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT);
	}
	provd_add_headers(resp, rp);
	ret = MHD_queue_response(conn, rp->status, resp);
	MHD_destroy_response(resp);
	provd_count(pd, rp->status);
	provd_reply_clear(rp);
	return ret;
}

static enum MHD_Result provd_send_error(struct provd *pd, struct MHD_Connection *conn,
					unsigned status, const char *code, const char *message)
{
	struct provd_reply rp = { 0 };

	provd_reply_error(&rp, status, code, message, NULL);
	return provd_send(pd, conn, &rp);
}

/* --- /metrics ----------------------------------------------------------------------------- */

static void provd_metrics_counter(FILE *f, const char *name, const char *help, uint64_t v)
{
	fprintf(f, "# HELP %s %s\n# TYPE %s counter\n%s %" PRIu64 "\n", name, help, name, name,
		v);
}

static enum MHD_Result provd_metrics_reply(struct provd *pd, struct MHD_Connection *conn)
{
	char *text = NULL;
	size_t size = 0;
	FILE *f = open_memstream(&text, &size);
	struct MHD_Response *resp;
	enum MHD_Result ret;

	if (f == NULL)
		return MHD_NO;
	fprintf(f, "# HELP tn_provd_responses_total HTTP responses by status code\n"
		   "# TYPE tn_provd_responses_total counter\n");
	pthread_mutex_lock(&pd->mlock);
	for (size_t i = 0; i < PROVD_NCODES; i++) {
		if (provd_codes[i] != 0) {
			fprintf(f, "tn_provd_responses_total{code=\"%u\"} %" PRIu64 "\n",
				provd_codes[i], pd->responses[i]);
			continue;
		}
		fprintf(f, "tn_provd_responses_total{code=\"other\"} %" PRIu64 "\n",
			pd->responses[i]);
		break;
	}
	provd_metrics_counter(f, "tn_provd_rate_limited_total",
			      "requests refused by provd_rate_limit (429)", pd->rate_limited);
	provd_metrics_counter(f, "tn_provd_idempotent_replays_total",
			      "stored replies replayed for a repeated Idempotency-Key", pd->replays);
	provd_metrics_counter(f, "tn_provd_idempotency_in_progress_total",
			      "repeats while the first request with the key ran (409)",
			      pd->idem_conflicts);
	pthread_mutex_unlock(&pd->mlock);
	fclose(f);
	resp = MHD_create_response_from_buffer(size, text, MHD_RESPMEM_MUST_FREE);
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE,
				"text/plain; version=0.0.4; charset=utf-8");
	ret = MHD_queue_response(conn, MHD_HTTP_OK, resp);
	MHD_destroy_response(resp);
	return ret;
}

/* --- libmicrohttpd ------------------------------------------------------------------------ */

/* A Content-Length beyond max_body: true (the body is not read). */
static bool provd_declared_too_big(struct provd *pd, struct MHD_Connection *conn)
{
	const char *h = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
						    MHD_HTTP_HEADER_CONTENT_LENGTH);
	unsigned long long v;
	char *end;

	if (h == NULL)
		return false;
	errno = 0;
	v = strtoull(h, &end, 10);
	return end != h && (errno == ERANGE || v > pd->max_body);
}

/* Collects the body. 1: more to come; 0: complete; -1: close the
 * connection. A chunked body (no Content-Length to refuse early) that
 * crosses max_body is discarded and answered 413 at its end (libmicrohttpd
 * 0.9 cannot answer while a body is being read); one that goes on beyond
 * twice max_body has the connection closed on it, unanswered. */
static int provd_collect(struct provd *pd, struct provd_req *rq, const char *data,
			 size_t *size)
{
	if (*size == 0)
		return 0;
	if (!rq->too_big && rq->len + *size > pd->max_body) {
		rq->too_big = true;
		tn_mem_free(&rq->body);
		rq->discarded = rq->len;
		rq->len = 0;
	}
	if (rq->too_big) {
		rq->discarded += *size;
		if (rq->discarded > 2 * pd->max_body) {
			tn_info("a chunked request body beyond twice provd_max_body: connection "
				"closed");
			return -1;
		}
	} else {
		rq->body = tn_mem_realloc(rq->body, rq->len + *size);
		memcpy(rq->body + rq->len, data, *size);
		rq->len += *size;
	}
	*size = 0;
	return 1;
}

/* The whole request is in: token, rate, route. */
static enum MHD_Result provd_serve(struct provd *pd, struct MHD_Connection *conn,
				   const char *url, const char *method, struct provd_req *rq)
{
	struct provd_caller caller = { .name = NULL };
	struct provd_reply rp = { 0 };
	enum MHD_Result ret;
	unsigned wait;

	if (provd_auth(pd, conn, &caller) < 0)
		return provd_send_error(pd, conn, 401, "unauthorized",
					"a valid bearer token is required");
	if ((wait = provd_rate_take(pd, &caller)) > 0) {
		provd_count_extra(pd, &pd->rate_limited);
		provd_reply_error(&rp, 429, "rate_limited", "too many requests for this token "
				  "(provd_rate_limit)", NULL);
		rp.retry_after = wait;
	} else if (rq->too_big) {
		provd_reply_error(&rp, 413, "too_large", "the request body exceeds provd_max_body",
				  NULL);
	} else {
		provd_idem_route(pd, conn, url, method, &caller, rq, &rp);
	}
	ret = provd_send(pd, conn, &rp);
	provd_caller_clear(&caller);
	return ret;
}

static enum MHD_Result provd_handler(void *cls, struct MHD_Connection *conn, const char *url,
				     const char *method, const char *version,
				     const char *upload_data, size_t *upload_data_size,
				     void **con_cls)
{
	struct provd *pd = cls;
	struct provd_req *rq = *con_cls;

	(void)version;
	if (rq == NULL) {
		*con_cls = rq = tn_mem_calloc(1, sizeof(*rq));
		if (provd_declared_too_big(pd, conn)) {
			rq->answered = true;
			return provd_send_error(pd, conn, 413, "too_large",
						"the request body exceeds provd_max_body");
		}
		return MHD_YES;
	}
	if (rq->answered) {
		*upload_data_size = 0;
		return MHD_YES;
	}
	switch (provd_collect(pd, rq, upload_data, upload_data_size)) {
	case 1:
		return MHD_YES;
	case -1:
		return MHD_NO;
	}
	if (pd->metrics && strcmp(url, "/metrics") == 0 && strcmp(method, "GET") == 0)
		return provd_metrics_reply(pd, conn);
	return provd_serve(pd, conn, url, method, rq);
}

static void provd_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
			    enum MHD_RequestTerminationCode toe)
{
	struct provd_req *rq = *con_cls;

	(void)cls;
	(void)conn;
	(void)toe;
	if (rq == NULL)
		return;
	tn_mem_free(&rq->body);
	tn_mem_free(&rq);
	*con_cls = NULL;
}

/* URL path and query arguments: an escaped NUL (%00) stays escaped, so
 * that no key or argument is cut short; the core refuses the '%'. */
static size_t provd_unescape(void *cls, struct MHD_Connection *conn, char *s)
{
	(void)cls;
	(void)conn;
	if (strstr(s, "%00") != NULL)
		return strlen(s);
	return MHD_http_unescape(s);
}

static int provd_parse_listen(const char *listen, struct sockaddr_storage *ss)
{
	const char *colon = strrchr(listen, ':');
	char host[128], *end;
	long port;

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

/* A whole PEM file, NUL-terminated; NULL after an error line. */
static char *provd_read_pem(const char *param, const char *path)
{
	FILE *f = fopen(path, "re");
	char *text = tn_mem_alloc(PROVD_PEM_MAX + 1);
	size_t n;

	if (f == NULL) {
		tn_error("%s %s: %s", param, path, strerror(errno));
		tn_mem_free(&text);
		return NULL;
	}
	n = fread(text, 1, PROVD_PEM_MAX + 1, f);
	fclose(f);
	if (n == 0 || n > PROVD_PEM_MAX || memchr(text, '\0', n) != NULL) {
		tn_error("%s %s: %s", param, path, n == 0 ? "empty or unreadable" :
			 "not a PEM file (too large, or binary)");
		explicit_bzero(text, n > PROVD_PEM_MAX ? PROVD_PEM_MAX : n);
		tn_mem_free(&text);
		return NULL;
	}
	text[n] = '\0';
	return text;
}

/* Both TLS files or neither. 0: plain HTTP or both read; -1: error. */
static int provd_tls_load(struct provd *pd)
{
	const char *cert = tn_conf_str(pd->conf, "provd_tls_cert_file");
	const char *key = tn_conf_str(pd->conf, "provd_tls_key_file");

	if (*cert == '\0' && *key == '\0')
		return 0;
	if (*cert == '\0' || *key == '\0') {
		tn_error("provd_tls_cert_file and provd_tls_key_file must be set together");
		return -1;
	}
	if (MHD_is_feature_supported(MHD_FEATURE_TLS) != MHD_YES) {
		tn_error("provd_tls_cert_file: this libmicrohttpd has no TLS support");
		return -1;
	}
	if ((pd->tls_cert = provd_read_pem("provd_tls_cert_file", cert)) == NULL ||
	    (pd->tls_key = provd_read_pem("provd_tls_key_file", key)) == NULL)
		return -1;
	return 0;
}

/* 1: a loopback address (127.0.0.0/8, ::1, ::ffff:127.0.0.0/104). */
static int provd_is_loopback(const struct sockaddr_storage *ss)
{
	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *s4 = (const struct sockaddr_in *)ss;

		return (ntohl(s4->sin_addr.s_addr) >> 24) == 127;
	}
	if (ss->ss_family == AF_INET6) {
		const struct in6_addr *a = &((const struct sockaddr_in6 *)ss)->sin6_addr;

		return IN6_IS_ADDR_LOOPBACK(a) || (IN6_IS_ADDR_V4MAPPED(a) && a->s6_addr[12] == 127);
	}
	return 0;
}

/* Without TLS, bearer tokens and clear-text passwords cross the wire as
 * they are: only on loopback (behind a TLS proxy on the same host). Any
 * other address, 0.0.0.0 included, is refused unless
 * provd_allow_plain_http is on, and then logged as a warning.
 * 0: go on; -1: refused (logged). */
static int provd_plain_http_check(const struct provd *pd, const struct sockaddr_storage *ss)
{
	const char *listen = tn_conf_str(pd->conf, "provd_listen");

	if (pd->tls_cert != NULL || provd_is_loopback(ss))
		return 0;
	if (!tn_conf_bool(pd->conf, "provd_allow_plain_http")) {
		tn_error("provd_listen %s is not a loopback address and TLS is off: tokens and "
			 "passwords would cross the network in clear; set provd_tls_cert_file and "
			 "provd_tls_key_file, listen on 127.0.0.1 behind a TLS proxy, or set "
			 "provd_allow_plain_http = yes", listen);
		return -1;
	}
	tn_warning("provd_listen %s is not a loopback address and TLS is off: tokens and "
		   "passwords cross the network in clear (provd_allow_plain_http = yes)", listen);
	return 0;
}

static int provd_listen(struct provd *pd)
{
	const char *listen = tn_conf_str(pd->conf, "provd_listen");
	unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION |
			 MHD_USE_POLL;
	struct sockaddr_storage ss;

	if (provd_parse_listen(listen, &ss) < 0) {
		tn_error("provd_listen %s: expected a numeric address:port", listen);
		return -1;
	}
	if (provd_plain_http_check(pd, &ss) < 0)
		return -2;
	if (ss.ss_family == AF_INET6)
		flags |= MHD_USE_IPv6;
	if (pd->tls_cert != NULL)
		flags |= MHD_USE_TLS;
	/* the TLS options last: without TLS, MHD_OPTION_END ends the list there */
	pd->mhd = MHD_start_daemon(flags, 0, NULL, NULL, provd_handler, pd,
				   MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
				   MHD_OPTION_NOTIFY_COMPLETED, provd_completed, pd,
				   MHD_OPTION_UNESCAPE_CALLBACK, provd_unescape, pd,
				   MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)60,
				   MHD_OPTION_CONNECTION_LIMIT,
				   (unsigned)tn_conf_int(pd->conf, "provd_threads_max"),
				   pd->tls_cert != NULL ? MHD_OPTION_HTTPS_MEM_CERT : MHD_OPTION_END,
				   pd->tls_cert, MHD_OPTION_HTTPS_MEM_KEY, pd->tls_key,
				   MHD_OPTION_END);
	if (pd->mhd == NULL) {
		tn_error("cannot listen on %s (address in use%s?)", listen,
			 pd->tls_cert != NULL ? ", or a bad certificate or key" : "");
		return -1;
	}
	return 0;
}

/* --- configuration and main ------------------------------------------------------------- */

/* The hookd parameters are not used here, but they are global lines of
 * the shared tenantmail.conf, which every program must accept. */
static const struct tn_conf_param *const provd_tables[] = {
	TN_CONF_SHARED_TABLES, tn_provd_params, NULL,
};

static int provd_configure(struct provd *pd, int argc, char **argv, bool *check_r)
{
	int ret = tn_daemon_configure("tn-provisiond", provd_tables, "provd_log_level", argc,
				      argv, &pd->conf, check_r);

	if (ret != 0)
		return ret;
	pd->max_body = (size_t)tn_conf_size(pd->conf, "provd_max_body");
	pd->batch_max = (size_t)tn_conf_int(pd->conf, "provd_batch_max");
	pd->metrics = tn_conf_bool(pd->conf, "provd_metrics");
	pd->idem_ttl = tn_conf_time_ms(pd->conf, "provd_idempotency_ttl");
	pd->prov_timeout = tn_conf_time_ms(pd->conf, "prov_timeout");
	pd->idem_running_ttl = pd->prov_timeout + PROVD_IDEM_RUNNING_MARGIN;
	pd->rate = (double)tn_conf_int(pd->conf, "provd_rate_limit");
	pd->burst = (double)tn_conf_int(pd->conf, "provd_rate_burst");
	if (pd->burst == 0)
		pd->burst = 2 * pd->rate;
	if (pd->rate > 0 && pd->burst < 1)
		pd->burst = 1;
	return 0;
}

/* The core, its lookup (for invalidation), outbox and the idempotency
 * store. Reads the bind and Redis password files: before the drop. */
static int provd_core(struct provd *pd)
{
	const char *error = NULL;

	if ((pd->lookup = tn_lookup_create(pd->conf, TN_LOOKUP_NO_MEMORY_CACHE, &error)) != NULL) {
		pd->outbox = tn_outbox_create_conf(pd->conf);
		pd->prov = tn_prov_create(pd->conf, pd->lookup, pd->outbox, &error);
	}
	if (pd->prov != NULL)
		pd->idem = tn_idem_create(pd->conf, &error);
	if (pd->prov == NULL || pd->idem == NULL) {
		tn_error("%s", error != NULL ? error : "cannot set up the provisioning core");
		return -1;
	}
	if (!tn_conf_bool(pd->conf, "redis_enabled"))
		tn_warning("redis_enabled = no: every POST with an Idempotency-Key is refused (503)");
	return 0;
}

/* Until SIGTERM or SIGINT; SIGHUP reloads the tokens file. */
static int provd_wait(struct provd *pd, const sigset_t *set)
{
	int sig = 0;

	while (sigwait(set, &sig) == 0 && sig == SIGHUP) {
		if (provd_tokens_load(pd) == 0)
			tn_info("SIGHUP: %zu token%s loaded", pd->ntokens,
				pd->ntokens == 1 ? "" : "s");
		else
			tn_warning("SIGHUP: the tokens file is unusable; the old tokens stay");
	}
	return sig;
}

static int provd_run(struct provd *pd)
{
	sigset_t set;

	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &set, NULL);	/* inherited by MHD's threads */
	if (provd_tokens_load(pd) < 0 || provd_tls_load(pd) < 0 || provd_core(pd) < 0)
		return EX_CONFIG;
	switch (provd_listen(pd)) {
	case 0:
		break;
	case -2:
		return EX_CONFIG;
	default:
		return EX_UNAVAILABLE;
	}
	if (tn_daemon_drop_privileges("provd_user", tn_conf_str(pd->conf, "provd_user")) < 0)
		return EX_NOPERM;
	tn_info("started: listening on %s (%s), %zu token%s, /metrics %s",
		tn_conf_str(pd->conf, "provd_listen"), pd->tls_cert != NULL ? "https" : "http",
		pd->ntokens, pd->ntokens == 1 ? "" : "s", pd->metrics ? "on" : "off");
	tn_info("stopping (signal %d)", provd_wait(pd, &set));
	MHD_stop_daemon(pd->mhd);
	pd->mhd = NULL;
	tn_info("stopped");
	return 0;
}

static void provd_pem_free(char **pem)
{
	if (*pem != NULL)
		explicit_bzero(*pem, strlen(*pem));
	tn_mem_free(pem);
}

static void provd_teardown(struct provd *pd)
{
	if (pd->mhd != NULL)
		MHD_stop_daemon(pd->mhd);
	tn_idem_destroy(&pd->idem);
	tn_prov_destroy(&pd->prov);
	tn_outbox_destroy(&pd->outbox);
	tn_lookup_destroy(&pd->lookup);
	provd_tokens_free(&pd->tokens, pd->ntokens);
	provd_pem_free(&pd->tls_cert);
	provd_pem_free(&pd->tls_key);
	pthread_rwlock_destroy(&pd->tlock);
	pthread_mutex_destroy(&pd->rlock);
	pthread_mutex_destroy(&pd->mlock);
	tn_conf_destroy(&pd->conf);
}

int main(int argc, char **argv)
{
	struct provd pd = { .conf = NULL };
	bool check = false;
	int ret;

	signal(SIGPIPE, SIG_IGN);
	pthread_mutex_init(&pd.mlock, NULL);
	pthread_rwlock_init(&pd.tlock, NULL);
	pthread_mutex_init(&pd.rlock, NULL);
	if ((ret = provd_configure(&pd, argc, argv, &check)) == 0) {
		if (check)
			tn_conf_dump(pd.conf, stdout, TN_CONF_DUMP_CHANGED);
		else
			ret = provd_run(&pd);
	}
	provd_teardown(&pd);
	return ret;
}
