/* SPDX-License-Identifier: MIT */
/*
 * Unit tests for log: level names and log_value, the function that makes
 * client-supplied text safe to put in a key=value log field.
 */
#include <criterion/criterion.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

/* ---- log_parse_level ----------------------------------------------------- */

Test(log_parse_level, every_documented_name_parses)
{
    static const struct {
        const char *name;
        enum log_level level;
    } names[] = {
        { "debug", LOG_LVL_DEBUG },
        { "info", LOG_LVL_INFO },
        { "notice", LOG_LVL_NOTICE },
        { "warning", LOG_LVL_WARNING },
        { "error", LOG_LVL_ERROR },
    };

    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        enum log_level got = (enum log_level)0;

        cr_assert(log_parse_level(names[i].name, &got), "%s", names[i].name);
        cr_assert_eq(got, names[i].level, "%s", names[i].name);
    }
}


Test(log_parse_level, names_are_case_insensitive)
{
    enum log_level got = (enum log_level)0;

    cr_assert(log_parse_level("DEBUG", &got));
    cr_assert_eq(got, LOG_LVL_DEBUG);
    cr_assert(log_parse_level("Warning", &got));
    cr_assert_eq(got, LOG_LVL_WARNING);
    cr_assert(log_parse_level("eRRoR", &got));
    cr_assert_eq(got, LOG_LVL_ERROR);
}


Test(log_parse_level, unknown_names_refused_and_output_untouched)
{
    static const char *const bad[] = {
        "loud", "", "warn", "err", "info ", " info", "debug2", "critical",
    };

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        enum log_level got = (enum log_level)42;

        cr_assert_not(log_parse_level(bad[i], &got), "\"%s\"", bad[i]);
        cr_assert_eq((int)got, 42, "\"%s\" wrote the output", bad[i]);
    }
}


/* ---- log_value ----------------------------------------------------------- */

Test(log_value, printable_ascii_kept)
{
    char buf[64];

    cr_assert_str_eq(log_value("NEW_MESSAGE-1.2/x_y:z", 40, buf, sizeof(buf)),
                     "NEW_MESSAGE-1.2/x_y:z");
}


Test(log_value, returns_buf)
{
    char buf[16];

    cr_assert_eq(log_value("abc", 10, buf, sizeof(buf)), buf);
}


Test(log_value, spaces_quotes_backslash_equals_masked)
{
    char buf[64];

    cr_assert_str_eq(log_value("a b\"c\\d=e", 40, buf, sizeof(buf)), "a?b?c?d?e");
}


Test(log_value, control_bytes_masked)
{
    char buf[64];

    cr_assert_str_eq(log_value("a\nb\rc\td\x01" "e\x1f" "f\x7f", 40, buf, sizeof(buf)),
                     "a?b?c?d?e?f?");
}


Test(log_value, non_ascii_masked_per_byte)
{
    char buf[64];

    /* "é" is two bytes and "😊" four: each byte becomes one '?'. */
    cr_assert_str_eq(log_value("caf\xc3\xa9 \xf0\x9f\x98\x8a", 40, buf, sizeof(buf)),
                     "caf???????");
    cr_assert_str_eq(log_value("\xff\x80", 40, buf, sizeof(buf)), "??");
}


Test(log_value, forged_log_fields_cannot_be_injected)
{
    char buf[128];
    const char *got = log_value("x result=ok\nfake line", 100, buf, sizeof(buf));

    cr_assert_null(strchr(got, ' '));
    cr_assert_null(strchr(got, '='));
    cr_assert_null(strchr(got, '\n'));
}


Test(log_value, cut_at_max_len_with_two_dots)
{
    char buf[64];

    cr_assert_str_eq(log_value("abcdefghij", 4, buf, sizeof(buf)), "abcd..");
}


Test(log_value, exactly_max_len_not_marked)
{
    char buf[64];

    cr_assert_str_eq(log_value("abcd", 4, buf, sizeof(buf)), "abcd");
    cr_assert_str_eq(log_value("abc", 4, buf, sizeof(buf)), "abc");
}


Test(log_value, max_len_zero_gives_only_the_mark)
{
    char buf[64];

    cr_assert_str_eq(log_value("abc", 0, buf, sizeof(buf)), "..");
    cr_assert_str_eq(log_value("", 0, buf, sizeof(buf)), "");
}


Test(log_value, null_text_is_a_dash)
{
    char buf[8];

    cr_assert_str_eq(log_value(NULL, 10, buf, sizeof(buf)), "-");
}


Test(log_value, empty_text_is_empty)
{
    char buf[8] = "junk";

    cr_assert_str_eq(log_value("", 10, buf, sizeof(buf)), "");
}


