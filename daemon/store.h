/* SPDX-License-Identifier: MIT */
/*
 * store: durable storage of events in PostgreSQL with group commit.
 *
 * Request threads hand an item to store_submit() and block until it is
 * committed or refused. A few writer threads, each with its own connection,
 * take every item waiting at that moment and write them with one statement
 * (one commit), so concurrent requests share a commit. Nothing is reported
 * stored before PostgreSQL has confirmed the commit. A repeated dedup key is
 * reported as a duplicate, not an error. A new event's jobs (one per route
 * in si_routes) are created by the same statement, so no acknowledged event
 * is ever without its jobs, and a NOTIFY hookd_jobs wakes the dispatchers.
 *
 * Connections use no prepared statements (nothing to lose on reconnect),
 * TCP keepalives and a user timeout, and every wait on the server is
 * bounded by database.query_timeout; a lost or stalled server turns into
 * STORE_UNAVAILABLE (the caller answers 503) and the writer reconnects on
 * the next batch. The store logs its own connection state changes, once
 * per change.
 */
#ifndef HOOKD_STORE_H
#define HOOKD_STORE_H

#include <pthread.h>
#include <semaphore.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct cfg;
struct store;

enum store_kind {
    STORE_EVENT = 0,
    STORE_QUARANTINE
};

enum store_result {
    STORE_STORED = 0,     /* committed as a new row */
    STORE_DUPLICATE,      /* an event with this dedup key was already there */
    STORE_QUARANTINED,    /* PostgreSQL refused the payload; kept in quarantine */
    STORE_UNAVAILABLE     /* not stored: the database could not take it */
};

/*
 * One request's row. The caller fills the inputs, which must stay valid
 * until store_submit returns; the store fills the outputs.
 */
struct store_item {
    enum store_kind si_kind;
    const char *si_dedup_key;      /* events */
    const char *si_event_type;     /* events */
    const char *si_delivery_id;    /* may be NULL */
    const char *si_routes;         /* events: matching route names, comma-separated */
    const char *si_reason;         /* quarantine */
    const char *si_content_type;   /* quarantine, may be NULL */
    const char *si_endpoint;
    const char *si_scheme;
    const char *si_remote_addr;    /* may be NULL */
    const unsigned char *si_body;
    size_t si_body_len;
    int64_t si_received_us;        /* wall clock, microseconds */

    enum store_result si_result;
    long long si_id;               /* 0 when unknown */
    char si_sqlstate[6];           /* of a refusal, else "" */

    /* Owned by the store while submitted. */
    int si_state;
    long long si_queued_ms;        /* monotonic */
    sem_t si_done;                 /* posted by the writer when done */
    struct store_item *si_next;
};

/*
 * Starts the writer threads and a monitor thread. The database need not be
 * reachable yet: the monitor migrates as soon as it can and probes a lost
 * database every second; meanwhile the store reports unavailable. Returns
 * 0, or -1 with a message in err.
 */
int store_start(const struct cfg *cfg, struct store **ret, char *err, size_t errlen);

/*
 * Submits item and waits until it is committed or refused. Always returns
 * item->si_result. Never waits much longer than connect plus query timeout.
 */
enum store_result store_submit(struct store *st, struct store_item *item);

/* True once migrations ran and the last database attempt succeeded. */
bool store_ready(struct store *st);

/*
 * Monotonic ms of the monitor thread's last round (it runs every second),
 * and events stored since start; for the watchdog and the status line.
 */
long long store_heartbeat_ms(struct store *st);
unsigned long long store_events_stored(struct store *st);

/*
 * Insert statements committed, each one batch of events (new events and
 * duplicates) in one transaction; events divided by this is the mean batch.
 */
unsigned long long store_batches(struct store *st);

/* Writer connections open, and writers busy with a batch right now. */
void store_connections(struct store *st, int *ret_open, int *ret_busy);

/* Stops the writers after the items already queued; NULL is fine. */
void store_stop(struct store *st);

/*
 * Applies the migrations compiled into the binary, under an advisory lock
 * so that instances starting together take turns. Returns 0, or -1 with a
 * message in err. *ret_applied (may be NULL) gets how many were applied.
 */
int store_migrate(const char *conninfo, int connect_timeout, int *ret_applied, char *err,
                  size_t errlen);

/* The name of a result for logs. */
const char *store_result_name(enum store_result r);

#endif
