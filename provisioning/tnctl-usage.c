/*++
 * NAME
 *	tnctl-usage 3
 * SUMMARY
 *	tnctl usage reconcile: set a tenant's Redis usage from Dovecot
 * SYNOPSIS
 *	tnctl usage reconcile --tenant T [--doveadm CMD]... [--check] [--json]
 * DESCRIPTION
 *	The Dovecot plugin tenant_quota keeps usage:ten:<tenant> and
 *	usage:mbx:<address> by deltas; a delta lost while Redis was away, a
 *	flushed Redis or mail stored before the plugin was enabled leaves
 *	them wrong. This command recomputes them from Dovecot's own
 *	figures and writes the difference:
 *
 *	1. the tenant's mailboxes (not deleted) from the directory, with the
 *	   provisioning account (tn_prov_list: prov_ldap_* parameters);
 *	2. for each, the sum over the stores of
 *	   CMD -f flow mailbox status -u ADDRESS -t "messages vsize" "*"
 *	   (vsize: what the quota plugin counts with quota_vsizes = yes);
 *	   CMD is a command line split at spaces, run without a shell,
 *	   default "doveadm"; give --doveadm once per store ("doveadm -c
 *	   /etc/dovecot/store2.conf", or a doveadm on another host through
 *	   ssh). A user a store does not know counts 0 there;
 *	3. right after counting a mailbox, reads its mirror and adds the
 *	   difference to the mirror and the tenant's counter (a delta, as the
 *	   plugin writes: what other stores add meanwhile is kept);
 *	4. sets the tenant's counter to the sum of its mailboxes' mirrors in
 *	   one script (every writer changes a mailbox and its tenant
 *	   together, so that sum is exact whatever the stores do);
 *	and prints a line per counter that changed.
 *
 *	With --check nothing is written: exit 0 when every counter was
 *	right, 1 when some differ. A message stored in a mailbox between
 *	doveadm's count of it and the read of its mirror (milliseconds) is
 *	counted twice or not at all; the next run, or doveadm quota recalc
 *	for that mailbox, corrects it.
 *
 *	Exit: 0 done (or consistent with --check), 1 drift found with
 *	--check, 64 usage, 69 a doveadm failed (the mailboxes before it
 *	are corrected, the tenant's sum is not set),
 *	75 directory or Redis unavailable, 78 configuration.
 *--*/
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <sysexits.h>
#include <unistd.h>

#include <jansson.h>

#include "tn-cache.h"
#include "tn-mem.h"
#include "tn-outbox.h"
#include "tn-prov.h"
#include "tn-time.h"
#include "tn-usage.h"
#include "tnctl.h"

#define TNCTL_USAGE_MAX_STORES 16
#define TNCTL_USAGE_MAX_ARGS 32
#define TNCTL_USAGE_OUTPUT_MAX 4096
#define TNCTL_USAGE_REDIS_WAIT 5000	/* ms for one Redis call */
/* doveadm's exit for an unknown user (EX_NOUSER) */
#define TNCTL_DOVEADM_NOUSER 67

struct tnctl_usage_mbx {
	char *address;
	int64_t bytes, messages;
};

struct tnctl_usage_opts {
	const char *tenant;
	const char *doveadm[TNCTL_USAGE_MAX_STORES];
	unsigned n_doveadm;
	bool check, json;
};

/* --- the directory -------------------------------------------------------- */

static int tnctl_usage_add_items(json_t *items, struct tnctl_usage_mbx **v, size_t *n)
{
	size_t i;
	json_t *item;

	json_array_foreach(items, i, item) {
		const char *addr = json_string_value(json_object_get(item, "address"));
		const char *status = json_string_value(json_object_get(item, "status"));

		if (addr == NULL || (status != NULL && strcmp(status, "deleted") == 0))
			continue;
		*v = tn_mem_realloc(*v, (*n + 1) * sizeof(**v));
		(*v)[*n] = (struct tnctl_usage_mbx){ tn_mem_strdup(addr), 0, 0 };
		(*n)++;
	}
	return 0;
}

