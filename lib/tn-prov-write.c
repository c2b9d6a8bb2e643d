/*++
 * NAME
 *	tn-prov-write 3
 * SUMMARY
 *	provisioning writes: create, modify, status, purge (see tn-prov.h)
 * DESCRIPTION
 *	Each write is one step run on one connection (tn_prov_run()):
 *	read what decides (the object, its owner, the plan), write once
 *	with the assertion control on the entryCSN read, read the result
 *	back, then tn_prov_commit(): invalidate, record the event, and undo
 *	the write when the event cannot be recorded.
 *--*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "tn-escape.h"
#include "tn-log.h"
#include "tn-lookup.h"
#include "tn-mem.h"
#include "tn-outbox.h"
#include "tn-prov-input.h"
#include "tn-prov-int.h"

struct tn_prov_usage {
	int64_t count;		/* live mailboxes */
	int64_t explicit_bytes;	/* sum of their own non-zero quotas */
	int64_t default_count;	/* without a quota of their own */
	int64_t unlimited_count; /* own quota 0 */
};

/* What a write step works with. */
struct tn_prov_wr {
	json_t *norm;			/* create/modify: validated input */
	const char *key;		/* normalised key */
	enum tn_status to;		/* set_status */
	const char *reason;		/* set_status: NULL or "" for none */
	char *tenant;			/* the owning tenant */
	struct tn_prov_entry *old;	/* modify, status, purge: before */
	struct tn_prov_entry *now;	/* after */
	struct tn_prov_mods mods;	/* the write */
	json_t *changes;		/* modify: events.md "changes" */
	struct tn_prov_usage share;	/* taken from the tenant's plan counters */
};

/* --- input -------------------------------------------------------------------- */

static enum tn_prov_status tn_prov_bad(struct tn_prov_op *op, const struct tn_prov_field *f,
				       const char *why)
{
	return tn_prov_fail(op, TN_PROV_BAD_INPUT, f->name, "%s: %s", f->name, why);
}

static enum tn_prov_status tn_prov_parse_string(struct tn_prov_op *op,
						const struct tn_prov_field *f, json_t *v,
						json_t **out_r)
{
	const char *s = json_string_value(v), *why = "must be a string";
	char *norm = NULL;
	int ret = -1;

	if (s != NULL && strlen(s) != json_string_length(v))
		return tn_prov_bad(op, f, "must not contain NUL");
	if (s != NULL) {
		switch (f->type) {
		case TN_PF_ID:
		case TN_PF_TENANT:
			ret = tn_prov_input_tenant_id(s, &norm, &why);
			break;
		case TN_PF_DOMAIN:
			ret = tn_prov_input_domain(s, &norm, &why);
			break;
		case TN_PF_ADDRESS:
			ret = tn_prov_input_address(s, &norm, &why);
			break;
		case TN_PF_NAME:
			ret = tn_prov_input_name(s, &why);
			break;
		case TN_PF_HOST:
			ret = tn_prov_input_host(s, &why);
			break;
		case TN_PF_HASH:
			ret = tn_prov_input_check_hash(s, &why);
			break;
		case TN_PF_PASSWORD:
			norm = tn_prov_input_hash_password(s, op->p->rounds, &why);
			ret = norm != NULL ? 0 : -1;
			break;
		default:
			ret = tn_prov_input_text(s, strlen(s), f->max, &why);
			break;
		}
	}
	if (ret < 0)
		return tn_prov_bad(op, f, why);
	*out_r = json_string(norm != NULL ? norm : s);
	if (norm != NULL)
		explicit_bzero(norm, strlen(norm));
	tn_mem_free(&norm);
	return TN_PROV_OK;
}

static enum tn_prov_status tn_prov_parse_targets(struct tn_prov_op *op,
						 const struct tn_prov_field *f, json_t *v,
						 const char *self, json_t **out_r)
{
	size_t n = json_array_size(v);
	enum tn_prov_status st = TN_PROV_OK;
	json_t *out = json_array(), *t;

	if (!json_is_array(v) || n == 0 || n > op->p->alias_max) {
		json_decref(out);
		return tn_prov_fail(op, TN_PROV_BAD_INPUT, f->name,
				    "%s: must be an array of 1 to %u addresses", f->name,
				    op->p->alias_max);
	}
	for (size_t i = 0; i < n && st == TN_PROV_OK; i++) {
		st = tn_prov_parse_string(op, &(struct tn_prov_field){ f->name, NULL,
					  TN_PF_ADDRESS, 0, 0 }, json_array_get(v, i), &t);
		if (st != TN_PROV_OK)
			break;
		for (size_t j = 0; j < json_array_size(out) && st == TN_PROV_OK; j++) {
			if (json_equal(json_array_get(out, j), t))
				st = tn_prov_bad(op, f, "the same target twice");
		}
		if (st == TN_PROV_OK && self != NULL && strcmp(json_string_value(t), self) == 0)
			st = tn_prov_bad(op, f, "an alias cannot expand to itself");
		json_array_append_new(out, t);
	}
	if (st != TN_PROV_OK)
		json_decref(out);
	else
		*out_r = out;
	return st;
}

static enum tn_prov_status tn_prov_parse_value(struct tn_prov_op *op,
					       const struct tn_prov_field *f, json_t *v,
					       const char *self, json_t **out_r)
{
	json_int_t n;

	if (json_is_null(v)) {
		if ((f->flags & (TN_PF_KEY | TN_PF_REQUIRED)) != 0 || f->type == TN_PF_STATUS ||
		    f->type == TN_PF_TENANT)
			return tn_prov_bad(op, f, "must not be null");
		*out_r = json_null();
		return TN_PROV_OK;
	}
	switch (f->type) {
	case TN_PF_COUNT:
		n = json_integer_value(v);
		if (!json_is_integer(v) || n < 0 || n > TN_PROV_COUNT_MAX)
			return tn_prov_bad(op, f, "must be an integer from 0 (unlimited) "
					   "to 2^53-1");
		*out_r = json_integer(n);
		return TN_PROV_OK;
	case TN_PF_BOOL:
		if (!json_is_boolean(v))
			return tn_prov_bad(op, f, "must be true or false");
		*out_r = json_incref(v);
		return TN_PROV_OK;
	case TN_PF_STATUS:
		if (!json_is_string(v) || (strcmp(json_string_value(v), "active") != 0 &&
					   strcmp(json_string_value(v), "suspended") != 0))
			return tn_prov_bad(op, f, "must be active or suspended");
		*out_r = json_incref(v);
		return TN_PROV_OK;
	case TN_PF_TARGETS:
		return tn_prov_parse_targets(op, f, v, self, out_r);
	default:
		return tn_prov_parse_string(op, f, v, out_r);
	}
}

static const char *tn_prov_not_settable(const struct tn_prov_field *f, unsigned allowed)
{
	if ((f->flags & allowed) != 0)
		return NULL;
	if ((f->flags & TN_PF_KEY) != 0)
		return "cannot be changed (create a new one)";
	if ((f->flags & TN_PF_STATUSF) != 0)
		return allowed == TN_PF_CREATE ? "is set by the directory" :
			"changes only through suspend, resume and delete";
	return "cannot be set";
}

/* Validate in (a JSON object) against the kind's fields: every member
 * known and settable (allowed: TN_PF_CREATE or TN_PF_MODIFY), of the
 * right type and form; *norm_r holds the normalised values. */
static enum tn_prov_status tn_prov_parse(struct tn_prov_op *op, json_t *in, unsigned allowed,
					 const char *self, json_t **norm_r)
{
	enum tn_prov_status st = TN_PROV_OK;
	const char *name, *why;
	char safe[64];
	json_t *v, *nv;

	if (!json_is_object(in))
		return tn_prov_fail(op, TN_PROV_BAD_INPUT, NULL, "the body must be a JSON object");
	*norm_r = json_object();
	json_object_foreach(in, name, v) {
		const struct tn_prov_field *f = tn_prov_field_find(op->kd, name);

		if (f == NULL) {
			tn_log_sanitize(safe, sizeof(safe), name, strlen(name));
			st = tn_prov_fail(op, TN_PROV_BAD_INPUT, safe, "%s: unknown field of a %s",
					  safe, op->kd->name);
		} else if ((why = tn_prov_not_settable(f, allowed)) != NULL) {
			st = tn_prov_bad(op, f, why);
		} else if ((st = tn_prov_parse_value(op, f, v, self, &nv)) == TN_PROV_OK) {
			json_object_set_new(*norm_r, name, nv);
		}
		if (st != TN_PROV_OK)
			break;
	}
	if (st == TN_PROV_OK && json_object_get(*norm_r, "password") != NULL &&
	    json_object_get(*norm_r, "password_hash") != NULL)
		st = tn_prov_fail(op, TN_PROV_BAD_INPUT, "password_hash",
				  "password_hash: give password or password_hash, not both");
	if (st != TN_PROV_OK) {
		json_decref(*norm_r);
		*norm_r = NULL;
	}
	return st;
}

static enum tn_prov_status tn_prov_required(struct tn_prov_op *op, json_t *norm)
{
	for (const struct tn_prov_field *f = op->kd->fields; f->name != NULL; f++) {
		if ((f->flags & TN_PF_REQUIRED) != 0 && json_object_get(norm, f->name) == NULL)
			return tn_prov_bad(op, f, "missing");
	}
	return TN_PROV_OK;
}

/* --- reading other objects ----------------------------------------------------------- */

/* The owners (tenants, domains) a batch of creates has read: each is
 * read once per batch. */
struct tn_prov_bcache {
	size_t n;
	struct {
		enum tn_prov_kind kind;
		char *key;
		struct tn_prov_entry *ent;
	} *v;
};

static void tn_prov_bcache_clear(struct tn_prov_bcache *bc)
{
	for (size_t i = 0; i < bc->n; i++) {
		tn_mem_free(&bc->v[i].key);
		tn_prov_entry_free(&bc->v[i].ent);
	}
	tn_mem_free(&bc->v);
	bc->n = 0;
}

static enum tn_prov_status tn_prov_fetch_kind(struct tn_prov_op *op, enum tn_prov_kind kind,
					      const char *key, struct tn_prov_entry **ent_r)
{
	const struct tn_prov_kind_desc *kd = op->kd;
	struct tn_prov_bcache *bc = op->bcache;
	enum tn_prov_status st;

	for (size_t i = 0; bc != NULL && i < bc->n; i++) {
		if (bc->v[i].kind == kind && strcmp(bc->v[i].key, key) == 0) {
			*ent_r = tn_prov_entry_dup(bc->v[i].ent);
			return TN_PROV_OK;
		}
	}
	op->kd = tn_prov_kind_desc(kind);
	st = tn_prov_fetch(op, key, ent_r);
	op->kd = kd;
	if (st == TN_PROV_OK && bc != NULL) {
		bc->v = tn_mem_realloc(bc->v, (bc->n + 1) * sizeof(bc->v[0]));
		bc->v[bc->n].kind = kind;
		bc->v[bc->n].key = tn_mem_strdup(key);
		bc->v[bc->n].ent = tn_prov_entry_dup(*ent_r);
		bc->n++;
	}
	return st;
}

