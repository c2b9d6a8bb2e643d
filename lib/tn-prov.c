/*++
 * NAME
 *	tn-prov 3
 * SUMMARY
 *	provisioning: resources, settings, results, get and list
 *	(see tn-prov.h; writes are in tn-prov-write.c)
 * DESCRIPTION
 *	The field tables below are the one description of each resource:
 *	JSON name, LDAP attribute, type and what may be done with it
 *	(tn-prov-int.h). docs/provisioning.md lists the same.
 *
 *	List: the keys of the matching entries are read with the entries
 *	(one search, scoped to a tenant when asked), sorted, and the page
 *	after the cursor's key returned. LDAP's own paging cookie is bound
 *	to one connection and cannot survive between HTTP requests; the
 *	schema has no ordering rule on the keys to page on the server.
 *--*/
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "tn-escape.h"
#include "tn-log.h"
#include "tn-lookup.h"
#include "tn-mem.h"
#include "tn-prov-input.h"
#include "tn-prov-int.h"

#define TN_MS(s) ((int64_t)(s) * 1000)

const struct tn_conf_param tn_prov_params[] = {
	{ "prov_ldap_uri", TN_CONF_LIST, "", 0, 0, NULL,
	  "LDAP servers provisioning writes to (empty: ldap_uri); writable providers only" },
	{ "prov_ldap_bind_dn", TN_CONF_STR, "", 0, 0, NULL,
	  "DN provisioning binds as, e.g. cn=provisioning,ou=services,<base>" },
	{ "prov_ldap_bind_password_file", TN_CONF_STR, "", 0, 0, NULL,
	  "file holding the provisioning bind password (first line)" },
	{ "prov_timeout", TN_CONF_TIME, "10s", 100, TN_MS(600), NULL,
	  "deadline of one provisioning operation (all its directory round trips)" },
	{ "prov_purge_grace", TN_CONF_TIME, "30d", 0, TN_MS(86400 * 3650), NULL,
	  "time a deleted tenant, domain or mailbox is kept before it may be purged" },
	{ "prov_password_rounds", TN_CONF_INT, "5000", 1000, 999999999, NULL,
	  "SHA512-CRYPT rounds of the password hashes provisioning makes" },
	{ "prov_list_max", TN_CONF_INT, "1000", 1, 100000, NULL,
	  "largest page a list may ask for" },
	{ "prov_alias_max_targets", TN_CONF_INT, "100", 1, 10000, NULL,
	  "targets one alias may have" },
	TN_CONF_END
};

/* --- resources ----------------------------------------------------------------- */

#define C TN_PF_CREATE
#define M TN_PF_MODIFY
#define E TN_PF_EVENT
#define O TN_PF_OUT
#define Z TN_PF_ZERO
#define S TN_PF_STATUSF
#define KEY (TN_PF_KEY | TN_PF_CREATE | TN_PF_OUT | TN_PF_REQUIRED)

#define TN_PROV_STATUS_FIELDS \
	{ "status", "tnStatus", TN_PF_STATUS, C | E | O | S, 0 }, \
	{ "status_reason", "tnStatusReason", TN_PF_TEXT, C | O | S, 1024 }, \
	{ "status_time", "tnStatusTime", TN_PF_TIME, O | S, 0 }

static const struct tn_prov_field tn_prov_tenant_fields[] = {
	{ "id", "tnTenantId", TN_PF_ID, KEY, 63 },
	{ "name", "o", TN_PF_TEXT, C | M | E | O, 256 },
	{ "description", "description", TN_PF_TEXT, C | M | E | O, 1024 },
	TN_PROV_STATUS_FIELDS,
	{ "plan", "tnPlan", TN_PF_TEXT, C | M | E | O, 64 },
	{ "storage_quota_bytes", "tnStorageQuotaBytes", TN_PF_COUNT, C | M | E | O | Z, 0 },
	{ "mailbox_quota_bytes", "tnMailboxQuotaBytes", TN_PF_COUNT, C | M | E | O | Z, 0 },
	{ "max_mailboxes", "tnMaxMailboxes", TN_PF_COUNT, C | M | E | O | Z, 0 },
	{ "max_message_bytes", "tnMaxMessageSize", TN_PF_COUNT, C | M | E | O | Z, 0 },
	{ "send_rate_per_hour", "tnSendRate", TN_PF_COUNT, C | M | E | O | Z, 0 },
	{ "tenant_send_rate_per_hour", "tnTenantSendRate", TN_PF_COUNT, C | M | E | O | Z, 0 },
	{ "overcommit", "tnOvercommit", TN_PF_BOOL, C | M | E | O | Z, 0 },
	{ "pool", "tnMailPool", TN_PF_NAME, C | M | E | O, 0 },
	/* the plan counters (tn-prov-write.c): read only */
	{ "mailbox_count", "tnMailboxCount", TN_PF_COUNT, O | Z, 0 },
	{ "quota_explicit_bytes", "tnQuotaExplicitBytes", TN_PF_COUNT, O | Z, 0 },
	{ "quota_default_count", "tnQuotaDefaultCount", TN_PF_COUNT, O | Z, 0 },
	{ "quota_unlimited_count", "tnQuotaUnlimitedCount", TN_PF_COUNT, O | Z, 0 },
	{ NULL, NULL, 0, 0, 0 }
};

