/*++
 * NAME
 *	tnctl 1
 * SUMMARY
 *	tenantmail administration command
 * SYNOPSIS
 *	tnctl [-c config] [-o name=value]... command [arguments]
 * DESCRIPTION
 *	One entry point for operators and scripts. Commands:
 *
 *	lookup [--json] [--domain|--tenant] NAME
 *		Resolve NAME exactly as every tenantmail component does and
 *		show the account and which layer answered (memory, redis,
 *		ldap). Exit 0 found, 1 not found, 75 temporary failure.
 *	cache invalidate --address A | --domain D | --tenant T
 *		Drop the cached object everywhere (Redis and every process's
 *		memory, through the invalidation channel).
 *	events emit|list|show|replay|stats|enable|verify ...
 *		The billing events: append one to the outbox, inspect and
 *		repair tn-hookd's spool, check a captured webhook's
 *		signature (tnctl-events.c, tnctl-verify.c, docs/hookd.md).
 *	tenant|domain|mailbox|alias create|get|list|update|suspend|resume|
 *	restore|delete|purge ...; tenant recount ID
 *		Provisioning through tn-provisiond's REST API (tnctl-prov.c,
 *		tnctl-api.c).
 *	import [options] FILE
 *		Many creates from CSV or NDJSON, in parallel, resumable
 *		(tnctl-import.c).
 *	sync --kind K [scope] [options] FEED
 *		Reconcile the directory with an upstream feed (CSV, NDJSON,
 *		LDIF): the plan, then with --apply creates, updates,
 *		suspends, resumes (tnctl-sync.c).
 *	usage reconcile --tenant T [--doveadm CMD]... [--check] [--json]
 *		Set a tenant's storage usage counters in Redis from
 *		Dovecot's own figures (tnctl-usage.c, docs/dovecot.md).
 *	config [-n | -d | -a | --doc]
 *		Print parameter settings: changed ones (-n, default), the
 *		defaults (-d), all effective values (-a), or the parameter
 *		table (--doc).
 *
 *	Exit codes follow sysexits(3): 64 usage, 65 invalid data,
 *	75 temporary failure, 78 configuration error.
 * CONFIGURATION
 *	The lookup, outbox and tn-hookd parameters of tenantmail.conf(5)
 *	(tnctl reads hookd_endpoints_dir; the others are accepted so that
 *	one file serves every program), read from the file
 *	given with -c, else $TENANTMAIL_CONF, else
 *	/etc/tenantmail/tenantmail.conf; the [tnctl] section applies.
 *--*/
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>
#include <syslog.h>
#include <unistd.h>

#include <jansson.h>

#include "tn-conf.h"
#include "tn-conf-shared.h"
#include "tn-escape.h"
#include "tn-hook-spool.h"
#include "tn-log.h"
#include "tn-lookup.h"
#include "tn-mem.h"
#include "tn-outbox.h"
#include "tn-prov.h"
#include "tnctl-api.h"
#include "tnctl-prov.h"
#include "tnctl.h"

#define TNCTL_DEFAULT_CONF "/etc/tenantmail/tenantmail.conf"

static const struct tn_conf_param *const tnctl_tables[] = {
	TN_CONF_SHARED_TABLES, tnctl_api_params, NULL
};

/* --- lookup ----------------------------------------------------------------- */

static void tnctl_print_size(const char *label, struct tn_limit l, const char *unit)
{
	static const char *const suffix[] = { "B", "KiB", "MiB", "GiB", "TiB" };
	double v = (double)l.value;
	size_t i = 0;

	if (l.value == 0) {
		printf("%-18s unlimited (%s)\n", label, tn_level_name(l.from));
		return;
	}
	if (unit != NULL) {
		printf("%-18s %lld %s (%s)\n", label, (long long)l.value, unit,
		       tn_level_name(l.from));
		return;
	}
	while (v >= 1024 && i < 4) {
		v /= 1024;
		i++;
	}
	printf("%-18s %.1f %s (%s)\n", label, v, suffix[i], tn_level_name(l.from));
}

