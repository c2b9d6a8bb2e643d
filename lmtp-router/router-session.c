/*++
 * NAME
 *	router-session 3
 * SUMMARY
 *	tn-lmtp-router's LMTP server sessions (RFC 2033)
 * DESCRIPTION
 *	One session per client connection (TCP or unix socket), driven by a
 *	bufferevent. Commands are read line by line (CRLF, a bare LF is
 *	accepted as a line end) up to router_line_length_limit; a longer
 *	line is answered 500 5.5.2 and skipped to its end. Commands are
 *	dispatched through a {name, handler} table. Replies are queued in
 *	command order (PIPELINING): a RCPT's reply waits for its lookup
 *	(tn-lookup-event: the loop never blocks), later RCPTs are looked up
 *	meanwhile, and any other command waits until every lookup of the
 *	transaction is answered. A recipient that router_placement =
 *	hash-record placed on a member of the default pool is accepted at
 *	once and goes to that member; recording the placement is handed to
 *	router-place.c's worker and never waited for.
 *
 *	At DATA the accepted recipients are grouped by destination (a pool
 *	or a pinned host) into dtxs (router-store.c), which start their
 *	store transactions at once; the message is streamed to all of them
 *	as it arrives. When any destination holds more than
 *	router_buffer_high_watermark bytes not yet taken by its store, the
 *	session stops reading the client until every one is below the low
 *	watermark. After the final dot, once every dtx has finished, one
 *	reply per accepted recipient is sent in RCPT order, each with the
 *	store's code and text and the session id.
 *
 *	A message above router_message_size_limit is read to its end and
 *	refused (552 5.3.4) for every recipient; its store transactions are
 *	aborted (connections closed before the final dot, so no store keeps
 *	a partial message). A client that goes away mid-DATA aborts them the
 *	same way. Protocol errors count; beyond router_error_limit the
 *	session ends with 421.
 *
 *	A session is closed (bufferevent freed, lookups cancelled, dtxs
 *	aborted) at once, and freed from a zero-delay event, never while a
 *	callback holds it.
 *--*/
#include "tn-build.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <event2/util.h>

#include "router.h"
#include "tn-mem.h"

#define SESSION_DATA_CHUNK 8192
#define SESSION_INPUT_MAX (256 * 1024)
/* Replies waiting for a client that does not read: above the high mark
 * the session reads no more commands until they are down to the low one */
#define SESSION_OUTPUT_HIGH (256 * 1024)
#define SESSION_OUTPUT_LOW (64 * 1024)
#define SESSION_PARAM_MAX 64

enum session_state {
	SS_START,		/* before LHLO */
	SS_READY,		/* LHLO done, no transaction */
	SS_MAIL,		/* MAIL given */
	SS_DATA,		/* reading the message */
	SS_WAIT,		/* waiting for the stores */
	SS_QUIT,		/* closing once the output is written */
};

struct session_rcpt {
	struct tn_router_session *s;
	char *address;
	struct tn_lookup_request *req;
	bool looked_up;
	bool accepted;
	char *tenant;
	struct tn_router_route route;
	struct session_slot *slot;	/* its reply slot, until answered */
	/* after DATA */
	bool answered;
	int code;
	char *text;
	enum tn_router_result result;
	char *member;
};

struct session_slot {
	char *text;			/* NULL while its lookup runs */
	struct session_slot *next;
};

struct tn_router_session {
	struct tn_router *r;
	struct tn_router_session *prev, *next;
	struct bufferevent *bev;
	char id[ROUTER_SID_SIZE];
	char peer[64];
	enum session_state state;
	char *sender;
	uint64_t size_decl;
	bool body8;
	struct session_rcpt **rcpts;
	size_t nrcpts, naccepted;
	unsigned lookups;		/* pending */
	struct session_slot *rhead, **rtail;
	struct tn_router_dtx **dtxs;
	size_t ndtx;
	uint64_t data_bytes;
	bool too_big, linestart, skipping, throttled, closing;
	bool in_header;			/* DATA: still in the header section */
	bool looped;			/* our own Received: line, or too many */
	unsigned hops;			/* Received: lines seen */
	bool out_blocked;		/* replies pile up: not reading */
	int spool_fd;			/* this message is spooled, or -1 */
	bool spool_error;
	/* XFORWARD (Postfix's lmtp_send_xforward_command): for the next
	 * transaction; IDENT, the queue id, goes on every log line */
	char *xf_ident, *xf_addr, *xf_helo;
	unsigned errors;
	struct event *progress_ev;
	const char *tenant;		/* for log lines: the first recipient's */
};

struct session_cmd {
	const char *name;
	void (*handler)(struct tn_router_session *s, const char *args);
};

static void session_process(struct tn_router_session *s);
static void session_start_dtxs(struct tn_router_session *s);

/* --- small helpers ---------------------------------------------------------------- */

static void session_log(struct tn_router_session *s, enum tn_log_level level, const char *tenant,
			const char *fmt, ...) __attribute__((format(printf, 4, 5)));

static void session_log(struct tn_router_session *s, enum tn_log_level level, const char *tenant,
			const char *fmt, ...)
{
	struct tn_log_ctx ctx = { .session = s->id, .queue_id = s->xf_ident, .tenant = tenant };
	va_list ap;

	va_start(ap, fmt);
	tn_logv(level, &ctx, fmt, ap);
	va_end(ap);
}

