/* SPDX-License-Identifier: MIT */
/*
 * Unit tests for body: which request bodies are usable events, and the
 * fields read from them. The rule under test is "accepted here means
 * PostgreSQL's jsonb will take it", so strictness cases matter as much as
 * the happy path. Samples are read from $HOOKD_TEST_SAMPLES, else from
 * samples/ under the current directory (the repo root under make check).
 */
#include <criterion/criterion.h>

#include <dirent.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "body.h"

#define DEPTH 64

/* Classifies len bytes at max_depth and releases whatever was filled in. */
static enum body_class
classify_n(const void *body, size_t len, int max_depth)
{
    struct body_event ev;
    enum body_class c = body_classify(body, len, max_depth, &ev);

    body_event_clear(&ev);
    return c;
}


static enum body_class
classify(const char *text)
{
    return classify_n(text, strlen(text), DEPTH);
}


/* Classifies text expecting BODY_OK; the caller clears *ev. */
static void
classify_ok(const char *text, struct body_event *ev)
{
    enum body_class c = body_classify((const unsigned char *)text, strlen(text), DEPTH, ev);

    cr_assert_eq(c, BODY_OK, "%s -> %d (%s)", text, c, body_class_reason(c));
    cr_assert_not_null(ev->be_root);
    cr_assert_not_null(ev->be_type);
}


/* Builds {"event":"x","v":"<bytes>"} around raw bytes; malloc'd, *len set. */
static unsigned char *
in_string(const char *bytes, size_t n, size_t *len)
{
    static const char head[] = "{\"event\":\"x\",\"v\":\"";
    static const char tail[] = "\"}";
    unsigned char *b = malloc(sizeof(head) + n + sizeof(tail));

    cr_assert_not_null(b);
    memcpy(b, head, sizeof(head) - 1);
    memcpy(b + sizeof(head) - 1, bytes, n);
    memcpy(b + sizeof(head) - 1 + n, tail, sizeof(tail) - 1);
    *len = sizeof(head) - 1 + n + sizeof(tail) - 1;
    return b;
}


static enum body_class
classify_in_string(const char *bytes, size_t n)
{
    size_t len;
    unsigned char *b = in_string(bytes, n, &len);
    enum body_class c = classify_n(b, len, DEPTH);

    free(b);
    return c;
}


/* Nesting: an object whose "v" holds depth-1 arrays; total depth is depth. */
static char *
nested(size_t depth, size_t *len)
{
    static const char head[] = "{\"event\":\"x\",\"v\":";
    size_t n = sizeof(head) - 1 + 2 * (depth - 1) + 1;
    char *b = malloc(n + 1);
    size_t o = sizeof(head) - 1;

    cr_assert_not_null(b);
    memcpy(b, head, o);
    for (size_t i = 1; i < depth; i++) {
        b[o++] = '[';
    }
    for (size_t i = 1; i < depth; i++) {
        b[o++] = ']';
    }
    b[o++] = '}';
    b[o] = '\0';
    *len = o;
    return b;
}


/* ---- samples ------------------------------------------------------------- */

struct sample_want {
    const char *file;
    const char *type;
    const char *chatbot;
    const char *thread;
    bool seen;
};

#define SAMPLE_BOT "365062873485935184"
#define SAMPLE_THREAD "06b3b43c-5651-49a2-b618-d7f24667c1b6"

static struct sample_want sample_wants[] = {
    { "conversation_escalated.json", "CONVERSATION_ESCALATED", SAMPLE_BOT, SAMPLE_THREAD, false },
    { "conversation_escalated_anonymous.json", "CONVERSATION_ESCALATED", SAMPLE_BOT,
      "9a1c77e2-0d3b-4f55-a0c1-2b8e6f0d4410", false },
    { "new_lead.json", "NEW_LEAD", SAMPLE_BOT, SAMPLE_THREAD, false },
    { "new_message_agent.json", "NEW_MESSAGE", SAMPLE_BOT, SAMPLE_THREAD, false },
    { "new_message_ai.json", "NEW_MESSAGE", SAMPLE_BOT, SAMPLE_THREAD, false },
    { "new_message_user.json", "NEW_MESSAGE", SAMPLE_BOT, SAMPLE_THREAD, false },
};

