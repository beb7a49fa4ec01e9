/* SPDX-License-Identifier: MIT */
/*
 * Dispatch (issue 3): stored events become jobs, one per matching route, in
 * the same commit; workers of one or several instances run them in order per
 * conversation (C20), retry with backoff and dead-letter after the last
 * attempt (C16 a-c), time out overrunning handlers, reclaim the jobs of a
 * killed instance once their lease has run out (C14), do not wait for a lost
 * NOTIFY nor strand a job whose sessions were killed (C13), refuse plugins
 * that cannot load, and pick up routes added by SIGHUP.
 *
 * The handler is tests/plugins/counter.c (build/tests/plugins/counter.so),
 * which writes one row per attempt into public.counter_runs of the test
 * database. Waiting is always polling with a bound.
 */
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <criterion/logging.h>

#include "support/harness.h"

TestSuite(dispatch, .fini = h_suite_fini, .timeout = 120);

#define D_BOT "900000000000000001"

static const char counter_ddl[] =
    "CREATE TABLE IF NOT EXISTS public.counter_runs (event_id bigint, route text,"
    " attempt int, chatbot_id text, thread_id text, started_us bigint, ended_us bigint,"
    " seq bigserial)";


/* ---- setup -------------------------------------------------------------- */

/* build/tests/plugins, next to this test binary (malloc'd). */
static char *
plugin_dir(void)
{
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    char *slash;
    char *dir;
    char *so;

    cr_assert(n > 0, "readlink /proc/self/exe: %s", strerror(errno));
    exe[n] = '\0';
    slash = strrchr(exe, '/');
    cr_assert_not_null(slash);
    *slash = '\0';
    dir = h_strdupf("%s/plugins", exe);
    so = h_strdupf("%s/counter.so", dir);
    cr_assert(access(so, R_OK) == 0, "%s is missing (run `make tests`)", so);
    free(so);
    return dir;
}


/* The dispatch group and routes list for a config (malloc'd). */
static char *
dispatch_text(const char *dir, int workers, int poll_ms, int lease_s, const char *routes)
{
    char *plugins = dir ? NULL : plugin_dir();
    char *text = h_strdupf("dispatch = {\n  plugin_dir = \"%s\";\n  workers = %d;\n"
                           "  poll_interval = %d;\n  lease = %d;\n};\n"
                           "routes = (\n%s\n);", dir ? dir : plugins, workers, poll_ms,
                           lease_s, routes);

    free(plugins);
    return text;
}


/* Makes x (database, dir, port), the counter table, and its dispatch config. */
static void
setup(struct h_ctx *x, const char *tag, char *top)
{
    h_ctx_init(x, tag);
    cr_assert(h_sql_try(x->hx_db.hd_conninfo, "%s", counter_ddl));
    x->hx_cfg.hc_top_extra = top;
}


/* ---- events ------------------------------------------------------------- */

/* A ContextGPT-like event; extra (may be NULL) is more members of "data". */
static char *
event_body(const char *type, const char *chatbot, const char *thread, unsigned n,
           const char *extra)
{
    return h_strdupf("{\"event\":\"%s\",\"data\":{\"chatbotId\":\"%s\",\"threadId\":\"%s\","
                     "\"messageId\":\"88%016u\"%s%s,"
                     "\"createdAt\":\"2026-11-30T09:14:02.118Z\"}}\n",
                     type, chatbot, thread, n, extra ? "," : "", extra ? extra : "");
}


/*
 * POSTs body to port, asserts 200 and the given status ("stored" or
 * "duplicate"), and returns the event id (-1 when a duplicate has none).
 */
static long
post_event(struct h_ctx *x, int port, const char *body, const char *want)
{
    struct h_resp r;
    char *mark = h_strdupf("\"status\":\"%s\"", want);
    const char *id;
    long ret = -1;

    (void)h_post_signed(port, H_DEFAULT_PATH, x->hx_cfg.hc_secrets[0], body, strlen(body),
                        &r);
    h_assert_status(&r, 200, "posting an event");
    cr_assert(strstr(r.hr_body, mark) != NULL, "want %s, got %s", mark, r.hr_body);
    id = strstr(r.hr_body, "\"id\":\"");
    if (id != NULL) {
        ret = strtol(id + 6, NULL, 10);
    }
    cr_assert(ret > 0 || strcmp(want, "duplicate") == 0, "no event id in %s", r.hr_body);
    h_resp_free(&r);
    free(mark);
    return ret;
}


/* ---- queries ------------------------------------------------------------ */

/* The routes of the event's jobs, sorted, comma-separated ("" for none). */
static char *
routes_of(struct h_ctx *x, long event)
{
    char *v = h_sql_value(x->hx_db.hd_conninfo, "SELECT coalesce(string_agg(route, ','"
                          " ORDER BY route), '') FROM hookd.jobs WHERE event_id = %ld",
                          event);

    cr_assert_not_null(v);
    return v;
}


static long
jobs_total(struct h_ctx *x)
{
    return h_sql_long(x->hx_db.hd_conninfo, "SELECT count(*) FROM hookd.jobs");
}


static long
runs_total(struct h_ctx *x)
{
    return h_sql_long(x->hx_db.hd_conninfo, "SELECT count(*) FROM public.counter_runs");
}


/* A column of the only job of route (malloc'd, NULL for SQL NULL). */
static char *
job_field(struct h_ctx *x, const char *route, const char *column)
{
    cr_assert_eq(h_sql_long(x->hx_db.hd_conninfo, "SELECT count(*) FROM hookd.jobs"
                            " WHERE route = '%s'", route), 1, "want one job of %s", route);
    return h_sql_value(x->hx_db.hd_conninfo, "SELECT %s::text FROM hookd.jobs"
                       " WHERE route = '%s'", column, route);
}


/* Asserts the only job of route has status and attempts, then shows it. */
static void
expect_job(struct h_ctx *x, const char *route, const char *status, int attempts)
{
    char *st = job_field(x, route, "status");
    char *at = job_field(x, route, "attempts");

    cr_expect_str_eq(st, status, "job of %s: status %s, want %s", route, st, status);
    cr_expect_eq(atoi(at), attempts, "job of %s: attempts %s, want %d", route, at, attempts);
    free(st);
    free(at);
}


/* ---- 1. which routes get jobs ------------------------------------------- */

static const char routing_routes[] =
    "{ name = \"leads\"; handler = \"counter\"; events = [ \"NEW_LEAD\" ]; },\n"
    "{ name = \"bot-a\"; handler = \"counter\"; chatbots = [ \"111\" ]; },\n"
    "{ name = \"normal\"; handler = \"counter\"; events = [ \"NEW_MESSAGE\" ];\n"
    "  when = ( { field = \"data.messageType\"; equals = \"NORMAL_MESSAGE\"; } ); },\n"
    "{ name = \"human\"; handler = \"counter\";\n"
    "  when = ( { field = \"data.question\"; matches = \"human|agent\"; } ); },\n"
    "{ name = \"has-lead\"; handler = \"counter\";\n"
    "  when = ( { field = \"data.leadInfo\"; is_null = false; } ); },\n"
    "{ name = \"no-lead\"; handler = \"counter\"; events = [ \"CONVERSATION_ESCALATED\" ];\n"
    "  when = ( { field = \"data.leadInfo\"; is_null = true; } ); },\n"
    "{ name = \"all-conds\"; handler = \"counter\"; events = [ \"NEW_MESSAGE\" ];\n"
    "  chatbots = [ \"222\", \"333\" ];\n"
    "  when = ( { field = \"data.messageType\"; equals = \"NORMAL_MESSAGE\"; },\n"
    "           { field = \"data.question\"; matches = \"order\"; } ); }";

struct routing_case {
    const char *rc_type;
    const char *rc_bot;
    const char *rc_extra;
    const char *rc_want;        /* sorted route names */
};

