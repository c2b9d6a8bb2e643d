/*++
 * NAME
 *	tn-outbox 3
 * SUMMARY
 *	durable event outbox (see tn-outbox.h and docs/outbox.md)
 * DESCRIPTION
 *	One append, after the input checks and the limits:
 *
 *	1. open seq/<tenant> (made on first use: an empty 0660 file is
 *	   written in tmp/, linked into seq/ and seq/ fsync'ed, so that the
 *	   file never appears with the creator's umask and never vanishes
 *	   in a crash while events that used it survive), flock(LOCK_EX);
 *	2. read n (empty: 0), make the id and the timestamp, encode the
 *	   event with sequence n+1 (too big: refused, nothing written);
 *	3. counter := n+1 (pwrite, ftruncate, fdatasync);
 *	4. tmp/<id>.json: O_CREAT|O_EXCL, fchmod, write all, fsync, close;
 *	5. rename into new/, fsync new/;
 *	6. flock(LOCK_UN) explicitly (a child forked meanwhile shares the
 *	   open file description, and close() alone would leave the lock
 *	   with it), close.
 *
 *	A failure in 3-5 unlinks the temporary file and writes n back.
 *	One exception: when the fsync of new/ fails the event is already
 *	visible; it is unlinked from new/ and the counter written back,
 *	but if the unlink finds the file gone (the consumer claimed it),
 *	the counter stays at n+1 so that no number is used twice.
 *
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
 *	the others use the previous count). Tenants are serialised by
 *	flock(2), which also works between threads of one process because
 *	each append opens its own file description.
 *--*/
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
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

struct tn_outbox {
	char *dir;
	char *sub[TN_OUTBOX_N_SUBDIRS];
	uint64_t max_events;
	uint64_t min_free_bytes;
	mode_t file_mode;
	tn_msec_t lock_timeout;

	pthread_mutex_t lock;
	/* under lock: the id generator */
	uint64_t id_ms;
	unsigned int id_counter;
	/* under lock: the count of new/ */
	uint64_t count;
	tn_msec_t count_at;
	bool counted, scanning;
};

/* One append in progress. */
struct tn_outbox_txn {
	struct tn_outbox *ob;
	const char *type, *tenant;
	json_t *data;
	char *seq_path;
	int seq_fd;
	uint64_t seq;		/* the counter before this append */
	char id[TN_OUTBOX_ID_SIZE];
	char occurred_at[40];
	char *tmp_path, *new_path;
	char *text;
	size_t len;
};

/* How far a failed publication got. */
enum tn_outbox_undo {
	TN_OUTBOX_UNDO_ROLLBACK,	/* nothing visible: write n back */
	TN_OUTBOX_UNDO_KEEP,		/* seen by the consumer: keep n+1 */
};

static __thread char tn_outbox_errbuf[TN_OUTBOX_ERROR_MAX];

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

