/*++
 * NAME
 *	tn-milter-common 3
 * SUMMARY
 *	listening socket options, SIGUSR1 reload thread, /metrics
 * DESCRIPTION
 *	See tn-milter-common.h.
 *--*/
#include "tn-build.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <microhttpd.h>

#include "tn-daemon.h"
#include "tn-log.h"
#include "tn-mem.h"
#include "tn-time.h"
#include "tn-milter-common.h"

static _Thread_local char tn_milter_common_err[256];

static const char *tn_milter_common_fail(const char *fmt, ...)
	__attribute__((format(printf, 1, 2)));

static const char *tn_milter_common_fail(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(tn_milter_common_err, sizeof(tn_milter_common_err), fmt, ap);
	va_end(ap);
	return tn_milter_common_err;
}

/* --- the listening socket --------------------------------------------------- */

int tn_milter_common_parse_mode(const char *text, unsigned *mode_r)
{
	char *end;
	unsigned long v;

	if (*text == '\0')
		return -1;
	errno = 0;
	v = strtoul(text, &end, 8);
	if (errno != 0 || *end != '\0' || v > 0777)
		return -1;
	*mode_r = (unsigned)v;
	return 0;
}

/* The port of "inet:PORT@HOST" / "inet6:PORT@HOST", or -1. */
static int tn_milter_common_inet_port(const char *spec)
{
	const char *p = strchr(spec, ':');
	char *end;
	long port;

	if (p == NULL)
		return -1;
	port = strtol(p + 1, &end, 10);
	if (end == p + 1 || (*end != '@' && *end != '\0') || port < 1 || port > 65535)
		return -1;
	return (int)port;
}

static int tn_milter_common_sock_port(int fd)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);

	if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0)
		return -1;
	if (ss.ss_family == AF_INET)
		return ntohs(((struct sockaddr_in *)&ss)->sin_port);
	if (ss.ss_family == AF_INET6)
		return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
	return -1;
}

static int tn_milter_common_nodelay(int port, const char **error_r)
{
	int max = (int)sysconf(_SC_OPEN_MAX), found = 0, one = 1;

	if (max < 0 || max > 65536)
		max = 65536;
	for (int fd = 0; fd < max; fd++) {
		int listening = 0;
		socklen_t len = sizeof(listening);

		if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) < 0 ||
		    !listening || tn_milter_common_sock_port(fd) != port)
			continue;
		if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) < 0) {
			*error_r = tn_milter_common_fail("TCP_NODELAY on the milter socket: %s",
							 strerror(errno));
			return -1;
		}
		found++;
	}
	if (found == 0) {
		*error_r = "no listening milter socket found to set TCP_NODELAY on";
		return -1;
	}
	return 0;
}

static int tn_milter_common_unix(const char *path, unsigned mode, const char *user,
				 const char **error_r)
{
	struct passwd *pw;

	if (chmod(path, mode) < 0) {
		*error_r = tn_milter_common_fail("chmod %s: %s", path, strerror(errno));
		return -1;
	}
	if (getuid() != 0 || *user == '\0')
		return 0;
	if ((pw = getpwnam(user)) == NULL) {
		*error_r = tn_milter_common_fail("%s: no such user", user);
		return -1;
	}
	if (chown(path, pw->pw_uid, pw->pw_gid) < 0) {
		*error_r = tn_milter_common_fail("chown %s: %s", path, strerror(errno));
		return -1;
	}
	return 0;
}

int tn_milter_common_socket_setup(const char *spec, unsigned mode, const char *user,
				  const char **error_r)
{
	if (strncmp(spec, "inet:", 5) == 0 || strncmp(spec, "inet6:", 6) == 0) {
		int port = tn_milter_common_inet_port(spec);

		if (port < 0) {
			*error_r = "bad inet socket: expected inet:PORT@HOST";
			return -1;
		}
		return tn_milter_common_nodelay(port, error_r);
	}
	if (strncmp(spec, "unix:", 5) == 0 || strncmp(spec, "local:", 6) == 0)
		return tn_milter_common_unix(strchr(spec, ':') + 1, mode, user, error_r);
	if (spec[0] == '/')
		return tn_milter_common_unix(spec, mode, user, error_r);
	*error_r = "socket: expected unix:/path or inet:PORT@HOST";
	return -1;
}

/* --- reload on SIGUSR1 -------------------------------------------------------- */

