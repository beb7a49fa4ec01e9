/* SPDX-License-Identifier: MIT */
/*
 * The ContextGPT API client (daemon/api.c, the "API" section of
 * daemon/dispatch.c) driven end to end through the autoreply handler
 * (build/handlers/autoreply.so): signed events go into the real daemon, its
 * workers call a fake platform (tests/support/fake_http.c over HTTPS), and
 * the tests read what the fake recorded and what hookd.jobs and
 * hookd.api_actions say.
 *
 * Covered: every answer class (200, 429 with a header or a body wait, 429
 * MESSAGES_LIMIT_REACHED, 500, 401, 404 after and within the grace, no
 * answer at all: C19), the Retry-After values of case C18, the client's
 * rate limiter, no double replies after a lost answer, the autoreply rules
 * (keywords, regex, AI and agent messages, office hours in two time zones,
 * once per thread) and the API key staying out of logs and tables.
 *
 * What stays at least once: only a sent message is looked for in the
 * thread (GET .../messages) before it is sent again, because a message has
 * a text to look for. An escalation or a thread update whose answer was
 * lost (connection closed, timeout) is sent again on the next attempt; the
 * platform must treat a repeated escalate/update as harmless. The test
 * lost_escalation_answer_is_sent_again_at_least_once pins that down.
 *
 * Waiting is always polling with a bound; sleeps only pace loops or let a
 * wrong retry show up before counting.
 */
#include <criterion/criterion.h>

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>

#include "support/fake_http.h"
#include "support/harness.h"

TestSuite(api, .fini = h_suite_fini, .timeout = 180);

#define AT_BOT "365062873485935184"
#define AT_SAMPLE_THREAD "06b3b43c-5651-49a2-b618-d7f24667c1b6"
#define AT_SAMPLE_MSG_ID "376290410396385873"
#define AT_KEY "cgpt-live-key-5e1f0a9c3b7d4e26a8"
#define AT_ROUTE "auto"
#define AT_AGENT "Order desk"
#define AT_REPLY "Thanks for writing! Someone from the order desk will answer soon."
#define AT_QUESTION "Where is my order 10482 now?"
#define AT_FAST_RETRY "retry = { attempts = 5; first_delay = 200; factor = 1.0; " \
                      "max_delay = 200; };"
#define AT_OK_BODY "{\"statusCode\":200,\"success\":true,\"message\":\"OK\"," \
                   "\"data\":{\"id\":\"msg-900\"}}"
#define AT_429_BODY "{\"statusCode\":429,\"success\":false," \
                    "\"message\":\"Too many requests\"}"

/* The one rule most tests use: "order" as a word gets AT_REPLY. */
#define AT_REPLY_OPTIONS \
    "agent_name = \"" AT_AGENT "\"; rules = ( { keywords = [ \"order\" ];" \
    " action = \"reply\"; text = \"" AT_REPLY "\"; } );"

struct at {
    struct h_ctx t_x;
    struct fake_http *t_fake;
    char *t_key_file;
};

static unsigned at_msg_counter;


/* ---- setup --------------------------------------------------------------- */

/* The repo's build/handlers (cwd is the repo root under make check), absolute. */
static char *
at_plugin_dir(void)
{
    char dir[PATH_MAX];
    char *so;

    cr_assert(realpath("build/handlers", dir) != NULL,
              "build/handlers not found from %s: run make from the repo root",
              getcwd(NULL, 0));
    so = h_strdupf("%s/autoreply.so", dir);
    cr_assert(access(so, R_OK) == 0, "%s is missing: run make", so);
    free(so);
    return strdup(dir);
}


/* A database, a temp dir, the fake platform and the key file. */
static void
at_init(struct at *t, const char *tag)
{
    memset(t, 0, sizeof(*t));
    h_ctx_init(&t->t_x, tag);
    t->t_fake = fh_start(true);
    t->t_key_file = h_secret_file(t->t_x.hx_dir, "key", AT_KEY, 0600);
}


/*
 * Starts hookd with workers dispatch threads, an api group pointing at the
 * fake plus api_extra settings (a timeout there replaces the 5 s default),
 * and the given route groups.
 */
static void
at_run(struct at *t, int workers, const char *api_extra, const char *routes)
{
    char *plugins = at_plugin_dir();
    bool own_timeout = api_extra != NULL && strstr(api_extra, " timeout =") != NULL;
    char *top;

    top = h_strdupf("dispatch = {\n  plugin_dir = \"%s\";\n  workers = %d;\n"
                    "  poll_interval = 200;\n  lease = 30;\n};\n"
                    "api = {\n  base_url = \"https://127.0.0.1:%d/api\";\n"
                    "  key_file = \"%s\";\n  cacert = \"%s/cert.pem\";\n"
                    "  connect_timeout = 2000;\n%s%s\n};\n"
                    "routes = (\n%s\n);", plugins, workers, fh_port(t->t_fake),
                    t->t_key_file, h_env("HOOKD_TEST_TLS_DIR"),
                    own_timeout ? "" : "  timeout = 5000;\n", api_extra ? api_extra : "",
                    routes);
    t->t_x.hx_cfg.hc_top_extra = top;
    h_ctx_start(&t->t_x);
    free(plugins);
}


/* One autoreply route on NEW_MESSAGE (malloc'd). retry NULL: the fast one. */
static char *
at_route(const char *name, const char *options, const char *retry)
{
    return h_strdupf("{ name = \"%s\"; events = [ \"NEW_MESSAGE\" ];"
                     " handler = \"autoreply\"; timeout = 15000; %s\n"
                     "  options = { %s }; }", name, retry ? retry : AT_FAST_RETRY,
                     options);
}


/*
 * Stops hookd and checks that the API key is in neither its log nor its
 * tables; then stops the fake.
 */
static void
at_finish(struct at *t)
{
    static const char *const forbidden[] = {AT_KEY, "Bearer ", NULL};
    const char *db = t->t_x.hx_db.hd_conninfo;

    cr_expect_eq(h_sql_long(db, "SELECT count(*) FROM hookd.api_actions a"
                            " WHERE a::text LIKE '%%%s%%'", AT_KEY), 0,
                 "the API key is in hookd.api_actions");
    cr_expect_eq(h_sql_long(db, "SELECT count(*) FROM hookd.jobs j"
                            " WHERE j::text LIKE '%%%s%%'", AT_KEY), 0,
                 "the API key is in hookd.jobs");
    h_ctx_finish(&t->t_x, forbidden, NULL);
    fh_stop(t->t_fake);
    t->t_fake = NULL;
    free(t->t_key_file);
}


/* ---- events and jobs ----------------------------------------------------- */

/*
 * A visitor's NEW_MESSAGE in thread with question (plain text, no quotes or
 * backslashes), with a messageId of its own (malloc'd).
 */
static char *
at_event(const char *thread, const char *question)
{
    char *sample = h_sample("new_message_user.json", NULL);
    char id[32];
    char *a, *b, *c;

    snprintf(id, sizeof(id), "88%016u", ++at_msg_counter);
    a = h_replace(sample, AT_SAMPLE_MSG_ID, id);
    b = h_replace(a, AT_SAMPLE_THREAD, thread);
    c = h_replace(b, H_SAMPLE_QUESTION, question);
    free(sample);
    free(a);
    free(b);
    return c;
}


