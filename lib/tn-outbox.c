/*++
 * NAME
 *	tn-outbox 3
 * SUMMARY
 *	durable event outbox (see tn-outbox.h and docs/outbox.md)
 * DESCRIPTION
 *	An append is prepared by its own thread, in parallel with the
 *	others: input checks and limits, id and timestamp, the envelope
 *	encoded around a hole for the sequence number; nothing is written.
 *	Then it joins the queue of the outbox object, and any thread
 *	waiting there may lead a batch: take the queued requests (at most
 *	TN_OUTBOX_BATCH_MAX) and commit them while the others sleep until
 *	theirs is done. Two batches may be under way, on disjoint tenants:
 *	a new one starts when the last one has passed step 4, so that its
 *	writes and sync overlap the other's rename and fsync. A batch
 *	writes its events into one file, a segment, one line each:
 *
 *	1. open tmp/ and new/; (the requests were sorted by tenant name,
 *	   then arrival) per tenant in that order, open seq/<tenant> (made
 *	   on first use: an empty 0660 file is written in tmp/, linked
 *	   into seq/ and seq/ fsync'ed, so that the file never appears with
 *	   the creator's umask and never vanishes in a crash while events
 *	   that used it survive) and try flock(LOCK_EX|LOCK_NB), never
 *	   waiting while holding others. A tenant another process holds:
 *	   its requests go back to the queue with a retry time (1 ms
 *	   doubling to 5 ms) or, past their deadline, fail;
 *	2. per locked tenant: read n; give n+1, n+2, ... to its requests
 *	   (too big with its number: that request fails, its number goes
 *	   to the next); counter := last number (pwrite; not synced yet);
 *	   in fsync mode the counters are synced now, each tenant failing
 *	   alone;
 *	3. the numbered events, tenant by tenant in sequence order, into
 *	   tmp/<first id>.json (O_EXCL, exact mode) with one writev;
 *	4. barrier: syncfs(2) on new/, or fdatasync of the segment;
 *	5. rename the segment into new/;
 *	6. fsync new/;
 *	7. flock(LOCK_UN) explicitly (a child forked meanwhile shares the
 *	   open file description, and close() alone would leave the lock
 *	   with it), close; wake the requests' threads.
 *
 *	Failures. A request or tenant failing in 1-2 is left out of the
 *	segment: it gets no number (a tenant's counter is written back to
 *	n, durably). A failure in 3-5 (write, sync, rename) fails the
 *	batch: the segment is removed and every counter written back. A
 *	failing fsync of new/ fails the batch too: the segment is unlinked
 *	from new/ and the counters written back, except that a segment the
 *	consumer already claimed keeps the counters at their numbers, so
 *	that no number is used twice. The counter never goes below a number
 *	visible in new/, and is on disk before any event that uses it is
 *	visible.

 *	Ids (UUIDv7, RFC 9562 section 5.7 with the monotonic counter of
 *	section 6.2 method 1): 48-bit Unix milliseconds, version 7, 12-bit
 *	rand_a, variant 10, 62-bit rand_b from getrandom(2). rand_a is a
 *	counter: when the millisecond changes it is seeded with 11 random
 *	bits (leaving at least 2048 steps); within the same millisecond it
 *	counts up; when it would pass 0xfff the timestamp is advanced by one
 *	millisecond and the counter reseeded. A clock that steps back
 *	counts as the last millisecond used. So the ids of one outbox
 *	object (a process has one) strictly increase, and their text sorts
 *	the same way. occurred_at is the clock reading itself.
 *
 *	Locking: the outbox mutex guards the id generator and the cached
 *	count of new/ (rescanned at most once a second, by one thread while
 *	the others use the previous count). The queue mutex guards the
 *	queue and the requests in it, the batches' stage, groups and tenant
 *	names, and every request's done and leading flags; while a request
 *	is in a batch only that batch's leader touches the rest of it, and
 *	its thread reads the result after seeing done under the mutex.
 *	Each request has its own condition variable: a batch wakes exactly
 *	its requests' threads, and one waiting thread to lead the next
 *	batch. Tenants are serialised by flock(2); between processes it is
 *	the only lock, within a process the queue already is.
 *--*/
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "tn-conf.h"
#include "tn-log.h"
#include "tn-mem.h"
#include "tn-outbox.h"
#include "tn-time.h"

/* Thread-local error text; a longer message is cut. */
#define TN_OUTBOX_ERROR_MAX 1024
/* Counter file: at most 20 digits and a newline. */
#define TN_OUTBOX_SEQ_TEXT_MAX 24
#define TN_OUTBOX_COUNT_TTL_MS 1000
#define TN_OUTBOX_RAND_A_MAX 0xfffu
#define TN_OUTBOX_RAND_A_SEED 0x7ffu
#define TN_OUTBOX_DEFAULT_MODE 0660
/* Most requests one batch commits: the events of one segment file. */
#define TN_OUTBOX_BATCH_MAX TN_OUTBOX_SEGMENT_EVENTS
/* Batches committed at the same time by one outbox object. */
#define TN_OUTBOX_BATCHES 2
/* Names of reusable files in tmp/ kept at a time, their longest name
 * ("free." and a number), and how often an empty pool is looked at. */
#define TN_OUTBOX_FREE_CACHE 64
#define TN_OUTBOX_FREE_NAME_SIZE 32
#define TN_OUTBOX_FREE_SCAN_MS 100
/* Retry of a tenant locked by another process: 1 ms doubling to 5. */
#define TN_OUTBOX_RETRY_MIN_MS 1
#define TN_OUTBOX_RETRY_MAX_MS 5

enum tn_outbox_subdir {
	TN_OUTBOX_TMP,
	TN_OUTBOX_NEW,
	TN_OUTBOX_SEQ,
	TN_OUTBOX_N_SUBDIRS
};

/* How long an append waits for another producer of the same tenant. */
#define TN_OUTBOX_DEFAULT_LOCK_TIMEOUT 5000

static const char *const tn_outbox_subdir_names[TN_OUTBOX_N_SUBDIRS] = {
	"tmp", "new", "seq"
};

/* Where a request is (see the DESCRIPTION). */
enum tn_outbox_req_state {
	TN_OUTBOX_REQ_QUEUED,		/* waiting for a batch, or in one */
	TN_OUTBOX_REQ_DEFERRED,		/* tenant busy: back to the queue */
	TN_OUTBOX_REQ_NUMBERED,		/* has its number: goes into the segment */
	TN_OUTBOX_REQ_PUBLISHED,	/* its segment is in new/ */
	TN_OUTBOX_REQ_FAILED,		/* error set; not in the segment */
};

/* One append, on its caller's stack. The envelope is head, the
 * sequence number, tail ("...\"sequence\":" and ",\"origin\":...}\n"). */
struct tn_outbox_req {
	struct tn_outbox_req *next;	/* queue link */
	uint64_t order;			/* arrival in the queue */
	const char *tenant;
	char id[TN_OUTBOX_ID_SIZE];
	char *text;			/* head and tail, one allocation */
	size_t head_len, tail_len;
	char digits[TN_OUTBOX_SEQ_TEXT_MAX];	/* the number, as written */
	size_t digits_len;
	uint64_t seq;
	tn_msec_t deadline, retry_at, pause;
	enum tn_outbox_req_state state;
	bool done;			/* under queue_lock, like leading */
	bool leading;			/* its thread is leading a batch */
	pthread_cond_t cond;		/* its thread waits here */
	bool input_fault;		/* failed on its input (too large): permanent */
	char error[TN_OUTBOX_ERROR_MAX];
};

/* The requests of one tenant in a batch, and its counter. */
struct tn_outbox_group {
	char tenant[TN_OUTBOX_TENANT_MAX + 1];	/* its requests may go first */
	struct tn_outbox_req **reqs;	/* in the batch's sorted array */
	size_t n_reqs;
	char *seq_path;
	int seq_fd;
	bool locked;
	uint64_t seq;			/* the counter before the batch */
	size_t seq_len;			/* the length of its file */
	uint64_t next;			/* the last number given so far */
};

/* Where a batch is. Two batches overlap: one may start while the
 * other publishes (steps 5-7), never while it fills (steps 1-4). */
