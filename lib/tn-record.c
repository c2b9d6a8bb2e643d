/*++
 * NAME
 *	tn-record 3
 * SUMMARY
 *	directory objects, cache encoding, account composition (see tn-record.h)
 *--*/
#include <stddef.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>

#include "tn-mem.h"
#include "tn-record.h"

enum tn_field_type { TN_F_STR, TN_F_INT, TN_F_BOOL };

struct tn_obj_field {
	const char *name;
	enum tn_field_type type;
	size_t offset;
};

/* The cache encoding: one JSON object, these members, all optional
 * except "kind" and "key". Unknown members are ignored (forward
 * compatible), wrong types make the entry malformed. */
static const struct tn_obj_field tn_obj_fields[] = {
	{ "tenant", TN_F_STR, offsetof(struct tn_obj, tenant) },
	{ "reason", TN_F_STR, offsetof(struct tn_obj, reason) },
	{ "storage_quota", TN_F_INT, offsetof(struct tn_obj, storage_quota) },
	{ "mailbox_quota", TN_F_INT, offsetof(struct tn_obj, mailbox_quota) },
	{ "max_mailboxes", TN_F_INT, offsetof(struct tn_obj, max_mailboxes) },
	{ "max_msg_size", TN_F_INT, offsetof(struct tn_obj, max_msg_size) },
	{ "send_rate", TN_F_INT, offsetof(struct tn_obj, send_rate) },
	{ "tenant_send_rate", TN_F_INT, offsetof(struct tn_obj, tenant_send_rate) },
	{ "overcommit", TN_F_BOOL, offsetof(struct tn_obj, overcommit) },
	{ "plan", TN_F_STR, offsetof(struct tn_obj, plan) },
	{ "host", TN_F_STR, offsetof(struct tn_obj, host) },
	{ "pool", TN_F_STR, offsetof(struct tn_obj, pool) },
	{ "password", TN_F_STR, offsetof(struct tn_obj, password) },
	{ "name", TN_F_STR, offsetof(struct tn_obj, name) },
};
#define TN_N_FIELDS (sizeof(tn_obj_fields) / sizeof(tn_obj_fields[0]))

static const char *const tn_kind_names[] = { "tenant", "domain", "mailbox", "alias" };
static const char *const tn_status_names[] = { "active", "suspended", "deleted" };
static const char *const tn_level_names[] = { "default", "tenant", "domain", "object" };
static const char *const tn_account_kind_names[] = { "mailbox", "alias", "domain", "tenant" };
static const char *const tn_layer_names[] = { "memory", "redis", "ldap" };

const char *tn_obj_kind_name(enum tn_obj_kind kind) { return tn_kind_names[kind]; }
const char *tn_status_name(enum tn_status status) { return tn_status_names[status]; }
const char *tn_level_name(enum tn_level level) { return tn_level_names[level]; }
const char *tn_account_kind_name(enum tn_account_kind kind) { return tn_account_kind_names[kind]; }
const char *tn_layer_name(enum tn_layer layer) { return tn_layer_names[layer]; }

int tn_status_parse(const char *name, enum tn_status *status_r)
{
	for (size_t i = 0; i < 3; i++) {
		if (strcasecmp(name, tn_status_names[i]) == 0) {
			*status_r = (enum tn_status)i;
			return 0;
		}
	}
	return -1;
}

struct tn_obj *tn_obj_create(enum tn_obj_kind kind, const char *key)
{
	struct tn_obj *obj = tn_mem_calloc(1, sizeof(*obj));

	obj->refcount = 1;
	obj->kind = kind;
	obj->key = tn_mem_strdup(key);
	obj->status = TN_STATUS_ACTIVE;
	obj->storage_quota = obj->mailbox_quota = obj->max_mailboxes =
		obj->max_msg_size = obj->send_rate = obj->tenant_send_rate =
		TN_LIMIT_INHERIT;
	obj->targets = tn_mem_calloc(1, sizeof(char *));
	return obj;
}

struct tn_obj *tn_obj_ref(struct tn_obj *obj)
{
	__atomic_add_fetch(&obj->refcount, 1, __ATOMIC_RELAXED);
	return obj;
}

static void tn_obj_free(struct tn_obj *obj)
{
	for (size_t i = 0; i < TN_N_FIELDS; i++) {
		if (tn_obj_fields[i].type == TN_F_STR)
			tn_mem_free((char **)((char *)obj + tn_obj_fields[i].offset));
	}
	for (size_t i = 0; i < obj->ntargets; i++)
		tn_mem_free(&obj->targets[i]);
	tn_mem_free(&obj->targets);
	tn_mem_free(&obj->key);
	tn_mem_free(&obj);
}

