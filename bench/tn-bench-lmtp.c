/*++
 * NAME
 *	tn-bench-lmtp 1
 * SUMMARY
 *	LMTP sink and LMTP load client for bench/lmtp's synthetic figures
 * SYNOPSIS
 *	tn-bench-lmtp sink PORT
 *	tn-bench-lmtp client PORT N CONC SIZE NMBX FIRST RCPTBASE SENDER
 * DESCRIPTION
 *	The synthetic part of bench/lmtp: the router's own cost without
 *	Postfix and Dovecot, client -> router -> sink against client ->
 *	sink, both ends cheap enough not to be what is measured.
 *
 *	sink: an LMTP server on 127.0.0.1:PORT (libevent, one thread)
 *	that accepts everything: 220, LHLO (PIPELINING,
 *	ENHANCEDSTATUSCODES, SIZE, 8BITMIME), 250 to MAIL, RCPT, RSET,
 *	NOOP and anything else, 354 to DATA after a recipient (503
 *	without), after the final dot one 250 per recipient, 221 to QUIT.
 *	The message is discarded as it arrives. "XCOUNT" answers
 *	"250 <recipients accepted after DATA so far>". Replies to
 *	pipelined commands go out together. Runs until killed.
 *
 *	client: CONC connections to 127.0.0.1:PORT, each greeted and
 *	LHLO'd first; then, once all are ready, N transactions over them
 *	(MAIL FROM:<SENDER> SIZE=, RCPT TO:<i RCPTBASE>, DATA pipelined,
 *	then the body of SIZE bytes and the dot), recipient i running
 *	1 + (FIRST + k) % NMBX for the k-th message. Prints one JSON
 *	line: {"elapsed": seconds from the first transaction to the last
 *	reply, "ok": messages answered 250, "nbad": 0, "bad": []}.
 *	Any other reply, or a lost connection, ends the run: exit 1 with
 *	the reply on stderr.
 *
 *	Names: bl_ for everything of this file (all static).
 * SECURITY
 *	A benchmark tool: loopback only, not for production.
 *--*/
#include "tn-build.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>

static struct event_base *bl_base;

static double bl_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void bl_nodelay(evutil_socket_t fd)
{
	int one = 1;

	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

/* -- sink -------------------------------------------------------------- */

struct bl_sink {
	struct bufferevent *bev;
	unsigned rcpts;
	bool data;
};

static unsigned long long bl_accepted;

static void bl_sink_free(struct bl_sink *s)
{
	bufferevent_free(s->bev);
	free(s);
}

static void bl_sink_event(struct bufferevent *, short, void *);

/* after QUIT: the replies are out, the session ends */
static void bl_sink_written(struct bufferevent *bev, void *arg)
{
	(void)bev;
	bl_sink_free(arg);
}

static void bl_sink_read(struct bufferevent *bev, void *arg)
{
	struct bl_sink *s = arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	struct evbuffer *out = bufferevent_get_output(bev);
	size_t len;
	char *line;

	while ((line = evbuffer_readln(in, &len, EVBUFFER_EOL_CRLF)) != NULL) {
		if (s->data) {
			if (len == 1 && line[0] == '.') {
				s->data = false;
				bl_accepted += s->rcpts;
				for (unsigned i = 0; i < s->rcpts; i++)
					evbuffer_add(out, "250 2.0.0 saved\r\n", 17);
				s->rcpts = 0;
			}
		} else if (strncasecmp(line, "LHLO", 4) == 0 || strncasecmp(line, "EHLO", 4) == 0) {
			evbuffer_add_printf(out, "250-sink.bench.test\r\n250-PIPELINING\r\n"
					    "250-ENHANCEDSTATUSCODES\r\n250-SIZE\r\n250 8BITMIME\r\n");
		} else if (strncasecmp(line, "MAIL", 4) == 0) {
			s->rcpts = 0;
			evbuffer_add_printf(out, "250 2.1.0 Ok\r\n");
		} else if (strncasecmp(line, "RCPT", 4) == 0) {
			s->rcpts++;
			evbuffer_add_printf(out, "250 2.1.5 Ok\r\n");
		} else if (strncasecmp(line, "DATA", 4) == 0) {
			if (s->rcpts) {
				s->data = true;
				evbuffer_add_printf(out, "354 End data with <CR><LF>.<CR><LF>\r\n");
			} else {
				evbuffer_add_printf(out, "503 5.5.1 No valid recipients\r\n");
			}
		} else if (strncasecmp(line, "RSET", 4) == 0) {
			s->rcpts = 0;
			evbuffer_add_printf(out, "250 2.0.0 Ok\r\n");
		} else if (strncasecmp(line, "XCOUNT", 6) == 0) {
			evbuffer_add_printf(out, "250 %llu\r\n", bl_accepted);
		} else if (strncasecmp(line, "QUIT", 4) == 0) {
			free(line);
			/* the bufferevent owns the output: close once it is written */
			evbuffer_add_printf(out, "221 2.0.0 Bye\r\n");
			bufferevent_disable(bev, EV_READ);
			bufferevent_setcb(bev, NULL, bl_sink_written, bl_sink_event, s);
			return;
		} else {
			evbuffer_add_printf(out, "250 2.0.0 Ok\r\n");
		}
		free(line);
	}
}

static void bl_sink_event(struct bufferevent *bev, short what, void *arg)
{
	(void)bev;
	if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR))
		bl_sink_free(arg);
}