static int tnctl_usage_list(struct tnctl *ctl, const char *tenant,
			    struct tnctl_usage_mbx **v_r, size_t *n_r)
{
	struct tn_prov_ctx pctx = { .actor_kind = "admin", .actor_id = "tnctl" };
	/* listing records no event; tn_prov wants an outbox all the same */
	struct tn_outbox *ob = tn_outbox_create_conf(ctl->conf);
	const char *error;
	struct tn_prov *p = tn_prov_create(ctl->conf, NULL, ob, &error);
	char *cursor = NULL;
	int ret = 0;

	if (p == NULL) {
		fprintf(stderr, "tnctl: usage reconcile: %s\n", error);
		tn_outbox_destroy(&ob);
		return EX_CONFIG;
	}
	do {
		struct tn_prov_query q = { .tenant = tenant, .cursor = cursor };
		struct tn_prov_result res = { 0 };

		if (tn_prov_list(p, &pctx, TN_PROV_MAILBOX, &q, &res) != TN_PROV_OK) {
			fprintf(stderr, "tnctl: usage reconcile: listing %s's mailboxes: %s\n",
				tenant, res.message != NULL ? res.message : "failed");
			ret = res.status == TN_PROV_TEMPFAIL ? EX_TEMPFAIL : EX_UNAVAILABLE;
		} else {
			tnctl_usage_add_items(res.items, v_r, n_r);
		}
		tn_mem_free(&cursor);
		cursor = ret == 0 && res.next_cursor != NULL ? tn_mem_strdup(res.next_cursor) : NULL;
		tn_prov_result_clear(&res);
	} while (cursor != NULL);
	tn_prov_destroy(&p);
	tn_outbox_destroy(&ob);
	return ret;
}

/* --- doveadm ----------------------------------------------------------------- */

/* Run argv, its stdout into out (NUL-terminated, truncated). Exit status or -1. */
static int tnctl_usage_run(char *const *argv, char *out, size_t outsize)
{
	size_t len = 0;
	int fds[2], status;
	pid_t pid;
	ssize_t r;

	if (pipe(fds) < 0)
		return -1;
	if ((pid = fork()) < 0) {
		close(fds[0]);
		close(fds[1]);
		return -1;
	}
	if (pid == 0) {
		dup2(fds[1], STDOUT_FILENO);
		close(fds[0]);
		close(fds[1]);
		execvp(argv[0], argv);
		_exit(127);
	}
	close(fds[1]);
	while ((r = read(fds[0], out + len, outsize - 1 - len)) != 0) {
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0 || (len += (size_t)r) == outsize - 1)
			break;
	}
	out[len] = '\0';
	close(fds[0]);
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static int64_t tnctl_usage_field(const char *out, const char *name)
{
	size_t len = strlen(name);

	for (const char *p = out; (p = strstr(p, name)) != NULL; p += len) {
		if ((p == out || p[-1] == ' ' || p[-1] == '\n') && p[len] == '=')
			return strtoll(p + len + 1, NULL, 10);
	}
	return -1;
}

/* One store's figures for address: 0, 1 unknown user there, -1 failure. */
static int tnctl_usage_store(const char *cmd, const char *address,
			     int64_t *bytes_r, int64_t *messages_r)
{
	char *copy = tn_mem_strdup(cmd), *argv[TNCTL_USAGE_MAX_ARGS + 10];
	char out[TNCTL_USAGE_OUTPUT_MAX], *save = NULL;
	int argc = 0, rc, ret = -1;

	for (char *t = strtok_r(copy, " \t", &save); t != NULL && argc < TNCTL_USAGE_MAX_ARGS;
	     t = strtok_r(NULL, " \t", &save))
		argv[argc++] = t;
	argv[argc++] = (char *)"-f";
	argv[argc++] = (char *)"flow";
	argv[argc++] = (char *)"mailbox";
	argv[argc++] = (char *)"status";
	argv[argc++] = (char *)"-u";
	argv[argc++] = (char *)address;
	argv[argc++] = (char *)"-t";
	argv[argc++] = (char *)"messages vsize";
	argv[argc++] = (char *)"*";
	argv[argc] = NULL;
	rc = tnctl_usage_run(argv, out, sizeof(out));
	if (rc == TNCTL_DOVEADM_NOUSER) {
		ret = 1;
	} else if (rc == 0 && (*bytes_r = tnctl_usage_field(out, "vsize")) >= 0 &&
		   (*messages_r = tnctl_usage_field(out, "messages")) >= 0) {
		ret = 0;
	} else {
		fprintf(stderr, "tnctl: usage reconcile: %s ... -u %s: exit %d: %.200s\n",
			cmd, address, rc, out);
	}
	tn_mem_free(&copy);
	return ret;
}

