/*++
 * NAME
 *	tn-escape 3
 * SUMMARY
 *	escaping at the boundaries (see tn-escape.h)
 *--*/
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "tn-escape.h"
#include "tn-mem.h"

static const char tn_escape_hex[] = "0123456789abcdef";

static char *tn_escape_hex_put(char *out, unsigned char c)
{
	*out++ = '\\';
	*out++ = tn_escape_hex[c >> 4];
	*out++ = tn_escape_hex[c & 0x0f];
	return out;
}

static bool tn_escape_printable(unsigned char c)
{
	return c >= 0x20 && c < 0x7f;
}

char *tn_escape_filter_value(const char *value, size_t len)
{
	char *res = tn_mem_alloc(len * 3 + 1), *out = res;

	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)value[i];

		if (c == '*' || c == '(' || c == ')' || c == '\\' ||
		    !tn_escape_printable(c))
			out = tn_escape_hex_put(out, c);
		else
			*out++ = (char)c;
	}
	*out = '\0';
	return res;
}

char *tn_escape_dn_value(const char *value, size_t len)
{
	char *res = tn_mem_alloc(len * 3 + 1), *out = res;

	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)value[i];

		if (!tn_escape_printable(c)) {
			out = tn_escape_hex_put(out, c);
			continue;
		}
		if (strchr(",+\"\\<>;=", c) != NULL ||
		    (i == 0 && (c == '#' || c == ' ')) ||
		    (i == len - 1 && c == ' '))
			*out++ = '\\';
		*out++ = (char)c;
	}
	*out = '\0';
	return res;
}

static int tn_domain_check(const char *d, size_t len, const char **error_r)
{
	if (len == 0) {
		*error_r = "empty domain";
		return -1;
	}
	if (len > TN_DOMAIN_MAX) {
		*error_r = "domain too long";
		return -1;
	}
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)d[i];

		if (!tn_escape_printable(c) || c == ' ' || c == '@') {
			*error_r = "invalid character in domain";
			return -1;
		}
	}
	return 0;
}

static char *tn_lower_dup(const char *s, size_t len)
{
	char *res = tn_mem_strndup(s, len);

	for (char *p = res; *p != '\0'; p++) {
		if (*p >= 'A' && *p <= 'Z')
			*p = (char)(*p - 'A' + 'a');
	}
	return res;
}

int tn_domain_normalize(const char *domain, size_t len, char **domain_r,
			const char **error_r)
{
	if (tn_domain_check(domain, len, error_r) < 0)
		return -1;
	*domain_r = tn_lower_dup(domain, len);
	return 0;
}

int tn_address_normalize(const char *addr, size_t len, char **addr_r,
			 const char **error_r)
{
	const char *at = len > 0 ? memrchr(addr, '@', len) : NULL;
	size_t local_len;

	if (len > TN_ADDRESS_MAX) {
		*error_r = "address too long";
		return -1;
	}
	if (at == NULL || at == addr) {
		*error_r = at == NULL ? "no '@' in address" : "empty local part";
		return -1;
	}
	local_len = (size_t)(at - addr);
	if (local_len > TN_LOCALPART_MAX || memchr(addr, '@', local_len) != NULL) {
		*error_r = local_len > TN_LOCALPART_MAX ?
			"local part too long" : "more than one '@' in address";
		return -1;
	}
	for (size_t i = 0; i < local_len; i++) {
		unsigned char c = (unsigned char)addr[i];

		if (!tn_escape_printable(c) || c == ' ') {
			*error_r = "invalid character in local part";
			return -1;
		}
	}
	if (tn_domain_check(at + 1, len - local_len - 1, error_r) < 0)
		return -1;
	*addr_r = tn_lower_dup(addr, len);
	return 0;
}