/* The tenant entry of tenant, which must exist and not be deleted. */
static enum tn_prov_status tn_prov_live_tenant(struct tn_prov_op *op, const char *tenant,
					       struct tn_prov_entry **ent_r)
{
	enum tn_prov_status st = tn_prov_fetch_kind(op, TN_PROV_TENANT, tenant, ent_r);

	if (st == TN_PROV_NOT_FOUND)
		return tn_prov_fail(op, TN_PROV_NOT_FOUND, "tenant", "no such tenant: %s", tenant);
	if (st == TN_PROV_OK && (*ent_r)->status == TN_STATUS_DELETED) {
		tn_prov_entry_free(ent_r);
		return tn_prov_fail(op, TN_PROV_UNPROCESSABLE, "tenant", "tenant %s is deleted",
				    tenant);
	}
	return st;
}

/* The domain of an address: hosted, of the caller's scope, not deleted. */
static enum tn_prov_status tn_prov_live_domain(struct tn_prov_op *op, const char *address,
					       struct tn_prov_entry **ent_r)
{
	const char *domain = strrchr(address, '@') + 1;
	enum tn_prov_status st = tn_prov_fetch_kind(op, TN_PROV_DOMAIN, domain, ent_r);

	if (st == TN_PROV_NOT_FOUND)
		return tn_prov_fail(op, TN_PROV_UNPROCESSABLE, "address",
				    "address: domain %s is not a domain %s", domain,
				    op->ctx->tenant_scope != NULL ? "of this tenant" : "hosted here");
	if (st == TN_PROV_OK && (*ent_r)->status == TN_STATUS_DELETED) {
		tn_prov_entry_free(ent_r);
		return tn_prov_fail(op, TN_PROV_UNPROCESSABLE, "address",
				    "address: domain %s is deleted", domain);
	}
	return st;
}

/* --- plan limits ------------------------------------------------------------------------- */

/*
 * A tenant entry carries its plan counters (docs/provisioning.md "Plan
 * counters"): its live (not deleted) mailboxes, the sum of their own
 * non-zero quotas, how many have no quota of their own (they take the
 * tenant's default) and how many have their own quota 0 (unlimited).
 * Writes that change them change the counters first with an LDAP
 * increment (atomic in slapd, whichever node writes) and read the
 * result in the same operation (post-read control), so two writers
 * racing for the last place cannot both get it; a write that then
 * fails gives its share back. The limits are checked on the counters,
 * not by counting the tenant's mailboxes, so a create costs the same
 * with 10 or 1,000,000 mailboxes.
 */

struct tn_prov_plan {
	int64_t storage, mailbox_default, max_mailboxes;
	bool overcommit;
};

static char *tn_prov_counter_attrs[] = {
	"tnMailboxCount", "tnQuotaExplicitBytes", "tnQuotaDefaultCount",
	"tnQuotaUnlimitedCount", NULL
};

static int64_t *tn_prov_usage_field(struct tn_prov_usage *u, size_t i)
{
	int64_t *f[] = { &u->count, &u->explicit_bytes, &u->default_count, &u->unlimited_count };

	return f[i];
}

static int64_t tn_prov_int(json_t *obj, const char *name)
{
	return json_integer_value(json_object_get(obj, name));
}

static void tn_prov_plan_of(json_t *tenant, struct tn_prov_plan *plan)
{
	memset(plan, 0, sizeof(*plan));
	plan->storage = tn_prov_int(tenant, "storage_quota_bytes");
	plan->mailbox_default = tn_prov_int(tenant, "mailbox_quota_bytes");
	plan->max_mailboxes = tn_prov_int(tenant, "max_mailboxes");
	plan->overcommit = json_is_true(json_object_get(tenant, "overcommit"));
}

/* The share of one live mailbox whose own quota is quota (an integer,
 * or null / NULL: none of its own), times sign. */
static void tn_prov_usage_of(json_t *quota, int sign, struct tn_prov_usage *u)
{
	memset(u, 0, sizeof(*u));
	u->count = sign;
	if (!json_is_integer(quota))
		u->default_count = sign;
	else if (json_integer_value(quota) == 0)
		u->unlimited_count = sign;
	else
		u->explicit_bytes = sign * json_integer_value(quota);
}

static void tn_prov_usage_add(struct tn_prov_usage *to, const struct tn_prov_usage *d, int sign)
{
	for (size_t i = 0; tn_prov_counter_attrs[i] != NULL; i++)
		*tn_prov_usage_field(to, i) += sign * *tn_prov_usage_field((struct tn_prov_usage *)d, i);
}

static bool tn_prov_usage_zero(const struct tn_prov_usage *u)
{
	return u->count == 0 && u->explicit_bytes == 0 && u->default_count == 0 &&
		u->unlimited_count == 0;
}

/* Does d take anything (more mailboxes, bytes, unlimited ones)? */
static bool tn_prov_usage_grows(const struct tn_prov_usage *d)
{
	return d->count > 0 || d->explicit_bytes > 0 || d->default_count > 0 ||
		d->unlimited_count > 0;
}

/* fields: the input fields at fault for the count and for the quotas */
static enum tn_prov_status tn_prov_plan_check(struct tn_prov_op *op, const char *tenant,
					      const struct tn_prov_plan *plan,
					      const struct tn_prov_usage *u,
					      const char *const fields[2])
{
	const char *field = fields[1];
	int64_t sum;

	if (plan->max_mailboxes > 0 && u->count > plan->max_mailboxes)
		return tn_prov_fail(op, TN_PROV_UNPROCESSABLE, fields[0],
				    "the plan of tenant %s allows %lld mailboxes (%lld would exist)",
				    tenant, (long long)plan->max_mailboxes, (long long)u->count);
	if (plan->storage == 0 || plan->overcommit)
		return TN_PROV_OK;
	if (u->unlimited_count > 0 || (plan->mailbox_default == 0 && u->default_count > 0))
		return tn_prov_fail(op, TN_PROV_UNPROCESSABLE, field,
				    "tenant %s has %lld bytes of storage and no overcommit: "
				    "no mailbox may have an unlimited quota", tenant,
				    (long long)plan->storage);
	sum = u->explicit_bytes + u->default_count * plan->mailbox_default;
	if (sum > plan->storage)
		return tn_prov_fail(op, TN_PROV_UNPROCESSABLE, field,
				    "mailbox quotas of tenant %s would add up to %lld bytes, more "
				    "than its storage of %lld (overcommit is off)", tenant,
				    (long long)sum, (long long)plan->storage);
	return TN_PROV_OK;
}

/* Add the share of entry e to u when it is a live mailbox. */
static void tn_prov_usage_live(LDAP *ld, LDAPMessage *e, struct tn_prov_usage *u)
{
	struct berval **oc = ldap_get_values_len(ld, e, "objectClass");
	struct berval **sv = ldap_get_values_len(ld, e, "tnStatus");
	struct berval **q = ldap_get_values_len(ld, e, "tnQuotaBytes");
	bool deleted = sv != NULL && sv[0] != NULL && sv[0]->bv_len == 7 &&
		strncasecmp(sv[0]->bv_val, "deleted", 7) == 0;
	bool mailbox = oc == NULL;	/* not asked for: the search chose mailboxes */
	struct tn_prov_usage one;
	json_t *quota = NULL;

	for (size_t i = 0; oc != NULL && oc[i] != NULL; i++) {
		if (oc[i]->bv_len == 9 && strncasecmp(oc[i]->bv_val, "tnMailbox", 9) == 0)
			mailbox = true;
	}
	if (q != NULL && q[0] != NULL) {
		char *text = tn_mem_strndup(q[0]->bv_val, q[0]->bv_len);

		quota = json_integer(strtoll(text, NULL, 10));
		tn_mem_free(&text);
	}
	if (mailbox && !deleted) {
		tn_prov_usage_of(quota, 1, &one);
		tn_prov_usage_add(u, &one, 1);
	}
	json_decref(quota);
	ldap_value_free_len(oc);
	ldap_value_free_len(sv);
	ldap_value_free_len(q);
}

/* Count the tenant's live mailboxes and their quotas from the entries
 * themselves (a tenant without counters yet, a check that failed on
 * them, tn_prov_recount()). */
static enum tn_prov_status tn_prov_usage_count(struct tn_prov_op *op, const char *tenant,
					       struct tn_prov_usage *u)
{
	static char *attrs[] = { "tnQuotaBytes", "tnStatus", NULL };
	char *base = tn_prov_dn(op->p, NULL, "tnTenantId", tenant);
	enum tn_prov_status st = TN_PROV_OK;
	LDAPMessage *res = NULL;

	memset(u, 0, sizeof(*u));
	if (tn_prov_search(op, base, LDAP_SCOPE_ONELEVEL, "(objectClass=tnMailbox)", attrs,
			   &res, &st) == 0) {
		for (LDAPMessage *e = ldap_first_entry(op->ld, res); e != NULL;
		     e = ldap_next_entry(op->ld, e))
			tn_prov_usage_live(op->ld, e, u);
	}
	if (res != NULL)
		ldap_msgfree(res);
	tn_mem_free(&base);
	return st;
}

/* The counters as an entry holds them (raw: attribute -> [values]); -1
 * when one is missing. */
static int tn_prov_usage_from_raw(json_t *raw, struct tn_prov_usage *u)
{
	for (size_t i = 0; tn_prov_counter_attrs[i] != NULL; i++) {
		const char *v = json_string_value(json_array_get(
			json_object_get(raw, tn_prov_counter_attrs[i]), 0));

		if (v == NULL)
			return -1;
		*tn_prov_usage_field(u, i) = strtoll(v, NULL, 10);
	}
	return 0;
}

/* The same from a post-read (attribute -> value). */
static int tn_prov_usage_from_raw_strings(json_t *after, struct tn_prov_usage *u)
{
	for (size_t i = 0; tn_prov_counter_attrs[i] != NULL; i++) {
		const char *v = json_string_value(json_object_get(after, tn_prov_counter_attrs[i]));

		if (v == NULL)
			return -1;
		*tn_prov_usage_field(u, i) = strtoll(v, NULL, 10);
	}
	return 0;
}

/* Set the counters of tenant to u: replace (all) or add (only where
 * none are: a tenant made before the counters, or by hand). */
static int tn_prov_usage_store(struct tn_prov_op *op, const char *tenant_dn,
			       const struct tn_prov_usage *u, int how)
{
	struct tn_prov_mods mods = { NULL, 0 };
	char *diag = NULL, num[32];
	int rc;

	for (size_t i = 0; tn_prov_counter_attrs[i] != NULL; i++) {
		snprintf(num, sizeof(num), "%lld",
			 (long long)*tn_prov_usage_field((struct tn_prov_usage *)u, i));
		tn_prov_mods_add1(&mods, how, tn_prov_counter_attrs[i], num);
	}
	rc = tn_prov_write(op, TN_PROV_WRITE_MODIFY, tenant_dn, mods.mods, NULL, &diag);
	ldap_memfree(diag);
	tn_prov_mods_free(&mods);
	return rc;
}

