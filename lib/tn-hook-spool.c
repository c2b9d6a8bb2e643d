/*++
 * NAME
 *	tn-hook-spool 3
 * SUMMARY
 *	tn-hookd's spool names, endpoint files and parameters
 * DESCRIPTION
 *	See tn-hook-spool.h and docs/hookd.md.
 *--*/
#include "tn-build.h"

#include <ctype.h>
#include <stdarg.h>
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "tn-hook-spool.h"
#include "tn-mem.h"

#include <openssl/crypto.h>

#define TN_MS(s) ((int64_t)(s) * 1000)

const struct tn_conf_param tn_hookd_params[] = {
	{ "hookd_endpoints_dir", TN_CONF_STR, "/etc/tenantmail/webhooks.d", 0, 0, NULL,
	  "directory of webhook endpoint files, NAME.conf (tn-webhook(5))" },
	{ "hookd_user", TN_CONF_STR, "tenantmail", 0, 0, NULL,
	  "user tn-hookd switches to when started as root (empty: stay root)" },
	{ "hookd_metrics_listen", TN_CONF_STR, "127.0.0.1:9465", 0, 0, NULL,
	  "address:port of tn-hookd's /metrics endpoint (empty: off)" },
	{ "hookd_rescan_interval", TN_CONF_TIME, "30s", 100, TN_MS(3600), NULL,
	  "full rescan of new/ and the queues, besides inotify" },
	{ "hookd_retry_initial_delay", TN_CONF_TIME, "5s", 1, TN_MS(86400), NULL,
	  "backoff ceiling after the first failed attempt (doubles each time)" },
	{ "hookd_retry_max_delay", TN_CONF_TIME, "6h", 1, TN_MS(86400 * 7), NULL,
	  "largest backoff ceiling" },
	{ "hookd_retry_window", TN_CONF_TIME, "3d", 1, TN_MS(86400 * 60), NULL,
	  "an event still failing this long after its first attempt becomes a dead letter" },
	{ "hookd_retry_after_max", TN_CONF_TIME, "1h", 0, TN_MS(86400), NULL,
	  "largest Retry-After (429/503) honoured" },
	{ "hookd_tmp_max_age", TN_CONF_TIME, "1h", TN_MS(1), TN_MS(86400 * 30), NULL,
	  "remove producers' files in the outbox's tmp/ older than this" },
	{ "hookd_delivery_log_max_size", TN_CONF_SIZE, "64m", 0, 0, NULL,
	  "rotate hooks/deliveries.log to deliveries.log.1 beyond this size" },
	{ "hookd_log_level", TN_CONF_ENUM, "info", 0, 0, "debug|info|warning|error",
	  "tn-hookd's least important syslog level" },
	TN_CONF_END
};

const struct tn_conf_param tn_hook_endpoint_params[] = {
	{ "url", TN_CONF_STR, "", 0, 0, NULL,
	  "http:// or https:// URL the events are POSTed to (required)" },
	{ "secrets", TN_CONF_LIST, "", 0, 0, NULL,
	  "whsec_<base64> signing secrets; each signs every request (required)" },
	{ "events", TN_CONF_LIST, "*", 0, 0, NULL,
	  "event types to deliver: exact types, prefix.* or *" },
	{ "tenants", TN_CONF_LIST, "", 0, 0, NULL,
	  "deliver only these tenants' events (empty: all)" },
	{ "concurrency", TN_CONF_INT, "4", 1, 256, NULL,
	  "requests in flight to this endpoint" },
	{ "connect_timeout", TN_CONF_TIME, "5s", 1, TN_MS(300), NULL,
	  "TCP and TLS handshake timeout" },
	{ "timeout", TN_CONF_TIME, "15s", 1, TN_MS(600), NULL,
	  "whole-request timeout, answer included" },
	{ "tls_ca_file", TN_CONF_STR, "", 0, 0, NULL,
	  "CA bundle to verify the server with (empty: system CAs)" },
	{ "enabled", TN_CONF_BOOL, "yes", 0, 0, NULL,
	  "no: deliver nothing to this endpoint; its queue keeps filling" },
	TN_CONF_END
};

