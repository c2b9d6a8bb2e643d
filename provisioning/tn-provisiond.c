/*++
 * NAME
 *	tn-provisiond 8
 * SUMMARY
 *	REST API over the provisioning core (tn-prov.h)
 * SYNOPSIS
 *	tn-provisiond [-c FILE] [-o NAME=VALUE]... [-e] [-n]
 * DESCRIPTION
 *	An HTTP/1.1 server (libmicrohttpd, one thread per connection) for
 *	tenants, domains, mailboxes and aliases: JSON in and out, routes
 *	/v1/<kind>s[/<key>[/suspend|/resume]]. Every request is one call of
 *	the core, which is blocking and thread-safe: one struct tn_prov
 *	serves all connection threads. Status codes are the core's
 *	(tn_prov_status_http()); 503 answers carry Retry-After.
 *
 *	Authentication: "Authorization: Bearer <token>". The tokens file
 *	(provd_tokens_file) holds "<sha256-hex> admin" or "<sha256-hex>
 *	tenant:<id>" lines; digests are compared with CRYPTO_memcmp. A
 *	tenant token calls the core with that tenant as its scope. SIGHUP
 *	reloads the file (a bad file leaves the old tokens in force).
 *
 *	/metrics (Prometheus text, no token) is served on the same
 *	listener when provd_metrics is on. Meant to run behind a TLS proxy.
 * SECURITY
 *	Tokens are kept as digests only; the token itself is never logged.
 *	Bodies beyond provd_max_body are discarded unread (413).
 *--*/
#include "tn-build.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <grp.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <pthread.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <syslog.h>
#include <sysexits.h>
#include <unistd.h>

#include <jansson.h>
#include <microhttpd.h>
#include <openssl/crypto.h>
#include <openssl/sha.h>

#include "tn-conf.h"
#include "tn-daemon.h"
#include "tn-hook-spool.h"
#include "tn-log.h"
#include "tn-lookup.h"
#include "tn-mem.h"
#include "tn-outbox.h"
#include "tn-prov.h"

#define PROVD_RETRY_AFTER "5"
#define PROVD_NCODES 16

static const struct tn_conf_param tn_provd_params[] = {
	{ "provd_listen", TN_CONF_STR, "127.0.0.1:8080", 0, 0, NULL,
	  "address:port of the HTTP listener (plain HTTP, behind a TLS proxy)" },
	{ "provd_tokens_file", TN_CONF_STR, "/etc/tenantmail/provd-tokens", 0, 0, NULL,
	  "bearer tokens: lines '<sha256-hex> admin' or '<sha256-hex> tenant:<id>'" },
	{ "provd_user", TN_CONF_STR, "tenantmail", 0, 0, NULL,
	  "user to run as when started as root" },
	{ "provd_max_body", TN_CONF_SIZE, "1m", 1024, 64 * 1024 * 1024, NULL,
	  "largest request body accepted (larger: 413)" },
	{ "provd_metrics", TN_CONF_BOOL, "yes", 0, 0, NULL,
	  "serve /metrics on the same listener" },
	{ "provd_threads_max", TN_CONF_INT, "256", 1, 65536, NULL,
	  "most connections served at once (one thread each)" },
	{ "provd_log_level", TN_CONF_ENUM, "info", 0, 0, "debug|info|warning|error",
	  "lowest log level written" },
	TN_CONF_END
};

struct provd_token {
	unsigned char digest[SHA256_DIGEST_LENGTH];
	char *tenant;			/* NULL: admin */
};

struct provd {
	struct tn_conf *conf;
	struct tn_lookup *lookup;
	struct tn_outbox *outbox;
	struct tn_prov *prov;
	struct MHD_Daemon *mhd;
	pthread_rwlock_t tlock;		/* tokens, ntokens: replaced on SIGHUP */
	struct provd_token *tokens;
	size_t ntokens;
	size_t max_body;
	bool metrics;
	pthread_mutex_t mlock;
	uint64_t responses[PROVD_NCODES];	/* by provd_codes[] index */
};

static const unsigned provd_codes[PROVD_NCODES] = {
	200, 201, 204, 400, 401, 403, 404, 405, 409, 412, 413, 422, 500, 503, 0, 0,
};

/* One request's state between libmicrohttpd's calls. */
struct provd_req {
	char *body;
	size_t len;
	bool too_big;
};

