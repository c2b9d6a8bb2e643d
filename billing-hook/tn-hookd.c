/*++
 * NAME
 *	tn-hookd 8
 * SUMMARY
 *	deliver the event outbox as signed webhooks
 * SYNOPSIS
 *	tn-hookd [-c FILE] [-o NAME=VALUE]... [-e] [-n]
 * DESCRIPTION
 *	One libevent loop in one thread does all the work: inotify on new/
 *	and the queues, a periodic rescan, the fan-out of new events into
 *	per-endpoint queues (hard links, docs/hookd.md), and the requests
 *	(libcurl multi, sockets and timers driven by the same loop). Two
 *	other threads: /metrics (libmicrohttpd), which reads counters under
 *	hd->mlock, and the reaper, which unlinks delivered files and hands
 *	their items back through a pipe.
 *
 *	A file of new/ is a segment: the events of one producer's group
 *	commit, one per line. It is linked/renamed into each queue whose
 *	endpoint wants any of its events, and each endpoint indexes the
 *	events it wants (hookd.h). An event leaves its segment when
 *	delivered or when it fails (then it is written out as its own
 *	.retry file); a segment with none left is removed by the reaper.
 *
 *	Nothing on the delivery side is fsync'ed except the queue
 *	directories after a fan-out batch, before the names in new/ go, and
 *	the file system (syncfs, by the reaper) before a segment that
 *	retry files were written from is removed: a crash may send an
 *	event again (same webhook-id), never lose one.
 *--*/
#include "tn-build.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <grp.h>
#include <inttypes.h>
#include <limits.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <syslog.h>
#include <sysexits.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <event2/event.h>
#include <jansson.h>

#include "hookd.h"
#include "tn-conf.h"
#include "tn-conf-shared.h"
#include "tn-daemon.h"
#include "tn-hook-spool.h"
#include "tn-log.h"
#include "tn-lookup.h"
#include "tn-mem.h"
#include "tn-outbox.h"
#include "tn-webhook.h"

#define HOOKD_FANOUT_BATCH 256
#define HOOKD_BODY_MAX (TN_OUTBOX_EVENT_MAX + 1)
/* A file read whole: a segment (one line per event) and a byte more. */
#define HOOKD_FILE_MAX (TN_OUTBOX_SEGMENT_MAX + 1)
#define HOOKD_RESP_KEEP 200
#define HOOKD_STOP_GRACE_MS 5000
#define HOOKD_NBUCKETS 12
/* Bodies kept in memory between fan-out and the first attempt, at most. */
#define HOOKD_CACHE_MAX (64 * 1024 * 1024)
/* Delivered segments handed back to the producers for reuse (tmp/free.<n>),
 * and the largest one worth keeping. */
#define HOOKD_FREE_FILES 128
#define HOOKD_FREE_SIZE_MAX (1024 * 1024)
/* Idle easy handles kept per endpoint (connections live in the multi handle). */
#define HOOKD_EASY_KEEP 64

enum hookd_class { HC_2XX, HC_3XX, HC_4XX, HC_5XX, HC_ERROR, HC_N };
enum hookd_outcome { HO_DELIVERED, HO_RETRY, HO_DEAD, HO_DISABLED, HO_PAUSED, HO_N };

static const char *const hookd_class_names[HC_N] = { "2xx", "3xx", "4xx", "5xx", "error" };
static const char *const hookd_outcome_names[HO_N] = {
	"delivered", "retry", "dead", "disabled", "paused",
};
static const double hookd_buckets[HOOKD_NBUCKETS] = {
	0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10,
};

struct hookd;

struct hookd_ep {
	struct hookd *hd;
	struct tn_hook_endpoint conf;
	char *dir, *qdir, *deaddir, *disabled_path;
	struct hookd_queue q;
	unsigned inflight;
	unsigned reaping;		/* delivered, file being removed */
	bool disabled;			/* 410: marker file present */
	bool removed;			/* no longer in the endpoint files */
	int64_t paused_until_ms;	/* 429/503 Retry-After */
	int wd_dir, wd_dead;
	bool rescan_wanted;		/* a replay moved files out of dead/ */
	CURL *easy_pool[HOOKD_EASY_KEEP];	/* idle handles with the endpoint's options */
	unsigned neasy;
	/* metrics, under hd->mlock */
	uint64_t attempts[HC_N], outcomes[HO_N];
	uint64_t lat_buckets[HOOKD_NBUCKETS], lat_count;
	double lat_sum;
	uint64_t depth, dead;
	double oldest_s;
	unsigned m_inflight;		/* inflight and disabled, copied for /metrics */
	bool m_disabled;
};

/* One event as read from its file: shared by the endpoints' items
 * (reference counted; one thread) and by the requests sending it. */
struct hookd_ev {
	unsigned refs;
	char id[TN_HOOK_ID_SIZE];
	int64_t sequence;
	char type[TN_OUTBOX_TYPE_MAX + 1];
	char tenant[TN_OUTBOX_TENANT_MAX + 1];
	char origin[64];		/* "" for envelopes without one */
	size_t body_len;		/* without the final newline */
	char body[];			/* NUL-terminated */
};

struct hookd_req {
	struct hookd_ep *ep;
	struct hookd_item *item;
	CURL *easy;
	struct curl_slist *headers;
	struct hookd_ev *ev;
	char id[TN_HOOK_ID_SIZE];
	unsigned attempt;		/* this attempt's number, from 1 */
	int64_t start_us;
	char errbuf[CURL_ERROR_SIZE];
	char resp[HOOKD_RESP_KEEP + 1];
	size_t resp_len;
};

struct hookd_sock {
	struct event *ev;
	curl_socket_t fd;
};

/* A delivered event's file, or a segment none of whose events is left
 * in it, removed by the reaper thread so that the event loop never
 * waits for the file system's unlink (bench/README.md: a third of
 * tn-hookd's time, and up to 74 ms each with discard). The item (or
 * segment) stays in its queue's hash until the file is gone, so a
 * rescan in between cannot send it again. A segment some of whose
 * events were written out as retry files is removed only after a
 * syncfs(2), so that those files are on disk first. */
struct hookd_reap {
	struct hookd_ep *ep;
	struct hookd_item *item;	/* one of these two */
	struct hookd_seg *seg;
	bool sync;			/* syncfs before the unlink */
	bool kept;			/* the sync failed: the file stays */
	char path[PATH_MAX];
	char free_path[PATH_MAX];	/* a segment: hand it back there, or "" */
	struct hookd_reap *next;
};

struct hookd_reaper {
	pthread_t thread;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct hookd_reap *jobs, **jobs_tail;	/* files to unlink, for the thread */
	struct hookd_reap *done;		/* back to the loop */
	int wake[2];				/* pipe: the thread → the loop */
	struct event *wake_ev;
	bool stop, running, started;
};

struct hookd {
	struct tn_conf *conf;
	struct hookd_reaper reaper;
	const char *conf_path;
	struct event_base *base;
	CURLM *multi;
	struct event *curl_timer, *pump_timer, *rescan_timer, *house_timer;
	struct event *inotify_ev, *fanout_ev;
	struct event *sig_term, *sig_int, *sig_hup;
	int inotify_fd, wd_new;
	char *outbox, *newdir, *tmpdir, *baddir, *hooksdir, *logpath, *logpath1;
	struct hookd_ep **eps;
	unsigned neps;
	/* names seen in new/ and not yet fanned out */
	char **pending;
	size_t npending, cap_pending;
	FILE *log;
	uint64_t rng;
	bool stopping, warned_no_endpoints;
	int64_t stop_deadline_ms;
	int64_t retry_initial_ms, retry_max_ms, retry_window_ms, retry_after_max_ms;
	int64_t tmp_max_age_ms;
	uint64_t log_max_size;
	char *scratch;			/* HOOKD_FILE_MAX bytes for reading files */
	size_t cached_bytes;		/* bodies kept from fan-out until first attempt */
	unsigned ticks;
	unsigned free_next;		/* the next tmp/free.<n> */
	struct hookd_metrics *metrics;
	pthread_mutex_t mlock;
	/* under mlock */
	uint64_t new_backlog, fanned_out, unrouted, quarantined, running_requests;
};

static void hookd_pump(struct hookd *hd);
static void hookd_fanout_schedule(struct hookd *hd);
static void hookd_seg_release(struct hookd *hd, struct hookd_ep *ep, struct hookd_seg *seg);
static void hookd_seg_leave(struct hookd *hd, struct hookd_ep *ep, struct hookd_item *item);
static void hookd_easy_flush(struct hookd_ep *ep);

/* --- small helpers ---------------------------------------------------------------- */

static int64_t hookd_mono_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static uint64_t hookd_random(struct hookd *hd)
{
	/* xorshift64*: jitter only, seeded from getrandom(2) */
	hd->rng ^= hd->rng >> 12;
	hd->rng ^= hd->rng << 25;
	hd->rng ^= hd->rng >> 27;
	return hd->rng * 2685821657736338717ULL;
}

static void hookd_timer_at(struct event *ev, int64_t delay_ms)
{
	struct timeval tv;

	if (delay_ms < 0)
		delay_ms = 0;
	tv.tv_sec = delay_ms / 1000;
	tv.tv_usec = (delay_ms % 1000) * 1000;
	event_add(ev, &tv);
}

static int hookd_mkdir(const char *path)
{
	if (mkdir(path, 02770) < 0) {
		if (errno == EEXIST)
			return 0;
		tn_error("cannot create %s: %s", path, strerror(errno));
		return -1;
	}
	/* the umask may have cleared group bits; the setgid bit keeps the group */
	if (chmod(path, 02770) < 0)
		tn_warning("chmod %s: %s", path, strerror(errno));
	return 0;
}

/* Read a whole small file; -1 with errno (EFBIG when too large). */
static ssize_t hookd_read_file(int dirfd, const char *name, char *buf, size_t size)
{
	size_t len = 0;
	ssize_t n;
	int fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);

	if (fd < 0)
		return -1;
	while ((n = read(fd, buf + len, size - len)) > 0) {
		len += (size_t)n;
		if (len == size) {
			close(fd);
			errno = EFBIG;
			return -1;
		}
	}
	close(fd);
	return n < 0 ? -1 : (ssize_t)len;
}

static ssize_t hookd_read_path(const char *path, char *buf, size_t size)
{
	return hookd_read_file(AT_FDCWD, path, buf, size);
}

/* --- events ------------------------------------------------------------------------ */

/* Check one event's bytes (a line of a segment); a new event with one
 * reference, or NULL with *why_r. */
static struct hookd_ev *hookd_ev_parse(const char *buf, size_t len, const char *id,
				       const char **why_r)
{
	json_t *env = tn_hook_envelope_parse(buf, len, id, why_r);
	struct hookd_ev *ev;
	const char *origin;

	if (env == NULL)
		return NULL;
	if (len > 0 && buf[len - 1] == '\n')
		len--;
	ev = tn_mem_alloc(sizeof(*ev) + len + 1);
	ev->refs = 1;
	memcpy(ev->id, json_string_value(json_object_get(env, "id")), TN_HOOK_ID_SIZE);
	ev->sequence = json_integer_value(json_object_get(env, "sequence"));
	snprintf(ev->type, sizeof(ev->type), "%s", json_string_value(json_object_get(env, "type")));
	snprintf(ev->tenant, sizeof(ev->tenant), "%s",
		 json_string_value(json_object_get(env, "tenant")));
	origin = json_string_value(json_object_get(env, "origin"));
	snprintf(ev->origin, sizeof(ev->origin), "%s", origin != NULL ? origin : "");
	memcpy(ev->body, buf, len);
	ev->body[len] = '\0';
	ev->body_len = len;
	json_decref(env);
	return ev;
}

static struct hookd_ev *hookd_ev_ref(struct hookd_ev *ev)
{
	ev->refs++;
	return ev;
}

static void hookd_ev_unref(struct hookd_ev **evp)
{
	struct hookd_ev *ev = *evp;

	*evp = NULL;
	if (ev != NULL && --ev->refs == 0)
		tn_mem_free(&ev);
}

