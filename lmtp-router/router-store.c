/*++
 * NAME
 *	router-store 3
 * SUMMARY
 *	tn-lmtp-router's side towards the stores: members, pooled LMTP
 *	connections, per-destination transactions, health
 * DESCRIPTION
 *	A member is one store, "host:port". Its connections are opened
 *	with bufferevent_socket_connect_hostname() (evdns: a name never
 *	blocks the loop), greeted with LHLO once, and kept idle after a
 *	transaction (router_store_idle_max per member, closed after
 *	router_store_idle_timeout). A connection that served a transaction
 *	starts the next one with RSET. Capabilities are read from the LHLO
 *	reply of each connection (PIPELINING, SIZE, 8BITMIME).
 *
 *	A dtx is one session's transaction towards one destination. It
 *	tries the candidates (router-route: up and not drained members
 *	first) in order: a refused or timed-out connection, a 421, or a
 *	failure before any reply on a fresh connection moves it to the next
 *	member, until one answers or none is left (451 4.4.1 for its
 *	recipients). The envelope is pipelined when the store offers
 *	PIPELINING: [RSET] MAIL RCPT... DATA. Message data that arrives
 *	before the store's 354 waits in the dtx's pending buffer; after it,
 *	the data goes straight to the connection's output buffer. Both are
 *	bounded by the session's flow control (router_buffer_*_watermark):
 *	a low write watermark on the connection tells the session when to
 *	read again. Once data has been written a failure is final for the
 *	message: its recipients get 451 4.4.2 and the connection is closed
 *	(the store discards a message without its final dot), never reused.
 *
 *	Replies of the store are kept per recipient and handed to the
 *	session only when the dtx is finished; the session is told through
 *	a deferred event (tn_router_session_dtx_progress), so nothing a
 *	callback of this file holds on its stack is freed under it.
 *
 *	Health: passive, every connect failure, timeout, 421 or lost
 *	connection counts against the member; router_health_failures in a
 *	row mark it down (not tried). Active, every router_health_interval:
 *	NOOP on an idle connection, or a new connection with LHLO; success
 *	marks the member up again.
 *--*/
#include "tn-build.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "router.h"
#include "tn-mem.h"

#define STORE_LINE_MAX 4096
#define STORE_TEXT_MAX 512

/* XCLIENT attributes the router sends */
#define XC_ADDR 0x01
#define XC_HELO 0x02
#define XC_SESSION 0x04

enum conn_state {
	CS_CONNECTING,
	CS_GREETING,
	CS_LHLO,
	CS_XCLIENT,			/* XCLIENT sent, its 220 awaited */
	CS_RELHLO,			/* LHLO again after XCLIENT */
	CS_IDLE,
	CS_NOOP,
	CS_ENVELOPE,
	CS_DATA,
	CS_DOT,
	CS_QUIT,
	CS_DEAD,
};

struct tn_router_conn {
	struct tn_router_member *m;
	struct bufferevent *bev;
	enum conn_state state;
	bool pipelining, size_ok, eightbit;
	unsigned xclient;		/* XCLIENT attributes offered (XC_*) */
	bool xc_pipelined;		/* XCLIENT, LHLO and the envelope in one write */
	bool xc_refused;		/* the store refused XCLIENT: never again */
	bool reused;			/* served a transaction: RSET first */
	bool replied;			/* any reply read on this connection */
	bool health;			/* a health check connection */
	struct tn_router_dtx *dtx;
	struct tn_router_conn *next;	/* idle list */
	struct tn_router_conn *all_prev, *all_next;	/* member's conns */
};

enum dtx_state {
	DS_NEW,
	DS_CONNECTING,
	DS_ENVELOPE,
	DS_DATA,
	DS_DOT,
	DS_DONE,
};

struct dtx_rcpt {
	size_t rcpt;			/* index in the session */
	bool store_ok;			/* the store accepted the RCPT */
	bool answered;
	int code;
	char *text;
};

struct tn_router_dtx {
	struct tn_router_session *s;
	char *key;
	struct tn_router_member **cands;
	size_t ncands, cand;
	struct dtx_rcpt *rcpts;
	size_t nrcpts, naccepted, ndot;
	struct tn_router_conn *conn;
	struct evbuffer *pending;
	enum dtx_state state;
	bool finished;			/* the session's data is complete */
	bool retried_fresh;
	bool rset;
	bool pooled;			/* the connection came from the idle pool */
	size_t ncmds, nsent, nreplies;
	int mail_code;
	char *mail_text;
	int64_t t_dot_us;
	char *member;			/* the member that answered */
	/* waiting for a connection of a member at router_store_max_connections */
	struct tn_router_member *waiting;
	struct tn_router_dtx *wait_next;
	struct event *wait_ev;
	bool busy;			/* the last member tried was full */
};

static const double store_lat_bounds[ROUTER_LAT_BUCKETS] = {
	0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5,
};

