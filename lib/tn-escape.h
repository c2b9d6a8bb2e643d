/*++
 * NAME
 *	tn-escape 3h
 * SUMMARY
 *	escaping at the boundaries: LDAP filters, DNs, addresses
 * DESCRIPTION
 *	tn_escape_filter_value() escapes a value for an LDAP search filter
 *	(RFC 4515): '*', '(', ')', '\\' and NUL become \2a \28 \29 \5c \00;
 *	bytes outside printable ASCII are escaped as \XX too, so a filter is
 *	always plain ASCII. The value may contain NUL (length given).
 *
 *	tn_escape_dn_value() escapes an attribute value for use in a DN
 *	(RFC 4514): ',', '+', '"', '\\', '<', '>', ';' and '=' get a
 *	backslash; a leading '#' or space and a trailing space too; NUL and
 *	bytes outside printable ASCII become \XX.
 *
 *	tn_address_normalize() checks and normalises a mail address for the
 *	lookup: printable ASCII only (no controls, no space, no NUL, no 8-bit:
 *	internationalised domains are looked up in their A-label form),
 *	exactly one '@' with a non-empty local part and domain, at most 254
 *	bytes (RFC 5321), local part at most 64; the result is lower-cased.
 *	Returns 0, or -1 with a static reason: such an address can be
 *	nobody's mailbox, so callers answer "not found" without asking the
 *	directory.
 *
 *	tn_domain_normalize() does the same for a bare domain name.
 *
 *	All results are fresh allocations (tn-mem) the caller frees.
 *--*/
#ifndef TN_ESCAPE_H
#define TN_ESCAPE_H

#include <stddef.h>

#define TN_ADDRESS_MAX 254
#define TN_LOCALPART_MAX 64
#define TN_DOMAIN_MAX 253

char *tn_escape_filter_value(const char *value, size_t len);
char *tn_escape_dn_value(const char *value, size_t len);
int tn_address_normalize(const char *addr, size_t len, char **addr_r,
			 const char **error_r);
int tn_domain_normalize(const char *domain, size_t len, char **domain_r,
			const char **error_r);

#endif