static void bl_sink_accept(struct evconnlistener *l, evutil_socket_t fd,
			   struct sockaddr *sa, int salen, void *arg)
{
	struct bl_sink *s = calloc(1, sizeof(*s));

	(void)l;
	(void)sa;
	(void)salen;
	(void)arg;
	if (s == NULL) {
		evutil_closesocket(fd);
		return;
	}
	bl_nodelay(fd);
	s->bev = bufferevent_socket_new(bl_base, fd, BEV_OPT_CLOSE_ON_FREE);
	bufferevent_setcb(s->bev, bl_sink_read, NULL, bl_sink_event, s);
	bufferevent_enable(s->bev, EV_READ | EV_WRITE);
	evbuffer_add_printf(bufferevent_get_output(s->bev), "220 sink.bench.test LMTP ready\r\n");
}

static int bl_sink_main(int port)
{
	struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons(port) };
	struct evconnlistener *l;

	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	l = evconnlistener_new_bind(bl_base, bl_sink_accept, NULL,
				    LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_FREE, 1024,
				    (struct sockaddr *)&sin, sizeof(sin));
	if (l == NULL) {
		fprintf(stderr, "tn-bench-lmtp: listen on 127.0.0.1:%d: %s\n", port,
			strerror(errno));
		return 1;
	}
	printf("ready\n");
	fflush(stdout);
	event_base_dispatch(bl_base);
	evconnlistener_free(l);
	return 0;
}

/* -- client ------------------------------------------------------------ */

enum bl_state { BL_GREET, BL_LHLO, BL_READY, BL_ENVELOPE, BL_DOT, BL_QUIT };

struct bl_conn {
	struct bufferevent *bev;
	enum bl_state state;
	int replies;			/* envelope replies still awaited */
	int codes[3];
};

static struct {
	long n, conc, size, nmbx, first;
	const char *rcptbase, *sender;
	char *body;			/* the message, the final dot after it */
	size_t msg_len, body_len;	/* without and with the dot */
	long next, ok, ready, closed;
	double t0, t1;
} bl_c;

static void bl_fail(const char *what, const char *line)
{
	fprintf(stderr, "tn-bench-lmtp: %s: %s\n", what, line ? line : "(none)");
	exit(1);
}

static void bl_send_txn(struct bl_conn *c)
{
	struct evbuffer *out = bufferevent_get_output(c->bev);

	if (bl_c.next >= bl_c.n) {
		c->state = BL_QUIT;
		evbuffer_add_printf(out, "QUIT\r\n");
		return;
	}
	evbuffer_add_printf(out, "MAIL FROM:<%s> SIZE=%zu\r\nRCPT TO:<%ld%s>\r\nDATA\r\n",
			    bl_c.sender, bl_c.msg_len,
			    1 + (bl_c.first + bl_c.next) % bl_c.nmbx, bl_c.rcptbase);
	bl_c.next++;
	c->state = BL_ENVELOPE;
	c->replies = 0;
}

static void bl_conn_done(struct bl_conn *c)
{
	bufferevent_free(c->bev);
	free(c);
	if (++bl_c.closed == bl_c.conc)
		event_base_loopbreak(bl_base);
}

static void bl_client_read(struct bufferevent *bev, void *arg)
{
	struct bl_conn *c = arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	size_t len;
	char *line;

	while ((line = evbuffer_readln(in, &len, EVBUFFER_EOL_CRLF)) != NULL) {
		int code;

		if (len < 3 || (len > 3 && line[3] == '-')) {
			free(line);
			continue;
		}
		code = atoi(line);
		switch (c->state) {
		case BL_GREET:
			if (code != 220)
				bl_fail("greeting", line);
			c->state = BL_LHLO;
			evbuffer_add_printf(bufferevent_get_output(bev), "LHLO client.bench.test\r\n");
			break;
		case BL_LHLO:
			if (code != 250)
				bl_fail("LHLO", line);
			c->state = BL_READY;
			if (++bl_c.ready == bl_c.conc) {
				bl_c.t0 = bl_now();
				/* every connection starts now; this one included */
				event_base_loopbreak(bl_base);
			}
			break;
		case BL_ENVELOPE:
			c->codes[c->replies++] = code;
			if (c->replies < 3)
				break;
			if (c->codes[0] != 250 || c->codes[1] != 250 || c->codes[2] != 354)
				bl_fail("envelope", line);
			c->state = BL_DOT;
			evbuffer_add(bufferevent_get_output(bev), bl_c.body, bl_c.body_len);
			break;
		case BL_DOT:
			if (code != 250)
				bl_fail("after the final dot", line);
			bl_c.ok++;
			if (bl_c.ok == bl_c.n)
				bl_c.t1 = bl_now();
			bl_send_txn(c);
			break;
		case BL_QUIT:
			free(line);
			bl_conn_done(c);
			return;
		default:
			bl_fail("unexpected reply", line);
		}
		free(line);
	}
}