static void conn_event_cb(struct bufferevent *bev, short what, void *arg);
static void conn_read_cb(struct bufferevent *bev, void *arg);
static void conn_write_cb(struct bufferevent *bev, void *arg);
static void dtx_next_member(struct tn_router_dtx *d);
static void dtx_conn_ready(struct tn_router_dtx *d);
static void dtx_envelope_begin(struct tn_router_dtx *d, bool rset);
static void dtx_conn_failed(struct tn_router_dtx *d, const char *why);
static void dtx_reply(struct tn_router_dtx *d, int code, const char *text);
static void member_wake(struct tn_router_member *m);
static void dtx_dot_sent(struct tn_router_dtx *d);

const char *tn_router_store_error_name(enum tn_router_store_error e)
{
	static const char *const names[TN_SE_N] = { "connect", "timeout", "421", "lost" };

	return names[e];
}

/* A store's reply text, bounded (tn_mem_strndup copies exactly n bytes). */
static char *store_text_dup(const char *text)
{
	return tn_mem_strndup(text, strnlen(text, STORE_TEXT_MAX));
}

static void store_timeval(tn_msec_t ms, struct timeval *tv)
{
	tv->tv_sec = ms / 1000;
	tv->tv_usec = (ms % 1000) * 1000;
}

/* --- members ---------------------------------------------------------------------- */

struct tn_router_member *tn_router_store_member_find(struct tn_router *r, const char *name)
{
	for (size_t i = 0; i < r->nmembers; i++) {
		if (strcmp(r->members[i]->name, name) == 0)
			return r->members[i];
	}
	return NULL;
}

struct tn_router_member *tn_router_store_member(struct tn_router *r, const char *name,
						bool configured)
{
	struct tn_router_member *m = tn_router_store_member_find(r, name);

	if (m != NULL) {
		m->configured |= configured;
		return m;
	}
	m = tn_mem_calloc(1, sizeof(*m));
	m->r = r;
	m->name = tn_mem_strdup(name);
	if (tn_router_route_split(name, &m->host, &m->port) < 0)
		abort();	/* names come normalised from router-route */
	m->configured = configured;
	m->up = true;
	r->members = tn_mem_realloc(r->members, (r->nmembers + 1) * sizeof(m));
	r->members[r->nmembers++] = m;
	return m;
}

static void member_failed(struct tn_router_member *m, enum tn_router_store_error kind,
			  const char *why)
{
	m->errors[kind]++;
	m->failures++;
	tn_mem_free(&m->last_error);
	m->last_error = tn_mem_strdup(why);
	if (m->up && m->failures >= m->r->set.fail_threshold) {
		m->up = false;
		tn_log(TN_LOG_WARNING, NULL, "store %s marked down after %u failure%s: %s",
		       m->name, m->failures, m->failures == 1 ? "" : "s", why);
	}
}

static void member_ok(struct tn_router_member *m)
{
	m->failures = 0;
	if (!m->up) {
		m->up = true;
		tn_info("store %s is up again", m->name);
	}
}

void tn_router_store_drain(struct tn_router_member *m, bool drain)
{
	if (m->drained != drain)
		tn_info("store %s %s", m->name, drain ? "drained: new mail goes to the next member"
			: "undrained: takes new mail again");
	m->drained = drain;
}

static void member_record_latency(struct tn_router_member *m, int64_t us)
{
	double s = (double)us / 1e6;

	m->transactions++;
	m->lat_count++;
	m->lat_sum += s;
	for (size_t i = 0; i < ROUTER_LAT_BUCKETS; i++) {
		if (s <= store_lat_bounds[i])
			m->lat_buckets[i]++;
	}
}

/* --- connections -------------------------------------------------------------------- */

static void conn_free_cb(evutil_socket_t fd, short what, void *arg)
{
	struct tn_router_conn *c = arg;

	(void)fd;
	(void)what;
	tn_mem_free(&c);
}

static void conn_unlink_idle(struct tn_router_conn *c)
{
	struct tn_router_conn **pp;

	for (pp = &c->m->idle; *pp != NULL; pp = &(*pp)->next) {
		if (*pp == c) {
			*pp = c->next;
			c->m->nidle--;
			break;
		}
	}
	c->next = NULL;
}

/* Close now; the struct is freed from the loop (callbacks may hold it). */
static void conn_close(struct tn_router_conn *c)
{
	if (c->state == CS_DEAD)
		return;
	if (c->state == CS_IDLE || c->state == CS_NOOP)
		conn_unlink_idle(c);
	if (c->m->health == c)
		c->m->health = NULL;
	c->state = CS_DEAD;
	c->m->nconns--;
	if (c->all_prev != NULL)
		c->all_prev->all_next = c->all_next;
	else
		c->m->conns = c->all_next;
	if (c->all_next != NULL)
		c->all_next->all_prev = c->all_prev;
	bufferevent_free(c->bev);
	c->bev = NULL;
	c->dtx = NULL;
	event_base_once(c->m->r->base, -1, EV_TIMEOUT, conn_free_cb, c, &(struct timeval){ 0, 0 });
	member_wake(c->m);
}

