/*++
 * NAME
 *	tnctl-api 3h
 * SUMMARY
 *	tnctl's client of tn-provisiond's REST API (libcurl)
 * DESCRIPTION
 *	One struct tnctl_api per run: the base URL (tnctl_api_url), the
 *	bearer token (TNCTL_API_TOKEN, else the first line of
 *	tnctl_api_token_file), the CA for https (tnctl_api_ca_file; peer
 *	and host verification are always on) and the deadline of one
 *	request (tnctl_api_timeout).
 *
 *	Requests run on one libcurl multi handle, which keeps the
 *	connections open between requests (HTTP/1.1 keep-alive): a
 *	single call (tnctl_api_call) and many in flight at once
 *	(tnctl_api_start, then tnctl_api_next until each has come back)
 *	use the same pool. Easy handles are recycled.
 *
 *	A request (struct tnctl_api_req) owns its path, body and
 *	headers; when it is done it holds the HTTP status (0: no answer,
 *	with the reason in error and what in fail), the response body,
 *	the ETag and Retry-After.
 *
 *	tnctl_api_exit() maps an answer onto tnctl's exit statuses:
 *	0 2xx; 1 404; 65 400, 413, 422; 3 409, 412; 77 401, 403;
 *	75 429, 503 and no answer (connection refused, timeout, cut);
 *	78 TLS failures (a CA or certificate problem: configuration);
 *	70 other 5xx and anything unexpected.
 * SECURITY
 *	The token is sent only in the Authorization header; it is never
 *	printed. A token file readable by group or others is refused.
 *--*/
#ifndef TNCTL_API_H
#define TNCTL_API_H

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

#include "tn-conf.h"

/* conflict (409) and precondition failed (412): the object exists, or
 * it changed since the ETag given was read */
#define TNCTL_EX_CONFLICT 3

extern const struct tn_conf_param tnctl_api_params[];

enum tnctl_api_fail {
	TNCTL_API_ANSWERED,	/* http holds the status */
	TNCTL_API_UNREACHABLE,	/* could not connect (refused, no route, DNS) */
	TNCTL_API_TIMEOUT,	/* tnctl_api_timeout passed: the outcome is unknown */
	TNCTL_API_TLS,		/* TLS handshake or certificate verification failed */
	TNCTL_API_BROKEN,	/* anything else: a connection cut, a huge answer */
};

struct tnctl_api_req {
	/* the caller's */
	void *data;
	/* set by tnctl_api_req_init */
	char *method;
	char *path;		/* "/v1/...", query escaped */
	char *body;		/* JSON text or NULL */
	char *if_match;		/* ETag or NULL */
	char *idem_key;		/* Idempotency-Key or NULL */
	/* the answer */
	long http;		/* 0: no answer (fail, error) */
	enum tnctl_api_fail fail;
	char *resp;		/* response body, NUL-terminated, or NULL */
	size_t resp_len;
	char *etag;		/* ETag without quotes, or NULL */
	long retry_after;	/* seconds, 0 when absent */
	bool replayed;		/* Idempotent-Replayed: true (a stored answer) */
	char error[256];	/* no answer: why */
	/* private */
	void *easy;
	void *headers;
	bool too_big;
};

struct tnctl_api;

/* Always a handle; tnctl_api_error() is non-NULL when it is unusable
 * (no token, a bad URL, libcurl failed). max_conns bounds the open
 * connections (1 for single calls). */
struct tnctl_api *tnctl_api_create(const struct tn_conf *conf, unsigned max_conns);
const char *tnctl_api_error(const struct tnctl_api *api);
void tnctl_api_destroy(struct tnctl_api **api);

/* path is "/v1/..." (the caller escapes its segments); body may be
 * NULL (no body; "" for an empty POST); if_match and idem_key may be
 * NULL. All are copied. */
void tnctl_api_req_init(struct tnctl_api_req *rq, const char *method, const char *path,
			const char *body, const char *if_match, const char *idem_key);
/* Forget the answer (to send rq again) */
void tnctl_api_req_reset(struct tnctl_api_req *rq);
void tnctl_api_req_clear(struct tnctl_api_req *rq);

/* One request, waited for. 0, or -1 when it could not even be started. */
int tnctl_api_call(struct tnctl_api *api, struct tnctl_api_req *rq);
/* Start rq; 0, or -1 (then rq->fail and rq->error are set). */
int tnctl_api_start(struct tnctl_api *api, struct tnctl_api_req *rq);
/* A request that has finished, or NULL when none finished within
 * wait_ms (or none is in flight). */
struct tnctl_api_req *tnctl_api_next(struct tnctl_api *api, long wait_ms);
size_t tnctl_api_in_flight(const struct tnctl_api *api);

/* The answer's JSON, or NULL (no body, not JSON). */
json_t *tnctl_api_json(const struct tnctl_api_req *rq);
/* The error body's "code" ("conflict", "idempotency_in_progress"), or
 * NULL (fresh). */
char *tnctl_api_code(const struct tnctl_api_req *rq);
/* "404 not_found: no such tenant (field: id)" or "no answer: ..." */
char *tnctl_api_describe(const struct tnctl_api_req *rq);
/* The same for an error object {"code","message","field"} of status
 * http (a batch item's; err may be NULL) */
char *tnctl_api_describe_error(long http, const json_t *err);
int tnctl_api_exit(const struct tnctl_api_req *rq);

/* s percent-encoded for a path segment or query value (fresh) */
char *tnctl_api_escape(const char *s);

#endif
