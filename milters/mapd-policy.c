/*++
 * NAME
 *	mapd-policy 3
 * SUMMARY
 *	tn-mapd's protocol and decisions (see mapd-policy.h)
 * DESCRIPTION
 *	Pure functions: no I/O, no lookup; the unit tests link this file
 *	alone with lib/.
 *--*/
#include "tn-build.h"

#include <stdio.h>
#include <string.h>

#include "mapd-policy.h"
#include "tn-escape.h"
#include "tn-mem.h"

/* Netstring length prefix: enough digits for TN_MAPD_REQUEST_HARD_MAX. */
#define TN_MAPD_LEN_DIGITS_MAX 9

static const char *const tn_mapd_map_names[TN_MAPD_NMAPS] = {
	"domains", "mailboxes", "aliases", "senders",
};

const char *tn_mapd_map_name(enum tn_mapd_map map)
{
	return map < TN_MAPD_NMAPS ? tn_mapd_map_names[map] : "?";
}

/* --- netstrings --------------------------------------------------------------------- */

/* The length prefix: digits up to ':'. PARSE_OK with *digits_r (the
 * prefix length without ':'), MORE, or ERROR. */
static enum tn_mapd_parse tn_mapd_netstring_len(const char *buf, size_t len, size_t max_payload,
						size_t *value_r, size_t *digits_r,
						const char **error_r)
{
	size_t value = 0, i;

	for (i = 0; i < len && buf[i] != ':'; i++) {
		if (buf[i] < '0' || buf[i] > '9') {
			*error_r = "netstring length is not a number";
			return TN_MAPD_PARSE_ERROR;
		}
		if (i >= TN_MAPD_LEN_DIGITS_MAX) {
			*error_r = "netstring length too long";
			return TN_MAPD_PARSE_ERROR;
		}
		value = value * 10 + (size_t)(buf[i] - '0');
	}
	if (i < len && i == 0) {
		*error_r = "netstring without a length";
		return TN_MAPD_PARSE_ERROR;
	}
	if (value > max_payload) {
		*error_r = "request larger than mapd_max_request_size";
		return TN_MAPD_PARSE_ERROR;
	}
	if (i == len)
		return TN_MAPD_PARSE_MORE;
	*value_r = value;
	*digits_r = i;
	return TN_MAPD_PARSE_OK;
}

enum tn_mapd_parse tn_mapd_netstring_parse(const char *buf, size_t len, size_t max_payload,
					   const char **payload_r, size_t *payload_len_r,
					   size_t *consumed_r, const char **error_r)
{
	size_t value = 0, digits = 0, end;
	enum tn_mapd_parse rc;

	rc = tn_mapd_netstring_len(buf, len, max_payload, &value, &digits, error_r);
	if (rc != TN_MAPD_PARSE_OK)
		return rc;
	end = digits + 1 + value;	/* the index of the ',' */
	if (len <= end)
		return TN_MAPD_PARSE_MORE;
	if (buf[end] != ',') {
		*error_r = "netstring does not end with ','";
		return TN_MAPD_PARSE_ERROR;
	}
	*payload_r = buf + digits + 1;
	*payload_len_r = value;
	*consumed_r = end + 1;
	return TN_MAPD_PARSE_OK;
}

int tn_mapd_request_split(const char *payload, size_t len, enum tn_mapd_map *map_r,
			  const char **key_r, size_t *key_len_r, const char **error_r)
{
	const char *space = memchr(payload, ' ', len);
	size_t name_len;

	if (space == NULL) {
		*error_r = "request without a space between map name and key";
		return -1;
	}
	name_len = (size_t)(space - payload);
	for (int m = 0; m < TN_MAPD_NMAPS; m++) {
		if (strlen(tn_mapd_map_names[m]) == name_len &&
		    memcmp(tn_mapd_map_names[m], payload, name_len) == 0) {
			*map_r = (enum tn_mapd_map)m;
			*key_r = space + 1;
			*key_len_r = len - name_len - 1;
			return 0;
		}
	}
	*error_r = "unknown map name";
	return -1;
}

/* --- keys ---------------------------------------------------------------------------- */

static bool tn_mapd_ldh(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		c == '-' || c == '_';
}

/* RFC 5322 atext */
static bool tn_mapd_atext(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		(c != '\0' && strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL);
}

