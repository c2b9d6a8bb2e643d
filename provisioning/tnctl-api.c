/*++
 * NAME
 *	tnctl-api 3
 * SUMMARY
 *	tnctl's client of tn-provisiond's REST API (see tnctl-api.h)
 * DESCRIPTION
 *	libcurl multi: the easy handles of finished requests go back to a
 *	small pool and keep their options' defaults through
 *	curl_easy_reset(); the connections themselves live in the multi
 *	handle's cache, at most max_conns of them.
 * CONFIGURATION
 *	tnctl_api_url (http://127.0.0.1:8080), tnctl_api_token_file
 *	(/etc/tenantmail/tnctl-token), tnctl_api_ca_file (empty: the
 *	system's CAs), tnctl_api_timeout (30s).
 * SECURITY
 *	The token comes from the environment or a file of mode 0600 (or
 *	stricter); it is kept in the Authorization header line only.
 *--*/
#include "tn-build.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sysexits.h>

#include <curl/curl.h>

#include "tn-mem.h"
#include "tnctl-api.h"

#define TNCTL_API_RESP_MAX (64u * 1024 * 1024)
#define TNCTL_API_TOKEN_MAX 4096
#define TNCTL_API_POOL_MAX 64

const struct tn_conf_param tnctl_api_params[] = {
	{ "tnctl_api_url", TN_CONF_STR, "http://127.0.0.1:8080", 0, 0, NULL,
	  "base URL of tn-provisiond for tnctl's provisioning commands" },
	{ "tnctl_api_token_file", TN_CONF_STR, "/etc/tenantmail/tnctl-token", 0, 0, NULL,
	  "file holding tnctl's bearer token (first line, mode 0600); TNCTL_API_TOKEN wins" },
	{ "tnctl_api_ca_file", TN_CONF_STR, "", 0, 0, NULL,
	  "CA certificates for an https tnctl_api_url (empty: the system's)" },
	{ "tnctl_api_timeout", TN_CONF_TIME, "30s", 100, 3600 * 1000, NULL,
	  "deadline of one API request of tnctl" },
	TN_CONF_END
};

struct tnctl_api {
	CURLM *multi;
	char *base;		/* without a trailing '/' */
	char *auth;		/* "Authorization: Bearer ..." */
	char *ca_file;		/* NULL: the system's */
	long timeout_ms;
	size_t in_flight;
	CURL *pool[TNCTL_API_POOL_MAX];
	size_t npool;
	char error[512];
};

static bool tnctl_api_global_done;

/* --- the token ---------------------------------------------------------------- */

static int tnctl_api_token_ok(const char *t)
{
	size_t len = strlen(t);

	if (len == 0 || len > TNCTL_API_TOKEN_MAX)
		return -1;
	for (size_t i = 0; i < len; i++) {
		if (!isgraph((unsigned char)t[i]))
			return -1;
	}
	return 0;
}

/* The first line of path, trimmed; NULL with api->error. */
static char *tnctl_api_token_file(struct tnctl_api *api, const char *path)
{
	FILE *f = fopen(path, "re");
	char *line = NULL;
	size_t size = 0;
	ssize_t n;
	struct stat st;

	if (f == NULL) {
		snprintf(api->error, sizeof(api->error),
			 "no API token: set TNCTL_API_TOKEN or tnctl_api_token_file (%s: %s)",
			 path, strerror(errno));
		return NULL;
	}
	if (fstat(fileno(f), &st) == 0 && (st.st_mode & 077) != 0) {
		fclose(f);
		snprintf(api->error, sizeof(api->error),
			 "%s: readable by others (mode %03o): chmod 600 it", path,
			 (unsigned)(st.st_mode & 0777));
		return NULL;
	}
	n = getline(&line, &size, f);
	fclose(f);
	while (n > 0 && isspace((unsigned char)line[n - 1]))
		line[--n] = '\0';
	if (n <= 0) {
		free(line);
		snprintf(api->error, sizeof(api->error), "%s: no token in its first line", path);
		return NULL;
	}
	return line;
}

