/*++
 * NAME
 *	tn-lmtp-router 8
 * SUMMARY
 *	LMTP router: each recipient to the store the directory names
 * SYNOPSIS
 *	tn-lmtp-router [-c FILE] [-o NAME=VALUE]... [-e] [-n]
 * DESCRIPTION
 *	Postfix (virtual_transport = lmtp:...) hands every message to this
 *	one LMTP endpoint; each recipient is looked up (tn-lookup, through
 *	the libevent adapter: the loop never waits for the directory) and
 *	sent to its mailbox's store: tnMailHost, else its pool's first
 *	healthy member, else router_default_pool's (or, with
 *	router_placement, the one member of it that hashing picks,
 *	recorded in tnMailHost with hash-record). Replies come back per
 *	recipient in RCPT order with the store's own code and text.
 *
 *	This file: the parameter table, main(), listeners, signals, start
 *	and stop. router-session.c is the LMTP server, router-store.c the
 *	client side (members, connections, transactions, health),
 *	router-route.c the pure decisions, router-place.c the recording of
 *	placements, router-control.c the control
 *	socket, router-metrics.c /metrics. man/tn-lmtp-router.8 and
 *	docs/lmtp-router.md are the user's documentation.
 * SECURITY
 *	Started as root: the listeners, the control socket and the metrics
 *	port are opened and the lookup's password files read (and
 *	router_placement_password_file with hash-record), then the
 *	process switches to router_user for good (tn_daemon_drop_privileges)
 *	before the lookup connects anywhere or any client is served.
 *	Everything a client sends is bounded (line, recipients, message
 *	size, errors, time) and sanitised before it reaches a log line;
 *	replies carry a standard code and the session id, never internal
 *	details.
 *--*/
#include "tn-build.h"

#include <errno.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sysexits.h>
#include <unistd.h>

#include "router.h"
#include "tn-conf-shared.h"
#include "tn-daemon.h"
#include "tn-lookup.h"
#include "tn-mem.h"

#define ROUTER_STOP_GRACE_MS 10000

/* Every router parameter: lib/tn-router-params.c (the Dovecot proxy reads
 * the same section for placement). */
static const struct tn_conf_param *const router_tables[] = {
	TN_CONF_SHARED_TABLES, tn_router_params, NULL,
};

/* --- settings -------------------------------------------------------------------- */

static char router_hostname_buf[256];

/* hash-record writes a member's "host:port" as tnMailHost, which
 * provisioning takes as a host name or IPv4 address with a port. */
static int router_placement_members(struct tn_router *r, const char **error_r)
{
	int pool = tn_router_route_pool_find(r->pools, tn_conf_str(r->conf,
								    "router_default_pool"));

	for (size_t j = 0; j < tn_router_route_nmembers(r->pools, (size_t)pool); j++) {
		if (tn_router_route_member(r->pools, (size_t)pool, j)[0] == '[') {
			*error_r = "router_placement = hash-record: the members of "
				"router_default_pool must be host names or IPv4 addresses "
				"(tnMailHost holds no IPv6 address)";
			return -1;
		}
	}
	return 0;
}

static int router_placement_settings(struct tn_router *r, const char **error_r)
{
	enum tn_router_placement pm = (enum tn_router_placement)tn_conf_enum(r->conf,
									  "router_placement");

	tn_router_route_set_placement(r->pools, pm);
	if (pm == TN_ROUTER_PLACE_NONE)
		return 0;
	if (*tn_conf_str(r->conf, "router_default_pool") == '\0') {
		*error_r = "router_placement needs router_default_pool";
		return -1;
	}
	if (pm != TN_ROUTER_PLACE_RECORD)
		return 0;
	if (*tn_conf_str(r->conf, "router_placement_bind_dn") == '\0' &&
	    *tn_conf_str(r->conf, "prov_ldap_bind_dn") == '\0') {
		*error_r = "router_placement = hash-record needs router_placement_bind_dn "
			"(or prov_ldap_bind_dn)";
		return -1;
	}
	return router_placement_members(r, error_r);
}

