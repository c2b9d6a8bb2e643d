/*++
 * NAME
 *	tn-conf 3
 * SUMMARY
 *	configuration files: one format and one parameter table for all
 *	programs (see tn-conf.h)
 * DESCRIPTION
 *	Parameters of all tables handed to tn_conf_create() are kept in
 *	one array sorted by name (looked up by binary search; dumps come
 *	out in that order). Each keeps its effective value as text in
 *	file syntax plus the parsed form; the value types are handled
 *	through a table of {type, name, parse, format} entries.
 *
 *	Reading. A file is read line by line (a physical line longer than
 *	CONF_LINE_MAX is an error, and so is a NUL byte). Blank lines and
 *	lines whose first non-blank character is '#' are skipped and do not
 *	end a logical line. A line starting with a space or tab continues
 *	the logical line; a logical line longer than CONF_LINE_MAX after
 *	joining is an error naming its first line, and errors about a
 *	setting name the line where the setting starts. Names are
 *	[a-z0-9_]+; section headers are "[name]" with name
 *	[A-Za-z0-9_.-]+ and take no continuation.
 *
 *	One file is applied as a whole: settings are staged while it is
 *	read and copied into the configuration only when the file had no
 *	error, so a failed load changes nothing. Within a file a setting in
 *	this program's section beats a global one wherever they are; among
 *	equals the later wins. A later file, string or tn_conf_set()
 *	replaces what earlier ones set.
 *
 *	Values: BOOL words are matched case-insensitively, TIME units and
 *	ENUM words exactly, SIZE suffixes case-insensitively ("b" alone
 *	means bytes). Numbers are plain decimal digits: no white space, no
 *	sign (INT takes an optional sign), no fraction.
 *
 *	Printing uses one canonical form per type, which the parser reads
 *	back: TIME in the largest unit that is exact (1500ms, 5s, 2m, 1d),
 *	SIZE as g/m/k when exact and bytes otherwise, BOOL as yes/no, LIST
 *	joined with ", ". TN_CONF_DUMP_CHANGED compares canonical forms, so
 *	"60s" against a default of "1m" is not a change.
 *
 *	Error texts are kept until the configuration is destroyed. Text
 *	taken from a file or from tn_conf_set() is passed through
 *	tn_log_sanitize() and bounded before it appears in one.
 *
 *	A bad table is a programming error and aborts in tn_conf_create():
 *	an invalid or duplicate name, an unknown type, a NULL default, a
 *	default that does not parse or is out of bounds, min > max, negative
 *	bounds for TIME or SIZE, an ENUM without choices or with an empty
 *	choice. So does an accessor call with an unknown name or the wrong
 *	type.
 *--*/
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "tn-conf.h"
#include "tn-log.h"
#include "tn-mem.h"

#define CONF_LINE_MAX	65536		/* longest line, physical or joined */
#define CONF_QUOTE_MAX	(TN_LOG_VALUE_MAX + 1)	/* quoted text in errors */
#define CONF_ERROR_MAX	1024		/* error text without the origin */

struct conf_value {
	int64_t num;		/* INT, TIME (ms), BOOL (0/1), ENUM (index) */
	uint64_t size;		/* SIZE */
	char **list;		/* LIST: NULL-terminated */
};

struct conf_type {
	enum tn_conf_type type;
	const char *word;	/* in tn_conf_dump_doc() */
	bool bounded;		/* min/max apply */
	int (*parse)(const struct tn_conf_param *param, const char *text,
		     struct conf_value *value_r, char *reason, size_t size);
	char *(*format)(const struct tn_conf_param *param, const char *text,
			const struct conf_value *value);
};

struct conf_entry {
	const struct tn_conf_param *param;
	const struct conf_type *type;
	char *text;		/* effective value, file syntax, trimmed */
	struct conf_value value;
	char *def_text;		/* default in canonical form */
	bool is_set;
};

struct conf_error {
	struct conf_error *next;
	char *text;
};

struct tn_conf {
	char *program;
	struct conf_entry *entries;	/* sorted by name */
	size_t count;
	struct conf_error *errors;
};

/* Units: a suffix and what one of it is worth. */
struct conf_unit {
	const char *suffix;
	uint64_t mult;
};

struct conf_scale {
	const struct conf_unit *units;	/* canonical units first, biggest first */
	bool nocase;
	const char *unit_error;
};

static const struct conf_unit conf_time_units[] = {
	{ "w", 604800000 }, { "d", 86400000 }, { "h", 3600000 },
	{ "m", 60000 }, { "s", 1000 }, { "ms", 1 }, { "", 1000 },
	{ NULL, 0 }
};

static const struct conf_scale conf_time_scale = {
	conf_time_units, false, "unknown time unit (use ms, s, m, h, d or w)"
};

static const struct conf_unit conf_size_units[] = {
	{ "g", 1073741824 }, { "m", 1048576 }, { "k", 1024 }, { "", 1 },
	{ "gb", 1073741824 }, { "gib", 1073741824 },
	{ "mb", 1048576 }, { "mib", 1048576 },
	{ "kb", 1024 }, { "kib", 1024 }, { "b", 1 },
	{ NULL, 0 }
};

