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

extern const struct tn_conf_param tn_auth_params[];

struct tn_auth_settings {
	const char *uid;		/* "" = not returned */
	const char *gid;
	const char *home;		/* template, "" = not returned */
	const char *mail;		/* template, "" = not returned */
	bool proxy;
	int64_t proxy_port;		/* 0 = not returned */
	const char *default_host;	/* "" = none */
	const char *const *pool_hosts;	/* "pool:host" items */
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

/* Read and check the driver's parameters (pointers into conf). */
int tn_auth_settings_read(const struct tn_conf *conf,
			  struct tn_auth_settings *set_r, const char **error_r);

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
 * dovecot_pool_hosts, else dovecot_default_host. 0 with *host_r, or -1
 * when there is none. */
int tn_auth_route(const struct tn_auth_settings *set,
		  const struct tn_account *acct, char **host_r);

#endif