static void conn_send(struct tn_router_conn *c, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void conn_send(struct tn_router_conn *c, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	evbuffer_add_vprintf(bufferevent_get_output(c->bev), fmt, ap);
	va_end(ap);
}

static void conn_set_timeouts(struct tn_router_conn *c, tn_msec_t read_ms, tn_msec_t write_ms)
{
	struct timeval rtv, wtv;

	store_timeval(read_ms, &rtv);
	store_timeval(write_ms, &wtv);
	bufferevent_set_timeouts(c->bev, &rtv, &wtv);
}

static void conn_fail_later_cb(evutil_socket_t fd, short what, void *arg);

static struct tn_router_conn *conn_open(struct tn_router_member *m, bool health)
{
	struct tn_router *r = m->r;
	struct tn_router_conn *c = tn_mem_calloc(1, sizeof(*c));

	c->m = m;
	c->health = health;
	c->state = CS_CONNECTING;
	c->bev = bufferevent_socket_new(r->base, -1, BEV_OPT_CLOSE_ON_FREE);
	m->nconns++;
	c->all_next = m->conns;
	if (c->all_next != NULL)
		c->all_next->all_prev = c;
	m->conns = c;
	bufferevent_setcb(c->bev, conn_read_cb, conn_write_cb, conn_event_cb, c);
	bufferevent_setwatermark(c->bev, EV_WRITE, r->set.low_wm, 0);
	conn_set_timeouts(c, r->set.connect_timeout + r->set.store_timeout, r->set.connect_timeout);
	bufferevent_enable(c->bev, EV_READ | EV_WRITE);
	if (bufferevent_socket_connect_hostname(c->bev, r->dns, AF_UNSPEC, m->host,
						(int)m->port) < 0)
		event_base_once(r->base, -1, EV_TIMEOUT, conn_fail_later_cb, c,
				&(struct timeval){ 0, 0 });
	return c;
}

static void conn_to_idle(struct tn_router_conn *c)
{
	struct tn_router_member *m = c->m;

	c->dtx = NULL;
	if (m->r->stopping || m->nidle >= m->r->set.idle_max) {
		c->state = CS_QUIT;
		conn_send(c, "QUIT\r\n");
		conn_set_timeouts(c, 2000, 2000);
		return;
	}
	c->state = CS_IDLE;
	c->next = m->idle;
	m->idle = c;
	m->nidle++;
	conn_set_timeouts(c, m->r->set.idle_timeout, m->r->set.store_timeout);
	member_wake(m);
}

static struct tn_router_conn *conn_take_idle(struct tn_router_member *m)
{
	struct tn_router_conn *c;

	for (c = m->idle; c != NULL; c = c->next) {
		if (c->state == CS_IDLE)
			break;
	}
	if (c == NULL)
		return NULL;
	conn_unlink_idle(c);
	conn_set_timeouts(c, m->r->set.store_timeout, m->r->set.store_timeout);
	return c;
}

/* A failure of the connection: counted against the member unless it was
 * an idle connection closing (the store's own idle timeout). */
static void conn_fail(struct tn_router_conn *c, enum tn_router_store_error kind,
		      const char *why)
{
	struct tn_router_dtx *d = c->dtx;
	/* an idle connection the store closed meanwhile: try a fresh one */
	bool stale = kind == TN_SE_LOST && d != NULL && d->pooled && !c->replied &&
		d->state <= DS_ENVELOPE;

	if (c->state == CS_IDLE || c->state == CS_QUIT) {
		conn_close(c);
		return;
	}
	if (!stale)
		member_failed(c->m, kind, why);
	if (c->health)
		tn_log(TN_LOG_DEBUG, NULL, "health check of %s failed: %s", c->m->name, why);
	else if (d != NULL)
		tn_log(TN_LOG_DEBUG, NULL, "session=%s: store %s failed: %s",
		       tn_router_session_id(d->s), c->m->name, why);
	conn_close(c);
	if (stale) {
		/* the store restarted or dropped its idle clients: the other
		 * idle connections of this member are as old as this one */
		while (c->m->idle != NULL)
			conn_close(c->m->idle);
	}
	if (d != NULL) {
		d->conn = NULL;
		if (stale && !d->retried_fresh) {
			d->retried_fresh = true;
			d->cand--;	/* the same member again, on a fresh connection */
		}
		dtx_conn_failed(d, why);
	}
}

static void conn_fail_later_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	conn_fail(arg, TN_SE_CONNECT, "cannot connect");
}

static void conn_ready(struct tn_router_conn *c)
{
	if (c->health) {
		c->health = false;
		c->m->health = NULL;
		member_ok(c->m);
		conn_to_idle(c);
		return;
	}
	if (c->dtx != NULL)
		dtx_conn_ready(c->dtx);
	else
		conn_to_idle(c);
}

static void conn_xclient_caps(struct tn_router_conn *c, const char *attrs)
{
	static const struct { const char *name; unsigned flag; } names[] = {
		{ "ADDR", XC_ADDR }, { "HELO", XC_HELO }, { "SESSION", XC_SESSION },
	};
	const char *p = attrs;

	c->xclient = 0;
	while (*p != '\0') {
		size_t n = strcspn(p, " ");

		for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
			if (n == strlen(names[i].name) && strncasecmp(p, names[i].name, n) == 0)
				c->xclient |= names[i].flag;
		}
		p += n;
		p += strspn(p, " ");
	}
}

