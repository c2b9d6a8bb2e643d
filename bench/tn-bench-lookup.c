/*++
 * NAME
 *	tn-bench-lookup 1
 * SUMMARY
 *	time address lookups per layer, and the raw client floors
 * SYNOPSIS
 *	tn-bench-lookup -c config [-o name=value]... mode -n count
 *		[-k keys [-K space]] [-w warmup] [-s seed] [-T] [-H tenant] address-or-template
 * DESCRIPTION
 *	A benchmark tool, not installed; bench/lookup drives it. It times
 *	count operations of one kind, one at a time from one thread, and
 *	prints one line of JSON:
 *
 *	    {"mode":"redis","n":100000,"keys":1,"space":1,"warmup":10000,
 *	     "ops_per_s":...,"mean_us":...,"p50_us":...,"p90_us":...,
 *	     "p99_us":...,"max_us":...,"errors":0,"layer_mismatch":0}
 *
 *	Modes:
 *	memory         tn_lookup_resolve() answered from the in-process
 *	               cache: the subscriber is started and waited for,
 *	               every key is resolved once (fill), then timed.
 *	               memory_cache_ttl is raised to 300s unless the
 *	               configuration sets it, so entries do not expire
 *	               during the run.
 *	redis          tn_lookup_resolve() with TN_LOOKUP_NO_MEMORY_CACHE:
 *	               every key is resolved once (fills Redis), then timed.
 *	ldap           tn_lookup_resolve() with TN_LOOKUP_NO_MEMORY_CACHE
 *	               and redis_enabled=no: every resolve asks LDAP (the
 *	               library's address+domain search, then the tenant
 *	               read by DN).
 *	raw-ldap       plain libldap: one connection bound as ldap_bind_dn,
 *	               ldap_search_ext_s() with the library's filter, base,
 *	               scope, attribute list and size limit (filters are
 *	               built before the timed loop). With -H TENANT the
 *	               filter also asks for that tenant's entry, exactly the
 *	               request the library sends once it has learnt which
 *	               tenant the domain belongs to (one round trip). With -T
 *	               each operation reads the tenant entry by DN in a second
 *	               request instead (the library's path before it knows).
 *	raw-redis-get  plain hiredis: GET <redis_key_prefix>adr:<address>
 *	               on one connection (the key must exist: run the redis
 *	               mode first).
 *
 *	The settings (URIs, bind DN and password file, Redis host, port,
 *	prefix) come from the configuration for every mode; the forced
 *	settings above are applied after -o.
 *
 *	Keys: without -k every operation uses address. With -k keys the
 *	address is a template, "user%d@bench.example" (or "user@bench.example",
 *	the number then goes before the '@'), and keys addresses are made
 *	from it, numbered 0, s, 2s, ... with s = space / keys (-K space,
 *	default keys): -k 1000 -K 1000000 spreads 1000 keys over a directory
 *	of a million. Each operation picks one of them at random (-s seed).
 *
 *	The warm-up (-w, default count/10 within 100..10000 operations)
 *	runs before the clock starts and is not recorded; it draws its keys
 *	from the same generator first, so with the same seed, keys and
 *	warm-up every mode times the same sequence of addresses (library
 *	and raw modes ask for the same entries). Each operation is timed
 *	on its own with CLOCK_MONOTONIC (about 20 ns of overhead);
 *	ops_per_s is count over the whole timed loop.
 *
 *	errors counts operations that did not answer TN_FOUND (or, raw,
 *	failed or found nothing); layer_mismatch counts resolves answered
 *	by another layer than the mode's. The library modes add
 *	ldap_searches_per_op and redis_calls_per_op (from the library's
 *	counters, timed loop only): the round trips behind each figure.
 * DIAGNOSTICS
 *	Exit 0: every timed operation succeeded; 1: some failed (the JSON
 *	line is printed anyway); 2: bad usage or setup failure.
 *--*/
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include <hiredis/hiredis.h>
#include <ldap.h>

#include "tn-conf.h"
#include "tn-dir.h"
#include "tn-log.h"
#include "tn-lookup.h"
#include "tn-mem.h"
#include "tn-time.h"