#define N_SAMPLES (sizeof(sample_wants) / sizeof(sample_wants[0]))


/* Reads a whole file into a malloc'd buffer. */
static unsigned char *
read_all(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    unsigned char *b = NULL;
    size_t cap = 0;
    size_t n = 0;
    size_t r;

    cr_assert_not_null(f, "could not open %s", path);
    do {
        if (n == cap) {
            cap = cap ? cap * 2 : 4096;
            b = realloc(b, cap);
            cr_assert_not_null(b);
        }
        r = fread(b + n, 1, cap - n, f);
        n += r;
    } while (r > 0);
    cr_assert_not(ferror(f), "could not read %s", path);
    fclose(f);
    *len = n;
    return b;
}


static void
check_sample(const char *dir, const char *name)
{
    char path[4096];
    struct body_event ev;
    enum body_class c;
    unsigned char *b;
    size_t len;

    snprintf(path, sizeof(path), "%s/%s", dir, name);
    b = read_all(path, &len);
    c = body_classify(b, len, DEPTH, &ev);
    cr_assert_eq(c, BODY_OK, "%s -> %d (%s)", name, c, body_class_reason(c));
    for (size_t i = 0; i < N_SAMPLES; i++) {
        struct sample_want *w = &sample_wants[i];

        if (strcmp(w->file, name) != 0) {
            continue;
        }
        cr_assert_str_eq(ev.be_type, w->type, "%s", name);
        cr_assert_not_null(ev.be_chatbot_id, "%s", name);
        cr_assert_str_eq(ev.be_chatbot_id, w->chatbot, "%s", name);
        cr_assert_not_null(ev.be_thread_id, "%s", name);
        cr_assert_str_eq(ev.be_thread_id, w->thread, "%s", name);
        w->seen = true;
    }
    body_event_clear(&ev);
    free(b);
}


Test(body_samples, every_sample_is_ok_with_its_type_chatbot_and_thread)
{
    const char *dir = getenv("HOOKD_TEST_SAMPLES");
    struct dirent *de;
    DIR *d;

    if (dir == NULL || *dir == '\0') {
        dir = "samples";
    }
    d = opendir(dir);
    cr_assert_not_null(d, "could not open samples dir %s", dir);
    while ((de = readdir(d)) != NULL) {
        size_t n = strlen(de->d_name);

        if (n > 5 && strcmp(de->d_name + n - 5, ".json") == 0) {
            check_sample(dir, de->d_name);
        }
    }
    closedir(d);
    for (size_t i = 0; i < N_SAMPLES; i++) {
        cr_assert(sample_wants[i].seen, "sample %s missing from %s", sample_wants[i].file,
                  dir);
    }
}


/* ---- fields -------------------------------------------------------------- */

Test(body_fields, unknown_event_type_is_ok)
{
    struct body_event ev;

    classify_ok("{\"event\":\"SOMETHING_NEW_2027\",\"data\":{\"x\":1}}", &ev);
    cr_assert_str_eq(ev.be_type, "SOMETHING_NEW_2027");
    body_event_clear(&ev);
}


Test(body_fields, event_type_points_into_root)
{
    struct body_event ev;
    json_object *e;

    classify_ok("{\"event\":\"NEW_LEAD\"}", &ev);
    cr_assert(json_object_object_get_ex(ev.be_root, "event", &e));
    cr_assert_eq(ev.be_type, json_object_get_string(e));
    body_event_clear(&ev);
}


Test(body_fields, data_missing_gives_null_ids)
{
    struct body_event ev;

    classify_ok("{\"event\":\"NEW_LEAD\"}", &ev);
    cr_assert_null(ev.be_chatbot_id);
    cr_assert_null(ev.be_thread_id);
    body_event_clear(&ev);
}


Test(body_fields, data_not_an_object_gives_null_ids)
{
    static const char *const bodies[] = {
        "{\"event\":\"E\",\"data\":null}",
        "{\"event\":\"E\",\"data\":\"chatbotId\"}",
        "{\"event\":\"E\",\"data\":[{\"chatbotId\":\"1\",\"threadId\":\"2\"}]}",
        "{\"event\":\"E\",\"data\":42}",
        "{\"event\":\"E\",\"data\":true}",
        "{\"event\":\"E\",\"data\":{}}",
    };

    for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
        struct body_event ev;

        classify_ok(bodies[i], &ev);
        cr_assert_null(ev.be_chatbot_id, "%s", bodies[i]);
        cr_assert_null(ev.be_thread_id, "%s", bodies[i]);
        body_event_clear(&ev);
    }
}


