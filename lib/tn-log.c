/*++
 * NAME
 *	tn-log 3
 * SUMMARY
 *	logging to syslog and/or stderr with mail context (see tn-log.h)
 * DESCRIPTION
 *	One call makes one line, built in a buffer on the caller's stack:
 *
 *	    ident[pid]: level: session=S queue=Q tenant=T: message
 *
 *	The "ident[pid]: " part goes to stderr only (syslog(3) adds its
 *	own); syslog receives the rest with the priority of the level.
 *	The line written to stderr, newline included, is at most
 *	TN_LOG_LINE_MAX bytes: a longer line is cut and ends in "...".
 *
 *	Context values pass through tn_log_sanitize() and keep at most
 *	TN_LOG_VALUE_MAX characters; a NULL or empty value is left out,
 *	and a context with no values adds no prefix at all. Control
 *	characters (CR, LF, TAB, DEL, ...) in the formatted line become
 *	'?', so that one call never produces two lines. The line is
 *	then handed to one write(2) on stderr and/or one syslog(3) call.
 *
 *	The ident is copied into static storage by tn_log_init(); it,
 *	the level and the destinations are plain globals meant to be set
 *	once at start-up, before threads exist. Until tn_log_init() is
 *	called, lines go to stderr with the ident "tenantmail".
 *	tn_log() leaves errno as it found it, and "%m" may be used.
 *	A handler set with tn_log_set_handler() takes the lines instead
 *	(Dovecot modules hand them to Dovecot's log).
 *--*/
#include <errno.h>
#include <paths.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <syslog.h>
#include <unistd.h>

#include "tn-log.h"
#include "tn-time.h"

#define LOG_IDENT_MAX	64

struct log_level_info {
	const char *word;
	int priority;
};

static const struct log_level_info log_levels[] = {
	[TN_LOG_DEBUG] = { "debug", LOG_DEBUG },
	[TN_LOG_INFO] = { "info", LOG_INFO },
	[TN_LOG_WARNING] = { "warning", LOG_WARNING },
	[TN_LOG_ERROR] = { "error", LOG_ERR },
	[TN_LOG_FATAL] = { "fatal", LOG_CRIT },
};

static char log_ident[LOG_IDENT_MAX] = "tenantmail";
static int log_dest = TN_LOG_TO_STDERR;
static enum tn_log_level log_level = TN_LOG_INFO;
static bool log_syslog_open;
static tn_log_handler_t *log_handler;
static void *log_handler_context;

/* A line under construction; len never exceeds TN_LOG_LINE_MAX - 1, so
 * that the terminating NUL can become the newline. */
struct log_line {
	char buf[TN_LOG_LINE_MAX];
	size_t len;
	bool cut;
};

static enum tn_log_level log_level_clamp(enum tn_log_level level)
{
	if ((unsigned int)level > TN_LOG_FATAL)
		return TN_LOG_ERROR;
	return level;
}

void tn_log_init(const char *ident, int dest, int facility)
{
	if (ident != NULL)
		tn_log_sanitize(log_ident, sizeof(log_ident), ident, strlen(ident));
	if (log_syslog_open) {
		closelog();
		log_syslog_open = false;
	}
	log_dest = dest;
	if ((dest & TN_LOG_TO_SYSLOG) != 0) {
		openlog(log_ident, LOG_PID | LOG_NDELAY, facility);
		log_syslog_open = true;
	}
}

/* Whether a syslog daemon's socket exists, looked at once a second at
 * most. Without one (a container, a machine whose only log is the
 * daemons' stderr) glibc's syslog(3) makes, for every line, a socket, a
 * failed connect and a close: measurable on a milter's mail path. */
static bool log_syslog_listening(void)
{
	static _Atomic int64_t checked_ms = -1000000;
	static _Atomic bool listening = true;
	int64_t now = tn_time_now_ms();

	if (now - atomic_load_explicit(&checked_ms, memory_order_relaxed) >= 1000) {
		atomic_store_explicit(&listening, access(_PATH_LOG, F_OK) == 0,
				      memory_order_relaxed);
		atomic_store_explicit(&checked_ms, now, memory_order_relaxed);
	}
	return atomic_load_explicit(&listening, memory_order_relaxed);
}

void tn_log_set_handler(tn_log_handler_t *handler, void *context)
{
	log_handler = handler;
	log_handler_context = context;
}

void tn_log_set_level(enum tn_log_level level)
{
	log_level = log_level_clamp(level);
}

int tn_log_level_parse(const char *name)
{
	int level;

	if (name == NULL)
		return -1;
	for (level = TN_LOG_DEBUG; level <= TN_LOG_ERROR; level++) {
		if (strcmp(name, log_levels[level].word) == 0)
			return level;
	}
	return -1;
}