#define BENCH_NAME "tn-bench-lookup"
#define BENCH_EXIT_USAGE 2
#define BENCH_SIZELIMIT TN_DIR_SIZELIMIT
/* The attributes the library asks for, so that raw-ldap moves the same bytes. */
#define bench_ldap_attrs tn_dir_attrs

enum bench_mode {
	BENCH_MEMORY,
	BENCH_REDIS,
	BENCH_LDAP,
	BENCH_RAW_LDAP,
	BENCH_RAW_REDIS_GET,
};

static const char *const bench_mode_names[] = {
	"memory", "redis", "ldap", "raw-ldap", "raw-redis-get", NULL,
};

struct bench_opts {
	enum bench_mode mode;
	long n;
	long keys;		/* 0: the address as given */
	long space;
	long warmup;		/* -1: default */
	uint64_t seed;
	bool tenant_read;	/* raw-ldap -T */
	const char *tenant_hint; /* raw-ldap -H: the library's hinted filter */
	const char *target;	/* address or template */
};

/* Outcome of one operation. */
enum bench_rc { BENCH_OK, BENCH_ERROR, BENCH_MISMATCH };

typedef enum bench_rc bench_op_fn(void *ctx, size_t key);
/* Backend requests so far: [0] LDAP searches, [1] Redis calls. */
typedef void bench_snap_fn(void *ctx, uint64_t counts_r[2]);

struct bench_run {
	const struct bench_opts *opts;
	char **addrs;
	size_t naddrs;
	uint64_t rng;
	int64_t *ns;
	int64_t total_ns;
	uint64_t errors, mismatches;
	bool have_calls;
	uint64_t calls[2];	/* backend requests during the timed loop */
	const char *last_error;
};

/* --- keys and timing ------------------------------------------------------ */

static int64_t bench_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* xorshift64*: a cheap generator, the same sequence for the same seed. */
static uint64_t bench_random(uint64_t *state)
{
	uint64_t x = *state;

	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*state = x;
	return x * 2685821657736338717ULL;
}

static size_t bench_pick(struct bench_run *run)
{
	if (run->naddrs == 1)
		return 0;
	return (size_t)(bench_random(&run->rng) % run->naddrs);
}

/* "user%d@d" or "user@d" with number i. */
static char *bench_key_name(const char *template, long i)
{
	const char *pct = strstr(template, "%d");
	const char *at = strchr(template, '@');

	if (pct != NULL)
		return tn_mem_printf("%.*s%ld%s", (int)(pct - template), template, i, pct + 2);
	if (at != NULL)
		return tn_mem_printf("%.*s%ld%s", (int)(at - template), template, i, at);
	return tn_mem_printf("%s%ld", template, i);
}

static void bench_make_keys(struct bench_run *run)
{
	const struct bench_opts *o = run->opts;
	long stride = o->keys > 0 ? o->space / o->keys : 1;

	run->naddrs = o->keys > 0 ? (size_t)o->keys : 1;
	run->addrs = tn_mem_calloc(run->naddrs, sizeof(char *));
	if (o->keys == 0) {
		run->addrs[0] = tn_mem_strdup(o->target);
		return;
	}
	for (size_t i = 0; i < run->naddrs; i++)
		run->addrs[i] = bench_key_name(o->target, (long)i * stride);
}

static void bench_free_keys(struct bench_run *run)
{
	for (size_t i = 0; i < run->naddrs; i++)
		tn_mem_free(&run->addrs[i]);
	tn_mem_free(&run->addrs);
}

static void bench_count(struct bench_run *run, enum bench_rc rc)
{
	if (rc == BENCH_ERROR)
		run->errors++;
	else if (rc == BENCH_MISMATCH)
		run->mismatches++;
}

/* Untimed: once over every key (fills the caches), then warm-up picks. */
static int bench_warm(struct bench_run *run, bench_op_fn *op, void *ctx, bool fill)
{
	uint64_t failures = 0;

	for (size_t i = 0; fill && i < run->naddrs; i++)
		failures += op(ctx, i) == BENCH_ERROR;
	for (long i = 0; i < run->opts->warmup; i++)
		failures += op(ctx, bench_pick(run)) == BENCH_ERROR;
	if (failures > 0)
		fprintf(stderr, "%s: %" PRIu64 " warm-up operations failed\n",
			BENCH_NAME, failures);
	return failures > 0 ? -1 : 0;
}

