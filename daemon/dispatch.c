/* SPDX-License-Identifier: MIT */
#include "dispatch.h"

#include <errno.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>
#include <openssl/rand.h>

#include "api.h"
#include "body.h"
#include "buf.h"
#include "cfg.h"
#include "clock.h"
#include "hookd_plugin.h"
#include "log.h"
#include "metrics.h"
#include "plugin.h"

#define DISPATCH_OUTPUT_MAX 4096
#define DISPATCH_REASON_MAX 512
#define DISPATCH_TICK_MS 100
/* Above http.json_max_depth's maximum, so a stored event always parses. */
#define DISPATCH_JSON_DEPTH 1001

/*
 * A claim takes several jobs at once when handlers finish fast: as many as
 * the jobs of this worker's last claim ran in DISPATCH_BATCH_US on average,
 * rounded down to a power of two, at most DISPATCH_BATCH_MAX, one at first.
 * The dones of a batch are recorded together: before the next claim, before
 * the next job of the batch once they waited DISPATCH_BATCH_US, or by the
 * supervisor once they waited DISPATCH_DONES_STALE_MS. A handler taking
 * milliseconds or more gets claims of one job, each result recorded at once.
 */
#define DISPATCH_BATCH_MAX 32
#define DISPATCH_BATCH_US 2000

/* A claimed attempt: held before it starts, or finished done and not yet recorded. */
struct mark {
    long long m_job;
    int m_attempt;
    char *m_output;                 /* done marks: the handler's output, or NULL */
};

struct worker {
    struct dispatch *w_d;
    pthread_t w_thread;
    PGconn *w_conn;                 /* claims and results */
    PGconn *w_handler_db;           /* lent to handlers (hc_db) */
    char *w_handler_db_info;
    struct worker *w_next;

    /*
     * The worker's batch: jobs claimed and not started yet, and attempts
     * finished done and not recorded yet (also those whose record met a
     * database outage; they are recorded before this worker claims again).
     * The worker changes them under d_lock; while w_busy, whoever abandons
     * the worker (supervisor, dispatch_stop) takes them over under d_lock and
     * releases the held jobs and records the dones itself. Their leases are
     * renewed with the running job's.
     */
    struct mark w_held[DISPATCH_BATCH_MAX];
    int w_nheld;
    struct mark w_dones[DISPATCH_BATCH_MAX];
    int w_ndones;
    long long w_dones_since_ms;     /* when the oldest unrecorded done finished */
    double w_avg_us;                /* mean attempt of the last claim; 0: none yet */
    double w_batch_us;              /* attempts of this claim so far */

    /* Under d_lock: what the supervisor needs to time the attempt out. */
    bool w_busy;
    bool w_abandoned;
    long long w_job;
    int w_attempt;
    long long w_deadline_ms;
    int w_max_attempts;
    int w_first_delay_ms;
    double w_factor;
    int w_max_delay_ms;
    int w_timeout_ms;

    /* Filled by the handler through its context. */
    char w_output[DISPATCH_OUTPUT_MAX];
    size_t w_output_len;
    char w_reason[DISPATCH_REASON_MAX];
    int w_retry_after_s;
    const char *w_route;
    long long w_event;
    long long w_event_us;           /* when the event was received */
    int w_api_seq;                  /* API calls made in this attempt */
    json_object *w_api_data[16];    /* answers' data, released after the attempt */
    int w_api_ndata;
};

struct dispatch {
    struct cfg_holder *d_cfgs;
    struct api *d_api;              /* NULL: no API key configured */
    char *d_conninfo;
    char d_me[96];
    int d_poll_ms;
    int d_lease_s;
    long long d_renewed_ms;
    long long d_stats_checked_ms;   /* see DISPATCH_STATS_CHECK_MS */

    pthread_mutex_t d_lock;
    pthread_cond_t d_wake;
    bool d_stopping;
    struct worker *d_workers;
    int d_running;                  /* worker threads not yet finished */
    pthread_cond_t d_done;

    pthread_t d_listener;
    bool d_listener_started;
    _Atomic long long d_heartbeat_ms;
    atomic_ullong d_done_count;
    atomic_ullong d_dead_count;
    atomic_ullong d_claims;         /* claim statements that took at least one job */
    PGconn *d_listen_conn;          /* LISTEN only, and the statistics check */
    PGconn *d_sup_conn;             /* the supervisor's results and lease renewals */
};

/*
 * A claim normally takes well under a millisecond: it walks the runnable
 * jobs in order and stops at the first free one. When hookd.jobs grew fast
 * since PostgreSQL last sampled it (a backlog piling up while no worker
 * ran), the planner, still believing the table small, may read every
 * pending job for each one it considers, and with several workers skipping
 * each other's rows a claim takes seconds or more. Autovacuum fixes the
 * statistics eventually (within a minute, by default, once a tenth of the
 * table changed); hookd does not wait for it: before its workers start, and
 * every DISPATCH_STATS_CHECK_MS after, it analyzes hookd.jobs itself when
 * more than a fifth of it (and at least 1000 rows) changed since the last
 * analyze.
 */
#define DISPATCH_STATS_CHECK_MS 10000

/*
 * Claims jobs. A statement that claims jobs, and the one that marks
 * them done, commit without waiting for the disk (synchronous_commit
 * off, for their own transaction only): what a crash of PostgreSQL itself
 * can lose is the last fraction of a second of claims and "done" marks, and
 * the jobs concerned simply run again, which at-least-once delivery allows.
 * Events, retries and dead letters, handlers' own writes and the record of
 * API calls (hookd.api_actions) still commit durably, and each durable
 * commit also makes every earlier claim durable.
 *
 * The claim, for up to `limit` jobs:
 * - only the first unfinished job of a conversation is a candidate, so a
 *   claim of several jobs takes at most one of each conversation;
 * - never beside a running job of its conversation, whatever the ids'
 *   order (a correlated subquery, so that it looks up this conversation in
 *   jobs_running_idx instead of reading every running entry);
 * - attempts are counted when claimed, so that a job that kills hookd
 *   cannot run forever; a job held unstarted in the claim of an instance
 *   that died counts one too. So a job claimed before (a retry, or back
 *   from a dead instance) is claimed alone once it is first in line, and
 *   left for then otherwise: it takes no other job down with it again, and
 *   a job loses at most one attempt that way.
 */
#define CLAIM_SQL(limit) \
    "WITH cand AS (" \
    " SELECT j.id, j.attempts, j.run_at FROM hookd.jobs j" \
    " WHERE j.route = ANY($1::text[])" \
    "  AND ((j.status = 'pending' AND j.run_at <= now())" \
    "   OR (j.status = 'running' AND j.lease_until < now()))" \
    "  AND NOT EXISTS (SELECT 1 FROM hookd.jobs p" \
    "   WHERE p.route = j.route AND p.conversation = j.conversation AND p.id < j.id" \
    "   AND p.status IN ('pending', 'running'))" \
    "  AND (SELECT count(*) FROM hookd.jobs r" \
    "   WHERE r.route = j.route AND r.conversation = j.conversation AND r.id <> j.id" \
    "   AND r.status = 'running' AND r.lease_until >= now()) = 0" \
    " ORDER BY j.run_at, j.id LIMIT " limit \
    " FOR UPDATE OF j SKIP LOCKED" \
    "), head AS (" \
    " SELECT x.id, x.attempts FROM cand x ORDER BY x.run_at, x.id LIMIT 1" \
    "), pick AS (" \
    " SELECT c.id FROM cand c, head h" \
    " WHERE c.id = h.id OR (c.attempts = 0 AND h.attempts = 0)" \
    "), claimed AS (" \
    " UPDATE hookd.jobs j SET status = 'running', attempts = j.attempts + 1," \
    "  lease_until = now() + make_interval(secs => $2::float8), locked_by = $3," \
    "  updated_at = now()" \
    " FROM pick, hookd.events e WHERE j.id = pick.id AND e.id = j.event_id" \
    " RETURNING j.id, j.route, j.attempts, e.id AS event, e.event_type, e.chatbot_id," \
    "  e.thread_id, e.raw_body, (extract(epoch FROM e.received_at) * 1000000)::bigint," \
    "  set_config('synchronous_commit', 'off', true), j.run_at" \
    ")" \
    " SELECT * FROM claimed ORDER BY run_at, id"