/* The caller, from its token (a copy: the tokens may be reloaded). */
struct provd_caller {
	char *tenant;			/* NULL: admin */
};

static const struct {
	const char *path;
	enum tn_prov_kind kind;
	const char *key_field;
} provd_collections[] = {
	{ "tenants", TN_PROV_TENANT, "id" },
	{ "domains", TN_PROV_DOMAIN, "domain" },
	{ "mailboxes", TN_PROV_MAILBOX, "address" },
	{ "aliases", TN_PROV_ALIAS, "address" },
};

/* --- tokens ----------------------------------------------------------------------------- */

static int provd_hex_digest(const char *hex, unsigned char *out)
{
	for (size_t i = 0; i < SHA256_DIGEST_LENGTH; i++) {
		unsigned v;

		if (!isxdigit((unsigned char)hex[2 * i]) || !isxdigit((unsigned char)hex[2 * i + 1]) ||
		    sscanf(hex + 2 * i, "%2x", &v) != 1)
			return -1;
		out[i] = (unsigned char)v;
	}
	return hex[2 * SHA256_DIGEST_LENGTH] == '\0' ? 0 : -1;
}

static void provd_tokens_free(struct provd_token **tokens, size_t n)
{
	for (size_t i = 0; i < n; i++)
		tn_mem_free(&(*tokens)[i].tenant);
	tn_mem_free(tokens);
}

static int provd_token_line(struct provd_token **tokens, size_t *n, char *line,
			    const char *path, unsigned lineno)
{
	char *save = NULL, *hex = strtok_r(line, " \t\r\n", &save);
	char *who = strtok_r(NULL, " \t\r\n", &save);
	struct provd_token t = { .tenant = NULL };

	if (hex == NULL || *hex == '#')
		return 0;
	if (who == NULL || strtok_r(NULL, " \t\r\n", &save) != NULL ||
	    provd_hex_digest(hex, t.digest) < 0 ||
	    (strcmp(who, "admin") != 0 && (strncmp(who, "tenant:", 7) != 0 || who[7] == '\0'))) {
		tn_error("%s:%u: expected '<sha256-hex> admin' or '<sha256-hex> tenant:<id>'",
			 path, lineno);
		return -1;
	}
	if (strcmp(who, "admin") != 0)
		t.tenant = tn_mem_strdup(who + 7);
	*tokens = tn_mem_realloc(*tokens, (*n + 1) * sizeof(**tokens));
	(*tokens)[(*n)++] = t;
	return 0;
}

/* Reads the tokens file; on success replaces the tokens in use. */
static int provd_tokens_load(struct provd *pd)
{
	struct provd_token *tokens = NULL;
	size_t n = 0;
	const char *path = tn_conf_str(pd->conf, "provd_tokens_file");
	FILE *f = fopen(path, "re");
	char *line = NULL;
	size_t size = 0;
	unsigned lineno = 0;
	int ret = 0;

	if (f == NULL) {
		tn_error("provd_tokens_file %s: %s", path, strerror(errno));
		return -1;
	}
	while (ret == 0 && getline(&line, &size, f) > 0)
		ret = provd_token_line(&tokens, &n, line, path, ++lineno);
	free(line);
	fclose(f);
	if (ret < 0) {
		provd_tokens_free(&tokens, n);
		return -1;
	}
	if (n == 0)
		tn_warning("provd_tokens_file %s: no tokens; every request will be refused", path);
	pthread_rwlock_wrlock(&pd->tlock);
	provd_tokens_free(&pd->tokens, pd->ntokens);
	pd->tokens = tokens;
	pd->ntokens = n;
	pthread_rwlock_unlock(&pd->tlock);
	return 0;
}

/* 0 and the caller when the token is known. Every entry is compared
 * (no early exit). */
