/*++
 * NAME
 *	tnctl-csv 3
 * SUMMARY
 *	RFC 4180 records from a buffer (see tnctl-prov.h)
 * DESCRIPTION
 *	Fields are separated by commas and records by LF or CRLF. A field
 *	that starts with a double quote runs to the matching quote: it may
 *	hold commas, line breaks and quotes written twice. A quote inside
 *	an unquoted field, or anything but a comma or the record's end
 *	after a closing quote, makes the record malformed; reading goes on
 *	with the next line. An unterminated quoted field takes the rest of
 *	the buffer (and is malformed). Empty lines are no records.
 *
 *	Bounds: TNCTL_CSV_FIELD_MAX bytes per field, TNCTL_CSV_FIELDS_MAX
 *	fields per record.
 *--*/
#include "tn-build.h"

#include <string.h>

#include "tn-mem.h"
#include "tnctl-prov.h"

#define TNCTL_CSV_FIELD_MAX (1024 * 1024)
#define TNCTL_CSV_FIELDS_MAX 1024

struct tnctl_csv_buf {
	char *s;
	size_t len, cap;
};

void tnctl_csv_init(struct tnctl_csv *c, const char *buf, size_t len)
{
	c->p = buf;
	c->end = buf + len;
	c->line = 1;
	if (len >= 3 && memcmp(buf, "\xef\xbb\xbf", 3) == 0)
		c->p += 3;	/* a UTF-8 byte order mark */
}

void tnctl_csv_record_clear(struct tnctl_csv_record *rec)
{
	for (size_t i = 0; i < rec->n; i++)
		tn_mem_free(&rec->fields[i]);
	tn_mem_free(&rec->fields);
	rec->n = rec->cap = 0;
}

static void tnctl_csv_putc(struct tnctl_csv_buf *b, char ch)
{
	if (b->len + 2 > b->cap) {
		b->cap = b->cap == 0 ? 64 : 2 * b->cap;
		b->s = tn_mem_realloc(b->s, b->cap);
	}
	b->s[b->len++] = ch;
	b->s[b->len] = '\0';
}

static void tnctl_csv_push(struct tnctl_csv_record *rec, struct tnctl_csv_buf *b)
{
	if (rec->n == rec->cap) {
		rec->cap = rec->cap == 0 ? 16 : 2 * rec->cap;
		rec->fields = tn_mem_realloc(rec->fields, rec->cap * sizeof(*rec->fields));
	}
	rec->fields[rec->n++] = b->s != NULL ? b->s : tn_mem_strdup("");
	b->s = NULL;
	b->len = b->cap = 0;
}

/* At a record's end (LF, CRLF or the buffer's end)? */
static bool tnctl_csv_eol(const struct tnctl_csv *c)
{
	return c->p == c->end || *c->p == '\n' ||
	       (*c->p == '\r' && c->p + 1 < c->end && c->p[1] == '\n');
}

static void tnctl_csv_skip_eol(struct tnctl_csv *c)
{
	if (c->p < c->end && *c->p == '\r')
		c->p++;
	if (c->p < c->end && *c->p == '\n') {
		c->p++;
		c->line++;
	}
}

/* After a malformed field: on to the end of the current line. */
static int tnctl_csv_bad(struct tnctl_csv *c, struct tnctl_csv_buf *b, const char *why,
			 const char **why_r)
{
	while (c->p < c->end && *c->p != '\n')
		c->p++;
	tnctl_csv_skip_eol(c);
	tn_mem_free(&b->s);
	*why_r = why;
	return -1;
}

/* A quoted field, c->p at the opening quote. */
static int tnctl_csv_quoted(struct tnctl_csv *c, struct tnctl_csv_buf *b, const char **why_r)
{
	for (c->p++;; c->p++) {
		if (c->p == c->end) {
			tn_mem_free(&b->s);
			*why_r = "unterminated quoted field";
			return -1;
		}
		if (*c->p == '"') {
			if (c->p + 1 < c->end && c->p[1] == '"') {
				c->p++;
			} else {
				c->p++;
				break;
			}
		} else if (*c->p == '\n') {
			c->line++;
		}
		if (b->len >= TNCTL_CSV_FIELD_MAX)
			return tnctl_csv_bad(c, b, "field too long", why_r);
		tnctl_csv_putc(b, *c->p);
	}
	if (!tnctl_csv_eol(c) && *c->p != ',')
		return tnctl_csv_bad(c, b, "text after a closing quote", why_r);
	return 0;
}

static int tnctl_csv_plain(struct tnctl_csv *c, struct tnctl_csv_buf *b, const char **why_r)
{
	for (; !tnctl_csv_eol(c) && *c->p != ','; c->p++) {
		if (*c->p == '"')
			return tnctl_csv_bad(c, b, "a quote inside an unquoted field "
					     "(quote the whole field and double the quote)",
					     why_r);
		if (b->len >= TNCTL_CSV_FIELD_MAX)
			return tnctl_csv_bad(c, b, "field too long", why_r);
		tnctl_csv_putc(b, *c->p);
	}
	return 0;
}

int tnctl_csv_next(struct tnctl_csv *c, struct tnctl_csv_record *rec, const char **why_r)
{
	struct tnctl_csv_buf b = { NULL, 0, 0 };

	tnctl_csv_record_clear(rec);
	while (c->p < c->end && tnctl_csv_eol(c))
		tnctl_csv_skip_eol(c);
	if (c->p == c->end)
		return 0;
	rec->line = c->line;
	for (;;) {
		int ret = c->p < c->end && *c->p == '"' ? tnctl_csv_quoted(c, &b, why_r) :
			tnctl_csv_plain(c, &b, why_r);

		if (ret < 0)
			return -1;
		if (rec->n >= TNCTL_CSV_FIELDS_MAX)
			return tnctl_csv_bad(c, &b, "too many fields", why_r);
		tnctl_csv_push(rec, &b);
		if (c->p < c->end && *c->p == ',') {
			c->p++;
			continue;
		}
		tnctl_csv_skip_eol(c);
		return 1;
	}
}