Test(body_fields, ids_of_other_types_are_null)
{
    static const char *const bodies[] = {
        "{\"event\":\"E\",\"data\":{\"chatbotId\":null,\"threadId\":null}}",
        "{\"event\":\"E\",\"data\":{\"chatbotId\":{\"a\":1},\"threadId\":[\"t\"]}}",
        "{\"event\":\"E\",\"data\":{\"chatbotId\":true,\"threadId\":false}}",
    };

    for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
        struct body_event ev;

        classify_ok(bodies[i], &ev);
        cr_assert_null(ev.be_chatbot_id, "%s", bodies[i]);
        cr_assert_null(ev.be_thread_id, "%s", bodies[i]);
        body_event_clear(&ev);
    }
}


Test(body_fields, ids_at_top_level_are_not_read)
{
    struct body_event ev;

    classify_ok("{\"event\":\"E\",\"chatbotId\":\"1\",\"threadId\":\"2\"}", &ev);
    cr_assert_null(ev.be_chatbot_id);
    cr_assert_null(ev.be_thread_id);
    body_event_clear(&ev);
}


Test(body_fields, numeric_chatbot_id_gives_its_text)
{
    struct body_event ev;

    classify_ok("{\"event\":\"E\",\"data\":{\"chatbotId\":365062873485935184,"
                "\"threadId\":42}}", &ev);
    cr_assert_str_eq(ev.be_chatbot_id, "365062873485935184");
    cr_assert_str_eq(ev.be_thread_id, "42");
    body_event_clear(&ev);

    classify_ok("{\"event\":\"E\",\"data\":{\"chatbotId\":-7,\"threadId\":1.5}}", &ev);
    cr_assert_str_eq(ev.be_chatbot_id, "-7");
    cr_assert_str_eq(ev.be_thread_id, "1.5");
    body_event_clear(&ev);
}


/*
 * json-c clamps numbers past 64 bits to UINT64_MAX / INT64_MIN. A clamped
 * value is not what was sent, so it must not become the id used for routing
 * (NULL instead; the stored columns come from PostgreSQL and are exact),
 * while the largest exact values still come through.
 */
Test(body_fields, numeric_chatbot_id_beyond_64_bits_is_not_clamped)
{
    struct body_event ev;

    classify_ok("{\"event\":\"E\",\"data\":{\"chatbotId\":99999999999999999999,"
                "\"threadId\":-9223372036854775809}}", &ev);
    cr_assert_null(ev.be_chatbot_id);
    cr_assert_null(ev.be_thread_id);
    body_event_clear(&ev);
    classify_ok("{\"event\":\"E\",\"data\":{\"chatbotId\":18446744073709551614,"
                "\"threadId\":-9223372036854775807}}", &ev);
    cr_assert_str_eq(ev.be_chatbot_id, "18446744073709551614");
    cr_assert_str_eq(ev.be_thread_id, "-9223372036854775807");
    body_event_clear(&ev);
}


Test(body_fields, string_ids_with_escapes_are_unescaped)
{
    struct body_event ev;

    classify_ok("{\"event\":\"E\",\"data\":{\"chatbotId\":\"a\\\"b\","
                "\"threadId\":\"\\u00e9\\ud83d\\ude0a\"}}", &ev);
    cr_assert_str_eq(ev.be_chatbot_id, "a\"b");
    cr_assert_str_eq(ev.be_thread_id, "\xc3\xa9\xf0\x9f\x98\x8a");
    body_event_clear(&ev);
}


Test(body_fields, refused_body_leaves_event_empty)
{
    struct body_event ev;

    memset(&ev, 0xa5, sizeof(ev));
    cr_assert_eq(body_classify((const unsigned char *)"{\"x\":1}", 7, DEPTH, &ev),
                 BODY_NO_EVENT);
    cr_assert_null(ev.be_root);
    cr_assert_null(ev.be_type);
    cr_assert_null(ev.be_chatbot_id);
    cr_assert_null(ev.be_thread_id);
    body_event_clear(&ev);
}


