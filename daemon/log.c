/* SPDX-License-Identifier: MIT */
#include "log.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#define LOG_LINE_MAX 2048

static _Atomic int log_level_now = LOG_LVL_INFO;

static const struct {
    const char *name;
    enum log_level level;
} log_names[] = {
    {"debug", LOG_LVL_DEBUG},
    {"info", LOG_LVL_INFO},
    {"notice", LOG_LVL_NOTICE},
    {"warning", LOG_LVL_WARNING},
    {"error", LOG_LVL_ERROR},
};


void
log_set_level(enum log_level level)
{
    atomic_store(&log_level_now, (int)level);
}


bool
log_parse_level(const char *name, enum log_level *ret)
{
    for (size_t i = 0; i < sizeof(log_names) / sizeof(log_names[0]); i++) {
        if (strcasecmp(name, log_names[i].name) == 0) {
            *ret = log_names[i].level;
            return true;
        }
    }
    return false;
}


bool
log_enabled(enum log_level level)
{
    return (int)level <= atomic_load(&log_level_now);
}


static const char *
level_name(enum log_level level)
{
    for (size_t i = 0; i < sizeof(log_names) / sizeof(log_names[0]); i++) {
        if (log_names[i].level == level) {
            return log_names[i].name;
        }
    }
    return "?";
}


void
log_msg(enum log_level level, const char *fmt, ...)
{
    char line[LOG_LINE_MAX];
    size_t n;
    int w;
    va_list ap;

    if (!log_enabled(level)) {
        return;
    }
    if (getenv("JOURNAL_STREAM") != NULL) {
        w = snprintf(line, sizeof(line), "<%d>", (int)level);
    } else {
        struct timespec ts;
        struct tm tm;

        clock_gettime(CLOCK_REALTIME, &ts);
        gmtime_r(&ts.tv_sec, &tm);
        w = snprintf(line, sizeof(line), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %-7s ",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                     tm.tm_sec, ts.tv_nsec / 1000000, level_name(level));
    }
    n = w > 0 ? (size_t)w : 0;
    va_start(ap, fmt);
    w = vsnprintf(line + n, sizeof(line) - n - 1, fmt, ap);
    va_end(ap);
    if (w > 0) {
        n += (size_t)w < sizeof(line) - n - 1 ? (size_t)w : sizeof(line) - n - 2;
    }
    line[n++] = '\n';
    (void)!write(STDERR_FILENO, line, n);
}


static pthread_mutex_t log_client_lock = PTHREAD_MUTEX_INITIALIZER;
static time_t log_client_second;
static int log_client_count;
static unsigned long log_client_dropped;


void
log_client(const char *fmt, ...)
{
    char line[LOG_LINE_MAX];
    unsigned long dropped = 0;
    time_t now = time(NULL);
    bool pass;
    va_list ap;

    if (!log_enabled(LOG_LVL_INFO)) {
        return;
    }
    pthread_mutex_lock(&log_client_lock);
    if (now != log_client_second) {
        log_client_second = now;
        log_client_count = 0;
    }
    pass = log_client_count < LOG_CLIENT_PER_SECOND;
    if (pass) {
        log_client_count++;
        dropped = log_client_dropped;
        log_client_dropped = 0;
    } else {
        log_client_dropped++;
    }
    pthread_mutex_unlock(&log_client_lock);
    if (!pass) {
        return;
    }
    if (dropped > 0) {
        log_msg(LOG_LVL_INFO, "%lu more refused requests were not logged (over %d a second)",
                dropped, LOG_CLIENT_PER_SECOND);
    }
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    log_msg(LOG_LVL_INFO, "%s", line);
}


const char *
log_value(const char *text, size_t max_len, char *buf, size_t cap)
{
    size_t o = 0;

    if (cap == 0) {
        return "";
    }
    if (text == NULL) {
        snprintf(buf, cap, "-");
        return buf;
    }
    for (size_t i = 0; text[i] != '\0' && o + 1 < cap; i++) {
        unsigned char c = (unsigned char)text[i];

        if (i >= max_len) {
            if (o + 3 <= cap) {
                buf[o++] = '.';
                buf[o++] = '.';
            }
            break;
        }
        buf[o++] = (c > 0x20 && c < 0x7f && c != '"' && c != '\\' && c != '=') ? (char)c : '?';
    }
    buf[o] = '\0';
    return buf;
}
