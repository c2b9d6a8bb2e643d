/*++
 * NAME
 *	tn-webhook 3
 * SUMMARY
 *	Standard Webhooks signatures (see tn-webhook.h)
 * DESCRIPTION
 *	Base64 is strict everywhere: the standard alphabet, padded to a
 *	multiple of four characters, at most two '=' and only at the end,
 *	and unused bits of the last character zero (canonical form). So
 *	one key or one signature has exactly one text. OpenSSL decodes
 *	(EVP_DecodeBlock, which counts padding as zero bytes: we take the
 *	padding off) and encodes (EVP_EncodeBlock).
 *
 *	The HMAC runs over "<id>.<timestamp>.<body>" in pieces (EVP_MAC),
 *	so no buffer holds the whole message. In verify the timestamp is
 *	the header's text as received: it is what the sender signed.
 *
 *	A failure inside OpenSSL (out of memory) makes sign return -1 and
 *	verify answer MISMATCH: a request is never accepted without a
 *	computed signature.
 * SECURITY
 *	Keys never leave the structure, are never logged, and intermediate
 *	copies on the stack are cleansed. Signatures are compared with
 *	CRYPTO_memcmp.
 *--*/
#include <inttypes.h>
#include <pthread.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>

#include "tn-webhook.h"

#define TN_WEBHOOK_PREFIX "whsec_"
#define TN_WEBHOOK_PREFIX_LEN (sizeof(TN_WEBHOOK_PREFIX) - 1)
#define TN_WEBHOOK_MAC_LEN 32
/* base64 text of a MAC: 44 characters, one '=' */
#define TN_WEBHOOK_MAC_B64_LEN (((TN_WEBHOOK_MAC_LEN + 2) / 3) * 4)
/* longest base64 text of a key, and room to decode it */
#define TN_WEBHOOK_KEY_B64_MAX (((TN_WEBHOOK_KEY_MAX + 2) / 3) * 4)
#define TN_WEBHOOK_KEY_RAW_MAX ((TN_WEBHOOK_KEY_B64_MAX / 4) * 3)
/* "v1," + base64 MAC + NUL */
#define TN_WEBHOOK_ELEMENT_LEN (3 + TN_WEBHOOK_MAC_B64_LEN)
/* decimal int64: 19 digits, a sign, NUL */
#define TN_WEBHOOK_TS_MAX 21

typedef unsigned char tn_webhook_mac[TN_WEBHOOK_MAC_LEN];