static void bench_timed(struct bench_run *run, bench_op_fn *op, void *ctx)
{
	int64_t start = bench_now_ns(), t0;

	run->ns = tn_mem_calloc((size_t)run->opts->n, sizeof(int64_t));
	for (long i = 0; i < run->opts->n; i++) {
		size_t key = bench_pick(run);

		t0 = bench_now_ns();
		bench_count(run, op(ctx, key));
		run->ns[i] = bench_now_ns() - t0;
	}
	run->total_ns = bench_now_ns() - start;
}

/* --- results ----------------------------------------------------------------- */

static int bench_cmp_ns(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

	return (x > y) - (x < y);
}

/* Nearest rank: the smallest sample with at least p of them at or below. */
static double bench_pct_us(const int64_t *sorted, size_t n, double p)
{
	size_t rank = (size_t)(p * (double)n + 0.999999);

	if (rank < 1)
		rank = 1;
	if (rank > n)
		rank = n;
	return (double)sorted[rank - 1] / 1000.0;
}

static void bench_report(struct bench_run *run)
{
	const struct bench_opts *o = run->opts;
	size_t n = (size_t)o->n;
	double sum = 0;

	qsort(run->ns, n, sizeof(int64_t), bench_cmp_ns);
	for (size_t i = 0; i < n; i++)
		sum += (double)run->ns[i];
	printf("{\"mode\":\"%s\",\"n\":%ld,\"keys\":%zu,\"space\":%ld,\"warmup\":%ld,"
	       "\"ops_per_s\":%.1f,\"mean_us\":%.3f,\"p50_us\":%.3f,\"p90_us\":%.3f,"
	       "\"p99_us\":%.3f,\"max_us\":%.3f,\"errors\":%" PRIu64
	       ",\"layer_mismatch\":%" PRIu64 ",\"tenant_read\":%s",
	       bench_mode_names[o->mode], o->n, run->naddrs,
	       o->keys > 0 ? o->space : 1, o->warmup,
	       (double)o->n * 1e9 / (double)run->total_ns, sum / (double)n / 1000.0,
	       bench_pct_us(run->ns, n, 0.50), bench_pct_us(run->ns, n, 0.90),
	       bench_pct_us(run->ns, n, 0.99), (double)run->ns[n - 1] / 1000.0,
	       run->errors, run->mismatches, o->tenant_read ? "true" : "false");
	if (run->have_calls)
		printf(",\"ldap_searches_per_op\":%.3f,\"redis_calls_per_op\":%.3f",
		       (double)run->calls[0] / (double)n, (double)run->calls[1] / (double)n);
	printf("}\n");
	fflush(stdout);
	if (run->errors > 0)
		fprintf(stderr, "%s: %" PRIu64 " of %ld operations failed; last: %s\n",
			BENCH_NAME, run->errors, o->n,
			run->last_error != NULL ? run->last_error : "(no text)");
}

/* Warm, time, report: the exit status. snap (or NULL) counts the
 * backend requests of the timed loop. */
static int bench_execute(struct bench_run *run, bench_op_fn *op, void *ctx, bool fill,
			 bench_snap_fn *snap)
{
	uint64_t before[2] = { 0, 0 }, after[2] = { 0, 0 };

	if (bench_warm(run, op, ctx, fill) < 0)
		return 1;
	if (snap != NULL)
		snap(ctx, before);
	bench_timed(run, op, ctx);
	if (snap != NULL) {
		snap(ctx, after);
		run->have_calls = true;
		run->calls[0] = after[0] - before[0];
		run->calls[1] = after[1] - before[1];
	}
	bench_report(run);
	tn_mem_free(&run->ns);
	return run->errors > 0 ? 1 : 0;
}

/* --- the library modes ---------------------------------------------------------- */