/*
 * Writes into the middle of a guarded array and checks that nothing
 * outside [0, cap) changed and that the result is terminated inside it.
 */
static void
check_small_buffer(const char *text, size_t max_len, size_t cap)
{
    char guard[32];
    char *buf = guard + 8;
    const char *got;

    memset(guard, 'G', sizeof(guard));
    got = log_value(text, max_len, buf, cap);
    for (size_t i = 0; i < 8; i++) {
        cr_assert_eq(guard[i], 'G', "underflow, cap %zu text \"%s\"", cap,
                     text ? text : "(null)");
    }
    for (size_t i = 8 + cap; i < sizeof(guard); i++) {
        cr_assert_eq(guard[i], 'G', "overflow at +%zu, cap %zu text \"%s\"", i - 8,
                     cap, text ? text : "(null)");
    }
    cr_assert_eq(got, buf);
    cr_assert_lt(strlen(got), cap, "cap %zu", cap);
}


Test(log_value, small_buffers_never_overflow)
{
    static const char *const texts[] = {
        NULL, "", "a", "ab", "abc", "abcdef", "a b=c\"d", "\xc3\xa9\xc3\xa9\xc3\xa9",
    };
    static const size_t caps[] = { 1, 2, 5 };
    static const size_t max_lens[] = { 0, 1, 2, 3, 4, 5, 100 };

    for (size_t c = 0; c < sizeof(caps) / sizeof(caps[0]); c++) {
        for (size_t t = 0; t < sizeof(texts) / sizeof(texts[0]); t++) {
            for (size_t m = 0; m < sizeof(max_lens) / sizeof(max_lens[0]); m++) {
                check_small_buffer(texts[t], max_lens[m], caps[c]);
            }
        }
    }
}


Test(log_value, cap_one_gives_empty_string)
{
    char buf[1] = { 'x' };

    cr_assert_str_eq(log_value("abc", 10, buf, 1), "");
    buf[0] = 'x';
    cr_assert_str_eq(log_value(NULL, 10, buf, 1), "");
}


Test(log_value, cap_five_cuts_long_text_and_fits_the_mark)
{
    char buf[5];

    /* Room for 4 characters: a long text is cut to what fits. */
    cr_assert_str_eq(log_value("abcdefgh", 100, buf, sizeof(buf)), "abcd");
    /* Two characters and the ".." mark fit exactly. */
    cr_assert_str_eq(log_value("abcdefgh", 2, buf, sizeof(buf)), "ab..");
}


Test(log_value, cap_zero_writes_nothing)
{
    char buf[4] = "xyz";
    const char *got = log_value("abc", 10, buf, 0);

    cr_assert_str_eq(got, "");
    cr_assert_str_eq(buf, "xyz");
}


/* Runs fn with stderr sent to a temporary file; returns what was written. */
static char *
capture_stderr(void (*fn)(void))
{
    char path[] = "/tmp/hookd-log-XXXXXX";
    int fd = mkstemp(path);
    int saved = dup(STDERR_FILENO);
    static char out[65536];
    ssize_t n;

    cr_assert(fd >= 0 && saved >= 0);
    fflush(stderr);
    dup2(fd, STDERR_FILENO);
    fn();
    dup2(saved, STDERR_FILENO);
    close(saved);
    lseek(fd, 0, SEEK_SET);
    n = read(fd, out, sizeof(out) - 1);
    out[n > 0 ? n : 0] = '\0';
    close(fd);
    unlink(path);
    return out;
}


static int
count_lines(const char *text, const char *needle)
{
    int n = 0;

    for (const char *p = text; (p = strstr(p, needle)) != NULL; p++) {
        n++;
    }
    return n;
}


static void
thirty_refusals(void)
{
    /* Start at the top of a second so that all thirty fall in one. */
    time_t start = time(NULL);

    while (time(NULL) == start) {
        usleep(1000);
    }
    for (int i = 0; i < 30; i++) {
        log_client("request refused: test line %d", i);
    }
}


static void
one_more_a_second_later(void)
{
    time_t start = time(NULL);

    while (time(NULL) == start) {
        usleep(1000);
    }
    log_client("request refused: after the pause");
}


Test(log_client, a_flood_is_cut_to_a_rate_and_the_rest_counted)
{
    char *out;

    log_set_level(LOG_LVL_INFO);
    out = capture_stderr(thirty_refusals);
    cr_assert_eq(count_lines(out, "request refused: test line"), LOG_CLIENT_PER_SECOND,
                 "%s", out);
    out = capture_stderr(one_more_a_second_later);
    cr_assert_neq(strstr(out, "10 more refused requests were not logged"), NULL, "%s", out);
    cr_assert_neq(strstr(out, "request refused: after the pause"), NULL, "%s", out);
}