/*
 * One statement per claim size, a power of two: with the LIMIT a
 * parameter, the planner guesses a tenth of the candidates for it, which
 * makes a generic plan look dearer than a custom one, and every claim
 * would be planned again (a third of a millisecond, as much as the claim).
 */
static const char *const claim_sql[] = {
    CLAIM_SQL("1"), CLAIM_SQL("2"), CLAIM_SQL("4"), CLAIM_SQL("8"), CLAIM_SQL("16"),
    CLAIM_SQL("32")
};
static const char *const claim_names[] = {
    "hookd_claim_1", "hookd_claim_2", "hookd_claim_4", "hookd_claim_8", "hookd_claim_16",
    "hookd_claim_32"
};
_Static_assert(sizeof(claim_sql) / sizeof(claim_sql[0]) == 6 && DISPATCH_BATCH_MAX == 1 << 5,
               "the largest claim is DISPATCH_BATCH_MAX jobs");

/*
 * Results are fenced by the attempt: a job someone else reclaimed is left
 * alone. These statements are prepared, so their plan is made once for any
 * id; the status test is written "(...) IS TRUE" so that no index on status
 * can serve it, and the row is always found by its primary key. (Planned
 * generically, "status = 'running'" alone let the planner walk the status
 * index, dead entries of every job that ever ran included.) Dones and
 * releases take arrays: $1 the jobs, $2 their attempts, $3 outputs or the
 * reason, in the same order.
 */
static const char done_sql[] =
    "UPDATE hookd.jobs SET status = 'done', finished_at = now(), updated_at = now(),"
    " lease_until = NULL, last_error = NULL,"
    " output = ($3::text[])[array_position($1::bigint[], id)]"
    " WHERE id = ANY ($1::bigint[])"
    " AND attempts = ($2::int[])[array_position($1::bigint[], id)]"
    " AND (status = 'running') IS TRUE"
    " RETURNING set_config('synchronous_commit', 'off', true)";

static const char retry_sql[] =
    "UPDATE hookd.jobs SET status = 'pending', updated_at = now(), lease_until = NULL,"
    " run_at = now() + make_interval(secs => $3::float8 / 1000), last_error = $4,"
    " output = $5"
    " WHERE id = $1 AND attempts = $2 AND (status = 'running') IS TRUE";

static const char dead_sql[] =
    "UPDATE hookd.jobs SET status = 'dead', finished_at = now(), updated_at = now(),"
    " lease_until = NULL, last_error = $3, output = $4"
    " WHERE id = $1 AND attempts = $2 AND (status = 'running') IS TRUE";

/* Hands claimed jobs back uncounted: attempts that never ran, or were cut at shutdown. */
static const char release_sql[] =
    "UPDATE hookd.jobs SET status = 'pending', attempts = attempts - 1, updated_at = now(),"
    " lease_until = NULL, run_at = now(), last_error = $3"
    " WHERE id = ANY ($1::bigint[])"
    " AND attempts = ($2::int[])[array_position($1::bigint[], id)]"
    " AND (status = 'running') IS TRUE";


long long
dispatch_heartbeat_ms(struct dispatch *d)
{
    /* Without workers there is no listener to stall. */
    return d == NULL ? 0 : d->d_listener_started ? atomic_load(&d->d_heartbeat_ms)
           : clock_mono_ms();
}


void
dispatch_counts(struct dispatch *d, unsigned long long *ret_done, unsigned long long *ret_dead)
{
    *ret_done = d ? atomic_load(&d->d_done_count) : 0;
    *ret_dead = d ? atomic_load(&d->d_dead_count) : 0;
}


unsigned long long
dispatch_claims(struct dispatch *d)
{
    return d ? atomic_load(&d->d_claims) : 0;
}


long
dispatch_backoff_ms(int attempt, int first_ms, double factor, int max_ms, double rnd)
{
    double delay = first_ms * pow(factor, attempt > 1 ? attempt - 1 : 0);

    if (delay > max_ms) {
        delay = max_ms;
    }
    return (long)(delay / 2 + delay / 2 * rnd);
}


static double
random_unit(void)
{
    unsigned int v = 0;

    (void)RAND_bytes((unsigned char *)&v, sizeof(v));
    return (double)v / 4294967296.0;
}


static void
quiet_notice(void *arg, const char *message)
{
    (void)arg;
    (void)message;
}


static PGconn *
connect_db(const char *conninfo)
{
    const char *keys[] = {
        "connect_timeout", "keepalives", "keepalives_idle", "keepalives_interval",
        "keepalives_count", "tcp_user_timeout", "application_name", "client_encoding",
        "dbname", NULL
    };
    const char *vals[] = {"5", "1", "5", "2", "3", "15000", "hookd-dispatch", "UTF8", conninfo,
                          NULL};
    PGconn *c;

    if (conninfo == NULL || *conninfo == '\0') {
        keys[8] = NULL;
    }
    c = PQconnectdbParams(keys, vals, 1);
    if (c != NULL && PQstatus(c) != CONNECTION_OK) {
        PQfinish(c);
        c = NULL;
    }
    if (c != NULL) {
        /* Server notices (e.g. "already exists, skipping") are not ours to print. */
        PQsetNoticeProcessor(c, quiet_notice, NULL);
    }
    return c;
}


/*
 * *c, reconnected when the server dropped it meanwhile (a terminated
 * backend is only noticed when its goodbye is read). NULL when the database
 * cannot be reached.
 */
static PGconn *
conn_usable(PGconn **c, const char *conninfo)
{
    if (*c != NULL && (!PQconsumeInput(*c) || PQstatus(*c) != CONNECTION_OK)) {
        PQfinish(*c);
        *c = NULL;
    }
    if (*c == NULL && (*c = connect_db(conninfo)) != NULL) {
        /*
         * A claim or result that takes this long is stuck behind something
         * (a plan made from stale statistics, a lock): cancelled, it frees
         * the rows it locked and is simply tried again. The supervisor's
         * lease renewals and timeouts never hang behind a lock for long.
         */
        PQclear(PQexec(*c, "SET statement_timeout = '30s'; SET lock_timeout = '5s'"));
    }
    return *c;
}


/*
 * Runs a statement prepared under name on c, preparing it first when this
 * connection (new, or a pooler's other server connection) does not have
 * it. Claims and results run thousands of times a second under load; a
 * prepared statement is not parsed and planned again each time.
 */
static PGresult *
exec_prepared(PGconn *c, const char *name, const char *sql, int n, const char *const *values)
{
    PGresult *res = PQexecPrepared(c, name, n, values, NULL, NULL, 0);
    const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);

    if (state != NULL && strcmp(state, "26000") == 0) {
        PQclear(res);
        res = PQprepare(c, name, sql, n, NULL);
        if (PQresultStatus(res) != PGRES_COMMAND_OK) {
            return res;
        }
        PQclear(res);
        res = PQexecPrepared(c, name, n, values, NULL, NULL, 0);
    }
    return res;
}


/*
 * Runs a result update, on a fresh connection when the old one turned out
 * dead (the updates are fenced by attempt, so repeating one is harmless).
 * Returns the rows it changed (0: the attempt was no longer running), or -1
 * when it could not be recorded; the lease then brings the job back.
 */
static int
update_job(PGconn **c, const char *conninfo, const char *name, const char *sql, int n,
           const char *const *values, long long job)
{
    for (int tries = 0; tries < 2; tries++) {
        PGresult *res;
        bool ok;
        int rows;

        if (conn_usable(c, conninfo) == NULL) {
            break;
        }
        res = exec_prepared(*c, name, sql, n, values);
        ok = PQresultStatus(res) == PGRES_COMMAND_OK || PQresultStatus(res) == PGRES_TUPLES_OK;
        if (!ok && (tries == 1 || PQstatus(*c) == CONNECTION_OK)) {
            const char *msg = PQresultErrorMessage(res);

            log_warning("could not record a job result job=%lld reason=\"%.*s\"", job,
                        (int)strcspn(msg, "\n"), msg);
            PQclear(res);
            return -1;
        }
        rows = atoi(PQcmdTuples(res));
        PQclear(res);
        if (ok) {
            return rows;
        }
    }
    log_warning("could not record a job result job=%lld reason=\"no database connection\"",
                job);
    return -1;
}


/*
 * Records a retry or, when the attempts are spent (max_attempts; less than
 * the route's max_attempts_configured for a failure for good), the job's
 * death.
 */
