/* SPDX-License-Identifier: MIT */
/*
 * Limits: the body cap (C21), oversized headers, and slow clients that must
 * not hold workers (C23).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>

#include "support/harness.h"

#define SECRET "limits-secret-6b1f0e9a2c"

TestSuite(limits, .fini = h_suite_fini, .timeout = 60);


/* A NEW_MESSAGE event of exactly total bytes (padded in a string field). */
static char *
padded_event(size_t total)
{
    const char *prefix = "{\"event\":\"NEW_MESSAGE\",\"data\":{\"chatbotId\":"
                         "\"365062873485935184\",\"threadId\":\"t-limits\",\"pad\":\"";
    const char *suffix = "\"}}";
    size_t pl = strlen(prefix);
    size_t sl = strlen(suffix);
    char *body = malloc(total + 1);

    cr_assert(body != NULL && total > pl + sl);
    memcpy(body, prefix, pl);
    memset(body + pl, 'p', total - pl - sl);
    memcpy(body + total - sl, suffix, sl);
    body[total] = '\0';
    return body;
}


/* Request bytes of a signed chunked POST carrying body in one chunk. */
static char *
chunked_request(const char *body, size_t len, size_t *ret_len)
{
    char *headers = h_signed_headers(SECRET, body, len);
    char *with_te = h_strdupf("%sTransfer-Encoding: chunked\r\n", headers);
    char *framed = h_strdupf("%zx\r\n%s\r\n0\r\n\r\n", len, body);
    char *req = h_request("POST", H_DEFAULT_PATH, with_te, framed, strlen(framed), ret_len);

    free(framed);
    free(with_te);
    free(headers);
    return req;
}


Test(limits, body_of_max_body_is_stored_and_one_byte_more_is_413)
{
    struct h_ctx x;
    struct h_resp r;
    struct h_conn c;
    char *ok_body;
    char *big_body;
    char *req;
    size_t req_len;

    h_ctx_init(&x, "maxbody");
    x.hx_cfg.hc_secrets[0] = SECRET;
    x.hx_cfg.hc_max_body = 4096;
    h_ctx_start(&x);
    ok_body = padded_event(4096);
    big_body = padded_event(4097);

    h_post_signed(x.hx_port, H_DEFAULT_PATH, SECRET, ok_body, 4096, &r);
    h_assert_status(&r, 200, "body of exactly max_body");
    h_resp_free(&r);
    cr_expect_eq(h_events_with_body(&x, ok_body, 4096), 1);

    h_post_signed(x.hx_port, H_DEFAULT_PATH, SECRET, big_body, 4097, &r);
    h_assert_status(&r, 413, "body of max_body + 1 (Content-Length)");
    h_resp_free(&r);

    /* Chunked: cut once the cap is crossed, and the connection closes. */
    req = chunked_request(big_body, 4097, &req_len);
    cr_assert_eq(h_conn_open(&c, x.hx_port, 5000), 0);
    (void)h_conn_send(&c, req, req_len, 5000);
    cr_expect_eq(h_conn_read_response(&c, &r, 10000), 0, "no answer to a chunked 4097");
    h_assert_status(&r, 413, "body of max_body + 1 (chunked)");
    h_resp_free(&r);
    cr_expect(h_conn_wait_closed(&c, 5000), "connection left open after 413");
    h_conn_close(&c);
    free(req);

    /* A chunked body of exactly max_body is fine. */
    free(ok_body);
    ok_body = padded_event(4096);
    ok_body[100] = 'q';
    req = chunked_request(ok_body, 4096, &req_len);
    h_exchange(x.hx_port, req, req_len, &r);
    h_assert_status(&r, 200, "chunked body of exactly max_body");
    h_resp_free(&r);
    free(req);

    cr_expect_eq(h_events(&x), 2);
    cr_expect_eq(h_quarantined(&x), 0);
    free(ok_body);
    free(big_body);
    h_ctx_finish(&x, NULL, NULL);
}