static int tnctl_usage_count(const struct tnctl_usage_opts *o, struct tnctl_usage_mbx *m)
{
	for (unsigned i = 0; i < o->n_doveadm; i++) {
		int64_t b = 0, n = 0;
		int r = tnctl_usage_store(o->doveadm[i], m->address, &b, &n);

		if (r < 0)
			return -1;
		if (r == 0) {
			m->bytes += b;
			m->messages += n;
		}
	}
	return 0;
}

/* --- Redis ------------------------------------------------------------------- */

static void tnctl_usage_report(const struct tnctl_usage_opts *o, json_t *report,
			       const char *kind, const char *id, const int64_t old[2],
			       const int64_t now[2])
{
	json_array_append_new(report, json_pack("{s:s, s:s, s:I, s:I, s:I, s:I}",
						"kind", kind, "id", id,
						"redis_bytes", (json_int_t)old[0],
						"redis_messages", (json_int_t)old[1],
						"bytes", (json_int_t)now[0],
						"messages", (json_int_t)now[1]));
	if (!o->json) {
		printf("%s %s: bytes %" PRId64 " -> %" PRId64 ", messages %" PRId64 " -> %" PRId64
		       "%s\n", kind, id, old[0], now[0], old[1], now[1],
		       o->check ? " (not written)" : "");
	}
}

/* One mailbox: count it on the stores, then at once read its mirror and
 * add the difference (a delta, as the plugin writes: changes made by the
 * stores meanwhile are kept). 1 differed, 0 same, -1 Redis, -2 doveadm. */
static int tnctl_usage_mailbox(struct tn_usage *u, const struct tnctl_usage_opts *o,
			       struct tnctl_usage_mbx *m, json_t *report)
{
	tn_msec_t deadline;
	int64_t old[2], now[2];
	struct tn_usage_result res;

	if (tnctl_usage_count(o, m) < 0)
		return -2;
	deadline = tn_time_now_ms() + TNCTL_USAGE_REDIS_WAIT;
	if (tn_usage_get(u, "mbx", m->address, deadline, &old[0], &old[1]) < 0)
		return -1;
	now[0] = m->bytes;
	now[1] = m->messages;
	if (old[0] == now[0] && old[1] == now[1])
		return 0;
	if (!o->check && tn_usage_add(u, o->tenant, m->address, now[0] - old[0],
				      now[1] - old[1], NULL, deadline, &res) < 0)
		return -1;
	tnctl_usage_report(o, report, "mbx", m->address, old, now);
	return 1;
}

/* The tenant: the sum of its mailboxes' mirrors, in one script. */
static int tnctl_usage_tenant(struct tn_usage *u, const struct tnctl_usage_opts *o,
			      const struct tnctl_usage_mbx *v, size_t n, int64_t counted[2],
			      json_t *report)
{
	const char **addrs = tn_mem_calloc(n + 1, sizeof(*addrs));
	int64_t sums[2], old[2];
	int ret;

	for (size_t i = 0; i < n; i++)
		addrs[i] = v[i].address;
	ret = tn_usage_sum_tenant(u, o->tenant, addrs, n, !o->check,
				  tn_time_now_ms() + TNCTL_USAGE_REDIS_WAIT, sums, old);
	tn_mem_free(&addrs);
	if (ret < 0)
		return -1;
	/* --check wrote no mirror: compare with what doveadm counted */
	if (o->check)
		memcpy(sums, counted, sizeof(sums));
	if (old[0] == sums[0] && old[1] == sums[1])
		return 0;
	tnctl_usage_report(o, report, "ten", o->tenant, old, sums);
	return 1;
}