static const struct routing_case routing_cases[] = {
    {"NEW_MESSAGE", "111",
     "\"messageType\":\"NORMAL_MESSAGE\",\"question\":\"Can I talk to a HUMAN please?\"",
     "bot-a,human,normal"},
    {"NEW_MESSAGE", "222", "\"messageType\":\"AGENT_MESSAGE\",\"question\":null", ""},
    {"NEW_LEAD", "222", "\"lead\":{\"name\":\"A\"}", "leads"},
    {"CONVERSATION_ESCALATED", "111", "\"leadInfo\":{\"name\":\"A\"}", "bot-a,has-lead"},
    {"CONVERSATION_ESCALATED", "222", "\"leadInfo\":null", "no-lead"},
    {"CONVERSATION_ESCALATED", "333", NULL, "no-lead"},
    {"NEW_MESSAGE", "222",
     "\"messageType\":\"NORMAL_MESSAGE\",\"question\":\"Where is my ORDER?\"",
     "all-conds,normal"},
    {"NEW_MESSAGE", "333", "\"messageType\":\"NORMAL_MESSAGE\",\"question\":\"thanks\"",
     "normal"},
    {"NEW_MESSAGE", "333",
     "\"messageType\":\"NORMAL_MESSAGE\",\"question\":\"Agent: my order?\",\"leadInfo\":{}",
     "all-conds,has-lead,human,normal"},
    {"SOMETHING_NEW", "999", NULL, ""},
};

#define N_ROUTING (sizeof(routing_cases) / sizeof(routing_cases[0]))


Test(dispatch, each_matching_route_gets_one_job_in_the_events_commit_and_no_other)
{
    struct h_ctx x;
    long ids[N_ROUTING];
    char *bodies[N_ROUTING];
    long want_jobs = 0;
    long dup;

    setup(&x, "routing", dispatch_text(NULL, 2, 1000, 300, routing_routes));
    h_ctx_start(&x);

    for (size_t i = 0; i < N_ROUTING; i++) {
        const struct routing_case *c = &routing_cases[i];
        char *got;

        bodies[i] = event_body(c->rc_type, c->rc_bot, "thread-r", (unsigned)i, c->rc_extra);
        ids[i] = post_event(&x, x.hx_port, bodies[i], "stored");
        /* Right after the 200: the jobs were committed with the event. */
        got = routes_of(&x, ids[i]);
        cr_expect_str_eq(got, c->rc_want, "event %zu (%s from %s): jobs for \"%s\", want "
                         "\"%s\"", i, c->rc_type, c->rc_bot, got, c->rc_want);
        free(got);
        want_jobs += *c->rc_want ? 1 : 0;
        for (const char *p = c->rc_want; *p != '\0'; p++) {
            want_jobs += *p == ',';
        }
    }
    cr_assert_eq(jobs_total(&x), want_jobs);

    /* Redeliveries are duplicates: no second job, before or after the runs. */
    dup = post_event(&x, x.hx_port, bodies[0], "duplicate");
    cr_assert(dup == -1 || dup == ids[0], "duplicate answered id %ld, want %ld", dup, ids[0]);
    cr_assert_eq(jobs_total(&x), want_jobs, "a duplicate made a job");
    cr_assert_eq(h_wait_long(&x, want_jobs, 15000, "SELECT count(*) FROM hookd.jobs"
                             " WHERE status = 'done'"), want_jobs, "not every job ran");
    (void)post_event(&x, x.hx_port, bodies[8], "duplicate");
    cr_assert_eq(jobs_total(&x), want_jobs, "a duplicate after the runs made a job");

    /* Each job ran once, for its own event and route. */
    cr_assert_eq(h_wait_long(&x, want_jobs, 5000, "SELECT count(*) FROM public.counter_runs"),
                 want_jobs);
    cr_assert_eq(h_sql_long(x.hx_db.hd_conninfo, "SELECT count(*) FROM public.counter_runs r"
                            " JOIN hookd.jobs j ON j.event_id = r.event_id"
                            " AND j.route = r.route WHERE r.attempt = 1"), want_jobs);
    for (size_t i = 0; i < N_ROUTING; i++) {
        free(bodies[i]);
    }
    h_ctx_finish(&x, NULL, NULL);
    free((char *)x.hx_cfg.hc_top_extra);
}


/* ---- 2. order per conversation across two instances --------------------- */

#define ORDER_CONVS 3
#define ORDER_EACH 10

Test(dispatch, two_instances_run_each_conversation_in_order_and_never_overlapping)
{
    static const char routes[] =
        "{ name = \"ordered\"; handler = \"counter\"; options = { sleep_ms = 20; }; }";
    struct h_ctx x;
    struct h_daemon second;
    struct h_config cfg2;
    char conf2[H_PATH_MAX];
    char log2[H_PATH_MAX];
    long ids[ORDER_CONVS][ORDER_EACH];
    long total = ORDER_CONVS * ORDER_EACH;
    long overlaps;
    long instances;

    setup(&x, "order", dispatch_text(NULL, 8, 1000, 300, routes));
    cfg2 = x.hx_cfg;
    cfg2.hc_port = h_free_port();
    snprintf(conf2, sizeof(conf2), "%s/second.conf", x.hx_dir);
    snprintf(log2, sizeof(log2), "%s/second.log", x.hx_dir);
    h_config_write(conf2, &cfg2);
    h_ctx_start(&x);
    h_daemon_start(&second, conf2, log2);

    /* Interleaved: c0 c1 c2 c0 c1 c2 ..., alternately through either instance. */
    for (int i = 0; i < ORDER_EACH; i++) {
        for (int c = 0; c < ORDER_CONVS; c++) {
            unsigned n = (unsigned)(i * ORDER_CONVS + c);
            char thread[32];
            char *body;

            snprintf(thread, sizeof(thread), "conv-%d", c);
            body = event_body("NEW_MESSAGE", D_BOT, thread, n, NULL);
            ids[c][i] = post_event(&x, n % 2 ? cfg2.hc_port : x.hx_port, body, "stored");
            free(body);
            cr_assert(i == 0 || ids[c][i] > ids[c][i - 1], "event ids do not grow");
        }
    }
    cr_assert_eq(h_wait_long(&x, total, 30000, "SELECT count(*) FROM hookd.jobs"
                             " WHERE status = 'done'"), total, "not every job done");
    cr_assert_eq(runs_total(&x), total, "some job ran more than once (or not at all)");
    cr_assert_eq(h_sql_long(x.hx_db.hd_conninfo, "SELECT count(*) FROM hookd.jobs"
                            " WHERE attempts <> 1"), 0);

    for (int c = 0; c < ORDER_CONVS; c++) {
        long prev_end = 0;

        for (int i = 0; i < ORDER_EACH; i++) {
            char *row = h_sql_value(x.hx_db.hd_conninfo,
                                    "SELECT event_id || ' ' || started_us || ' ' || ended_us"
                                    " FROM public.counter_runs WHERE thread_id = 'conv-%d'"
                                    " ORDER BY started_us, seq OFFSET %d LIMIT 1", c, i);
            long event = 0;
            long start = 0;
            long end = 0;

            cr_assert_not_null(row);
            cr_assert_eq(sscanf(row, "%ld %ld %ld", &event, &start, &end), 3);
            cr_expect_eq(event, ids[c][i], "conversation %d: run %d was event %ld, want %ld "
                         "(order of receipt)", c, i, event, ids[c][i]);
            cr_expect_geq(start, prev_end, "conversation %d: run %d started %ld us before "
                          "the previous run ended", c, i, prev_end - start);
            prev_end = end;
            free(row);
        }
    }

    /* Different conversations ran side by side at least once (handlers sleep, not spin). */
    overlaps = h_sql_long(x.hx_db.hd_conninfo, "SELECT count(*) FROM public.counter_runs a"
                          " JOIN public.counter_runs b ON a.thread_id < b.thread_id"
                          " AND a.started_us < b.ended_us AND b.started_us < a.ended_us");
    instances = h_sql_long(x.hx_db.hd_conninfo, "SELECT count(DISTINCT locked_by)"
                           " FROM hookd.jobs");
    cr_log_info("order: %ld overlapping pairs of runs of different conversations; "
                "jobs run by %ld instance(s)", overlaps, instances);
    cr_expect_gt(overlaps, 0, "no two conversations ever ran at the same time");

    cr_assert_eq(h_daemon_stop(&second), 0);
    {
        const char *forbidden[] = {x.hx_cfg.hc_secrets[0], NULL};
        char *log = h_daemon_log(&second);

        h_log_assert_clean(log, forbidden, NULL);
        free(log);
    }
    h_ctx_finish(&x, NULL, NULL);
    free((char *)x.hx_cfg.hc_top_extra);
}


