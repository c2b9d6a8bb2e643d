/*++
 * NAME
 *	provd-idem 3
 * SUMMARY
 *	tn-provisiond: Idempotency-Key on POST
 * DESCRIPTION
 *	draft-ietf-httpapi-idempotency-key-header, for every POST route
 *	(creates and the suspend, resume, restore and purge actions);
 *	other methods ignore the header (PATCH with If-Match, DELETE and
 *	the reads are idempotent already).
 *
 *	The key: 1 to 255 printable ASCII characters, bare or as a quoted
 *	string ("..." as the draft's sf-string; no quote or backslash
 *	inside); anything else is 400, field "Idempotency-Key". Keys are
 *	scoped by the caller's token: two tokens never share a record.
 *
 *	The request's fingerprint is SHA-256 over method, path and body.
 *	lib/tn-idem reserves the key in Redis (shared by every node), the
 *	route runs, and its reply (status, body, ETag, Location) is stored
 *	for provd_idempotency_ttl. Then:
 *	    same key, same fingerprint, done     the stored reply again, with
 *	                                         Idempotent-Replayed: true
 *	    same key, same fingerprint, running  409 idempotency_in_progress,
 *	                                         Retry-After: 1
 *	    same key, other fingerprint          422 idempotency_key_reused
 *	    Redis unreachable                    503 tempfail + Retry-After:
 *	                                         the request does not run
 *	A 5xx reply is not stored: the key is released, so that a retry
 *	runs again. The reservation lives for prov_timeout + 10 s (a
 *	request cannot run longer); when the reply cannot be stored (Redis
 *	lost meanwhile), it is still sent, and a retry after the
 *	reservation expired runs again (a create then answers 409).
 *--*/
#include "tn-build.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "provd.h"
#include "tn-idem.h"
#include "tn-log.h"
#include "tn-mem.h"

#define PROVD_IDEM_KEY_MAX 255
#define PROVD_IDEM_HEADER "Idempotency-Key"
#define PROVD_IDEM_DEADLINE 5000	/* ms for all Redis commands of one step */

/* 1: *key_r (a copy, unquoted); 0: no header; -1: malformed */
static int provd_idem_key(struct MHD_Connection *conn, char **key_r)
{
	const char *h = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, PROVD_IDEM_HEADER);
	size_t len;

	*key_r = NULL;
	if (h == NULL)
		return 0;
	len = strlen(h);
	if (len >= 2 && h[0] == '"' && h[len - 1] == '"') {
		h++;
		len -= 2;
		if (memchr(h, '"', len) != NULL || memchr(h, '\\', len) != NULL)
			return -1;
	}
	if (len == 0 || len > PROVD_IDEM_KEY_MAX)
		return -1;
	for (size_t i = 0; i < len; i++) {
		if ((unsigned char)h[i] < 0x20 || (unsigned char)h[i] > 0x7e)
			return -1;
	}
	*key_r = tn_mem_strndup(h, len);
	return 1;
}

static void provd_idem_fingerprint(const char *method, const char *url,
				   const struct provd_req *rq, unsigned char fp[TN_IDEM_FP_LEN])
{
	EVP_MD_CTX *sha = EVP_MD_CTX_new();

	if (sha == NULL || EVP_DigestInit_ex(sha, EVP_sha256(), NULL) != 1 ||
	    EVP_DigestUpdate(sha, method, strlen(method) + 1) != 1 ||
	    EVP_DigestUpdate(sha, url, strlen(url) + 1) != 1 ||
	    (rq->len > 0 && EVP_DigestUpdate(sha, rq->body, rq->len) != 1) ||
	    EVP_DigestFinal_ex(sha, fp, NULL) != 1)
		abort();	/* out of memory: fail-stop */
	EVP_MD_CTX_free(sha);
}

/* {"status":N,"body":"...","etag":"...","location":"..."} */
static char *provd_idem_encode(const struct provd_reply *rp)
{
	json_t *o = json_pack("{s:i}", "status", (int)rp->status);
	char *text;

	if (rp->body != NULL)
		json_object_set_new(o, "body", json_string(rp->body));
	if (rp->etag != NULL)
		json_object_set_new(o, "etag", json_string(rp->etag));
	if (rp->location != NULL)
		json_object_set_new(o, "location", json_string(rp->location));
	text = json_dumps(o, JSON_COMPACT);
	json_decref(o);
	if (text == NULL)
		abort();	/* jansson out of memory: fail-stop, as tn_mem_* */
	return text;
}

