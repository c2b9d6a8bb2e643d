/*++
 * NAME
 *	tnctl-events 1
 * SUMMARY
 *	tnctl events: the outbox and tn-hookd's spool for operators
 * SYNOPSIS
 *	tnctl events emit TYPE --tenant T [--data JSON] [--json]
 *	tnctl events list [--dead] [--endpoint E] [--limit N] [--json]
 *	tnctl events show ID [--json]
 *	tnctl events replay ID... | --since TIME [--endpoint E]
 *	tnctl events stats [--json]
 *	tnctl events enable ENDPOINT
 *	tnctl events verify ...			(tnctl-verify.c)
 * DESCRIPTION
 *	emit appends an event exactly as a component does (lib/tn-outbox).
 *	The others read or repair tn-hookd's spool under outbox_dir
 *	(docs/hookd.md) while tn-hookd works on it: a file that goes away
 *	between the directory scan and its reading was delivered
 *	meanwhile and is left out, never an error. replay and enable
 *	change the spool by one rename or unlink each, atomic, which
 *	tn-hookd sees through inotify or its next rescan.
 *
 *	Exit: 0; 1 an unknown id or endpoint; 64 usage; 65 bad input (an
 *	id, name or time that is not one); 75 the spool cannot be read or
 *	changed (as emit when the outbox cannot take an event).
 * CONFIGURATION
 *	outbox_dir (the spool), hookd_endpoints_dir (stats and enable read
 *	each endpoint's "enabled").
 * SECURITY
 *	The spool is 2770 root:tenantmail: run as root or a member of
 *	tenantmail. The endpoint files hold secrets; only their enabled
 *	setting is used, nothing of them is printed.
 *--*/
#include "tn-build.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sysexits.h>
#include <unistd.h>

#include "tn-log.h"
#include "tn-mem.h"
#include "tnctl.h"

#define TNCTL_HOUR_MS (3600 * 1000)
#define TNCTL_MARKER_MAX 4096

static const char *tnctl_spool(const struct tnctl *ctl)
{
	return tn_conf_str(ctl->conf, "outbox_dir");
}

/* Print v as indented JSON and drop it. */
static void tnctl_print_json(json_t *v)
{
	char *text = json_dumps(v, JSON_INDENT(2));

	printf("%s\n", text);
	free(text);
	json_decref(v);
}

static int tnctl_check_id(const char *id)
{
	if (tn_hook_id_valid(id))
		return 0;
	fprintf(stderr, "tnctl: '%s': not an event id (a lower-case UUID)\n", id);
	return EX_DATAERR;
}

static int tnctl_check_endpoint(const char *spool, const char *name)
{
	struct stat st;
	char *dir;
	int ret = 0;

	if (!tn_hook_name_valid(name)) {
		fprintf(stderr, "tnctl: '%s': not an endpoint name (%s)\n", name, TN_HOOK_NAME_RE);
		return EX_DATAERR;
	}
	dir = tn_mem_printf("%s/hooks/%s", spool, name);
	if (stat(dir, &st) < 0 || !S_ISDIR(st.st_mode)) {
		fprintf(stderr, "tnctl: no endpoint directory %s (nothing was ever queued for %s)\n",
			dir, name);
		ret = 1;
	}
	tn_mem_free(&dir);
	return ret;
}

/* --- emit ------------------------------------------------------------------------- */

static int tnctl_emit_append(struct tnctl *ctl, const char *type, const char *tenant,
			     json_t *data, bool json)
{
	struct tn_outbox *ob = tn_outbox_create_conf(ctl->conf);
	char id[TN_OUTBOX_ID_SIZE];
	const char *error;
	uint64_t seq;
	int ret = 0;

	if (tn_outbox_append(ob, type, tenant, data, id, &seq, &error) < 0) {
		fprintf(stderr, "tnctl: %s\n", error);
		ret = tn_outbox_failed_on_input() ? EX_DATAERR : EX_TEMPFAIL;
	} else if (json) {
		printf("{\"id\":\"%s\",\"sequence\":%llu}\n", id, (unsigned long long)seq);
	} else {
		printf("%s %s sequence %llu\n", id, type, (unsigned long long)seq);
	}
	tn_outbox_destroy(&ob);
	return ret;
}

/* emit TYPE --tenant T [--data JSON] [--json]: for integrators' tests, an
 * event exactly as a component would write it. */
static int tnctl_events_emit(struct tnctl *ctl, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "tenant", required_argument, NULL, 't' },
		{ "data", required_argument, NULL, 'd' },
		{ "json", no_argument, NULL, 'j' }, { NULL, 0, NULL, 0 },
	};
	const char *tenant = NULL, *text = "{}", *error, *type;
	json_error_t jerr;
	bool json = false;
	json_t *data;
	int c, ret;

	while ((c = getopt_long(argc, argv, "t:d:j", opts, NULL)) != -1) {
		if (c == 't')
			tenant = optarg;
		else if (c == 'd')
			text = optarg;
		else if (c == 'j')
			json = true;
		else
			return EX_USAGE;
	}
	if (tenant == NULL || optind != argc - 1)
		return EX_USAGE;
	type = argv[optind];
	if ((data = json_loads(text, JSON_REJECT_DUPLICATES, &jerr)) == NULL) {
		fprintf(stderr, "tnctl: --data: not JSON: %s (column %d)\n", jerr.text,
			jerr.column);
		return EX_DATAERR;
	}
	if (tn_outbox_validate(type, tenant, data, &error) < 0) {
		fprintf(stderr, "tnctl: %s\n", error);
		ret = EX_DATAERR;
	} else {
		ret = tnctl_emit_append(ctl, type, tenant, data, json);
	}
	json_decref(data);
	return ret;
}

/* --- one entry, as text and as JSON ---------------------------------------------- */

static json_t *tnctl_time_json(int64_t ms)
{
	char buf[32];

	tn_hook_format_time(ms, buf);
	return json_string(buf);
}