Test(limits, answer_of_900_kb_is_stored_byte_exact_under_the_default_cap)
{
    struct h_ctx x;
    struct h_resp r;
    size_t n = 900 * 1024;
    size_t len;
    char *base;
    char *answer;
    char *body;

    h_ctx_init(&x, "c21a");
    x.hx_cfg.hc_secrets[0] = SECRET;
    h_ctx_start(&x);
    base = h_user_event(1, &len);
    answer = malloc(n + 16);
    cr_assert(answer != NULL);
    memcpy(answer, "\"answer\":\"", 10);
    for (size_t i = 0; i < n; i++) {
        answer[10 + i] = (char)('a' + i % 26);
    }
    memcpy(answer + 10 + n, "\"", 2);
    body = h_replace(base, "\"answer\":null", answer);
    len = strlen(body);
    cr_assert(len > n && len < 1048576);

    h_post_signed(x.hx_port, H_DEFAULT_PATH, SECRET, body, len, &r);
    h_assert_status(&r, 200, "900 KB answer");
    h_resp_free(&r);
    cr_expect_eq(h_events_with_body(&x, body, len), 1, "not stored byte-exact");
    cr_expect_eq(h_sql_long(x.hx_db.hd_conninfo, "SELECT length(payload->'data'->>'answer') "
                            "FROM hookd.events"), (long)n);
    free(body);
    free(answer);
    free(base);
    h_ctx_finish(&x, NULL, NULL);
}


Test(limits, declared_5_mb_body_is_413_before_it_is_sent)
{
    struct h_ctx x;
    struct h_resp r;
    struct h_conn c;
    char *headers;
    char *req;
    size_t req_len;
    long long t0;

    h_ctx_init(&x, "c21b");
    x.hx_cfg.hc_secrets[0] = SECRET;
    h_ctx_start(&x);

    /* Only the headers go out: a daemon that waited for the body would hang. */
    headers = h_strdupf("Content-Type: application/json\r\nX-WEBHOOK-TOKEN: %s\r\n"
                        "Content-Length: %d\r\n", SECRET, 5 * 1024 * 1024);
    req = h_request("POST", H_DEFAULT_PATH, headers, NULL, 0, &req_len);
    cr_assert_eq(h_conn_open(&c, x.hx_port, 5000), 0);
    cr_assert_eq(h_conn_send(&c, req, req_len, 5000), 0);
    t0 = h_now_ms();
    cr_expect_eq(h_conn_read_response(&c, &r, 5000), 0, "no answer to the headers alone");
    h_assert_status(&r, 413, "Content-Length of 5 MB");
    cr_expect(h_now_ms() - t0 < 2000, "413 took %lld ms", h_now_ms() - t0);
    h_resp_free(&r);
    cr_expect(h_conn_wait_closed(&c, 5000), "connection left open after 413");
    h_conn_close(&c);
    cr_expect_eq(h_events(&x), 0);
    free(req);
    free(headers);
    h_ctx_finish(&x, NULL, NULL);
}


Test(limits, chunked_5_mb_body_is_cut_with_413)
{
    struct h_ctx x;
    struct h_resp r;
    struct h_conn c;
    size_t chunk = 64 * 1024;
    size_t total = 5 * 1024 * 1024;
    size_t sent = 0;
    char *headers;
    char *req;
    char *frame;
    size_t req_len;
    size_t hl;
    int rc;

    h_ctx_init(&x, "c21c");
    x.hx_cfg.hc_secrets[0] = SECRET;
    h_ctx_start(&x);
    headers = h_strdupf("Content-Type: application/json\r\nX-WEBHOOK-TOKEN: %s\r\n"
                        "Transfer-Encoding: chunked\r\n", SECRET);
    req = h_request("POST", H_DEFAULT_PATH, headers, NULL, 0, &req_len);
    frame = malloc(chunk + 16);
    cr_assert(frame != NULL);
    snprintf(frame, 16, "%zx\r\n", chunk);
    hl = strlen(frame);
    memset(frame + hl, '7', chunk);
    memcpy(frame + hl + chunk, "\r\n", 2);

    cr_assert_eq(h_conn_open(&c, x.hx_port, 5000), 0);
    cr_assert_eq(h_conn_send(&c, req, req_len, 5000), 0);
    while (sent < total) {
        if (h_conn_pending(&c)) {
            break;              /* the answer (or the close) is there */
        }
        if (h_conn_send(&c, frame, hl + chunk + 2, 3000) != 0) {
            break;
        }
        sent += chunk;
    }
    rc = h_conn_read_response(&c, &r, 10000);
    cr_expect_eq(rc, 0, "no answer to a 5 MB chunked body (sent %zu bytes)", sent);
    h_assert_status(&r, 413, "5 MB chunked body");
    h_resp_free(&r);
    cr_expect(h_conn_wait_closed(&c, 5000), "connection left open after 413");
    h_conn_close(&c);
    cr_expect_eq(h_events(&x), 0);
    cr_expect_eq(h_quarantined(&x), 0);

    /* And the daemon still takes events. */
    free(req);
    req = h_user_event(5, &req_len);
    cr_expect_eq(h_post_signed(x.hx_port, H_DEFAULT_PATH, SECRET, req, req_len, NULL), 200);
    free(req);
    free(frame);
    free(headers);
    h_ctx_finish(&x, NULL, NULL);
}