static const struct conf_scale conf_size_scale = {
	conf_size_units, true, "unknown size unit (use k, m or g)"
};

static const struct {
	const char *word;
	bool value;
} conf_bool_words[] = {
	{ "yes", true }, { "no", false }, { "true", true }, { "false", false },
	{ "on", true }, { "off", false }, { "1", true }, { "0", false },
};

/*
 * Small helpers.
 */

static void __attribute__((noreturn, format(printf, 1, 2)))
conf_panic(const char *fmt, ...)
{
	char msg[CONF_ERROR_MAX];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	tn_log(TN_LOG_ERROR, NULL, "tn-conf: programming error: %s", msg);
	abort();
}

static bool conf_is_space(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n' ||
	       c == '\f' || c == '\v';
}

static bool conf_is_name_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
}

static bool conf_is_section_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	       (c >= '0' && c <= '9') || c == '_' || c == '.' || c == '-';
}

static bool conf_chars_ok(const char *s, size_t len, bool (*ok)(char))
{
	size_t i;

	if (len == 0)
		return false;
	for (i = 0; i < len; i++) {
		if (!ok(s[i]))
			return false;
	}
	return true;
}

/* Trim white space around s[0..len). */
static void conf_span_trim(const char **s, size_t *len)
{
	while (*len > 0 && conf_is_space(**s)) {
		(*s)++;
		(*len)--;
	}
	while (*len > 0 && conf_is_space((*s)[*len - 1]))
		(*len)--;
}

/* Trim white space around a writable string, in place. */
static char *conf_strip(char *s)
{
	size_t len = strlen(s);
	const char *start = s;

	conf_span_trim(&start, &len);
	s += start - s;
	s[len] = '\0';
	return s;
}

/* Sanitised, bounded copy of untrusted text for an error message. */
static const char *conf_quote(char buf[CONF_QUOTE_MAX], const char *s, size_t len)
{
	return tn_log_sanitize(buf, CONF_QUOTE_MAX, s, len);
}

static void conf_reason(char *reason, size_t size, const char *text)
{
	snprintf(reason, size, "%s", text);
}

static const struct conf_type *conf_type_find(enum tn_conf_type type);

/*
 * Value parsers.
 */

/* Unsigned decimal digits at the start of text; *end_r is set after them. */
static int conf_parse_digits(const char *text, uint64_t *value_r,
			     const char **end_r, const char **error_r)
{
	uint64_t value = 0;
	const char *p;

	if (*text == '\0') {
		*error_r = "empty value";
		return -1;
	}
	if (*text < '0' || *text > '9') {
		*error_r = *text == '-' ? "negative value" : "not a number";
		return -1;
	}
	for (p = text; *p >= '0' && *p <= '9'; p++) {
		unsigned int digit = (unsigned int)(*p - '0');

		if (value > (UINT64_MAX - digit) / 10) {
			*error_r = "number too large";
			return -1;
		}
		value = value * 10 + digit;
	}
	*value_r = value;
	*end_r = p;
	return 0;
}

static const struct conf_unit *conf_unit_find(const struct conf_scale *scale,
					      const char *suffix)
{
	const struct conf_unit *unit;

	for (unit = scale->units; unit->suffix != NULL; unit++) {
		if (scale->nocase ? strcasecmp(unit->suffix, suffix) == 0 :
		    strcmp(unit->suffix, suffix) == 0)
			return unit;
	}
	return NULL;
}

static int conf_parse_scaled(const char *text, const struct conf_scale *scale,
			     uint64_t max, uint64_t *value_r,
			     const char **error_r)
{
	const struct conf_unit *unit;
	const char *end;
	uint64_t number;

	if (conf_parse_digits(text, &number, &end, error_r) < 0)
		return -1;
	unit = conf_unit_find(scale, end);
	if (unit == NULL) {
		*error_r = scale->unit_error;
		return -1;
	}
	if (number > max / unit->mult) {
		*error_r = "number too large";
		return -1;
	}
	*value_r = number * unit->mult;
	return 0;
}

int tn_conf_parse_time_ms(const char *text, int64_t *ms_r, const char **error_r)
{
	uint64_t ms;

	if (conf_parse_scaled(text, &conf_time_scale, INT64_MAX, &ms, error_r) < 0)
		return -1;
	*ms_r = (int64_t)ms;
	return 0;
}

int tn_conf_parse_size(const char *text, uint64_t *bytes_r, const char **error_r)
{
	return conf_parse_scaled(text, &conf_size_scale, UINT64_MAX, bytes_r,
				 error_r);
}

int tn_conf_parse_bool(const char *text, bool *value_r, const char **error_r)
{
	size_t i;

	for (i = 0; i < sizeof(conf_bool_words) / sizeof(conf_bool_words[0]); i++) {
		if (strcasecmp(text, conf_bool_words[i].word) == 0) {
			*value_r = conf_bool_words[i].value;
			return 0;
		}
	}
	*error_r = "expected yes, no, true, false, on, off, 1 or 0";
	return -1;
}

