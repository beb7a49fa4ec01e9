/* SPDX-License-Identifier: MIT */
#include "metrics.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The statuses hookd answers with; anything else counts as "other". */
static const int metrics_statuses[] = {200, 400, 401, 404, 405, 408, 413, 415, 503};
#define METRICS_NSTATUS (sizeof(metrics_statuses) / sizeof(metrics_statuses[0]) + 1)

/* Upper bounds of the ingest latency histogram, in seconds. */
static const double metrics_buckets[] = {
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10
};
#define METRICS_NBUCKETS (sizeof(metrics_buckets) / sizeof(metrics_buckets[0]))

#define METRICS_NRESULTS (VERIFY_MISSING_ID + 1)

/* A histogram in microseconds, so that the sum stays an integer atomic. */
struct histogram {
    atomic_ullong hg_buckets[METRICS_NBUCKETS];
    atomic_ullong hg_count;
    atomic_ullong hg_sum_us;
};

static struct {
    pthread_mutex_t m_lock;                      /* only to add label values */
    char m_endpoints[METRICS_MAX_ENDPOINTS][128];
    atomic_int m_nendpoints;
    /* [endpoint + 1][status]: index 0 is "no endpoint matched" */
    atomic_ullong m_requests[METRICS_MAX_ENDPOINTS + 1][METRICS_NSTATUS];
    struct histogram m_ingest;
    atomic_ullong m_verify[METRICS_NRESULTS];
    char m_types[METRICS_MAX_TYPES][72];
    atomic_int m_ntypes;
    atomic_ullong m_events[METRICS_MAX_TYPES + 1];   /* the last is "other" */
    struct histogram m_jobs;
    atomic_ullong m_retries;
} metrics = {.m_lock = PTHREAD_MUTEX_INITIALIZER};


/* Index of value in table (adding it while there is room), or -1. */
static int
label_index(char (*table)[128], atomic_int *count, int max, const char *value, size_t width)
{
    int n = atomic_load(count);

    for (int i = 0; i < n; i++) {
        if (strncmp(table[i], value, width - 1) == 0) {
            return i;
        }
    }
    pthread_mutex_lock(&metrics.m_lock);
    n = atomic_load(count);
    for (int i = 0; i < n; i++) {
        if (strncmp(table[i], value, width - 1) == 0) {
            pthread_mutex_unlock(&metrics.m_lock);
            return i;
        }
    }
    if (n >= max) {
        pthread_mutex_unlock(&metrics.m_lock);
        return -1;
    }
    snprintf(table[n], width, "%s", value);
    atomic_store(count, n + 1);
    pthread_mutex_unlock(&metrics.m_lock);
    return n;
}


static void
observe(struct histogram *h, double seconds)
{
    for (size_t i = 0; i < METRICS_NBUCKETS; i++) {
        if (seconds <= metrics_buckets[i]) {
            atomic_fetch_add(&h->hg_buckets[i], 1);
        }
    }
    atomic_fetch_add(&h->hg_count, 1);
    atomic_fetch_add(&h->hg_sum_us, (unsigned long long)(seconds * 1e6));
}


void
metrics_request(const char *endpoint, int status, double seconds)
{
    int e = endpoint == NULL ? -1 : label_index(metrics.m_endpoints, &metrics.m_nendpoints,
                                                METRICS_MAX_ENDPOINTS, endpoint, 128);
    size_t s = METRICS_NSTATUS - 1;

    for (size_t i = 0; i + 1 < METRICS_NSTATUS; i++) {
        if (metrics_statuses[i] == status) {
            s = i;
        }
    }
    atomic_fetch_add(&metrics.m_requests[e + 1][s], 1);
    if (endpoint != NULL) {
        observe(&metrics.m_ingest, seconds);
    }
}


void
metrics_verify_failure(enum verify_result r)
{
    if ((int)r >= 0 && (int)r < (int)METRICS_NRESULTS) {
        atomic_fetch_add(&metrics.m_verify[r], 1);
    }
}


/* The label of the types past METRICS_MAX_TYPES (a real type of that name joins them). */
#define METRICS_OTHER_TYPES "other"


void
metrics_event(const char *type)
{
    int t = -1;

    if (strcmp(type, METRICS_OTHER_TYPES) == 0) {
        /* One series per label value, whatever the senders name their events. */
        atomic_fetch_add(&metrics.m_events[METRICS_MAX_TYPES], 1);
        return;
    }

    /* The type table is narrower than the endpoints'; a separate lookup. */
    for (int i = 0; i < atomic_load(&metrics.m_ntypes); i++) {
        if (strncmp(metrics.m_types[i], type, sizeof(metrics.m_types[i]) - 1) == 0) {
            t = i;
            break;
        }
    }
    if (t < 0) {
        pthread_mutex_lock(&metrics.m_lock);
        for (int i = 0; t < 0 && i < atomic_load(&metrics.m_ntypes); i++) {
            if (strncmp(metrics.m_types[i], type, sizeof(metrics.m_types[i]) - 1) == 0) {
                t = i;
            }
        }
        if (t < 0 && atomic_load(&metrics.m_ntypes) < METRICS_MAX_TYPES) {
            t = atomic_load(&metrics.m_ntypes);
            snprintf(metrics.m_types[t], sizeof(metrics.m_types[t]), "%s", type);
            atomic_store(&metrics.m_ntypes, t + 1);
        }
        pthread_mutex_unlock(&metrics.m_lock);
    }
    atomic_fetch_add(&metrics.m_events[t < 0 ? METRICS_MAX_TYPES : t], 1);
}