/* Posts a signed body, asserting a 200; returns the event id. */
static long long
at_post_body(struct at *t, const char *body)
{
    struct h_resp r = {0};
    const char *id;
    long long ev;

    h_post_signed(t->t_x.hx_port, H_DEFAULT_PATH, t->t_x.hx_cfg.hc_secrets[0], body,
                  strlen(body), &r);
    h_assert_status(&r, 200, "posting an event");
    id = r.hr_body ? strstr(r.hr_body, "\"id\":\"") : NULL;
    cr_assert(id != NULL, "no id in %s", r.hr_body);
    ev = atoll(id + 6);
    h_resp_free(&r);
    return ev;
}


static long long
at_post(struct at *t, const char *thread, const char *question)
{
    char *body = at_event(thread, question);
    long long ev = at_post_body(t, body);

    free(body);
    return ev;
}


/* A column of the job of event ev on route (malloc'd, or NULL). */
static char *
at_job(struct at *t, long long ev, const char *route, const char *column)
{
    return h_sql_value(t->t_x.hx_db.hd_conninfo, "SELECT %s FROM hookd.jobs"
                       " WHERE event_id = %lld AND route = '%s'", column, ev, route);
}


/* The job's row as one line, for failure messages (malloc'd). */
static char *
at_job_row(struct at *t, long long ev, const char *route)
{
    char *row = at_job(t, ev, route, "concat_ws(' | ', status, attempts, last_error,"
                       " output)");

    return row ? row : strdup("(no job)");
}


/* Waits until the job's status is want; fails the test with its row if not. */
static void
at_wait_job(struct at *t, long long ev, const char *route, const char *want,
            int timeout_ms)
{
    long long deadline = h_now_ms() + timeout_ms;
    char *status = NULL;
    char *row;

    for (;;) {
        free(status);
        status = at_job(t, ev, route, "status");
        if ((status != NULL && strcmp(status, want) == 0) || h_now_ms() >= deadline) {
            break;
        }
        h_sleep_ms(50);
    }
    if (status != NULL && strcmp(status, want) == 0) {
        free(status);
        return;
    }
    free(status);
    row = at_job_row(t, ev, route);
    cr_assert_fail("job of event %lld on route %s: want %s, have %s", ev, route, want,
                   row);
}


/* Waits until the job is done or dead (asserts it gets there). */
static void
at_wait_final(struct at *t, long long ev, const char *route, int timeout_ms)
{
    long long deadline = h_now_ms() + timeout_ms;

    for (;;) {
        char *status = at_job(t, ev, route, "status");
        bool final = status != NULL && (strcmp(status, "done") == 0
                                        || strcmp(status, "dead") == 0);

        free(status);
        if (final) {
            return;
        }
        cr_assert(h_now_ms() < deadline, "job of event %lld on route %s never ended: %s",
                  ev, route, at_job_row(t, ev, route));
        h_sleep_ms(100);
    }
}


static void
at_expect_job(struct at *t, long long ev, const char *route, const char *column,
              const char *want)
{
    char *have = at_job(t, ev, route, column);

    cr_expect(have != NULL && strcmp(have, want) == 0,
              "route %s event %lld %s: want \"%s\", have \"%s\"", route, ev, column, want,
              have ? have : "(null)");
    free(have);
}


/* Expects the job's column to contain needle. */
static void
at_expect_job_has(struct at *t, long long ev, const char *route, const char *column,
                  const char *needle)
{
    char *have = at_job(t, ev, route, column);

    cr_expect(have != NULL && strstr(have, needle) != NULL,
              "route %s event %lld %s: want it to contain \"%s\", have \"%s\"", route, ev,
              column, needle, have ? have : "(null)");
    free(have);
}


/* Count of jobs in status on route. */
static long
at_jobs(struct at *t, const char *route, const char *status)
{
    return h_sql_long(t->t_x.hx_db.hd_conninfo, "SELECT count(*) FROM hookd.jobs"
                      " WHERE route = '%s' AND status = '%s'", route, status);
}


/* Waits until want jobs of route are in status; fails with a summary if not. */
static void
at_wait_jobs(struct at *t, const char *route, const char *status, long want,
             int timeout_ms)
{
    long long deadline = h_now_ms() + timeout_ms;
    char *summary;

    while (at_jobs(t, route, status) != want && h_now_ms() < deadline) {
        h_sleep_ms(100);
    }
    if (at_jobs(t, route, status) == want) {
        return;
    }
    summary = h_sql_value(t->t_x.hx_db.hd_conninfo, "SELECT string_agg(status || ':' ||"
                          " n, ', ') FROM (SELECT status, count(*) n FROM hookd.jobs"
                          " WHERE route = '%s' GROUP BY status) s", route);
    cr_assert_fail("route %s: want %ld jobs %s, have %s", route, want, status,
                   summary ? summary : "(no jobs)");
}


/* The job id (hookd.jobs.id) of event ev on route. */
static long long
at_job_id(struct at *t, long long ev, const char *route)
{
    char *id = at_job(t, ev, route, "id");
    long long v;

    cr_assert(id != NULL, "no job for event %lld on route %s", ev, route);
    v = atoll(id);
    free(id);
    return v;
}


/* ---- what the fake recorded ---------------------------------------------- */

/* "/api/v1/chatting/<bot>/thread/<thread>/<what>" (malloc'd). */
static char *
at_path(const char *thread, const char *what)
{
    return h_strdupf("/api/v1/chatting/%s/thread/%s/%s", AT_BOT, thread, what);
}


/* Requests with this method and exact path (NULL: any). */
static size_t
at_count(struct at *t, const char *method, const char *path)
{
    size_t n = 0;
    size_t total = fh_count(t->t_fake);

    for (size_t i = 0; i < total; i++) {
        struct fh_request *r = fh_request(t->t_fake, i);

        if (r != NULL && (method == NULL || strcmp(r->fr_method, method) == 0)
            && (path == NULL || strcmp(r->fr_path, path) == 0))
        {
            n++;
        }
        fh_request_free(r);
    }
    return n;
}


/* The k-th (0 first) request with this method and path; asserts it exists. */
static struct fh_request *
at_nth(struct at *t, const char *method, const char *path, size_t k)
{
    size_t total = fh_count(t->t_fake);

    for (size_t i = 0; i < total; i++) {
        struct fh_request *r = fh_request(t->t_fake, i);

        if (r != NULL && strcmp(r->fr_method, method) == 0
            && strcmp(r->fr_path, path) == 0 && k-- == 0)
        {
            return r;
        }
        fh_request_free(r);
    }
    cr_assert_fail("no request %s %s number %zu (the fake has %zu requests)", method, path,
                   k, total);
    return NULL;
}


/* Expects a string member of a JSON object body. */
static void
at_expect_member(json_object *o, const char *key, const char *want)
{
    json_object *v = NULL;

    cr_expect(json_object_object_get_ex(o, key, &v) && json_object_is_type(v, json_type_string)
              && strcmp(json_object_get_string(v), want) == 0,
              "request body %s: want \"%s\", have %s", key, want,
              v ? json_object_to_json_string(v) : "(missing)");
}