static int conf_parse_str(const struct tn_conf_param *param, const char *text,
			  struct conf_value *value_r, char *reason, size_t size)
{
	return 0;
}

static int conf_parse_int(const struct tn_conf_param *param, const char *text,
			  struct conf_value *value_r, char *reason, size_t size)
{
	bool negative = text[0] == '-';
	const char *digits = text + (negative || text[0] == '+');
	const char *error, *end;
	uint64_t mag;

	if (*text == '\0') {
		conf_reason(reason, size, "empty value");
		return -1;
	}
	if (conf_parse_digits(digits, &mag, &end, &error) < 0) {
		conf_reason(reason, size, *digits == '\0' || *digits == '-' ?
			    "not a number" : error);
		return -1;
	}
	if (*end != '\0') {
		conf_reason(reason, size, "not a number");
		return -1;
	}
	if (mag > (uint64_t)INT64_MAX + negative) {
		conf_reason(reason, size, "number too large");
		return -1;
	}
	value_r->num = negative ? -(int64_t)(mag - 1) - 1 : (int64_t)mag;
	return 0;
}

static int conf_parse_bool_value(const struct tn_conf_param *param,
				 const char *text, struct conf_value *value_r,
				 char *reason, size_t size)
{
	const char *error;
	bool value;

	if (tn_conf_parse_bool(text, &value, &error) < 0) {
		conf_reason(reason, size, error);
		return -1;
	}
	value_r->num = value;
	return 0;
}

static int conf_parse_time_value(const struct tn_conf_param *param,
				 const char *text, struct conf_value *value_r,
				 char *reason, size_t size)
{
	const char *error;

	if (tn_conf_parse_time_ms(text, &value_r->num, &error) < 0) {
		conf_reason(reason, size, error);
		return -1;
	}
	return 0;
}

static int conf_parse_size_value(const struct tn_conf_param *param,
				 const char *text, struct conf_value *value_r,
				 char *reason, size_t size)
{
	const char *error;

	if (tn_conf_parse_size(text, &value_r->size, &error) < 0) {
		conf_reason(reason, size, error);
		return -1;
	}
	return 0;
}

#define CONF_LIST_SEPARATORS ", \t\r\n\f\v"

static size_t conf_list_count(const char *text)
{
	size_t count = 0;
	const char *p;

	for (p = text + strspn(text, CONF_LIST_SEPARATORS); *p != '\0';
	     p += strspn(p, CONF_LIST_SEPARATORS)) {
		p += strcspn(p, CONF_LIST_SEPARATORS);
		count++;
	}
	return count;
}

static int conf_parse_list(const struct tn_conf_param *param, const char *text,
			   struct conf_value *value_r, char *reason, size_t size)
{
	char **items = tn_mem_calloc(conf_list_count(text) + 1, sizeof(*items));
	size_t n = 0, len;
	const char *p;

	for (p = text + strspn(text, CONF_LIST_SEPARATORS); *p != '\0';
	     p += strspn(p, CONF_LIST_SEPARATORS)) {
		len = strcspn(p, CONF_LIST_SEPARATORS);
		items[n++] = tn_mem_strndup(p, len);
		p += len;
	}
	items[n] = NULL;
	value_r->list = items;
	return 0;
}

static int conf_parse_enum(const struct tn_conf_param *param, const char *text,
			   struct conf_value *value_r, char *reason, size_t size)
{
	const char *word = param->choices;
	size_t len = strlen(text), wlen;
	int index_no = 0;

	for (;;) {
		wlen = strcspn(word, "|");
		if (wlen == len && strncmp(word, text, len) == 0) {
			value_r->num = index_no;
			return 0;
		}
		if (word[wlen] == '\0')
			break;
		word += wlen + 1;
		index_no++;
	}
	snprintf(reason, size, "expected one of %s", param->choices);
	return -1;
}

/*
 * Value formatters: the canonical text of a value, freshly allocated.
 */

static char *conf_format_str(const struct tn_conf_param *param,
			     const char *text, const struct conf_value *value)
{
	return tn_mem_strdup(text);
}

static char *conf_format_int(const struct tn_conf_param *param,
			     const char *text, const struct conf_value *value)
{
	return tn_mem_printf("%" PRId64, value->num);
}

static char *conf_format_bool(const struct tn_conf_param *param,
			      const char *text, const struct conf_value *value)
{
	return tn_mem_strdup(value->num ? "yes" : "no");
}

/* The first unit of the table with a suffix that divides the value. */
static char *conf_format_scaled(uint64_t value, const struct conf_unit *units)
{
	const struct conf_unit *unit;

	for (unit = units; unit->suffix != NULL; unit++) {
		if (value % unit->mult == 0)
			break;
	}
	return tn_mem_printf("%" PRIu64 "%s", value / unit->mult, unit->suffix);
}