/* Where an entry is: state, endpoint, attempts and their times. */
static json_t *tnctl_location_json(const struct tnctl_entry *e)
{
	bool retried = e->state == TNCTL_QUEUED && e->q.attempts > 0;
	json_t *o = json_object();

	json_object_set_new(o, "state", json_string(tnctl_state_name(e->state)));
	json_object_set_new(o, "endpoint",
			    e->endpoint != NULL ? json_string(e->endpoint) : json_null());
	json_object_set_new(o, "attempts", e->state == TNCTL_DEAD ? json_null() :
			    json_integer(e->q.attempts));
	json_object_set_new(o, "first_attempt_at",
			    retried ? tnctl_time_json(e->q.first_ms) : json_null());
	json_object_set_new(o, "next_attempt_at",
			    retried ? tnctl_time_json(e->q.next_ms) : json_null());
	return o;
}

static json_t *tnctl_entry_json(const struct tnctl_entry *e, json_t *ev, const char *why)
{
	static const char *const fields[] = { "type", "tenant", "sequence", "occurred_at" };
	json_t *o = json_pack("{s:s}", "id", e->q.id), *loc = tnctl_location_json(e);

	json_object_update(o, loc);
	json_decref(loc);
	for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
		json_t *v = ev != NULL ? json_object_get(ev, fields[i]) : NULL;

		json_object_set(o, fields[i], v != NULL ? v : json_null());
	}
	if (why != NULL)
		json_object_set_new(o, "error", json_string(why));
	return o;
}

/* The NEXT column (when tn-hookd tries again) or AGE (dead letters). */
static const char *tnctl_when(const struct tnctl_entry *e, int64_t now, char buf[40])
{
	char span[32];

	if (e->state == TNCTL_NEW)
		return "-";
	if (e->state == TNCTL_DEAD) {
		int64_t t = tn_hook_id_time_ms(e->q.id);

		if (t < 0)
			return "?";
		tnctl_format_span(now - t, buf);
		return buf;
	}
	if (e->q.attempts == 0 || e->q.next_ms <= now)
		return "now";
	tnctl_format_span(e->q.next_ms - now, span);
	snprintf(buf, 40, "in %s", span);
	return buf;
}

static void tnctl_entry_line(const struct tnctl_entry *e, json_t *ev, int endpoint_width,
			     int64_t now)
{
	char type[TN_LOG_VALUE_MAX], tenant[TN_LOG_VALUE_MAX], when[40], attempts[16], seq[24];

	snprintf(attempts, sizeof(attempts), "%u", e->q.attempts);
	snprintf(seq, sizeof(seq), "%lld",
		 (long long)json_integer_value(json_object_get(ev, "sequence")));
	printf("%-36s  %-*s  %-24s  %-12s  %8s  %8s  %s\n", e->q.id, endpoint_width,
	       e->endpoint != NULL ? e->endpoint : "-",
	       tnctl_safe(type, json_string_value(json_object_get(ev, "type"))),
	       tnctl_safe(tenant, json_string_value(json_object_get(ev, "tenant"))),
	       ev != NULL ? seq : "-", e->state == TNCTL_DEAD ? "-" : attempts,
	       tnctl_when(e, now, when));
}

/* --- list ------------------------------------------------------------------------- */

struct tnctl_list_args {
	bool dead, json;
	const char *endpoint;
	size_t limit;		/* 0: all */
};

static int tnctl_parse_limit(const char *text, size_t *limit_r)
{
	char *end;
	unsigned long long v;

	errno = 0;
	v = strtoull(text, &end, 10);
	if (errno != 0 || end == text || *end != '\0' || v == 0 || *text == '-' ||
	    v > SIZE_MAX / 4) {
		fprintf(stderr, "tnctl: --limit: '%s' is not a positive number\n", text);
		return -1;
	}
	*limit_r = (size_t)v;
	return 0;
}

static int tnctl_list_options(int argc, char **argv, struct tnctl_list_args *a)
{
	static const struct option opts[] = {
		{ "dead", no_argument, NULL, 'D' }, { "endpoint", required_argument, NULL, 'e' },
		{ "limit", required_argument, NULL, 'n' }, { "json", no_argument, NULL, 'j' },
		{ NULL, 0, NULL, 0 },
	};
	int c;

	while ((c = getopt_long(argc, argv, "De:n:j", opts, NULL)) != -1) {
		switch (c) {
		case 'D':
			a->dead = true;
			break;
		case 'e':
			a->endpoint = optarg;
			break;
		case 'n':
			if (tnctl_parse_limit(optarg, &a->limit) < 0)
				return EX_USAGE;
			break;
		case 'j':
			a->json = true;
			break;
		default:
			return EX_USAGE;
		}
	}
	if (optind != argc)
		return EX_USAGE;
	if (a->endpoint != NULL && !tn_hook_name_valid(a->endpoint)) {
		fprintf(stderr, "tnctl: '%s': not an endpoint name (%s)\n", a->endpoint,
			TN_HOOK_NAME_RE);
		return EX_DATAERR;
	}
	return 0;
}

/* The entries list shows, oldest first, cut to the limit. */
static int tnctl_list_collect(const char *spool, const struct tnctl_list_args *a,
			      const struct tnctl_names *names, struct tnctl_entries *out)
{
	enum tnctl_state state = a->dead ? TNCTL_DEAD : TNCTL_QUEUED;
	const char *error;
	int ret = 0;

	if (!a->dead && a->endpoint == NULL)
		ret = tnctl_scan(spool, NULL, TNCTL_NEW, NULL, a->limit, out, &error);
	for (size_t i = 0; ret == 0 && i < names->n; i++) {
		if (a->endpoint == NULL || strcmp(names->v[i], a->endpoint) == 0)
			ret = tnctl_scan(spool, names->v[i], state, NULL, a->limit, out, &error);
	}
	if (ret < 0) {
		fprintf(stderr, "tnctl: %s\n", error);
		return EX_TEMPFAIL;
	}
	tnctl_entries_sort(out, a->limit);
	return 0;
}

/* The envelope of e; NULL with *gone_r when the file went away (delivered
 * since the scan), NULL with a warning when it cannot be read. */
static json_t *tnctl_entry_envelope(const char *spool, const struct tnctl_entry *e,
				    bool *gone_r, char **why_r)
{
	char *path = tnctl_entry_path(spool, e);
	const char *error;
	json_t *ev = tnctl_envelope_load(path, e->q.id, &error);

	*gone_r = ev == NULL && access(path, F_OK) < 0 && errno == ENOENT;
	*why_r = NULL;
	if (ev == NULL && !*gone_r) {
		fprintf(stderr, "tnctl: warning: %s\n", error);
		*why_r = tn_mem_strdup(error);
	}
	tn_mem_free(&path);
	return ev;
}