/* Lets a wrong retry happen before requests are counted (pacing, not timing). */
static void
at_let_retries_show(void)
{
    h_sleep_ms(2500);
}


/* The delay_ms of hookd's "job will retry job=<id>" line, or -1. */
static long
at_logged_delay(struct at *t, long long job)
{
    char *log = h_daemon_log(&t->t_x.hx_daemon);
    char *needle = h_strdupf("job will retry job=%lld ", job);
    char *line = strstr(log, needle);
    char *eol, *d;
    long v = -1;

    if (line != NULL) {
        eol = strchr(line, '\n');
        d = strstr(line, "delay_ms=");
        if (d != NULL && (eol == NULL || d < eol)) {
            v = atol(d + 9);
        }
    }
    free(needle);
    free(log);
    return v;
}


/* ---- 1. the answer classes ----------------------------------------------- */

Test(api, reply_is_one_post_with_bearer_key_and_agent_body_then_job_done)
{
    struct at t;
    struct fh_request *r;
    char *path = at_path("thr-ok", "message");
    char *auth, *ctype;
    json_object *body;
    long long ev;

    at_init(&t, "api_ok");
    fh_set_default(t.t_fake, &(struct fh_answer){.fa_body = AT_OK_BODY});
    at_run(&t, 2, NULL, at_route(AT_ROUTE, AT_REPLY_OPTIONS, NULL));
    ev = at_post(&t, "thr-ok", AT_QUESTION);
    at_wait_job(&t, ev, AT_ROUTE, "done", 20000);

    cr_expect_eq(fh_count(t.t_fake), 1, "want one request, have %zu", fh_count(t.t_fake));
    r = at_nth(&t, "POST", path, 0);
    auth = fh_header(r, "Authorization");
    ctype = fh_header(r, "Content-Type");
    cr_expect(auth != NULL && strcmp(auth, "Bearer " AT_KEY) == 0,
              "Authorization is not Bearer <the key file's key>");
    cr_expect(ctype != NULL && strncmp(ctype, "application/json", 16) == 0,
              "Content-Type: %s", ctype ? ctype : "(none)");
    body = json_tokener_parse(r->fr_body);
    cr_assert(body != NULL && json_object_is_type(body, json_type_object),
              "the body is not a JSON object: %s", r->fr_body);
    at_expect_member(body, "message", AT_REPLY);
    at_expect_member(body, "from", "AGENT");
    at_expect_member(body, "agentName", AT_AGENT);
    json_object_put(body);
    free(auth);
    free(ctype);
    fh_request_free(r);

    at_expect_job(&t, ev, AT_ROUTE, "attempts", "1");
    at_expect_job(&t, ev, AT_ROUTE, "output", "rule 1: replied");
    cr_expect_eq(h_sql_long(t.t_x.hx_db.hd_conninfo, "SELECT count(*) FROM hookd.api_actions"
                            " WHERE job_id = %lld AND seq = 1 AND action = 'send_message'"
                            " AND status = 'done' AND http_status = 200",
                            at_job_id(&t, ev, AT_ROUTE)), 1,
                 "hookd.api_actions has no done send_message row for the job");
    cr_expect_eq(h_daemon_log_count(&t.t_x.hx_daemon,
                                    "API call action=send_message status=200 outcome=done"),
                 1, "no (or more than one) API call log line");
    free(path);
    at_finish(&t);
}


/* 429 with a wait in the header or only in the body: retried no sooner. */
static void
at_429_waits(const char *tag, const struct fh_answer *first)
{
    struct at t;
    struct fh_request *a, *b;
    char *path = at_path("thr-429", "message");
    long long ev, gap;

    at_init(&t, tag);
    fh_push(t.t_fake, first);
    fh_set_default(t.t_fake, &(struct fh_answer){.fa_body = AT_OK_BODY});
    at_run(&t, 2, NULL, at_route(AT_ROUTE, AT_REPLY_OPTIONS, NULL));
    ev = at_post(&t, "thr-429", AT_QUESTION);
    at_wait_job(&t, ev, AT_ROUTE, "done", 30000);

    cr_expect_eq(at_count(&t, "POST", path), 2, "want 2 POSTs, have %zu",
                 at_count(&t, "POST", path));
    a = at_nth(&t, "POST", path, 0);
    b = at_nth(&t, "POST", path, 1);
    gap = b->fr_at_ms - a->fr_at_ms;
    cr_expect_geq(gap, 2000, "the retry came %lld ms after the 429 (asked: 2 s)", gap);
    at_expect_job(&t, ev, AT_ROUTE, "attempts", "2");
    fh_request_free(a);
    fh_request_free(b);
    free(path);
    at_finish(&t);
}


Test(api, status_429_with_retry_after_header_is_retried_no_sooner_than_asked)
{
    at_429_waits("api_429h", &(struct fh_answer){.fa_status = 429, .fa_retry_after = "2",
                                                 .fa_body = AT_429_BODY});
}


Test(api, status_429_with_retry_after_only_in_the_body_is_retried_no_sooner_than_asked)
{
    at_429_waits("api_429b", &(struct fh_answer){
        .fa_status = 429,
        .fa_body = "{\"statusCode\":429,\"success\":false,\"message\":\"Too many requests\","
                   "\"retryAfter\":2,\"limit\":500,\"remaining\":0,\"windowSeconds\":60}"});
}


/* Posts one event whose only request gets first; the job must die after it. */
static void
at_dies_after_one(const char *tag, const struct fh_answer *first, const char *api_extra,
                  const char *reason)
{
    struct at t;
    long long ev;

    at_init(&t, tag);
    fh_push(t.t_fake, first);
    fh_set_default(t.t_fake, &(struct fh_answer){.fa_body = AT_OK_BODY});
    at_run(&t, 2, api_extra, at_route(AT_ROUTE, AT_REPLY_OPTIONS, NULL));
    ev = at_post(&t, "thr-dead", AT_QUESTION);
    at_wait_job(&t, ev, AT_ROUTE, "dead", 20000);
    at_let_retries_show();

    cr_expect_eq(fh_count(t.t_fake), 1, "want exactly one request, have %zu",
                 fh_count(t.t_fake));
    at_expect_job(&t, ev, AT_ROUTE, "status", "dead");
    at_expect_job(&t, ev, AT_ROUTE, "attempts", "1");
    at_expect_job_has(&t, ev, AT_ROUTE, "last_error", reason);
    cr_expect_eq(h_daemon_log_count(&t.t_x.hx_daemon, "job dead"), 1,
                 "want one \"job dead\" log line");
    cr_expect_eq(h_daemon_log_count(&t.t_x.hx_daemon, reason), 1,
                 "want the platform's reason \"%s\" logged exactly once", reason);
    cr_expect_eq(h_sql_long(t.t_x.hx_db.hd_conninfo, "SELECT count(*) FROM hookd.api_actions"
                            " WHERE status = 'failed' AND http_status = %d",
                            first->fa_status), 1,
                 "hookd.api_actions has no failed row with HTTP %d", first->fa_status);
    at_finish(&t);
}


