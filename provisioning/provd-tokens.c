/*++
 * NAME
 *	provd-tokens 3
 * SUMMARY
 *	tn-provisiond: the tokens file, bearer authentication, rate limit
 * DESCRIPTION
 *	The tokens file holds one token a line, as its SHA-256 digest and
 *	a role: "<hex> admin", "<hex> billing", "<hex> billing:<name>" or
 *	"<hex> tenant:<id>". '#' starts a comment line. SIGHUP reloads it
 *	(provd_tokens_load); the rate-limit state of tokens still present
 *	is carried over.
 *
 *	Rate limit: a token bucket per token (provd_rate_limit requests
 *	per second, up to provd_rate_burst at once). A request takes one
 *	token from the bucket; an empty bucket answers how many whole
 *	seconds (at least 1) until one is there again.
 * SECURITY
 *	Digests only: the token itself is never stored nor logged. Every
 *	entry is compared with CRYPTO_memcmp, without an early exit.
 *--*/
#include "tn-build.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "provd.h"
#include "tn-log.h"
#include "tn-mem.h"

static int provd_hex_digest(const char *hex, unsigned char *out)
{
	for (size_t i = 0; i < SHA256_DIGEST_LENGTH; i++) {
		unsigned v;

		if (!isxdigit((unsigned char)hex[2 * i]) || !isxdigit((unsigned char)hex[2 * i + 1]) ||
		    sscanf(hex + 2 * i, "%2x", &v) != 1)
			return -1;
		out[i] = (unsigned char)v;
	}
	return hex[2 * SHA256_DIGEST_LENGTH] == '\0' ? 0 : -1;
}

void provd_tokens_free(struct provd_token **tokens, size_t n)
{
	for (size_t i = 0; i < n; i++)
		tn_mem_free(&(*tokens)[i].name);
	tn_mem_free(tokens);
}

/* "admin", "billing", "billing:<name>", "tenant:<id>"; -1: none of these */
static int provd_role_parse(const char *who, struct provd_token *t)
{
	if (strcmp(who, "admin") == 0) {
		t->role = PROVD_ADMIN;
	} else if (strcmp(who, "billing") == 0) {
		t->role = PROVD_BILLING;
	} else if (strncmp(who, "billing:", 8) == 0 && who[8] != '\0') {
		t->role = PROVD_BILLING;
		t->name = tn_mem_strdup(who + 8);
	} else if (strncmp(who, "tenant:", 7) == 0 && who[7] != '\0') {
		t->role = PROVD_TENANT;
		t->name = tn_mem_strdup(who + 7);
	} else {
		return -1;
	}
	return 0;
}

static int provd_token_line(struct provd_token **tokens, size_t *n, char *line,
			    const char *path, unsigned lineno)
{
	char *save = NULL, *hex = strtok_r(line, " \t\r\n", &save);
	char *who = strtok_r(NULL, " \t\r\n", &save);
	struct provd_token t = { .name = NULL };

	if (hex == NULL || *hex == '#')
		return 0;
	if (who == NULL || strtok_r(NULL, " \t\r\n", &save) != NULL ||
	    provd_hex_digest(hex, t.digest) < 0 || provd_role_parse(who, &t) < 0) {
		tn_error("%s:%u: expected '<sha256-hex> admin', '<sha256-hex> billing' or "
			 "'<sha256-hex> tenant:<id>'", path, lineno);
		return -1;
	}
	*tokens = tn_mem_realloc(*tokens, (*n + 1) * sizeof(**tokens));
	(*tokens)[(*n)++] = t;
	return 0;
}

/* The buckets of tokens that stay; new ones start full. Under both locks. */
static void provd_buckets_carry(const struct provd_token *old, size_t nold,
				struct provd_token *tokens, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		for (size_t j = 0; j < nold; j++) {
			if (memcmp(tokens[i].digest, old[j].digest, SHA256_DIGEST_LENGTH) == 0)
				tokens[i].bucket = old[j].bucket;
		}
	}
}