static int tnctl_endpoint_width(const struct tnctl_names *names)
{
	size_t w = strlen("ENDPOINT");

	for (size_t i = 0; i < names->n; i++)
		w = strlen(names->v[i]) > w ? strlen(names->v[i]) : w;
	return (int)w;
}

static void tnctl_list_print(const char *spool, const struct tnctl_list_args *a,
			     const struct tnctl_names *names, const struct tnctl_entries *es)
{
	int width = tnctl_endpoint_width(names);
	int64_t now = tn_hook_now_ms();
	bool first = true, gone;
	char *why;

	if (a->json)
		printf("[");
	else
		printf("%-36s  %-*s  %-24s  %-12s  %8s  %8s  %s\n", "ID", width, "ENDPOINT",
		       "TYPE", "TENANT", "SEQUENCE", "ATTEMPTS", a->dead ? "AGE" : "NEXT");
	for (size_t i = 0; i < es->n; i++) {
		json_t *ev = tnctl_entry_envelope(spool, &es->v[i], &gone, &why);

		if (gone)
			continue;
		if (a->json) {
			json_t *o = tnctl_entry_json(&es->v[i], ev, why);
			char *text = json_dumps(o, JSON_COMPACT);

			printf("%s\n  %s", first ? "" : ",", text);
			free(text);
			json_decref(o);
		} else {
			tnctl_entry_line(&es->v[i], ev, width, now);
		}
		first = false;
		json_decref(ev);
		tn_mem_free(&why);
	}
	if (a->json)
		printf("%s]\n", first ? "" : "\n");
}

/* list [--dead] [--endpoint E] [--limit N] [--json] */
static int tnctl_events_list(struct tnctl *ctl, int argc, char **argv)
{
	struct tnctl_list_args a = { false, false, NULL, 0 };
	struct tnctl_entries es = { NULL, 0, 0 };
	struct tnctl_names names;
	const char *spool = tnctl_spool(ctl), *error;
	int ret;

	if ((ret = tnctl_list_options(argc, argv, &a)) != 0 ||
	    (ret = tnctl_spool_check(spool)) != 0)
		return ret;
	if (tnctl_endpoint_dirs(spool, &names, &error) < 0) {
		fprintf(stderr, "tnctl: %s\n", error);
		return EX_TEMPFAIL;
	}
	if (a.endpoint != NULL && !tnctl_names_has(&names, a.endpoint))
		fprintf(stderr, "tnctl: no directory hooks/%s: nothing was ever queued for it\n",
			a.endpoint);
	if ((ret = tnctl_list_collect(spool, &a, &names, &es)) == 0)
		tnctl_list_print(spool, &a, &names, &es);
	tnctl_entries_free(&es);
	tnctl_names_free(&names);
	return ret;
}

/* --- show ------------------------------------------------------------------------- */

struct tnctl_show {
	const char *spool, *id;
	struct tnctl_names names;	/* endpoint directories */
	struct tnctl_entries where;	/* new/, queues, dead letters */
	struct tnctl_names bad;		/* files in bad/ named after the id */
	json_t *event;
	char *why;			/* why event is NULL */
	json_t *deliveries;		/* its delivery log records */
};

static void tnctl_show_probe(struct tnctl_show *s, const char *endpoint, enum tnctl_state state)
{
	struct tnctl_entry e = { .endpoint = endpoint, .state = state };
	char *path;

	memcpy(e.q.id, s->id, TN_HOOK_ID_SIZE);
	path = tnctl_entry_path(s->spool, &e);
	if (access(path, F_OK) == 0)
		tnctl_entries_add(&s->where, &e.q, endpoint, state);
	tn_mem_free(&path);
}

static void tnctl_show_bad(struct tnctl_show *s)
{
	char *dir = tn_mem_printf("%s/bad", s->spool);
	struct dirent *de;
	DIR *d = opendir(dir);

	while (d != NULL && (de = readdir(d)) != NULL) {
		const char *dot = strchr(de->d_name, '.');

		/* <id>..., or <endpoint>.<id>... (quarantined from a queue) */
		if (strncmp(de->d_name, s->id, 36) != 0 &&
		    (dot == NULL || strncmp(dot + 1, s->id, 36) != 0))
			continue;
		s->bad.v = tn_mem_realloc(s->bad.v, (s->bad.n + 1) * sizeof(*s->bad.v));
		s->bad.v[s->bad.n++] = tn_mem_strdup(de->d_name);
	}
	if (d != NULL)
		closedir(d);
	tn_mem_free(&dir);
}

static int tnctl_show_find(struct tnctl_show *s)
{
	const char *error;

	if (tnctl_endpoint_dirs(s->spool, &s->names, &error) < 0) {
		fprintf(stderr, "tnctl: %s\n", error);
		return EX_TEMPFAIL;
	}
	if (tnctl_scan(s->spool, NULL, TNCTL_NEW, s->id, 0, &s->where, &error) < 0) {
		fprintf(stderr, "tnctl: %s\n", error);
		return EX_TEMPFAIL;
	}
	for (size_t i = 0; i < s->names.n; i++) {
		if (tnctl_scan(s->spool, s->names.v[i], TNCTL_QUEUED, s->id, 0, &s->where,
			       &error) < 0) {
			fprintf(stderr, "tnctl: %s\n", error);
			return EX_TEMPFAIL;
		}
		tnctl_show_probe(s, s->names.v[i], TNCTL_DEAD);
	}
	tnctl_entries_sort(&s->where, 0);
	tnctl_show_bad(s);
	return 0;
}

static void tnctl_show_record(json_t *rec, void *ctx)
{
	struct tnctl_show *s = ctx;
	const char *id = json_string_value(json_object_get(rec, "id"));

	if (id != NULL && strcmp(id, s->id) == 0)
		json_array_append(s->deliveries, rec);
}