/* Add d to the counters of tenant; *after_r: the counters as this
 * change left them. Counters missing: counted and set first. */
static enum tn_prov_status tn_prov_usage_apply(struct tn_prov_op *op, const char *tenant,
					       const struct tn_prov_usage *d,
					       struct tn_prov_usage *after_r)
{
	char *dn = tn_prov_dn(op->p, NULL, "tnTenantId", tenant), *diag = NULL, num[32];
	enum tn_prov_status st = TN_PROV_OK;
	struct tn_prov_usage counted;
	int rc = LDAP_SUCCESS;

	for (int attempt = 0; attempt < 3; attempt++) {
		struct tn_prov_mods mods = { NULL, 0 };
		json_t *after = NULL;

		for (size_t i = 0; tn_prov_counter_attrs[i] != NULL; i++) {
			int64_t v = *tn_prov_usage_field((struct tn_prov_usage *)d, i);

			if (v == 0 && i > 0)	/* the first always: the post-read */
				continue;
			snprintf(num, sizeof(num), "%lld", (long long)v);
			tn_prov_mods_add1(&mods, LDAP_MOD_INCREMENT, tn_prov_counter_attrs[i], num);
		}
		rc = tn_prov_modify_read(op, dn, mods.mods, tn_prov_counter_attrs, &after, &diag);
		tn_prov_mods_free(&mods);
		if (rc == LDAP_SUCCESS) {
			if (tn_prov_usage_from_raw_strings(after, after_r) < 0)
				rc = LDAP_NO_SUCH_ATTRIBUTE;
		}
		json_decref(after);
		if (rc != LDAP_NO_SUCH_ATTRIBUTE)
			break;
		/* a tenant without counters: count, add them (a racing writer
		 * doing the same makes ours fail: then increment again) */
		ldap_memfree(diag);
		diag = NULL;
		if ((st = tn_prov_usage_count(op, tenant, &counted)) != TN_PROV_OK)
			break;
		rc = tn_prov_usage_store(op, dn, &counted, LDAP_MOD_ADD);
		if (rc != LDAP_SUCCESS && rc != LDAP_TYPE_OR_VALUE_EXISTS)
			break;
		tn_info("provisioning: tenant %s: plan counters set from its %lld mailboxes", tenant,
			(long long)counted.count);
		rc = LDAP_NO_SUCH_ATTRIBUTE;
	}
	if (st == TN_PROV_OK && rc != LDAP_SUCCESS)
		st = tn_prov_ldap_fail(op, rc, "plan counters", diag);
	ldap_memfree(diag);
	tn_mem_free(&dn);
	return st;
}

static bool tn_prov_plan_fits(const struct tn_prov_plan *plan, const struct tn_prov_usage *u)
{
	if (plan->max_mailboxes > 0 && u->count > plan->max_mailboxes)
		return false;
	if (plan->storage == 0 || plan->overcommit)
		return true;
	return u->unlimited_count == 0 && (plan->mailbox_default != 0 || u->default_count == 0) &&
		u->explicit_bytes + u->default_count * plan->mailbox_default <= plan->storage;
}

/* Give d back to tenant's counters after the write it was taken for
 * failed; the result of the operation is kept as it is. */
static void tn_prov_release(struct tn_prov_op *op, const char *tenant,
			    const struct tn_prov_usage *d)
{
	struct tn_prov_result *res = op->res;
	enum tn_prov_status status = res->status;
	char *message = res->message, *field = res->field;
	struct tn_prov_usage neg = { 0 }, after;

	if (tn_prov_usage_zero(d))
		return;
	res->message = res->field = NULL;
	tn_prov_usage_add(&neg, d, -1);
	if (tn_prov_usage_apply(op, tenant, &neg, &after) != TN_PROV_OK)
		tn_error("provisioning: tenant %s: a failed write's share of the plan counters "
			 "could not be given back (%s): they count %lld mailbox(es) too many "
			 "until recounted (tnctl tenant recount %s)", tenant,
			 res->message != NULL ? res->message : "?", (long long)d->count, tenant);
	tn_mem_free(&res->message);
	tn_mem_free(&res->field);
	res->message = message;
	res->field = field;
	res->status = status;
}

/*
 * Combining shares. Creates of one tenant that arrive together (a bulk
 * import sends many at once) would each cost slapd a write of the
 * tenant entry, and slapd commits writes one at a time: the counters
 * would halve the import's speed. So a writer queues its share; the
 * first one in (the leader) takes every share queued for that tenant,
 * sends their sum as one increment, and gives each share its place in
 * order: share i fits when the counters before the batch plus the
 * shares accepted before it plus its own fit its plan, exactly as if
 * they had been sent one by one in that order. Refused shares are given
 * back in one decrement. Meanwhile the next writers queue up behind.
 */
struct tn_prov_share_req {
	struct tn_prov_share_req *next;
	const char *tenant;
	struct tn_prov_usage d;
	struct tn_prov_plan plan;
	bool taken;			/* in a leader's batch */
	bool done;
	enum tn_prov_status st;		/* OK, UNPROCESSABLE (refused), or the batch's failure */
	struct tn_prov_usage after;	/* refused: the counters it would have made */
	char *message;			/* the batch's failure, for the others */
};

static struct tn_prov_combiner *tn_prov_combiner_of(struct tn_prov *p, const char *tenant)
{
	unsigned h = 5381;

	for (const char *s = tenant; *s != '\0'; s++)
		h = h * 33 + (unsigned char)*s;
	return &p->comb[h % TN_PROV_COMBINERS];
}

/* The leader's work: one increment for the batch, then the verdicts. */
static void tn_prov_share_batch(struct tn_prov_op *op, struct tn_prov_share_req *batch,
				const struct tn_prov_share_req *leader)
{
	struct tn_prov_usage sum = { 0 }, after, base, cur, refused = { 0 };
	const char *tenant = batch->tenant;
	enum tn_prov_status st;

	for (struct tn_prov_share_req *r = batch; r != NULL; r = r->next)
		tn_prov_usage_add(&sum, &r->d, 1);
	st = tn_prov_usage_apply(op, tenant, &sum, &after);
	if (st != TN_PROV_OK) {
		for (struct tn_prov_share_req *r = batch; r != NULL; r = r->next) {
			r->st = st;
			if (r != leader)	/* the leader's own is in op->res */
				r->message = tn_mem_strdup(op->res->message != NULL ?
							   op->res->message : "plan counters");
		}
		return;
	}
	base = after;
	tn_prov_usage_add(&base, &sum, -1);
	for (struct tn_prov_share_req *r = batch; r != NULL; r = r->next) {
		cur = base;
		tn_prov_usage_add(&cur, &r->d, 1);
		if (!tn_prov_usage_grows(&r->d) || tn_prov_plan_fits(&r->plan, &cur)) {
			r->st = TN_PROV_OK;
			base = cur;
		} else {
			r->st = TN_PROV_UNPROCESSABLE;
			r->after = cur;
			tn_prov_usage_add(&refused, &r->d, 1);
		}
	}
	tn_prov_release(op, tenant, &refused);
}

/* Take req->d from the counters of req->tenant, combined with the
 * shares other threads take at the same time. */
static enum tn_prov_status tn_prov_share_take(struct tn_prov_op *op,
					      struct tn_prov_share_req *req)
{
	struct tn_prov_combiner *c = tn_prov_combiner_of(op->p, req->tenant);
	struct tn_prov_share_req **pp, *batch, **btail;
	struct timespec ts;

	tn_time_deadline_timespec(op->deadline, &ts);
	pthread_mutex_lock(&c->mutex);
	for (pp = &c->head; *pp != NULL; pp = &(*pp)->next)
		;
	*pp = req;
	while (!req->done) {
		if (!req->taken && !c->busy) {
			/* lead: every queued share of this tenant, in order */
			batch = NULL;
			btail = &batch;
			for (pp = &c->head; *pp != NULL;) {
				struct tn_prov_share_req *r = *pp;

				if (strcmp(r->tenant, req->tenant) == 0) {
					*pp = r->next;
					r->next = NULL;
					r->taken = true;
					*btail = r;
					btail = &r->next;
				} else {
					pp = &r->next;
				}
			}
			c->busy = true;
			pthread_mutex_unlock(&c->mutex);
			tn_prov_share_batch(op, batch, req);
			pthread_mutex_lock(&c->mutex);
			for (struct tn_prov_share_req *r = batch; r != NULL; r = r->next)
				r->done = true;
			c->busy = false;
			pthread_cond_broadcast(&c->cond);
			break;
		}
		if (req->taken) {	/* a leader has it: bounded by its LDAP timeouts */
			pthread_cond_wait(&c->cond, &c->mutex);
			continue;
		}
		if (pthread_cond_timedwait(&c->cond, &c->mutex, &ts) != 0 && !req->taken &&
		    !req->done) {
			/* our deadline passed before a leader took us */
			for (pp = &c->head; *pp != req; pp = &(*pp)->next)
				;
			*pp = req->next;
			pthread_mutex_unlock(&c->mutex);
			return tn_prov_fail(op, TN_PROV_TEMPFAIL, NULL, "timed out waiting for "
					    "the plan counters of tenant %s", req->tenant);
		}
	}
	pthread_mutex_unlock(&c->mutex);
	if (req->message != NULL) {
		tn_prov_fail(op, req->st, NULL, "%s", req->message);
		tn_mem_free(&req->message);
	}
	return req->st;
}

/* Take d from tenant's counters; when d takes anything, the counters
 * after it must fit the plan of tenant_obj, else it is given back and
 * TN_PROV_UNPROCESSABLE names fields[0] (count) or fields[1] (quota).
 *
 * Counters are never corrected here: a count of the entries cannot see
 * the shares other writers hold for entries not written yet, so setting
 * the counters from it would let them past the limit. When the entries
 * say there would be room, the refusal says so and names the remedy
 * (tn_prov_recount(), with no writes in flight). */
static enum tn_prov_status tn_prov_reserve(struct tn_prov_op *op, const char *tenant,
					   json_t *tenant_obj, const struct tn_prov_usage *d,
					   const char *const fields[2])
{
	struct tn_prov_share_req req = { .tenant = tenant, .d = *d };
	struct tn_prov_usage counted;
	enum tn_prov_status st;
	char *message;

	if (tn_prov_usage_zero(d))
		return TN_PROV_OK;
	tn_prov_plan_of(tenant_obj, &req.plan);
	st = tn_prov_share_take(op, &req);
	if (st != TN_PROV_UNPROCESSABLE)
		return st;
	st = tn_prov_plan_check(op, tenant, &req.plan, &req.after, fields);
	if (tn_prov_usage_count(op, tenant, &counted) != TN_PROV_OK)
		return st;	/* the refusal stands; the count was a courtesy */
	tn_prov_usage_add(&counted, d, 1);
	if (!tn_prov_plan_fits(&req.plan, &counted))
		return st;
	tn_info("provisioning: tenant %s: plan counters say %lld mailboxes, its entries %lld "
		"(writes in flight, or counters off after a crash: tnctl tenant recount %s)",
		tenant, (long long)(req.after.count - d->count),
		(long long)(counted.count - d->count), tenant);
	message = tn_mem_printf("%s (the directory holds %lld live mailboxes now: other "
				"writes are in flight, or the plan counters are off and need a "
				"recount)", op->res->message, (long long)(counted.count - d->count));
	tn_mem_free(&op->res->message);
	op->res->message = message;
	return st;
}