struct bench_lookup {
	struct bench_run *run;
	struct tn_lookup *lk;
	enum tn_layer layer;
};

static enum bench_rc bench_lookup_op(void *ctx, size_t key)
{
	struct bench_lookup *bl = ctx;
	struct tn_account *acct = NULL;
	const char *error = NULL;
	enum tn_result rc;
	enum bench_rc ret = BENCH_OK;

	rc = tn_lookup_resolve(bl->lk, bl->run->addrs[key], 0, &acct, &error);
	if (rc != TN_FOUND) {
		bl->run->last_error = rc == TN_NOTFOUND ? "not found" : "tempfail";
		ret = BENCH_ERROR;
	} else if (acct->layer != bl->layer) {
		ret = BENCH_MISMATCH;
	}
	tn_account_free(&acct);
	return ret;
}

/* A counter from tn_lookup_metrics() text ("bench_NAME VALUE" line). */
static uint64_t bench_metric(const char *text, const char *name)
{
	char *line = tn_mem_printf("\nbench_%s ", name);
	const char *p = strstr(text, line);
	uint64_t value = 0;

	if (p != NULL)
		value = strtoull(p + strlen(line), NULL, 10);
	tn_mem_free(&line);
	return value;
}

static void bench_lookup_snap(void *ctx, uint64_t counts_r[2])
{
	struct bench_lookup *bl = ctx;
	char *text = tn_lookup_metrics(bl->lk, "bench");

	counts_r[0] = bench_metric(text, "ldap_searches_total");
	counts_r[1] = bench_metric(text, "redis_calls_total");
	tn_mem_free(&text);
}

static int bench_wait_memory(struct tn_lookup *lk)
{
	const char *error;
	tn_msec_t deadline = tn_time_now_ms() + 5000;

	if (tn_lookup_start(lk, &error) < 0) {
		fprintf(stderr, "%s: %s\n", BENCH_NAME, error);
		return -1;
	}
	while (!tn_lookup_memory_active(lk)) {
		if (tn_time_left_ms(deadline) == 0) {
			fprintf(stderr, "%s: the in-process cache is not active after 5 s "
				"(invalidation subscription down? memory_cache_ttl or "
				"memory_cache_size 0?)\n", BENCH_NAME);
			return -1;
		}
		usleep(1000);
	}
	return 0;
}

static int bench_force(struct tn_conf *conf, const char *name, const char *value)
{
	const char *error;

	if (tn_conf_set(conf, name, value, &error) < 0) {
		fprintf(stderr, "%s: %s\n", BENCH_NAME, error);
		return -1;
	}
	return 0;
}

static int bench_mode_conf(struct tn_conf *conf, const struct bench_opts *o,
			   unsigned *flags_r, enum tn_layer *layer_r)
{
	*flags_r = o->mode == BENCH_MEMORY ? 0 : TN_LOOKUP_NO_MEMORY_CACHE;
	*layer_r = o->mode == BENCH_MEMORY ? TN_LAYER_MEMORY :
		o->mode == BENCH_REDIS ? TN_LAYER_REDIS : TN_LAYER_LDAP;
	if (o->mode == BENCH_MEMORY && !tn_conf_is_set(conf, "memory_cache_ttl"))
		return bench_force(conf, "memory_cache_ttl", "300s");
	if (o->mode == BENCH_LDAP)
		return bench_force(conf, "redis_enabled", "no");
	return 0;
}

static int bench_lookup_mode(struct bench_run *run, struct tn_conf *conf)
{
	struct bench_lookup bl = { .run = run };
	const char *error;
	unsigned flags;
	int ret;

	if (bench_mode_conf(conf, run->opts, &flags, &bl.layer) < 0)
		return BENCH_EXIT_USAGE;
	if ((bl.lk = tn_lookup_create(conf, flags, &error)) == NULL) {
		fprintf(stderr, "%s: %s\n", BENCH_NAME, error);
		return BENCH_EXIT_USAGE;
	}
	if (run->opts->mode == BENCH_MEMORY && bench_wait_memory(bl.lk) < 0) {
		tn_lookup_destroy(&bl.lk);
		return BENCH_EXIT_USAGE;
	}
	ret = bench_execute(run, bench_lookup_op, &bl, run->opts->mode != BENCH_LDAP,
			    bench_lookup_snap);
	tn_lookup_destroy(&bl.lk);
	return ret;
}

