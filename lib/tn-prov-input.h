/*++
 * NAME
 *	tn-prov-input 3h
 * SUMMARY
 *	provisioning input: validation, password hashing, list cursors
 * DESCRIPTION
 *	The parts of provisioning that need no directory, so unit tests
 *	can reach every rule.
 *
 *	Checks return 0 (with a normalised copy in *out_r where there is
 *	one: the caller frees it) or -1 with a static reason in *why_r that
 *	the caller prefixes with the field name:
 *	tenant id  ^[a-z0-9][a-z0-9-]{0,62}$ after lower-casing;
 *	domain     LDH labels of 1..63, at least two, at most 253 bytes,
 *	           lower-cased, A-label form (no 8-bit);
 *	address    dot-atom local part (RFC 5322 atext and dots, no
 *	           leading, trailing or double dot, at most 64) "@" a domain,
 *	           at most 254, lower-cased;
 *	text       valid UTF-8 without control characters, 1..max bytes;
 *	name       pool names: ^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$;
 *	host       a host name or IPv4 address, optionally ":port".
 *
 *	tn_prov_input_hash_password() hashes clear text with SHA512-CRYPT
 *	(crypt_r, "$6$rounds=N$" and 16 salt characters from getrandom(2))
 *	and returns "{SHA512-CRYPT}$6$...". tn_prov_input_check_hash()
 *	accepts "{SHA512-CRYPT}", "{ARGON2ID}" and "{BLF-CRYPT}" hashes of
 *	the form crypt(3) / libsodium write.
 *
 *	Cursors: base64url (no padding) of {"a":<last key>,"q":<query
 *	fingerprint>}; decoding refuses a cursor made for another query.
 *--*/
#ifndef TN_PROV_INPUT_H
#define TN_PROV_INPUT_H

#include <stddef.h>
#include <stdint.h>

#define TN_PROV_SALT_CHARS 16
#define TN_PROV_ROUNDS_MIN 1000
#define TN_PROV_ROUNDS_MAX 999999999
#define TN_PROV_PASSWORD_MAX 1024
/* Largest integer a limit may have: exact in JSON (2^53 - 1). */
#define TN_PROV_COUNT_MAX INT64_C(9007199254740991)

int tn_prov_input_tenant_id(const char *in, char **out_r, const char **why_r);
int tn_prov_input_domain(const char *in, char **out_r, const char **why_r);
int tn_prov_input_address(const char *in, char **out_r, const char **why_r);
int tn_prov_input_text(const char *in, size_t len, size_t max, const char **why_r);
int tn_prov_input_name(const char *in, const char **why_r);
int tn_prov_input_host(const char *in, const char **why_r);

char *tn_prov_input_hash_password(const char *clear, unsigned rounds,
				  const char **why_r);
int tn_prov_input_check_hash(const char *hash, const char **why_r);

char *tn_prov_input_cursor_encode(const char *last_key, const char *query);
/* *last_key_r: a fresh string; -1 when malformed or for another query. */
int tn_prov_input_cursor_decode(const char *cursor, const char *query,
				char **last_key_r, const char **why_r);

/* GeneralizedTime "YYYYMMDDHHMMSS.mmmZ" of a wall clock time in ms, and
 * back to milliseconds (also without the fraction). */
char *tn_prov_input_gentime(int64_t ms);
int tn_prov_input_parse_gentime(const char *text, int64_t *ms_r);
/* RFC 3339 "YYYY-MM-DDTHH:MM:SS.mmmZ" (events.md times). */
char *tn_prov_input_rfc3339(int64_t ms);

#endif
