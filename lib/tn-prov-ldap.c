/*++
 * NAME
 *	tn-prov-ldap 3
 * SUMMARY
 *	provisioning: LDAP reads and writes, entries to JSON and back
 * DESCRIPTION
 *	Every call is bounded by the operation's deadline (and
 *	ldap_timeout per call). Writes are sent asynchronously and waited
 *	for with that bound: a write whose answer does not come in time is
 *	abandoned and its connection closed, and the caller is told that
 *	the write was sent (op->write_sent), since slapd may still apply it.
 *--*/
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "tn-escape.h"
#include "tn-log.h"
#include "tn-mem.h"
#include "tn-prov-input.h"
#include "tn-prov-int.h"

static struct timeval tn_prov_tv(const struct tn_prov_op *op)
{
	tn_msec_t left = tn_time_left_ms(op->deadline);
	struct timeval tv;

	if (op->p->op_timeout > 0 && op->p->op_timeout < left)
		left = op->p->op_timeout;
	if (left < 1)
		left = 1;
	tv.tv_sec = left / 1000;
	tv.tv_usec = (left % 1000) * 1000;
	return tv;
}

static void tn_prov_break(struct tn_prov_op *op, const char *why)
{
	op->broken = true;
	tn_mem_free(&op->broken_why);
	op->broken_why = tn_mem_strdup(why);
}

static bool tn_prov_busy_error(int rc)
{
	return rc == LDAP_BUSY || rc == LDAP_UNAVAILABLE || rc == LDAP_REFERRAL ||
		rc == LDAP_UNWILLING_TO_PERFORM || rc == LDAP_ADMINLIMIT_EXCEEDED;
}

enum tn_prov_status tn_prov_ldap_fail(struct tn_prov_op *op, int rc, const char *what,
				      const char *diag)
{
	const char *uri = tn_dir_conn_uri(op->p->dir, op->conn);
	const char *d = diag != NULL && *diag != '\0' ? diag : NULL;

	if (tn_dir_transport_error(rc) || tn_prov_busy_error(rc)) {
		char *why = tn_mem_printf("%s: %s: %s", uri, what, ldap_err2string(rc));

		if (tn_dir_transport_error(rc))
			tn_prov_break(op, why);
		tn_prov_fail(op, TN_PROV_TEMPFAIL, NULL, "directory unavailable: %s%s%s%s", why,
			     rc == LDAP_REFERRAL ? " (a read-only replica: point prov_ldap_uri "
			     "at the provider)" : "", d != NULL ? ": " : "", d != NULL ? d : "");
		tn_mem_free(&why);
		return TN_PROV_TEMPFAIL;
	}
	switch (rc) {
	case LDAP_ALREADY_EXISTS:
	case LDAP_CONSTRAINT_VIOLATION:
		/* slapo-unique's text shows its search filter: for the log only */
		tn_debug("provisioning: %s: %s: %s%s%s", uri, what, ldap_err2string(rc),
			 d != NULL ? ": " : "", d != NULL ? d : "");
		return tn_prov_fail(op, TN_PROV_CONFLICT, op->kd->fields[0].name,
				    "%s: already exists (here or under another tenant)",
				    op->kd->fields[0].name);
	case LDAP_ASSERTION_FAILED:
		return tn_prov_fail(op, TN_PROV_PRECONDITION, NULL,
				    "the object changed meanwhile (ETag does not match)");
	case LDAP_NO_SUCH_OBJECT:
		return tn_prov_fail(op, TN_PROV_NOT_FOUND, NULL, "no such %s", op->kd->name);
	case LDAP_SIZELIMIT_EXCEEDED:
		tn_error("provisioning: %s: %s: size limit: give the provisioning account "
			 "'limits ... size=unlimited' (ldap-schema/README.md)", uri, what);
		break;
	default:
		tn_error("provisioning: %s: %s refused: %s%s%s", uri, what, ldap_err2string(rc),
			 d != NULL ? ": " : "", d != NULL ? d : "");
		break;
	}
	return tn_prov_fail(op, TN_PROV_INTERNAL, NULL, "directory refused %s: %s%s%s", what,
			    ldap_err2string(rc), d != NULL ? ": " : "", d != NULL ? d : "");
}