/* --- raw libldap ------------------------------------------------------------------- */

struct bench_ldap {
	struct bench_run *run;
	LDAP *ld;
	char *tenants_dn;
	char **filters;
	bool tenant_read;
	struct timeval timeout;
};

static char *bench_read_secret(const char *path)
{
	char buf[1024] = "";
	FILE *fp;

	if (path == NULL || *path == '\0')
		return tn_mem_strdup("");
	if ((fp = fopen(path, "r")) == NULL) {
		fprintf(stderr, "%s: %s: %s\n", BENCH_NAME, path, strerror(errno));
		return NULL;
	}
	if (fgets(buf, sizeof(buf), fp) == NULL)
		buf[0] = '\0';
	fclose(fp);
	buf[strcspn(buf, "\r\n")] = '\0';
	return tn_mem_strdup(buf);
}

/* The library's address filter (tn_dir_fetch_address in lib/tn-dir.c),
 * with the tenant clause it adds once it knows the domain's tenant. */
static char *bench_ldap_filter(const char *addr, const char *hint)
{
	const char *at = strrchr(addr, '@');
	const char *dom = at != NULL ? at + 1 : "";
	struct berval av = { strlen(addr), (char *)addr }, dv = { strlen(dom), (char *)dom };
	struct berval ae = { 0, NULL }, de = { 0, NULL };
	char *filter = NULL;

	if (ldap_bv2escaped_filter_value(&av, &ae) == 0 &&
	    ldap_bv2escaped_filter_value(&dv, &de) == 0)
		filter = tn_mem_printf("(|(mail=%s)(tnDomain=%s)%s%s%s)",
				       ae.bv_val, de.bv_val,
				       hint != NULL ? "(tnTenantId=" : "",
				       hint != NULL ? hint : "", hint != NULL ? ")" : "");
	ldap_memfree(ae.bv_val);
	ldap_memfree(de.bv_val);
	return filter;
}

static int bench_ldap_connect(struct bench_ldap *bl, const struct tn_conf *conf)
{
	const char *uri = tn_conf_list(conf, "ldap_uri")[0];
	const char *bind_dn = tn_conf_str(conf, "ldap_bind_dn");
	char *pw = bench_read_secret(tn_conf_str(conf, "ldap_bind_password_file"));
	struct berval cred = { 0, pw };
	int version = LDAP_VERSION3, rc;

	if (pw == NULL || uri == NULL)
		return -1;
	cred.bv_len = strlen(pw);
	rc = ldap_initialize(&bl->ld, uri);
	if (rc == LDAP_SUCCESS) {
		ldap_set_option(bl->ld, LDAP_OPT_PROTOCOL_VERSION, &version);
		ldap_set_option(bl->ld, LDAP_OPT_REFERRALS, LDAP_OPT_OFF);
		rc = ldap_sasl_bind_s(bl->ld, *bind_dn != '\0' ? bind_dn : NULL,
				      LDAP_SASL_SIMPLE, &cred, NULL, NULL, NULL);
	}
	explicit_bzero(pw, cred.bv_len);
	tn_mem_free(&pw);
	if (rc != LDAP_SUCCESS)
		fprintf(stderr, "%s: %s: bind failed: %s\n", BENCH_NAME, uri,
			ldap_err2string(rc));
	return rc == LDAP_SUCCESS ? 0 : -1;
}

/* The tenant entry's DN from an entry below it, or NULL. */
static char *bench_tenant_dn(LDAP *ld, LDAPMessage *e, const char *tenants_dn)
{
	char *dn = ldap_get_dn(ld, e), *p, *ret = NULL;

	if (dn != NULL && (p = strcasestr(dn, "tnTenantId=")) != NULL) {
		p[strcspn(p, ",")] = '\0';
		ret = tn_mem_printf("%s,%s", p, tenants_dn);
	}
	ldap_memfree(dn);
	return ret;
}

