/* SPDX-License-Identifier: MIT */
#include "store.h"

#include <errno.h>
#include <poll.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <time.h>

#include <libpq-fe.h>

#include "buf.h"
#include "cfg.h"
#include "clock.h"
#include "embedded.h"
#include "log.h"

/* A batch stops growing past this many body bytes (one item always fits). */
#define STORE_BATCH_BYTES (8u << 20)
/*
 * While one writer has a batch in flight, another starts only when the
 * oldest waiting event has waited this long (or a whole batch waits), so
 * that under load batches grow instead of splitting into many small
 * commits, and a slow commit still does not hold everything back.
 */
#define STORE_OVERLAP_MS 2
/* Key of the advisory lock that serialises migrations across instances. */
#define STORE_MIGRATE_LOCK 0x686f6f6b64LL

enum item_state {
    ITEM_QUEUED = 0,
    ITEM_TAKEN
};

enum exec_status {
    EXEC_OK = 0,
    EXEC_CONN,        /* connection lost, timed out or unusable */
    EXEC_DATA,        /* the server refused the data (SQLSTATE class 22/23) */
    EXEC_OTHER        /* any other server error */
};

struct writer {
    struct store *w_store;
    pthread_t w_thread;
    PGconn *w_conn;
    int w_index;
    atomic_bool w_open;             /* for the metrics: a connection is up */
    atomic_bool w_busy;             /* for the metrics: a batch is in flight */
    bool w_prepared;                /* insert_events_sql is prepared on w_conn */
};

struct store {
    pthread_mutex_t st_lock;
    pthread_cond_t st_wake;          /* writers wait here for items */
    struct store_item *st_head;
    struct store_item *st_tail;
    size_t st_queued;                /* items between st_head and st_tail */
    int st_inflight;                 /* writers with a batch in flight */
    bool st_stopping;

    char *st_conninfo;
    int st_connect_timeout;
    int st_query_timeout;
    int st_max_batch;

    atomic_bool st_migrated;
    atomic_bool st_healthy;          /* last connect attempt worked */
    _Atomic long long st_retry_at_ms;/* while unhealthy: refuse before this */
    atomic_bool st_down_logged;
    _Atomic long long st_heartbeat_ms;
    atomic_ullong st_stored;
    atomic_ullong st_batches;        /* insert statements committed */
    pthread_mutex_t st_migrate_lock;

    struct writer *st_writers;
    int st_nwriters;
    pthread_t st_monitor;
    bool st_monitor_started;
    pthread_cond_t st_monitor_wake;
};

/*
 * One statement stores a whole batch: the arrays are unnested in order,
 * new keys are inserted, and each input row comes back with its new event
 * id, or NULL for a duplicate (duplicate_ids() looks those up). chatbot_id
 * and thread_id are taken from the parsed payload here, so they are the
 * exact text of what was sent. The statement is prepared once per
 * connection, so it reads no table whose plan could go stale as the
 * tables grow from empty: only the inserts' own unique indexes are used.
 */
static const char insert_events_sql[] =
    "WITH input AS ("
    " SELECT u.*, u.raw_body::jsonb AS payload"
    " FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],"
    "  $6::text[], $7::text[], $8::float8[], $9::text[]) WITH ORDINALITY"
    "  AS u(dedup_key, event_type, raw_body, scheme, endpoint, delivery_id, remote_addr,"
    "  received, routes, ord)"
    "), ins AS ("
    " INSERT INTO hookd.events (dedup_key, event_type, chatbot_id, thread_id, raw_body,"
    "  payload, scheme, endpoint, delivery_id, remote_addr, received_at)"
    " SELECT dedup_key, event_type,"
    "  CASE WHEN jsonb_typeof(payload->'data'->'chatbotId') IN ('string', 'number')"
    "   THEN payload->'data'->>'chatbotId' END,"
    "  CASE WHEN jsonb_typeof(payload->'data'->'threadId') IN ('string', 'number')"
    "   THEN payload->'data'->>'threadId' END,"
    "  raw_body, payload, scheme, endpoint, delivery_id, remote_addr::inet,"
    "  to_timestamp(received)"
    " FROM input ORDER BY ord"
    " ON CONFLICT (dedup_key) DO NOTHING"
    " RETURNING id, dedup_key, chatbot_id, thread_id"
    "), jobs AS ("
    /* One job per matching route, for new events only, in arrival order. */
    " INSERT INTO hookd.jobs (event_id, route, conversation)"
    " SELECT ins.id, r.route,"
    "  coalesce(ins.chatbot_id || '/' || ins.thread_id, 'event/' || ins.id)"
    " FROM ins JOIN input i ON i.dedup_key = ins.dedup_key"
    " CROSS JOIN LATERAL unnest(string_to_array(nullif(i.routes, ''), ',')) AS r(route)"
    " ORDER BY ins.id"
    " RETURNING 1"
    ")"
    " SELECT i.ord, ins.id, ins.id IS NOT NULL,"
    "  (SELECT count(pg_notify('hookd_jobs', '')) FROM (SELECT 1 FROM jobs LIMIT 1) j)"
    " FROM input i LEFT JOIN ins ON ins.dedup_key = i.dedup_key"
    " ORDER BY i.ord";