static int router_settings(struct tn_router *r, const char **error_r)
{
	struct tn_router_settings *set = &r->set;
	const char *name = tn_conf_str(r->conf, "router_hostname");

	set->line_max = tn_conf_size(r->conf, "router_line_length_limit");
	set->rcpt_max = (size_t)tn_conf_int(r->conf, "router_recipient_limit");
	set->size_max = tn_conf_size(r->conf, "router_message_size_limit");
	set->session_timeout = tn_conf_time_ms(r->conf, "router_session_timeout");
	set->max_sessions = (unsigned)tn_conf_int(r->conf, "router_max_sessions");
	set->error_limit = (unsigned)tn_conf_int(r->conf, "router_error_limit");
	set->connect_timeout = tn_conf_time_ms(r->conf, "router_store_connect_timeout");
	set->store_timeout = tn_conf_time_ms(r->conf, "router_store_timeout");
	set->idle_timeout = tn_conf_time_ms(r->conf, "router_store_idle_timeout");
	set->idle_max = (unsigned)tn_conf_int(r->conf, "router_store_idle_max");
	set->conns_max = (unsigned)tn_conf_int(r->conf, "router_store_max_connections");
	set->health_interval = tn_conf_time_ms(r->conf, "router_health_interval");
	set->fail_threshold = (unsigned)tn_conf_int(r->conf, "router_health_failures");
	set->xclient = tn_conf_bool(r->conf, "router_store_xclient");
	set->high_wm = tn_conf_size(r->conf, "router_buffer_high_watermark");
	set->low_wm = tn_conf_size(r->conf, "router_buffer_low_watermark");
	set->spool_threshold = tn_conf_size(r->conf, "router_spool_threshold");
	set->spool_dir = tn_conf_str(r->conf, "router_spool_directory");
	set->received_header = tn_conf_bool(r->conf, "router_received_header");
	set->max_hops = (unsigned)tn_conf_int(r->conf, "router_max_hops");
	if (set->low_wm >= set->high_wm) {
		*error_r = "router_buffer_low_watermark must be below router_buffer_high_watermark";
		return -1;
	}
	if (*name == '\0' && gethostname(router_hostname_buf, sizeof(router_hostname_buf) - 1) == 0)
		name = router_hostname_buf;
	set->hostname = *name != '\0' ? name : "localhost";
	if (tn_router_route_pools_parse(tn_conf_list(r->conf, "router_pool_members"),
					tn_conf_str(r->conf, "router_default_pool"),
					(unsigned)tn_conf_int(r->conf, "router_lmtp_port"),
					&r->pools, error_r) < 0)
		return -1;
	return router_placement_settings(r, error_r);
}

/* --- listeners ---------------------------------------------------------------------- */

static void router_accept_cb(struct evconnlistener *l, evutil_socket_t fd,
			     struct sockaddr *sa, int salen, void *arg)
{
	int one = 1;

	(void)l;
	evutil_make_socket_nonblocking(fd);
	/* replies are small and come as lookups finish: no Nagle delay */
	if (sa->sa_family != AF_UNIX)
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	tn_router_session_accept(arg, fd, sa, salen);
}

static void router_accept_error_cb(struct evconnlistener *l, void *arg)
{
	(void)l;
	(void)arg;
	tn_error("accepting a connection: %s", strerror(errno));
}