/* ---- 3. backoff and dead letters (C16 a/b) ------------------------------ */

#define FAST_RETRY \
    "retry = { attempts = 3; first_delay = 100; factor = 1.0; max_delay = 100; };"

Test(dispatch, retry_outcome_dead_letters_after_exactly_the_configured_attempts)
{
    static const char routes[] =
        "{ name = \"always-retry\"; handler = \"counter\"; options = { outcome = \"retry\"; };"
        " " FAST_RETRY " }";
    struct h_ctx x;
    char *body;
    char *err;
    long gaps;

    setup(&x, "retry_dead", dispatch_text(NULL, 2, 1000, 300, routes));
    h_ctx_start(&x);
    body = event_body("NEW_MESSAGE", D_BOT, "thread-retry", 1, NULL);
    (void)post_event(&x, x.hx_port, body, "stored");
    free(body);

    cr_assert_eq(h_wait_long(&x, 1, 10000, "SELECT count(*) FROM hookd.jobs"
                             " WHERE status = 'dead'"), 1, "the job never went dead");
    expect_job(&x, "always-retry", "dead", 3);
    err = job_field(&x, "always-retry", "last_error");
    cr_expect(err != NULL && *err != '\0', "a dead job without last_error");
    free(err);
    cr_expect_eq(runs_total(&x), 3);
    cr_expect_eq(h_sql_long(x.hx_db.hd_conninfo, "SELECT count(DISTINCT attempt)"
                            " FROM public.counter_runs WHERE attempt BETWEEN 1 AND 3"), 3);
    /* Each retry waited at least half of its 100 ms backoff (equal jitter). */
    gaps = h_sql_long(x.hx_db.hd_conninfo, "SELECT count(*) FROM public.counter_runs a"
                      " JOIN public.counter_runs b ON b.attempt = a.attempt + 1"
                      " WHERE b.started_us - a.ended_us < 50000");
    cr_expect_eq(gaps, 0, "%ld retries came sooner than the backoff allows", gaps);
    cr_expect(h_daemon_wait_log(&x.hx_daemon, "job dead after its last attempt", 1, 2000));

    /* Well past any backoff: still three runs, no fourth attempt. */
    h_sleep_ms(1500);
    cr_expect_eq(runs_total(&x), 3, "a dead job ran again");
    expect_job(&x, "always-retry", "dead", 3);
    h_ctx_finish(&x, NULL, NULL);
    free((char *)x.hx_cfg.hc_top_extra);
}


Test(dispatch, two_failures_then_success_within_three_attempts_ends_done)
{
    static const char routes[] =
        "{ name = \"flaky\"; handler = \"counter\"; options = { fail_first = 2; }; "
        FAST_RETRY " }";
    struct h_ctx x;
    char *body;
    char *err;

    setup(&x, "retry_done", dispatch_text(NULL, 2, 1000, 300, routes));
    h_ctx_start(&x);
    body = event_body("NEW_MESSAGE", D_BOT, "thread-flaky", 1, NULL);
    (void)post_event(&x, x.hx_port, body, "stored");
    free(body);

    cr_assert_eq(h_wait_long(&x, 1, 10000, "SELECT count(*) FROM hookd.jobs"
                             " WHERE status = 'done'"), 1, "the job never got done");
    expect_job(&x, "flaky", "done", 3);
    err = job_field(&x, "flaky", "last_error");
    cr_expect_null(err, "a done job keeps last_error \"%s\"", err);
    free(err);
    cr_expect_eq(runs_total(&x), 3);
    cr_expect_eq(h_sql_long(x.hx_db.hd_conninfo, "SELECT count(*) FROM hookd.jobs"
                            " WHERE status = 'dead'"), 0, "the dead letters are not empty");
    cr_expect(h_daemon_wait_log(&x.hx_daemon, "job done", 1, 2000));
    h_sleep_ms(500);
    cr_expect_eq(runs_total(&x), 3, "a done job ran again");
    h_ctx_finish(&x, NULL, NULL);
    free((char *)x.hx_cfg.hc_top_extra);
}


Test(dispatch, fail_outcome_dead_letters_after_one_run)
{
    static const char routes[] =
        "{ name = \"hopeless\"; handler = \"counter\"; options = { outcome = \"fail\"; }; "
        FAST_RETRY " }";
    struct h_ctx x;
    char *body;
    char *err;

    setup(&x, "fail_dead", dispatch_text(NULL, 2, 1000, 300, routes));
    h_ctx_start(&x);
    body = event_body("NEW_MESSAGE", D_BOT, "thread-fail", 1, NULL);
    (void)post_event(&x, x.hx_port, body, "stored");
    free(body);

    cr_assert_eq(h_wait_long(&x, 1, 10000, "SELECT count(*) FROM hookd.jobs"
                             " WHERE status = 'dead'"), 1, "the job never went dead");
    expect_job(&x, "hopeless", "dead", 1);
    err = job_field(&x, "hopeless", "last_error");
    cr_expect(err != NULL && *err != '\0', "a dead job without last_error");
    free(err);
    h_sleep_ms(800);
    cr_expect_eq(runs_total(&x), 1, "a failed job ran again");
    h_ctx_finish(&x, NULL, NULL);
    free((char *)x.hx_cfg.hc_top_extra);
}


/* C16 c: a retry that fell due while no instance ran is taken at start-up, once. */
Test(dispatch, overdue_retry_runs_once_promptly_after_a_restart)
{
    static const char routes[] =
        "{ name = \"later\"; handler = \"counter\"; options = { fail_first = 1; };"
        " retry = { attempts = 3; first_delay = 60000; factor = 1.0; max_delay = 60000; }; }";
    struct h_ctx x;
    char *body;
    int code;

    setup(&x, "overdue", dispatch_text(NULL, 2, 2000, 300, routes));
    h_ctx_start(&x);
    body = event_body("NEW_MESSAGE", D_BOT, "thread-overdue", 1, NULL);
    (void)post_event(&x, x.hx_port, body, "stored");
    free(body);
    cr_assert_eq(h_wait_long(&x, 1, 5000, "SELECT count(*) FROM hookd.jobs"
                             " WHERE status = 'pending' AND attempts = 1"), 1,
                 "the first attempt did not schedule a retry");
    code = h_daemon_stop(&x.hx_daemon);
    cr_assert_eq(code, 0, "hookd exited %d", code);

    /* While no instance runs, the retry falls due (aged with SQL, not waited for). */
    cr_assert(h_sql_try(x.hx_db.hd_conninfo, "UPDATE hookd.jobs SET run_at = now()"
                        " - interval '1 second' WHERE status = 'pending'"));
    cr_expect_eq(runs_total(&x), 1);
    h_ctx_start(&x);
    cr_assert_eq(h_wait_long(&x, 1, 2000 + 5000, "SELECT count(*) FROM hookd.jobs"
                             " WHERE status = 'done'"), 1,
                 "the overdue retry did not run within poll_interval + 5 s of start-up");
    expect_job(&x, "later", "done", 2);
    h_sleep_ms(500);
    cr_expect_eq(runs_total(&x), 2, "the overdue retry ran more than once");
    h_ctx_finish(&x, NULL, NULL);
    free((char *)x.hx_cfg.hc_top_extra);
}


