/*++
 * NAME
 *	tn-router-params 3
 * SUMMARY
 *	tn-lmtp-router's parameters: the [tn-lmtp-router] section of tenantmail.conf
 * DESCRIPTION
 *	Every router parameter, once (man/tn-lmtp-router.8 must agree:
 *	tests/integration/test_lmtp_router.py compares them). In lib/
 *	rather than in the router's main file because a second program
 *	reads this section: the Dovecot auth driver, whose placement
 *	(dovecot_placement) must hash the mailbox over the very member
 *	list the router delivers to (router_pool_members,
 *	router_default_pool, router_lmtp_port). It parses the section with
 *	this table, so the same lines give the same members in both
 *	programs, with the same checks. These parameters are not shared
 *	at the top level (tn-conf-shared.h): they belong in the section.
 *--*/
#include "tn-conf.h"
#include "tn-conf-shared.h"

#define TN_MS(s) ((int64_t)(s) * 1000)

const struct tn_conf_param tn_router_params[] = {
	{ "router_listen", TN_CONF_LIST, "127.0.0.1:2424", 0, 0, NULL,
	  "LMTP listeners: host:port, [IPv6]:port or unix:/path items" },
	{ "router_hostname", TN_CONF_STR, "", 0, 0, NULL,
	  "name in the greeting and in LHLO to the stores (empty: the host name)" },
	{ "router_user", TN_CONF_STR, "tenantmail", 0, 0, NULL,
	  "user the router switches to when started as root (empty: stay root)" },
	{ "router_control_socket", TN_CONF_STR, "/run/tenantmail/tn-lmtp-router.sock", 0, 0,
	  NULL, "unix socket of the control protocol (empty: none)" },
	{ "router_metrics_listen", TN_CONF_STR, "127.0.0.1:9466", 0, 0, NULL,
	  "address:port of the /metrics endpoint (empty: off)" },
	{ "router_pool_members", TN_CONF_LIST, "", 0, 0, NULL,
	  "pool=host[:port] items: the members of each pool, in order" },
	{ "router_default_pool", TN_CONF_STR, "", 0, 0, NULL,
	  "pool of a mailbox with neither tnMailHost nor tnMailPool (empty: 451)" },
	{ "router_placement", TN_CONF_ENUM, "none", 0, 0, "none|hash|hash-record",
	  "default pool: member order, one member by hash, or by hash written to tnMailHost" },
	{ "router_placement_bind_dn", TN_CONF_STR, "", 0, 0, NULL,
	  "DN hash-record writes tnMailHost as (empty: prov_ldap_bind_dn)" },
	{ "router_placement_password_file", TN_CONF_STR, "", 0, 0, NULL,
	  "password file of that DN (empty: prov_ldap_bind_password_file)" },
	{ "router_lmtp_port", TN_CONF_INT, "24", 1, 65535, NULL,
	  "store port when a host is given without one" },
	{ "router_line_length_limit", TN_CONF_SIZE, "2k", 512, 1024 * 1024, NULL,
	  "longest command line accepted" },
	{ "router_recipient_limit", TN_CONF_INT, "1000", 1, 100000, NULL,
	  "recipients per transaction (more: 452 4.5.3)" },
	{ "router_message_size_limit", TN_CONF_SIZE, "50m", 0, 0, NULL,
	  "largest message (0: unlimited); announced as SIZE" },
	{ "router_received_header", TN_CONF_BOOL, "yes", 0, 0, NULL,
	  "prepend a Received: line naming this router and the session to every message" },
	{ "router_max_hops", TN_CONF_INT, "50", 1, 1000, NULL,
	  "Received: lines a message may carry (more: 554 5.4.6, a mail loop)" },
	{ "router_session_timeout", TN_CONF_TIME, "300s", 100, TN_MS(3600), NULL,
	  "a client silent this long is disconnected" },
	{ "router_max_sessions", TN_CONF_INT, "10000", 1, 1000000, NULL,
	  "client sessions at once (more: 421)" },
	{ "router_error_limit", TN_CONF_INT, "20", 1, 1000, NULL,
	  "protocol errors after which a session ends with 421" },
	{ "router_store_connect_timeout", TN_CONF_TIME, "5s", 10, TN_MS(600), NULL,
	  "connecting to a store up to its LHLO reply; a pooled one's first reply" },
	{ "router_store_timeout", TN_CONF_TIME, "120s", 10, TN_MS(3600), NULL,
	  "waiting for a store's reply or for it to take data" },
	{ "router_store_idle_timeout", TN_CONF_TIME, "30s", 10, TN_MS(3600), NULL,
	  "an idle pooled connection is closed after this" },
	{ "router_store_idle_max", TN_CONF_INT, "16", 0, 10000, NULL,
	  "idle connections kept per store" },
	{ "router_store_max_connections", TN_CONF_INT, "50", 1, 100000, NULL,
	  "connections to one store at once (more transactions wait for one)" },
	{ "router_store_xclient", TN_CONF_BOOL, "yes", 0, 0, NULL,
	  "tell stores that offer XCLIENT the client, its HELO and our session id" },
	{ "router_health_interval", TN_CONF_TIME, "5s", 10, TN_MS(3600), NULL,
	  "active health check of every store (NOOP or LHLO)" },
	{ "router_health_failures", TN_CONF_INT, "2", 1, 1000, NULL,
	  "consecutive failures that mark a store down" },
	{ "router_buffer_high_watermark", TN_CONF_SIZE, "256k", 4096, 1024 * 1024 * 1024, NULL,
	  "data held for one store above which the client is not read" },
	{ "router_buffer_low_watermark", TN_CONF_SIZE, "64k", 0, 1024 * 1024 * 1024, NULL,
	  "data held for every store below which reading resumes" },
	{ "router_spool_threshold", TN_CONF_SIZE, "1m", 0, 0, NULL,
	  "messages declared (SIZE=) this large are spooled to disk (0: never)" },
	{ "router_spool_directory", TN_CONF_STR, "/var/spool/tenantmail/lmtp-router", 0, 0, NULL,
	  "where spooled messages are kept, as unlinked files" },
	{ "router_lookup_threads", TN_CONF_INT, "4", 1, 256, NULL,
	  "worker threads for lookups that miss the in-process cache" },
	{ "router_log_level", TN_CONF_ENUM, "info", 0, 0, "debug|info|warning|error",
	  "the router's least important syslog level" },
	TN_CONF_END
};