static const char *const tn_prov_mailbox_fields_at_fault[2] = { NULL, "quota_bytes" };

/* --- after the write: invalidate, event, undo ------------------------------------------------ */

static void tn_prov_invalidate(struct tn_prov_op *op, enum tn_prov_kind kind, const char *key)
{
	const char *error = NULL;
	int ret;

	if (op->p->lookup == NULL)
		return;
	if (kind == TN_PROV_TENANT)
		ret = tn_lookup_invalidate_tenant(op->p->lookup, key, &error);
	else if (kind == TN_PROV_DOMAIN)
		ret = tn_lookup_invalidate_domain(op->p->lookup, key, &error);
	else
		ret = tn_lookup_invalidate_address(op->p->lookup, key, &error);
	if (ret < 0) {
		op->res->cache_stale = true;
		tn_warning("provisioning: %s %s written, but the cache was not invalidated "
			   "(lookups may answer from it until its entries expire): %s",
			   tn_prov_kind_name(kind), key, error);
	}
}

static json_t *tn_prov_actor(const struct tn_prov_op *op)
{
	return json_pack("{s:s,s:s}", "kind", op->ctx->actor_kind, "id", op->ctx->actor_id);
}

/* events.md data of a *.created event */
static json_t *tn_prov_created_data(const struct tn_prov_op *op, json_t *obj)
{
	json_t *data = json_object();

	for (const struct tn_prov_field *f = op->kd->fields; f->name != NULL; f++) {
		if ((f->flags & TN_PF_EVENT) != 0 || ((f->flags & TN_PF_KEY) != 0 && op->kd->event_key))
			json_object_set(data, f->name, json_object_get(obj, f->name));
	}
	json_object_set_new(data, "actor", tn_prov_actor(op));
	return data;
}

static json_t *tn_prov_event_data(const struct tn_prov_op *op, const char *key)
{
	json_t *data = json_object();

	if (op->kd->event_key)
		json_object_set_new(data, op->kd->fields[0].name, json_string(key));
	return data;
}

/* Undo the write of w; 0 when it is undone. */
static int tn_prov_undo(struct tn_prov_op *op, struct tn_prov_wr *w, bool created)
{
	struct tn_prov_mods undo = { NULL, 0 };
	const char *csn = w->now != NULL ? w->now->etag : NULL;
	char *diag = NULL;
	int rc;

	if (created) {
		rc = tn_prov_write(op, TN_PROV_WRITE_DELETE, w->now->dn, NULL, csn, &diag);
	} else {
		for (size_t i = 0; i < w->mods.n; i++) {
			const char *attr = w->mods.mods[i]->mod_type;
			json_t *old = json_object_get(w->old->raw, attr);
			char **vals = NULL;

			if (json_array_size(old) > 0)
				vals = tn_prov_values(NULL, old);
			tn_prov_mods_add(&undo, LDAP_MOD_REPLACE, attr, vals);
		}
		rc = tn_prov_write(op, TN_PROV_WRITE_MODIFY, w->old->dn, undo.mods, csn, &diag);
		tn_prov_mods_free(&undo);
	}
	if (rc != LDAP_SUCCESS)
		tn_error("provisioning: cannot undo the change of %s %s after its event failed: "
			 "%s%s%s", op->kd->name, w->key, ldap_err2string(rc), diag ? ": " : "",
			 diag ? diag : "");
	ldap_memfree(diag);
	return rc == LDAP_SUCCESS ? 0 : -1;
}

static enum tn_prov_status tn_prov_commit(struct tn_prov_op *op, struct tn_prov_wr *w,
					  const char *type, json_t *data, bool created,
					  enum tn_prov_status ok)
{
	char id[TN_OUTBOX_ID_SIZE];
	const char *error = NULL;
	uint64_t seq = 0;
	int ret = 0;

	op->res->changed = true;
	tn_prov_set_object(op, w->now);
	tn_prov_invalidate(op, op->kd->kind, w->key);
	if (data != NULL)
		json_object_set_new(data, "actor", tn_prov_actor(op));
	if (type != NULL)
		ret = tn_outbox_append(op->p->outbox, type, w->tenant, data, id, &seq, &error);
	json_decref(data);
	if (ret == 0) {
		if (type != NULL) {
			op->res->event_id = tn_mem_strdup(id);
			op->res->event_sequence = seq;
		}
		return ok;
	}
	tn_error("provisioning: %s %s: event %s not recorded: %s", op->kd->name, w->key,
		 type, error);
	op->res->changed = false;
	if (tn_prov_undo(op, w, created) == 0) {
		tn_prov_invalidate(op, op->kd->kind, w->key);
		json_decref(op->res->object);
		op->res->object = NULL;
		tn_mem_free(&op->res->etag);
		return tn_prov_fail(op, TN_PROV_EVENT_FAILED, NULL, "the event could not be "
				    "recorded (%s): the change was undone, try again", error);
	}
	op->res->changed = true;
	return tn_prov_fail(op, TN_PROV_EVENT_LOST, NULL, "the change was made but its event "
			    "could not be recorded (%s) nor the change undone", error);
}

/* Write w->mods (modify, asserting the entryCSN read) and read back. */
static enum tn_prov_status tn_prov_write_back(struct tn_prov_op *op, struct tn_prov_wr *w,
					      int what, const char *dn, const char *csn)
{
	char *diag = NULL;
	int rc = tn_prov_write(op, what, dn, w->mods.mods, csn, &diag);
	enum tn_prov_status st;

	if (rc != LDAP_SUCCESS) {
		st = tn_prov_ldap_fail(op, rc, what == TN_PROV_WRITE_ADD ? "add" : "modify", diag);
		ldap_memfree(diag);
		if (st == TN_PROV_TEMPFAIL && op->write_sent) {
			tn_prov_invalidate(op, op->kd->kind, w->key);
			tn_prov_fail(op, st, NULL, "%s (the write was sent: its outcome is "
				     "unknown; read the %s before trying again)",
				     op->res->message, op->kd->name);
		}
		return st;
	}
	ldap_memfree(diag);
	st = tn_prov_fetch_dn(op, dn, &w->now);
	if (st != TN_PROV_OK)
		tn_prov_invalidate(op, op->kd->kind, w->key);
	return st;
}

/* Forget what a step read and wrote (the input stays). */
static void tn_prov_wr_reset(struct tn_prov_wr *w)
{
	json_decref(w->changes);
	w->changes = NULL;
	tn_mem_free(&w->tenant);
	tn_prov_entry_free(&w->old);
	tn_prov_entry_free(&w->now);
	tn_prov_mods_free(&w->mods);
	memset(&w->share, 0, sizeof(w->share));
}

static void tn_prov_wr_clear(struct tn_prov_wr *w)
{
	tn_prov_wr_reset(w);
	json_decref(w->norm);
	w->norm = NULL;
}

/* Run a read-modify-write step; without an If-Match from the caller, a
 * change that another writer made between the read and the write (the
 * entryCSN assertion failed) is no reason to refuse: read again. */
static enum tn_prov_status tn_prov_run_rmw(struct tn_prov_op *op,
					   enum tn_prov_status (*step)(struct tn_prov_op *op,
								       void *arg),
					   struct tn_prov_wr *w)
{
	enum tn_prov_status st;

	for (unsigned tries = 0;; tries++) {
		st = tn_prov_run(op, step, w);
		if (st != TN_PROV_PRECONDITION || op->ctx->if_match != NULL ||
		    op->res->changed || tries >= 8 || tn_time_left_ms(op->deadline) <= 0)
			return st;
		tn_prov_wr_reset(w);
		tn_prov_result_clear(op->res);
	}
}

/* --- create ------------------------------------------------------------------------------------- */

/* Owner checks of a new object; w->tenant set. */
static enum tn_prov_status tn_prov_create_owner(struct tn_prov_op *op, struct tn_prov_wr *w,
						struct tn_prov_entry **tenant_r)
{
	const char *scope = op->ctx->tenant_scope;
	const char *given = json_string_value(json_object_get(w->norm, "tenant"));
	struct tn_prov_entry *dom = NULL;
	enum tn_prov_status st;

	if (op->kd->kind == TN_PROV_TENANT) {
		if (scope != NULL)
			return tn_prov_fail(op, TN_PROV_FORBIDDEN, NULL,
					    "a tenant's credential cannot create tenants");
		w->tenant = tn_mem_strdup(w->key);
		/* a read before the write, as for every other write: a server
		 * that stopped answering is found before anything is sent */
		st = tn_prov_fetch(op, w->key, tenant_r);
		if (st == TN_PROV_OK)
			return tn_prov_fail(op, TN_PROV_CONFLICT, "id", "id: tenant %s exists",
					    w->key);
		return st == TN_PROV_NOT_FOUND ? TN_PROV_OK : st;
	}
	if (op->kd->kind == TN_PROV_DOMAIN) {
		if (given == NULL && scope == NULL)
			return tn_prov_fail(op, TN_PROV_BAD_INPUT, "tenant", "tenant: missing");
		if (given != NULL && scope != NULL && strcasecmp(given, scope) != 0)
			return tn_prov_fail(op, TN_PROV_NOT_FOUND, "tenant", "no such tenant: %s",
					    given);
		w->tenant = tn_mem_strdup(given != NULL ? given : scope);
		return tn_prov_live_tenant(op, w->tenant, tenant_r);
	}
	st = tn_prov_live_domain(op, w->key, &dom);
	if (st == TN_PROV_OK && given != NULL && strcmp(given, dom->tenant) != 0)
		st = tn_prov_fail(op, TN_PROV_UNPROCESSABLE, "tenant", "tenant: the domain of %s "
				  "belongs to another tenant", w->key);
	if (st == TN_PROV_OK) {
		w->tenant = tn_mem_strdup(dom->tenant);
		st = tn_prov_live_tenant(op, w->tenant, tenant_r);
	}
	tn_prov_entry_free(&dom);
	return st;
}

static void tn_prov_create_mods(struct tn_prov_op *op, struct tn_prov_wr *w)
{
	const char *status = json_string_value(json_object_get(w->norm, "status"));
	char *now = tn_prov_input_gentime(op->now_ms);
	const char *name;
	json_t *v;

	tn_prov_mods_add1(&w->mods, LDAP_MOD_ADD, "objectClass", op->kd->objectclass);
	json_object_foreach(w->norm, name, v) {
		const struct tn_prov_field *f = tn_prov_field_find(op->kd, name);

		if (f->attr != NULL && !json_is_null(v) && (f->flags & TN_PF_STATUSF) == 0)
			tn_prov_mods_add(&w->mods, LDAP_MOD_ADD, f->attr, tn_prov_values(f, v));
	}
	tn_prov_mods_add1(&w->mods, LDAP_MOD_ADD, "tnStatus", status != NULL ? status : "active");
	tn_prov_mods_add1(&w->mods, LDAP_MOD_ADD, "tnStatusTime", now);
	v = json_object_get(w->norm, "status_reason");
	if (json_is_string(v))
		tn_prov_mods_add1(&w->mods, LDAP_MOD_ADD, "tnStatusReason", json_string_value(v));
	for (size_t i = 0; op->kd->kind == TN_PROV_TENANT && tn_prov_counter_attrs[i] != NULL; i++)
		tn_prov_mods_add1(&w->mods, LDAP_MOD_ADD, tn_prov_counter_attrs[i], "0");
	tn_mem_free(&now);
}

