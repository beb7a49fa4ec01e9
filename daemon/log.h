/* SPDX-License-Identifier: MIT */
/*
 * log: one line per decision on stderr. Under journald (JOURNAL_STREAM set)
 * each line starts with a syslog priority prefix such as "<6>" so the
 * journal keeps levels; on a terminal it starts with a UTC time and level.
 *
 * Thread-safe: each line is one write(2). Messages follow the project's
 * grammar: a lowercase phrase, then key=value fields. Never pass secrets,
 * tokens or payloads; log_value() quotes client-supplied text safely.
 */
#ifndef HOOKD_LOG_H
#define HOOKD_LOG_H

#include <stdbool.h>
#include <stddef.h>

enum log_level {
    LOG_LVL_DEBUG = 7,
    LOG_LVL_INFO = 6,
    LOG_LVL_NOTICE = 5,
    LOG_LVL_WARNING = 4,
    LOG_LVL_ERROR = 3
};

/* Sets the most verbose level written; the default is info. */
void log_set_level(enum log_level level);

/* Parses "debug", "info", "notice", "warning", "error"; false if none. */
bool log_parse_level(const char *name, enum log_level *ret);

/* True when lines of this level are written (check before costly work). */
bool log_enabled(enum log_level level);

void log_msg(enum log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/*
 * A client's mistake (bad signature, wrong content type, oversize body), at
 * info: at most LOG_CLIENT_PER_SECOND such lines a second; the rest are
 * counted, and the next line that passes says how many were left out, so a
 * flood of bad requests cannot flood the log.
 */
#define LOG_CLIENT_PER_SECOND 20
void log_client(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#define log_debug(...) log_msg(LOG_LVL_DEBUG, __VA_ARGS__)
#define log_info(...) log_msg(LOG_LVL_INFO, __VA_ARGS__)
#define log_notice(...) log_msg(LOG_LVL_NOTICE, __VA_ARGS__)
#define log_warning(...) log_msg(LOG_LVL_WARNING, __VA_ARGS__)
#define log_error(...) log_msg(LOG_LVL_ERROR, __VA_ARGS__)

/*
 * Copies at most cap-1 bytes of untrusted text into buf for a log field:
 * printable ASCII is kept, anything else (spaces, quotes, control bytes,
 * non-ASCII) becomes '?', and the copy is cut at max_len characters with
 * a trailing "..". Returns buf.
 */
const char *log_value(const char *text, size_t max_len, char *buf, size_t cap);

#endif
