/*++
 * NAME
 *	tn-mapd 8
 * SUMMARY
 *	Postfix socketmap server: tenantmail's domains, mailboxes, aliases
 *	and sender logins
 * SYNOPSIS
 *	tn-mapd [-c FILE] [-o NAME=VALUE]... [-e] [-n]
 * DESCRIPTION
 *	One libevent loop in one thread accepts Postfix's socketmap clients
 *	on unix and TCP sockets (mapd_listen), reads netstring requests,
 *	and answers each through the lookup library's libevent adapter
 *	(tn-lookup-event: cache hits on the next loop turn, misses in a
 *	pool of mapd_workers threads, a timer at every request's
 *	deadline), so the loop never blocks on LDAP or Redis.
 *
 *	A connection has at most one request in flight: the answers keep
 *	the order of a pipelining client, and requests it sends meanwhile
 *	wait in its input buffer, bounded by the read watermark
 *	(mapd_max_request_size plus the netstring prefix); the loop stops
 *	reading from a client whose buffer is full, and stops parsing for
 *	one that does not read its answers.
 *
 *	The protocol and the decisions (which keys can be ours, what each
 *	map answers) live in mapd-policy.c; /metrics in mapd-metrics.c.
 *	Names here are mapd_ (all static) besides the parameter table.
 *
 *	Object lifetimes: a connection owns its job (the request in
 *	flight); a job owns its lookup requests and cancels them when it
 *	goes, so a client that leaves early leaves no callback behind.
 *	Connections are freed only from their own bufferevent callbacks
 *	(or at stop), never while a lookup callback of theirs runs.
 *
 *	Lookup failures (directory or cache unreachable, deadline passed)
 *	answer TEMP, never NOTFOUND; Postfix turns them into 4xx. A request
 *	that is not a netstring, or larger than mapd_max_request_size, is
 *	answered PERM and its connection closed (the stream is out of
 *	step); the daemon serves everyone else on.
 * SECURITY
 *	Started as root: opens its sockets and reads the directory password
 *	file, then switches to mapd_user before it starts any thread that
 *	talks to a client, the directory or Redis.
 *--*/
#include "tn-build.h"

#include <errno.h>
#include <grp.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sysexits.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>

#include "mapd-metrics.h"
#include "mapd-policy.h"
#include "tn-conf-shared.h"
#include "tn-daemon.h"
#include "tn-log.h"
#include "tn-lookup-event.h"
#include "tn-mem.h"
#include "tn-time.h"

#define TN_MS(s) ((int64_t)(s) * 1000)
/* "NNNNNN:" and "," around a payload */
#define MAPD_FRAMING 11
/* Stop parsing a client's requests while this much of its answers is unread. */
#define MAPD_OUTPUT_HIGH (256 * 1024)

const struct tn_conf_param tn_mapd_params[] = {
	{ "mapd_listen", TN_CONF_LIST, "inet:127.0.0.1:9466", 0, 0, NULL,
	  "sockets to serve: unix:/path and inet:address:port (Postfix syntax)" },
	{ "mapd_socket_mode", TN_CONF_STR, "0660", 0, 0, NULL,
	  "permissions of unix sockets (octal)" },
	{ "mapd_socket_group", TN_CONF_STR, "postfix", 0, 0, NULL,
	  "group of unix sockets (empty: leave it)" },
	{ "mapd_user", TN_CONF_STR, "tenantmail", 0, 0, NULL,
	  "user tn-mapd switches to when started as root (empty: stay root)" },
	{ "mapd_lookup_timeout", TN_CONF_TIME, "3s", 10, TN_MS(60), NULL,
	  "deadline of one request; after it the answer is TEMP" },
	{ "mapd_workers", TN_CONF_INT, "8", 1, 256, NULL,
	  "lookup threads (directory and Redis calls that miss the memory cache)" },
	{ "mapd_max_request_size", TN_CONF_SIZE, "4k", 64, TN_MAPD_REQUEST_HARD_MAX, NULL,
	  "largest request netstring payload; larger ones get PERM and a closed connection" },
	{ "mapd_max_connections", TN_CONF_INT, "1000", 1, 100000, NULL,
	  "client connections at once; more are closed at once" },
	{ "mapd_idle_timeout", TN_CONF_TIME, "5m", TN_MS(1), TN_MS(86400), NULL,
	  "close a client connection idle this long" },
	{ "mapd_metrics_listen", TN_CONF_STR, "127.0.0.1:9467", 0, 0, NULL,
	  "address:port of the /metrics endpoint (empty: off)" },
	{ "mapd_log_level", TN_CONF_ENUM, "info", 0, 0, "debug|info|warning|error",
	  "tn-mapd's least important syslog level" },
	TN_CONF_END
};

