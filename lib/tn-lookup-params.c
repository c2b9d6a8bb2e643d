/*++
 * NAME
 *	tn-lookup-params 3
 * SUMMARY
 *	the lookup library's configuration parameters
 * DESCRIPTION
 *	Every program that resolves addresses reads these from the global
 *	part of tenantmail.conf (or its own section). They are documented in
 *	tenantmail.conf(5); a test fails when one is missing there.
 *--*/
#include "tn-conf.h"
#include "tn-lookup.h"

#define TN_MS(s) ((int64_t)(s) * 1000)

const struct tn_conf_param tn_lookup_params[] = {
	{ "ldap_uri", TN_CONF_LIST, "ldap://127.0.0.1/", 0, 0, NULL,
	  "LDAP servers, tried in order (replicas after the provider)" },
	{ "ldap_base", TN_CONF_STR, "dc=example,dc=net", 0, 0, NULL,
	  "base DN of the directory" },
	{ "ldap_tenants_rdn", TN_CONF_STR, "ou=tenants", 0, 0, NULL,
	  "RDN under ldap_base that holds one subtree per tenant" },
	{ "ldap_bind_dn", TN_CONF_STR, "", 0, 0, NULL,
	  "DN to bind as (empty: anonymous)" },
	{ "ldap_bind_password_file", TN_CONF_STR, "", 0, 0, NULL,
	  "file holding the bind password (first line)" },
	{ "ldap_starttls", TN_CONF_BOOL, "no", 0, 0, NULL,
	  "require StartTLS on ldap:// URIs (no plain-text fallback; ldaps:// is TLS already)" },
	{ "ldap_tls_ca_file", TN_CONF_STR, "", 0, 0, NULL,
	  "CA certificates to verify the LDAP server (empty: system default)" },
	{ "ldap_tls_require_cert", TN_CONF_ENUM, "demand", 0, 0, "never|allow|try|demand",
	  "server certificate check for StartTLS and ldaps:// URIs" },
	{ "ldap_network_timeout", TN_CONF_TIME, "2s", 1, TN_MS(600), NULL,
	  "time to establish a TCP connection to one LDAP server" },
	{ "ldap_timeout", TN_CONF_TIME, "3s", 1, TN_MS(600), NULL,
	  "time for one LDAP operation (bind, search)" },
	{ "ldap_idle_timeout", TN_CONF_TIME, "60s", 0, TN_MS(86400), NULL,
	  "close LDAP connections unused for this long (0: never)" },
	{ "ldap_retry_down", TN_CONF_TIME, "10s", 0, TN_MS(3600), NULL,
	  "skip an LDAP server this long after it failed" },
	{ "ldap_connections", TN_CONF_INT, "4", 1, 256, NULL,
	  "LDAP connections per process" },
	{ "redis_enabled", TN_CONF_BOOL, "yes", 0, 0, NULL,
	  "use Redis as the shared cache (no: memory and LDAP only)" },
	{ "redis_host", TN_CONF_STR, "127.0.0.1", 0, 0, NULL,
	  "Redis server host" },
	{ "redis_port", TN_CONF_INT, "6379", 1, 65535, NULL,
	  "Redis server TCP port" },
	{ "redis_socket", TN_CONF_STR, "", 0, 0, NULL,
	  "Redis unix socket path (overrides redis_host and redis_port)" },
	{ "redis_password_file", TN_CONF_STR, "", 0, 0, NULL,
	  "file holding the Redis AUTH password (empty: no AUTH)" },
	{ "redis_db", TN_CONF_INT, "0", 0, 15, NULL,
	  "Redis database number" },
	{ "redis_timeout", TN_CONF_TIME, "250ms", 1, TN_MS(60), NULL,
	  "time for one Redis command; past it Redis is bypassed for a while" },
	{ "redis_connections", TN_CONF_INT, "8", 1, 256, NULL,
	  "Redis connections per process" },
	{ "redis_key_prefix", TN_CONF_STR, "tn:v1:", 0, 0, NULL,
	  "prefix of every tenantmail key in Redis" },
	{ "cache_positive_ttl", TN_CONF_TIME, "1h", 1000, TN_MS(86400 * 7), NULL,
	  "lifetime of a cached directory object in Redis" },
	{ "cache_negative_ttl", TN_CONF_TIME, "5m", 1000, TN_MS(86400), NULL,
	  "lifetime of a cached 'no such object' in Redis" },
	{ "memory_cache_ttl", TN_CONF_TIME, "5s", 0, TN_MS(300), NULL,
	  "lifetime of an entry in the in-process cache (0: off)" },
	{ "memory_cache_size", TN_CONF_INT, "100000", 0, 10000000, NULL,
	  "entries in the in-process cache (0: off)" },
	{ "lookup_timeout", TN_CONF_TIME, "5s", 10, TN_MS(600), NULL,
	  "deadline for one resolve through all layers" },
	{ "alias_max_depth", TN_CONF_INT, "8", 1, 64, NULL,
	  "nesting depth of aliases expanded" },
	{ "alias_max_targets", TN_CONF_INT, "1000", 1, 100000, NULL,
	  "addresses one alias may expand to" },
	TN_CONF_END
};