Test(body_fields, event_clear_twice_is_safe)
{
    struct body_event ev;

    classify_ok("{\"event\":\"E\",\"data\":{\"chatbotId\":\"c\",\"threadId\":\"t\"}}", &ev);
    body_event_clear(&ev);
    cr_assert_null(ev.be_root);
    cr_assert_null(ev.be_chatbot_id);
    cr_assert_null(ev.be_thread_id);
    body_event_clear(&ev);
}


/* ---- empty and UTF-8 ----------------------------------------------------- */

Test(body_classify, empty_body)
{
    cr_assert_eq(classify_n("", 0, DEPTH), BODY_EMPTY);
    cr_assert_eq(classify_n("{\"event\":\"x\"}", 0, DEPTH), BODY_EMPTY);
}


Test(body_classify, white_space_only_is_refused)
{
    cr_assert_neq(classify(" "), BODY_OK);
    cr_assert_neq(classify("\r\n\t "), BODY_OK);
}


struct bytes {
    const char *name;
    const char *s;
    size_t n;
};

#define BYTES(name, lit) { name, lit, sizeof(lit) - 1 }

static const struct bytes bad_utf8[] = {
    BYTES("lone continuation byte", "\x80"),
    BYTES("lone continuation byte 0xbf", "a\xbf" "b"),
    BYTES("overlong 2-byte slash", "\xc0\xaf"),
    BYTES("overlong 2-byte 0xc1", "\xc1\xbf"),
    BYTES("overlong 3-byte slash", "\xe0\x80\xaf"),
    BYTES("overlong 4-byte slash", "\xf0\x80\x80\xaf"),
    BYTES("encoded surrogate U+D800", "\xed\xa0\x80"),
    BYTES("encoded surrogate U+DFFF", "\xed\xbf\xbf"),
    BYTES("encoded surrogate pair", "\xed\xa0\xbd\xed\xb8\x8a"),
    BYTES("above U+10FFFF", "\xf4\x90\x80\x80"),
    BYTES("lead byte 0xf5", "\xf5\x80\x80\x80"),
    BYTES("byte 0xfe", "\xfe"),
    BYTES("byte 0xff", "\xff"),
    BYTES("2-byte lead then ASCII", "\xc3" "a"),
    BYTES("3-byte cut in the middle", "\xe2\x82" "a"),
    BYTES("4-byte with bad last byte", "\xf0\x9f\x98" "a"),
};

#define N_BAD_UTF8 (sizeof(bad_utf8) / sizeof(bad_utf8[0]))

static const struct bytes good_utf8[] = {
    BYTES("ASCII", "a"),
    BYTES("U+0080", "\xc2\x80"),
    BYTES("U+00E9", "\xc3\xa9"),
    BYTES("U+07FF", "\xdf\xbf"),
    BYTES("U+0800", "\xe0\xa0\x80"),
    BYTES("U+20AC", "\xe2\x82\xac"),
    BYTES("U+D7FF", "\xed\x9f\xbf"),
    BYTES("U+E000", "\xee\x80\x80"),
    BYTES("U+FFFD", "\xef\xbf\xbd"),
    BYTES("U+FFFF", "\xef\xbf\xbf"),
    BYTES("U+10000", "\xf0\x90\x80\x80"),
    BYTES("U+1F60A", "\xf0\x9f\x98\x8a"),
    BYTES("U+10FFFF", "\xf4\x8f\xbf\xbf"),
    BYTES("mixed", "a\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x8a" "z"),
};

#define N_GOOD_UTF8 (sizeof(good_utf8) / sizeof(good_utf8[0]))


Test(body_utf8_valid, invalid_sequences_refused)
{
    for (size_t i = 0; i < N_BAD_UTF8; i++) {
        cr_assert_not(body_utf8_valid((const unsigned char *)bad_utf8[i].s, bad_utf8[i].n),
                      "%s", bad_utf8[i].name);
    }
}


Test(body_utf8_valid, one_to_four_byte_sequences_accepted)
{
    for (size_t i = 0; i < N_GOOD_UTF8; i++) {
        cr_assert(body_utf8_valid((const unsigned char *)good_utf8[i].s, good_utf8[i].n),
                  "%s", good_utf8[i].name);
    }
    cr_assert(body_utf8_valid((const unsigned char *)"", 0));
}


