/*++
 * NAME
 *	test-webhook 1
 * SUMMARY
 *	unit tests: Standard Webhooks secrets, signing and verifying
 * DESCRIPTION
 *	The test vector of docs/events.md ("The HTTP request") must sign
 *	and verify exactly; rotation, tampering, the time window, malformed
 *	secrets and headers, and short buffers.
 *--*/
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "tn-webhook.h"

/* docs/events.md, "The HTTP request" */
#define VEC_SECRET "whsec_dGVuYW50bWFpbCBleGFtcGxlIGtleTsgbmV2ZXIgdXNl"
#define VEC_ID "019cade3-3f7d-7847-ba09-c18b78b7d0ac"
#define VEC_TS 1772443878
#define VEC_TS_TEXT "1772443878"
#define VEC_SIG "v1,ouP9PGI7441VuUG3DR69vapUN0rGjdN5SBU7uwCw3RQ="
static const char vec_body[] =
	"{\"id\":\"019cade3-3f7d-7847-ba09-c18b78b7d0ac\",\"type\":\"mailbox.created\","
	"\"occurred_at\":\"2026-03-02T09:31:17.245Z\",\"tenant\":\"acme\",\"sequence\":5,"
	"\"data\":{\"address\":\"alice@acme.example\",\"name\":\"Alice\","
	"\"description\":null,\"status\":\"active\",\"quota_bytes\":null,"
	"\"max_message_bytes\":null,\"send_rate_per_hour\":null,\"pool\":null,"
	"\"actor\":{\"kind\":\"tenant_admin\","
	"\"id\":\"cn=admin,tnTenantId=acme,ou=tenants,dc=example,dc=net\"}}}";
#define VEC_BODY_LEN (sizeof(vec_body) - 1)

#define KEY_ONE "whsec_cm90YXRpb24ga2V5IG51bWJlciBvbmUh"
#define KEY_TWO "whsec_cm90YXRpb24ga2V5IG51bWJlciB0d28sIGxvbmdlci4="
/* bytes 0..63, 0..15: the longest and shortest keys accepted */
#define KEY_64 "whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygp" \
	"KissLS4vMDEyMzQ1Njc4OTo7PD0+Pw=="
#define KEY_16 "whsec_AAECAwQFBgcICQoLDA0ODw=="

static struct tn_webhook_secret secret_of(const char *text)
{
	struct tn_webhook_secret secret;
	const char *error = NULL;

	assert_int_equal(tn_webhook_secret_parse(text, &secret, &error), 0);
	assert_null(error);
	return secret;
}

static enum tn_webhook_verdict
verify_vec(const struct tn_webhook_secret *secrets, unsigned count,
	   const char *id, const char *ts, const char *sig, const char *body,
	   int64_t now, int64_t tolerance)
{
	const char *error = NULL;
	enum tn_webhook_verdict v;

	v = tn_webhook_verify(secrets, count, id, ts, sig, body, strlen(body),
			      now, tolerance, &error);
	if (v == TN_WEBHOOK_OK)
		assert_null(error);
	else
		assert_non_null(error);
	return v;
}

static void test_vector_sign(void **state)
{
	struct tn_webhook_secret s = secret_of(VEC_SECRET);
	char out[TN_WEBHOOK_HEADER_SIZE];

	assert_int_equal(s.len, 33);
	assert_memory_equal(s.key, "tenantmail example key; never use", 33);
	assert_int_equal(VEC_BODY_LEN, 407);
	assert_int_equal(tn_webhook_sign(&s, 1, VEC_ID, VEC_TS, vec_body,
					 VEC_BODY_LEN, out, sizeof(out)),
			 strlen(VEC_SIG));
	assert_string_equal(out, VEC_SIG);
}

static void test_vector_verify(void **state)
{
	struct tn_webhook_secret s = secret_of(VEC_SECRET);

	assert_int_equal(verify_vec(&s, 1, VEC_ID, VEC_TS_TEXT, VEC_SIG,
				    vec_body, VEC_TS, 300), TN_WEBHOOK_OK);
	/* tolerance 0: no time check at all */
	assert_int_equal(verify_vec(&s, 1, VEC_ID, VEC_TS_TEXT, VEC_SIG,
				    vec_body, 0, 0), TN_WEBHOOK_OK);
	assert_int_equal(verify_vec(&s, 1, VEC_ID, VEC_TS_TEXT, VEC_SIG,
				    vec_body, INT64_MAX, 0), TN_WEBHOOK_OK);
	/* error_r may be NULL */
	assert_int_equal(tn_webhook_verify(&s, 1, VEC_ID, VEC_TS_TEXT, "v1,x",
					   vec_body, VEC_BODY_LEN, VEC_TS, 300,
					   NULL), TN_WEBHOOK_MALFORMED);
}

