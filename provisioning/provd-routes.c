/*++
 * NAME
 *	provd-routes 3
 * SUMMARY
 *	tn-provisiond: the /v1 routes over the provisioning core
 * DESCRIPTION
 *	/v1/<coll>			GET list, POST create
 *	/v1/<coll>/<key>		GET, PATCH (If-Match), DELETE (soft)
 *	/v1/<coll>/<key>/<action>	POST suspend | resume | restore | purge
 *	/v1/tenants/<id>/recount	POST: plan counters from a count
 *	/v1/batch/<coll>		POST {"items": [create bodies]}: 200
 *					{"results": [one per item]}
 *	<coll>: tenants, domains, mailboxes, aliases. Each request is one
 *	call of the core (resume and restore read the object first); the
 *	answer is a struct provd_reply.
 *
 *	resume and restore both make an object active (the core's
 *	tn_prov_set_status(TN_STATUS_ACTIVE) does either, by the object's
 *	status). The routes keep them apart: resume refuses a deleted
 *	object, restore anything but a deleted one (422, field "status").
 *	The status read decides only together with its ETag: the write is
 *	conditional on it (the core's If-Match), and re-read up to three
 *	times when someone else changed the object in between.
 *--*/
#include "tn-build.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "provd.h"
#include "tn-log.h"
#include "tn-mem.h"

#define PROVD_STATUS_TRIES 3

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

#define PROVD_NCOLL (sizeof(provd_collections) / sizeof(provd_collections[0]))

/* What one request is about. */
struct provd_call {
	struct provd *pd;
	struct MHD_Connection *conn;
	const char *method;
	const struct tn_prov_ctx *ctx;
	enum tn_prov_kind kind;
	const char *key;
	const struct provd_req *rq;
	struct provd_reply *rp;
};

/* --- replies ----------------------------------------------------------------------------- */

void provd_reply_json(struct provd_reply *rp, unsigned status, json_t *body)
{
	char *text = body != NULL ? json_dumps(body, JSON_COMPACT) : NULL;

	json_decref(body);
	rp->status = status;
	tn_mem_free(&rp->body);
	if (text != NULL) {
		rp->body = tn_mem_printf("%s\n", text);
		free(text);
	}
}

void provd_reply_error(struct provd_reply *rp, unsigned status, const char *code,
		       const char *message, const char *field)
{
	json_t *err = json_pack("{s:i,s:s,s:s}", "status", (int)status, "code", code,
				"message", message != NULL ? message : code);

	if (field != NULL)
		json_object_set_new(err, "field", json_string(field));
	provd_reply_json(rp, status, json_pack("{s:o}", "error", err));
}

void provd_reply_clear(struct provd_reply *rp)
{
	tn_mem_free(&rp->body);
	tn_mem_free(&rp->etag);
	tn_mem_free(&rp->location);
	memset(rp, 0, sizeof(*rp));
}

/* 405 with the methods the route has ("GET, POST") */
static void provd_not_allowed(struct provd_reply *rp, const char *allow)
{
	char msg[80];

	snprintf(msg, sizeof(msg), "method not allowed here; allowed: %s", allow);
	provd_reply_error(rp, 405, "method_not_allowed", msg, NULL);
	rp->allow = allow;
}

static char *provd_location(enum tn_prov_kind kind, const json_t *object)
{
	for (size_t i = 0; i < PROVD_NCOLL; i++) {
		const char *key = json_string_value(json_object_get(object,
								    provd_collections[i].key_field));

		if (provd_collections[i].kind == kind && key != NULL)
			return tn_mem_printf("/v1/%s/%s", provd_collections[i].path, key);
	}
	return NULL;
}

/* The core's result as the reply; no_content: 204 on success. */
static void provd_result(struct provd_call *c, const struct tn_prov_result *res,
			 bool no_content)
{
	unsigned status = (unsigned)tn_prov_status_http(res->status);
	json_t *body;

	if (status >= 400) {
		provd_reply_error(c->rp, status, tn_prov_status_name(res->status), res->message,
				  res->field);
		return;
	}
	if (res->cache_stale)
		tn_warning("written, but the cache invalidation failed (event %s)",
			   res->event_id != NULL ? res->event_id : "-");
	if (no_content) {
		provd_reply_json(c->rp, 204, NULL);
		return;
	}
	if (res->items != NULL) {
		body = json_pack("{s:O}", "items", res->items);
		if (res->next_cursor != NULL)
			json_object_set_new(body, "next_cursor", json_string(res->next_cursor));
		provd_reply_json(c->rp, status, body);
		return;
	}
	if (status == 201)
		c->rp->location = provd_location(c->kind, res->object);
	if (res->etag != NULL)
		c->rp->etag = tn_mem_strdup(res->etag);
	provd_reply_json(c->rp, status, res->object != NULL ? json_incref(res->object) : NULL);
}