static int tn_outbox_write_all(int fd, const char *buf, size_t len)
{
	ssize_t n;

	while (len > 0) {
		n = write(fd, buf, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -1;
		if (n == 0) {
			errno = EIO;
			return -1;
		}
		buf += n;
		len -= (size_t)n;
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

static int tn_outbox_fsync_dir(const char *path, const char **error_r)
{
	int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

	if (fd < 0)
		return tn_outbox_sysfail(error_r, "open", path);
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

static void tn_outbox_counted_one(struct tn_outbox *ob)
{
	if (ob->max_events == 0)
		return;
	pthread_mutex_lock(&ob->lock);
	ob->count++;
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

/* The id and occurred_at of the event being appended. */
static int tn_outbox_stamp(struct tn_outbox_txn *t, const char **error_r)
{
	unsigned char rnd[10];
	int64_t now = tn_outbox_wall_ms();
	uint64_t ms;
	unsigned int rand_a;

	if (tn_outbox_random(rnd, sizeof(rnd), error_r) < 0)
		return -1;
	tn_outbox_id_step(t->ob, now > 0 ? (uint64_t)now : 0,
			  (unsigned int)rnd[0] << 8 | rnd[1], &ms, &rand_a);
	tn_outbox_id_format(ms, rand_a, rnd + 2, t->id);
	tn_outbox_rfc3339(now, t->occurred_at);
	return 0;
}

/* --- the counter ------------------------------------------------------------ */

/* Make seq/<tenant> appear at once with its final mode, and durably. */
static int tn_outbox_seq_create(struct tn_outbox_txn *t, const char **error_r)
{
	struct tn_outbox *ob = t->ob;
	unsigned char rnd[8];
	char *tmp;
	int fd, ret = -1;

	if (tn_outbox_random(rnd, sizeof(rnd), error_r) < 0)
		return -1;
	tmp = tn_mem_printf("%s/seq.%s.%02x%02x%02x%02x%02x%02x%02x%02x",
			    ob->sub[TN_OUTBOX_TMP], t->tenant, rnd[0], rnd[1],
			    rnd[2], rnd[3], rnd[4], rnd[5], rnd[6], rnd[7]);
	if ((fd = tn_outbox_create_file(ob, tmp, error_r)) < 0) {
		tn_mem_free(&tmp);
		return -1;
	}
	if (fsync(fd) < 0)
		tn_outbox_sysfail(error_r, "fsync", tmp);
	else if (link(tmp, t->seq_path) < 0 && errno != EEXIST)
		tn_outbox_sysfail(error_r, "link", t->seq_path);
	else
		ret = tn_outbox_fsync_dir(ob->sub[TN_OUTBOX_SEQ], error_r);
	close(fd);
	unlink(tmp);
	tn_mem_free(&tmp);
	return ret;
}

static int tn_outbox_seq_open(struct tn_outbox_txn *t, const char **error_r)
{
	int flags = O_RDWR | O_CLOEXEC | O_NOFOLLOW;

	t->seq_fd = open(t->seq_path, flags);
	if (t->seq_fd < 0 && errno == ENOENT) {
		if (tn_outbox_seq_create(t, error_r) < 0)
			return -1;
		t->seq_fd = open(t->seq_path, flags);
	}
	if (t->seq_fd < 0)
		return tn_outbox_sysfail(error_r, "open", t->seq_path);
	return 0;
}

/* flock(2) has no timeout: try without blocking, sleeping 1 ms growing
 * to 20 ms between tries, until lock_timeout. A producer stuck while
 * holding the lock (a hung disk, SIGSTOP) then costs the others one
 * bounded wait and an error their protocol turns into a tempfail. */
static int tn_outbox_seq_lock(struct tn_outbox_txn *t, const char **error_r)
{
	tn_msec_t deadline = tn_time_now_ms() + t->ob->lock_timeout;
	useconds_t pause = 1000;

	while (flock(t->seq_fd, LOCK_EX | LOCK_NB) < 0) {
		if (errno != EWOULDBLOCK && errno != EINTR)
			return tn_outbox_sysfail(error_r, "flock", t->seq_path);
		if (tn_time_now_ms() >= deadline)
			return tn_outbox_fail(error_r, "outbox: %s: still locked by another "
					      "producer after %lld ms", t->seq_path,
					      (long long)t->ob->lock_timeout);
		usleep(pause);
		if (pause < 20000)
			pause *= 2;
	}
	return 0;
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

static int tn_outbox_seq_read(struct tn_outbox_txn *t, const char **error_r)
{
	char buf[TN_OUTBOX_SEQ_TEXT_MAX];
	ssize_t n;

	do {
		n = pread(t->seq_fd, buf, sizeof(buf), 0);
	} while (n < 0 && errno == EINTR);
	if (n < 0)
		return tn_outbox_sysfail(error_r, "read", t->seq_path);
	if ((size_t)n == sizeof(buf) || tn_outbox_seq_parse(buf, (size_t)n, &t->seq) < 0)
		return tn_outbox_fail(error_r, "outbox: %s: not a sequence number "
				      "(an admin must repair it)", t->seq_path);
	if (t->seq >= (uint64_t)INT64_MAX)
		return tn_outbox_fail(error_r, "outbox: %s: sequence exhausted", t->seq_path);
	return 0;
}

/* Counter := seq ("" for 0), durably. Sets errno and returns -1 on failure. */
static int tn_outbox_seq_write(int fd, uint64_t seq)
{
	char buf[TN_OUTBOX_SEQ_TEXT_MAX];
	int len = 0;

	if (seq > 0)
		len = snprintf(buf, sizeof(buf), "%" PRIu64 "\n", seq);
	if (tn_outbox_pwrite_all(fd, buf, (size_t)len) < 0 ||
	    ftruncate(fd, len) < 0 || fdatasync(fd) < 0)
		return -1;
	return 0;
}

/* Put the counter back to n. The caller's error stays the one the
 * caller sees; a failure here means the next event leaves a gap. */
static void tn_outbox_seq_rollback(struct tn_outbox_txn *t)
{
	struct tn_log_ctx ctx = { NULL, NULL, t->tenant };

	if (tn_outbox_seq_write(t->seq_fd, t->seq) < 0)
		tn_log(TN_LOG_ERROR, &ctx, "outbox: cannot roll %s back to %" PRIu64
		       ": %m (the next event leaves a gap)", t->seq_path, t->seq);
}

/* --- the event file ---------------------------------------------------------- */

static int tn_outbox_encode(struct tn_outbox_txn *t, const char **error_r)
{
	json_t *ev = json_object();
	size_t size;

	json_object_set_new(ev, "id", json_string(t->id));
	json_object_set_new(ev, "type", json_string(t->type));
	json_object_set_new(ev, "occurred_at", json_string(t->occurred_at));
	json_object_set_new(ev, "tenant", json_string(t->tenant));
	json_object_set_new(ev, "sequence", json_integer((json_int_t)(t->seq + 1)));
	json_object_set(ev, "data", t->data);
	size = json_dumpb(ev, NULL, 0, JSON_COMPACT | JSON_PRESERVE_ORDER);
	if (size == 0 || size + 1 > TN_OUTBOX_EVENT_MAX) {
		json_decref(ev);
		if (size == 0)
			return tn_outbox_fail(error_r, "outbox: event data cannot be "
					      "encoded as JSON");
		return tn_outbox_fail(error_r, "outbox: event too large (%zu bytes, "
				      "limit %d)", size + 1, TN_OUTBOX_EVENT_MAX);
	}
	t->text = tn_mem_alloc(size + 1);
	t->len = json_dumpb(ev, t->text, size, JSON_COMPACT | JSON_PRESERVE_ORDER);
	t->text[t->len++] = '\n';
	json_decref(ev);
	return 0;
}

/* tmp/<id>.json, complete and fsync'ed, or nothing. */
static int tn_outbox_write_tmp(struct tn_outbox_txn *t, const char **error_r)
{
	int fd = tn_outbox_create_file(t->ob, t->tmp_path, error_r), ret = -1;

	if (fd < 0)
		return -1;
	if (tn_outbox_write_all(fd, t->text, t->len) < 0)
		tn_outbox_sysfail(error_r, "write", t->tmp_path);
	else if (fsync(fd) < 0)
		tn_outbox_sysfail(error_r, "fsync", t->tmp_path);
	else
		ret = 0;
	if (close(fd) < 0 && ret == 0)
		ret = tn_outbox_sysfail(error_r, "close", t->tmp_path);
	if (ret < 0)
		unlink(t->tmp_path);
	return ret;
}

/* Steps 4 and 5. On failure *undo_r says whether the counter may go back. */
static int tn_outbox_publish(struct tn_outbox_txn *t, enum tn_outbox_undo *undo_r,
			     const char **error_r)
{
	*undo_r = TN_OUTBOX_UNDO_ROLLBACK;
	if (rename(t->tmp_path, t->new_path) < 0) {
		tn_outbox_sysfail(error_r, "rename", t->new_path);
		unlink(t->tmp_path);
		return -1;
	}
	if (tn_outbox_fsync_dir(t->ob->sub[TN_OUTBOX_NEW], error_r) < 0) {
		if (unlink(t->new_path) < 0) {
			struct tn_log_ctx ctx = { NULL, NULL, t->tenant };

			*undo_r = TN_OUTBOX_UNDO_KEEP;
			tn_log(TN_LOG_ERROR, &ctx, "outbox: event %s (sequence %" PRIu64
			       ") was claimed although its append fails: %s",
			       t->id, t->seq + 1, *error_r);
		}
		return -1;
	}
	return 0;
}

/* Steps 2 to 5, under the tenant's lock. */
static int tn_outbox_append_locked(struct tn_outbox_txn *t, const char **error_r)
{
	struct tn_outbox *ob = t->ob;
	enum tn_outbox_undo undo;

	if (tn_outbox_seq_read(t, error_r) < 0 || tn_outbox_stamp(t, error_r) < 0 ||
	    tn_outbox_encode(t, error_r) < 0)
		return -1;
	t->tmp_path = tn_mem_printf("%s/%s.json", ob->sub[TN_OUTBOX_TMP], t->id);
	t->new_path = tn_mem_printf("%s/%s.json", ob->sub[TN_OUTBOX_NEW], t->id);
	/* The event file first: it is invisible until renamed, and most of
	 * an append's time is its fsync, so a producer killed then leaves no
	 * gap; and a full disk fails here, before the counter moved. */
	if (tn_outbox_write_tmp(t, error_r) < 0)
		return -1;
	if (tn_outbox_seq_write(t->seq_fd, t->seq + 1) < 0) {
		tn_outbox_sysfail(error_r, "write", t->seq_path);
		unlink(t->tmp_path);
		tn_outbox_seq_rollback(t);
		return -1;
	}
	if (tn_outbox_publish(t, &undo, error_r) < 0) {
		if (undo == TN_OUTBOX_UNDO_ROLLBACK)
			tn_outbox_seq_rollback(t);
		return -1;
	}
	return 0;
}

static void tn_outbox_txn_release(struct tn_outbox_txn *t)
{
	if (t->seq_fd >= 0) {
		flock(t->seq_fd, LOCK_UN);
		close(t->seq_fd);
	}
	tn_mem_free(&t->seq_path);
	tn_mem_free(&t->tmp_path);
	tn_mem_free(&t->new_path);
	tn_mem_free(&t->text);
}

int tn_outbox_append(struct tn_outbox *ob, const char *type, const char *tenant,
		     json_t *data, char id_r[TN_OUTBOX_ID_SIZE],
		     uint64_t *sequence_r, const char **error_r)
{
	struct tn_outbox_txn t = {
		.ob = ob, .type = type, .tenant = tenant, .data = data, .seq_fd = -1,
	};
	int ret;

	if (tn_outbox_validate(type, tenant, data, error_r) < 0 ||
	    tn_outbox_check_space(ob, error_r) < 0 ||
	    tn_outbox_check_count(ob, error_r) < 0)
		return -1;
	t.seq_path = tn_mem_printf("%s/%s", ob->sub[TN_OUTBOX_SEQ], tenant);
	ret = tn_outbox_seq_open(&t, error_r);
	if (ret == 0)
		ret = tn_outbox_seq_lock(&t, error_r);
	if (ret == 0)
		ret = tn_outbox_append_locked(&t, error_r);
	if (ret == 0) {
		memcpy(id_r, t.id, TN_OUTBOX_ID_SIZE);
		*sequence_r = t.seq + 1;
		tn_outbox_counted_one(ob);
	}
	tn_outbox_txn_release(&t);
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

struct tn_outbox *tn_outbox_create(const struct tn_outbox_settings *set)
{
	struct tn_outbox *ob = tn_mem_calloc(1, sizeof(*ob));

	ob->dir = tn_mem_strdup(set->dir);
	for (int i = 0; i < TN_OUTBOX_N_SUBDIRS; i++)
		ob->sub[i] = tn_mem_printf("%s/%s", set->dir, tn_outbox_subdir_names[i]);
	ob->max_events = set->max_events;
	ob->min_free_bytes = set->min_free_bytes;
	ob->file_mode = set->file_mode != 0 ? set->file_mode : TN_OUTBOX_DEFAULT_MODE;
	ob->lock_timeout = set->lock_timeout_ms > 0 ? set->lock_timeout_ms :
		TN_OUTBOX_DEFAULT_LOCK_TIMEOUT;
	pthread_mutex_init(&ob->lock, NULL);
	return ob;
}

struct tn_outbox *tn_outbox_create_conf(const struct tn_conf *conf)
{
	struct tn_outbox_settings set = {
		.dir = tn_conf_str(conf, "outbox_dir"),
		.max_events = (uint64_t)tn_conf_int(conf, "outbox_max_events"),
		.min_free_bytes = tn_conf_size(conf, "outbox_min_free"),
		.lock_timeout_ms = tn_conf_time_ms(conf, "outbox_lock_timeout"),
	};

	return tn_outbox_create(&set);
}

void tn_outbox_destroy(struct tn_outbox **obp)
{
	struct tn_outbox *ob = *obp;

	if (ob == NULL)
		return;
	*obp = NULL;
	pthread_mutex_destroy(&ob->lock);
	for (int i = 0; i < TN_OUTBOX_N_SUBDIRS; i++)
		tn_mem_free(&ob->sub[i]);
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
	TN_CONF_END
};