static const struct tn_prov_field tn_prov_domain_fields[] = {
	{ "domain", "tnDomain", TN_PF_DOMAIN, KEY, 0 },
	{ "tenant", NULL, TN_PF_TENANT, C | O, 0 },
	{ "description", "description", TN_PF_TEXT, C | M | E | O, 1024 },
	TN_PROV_STATUS_FIELDS,
	{ NULL, NULL, 0, 0, 0 }
};

static const struct tn_prov_field tn_prov_mailbox_fields[] = {
	{ "address", "mail", TN_PF_ADDRESS, KEY, 0 },
	{ "tenant", NULL, TN_PF_TENANT, C | O, 0 },
	{ "name", "displayName", TN_PF_TEXT, C | M | E | O, 256 },
	{ "description", "description", TN_PF_TEXT, C | M | E | O, 1024 },
	TN_PROV_STATUS_FIELDS,
	{ "quota_bytes", "tnQuotaBytes", TN_PF_COUNT, C | M | E | O, 0 },
	{ "max_message_bytes", "tnMaxMessageSize", TN_PF_COUNT, C | M | E | O, 0 },
	{ "send_rate_per_hour", "tnSendRate", TN_PF_COUNT, C | M | E | O, 0 },
	{ "pool", "tnMailPool", TN_PF_NAME, C | M | E | O, 0 },
	{ "host", "tnMailHost", TN_PF_HOST, C | M | O, 0 },
	{ "password", "userPassword", TN_PF_PASSWORD, C | M, 0 },
	{ "password_hash", "userPassword", TN_PF_HASH, C | M, 0 },
	{ NULL, NULL, 0, 0, 0 }
};

static const struct tn_prov_field tn_prov_alias_fields[] = {
	{ "address", "mail", TN_PF_ADDRESS, KEY, 0 },
	{ "tenant", NULL, TN_PF_TENANT, C | O, 0 },
	{ "targets", "tnAliasTarget", TN_PF_TARGETS, C | M | E | O | TN_PF_REQUIRED, 0 },
	{ "description", "description", TN_PF_TEXT, C | M | E | O, 1024 },
	TN_PROV_STATUS_FIELDS,
	{ NULL, NULL, 0, 0, 0 }
};

#undef C
#undef M
#undef E
#undef O
#undef Z
#undef S
#undef KEY

static const struct tn_prov_kind_desc tn_prov_kinds[] = {
	{ TN_PROV_TENANT, "tenant", "tnTenant", "tnTenantId", "tenant", false,
	  tn_prov_tenant_fields },
	{ TN_PROV_DOMAIN, "domain", "tnMailDomain", "tnDomain", "domain", true,
	  tn_prov_domain_fields },
	{ TN_PROV_MAILBOX, "mailbox", "tnMailbox", "mail", "mailbox", true,
	  tn_prov_mailbox_fields },
	{ TN_PROV_ALIAS, "alias", "tnMailAlias", "mail", "alias", true, tn_prov_alias_fields },
};

const struct tn_prov_kind_desc *tn_prov_kind_desc(enum tn_prov_kind kind)
{
	return &tn_prov_kinds[kind];
}

const struct tn_prov_field *tn_prov_field_find(const struct tn_prov_kind_desc *kd,
					       const char *name)
{
	for (const struct tn_prov_field *f = kd->fields; f->name != NULL; f++) {
		if (strcmp(f->name, name) == 0)
			return f;
	}
	return NULL;
}