static char *conf_format_time(const struct tn_conf_param *param,
			      const char *text, const struct conf_value *value)
{
	if (value->num == 0)
		return tn_mem_strdup("0s");
	return conf_format_scaled((uint64_t)value->num, conf_time_units);
}

static char *conf_format_size(const struct tn_conf_param *param,
			      const char *text, const struct conf_value *value)
{
	if (value->size == 0)
		return tn_mem_strdup("0");
	return conf_format_scaled(value->size, conf_size_units);
}

static char *conf_format_list(const struct tn_conf_param *param,
			      const char *text, const struct conf_value *value)
{
	size_t len = 1, i;
	char *out;

	for (i = 0; value->list[i] != NULL; i++)
		len += strlen(value->list[i]) + 2;
	out = tn_mem_alloc(len);
	out[0] = '\0';
	for (i = 0; value->list[i] != NULL; i++) {
		if (i > 0)
			strcat(out, ", ");
		strcat(out, value->list[i]);
	}
	return out;
}

static char *conf_format_enum(const struct tn_conf_param *param,
			      const char *text, const struct conf_value *value)
{
	const char *word = param->choices;
	int64_t i;

	for (i = 0; i < value->num; i++)
		word += strcspn(word, "|") + 1;
	return tn_mem_strndup(word, strcspn(word, "|"));
}

static const struct conf_type conf_types[] = {
	{ TN_CONF_STR, "str", false, conf_parse_str, conf_format_str },
	{ TN_CONF_INT, "int", true, conf_parse_int, conf_format_int },
	{ TN_CONF_BOOL, "bool", false, conf_parse_bool_value, conf_format_bool },
	{ TN_CONF_TIME, "time", true, conf_parse_time_value, conf_format_time },
	{ TN_CONF_SIZE, "size", true, conf_parse_size_value, conf_format_size },
	{ TN_CONF_LIST, "list", false, conf_parse_list, conf_format_list },
	{ TN_CONF_ENUM, "enum", false, conf_parse_enum, conf_format_enum },
};

static const struct conf_type *conf_type_find(enum tn_conf_type type)
{
	size_t i;

	for (i = 0; i < sizeof(conf_types) / sizeof(conf_types[0]); i++) {
		if (conf_types[i].type == type)
			return &conf_types[i];
	}
	return NULL;
}

/*
 * Values of a parameter: parse, check bounds, free.
 */

static void conf_value_free(struct conf_value *value)
{
	size_t i;

	if (value->list != NULL) {
		for (i = 0; value->list[i] != NULL; i++)
			free(value->list[i]);
		tn_mem_free(&value->list);
	}
}

static bool conf_bounded(const struct tn_conf_param *param)
{
	return conf_type_find(param->type)->bounded &&
	       (param->min != 0 || param->max != 0);
}

static bool conf_in_bounds(const struct tn_conf_param *param,
			   const struct conf_value *value)
{
	if (!conf_bounded(param))
		return true;
	if (param->type == TN_CONF_SIZE)
		return value->size <= INT64_MAX &&
		       (int64_t)value->size >= param->min &&
		       (int64_t)value->size <= param->max;
	return value->num >= param->min && value->num <= param->max;
}

static char *conf_format_bound(const struct tn_conf_param *param, int64_t bound)
{
	struct conf_value value = { .num = bound, .size = (uint64_t)bound };

	return conf_type_find(param->type)->format(param, "", &value);
}

/* Parse text into *value_r; on error write "bad value ..." or "... must
 * be between ..." into reason. */
static int conf_value_parse(const struct tn_conf_param *param, const char *text,
			    struct conf_value *value_r, char *reason, size_t size)
{
	char why[CONF_ERROR_MAX / 2], quoted[CONF_QUOTE_MAX];
	char *min, *max;

	memset(value_r, 0, sizeof(*value_r));
	if (conf_type_find(param->type)->parse(param, text, value_r, why,
					       sizeof(why)) < 0) {
		snprintf(reason, size, "bad value for '%s': '%s': %s", param->name,
			 conf_quote(quoted, text, strlen(text)), why);
		return -1;
	}
	if (conf_in_bounds(param, value_r))
		return 0;
	conf_value_free(value_r);
	min = conf_format_bound(param, param->min);
	max = conf_format_bound(param, param->max);
	snprintf(reason, size, "'%s' must be between %s and %s", param->name,
		 min, max);
	free(min);
	free(max);
	return -1;
}

/*
 * Errors: kept in the conf until it is destroyed.
 */

static int __attribute__((format(printf, 5, 6)))
conf_fail(struct tn_conf *conf, const char **error_r, const char *origin,
	  unsigned int lineno, const char *fmt, ...)
{
	struct conf_error *error = tn_mem_alloc(sizeof(*error));
	char body[CONF_ERROR_MAX];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(body, sizeof(body), fmt, ap);
	va_end(ap);
	if (origin == NULL)
		error->text = tn_mem_strdup(body);
	else if (lineno == 0)
		error->text = tn_mem_printf("%s: %s", origin, body);
	else
		error->text = tn_mem_printf("%s:%u: %s", origin, lineno, body);
	error->next = conf->errors;
	conf->errors = error;
	*error_r = error->text;
	return -1;
}