void
metrics_job_attempt(double seconds, bool retried)
{
    observe(&metrics.m_jobs, seconds);
    if (retried) {
        atomic_fetch_add(&metrics.m_retries, 1);
    }
}


bool
metrics_text(char **buf, size_t *len, const char *text)
{
    size_t n = strlen(text);
    char *grown = realloc(*buf, *len + n + 1);

    if (grown == NULL) {
        return false;
    }
    memcpy(grown + *len, text, n + 1);
    *buf = grown;
    *len += n;
    return true;
}


bool
metrics_line(char **buf, size_t *len, const char *name, const char *labels, double value)
{
    char line[512];

    snprintf(line, sizeof(line), "%s%s%s%s %.17g\n", name, *labels ? "{" : "", labels,
             *labels ? "}" : "", value);
    return metrics_text(buf, len, line);
}


void
metrics_label_value(const char *value, char *out, size_t cap)
{
    size_t o = 0;

    for (; *value != '\0' && o + 3 < cap; value++) {
        if (*value == '\\' || *value == '"') {
            out[o++] = '\\';
            out[o++] = *value;
        } else if (*value == '\n') {
            out[o++] = '\\';
            out[o++] = 'n';
        } else {
            out[o++] = *value;
        }
    }
    out[o] = '\0';
}


static bool
render_histogram(char **buf, size_t *len, const char *name, const struct histogram *h)
{
    char metric[96], labels[48];
    bool ok = true;

    snprintf(metric, sizeof(metric), "%s_bucket", name);
    for (size_t i = 0; ok && i < METRICS_NBUCKETS; i++) {
        snprintf(labels, sizeof(labels), "le=\"%g\"", metrics_buckets[i]);
        ok = metrics_line(buf, len, metric, labels, (double)atomic_load(&h->hg_buckets[i]));
    }
    ok = ok && metrics_line(buf, len, metric, "le=\"+Inf\"", (double)atomic_load(&h->hg_count));
    snprintf(metric, sizeof(metric), "%s_sum", name);
    ok = ok && metrics_line(buf, len, metric, "", (double)atomic_load(&h->hg_sum_us) / 1e6);
    snprintf(metric, sizeof(metric), "%s_count", name);
    return ok && metrics_line(buf, len, metric, "", (double)atomic_load(&h->hg_count));
}


bool
metrics_render(char **buf, size_t *len)
{
    char labels[256], value[160];
    bool ok = metrics_text(buf, len, "# HELP hookd_http_requests_total Webhook requests "
                           "answered, by endpoint and status.\n"
                           "# TYPE hookd_http_requests_total counter\n");

    for (int e = -1; ok && e < atomic_load(&metrics.m_nendpoints); e++) {
        metrics_label_value(e < 0 ? "none" : metrics.m_endpoints[e], value, sizeof(value));
        for (size_t s = 0; ok && s < METRICS_NSTATUS; s++) {
            char status[16];

            if (s + 1 < METRICS_NSTATUS) {
                snprintf(status, sizeof(status), "%d", metrics_statuses[s]);
            } else {
                snprintf(status, sizeof(status), "other");
            }
            snprintf(labels, sizeof(labels), "endpoint=\"%s\",status=\"%s\"", value, status);
            ok = metrics_line(buf, len, "hookd_http_requests_total", labels,
                              (double)atomic_load(&metrics.m_requests[e + 1][s]));
        }
    }
    ok = ok && metrics_text(buf, len, "# HELP hookd_verification_failures_total Requests "
                            "refused by verification, by reason.\n"
                            "# TYPE hookd_verification_failures_total counter\n");
    for (int r = 1; ok && r < (int)METRICS_NRESULTS; r++) {
        snprintf(labels, sizeof(labels), "reason=\"%s\"",
                 verify_result_name((enum verify_result)r));
        ok = metrics_line(buf, len, "hookd_verification_failures_total", labels,
                          (double)atomic_load(&metrics.m_verify[r]));
    }
    ok = ok && metrics_text(buf, len, "# HELP hookd_events_total New events stored, by type "
                            "(types past the first 32 seen count as other).\n"
                            "# TYPE hookd_events_total counter\n");
    for (int t = 0; ok && t <= atomic_load(&metrics.m_ntypes); t++) {
        bool other = t == atomic_load(&metrics.m_ntypes);

        metrics_label_value(other ? METRICS_OTHER_TYPES : metrics.m_types[t], value,
                            sizeof(value));
        snprintf(labels, sizeof(labels), "type=\"%s\"", value);
        ok = metrics_line(buf, len, "hookd_events_total", labels,
                          (double)atomic_load(&metrics.m_events[other ? METRICS_MAX_TYPES : t]));
    }
    ok = ok && metrics_text(buf, len, "# HELP hookd_ingest_duration_seconds Time from a "
                            "request's handling to its answer.\n"
                            "# TYPE hookd_ingest_duration_seconds histogram\n");
    ok = ok && render_histogram(buf, len, "hookd_ingest_duration_seconds", &metrics.m_ingest);
    ok = ok && metrics_text(buf, len, "# HELP hookd_job_duration_seconds Time a handler took "
                            "for one attempt.\n"
                            "# TYPE hookd_job_duration_seconds histogram\n");
    ok = ok && render_histogram(buf, len, "hookd_job_duration_seconds", &metrics.m_jobs);
    ok = ok && metrics_text(buf, len, "# HELP hookd_job_retries_total Attempts that ended in "
                            "a retry.\n# TYPE hookd_job_retries_total counter\n");
    return ok && metrics_line(buf, len, "hookd_job_retries_total", "",
                              (double)atomic_load(&metrics.m_retries));
}