static void
record_failure(PGconn **c, const char *conninfo, long long job, int attempt, int max_attempts,
               int max_attempts_configured, long delay_ms, const char *reason,
               const char *output, const char *route)
{
    char id[24], att[16], delay[24];
    const char *vals[5] = {id, att, delay, reason, output};

    snprintf(id, sizeof(id), "%lld", job);
    snprintf(att, sizeof(att), "%d", attempt);
    snprintf(delay, sizeof(delay), "%ld", delay_ms);
    if (attempt >= max_attempts) {
        const char *dvals[4] = {id, att, reason, output};

        if (update_job(c, conninfo, "hookd_job_dead", dead_sql, 4, dvals, job) >= 0) {
            log_warning("job dead %s job=%lld route=%s attempt=%d reason=\"%s\"",
                        attempt == max_attempts_configured ? "after its last attempt"
                        : "(failed for good)", job, route, attempt, reason);
        }
        return;
    }
    if (update_job(c, conninfo, "hookd_job_retry", retry_sql, 5, vals, job) >= 0) {
        log_info("job will retry job=%lld route=%s attempt=%d delay_ms=%ld reason=\"%s\"", job,
                 route, attempt, delay_ms, reason);
    }
}


/* ---- the context lent to handlers ---------------------------------------- */

static void
ctx_log(struct hookd_ctx *ctx, enum hookd_log_level level, const char *fmt, ...)
{
    struct worker *w = ctx->hc_host;
    char msg[1024];
    va_list ap;

    if (!log_enabled((enum log_level)level)) {
        return;
    }
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    log_msg((enum log_level)level, "%s route=%s job=%lld event=%lld attempt=%d", msg,
            w->w_route, w->w_job, w->w_event, w->w_attempt);
}


/*
 * Makes the NUL-terminated s storable as PostgreSQL text: each byte that
 * does not start a well-formed UTF-8 character becomes '?', and a
 * character cut at the end (by a length limit) is dropped. A handler's
 * output (a command's raw stdout, say) would otherwise make the statement
 * that records the job's result fail, and the job run again and again.
 * Returns the new length.
 */
static size_t
keep_utf8(char *s)
{
    size_t len = strlen(s);
    size_t i = 0;

    while (i < len) {
        unsigned char c = (unsigned char)s[i];
        size_t n = c < 0x80 ? 1 : (c & 0xe0) == 0xc0 ? 2 : (c & 0xf0) == 0xe0 ? 3
                   : (c & 0xf8) == 0xf0 ? 4 : 0;

        if (n > 1 && i + n > len) {
            size_t k = i + 1;

            while (k < len && ((unsigned char)s[k] & 0xc0) == 0x80) {
                k++;
            }
            if (k == len) {
                s[i] = '\0';           /* the start of a character cut short */
                return i;
            }
        }
        if (n == 0 || i + n > len || !body_utf8_valid((const unsigned char *)s + i, n)) {
            s[i] = '?';
            n = 1;
        }
        i += n;
    }
    return len;
}


static void
ctx_set_output(struct hookd_ctx *ctx, const char *text, size_t len)
{
    struct worker *w = ctx->hc_host;

    if (len >= sizeof(w->w_output)) {
        len = sizeof(w->w_output) - 1;
    }
    memcpy(w->w_output, text, len);
    w->w_output[len] = '\0';
    /* PostgreSQL text cannot hold NUL; keep what comes before one. */
    w->w_output_len = keep_utf8(w->w_output);
}


static void
ctx_set_reason(struct hookd_ctx *ctx, const char *text)
{
    struct worker *w = ctx->hc_host;

    snprintf(w->w_reason, sizeof(w->w_reason), "%s", text);
    w->w_reason[strcspn(w->w_reason, "\r\n")] = '\0';
    (void)keep_utf8(w->w_reason);
}


static void *
ctx_db(struct hookd_ctx *ctx, const char *conninfo)
{
    struct worker *w = ctx->hc_host;
    const char *want = conninfo ? conninfo : w->w_d->d_conninfo;

    if (w->w_handler_db != NULL
        && (!PQconsumeInput(w->w_handler_db) || PQstatus(w->w_handler_db) != CONNECTION_OK
            || strcmp(w->w_handler_db_info, want) != 0))
    {
        PQfinish(w->w_handler_db);
        w->w_handler_db = NULL;
        free(w->w_handler_db_info);
        w->w_handler_db_info = NULL;
    }
    if (w->w_handler_db == NULL) {
        w->w_handler_db = connect_db(want);
        w->w_handler_db_info = w->w_handler_db ? strdup(want) : NULL;
        if (w->w_handler_db_info == NULL) {
            PQfinish(w->w_handler_db);
            w->w_handler_db = NULL;
        }
    }
    return w->w_handler_db;
}


static void
ctx_retry_after(struct hookd_ctx *ctx, int seconds)
{
    struct worker *w = ctx->hc_host;

    w->w_retry_after_s = seconds > 0 ? seconds : 0;
}


/* ---- the ContextGPT API, recorded per job --------------------------------- */

/* Keeps an answer's data until the attempt ends (the ABI's promise). */
static void
keep_data(struct worker *w, struct hookd_api_result *res)
{
    if (res->har_data == NULL) {
        return;
    }
    if (w->w_api_ndata < (int)(sizeof(w->w_api_data) / sizeof(w->w_api_data[0]))) {
        w->w_api_data[w->w_api_ndata++] = res->har_data;
    } else {
        json_object_put(res->har_data);
        res->har_data = NULL;
    }
}


/* True when any string inside v equals text (the thread's messages, any shape). */
static bool
json_holds_text(json_object *v, const char *text, int depth)
{
    if (v == NULL || depth > 8) {
        return false;
    }
    switch (json_object_get_type(v)) {
    case json_type_string:
        return strcmp(json_object_get_string(v), text) == 0;
    case json_type_array:
        for (size_t i = 0; i < json_object_array_length(v); i++) {
            if (json_holds_text(json_object_array_get_idx(v, i), text, depth + 1)) {
                return true;
            }
        }
        return false;
    case json_type_object: {
        json_object_object_foreach(v, key, val) {
            (void)key;
            if (json_holds_text(val, text, depth + 1)) {
                return true;
            }
        }
        return false;
    }
    default:
        return false;
    }
}


static bool
record_action(struct worker *w, const char *seq, const char *action, const char *status,
              const struct hookd_api_result *res)
{
    char job[24], http[16];
    const char *vals[6] = {job, seq, action, status, http, res ? res->har_reason : NULL};
    PGresult *r;
    bool ok;

    snprintf(job, sizeof(job), "%lld", w->w_job);
    snprintf(http, sizeof(http), "%d", res ? res->har_status : 0);
    r = PQexecParams(w->w_conn,
                     "INSERT INTO hookd.api_actions (job_id, seq, action, status, http_status,"
                     " detail) VALUES ($1, $2, $3, $4, nullif($5::int, 0), $6)"
                     " ON CONFLICT (job_id, seq) DO UPDATE SET status = $4,"
                     " http_status = nullif($5::int, 0), detail = $6,"
                     " finished_at = CASE WHEN $4 = 'sending' THEN NULL ELSE now() END",
                     6, NULL, vals, NULL, NULL, 0);
    ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    if (!ok) {
        log_warning("could not record an API call job=%lld seq=%s", w->w_job, seq);
    }
    PQclear(r);
    return ok;
}


/* Status of call seq of this job in an earlier attempt, or "" when none. */
static void
earlier_action(struct worker *w, const char *seq, char *out, size_t cap)
{
    char job[24];
    const char *vals[2] = {job, seq};
    PGresult *r;

    snprintf(job, sizeof(job), "%lld", w->w_job);
    r = PQexecParams(w->w_conn, "SELECT status FROM hookd.api_actions WHERE job_id = $1"
                     " AND seq = $2", 2, NULL, vals, NULL, NULL, 0);
    snprintf(out, cap, "%s", PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1
             ? PQgetvalue(r, 0, 0) : PQresultStatus(r) == PGRES_TUPLES_OK ? "" : "?");
    PQclear(r);
}


/*
 * One recorded call. A call that succeeded in an earlier attempt is not
 * sent again; one whose answer was lost is sent again only when
 * lost_check_text is NULL or is not found by the lost_check request.
 */