Test(api, status_429_messages_limit_reached_is_dead_after_one_request)
{
    at_dies_after_one("api_quota", &(struct fh_answer){
        .fa_status = 429, .fa_retry_after = "1",
        .fa_body = "{\"statusCode\":429,\"success\":false,\"message\":\"MESSAGES_LIMIT_REACHED:"
                   " the monthly message quota is spent\",\"retryAfter\":1}"},
        NULL, "MESSAGES_LIMIT_REACHED");
}


Test(api, status_401_api_key_not_valid_is_dead_with_the_platform_message_logged_once)
{
    at_dies_after_one("api_401", &(struct fh_answer){
        .fa_status = 401,
        .fa_body = "{\"statusCode\":401,\"success\":false,\"message\":\"API_KEY_NOT_VALID\","
                   "\"data\":null}"},
        NULL, "API_KEY_NOT_VALID");
}


Test(api, status_404_after_the_not_found_grace_is_dead)
{
    at_dies_after_one("api_404", &(struct fh_answer){
        .fa_status = 404,
        .fa_body = "{\"statusCode\":404,\"success\":false,\"message\":\"THREAD_NOT_FOUND\"}"},
        "  not_found_grace = 0;", "THREAD_NOT_FOUND");
}


Test(api, status_500_is_retried_until_the_platform_answers)
{
    struct at t;
    char *path = at_path("thr-500", "message");
    long long ev;

    at_init(&t, "api_500");
    for (int i = 0; i < 2; i++) {
        fh_push(t.t_fake, &(struct fh_answer){
            .fa_status = 500,
            .fa_body = "{\"statusCode\":500,\"success\":false,\"message\":\"oops\"}"});
    }
    fh_set_default(t.t_fake, &(struct fh_answer){.fa_body = AT_OK_BODY});
    at_run(&t, 2, NULL, at_route(AT_ROUTE, AT_REPLY_OPTIONS, NULL));
    ev = at_post(&t, "thr-500", AT_QUESTION);
    at_wait_job(&t, ev, AT_ROUTE, "done", 30000);
    cr_expect_eq(at_count(&t, "POST", path), 3, "want 3 POSTs, have %zu",
                 at_count(&t, "POST", path));
    cr_expect_eq(fh_count(t.t_fake), 3, "want no other request, have %zu",
                 fh_count(t.t_fake));
    at_expect_job(&t, ev, AT_ROUTE, "attempts", "3");
    cr_expect_eq(h_sql_long(t.t_x.hx_db.hd_conninfo, "SELECT count(*) FROM hookd.api_actions"
                            " WHERE status = 'done' AND http_status = 200"), 1,
                 "the API call is not recorded as done");
    free(path);
    at_finish(&t);
}


/* C20 (c): 404 for 3 s after the first call, then 200. */
static long long at_404_until_ms;
static pthread_mutex_t at_404_lock = PTHREAD_MUTEX_INITIALIZER;

static void
at_404_then_ok(const struct fh_request *req, struct fh_answer *ans, void *arg)
{
    bool missing;

    (void)req;
    (void)arg;
    pthread_mutex_lock(&at_404_lock);
    if (at_404_until_ms == 0) {
        at_404_until_ms = h_now_ms() + 3000;
    }
    missing = h_now_ms() < at_404_until_ms;
    pthread_mutex_unlock(&at_404_lock);
    if (missing) {
        ans->fa_status = 404;
        ans->fa_body = "{\"statusCode\":404,\"success\":false,"
                       "\"message\":\"THREAD_NOT_FOUND\"}";
    } else {
        ans->fa_body = AT_OK_BODY;
    }
}


Test(api, status_404_within_the_grace_is_retried_until_the_thread_shows)
{
    struct at t;
    char *path = at_path("thr-new", "message");
    struct fh_request *last;
    long long ev;
    size_t n;

    at_init(&t, "api_grace");
    fh_set_handler(t.t_fake, at_404_then_ok, NULL);
    at_run(&t, 2, "  not_found_grace = 60;",
           at_route(AT_ROUTE, AT_REPLY_OPTIONS, "retry = { attempts = 30; first_delay = 500;"
                    " factor = 1.0; max_delay = 500; };"));
    ev = at_post(&t, "thr-new", AT_QUESTION);
    at_wait_job(&t, ev, AT_ROUTE, "done", 40000);
    n = at_count(&t, "POST", path);
    cr_expect_geq(n, 2, "want the 404 retried, have %zu POSTs", n);
    last = at_nth(&t, "POST", path, n - 1);
    cr_expect_geq(last->fr_at_ms, at_404_until_ms, "the job ended before the thread showed");
    fh_request_free(last);
    free(path);
    at_finish(&t);
}


/* ---- 2. C19: a platform that never answers ------------------------------- */

/* hookd sessions idle in a transaction for more than half a second. */
static long
at_idle_in_transaction(struct at *t)
{
    return h_sql_long(h_env("HOOKD_TEST_PG"), "SELECT count(*) FROM pg_stat_activity"
                      " WHERE datname = '%s' AND state = 'idle in transaction'"
                      " AND now() - state_change > interval '500 milliseconds'",
                      t->t_x.hx_db.hd_name);
}


/* Posts one event and expects the 200 within a second; returns the event id. */
static long long
at_post_quickly(struct at *t, const char *thread)
{
    long long started = h_now_ms();
    long long ev = at_post(t, thread, AT_QUESTION);
    long long took = h_now_ms() - started;

    cr_expect_lt(took, 1000, "a webhook took %lld ms to be answered during the stall", took);
    return ev;
}


Test(api, unanswered_calls_time_out_and_retry_while_webhooks_stay_fast)
{
    struct at t;
    long long evs[24];
    int nev = 0;
    long long deadline;
    long idle_max = 0;
    char *first_attempts = NULL;

    at_init(&t, "api_c19");
    fh_set_default(t.t_fake, &(struct fh_answer){.fa_never = true});
    at_run(&t, 4, "  timeout = 1000;",
           at_route(AT_ROUTE, AT_REPLY_OPTIONS, "retry = { attempts = 100; first_delay = 200;"
                    " factor = 1.0; max_delay = 200; };"));
    for (int i = 0; i < 10; i++) {
        char thread[32];

        snprintf(thread, sizeof(thread), "stall-%d", i);
        evs[nev++] = at_post_quickly(&t, thread);
    }

    /* The stall: more webhooks, and no transaction held across a call. */
    deadline = h_now_ms() + 6000;
    for (int tick = 0; h_now_ms() < deadline; tick++) {
        long idle = at_idle_in_transaction(&t);

        idle_max = idle > idle_max ? idle : idle_max;
        if (nev < 20 && tick % 5 == 0) {
            char thread[32];

            snprintf(thread, sizeof(thread), "stall-%d", nev);
            evs[nev++] = at_post_quickly(&t, thread);
        }
        h_sleep_ms(100);
    }
    cr_expect_eq(idle_max, 0, "a hookd session sat idle in a transaction during the stall");
    cr_expect_eq(h_events(&t.t_x), nev, "want %d events stored, have %ld", nev,
                 h_events(&t.t_x));

    /* The first job timed out at api.timeout and was put back to be retried. */
    deadline = h_now_ms() + 20000;
    for (;;) {
        free(first_attempts);
        first_attempts = at_job(&t, evs[0], AT_ROUTE, "attempts");
        if ((first_attempts != NULL && atoi(first_attempts) >= 2)
            || h_now_ms() >= deadline)
        {
            break;
        }
        h_sleep_ms(100);
    }
    cr_expect(first_attempts != NULL && atoi(first_attempts) >= 2,
              "the stalled job was not retried: %s", at_job_row(&t, evs[0], AT_ROUTE));
    free(first_attempts);
    at_expect_job_has(&t, evs[0], AT_ROUTE, "last_error", "no answer");
    cr_expect_eq(at_jobs(&t, AT_ROUTE, "dead"), 0, "a stalled job went dead");
    cr_expect_geq(h_daemon_log_count(&t.t_x.hx_daemon, "status=0 outcome=retry"), 1,
                  "no unanswered call was logged as a retry");

    /* The platform answers again: every job completes. */
    fh_set_default(t.t_fake, &(struct fh_answer){.fa_body = AT_OK_BODY});
    at_wait_jobs(&t, AT_ROUTE, "done", nev, 60000);
    at_finish(&t);
}