void tn_obj_unref(struct tn_obj **objp)
{
	struct tn_obj *obj = *objp;

	*objp = NULL;
	if (obj != NULL && __atomic_sub_fetch(&obj->refcount, 1, __ATOMIC_ACQ_REL) == 0)
		tn_obj_free(obj);
}

void tn_obj_add_target(struct tn_obj *obj, const char *target)
{
	obj->targets = tn_mem_realloc(obj->targets, (obj->ntargets + 2) * sizeof(char *));
	obj->targets[obj->ntargets++] = tn_mem_strdup(target);
	obj->targets[obj->ntargets] = NULL;
}

static void tn_obj_field_encode(json_t *root, const struct tn_obj *obj,
				const struct tn_obj_field *f)
{
	const char *p = (const char *)obj + f->offset;

	switch (f->type) {
	case TN_F_STR:
		if (*(char *const *)p != NULL)
			json_object_set_new(root, f->name, json_string(*(char *const *)p));
		break;
	case TN_F_INT:
		if (*(const int64_t *)p != TN_LIMIT_INHERIT)
			json_object_set_new(root, f->name, json_integer(*(const int64_t *)p));
		break;
	case TN_F_BOOL:
		if (*(const bool *)p)
			json_object_set_new(root, f->name, json_true());
		break;
	}
}

char *tn_obj_encode(const struct tn_obj *obj)
{
	json_t *root = json_object(), *targets;
	char *text;

	json_object_set_new(root, "kind", json_string(tn_kind_names[obj->kind]));
	json_object_set_new(root, "key", json_string(obj->key));
	json_object_set_new(root, "status", json_string(tn_status_names[obj->status]));
	for (size_t i = 0; i < TN_N_FIELDS; i++)
		tn_obj_field_encode(root, obj, &tn_obj_fields[i]);
	if (obj->kind == TN_OBJ_ALIAS) {
		targets = json_array();
		for (size_t i = 0; i < obj->ntargets; i++)
			json_array_append_new(targets, json_string(obj->targets[i]));
		json_object_set_new(root, "targets", targets);
	}
	text = json_dumps(root, JSON_COMPACT);
	json_decref(root);
	return text;
}

static int tn_obj_field_decode(json_t *root, struct tn_obj *obj,
			       const struct tn_obj_field *f)
{
	json_t *v = json_object_get(root, f->name);
	char *p = (char *)obj + f->offset;

	if (v == NULL)
		return 0;
	switch (f->type) {
	case TN_F_STR:
		if (!json_is_string(v))
			return -1;
		*(char **)p = tn_mem_strdup(json_string_value(v));
		return 0;
	case TN_F_INT:
		if (!json_is_integer(v) || json_integer_value(v) < 0)
			return -1;
		*(int64_t *)p = json_integer_value(v);
		return 0;
	case TN_F_BOOL:
		if (!json_is_boolean(v))
			return -1;
		*(bool *)p = json_is_true(v);
		return 0;
	}
	return -1;
}

static int tn_obj_kind_parse(const char *name, enum tn_obj_kind *kind_r)
{
	for (size_t i = 0; i < 4; i++) {
		if (strcmp(name, tn_kind_names[i]) == 0) {
			*kind_r = (enum tn_obj_kind)i;
			return 0;
		}
	}
	return -1;
}

static int tn_obj_targets_decode(json_t *root, struct tn_obj *obj)
{
	json_t *targets = json_object_get(root, "targets"), *v;
	size_t i;

	if (obj->kind != TN_OBJ_ALIAS)
		return 0;
	if (!json_is_array(targets))
		return -1;
	json_array_foreach(targets, i, v) {
		if (!json_is_string(v))
			return -1;
		tn_obj_add_target(obj, json_string_value(v));
	}
	return 0;
}

static struct tn_obj *tn_obj_decode_root(json_t *root, const char **error_r)
{
	const char *kind = json_string_value(json_object_get(root, "kind"));
	const char *key = json_string_value(json_object_get(root, "key"));
	const char *status = json_string_value(json_object_get(root, "status"));
	enum tn_obj_kind k;
	struct tn_obj *obj;

	if (kind == NULL || key == NULL || tn_obj_kind_parse(kind, &k) < 0) {
		*error_r = "missing or unknown kind/key";
		return NULL;
	}
	obj = tn_obj_create(k, key);
	if (status != NULL && tn_status_parse(status, &obj->status) < 0)
		goto bad;
	for (size_t i = 0; i < TN_N_FIELDS; i++) {
		if (tn_obj_field_decode(root, obj, &tn_obj_fields[i]) < 0)
			goto bad;
	}
	if (tn_obj_targets_decode(root, obj) < 0 || obj->tenant == NULL)
		goto bad;
	return obj;
bad:
	*error_r = "malformed member";
	tn_obj_unref(&obj);
	return NULL;
}