bool tn_mapd_domain_valid(const char *name, size_t len)
{
	size_t label = 0;

	if (len == 0 || len > TN_DOMAIN_MAX || name[0] == '.' || name[len - 1] == '.' ||
	    memchr(name, '.', len) == NULL)
		return false;
	for (size_t i = 0; i < len; i++) {
		if (name[i] == '.') {
			if (label == 0)
				return false;
			label = 0;
		} else if (!tn_mapd_ldh(name[i]) || ++label > 63) {
			return false;
		}
	}
	return true;
}

static bool tn_mapd_local_valid(const char *local, size_t len)
{
	if (len == 0 || len > TN_LOCALPART_MAX || local[0] == '.' || local[len - 1] == '.')
		return false;
	for (size_t i = 0; i < len; i++) {
		if (local[i] == '.' ? local[i + 1] == '.' : !tn_mapd_atext(local[i]))
			return false;
	}
	return true;
}

bool tn_mapd_key_valid(enum tn_mapd_map map, const char *key, size_t len, const char **why_r)
{
	const char *at;

	if (map == TN_MAPD_DOMAINS) {
		*why_r = "not a domain name";
		return tn_mapd_domain_valid(key, len);
	}
	if (len > TN_ADDRESS_MAX) {
		*why_r = "address too long";
		return false;
	}
	at = memchr(key, '@', len);
	if (at == NULL || at == key) {
		*why_r = at == NULL ? "no domain" : "no local part";
		return false;
	}
	if (!tn_mapd_local_valid(key, (size_t)(at - key))) {
		*why_r = "local part is not a dot-atom";
		return false;
	}
	*why_r = "not a domain name";
	return tn_mapd_domain_valid(at + 1, len - (size_t)(at - key) - 1);
}

/* --- answers ------------------------------------------------------------------------- */

char *tn_mapd_join(const char *const *items, size_t n)
{
	size_t total = 0, off = 0;
	char *out;

	for (size_t i = 0; i < n; i++)
		total += strlen(items[i]) + 1;
	if (total > TN_MAPD_REPLY_MAX - 16)
		return NULL;
	out = tn_mem_alloc(total + 1);
	for (size_t i = 0; i < n; i++) {
		size_t len = strlen(items[i]);

		if (i > 0)
			out[off++] = ',';
		memcpy(out + off, items[i], len);
		off += len;
	}
	out[off] = '\0';
	return out;
}

static enum tn_mapd_answer tn_mapd_answer_alias(const struct tn_account *acct, char **value_r)
{
	if (acct->kind != TN_ACCOUNT_ALIAS || acct->ntargets == 0)
		return TN_MAPD_ANSWER_NOTFOUND;
	*value_r = tn_mapd_join((const char *const *)acct->targets, acct->ntargets);
	return *value_r != NULL ? TN_MAPD_ANSWER_OK : TN_MAPD_ANSWER_TOO_LARGE;
}

enum tn_mapd_answer tn_mapd_answer(enum tn_mapd_map map, const struct tn_account *acct,
				   char **value_r)
{
	*value_r = NULL;
	switch (map) {
	case TN_MAPD_DOMAINS:
		*value_r = tn_mem_strdup(acct->tenant);
		return TN_MAPD_ANSWER_OK;
	case TN_MAPD_MAILBOXES:
		if (acct->kind != TN_ACCOUNT_MAILBOX)
			return TN_MAPD_ANSWER_NOTFOUND;
		*value_r = tn_mem_strdup(acct->address);
		return TN_MAPD_ANSWER_OK;
	case TN_MAPD_ALIASES:
		return tn_mapd_answer_alias(acct, value_r);
	case TN_MAPD_SENDERS:
		if (acct->kind == TN_ACCOUNT_MAILBOX) {
			*value_r = tn_mem_strdup(acct->address);
			return TN_MAPD_ANSWER_OK;
		}
		if (acct->kind == TN_ACCOUNT_ALIAS && acct->ntargets > 0)
			return TN_MAPD_ANSWER_OWNERS;
		return TN_MAPD_ANSWER_NOTFOUND;
	case TN_MAPD_NMAPS:
		break;
	}
	return TN_MAPD_ANSWER_NOTFOUND;
}

char *tn_mapd_reply(const char *status, const char *text, size_t *len_r)
{
	size_t payload = strlen(status) + 1 + strlen(text);
	char *out = tn_mem_printf("%zu:%s %s,", payload, status, text);

	*len_r = strlen(out);
	return out;
}
