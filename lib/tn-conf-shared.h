/*++
 * NAME
 *	tn-conf-shared 3h
 * SUMMARY
 *	the parameters every program accepts in a shared tenantmail.conf
 * DESCRIPTION
 *	One tenantmail.conf serves every program on a host (tnctl,
 *	tn-hookd, tn-provisiond, the Dovecot auth driver and quota
 *	plugin, the milters): each accepts at the top level the
 *	parameters of the others, so that a line meant for one is never
 *	an error for another. A program's own parameters that no other
 *	program knows (provd_*, dovecot_*) go in its section.
 *
 *	TN_CONF_SHARED_TABLES expands to the shared tables, for the
 *	start of a NULL-terminated table list given to tn_conf_create():
 *	    static const struct tn_conf_param *const tables[] = {
 *		TN_CONF_SHARED_TABLES, my_params, NULL };
 *--*/
#ifndef TN_CONF_SHARED_H
#define TN_CONF_SHARED_H

#include "tn-conf.h"

extern const struct tn_conf_param tn_lookup_params[];	/* tn-lookup.h */
extern const struct tn_conf_param tn_outbox_params[];	/* tn-outbox.h */
extern const struct tn_conf_param tn_hookd_params[];	/* tn-hook-spool.h */
extern const struct tn_conf_param tn_prov_params[];	/* tn-prov.h */

/* Not shared: the [tn-lmtp-router] section's (lib/tn-router-params.c),
 * read by tn-lmtp-router and, for placement, by the Dovecot auth driver. */
extern const struct tn_conf_param tn_router_params[];

#define TN_CONF_SHARED_TABLES \
	tn_lookup_params, tn_outbox_params, tn_hookd_params, tn_prov_params

#endif