static const char insert_quarantine_sql[] =
    "INSERT INTO hookd.quarantine (endpoint, reason, raw_body, content_type, scheme,"
    " remote_addr, received_at)"
    " VALUES ($1, $2, $3, $4, $5, $6::inet, to_timestamp($7::float8)) RETURNING id";


const char *
store_result_name(enum store_result r)
{
    switch (r) {
    case STORE_STORED:
        return "stored";
    case STORE_DUPLICATE:
        return "duplicate";
    case STORE_QUARANTINED:
        return "quarantined";
    case STORE_UNAVAILABLE:
        return "unavailable";
    }
    return "unknown";
}


/*
 * Opens a connection with hookd's safety settings placed before the
 * user's conninfo, so anything the user sets explicitly wins.
 */
static void
quiet_notice(void *arg, const char *message)
{
    (void)arg;
    (void)message;
}


static PGconn *
db_connect(const char *conninfo, int connect_timeout, int query_timeout)
{
    PGconn *c;
    char ct[16];
    char tut[16];
    const char *keys[] = {
        "connect_timeout", "keepalives", "keepalives_idle", "keepalives_interval",
        "keepalives_count", "tcp_user_timeout", "application_name", "client_encoding",
        "dbname", NULL
    };
    const char *vals[] = {ct, "1", "5", "2", "3", tut, "hookd", "UTF8", conninfo, NULL};

    snprintf(ct, sizeof(ct), "%d", connect_timeout);
    snprintf(tut, sizeof(tut), "%d", query_timeout * 1000);
    if (conninfo == NULL || *conninfo == '\0') {
        keys[8] = NULL;
        vals[8] = NULL;
    }
    c = PQconnectdbParams(keys, vals, 1);
    if (c != NULL) {
        /* Server notices are not ours to print on stderr. */
        PQsetNoticeProcessor(c, quiet_notice, NULL);
    }
    return c;
}


/* The first line of libpq's error text, for logs (never holds the password). */
static const char *
db_error_line(PGconn *c, char *buf, size_t cap)
{
    const char *msg = c ? PQerrorMessage(c) : "out of memory";
    size_t n = strcspn(msg, "\n");

    snprintf(buf, cap, "%.*s", (int)(n < cap ? n : cap - 1), msg);
    return buf;
}


/*
 * Waits at most timeout_ms for the answer to what was just sent on a
 * non-blocking connection. On EXEC_OK *ret gets the result (caller clears
 * it). sqlstate (6 bytes) gets the error code of a server refusal.
 */
static enum exec_status
db_wait(PGconn *c, int timeout_ms, PGresult **ret, char *sqlstate)
{
    long long deadline = clock_mono_ms() + timeout_ms;
    PGresult *res;
    PGresult *last = NULL;
    int flushed = 1;

    /* Send everything, then read until every result is in; all bounded. */
    for (;;) {
        struct pollfd pfd = {PQsocket(c), POLLIN, 0};
        long long left = deadline - clock_mono_ms();

        if (flushed == 1) {
            flushed = PQflush(c);
            if (flushed < 0) {
                goto lost;
            }
        }
        if (flushed == 0 && !PQisBusy(c)) {
            res = PQgetResult(c);
            if (res == NULL) {
                break;
            }
            PQclear(last);
            last = res;
            continue;
        }
        if (flushed == 1) {
            pfd.events |= POLLOUT;
        }
        if (left <= 0) {
            goto lost;
        }
        if (poll(&pfd, 1, (int)left) < 0 && errno != EINTR) {
            goto lost;
        }
        if ((pfd.revents & (POLLIN | POLLERR | POLLHUP)) && !PQconsumeInput(c)) {
            goto lost;
        }
    }
    if (last == NULL || PQstatus(c) != CONNECTION_OK) {
        goto lost;
    }
    if (PQresultStatus(last) != PGRES_TUPLES_OK && PQresultStatus(last) != PGRES_COMMAND_OK) {
        const char *state = PQresultErrorField(last, PG_DIAG_SQLSTATE);

        snprintf(sqlstate, 6, "%s", state ? state : "");
        PQclear(last);
        /* 08: connection exceptions; 57P0x: shutdown, terminated, crashed. */
        if ((sqlstate[0] == '0' && sqlstate[1] == '8')
            || (strncmp(sqlstate, "57P0", 4) == 0))
        {
            return EXEC_CONN;
        }
        if (sqlstate[0] == '2' && (sqlstate[1] == '2' || sqlstate[1] == '3')) {
            return EXEC_DATA;
        }
        return EXEC_OTHER;
    }
    *ret = last;
    return EXEC_OK;
lost:
    PQclear(last);
    return EXEC_CONN;
}


/* Runs one statement (text, parameters apart) and waits for its answer. */
static enum exec_status
db_exec(PGconn *c, const char *sql, int n, const char *const *values, const int *lengths,
        const int *formats, int timeout_ms, PGresult **ret, char *sqlstate)
{
    sqlstate[0] = '\0';
    if (PQstatus(c) != CONNECTION_OK
        || !PQsendQueryParams(c, sql, n, NULL, values, lengths, formats, 0))
    {
        return EXEC_CONN;
    }
    return db_wait(c, timeout_ms, ret, sqlstate);
}


