/* SPDX-License-Identifier: MIT */
#include "verify.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <pthread.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/sha.h>

#include "codec.h"

/* A header carrying more signatures than this is not examined further. */
#define VERIFY_MAX_CANDIDATES 16
/* Longest signature text looked at (base64 of 32 bytes is 44). */
#define VERIFY_MAX_SIG_TEXT 128
/* Standard Webhooks ids and timestamps are short; refuse silly ones. */
#define VERIFY_MAX_ID 256


const char *
verify_result_name(enum verify_result r)
{
    switch (r) {
    case VERIFY_OK:
        return "ok";
    case VERIFY_NO_CREDENTIALS:
        return "no_credentials";
    case VERIFY_MISSING_TOKEN:
        return "missing_token";
    case VERIFY_BAD_TOKEN:
        return "bad_token";
    case VERIFY_MISSING_SIGNATURE:
        return "missing_signature";
    case VERIFY_BAD_SIGNATURE:
        return "bad_signature";
    case VERIFY_MISSING_TIMESTAMP:
        return "missing_timestamp";
    case VERIFY_BAD_TIMESTAMP:
        return "bad_timestamp";
    case VERIFY_STALE_TIMESTAMP:
        return "stale_timestamp";
    case VERIFY_MISSING_ID:
        return "missing_id";
    }
    return "unknown";
}


/*
 * SHA-256 is fetched from OpenSSL's provider once. The one-shot calls that
 * fetch it by name take a lock shared by every thread on each call, which
 * the webhook path would pay two or three times per request.
 */
static pthread_once_t sha256_once = PTHREAD_ONCE_INIT;
static EVP_MD *sha256_md;


static void
sha256_fetch(void)
{
    sha256_md = EVP_MD_fetch(NULL, "SHA256", NULL);
}


bool
verify_sha256(const void *data, size_t len, unsigned char out[VERIFY_MAC_LEN])
{
    pthread_once(&sha256_once, sha256_fetch);
    return sha256_md != NULL && EVP_Digest(data, len, out, NULL, sha256_md, NULL);
}


/* HMAC as RFC 2104 builds it on the hash: H(K^opad || H(K^ipad || text)). */
bool
verify_hmac_sha256(const unsigned char *key, size_t key_len,
                   const void *const parts[], const size_t lens[], size_t n,
                   unsigned char out[VERIFY_MAC_LEN])
{
    enum { BLOCK = 64 };
    unsigned char k[BLOCK] = {0};
    unsigned char pad[BLOCK];
    unsigned char inner[VERIFY_MAC_LEN];
    EVP_MD_CTX *ctx;
    bool ok;

    pthread_once(&sha256_once, sha256_fetch);
    if (sha256_md == NULL || (ctx = EVP_MD_CTX_new()) == NULL) {
        return false;
    }
    if (key_len > BLOCK) {
        ok = EVP_Digest(key, key_len, k, NULL, sha256_md, NULL);
    } else {
        memcpy(k, key, key_len);
        ok = true;
    }
    for (int i = 0; i < BLOCK; i++) {
        pad[i] = k[i] ^ 0x36;
    }
    ok = ok && EVP_DigestInit_ex(ctx, sha256_md, NULL) && EVP_DigestUpdate(ctx, pad, BLOCK);
    for (size_t i = 0; ok && i < n; i++) {
        ok = lens[i] == 0 || EVP_DigestUpdate(ctx, parts[i], lens[i]);
    }
    ok = ok && EVP_DigestFinal_ex(ctx, inner, NULL);
    for (int i = 0; i < BLOCK; i++) {
        pad[i] = k[i] ^ 0x5c;
    }
    ok = ok && EVP_DigestInit_ex(ctx, sha256_md, NULL) && EVP_DigestUpdate(ctx, pad, BLOCK)
         && EVP_DigestUpdate(ctx, inner, sizeof(inner)) && EVP_DigestFinal_ex(ctx, out, NULL);
    EVP_MD_CTX_free(ctx);
    OPENSSL_cleanse(k, sizeof(k));
    OPENSSL_cleanse(pad, sizeof(pad));
    OPENSSL_cleanse(inner, sizeof(inner));
    return ok;
}


long
verify_standard_key(const char *secret, unsigned char *out, size_t cap)
{
    if (strncmp(secret, "whsec_", 6) == 0) {
        secret += 6;
    }
    return codec_base64_decode(secret, strlen(secret), out, cap);
}


/* A decoded signature candidate taken from a header. */
struct candidate {
    unsigned char mac[VERIFY_MAC_LEN];
};


static bool
is_sep(char c)
{
    return c == ',' || c == ' ' || c == '\t';
}


/*
 * Splits a contextgpt signature header into MACs. Entries are separated by
 * commas or blanks; each may carry the configured prefix (e.g. "sha256=").
 * Entries that do not decode to 32 bytes are skipped: they can never match.
 */