/* C27: once the stop signal is in, no new job starts; the due one waits for a restart. */
Test(dispatch, no_job_starts_after_sigterm)
{
    static const char routes[] =
        "{ name = \"parked\"; handler = \"counter\"; options = { fail_first = 1; };"
        " retry = { attempts = 3; first_delay = 60000; factor = 1.0; max_delay = 60000; }; }";
    struct h_ctx x;
    char *body;

    setup(&x, "sigterm", dispatch_text(NULL, 2, 100, 300, routes));
    h_ctx_start(&x);
    body = event_body("NEW_MESSAGE", D_BOT, "thread-sigterm", 1, NULL);
    (void)post_event(&x, x.hx_port, body, "stored");
    free(body);
    cr_assert_eq(h_wait_long(&x, 1, 5000, "SELECT count(*) FROM hookd.jobs"
                             " WHERE status = 'pending' AND attempts = 1"), 1,
                 "the first attempt did not schedule a retry");

    /* Stopping (logged), then the retry falls due while the daemon winds down. */
    h_daemon_signal(&x.hx_daemon, SIGTERM);
    cr_assert(h_daemon_wait_log(&x.hx_daemon, "stopping", 1, 5000), "no \"stopping\"");
    cr_assert(h_sql_try(x.hx_db.hd_conninfo, "UPDATE hookd.jobs SET run_at = now()"
                        " WHERE status = 'pending'"));
    cr_assert(h_daemon_wait_exit(&x.hx_daemon, 15000), "hookd did not exit after SIGTERM");
    cr_expect(WIFEXITED(x.hx_daemon.hd_status) && WEXITSTATUS(x.hx_daemon.hd_status) == 0,
              "hookd did not exit 0 after SIGTERM");
    cr_expect_eq(runs_total(&x), 1, "a job was started after SIGTERM");
    expect_job(&x, "parked", "pending", 1);
    h_ctx_finish(&x, NULL, NULL);
    free((char *)x.hx_cfg.hc_top_extra);
}

/* ---- 4. lease reclaim after kill -9 (C14) ------------------------------- */

/*
 * The daemon raises the lease to at least the longest route timeout + 30 s,
 * so a real expiry takes 30 s or more; this test ages the lease with SQL.
 */
Test(dispatch, job_of_a_killed_instance_is_reclaimed_once_its_lease_expired)
{
    static const char routes[] =
        "{ name = \"slow\"; handler = \"counter\"; options = { sleep_ms = 1500; };"
        " timeout = 5000; }";
    struct h_ctx x;
    struct h_daemon fresh;
    char *body;
    char *lease;
    long long t0;
    long done;

    setup(&x, "lease", dispatch_text(NULL, 2, 2000, 3, routes));
    h_ctx_start(&x);
    body = event_body("NEW_MESSAGE", D_BOT, "thread-lease", 1, NULL);
    (void)post_event(&x, x.hx_port, body, "stored");
    free(body);

    /* Mid-run (the handler sleeps 1.5 s before it records anything): kill -9. */
    cr_assert_eq(h_wait_long(&x, 1, 5000, "SELECT count(*) FROM hookd.jobs"
                             " WHERE status = 'running'"), 1, "the job never started");
    h_daemon_signal(&x.hx_daemon, SIGKILL);
    cr_assert(h_daemon_wait_exit(&x.hx_daemon, 5000));
    expect_job(&x, "slow", "running", 1);
    cr_assert_eq(runs_total(&x), 0, "the killed run finished after all");
    lease = h_sql_value(x.hx_db.hd_conninfo, "SELECT round(extract(epoch FROM"
                        " lease_until - now()))::text FROM hookd.jobs");
    cr_log_info("lease: %s s left on the killed instance's job", lease ? lease : "NULL");
    free(lease);

    /* A fresh instance leaves a job whose lease is still live alone ... */
    h_daemon_start(&fresh, x.hx_conf, x.hx_log);
    h_sleep_ms(3000);
    expect_job(&x, "slow", "running", 1);
    cr_expect_eq(runs_total(&x), 0, "a job under a live lease ran again");

    /* ... and takes it once the lease is over: one more run, attempt 2, done. */
    cr_assert(h_sql_try(x.hx_db.hd_conninfo, "UPDATE hookd.jobs SET lease_until = now()"
                        " - interval '1 second' WHERE status = 'running'"));
    t0 = h_now_ms();
    done = h_wait_long(&x, 1, 2000 + 5000, "SELECT count(*) FROM hookd.jobs"
                       " WHERE status = 'done'");
    cr_assert_eq(done, 1, "an expired job was not reclaimed within poll_interval + 5 s");
    cr_log_info("lease: reclaimed and done %lld ms after the lease ran out",
                h_now_ms() - t0);
    expect_job(&x, "slow", "done", 2);
    cr_expect_eq(runs_total(&x), 1);
    cr_expect_eq(h_sql_long(x.hx_db.hd_conninfo, "SELECT count(*) FROM public.counter_runs"
                            " WHERE attempt = 2"), 1);
    cr_expect_eq(h_sql_long(x.hx_db.hd_conninfo, "SELECT count(*) FROM hookd.jobs"
                            " WHERE status = 'running'"), 0);

    x.hx_daemon = fresh;
    h_ctx_finish(&x, NULL, NULL);
    free((char *)x.hx_cfg.hc_top_extra);
}


/* ---- 5. a handler overrunning its timeout ------------------------------- */

Test(dispatch, handler_overrunning_its_timeout_is_a_failed_attempt_and_serving_goes_on)
{
    static const char routes[] =
        "{ name = \"overrun\"; handler = \"counter\"; events = [ \"NEW_MESSAGE\" ];\n"
        "  options = { sleep_ms = 3000; }; timeout = 500;\n"
        "  retry = { attempts = 2; first_delay = 100; factor = 1.0; max_delay = 100; }; },\n"
        "{ name = \"quick\"; handler = \"counter\"; events = [ \"NEW_LEAD\" ]; }";
    struct h_ctx x;
    char *body;
    char *err;

    setup(&x, "timeout", dispatch_text(NULL, 2, 1000, 300, routes));
    h_ctx_start(&x);
    body = event_body("NEW_MESSAGE", D_BOT, "thread-slow", 1, NULL);
    (void)post_event(&x, x.hx_port, body, "stored");
    free(body);

    cr_assert_eq(h_wait_long(&x, 1, 10000, "SELECT count(*) FROM hookd.jobs"
                             " WHERE route = 'overrun' AND status = 'dead'"), 1,
                 "two overrunning attempts did not dead-letter the job");
    expect_job(&x, "overrun", "dead", 2);
    err = job_field(&x, "overrun", "last_error");
    cr_expect(err != NULL && strcasestr(err, "time") != NULL,
              "a timed-out job whose last_error does not say so: %s", err ? err : "NULL");
    free(err);
    cr_expect_geq(h_daemon_log_count(&x.hx_daemon, "job timed out"), 2);

    /* The pool was replaced: other work still runs, webhooks are still stored. */
    body = event_body("NEW_LEAD", D_BOT, "thread-quick", 2, NULL);
    (void)post_event(&x, x.hx_port, body, "stored");
    free(body);
    cr_assert_eq(h_wait_long(&x, 1, 5000, "SELECT count(*) FROM hookd.jobs"
                             " WHERE route = 'quick' AND status = 'done'"), 1,
                 "no job ran after the timeouts");

    /* The abandoned handlers return at last (answering done): that changes nothing. */
    cr_expect_eq(h_wait_long(&x, 2, 8000, "SELECT count(*) FROM public.counter_runs"
                             " WHERE route = 'overrun'"), 2, "the overrunning handlers never "
                 "returned");
    h_sleep_ms(300);
    expect_job(&x, "overrun", "dead", 2);
    h_ctx_finish(&x, NULL, NULL);
    free((char *)x.hx_cfg.hc_top_extra);
}


/* ---- 6. plugins that cannot load ---------------------------------------- */

/* Compiles C source src into the shared object so (asserts cc exits 0). */
static void
build_so(const char *dir, const char *name, const char *src)
{
    char *c_path = h_strdupf("%s/%s.c", dir, name);
    char *so_path = h_strdupf("%s/%s.so", dir, name);
    int status = 0;
    pid_t pid;

    h_write_file(c_path, src, strlen(src), 0644);
    pid = fork();
    cr_assert(pid >= 0);
    if (pid == 0) {
        execlp("cc", "cc", "-shared", "-fPIC", "-o", so_path, c_path, (char *)NULL);
        _exit(127);
    }
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "cc %s failed", c_path);
    cr_assert(chmod(so_path, 0755) == 0);
    free(c_path);
    free(so_path);
}


