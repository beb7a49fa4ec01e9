/* SPDX-License-Identifier: MIT */
/*
 * Verification and HTTP answers: only genuine requests are stored; wrong,
 * missing or stale credentials get 401 and leave no row; rotation windows
 * accept both secrets (C05 step 1); Standard Webhooks; 404/405/415.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <criterion/criterion.h>

#include "support/harness.h"

#define SECRET "verify-secret-8c2e61b0f4"
#define OLD_SECRET "rotation-old-secret-4417aa"
#define NEW_SECRET "rotation-new-secret-93d0c5"
#define OTHER_SECRET "unrelated-secret-0b77e2f1"
#define WHSEC "whsec_aG9va2QtdGVzdC1zdGFuZGFyZC1rZXkh"
#define WRONG_WHSEC "whsec_b3RoZXItc3RhbmRhcmQta2V5LTI0Ynl0"

TestSuite(verify, .fini = h_suite_fini, .timeout = 60);


/* POSTs body with token and signature of possibly different secrets. */
static int
post_pair(struct h_ctx *x, const char *token, const char *sig_secret, const char *body,
          size_t len)
{
    struct h_resp r;
    char sig[65];
    char *headers;
    int status;

    h_hmac_hex(sig_secret, body, len, sig);
    headers = h_strdupf("Content-Type: application/json\r\nX-WEBHOOK-TOKEN: %s\r\n"
                        "X-WEBHOOK-SIGNATURE: %s\r\n", token, sig);
    status = h_post(x->hx_port, H_DEFAULT_PATH, headers, body, len, &r);
    if (status == 401) {
        cr_expect(strstr(r.hr_body, "\"error\":\"unauthorized\"") != NULL, "401 body: %s",
                  r.hr_body);
    }
    h_resp_free(&r);
    free(headers);
    return status;
}


/* POSTs body with exactly the given header lines; returns the status. */
static int
post_with(struct h_ctx *x, const char *headers, const char *body, size_t len)
{
    struct h_resp r;
    int status = h_post(x->hx_port, H_DEFAULT_PATH, headers, body, len, &r);

    h_resp_free(&r);
    return status;
}


static void
expect_nothing_stored(struct h_ctx *x)
{
    cr_expect_eq(h_events(x), 0, "a refused request was stored");
    cr_expect_eq(h_quarantined(x), 0, "a refused request was quarantined");
}


Test(verify, wrong_token_is_401_and_nothing_stored)
{
    struct h_ctx x;
    size_t len;
    char *body;

    h_ctx_init(&x, "badtoken");
    x.hx_cfg.hc_secrets[0] = SECRET;
    h_ctx_start(&x);
    body = h_sample("new_message_user.json", &len);
    cr_expect_eq(post_pair(&x, "not-the-token-00000000", SECRET, body, len), 401);
    expect_nothing_stored(&x);
    free(body);
    h_ctx_finish(&x, NULL, NULL);
}


Test(verify, wrong_signature_is_401_and_prefixed_right_one_is_200)
{
    struct h_ctx x;
    size_t len;
    char *body;
    char sig[65];
    char *headers;

    h_ctx_init(&x, "badsig");
    x.hx_cfg.hc_secrets[0] = SECRET;
    h_ctx_start(&x);
    body = h_sample("new_message_user.json", &len);
    cr_expect_eq(post_pair(&x, SECRET, OTHER_SECRET, body, len), 401);
    expect_nothing_stored(&x);

    /* A signature over other bytes (the body with one byte changed). */
    body[20] ^= 1;
    h_hmac_hex(SECRET, body, len, sig);
    body[20] ^= 1;
    headers = h_strdupf("Content-Type: application/json\r\nX-WEBHOOK-TOKEN: %s\r\n"
                        "X-WEBHOOK-SIGNATURE: %s\r\n", SECRET, sig);
    cr_expect_eq(post_with(&x, headers, body, len), 401);
    free(headers);
    expect_nothing_stored(&x);

    /* The same request signed right, with the optional "sha256=" prefix. */
    h_hmac_hex(SECRET, body, len, sig);
    headers = h_strdupf("Content-Type: application/json\r\nX-WEBHOOK-TOKEN: %s\r\n"
                        "X-WEBHOOK-SIGNATURE: sha256=%s\r\n", SECRET, sig);
    cr_expect_eq(post_with(&x, headers, body, len), 200);
    free(headers);
    cr_expect_eq(h_events_with_body(&x, body, len), 1);
    free(body);
    h_ctx_finish(&x, NULL, NULL);
}