/* An item's cached event goes (first attempt made, or the item removed). */
static void hookd_item_uncache(struct hookd *hd, struct hookd_item *item)
{
	if (item->ev == NULL)
		return;
	if (item->ev->refs == 1)
		hd->cached_bytes -= item->ev->body_len;
	hookd_ev_unref(&item->ev);
}

/* --- segments: files of events, one per line ---------------------------------------- */

/* A line of a segment file that is not an event. */
struct hookd_bad_line {
	unsigned line;			/* from 1 */
	const char *text;		/* in the buffer the file was read into */
	size_t len;
	const char *why;
};

/* A segment file's events in file order, and its bad lines. */
struct hookd_lines {
	struct hookd_ev **evs;		/* one reference each */
	size_t n, cap;
	struct hookd_bad_line *bad;
	size_t nbad, badcap;
	bool first_good;		/* line 1 is an event */
};

static void hookd_lines_free(struct hookd_lines *l)
{
	for (size_t i = 0; i < l->n; i++)
		hookd_ev_unref(&l->evs[i]);
	tn_mem_free(&l->evs);
	tn_mem_free(&l->bad);
	memset(l, 0, sizeof(*l));
}

static bool hookd_lines_has(const struct hookd_lines *l, const char *id)
{
	for (size_t i = 0; i < l->n; i++) {
		if (strcmp(l->evs[i]->id, id) == 0)
			return true;
	}
	return false;
}

static void hookd_lines_add(struct hookd_lines *l, struct hookd_ev *ev)
{
	if (l->n == l->cap) {
		l->cap = l->cap == 0 ? 16 : l->cap * 2;
		l->evs = tn_mem_realloc(l->evs, l->cap * sizeof(*l->evs));
	}
	l->evs[l->n++] = ev;
}

static void hookd_lines_bad(struct hookd_lines *l, unsigned line, const char *text,
			    size_t len, const char *why)
{
	if (l->nbad == l->badcap) {
		l->badcap = l->badcap == 0 ? 4 : l->badcap * 2;
		l->bad = tn_mem_realloc(l->bad, l->badcap * sizeof(*l->bad));
	}
	l->bad[l->nbad++] = (struct hookd_bad_line){ line, text, len, why };
}

/* Split a file's bytes into its events and its bad lines (not an
 * envelope, or an id seen on an earlier line). A last line without its
 * newline counts as a line. */
static void hookd_lines_parse(struct hookd_lines *l, const char *buf, size_t len)
{
	const char *p = buf, *end = buf + len;
	unsigned line = 0;

	memset(l, 0, sizeof(*l));
	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		size_t n = nl != NULL ? (size_t)(nl - p) : (size_t)(end - p);
		struct hookd_ev *ev = NULL;
		const char *why = "empty line";

		line++;
		if (n > 0)
			ev = hookd_ev_parse(p, n, NULL, &why);
		if (ev != NULL && hookd_lines_has(l, ev->id)) {
			hookd_ev_unref(&ev);
			why = "an id seen on an earlier line";
		}
		if (ev == NULL) {
			hookd_lines_bad(l, line, p, n, why);
		} else {
			l->first_good |= line == 1;
			hookd_lines_add(l, ev);
		}
		p += n + (nl != NULL);
	}
}

/* The event of id in a segment file's bytes, or NULL with *why_r. Lines
 * as the outbox writes them start with the id: only that one is parsed. */
static struct hookd_ev *hookd_lines_find(const char *buf, size_t len, const char *id,
					 const char **why_r)
{
	struct hookd_lines l;
	struct hookd_ev *ev = NULL;

	for (const char *p = buf, *end = buf + len, *nl; p < end; p = nl < end ? nl + 1 : end) {
		size_t n;

		nl = memchr(p, '\n', (size_t)(end - p));
		if (nl == NULL)
			nl = end;
		n = (size_t)(nl - p);
		if (n > 7 + 36 && memcmp(p, "{\"id\":\"", 7) == 0 && memcmp(p + 7, id, 36) == 0)
			return hookd_ev_parse(p, n, id, why_r);
	}
	/* written otherwise: parse every line */
	hookd_lines_parse(&l, buf, len);
	for (size_t i = 0; i < l.n && ev == NULL; i++) {
		if (strcmp(l.evs[i]->id, id) == 0)
			ev = hookd_ev_ref(l.evs[i]);
	}
	hookd_lines_free(&l);
	*why_r = "no such event in the segment";
	return ev;
}

/* Write an event's bytes and a newline as dir/name through a hidden
 * temporary name in dir, so that name never shows a partial file (not
 * synced). -1 with errno. */
static int hookd_write_event_file(const char *dir, const char *name, const struct hookd_ev *ev)
{
	char tmp[PATH_MAX], path[PATH_MAX];
	struct iovec iov[2] = { { (void *)ev->body, ev->body_len }, { (void *)"\n", 1 } };
	ssize_t n;
	int fd, err;

	snprintf(tmp, sizeof(tmp), "%s/.%s.tmp", dir, ev->id);
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	if ((fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0660)) < 0)
		return -1;
	n = writev(fd, iov, 2);
	err = n < 0 ? errno : EIO;
	close(fd);
	if (n == (ssize_t)ev->body_len + 1 && rename(tmp, path) == 0)
		return 0;
	if (n == (ssize_t)ev->body_len + 1)
		err = errno;
	unlink(tmp);
	errno = err;
	return -1;
}

/* --- delivery log ----------------------------------------------------------------- */

static void hookd_log_open(struct hookd *hd)
{
	if (hd->log != NULL)
		fclose(hd->log);
	hd->log = fopen(hd->logpath, "a");
	if (hd->log == NULL)
		tn_error("cannot open delivery log %s: %s", hd->logpath, strerror(errno));
	else
		setvbuf(hd->log, NULL, _IOFBF, 64 * 1024);
}

static void hookd_log_flush(struct hookd *hd)
{
	if (hd->log == NULL) {
		hookd_log_open(hd);
		return;
	}
	if (fflush(hd->log) != 0)
		tn_warning("delivery log %s: %s", hd->logpath, strerror(errno));
	if ((uint64_t)ftell(hd->log) > hd->log_max_size) {
		if (rename(hd->logpath, hd->logpath1) < 0)
			tn_warning("cannot rotate %s: %s", hd->logpath, strerror(errno));
		hookd_log_open(hd);
	}
}

/* A delivery log line under construction: what jansson would write for
 * the record (compact, keys in order), formatted directly (json_pack and
 * json_dumpb were a tenth of tn-hookd's CPU). */
struct hookd_line {
	char buf[4096];
	size_t len;
	bool full;
};

