/*++
 * NAME
 *	tnctl-ldif 3
 * SUMMARY
 *	an LDIF (RFC 2849, ldif(5)) reader of content records over a
 *	buffer, for tnctl sync's feeds (see tnctl-prov.h)
 * DESCRIPTION
 *	An entry is a run of lines ended by an empty line or the end. A
 *	line beginning with one space continues the line before it (the
 *	space dropped); a line beginning with '#' is a comment (folded
 *	comments included). "dn:" starts an entry; "attr: value" is a
 *	value (leading spaces dropped), "attr:: value" a base64 one
 *	(OpenSSL's EVP decoder), "attr:< URL" refused. A "version: 1"
 *	record before the first entry is skipped. Values must be UTF-8
 *	(a JSON string holds them); a value may be empty.
 *
 *	Bounds: LDIF_VALUE_MAX bytes per (unfolded) line.
 *--*/
#include "tn-build.h"

#include <ctype.h>
#include <string.h>
#include <strings.h>

#include <openssl/evp.h>

#include "tn-mem.h"
#include "tnctl-prov.h"

#define LDIF_VALUE_MAX (1u << 20)

void tnctl_ldif_init(struct tnctl_ldif *l, const char *buf, size_t len)
{
	l->p = buf;
	l->end = buf + len;
	l->line = 1;
}

/* One physical line (without its CR LF or LF); advances l. */
static bool ldif_physical(struct tnctl_ldif *l, const char **s_r, size_t *len_r)
{
	const char *nl;
	size_t n;

	if (l->p >= l->end)
		return false;
	nl = memchr(l->p, '\n', (size_t)(l->end - l->p));
	n = nl != NULL ? (size_t)(nl - l->p) : (size_t)(l->end - l->p);
	*s_r = l->p;
	*len_r = n > 0 && l->p[n - 1] == '\r' ? n - 1 : n;
	l->p += n + (nl != NULL);
	l->line++;
	return true;
}

/* The next logical line (folded lines joined) into *buf; 1, 0 at the
 * end, -1 too long. An empty line is returned empty. */
static int ldif_logical(struct tnctl_ldif *l, char **buf, size_t *len_r)
{
	const char *s;
	size_t n, len;

	if (!ldif_physical(l, &s, &n))
		return 0;
	*buf = tn_mem_realloc(*buf, n + 1);
	memcpy(*buf, s, n);
	len = n;
	while (len > 0 && l->p < l->end && *l->p == ' ') {
		ldif_physical(l, &s, &n);
		if (len + n > LDIF_VALUE_MAX)
			return -1;
		*buf = tn_mem_realloc(*buf, len + n);
		memcpy(*buf + len, s + 1, n - 1);
		len += n - 1;
	}
	(*buf)[len] = '\0';
	*len_r = len;
	return 1;
}

/* base64 text → bytes (fresh, NUL-terminated); NULL when malformed. */
static char *ldif_base64(const char *text, size_t len, size_t *out_len_r)
{
	EVP_ENCODE_CTX *ctx = EVP_ENCODE_CTX_new();
	unsigned char *out = tn_mem_alloc(len / 4 * 3 + 4);
	int n = 0, fin = 0, ok;

	if (ctx == NULL) {
		tn_mem_free(&out);
		return NULL;
	}
	EVP_DecodeInit(ctx);
	ok = EVP_DecodeUpdate(ctx, out, &n, (const unsigned char *)text, (int)len) >= 0 &&
		EVP_DecodeFinal(ctx, out + n, &fin) == 1;
	EVP_ENCODE_CTX_free(ctx);
	if (!ok) {
		tn_mem_free(&out);
		return NULL;
	}
	out[n + fin] = '\0';
	*out_len_r = (size_t)(n + fin);
	return (char *)out;
}

/* "attr[;options]:[:] value" of line into entry; NULL, or why not. */
static const char *ldif_attr(json_t *entry, char *line, size_t len)
{
	char *colon = memchr(line, ':', len), *v, *semi, *bytes = NULL;
	size_t vlen, blen = 0;
	json_t *value, *arr;
	bool b64;

	if (colon == NULL || colon == line)
		return "expected 'attribute: value'";
	*colon = '\0';
	if ((semi = strchr(line, ';')) != NULL)
		*semi = '\0';	/* options (;lang-de, ;binary) dropped */
	for (char *p = line; *p != '\0'; p++)
		*p = (char)tolower((unsigned char)*p);
	v = colon + 1;
	if (*v == '<')
		return "URL values ('attr:<') are not read";
	b64 = *v == ':';
	v += b64;
	while (*v == ' ')
		v++;
	vlen = len - (size_t)(v - line);
	if (b64 && (bytes = ldif_base64(v, vlen, &blen)) == NULL)
		return "malformed base64 value";
	value = b64 ? json_stringn(bytes, blen) : json_stringn(v, vlen);
	tn_mem_free(&bytes);
	if (value == NULL)
		return "a value that is not UTF-8";
	if ((arr = json_object_get(entry, line)) == NULL) {
		arr = json_array();
		json_object_set_new(entry, line, arr);
	}
	json_array_append_new(arr, value);
	return NULL;
}

/* What a line says about the entry: NULL, or why the entry is refused. */
static const char *ldif_line(json_t *entry, char *line, size_t len)
{
	const char *ct;

	if (json_object_size(entry) == 0 && strncasecmp(line, "dn:", 3) != 0)
		return "an entry must begin with 'dn:'";
	if (strncasecmp(line, "changetype:", 11) == 0) {
		ct = line + 11;
		while (*ct == ' ')
			ct++;
		return strcasecmp(ct, "add") == 0 ? NULL : "a change record, not an entry";
	}
	return ldif_attr(entry, line, len);
}

/* Skip blank lines, comments and a version record. */
static void ldif_skip(struct tnctl_ldif *l, char **buf)
{
	const char *save_p;
	unsigned save_line;
	size_t len;
	int r;

	for (;;) {
		save_p = l->p;
		save_line = l->line;
		if ((r = ldif_logical(l, buf, &len)) <= 0)
			return;
		if (len == 0 || (*buf)[0] == '#' || strncasecmp(*buf, "version:", 8) == 0)
			continue;
		l->p = save_p;
		l->line = save_line;
		return;
	}
}

int tnctl_ldif_next(struct tnctl_ldif *l, json_t **entry_r, unsigned *line_r,
		    const char **why_r)
{
	json_t *entry = json_object();
	const char *why = NULL;
	char *buf = NULL;
	size_t len;
	int r;

	ldif_skip(l, &buf);
	*line_r = l->line;
	while ((r = ldif_logical(l, &buf, &len)) != 0) {
		if (r < 0) {	/* the entry is refused; read on to its end */
			why = why != NULL ? why : "a line too long";
			continue;
		}
		if (len == 0)
			break;
		if (buf[0] != '#' && why == NULL)
			why = ldif_line(entry, buf, len);
	}
	tn_mem_free(&buf);
	if (why == NULL && json_object_size(entry) > 0) {
		*entry_r = entry;
		return 1;
	}
	json_decref(entry);
	if (why == NULL)
		return 0;
	*why_r = why;
	return -1;
}
