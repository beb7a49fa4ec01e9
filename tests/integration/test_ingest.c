/* SPDX-License-Identifier: MIT */
/*
 * Ingest: genuine events are stored exactly once, byte for byte, with the
 * right columns (issue 2, cases C01, C02, C07).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>

#include "support/harness.h"

#define SECRET "ingest-secret-5f1c2a9e7d"
#define THREAD_A "06b3b43c-5651-49a2-b618-d7f24667c1b6"
#define THREAD_B "9a1c77e2-0d3b-4f55-a0c1-2b8e6f0d4410"
#define CHATBOT "365062873485935184"

TestSuite(ingest, .fini = h_suite_fini, .timeout = 60);

struct sample_row {
    const char *file;
    const char *event_type;
    const char *thread_id;
};

static const struct sample_row samples[] = {
    {"conversation_escalated.json", "CONVERSATION_ESCALATED", THREAD_A},
    {"conversation_escalated_anonymous.json", "CONVERSATION_ESCALATED", THREAD_B},
    {"new_lead.json", "NEW_LEAD", THREAD_A},
    {"new_message_agent.json", "NEW_MESSAGE", THREAD_A},
    {"new_message_ai.json", "NEW_MESSAGE", THREAD_A},
    {"new_message_user.json", "NEW_MESSAGE", THREAD_A},
};


static void
start(struct h_ctx *x, const char *tag)
{
    h_ctx_init(x, tag);
    x->hx_cfg.hc_secrets[0] = SECRET;
    h_ctx_start(x);
}


/* A column of the event whose raw body is body (malloc'd or NULL). */
static char *
column_of(struct h_ctx *x, const char *column, const void *body, size_t len)
{
    char hex[65];

    h_sha256_hex(body, len, hex);
    return h_sql_value(x->hx_db.hd_conninfo, "SELECT %s FROM hookd.events WHERE "
                       "encode(sha256(convert_to(raw_body, 'UTF8')), 'hex') = '%s'",
                       column, hex);
}


static void
expect_column(struct h_ctx *x, const void *body, size_t len, const char *column,
              const char *want)
{
    char *got = column_of(x, column, body, len);

    cr_expect(got != NULL && strcmp(got, want) == 0, "%s: got \"%s\", want \"%s\"", column,
              got ? got : "(null)", want);
    free(got);
}


Test(ingest, every_sample_is_stored_once_byte_exact_with_its_columns)
{
    struct h_ctx x;
    size_t n = sizeof(samples) / sizeof(samples[0]);

    start(&x, "samples");
    for (size_t i = 0; i < n; i++) {
        struct h_resp r;
        size_t len;
        char *body = h_sample(samples[i].file, &len);
        char want_len[24];

        h_post_signed(x.hx_port, H_DEFAULT_PATH, SECRET, body, len, &r);
        h_assert_status(&r, 200, samples[i].file);
        cr_expect(strstr(r.hr_body, "\"status\":\"stored\"") != NULL, "%s: body %s",
                  samples[i].file, r.hr_body);
        cr_expect(strstr(r.hr_head, "application/json") != NULL);
        h_resp_free(&r);

        cr_expect_eq(h_events_with_body(&x, body, len), 1, "%s not stored byte-exact once",
                     samples[i].file);
        expect_column(&x, body, len, "event_type", samples[i].event_type);
        expect_column(&x, body, len, "chatbot_id", CHATBOT);
        expect_column(&x, body, len, "thread_id", samples[i].thread_id);
        expect_column(&x, body, len, "endpoint", H_DEFAULT_PATH);
        expect_column(&x, body, len, "host(remote_addr)", "127.0.0.1");
        snprintf(want_len, sizeof(want_len), "%zu", len);
        expect_column(&x, body, len, "octet_length(raw_body)::text", want_len);
        free(body);
    }
    cr_expect_eq(h_events(&x), (long)n);
    cr_expect_eq(h_quarantined(&x), 0);
    h_ctx_finish(&x, NULL, NULL);
}


