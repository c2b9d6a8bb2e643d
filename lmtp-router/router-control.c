/*++
 * NAME
 *	router-control 3
 * SUMMARY
 *	tn-lmtp-router's control socket
 * DESCRIPTION
 *	A unix stream socket (router_control_socket, mode 0600: root and
 *	router_user) with a line protocol that tnctl or an admin with
 *	socat can speak. One command per line (at most 1024 bytes); each
 *	answer is zero or more data lines followed by one line that starts
 *	with "ok" or "error". Commands, through a {name, handler} table:
 *
 *	route ADDRESS   where a recipient would go now (a real lookup):
 *	                "ok route via=pool pool=P tenant=T members=A,B"
 *	                (members in the order they would be tried), or
 *	                "ok refuse CODE X.Y.Z text (why)"
 *	drain MEMBER    new mail goes to the other members of its pools;
 *	                it still takes mail when no other member can
 *	undrain MEMBER
 *	pools           one line per member:
 *	                "member POOL HOST:PORT up|down drained|active
 *	                 failures=N idle=N conns=N" (POOL "-" for a host
 *	                 only named by mailboxes), then "ok N"
 *	quit            closes the connection
 *--*/
#include "tn-build.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "router.h"
#include "tn-mem.h"

#define CONTROL_LINE_MAX 1024

struct control_conn {
	struct tn_router *r;
	struct bufferevent *bev;
	struct tn_lookup_request *req;
	char *address;
	bool closing;
	bool quitting;			/* close once the output is written */
};

struct tn_router_control {
	struct evconnlistener *listener;
	char *path;
	ino_t ino;			/* removed at exit only if still ours */
};

struct control_cmd {
	const char *name;
	void (*handler)(struct control_conn *cc, const char *arg);
};

static void control_process(struct control_conn *cc);

static void control_free_cb(evutil_socket_t fd, short what, void *arg)
{
	struct control_conn *cc = arg;

	(void)fd;
	(void)what;
	tn_mem_free(&cc->address);
	tn_mem_free(&cc);
}

static void control_close(struct control_conn *cc)
{
	if (cc->closing)
		return;
	cc->closing = true;
	if (cc->req != NULL)
		tn_lookup_event_cancel(cc->req);
	cc->req = NULL;
	bufferevent_free(cc->bev);
	event_base_once(cc->r->base, -1, EV_TIMEOUT, control_free_cb, cc, &(struct timeval){ 0, 0 });
}