Test(verify, missing_token_or_signature_with_require_both_is_401)
{
    struct h_ctx x;
    size_t len;
    char *body;
    char sig[65];
    char *headers;

    h_ctx_init(&x, "both");
    x.hx_cfg.hc_secrets[0] = SECRET;
    x.hx_cfg.hc_require = "both";
    h_ctx_start(&x);
    body = h_sample("new_message_user.json", &len);
    h_hmac_hex(SECRET, body, len, sig);

    headers = h_strdupf("Content-Type: application/json\r\nX-WEBHOOK-SIGNATURE: %s\r\n", sig);
    cr_expect_eq(post_with(&x, headers, body, len), 401, "signature without token");
    free(headers);
    headers = h_strdupf("Content-Type: application/json\r\nX-WEBHOOK-TOKEN: %s\r\n", SECRET);
    cr_expect_eq(post_with(&x, headers, body, len), 401, "token without signature");
    free(headers);
    cr_expect_eq(post_with(&x, "Content-Type: application/json\r\n", body, len), 401,
                 "no credentials");
    expect_nothing_stored(&x);
    free(body);
    h_ctx_finish(&x, NULL, NULL);
}


Test(verify, wrong_token_present_with_require_signature_is_401)
{
    struct h_ctx x;
    size_t len;
    char *body;
    char sig[65];
    char *headers;

    h_ctx_init(&x, "reqsig");
    x.hx_cfg.hc_secrets[0] = SECRET;
    x.hx_cfg.hc_require = "signature";
    h_ctx_start(&x);
    body = h_sample("new_message_user.json", &len);
    cr_expect_eq(post_pair(&x, "present-but-wrong-token", SECRET, body, len), 401);
    expect_nothing_stored(&x);

    /* Without the token header the good signature alone is enough. */
    h_hmac_hex(SECRET, body, len, sig);
    headers = h_strdupf("Content-Type: application/json\r\nX-WEBHOOK-SIGNATURE: %s\r\n", sig);
    cr_expect_eq(post_with(&x, headers, body, len), 200);
    free(headers);
    cr_expect_eq(h_events(&x), 1);
    free(body);
    h_ctx_finish(&x, NULL, NULL);
}


Test(verify, rotation_window_accepts_old_and_new_secret_and_refuses_a_third)
{
    struct h_ctx x;
    char *bodies[3];
    size_t lens[3];
    const char *forbidden[] = {OTHER_SECRET, NULL};

    h_ctx_init(&x, "rotate");
    x.hx_cfg.hc_secrets[0] = NEW_SECRET;
    x.hx_cfg.hc_secrets[1] = OLD_SECRET;
    h_ctx_start(&x);
    for (unsigned i = 0; i < 3; i++) {
        bodies[i] = h_user_event(i, &lens[i]);
    }
    cr_expect_eq(post_pair(&x, OLD_SECRET, OLD_SECRET, bodies[0], lens[0]), 200, "old");
    cr_expect_eq(post_pair(&x, NEW_SECRET, NEW_SECRET, bodies[1], lens[1]), 200, "new");
    cr_expect_eq(post_pair(&x, OTHER_SECRET, OTHER_SECRET, bodies[2], lens[2]), 401,
                 "third");
    cr_expect_eq(h_events_with_body(&x, bodies[0], lens[0]), 1);
    cr_expect_eq(h_events_with_body(&x, bodies[1], lens[1]), 1);
    cr_expect_eq(h_events(&x), 2);
    for (int i = 0; i < 3; i++) {
        free(bodies[i]);
    }
    h_ctx_finish(&x, forbidden, NULL);
}


Test(verify, rotation_window_for_tokens_with_require_token)
{
    struct h_ctx x;
    char *bodies[3];
    size_t lens[3];
    const char *tokens[3] = {OLD_SECRET, NEW_SECRET, OTHER_SECRET};
    const int want[3] = {200, 200, 401};
    const char *forbidden[] = {OTHER_SECRET, NULL};

    h_ctx_init(&x, "rotatetok");
    x.hx_cfg.hc_secrets[0] = NEW_SECRET;
    x.hx_cfg.hc_secrets[1] = OLD_SECRET;
    x.hx_cfg.hc_require = "token";
    h_ctx_start(&x);
    for (unsigned i = 0; i < 3; i++) {
        char *headers;

        bodies[i] = h_user_event(10 + i, &lens[i]);
        headers = h_strdupf("Content-Type: application/json\r\nX-WEBHOOK-TOKEN: %s\r\n",
                            tokens[i]);
        cr_expect_eq(post_with(&x, headers, bodies[i], lens[i]), want[i], "token %u", i);
        free(headers);
    }
    cr_expect_eq(h_events(&x), 2);
    for (int i = 0; i < 3; i++) {
        free(bodies[i]);
    }
    h_ctx_finish(&x, forbidden, NULL);
}