struct tn_obj *tn_obj_decode(const char *json, size_t len, const char **error_r)
{
	json_error_t jerr;
	json_t *root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);
	struct tn_obj *obj;

	if (root == NULL || !json_is_object(root)) {
		*error_r = "not a JSON object";
		json_decref(root);
		return NULL;
	}
	obj = tn_obj_decode_root(root, error_r);
	json_decref(root);
	return obj;
}

/* --- composition ------------------------------------------------------- */

static char *tn_strdup_or_null(const char *s)
{
	return s != NULL ? tn_mem_strdup(s) : NULL;
}

static struct tn_limit tn_limit_pick(int64_t own, enum tn_level own_level,
				     int64_t plan)
{
	struct tn_limit l = { 0, TN_LEVEL_DEFAULT };

	if (own != TN_LIMIT_INHERIT) {
		l.value = own;
		l.from = own_level;
	} else if (plan != TN_LIMIT_INHERIT) {
		l.value = plan;
		l.from = TN_LEVEL_TENANT;
	}
	return l;
}

static void tn_account_cascade(struct tn_account *acct, const struct tn_obj *o,
			       enum tn_level level)
{
	if (o == NULL || o->status <= acct->status)
		return;
	/* strictly more severe: outer levels were visited first, so an
	 * equally severe inner status never replaces an outer reason */
	acct->status = o->status;
	acct->status_from = level;
	tn_mem_free(&acct->status_reason);
	acct->status_reason = tn_strdup_or_null(o->reason);
}

static enum tn_account_kind tn_account_kind_of(const struct tn_obj *domain,
					       const struct tn_obj *obj)
{
	if (obj != NULL)
		return obj->kind == TN_OBJ_ALIAS ? TN_ACCOUNT_ALIAS : TN_ACCOUNT_MAILBOX;
	return domain != NULL ? TN_ACCOUNT_DOMAIN : TN_ACCOUNT_TENANT;
}

static void tn_account_limits(struct tn_account *acct, const struct tn_obj *t,
			      const struct tn_obj *obj)
{
	int64_t none = TN_LIMIT_INHERIT;
	bool mbox = obj != NULL && obj->kind == TN_OBJ_MAILBOX;

	acct->quota = tn_limit_pick(mbox ? obj->mailbox_quota : none,
				    TN_LEVEL_OBJECT, t->mailbox_quota);
	acct->max_msg_size = tn_limit_pick(mbox ? obj->max_msg_size : none,
					   TN_LEVEL_OBJECT, t->max_msg_size);
	acct->send_rate = tn_limit_pick(mbox ? obj->send_rate : none,
					TN_LEVEL_OBJECT, t->send_rate);
	acct->tenant_storage = tn_limit_pick(none, TN_LEVEL_TENANT, t->storage_quota);
	acct->tenant_send_rate = tn_limit_pick(none, TN_LEVEL_TENANT, t->tenant_send_rate);
	acct->max_mailboxes = tn_limit_pick(none, TN_LEVEL_TENANT, t->max_mailboxes);
}

static void tn_account_location(struct tn_account *acct, const struct tn_obj *t,
				const struct tn_obj *obj)
{
	bool mbox = obj != NULL && obj->kind == TN_OBJ_MAILBOX;

	if (mbox) {
		acct->host = tn_strdup_or_null(obj->host);
		acct->password = tn_strdup_or_null(obj->password);
		acct->name = tn_strdup_or_null(obj->name);
	}
	acct->pool_from = TN_LEVEL_DEFAULT;
	if (mbox && obj->pool != NULL) {
		acct->pool = tn_mem_strdup(obj->pool);
		acct->pool_from = TN_LEVEL_OBJECT;
	} else if (t->pool != NULL) {
		acct->pool = tn_mem_strdup(t->pool);
		acct->pool_from = TN_LEVEL_TENANT;
	}
}

struct tn_account *tn_account_compose(const struct tn_obj *tenant,
				      const struct tn_obj *domain,
				      const struct tn_obj *obj)
{
	struct tn_account *acct = tn_mem_calloc(1, sizeof(*acct));

	acct->kind = tn_account_kind_of(domain, obj);
	acct->address = obj != NULL ? tn_mem_strdup(obj->key) : NULL;
	acct->domain = domain != NULL ? tn_mem_strdup(domain->key) : NULL;
	acct->tenant = tn_mem_strdup(tenant->key);
	acct->status = TN_STATUS_ACTIVE;
	acct->status_from = TN_LEVEL_DEFAULT;
	tn_account_cascade(acct, tenant, TN_LEVEL_TENANT);
	tn_account_cascade(acct, domain, TN_LEVEL_DOMAIN);
	tn_account_cascade(acct, obj, TN_LEVEL_OBJECT);
	tn_account_limits(acct, tenant, obj);
	tn_account_location(acct, tenant, obj);
	acct->overcommit = tenant->overcommit;
	acct->plan = tn_strdup_or_null(tenant->plan);
	acct->targets = tn_mem_calloc(1, sizeof(char *));
	return acct;
}