static int bench_ldap_search(struct bench_ldap *bl, const char *base, int scope,
			     const char *filter, LDAPMessage **res_r)
{
	int rc = ldap_search_ext_s(bl->ld, base, scope, filter,
				   (char **)bench_ldap_attrs, 0, NULL, NULL,
				   &bl->timeout, BENCH_SIZELIMIT, res_r);

	if (rc != LDAP_SUCCESS) {
		bl->run->last_error = ldap_err2string(rc);
		return -1;
	}
	if (ldap_count_entries(bl->ld, *res_r) < 1) {
		bl->run->last_error = "no entry found";
		return -1;
	}
	return 0;
}

static enum bench_rc bench_ldap_tenant(struct bench_ldap *bl, LDAPMessage *res)
{
	char *dn = bench_tenant_dn(bl->ld, ldap_first_entry(bl->ld, res), bl->tenants_dn);
	LDAPMessage *tres = NULL;
	int ret;

	if (dn == NULL) {
		bl->run->last_error = "entry outside a tenant";
		return BENCH_ERROR;
	}
	ret = bench_ldap_search(bl, dn, LDAP_SCOPE_BASE, "(objectClass=tnTenant)", &tres);
	ldap_msgfree(tres);
	tn_mem_free(&dn);
	return ret < 0 ? BENCH_ERROR : BENCH_OK;
}

static enum bench_rc bench_ldap_op(void *ctx, size_t key)
{
	struct bench_ldap *bl = ctx;
	LDAPMessage *res = NULL;
	enum bench_rc ret = BENCH_ERROR;

	if (bench_ldap_search(bl, bl->tenants_dn, LDAP_SCOPE_SUBTREE,
			      bl->filters[key], &res) == 0)
		ret = bl->tenant_read ? bench_ldap_tenant(bl, res) : BENCH_OK;
	ldap_msgfree(res);
	return ret;
}

static int bench_ldap_filters(struct bench_ldap *bl)
{
	bl->filters = tn_mem_calloc(bl->run->naddrs, sizeof(char *));
	for (size_t i = 0; i < bl->run->naddrs; i++) {
		if ((bl->filters[i] = bench_ldap_filter(bl->run->addrs[i],
							bl->run->opts->tenant_hint)) == NULL) {
			fprintf(stderr, "%s: cannot escape %s\n", BENCH_NAME, bl->run->addrs[i]);
			return -1;
		}
	}
	return 0;
}

static void bench_ldap_free(struct bench_ldap *bl)
{
	for (size_t i = 0; bl->filters != NULL && i < bl->run->naddrs; i++)
		tn_mem_free(&bl->filters[i]);
	tn_mem_free(&bl->filters);
	tn_mem_free(&bl->tenants_dn);
	if (bl->ld != NULL)
		ldap_unbind_ext_s(bl->ld, NULL, NULL);
}