static int provd_auth(struct provd *pd, struct MHD_Connection *conn, struct provd_caller *c)
{
	const char *h = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
						    MHD_HTTP_HEADER_AUTHORIZATION);
	unsigned char digest[SHA256_DIGEST_LENGTH];
	const struct provd_token *found = NULL;

	if (h == NULL || strncasecmp(h, "Bearer ", 7) != 0)
		return -1;
	h += 7;
	while (*h == ' ')
		h++;
	if (*h == '\0')
		return -1;
	SHA256((const unsigned char *)h, strlen(h), digest);
	pthread_rwlock_rdlock(&pd->tlock);
	for (size_t i = 0; i < pd->ntokens; i++) {
		if (CRYPTO_memcmp(digest, pd->tokens[i].digest, sizeof(digest)) == 0)
			found = &pd->tokens[i];
	}
	if (found != NULL && found->tenant != NULL)
		c->tenant = tn_mem_strdup(found->tenant);
	pthread_rwlock_unlock(&pd->tlock);
	return found != NULL ? 0 : -1;
}

/* --- responses --------------------------------------------------------------------------- */

static void provd_count(struct provd *pd, unsigned status)
{
	size_t i;

	for (i = 0; i < PROVD_NCODES - 1 && provd_codes[i] != 0; i++) {
		if (provd_codes[i] == status)
			break;
	}
	pthread_mutex_lock(&pd->mlock);
	pd->responses[i]++;
	pthread_mutex_unlock(&pd->mlock);
}

/* Headers of an answer besides Content-Type; NULL: none. */
struct provd_headers {
	const char *etag;
	const char *location;
	const char *allow;
};

/* Sends body (may be NULL: no body) and consumes it. */
static enum MHD_Result provd_send(struct provd *pd, struct MHD_Connection *conn, unsigned status,
				  json_t *body, const struct provd_headers *hd)
{
	char *text = body != NULL ? json_dumps(body, JSON_COMPACT) : NULL;
	struct MHD_Response *resp;
	enum MHD_Result ret;

	json_decref(body);
	if (text != NULL) {
		size_t len = strlen(text);

		text = tn_mem_realloc(text, len + 2);
		memcpy(text + len, "\n", 2);
		resp = MHD_create_response_from_buffer(len + 1, text, MHD_RESPMEM_MUST_FREE);
		MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
	} else {
		resp = MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT);
	}
	if (hd->etag != NULL) {
		char *quoted = tn_mem_printf("\"%s\"", hd->etag);

		MHD_add_response_header(resp, MHD_HTTP_HEADER_ETAG, quoted);
		tn_mem_free(&quoted);
	}
	if (hd->location != NULL)
		MHD_add_response_header(resp, MHD_HTTP_HEADER_LOCATION, hd->location);
	if (status == 503)
		MHD_add_response_header(resp, MHD_HTTP_HEADER_RETRY_AFTER, PROVD_RETRY_AFTER);
	if (status == 401)
		MHD_add_response_header(resp, MHD_HTTP_HEADER_WWW_AUTHENTICATE,
					"Bearer realm=\"tenantmail\"");
	if (hd->allow != NULL)
		MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, hd->allow);
	ret = MHD_queue_response(conn, status, resp);
	MHD_destroy_response(resp);
	provd_count(pd, status);
	return ret;
}

static enum MHD_Result provd_error(struct provd *pd, struct MHD_Connection *conn,
				   unsigned status, const char *code, const char *message,
				   const char *field)
{
	json_t *err = json_pack("{s:i,s:s,s:s}", "status", (int)status, "code", code,
				"message", message != NULL ? message : code);

	if (field != NULL)
		json_object_set_new(err, "field", json_string(field));
	return provd_send(pd, conn, status, json_pack("{s:o}", "error", err),
			  &(struct provd_headers){ NULL, NULL, NULL });
}

/* 405 with the methods the route has ("GET, POST") */
static enum MHD_Result provd_not_allowed(struct provd *pd, struct MHD_Connection *conn,
					 const char *allow)
{
	char msg[80];
	json_t *err;

	snprintf(msg, sizeof(msg), "method not allowed here; allowed: %s", allow);
	err = json_pack("{s:i,s:s,s:s}", "status", 405, "code", "method_not_allowed",
			"message", msg);
	return provd_send(pd, conn, 405, json_pack("{s:o}", "error", err),
			  &(struct provd_headers){ NULL, NULL, allow });
}

static enum MHD_Result provd_result(struct provd *pd, struct MHD_Connection *conn,
				    enum tn_prov_kind kind, const char *method,
				    struct tn_prov_result *res)
{
	unsigned status = (unsigned)tn_prov_status_http(res->status);
	char *location = NULL;
	json_t *body;
	enum MHD_Result ret;

