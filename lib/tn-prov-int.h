/*++
 * NAME
 *	tn-prov-int 3h
 * SUMMARY
 *	provisioning internals shared by tn-prov*.c (not an API)
 * DESCRIPTION
 *	Each resource kind is described by a table of its fields (JSON
 *	name, LDAP attribute, type, what may be done with it); everything
 *	generic (input parsing, entries to JSON, LDAP modifications, event
 *	data) walks those tables.
 *
 *	An operation (struct tn_prov_op) holds one directory connection
 *	from start to end: the reads that decide, the write, and the undo
 *	of the write when its event cannot be recorded. A transport error
 *	before the write was sent lets the runner start the operation again
 *	on another connection (failover) while the deadline allows.
 *--*/
#ifndef TN_PROV_INT_H
#define TN_PROV_INT_H

#include <pthread.h>
#include <stdbool.h>

#include <jansson.h>
#include <ldap.h>

#include "tn-dir.h"
#include "tn-prov.h"

enum tn_prov_ftype {
	TN_PF_ID,		/* tenant id */
	TN_PF_DOMAIN,
	TN_PF_ADDRESS,
	TN_PF_TEXT,		/* UTF-8 */
	TN_PF_NAME,		/* pool name */
	TN_PF_HOST,
	TN_PF_COUNT,		/* integer 0..2^53-1 */
	TN_PF_BOOL,
	TN_PF_STATUS,
	TN_PF_TIME,
	TN_PF_PASSWORD,		/* clear text, hashed on the way in */
	TN_PF_HASH,		/* {SCHEME}hash, stored as it is */
	TN_PF_TARGETS,		/* array of addresses */
	TN_PF_TENANT,		/* the owning tenant: from the DN, not an attribute */
};

#define TN_PF_KEY	0x01	/* the RDN value: given at create, never changed */
#define TN_PF_CREATE	0x02	/* may be given at create */
#define TN_PF_MODIFY	0x04	/* may be changed by modify */
#define TN_PF_EVENT	0x08	/* in *.created data and *.updated changes */
#define TN_PF_OUT	0x10	/* shown by get and list */
#define TN_PF_ZERO	0x20	/* absent reads as 0 / false, not null */
#define TN_PF_REQUIRED	0x40	/* must be given at create */
#define TN_PF_STATUSF	0x80	/* status, its reason and time: set_status only
				   (and at create) */

struct tn_prov_field {
	const char *name;	/* JSON */
	const char *attr;	/* LDAP; NULL for TN_PF_TENANT */
	enum tn_prov_ftype type;
	unsigned flags;
	size_t max;		/* TEXT: bytes */
};

struct tn_prov_kind_desc {
	enum tn_prov_kind kind;
	const char *name;		/* "mailbox" */
	const char *objectclass;	/* "tnMailbox" */
	const char *key_attr;		/* "mail" */
	const char *event_prefix;	/* "mailbox"; NULL: no events */
	bool event_key;			/* events carry the key field */
	const struct tn_prov_field *fields;	/* NULL-name terminated; key first */
};

#define TN_PROV_LOCKS 256
#define TN_PROV_COMBINERS 64

/* Shares of plan counters taken at the same time for one tenant are
 * combined into one LDAP increment (tn-prov-write.c). */
struct tn_prov_share_req;
struct tn_prov_combiner {
	pthread_mutex_t mutex;
	pthread_cond_t cond;
	struct tn_prov_share_req *head;	/* waiting for a leader */
	bool busy;			/* a leader is writing */
};

struct tn_prov {
	struct tn_dir *dir;
	struct tn_lookup *lookup;
	struct tn_outbox *outbox;
	char *tenants_dn;
	tn_msec_t timeout;
	tn_msec_t op_timeout;
	int64_t purge_grace_ms;
	unsigned rounds;
	unsigned list_max;
	unsigned alias_max;
	pthread_mutex_t locks[TN_PROV_LOCKS];
	struct tn_prov_combiner comb[TN_PROV_COMBINERS];
};

/* One directory entry of ours, as read. */
struct tn_prov_entry {
	char *dn;
	char *tenant;		/* from the DN (a tenant's own id for tenants) */
	char *key;		/* normalised key value */
	char *etag;		/* entryCSN */
	enum tn_status status;
	int64_t status_ms;	/* tnStatusTime, 0 when absent */
	json_t *obj;		/* the resource's JSON (TN_PF_OUT fields, "etag") */
	json_t *raw;		/* attribute -> [values] as read, for an undo */
};

struct tn_prov_op {
	struct tn_prov *p;
	const struct tn_prov_ctx *ctx;
	const struct tn_prov_kind_desc *kd;
	struct tn_prov_result *res;
	tn_msec_t deadline;
	struct tn_dir_conn *conn;
	LDAP *ld;
	bool write_sent;	/* a write went out on this connection */
	bool broken;		/* the connection is unusable */
	char *broken_why;
	pthread_mutex_t *lock;	/* the object lock held, or NULL */
	struct tn_prov_bcache *bcache;	/* a batch's owners read so far, or NULL */
	int64_t now_ms;		/* wall clock at the start */
};