/*
 * Runs the statement prepared as name on this connection, preparing it
 * first when *prepared is false. The statement is parsed and planned once
 * per connection instead of once per batch. A pooler may move the session
 * to a server connection that never saw it (26000): prepared once more.
 */
static enum exec_status
db_exec_prepared(PGconn *c, bool *prepared, const char *name, const char *sql, int n,
                 const char *const *values, const int *lengths, const int *formats,
                 int timeout_ms, PGresult **ret, char *sqlstate)
{
    enum exec_status es = EXEC_OK;

    for (int attempt = 0; attempt < 2; attempt++) {
        PGresult *res = NULL;

        sqlstate[0] = '\0';
        if (!*prepared) {
            if (PQstatus(c) != CONNECTION_OK || !PQsendPrepare(c, name, sql, n, NULL)) {
                return EXEC_CONN;
            }
            es = db_wait(c, timeout_ms, &res, sqlstate);
            PQclear(res);
            if (es != EXEC_OK) {
                return es;
            }
            *prepared = true;
        }
        if (PQstatus(c) != CONNECTION_OK
            || !PQsendQueryPrepared(c, name, n, values, lengths, formats, 0))
        {
            return EXEC_CONN;
        }
        es = db_wait(c, timeout_ms, ret, sqlstate);
        if (es == EXEC_OK || strcmp(sqlstate, "26000") != 0) {
            return es;
        }
        *prepared = false;
    }
    return es;
}


#define EVENT_COLUMNS 9
/* Element types of the binary arrays (pg_type.oid: text and float8). */
#define OID_TEXT 25
#define OID_FLOAT8 701


static void
buf_add_be32(struct buf *b, uint32_t v)
{
    unsigned char be[4] = {(unsigned char)(v >> 24), (unsigned char)(v >> 16),
                           (unsigned char)(v >> 8), (unsigned char)v};

    buf_add(b, (const char *)be, sizeof(be));
}


/*
 * Starts a one-dimensional array of n elements in PostgreSQL's binary
 * format: no quoting or escaping on this side, no text parsing on the
 * server's. The flags word says whether a NULL follows; it is fixed up by
 * bin_null().
 */
static void
bin_array_start(struct buf *b, uint32_t elem_oid, size_t n)
{
    buf_add_be32(b, 1);              /* dimensions */
    buf_add_be32(b, 0);              /* flags: has NULLs */
    buf_add_be32(b, elem_oid);
    buf_add_be32(b, (uint32_t)n);    /* length of the dimension */
    buf_add_be32(b, 1);              /* its lower bound */
}


static void
bin_text(struct buf *b, const char *s, size_t n)
{
    if (s == NULL) {
        buf_add_be32(b, UINT32_MAX);     /* -1: NULL */
        if (!b->b_failed) {
            b->b_data[7] = 1;
        }
        return;
    }
    buf_add_be32(b, (uint32_t)n);
    buf_add(b, s, n);
}


static void
bin_float8(struct buf *b, double d)
{
    uint64_t bits;

    memcpy(&bits, &d, sizeof(bits));
    buf_add_be32(b, 8);
    buf_add_be32(b, (uint32_t)(bits >> 32));
    buf_add_be32(b, (uint32_t)bits);
}


/* Builds the array parameters of insert_events_sql for items[0..n). */
static bool
build_event_arrays(struct store_item **items, size_t n, struct buf cols[EVENT_COLUMNS])
{
    for (int c = 0; c < EVENT_COLUMNS; c++) {
        bin_array_start(&cols[c], c == 7 ? OID_FLOAT8 : OID_TEXT, n);
    }
    for (size_t i = 0; i < n; i++) {
        const struct store_item *it = items[i];
        const char *text[7] = {
            it->si_dedup_key, it->si_event_type, (const char *)it->si_body, it->si_scheme,
            it->si_endpoint, it->si_delivery_id, it->si_remote_addr
        };

        for (int c = 0; c < 7; c++) {
            size_t len = c == 2 ? it->si_body_len : text[c] ? strlen(text[c]) : 0;

            bin_text(&cols[c], text[c], len);
        }
        bin_float8(&cols[7], (double)(it->si_received_us / 1000000)
                             + (double)(it->si_received_us % 1000000) / 1e6);
        bin_text(&cols[8], it->si_routes, it->si_routes ? strlen(it->si_routes) : 0);
    }
    for (int c = 0; c < EVENT_COLUMNS; c++) {
        if (cols[c].b_failed) {
            return false;
        }
    }
    return true;
}


/*
 * Duplicates come back from the insert without their first copy's id. One
 * more read, with a fresh snapshot (so it also sees a first copy another
 * writer committed while the insert ran), finds it; best effort.
 */
