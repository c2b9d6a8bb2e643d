/*++
 * NAME
 *	tn-auth-policy 3h
 * SUMMARY
 *	what the Dovecot auth driver "tenant" answers for an account
 * DESCRIPTION
 *	The decisions of dovecot-plugins/auth-tenant.c, without Dovecot:
 *	its parameters (section [dovecot-auth] of tenantmail.conf), whether
 *	a resolved account may log in or has a userdb entry, the home and
 *	mail templates, and where a proxy sends a mailbox. Unit tests link
 *	this file with lib/ only (tests/unit/test-auth-policy.c).
 *
 *	Memory: lib/'s fail-stop tn_mem; strings returned are the caller's
 *	to free with tn_mem_free().
 *
 *	Templates (dovecot_home, dovecot_mail) know %u (the address), %n
 *	(its local part), %d (its domain), %t (the tenant id) and %% (a
 *	percent sign). A value put in a template must not contain '/' nor
 *	be empty, "." or "..", so that no directory entry can make a path
 *	leave the tree it is meant for.
 *--*/
#ifndef TN_AUTH_POLICY_H
#define TN_AUTH_POLICY_H

#include <stdbool.h>
#include <stdint.h>

#include "tn-conf.h"
#include "tn-record.h"
#include "tn-time.h"

/* The section of tenantmail.conf the driver reads. */
#define TN_AUTH_CONF_SECTION "dovecot-auth"
/* The router's section, read for placement (its default pool). */
#define TN_AUTH_ROUTER_SECTION "tn-lmtp-router"

extern const struct tn_conf_param tn_auth_params[];

/* dovecot_placement: the index of its words "none|hash|hash-record",
 * the same words and meaning as router_placement */
enum tn_auth_placement {
	TN_AUTH_PLACE_NONE,
	TN_AUTH_PLACE_HASH,
	TN_AUTH_PLACE_RECORD,
};

struct tn_auth_settings {
	const char *uid;		/* "" = not returned */
	const char *gid;
	const char *home;		/* template, "" = not returned */
	const char *mail;		/* template, "" = not returned */
	bool proxy;
	int64_t proxy_port;		/* 0 = not returned */
	const char *default_host;	/* "" = none */
	const char *const *pool_hosts;	/* "pool:host" items */
	enum tn_auth_placement placement;
	char **place_members;		/* the router's default pool, normalised
					   "host:port" (tn_auth_placement_read) */
	size_t place_nmembers;
	bool blocking;			/* in auth workers, not the auth process */
	unsigned lookup_threads;	/* auth process: threads for misses */
	int64_t lockout_user_failures;	/* 0 = off */
	int64_t lockout_ip_failures;	/* 0 = off */
	tn_msec_t lockout_window;
};

enum tn_auth_verdict {
	TN_AUTH_TEMPFAIL,	/* no answer: Dovecot's internal failure */
	TN_AUTH_UNKNOWN,	/* no such login / user */
	TN_AUTH_DISABLED,	/* exists, may not log in (reason given) */
	TN_AUTH_OK,
};

/* Brute-force protection: true when the failures counted within the
 * window reach either limit (a limit of 0 is off). */
bool tn_auth_locked_out(const struct tn_auth_settings *set,
			int64_t user_failures, int64_t ip_failures);

/* Read and check the driver's parameters (pointers into conf; no
 * placement members yet). */
int tn_auth_settings_read(const struct tn_conf *conf,
			  struct tn_auth_settings *set_r, const char **error_r);
/* A tn_conf for the router's section of the same file, with the
 * router's parameter table (lib/tn-router-params.c): load the file
 * into it, then tn_auth_placement_read(). */
struct tn_conf *tn_auth_router_conf_create(void);
/* dovecot_placement != none: the members of router_default_pool from
 * router_pool_members, normalised with router_lmtp_port exactly as the
 * router does (tn_place_pool_members), so that both hash the same
 * names. -1 with *error_r when the router's section names no default
 * pool, or (hash-record) a member is an IPv6 address. */
int tn_auth_placement_read(struct tn_auth_settings *set, const struct tn_conf *router_conf,
			   const char **error_r);
/* Free what tn_auth_placement_read() allocated. */
void tn_auth_settings_clear(struct tn_auth_settings *set);

/* passdb: only an active mailbox with a password logs in; aliases,
 * domains and tenants are unknown logins. *reason_r (static or owned by
 * acct) says why, for the log. */
enum tn_auth_verdict tn_auth_login_verdict(enum tn_result res,
					   const struct tn_account *acct,
					   const char **reason_r);
/* userdb: a mailbox not deleted (after the cascade) has an entry. */
enum tn_auth_verdict tn_auth_user_verdict(enum tn_result res,
					  const struct tn_account *acct,
					  const char **reason_r);

/* Expand a template for a mailbox account: 0 and *out_r, or -1 with a
 * static *error_r. */
int tn_auth_expand(const char *tmpl, const struct tn_account *acct,
		   char **out_r, const char **error_r);

/* The store a proxy sends this mailbox to: its host (any ":port" there
 * is the LMTP port and is dropped), else its pool's host from
 * dovecot_pool_hosts, else -- with dovecot_placement, a mailbox with
 * neither host nor pool -- the member of the router's default pool
 * that rendezvous hashing picks (the router's choice, tn-place.h; its
 * port dropped likewise), else dovecot_default_host. 0 with *host_r, or
 * -1 when there is none. */
int tn_auth_route(const struct tn_auth_settings *set,
		  const struct tn_account *acct, char **host_r);
/* The same, and *member_r: the hashed member ("host:port", owned by
 * set) when the host came from placement, else NULL. */
int tn_auth_route_placed(const struct tn_auth_settings *set, const struct tn_account *acct,
			 char **host_r, const char **member_r);

#endif