enum tn_outbox_batch_stage {
	TN_OUTBOX_BATCH_FREE,
	TN_OUTBOX_BATCH_FILLING,
	TN_OUTBOX_BATCH_PUBLISHING,
};

/* A batch being committed by its leader. Requests sorted by tenant,
 * then arrival; one group per tenant. stage, n_groups and the groups'
 * tenant names change under queue_lock only (other leaders look). The
 * numbered requests are written, in that order, into one file: the
 * segment tmp/<id>.json, renamed to new/<id>.json (id: its first
 * event's). */
struct tn_outbox_batch {
	struct tn_outbox *ob;
	enum tn_outbox_batch_stage stage;
	size_t n_reqs, n_groups;
	size_t n_numbered;		/* requests in NUMBERED state */
	bool published;			/* the segment is in new/ (maybe undone since) */
	int tmp_fd, new_fd;		/* tmp/ and new/ */
	int seg_fd;			/* the segment in tmp/ */
	bool seg_reused;		/* a file of the consumer's, maybe longer */
	char seg_name[TN_OUTBOX_ID_SIZE + 5];	/* <id>.json */
	char *seg_tmp_path, *seg_new_path;
	struct tn_outbox_req *reqs[TN_OUTBOX_BATCH_MAX];
	struct tn_outbox_group groups[TN_OUTBOX_BATCH_MAX];
	struct iovec iov[3 * TN_OUTBOX_BATCH_MAX];
};

struct tn_outbox {
	char *dir;
	char *sub[TN_OUTBOX_N_SUBDIRS];
	char *origin;
	char *origin_error;		/* NULL when origin is valid */
	uint64_t max_events;
	uint64_t min_free_bytes;
	mode_t file_mode;
	tn_msec_t lock_timeout;
	enum tn_outbox_sync sync;

	pthread_mutex_t lock;
	/* under lock: the id generator */
	uint64_t id_ms;
	unsigned int id_counter;
	/* under lock: the count of new/ */
	uint64_t count;
	tn_msec_t count_at;
	bool counted, scanning;
	/* under lock: names of reusable files in tmp/, and when tmp/ was
	 * last read for them */
	char free_names[TN_OUTBOX_FREE_CACHE][TN_OUTBOX_FREE_NAME_SIZE];
	unsigned n_free;
	tn_msec_t free_scanned_at;
	bool free_scanning;

	pthread_mutex_t queue_lock;
	/* under queue_lock */
	struct tn_outbox_req *queue_head, **queue_tail;
	uint64_t queue_order;
	/* batches being committed, on disjoint tenants: one fills while
	 * the other publishes */
	struct tn_outbox_batch batches[TN_OUTBOX_BATCHES];
};

static __thread char tn_outbox_errbuf[TN_OUTBOX_ERROR_MAX];
/* Whether this thread's last failed append failed on its input. */
static __thread bool tn_outbox_input_fault_tl;

bool tn_outbox_failed_on_input(void)
{
	return tn_outbox_input_fault_tl;
}

/* --- errors ---------------------------------------------------------- */

static int __attribute__((format(printf, 2, 3)))
tn_outbox_fail(const char **error_r, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(tn_outbox_errbuf, sizeof(tn_outbox_errbuf), fmt, ap);
	va_end(ap);
	*error_r = tn_outbox_errbuf;
	return -1;
}

/* "outbox: op(path): strerror(errno)" */
static int tn_outbox_sysfail(const char **error_r, const char *op, const char *path)
{
	return tn_outbox_fail(error_r, "outbox: %s(%s): %m", op, path);
}

/* --- small file helpers -------------------------------------------------- */

static int tn_outbox_writev_all(int fd, struct iovec *iov, int iovcnt)
{
	ssize_t n;

	while (iovcnt > 0) {
		n = writev(fd, iov, iovcnt);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			if (n == 0)
				errno = EIO;
			return -1;
		}
		for (; iovcnt > 0 && (size_t)n >= iov->iov_len; iov++, iovcnt--)
			n -= (ssize_t)iov->iov_len;
		if (iovcnt > 0) {
			iov->iov_base = (char *)iov->iov_base + n;
			iov->iov_len -= (size_t)n;
		}
	}
	return 0;
}

static int tn_outbox_pwrite_all(int fd, const char *buf, size_t len)
{
	off_t off = 0;
	ssize_t n;

	while (len > 0) {
		n = pwrite(fd, buf, len, off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			if (n == 0)
				errno = EIO;
			return -1;
		}
		buf += n;
		off += n;
		len -= (size_t)n;
	}
	return 0;
}

static int tn_outbox_open_dir(const char *path, const char **error_r)
{
	int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

	if (fd < 0)
		return tn_outbox_sysfail(error_r, "open", path);
	return fd;
}

static int tn_outbox_fsync_dir(const char *path, const char **error_r)
{
	int fd = tn_outbox_open_dir(path, error_r);

	if (fd < 0)
		return -1;
	if (fsync(fd) < 0) {
		tn_outbox_sysfail(error_r, "fsync", path);
		close(fd);
		return -1;
	}
	close(fd);
	return 0;
}

static int tn_outbox_random(void *buf, size_t len, const char **error_r)
{
	ssize_t n;

	do {
		n = getrandom(buf, len, 0);
	} while (n < 0 && errno == EINTR);
	if (n != (ssize_t)len)
		return tn_outbox_fail(error_r, "outbox: getrandom: %s",
				      n < 0 ? strerror(errno) : "short read");
	return 0;
}

/* Create path (O_EXCL) with exactly ob->file_mode whatever the umask. */
static int tn_outbox_create_file(struct tn_outbox *ob, const char *path,
				 const char **error_r)
{
	int fd = open(path, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, ob->file_mode);

	if (fd < 0)
		return tn_outbox_sysfail(error_r, "open", path);
	if (fchmod(fd, ob->file_mode) < 0) {
		tn_outbox_sysfail(error_r, "fchmod", path);
		close(fd);
		unlink(path);
		return -1;
	}
	return fd;
}

/* --- input ------------------------------------------------------------- */

static bool tn_outbox_lower(char c) { return c >= 'a' && c <= 'z'; }
static bool tn_outbox_digit(char c) { return c >= '0' && c <= '9'; }

/* ^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$ */
static bool tn_outbox_type_valid(const char *type)
{
	bool segment_start = true;
	size_t dots = 0;

	if (strnlen(type, TN_OUTBOX_TYPE_MAX + 1) > TN_OUTBOX_TYPE_MAX)
		return false;
	for (const char *p = type; *p != '\0'; p++) {
		if (segment_start) {
			if (!tn_outbox_lower(*p))
				return false;
			segment_start = false;
		} else if (*p == '.') {
			segment_start = true;
			dots++;
		} else if (!tn_outbox_lower(*p) && !tn_outbox_digit(*p) && *p != '_') {
			return false;
		}
	}
	return !segment_start && dots > 0;
}

/* ^[a-z0-9][a-z0-9._-]{0,62}$ */
static bool tn_outbox_tenant_valid(const char *tenant)
{
	if (strnlen(tenant, TN_OUTBOX_TENANT_MAX + 1) > TN_OUTBOX_TENANT_MAX ||
	    (!tn_outbox_lower(*tenant) && !tn_outbox_digit(*tenant)))
		return false;
	for (const char *p = tenant + 1; *p != '\0'; p++) {
		if (!tn_outbox_lower(*p) && !tn_outbox_digit(*p) &&
		    *p != '.' && *p != '_' && *p != '-')
			return false;
	}
	return true;
}

static bool tn_outbox_alnum(char c)
{
	return tn_outbox_lower(c) || tn_outbox_digit(c) || (c >= 'A' && c <= 'Z');
}

/* ^[A-Za-z0-9][A-Za-z0-9.-]{0,62}$ */
static bool tn_outbox_origin_valid(const char *origin)
{
	if (strnlen(origin, TN_OUTBOX_ORIGIN_MAX + 1) > TN_OUTBOX_ORIGIN_MAX ||
	    !tn_outbox_alnum(*origin))
		return false;
	for (const char *p = origin + 1; *p != '\0'; p++) {
		if (!tn_outbox_alnum(*p) && *p != '.' && *p != '-')
			return false;
	}
	return true;
}

