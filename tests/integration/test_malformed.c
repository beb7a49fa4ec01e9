/* SPDX-License-Identifier: MIT */
/*
 * Malformed but genuine bodies: 400 "malformed", the exact bytes kept in
 * hookd.quarantine, nothing in hookd.events, and the daemon keeps serving.
 */
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>

#include "support/harness.h"

#define SECRET "malformed-secret-2d9a7c3e51"

TestSuite(malformed, .fini = h_suite_fini, .timeout = 60);


static void
start(struct h_ctx *x, const char *tag)
{
    h_ctx_init(x, tag);
    x->hx_cfg.hc_secrets[0] = SECRET;
    h_ctx_start(x);
}


/* Sends a signed body, expects 400 malformed and its bytes in quarantine. */
static void
expect_quarantined(struct h_ctx *x, const char *what, const void *body, size_t len)
{
    struct h_resp r;
    long before = h_quarantined(x);
    long events = h_events(x);

    h_post_signed(x->hx_port, H_DEFAULT_PATH, SECRET, body, len, &r);
    h_assert_status(&r, 400, what);
    cr_expect(strstr(r.hr_body, "\"error\":\"malformed\"") != NULL, "%s: body %s", what,
              r.hr_body);
    cr_expect(strstr(r.hr_head, "application/json") != NULL, "%s: not JSON", what);
    h_resp_free(&r);
    cr_expect_eq(h_quarantined(x), before + 1, "%s: no quarantine row", what);
    cr_expect_eq(h_quarantined_with_body(x, body, len), 1, "%s: quarantined bytes differ",
                 what);
    cr_expect_eq(h_events(x), events, "%s: stored as an event", what);
}


/* A valid event still gets 200 (the daemon is up and serving). */
static void
expect_still_serving(struct h_ctx *x, unsigned n)
{
    struct h_resp r;
    size_t len;
    char *body = h_user_event(n, &len);

    h_post_signed(x->hx_port, H_DEFAULT_PATH, SECRET, body, len, &r);
    h_assert_status(&r, 200, "valid event after a malformed one");
    h_resp_free(&r);
    cr_expect_eq(h_events_with_body(x, body, len), 1);
    free(body);
}


Test(malformed, empty_body_is_400_and_quarantined)
{
    struct h_ctx x;
    char *v;

    start(&x, "empty");
    expect_quarantined(&x, "empty body", "", 0);
    v = h_sql_value(x.hx_db.hd_conninfo, "SELECT octet_length(raw_body) || ' ' || endpoint "
                    "|| ' ' || (reason <> '')::text FROM hookd.quarantine");
    cr_expect(v != NULL && strcmp(v, "0 " H_DEFAULT_PATH " true") == 0, "row: %s",
              v ? v : "(null)");
    free(v);
    h_ctx_finish(&x, NULL, NULL);
}


Test(malformed, array_non_json_and_eventless_bodies_are_400_and_quarantined)
{
    struct h_ctx x;
    static const char *const bodies[][2] = {
        {"a JSON array", "[{\"event\":\"NEW_MESSAGE\",\"data\":{}}]\n"},
        {"not JSON", "event=NEW_MESSAGE&data=1\n"},
        {"truncated JSON", "{\"event\":\"NEW_MESSAGE\",\"data\":{\"chatbotId\":\"1\""},
        {"no event field", "{\"data\":{\"chatbotId\":\"365062873485935184\"}}\n"},
        {"empty event", "{\"event\":\"\",\"data\":{}}\n"},
        {"event not a string", "{\"event\":7,\"data\":{}}\n"},
        {"a JSON string", "\"NEW_MESSAGE\"\n"},
        {"NUL escape", "{\"event\":\"NEW_MESSAGE\",\"data\":{\"question\":\"a\\u0000b\"}}"},
        {"lone surrogate", "{\"event\":\"NEW_MESSAGE\",\"data\":{\"question\":\"\\ud83d\"}}"},
    };

    start(&x, "shapes");
    for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
        expect_quarantined(&x, bodies[i][0], bodies[i][1], strlen(bodies[i][1]));
    }
    expect_still_serving(&x, 1);
    h_ctx_finish(&x, NULL, NULL);
}