static struct evconnlistener *router_listen_unix(struct tn_router *r, const char *path,
						 const char **error_r)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	struct evconnlistener *l;

	if (strlen(path) >= sizeof(sun.sun_path)) {
		*error_r = "router_listen: unix socket path too long";
		return NULL;
	}
	strcpy(sun.sun_path, path);
	unlink(path);
	l = evconnlistener_new_bind(r->base, router_accept_cb, r,
				    LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, 1024,
				    (struct sockaddr *)&sun, sizeof(sun));
	if (l != NULL) {
		struct stat st;

		/* Postfix's lmtp client runs as another user: the directory
		 * the socket is in decides who reaches it */
		chmod(path, 0666);
		r->unix_paths = tn_mem_realloc(r->unix_paths, (r->nunix + 1) * sizeof(char *));
		r->unix_inodes = tn_mem_realloc(r->unix_inodes, (r->nunix + 1) * sizeof(ino_t));
		r->unix_inodes[r->nunix] = stat(path, &st) == 0 ? st.st_ino : 0;
		r->unix_paths[r->nunix++] = tn_mem_strdup(path);
	}
	return l;
}

static struct evconnlistener *router_listen_inet(struct tn_router *r, const char *item,
						 const char **error_r)
{
	struct sockaddr_storage ss;
	int len = sizeof(ss);

	if (evutil_parse_sockaddr_port(item, (struct sockaddr *)&ss, &len) < 0 ||
	    ((struct sockaddr_in *)&ss)->sin_port == 0) {
		*error_r = "router_listen: items are host:port, [IPv6]:port or unix:/path";
		return NULL;
	}
	/* SO_REUSEPORT: a new router can listen beside this one before this
	 * one is stopped (a restart that refuses no connection) */
	return evconnlistener_new_bind(r->base, router_accept_cb, r,
				       LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC |
				       LEV_OPT_REUSEABLE | LEV_OPT_REUSEABLE_PORT, 1024,
				       (struct sockaddr *)&ss, len);
}

static int router_listen(struct tn_router *r)
{
	const char *const *items = tn_conf_list(r->conf, "router_listen");
	const char *error = NULL;
	struct evconnlistener *l;

	for (; *items != NULL; items++) {
		if (strncmp(*items, "unix:", 5) == 0 || (*items)[0] == '/')
			l = router_listen_unix(r, (*items)[0] == '/' ? *items : *items + 5, &error);
		else
			l = router_listen_inet(r, *items, &error);
		if (l == NULL) {
			tn_error("%s: %s", *items, error != NULL ? error : strerror(errno));
			return -1;
		}
		evconnlistener_set_error_cb(l, router_accept_error_cb);
		r->listeners = tn_mem_realloc(r->listeners, (r->nlisteners + 1) * sizeof(l));
		r->listeners[r->nlisteners++] = l;
	}
	if (r->nlisteners == 0) {
		tn_error("router_listen is empty");
		return -1;
	}
	return 0;
}

static void router_unlisten(struct tn_router *r)
{
	for (size_t i = 0; i < r->nlisteners; i++)
		evconnlistener_free(r->listeners[i]);
	tn_mem_free(&r->listeners);
	r->nlisteners = 0;
}

/* --- signals and stop ------------------------------------------------------------------- */

static void router_stop_check(evutil_socket_t fd, short what, void *arg)
{
	struct tn_router *r = arg;
	static int waited_ms;

	(void)fd;
	(void)what;
	waited_ms += 100;
	if (r->nsessions == 0 || waited_ms >= ROUTER_STOP_GRACE_MS) {
		if (r->nsessions > 0)
			tn_warning("%u session%s still open after %d ms: closing them", r->nsessions,
				   r->nsessions == 1 ? "" : "s", ROUTER_STOP_GRACE_MS);
		event_base_loopexit(r->base, NULL);
		return;
	}
	event_base_once(r->base, -1, EV_TIMEOUT, router_stop_check, r,
			&(struct timeval){ 0, 100000 });
}

static void router_signal(evutil_socket_t sig, short what, void *arg)
{
	struct tn_router *r = arg;

	(void)what;
	if (r->stopping)
		return;
	r->stopping = true;
	tn_info("stopping (signal %d): no new sessions, %u open", (int)sig, r->nsessions);
	router_unlisten(r);
	tn_router_session_stop_idle(r);
	router_stop_check(-1, 0, r);
}