static void bl_client_event(struct bufferevent *bev, short what, void *arg)
{
	struct bl_conn *c = arg;

	(void)bev;
	if (what & BEV_EVENT_CONNECTED) {
		bl_nodelay(bufferevent_getfd(bev));
		return;
	}
	if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) {
		if (c->state == BL_QUIT) {
			bl_conn_done(c);
			return;
		}
		bl_fail("connection lost", strerror(EVUTIL_SOCKET_ERROR()));
	}
}

static int bl_client_main(char **argv)
{
	struct sockaddr_in sin = { .sin_family = AF_INET };
	struct bl_conn **conns;
	char head[512];
	size_t hl, lines;

	sin.sin_port = htons(atoi(argv[0]));
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	bl_c.n = atol(argv[1]);
	bl_c.conc = atol(argv[2]);
	bl_c.size = atol(argv[3]);
	bl_c.nmbx = atol(argv[4]);
	bl_c.first = atol(argv[5]);
	bl_c.rcptbase = argv[6];
	bl_c.sender = argv[7];
	if (bl_c.n < 1 || bl_c.conc < 1 || bl_c.nmbx < 1 || bl_c.size < 0)
		bl_fail("usage", "N, CONC and NMBX must be >= 1");
	/* the same message as bench/lmtp's message_body() */
	hl = snprintf(head, sizeof(head), "From: <%s>\r\nTo: <bench@bench.example>\r\n"
		      "Subject: bench/lmtp synthetic\r\n\r\n", bl_c.sender);
	if (hl >= sizeof(head))
		bl_fail("usage", "sender too long");
	lines = bl_c.size / 78 ? bl_c.size / 78 : 1;
	bl_c.msg_len = hl + lines * 78;
	bl_c.body_len = bl_c.msg_len + 3;
	bl_c.body = malloc(bl_c.body_len);
	conns = calloc(bl_c.conc, sizeof(*conns));
	if (bl_c.body == NULL || conns == NULL)
		bl_fail("malloc", strerror(errno));
	memcpy(bl_c.body, head, hl);
	for (size_t i = 0; i < lines; i++) {
		memset(bl_c.body + hl + i * 78, 'x', 76);
		memcpy(bl_c.body + hl + i * 78 + 76, "\r\n", 2);
	}
	memcpy(bl_c.body + bl_c.msg_len, ".\r\n", 3);
	for (long i = 0; i < bl_c.conc; i++) {
		struct bl_conn *c = calloc(1, sizeof(*c));

		if (c == NULL)
			bl_fail("malloc", strerror(errno));
		c->bev = bufferevent_socket_new(bl_base, -1, BEV_OPT_CLOSE_ON_FREE);
		bufferevent_setcb(c->bev, bl_client_read, NULL, bl_client_event, c);
		bufferevent_enable(c->bev, EV_READ | EV_WRITE);
		if (bufferevent_socket_connect(c->bev, (struct sockaddr *)&sin, sizeof(sin)) < 0)
			bl_fail("connect", strerror(errno));
		conns[i] = c;
	}
	/* until every connection has said LHLO */
	event_base_dispatch(bl_base);
	if (bl_c.ready != bl_c.conc)
		bl_fail("start", "not every connection got ready");
	for (long i = 0; i < bl_c.conc; i++)
		bl_send_txn(conns[i]);
	event_base_dispatch(bl_base);
	free(conns);
	if (bl_c.ok != bl_c.n)
		bl_fail("end", "not every message was answered");
	printf("{\"elapsed\": %.6f, \"ok\": %ld, \"nbad\": 0, \"bad\": []}\n",
	       bl_c.t1 - bl_c.t0, bl_c.ok);
	free(bl_c.body);
	return 0;
}

int main(int argc, char **argv)
{
	int rc;

	bl_base = event_base_new();
	if (bl_base == NULL) {
		fprintf(stderr, "tn-bench-lmtp: event_base_new failed\n");
		return 1;
	}
	if (argc == 3 && strcmp(argv[1], "sink") == 0)
		rc = bl_sink_main(atoi(argv[2]));
	else if (argc == 10 && strcmp(argv[1], "client") == 0)
		rc = bl_client_main(argv + 2);
	else {
		fprintf(stderr, "usage: tn-bench-lmtp sink PORT\n"
			"       tn-bench-lmtp client PORT N CONC SIZE NMBX FIRST RCPTBASE SENDER\n");
		rc = 64;
	}
	event_base_free(bl_base);
	return rc;
}