static void hookd_line_printf(struct hookd_line *l, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void hookd_line_printf(struct hookd_line *l, const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(l->buf + l->len, sizeof(l->buf) - l->len, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof(l->buf) - l->len)
		l->full = true;
	else
		l->len += (size_t)n;
}

/* ,"key":"value" with JSON's escapes (value: UTF-8 from a checked
 * envelope, or our own text); NULL is null. */
static void hookd_line_str(struct hookd_line *l, const char *key, const char *value)
{
	hookd_line_printf(l, "%s\"%s\":", l->len > 1 ? "," : "", key);
	if (value == NULL) {
		hookd_line_printf(l, "null");
		return;
	}
	hookd_line_printf(l, "\"");
	for (const unsigned char *p = (const unsigned char *)value; *p != '\0' && !l->full; p++) {
		if (*p == '"' || *p == '\\')
			hookd_line_printf(l, "\\%c", *p);
		else if (*p == '\n')
			hookd_line_printf(l, "\\n");
		else if (*p < 0x20 || *p == 0x7f)
			hookd_line_printf(l, "\\u%04x", *p);
		else if (l->len + 1 < sizeof(l->buf))
			l->buf[l->len++] = (char)*p;
		else
			l->full = true;
	}
	hookd_line_printf(l, "\"");
}

static void hookd_log_attempt(struct hookd *hd, const struct hookd_req *r, long status,
			      double latency_ms, enum hookd_outcome outcome, const char *error)
{
	struct hookd_line l = { .len = 0 };
	char at[32], num[64];

	if (hd->log == NULL)
		return;
	tn_hook_format_time(tn_hook_now_ms(), at);
	/* like jansson's JSON_REAL_PRECISION(6): %.6g, and ".0" if integral */
	snprintf(num, sizeof(num), "%.6g", latency_ms);
	if (strpbrk(num, ".eni") == NULL)
		strcat(num, ".0");
	hookd_line_printf(&l, "{");
	hookd_line_str(&l, "at", at);
	hookd_line_str(&l, "endpoint", r->ep->conf.name);
	hookd_line_str(&l, "id", r->id);
	hookd_line_str(&l, "type", r->ev->type);
	hookd_line_str(&l, "tenant", r->ev->tenant);
	hookd_line_str(&l, "origin", r->ev->origin);
	hookd_line_printf(&l, ",\"sequence\":%" PRId64 ",\"attempt\":%u,\"status\":%ld,"
			  "\"latency_ms\":%s", r->ev->sequence, r->attempt, status, num);
	hookd_line_str(&l, "outcome", hookd_outcome_names[outcome]);
	hookd_line_str(&l, "error", error);
	hookd_line_printf(&l, "}\n");
	if (!l.full)
		fwrite(l.buf, 1, l.len, hd->log);
}

/* --- endpoints -------------------------------------------------------------------- */

static void hookd_ep_check_disabled(struct hookd_ep *ep)
{
	bool was = ep->disabled;

	ep->disabled = access(ep->disabled_path, F_OK) == 0;
	if (was && !ep->disabled)
		tn_info("endpoint %s: enabled again (marker removed)", ep->conf.name);
}

static void hookd_ep_watch(struct hookd *hd, struct hookd_ep *ep)
{
	ep->wd_dir = inotify_add_watch(hd->inotify_fd, ep->dir, IN_DELETE | IN_MOVED_FROM |
				       IN_CREATE | IN_MOVED_TO | IN_ONLYDIR);
	/* tnctl events replay renames dead/ → queue/; our own renames into
	 * queue/ (fan-out, retries) are known already, so watch dead/ only */
	ep->wd_dead = inotify_add_watch(hd->inotify_fd, ep->deaddir, IN_MOVED_FROM | IN_ONLYDIR);
	if (ep->wd_dir < 0 || ep->wd_dead < 0)
		tn_warning("endpoint %s: inotify: %s (rescans still work)", ep->conf.name,
			   strerror(errno));
}

static struct hookd_ep *hookd_ep_create(struct hookd *hd, const struct tn_hook_endpoint *conf)
{
	struct hookd_ep *ep = tn_mem_calloc(1, sizeof(*ep));

	ep->hd = hd;
	ep->conf = *conf;
	ep->dir = tn_mem_printf("%s/%s", hd->hooksdir, conf->name);
	ep->qdir = tn_mem_printf("%s/queue", ep->dir);
	ep->deaddir = tn_mem_printf("%s/dead", ep->dir);
	ep->disabled_path = tn_mem_printf("%s/disabled", ep->dir);
	ep->wd_dir = ep->wd_dead = -1;
	hookd_queue_init(&ep->q);
	if (hookd_mkdir(ep->dir) < 0 || hookd_mkdir(ep->qdir) < 0 ||
	    hookd_mkdir(ep->deaddir) < 0)
		tn_error("endpoint %s: its queue cannot be used", conf->name);
	hookd_ep_check_disabled(ep);
	hookd_ep_watch(hd, ep);
	if (conf->world_readable)
		tn_warning("endpoint %s: %s is readable by others, and it holds secrets"
			   " (chmod 0640)", conf->name, conf->path);
	return ep;
}

/* Move the parts of a loaded endpoint we own into ep, keeping its queue. */
static void hookd_ep_update(struct hookd_ep *ep, struct tn_hook_endpoint *conf)
{
	struct tn_hook_endpoint old = ep->conf;

	ep->conf = *conf;
	memset(conf, 0, sizeof(*conf));
	*conf = old;		/* freed by the caller with the new set */
	ep->removed = false;
	hookd_easy_flush(ep);	/* the URL, timeouts or CA may have changed */
}

static struct hookd_ep *hookd_ep_find(struct hookd *hd, const char *name)
{
	for (unsigned i = 0; i < hd->neps; i++) {
		if (strcmp(hd->eps[i]->conf.name, name) == 0)
			return hd->eps[i];
	}
	return NULL;
}

static void hookd_scan_queue(struct hookd *hd, struct hookd_ep *ep);

/* (Re)load the endpoint files. New endpoints are added, changed ones
 * updated in place, removed ones stop (their files stay on disk). */
static int hookd_endpoints_reload(struct hookd *hd)
{
	const char *dir = tn_conf_str(hd->conf, "hookd_endpoints_dir"), *error;
	struct tn_hook_endpoint *set;
	unsigned count;

	if (tn_hook_endpoints_load(dir, &set, &count, &error) < 0) {
		tn_error("endpoints not (re)loaded: %s", error);
		return -1;
	}
	pthread_mutex_lock(&hd->mlock);
	for (unsigned i = 0; i < hd->neps; i++)
		hd->eps[i]->removed = true;
	for (unsigned i = 0; i < count; i++) {
		struct hookd_ep *ep = hookd_ep_find(hd, set[i].name);

		if (ep != NULL) {
			hookd_ep_update(ep, &set[i]);
			continue;
		}
		hd->eps = tn_mem_realloc(hd->eps, (hd->neps + 1) * sizeof(*hd->eps));
		ep = hd->eps[hd->neps++] = hookd_ep_create(hd, &set[i]);
		memset(&set[i], 0, sizeof(set[i]));
		tn_info("endpoint %s: %s (%u secret%s, concurrency %u)", ep->conf.name,
			ep->conf.url, ep->conf.nsecrets, ep->conf.nsecrets == 1 ? "" : "s",
			ep->conf.concurrency);
	}
	pthread_mutex_unlock(&hd->mlock);
	tn_hook_endpoints_free(&set, count);
	for (unsigned i = 0; i < hd->neps; i++) {
		if (hd->eps[i]->removed)
			tn_warning("endpoint %s: no longer configured; its queue stays in %s",
				   hd->eps[i]->conf.name, hd->eps[i]->dir);
		else
			hookd_scan_queue(hd, hd->eps[i]);
	}
	return 0;
}

static unsigned hookd_active_endpoints(const struct hookd *hd)
{
	unsigned n = 0;

	for (unsigned i = 0; i < hd->neps; i++)
		n += !hd->eps[i]->removed;
	return n;
}

/* --- scanning --------------------------------------------------------------------- */

struct hookd_bad_line;
static bool hookd_quarantine_file(struct hookd *hd, const char *dir, const char *name,
				  const struct hookd_ep *ep, bool link, const char *why);
static void hookd_quarantine_line(struct hookd *hd, const struct hookd_ep *ep,
				  const char *seg_id, const struct hookd_bad_line *b);

/* A retry file left empty by a crash (written, renamed, not yet on disk)
 * while its event's segment is still there: the segment's copy is used.
 * True when the item was dropped for that. */
static bool hookd_drop_empty_retry(struct hookd_ep *ep, int dfd, struct hookd_item *known)
{
	char name[TN_HOOK_QNAME_SIZE];
	struct stat st;

	if (known == NULL || known->seg != NULL || known->ev != NULL ||
	    known->heap_index == HOOKD_NOT_IN_HEAP)
		return false;
	hookd_item_name(known, name);
	if (fstatat(dfd, name, &st, 0) < 0 || st.st_size > 0 || unlinkat(dfd, name, 0) < 0)
		return false;
	tn_warning("endpoint %s: %s/%s is empty (a crash): its segment's copy is used",
		   ep->conf.name, ep->qdir, name);
	hookd_queue_remove(&ep->q, known);
	return true;
}

/* Index a segment file of ep's queue: an item for each of its events the
 * endpoint wants that is not known already (its retry file was found:
 * that state wins), each keeping its event in memory until its first
 * attempt while the budget allows. A segment left with no item goes at
 * once. dfd: the queue directory at a scan, -1 at fan-out. */
static void hookd_seg_index(struct hookd *hd, struct hookd_ep *ep, const char *seg_id,
			    const struct hookd_lines *lines, int dfd)
{
	struct hookd_seg *seg;

	if (hookd_queue_seg_find(&ep->q, seg_id) != NULL)
		return;
	seg = hookd_queue_seg_add(&ep->q, seg_id);
	for (size_t i = 0; i < lines->n; i++) {
		struct hookd_ev *ev = lines->evs[i];
		struct tn_hook_qname qn = { .attempts = 0 };
		struct hookd_item *item;

		if (!tn_hook_endpoint_wants(&ep->conf, ev->type, ev->tenant))
			continue;
		memcpy(qn.id, ev->id, sizeof(qn.id));
		if ((item = hookd_queue_add(&ep->q, &qn)) == NULL &&
		    (dfd < 0 || !hookd_drop_empty_retry(ep, dfd, hookd_queue_find(&ep->q, qn.id)) ||
		     (item = hookd_queue_add(&ep->q, &qn)) == NULL))
			continue;
		item->seg = seg;
		seg->left++;
		if (hd->cached_bytes + ev->body_len <= HOOKD_CACHE_MAX) {
			if (ev->refs == 1)
				hd->cached_bytes += ev->body_len;
			item->ev = hookd_ev_ref(ev);
		}
	}
	if (seg->left == 0)
		hookd_seg_release(hd, ep, seg);
}

/* A segment found by a scan of ep's queue. True when it added items. */
static bool hookd_scan_segment(struct hookd *hd, struct hookd_ep *ep, int dfd,
			       const char *name, const char *seg_id)
{
	struct hookd_lines lines;
	size_t before = ep->q.count;
	ssize_t len;

	if ((len = hookd_read_file(dfd, name, hd->scratch, HOOKD_FILE_MAX)) < 0) {
		if (errno == EFBIG)
			hookd_quarantine_file(hd, ep->qdir, name, ep, false,
					      "larger than a segment can be");
		else if (errno != ENOENT)
			tn_error("endpoint %s: %s/%s: %s", ep->conf.name, ep->qdir, name,
				 strerror(errno));
		return false;
	}
	hookd_lines_parse(&lines, hd->scratch, (size_t)len);
	if (lines.n == 0) {
		/* nothing to deliver from it: kept in bad/, never released */
		hookd_quarantine_file(hd, ep->qdir, name, ep, false,
				      lines.nbad == 0 ? "empty file" : lines.bad[0].why);
		hookd_lines_free(&lines);
		return false;
	}
	for (size_t i = 0; i < lines.nbad; i++)
		hookd_quarantine_line(hd, ep, seg_id, &lines.bad[i]);
	hookd_seg_index(hd, ep, seg_id, &lines, dfd);
	hookd_lines_free(&lines);
	return ep->q.count > before;
}

/* Retry files first, so that an event also found in a segment (a crash
 * before the segment was released) is known by its retry state; then
 * the segments not known yet. Temporary files of ours are left-overs of
 * a crash (they are renamed as soon as written). */
static void hookd_scan_queue(struct hookd *hd, struct hookd_ep *ep)
{
	struct tn_hook_qname qn;
	struct dirent *de;
	DIR *d = opendir(ep->qdir);
	bool added = false;

	if (d == NULL) {
		tn_error("endpoint %s: %s: %s", ep->conf.name, ep->qdir, strerror(errno));
		return;
	}
	while ((de = readdir(d)) != NULL) {
		size_t len = strlen(de->d_name);

		if (de->d_name[0] == '.' && len > 4 && strcmp(de->d_name + len - 4, ".tmp") == 0)
			unlinkat(dirfd(d), de->d_name, 0);
		if (tn_hook_qname_parse(de->d_name, &qn) < 0 || qn.attempts == 0 ||
		    hookd_queue_find(&ep->q, qn.id) != NULL)
			continue;
		hookd_queue_add(&ep->q, &qn);
		added = true;
	}
	rewinddir(d);
	while ((de = readdir(d)) != NULL) {
		if (tn_hook_qname_parse(de->d_name, &qn) < 0 || qn.attempts != 0 ||
		    hookd_queue_seg_find(&ep->q, qn.id) != NULL)
			continue;
		added |= hookd_scan_segment(hd, ep, dirfd(d), de->d_name, qn.id);
	}
	closedir(d);
	hookd_ep_check_disabled(ep);
	if (added)
		hookd_pump(hd);
}

static void hookd_pending_add(struct hookd *hd, const char *name)
{
	if (name[0] == '.')
		return;
	if (hd->npending == hd->cap_pending) {
		hd->cap_pending = hd->cap_pending == 0 ? 1024 : hd->cap_pending * 2;
		hd->pending = tn_mem_realloc(hd->pending, hd->cap_pending * sizeof(char *));
	}
	hd->pending[hd->npending++] = tn_mem_strdup(name);
}

static void hookd_pending_clear(struct hookd *hd)
{
	for (size_t i = 0; i < hd->npending; i++)
		tn_mem_free(&hd->pending[i]);
	hd->npending = 0;
}

static void hookd_scan_new(struct hookd *hd)
{
	struct dirent *de;
	DIR *d = opendir(hd->newdir);

	if (d == NULL) {
		tn_error("%s: %s", hd->newdir, strerror(errno));
		return;
	}
	hookd_pending_clear(hd);
	while ((de = readdir(d)) != NULL) {
		if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
			hookd_pending_add(hd, de->d_name);
	}
	closedir(d);
	pthread_mutex_lock(&hd->mlock);
	hd->new_backlog = hd->npending;
	pthread_mutex_unlock(&hd->mlock);
	hookd_fanout_schedule(hd);
}

static void hookd_clean_tmp(struct hookd *hd)
{
	int64_t now_s = tn_hook_now_ms() / 1000;
	struct dirent *de;
	struct stat st;
	DIR *d = opendir(hd->tmpdir);

	if (d == NULL)
		return;
	while ((de = readdir(d)) != NULL) {
		if (de->d_name[0] == '.' ||
		    fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 ||
		    !S_ISREG(st.st_mode))
			continue;
		if ((now_s - st.st_mtime) * 1000 < hd->tmp_max_age_ms)
			continue;
		if (unlinkat(dirfd(d), de->d_name, 0) < 0)
			continue;
		if (strncmp(de->d_name, TN_OUTBOX_FREE_PREFIX, strlen(TN_OUTBOX_FREE_PREFIX)) == 0)
			tn_debug("removed %s/%s (not reused for a while)", hd->tmpdir, de->d_name);
		else
			tn_info("removed stale %s/%s (a producer that never finished)",
				hd->tmpdir, de->d_name);
	}
	closedir(d);
}

static uint64_t hookd_count_dir(const char *path)
{
	struct dirent *de;
	uint64_t n = 0;
	DIR *d = opendir(path);

	if (d == NULL)
		return 0;
	while ((de = readdir(d)) != NULL)
		n += de->d_name[0] != '.';
	closedir(d);
	return n;
}

static void hookd_rescan(struct hookd *hd)
{
	hookd_clean_tmp(hd);
	for (unsigned i = 0; i < hd->neps; i++) {
		if (!hd->eps[i]->removed)
			hookd_scan_queue(hd, hd->eps[i]);
		pthread_mutex_lock(&hd->mlock);
		hd->eps[i]->dead = hookd_count_dir(hd->eps[i]->deaddir);
		pthread_mutex_unlock(&hd->mlock);
	}
	hookd_scan_new(hd);
	hookd_pump(hd);
}

/* --- fan-out ---------------------------------------------------------------------- */

static void hookd_count_quarantined(struct hookd *hd)
{
	pthread_mutex_lock(&hd->mlock);
	hd->quarantined++;
	pthread_mutex_unlock(&hd->mlock);
}

/* Move dir/name to bad/<ep>.<name> (ep NULL: a file of new/, bad/<name>)
 * with a log line naming both; link: keep dir/name too (a segment some
 * of whose events are still to be delivered from it). false when the
 * file vanished or could not be moved (logged). */
static bool hookd_quarantine_file(struct hookd *hd, const char *dir, const char *name,
				  const struct hookd_ep *ep, bool link, const char *why)
{
	char from[PATH_MAX], to[PATH_MAX];
	int rc;

	snprintf(from, sizeof(from), "%s/%s", dir, name);
	snprintf(to, sizeof(to), "%s/%s%s%s", hd->baddir, ep != NULL ? ep->conf.name : "",
		 ep != NULL ? "." : "", name);
	rc = link ? linkat(AT_FDCWD, from, AT_FDCWD, to, 0) : rename(from, to);
	if (rc < 0 && link && errno == EEXIST) {
		tn_warning("%s: %s (already quarantined as %s)", from, why, to);
		return true;
	}
	if (rc < 0) {
		if (errno != ENOENT)
			tn_error("cannot quarantine %s to %s: %s", from, to, strerror(errno));
		return false;
	}
	tn_warning("quarantined %s to %s: %s", from, to, why);
	hookd_count_quarantined(hd);
	return true;
}

static void hookd_quarantine(struct hookd *hd, const char *name, const char *why)
{
	hookd_quarantine_file(hd, hd->newdir, name, NULL, false, why);
}

/* A bad line of segment seg_id goes to bad/<seg_id>.line<N> (a file of
 * new/; ep NULL) or bad/<ep>.<seg_id>.line<N> (a segment found in ep's
 * queue), with a log line; the segment's other events are delivered. A
 * line of a queue's segment already quarantined (at fan-out, or by an
 * earlier scan) is only named in a warning. */
static void hookd_quarantine_line(struct hookd *hd, const struct hookd_ep *ep,
				  const char *seg_id, const struct hookd_bad_line *b)
{
	char path[PATH_MAX], first[PATH_MAX];
	const char *dir = ep != NULL ? ep->qdir : hd->newdir;
	struct iovec iov[2] = { { (void *)b->text, b->len }, { (void *)"\n", 1 } };
	int fd;

	snprintf(path, sizeof(path), "%s/%s%s%s.line%u", hd->baddir,
		 ep != NULL ? ep->conf.name : "", ep != NULL ? "." : "", seg_id, b->line);
	snprintf(first, sizeof(first), "%s/%s.line%u", hd->baddir, seg_id, b->line);
	if (ep != NULL && (access(first, F_OK) == 0 || access(path, F_OK) == 0)) {
		tn_warning("endpoint %s: %s/%s.json line %u: %s; skipped (quarantined as %s)",
			   ep->conf.name, dir, seg_id, b->line, b->why,
			   access(first, F_OK) == 0 ? first : path);
		return;
	}
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0660);
	if (fd < 0 || writev(fd, iov, 2) != (ssize_t)b->len + 1) {
		tn_error("cannot quarantine line %u of %s/%s.json to %s: %s", b->line,
			 dir, seg_id, path, strerror(errno));
	} else {
		tn_warning("quarantined line %u of %s/%s.json to %s: %s (the file's other"
			   " events are delivered)", b->line, dir, seg_id, path, b->why);
		hookd_count_quarantined(hd);
	}
	if (fd >= 0)
		close(fd);
}