/*
 * Creating and destroying.
 */

static int conf_entry_cmp(const void *a, const void *b)
{
	const struct conf_entry *ea = a, *eb = b;

	return strcmp(ea->param->name, eb->param->name);
}

static struct conf_entry *conf_lookup(const struct tn_conf *conf,
				      const char *name)
{
	size_t lo = 0, hi = conf->count, mid;
	int cmp;

	while (lo < hi) {
		mid = lo + (hi - lo) / 2;
		cmp = strcmp(name, conf->entries[mid].param->name);
		if (cmp == 0)
			return &conf->entries[mid];
		if (cmp < 0)
			hi = mid;
		else
			lo = mid + 1;
	}
	return NULL;
}

static void conf_check_choices(const struct tn_conf_param *param)
{
	const char *word = param->choices;
	size_t wlen;

	if (word == NULL)
		conf_panic("enum '%s' has no choices", param->name);
	for (;;) {
		wlen = strcspn(word, "|");
		if (wlen == 0)
			conf_panic("enum '%s' has an empty choice", param->name);
		if (word[wlen] == '\0')
			return;
		word += wlen + 1;
	}
}

static void conf_check_param(const struct tn_conf_param *param)
{
	if (!conf_chars_ok(param->name, strlen(param->name), conf_is_name_char))
		conf_panic("bad parameter name '%s'", param->name);
	if (conf_type_find(param->type) == NULL)
		conf_panic("'%s' has unknown type %d", param->name, (int)param->type);
	if (param->def == NULL)
		conf_panic("'%s' has no default", param->name);
	if (param->min > param->max)
		conf_panic("'%s' has min > max", param->name);
	if ((param->type == TN_CONF_TIME || param->type == TN_CONF_SIZE) &&
	    param->min < 0)
		conf_panic("'%s' has a negative bound", param->name);
	if (param->type == TN_CONF_ENUM)
		conf_check_choices(param);
}

static void conf_entry_init(struct conf_entry *entry,
			    const struct tn_conf_param *param)
{
	char reason[CONF_ERROR_MAX];
	const char *def = param->def;
	size_t len;

	conf_check_param(param);
	len = strlen(def);
	conf_span_trim(&def, &len);
	entry->param = param;
	entry->type = conf_type_find(param->type);
	entry->text = tn_mem_strndup(def, len);
	if (conf_value_parse(param, entry->text, &entry->value, reason,
			     sizeof(reason)) < 0)
		conf_panic("default of '%s' is invalid: %s", param->name, reason);
	entry->def_text = entry->type->format(param, entry->text, &entry->value);
}

static size_t conf_count_params(const struct tn_conf_param *const *tables)
{
	const struct tn_conf_param *param;
	size_t count = 0;

	for (; tables != NULL && *tables != NULL; tables++) {
		for (param = *tables; param->name != NULL; param++)
			count++;
	}
	return count;
}

struct tn_conf *tn_conf_create(const char *program,
			       const struct tn_conf_param *const *tables)
{
	struct tn_conf *conf = tn_mem_calloc(1, sizeof(*conf));
	const struct tn_conf_param *param;
	size_t n = 0, i;

	if (program == NULL)
		conf_panic("tn_conf_create() without a program name");
	conf->program = tn_mem_strdup(program);
	conf->count = conf_count_params(tables);
	conf->entries = tn_mem_calloc(conf->count, sizeof(*conf->entries));
	for (; tables != NULL && *tables != NULL; tables++) {
		for (param = *tables; param->name != NULL; param++)
			conf_entry_init(&conf->entries[n++], param);
	}
	qsort(conf->entries, conf->count, sizeof(*conf->entries), conf_entry_cmp);
	for (i = 1; i < conf->count; i++) {
		if (conf_entry_cmp(&conf->entries[i - 1], &conf->entries[i]) == 0)
			conf_panic("parameter '%s' is declared twice",
				   conf->entries[i].param->name);
	}
	return conf;
}

static void conf_entry_replace(struct conf_entry *entry, char *text,
			       struct conf_value *value)
{
	free(entry->text);
	conf_value_free(&entry->value);
	entry->text = text;
	entry->value = *value;
	entry->is_set = true;
}

void tn_conf_destroy(struct tn_conf **confp)
{
	struct tn_conf *conf = *confp;
	struct conf_error *error;
	size_t i;

	if (conf == NULL)
		return;
	for (i = 0; i < conf->count; i++) {
		free(conf->entries[i].text);
		free(conf->entries[i].def_text);
		conf_value_free(&conf->entries[i].value);
	}
	while ((error = conf->errors) != NULL) {
		conf->errors = error->next;
		free(error->text);
		free(error);
	}
	free(conf->entries);
	free(conf->program);
	tn_mem_free(confp);
}