	if (status >= 400)
		return provd_error(pd, conn, status, tn_prov_status_name(res->status),
				   res->message, res->field);
	if (res->cache_stale)
		tn_warning("written, but the cache invalidation failed (event %s)",
			   res->event_id != NULL ? res->event_id : "-");
	if (strcmp(method, "DELETE") == 0)
		return provd_send(pd, conn, 204, NULL, &(struct provd_headers){ NULL, NULL, NULL });
	if (res->items != NULL) {
		body = json_pack("{s:O}", "items", res->items);
		if (res->next_cursor != NULL)
			json_object_set_new(body, "next_cursor", json_string(res->next_cursor));
		return provd_send(pd, conn, status, body,
				  &(struct provd_headers){ NULL, NULL, NULL });
	}
	if (status == 201) {
		for (size_t i = 0; i < sizeof(provd_collections) / sizeof(provd_collections[0]); i++) {
			const char *key = json_string_value(json_object_get(
				res->object, provd_collections[i].key_field));

			if (provd_collections[i].kind == kind && key != NULL)
				location = tn_mem_printf("/v1/%s/%s", provd_collections[i].path, key);
		}
	}
	ret = provd_send(pd, conn, status, res->object != NULL ? json_incref(res->object) : NULL,
			 &(struct provd_headers){ res->etag, location, NULL });
	tn_mem_free(&location);
	return ret;
}

/* --- requests ---------------------------------------------------------------------------- */

/* The JSON object of the body; NULL with a 400 queued (*ret_r). An empty
 * body is an empty object when empty_ok. */
static json_t *provd_body(struct provd *pd, struct MHD_Connection *conn,
			  const struct provd_req *rq, bool empty_ok, enum MHD_Result *ret_r)
{
	json_error_t jerr;
	json_t *in;
	char msg[300];

	if (rq->len == 0 && empty_ok)
		return json_object();
	in = json_loadb(rq->body != NULL ? rq->body : "", rq->len,
			JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &jerr);
	if (in == NULL) {
		snprintf(msg, sizeof(msg), "malformed JSON: %s (line %d, column %d)", jerr.text,
			 jerr.line, jerr.column);
		*ret_r = provd_error(pd, conn, 400, "bad_input", msg, NULL);
		return NULL;
	}
	if (!json_is_object(in)) {
		json_decref(in);
		*ret_r = provd_error(pd, conn, 400, "bad_input", "the body must be a JSON object",
				     NULL);
		return NULL;
	}
	return in;
}

/* ?limit=: 0 when absent; -1 when not a number */
static int provd_limit(struct MHD_Connection *conn, unsigned *limit_r)
{
	const char *s = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "limit");
	char *end;
	unsigned long v;

	*limit_r = 0;
	if (s == NULL)
		return 0;
	errno = 0;
	v = strtoul(s, &end, 10);
	if (*s == '\0' || *end != '\0' || !isdigit((unsigned char)*s) || errno != 0 ||
	    v > 1000000)
		return -1;
	*limit_r = (unsigned)v;
	return 0;
}

static enum MHD_Result provd_list(struct provd *pd, struct MHD_Connection *conn,
				  const struct tn_prov_ctx *ctx, enum tn_prov_kind kind)
{
	struct tn_prov_result res = { 0 };
	struct tn_prov_query q = { 0 };
	enum MHD_Result ret;

	if (provd_limit(conn, &q.limit) < 0)
		return provd_error(pd, conn, 400, "bad_input", "limit: expected a number",
				   "limit");
	q.cursor = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "cursor");
	q.tenant = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "tenant");
	q.domain = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "domain");
	q.status = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "status");
	tn_prov_list(pd->prov, ctx, kind, &q, &res);
	ret = provd_result(pd, conn, kind, "GET", &res);
	tn_prov_result_clear(&res);
	return ret;
}

static enum MHD_Result provd_collection(struct provd *pd, struct MHD_Connection *conn,
					const char *method, const struct tn_prov_ctx *ctx,
					enum tn_prov_kind kind, const struct provd_req *rq)
{
	struct tn_prov_result res = { 0 };
	enum MHD_Result ret;
	json_t *in;

