/*++
 * NAME
 *	tn-prov-input 3
 * SUMMARY
 *	provisioning input: validation, password hashing, list cursors
 *	(see tn-prov-input.h)
 *--*/
#include <crypt.h>
#include <errno.h>
#include <pthread.h>
#include <regex.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include <jansson.h>
#include <openssl/evp.h>

#include "tn-escape.h"
#include "tn-mem.h"
#include "tn-prov-input.h"

#define TN_PROV_ID_MAX 63
#define TN_PROV_LABEL_MAX 63
#define TN_PROV_NAME_MAX 64
#define TN_PROV_HOST_MAX 262

/* --- names ---------------------------------------------------------------- */

static bool tn_prov_lower_alnum(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

static bool tn_prov_alnum(char c)
{
	return tn_prov_lower_alnum(c) || (c >= 'A' && c <= 'Z');
}

static char *tn_prov_lower(const char *in)
{
	char *out = tn_mem_strdup(in);

	for (char *p = out; *p != '\0'; p++) {
		if (*p >= 'A' && *p <= 'Z')
			*p = (char)(*p - 'A' + 'a');
	}
	return out;
}

int tn_prov_input_tenant_id(const char *in, char **out_r, const char **why_r)
{
	char *id = tn_prov_lower(in);
	size_t len = strlen(id);
	bool ok = len > 0 && len <= TN_PROV_ID_MAX && tn_prov_lower_alnum(id[0]);

	for (size_t i = 1; ok && i < len; i++)
		ok = tn_prov_lower_alnum(id[i]) || id[i] == '-';
	if (!ok || strlen(in) != len) {
		tn_mem_free(&id);
		*why_r = "must be 1 to 63 of a-z, 0-9 and '-', starting with a letter or digit";
		return -1;
	}
	*out_r = id;
	return 0;
}

/* One DNS label of a host or domain name: LDH, 1..63, no '-' at an end. */
static bool tn_prov_label_ok(const char *s, size_t len)
{
	if (len == 0 || len > TN_PROV_LABEL_MAX || s[0] == '-' || s[len - 1] == '-')
		return false;
	for (size_t i = 0; i < len; i++) {
		if (!tn_prov_lower_alnum(s[i]) && s[i] != '-')
			return false;
	}
	return true;
}

/* Lower-case LDH labels separated by dots; the number of labels. */
static int tn_prov_labels(const char *s, size_t len)
{
	int n = 0;

	for (size_t start = 0; start <= len; n++) {
		const char *dot = memchr(s + start, '.', len - start);
		size_t end = dot != NULL ? (size_t)(dot - s) : len;

		if (!tn_prov_label_ok(s + start, end - start))
			return -1;
		start = end + 1;
	}
	return n;
}

int tn_prov_input_domain(const char *in, char **out_r, const char **why_r)
{
	char *d;

	if (tn_domain_normalize(in, strlen(in), &d, why_r) < 0)
		return -1;
	if (tn_prov_labels(d, strlen(d)) < 2) {
		tn_mem_free(&d);
		*why_r = "must be a domain name of at least two labels of a-z, 0-9 and '-' "
			"(A-label form for internationalised names)";
		return -1;
	}
	*out_r = d;
	return 0;
}

/* RFC 5322 atext */
static bool tn_prov_atext(char c)
{
	return tn_prov_alnum(c) || (c != '\0' && strchr("!#$%&'*+/=?^_`{|}~-", c) != NULL);
}

static bool tn_prov_dot_atom(const char *s, size_t len)
{
	if (len == 0 || s[0] == '.' || s[len - 1] == '.')
		return false;
	for (size_t i = 0; i < len; i++) {
		if (s[i] == '.' ? s[i + 1] == '.' : !tn_prov_atext(s[i]))
			return false;
	}
	return true;
}

int tn_prov_input_address(const char *in, char **out_r, const char **why_r)
{
	char *a, *at;

	if (tn_address_normalize(in, strlen(in), &a, why_r) < 0)
		return -1;
	at = strrchr(a, '@');
	if (!tn_prov_dot_atom(a, (size_t)(at - a))) {
		*why_r = "local part must be a dot-atom (letters, digits, "
			"!#$%&'*+/=?^_`{|}~- and single dots inside)";
	} else if (tn_prov_labels(at + 1, strlen(at + 1)) < 2) {
		*why_r = "domain part must be a domain name of at least two labels";
	} else {
		*out_r = a;
		return 0;
	}
	tn_mem_free(&a);
	return -1;
}

/* --- text ----------------------------------------------------------------- */

/* Length of the UTF-8 sequence at s (at most left bytes), 0 if invalid. */
static size_t tn_prov_utf8_seq(const unsigned char *s, size_t left)
{
	size_t n = s[0] < 0x80 ? 1 : s[0] >= 0xc2 && s[0] <= 0xdf ? 2 :
		s[0] >= 0xe0 && s[0] <= 0xef ? 3 : s[0] >= 0xf0 && s[0] <= 0xf4 ? 4 : 0;
	uint32_t cp;

	if (n == 0 || n > left)
		return 0;
	for (size_t i = 1; i < n; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
	}
	if (n == 3) {
		cp = ((s[0] & 0x0fu) << 12) | ((s[1] & 0x3fu) << 6);
		if (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))
			return 0;	/* overlong, surrogate */
	} else if (n == 4) {
		cp = ((s[0] & 0x07u) << 18) | ((s[1] & 0x3fu) << 12);
		if (cp < 0x10000 || cp > 0x10ffff)
			return 0;
	}
	return n;
}