/* Whether an active endpoint wants any of the events; counts those none
 * wants. */
static bool hookd_ep_wants_any(const struct hookd_ep *ep, const struct hookd_lines *lines)
{
	if (ep->removed)
		return false;
	for (size_t i = 0; i < lines->n; i++) {
		if (tn_hook_endpoint_wants(&ep->conf, lines->evs[i]->type, lines->evs[i]->tenant))
			return true;
	}
	return false;
}

static void hookd_count_unrouted(struct hookd *hd, const char *name,
				 const struct hookd_lines *lines)
{
	uint64_t n = 0;

	for (size_t i = 0; i < lines->n; i++) {
		bool wanted = false;

		for (unsigned e = 0; e < hd->neps && !wanted; e++)
			wanted = !hd->eps[e]->removed &&
				 tn_hook_endpoint_wants(&hd->eps[e]->conf, lines->evs[i]->type,
							lines->evs[i]->tenant);
		if (!wanted)
			tn_debug("%s: event %s (%s, tenant %s): no endpoint wants it", name,
				 lines->evs[i]->id, lines->evs[i]->type, lines->evs[i]->tenant);
		n += !wanted;
	}
	if (n == 0)
		return;
	pthread_mutex_lock(&hd->mlock);
	hd->unrouted += n;
	pthread_mutex_unlock(&hd->mlock);
}

/* Read and check a file of new/ into lines: 1 ready; 0 leave it for a
 * later try; -1 vanished or quarantined as a whole (not one event in it,
 * or its first line's id is not its name). Bad lines of a file that has
 * events are quarantined one by one, now (they point into the buffer). */
static int hookd_fanout_read(struct hookd *hd, int newfd, const char *name,
			     struct hookd_lines *lines)
{
	struct tn_hook_qname qn;
	ssize_t len;

	if (tn_hook_qname_parse(name, &qn) < 0 || qn.attempts != 0) {
		hookd_quarantine(hd, name, "not an event file name (<id>.json)");
		return -1;
	}
	if ((len = hookd_read_file(newfd, name, hd->scratch, HOOKD_FILE_MAX)) < 0) {
		if (errno == ENOENT)
			return -1;
		if (errno == EFBIG) {
			hookd_quarantine(hd, name, "larger than a segment can be");
			return -1;
		}
		tn_error("%s/%s: %s", hd->newdir, name, strerror(errno));
		return 0;
	}
	hookd_lines_parse(lines, hd->scratch, (size_t)len);
	if (lines->n == 0 || (lines->first_good && strcmp(lines->evs[0]->id, qn.id) != 0)) {
		hookd_quarantine(hd, name, lines->n > 0 ? "id differs from the file name" :
				 lines->nbad == 0 ? "empty file" : lines->bad[0].why);
		hookd_lines_free(lines);
		return -1;
	}
	for (size_t i = 0; i < lines->nbad; i++)
		hookd_quarantine_line(hd, NULL, qn.id, &lines->bad[i]);
	lines->nbad = 0;
	return 1;
}

/* Prepare one file's fan-out (a segment: the events of one group
 * commit, one per line): *last_r is the last endpoint that wants any of
 * its events (-1: none), which gets the file by rename later; every
 * other one that wants one gets a hard link now (linked[i]). Each
 * endpoint's filters pick its events when the segment is indexed.
 * 1: ready, lines holds the events; 0: leave it for a later try; -1:
 * vanished or quarantined. */
static int hookd_fanout_one(struct hookd *hd, int newfd, const char *name, bool *linked,
			    int *last_r, struct hookd_lines *lines)
{
	int ret, last = -1;

	if ((ret = hookd_fanout_read(hd, newfd, name, lines)) != 1)
		return ret;
	for (unsigned i = 0; i < hd->neps; i++) {
		char path[PATH_MAX];

		if (!hookd_ep_wants_any(hd->eps[i], lines))
			continue;
		if (last >= 0) {
			snprintf(path, sizeof(path), "%s/%s", hd->eps[last]->qdir, name);
			if (linkat(newfd, name, AT_FDCWD, path, 0) < 0 && errno != EEXIST) {
				tn_error("cannot link %s/%s to %s: %s", hd->newdir, name, path,
					 strerror(errno));
				hookd_lines_free(lines);
				return 0;
			}
			linked[last] = true;
		}
		last = (int)i;
	}
	hookd_count_unrouted(hd, name, lines);
	*last_r = last;
	return 1;
}

static void hookd_fsync_dir(const char *path)
{
	int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

	if (fd < 0 || fsync(fd) < 0)
		tn_error("fsync %s: %s", path, strerror(errno));
	if (fd >= 0)
		close(fd);
}

/* Take the name out of new/: renamed into the last endpoint's queue (one
 * atomic step: the file is in new/ or in that queue, never in neither),
 * or unlinked when nobody wants it. false: it stays for a later try. */
static bool hookd_fanout_finish(struct hookd *hd, int newfd, const char *name, int last)
{
	char path[PATH_MAX];

	if (last < 0) {
		if (unlinkat(newfd, name, 0) < 0 && errno != ENOENT)
			tn_error("cannot remove %s/%s: %s", hd->newdir, name, strerror(errno));
		return false;
	}
	snprintf(path, sizeof(path), "%s/%s", hd->eps[last]->qdir, name);
	if (renameat(newfd, name, AT_FDCWD, path) == 0)
		return true;
	if (errno != ENOENT)
		tn_error("cannot move %s/%s to %s: %s", hd->newdir, name, path, strerror(errno));
	return false;
}

/* One batch: read and check each file, hard-link it into all but the
 * last endpoint that wants any of its events, fsync those queues, then
 * rename it into the last one, and index it in each. A crash at any
 * point leaves every file in new/ or in every queue that wants it (a
 * link made twice is EEXIST, a rename onto an existing name replaces
 * the same file). */