int tn_prov_search(struct tn_prov_op *op, const char *base, int scope, const char *filter,
		   char **attrs, LDAPMessage **res_r, enum tn_prov_status *st_r)
{
	struct timeval tv = tn_prov_tv(op);
	char *diag = NULL;
	int rc;

	*res_r = NULL;
	rc = ldap_search_ext_s(op->ld, base, scope, filter, attrs, 0, NULL, NULL, &tv,
			       LDAP_NO_LIMIT, res_r);
	if (rc == LDAP_SUCCESS)
		return 0;
	if (*res_r != NULL)
		ldap_msgfree(*res_r);
	*res_r = NULL;
	if (rc == LDAP_NO_SUCH_OBJECT) {
		*st_r = TN_PROV_NOT_FOUND;
		return -1;
	}
	ldap_get_option(op->ld, LDAP_OPT_DIAGNOSTIC_MESSAGE, &diag);
	*st_r = tn_prov_ldap_fail(op, rc, "search", diag);
	ldap_memfree(diag);
	return -1;
}

static int tn_prov_send(struct tn_prov_op *op, int what, const char *dn, LDAPMod **mods,
			LDAPControl **ctrls, int *msgid_r)
{
	switch (what) {
	case TN_PROV_WRITE_ADD:
		return ldap_add_ext(op->ld, dn, mods, ctrls, NULL, msgid_r);
	case TN_PROV_WRITE_MODIFY:
		return ldap_modify_ext(op->ld, dn, mods, ctrls, NULL, msgid_r);
	default:
		return ldap_delete_ext(op->ld, dn, ctrls, NULL, msgid_r);
	}
}

static int tn_prov_wait_ctrls(struct tn_prov_op *op, int msgid, char **diag_r,
			      LDAPControl ***ctrls_r)
{
	struct timeval tv = tn_prov_tv(op);
	LDAPMessage *msg = NULL;
	int rc, err = LDAP_OTHER;

	rc = ldap_result(op->ld, msgid, LDAP_MSG_ALL, &tv, &msg);
	if (rc == 0) {
		ldap_abandon_ext(op->ld, msgid, NULL, NULL);
		return LDAP_TIMEOUT;
	}
	if (rc < 0) {
		ldap_get_option(op->ld, LDAP_OPT_RESULT_CODE, &err);
		return err != LDAP_SUCCESS ? err : LDAP_SERVER_DOWN;
	}
	rc = ldap_parse_result(op->ld, msg, &err, NULL, diag_r, NULL, ctrls_r, 1);
	return rc == LDAP_SUCCESS ? err : rc;
}

static int tn_prov_wait(struct tn_prov_op *op, int msgid, char **diag_r)
{
	return tn_prov_wait_ctrls(op, msgid, diag_r, NULL);
}

/* The post-read control's entry (RFC 4527: a SearchResultEntry) as
 * attribute -> first value. */
static json_t *tn_prov_postread_values(LDAPControl **ctrls)
{
	LDAPControl *c = ldap_control_find(LDAP_CONTROL_POST_READ, ctrls, NULL);
	BerElement *ber;
	struct berval bv;
	json_t *out;

	if (c == NULL || (ber = ber_init(&c->ldctl_value)) == NULL)
		return NULL;
	out = json_object();
	if (ber_scanf(ber, "{m{" /*}}*/, &bv) != LBER_ERROR) {
		while (ber_scanf(ber, "{m" /*}*/, &bv) != LBER_ERROR) {
			BerVarray vals = NULL;
			char *name;

			if (ber_scanf(ber, "[W]", &vals) == LBER_ERROR || vals == NULL)
				break;
			name = tn_mem_strndup(bv.bv_val, bv.bv_len);
			if (vals[0].bv_val != NULL)
				json_object_set_new(out, name, json_stringn(vals[0].bv_val,
									    vals[0].bv_len));
			tn_mem_free(&name);
			ber_bvarray_free(vals);
		}
	}
	ber_free(ber, 1);
	return out;
}