static void
duplicate_ids(struct store *st, PGconn *c, struct store_item **items, size_t n)
{
    struct buf keys = {0};
    bool first = true;
    PGresult *res = NULL;
    const char *values[1];
    char sqlstate[6];

    buf_add(&keys, "{", 1);
    for (size_t i = 0; i < n; i++) {
        if (items[i]->si_result == STORE_DUPLICATE && items[i]->si_id == 0) {
            buf_add_elem(&keys, items[i]->si_dedup_key, strlen(items[i]->si_dedup_key), first);
            first = false;
        }
    }
    buf_add(&keys, "}", 1);
    values[0] = keys.b_data;
    if (!first && !keys.b_failed
        && db_exec(c, "SELECT dedup_key, id FROM hookd.events WHERE dedup_key = ANY ($1::text[])",
                   1, values, NULL, NULL, st->st_query_timeout * 1000, &res, sqlstate) == EXEC_OK)
    {
        for (int r = 0; r < PQntuples(res); r++) {
            for (size_t i = 0; i < n; i++) {
                if (items[i]->si_id == 0 && items[i]->si_result == STORE_DUPLICATE
                    && strcmp(items[i]->si_dedup_key, PQgetvalue(res, r, 0)) == 0)
                {
                    items[i]->si_id = atoll(PQgetvalue(res, r, 1));
                }
            }
        }
    }
    PQclear(res);
    free(keys.b_data);
}


/* Inserts events items[0..n) in one statement and fills their results. */
static enum exec_status
write_events(struct writer *w, struct store_item **items, size_t n, char *sqlstate)
{
    struct store *st = w->w_store;
    PGconn *c = w->w_conn;
    struct buf cols[EVENT_COLUMNS];
    const char *values[EVENT_COLUMNS];
    int lengths[EVENT_COLUMNS];
    int formats[EVENT_COLUMNS];
    PGresult *res = NULL;
    enum exec_status es;

    memset(cols, 0, sizeof(cols));
    if (!build_event_arrays(items, n, cols)) {
        es = EXEC_OTHER;
        snprintf(sqlstate, 6, "53200");
        goto out;
    }
    for (int i = 0; i < EVENT_COLUMNS; i++) {
        values[i] = cols[i].b_data;
        lengths[i] = (int)cols[i].b_len;
        formats[i] = 1;
    }
    es = db_exec_prepared(c, &w->w_prepared, "hookd_insert_events", insert_events_sql,
                          EVENT_COLUMNS, values, lengths, formats, st->st_query_timeout * 1000,
                          &res, sqlstate);
    if (es != EXEC_OK) {
        goto out;
    }
    atomic_fetch_add(&st->st_batches, 1);
    if ((size_t)PQntuples(res) != n) {
        es = EXEC_OTHER;
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        struct store_item *it = items[i];
        bool inserted = PQgetvalue(res, (int)i, 2)[0] == 't';

        it->si_id = PQgetisnull(res, (int)i, 1) ? 0 : atoll(PQgetvalue(res, (int)i, 1));
        it->si_result = inserted ? STORE_STORED : STORE_DUPLICATE;
        if (inserted) {
            atomic_fetch_add(&st->st_stored, 1);
        }
        /* The same key twice in one batch: the later one is the duplicate. */
        for (size_t j = 0; inserted && j < i; j++) {
            if (items[j]->si_kind == STORE_EVENT && items[j]->si_id == it->si_id) {
                it->si_result = STORE_DUPLICATE;
            }
        }
    }
    PQclear(res);
    res = NULL;
    duplicate_ids(st, c, items, n);
out:
    PQclear(res);
    for (int i = 0; i < EVENT_COLUMNS; i++) {
        free(cols[i].b_data);
    }
    return es;
}


static enum exec_status
write_quarantine(struct store *st, PGconn *c, struct store_item *it, char *sqlstate)
{
    char when[32];
    const char *values[7];
    int lengths[7] = {0};
    int formats[7] = {0, 0, 1, 0, 0, 0, 0};
    PGresult *res = NULL;
    enum exec_status es;

    snprintf(when, sizeof(when), "%lld.%06lld", (long long)(it->si_received_us / 1000000),
             (long long)(it->si_received_us % 1000000));
    values[0] = it->si_endpoint;
    values[1] = it->si_reason;
    values[2] = (const char *)it->si_body;
    lengths[2] = (int)it->si_body_len;
    values[3] = it->si_content_type;
    values[4] = it->si_scheme;
    values[5] = it->si_remote_addr;
    values[6] = when;
    es = db_exec(c, insert_quarantine_sql, 7, values, lengths, formats,
                 st->st_query_timeout * 1000, &res, sqlstate);
    if (es == EXEC_OK) {
        it->si_id = atoll(PQgetvalue(res, 0, 0));
        it->si_result = STORE_QUARANTINED;
    }
    PQclear(res);
    return es;
}


/*
 * PostgreSQL refused a batch's data. Writes each event alone so that one
 * bad payload cannot hold back the others; one refused alone is kept in
 * quarantine with the refusal as its reason.
 */
static enum exec_status
write_events_one_by_one(struct writer *w, struct store_item **items, size_t n)
{
    struct store *st = w->w_store;
    PGconn *c = w->w_conn;
    char sqlstate[6];

    for (size_t i = 0; i < n; i++) {
        struct store_item *it = items[i];
        enum exec_status es = write_events(w, &items[i], 1, sqlstate);

        if (es == EXEC_DATA) {
            char reason[64];

            snprintf(reason, sizeof(reason), "database refused the payload (sqlstate %s)",
                     sqlstate);
            snprintf(it->si_sqlstate, sizeof(it->si_sqlstate), "%s", sqlstate);
            it->si_reason = reason;
            es = write_quarantine(st, c, it, sqlstate);
            it->si_reason = NULL;
            if (es == EXEC_OK) {
                log_warning("event refused by the database, kept in quarantine "
                            "quarantine_id=%lld sqlstate=%s endpoint=%s",
                            it->si_id, it->si_sqlstate, it->si_endpoint);
            }
        }
        if (es != EXEC_OK) {
            return es;
        }
    }
    return EXEC_OK;
}