static void
api_action(struct worker *w, const char *action, const struct api_request *req,
           const struct api_request *lost_check, const char *lost_check_text,
           struct hookd_api_result *res)
{
    char seq[16], before[16];
    bool sent;

    memset(res, 0, sizeof(*res));
    snprintf(seq, sizeof(seq), "%d", ++w->w_api_seq);
    earlier_action(w, seq, before, sizeof(before));
    if (strcmp(before, "?") == 0) {
        res->har_outcome = HOOKD_RETRY;
        snprintf(res->har_reason, sizeof(res->har_reason), "could not read earlier API calls");
        return;
    }
    if (strcmp(before, "done") == 0) {
        res->har_outcome = HOOKD_DONE;
        res->har_repeated = 1;
        snprintf(res->har_reason, sizeof(res->har_reason), "done by an earlier attempt");
        return;
    }
    if (strcmp(before, "sending") == 0 && lost_check_text != NULL) {
        struct hookd_api_result seen;

        api_send(w->w_d->d_api, lost_check, 0, &seen);
        if (seen.har_outcome != HOOKD_DONE) {
            /* Not knowing whether it went out, do not risk a double post. */
            *res = seen;
            res->har_data = NULL;
            json_object_put(seen.har_data);
            if (res->har_outcome == HOOKD_DONE) {
                res->har_outcome = HOOKD_RETRY;
            }
            return;
        }
        if (json_holds_text(seen.har_data, lost_check_text, 0)) {
            json_object_put(seen.har_data);
            (void)record_action(w, seq, action, "done", &seen);
            res->har_outcome = HOOKD_DONE;
            res->har_repeated = 1;
            snprintf(res->har_reason, sizeof(res->har_reason),
                     "found in the thread after a lost answer");
            log_info("API call was delivered before its answer was lost; not sent again "
                     "job=%lld seq=%s action=%s", w->w_job, seq, action);
            return;
        }
        json_object_put(seen.har_data);
    }
    if (!record_action(w, seq, action, "sending", NULL)) {
        /* Unrecorded, a lost answer could not be told from a lost request. */
        res->har_outcome = HOOKD_RETRY;
        snprintf(res->har_reason, sizeof(res->har_reason), "could not record the API call");
        return;
    }
    sent = api_send(w->w_d->d_api, req, w->w_event_us, res);
    /*
     * A call sent and not answered stays "sending": the next attempt checks
     * before resending. One never sent (the limiter held it back) is
     * "failed", so the next attempt simply sends it.
     */
    if (res->har_status != 0 || !sent) {
        (void)record_action(w, seq, action, res->har_outcome == HOOKD_DONE ? "done" : "failed",
                            res);
    }
    keep_data(w, res);
    log_info("API call action=%s status=%d outcome=%s job=%lld route=%s", action,
             res->har_status, res->har_outcome == HOOKD_DONE ? "done"
             : res->har_outcome == HOOKD_RETRY ? "retry" : "failed", w->w_job, w->w_route);
}


static void
no_api(struct hookd_api_result *res)
{
    memset(res, 0, sizeof(*res));
    res->har_outcome = HOOKD_FAIL;
    snprintf(res->har_reason, sizeof(res->har_reason), "no ContextGPT API key configured");
}


static void
ctx_api_send_message(struct hookd_ctx *ctx, const char *chatbot, const char *thread,
                     const char *text, const char *agent_name, const char *icon_url,
                     struct hookd_api_result *res)
{
    struct worker *w = ctx->hc_host;
    struct api_request req, seen;

    if (w->w_d->d_api == NULL) {
        no_api(res);
        return;
    }
    api_request_message(&req, chatbot, thread, text,
                        agent_name ? agent_name : api_default_agent(w->w_d->d_api), icon_url);
    api_request_messages(&seen, chatbot, thread);
    api_action(w, "send_message", &req, &seen, text, res);
    api_request_clear(&req);
}


static void
ctx_api_escalate(struct hookd_ctx *ctx, const char *chatbot, const char *thread,
                 const char *prompt, struct hookd_api_result *res)
{
    struct worker *w = ctx->hc_host;
    struct api_request req;

    if (w->w_d->d_api == NULL) {
        no_api(res);
        return;
    }
    api_request_escalate(&req, chatbot, thread, prompt);
    api_action(w, "escalate", &req, NULL, NULL, res);
    api_request_clear(&req);
}


static void
ctx_api_update_thread(struct hookd_ctx *ctx, const char *chatbot, json_object *fields,
                      struct hookd_api_result *res)
{
    struct worker *w = ctx->hc_host;
    struct api_request req;

    if (w->w_d->d_api == NULL) {
        no_api(res);
        return;
    }
    api_request_update_thread(&req, chatbot, fields);
    api_action(w, "update_thread", &req, NULL, NULL, res);
    api_request_clear(&req);
}


static void
ctx_api_messages(struct hookd_ctx *ctx, const char *chatbot, const char *thread,
                 struct hookd_api_result *res)
{
    struct worker *w = ctx->hc_host;
    struct api_request req;

    if (w->w_d->d_api == NULL) {
        no_api(res);
        return;
    }
    /* A read changes nothing: not numbered, not recorded. */
    api_request_messages(&req, chatbot, thread);
    api_send(w->w_d->d_api, &req, w->w_event_us, res);
    keep_data(w, res);
}


/* ---- workers ------------------------------------------------------------- */

static int worker_spawn(struct dispatch *d);


/* The routes of cfg as a text[] literal (names are [A-Za-z0-9._-]). */
static void
routes_literal(const struct cfg *cfg, char *out, size_t cap)
{
    size_t n = 0;

    out[n++] = '{';
    for (size_t i = 0; i < cfg->cf_nroutes && n + 70 < cap; i++) {
        n += (size_t)snprintf(out + n, cap - n, "%s%s", i ? "," : "",
                              cfg->cf_routes[i].cr_name);
    }
    snprintf(out + n, cap - n, "}");
}


/*
 * How long until the next pending job of these routes is due, at most
 * limit_ms: a retry due before the next poll is then taken on time.
 */
static int
next_due_ms(struct worker *w, const char *routes, int limit_ms)
{
    const char *vals[1] = {routes};
    PGresult *res = PQexecParams(w->w_conn,
                                 "SELECT ceil(extract(epoch FROM min(run_at) - now()) * 1000)"
                                 " FROM hookd.jobs WHERE status = 'pending'"
                                 " AND route = ANY ($1::text[])", 1, NULL, vals, NULL, NULL, 0);
    int ms = limit_ms;

    if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1
        && !PQgetisnull(res, 0, 0))
    {
        double due = atof(PQgetvalue(res, 0, 0));

        ms = due < 10 ? 10 : due < limit_ms ? (int)due : limit_ms;
    }
    PQclear(res);
    return ms;
}


/* Waits on the wake condition for at most ms (or until stopping). */
static void
worker_idle(struct dispatch *d, int ms)
{
    struct timespec until = clock_mono_after(ms);

    pthread_mutex_lock(&d->d_lock);
    if (!d->d_stopping) {
        (void)pthread_cond_timedwait(&d->d_wake, &d->d_lock, &until);
    }
    pthread_mutex_unlock(&d->d_lock);
}


/*
 * Runs done_sql (outputs) or release_sql (reason) for marks m[0..n).
 * Returns the jobs changed, or -1 when it could not be recorded.
 */
static int
record_marks(PGconn **c, const char *conninfo, const char *name, const char *sql,
             const struct mark *m, int n, bool outputs, const char *reason)
{
    struct buf ids = {0}, atts = {0}, outs = {0};
    const char *vals[3];
    int rows = -1;

    if (n == 0) {
        return 0;
    }
    buf_add(&ids, "{", 1);
    buf_add(&atts, "{", 1);
    buf_add(&outs, "{", 1);
    for (int i = 0; i < n; i++) {
        char num[24];
        int len;

        len = snprintf(num, sizeof(num), "%s%lld", i ? "," : "", m[i].m_job);
        buf_add(&ids, num, (size_t)len);
        len = snprintf(num, sizeof(num), "%s%d", i ? "," : "", m[i].m_attempt);
        buf_add(&atts, num, (size_t)len);
        if (outputs) {
            buf_add_elem(&outs, m[i].m_output, m[i].m_output ? strlen(m[i].m_output) : 0,
                         i == 0);
        }
    }
    buf_add(&ids, "}", 1);
    buf_add(&atts, "}", 1);
    buf_add(&outs, "}", 1);
    vals[0] = ids.b_data;
    vals[1] = atts.b_data;
    vals[2] = outputs ? outs.b_data : reason;
    if (ids.b_failed || atts.b_failed || outs.b_failed) {
        log_warning("could not record %d job results job=%lld reason=\"out of memory\"", n,
                    m[0].m_job);
    } else {
        rows = update_job(c, conninfo, name, sql, 3, vals, m[0].m_job);
    }
    buf_free(&ids);
    buf_free(&atts);
    buf_free(&outs);
    return rows;
}


