/*++
 * NAME
 *	tnctl-bulk 3
 * SUMMARY
 *	what import and sync share: reading a whole input file, and many
 *	API requests in parallel with retries (see tnctl-prov.h)
 * DESCRIPTION
 *	tnctl_bulk_run() keeps up to b->parallel items in flight on one
 *	libcurl multi handle (tnctl-api.c). Each item is a chain of
 *	requests: the caller puts the first into a request (send), and is
 *	given each final answer (answer), which either ends the item or
 *	puts its next request in (a GET after a 409, a resume after an
 *	update). Answers that are not final are the runner's: no answer
 *	or a timeout is tried again 3 times, 503 and 409
 *	idempotency_in_progress 5 times, 429 as long as the server asks,
 *	each after Retry-After (at most 10 s, else 1 s). When the
 *	retries of an unanswered request are used up the run stops
 *	(unreachable), and so it does at once at a TLS failure (tls: the
 *	certificate would fail again), a 401 (refused) or a SIGINT
 *	(tnctl_bulk_catch_sigint): the items in flight are finished, those
 *	waiting for a retry are given up ("stopped"), the rest are not
 *	started.
 *--*/
#include "tn-build.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <openssl/sha.h>

#include "tn-mem.h"
#include "tn-time.h"
#include "tnctl-api.h"
#include "tnctl-prov.h"

#define BULK_RETRY_BUSY 5	/* 503, 409 idempotency_in_progress */
#define BULK_RETRY_LIMITED 1000	/* 429: the server's rate limit paces us */
#define BULK_RETRY_NET 3	/* no connection, timeout */
#define BULK_READ_CHUNK 65536

struct tnctl_bulk_slot {
	struct tnctl_api_req rq;
	void *item;		/* NULL: free */
	bool in_flight;
	unsigned busy_tries, net_tries, limited_tries;
	tn_msec_t not_before;
};

static volatile sig_atomic_t tnctl_bulk_sigint;

/* --- reading ------------------------------------------------------------------------ */

int tnctl_bulk_read(const char *path, size_t max, char **buf_r, size_t *len_r,
		    const char **why_r)
{
	FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "re");
	char *buf = NULL;
	size_t len = 0, cap = 0, n;
	int ret = 0;

	if (f == NULL) {
		*why_r = strerror(errno);
		return -1;
	}
	do {
		if (len + BULK_READ_CHUNK + 1 > cap) {
			cap = cap == 0 ? 1 << 20 : 2 * cap;
			buf = tn_mem_realloc(buf, cap);
		}
		n = fread(buf + len, 1, cap - len - 1, f);
		len += n;
	} while (n > 0 && len <= max);
	if (ferror(f) || len > max) {
		*why_r = len > max ? "too large" : strerror(errno);
		tn_mem_free(&buf);
		ret = -1;
	} else {
		buf[len] = '\0';
		*buf_r = buf;
		*len_r = len;
	}
	if (f != stdin)
		fclose(f);
	return ret;
}

void tnctl_bulk_lines(const char *buf, size_t len, tnctl_bulk_line_fn *fn, void *ctx)
{
	unsigned line = 1;

	for (const char *p = buf, *end = buf + len; p < end; line++) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		size_t n = nl != NULL ? (size_t)(nl - p) : (size_t)(end - p);

		fn(ctx, line, p, n);
		p += n + 1;
	}
}

const char *tnctl_bulk_format(const char *file, const char *buf, size_t len)
{
	static const char *const ext[][2] = {
		{ ".csv", "csv" }, { ".ndjson", "ndjson" }, { ".jsonl", "ndjson" },
		{ ".json", "ndjson" }, { ".ldif", "ldif" }, { ".ldi", "ldif" },
	};
	size_t n = strlen(file), skip = strspn(buf, " \t\r\n");

	for (size_t i = 0; i < sizeof(ext) / sizeof(ext[0]); i++) {
		size_t e = strlen(ext[i][0]);

		if (n > e && strcmp(file + n - e, ext[i][0]) == 0)
			return ext[i][1];
	}
	if (skip < len && buf[skip] == '{')
		return "ndjson";
	if (skip < len && (buf[skip] == '#' || strncasecmp(buf + skip, "dn:", 3) == 0 ||
			   strncasecmp(buf + skip, "version:", 8) == 0))
		return "ldif";
	return "csv";
}

void tnctl_bulk_sha256(const void *data, size_t len, char hex[65])
{
	unsigned char d[SHA256_DIGEST_LENGTH];

	SHA256(data, len, d);
	for (size_t i = 0; i < sizeof(d); i++)
		snprintf(hex + 2 * i, 3, "%02x", d[i]);
}

/* --- SIGINT ----------------------------------------------------------------------------- */

static void tnctl_bulk_on_sigint(int sig)
{
	(void)sig;
	tnctl_bulk_sigint = 1;
	signal(SIGINT, SIG_DFL);	/* a second ^C ends tnctl at once */
}

void tnctl_bulk_catch_sigint(void)
{
	struct sigaction sa;

	tnctl_bulk_sigint = 0;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = tnctl_bulk_on_sigint;
	sigaction(SIGINT, &sa, NULL);
}

void tnctl_bulk_release_sigint(void)
{
	signal(SIGINT, SIG_DFL);
}

bool tnctl_bulk_interrupted(void)
{
	return tnctl_bulk_sigint != 0;
}

/* --- running ------------------------------------------------------------------------------ */

bool tnctl_bulk_stopping(const struct tnctl_bulk *b)
{
	return tnctl_bulk_sigint || b->unreachable || b->refused || b->tls;
}