/* Asserts every log line that mentions "duplicate" is at info or debug. */
static void
expect_duplicates_logged_at_info(struct h_ctx *x)
{
    char *log = h_daemon_log(&x->hx_daemon);
    const char *p = log;
    int seen = 0;

    while (*p != '\0') {
        const char *end = strchr(p, '\n');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        char level[16];

        if (memmem(p, len, "duplicate", 9) != NULL) {
            h_log_line_level(p, len, level, sizeof(level));
            cr_expect(strcmp(level, "info") == 0 || strcmp(level, "debug") == 0,
                      "duplicate logged at %s: %.*s", level, (int)len, p);
            seen++;
        }
        p += len + (end ? 1 : 0);
    }
    cr_expect(seen >= 1, "no log line mentions the duplicate");
    free(log);
}


Test(ingest, redelivery_answers_200_duplicate_and_keeps_one_row)
{
    struct h_ctx x;
    struct h_resp r;
    size_t len;
    char *body;
    char *first_id;

    start(&x, "dup");
    body = h_sample("new_message_user.json", &len);

    h_post_signed(x.hx_port, H_DEFAULT_PATH, SECRET, body, len, &r);
    h_assert_status(&r, 200, "first delivery");
    cr_assert(strstr(r.hr_body, "\"status\":\"stored\"") != NULL, "body %s", r.hr_body);
    first_id = strstr(r.hr_body, "\"id\":");
    first_id = first_id ? strdup(first_id) : NULL;
    h_resp_free(&r);

    for (int i = 0; i < 2; i++) {
        h_post_signed(x.hx_port, H_DEFAULT_PATH, SECRET, body, len, &r);
        h_assert_status(&r, 200, "redelivery");
        cr_expect(strstr(r.hr_body, "\"status\":\"duplicate\"") != NULL, "body %s", r.hr_body);
        if (first_id != NULL && strstr(r.hr_body, "\"id\":") != NULL) {
            cr_expect(strcmp(strstr(r.hr_body, "\"id\":"), first_id) == 0,
                      "duplicate names another id: %s vs %s", r.hr_body, first_id);
        }
        h_resp_free(&r);
    }
    cr_expect_eq(h_events(&x), 1);
    cr_expect_eq(h_events_with_body(&x, body, len), 1);
    expect_duplicates_logged_at_info(&x);
    free(first_id);
    free(body);
    h_ctx_finish(&x, NULL, NULL);
}


Test(ingest, keep_alive_connection_serves_a_second_request)
{
    struct h_ctx x;
    struct h_conn c;
    struct h_resp r;
    const char *files[] = {"new_message_user.json", "new_message_ai.json"};

    start(&x, "keepalive");
    cr_assert_eq(h_conn_open(&c, x.hx_port, 5000), 0);
    for (int i = 0; i < 2; i++) {
        size_t len;
        size_t req_len;
        char *body = h_sample(files[i], &len);
        char *headers = h_signed_headers(SECRET, body, len);
        char *req = h_request("POST", H_DEFAULT_PATH, headers, body, len, &req_len);

        cr_assert_eq(h_conn_send(&c, req, req_len, 5000), 0, "send %d failed", i);
        cr_assert_eq(h_conn_read_response(&c, &r, 10000), 0, "no response %d", i);
        h_assert_status(&r, 200, files[i]);
        h_resp_free(&r);
        cr_expect_eq(h_events_with_body(&x, body, len), 1);
        free(req);
        free(headers);
        free(body);
    }
    h_conn_close(&c);
    h_ctx_finish(&x, NULL, NULL);
}


/*
 * C01 B: new_message_ai.json with the same meaning but other bytes: CRLF and
 * 2-space indentation, "data" before "event", "\/" in the URLs, one e-acute
 * written as \u00e9, and the final LF.
 */