static void
free_marks(struct mark *m, int n)
{
    for (int i = 0; i < n; i++) {
        free(m[i].m_output);
        m[i].m_output = NULL;
    }
}


/*
 * Records the dones of w's batch; when the database cannot be reached they
 * stay, and the worker tries again before it claims anything else (and once
 * more when it stops), so that a handler which already did its work is not
 * run again just because its result met an outage. Results are fenced by
 * attempt, so a repeat is harmless.
 */
static bool
flush_dones(struct worker *w)
{
    int n = w->w_ndones;
    int rows;

    if (n == 0) {
        return true;
    }
    rows = record_marks(&w->w_conn, w->w_d->d_conninfo, "hookd_job_done", done_sql,
                        w->w_dones, n, true, NULL);
    if (rows < 0) {
        return false;
    }
    pthread_mutex_lock(&w->w_d->d_lock);
    free_marks(w->w_dones, n);
    w->w_ndones = 0;
    pthread_mutex_unlock(&w->w_d->d_lock);
    /* Rows, not marks: the supervisor may have recorded some already. */
    atomic_fetch_add(&w->w_d->d_done_count, (unsigned long long)rows);
    return true;
}


/* What an abandoned worker leaves: its unrecorded dones, and jobs to hand back. */
struct handover {
    struct mark h_dones[DISPATCH_BATCH_MAX];
    int h_ndones;
    struct mark h_back[DISPATCH_BATCH_MAX + 1];
    int h_nback;
};


/* Takes w's batch over; call with d_lock held, w abandoned. */
static void
take_over(struct worker *w, struct handover *h)
{
    memcpy(h->h_dones, w->w_dones, sizeof(w->w_dones[0]) * (size_t)w->w_ndones);
    h->h_ndones = w->w_ndones;
    w->w_ndones = 0;
    memcpy(h->h_back, w->w_held, sizeof(w->w_held[0]) * (size_t)w->w_nheld);
    h->h_nback = w->w_nheld;
    w->w_nheld = 0;
}


/* Records what take_over took, on *c; why says why the jobs go back. */
static void
hand_back(struct dispatch *d, PGconn **c, struct handover *h, const char *why)
{
    if (h->h_ndones > 0) {
        int rows = record_marks(c, d->d_conninfo, "hookd_job_done", done_sql, h->h_dones,
                                h->h_ndones, true, NULL);

        if (rows >= 0) {
            atomic_fetch_add(&d->d_done_count, (unsigned long long)rows);
        } else {
            log_warning("finished jobs could not be recorded; they run again after their "
                        "lease jobs=%d first=%lld", h->h_ndones, h->h_dones[0].m_job);
        }
        free_marks(h->h_dones, h->h_ndones);
    }
    if (h->h_nback == 0) {
        return;
    }
    if (record_marks(c, d->d_conninfo, "hookd_job_release", release_sql, h->h_back,
                     h->h_nback, false, why) < 0)
    {
        log_warning("claimed jobs could not be handed back; they run after their lease, "
                    "an attempt counted jobs=%d first=%lld", h->h_nback, h->h_back[0].m_job);
        return;
    }
    for (int i = 0; i < h->h_nback; i++) {
        log_notice("job handed back to the queue (%s) job=%lld", why, h->h_back[i].m_job);
    }
}


/*
 * Which claim_sql to run next (claiming 1 << i jobs): see DISPATCH_BATCH_US,
 * rounded down to a power of two.
 */
static int
batch_size_log2(const struct worker *w)
{
    double n = w->w_avg_us > 0 ? DISPATCH_BATCH_US / w->w_avg_us : 1;
    int i = 0;

    while (i + 1 < (int)(sizeof(claim_sql) / sizeof(claim_sql[0])) && n >= (double)(2 << i)) {
        i++;
    }
    return i;
}


/*
 * Runs claimed job `row` of res (the first of w_held) and records its
 * outcome: a done joins w_dones, a failure is recorded at once. Returns
 * false when this worker was abandoned meanwhile and must end.
 */
static bool
worker_run(struct worker *w, const struct cfg *cfg, PGresult *res, int row)
{
    struct dispatch *d = w->w_d;
    const struct cfg_route *route = cfg_find_route(cfg, PQgetvalue(res, row, 1));
    struct hookd_event ev;
    struct hookd_ctx ctx;
    enum hookd_outcome outcome;
    bool abandoned;
    long long started_us = clock_mono_us();
    long long started = started_us / 1000;
    double took_us;

    if (route == NULL) {
        /* Removed by a reload since the claim: back to the queue for an instance that has it. */
        struct mark back = {atoll(PQgetvalue(res, row, 0)), atoi(PQgetvalue(res, row, 2)), NULL};

        pthread_mutex_lock(&d->d_lock);
        memmove(w->w_held, w->w_held + 1, sizeof(w->w_held[0]) * (size_t)--w->w_nheld);
        pthread_mutex_unlock(&d->d_lock);
        (void)record_marks(&w->w_conn, d->d_conninfo, "hookd_job_release", release_sql, &back,
                           1, false, "route no longer configured");
        return true;
    }
    memset(&ev, 0, sizeof(ev));
    ev.he_event_id = atoll(PQgetvalue(res, row, 3));
    ev.he_type = PQgetvalue(res, row, 4);
    ev.he_chatbot_id = PQgetisnull(res, row, 5) ? NULL : PQgetvalue(res, row, 5);
    ev.he_thread_id = PQgetisnull(res, row, 6) ? NULL : PQgetvalue(res, row, 6);
    ev.he_raw = PQgetvalue(res, row, 7);
    ev.he_raw_len = (size_t)PQgetlength(res, row, 7);
    {
        /* Ingest accepted the nesting it was configured for; never refuse it here. */
        struct json_tokener *tok = json_tokener_new_ex(DISPATCH_JSON_DEPTH);

        ev.he_json = tok ? json_tokener_parse_ex(tok, ev.he_raw, (int)ev.he_raw_len) : NULL;
        json_tokener_free(tok);
    }
    ev.he_received_us = atoll(PQgetvalue(res, row, 8));
    w->w_event_us = ev.he_received_us;

    pthread_mutex_lock(&d->d_lock);
    w->w_job = atoll(PQgetvalue(res, row, 0));
    w->w_attempt = atoi(PQgetvalue(res, row, 2));
    w->w_event = ev.he_event_id;
    w->w_route = route->cr_name;
    w->w_max_attempts = route->cr_attempts;
    w->w_first_delay_ms = route->cr_first_delay_ms;
    w->w_factor = route->cr_factor;
    w->w_max_delay_ms = route->cr_max_delay_ms;
    w->w_timeout_ms = route->cr_timeout_ms;
    w->w_deadline_ms = started + route->cr_timeout_ms;
    w->w_busy = true;
    memmove(w->w_held, w->w_held + 1, sizeof(w->w_held[0]) * (size_t)--w->w_nheld);
    pthread_mutex_unlock(&d->d_lock);

    w->w_output[0] = '\0';
    w->w_output_len = 0;
    w->w_reason[0] = '\0';
    w->w_retry_after_s = 0;
    memset(&ctx, 0, sizeof(ctx));
    ctx.hc_route = route->cr_name;
    ctx.hc_attempt = w->w_attempt;
    ctx.hc_timeout_ms = route->cr_timeout_ms;
    ctx.hc_host = w;
    ctx.hc_log = ctx_log;
    ctx.hc_set_output = ctx_set_output;
    ctx.hc_set_reason = ctx_set_reason;
    ctx.hc_db = ctx_db;
    ctx.hc_retry_after = ctx_retry_after;
    if (d->d_api != NULL) {
        ctx.hc_api_send_message = ctx_api_send_message;
        ctx.hc_api_escalate = ctx_api_escalate;
        ctx.hc_api_update_thread = ctx_api_update_thread;
        ctx.hc_api_messages = ctx_api_messages;
    }
    w->w_api_seq = 0;
    w->w_api_ndata = 0;
    log_debug("job started job=%lld route=%s event=%lld attempt=%d", w->w_job, w->w_route,
              w->w_event, w->w_attempt);

    if (ev.he_json == NULL) {
        outcome = HOOKD_FAIL;
        snprintf(w->w_reason, sizeof(w->w_reason), "stored event does not parse");
    } else {
        outcome = route->cr_plugin->pl_desc->hp_handle(route->cr_state, &ev, &ctx);
    }
    json_object_put(ev.he_json);
    for (int i = 0; i < w->w_api_ndata; i++) {
        json_object_put(w->w_api_data[i]);
    }
    w->w_api_ndata = 0;

    took_us = (double)(clock_mono_us() - started_us);
    w->w_batch_us += took_us;
    pthread_mutex_lock(&d->d_lock);
    abandoned = w->w_abandoned;
    w->w_busy = false;
    if (!abandoned && outcome == HOOKD_DONE) {
        struct mark *m = &w->w_dones[w->w_ndones++];

        m->m_job = w->w_job;
        m->m_attempt = w->w_attempt;
        /* Out of memory: recorded without its output rather than not at all. */
        m->m_output = w->w_output_len ? strdup(w->w_output) : NULL;
        if (w->w_ndones == 1) {
            w->w_dones_since_ms = clock_mono_ms();
        }
    }
    pthread_mutex_unlock(&d->d_lock);
    metrics_job_attempt(took_us / 1e6,
                        outcome == HOOKD_RETRY && w->w_attempt < w->w_max_attempts);
    if (abandoned) {
        log_warning("handler returned after its job was timed out; result ignored job=%lld "
                    "route=%s", w->w_job, w->w_route);
        return false;
    }

    if (outcome == HOOKD_DONE) {
        log_info("job done job=%lld route=%s event=%lld attempt=%d ms=%lld", w->w_job,
                 w->w_route, w->w_event, w->w_attempt, clock_mono_ms() - started);
    } else {
        long delay = dispatch_backoff_ms(w->w_attempt, w->w_first_delay_ms, w->w_factor,
                                         w->w_max_delay_ms, random_unit());
        const char *reason = w->w_reason[0] ? w->w_reason
                             : outcome == HOOKD_RETRY ? "handler asked to retry"
                             : "handler failed";

        if ((long)w->w_retry_after_s * 1000 > delay) {
            delay = (long)w->w_retry_after_s * 1000;
        }
        record_failure(&w->w_conn, d->d_conninfo, w->w_job, w->w_attempt,
                       outcome == HOOKD_FAIL ? w->w_attempt : w->w_max_attempts,
                       w->w_max_attempts, delay, reason, w->w_output_len ? w->w_output : NULL,
                       w->w_route);
        if (outcome == HOOKD_FAIL || w->w_attempt >= w->w_max_attempts) {
            atomic_fetch_add(&d->d_dead_count, 1);
        }
    }
    return true;
}


