/* SPDX-License-Identifier: MIT */
/*
 * verify: decides whether a webhook request is genuine, before anything is
 * stored.
 *
 * Two schemes:
 *  - "contextgpt": a shared token header compared with each secret, and an
 *    HMAC-SHA256 of the exact raw body (optionally "timestamp.body") in a
 *    signature header, hex or base64, optionally with a "sha256=" prefix.
 *    Which of the two is required is the endpoint's policy; a credential
 *    that is present is always checked, even where it is not required.
 *  - "standard": Standard Webhooks (webhook-id, webhook-timestamp,
 *    webhook-signature with space-separated "v1,<base64>" entries), the
 *    key being the base64 after "whsec_".
 *
 * Every comparison is constant-time. Several secrets may be valid at once
 * (rotation) and a header may carry several signatures; any valid pair
 * passes. Pure code: no allocation on the request path, no logging, safe
 * from any thread as long as the policy is not changed while in use.
 */
#ifndef HOOKD_VERIFY_H
#define HOOKD_VERIFY_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#define VERIFY_MAC_LEN 32

enum verify_scheme {
    VERIFY_SCHEME_CONTEXTGPT = 0,
    VERIFY_SCHEME_STANDARD
};

enum verify_require {
    VERIFY_REQUIRE_BOTH = 0,    /* token and signature */
    VERIFY_REQUIRE_SIGNATURE,
    VERIFY_REQUIRE_TOKEN,
    VERIFY_REQUIRE_ANY          /* at least one of them */
};

enum verify_encoding {
    VERIFY_ENCODING_HEX = 0,
    VERIFY_ENCODING_BASE64
};

/* Outcome of a check; VERIFY_OK is 0. Each has a stable name for logs. */
enum verify_result {
    VERIFY_OK = 0,
    VERIFY_NO_CREDENTIALS,
    VERIFY_MISSING_TOKEN,
    VERIFY_BAD_TOKEN,
    VERIFY_MISSING_SIGNATURE,
    VERIFY_BAD_SIGNATURE,
    VERIFY_MISSING_TIMESTAMP,
    VERIFY_BAD_TIMESTAMP,
    VERIFY_STALE_TIMESTAMP,
    VERIFY_MISSING_ID
};

/*
 * A secret as configured. The contextgpt scheme uses the text both as the
 * token and as the HMAC key; the standard scheme uses vs_key, the bytes
 * decoded from "whsec_<base64>" (NULL for contextgpt secrets).
 */
struct verify_secret {
    const char *vs_text;
    size_t vs_text_len;
    const unsigned char *vs_key;
    size_t vs_key_len;
};

struct verify_policy {
    enum verify_scheme vp_scheme;
    enum verify_require vp_require;
    enum verify_encoding vp_encoding;
    const char *vp_token_header;      /* contextgpt scheme */
    const char *vp_signature_header;  /* contextgpt scheme */
    const char *vp_signature_prefix;  /* "" for none; accepted, not needed */
    const char *vp_timestamp_header;  /* NULL or "" for none */
    long vp_tolerance;                /* seconds either side of now */
    const struct verify_secret *vp_secrets;
    size_t vp_nsecrets;
};

/*
 * Returns the value of the index-th (from 0) header called name
 * (case-insensitive), or NULL when there are fewer.
 */
typedef const char *(*verify_header_fn)(void *ctx, const char *name,
                                        int index);

struct verify_request {
    verify_header_fn vr_header;
    void *vr_ctx;
    const unsigned char *vr_body;
    size_t vr_body_len;
    time_t vr_now;
};

/*
 * Checks req against policy. On VERIFY_OK, *ret_used names what was
 * checked ("token", "signature", "token+signature", "standard-webhooks");
 * otherwise it is left alone. Never reveals which secret matched.
 */
enum verify_result verify_check(const struct verify_policy *policy,
                                const struct verify_request *req,
                                const char **ret_used);

/* Stable lowercase name of a result, for logs and metrics. */
const char *verify_result_name(enum verify_result r);

/* SHA-256 of data; out gets 32 bytes. Returns false only if OpenSSL fails. */
bool verify_sha256(const void *data, size_t len, unsigned char out[VERIFY_MAC_LEN]);

/*
 * HMAC-SHA256 of the concatenation of n parts under key; out gets 32
 * bytes. Returns false only if OpenSSL fails.
 */
bool verify_hmac_sha256(const unsigned char *key, size_t key_len,
                        const void *const parts[], const size_t lens[],
                        size_t n, unsigned char out[VERIFY_MAC_LEN]);

/*
 * Decodes a Standard Webhooks secret ("whsec_" then base64, or bare
 * base64) into out (cap bytes). Returns the key length or -1.
 */
long verify_standard_key(const char *secret, unsigned char *out, size_t cap);

#endif