static void conn_capability(struct tn_router_conn *c, const char *cap)
{
	if (strncasecmp(cap, "XCLIENT ", 8) == 0)
		conn_xclient_caps(c, cap + 8);
	else if (strncasecmp(cap, "PIPELINING", 10) == 0)
		c->pipelining = true;
	else if (strncasecmp(cap, "SIZE", 4) == 0)
		c->size_ok = true;
	else if (strncasecmp(cap, "8BITMIME", 8) == 0)
		c->eightbit = true;
}

static void conn_final_reply(struct tn_router_conn *c, int code, const char *text)
{
	c->replied = true;
	if (code == 421 && c->state != CS_QUIT) {
		conn_fail(c, TN_SE_421, text);
		return;
	}
	switch (c->state) {
	case CS_GREETING:
		if (code != 220) {
			conn_fail(c, TN_SE_LOST, "bad greeting");
			return;
		}
		if (strstr(text, c->m->r->instance) != NULL) {
			if (!c->m->loop)
				tn_error("store %s is this tn-lmtp-router itself (a routing loop): "
					 "fix router_pool_members or the mailbox's tnMailHost",
					 c->m->name);
			c->m->loop = true;
			conn_fail(c, TN_SE_LOST, "routing loop: the store is this router");
			return;
		}
		c->state = CS_LHLO;
		conn_send(c, "LHLO %s\r\n", c->m->r->set.hostname);
		return;
	case CS_LHLO:
	case CS_NOOP:
		if (code != 250) {
			conn_fail(c, TN_SE_LOST, code == 0 ? "bad reply" : "LHLO/NOOP refused");
			return;
		}
		if (c->state == CS_NOOP) {
			member_ok(c->m);
			conn_to_idle(c);
			return;
		}
		conn_ready(c);
		return;
	case CS_XCLIENT:
	case CS_RELHLO:
	case CS_ENVELOPE:
	case CS_DOT:
		dtx_reply(c->dtx, code, text);
		return;
	case CS_QUIT:
		conn_close(c);
		return;
	default:
		conn_fail(c, TN_SE_LOST, "unexpected reply");
		return;
	}
}

