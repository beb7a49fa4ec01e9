/* SPDX-License-Identifier: MIT */
/*
 * PostgreSQL outages (C11, partly): while the database is away every event
 * gets 503 + Retry-After within the query timeout and none is claimed
 * stored; when it is back, events get 200 again without restarting hookd,
 * also after its sessions were terminated (no stale prepared statements).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>

#include "support/harness.h"

#define SECRET "outage-secret-3e8b51f07a"
#define QUERY_TIMEOUT 2
#define RETRY_AFTER 6
#define MAX_SENT 200
/* An answer while the database is away may take the query timeout + 1 s. */
#define MAX_ANSWER_MS (QUERY_TIMEOUT * 1000 + 1000)

TestSuite(outage, .fini = h_suite_fini, .timeout = 60);

/* Events a test sent and the status each got. */
struct sent {
    char *s_body[MAX_SENT];
    size_t s_len[MAX_SENT];
    int s_status[MAX_SENT];
    int s_n;
};


/*
 * Sends a new event; expects 200, or 503 with Retry-After, within
 * MAX_ANSWER_MS. Returns the status.
 */
static int
send_one(struct h_ctx *x, struct sent *s)
{
    struct h_resp r;
    size_t len;
    char *body;
    long long t0;
    long long took;
    int status;

    cr_assert(s->s_n < MAX_SENT, "too many events");
    body = h_user_event(5000 + (unsigned)s->s_n, &len);
    t0 = h_now_ms();
    status = h_post_signed(x->hx_port, H_DEFAULT_PATH, SECRET, body, len, &r);
    took = h_now_ms() - t0;
    cr_expect(status == 200 || status == 503, "event %d: status %d, body %s", s->s_n,
              status, r.hr_body ? r.hr_body : "(none)");
    cr_expect(took <= MAX_ANSWER_MS, "event %d: answered %d after %lld ms", s->s_n, status,
              took);
    if (status == 503) {
        char *retry = h_resp_header(&r, "Retry-After");

        cr_expect(retry != NULL && atoi(retry) == RETRY_AFTER, "503 with Retry-After %s",
                  retry ? retry : "(none)");
        free(retry);
    }
    h_resp_free(&r);
    s->s_body[s->s_n] = body;
    s->s_len[s->s_n] = len;
    s->s_status[s->s_n] = status;
    s->s_n++;
    return status;
}


/* Sends events until one gets 200, for at most timeout_ms. */
static bool
send_until_200(struct h_ctx *x, struct sent *s, int timeout_ms)
{
    long long t0 = h_now_ms();

    while (h_now_ms() - t0 < timeout_ms) {
        if (send_one(x, s) == 200) {
            return true;
        }
        h_sleep_ms(200);
    }
    return false;
}


/* Every event that got 200 is stored exactly once; frees the bodies. */
static void
expect_acknowledged_stored(struct h_ctx *x, struct sent *s)
{
    long acked = 0;

    for (int i = 0; i < s->s_n; i++) {
        if (s->s_status[i] == 200) {
            acked++;
            cr_expect_eq(h_events_with_body(x, s->s_body[i], s->s_len[i]), 1,
                         "event %d got 200 but is not stored", i);
        }
        free(s->s_body[i]);
    }
    cr_expect_geq(h_events(x), acked);
}


static void
expect_no_stale_statement(struct h_ctx *x)
{
    cr_expect_eq(h_daemon_log_count(&x->hx_daemon, "prepared statement"), 0,
                 "prepared statement errors after reconnecting");
    cr_expect_eq(h_daemon_log_count(&x->hx_daemon, "does not exist"), 0);
}


Test(outage, stopped_postgres_gives_503_then_200_without_restart, .timeout = 90)
{
    struct h_ctx x;
    struct h_cluster pg;
    struct sent *s = calloc(1, sizeof(*s));
    char *dir;
    char *pgdir;
    const char *allowed[] = {"database", "connect", "postgres", "server", NULL};

    cr_assert(s != NULL);
    h_ctx_init(&x, "outage");
    dir = h_tmpdir("pgown");
    pgdir = h_strdupf("%s/pg", dir);
    h_cluster_start(&pg, pgdir, h_free_port());
    snprintf(x.hx_db.hd_conninfo, sizeof(x.hx_db.hd_conninfo), "%s", pg.hc_conninfo);
    x.hx_cfg.hc_secrets[0] = SECRET;
    x.hx_cfg.hc_query_timeout = QUERY_TIMEOUT;
    x.hx_cfg.hc_connect_timeout = 2;
    x.hx_cfg.hc_retry_after = RETRY_AFTER;
    h_ctx_start(&x);

    for (int i = 0; i < 3; i++) {
        cr_expect_eq(send_one(&x, s), 200, "before the outage");
    }

    cr_assert(h_cluster_stop(&pg), "pg.sh stop failed");
    for (int i = 0; i < 3; i++) {
        cr_expect_eq(send_one(&x, s), 503, "with PostgreSQL stopped");
    }

    h_cluster_start(&pg, pgdir, pg.hc_port);
    cr_expect(send_until_200(&x, s, 20000), "no 200 within 20 s of PostgreSQL's return");
    for (int i = 0; i < 5; i++) {
        cr_expect_eq(send_one(&x, s), 200, "after the outage");
    }
    cr_expect(x.hx_daemon.hd_running && !h_daemon_wait_exit(&x.hx_daemon, 0),
              "hookd exited during the outage");
    expect_acknowledged_stored(&x, s);
    expect_no_stale_statement(&x);
    h_ctx_finish(&x, NULL, allowed);
    (void)h_cluster_stop(&pg);
    free(pgdir);
    free(dir);
    free(s);
}


/* Terminates the daemon's sessions on x's database; returns how many. */
static long
terminate_daemon_sessions(struct h_ctx *x)
{
    return h_sql_long(h_env("HOOKD_TEST_PG"), "SELECT count(pg_terminate_backend(pid)) "
                      "FROM pg_stat_activity WHERE datname = '%s' "
                      "AND application_name = 'hookd'", x->hx_db.hd_name);
}


Test(outage, terminated_sessions_are_replaced_without_prepared_statement_errors)
{
    struct h_ctx x;
    struct sent *s = calloc(1, sizeof(*s));
    const char *allowed[] = {"database", "connect", "postgres", "server", "terminat", NULL};

    cr_assert(s != NULL);
    h_ctx_init(&x, "terminate");
    x.hx_cfg.hc_secrets[0] = SECRET;
    x.hx_cfg.hc_query_timeout = QUERY_TIMEOUT;
    x.hx_cfg.hc_retry_after = RETRY_AFTER;
    h_ctx_start(&x);
    for (int i = 0; i < 3; i++) {
        cr_expect_eq(send_one(&x, s), 200, "before terminating");
    }

    for (int round = 0; round < 2; round++) {
        int first;
        long killed = terminate_daemon_sessions(&x);

        cr_expect_geq(killed, 1, "no session with application_name 'hookd' on %s",
                      x.hx_db.hd_name);
        first = send_one(&x, s);
        if (first != 200) {
            cr_log_warn("round %d: the first event after pg_terminate_backend got %d", round,
                        first);
            cr_expect(send_until_200(&x, s, 10000), "no 200 within 10 s (round %d)", round);
        }
        for (int i = 0; i < 5; i++) {
            cr_expect_eq(send_one(&x, s), 200, "after terminating (round %d)", round);
        }
    }
    expect_acknowledged_stored(&x, s);
    expect_no_stale_statement(&x);
    h_ctx_finish(&x, NULL, allowed);
    free(s);
}