static enum tn_prov_status tn_prov_create_step(struct tn_prov_op *op, void *arg)
{
	struct tn_prov_wr *w = arg;
	struct tn_prov_entry *tenant = NULL;
	enum tn_prov_status st = tn_prov_create_owner(op, w, &tenant);
	char *dn = NULL, type[64];

	struct tn_prov_usage share;

	if (st == TN_PROV_OK)
		st = tn_prov_lock_key(op, w->key);
	if (st == TN_PROV_OK && op->kd->kind == TN_PROV_MAILBOX) {
		tn_prov_usage_of(json_object_get(w->norm, "quota_bytes"), 1, &share);
		st = tn_prov_reserve(op, w->tenant, tenant->obj, &share,
				     tn_prov_mailbox_fields_at_fault);
		if (st == TN_PROV_OK)
			w->share = share;
	}
	if (st == TN_PROV_OK) {
		dn = tn_prov_dn(op->p, op->kd->kind == TN_PROV_TENANT ? NULL : w->tenant,
				op->kd->key_attr, w->key);
		tn_prov_create_mods(op, w);
		st = tn_prov_write_back(op, w, TN_PROV_WRITE_ADD, dn, NULL);
		if (st != TN_PROV_OK && !op->broken)	/* refused, not lost */
			tn_prov_release(op, w->tenant, &w->share);
	}
	if (st == TN_PROV_OK && op->kd->event_prefix == NULL) {
		st = tn_prov_commit(op, w, NULL, NULL, true, TN_PROV_CREATED);
	} else if (st == TN_PROV_OK) {
		snprintf(type, sizeof(type), "%s.created", op->kd->event_prefix);
		st = tn_prov_commit(op, w, type, tn_prov_created_data(op, w->now->obj), true,
				    TN_PROV_CREATED);
	}
	if (st == TN_PROV_EVENT_FAILED)
		tn_prov_release(op, w->tenant, &w->share);
	tn_prov_entry_free(&tenant);
	tn_mem_free(&dn);
	return st;
}

enum tn_prov_status tn_prov_create_object(struct tn_prov *p, const struct tn_prov_ctx *ctx,
					  enum tn_prov_kind kind, json_t *in,
					  struct tn_prov_result *res)
{
	struct tn_prov_wr w = { 0 };
	struct tn_prov_op op;
	enum tn_prov_status st;
	const char *key, *why;
	char *self = NULL;

	tn_prov_op_begin(&op, p, ctx, kind, res);
	key = json_string_value(json_object_get(in, op.kd->fields[0].name));
	if (key != NULL && tn_prov_input_address(key, &self, &why) < 0)
		self = NULL;	/* the key's own check names the problem */
	st = tn_prov_parse(&op, in, TN_PF_CREATE, self, &w.norm);
	if (st == TN_PROV_OK)
		st = tn_prov_required(&op, w.norm);
	if (st == TN_PROV_OK) {
		w.key = json_string_value(json_object_get(w.norm, op.kd->fields[0].name));
		st = tn_prov_run(&op, tn_prov_create_step, &w);
	}
	res->status = st;
	tn_prov_wr_clear(&w);
	tn_mem_free(&self);
	return st;
}

/* --- create, a batch at a time ----------------------------------------------------------- */

/*
 * tn_prov_create_batch(): the creates of a batch share what single
 * creates each pay for: the reads of their owners (once per batch), the
 * plan counters (one increment per tenant, verdicts in item order as
 * tn_prov_share_batch() gives them), one connection, and the events
 * (appended together so that the outbox commits them in few groups).
 * Each item still gets its own LDAP add, checks and result, exactly as
 * that many tn_prov_create_object() calls in item order would.
 */
struct tn_prov_batch {
	size_t n;
	struct tn_prov_wr *w;
	struct tn_prov_result *res;
	bool *pending;	/* passed the input checks: to be written */
};

static void tn_prov_batch_not_attempted(struct tn_prov_batch *b, size_t from,
					const struct tn_prov_result *why)
{
	for (size_t j = from; j < b->n; j++) {
		if (!b->pending[j])
			continue;
		b->pending[j] = false;
		tn_prov_result_clear(&b->res[j]);
		b->res[j].status = why->status;
		b->res[j].message = tn_mem_printf("not attempted: %s",
						  why->message != NULL ? why->message : "?");
	}
}

/* Events of the created items, appended from several threads at once so
 * that the outbox commits them in groups. */
struct tn_prov_evjob {
	struct tn_outbox *ob;
	const char *type, *tenant;
	json_t *data;
	char id[TN_OUTBOX_ID_SIZE];
	uint64_t seq;
	int ret;
	char *error;
};

struct tn_prov_evslice {
	struct tn_prov_evjob *jobs;
	size_t n, first, step;
};

static void *tn_prov_ev_thread(void *arg)
{
	struct tn_prov_evslice *sl = arg;
	const char *error = NULL;

	for (size_t i = sl->first; i < sl->n; i += sl->step) {
		struct tn_prov_evjob *j = &sl->jobs[i];

		j->ret = tn_outbox_append(j->ob, j->type, j->tenant, j->data, j->id, &j->seq,
					  &error);
		if (j->ret < 0)
			j->error = tn_mem_strdup(error != NULL ? error : "?");
	}
	return NULL;
}

#define TN_PROV_EV_THREADS 16

static void tn_prov_append_events(struct tn_prov_evjob *jobs, size_t n)
{
	struct tn_prov_evslice sl[TN_PROV_EV_THREADS];
	pthread_t th[TN_PROV_EV_THREADS];
	size_t t = n < TN_PROV_EV_THREADS ? n : TN_PROV_EV_THREADS;
	bool started[TN_PROV_EV_THREADS] = { false };

	for (size_t i = 0; i < t; i++) {
		sl[i] = (struct tn_prov_evslice){ jobs, n, i, t };
		started[i] = i > 0 && pthread_create(&th[i], NULL, tn_prov_ev_thread, &sl[i]) == 0;
	}
	for (size_t i = 0; i < t; i++) {	/* what no thread took: this one */
		if (!started[i])
			tn_prov_ev_thread(&sl[i]);
	}
	for (size_t i = 1; i < t; i++) {
		if (started[i])
			pthread_join(th[i], NULL);
	}
}

/* After the adds: invalidate, record the events, undo what has none. */
static void tn_prov_batch_commit(struct tn_prov_op *op, struct tn_prov_batch *b,
				 const bool *added)
{
	struct tn_prov_evjob *jobs = tn_mem_calloc(b->n, sizeof(*jobs));
	size_t nj = 0, *of = tn_mem_calloc(b->n, sizeof(*of));
	char type[64];

	snprintf(type, sizeof(type), "%s.created",
		 op->kd->event_prefix != NULL ? op->kd->event_prefix : "");
	for (size_t i = 0; i < b->n; i++) {
		if (!added[i])
			continue;
		op->res = &b->res[i];
		op->res->changed = true;
		tn_prov_set_object(op, b->w[i].now);
		tn_prov_invalidate(op, op->kd->kind, b->w[i].key);
		if (op->kd->event_prefix == NULL) {
			op->res->status = TN_PROV_CREATED;
			continue;
		}
		jobs[nj] = (struct tn_prov_evjob){ .ob = op->p->outbox, .type = type,
						   .tenant = b->w[i].tenant,
						   .data = tn_prov_created_data(op, b->w[i].now->obj) };
		json_object_set_new(jobs[nj].data, "actor", tn_prov_actor(op));
		of[nj++] = i;
	}
	tn_prov_append_events(jobs, nj);
	for (size_t k = 0; k < nj; k++) {
		struct tn_prov_wr *w = &b->w[of[k]];

		op->res = &b->res[of[k]];
		json_decref(jobs[k].data);
		if (jobs[k].ret == 0) {
			op->res->event_id = tn_mem_strdup(jobs[k].id);
			op->res->event_sequence = jobs[k].seq;
			op->res->status = TN_PROV_CREATED;
			continue;
		}
		tn_error("provisioning: %s %s: event %s not recorded: %s", op->kd->name, w->key,
			 type, jobs[k].error);
		op->res->changed = false;
		if (tn_prov_undo(op, w, true) == 0) {
			tn_prov_invalidate(op, op->kd->kind, w->key);
			json_decref(op->res->object);
			op->res->object = NULL;
			tn_mem_free(&op->res->etag);
			tn_prov_release(op, w->tenant, &w->share);
			tn_prov_fail(op, TN_PROV_EVENT_FAILED, NULL, "the event could not be "
				     "recorded (%s): the change was undone, try again", jobs[k].error);
		} else {
			op->res->changed = true;
			tn_prov_fail(op, TN_PROV_EVENT_LOST, NULL, "the change was made but its "
				     "event could not be recorded (%s) nor the change undone",
				     jobs[k].error);
		}
		tn_mem_free(&jobs[k].error);
	}
	tn_mem_free(&jobs);
	tn_mem_free(&of);
}

static void tn_prov_batch_exists(struct tn_prov_op *op, struct tn_prov_batch *b, size_t i)
{
	op->res = &b->res[i];
	tn_prov_fail(op, TN_PROV_CONFLICT, op->kd->fields[0].name,
		     "%s: already exists (here or under another tenant)", op->kd->fields[0].name);
	b->pending[i] = false;
}

/* A filter matching the keys of the items from..to-1 that are in which:
 * head "(|(key=v)...)" tail, the values escaped; NULL when none is. */
static char *tn_prov_batch_filter(struct tn_prov_op *op, const struct tn_prov_batch *b,
				  const bool *which, size_t from, size_t to, const char *head,
				  const char *tail)
{
	char *filter = tn_mem_printf("%s(|", head), *piece, *v;
	bool any = false;

	for (size_t i = from; i < to; i++) {
		if (!which[i])
			continue;
		v = tn_escape_filter_value(b->w[i].key, strlen(b->w[i].key));
		piece = tn_mem_printf("%s(%s=%s)", filter, op->kd->key_attr, v);
		tn_mem_free(&filter);
		tn_mem_free(&v);
		filter = piece;
		any = true;
	}
	piece = any ? tn_mem_printf("%s)%s", filter, tail) : NULL;
	tn_mem_free(&filter);
	return piece;
}

/* Keys that exist already, or twice in the batch: 409 before anything
 * is taken from the plan (a duplicate must not hold a place that a later
 * item of the batch could have had, as it would not in single creates).
 * One search per 100 keys; a key created meanwhile by someone else is
 * still refused by its add. 0, or -1 when the directory failed (st_r). */
