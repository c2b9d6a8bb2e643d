/*++
 * NAME
 *	router 3h
 * SUMMARY
 *	tn-lmtp-router's objects, shared by its files
 * DESCRIPTION
 *	One libevent loop in one thread does everything (lookups run in the
 *	worker threads of tn-lookup-event and come back to the loop).
 *
 *	struct tn_router      the daemon: settings, members, sessions, counters
 *	struct tn_router_member  one store ("host:port"), shared by every pool
 *	                      that lists it and by mailboxes pinned to it:
 *	                      health, drain flag, idle connections, counters
 *	struct tn_router_conn one LMTP connection to a store (router-store.c)
 *	struct tn_router_session one client connection (router-session.c)
 *	struct tn_router_dtx  a session's transaction towards one destination
 *	                      (a pool or a pinned host): its recipients, the
 *	                      member candidates in order, the connection, the
 *	                      message data not yet written to it
 *
 *	struct tn_place_record the placement recorder (lib/tn-place-record.c,
 *	                      made by router-place.c): a worker thread that
 *	                      writes hash placements to the directory
 *	                      (router_placement = hash-record)
 *
 *	Ownership: the router owns members and sessions; a session owns its
 *	recipients and dtxs; a dtx borrows a connection from its member and
 *	gives it back (idle) or closes it. Objects whose callbacks may be on
 *	the stack are never freed there: sessions and connections are
 *	marked dead and freed from a zero-delay event.
 *--*/
#ifndef ROUTER_H
#define ROUTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/listener.h>

#include "router-route.h"
#include "tn-conf.h"
#include "tn-log.h"
#include "tn-lookup-event.h"
#include "tn-place-record.h"
#include "tn-time.h"

#define ROUTER_SID_SIZE 20
#define ROUTER_LAT_BUCKETS 10

/* recipients routed, by result (metrics) */
enum tn_router_result {
	TN_RR_DELIVERED,	/* the store accepted the message */
	TN_RR_STORE_REFUSED,	/* the store answered 4xx/5xx */
	TN_RR_UNKNOWN,		/* 550 5.1.1 */
	TN_RR_DIRECTORY,	/* 451 4.3.0 */
	TN_RR_NOROUTE,		/* 451 4.3.5 */
	TN_RR_UNAVAILABLE,	/* 451 4.4.x: no store could be reached */
	TN_RR_TOO_BIG,		/* 552 5.3.4 */
	TN_RR_LOOP,		/* 554 5.4.6: a routing loop or too many hops */
	TN_RR_N
};

/* store errors (metrics) */
enum tn_router_store_error {
	TN_SE_CONNECT,		/* refused, unreachable, connect timeout */
	TN_SE_TIMEOUT,		/* no reply in time */
	TN_SE_421,		/* the store said 421 */
	TN_SE_LOST,		/* connection lost or protocol error */
	TN_SE_N
};

struct tn_router_settings {
	size_t line_max;
	size_t rcpt_max;
	uint64_t size_max;		/* 0: unlimited */
	tn_msec_t session_timeout;
	tn_msec_t connect_timeout;
	tn_msec_t store_timeout;
	tn_msec_t idle_timeout;
	tn_msec_t health_interval;
	unsigned idle_max;
	unsigned conns_max;		/* per store */
	unsigned fail_threshold;
	bool xclient;			/* tell stores the client (XCLIENT) */
	unsigned max_sessions;
	unsigned error_limit;
	size_t high_wm;
	size_t low_wm;
	uint64_t spool_threshold;	/* 0: never */
	const char *spool_dir;
	const char *hostname;
	bool received_header;		/* prepend our Received: line */
	unsigned max_hops;		/* Received: lines a message may carry */
};

struct tn_router_conn;

struct tn_router_member {
	struct tn_router *r;
	char *name;			/* normalised host:port */
	char *host;
	unsigned port;
	bool configured;		/* listed in router_pool_members */
	bool up;
	bool drained;
	unsigned failures;		/* consecutive */
	struct tn_router_conn *conns;	/* every open connection (list) */
	struct tn_router_conn *idle;	/* idle connections (list) */
	unsigned nidle;
	unsigned nconns;		/* all open connections */
	struct tn_router_dtx *wait_head;	/* transactions waiting for a connection */
	struct tn_router_dtx **wait_tail;
	struct tn_router_conn *health;	/* health check in flight */
	char *last_error;
	bool loop;			/* answered with our own greeting */
	/* counters */
	uint64_t transactions;
	uint64_t errors[TN_SE_N];
	uint64_t lat_buckets[ROUTER_LAT_BUCKETS];
	uint64_t lat_count;
	double lat_sum;
};

