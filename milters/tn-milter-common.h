/*++
 * NAME
 *	tn-milter-common 3h
 * SUMMARY
 *	what every tenantmail milter needs besides its callbacks
 * DESCRIPTION
 *	Shared by tn-quota-milter and (later) tn-submit-milter; knows
 *	nothing of libmilter's callbacks.
 *
 *	Listening socket. tn_milter_common_socket_setup() is called after
 *	smfi_opensocket() and before the privilege drop: for a TCP
 *	socket it finds libmilter's listening descriptor (libmilter has
 *	no call that returns it: the one socket of this process in the
 *	listening state bound to the configured port) and sets
 *	TCP_NODELAY on it, which Linux copies to every accepted
 *	connection (small milter replies written separately otherwise
 *	meet Nagle's algorithm and the peer's delayed ACK); for a unix
 *	socket it sets the mode and hands the file to the daemon's user,
 *	so that the socket stays usable after the drop.
 *
 *	Reload. libmilter's own signal thread takes SIGHUP, SIGINT and
 *	SIGTERM as "stop". tn_milter_common_reload_block() blocks SIGUSR1
 *	and those three in the calling thread (main, before any thread
 *	exists, so every thread inherits the mask: only libmilter's signal
 *	thread and ours take them, with sigwait());
 *	tn_milter_common_reload_start() starts
 *	a thread that waits for SIGUSR1 with sigwait() and calls the
 *	callback in that thread, never in a signal handler.
 *
 *	Metrics. tn_milter_common_metrics_start() serves GET /metrics
 *	(Prometheus text from the render callback, freed with free()) on
 *	"address:port" with libmicrohttpd's own thread; 404 elsewhere.
 *	struct tn_milter_common_hist is a latency histogram updated with
 *	atomics (no lock on the mail path).
 *--*/
#ifndef TN_MILTER_COMMON_H
#define TN_MILTER_COMMON_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "tn-conf.h"

#define TN_MILTER_COMMON_BUCKETS 12

struct tn_milter_common_hist {
	atomic_uint_fast64_t buckets[TN_MILTER_COMMON_BUCKETS];
	atomic_uint_fast64_t count;
	atomic_uint_fast64_t sum_us;
};

/* -1 with *error_r (static or thread-local text). */
int tn_milter_common_socket_setup(const char *spec, unsigned mode, const char *user,
				  const char **error_r);
/* "0660" and the like: 0 with *mode_r, or -1. */
int tn_milter_common_parse_mode(const char *text, unsigned *mode_r);

/* The command line again, for reloads: -c (else $TENANTMAIL_CONF, else
 * the default file) and the -o overrides in order (tn_daemon_configure()
 * has checked them). args_load() applies the file and then the overrides
 * to conf: 0, or -1 with *error_r. */
struct tn_milter_common_args {
	const char *conf_path;
	char **overrides;
	size_t noverrides;
};
void tn_milter_common_args_save(struct tn_milter_common_args *args, int argc, char **argv);
int tn_milter_common_args_load(const struct tn_milter_common_args *args,
			       struct tn_conf *conf, const char **error_r);
void tn_milter_common_args_free(struct tn_milter_common_args *args);

/* libmilter's session threads are detached and may outlive smfi_main():
 * wait (up to 5 s) for the open-session gauge to fall to 0 before the
 * shared backends go. false, after a warning, when some session never
 * closes: the caller then leaves them allocated. */
bool tn_milter_common_quiesce(atomic_int_fast64_t *sessions);

void tn_milter_common_reload_block(void);
int tn_milter_common_reload_start(void (*callback)(void *), void *context,
				  const char **error_r);

struct tn_milter_common_metrics;
struct tn_milter_common_metrics *tn_milter_common_metrics_start(const char *listen,
								 char *(*render)(void *),
								 void *context,
								 const char **error_r);
void tn_milter_common_metrics_stop(struct tn_milter_common_metrics **m);

void tn_milter_common_hist_add(struct tn_milter_common_hist *h, int64_t us);
/* "# TYPE" line and the buckets, _sum and _count of name. */
void tn_milter_common_hist_render(const struct tn_milter_common_hist *h, const char *name,
				  FILE *out);

#endif