static int tn_prov_batch_dups(struct tn_prov_op *op, struct tn_prov_batch *b,
			      enum tn_prov_status *st_r)
{
	const char *attr = op->kd->key_attr;
	char *attrs[] = { (char *)attr, NULL };

	for (size_t i = 0; i < b->n; i++) {
		for (size_t j = 0; b->pending[i] && j < i; j++) {
			if (b->w[j].key != NULL && strcmp(b->w[j].key, b->w[i].key) == 0 &&
			    b->res[j].status != TN_PROV_BAD_INPUT)
				tn_prov_batch_exists(op, b, i);
		}
	}
	for (size_t from = 0; from < b->n; from += 100) {
		size_t to = from + 100 < b->n ? from + 100 : b->n;
		char *filter = tn_prov_batch_filter(op, b, b->pending, from, to, "", "");
		LDAPMessage *res = NULL;

		if (filter != NULL && tn_prov_search(op, op->p->tenants_dn, LDAP_SCOPE_SUBTREE,
						     filter, attrs, &res, st_r) < 0) {
			tn_mem_free(&filter);
			return -1;
		}
		for (LDAPMessage *e = res != NULL ? ldap_first_entry(op->ld, res) : NULL; e != NULL;
		     e = ldap_next_entry(op->ld, e)) {
			struct berval **v = ldap_get_values_len(op->ld, e, attr);

			for (size_t i = from; v != NULL && v[0] != NULL && i < to; i++) {
				if (b->pending[i] && strlen(b->w[i].key) == v[0]->bv_len &&
				    strncasecmp(b->w[i].key, v[0]->bv_val, v[0]->bv_len) == 0)
					tn_prov_batch_exists(op, b, i);
			}
			ldap_value_free_len(v);
		}
		if (res != NULL)
			ldap_msgfree(res);
		tn_mem_free(&filter);
	}
	return 0;
}

/* Read back the entries added, one search per 100 (a single create reads
 * its entry back alone): their JSON and ETags for the results and the
 * events. An entry not found (removed meanwhile) fails its item. */
static void tn_prov_batch_read_back(struct tn_prov_op *op, struct tn_prov_batch *b,
				    bool *added)
{
	char **attrs = tn_prov_entry_attrs(op->kd);
	enum tn_prov_status st = TN_PROV_OK;

	for (size_t from = 0; from < b->n && !op->broken; from += 100) {
		size_t to = from + 100 < b->n ? from + 100 : b->n;
		char *head = tn_mem_printf("(&(objectClass=%s)", op->kd->objectclass);
		char *filter = tn_prov_batch_filter(op, b, added, from, to, head, ")");
		LDAPMessage *res = NULL;
		const char *why;

		tn_mem_free(&head);
		if (filter != NULL && tn_prov_search(op, op->p->tenants_dn, LDAP_SCOPE_SUBTREE,
						     filter, attrs, &res, &st) == 0) {
			for (LDAPMessage *e = ldap_first_entry(op->ld, res); e != NULL;
			     e = ldap_next_entry(op->ld, e)) {
				struct tn_prov_entry *ent = tn_prov_entry_from(op, op->kd, e, &why);

				for (size_t i = from; ent != NULL && i < to; i++) {
					if (added[i] && b->w[i].now == NULL &&
					    strcmp(ent->key, b->w[i].key) == 0 &&
					    strcmp(ent->tenant, b->w[i].tenant) == 0) {
						b->w[i].now = ent;
						ent = NULL;
					}
				}
				tn_prov_entry_free(&ent);
			}
		}
		if (res != NULL)
			ldap_msgfree(res);
		tn_mem_free(&filter);
	}
	for (size_t i = 0; i < b->n; i++) {
		if (!added[i] || b->w[i].now != NULL)
			continue;
		added[i] = false;
		op->res = &b->res[i];
		op->res->changed = true;	/* written, not seen again */
		tn_prov_invalidate(op, op->kd->kind, b->w[i].key);
		tn_prov_fail(op, TN_PROV_TEMPFAIL, NULL, "the %s was written but could not be "
			     "read back%s: read it before trying again", op->kd->name,
			     op->broken ? " (directory connection lost)" : "");
	}
	tn_mem_free(&attrs);
}

/* The plan counters of the batch's mailboxes: one increment per tenant. */
static void tn_prov_batch_shares(struct tn_prov_op *op, struct tn_prov_batch *b,
				 struct tn_prov_entry **tenants)
{
	struct tn_prov_share_req *reqs = tn_mem_calloc(b->n, sizeof(*reqs));
	struct tn_prov_result scratch = { 0 };
	bool *grouped = tn_mem_calloc(b->n, sizeof(*grouped));

	for (size_t i = 0; i < b->n; i++) {
		if (!b->pending[i])
			continue;
		reqs[i].tenant = b->w[i].tenant;
		tn_prov_usage_of(json_object_get(b->w[i].norm, "quota_bytes"), 1, &reqs[i].d);
		tn_prov_plan_of(tenants[i]->obj, &reqs[i].plan);
	}
	for (size_t i = 0; i < b->n; i++) {
		struct tn_prov_share_req *head = NULL, **tail = &head;

		if (!b->pending[i] || grouped[i])
			continue;
		for (size_t j = i; j < b->n; j++) {	/* this tenant's, in order */
			if (b->pending[j] && !grouped[j] && strcmp(b->w[j].tenant, b->w[i].tenant) == 0) {
				grouped[j] = true;
				*tail = &reqs[j];
				tail = &reqs[j].next;
			}
		}
		op->res = &scratch;
		tn_prov_share_batch(op, head, NULL);
		for (size_t j = i; j < b->n; j++) {
			struct tn_prov_share_req *r = &reqs[j];

			if (!b->pending[j] || strcmp(b->w[j].tenant, b->w[i].tenant) != 0 ||
			    r->tenant == NULL)
				continue;
			op->res = &b->res[j];
			if (r->st == TN_PROV_OK) {
				b->w[j].share = r->d;
			} else {
				if (r->st == TN_PROV_UNPROCESSABLE)
					tn_prov_plan_check(op, r->tenant, &r->plan, &r->after,
							   tn_prov_mailbox_fields_at_fault);
				else
					tn_prov_fail(op, r->st, NULL, "%s", r->message != NULL ?
						     r->message : "plan counters");
				b->pending[j] = false;
			}
			tn_mem_free(&r->message);
			r->tenant = NULL;	/* settled */
		}
		tn_prov_result_clear(&scratch);
	}
	tn_mem_free(&reqs);
	tn_mem_free(&grouped);
}

static enum tn_prov_status tn_prov_batch_step(struct tn_prov_op *op, void *arg)
{
	struct tn_prov_batch *b = arg;
	struct tn_prov_result *outer = op->res;
	struct tn_prov_entry **tenants = tn_mem_calloc(b->n, sizeof(*tenants));
	bool *added = tn_mem_calloc(b->n, sizeof(*added));
	struct tn_prov_bcache bc = { 0, NULL };
	enum tn_prov_status st = TN_PROV_OK;
	char *dn, *why = NULL, *diag = NULL;
	int rc;

	op->bcache = &bc;
	/* 1. owners, each read once; nothing is written yet, so a lost
	 * connection leaves every item to do (the runner may start again) */
	for (size_t i = 0; i < b->n && st == TN_PROV_OK; i++) {
		if (!b->pending[i])
			continue;
		op->res = &b->res[i];
		tn_prov_result_clear(op->res);
		tn_mem_free(&b->w[i].tenant);
		if (tn_prov_create_owner(op, &b->w[i], &tenants[i]) == TN_PROV_OK)
			continue;
		if (op->broken) {
			st = b->res[i].status;
			why = tn_mem_strdup(b->res[i].message != NULL ? b->res[i].message : "?");
		} else {
			b->pending[i] = false;
		}
	}
	/* 2. duplicates, then the plan counters of the mailboxes */
	if (st == TN_PROV_OK && op->kd->kind != TN_PROV_TENANT) {
		op->res = outer;
		if (tn_prov_batch_dups(op, b, &st) < 0) {
			why = tn_mem_strdup(outer->message != NULL ? outer->message : "?");
			tn_prov_result_clear(outer);
		}
	}
	if (st == TN_PROV_OK && op->kd->kind == TN_PROV_MAILBOX)
		tn_prov_batch_shares(op, b, tenants);
	/* 3. one add each, in order */
	for (size_t i = 0; i < b->n && st == TN_PROV_OK; i++) {
		if (!b->pending[i] || op->broken)
			continue;
		op->res = &b->res[i];
		dn = tn_prov_dn(op->p, op->kd->kind == TN_PROV_TENANT ? NULL : b->w[i].tenant,
				op->kd->key_attr, b->w[i].key);
		tn_prov_create_mods(op, &b->w[i]);
		rc = tn_prov_write(op, TN_PROV_WRITE_ADD, dn, b->w[i].mods.mods, NULL, &diag);
		if (rc != LDAP_SUCCESS)
			tn_prov_ldap_fail(op, rc, "add", diag);
		ldap_memfree(diag);
		diag = NULL;
		if (rc == LDAP_SUCCESS) {
			added[i] = true;
		} else if (!op->broken) {	/* refused, not lost */
			tn_prov_release(op, b->w[i].tenant, &b->w[i].share);
		} else {
			tn_prov_invalidate(op, op->kd->kind, b->w[i].key);
			tn_prov_fail(op, b->res[i].status, NULL, "%s (the write was sent: its "
				     "outcome is unknown; read the %s before trying again)",
				     b->res[i].message, op->kd->name);
			st = b->res[i].status;
			why = tn_mem_strdup(b->res[i].message != NULL ? b->res[i].message : "?");
			tn_prov_batch_not_attempted(b, i + 1, &b->res[i]);
			tn_warning("provisioning: a batch of %s creates was cut short (%s): the "
				   "plan counters may count the items not attempted until "
				   "recounted", op->kd->name, why);
		}
		b->pending[i] = false;
		tn_mem_free(&dn);
	}
	/* 4. read back, invalidation and events of what was added */
	tn_prov_batch_read_back(op, b, added);
	tn_prov_batch_commit(op, b, added);
	op->res = outer;
	op->bcache = NULL;
	tn_prov_bcache_clear(&bc);
	for (size_t i = 0; i < b->n; i++)
		tn_prov_entry_free(&tenants[i]);
	tn_mem_free(&tenants);
	tn_mem_free(&added);
	if (st != TN_PROV_OK)
		tn_prov_fail(op, st, NULL, "%s", why);
	tn_mem_free(&why);
	return st;
}

enum tn_prov_status tn_prov_create_batch(struct tn_prov *p, const struct tn_prov_ctx *ctx,
					 enum tn_prov_kind kind, json_t *const *items, size_t n,
					 struct tn_prov_result *res_v)
{
	struct tn_prov_batch b = { n, tn_mem_calloc(n, sizeof(*b.w)), res_v,
				   tn_mem_calloc(n, sizeof(bool)) };
	struct tn_prov_result outer = { 0 };
	struct tn_prov_op op;
	enum tn_prov_status st;
	const char *key, *why;
	char *self;