/* ---- 3. C18: Retry-After values ------------------------------------------ */

#define AT_C18_N 8

/* The header values of case C18; NULL marks the one made 5 s ahead. */
static const char *const at_c18_values[AT_C18_N] = {
    "-1", "abc", "", "1.5", "Wed, 31 Feb 2027 10:00:00 GMT",
    "Fri, 01 Jan 1999 00:00:00 GMT", "86400", NULL
};

struct at_c18 {
    pthread_mutex_t c_lock;
    int c_seen[AT_C18_N];               /* POSTs per thread */
    long long c_date_s;                 /* the future date, Unix seconds */
    char c_date[64];
    long long c_second_wall_ms;         /* when the future-date thread came back */
};

static struct at_c18 at_c18 = {.c_lock = PTHREAD_MUTEX_INITIALIZER};


static long long
at_wall_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}


/* An IMF-fixdate of Unix time s into out, in English whatever the locale. */
static void
at_imf_date(long long s, char *out, size_t cap)
{
    static const char *const wdays[7] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static const char *const months[12] = {
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"
    };
    time_t tt = (time_t)s;
    struct tm tm;

    gmtime_r(&tt, &tm);
    snprintf(out, cap, "%s, %02d %s %04d %02d:%02d:%02d GMT", wdays[tm.tm_wday],
             tm.tm_mday, months[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min,
             tm.tm_sec);
}


/* Thread "c18-<i>": its first POST gets 429 with value i, later ones 200. */
static void
at_c18_answer(const struct fh_request *req, struct fh_answer *ans, void *arg)
{
    const char *p = strstr(req->fr_path, "/thread/c18-");
    int i = p ? atoi(p + 12) : -1;
    int seen;

    (void)arg;
    ans->fa_body = AT_OK_BODY;
    if (i < 0 || i >= AT_C18_N || strcmp(req->fr_method, "POST") != 0) {
        return;
    }
    pthread_mutex_lock(&at_c18.c_lock);
    seen = ++at_c18.c_seen[i];
    if (seen == 1 && at_c18_values[i] == NULL) {
        /* Whole seconds: at least 5 s after this answer. */
        at_c18.c_date_s = at_wall_ms() / 1000 + 6;
        at_imf_date(at_c18.c_date_s, at_c18.c_date, sizeof(at_c18.c_date));
    }
    if (seen == 2 && at_c18_values[i] == NULL) {
        at_c18.c_second_wall_ms = at_wall_ms();
    }
    pthread_mutex_unlock(&at_c18.c_lock);
    if (seen == 1) {
        ans->fa_status = 429;
        ans->fa_body = AT_429_BODY;
        ans->fa_retry_after = at_c18_values[i] ? at_c18_values[i] : at_c18.c_date;
    }
}


/* Posts the C18 events first..last-1 and waits until their jobs are done. */
static void
at_c18_post(struct at *t, int first, int last, long long ev[], long long job[])
{
    for (int i = first; i < last; i++) {
        char thread[16];

        snprintf(thread, sizeof(thread), "c18-%d", i);
        ev[i] = at_post(t, thread, AT_QUESTION);
    }
    for (int i = first; i < last; i++) {
        at_wait_job(t, ev[i], AT_ROUTE, "done", 40000);
        job[i] = at_job_id(t, ev[i], AT_ROUTE);
        at_expect_job(t, ev[i], AT_ROUTE, "attempts", "2");
    }
}


/* The gap between the two POSTs of C18 thread i (asserts there are two). */
static long long
at_c18_gap(struct at *t, int i)
{
    const char *v = at_c18_values[i] ? at_c18_values[i] : at_c18.c_date;
    char thread[16];
    char *path;
    struct fh_request *a, *b;
    long long gap;

    snprintf(thread, sizeof(thread), "c18-%d", i);
    path = at_path(thread, "message");
    cr_expect_eq(at_count(t, "POST", path), 2, "Retry-After \"%s\": want 2 POSTs, have %zu",
                 v, at_count(t, "POST", path));
    a = at_nth(t, "POST", path, 0);
    b = at_nth(t, "POST", path, 1);
    gap = b->fr_at_ms - a->fr_at_ms;
    fh_request_free(a);
    fh_request_free(b);
    free(path);
    return gap;
}


/*
 * Invalid, empty, negative, fractional and impossible values fall back to
 * the route's backoff (200 ms here; 1.5 counts as invalid), a past date
 * means a prompt retry, and 86400 is capped at api.max_retry_after (3 s).
 */
Test(api, retry_after_values_of_c18_are_ignored_or_capped_without_a_crash)
{
    struct at t;
    long long ev[AT_C18_N], job[AT_C18_N];

    at_init(&t, "api_c18");
    fh_set_handler(t.t_fake, at_c18_answer, NULL);
    at_run(&t, AT_C18_N, "  max_retry_after = 3;",
           at_route(AT_ROUTE, AT_REPLY_OPTIONS, NULL));
    at_c18_post(&t, 0, 7, ev, job);
    for (int i = 0; i < 7; i++) {
        long long gap = at_c18_gap(&t, i);
        long delay = at_logged_delay(&t, job[i]);

        if (i <= 5) {
            cr_expect(delay >= 0 && delay <= 200, "Retry-After \"%s\": want the route's"
                      " backoff (<= 200 ms), hookd waited delay_ms=%ld", at_c18_values[i],
                      delay);
            continue;
        }
        cr_expect_eq(delay, 3000, "Retry-After 86400: want the cap of 3 s, have"
                     " delay_ms=%ld", delay);
        cr_expect_geq(gap, 3000, "Retry-After 86400: the retry came after %lld ms", gap);
        cr_expect_eq(h_sql_long(t.t_x.hx_db.hd_conninfo, "SELECT count(*) FROM hookd.jobs"
                                " WHERE id = %lld AND run_at < created_at"
                                " + interval '10 seconds'", job[i]), 1,
                     "Retry-After 86400: run_at was put beyond 10 s");
    }
    at_finish(&t);
}


/* A valid IMF-fixdate 5 to 6 s ahead (under the cap) is waited for. */
Test(api, retry_after_date_in_the_future_is_honoured)
{
    struct at t;
    long long ev[AT_C18_N], job[AT_C18_N];
    long long gap;

    at_init(&t, "api_c18d");
    fh_set_handler(t.t_fake, at_c18_answer, NULL);
    at_run(&t, 2, "  max_retry_after = 30;", at_route(AT_ROUTE, AT_REPLY_OPTIONS, NULL));
    at_c18_post(&t, 7, 8, ev, job);
    gap = at_c18_gap(&t, 7);
    cr_expect_geq(gap, 5000, "Retry-After %s: the retry came after %lld ms", at_c18.c_date,
                  gap);
    cr_expect_geq(at_c18.c_second_wall_ms, at_c18.c_date_s * 1000,
                  "Retry-After %s: the retry came before that date", at_c18.c_date);
    at_finish(&t);
}


/* ---- 4. the limiter ------------------------------------------------------ */

Test(api, rate_limiter_sends_no_more_than_the_limit_and_loses_no_job)
{
    struct at t;
    long long deadline;
    long limited = 0;

    at_init(&t, "api_limit");
    fh_set_default(t.t_fake, &(struct fh_answer){.fa_body = AT_OK_BODY});
    at_run(&t, 16, "  rate_limit = 20;\n  rate_window = 60;",
           at_route(AT_ROUTE, AT_REPLY_OPTIONS, NULL));
    for (int i = 0; i < 30; i++) {
        char thread[32];

        snprintf(thread, sizeof(thread), "limit-%d", i);
        (void)at_post(&t, thread, AT_QUESTION);
    }
    at_wait_jobs(&t, AT_ROUTE, "done", 20, 30000);
    deadline = h_now_ms() + 30000;
    while (h_now_ms() < deadline) {
        limited = h_sql_long(t.t_x.hx_db.hd_conninfo, "SELECT count(*) FROM hookd.jobs"
                             " WHERE status = 'pending' AND last_error LIKE"
                             " '%%rate limiter%%'");
        if (limited == 10) {
            break;
        }
        h_sleep_ms(100);
    }
    cr_expect_eq(limited, 10, "want the 10 jobs beyond the limit pending with \"rate"
                 " limiter\" in last_error, have %ld", limited);
    cr_expect_eq(fh_count(t.t_fake), 20, "want exactly 20 requests in the window, have %zu",
                 fh_count(t.t_fake));
    cr_expect_eq(at_jobs(&t, AT_ROUTE, "done"), 20, "done jobs");
    cr_expect_eq(at_jobs(&t, AT_ROUTE, "dead"), 0, "no job may die of the limiter");
    cr_expect_eq(h_sql_long(t.t_x.hx_db.hd_conninfo, "SELECT count(*) FROM hookd.jobs"), 30,
                 "every event keeps its job");
    cr_expect_eq(h_sql_long(t.t_x.hx_db.hd_conninfo, "SELECT count(*) FROM hookd.jobs"
                            " WHERE status = 'pending' AND run_at > now()"), 10,
                 "the held-back jobs are not scheduled after the window");
    at_finish(&t);
}


/*
 * A call the limiter held back never went out, so the next attempt has no
 * lost answer to look for: it must POST without a GET first.
 */
Test(api, call_held_back_by_the_limiter_is_not_taken_for_a_lost_answer)
{
    struct at t;
    char *path_b = at_path("held-b", "message");
    long long ev_a, ev_b;

    at_init(&t, "api_held");
    fh_set_default(t.t_fake, &(struct fh_answer){.fa_body = AT_OK_BODY});
    at_run(&t, 2, "  rate_limit = 1;\n  rate_window = 7;",
           at_route(AT_ROUTE, AT_REPLY_OPTIONS, NULL));
    ev_a = at_post(&t, "held-a", AT_QUESTION);
    at_wait_job(&t, ev_a, AT_ROUTE, "done", 20000);
    ev_b = at_post(&t, "held-b", AT_QUESTION);
    /* Held back once (7 s > the limiter's 5 s of waiting), then sent. */
    at_wait_final(&t, ev_b, AT_ROUTE, 60000);
    at_expect_job(&t, ev_b, AT_ROUTE, "status", "done");
    at_expect_job(&t, ev_b, AT_ROUTE, "attempts", "2");
    cr_expect_eq(at_count(&t, "POST", path_b), 1, "want one POST for the held-back reply");
    cr_expect_eq(at_count(&t, "GET", NULL), 0, "a call that was never sent was looked for"
                 " in the thread (%zu GETs): it spends the rate budget",
                 at_count(&t, "GET", NULL));
    cr_expect_eq(fh_count(t.t_fake), 2, "want 2 requests in all, have %zu",
                 fh_count(t.t_fake));
    free(path_b);
    at_finish(&t);
}


/* ---- 5. no double replies after a lost answer ---------------------------- */

/*
 * The first POST is recorded by the fake and answered by closing the
 * connection; the GET of the thread's messages then shows the reply (or
 * not).
 */
static void
at_lost_answer(const char *tag, bool in_thread)
{
    struct at t;
    char *post = at_path("lost", "message");
    char *get = at_path("lost", "messages");
    char *listing = h_strdupf("{\"statusCode\":200,\"success\":true,\"message\":\"OK\","
                              "\"data\":[{\"id\":\"m1\",\"message\":\"%s\","
                              "\"from\":\"USER\"}%s]}", AT_QUESTION,
                              in_thread ? ",{\"id\":\"m2\",\"message\":\"" AT_REPLY "\","
                              "\"from\":\"AGENT\",\"agentName\":\"" AT_AGENT "\"}" : "");
    long long ev;

    at_init(&t, tag);
    fh_push(t.t_fake, &(struct fh_answer){.fa_close = true});
    fh_push(t.t_fake, &(struct fh_answer){.fa_body = listing});
    fh_set_default(t.t_fake, &(struct fh_answer){.fa_body = AT_OK_BODY});
    at_run(&t, 2, NULL, at_route(AT_ROUTE, AT_REPLY_OPTIONS, NULL));
    ev = at_post(&t, "lost", AT_QUESTION);
    at_wait_job(&t, ev, AT_ROUTE, "done", 30000);
    at_let_retries_show();

    cr_expect_eq(at_count(&t, "GET", get), 1, "want one look into the thread, have %zu",
                 at_count(&t, "GET", get));
    cr_expect_eq(at_count(&t, "POST", post), in_thread ? 1 : 2,
                 "the reply %s in the thread: want %d POSTs, have %zu",
                 in_thread ? "was" : "was not", in_thread ? 1 : 2,
                 at_count(&t, "POST", post));
    cr_expect_eq(fh_count(t.t_fake), in_thread ? 2 : 3, "requests in all: %zu",
                 fh_count(t.t_fake));
    at_expect_job(&t, ev, AT_ROUTE, "attempts", "2");
    at_expect_job(&t, ev, AT_ROUTE, "output", in_thread
                  ? "rule 1: replied (by an earlier attempt)" : "rule 1: replied");
    cr_expect_eq(h_sql_long(t.t_x.hx_db.hd_conninfo, "SELECT count(*) FROM hookd.api_actions"
                            " WHERE job_id = %lld AND seq = 1 AND status = 'done'",
                            at_job_id(&t, ev, AT_ROUTE)), 1,
                 "hookd.api_actions: the call is not done");
    free(listing);
    free(post);
    free(get);
    at_finish(&t);
}


Test(api, lost_answer_whose_reply_is_in_the_thread_is_not_posted_again)
{
    at_lost_answer("api_lost1", true);
}


Test(api, lost_answer_whose_reply_is_not_in_the_thread_is_posted_exactly_once_more)
{
    at_lost_answer("api_lost2", false);
}


Test(api, lost_escalation_answer_is_sent_again_at_least_once)
{
    struct at t;
    char *path = at_path("lost-esc", "escalate");
    long long ev;

    at_init(&t, "api_lost3");
    fh_push(t.t_fake, &(struct fh_answer){.fa_close = true});
    fh_set_default(t.t_fake, &(struct fh_answer){.fa_body = AT_OK_BODY});
    at_run(&t, 2, NULL, at_route(AT_ROUTE, "rules = ( { keywords = [ \"human\" ];"
                                 " action = \"escalate\"; prompt = \"Wants a person\"; } );",
                                 NULL));
    ev = at_post(&t, "lost-esc", "Let me talk to a human");
    at_wait_job(&t, ev, AT_ROUTE, "done", 30000);
    at_let_retries_show();
    /* Nothing to look for in the thread: the escalation is simply sent again. */
    cr_expect_eq(at_count(&t, "POST", path), 2, "want the escalation sent twice, have %zu",
                 at_count(&t, "POST", path));
    cr_expect_eq(fh_count(t.t_fake), 2, "want no other request, have %zu",
                 fh_count(t.t_fake));
    free(path);
    at_finish(&t);
}


/* ---- 6. autoreply's rules ------------------------------------------------ */

#define AT_ESCALATE_OPTIONS \
    "rules = ( { keywords = [ \"human\", \"person\" ]; action = \"escalate\";" \
    " prompt = \"The visitor wants a person\"; } );"

Test(api, keyword_human_escalates_with_the_rule_prompt)
{
    struct at t;
    char *path = at_path("esc", "escalate");
    struct fh_request *r;
    json_object *body;
    long long ev;

    at_init(&t, "api_esc");
    fh_set_default(t.t_fake, &(struct fh_answer){.fa_body = AT_OK_BODY});
    at_run(&t, 2, NULL, at_route(AT_ROUTE, AT_ESCALATE_OPTIONS, NULL));
    ev = at_post(&t, "esc", "Can I talk to a Human, please?");
    at_wait_job(&t, ev, AT_ROUTE, "done", 20000);
    cr_expect_eq(fh_count(t.t_fake), 1, "want one request, have %zu", fh_count(t.t_fake));
    r = at_nth(&t, "POST", path, 0);
    body = json_tokener_parse(r->fr_body);
    cr_assert(body != NULL, "the escalation body is not JSON: %s", r->fr_body);
    at_expect_member(body, "escalationPrompt", "The visitor wants a person");
    at_expect_job(&t, ev, AT_ROUTE, "output", "rule 1: escalated");
    json_object_put(body);
    fh_request_free(r);
    free(path);
    at_finish(&t);
}


Test(api, humane_does_not_match_the_keyword_human)
{
    struct at t;
    long long ev;

    at_init(&t, "api_humane");
    fh_set_default(t.t_fake, &(struct fh_answer){.fa_body = AT_OK_BODY});
    at_run(&t, 2, NULL, at_route(AT_ROUTE, AT_ESCALATE_OPTIONS, NULL));
    ev = at_post(&t, "humane", "Is your packaging humane and personal?");
    at_wait_job(&t, ev, AT_ROUTE, "done", 20000);
    at_expect_job(&t, ev, AT_ROUTE, "output", "no rule matched");
    cr_expect_eq(fh_count(t.t_fake), 0, "want no request, have %zu", fh_count(t.t_fake));
    at_finish(&t);
}


Test(api, regex_rule_replies_only_to_matching_questions)
{
    struct at t;
    char *yes = at_path("rx-yes", "message");
    struct fh_request *r;
    json_object *body;
    long long ev_yes, ev_no;

    at_init(&t, "api_regex");
    fh_set_default(t.t_fake, &(struct fh_answer){.fa_body = AT_OK_BODY});
    at_run(&t, 2, NULL, at_route(AT_ROUTE, "rules = ( { matches = \"refund|money +back\";"
                                 " action = \"reply\"; text = \"Refunds take 5 days.\"; } );",
                                 NULL));
    ev_yes = at_post(&t, "rx-yes", "I want my MONEY  BACK for order 7");
    ev_no = at_post(&t, "rx-no", "Where is my parcel?");
    at_wait_job(&t, ev_yes, AT_ROUTE, "done", 20000);
    at_wait_job(&t, ev_no, AT_ROUTE, "done", 20000);
    at_expect_job(&t, ev_no, AT_ROUTE, "output", "no rule matched");
    cr_expect_eq(fh_count(t.t_fake), 1, "want one request, have %zu", fh_count(t.t_fake));
    r = at_nth(&t, "POST", yes, 0);
    body = json_tokener_parse(r->fr_body);
    cr_assert(body != NULL, "the body is not JSON: %s", r->fr_body);
    at_expect_member(body, "message", "Refunds take 5 days.");
    json_object_put(body);
    fh_request_free(r);
    free(yes);
    at_finish(&t);
}


Test(api, ai_and_agent_messages_get_no_request)
{
    struct at t;
    char *ai = h_sample("new_message_ai.json", NULL);
    char *agent = h_sample("new_message_agent.json", NULL);
    char *agent_q = h_replace(agent, "\"question\":null",
                              "\"question\":\"Please change the address\"");
    char *control = at_path("control", "message");
    long long ev_ai, ev_agent, ev_agent_q, ev_control;

    at_init(&t, "api_ai");
    fh_set_default(t.t_fake, &(struct fh_answer){.fa_body = AT_OK_BODY});
    /* "address" is in the AI's and the agent's answers, and in the control. */
    at_run(&t, 2, NULL, at_route(AT_ROUTE, "rules = ( { keywords = [ \"address\" ];"
                                 " action = \"reply\"; text = \"" AT_REPLY "\"; } );", NULL));
    cr_assert(strcmp(agent_q, agent) != 0, "the agent sample has no \"question\":null");
    ev_ai = at_post_body(&t, ai);
    ev_agent = at_post_body(&t, agent);
    ev_agent_q = at_post_body(&t, agent_q);
    ev_control = at_post(&t, "control", "Can I change the address?");
    at_wait_job(&t, ev_ai, AT_ROUTE, "done", 20000);
    at_wait_job(&t, ev_agent, AT_ROUTE, "done", 20000);
    at_wait_job(&t, ev_agent_q, AT_ROUTE, "done", 20000);
    at_wait_job(&t, ev_control, AT_ROUTE, "done", 20000);
    at_expect_job(&t, ev_ai, AT_ROUTE, "output", "not a visitor message");
    at_expect_job(&t, ev_agent, AT_ROUTE, "output", "not a visitor message");
    at_expect_job(&t, ev_agent_q, AT_ROUTE, "output", "agent message");
    cr_expect_eq(fh_count(t.t_fake), 1, "want only the control's request, have %zu",
                 fh_count(t.t_fake));
    cr_expect_eq(at_count(&t, "POST", control), 1, "the control got no reply");
    free(ai);
    free(agent);
    free(agent_q);
    free(control);
    at_finish(&t);
}


/*
 * Office hours "HH:00" to two hours later on every day, where HH is the
 * hour now in UTC+14 (Etc/GMT-14: the Etc signs are inverted). In UTC-12
 * (Etc/GMT+12) it is 26 hours earlier, so two hours before the window there,
 * also after an hour turns during the test.
 */
Test(api, office_hours_follow_each_routes_time_zone)
{
    struct at t;
    char *path = at_path("hours", "message");
    time_t now = time(NULL);
    struct tm utc;
    int from, to;
    char *east, *west, *routes;
    struct fh_request *r;
    json_object *body;
    long long ev;

    gmtime_r(&now, &utc);
    from = (utc.tm_hour + 14) % 24;
    to = (from + 2) % 24;
    at_init(&t, "api_hours");
    fh_set_default(t.t_fake, &(struct fh_answer){.fa_body = AT_OK_BODY});
    east = h_strdupf("office_hours = { timezone = \"Etc/GMT-14\";"
                     " days = [ 1, 2, 3, 4, 5, 6, 7 ]; from = \"%02d:00\"; to = \"%02d:00\"; };"
                     " rules = ( { outside_hours = true; action = \"reply\";"
                     " text = \"East is closed\"; } );", from, to);
    west = h_strdupf("office_hours = { timezone = \"Etc/GMT+12\";"
                     " days = [ 1, 2, 3, 4, 5, 6, 7 ]; from = \"%02d:00\"; to = \"%02d:00\"; };"
                     " rules = ( { outside_hours = true; action = \"reply\";"
                     " text = \"West is closed\"; } );", from, to);
    routes = h_strdupf("%s,\n%s", at_route("east", east, NULL), at_route("west", west, NULL));
    at_run(&t, 2, NULL, routes);
    ev = at_post(&t, "hours", AT_QUESTION);
    at_wait_job(&t, ev, "east", "done", 20000);
    at_wait_job(&t, ev, "west", "done", 20000);
    at_expect_job(&t, ev, "east", "output", "no rule matched");
    at_expect_job(&t, ev, "west", "output", "rule 1: replied");
    cr_expect_eq(fh_count(t.t_fake), 1, "want one reply, have %zu", fh_count(t.t_fake));
    r = at_nth(&t, "POST", path, 0);
    body = json_tokener_parse(r->fr_body);
    cr_assert(body != NULL, "the body is not JSON: %s", r->fr_body);
    at_expect_member(body, "message", "West is closed");
    json_object_put(body);
    fh_request_free(r);
    free(east);
    free(west);
    free(routes);
    free(path);
    at_finish(&t);
}


Test(api, once_per_thread_rule_replies_once_per_conversation)
{
    struct at t;
    char *path_a = at_path("once-a", "message");
    char *path_b = at_path("once-b", "message");
    long long a1, a2, b1;

    at_init(&t, "api_once");
    fh_set_default(t.t_fake, &(struct fh_answer){.fa_body = AT_OK_BODY});
    at_run(&t, 2, NULL, at_route(AT_ROUTE, "rules = ( { keywords = [ \"order\" ];"
                                 " once_per_thread = true; action = \"reply\";"
                                 " text = \"" AT_REPLY "\"; } );", NULL));
    a1 = at_post(&t, "once-a", AT_QUESTION);
    a2 = at_post(&t, "once-a", "And my other order 10483?");
    b1 = at_post(&t, "once-b", AT_QUESTION);
    at_wait_job(&t, a1, AT_ROUTE, "done", 20000);
    at_wait_job(&t, a2, AT_ROUTE, "done", 20000);
    at_wait_job(&t, b1, AT_ROUTE, "done", 20000);
    at_expect_job(&t, a1, AT_ROUTE, "output", "rule 1: replied");
    at_expect_job(&t, a2, AT_ROUTE, "output", "no rule matched");
    cr_expect_eq(at_count(&t, "POST", path_a), 1, "thread A: want one reply, have %zu",
                 at_count(&t, "POST", path_a));
    cr_expect_eq(at_count(&t, "POST", path_b), 1, "thread B: want one reply, have %zu",
                 at_count(&t, "POST", path_b));
    cr_expect_eq(fh_count(t.t_fake), 2, "want 2 requests in all, have %zu",
                 fh_count(t.t_fake));
    free(path_a);
    free(path_b);
    at_finish(&t);
}


/* ---- 7. the key ---------------------------------------------------------- */

Test(api, api_key_never_reaches_the_log_or_the_database)
{
    struct at t;
    char *log;
    long long ev_ok, ev_bad, ev_lost;

    at_init(&t, "api_key");
    t.t_x.hx_cfg.hc_log_level = "debug";
    fh_push(t.t_fake, &(struct fh_answer){
        .fa_status = 500, .fa_body = "{\"statusCode\":500,\"success\":false}"});
    fh_set_default(t.t_fake, &(struct fh_answer){.fa_body = AT_OK_BODY});
    at_run(&t, 1, NULL, at_route(AT_ROUTE, AT_REPLY_OPTIONS, NULL));
    ev_ok = at_post(&t, "key-1", AT_QUESTION);
    at_wait_job(&t, ev_ok, AT_ROUTE, "done", 20000);

    fh_push(t.t_fake, &(struct fh_answer){
        .fa_status = 401,
        .fa_body = "{\"statusCode\":401,\"success\":false,\"message\":\"API_KEY_NOT_VALID\"}"});
    ev_bad = at_post(&t, "key-2", AT_QUESTION);
    at_wait_job(&t, ev_bad, AT_ROUTE, "dead", 20000);

    fh_push(t.t_fake, &(struct fh_answer){.fa_close = true});
    ev_lost = at_post(&t, "key-3", AT_QUESTION);
    at_wait_job(&t, ev_lost, AT_ROUTE, "done", 20000);

    log = h_daemon_log(&t.t_x.hx_daemon);
    cr_expect(strstr(log, AT_KEY) == NULL, "the API key is in the debug log");
    cr_expect(strstr(log, "Bearer") == NULL, "an Authorization header is in the debug log");
    free(log);
    cr_expect_eq(h_sql_long(t.t_x.hx_db.hd_conninfo, "SELECT count(*) FROM hookd.api_actions"
                            " a WHERE a::text LIKE '%%%s%%' OR a::text LIKE '%%Bearer%%'",
                            AT_KEY), 0, "the API key is in hookd.api_actions");
    cr_expect_eq(h_sql_long(t.t_x.hx_db.hd_conninfo, "SELECT count(*) FROM hookd.api_actions"),
                 3, "want one recorded call per job");
    at_finish(&t);
}