/* Number of non-empty lines in text. */
static int
count_lines(const char *text)
{
    int n = 0;
    const char *p = text;

    while (*p != '\0') {
        const char *end = strchr(p, '\n');
        size_t len = end ? (size_t)(end - p) : strlen(p);

        n += len > 0;
        p += len + (end ? 1 : 0);
    }
    return n;
}


/* Runs `hookd check-config --config conf`; returns the exit code, stderr in *err. */
static int
check_config(const char *conf, const char *dir, char **err)
{
    char *out_path = h_strdupf("%s/check.out", dir);
    char *err_path = h_strdupf("%s/check.err", dir);
    int status = 0;
    pid_t pid = fork();

    cr_assert(pid >= 0);
    if (pid == 0) {
        FILE *o = freopen(out_path, "w", stdout);
        FILE *e = freopen(err_path, "w", stderr);

        if (o == NULL || e == NULL) {
            _exit(126);
        }
        execl(h_env("HOOKD_BIN"), "hookd", "check-config", "--config", conf, (char *)NULL);
        _exit(127);
    }
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    *err = h_read_file(err_path, NULL);
    cr_assert_not_null(*err);
    free(out_path);
    free(err_path);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}


/*
 * With routes (handler plugins from plugins), check-config and serve both
 * exit 2 with one line naming the config file and holding needle.
 */
static void
expect_plugin_refused(const char *tag, const char *plugins, const char *routes,
                      const char *needle)
{
    struct h_ctx x;
    char *err;
    char *log;
    char *where;
    int code;
    bool opened = false;
    long long t0;

    h_ctx_init(&x, tag);
    x.hx_cfg.hc_top_extra = dispatch_text(plugins, 1, 1000, 300, routes);
    h_config_write(x.hx_conf, &x.hx_cfg);
    where = h_strdupf("%s:", x.hx_conf);

    code = check_config(x.hx_conf, x.hx_dir, &err);
    cr_expect_eq(code, 2, "%s: check-config exited %d, want 2; stderr: %s", tag, code, err);
    cr_expect_eq(count_lines(err), 1, "%s: check-config: want one line, got:\n%s", tag, err);
    cr_expect(strstr(err, where) != NULL, "%s: check-config names no FILE:LINE: %s", tag,
              err);
    cr_expect(strstr(err, needle) != NULL, "%s: check-config does not say \"%s\": %s", tag,
              needle, err);
    free(err);

    t0 = h_now_ms();
    h_daemon_spawn(&x.hx_daemon, x.hx_conf, x.hx_log);
    while (!h_daemon_wait_exit(&x.hx_daemon, 0) && h_now_ms() - t0 < 5000) {
        opened = opened || h_port_open(x.hx_port);
        h_sleep_ms(20);
    }
    cr_assert(!x.hx_daemon.hd_running, "%s: serve still running 5 s after a bad plugin", tag);
    code = h_daemon_stop(&x.hx_daemon);
    cr_expect_eq(code, 2, "%s: serve exited %d, want 2", tag, code);
    cr_expect(!opened, "%s: the port opened although a plugin cannot load", tag);
    log = h_daemon_log(&x.hx_daemon);
    cr_expect_eq(count_lines(log), 1, "%s: serve: want one line, got:\n%s", tag, log);
    cr_expect(strstr(log, where) != NULL, "%s: serve names no FILE:LINE: %s", tag, log);
    cr_expect(strstr(log, needle) != NULL, "%s: serve does not say \"%s\": %s", tag, needle,
              log);
    free(log);
    free(where);
    h_db_drop(&x.hx_db);
    free((char *)x.hx_cfg.hc_top_extra);
    free(x.hx_dir);
}


Test(dispatch, missing_plugin_file_is_refused_naming_the_file)
{
    char *dir = h_tmpdir("plugins_missing");
    char *so = h_strdupf("%s/nosuchplugin.so", dir);

    expect_plugin_refused("missing", dir, "{ name = \"r\"; handler = \"nosuchplugin\"; }",
                          so);
    free(so);
    free(dir);
}


Test(dispatch, shared_object_without_hookd_plugin_v1_is_refused_naming_the_file)
{
    char *dir = h_tmpdir("plugins_nosym");
    char *so = h_strdupf("%s/nosym.so", dir);

    build_so(dir, "nosym", "int hookd_plugin_v2 = 1;\n");
    expect_plugin_refused("nosym", dir, "{ name = \"r\"; handler = \"nosym\"; }", so);
    free(so);
    free(dir);
}


Test(dispatch, plugin_of_another_abi_version_is_refused_naming_the_file)
{
    static const char src[] =
        "struct old_plugin { int abi; const char *name; void *init;\n"
        "    int (*handle)(void *, const void *, void *); void *fini; };\n"
        "static int handle(void *s, const void *e, void *c)\n"
        "{ (void)s; (void)e; (void)c; return 0; }\n"
        "const struct old_plugin hookd_plugin_v1 = { 99, \"oldabi\", 0, handle, 0 };\n";
    char *dir = h_tmpdir("plugins_abi");
    char *so = h_strdupf("%s/oldabi.so", dir);

    build_so(dir, "oldabi", src);
    expect_plugin_refused("abi", dir, "{ name = \"r\"; handler = \"oldabi\"; }", so);
    free(so);
    free(dir);
}


Test(dispatch, plugin_refusing_its_options_is_refused_naming_the_route)
{
    expect_plugin_refused("bogus", NULL,
                          "{ name = \"r\"; handler = \"counter\";"
                          " options = { outcome = \"bogus\"; }; }",
                          "counter");
}


/* ---- 7. C13: NOTIFY lost while the listener is down --------------------- */

/* Terminates every hookd session of x's database; returns how many. */
static long
kill_sessions(struct h_ctx *x)
{
    return h_sql_long(h_env("HOOKD_TEST_PG"), "SELECT count(pg_terminate_backend(pid))"
                      " FROM pg_stat_activity WHERE datname = '%s'"
                      " AND application_name IN ('hookd', 'hookd-dispatch')",
                      x->hx_db.hd_name);
}


Test(dispatch, jobs_announced_while_sessions_were_killed_run_within_the_poll_interval)
{
    static const char routes[] =
        "{ name = \"c13\"; handler = \"counter\";"
        " retry = { attempts = 5; first_delay = 100; factor = 1.0; max_delay = 100; }; }";
    struct h_ctx x;
    long killed;
    long long t_last;
    long done;
    int retried = 0;

    setup(&x, "c13", dispatch_text(NULL, 2, 2000, 300, routes));
    h_ctx_start(&x);
    for (unsigned n = 0; n < 10; n++) {
        char *body = event_body("NEW_MESSAGE", D_BOT, "thread-c13", n, NULL);

        (void)post_event(&x, x.hx_port, body, "stored");
        free(body);
    }
    killed = kill_sessions(&x);
    cr_assert_gt(killed, 0, "no hookd session to terminate");

    /* During the reconnect window: a 503 is allowed, and retried as a sender would. */
    for (unsigned n = 10; n < 20; n++) {
        char *body = event_body("NEW_MESSAGE", D_BOT, "thread-c13", n, NULL);
        long long until = h_now_ms() + 10000;
        int status;

        for (;;) {
            status = h_post_signed(x.hx_port, H_DEFAULT_PATH, x.hx_cfg.hc_secrets[0], body,
                                   strlen(body), NULL);
            if (status != 503 || h_now_ms() >= until) {
                break;
            }
            retried++;
            h_sleep_ms(100);
        }
        cr_assert_eq(status, 200, "event %u: status %d", n, status);
        free(body);
    }
    t_last = h_now_ms();
    cr_log_info("c13: %ld sessions terminated, %d answers of 503 retried", killed, retried);

    done = h_wait_long(&x, 20, 2000 + 5000, "SELECT count(*) FROM hookd.jobs"
                       " WHERE status = 'done'");
    if (done != 20) {
        char *states = h_sql_value(x.hx_db.hd_conninfo, "SELECT string_agg(id || ':' ||"
                                   " status || ':' || attempts || ':' ||"
                                   " coalesce(last_error, '-'), ' ' ORDER BY id)"
                                   " FROM hookd.jobs WHERE status <> 'done'");

        cr_assert_fail("%ld of 20 jobs done %lld ms after the last event (want all within "
                       "poll_interval + 5 s); others: %s", done, h_now_ms() - t_last,
                       states ? states : "none");
    }
    cr_expect_eq(jobs_total(&x), 20);
    cr_expect_eq(h_sql_long(x.hx_db.hd_conninfo, "SELECT count(DISTINCT event_id)"
                            " FROM public.counter_runs"), 20);
    h_ctx_finish(&x, NULL, NULL);
    free((char *)x.hx_cfg.hc_top_extra);
}