	if (strcmp(method, "GET") == 0)
		return provd_list(pd, conn, ctx, kind);
	if (strcmp(method, "POST") != 0)
		return provd_not_allowed(pd, conn, "GET, POST");
	if ((in = provd_body(pd, conn, rq, false, &ret)) == NULL)
		return ret;
	tn_prov_create_object(pd->prov, ctx, kind, in, &res);
	ret = provd_result(pd, conn, kind, method, &res);
	json_decref(in);
	tn_prov_result_clear(&res);
	return ret;
}

static enum MHD_Result provd_item(struct provd *pd, struct MHD_Connection *conn,
				  const char *method, const struct tn_prov_ctx *ctx,
				  enum tn_prov_kind kind, const char *key,
				  const struct provd_req *rq)
{
	struct tn_prov_result res = { 0 };
	enum MHD_Result ret;
	json_t *in = NULL;

	if (strcmp(method, "GET") == 0) {
		tn_prov_get(pd->prov, ctx, kind, key, &res);
	} else if (strcmp(method, "PATCH") == 0) {
		if ((in = provd_body(pd, conn, rq, false, &ret)) == NULL)
			return ret;
		tn_prov_modify(pd->prov, ctx, kind, key, in, &res);
	} else if (strcmp(method, "DELETE") == 0) {
		tn_prov_set_status(pd->prov, ctx, kind, key, TN_STATUS_DELETED, NULL, &res);
	} else {
		return provd_not_allowed(pd, conn, "GET, PATCH, DELETE");
	}
	ret = provd_result(pd, conn, kind, method, &res);
	json_decref(in);
	tn_prov_result_clear(&res);
	return ret;
}

/* POST .../suspend|resume, body {} or {"reason": "..."} */
static enum MHD_Result provd_action(struct provd *pd, struct MHD_Connection *conn,
				    const char *method, const struct tn_prov_ctx *ctx,
				    enum tn_prov_kind kind, const char *key, const char *action,
				    const struct provd_req *rq)
{
	struct tn_prov_result res = { 0 };
	enum tn_status to;
	enum MHD_Result ret;
	const char *bad = NULL;
	json_t *in, *reason;

	if (strcmp(action, "suspend") == 0)
		to = TN_STATUS_SUSPENDED;
	else if (strcmp(action, "resume") == 0)
		to = TN_STATUS_ACTIVE;
	else
		return provd_error(pd, conn, 404, "not_found", "no such route", NULL);
	if (strcmp(method, "POST") != 0)
		return provd_not_allowed(pd, conn, "POST");
	if ((in = provd_body(pd, conn, rq, true, &ret)) == NULL)
		return ret;
	reason = json_object_get(in, "reason");
	if (json_object_size(in) > (reason != NULL ? 1u : 0u))
		bad = "unknown field (only \"reason\" is allowed)";
	else if (reason != NULL && !json_is_string(reason) && !json_is_null(reason))
		bad = "reason: expected a string";
	if (bad != NULL) {
		ret = provd_error(pd, conn, 400, "bad_input", bad, "reason");
	} else {
		tn_prov_set_status(pd->prov, ctx, kind, key, to, json_string_value(reason), &res);
		ret = provd_result(pd, conn, kind, method, &res);
	}
	json_decref(in);
	tn_prov_result_clear(&res);
	return ret;
}

/* If-Match: "etag" (quotes and a W/ prefix dropped), or NULL (none, or *) */
static char *provd_if_match(struct MHD_Connection *conn)
{
	const char *h = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
						    MHD_HTTP_HEADER_IF_MATCH);
	size_t len;

	if (h == NULL || strcmp(h, "*") == 0)	/* "*": any current version */
		return NULL;
	if (strncmp(h, "W/", 2) == 0)
		h += 2;
	len = strlen(h);
	if (len >= 2 && h[0] == '"' && h[len - 1] == '"')
		return tn_mem_strndup(h + 1, len - 2);
	return tn_mem_strdup(h);
}