static const struct tn_conf_param *const mapd_tables[] = {
	TN_CONF_SHARED_TABLES, tn_mapd_params, NULL,
};

struct mapd_listener {
	struct evconnlistener *evl;
	char *unix_path;		/* unlinked at exit */
};

struct mapd {
	struct tn_conf *conf;
	struct tn_lookup *lk;
	struct tn_lookup_event *le;
	struct event_base *base;
	struct mapd_listener *listeners;
	unsigned nlisteners;
	struct event *sig_term, *sig_int, *sig_hup;
	struct tn_mapd_metrics *metrics;
	struct tn_mapd_stats stats;
	size_t max_request;
	tn_msec_t timeout;
	struct timeval idle;
	uint64_t nconns, max_conns, next_id;
	struct mapd_conn *conns;	/* every open connection */
};

struct mapd_job;

struct mapd_conn {
	struct mapd_conn *prev, *next;
	struct mapd *md;
	struct bufferevent *bev;
	struct mapd_job *job;		/* the request in flight, or NULL */
	uint64_t id;
	bool closing;			/* free once the output is written */
};

/* One target of an alias in the senders map: does a mailbox hold it? */
struct mapd_sub {
	struct mapd_job *job;
	struct tn_lookup_request *req;	/* NULL once answered */
	bool owner;
};

struct mapd_job {
	struct mapd_conn *conn;
	enum tn_mapd_map map;
	char *key;
	int64_t start_us;
	struct tn_lookup_request *req;	/* the first lookup, NULL once answered */
	struct tn_account *alias;	/* senders: the alias being resolved */
	struct mapd_sub *subs;
	size_t nsubs, pending;
	bool temp;
};

static void mapd_conn_process(struct mapd_conn *conn);

/* --- connections -------------------------------------------------------------------- */

static void mapd_job_free(struct mapd_job **jobp)
{
	struct mapd_job *job = *jobp;

	if (job == NULL)
		return;
	*jobp = NULL;
	if (job->req != NULL)
		tn_lookup_event_cancel(job->req);
	for (size_t i = 0; i < job->nsubs; i++) {
		if (job->subs[i].req != NULL)
			tn_lookup_event_cancel(job->subs[i].req);
	}
	tn_account_free(&job->alias);
	tn_mem_free(&job->subs);
	tn_mem_free(&job->key);
	tn_mem_free(&job);
}

static void mapd_conn_free(struct mapd_conn *conn)
{
	if (conn->prev != NULL)
		conn->prev->next = conn->next;
	else
		conn->md->conns = conn->next;
	if (conn->next != NULL)
		conn->next->prev = conn->prev;
	mapd_job_free(&conn->job);
	tn_mapd_metrics_add(&conn->md->stats.connections, -1);
	conn->md->nconns--;
	bufferevent_free(conn->bev);
	tn_mem_free(&conn);
}

static void mapd_conn_write(struct mapd_conn *conn, const char *status, const char *text)
{
	size_t len;
	char *reply = tn_mapd_reply(status, text, &len);

	bufferevent_write(conn->bev, reply, len);
	tn_mem_free(&reply);
}

/* A request that cannot be parsed: PERM, then close. */
static void mapd_conn_fail(struct mapd_conn *conn, const char *why)
{
	char safe[TN_LOG_VALUE_MAX];

	tn_mapd_metrics_add(&conn->md->stats.protocol_errors, 1);
	tn_mapd_metrics_request(&conn->md->stats, TN_MAPD_MAP_NONE, TN_MAPD_R_PERM, 0);
	tn_warning("connection %llu: %s: answering PERM and closing",
		   (unsigned long long)conn->id, tn_log_sanitize(safe, sizeof(safe), why,
								 strlen(why)));
	/* the write callback frees the connection once this is sent */
	mapd_conn_write(conn, "PERM", why);
	conn->closing = true;
	bufferevent_disable(conn->bev, EV_READ);
}

