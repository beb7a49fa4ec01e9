/* SPDX-License-Identifier: MIT */
/*
 * forward: POSTs the exact raw event to a configured URL, such as an ops
 * chat's or a CRM's own inbound webhook.
 *
 *   options = {
 *     url = "https://crm.example.com/hooks/contextgpt";   # required
 *     allow_http = false;         # true permits a plain http:// url
 *     timeout = 10000;            # ms for the whole request
 *     headers = { X-Api-Key = "..."; };    # extra request headers
 *     cacert = "/etc/hookd/private-ca.pem";   # trust these CAs instead
 *     sign_secret = "...";        # adds X-HOOKD-SIGNATURE: sha256=<hex HMAC>
 *   };
 *
 * Certificates and host names are always verified (against the system's
 * CAs, or cacert's); redirects are not followed. 2xx is done; 429 and 5xx
 * retry, after the Retry-After the server sent when it is valid (seconds or
 * an IMF-fixdate, see retry_after.h; capped at an hour; "1.5" is invalid);
 * a network, TLS or timeout failure retries; any other status fails. The
 * job's output is "HTTP <status>"; the response body is read and dropped.
 *
 * The url, header values and sign_secret are never logged (webhook URLs
 * and API keys are credentials). The timeout is capped at the route's
 * timeout less a margin. One libcurl easy handle per call, so calls from
 * several workers run in parallel; the state is read-only after init.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "hookd_plugin.h"
#include "retry_after.h"

#define FWD_DEFAULT_TIMEOUT_MS 10000
#define FWD_MARGIN_MS 1000
#define FWD_MAX_HEADERS 32
#define FWD_MIN_SECRET 16
#define FWD_SIG_HEADER "X-HOOKD-SIGNATURE"

struct fwd_cfg {
    char *fc_url;
    bool fc_allow_http;
    int fc_timeout_ms;
    char **fc_headers;                  /* "Name: value", NULL-ended */
    bool fc_sets_type;                  /* headers hold a Content-Type */
    char *fc_cacert;                    /* NULL: the system's CAs */
    unsigned char *fc_secret;           /* NULL: no signature */
    size_t fc_secret_len;
};

static const char *const fwd_keys[] = {
    "url", "allow_http", "timeout", "headers", "cacert", "sign_secret", NULL
};

/* Headers hookd sets itself or that would break the request. */
static const char *const fwd_reserved[] = {
    "Host", "Content-Length", "Transfer-Encoding", "Connection", "Expect", FWD_SIG_HEADER,
    NULL
};

static pthread_once_t fwd_once = PTHREAD_ONCE_INIT;
static CURLcode fwd_global_rc = CURLE_FAILED_INIT;     /* written once, by fwd_global */


static void
fwd_global(void)
{
    fwd_global_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}


/* ---- options ------------------------------------------------------------- */

static void
fwd_cfg_free(struct fwd_cfg *c)
{
    if (c == NULL) {
        return;
    }
    free(c->fc_url);
    if (c->fc_headers != NULL) {
        for (char **p = c->fc_headers; *p != NULL; p++) {
            /* Header values are often API keys. */
            OPENSSL_cleanse(*p, strlen(*p));
            free(*p);
        }
        free(c->fc_headers);
    }
    free(c->fc_cacert);
    if (c->fc_secret != NULL) {
        OPENSSL_cleanse(c->fc_secret, c->fc_secret_len);
        free(c->fc_secret);
    }
    free(c);
}


/* An optional string option without NUL bytes; *out stays NULL when absent. */
static int
fwd_opt_str(json_object *options, const char *key, const char **out, char *err,
            size_t errlen)
{
    json_object *v;

    if (!json_object_object_get_ex(options, key, &v)) {
        return 0;
    }
    if (!json_object_is_type(v, json_type_string)
        || strlen(json_object_get_string(v)) != (size_t)json_object_get_string_len(v))
    {
        snprintf(err, errlen, "%s must be a string", key);
        return -1;
    }
    *out = json_object_get_string(v);
    return 0;
}