int tn_prov_modify_read(struct tn_prov_op *op, const char *dn, LDAPMod **mods,
			char **attrs, json_t **after_r, char **diag_r)
{
	LDAPControl *ctrl = NULL, *ctrls[2] = { NULL, NULL }, **got = NULL;
	BerElement *ber = ber_alloc_t(LBER_USE_DER);
	struct berval value = { 0, NULL };
	int rc, msgid = -1;

	*diag_r = NULL;
	*after_r = NULL;
	if (ber == NULL)
		return LDAP_NO_MEMORY;
	if (ber_printf(ber, "{v}", attrs) == -1 || ber_flatten2(ber, &value, 0) == -1) {
		ber_free(ber, 1);
		return LDAP_ENCODING_ERROR;
	}
	rc = ldap_control_create(LDAP_CONTROL_POST_READ, 1, &value, 1, &ctrl);
	ber_free(ber, 1);
	if (rc != LDAP_SUCCESS)
		return rc;
	ctrls[0] = ctrl;
	rc = tn_prov_send(op, TN_PROV_WRITE_MODIFY, dn, mods, ctrls, &msgid);
	ldap_control_free(ctrl);
	if (rc != LDAP_SUCCESS)
		return rc;
	op->write_sent = true;
	rc = tn_prov_wait_ctrls(op, msgid, diag_r, &got);
	if (rc == LDAP_SUCCESS && (*after_r = tn_prov_postread_values(got)) == NULL)
		rc = LDAP_CONTROL_NOT_FOUND;
	ldap_controls_free(got);
	return rc;
}

int tn_prov_write(struct tn_prov_op *op, int what, const char *dn, LDAPMod **mods,
		  const char *assert_csn, char **diag_r)
{
	LDAPControl *ctrl = NULL, *ctrls[2] = { NULL, NULL };
	int rc, msgid = -1;

	*diag_r = NULL;
	if (assert_csn != NULL) {
		char *v = tn_escape_filter_value(assert_csn, strlen(assert_csn));
		char *filter = tn_mem_printf("(entryCSN=%s)", v);

		rc = ldap_create_assertion_control(op->ld, filter, 1, &ctrl);
		tn_mem_free(&filter);
		tn_mem_free(&v);
		if (rc != LDAP_SUCCESS)
			return rc;
		ctrls[0] = ctrl;
	}
	rc = tn_prov_send(op, what, dn, mods, ctrl != NULL ? ctrls : NULL, &msgid);
	if (ctrl != NULL)
		ldap_control_free(ctrl);
	if (rc != LDAP_SUCCESS)
		return rc;
	op->write_sent = true;
	return tn_prov_wait(op, msgid, diag_r);
}

/* --- entries -------------------------------------------------------------- */

char **tn_prov_entry_attrs(const struct tn_prov_kind_desc *kd)
{
	size_t n = 0;
	char **attrs;

	for (const struct tn_prov_field *f = kd->fields; f->name != NULL; f++)
		n++;
	attrs = tn_mem_calloc(n + 3, sizeof(*attrs));
	n = 0;
	for (const struct tn_prov_field *f = kd->fields; f->name != NULL; f++) {
		if (f->attr != NULL)
			attrs[n++] = (char *)f->attr;
	}
	attrs[n++] = (char *)"objectClass";
	attrs[n++] = (char *)"entryCSN";
	return attrs;
}

static char *tn_prov_lower_dup(const struct berval *bv)
{
	char *s = tn_mem_strndup(bv->bv_val, bv->bv_len);

	for (char *c = s; *c != '\0'; c++) {
		if (*c >= 'A' && *c <= 'Z')
			*c = (char)(*c - 'A' + 'a');
	}
	return s;
}

static json_t *tn_prov_json_int(const struct berval *bv)
{
	char buf[24], *end;
	long long v;

	if (bv->bv_len == 0 || bv->bv_len >= sizeof(buf))
		return NULL;
	memcpy(buf, bv->bv_val, bv->bv_len);
	buf[bv->bv_len] = '\0';
	errno = 0;
	v = strtoll(buf, &end, 10);
	if (errno != 0 || *end != '\0' || v < 0)
		return NULL;
	return json_integer(v);
}

/* JSON of one field's values (vals non-empty); NULL when invalid. */
static json_t *tn_prov_field_json(struct tn_prov_entry *ent, const struct tn_prov_field *f,
				  struct berval **vals)
{
	char *s = NULL;
	json_t *j = NULL;
	int64_t ms;