/* Writes at info, reads at debug; the key is untrusted (sanitised). */
static void provd_log_request(const char *method, const char *coll, const char *key,
			      const char *action, const struct provd_caller *tok)
{
	char safe[TN_LOG_VALUE_MAX], safe_action[64];

	tn_log_sanitize(safe, sizeof(safe), key != NULL ? key : "", key != NULL ? strlen(key) : 0);
	tn_log_sanitize(safe_action, sizeof(safe_action), action != NULL ? action : "",
			action != NULL ? strlen(action) : 0);
	tn_log(strcmp(method, "GET") == 0 ? TN_LOG_DEBUG : TN_LOG_INFO, NULL,
	       "%s /v1/%s%s%s%s%s by %s%s", method, coll, key != NULL ? "/" : "", safe,
	       action != NULL ? "/" : "", safe_action,
	       tok->tenant != NULL ? "tenant:" : "admin", tok->tenant != NULL ? tok->tenant : "");
}

static enum MHD_Result provd_route(struct provd *pd, struct MHD_Connection *conn,
				   const char *url, const char *method,
				   const struct provd_caller *tok, const struct provd_req *rq)
{
	char *path = tn_mem_strdup(url), *save = NULL;
	char *v1 = strtok_r(path, "/", &save), *coll = strtok_r(NULL, "/", &save);
	char *key = strtok_r(NULL, "/", &save), *action = strtok_r(NULL, "/", &save);
	struct tn_prov_ctx ctx = { 0 };
	char *if_match;
	enum MHD_Result ret;
	size_t i, n = sizeof(provd_collections) / sizeof(provd_collections[0]);

	for (i = 0; coll != NULL && i < n; i++) {
		if (strcmp(coll, provd_collections[i].path) == 0)
			break;
	}
	if (v1 == NULL || strcmp(v1, "v1") != 0 || coll == NULL || i == n ||
	    strtok_r(NULL, "/", &save) != NULL) {
		tn_mem_free(&path);
		return provd_error(pd, conn, 404, "not_found", "no such route", NULL);
	}
	ctx.actor_kind = tok->tenant == NULL ? "admin" : "tenant_admin";
	ctx.actor_id = tok->tenant == NULL ? "tn-provisiond" : tok->tenant;
	ctx.tenant_scope = tok->tenant;
	if_match = provd_if_match(conn);
	ctx.if_match = if_match;
	provd_log_request(method, coll, key, action, tok);
	if (key == NULL)
		ret = provd_collection(pd, conn, method, &ctx, provd_collections[i].kind, rq);
	else if (action == NULL)
		ret = provd_item(pd, conn, method, &ctx, provd_collections[i].kind, key, rq);
	else
		ret = provd_action(pd, conn, method, &ctx, provd_collections[i].kind, key, action,
				   rq);
	tn_mem_free(&if_match);
	tn_mem_free(&path);
	return ret;
}

/* --- /metrics ----------------------------------------------------------------------------- */

static enum MHD_Result provd_metrics_reply(struct provd *pd, struct MHD_Connection *conn)
{
	char *text = NULL;
	size_t size = 0;
	FILE *f = open_memstream(&text, &size);
	struct MHD_Response *resp;
	enum MHD_Result ret;

	if (f == NULL)
		return MHD_NO;
	fprintf(f, "# HELP tn_provd_responses_total HTTP responses by status code\n"
		   "# TYPE tn_provd_responses_total counter\n");
	pthread_mutex_lock(&pd->mlock);
	for (size_t i = 0; i < PROVD_NCODES; i++) {
		if (provd_codes[i] != 0) {
			fprintf(f, "tn_provd_responses_total{code=\"%u\"} %" PRIu64 "\n",
				provd_codes[i], pd->responses[i]);
			continue;
		}
		fprintf(f, "tn_provd_responses_total{code=\"other\"} %" PRIu64 "\n",
			pd->responses[i]);
		break;
	}
	pthread_mutex_unlock(&pd->mlock);
	fclose(f);
	resp = MHD_create_response_from_buffer(size, text, MHD_RESPMEM_MUST_FREE);
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE,
				"text/plain; version=0.0.4; charset=utf-8");
	ret = MHD_queue_response(conn, MHD_HTTP_OK, resp);
	MHD_destroy_response(resp);
	return ret;
}

/* --- libmicrohttpd ------------------------------------------------------------------------ */

/* Collects the body (beyond max_body: discarded, too_big). 1: more to come. */
static int provd_collect(struct provd *pd, struct provd_req *rq, const char *data,
			 size_t *size)
{
	if (*size == 0)
		return 0;
	if (!rq->too_big && rq->len + *size > pd->max_body) {
		rq->too_big = true;
		tn_mem_free(&rq->body);
		rq->len = 0;
	}
	if (!rq->too_big) {
		rq->body = tn_mem_realloc(rq->body, rq->len + *size);
		memcpy(rq->body + rq->len, data, *size);
		rq->len += *size;
	}
	*size = 0;
	return 1;
}