static void tnctl_bulk_stop(struct tnctl_bulk *b, bool *flag, const struct tnctl_api_req *rq)
{
	if (*flag)
		return;
	*flag = true;
	if (b->stop_reason == NULL)
		b->stop_reason = tnctl_api_describe(rq);
}

static void tnctl_bulk_start(struct tnctl_bulk *b, struct tnctl_bulk_slot *s);

/* The item's answer is final: give it to the caller, then its next
 * request or the slot is free. */
static void tnctl_bulk_final(struct tnctl_bulk *b, struct tnctl_bulk_slot *s, const char *stopped)
{
	if (s->rq.http == 401)
		tnctl_bulk_stop(b, &b->refused, &s->rq);
	s->in_flight = false;
	if (b->answer(b->ctx, s->item, &s->rq, stopped) && stopped == NULL) {
		tnctl_bulk_start(b, s);
		return;
	}
	tnctl_api_req_clear(&s->rq);
	s->item = NULL;
}

static void tnctl_bulk_start(struct tnctl_bulk *b, struct tnctl_bulk_slot *s)
{
	s->rq.data = s;
	if (tnctl_api_start(b->api, &s->rq) < 0) {
		tnctl_bulk_final(b, s, NULL);
		return;
	}
	s->in_flight = true;
}

static void tnctl_bulk_send(struct tnctl_bulk *b, struct tnctl_bulk_slot *s, void *item)
{
	memset(s, 0, sizeof(*s));
	s->item = item;
	b->send(b->ctx, item, &s->rq);
	tnctl_bulk_start(b, s);
}

/* 409 because the same Idempotency-Key is still running (the request
 * of a killed run): not a duplicate, wait for it. */
static bool tnctl_bulk_in_progress(const struct tnctl_api_req *rq)
{
	char *code = rq->http == 409 ? tnctl_api_code(rq) : NULL;
	bool ret = code != NULL && strcmp(code, "idempotency_in_progress") == 0;

	tn_mem_free(&code);
	return ret;
}

/* No answer, 503, 429, or the same key still running: again later, or
 * final. */
static void tnctl_bulk_retry(struct tnctl_bulk *b, struct tnctl_bulk_slot *s)
{
	bool net = s->rq.http == 0, limited = s->rq.http == 429;
	unsigned *tries = net ? &s->net_tries : limited ? &s->limited_tries : &s->busy_tries;
	unsigned max = net ? BULK_RETRY_NET : limited ? BULK_RETRY_LIMITED : BULK_RETRY_BUSY;
	long wait = s->rq.retry_after > 0 ? s->rq.retry_after * 1000 : 1000;

	s->in_flight = false;
	if (net && s->rq.fail == TNCTL_API_TLS) {	/* the same next time: stop */
		tnctl_bulk_stop(b, &b->tls, &s->rq);
		tnctl_bulk_final(b, s, NULL);
		return;
	}
	if (++*tries < max && !tnctl_bulk_sigint) {
		s->not_before = tn_time_now_ms() + (wait > 10000 ? 10000 : wait);
		return;
	}
	if (net)
		tnctl_bulk_stop(b, &b->unreachable, &s->rq);
	tnctl_bulk_final(b, s, NULL);
}

static void tnctl_bulk_answer(struct tnctl_bulk *b, struct tnctl_bulk_slot *s)
{
	long http = s->rq.http;

	if (http == 0 || http == 503 || http == 429 || tnctl_bulk_in_progress(&s->rq))
		tnctl_bulk_retry(b, s);
	else
		tnctl_bulk_final(b, s, NULL);
}

/* Start what can be started: retries whose time has come, then the
 * next items. The number of slots in use. */
static size_t tnctl_bulk_fill(struct tnctl_bulk *b, void **items, size_t n, size_t *next)
{
	tn_msec_t now = tn_time_now_ms();
	size_t busy = 0;

	for (size_t i = 0; i < b->parallel; i++) {
		struct tnctl_bulk_slot *s = &b->slots[i];

		if (s->item != NULL && !s->in_flight && tnctl_bulk_stopping(b))
			tnctl_bulk_final(b, s, "not tried again: stopped");
		else if (s->item != NULL && !s->in_flight && now >= s->not_before)
			tnctl_bulk_start(b, s);
		while (s->item == NULL && !tnctl_bulk_stopping(b) && *next < n)
			tnctl_bulk_send(b, s, items[(*next)++]);
		busy += s->item != NULL;
	}
	return busy;
}

void tnctl_bulk_run(struct tnctl_bulk *b, void **items, size_t n)
{
	struct tnctl_api_req *rq;
	size_t next = 0, busy;

	if (b->slots == NULL)
		b->slots = tn_mem_calloc(b->parallel > 0 ? b->parallel : 1, sizeof(*b->slots));
	for (;;) {
		busy = tnctl_bulk_fill(b, items, n, &next);
		if (busy == 0 && (next >= n || tnctl_bulk_stopping(b)))
			break;
		if (tnctl_api_in_flight(b->api) == 0)
			usleep(20 * 1000);	/* only retries waiting for their time */
		else if ((rq = tnctl_api_next(b->api, 100)) != NULL)
			tnctl_bulk_answer(b, rq->data);
		if (b->tick != NULL)
			b->tick(b->ctx);
	}
}

void tnctl_bulk_clear(struct tnctl_bulk *b)
{
	tn_mem_free(&b->slots);
	tn_mem_free(&b->stop_reason);
}