static _Thread_local char tn_hook_errbuf[512];

static int tn_hook_fail(const char **error_r, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static int tn_hook_fail(const char **error_r, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(tn_hook_errbuf, sizeof(tn_hook_errbuf), fmt, ap);
	va_end(ap);
	*error_r = tn_hook_errbuf;
	return -1;
}

/* --- names ------------------------------------------------------------------------ */

bool tn_hook_id_valid(const char *id)
{
	for (int i = 0; i < 36; i++) {
		char c = id[i];

		if (i == 8 || i == 13 || i == 18 || i == 23) {
			if (c != '-')
				return false;
		} else if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) {
			return false;
		}
	}
	return id[36] == '\0';
}

int64_t tn_hook_id_time_ms(const char *id)
{
	int64_t ms = 0;
	int digits = 0;

	if (!tn_hook_id_valid(id) || id[14] != '7')
		return -1;
	for (int i = 0; digits < 12; i++) {
		if (id[i] == '-')
			continue;
		ms = ms * 16 + (isdigit((unsigned char)id[i]) ? id[i] - '0' : id[i] - 'a' + 10);
		digits++;
	}
	return ms;
}

bool tn_hook_name_valid(const char *name)
{
	size_t len = strlen(name);

	if (len == 0 || len > TN_HOOK_NAME_MAX)
		return false;
	if (!islower((unsigned char)name[0]) && !isdigit((unsigned char)name[0]))
		return false;
	for (size_t i = 1; i < len; i++) {
		unsigned char c = (unsigned char)name[i];

		if (!islower(c) && !isdigit(c) && c != '_' && c != '-')
			return false;
	}
	return true;
}

/* A decimal number without sign or leading junk, ending at *end_r. */
static int tn_hook_parse_u64(const char *p, const char **end_r, uint64_t *v_r)
{
	uint64_t v = 0;
	const char *s = p;

	while (*s >= '0' && *s <= '9') {
		if (v > (UINT64_MAX - 9) / 10)
			return -1;
		v = v * 10 + (uint64_t)(*s - '0');
		s++;
	}
	if (s == p || s - p > 19)
		return -1;
	*end_r = s;
	*v_r = v;
	return 0;
}

int tn_hook_qname_parse(const char *name, struct tn_hook_qname *q)
{
	uint64_t n[3];
	const char *p;

	if (strlen(name) < 36)
		return -1;
	memcpy(q->id, name, 36);
	q->id[36] = '\0';
	if (!tn_hook_id_valid(q->id))
		return -1;
	p = name + 36;
	if (strcmp(p, ".json") == 0) {
		q->attempts = 0;
		q->first_ms = q->next_ms = 0;
		return 0;
	}
	for (int i = 0; i < 3; i++) {
		if (*p++ != '.' || tn_hook_parse_u64(p, &p, &n[i]) < 0)
			return -1;
	}
	if (strcmp(p, ".retry") != 0 || n[0] == 0 || n[0] > 1000000 ||
	    n[1] > INT64_MAX || n[2] > INT64_MAX)
		return -1;
	q->attempts = (unsigned)n[0];
	q->first_ms = (int64_t)n[1];
	q->next_ms = (int64_t)n[2];
	return 0;
}

void tn_hook_qname_format(const struct tn_hook_qname *q, char buf[TN_HOOK_QNAME_SIZE])
{
	if (q->attempts == 0)
		snprintf(buf, TN_HOOK_QNAME_SIZE, "%s.json", q->id);
	else
		snprintf(buf, TN_HOOK_QNAME_SIZE, "%s.%u.%" PRId64 ".%" PRId64 ".retry",
			 q->id, q->attempts, q->first_ms, q->next_ms);
}

