/*++
 * NAME
 *	provd 3h
 * SUMMARY
 *	tn-provisiond's parts: state, replies, tokens, routes, idempotency
 * DESCRIPTION
 *	tn-provisiond.c	main, configuration, listener (TLS), the request
 *			handler of libmicrohttpd, /metrics
 *	provd-tokens.c	the tokens file, bearer authentication, the
 *			per-token request rate limit
 *	provd-routes.c	the /v1 routes over the provisioning core
 *	provd-idem.c	Idempotency-Key on POST (Redis, lib/tn-idem)
 *
 *	A route never talks to libmicrohttpd's response API: it fills a
 *	struct provd_reply, which the handler sends (and provd-idem.c
 *	stores, for a replay). Memory: tn_mem_* (fail-stop) throughout.
 *--*/
#ifndef PROVD_H
#define PROVD_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>
#include <microhttpd.h>
#include <openssl/sha.h>

#include "tn-conf.h"
#include "tn-prov.h"
#include "tn-time.h"

#define PROVD_RETRY_AFTER 5	/* seconds, on 503 */
#define PROVD_NCODES 20

struct tn_idem;
struct tn_lookup;
struct tn_outbox;

enum provd_role {
	PROVD_ADMIN,
	PROVD_BILLING,
	PROVD_TENANT,
};

/* Token bucket: 'level' requests may be made now. */
struct provd_bucket {
	double level;
	tn_msec_t last;		/* 0: never used (full) */
};

struct provd_token {
	unsigned char digest[SHA256_DIGEST_LENGTH];
	enum provd_role role;
	char *name;			/* tenant id, billing name, or NULL */
	struct provd_bucket bucket;	/* under provd.rlock */
};

/* The caller, from its token (a copy: the tokens may be reloaded). */
struct provd_caller {
	enum provd_role role;
	char *name;			/* tenant id (PROVD_TENANT), billing name, or NULL */
	unsigned char digest[SHA256_DIGEST_LENGTH];	/* the token's */
	char scope[33];			/* idempotency scope: hex, from the digest */
};

struct provd {
	struct tn_conf *conf;
	struct tn_lookup *lookup;
	struct tn_outbox *outbox;
	struct tn_prov *prov;
	struct tn_idem *idem;
	struct MHD_Daemon *mhd;
	char *tls_cert, *tls_key;	/* PEM, read before the privilege drop */
	pthread_rwlock_t tlock;		/* tokens, ntokens: replaced on SIGHUP */
	struct provd_token *tokens;
	size_t ntokens;
	pthread_mutex_t rlock;		/* the tokens' buckets */
	double rate, burst;		/* requests/s; 0: no limit */
	size_t max_body;
	size_t batch_max;		/* items of one POST /v1/batch/<coll> */
	tn_msec_t prov_timeout;		/* one request's deadline, all its core calls */
	tn_msec_t idem_ttl, idem_running_ttl;
	bool metrics;
	pthread_mutex_t mlock;
	uint64_t responses[PROVD_NCODES];	/* by provd_codes[] index */
	uint64_t rate_limited, replays, idem_conflicts;
};

/* An answer, before it is sent. */
struct provd_reply {
	unsigned status;
	char *body;		/* JSON text with a final newline, or NULL */
	char *etag;		/* unquoted, or NULL */
	char *location;
	const char *allow;	/* static: 405 */
	unsigned retry_after;	/* seconds; 0: none (503 gets PROVD_RETRY_AFTER) */
	bool replayed;		/* Idempotent-Replayed: true */
};

/* One request's state between libmicrohttpd's calls. */
struct provd_req {
	char *body;
	size_t len;
	bool too_big;		/* beyond max_body: discarded */
	size_t discarded;	/* bytes of it */
	bool answered;		/* a reply was queued early (413) */
};

/* provd-routes.c */
void provd_reply_json(struct provd_reply *rp, unsigned status, json_t *body);
void provd_reply_error(struct provd_reply *rp, unsigned status, const char *code,
		       const char *message, const char *field);
void provd_reply_clear(struct provd_reply *rp);
void provd_route(struct provd *pd, struct MHD_Connection *conn, const char *url,
		 const char *method, const struct provd_caller *caller,
		 const struct provd_req *rq, struct provd_reply *rp);
const char *provd_role_name(enum provd_role role);

/* provd-tokens.c */
int provd_tokens_load(struct provd *pd);
void provd_tokens_free(struct provd_token **tokens, size_t n);
int provd_auth(struct provd *pd, struct MHD_Connection *conn, struct provd_caller *c);
/* 0: allowed; else the seconds to wait (>= 1) */
unsigned provd_rate_take(struct provd *pd, const struct provd_caller *c);
unsigned provd_bucket_take(struct provd_bucket *b, double rate, double burst, tn_msec_t now);
void provd_caller_clear(struct provd_caller *c);

/* provd-idem.c */
void provd_idem_route(struct provd *pd, struct MHD_Connection *conn, const char *url,
		      const char *method, const struct provd_caller *caller,
		      const struct provd_req *rq, struct provd_reply *rp);

/* tn-provisiond.c */
void provd_count_extra(struct provd *pd, uint64_t *counter);

#endif