/* --- requests ---------------------------------------------------------------------------- */

/* The JSON object of the body; NULL with a 400 in the reply. An empty
 * body is an empty object when empty_ok. */
static json_t *provd_body(struct provd_call *c, bool empty_ok)
{
	const struct provd_req *rq = c->rq;
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
		provd_reply_error(c->rp, 400, "bad_input", msg, NULL);
		return NULL;
	}
	if (!json_is_object(in)) {
		json_decref(in);
		provd_reply_error(c->rp, 400, "bad_input", "the body must be a JSON object", NULL);
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

static void provd_list(struct provd_call *c)
{
	struct tn_prov_result res = { 0 };
	struct tn_prov_query q = { 0 };

	if (provd_limit(c->conn, &q.limit) < 0) {
		provd_reply_error(c->rp, 400, "bad_input", "limit: expected a number", "limit");
		return;
	}
	q.cursor = MHD_lookup_connection_value(c->conn, MHD_GET_ARGUMENT_KIND, "cursor");
	q.tenant = MHD_lookup_connection_value(c->conn, MHD_GET_ARGUMENT_KIND, "tenant");
	q.domain = MHD_lookup_connection_value(c->conn, MHD_GET_ARGUMENT_KIND, "domain");
	q.status = MHD_lookup_connection_value(c->conn, MHD_GET_ARGUMENT_KIND, "status");
	tn_prov_list(c->pd->prov, c->ctx, c->kind, &q, &res);
	provd_result(c, &res, false);
	tn_prov_result_clear(&res);
}

static void provd_collection(struct provd_call *c)
{
	struct tn_prov_result res = { 0 };
	json_t *in;

	if (strcmp(c->method, "GET") == 0) {
		provd_list(c);
		return;
	}
	if (strcmp(c->method, "POST") != 0) {
		provd_not_allowed(c->rp, "GET, POST");
		return;
	}
	if ((in = provd_body(c, false)) == NULL)
		return;
	tn_prov_create_object(c->pd->prov, c->ctx, c->kind, in, &res);
	provd_result(c, &res, false);
	json_decref(in);
	tn_prov_result_clear(&res);
}

/* POST /v1/batch/<coll> {"items": [...]}: 200 {"results": [...]}, one
 * per item in order: {"status": 201, "object", "etag"} or {"status",
 * "error": {...}} as a single create would answer. */
static void provd_batch(struct provd_call *c)
{
	struct tn_prov_result *res;
	json_t *in = provd_body(c, false), *items, *results, **v;
	const char *name, *bad = NULL;
	enum tn_prov_status st;
	bool written = false;
	size_t n;
	json_t *m;

	if (in == NULL)
		return;
	items = json_object_get(in, "items");
	json_object_foreach(in, name, m) {
		if (strcmp(name, "items") != 0)
			bad = name;
	}
	n = json_array_size(items);
	if (bad != NULL) {
		provd_reply_error(c->rp, 400, "bad_input", "unknown field of a batch (only "
				  "\"items\" is allowed)", bad);
	} else if (!json_is_array(items) || n == 0 || n > c->pd->batch_max) {
		char msg[120];

		snprintf(msg, sizeof(msg), "items: must be an array of 1 to %zu create bodies",
			 c->pd->batch_max);
		provd_reply_error(c->rp, 400, "bad_input", msg, "items");
	} else {
		res = tn_mem_calloc(n, sizeof(*res));
		v = tn_mem_calloc(n, sizeof(*v));
		for (size_t i = 0; i < n; i++)
			v[i] = json_array_get(items, i);
		st = tn_prov_create_batch(c->pd->prov, c->ctx, c->kind, v, n, res);
		for (size_t i = 0; i < n; i++)
			written = written || res[i].changed;
		if (st != TN_PROV_OK && !written) {	/* nothing written: say so once */
			const char *why = NULL;

			for (size_t i = 0; i < n && why == NULL; i++) {
				if (res[i].status == st)
					why = res[i].message;
			}
			if (why != NULL && strncmp(why, "not attempted: ", 15) == 0)
				why += 15;	/* the request's reason, not an item's */
			provd_reply_error(c->rp, (unsigned)tn_prov_status_http(st),
					  tn_prov_status_name(st), why, NULL);
			for (size_t i = 0; i < n; i++)
				tn_prov_result_clear(&res[i]);
			tn_mem_free(&res);
			tn_mem_free(&v);
			json_decref(in);
			return;
		}
		results = json_array();
		for (size_t i = 0; i < n; i++) {
			unsigned status = (unsigned)tn_prov_status_http(res[i].status);
			json_t *r;

			if (status >= 400) {
				r = json_pack("{s:i,s:s,s:s}", "status", (int)status, "code",
					      tn_prov_status_name(res[i].status), "message",
					      res[i].message != NULL ? res[i].message :
					      tn_prov_status_name(res[i].status));
				if (res[i].field != NULL)
					json_object_set_new(r, "field", json_string(res[i].field));
				r = json_pack("{s:i,s:o}", "status", (int)status, "error", r);
			} else {
				r = json_pack("{s:i,s:O}", "status", (int)status, "object",
					      res[i].object != NULL ? res[i].object : json_null());
				if (res[i].etag != NULL)
					json_object_set_new(r, "etag", json_sprintf("\"%s\"",
										    res[i].etag));
			}
			json_array_append_new(results, r);
			tn_prov_result_clear(&res[i]);
		}
		provd_reply_json(c->rp, 200, json_pack("{s:o}", "results", results));
		tn_mem_free(&res);
		tn_mem_free(&v);
	}
	json_decref(in);
}

static void provd_item(struct provd_call *c)
{
	struct tn_prov_result res = { 0 };
	json_t *in = NULL;

	if (strcmp(c->method, "GET") == 0) {
		tn_prov_get(c->pd->prov, c->ctx, c->kind, c->key, &res);
	} else if (strcmp(c->method, "PATCH") == 0) {
		if ((in = provd_body(c, false)) == NULL)
			return;
		tn_prov_modify(c->pd->prov, c->ctx, c->kind, c->key, in, &res);
	} else if (strcmp(c->method, "DELETE") == 0) {
		tn_prov_set_status(c->pd->prov, c->ctx, c->kind, c->key, TN_STATUS_DELETED, NULL,
				   &res);
	} else {
		provd_not_allowed(c->rp, "GET, PATCH, DELETE");
		return;
	}
	provd_result(c, &res, strcmp(c->method, "DELETE") == 0);
	json_decref(in);
	tn_prov_result_clear(&res);
}

/* --- actions ----------------------------------------------------------------------------- */

/* The body of a status action: {} or {"reason": "..."|null}. NULL with a
 * 400 in the reply; *reason_r borrowed from the returned object. */
static json_t *provd_reason_body(struct provd_call *c, const char **reason_r)
{
	json_t *in = provd_body(c, true), *reason;
	const char *bad = NULL;

	if (in == NULL)
		return NULL;
	reason = json_object_get(in, "reason");
	if (json_object_size(in) > (reason != NULL ? 1u : 0u))
		bad = "unknown field (only \"reason\" is allowed)";
	else if (reason != NULL && !json_is_string(reason) && !json_is_null(reason))
		bad = "reason: expected a string";
	if (bad != NULL) {
		provd_reply_error(c->rp, 400, "bad_input", bad, "reason");
		json_decref(in);
		return NULL;
	}
	*reason_r = json_string_value(reason);
	return in;
}

static void provd_suspend(struct provd_call *c)
{
	struct tn_prov_result res = { 0 };
	const char *reason = NULL;
	json_t *in = provd_reason_body(c, &reason);

	if (in == NULL)
		return;
	tn_prov_set_status(c->pd->prov, c->ctx, c->kind, c->key, TN_STATUS_SUSPENDED, reason,
			   &res);
	provd_result(c, &res, false);
	json_decref(in);
	tn_prov_result_clear(&res);
}

/* 422 "status" unless the object read is deleted (restore) or is not
 * (resume). 0: it may go on. */
static int provd_activate_check(struct provd_call *c, bool want_deleted,
				struct tn_prov_result *res)
{
	const char *status = json_string_value(json_object_get(res->object, "status"));
	bool deleted = status != NULL && strcmp(status, "deleted") == 0;
	char *message;

	if (deleted == want_deleted)
		return 0;
	message = tn_mem_printf(want_deleted ? "only a deleted %s can be restored (it is %s)" :
				"the %s is %s: restore it instead of resuming",
				tn_prov_kind_name(c->kind), status != NULL ? status : "active");
	tn_prov_result_clear(res);
	res->status = TN_PROV_UNPROCESSABLE;
	res->field = tn_mem_strdup("status");
	res->message = message;
	return -1;
}

/* One read, then the status write conditional on the ETag read (or on
 * the client's If-Match). 1: the object changed in between, try again;
 * 0: res holds the answer. */
static int provd_activate_once(struct provd_call *c, bool want_deleted, const char *reason,
			       struct tn_prov_result *res)
{
	struct tn_prov_ctx ctx = *c->ctx;
	char *etag;

	if (tn_prov_get(c->pd->prov, c->ctx, c->kind, c->key, res) != TN_PROV_OK ||
	    provd_activate_check(c, want_deleted, res) < 0)
		return 0;
	etag = res->etag != NULL ? tn_mem_strdup(res->etag) : NULL;
	if (ctx.if_match == NULL)
		ctx.if_match = etag;
	tn_prov_result_clear(res);
	tn_prov_set_status(c->pd->prov, &ctx, c->kind, c->key, TN_STATUS_ACTIVE, reason, res);
	tn_mem_free(&etag);
	return c->ctx->if_match == NULL && res->status == TN_PROV_PRECONDITION ? 1 : 0;
}

/* resume (want_deleted false) or restore (true) */
static void provd_activate(struct provd_call *c, bool want_deleted)
{
	struct tn_prov_result res = { 0 };
	const char *reason = NULL;
	json_t *in = provd_reason_body(c, &reason);

	if (in == NULL)
		return;
	for (int i = 0; i < PROVD_STATUS_TRIES; i++) {
		if (i > 0)
			tn_prov_result_clear(&res);
		if (provd_activate_once(c, want_deleted, reason, &res) == 0)
			break;
	}
	provd_result(c, &res, false);
	json_decref(in);
	tn_prov_result_clear(&res);
}

static void provd_resume(struct provd_call *c)
{
	provd_activate(c, false);
}

static void provd_restore(struct provd_call *c)
{
	provd_activate(c, true);
}

/* body: empty or {} */
static void provd_purge(struct provd_call *c)
{
	struct tn_prov_result res = { 0 };
	json_t *in = provd_body(c, true);

	if (in == NULL)
		return;
	if (json_object_size(in) != 0) {
		provd_reply_error(c->rp, 400, "bad_input", "purge takes no fields (body {})",
				  json_object_iter_key(json_object_iter(in)));
	} else {
		tn_prov_purge(c->pd->prov, c->ctx, c->kind, c->key, &res);
		provd_result(c, &res, true);
	}
	json_decref(in);
	tn_prov_result_clear(&res);
}

/* tenants only; body: empty or {} */
static void provd_recount(struct provd_call *c)
{
	struct tn_prov_result res = { 0 };
	json_t *in;

	if (c->kind != TN_PROV_TENANT) {
		provd_reply_error(c->rp, 404, "not_found", "no such route", NULL);
		return;
	}
	if ((in = provd_body(c, true)) == NULL)
		return;
	if (json_object_size(in) != 0) {
		provd_reply_error(c->rp, 400, "bad_input", "recount takes no fields (body {})",
				  json_object_iter_key(json_object_iter(in)));
	} else {
		tn_prov_recount(c->pd->prov, c->ctx, c->key, &res);
		provd_result(c, &res, false);
	}
	json_decref(in);
	tn_prov_result_clear(&res);
}

static const struct {
	const char *name;
	void (*run)(struct provd_call *c);
} provd_actions[] = {
	{ "suspend", provd_suspend },
	{ "resume", provd_resume },
	{ "restore", provd_restore },
	{ "purge", provd_purge },
	{ "recount", provd_recount },
};

static void provd_action(struct provd_call *c, const char *action)
{
	for (size_t i = 0; i < sizeof(provd_actions) / sizeof(provd_actions[0]); i++) {
		if (strcmp(action, provd_actions[i].name) != 0)
			continue;
		if (strcmp(c->method, "POST") != 0)
			provd_not_allowed(c->rp, "POST");
		else
			provd_actions[i].run(c);
		return;
	}
	provd_reply_error(c->rp, 404, "not_found", "no such route", NULL);
}

/* --- routing ----------------------------------------------------------------------------- */

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

const char *provd_role_name(enum provd_role role)
{
	switch (role) {
	case PROVD_ADMIN:
		return "admin";
	case PROVD_BILLING:
		return "billing";
	case PROVD_TENANT:
		break;
	}
	return "tenant";
}

/* Writes at info, reads at debug; the key is untrusted (sanitised). */
static void provd_log_request(const char *method, const char *coll, const char *key,
			      const char *action, const struct provd_caller *who)
{
	char safe[TN_LOG_VALUE_MAX], safe_action[64];

	tn_log_sanitize(safe, sizeof(safe), key != NULL ? key : "", key != NULL ? strlen(key) : 0);
	tn_log_sanitize(safe_action, sizeof(safe_action), action != NULL ? action : "",
			action != NULL ? strlen(action) : 0);
	tn_log(strcmp(method, "GET") == 0 ? TN_LOG_DEBUG : TN_LOG_INFO, NULL,
	       "%s /v1/%s%s%s%s%s by %s%s%s", method, coll != NULL ? coll : "",
	       key != NULL ? "/" : "", safe,
	       action != NULL ? "/" : "", safe_action, provd_role_name(who->role),
	       who->name != NULL ? ":" : "", who->name != NULL ? who->name : "");
}

/* The actor of the events, from the caller's role. */
static void provd_ctx_of(const struct provd_caller *who, struct tn_prov_ctx *ctx)
{
	switch (who->role) {
	case PROVD_ADMIN:
		ctx->actor_kind = "admin";
		ctx->actor_id = "tn-provisiond";
		break;
	case PROVD_BILLING:
		ctx->actor_kind = "billing";
		ctx->actor_id = who->name != NULL ? who->name : "billing";
		break;
	case PROVD_TENANT:
		ctx->actor_kind = "tenant_admin";
		ctx->actor_id = who->name;
		ctx->tenant_scope = who->name;
		break;
	}
}

void provd_route(struct provd *pd, struct MHD_Connection *conn, const char *url,
		 const char *method, const struct provd_caller *who,
		 const struct provd_req *rq, struct provd_reply *rp)
{
	char *path = tn_mem_strdup(url), *save = NULL;
	char *v1 = strtok_r(path, "/", &save), *coll = strtok_r(NULL, "/", &save);
	char *key = strtok_r(NULL, "/", &save), *action = strtok_r(NULL, "/", &save);
	struct tn_prov_ctx ctx = { 0 };
	struct provd_call c = { pd, conn, method, &ctx, TN_PROV_TENANT, key, rq, rp };
	char *if_match;
	size_t i;

	bool batch = coll != NULL && strcmp(coll, "batch") == 0 && key != NULL && action == NULL;

	if (batch) {		/* /v1/batch/<coll> */
		coll = key;
		key = NULL;
	}
	for (i = 0; coll != NULL && i < PROVD_NCOLL; i++) {
		if (strcmp(coll, provd_collections[i].path) == 0)
			break;
	}
	if (v1 == NULL || strcmp(v1, "v1") != 0 || coll == NULL || i == PROVD_NCOLL ||
	    strtok_r(NULL, "/", &save) != NULL) {
		tn_mem_free(&path);
		provd_reply_error(rp, 404, "not_found", "no such route", NULL);
		return;
	}
	c.kind = provd_collections[i].kind;
	provd_ctx_of(who, &ctx);
	ctx.deadline = tn_time_now_ms() + pd->prov_timeout;	/* all calls of the request */
	if_match = provd_if_match(conn);
	ctx.if_match = if_match;
	if (batch)
		provd_log_request(method, "batch", coll, NULL, who);	/* /v1/batch/<coll> */
	else
		provd_log_request(method, coll, key, action, who);
	if (batch && strcmp(method, "POST") != 0)
		provd_not_allowed(rp, "POST");
	else if (batch)
		provd_batch(&c);
	else if (key == NULL)
		provd_collection(&c);
	else if (action == NULL)
		provd_item(&c);
	else
		provd_action(&c, action);
	tn_mem_free(&if_match);
	tn_mem_free(&path);
}