/* --- endpoint files --------------------------------------------------------------- */

static char **tn_hook_strv_dup(const char *const *list)
{
	size_t n = 0;
	char **v;

	while (list[n] != NULL)
		n++;
	v = tn_mem_calloc(n + 1, sizeof(*v));
	for (size_t i = 0; i < n; i++)
		v[i] = tn_mem_strdup(list[i]);
	return v;
}

static void tn_hook_strv_free(char ***vp)
{
	char **v = *vp;

	if (v == NULL)
		return;
	for (size_t i = 0; v[i] != NULL; i++)
		tn_mem_free(&v[i]);
	tn_mem_free(vp);
}

static bool tn_hook_pattern_valid(const char *p)
{
	size_t len = strlen(p);

	if (strcmp(p, "*") == 0)
		return true;
	if (len == 0 || len > 64)
		return false;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)p[i];

		if (c == '*')
			return i == len - 1 && i > 0 && p[i - 1] == '.';
		if (!islower(c) && !isdigit(c) && c != '_' && c != '.')
			return false;
	}
	return true;
}

static int tn_hook_endpoint_check(struct tn_hook_endpoint *ep, const struct tn_conf *conf,
				  const char **error_r)
{
	const char *const *secrets = tn_conf_list(conf, "secrets");
	const char *url = tn_conf_str(conf, "url");
	const char *err;

	if (strncmp(url, "http://", 7) != 0 && strncmp(url, "https://", 8) != 0)
		return tn_hook_fail(error_r, "%s: url must be an http:// or https:// URL",
				    ep->path);
	if (secrets[0] == NULL)
		return tn_hook_fail(error_r, "%s: secrets: at least one whsec_ secret is required",
				    ep->path);
	for (size_t i = 0; secrets[i] != NULL; i++) {
		if (i == TN_WEBHOOK_SECRETS_MAX)
			return tn_hook_fail(error_r, "%s: secrets: more than %d", ep->path,
					    TN_WEBHOOK_SECRETS_MAX);
		if (tn_webhook_secret_parse(secrets[i], &ep->secrets[i], &err) < 0)
			return tn_hook_fail(error_r, "%s: secrets: item %zu: %s", ep->path,
					    i + 1, err);
		ep->nsecrets++;
	}
	for (const char *const *p = tn_conf_list(conf, "events"); *p != NULL; p++) {
		if (!tn_hook_pattern_valid(*p))
			return tn_hook_fail(error_r, "%s: events: bad pattern '%s'"
					    " (a type, prefix.* or *)", ep->path, *p);
	}
	ep->url = tn_mem_strdup(url);
	return 0;
}

static int tn_hook_endpoint_load(struct tn_hook_endpoint *ep, const char *dir,
				 const char *file, const char **error_r)
{
	static const struct tn_conf_param *const tables[] = { tn_hook_endpoint_params, NULL };
	struct tn_conf *conf = tn_conf_create("endpoint", tables);
	const char *ca, *err;
	struct stat st;
	int ret = -1;

	memset(ep, 0, sizeof(*ep));
	snprintf(ep->name, sizeof(ep->name), "%.*s", (int)(strlen(file) - 5), file);
	ep->path = tn_mem_printf("%s/%s", dir, file);
	if (tn_conf_load_file(conf, ep->path, &err) < 0) {
		tn_hook_fail(error_r, "%s", err);
	} else if (tn_hook_endpoint_check(ep, conf, error_r) == 0) {
		ep->events = tn_hook_strv_dup(tn_conf_list(conf, "events"));
		ep->tenants = tn_hook_strv_dup(tn_conf_list(conf, "tenants"));
		ep->concurrency = (unsigned)tn_conf_int(conf, "concurrency");
		ep->connect_timeout_ms = tn_conf_time_ms(conf, "connect_timeout");
		ep->timeout_ms = tn_conf_time_ms(conf, "timeout");
		ca = tn_conf_str(conf, "tls_ca_file");
		ep->tls_ca_file = *ca == '\0' ? NULL : tn_mem_strdup(ca);
		ep->enabled = tn_conf_bool(conf, "enabled");
		ep->world_readable = stat(ep->path, &st) == 0 && (st.st_mode & S_IROTH) != 0;
		ret = 0;
	}
	tn_conf_destroy(&conf);
	return ret;
}

