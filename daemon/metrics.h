/* SPDX-License-Identifier: MIT */
/*
 * metrics: process-wide counters for the admin listener's /metrics, in the
 * Prometheus text format. Recording is thread-safe and cheap (atomics, and
 * a short lock only the first time a label value is seen). Label values a
 * client controls (event types) are bounded: past METRICS_MAX_TYPES
 * distinct ones, the rest count as "other".
 */
#ifndef HOOKD_METRICS_H
#define HOOKD_METRICS_H

#include <stdbool.h>
#include <stddef.h>

#include "verify.h"

#define METRICS_MAX_ENDPOINTS 16
#define METRICS_MAX_TYPES 32

/* One webhook request's answer: endpoint path (NULL: no endpoint matched). */
void metrics_request(const char *endpoint, int status, double seconds);

/* A request refused by verification. */
void metrics_verify_failure(enum verify_result r);

/* A new event stored, by type. */
void metrics_event(const char *type);

/* A job's attempt: its duration, and whether it ended in a retry. */
void metrics_job_attempt(double seconds, bool retried);

/*
 * Appends the counters above, in the Prometheus text format, to the
 * malloc'd buffer *buf of *len bytes (reallocated as needed). False when
 * out of memory.
 */
bool metrics_render(char **buf, size_t *len);

/*
 * Appends one line "name{labels} value\n" to *buf; labels may be "" or a
 * ready label list such as "route=\"crm\"". False when out of memory.
 */
bool metrics_line(char **buf, size_t *len, const char *name, const char *labels,
                  double value);

/* Appends text as it is (HELP and TYPE lines). */
bool metrics_text(char **buf, size_t *len, const char *text);

/* Writes value into out as a label value: \ " and newline escaped. */
void metrics_label_value(const char *value, char *out, size_t cap);

#endif