static enum MHD_Result provd_handler(void *cls, struct MHD_Connection *conn, const char *url,
				     const char *method, const char *version,
				     const char *upload_data, size_t *upload_data_size,
				     void **con_cls)
{
	struct provd *pd = cls;
	struct provd_req *rq = *con_cls;
	struct provd_caller caller = { NULL };
	enum MHD_Result ret;

	(void)version;
	if (rq == NULL) {
		*con_cls = tn_mem_calloc(1, sizeof(*rq));
		return MHD_YES;
	}
	if (provd_collect(pd, rq, upload_data, upload_data_size) > 0)
		return MHD_YES;
	if (pd->metrics && strcmp(url, "/metrics") == 0 && strcmp(method, "GET") == 0)
		return provd_metrics_reply(pd, conn);
	if (provd_auth(pd, conn, &caller) < 0)
		return provd_error(pd, conn, 401, "unauthorized",
				   "a valid bearer token is required", NULL);
	if (rq->too_big)
		ret = provd_error(pd, conn, 413, "too_large",
				  "the request body exceeds provd_max_body", NULL);
	else
		ret = provd_route(pd, conn, url, method, &caller, rq);
	tn_mem_free(&caller.tenant);
	return ret;
}

static void provd_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
			    enum MHD_RequestTerminationCode toe)
{
	struct provd_req *rq = *con_cls;

	(void)cls;
	(void)conn;
	(void)toe;
	if (rq == NULL)
		return;
	tn_mem_free(&rq->body);
	tn_mem_free(&rq);
	*con_cls = NULL;
}

/* URL path and query arguments: an escaped NUL (%00) stays escaped, so
 * that no key or argument is cut short; the core refuses the '%'. */
static size_t provd_unescape(void *cls, struct MHD_Connection *conn, char *s)
{
	(void)cls;
	(void)conn;
	if (strstr(s, "%00") != NULL)
		return strlen(s);
	return MHD_http_unescape(s);
}

static int provd_parse_listen(const char *listen, struct sockaddr_storage *ss)
{
	const char *colon = strrchr(listen, ':');
	char host[128], *end;
	long port;

	if (colon == NULL || (size_t)(colon - listen) >= sizeof(host))
		return -1;
	snprintf(host, sizeof(host), "%.*s", (int)(colon - listen), listen);
	port = strtol(colon + 1, &end, 10);
	if (*end != '\0' || port < 1 || port > 65535)
		return -1;
	memset(ss, 0, sizeof(*ss));
	if (host[0] == '[' && host[strlen(host) - 1] == ']') {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;

		host[strlen(host) - 1] = '\0';
		s6->sin6_family = AF_INET6;
		s6->sin6_port = htons((uint16_t)port);
		return inet_pton(AF_INET6, host + 1, &s6->sin6_addr) == 1 ? 0 : -1;
	}
	((struct sockaddr_in *)ss)->sin_family = AF_INET;
	((struct sockaddr_in *)ss)->sin_port = htons((uint16_t)port);
	return inet_pton(AF_INET, host, &((struct sockaddr_in *)ss)->sin_addr) == 1 ? 0 : -1;
}

static int provd_listen(struct provd *pd)
{
	const char *listen = tn_conf_str(pd->conf, "provd_listen");
	unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION |
			 MHD_USE_POLL;
	struct sockaddr_storage ss;

	if (provd_parse_listen(listen, &ss) < 0) {
		tn_error("provd_listen %s: expected a numeric address:port", listen);
		return -1;
	}
	if (ss.ss_family == AF_INET6)
		flags |= MHD_USE_IPv6;
	pd->mhd = MHD_start_daemon(flags, 0, NULL, NULL, provd_handler, pd,
				   MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
				   MHD_OPTION_NOTIFY_COMPLETED, provd_completed, pd,
				   MHD_OPTION_UNESCAPE_CALLBACK, provd_unescape, pd,
				   MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)60,
				   MHD_OPTION_CONNECTION_LIMIT,
				   (unsigned)tn_conf_int(pd->conf, "provd_threads_max"),
				   MHD_OPTION_END);
	if (pd->mhd == NULL) {
		tn_error("cannot listen on %s (address in use?)", listen);
		return -1;
	}
	return 0;
}