static const char *const mapd_status_names[TN_MAPD_NRESULTS] = {
	"OK", "NOTFOUND", "TEMP", "PERM",
};

/* Answer the request in flight (the job goes). Callers that run from a
 * lookup callback then go on with the client's next request. */
static void mapd_job_finish(struct mapd_job *job, enum tn_mapd_result result, const char *text)
{
	struct mapd_conn *conn = job->conn;

	tn_mapd_metrics_request(&conn->md->stats, job->map, result,
				tn_time_now_us() - job->start_us);
	mapd_conn_write(conn, mapd_status_names[result], text);
	mapd_job_free(&conn->job);
}

static void mapd_job_temp(struct mapd_job *job, const char *error)
{
	char key[TN_LOG_VALUE_MAX];

	tn_warning("%s %s: temporary failure: %s", tn_mapd_map_name(job->map),
		   tn_log_sanitize(key, sizeof(key), job->key, strlen(job->key)),
		   error != NULL ? error : "lookup failed");
	mapd_job_finish(job, TN_MAPD_R_TEMP, "lookup failed, try again later");
}

/* --- senders: the owners of an alias ------------------------------------------------- */

static void mapd_owners_finish(struct mapd_job *job)
{
	const char **owners = tn_mem_calloc(job->nsubs + 1, sizeof(*owners));
	size_t n = 0;
	char *value;

	if (job->temp) {
		tn_mem_free(&owners);
		mapd_job_temp(job, "an alias target could not be looked up");
		return;
	}
	for (size_t i = 0; i < job->nsubs; i++) {
		if (job->subs[i].owner)
			owners[n++] = job->alias->targets[i];
	}
	value = n > 0 ? tn_mapd_join(owners, n) : NULL;
	tn_mem_free(&owners);
	if (n == 0)
		mapd_job_finish(job, TN_MAPD_R_NOTFOUND, "");
	else if (value == NULL)
		mapd_job_finish(job, TN_MAPD_R_PERM, "answer too large");
	else
		mapd_job_finish(job, TN_MAPD_R_OK, value);
	tn_mem_free(&value);
}

static void mapd_owner_cb(enum tn_result rc, struct tn_account *acct, const char *error,
			  void *context)
{
	struct mapd_sub *sub = context;
	struct mapd_job *job = sub->job;

	(void)error;
	sub->req = NULL;
	if (rc == TN_TEMPFAIL)
		job->temp = true;
	else if (rc == TN_FOUND && acct->kind == TN_ACCOUNT_MAILBOX)
		sub->owner = true;
	tn_account_free(&acct);
	if (--job->pending == 0) {
		struct mapd_conn *conn = job->conn;

		mapd_owners_finish(job);
		mapd_conn_process(conn);
	}
}

/* Every target of the alias is looked up; the mailboxes own it. The
 * callbacks come from the loop, never from inside the resolve call. */
static void mapd_owners_start(struct mapd_job *job, struct tn_account *alias)
{
	struct tn_lookup_event *le = job->conn->md->le;
	tn_msec_t left = job->conn->md->timeout - (tn_time_now_us() - job->start_us) / 1000;

	job->alias = alias;
	job->nsubs = job->pending = alias->ntargets;
	job->subs = tn_mem_calloc(alias->ntargets, sizeof(*job->subs));
	for (size_t i = 0; i < alias->ntargets; i++) {
		job->subs[i].job = job;
		job->subs[i].req = tn_lookup_event_resolve(le, alias->targets[i],
							   left > 1 ? left : 1,
							   mapd_owner_cb, &job->subs[i]);
	}
}

/* --- requests ------------------------------------------------------------------------ */

/* An expansion that met a loop, a bound or nothing at all is logged
 * (the lookup library skips what it cannot use; the admin must act). */
static void mapd_alias_warn(const struct mapd_job *job, const struct tn_account *acct)
{
	if (!acct->alias_loop && !acct->targets_truncated && acct->ntargets > 0)
		return;
	tn_warning("alias %s: %s%s%s", acct->address,
		   acct->alias_loop ? "loop or alias_max_depth met; " : "",
		   acct->targets_truncated ? "alias_max_targets met; " : "",
		   acct->ntargets == 0 ? "expands to nothing (answered NOTFOUND)" :
		   job->map == TN_MAPD_SENDERS ? "owners from a partial expansion" :
		   "partial expansion answered");
}