	tn_prov_op_begin(&op, p, ctx, kind, &outer);
	for (size_t i = 0; i < n; i++) {
		memset(&res_v[i], 0, sizeof(res_v[i]));
		op.res = &res_v[i];
		self = NULL;
		key = json_string_value(json_object_get(items[i], op.kd->fields[0].name));
		if (key != NULL && tn_prov_input_address(key, &self, &why) < 0)
			self = NULL;
		st = tn_prov_parse(&op, items[i], TN_PF_CREATE, self, &b.w[i].norm);
		if (st == TN_PROV_OK)
			st = tn_prov_required(&op, b.w[i].norm);
		if (st == TN_PROV_OK) {
			b.w[i].key = json_string_value(json_object_get(b.w[i].norm,
								      op.kd->fields[0].name));
			b.pending[i] = true;
		}
		res_v[i].status = st;
		tn_mem_free(&self);
	}
	op.res = &outer;
	st = tn_prov_run(&op, tn_prov_batch_step, &b);
	if (st != TN_PROV_OK) {
		/* the run never got a connection, or the step was cut short */
		for (size_t i = 0; i < n; i++) {
			if (b.pending[i]) {
				tn_prov_result_clear(&res_v[i]);
				res_v[i].status = st;
				res_v[i].message = tn_mem_printf("not attempted: %s", outer.message != NULL ?
								 outer.message : "?");
			}
		}
	}
	for (size_t i = 0; i < n; i++)
		tn_prov_wr_clear(&b.w[i]);
	tn_mem_free(&b.w);
	tn_mem_free(&b.pending);
	tn_prov_result_clear(&outer);
	return st;
}

/* --- modify ---------------------------------------------------------------------------------------- */

static enum tn_prov_status tn_prov_read_old(struct tn_prov_op *op, struct tn_prov_wr *w)
{
	enum tn_prov_status st = tn_prov_fetch(op, w->key, &w->old);

	if (st != TN_PROV_OK)
		return st;
	w->tenant = tn_mem_strdup(w->old->tenant);
	if (op->ctx->if_match != NULL &&
	    (w->old->etag == NULL || strcmp(op->ctx->if_match, w->old->etag) != 0))
		return tn_prov_fail(op, TN_PROV_PRECONDITION, NULL,
				    "the %s changed meanwhile (ETag does not match)", op->kd->name);
	return tn_prov_lock_key(op, w->key);
}

/* The modifications and events.md "changes" of w->norm against w->old. */
static void tn_prov_diff(struct tn_prov_op *op, struct tn_prov_wr *w)
{
	const char *name;
	json_t *v;

	w->changes = json_object();
	json_object_foreach(w->norm, name, v) {
		const struct tn_prov_field *f = tn_prov_field_find(op->kd, name);
		json_t *old = json_object_get(w->old->obj, name);

		if ((f->flags & TN_PF_OUT) != 0 && old != NULL && json_equal(old, v))
			continue;
		tn_prov_mods_add(&w->mods, LDAP_MOD_REPLACE, f->attr, tn_prov_values(f, v));
		if ((f->flags & TN_PF_EVENT) != 0)
			json_object_set_new(w->changes, name, json_pack("{s:O,s:O}", "old",
						old != NULL ? old : json_null(), "new", v));
		else if (f->type == TN_PF_PASSWORD || f->type == TN_PF_HASH)
			/* named, never shown: neither the hash nor the secret */
			json_object_set_new(w->changes, "password", json_pack("{s:n,s:n}",
						"old", "new"));
	}
}

static bool tn_prov_changed(const struct tn_prov_wr *w, const char *name)
{
	return json_object_get(w->changes, name) != NULL;
}

/* Plan limits a modify may break: a live mailbox's new quota takes its
 * difference from the counters (w->share); a tenant's new plan must fit
 * the counters as they are. */
static enum tn_prov_status tn_prov_modify_plan(struct tn_prov_op *op, struct tn_prov_wr *w)
{
	struct tn_prov_entry *tenant = NULL;
	enum tn_prov_status st = TN_PROV_OK;
	struct tn_prov_usage d, old_share, u;
	struct tn_prov_plan plan;
	json_t *obj;

	if (op->kd->kind == TN_PROV_MAILBOX && tn_prov_changed(w, "quota_bytes") &&
	    w->old->status != TN_STATUS_DELETED) {
		st = tn_prov_fetch_kind(op, TN_PROV_TENANT, w->tenant, &tenant);
		tn_prov_usage_of(json_object_get(w->norm, "quota_bytes"), 1, &d);
		tn_prov_usage_of(json_object_get(w->old->obj, "quota_bytes"), -1, &old_share);
		tn_prov_usage_add(&d, &old_share, 1);
		if (st == TN_PROV_OK)
			st = tn_prov_reserve(op, w->tenant, tenant->obj, &d,
					     tn_prov_mailbox_fields_at_fault);
		if (st == TN_PROV_OK)
			w->share = d;
	} else if (op->kd->kind == TN_PROV_TENANT &&
		   (tn_prov_changed(w, "storage_quota_bytes") ||
		    tn_prov_changed(w, "mailbox_quota_bytes") ||
		    tn_prov_changed(w, "max_mailboxes") || tn_prov_changed(w, "overcommit"))) {
		const char *fields[2] = { "max_mailboxes",
			tn_prov_changed(w, "storage_quota_bytes") ? "storage_quota_bytes" :
			tn_prov_changed(w, "mailbox_quota_bytes") ? "mailbox_quota_bytes" :
			"overcommit" };

		obj = json_deep_copy(w->old->obj);
		json_object_update(obj, w->norm);
		tn_prov_plan_of(obj, &plan);
		json_decref(obj);
		if (tn_prov_usage_from_raw(w->old->raw, &u) < 0)
			st = tn_prov_usage_count(op, w->tenant, &u);
		if (st == TN_PROV_OK && !tn_prov_plan_fits(&plan, &u))
			st = tn_prov_plan_check(op, w->tenant, &plan, &u, fields);
	}
	tn_prov_entry_free(&tenant);
	return st;
}

static enum tn_prov_status tn_prov_modify_step(struct tn_prov_op *op, void *arg)
{
	struct tn_prov_wr *w = arg;
	enum tn_prov_status st = tn_prov_read_old(op, w);
	char type[64];
	json_t *data;

	if (st != TN_PROV_OK)
		return st;
	tn_prov_diff(op, w);
	if (w->mods.n == 0) {		/* nothing changes: no write, no event */
		tn_prov_set_object(op, w->old);
		return TN_PROV_OK;
	}
	st = tn_prov_modify_plan(op, w);
	if (st == TN_PROV_OK) {
		st = tn_prov_write_back(op, w, TN_PROV_WRITE_MODIFY, w->old->dn, w->old->etag);
		if (st != TN_PROV_OK && !op->broken)	/* refused, not lost */
			tn_prov_release(op, w->tenant, &w->share);
	}
	if (st != TN_PROV_OK)
		return st;
	if (op->kd->event_prefix == NULL || json_object_size(w->changes) == 0)
		return tn_prov_commit(op, w, NULL, NULL, false, TN_PROV_OK);
	snprintf(type, sizeof(type), "%s.updated", op->kd->event_prefix);
	data = tn_prov_event_data(op, w->key);
	json_object_set(data, "changes", w->changes);
	st = tn_prov_commit(op, w, type, data, false, TN_PROV_OK);
	if (st == TN_PROV_EVENT_FAILED)
		tn_prov_release(op, w->tenant, &w->share);
	return st;
}

enum tn_prov_status tn_prov_modify(struct tn_prov *p, const struct tn_prov_ctx *ctx,
				   enum tn_prov_kind kind, const char *key, json_t *changes,
				   struct tn_prov_result *res)
{
	struct tn_prov_wr w = { 0 };
	struct tn_prov_op op;
	enum tn_prov_status st;
	char *norm = NULL;

	tn_prov_op_begin(&op, p, ctx, kind, res);
	st = tn_prov_normalize_key(&op, key, &norm);
	if (st == TN_PROV_OK)
		st = tn_prov_parse(&op, changes, TN_PF_MODIFY, norm, &w.norm);
	if (st == TN_PROV_OK) {
		w.key = norm;
		st = tn_prov_run_rmw(&op, tn_prov_modify_step, &w);
	}
	res->status = st;
	tn_prov_wr_clear(&w);
	tn_mem_free(&norm);
	return st;
}

/* --- suspend, resume, delete ------------------------------------------------------------------------ */

static const char *tn_prov_reason(const struct tn_prov_wr *w)
{
	return w->reason != NULL ? w->reason : "";
}

/* A restore (deleted -> active): within the grace period, its owners
 * alive, the plan still has room for a mailbox. */
static enum tn_prov_status tn_prov_restore_check(struct tn_prov_op *op, struct tn_prov_wr *w)
{
	struct tn_prov_entry *tenant = NULL, *dom = NULL;
	enum tn_prov_status st = TN_PROV_OK;

	if (op->now_ms >= w->old->status_ms + op->p->purge_grace_ms)
		return tn_prov_fail(op, TN_PROV_UNPROCESSABLE, "status", "the %s was deleted "
				    "before its grace period: it can only be purged", op->kd->name);
	if (op->kd->kind == TN_PROV_MAILBOX || op->kd->kind == TN_PROV_ALIAS)
		st = tn_prov_live_domain(op, w->key, &dom);
	if (st == TN_PROV_OK && op->kd->kind != TN_PROV_TENANT)
		st = tn_prov_live_tenant(op, w->tenant, &tenant);
	if (st == TN_PROV_OK && op->kd->kind == TN_PROV_MAILBOX) {
		struct tn_prov_usage share;

		tn_prov_usage_of(json_object_get(w->old->obj, "quota_bytes"), 1, &share);
		st = tn_prov_reserve(op, w->tenant, tenant->obj, &share,
				     (const char *const[2]){ "status", "status" });
		if (st == TN_PROV_OK)
			w->share = share;
	}
	tn_prov_entry_free(&tenant);
	tn_prov_entry_free(&dom);
	return st;
}

/* 1: write, 0: nothing to do, or a failure status (negated) */
static int tn_prov_transition(struct tn_prov_op *op, struct tn_prov_wr *w,
			      enum tn_prov_status *st_r)
{
	enum tn_status from = w->old->status;
	const char *old_reason = json_string_value(json_object_get(w->old->obj, "status_reason"));

	if (w->to == from && (w->to != TN_STATUS_SUSPENDED ||
			      strcmp(old_reason != NULL ? old_reason : "", tn_prov_reason(w)) == 0))
		return 0;
	if (from == TN_STATUS_DELETED && w->to == TN_STATUS_SUSPENDED) {
		*st_r = tn_prov_fail(op, TN_PROV_UNPROCESSABLE, "status", "the %s is deleted: "
				     "resume (restore) it first", op->kd->name);
		return -1;
	}
	if (from == TN_STATUS_DELETED && (*st_r = tn_prov_restore_check(op, w)) != TN_PROV_OK)
		return -1;
	return 1;
}