static void session_flush(struct tn_router_session *s)
{
	struct session_slot *sl;

	while ((sl = s->rhead) != NULL && sl->text != NULL) {
		bufferevent_write(s->bev, sl->text, strlen(sl->text));
		bufferevent_write(s->bev, "\r\n", 2);
		s->rhead = sl->next;
		if (s->rhead == NULL)
			s->rtail = &s->rhead;
		tn_mem_free(&sl->text);
		tn_mem_free(&sl);
	}
}

static struct session_slot *session_slot_new(struct tn_router_session *s, char *text)
{
	struct session_slot *sl = tn_mem_calloc(1, sizeof(*sl));

	sl->text = text;
	*s->rtail = sl;
	s->rtail = &sl->next;
	return sl;
}

static void session_reply(struct tn_router_session *s, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void session_reply(struct tn_router_session *s, const char *fmt, ...)
{
	va_list ap;
	char *text;

	va_start(ap, fmt);
	if (vasprintf(&text, fmt, ap) < 0)
		abort();
	va_end(ap);
	session_slot_new(s, tn_mem_strdup(text));
	free(text);
	session_flush(s);
}

/* A protocol error: counted; too many end the session. */
static void session_error(struct tn_router_session *s, const char *reply)
{
	session_reply(s, "%s", reply);
	if (++s->errors >= s->r->set.error_limit) {
		session_reply(s, "421 4.7.0 too many errors, closing [%s]", s->id);
		session_log(s, TN_LOG_WARNING, NULL, "too many errors from %s", s->peer);
		s->state = SS_QUIT;
	}
}

/* --- life cycle -------------------------------------------------------------------- */

static void session_free_cb(evutil_socket_t fd, short what, void *arg)
{
	struct tn_router_session *s = arg;

	(void)fd;
	(void)what;
	tn_mem_free(&s);
}

static void session_rcpt_free(struct session_rcpt **rcp)
{
	struct session_rcpt *rc = *rcp;

	if (rc->req != NULL)
		tn_lookup_event_cancel(rc->req);
	tn_router_route_clear(&rc->route);
	tn_mem_free(&rc->address);
	tn_mem_free(&rc->tenant);
	tn_mem_free(&rc->text);
	tn_mem_free(&rc->member);
	tn_mem_free(rcp);
}

/* The store transactions end before their final dot: no store keeps a
 * copy of this message. */
static void session_abort_dtxs(struct tn_router_session *s)
{
	for (size_t i = 0; i < s->ndtx; i++)
		tn_router_store_dtx_destroy(&s->dtxs[i]);
	s->ndtx = 0;
}

static void session_reset(struct tn_router_session *s)
{
	session_abort_dtxs(s);
	tn_mem_free(&s->dtxs);
	for (size_t i = 0; i < s->nrcpts; i++)
		session_rcpt_free(&s->rcpts[i]);
	tn_mem_free(&s->rcpts);
	s->nrcpts = s->naccepted = 0;
	s->lookups = 0;
	tn_mem_free(&s->sender);
	s->size_decl = 0;
	s->body8 = false;
	s->too_big = false;
	s->looped = false;
	s->in_header = false;
	s->hops = 0;
	s->tenant = NULL;
	if (s->spool_fd >= 0)
		close(s->spool_fd);
	s->spool_fd = -1;
	s->spool_error = false;
	tn_mem_free(&s->xf_ident);
	tn_mem_free(&s->xf_addr);
	tn_mem_free(&s->xf_helo);
	if (s->throttled && s->bev != NULL)
		bufferevent_enable(s->bev, EV_READ);
	s->throttled = false;
}

static void session_close(struct tn_router_session *s, const char *why)
{
	struct session_slot *sl;

	if (s->closing)
		return;
	s->closing = true;
	if (s->state == SS_DATA || s->state == SS_WAIT)
		session_log(s, TN_LOG_WARNING, s->tenant, "%s during a transaction: %zu "
			    "recipient%s not delivered", why, s->naccepted,
			    s->naccepted == 1 ? "" : "s");
	else
		session_log(s, TN_LOG_DEBUG, NULL, "closed: %s", why);
	session_reset(s);
	while ((sl = s->rhead) != NULL) {
		s->rhead = sl->next;
		tn_mem_free(&sl->text);
		tn_mem_free(&sl);
	}
	bufferevent_free(s->bev);
	s->bev = NULL;
	event_free(s->progress_ev);
	if (s->prev != NULL)
		s->prev->next = s->next;
	else
		s->r->sessions = s->next;
	if (s->next != NULL)
		s->next->prev = s->prev;
	s->r->nsessions--;
	event_base_once(s->r->base, -1, EV_TIMEOUT, session_free_cb, s, &(struct timeval){ 0, 0 });
}

void tn_router_session_close_all(struct tn_router *r)
{
	while (r->sessions != NULL)
		session_close(r->sessions, "router stopping");
}

void tn_router_session_stop_idle(struct tn_router *r)
{
	struct tn_router_session *s, *next;

	for (s = r->sessions; s != NULL; s = next) {
		next = s->next;
		if ((s->state == SS_START || s->state == SS_READY) && s->lookups == 0 &&
		    s->rhead == NULL) {
			session_reply(s, "421 4.3.2 router restarting, try again [%s]", s->id);
			s->state = SS_QUIT;
		}
	}
}

/* --- accessors for router-store.c ---------------------------------------------------- */

const char *tn_router_session_rcpt_address(struct tn_router_session *s, size_t rcpt)
{
	return s->rcpts[rcpt]->address;
}

const char *tn_router_session_sender(struct tn_router_session *s)
{
	return s->sender;
}

const char *tn_router_session_id(struct tn_router_session *s)
{
	return s->id;
}

uint64_t tn_router_session_size(struct tn_router_session *s)
{
	return s->size_decl;
}

bool tn_router_session_8bit(struct tn_router_session *s)
{
	return s->body8;
}

const char *tn_router_session_client_addr(struct tn_router_session *s)
{
	if (s->xf_addr != NULL)
		return s->xf_addr[0] == '[' ? NULL : s->xf_addr;	/* [UNAVAILABLE] */
	return strcmp(s->peer, "unix") == 0 ? NULL : s->peer;
}

const char *tn_router_session_client_helo(struct tn_router_session *s)
{
	return s->xf_helo != NULL && s->xf_helo[0] != '[' ? s->xf_helo : NULL;
}

void tn_router_session_rcpt_reply(struct tn_router_session *s, size_t rcpt, int code,
				  const char *text, enum tn_router_result result,
				  const char *member)
{
	struct session_rcpt *rc = s->rcpts[rcpt];

	rc->answered = true;
	rc->code = code;
	tn_mem_free(&rc->text);
	rc->text = tn_mem_strdup(text);
	rc->result = result;
	tn_mem_free(&rc->member);
	rc->member = tn_mem_strdup(member);
}

void tn_router_session_dtx_progress(struct tn_router_session *s)
{
	if (!s->closing)
		event_active(s->progress_ev, EV_TIMEOUT, 1);
}

/* --- the end of a transaction ---------------------------------------------------------- */

static const char *session_status_word(int code)
{
	return code / 100 == 2 ? "sent" : code / 100 == 4 ? "deferred" : "bounced";
}

static void session_final_replies(struct tn_router_session *s)
{
	for (size_t i = 0; i < s->nrcpts; i++) {
		struct session_rcpt *rc = s->rcpts[i];
		char *reply;

		if (!rc->accepted)
			continue;
		reply = tn_router_route_reply(rc->code, rc->text, s->id);
		session_log(s, TN_LOG_INFO, rc->tenant, "to=<%s> via=%s store=%s status=%s (%s)",
			    rc->address, tn_router_route_via_name(rc->route.via), rc->member,
			    session_status_word(rc->code), reply);
		s->r->results[rc->result]++;
		session_slot_new(s, reply);
	}
	session_flush(s);
	s->r->messages++;
	session_reset(s);
	s->state = SS_READY;

}

static bool session_dtxs_done(struct tn_router_session *s)
{
	for (size_t i = 0; i < s->ndtx; i++) {
		if (!tn_router_store_dtx_done(s->dtxs[i]))
			return false;
	}
	return true;
}

static bool session_backlog_over(struct tn_router_session *s, size_t limit)
{
	for (size_t i = 0; i < s->ndtx; i++) {
		if (tn_router_store_dtx_backlog(s->dtxs[i]) > limit)
			return true;
	}
	return false;
}

static void session_progress_cb(evutil_socket_t fd, short what, void *arg)
{
	struct tn_router_session *s = arg;

	(void)fd;
	(void)what;
	if (s->closing)
		return;
	if (s->state == SS_WAIT && session_dtxs_done(s)) {
		session_final_replies(s);
		session_process(s);
		return;
	}
	if (s->throttled && !session_backlog_over(s, s->r->set.low_wm)) {
		s->throttled = false;
		bufferevent_enable(s->bev, EV_READ);
		session_process(s);
	}
}

/* --- DATA ------------------------------------------------------------------------------ */

/* A spooled message goes to its file; the stores get it at the end. */
static void session_spool_write(struct tn_router_session *s, const void *data, size_t len)
{
	const char *p = data;
	ssize_t n;

	while (len > 0 && !s->spool_error) {
		n = write(s->spool_fd, p, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			session_log(s, TN_LOG_ERROR, s->tenant, "writing the spool file in %s: %s",
				    s->r->set.spool_dir, strerror(errno));
			s->r->spool_errors++;
			s->spool_error = true;
			return;
		}
		p += n;
		len -= (size_t)n;
	}
}

/* Messages declared at router_spool_threshold or above are spooled, so
 * each store takes it at its own pace and none holds the others back. */
static void session_spool_begin(struct tn_router_session *s)
{
	const struct tn_router_settings *set = &s->r->set;

	if (set->spool_threshold == 0 || s->size_decl < set->spool_threshold)
		return;
	if ((s->spool_fd = tn_router_spool_open(s->r)) < 0) {
		session_log(s, TN_LOG_WARNING, s->tenant, "cannot spool in %s (%s): the message "
			    "is streamed from memory", set->spool_dir, strerror(errno));
		s->r->spool_errors++;
		return;
	}
	s->r->spooled++;
}

/* The spooled message to every destination (one shared file segment). */
static void session_spool_end(struct tn_router_session *s)
{
	struct evbuffer_file_segment *seg;

	if (s->data_bytes > 0) {
		seg = evbuffer_file_segment_new(s->spool_fd, 0, (ev_off_t)s->data_bytes,
						EVBUF_FS_CLOSE_ON_FREE);
		if (seg == NULL) {
			session_log(s, TN_LOG_ERROR, s->tenant, "cannot map the spool file");
			s->r->spool_errors++;
			s->spool_error = true;
			return;
		}
		s->spool_fd = -1;	/* the segment owns it now */
		for (size_t i = 0; i < s->ndtx; i++)
			tn_router_store_dtx_write_file(s->dtxs[i], seg, s->data_bytes);
		evbuffer_file_segment_free(seg);
	}
}

static void session_data_write(struct tn_router_session *s, const void *data, size_t len)
{
	s->data_bytes += len;
	if (s->too_big || s->looped)
		return;
	if (s->r->set.size_max > 0 && s->data_bytes > s->r->set.size_max) {
		s->too_big = true;
		session_abort_dtxs(s);
		return;
	}
	if (s->spool_fd >= 0) {
		session_spool_write(s, data, len);
		return;
	}
	for (size_t i = 0; i < s->ndtx; i++)
		tn_router_store_dtx_write(s->dtxs[i], data, len);
}

/* One answer for every accepted recipient, then the replies. */
static void session_answer_all(struct tn_router_session *s, int code, const char *text,
			       enum tn_router_result result)
{
	for (size_t i = 0; i < s->nrcpts; i++) {
		if (s->rcpts[i]->accepted)
			tn_router_session_rcpt_reply(s, i, code, text, result, "-");
	}
	session_final_replies(s);
}

static void session_data_end(struct tn_router_session *s)
{
	if (s->too_big) {
		session_answer_all(s, 552, "5.3.4 message too big", TN_RR_TOO_BIG);
		return;
	}
	if (s->looped) {
		session_answer_all(s, 554, s->hops > s->r->set.max_hops ?
				   "5.4.6 too many hops (a mail loop)" :
				   "5.4.6 routing loop: the message passed this router already",
				   TN_RR_LOOP);
		return;
	}
	if (s->spool_fd >= 0 && !s->spool_error) {
		session_start_dtxs(s);
		session_spool_end(s);
	}
	if (s->spool_error) {
		session_abort_dtxs(s);
		session_answer_all(s, 451, "4.3.0 local error, try again later",
				   TN_RR_UNAVAILABLE);
		return;
	}
	for (size_t i = 0; i < s->ndtx; i++)
		tn_router_store_dtx_finish(s->dtxs[i]);
	s->state = SS_WAIT;
	tn_router_session_dtx_progress(s);
}

/* A line of the header section (without its CRLF; for a line longer
 * than a chunk, its first chunk). Received: lines are counted, and one
 * naming this router's instance means the message came round: either
 * way its store transactions are aborted before their final dot and
 * every recipient gets 554 5.4.6 at the end (Postfix's own answer to a
 * hop count over hopcount_limit), so the loop ends with a bounce
 * instead of circling. */
static void session_header_line(struct tn_router_session *s, const char *line, size_t len)
{
	const char *inst = s->r->instance;

	if (len == 0) {
		s->in_header = false;
		return;
	}
	if (len < 9 || strncasecmp(line, "Received:", 9) != 0 || s->looped)
		return;
	s->hops++;
	if (s->hops <= s->r->set.max_hops && memmem(line, len, inst, strlen(inst)) == NULL)
		return;
	s->looped = true;
	session_abort_dtxs(s);
	session_log(s, TN_LOG_WARNING, s->tenant, "mail loop: %s; refused for every recipient "
		    "(554 5.4.6)", s->hops > s->r->set.max_hops ?
		    "more Received: lines than router_max_hops" :
		    "the message carries this router's own Received: line");
}

/* Our trace line, first in the message (RFC 5321 4.4), on one line so
 * that session_header_line() finds the instance in it when the
 * message comes back. Client-given names are reduced to safe bytes. */
static void session_received(struct tn_router_session *s)
{
	const char *helo = tn_router_session_client_helo(s);
	const char *addr = tn_router_session_client_addr(s);
	char h[64], a[64], date[40], line[400];
	struct tm tm;
	time_t now = time(NULL);
	int n;

	snprintf(h, sizeof(h), "%s", helo != NULL ? helo : "unknown");
	snprintf(a, sizeof(a), "%s", addr != NULL ? addr : "local");
	for (char *p = h; *p != '\0'; p++)
		if (!isalnum((unsigned char)*p) && strchr(".-_:[]", *p) == NULL)
			*p = '?';
	for (char *p = a; *p != '\0'; p++)
		if (!isxdigit((unsigned char)*p) && strchr(".:", *p) == NULL)
			*p = '?';
	gmtime_r(&now, &tm);
	strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S +0000", &tm);
	n = snprintf(line, sizeof(line), "Received: from %s (%s) by %s (%s) with LMTP id %s; %s\r\n",
		     h, a, s->r->set.hostname, s->r->instance, s->id, date);
	if (n > 0 && (size_t)n < sizeof(line))
		session_data_write(s, line, (size_t)n);
}

/* One step of the message: 1 when something was consumed, 0 when more
 * input is needed (or the destinations are full). */
static int session_data_step(struct tn_router_session *s)
{
	struct evbuffer *in = bufferevent_get_input(s->bev);
	struct evbuffer_ptr eol;
	size_t eol_len, len = evbuffer_get_length(in);
	char buf[SESSION_DATA_CHUNK + 2];

	eol = evbuffer_search_eol(in, NULL, &eol_len, EVBUFFER_EOL_CRLF);
	if (eol.pos < 0 || eol.pos > SESSION_DATA_CHUNK) {
		/* a long line: pass a piece through (never a final CR alone) */
		if (len < SESSION_DATA_CHUNK + 1)
			return 0;
		evbuffer_remove(in, buf, SESSION_DATA_CHUNK);
		len = buf[SESSION_DATA_CHUNK - 1] == '\r' ? SESSION_DATA_CHUNK - 1 :
			SESSION_DATA_CHUNK;
		if (s->in_header && s->linestart)
			session_header_line(s, buf, len);
		if (len < SESSION_DATA_CHUNK)
			evbuffer_prepend(in, "\r", 1);
		session_data_write(s, buf, len);
		s->linestart = false;
		return 1;
	}
	evbuffer_remove(in, buf, (size_t)eol.pos);
	evbuffer_drain(in, eol_len);
	if (s->linestart && eol.pos == 1 && buf[0] == '.') {
		session_data_end(s);
		return 1;
	}
	if (s->in_header && s->linestart)
		session_header_line(s, buf, (size_t)eol.pos);
	buf[eol.pos] = '\r';
	buf[eol.pos + 1] = '\n';
	session_data_write(s, buf, (size_t)eol.pos + 2);
	s->linestart = true;
	return 1;
}

static void session_data(struct tn_router_session *s)
{
	while (!s->closing && s->state == SS_DATA && !s->throttled && session_data_step(s) > 0) {
		if (s->state == SS_DATA && session_backlog_over(s, s->r->set.high_wm)) {
			s->throttled = true;
			s->r->throttled++;
			bufferevent_disable(s->bev, EV_READ);
		}
	}
}

/* Group the accepted recipients by destination and start the dtxs. */
static struct tn_router_dtx *session_dtx_for(struct tn_router_session *s,
					     const struct session_rcpt *rc)
{
	struct tn_router *r = s->r;
	struct tn_router_member *m[64], *cands[64];
	struct tn_router_member_state st[64];
	size_t order[64], n = 0, k;
	char key[300];
	struct tn_router_dtx *d;

	if (rc->route.host != NULL)
		snprintf(key, sizeof(key), "h:%s", rc->route.host);
	else
		snprintf(key, sizeof(key), "p:%d", rc->route.pool);
	for (size_t i = 0; i < s->ndtx; i++) {
		if (strcmp(tn_router_store_dtx_key(s->dtxs[i]), key) == 0)
			return s->dtxs[i];
	}
	if (rc->route.host != NULL) {
		m[n++] = tn_router_store_member(r, rc->route.host, false);
	} else {
		size_t pool = (size_t)rc->route.pool;

		for (size_t j = 0; j < tn_router_route_nmembers(r->pools, pool) && n < 64; j++)
			m[n++] = tn_router_store_member_find(r, tn_router_route_member(r->pools,
										      pool, j));
	}
	for (size_t j = 0; j < n; j++)
		st[j] = (struct tn_router_member_state){ m[j]->up, m[j]->drained };
	k = tn_router_route_order(st, n, order);
	for (size_t j = 0; j < k; j++)
		cands[j] = m[order[j]];
	d = tn_router_store_dtx_create(s, key, cands, k);
	s->dtxs = tn_mem_realloc(s->dtxs, (s->ndtx + 1) * sizeof(d));
	s->dtxs[s->ndtx++] = d;
	return d;
}

static void session_make_dtxs(struct tn_router_session *s)
{
	for (size_t i = 0; i < s->nrcpts; i++) {
		if (s->rcpts[i]->accepted)
			tn_router_store_dtx_add_rcpt(session_dtx_for(s, s->rcpts[i]), i);
	}
}

static void session_start_dtxs(struct tn_router_session *s)
{
	for (size_t i = 0; i < s->ndtx; i++)
		tn_router_store_dtx_start(s->dtxs[i]);
}

/* --- commands ---------------------------------------------------------------------------- */

static void cmd_lhlo(struct tn_router_session *s, const char *args)
{
	const struct tn_router_settings *set = &s->r->set;

	if (*args == '\0') {
		session_error(s, "501 5.5.4 LHLO needs a host name");
		return;
	}
	session_reset(s);
	s->state = SS_READY;
	if (set->size_max > 0)
		session_reply(s, "250-%s\r\n250-PIPELINING\r\n250-ENHANCEDSTATUSCODES\r\n"
			      "250-8BITMIME\r\n250-XFORWARD NAME ADDR PORT PROTO HELO IDENT SOURCE\r\n"
			      "250 SIZE %llu", set->hostname,
			      (unsigned long long)set->size_max);
	else
		session_reply(s, "250-%s\r\n250-PIPELINING\r\n250-ENHANCEDSTATUSCODES\r\n"
			      "250-8BITMIME\r\n250-XFORWARD NAME ADDR PORT PROTO HELO IDENT SOURCE\r\n"
			      "250 SIZE", set->hostname);
}

/* "FROM:" / "TO:" prefix, case-insensitive */
static const char *session_prefix(const char *args, const char *prefix)
{
	size_t n = strlen(prefix);

	return strncasecmp(args, prefix, n) == 0 ? args + n : NULL;
}

static int session_mail_param(struct tn_router_session *s, const char *kw, const char *val)
{
	char *end;

	if (strcmp(kw, "SIZE") == 0) {
		errno = 0;
		s->size_decl = strtoull(val, &end, 10);
		if (*val == '\0' || *end != '\0' || errno != 0 || !isdigit((unsigned char)*val)) {
			session_error(s, "501 5.5.4 bad SIZE value");
			return -1;
		}
		if (s->r->set.size_max > 0 && s->size_decl > s->r->set.size_max) {
			session_reply(s, "552 5.3.4 message too big [%s]", s->id);
			return -1;
		}
		return 0;
	}
	if (strcmp(kw, "BODY") == 0 && (strcasecmp(val, "8BITMIME") == 0 ||
					strcasecmp(val, "7BIT") == 0)) {
		s->body8 = strcasecmp(val, "8BITMIME") == 0;
		return 0;
	}
	session_error(s, "555 5.5.4 unsupported MAIL parameter");
	return -1;
}

static void cmd_mail(struct tn_router_session *s, const char *args)
{
	const char *rest, *p = session_prefix(args, "FROM:");
	char kw[SESSION_PARAM_MAX], val[SESSION_PARAM_MAX], *path;
	int ret;

	if (s->state == SS_START) {
		session_error(s, "503 5.5.1 send LHLO first");
		return;
	}
	if (s->state != SS_READY) {
		session_error(s, "503 5.5.1 nested MAIL command");
		return;
	}
	if (p == NULL || tn_router_route_parse_path(p, &path, &rest) < 0) {
		session_error(s, "501 5.5.4 syntax: MAIL FROM:<address>");
		return;
	}
	s->sender = path;
	while ((ret = tn_router_route_parse_param(&rest, kw, sizeof(kw), val, sizeof(val))) > 0) {
		if (session_mail_param(s, kw, val) < 0) {
			session_reset(s);
			return;
		}
	}
	if (ret < 0) {
		session_reset(s);
		session_error(s, "501 5.5.4 bad MAIL parameter");
		return;
	}
	s->state = SS_MAIL;
	session_reply(s, "250 2.1.0 sender OK");
}

static void session_lookup_cb(enum tn_result res, struct tn_account *acct, const char *error,
			      void *context)
{
	struct session_rcpt *rc = context;
	struct tn_router_session *s = rc->s;

	rc->req = NULL;
	rc->looked_up = true;
	s->lookups--;
	tn_router_route_decide(s->r->pools, res, acct, &rc->route);
	if (acct != NULL && acct->tenant != NULL)
		rc->tenant = tn_mem_strdup(acct->tenant);
	if (rc->route.verdict == TN_ROUTER_ROUTE) {
		rc->accepted = true;
		s->naccepted++;
		if (s->tenant == NULL)
			s->tenant = rc->tenant;
		if (rc->route.record)
			tn_place_record_queue(s->r->place, acct->address, rc->route.host,
					      rc->tenant, s->id);
	} else {
		enum tn_router_result rr = rc->route.verdict == TN_ROUTER_UNKNOWN ? TN_RR_UNKNOWN :
			rc->route.verdict == TN_ROUTER_TEMPFAIL ? TN_RR_DIRECTORY : TN_RR_NOROUTE;

		s->r->results[rr]++;
		session_log(s, rr == TN_RR_UNKNOWN ? TN_LOG_INFO : TN_LOG_WARNING, rc->tenant,
			    "to=<%s> refused: %s%s%s", rc->address, rc->route.why,
			    error != NULL && res == TN_TEMPFAIL ? ": " : "",
			    error != NULL && res == TN_TEMPFAIL ? error : "");
	}
	rc->slot->text = rc->accepted ? tn_mem_printf("250 2.1.5 recipient OK") :
		tn_mem_printf("%s [%s]", rc->route.reply, s->id);
	rc->slot = NULL;
	tn_account_free(&acct);
	session_flush(s);
	session_process(s);
}

static void cmd_rcpt(struct tn_router_session *s, const char *args)
{
	const char *rest, *p = session_prefix(args, "TO:");
	char kw[SESSION_PARAM_MAX], val[SESSION_PARAM_MAX], *path;
	struct session_rcpt *rc;

	if (s->state != SS_MAIL) {
		session_error(s, "503 5.5.1 need MAIL before RCPT");
		return;
	}
	if (p == NULL || tn_router_route_parse_path(p, &path, &rest) < 0) {
		session_error(s, "501 5.5.4 syntax: RCPT TO:<address>");
		return;
	}
	if (tn_router_route_parse_param(&rest, kw, sizeof(kw), val, sizeof(val)) != 0 ||
	    strchr(path, '@') == NULL) {
		tn_mem_free(&path);
		session_error(s, "501 5.5.4 bad recipient or unsupported parameter");
		return;
	}
	if (s->nrcpts >= s->r->set.rcpt_max) {
		tn_mem_free(&path);
		session_reply(s, "452 4.5.3 too many recipients [%s]", s->id);
		return;
	}
	rc = tn_mem_calloc(1, sizeof(*rc));
	rc->s = s;
	rc->address = path;
	rc->route.pool = -1;
	s->rcpts = tn_mem_realloc(s->rcpts, (s->nrcpts + 1) * sizeof(rc));
	s->rcpts[s->nrcpts++] = rc;
	rc->slot = session_slot_new(s, NULL);
	s->lookups++;
	rc->req = tn_lookup_event_resolve(s->r->le, path, 0, session_lookup_cb, rc);
}

static void cmd_data(struct tn_router_session *s, const char *args)
{
	(void)args;
	if (s->state != SS_MAIL) {
		session_error(s, s->state == SS_START ? "503 5.5.1 send LHLO first" :
			      "503 5.5.1 need MAIL and RCPT before DATA");
		return;
	}
	if (s->naccepted == 0) {
		session_error(s, "503 5.5.1 no valid recipients");
		return;
	}
	session_make_dtxs(s);
	session_spool_begin(s);
	/* a spooled message meets the stores once it is complete, so none
	 * waits through a long upload */
	if (s->spool_fd < 0)
		session_start_dtxs(s);
	s->state = SS_DATA;
	s->data_bytes = 0;
	s->linestart = true;
	s->in_header = true;
	if (s->r->set.received_header)
		session_received(s);
	session_reply(s, "354 go ahead, end with <CRLF>.<CRLF>");
}

static const char *const session_xforward_names[] = {
	"NAME", "ADDR", "PORT", "PROTO", "HELO", "IDENT", "SOURCE", NULL,
};

static int session_xforward_attr(struct tn_router_session *s, const char *a, size_t n)
{
	const char *eq = memchr(a, '=', n);
	size_t klen = eq != NULL ? (size_t)(eq - a) : 0;
	const char *const *k;
	char *v;

	for (k = session_xforward_names; *k != NULL; k++) {
		if (klen == strlen(*k) && strncasecmp(a, *k, klen) == 0)
			break;
	}
	if (*k == NULL || (v = tn_router_route_xtext(eq + 1, n - klen - 1)) == NULL)
		return -1;
	if (strcmp(*k, "IDENT") == 0)
		tn_mem_free(&s->xf_ident), s->xf_ident = v;
	else if (strcmp(*k, "ADDR") == 0)
		tn_mem_free(&s->xf_addr), s->xf_addr = v;
	else if (strcmp(*k, "HELO") == 0)
		tn_mem_free(&s->xf_helo), s->xf_helo = v;
	else
		tn_mem_free(&v);
	return 0;
}

static void cmd_xforward(struct tn_router_session *s, const char *args)
{
	const char *p = args, *end;

	if (s->state != SS_READY) {
		session_error(s, s->state == SS_START ? "503 5.5.1 send LHLO first" :
			      "503 5.5.1 XFORWARD within a transaction");
		return;
	}
	if (*p == '\0') {
		session_error(s, "501 5.5.4 XFORWARD needs attributes");
		return;
	}
	for (; *p != '\0'; p = end) {
		while (*p == ' ')
			p++;
		end = p + strcspn(p, " ");
		if (end > p && session_xforward_attr(s, p, (size_t)(end - p)) < 0) {
			session_error(s, "501 5.5.4 bad XFORWARD attribute");
			return;
		}
	}
	session_reply(s, "250 2.0.0 OK");
}

static void cmd_rset(struct tn_router_session *s, const char *args)
{
	(void)args;
	session_reset(s);
	if (s->state != SS_START)
		s->state = SS_READY;
	session_reply(s, "250 2.0.0 OK");
}

static void cmd_noop(struct tn_router_session *s, const char *args)
{
	(void)args;
	session_reply(s, "250 2.0.0 OK");
}

static void cmd_vrfy(struct tn_router_session *s, const char *args)
{
	(void)args;
	session_reply(s, "252 2.5.0 cannot verify, send some mail");
}

static void cmd_quit(struct tn_router_session *s, const char *args)
{
	(void)args;
	session_reply(s, "221 2.0.0 bye [%s]", s->id);
	s->state = SS_QUIT;
}

static void cmd_helo(struct tn_router_session *s, const char *args)
{
	(void)args;
	session_error(s, "500 5.5.1 this is LMTP: use LHLO");
}

static const struct session_cmd session_cmds[] = {
	{ "LHLO", cmd_lhlo },
	{ "MAIL", cmd_mail },
	{ "RCPT", cmd_rcpt },
	{ "DATA", cmd_data },
	{ "RSET", cmd_rset },
	{ "NOOP", cmd_noop },
	{ "VRFY", cmd_vrfy },
	{ "QUIT", cmd_quit },
	{ "XFORWARD", cmd_xforward },
	{ "HELO", cmd_helo },
	{ "EHLO", cmd_helo },
	{ NULL, NULL },
};

static void session_command(struct tn_router_session *s, const char *line, size_t len)
{
	for (const struct session_cmd *c = session_cmds; c->name != NULL; c++) {
		size_t n = strlen(c->name);
		const char *args = line + n;

		if (len >= n && strncasecmp(line, c->name, n) == 0 && (len == n || line[n] == ' ')) {
			while (*args == ' ')
				args++;
			c->handler(s, args);
			return;
		}
	}
	session_error(s, "500 5.5.2 unknown command");
}

/* While lookups run, only further RCPTs go on; anything else waits. */
static bool session_may_read(struct tn_router_session *s, struct evbuffer *in)
{
	unsigned char *p;

	if (s->lookups == 0)
		return true;
	if (evbuffer_get_length(in) < 5)
		return false;
	p = evbuffer_pullup(in, 5);
	return strncasecmp((const char *)p, "RCPT ", 5) == 0;
}

/* Discard input up to and including the next line end. */
static void session_skip(struct tn_router_session *s, struct evbuffer *in)
{
	struct evbuffer_ptr eol;
	size_t eol_len;

	eol = evbuffer_search_eol(in, NULL, &eol_len, EVBUFFER_EOL_LF);
	if (eol.pos < 0) {
		evbuffer_drain(in, evbuffer_get_length(in));
		return;
	}
	evbuffer_drain(in, (size_t)eol.pos + eol_len);
	s->skipping = false;
}

static bool session_command_step(struct tn_router_session *s)
{
	struct evbuffer *in = bufferevent_get_input(s->bev);
	char *line;
	size_t len;

	if (evbuffer_get_length(bufferevent_get_output(s->bev)) > SESSION_OUTPUT_HIGH) {
		s->out_blocked = true;
		bufferevent_disable(s->bev, EV_READ);
		return false;
	}
	if (s->skipping) {
		session_skip(s, in);
		return !s->skipping;
	}
	if (!session_may_read(s, in))
		return false;
	line = evbuffer_readln(in, &len, EVBUFFER_EOL_CRLF);
	if (line == NULL) {
		if (evbuffer_get_length(in) <= s->r->set.line_max)
			return false;
		s->skipping = true;
		session_error(s, "500 5.5.2 line too long");
		return true;
	}
	if (len > s->r->set.line_max || memchr(line, '\0', len) != NULL)
		session_error(s, len > s->r->set.line_max ? "500 5.5.2 line too long" :
			      "500 5.5.2 NUL in command");
	else
		session_command(s, line, len);
	free(line);
	return true;
}

static void session_process(struct tn_router_session *s)
{
	for (;;) {
		if (s->closing || s->state == SS_QUIT || s->state == SS_WAIT)
			return;
		if (s->r->stopping && (s->state == SS_START || s->state == SS_READY) &&
		    s->lookups == 0) {
			/* the transaction in flight is done: the client goes on
			 * with the router that replaces this one */
			session_reply(s, "421 4.3.2 router restarting, try again [%s]", s->id);
			s->state = SS_QUIT;
			return;
		}
		if (s->state == SS_DATA) {
			session_data(s);
			if (s->state == SS_DATA || s->closing)
				return;
			continue;
		}
		if (!session_command_step(s))
			return;
	}
}

/* --- callbacks ------------------------------------------------------------------------------ */

static void session_read_cb(struct bufferevent *bev, void *arg)
{
	(void)bev;
	session_process(arg);
}

static void session_write_cb(struct bufferevent *bev, void *arg)
{
	struct tn_router_session *s = arg;

	if (s->state == SS_QUIT && s->rhead == NULL) {
		/* the write watermark wakes us before the output is empty */
		if (evbuffer_get_length(bufferevent_get_output(bev)) == 0)
			session_close(s, "QUIT");
		else
			bufferevent_setwatermark(bev, EV_WRITE, 0, 0);
		return;
	}
	if (s->out_blocked) {
		s->out_blocked = false;
		if (!s->throttled)
			bufferevent_enable(bev, EV_READ);
		session_process(s);
	}
}

static void session_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct tn_router_session *s = arg;

	(void)bev;
	if ((what & BEV_EVENT_TIMEOUT) && (what & BEV_EVENT_READING) && s->state != SS_QUIT &&
	    s->state != SS_DATA && s->state != SS_WAIT) {
		/* say why, then close once it is written (or the write times out) */
		bufferevent_disable(s->bev, EV_READ);
		session_reply(s, "421 4.4.2 idle too long, closing [%s]", s->id);
		session_log(s, TN_LOG_DEBUG, NULL, "idle timeout");
		s->state = SS_QUIT;
	} else if (what & BEV_EVENT_TIMEOUT) {
		session_close(s, "timeout");
	} else if (what & BEV_EVENT_EOF) {
		session_close(s, "client closed the connection");
	} else {
		session_close(s, "connection error");
	}
}