int tn_prov_input_text(const char *in, size_t len, size_t max, const char **why_r)
{
	const unsigned char *s = (const unsigned char *)in;

	if (len == 0 || len > max) {
		*why_r = len == 0 ? "must not be empty (null removes it)" : "too long";
		return -1;
	}
	for (size_t i = 0; i < len;) {
		size_t n = tn_prov_utf8_seq(s + i, len - i);

		if (n == 0 || (n == 1 && (s[i] < 0x20 || s[i] == 0x7f))) {
			*why_r = n == 0 ? "not valid UTF-8" :
				"must not contain control characters (NUL, CR, LF, ...)";
			return -1;
		}
		i += n;
	}
	return 0;
}

int tn_prov_input_name(const char *in, const char **why_r)
{
	size_t len = strlen(in);
	bool ok = len > 0 && len <= TN_PROV_NAME_MAX && tn_prov_alnum(in[0]);

	for (size_t i = 1; ok && i < len; i++)
		ok = tn_prov_alnum(in[i]) || in[i] == '.' || in[i] == '_' || in[i] == '-';
	if (!ok)
		*why_r = "must be 1 to 64 of A-Z, a-z, 0-9, '.', '_' and '-', "
			"starting with a letter or digit";
	return ok ? 0 : -1;
}

static bool tn_prov_port_ok(const char *p)
{
	char *end;
	long port;

	if (*p < '0' || *p > '9')
		return false;
	errno = 0;
	port = strtol(p, &end, 10);
	return errno == 0 && *end == '\0' && port >= 1 && port <= 65535;
}

int tn_prov_input_host(const char *in, const char **why_r)
{
	const char *colon = strchr(in, ':');
	size_t len = colon != NULL ? (size_t)(colon - in) : strlen(in);
	char *host = tn_prov_lower(in);
	bool ok = strlen(in) <= TN_PROV_HOST_MAX && tn_prov_labels(host, len) >= 1 &&
		(colon == NULL || tn_prov_port_ok(colon + 1));

	for (size_t i = 0; ok && i < len; i++)
		ok = in[i] == host[i];		/* lower case only (IA5 compares it so) */
	tn_mem_free(&host);
	if (!ok)
		*why_r = "must be a lower-case host name or IPv4 address, optionally "
			"followed by :port";
	return ok ? 0 : -1;
}

/* --- passwords -------------------------------------------------------------- */

static const char tn_prov_crypt64[] =
	"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

static int tn_prov_salt(char salt[TN_PROV_SALT_CHARS + 1])
{
	unsigned char rnd[TN_PROV_SALT_CHARS];
	size_t got = 0;

	while (got < sizeof(rnd)) {
		ssize_t n = getrandom(rnd + got, sizeof(rnd) - got, 0);

		if (n < 0 && errno != EINTR)
			return -1;
		if (n > 0)
			got += (size_t)n;
	}
	for (size_t i = 0; i < sizeof(rnd); i++)
		salt[i] = tn_prov_crypt64[rnd[i] & 63];	/* 64 symbols: unbiased */
	salt[TN_PROV_SALT_CHARS] = '\0';
	explicit_bzero(rnd, sizeof(rnd));
	return 0;
}