/* The envelope from the first file found. */
static void tnctl_show_envelope(struct tnctl_show *s)
{
	const char *error = "in none of new/, the queues, the dead letters or bad/";
	char *path = NULL;

	if (s->where.n > 0)
		path = tnctl_entry_path(s->spool, &s->where.v[0]);
	else if (s->bad.n > 0)
		path = tn_mem_printf("%s/bad/%s", s->spool, s->bad.v[0]);
	if (path != NULL)
		s->event = tnctl_envelope_load(path, s->id, &error);
	if (s->event == NULL)
		s->why = tn_mem_strdup(error);
	tn_mem_free(&path);
}

static void tnctl_show_json(const struct tnctl_show *s)
{
	json_t *locs = json_array();

	for (size_t i = 0; i < s->where.n; i++)
		json_array_append_new(locs, tnctl_location_json(&s->where.v[i]));
	for (size_t i = 0; i < s->bad.n; i++)
		json_array_append_new(locs, json_pack("{s:s,s:s}", "state", "bad", "file",
						      s->bad.v[i]));
	tnctl_print_json(json_pack("{s:s,s:O,s:s?,s:o,s:O}", "id", s->id, "event",
				   s->event != NULL ? s->event : json_null(), "error", s->why,
				   "locations", locs, "deliveries", s->deliveries));
}

static void tnctl_show_field(const char *label, const char *value)
{
	char safe[TN_LOG_VALUE_MAX];

	printf("%-13s %s\n", label, tnctl_safe(safe, value));
}

static void tnctl_show_event_text(const struct tnctl_show *s)
{
	json_t *ev = s->event;
	char *data;

	tnctl_show_field("id:", s->id);
	if (ev == NULL) {
		tnctl_show_field("event:", s->why);
		return;
	}
	tnctl_show_field("type:", json_string_value(json_object_get(ev, "type")));
	tnctl_show_field("tenant:", json_string_value(json_object_get(ev, "tenant")));
	printf("%-13s %lld\n", "sequence:",
	       (long long)json_integer_value(json_object_get(ev, "sequence")));
	tnctl_show_field("occurred_at:", json_string_value(json_object_get(ev, "occurred_at")));
	data = json_dumps(json_object_get(ev, "data"), JSON_COMPACT | JSON_ENSURE_ASCII |
			  JSON_ENCODE_ANY);
	printf("%-13s %s\n", "data:", data != NULL ? data : "-");
	free(data);
}

static void tnctl_show_location_text(const struct tnctl_entry *e, int64_t now)
{
	char first[32], next[32], span[32];

	if (e->state == TNCTL_NEW) {
		printf("%-13s new/ (not yet fanned out to the endpoints)\n", "where:");
	} else if (e->state == TNCTL_DEAD) {
		printf("%-13s %s: dead letter (tnctl events replay %s)\n", "where:", e->endpoint,
		       e->q.id);
	} else if (e->q.attempts == 0) {
		printf("%-13s %s: queued, not attempted yet\n", "where:", e->endpoint);
	} else {
		tn_hook_format_time(e->q.first_ms, first);
		tn_hook_format_time(e->q.next_ms, next);
		tnctl_format_span(e->q.next_ms - now, span);
		printf("%-13s %s: queued, %u failed attempt%s since %s, next %s (%s%s)\n", "where:",
		       e->endpoint, e->q.attempts, e->q.attempts == 1 ? "" : "s", first, next,
		       e->q.next_ms > now ? "in " : "due", e->q.next_ms > now ? span : "");
	}
}

static void tnctl_show_delivery_text(json_t *rec)
{
	char ep[TN_LOG_VALUE_MAX], outcome[TN_LOG_VALUE_MAX], error[TN_LOG_VALUE_MAX];
	const char *err = json_string_value(json_object_get(rec, "error"));

	printf("  %s  %s  attempt %lld  status %lld  %.1f ms  %s%s%s\n",
	       json_string_value(json_object_get(rec, "at")),
	       tnctl_safe(ep, json_string_value(json_object_get(rec, "endpoint"))),
	       (long long)json_integer_value(json_object_get(rec, "attempt")),
	       (long long)json_integer_value(json_object_get(rec, "status")),
	       json_number_value(json_object_get(rec, "latency_ms")),
	       tnctl_safe(outcome, json_string_value(json_object_get(rec, "outcome"))),
	       err != NULL ? ": " : "", err != NULL ? tnctl_safe(error, err) : "");
}

static void tnctl_show_text(const struct tnctl_show *s)
{
	int64_t now = tn_hook_now_ms();
	size_t i;
	json_t *rec;

	tnctl_show_event_text(s);
	for (i = 0; i < s->where.n; i++)
		tnctl_show_location_text(&s->where.v[i], now);
	for (i = 0; i < s->bad.n; i++)
		printf("%-13s bad/%s (quarantined by tn-hookd)\n", "where:", s->bad.v[i]);
	if (s->where.n == 0 && s->bad.n == 0)
		printf("%-13s nowhere in the spool (delivered, or removed)\n", "where:");
	if (json_array_size(s->deliveries) == 0)
		printf("%-13s none in hooks/deliveries.log or deliveries.log.1\n", "deliveries:");
	else
		printf("deliveries:\n");
	json_array_foreach(s->deliveries, i, rec)
		tnctl_show_delivery_text(rec);
}

static void tnctl_show_free(struct tnctl_show *s)
{
	tnctl_names_free(&s->names);
	tnctl_names_free(&s->bad);
	tnctl_entries_free(&s->where);
	json_decref(s->event);
	json_decref(s->deliveries);
	tn_mem_free(&s->why);
}

/* Commands whose only option is --json, with npos arguments. */
static int tnctl_json_options(int argc, char **argv, int npos, bool *json_r)
{
	static const struct option opts[] = {
		{ "json", no_argument, NULL, 'j' }, { NULL, 0, NULL, 0 },
	};
	int c;

	while ((c = getopt_long(argc, argv, "j", opts, NULL)) != -1) {
		if (c != 'j')
			return EX_USAGE;
		*json_r = true;
	}
	return optind == argc - npos ? 0 : EX_USAGE;
}