int tn_outbox_validate(const char *type, const char *tenant, json_t *data,
		       const char **error_r)
{
	char safe[TN_LOG_VALUE_MAX];

	if (type == NULL || !tn_outbox_type_valid(type)) {
		tn_log_sanitize(safe, sizeof(safe), type != NULL ? type : "(null)",
				type != NULL ? strlen(type) : 6);
		return tn_outbox_fail(error_r, "outbox: invalid event type '%s' "
				      "(want lowercase dotted words like 'mailbox.created', "
				      "at most %d bytes)", safe, TN_OUTBOX_TYPE_MAX);
	}
	if (tenant == NULL || !tn_outbox_tenant_valid(tenant)) {
		tn_log_sanitize(safe, sizeof(safe), tenant != NULL ? tenant : "(null)",
				tenant != NULL ? strlen(tenant) : 6);
		return tn_outbox_fail(error_r, "outbox: invalid tenant '%s' "
				      "(want [a-z0-9][a-z0-9._-]*, lowercase, at most %d bytes)",
				      safe, TN_OUTBOX_TENANT_MAX);
	}
	if (!json_is_object(data))
		return tn_outbox_fail(error_r, "outbox: event data is not a JSON object");
	return 0;
}

/* --- limits -------------------------------------------------------------- */

static int tn_outbox_check_space(struct tn_outbox *ob, const char **error_r)
{
	struct statvfs vfs;

	if (ob->min_free_bytes == 0)
		return 0;
	if (statvfs(ob->dir, &vfs) < 0)
		return tn_outbox_sysfail(error_r, "statvfs", ob->dir);
	if ((uint64_t)vfs.f_bavail * vfs.f_frsize < ob->min_free_bytes)
		return tn_outbox_fail(error_r, "outbox: less than %" PRIu64
				      " bytes free on %s", ob->min_free_bytes, ob->dir);
	return 0;
}

static bool tn_outbox_is_event_name(const char *name)
{
	size_t len = strlen(name);

	return len > 5 && strcmp(name + len - 5, ".json") == 0;
}

static int tn_outbox_scan(const char *path, uint64_t *count_r, const char **error_r)
{
	DIR *dir = opendir(path);
	struct dirent *de;
	uint64_t count = 0;

	if (dir == NULL)
		return tn_outbox_sysfail(error_r, "opendir", path);
	for (;;) {
		errno = 0;
		if ((de = readdir(dir)) == NULL)
			break;
		if (tn_outbox_is_event_name(de->d_name))
			count++;
	}
	if (errno != 0) {
		tn_outbox_sysfail(error_r, "readdir", path);
		closedir(dir);
		return -1;
	}
	closedir(dir);
	*count_r = count;
	return 0;
}

/* The count of new/, rescanned when older than a second. While one
 * thread scans, the others use the previous count. */
static int tn_outbox_count(struct tn_outbox *ob, uint64_t *count_r, const char **error_r)
{
	tn_msec_t now = tn_time_now_ms();
	uint64_t count = 0;
	int ret;

	pthread_mutex_lock(&ob->lock);
	if ((ob->counted && now - ob->count_at < TN_OUTBOX_COUNT_TTL_MS) ||
	    (ob->counted && ob->scanning)) {
		*count_r = ob->count;
		pthread_mutex_unlock(&ob->lock);
		return 0;
	}
	ob->scanning = true;
	pthread_mutex_unlock(&ob->lock);

	ret = tn_outbox_scan(ob->sub[TN_OUTBOX_NEW], &count, error_r);

	pthread_mutex_lock(&ob->lock);
	ob->scanning = false;
	if (ret == 0) {
		ob->count = count;
		ob->count_at = now;
		ob->counted = true;
	}
	pthread_mutex_unlock(&ob->lock);
	if (ret == 0)
		*count_r = count;
	return ret;
}

static int tn_outbox_check_count(struct tn_outbox *ob, const char **error_r)
{
	uint64_t count = 0;

	if (ob->max_events == 0)
		return 0;
	if (tn_outbox_count(ob, &count, error_r) < 0)
		return -1;
	if (count >= ob->max_events)
		return tn_outbox_fail(error_r, "outbox full (%" PRIu64 " events, limit %"
				      PRIu64 ")", count, ob->max_events);
	return 0;
}

static void tn_outbox_counted(struct tn_outbox *ob, uint64_t n)
{
	if (ob->max_events == 0 || n == 0)
		return;
	pthread_mutex_lock(&ob->lock);
	ob->count += n;
	pthread_mutex_unlock(&ob->lock);
}

/* --- ids and time ---------------------------------------------------------- */

static int64_t tn_outbox_wall_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Next (millisecond, rand_a) of this outbox; seed: 11 random bits. */
static void tn_outbox_id_step(struct tn_outbox *ob, uint64_t now_ms, unsigned int seed,
			      uint64_t *ms_r, unsigned int *rand_a_r)
{
	pthread_mutex_lock(&ob->lock);
	if (now_ms > ob->id_ms) {
		ob->id_ms = now_ms;
		ob->id_counter = seed & TN_OUTBOX_RAND_A_SEED;
	} else if (ob->id_counter < TN_OUTBOX_RAND_A_MAX) {
		ob->id_counter++;
	} else {
		ob->id_ms++;
		ob->id_counter = seed & TN_OUTBOX_RAND_A_SEED;
	}
	*ms_r = ob->id_ms;
	*rand_a_r = ob->id_counter;
	pthread_mutex_unlock(&ob->lock);
}

static void tn_outbox_id_format(uint64_t ms, unsigned int rand_a,
				const unsigned char rand_b[8], char id_r[TN_OUTBOX_ID_SIZE])
{
	unsigned char u[16];
	size_t pos = 0;

	for (int i = 0; i < 6; i++)
		u[i] = (unsigned char)(ms >> (40 - 8 * i));
	u[6] = (unsigned char)(0x70 | ((rand_a >> 8) & 0x0f));
	u[7] = (unsigned char)(rand_a & 0xff);
	u[8] = (unsigned char)(0x80 | (rand_b[0] & 0x3f));
	memcpy(u + 9, rand_b + 1, 7);
	for (int i = 0; i < 16; i++) {
		if (i == 4 || i == 6 || i == 8 || i == 10)
			id_r[pos++] = '-';
		id_r[pos++] = "0123456789abcdef"[u[i] >> 4];
		id_r[pos++] = "0123456789abcdef"[u[i] & 0x0f];
	}
	id_r[pos] = '\0';
}