static const char c01_b[] =
    "{\r\n"
    "  \"data\": {\r\n"
    "    \"chatbotId\": \"365062873485935184\",\r\n"
    "    \"threadId\": \"06b3b43c-5651-49a2-b618-d7f24667c1b6\",\r\n"
    "    \"messageId\": \"376290410396385874\",\r\n"
    "    \"gptModel\": \"gpt-4o-mini\",\r\n"
    "    \"sources\": [\r\n"
    "      \"https:\\/\\/shop.example.com\\/help\\/shipping\",\r\n"
    "      \"https:\\/\\/shop.example.com\\/help\\/orders\"\r\n"
    "    ],\r\n"
    "    \"question\": null,\r\n"
    "    \"answer\": \"Yes. Open the order page, choose \\\"Edit delivery\\\" and enter "
    "the new address before the parcel ships. Orders already handed to the courier "
    "can't be changed. Merci, l'\\u00e9quipe.\",\r\n"
    "    \"messageType\": \"NORMAL_MESSAGE\",\r\n"
    "    \"agentId\": null,\r\n"
    "    \"iconUrl\": null,\r\n"
    "    \"agentName\": null,\r\n"
    "    \"systemMessageType\": null,\r\n"
    "    \"createdAt\": \"2026-11-30T09:14:04.907Z\"\r\n"
    "  },\r\n"
    "  \"event\": \"NEW_MESSAGE\"\r\n"
    "}\n";

/* C01 B': the compact canonical re-serialisation of B. */
static const char c01_b_canonical[] =
    "{\"data\":{\"chatbotId\":\"365062873485935184\","
    "\"threadId\":\"06b3b43c-5651-49a2-b618-d7f24667c1b6\","
    "\"messageId\":\"376290410396385874\",\"gptModel\":\"gpt-4o-mini\","
    "\"sources\":[\"https://shop.example.com/help/shipping\","
    "\"https://shop.example.com/help/orders\"],\"question\":null,"
    "\"answer\":\"Yes. Open the order page, choose \\\"Edit delivery\\\" and enter "
    "the new address before the parcel ships. Orders already handed to the courier "
    "can't be changed. Merci, l'\xc3\xa9" "quipe.\","
    "\"messageType\":\"NORMAL_MESSAGE\",\"agentId\":null,\"iconUrl\":null,"
    "\"agentName\":null,\"systemMessageType\":null,"
    "\"createdAt\":\"2026-11-30T09:14:04.907Z\"},\"event\":\"NEW_MESSAGE\"}";


Test(ingest, signature_covers_the_exact_bytes_not_a_reserialisation)
{
    struct h_ctx x;
    struct h_resp r;
    size_t blen = strlen(c01_b);
    char *b_headers;
    char *answer;
    size_t ulen;
    char *user;

    start(&x, "c01");

    /* 1. B signed over its own bytes: stored byte-exact, decoded right. */
    b_headers = h_signed_headers(SECRET, c01_b, blen);
    h_post(x.hx_port, H_DEFAULT_PATH, b_headers, c01_b, blen, &r);
    h_assert_status(&r, 200, "reformatted body B");
    h_resp_free(&r);
    cr_expect_eq(h_events_with_body(&x, c01_b, blen), 1, "B not stored byte-exact");
    answer = column_of(&x, "payload->'data'->>'answer'", c01_b, blen);
    cr_expect(answer != NULL && strstr(answer, "Merci, l'\xc3\xa9quipe.") != NULL,
              "answer decoded as %s", answer ? answer : "(null)");
    free(answer);
    answer = column_of(&x, "payload->'data'->'sources'->>0", c01_b, blen);
    cr_expect(answer != NULL && strcmp(answer, "https://shop.example.com/help/shipping") == 0,
              "sources[0] decoded as %s", answer ? answer : "(null)");
    free(answer);
    expect_column(&x, c01_b, blen, "event_type", "NEW_MESSAGE");

    /* 2. B' with B's signature: refused, nothing stored. */
    h_post(x.hx_port, H_DEFAULT_PATH, b_headers, c01_b_canonical, strlen(c01_b_canonical),
           &r);
    h_assert_status(&r, 401, "canonical B' with B's signature");
    h_resp_free(&r);
    cr_expect_eq(h_events(&x), 1);

    /* 3. S_user sent whole but signed without its final LF: refused. */
    user = h_sample("new_message_user.json", &ulen);
    cr_assert(ulen == 410 && user[ulen - 1] == '\n');
    {
        char *headers = h_signed_headers(SECRET, user, ulen - 1);

        h_post(x.hx_port, H_DEFAULT_PATH, headers, user, ulen, &r);
        h_assert_status(&r, 401, "S_user signed without its final LF");
        h_resp_free(&r);
        free(headers);
    }
    cr_expect_eq(h_events(&x), 1);
    cr_expect_eq(h_quarantined(&x), 0);
    free(user);
    free(b_headers);
    h_ctx_finish(&x, NULL, NULL);
}


