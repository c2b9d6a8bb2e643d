/*++
 * NAME
 *	tn-prov 3h
 * SUMMARY
 *	provisioning: write tenants, domains, mailboxes and aliases
 * DESCRIPTION
 *	The directory-write core under tn-provisiond and tnctl. Every
 *	operation takes plain C values and JSON (jansson) in, and answers
 *	with a status that maps onto HTTP (tn_prov_status_http()) and a
 *	struct tn_prov_result: the resource as it is now, its ETag, the
 *	field at fault, the event recorded. docs/provisioning.md describes
 *	the resources, their JSON fields and LDAP attributes.
 *
 *	Resources (enum tn_prov_kind), each named by its key:
 *	tenant   id, "acme"            tnTenantId=acme,<tenants>
 *	domain   "acme.example"        tnDomain=..,tnTenantId=<owner>,<tenants>
 *	mailbox  "alice@acme.example"  mail=..,tnTenantId=<owner>,<tenants>
 *	alias    "sales@acme.example"  mail=..,tnTenantId=<owner>,<tenants>
 *	A domain belongs to one tenant; a mailbox or alias to the tenant of
 *	its domain, which must exist and not be deleted. slapd keeps
 *	addresses and domains unique (ldap-schema/unique.conf): a duplicate
 *	is TN_PROV_CONFLICT however many writers race.
 *
 *	Operations: create, get, list (a page at a time, opaque cursor,
 *	filters), modify (only the fields given; null removes a field),
 *	set_status (suspend, resume, soft delete; with a reason) and purge
 *	(removes a deleted object once prov_purge_grace has passed).
 *
 *	Every write, in this order: (1) checks (input, ownership, plan
 *	limits: tnMaxMailboxes, the sum of mailbox quotas against
 *	tnStorageQuotaBytes unless tnOvercommit); (2) one LDAP write,
 *	conditional on the entryCSN read in (1) through the assertion
 *	control (RFC 4528), so a concurrent change makes it fail instead of
 *	being overwritten; (3) cache invalidation of the address, domain or
 *	tenant written (tn_lookup_invalidate_*); (4) the event of
 *	docs/events.md in the outbox. A failed invalidation leaves the write
 *	in force and sets result.cache_stale. A failed event append undoes
 *	the write (TN_PROV_EVENT_FAILED: nothing changed, retry); if the
 *	undo fails too, TN_PROV_EVENT_LOST (the change stands without its
 *	event; logged as an error).
 *
 *	ETags are the entry's entryCSN. With ctx.if_match, a write happens
 *	only if the entry still has that entryCSN (else
 *	TN_PROV_PRECONDITION), checked by slapd in the same operation.
 *
 *	Passwords: "password" (clear text) is stored as
 *	{SHA512-CRYPT}$6$rounds=N$<16 salt characters>$..., hashed with
 *	crypt_r(3) and a salt from getrandom(2); "password_hash" takes a
 *	{SHA512-CRYPT}, {ARGON2ID} or {BLF-CRYPT} hash as it is (the schemes
 *	Dovecot 2.3 on Debian 12 verifies). Neither is ever read back.
 *
 *	Thread-safe: one struct tn_prov serves all threads of a process.
 *	Writes of one object are serialised inside the process, so its
 *	events are recorded in the order of its writes. Plan limits hold
 *	across processes and nodes without a lock: a tenant entry carries
 *	counters of its live mailboxes and their quotas, which a write
 *	changes first with an atomic LDAP increment, reading the result in
 *	the same operation (post-read control, RFC 4527); two writers
 *	racing for the last place cannot both get it, and a write that
 *	fails gives its share back. tn_prov_recount() recounts.
 *
 *	Keys, reasons and ETags are C strings: a caller that decodes them
 *	(from a URL, say) refuses an embedded NUL itself. JSON input may
 *	hold NUL (jansson's lengths are checked): it is refused.
 *
 *	Deadlines: every operation ends by ctx.deadline (0: prov_timeout
 *	from the call). Directory unreachable, frozen or timed out: TN_PROV_
 *	TEMPFAIL, and nothing was written -- except when the time ran out
 *	after a write was sent and before slapd answered: then the message
 *	says the outcome is unknown (docs/provisioning.md).
 * SECURITY
 *	Every string that reaches a DN or filter is validated, then
 *	escaped (tn-escape.h). The bind password is held in memory only.
 *	Passwords never appear in results, events or log lines.
 *--*/
#ifndef TN_PROV_H
#define TN_PROV_H

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

#include "tn-conf.h"
#include "tn-record.h"
#include "tn-time.h"

struct tn_lookup;
struct tn_outbox;

extern const struct tn_conf_param tn_prov_params[];

enum tn_prov_kind {
	TN_PROV_TENANT,
	TN_PROV_DOMAIN,
	TN_PROV_MAILBOX,
	TN_PROV_ALIAS,
};

enum tn_prov_status {
	TN_PROV_OK,		/* 200 (204 for a delete) */
	TN_PROV_CREATED,	/* 201 */
	TN_PROV_BAD_INPUT,	/* 400: result.field names the field */
	TN_PROV_FORBIDDEN,	/* 403: outside the caller's tenant scope */
	TN_PROV_NOT_FOUND,	/* 404 (also: another tenant's, for a scoped caller) */
	TN_PROV_CONFLICT,	/* 409: the address, domain or tenant exists */
	TN_PROV_PRECONDITION,	/* 412: ETag mismatch */
	TN_PROV_UNPROCESSABLE,	/* 422: plan limits, ownership, state */
	TN_PROV_TEMPFAIL,	/* 503: directory unreachable; nothing written */
	TN_PROV_EVENT_FAILED,	/* 503: event not recorded, the write undone */
	TN_PROV_EVENT_LOST,	/* 500: written, event not recorded, undo failed */
	TN_PROV_INTERNAL,	/* 500: the directory refused (ACLs? schema?) */
};

