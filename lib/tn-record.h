/*++
 * NAME
 *	tn-record 3h
 * SUMMARY
 *	directory objects, their cache encoding, and the composed account
 * DESCRIPTION
 *	struct tn_obj is one directory object as the lookup library keeps
 *	it: a tenant, a mail domain, a mailbox or an alias. It is what one
 *	Redis entry and one in-process cache entry hold, so that a change
 *	to a tenant invalidates exactly one key. Objects are immutable once
 *	built and reference-counted (tn_obj_ref/tn_obj_unref), so caches
 *	and lookups share them across threads without copying.
 *
 *	Limits are integers: bytes for sizes, messages per hour for rates;
 *	0 means unlimited and TN_LIMIT_INHERIT (-1) means "absent: inherit
 *	from the tenant plan".
 *
 *	tn_obj_encode()/tn_obj_decode() convert to and from the JSON kept in
 *	Redis (jansson); decode rejects anything malformed, so a corrupt or
 *	foreign cache entry is treated as a miss, never as an answer.
 *
 *	tn_account_compose() is the policy: it joins tenant, domain and
 *	mailbox (or alias) into the account every component sees.
 *	Status cascades tenant -> domain -> object: the effective status is
 *	the most severe of the three (deleted > suspended > active); among
 *	equally severe ones the outermost wins (a suspended tenant reports
 *	the tenant's reason even if the mailbox is suspended too).
 *	Limits: the object's own value if set, else the tenant's plan value,
 *	else 0 (unlimited). The mailbox quota inherits the tenant's default
 *	mailbox quota (tnMailboxQuotaBytes); the pool inherits the tenant's.
 *	Each limit records where it came from.
 *--*/
#ifndef TN_RECORD_H
#define TN_RECORD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TN_LIMIT_INHERIT ((int64_t)-1)

/* Tri-state results: "could not look it up" is never "not found". */
enum tn_result {
	TN_TEMPFAIL = -1,
	TN_NOTFOUND = 0,
	TN_FOUND = 1,
};

enum tn_obj_kind {
	TN_OBJ_TENANT,
	TN_OBJ_DOMAIN,
	TN_OBJ_MAILBOX,
	TN_OBJ_ALIAS,
};

enum tn_status {
	TN_STATUS_ACTIVE,
	TN_STATUS_SUSPENDED,
	TN_STATUS_DELETED,
};

/* Where an effective value came from. */
enum tn_level {
	TN_LEVEL_DEFAULT,
	TN_LEVEL_TENANT,
	TN_LEVEL_DOMAIN,
	TN_LEVEL_OBJECT,
};

struct tn_obj {
	int refcount;
	enum tn_obj_kind kind;
	char *key;		/* tenant id, domain name or address (normalised) */
	char *tenant;		/* owning tenant id (a tenant's own id) */
	enum tn_status status;
	char *reason;		/* status reason, or NULL */
	int64_t storage_quota;	/* tenant: pooled storage */
	int64_t mailbox_quota;	/* tenant: default per mailbox; mailbox: own */
	int64_t max_mailboxes;	/* tenant */
	int64_t max_msg_size;	/* tenant, mailbox */
	int64_t send_rate;	/* tenant: default per mailbox; mailbox: own */
	int64_t tenant_send_rate; /* tenant: whole tenant */
	bool overcommit;	/* tenant */
	char *plan;		/* tenant */
	char *host;		/* mailbox: store host[:port] */
	char *pool;		/* tenant, mailbox: store pool */
	char *password;		/* mailbox: userPassword ({SCHEME}hash) */
	char *name;		/* mailbox: display name */
	char **targets;		/* alias: NULL-terminated */
	size_t ntargets;
};

/* A new object with every limit TN_LIMIT_INHERIT and refcount 1. */
struct tn_obj *tn_obj_create(enum tn_obj_kind kind, const char *key);
struct tn_obj *tn_obj_ref(struct tn_obj *obj);
void tn_obj_unref(struct tn_obj **obj);
void tn_obj_add_target(struct tn_obj *obj, const char *target);

const char *tn_obj_kind_name(enum tn_obj_kind kind);
const char *tn_status_name(enum tn_status status);
int tn_status_parse(const char *name, enum tn_status *status_r);
const char *tn_level_name(enum tn_level level);

/* JSON text for the cache (caller frees with free()). */
char *tn_obj_encode(const struct tn_obj *obj);
/* Parse a cache entry; NULL (with *error_r) when malformed. */
struct tn_obj *tn_obj_decode(const char *json, size_t len, const char **error_r);

struct tn_limit {
	int64_t value;		/* 0 = unlimited */
	enum tn_level from;
};

enum tn_account_kind {
	TN_ACCOUNT_MAILBOX,
	TN_ACCOUNT_ALIAS,
	TN_ACCOUNT_DOMAIN,
	TN_ACCOUNT_TENANT,
};

/* Which layer had to answer a lookup (the deepest one used). */
enum tn_layer {
	TN_LAYER_MEMORY,
	TN_LAYER_REDIS,
	TN_LAYER_LDAP,
};

struct tn_account {
	enum tn_account_kind kind;
	char *address;		/* mailbox/alias address; NULL otherwise */
	char *domain;		/* NULL for a tenant */
	char *tenant;
	enum tn_status status;	/* after the cascade */
	char *status_reason;
	enum tn_level status_from;
	struct tn_limit quota;		/* mailbox storage */
	struct tn_limit tenant_storage;	/* pooled tenant storage */
	struct tn_limit max_msg_size;
	struct tn_limit send_rate;	/* per mailbox, messages/hour */
	struct tn_limit tenant_send_rate;
	struct tn_limit max_mailboxes;
	bool overcommit;
	char *plan;
	char *host;
	char *pool;
	enum tn_level pool_from;
	char *password;
	char *name;
	char **targets;		/* alias: expanded final addresses, NULL-terminated */
	size_t ntargets;
	bool alias_loop;	/* expansion met a loop or the depth bound */
	bool targets_truncated;	/* expansion hit alias_max_targets */
	enum tn_layer layer;
};

/* Compose an account. tenant must be set; domain may be NULL (tenant
 * accounts); obj is the mailbox or alias (NULL for domain and tenant
 * accounts). */
struct tn_account *tn_account_compose(const struct tn_obj *tenant,
				      const struct tn_obj *domain,
				      const struct tn_obj *obj);
void tn_account_add_target(struct tn_account *acct, const char *target);
struct tn_account *tn_account_dup(const struct tn_account *acct);
void tn_account_free(struct tn_account **acct);

const char *tn_account_kind_name(enum tn_account_kind kind);
const char *tn_layer_name(enum tn_layer layer);

/* JSON for tnctl --json and tests (password shown only if asked). */
char *tn_account_to_json(const struct tn_account *acct, bool with_password);

#endif