static void tnctl_print_account(const struct tn_account *a)
{
	if (a->address != NULL)
		printf("%-18s %s\n", "address:", a->address);
	printf("%-18s %s\n", "kind:", tn_account_kind_name(a->kind));
	printf("%-18s %s\n", "tenant:", a->tenant);
	if (a->domain != NULL)
		printf("%-18s %s\n", "domain:", a->domain);
	printf("%-18s %s", "status:", tn_status_name(a->status));
	if (a->status != TN_STATUS_ACTIVE)
		printf(" (%s: %s)", tn_level_name(a->status_from),
		       a->status_reason != NULL ? a->status_reason : "no reason given");
	printf("\n");
	if (a->plan != NULL)
		printf("%-18s %s\n", "plan:", a->plan);
	if (a->kind == TN_ACCOUNT_MAILBOX)
		tnctl_print_size("quota:", a->quota, NULL);
	tnctl_print_size("tenant storage:", a->tenant_storage, NULL);
	tnctl_print_size("max message size:", a->max_msg_size, NULL);
	if (a->kind == TN_ACCOUNT_MAILBOX)
		tnctl_print_size("send rate:", a->send_rate, "messages/hour");
	tnctl_print_size("tenant send rate:", a->tenant_send_rate, "messages/hour");
	if (a->host != NULL)
		printf("%-18s %s\n", "host:", a->host);
	if (a->pool != NULL)
		printf("%-18s %s (%s)\n", "pool:", a->pool, tn_level_name(a->pool_from));
	if (a->kind == TN_ACCOUNT_ALIAS) {
		printf("%-18s", "targets:");
		for (size_t i = 0; i < a->ntargets; i++)
			printf(" %s", a->targets[i]);
		printf("%s%s\n", a->alias_loop ? " (loop or depth limit met)" : "",
		       a->targets_truncated ? " (truncated)" : "");
	}
}

static void tnctl_print_usage_line(struct tn_lookup *lk, const struct tn_account *a)
{
	int64_t bytes, messages;
	const char *error;

	if (a->kind != TN_ACCOUNT_MAILBOX ||
	    tn_lookup_usage(lk, "mbx", a->address, &bytes, &messages, &error) < 0)
		return;
	printf("%-18s %lld bytes in %lld messages%s\n", "usage:", (long long)bytes,
	       (long long)messages,
	       a->quota.value > 0 && bytes >= a->quota.value ? " (OVER QUOTA)" : "");
}

static json_t *tnctl_usage_json(struct tn_lookup *lk, const struct tn_account *a)
{
	int64_t bytes, messages;
	const char *error;

	if (a->kind != TN_ACCOUNT_MAILBOX ||
	    tn_lookup_usage(lk, "mbx", a->address, &bytes, &messages, &error) < 0)
		return json_null();
	return json_pack("{s:I,s:I}", "bytes", (json_int_t)bytes, "messages",
			 (json_int_t)messages);
}

static int tnctl_lookup_output(struct tn_lookup *lk, const char *name, enum tn_result rc,
			       struct tn_account *acct, const char *error, bool json)
{
	static const char *const results[] = { "tempfail", "notfound", "found" };
	char safe[TN_LOG_VALUE_MAX];
	json_t *out;
	char *text;

	/* the query is untrusted: it may be any bytes, and JSON wants UTF-8 */
	tn_log_sanitize(safe, sizeof(safe), name, strlen(name));
	if (json) {
		out = json_pack("{s:s,s:s}", "query", safe, "result", results[rc + 1]);
		if (acct != NULL) {
			text = tn_account_to_json(acct, false);
			json_object_set_new(out, "account", json_loads(text, 0, NULL));
			free(text);
			json_object_set_new(out, "usage", tnctl_usage_json(lk, acct));
		} else {
			json_object_set_new(out, "error", json_string(error != NULL ? error : ""));
		}
		text = json_dumps(out, JSON_INDENT(2));
		printf("%s\n", text);
		free(text);
		json_decref(out);
	} else if (rc == TN_FOUND) {
		tnctl_print_account(acct);
		tnctl_print_usage_line(lk, acct);
		printf("%-18s %s\n", "answered by:", tn_layer_name(acct->layer));
	} else {
		printf("%s: %s (%s)\n", safe, rc == TN_NOTFOUND ? "not found" :
		       "TEMPORARY FAILURE", error != NULL ? error : "");
	}
	return rc == TN_FOUND ? 0 : rc == TN_NOTFOUND ? 1 : EX_TEMPFAIL;
}

