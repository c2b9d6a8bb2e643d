/*++
 * NAME
 *	tnctl-fields 3
 * SUMMARY
 *	the provisioning resources' fields, as tnctl knows them
 *	(see tnctl-prov.h)
 * DESCRIPTION
 *	The tables follow docs/provisioning.md (and the core's own tables
 *	in lib/tn-prov.c): what a create or update may name, and of
 *	which type. The server checks everything again; these checks let
 *	import --dry-run find bad lines without a server, and keep bad
 *	lines from being sent at all.
 *--*/
#include "tn-build.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "tn-conf.h"
#include "tn-mem.h"
#include "tn-prov-input.h"
#include "tnctl-prov.h"

#define C TNCTL_F_CREATE
#define M TNCTL_F_MODIFY
#define B TNCTL_F_BYTES
#define Z TNCTL_F_ZERO
#define KEY (TNCTL_F_KEY | TNCTL_F_CREATE | TNCTL_F_REQUIRED)

static const struct tnctl_field tnctl_tenant_fields[] = {
	{ "id", TNCTL_F_ID, KEY, 0, NULL },
	{ "name", TNCTL_F_TEXT, C | M, 256, "name" },
	{ "description", TNCTL_F_TEXT, C | M, 1024, "description" },
	{ "status", TNCTL_F_STATUS, C, 0, NULL },
	{ "status_reason", TNCTL_F_TEXT, C, 1024, NULL },
	{ "plan", TNCTL_F_TEXT, C | M, 64, "plan" },
	{ "storage_quota_bytes", TNCTL_F_COUNT, C | M | B | Z, 0, "storage-quota" },
	{ "mailbox_quota_bytes", TNCTL_F_COUNT, C | M | B | Z, 0, "mailbox-quota" },
	{ "max_mailboxes", TNCTL_F_COUNT, C | M | Z, 0, "max-mailboxes" },
	{ "max_message_bytes", TNCTL_F_COUNT, C | M | B | Z, 0, "max-message-size" },
	{ "send_rate_per_hour", TNCTL_F_COUNT, C | M | Z, 0, "send-rate" },
	{ "tenant_send_rate_per_hour", TNCTL_F_COUNT, C | M | Z, 0, "tenant-send-rate" },
	{ "overcommit", TNCTL_F_BOOL, C | M | Z, 0, "overcommit" },
	{ "pool", TNCTL_F_NAME, C | M, 0, "pool" },
	{ NULL, 0, 0, 0, NULL }
};

static const struct tnctl_field tnctl_domain_fields[] = {
	{ "domain", TNCTL_F_DOMAIN, KEY, 0, NULL },
	{ "tenant", TNCTL_F_TENANT, C, 0, "tenant" },
	{ "description", TNCTL_F_TEXT, C | M, 1024, "description" },
	{ "status", TNCTL_F_STATUS, C, 0, NULL },
	{ "status_reason", TNCTL_F_TEXT, C, 1024, NULL },
	{ NULL, 0, 0, 0, NULL }
};

static const struct tnctl_field tnctl_mailbox_fields[] = {
	{ "address", TNCTL_F_ADDRESS, KEY, 0, NULL },
	{ "tenant", TNCTL_F_TENANT, C, 0, "tenant" },
	{ "name", TNCTL_F_TEXT, C | M, 256, "name" },
	{ "description", TNCTL_F_TEXT, C | M, 1024, "description" },
	{ "status", TNCTL_F_STATUS, C, 0, NULL },
	{ "status_reason", TNCTL_F_TEXT, C, 1024, NULL },
	{ "quota_bytes", TNCTL_F_COUNT, C | M | B, 0, "quota" },
	{ "max_message_bytes", TNCTL_F_COUNT, C | M | B, 0, "max-message-size" },
	{ "send_rate_per_hour", TNCTL_F_COUNT, C | M, 0, "send-rate" },
	{ "pool", TNCTL_F_NAME, C | M, 0, "pool" },
	{ "host", TNCTL_F_HOST, C | M, 0, "host" },
	{ "password", TNCTL_F_PASSWORD, C | M, 1024, NULL },
	{ "password_hash", TNCTL_F_HASH, C | M, 0, "password-hash" },
	{ NULL, 0, 0, 0, NULL }
};