static void
mark_down(struct store *st, const char *why)
{
    atomic_store(&st->st_healthy, false);
    atomic_store(&st->st_retry_at_ms, clock_mono_ms() + 1000);
    if (!atomic_exchange(&st->st_down_logged, true)) {
        log_error("database unavailable, answering 503 until it is back reason=\"%s\"", why);
    }
}


static void
mark_up(struct store *st)
{
    atomic_store(&st->st_healthy, true);
    if (atomic_exchange(&st->st_down_logged, false)) {
        log_notice("database available again");
    }
}


static bool
ensure_migrated(struct store *st)
{
    char err[CFG_ERR_MAX];
    int applied = 0;
    bool ok = true;

    if (atomic_load(&st->st_migrated)) {
        return true;
    }
    pthread_mutex_lock(&st->st_migrate_lock);
    if (!atomic_load(&st->st_migrated)) {
        if (store_migrate(st->st_conninfo, st->st_connect_timeout, &applied, err,
                          sizeof(err)) == 0)
        {
            atomic_store(&st->st_migrated, true);
            log_notice("database migrated applied=%d", applied);
            mark_up(st);
        } else {
            mark_down(st, err);
            ok = false;
        }
    }
    pthread_mutex_unlock(&st->st_migrate_lock);
    return ok;
}


/* Makes w's connection usable: connected and the schema migrated. */
static bool
writer_connect(struct writer *w)
{
    struct store *st = w->w_store;
    char msg[256];

    if (w->w_conn != NULL && PQstatus(w->w_conn) == CONNECTION_OK) {
        return true;
    }
    PQfinish(w->w_conn);
    w->w_prepared = false;
    w->w_conn = db_connect(st->st_conninfo, st->st_connect_timeout, st->st_query_timeout);
    if (w->w_conn == NULL || PQstatus(w->w_conn) != CONNECTION_OK) {
        mark_down(st, db_error_line(w->w_conn, msg, sizeof(msg)));
        PQfinish(w->w_conn);
        w->w_conn = NULL;
        return false;
    }
    /*
     * Every statement of a writer finds its rows by an index. One of them
     * is PostgreSQL's own: the foreign-key check of each new job against
     * hookd.events, planned once per connection. Planned while the table
     * looked empty (analyzed at a quiet moment), it was a sequential scan,
     * and a burst then cost each event a read of the whole table: 1,300
     * events/s instead of 13,000 until the next analyze.
     */
    PQclear(PQexec(w->w_conn, "SET enable_seqscan = off"));
    if (PQsetnonblocking(w->w_conn, 1) != 0 || !ensure_migrated(st)) {
        PQfinish(w->w_conn);
        w->w_conn = NULL;
        return false;
    }
    log_debug("database connection opened writer=%d", w->w_index);
    mark_up(st);
    return true;
}


/* Writes one batch; on return every item has its result. */
static void
writer_run_batch(struct writer *w, struct store_item **items, size_t n)
{
    struct store *st = w->w_store;
    struct store_item *events[n];
    size_t nevents = 0;
    char sqlstate[6] = "";
    enum exec_status es = EXEC_CONN;
    char msg[256];

    for (size_t i = 0; i < n; i++) {
        items[i]->si_result = STORE_UNAVAILABLE;
        if (items[i]->si_kind == STORE_EVENT) {
            events[nevents++] = items[i];
        }
    }
    /* A connection that died while idle fails at once; try a fresh one. */
    for (int attempt = 0; attempt < 2; attempt++) {
        if (!writer_connect(w)) {
            return;
        }
        es = nevents > 0 ? write_events(w, events, nevents, sqlstate) : EXEC_OK;
        if (es == EXEC_DATA) {
            es = write_events_one_by_one(w, events, nevents);
        }
        for (size_t i = 0; es == EXEC_OK && i < n; i++) {
            if (items[i]->si_kind == STORE_QUARANTINE) {
                es = write_quarantine(st, w->w_conn, items[i], sqlstate);
            }
        }
        if (es != EXEC_CONN) {
            break;
        }
        db_error_line(w->w_conn, msg, sizeof(msg));
        PQfinish(w->w_conn);
        w->w_conn = NULL;
        if (attempt == 1) {
            mark_down(st, msg);
        } else {
            log_warning("database connection lost, retrying on a new one writer=%d "
                        "reason=\"%s\"", w->w_index, msg);
        }
    }
    if (es == EXEC_OTHER) {
        /* The session may be in any state after an unexpected error: renew it. */
        PQfinish(w->w_conn);
        w->w_conn = NULL;
        log_error("could not store events sqlstate=%s count=%zu", sqlstate, n);
        for (size_t i = 0; i < n; i++) {
            items[i]->si_result = STORE_UNAVAILABLE;
        }
    }
}