static int tnctl_api_set_token(struct tnctl_api *api, const struct tn_conf *conf)
{
	const char *env = getenv("TNCTL_API_TOKEN");
	char *token = NULL;
	int ret = 0;

	if (env != NULL && *env != '\0')
		token = strdup(env);
	else
		token = tnctl_api_token_file(api, tn_conf_str(conf, "tnctl_api_token_file"));
	if (token == NULL)
		return -1;
	if (tnctl_api_token_ok(token) < 0) {
		snprintf(api->error, sizeof(api->error),
			 "the API token must be 1 to %d printable characters without spaces",
			 TNCTL_API_TOKEN_MAX);
		ret = -1;
	} else {
		api->auth = tn_mem_printf("Authorization: Bearer %s", token);
	}
	explicit_bzero(token, strlen(token));
	free(token);
	return ret;
}

/* --- the handle ------------------------------------------------------------------ */

static int tnctl_api_set_base(struct tnctl_api *api, const char *url)
{
	size_t len = strlen(url);

	if (strncmp(url, "http://", 7) != 0 && strncmp(url, "https://", 8) != 0) {
		snprintf(api->error, sizeof(api->error),
			 "tnctl_api_url %s: expected http://host[:port] or https://...", url);
		return -1;
	}
	while (len > 0 && url[len - 1] == '/')
		len--;
	api->base = tn_mem_strndup(url, len);
	return 0;
}

struct tnctl_api *tnctl_api_create(const struct tn_conf *conf, unsigned max_conns)
{
	struct tnctl_api *api = tn_mem_calloc(1, sizeof(*api));
	const char *ca = tn_conf_str(conf, "tnctl_api_ca_file");

	api->timeout_ms = (long)tn_conf_time_ms(conf, "tnctl_api_timeout");
	if (*ca != '\0')
		api->ca_file = tn_mem_strdup(ca);
	if (tnctl_api_set_base(api, tn_conf_str(conf, "tnctl_api_url")) < 0 ||
	    tnctl_api_set_token(api, conf) < 0)
		return api;
	if (!tnctl_api_global_done) {
		if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
			snprintf(api->error, sizeof(api->error), "curl_global_init failed");
			return api;
		}
		tnctl_api_global_done = true;
	}
	if ((api->multi = curl_multi_init()) == NULL) {
		snprintf(api->error, sizeof(api->error), "curl_multi_init failed");
		return api;
	}
	if (max_conns == 0)
		max_conns = 1;
	curl_multi_setopt(api->multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long)max_conns);
	curl_multi_setopt(api->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, (long)max_conns);
	curl_multi_setopt(api->multi, CURLMOPT_MAXCONNECTS, (long)max_conns);
	return api;
}

const char *tnctl_api_error(const struct tnctl_api *api)
{
	return api->error[0] != '\0' ? api->error : NULL;
}

void tnctl_api_destroy(struct tnctl_api **apip)
{
	struct tnctl_api *api = *apip;

	if (api == NULL)
		return;
	while (api->npool > 0)
		curl_easy_cleanup(api->pool[--api->npool]);
	if (api->multi != NULL)
		curl_multi_cleanup(api->multi);
	if (api->auth != NULL)
		explicit_bzero(api->auth, strlen(api->auth));
	tn_mem_free(&api->auth);
	tn_mem_free(&api->base);
	tn_mem_free(&api->ca_file);
	tn_mem_free(apip);
}

/* --- requests -------------------------------------------------------------------- */

void tnctl_api_req_init(struct tnctl_api_req *rq, const char *method, const char *path,
			const char *body, const char *if_match, const char *idem_key)
{
	memset(rq, 0, sizeof(*rq));
	rq->method = tn_mem_strdup(method);
	rq->path = tn_mem_strdup(path);
	rq->body = body != NULL ? tn_mem_strdup(body) : NULL;
	rq->if_match = if_match != NULL ? tn_mem_strdup(if_match) : NULL;
	rq->idem_key = idem_key != NULL ? tn_mem_strdup(idem_key) : NULL;
}