/*
 * The parser: physical lines in, staged settings out.
 */

enum conf_section {
	CONF_SECTION_GLOBAL,
	CONF_SECTION_OWN,
	CONF_SECTION_OTHER,
};

/* Priorities of staged settings; a higher one is never replaced by a lower. */
#define CONF_PRIO_GLOBAL	1
#define CONF_PRIO_OWN		2

struct conf_stage {
	char *text;
	struct conf_value value;
	int prio;		/* 0: nothing staged */
};

struct conf_parser {
	struct tn_conf *conf;
	const char *origin;
	const char **error_r;
	struct conf_stage *stage;	/* one per entry */
	enum conf_section section;
	unsigned int lineno;		/* physical line last read */
	char *logical;			/* current logical line, joined */
	size_t logical_len;
	unsigned int logical_lineno;	/* its first line; 0: none */
};

static int __attribute__((format(printf, 3, 4)))
conf_parser_fail(struct conf_parser *p, unsigned int lineno, const char *fmt, ...)
{
	char body[CONF_ERROR_MAX];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(body, sizeof(body), fmt, ap);
	va_end(ap);
	return conf_fail(p->conf, p->error_r, p->origin, lineno, "%s", body);
}

static void conf_stage_clear(struct conf_stage *stage)
{
	tn_mem_free(&stage->text);
	conf_value_free(&stage->value);
	stage->prio = 0;
}

static int conf_parser_stage(struct conf_parser *p, unsigned int lineno,
			     struct conf_entry *entry, const char *text)
{
	struct conf_stage *stage = &p->stage[entry - p->conf->entries];
	int prio = p->section == CONF_SECTION_OWN ? CONF_PRIO_OWN : CONF_PRIO_GLOBAL;
	char reason[CONF_ERROR_MAX];
	struct conf_value value;

	if (conf_value_parse(entry->param, text, &value, reason, sizeof(reason)) < 0)
		return conf_parser_fail(p, lineno, "%s", reason);
	if (prio < stage->prio) {
		conf_value_free(&value);
		return 0;
	}
	conf_stage_clear(stage);
	stage->text = tn_mem_strdup(text);
	stage->value = value;
	stage->prio = prio;
	return 0;
}

/* A complete "name = value" line, starting at line lineno. */
static int conf_parser_setting(struct conf_parser *p, unsigned int lineno,
			       char *line)
{
	char *eq = strchr(line, '='), quoted[CONF_QUOTE_MAX];
	const char *name, *value;
	struct conf_entry *entry;

	if (eq == NULL)
		return conf_parser_fail(p, lineno,
					"syntax error: expected 'name = value'");
	*eq = '\0';
	name = conf_strip(line);
	value = conf_strip(eq + 1);
	if (*name == '\0')
		return conf_parser_fail(p, lineno,
					"syntax error: expected 'name = value'");
	if (!conf_chars_ok(name, strlen(name), conf_is_name_char))
		return conf_parser_fail(p, lineno, "syntax error: bad parameter name '%s'",
					conf_quote(quoted, name, strlen(name)));
	if (p->section == CONF_SECTION_OTHER)
		return 0;
	entry = conf_lookup(p->conf, name);
	if (entry == NULL)
		return conf_parser_fail(p, lineno, "unknown parameter '%s'",
					conf_quote(quoted, name, strlen(name)));
	return conf_parser_stage(p, lineno, entry, value);
}

static int conf_parser_flush(struct conf_parser *p)
{
	unsigned int lineno = p->logical_lineno;

	if (lineno == 0)
		return 0;
	p->logical_lineno = 0;
	return conf_parser_setting(p, lineno, p->logical);
}

static int conf_parser_section(struct conf_parser *p, const char *line,
			       size_t len)
{
	char quoted[CONF_QUOTE_MAX];
	const char *name;
	size_t nlen;

	conf_span_trim(&line, &len);
	name = line + 1;
	nlen = len >= 2 ? len - 2 : 0;
	if (len < 3 || line[len - 1] != ']' ||
	    !conf_chars_ok(name, nlen, conf_is_section_char))
		return conf_parser_fail(p, p->lineno,
					"syntax error: bad section header '%s'",
					conf_quote(quoted, line, len));
	if (nlen == 6 && memcmp(name, "global", 6) == 0)
		p->section = CONF_SECTION_GLOBAL;
	else if (strlen(p->conf->program) == nlen &&
		 memcmp(name, p->conf->program, nlen) == 0)
		p->section = CONF_SECTION_OWN;
	else
		p->section = CONF_SECTION_OTHER;
	return 0;
}

static int conf_parser_start(struct conf_parser *p, const char *line, size_t len)
{
	conf_span_trim(&line, &len);
	memcpy(p->logical, line, len);
	p->logical[len] = '\0';
	p->logical_len = len;
	p->logical_lineno = p->lineno;
	return 0;
}