static int provd_idem_decode(const char *payload, size_t len, struct provd_reply *rp)
{
	json_t *o = json_loadb(payload, len, 0, NULL);
	const char *body = NULL, *etag = NULL, *location = NULL;
	int status = 0;

	if (o == NULL || json_unpack(o, "{s:i,s?s,s?s,s?s}", "status", &status, "body", &body,
				     "etag", &etag, "location", &location) != 0 ||
	    status < 100 || status > 499) {
		json_decref(o);
		return -1;
	}
	rp->status = (unsigned)status;
	rp->body = body != NULL ? tn_mem_strdup(body) : NULL;
	rp->etag = etag != NULL ? tn_mem_strdup(etag) : NULL;
	rp->location = location != NULL ? tn_mem_strdup(location) : NULL;
	json_decref(o);
	return 0;
}

/* The reply of the request that ran: stored, or the key released (5xx). */
static void provd_idem_finish(struct provd *pd, struct tn_idem_slot *slot,
			      const struct provd_reply *rp)
{
	tn_msec_t deadline = tn_time_now_ms() + PROVD_IDEM_DEADLINE;
	const char *error = NULL;
	char *payload;

	if (rp->status >= 500) {
		if (tn_idem_release(pd->idem, slot, deadline, &error) < 0)
			tn_warning("Idempotency-Key: cannot release the key after a %u: %s "
				   "(a retry gets 409 until the reservation expires)", rp->status,
				   error);
		return;
	}
	payload = provd_idem_encode(rp);
	if (tn_idem_commit(pd->idem, slot, payload, strlen(payload), pd->idem_ttl, deadline,
			   &error) < 0)
		tn_warning("Idempotency-Key: the reply (%u) is not stored: %s", rp->status, error);
	free(payload);
}

/* The stored reply again. */
static void provd_idem_replay(struct provd *pd, const char *url, char *payload, size_t len,
			      struct provd_reply *rp)
{
	char safe[TN_LOG_VALUE_MAX];

	if (provd_idem_decode(payload, len, rp) < 0) {
		tn_error("Idempotency-Key: a stored reply that cannot be read");
		provd_reply_error(rp, 500, "internal", "the stored reply cannot be read", NULL);
		return;
	}
	rp->replayed = true;
	provd_count_extra(pd, &pd->replays);
	tn_info("POST %s: Idempotency-Key repeated, the stored %u replayed",
		tn_log_sanitize(safe, sizeof(safe), url, strlen(url)), rp->status);
}

static void provd_idem_refuse(struct provd *pd, enum tn_idem_state state, const char *error,
			      struct provd_reply *rp)
{
	switch (state) {
	case TN_IDEM_BUSY:
		provd_count_extra(pd, &pd->idem_conflicts);
		provd_reply_error(rp, 409, "idempotency_in_progress", "a request with this "
				  "Idempotency-Key is still being processed", PROVD_IDEM_HEADER);
		rp->retry_after = 1;
		break;
	case TN_IDEM_MISMATCH:
		provd_reply_error(rp, 422, "idempotency_key_reused", "this Idempotency-Key was "
				  "used for another request", PROVD_IDEM_HEADER);
		break;
	default:
		tn_warning("Idempotency-Key: %s", error != NULL ? error : "redis failed");
		provd_reply_error(rp, 503, "tempfail", "the idempotency store (Redis) is "
				  "unavailable; nothing was done", NULL);
		break;
	}
}

void provd_idem_route(struct provd *pd, struct MHD_Connection *conn, const char *url,
		      const char *method, const struct provd_caller *who,
		      const struct provd_req *rq, struct provd_reply *rp)
{
	unsigned char fp[TN_IDEM_FP_LEN];
	struct tn_idem_slot slot = { NULL, NULL };
	enum tn_idem_state state;
	const char *error = NULL;
	char *key = NULL, *payload = NULL;
	size_t len = 0;
	int have = strcmp(method, "POST") == 0 ? provd_idem_key(conn, &key) : 0;

	if (have == 0) {
		provd_route(pd, conn, url, method, who, rq, rp);
		return;
	}
	if (have < 0) {
		provd_reply_error(rp, 400, "bad_input", "Idempotency-Key: expected 1 to 255 "
				  "printable ASCII characters", PROVD_IDEM_HEADER);
		return;
	}
	provd_idem_fingerprint(method, url, rq, fp);
	state = tn_idem_begin(pd->idem, who->scope, key, fp, pd->idem_running_ttl,
			      tn_time_now_ms() + PROVD_IDEM_DEADLINE, &slot, &payload, &len,
			      &error);
	if (state == TN_IDEM_NEW) {
		provd_route(pd, conn, url, method, who, rq, rp);
		provd_idem_finish(pd, &slot, rp);
	} else if (state == TN_IDEM_DONE) {
		provd_idem_replay(pd, url, payload, len, rp);
	} else {
		provd_idem_refuse(pd, state, error, rp);
	}
	tn_idem_slot_clear(&slot);
	tn_mem_free(&payload);
	tn_mem_free(&key);
}