static void sign_one(const struct tn_webhook_secret *s, char *out, size_t size)
{
	assert_int_equal(tn_webhook_sign(s, 1, VEC_ID, VEC_TS, vec_body,
					 VEC_BODY_LEN, out, size), 47);
}

static void test_rotation(void **state)
{
	struct tn_webhook_secret s[3] = {
		secret_of(KEY_TWO), secret_of(KEY_ONE), secret_of(VEC_SECRET),
	};
	char header[TN_WEBHOOK_HEADER_SIZE], one[3][TN_WEBHOOK_SIG_ELEMENT];
	char expect[TN_WEBHOOK_HEADER_SIZE];

	for (unsigned i = 0; i < 3; i++)
		sign_one(&s[i], one[i], sizeof(one[i]));
	assert_int_equal(tn_webhook_sign(s, 2, VEC_ID, VEC_TS, vec_body,
					 VEC_BODY_LEN, header, sizeof(header)),
			 2 * TN_WEBHOOK_SIG_ELEMENT - 1);
	snprintf(expect, sizeof(expect), "%s %s", one[0], one[1]);
	assert_string_equal(header, expect);
	/* receivers that know only the new or only the old secret */
	assert_int_equal(verify_vec(&s[0], 1, VEC_ID, VEC_TS_TEXT, header,
				    vec_body, VEC_TS, 300), TN_WEBHOOK_OK);
	assert_int_equal(verify_vec(&s[1], 1, VEC_ID, VEC_TS_TEXT, header,
				    vec_body, VEC_TS, 300), TN_WEBHOOK_OK);
	assert_int_equal(verify_vec(&s[2], 1, VEC_ID, VEC_TS_TEXT, header,
				    vec_body, VEC_TS, 300), TN_WEBHOOK_MISMATCH);
	/* a receiver with both secrets, and one element from a sender */
	assert_int_equal(verify_vec(&s[1], 2, VEC_ID, VEC_TS_TEXT, one[2],
				    vec_body, VEC_TS, 300), TN_WEBHOOK_OK);

	assert_int_equal(tn_webhook_sign(s, 3, VEC_ID, VEC_TS, vec_body,
					 VEC_BODY_LEN, header, sizeof(header)),
			 3 * TN_WEBHOOK_SIG_ELEMENT - 1);
	snprintf(expect, sizeof(expect), "%s %s %s", one[0], one[1], one[2]);
	assert_string_equal(header, expect);
	assert_string_equal(one[2], VEC_SIG);
	for (unsigned i = 0; i < 3; i++)
		assert_int_equal(verify_vec(&s[i], 1, VEC_ID, VEC_TS_TEXT,
					    header, vec_body, VEC_TS, 300),
				 TN_WEBHOOK_OK);
}

static void test_tampered(void **state)
{
	struct tn_webhook_secret s = secret_of(VEC_SECRET);
	char body[sizeof(vec_body)];

	memcpy(body, vec_body, sizeof(body));
	body[VEC_BODY_LEN - 5] = '1';	/* "dc=net" → "dc=1et" */
	assert_int_equal(verify_vec(&s, 1, VEC_ID, VEC_TS_TEXT, VEC_SIG,
				    body, VEC_TS, 300), TN_WEBHOOK_MISMATCH);
	/* the body with a final newline is another body */
	assert_int_equal(tn_webhook_verify(&s, 1, VEC_ID, VEC_TS_TEXT, VEC_SIG,
					   vec_body, VEC_BODY_LEN + 1, VEC_TS,
					   300, NULL), TN_WEBHOOK_MISMATCH);
	assert_int_equal(verify_vec(&s, 1, "019cade3-3f7d-7847-ba09-c18b78b7d0ad",
				    VEC_TS_TEXT, VEC_SIG, vec_body, VEC_TS, 300),
			 TN_WEBHOOK_MISMATCH);
	assert_int_equal(verify_vec(&s, 1, VEC_ID, "1772443879", VEC_SIG,
				    vec_body, VEC_TS, 300), TN_WEBHOOK_MISMATCH);
	/* the timestamp's text is signed, not its value */
	assert_int_equal(verify_vec(&s, 1, VEC_ID, "01772443878", VEC_SIG,
				    vec_body, VEC_TS, 300), TN_WEBHOOK_MISMATCH);
	assert_int_equal(verify_vec(&s, 1, VEC_ID, VEC_TS_TEXT,
				    "v1,ouP9PGI7441VuUG3DR69vapUN0rGjdN5SBU7uwCw3RA=",
				    vec_body, VEC_TS, 300), TN_WEBHOOK_MISMATCH);
}

