/*++
 * NAME
 *	tnctl-verify 1
 * SUMMARY
 *	tnctl events verify: check a captured webhook request's signature
 * SYNOPSIS
 *	tnctl events verify --secret whsec_... [--secret ...] [--tolerance T]
 *		(--request FILE | --id ID --timestamp TS --signature SIG [--body FILE|-])
 * DESCRIPTION
 *	For integrators and support: did tn-hookd sign this request with
 *	this secret? The check is tn_webhook_verify(), the one
 *	docs/events.md describes to receivers.
 *
 *	--request FILE ("-": standard input) is a raw HTTP request as
 *	captured: the request line, header lines ending in CRLF or LF, an
 *	empty line, the body. Header names are case-insensitive;
 *	webhook-id, webhook-timestamp and webhook-signature must each be
 *	there exactly once. With Content-Length the body is that many
 *	bytes (bytes after it, such as an editor's final newline, are
 *	ignored; fewer is an error); without it, the rest of the file.
 *	Obsolete line folding and a Transfer-Encoding are refused (capture
 *	the decoded body and use --body). At most TNCTL_REQUEST_MAX bytes.
 *
 *	With --id, --timestamp and --signature the header values are given
 *	as they are; --body FILE ("-": standard input) holds the raw body,
 *	empty without it.
 *
 *	--tolerance (default 5m, a tenantmail.conf duration) bounds the
 *	distance between webhook-timestamp and now; 0 turns the check off,
 *	to verify an old capture.
 *
 *	Output: "OK", or the verdict (MISMATCH, STALE, MALFORMED) and
 *	tn_webhook_verify()'s reason. Exit 0 ok, 1 mismatch or stale,
 *	65 malformed input (the request, a header, a secret, an option
 *	value) or input that cannot be read, 64 usage.
 * SECURITY
 *	A secret given with --secret is visible to other local users in
 *	the process list while tnctl runs. The secrets are never printed,
 *	and their decoded keys are wiped before tnctl returns.
 *--*/
#include "tn-build.h"

#include <getopt.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sysexits.h>
#include <time.h>

#include "tn-conf.h"
#include "tn-mem.h"
#include "tn-webhook.h"
#include "tnctl.h"

#define TNCTL_REQUEST_MAX (1024 * 1024)
#define TNCTL_DEFAULT_TOLERANCE_S 300

struct tnctl_verify {
	struct tn_webhook_secret secrets[TN_WEBHOOK_SECRETS_MAX];
	unsigned nsecrets;
	int64_t tolerance_s;
	const char *request, *body_path;
	/* the header values: from the options or from the request */
	const char *id, *timestamp, *signature;
	const char *content_length, *transfer_encoding;
	char *buf;			/* the request, or the body file */
	size_t len;
	const char *body;
	size_t body_len;
};

static char tnctl_verify_errbuf[256];

/* --- options ---------------------------------------------------------------------- */

static int tnctl_verify_secret(struct tnctl_verify *v, const char *text)
{
	const char *error;

	if (v->nsecrets == TN_WEBHOOK_SECRETS_MAX) {
		fprintf(stderr, "tnctl: at most %d --secret options\n", TN_WEBHOOK_SECRETS_MAX);
		return EX_USAGE;
	}
	if (tn_webhook_secret_parse(text, &v->secrets[v->nsecrets], &error) < 0) {
		fprintf(stderr, "tnctl: --secret (number %u): %s\n", v->nsecrets + 1, error);
		return EX_DATAERR;
	}
	v->nsecrets++;
	return 0;
}

static int tnctl_verify_tolerance(struct tnctl_verify *v, const char *text)
{
	const char *error;
	int64_t ms;

	if (tn_conf_parse_time_ms(text, &ms, &error) < 0) {
		fprintf(stderr, "tnctl: --tolerance: %s\n", error);
		return EX_DATAERR;
	}
	v->tolerance_s = ms / 1000 + (ms % 1000 != 0);
	return 0;
}

static int tnctl_verify_option(struct tnctl_verify *v, int c, const char *arg)
{
	switch (c) {
	case 's':
		return tnctl_verify_secret(v, arg);
	case 't':
		return tnctl_verify_tolerance(v, arg);
	case 'r':
		v->request = arg;
		return 0;
	case 'i':
		v->id = arg;
		return 0;
	case 'T':
		v->timestamp = arg;
		return 0;
	case 'S':
		v->signature = arg;
		return 0;
	case 'b':
		v->body_path = arg;
		return 0;
	default:
		return EX_USAGE;
	}
}