/* POSTs body with a timestamp header ts and a MAC over "<ts>.<body>". */
static int
post_timestamped(struct h_ctx *x, const char *ts, const char *body, size_t len)
{
    char sig[65];
    char *headers;
    int status;

    h_hmac_ts_hex(SECRET, ts != NULL ? ts : "", body, len, sig);
    headers = h_strdupf("Content-Type: application/json\r\nX-WEBHOOK-TOKEN: %s\r\n"
                        "X-WEBHOOK-SIGNATURE: %s\r\n%s%s%s", SECRET, sig,
                        ts ? "X-WEBHOOK-TIMESTAMP: " : "", ts ? ts : "", ts ? "\r\n" : "");
    status = post_with(x, headers, body, len);
    free(headers);
    return status;
}


Test(verify, stale_or_missing_timestamp_is_401_when_configured)
{
    struct h_ctx x;
    char *bodies[4];
    size_t lens[4];
    char ts[4][24];
    long long now = (long long)time(NULL);

    h_ctx_init(&x, "timestamp");
    x.hx_cfg.hc_secrets[0] = SECRET;
    x.hx_cfg.hc_endpoint_extra = "    timestamp_header = \"X-WEBHOOK-TIMESTAMP\";\n"
                                 "    tolerance = 300;\n";
    h_ctx_start(&x);
    snprintf(ts[0], sizeof(ts[0]), "%lld", now);
    snprintf(ts[1], sizeof(ts[1]), "%lld", now - 1000);
    snprintf(ts[2], sizeof(ts[2]), "%lld", now + 1000);
    for (unsigned i = 0; i < 4; i++) {
        bodies[i] = h_user_event(20 + i, &lens[i]);
    }
    cr_expect_eq(post_timestamped(&x, ts[0], bodies[0], lens[0]), 200, "fresh timestamp");
    cr_expect_eq(post_timestamped(&x, ts[1], bodies[1], lens[1]), 401, "1000 s old");
    cr_expect_eq(post_timestamped(&x, ts[2], bodies[2], lens[2]), 401, "1000 s ahead");
    cr_expect_eq(post_timestamped(&x, NULL, bodies[3], lens[3]), 401, "no timestamp");
    cr_expect_eq(h_events(&x), 1);
    cr_expect_eq(h_events_with_body(&x, bodies[0], lens[0]), 1);
    for (int i = 0; i < 4; i++) {
        free(bodies[i]);
    }
    h_ctx_finish(&x, NULL, NULL);
}


/* POSTs a Standard Webhooks request with the given signature header value. */
static int
post_standard(struct h_ctx *x, const char *id, const char *ts, const char *sig_value,
              const char *body, size_t len, struct h_resp *r)
{
    char *headers = h_strdupf("Content-Type: application/json\r\nwebhook-id: %s\r\n"
                              "webhook-timestamp: %s\r\nwebhook-signature: %s\r\n", id, ts,
                              sig_value);
    int status = h_post(x->hx_port, H_DEFAULT_PATH, headers, body, len, r);

    free(headers);
    return status;
}