	switch (f->type) {
	case TN_PF_COUNT:
		return tn_prov_json_int(vals[0]);
	case TN_PF_BOOL:
		return json_boolean(vals[0]->bv_len == 4 &&
				    strncasecmp(vals[0]->bv_val, "TRUE", 4) == 0);
	case TN_PF_TARGETS:
		j = json_array();
		for (size_t i = 0; vals[i] != NULL; i++) {
			s = tn_prov_lower_dup(vals[i]);
			json_array_append_new(j, json_string(s));
			tn_mem_free(&s);
		}
		return j;
	case TN_PF_STATUS:
		s = tn_mem_strndup(vals[0]->bv_val, vals[0]->bv_len);
		if (tn_status_parse(s, &ent->status) == 0)
			j = json_string(tn_status_name(ent->status));
		break;
	case TN_PF_TIME:
		s = tn_mem_strndup(vals[0]->bv_val, vals[0]->bv_len);
		if (tn_prov_input_parse_gentime(s, &ms) == 0) {
			ent->status_ms = ms;
			tn_mem_free(&s);
			s = tn_prov_input_rfc3339(ms);
			j = json_string(s);
		}
		break;
	case TN_PF_ID:
	case TN_PF_DOMAIN:
	case TN_PF_ADDRESS:
		s = tn_prov_lower_dup(vals[0]);
		j = json_string(s);
		break;
	default:
		j = json_stringn(vals[0]->bv_val, vals[0]->bv_len);
		break;
	}
	tn_mem_free(&s);
	return j;
}

static json_t *tn_prov_absent(const struct tn_prov_field *f)
{
	if (f->type == TN_PF_STATUS)
		return json_string("active");
	if ((f->flags & TN_PF_ZERO) != 0)
		return f->type == TN_PF_BOOL ? json_false() : json_integer(0);
	return json_null();
}

static int tn_prov_entry_field(struct tn_prov_entry *ent, LDAP *ld, LDAPMessage *e,
			       const struct tn_prov_field *f)
{
	struct berval **vals = ldap_get_values_len(ld, e, f->attr);
	json_t *j = NULL, *raw = json_array();

	for (size_t i = 0; vals != NULL && vals[i] != NULL; i++)
		json_array_append_new(raw, json_stringn_nocheck(vals[i]->bv_val, vals[i]->bv_len));
	json_object_set_new(ent->raw, f->attr, raw);
	if (f->type == TN_PF_HASH || f->type == TN_PF_PASSWORD) {
		ldap_value_free_len(vals);
		return 0;
	}
	if (vals == NULL || vals[0] == NULL)
		j = tn_prov_absent(f);
	else if ((j = tn_prov_field_json(ent, f, vals)) == NULL) {
		ldap_value_free_len(vals);
		return -1;
	}
	ldap_value_free_len(vals);
	if ((f->flags & TN_PF_OUT) != 0)
		json_object_set_new(ent->obj, f->name, j);
	else
		json_decref(j);
	return 0;
}

static char *tn_prov_first(LDAP *ld, LDAPMessage *e, const char *attr)
{
	struct berval **vals = ldap_get_values_len(ld, e, attr);
	char *s = NULL;

	if (vals != NULL && vals[0] != NULL)
		s = tn_mem_strndup(vals[0]->bv_val, vals[0]->bv_len);
	ldap_value_free_len(vals);
	return s;
}

static void tn_prov_entry_finish(struct tn_prov_op *op, struct tn_prov_entry *ent)
{
	if (ent->status == TN_STATUS_DELETED) {
		char *t = tn_prov_input_rfc3339(ent->status_ms + op->p->purge_grace_ms);

		json_object_set_new(ent->obj, "purge_after", json_string(t));
		tn_mem_free(&t);
	}
	json_object_set_new(ent->obj, "etag", ent->etag != NULL ?
			    json_string(ent->etag) : json_null());
}

struct tn_prov_entry *tn_prov_entry_from(struct tn_prov_op *op,
					 const struct tn_prov_kind_desc *kd,
					 LDAPMessage *e, const char **why_r)
{
	struct tn_prov_entry *ent = tn_mem_calloc(1, sizeof(*ent));
	char *dn = ldap_get_dn(op->ld, e);
	char *tenant = tn_dir_dn_tenant(dn);

	ent->dn = tn_mem_strdup(dn != NULL ? dn : "");
	ldap_memfree(dn);
	ent->obj = json_object();
	ent->raw = json_object();
	ent->etag = tn_prov_first(op->ld, e, "entryCSN");
	if (tenant != NULL) {
		struct berval bv = { strlen(tenant), tenant };

		ent->tenant = tn_prov_lower_dup(&bv);
		free(tenant);
	}
	for (const struct tn_prov_field *f = kd->fields; f->name != NULL; f++) {
		if (f->type == TN_PF_TENANT) {
			json_object_set_new(ent->obj, f->name, json_string(ent->tenant));
		} else if (tn_prov_entry_field(ent, op->ld, e, f) < 0) {
			*why_r = f->attr;
			tn_prov_entry_free(&ent);
			return NULL;
		}
	}
	ent->key = tn_mem_strdup(json_string_value(json_object_get(ent->obj, kd->fields[0].name)));
	if (ent->tenant == NULL || ent->key == NULL) {
		*why_r = ent->tenant == NULL ? "DN" : kd->key_attr;
		tn_prov_entry_free(&ent);
		return NULL;
	}
	tn_prov_entry_finish(op, ent);
	return ent;
}