void tnctl_api_req_reset(struct tnctl_api_req *rq)
{
	tn_mem_free(&rq->resp);
	tn_mem_free(&rq->etag);
	rq->resp_len = 0;
	rq->http = 0;
	rq->fail = TNCTL_API_ANSWERED;
	rq->retry_after = 0;
	rq->replayed = false;
	rq->error[0] = '\0';
	rq->too_big = false;
}

void tnctl_api_req_clear(struct tnctl_api_req *rq)
{
	tnctl_api_req_reset(rq);
	tn_mem_free(&rq->method);
	tn_mem_free(&rq->path);
	tn_mem_free(&rq->body);
	tn_mem_free(&rq->if_match);
	tn_mem_free(&rq->idem_key);
}

static size_t tnctl_api_write(char *data, size_t size, size_t nmemb, void *arg)
{
	struct tnctl_api_req *rq = arg;
	size_t n = size * nmemb;

	if (rq->resp_len + n > TNCTL_API_RESP_MAX) {
		rq->too_big = true;
		return 0;	/* aborts the transfer */
	}
	rq->resp = tn_mem_realloc(rq->resp, rq->resp_len + n + 1);
	memcpy(rq->resp + rq->resp_len, data, n);
	rq->resp_len += n;
	rq->resp[rq->resp_len] = '\0';
	return n;
}

static struct curl_slist *tnctl_api_headers(const struct tnctl_api *api,
					    const struct tnctl_api_req *rq)
{
	struct curl_slist *h = curl_slist_append(NULL, api->auth);
	char *line;

	h = curl_slist_append(h, "Accept: application/json");
	h = curl_slist_append(h, "Expect:");
	if (rq->body != NULL)
		h = curl_slist_append(h, "Content-Type: application/json");
	if (rq->if_match != NULL) {
		line = tn_mem_printf("If-Match: \"%s\"", rq->if_match);
		h = curl_slist_append(h, line);
		tn_mem_free(&line);
	}
	if (rq->idem_key != NULL) {
		line = tn_mem_printf("Idempotency-Key: %s", rq->idem_key);
		h = curl_slist_append(h, line);
		tn_mem_free(&line);
	}
	return h;
}

static CURL *tnctl_api_easy(struct tnctl_api *api)
{
	CURL *e;

	if (api->npool > 0) {
		e = api->pool[--api->npool];
		curl_easy_reset(e);
		return e;
	}
	return curl_easy_init();
}

static void tnctl_api_setup(struct tnctl_api *api, struct tnctl_api_req *rq, CURL *e)
{
	char *url = tn_mem_printf("%s%s", api->base, rq->path);

	curl_easy_setopt(e, CURLOPT_URL, url);
	tn_mem_free(&url);	/* libcurl copies it */
	curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
	curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L);
	curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L);
	if (api->ca_file != NULL)
		curl_easy_setopt(e, CURLOPT_CAINFO, api->ca_file);
	curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, api->timeout_ms);
	curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS,
			 api->timeout_ms < 10000 ? api->timeout_ms : 10000L);
	curl_easy_setopt(e, CURLOPT_USERAGENT, "tnctl/" PACKAGE_VERSION);
	curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, rq->method);
	if (rq->body != NULL) {
		curl_easy_setopt(e, CURLOPT_POSTFIELDS, rq->body);
		curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, (long)strlen(rq->body));
	} else if (strcmp(rq->method, "GET") != 0) {
		curl_easy_setopt(e, CURLOPT_POSTFIELDS, "");
		curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, 0L);
	}
	if (strcmp(rq->method, "GET") == 0)
		curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
	curl_easy_setopt(e, CURLOPT_HTTPHEADER, (struct curl_slist *)rq->headers);
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, tnctl_api_write);
	curl_easy_setopt(e, CURLOPT_WRITEDATA, rq);
	curl_easy_setopt(e, CURLOPT_PRIVATE, rq);
}