static void control_send(struct control_conn *cc, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void control_send(struct control_conn *cc, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	evbuffer_add_vprintf(bufferevent_get_output(cc->bev), fmt, ap);
	va_end(ap);
	evbuffer_add(bufferevent_get_output(cc->bev), "\n", 1);
}

/* --- route ------------------------------------------------------------------------- */

static void control_route_members(struct control_conn *cc, const struct tn_router_route *rt,
				  char *buf, size_t size)
{
	struct tn_router *r = cc->r;
	struct tn_router_member_state st[64];
	struct tn_router_member *m[64];
	size_t order[64], n = 0, k, len = 0;

	if (rt->host != NULL) {
		m[n++] = tn_router_store_member(r, rt->host, false);
	} else {
		for (size_t j = 0; j < tn_router_route_nmembers(r->pools, (size_t)rt->pool) && n < 64;
		     j++)
			m[n++] = tn_router_store_member_find(r, tn_router_route_member(
				r->pools, (size_t)rt->pool, j));
	}
	for (size_t j = 0; j < n; j++)
		st[j] = (struct tn_router_member_state){ m[j]->up, m[j]->drained };
	k = tn_router_route_order(st, n, order);
	buf[0] = '\0';
	for (size_t j = 0; j < k && len < size; j++)
		len += (size_t)snprintf(buf + len, size - len, "%s%s", j > 0 ? "," : "",
					m[order[j]]->name);
	if (k == 0)
		snprintf(buf, size, "none");
}

static void control_route_cb(enum tn_result res, struct tn_account *acct, const char *error,
			     void *context)
{
	struct control_conn *cc = context;
	struct tn_router_route rt;
	char members[1024];

	cc->req = NULL;
	tn_router_route_decide(cc->r->pools, res, acct, &rt);
	if (rt.verdict == TN_ROUTER_ROUTE) {
		control_route_members(cc, &rt, members, sizeof(members));
		control_send(cc, "ok route via=%s pool=%s host=%s tenant=%s status=%s members=%s",
			     tn_router_route_via_name(rt.via),
			     rt.pool >= 0 ? tn_router_route_pool_name(cc->r->pools,
								       (size_t)rt.pool) : "-",
			     rt.host != NULL ? rt.host : "-", acct->tenant,
			     tn_status_name(acct->status), members);
	} else {
		control_send(cc, "ok refuse %s (%s%s%s)", rt.reply, rt.why,
			     res == TN_TEMPFAIL && error != NULL ? ": " : "",
			     res == TN_TEMPFAIL && error != NULL ? error : "");
	}
	tn_router_route_clear(&rt);
	tn_account_free(&acct);
	tn_mem_free(&cc->address);
	control_process(cc);
}

static void control_route(struct control_conn *cc, const char *arg)
{
	if (*arg == '\0' || strchr(arg, ' ') != NULL) {
		control_send(cc, "error usage: route ADDRESS");
		return;
	}
	cc->address = tn_mem_strdup(arg);
	cc->req = tn_lookup_event_resolve(cc->r->le, cc->address, 0, control_route_cb, cc);
}

/* --- drain, pools -------------------------------------------------------------------- */

static struct tn_router_member *control_member(struct control_conn *cc, const char *arg)
{
	struct tn_router_member *m;
	char *name;
	const char *error;

	if (tn_router_route_hostport(arg, 24, &name, &error) < 0) {
		control_send(cc, "error %s", error);
		return NULL;
	}
	m = tn_router_store_member_find(cc->r, name);
	if (m == NULL)
		control_send(cc, "error no member %s", name);
	tn_mem_free(&name);
	return m;
}

static void control_drain(struct control_conn *cc, const char *arg)
{
	struct tn_router_member *m = control_member(cc, arg);

	if (m == NULL)
		return;
	tn_router_store_drain(m, true);
	control_send(cc, "ok drained %s", m->name);
}

static void control_undrain(struct control_conn *cc, const char *arg)
{
	struct tn_router_member *m = control_member(cc, arg);

	if (m == NULL)
		return;
	tn_router_store_drain(m, false);
	control_send(cc, "ok undrained %s", m->name);
}

static void control_member_line(struct control_conn *cc, const char *pool,
				const struct tn_router_member *m)
{
	control_send(cc, "member %s %s %s %s failures=%u idle=%u conns=%u", pool, m->name,
		     m->up ? "up" : "down", m->drained ? "drained" : "active", m->failures,
		     m->nidle, m->nconns);
}

static void control_pools(struct control_conn *cc, const char *arg)
{
	struct tn_router *r = cc->r;
	size_t n = 0;

	(void)arg;
	for (size_t i = 0; i < tn_router_route_npools(r->pools); i++) {
		for (size_t j = 0; j < tn_router_route_nmembers(r->pools, i); j++, n++)
			control_member_line(cc, tn_router_route_pool_name(r->pools, i),
					    tn_router_store_member_find(r,
						tn_router_route_member(r->pools, i, j)));
	}
	for (size_t i = 0; i < r->nmembers; i++) {
		if (!r->members[i]->configured) {
			control_member_line(cc, "-", r->members[i]);
			n++;
		}
	}
	control_send(cc, "ok %zu", n);
}

/* Close once what was said is written (and the rest is discarded). */
static void control_finish(struct control_conn *cc)
{
	struct evbuffer *in = bufferevent_get_input(cc->bev);

	cc->quitting = true;
	evbuffer_drain(in, evbuffer_get_length(in));
	bufferevent_disable(cc->bev, EV_READ);
	shutdown(bufferevent_getfd(cc->bev), SHUT_RD);
}

static void control_quit(struct control_conn *cc, const char *arg)
{
	(void)arg;
	control_send(cc, "ok bye");
	control_finish(cc);
}

static const struct control_cmd control_cmds[] = {
	{ "route", control_route },
	{ "drain", control_drain },
	{ "undrain", control_undrain },
	{ "pools", control_pools },
	{ "quit", control_quit },
	{ NULL, NULL },
};

static void control_line(struct control_conn *cc, char *line)
{
	char *arg = strchr(line, ' ');

	if (arg != NULL) {
		*arg++ = '\0';
		while (*arg == ' ')
			arg++;
	} else {
		arg = line + strlen(line);
	}
	for (const struct control_cmd *c = control_cmds; c->name != NULL; c++) {
		if (strcmp(line, c->name) == 0) {
			c->handler(cc, arg);
			return;
		}
	}
	control_send(cc, "error unknown command (route, drain, undrain, pools, quit)");
}

static void control_process(struct control_conn *cc)
{
	struct evbuffer *in;
	char *line;
	size_t len;

	while (!cc->closing && !cc->quitting && cc->req == NULL) {
		in = bufferevent_get_input(cc->bev);
		line = evbuffer_readln(in, &len, EVBUFFER_EOL_CRLF);
		if (line == NULL) {
			if (evbuffer_get_length(in) > CONTROL_LINE_MAX) {
				control_send(cc, "error line too long");
				control_finish(cc);
			}
			return;
		}
		if (len > CONTROL_LINE_MAX || memchr(line, '\0', len) != NULL)
			control_send(cc, "error bad line");
		else if (len > 0)
			control_line(cc, line);
		free(line);
	}
}

static void control_read_cb(struct bufferevent *bev, void *arg)
{
	(void)bev;
	control_process(arg);
}

static void control_write_cb(struct bufferevent *bev, void *arg)
{
	struct control_conn *cc = arg;

	(void)bev;
	if (cc->quitting)
		control_close(cc);
}

static void control_event_cb(struct bufferevent *bev, short what, void *arg)
{
	(void)bev;
	(void)what;
	control_close(arg);
}

static void control_accept_cb(struct evconnlistener *l, evutil_socket_t fd,
			      struct sockaddr *sa, int salen, void *arg)
{
	struct tn_router *r = arg;
	struct control_conn *cc = tn_mem_calloc(1, sizeof(*cc));
	struct timeval tv = { 300, 0 };

	(void)l;
	(void)sa;
	(void)salen;
	cc->r = r;
	cc->bev = bufferevent_socket_new(r->base, fd, BEV_OPT_CLOSE_ON_FREE);
	bufferevent_setcb(cc->bev, control_read_cb, control_write_cb, control_event_cb, cc);
	bufferevent_set_timeouts(cc->bev, &tv, &tv);
	bufferevent_enable(cc->bev, EV_READ | EV_WRITE);
}

int tn_router_control_start(struct tn_router *r, const char *path, const char **error_r)
{
	static char err[300];
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	struct tn_router_control *ctl;
	struct stat st;
	mode_t old;

	if (strlen(path) >= sizeof(sun.sun_path)) {
		*error_r = "router_control_socket: path too long";
		return -1;
	}
	strcpy(sun.sun_path, path);
	unlink(path);
	ctl = tn_mem_calloc(1, sizeof(*ctl));
	old = umask(0077);
	ctl->listener = evconnlistener_new_bind(r->base, control_accept_cb, r,
						LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, 16,
						(struct sockaddr *)&sun, sizeof(sun));
	umask(old);
	if (ctl->listener == NULL) {
		snprintf(err, sizeof(err), "router_control_socket %s: %s", path, strerror(errno));
		*error_r = err;
		tn_mem_free(&ctl);
		return -1;
	}
	ctl->path = tn_mem_strdup(path);
	ctl->ino = stat(path, &st) == 0 ? st.st_ino : 0;
	r->control = ctl;
	return 0;
}

/* The socket belongs to the user the router runs as (after the drop). */
int tn_router_control_chown(struct tn_router *r, uid_t uid, gid_t gid)
{
	if (r->control == NULL)
		return 0;
	return chown(r->control->path, uid, gid);
}

void tn_router_control_stop(struct tn_router *r)
{
	struct tn_router_control *ctl = r->control;
	struct stat st;

	if (ctl == NULL)
		return;
	r->control = NULL;
	evconnlistener_free(ctl->listener);
	if (stat(ctl->path, &st) == 0 && st.st_ino == ctl->ino)
		unlink(ctl->path);
	tn_mem_free(&ctl->path);
	tn_mem_free(&ctl);
}