char *tn_prov_input_hash_password(const char *clear, unsigned rounds,
				  const char **why_r)
{
	struct crypt_data *cd;
	char salt[TN_PROV_SALT_CHARS + 1], setting[64];
	const char *hash;
	char *res = NULL;

	if (tn_prov_input_text(clear, strlen(clear), TN_PROV_PASSWORD_MAX, why_r) < 0)
		return NULL;
	if (rounds < TN_PROV_ROUNDS_MIN || rounds > TN_PROV_ROUNDS_MAX) {
		*why_r = "rounds out of range";
		return NULL;
	}
	if (tn_prov_salt(salt) < 0) {
		*why_r = "getrandom failed";
		return NULL;
	}
	snprintf(setting, sizeof(setting), "$6$rounds=%u$%s", rounds, salt);
	cd = tn_mem_calloc(1, sizeof(*cd));
	hash = crypt_r(clear, setting, cd);
	if (hash == NULL || strncmp(hash, setting, strlen(setting)) != 0)
		*why_r = "crypt_r failed";
	else
		res = tn_mem_printf("{SHA512-CRYPT}%s", hash);
	explicit_bzero(cd, sizeof(*cd));
	tn_mem_free(&cd);
	return res;
}

struct tn_prov_scheme {
	const char *prefix;
	const char *pattern;	/* POSIX ERE for what follows the prefix */
};

static const struct tn_prov_scheme tn_prov_schemes[] = {
	{ "{SHA512-CRYPT}",
	  "^\\$6\\$(rounds=[1-9][0-9]{3,8}\\$)?[./0-9A-Za-z]{1,16}\\$[./0-9A-Za-z]{86}$" },
	{ "{ARGON2ID}",
	  "^\\$argon2id\\$v=19\\$m=[1-9][0-9]{0,9},t=[1-9][0-9]{0,9},p=[1-9][0-9]{0,2}"
	  "\\$[A-Za-z0-9+/]{11,}\\$[A-Za-z0-9+/]{16,}$" },
	{ "{BLF-CRYPT}", "^\\$2[aby]\\$(0[4-9]|[12][0-9]|3[01])\\$[./0-9A-Za-z]{53}$" },
};

#define TN_PROV_NSCHEMES (sizeof(tn_prov_schemes) / sizeof(tn_prov_schemes[0]))

/* Compiled once for the process (a compile per check was a visible part
 * of a bulk import's CPU); regexec() may share them between threads. */
static regex_t tn_prov_scheme_re[TN_PROV_NSCHEMES];
static bool tn_prov_scheme_ok[TN_PROV_NSCHEMES];
static pthread_once_t tn_prov_scheme_once = PTHREAD_ONCE_INIT;

static void tn_prov_scheme_compile(void)
{
	for (size_t i = 0; i < TN_PROV_NSCHEMES; i++)
		tn_prov_scheme_ok[i] = regcomp(&tn_prov_scheme_re[i], tn_prov_schemes[i].pattern,
					       REG_EXTENDED | REG_NOSUB) == 0;
}

static bool tn_prov_match(size_t scheme, const char *s)
{
	pthread_once(&tn_prov_scheme_once, tn_prov_scheme_compile);
	return tn_prov_scheme_ok[scheme] &&
		regexec(&tn_prov_scheme_re[scheme], s, 0, NULL, 0) == 0;
}

int tn_prov_input_check_hash(const char *hash, const char **why_r)
{
	for (size_t i = 0; i < sizeof(tn_prov_schemes) / sizeof(tn_prov_schemes[0]); i++) {
		const struct tn_prov_scheme *s = &tn_prov_schemes[i];
		size_t n = strlen(s->prefix);

		if (strncmp(hash, s->prefix, n) != 0)
			continue;
		if (tn_prov_match(i, hash + n))
			return 0;
		*why_r = "malformed hash for its scheme";
		return -1;
	}
	*why_r = "scheme not accepted: give {SHA512-CRYPT}, {ARGON2ID} or {BLF-CRYPT} "
		"(or the clear text as password)";
	return -1;
}

/* --- cursors ---------------------------------------------------------------- */