struct tn_prov_entry *tn_prov_entry_dup(const struct tn_prov_entry *ent)
{
	struct tn_prov_entry *d = tn_mem_calloc(1, sizeof(*d));

	d->dn = tn_mem_strdup(ent->dn);
	d->tenant = ent->tenant != NULL ? tn_mem_strdup(ent->tenant) : NULL;
	d->key = ent->key != NULL ? tn_mem_strdup(ent->key) : NULL;
	d->etag = ent->etag != NULL ? tn_mem_strdup(ent->etag) : NULL;
	d->status = ent->status;
	d->status_ms = ent->status_ms;
	d->obj = json_incref(ent->obj);
	d->raw = json_incref(ent->raw);
	return d;
}

void tn_prov_entry_free(struct tn_prov_entry **entp)
{
	struct tn_prov_entry *ent = *entp;

	if (ent == NULL)
		return;
	tn_mem_free(&ent->dn);
	tn_mem_free(&ent->tenant);
	tn_mem_free(&ent->key);
	tn_mem_free(&ent->etag);
	json_decref(ent->raw);		/* may hold a password hash */
	json_decref(ent->obj);
	tn_mem_free(entp);
}

/* The one entry of a search result, parsed; st_r for none, several or
 * a bad one. */
static struct tn_prov_entry *tn_prov_single(struct tn_prov_op *op, LDAPMessage *res,
					    const char *what, enum tn_prov_status *st_r)
{
	LDAPMessage *e = ldap_first_entry(op->ld, res);
	struct tn_prov_entry *ent;
	const char *why = NULL;

	if (e == NULL) {
		*st_r = tn_prov_fail(op, TN_PROV_NOT_FOUND, NULL, "no such %s: %s",
				     op->kd->name, what);
		return NULL;
	}
	if (ldap_next_entry(op->ld, e) != NULL) {
		tn_error("provisioning: %s %s is held by more than one directory entry",
			 op->kd->name, what);
		*st_r = tn_prov_fail(op, TN_PROV_INTERNAL, NULL,
				     "%s is held by more than one directory entry", what);
		return NULL;
	}
	ent = tn_prov_entry_from(op, op->kd, e, &why);
	if (ent == NULL)
		*st_r = tn_prov_fail(op, TN_PROV_INTERNAL, NULL,
				     "invalid %s in the directory entry of %s", why, what);
	return ent;
}

static enum tn_prov_status tn_prov_fetch_query(struct tn_prov_op *op, const char *base,
					       int scope, const char *filter,
					       const char *what, struct tn_prov_entry **ent_r)
{
	char **attrs = tn_prov_entry_attrs(op->kd);
	LDAPMessage *res = NULL;
	enum tn_prov_status st = TN_PROV_OK;

	*ent_r = NULL;
	if (tn_prov_search(op, base, scope, filter, attrs, &res, &st) < 0) {
		if (st == TN_PROV_NOT_FOUND)
			tn_prov_fail(op, st, NULL, "no such %s: %s", op->kd->name, what);
	} else {
		*ent_r = tn_prov_single(op, res, what, &st);
	}
	if (res != NULL)
		ldap_msgfree(res);
	tn_mem_free(&attrs);
	return st;
}

enum tn_prov_status tn_prov_fetch_dn(struct tn_prov_op *op, const char *dn,
				     struct tn_prov_entry **ent_r)
{
	char *filter = tn_mem_printf("(objectClass=%s)", op->kd->objectclass);
	enum tn_prov_status st = tn_prov_fetch_query(op, dn, LDAP_SCOPE_BASE, filter, dn,
						     ent_r);

	tn_mem_free(&filter);
	return st;
}

enum tn_prov_status tn_prov_fetch(struct tn_prov_op *op, const char *key,
				  struct tn_prov_entry **ent_r)
{
	const struct tn_prov_kind_desc *kd = op->kd;
	const char *scope = op->ctx->tenant_scope;
	enum tn_prov_status st;
	char *dn, *v, *filter;