static int tnctl_lookup(struct tnctl *ctl, int argc, char **argv)
{
	enum { BY_ADDRESS, BY_DOMAIN, BY_TENANT } by = BY_ADDRESS;
	static const struct option opts[] = {
		{ "json", no_argument, NULL, 'j' }, { "domain", no_argument, NULL, 'D' },
		{ "tenant", no_argument, NULL, 'T' }, { NULL, 0, NULL, 0 },
	};
	struct tn_account *acct = NULL;
	const char *error = NULL;
	struct tn_lookup *lk;
	bool json = false;
	enum tn_result rc;
	int c, ret;

	while ((c = getopt_long(argc, argv, "+jDT", opts, NULL)) != -1) {
		if (c == 'j')
			json = true;
		else if (c == 'D' || c == 'T')
			by = c == 'D' ? BY_DOMAIN : BY_TENANT;
		else
			return EX_USAGE;
	}
	if (optind != argc - 1)
		return EX_USAGE;
	if ((lk = tn_lookup_create(ctl->conf, TN_LOOKUP_NO_MEMORY_CACHE, &error)) == NULL) {
		fprintf(stderr, "tnctl: %s\n", error);
		return EX_CONFIG;
	}
	rc = by == BY_DOMAIN ? tn_lookup_resolve_domain(lk, argv[optind], 0, &acct, &error) :
		by == BY_TENANT ? tn_lookup_resolve_tenant(lk, argv[optind], 0, &acct, &error) :
		tn_lookup_resolve(lk, argv[optind], 0, &acct, &error);
	ret = tnctl_lookup_output(lk, argv[optind], rc, acct, error, json);
	tn_account_free(&acct);
	tn_lookup_destroy(&lk);
	return ret;
}

/* Is this a syntactically valid address (a), domain (d) or tenant id (t)? */
static bool tnctl_valid_name(int what, const char *name)
{
	const char *why;
	char *norm = NULL;
	bool ok;

	if (what == 'a')
		ok = tn_address_normalize(name, strlen(name), &norm, &why) == 0;
	else if (what == 'd')
		ok = tn_domain_normalize(name, strlen(name), &norm, &why) == 0;
	else
		ok = *name != '\0' && strlen(name) <= 63 &&
			strspn(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
			       "0123456789-_.") == strlen(name);
	tn_mem_free(&norm);
	return ok;
}

/* --- cache invalidate ------------------------------------------------------------ */

static int tnctl_cache(struct tnctl *ctl, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "address", required_argument, NULL, 'a' },
		{ "domain", required_argument, NULL, 'd' },
		{ "tenant", required_argument, NULL, 't' }, { NULL, 0, NULL, 0 },
	};
	const char *error = NULL;
	struct tn_lookup *lk;
	bool invalid = false;
	int c, ret = 0;

	if (argc < 2 || strcmp(argv[1], "invalidate") != 0)
		return EX_USAGE;
	if ((lk = tn_lookup_create(ctl->conf, TN_LOOKUP_NO_MEMORY_CACHE, &error)) == NULL) {
		fprintf(stderr, "tnctl: %s\n", error);
		return EX_CONFIG;
	}
	optind = 2;
	while (ret == 0 && (c = getopt_long(argc, argv, "+a:d:t:", opts, NULL)) != -1) {
		if (c != 'a' && c != 'd' && c != 't') {
			ret = -2;
			break;
		}
		invalid = !tnctl_valid_name(c, optarg);
		if (invalid) {
			error = "invalid address, domain or tenant id";
			ret = -1;
		} else if (c == 'a') {
			ret = tn_lookup_invalidate_address(lk, optarg, &error);
		} else if (c == 'd') {
			ret = tn_lookup_invalidate_domain(lk, optarg, &error);
		} else {
			ret = tn_lookup_invalidate_tenant(lk, optarg, &error);
		}
	}
	tn_lookup_destroy(&lk);
	if (ret == -2 || optind != argc || argc == 2)
		return EX_USAGE;
	if (ret < 0) {
		fprintf(stderr, "tnctl: %s\n", error);
		return invalid ? EX_DATAERR : EX_TEMPFAIL;
	}
	if (!tn_conf_bool(ctl->conf, "redis_enabled"))
		fprintf(stderr, "tnctl: redis_enabled = no: nothing shared to invalidate\n");
	return 0;
}