Test(limits, header_of_64_kib_is_4xx_and_the_next_request_is_served)
{
    struct h_ctx x;
    struct h_resp r;
    size_t pad = 64 * 1024;
    char *value;
    char *headers;
    char *more;
    char *req;
    size_t req_len;
    size_t len;
    char *body;

    h_ctx_init(&x, "bighead");
    x.hx_cfg.hc_secrets[0] = SECRET;
    h_ctx_start(&x);
    value = malloc(pad + 1);
    cr_assert(value != NULL);
    memset(value, 'h', pad);
    value[pad] = '\0';
    body = h_user_event(1, &len);
    headers = h_signed_headers(SECRET, body, len);
    more = h_strdupf("%sX-Pad: %s\r\n", headers, value);
    free(headers);
    headers = more;
    req = h_request("POST", H_DEFAULT_PATH, headers, body, len, &req_len);
    h_exchange(x.hx_port, req, req_len, &r);
    cr_expect(r.hr_status == 431 || r.hr_status == 413 || r.hr_status == 400,
              "64 KiB header: got status %d (want 431, 413 or 400)", r.hr_status);
    cr_log_info("64 KiB header answered %d", r.hr_status);
    h_resp_free(&r);
    cr_expect_eq(h_events(&x), 0);

    h_post_signed(x.hx_port, H_DEFAULT_PATH, SECRET, body, len, &r);
    h_assert_status(&r, 200, "normal request after the huge header");
    h_resp_free(&r);
    free(req);
    free(headers);
    free(value);
    free(body);
    h_ctx_finish(&x, NULL, NULL);
}


/* One slow client connection of the C23 test. */
struct slow {
    struct h_conn s_conn;
    const char *s_trickle;          /* bytes still to send, 1 per tick; NULL: none */
    long long s_opened;
    long long s_closed;             /* 0 while open */
};


/*
 * C23. CivetWeb serves each connection on one worker thread, so the slow
 * connections (12) are kept fewer than the threads (16): the test shows that
 * they are cut at body_timeout, not that a flood of them cannot fill the pool.
 */
Test(limits, trickling_and_stalled_bodies_are_cut_while_events_keep_flowing)
{
    struct h_ctx x;
    struct slow slow[12];
    const int nslow = 12;
    const char *trickle = "5\r\n{\"a\":\r\n2\r\n1}\r\n0\r\n\r\n";
    int ok = 0;
    long long start;
    long long worst = 0;
    unsigned n = 0;

    h_ctx_init(&x, "c23");
    x.hx_cfg.hc_secrets[0] = SECRET;
    x.hx_cfg.hc_threads = 16;
    x.hx_cfg.hc_body_timeout = 3000;
    x.hx_cfg.hc_request_timeout = 3000;
    h_ctx_start(&x);

    for (int i = 0; i < nslow; i++) {
        const char *hdr = i < 8 ? "Content-Type: application/json\r\n"
                                  "Transfer-Encoding: chunked\r\n"
                                : "Content-Type: application/json\r\n"
                                  "Content-Length: 500\r\n";
        size_t req_len;
        char *req = h_request("POST", H_DEFAULT_PATH, hdr, NULL, 0, &req_len);

        cr_assert_eq(h_conn_open(&slow[i].s_conn, x.hx_port, 5000), 0, "slow %d", i);
        cr_assert_eq(h_conn_send(&slow[i].s_conn, req, req_len, 5000), 0);
        slow[i].s_trickle = i < 8 ? trickle : NULL;
        slow[i].s_opened = h_now_ms();
        slow[i].s_closed = 0;
        free(req);
    }

    start = h_now_ms();
    while (h_now_ms() - start < 15000) {
        long long tick = h_now_ms();
        long long t0;
        struct h_resp r;
        size_t len;
        char *body;
        int open_left = 0;

        for (int i = 0; i < nslow; i++) {
            struct slow *s = &slow[i];

            if (s->s_closed == 0 && s->s_trickle != NULL && *s->s_trickle != '\0') {
                if (h_conn_send(&s->s_conn, s->s_trickle, 1, 500) == 0) {
                    s->s_trickle++;
                }
            }
            if (s->s_closed == 0 && h_conn_poll_closed(&s->s_conn)) {
                s->s_closed = h_now_ms();
            }
            open_left += s->s_closed == 0;
        }

        /* A valid event gets its 200 within 2 s meanwhile. */
        body = h_user_event(n++, &len);
        t0 = h_now_ms();
        h_post_signed(x.hx_port, H_DEFAULT_PATH, SECRET, body, len, &r);
        worst = h_now_ms() - t0 > worst ? h_now_ms() - t0 : worst;
        h_assert_status(&r, 200, "valid event during the slow clients");
        cr_expect(h_now_ms() - t0 < 2000, "valid event took %lld ms", h_now_ms() - t0);
        h_resp_free(&r);
        free(body);
        ok++;

        if (open_left == 0 && ok >= 5) {
            break;
        }
        while (h_now_ms() - tick < 1000) {
            h_sleep_ms(50);
        }
    }

    for (int i = 0; i < nslow; i++) {
        cr_expect(slow[i].s_closed != 0, "slow connection %d still open after 15 s", i);
        if (slow[i].s_closed != 0) {
            cr_expect(slow[i].s_closed - slow[i].s_opened <= 8000,
                      "slow connection %d closed after %lld ms", i,
                      slow[i].s_closed - slow[i].s_opened);
        }
        h_conn_close(&slow[i].s_conn);
    }
    cr_expect_eq(h_events(&x), ok, "stored %ld rows for %d valid events", h_events(&x), ok);
    cr_expect_eq(h_quarantined(&x), 0);
    cr_log_info("C23: %d valid events, slowest %lld ms", ok, worst);
    h_ctx_finish(&x, NULL, NULL);
}


