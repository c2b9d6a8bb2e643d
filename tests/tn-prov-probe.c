/*++
 * NAME
 *	tn-prov-probe 1
 * SUMMARY
 *	drive the provisioning library (tn-prov.h) from integration tests
 * SYNOPSIS
 *	tn-prov-probe -c config [-o name=value]... REQUEST...
 *	tn-prov-probe -c config [-o name=value]... serve
 * DESCRIPTION
 *	A test tool, not installed. Each REQUEST is a JSON object; the
 *	answer to each is one JSON line on stdout: tn_prov_result_json()
 *	plus "ms", the time the call took. "serve" reads one request per
 *	line from stdin (one process, one connection pool) until EOF.
 *
 *	A request:
 *	    {"op": "create|get|list|modify|suspend|resume|delete|purge|recount",
 *	     "kind": "tenant|domain|mailbox|alias",
 *	     "key": "...",            get, modify, status and purge
 *	     "data": {...},           create, modify
 *	     "query": {"tenant","domain","status","cursor","limit"},  list
 *	     "reason": "...",         suspend, resume, delete
 *	     "actor": {"kind","id"},  default {"admin","tn-prov-probe"}
 *	     "scope": "tenant",       a tenant-scoped caller
 *	     "if_match": "etag",
 *	     "deadline_ms": N}        from the call; default prov_timeout
 *	A request that is not such an object answers {"status":"usage"}.
 *	Strings may hold NUL (\u0000), so that the library's checks see it.
 *
 *	Configuration: the lookup (ldap_*, redis_*), outbox_* and prov_*
 *	parameters of tenantmail.conf.
 *--*/
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <unistd.h>

#include <jansson.h>

#include "tn-conf.h"
#include "tn-log.h"
#include "tn-lookup.h"
#include "tn-mem.h"
#include "tn-outbox.h"
#include "tn-prov.h"

struct probe {
	struct tn_prov *prov;
};

static const char *probe_str(json_t *req, const char *name)
{
	return json_string_value(json_object_get(req, name));
}

static void probe_ctx(json_t *req, struct tn_prov_ctx *ctx)
{
	json_t *actor = json_object_get(req, "actor");
	json_int_t ms = json_integer_value(json_object_get(req, "deadline_ms"));

	memset(ctx, 0, sizeof(*ctx));
	ctx->actor_kind = actor != NULL ? probe_str(actor, "kind") : "admin";
	ctx->actor_id = actor != NULL ? probe_str(actor, "id") : "tn-prov-probe";
	ctx->tenant_scope = probe_str(req, "scope");
	ctx->if_match = probe_str(req, "if_match");
	ctx->deadline = ms > 0 ? tn_time_now_ms() + ms : 0;
}

static void probe_query(json_t *req, struct tn_prov_query *q)
{
	json_t *o = json_object_get(req, "query");

	memset(q, 0, sizeof(*q));
	q->tenant = probe_str(o, "tenant");
	q->domain = probe_str(o, "domain");
	q->status = probe_str(o, "status");
	q->cursor = probe_str(o, "cursor");
	q->limit = (unsigned)json_integer_value(json_object_get(o, "limit"));
}

static const struct {
	const char *op;
	enum tn_status to;
} probe_status_ops[] = {
	{ "suspend", TN_STATUS_SUSPENDED },
	{ "resume", TN_STATUS_ACTIVE },
	{ "delete", TN_STATUS_DELETED },
};

/* 0 when the request was understood */
static int probe_call(struct probe *pr, json_t *req, struct tn_prov_result *res)
{
	const char *op = probe_str(req, "op"), *key = probe_str(req, "key");
	struct tn_prov_query q;
	struct tn_prov_ctx ctx;
	enum tn_prov_kind kind;

	if (op == NULL || probe_str(req, "kind") == NULL ||
	    tn_prov_kind_parse(probe_str(req, "kind"), &kind) < 0)
		return -1;
	probe_ctx(req, &ctx);
	if (strcmp(op, "create") == 0)
		tn_prov_create_object(pr->prov, &ctx, kind, json_object_get(req, "data"), res);
	else if (strcmp(op, "get") == 0)
		tn_prov_get(pr->prov, &ctx, kind, key, res);
	else if (strcmp(op, "modify") == 0)
		tn_prov_modify(pr->prov, &ctx, kind, key, json_object_get(req, "data"), res);
	else if (strcmp(op, "purge") == 0)
		tn_prov_purge(pr->prov, &ctx, kind, key, res);
	else if (strcmp(op, "recount") == 0)
		tn_prov_recount(pr->prov, &ctx, key, res);
	else if (strcmp(op, "list") == 0) {
		probe_query(req, &q);
		tn_prov_list(pr->prov, &ctx, kind, &q, res);
	} else {
		for (size_t i = 0; i < sizeof(probe_status_ops) / sizeof(probe_status_ops[0]); i++) {
			if (strcmp(op, probe_status_ops[i].op) == 0) {
				tn_prov_set_status(pr->prov, &ctx, kind, key, probe_status_ops[i].to,
						   probe_str(req, "reason"), res);
				return 0;
			}
		}
		return -1;
	}
	return 0;
}