/* --- config ----------------------------------------------------------------------- */

static int tnctl_config(struct tnctl *ctl, int argc, char **argv)
{
	const char *mode = argc > 1 ? argv[1] : "-n";

	if (argc > 2)
		return EX_USAGE;
	if (strcmp(mode, "-n") == 0)
		tn_conf_dump(ctl->conf, stdout, TN_CONF_DUMP_CHANGED);
	else if (strcmp(mode, "-d") == 0)
		tn_conf_dump(ctl->conf, stdout, TN_CONF_DUMP_DEFAULTS);
	else if (strcmp(mode, "-a") == 0)
		tn_conf_dump(ctl->conf, stdout, TN_CONF_DUMP_ALL);
	else if (strcmp(mode, "--doc") == 0)
		tn_conf_dump_doc(ctl->conf, stdout);
	else
		return EX_USAGE;
	return 0;
}

static const struct tnctl_command tnctl_commands[] = {
	{ "lookup", tnctl_lookup, "lookup [--json] [--domain|--tenant] NAME", NULL },
	{ "cache", tnctl_cache, "cache invalidate --address A | --domain D | --tenant T", NULL },
	{ "events", NULL, NULL, tnctl_events_commands },
	{ "usage", NULL, NULL, tnctl_usage_commands },
	{ "tenant", tnctl_prov_kind, TNCTL_PROV_TENANT_USAGE, NULL },
	{ "domain", tnctl_prov_kind, TNCTL_PROV_USAGE("domain", "[DOMAIN]"), NULL },
	{ "mailbox", tnctl_prov_kind, TNCTL_PROV_USAGE("mailbox", "[ADDRESS]"), NULL },
	{ "alias", tnctl_prov_kind, TNCTL_PROV_USAGE("alias", "[ADDRESS]"), NULL },
	{ "import", tnctl_import, TNCTL_IMPORT_USAGE, NULL },
	{ "sync", tnctl_sync, TNCTL_SYNC_USAGE, NULL },
	{ "config", tnctl_config, "config [-n | -d | -a | --doc]", NULL },
	{ NULL, NULL, NULL, NULL },
};

/* One "  tnctl <prefix><usage>" line per command of table, subcommands
 * included. */
static void tnctl_print_usages(const struct tnctl_command *table, const char *prefix)
{
	char *sub_prefix;

	for (const struct tnctl_command *cmd = table; cmd->name != NULL; cmd++) {
		if (cmd->sub == NULL) {
			fprintf(stderr, "  tnctl %s%s\n", prefix, cmd->usage);
			continue;
		}
		sub_prefix = tn_mem_printf("%s%s ", prefix, cmd->name);
		tnctl_print_usages(cmd->sub, sub_prefix);
		tn_mem_free(&sub_prefix);
	}
}

static int tnctl_usage(void)
{
	fprintf(stderr, "usage: tnctl [-c config] [-o name=value]... [-v] command [args]\ncommands:\n");
	tnctl_print_usages(tnctl_commands, "");
	return EX_USAGE;
}

static int tnctl_run(struct tnctl *ctl, const struct tnctl_command *cmd, const char *prefix,
		     int argc, char **argv)
{
	int ret;

	/* subcommands permute their arguments ("show ID --json"): optind 0
	 * makes glibc's getopt start afresh and read the optstring's
	 * ordering again; the top-level commands keep "+" */
	optind = *prefix != '\0' ? 0 : 1;
	ret = cmd->run(ctl, argc, argv);
	if (ret == EX_USAGE)
		fprintf(stderr, "usage: tnctl %s%s\n", prefix, cmd->usage);
	return ret;
}