/*
 * The same disruption while a handler runs: its own insert and the worker's
 * result update both hit dead sessions. The job must not stay 'running' (and
 * block its conversation) until the lease, which the daemon raises to at
 * least the route timeout + 30 s.
 */
Test(dispatch, job_whose_sessions_were_killed_mid_run_is_not_stranded_until_its_lease)
{
    static const char routes[] =
        "{ name = \"midrun\"; handler = \"counter\"; options = { sleep_ms = 800; };"
        " timeout = 2000;"
        " retry = { attempts = 5; first_delay = 100; factor = 1.0; max_delay = 100; }; }";
    struct h_ctx x;
    char *body;
    long killed;
    long done;

    setup(&x, "midrun", dispatch_text(NULL, 2, 2000, 3, routes));
    h_ctx_start(&x);
    body = event_body("NEW_MESSAGE", D_BOT, "thread-midrun", 1, NULL);
    (void)post_event(&x, x.hx_port, body, "stored");
    free(body);
    cr_assert_eq(h_wait_long(&x, 1, 5000, "SELECT count(*) FROM hookd.jobs"
                             " WHERE status = 'running'"), 1, "the job never started");
    h_sleep_ms(200);
    killed = kill_sessions(&x);
    cr_assert_gt(killed, 0, "no hookd session to terminate");
    done = h_wait_long(&x, 1, 2000 + 5000, "SELECT count(*) FROM hookd.jobs"
                       " WHERE status = 'done'");
    if (done != 1) {
        char *state = h_sql_value(x.hx_db.hd_conninfo, "SELECT status || ' attempts='"
                                  " || attempts || ' lease_left_s=' || coalesce(round("
                                  "extract(epoch FROM lease_until - now()))::text, '-')"
                                  " FROM hookd.jobs");

        cr_expect_fail("the job is not done 7 s after its sessions were killed: %s", state);
        free(state);
    }
    h_ctx_finish(&x, NULL, NULL);
    free((char *)x.hx_cfg.hc_top_extra);
}


/* ---- 8. SIGHUP adds a route --------------------------------------------- */

Test(dispatch, route_added_by_sighup_gets_jobs_for_later_events_only)
{
    static const char one[] = "{ name = \"first\"; handler = \"counter\"; }";
    static const char two[] =
        "{ name = \"first\"; handler = \"counter\"; },\n"
        "{ name = \"second\"; handler = \"counter\"; events = [ \"NEW_MESSAGE\" ]; }";
    struct h_ctx x;
    char *body;
    char *got;
    long before;
    long after;

    setup(&x, "reload", dispatch_text(NULL, 2, 1000, 300, one));
    h_ctx_start(&x);
    body = event_body("NEW_MESSAGE", D_BOT, "thread-reload", 1, NULL);
    before = post_event(&x, x.hx_port, body, "stored");
    free(body);

    free((char *)x.hx_cfg.hc_top_extra);
    x.hx_cfg.hc_top_extra = dispatch_text(NULL, 2, 1000, 300, two);
    h_config_write(x.hx_conf, &x.hx_cfg);
    h_daemon_signal(&x.hx_daemon, SIGHUP);
    cr_assert(h_daemon_wait_log(&x.hx_daemon, "reload done", 1, 5000), "no \"reload done\"");

    body = event_body("NEW_MESSAGE", D_BOT, "thread-reload", 2, NULL);
    after = post_event(&x, x.hx_port, body, "stored");
    free(body);
    got = routes_of(&x, before);
    cr_expect_str_eq(got, "first", "event before the reload: jobs for %s", got);
    free(got);
    got = routes_of(&x, after);
    cr_expect_str_eq(got, "first,second", "event after the reload: jobs for %s", got);
    free(got);
    cr_assert_eq(h_wait_long(&x, 3, 10000, "SELECT count(*) FROM hookd.jobs"
                             " WHERE status = 'done'"), 3, "not every job ran");
    cr_expect_eq(h_sql_long(x.hx_db.hd_conninfo, "SELECT count(*) FROM public.counter_runs"
                            " WHERE route = 'second' AND event_id = %ld", after), 1);
    h_ctx_finish(&x, NULL, NULL);
    free((char *)x.hx_cfg.hc_top_extra);
}


Test(dispatch, reload_with_an_unloadable_plugin_keeps_the_old_routes)
{
    static const char one[] = "{ name = \"first\"; handler = \"counter\"; }";
    static const char bad[] =
        "{ name = \"first\"; handler = \"counter\"; },\n"
        "{ name = \"broken\"; handler = \"nosuchplugin\"; }";
    static const char *const allowed[] = {"reload failed", NULL};
    struct h_ctx x;
    char *body;
    char *got;
    long id;

    setup(&x, "reload_bad", dispatch_text(NULL, 2, 1000, 300, one));
    h_ctx_start(&x);
    free((char *)x.hx_cfg.hc_top_extra);
    x.hx_cfg.hc_top_extra = dispatch_text(NULL, 2, 1000, 300, bad);
    h_config_write(x.hx_conf, &x.hx_cfg);
    h_daemon_signal(&x.hx_daemon, SIGHUP);
    cr_assert(h_daemon_wait_log(&x.hx_daemon, "reload failed", 1, 5000),
              "no \"reload failed\"");

    body = event_body("NEW_MESSAGE", D_BOT, "thread-reload", 1, NULL);
    id = post_event(&x, x.hx_port, body, "stored");
    free(body);
    got = routes_of(&x, id);
    cr_expect_str_eq(got, "first", "after a failed reload: jobs for %s", got);
    free(got);
    cr_assert_eq(h_wait_long(&x, 1, 10000, "SELECT count(*) FROM hookd.jobs"
                             " WHERE status = 'done'"), 1, "the old route stopped running");
    h_ctx_finish(&x, NULL, allowed);
    free((char *)x.hx_cfg.hc_top_extra);
}


/*
 * A backlog that piled up after PostgreSQL last sampled hookd.jobs (here:
 * sampled while it held only finished jobs of another route) leaves the
 * planner with statistics under which two workers' claims take seconds
 * each. hookd analyzes the table itself before its workers start, once, and
 * dispatch runs at its usual pace.
 */