static int tnctl_verify_options(struct tnctl_verify *v, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "secret", required_argument, NULL, 's' },
		{ "tolerance", required_argument, NULL, 't' },
		{ "request", required_argument, NULL, 'r' },
		{ "id", required_argument, NULL, 'i' },
		{ "timestamp", required_argument, NULL, 'T' },
		{ "signature", required_argument, NULL, 'S' },
		{ "body", required_argument, NULL, 'b' }, { NULL, 0, NULL, 0 },
	};
	bool explicit;
	int c, ret;

	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		if ((ret = tnctl_verify_option(v, c, optarg)) != 0)
			return ret;
	}
	explicit = v->id != NULL || v->timestamp != NULL || v->signature != NULL ||
		v->body_path != NULL;
	if (optind != argc || v->nsecrets == 0 || (v->request != NULL) == explicit)
		return EX_USAGE;
	if (v->request == NULL && (v->id == NULL || v->timestamp == NULL || v->signature == NULL))
		return EX_USAGE;
	return 0;
}

/* --- the request ------------------------------------------------------------------ */

static int tnctl_verify_fail(const char **error_r, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static int tnctl_verify_fail(const char **error_r, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(tnctl_verify_errbuf, sizeof(tnctl_verify_errbuf), fmt, ap);
	va_end(ap);
	*error_r = tnctl_verify_errbuf;
	return -1;
}

static const struct {
	const char *name;
	size_t offset;			/* of the const char * in struct tnctl_verify */
} tnctl_verify_headers[] = {
	{ "webhook-id", offsetof(struct tnctl_verify, id) },
	{ "webhook-timestamp", offsetof(struct tnctl_verify, timestamp) },
	{ "webhook-signature", offsetof(struct tnctl_verify, signature) },
	{ "content-length", offsetof(struct tnctl_verify, content_length) },
	{ "transfer-encoding", offsetof(struct tnctl_verify, transfer_encoding) },
};

/* Keep a header we need; others are ignored. */
static int tnctl_verify_keep(struct tnctl_verify *v, const char *name, const char *value,
			     const char **error_r)
{
	for (size_t i = 0; i < sizeof(tnctl_verify_headers) / sizeof(tnctl_verify_headers[0]);
	     i++) {
		const char **slot = (const char **)((char *)v + tnctl_verify_headers[i].offset);

		if (strcasecmp(name, tnctl_verify_headers[i].name) != 0)
			continue;
		if (*slot != NULL)
			return tnctl_verify_fail(error_r, "%s header given twice",
						 tnctl_verify_headers[i].name);
		*slot = value;
	}
	return 0;
}

/* "name: value" (NUL-terminated, line end removed); cut in place. */
static int tnctl_verify_header(struct tnctl_verify *v, char *line, const char **error_r)
{
	char *colon = strchr(line, ':'), *value, *end;

	if (line[0] == ' ' || line[0] == '\t')
		return tnctl_verify_fail(error_r, "folded header line (obsolete line folding)");
	if (colon == NULL || colon == line || strcspn(line, " \t") < (size_t)(colon - line))
		return tnctl_verify_fail(error_r, "bad header line (no 'name:')");
	*colon = '\0';
	for (value = colon + 1; *value == ' ' || *value == '\t'; value++)
		;
	for (end = value + strlen(value); end > value && (end[-1] == ' ' || end[-1] == '\t');)
		*--end = '\0';
	return tnctl_verify_keep(v, line, value, error_r);
}

/* The next line at *pos: NUL-terminated in place (CRLF or LF removed). */
static char *tnctl_verify_line(struct tnctl_verify *v, char **pos, size_t *len_r)
{
	char *line = *pos, *nl = memchr(line, '\n', (size_t)(v->buf + v->len - line));
	size_t len;

	if (nl == NULL)
		return NULL;
	len = (size_t)(nl - line);
	if (len > 0 && line[len - 1] == '\r')
		len--;
	line[len] = '\0';
	*pos = nl + 1;
	*len_r = len;
	return line;
}

static int tnctl_verify_content_length(struct tnctl_verify *v, size_t avail,
				       const char **error_r)
{
	const char *p = v->content_length;
	size_t n = 0;

	if (*p == '\0' || strspn(p, "0123456789") != strlen(p) || strlen(p) > 12)
		return tnctl_verify_fail(error_r, "bad Content-Length");
	for (; *p != '\0'; p++)
		n = n * 10 + (size_t)(*p - '0');
	if (n > avail)
		return tnctl_verify_fail(error_r, "body shorter than its Content-Length (%zu < %zu)"
					 ": not the whole request", avail, n);
	v->body_len = n;
	return 0;
}

static int tnctl_verify_headers_parse(struct tnctl_verify *v, char **pos, const char **error_r)
{
	size_t len;
	char *line;

	while ((line = tnctl_verify_line(v, pos, &len)) != NULL) {
		if (strlen(line) != len)
			return tnctl_verify_fail(error_r, "NUL byte in the headers");
		if (len == 0)
			return 0;
		if (tnctl_verify_header(v, line, error_r) < 0)
			return -1;
	}
	return tnctl_verify_fail(error_r, "no empty line after the headers");
}

static int tnctl_verify_request(struct tnctl_verify *v, const char **error_r)
{
	char *pos = v->buf, *line;
	size_t len;

	line = tnctl_verify_line(v, &pos, &len);
	if (line == NULL || strlen(line) != len || line[0] == ' ' ||
	    strstr(line, " HTTP/") == NULL)
		return tnctl_verify_fail(error_r, "the first line is not an HTTP request line");
	if (tnctl_verify_headers_parse(v, &pos, error_r) < 0)
		return -1;
	if (v->transfer_encoding != NULL && strcasecmp(v->transfer_encoding, "identity") != 0)
		return tnctl_verify_fail(error_r, "Transfer-Encoding %s: give the decoded body"
					 " with --body", v->transfer_encoding);
	if (v->id == NULL || v->timestamp == NULL || v->signature == NULL)
		return tnctl_verify_fail(error_r, "webhook-id, webhook-timestamp or"
					 " webhook-signature header missing");
	v->body = pos;
	v->body_len = (size_t)(v->buf + v->len - pos);
	return v->content_length != NULL ?
		tnctl_verify_content_length(v, v->body_len, error_r) : 0;
}

static int tnctl_verify_read(struct tnctl_verify *v, const char *path)
{
	const char *error;

	if (tnctl_read_file(strcmp(path, "-") == 0 ? "/dev/stdin" : path, TNCTL_REQUEST_MAX,
			    &v->buf, &v->len, &error) < 0) {
		fprintf(stderr, "tnctl: %s\n", error);
		return EX_DATAERR;
	}
	return 0;
}

/* --- the verdict ------------------------------------------------------------------ */

static int tnctl_verify_check(const struct tnctl_verify *v)
{
	static const char *const names[] = { "OK", "MALFORMED", "STALE", "MISMATCH" };
	static const int codes[] = { 0, EX_DATAERR, 1, 1 };
	const char *why = NULL;
	enum tn_webhook_verdict verdict;

	verdict = tn_webhook_verify(v->secrets, v->nsecrets, v->id, v->timestamp, v->signature,
				    v->body, v->body_len, (int64_t)time(NULL), v->tolerance_s,
				    &why);
	if (verdict == TN_WEBHOOK_OK)
		printf("OK\n");
	else
		printf("%s: %s\n", names[verdict], why != NULL ? why : "");
	return codes[verdict];
}

/* verify --secret whsec_... [--secret ...] [--tolerance T]
 *        (--request FILE | --id ID --timestamp TS --signature SIG [--body FILE|-]) */
int tnctl_events_verify(struct tnctl *ctl, int argc, char **argv)
{
	struct tnctl_verify v = { .tolerance_s = TNCTL_DEFAULT_TOLERANCE_S, .body = "" };
	const char *error;
	int ret;

	(void)ctl;
	if ((ret = tnctl_verify_options(&v, argc, argv)) == 0) {
		if (v.request != NULL) {
			if ((ret = tnctl_verify_read(&v, v.request)) == 0 &&
			    tnctl_verify_request(&v, &error) < 0) {
				fprintf(stderr, "tnctl: %s: %s\n", v.request, error);
				ret = EX_DATAERR;
			}
		} else if (v.body_path != NULL && (ret = tnctl_verify_read(&v, v.body_path)) == 0) {
			v.body = v.buf;
			v.body_len = v.len;
		}
	}
	if (ret == 0)
		ret = tnctl_verify_check(&v);
	explicit_bzero(v.secrets, sizeof(v.secrets));
	tn_mem_free(&v.buf);
	return ret;
}