/* Run the command argv[0] of table; prefix: the words before it. */
static int tnctl_dispatch(struct tnctl *ctl, const struct tnctl_command *table,
			  const char *prefix, int argc, char **argv)
{
	char *sub_prefix;
	int ret;

	for (const struct tnctl_command *cmd = table; argc > 0 && cmd->name != NULL; cmd++) {
		if (strcmp(argv[0], cmd->name) != 0)
			continue;
		if (cmd->sub == NULL)
			return tnctl_run(ctl, cmd, prefix, argc, argv);
		sub_prefix = tn_mem_printf("%s%s ", prefix, cmd->name);
		ret = tnctl_dispatch(ctl, cmd->sub, sub_prefix, argc - 1, argv + 1);
		tn_mem_free(&sub_prefix);
		return ret;
	}
	if (argc > 0)
		fprintf(stderr, "tnctl: unknown command '%s%s'\n", prefix, argv[0]);
	else
		fprintf(stderr, "tnctl: %.*s: which subcommand?\n", (int)strlen(prefix) - 1,
			prefix);
	if (*prefix == '\0')
		return tnctl_usage();
	fprintf(stderr, "usage:\n");
	tnctl_print_usages(table, prefix);
	return EX_USAGE;
}

static int tnctl_load_conf(struct tnctl *ctl, bool explicit_path)
{
	const char *error;

	ctl->conf = tn_conf_create("tnctl", tnctl_tables);
	if (!explicit_path && access(ctl->conf_path, F_OK) != 0)
		return 0;	/* no file: built-in defaults */
	if (tn_conf_load_file(ctl->conf, ctl->conf_path, &error) < 0) {
		fprintf(stderr, "tnctl: %s\n", error);
		return -1;
	}
	return 0;
}

static int tnctl_apply_override(struct tnctl *ctl, const char *arg)
{
	const char *eq = strchr(arg, '='), *error;
	char *name;
	int ret;

	if (eq == NULL) {
		fprintf(stderr, "tnctl: -o wants name=value\n");
		return -1;
	}
	name = tn_mem_strndup(arg, (size_t)(eq - arg));
	ret = tn_conf_set(ctl->conf, name, eq + 1, &error);
	if (ret < 0)
		fprintf(stderr, "tnctl: -o %s: %s\n", name, error);
	tn_mem_free(&name);
	return ret;
}

int main(int argc, char **argv)
{
	struct tnctl ctl = { NULL, getenv("TENANTMAIL_CONF") };
	char *overrides[64];
	size_t noverrides = 0;
	bool explicit_path = ctl.conf_path != NULL;
	int c, ret = EX_USAGE;

	signal(SIGPIPE, SIG_IGN);
	tn_log_init("tnctl", TN_LOG_TO_STDERR, LOG_MAIL);
	tn_log_set_level(TN_LOG_ERROR);
	while ((c = getopt(argc, argv, "+c:o:v")) != -1) {
		if (c == 'c') {
			ctl.conf_path = optarg;
			explicit_path = true;
		} else if (c == 'o') {
			if (noverrides == 64) {
				fprintf(stderr, "tnctl: at most 64 -o options\n");
				return EX_USAGE;
			}
			overrides[noverrides++] = optarg;
		} else if (c == 'v') {
			tn_log_set_level(TN_LOG_DEBUG);
		} else {
			return tnctl_usage();
		}
	}
	if (ctl.conf_path == NULL)
		ctl.conf_path = TNCTL_DEFAULT_CONF;
	if (optind >= argc)
		return tnctl_usage();
	if (tnctl_load_conf(&ctl, explicit_path) < 0) {
		tn_conf_destroy(&ctl.conf);
		return EX_CONFIG;
	}
	for (size_t i = 0; i < noverrides; i++) {
		if (tnctl_apply_override(&ctl, overrides[i]) < 0) {
			tn_conf_destroy(&ctl.conf);
			return EX_CONFIG;
		}
	}
	ret = tnctl_dispatch(&ctl, tnctl_commands, "", argc - optind, argv + optind);
	tn_conf_destroy(&ctl.conf);
	return ret;
}