/* One reply line: "NNN-text" continues, "NNN text" ends a reply. */
static void conn_line(struct tn_router_conn *c, const char *line, size_t len)
{
	int code = 0;

	if (len >= 3 && line[0] >= '1' && line[0] <= '5' && line[1] >= '0' && line[1] <= '9' &&
	    line[2] >= '0' && line[2] <= '9' && (len == 3 || line[3] == ' ' || line[3] == '-'))
		code = (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');
	if (code == 0) {
		conn_fail(c, TN_SE_LOST, "malformed reply");
		return;
	}
	if ((c->state == CS_LHLO || c->state == CS_RELHLO) && len > 4)
		conn_capability(c, line + 4);
	if (len > 3 && line[3] == '-')
		return;
	conn_final_reply(c, code, len > 4 ? line + 4 : "");
}

static void conn_read_cb(struct bufferevent *bev, void *arg)
{
	struct tn_router_conn *c = arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	char *line;
	size_t len;

	while (c->state != CS_DEAD &&
	       (line = evbuffer_readln(in, &len, EVBUFFER_EOL_CRLF)) != NULL) {
		if (len > STORE_LINE_MAX)
			line[STORE_LINE_MAX] = '\0', len = STORE_LINE_MAX;
		conn_line(c, line, len);
		free(line);
	}
	if (c->state != CS_DEAD && evbuffer_get_length(in) > STORE_LINE_MAX)
		conn_fail(c, TN_SE_LOST, "reply line too long");
}

static void conn_write_cb(struct bufferevent *bev, void *arg)
{
	struct tn_router_conn *c = arg;

	(void)bev;
	if (c->dtx != NULL && c->dtx->s != NULL)
		tn_router_session_dtx_progress(c->dtx->s);
}

static void conn_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct tn_router_conn *c = arg;
	struct tn_router *r = c->m->r;

	(void)bev;
	if (what & BEV_EVENT_CONNECTED) {
		int one = 1;

		setsockopt(bufferevent_getfd(c->bev), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		/* a store that accepts and does not greet is as bad as one that
		 * does not accept: the same (short) timeout until LHLO is done */
		c->state = CS_GREETING;
		conn_set_timeouts(c, r->set.connect_timeout, r->set.connect_timeout);
		return;
	}
	if (what & BEV_EVENT_TIMEOUT)
		conn_fail(c, c->state == CS_CONNECTING ? TN_SE_CONNECT : TN_SE_TIMEOUT,
			  c->state == CS_CONNECTING ? "connect timeout" : "no reply in time");
	else if (c->state == CS_CONNECTING)
		conn_fail(c, TN_SE_CONNECT, what & BEV_EVENT_ERROR ?
			  (errno == ECONNREFUSED ? "connection refused" : "cannot connect") :
			  "connection closed");
	else
		conn_fail(c, TN_SE_LOST, "connection lost");
}

/* --- health ------------------------------------------------------------------------- */

static void store_health_member(struct tn_router_member *m)
{
	struct tn_router_conn *c;

	if (m->health != NULL)
		return;
	if (m->up && (c = conn_take_idle(m)) != NULL) {
		c->state = CS_NOOP;
		conn_set_timeouts(c, m->r->set.connect_timeout, m->r->set.connect_timeout);
		conn_send(c, "NOOP\r\n");
		return;
	}
	m->health = conn_open(m, true);
}

static void store_health_cb(evutil_socket_t fd, short what, void *arg)
{
	struct tn_router *r = arg;

	(void)fd;
	(void)what;
	if (r->stopping)
		return;
	for (size_t i = 0; i < r->nmembers; i++)
		store_health_member(r->members[i]);
}

void tn_router_store_health_start(struct tn_router *r)
{
	struct timeval tv;

	store_timeval(r->set.health_interval, &tv);
	r->health_timer = event_new(r->base, -1, EV_PERSIST, store_health_cb, r);
	event_add(r->health_timer, &tv);
	store_health_cb(-1, 0, r);
}

void tn_router_store_free_all(struct tn_router *r)
{
	for (size_t i = 0; i < r->nmembers; i++) {
		struct tn_router_member *m = r->members[i];

		/* idle, health checks, QUIT sent: whatever no dtx holds */
		while (m->conns != NULL)
			conn_close(m->conns);
	}
	/* let the deferred frees run */
	event_base_loop(r->base, EVLOOP_NONBLOCK);
	for (size_t i = 0; i < r->nmembers; i++) {
		struct tn_router_member *m = r->members[i];

		tn_mem_free(&m->name);
		tn_mem_free(&m->host);
		tn_mem_free(&m->last_error);
		tn_mem_free(&m);
	}
	tn_mem_free(&r->members);
	r->nmembers = 0;
}

/* --- transactions ------------------------------------------------------------------- */

struct tn_router_dtx *tn_router_store_dtx_create(struct tn_router_session *s,
						 const char *key,
						 struct tn_router_member **cands, size_t ncands)
{
	struct tn_router_dtx *d = tn_mem_calloc(1, sizeof(*d));

	d->s = s;
	d->key = tn_mem_strdup(key);
	d->cands = tn_mem_calloc(ncands + 1, sizeof(*cands));
	memcpy(d->cands, cands, ncands * sizeof(*cands));
	d->ncands = ncands;
	d->pending = evbuffer_new();
	return d;
}

void tn_router_store_dtx_add_rcpt(struct tn_router_dtx *d, size_t rcpt)
{
	d->rcpts = tn_mem_realloc(d->rcpts, (d->nrcpts + 1) * sizeof(*d->rcpts));
	memset(&d->rcpts[d->nrcpts], 0, sizeof(*d->rcpts));
	d->rcpts[d->nrcpts++].rcpt = rcpt;
}

static void dtx_set_answer(struct dtx_rcpt *rc, int code, const char *text)
{
	tn_mem_free(&rc->text);
	rc->code = code;
	rc->text = store_text_dup(text);
	rc->answered = true;
}

/* Hand every recipient's answer to the session; the dtx is done. */
static void dtx_commit(struct tn_router_dtx *d)
{
	for (size_t i = 0; i < d->nrcpts; i++) {
		struct dtx_rcpt *rc = &d->rcpts[i];
		enum tn_router_result res = rc->code / 100 == 2 ? TN_RR_DELIVERED :
			TN_RR_STORE_REFUSED;

		if (!rc->answered)
			dtx_set_answer(rc, 451, "4.4.2 connection to the store lost");
		if (rc->code == 451 && strncmp(rc->text, "4.4.", 4) == 0)
			res = TN_RR_UNAVAILABLE;
		tn_router_session_rcpt_reply(d->s, rc->rcpt, rc->code, rc->text, res,
					     d->member != NULL ? d->member : "-");
	}
	d->state = DS_DONE;
	evbuffer_drain(d->pending, evbuffer_get_length(d->pending));
	tn_router_session_dtx_progress(d->s);
}

static void dtx_answer_all(struct tn_router_dtx *d, int code, const char *text)
{
	for (size_t i = 0; i < d->nrcpts; i++) {
		if (!d->rcpts[i].answered)
			dtx_set_answer(&d->rcpts[i], code, text);
	}
}

static void dtx_reset_answers(struct tn_router_dtx *d)
{
	for (size_t i = 0; i < d->nrcpts; i++) {
		tn_mem_free(&d->rcpts[i].text);
		d->rcpts[i].answered = false;
		d->rcpts[i].store_ok = false;
	}
	d->naccepted = 0;
	d->ndot = 0;
	d->nreplies = 0;
	d->nsent = 0;
	d->mail_code = 0;
	tn_mem_free(&d->mail_text);
}

/* A connection of m for d: an idle one, or a new one below the limit. */
static bool dtx_use_member(struct tn_router_dtx *d, struct tn_router_member *m)
{
	struct tn_router_conn *c = conn_take_idle(m);

	if (c == NULL) {
		if (m->nconns >= m->r->set.conns_max)
			return false;
		c = conn_open(m, false);
	}
	d->busy = false;
	c->dtx = d;
	d->conn = c;
	d->pooled = c->state == CS_IDLE;
	if (d->pooled)
		dtx_conn_ready(d);
	return true;
}

static void dtx_unwait(struct tn_router_dtx *d)
{
	struct tn_router_member *m = d->waiting;
	struct tn_router_dtx **pp;

	if (m == NULL)
		return;
	for (pp = &m->wait_head; *pp != NULL; pp = &(*pp)->wait_next) {
		if (*pp == d) {
			*pp = d->wait_next;
			break;
		}
	}
	m->wait_tail = &m->wait_head;
	while (*m->wait_tail != NULL)
		m->wait_tail = &(*m->wait_tail)->wait_next;
	d->waiting = NULL;
	d->wait_next = NULL;
	event_del(d->wait_ev);
}

/* Waited router_store_timeout for a connection: the next member. */
static void dtx_wait_timeout(evutil_socket_t fd, short what, void *arg)
{
	struct tn_router_dtx *d = arg;

	(void)fd;
	(void)what;
	tn_log(TN_LOG_WARNING, NULL, "session=%s: store %s busy (%u connections): next member",
	       tn_router_session_id(d->s), d->waiting->name, d->waiting->nconns);
	dtx_unwait(d);
	d->busy = true;
	dtx_next_member(d);
}

static void dtx_wait(struct tn_router_dtx *d, struct tn_router_member *m)
{
	struct timeval tv;

	store_timeval(m->r->set.store_timeout, &tv);
	if (m->wait_tail == NULL)
		m->wait_tail = &m->wait_head;
	d->waiting = m;
	d->wait_next = NULL;
	*m->wait_tail = d;
	m->wait_tail = &d->wait_next;
	if (d->wait_ev == NULL)
		d->wait_ev = evtimer_new(m->r->base, dtx_wait_timeout, d);
	evtimer_add(d->wait_ev, &tv);
}

/* A connection of m became idle, or one closed: waiters go on. */
static void member_wake(struct tn_router_member *m)
{
	struct tn_router_dtx *d;

	while ((d = m->wait_head) != NULL && !m->r->stopping &&
	       (m->idle != NULL || m->nconns < m->r->set.conns_max)) {
		dtx_unwait(d);
		if (!dtx_use_member(d, m))
			break;
	}
}

static void dtx_next_member(struct tn_router_dtx *d)
{
	struct tn_router_member *m;

	if (d->cand >= d->ncands) {
		tn_mem_free(&d->member);
		dtx_answer_all(d, 451, d->ncands == 0 ?
			       "4.4.1 no store of this pool is available, try again later" :
			       d->busy ? "4.4.5 the stores are busy, try again later" :
			       "4.4.1 no store answered, try again later");
		dtx_commit(d);
		return;
	}
	m = d->cands[d->cand++];
	d->state = DS_CONNECTING;
	dtx_reset_answers(d);
	if (!dtx_use_member(d, m))
		dtx_wait(d, m);
}

void tn_router_store_dtx_start(struct tn_router_dtx *d)
{
	dtx_next_member(d);
}

static void dtx_send_cmd(struct tn_router_dtx *d, size_t k)
{
	struct tn_router_conn *c = d->conn;
	struct tn_router_session *s = d->s;
	size_t first_rcpt = (d->rset ? 1 : 0) + 1;

	if (d->rset && k == 0) {
		conn_send(c, "RSET\r\n");
	} else if (k == first_rcpt - 1) {
		conn_send(c, "MAIL FROM:<%s>", tn_router_session_sender(s));
		if (c->size_ok && tn_router_session_size(s) > 0)
			conn_send(c, " SIZE=%llu", (unsigned long long)tn_router_session_size(s));
		if (c->eightbit && tn_router_session_8bit(s))
			conn_send(c, " BODY=8BITMIME");
		conn_send(c, "\r\n");
	} else if (k < first_rcpt + d->nrcpts) {
		conn_send(c, "RCPT TO:<%s>\r\n",
			  tn_router_session_rcpt_address(s, d->rcpts[k - first_rcpt].rcpt));
	} else {
		conn_send(c, "DATA\r\n");
	}
	d->nsent = k + 1;
}

/* A value safe to send as is (xtext needs no escape, no blank). */
static bool store_xtext_plain(const char *v)
{
	for (; *v != '\0'; v++) {
		if (*v <= ' ' || *v > '~' || *v == '+' || *v == '=')
			return false;
	}
	return true;
}

static void dtx_envelope_send(struct tn_router_dtx *d, bool rset);
static void dtx_envelope_enter(struct tn_router_dtx *d);

/* XCLIENT: the store logs the original client and our session id; it
 * answers 220 and wants LHLO again (then no RSET is needed). A store
 * that offers PIPELINING gets XCLIENT, LHLO and the whole envelope in
 * one write (Dovecot takes them in order), so XCLIENT costs no round
 * trip of its own; a refused XCLIENT (an untrusted router) changes
 * nothing for the rest, LHLO resets the session either way. */
static bool dtx_xclient(struct tn_router_dtx *d)
{
	struct tn_router_conn *c = d->conn;
	const char *addr = tn_router_session_client_addr(d->s);
	const char *helo = tn_router_session_client_helo(d->s);

	if (!c->m->r->set.xclient || !(c->xclient & XC_SESSION) || c->xc_refused)
		return false;
	c->state = CS_XCLIENT;
	conn_send(c, "XCLIENT SESSION=%s", tn_router_session_id(d->s));
	if ((c->xclient & XC_ADDR) && addr != NULL && store_xtext_plain(addr))
		conn_send(c, " ADDR=%s", addr);
	if ((c->xclient & XC_HELO) && helo != NULL && store_xtext_plain(helo))
		conn_send(c, " HELO=%s", helo);
	conn_send(c, "\r\n");
	c->xc_pipelined = c->pipelining;
	if (c->xc_pipelined) {
		conn_send(c, "LHLO %s\r\n", c->m->r->set.hostname);
		dtx_envelope_send(d, false);
	}
	return true;
}

static void dtx_xclient_reply(struct tn_router_dtx *d, int code)
{
	struct tn_router_conn *c = d->conn;

	if (c->state == CS_XCLIENT) {
		if (code / 100 != 2) {		/* not trusted: without it from now on */
			c->xclient = 0;
			c->xc_refused = true;	/* LHLO's reply offers it again */
		}
		if (c->xc_pipelined) {		/* LHLO's reply comes next either way */
			c->state = CS_RELHLO;
			return;
		}
		if (code / 100 != 2) {
			dtx_envelope_begin(d, c->reused);
			return;
		}
		c->state = CS_RELHLO;
		conn_send(c, "LHLO %s\r\n", c->m->r->set.hostname);
		return;
	}
	if (code != 250) {
		conn_fail(c, TN_SE_LOST, "LHLO after XCLIENT refused");
		return;
	}
	if (c->xc_pipelined) {			/* the envelope is on its way */
		c->xc_pipelined = false;
		dtx_envelope_enter(d);
		return;
	}
	dtx_envelope_begin(d, false);
}

static void dtx_conn_ready(struct tn_router_dtx *d)
{
	struct tn_router_conn *c = d->conn;

	d->state = DS_ENVELOPE;
	c->replied = false;
	/* a pooled connection proves itself with its first answer within the
	 * connect timeout: a frozen store keeps its connections open */
	conn_set_timeouts(c, d->pooled ? c->m->r->set.connect_timeout :
			  c->m->r->set.store_timeout, c->m->r->set.store_timeout);
	if (!dtx_xclient(d))
		dtx_envelope_begin(d, c->reused);
}

/* The envelope's commands: all at once with PIPELINING, else the first. */
static void dtx_envelope_send(struct tn_router_dtx *d, bool rset)
{
	struct tn_router_conn *c = d->conn;

	d->rset = rset;
	d->ncmds = (d->rset ? 1 : 0) + 1 + d->nrcpts + 1;
	if (c->pipelining) {
		for (size_t k = 0; k < d->ncmds; k++)
			dtx_send_cmd(d, k);
	} else {
		dtx_send_cmd(d, 0);
	}
}

/* The connection now reads the envelope's replies. */
static void dtx_envelope_enter(struct tn_router_dtx *d)
{
	struct tn_router_conn *c = d->conn;

	c->state = CS_ENVELOPE;
	c->reused = true;
	if (c->replied)
		conn_set_timeouts(c, c->m->r->set.store_timeout, c->m->r->set.store_timeout);
}

static void dtx_envelope_begin(struct tn_router_dtx *d, bool rset)
{
	dtx_envelope_enter(d);
	dtx_envelope_send(d, rset);
}

static void dtx_conn_failed(struct tn_router_dtx *d, const char *why)
{
	(void)why;
	if (d->state <= DS_ENVELOPE) {
		dtx_next_member(d);
		return;
	}
	dtx_answer_all(d, 451, "4.4.2 connection to the store lost, try again later");
	dtx_commit(d);
}

/* The store's 354 (or not) after the envelope. */
static void dtx_data_reply(struct tn_router_dtx *d, int code, const char *text)
{
	struct tn_router_conn *c = d->conn;

	if (code != 354) {
		dtx_answer_all(d, code, text);
		d->conn = NULL;
		conn_to_idle(c);
		dtx_commit(d);
		return;
	}
	d->state = DS_DATA;
	c->state = CS_DATA;
	bufferevent_write_buffer(c->bev, d->pending);
	if (d->finished) {
		dtx_dot_sent(d);
		return;
	}
	/* nothing to read until the dot: only the store's taking of the data
	 * is timed (the client's pace is the session's timeout) */
	bufferevent_set_timeouts(c->bev, NULL, &(struct timeval){
		c->m->r->set.store_timeout / 1000, (c->m->r->set.store_timeout % 1000) * 1000 });
}

static void dtx_dot_sent(struct tn_router_dtx *d)
{
	d->state = DS_DOT;
	d->conn->state = CS_DOT;
	d->t_dot_us = tn_time_now_us();
	conn_set_timeouts(d->conn, d->conn->m->r->set.store_timeout,
			  d->conn->m->r->set.store_timeout);
}

static void dtx_envelope_reply(struct tn_router_dtx *d, int code, const char *text)
{
	size_t k = d->nreplies++, first_rcpt = (d->rset ? 1 : 0) + 1;

	if (k == 0 && d->pooled)
		conn_set_timeouts(d->conn, d->conn->m->r->set.store_timeout,
				  d->conn->m->r->set.store_timeout);

	if (d->rset && k == 0) {
		if (code != 250) {
			conn_fail(d->conn, TN_SE_LOST, "RSET refused");
			return;
		}
	} else if (k == first_rcpt - 1) {
		if (code / 100 != 2) {
			d->mail_code = code;
			d->mail_text = store_text_dup(text);
		}
	} else if (k < first_rcpt + d->nrcpts) {
		struct dtx_rcpt *rc = &d->rcpts[k - first_rcpt];

		if (d->mail_code != 0)
			dtx_set_answer(rc, d->mail_code, d->mail_text);
		else if (code / 100 == 2)
			rc->store_ok = true, d->naccepted++;
		else
			dtx_set_answer(rc, code, text);
	} else {
		dtx_data_reply(d, code, text);
		return;
	}
	if (d->conn != NULL && d->state == DS_ENVELOPE && !d->conn->pipelining &&
	    d->nsent < d->ncmds)
		dtx_send_cmd(d, d->nsent);
}

/* One reply after the final dot, for the next recipient the store took. */
static void dtx_dot_reply(struct tn_router_dtx *d, int code, const char *text)
{
	struct tn_router_conn *c = d->conn;

	for (size_t i = 0; i < d->nrcpts; i++) {
		struct dtx_rcpt *rc = &d->rcpts[i];

		if (rc->store_ok && !rc->answered) {
			dtx_set_answer(rc, code, text);
			break;
		}
	}
	if (++d->ndot < d->naccepted)
		return;
	member_record_latency(c->m, tn_time_now_us() - d->t_dot_us);
	member_ok(c->m);
	d->conn = NULL;
	conn_to_idle(c);
	dtx_commit(d);
}

static void dtx_reply(struct tn_router_dtx *d, int code, const char *text)
{
	tn_mem_free(&d->member);
	d->member = tn_mem_strdup(d->conn->m->name);
	if (d->conn->state == CS_XCLIENT || d->conn->state == CS_RELHLO)
		dtx_xclient_reply(d, code);
	else if (d->state == DS_ENVELOPE)
		dtx_envelope_reply(d, code, text);
	else if (d->state == DS_DOT)
		dtx_dot_reply(d, code, text);
	else
		conn_fail(d->conn, TN_SE_LOST, "unexpected reply");
}

void tn_router_store_dtx_write(struct tn_router_dtx *d, const void *data, size_t len)
{
	if (d->state == DS_DONE)
		return;
	if (d->state == DS_DATA)
		bufferevent_write(d->conn->bev, data, len);
	else
		evbuffer_add(d->pending, data, len);
}

void tn_router_store_dtx_write_file(struct tn_router_dtx *d, struct evbuffer_file_segment *seg,
				    size_t len)
{
	if (d->state == DS_DONE)
		return;
	if (d->state == DS_DATA)
		evbuffer_add_file_segment(bufferevent_get_output(d->conn->bev), seg, 0,
					  (ev_off_t)len);
	else
		evbuffer_add_file_segment(d->pending, seg, 0, (ev_off_t)len);
}

void tn_router_store_dtx_finish(struct tn_router_dtx *d)
{
	tn_router_store_dtx_write(d, ".\r\n", 3);
	d->finished = true;
	if (d->state == DS_DATA)
		dtx_dot_sent(d);
}

size_t tn_router_store_dtx_backlog(const struct tn_router_dtx *d)
{
	size_t n = evbuffer_get_length(d->pending);

	if (d->state == DS_DONE)
		return 0;
	if (d->conn != NULL && d->state >= DS_DATA)
		n += evbuffer_get_length(bufferevent_get_output(d->conn->bev));
	return n;
}

const char *tn_router_store_dtx_key(const struct tn_router_dtx *d)
{
	return d->key;
}

bool tn_router_store_dtx_done(const struct tn_router_dtx *d)
{
	return d->state == DS_DONE;
}

void tn_router_store_dtx_destroy(struct tn_router_dtx **dp)
{
	struct tn_router_dtx *d = *dp;

	if (d == NULL)
		return;
	*dp = NULL;
	dtx_unwait(d);
	if (d->wait_ev != NULL)
		event_free(d->wait_ev);
	if (d->conn != NULL) {
		d->conn->dtx = NULL;
		conn_close(d->conn);	/* mid-transaction: never reused */
	}
	for (size_t i = 0; i < d->nrcpts; i++)
		tn_mem_free(&d->rcpts[i].text);
	tn_mem_free(&d->rcpts);
	tn_mem_free(&d->cands);
	tn_mem_free(&d->key);
	tn_mem_free(&d->mail_text);
	tn_mem_free(&d->member);
	evbuffer_free(d->pending);
	tn_mem_free(&d);
}