Test(dispatch, backlog_after_stale_statistics_is_analyzed_before_workers_claim)
{
    static const char routes[] = "{ name = \"bench\"; handler = \"counter\"; }";
    struct h_ctx x;
    long done;

    setup(&x, "stale_stats", dispatch_text(NULL, 2, 100, 300, routes));
    h_ctx_start(&x);
    cr_assert(h_sql_try(x.hx_db.hd_conninfo,
                        "ALTER TABLE hookd.jobs SET (autovacuum_enabled = false);"
                        "INSERT INTO hookd.events (dedup_key, event_type, chatbot_id, thread_id,"
                        " raw_body, payload, scheme, endpoint)"
                        " SELECT 'old' || g, 'NEW_MESSAGE', 'c', 'old' || g, '{}', '{}', 'x', '/w'"
                        " FROM generate_series(1, 200) g;"
                        "INSERT INTO hookd.jobs (event_id, route, conversation, status)"
                        " SELECT id, 'old', 'c/' || thread_id, 'done' FROM hookd.events;"
                        "ANALYZE hookd.jobs;"));
    /* The backlog piles up while no instance runs. */
    cr_assert_eq(h_daemon_stop(&x.hx_daemon), 0);
    cr_assert(h_sql_try(x.hx_db.hd_conninfo,
                        "WITH e AS (INSERT INTO hookd.events (dedup_key, event_type, chatbot_id,"
                        " thread_id, raw_body, payload, scheme, endpoint)"
                        " SELECT 'new' || g, 'NEW_MESSAGE', 'c', 't' || (g %% 500),"
                        " '{\"event\":\"NEW_MESSAGE\"}', '{}', 'x', '/w'"
                        " FROM generate_series(1, 150000) g RETURNING id, thread_id)"
                        " INSERT INTO hookd.jobs (event_id, route, conversation)"
                        " SELECT id, 'bench', 'c/' || thread_id FROM e ORDER BY id"));
    h_ctx_start(&x);
    cr_assert(h_daemon_wait_log(&x.hx_daemon, "refreshed the planner's statistics of hookd.jobs",
                                1, 10000), "the backlog did not lead to fresh statistics");
    cr_assert_eq(h_sql_long(x.hx_db.hd_conninfo, "SELECT count(*) FROM pg_stat_user_tables"
                            " WHERE relid = 'hookd.jobs'::regclass"
                            " AND last_analyze IS NOT NULL"), 1);
    /* With the planner's view fixed, 2 workers get through thousands in seconds. */
    done = h_wait_long(&x, 3000, 15000, "SELECT least(count(*), 3000) FROM hookd.jobs"
                       " WHERE route = 'bench' AND status = 'done'");
    cr_assert_eq(done, 3000, "dispatch did not recover: %ld jobs done in 15 s", done);
    cr_assert_eq(h_daemon_log_count(&x.hx_daemon, "refreshed the planner's statistics"), 1,
                 "statistics were refreshed again with little changed");
    h_ctx_finish(&x, NULL, NULL);
    free((char *)x.hx_cfg.hc_top_extra);
}


/*
 * Two writers commit concurrently, so a later event of a conversation can
 * get the lower job id. Whatever the ids say, a job never starts while
 * another job of its route and conversation runs under a live lease; it
 * starts once that one is done.
 */
Test(dispatch, job_never_starts_beside_a_running_job_of_its_conversation)
{
    static const char routes[] = "{ name = \"solo\"; handler = \"counter\"; }";
    struct h_ctx x;

    setup(&x, "running_excl", dispatch_text(NULL, 2, 100, 300, routes));
    h_ctx_start(&x);
    /* One transaction: the lower job id pending, the higher one running elsewhere. */
    cr_assert(h_sql_try(x.hx_db.hd_conninfo,
                        "WITH e AS (INSERT INTO hookd.events (dedup_key, event_type, chatbot_id,"
                        " thread_id, raw_body, payload, scheme, endpoint)"
                        " SELECT k, 'NEW_MESSAGE', 'c', 't', '{\"event\":\"NEW_MESSAGE\"}', '{}',"
                        " 'x', '/w' FROM unnest(ARRAY['k1', 'k2']) k RETURNING id, dedup_key)"
                        " INSERT INTO hookd.jobs (event_id, route, conversation, status, attempts,"
                        " lease_until, locked_by)"
                        " SELECT id, 'solo', 'c/t',"
                        "  CASE dedup_key WHEN 'k1' THEN 'pending' ELSE 'running' END,"
                        "  CASE dedup_key WHEN 'k1' THEN 0 ELSE 1 END,"
                        "  CASE dedup_key WHEN 'k1' THEN NULL ELSE now() + interval '1 hour' END,"
                        "  CASE dedup_key WHEN 'k1' THEN NULL ELSE 'elsewhere:1' END"
                        " FROM e ORDER BY dedup_key"));
    h_sleep_ms(2000);
    cr_assert_eq(runs_total(&x), 0, "a job ran beside a running job of its conversation");
    cr_assert(h_sql_try(x.hx_db.hd_conninfo, "UPDATE hookd.jobs SET status = 'done',"
                        " lease_until = NULL WHERE status = 'running'"));
    cr_assert_eq(h_wait_long(&x, 2, 5000, "SELECT count(*) FROM hookd.jobs"
                             " WHERE status = 'done'"), 2,
                 "the waiting job did not run once the other was done");
    cr_assert_eq(runs_total(&x), 1);
    h_ctx_finish(&x, NULL, NULL);
    free((char *)x.hx_cfg.hc_top_extra);
}


/* ---- 10. claims of several jobs ----------------------------------------- */

/* Counts the jobs of thread t-slow in a status: SLOW_JOBS_IN "'dead'". */
#define SLOW_JOBS_IN \
    "SELECT count(*) FROM hookd.jobs j JOIN hookd.events e ON e.id = j.event_id" \
    " WHERE e.thread_id = 't-slow' AND j.status = "


/*
 * Queues one event and one job of route per element of threads (a SQL
 * text[] expression), in one transaction and in that order, with the
 * statement then (or none) after it: a backlog that a worker finds whole at
 * its next poll.
 */
static void
queue_backlog(struct h_ctx *x, const char *route, const char *threads, const char *then)
{
    cr_assert(h_sql_try(x->hx_db.hd_conninfo,
                        "WITH e AS (INSERT INTO hookd.events (dedup_key, event_type, chatbot_id,"
                        " thread_id, raw_body, payload, scheme, endpoint)"
                        " SELECT 'backlog-' || n, 'NEW_MESSAGE', 'c', t,"
                        " '{\"event\":\"NEW_MESSAGE\"}', '{}', 'x', '/w'"
                        " FROM unnest(%s) WITH ORDINALITY AS u(t, n) ORDER BY n"
                        " RETURNING id, thread_id)"
                        " INSERT INTO hookd.jobs (event_id, route, conversation)"
                        " SELECT id, '%s', 'c/' || thread_id FROM e ORDER BY id; %s",
                        threads, route, then ? then : ""));
}


Test(dispatch, fast_jobs_are_claimed_several_at_once_and_keep_each_conversations_order)
{
    static const char routes[] =
        "{ name = \"fast\"; handler = \"counter\"; options = { durable = false; }; }";
    struct h_ctx x;
    long batches;

    setup(&x, "batch_order", dispatch_text(NULL, 2, 500, 300, routes));
    h_ctx_start(&x);
    /* 48 jobs in 8 conversations, interleaved: o1, o2, ..., o0, o1, ... */
    queue_backlog(&x, "fast", "ARRAY(SELECT 'o' || n % 8 FROM generate_series(1, 48) n"
                  " ORDER BY n)", NULL);
    cr_assert_eq(h_wait_long(&x, 48, 15000, "SELECT count(*) FROM hookd.jobs"
                             " WHERE status = 'done' AND attempts = 1"), 48,
                 "the backlog did not end done, once each");
    cr_assert_eq(runs_total(&x), 48, "a job ran twice");
    cr_expect_eq(h_sql_long(x.hx_db.hd_conninfo, "SELECT count(*) FROM (SELECT started_us,"
                            " lag(ended_us) OVER (PARTITION BY thread_id ORDER BY event_id) prev"
                            " FROM public.counter_runs) r WHERE started_us < prev"), 0,
                 "a job started before the previous job of its conversation ended");
    /* Dones of one claim are recorded in one statement, so they share finished_at. */
    batches = h_sql_long(x.hx_db.hd_conninfo, "SELECT count(DISTINCT finished_at)"
                         " FROM hookd.jobs");
    cr_log_info("batch_order: 48 jobs recorded done in %ld statements", batches);
    cr_expect_leq(batches, 24, "jobs were not claimed several at a time");
    h_ctx_finish(&x, NULL, NULL);
    free((char *)x.hx_cfg.hc_top_extra);
}