static void __attribute__((format(printf, 2, 0)))
log_line_vadd(struct log_line *line, const char *fmt, va_list ap)
{
	size_t room = sizeof(line->buf) - line->len;
	int n;

	if (line->cut)
		return;
	n = vsnprintf(line->buf + line->len, room, fmt, ap);
	if (n < 0) {
		line->buf[line->len] = '\0';
	} else if ((size_t)n >= room) {
		line->len = sizeof(line->buf) - 1;
		line->cut = true;
	} else {
		line->len += (size_t)n;
	}
}

static void __attribute__((format(printf, 2, 3)))
log_line_add(struct log_line *line, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_line_vadd(line, fmt, ap);
	va_end(ap);
}

static void log_line_add_ctx(struct log_line *line, const struct tn_log_ctx *ctx)
{
	const char *const names[] = { "session", "queue", "tenant" };
	const char *const values[] = { ctx->session, ctx->queue_id, ctx->tenant };
	char clean[TN_LOG_VALUE_MAX + 1];
	bool any = false;
	size_t i;

	for (i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		if (values[i] == NULL || values[i][0] == '\0')
			continue;
		tn_log_sanitize(clean, sizeof(clean), values[i], strlen(values[i]));
		log_line_add(line, "%s%s=%s", any ? " " : "", names[i], clean);
		any = true;
	}
	if (any)
		log_line_add(line, ": ");
}

/* Mark a cut line and make sure no byte of it can end or split it. */
static void log_line_finish(struct log_line *line)
{
	size_t i;

	if (line->cut)
		memcpy(line->buf + line->len - 3, "...", 3);
	for (i = 0; i < line->len; i++) {
		unsigned char c = (unsigned char)line->buf[i];

		if (c < 0x20 || c == 0x7f)
			line->buf[i] = '?';
	}
	line->buf[line->len] = '\0';
}

static void log_write_stderr(struct log_line *line)
{
	ssize_t n;

	line->buf[line->len] = '\n';
	do {
		n = write(STDERR_FILENO, line->buf, line->len + 1);
	} while (n < 0 && errno == EINTR);
	line->buf[line->len] = '\0';
}

void tn_logv(enum tn_log_level level, const struct tn_log_ctx *ctx,
	     const char *fmt, va_list ap)
{
	struct log_line line;
	size_t body, text;
	int saved_errno = errno;

	level = log_level_clamp(level);
	if (level < log_level)
		return;
	line.len = 0;
	line.cut = false;
	log_line_add(&line, "%s[%ld]: ", log_ident, (long)getpid());
	body = line.len;
	log_line_add(&line, "%s: ", log_levels[level].word);
	text = line.len;
	if (ctx != NULL)
		log_line_add_ctx(&line, ctx);
	errno = saved_errno;
	log_line_vadd(&line, fmt, ap);
	log_line_finish(&line);
	if (log_handler != NULL &&
	    log_handler(level, line.buf + text, log_handler_context)) {
		errno = saved_errno;
		return;
	}
	if ((log_dest & TN_LOG_TO_SYSLOG) != 0 && log_syslog_listening())
		syslog(log_levels[level].priority, "%s", line.buf + body);
	if ((log_dest & TN_LOG_TO_STDERR) != 0)
		log_write_stderr(&line);
	errno = saved_errno;
}

void tn_log(enum tn_log_level level, const struct tn_log_ctx *ctx,
	    const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	tn_logv(level, ctx, fmt, ap);
	va_end(ap);
}

/* Bytes that one source byte takes in sanitised output. */
static size_t sanitize_width(unsigned char c)
{
	return (c >= 0x20 && c <= 0x7e && c != '\\') ? 1 : 4;
}

static size_t sanitize_put(char *dst, unsigned char c)
{
	static const char hex[] = "0123456789abcdef";

	if (sanitize_width(c) == 1) {
		dst[0] = (char)c;
		return 1;
	}
	dst[0] = '\\';
	dst[1] = 'x';
	dst[2] = hex[c >> 4];
	dst[3] = hex[c & 0x0f];
	return 4;
}

char *tn_log_sanitize(char *dst, size_t dstsize, const char *src, size_t srclen)
{
	const unsigned char *s = (const unsigned char *)src;
	size_t cap, need = 0, limit, out = 0, i;

	if (dstsize == 0)
		return dst;
	cap = dstsize - 1;
	for (i = 0; i < srclen && need <= cap; i++)
		need += sanitize_width(s[i]);
	limit = need <= cap ? cap : (cap > 3 ? cap - 3 : 0);
	for (i = 0; i < srclen && out + sanitize_width(s[i]) <= limit; i++)
		out += sanitize_put(dst + out, s[i]);
	if (need > cap) {
		size_t dots = cap < 3 ? cap : 3;

		memcpy(dst + out, "...", dots);
		out += dots;
	}
	dst[out] = '\0';
	return dst;
}