Test(body_utf8_valid, truncated_sequence_at_the_end_refused)
{
    static const char four[] = "ab\xf0\x9f\x98\x8a";

    /* Every proper prefix of the 4-byte sequence is refused. */
    for (size_t n = 3; n < sizeof(four) - 1; n++) {
        cr_assert_not(body_utf8_valid((const unsigned char *)four, n), "cut at %zu", n);
    }
    cr_assert(body_utf8_valid((const unsigned char *)four, sizeof(four) - 1));
    cr_assert_not(body_utf8_valid((const unsigned char *)"\xc3", 1));
    cr_assert_not(body_utf8_valid((const unsigned char *)"\xe2\x82", 2));
}


Test(body_utf8_valid, length_is_respected_not_nul)
{
    /* A valid prefix followed by garbage the length excludes. */
    cr_assert(body_utf8_valid((const unsigned char *)"ab\xff", 2));
    cr_assert(body_utf8_valid((const unsigned char *)"a\0b", 3));
}


Test(body_classify, invalid_utf8_in_a_string_refused)
{
    for (size_t i = 0; i < N_BAD_UTF8; i++) {
        enum body_class c = classify_in_string(bad_utf8[i].s, bad_utf8[i].n);

        cr_assert_eq(c, BODY_INVALID_UTF8, "%s -> %d", bad_utf8[i].name, c);
    }
}


Test(body_classify, valid_utf8_in_a_string_accepted)
{
    for (size_t i = 0; i < N_GOOD_UTF8; i++) {
        enum body_class c = classify_in_string(good_utf8[i].s, good_utf8[i].n);

        cr_assert_eq(c, BODY_OK, "%s -> %d", good_utf8[i].name, c);
    }
}


Test(body_classify, truncated_4_byte_sequence_at_end_of_body_refused)
{
    static const char b[] = "{\"event\":\"x\"}\xf0\x9f\x98";

    cr_assert_eq(classify_n(b, sizeof(b) - 1, DEPTH), BODY_INVALID_UTF8);
}


Test(body_classify, invalid_utf8_in_a_key_refused)
{
    static const char b[] = "{\"event\":\"x\",\"k\xc0\xaf\":1}";

    cr_assert_eq(classify_n(b, sizeof(b) - 1, DEPTH), BODY_INVALID_UTF8);
}


Test(body_classify, utf8_event_type_kept)
{
    struct body_event ev;

    classify_ok("{\"event\":\"\xc3\xa9v\xc3\xa9nement\"}", &ev);
    cr_assert_str_eq(ev.be_type, "\xc3\xa9v\xc3\xa9nement");
    body_event_clear(&ev);
}


/* ---- JSON shape ---------------------------------------------------------- */

Test(body_classify, not_json_refused)
{
    static const char *const bodies[] = {
        "hello", "{", "}", "{\"event\":\"x\"", "{\"event\":\"x}", "{\"event\" \"x\"}",
        "{event:\"x\"}", "<xml/>", "event=x", "{\"event\":\"x\",\"v\":nul}",
        "{\"event\":\"x\",\"v\":True}",
    };

    for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
        cr_assert_eq(classify(bodies[i]), BODY_INVALID_JSON, "%s", bodies[i]);
    }
}


Test(body_classify, trailing_garbage_after_object_refused)
{
    static const char *const bodies[] = {
        "{\"event\":\"x\"} x", "{\"event\":\"x\"}x", "{\"event\":\"x\"}{}",
        "{\"event\":\"x\"}{\"event\":\"y\"}", "{\"event\":\"x\"},", "{\"event\":\"x\"}]",
        "{\"event\":\"x\"} 1", "{\"event\":\"x\"}\r\n.",
    };

    for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
        cr_assert_eq(classify(bodies[i]), BODY_INVALID_JSON, "%s", bodies[i]);
    }
}


Test(body_classify, surrounding_white_space_and_crlf_accepted)
{
    static const char *const bodies[] = {
        "{\"event\":\"x\"} ", "{\"event\":\"x\"}\n", "{\"event\":\"x\"}\r\n",
        "{\"event\":\"x\"} \t\r\n \r\n", " \r\n\t{\"event\":\"x\"}",
        "{ \"event\" :\n\t\"x\" }",
    };

    for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
        cr_assert_eq(classify(bodies[i]), BODY_OK, "%s", bodies[i]);
    }
}