/*
 * One worker claims the rest of the backlog at once (its first job took
 * microseconds), and the second job of that claim hangs past its timeout:
 * the one before it finished done and the twenty-eight after it never
 * started. The done is recorded and the twenty-eight handed back at once,
 * not left running until their lease (at least 31 s here) brings them back.
 */
Test(dispatch, timed_out_job_hands_back_the_rest_of_its_claim_and_records_its_dones)
{
    static const char routes[] =
        "{ name = \"mixed\"; handler = \"counter\"; timeout = 1000;\n"
        "  options = { record = false; slow_thread = \"t-slow\"; slow_ms = 4000; };\n"
        "  retry = { attempts = 1; }; }";
    struct h_ctx x;

    setup(&x, "batch_handback", dispatch_text(NULL, 1, 500, 300, routes));
    h_ctx_start(&x);
    queue_backlog(&x, "mixed", "ARRAY(SELECT CASE WHEN n = 3 THEN 't-slow' ELSE 'f' || n END"
                  " FROM generate_series(1, 31) n ORDER BY n)", NULL);
    cr_assert_eq(h_wait_long(&x, 1, 10000, SLOW_JOBS_IN "'dead'"), 1,
                 "the hanging job was not timed out");
    cr_assert_eq(h_wait_long(&x, 30, 8000, "SELECT count(*) FROM hookd.jobs"
                             " WHERE status = 'done'"), 30,
                 "jobs of the hanging job's claim were left running");
    cr_expect_eq(h_sql_long(x.hx_db.hd_conninfo, "SELECT count(*) FROM hookd.jobs"
                            " WHERE status = 'done' AND attempts = 1"), 30,
                 "a job of the claim ran twice or was counted twice");
    cr_expect(h_daemon_log_count(&x.hx_daemon, "job handed back to the queue") >= 1,
              "no job of the claim was handed back (was the claim a single job?)");
    h_ctx_finish(&x, NULL, NULL);
    free((char *)x.hx_cfg.hc_top_extra);
}


/*
 * SIGTERM while the second job of a claim outlasts dispatch.stop_grace: the
 * done before it is recorded (by the supervisor or at the stop), and it and
 * the twenty-eight after it go back to the queue uncounted, ready for the
 * next instance.
 */
Test(dispatch, stop_past_the_grace_records_a_claims_dones_and_hands_back_the_rest)
{
    static const char routes[] =
        "{ name = \"mixed\"; handler = \"counter\"; timeout = 20000;\n"
        "  options = { record = false; slow_thread = \"t-slow\"; slow_ms = 4000; }; }";
    struct h_ctx x;
    char *disp = dispatch_text(NULL, 1, 500, 300, routes);
    char *top = h_replace(disp, "lease = 300;", "lease = 300;\n  stop_grace = 300;");

    free(disp);
    setup(&x, "batch_stop", top);
    h_ctx_start(&x);
    queue_backlog(&x, "mixed", "ARRAY(SELECT CASE WHEN n = 3 THEN 't-slow' ELSE 'f' || n END"
                  " FROM generate_series(1, 31) n ORDER BY n)", NULL);
    /* The worker finds the backlog within its poll interval and is soon in the slow job. */
    cr_assert_eq(h_wait_long(&x, 1, 5000, SLOW_JOBS_IN "'running'"), 1,
                 "the backlog was not claimed");
    h_daemon_signal(&x.hx_daemon, SIGTERM);
    cr_assert(h_daemon_wait_exit(&x.hx_daemon, 10000), "hookd did not exit after SIGTERM");
    cr_expect_eq(h_sql_long(x.hx_db.hd_conninfo, "SELECT count(*) FROM hookd.jobs"
                            " WHERE status = 'done' AND attempts = 1"), 2,
                 "the claim's finished jobs were not recorded done");
    cr_expect_eq(h_sql_long(x.hx_db.hd_conninfo, "SELECT count(*) FROM hookd.jobs"
                            " WHERE status = 'pending' AND attempts = 0"), 29,
                 "the hanging job and the ones after it were not handed back");
    h_ctx_finish(&x, NULL, NULL);
    free((char *)x.hx_cfg.hc_top_extra);
}


/*
 * The second job of a claim takes 3 s; the done before it does not wait for
 * it: it is recorded within a fraction of a second, so the next job of its
 * conversation is not held up by another conversation's job.
 */
Test(dispatch, dones_before_a_long_job_of_the_claim_are_recorded_without_waiting_for_it)
{
    static const char routes[] =
        "{ name = \"mixed\"; handler = \"counter\"; timeout = 20000;\n"
        "  options = { record = false; slow_thread = \"t-slow\"; slow_ms = 3000; }; }";
    struct h_ctx x;
    long done;

    setup(&x, "batch_stale", dispatch_text(NULL, 1, 500, 300, routes));
    h_ctx_start(&x);
    queue_backlog(&x, "mixed", "ARRAY(SELECT CASE WHEN n = 3 THEN 't-slow' ELSE 'f' || n END"
                  " FROM generate_series(1, 8) n ORDER BY n)", NULL);
    /* The first claim takes f1 alone, the second f2 to f8 with the slow one. */
    cr_assert_eq(h_wait_long(&x, 1, 5000, SLOW_JOBS_IN "'running'"), 1,
                 "the backlog was not claimed");
    done = h_wait_long(&x, 2, 1500, "SELECT count(*) FROM hookd.jobs WHERE status = 'done'");
    cr_expect_eq(done, 2, "the claim's done waited for its long job (%ld done)", done);
    cr_expect_eq(h_sql_long(x.hx_db.hd_conninfo, SLOW_JOBS_IN "'running'"), 1,
                 "the long job was not still running");
    cr_assert_eq(h_wait_long(&x, 8, 10000, "SELECT count(*) FROM hookd.jobs"
                             " WHERE status = 'done' AND attempts = 1"), 8,
                 "the claim did not end done, once each");
    h_ctx_finish(&x, NULL, NULL);
    free((char *)x.hx_cfg.hc_top_extra);
}


/*
 * A job claimed before (here a retry that fell due) is never part of a
 * claim of several: if it kills hookd, it takes no other job with it. The
 * others go on being claimed together around it.
 */
Test(dispatch, job_claimed_before_is_claimed_alone_and_the_others_still_together)
{
    static const char routes[] =
        "{ name = \"fast\"; handler = \"counter\"; options = { record = false; }; }";
    struct h_ctx x;
    long batches;

    setup(&x, "batch_retry_alone", dispatch_text(NULL, 1, 500, 300, routes));
    h_ctx_start(&x);
    queue_backlog(&x, "fast", "ARRAY(SELECT 'f' || n FROM generate_series(1, 40) n ORDER BY n)",
                  "UPDATE hookd.jobs SET attempts = 1 WHERE event_id ="
                  " (SELECT id FROM hookd.events WHERE thread_id = 'f11')");
    cr_assert_eq(h_wait_long(&x, 40, 10000, "SELECT count(*) FROM hookd.jobs"
                             " WHERE status = 'done'"), 40, "the backlog did not end done");
    /* Dones of one claim are recorded in one statement, so they share finished_at. */
    cr_expect_eq(h_sql_long(x.hx_db.hd_conninfo, "SELECT count(*) FROM hookd.jobs"
                            " WHERE finished_at = (SELECT j.finished_at FROM hookd.jobs j"
                            " JOIN hookd.events e ON e.id = j.event_id WHERE e.thread_id = 'f11')"),
                 1, "the job claimed before was claimed together with others");
    cr_expect_eq(h_sql_long(x.hx_db.hd_conninfo, "SELECT j.attempts FROM hookd.jobs j"
                            " JOIN hookd.events e ON e.id = j.event_id WHERE e.thread_id = 'f11'"),
                 2);
    batches = h_sql_long(x.hx_db.hd_conninfo, "SELECT count(DISTINCT finished_at)"
                         " FROM hookd.jobs");
    cr_log_info("batch_retry_alone: 40 jobs recorded done in %ld statements", batches);
    cr_expect_leq(batches, 6, "the other jobs were not claimed together");
    h_ctx_finish(&x, NULL, NULL);
    free((char *)x.hx_cfg.hc_top_extra);
}