static const struct tnctl_field tnctl_alias_fields[] = {
	{ "address", TNCTL_F_ADDRESS, KEY, 0, NULL },
	{ "tenant", TNCTL_F_TENANT, C, 0, "tenant" },
	{ "targets", TNCTL_F_TARGETS, C | M | TNCTL_F_REQUIRED, 0, "target" },
	{ "description", TNCTL_F_TEXT, C | M, 1024, "description" },
	{ "status", TNCTL_F_STATUS, C, 0, NULL },
	{ "status_reason", TNCTL_F_TEXT, C, 1024, NULL },
	{ NULL, 0, 0, 0, NULL }
};

#undef C
#undef M
#undef B
#undef Z
#undef KEY

static const char *const tnctl_tenant_columns[] = {
	"id", "status", "plan", "max_mailboxes", "storage_quota_bytes", "name", NULL
};
static const char *const tnctl_domain_columns[] = {
	"domain", "tenant", "status", "description", NULL
};
static const char *const tnctl_mailbox_columns[] = {
	"address", "tenant", "status", "quota_bytes", "host", "name", NULL
};
static const char *const tnctl_alias_columns[] = {
	"address", "tenant", "status", "targets", NULL
};

const struct tnctl_kind tnctl_kinds[TNCTL_NKINDS] = {
	{ "tenant", "tenants", tnctl_tenant_fields, tnctl_tenant_columns },
	{ "domain", "domains", tnctl_domain_fields, tnctl_domain_columns },
	{ "mailbox", "mailboxes", tnctl_mailbox_fields, tnctl_mailbox_columns },
	{ "alias", "aliases", tnctl_alias_fields, tnctl_alias_columns },
};

const struct tnctl_kind *tnctl_kind_find(const char *name)
{
	for (size_t i = 0; i < TNCTL_NKINDS; i++) {
		if (strcmp(tnctl_kinds[i].name, name) == 0)
			return &tnctl_kinds[i];
	}
	return NULL;
}

const struct tnctl_field *tnctl_field_find(const struct tnctl_kind *k, const char *name)
{
	for (const struct tnctl_field *f = k->fields; f->name != NULL; f++) {
		if (strcmp(f->name, name) == 0)
			return f;
	}
	return NULL;
}

bool tnctl_field_known(const char *name)
{
	for (size_t i = 0; i < TNCTL_NKINDS; i++) {
		if (tnctl_field_find(&tnctl_kinds[i], name) != NULL)
			return true;
	}
	return false;
}

/* A key-like string of type t in its normal form, or NULL (*why_r). */
static char *tnctl_norm(enum tnctl_ftype t, const char *s, const char **why_r)
{
	char *norm = NULL;
	int ret;

	if (t == TNCTL_F_ID || t == TNCTL_F_TENANT)
		ret = tn_prov_input_tenant_id(s, &norm, why_r);
	else if (t == TNCTL_F_DOMAIN)
		ret = tn_prov_input_domain(s, &norm, why_r);
	else
		ret = tn_prov_input_address(s, &norm, why_r);
	if (ret < 0)
		tn_mem_free(&norm);
	return norm;
}

char *tnctl_key_norm(const struct tnctl_kind *k, const char *key, const char **why_r)
{
	return tnctl_norm(k->fields[0].type, key, why_r);
}

/* --- text to JSON --------------------------------------------------------------- */