static void tn_outbox_rfc3339(int64_t ms, char buf[40])
{
	time_t sec = (time_t)(ms / 1000);
	struct tm tm;
	size_t n;

	gmtime_r(&sec, &tm);
	n = strftime(buf, 40, "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(buf + n, 40 - n, ".%03dZ", (int)(ms % 1000));
}

/* The id and occurred_at of an event, now. */
static int tn_outbox_stamp(struct tn_outbox *ob, char id_r[TN_OUTBOX_ID_SIZE],
			   char occurred_at_r[40], const char **error_r)
{
	unsigned char rnd[10];
	int64_t now = tn_outbox_wall_ms();
	uint64_t ms;
	unsigned int rand_a;

	if (tn_outbox_random(rnd, sizeof(rnd), error_r) < 0)
		return -1;
	tn_outbox_id_step(ob, now > 0 ? (uint64_t)now : 0,
			  (unsigned int)rnd[0] << 8 | rnd[1], &ms, &rand_a);
	tn_outbox_id_format(ms, rand_a, rnd + 2, id_r);
	tn_outbox_rfc3339(now, occurred_at_r);
	return 0;
}

/* --- the counter ------------------------------------------------------------ */

/* Make seq/<tenant> appear at once with its final mode, and durably. */
static int tn_outbox_seq_create(struct tn_outbox *ob, struct tn_outbox_group *g,
				const char **error_r)
{
	unsigned char rnd[8];
	char *tmp;
	int fd, ret = -1;

	if (tn_outbox_random(rnd, sizeof(rnd), error_r) < 0)
		return -1;
	tmp = tn_mem_printf("%s/seq.%s.%02x%02x%02x%02x%02x%02x%02x%02x",
			    ob->sub[TN_OUTBOX_TMP], g->tenant, rnd[0], rnd[1],
			    rnd[2], rnd[3], rnd[4], rnd[5], rnd[6], rnd[7]);
	if ((fd = tn_outbox_create_file(ob, tmp, error_r)) < 0) {
		tn_mem_free(&tmp);
		return -1;
	}
	if (fsync(fd) < 0)
		tn_outbox_sysfail(error_r, "fsync", tmp);
	else if (link(tmp, g->seq_path) < 0 && errno != EEXIST)
		tn_outbox_sysfail(error_r, "link", g->seq_path);
	else
		ret = tn_outbox_fsync_dir(ob->sub[TN_OUTBOX_SEQ], error_r);
	close(fd);
	unlink(tmp);
	tn_mem_free(&tmp);
	return ret;
}

static int tn_outbox_seq_open(struct tn_outbox *ob, struct tn_outbox_group *g,
			      const char **error_r)
{
	int flags = O_RDWR | O_CLOEXEC | O_NOFOLLOW;

	g->seq_path = tn_mem_printf("%s/%s", ob->sub[TN_OUTBOX_SEQ], g->tenant);
	g->seq_fd = open(g->seq_path, flags);
	if (g->seq_fd < 0 && errno == ENOENT) {
		if (tn_outbox_seq_create(ob, g, error_r) < 0)
			return -1;
		g->seq_fd = open(g->seq_path, flags);
	}
	if (g->seq_fd < 0)
		return tn_outbox_sysfail(error_r, "open", g->seq_path);
	return 0;
}

/* 1: locked; 0: another producer holds it; -1: error. flock(2) has no
 * timeout, so waiting is the queue's job (a busy tenant's requests are
 * retried by a later batch until their deadline). */
static int tn_outbox_seq_trylock(struct tn_outbox_group *g, const char **error_r)
{
	while (flock(g->seq_fd, LOCK_EX | LOCK_NB) < 0) {
		if (errno == EWOULDBLOCK)
			return 0;
		if (errno != EINTR)
			return tn_outbox_sysfail(error_r, "flock", g->seq_path);
	}
	g->locked = true;
	return 1;
}

/* Digits and newlines only (a rollback cut short by a crash may leave
 * an extra newline); empty is 0. */
static int tn_outbox_seq_parse(const char *buf, size_t len, uint64_t *seq_r)
{
	uint64_t n = 0;
	size_t i = 0;

	for (; i < len && tn_outbox_digit(buf[i]); i++) {
		if (n > (UINT64_MAX - 9) / 10)
			return -1;
		n = n * 10 + (uint64_t)(buf[i] - '0');
	}
	if (i == 0 && len > 0)
		return -1;
	for (; i < len; i++) {
		if (buf[i] != '\n')
			return -1;
	}
	*seq_r = n;
	return 0;
}

static int tn_outbox_seq_read(struct tn_outbox_group *g, const char **error_r)
{
	char buf[TN_OUTBOX_SEQ_TEXT_MAX];
	ssize_t n;

	do {
		n = pread(g->seq_fd, buf, sizeof(buf), 0);
	} while (n < 0 && errno == EINTR);
	if (n < 0)
		return tn_outbox_sysfail(error_r, "read", g->seq_path);
	if ((size_t)n == sizeof(buf) || tn_outbox_seq_parse(buf, (size_t)n, &g->seq) < 0)
		return tn_outbox_fail(error_r, "outbox: %s: not a sequence number "
				      "(an admin must repair it)", g->seq_path);
	g->next = g->seq;
	g->seq_len = (size_t)n;
	return 0;
}

/* Counter := seq ("" for 0), synced when sync; the file is cut only
 * when the text got shorter (numbers grow: only after a rollback).
 * Sets errno and returns -1 on failure. */
static int tn_outbox_seq_write(struct tn_outbox_group *g, uint64_t seq, bool sync)
{
	char buf[TN_OUTBOX_SEQ_TEXT_MAX];
	size_t len = 0;

	if (seq > 0)
		len = (size_t)snprintf(buf, sizeof(buf), "%" PRIu64 "\n", seq);
	if (tn_outbox_pwrite_all(g->seq_fd, buf, len) < 0 ||
	    (len < g->seq_len && ftruncate(g->seq_fd, (off_t)len) < 0) ||
	    (sync && fdatasync(g->seq_fd) < 0)) {
		g->seq_len = SIZE_MAX;	/* unknown: cut next time */
		return -1;
	}
	g->seq_len = len;
	return 0;
}

/* Put the counter back to seq, durably. The requests' error stays the
 * one they see; a failure here means the next event leaves a gap. */
static void tn_outbox_seq_rollback(struct tn_outbox_group *g, uint64_t seq)
{
	struct tn_log_ctx ctx = { NULL, NULL, g->tenant };

	if (tn_outbox_seq_write(g, seq, true) < 0)
		tn_log(TN_LOG_ERROR, &ctx, "outbox: cannot roll %s back to %" PRIu64
		       ": %m (the next event leaves a gap)", g->seq_path, seq);
	g->next = seq;
}

/* --- one request --------------------------------------------------------------- */

/* head: {"id":..,"type":..,"occurred_at":..,"tenant":..,"sequence":
 * tail: ,"origin":..,"data":DATA}\n
 * Every string but data is of a character set JSON needs no escape
 * for, so this is what jansson would write for the whole object. */
static int tn_outbox_req_encode(struct tn_outbox *ob, struct tn_outbox_req *req,
				const char *type, json_t *data, const char **error_r)
{
	const size_t flags = JSON_COMPACT | JSON_PRESERVE_ORDER;
	char occurred_at[40], head[512], tail[128];
	size_t size;
	int head_len, tail_len;

	if (tn_outbox_stamp(ob, req->id, occurred_at, error_r) < 0)
		return -1;
	if ((size = json_dumpb(data, NULL, 0, flags)) == 0)
		return tn_outbox_fail(error_r, "outbox: event data cannot be encoded as JSON");
	head_len = snprintf(head, sizeof(head), "{\"id\":\"%s\",\"type\":\"%s\","
			    "\"occurred_at\":\"%s\",\"tenant\":\"%s\",\"sequence\":",
			    req->id, type, occurred_at, req->tenant);
	tail_len = snprintf(tail, sizeof(tail), ",\"origin\":\"%s\",\"data\":", ob->origin);
	/* the smallest number has one digit; the leader checks the real size */
	if ((size_t)head_len + 1 + (size_t)tail_len + size + 2 > TN_OUTBOX_EVENT_MAX)
		return tn_outbox_fail(error_r, "outbox: event too large (%zu bytes, limit %d)",
				      (size_t)head_len + 1 + (size_t)tail_len + size + 2,
				      TN_OUTBOX_EVENT_MAX);
	req->head_len = (size_t)head_len;
	req->tail_len = (size_t)tail_len + size + 2;
	req->text = tn_mem_alloc(req->head_len + req->tail_len);
	memcpy(req->text, head, req->head_len);
	memcpy(req->text + req->head_len, tail, (size_t)tail_len);
	json_dumpb(data, req->text + head_len + tail_len, size, flags);
	memcpy(req->text + req->head_len + req->tail_len - 2, "}\n", 2);
	return 0;
}

/* Everything an append can do before it needs its tenant's number:
 * checks, limits and the envelope. Nothing is written yet. */
static int tn_outbox_req_prepare(struct tn_outbox *ob, struct tn_outbox_req *req,
				 const char *type, json_t *data, const char **error_r)
{
	if (ob->origin_error != NULL)
		return tn_outbox_fail(error_r, "%s", ob->origin_error);
	if (tn_outbox_validate(type, req->tenant, data, error_r) < 0) {
		req->input_fault = true;
		return -1;
	}
	if (tn_outbox_check_space(ob, error_r) < 0 ||
	    tn_outbox_check_count(ob, error_r) < 0)
		return -1;
	if (tn_outbox_req_encode(ob, req, type, data, error_r) < 0) {
		req->input_fault = true;
		return -1;
	}
	return 0;
}

static void tn_outbox_req_release(struct tn_outbox_req *req)
{
	tn_mem_free(&req->text);
}

/* The request (not published) fails with error; it is not, or no
 * longer, part of a segment. */
static void tn_outbox_req_fail(struct tn_outbox_req *req, const char *error)
{
	snprintf(req->error, sizeof(req->error), "%s", error);
	req->state = TN_OUTBOX_REQ_FAILED;
}

/* The event gets its number, unless it is too large with it: then it
 * fails alone, before anything is written. */
static int tn_outbox_req_number(struct tn_outbox_req *req, uint64_t seq,
				const char **error_r)
{
	int n = snprintf(req->digits, sizeof(req->digits), "%" PRIu64, seq);
	size_t size = req->head_len + (size_t)n + req->tail_len;

	if (size > TN_OUTBOX_EVENT_MAX) {
		req->input_fault = true;
		return tn_outbox_fail(error_r, "outbox: event too large (%zu bytes, "
				      "limit %d)", size, TN_OUTBOX_EVENT_MAX);
	}
	req->digits_len = (size_t)n;
	req->seq = seq;
	req->state = TN_OUTBOX_REQ_NUMBERED;
	return 0;
}

/* --- one tenant of a batch ------------------------------------------------- */

/* Every request of g not yet published fails with error; the counter
 * goes back to where it was if it moved. */
static void tn_outbox_group_fail(struct tn_outbox_batch *b, struct tn_outbox_group *g,
				 const char *error)
{
	for (size_t i = 0; i < g->n_reqs; i++) {
		struct tn_outbox_req *req = g->reqs[i];

		if (req->state == TN_OUTBOX_REQ_NUMBERED)
			b->n_numbered--;
		if (req->state == TN_OUTBOX_REQ_QUEUED || req->state == TN_OUTBOX_REQ_NUMBERED)
			tn_outbox_req_fail(req, error);
	}
	if (g->locked && g->next != g->seq)
		tn_outbox_seq_rollback(g, g->seq);
}

/* A tenant another process holds: its requests wait for a later batch,
 * or fail at their deadline. */
static void tn_outbox_group_defer(struct tn_outbox *ob, struct tn_outbox_group *g)
{
	tn_msec_t now = tn_time_now_ms();
	const char *error;

	for (size_t i = 0; i < g->n_reqs; i++) {
		struct tn_outbox_req *req = g->reqs[i];

		if (now >= req->deadline) {
			tn_outbox_fail(&error, "outbox: %s: still locked by another "
				       "producer after %lld ms", g->seq_path,
				       (long long)ob->lock_timeout);
			tn_outbox_req_fail(req, error);
			continue;
		}
		req->state = TN_OUTBOX_REQ_DEFERRED;
		req->retry_at = now + req->pause;
		req->pause = req->pause * 2 < TN_OUTBOX_RETRY_MAX_MS ?
			req->pause * 2 : TN_OUTBOX_RETRY_MAX_MS;
	}
}

/* Step 1 for one tenant: open, try the lock, read the counter. True
 * when the tenant's events can be numbered. */
static bool tn_outbox_group_lock(struct tn_outbox_batch *b, struct tn_outbox_group *g)
{
	const char *error;
	int ret;

	if (tn_outbox_seq_open(b->ob, g, &error) < 0 ||
	    (ret = tn_outbox_seq_trylock(g, &error)) < 0 ||
	    (ret == 1 && tn_outbox_seq_read(g, &error) < 0)) {
		tn_outbox_group_fail(b, g, error);
		return false;
	}
	if (ret == 0)
		tn_outbox_group_defer(b->ob, g);
	return ret == 1;
}

/* Step 2 for one locked tenant: numbers, and the counter written (not
 * synced yet). */
static void tn_outbox_group_number(struct tn_outbox_batch *b, struct tn_outbox_group *g)
{
	const char *error;

	if (g->next >= (uint64_t)INT64_MAX - TN_OUTBOX_BATCH_MAX) {
		tn_outbox_fail(&error, "outbox: %s: sequence exhausted", g->seq_path);
		tn_outbox_group_fail(b, g, error);
		return;
	}
	for (size_t i = 0; i < g->n_reqs; i++) {
		if (tn_outbox_req_number(g->reqs[i], g->next + 1, &error) < 0) {
			tn_outbox_req_fail(g->reqs[i], error);
			continue;
		}
		g->next++;
		b->n_numbered++;
	}
	if (g->next == g->seq)
		return;
	if (tn_outbox_seq_write(g, g->next, false) < 0) {
		tn_outbox_sysfail(&error, "write", g->seq_path);
		tn_outbox_group_fail(b, g, error);
	}
}

static bool tn_outbox_group_moved(const struct tn_outbox_group *g)
{
	return g->locked && g->next != g->seq;
}

static void tn_outbox_group_unlock(struct tn_outbox_group *g)
{
	if (g->seq_fd >= 0) {
		if (g->locked)
			flock(g->seq_fd, LOCK_UN);
		close(g->seq_fd);
	}
	tn_mem_free(&g->seq_path);
}

/* --- a batch -------------------------------------------------------------- */

/* Every tenant of the batch fails with error (counters rolled back);
 * the segment, if there is one in tmp/, goes. */
static void tn_outbox_batch_fail(struct tn_outbox_batch *b, const char *error)
{
	for (size_t i = 0; i < b->n_groups; i++)
		tn_outbox_group_fail(b, &b->groups[i], error);
	if (b->seg_fd >= 0) {
		close(b->seg_fd);
		b->seg_fd = -1;
		unlink(b->seg_tmp_path);
	}
}

/* Step 3 in fsync mode: the counters on disk, each tenant failing
 * alone, before its events are written. */
static void tn_outbox_batch_sync_counters(struct tn_outbox_batch *b)
{
	const char *error;

	for (size_t i = 0; i < b->n_groups; i++) {
		if (tn_outbox_group_moved(&b->groups[i]))
			sync_file_range(b->groups[i].seq_fd, 0, 0, SYNC_FILE_RANGE_WRITE);
	}
	for (size_t i = 0; i < b->n_groups; i++) {
		struct tn_outbox_group *g = &b->groups[i];

		if (tn_outbox_group_moved(g) && fdatasync(g->seq_fd) < 0) {
			tn_outbox_sysfail(&error, "fsync", g->seq_path);
			tn_outbox_group_fail(b, g, error);
		}
	}
}

/* Fill the pool of reusable names from tmp/ (one thread at a time, at
 * most every TN_OUTBOX_FREE_SCAN_MS). */
static void tn_outbox_free_scan(struct tn_outbox *ob)
{
	char names[TN_OUTBOX_FREE_CACHE][TN_OUTBOX_FREE_NAME_SIZE];
	size_t prefix = strlen(TN_OUTBOX_FREE_PREFIX);
	DIR *dir = opendir(ob->sub[TN_OUTBOX_TMP]);
	struct dirent *de;
	unsigned n = 0;

	while (dir != NULL && n < TN_OUTBOX_FREE_CACHE && (de = readdir(dir)) != NULL) {
		if (strncmp(de->d_name, TN_OUTBOX_FREE_PREFIX, prefix) == 0 &&
		    strlen(de->d_name) < TN_OUTBOX_FREE_NAME_SIZE)
			memcpy(names[n++], de->d_name, strlen(de->d_name) + 1);
	}
	if (dir != NULL)
		closedir(dir);
	pthread_mutex_lock(&ob->lock);
	for (unsigned i = 0; i < n && ob->n_free < TN_OUTBOX_FREE_CACHE; i++)
		memcpy(ob->free_names[ob->n_free++], names[i], TN_OUTBOX_FREE_NAME_SIZE);
	ob->free_scanning = false;
	pthread_mutex_unlock(&ob->lock);
}

/* The name of a reusable file in tmp/ (someone else may take it first),
 * or false. */
static bool tn_outbox_free_take(struct tn_outbox *ob, char name_r[TN_OUTBOX_FREE_NAME_SIZE])
{
	tn_msec_t now = tn_time_now_ms();
	bool scan = false;

	pthread_mutex_lock(&ob->lock);
	if (ob->n_free == 0 && !ob->free_scanning &&
	    now - ob->free_scanned_at >= TN_OUTBOX_FREE_SCAN_MS) {
		ob->free_scanning = scan = true;
		ob->free_scanned_at = now;
	}
	pthread_mutex_unlock(&ob->lock);
	if (scan)
		tn_outbox_free_scan(ob);
	pthread_mutex_lock(&ob->lock);
	scan = ob->n_free > 0;
	if (scan)
		memcpy(name_r, ob->free_names[--ob->n_free], TN_OUTBOX_FREE_NAME_SIZE);
	pthread_mutex_unlock(&ob->lock);
	return scan;
}

/* A file for the segment: a reusable one of tmp/ renamed to its name
 * (saves allocating an inode, and the consumer freeing one), or a new
 * one. A reused file must be a regular file with one link, else it is
 * dropped. */
static int tn_outbox_segment_open(struct tn_outbox_batch *b, const char **error_r)
{
	char name[TN_OUTBOX_FREE_NAME_SIZE];
	struct stat st;
	int fd;

	while (tn_outbox_free_take(b->ob, name)) {
		if (renameat(b->tmp_fd, name, b->tmp_fd, b->seg_name) < 0)
			continue;	/* another producer took it */
		fd = openat(b->tmp_fd, b->seg_name,
			    O_WRONLY | O_NONBLOCK | O_NOFOLLOW | O_CLOEXEC);
		if (fd >= 0 && fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_nlink == 1) {
			b->seg_reused = true;
			return fd;
		}
		if (fd >= 0)
			close(fd);
		unlinkat(b->tmp_fd, b->seg_name, 0);
	}
	return tn_outbox_create_file(b->ob, b->seg_tmp_path, error_r);
}

/* Step 4: the numbered events, tenant by tenant in sequence order, one
 * line each, into one file in tmp/ named after the first of them (one
 * write; a reused file is cut to that length). A failure fails the
 * batch. */
static void tn_outbox_batch_write(struct tn_outbox_batch *b)
{
	struct tn_outbox_req *first = NULL;
	const char *error;
	size_t size = 0;
	int n = 0;

	for (size_t i = 0; i < b->n_reqs; i++) {
		struct tn_outbox_req *req = b->reqs[i];

		if (req->state != TN_OUTBOX_REQ_NUMBERED)
			continue;
		if (first == NULL)
			first = req;
		b->iov[n++] = (struct iovec){ req->text, req->head_len };
		b->iov[n++] = (struct iovec){ req->digits, req->digits_len };
		b->iov[n++] = (struct iovec){ req->text + req->head_len, req->tail_len };
		size += req->head_len + req->digits_len + req->tail_len;
	}
	snprintf(b->seg_name, sizeof(b->seg_name), "%s.json", first->id);
	b->seg_tmp_path = tn_mem_printf("%s/%s", b->ob->sub[TN_OUTBOX_TMP], b->seg_name);
	b->seg_new_path = tn_mem_printf("%s/%s", b->ob->sub[TN_OUTBOX_NEW], b->seg_name);
	if ((b->seg_fd = tn_outbox_segment_open(b, &error)) < 0) {
		tn_outbox_batch_fail(b, error);
		return;
	}
	if (tn_outbox_writev_all(b->seg_fd, b->iov, n) < 0 ||
	    (b->seg_reused && ftruncate(b->seg_fd, (off_t)size) < 0)) {
		tn_outbox_sysfail(&error, "write", b->seg_tmp_path);
		tn_outbox_batch_fail(b, error);
	}
}

/* Steps 1 to 4. */
static void tn_outbox_batch_begin(struct tn_outbox_batch *b)
{
	const char *error;

	if ((b->tmp_fd = tn_outbox_open_dir(b->ob->sub[TN_OUTBOX_TMP], &error)) < 0 ||
	    (b->new_fd = tn_outbox_open_dir(b->ob->sub[TN_OUTBOX_NEW], &error)) < 0) {
		for (size_t i = 0; i < b->n_reqs; i++)
			tn_outbox_req_fail(b->reqs[i], error);
		return;
	}
	for (size_t i = 0; i < b->n_groups; i++) {
		if (tn_outbox_group_lock(b, &b->groups[i]))
			tn_outbox_group_number(b, &b->groups[i]);
	}
	if (b->n_numbered > 0 && b->ob->sync == TN_OUTBOX_SYNC_FSYNC)
		tn_outbox_batch_sync_counters(b);
	if (b->n_numbered > 0)
		tn_outbox_batch_write(b);
}

/* Step 5, the barrier: one syncfs(2) for the segment and the counters
 * (since Linux 5.8 it reports the file system's write-back errors since
 * new_fd was opened, i.e. during this batch), or one fdatasync of the
 * segment. A failure fails the batch. */
static void tn_outbox_batch_sync(struct tn_outbox_batch *b)
{
	const char *error;

	if (b->ob->sync == TN_OUTBOX_SYNC_SYNCFS) {
		if (syncfs(b->new_fd) == 0)
			return;
		tn_outbox_sysfail(&error, "syncfs", b->ob->sub[TN_OUTBOX_NEW]);
	} else {
		if (fdatasync(b->seg_fd) == 0)
			return;
		tn_outbox_sysfail(&error, "fsync", b->seg_tmp_path);
	}
	tn_outbox_batch_fail(b, error);
}

/* Step 6 failed: take the segment back out of new/. If the consumer
 * has already claimed it, its events keep their numbers (the counters
 * stay), so that no number is used twice. */
static void tn_outbox_batch_unpublish(struct tn_outbox_batch *b, const char *error)
{
	bool claimed = unlink(b->seg_new_path) < 0;

	for (size_t i = 0; i < b->n_groups; i++) {
		struct tn_outbox_group *g = &b->groups[i];
		struct tn_log_ctx ctx = { NULL, NULL, g->tenant };
		bool any = false;

		for (size_t j = 0; j < g->n_reqs; j++) {
			struct tn_outbox_req *req = g->reqs[j];

			if (req->state != TN_OUTBOX_REQ_PUBLISHED)
				continue;
			any = true;
			if (claimed)
				tn_log(TN_LOG_ERROR, &ctx, "outbox: event %s (sequence %"
				       PRIu64 ") was claimed although its append fails: %s",
				       req->id, req->seq, error);
			tn_outbox_req_fail(req, error);
		}
		if (any && !claimed)
			tn_outbox_seq_rollback(g, g->seq);
	}
}

/* Steps 6 and 7: rename the segment into new/, fsync new/. */
static void tn_outbox_batch_publish(struct tn_outbox_batch *b)
{
	const char *error;

	if (renameat(b->tmp_fd, b->seg_name, b->new_fd, b->seg_name) < 0) {
		tn_outbox_sysfail(&error, "rename", b->seg_new_path);
		tn_outbox_batch_fail(b, error);
		return;
	}
	b->published = true;
	for (size_t i = 0; i < b->n_reqs; i++) {
		if (b->reqs[i]->state == TN_OUTBOX_REQ_NUMBERED)
			b->reqs[i]->state = TN_OUTBOX_REQ_PUBLISHED;
	}
	if (fsync(b->new_fd) == 0)
		return;
	tn_outbox_sysfail(&error, "fsync", b->ob->sub[TN_OUTBOX_NEW]);
	tn_outbox_batch_unpublish(b, error);
}

/* Step 8. */
static void tn_outbox_batch_end(struct tn_outbox_batch *b)
{
	bool any = false;

	for (size_t i = 0; i < b->n_groups; i++)
		tn_outbox_group_unlock(&b->groups[i]);
	for (size_t i = 0; i < b->n_reqs; i++)
		any |= b->reqs[i]->state == TN_OUTBOX_REQ_PUBLISHED;
	if (b->seg_fd >= 0)
		close(b->seg_fd);
	if (b->tmp_fd >= 0)
		close(b->tmp_fd);
	if (b->new_fd >= 0)
		close(b->new_fd);
	tn_mem_free(&b->seg_tmp_path);
	tn_mem_free(&b->seg_new_path);
	/* max_events counts the files in new/: one more segment */
	tn_outbox_counted(b->ob, any ? 1 : 0);
}


/* --- the queue -------------------------------------------------------------- */

static int tn_outbox_req_cmp(const void *a, const void *b)
{
	const struct tn_outbox_req *x = *(struct tn_outbox_req *const *)a;
	const struct tn_outbox_req *y = *(struct tn_outbox_req *const *)b;
	int c = strcmp(x->tenant, y->tenant);

	if (c != 0)
		return c;
	return x->order < y->order ? -1 : x->order > y->order;
}

static int tn_outbox_group_cmp(const void *key, const void *elem)
{
	return strcmp(key, ((const struct tn_outbox_group *)elem)->tenant);
}

/* Under queue_lock: whether a batch being committed has tenant. */
static bool tn_outbox_tenant_busy(const struct tn_outbox *ob, const char *tenant)
{
	for (int i = 0; i < TN_OUTBOX_BATCHES; i++) {
		const struct tn_outbox_batch *b = &ob->batches[i];

		if (b->stage != TN_OUTBOX_BATCH_FREE &&
		    bsearch(tenant, b->groups, b->n_groups, sizeof(b->groups[0]),
			    tn_outbox_group_cmp) != NULL)
			return true;
	}
	return false;
}

/* Under queue_lock. */
static void tn_outbox_queue_push(struct tn_outbox *ob, struct tn_outbox_req *req)
{
	req->next = NULL;
	*ob->queue_tail = req;
	ob->queue_tail = &req->next;
}

/* Under queue_lock: a batch that may start now (none is filling), or
 * NULL. */
static struct tn_outbox_batch *tn_outbox_free_batch(struct tn_outbox *ob)
{
	struct tn_outbox_batch *free_batch = NULL;

	for (int i = 0; i < TN_OUTBOX_BATCHES; i++) {
		if (ob->batches[i].stage == TN_OUTBOX_BATCH_FILLING)
			return NULL;
		if (ob->batches[i].stage == TN_OUTBOX_BATCH_FREE)
			free_batch = &ob->batches[i];
	}
	return free_batch;
}

/* Under queue_lock: the first queued request that is due and whose
 * tenant is in no batch, or NULL and *wake_r the first retry time of a
 * deferred one that could go then (0: none). */
static struct tn_outbox_req *tn_outbox_queue_due(struct tn_outbox *ob, tn_msec_t *wake_r)
{
	tn_msec_t now = tn_time_now_ms();

	*wake_r = 0;
	for (struct tn_outbox_req *req = ob->queue_head; req != NULL; req = req->next) {
		if (tn_outbox_tenant_busy(ob, req->tenant))
			continue;
		if (req->retry_at <= now)
			return req;
		if (*wake_r == 0 || req->retry_at < *wake_r)
			*wake_r = req->retry_at;
	}
	return NULL;
}

/* Under queue_lock: if a batch is free and a request can go, wake one
 * waiting thread to lead (it takes every request that can go). */
static void tn_outbox_wake_leader(struct tn_outbox *ob)
{
	tn_msec_t wake;

	if (tn_outbox_free_batch(ob) == NULL || tn_outbox_queue_due(ob, &wake) == NULL)
		return;
	for (struct tn_outbox_req *req = ob->queue_head; req != NULL; req = req->next) {
		if (!req->leading) {
			pthread_cond_signal(&req->cond);
			return;
		}
	}
}

/* Sort by tenant, then arrival; one group per tenant. */
static void tn_outbox_batch_group(struct tn_outbox_batch *b)
{
	struct tn_outbox_group *g = NULL;

	qsort(b->reqs, b->n_reqs, sizeof(b->reqs[0]), tn_outbox_req_cmp);
	for (size_t i = 0; i < b->n_reqs; i++) {
		if (g == NULL || strcmp(g->tenant, b->reqs[i]->tenant) != 0) {
			g = &b->groups[b->n_groups++];
			memset(g, 0, sizeof(*g));
			memcpy(g->tenant, b->reqs[i]->tenant, strlen(b->reqs[i]->tenant) + 1);
			g->reqs = &b->reqs[i];
			g->seq_fd = -1;
		}
		g->n_reqs++;
	}
}

/* Under queue_lock: fill b with up to TN_OUTBOX_BATCH_MAX requests
 * whose tenants no other batch has, in queue order, and group them. */
static void tn_outbox_queue_take(struct tn_outbox *ob, struct tn_outbox_batch *b)
{
	struct tn_outbox_req **pp = &ob->queue_head, *req;

	memset(b, 0, offsetof(struct tn_outbox_batch, reqs));
	b->ob = ob;
	b->tmp_fd = b->new_fd = b->seg_fd = -1;
	while ((req = *pp) != NULL && b->n_reqs < TN_OUTBOX_BATCH_MAX) {
		if (tn_outbox_tenant_busy(ob, req->tenant)) {
			pp = &req->next;
			continue;
		}
		*pp = req->next;
		b->reqs[b->n_reqs++] = req;
	}
	ob->queue_tail = &ob->queue_head;
	while (*ob->queue_tail != NULL)
		ob->queue_tail = &(*ob->queue_tail)->next;
	tn_outbox_batch_group(b);
	b->stage = TN_OUTBOX_BATCH_FILLING;
}

/* Under queue_lock: a deferred request goes back to the queue, the
 * others are done; their threads are woken. */
static void tn_outbox_batch_release(struct tn_outbox *ob, struct tn_outbox_batch *b)
{
	for (size_t i = 0; i < b->n_reqs; i++) {
		struct tn_outbox_req *req = b->reqs[i];

		if (req->state == TN_OUTBOX_REQ_DEFERRED) {
			req->state = TN_OUTBOX_REQ_QUEUED;
			tn_outbox_queue_push(ob, req);
		} else {
			req->done = true;
		}
		/* done, or to wait until its retry time */
		pthread_cond_signal(&req->cond);
	}
	b->stage = TN_OUTBOX_BATCH_FREE;
}

/* Called and returns with queue_lock held: commit one batch into b.
 * When it has synced, the next batch may start; when it is done, the
 * one after. Each time one waiting thread is woken to lead it. */
static void tn_outbox_lead(struct tn_outbox *ob, struct tn_outbox_batch *b,
			   struct tn_outbox_req *self)
{
	self->leading = true;
	tn_outbox_queue_take(ob, b);
	pthread_mutex_unlock(&ob->queue_lock);
	tn_outbox_batch_begin(b);
	if (b->n_numbered > 0)
		tn_outbox_batch_sync(b);
	pthread_mutex_lock(&ob->queue_lock);
	b->stage = TN_OUTBOX_BATCH_PUBLISHING;
	tn_outbox_wake_leader(ob);
	pthread_mutex_unlock(&ob->queue_lock);
	if (b->n_numbered > 0)
		tn_outbox_batch_publish(b);
	tn_outbox_batch_end(b);
	pthread_mutex_lock(&ob->queue_lock);
	tn_outbox_batch_release(ob, b);
	self->leading = false;
	tn_outbox_wake_leader(ob);
}

/* Queue req and return when it is done. Meanwhile lead a batch whenever
 * one is free and a queued request can go (any waiting thread may). */
static void tn_outbox_queue_wait(struct tn_outbox *ob, struct tn_outbox_req *req)
{
	struct tn_outbox_batch *b;
	struct timespec ts;
	tn_msec_t wake = 0;

	pthread_mutex_lock(&ob->queue_lock);
	req->order = ob->queue_order++;
	tn_outbox_queue_push(ob, req);
	while (!req->done) {
		b = tn_outbox_free_batch(ob);
		if (b != NULL && tn_outbox_queue_due(ob, &wake) != NULL) {
			tn_outbox_lead(ob, b, req);
		} else if (b != NULL && wake != 0) {
			tn_time_deadline_timespec(wake, &ts);
			pthread_cond_timedwait(&req->cond, &ob->queue_lock, &ts);
		} else {
			pthread_cond_wait(&req->cond, &ob->queue_lock);
		}
	}
	pthread_mutex_unlock(&ob->queue_lock);
}

int tn_outbox_append(struct tn_outbox *ob, const char *type, const char *tenant,
		     json_t *data, char id_r[TN_OUTBOX_ID_SIZE],
		     uint64_t *sequence_r, const char **error_r)
{
	struct tn_outbox_req req = {
		.tenant = tenant, .pause = TN_OUTBOX_RETRY_MIN_MS,
		.state = TN_OUTBOX_REQ_QUEUED,
	};
	int ret = -1, cancel_state;

	tn_outbox_input_fault_tl = false;
	if (tn_outbox_req_prepare(ob, &req, type, data, error_r) < 0) {
		tn_outbox_input_fault_tl = req.input_fault;
		tn_outbox_req_release(&req);
		return -1;
	}
	req.deadline = tn_time_now_ms() + ob->lock_timeout;
	/* req is on this stack and in the queue: no cancellation meanwhile */
	pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &cancel_state);
	pthread_cond_init(&req.cond, NULL);
	tn_outbox_queue_wait(ob, &req);
	pthread_cond_destroy(&req.cond);
	pthread_setcancelstate(cancel_state, NULL);
	if (req.state == TN_OUTBOX_REQ_PUBLISHED) {
		memcpy(id_r, req.id, TN_OUTBOX_ID_SIZE);
		*sequence_r = req.seq;
		ret = 0;
	} else {
		tn_outbox_input_fault_tl = req.input_fault;
		tn_outbox_fail(error_r, "%s", req.error);
	}
	tn_outbox_req_release(&req);
	return ret;
}