static size_t
parse_contextgpt_sigs(const struct verify_policy *p, const char *value,
                      struct candidate *c, size_t cap, size_t n)
{
    const char *s = value;
    size_t prefix_len = p->vp_signature_prefix ? strlen(p->vp_signature_prefix) : 0;

    while (*s != '\0' && n < cap) {
        const char *start;
        size_t len;
        long got;

        while (is_sep(*s)) {
            s++;
        }
        start = s;
        while (*s != '\0' && !is_sep(*s)) {
            s++;
        }
        len = (size_t)(s - start);
        if (len == 0) {
            continue;
        }
        if (prefix_len > 0 && len > prefix_len
            && strncasecmp(start, p->vp_signature_prefix, prefix_len) == 0)
        {
            start += prefix_len;
            len -= prefix_len;
        }
        if (len > VERIFY_MAX_SIG_TEXT) {
            continue;
        }
        if (p->vp_encoding == VERIFY_ENCODING_HEX) {
            got = codec_hex_decode(start, len, c[n].mac, VERIFY_MAC_LEN);
        } else {
            got = codec_base64_decode(start, len, c[n].mac, VERIFY_MAC_LEN);
        }
        if (got == VERIFY_MAC_LEN) {
            n++;
        }
    }
    return n;
}


/* Space-separated "v1,<base64>" entries; other versions are ignored. */
static size_t
parse_standard_sigs(const char *value, struct candidate *c, size_t cap, size_t n)
{
    const char *s = value;

    while (*s != '\0' && n < cap) {
        const char *start;
        size_t len;

        while (*s == ' ' || *s == '\t') {
            s++;
        }
        start = s;
        while (*s != '\0' && *s != ' ' && *s != '\t') {
            s++;
        }
        len = (size_t)(s - start);
        if (len > 3 && len <= VERIFY_MAX_SIG_TEXT && strncmp(start, "v1,", 3) == 0
            && codec_base64_decode(start + 3, len - 3, c[n].mac, VERIFY_MAC_LEN)
                   == VERIFY_MAC_LEN)
        {
            n++;
        }
    }
    return n;
}


/* Whole-string decimal seconds since the epoch; false when not one. */
static bool
parse_timestamp(const char *s, long long *ret)
{
    char *end = NULL;
    long long v;

    if (s == NULL || !isdigit((unsigned char)*s) || strlen(s) > 18) {
        return false;
    }
    errno = 0;
    v = strtoll(s, &end, 10);
    if (errno != 0 || *end != '\0') {
        return false;
    }
    *ret = v;
    return true;
}


static enum verify_result
check_timestamp(const struct verify_policy *p, const char *value, time_t now)
{
    long long ts;

    if (value == NULL || *value == '\0') {
        return VERIFY_MISSING_TIMESTAMP;
    }
    if (!parse_timestamp(value, &ts)) {
        return VERIFY_BAD_TIMESTAMP;
    }
    if (ts < (long long)now - p->vp_tolerance || ts > (long long)now + p->vp_tolerance) {
        return VERIFY_STALE_TIMESTAMP;
    }
    return VERIFY_OK;
}


/*
 * True when any candidate equals the MAC of parts under any secret. Every
 * secret and candidate is compared, so the time taken does not depend on
 * which one matched.
 */
static bool
any_mac_matches(const struct verify_policy *p, bool standard_keys,
                const void *const parts[], const size_t lens[], size_t nparts,
                const struct candidate *c, size_t nc)
{
    unsigned char mac[VERIFY_MAC_LEN];
    bool found = false;

    for (size_t i = 0; i < p->vp_nsecrets; i++) {
        const struct verify_secret *s = &p->vp_secrets[i];
        const unsigned char *key = standard_keys ? s->vs_key : (const unsigned char *)s->vs_text;
        size_t key_len = standard_keys ? s->vs_key_len : s->vs_text_len;

        if (!verify_hmac_sha256(key, key_len, parts, lens, nparts, mac)) {
            continue;
        }
        for (size_t j = 0; j < nc; j++) {
            found |= codec_equal_ct(mac, c[j].mac, VERIFY_MAC_LEN);
        }
    }
    OPENSSL_cleanse(mac, sizeof(mac));
    return found;
}


/*
 * Compares a presented token with every secret. Both sides are hashed
 * first so that the comparison takes the same time whatever the lengths.
 */
static bool
token_matches(const struct verify_policy *p, const char *token)
{
    unsigned char want[SHA256_DIGEST_LENGTH];
    unsigned char got[SHA256_DIGEST_LENGTH];
    bool found = false;

    if (!verify_sha256(token, strlen(token), got)) {
        return false;
    }
    for (size_t i = 0; i < p->vp_nsecrets; i++) {
        found |= verify_sha256(p->vp_secrets[i].vs_text, p->vp_secrets[i].vs_text_len, want)
                 && codec_equal_ct(want, got, sizeof(want));
    }
    return found;
}