static int tn_webhook_b64_value(unsigned char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

/* Number of '=' at the end of a well-formed base64 text, or -1. */
static int tn_webhook_b64_check(const char *in, size_t len)
{
	size_t pad = 0, i;

	if (len == 0 || len % 4 != 0)
		return -1;
	while (pad < 2 && in[len - 1 - pad] == '=')
		pad++;
	for (i = 0; i < len - pad; i++) {
		if (tn_webhook_b64_value((unsigned char)in[i]) < 0)
			return -1;
	}
	/* the unused low bits of the last data character must be zero */
	if (pad > 0 &&
	    (tn_webhook_b64_value((unsigned char)in[i - 1]) &
	     (pad == 1 ? 0x03 : 0x0f)) != 0)
		return -1;
	return (int)pad;
}

/* Strict base64 → bytes. outsize must be at least len / 4 * 3. */
static int tn_webhook_b64_decode(const char *in, size_t len,
				 unsigned char *out, size_t outsize,
				 size_t *len_r)
{
	int pad = tn_webhook_b64_check(in, len);
	int n;

	if (pad < 0 || len / 4 * 3 > outsize || len > INT_MAX)
		return -1;
	n = EVP_DecodeBlock(out, (const unsigned char *)in, (int)len);
	if (n < 0 || (size_t)n != len / 4 * 3)
		return -1;
	*len_r = (size_t)n - (size_t)pad;
	return 0;
}

int tn_webhook_secret_parse(const char *text, struct tn_webhook_secret *secret,
			    const char **error_r)
{
	unsigned char raw[TN_WEBHOOK_KEY_RAW_MAX];
	size_t len;

	if (strncmp(text, TN_WEBHOOK_PREFIX, TN_WEBHOOK_PREFIX_LEN) != 0) {
		*error_r = "webhook secret does not start with whsec_";
		return -1;
	}
	text += TN_WEBHOOK_PREFIX_LEN;
	len = strlen(text);
	if (len > TN_WEBHOOK_KEY_B64_MAX) {
		*error_r = "webhook secret key is longer than 64 bytes";
		return -1;
	}
	if (tn_webhook_b64_decode(text, len, raw, sizeof(raw), &len) < 0) {
		OPENSSL_cleanse(raw, sizeof(raw));
		*error_r = "webhook secret is not valid base64 after whsec_";
		return -1;
	}
	if (len < TN_WEBHOOK_KEY_MIN || len > TN_WEBHOOK_KEY_MAX) {
		OPENSSL_cleanse(raw, sizeof(raw));
		*error_r = len < TN_WEBHOOK_KEY_MIN ?
			"webhook secret key is shorter than 16 bytes" :
			"webhook secret key is longer than 64 bytes";
		return -1;
	}
	memcpy(secret->key, raw, len);
	secret->len = len;
	OPENSSL_cleanse(raw, sizeof(raw));
	return 0;
}

static bool tn_webhook_secrets_ok(const struct tn_webhook_secret *secrets,
				  unsigned count)
{
	if (secrets == NULL || count == 0 || count > TN_WEBHOOK_SECRETS_MAX)
		return false;
	for (unsigned i = 0; i < count; i++) {
		if (secrets[i].len < TN_WEBHOOK_KEY_MIN ||
		    secrets[i].len > TN_WEBHOOK_KEY_MAX)
			return false;
	}
	return true;
}

static int tn_webhook_mac_update(EVP_MAC_CTX *ctx, const char *id,
				 const char *ts, size_t ts_len,
				 const void *body, size_t body_len)
{
	if (EVP_MAC_update(ctx, (const unsigned char *)id, strlen(id)) != 1 ||
	    EVP_MAC_update(ctx, (const unsigned char *)".", 1) != 1 ||
	    EVP_MAC_update(ctx, (const unsigned char *)ts, ts_len) != 1 ||
	    EVP_MAC_update(ctx, (const unsigned char *)".", 1) != 1)
		return -1;
	if (body_len > 0 && EVP_MAC_update(ctx, body, body_len) != 1)
		return -1;
	return 0;
}

/* The HMAC implementation, fetched once per process: a fetch is a name
 * lookup in OpenSSL's provider store, dearer than the HMAC of a small
 * event (bench/README.md). EVP_MAC objects may be shared by threads. */
static EVP_MAC *tn_webhook_hmac;
static pthread_once_t tn_webhook_once = PTHREAD_ONCE_INIT;

static void tn_webhook_fetch(void)
{
	tn_webhook_hmac = EVP_MAC_fetch(NULL, OSSL_MAC_NAME_HMAC, NULL);
}

/* HMAC-SHA256(key, "<id>.<ts>.<body>") → mac. 0, or -1 when OpenSSL fails. */
static int tn_webhook_mac_compute(const struct tn_webhook_secret *secret,
				  const char *id, const char *ts, size_t ts_len,
				  const void *body, size_t body_len,
				  tn_webhook_mac mac)
{
	char digest[] = "SHA256";
	OSSL_PARAM params[] = {
		OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0),
		OSSL_PARAM_construct_end(),
	};
	EVP_MAC_CTX *ctx;
	size_t mac_len = 0;
	int ret = -1;

	pthread_once(&tn_webhook_once, tn_webhook_fetch);
	ctx = tn_webhook_hmac == NULL ? NULL : EVP_MAC_CTX_new(tn_webhook_hmac);
	if (ctx != NULL &&
	    EVP_MAC_init(ctx, secret->key, secret->len, params) == 1 &&
	    tn_webhook_mac_update(ctx, id, ts, ts_len, body, body_len) == 0 &&
	    EVP_MAC_final(ctx, mac, &mac_len, TN_WEBHOOK_MAC_LEN) == 1 &&
	    mac_len == TN_WEBHOOK_MAC_LEN)
		ret = 0;
	EVP_MAC_CTX_free(ctx);
	return ret;
}