static void probe_request(struct probe *pr, const char *text)
{
	json_t *req = json_loads(text, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, NULL), *out;
	struct tn_prov_result res = { 0 };
	int64_t t0 = tn_time_now_us();
	char *line;

	if (!json_is_object(req) || probe_call(pr, req, &res) < 0)
		out = json_pack("{s:s}", "status", "usage");
	else
		out = tn_prov_result_json(&res);
	json_object_set_new(out, "ms", json_real((double)(tn_time_now_us() - t0) / 1000.0));
	line = json_dumps(out, JSON_COMPACT);
	printf("%s\n", line);
	fflush(stdout);
	free(line);
	json_decref(out);
	json_decref(req);
	tn_prov_result_clear(&res);
}

static void probe_serve(struct probe *pr)
{
	char *line = NULL;
	size_t size = 0;
	ssize_t n;

	printf("{\"ready\":true}\n");
	fflush(stdout);
	while ((n = getline(&line, &size, stdin)) > 0) {
		if (line[n - 1] == '\n')
			line[n - 1] = '\0';
		if (*line != '\0')
			probe_request(pr, line);
	}
	free(line);
}

static struct tn_conf *probe_conf(int argc, char **argv, int *next_r)
{
	static const struct tn_conf_param *const tables[] = {
		tn_lookup_params, tn_outbox_params, tn_prov_params, NULL
	};
	struct tn_conf *conf = tn_conf_create("tn-prov-probe", tables);
	const char *error;
	int c;

	while ((c = getopt(argc, argv, "+c:o:")) != -1) {
		char *eq = c == 'o' ? strchr(optarg, '=') : NULL;
		int ret = -1;

		if (c == 'c') {
			ret = tn_conf_load_file(conf, optarg, &error);
		} else if (eq != NULL) {
			*eq = '\0';
			ret = tn_conf_set(conf, optarg, eq + 1, &error);
		} else {
			error = "usage: tn-prov-probe -c config [-o name=value] REQUEST...|serve";
		}
		if (ret < 0) {
			fprintf(stderr, "tn-prov-probe: %s\n", error);
			tn_conf_destroy(&conf);
			return NULL;
		}
	}
	*next_r = optind;
	return conf;
}

int main(int argc, char **argv)
{
	struct probe pr = { NULL };
	struct tn_outbox *ob = NULL;
	struct tn_lookup *lk = NULL;
	struct tn_conf *conf;
	const char *error = NULL;
	int i, ret = 0;

	signal(SIGPIPE, SIG_IGN);
	tn_log_init("tn-prov-probe", TN_LOG_TO_STDERR, LOG_MAIL);
	if ((conf = probe_conf(argc, argv, &i)) == NULL || i >= argc)
		return 64;
	if ((lk = tn_lookup_create(conf, TN_LOOKUP_NO_MEMORY_CACHE, &error)) != NULL) {
		ob = tn_outbox_create_conf(conf);
		pr.prov = tn_prov_create(conf, lk, ob, &error);
	}
	if (pr.prov == NULL) {
		fprintf(stderr, "tn-prov-probe: %s\n", error);
		ret = 78;
	} else if (strcmp(argv[i], "serve") == 0) {
		probe_serve(&pr);
	} else {
		for (; i < argc; i++)
			probe_request(&pr, argv[i]);
	}
	tn_prov_destroy(&pr.prov);
	tn_outbox_destroy(&ob);
	tn_lookup_destroy(&lk);
	tn_conf_destroy(&conf);
	return ret;
}