static void tnctl_usage_print_json(const struct tnctl_usage_opts *o, size_t n, int64_t bytes,
				   int64_t messages, json_t *report)
{
	json_t *j = json_pack("{s:s, s:I, s:I, s:I, s:O, s:b}", "tenant", o->tenant,
			      "mailboxes", (json_int_t)n, "bytes", (json_int_t)bytes,
			      "messages", (json_int_t)messages, "drift", report,
			      "written", !o->check);

	json_dumpf(j, stdout, JSON_COMPACT);
	putchar('\n');
	json_decref(j);
}

static int tnctl_usage_apply(struct tnctl *ctl, const struct tnctl_usage_opts *o,
			     struct tnctl_usage_mbx *v, size_t n)
{
	const char *error;
	struct tn_usage *u = tn_usage_create(ctl->conf, &error);
	json_t *report = json_array();
	int64_t counted[2] = { 0, 0 };
	int r = 0, drift = 0;

	if (u == NULL) {
		fprintf(stderr, "tnctl: usage reconcile: %s\n", error);
		json_decref(report);
		return EX_CONFIG;
	}
	for (size_t i = 0; i < n && r >= 0; i++) {
		drift |= r = tnctl_usage_mailbox(u, o, &v[i], report);
		counted[0] += v[i].bytes;
		counted[1] += v[i].messages;
	}
	if (r >= 0)
		drift |= r = tnctl_usage_tenant(u, o, v, n, counted, report);
	if (r == -1)
		fprintf(stderr, "tnctl: usage reconcile: redis: %s\n", tn_cache_last_error());
	else if (r >= 0 && o->json)
		tnctl_usage_print_json(o, n, counted[0], counted[1], report);
	else if (r >= 0)
		printf("tenant %s: %zu mailboxes, %" PRId64 " bytes, %" PRId64 " messages%s\n",
		       o->tenant, n, counted[0], counted[1], drift ? "" : " (no drift)");
	json_decref(report);
	tn_usage_destroy(&u);
	return r == -1 ? EX_TEMPFAIL : r == -2 ? EX_UNAVAILABLE : o->check && drift ? 1 : 0;
}

/* --- the command --------------------------------------------------------------- */

static int tnctl_usage_parse(int argc, char **argv, struct tnctl_usage_opts *o)
{
	static const struct option longopts[] = {
		{ "tenant", required_argument, NULL, 't' },
		{ "doveadm", required_argument, NULL, 'd' },
		{ "check", no_argument, NULL, 'k' },
		{ "json", no_argument, NULL, 'j' },
		{ NULL, 0, NULL, 0 },
	};
	int c;

	optind = 1;
	while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		if (c == 't')
			o->tenant = optarg;
		else if (c == 'd' && o->n_doveadm < TNCTL_USAGE_MAX_STORES)
			o->doveadm[o->n_doveadm++] = optarg;
		else if (c == 'k')
			o->check = true;
		else if (c == 'j')
			o->json = true;
		else
			return -1;
	}
	if (o->tenant == NULL || optind != argc)
		return -1;
	if (o->n_doveadm == 0)
		o->doveadm[o->n_doveadm++] = "doveadm";
	return 0;
}

static int tnctl_usage_reconcile(struct tnctl *ctl, int argc, char **argv)
{
	struct tnctl_usage_opts o = { 0 };
	struct tnctl_usage_mbx *v = NULL;
	size_t n = 0;
	int ret;

	if (tnctl_usage_parse(argc, argv, &o) < 0) {
		fprintf(stderr, "usage: tnctl usage reconcile --tenant T [--doveadm CMD]... "
			"[--check] [--json]\n");
		return EX_USAGE;
	}
	ret = tnctl_usage_list(ctl, o.tenant, &v, &n);
	if (ret == 0)
		ret = tnctl_usage_apply(ctl, &o, v, n);
	for (size_t i = 0; i < n; i++)
		tn_mem_free(&v[i].address);
	tn_mem_free(&v);
	return ret;
}

const struct tnctl_command tnctl_usage_commands[] = {
	{ "reconcile", tnctl_usage_reconcile,
	  "reconcile --tenant T [--doveadm CMD]... [--check] [--json]", NULL },
	{ NULL, NULL, NULL, NULL },
};