static size_t hookd_fanout_batch(struct hookd *hd, size_t from)
{
	bool linked[HOOKD_FANOUT_BATCH][hd->neps + 1], any[hd->neps + 1];
	struct hookd_lines lines[HOOKD_FANOUT_BATCH];
	int done[HOOKD_FANOUT_BATCH], last[HOOKD_FANOUT_BATCH];
	size_t n = hd->npending - from;
	uint64_t events = 0;
	int newfd = open(hd->newdir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

	if (newfd < 0) {
		tn_error("%s: %s", hd->newdir, strerror(errno));
		return n;
	}
	if (n > HOOKD_FANOUT_BATCH)
		n = HOOKD_FANOUT_BATCH;
	memset(any, 0, sizeof(any));
	memset(lines, 0, n * sizeof(lines[0]));
	for (size_t i = 0; i < n; i++) {
		memset(linked[i], 0, sizeof(linked[i]));
		done[i] = hookd_fanout_one(hd, newfd, hd->pending[from + i], linked[i], &last[i],
					   &lines[i]);
		for (unsigned e = 0; e < hd->neps; e++)
			any[e] |= linked[i][e];
	}
	for (unsigned e = 0; e < hd->neps; e++) {
		if (any[e])
			hookd_fsync_dir(hd->eps[e]->qdir);
	}
	for (size_t i = 0; i < n; i++) {
		if (done[i] == 1 && hookd_fanout_finish(hd, newfd, hd->pending[from + i], last[i])) {
			char seg_id[TN_HOOK_ID_SIZE];

			snprintf(seg_id, sizeof(seg_id), "%.36s", hd->pending[from + i]);
			for (unsigned e = 0; e < hd->neps; e++) {
				if ((linked[i][e] || (int)e == last[i]) && !hd->eps[e]->removed)
					hookd_seg_index(hd, hd->eps[e], seg_id, &lines[i], -1);
			}
			events += lines[i].n;
		}
		hookd_lines_free(&lines[i]);
	}
	close(newfd);
	pthread_mutex_lock(&hd->mlock);
	hd->fanned_out += events;
	pthread_mutex_unlock(&hd->mlock);
	return n;
}

static void hookd_fanout(evutil_socket_t fd, short what, void *arg)
{
	struct hookd *hd = arg;
	size_t i = 0;

	(void)fd;
	(void)what;
	if (hd->stopping || hd->npending == 0)
		return;
	if (hookd_active_endpoints(hd) == 0) {
		if (!hd->warned_no_endpoints)
			tn_warning("no webhook endpoint configured in %s: events stay in %s",
				   tn_conf_str(hd->conf, "hookd_endpoints_dir"), hd->newdir);
		hd->warned_no_endpoints = true;
		hookd_pending_clear(hd);
		return;
	}
	while (i < hd->npending)
		i += hookd_fanout_batch(hd, i);
	hookd_pending_clear(hd);
	pthread_mutex_lock(&hd->mlock);
	hd->new_backlog = 0;
	pthread_mutex_unlock(&hd->mlock);
	hookd_pump(hd);
}

static void hookd_fanout_schedule(struct hookd *hd)
{
	if (hd->npending > 0)
		event_active(hd->fanout_ev, EV_TIMEOUT, 0);
}

/* --- inotify ---------------------------------------------------------------------- */

static struct hookd_ep *hookd_ep_by_wd(struct hookd *hd, int wd, bool *dead_r)
{
	for (unsigned i = 0; i < hd->neps; i++) {
		if (hd->eps[i]->wd_dead == wd || hd->eps[i]->wd_dir == wd) {
			*dead_r = hd->eps[i]->wd_dead == wd;
			return hd->eps[i];
		}
	}
	return NULL;
}

static void hookd_inotify_event(struct hookd *hd, const struct inotify_event *ie)
{
	struct hookd_ep *ep;
	bool dead;

	if (ie->mask & IN_Q_OVERFLOW) {
		tn_warning("inotify queue overflow: rescanning");
		hookd_rescan(hd);
		return;
	}
	if (ie->wd == hd->wd_new) {
		if (ie->len > 0)
			hookd_pending_add(hd, ie->name);
		return;
	}
	if ((ep = hookd_ep_by_wd(hd, ie->wd, &dead)) == NULL || ep->removed)
		return;
	if (dead) {
		/* a replay moved a dead letter back into queue/: scan it
		 * once after this batch of notifications */
		ep->rescan_wanted = true;
	} else if (ie->len > 0 && strcmp(ie->name, "disabled") == 0) {
		hookd_ep_check_disabled(ep);
		if (!ep->disabled)
			hookd_pump(hd);
	}
}

static void hookd_inotify_read(evutil_socket_t fd, short what, void *arg)
{
	struct hookd *hd = arg;
	char buf[64 * 1024] __attribute__((aligned(__alignof__(struct inotify_event))));
	ssize_t n;

	(void)what;
	while ((n = read(fd, buf, sizeof(buf))) > 0) {
		for (char *p = buf; p < buf + n;) {
			const struct inotify_event *ie = (const struct inotify_event *)p;

			hookd_inotify_event(hd, ie);
			p += sizeof(*ie) + ie->len;
		}
	}
	for (unsigned i = 0; i < hd->neps; i++) {
		if (hd->eps[i]->rescan_wanted) {
			hd->eps[i]->rescan_wanted = false;
			hookd_scan_queue(hd, hd->eps[i]);
		}
	}
	pthread_mutex_lock(&hd->mlock);
	hd->new_backlog = hd->npending;
	pthread_mutex_unlock(&hd->mlock);
	hookd_fanout_schedule(hd);
}

/* --- requests ----------------------------------------------------------------------- */

static size_t hookd_resp_write(char *data, size_t size, size_t nmemb, void *arg)
{
	struct hookd_req *r = arg;
	size_t len = size * nmemb, room = HOOKD_RESP_KEEP - r->resp_len;

	if (room > 0) {
		memcpy(r->resp + r->resp_len, data, len < room ? len : room);
		r->resp_len += len < room ? len : room;
	}
	return len;
}

static struct curl_slist *hookd_headers(struct hookd_req *r, int64_t ts)
{
	char sig[TN_WEBHOOK_HEADER_SIZE], line[TN_WEBHOOK_HEADER_SIZE + 64];
	struct curl_slist *h = NULL;
	const struct tn_hook_endpoint *c = &r->ep->conf;

	if (tn_webhook_sign(c->secrets, c->nsecrets, r->item->id, ts, r->ev->body,
			    r->ev->body_len, sig, sizeof(sig)) < 0)
		sig[0] = '\0';
	h = curl_slist_append(h, "Content-Type: application/json");
	h = curl_slist_append(h, "Expect:");
	snprintf(line, sizeof(line), "webhook-id: %s", r->item->id);
	h = curl_slist_append(h, line);
	snprintf(line, sizeof(line), "webhook-timestamp: %" PRId64, ts);
	h = curl_slist_append(h, line);
	snprintf(line, sizeof(line), "webhook-signature: %s", sig);
	h = curl_slist_append(h, line);
	return h;
}

/* A new easy handle with the endpoint's fixed options. */
static CURL *hookd_easy_new(const struct tn_hook_endpoint *c)
{
	CURL *e = curl_easy_init();

	if (e == NULL)
		return NULL;
	curl_easy_setopt(e, CURLOPT_URL, c->url);
	curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L);
	curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L);
	if (c->tls_ca_file != NULL)
		curl_easy_setopt(e, CURLOPT_CAINFO, c->tls_ca_file);
	curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)c->connect_timeout_ms);
	curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)c->timeout_ms);
	curl_easy_setopt(e, CURLOPT_USERAGENT, "tenantmail-hookd/" PACKAGE_VERSION);
	curl_easy_setopt(e, CURLOPT_POST, 1L);
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, hookd_resp_write);
	return e;
}

/* Drop the idle handles (the endpoint's options changed, or it goes). */
static void hookd_easy_flush(struct hookd_ep *ep)
{
	while (ep->neasy > 0)
		curl_easy_cleanup(ep->easy_pool[--ep->neasy]);
}

/* An easy handle for this request: an idle one of the endpoint (URL,
 * timeouts and TLS options already set) or a new one. */
static CURL *hookd_easy(struct hookd_req *r)
{
	CURL *e = r->ep->neasy > 0 ? r->ep->easy_pool[--r->ep->neasy] :
				     hookd_easy_new(&r->ep->conf);

	if (e == NULL)
		return NULL;
	curl_easy_setopt(e, CURLOPT_POSTFIELDS, (const char *)r->ev->body);
	curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, (long)r->ev->body_len);
	curl_easy_setopt(e, CURLOPT_HTTPHEADER, r->headers);
	curl_easy_setopt(e, CURLOPT_WRITEDATA, r);
	curl_easy_setopt(e, CURLOPT_ERRORBUFFER, r->errbuf);
	curl_easy_setopt(e, CURLOPT_PRIVATE, r);
	return e;
}

static void hookd_req_free(struct hookd_req *r)
{
	struct hookd_ep *ep = r->ep;

	if (r->easy != NULL) {
		curl_multi_remove_handle(ep->hd->multi, r->easy);
		curl_easy_setopt(r->easy, CURLOPT_HTTPHEADER, NULL);
		curl_easy_setopt(r->easy, CURLOPT_ERRORBUFFER, NULL);
		curl_easy_setopt(r->easy, CURLOPT_POSTFIELDS, NULL);
		if (ep->neasy < HOOKD_EASY_KEEP && !ep->removed)
			ep->easy_pool[ep->neasy++] = r->easy;
		else
			curl_easy_cleanup(r->easy);
	}
	curl_slist_free_all(r->headers);
	hookd_ev_unref(&r->ev);
	tn_mem_free(&r);
}

/* The event to send: the one kept since fan-out (first attempt) or read
 * again from its file (retries, events found by a scan, or beyond the
 * memory budget): its own file, or its line of its segment. -1: the
 * file vanished or is unusable (the item is forgotten). An unusable file
 * of its own is moved to bad/<ep>.<name>; a segment without the event's
 * line (changed since it was indexed) is linked there, its other events
 * still delivered from it. */
static int hookd_req_load(struct hookd *hd, struct hookd_req *r)
{
	char name[TN_HOOK_QNAME_SIZE], path[PATH_MAX];
	const char *why;
	ssize_t len;

	if (r->item->ev != NULL) {
		if (r->item->ev->refs == 1)
			hd->cached_bytes -= r->item->ev->body_len;
		r->ev = r->item->ev;
		r->item->ev = NULL;
		return 0;
	}
	hookd_item_name(r->item, name);
	snprintf(path, sizeof(path), "%s/%s", r->ep->qdir, name);
	if ((len = hookd_read_path(path, hd->scratch, HOOKD_FILE_MAX)) < 0) {
		if (errno == EFBIG) {
			hookd_quarantine_file(hd, r->ep->qdir, name, r->ep, r->item->seg != NULL,
					      "larger than a segment can be");
		} else if (errno != ENOENT) {
			tn_error("endpoint %s: %s: %s", r->ep->conf.name, path, strerror(errno));
		}
		return -1;
	}
	if (r->item->seg != NULL) {
		r->ev = hookd_lines_find(hd->scratch, (size_t)len, r->item->id, &why);
		if (r->ev == NULL) {
			tn_error("endpoint %s: %s: event %s: %s", r->ep->conf.name, path,
				 r->item->id, why);
			hookd_quarantine_file(hd, r->ep->qdir, name, r->ep, true,
					      "an event's line is gone or corrupt");
		}
	} else if ((r->ev = hookd_ev_parse(hd->scratch, (size_t)len, r->item->id, &why)) == NULL) {
		hookd_quarantine_file(hd, r->ep->qdir, name, r->ep, false, why);
	}
	return r->ev != NULL ? 0 : -1;
}

static bool hookd_ep_ready(const struct hookd_ep *ep, int64_t now_ms)
{
	return !ep->removed && !ep->disabled && ep->conf.enabled &&
	       ep->paused_until_ms <= now_ms && ep->inflight < ep->conf.concurrency;
}

static void hookd_start(struct hookd *hd, struct hookd_ep *ep, struct hookd_item *item)
{
	struct hookd_req *r = tn_mem_calloc(1, sizeof(*r));

	r->ep = ep;
	r->item = item;
	memcpy(r->id, item->id, sizeof(r->id));
	r->attempt = item->attempts + 1;
	hookd_queue_take(&ep->q, item);
	if (hookd_req_load(hd, r) < 0) {
		if (item->seg != NULL)
			hookd_seg_leave(hd, ep, item);
		hookd_queue_remove(&ep->q, item);
		hookd_req_free(r);
		return;
	}
	r->headers = hookd_headers(r, tn_hook_now_ms() / 1000);
	if ((r->easy = hookd_easy(r)) == NULL ||
	    curl_multi_add_handle(hd->multi, r->easy) != CURLM_OK) {
		tn_error("endpoint %s: cannot start a request", ep->conf.name);
		item->next_ms = tn_hook_now_ms() + 1000;
		hookd_queue_put(&ep->q, item);
		hookd_req_free(r);
		return;
	}
	r->start_us = hookd_mono_us();
	ep->inflight++;
	pthread_mutex_lock(&hd->mlock);
	hd->running_requests++;
	pthread_mutex_unlock(&hd->mlock);
}

/* Start what is due; arm the pump timer for the next due time. */
static void hookd_pump(struct hookd *hd)
{
	int64_t now = tn_hook_now_ms(), next = INT64_MAX;

	if (hd->stopping)
		return;
	for (unsigned i = 0; i < hd->neps; i++) {
		struct hookd_ep *ep = hd->eps[i];
		struct hookd_item *item;

		while (hookd_ep_ready(ep, now) && (item = hookd_queue_peek(&ep->q)) != NULL &&
		       item->next_ms <= now)
			hookd_start(hd, ep, item);
		if (ep->removed || ep->disabled || !ep->conf.enabled)
			continue;
		if (ep->paused_until_ms > now && ep->paused_until_ms < next)
			next = ep->paused_until_ms;
		if (ep->inflight < ep->conf.concurrency && (item = hookd_queue_peek(&ep->q)) != NULL &&
		    item->next_ms > now && item->next_ms < next)
			next = item->next_ms;
	}
	if (next != INT64_MAX)
		hookd_timer_at(hd->pump_timer, next - now);
}

static void hookd_pump_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	hookd_pump(arg);
}

/* --- the reaper thread -------------------------------------------------------------- */

/* Make the retry files written from a segment durable before the
 * segment goes: one syncfs(2) of the spool's file system. */
static bool hookd_reap_sync(const struct hookd_reap *j)
{
	int fd = open(j->path, O_RDONLY | O_CLOEXEC);
	bool ok = fd >= 0 && syncfs(fd) == 0;

	if (!ok && !(fd < 0 && errno == ENOENT))
		tn_error("endpoint %s: syncfs before removing %s: %s; the segment is kept"
			 " (its events are sent again after a restart)", j->ep->conf.name,
			 j->path, strerror(errno));
	if (fd >= 0)
		close(fd);
	return ok || errno == ENOENT;
}

/* A segment's file, if this is its last name and it is not large, is
 * handed back to the producers as tmp/free.<n> (replacing whatever had
 * that name) instead of being unlinked: they overwrite it, and neither
 * side allocates or frees an inode (docs/outbox.md). */
static bool hookd_reap_recycle(const struct hookd_reap *j)
{
	struct stat st;

	return j->free_path[0] != '\0' && lstat(j->path, &st) == 0 && S_ISREG(st.st_mode) &&
	       st.st_nlink == 1 && st.st_size <= HOOKD_FREE_SIZE_MAX &&
	       rename(j->path, j->free_path) == 0;
}

/* The file system's part of a job (either thread); synced: whether a
 * sync this round already covered it. */