Test(body_classify, array_string_number_are_not_objects)
{
    static const char *const bodies[] = {
        "[]", "[{\"event\":\"x\"}]", "\"event\"", "\"{\\\"event\\\":\\\"x\\\"}\"",
        "42 ", "[1, 2]\r\n",
    };

    for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
        cr_assert_eq(classify(bodies[i]), BODY_NOT_OBJECT, "%s", bodies[i]);
    }
}


/* A number that is the whole body has no delimiter after it. */
Test(body_classify, bare_number_body_is_not_an_object)
{
    cr_assert_eq(classify("42"), BODY_NOT_OBJECT);
    cr_assert_eq(classify("-1.5e3"), BODY_NOT_OBJECT);
}


Test(body_classify, bare_literals_refused)
{
    cr_assert_neq(classify("true"), BODY_OK);
    cr_assert_neq(classify("null"), BODY_OK);
    cr_assert_neq(classify("false "), BODY_OK);
}


Test(body_classify, missing_event_refused)
{
    cr_assert_eq(classify("{}"), BODY_NO_EVENT);
    cr_assert_eq(classify("{\"type\":\"NEW_LEAD\"}"), BODY_NO_EVENT);
    cr_assert_eq(classify("{\"Event\":\"NEW_LEAD\"}"), BODY_NO_EVENT);
    cr_assert_eq(classify("{\"data\":{\"event\":\"NEW_LEAD\"}}"), BODY_NO_EVENT);
}


Test(body_classify, event_not_a_string_refused)
{
    static const char *const bodies[] = {
        "{\"event\":1}", "{\"event\":null}", "{\"event\":true}", "{\"event\":[\"x\"]}",
        "{\"event\":{\"type\":\"x\"}}",
    };

    for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
        cr_assert_eq(classify(bodies[i]), BODY_NO_EVENT, "%s", bodies[i]);
    }
}


Test(body_classify, empty_event_refused)
{
    cr_assert_eq(classify("{\"event\":\"\"}"), BODY_NO_EVENT);
}


/* ---- depth --------------------------------------------------------------- */

Test(body_classify, nesting_up_to_max_depth_accepted)
{
    size_t len;
    char *b = nested(DEPTH, &len);

    cr_assert_eq(classify_n(b, len, DEPTH), BODY_OK);
    free(b);
    b = nested(4, &len);
    cr_assert_eq(classify_n(b, len, 4), BODY_OK);
    free(b);
}


Test(body_classify, nesting_deeper_than_max_depth_too_deep)
{
    size_t len;
    char *b = nested(DEPTH + 1, &len);

    cr_assert_eq(classify_n(b, len, DEPTH), BODY_TOO_DEEP);
    free(b);
    b = nested(5, &len);
    cr_assert_eq(classify_n(b, len, 4), BODY_TOO_DEEP);
    free(b);
}


Test(body_classify, nested_objects_count_like_arrays)
{
    const char *four = "{\"event\":\"x\",\"a\":{\"b\":{\"c\":{}}}}";
    const char *five = "{\"event\":\"x\",\"a\":{\"b\":{\"c\":{\"d\":[]}}}}";

    cr_assert_eq(classify_n(four, strlen(four), 4), BODY_OK);
    cr_assert_eq(classify_n(five, strlen(five), 4), BODY_TOO_DEEP);
}


Test(body_classify, hundred_thousand_levels_do_not_crash)
{
    size_t len;
    char *b = nested(100000, &len);
    size_t open_len = sizeof("{\"event\":\"x\",\"v\":") - 1 + 99999;

    cr_assert_eq(classify_n(b, len, DEPTH), BODY_TOO_DEEP);
    cr_assert_eq(classify_n(b, len, 1000), BODY_TOO_DEEP);
    /* Only the opening half: never closed, still refused as too deep. */
    cr_assert_eq(classify_n(b, open_len, DEPTH), BODY_TOO_DEEP);
    free(b);

    /* Bare arrays, not even an object around them. */
    b = malloc(100000);
    cr_assert_not_null(b);
    memset(b, '[', 100000);
    cr_assert_eq(classify_n(b, 100000, DEPTH), BODY_TOO_DEEP);
    free(b);
}