static void test_time_window(void **state)
{
	struct tn_webhook_secret s = secret_of(VEC_SECRET);
	static const struct {
		int64_t now, tolerance;
		enum tn_webhook_verdict verdict;
	} cases[] = {
		{ VEC_TS + 300, 300, TN_WEBHOOK_OK },
		{ VEC_TS - 300, 300, TN_WEBHOOK_OK },
		{ VEC_TS + 301, 300, TN_WEBHOOK_STALE },	/* old */
		{ VEC_TS - 301, 300, TN_WEBHOOK_STALE },	/* future */
		{ VEC_TS + 86400, 0, TN_WEBHOOK_OK },
		{ INT64_MIN, 300, TN_WEBHOOK_STALE },
		{ INT64_MAX, 300, TN_WEBHOOK_STALE },
		{ 0, INT64_MAX, TN_WEBHOOK_OK },
		{ INT64_MIN, INT64_MAX, TN_WEBHOOK_STALE },	/* no overflow */
		{ VEC_TS, -1, TN_WEBHOOK_MALFORMED },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		assert_int_equal(verify_vec(&s, 1, VEC_ID, VEC_TS_TEXT, VEC_SIG,
					    vec_body, cases[i].now,
					    cases[i].tolerance),
				 cases[i].verdict);
	/* a stale request with a wrong signature is still stale */
	assert_int_equal(verify_vec(&s, 1, VEC_ID, VEC_TS_TEXT,
				    "v1,ouP9PGI7441VuUG3DR69vapUN0rGjdN5SBU7uwCw3RA=",
				    vec_body, VEC_TS + 301, 300), TN_WEBHOOK_STALE);
}

static void test_secret_parse(void **state)
{
	static const char *const bad[] = {
		"dGVuYW50bWFpbCBleGFtcGxlIGtleTsgbmV2ZXIgdXNl",	/* no prefix */
		"WHSEC_dGVuYW50bWFpbCBleGFtcGxlIGtleTsgbmV2ZXIgdXNl",
		"whsec",
		"whsec_",
		"whsec_dGVuYW50bWFpbCBleGFtcGxlIGtleTsgbmV2ZXIgdXN",	/* length */
		"whsec_dGVuYW50bWFpbCBleGFtcGxlIGtleTsgbmV2ZXIgdXNl=",
		"whsec_dGVuYW50bWFpbCBleGFtcGxlIGtleTsgbmV2ZXIgdX!l",	/* alphabet */
		"whsec_dGVuYW50bWFpbCBleGFtcGxlIGtleTsgbmV2ZXIgdX-l",
		"whsec_dGVuYW50bWFpbCBleGFtcGxlIGtl eTsgbmV2ZXIgdXNl",
		" whsec_dGVuYW50bWFpbCBleGFtcGxlIGtleTsgbmV2ZXIgdXNl",
		"whsec_dGVuYW50bWFpbCBleGFtcGxlIGtleTsgbmV2ZXIgdXNl\n",
		"whsec_AAECAwQFBgcICQoLDA0ODw=A",			/* padding */
		"whsec_AAECAwQFBgcICQoLDA0ODw===",
		"whsec_AAECAwQFBgcICQoLDA0ODx==",			/* not canonical */
		"whsec_AAECAwQFBgcICQoLDA0O",				/* 15 bytes */
		"whsec_dGVzdA==",					/* 4 bytes */
		"whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygp"
		"KissLS4vMDEyMzQ1Njc4OTo7PD0+P0A=",			/* 65 bytes */
		"whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygp"
		"KissLS4vMDEyMzQ1Njc4OTo7PD0+P0BB",			/* 66 bytes */
		"whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygp"
		"KissLS4vMDEyMzQ1Njc4OTo7PD0+P0BBQg==",			/* 67 bytes */
	};
	struct tn_webhook_secret s;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		const char *error = NULL;

		memset(&s, 0xa5, sizeof(s));
		assert_int_equal(tn_webhook_secret_parse(bad[i], &s, &error), -1);
		assert_non_null(error);
	}
	s = secret_of(KEY_64);
	assert_int_equal(s.len, 64);
	for (unsigned i = 0; i < 64; i++)
		assert_int_equal(s.key[i], i);
	s = secret_of(KEY_16);
	assert_int_equal(s.len, 16);
	s = secret_of(KEY_ONE);
	assert_int_equal(s.len, 24);
	assert_memory_equal(s.key, "rotation key number one!", 24);
}