/* Called locked: whether an idle writer should take a batch now. */
static bool
writer_may_start(const struct store *st)
{
    return st->st_head != NULL
           && (st->st_inflight == 0 || st->st_queued >= (size_t)st->st_max_batch
               || clock_mono_ms() - st->st_head->si_queued_ms >= STORE_OVERLAP_MS);
}


static void *
writer_main(void *arg)
{
    struct writer *w = arg;
    struct store *st = w->w_store;

    pthread_mutex_lock(&st->st_lock);
    for (;;) {
        struct store_item **batch;
        size_t n = 0;
        size_t bytes = 0;

        while (!st->st_stopping && !writer_may_start(st)) {
            if (st->st_head == NULL) {
                pthread_cond_wait(&st->st_wake, &st->st_lock);
            } else {
                struct timespec until = clock_mono_after(st->st_head->si_queued_ms
                                                         + STORE_OVERLAP_MS - clock_mono_ms());

                (void)pthread_cond_timedwait(&st->st_wake, &st->st_lock, &until);
            }
        }
        if (st->st_head == NULL) {
            break;
        }
        batch = malloc((size_t)st->st_max_batch * sizeof(*batch));
        if (batch == NULL) {
            /* Leave the items for another writer or a later try. */
            pthread_mutex_unlock(&st->st_lock);
            log_error("could not allocate a batch");
            sleep(1);
            pthread_mutex_lock(&st->st_lock);
            continue;
        }
        while (st->st_head != NULL && n < (size_t)st->st_max_batch
               && (n == 0 || bytes + st->st_head->si_body_len <= STORE_BATCH_BYTES))
        {
            struct store_item *it = st->st_head;

            st->st_head = it->si_next;
            it->si_state = ITEM_TAKEN;
            bytes += it->si_body_len;
            batch[n++] = it;
        }
        if (st->st_head == NULL) {
            st->st_tail = NULL;
        } else {
            /*
             * Left over past max_batch or the byte cap: another writer may
             * take them once they waited STORE_OVERLAP_MS, not after this
             * whole commit.
             */
            pthread_cond_signal(&st->st_wake);
        }
        st->st_queued -= n;
        st->st_inflight++;
        pthread_mutex_unlock(&st->st_lock);

        atomic_store(&w->w_busy, true);
        writer_run_batch(w, batch, n);
        atomic_store(&w->w_busy, false);
        atomic_store(&w->w_open, w->w_conn != NULL);

        pthread_mutex_lock(&st->st_lock);
        st->st_inflight--;
        pthread_mutex_unlock(&st->st_lock);
        /*
         * Each waiter is woken on its own semaphore, outside the queue's
         * lock, so that the woken threads do not all queue up for it. An
         * item belongs to its submitter again once posted.
         */
        for (size_t i = 0; i < n; i++) {
            sem_post(&batch[i]->si_done);
        }
        free(batch);
        pthread_mutex_lock(&st->st_lock);
    }
    pthread_mutex_unlock(&st->st_lock);
    PQfinish(w->w_conn);
    w->w_conn = NULL;
    return NULL;
}


enum store_result
store_submit(struct store *st, struct store_item *item)
{
    long long wait_ms = (long long)(st->st_connect_timeout + st->st_query_timeout) * 1000 + 1000;
    struct timespec deadline;

    item->si_result = STORE_UNAVAILABLE;
    item->si_id = 0;
    item->si_sqlstate[0] = '\0';
    if (!atomic_load(&st->st_healthy) && clock_mono_ms() < atomic_load(&st->st_retry_at_ms)) {
        return STORE_UNAVAILABLE;
    }
    if (sem_init(&item->si_done, 0, 0) != 0) {
        return STORE_UNAVAILABLE;
    }
    deadline = clock_mono_after(wait_ms);

    pthread_mutex_lock(&st->st_lock);
    if (st->st_stopping) {
        pthread_mutex_unlock(&st->st_lock);
        sem_destroy(&item->si_done);
        return STORE_UNAVAILABLE;
    }
    item->si_state = ITEM_QUEUED;
    item->si_next = NULL;
    item->si_queued_ms = clock_mono_ms();
    /*
     * Wake a writer when one can start now, or when the queue was empty, so
     * that a writer waiting for more than one batch at a time sets its timer.
     */
    if (st->st_tail == NULL || st->st_inflight == 0
        || st->st_queued + 1 >= (size_t)st->st_max_batch)
    {
        pthread_cond_signal(&st->st_wake);
    }
    if (st->st_tail != NULL) {
        st->st_tail->si_next = item;
    } else {
        st->st_head = item;
    }
    st->st_tail = item;
    st->st_queued++;
    pthread_mutex_unlock(&st->st_lock);

    while (sem_clockwait(&item->si_done, CLOCK_MONOTONIC, &deadline) != 0) {
        if (errno != ETIMEDOUT) {
            continue;                   /* EINTR */
        }
        /*
         * Past the deadline an item still queued is withdrawn. One a writer
         * has taken is waited for: the writer's own timeouts bound it and it
         * still points into this item.
         */
        pthread_mutex_lock(&st->st_lock);
        if (item->si_state == ITEM_QUEUED) {
            struct store_item **pp = &st->st_head;
            struct store_item *prev = NULL;

            while (*pp != item) {
                prev = *pp;
                pp = &(*pp)->si_next;
            }
            *pp = item->si_next;
            if (st->st_tail == item) {
                st->st_tail = prev;
            }
            st->st_queued--;
            pthread_mutex_unlock(&st->st_lock);
            item->si_result = STORE_UNAVAILABLE;
            break;
        }
        pthread_mutex_unlock(&st->st_lock);
        while (sem_wait(&item->si_done) != 0) {
            /* EINTR only */
        }
        break;
    }
    sem_destroy(&item->si_done);
    return item->si_result;
}