/* Whether dispatch is stopping. */
static bool
stopping(struct dispatch *d)
{
    bool stop;

    pthread_mutex_lock(&d->d_lock);
    stop = d->d_stopping;
    pthread_mutex_unlock(&d->d_lock);
    return stop;
}


/*
 * Runs the jobs of one claim in order. Returns false when this worker was
 * abandoned and must end; otherwise jobs it did not start (dispatch is
 * stopping) are still held.
 */
static bool
worker_batch(struct worker *w, const struct cfg *cfg, PGresult *res)
{
    struct dispatch *d = w->w_d;
    int n = PQntuples(res) < DISPATCH_BATCH_MAX ? PQntuples(res) : DISPATCH_BATCH_MAX;

    pthread_mutex_lock(&d->d_lock);
    for (int i = 0; i < n; i++) {
        w->w_held[i].m_job = atoll(PQgetvalue(res, i, 0));
        w->w_held[i].m_attempt = atoi(PQgetvalue(res, i, 2));
        w->w_held[i].m_output = NULL;
    }
    w->w_nheld = n;
    pthread_mutex_unlock(&d->d_lock);
    atomic_fetch_add(&d->d_claims, 1);

    w->w_batch_us = 0;
    for (int i = 0; i < n; i++) {
        if (stopping(d)) {
            return true;
        }
        /* Dones wait for the batch's end only while that is soon. */
        if (w->w_ndones > 0 && clock_mono_ms() - w->w_dones_since_ms >= DISPATCH_BATCH_US / 1000) {
            (void)flush_dones(w);
        }
        if (!worker_run(w, cfg, res, i)) {
            return false;
        }
        w->w_avg_us = w->w_batch_us / (i + 1);
    }
    return true;
}


static void *
worker_main(void *arg)
{
    struct worker *w = arg;
    struct dispatch *d = w->w_d;
    char routes[8192];
    char lease[16];
    bool keep = true;

    while (keep && !stopping(d)) {
        const struct cfg *cfg;
        const char *vals[3] = {routes, lease, d->d_me};
        PGresult *res;
        int size;

        if (!flush_dones(w)) {
            worker_idle(d, 1000);
            continue;
        }
        cfg = cfg_get(d->d_cfgs);
        if (cfg->cf_nroutes == 0) {
            cfg_put(d->d_cfgs, cfg);
            worker_idle(d, d->d_poll_ms);
            continue;
        }
        if (conn_usable(&w->w_conn, d->d_conninfo) == NULL) {
            cfg_put(d->d_cfgs, cfg);
            worker_idle(d, 1000);
            continue;
        }
        routes_literal(cfg, routes, sizeof(routes));
        /* The supervisor renews the leases of running jobs, so this can be short. */
        snprintf(lease, sizeof(lease), "%d", d->d_lease_s);
        size = batch_size_log2(w);
        res = exec_prepared(w->w_conn, claim_names[size], claim_sql[size], 3, vals);
        if (PQresultStatus(res) != PGRES_TUPLES_OK) {
            const char *msg = PQresultErrorMessage(res);

            log_warning("could not claim a job reason=\"%.*s\"", (int)strcspn(msg, "\n"), msg);
            PQclear(res);
            cfg_put(d->d_cfgs, cfg);
            worker_idle(d, 1000);
            continue;
        }
        if (PQntuples(res) == 0) {
            PQclear(res);
            cfg_put(d->d_cfgs, cfg);
            worker_idle(d, next_due_ms(w, routes, d->d_poll_ms));
            continue;
        }
        keep = worker_batch(w, cfg, res);
        PQclear(res);
        cfg_put(d->d_cfgs, cfg);
    }
    if (keep) {
        struct handover h;

        /* Stopping: record what is done, hand back what did not start. */
        pthread_mutex_lock(&d->d_lock);
        take_over(w, &h);
        pthread_mutex_unlock(&d->d_lock);
        hand_back(d, &w->w_conn, &h, "released at shutdown");
    }

    PQfinish(w->w_conn);
    PQfinish(w->w_handler_db);
    free(w->w_handler_db_info);
    pthread_mutex_lock(&d->d_lock);
    if (!w->w_abandoned) {
        /* dispatch_stop joins the others; an abandoned one cleans up itself. */
        w->w_conn = NULL;
        w->w_handler_db = NULL;
        w->w_handler_db_info = NULL;
        d->d_running--;
        pthread_cond_broadcast(&d->d_done);
        pthread_mutex_unlock(&d->d_lock);
        return NULL;
    }
    d->d_running--;
    pthread_cond_broadcast(&d->d_done);
    pthread_mutex_unlock(&d->d_lock);
    free(w);
    return NULL;
}


/* Adds a worker thread; call with d_lock held. */
static int
worker_spawn(struct dispatch *d)
{
    struct worker *w = calloc(1, sizeof(*w));

    if (w == NULL) {
        return -1;
    }
    w->w_d = d;
    if (pthread_create(&w->w_thread, NULL, worker_main, w) != 0) {
        free(w);
        return -1;
    }
    w->w_next = d->d_workers;
    d->d_workers = w;
    d->d_running++;
    return 0;
}


/* ---- listener and supervisor --------------------------------------------- */