/* --- set-up ---------------------------------------------------------------- */

static int tn_outbox_check_dir(const char *path, int mode, struct stat *st_r,
			       const char **error_r)
{
	if (stat(path, st_r) < 0)
		return tn_outbox_sysfail(error_r, "stat", path);
	if (!S_ISDIR(st_r->st_mode))
		return tn_outbox_fail(error_r, "outbox: %s: not a directory", path);
	if (faccessat(AT_FDCWD, path, mode, AT_EACCESS) < 0)
		return tn_outbox_sysfail(error_r, "access", path);
	return 0;
}

int tn_outbox_check(struct tn_outbox *ob, const char **error_r)
{
	struct stat st;
	dev_t dev = 0;

	if (ob->origin_error != NULL)
		return tn_outbox_fail(error_r, "%s", ob->origin_error);
	if (tn_outbox_check_dir(ob->dir, X_OK, &st, error_r) < 0)
		return -1;
	for (int i = 0; i < TN_OUTBOX_N_SUBDIRS; i++) {
		if (tn_outbox_check_dir(ob->sub[i], R_OK | W_OK | X_OK, &st, error_r) < 0)
			return -1;
		if (i > 0 && st.st_dev != dev)
			return tn_outbox_fail(error_r, "outbox: %s and %s are on different "
					      "file systems", ob->sub[0], ob->sub[i]);
		dev = st.st_dev;
		if ((st.st_mode & (S_ISGID | S_IRWXG)) != (S_ISGID | S_IRWXG))
			tn_warning("outbox: %s: mode %04o, expected 2770 (see docs/outbox.md)",
				   ob->sub[i], (unsigned int)(st.st_mode & 07777));
	}
	return 0;
}