/* Checks the url: absolute, with a host, https (or http when allowed). */
static int
fwd_opt_url(json_object *options, struct fwd_cfg *c, char *err, size_t errlen)
{
    const char *url = NULL;
    CURLU *u;
    char *scheme = NULL, *host = NULL;
    int rc = -1;

    if (fwd_opt_str(options, "url", &url, err, errlen) < 0) {
        return -1;
    }
    if (url == NULL) {
        snprintf(err, errlen, "url = \"https://...\" is required");
        return -1;
    }
    if ((u = curl_url()) == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }

    /* The url may hold a token: errors describe it without quoting it. */
    if (curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK
        || curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK
        || curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK || *host == '\0')
    {
        snprintf(err, errlen, "url is not an absolute URL with a host");
    } else if (strcmp(scheme, "https") != 0
               && !(c->fc_allow_http && strcmp(scheme, "http") == 0))
    {
        snprintf(err, errlen, "url must start with https://%s",
                 strcmp(scheme, "http") == 0 ? " (or set allow_http = true)" : "");
    } else if ((c->fc_url = strdup(url)) == NULL) {
        snprintf(err, errlen, "out of memory");
    } else {
        rc = 0;
    }
    curl_free(scheme);
    curl_free(host);
    curl_url_cleanup(u);
    return rc;
}


/* An HTTP field name (RFC 9110 token) that hookd does not set itself. */
static bool
fwd_header_name_ok(const char *name)
{
    if (*name == '\0') {
        return false;
    }
    for (const char *p = name; *p != '\0'; p++) {
        if (!((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9')
              || strchr("!#$%&'*+-.^_`|~", *p) != NULL))
        {
            return false;
        }
    }
    for (size_t i = 0; fwd_reserved[i] != NULL; i++) {
        if (strcasecmp(name, fwd_reserved[i]) == 0) {
            return false;
        }
    }
    return true;
}


/* A field value: visible characters, spaces and tabs, not empty. */
static bool
fwd_header_value_ok(const char *v, size_t len)
{
    if (len == 0 || strlen(v) != len) {
        return false;
    }
    for (const char *p = v; *p != '\0'; p++) {
        unsigned char ch = (unsigned char)*p;

        if ((ch < 0x20 && ch != '\t') || ch == 0x7f) {
            return false;
        }
    }
    return true;
}


static int
fwd_opt_headers(json_object *options, struct fwd_cfg *c, char *err, size_t errlen)
{
    json_object *hs;
    size_t n = 0;

    if (!json_object_object_get_ex(options, "headers", &hs)) {
        return 0;
    }
    if (!json_object_is_type(hs, json_type_object)) {
        snprintf(err, errlen, "headers must be a group { X-Name = \"value\"; }");
        return -1;
    }
    if (json_object_object_length(hs) > FWD_MAX_HEADERS) {
        snprintf(err, errlen, "headers has more than %d entries", FWD_MAX_HEADERS);
        return -1;
    }
    c->fc_headers = calloc((size_t)json_object_object_length(hs) + 1, sizeof(*c->fc_headers));
    if (c->fc_headers == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    json_object_object_foreach(hs, name, val) {
        if (!fwd_header_name_ok(name)) {
            snprintf(err, errlen, "headers: \"%s\" is not a header name hookd lets you set",
                     name);
            return -1;
        }
        if (!json_object_is_type(val, json_type_string)
            || !fwd_header_value_ok(json_object_get_string(val),
                                    (size_t)json_object_get_string_len(val)))
        {
            snprintf(err, errlen, "headers.%s must be a non-empty one-line string", name);
            return -1;
        }
        if (asprintf(&c->fc_headers[n], "%s: %s", name, json_object_get_string(val)) < 0) {
            c->fc_headers[n] = NULL;
            snprintf(err, errlen, "out of memory");
            return -1;
        }
        n++;
        c->fc_sets_type |= strcasecmp(name, "Content-Type") == 0;
    }
    return 0;
}


static int
fwd_opt_misc(json_object *options, struct fwd_cfg *c, char *err, size_t errlen)
{
    const char *cacert = NULL, *secret = NULL;
    json_object *v;

    c->fc_timeout_ms = FWD_DEFAULT_TIMEOUT_MS;
    if (json_object_object_get_ex(options, "timeout", &v)) {
        int64_t t = json_object_get_int64(v);

        if (!json_object_is_type(v, json_type_int) || t < 100 || t > 3600000) {
            snprintf(err, errlen, "timeout must be an integer from 100 to 3600000 (ms)");
            return -1;
        }
        c->fc_timeout_ms = (int)t;
    }
    if (fwd_opt_str(options, "cacert", &cacert, err, errlen) < 0
        || fwd_opt_str(options, "sign_secret", &secret, err, errlen) < 0)
    {
        return -1;
    }
    if (cacert != NULL) {
        if (cacert[0] != '/' || access(cacert, R_OK) != 0) {
            snprintf(err, errlen, "cacert \"%s\" must be a readable file, given by its "
                     "absolute path", cacert);
            return -1;
        }
        if ((c->fc_cacert = strdup(cacert)) == NULL) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }
    }
    if (secret != NULL) {
        c->fc_secret_len = strlen(secret);
        if (c->fc_secret_len < FWD_MIN_SECRET) {
            snprintf(err, errlen, "sign_secret must be at least %d characters", FWD_MIN_SECRET);
            return -1;
        }
        if ((c->fc_secret = malloc(c->fc_secret_len)) == NULL) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }
        memcpy(c->fc_secret, secret, c->fc_secret_len);
    }
    return 0;
}