void tn_account_add_target(struct tn_account *acct, const char *target)
{
	acct->targets = tn_mem_realloc(acct->targets, (acct->ntargets + 2) * sizeof(char *));
	acct->targets[acct->ntargets++] = tn_mem_strdup(target);
	acct->targets[acct->ntargets] = NULL;
}

struct tn_account *tn_account_dup(const struct tn_account *src)
{
	struct tn_account *acct = tn_mem_alloc(sizeof(*acct));

	*acct = *src;
	acct->address = tn_strdup_or_null(src->address);
	acct->domain = tn_strdup_or_null(src->domain);
	acct->tenant = tn_strdup_or_null(src->tenant);
	acct->status_reason = tn_strdup_or_null(src->status_reason);
	acct->plan = tn_strdup_or_null(src->plan);
	acct->host = tn_strdup_or_null(src->host);
	acct->pool = tn_strdup_or_null(src->pool);
	acct->password = tn_strdup_or_null(src->password);
	acct->name = tn_strdup_or_null(src->name);
	acct->targets = tn_mem_calloc(1, sizeof(char *));
	acct->ntargets = 0;
	for (size_t i = 0; i < src->ntargets; i++)
		tn_account_add_target(acct, src->targets[i]);
	return acct;
}

void tn_account_free(struct tn_account **acctp)
{
	struct tn_account *acct = *acctp;

	if (acct == NULL)
		return;
	*acctp = NULL;
	tn_mem_free(&acct->address);
	tn_mem_free(&acct->domain);
	tn_mem_free(&acct->tenant);
	tn_mem_free(&acct->status_reason);
	tn_mem_free(&acct->plan);
	tn_mem_free(&acct->host);
	tn_mem_free(&acct->pool);
	tn_mem_free(&acct->password);
	tn_mem_free(&acct->name);
	for (size_t i = 0; i < acct->ntargets; i++)
		tn_mem_free(&acct->targets[i]);
	tn_mem_free(&acct->targets);
	tn_mem_free(&acct);
}

/* --- JSON view ------------------------------------------------------------ */

static void tn_json_set_str(json_t *o, const char *name, const char *value)
{
	json_object_set_new(o, name, value != NULL ? json_string(value) : json_null());
}

static void tn_json_set_limit(json_t *o, const char *name, struct tn_limit l)
{
	json_t *v = json_object();

	json_object_set_new(v, "value", json_integer(l.value));
	json_object_set_new(v, "from", json_string(tn_level_names[l.from]));
	json_object_set_new(o, name, v);
}

char *tn_account_to_json(const struct tn_account *acct, bool with_password)
{
	json_t *o = json_object(), *targets = json_array();
	char *text;

	json_object_set_new(o, "kind", json_string(tn_account_kind_names[acct->kind]));
	tn_json_set_str(o, "address", acct->address);
	tn_json_set_str(o, "domain", acct->domain);
	tn_json_set_str(o, "tenant", acct->tenant);
	json_object_set_new(o, "status", json_string(tn_status_names[acct->status]));
	tn_json_set_str(o, "status_reason", acct->status_reason);
	json_object_set_new(o, "status_from", json_string(tn_level_names[acct->status_from]));
	tn_json_set_limit(o, "quota_bytes", acct->quota);
	tn_json_set_limit(o, "tenant_storage_bytes", acct->tenant_storage);
	tn_json_set_limit(o, "max_message_size", acct->max_msg_size);
	tn_json_set_limit(o, "send_rate", acct->send_rate);
	tn_json_set_limit(o, "tenant_send_rate", acct->tenant_send_rate);
	tn_json_set_limit(o, "max_mailboxes", acct->max_mailboxes);
	json_object_set_new(o, "overcommit", json_boolean(acct->overcommit));
	tn_json_set_str(o, "plan", acct->plan);
	tn_json_set_str(o, "host", acct->host);
	tn_json_set_str(o, "pool", acct->pool);
	tn_json_set_str(o, "name", acct->name);
	if (with_password)
		tn_json_set_str(o, "password", acct->password);
	for (size_t i = 0; i < acct->ntargets; i++)
		json_array_append_new(targets, json_string(acct->targets[i]));
	json_object_set_new(o, "targets", targets);
	json_object_set_new(o, "alias_loop", json_boolean(acct->alias_loop));
	json_object_set_new(o, "targets_truncated", json_boolean(acct->targets_truncated));
	json_object_set_new(o, "layer", json_string(tn_layer_names[acct->layer]));
	text = json_dumps(o, JSON_COMPACT);
	json_decref(o);
	return text;
}