/* Answer a job from its lookup: true when it is answered (and gone),
 * false when the owners of an alias are being looked up. */
static bool mapd_job_result(struct mapd_job *job, enum tn_result rc, struct tn_account *acct,
			    const char *error)
{
	char *value = NULL;

	if (rc == TN_TEMPFAIL) {
		mapd_job_temp(job, error);
		return true;
	}
	if (rc == TN_NOTFOUND) {
		mapd_job_finish(job, TN_MAPD_R_NOTFOUND, "");
		return true;
	}
	if (job->map != TN_MAPD_DOMAINS && acct->kind == TN_ACCOUNT_ALIAS)
		mapd_alias_warn(job, acct);
	switch (tn_mapd_answer(job->map, acct, &value)) {
	case TN_MAPD_ANSWER_OK:
		mapd_job_finish(job, TN_MAPD_R_OK, value);
		break;
	case TN_MAPD_ANSWER_NOTFOUND:
		mapd_job_finish(job, TN_MAPD_R_NOTFOUND, "");
		break;
	case TN_MAPD_ANSWER_TOO_LARGE:
		mapd_job_finish(job, TN_MAPD_R_PERM, "answer too large");
		break;
	case TN_MAPD_ANSWER_OWNERS:
		mapd_owners_start(job, acct);
		return false;	/* the job keeps the account */
	}
	tn_mem_free(&value);
	tn_account_free(&acct);
	return true;
}

static void mapd_lookup_cb(enum tn_result rc, struct tn_account *acct, const char *error,
			   void *context)
{
	struct mapd_job *job = context;
	struct mapd_conn *conn = job->conn;

	job->req = NULL;
	if (mapd_job_result(job, rc, acct, error))
		mapd_conn_process(conn);
}

static void mapd_dispatch(struct mapd_conn *conn, const char *payload, size_t len)
{
	struct mapd *md = conn->md;
	struct tn_account *acct;
	struct mapd_job *job;
	enum tn_result rc;
	enum tn_mapd_map map;
	const char *key, *why;
	size_t key_len;

	if (tn_mapd_request_split(payload, len, &map, &key, &key_len, &why) < 0) {
		tn_mapd_metrics_request(&md->stats, TN_MAPD_MAP_NONE, TN_MAPD_R_PERM, 0);
		mapd_conn_write(conn, "PERM", why);
		return;
	}
	if (!tn_mapd_key_valid(map, key, key_len, &why)) {
		tn_mapd_metrics_add(&md->stats.invalid_keys, 1);
		tn_mapd_metrics_request(&md->stats, map, TN_MAPD_R_NOTFOUND, 0);
		mapd_conn_write(conn, "NOTFOUND", "");
		return;
	}
	job = tn_mem_calloc(1, sizeof(*job));
	job->conn = conn;
	job->map = map;
	job->key = tn_mem_strndup(key, key_len);
	job->start_us = tn_time_now_us();
	conn->job = job;
	/* the in-process cache answers at once, without a loop turn and
	 * without waiting for a worker (they may all wait on a hung server) */
	rc = map == TN_MAPD_DOMAINS ? tn_lookup_resolve_domain_cached(md->lk, job->key, &acct) :
		tn_lookup_resolve_cached(md->lk, job->key, &acct);
	if (rc != TN_TEMPFAIL)
		(void)mapd_job_result(job, rc, acct, NULL);
	else if (map == TN_MAPD_DOMAINS)
		job->req = tn_lookup_event_resolve_domain(md->le, job->key, md->timeout,
							  mapd_lookup_cb, job);
	else
		job->req = tn_lookup_event_resolve(md->le, job->key, md->timeout,
						   mapd_lookup_cb, job);
}