static int
fwd_init(json_object *options, void **state, char *err, size_t errlen)
{
    struct fwd_cfg *c;
    json_object *v;

    (void)pthread_once(&fwd_once, fwd_global);
    if (fwd_global_rc != CURLE_OK) {
        snprintf(err, errlen, "could not initialise libcurl: %s",
                 curl_easy_strerror(fwd_global_rc));
        return -1;
    }
    if (options == NULL) {
        snprintf(err, errlen, "options = { url = \"https://...\"; } is required");
        return -1;
    }
    if ((c = calloc(1, sizeof(*c))) == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    json_object_object_foreach(options, key, val) {
        bool known = false;

        (void)val;
        for (size_t i = 0; fwd_keys[i] != NULL; i++) {
            known |= strcmp(key, fwd_keys[i]) == 0;
        }
        if (!known) {
            snprintf(err, errlen, "unknown option \"%s\"", key);
            goto fail;
        }
    }
    if (json_object_object_get_ex(options, "allow_http", &v)) {
        if (!json_object_is_type(v, json_type_boolean)) {
            snprintf(err, errlen, "allow_http must be true or false");
            goto fail;
        }
        c->fc_allow_http = json_object_get_boolean(v);
    }
    if (fwd_opt_url(options, c, err, errlen) < 0 || fwd_opt_headers(options, c, err, errlen) < 0
        || fwd_opt_misc(options, c, err, errlen) < 0)
    {
        goto fail;
    }
    *state = c;
    return 0;

fail:
    fwd_cfg_free(c);
    return -1;
}


static void
fwd_fini(void *state)
{
    fwd_cfg_free(state);
}


/* ---- one request --------------------------------------------------------- */

/* Drops the response body. */
static size_t
fwd_discard(char *data, size_t size, size_t nmemb, void *arg)
{
    (void)data;
    (void)arg;
    return size * nmemb;
}


/* The attempt's limit: the configured one, within the route's less a margin. */
static int
fwd_timeout_ms(const struct fwd_cfg *c, const struct hookd_ctx *ctx)
{
    int route = ctx->hc_timeout_ms;
    int margin = route / 10 < FWD_MARGIN_MS ? route / 10 : FWD_MARGIN_MS;
    int limit = route - margin;

    if (route <= 0) {
        return c->fc_timeout_ms;
    }
    if (limit < 1) {
        limit = 1;
    }
    return c->fc_timeout_ms < limit ? c->fc_timeout_ms : limit;
}


/* The request's header list (NULL when out of memory). */
static struct curl_slist *
fwd_headers(const struct fwd_cfg *c, const struct hookd_event *ev)
{
    struct curl_slist *list = NULL, *next;
    char line[sizeof(FWD_SIG_HEADER ": sha256=") + 2 * EVP_MAX_MD_SIZE];
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int mac_len = 0;
    size_t n;

    /* "Expect:" stops curl from waiting for a 100 Continue on big bodies. */
    if ((list = curl_slist_append(NULL, "Expect:")) == NULL) {
        return NULL;
    }
    if (!c->fc_sets_type
        && (next = curl_slist_append(list, "Content-Type: application/json")) == NULL)
    {
        goto fail;
    }
    for (char **p = c->fc_headers; p != NULL && *p != NULL; p++) {
        if ((next = curl_slist_append(list, *p)) == NULL) {
            goto fail;
        }
    }
    if (c->fc_secret != NULL) {
        if (HMAC(EVP_sha256(), c->fc_secret, (int)c->fc_secret_len,
                 (const unsigned char *)ev->he_raw, ev->he_raw_len, mac, &mac_len) == NULL)
        {
            goto fail;
        }
        n = (size_t)snprintf(line, sizeof(line), "%s: sha256=", FWD_SIG_HEADER);
        for (unsigned int i = 0; i < mac_len; i++) {
            n += (size_t)snprintf(line + n, sizeof(line) - n, "%02x", mac[i]);
        }
        next = curl_slist_append(list, line);
        OPENSSL_cleanse(mac, sizeof(mac));
        if (next == NULL) {
            goto fail;
        }
    }
    return list;

fail:
    curl_slist_free_all(list);
    return NULL;
}


/* Sets up h for one POST of ev; false when an option is refused. */
static bool
fwd_setup(CURL *h, const struct fwd_cfg *c, const struct hookd_event *ev,
          struct curl_slist *headers, int timeout_ms)
{
    bool ok = true;

    ok &= curl_easy_setopt(h, CURLOPT_URL, c->fc_url) == CURLE_OK;
    ok &= curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, c->fc_allow_http ? "http,https"
                           : "https") == CURLE_OK;
    ok &= curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L) == CURLE_OK;
    ok &= curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L) == CURLE_OK;
    ok &= curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)timeout_ms) == CURLE_OK;
    ok &= curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 1L) == CURLE_OK;
    ok &= curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 2L) == CURLE_OK;
    if (c->fc_cacert != NULL) {
        ok &= curl_easy_setopt(h, CURLOPT_CAINFO, c->fc_cacert) == CURLE_OK;
    }
    ok &= curl_easy_setopt(h, CURLOPT_USERAGENT, "hookd-forward/1") == CURLE_OK;
    ok &= curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers) == CURLE_OK;
    ok &= curl_easy_setopt(h, CURLOPT_POST, 1L) == CURLE_OK;
    ok &= curl_easy_setopt(h, CURLOPT_POSTFIELDS, ev->he_raw) == CURLE_OK;
    ok &= curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)ev->he_raw_len)
          == CURLE_OK;
    ok &= curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, fwd_discard) == CURLE_OK;
    return ok;
}