long long
store_heartbeat_ms(struct store *st)
{
    return atomic_load(&st->st_heartbeat_ms);
}


unsigned long long
store_events_stored(struct store *st)
{
    return atomic_load(&st->st_stored);
}


unsigned long long
store_batches(struct store *st)
{
    return atomic_load(&st->st_batches);
}


void
store_connections(struct store *st, int *ret_open, int *ret_busy)
{
    *ret_open = 0;
    *ret_busy = 0;
    for (int i = 0; i < st->st_nwriters; i++) {
        *ret_open += atomic_load(&st->st_writers[i].w_open);
        *ret_busy += atomic_load(&st->st_writers[i].w_busy);
    }
}


bool
store_ready(struct store *st)
{
    return atomic_load(&st->st_migrated) && atomic_load(&st->st_healthy);
}


/*
 * Brings the store back when it is down: migrates once, and while the last
 * attempt failed, probes with a fresh connection every second, so that the
 * answers go back from 503 to 200 without waiting for traffic to find out.
 */
static void *
monitor_main(void *arg)
{
    struct store *st = arg;

    const char *fault = getenv("HOOKD_FAULT_INJECT");
    bool stall = fault != NULL && strcmp(fault, "monitor-stall") == 0;

    pthread_mutex_lock(&st->st_lock);
    while (!st->st_stopping) {
        struct timespec until;

        pthread_mutex_unlock(&st->st_lock);
        /*
         * Fault injection for the watchdog test: the monitor stops turning
         * (as a wedged thread would) while everything else goes on.
         */
        if (stall && atomic_load(&st->st_migrated)) {
            pthread_mutex_lock(&st->st_lock);
            while (!st->st_stopping) {
                pthread_cond_wait(&st->st_monitor_wake, &st->st_lock);
            }
            break;
        }
        atomic_store(&st->st_heartbeat_ms, clock_mono_ms());
        if (!atomic_load(&st->st_migrated)) {
            (void)ensure_migrated(st);
        } else if (!atomic_load(&st->st_healthy)) {
            PGconn *c = db_connect(st->st_conninfo, st->st_connect_timeout,
                                   st->st_query_timeout);

            if (c != NULL && PQstatus(c) == CONNECTION_OK) {
                mark_up(st);
            }
            PQfinish(c);
        }
        pthread_mutex_lock(&st->st_lock);
        until = clock_mono_after(1000);
        if (!st->st_stopping) {
            (void)pthread_cond_timedwait(&st->st_monitor_wake, &st->st_lock, &until);
        }
    }
    pthread_mutex_unlock(&st->st_lock);
    return NULL;
}