#define C02_TEXT "K\xc3\xb6nnen Sie helfen? \xf0\x9f\x98\x8a \xe2\x80\x94 " \
                 "\xe8\xae\xa2\xe5\x8d\x95 10482"
#define C02_ESCAPED "K\\u00f6nnen Sie helfen? \\ud83d\\ude0a \\u2014 \\u8ba2\\u5355 10482"

/* Code points in a UTF-8 string. */
static long
utf8_chars(const char *s)
{
    long n = 0;

    for (; *s != '\0'; s++) {
        n += ((unsigned char)*s & 0xc0) != 0x80;
    }
    return n;
}


Test(ingest, utf8_and_escaped_question_are_stored_exact_and_decode_the_same)
{
    struct h_ctx x;
    const char *variants[] = {C02_TEXT, C02_ESCAPED};
    char *bodies[2];
    const char *forbidden[] = {"K\xc3\xb6nnen", "helfen", NULL};

    start(&x, "c02");
    for (int i = 0; i < 2; i++) {
        struct h_resp r;
        size_t len;
        char *base = h_user_event(100 + (unsigned)i, &len);
        char *q = h_strdupf("\"question\":\"%s\"", variants[i]);

        bodies[i] = h_replace(base, "\"question\":\"" H_SAMPLE_QUESTION "\"", q);
        cr_assert(strcmp(bodies[i], base) != 0);
        len = strlen(bodies[i]);
        h_post_signed(x.hx_port, H_DEFAULT_PATH, SECRET, bodies[i], len, &r);
        h_assert_status(&r, 200, i == 0 ? "raw UTF-8 question" : "escaped question");
        h_resp_free(&r);
        cr_expect_eq(h_events_with_body(&x, bodies[i], len), 1, "variant %d not byte-exact",
                     i);
        free(q);
        free(base);
    }
    for (int i = 0; i < 2; i++) {
        char *q = column_of(&x, "payload->'data'->>'question'", bodies[i], strlen(bodies[i]));
        char *n = column_of(&x, "char_length(payload->'data'->>'question')::text", bodies[i],
                            strlen(bodies[i]));

        cr_expect(q != NULL && strcmp(q, C02_TEXT) == 0, "variant %d decodes to %s", i,
                  q ? q : "(null)");
        cr_expect(n != NULL && atol(n) == utf8_chars(C02_TEXT), "variant %d has %s chars", i,
                  n ? n : "(null)");
        free(q);
        free(n);
        free(bodies[i]);
    }
    cr_expect_eq(h_events(&x), 2);
    h_ctx_finish(&x, forbidden, NULL);
}


Test(ingest, unknown_event_type_is_stored)
{
    struct h_ctx x;
    struct h_resp r;
    size_t len;
    char *base;
    char *body;

    start(&x, "unknown");
    base = h_sample("new_message_user.json", &len);
    body = h_replace(base, "\"event\":\"NEW_MESSAGE\"", "\"event\":\"THREAD_ARCHIVED\"");
    len = strlen(body);
    h_post_signed(x.hx_port, H_DEFAULT_PATH, SECRET, body, len, &r);
    h_assert_status(&r, 200, "unknown event type");
    h_resp_free(&r);
    cr_expect_eq(h_events_with_body(&x, body, len), 1);
    expect_column(&x, body, len, "event_type", "THREAD_ARCHIVED");
    free(base);
    free(body);
    h_ctx_finish(&x, NULL, NULL);
}