static void hookd_reap_run(struct hookd_reap *j, bool *synced)
{
	if (j->sync && !*synced) {
		if (!hookd_reap_sync(j)) {
			j->kept = true;
			return;
		}
		*synced = true;
	}
	if (hookd_reap_recycle(j))
		return;
	if (unlink(j->path) < 0 && errno != ENOENT)
		tn_error("endpoint %s: cannot remove %s: %s", j->ep->conf.name, j->path,
			 strerror(errno));
}

/* The loop's part: forget what is gone. A segment kept after a failed
 * sync stays known, so that it is not sent again before a restart. */
static void hookd_reap_done(struct hookd_reap *j)
{
	if (j->seg != NULL) {
		if (!j->kept)
			hookd_queue_seg_remove(&j->ep->q, j->seg);
	} else {
		j->ep->reaping--;
		hookd_queue_remove(&j->ep->q, j->item);
	}
	tn_mem_free(&j);
}

static void *hookd_reaper_main(void *arg)
{
	struct hookd_reaper *rp = arg;

	pthread_mutex_lock(&rp->lock);
	for (;;) {
		struct hookd_reap *batch, *last = NULL;
		bool synced = false;

		while (rp->jobs == NULL && !rp->stop)
			pthread_cond_wait(&rp->cond, &rp->lock);
		if (rp->jobs == NULL)
			break;
		batch = rp->jobs;
		rp->jobs = NULL;
		rp->jobs_tail = &rp->jobs;
		pthread_mutex_unlock(&rp->lock);
		for (struct hookd_reap *j = batch; j != NULL; j = j->next) {
			hookd_reap_run(j, &synced);
			last = j;
		}
		pthread_mutex_lock(&rp->lock);
		last->next = rp->done;
		rp->done = batch;
		if (write(rp->wake[1], "", 1) < 0 && errno != EAGAIN)
			tn_error("reaper: wake-up pipe: %s", strerror(errno));
	}
	pthread_mutex_unlock(&rp->lock);
	return NULL;
}

/* In the loop: forget the items and segments whose files are gone. */
static void hookd_reaper_collect(struct hookd *hd)
{
	struct hookd_reaper *rp = &hd->reaper;
	struct hookd_reap *done, *next;

	pthread_mutex_lock(&rp->lock);
	done = rp->done;
	rp->done = NULL;
	pthread_mutex_unlock(&rp->lock);
	for (; done != NULL; done = next) {
		next = done->next;
		hookd_reap_done(done);
	}
}

static void hookd_reaper_wake(evutil_socket_t fd, short what, void *arg)
{
	char buf[256];

	(void)what;
	while (read(fd, buf, sizeof(buf)) > 0)
		;
	hookd_reaper_collect(arg);
}

/* Remove a delivered item's own file, or a segment with no item left. */
static void hookd_reap(struct hookd *hd, struct hookd_ep *ep, struct hookd_item *item,
		       struct hookd_seg *seg, const char *path)
{
	struct hookd_reaper *rp = &hd->reaper;
	struct hookd_reap *j = tn_mem_calloc(1, sizeof(*j));
	bool synced = false;

	j->ep = ep;
	j->item = item;
	j->seg = seg;
	j->sync = seg != NULL && seg->wrote_retry;
	snprintf(j->path, sizeof(j->path), "%s", path);
	if (seg != NULL)
		snprintf(j->free_path, sizeof(j->free_path), "%s/" TN_OUTBOX_FREE_PREFIX "%u",
			 hd->tmpdir, hd->free_next++ % HOOKD_FREE_FILES);
	if (item != NULL)
		ep->reaping++;
	if (!rp->running) {
		hookd_reap_run(j, &synced);
		hookd_reap_done(j);
		return;
	}
	pthread_mutex_lock(&rp->lock);
	*rp->jobs_tail = j;
	rp->jobs_tail = &j->next;
	pthread_cond_signal(&rp->cond);
	pthread_mutex_unlock(&rp->lock);
}

static void hookd_seg_release(struct hookd *hd, struct hookd_ep *ep, struct hookd_seg *seg)
{
	char path[PATH_MAX];

	snprintf(path, sizeof(path), "%s/%s.json", ep->qdir, seg->id);
	seg->reaping = true;
	hookd_reap(hd, ep, NULL, seg, path);
}

/* An item leaves its segment (delivered, or written out as its own
 * file); the segment's file goes when none is left in it. */
static void hookd_seg_leave(struct hookd *hd, struct hookd_ep *ep, struct hookd_item *item)
{
	struct hookd_seg *seg = item->seg;

	item->seg = NULL;
	if (--seg->left == 0)
		hookd_seg_release(hd, ep, seg);
}

static void hookd_reaper_start(struct hookd *hd)
{
	struct hookd_reaper *rp = &hd->reaper;

	pthread_mutex_init(&rp->lock, NULL);
	pthread_cond_init(&rp->cond, NULL);
	rp->started = true;
	rp->jobs_tail = &rp->jobs;
	if (pipe2(rp->wake, O_NONBLOCK | O_CLOEXEC) < 0) {
		tn_warning("reaper: pipe: %s; files are removed in the loop", strerror(errno));
		return;
	}
	rp->wake_ev = event_new(hd->base, rp->wake[0], EV_READ | EV_PERSIST,
				hookd_reaper_wake, hd);
	event_add(rp->wake_ev, NULL);
	rp->running = pthread_create(&rp->thread, NULL, hookd_reaper_main, rp) == 0;
	if (!rp->running)
		tn_warning("reaper: no thread; files are removed in the loop");
}

/* Finish what was handed over, then collect it. */
static void hookd_reaper_stop(struct hookd *hd)
{
	struct hookd_reaper *rp = &hd->reaper;

	if (!rp->started)
		return;
	rp->started = false;
	if (rp->running) {
		pthread_mutex_lock(&rp->lock);
		rp->stop = true;
		pthread_cond_signal(&rp->cond);
		pthread_mutex_unlock(&rp->lock);
		pthread_join(rp->thread, NULL);
		rp->running = false;
		hookd_reaper_collect(hd);
	}
	if (rp->wake_ev != NULL)
		event_free(rp->wake_ev);
	rp->wake_ev = NULL;
	if (rp->wake[0] > 0) {
		close(rp->wake[0]);
		close(rp->wake[1]);
	}
	pthread_cond_destroy(&rp->cond);
	pthread_mutex_destroy(&rp->lock);
}

/* --- outcomes ----------------------------------------------------------------------- */

/* Full jitter: uniform in [0, ceiling], at least min(1 s, the initial
 * delay) so that a failing endpoint is never hammered. */
static int64_t hookd_backoff(struct hookd *hd, unsigned attempts)
{
	int64_t ceiling = hd->retry_initial_ms, floor;

	for (unsigned i = 1; i < attempts && ceiling < hd->retry_max_ms; i++)
		ceiling *= 2;
	if (ceiling > hd->retry_max_ms)
		ceiling = hd->retry_max_ms;
	floor = hd->retry_initial_ms < 1000 ? hd->retry_initial_ms : 1000;
	ceiling = (int64_t)(hookd_random(hd) % (uint64_t)(ceiling + 1));
	return ceiling < floor ? floor : ceiling;
}

/* Rename the item's file to its new state; false when it vanished. */
static bool hookd_rename_item(struct hookd_ep *ep, const char *oldname,
			      const struct hookd_item *item)
{
	char newname[TN_HOOK_QNAME_SIZE], from[PATH_MAX], to[PATH_MAX];

	hookd_item_name(item, newname);
	snprintf(from, sizeof(from), "%s/%s", ep->qdir, oldname);
	snprintf(to, sizeof(to), "%s/%s", ep->qdir, newname);
	if (strcmp(from, to) == 0 || rename(from, to) == 0)
		return true;
	if (errno != ENOENT)
		tn_error("endpoint %s: rename %s: %s", ep->conf.name, from, strerror(errno));
	return errno != ENOENT;
}

/* The item becomes dead/<id>.json: its own file is moved there, an
 * event of a segment is written there (then leaves the segment). false
 * when that write failed: the item stays as it is. */
static bool hookd_to_dead(struct hookd *hd, struct hookd_ep *ep, const char *name,
			  struct hookd_item *item, const struct hookd_ev *ev)
{
	char from[PATH_MAX], to[PATH_MAX];

	snprintf(from, sizeof(from), "%s/%s", ep->qdir, name);
	snprintf(to, sizeof(to), "%s/%s.json", ep->deaddir, item->id);
	if (item->seg != NULL) {
		snprintf(to, sizeof(to), "%s.json", item->id);
		if (hookd_write_event_file(ep->deaddir, to, ev) < 0) {
			tn_error("endpoint %s: cannot write %s/%s: %s", ep->conf.name,
				 ep->deaddir, to, strerror(errno));
			return false;
		}
		hookd_seg_leave(hd, ep, item);
	} else if (rename(from, to) < 0 && errno != ENOENT) {
		tn_error("endpoint %s: cannot move %s to %s: %s", ep->conf.name, from, to,
			 strerror(errno));
	}
	tn_warning("endpoint %s: event %s is a dead letter after %u attempts"
		   " (tnctl events replay %s)", ep->conf.name, item->id, item->attempts,
		   item->id);
	pthread_mutex_lock(&hd->mlock);
	ep->dead++;
	pthread_mutex_unlock(&hd->mlock);
	hookd_queue_remove(&ep->q, item);
	return true;
}

/* After a failed attempt, an event of a segment gets its own retry file
 * (its new state), then leaves the segment, which is removed after a
 * sync once none is left in it. If the file cannot be written, the
 * item stays in the segment with its state in memory only. */
static void hookd_unseg(struct hookd *hd, struct hookd_ep *ep, struct hookd_item *item,
			const struct hookd_ev *ev)
{
	char name[TN_HOOK_QNAME_SIZE];
	struct hookd_seg *seg = item->seg;

	item->seg = NULL;
	hookd_item_name(item, name);
	item->seg = seg;
	if (hookd_write_event_file(ep->qdir, name, ev) < 0) {
		tn_error("endpoint %s: cannot write %s/%s: %s (retried from its segment)",
			 ep->conf.name, ep->qdir, name, strerror(errno));
		return;
	}
	seg->wrote_retry = true;
	hookd_seg_leave(hd, ep, item);
}

static void hookd_disable(struct hookd_ep *ep, long status)
{
	char at[32], text[256];
	int fd;

	tn_hook_format_time(tn_hook_now_ms(), at);
	snprintf(text, sizeof(text),
		 "{\"at\":\"%s\",\"status\":%ld,\"reason\":\"the endpoint answered %ld Gone\"}\n",
		 at, status, status);
	fd = open(ep->disabled_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0660);
	if (fd < 0 || write(fd, text, strlen(text)) < 0)
		tn_error("endpoint %s: cannot write %s: %s", ep->conf.name, ep->disabled_path,
			 strerror(errno));
	if (fd >= 0)
		close(fd);
	ep->disabled = true;
	tn_error("endpoint %s: answered %ld Gone: disabled; its events are kept"
		 " (tnctl events enable %s)", ep->conf.name, status, ep->conf.name);
}

/* Retry-After in ms from now (seconds or an HTTP date); -1 when absent. */
static int64_t hookd_retry_after(CURL *easy)
{
	struct curl_header *h;
	char *end;
	long secs;
	time_t when;

	if (curl_easy_header(easy, "Retry-After", 0, CURLH_HEADER, -1, &h) != CURLHE_OK)
		return -1;
	secs = strtol(h->value, &end, 10);
	if (end != h->value && *end == '\0' && secs >= 0)
		return (int64_t)secs * 1000;
	if ((when = curl_getdate(h->value, NULL)) < 0)
		return -1;
	return when * (int64_t)1000 > tn_hook_now_ms() ? when * (int64_t)1000 - tn_hook_now_ms() : 0;
}

static enum hookd_class hookd_classify(CURLcode rc, long status)
{
	if (rc != CURLE_OK || status < 200 || status > 599)
		return HC_ERROR;
	return (enum hookd_class)(status / 100 - 2);
}

