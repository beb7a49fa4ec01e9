/* SPDX-License-Identifier: MIT */
/*
 * retry_after.h: a strict parser for HTTP Retry-After values (RFC 9110,
 * section 10.2.3), shared by the forward handler and its unit tests. Header
 * only: every function is static inline, pure and thread-safe.
 *
 * Two forms are accepted, after trimming spaces and tabs:
 *
 *   delay-seconds   one or more digits ("0", "120"); "-1", "1.5", "+3",
 *                   "1e3" and "" are invalid
 *   IMF-fixdate     exactly "Sun, 06 Nov 1994 08:49:37 GMT": names as
 *                   written there (case matters), a day that exists in that
 *                   month and year, and the weekday that date really has
 *
 * Obsolete date forms (RFC 850, asctime) are refused too. The result is
 * clamped to [0, cap]: a date in the past means "now" (0), a huge value
 * means cap. An invalid value is reported as -1 so that the caller keeps
 * its own backoff.
 */
#ifndef HOOKD_RETRY_AFTER_H
#define HOOKD_RETRY_AFTER_H

#include <stdbool.h>
#include <stddef.h>
#include <string.h>
#include <time.h>

/* The longest wait a Retry-After can ask for, in seconds. */
#define RETRY_AFTER_CAP_S 3600

#define RETRY_AFTER_FIXDATE_LEN 29


/* Reads n decimal digits at s into *out; false if any is not a digit. */
static inline bool
retry_after_digits(const char *s, size_t n, int *out)
{
    int v = 0;

    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') {
            return false;
        }
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return true;
}


static inline bool
retry_after_leap(int year)
{
    return (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
}


/* Days from 1970-01-01 to year-month-day (year >= 1, month 1..12). */
static inline long long
retry_after_days(int year, int month, int day)
{
    static const int before[12] = {0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334};
    long long prev = year - 1;
    long long leaps = prev / 4 - prev / 100 + prev / 400;
    long long leaps_1970 = 1969 / 4 - 1969 / 100 + 1969 / 400;
    long long days = 365LL * (year - 1970) + (leaps - leaps_1970);

    days += before[month - 1] + day - 1;
    if (month > 2 && retry_after_leap(year)) {
        days++;
    }
    return days;
}


/* Index of the 3-letter name at s in names (count entries), or -1. */
static inline int
retry_after_name(const char *s, const char *const *names, int count)
{
    for (int i = 0; i < count; i++) {
        if (memcmp(s, names[i], 3) == 0) {
            return i;
        }
    }
    return -1;
}


/*
 * Parses an IMF-fixdate of exactly RETRY_AFTER_FIXDATE_LEN bytes at s into
 * Unix seconds. Returns false when it is not one, or names a day that does
 * not exist, or the weekday is wrong.
 */
static inline bool
retry_after_fixdate(const char *s, long long *out)
{
    static const char *const wdays[7] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static const char *const months[12] = {
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"
    };
    static const int month_days[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int wday, month, day, year, hour, min, sec, last;
    long long days;

    /* "Sun, 06 Nov 1994 08:49:37 GMT": the separators first. */
    if (s[3] != ',' || s[4] != ' ' || s[7] != ' ' || s[11] != ' ' || s[16] != ' '
        || s[19] != ':' || s[22] != ':' || s[25] != ' ' || memcmp(s + 26, "GMT", 3) != 0)
    {
        return false;
    }
    wday = retry_after_name(s, wdays, 7);
    month = retry_after_name(s + 8, months, 12);
    if (wday < 0 || month < 0 || !retry_after_digits(s + 5, 2, &day)
        || !retry_after_digits(s + 12, 4, &year) || !retry_after_digits(s + 17, 2, &hour)
        || !retry_after_digits(s + 20, 2, &min) || !retry_after_digits(s + 23, 2, &sec))
    {
        return false;
    }

    /* Only dates that exist; second 60 is a leap second (RFC 9110 allows it). */
    last = month_days[month] + (month == 1 && retry_after_leap(year) ? 1 : 0);
    if (year < 1 || day < 1 || day > last || hour > 23 || min > 59 || sec > 60) {
        return false;
    }
    days = retry_after_days(year, month + 1, day);
    if ((days % 7 + 7 + 4) % 7 != wday) {      /* 1970-01-01 was a Thursday */
        return false;
    }
    *out = days * 86400 + hour * 3600 + min * 60 + sec;
    return true;
}


/*
 * Parses the Retry-After value (NUL-ended, NULL allowed) received at Unix
 * time now. Returns the seconds to wait, clamped to [0, cap], or -1 when
 * the value is missing or invalid.
 */
static inline int
retry_after_parse(const char *value, long long now, int cap)
{
    const char *end;
    size_t len;
    long long when;

    if (value == NULL) {
        return -1;
    }
    while (*value == ' ' || *value == '\t') {
        value++;
    }
    end = value + strlen(value);
    while (end > value && (end[-1] == ' ' || end[-1] == '\t')) {
        end--;
    }
    len = (size_t)(end - value);
    if (len == 0) {
        return -1;
    }

    if (value[0] >= '0' && value[0] <= '9') {
        long long secs = 0;

        for (const char *p = value; p < end; p++) {
            if (*p < '0' || *p > '9') {
                return -1;
            }
            if (secs <= cap) {
                secs = secs * 10 + (*p - '0');
            }
        }
        return secs > cap ? cap : (int)secs;
    }
    if (len != RETRY_AFTER_FIXDATE_LEN || !retry_after_fixdate(value, &when)) {
        return -1;
    }
    if (when <= now) {
        return 0;
    }
    return when - now > cap ? cap : (int)(when - now);
}

#endif
