/*++
 * NAME
 *	tn-webhook 3h
 * SUMMARY
 *	Standard Webhooks signatures: whsec_ secrets, signing and verifying
 * DESCRIPTION
 *	The signature of a request is
 *	    v1,<base64(HMAC-SHA256(key, "<id>.<timestamp>.<body>"))>
 *	where key is the secret's bytes: base64-decoded after the "whsec_"
 *	prefix. With several secrets (rotation) the header value holds one
 *	such signature per secret, separated by single spaces, in the order
 *	the secrets were given. OpenSSL does the HMAC and base64.
 *
 *	tn_webhook_verify() accepts a request when any "v1,..." element of
 *	the header matches any secret (constant-time comparison), and the
 *	timestamp is within tolerance of now (0: no time check). Elements
 *	with other version prefixes are ignored; a malformed v1 element
 *	matches nothing, and a header without any well-formed one is
 *	MALFORMED. Base64 (secrets and signatures) must be padded and
 *	canonical; the timestamp plain decimal digits. A negative tolerance
 *	is MALFORMED; an OpenSSL failure is MISMATCH (never OK).
 *
 *	Nothing for the caller to free (OpenSSL allocates and frees its
 *	HMAC context inside each call); the HMAC implementation is fetched
 *	once per process and kept (still reachable at exit); thread-safe.
 *--*/
#ifndef TN_WEBHOOK_H
#define TN_WEBHOOK_H

#include <stddef.h>
#include <stdint.h>

/* Largest key (decoded secret) accepted, and the smallest. */
#define TN_WEBHOOK_KEY_MAX 64
#define TN_WEBHOOK_KEY_MIN 16
/* Room for one "v1,<44 base64 chars>" element and its separator. */
#define TN_WEBHOOK_SIG_ELEMENT 48
/* Most secrets used at once. */
#define TN_WEBHOOK_SECRETS_MAX 8
/* Size of a buffer that holds a header value for TN_WEBHOOK_SECRETS_MAX secrets. */
#define TN_WEBHOOK_HEADER_SIZE (TN_WEBHOOK_SIG_ELEMENT * TN_WEBHOOK_SECRETS_MAX + 1)

struct tn_webhook_secret {
	unsigned char key[TN_WEBHOOK_KEY_MAX];
	size_t len;
};

enum tn_webhook_verdict {
	TN_WEBHOOK_OK = 0,
	TN_WEBHOOK_MALFORMED,		/* a header or the secret is not well-formed */
	TN_WEBHOOK_STALE,		/* timestamp outside the tolerance */
	TN_WEBHOOK_MISMATCH,		/* well-formed, but no signature matches */
};

/* "whsec_<base64>" → key. 0, or -1 with a static message in *error_r
 * (missing prefix, bad base64, key shorter than TN_WEBHOOK_KEY_MIN or
 * longer than TN_WEBHOOK_KEY_MAX bytes). */
int tn_webhook_secret_parse(const char *text, struct tn_webhook_secret *secret,
			    const char **error_r);

/* Write the webhook-signature header value for count secrets (1 ..
 * TN_WEBHOOK_SECRETS_MAX) into out. Returns its length, or -1 when
 * outsize is too small or count out of range. */
int tn_webhook_sign(const struct tn_webhook_secret *secrets, unsigned count,
		    const char *id, int64_t timestamp, const void *body,
		    size_t body_len, char *out, size_t outsize);

/* Check a received request. timestamp is the header's text (decimal Unix
 * seconds); now in Unix seconds; tolerance_s 0 disables the time check.
 * *error_r (may be NULL) gets a static explanation unless TN_WEBHOOK_OK. */
enum tn_webhook_verdict
tn_webhook_verify(const struct tn_webhook_secret *secrets, unsigned count,
		  const char *id, const char *timestamp, const char *signature,
		  const void *body, size_t body_len, int64_t now,
		  int64_t tolerance_s, const char **error_r);

#endif