/* show ID [--json] */
static int tnctl_events_show(struct tnctl *ctl, int argc, char **argv)
{
	struct tnctl_show s = { .spool = tnctl_spool(ctl) };
	bool json = false;
	int ret;

	if ((ret = tnctl_json_options(argc, argv, 1, &json)) != 0 ||
	    (ret = tnctl_check_id(argv[optind])) != 0 ||
	    (ret = tnctl_spool_check(s.spool)) != 0)
		return ret;
	s.id = argv[optind];
	s.deliveries = json_array();
	if ((ret = tnctl_show_find(&s)) == 0) {
		tnctl_log_scan(s.spool, s.id, NULL, tnctl_show_record, &s);
		tnctl_show_envelope(&s);
		if (s.where.n == 0 && s.bad.n == 0 && json_array_size(s.deliveries) == 0) {
			fprintf(stderr, "tnctl: %s: not in the spool nor in the delivery log\n",
				s.id);
			ret = 1;
		} else if (json) {
			tnctl_show_json(&s);
		} else {
			tnctl_show_text(&s);
		}
	}
	tnctl_show_free(&s);
	return ret;
}

/* --- replay ----------------------------------------------------------------------- */

struct tnctl_replay {
	const char *spool;
	const char *endpoint;		/* --endpoint, or NULL */
	struct tnctl_names names;	/* endpoint directories */
	size_t replayed;
	bool failed;			/* a rename failed: EX_TEMPFAIL */
};

/* dead/<id>.json → queue/<id>.json: never attempted again. */
static bool tnctl_replay_one(struct tnctl_replay *r, const char *endpoint, const char *id)
{
	struct tnctl_entry e = { .endpoint = endpoint, .state = TNCTL_DEAD };
	char *dead, *queue;
	bool done = false;

	memcpy(e.q.id, id, TN_HOOK_ID_SIZE);
	dead = tnctl_entry_path(r->spool, &e);
	e.state = TNCTL_QUEUED;
	queue = tnctl_entry_path(r->spool, &e);
	/* never onto a segment of the same name still being delivered */
	if (renameat2(AT_FDCWD, dead, AT_FDCWD, queue, RENAME_NOREPLACE) == 0) {
		printf("replayed %s to %s\n", id, endpoint);
		r->replayed++;
		done = true;
	} else if (errno != ENOENT || access(dead, F_OK) == 0) {
		fprintf(stderr, "tnctl: rename %s to %s: %s\n", dead, queue, strerror(errno));
		r->failed = true;
	}
	tn_mem_free(&dead);
	tn_mem_free(&queue);
	return done;
}

static int tnctl_replay_ids(struct tnctl_replay *r, int argc, char **argv)
{
	bool unknown = false;

	for (int i = optind; i < argc; i++) {
		bool found = false;

		for (size_t j = 0; j < r->names.n; j++) {
			if (r->endpoint == NULL || strcmp(r->endpoint, r->names.v[j]) == 0)
				found |= tnctl_replay_one(r, r->names.v[j], argv[i]);
		}
		if (!found && !r->failed) {
			fprintf(stderr, "tnctl: %s: no such dead letter%s%s\n", argv[i],
				r->endpoint != NULL ? " for " : "",
				r->endpoint != NULL ? r->endpoint : "");
			unknown = true;
		}
	}
	printf("%zu dead letter%s replayed\n", r->replayed, r->replayed == 1 ? "" : "s");
	return r->failed ? EX_TEMPFAIL : unknown ? 1 : 0;
}

/* Whether a dead letter's event occurred at or after since_ms. */
static bool tnctl_replay_selects(struct tnctl_replay *r, const struct tnctl_entry *e,
				 int64_t since_ms)
{
	char *why;
	bool gone;
	json_t *ev = tnctl_entry_envelope(r->spool, e, &gone, &why);
	const char *at = json_string_value(json_object_get(ev, "occurred_at"));
	int64_t ms;
	bool ok = false;

	if (at != NULL && tnctl_parse_rfc3339(at, &ms) == 0)
		ok = ms >= since_ms;
	else if (ev != NULL)
		fprintf(stderr, "tnctl: warning: %s: occurred_at is not RFC 3339: skipped\n",
			e->q.id);
	json_decref(ev);
	tn_mem_free(&why);
	return ok;
}

static int tnctl_replay_since(struct tnctl_replay *r, int64_t since_ms)
{
	struct tnctl_entries es = { NULL, 0, 0 };
	const char *error;
	char when[32];

	for (size_t i = 0; i < r->names.n; i++) {
		if ((r->endpoint == NULL || strcmp(r->endpoint, r->names.v[i]) == 0) &&
		    tnctl_scan(r->spool, r->names.v[i], TNCTL_DEAD, NULL, 0, &es, &error) < 0) {
			fprintf(stderr, "tnctl: %s\n", error);
			tnctl_entries_free(&es);
			return EX_TEMPFAIL;
		}
	}
	tnctl_entries_sort(&es, 0);
	for (size_t i = 0; i < es.n; i++) {
		if (tnctl_replay_selects(r, &es.v[i], since_ms))
			tnctl_replay_one(r, es.v[i].endpoint, es.v[i].q.id);
	}
	tnctl_entries_free(&es);
	tn_hook_format_time(since_ms, when);
	if (r->replayed == 0 && !r->failed)
		printf("nothing to replay: no dead letter of an event since %s\n", when);
	else
		printf("%zu dead letter%s replayed\n", r->replayed, r->replayed == 1 ? "" : "s");
	return r->failed ? EX_TEMPFAIL : 0;
}

/* TIME: RFC 3339, or a duration before now ("2h"). */
static int tnctl_parse_since(const char *text, int64_t *ms_r)
{
	const char *error;
	int64_t ago;

	if (tnctl_parse_rfc3339(text, ms_r) == 0)
		return 0;
	if (tn_conf_parse_time_ms(text, &ago, &error) == 0) {
		*ms_r = tn_hook_now_ms() - ago;
		return 0;
	}
	fprintf(stderr, "tnctl: --since: '%s' is neither an RFC 3339 time nor a duration"
		" (2h, 3d)\n", text);
	return -1;
}

static int tnctl_replay_options(int argc, char **argv, struct tnctl_replay *r,
				const char **since_r)
{
	static const struct option opts[] = {
		{ "since", required_argument, NULL, 's' },
		{ "endpoint", required_argument, NULL, 'e' }, { NULL, 0, NULL, 0 },
	};
	int c;

	while ((c = getopt_long(argc, argv, "s:e:", opts, NULL)) != -1) {
		if (c == 's')
			*since_r = optarg;
		else if (c == 'e')
			r->endpoint = optarg;
		else
			return EX_USAGE;
	}
	if ((*since_r == NULL) == (optind == argc))
		return EX_USAGE;	/* ids or --since, one of them */
	for (int i = optind; i < argc; i++) {
		if (tnctl_check_id(argv[i]) != 0)
			return EX_DATAERR;
	}
	return 0;
}