static void router_members_init(struct tn_router *r)
{
	for (size_t i = 0; i < tn_router_route_npools(r->pools); i++) {
		for (size_t j = 0; j < tn_router_route_nmembers(r->pools, i); j++)
			tn_router_store_member(r, tn_router_route_member(r->pools, i, j), true);
	}
}

/* --- main ----------------------------------------------------------------------------------- */

static int router_open(struct tn_router *r)
{
	const char *ctl = tn_conf_str(r->conf, "router_control_socket"), *error;

	if (router_listen(r) < 0)
		return EX_UNAVAILABLE;
	if (*ctl != '\0' && tn_router_control_start(r, ctl, &error) < 0) {
		tn_error("%s", error);
		return EX_UNAVAILABLE;
	}
	if (tn_router_metrics_start(r, tn_conf_str(r->conf, "router_metrics_listen"),
				    &error) < 0) {
		tn_error("%s", error);
		return EX_UNAVAILABLE;
	}
	if ((r->lk = tn_lookup_create(r->conf, 0, &error)) == NULL) {
		tn_error("lookup: %s", error);
		return EX_CONFIG;
	}
	if (tn_conf_enum(r->conf, "router_placement") == TN_ROUTER_PLACE_RECORD &&
	    (r->place = tn_router_place_create(r->conf, r->lk, &error)) == NULL) {
		tn_error("router_placement: %s", error);
		return EX_CONFIG;
	}
	return 0;
}

static int router_drop(struct tn_router *r)
{
	const char *user = tn_conf_str(r->conf, "router_user");
	struct passwd *pw;

	if (getuid() == 0 && *user != '\0' && (pw = getpwnam(user)) != NULL &&
	    tn_router_control_chown(r, pw->pw_uid, pw->pw_gid) < 0)
		tn_warning("chown of the control socket: %s", strerror(errno));
	return tn_daemon_drop_privileges("router_user", user);
}

/* After the privilege drop: can this user spool? (Mail is never refused
 * for it: messages are then streamed from memory.) */
static void router_spool_check(struct tn_router *r)
{
	int fd;

	if (r->set.spool_threshold == 0)
		return;
	if ((fd = tn_router_spool_open(r)) < 0) {
		tn_warning("router_spool_directory %s: %s: large messages are streamed from "
			   "memory", r->set.spool_dir, strerror(errno));
		return;
	}
	close(fd);
}

/* Store names resolve within about router_store_connect_timeout (the
 * bufferevent's timeouts do not cover the DNS step). */
static void router_dns_options(struct tn_router *r)
{
	char secs[32];
	int64_t ms = r->set.connect_timeout / 2;

	snprintf(secs, sizeof(secs), "%lld.%03lld", (long long)(ms / 1000),
		 (long long)(ms % 1000));
	evdns_base_set_option(r->dns, "timeout:", secs);
	evdns_base_set_option(r->dns, "attempts:", "2");
}

static int router_run(struct tn_router *r)
{
	const char *error;
	int ret;

	r->base = event_base_new();
	r->dns = evdns_base_new(r->base, EVDNS_BASE_INITIALIZE_NAMESERVERS |
				EVDNS_BASE_DISABLE_WHEN_INACTIVE);
	if (r->dns == NULL)
		r->dns = evdns_base_new(r->base, EVDNS_BASE_DISABLE_WHEN_INACTIVE);
	router_dns_options(r);
	router_members_init(r);
	if ((ret = router_open(r)) != 0)
		return ret;
	if (router_drop(r) < 0)
		return EX_NOPERM;
	if (tn_lookup_start(r->lk, &error) < 0) {
		tn_error("lookup: %s", error);
		return EX_UNAVAILABLE;
	}
	router_spool_check(r);
	r->le = tn_lookup_event_create(r->base, r->lk,
				       (unsigned)tn_conf_int(r->conf, "router_lookup_threads"));
	tn_router_store_health_start(r);
	r->sig_term = evsignal_new(r->base, SIGTERM, router_signal, r);
	r->sig_int = evsignal_new(r->base, SIGINT, router_signal, r);
	event_add(r->sig_term, NULL);
	event_add(r->sig_int, NULL);
	tn_info("started: %zu listener%s, %zu pool%s, %zu store%s", r->nlisteners,
		r->nlisteners == 1 ? "" : "s", tn_router_route_npools(r->pools),
		tn_router_route_npools(r->pools) == 1 ? "" : "s", r->nmembers,
		r->nmembers == 1 ? "" : "s");
	event_base_dispatch(r->base);
	tn_info("stopped");
	return 0;
}