/* --- configuration and main ------------------------------------------------------------- */

/* The hookd parameters are not used here, but they are global lines of
 * the shared tenantmail.conf, which every program must accept. */
static const struct tn_conf_param *const provd_tables[] = {
	tn_lookup_params, tn_outbox_params, tn_hookd_params, tn_prov_params, tn_provd_params,
	NULL,
};

static int provd_configure(struct provd *pd, int argc, char **argv, bool *check_r)
{
	int ret = tn_daemon_configure("tn-provisiond", provd_tables, "provd_log_level", argc,
				      argv, &pd->conf, check_r);

	if (ret != 0)
		return ret;
	pd->max_body = (size_t)tn_conf_size(pd->conf, "provd_max_body");
	pd->metrics = tn_conf_bool(pd->conf, "provd_metrics");
	return 0;
}

/* The core, its lookup (for invalidation) and outbox. Reads the bind
 * password file: before the privilege drop. */
static int provd_core(struct provd *pd)
{
	const char *error = NULL;

	if ((pd->lookup = tn_lookup_create(pd->conf, TN_LOOKUP_NO_MEMORY_CACHE, &error)) != NULL) {
		pd->outbox = tn_outbox_create_conf(pd->conf);
		pd->prov = tn_prov_create(pd->conf, pd->lookup, pd->outbox, &error);
	}
	if (pd->prov == NULL) {
		tn_error("%s", error != NULL ? error : "cannot set up the provisioning core");
		return -1;
	}
	return 0;
}

/* Until SIGTERM or SIGINT; SIGHUP reloads the tokens file. */
static int provd_wait(struct provd *pd, const sigset_t *set)
{
	int sig = 0;

	while (sigwait(set, &sig) == 0 && sig == SIGHUP) {
		if (provd_tokens_load(pd) == 0)
			tn_info("SIGHUP: %zu token%s loaded", pd->ntokens,
				pd->ntokens == 1 ? "" : "s");
		else
			tn_warning("SIGHUP: the tokens file is unusable; the old tokens stay");
	}
	return sig;
}

static int provd_run(struct provd *pd)
{
	sigset_t set;

	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &set, NULL);	/* inherited by MHD's threads */
	if (provd_tokens_load(pd) < 0 || provd_core(pd) < 0)
		return EX_CONFIG;
	if (provd_listen(pd) < 0)
		return EX_UNAVAILABLE;
	if (tn_daemon_drop_privileges("provd_user", tn_conf_str(pd->conf, "provd_user")) < 0)
		return EX_NOPERM;
	tn_info("started: listening on %s, %zu token%s, /metrics %s",
		tn_conf_str(pd->conf, "provd_listen"), pd->ntokens, pd->ntokens == 1 ? "" : "s",
		pd->metrics ? "on" : "off");
	tn_info("stopping (signal %d)", provd_wait(pd, &set));
	MHD_stop_daemon(pd->mhd);
	pd->mhd = NULL;
	tn_info("stopped");
	return 0;
}

static void provd_teardown(struct provd *pd)
{
	if (pd->mhd != NULL)
		MHD_stop_daemon(pd->mhd);
	tn_prov_destroy(&pd->prov);
	tn_outbox_destroy(&pd->outbox);
	tn_lookup_destroy(&pd->lookup);
	provd_tokens_free(&pd->tokens, pd->ntokens);
	pthread_rwlock_destroy(&pd->tlock);
	pthread_mutex_destroy(&pd->mlock);
	tn_conf_destroy(&pd->conf);
}

int main(int argc, char **argv)
{
	struct provd pd = { .conf = NULL };
	bool check = false;
	int ret;

	signal(SIGPIPE, SIG_IGN);
	pthread_mutex_init(&pd.mlock, NULL);
	pthread_rwlock_init(&pd.tlock, NULL);
	if ((ret = provd_configure(&pd, argc, argv, &check)) == 0) {
		if (check)
			tn_conf_dump(pd.conf, stdout, TN_CONF_DUMP_CHANGED);
		else
			ret = provd_run(&pd);
	}
	provd_teardown(&pd);
	return ret;
}