static bool tn_hook_is_endpoint_file(const char *file)
{
	size_t len = strlen(file);
	char name[TN_HOOK_NAME_MAX + 1];

	if (len <= 5 || len - 5 > TN_HOOK_NAME_MAX || strcmp(file + len - 5, ".conf") != 0)
		return false;
	snprintf(name, sizeof(name), "%.*s", (int)(len - 5), file);
	return tn_hook_name_valid(name);
}

static int tn_hook_endpoint_cmp(const void *a, const void *b)
{
	return strcmp(((const struct tn_hook_endpoint *)a)->name,
		      ((const struct tn_hook_endpoint *)b)->name);
}

int tn_hook_endpoints_load(const char *dir, struct tn_hook_endpoint **eps_r,
			   unsigned *count_r, const char **error_r)
{
	struct tn_hook_endpoint *eps = NULL;
	unsigned count = 0;
	struct dirent *de;
	DIR *d;

	if ((d = opendir(dir)) == NULL)
		return tn_hook_fail(error_r, "%s: %s", dir, strerror(errno));
	while ((de = readdir(d)) != NULL) {
		if (!tn_hook_is_endpoint_file(de->d_name))
			continue;
		eps = tn_mem_realloc(eps, (count + 1) * sizeof(*eps));
		if (tn_hook_endpoint_load(&eps[count], dir, de->d_name, error_r) < 0) {
			count++;
			closedir(d);
			tn_hook_endpoints_free(&eps, count);
			return -1;
		}
		count++;
	}
	closedir(d);
	if (count > 1)
		qsort(eps, count, sizeof(*eps), tn_hook_endpoint_cmp);
	*eps_r = eps;
	*count_r = count;
	return 0;
}

void tn_hook_endpoint_clear(struct tn_hook_endpoint *ep)
{
	tn_mem_free(&ep->path);
	tn_mem_free(&ep->url);
	tn_mem_free(&ep->tls_ca_file);
	tn_hook_strv_free(&ep->events);
	tn_hook_strv_free(&ep->tenants);
	OPENSSL_cleanse(ep->secrets, sizeof(ep->secrets));
}

void tn_hook_endpoints_free(struct tn_hook_endpoint **epsp, unsigned count)
{
	struct tn_hook_endpoint *eps = *epsp;

	if (eps == NULL)
		return;
	for (unsigned i = 0; i < count; i++)
		tn_hook_endpoint_clear(&eps[i]);
	tn_mem_free(epsp);
}

static bool tn_hook_type_matches(const char *pattern, const char *type)
{
	size_t len = strlen(pattern);

	if (strcmp(pattern, "*") == 0)
		return true;
	if (len >= 2 && pattern[len - 1] == '*')
		return strncmp(pattern, type, len - 1) == 0;
	return strcmp(pattern, type) == 0;
}

bool tn_hook_endpoint_wants(const struct tn_hook_endpoint *ep, const char *type,
			    const char *tenant)
{
	bool want = false;

	for (char **p = ep->events; *p != NULL && !want; p++)
		want = tn_hook_type_matches(*p, type);
	if (!want || ep->tenants[0] == NULL)
		return want;
	for (char **p = ep->tenants; *p != NULL; p++) {
		if (strcmp(*p, tenant) == 0)
			return true;
	}
	return false;
}

/* --- envelopes and times ---------------------------------------------------------- */

static bool tn_hook_has_string(json_t *obj, const char *key)
{
	json_t *v = json_object_get(obj, key);

	return json_is_string(v) && json_string_length(v) > 0;
}