	if (kd->kind == TN_PROV_TENANT) {
		dn = tn_prov_dn(op->p, NULL, kd->key_attr, key);
		filter = tn_mem_printf("(objectClass=%s)", kd->objectclass);
		st = tn_prov_fetch_query(op, dn, LDAP_SCOPE_BASE, filter, key, ent_r);
		tn_mem_free(&filter);
		tn_mem_free(&dn);
	} else {
		v = tn_escape_filter_value(key, strlen(key));
		filter = tn_mem_printf("(&(objectClass=%s)(%s=%s))", kd->objectclass,
				       kd->key_attr, v);
		st = tn_prov_fetch_query(op, op->p->tenants_dn, LDAP_SCOPE_SUBTREE, filter,
					 key, ent_r);
		tn_mem_free(&filter);
		tn_mem_free(&v);
	}
	if (st == TN_PROV_OK && scope != NULL && strcasecmp((*ent_r)->tenant, scope) != 0) {
		tn_prov_entry_free(ent_r);
		st = tn_prov_fail(op, TN_PROV_NOT_FOUND, NULL, "no such %s: %s", kd->name, key);
	}
	return st;
}

/* --- modifications ----------------------------------------------------------- */

void tn_prov_mods_add(struct tn_prov_mods *m, int op, const char *attr, char **values)
{
	LDAPMod *mod = tn_mem_calloc(1, sizeof(*mod));

	mod->mod_op = op;
	mod->mod_type = tn_mem_strdup(attr);
	mod->mod_values = values;
	m->mods = tn_mem_realloc(m->mods, (m->n + 2) * sizeof(*m->mods));
	m->mods[m->n++] = mod;
	m->mods[m->n] = NULL;
}

void tn_prov_mods_add1(struct tn_prov_mods *m, int op, const char *attr, const char *value)
{
	char **vals = NULL;

	if (value != NULL) {
		vals = tn_mem_calloc(2, sizeof(*vals));
		vals[0] = tn_mem_strdup(value);
	}
	tn_prov_mods_add(m, op, attr, vals);
}

void tn_prov_values_free(char ***valsp)
{
	char **vals = *valsp;

	for (size_t i = 0; vals != NULL && vals[i] != NULL; i++) {
		explicit_bzero(vals[i], strlen(vals[i]));	/* may be a hash */
		tn_mem_free(&vals[i]);
	}
	tn_mem_free(valsp);
}

void tn_prov_mods_free(struct tn_prov_mods *m)
{
	for (size_t i = 0; i < m->n; i++) {
		tn_prov_values_free(&m->mods[i]->mod_values);
		tn_mem_free(&m->mods[i]->mod_type);
		tn_mem_free(&m->mods[i]);
	}
	tn_mem_free(&m->mods);
	m->n = 0;
}

static char *tn_prov_value(const struct tn_prov_field *f, json_t *v)
{
	if (json_is_integer(v))
		return tn_mem_printf("%lld", (long long)json_integer_value(v));
	if (json_is_boolean(v))
		return tn_mem_strdup(json_is_true(v) ? "TRUE" : "FALSE");
	return tn_mem_strdup(json_string_value(v));
}

char **tn_prov_values(const struct tn_prov_field *f, json_t *v)
{
	char **vals;
	size_t n;

	if (v == NULL || json_is_null(v))
		return NULL;
	n = json_is_array(v) ? json_array_size(v) : 1;
	vals = tn_mem_calloc(n + 1, sizeof(*vals));
	for (size_t i = 0; i < n; i++)
		vals[i] = tn_prov_value(f, json_is_array(v) ? json_array_get(v, i) : v);
	return vals;
}

char *tn_prov_dn(struct tn_prov *p, const char *tenant, const char *attr, const char *value)
{
	char *v = tn_escape_dn_value(value, strlen(value)), *t, *dn;

	if (tenant == NULL) {
		dn = tn_mem_printf("%s=%s,%s", attr, v, p->tenants_dn);
	} else {
		t = tn_escape_dn_value(tenant, strlen(tenant));
		dn = tn_mem_printf("%s=%s,tnTenantId=%s,%s", attr, v, t, p->tenants_dn);
		tn_mem_free(&t);
	}
	tn_mem_free(&v);
	return dn;
}
