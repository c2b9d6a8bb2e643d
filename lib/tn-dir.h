/*++
 * NAME
 *	tn-dir 3h
 * SUMMARY
 *	directory client: tenants, domains, mailboxes and aliases from LDAP
 * DESCRIPTION
 *	A pool of libldap connections shared by all threads of a process.
 *	Each connection is made to the first reachable URI of the list; a URI
 *	that failed (refused, timed out, dropped) is skipped for retry_down
 *	so a dead or hung replica costs one timeout, not one per lookup.
 *	Every call takes an absolute deadline (tn-time.h) and never waits
 *	past it: network timeout, operation timeout and the deadline bound
 *	connect, StartTLS, bind and search. A connection idle longer than
 *	idle_timeout is closed before use (servers and firewalls drop idle
 *	connections silently).
 *
 *	Results are tri-state. TN_TEMPFAIL covers every failure to get an
 *	answer: no server reachable, timeouts, TLS failure, bind refused,
 *	a search error, ambiguous data (one address held by two entries) or
 *	invalid data (a negative quota). Only a completed search that found
 *	nothing is TN_NOTFOUND.
 *
 *	Filters are built with RFC 4515 escaping and only use attributes the
 *	schema indexes (mail, tnDomain, tnTenantId, objectClass); a tenant
 *	not asked for in the address search is read by DN
 *	(RFC 4514 escaping).
 *
 *	Error texts returned through error_r live in thread-local storage
 *	until the thread's next tn_dir call.
 * SECURITY
 *	The bind password is held in memory only and never logged.
 *	With starttls, a certificate that does not verify is a temporary
 *	failure; there is no fallback to plain text.
 *--*/
#ifndef TN_DIR_H
#define TN_DIR_H

#include <stdbool.h>
#include <stdint.h>

#include "tn-record.h"
#include "tn-time.h"

/* What every search asks for: the attributes and the most entries (an
 * address, its domain and its tenant, with room to see duplicates).
 * Exported for the benchmark's raw floor, which must move the same bytes. */
#define TN_DIR_SIZELIMIT 8
extern const char *const tn_dir_attrs[];

struct tn_dir_settings {
	const char *const *uris;	/* NULL-terminated, tried in order */
	const char *base;		/* e.g. dc=example,dc=net */
	const char *tenants_rdn;	/* e.g. ou=tenants */
	const char *bind_dn;		/* NULL or "": anonymous */
	const char *bind_password;
	bool starttls;
	const char *tls_ca_file;	/* NULL: system default */
	const char *tls_require_cert;	/* never|allow|try|demand */
	tn_msec_t network_timeout;
	tn_msec_t op_timeout;
	tn_msec_t idle_timeout;
	tn_msec_t retry_down;
	unsigned max_connections;
};

struct tn_dir_stats {
	uint64_t searches;	/* requests sent */
	uint64_t errors;	/* requests that ended in a temporary failure */
	uint64_t connects;	/* connections opened (incl. bind) */
	uint64_t failovers;	/* URIs marked down */
};

struct tn_dir;

struct tn_dir *tn_dir_create(const struct tn_dir_settings *set);
void tn_dir_destroy(struct tn_dir **dir);

/* One search for the mailbox or alias holding addr and for the domain
 * entry of domain, and, when tenant_hint is given (the tenant the domain
 * belonged to when last seen), for that tenant's entry too, so that a
 * resolve costs one round trip. On TN_FOUND (the search completed)
 * *obj_r, *domain_r and *tenant_r each hold the object found or NULL; the
 * caller checks that the tenant found is the domain's. */
enum tn_result tn_dir_fetch_address(struct tn_dir *dir, const char *addr,
				    const char *domain, const char *tenant_hint,
				    tn_msec_t deadline, struct tn_obj **obj_r,
				    struct tn_obj **domain_r, struct tn_obj **tenant_r,
				    const char **error_r);
enum tn_result tn_dir_fetch_domain(struct tn_dir *dir, const char *domain,
				   tn_msec_t deadline, struct tn_obj **domain_r,
				   const char **error_r);
enum tn_result tn_dir_fetch_tenant(struct tn_dir *dir, const char *id,
				   tn_msec_t deadline, struct tn_obj **tenant_r,
				   const char **error_r);

void tn_dir_get_stats(struct tn_dir *dir, struct tn_dir_stats *stats_r);

/* Raw connections, for callers with operations of their own (the
 * provisioning writes of tn-prov.h): a bound connection of the pool, made
 * with the same URI failover, StartTLS/TLS checks and timeouts as the
 * searches above. tn_dir_conn_put() gives it back; broken_why != NULL
 * says it saw a transport error or a timeout: it is closed and its URI
 * marked down for retry_down. */
struct ldap;
struct tn_dir_conn;
struct tn_dir_conn *tn_dir_conn_get(struct tn_dir *dir, tn_msec_t deadline,
				    const char **error_r);
struct ldap *tn_dir_conn_ldap(struct tn_dir_conn *conn);
const char *tn_dir_conn_uri(struct tn_dir *dir, const struct tn_dir_conn *conn);
void tn_dir_conn_put(struct tn_dir *dir, struct tn_dir_conn *conn,
		     const char *broken_why);
/* An LDAP result code that says the connection is unusable. */
bool tn_dir_transport_error(int rc);
/* "<tenants_rdn>,<base>" */
const char *tn_dir_tenants_dn(const struct tn_dir *dir);
/* The tnTenantId value of a DN (the tenant an entry lives in), or NULL. */
char *tn_dir_dn_tenant(const char *dn);

#endif