static void hookd_account(struct hookd *hd, struct hookd_ep *ep, enum hookd_class cls,
			  enum hookd_outcome outcome, double secs)
{
	pthread_mutex_lock(&hd->mlock);
	ep->attempts[cls]++;
	ep->outcomes[outcome]++;
	ep->lat_count++;
	ep->lat_sum += secs;
	for (int i = 0; i < HOOKD_NBUCKETS; i++) {
		if (secs <= hookd_buckets[i])
			ep->lat_buckets[i]++;
	}
	hd->running_requests--;
	pthread_mutex_unlock(&hd->mlock);
}

static const char *hookd_error_text(struct hookd_req *r, CURLcode rc, long status,
				    char *buf, size_t size)
{
	if (rc != CURLE_OK)
		return r->errbuf[0] != '\0' ? r->errbuf : curl_easy_strerror(rc);
	if (status >= 200 && status < 300)
		return NULL;
	if (status >= 300 && status < 400)
		return "redirect not followed";
	if (status == 0)
		return "no HTTP status";
	snprintf(buf, size, "HTTP %ld%s", status, r->resp_len > 0 ? ": " : "");
	tn_log_sanitize(buf + strlen(buf), size - strlen(buf), r->resp, r->resp_len);
	return buf;
}

static enum hookd_outcome hookd_failed(struct hookd *hd, struct hookd_req *r, long status,
				       const char *oldname)
{
	struct hookd_ep *ep = r->ep;
	struct hookd_item *item = r->item;
	int64_t now = tn_hook_now_ms(), ra = -1;

	if (status == 429 || status == 503)
		ra = hookd_retry_after(r->easy);
	item->attempts++;
	if (item->first_ms == 0)
		item->first_ms = now;
	if (now - item->first_ms >= hd->retry_window_ms &&
	    hookd_to_dead(hd, ep, oldname, item, r->ev))
		return HO_DEAD;
	if (ra >= 0) {
		if (ra > hd->retry_after_max_ms)
			ra = hd->retry_after_max_ms;
		ep->paused_until_ms = now + ra;
		item->next_ms = now + ra;
		tn_info("endpoint %s: %ld with Retry-After: paused for %" PRId64 " ms",
			ep->conf.name, status, ra);
	} else {
		item->next_ms = now + hookd_backoff(hd, item->attempts);
	}
	if (item->seg != NULL) {
		hookd_unseg(hd, ep, item, r->ev);
	} else if (!hookd_rename_item(ep, oldname, item)) {
		hookd_queue_remove(&ep->q, item);
		return ra >= 0 ? HO_PAUSED : HO_RETRY;
	}
	hookd_queue_put(&ep->q, item);
	return ra >= 0 ? HO_PAUSED : HO_RETRY;
}

static void hookd_done(struct hookd *hd, struct hookd_req *r, CURLcode rc)
{
	struct hookd_ep *ep = r->ep;
	struct hookd_item *item = r->item;
	char oldname[TN_HOOK_QNAME_SIZE], path[PATH_MAX], ebuf[HOOKD_RESP_KEEP * 4 + 8];
	enum hookd_outcome outcome;
	long status = 0;
	double secs = (double)(hookd_mono_us() - r->start_us) / 1e6;
	const char *error;

	if (rc == CURLE_OK)
		curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &status);
	error = hookd_error_text(r, rc, status, ebuf, sizeof(ebuf));
	hookd_item_name(item, oldname);
	ep->inflight--;
	if (rc == CURLE_OK && status >= 200 && status < 300) {
		outcome = HO_DELIVERED;
		snprintf(path, sizeof(path), "%s/%s", ep->qdir, oldname);
	} else if (rc == CURLE_OK && status == 410) {
		outcome = HO_DISABLED;
		hookd_disable(ep, status);
		hookd_queue_put(&ep->q, item);
	} else {
		outcome = hookd_failed(hd, r, status, oldname);
		tn_log(outcome == HO_DEAD ? TN_LOG_ERROR : TN_LOG_DEBUG, NULL,
		       "endpoint %s: event %s attempt %u: %ld %s", ep->conf.name, r->id,
		       r->attempt, status, error != NULL ? error : "");
	}
	hookd_log_attempt(hd, r, status, secs * 1000, outcome, error);
	hookd_account(hd, ep, hookd_classify(rc, status), outcome, secs);
	if (outcome == HO_DELIVERED && item->seg != NULL) {
		hookd_seg_leave(hd, ep, item);
		hookd_queue_remove(&ep->q, item);
	} else if (outcome == HO_DELIVERED) {
		hookd_reap(hd, ep, item, NULL, path);
	}
	r->item = NULL;
	hookd_req_free(r);
}

static void hookd_check_multi(struct hookd *hd)
{
	CURLMsg *msg;
	int left;

	while ((msg = curl_multi_info_read(hd->multi, &left)) != NULL) {
		struct hookd_req *r;

		if (msg->msg != CURLMSG_DONE)
			continue;
		curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&r);
		hookd_done(hd, r, msg->data.result);
	}
	if (hd->stopping) {
		int running = 0;

		curl_multi_perform(hd->multi, &running);
		if (running == 0)
			event_base_loopexit(hd->base, NULL);
		return;
	}
	hookd_pump(hd);
}

/* --- libcurl ↔ libevent --------------------------------------------------------------- */

static void hookd_sock_event(evutil_socket_t fd, short what, void *arg)
{
	struct hookd *hd = arg;
	int running, flags = 0;

	if (what & EV_READ)
		flags |= CURL_CSELECT_IN;
	if (what & EV_WRITE)
		flags |= CURL_CSELECT_OUT;
	curl_multi_socket_action(hd->multi, fd, flags, &running);
	hookd_check_multi(hd);
}

static int hookd_sock_cb(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp)
{
	struct hookd *hd = userp;
	struct hookd_sock *hs = socketp;
	short kind = EV_PERSIST;

	(void)easy;
	if (what == CURL_POLL_REMOVE) {
		if (hs != NULL) {
			event_free(hs->ev);
			tn_mem_free(&hs);
		}
		curl_multi_assign(hd->multi, s, NULL);
		return 0;
	}
	if (hs == NULL) {
		hs = tn_mem_calloc(1, sizeof(*hs));
		hs->fd = s;
		curl_multi_assign(hd->multi, s, hs);
	} else {
		event_free(hs->ev);
	}
	if (what & CURL_POLL_IN)
		kind |= EV_READ;
	if (what & CURL_POLL_OUT)
		kind |= EV_WRITE;
	hs->ev = event_new(hd->base, s, kind, hookd_sock_event, hd);
	event_add(hs->ev, NULL);
	return 0;
}

static void hookd_curl_timeout(evutil_socket_t fd, short what, void *arg)
{
	struct hookd *hd = arg;
	int running;

	(void)fd;
	(void)what;
	curl_multi_socket_action(hd->multi, CURL_SOCKET_TIMEOUT, 0, &running);
	hookd_check_multi(hd);
}

static int hookd_timer_cb(CURLM *multi, long timeout_ms, void *userp)
{
	struct hookd *hd = userp;

	(void)multi;
	if (timeout_ms < 0)
		event_del(hd->curl_timer);
	else
		hookd_timer_at(hd->curl_timer, timeout_ms);
	return 0;
}

/* --- metrics and housekeeping -------------------------------------------------------- */

static void hookd_render_ep(const struct hookd_ep *ep, FILE *f)
{
	const char *n = ep->conf.name;
	uint64_t cum = 0;

	fprintf(f, "tn_hookd_queue_depth{endpoint=\"%s\"} %" PRIu64 "\n", n, ep->depth);
	fprintf(f, "tn_hookd_oldest_pending_seconds{endpoint=\"%s\"} %.3f\n", n, ep->oldest_s);
	fprintf(f, "tn_hookd_dead_letters{endpoint=\"%s\"} %" PRIu64 "\n", n, ep->dead);
	fprintf(f, "tn_hookd_endpoint_disabled{endpoint=\"%s\"} %d\n", n, ep->m_disabled);
	fprintf(f, "tn_hookd_inflight{endpoint=\"%s\"} %u\n", n, ep->m_inflight);
	for (int c = 0; c < HC_N; c++)
		fprintf(f, "tn_hookd_attempts_total{endpoint=\"%s\",class=\"%s\"} %" PRIu64 "\n",
			n, hookd_class_names[c], ep->attempts[c]);
	for (int o = 0; o < HO_N; o++)
		fprintf(f, "tn_hookd_deliveries_total{endpoint=\"%s\",outcome=\"%s\"} %" PRIu64 "\n",
			n, hookd_outcome_names[o], ep->outcomes[o]);
	for (int i = 0; i < HOOKD_NBUCKETS; i++) {
		cum = ep->lat_buckets[i];
		fprintf(f, "tn_hookd_delivery_latency_seconds_bucket{endpoint=\"%s\",le=\"%g\"}"
			" %" PRIu64 "\n", n, hookd_buckets[i], cum);
	}
	fprintf(f, "tn_hookd_delivery_latency_seconds_bucket{endpoint=\"%s\",le=\"+Inf\"}"
		" %" PRIu64 "\n", n, ep->lat_count);
	fprintf(f, "tn_hookd_delivery_latency_seconds_sum{endpoint=\"%s\"} %.6f\n", n, ep->lat_sum);
	fprintf(f, "tn_hookd_delivery_latency_seconds_count{endpoint=\"%s\"} %" PRIu64 "\n", n,
		ep->lat_count);
}

static const char hookd_metrics_help[] =
	"# HELP tn_hookd_queue_depth Events waiting for an endpoint (its queue/).\n"
	"# TYPE tn_hookd_queue_depth gauge\n"
	"# HELP tn_hookd_oldest_pending_seconds Age of the oldest event waiting for an endpoint.\n"
	"# TYPE tn_hookd_oldest_pending_seconds gauge\n"
	"# HELP tn_hookd_dead_letters Events in an endpoint's dead/.\n"
	"# TYPE tn_hookd_dead_letters gauge\n"
	"# HELP tn_hookd_endpoint_disabled 1 while an endpoint is disabled (410 or enabled=no).\n"
	"# TYPE tn_hookd_endpoint_disabled gauge\n"
	"# HELP tn_hookd_inflight Requests in flight to an endpoint.\n"
	"# TYPE tn_hookd_inflight gauge\n"
	"# HELP tn_hookd_attempts_total Delivery attempts by HTTP status class (error: no answer).\n"
	"# TYPE tn_hookd_attempts_total counter\n"
	"# HELP tn_hookd_deliveries_total Attempts by outcome.\n"
	"# TYPE tn_hookd_deliveries_total counter\n"
	"# HELP tn_hookd_delivery_latency_seconds Request latency.\n"
	"# TYPE tn_hookd_delivery_latency_seconds histogram\n";

static char *hookd_render(void *arg)
{
	struct hookd *hd = arg;
	char *text = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);

	if (f == NULL)
		return strdup("# out of memory\n");
	fputs(hookd_metrics_help, f);
	pthread_mutex_lock(&hd->mlock);
	for (unsigned i = 0; i < hd->neps; i++)
		hookd_render_ep(hd->eps[i], f);
	fprintf(f, "# TYPE tn_hookd_new_backlog gauge\ntn_hookd_new_backlog %" PRIu64 "\n",
		hd->new_backlog);
	fprintf(f, "# TYPE tn_hookd_events_fanned_out_total counter\n"
		"tn_hookd_events_fanned_out_total %" PRIu64 "\n", hd->fanned_out);
	fprintf(f, "# TYPE tn_hookd_events_unrouted_total counter\n"
		"tn_hookd_events_unrouted_total %" PRIu64 "\n", hd->unrouted);
	fprintf(f, "# TYPE tn_hookd_quarantined_total counter\n"
		"tn_hookd_quarantined_total %" PRIu64 "\n", hd->quarantined);
	pthread_mutex_unlock(&hd->mlock);
	fclose(f);
	return text;
}

/* Depth every second; the oldest pending age (a walk over every item)
 * every fifth second, or every second while the queues are small. */