static void router_teardown(struct tn_router *r)
{
	router_unlisten(r);
	if (r->base != NULL) {
		r->stopping = true;
		tn_router_session_close_all(r);
		tn_router_control_stop(r);
		tn_router_metrics_stop(r);
		tn_lookup_event_destroy(&r->le);
		tn_router_store_free_all(r);
		if (r->health_timer != NULL)
			event_free(r->health_timer);
		if (r->sig_term != NULL)
			event_free(r->sig_term);
		if (r->sig_int != NULL)
			event_free(r->sig_int);
		if (r->dns != NULL)
			evdns_base_free(r->dns, 0);
		event_base_free(r->base);
	}
	for (size_t i = 0; i < r->nunix; i++) {
		struct stat st;

		/* a router started after this one has its own socket there now */
		if (stat(r->unix_paths[i], &st) == 0 && st.st_ino == r->unix_inodes[i])
			unlink(r->unix_paths[i]);
		tn_mem_free(&r->unix_paths[i]);
	}
	tn_mem_free(&r->unix_paths);
	tn_mem_free(&r->unix_inodes);
	tn_place_record_destroy(&r->place);	/* borrows the lookup */
	tn_lookup_destroy(&r->lk);
	tn_router_route_pools_free(&r->pools);
	tn_conf_destroy(&r->conf);
}

static int router_check(struct tn_router *r)
{
	tn_conf_dump(r->conf, stdout, TN_CONF_DUMP_CHANGED);
	for (size_t i = 0; i < tn_router_route_npools(r->pools); i++) {
		printf("pool %s:", tn_router_route_pool_name(r->pools, i));
		for (size_t j = 0; j < tn_router_route_nmembers(r->pools, i); j++)
			printf(" %s", tn_router_route_member(r->pools, i, j));
		printf("\n");
	}
	return 0;
}

static void router_instance(struct tn_router *r)
{
	uint32_t rnd;

	if (getrandom(&rnd, sizeof(rnd), 0) != sizeof(rnd))
		rnd = (uint32_t)getpid() ^ (uint32_t)time(NULL) ^ (uint32_t)tn_time_now_us();
	snprintf(r->sid_prefix, sizeof(r->sid_prefix), "%04X", (unsigned)(rnd & 0xffff));
	snprintf(r->instance, sizeof(r->instance), "tn-lmtp-router/%08X", (unsigned)rnd);
}

int main(int argc, char **argv)
{
	struct tn_router r = { 0 };
	const char *error;
	bool check = false;
	int ret;

	signal(SIGPIPE, SIG_IGN);
	if ((ret = tn_daemon_configure("tn-lmtp-router", router_tables, "router_log_level", argc,
				       argv, &r.conf, &check)) != 0)
		return ret;
	router_instance(&r);
	if (router_settings(&r, &error) < 0) {
		fprintf(stderr, "tn-lmtp-router: %s\n", error);
		tn_error("%s", error);
		router_teardown(&r);
		return EX_CONFIG;
	}
	ret = check ? router_check(&r) : router_run(&r);
	router_teardown(&r);
	return ret;
}