/* Who asks, and under which conditions. */
struct tn_prov_ctx {
	const char *actor_kind;	/* admin | tenant_admin | billing | system */
	const char *actor_id;	/* e.g. "billing-main" (events.md "actor") */
	const char *tenant_scope; /* NULL: all tenants; else only this one's
				     objects exist for the caller */
	const char *if_match;	/* ETag the object must still have, or NULL */
	tn_msec_t deadline;	/* 0: prov_timeout from the call */
};

struct tn_prov_result {
	enum tn_prov_status status;
	char *field;		/* the input field at fault, or NULL */
	char *message;		/* what went wrong, for people; NULL on success */
	json_t *object;		/* the resource now (get, create, modify, status) */
	json_t *items;		/* list: the page, an array of resources */
	char *next_cursor;	/* list: cursor of the next page; NULL at the end */
	char *etag;		/* the object's ETag after the call */
	bool changed;		/* the directory was written */
	bool cache_stale;	/* written, but the cache invalidation failed */
	char *event_id;		/* the event recorded, or NULL */
	uint64_t event_sequence;
};

/* list filters; NULL/0 fields do not filter */
struct tn_prov_query {
	const char *tenant;	/* domains, mailboxes, aliases of this tenant */
	const char *domain;	/* mailboxes, aliases of this domain */
	const char *status;	/* active | suspended | deleted */
	const char *cursor;	/* from the previous page's next_cursor */
	unsigned limit;		/* page size; 0: 100; at most prov_list_max */
};

struct tn_prov;

/* Settings from tn_prov_params and tn_lookup_params (URIs, TLS,
 * timeouts) of conf. lookup (for invalidation) and outbox are borrowed;
 * lookup may be NULL (no cache to invalidate). NULL with *error_r on bad
 * settings; no network traffic happens here. */
struct tn_prov *tn_prov_create(const struct tn_conf *conf, struct tn_lookup *lookup,
			       struct tn_outbox *outbox, const char **error_r);
void tn_prov_destroy(struct tn_prov **p);

enum tn_prov_status tn_prov_create_object(struct tn_prov *p, const struct tn_prov_ctx *ctx,
					  enum tn_prov_kind kind, json_t *in,
					  struct tn_prov_result *res);
/* n creates of kind (items: create bodies), with the effect of that many
 * tn_prov_create_object() calls in item order, each with its result in
 * res_v[i] (the call zeroes them; clear each), sharing the reads of
 * owners, the plan counters' increment and the events' commits. Returns
 * TN_PROV_OK when every item has its own result; else the reason the
 * batch stopped (the directory went away): items not attempted carry it
 * ("not attempted: ..."), items done before keep theirs. */
enum tn_prov_status tn_prov_create_batch(struct tn_prov *p, const struct tn_prov_ctx *ctx,
					 enum tn_prov_kind kind, json_t *const *items, size_t n,
					 struct tn_prov_result *res_v);
enum tn_prov_status tn_prov_get(struct tn_prov *p, const struct tn_prov_ctx *ctx,
				enum tn_prov_kind kind, const char *key,
				struct tn_prov_result *res);
enum tn_prov_status tn_prov_list(struct tn_prov *p, const struct tn_prov_ctx *ctx,
				 enum tn_prov_kind kind, const struct tn_prov_query *q,
				 struct tn_prov_result *res);
enum tn_prov_status tn_prov_modify(struct tn_prov *p, const struct tn_prov_ctx *ctx,
				   enum tn_prov_kind kind, const char *key, json_t *changes,
				   struct tn_prov_result *res);
/* suspend (TN_STATUS_SUSPENDED), resume or restore (TN_STATUS_ACTIVE),
 * soft delete (TN_STATUS_DELETED); reason NULL or "" for none. */
enum tn_prov_status tn_prov_set_status(struct tn_prov *p, const struct tn_prov_ctx *ctx,
				       enum tn_prov_kind kind, const char *key,
				       enum tn_status to, const char *reason,
				       struct tn_prov_result *res);
/* Remove a deleted object whose purge_after has passed (a tenant or a
 * domain with everything in it). No event (docs/events.md). */
enum tn_prov_status tn_prov_purge(struct tn_prov *p, const struct tn_prov_ctx *ctx,
				  enum tn_prov_kind kind, const char *key,
				  struct tn_prov_result *res);

/* Count a tenant's live mailboxes and their quotas and set its plan
 * counters from the count (they drift only when a writer died between
 * taking its share and its write, and correct themselves when a limit
 * seems reached; docs/provisioning.md "Plan counters"). res.object: the
 * tenant. No event. */
enum tn_prov_status tn_prov_recount(struct tn_prov *p, const struct tn_prov_ctx *ctx,
				    const char *tenant, struct tn_prov_result *res);

void tn_prov_result_clear(struct tn_prov_result *res);
/* {"status","http","field","message","object","items","next_cursor",
 * "etag","changed","cache_stale","event_id","event_sequence"}, members
 * without a value left out. */
json_t *tn_prov_result_json(const struct tn_prov_result *res);

const char *tn_prov_status_name(enum tn_prov_status status);
int tn_prov_status_http(enum tn_prov_status status);
const char *tn_prov_kind_name(enum tn_prov_kind kind);
int tn_prov_kind_parse(const char *name, enum tn_prov_kind *kind_r);

#endif