/*
 * Dones that wait behind a long job of their batch are recorded by the
 * supervisor once they are DISPATCH_DONES_STALE_MS old, so that the next
 * job of their conversation does not wait for that job too. It records
 * copies and then removes what it recorded from the worker, if the worker
 * is still busy (see struct worker); otherwise the worker records them
 * again, which changes nothing (results are fenced by attempt). When the
 * database is away the dones simply stay with their worker.
 */
#define DISPATCH_DONES_STALE_MS 100

static void
record_stale_dones(struct dispatch *d)
{
    long long now = clock_mono_ms();
    struct worker *w = NULL;
    bool first = true;

    for (;;) {
        struct mark dones[DISPATCH_BATCH_MAX];
        int n = 0, rows;

        /* Only this thread takes workers off the list, so w stays valid. */
        pthread_mutex_lock(&d->d_lock);
        for (w = first ? d->d_workers : w->w_next; w != NULL; w = w->w_next) {
            if (w->w_busy && !w->w_abandoned && w->w_ndones > 0
                && now - w->w_dones_since_ms >= DISPATCH_DONES_STALE_MS)
            {
                for (n = 0; n < w->w_ndones; n++) {
                    dones[n] = w->w_dones[n];
                    dones[n].m_output = w->w_dones[n].m_output
                                        ? strdup(w->w_dones[n].m_output) : NULL;
                }
                break;
            }
        }
        first = false;
        pthread_mutex_unlock(&d->d_lock);
        if (w == NULL) {
            return;
        }
        rows = record_marks(&d->d_sup_conn, d->d_conninfo, "hookd_job_done", done_sql, dones,
                            n, true, NULL);
        free_marks(dones, n);
        pthread_mutex_lock(&d->d_lock);
        if (rows >= 0 && w->w_busy && !w->w_abandoned) {
            int kept = 0;

            for (int i = 0; i < w->w_ndones; i++) {
                bool recorded = false;

                for (int k = 0; k < n && !recorded; k++) {
                    recorded = dones[k].m_job == w->w_dones[i].m_job
                               && dones[k].m_attempt == w->w_dones[i].m_attempt;
                }
                if (recorded) {
                    free(w->w_dones[i].m_output);
                } else {
                    w->w_dones[kept++] = w->w_dones[i];
                }
            }
            w->w_ndones = kept;
        }
        if (w->w_busy && !w->w_abandoned) {
            /* Left or failed: look again in DISPATCH_DONES_STALE_MS, not at once. */
            w->w_dones_since_ms = now;
        }
        pthread_mutex_unlock(&d->d_lock);
        if (rows > 0) {
            atomic_fetch_add(&d->d_done_count, (unsigned long long)rows);
        }
    }
}


/* Times out overrunning handlers: records the failed attempt, replaces the worker. */
static void
supervise(struct dispatch *d)
{
    long long now = clock_mono_ms();

    for (;;) {
        struct worker *late = NULL;
        struct worker **pp;
        long long job = 0;
        int attempt = 0, max_attempts = 0, timeout_ms = 0;
        long delay = 0;
        char reason[96];
        const char *route = NULL;
        char route_copy[72];
        struct handover h;

        pthread_mutex_lock(&d->d_lock);
        for (pp = &d->d_workers; *pp != NULL; pp = &(*pp)->w_next) {
            struct worker *w = *pp;

            if (w->w_busy && !w->w_abandoned && now > w->w_deadline_ms) {
                late = w;
                late->w_abandoned = true;
                *pp = w->w_next;        /* off the list: it frees itself */
                job = w->w_job;
                attempt = w->w_attempt;
                max_attempts = w->w_max_attempts;
                timeout_ms = w->w_timeout_ms;
                delay = dispatch_backoff_ms(attempt, w->w_first_delay_ms, w->w_factor,
                                            w->w_max_delay_ms, random_unit());
                route = w->w_route;
                snprintf(route_copy, sizeof(route_copy), "%s", route ? route : "?");
                take_over(w, &h);
                pthread_detach(w->w_thread);
                if (!d->d_stopping) {
                    (void)worker_spawn(d);
                }
                break;
            }
        }
        pthread_mutex_unlock(&d->d_lock);
        if (late == NULL) {
            return;
        }
        snprintf(reason, sizeof(reason), "handler overran its timeout of %d ms", timeout_ms);
        log_warning("job timed out, worker replaced job=%lld route=%s attempt=%d", job,
                    route_copy, attempt);
        record_failure(&d->d_sup_conn, d->d_conninfo, job, attempt, max_attempts,
                       max_attempts, delay, reason, NULL, route_copy);
        /* The rest of its batch: dones recorded, jobs not started handed back. */
        hand_back(d, &d->d_sup_conn, &h, "its worker timed out on an earlier job");
    }
}


/* Appends id to the bigint[] literal being built in ids. */
static void
add_id(struct buf *ids, long long id)
{
    char one[24];
    int len = snprintf(one, sizeof(one), "%s%lld", ids->b_len > 1 ? "," : "", id);

    buf_add(ids, one, (size_t)len);
}


/*
 * Extends the leases of the jobs this instance holds (running, waiting in
 * a batch, or done and not yet recorded), every third of the lease: a live
 * attempt is never taken over, and a dead instance's jobs come back within
 * one lease.
 */
static void
renew_leases(struct dispatch *d)
{
    /*
     * Never waits: a row locked right now (by its own done being recorded,
     * say) is renewed next time. Waiting, it took part in deadlocks with
     * batched dones, and a renewal stuck behind a lock let leases lapse.
     */
    static const char renew_sql[] =
        "UPDATE hookd.jobs SET lease_until = now() + make_interval(secs => $2::float8)"
        " WHERE id IN (SELECT id FROM hookd.jobs WHERE id = ANY ($1::bigint[])"
        "  AND status = 'running' AND locked_by = $3 ORDER BY id FOR UPDATE SKIP LOCKED)";
    struct buf ids = {0};
    char lease[16];
    const char *vals[3] = {NULL, lease, d->d_me};
    long long now = clock_mono_ms();
    PGresult *res;

    if (now - d->d_renewed_ms < (long long)d->d_lease_s * 1000 / 3) {
        return;
    }
    d->d_renewed_ms = now;
    buf_add(&ids, "{", 1);
    pthread_mutex_lock(&d->d_lock);
    for (struct worker *w = d->d_workers; w != NULL; w = w->w_next) {
        if (w->w_abandoned) {
            continue;
        }
        if (w->w_busy) {
            add_id(&ids, w->w_job);
        }
        for (int i = 0; i < w->w_nheld; i++) {
            add_id(&ids, w->w_held[i].m_job);
        }
        for (int i = 0; i < w->w_ndones; i++) {
            add_id(&ids, w->w_dones[i].m_job);
        }
    }
    pthread_mutex_unlock(&d->d_lock);
    buf_add(&ids, "}", 1);
    if (ids.b_failed) {
        log_warning("could not renew the leases of running jobs reason=\"out of memory\"");
    } else if (ids.b_len > 2 && conn_usable(&d->d_sup_conn, d->d_conninfo) != NULL) {
        vals[0] = ids.b_data;
        snprintf(lease, sizeof(lease), "%d", d->d_lease_s);
        res = PQexecParams(d->d_sup_conn, renew_sql, 3, NULL, vals, NULL, NULL, 0);
        if (PQresultStatus(res) != PGRES_COMMAND_OK) {
            log_warning("could not renew the leases of running jobs");
        }
        PQclear(res);
    }
    buf_free(&ids);
}


static void
wake_all(struct dispatch *d)
{
    pthread_mutex_lock(&d->d_lock);
    pthread_cond_broadcast(&d->d_wake);
    pthread_mutex_unlock(&d->d_lock);
}