static int bench_raw_ldap_mode(struct bench_run *run, const struct tn_conf *conf)
{
	int64_t ms = tn_conf_time_ms(conf, "ldap_timeout");
	struct bench_ldap bl = {
		.run = run,
		.tenant_read = run->opts->tenant_read,
		.timeout = { (time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000 },
	};
	int ret = BENCH_EXIT_USAGE;

	bl.tenants_dn = tn_mem_printf("%s,%s", tn_conf_str(conf, "ldap_tenants_rdn"),
				      tn_conf_str(conf, "ldap_base"));
	if (bench_ldap_filters(&bl) == 0 && bench_ldap_connect(&bl, conf) == 0)
		ret = bench_execute(run, bench_ldap_op, &bl, false, NULL);
	bench_ldap_free(&bl);
	return ret;
}

/* --- raw hiredis ----------------------------------------------------------------------- */

struct bench_redis {
	struct bench_run *run;
	redisContext *rc;
	char **keys;
};

static int bench_redis_ok(struct bench_redis *br, redisReply *reply, int type)
{
	int ok = reply != NULL && reply->type == type;

	if (reply == NULL)
		br->run->last_error = br->rc->errstr;
	else if (reply->type == REDIS_REPLY_NIL)
		br->run->last_error = "key not in Redis (run the redis mode first)";
	else if (!ok)
		br->run->last_error = "unexpected reply";
	freeReplyObject(reply);
	return ok ? 0 : -1;
}

static enum bench_rc bench_redis_op(void *ctx, size_t key)
{
	struct bench_redis *br = ctx;
	const char *argv[2] = { "GET", br->keys[key] };
	size_t lens[2] = { 3, strlen(br->keys[key]) };

	return bench_redis_ok(br, redisCommandArgv(br->rc, 2, argv, lens),
			      REDIS_REPLY_STRING) == 0 ? BENCH_OK : BENCH_ERROR;
}

static redisContext *bench_redis_open(const struct tn_conf *conf)
{
	struct timeval tv = { 2, 0 };
	const char *sock = tn_conf_str(conf, "redis_socket");
	redisContext *rc = *sock != '\0' ? redisConnectUnixWithTimeout(sock, tv) :
		redisConnectWithTimeout(tn_conf_str(conf, "redis_host"),
					(int)tn_conf_int(conf, "redis_port"), tv);

	if (rc == NULL || rc->err != 0) {
		fprintf(stderr, "%s: redis: %s\n", BENCH_NAME,
			rc != NULL ? rc->errstr : "out of memory");
		redisFree(rc);
		return NULL;
	}
	return rc;
}

/* AUTH and SELECT as configured. */
static int bench_redis_setup(struct bench_redis *br, const struct tn_conf *conf)
{
	char *pw = bench_read_secret(tn_conf_str(conf, "redis_password_file"));
	int ret = pw != NULL ? 0 : -1;

	if (ret == 0 && *pw != '\0')
		ret = bench_redis_ok(br, redisCommand(br->rc, "AUTH %s", pw),
				     REDIS_REPLY_STATUS);
	if (ret == 0 && tn_conf_int(conf, "redis_db") != 0)
		ret = bench_redis_ok(br, redisCommand(br->rc, "SELECT %d",
						      (int)tn_conf_int(conf, "redis_db")),
				     REDIS_REPLY_STATUS);
	if (pw != NULL)
		explicit_bzero(pw, strlen(pw));
	tn_mem_free(&pw);
	if (ret < 0)
		fprintf(stderr, "%s: redis setup: %s\n", BENCH_NAME, br->run->last_error);
	return ret;
}

static int bench_raw_redis_mode(struct bench_run *run, const struct tn_conf *conf)
{
	struct bench_redis br = { .run = run };
	const char *prefix = tn_conf_str(conf, "redis_key_prefix");
	int ret = BENCH_EXIT_USAGE;

	br.keys = tn_mem_calloc(run->naddrs, sizeof(char *));
	for (size_t i = 0; i < run->naddrs; i++)
		br.keys[i] = tn_mem_printf("%sadr:%s", prefix, run->addrs[i]);
	if ((br.rc = bench_redis_open(conf)) != NULL && bench_redis_setup(&br, conf) == 0)
		ret = bench_execute(run, bench_redis_op, &br, false, NULL);
	for (size_t i = 0; i < run->naddrs; i++)
		tn_mem_free(&br.keys[i]);
	tn_mem_free(&br.keys);
	redisFree(br.rc);
	return ret;
}

/* --- command line ---------------------------------------------------------------------- */

static void bench_usage(void)
{
	fprintf(stderr, "usage: %s -c config [-o name=value]... "
		"memory|redis|ldap|raw-ldap|raw-redis-get -n count\n"
		"\t[-k keys [-K space]] [-w warmup] [-s seed] [-T] [-H tenant] address-or-template\n",
		BENCH_NAME);
}

static int bench_number(const char *text, long min, long *value_r)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(text, &end, 10);
	if (errno != 0 || end == text || *end != '\0' || v < min) {
		fprintf(stderr, "%s: bad number '%s' (at least %ld)\n", BENCH_NAME, text, min);
		return -1;
	}
	*value_r = v;
	return 0;
}