static json_t *tn_prov_status_data(struct tn_prov_op *op, struct tn_prov_wr *w)
{
	json_t *data = tn_prov_event_data(op, w->key);
	char *purge;

	json_object_set_new(data, "previous_status", json_string(tn_status_name(w->old->status)));
	json_object_set_new(data, "reason", json_string(tn_prov_reason(w)));
	if (w->to == TN_STATUS_DELETED) {
		purge = tn_prov_input_rfc3339(op->now_ms + op->p->purge_grace_ms);
		json_object_set_new(data, "purge_after", json_string(purge));
		tn_mem_free(&purge);
	}
	return data;
}

static enum tn_prov_status tn_prov_status_step(struct tn_prov_op *op, void *arg)
{
	static const char *const verbs[] = { "resumed", "suspended", "deleted" };
	struct tn_prov_usage gone = { 0 };
	struct tn_prov_wr *w = arg;
	enum tn_prov_status st = tn_prov_read_old(op, w);
	char *now, type[64];
	int t;

	if (st != TN_PROV_OK)
		return st;
	if ((t = tn_prov_transition(op, w, &st)) <= 0) {
		if (t == 0)
			tn_prov_set_object(op, w->old);
		return t == 0 ? TN_PROV_OK : st;
	}
	now = tn_prov_input_gentime(op->now_ms);
	tn_prov_mods_add1(&w->mods, LDAP_MOD_REPLACE, "tnStatus", tn_status_name(w->to));
	tn_prov_mods_add1(&w->mods, LDAP_MOD_REPLACE, "tnStatusReason",
			  *tn_prov_reason(w) != '\0' ? w->reason : NULL);
	tn_prov_mods_add1(&w->mods, LDAP_MOD_REPLACE, "tnStatusTime", now);
	tn_mem_free(&now);
	st = tn_prov_write_back(op, w, TN_PROV_WRITE_MODIFY, w->old->dn, w->old->etag);
	if (st != TN_PROV_OK) {
		if (!op->broken)	/* refused, not lost */
			tn_prov_release(op, w->tenant, &w->share);
		return st;
	}
	/* a mailbox deleted: its share goes back once the delete stands */
	if (op->kd->kind == TN_PROV_MAILBOX && w->to == TN_STATUS_DELETED)
		tn_prov_usage_of(json_object_get(w->old->obj, "quota_bytes"), 1, &gone);
	if (op->kd->event_prefix == NULL) {
		st = tn_prov_commit(op, w, NULL, NULL, false, TN_PROV_OK);
	} else {
		snprintf(type, sizeof(type), "%s.%s", op->kd->event_prefix, verbs[w->to]);
		st = tn_prov_commit(op, w, type, tn_prov_status_data(op, w), false, TN_PROV_OK);
	}
	if (st == TN_PROV_EVENT_FAILED)
		tn_prov_release(op, w->tenant, &w->share);
	else
		tn_prov_release(op, w->tenant, &gone);
	return st;
}

enum tn_prov_status tn_prov_set_status(struct tn_prov *p, const struct tn_prov_ctx *ctx,
				       enum tn_prov_kind kind, const char *key,
				       enum tn_status to, const char *reason,
				       struct tn_prov_result *res)
{
	struct tn_prov_wr w = { .to = to, .reason = reason };
	struct tn_prov_op op;
	enum tn_prov_status st;
	const char *why;
	char *norm = NULL;

	tn_prov_op_begin(&op, p, ctx, kind, res);
	st = tn_prov_normalize_key(&op, key, &norm);
	if (st == TN_PROV_OK && reason != NULL && *reason != '\0' &&
	    tn_prov_input_text(reason, strlen(reason), 1024, &why) < 0)
		st = tn_prov_fail(&op, TN_PROV_BAD_INPUT, "reason", "reason: %s", why);
	if (st == TN_PROV_OK) {
		w.key = norm;
		st = tn_prov_run_rmw(&op, tn_prov_status_step, &w);
	}
	res->status = st;
	tn_prov_wr_clear(&w);
	tn_mem_free(&norm);
	return st;
}

/* --- purge ----------------------------------------------------------------------------------------------- */

/* Delete the entries below a tenant (all, or a domain's addresses). */
static enum tn_prov_status tn_prov_purge_children(struct tn_prov_op *op, struct tn_prov_wr *w,
						  const char *domain)
{
	static char *attrs[] = { "objectClass", "mail", "tnDomain", "tnStatus", "tnQuotaBytes",
				 NULL };
	char *base = tn_prov_dn(op->p, NULL, "tnTenantId", w->tenant), *diag = NULL;
	enum tn_prov_status st = TN_PROV_OK;
	struct tn_prov_usage live = { 0 };
	LDAPMessage *res = NULL;
	int rc = LDAP_SUCCESS;

	if (tn_prov_search(op, base, LDAP_SCOPE_ONELEVEL, "(objectClass=*)", attrs, &res,
			   &st) == 0) {
		for (LDAPMessage *e = ldap_first_entry(op->ld, res); e != NULL && rc == LDAP_SUCCESS;
		     e = ldap_next_entry(op->ld, e)) {
			struct berval **mail = ldap_get_values_len(op->ld, e, "mail");
			struct berval **dom = ldap_get_values_len(op->ld, e, "tnDomain");
			char *m = mail != NULL && mail[0] != NULL ?
				tn_mem_strndup(mail[0]->bv_val, mail[0]->bv_len) : NULL;
			char *d = dom != NULL && dom[0] != NULL ?
				tn_mem_strndup(dom[0]->bv_val, dom[0]->bv_len) : NULL;
			const char *at = m != NULL ? strrchr(m, '@') : NULL;

			if (domain == NULL || (at != NULL && strcasecmp(at + 1, domain) == 0)) {
				char *dn = ldap_get_dn(op->ld, e);

				rc = tn_prov_write(op, TN_PROV_WRITE_DELETE, dn, NULL, NULL, &diag);
				if (rc == LDAP_SUCCESS && domain != NULL)
					tn_prov_usage_live(op->ld, e, &live);
				if (rc == LDAP_SUCCESS || rc == LDAP_NO_SUCH_OBJECT) {
					rc = LDAP_SUCCESS;
					tn_prov_invalidate(op, m != NULL ? TN_PROV_MAILBOX :
							   TN_PROV_DOMAIN, m != NULL ? m : d);
				}
				ldap_memfree(dn);
			}
			ldap_value_free_len(mail);
			ldap_value_free_len(dom);
			tn_mem_free(&m);
			tn_mem_free(&d);
		}
		if (rc != LDAP_SUCCESS)
			st = tn_prov_ldap_fail(op, rc, "purge", diag);
	}
	/* a domain's live mailboxes purged with it: their shares go back */
	if (!op->broken)
		tn_prov_release(op, w->tenant, &live);
	ldap_memfree(diag);
	if (res != NULL)
		ldap_msgfree(res);
	tn_mem_free(&base);
	return st;
}

static enum tn_prov_status tn_prov_purge_step(struct tn_prov_op *op, void *arg)
{
	struct tn_prov_wr *w = arg;
	enum tn_prov_status st = tn_prov_read_old(op, w);
	char *diag = NULL;
	int rc;

	if (st != TN_PROV_OK)
		return st;
	if (w->old->status != TN_STATUS_DELETED)
		return tn_prov_fail(op, TN_PROV_UNPROCESSABLE, "status", "only a deleted %s can "
				    "be purged", op->kd->name);
	if (op->now_ms < w->old->status_ms + op->p->purge_grace_ms)
		return tn_prov_fail(op, TN_PROV_UNPROCESSABLE, "purge_after", "purge_after has "
				    "not come yet (%s)", json_string_value(
					    json_object_get(w->old->obj, "purge_after")));
	if (op->kd->kind == TN_PROV_TENANT || op->kd->kind == TN_PROV_DOMAIN)
		st = tn_prov_purge_children(op, w, op->kd->kind == TN_PROV_DOMAIN ? w->key : NULL);
	if (st != TN_PROV_OK)
		return st;
	rc = tn_prov_write(op, TN_PROV_WRITE_DELETE, w->old->dn, NULL, w->old->etag, &diag);
	if (rc != LDAP_SUCCESS)
		st = tn_prov_ldap_fail(op, rc, "purge", diag);
	ldap_memfree(diag);
	tn_prov_invalidate(op, op->kd->kind, w->key);
	op->res->changed = rc == LDAP_SUCCESS;
	return st;
}

/* Run step on the object of kind named key (normalised first). */
static enum tn_prov_status tn_prov_run_keyed(struct tn_prov *p, const struct tn_prov_ctx *ctx,
					     enum tn_prov_kind kind, const char *key,
					     enum tn_prov_status (*step)(struct tn_prov_op *op,
									 void *arg),
					     struct tn_prov_result *res)
{
	struct tn_prov_wr w = { 0 };
	struct tn_prov_op op;
	enum tn_prov_status st;
	char *norm = NULL;

	tn_prov_op_begin(&op, p, ctx, kind, res);
	st = tn_prov_normalize_key(&op, key, &norm);
	if (st == TN_PROV_OK) {
		w.key = norm;
		st = tn_prov_run(&op, step, &w);
	}
	res->status = st;
	tn_prov_wr_clear(&w);
	tn_mem_free(&norm);
	return st;
}

enum tn_prov_status tn_prov_purge(struct tn_prov *p, const struct tn_prov_ctx *ctx,
				  enum tn_prov_kind kind, const char *key,
				  struct tn_prov_result *res)
{
	return tn_prov_run_keyed(p, ctx, kind, key, tn_prov_purge_step, res);
}

/* --- recount ---------------------------------------------------------------------------------------------- */

static enum tn_prov_status tn_prov_recount_step(struct tn_prov_op *op, void *arg)
{
	struct tn_prov_wr *w = arg;
	enum tn_prov_status st = tn_prov_read_old(op, w);
	struct tn_prov_usage counted, had;
	int rc;

	if (st == TN_PROV_OK)
		st = tn_prov_usage_count(op, w->key, &counted);
	if (st != TN_PROV_OK)
		return st;
	rc = tn_prov_usage_store(op, w->old->dn, &counted, LDAP_MOD_REPLACE);
	if (rc != LDAP_SUCCESS)
		return tn_prov_ldap_fail(op, rc, "plan counters", NULL);
	if (tn_prov_usage_from_raw(w->old->raw, &had) < 0 ||
	    memcmp(&had, &counted, sizeof(had)) != 0)
		tn_warning("provisioning: tenant %s: plan counters recounted: %lld mailboxes "
			   "(they said %lld)", w->key, (long long)counted.count,
			   tn_prov_usage_from_raw(w->old->raw, &had) < 0 ? -1LL :
			   (long long)had.count);
	op->res->changed = true;
	st = tn_prov_fetch_dn(op, w->old->dn, &w->now);
	if (st == TN_PROV_OK)
		tn_prov_set_object(op, w->now);
	return st;
}

enum tn_prov_status tn_prov_recount(struct tn_prov *p, const struct tn_prov_ctx *ctx,
				    const char *tenant, struct tn_prov_result *res)
{
	return tn_prov_run_keyed(p, ctx, TN_PROV_TENANT, tenant, tn_prov_recount_step, res);
}