static enum verify_result
check_standard(const struct verify_policy *p, const struct verify_request *req,
               const char **ret_used)
{
    struct candidate c[VERIFY_MAX_CANDIDATES];
    const char *id = req->vr_header(req->vr_ctx, "webhook-id", 0);
    const char *ts = req->vr_header(req->vr_ctx, "webhook-timestamp", 0);
    const char *sig;
    const void *parts[5];
    size_t lens[5];
    size_t nc = 0;
    enum verify_result r;

    if (id == NULL && ts == NULL && req->vr_header(req->vr_ctx, "webhook-signature", 0) == NULL) {
        return VERIFY_NO_CREDENTIALS;
    }
    if (id == NULL || *id == '\0' || strlen(id) > VERIFY_MAX_ID) {
        return VERIFY_MISSING_ID;
    }
    r = check_timestamp(p, ts, req->vr_now);
    if (r != VERIFY_OK) {
        return r;
    }
    for (int i = 0; (sig = req->vr_header(req->vr_ctx, "webhook-signature", i)) != NULL; i++) {
        nc = parse_standard_sigs(sig, c, VERIFY_MAX_CANDIDATES, nc);
    }
    if (nc == 0) {
        return req->vr_header(req->vr_ctx, "webhook-signature", 0) == NULL
                   ? VERIFY_MISSING_SIGNATURE : VERIFY_BAD_SIGNATURE;
    }
    parts[0] = id;
    lens[0] = strlen(id);
    parts[1] = ".";
    lens[1] = 1;
    parts[2] = ts;
    lens[2] = strlen(ts);
    parts[3] = ".";
    lens[3] = 1;
    parts[4] = req->vr_body;
    lens[4] = req->vr_body_len;
    if (!any_mac_matches(p, true, parts, lens, 5, c, nc)) {
        return VERIFY_BAD_SIGNATURE;
    }
    *ret_used = "standard-webhooks";
    return VERIFY_OK;
}


static enum verify_result
check_signature(const struct verify_policy *p, const struct verify_request *req)
{
    struct candidate c[VERIFY_MAX_CANDIDATES];
    const char *sig;
    const char *ts = NULL;
    const void *parts[3];
    size_t lens[3];
    size_t nparts = 0;
    size_t nc = 0;

    if (p->vp_timestamp_header != NULL && *p->vp_timestamp_header != '\0') {
        enum verify_result r;

        ts = req->vr_header(req->vr_ctx, p->vp_timestamp_header, 0);
        r = check_timestamp(p, ts, req->vr_now);
        if (r != VERIFY_OK) {
            return r;
        }
        parts[nparts] = ts;
        lens[nparts++] = strlen(ts);
        parts[nparts] = ".";
        lens[nparts++] = 1;
    }
    parts[nparts] = req->vr_body;
    lens[nparts++] = req->vr_body_len;

    for (int i = 0; (sig = req->vr_header(req->vr_ctx, p->vp_signature_header, i)) != NULL;
         i++)
    {
        nc = parse_contextgpt_sigs(p, sig, c, VERIFY_MAX_CANDIDATES, nc);
    }
    if (nc == 0 || !any_mac_matches(p, false, parts, lens, nparts, c, nc)) {
        return VERIFY_BAD_SIGNATURE;
    }
    return VERIFY_OK;
}


static enum verify_result
check_contextgpt(const struct verify_policy *p, const struct verify_request *req,
                 const char **ret_used)
{
    const char *token = req->vr_header(req->vr_ctx, p->vp_token_header, 0);
    bool has_sig = req->vr_header(req->vr_ctx, p->vp_signature_header, 0) != NULL;
    bool has_token = token != NULL;
    enum verify_result r;

    if (!has_sig && !has_token) {
        return VERIFY_NO_CREDENTIALS;
    }
    if (!has_token && (p->vp_require == VERIFY_REQUIRE_BOTH
                       || p->vp_require == VERIFY_REQUIRE_TOKEN))
    {
        return VERIFY_MISSING_TOKEN;
    }
    if (!has_sig && (p->vp_require == VERIFY_REQUIRE_BOTH
                     || p->vp_require == VERIFY_REQUIRE_SIGNATURE))
    {
        return VERIFY_MISSING_SIGNATURE;
    }

    /* Whatever is present must be right, required or not. */
    if (has_token) {
        /* A second token header could smuggle a guess past the first. */
        if (req->vr_header(req->vr_ctx, p->vp_token_header, 1) != NULL
            || !token_matches(p, token))
        {
            return VERIFY_BAD_TOKEN;
        }
    }
    if (has_sig) {
        r = check_signature(p, req);
        if (r != VERIFY_OK) {
            return r;
        }
    }
    *ret_used = has_sig && has_token ? "token+signature" : has_sig ? "signature" : "token";
    return VERIFY_OK;
}


enum verify_result
verify_check(const struct verify_policy *policy, const struct verify_request *req,
             const char **ret_used)
{
    if (policy->vp_scheme == VERIFY_SCHEME_STANDARD) {
        return check_standard(policy, req, ret_used);
    }
    return check_contextgpt(policy, req, ret_used);
}