/* The origin from the settings or the host name; an invalid one is
 * kept with its error, which every append then reports. */
static void tn_outbox_origin_init(struct tn_outbox *ob, const char *origin)
{
	char host[256], safe[TN_LOG_VALUE_MAX];

	if (origin == NULL || *origin == '\0') {
		if (gethostname(host, sizeof(host)) < 0) {
			ob->origin = tn_mem_strdup("");
			ob->origin_error = tn_mem_printf("outbox: gethostname: %s (set "
							 "outbox_origin)", strerror(errno));
			return;
		}
		host[sizeof(host) - 1] = '\0';
		origin = host;
	}
	ob->origin = tn_mem_strdup(origin);
	if (tn_outbox_origin_valid(origin))
		return;
	tn_log_sanitize(safe, sizeof(safe), origin, strlen(origin));
	ob->origin_error = tn_mem_printf("outbox: invalid origin '%s' (want "
					 "[A-Za-z0-9][A-Za-z0-9.-]*, at most %d bytes; "
					 "set outbox_origin)", safe, TN_OUTBOX_ORIGIN_MAX);
}

struct tn_outbox *tn_outbox_create(const struct tn_outbox_settings *set)
{
	struct tn_outbox *ob = tn_mem_calloc(1, sizeof(*ob));