static void test_malformed_header(void **state)
{
	static const char *const bad[] = {
		"",
		"   ",
		"v1",
		"v1,",
		"v1,abc",
		"v2,ouP9PGI7441VuUG3DR69vapUN0rGjdN5SBU7uwCw3RQ=",
		"v1a,ouP9PGI7441VuUG3DR69vapUN0rGjdN5SBU7uwCw3RQ=",
		"V1,ouP9PGI7441VuUG3DR69vapUN0rGjdN5SBU7uwCw3RQ=",
		"v1,ouP9PGI7441VuUG3DR69vapUN0rGjdN5SBU7uwCw3RQ",	/* no pad */
		"v1,ouP9PGI7441VuUG3DR69vapUN0rGjdN5SBU7uwCw3RQ==",
		"v1,ouP9PGI7441VuUG3DR69vapUN0rGjdN5SBU7uwCw3RQA",	/* 33 bytes */
		"v1,ouP9PGI7441VuUG3DR69vapUN0rGjdN5SBU7uwCw3RR=",	/* bits */
		"v1,ouP9PGI7441VuUG3DR69vapUN0rGjdN5SBU7uwCw3R*=",
		"v1,ouP9PGI7441VuUG3DR69vapUN0rGjdN5SBU7uwCw3RQ=,",
		"v1,ouP9PGI7441VuUG3DR69vapUN0rGjdN5SBU7uwCw3RQ=\t",
		"v1:ouP9PGI7441VuUG3DR69vapUN0rGjdN5SBU7uwCw3RQ=",
		"v1,v1,ouP9PGI7441VuUG3DR69vapUN0rGjdN5SBU7uwCw3RQ=",
	};
	struct tn_webhook_secret s = secret_of(VEC_SECRET);

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_int_equal(verify_vec(&s, 1, VEC_ID, VEC_TS_TEXT, bad[i],
					    vec_body, VEC_TS, 300),
				 TN_WEBHOOK_MALFORMED);
}

static void test_header_elements(void **state)
{
	struct tn_webhook_secret s = secret_of(VEC_SECRET);
	static const char *const ok[] = {
		"v1,abc " VEC_SIG,
		"v1a,Zm9v v2,x " VEC_SIG " junk",
		"  " VEC_SIG "  ",
		"v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA= " VEC_SIG,
	};

	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++)
		assert_int_equal(verify_vec(&s, 1, VEC_ID, VEC_TS_TEXT, ok[i],
					    vec_body, VEC_TS, 300), TN_WEBHOOK_OK);
	/* a malformed v1 element next to a well-formed one that differs */
	assert_int_equal(verify_vec(&s, 1, VEC_ID, VEC_TS_TEXT,
				    "v1,abc v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
				    vec_body, VEC_TS, 300), TN_WEBHOOK_MISMATCH);
}

static void test_malformed_timestamp(void **state)
{
	static const char *const bad[] = {
		"", "+1772443878", "-1772443878", " 1772443878", "1772443878 ",
		"1772443878\n", "0x69a58e66", "1.5", "1e9", "17724 43878",
		"9223372036854775808", "99999999999999999999",
		"100000000000000000000000000000",
	};
	struct tn_webhook_secret s = secret_of(VEC_SECRET);

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_int_equal(verify_vec(&s, 1, VEC_ID, bad[i], VEC_SIG,
					    vec_body, VEC_TS, 0),
				 TN_WEBHOOK_MALFORMED);
	/* the largest value parses: a signature problem, not a format one */
	assert_int_equal(verify_vec(&s, 1, VEC_ID, "9223372036854775807",
				    VEC_SIG, vec_body, VEC_TS, 0),
			 TN_WEBHOOK_MISMATCH);
	assert_int_equal(verify_vec(&s, 1, VEC_ID, "9223372036854775807",
				    VEC_SIG, vec_body, VEC_TS, 300),
			 TN_WEBHOOK_STALE);
}

