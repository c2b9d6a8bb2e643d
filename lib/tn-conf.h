/*++
 * NAME
 *	tn-conf 3h
 * SUMMARY
 *	configuration files: one format and one parameter table for all programs
 * DESCRIPTION
 *	File format (shared by every tenantmail program, default
 *	/etc/tenantmail/tenantmail.conf):
 *
 *	    # comment (whole lines only; '#' inside a value is kept)
 *	    name = value
 *	    long_name = first part
 *	        continued here        (a line starting with white space
 *	                               continues the previous one; the two
 *	                               are joined with one space)
 *	    [tn-lmtp-router]          (a section: the lines below apply only
 *	                               to that program, until the next
 *	                               section; "[global]" returns to lines
 *	                               every program reads)
 *
 *	Leading and trailing white space of names and values is dropped.
 *	A later setting of a name replaces an earlier one; a program's
 *	section overrides global lines wherever they are in the file.
 *	Lines in sections of other programs are syntax-checked but not
 *	validated against this program's tables.
 *
 *	Every parameter is declared once, in a table (struct tn_conf_param):
 *	name, type, default, bounds and a one-line description. A program
 *	hands its tables to tn_conf_create(). An unknown name, a bad value
 *	or a value out of bounds is an error naming the file and line:
 *	    "/etc/tenantmail/tenantmail.conf:12: unknown parameter 'ldap_ur'"
 *
 *	Value types:
 *	TN_CONF_STR   any text (may be empty).
 *	TN_CONF_INT   decimal integer (64-bit), within [min, max].
 *	TN_CONF_BOOL  yes|no|true|false|on|off|1|0.
 *	TN_CONF_TIME  duration, stored in milliseconds: a number with an
 *	              optional unit ms, s, m, h, d, w; a bare number means
 *	              seconds. Bounds (min/max) are in milliseconds.
 *	TN_CONF_SIZE  bytes: a number with an optional k, m, g suffix
 *	              (binary multiples, case-insensitive, optional "b"/"ib").
 *	TN_CONF_LIST  items separated by commas and/or white space.
 *	TN_CONF_ENUM  one of the '|'-separated words in choices.
 *
 *	Printing: tn_conf_dump() writes "name = value" lines: the non-default
 *	settings (like postconf -n), the defaults (postconf -d) or all
 *	effective values, and tn_conf_dump_doc() one table row per parameter
 *	(used for man pages and the man-page consistency test).
 *
 *	Accessors abort() on a name that is not in the tables or has another
 *	type: that is a programming error, caught by any test that runs the
 *	code.
 *--*/
#ifndef TN_CONF_H
#define TN_CONF_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

enum tn_conf_type {
	TN_CONF_STR,
	TN_CONF_INT,
	TN_CONF_BOOL,
	TN_CONF_TIME,
	TN_CONF_SIZE,
	TN_CONF_LIST,
	TN_CONF_ENUM,
};

struct tn_conf_param {
	const char *name;
	enum tn_conf_type type;
	const char *def;	/* default, in file syntax ("" allowed) */
	int64_t min, max;	/* INT, TIME (ms), SIZE; min == max == 0: unbounded */
	const char *choices;	/* ENUM: "a|b|c"; otherwise NULL */
	const char *doc;	/* one line */
};
/* Tables end with an entry whose name is NULL. */
#define TN_CONF_END { NULL, TN_CONF_STR, NULL, 0, 0, NULL, NULL }

enum tn_conf_dump_mode {
	TN_CONF_DUMP_CHANGED,	/* only values that differ from the default */
	TN_CONF_DUMP_DEFAULTS,	/* every parameter with its default */
	TN_CONF_DUMP_ALL,	/* every parameter with its effective value */
};

struct tn_conf;

/* program: the section name this program reads ("tnctl", "tn-mapd", ...).
 * tables: NULL-terminated array of parameter tables (a program passes the
 * lookup library's table, tn_lookup_params, and its own). */
struct tn_conf *tn_conf_create(const char *program,
			       const struct tn_conf_param *const *tables);
void tn_conf_destroy(struct tn_conf **conf);

/* Read a file. Returns 0, or -1 with *error_r ("file:line: ...", valid
 * until the conf is destroyed). A missing file is an error. */
int tn_conf_load_file(struct tn_conf *conf, const char *path,
		      const char **error_r);
/* Parse text as if it were a file named 'origin' (tests, -o overrides). */
int tn_conf_load_string(struct tn_conf *conf, const char *origin,
			const char *text, const char **error_r);
/* Set one parameter ("-o name=value" on a command line). */
int tn_conf_set(struct tn_conf *conf, const char *name, const char *value,
		const char **error_r);

const char *tn_conf_str(const struct tn_conf *conf, const char *name);
int64_t tn_conf_int(const struct tn_conf *conf, const char *name);
bool tn_conf_bool(const struct tn_conf *conf, const char *name);
int64_t tn_conf_time_ms(const struct tn_conf *conf, const char *name);
uint64_t tn_conf_size(const struct tn_conf *conf, const char *name);
/* NULL-terminated array, owned by conf. */
const char *const *tn_conf_list(const struct tn_conf *conf, const char *name);
/* ENUM: index of the chosen word in choices. */
int tn_conf_enum(const struct tn_conf *conf, const char *name);
/* true when the parameter was set in a file or by tn_conf_set(). */
bool tn_conf_is_set(const struct tn_conf *conf, const char *name);

void tn_conf_dump(const struct tn_conf *conf, FILE *out,
		  enum tn_conf_dump_mode mode);
/* One line per parameter: "name<TAB>type<TAB>default<TAB>doc". */
void tn_conf_dump_doc(const struct tn_conf *conf, FILE *out);

/* Value parsers, exposed for tests and for programs' own options.
 * Return 0 or -1 with a static message in *error_r. */
int tn_conf_parse_time_ms(const char *text, int64_t *ms_r, const char **error_r);
int tn_conf_parse_size(const char *text, uint64_t *bytes_r, const char **error_r);
int tn_conf_parse_bool(const char *text, bool *value_r, const char **error_r);

#endif