/* Maps an answer's status to an outcome, with its reason and Retry-After. */
static enum hookd_outcome
fwd_status(CURL *h, long status, struct hookd_ctx *ctx)
{
    struct curl_header *hdr = NULL;
    char reason[96];
    int wait = -1;

    if (status >= 200 && status <= 299) {
        return HOOKD_DONE;
    }
    if (status != 429 && (status < 500 || status > 599)) {
        snprintf(reason, sizeof(reason), "HTTP %ld%s", status,
                 status >= 300 && status <= 399 ? " (redirects are not followed)" : "");
        ctx->hc_set_reason(ctx, reason);
        return HOOKD_FAIL;
    }
    if (curl_easy_header(h, "Retry-After", 0, CURLH_HEADER, -1, &hdr) == CURLHE_OK) {
        wait = retry_after_parse(hdr->value, (long long)time(NULL), RETRY_AFTER_CAP_S);
    }
    if (wait >= 0) {
        ctx->hc_retry_after(ctx, wait);
        snprintf(reason, sizeof(reason), "HTTP %ld, Retry-After %d s", status, wait);
    } else {
        snprintf(reason, sizeof(reason), "HTTP %ld%s", status,
                 hdr != NULL ? ", Retry-After ignored (not valid)" : "");
    }
    ctx->hc_set_reason(ctx, reason);
    return HOOKD_RETRY;
}


static enum hookd_outcome
fwd_handle(void *state, const struct hookd_event *ev, struct hookd_ctx *ctx)
{
    const struct fwd_cfg *c = state;
    enum hookd_outcome outcome = HOOKD_RETRY;
    int timeout_ms = fwd_timeout_ms(c, ctx);
    struct curl_slist *headers = fwd_headers(c, ev);
    CURL *h = curl_easy_init();
    CURLcode rc;
    long status = 0;
    char text[128];

    if (h == NULL || headers == NULL) {
        ctx->hc_set_reason(ctx, "out of memory");
        goto out;
    }
    if (!fwd_setup(h, c, ev, headers, timeout_ms)) {
        ctx->hc_set_reason(ctx, "libcurl refused an option");
        goto out;
    }
    rc = curl_easy_perform(h);
    if (rc == CURLE_OPERATION_TIMEDOUT) {
        snprintf(text, sizeof(text), "timed out after %d ms", timeout_ms);
        ctx->hc_set_reason(ctx, text);
        goto out;
    }
    if (rc != CURLE_OK) {
        /* curl_easy_strerror names the failure without the url. */
        snprintf(text, sizeof(text), "could not post: %s", curl_easy_strerror(rc));
        ctx->hc_set_reason(ctx, text);
        goto out;
    }
    (void)curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    snprintf(text, sizeof(text), "HTTP %ld", status);
    ctx->hc_set_output(ctx, text, strlen(text));
    outcome = fwd_status(h, status, ctx);

out:
    curl_easy_cleanup(h);
    curl_slist_free_all(headers);
    return outcome;
}


const struct hookd_plugin hookd_plugin_v1 = {
    HOOKD_PLUGIN_ABI, "forward", fwd_init, fwd_handle, fwd_fini
};