static void session_peer(struct tn_router_session *s, const struct sockaddr *sa)
{
	char addr[64];

	if (sa->sa_family == AF_INET || sa->sa_family == AF_INET6) {
		const void *a = sa->sa_family == AF_INET ?
			(const void *)&((const struct sockaddr_in *)sa)->sin_addr :
			(const void *)&((const struct sockaddr_in6 *)sa)->sin6_addr;

		evutil_inet_ntop(sa->sa_family, a, addr, sizeof(addr));
		snprintf(s->peer, sizeof(s->peer), "%s", addr);
	} else {
		snprintf(s->peer, sizeof(s->peer), "unix");
	}
}

static void session_refuse(struct tn_router *r, evutil_socket_t fd)
{
	static const char msg[] = "421 4.3.2 too many sessions, try again later\r\n";

	r->sessions_refused++;
	if (send(fd, msg, sizeof(msg) - 1, MSG_NOSIGNAL | MSG_DONTWAIT) < 0)
		tn_log(TN_LOG_DEBUG, NULL, "refusing a session: %s", strerror(errno));
	evutil_closesocket(fd);
}

void tn_router_session_accept(struct tn_router *r, evutil_socket_t fd,
			      const struct sockaddr *sa, int salen)
{
	struct tn_router_session *s;
	struct timeval tv = { r->set.session_timeout / 1000, (r->set.session_timeout % 1000) * 1000 };

	(void)salen;
	if (r->stopping || r->nsessions >= r->set.max_sessions) {
		session_refuse(r, fd);
		return;
	}
	s = tn_mem_calloc(1, sizeof(*s));
	s->r = r;
	s->spool_fd = -1;
	snprintf(s->id, sizeof(s->id), "%s%06llX", r->sid_prefix,
		 (unsigned long long)++r->session_seq);
	session_peer(s, sa);
	s->rtail = &s->rhead;
	s->bev = bufferevent_socket_new(r->base, fd, BEV_OPT_CLOSE_ON_FREE);
	s->progress_ev = event_new(r->base, -1, 0, session_progress_cb, s);
	bufferevent_setcb(s->bev, session_read_cb, session_write_cb, session_event_cb, s);
	bufferevent_setwatermark(s->bev, EV_READ, 0, SESSION_INPUT_MAX);
	bufferevent_setwatermark(s->bev, EV_WRITE, SESSION_OUTPUT_LOW, 0);
	bufferevent_set_timeouts(s->bev, &tv, &tv);
	bufferevent_enable(s->bev, EV_READ | EV_WRITE);
	s->next = r->sessions;
	if (s->next != NULL)
		s->next->prev = s;
	r->sessions = s;
	r->nsessions++;
	r->sessions_total++;
	session_reply(s, "220 %s LMTP %s ready [%s]", r->set.hostname, r->instance, s->id);
}