static json_t *tnctl_count_value(const struct tnctl_field *f, const char *text,
				 const char **why_r)
{
	const char *why = NULL;
	uint64_t v = 0;
	size_t len = strlen(text);
	char *end;

	if (strcmp(text, "unlimited") == 0)
		return json_integer(0);
	if ((f->flags & TNCTL_F_BYTES) != 0 && len > 1 &&
	    (text[len - 1] == 't' || text[len - 1] == 'T')) {
		/* tn_conf_parse_size knows k, m, g */
		char *g = tn_mem_printf("%.*sg", (int)(len - 1), text);
		int ret = tn_conf_parse_size(g, &v, &why);

		tn_mem_free(&g);
		if (ret == 0 && v > UINT64_MAX / 1024)
			ret = -1;
		v *= 1024;
		if (ret < 0)
			v = UINT64_MAX;
	} else if ((f->flags & TNCTL_F_BYTES) != 0) {
		if (tn_conf_parse_size(text, &v, &why) < 0)
			v = UINT64_MAX;
	} else {
		errno = 0;
		v = strtoull(text, &end, 10);
		if (errno != 0 || *end != '\0' || *text < '0' || *text > '9')
			v = UINT64_MAX;
	}
	if (v > (uint64_t)TN_PROV_COUNT_MAX) {
		*why_r = (f->flags & TNCTL_F_BYTES) != 0 ?
			"expected a size (bytes, or with k, m, g, t), 'unlimited' or 'null'" :
			"expected an integer from 0 (unlimited) to 2^53-1, or 'null'";
		return NULL;
	}
	return json_integer((json_int_t)v);
}

static json_t *tnctl_targets_value(const char *text, const char **why_r)
{
	json_t *arr;
	char *copy, *save = NULL;

	if (text[0] == '[') {
		arr = json_loads(text, 0, NULL);
		if (!json_is_array(arr)) {
			json_decref(arr);
			*why_r = "expected a JSON array of addresses";
			return NULL;
		}
		return arr;
	}
	arr = json_array();
	copy = tn_mem_strdup(text);
	for (char *t = strtok_r(copy, ", \t;", &save); t != NULL; t = strtok_r(NULL, ", \t;", &save))
		json_array_append_new(arr, json_string(t));
	tn_mem_free(&copy);
	return arr;
}

json_t *tnctl_field_value(const struct tnctl_field *f, const char *text, const char **why_r)
{
	bool b;

	if (f->type != TNCTL_F_TEXT && f->type != TNCTL_F_PASSWORD &&
	    (strcmp(text, "null") == 0 || strcmp(text, "none") == 0 ||
	     strcmp(text, "inherit") == 0))
		return json_null();
	switch (f->type) {
	case TNCTL_F_COUNT:
		return tnctl_count_value(f, text, why_r);
	case TNCTL_F_BOOL:
		if (tn_conf_parse_bool(text, &b, why_r) < 0) {
			*why_r = "expected yes or no (true/false, on/off, 1/0)";
			return NULL;
		}
		return json_boolean(b);
	case TNCTL_F_TARGETS:
		return tnctl_targets_value(text, why_r);
	default:
		return json_string(text);
	}
}

/* --- checks ------------------------------------------------------------------------ */

static int tnctl_check_string(const struct tnctl_field *f, json_t *v, const char **why_r)
{
	const char *s = json_string_value(v);
	char *norm = NULL;
	int ret;

	if (s == NULL || strlen(s) != json_string_length(v)) {
		*why_r = s == NULL ? "must be a string" : "must not contain NUL";
		return -1;
	}
	switch (f->type) {
	case TNCTL_F_ID:
	case TNCTL_F_TENANT:
	case TNCTL_F_DOMAIN:
	case TNCTL_F_ADDRESS:
		norm = tnctl_norm(f->type, s, why_r);
		ret = norm != NULL ? 0 : -1;
		break;
	case TNCTL_F_NAME:
		return tn_prov_input_name(s, why_r);
	case TNCTL_F_HOST:
		return tn_prov_input_host(s, why_r);
	case TNCTL_F_HASH:
		return tn_prov_input_check_hash(s, why_r);
	case TNCTL_F_STATUS:
		ret = strcmp(s, "active") == 0 || strcmp(s, "suspended") == 0 ? 0 : -1;
		if (ret < 0)
			*why_r = "must be active or suspended";
		return ret;
	default:
		return tn_prov_input_text(s, strlen(s), f->max, why_r);
	}
	tn_mem_free(&norm);
	return ret;
}