/* ---- escapes and raw bytes ----------------------------------------------- */

Test(body_classify, escaped_nul_refused)
{
    cr_assert_eq(classify("{\"event\":\"x\",\"v\":\"\\u0000\"}"), BODY_UNSUPPORTED_ESCAPE);
    cr_assert_eq(classify("{\"event\":\"x\",\"v\":\"ab\\u0000cd\"}"), BODY_UNSUPPORTED_ESCAPE);
    cr_assert_eq(classify("{\"event\":\"x\",\"\\u0000\":1}"), BODY_UNSUPPORTED_ESCAPE);
    cr_assert_eq(classify("{\"event\":\"\\u0000\"}"), BODY_UNSUPPORTED_ESCAPE);
}


Test(body_classify, escaped_backslash_then_u0000_text_accepted)
{
    struct body_event ev;

    /* JSON text "\\u0000": a backslash, then the six characters u0000. */
    classify_ok("{\"event\":\"x\",\"v\":\"\\\\u0000\"}", &ev);
    body_event_clear(&ev);
    classify_ok("{\"event\":\"\\\\u0000\"}", &ev);
    cr_assert_str_eq(ev.be_type, "\\u0000");
    body_event_clear(&ev);
}


Test(body_classify, escaped_backslash_then_real_nul_escape_refused)
{
    /* "\\\u0000": an escaped backslash, then a genuine \u0000. */
    cr_assert_eq(classify("{\"event\":\"x\",\"v\":\"\\\\\\u0000\"}"), BODY_UNSUPPORTED_ESCAPE);
}


Test(body_classify, escaped_quote_does_not_end_the_string)
{
    /* The scanner must still be inside the string when it meets \u0000. */
    cr_assert_eq(classify("{\"event\":\"x\",\"v\":\"a\\\"b\\u0000\"}"),
                 BODY_UNSUPPORTED_ESCAPE);
}


Test(body_classify, lone_surrogate_escapes_refused)
{
    static const char *const bodies[] = {
        "{\"event\":\"x\",\"v\":\"\\ud83d\"}",
        "{\"event\":\"x\",\"v\":\"\\ude0a\"}",
        "{\"event\":\"x\",\"v\":\"\\uD83D\"}",
        "{\"event\":\"x\",\"v\":\"\\ud83dx\"}",
        "{\"event\":\"x\",\"v\":\"\\ud83d\\u0041\"}",
        "{\"event\":\"x\",\"v\":\"\\ud83d\\ud83d\"}",
        "{\"event\":\"x\",\"v\":\"\\ude0a\\ud83d\"}",
        "{\"event\":\"x\",\"v\":\"\\ud83d\\n\"}",
        "{\"event\":\"\\ud83d\"}",
    };

    for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
        cr_assert_eq(classify(bodies[i]), BODY_UNSUPPORTED_ESCAPE, "%s", bodies[i]);
    }
}


Test(body_classify, surrogate_pair_escape_accepted)
{
    struct body_event ev;

    classify_ok("{\"event\":\"x\",\"v\":\"\\ud83d\\ude0a\"}", &ev);
    body_event_clear(&ev);
    classify_ok("{\"event\":\"\\uD83D\\uDE0A\"}", &ev);
    cr_assert_str_eq(ev.be_type, "\xf0\x9f\x98\x8a");
    body_event_clear(&ev);
}


Test(body_classify, other_unicode_escapes_accepted)
{
    struct body_event ev;

    classify_ok("{\"event\":\"\\u0041\\u00e9\\u20ac\\uffff\\u0001\"}", &ev);
    cr_assert_str_eq(ev.be_type, "A\xc3\xa9\xe2\x82\xac\xef\xbf\xbf\x01");
    body_event_clear(&ev);
}


Test(body_classify, raw_control_byte_in_string_refused)
{
    static const char controls[] = { 0x01, '\n', '\r', '\t', 0x1f, 0x08 };

    for (size_t i = 0; i < sizeof(controls); i++) {
        cr_assert_eq(classify_in_string(&controls[i], 1), BODY_INVALID_JSON,
                     "byte 0x%02x", (unsigned)controls[i]);
    }
}