const char *tn_prov_kind_name(enum tn_prov_kind kind)
{
	return tn_prov_kinds[kind].name;
}

int tn_prov_kind_parse(const char *name, enum tn_prov_kind *kind_r)
{
	for (size_t i = 0; i < sizeof(tn_prov_kinds) / sizeof(tn_prov_kinds[0]); i++) {
		if (strcmp(tn_prov_kinds[i].name, name) == 0) {
			*kind_r = tn_prov_kinds[i].kind;
			return 0;
		}
	}
	return -1;
}

/* --- statuses and results ---------------------------------------------------------- */

static const struct {
	const char *name;
	int http;
} tn_prov_statuses[] = {
	[TN_PROV_OK] = { "ok", 200 },
	[TN_PROV_CREATED] = { "created", 201 },
	[TN_PROV_BAD_INPUT] = { "bad_input", 400 },
	[TN_PROV_FORBIDDEN] = { "forbidden", 403 },
	[TN_PROV_NOT_FOUND] = { "not_found", 404 },
	[TN_PROV_CONFLICT] = { "conflict", 409 },
	[TN_PROV_PRECONDITION] = { "precondition_failed", 412 },
	[TN_PROV_UNPROCESSABLE] = { "unprocessable", 422 },
	[TN_PROV_TEMPFAIL] = { "tempfail", 503 },
	[TN_PROV_EVENT_FAILED] = { "event_failed", 503 },
	[TN_PROV_EVENT_LOST] = { "event_lost", 500 },
	[TN_PROV_INTERNAL] = { "internal", 500 },
};

const char *tn_prov_status_name(enum tn_prov_status status)
{
	return tn_prov_statuses[status].name;
}

int tn_prov_status_http(enum tn_prov_status status)
{
	return tn_prov_statuses[status].http;
}

void tn_prov_result_clear(struct tn_prov_result *res)
{
	tn_mem_free(&res->field);
	tn_mem_free(&res->message);
	json_decref(res->object);
	json_decref(res->items);
	tn_mem_free(&res->next_cursor);
	tn_mem_free(&res->etag);
	tn_mem_free(&res->event_id);
	memset(res, 0, sizeof(*res));
}

static void tn_prov_json_str(json_t *o, const char *name, const char *value)
{
	if (value != NULL)
		json_object_set_new(o, name, json_string(value));
}

json_t *tn_prov_result_json(const struct tn_prov_result *res)
{
	json_t *o = json_pack("{s:s,s:i,s:b,s:b}", "status", tn_prov_status_name(res->status),
			      "http", tn_prov_status_http(res->status), "changed", res->changed,
			      "cache_stale", res->cache_stale);

	tn_prov_json_str(o, "field", res->field);
	tn_prov_json_str(o, "message", res->message);
	if (res->object != NULL)
		json_object_set(o, "object", res->object);
	if (res->items != NULL)
		json_object_set(o, "items", res->items);
	tn_prov_json_str(o, "next_cursor", res->next_cursor);
	tn_prov_json_str(o, "etag", res->etag);
	if (res->event_id != NULL) {
		tn_prov_json_str(o, "event_id", res->event_id);
		json_object_set_new(o, "event_sequence", json_integer((json_int_t)res->event_sequence));
	}
	return o;
}