/* Parse and answer what the client sent, one request at a time. */
static void mapd_conn_parse(struct mapd_conn *conn)
{
	struct evbuffer *in = bufferevent_get_input(conn->bev);
	struct evbuffer *out = bufferevent_get_output(conn->bev);

	while (conn->job == NULL && !conn->closing) {
		size_t avail = evbuffer_get_length(in), want, plen = 0, used = 0;
		const char *payload = NULL, *why = NULL;
		const char *buf;
		enum tn_mapd_parse rc;

		if (avail == 0 || evbuffer_get_length(out) >= MAPD_OUTPUT_HIGH)
			return;
		want = avail < conn->md->max_request + MAPD_FRAMING ?
			avail : conn->md->max_request + MAPD_FRAMING;
		buf = (const char *)evbuffer_pullup(in, (ev_ssize_t)want);
		rc = tn_mapd_netstring_parse(buf, want, conn->md->max_request, &payload, &plen,
					     &used, &why);
		if (rc == TN_MAPD_PARSE_MORE)
			return;
		if (rc == TN_MAPD_PARSE_ERROR) {
			mapd_conn_fail(conn, why);
			return;
		}
		mapd_dispatch(conn, payload, plen);
		evbuffer_drain(in, used);
	}
}

/* Answers go out now rather than on the next loop turn (the bufferevent
 * writes whatever the socket does not take at once). A closing
 * connection is left to the write callback, which frees it. */
static void mapd_conn_process(struct mapd_conn *conn)
{
	struct evbuffer *out = bufferevent_get_output(conn->bev);

	mapd_conn_parse(conn);
	if (!conn->closing && evbuffer_get_length(out) > 0)
		(void)evbuffer_write(out, bufferevent_getfd(conn->bev));
}

static void mapd_read_cb(struct bufferevent *bev, void *arg)
{
	(void)bev;
	mapd_conn_process(arg);
}

static void mapd_write_cb(struct bufferevent *bev, void *arg)
{
	struct mapd_conn *conn = arg;

	(void)bev;
	if (conn->closing) {
		mapd_conn_free(conn);
		return;
	}
	mapd_conn_process(conn);
}

static void mapd_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct mapd_conn *conn = arg;

	if ((what & BEV_EVENT_TIMEOUT) && (what & BEV_EVENT_READING) && conn->job != NULL) {
		/* not idle: waiting for its answer (mapd_lookup_timeout) */
		bufferevent_enable(bev, EV_READ);
		return;
	}
	if (what & BEV_EVENT_TIMEOUT)
		tn_debug("connection %llu: idle, closed", (unsigned long long)conn->id);
	else if (what & BEV_EVENT_ERROR)
		tn_info("connection %llu: %s", (unsigned long long)conn->id,
			evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
	mapd_conn_free(conn);
}

static void mapd_accept_cb(struct evconnlistener *evl, evutil_socket_t fd,
			   struct sockaddr *sa, int salen, void *arg)
{
	struct mapd *md = arg;
	struct mapd_conn *conn;
	int one = 1;

	(void)evl;
	(void)salen;
	if (md->nconns >= md->max_conns) {
		tn_mapd_metrics_add(&md->stats.connections_refused, 1);
		tn_warning("mapd_max_connections (%llu) reached: connection closed",
			   (unsigned long long)md->max_conns);
		evutil_closesocket(fd);
		return;
	}
	if (sa->sa_family == AF_INET || sa->sa_family == AF_INET6)
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	conn = tn_mem_calloc(1, sizeof(*conn));
	conn->md = md;
	conn->id = ++md->next_id;
	conn->bev = bufferevent_socket_new(md->base, fd, BEV_OPT_CLOSE_ON_FREE);
	bufferevent_setcb(conn->bev, mapd_read_cb, mapd_write_cb, mapd_event_cb, conn);
	bufferevent_setwatermark(conn->bev, EV_READ, 0, md->max_request + MAPD_FRAMING);
	bufferevent_set_timeouts(conn->bev, &md->idle, &md->idle);
	bufferevent_enable(conn->bev, EV_READ | EV_WRITE);
	conn->next = md->conns;
	if (md->conns != NULL)
		md->conns->prev = conn;
	md->conns = conn;
	md->nconns++;
	tn_mapd_metrics_add(&md->stats.connections, 1);
	tn_mapd_metrics_add(&md->stats.connections_total, 1);
}

/* --- listeners ----------------------------------------------------------------------- */