Test(verify, standard_webhooks_accepted_and_deduplicated_by_webhook_id)
{
    struct h_ctx x;
    struct h_resp r;
    size_t len;
    char *body;
    char ts[24];
    char good[64];
    char bad[64];
    char *sig;
    char *v;
    const char *forbidden[] = {WRONG_WHSEC, NULL};

    h_ctx_init(&x, "standard");
    x.hx_cfg.hc_secrets[0] = WHSEC;
    x.hx_cfg.hc_scheme = "standard";
    h_ctx_start(&x);
    body = h_sample("new_lead.json", &len);
    snprintf(ts, sizeof(ts), "%lld", (long long)time(NULL));

    h_standard_sign(WHSEC, "msg_hookd_1", ts, body, len, good, sizeof(good));
    sig = h_strdupf("v1,%s", good);
    post_standard(&x, "msg_hookd_1", ts, sig, body, len, &r);
    h_assert_status(&r, 200, "standard webhook");
    cr_expect(strstr(r.hr_body, "\"stored\"") != NULL, "body %s", r.hr_body);
    h_resp_free(&r);
    free(sig);
    v = h_sql_value(x.hx_db.hd_conninfo, "SELECT dedup_key || ' ' || delivery_id "
                    "FROM hookd.events");
    cr_expect(v != NULL && strcmp(v, "id:" H_DEFAULT_PATH ":msg_hookd_1 msg_hookd_1") == 0,
              "dedup_key/delivery_id: %s", v ? v : "(null)");
    free(v);

    /* The sender retries with the same id and a new timestamp. */
    snprintf(ts, sizeof(ts), "%lld", (long long)time(NULL) + 1);
    h_standard_sign(WHSEC, "msg_hookd_1", ts, body, len, good, sizeof(good));
    sig = h_strdupf("v1,%s", good);
    post_standard(&x, "msg_hookd_1", ts, sig, body, len, &r);
    h_assert_status(&r, 200, "standard redelivery");
    cr_expect(strstr(r.hr_body, "\"duplicate\"") != NULL, "body %s", r.hr_body);
    h_resp_free(&r);
    free(sig);
    cr_expect_eq(h_events(&x), 1);

    /* Several signatures in one header: the valid one may come first or last. */
    h_standard_sign(WRONG_WHSEC, "msg_hookd_2", ts, body, len, bad, sizeof(bad));
    h_standard_sign(WHSEC, "msg_hookd_2", ts, body, len, good, sizeof(good));
    sig = h_strdupf("v1,%s v1,%s", bad, good);
    cr_expect_eq(post_standard(&x, "msg_hookd_2", ts, sig, body, len, NULL), 200,
                 "valid signature last");
    free(sig);
    h_standard_sign(WRONG_WHSEC, "msg_hookd_3", ts, body, len, bad, sizeof(bad));
    h_standard_sign(WHSEC, "msg_hookd_3", ts, body, len, good, sizeof(good));
    sig = h_strdupf("v1,%s v1,%s", good, bad);
    cr_expect_eq(post_standard(&x, "msg_hookd_3", ts, sig, body, len, NULL), 200,
                 "valid signature first");
    free(sig);
    cr_expect_eq(h_events(&x), 3);

    /* Only a wrong signature, then a stale timestamp: refused. */
    sig = h_strdupf("v1,%s", bad);
    cr_expect_eq(post_standard(&x, "msg_hookd_3b", ts, sig, body, len, NULL), 401,
                 "wrong key");
    free(sig);
    snprintf(ts, sizeof(ts), "%lld", (long long)time(NULL) - 1000);
    h_standard_sign(WHSEC, "msg_hookd_4", ts, body, len, good, sizeof(good));
    sig = h_strdupf("v1,%s", good);
    cr_expect_eq(post_standard(&x, "msg_hookd_4", ts, sig, body, len, NULL), 401,
                 "stale timestamp");
    free(sig);
    cr_expect_eq(h_events(&x), 3);
    free(body);
    h_ctx_finish(&x, forbidden, NULL);
}


Test(verify, unknown_path_404_get_405_with_allow_text_plain_415)
{
    struct h_ctx x;
    struct h_resp r;
    size_t len;
    size_t req_len;
    char *body;
    char *headers;
    char *req;
    char *allow;
    char sig[65];

    h_ctx_init(&x, "routing");
    x.hx_cfg.hc_secrets[0] = SECRET;
    h_ctx_start(&x);
    body = h_sample("new_message_user.json", &len);

    h_post_signed(x.hx_port, "/webhooks/other", SECRET, body, len, &r);
    h_assert_status(&r, 404, "unknown path");
    h_resp_free(&r);

    req = h_request("GET", H_DEFAULT_PATH, NULL, NULL, 0, &req_len);
    h_exchange(x.hx_port, req, req_len, &r);
    h_assert_status(&r, 405, "GET");
    allow = h_resp_header(&r, "Allow");
    cr_expect(allow != NULL && strcmp(allow, "POST") == 0, "Allow: %s",
              allow ? allow : "(none)");
    free(allow);
    h_resp_free(&r);
    free(req);

    h_hmac_hex(SECRET, body, len, sig);
    headers = h_strdupf("Content-Type: text/plain\r\nX-WEBHOOK-TOKEN: %s\r\n"
                        "X-WEBHOOK-SIGNATURE: %s\r\n", SECRET, sig);
    h_post(x.hx_port, H_DEFAULT_PATH, headers, body, len, &r);
    h_assert_status(&r, 415, "text/plain");
    h_resp_free(&r);
    free(headers);
    cr_expect_eq(h_events(&x), 0);

    /* application/json with a charset, and no Content-Type at all, are fine. */
    headers = h_strdupf("Content-Type: application/json; charset=utf-8\r\n"
                        "X-WEBHOOK-TOKEN: %s\r\nX-WEBHOOK-SIGNATURE: %s\r\n", SECRET, sig);
    h_post(x.hx_port, H_DEFAULT_PATH, headers, body, len, &r);
    h_assert_status(&r, 200, "application/json; charset=utf-8");
    h_resp_free(&r);
    free(headers);
    free(body);
    body = h_user_event(1, &len);
    h_hmac_hex(SECRET, body, len, sig);
    headers = h_strdupf("X-WEBHOOK-TOKEN: %s\r\nX-WEBHOOK-SIGNATURE: %s\r\n", SECRET, sig);
    h_post(x.hx_port, H_DEFAULT_PATH, headers, body, len, &r);
    h_assert_status(&r, 200, "no Content-Type");
    h_resp_free(&r);
    free(headers);
    cr_expect_eq(h_events(&x), 2);
    free(body);
    h_ctx_finish(&x, NULL, NULL);
}
