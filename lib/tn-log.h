/*++
 * NAME
 *	tn-log 3h
 * SUMMARY
 *	logging to syslog and/or stderr with mail context
 * DESCRIPTION
 *	Severities mean something:
 *	debug   - for developers, off unless asked for;
 *	info    - normal operation worth a line (a lookup answered, a start);
 *	warning - something went wrong and was recovered (failover, retry);
 *	error   - an admin must act (backend down, bad configuration);
 *	fatal   - the program cannot go on. Only main() may use it.
 *
 *	Every line about mail carries a context: session id, queue id and
 *	tenant, printed as "session=S queue=Q tenant=T: text" (absent fields
 *	are left out). Context values and anything marked untrusted are
 *	sanitised and length-bounded before they reach a log line.
 *
 *	tn_log() is thread-safe: each line is formatted into a local buffer
 *	and written with one write(2) / one syslog(3) call.
 *--*/
#ifndef TN_LOG_H
#define TN_LOG_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>

enum tn_log_level {
	TN_LOG_DEBUG,
	TN_LOG_INFO,
	TN_LOG_WARNING,
	TN_LOG_ERROR,
	TN_LOG_FATAL,
};

/* Destinations for tn_log_init(). */
#define TN_LOG_TO_SYSLOG 0x01
#define TN_LOG_TO_STDERR 0x02

/* Longest line written, including the context prefix. */
#define TN_LOG_LINE_MAX 2048
/* Longest untrusted value kept by tn_log_sanitize() callers by default. */
#define TN_LOG_VALUE_MAX 256

struct tn_log_ctx {
	const char *session;	/* SMTP/LMTP/HTTP session id, or NULL */
	const char *queue_id;	/* Postfix queue id, or NULL */
	const char *tenant;	/* tenant id, or NULL */
};

/* ident: program name for syslog and the stderr prefix;
 * dest: TN_LOG_TO_* bits; facility: syslog facility (e.g. LOG_MAIL). */
void tn_log_init(const char *ident, int dest, int facility);
/* Lines below level are dropped (default: TN_LOG_INFO). */
void tn_log_set_level(enum tn_log_level level);
/* A host with a log of its own (a Dovecot module): when set, each line
 * goes to handler instead of syslog and stderr, as text without the
 * ident, pid and level ("session=S ...: message"), unless the handler
 * returns false (then the destinations of tn_log_init() get it). The
 * handler may be called from any thread. NULL restores the default. */
typedef bool tn_log_handler_t(enum tn_log_level level, const char *text,
			      void *context);
void tn_log_set_handler(tn_log_handler_t *handler, void *context);
/* Parse "debug|info|warning|error" (returns -1 when unknown). */
int tn_log_level_parse(const char *name);

void tn_log(enum tn_log_level level, const struct tn_log_ctx *ctx,
	    const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void tn_logv(enum tn_log_level level, const struct tn_log_ctx *ctx,
	     const char *fmt, va_list ap) __attribute__((format(printf, 3, 0)));

#define tn_debug(...)   tn_log(TN_LOG_DEBUG, NULL, __VA_ARGS__)
#define tn_info(...)    tn_log(TN_LOG_INFO, NULL, __VA_ARGS__)
#define tn_warning(...) tn_log(TN_LOG_WARNING, NULL, __VA_ARGS__)
#define tn_error(...)   tn_log(TN_LOG_ERROR, NULL, __VA_ARGS__)

/* Copy untrusted src (srclen bytes, may hold NUL) into dst (dstsize > 0)
 * as printable ASCII: bytes outside 0x20..0x7e and the backslash become
 * \xNN escapes; output that would not fit is cut and ends in "...".
 * Always NUL-terminates; returns dst. */
char *tn_log_sanitize(char *dst, size_t dstsize, const char *src, size_t srclen);

#endif