json_t *tn_hook_envelope_parse(const char *buf, size_t len, const char *expect_id,
			       const char **error_r)
{
	json_error_t jerr;
	json_t *ev, *seq;

	if (len == 0) {
		*error_r = "empty file";
		return NULL;
	}
	if (buf[len - 1] == '\n')
		len--;
	if ((ev = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &jerr)) == NULL) {
		*error_r = "not JSON (truncated?)";
		return NULL;
	}
	seq = json_object_get(ev, "sequence");
	if (!json_is_object(ev)) {
		*error_r = "not a JSON object";
	} else if (!tn_hook_has_string(ev, "id") ||
		   !tn_hook_id_valid(json_string_value(json_object_get(ev, "id")))) {
		*error_r = "no valid id";
	} else if (expect_id != NULL &&
		   strcmp(json_string_value(json_object_get(ev, "id")), expect_id) != 0) {
		*error_r = "id differs from the file name";
	} else if (!tn_hook_has_string(ev, "type") || !tn_hook_has_string(ev, "tenant") ||
		   !tn_hook_has_string(ev, "occurred_at")) {
		*error_r = "type, tenant or occurred_at missing";
	} else if (!json_is_integer(seq) || json_integer_value(seq) < 1) {
		*error_r = "no valid sequence";
	} else {
		return ev;
	}
	json_decref(ev);
	return NULL;
}

bool tn_hook_segment_next(const char *buf, size_t len, size_t *pos, const char **line_r,
			  size_t *line_len_r)
{
	const char *p = buf + *pos, *nl;

	if (*pos >= len)
		return false;
	nl = memchr(p, '\n', len - *pos);
	*line_r = p;
	*line_len_r = nl != NULL ? (size_t)(nl - p) : len - *pos;
	*pos += *line_len_r + (nl != NULL);
	return true;
}

bool tn_hook_segment_line_id(const char *line, size_t len, char id_r[TN_HOOK_ID_SIZE])
{
	if (len < 7 + 36 + 1 || memcmp(line, "{\"id\":\"", 7) != 0 || line[7 + 36] != '"')
		return false;
	memcpy(id_r, line + 7, 36);
	id_r[36] = '\0';
	return tn_hook_id_valid(id_r);
}

json_t *tn_hook_segment_find(const char *buf, size_t len, const char *id,
			     const char **error_r)
{
	char line_id[TN_HOOK_ID_SIZE];
	const char *line, *why = NULL;
	size_t pos = 0, n;
	json_t *ev;

	if (len == 0) {
		*error_r = "empty file";
		return NULL;
	}
	while (tn_hook_segment_next(buf, len, &pos, &line, &n)) {
		if (tn_hook_segment_line_id(line, n, line_id)) {
			if (strcmp(line_id, id) == 0)
				return tn_hook_envelope_parse(line, n, id, error_r);
			continue;
		}
		/* written otherwise: parse it to learn its id */
		if ((ev = tn_hook_envelope_parse(line, n, NULL, &why)) == NULL)
			continue;
		if (strcmp(json_string_value(json_object_get(ev, "id")), id) == 0)
			return ev;
		json_decref(ev);
		why = "id differs from the file name";
	}
	*error_r = why != NULL ? why : "no such event in the file";
	return NULL;
}

void tn_hook_format_time(int64_t unix_ms, char buf[32])
{
	time_t secs = (time_t)(unix_ms / 1000);
	struct tm tm;

	gmtime_r(&secs, &tm);
	if (strftime(buf, 32, "%Y-%m-%dT%H:%M:%S", &tm) == 0)
		buf[0] = '\0';
	snprintf(buf + strlen(buf), 32 - strlen(buf), ".%03uZ",
		 (unsigned)(((unix_ms % 1000) + 1000) % 1000));
}

int64_t tn_hook_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}