enum tn_prov_status tn_prov_fail(struct tn_prov_op *op, enum tn_prov_status st,
				 const char *field, const char *fmt, ...)
{
	char buf[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	op->res->status = st;
	tn_mem_free(&op->res->field);
	tn_mem_free(&op->res->message);
	op->res->field = field != NULL ? tn_mem_strdup(field) : NULL;
	op->res->message = tn_mem_strdup(buf);
	return st;
}

/* --- create, destroy ----------------------------------------------------------------- */

static int tn_prov_check_conf(const struct tn_conf *conf, const char **error_r)
{
	if (*tn_conf_str(conf, "prov_ldap_bind_dn") == '\0') {
		*error_r = "prov_ldap_bind_dn must be set (the provisioning service account)";
		return -1;
	}
	if (*tn_conf_str(conf, "prov_ldap_bind_password_file") == '\0') {
		*error_r = "prov_ldap_bind_password_file must be set";
		return -1;
	}
	if (tn_conf_list(conf, "ldap_uri")[0] == NULL &&
	    tn_conf_list(conf, "prov_ldap_uri")[0] == NULL) {
		*error_r = "prov_ldap_uri: no LDAP server configured";
		return -1;
	}
	return 0;
}

struct tn_prov *tn_prov_create(const struct tn_conf *conf, struct tn_lookup *lookup,
			       struct tn_outbox *outbox, const char **error_r)
{
	struct tn_prov *p;
	char *pw = NULL;

	if (outbox == NULL) {
		*error_r = "provisioning needs an outbox (outbox_dir) for its events";
		return NULL;
	}
	if (tn_prov_check_conf(conf, error_r) < 0 ||
	    tn_lookup_read_secret(tn_conf_str(conf, "prov_ldap_bind_password_file"), &pw,
				  error_r) < 0)
		return NULL;
	p = tn_mem_calloc(1, sizeof(*p));
	p->dir = tn_lookup_dir_create(conf, tn_conf_list(conf, "prov_ldap_uri"),
				      tn_conf_str(conf, "prov_ldap_bind_dn"), pw);
	explicit_bzero(pw, strlen(pw));
	tn_mem_free(&pw);
	p->lookup = lookup;
	p->outbox = outbox;
	p->tenants_dn = tn_mem_strdup(tn_dir_tenants_dn(p->dir));
	p->timeout = tn_conf_time_ms(conf, "prov_timeout");
	p->op_timeout = tn_conf_time_ms(conf, "ldap_timeout");
	p->purge_grace_ms = tn_conf_time_ms(conf, "prov_purge_grace");
	p->rounds = (unsigned)tn_conf_int(conf, "prov_password_rounds");
	p->list_max = (unsigned)tn_conf_int(conf, "prov_list_max");
	p->alias_max = (unsigned)tn_conf_int(conf, "prov_alias_max_targets");
	for (size_t i = 0; i < TN_PROV_LOCKS; i++)
		pthread_mutex_init(&p->locks[i], NULL);
	for (size_t i = 0; i < TN_PROV_COMBINERS; i++) {
		pthread_mutex_init(&p->comb[i].mutex, NULL);
		pthread_cond_init(&p->comb[i].cond, NULL);
	}
	return p;
}

void tn_prov_destroy(struct tn_prov **pp)
{
	struct tn_prov *p = *pp;

	if (p == NULL)
		return;
	tn_dir_destroy(&p->dir);
	tn_mem_free(&p->tenants_dn);
	for (size_t i = 0; i < TN_PROV_LOCKS; i++)
		pthread_mutex_destroy(&p->locks[i]);
	for (size_t i = 0; i < TN_PROV_COMBINERS; i++) {
		pthread_mutex_destroy(&p->comb[i].mutex);
		pthread_cond_destroy(&p->comb[i].cond);
	}
	tn_mem_free(pp);
}

/* --- running an operation ---------------------------------------------------------------- */

static const char *const tn_prov_actor_kinds[] = {
	"admin", "tenant_admin", "billing", "system", NULL
};

static enum tn_prov_status tn_prov_check_ctx(struct tn_prov_op *op)
{
	const struct tn_prov_ctx *ctx = op->ctx;
	const char *why;
	bool known = false;

	for (size_t i = 0; ctx->actor_kind != NULL && tn_prov_actor_kinds[i] != NULL; i++)
		known = known || strcmp(ctx->actor_kind, tn_prov_actor_kinds[i]) == 0;
	if (!known)
		return tn_prov_fail(op, TN_PROV_BAD_INPUT, "actor",
				    "actor kind must be admin, tenant_admin, billing or system");
	if (ctx->actor_id == NULL ||
	    tn_prov_input_text(ctx->actor_id, strlen(ctx->actor_id), 256, &why) < 0)
		return tn_prov_fail(op, TN_PROV_BAD_INPUT, "actor", "actor id: %s",
				    ctx->actor_id == NULL ? "missing" : why);
	if (ctx->if_match != NULL &&
	    tn_prov_input_text(ctx->if_match, strlen(ctx->if_match), 128, &why) < 0)
		return tn_prov_fail(op, TN_PROV_BAD_INPUT, "if_match", "ETag: %s", why);
	return TN_PROV_OK;
}

/* Wall clock in milliseconds (tnStatusTime). */
static int64_t tn_prov_wall_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void tn_prov_op_init(struct tn_prov_op *op, struct tn_prov *p,
			    const struct tn_prov_ctx *ctx, enum tn_prov_kind kind,
			    struct tn_prov_result *res)
{
	memset(op, 0, sizeof(*op));
	memset(res, 0, sizeof(*res));
	op->p = p;
	op->ctx = ctx;
	op->kd = tn_prov_kind_desc(kind);
	op->res = res;
	op->deadline = ctx->deadline > 0 ? ctx->deadline : tn_time_now_ms() + p->timeout;
	op->now_ms = tn_prov_wall_ms();
}

/* Serialise this process's writes of one object (its events are
 * recorded in the order of its writes). Plan limits need no lock: the
 * tenant's counters are changed atomically by slapd (tn-prov-write.c). */
enum tn_prov_status tn_prov_lock_key(struct tn_prov_op *op, const char *key)
{
	unsigned h = 5381;
	struct timespec ts;

	if (op->lock != NULL)
		return TN_PROV_OK;
	for (const char *s = key; *s != '\0'; s++)
		h = h * 33 + (unsigned char)*s;
	tn_time_deadline_timespec(op->deadline, &ts);
	if (pthread_mutex_timedlock(&op->p->locks[h % TN_PROV_LOCKS], &ts) != 0)
		return tn_prov_fail(op, TN_PROV_TEMPFAIL, NULL,
				    "timed out waiting for another change of %s", key);
	op->lock = &op->p->locks[h % TN_PROV_LOCKS];
	return TN_PROV_OK;
}

static void tn_prov_op_release(struct tn_prov_op *op)
{
	if (op->lock != NULL)
		pthread_mutex_unlock(op->lock);
	op->lock = NULL;
	if (op->conn != NULL)
		tn_dir_conn_put(op->p->dir, op->conn, op->broken ? op->broken_why : NULL);
	op->conn = NULL;
	op->ld = NULL;
	tn_mem_free(&op->broken_why);
}

/* Run step on a connection; start again on another one after a
 * transport error that came before any write was sent. */
enum tn_prov_status tn_prov_run(struct tn_prov_op *op,
				enum tn_prov_status (*step)(struct tn_prov_op *op, void *arg),
				void *arg)
{
	enum tn_prov_status st = tn_prov_check_ctx(op);
	const char *error;

	for (unsigned attempt = 0; st == TN_PROV_OK; attempt++) {
		op->now_ms = tn_prov_wall_ms();
		op->conn = tn_dir_conn_get(op->p->dir, op->deadline, &error);
		if (op->conn == NULL)
			return tn_prov_fail(op, TN_PROV_TEMPFAIL, NULL,
					    "directory unreachable: %s", error);
		op->ld = tn_dir_conn_ldap(op->conn);
		op->broken = op->write_sent = false;
		st = step(op, arg);
		if (st == TN_PROV_TEMPFAIL && op->broken && !op->write_sent &&
		    attempt < 2 && tn_time_left_ms(op->deadline) > 0) {
			tn_prov_op_release(op);
			tn_prov_result_clear(op->res);
			st = TN_PROV_OK;
			continue;
		}
		tn_prov_op_release(op);
		break;
	}
	op->res->status = st;
	return st;
}

/* --- get ------------------------------------------------------------------------------------ */

enum tn_prov_status tn_prov_normalize_key(struct tn_prov_op *op, const char *key, char **out_r)
{
	const char *why = "missing";
	int ret = -1;

	if (key != NULL) {
		switch (op->kd->fields[0].type) {
		case TN_PF_ID:
			ret = tn_prov_input_tenant_id(key, out_r, &why);
			break;
		case TN_PF_DOMAIN:
			ret = tn_prov_input_domain(key, out_r, &why);
			break;
		default:
			ret = tn_prov_input_address(key, out_r, &why);
			break;
		}
	}
	if (ret < 0)
		return tn_prov_fail(op, TN_PROV_BAD_INPUT, op->kd->fields[0].name, "%s: %s",
				    op->kd->fields[0].name, why);
	return TN_PROV_OK;
}

void tn_prov_set_object(struct tn_prov_op *op, struct tn_prov_entry *ent)
{
	json_decref(op->res->object);
	op->res->object = json_incref(ent->obj);
	tn_mem_free(&op->res->etag);
	op->res->etag = ent->etag != NULL ? tn_mem_strdup(ent->etag) : NULL;
}

static enum tn_prov_status tn_prov_get_step(struct tn_prov_op *op, void *arg)
{
	struct tn_prov_entry *ent = NULL;
	enum tn_prov_status st = tn_prov_fetch(op, arg, &ent);

	if (st == TN_PROV_OK)
		tn_prov_set_object(op, ent);
	tn_prov_entry_free(&ent);
	return st;
}

enum tn_prov_status tn_prov_get(struct tn_prov *p, const struct tn_prov_ctx *ctx,
				enum tn_prov_kind kind, const char *key,
				struct tn_prov_result *res)
{
	struct tn_prov_op op;
	char *norm = NULL;
	enum tn_prov_status st;

	tn_prov_op_init(&op, p, ctx, kind, res);
	st = tn_prov_normalize_key(&op, key, &norm);
	if (st == TN_PROV_OK)
		st = tn_prov_run(&op, tn_prov_get_step, norm);
	tn_mem_free(&norm);
	return st;
}

/* --- list ----------------------------------------------------------------------------------- */

struct tn_prov_list {
	const struct tn_prov_query *q;
	char *tenant;		/* normalised tenant filter */
	char *domain;		/* normalised domain filter */
	char *after;		/* the cursor's key */
	char *fingerprint;
	unsigned limit;
};

static int tn_prov_entry_cmp(const void *a, const void *b)
{
	const struct tn_prov_entry *x = *(struct tn_prov_entry *const *)a;
	const struct tn_prov_entry *y = *(struct tn_prov_entry *const *)b;

	return strcmp(x->key, y->key);
}

static char *tn_prov_list_filter(struct tn_prov_op *op, const struct tn_prov_list *l)
{
	const char *status = l->q->status;

	if (status == NULL)
		return tn_mem_printf("(objectClass=%s)", op->kd->objectclass);
	if (strcmp(status, "active") == 0)	/* absent tnStatus means active */
		return tn_mem_printf("(&(objectClass=%s)(|(tnStatus=active)(!(tnStatus=*))))",
				     op->kd->objectclass);
	return tn_mem_printf("(&(objectClass=%s)(tnStatus=%s))", op->kd->objectclass, status);
}

static bool tn_prov_list_wanted(const struct tn_prov_list *l, const struct tn_prov_entry *ent)
{
	const char *at;

	if (l->after != NULL && strcmp(ent->key, l->after) <= 0)
		return false;
	if (l->domain == NULL)
		return true;
	at = strrchr(ent->key, '@');
	return at != NULL && strcmp(at + 1, l->domain) == 0;
}

/* Sort the entries of res, keep the page after the cursor. */
static enum tn_prov_status tn_prov_list_page(struct tn_prov_op *op, struct tn_prov_list *l,
					     LDAPMessage *res)
{
	size_t n = 0, cap = (size_t)ldap_count_entries(op->ld, res) + 1, shown = 0, i;
	struct tn_prov_entry **ents = tn_mem_calloc(cap, sizeof(*ents));
	enum tn_prov_status st = TN_PROV_OK;
	const char *why = NULL;

	for (LDAPMessage *e = ldap_first_entry(op->ld, res); e != NULL && st == TN_PROV_OK;
	     e = ldap_next_entry(op->ld, e)) {
		ents[n] = tn_prov_entry_from(op, op->kd, e, &why);
		if (ents[n] == NULL)
			st = tn_prov_fail(op, TN_PROV_INTERNAL, NULL,
					  "invalid %s in a directory entry", why);
		else if (tn_prov_list_wanted(l, ents[n]))
			n++;
		else
			tn_prov_entry_free(&ents[n]);
	}
	qsort(ents, n, sizeof(*ents), tn_prov_entry_cmp);
	op->res->items = json_array();
	for (i = 0; st == TN_PROV_OK && i < n && shown < l->limit; i++, shown++)
		json_array_append(op->res->items, ents[i]->obj);
	if (st == TN_PROV_OK && i < n && shown > 0)
		op->res->next_cursor = tn_prov_input_cursor_encode(ents[i - 1]->key,
								   l->fingerprint);
	for (i = 0; i < n; i++)
		tn_prov_entry_free(&ents[i]);
	tn_mem_free(&ents);
	return st;
}

static enum tn_prov_status tn_prov_list_step(struct tn_prov_op *op, void *arg)
{
	struct tn_prov_list *l = arg;
	char **attrs = tn_prov_entry_attrs(op->kd);
	char *filter = tn_prov_list_filter(op, l);
	char *base = l->tenant != NULL && op->kd->kind != TN_PROV_TENANT ?
		tn_prov_dn(op->p, NULL, "tnTenantId", l->tenant) : tn_mem_strdup(op->p->tenants_dn);
	int scope = l->tenant != NULL && op->kd->kind != TN_PROV_TENANT ?
		LDAP_SCOPE_ONELEVEL : LDAP_SCOPE_SUBTREE;
	enum tn_prov_status st = TN_PROV_OK;
	LDAPMessage *res = NULL;

	if (l->tenant != NULL && op->kd->kind == TN_PROV_TENANT) {
		tn_mem_free(&base);
		base = tn_prov_dn(op->p, NULL, "tnTenantId", l->tenant);
		scope = LDAP_SCOPE_BASE;
	}
	if (tn_prov_search(op, base, scope, filter, attrs, &res, &st) == 0)
		st = tn_prov_list_page(op, l, res);
	else if (st == TN_PROV_NOT_FOUND)	/* no such tenant: an empty list */
		st = TN_PROV_OK, op->res->items = json_array();
	if (res != NULL)
		ldap_msgfree(res);
	tn_mem_free(&attrs);
	tn_mem_free(&filter);
	tn_mem_free(&base);
	return st;
}

static enum tn_prov_status tn_prov_list_prepare(struct tn_prov_op *op, struct tn_prov_list *l)
{
	const struct tn_prov_query *q = l->q;
	const char *tenant = q->tenant, *why;
	enum tn_status status;

	if (op->ctx->tenant_scope != NULL) {
		if (tenant != NULL && strcasecmp(tenant, op->ctx->tenant_scope) != 0)
			return tn_prov_fail(op, TN_PROV_NOT_FOUND, "tenant", "no such tenant");
		tenant = op->ctx->tenant_scope;
	}
	if (tenant != NULL && tn_prov_input_tenant_id(tenant, &l->tenant, &why) < 0)
		return tn_prov_fail(op, TN_PROV_BAD_INPUT, "tenant", "tenant: %s", why);
	if (q->domain != NULL && (op->kd->kind == TN_PROV_TENANT ||
				  op->kd->kind == TN_PROV_DOMAIN))
		return tn_prov_fail(op, TN_PROV_BAD_INPUT, "domain",
				    "domain: filters mailboxes and aliases only");
	if (q->domain != NULL && tn_prov_input_domain(q->domain, &l->domain, &why) < 0)
		return tn_prov_fail(op, TN_PROV_BAD_INPUT, "domain", "domain: %s", why);
	if (q->status != NULL && tn_status_parse(q->status, &status) < 0)
		return tn_prov_fail(op, TN_PROV_BAD_INPUT, "status",
				    "status: must be active, suspended or deleted");
	if (q->limit > op->p->list_max)
		return tn_prov_fail(op, TN_PROV_BAD_INPUT, "limit", "limit: at most %u",
				    op->p->list_max);
	l->limit = q->limit > 0 ? q->limit : 100;
	l->fingerprint = tn_mem_printf("%s|%s|%s|%s", op->kd->name,
				       l->tenant != NULL ? l->tenant : "",
				       l->domain != NULL ? l->domain : "",
				       q->status != NULL ? q->status : "");
	if (q->cursor != NULL &&
	    tn_prov_input_cursor_decode(q->cursor, l->fingerprint, &l->after, &why) < 0)
		return tn_prov_fail(op, TN_PROV_BAD_INPUT, "cursor", "cursor: %s", why);
	return TN_PROV_OK;
}

enum tn_prov_status tn_prov_list(struct tn_prov *p, const struct tn_prov_ctx *ctx,
				 enum tn_prov_kind kind, const struct tn_prov_query *q,
				 struct tn_prov_result *res)
{
	struct tn_prov_list l = { .q = q };
	struct tn_prov_op op;
	enum tn_prov_status st;

	tn_prov_op_init(&op, p, ctx, kind, res);
	st = tn_prov_list_prepare(&op, &l);
	if (st == TN_PROV_OK)
		st = tn_prov_run(&op, tn_prov_list_step, &l);
	tn_mem_free(&l.tenant);
	tn_mem_free(&l.domain);
	tn_mem_free(&l.after);
	tn_mem_free(&l.fingerprint);
	return st;
}

/* exported for tn-prov-write.c */
void tn_prov_op_begin(struct tn_prov_op *op, struct tn_prov *p, const struct tn_prov_ctx *ctx,
		      enum tn_prov_kind kind, struct tn_prov_result *res)
{
	tn_prov_op_init(op, p, ctx, kind, res);
}