/*
 * Sends req (a request whose body stops short) and stalls. The daemon must
 * answer 408 or just close, and keep nothing: a body it did not fully get
 * is not the sender's event.
 */
static void
expect_stalled_body_dropped(struct h_ctx *x, const char *what, const char *req,
                            size_t req_len)
{
    struct h_conn c;
    struct h_resp r;
    long events = h_events(x);
    long quarantined = h_quarantined(x);
    int rc;

    cr_assert_eq(h_conn_open(&c, x->hx_port, 5000), 0);
    cr_assert_eq(h_conn_send(&c, req, req_len, 5000), 0);
    rc = h_conn_read_response(&c, &r, 10000);
    cr_expect(rc != -1, "%s: neither an answer nor a close within 10 s", what);
    cr_expect(rc != 0 || r.hr_status == 408, "%s: answered %d (%s) to a body that never "
              "ended", what, r.hr_status, r.hr_body ? r.hr_body : "");
    h_resp_free(&r);
    cr_expect(h_conn_wait_closed(&c, 10000), "%s: connection left open", what);
    h_conn_close(&c);
    cr_expect_eq(h_events(x), events, "%s: a partial body was stored as an event", what);
    cr_expect_eq(h_quarantined(x), quarantined, "%s: a partial body was quarantined", what);
}


/*
 * A read that idles past CivetWeb's request_timeout must not look like the
 * end of the body: with body_timeout longer than request_timeout, a client
 * that stops mid-body is still cut, not served.
 */
Test(limits, body_that_stops_short_is_not_taken_as_complete)
{
    struct h_ctx x;
    size_t len;
    size_t req_len;
    char *body;
    char *headers;
    char *req;

    h_ctx_init(&x, "stall");
    x.hx_cfg.hc_secrets[0] = SECRET;
    x.hx_cfg.hc_require = "token";
    x.hx_cfg.hc_request_timeout = 1000;
    x.hx_cfg.hc_body_timeout = 4000;
    h_ctx_start(&x);
    body = h_user_event(1, &len);

    /* The whole event, but Content-Length promises 90 bytes more. */
    headers = h_strdupf("Content-Type: application/json\r\nX-WEBHOOK-TOKEN: %s\r\n"
                        "Content-Length: %zu\r\n", SECRET, len + 90);
    req = h_request("POST", H_DEFAULT_PATH, headers, body, len, &req_len);
    expect_stalled_body_dropped(&x, "Content-Length body short by 90 bytes", req, req_len);
    free(req);
    free(headers);

    /* The whole event in one chunk, but no last chunk. */
    headers = h_strdupf("Content-Type: application/json\r\nX-WEBHOOK-TOKEN: %s\r\n"
                        "Transfer-Encoding: chunked\r\n", SECRET);
    req = h_request("POST", H_DEFAULT_PATH, headers, NULL, 0, &req_len);
    {
        char *framed = h_strdupf("%.*s%zx\r\n%s\r\n", (int)req_len, req, len, body);

        expect_stalled_body_dropped(&x, "chunked body without its last chunk", framed,
                                    strlen(framed));
        free(framed);
    }
    free(req);
    free(headers);
    free(body);
    h_ctx_finish(&x, NULL, NULL);
}
