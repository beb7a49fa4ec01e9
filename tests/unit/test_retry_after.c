/* SPDX-License-Identifier: MIT */
/*
 * Unit tests for handlers/retry_after.h, the strict Retry-After parser of
 * the forward handler (case C18 of shared/cases). The IMF-fixdate example
 * "Sun, 06 Nov 1994 08:49:37 GMT" is RFC 9110's; the Unix times were
 * computed with date(1).
 */
#include <criterion/criterion.h>

#include <stdio.h>

#include "retry_after.h"

#define RA_NOW 1800000000LL             /* Fri, 15 Jan 2027 08:00:00 GMT */
#define RA_CAP RETRY_AFTER_CAP_S


static int
ra(const char *value)
{
    return retry_after_parse(value, RA_NOW, RA_CAP);
}


Test(retry_after, delay_seconds)
{
    cr_expect_eq(ra("0"), 0);
    cr_expect_eq(ra("1"), 1);
    cr_expect_eq(ra("120"), 120);
    cr_expect_eq(ra("007"), 7);
    cr_expect_eq(ra(" 5\t"), 5, "surrounding spaces and tabs are trimmed");
    cr_expect_eq(ra("3600"), 3600);
}


Test(retry_after, huge_values_are_capped)
{
    cr_expect_eq(ra("3601"), RA_CAP);
    cr_expect_eq(ra("86400"), RA_CAP);
    cr_expect_eq(ra("99999999999999999999999999999999"), RA_CAP, "no overflow");
    cr_expect_eq(retry_after_parse("500", RA_NOW, 300), 300);
}


Test(retry_after, invalid_values_of_case_c18)
{
    static const char *const bad[] = {
        "-1", "abc", "", "   ", "1.5", "+3", "1e3", "0x10", "5s", "5 5", "١",
        "Wed, 31 Feb 2027 10:00:00 GMT",            /* no such day */
        "Thu, 29 Feb 2027 10:00:00 GMT",            /* 2027 is no leap year */
        "Mon, 29 Feb 2100 00:00:00 GMT",            /* nor is 2100 */
        "Sat, 15 Jan 2027 08:00:05 GMT",            /* wrong weekday (a Friday) */
        "Fri, 15 Jan 2027 24:00:00 GMT",
        "Fri, 15 Jan 2027 08:60:00 GMT",
        "Fri, 15 Jan 2027 08:00:61 GMT",
        "Fri, 15 jan 2027 08:00:05 GMT",            /* names are case-sensitive */
        "fri, 15 Jan 2027 08:00:05 GMT",
        "Fri, 15 Jan 2027 08:00:05 UTC",
        "Fri, 15 Jan 2027 08:00:05 GMT+1",
        "Fri, 15 Jan 27 08:00:05 GMT",
        "Fri, 5 Jan 2027 08:00:05 GMT",
        "Fri,15 Jan 2027 08:00:05 GMT ",
        "Friday, 15-Jan-27 08:00:05 GMT",           /* RFC 850 */
        "Fri Jan 15 08:00:05 2027",                 /* asctime */
        "Fri, 00 Jan 2027 08:00:05 GMT",
        "Sat, 01 Jan 0000 00:00:00 GMT",
    };

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        cr_expect_eq(ra(bad[i]), -1, "\"%s\" must be invalid, got %d", bad[i], ra(bad[i]));
    }
    cr_expect_eq(ra(NULL), -1);
}


Test(retry_after, imf_fixdate)
{
    cr_expect_eq(retry_after_parse("Sun, 06 Nov 1994 08:49:37 GMT", 784111777LL - 10, RA_CAP),
                 10, "RFC 9110's example date");
    cr_expect_eq(ra("Fri, 15 Jan 2027 08:00:05 GMT"), 5);
    cr_expect_eq(ra("  Fri, 15 Jan 2027 08:00:05 GMT "), 5);
    cr_expect_eq(ra("Fri, 15 Jan 2027 08:00:00 GMT"), 0, "now");
    cr_expect_eq(ra("Sat, 16 Jan 2027 08:00:00 GMT"), RA_CAP, "a day ahead is capped");
    cr_expect_eq(retry_after_parse("Thu, 29 Feb 2024 12:00:00 GMT", 1709208000LL - 60, RA_CAP),
                 60, "a leap day");
    cr_expect_eq(retry_after_parse("Sun, 28 Feb 2100 00:00:00 GMT", 4107456000LL - 1, RA_CAP),
                 1, "2100 is no leap year");
}


Test(retry_after, past_dates_mean_now)
{
    cr_expect_eq(ra("Fri, 01 Jan 1999 00:00:00 GMT"), 0);
    cr_expect_eq(ra("Thu, 01 Jan 1970 00:00:00 GMT"), 0);
    cr_expect_eq(ra("Mon, 01 Jan 1900 00:00:00 GMT"), 0, "before 1970 parses too");
}


/* Every day from 1970 to 2100 round-trips through gmtime_r's weekday. */
Test(retry_after, every_day_agrees_with_gmtime)
{
    for (long long t = 0; t < 4102444800LL; t += 86400 + 3661) {
        time_t tt = (time_t)t;
        struct tm tm;
        char buf[64];

        cr_assert(gmtime_r(&tt, &tm) != NULL);
        cr_assert(strftime(buf, sizeof(buf), "%a, %d %b %Y %H:%M:%S GMT", &tm) == 29);
        cr_assert_eq(retry_after_parse(buf, t - 7, RA_CAP), 7, "%s", buf);
    }
}