struct tn_milter_common_reload {
	void (*callback)(void *);
	void *context;
};

void tn_milter_common_reload_block(void)
{
	sigset_t set;

	sigemptyset(&set);
	sigaddset(&set, SIGUSR1);
	/* libmilter's signal thread waits for these with sigwait(); blocked
	 * here, before any thread exists, no other thread (/metrics, the
	 * lookup's subscriber) can take one and end the process abruptly */
	sigaddset(&set, SIGHUP);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
}

static void *tn_milter_common_reload_thread(void *arg)
{
	struct tn_milter_common_reload *r = arg;
	sigset_t set;
	int sig;

	sigemptyset(&set);
	sigaddset(&set, SIGUSR1);
	for (;;) {
		if (sigwait(&set, &sig) != 0)
			continue;
		r->callback(r->context);
	}
	return NULL;
}

int tn_milter_common_reload_start(void (*callback)(void *), void *context,
				  const char **error_r)
{
	struct tn_milter_common_reload *r = tn_mem_calloc(1, sizeof(*r));
	pthread_t thread;
	int err;

	r->callback = callback;
	r->context = context;
	if ((err = pthread_create(&thread, NULL, tn_milter_common_reload_thread, r)) != 0) {
		tn_mem_free(&r);
		*error_r = tn_milter_common_fail("reload thread: %s", strerror(err));
		return -1;
	}
	pthread_detach(thread);
	return 0;
}

/* --- /metrics ----------------------------------------------------------------- */

struct tn_milter_common_metrics {
	struct MHD_Daemon *daemon;
	char *(*render)(void *);
	void *context;
};

static enum MHD_Result tn_milter_common_reply(struct MHD_Connection *conn, unsigned status,
					      char *text, enum MHD_ResponseMemoryMode mode)
{
	struct MHD_Response *resp = MHD_create_response_from_buffer(strlen(text), text, mode);
	enum MHD_Result ret;

	MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE,
				"text/plain; version=0.0.4; charset=utf-8");
	ret = MHD_queue_response(conn, status, resp);
	MHD_destroy_response(resp);
	return ret;
}

static enum MHD_Result tn_milter_common_handler(void *cls, struct MHD_Connection *conn,
						const char *url, const char *method,
						const char *version, const char *upload_data,
						size_t *upload_data_size, void **con_cls)
{
	struct tn_milter_common_metrics *m = cls;

	(void)version;
	(void)upload_data;
	(void)con_cls;
	if (*upload_data_size != 0) {
		*upload_data_size = 0;
		return MHD_YES;
	}
	if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0)
		return tn_milter_common_reply(conn, MHD_HTTP_METHOD_NOT_ALLOWED,
					      "method not allowed\n", MHD_RESPMEM_PERSISTENT);
	if (strcmp(url, "/metrics") != 0)
		return tn_milter_common_reply(conn, MHD_HTTP_NOT_FOUND, "not found\n",
					      MHD_RESPMEM_PERSISTENT);
	return tn_milter_common_reply(conn, MHD_HTTP_OK, m->render(m->context),
				      MHD_RESPMEM_MUST_FREE);
}

static int tn_milter_common_listen_addr(const char *listen, struct sockaddr_storage *ss,
					const char **error_r)
{
	const char *colon = strrchr(listen, ':');
	char host[128], *end;
	long port;

	memset(ss, 0, sizeof(*ss));
	if (colon == NULL || (size_t)(colon - listen) >= sizeof(host)) {
		*error_r = "metrics listen address: expected address:port";
		return -1;
	}
	snprintf(host, sizeof(host), "%.*s", (int)(colon - listen), listen);
	port = strtol(colon + 1, &end, 10);
	if (*end != '\0' || port < 1 || port > 65535) {
		*error_r = "metrics listen address: bad port";
		return -1;
	}
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
	*error_r = "metrics listen address: not a numeric IPv4 or [IPv6] address";
	return -1;
}