	ob->dir = tn_mem_strdup(set->dir);
	for (int i = 0; i < TN_OUTBOX_N_SUBDIRS; i++)
		ob->sub[i] = tn_mem_printf("%s/%s", set->dir, tn_outbox_subdir_names[i]);
	tn_outbox_origin_init(ob, set->origin);
	ob->max_events = set->max_events;
	ob->min_free_bytes = set->min_free_bytes;
	ob->file_mode = set->file_mode != 0 ? set->file_mode : TN_OUTBOX_DEFAULT_MODE;
	ob->lock_timeout = set->lock_timeout_ms > 0 ? set->lock_timeout_ms :
		TN_OUTBOX_DEFAULT_LOCK_TIMEOUT;
	ob->sync = set->sync;
	pthread_mutex_init(&ob->lock, NULL);
	pthread_mutex_init(&ob->queue_lock, NULL);
	ob->queue_tail = &ob->queue_head;
	return ob;
}

struct tn_outbox *tn_outbox_create_conf(const struct tn_conf *conf)
{
	static const enum tn_outbox_sync syncs[] = {
		TN_OUTBOX_SYNC_SYNCFS, TN_OUTBOX_SYNC_FSYNC
	};
	struct tn_outbox_settings set = {
		.dir = tn_conf_str(conf, "outbox_dir"),
		.origin = tn_conf_str(conf, "outbox_origin"),
		.sync = syncs[tn_conf_enum(conf, "outbox_sync")],
		.max_events = (uint64_t)tn_conf_int(conf, "outbox_max_events"),
		.min_free_bytes = tn_conf_size(conf, "outbox_min_free"),
		.lock_timeout_ms = tn_conf_time_ms(conf, "outbox_lock_timeout"),
	};