/* An LDAP modification list under construction. */
struct tn_prov_mods {
	LDAPMod **mods;
	size_t n;
};

const struct tn_prov_kind_desc *tn_prov_kind_desc(enum tn_prov_kind kind);
const struct tn_prov_field *tn_prov_field_find(const struct tn_prov_kind_desc *kd,
					       const char *name);

/* tn-prov.c */
void tn_prov_op_begin(struct tn_prov_op *op, struct tn_prov *p, const struct tn_prov_ctx *ctx,
		      enum tn_prov_kind kind, struct tn_prov_result *res);
/* Run step with a connection (again on another one after a transport
 * error before any write); sets res->status. */
enum tn_prov_status tn_prov_run(struct tn_prov_op *op,
				enum tn_prov_status (*step)(struct tn_prov_op *op, void *arg),
				void *arg);
enum tn_prov_status tn_prov_lock_key(struct tn_prov_op *op, const char *key);
/* The normalised key of op's kind, or TN_PROV_BAD_INPUT naming it. */
enum tn_prov_status tn_prov_normalize_key(struct tn_prov_op *op, const char *key,
					  char **out_r);
/* res->object and res->etag from ent. */
void tn_prov_set_object(struct tn_prov_op *op, struct tn_prov_entry *ent);
enum tn_prov_status tn_prov_fail(struct tn_prov_op *op, enum tn_prov_status st,
				 const char *field, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

/* tn-prov-ldap.c */
/* Map an LDAP result code of a failed operation to a status and
 * message ("what" names the operation); transport errors break the
 * connection. */
enum tn_prov_status tn_prov_ldap_fail(struct tn_prov_op *op, int rc, const char *what,
				      const char *diag);
/* Search; 0 with *res_r (caller frees), or a status (set in res). A
 * missing base is TN_PROV_NOT_FOUND without a message. */
int tn_prov_search(struct tn_prov_op *op, const char *base, int scope, const char *filter,
		   char **attrs, LDAPMessage **res_r, enum tn_prov_status *st_r);
/* Add, modify or delete dn; assert_csn != NULL: only if entryCSN still
 * equals it. Returns the LDAP result code (diag_r: server's text, free
 * with ldap_memfree). */
int tn_prov_write(struct tn_prov_op *op, int what, const char *dn, LDAPMod **mods,
		  const char *assert_csn, char **diag_r);
/* Modify dn (no assertion) and read attrs of the entry as the change
 * left it (post-read control, RFC 4527, which slapd applies in the
 * same operation): *after_r maps each attribute present to its first
 * value, a string. Returns the LDAP result code. */
int tn_prov_modify_read(struct tn_prov_op *op, const char *dn, LDAPMod **mods,
			char **attrs, json_t **after_r, char **diag_r);
#define TN_PROV_WRITE_ADD 1
#define TN_PROV_WRITE_MODIFY 2
#define TN_PROV_WRITE_DELETE 3

/* Read the object of op->kd with key (normalised); TN_PROV_OK with
 * *ent_r, TN_PROV_NOT_FOUND (message set), or an error. Honors the
 * caller's tenant scope (another tenant's object is not found). */
enum tn_prov_status tn_prov_fetch(struct tn_prov_op *op, const char *key,
				  struct tn_prov_entry **ent_r);
/* The same by DN (after a write). */
enum tn_prov_status tn_prov_fetch_dn(struct tn_prov_op *op, const char *dn,
				     struct tn_prov_entry **ent_r);
struct tn_prov_entry *tn_prov_entry_from(struct tn_prov_op *op,
					 const struct tn_prov_kind_desc *kd,
					 LDAPMessage *e, const char **why_r);
void tn_prov_entry_free(struct tn_prov_entry **ent);
struct tn_prov_entry *tn_prov_entry_dup(const struct tn_prov_entry *ent);
char **tn_prov_entry_attrs(const struct tn_prov_kind_desc *kd);

void tn_prov_mods_add(struct tn_prov_mods *m, int op, const char *attr, char **values);
void tn_prov_mods_add1(struct tn_prov_mods *m, int op, const char *attr, const char *value);
void tn_prov_mods_free(struct tn_prov_mods *m);
/* LDAP values of a JSON value of field f (NULL-terminated, fresh), or
 * NULL for JSON null. */
char **tn_prov_values(const struct tn_prov_field *f, json_t *v);
void tn_prov_values_free(char ***vals);

char *tn_prov_dn(struct tn_prov *p, const char *tenant, const char *attr, const char *value);

#endif