int
store_start(const struct cfg *cfg, struct store **ret, char *err, size_t errlen)
{
    struct store *st = calloc(1, sizeof(*st));

    if (st == NULL || (st->st_conninfo = strdup(cfg_conninfo(cfg))) == NULL) {
        free(st);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    pthread_mutex_init(&st->st_lock, NULL);
    pthread_mutex_init(&st->st_migrate_lock, NULL);
    {
        pthread_condattr_t attr;

        pthread_condattr_init(&attr);
        pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
        pthread_cond_init(&st->st_wake, &attr);
        pthread_cond_init(&st->st_monitor_wake, &attr);
        pthread_condattr_destroy(&attr);
    }
    st->st_connect_timeout = cfg->cf_connect_timeout;
    st->st_query_timeout = cfg->cf_query_timeout;
    st->st_max_batch = cfg->cf_max_batch;
    atomic_store(&st->st_healthy, true);
    atomic_store(&st->st_heartbeat_ms, clock_mono_ms());
    st->st_writers = calloc((size_t)cfg->cf_writers, sizeof(*st->st_writers));
    if (st->st_writers == NULL) {
        snprintf(err, errlen, "out of memory");
        store_stop(st);
        return -1;
    }
    for (int i = 0; i < cfg->cf_writers; i++) {
        struct writer *w = &st->st_writers[i];

        w->w_store = st;
        w->w_index = i;
        if (pthread_create(&w->w_thread, NULL, writer_main, w) != 0) {
            snprintf(err, errlen, "could not start writer thread: %s", strerror(errno));
            store_stop(st);
            return -1;
        }
        st->st_nwriters++;
    }
    if (pthread_create(&st->st_monitor, NULL, monitor_main, st) != 0) {
        snprintf(err, errlen, "could not start the database monitor thread");
        store_stop(st);
        return -1;
    }
    st->st_monitor_started = true;
    *ret = st;
    return 0;
}


void
store_stop(struct store *st)
{
    if (st == NULL) {
        return;
    }
    pthread_mutex_lock(&st->st_lock);
    st->st_stopping = true;
    pthread_cond_broadcast(&st->st_wake);
    pthread_cond_broadcast(&st->st_monitor_wake);
    pthread_mutex_unlock(&st->st_lock);
    if (st->st_monitor_started) {
        pthread_join(st->st_monitor, NULL);
    }
    for (int i = 0; i < st->st_nwriters; i++) {
        pthread_join(st->st_writers[i].w_thread, NULL);
    }
    free(st->st_writers);
    pthread_cond_destroy(&st->st_wake);
    pthread_cond_destroy(&st->st_monitor_wake);
    pthread_mutex_destroy(&st->st_lock);
    pthread_mutex_destroy(&st->st_migrate_lock);
    free(st->st_conninfo);
    free(st);
}


/* Runs sql on a blocking connection; on failure writes the reason to err. */
static int
migrate_exec(PGconn *c, const char *sql, const char *what, char *err, size_t errlen)
{
    PGresult *res = PQexec(c, sql);
    ExecStatusType s = PQresultStatus(res);
    int ok = s == PGRES_COMMAND_OK || s == PGRES_TUPLES_OK;

    if (!ok) {
        const char *msg = PQresultErrorMessage(res);

        snprintf(err, errlen, "could not %s: %.*s", what, (int)strcspn(msg, "\n"), msg);
    }
    PQclear(res);
    return ok ? 0 : -1;
}


static int
migrate_locked(PGconn *c, int *applied, char *err, size_t errlen)
{
    PGresult *res;
    const char *enc = PQparameterStatus(c, "server_encoding");

    if (enc == NULL || strcmp(enc, "UTF8") != 0) {
        snprintf(err, errlen, "database encoding is %s; hookd needs a UTF8 database",
                 enc ? enc : "unknown");
        return -1;
    }
    if (migrate_exec(c, "CREATE SCHEMA IF NOT EXISTS hookd;"
                     "CREATE TABLE IF NOT EXISTS hookd.schema_migrations ("
                     " version integer PRIMARY KEY, name text NOT NULL,"
                     " applied_at timestamptz NOT NULL DEFAULT now())",
                     "create the hookd schema", err, errlen) < 0)
    {
        return -1;
    }
    for (const struct embedded_file *m = embedded_migrations; m->ef_name != NULL; m++) {
        char version[16];
        const char *params[2] = {version, m->ef_name};
        bool done;

        snprintf(version, sizeof(version), "%d", atoi(m->ef_name));
        res = PQexecParams(c, "SELECT 1 FROM hookd.schema_migrations WHERE version = $1", 1,
                           NULL, params, NULL, NULL, 0);
        if (PQresultStatus(res) != PGRES_TUPLES_OK) {
            PQclear(res);
            snprintf(err, errlen, "could not read hookd.schema_migrations");
            return -1;
        }
        done = PQntuples(res) > 0;
        PQclear(res);
        if (done) {
            continue;
        }
        if (migrate_exec(c, "BEGIN", "begin a migration", err, errlen) < 0) {
            return -1;
        }
        if (migrate_exec(c, (const char *)m->ef_data, m->ef_name, err, errlen) < 0) {
            (void)migrate_exec(c, "ROLLBACK", "roll back", err + strlen(err), 0);
            return -1;
        }
        res = PQexecParams(c, "INSERT INTO hookd.schema_migrations (version, name)"
                           " VALUES ($1, $2)", 2, NULL, params, NULL, NULL, 0);
        if (PQresultStatus(res) != PGRES_COMMAND_OK) {
            PQclear(res);
            (void)migrate_exec(c, "ROLLBACK", "roll back", err, 0);
            snprintf(err, errlen, "could not record migration %s", m->ef_name);
            return -1;
        }
        PQclear(res);
        if (migrate_exec(c, "COMMIT", "commit a migration", err, errlen) < 0) {
            return -1;
        }
        (*applied)++;
    }
    return 0;
}


int
store_migrate(const char *conninfo, int connect_timeout, int *ret_applied, char *err,
              size_t errlen)
{
    PGconn *c = db_connect(conninfo, connect_timeout, 30);
    char lock_sql[96];
    int applied = 0;
    int result = -1;

    if (c == NULL || PQstatus(c) != CONNECTION_OK) {
        char msg[256];

        snprintf(err, errlen, "could not connect to the database: %s",
                 db_error_line(c, msg, sizeof(msg)));
        PQfinish(c);
        return -1;
    }
    snprintf(lock_sql, sizeof(lock_sql), "SELECT pg_advisory_lock(%lld)", STORE_MIGRATE_LOCK);
    if (migrate_exec(c, "SET client_min_messages = warning", "set up the session", err,
                     errlen) == 0
        && migrate_exec(c, lock_sql, "take the migration lock", err, errlen) == 0)
    {
        result = migrate_locked(c, &applied, err, errlen);
        /* Closing the session releases the lock too; this is just tidy. */
        snprintf(lock_sql, sizeof(lock_sql), "SELECT pg_advisory_unlock(%lld)",
                 STORE_MIGRATE_LOCK);
        (void)PQclear(PQexec(c, lock_sql));
    }
    PQfinish(c);
    if (result == 0 && ret_applied != NULL) {
        *ret_applied = applied;
    }
    return result;
}