struct tn_router {
	struct tn_conf *conf;
	struct tn_router_settings set;
	struct event_base *base;
	struct evdns_base *dns;
	struct tn_lookup *lk;
	struct tn_lookup_event *le;
	struct tn_router_pools *pools;
	struct tn_place_record *place;	/* NULL unless hash-record */
	struct tn_router_member **members;
	size_t nmembers;
	struct evconnlistener **listeners;
	size_t nlisteners;
	char **unix_paths;		/* unix sockets we created (removed at exit) */
	ino_t *unix_inodes;		/* ... unless another process replaced them */
	size_t nunix;
	struct evhttp *http;
	struct tn_router_control *control;
	struct event *health_timer;
	struct event *sig_term, *sig_int;
	struct tn_router_session *sessions;	/* list of live sessions */
	unsigned nsessions;
	uint64_t session_seq;
	char sid_prefix[8];
	char instance[24];		/* "tn-lmtp-router/<random>": in our greeting,
					   so that a store answering with it is us */
	bool stopping;
	/* counters */
	uint64_t sessions_total;
	uint64_t sessions_refused;
	uint64_t messages;
	uint64_t throttled;		/* times a session stopped reading (watermark) */
	uint64_t spooled;		/* messages spooled to disk */
	uint64_t spool_errors;
	uint64_t results[TN_RR_N];
};

/* router-store.c: members and connections to stores */
struct tn_router_member *tn_router_store_member(struct tn_router *r, const char *name,
						bool configured);
struct tn_router_member *tn_router_store_member_find(struct tn_router *r, const char *name);
void tn_router_store_free_all(struct tn_router *r);
void tn_router_store_health_start(struct tn_router *r);
const char *tn_router_store_error_name(enum tn_router_store_error e);
void tn_router_store_drain(struct tn_router_member *m, bool drain);

/* The transaction interface a session uses (router-store.c). */
struct tn_router_dtx;
struct tn_router_session;
struct tn_router_dtx *tn_router_store_dtx_create(struct tn_router_session *s,
						 const char *key,
						 struct tn_router_member **cands, size_t ncands);
void tn_router_store_dtx_add_rcpt(struct tn_router_dtx *d, size_t rcpt);
void tn_router_store_dtx_start(struct tn_router_dtx *d);
/* message data (already dot-stuffed, CRLF lines) */
void tn_router_store_dtx_write(struct tn_router_dtx *d, const void *data, size_t len);
/* a spooled message: the first len bytes of seg (shared, reference counted) */
void tn_router_store_dtx_write_file(struct tn_router_dtx *d, struct evbuffer_file_segment *seg,
				    size_t len);
/* the end of the data: ".\r\n" follows */
void tn_router_store_dtx_finish(struct tn_router_dtx *d);
/* bytes waiting for this destination (flow control) */
size_t tn_router_store_dtx_backlog(const struct tn_router_dtx *d);
bool tn_router_store_dtx_done(const struct tn_router_dtx *d);
const char *tn_router_store_dtx_key(const struct tn_router_dtx *d);
/* session gone or message aborted: connection closed, nothing delivered */
void tn_router_store_dtx_destroy(struct tn_router_dtx **d);

/* router-spool.c: an unlinked file in router_spool_directory, or -1
 * with errno */
int tn_router_spool_open(struct tn_router *r);

/* router-session.c */
void tn_router_session_accept(struct tn_router *r, evutil_socket_t fd,
			      const struct sockaddr *sa, int salen);
void tn_router_session_close_all(struct tn_router *r);
/* Stopping: the sessions outside a transaction get 421 now, the others
 * after their transaction's replies. */
void tn_router_session_stop_idle(struct tn_router *r);
/* callbacks from router-store.c */
const char *tn_router_session_rcpt_address(struct tn_router_session *s, size_t rcpt);
const char *tn_router_session_sender(struct tn_router_session *s);
const char *tn_router_session_id(struct tn_router_session *s);
uint64_t tn_router_session_size(struct tn_router_session *s);
bool tn_router_session_8bit(struct tn_router_session *s);
/* the original client (XFORWARD ADDR/HELO, else the peer), or NULL */
const char *tn_router_session_client_addr(struct tn_router_session *s);
const char *tn_router_session_client_helo(struct tn_router_session *s);
void tn_router_session_rcpt_reply(struct tn_router_session *s, size_t rcpt, int code,
				  const char *text, enum tn_router_result result,
				  const char *member);
void tn_router_session_dtx_progress(struct tn_router_session *s);

/* router-place.c: recording placements (hash-record), lib/tn-place-record.h:
 * the provisioning write path with router_placement_bind_dn (else
 * prov_ldap_bind_dn) and its password file, read now (as root), and its
 * worker thread, started. NULL with *error_r on bad settings. */
struct tn_place_record *tn_router_place_create(struct tn_conf *conf, struct tn_lookup *lk,
					       const char **error_r);

/* router-control.c */
struct tn_router_control;
int tn_router_control_start(struct tn_router *r, const char *path, const char **error_r);
void tn_router_control_stop(struct tn_router *r);
int tn_router_control_chown(struct tn_router *r, uid_t uid, gid_t gid);

/* router-metrics.c */
int tn_router_metrics_start(struct tn_router *r, const char *listen, const char **error_r);
void tn_router_metrics_stop(struct tn_router *r);
char *tn_router_metrics_render(struct tn_router *r);

#endif
