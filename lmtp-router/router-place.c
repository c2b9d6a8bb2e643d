/*++
 * NAME
 *	router-place 3
 * SUMMARY
 *	tn-lmtp-router: record hash placements in the directory
 * DESCRIPTION
 *	With router_placement = hash-record, the first delivery to a
 *	mailbox that has neither tnMailHost nor tnMailPool (its own or its
 *	tenant's) goes to the member of router_default_pool that
 *	rendezvous hashing picks (router-route.c, lib/tn-place.c), and
 *	that member is written to the mailbox's tnMailHost, so that the
 *	mailbox stays there whatever later happens to the pool's member
 *	list, and the Dovecot proxy (which reads tnMailHost first) finds
 *	it there too.
 *
 *	The write is lib/tn-place-record.c's, shared with the Dovecot
 *	auth driver (dovecot_placement = hash-record places a mailbox that
 *	logs in before its first delivery): a compare-and-write through
 *	the provisioning core in a worker thread, so the loop never waits
 *	for the directory. Here: the router's credentials
 *	(router_placement_bind_dn, router_placement_password_file) and
 *	its words on the log lines ("to=<address>", "tried again at the
 *	next delivery").
 *--*/
#include "tn-build.h"

#include "router.h"

static const struct tn_place_record_settings router_place_settings = {
	.actor_id = "tn-lmtp-router",
	.label = "to",
	.writer = "router",
	.uses = "deliveries",
	.retry = "delivery",
};

struct tn_place_record *tn_router_place_create(struct tn_conf *conf, struct tn_lookup *lk,
					       const char **error_r)
{
	struct tn_place_record *pl;

	if (tn_place_record_credentials(conf, "router_placement = hash-record",
					"router_placement_bind_dn",
					"router_placement_password_file", error_r) < 0 ||
	    (pl = tn_place_record_create(conf, lk, &router_place_settings, error_r)) == NULL)
		return NULL;
	if (tn_place_record_start(pl, error_r) < 0) {
		*error_r = "router_placement: cannot start the worker thread";
		tn_place_record_destroy(&pl);
		return NULL;
	}
	return pl;
}