/* replay ID... | --since TIME [--endpoint E] */
static int tnctl_events_replay(struct tnctl *ctl, int argc, char **argv)
{
	struct tnctl_replay r = { .spool = tnctl_spool(ctl) };
	const char *since = NULL, *error;
	int64_t since_ms = 0;
	int ret;

	if ((ret = tnctl_replay_options(argc, argv, &r, &since)) != 0)
		return ret;
	if (since != NULL && tnctl_parse_since(since, &since_ms) < 0)
		return EX_DATAERR;
	if ((ret = tnctl_spool_check(r.spool)) != 0 ||
	    (r.endpoint != NULL && (ret = tnctl_check_endpoint(r.spool, r.endpoint)) != 0))
		return ret;
	if (tnctl_endpoint_dirs(r.spool, &r.names, &error) < 0) {
		fprintf(stderr, "tnctl: %s\n", error);
		return EX_TEMPFAIL;
	}
	ret = since != NULL ? tnctl_replay_since(&r, since_ms) : tnctl_replay_ids(&r, argc, argv);
	tnctl_names_free(&r.names);
	return ret;
}

/* --- stats ------------------------------------------------------------------------ */

static const char *const tnctl_outcomes[] = {
	"delivered", "retry", "dead", "disabled", "paused"
};
#define TNCTL_OUTCOMES (sizeof(tnctl_outcomes) / sizeof(tnctl_outcomes[0]))

struct tnctl_ep_stats {
	char name[TN_HOOK_NAME_MAX + 1];
	int configured;			/* 1 a file, 0 none, -1 the files could not be read */
	bool enabled;			/* the file's "enabled" */
	size_t depth, dead;
	int64_t oldest_ms;		/* time of the oldest queued id; -1: none */
	json_t *disabled;		/* the marker, or NULL */
	size_t outcomes[TNCTL_OUTCOMES];
	double *latency;		/* ms, last hour */
	size_t nlatency;
};

struct tnctl_stats {
	const char *spool;
	struct tnctl_ep_stats *v;
	size_t n;
	size_t backlog, bad;
	char *conf_error;		/* the endpoint files could not be read */
};

static struct tnctl_ep_stats *tnctl_stats_endpoint(struct tnctl_stats *st, const char *name)
{
	struct tnctl_ep_stats *s;

	for (size_t i = 0; i < st->n; i++) {
		if (strcmp(st->v[i].name, name) == 0)
			return &st->v[i];
	}
	st->v = tn_mem_realloc(st->v, (st->n + 1) * sizeof(*st->v));
	s = &st->v[st->n++];
	memset(s, 0, sizeof(*s));
	snprintf(s->name, sizeof(s->name), "%s", name);
	s->configured = st->conf_error != NULL ? -1 : 0;
	s->oldest_ms = -1;
	return s;
}

/* The events of a segment file (its lines); 0 when it went away. */
static size_t tnctl_count_lines(const char *dir, const char *name)
{
	char *path = tn_mem_printf("%s/%s", dir, name), *buf;
	const char *error;
	size_t len, n = 0;

	if (tnctl_read_file(path, TNCTL_FILE_MAX, &buf, &len, &error) == 0) {
		for (size_t i = 0; i < len; i++)
			n += buf[i] == '\n';
		n += len > 0 && buf[len - 1] != '\n';
		tn_mem_free(&buf);
	}
	tn_mem_free(&path);
	return n;
}

/* Count the events of dir: the lines of each segment (<id>.json) and
 * each retry file (segments: whole files when !segments); any: every
 * other name counts as one. The oldest id's time. */
static int tnctl_count_dir(const char *dir, bool any, bool segments, size_t *count_r,
			   int64_t *oldest_r)
{
	struct tn_hook_qname q;
	struct dirent *de;
	DIR *d = opendir(dir);
	int64_t t;
	bool event;

	*count_r = 0;
	if (d == NULL)
		return errno == ENOENT ? 0 : -1;
	while ((de = readdir(d)) != NULL) {
		event = tn_hook_qname_parse(de->d_name, &q) == 0;
		if (any ? de->d_name[0] == '.' : !event)
			continue;
		*count_r += segments && event && q.attempts == 0 ?
			tnctl_count_lines(dir, de->d_name) : 1;
		if (!any && oldest_r != NULL && (t = tn_hook_id_time_ms(q.id)) >= 0 &&
		    (*oldest_r < 0 || t < *oldest_r))
			*oldest_r = t;
	}
	closedir(d);
	return 0;
}

static json_t *tnctl_read_marker(const char *path)
{
	const char *error;
	json_t *marker;
	size_t len;
	char *buf;

	if (tnctl_read_file(path, TNCTL_MARKER_MAX, &buf, &len, &error) < 0)
		return access(path, F_OK) == 0 ?
			json_pack("{s:s}", "reason", "(marker unreadable)") : NULL;
	marker = json_loadb(buf, len, 0, NULL);
	tn_mem_free(&buf);
	if (!json_is_object(marker)) {
		json_decref(marker);
		marker = json_pack("{s:s}", "reason", "(marker is not a JSON object)");
	}
	return marker;
}

static int tnctl_stats_spool_one(struct tnctl_stats *st, const char *name)
{
	struct tnctl_ep_stats *s = tnctl_stats_endpoint(st, name);
	char *queue = tn_mem_printf("%s/hooks/%s/queue", st->spool, name);
	char *dead = tn_mem_printf("%s/hooks/%s/dead", st->spool, name);
	char *marker = tn_mem_printf("%s/hooks/%s/disabled", st->spool, name);
	int ret = 0;

	if (tnctl_count_dir(queue, false, true, &s->depth, &s->oldest_ms) < 0 ||
	    tnctl_count_dir(dead, false, false, &s->dead, NULL) < 0) {
		fprintf(stderr, "tnctl: %s/hooks/%s: %s\n", st->spool, name, strerror(errno));
		ret = EX_TEMPFAIL;
	}
	s->disabled = tnctl_read_marker(marker);
	tn_mem_free(&queue);
	tn_mem_free(&dead);
	tn_mem_free(&marker);
	return ret;
}

