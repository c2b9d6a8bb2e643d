/*++
 * NAME
 *	mapd-metrics 3h
 * SUMMARY
 *	tn-mapd's counters and its /metrics endpoint
 * DESCRIPTION
 *	The event loop counts (relaxed atomic increments, no lock); the
 *	libmicrohttpd thread renders Prometheus text from them and from
 *	the lookup library's own counters:
 *	    tn_mapd_requests_total{map,result}   result ok|notfound|temp|perm
 *	    tn_mapd_request_seconds{map}         histogram, request to reply
 *	    tn_mapd_connections                  open client connections
 *	    tn_mapd_connections_total, tn_mapd_connections_refused_total
 *	    tn_mapd_protocol_errors_total        malformed or over-long requests
 *	    tn_mapd_invalid_keys_total           answered without a lookup
 *	    tn_mapd_lookups_total ...            tn_lookup_metrics()
 *
 *	tn_mapd_metrics_start() serves GET /metrics on "address:port"
 *	(numeric IPv4 or [IPv6]); anything else is 404.
 *--*/
#ifndef MAPD_METRICS_H
#define MAPD_METRICS_H

#include <stdint.h>

#include "mapd-policy.h"
#include "tn-lookup.h"

enum tn_mapd_result {
	TN_MAPD_R_OK,
	TN_MAPD_R_NOTFOUND,
	TN_MAPD_R_TEMP,
	TN_MAPD_R_PERM,
	TN_MAPD_NRESULTS
};

#define TN_MAPD_NBUCKETS 14
/* map index TN_MAPD_NMAPS: requests that named no known map */
#define TN_MAPD_MAP_NONE TN_MAPD_NMAPS

struct tn_mapd_stats {
	uint64_t requests[TN_MAPD_NMAPS + 1][TN_MAPD_NRESULTS];
	uint64_t buckets[TN_MAPD_NMAPS + 1][TN_MAPD_NBUCKETS];
	uint64_t lat_count[TN_MAPD_NMAPS + 1];
	uint64_t lat_sum_us[TN_MAPD_NMAPS + 1];
	uint64_t connections, connections_total, connections_refused;
	uint64_t protocol_errors, invalid_keys;
};

void tn_mapd_metrics_request(struct tn_mapd_stats *st, unsigned map,
			     enum tn_mapd_result result, int64_t usec);
void tn_mapd_metrics_add(uint64_t *counter, int64_t delta);
char *tn_mapd_metrics_render(struct tn_mapd_stats *st, struct tn_lookup *lk);

struct tn_mapd_metrics;
struct tn_mapd_metrics *tn_mapd_metrics_start(const char *listen, struct tn_mapd_stats *st,
					      struct tn_lookup *lk, const char **error_r);
void tn_mapd_metrics_stop(struct tn_mapd_metrics **m);

#endif