static int bench_override(struct tn_conf *conf, char *arg)
{
	char *eq = strchr(arg, '=');
	const char *error;

	if (eq == NULL) {
		fprintf(stderr, "%s: -o %s: expected name=value\n", BENCH_NAME, arg);
		return -1;
	}
	*eq = '\0';
	if (tn_conf_set(conf, arg, eq + 1, &error) < 0) {
		fprintf(stderr, "%s: %s\n", BENCH_NAME, error);
		return -1;
	}
	return 0;
}

static int bench_option(int c, struct tn_conf *conf, struct bench_opts *o)
{
	const char *error;
	long seed;

	switch (c) {
	case 'c':
		if (tn_conf_load_file(conf, optarg, &error) == 0)
			return 0;
		fprintf(stderr, "%s: %s\n", BENCH_NAME, error);
		return -1;
	case 'o':
		return bench_override(conf, optarg);
	case 'n':
		return bench_number(optarg, 1, &o->n);
	case 'k':
		return bench_number(optarg, 1, &o->keys);
	case 'K':
		return bench_number(optarg, 1, &o->space);
	case 'w':
		return bench_number(optarg, 0, &o->warmup);
	case 's':
		if (bench_number(optarg, 1, &seed) < 0)
			return -1;
		o->seed = (uint64_t)seed;
		return 0;
	case 'T':
		o->tenant_read = true;
		return 0;
	case 'H':
		o->tenant_hint = optarg;
		return 0;
	default:
		return -1;
	}
}

static int bench_mode_parse(const char *name, enum bench_mode *mode_r)
{
	for (int i = 0; bench_mode_names[i] != NULL; i++) {
		if (strcmp(name, bench_mode_names[i]) == 0) {
			*mode_r = (enum bench_mode)i;
			return 0;
		}
	}
	fprintf(stderr, "%s: unknown mode '%s'\n", BENCH_NAME, name);
	return -1;
}

static void bench_defaults(struct bench_opts *o)
{
	if (o->keys > 0 && o->space < o->keys)
		o->space = o->keys;
	if (o->warmup < 0) {
		o->warmup = o->n / 10;
		o->warmup = o->warmup < 100 ? 100 : o->warmup > 10000 ? 10000 : o->warmup;
	}
}

/* Options may come before and after the mode (GNU getopt permutes). */
static int bench_parse(int argc, char **argv, struct tn_conf *conf, struct bench_opts *o)
{
	bool have_conf = false;
	int c;

	while ((c = getopt(argc, argv, "c:o:n:k:K:w:s:TH:")) != -1) {
		have_conf |= c == 'c';
		if (bench_option(c, conf, o) < 0)
			return -1;
	}
	if (!have_conf || o->n == 0 || optind + 2 != argc ||
	    bench_mode_parse(argv[optind], &o->mode) < 0) {
		bench_usage();
		return -1;
	}
	o->target = argv[optind + 1];
	bench_defaults(o);
	return 0;
}

static int bench_dispatch(struct bench_run *run, struct tn_conf *conf)
{
	switch (run->opts->mode) {
	case BENCH_RAW_LDAP:
		return bench_raw_ldap_mode(run, conf);
	case BENCH_RAW_REDIS_GET:
		return bench_raw_redis_mode(run, conf);
	default:
		return bench_lookup_mode(run, conf);
	}
}

int main(int argc, char **argv)
{
	static const struct tn_conf_param *const tables[] = { tn_lookup_params, NULL };
	struct tn_conf *conf = tn_conf_create(BENCH_NAME, tables);
	struct bench_opts opts = { .warmup = -1, .seed = 0x9e3779b97f4a7c15ULL };
	struct bench_run run = { .opts = &opts };
	int ret = BENCH_EXIT_USAGE;

	tn_log_init(BENCH_NAME, TN_LOG_TO_STDERR, LOG_MAIL);
	if (bench_parse(argc, argv, conf, &opts) == 0) {
		run.rng = opts.seed;
		bench_make_keys(&run);
		ret = bench_dispatch(&run, conf);
		bench_free_keys(&run);
	}
	tn_conf_destroy(&conf);
	return ret;
}