int tnctl_api_start(struct tnctl_api *api, struct tnctl_api_req *rq)
{
	CURL *e;

	tnctl_api_req_reset(rq);
	if (api->multi == NULL || (e = tnctl_api_easy(api)) == NULL) {
		rq->fail = TNCTL_API_BROKEN;
		snprintf(rq->error, sizeof(rq->error), "%.200s",
			 api->error[0] != '\0' ? api->error : "curl_easy_init failed");
		return -1;
	}
	rq->headers = tnctl_api_headers(api, rq);
	tnctl_api_setup(api, rq, e);
	if (curl_multi_add_handle(api->multi, e) != CURLM_OK) {
		curl_easy_cleanup(e);
		curl_slist_free_all(rq->headers);
		rq->headers = NULL;
		rq->fail = TNCTL_API_BROKEN;
		snprintf(rq->error, sizeof(rq->error), "curl_multi_add_handle failed");
		return -1;
	}
	rq->easy = e;
	api->in_flight++;
	return 0;
}

size_t tnctl_api_in_flight(const struct tnctl_api *api)
{
	return api->in_flight;
}

static enum tnctl_api_fail tnctl_api_classify(CURLcode rc)
{
	switch (rc) {
	case CURLE_COULDNT_CONNECT:
	case CURLE_COULDNT_RESOLVE_HOST:
	case CURLE_COULDNT_RESOLVE_PROXY:
		return TNCTL_API_UNREACHABLE;
	case CURLE_OPERATION_TIMEDOUT:
		return TNCTL_API_TIMEOUT;
	case CURLE_PEER_FAILED_VERIFICATION:
	case CURLE_SSL_CACERT_BADFILE:
	case CURLE_SSL_CERTPROBLEM:
	case CURLE_SSL_CONNECT_ERROR:
		return TNCTL_API_TLS;
	default:
		return TNCTL_API_BROKEN;
	}
}

/* ETag and Retry-After of a finished transfer */
static void tnctl_api_answer_headers(struct tnctl_api_req *rq, CURL *e)
{
	struct curl_header *h = NULL;
	const char *v;
	size_t len;

	if (curl_easy_header(e, "ETag", 0, CURLH_HEADER, -1, &h) == CURLHE_OK) {
		v = h->value;
		if (strncmp(v, "W/", 2) == 0)
			v += 2;
		len = strlen(v);
		if (len >= 2 && v[0] == '"' && v[len - 1] == '"')
			rq->etag = tn_mem_strndup(v + 1, len - 2);
		else
			rq->etag = tn_mem_strdup(v);
	}
	if (curl_easy_header(e, "Retry-After", 0, CURLH_HEADER, -1, &h) == CURLHE_OK)
		rq->retry_after = strtol(h->value, NULL, 10);
	if (curl_easy_header(e, "Idempotent-Replayed", 0, CURLH_HEADER, -1, &h) == CURLHE_OK)
		rq->replayed = strcasecmp(h->value, "true") == 0;
}

static struct tnctl_api_req *tnctl_api_finish(struct tnctl_api *api, CURL *e, CURLcode rc)
{
	struct tnctl_api_req *rq = NULL;

	curl_easy_getinfo(e, CURLINFO_PRIVATE, (char **)&rq);
	curl_multi_remove_handle(api->multi, e);
	api->in_flight--;
	if (rc == CURLE_OK) {
		curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &rq->http);
		tnctl_api_answer_headers(rq, e);
	} else {
		rq->http = 0;
		rq->fail = rq->too_big ? TNCTL_API_BROKEN : tnctl_api_classify(rc);
		snprintf(rq->error, sizeof(rq->error), "%.150s: %.100s", api->base,
			 rq->too_big ? "answer too large" : curl_easy_strerror(rc));
	}
	curl_slist_free_all(rq->headers);
	rq->headers = NULL;
	rq->easy = NULL;
	if (api->npool < TNCTL_API_POOL_MAX)
		api->pool[api->npool++] = e;
	else
		curl_easy_cleanup(e);
	return rq;
}

