/* SPDX-License-Identifier: MIT */
/*
 * counter: the test handler of ../../shared/cases ("counter plugin"). Each
 * attempt writes one row (event, route, attempt, conversation, start and
 * end time) into public.counter_runs of hookd's database, then sleeps and
 * answers as its options say:
 *
 *   options = { sleep_ms = 0; fail_first = 0; outcome = "done"; record = true;
 *               durable = true; slow_thread = "t"; slow_ms = 0; }
 *
 * fail_first = N answers "retry" to the first N attempts of every job;
 * outcome is what it answers otherwise ("done", "retry" or "fail").
 * record = false skips the row (no database at all: a handler that takes
 * microseconds); durable = false writes it without waiting for the disk.
 * Events of thread slow_thread sleep slow_ms more.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libpq-fe.h>

#include "hookd_plugin.h"

struct counter {
    bool c_record;
    bool c_durable;
    char c_slow_thread[64];
    int c_slow_ms;
    int c_sleep_ms;
    int c_fail_first;
    enum hookd_outcome c_outcome;
};


static int
counter_init(json_object *options, void **state, char *err, size_t errlen)
{
    struct counter *c = calloc(1, sizeof(*c));
    json_object *v;

    if (c == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    c->c_outcome = HOOKD_DONE;
    c->c_record = true;
    c->c_durable = true;
    if (options != NULL && json_object_object_get_ex(options, "record", &v)) {
        c->c_record = json_object_get_boolean(v);
    }
    if (options != NULL && json_object_object_get_ex(options, "durable", &v)) {
        c->c_durable = json_object_get_boolean(v);
    }
    if (options != NULL && json_object_object_get_ex(options, "slow_thread", &v)) {
        snprintf(c->c_slow_thread, sizeof(c->c_slow_thread), "%s", json_object_get_string(v));
    }
    if (options != NULL && json_object_object_get_ex(options, "slow_ms", &v)) {
        c->c_slow_ms = json_object_get_int(v);
    }
    if (options != NULL && json_object_object_get_ex(options, "sleep_ms", &v)) {
        c->c_sleep_ms = json_object_get_int(v);
    }
    if (options != NULL && json_object_object_get_ex(options, "fail_first", &v)) {
        c->c_fail_first = json_object_get_int(v);
    }
    if (options != NULL && json_object_object_get_ex(options, "outcome", &v)) {
        const char *o = json_object_get_string(v);

        if (strcmp(o, "done") == 0) {
            c->c_outcome = HOOKD_DONE;
        } else if (strcmp(o, "retry") == 0) {
            c->c_outcome = HOOKD_RETRY;
        } else if (strcmp(o, "fail") == 0) {
            c->c_outcome = HOOKD_FAIL;
        } else {
            snprintf(err, errlen, "outcome must be done, retry or fail");
            free(c);
            return -1;
        }
    }
    *state = c;
    return 0;
}


static long long
wall_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (long long)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}


static void
sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};

    while (ms > 0 && nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}


static enum hookd_outcome
counter_handle(void *state, const struct hookd_event *ev, struct hookd_ctx *ctx)
{
    struct counter *c = state;
    PGconn *db;
    char event[24], attempt[16], started[24], ended[24];
    const char *vals[7];
    PGresult *res;
    long long start = wall_us();

    sleep_ms(c->c_sleep_ms);
    if (c->c_slow_thread[0] != '\0' && ev->he_thread_id != NULL
        && strcmp(ev->he_thread_id, c->c_slow_thread) == 0)
    {
        sleep_ms(c->c_slow_ms);
    }
    if (!c->c_record) {
        return c->c_outcome;
    }
    db = ctx->hc_db(ctx, NULL);
    if (db == NULL) {
        ctx->hc_set_reason(ctx, "no database");
        return HOOKD_RETRY;
    }
    if (!c->c_durable) {
        PQclear(PQexec(db, "SET synchronous_commit = off"));
    }
    snprintf(event, sizeof(event), "%lld", (long long)ev->he_event_id);
    snprintf(attempt, sizeof(attempt), "%d", ctx->hc_attempt);
    snprintf(started, sizeof(started), "%lld", start);
    snprintf(ended, sizeof(ended), "%lld", wall_us());
    vals[0] = event;
    vals[1] = ctx->hc_route;
    vals[2] = attempt;
    vals[3] = ev->he_chatbot_id;
    vals[4] = ev->he_thread_id;
    vals[5] = started;
    vals[6] = ended;
    res = PQexec(db, "CREATE TABLE IF NOT EXISTS public.counter_runs (event_id bigint,"
                 " route text, attempt int, chatbot_id text, thread_id text,"
                 " started_us bigint, ended_us bigint, seq bigserial)");
    PQclear(res);
    res = PQexecParams(db, "INSERT INTO public.counter_runs (event_id, route, attempt,"
                       " chatbot_id, thread_id, started_us, ended_us)"
                       " VALUES ($1, $2, $3, $4, $5, $6, $7)", 7, NULL, vals, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        ctx->hc_set_reason(ctx, "could not record the run");
        PQclear(res);
        return HOOKD_RETRY;
    }
    PQclear(res);
    ctx->hc_set_output(ctx, "counted", 7);
    if (ctx->hc_attempt <= c->c_fail_first) {
        ctx->hc_set_reason(ctx, "failing on purpose (fail_first)");
        return HOOKD_RETRY;
    }
    if (c->c_outcome != HOOKD_DONE) {
        ctx->hc_set_reason(ctx, "answering as configured");
    }
    return c->c_outcome;
}


static void
counter_fini(void *state)
{
    free(state);
}


const struct hookd_plugin hookd_plugin_v1 = {
    HOOKD_PLUGIN_ABI, "counter", counter_init, counter_handle, counter_fini
};