static int mapd_unix_socket(struct mapd *md, const char *path)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	const char *group = tn_conf_str(md->conf, "mapd_socket_group");
	unsigned long mode = strtoul(tn_conf_str(md->conf, "mapd_socket_mode"), NULL, 8);
	struct stat st;
	int fd;

	if (strlen(path) >= sizeof(sun.sun_path)) {
		tn_error("mapd_listen: unix socket path too long: %s", path);
		return -1;
	}
	strcpy(sun.sun_path, path);
	if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode))
		unlink(path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0 || bind(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0 ||
	    listen(fd, 128) < 0 || chmod(path, (mode_t)mode) < 0) {
		tn_error("mapd_listen: unix:%s: %s", path, strerror(errno));
		if (fd >= 0)
			close(fd);
		return -1;
	}
	if (*group != '\0') {
		struct group *gr = getgrnam(group);

		if (gr == NULL || chown(path, (uid_t)-1, gr->gr_gid) < 0) {
			tn_error("mapd_socket_group %s: %s", group,
				 gr == NULL ? "no such group" : strerror(errno));
			close(fd);
			return -1;
		}
	}
	return fd;
}

static struct evconnlistener *mapd_listen_one(struct mapd *md, const char *spec,
					      char **unix_path_r)
{
	unsigned flags = LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC;
	struct sockaddr_storage ss;
	int sslen = sizeof(ss), fd;

	*unix_path_r = NULL;
	if (strncmp(spec, "unix:", 5) == 0) {
		if ((fd = mapd_unix_socket(md, spec + 5)) < 0)
			return NULL;
		*unix_path_r = tn_mem_strdup(spec + 5);
		return evconnlistener_new(md->base, mapd_accept_cb, md, flags, -1, fd);
	}
	if (strncmp(spec, "inet:", 5) != 0 ||
	    evutil_parse_sockaddr_port(spec + 5, (struct sockaddr *)&ss, &sslen) < 0) {
		tn_error("mapd_listen: %s: expected unix:/path or inet:address:port", spec);
		return NULL;
	}
	struct evconnlistener *evl = evconnlistener_new_bind(md->base, mapd_accept_cb, md,
							     flags | LEV_OPT_REUSEABLE, 128,
							     (struct sockaddr *)&ss, sslen);
	if (evl == NULL)
		tn_error("mapd_listen: %s: %s", spec, strerror(errno));
	return evl;
}

static int mapd_listen(struct mapd *md)
{
	const char *const *specs = tn_conf_list(md->conf, "mapd_listen");
	size_t n = 0;

	while (specs[n] != NULL)
		n++;
	if (n == 0) {
		tn_error("mapd_listen is empty: nothing to serve");
		return -1;
	}
	md->listeners = tn_mem_calloc(n, sizeof(*md->listeners));
	for (size_t i = 0; i < n; i++) {
		struct mapd_listener *l = &md->listeners[md->nlisteners];

		if ((l->evl = mapd_listen_one(md, specs[i], &l->unix_path)) == NULL) {
			tn_mem_free(&l->unix_path);
			return -1;
		}
		md->nlisteners++;
	}
	return 0;
}

/* --- life cycle ---------------------------------------------------------------------- */

static void mapd_signal(evutil_socket_t sig, short what, void *arg)
{
	struct mapd *md = arg;

	(void)what;
	if (sig == SIGHUP) {
		tn_info("SIGHUP: nothing to reload (restart to apply new settings)");
		return;
	}
	tn_info("stopping (signal %d)", (int)sig);
	event_base_loopbreak(md->base);
}

static void mapd_events_setup(struct mapd *md)
{
	md->sig_term = evsignal_new(md->base, SIGTERM, mapd_signal, md);
	md->sig_int = evsignal_new(md->base, SIGINT, mapd_signal, md);
	md->sig_hup = evsignal_new(md->base, SIGHUP, mapd_signal, md);
	event_add(md->sig_term, NULL);
	event_add(md->sig_int, NULL);
	event_add(md->sig_hup, NULL);
}

static void mapd_settings(struct mapd *md)
{
	int64_t idle = tn_conf_time_ms(md->conf, "mapd_idle_timeout");

	md->max_request = (size_t)tn_conf_size(md->conf, "mapd_max_request_size");
	md->timeout = tn_conf_time_ms(md->conf, "mapd_lookup_timeout");
	md->max_conns = (uint64_t)tn_conf_int(md->conf, "mapd_max_connections");
	md->idle.tv_sec = idle / 1000;
	md->idle.tv_usec = (idle % 1000) * 1000;
}

