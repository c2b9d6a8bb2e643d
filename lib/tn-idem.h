/*++
 * NAME
 *	tn-idem 3h
 * SUMMARY
 *	idempotency records in Redis, shared by every node of a service
 * DESCRIPTION
 *	What an HTTP service needs to honour an Idempotency-Key
 *	(draft-ietf-httpapi-idempotency-key-header) across several nodes:
 *	the first request with a key reserves it, runs, and stores its
 *	response; a repeat reads the stored response back instead of
 *	running again. The record knows nothing of HTTP: a scope (who asks,
 *	e.g. a digest of the caller's credential), the key as the client
 *	sent it, a fingerprint of the request (32 bytes, e.g. SHA-256 of
 *	method, path and body) and an opaque payload.
 *
 *	One Redis key per (scope, key): <redis_key_prefix>idem:<scope>:
 *	<sha256-hex of key>, holding either
 *	    "R" <fingerprint hex> <nonce hex>   running (reserved)
 *	    "D" <fingerprint hex> <payload>     done
 *	tn_idem_begin() reserves with SET NX PX running_ttl; when the key
 *	exists it reads it (GET) and answers DONE with the payload, BUSY,
 *	or MISMATCH when the fingerprint differs. tn_idem_commit() replaces
 *	the reservation by the payload (SET PX ttl) and tn_idem_release()
 *	deletes it, both only while the key still holds this reservation
 *	(a short EVAL compares the nonce), so a reservation that expired
 *	and was taken by another request is never overwritten. The layout is
 *	in docs/redis-keys.md.
 *
 *	Settings are the lookup's redis_* parameters (host or socket, port,
 *	password file, db, timeout, connections, key prefix): the same
 *	server as the shared cache. redis_enabled = no leaves a handle whose
 *	every call fails with a message saying so.
 *
 *	Every call ends by its deadline, and each command by redis_timeout.
 *	Failure (Redis unreachable, slow or answering an error) is
 *	TN_IDEM_ERROR / -1 with *error_r; the caller must then not run the
 *	request it protects.
 *
 *	Thread-safe: a pool of redis_connections connections.
 * SECURITY
 *	Commands are built with redisCommandArgv only. The scope and the key
 *	are hashed or hex before they reach a key name. The password is
 *	read once (before a privilege drop) and wiped at destroy.
 *--*/
#ifndef TN_IDEM_H
#define TN_IDEM_H

#include <stddef.h>

#include "tn-conf.h"
#include "tn-time.h"

#define TN_IDEM_FP_LEN 32

enum tn_idem_state {
	TN_IDEM_NEW,		/* reserved: run, then tn_idem_commit or _release */
	TN_IDEM_DONE,		/* the response is stored: *payload_r */
	TN_IDEM_BUSY,		/* another request with this key is running */
	TN_IDEM_MISMATCH,	/* this key was used for another request */
	TN_IDEM_ERROR,		/* Redis could not answer: *error_r */
};

/* A reservation, between tn_idem_begin() and _commit()/_release(). */
struct tn_idem_slot {
	char *rkey;		/* the Redis key */
	char *marker;		/* the "R..." value we set */
};

struct tn_idem;

/* From the redis_* parameters of conf (reads redis_password_file). NULL
 * with *error_r when that file cannot be read; no traffic here. */
struct tn_idem *tn_idem_create(const struct tn_conf *conf, const char **error_r);
void tn_idem_destroy(struct tn_idem **im);

/* scope: [0-9a-z]{1,64}; key: any bytes (hashed). On TN_IDEM_NEW *slot
 * holds the reservation; on TN_IDEM_DONE *payload_r and *len_r a stored
 * payload the caller frees (tn_mem_free). */
enum tn_idem_state tn_idem_begin(struct tn_idem *im, const char *scope, const char *key,
				 const unsigned char fp[TN_IDEM_FP_LEN], tn_msec_t running_ttl,
				 tn_msec_t deadline, struct tn_idem_slot *slot,
				 char **payload_r, size_t *len_r, const char **error_r);
/* Store payload for ttl in place of the reservation; clears *slot. 0,
 * or -1 (Redis failed, or the reservation was gone) with *error_r. */
int tn_idem_commit(struct tn_idem *im, struct tn_idem_slot *slot, const char *payload,
		   size_t len, tn_msec_t ttl, tn_msec_t deadline, const char **error_r);
/* Give the key up (the request will run again when repeated); clears
 * *slot. 0 or -1 with *error_r. */
int tn_idem_release(struct tn_idem *im, struct tn_idem_slot *slot, tn_msec_t deadline,
		    const char **error_r);
void tn_idem_slot_clear(struct tn_idem_slot *slot);

#endif