int tn_webhook_sign(const struct tn_webhook_secret *secrets, unsigned count,
		    const char *id, int64_t timestamp, const void *body,
		    size_t body_len, char *out, size_t outsize)
{
	char ts[TN_WEBHOOK_TS_MAX];
	tn_webhook_mac mac;
	size_t pos = 0;
	int ts_len;

	if (!tn_webhook_secrets_ok(secrets, count) || id == NULL ||
	    (body == NULL && body_len > 0) ||
	    outsize < (size_t)count * TN_WEBHOOK_SIG_ELEMENT)
		return -1;
	ts_len = snprintf(ts, sizeof(ts), "%" PRId64, timestamp);
	for (unsigned i = 0; i < count; i++) {
		if (tn_webhook_mac_compute(&secrets[i], id, ts, (size_t)ts_len,
					   body, body_len, mac) < 0)
			return -1;
		if (i > 0)
			out[pos++] = ' ';
		memcpy(out + pos, "v1,", 3);
		pos += 3;
		pos += (size_t)EVP_EncodeBlock((unsigned char *)out + pos, mac,
					       TN_WEBHOOK_MAC_LEN);
	}
	out[pos] = '\0';
	return (int)pos;
}

/* Strict decimal Unix seconds: digits only, no sign, no space, no overflow. */
static int tn_webhook_ts_parse(const char *text, int64_t *ts_r)
{
	int64_t ts = 0;

	if (*text == '\0')
		return -1;
	for (; *text != '\0'; text++) {
		int digit = *text - '0';

		if (digit < 0 || digit > 9 || ts > (INT64_MAX - digit) / 10)
			return -1;
		ts = ts * 10 + digit;
	}
	*ts_r = ts;
	return 0;
}

static bool tn_webhook_in_tolerance(int64_t ts, int64_t now, int64_t tolerance_s)
{
	uint64_t diff;

	if (tolerance_s == 0)
		return true;
	/* the true difference fits in uint64_t whichever is larger */
	diff = ts > now ? (uint64_t)ts - (uint64_t)now :
		(uint64_t)now - (uint64_t)ts;
	return diff <= (uint64_t)tolerance_s;
}

/* Next space-separated element of the header at *pos, or NULL at the end. */
static const char *tn_webhook_element_next(const char **pos, size_t *len_r)
{
	const char *start = *pos, *end;

	while (*start == ' ')
		start++;
	if (*start == '\0')
		return NULL;
	end = strchr(start, ' ');
	if (end == NULL)
		end = start + strlen(start);
	*pos = end;
	*len_r = (size_t)(end - start);
	return start;
}

/* Decode a "v1,<base64 MAC>" element. 1: decoded; 0: another version;
 * -1: a v1 element that is not well-formed. */
static int tn_webhook_element_decode(const char *elem, size_t len,
				     tn_webhook_mac mac)
{
	unsigned char raw[TN_WEBHOOK_MAC_B64_LEN / 4 * 3];
	size_t raw_len;

	if (len < 3 || memcmp(elem, "v1,", 3) != 0)
		return len == 2 && memcmp(elem, "v1", 2) == 0 ? -1 : 0;
	if (len != TN_WEBHOOK_ELEMENT_LEN ||
	    tn_webhook_b64_decode(elem + 3, len - 3, raw, sizeof(raw),
				  &raw_len) < 0 ||
	    raw_len != TN_WEBHOOK_MAC_LEN)
		return -1;
	memcpy(mac, raw, TN_WEBHOOK_MAC_LEN);
	return 1;
}