struct tnctl_api_req *tnctl_api_next(struct tnctl_api *api, long wait_ms)
{
	int running = 0, left = 0;
	CURLMsg *m;

	for (;;) {
		curl_multi_perform(api->multi, &running);
		while ((m = curl_multi_info_read(api->multi, &left)) != NULL) {
			if (m->msg == CURLMSG_DONE)
				return tnctl_api_finish(api, m->easy_handle, m->data.result);
		}
		if (api->in_flight == 0 || wait_ms <= 0)
			return NULL;
		/* wakes up on activity or libcurl's own timeouts */
		curl_multi_poll(api->multi, NULL, 0, (int)(wait_ms < 100 ? wait_ms : 100), NULL);
		wait_ms -= wait_ms < 100 ? wait_ms : 100;
	}
}

int tnctl_api_call(struct tnctl_api *api, struct tnctl_api_req *rq)
{
	struct tnctl_api_req *done;

	if (tnctl_api_start(api, rq) < 0)
		return -1;
	do
		done = tnctl_api_next(api, 1000);
	while (done != rq);
	return 0;
}

/* --- answers --------------------------------------------------------------------- */

json_t *tnctl_api_json(const struct tnctl_api_req *rq)
{
	if (rq->resp == NULL || rq->resp_len == 0)
		return NULL;
	return json_loadb(rq->resp, rq->resp_len, 0, NULL);
}

char *tnctl_api_code(const struct tnctl_api_req *rq)
{
	json_t *j = rq->http >= 400 ? tnctl_api_json(rq) : NULL;
	const char *code = json_string_value(json_object_get(json_object_get(j, "error"), "code"));
	char *out = code != NULL ? tn_mem_strdup(code) : NULL;

	json_decref(j);
	return out;
}

char *tnctl_api_describe_error(long http, const json_t *err)
{
	const char *code = json_string_value(json_object_get(err, "code"));
	const char *msg = json_string_value(json_object_get(err, "message"));
	const char *field = json_string_value(json_object_get(err, "field"));

	if (msg == NULL)
		return tn_mem_printf("HTTP status %ld", http);
	return tn_mem_printf("%ld %s: %s%s%s%s", http, code != NULL ? code : "error", msg,
			     field != NULL ? " (field: " : "", field != NULL ? field : "",
			     field != NULL ? ")" : "");
}

char *tnctl_api_describe(const struct tnctl_api_req *rq)
{
	json_t *j;
	char *out;

	if (rq->http == 0 && rq->fail == TNCTL_API_TLS)
		return tn_mem_printf("TLS failure with %s (the server's certificate must verify "
				     "against tnctl_api_ca_file, or the system's CAs when it is "
				     "empty)", rq->error);
	if (rq->http == 0)
		return tn_mem_printf("no answer from %s", rq->error);
	j = tnctl_api_json(rq);
	out = tnctl_api_describe_error(rq->http, json_object_get(j, "error"));
	json_decref(j);
	return out;
}

int tnctl_api_exit(const struct tnctl_api_req *rq)
{
	long s = rq->http;

	if (s == 0)
		return rq->fail == TNCTL_API_TLS ? EX_CONFIG : EX_TEMPFAIL;
	if (s >= 200 && s < 300)
		return 0;
	switch (s) {
	case 404:
		return 1;
	case 400:
	case 413:
	case 422:
		return EX_DATAERR;
	case 409:
	case 412:
		return TNCTL_EX_CONFLICT;
	case 401:
	case 403:
		return EX_NOPERM;
	case 429:
	case 503:
		return EX_TEMPFAIL;
	default:
		return EX_SOFTWARE;
	}
}

char *tnctl_api_escape(const char *s)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t len = strlen(s);
	char *out = tn_mem_alloc(3 * len + 1), *o = out;

	for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++) {
		if (isalnum(*p) || strchr("-._~@", *p) != NULL) {
			*o++ = (char)*p;
		} else {
			*o++ = '%';
			*o++ = hex[*p >> 4];
			*o++ = hex[*p & 15];
		}
	}
	*o = '\0';
	return out;
}
