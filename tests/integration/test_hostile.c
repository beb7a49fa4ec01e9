/* SPDX-License-Identifier: MIT */
/*
 * Faults an adversarial session found, kept as tests: hostile framing that
 * CivetWeb's signed arithmetic used to overflow on, header tables that
 * silently dropped what came after them, deep events whose jobs could not
 * be parsed, and route lists that did not fit a fixed buffer. Under the
 * sanitizer build, an overflow would end the daemon and fail these.
 */
#include <criterion/criterion.h>

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "support/harness.h"

TestSuite(hostile, .fini = h_suite_fini, .timeout = 60);


static void
expect_still_serving(struct h_ctx *x, unsigned n)
{
    size_t len;
    char *body = h_user_event(n, &len);

    cr_assert_eq(h_post_signed(x->hx_port, H_DEFAULT_PATH, x->hx_cfg.hc_secrets[0], body, len,
                               NULL), 200, "hookd stopped answering");
    free(body);
}


/* Sends raw request bytes on a new connection; the status or 0. */
static int
raw(struct h_ctx *x, const char *text, size_t len)
{
    struct h_resp r = {0};
    int status = h_exchange(x->hx_port, text, len, &r);

    h_resp_free(&r);
    return status;
}


Test(hostile, absurd_lengths_are_refused_without_undefined_arithmetic)
{
    struct h_ctx x;
    static const char huge_length[] =
        "POST /webhooks/contextgpt HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        "Content-Length: 9223372036854775807\r\n\r\n{}";
    static const char huge_chunk[] =
        "POST /webhooks/contextgpt HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        "Transfer-Encoding: chunked\r\n\r\n7fffffffffffffff\r\nabc";

    h_ctx_init(&x, "hostile_len");
    x.hx_cfg.hc_body_timeout = 1500;
    h_ctx_start(&x);
    cr_assert_eq(raw(&x, huge_length, sizeof(huge_length) - 1), 413);
    expect_still_serving(&x, 1);
    (void)raw(&x, huge_chunk, sizeof(huge_chunk) - 1);
    expect_still_serving(&x, 2);
    cr_assert_eq(h_events(&x), 2);
    h_ctx_finish(&x, NULL, NULL);
}


Test(hostile, a_full_header_table_is_refused_not_cut)
{
    struct h_ctx x;
    char headers[8192];
    char *req;
    size_t n = 0;
    size_t req_len;
    size_t len;
    char *inner = h_user_event(7, &len);
    char *signed_headers;

    h_ctx_init(&x, "hostile_headers");
    h_ctx_start(&x);
    /* 70 filler headers, then credentials and the length: all past the table's end. */
    for (int i = 0; i < 70; i++) {
        n += (size_t)snprintf(headers + n, sizeof(headers) - n, "X-Filler-%d: v\r\n", i);
    }
    signed_headers = h_signed_headers(x.hx_cfg.hc_secrets[0], inner, len);
    snprintf(headers + n, sizeof(headers) - n, "%s", signed_headers);
    req = h_request("POST", H_DEFAULT_PATH, headers, inner, len, &req_len);
    cr_assert_eq(raw(&x, req, req_len), 431);
    cr_assert_eq(h_events(&x), 0, "a request cut at the header table was stored");
    expect_still_serving(&x, 8);
    free(req);
    free(signed_headers);
    free(inner);
    h_ctx_finish(&x, NULL, NULL);
}


Test(hostile, deep_events_and_long_route_lists_still_get_their_jobs)
{
    struct h_ctx x;
    char plugins[PATH_MAX];
    char *routes = NULL;
    char *top;
    size_t cap = 0, used = 0;
    char body[512];
    long deadline;
    int n;

    cr_assert_not_null(realpath("build/tests/plugins", plugins), "run from the repo root");
    /* 70 routes with 64-character names: more than any fixed buffer held. */
    for (int i = 0; i < 70; i++) {
        char route[160];

        n = snprintf(route, sizeof(route), "%s  { name = \"r%02d%s\"; handler = \"counter\"; }",
                     i ? ",\n" : "", i,
                     "-a-long-route-name-to-fill-sixty-four-characters-of-route-nam");
        if (used + (size_t)n + 1 > cap) {
            cap = (cap + (size_t)n + 1) * 2;
            routes = realloc(routes, cap);
        }
        memcpy(routes + used, route, (size_t)n + 1);
        used += (size_t)n;
    }
    top = h_strdupf("dispatch = { plugin_dir = \"%s\"; workers = 4; poll_interval = 200; };\n"
                    "routes = (\n%s\n);", plugins, routes);
    h_ctx_init(&x, "hostile_deep");
    x.hx_cfg.hc_top_extra = top;
    h_ctx_start(&x);

    /* An event nested 40 deep (within the limit of 64). */
    n = snprintf(body, sizeof(body), "{\"event\":\"DEEP\",\"data\":{\"chatbotId\":\"c\","
                 "\"threadId\":\"t\"},\"x\":");
    for (int i = 0; i < 38; i++) {
        body[n++] = '[';
    }
    body[n++] = '1';
    for (int i = 0; i < 38; i++) {
        body[n++] = ']';
    }
    n += snprintf(body + n, sizeof(body) - (size_t)n, "}");
    cr_assert_eq(h_post_signed(x.hx_port, H_DEFAULT_PATH, x.hx_cfg.hc_secrets[0], body,
                               (size_t)n, NULL), 200);
    cr_assert_eq(h_sql_long(x.hx_db.hd_conninfo, "SELECT count(*) FROM hookd.jobs"), 70);
    deadline = (long)h_now_ms() + 20000;
    while (h_sql_long(x.hx_db.hd_conninfo, "SELECT count(*) FROM hookd.jobs WHERE status"
                      " IN ('pending', 'running')") > 0 && (long)h_now_ms() < deadline)
    {
        h_sleep_ms(100);
    }
    cr_assert_eq(h_sql_long(x.hx_db.hd_conninfo, "SELECT count(*) FROM hookd.jobs WHERE"
                            " status = 'done'"), 70, "a deep event's jobs did not all finish");
    h_ctx_finish(&x, NULL, NULL);
    free(routes);
    free(top);
}