static unsigned tn_webhook_v1_count(const char *signature)
{
	const char *pos = signature, *elem;
	tn_webhook_mac mac;
	unsigned n = 0;
	size_t len;

	while ((elem = tn_webhook_element_next(&pos, &len)) != NULL) {
		if (tn_webhook_element_decode(elem, len, mac) == 1)
			n++;
	}
	return n;
}

static bool tn_webhook_match(const tn_webhook_mac *expected, unsigned count,
			     const char *signature)
{
	const char *pos = signature, *elem;
	tn_webhook_mac mac;
	bool found = false;
	size_t len;

	while ((elem = tn_webhook_element_next(&pos, &len)) != NULL) {
		if (tn_webhook_element_decode(elem, len, mac) != 1)
			continue;
		for (unsigned i = 0; i < count; i++) {
			if (CRYPTO_memcmp(mac, expected[i], TN_WEBHOOK_MAC_LEN) == 0)
				found = true;
		}
	}
	return found;
}

static enum tn_webhook_verdict
tn_webhook_verdict(enum tn_webhook_verdict verdict, const char *why,
		   const char **error_r)
{
	if (error_r != NULL)
		*error_r = why;
	return verdict;
}

/* The checks that need no HMAC: arguments, timestamp, header, time. */
static enum tn_webhook_verdict
tn_webhook_precheck(const struct tn_webhook_secret *secrets, unsigned count,
		    const char *id, const char *timestamp, const char *signature,
		    const void *body, size_t body_len, int64_t now,
		    int64_t tolerance_s, const char **error_r)
{
	int64_t ts;

	if (!tn_webhook_secrets_ok(secrets, count))
		return tn_webhook_verdict(TN_WEBHOOK_MALFORMED,
			"no usable webhook secret", error_r);
	if (id == NULL || *id == '\0' || timestamp == NULL || signature == NULL ||
	    (body == NULL && body_len > 0) || tolerance_s < 0)
		return tn_webhook_verdict(TN_WEBHOOK_MALFORMED,
			"webhook id, timestamp or signature missing", error_r);
	if (tn_webhook_ts_parse(timestamp, &ts) < 0)
		return tn_webhook_verdict(TN_WEBHOOK_MALFORMED,
			"webhook-timestamp is not decimal Unix seconds", error_r);
	if (tn_webhook_v1_count(signature) == 0)
		return tn_webhook_verdict(TN_WEBHOOK_MALFORMED,
			"webhook-signature has no well-formed v1 signature", error_r);
	if (!tn_webhook_in_tolerance(ts, now, tolerance_s))
		return tn_webhook_verdict(TN_WEBHOOK_STALE,
			"webhook-timestamp outside the tolerance", error_r);
	return TN_WEBHOOK_OK;
}

enum tn_webhook_verdict
tn_webhook_verify(const struct tn_webhook_secret *secrets, unsigned count,
		  const char *id, const char *timestamp, const char *signature,
		  const void *body, size_t body_len, int64_t now,
		  int64_t tolerance_s, const char **error_r)
{
	tn_webhook_mac expected[TN_WEBHOOK_SECRETS_MAX];
	enum tn_webhook_verdict verdict;
	bool found;

	verdict = tn_webhook_precheck(secrets, count, id, timestamp, signature,
				      body, body_len, now, tolerance_s, error_r);
	if (verdict != TN_WEBHOOK_OK)
		return verdict;
	for (unsigned i = 0; i < count; i++) {
		if (tn_webhook_mac_compute(&secrets[i], id, timestamp,
					   strlen(timestamp), body, body_len,
					   expected[i]) < 0)
			return tn_webhook_verdict(TN_WEBHOOK_MISMATCH,
				"HMAC computation failed (OpenSSL)", error_r);
	}
	found = tn_webhook_match(expected, count, signature);
	OPENSSL_cleanse(expected, sizeof(expected));
	if (!found)
		return tn_webhook_verdict(TN_WEBHOOK_MISMATCH,
			"no webhook signature matches", error_r);
	return TN_WEBHOOK_OK;
}