static void hookd_measure(struct hookd *hd)
{
	int64_t now = tn_hook_now_ms();
	bool walk = hd->ticks++ % 5 == 0;

	for (unsigned i = 0; i < hd->neps; i++) {
		struct hookd_ep *ep = hd->eps[i];
		int64_t oldest = now;

		if (walk || ep->q.count < 10000) {
			for (size_t b = 0; b < ep->q.nbuckets; b++) {
				for (struct hookd_item *it = ep->q.buckets[b]; it != NULL;
				     it = it->hnext) {
					int64_t t = tn_hook_id_time_ms(it->id);

					if (t > 0 && t < oldest)
						oldest = t;
				}
			}
		}
		pthread_mutex_lock(&hd->mlock);
		ep->depth = ep->q.count - ep->reaping;
		ep->m_inflight = ep->inflight;
		ep->m_disabled = ep->disabled || !ep->conf.enabled;
		if (walk || ep->q.count < 10000)
			ep->oldest_s = (double)(now - oldest) / 1000.0;
		pthread_mutex_unlock(&hd->mlock);
	}
}

static void hookd_house(evutil_socket_t fd, short what, void *arg)
{
	struct hookd *hd = arg;

	(void)fd;
	(void)what;
	hookd_log_flush(hd);
	hookd_measure(hd);
}

static void hookd_rescan_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	hookd_rescan(arg);
}

/* --- signals and life cycle ------------------------------------------------------------ */

static void hookd_stop_timeout(evutil_socket_t fd, short what, void *arg)
{
	struct hookd *hd = arg;

	(void)fd;
	(void)what;
	tn_warning("requests still in flight after %d ms: stopping anyway (they are sent"
		   " again after the restart)", HOOKD_STOP_GRACE_MS);
	event_base_loopexit(hd->base, NULL);
}

static void hookd_signal(evutil_socket_t sig, short what, void *arg)
{
	struct hookd *hd = arg;

	(void)what;
	if (sig == SIGHUP) {
		tn_info("SIGHUP: reloading the endpoint files");
		hookd_endpoints_reload(hd);
		hookd_rescan(hd);
		return;
	}
	if (hd->stopping)
		return;
	hd->stopping = true;
	tn_info("stopping (signal %d)", (int)sig);
	event_del(hd->pump_timer);
	event_del(hd->rescan_timer);
	if (hd->running_requests == 0) {
		event_base_loopexit(hd->base, NULL);
		return;
	}
	event_base_once(hd->base, -1, EV_TIMEOUT, hookd_stop_timeout, hd,
			&(struct timeval){ HOOKD_STOP_GRACE_MS / 1000, 0 });
}

static void hookd_paths(struct hookd *hd)
{
	hd->outbox = tn_mem_strdup(tn_conf_str(hd->conf, "outbox_dir"));
	hd->newdir = tn_mem_printf("%s/new", hd->outbox);
	hd->tmpdir = tn_mem_printf("%s/tmp", hd->outbox);
	hd->baddir = tn_mem_printf("%s/bad", hd->outbox);
	hd->hooksdir = tn_mem_printf("%s/hooks", hd->outbox);
	hd->logpath = tn_mem_printf("%s/deliveries.log", hd->hooksdir);
	hd->logpath1 = tn_mem_printf("%s/deliveries.log.1", hd->hooksdir);
	hd->retry_initial_ms = tn_conf_time_ms(hd->conf, "hookd_retry_initial_delay");
	hd->retry_max_ms = tn_conf_time_ms(hd->conf, "hookd_retry_max_delay");
	hd->retry_window_ms = tn_conf_time_ms(hd->conf, "hookd_retry_window");
	hd->retry_after_max_ms = tn_conf_time_ms(hd->conf, "hookd_retry_after_max");
	hd->tmp_max_age_ms = tn_conf_time_ms(hd->conf, "hookd_tmp_max_age");
	hd->log_max_size = tn_conf_size(hd->conf, "hookd_delivery_log_max_size");
	hd->scratch = tn_mem_alloc(HOOKD_FILE_MAX);
}

static int hookd_setup_spool(struct hookd *hd)
{
	struct tn_outbox *ob = tn_outbox_create_conf(hd->conf);
	const char *error;
	int ret = tn_outbox_check(ob, &error);

	tn_outbox_destroy(&ob);
	if (ret < 0) {
		tn_error("outbox: %s", error);
		return -1;
	}
	if (hookd_mkdir(hd->baddir) < 0 || hookd_mkdir(hd->hooksdir) < 0)
		return -1;
	hd->inotify_fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	if (hd->inotify_fd < 0) {
		tn_error("inotify: %s", strerror(errno));
		return -1;
	}
	hd->wd_new = inotify_add_watch(hd->inotify_fd, hd->newdir,
				       IN_MOVED_TO | IN_ONLYDIR);
	if (hd->wd_new < 0) {
		tn_error("inotify on %s: %s", hd->newdir, strerror(errno));
		return -1;
	}
	hookd_log_open(hd);
	return 0;
}

static void hookd_events_setup(struct hookd *hd)
{
	int64_t rescan = tn_conf_time_ms(hd->conf, "hookd_rescan_interval");
	struct timeval rtv = { rescan / 1000, (rescan % 1000) * 1000 }, one = { 1, 0 };

	hd->multi = curl_multi_init();
	curl_multi_setopt(hd->multi, CURLMOPT_SOCKETFUNCTION, hookd_sock_cb);
	curl_multi_setopt(hd->multi, CURLMOPT_SOCKETDATA, hd);
	curl_multi_setopt(hd->multi, CURLMOPT_TIMERFUNCTION, hookd_timer_cb);
	curl_multi_setopt(hd->multi, CURLMOPT_TIMERDATA, hd);
	curl_multi_setopt(hd->multi, CURLMOPT_MAXCONNECTS, 1024L);
	hd->curl_timer = evtimer_new(hd->base, hookd_curl_timeout, hd);
	hd->pump_timer = evtimer_new(hd->base, hookd_pump_cb, hd);
	hd->fanout_ev = event_new(hd->base, -1, 0, hookd_fanout, hd);
	hd->inotify_ev = event_new(hd->base, hd->inotify_fd, EV_READ | EV_PERSIST,
				   hookd_inotify_read, hd);
	hd->rescan_timer = event_new(hd->base, -1, EV_PERSIST, hookd_rescan_cb, hd);
	hd->house_timer = event_new(hd->base, -1, EV_PERSIST, hookd_house, hd);
	hd->sig_term = evsignal_new(hd->base, SIGTERM, hookd_signal, hd);
	hd->sig_int = evsignal_new(hd->base, SIGINT, hookd_signal, hd);
	hd->sig_hup = evsignal_new(hd->base, SIGHUP, hookd_signal, hd);
	event_add(hd->inotify_ev, NULL);
	event_add(hd->rescan_timer, &rtv);
	event_add(hd->house_timer, &one);
	event_add(hd->sig_term, NULL);
	event_add(hd->sig_int, NULL);
	event_add(hd->sig_hup, NULL);
}

static void hookd_teardown(struct hookd *hd)
{
	struct event *evs[] = { hd->curl_timer, hd->pump_timer, hd->fanout_ev, hd->inotify_ev,
				hd->rescan_timer, hd->house_timer, hd->sig_term, hd->sig_int,
				hd->sig_hup };

	hookd_metrics_stop(&hd->metrics);
	hookd_reaper_stop(hd);
	for (unsigned i = 0; i < hd->neps; i++) {
		struct hookd_ep *ep = hd->eps[i];

		tn_hook_endpoint_clear(&ep->conf);
		for (size_t b = 0; b < ep->q.nbuckets; b++) {
			for (struct hookd_item *it = ep->q.buckets[b]; it != NULL; it = it->hnext)
				hookd_item_uncache(hd, it);
		}
		hookd_easy_flush(ep);
		hookd_queue_free(&ep->q);
		tn_mem_free(&ep->dir);
		tn_mem_free(&ep->qdir);
		tn_mem_free(&ep->deaddir);
		tn_mem_free(&ep->disabled_path);
		tn_mem_free(&ep);
	}
	tn_mem_free(&hd->eps);
	if (hd->multi != NULL)
		curl_multi_cleanup(hd->multi);
	for (size_t i = 0; i < sizeof(evs) / sizeof(evs[0]); i++) {
		if (evs[i] != NULL)
			event_free(evs[i]);
	}
	if (hd->log != NULL)
		fclose(hd->log);
	if (hd->inotify_fd > 0)
		close(hd->inotify_fd);
	hookd_pending_clear(hd);
	tn_mem_free(&hd->pending);
	tn_mem_free(&hd->outbox);
	tn_mem_free(&hd->newdir);
	tn_mem_free(&hd->tmpdir);
	tn_mem_free(&hd->baddir);
	tn_mem_free(&hd->hooksdir);
	tn_mem_free(&hd->logpath);
	tn_mem_free(&hd->logpath1);
	tn_mem_free(&hd->scratch);
	if (hd->base != NULL)
		event_base_free(hd->base);
	pthread_mutex_destroy(&hd->mlock);
	tn_conf_destroy(&hd->conf);
}

/* --- configuration and main ------------------------------------------------------------ */

/* The lookup parameters are not used here, but they are global lines of
 * the shared tenantmail.conf, which every program must accept. */
static const struct tn_conf_param *const hookd_tables[] = {
	TN_CONF_SHARED_TABLES, NULL,
};

/* -n: print the effective settings and the endpoints, like postconf -n. */
static int hookd_check(struct hookd *hd)
{
	const char *dir = tn_conf_str(hd->conf, "hookd_endpoints_dir"), *error;
	struct tn_hook_endpoint *eps;
	unsigned count;

	tn_conf_dump(hd->conf, stdout, TN_CONF_DUMP_CHANGED);
	if (tn_hook_endpoints_load(dir, &eps, &count, &error) < 0) {
		fprintf(stderr, "tn-hookd: %s\n", error);
		return EX_CONFIG;
	}
	for (unsigned i = 0; i < count; i++) {
		printf("endpoint %s: url=%s secrets=%u concurrency=%u enabled=%s%s\n",
		       eps[i].name, eps[i].url, eps[i].nsecrets, eps[i].concurrency,
		       eps[i].enabled ? "yes" : "no",
		       eps[i].world_readable ? " WARNING: file readable by others" : "");
	}
	if (count == 0)
		printf("no endpoint files in %s\n", dir);
	tn_hook_endpoints_free(&eps, count);
	return 0;
}

static int hookd_run(struct hookd *hd)
{
	const char *listen = tn_conf_str(hd->conf, "hookd_metrics_listen"), *error;

	if (tn_daemon_drop_privileges("hookd_user", tn_conf_str(hd->conf, "hookd_user")) < 0)
		return EX_NOPERM;
	hookd_paths(hd);
	if (hookd_setup_spool(hd) < 0)
		return EX_CONFIG;
	hd->base = event_base_new();
	hookd_events_setup(hd);
	hookd_reaper_start(hd);
	if (hookd_endpoints_reload(hd) < 0)
		return EX_CONFIG;
	if (*listen != '\0' &&
	    (hd->metrics = hookd_metrics_start(listen, hookd_render, hd, &error)) == NULL) {
		tn_error("%s", error);
		return EX_UNAVAILABLE;
	}
	tn_info("started: outbox %s, %u endpoint%s, /metrics on %s", hd->outbox, hd->neps,
		hd->neps == 1 ? "" : "s", *listen != '\0' ? listen : "(off)");
	hookd_rescan(hd);
	hookd_measure(hd);
	event_base_dispatch(hd->base);
	hookd_reaper_stop(hd);
	hookd_log_flush(hd);
	tn_info("stopped");
	return 0;
}

int main(int argc, char **argv)
{
	struct hookd hd = { .inotify_fd = -1, .wd_new = -1 };
	bool check = false;
	int ret;

	signal(SIGPIPE, SIG_IGN);
	pthread_mutex_init(&hd.mlock, NULL);
	if (getrandom(&hd.rng, sizeof(hd.rng), 0) != sizeof(hd.rng) || hd.rng == 0)
		hd.rng = (uint64_t)hookd_mono_us() | 1;
	if ((ret = tn_daemon_configure("tn-hookd", hookd_tables, "hookd_log_level", argc, argv,
				       &hd.conf, &check)) != 0)
		return ret;
	curl_global_init(CURL_GLOBAL_DEFAULT);
	ret = check ? hookd_check(&hd) : hookd_run(&hd);
	hookd_teardown(&hd);
	curl_global_cleanup();
	return ret;
}