Test(malformed, invalid_utf8_is_400_and_quarantined_byte_exact)
{
    struct h_ctx x;
    static const char body[] =
        "{\"event\":\"NEW_MESSAGE\",\"data\":{\"question\":\"caf\xc3\x28 \xff\xfe "
        "\xed\xa0\x80 \xc0\xaf\"}}\n";
    char hex[2 * sizeof(body) + 1];
    char *v;

    start(&x, "utf8");
    expect_quarantined(&x, "invalid UTF-8", body, sizeof(body) - 1);
    for (size_t i = 0; i + 1 < sizeof(body); i++) {
        static const char digits[] = "0123456789abcdef";

        hex[2 * i] = digits[(unsigned char)body[i] >> 4];
        hex[2 * i + 1] = digits[(unsigned char)body[i] & 15];
        hex[2 * i + 2] = '\0';
    }
    v = h_sql_value(x.hx_db.hd_conninfo, "SELECT encode(raw_body, 'hex') FROM hookd.quarantine");
    cr_expect(v != NULL && strcmp(v, hex) == 0, "quarantined bytes: %s", v ? v : "(null)");
    free(v);
    expect_still_serving(&x, 2);
    h_ctx_finish(&x, NULL, NULL);
}


/* An event whose data is n nested arrays around a 1 (malloc'd). */
static char *
nested(size_t n)
{
    const char *head = "{\"event\":\"NEW_MESSAGE\",\"data\":";
    size_t hl = strlen(head);
    char *body = malloc(hl + 2 * n + 3);

    cr_assert(body != NULL);
    memcpy(body, head, hl);
    memset(body + hl, '[', n);
    body[hl + n] = '1';
    memset(body + hl + n + 1, ']', n);
    body[hl + 2 * n + 1] = '}';
    body[hl + 2 * n + 2] = '\0';
    return body;
}


Test(malformed, json_nested_100000_deep_is_400_and_the_daemon_stays_up)
{
    struct h_ctx x;
    const char *head = "{\"event\":\"NEW_MESSAGE\",\"data\":";
    size_t depth = 100000;
    size_t hl = strlen(head);
    size_t len = hl + 2 * depth + 1;
    char *body = malloc(len + 1);
    struct h_resp r;

    cr_assert(body != NULL);
    memcpy(body, head, hl);
    memset(body + hl, '[', depth);
    memset(body + hl + depth, ']', depth);
    body[len - 1] = '}';
    body[len] = '\0';

    start(&x, "deep");
    expect_quarantined(&x, "100000 levels", body, len);
    cr_expect(x.hx_daemon.hd_running && !h_daemon_wait_exit(&x.hx_daemon, 0),
              "hookd died on deep JSON");
    expect_still_serving(&x, 3);

    /* The object and 64 arrays are 65 levels: over the limit (64). */
    free(body);
    body = nested(64);
    expect_quarantined(&x, "65 levels", body, strlen(body));
    free(body);
    body = nested(62);
    cr_expect_eq(h_post_signed(x.hx_port, H_DEFAULT_PATH, SECRET, body, strlen(body), NULL),
                 200, "63 levels");
    free(body);
    body = nested(63);
    h_post_signed(x.hx_port, H_DEFAULT_PATH, SECRET, body, strlen(body), &r);
    cr_expect_eq(r.hr_status, 200, "64 levels (the limit itself): got %d, body %s",
                 r.hr_status, r.hr_body ? r.hr_body : "(none)");
    h_resp_free(&r);
    free(body);
    h_ctx_finish(&x, NULL, NULL);
}