Test(body_classify, raw_del_in_string_accepted)
{
    cr_assert_eq(classify_in_string("\x7f", 1), BODY_OK);
}


Test(body_classify, raw_control_byte_between_tokens_refused)
{
    cr_assert_eq(classify("{\"event\":\"x\"\x01}"), BODY_INVALID_JSON);
    cr_assert_eq(classify("{\"event\":\"x\"}\x01"), BODY_INVALID_JSON);
}


Test(body_classify, nul_byte_anywhere_refused)
{
    static const char ok[] = "{\"event\":\"x\",\"v\":\"ab\"}";
    char b[sizeof(ok) + 1];

    /* Insert one NUL before each position, and after the end. */
    for (size_t at = 0; at < sizeof(ok); at++) {
        memcpy(b, ok, at);
        b[at] = '\0';
        memcpy(b + at + 1, ok + at, sizeof(ok) - 1 - at);
        cr_assert_eq(classify_n(b, sizeof(ok), DEPTH), BODY_INVALID_JSON, "NUL at %zu", at);
    }
}


Test(body_classify, nan_and_infinity_refused)
{
    static const char *const bodies[] = {
        "{\"event\":\"x\",\"v\":NaN}",
        "{\"event\":\"x\",\"v\":Infinity}",
        "{\"event\":\"x\",\"v\":-Infinity}",
        "{\"event\":\"x\",\"v\":nan}",
        "{\"event\":\"x\",\"v\":[NaN]}",
    };

    for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
        cr_assert_eq(classify(bodies[i]), BODY_INVALID_JSON, "%s", bodies[i]);
    }
}


Test(body_classify, single_quotes_refused)
{
    cr_assert_eq(classify("{'event':'x'}"), BODY_INVALID_JSON);
    cr_assert_eq(classify("{\"event\":'x'}"), BODY_INVALID_JSON);
}


Test(body_classify, trailing_commas_refused)
{
    cr_assert_eq(classify("{\"event\":\"x\",}"), BODY_INVALID_JSON);
    cr_assert_eq(classify("{\"event\":\"x\",\"v\":[1,]}"), BODY_INVALID_JSON);
    cr_assert_eq(classify("{\"event\":\"x\",,\"v\":1}"), BODY_INVALID_JSON);
}


Test(body_classify, lenient_numbers_and_comments_refused)
{
    static const char *const bodies[] = {
        "{\"event\":\"x\",\"v\":01}",
        "{\"event\":\"x\",\"v\":+1}",
        "{\"event\":\"x\",\"v\":.5}",
        "{\"event\":\"x\",\"v\":5.}",
        "{\"event\":\"x\",\"v\":1e}",
        "{\"event\":\"x\",\"v\":0x10}",
        "{\"event\":\"x\" /* c */}",
        "{\"event\":\"x\"} // c",
        "{\"event\":\"x\",\"v\":\"\\x41\"}",
        "{\"event\":\"x\",\"v\":\"\\u12\"}",
        "\xef\xbb\xbf{\"event\":\"x\"}",
    };

    for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
        cr_assert_eq(classify(bodies[i]), BODY_INVALID_JSON, "%s", bodies[i]);
    }
}


/* ---- reasons ------------------------------------------------------------- */

Test(body_class_reason, every_class_has_a_json_safe_reason)
{
    for (int c = BODY_OK; c <= BODY_NO_EVENT; c++) {
        const char *r = body_class_reason((enum body_class)c);

        cr_assert_not_null(r, "class %d", c);
        cr_assert_gt(strlen(r), 0, "class %d", c);
        for (const char *p = r; *p != '\0'; p++) {
            cr_assert(*p != '"' && *p != '\\' && (unsigned char)*p >= 0x20
                      && (unsigned char)*p < 0x7f, "class %d reason \"%s\"", c, r);
        }
    }
}


Test(body_class_reason, refusal_reasons_are_distinct)
{
    for (int a = BODY_EMPTY; a <= BODY_NO_EVENT; a++) {
        for (int b = a + 1; b <= BODY_NO_EVENT; b++) {
            cr_assert_str_neq(body_class_reason((enum body_class)a),
                              body_class_reason((enum body_class)b), "%d vs %d", a, b);
        }
    }
}