static void test_bad_arguments(void **state)
{
	struct tn_webhook_secret s[TN_WEBHOOK_SECRETS_MAX + 1];
	char out[TN_WEBHOOK_HEADER_SIZE + TN_WEBHOOK_SIG_ELEMENT];

	for (unsigned i = 0; i <= TN_WEBHOOK_SECRETS_MAX; i++)
		s[i] = secret_of(KEY_16);
	assert_int_equal(tn_webhook_sign(s, 0, VEC_ID, 1, "", 0, out,
					 sizeof(out)), -1);
	assert_int_equal(tn_webhook_sign(s, TN_WEBHOOK_SECRETS_MAX + 1, VEC_ID,
					 1, "", 0, out, sizeof(out)), -1);
	assert_int_equal(tn_webhook_sign(s, TN_WEBHOOK_SECRETS_MAX, VEC_ID, 1,
					 "", 0, out, TN_WEBHOOK_HEADER_SIZE),
			 TN_WEBHOOK_HEADER_SIZE - 2);
	assert_int_equal(strlen(out), TN_WEBHOOK_HEADER_SIZE - 2);
	/* an empty body signs too, and NULL is fine for it */
	assert_int_equal(tn_webhook_sign(s, 1, VEC_ID, 1, NULL, 0, out, 48), 47);
	assert_int_equal(verify_vec(s, 1, VEC_ID, "1", out, "", 1, 300),
			 TN_WEBHOOK_OK);
	/* a hand-made secret out of range */
	s[0].len = TN_WEBHOOK_KEY_MIN - 1;
	assert_int_equal(tn_webhook_sign(s, 1, VEC_ID, 1, "", 0, out, 48), -1);
	assert_int_equal(verify_vec(s, 1, VEC_ID, "1", VEC_SIG, "", 1, 0),
			 TN_WEBHOOK_MALFORMED);
	assert_int_equal(verify_vec(s + 1, 0, VEC_ID, "1", VEC_SIG, "", 1, 0),
			 TN_WEBHOOK_MALFORMED);
	assert_int_equal(verify_vec(s + 1, 1, "", "1", VEC_SIG, "", 1, 0),
			 TN_WEBHOOK_MALFORMED);
}

static void test_buffer_too_small(void **state)
{
	struct tn_webhook_secret s[2] = { secret_of(KEY_ONE), secret_of(KEY_TWO) };
	char out[2 * TN_WEBHOOK_SIG_ELEMENT];

	memset(out, 'x', sizeof(out));
	assert_int_equal(tn_webhook_sign(s, 1, VEC_ID, VEC_TS, vec_body,
					 VEC_BODY_LEN, out, 47), -1);
	assert_int_equal(tn_webhook_sign(s, 1, VEC_ID, VEC_TS, vec_body,
					 VEC_BODY_LEN, out, 0), -1);
	assert_int_equal(tn_webhook_sign(s, 2, VEC_ID, VEC_TS, vec_body,
					 VEC_BODY_LEN, out, sizeof(out) - 1), -1);
	/* nothing was written */
	for (size_t i = 0; i < sizeof(out); i++)
		assert_int_equal(out[i], 'x');
	assert_int_equal(tn_webhook_sign(s, 1, VEC_ID, VEC_TS, vec_body,
					 VEC_BODY_LEN, out, 48), 47);
	assert_int_equal(tn_webhook_sign(s, 2, VEC_ID, VEC_TS, vec_body,
					 VEC_BODY_LEN, out, sizeof(out)), 95);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_vector_sign),
		cmocka_unit_test(test_vector_verify),
		cmocka_unit_test(test_rotation),
		cmocka_unit_test(test_tampered),
		cmocka_unit_test(test_time_window),
		cmocka_unit_test(test_secret_parse),
		cmocka_unit_test(test_malformed_header),
		cmocka_unit_test(test_header_elements),
		cmocka_unit_test(test_malformed_timestamp),
		cmocka_unit_test(test_bad_arguments),
		cmocka_unit_test(test_buffer_too_small),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