	return tn_outbox_create(&set);
}

const char *tn_outbox_origin(const struct tn_outbox *ob)
{
	return ob->origin;
}

void tn_outbox_destroy(struct tn_outbox **obp)
{
	struct tn_outbox *ob = *obp;

	if (ob == NULL)
		return;
	*obp = NULL;
	pthread_mutex_destroy(&ob->queue_lock);
	pthread_mutex_destroy(&ob->lock);
	for (int i = 0; i < TN_OUTBOX_N_SUBDIRS; i++)
		tn_mem_free(&ob->sub[i]);
	tn_mem_free(&ob->origin);
	tn_mem_free(&ob->origin_error);
	tn_mem_free(&ob->dir);
	tn_mem_free(&ob);
}

/* The parameters of tenantmail.conf(5) every producer reads. */
const struct tn_conf_param tn_outbox_params[] = {
	{ "outbox_dir", TN_CONF_STR, "/var/spool/tenantmail/outbox", 0, 0, NULL,
	  "event outbox: holds tmp/, new/ and seq/ (docs/outbox.md)" },
	{ "outbox_max_events", TN_CONF_INT, "1000000", 0, INT64_MAX, NULL,
	  "refuse new events while new/ holds this many (0: no limit)" },
	{ "outbox_min_free", TN_CONF_SIZE, "64m", 0, 0, NULL,
	  "refuse new events below this much free space on the outbox file system" },
	{ "outbox_lock_timeout", TN_CONF_TIME, "5s", 1, 600 * 1000, NULL,
	  "wait this long for another producer of the same tenant" },
	{ "outbox_origin", TN_CONF_STR, "", 0, 0, NULL,
	  "this node's name in every event (empty: the host name)" },
	{ "outbox_sync", TN_CONF_ENUM, "syncfs", 0, 0, "syncfs|fsync",
	  "how a batch of appends makes its files durable: one syncfs, or one fsync per file" },
	TN_CONF_END
};