static int tnctl_stats_spool(struct tnctl_stats *st)
{
	char *new_dir = tn_mem_printf("%s/new", st->spool);
	char *bad_dir = tn_mem_printf("%s/bad", st->spool);
	struct tnctl_names names;
	const char *error;
	int ret = 0;

	if (access(new_dir, F_OK) < 0 ||
	    tnctl_count_dir(new_dir, true, true, &st->backlog, NULL) < 0 ||
	    tnctl_count_dir(bad_dir, true, false, &st->bad, NULL) < 0) {
		fprintf(stderr, "tnctl: %s or %s: %s\n", new_dir, bad_dir, strerror(errno));
		ret = EX_TEMPFAIL;
	} else if (tnctl_endpoint_dirs(st->spool, &names, &error) < 0) {
		fprintf(stderr, "tnctl: %s\n", error);
		ret = EX_TEMPFAIL;
	} else {
		for (size_t i = 0; i < names.n && ret == 0; i++)
			ret = tnctl_stats_spool_one(st, names.v[i]);
		tnctl_names_free(&names);
	}
	tn_mem_free(&new_dir);
	tn_mem_free(&bad_dir);
	return ret;
}

static void tnctl_stats_config(struct tnctl_stats *st, const struct tnctl *ctl)
{
	const char *dir = tn_conf_str(ctl->conf, "hookd_endpoints_dir"), *error;
	struct tn_hook_endpoint *eps;
	unsigned count;

	if (tn_hook_endpoints_load(dir, &eps, &count, &error) < 0) {
		st->conf_error = tn_mem_strdup(error);
		return;
	}
	for (unsigned i = 0; i < count; i++) {
		struct tnctl_ep_stats *s = tnctl_stats_endpoint(st, eps[i].name);

		s->configured = 1;
		s->enabled = eps[i].enabled;
	}
	tn_hook_endpoints_free(&eps, count);
}

static void tnctl_stats_record(json_t *rec, void *ctx)
{
	const char *ep = json_string_value(json_object_get(rec, "endpoint"));
	const char *outcome = json_string_value(json_object_get(rec, "outcome"));
	json_t *latency = json_object_get(rec, "latency_ms");
	struct tnctl_ep_stats *s;

	if (ep == NULL || !tn_hook_name_valid(ep))
		return;
	s = tnctl_stats_endpoint(ctx, ep);
	for (size_t i = 0; outcome != NULL && i < TNCTL_OUTCOMES; i++) {
		if (strcmp(outcome, tnctl_outcomes[i]) == 0)
			s->outcomes[i]++;
	}
	if (json_is_number(latency)) {
		s->latency = tn_mem_realloc(s->latency, (s->nlatency + 1) * sizeof(double));
		s->latency[s->nlatency++] = json_number_value(latency);
	}
}

static int tnctl_double_cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

/* Nearest-rank percentile (p of 100) of the sorted latencies. */
static double tnctl_percentile(const struct tnctl_ep_stats *s, size_t p)
{
	size_t rank = (p * s->nlatency + 99) / 100;

	return s->latency[rank > 0 ? rank - 1 : 0];
}

static int tnctl_ep_stats_cmp(const void *a, const void *b)
{
	return strcmp(((const struct tnctl_ep_stats *)a)->name,
		      ((const struct tnctl_ep_stats *)b)->name);
}

/* Endpoints by name, each one's latencies ascending. */
static void tnctl_stats_sort(struct tnctl_stats *st)
{
	for (size_t i = 0; i < st->n; i++) {
		if (st->v[i].nlatency > 1)
			qsort(st->v[i].latency, st->v[i].nlatency, sizeof(double),
			      tnctl_double_cmp);
	}
	if (st->n > 1)
		qsort(st->v, st->n, sizeof(*st->v), tnctl_ep_stats_cmp);
}

static json_t *tnctl_ep_stats_json(const struct tnctl_ep_stats *s, int64_t now)
{
	json_t *hour = json_object(), *o;

	for (size_t i = 0; i < TNCTL_OUTCOMES; i++)
		json_object_set_new(hour, tnctl_outcomes[i], json_integer((json_int_t)s->outcomes[i]));
	json_object_set_new(hour, "latency_ms", s->nlatency == 0 ? json_null() :
			    json_pack("{s:f,s:f}", "p50", tnctl_percentile(s, 50),
				      "p99", tnctl_percentile(s, 99)));
	o = json_pack("{s:s,s:o,s:o,s:O,s:I,s:o,s:I,s:o}", "name", s->name,
		      "configured", s->configured < 0 ? json_null() : json_boolean(s->configured),
		      "enabled", s->configured < 1 ? json_null() : json_boolean(s->enabled),
		      "disabled", s->disabled != NULL ? s->disabled : json_null(),
		      "queue_depth", (json_int_t)s->depth,
		      "oldest_pending_seconds", s->oldest_ms < 0 ? json_null() :
		      json_integer((now - s->oldest_ms) / 1000),
		      "dead_letters", (json_int_t)s->dead, "last_hour", hour);
	return o;
}

static void tnctl_stats_json(const struct tnctl_stats *st, int64_t now)
{
	json_t *eps = json_array();

	for (size_t i = 0; i < st->n; i++)
		json_array_append_new(eps, tnctl_ep_stats_json(&st->v[i], now));
	tnctl_print_json(json_pack("{s:I,s:I,s:s?,s:o}", "new_backlog", (json_int_t)st->backlog,
				   "bad", (json_int_t)st->bad, "endpoint_files_error",
				   st->conf_error, "endpoints", eps));
}

static void tnctl_stats_state_text(const struct tnctl_ep_stats *s)
{
	char at[TN_LOG_VALUE_MAX], reason[TN_LOG_VALUE_MAX];
	json_t *m = s->disabled;

	printf("  %-14s", "state:");
	if (s->disabled != NULL)
		printf(" DISABLED since %s (status %lld: %s); tnctl events enable %s\n",
		       tnctl_safe(at, json_string_value(json_object_get(m, "at"))),
		       (long long)json_integer_value(json_object_get(m, "status")),
		       tnctl_safe(reason, json_string_value(json_object_get(m, "reason"))),
		       s->name);
	else
		printf(" %s\n", s->configured == 1 && s->enabled ? "enabled" : "not disabled");
	if (s->configured == 1 && !s->enabled)
		printf("  %-14s enabled = no in its endpoint file: nothing is sent\n", "");
	else if (s->configured == 0)
		printf("  %-14s no endpoint file: nothing is sent\n", "");
}