static int tnctl_check_targets(json_t *v, const char *self, const char **why_r)
{
	static const struct tnctl_field addr = { "targets", TNCTL_F_ADDRESS, 0, 0, NULL };
	size_t n = json_array_size(v);

	if (!json_is_array(v) || n == 0) {
		*why_r = "must be an array of 1 or more addresses";
		return -1;
	}
	for (size_t i = 0; i < n; i++) {
		json_t *t = json_array_get(v, i);

		if (tnctl_check_string(&addr, t, why_r) < 0)
			return -1;
		for (size_t j = 0; j < i; j++) {
			if (strcasecmp(json_string_value(json_array_get(v, j)),
				       json_string_value(t)) == 0) {
				*why_r = "the same target twice";
				return -1;
			}
		}
		if (self != NULL && strcasecmp(json_string_value(t), self) == 0) {
			*why_r = "an alias cannot expand to itself";
			return -1;
		}
	}
	return 0;
}

static int tnctl_check_value(const struct tnctl_field *f, json_t *v, const char *self,
			     const char **why_r)
{
	json_int_t n;

	if (json_is_null(v)) {
		if ((f->flags & (TNCTL_F_KEY | TNCTL_F_REQUIRED)) != 0 ||
		    f->type == TNCTL_F_STATUS || f->type == TNCTL_F_TENANT) {
			*why_r = "must not be null";
			return -1;
		}
		return 0;
	}
	switch (f->type) {
	case TNCTL_F_COUNT:
		n = json_integer_value(v);
		if (!json_is_integer(v) || n < 0 || n > TN_PROV_COUNT_MAX) {
			*why_r = "must be an integer from 0 (unlimited) to 2^53-1";
			return -1;
		}
		return 0;
	case TNCTL_F_BOOL:
		if (!json_is_boolean(v)) {
			*why_r = "must be true or false";
			return -1;
		}
		return 0;
	case TNCTL_F_TARGETS:
		return tnctl_check_targets(v, self, why_r);
	default:
		return tnctl_check_string(f, v, why_r);
	}
}

int tnctl_check_create(const struct tnctl_kind *k, json_t *obj, const char **field_r,
		       char **why_r)
{
	const char *name, *why = NULL;
	const char *self = json_string_value(json_object_get(obj, k->fields[0].name));
	json_t *v;

	*field_r = NULL;
	if (!json_is_object(obj)) {
		*why_r = tn_mem_strdup("not a JSON object");
		return -1;
	}
	json_object_foreach(obj, name, v) {
		const struct tnctl_field *f = tnctl_field_find(k, name);

		*field_r = f != NULL ? f->name : NULL;
		if (f == NULL || (f->flags & TNCTL_F_CREATE) == 0) {
			*why_r = tn_mem_printf("%.64s: %s of a %s", name, f == NULL ?
					       "unknown field" : "cannot be given at create",
					       k->name);
			return -1;
		}
		if (tnctl_check_value(f, v, self, &why) < 0) {
			*why_r = tn_mem_printf("%s: %s", f->name, why);
			return -1;
		}
	}
	for (const struct tnctl_field *f = k->fields; f->name != NULL; f++) {
		if ((f->flags & TNCTL_F_REQUIRED) != 0 && json_object_get(obj, f->name) == NULL) {
			*field_r = f->name;
			*why_r = tn_mem_printf("%s: required", f->name);
			return -1;
		}
	}
	if (json_object_get(obj, "password") != NULL &&
	    json_object_get(obj, "password_hash") != NULL) {
		*field_r = "password_hash";
		*why_r = tn_mem_strdup("password_hash: give password or password_hash, not both");
		return -1;
	}
	return 0;
}