int provd_tokens_load(struct provd *pd)
{
	struct provd_token *tokens = NULL;
	size_t n = 0;
	const char *path = tn_conf_str(pd->conf, "provd_tokens_file");
	FILE *f = fopen(path, "re");
	char *line = NULL;
	size_t size = 0;
	unsigned lineno = 0;
	int ret = 0;

	if (f == NULL) {
		tn_error("provd_tokens_file %s: %s", path, strerror(errno));
		return -1;
	}
	while (ret == 0 && getline(&line, &size, f) > 0)
		ret = provd_token_line(&tokens, &n, line, path, ++lineno);
	free(line);
	fclose(f);
	if (ret < 0) {
		provd_tokens_free(&tokens, n);
		return -1;
	}
	if (n == 0)
		tn_warning("provd_tokens_file %s: no tokens; every request will be refused", path);
	pthread_rwlock_wrlock(&pd->tlock);
	pthread_mutex_lock(&pd->rlock);
	provd_buckets_carry(pd->tokens, pd->ntokens, tokens, n);
	pthread_mutex_unlock(&pd->rlock);
	provd_tokens_free(&pd->tokens, pd->ntokens);
	pd->tokens = tokens;
	pd->ntokens = n;
	pthread_rwlock_unlock(&pd->tlock);
	return 0;
}

/* The idempotency scope of a token: 128 bits of SHA-256 over a label and
 * the token's digest (not the digest itself, which the tokens file
 * holds), in hex. */
static void provd_scope(const unsigned char *digest, char scope[33])
{
	static const char label[] = "tn-provisiond idempotency scope";
	unsigned char buf[sizeof(label) + SHA256_DIGEST_LENGTH], out[SHA256_DIGEST_LENGTH];

	memcpy(buf, label, sizeof(label));
	memcpy(buf + sizeof(label), digest, SHA256_DIGEST_LENGTH);
	SHA256(buf, sizeof(buf), out);
	for (size_t i = 0; i < 16; i++)
		snprintf(scope + 2 * i, 3, "%02x", out[i]);
}

/* The token of "Authorization: Bearer <token>", or NULL */
static const char *provd_bearer(struct MHD_Connection *conn)
{
	const char *h = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
						    MHD_HTTP_HEADER_AUTHORIZATION);

	if (h == NULL || strncasecmp(h, "Bearer ", 7) != 0)
		return NULL;
	h += 7;
	while (*h == ' ')
		h++;
	return *h != '\0' ? h : NULL;
}

int provd_auth(struct provd *pd, struct MHD_Connection *conn, struct provd_caller *c)
{
	const char *token = provd_bearer(conn);
	unsigned char digest[SHA256_DIGEST_LENGTH];
	const struct provd_token *found = NULL;

	if (token == NULL)
		return -1;
	SHA256((const unsigned char *)token, strlen(token), digest);
	pthread_rwlock_rdlock(&pd->tlock);
	for (size_t i = 0; i < pd->ntokens; i++) {
		if (CRYPTO_memcmp(digest, pd->tokens[i].digest, sizeof(digest)) == 0)
			found = &pd->tokens[i];
	}
	if (found != NULL) {
		c->role = found->role;
		c->name = found->name != NULL ? tn_mem_strdup(found->name) : NULL;
		memcpy(c->digest, found->digest, sizeof(c->digest));
		provd_scope(found->digest, c->scope);
	}
	pthread_rwlock_unlock(&pd->tlock);
	return found != NULL ? 0 : -1;
}

void provd_caller_clear(struct provd_caller *c)
{
	tn_mem_free(&c->name);
}

unsigned provd_bucket_take(struct provd_bucket *b, double rate, double burst, tn_msec_t now)
{
	double wait;
	unsigned whole;

	if (b->last == 0 || now < b->last) {
		b->level = burst;
	} else {
		b->level += (double)(now - b->last) * rate / 1000.0;
		if (b->level > burst)
			b->level = burst;
	}
	b->last = now;
	if (b->level >= 1.0) {
		b->level -= 1.0;
		return 0;
	}
	wait = (1.0 - b->level) / rate;
	whole = (unsigned)wait;
	if ((double)whole < wait)
		whole++;		/* rounded up: whole seconds */
	return whole < 1 ? 1 : whole;
}

/* The caller's token is found again by its digest (tokens may have been
 * reloaded since provd_auth; a token gone meanwhile is not limited). */
unsigned provd_rate_take(struct provd *pd, const struct provd_caller *c)
{
	unsigned wait = 0;

	if (pd->rate <= 0)
		return 0;
	pthread_rwlock_rdlock(&pd->tlock);
	for (size_t i = 0; i < pd->ntokens; i++) {
		if (memcmp(pd->tokens[i].digest, c->digest, SHA256_DIGEST_LENGTH) != 0)
			continue;
		pthread_mutex_lock(&pd->rlock);
		wait = provd_bucket_take(&pd->tokens[i].bucket, pd->rate, pd->burst,
					 tn_time_now_ms());
		pthread_mutex_unlock(&pd->rlock);
		break;
	}
	pthread_rwlock_unlock(&pd->tlock);
	return wait;
}