/* See DISPATCH_STATS_CHECK_MS. Runs on the listener thread, or before it starts. */
static void
keep_statistics(struct dispatch *d, PGconn *c)
{
    PGresult *res;
    long long changed, rows;

    d->d_stats_checked_ms = clock_mono_ms();
    /* Only the table's or the database's owner may analyze it (PostgreSQL 15). */
    res = PQexec(c, "SELECT s.n_mod_since_analyze, greatest(c.reltuples, 0)::bigint"
                 " FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid"
                 " WHERE s.relid = 'hookd.jobs'::regclass AND (pg_has_role(c.relowner, 'USAGE')"
                 "  OR (SELECT pg_has_role(datdba, 'USAGE') FROM pg_database"
                 "      WHERE datname = current_database()))");
    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
        PQclear(res);
        return;
    }
    changed = atoll(PQgetvalue(res, 0, 0));
    rows = atoll(PQgetvalue(res, 0, 1));
    PQclear(res);
    if (changed < 1000 || changed * 5 < rows) {
        return;
    }
    /* SKIP_LOCKED: never wait behind a VACUUM or another instance's ANALYZE. */
    res = PQexec(c, "ANALYZE (SKIP_LOCKED) hookd.jobs");
    if (PQresultStatus(res) == PGRES_COMMAND_OK) {
        log_info("refreshed the planner's statistics of hookd.jobs changed=%lld rows_before=%lld"
                 " ms=%lld", changed, rows, clock_mono_ms() - d->d_stats_checked_ms);
    } else {
        const char *msg = PQresultErrorMessage(res);

        log_warning("could not analyze hookd.jobs reason=\"%.*s\"", (int)strcspn(msg, "\n"),
                    msg);
    }
    PQclear(res);
}


static void *
listener_main(void *arg)
{
    struct dispatch *d = arg;
    long long retry_at = 0;
    bool down_logged = false;

    while (!stopping(d)) {
        if (d->d_listen_conn == NULL && clock_mono_ms() >= retry_at) {
            PGresult *res;

            d->d_listen_conn = connect_db(d->d_conninfo);
            res = d->d_listen_conn ? PQexec(d->d_listen_conn, "LISTEN hookd_jobs") : NULL;
            if (res == NULL || PQresultStatus(res) != PGRES_COMMAND_OK) {
                PQfinish(d->d_listen_conn);
                d->d_listen_conn = NULL;
                retry_at = clock_mono_ms() + 1000;
                if (!down_logged) {
                    log_warning("dispatch could not listen for new jobs; polling until it can");
                    down_logged = true;
                }
            } else {
                /* Anything announced while we were away is found by a rescan now. */
                if (down_logged) {
                    log_notice("dispatch listening for new jobs again");
                }
                down_logged = false;
                wake_all(d);
            }
            PQclear(res);
        }
        if (d->d_listen_conn != NULL) {
            struct pollfd pfd = {PQsocket(d->d_listen_conn), POLLIN, 0};
            PGnotify *n;
            bool woke = false;

            (void)poll(&pfd, 1, DISPATCH_TICK_MS);
            if (!PQconsumeInput(d->d_listen_conn)
                || PQstatus(d->d_listen_conn) != CONNECTION_OK)
            {
                PQfinish(d->d_listen_conn);
                d->d_listen_conn = NULL;
                retry_at = 0;
                continue;
            }
            while ((n = PQnotifies(d->d_listen_conn)) != NULL) {
                woke = true;
                PQfreemem(n);
            }
            if (woke) {
                wake_all(d);
            }
        } else {
            usleep(DISPATCH_TICK_MS * 1000);
        }
        supervise(d);
        record_stale_dones(d);
        renew_leases(d);
        if (d->d_listen_conn != NULL
            && clock_mono_ms() - d->d_stats_checked_ms >= DISPATCH_STATS_CHECK_MS)
        {
            keep_statistics(d, d->d_listen_conn);
        }
        atomic_store(&d->d_heartbeat_ms, clock_mono_ms());
    }
    return NULL;
}


int
dispatch_start(struct cfg_holder *cfgs, const char *conninfo, struct api *api,
               struct dispatch **ret, char *err, size_t errlen)
{
    struct dispatch *d = calloc(1, sizeof(*d));
    const struct cfg *cfg;
    pthread_condattr_t attr;
    char host[64] = "localhost";
    int workers;

    if (d == NULL || (d->d_conninfo = strdup(conninfo)) == NULL) {
        free(d);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    (void)gethostname(host, sizeof(host) - 1);
    snprintf(d->d_me, sizeof(d->d_me), "%s:%d", host, (int)getpid());
    d->d_cfgs = cfgs;
    d->d_api = api;
    atomic_store(&d->d_heartbeat_ms, clock_mono_ms());
    cfg = cfg_get(cfgs);
    d->d_poll_ms = cfg->cf_poll_interval_ms;
    d->d_lease_s = cfg->cf_lease_s;
    workers = cfg->cf_workers;
    cfg_put(cfgs, cfg);
    pthread_mutex_init(&d->d_lock, NULL);
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&d->d_wake, &attr);
    pthread_cond_init(&d->d_done, &attr);
    pthread_condattr_destroy(&attr);

    if (workers > 0) {
        PGconn *c = connect_db(d->d_conninfo);

        /* Not reachable now: the listener checks once it connects. */
        if (c != NULL) {
            keep_statistics(d, c);
            PQfinish(c);
        }
    }
    pthread_mutex_lock(&d->d_lock);
    for (int i = 0; i < workers; i++) {
        if (worker_spawn(d) < 0) {
            pthread_mutex_unlock(&d->d_lock);
            snprintf(err, errlen, "could not start dispatch worker threads");
            dispatch_stop(d, 0);
            return -1;
        }
    }
    pthread_mutex_unlock(&d->d_lock);
    if (workers > 0) {
        if (pthread_create(&d->d_listener, NULL, listener_main, d) != 0) {
            snprintf(err, errlen, "could not start the dispatch listener thread");
            dispatch_stop(d, 0);
            return -1;
        }
        d->d_listener_started = true;
    }
    *ret = d;
    return 0;
}


void
dispatch_quiesce(struct dispatch *d)
{
    if (d == NULL) {
        return;
    }
    pthread_mutex_lock(&d->d_lock);
    d->d_stopping = true;
    pthread_cond_broadcast(&d->d_wake);
    pthread_mutex_unlock(&d->d_lock);
}


void
dispatch_stop(struct dispatch *d, int grace_ms)
{
    struct timespec until;

    if (d == NULL) {
        return;
    }
    pthread_mutex_lock(&d->d_lock);
    d->d_stopping = true;
    pthread_cond_broadcast(&d->d_wake);
    pthread_mutex_unlock(&d->d_lock);
    if (d->d_listener_started) {
        pthread_join(d->d_listener, NULL);
    }

    /* Running handlers get the grace period; idle workers end at once. */
    until = clock_mono_after(grace_ms);
    pthread_mutex_lock(&d->d_lock);
    while (d->d_running > 0) {
        bool any_busy = false;

        for (struct worker *w = d->d_workers; w != NULL; w = w->w_next) {
            any_busy |= w->w_busy;
        }
        if (!any_busy && d->d_running == 0) {
            break;
        }
        if (pthread_cond_timedwait(&d->d_done, &d->d_lock, &until) == ETIMEDOUT) {
            break;
        }
    }
    /* Still running past the grace: hand their jobs back, uncounted. */
    for (struct worker *w = d->d_workers; w != NULL; w = w->w_next) {
        if (w->w_busy) {
            PGconn *c = NULL;
            struct handover h;

            w->w_abandoned = true;
            take_over(w, &h);
            h.h_back[h.h_nback].m_job = w->w_job;
            h.h_back[h.h_nback].m_attempt = w->w_attempt;
            h.h_back[h.h_nback++].m_output = NULL;
            log_notice("handler still running at shutdown job=%lld route=%s", w->w_job,
                       w->w_route);
            hand_back(d, &c, &h, "released at shutdown");
            PQfinish(c);
        }
    }
    pthread_mutex_unlock(&d->d_lock);

    while (d->d_workers != NULL) {
        struct worker *w = d->d_workers;

        d->d_workers = w->w_next;
        if (w->w_abandoned) {
            pthread_detach(w->w_thread);    /* it frees itself if it ever returns */
            continue;
        }
        pthread_join(w->w_thread, NULL);
        free(w);
    }
    PQfinish(d->d_listen_conn);
    d->d_listen_conn = NULL;
    PQfinish(d->d_sup_conn);
    d->d_sup_conn = NULL;
    pthread_mutex_lock(&d->d_lock);
    if (d->d_running > 0) {
        /* A stuck handler's thread still refers to d: leave it to the exit. */
        pthread_mutex_unlock(&d->d_lock);
        return;
    }
    pthread_mutex_unlock(&d->d_lock);
    pthread_cond_destroy(&d->d_wake);
    pthread_cond_destroy(&d->d_done);
    pthread_mutex_destroy(&d->d_lock);
    free(d->d_conninfo);
    free(d);
}