static void tnctl_ep_stats_text(const struct tnctl_ep_stats *s, int64_t now)
{
	char age[32];

	printf("%s\n", s->name);
	tnctl_stats_state_text(s);
	tnctl_format_span(now - s->oldest_ms, age);
	printf("  %-14s %zu event%s%s%s\n", "queue:", s->depth, s->depth == 1 ? "" : "s",
	       s->oldest_ms >= 0 ? ", the oldest waiting for " : "", s->oldest_ms >= 0 ? age : "");
	printf("  %-14s %zu\n", "dead letters:", s->dead);
	printf("  %-14s", "last hour:");
	for (size_t i = 0; i < TNCTL_OUTCOMES; i++)
		printf(" %zu %s%s", s->outcomes[i], tnctl_outcomes[i],
		       i + 1 < TNCTL_OUTCOMES ? "," : "");
	if (s->nlatency > 0)
		printf("; latency p50 %.1f ms, p99 %.1f ms", tnctl_percentile(s, 50),
		       tnctl_percentile(s, 99));
	printf("\n");
}

static void tnctl_stats_text(const struct tnctl_stats *st, int64_t now)
{
	printf("%-16s %zu event%s not yet fanned out\n", "new/ backlog:", st->backlog,
	       st->backlog == 1 ? "" : "s");
	printf("%-16s %zu quarantined file%s\n", "bad/:", st->bad, st->bad == 1 ? "" : "s");
	if (st->conf_error != NULL)
		printf("%-16s %s\n", "endpoint files:", st->conf_error);
	for (size_t i = 0; i < st->n; i++) {
		printf("\n");
		tnctl_ep_stats_text(&st->v[i], now);
	}
}

static void tnctl_stats_free(struct tnctl_stats *st)
{
	for (size_t i = 0; i < st->n; i++) {
		tn_mem_free(&st->v[i].latency);
		json_decref(st->v[i].disabled);
	}
	tn_mem_free(&st->v);
	tn_mem_free(&st->conf_error);
}

/* stats [--json] */
static int tnctl_events_stats(struct tnctl *ctl, int argc, char **argv)
{
	struct tnctl_stats st = { .spool = tnctl_spool(ctl) };
	int64_t now = tn_hook_now_ms();
	bool json = false;
	char since[32];
	int ret;

	if ((ret = tnctl_json_options(argc, argv, 0, &json)) != 0 ||
	    (ret = tnctl_spool_check(st.spool)) != 0)
		return ret;
	tnctl_stats_config(&st, ctl);
	if ((ret = tnctl_stats_spool(&st)) == 0) {
		tn_hook_format_time(now - TNCTL_HOUR_MS, since);
		tnctl_log_scan(st.spool, NULL, since, tnctl_stats_record, &st);
		tnctl_stats_sort(&st);
		if (json)
			tnctl_stats_json(&st, now);
		else
			tnctl_stats_text(&st, now);
	}
	tnctl_stats_free(&st);
	return ret;
}

/* --- enable ----------------------------------------------------------------------- */

/* The endpoint file's "enabled": 1, 0, or -1 (no file, or unreadable). */
static int tnctl_endpoint_enabled(const struct tnctl *ctl, const char *name)
{
	const char *dir = tn_conf_str(ctl->conf, "hookd_endpoints_dir"), *error;
	struct tn_hook_endpoint *eps;
	unsigned count;
	int ret = -1;

	if (tn_hook_endpoints_load(dir, &eps, &count, &error) < 0)
		return -1;
	for (unsigned i = 0; i < count; i++) {
		if (strcmp(eps[i].name, name) == 0)
			ret = eps[i].enabled;
	}
	tn_hook_endpoints_free(&eps, count);
	return ret;
}

/* enable ENDPOINT */
static int tnctl_events_enable(struct tnctl *ctl, int argc, char **argv)
{
	static const struct option none[] = { { NULL, 0, NULL, 0 } };
	const char *spool = tnctl_spool(ctl), *name;
	char *marker;
	int ret;

	if (getopt_long(argc, argv, "", none, NULL) != -1 || optind != argc - 1)
		return EX_USAGE;
	name = argv[optind];
	if ((ret = tnctl_spool_check(spool)) != 0 || (ret = tnctl_check_endpoint(spool, name)) != 0)
		return ret;
	marker = tn_mem_printf("%s/hooks/%s/disabled", spool, name);
	if (unlink(marker) == 0) {
		printf("%s enabled: tn-hookd resumes delivery in order\n", name);
	} else if (errno == ENOENT) {
		printf("%s is not disabled: nothing to do\n", name);
	} else {
		fprintf(stderr, "tnctl: unlink %s: %s\n", marker, strerror(errno));
		ret = EX_TEMPFAIL;
	}
	if (ret == 0 && tnctl_endpoint_enabled(ctl, name) == 0)
		printf("note: its endpoint file says enabled = no: nothing is sent until"
		       " that is changed\n");
	tn_mem_free(&marker);
	return ret;
}

const struct tnctl_command tnctl_events_commands[] = {
	{ "emit", tnctl_events_emit, "emit TYPE --tenant T [--data JSON] [--json]", NULL },
	{ "list", tnctl_events_list, "list [--dead] [--endpoint E] [--limit N] [--json]", NULL },
	{ "show", tnctl_events_show, "show ID [--json]", NULL },
	{ "replay", tnctl_events_replay, "replay ID... | --since TIME [--endpoint E]", NULL },
	{ "stats", tnctl_events_stats, "stats [--json]", NULL },
	{ "enable", tnctl_events_enable, "enable ENDPOINT", NULL },
	{ "verify", tnctl_events_verify,
	  "verify --secret whsec_... [--secret ...] [--tolerance T]"
	  " (--request FILE | --id ID --timestamp TS --signature SIG [--body FILE|-])", NULL },
	{ NULL, NULL, NULL, NULL },
};