static int conf_parser_continue(struct conf_parser *p, const char *line,
				size_t len)
{
	if (p->logical_lineno == 0)
		return conf_parser_fail(p, p->lineno,
					"continuation line with nothing to continue");
	conf_span_trim(&line, &len);
	if (p->logical_len + 1 + len > CONF_LINE_MAX)
		return conf_parser_fail(p, p->logical_lineno,
					"line too long (more than %d bytes)",
					CONF_LINE_MAX);
	p->logical[p->logical_len++] = ' ';
	memcpy(p->logical + p->logical_len, line, len);
	p->logical_len += len;
	p->logical[p->logical_len] = '\0';
	return 0;
}

static bool conf_is_blank_or_comment(const char *line, size_t len)
{
	size_t i = 0;

	while (i < len && conf_is_space(line[i]))
		i++;
	return i == len || line[i] == '#';
}

/* One physical line, without its newline. */
static int conf_parser_line(struct conf_parser *p, const char *line, size_t len)
{
	p->lineno++;
	if (len > CONF_LINE_MAX)
		return conf_parser_fail(p, p->lineno,
					"line too long (more than %d bytes)",
					CONF_LINE_MAX);
	if (memchr(line, '\0', len) != NULL)
		return conf_parser_fail(p, p->lineno, "syntax error: NUL byte in line");
	if (conf_is_blank_or_comment(line, len))
		return 0;
	if (line[0] == ' ' || line[0] == '\t')
		return conf_parser_continue(p, line, len);
	if (conf_parser_flush(p) < 0)
		return -1;
	if (line[0] == '[')
		return conf_parser_section(p, line, len);
	return conf_parser_start(p, line, len);
}

static void conf_parser_init(struct conf_parser *p, struct tn_conf *conf,
			     const char *origin, const char **error_r)
{
	memset(p, 0, sizeof(*p));
	p->conf = conf;
	p->origin = origin;
	p->error_r = error_r;
	p->stage = tn_mem_calloc(conf->count, sizeof(*p->stage));
	p->section = CONF_SECTION_GLOBAL;
	p->logical = tn_mem_alloc(CONF_LINE_MAX + 1);
}

/* Apply what was staged, or (commit false) throw it away. */
static void conf_parser_deinit(struct conf_parser *p, bool commit)
{
	struct conf_stage *stage;
	size_t i;

	for (i = 0; i < p->conf->count; i++) {
		stage = &p->stage[i];
		if (commit && stage->prio > 0) {
			conf_entry_replace(&p->conf->entries[i], stage->text,
					   &stage->value);
			memset(stage, 0, sizeof(*stage));
		}
		conf_stage_clear(stage);
	}
	free(p->stage);
	free(p->logical);
}

/*
 * Sources of lines: a string or a file.
 */

struct conf_reader {
	/* 1: a line, 0: end, -1: read error (errno set) */
	int (*next)(struct conf_reader *reader, const char **line_r,
		    size_t *len_r);
	const char *text;	/* string: what is left */
	FILE *fp;		/* file */
	char *buf;		/* file: CONF_LINE_MAX + 2 bytes */
};

static int conf_string_next(struct conf_reader *reader, const char **line_r,
			    size_t *len_r)
{
	const char *nl;

	if (*reader->text == '\0')
		return 0;
	nl = strchr(reader->text, '\n');
	*line_r = reader->text;
	*len_r = nl != NULL ? (size_t)(nl - reader->text) : strlen(reader->text);
	reader->text += *len_r + (nl != NULL);
	return 1;
}

/* A line longer than CONF_LINE_MAX comes back cut to CONF_LINE_MAX + 1
 * bytes, which the parser rejects; the rest of it is skipped. */
static int conf_file_next(struct conf_reader *reader, const char **line_r,
			  size_t *len_r)
{
	size_t len = 0;
	int c;

	while ((c = getc(reader->fp)) != EOF && c != '\n') {
		if (len <= CONF_LINE_MAX)
			reader->buf[len++] = (char)c;
	}
	if (c == EOF && ferror(reader->fp))
		return -1;
	if (c == EOF && len == 0)
		return 0;
	reader->buf[len] = '\0';
	*line_r = reader->buf;
	*len_r = len;
	return 1;
}

static int conf_load(struct tn_conf *conf, const char *origin,
		     struct conf_reader *reader, const char **error_r)
{
	struct conf_parser p;
	const char *line;
	size_t len;
	int ret;

	conf_parser_init(&p, conf, origin, error_r);
	while ((ret = reader->next(reader, &line, &len)) > 0) {
		if (conf_parser_line(&p, line, len) < 0)
			break;
	}
	if (ret < 0)
		conf_fail(conf, error_r, origin, 0, "read error: %s", strerror(errno));
	else if (ret == 0)
		ret = conf_parser_flush(&p);
	else
		ret = -1;
	conf_parser_deinit(&p, ret == 0);
	return ret;
}

int tn_conf_load_string(struct tn_conf *conf, const char *origin,
			const char *text, const char **error_r)
{
	struct conf_reader reader = { .next = conf_string_next, .text = text };

	return conf_load(conf, origin, &reader, error_r);
}