static int mapd_check_settings(struct mapd *md, const char **error_r)
{
	const char *mode = tn_conf_str(md->conf, "mapd_socket_mode");
	char *end;
	unsigned long v = strtoul(mode, &end, 8);

	if (*mode == '\0' || *end != '\0' || v > 0777) {
		*error_r = "mapd_socket_mode: expected an octal mode such as 0660";
		return -1;
	}
	return 0;
}

static int mapd_start(struct mapd *md)
{
	const char *error, *listen = tn_conf_str(md->conf, "mapd_metrics_listen");

	if ((md->lk = tn_lookup_create(md->conf, 0, &error)) == NULL) {
		tn_error("%s", error);
		return EX_CONFIG;
	}
	md->base = event_base_new();
	mapd_events_setup(md);
	if (mapd_listen(md) < 0)
		return EX_UNAVAILABLE;
	if (tn_daemon_drop_privileges("mapd_user", tn_conf_str(md->conf, "mapd_user")) < 0)
		return EX_NOPERM;
	if (tn_lookup_start(md->lk, &error) < 0) {
		tn_error("%s", error);
		return EX_UNAVAILABLE;
	}
	md->le = tn_lookup_event_create(md->base, md->lk,
					(unsigned)tn_conf_int(md->conf, "mapd_workers"));
	if (md->le == NULL) {
		tn_error("cannot start the lookup threads: %s", strerror(errno));
		return EX_OSERR;
	}
	if (*listen != '\0' &&
	    (md->metrics = tn_mapd_metrics_start(listen, &md->stats, md->lk, &error)) == NULL) {
		tn_error("%s", error);
		return EX_UNAVAILABLE;
	}
	return 0;
}

static int mapd_run(struct mapd *md)
{
	const char *error;
	int ret;

	mapd_settings(md);
	if (mapd_check_settings(md, &error) < 0) {
		tn_error("%s", error);
		return EX_CONFIG;
	}
	if ((ret = mapd_start(md)) != 0)
		return ret;
	tn_info("started: %u socket%s, /metrics on %s", md->nlisteners,
		md->nlisteners == 1 ? "" : "s",
		*tn_conf_str(md->conf, "mapd_metrics_listen") != '\0' ?
		tn_conf_str(md->conf, "mapd_metrics_listen") : "(off)");
	event_base_dispatch(md->base);
	tn_info("stopped");
	return 0;
}

static void mapd_teardown(struct mapd *md)
{
	struct event *evs[] = { md->sig_term, md->sig_int, md->sig_hup };

	tn_mapd_metrics_stop(&md->metrics);
	for (unsigned i = 0; i < md->nlisteners; i++) {
		evconnlistener_free(md->listeners[i].evl);
		if (md->listeners[i].unix_path != NULL)
			unlink(md->listeners[i].unix_path);
		tn_mem_free(&md->listeners[i].unix_path);
	}
	tn_mem_free(&md->listeners);
	/* open connections first (their lookups are cancelled), then the
	 * adapter, so that no callback runs after this point */
	while (md->conns != NULL)
		mapd_conn_free(md->conns);
	tn_lookup_event_destroy(&md->le);
	for (size_t i = 0; i < sizeof(evs) / sizeof(evs[0]); i++) {
		if (evs[i] != NULL)
			event_free(evs[i]);
	}
	if (md->base != NULL)
		event_base_free(md->base);
	tn_lookup_destroy(&md->lk);
	tn_conf_destroy(&md->conf);
}

static int mapd_check(struct mapd *md)
{
	const char *error;

	if (mapd_check_settings(md, &error) < 0) {
		fprintf(stderr, "tn-mapd: %s\n", error);
		return EX_CONFIG;
	}
	tn_conf_dump(md->conf, stdout, TN_CONF_DUMP_CHANGED);
	return 0;
}

int main(int argc, char **argv)
{
	struct mapd md = { 0 };
	bool check = false;
	int ret;

	signal(SIGPIPE, SIG_IGN);
	if ((ret = tn_daemon_configure("tn-mapd", mapd_tables, "mapd_log_level", argc, argv,
				       &md.conf, &check)) != 0)
		return ret;
	ret = check ? mapd_check(&md) : mapd_run(&md);
	mapd_teardown(&md);
	return ret;
}