struct tn_milter_common_metrics *tn_milter_common_metrics_start(const char *listen,
								 char *(*render)(void *),
								 void *context,
								 const char **error_r)
{
	struct tn_milter_common_metrics *m;
	struct sockaddr_storage ss;
	unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL;

	if (tn_milter_common_listen_addr(listen, &ss, error_r) < 0)
		return NULL;
	if (ss.ss_family == AF_INET6)
		flags |= MHD_USE_IPv6;
	m = tn_mem_calloc(1, sizeof(*m));
	m->render = render;
	m->context = context;
	m->daemon = MHD_start_daemon(flags, 0, NULL, NULL, tn_milter_common_handler, m,
				     MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
				     MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)10,
				     MHD_OPTION_CONNECTION_LIMIT, (unsigned)64, MHD_OPTION_END);
	if (m->daemon == NULL) {
		*error_r = tn_milter_common_fail("cannot listen on %s for /metrics (address in use?)",
						 listen);
		tn_mem_free(&m);
		return NULL;
	}
	return m;
}

void tn_milter_common_metrics_stop(struct tn_milter_common_metrics **mp)
{
	struct tn_milter_common_metrics *m = *mp;

	if (m == NULL)
		return;
	*mp = NULL;
	MHD_stop_daemon(m->daemon);
	tn_mem_free(&m);
}

/* --- latency histogram --------------------------------------------------------- */

static const double tn_milter_common_bounds[TN_MILTER_COMMON_BUCKETS] = {
	0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5,
};

void tn_milter_common_hist_add(struct tn_milter_common_hist *h, int64_t us)
{
	double s = (double)us / 1e6;

	for (int i = 0; i < TN_MILTER_COMMON_BUCKETS; i++) {
		if (s <= tn_milter_common_bounds[i])
			atomic_fetch_add(&h->buckets[i], 1);
	}
	atomic_fetch_add(&h->count, 1);
	atomic_fetch_add(&h->sum_us, (uint_fast64_t)(us > 0 ? us : 0));
}

void tn_milter_common_hist_render(const struct tn_milter_common_hist *h, const char *name,
				  FILE *out)
{
	uint64_t count = atomic_load(&h->count);

	fprintf(out, "# TYPE %s histogram\n", name);
	for (int i = 0; i < TN_MILTER_COMMON_BUCKETS; i++)
		fprintf(out, "%s_bucket{le=\"%g\"} %llu\n", name, tn_milter_common_bounds[i],
			(unsigned long long)atomic_load(&h->buckets[i]));
	fprintf(out, "%s_bucket{le=\"+Inf\"} %llu\n", name, (unsigned long long)count);
	fprintf(out, "%s_sum %.6f\n", name, (double)atomic_load(&h->sum_us) / 1e6);
	fprintf(out, "%s_count %llu\n", name, (unsigned long long)count);
}

/* --- reload arguments and exit ------------------------------------------------- */

void tn_milter_common_args_save(struct tn_milter_common_args *args, int argc, char **argv)
{
	int c;

	args->conf_path = getenv("TENANTMAIL_CONF");
	if (args->conf_path == NULL)
		args->conf_path = TN_DAEMON_DEFAULT_CONF;
	args->overrides = tn_mem_calloc((size_t)argc + 1, sizeof(*args->overrides));
	args->noverrides = 0;
	optind = 0;
	while ((c = getopt(argc, argv, "c:o:en")) != -1) {
		if (c == 'c')
			args->conf_path = optarg;
		else if (c == 'o')
			args->overrides[args->noverrides++] = optarg;
	}
}

int tn_milter_common_args_load(const struct tn_milter_common_args *args,
			       struct tn_conf *conf, const char **error_r)
{
	if (tn_conf_load_file(conf, args->conf_path, error_r) < 0)
		return -1;
	for (size_t i = 0; i < args->noverrides; i++) {
		const char *arg = args->overrides[i], *eq = strchr(arg, '=');
		char *name = tn_mem_strndup(arg, (size_t)(eq - arg));
		int ret = tn_conf_set(conf, name, eq + 1, error_r);

		tn_mem_free(&name);
		if (ret < 0)
			return -1;
	}
	return 0;
}

void tn_milter_common_args_free(struct tn_milter_common_args *args)
{
	tn_mem_free(&args->overrides);
	args->noverrides = 0;
}

bool tn_milter_common_quiesce(atomic_int_fast64_t *sessions)
{
	tn_msec_t deadline = tn_time_now_ms() + 5000;

	while (atomic_load(sessions) > 0) {
		if (tn_time_now_ms() > deadline) {
			tn_warning("%lld SMTP sessions still open at exit",
				   (long long)atomic_load(sessions));
			return false;
		}
		usleep(10 * 1000);
	}
	return true;
}