char *tn_prov_input_cursor_encode(const char *last_key, const char *query)
{
	json_t *o = json_pack("{s:s,s:s}", "a", last_key, "q", query);
	char *text = json_dumps(o, JSON_COMPACT);
	size_t len = strlen(text);
	unsigned char *b64 = tn_mem_alloc(4 * ((len + 2) / 3) + 1);
	int n = EVP_EncodeBlock(b64, (const unsigned char *)text, (int)len);

	while (n > 0 && b64[n - 1] == '=')
		n--;
	b64[n] = '\0';
	for (int i = 0; i < n; i++)
		b64[i] = b64[i] == '+' ? '-' : b64[i] == '/' ? '_' : b64[i];
	free(text);
	json_decref(o);
	return (char *)b64;
}

/* base64url without padding to bytes; NULL when malformed */
static char *tn_prov_unbase64url(const char *in, size_t *len_r)
{
	size_t len = strlen(in), padded = (len + 3) / 4 * 4;
	char *tmp = tn_mem_alloc(padded + 1);
	unsigned char *out = tn_mem_alloc(padded / 4 * 3 + 1);
	int n = -1;

	for (size_t i = 0; i < padded; i++)
		tmp[i] = i >= len ? '=' : in[i] == '-' ? '+' : in[i] == '_' ? '/' : in[i];
	tmp[padded] = '\0';
	if (len % 4 != 1 && strspn(in, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
				      "0123456789-_") == len)
		n = EVP_DecodeBlock(out, (unsigned char *)tmp, (int)padded);
	tn_mem_free(&tmp);
	if (n < 0) {
		tn_mem_free(&out);
		return NULL;
	}
	n -= (int)(padded - len);	/* EVP_DecodeBlock counts the padding as zeros */
	out[n] = '\0';
	*len_r = (size_t)n;
	return (char *)out;
}

int tn_prov_input_cursor_decode(const char *cursor, const char *query,
				char **last_key_r, const char **why_r)
{
	size_t len = 0;
	char *text = strlen(cursor) <= 4096 ? tn_prov_unbase64url(cursor, &len) : NULL;
	json_t *o = text != NULL ? json_loadb(text, len, JSON_REJECT_DUPLICATES, NULL) : NULL;
	const char *a = json_string_value(json_object_get(o, "a"));
	const char *q = json_string_value(json_object_get(o, "q"));
	int ret = -1;

	if (a == NULL || q == NULL)
		*why_r = "malformed cursor";
	else if (strcmp(q, query) != 0)
		*why_r = "cursor belongs to another listing (other filters)";
	else {
		*last_key_r = tn_mem_strdup(a);
		ret = 0;
	}
	json_decref(o);
	tn_mem_free(&text);
	return ret;
}

/* --- times ------------------------------------------------------------------ */

static void tn_prov_tm(int64_t ms, struct tm *tm)
{
	time_t t = (time_t)(ms / 1000);

	gmtime_r(&t, tm);
}

char *tn_prov_input_gentime(int64_t ms)
{
	struct tm tm;

	tn_prov_tm(ms, &tm);
	return tn_mem_printf("%04d%02d%02d%02d%02d%02d.%03dZ", tm.tm_year + 1900,
			     tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
			     (int)(ms % 1000));
}

char *tn_prov_input_rfc3339(int64_t ms)
{
	struct tm tm;

	tn_prov_tm(ms, &tm);
	return tn_mem_printf("%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
			     tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
			     (int)(ms % 1000));
}

int tn_prov_input_parse_gentime(const char *text, int64_t *ms_r)
{
	struct tm tm;
	int frac = 0, nfrac = 0, used = 0;
	const char *p;

	memset(&tm, 0, sizeof(tm));
	if (sscanf(text, "%4d%2d%2d%2d%2d%2d%n", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
		   &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &used) != 6 || used != 14)
		return -1;
	p = text + used;
	if (*p == '.' || *p == ',') {
		for (p++; *p >= '0' && *p <= '9'; p++, nfrac++) {
			if (nfrac < 3)
				frac = frac * 10 + (*p - '0');
		}
		if (nfrac == 0)
			return -1;
		for (int i = nfrac; i < 3; i++)
			frac *= 10;
	}
	if (strcmp(p, "Z") != 0)
		return -1;
	tm.tm_year -= 1900;
	tm.tm_mon -= 1;
	*ms_r = (int64_t)timegm(&tm) * 1000 + frac;
	return 0;
}