int tn_conf_load_file(struct tn_conf *conf, const char *path,
		      const char **error_r)
{
	struct conf_reader reader = { .next = conf_file_next };
	int ret;

	reader.fp = fopen(path, "re");
	if (reader.fp == NULL)
		return conf_fail(conf, error_r, path, 0, "cannot open: %s",
				 strerror(errno));
	reader.buf = tn_mem_alloc(CONF_LINE_MAX + 2);
	ret = conf_load(conf, path, &reader, error_r);
	free(reader.buf);
	fclose(reader.fp);
	return ret;
}

int tn_conf_set(struct tn_conf *conf, const char *name, const char *value,
		const char **error_r)
{
	struct conf_entry *entry = conf_lookup(conf, name);
	char reason[CONF_ERROR_MAX], quoted[CONF_QUOTE_MAX];
	struct conf_value parsed;
	size_t len = strlen(value);
	char *text;

	if (entry == NULL)
		return conf_fail(conf, error_r, NULL, 0, "unknown parameter '%s'",
				 conf_quote(quoted, name, strlen(name)));
	conf_span_trim(&value, &len);
	if (len > CONF_LINE_MAX || memchr(value, '\n', len) != NULL)
		return conf_fail(conf, error_r, NULL, 0,
				 "bad value for '%s': '%s': %s", entry->param->name,
				 conf_quote(quoted, value, len),
				 len > CONF_LINE_MAX ? "value too long" :
				 "line break in value");
	text = tn_mem_strndup(value, len);
	if (conf_value_parse(entry->param, text, &parsed, reason, sizeof(reason)) < 0) {
		free(text);
		return conf_fail(conf, error_r, NULL, 0, "%s", reason);
	}
	conf_entry_replace(entry, text, &parsed);
	return 0;
}

/*
 * Accessors.
 */

static const struct conf_entry *conf_get(const struct tn_conf *conf,
					 const char *name,
					 enum tn_conf_type type)
{
	const struct conf_entry *entry = conf_lookup(conf, name);

	if (entry == NULL)
		conf_panic("no parameter '%s'", name);
	if (entry->param->type != type)
		conf_panic("parameter '%s' is of type %s, not %s", name,
			   entry->type->word, conf_type_find(type)->word);
	return entry;
}

const char *tn_conf_str(const struct tn_conf *conf, const char *name)
{
	return conf_get(conf, name, TN_CONF_STR)->text;
}

int64_t tn_conf_int(const struct tn_conf *conf, const char *name)
{
	return conf_get(conf, name, TN_CONF_INT)->value.num;
}

bool tn_conf_bool(const struct tn_conf *conf, const char *name)
{
	return conf_get(conf, name, TN_CONF_BOOL)->value.num != 0;
}

int64_t tn_conf_time_ms(const struct tn_conf *conf, const char *name)
{
	return conf_get(conf, name, TN_CONF_TIME)->value.num;
}

uint64_t tn_conf_size(const struct tn_conf *conf, const char *name)
{
	return conf_get(conf, name, TN_CONF_SIZE)->value.size;
}

const char *const *tn_conf_list(const struct tn_conf *conf, const char *name)
{
	return (const char *const *)conf_get(conf, name, TN_CONF_LIST)->value.list;
}

int tn_conf_enum(const struct tn_conf *conf, const char *name)
{
	return (int)conf_get(conf, name, TN_CONF_ENUM)->value.num;
}

bool tn_conf_is_set(const struct tn_conf *conf, const char *name)
{
	const struct conf_entry *entry = conf_lookup(conf, name);

	if (entry == NULL)
		conf_panic("no parameter '%s'", name);
	return entry->is_set;
}

/*
 * Printing.
 */

static void conf_dump_line(FILE *out, const char *name, const char *value)
{
	if (*value == '\0')
		fprintf(out, "%s =\n", name);
	else
		fprintf(out, "%s = %s\n", name, value);
}

void tn_conf_dump(const struct tn_conf *conf, FILE *out,
		  enum tn_conf_dump_mode mode)
{
	const struct conf_entry *entry;
	char *value;
	size_t i;

	for (i = 0; i < conf->count; i++) {
		entry = &conf->entries[i];
		value = entry->type->format(entry->param, entry->text, &entry->value);
		if (mode == TN_CONF_DUMP_DEFAULTS)
			conf_dump_line(out, entry->param->name, entry->def_text);
		else if (mode == TN_CONF_DUMP_ALL ||
			 strcmp(value, entry->def_text) != 0)
			conf_dump_line(out, entry->param->name, value);
		free(value);
	}
}

void tn_conf_dump_doc(const struct tn_conf *conf, FILE *out)
{
	const struct conf_entry *entry;
	size_t i;

	for (i = 0; i < conf->count; i++) {
		entry = &conf->entries[i];
		fprintf(out, "%s\t%s\t%s\t%s\n", entry->param->name,
			entry->type->word, entry->def_text,
			entry->param->doc != NULL ? entry->param->doc : "");
	}
}
