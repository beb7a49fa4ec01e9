/* SPDX-License-Identifier: MIT */
/*
 * The crm and handoff handlers (build/handlers/crm.so and handoff.so) run by
 * a real daemon, and the queue commands `hookd jobs`, `hookd replay` and
 * `hookd events` run against that daemon's database.
 *
 * crm: one contact per person (e-mail, else phone, normalised), the newest
 * lead by createdAt wins whatever the order of arrival (C20 a), redelivery,
 * retries and replays change nothing, and concurrent workers never make two
 * contacts for one person.
 *
 * handoff: one open ticket per conversation, a notice per escalation through
 * a notify command (a shell script in the test's temp dir that appends its
 * stdin and HOOKD_* variables to a file), retried until the command succeeds
 * without writing the ticket twice; bad options fail check-config.
 *
 * Plugins come from <cwd>/build/handlers (the cwd is the repo root under
 * `make check`); the queue commands use the counter plugin of
 * <cwd>/build/tests/plugins. Waiting is always polling with a bound.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <criterion/logging.h>
#include <json-c/json.h>
#include <libpq-fe.h>

#include "support/harness.h"

TestSuite(crm_handoff, .fini = h_suite_fini, .timeout = 120);

/* The chatbot and thread of the samples. */
#define CH_BOT "365062873485935184"
#define CH_THREAD "06b3b43c-5651-49a2-b618-d7f24667c1b6"
#define CH_ANON_THREAD "9a1c77e2-0d3b-4f55-a0c1-2b8e6f0d4410"
#define CH_OTHER_THREAD "5f2d8c41-7a3e-4b19-9c06-e1d2f3a4b5c6"
#define CH_PROMPT "I want to talk to an actual human."
#define CH_WAIT_MS 30000
#define CH_CLI_MS 30000
#define CH_MAX_ARGS 16

static const char counter_ddl[] =
    "CREATE TABLE IF NOT EXISTS public.counter_runs (event_id bigint, route text,"
    " attempt int, chatbot_id text, thread_id text, started_us bigint, ended_us bigint,"
    " seq bigserial)";

/* One crm route for leads and escalations; quick retries. */
static const char crm_routes[] =
    "  { name = \"crm-contacts\";\n"
    "    events = [ \"NEW_LEAD\", \"CONVERSATION_ESCALATED\" ];\n"
    "    handler = \"crm\";\n"
    "    retry = { attempts = 10; first_delay = 100; factor = 2.0; max_delay = 1000; };\n"
    "  }";


/* ---- setup ---------------------------------------------------------------- */

/* <cwd>/<sub> (malloc'd); asserts that <cwd>/<sub>/<so> is there. */
static char *
build_dir(const char *sub, const char *so)
{
    char cwd[PATH_MAX];
    char *dir;
    char *path;

    cr_assert_not_null(getcwd(cwd, sizeof(cwd)), "getcwd: %s", strerror(errno));
    dir = h_strdupf("%s/%s", cwd, sub);
    path = h_strdupf("%s/%s", dir, so);
    cr_assert(access(path, R_OK) == 0,
              "%s is missing (run `make` and `make tests` from the repo root)", path);
    free(path);
    return dir;
}


/* The dispatch group and routes list of a config (malloc'd). */
static char *
dispatch_text(const char *plugin_dir, int workers, const char *routes)
{
    return h_strdupf("dispatch = {\n  plugin_dir = \"%s\";\n  workers = %d;\n"
                     "  poll_interval = 500;\n  lease = 60;\n};\nroutes = (\n%s\n);",
                     plugin_dir, workers, routes);
}


/*
 * Makes x (database, temp dir, port) with dispatch through the plugins of
 * <cwd>/<sub> (so must be there) and the given routes, and starts hookd.
 */
static void
start_routes(struct h_ctx *x, const char *sub, const char *so, int workers, const char *routes)
{
    char *dir = build_dir(sub, so);
    char *top = dispatch_text(dir, workers, routes);

    x->hx_cfg.hc_top_extra = top;
    h_ctx_start(x);
    x->hx_cfg.hc_top_extra = NULL;
    free(top);
    free(dir);
}


/* h_ctx_init, then start_routes with crm_routes and workers workers. */
static void
start_crm(struct h_ctx *x, const char *tag, int workers)
{
    h_ctx_init(x, tag);
    start_routes(x, "build/handlers", "crm.so", workers, crm_routes);
}


/* ---- posting -------------------------------------------------------------- */

/*
 * POSTs body, asserts 200 with "status" want ("stored" or "duplicate"), and
 * returns the event id (-1 when a duplicate carries none).
 */
static long
post_event(struct h_ctx *x, const char *body, const char *want)
{
    struct h_resp r;
    json_object *o;
    json_object *v;
    long id = -1;

    (void)h_post_signed(x->hx_port, H_DEFAULT_PATH, x->hx_cfg.hc_secrets[0], body,
                        strlen(body), &r);
    h_assert_status(&r, 200, "posting an event");
    o = json_tokener_parse(r.hr_body);
    cr_assert_not_null(o, "answer is not JSON: %s", r.hr_body);
    cr_assert(json_object_object_get_ex(o, "status", &v)
              && strcmp(json_object_get_string(v), want) == 0,
              "want status %s, got %s", want, r.hr_body);
    if (json_object_object_get_ex(o, "id", &v)) {
        id = strtol(json_object_get_string(v), NULL, 10);
    }
    cr_assert(id > 0 || strcmp(want, "duplicate") == 0, "no event id in %s", r.hr_body);
    json_object_put(o);
    h_resp_free(&r);
    return id;
}


/* A NEW_LEAD for thread with createdAt created; lead is the JSON of data.lead. */
static char *
lead_body(const char *thread, const char *created, const char *lead)
{
    return h_strdupf("{\"event\":\"NEW_LEAD\",\"data\":{\"chatbotId\":\"%s\","
                     "\"threadId\":\"%s\",\"lead\":%s,\"createdAt\":\"%s\"}}",
                     CH_BOT, thread, lead, created);
}


/* Pids of the children post_concurrently started, ended by kill_posters. */
static pid_t posters[8];


static void
kill_posters(void)
{
    for (int i = 0; i < 8; i++) {
        if (posters[i] > 0) {
            (void)kill(posters[i], SIGKILL);
            (void)waitpid(posters[i], NULL, 0);
            posters[i] = 0;
        }
    }
}


/*
 * POSTs bodies[order[0..n-1]] from nproc (at most 8) processes at once, each
 * taking every nproc-th entry; asserts that every answer was 200.
 */
static void
post_concurrently(struct h_ctx *x, char *const bodies[], const int order[], int n, int nproc)
{
    long long deadline = h_now_ms() + 90000;
    int failed = 0;

    cr_assert(nproc >= 1 && nproc <= 8);
    for (int p = 0; p < nproc; p++) {
        pid_t pid = fork();

        cr_assert(pid >= 0, "fork: %s", strerror(errno));
        if (pid == 0) {
            int bad = 0;

            for (int i = p; i < n; i += nproc) {
                const char *b = bodies[order[i]];

                if (h_post_signed(x->hx_port, H_DEFAULT_PATH, x->hx_cfg.hc_secrets[0], b,
                                  strlen(b), NULL) != 200)
                {
                    bad++;
                }
            }
            _exit(bad > 100 ? 100 : bad);
        }
        posters[p] = pid;
    }
    for (int p = 0; p < nproc; p++) {
        int status = 0;
        pid_t got;

        while ((got = waitpid(posters[p], &status, WNOHANG)) == 0 && h_now_ms() < deadline) {
            h_sleep_ms(20);
        }
        if (got != posters[p]) {
            kill_posters();
            cr_assert_fail("posting process %d did not finish within 90 s", p);
        }
        posters[p] = 0;
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            failed++;
        }
    }
    cr_assert_eq(failed, 0, "%d posting processes got answers other than 200", failed);
}


/* Shuffles a[0..n-1] (Fisher-Yates) with a logged seed. */
static void
shuffle(int a[], int n)
{
    unsigned seed = (unsigned)time(NULL) ^ (unsigned)getpid();

    cr_log_info("shuffle seed %u", seed);
    for (int i = n - 1; i > 0; i--) {
        int j = (int)(rand_r(&seed) % (unsigned)(i + 1));
        int t = a[i];

        a[i] = a[j];
        a[j] = t;
    }
}


/* ---- queries -------------------------------------------------------------- */

/* One text value of the test database (malloc'd, "(null)" for none). */
static char *
value(struct h_ctx *x, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static char *
value(struct h_ctx *x, const char *fmt, ...)
{
    char *sql = NULL;
    char *v;
    va_list ap;
    int rc;

    va_start(ap, fmt);
    rc = vasprintf(&sql, fmt, ap);
    va_end(ap);
    cr_assert(rc >= 0);
    v = h_sql_value(x->hx_db.hd_conninfo, "%s", sql);
    free(sql);
    return v != NULL ? v : strdup("(null)");
}


/* Asserts that the query's one value is want. */
static void
expect_value(struct h_ctx *x, const char *want, const char *sql)
{
    char *v = value(x, "%s", sql);

    cr_assert_str_eq(v, want, "%s: got %s, want %s", sql, v, want);
    free(v);
}


/* The event's jobs, for messages (malloc'd). */
static char *
jobs_of(struct h_ctx *x, long event)
{
    return value(x, "SELECT string_agg(format('job %%s %%s %%s attempts=%%s error=%%s"
                 " output=%%s', id, route, status, attempts, last_error, output), '; ')"
                 " FROM hookd.jobs WHERE event_id = %ld", event);
}


/* Waits until every job of the event is done; asserts it has exactly one. */
static void
wait_event_done(struct h_ctx *x, long event)
{
    long left = h_wait_long(x, 0, CH_WAIT_MS, "SELECT count(*) FROM hookd.jobs"
                            " WHERE event_id = %ld AND status <> 'done'", event);
    char *jobs = jobs_of(x, event);

    cr_assert_eq(left, 0, "event %ld: jobs not done within %d ms: %s", event, CH_WAIT_MS,
                 jobs);
    cr_assert_eq(h_sql_long(x->hx_db.hd_conninfo, "SELECT count(*) FROM hookd.jobs"
                            " WHERE event_id = %ld", event), 1,
                 "event %ld: want one job, got: %s", event, jobs);
    free(jobs);
}


static long
contacts(struct h_ctx *x)
{
    return h_sql_long(x->hx_db.hd_conninfo, "SELECT count(*) FROM crm.contacts");
}


static long
jobs_total(struct h_ctx *x)
{
    return h_sql_long(x->hx_db.hd_conninfo, "SELECT count(*) FROM hookd.jobs");
}


/* Every contact, for messages (malloc'd). */
static char *
contacts_dump(struct h_ctx *x)
{
    return value(x, "SELECT string_agg(format('[%%s %%s %%s %%s %%s %%s]', id, email_norm,"
                 " phone_norm, name, custom_fields, event_ids), ' ' ORDER BY id)"
                 " FROM crm.contacts");
}


/* ---- notify commands ------------------------------------------------------ */

/*
 * Writes an executable shell script at path that appends one line to out,
 * "<its stdin>\t<HOOKD_* variables, sorted, space-separated>", and exits
 * with code. Written through rename, so a running daemon never sees half a
 * script (nor gets ETXTBSY).
 */
static void
write_notify(const char *path, const char *out, int code)
{
    char *text = h_strdupf("#!/bin/sh\n"
                           "# hookd test notify command\n"
                           "body=$(cat)\n"
                           "vars=$(env | grep '^HOOKD_' | sort | tr '\\n' ' ')\n"
                           "printf '%%s\\t%%s\\n' \"$body\" \"$vars\" >> '%s'\n"
                           "exit %d\n", out, code);

    h_replace_file(path, text, 0755);
    free(text);
}


/* The handoff route with notify_command = [ script ] and quick retries (malloc'd). */
static char *
handoff_routes(const char *script)
{
    return h_strdupf("  { name = \"handoff-team\";\n"
                     "    events = [ \"CONVERSATION_ESCALATED\" ];\n"
                     "    handler = \"handoff\";\n"
                     "    options = { notify_command = [ \"%s\" ]; notify_timeout = 10000; };\n"
                     "    retry = { attempts = 100; first_delay = 100; factor = 1.0;"
                     " max_delay = 200; };\n"
                     "  }", script);
}


struct notices {
    int n;
    char *lines[64];
};


/* Reads the lines a notify script appended to path (none when missing). */
static void
read_notices(const char *path, struct notices *ns)
{
    char *text = h_read_file(path, NULL);
    char *save = NULL;

    memset(ns, 0, sizeof(*ns));
    if (text == NULL) {
        return;
    }
    for (char *line = strtok_r(text, "\n", &save); line != NULL && ns->n < 64;
         line = strtok_r(NULL, "\n", &save))
    {
        ns->lines[ns->n++] = strdup(line);
    }
    free(text);
}


static void
free_notices(struct notices *ns)
{
    for (int i = 0; i < ns->n; i++) {
        free(ns->lines[i]);
    }
    ns->n = 0;
}


static int
count_notices(const char *path)
{
    struct notices ns;
    int n;

    read_notices(path, &ns);
    n = ns.n;
    free_notices(&ns);
    return n;
}


/* Polls (at most CH_WAIT_MS) until path has want lines; returns the count. */
static int
wait_notices(const char *path, int want)
{
    long long deadline = h_now_ms() + CH_WAIT_MS;
    int n;

    while ((n = count_notices(path)) < want && h_now_ms() < deadline) {
        h_sleep_ms(50);
    }
    return n;
}


/* The ticket JSON of a notice line (json_object_put it). */
static json_object *
notice_json(const char *line)
{
    const char *tab = strchr(line, '\t');
    char *text = strndup(line, tab ? (size_t)(tab - line) : strlen(line));
    json_object *o = json_tokener_parse(text);

    cr_assert_not_null(o, "notice is not JSON: %s", text);
    cr_assert(json_object_is_type(o, json_type_object), "notice is not an object: %s", text);
    free(text);
    return o;
}


/* The HOOKD_* variables part of a notice line. */
static const char *
notice_vars(const char *line)
{
    const char *tab = strchr(line, '\t');

    cr_assert_not_null(tab, "notice without variables: %s", line);
    return tab + 1;
}


/* The string member key of o, "(absent)" or "(null)" when it is not a string. */
static const char *
jstr(json_object *o, const char *key)
{
    json_object *v;

    if (o == NULL || !json_object_object_get_ex(o, key, &v)) {
        return "(absent)";
    }
    if (v == NULL) {
        return "(null)";
    }
    return json_object_get_string(v);
}


/* Asserts that vars holds the word "name=want". */
static void
expect_var(const char *vars, const char *name, const char *want)
{
    char *word = h_strdupf("%s=%s ", name, want);

    cr_assert_not_null(strstr(vars, word), "want %s in the notify environment: %s", word,
                       vars);
    free(word);
}


/* ---- running hookd commands ----------------------------------------------- */

struct cli {
    int code;
    char *out;
    char *err;
};


/*
 * Runs $HOOKD_BIN with args (NULL-ended, after argv[0]) with stdout and
 * stderr to files of x's dir, bounded by CH_CLI_MS; asserts no sanitizer
 * report.
 */
static void
run_cli(struct h_ctx *x, struct cli *r, const char *const args[])
{
    char *out_path = h_strdupf("%s/cli.out", x->hx_dir);
    char *err_path = h_strdupf("%s/cli.err", x->hx_dir);
    const char *argv[CH_MAX_ARGS + 2];
    long long deadline = h_now_ms() + CH_CLI_MS;
    int status = 0;
    int n = 0;
    pid_t pid;
    pid_t got;

    argv[n++] = "hookd";
    while (args[n - 1] != NULL && n <= CH_MAX_ARGS) {
        argv[n] = args[n - 1];
        n++;
    }
    argv[n] = NULL;
    pid = fork();
    cr_assert(pid >= 0, "fork: %s", strerror(errno));
    if (pid == 0) {
        int o = open(out_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        int e = open(err_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);

        if (o < 0 || e < 0 || dup2(o, STDOUT_FILENO) < 0 || dup2(e, STDERR_FILENO) < 0) {
            _exit(126);
        }
        execv(h_env("HOOKD_BIN"), (char *const *)argv);
        _exit(127);
    }
    while ((got = waitpid(pid, &status, WNOHANG)) == 0 && h_now_ms() < deadline) {
        h_sleep_ms(20);
    }
    if (got != pid) {
        (void)kill(pid, SIGKILL);
        (void)waitpid(pid, &status, 0);
        cr_assert_fail("hookd %s did not finish within %d ms", args[0], CH_CLI_MS);
    }
    r->code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    r->out = h_read_file(out_path, NULL);
    r->err = h_read_file(err_path, NULL);
    cr_assert(r->out != NULL && r->err != NULL);
    cr_assert(strstr(r->err, "Sanitizer") == NULL && strstr(r->err, "runtime error:") == NULL,
              "sanitizer report from hookd %s: %s", args[0], r->err);
    free(out_path);
    free(err_path);
}


static void
free_cli(struct cli *r)
{
    free(r->out);
    free(r->err);
    r->out = NULL;
    r->err = NULL;
}


/* run_cli, asserting exit 0; returns the parsed stdout of a --json command. */
static json_object *
run_cli_json(struct h_ctx *x, const char *const args[])
{
    struct cli r;
    json_object *o;

    run_cli(x, &r, args);
    cr_assert_eq(r.code, 0, "hookd %s exited %d: %s", args[0], r.code, r.err);
    o = json_tokener_parse(r.out);
    cr_assert_not_null(o, "hookd %s --json printed no JSON: %s", args[0], r.out);
    cr_assert(json_object_is_type(o, json_type_array), "not a JSON array: %s", r.out);
    free_cli(&r);
    return o;
}


/* The member key of every element of arr as "a,b,c" in array order (malloc'd). */
static char *
json_column(json_object *arr, const char *key)
{
    char *text = strdup("");

    for (size_t i = 0; i < json_object_array_length(arr); i++) {
        const char *v = jstr(json_object_array_get_idx(arr, i), key);
        char *next = h_strdupf("%s%s%s", text, i > 0 ? "," : "", v);

        free(text);
        text = next;
    }
    return text;
}


/* ======================================================================== */
/* crm                                                                      */
/* ======================================================================== */

Test(crm_handoff, new_lead_makes_one_contact_that_later_leads_and_escalations_update)
{
    struct h_ctx x;
    char *lead = h_sample("new_lead.json", NULL);
    char *esc = h_sample("conversation_escalated.json", NULL);
    char *more;
    char *sql;
    long lead_id, esc_id, more_id;

    start_crm(&x, "crm_basic", 2);

    lead_id = post_event(&x, lead, "stored");
    wait_event_done(&x, lead_id);
    cr_assert_eq(contacts(&x), 1, "contacts: %s", contacts_dump(&x));
    expect_value(&x, "jordan.lee@example.org", "SELECT email_norm FROM crm.contacts");
    expect_value(&x, "+15550100", "SELECT phone_norm FROM crm.contacts");
    expect_value(&x, "Jordan Lee", "SELECT name FROM crm.contacts");
    expect_value(&x, "t", "SELECT custom_fields = '{\"company\":\"Lee & Daughters Bakery\","
                 "\"plan\":\"Growth\"}'::jsonb FROM crm.contacts");
    sql = h_strdupf("SELECT event_ids::text FROM crm.contacts");
    more = h_strdupf("{%ld}", lead_id);
    expect_value(&x, more, sql);
    free(more);

    /* The escalation of the same person (its leadInfo) updates that contact. */
    esc_id = post_event(&x, esc, "stored");
    wait_event_done(&x, esc_id);
    cr_assert_eq(contacts(&x), 1, "an escalation made a second contact: %s",
                 contacts_dump(&x));
    more = h_strdupf("{%ld,%ld}", lead_id, esc_id);
    expect_value(&x, more, sql);
    free(more);
    expect_value(&x, "+15550100", "SELECT phone_norm FROM crm.contacts");

    /* A newer lead merges its custom fields: new keys added, newer values win. */
    more = lead_body(CH_THREAD, "2026-11-30T09:20:00.000Z",
                     "{\"name\":\"Jordan Lee\",\"email\":\"jordan.lee@example.org\","
                     "\"customFields\":{\"plan\":\"Scale\",\"seats\":\"12\"}}");
    more_id = post_event(&x, more, "stored");
    free(more);
    wait_event_done(&x, more_id);
    cr_assert_eq(contacts(&x), 1, "contacts: %s", contacts_dump(&x));
    expect_value(&x, "t", "SELECT custom_fields = '{\"company\":\"Lee & Daughters Bakery\","
                 "\"plan\":\"Scale\",\"seats\":\"12\"}'::jsonb FROM crm.contacts");
    expect_value(&x, "+15550100", "SELECT phone_norm FROM crm.contacts");

    /* Redelivering the first lead: a duplicate, no job. */
    cr_assert_eq(jobs_total(&x), 3);
    (void)post_event(&x, lead, "duplicate");
    cr_assert_eq(jobs_total(&x), 3, "a redelivered lead got a job");
    cr_assert_eq(h_events(&x), 3);

    /* Replaying the lead's job runs it again and changes nothing. */
    {
        char id[24];
        const char *args[] = {"replay", "--config", x.hx_conf, "--event", id, NULL};
        struct cli r;

        snprintf(id, sizeof(id), "%ld", lead_id);
        run_cli(&x, &r, args);
        cr_assert_eq(r.code, 0, "replay exited %d: %s", r.code, r.err);
        free_cli(&r);
    }
    cr_assert_eq(h_wait_long(&x, 1, CH_WAIT_MS, "SELECT count(*) FROM hookd.jobs"
                             " WHERE event_id = %ld AND status = 'done'"
                             " AND replayed_at IS NOT NULL AND finished_at IS NOT NULL",
                             lead_id), 1, "the replayed job did not finish: %s",
                 jobs_of(&x, lead_id));
    cr_assert_eq(contacts(&x), 1, "contacts after the replay: %s", contacts_dump(&x));
    more = h_strdupf("{%ld,%ld,%ld}", lead_id, esc_id, more_id);
    expect_value(&x, more, sql);
    free(more);
    expect_value(&x, "t", "SELECT custom_fields = '{\"company\":\"Lee & Daughters Bakery\","
                 "\"plan\":\"Scale\",\"seats\":\"12\"}'::jsonb FROM crm.contacts");
    free(sql);
    free(lead);
    free(esc);
    h_ctx_finish(&x, NULL, NULL);
}


Test(crm_handoff, emails_differing_in_case_and_spaces_and_phones_in_format_are_one_contact)
{
    struct h_ctx x;
    char *body;
    long a, b, c, d, e;
    char *out;

    start_crm(&x, "crm_norm", 2);

    body = lead_body("norm-1", "2026-11-30T09:00:00.000Z",
                     "{\"name\":\"Jordan Lee\",\"email\":\"  Jordan.Lee@Example.ORG \"}");
    a = post_event(&x, body, "stored");
    free(body);
    body = lead_body("norm-2", "2026-11-30T09:01:00.000Z",
                     "{\"name\":\"Jordan Lee\",\"email\":\"jordan.lee@example.org\"}");
    b = post_event(&x, body, "stored");
    free(body);
    wait_event_done(&x, a);
    wait_event_done(&x, b);
    cr_assert_eq(contacts(&x), 1, "two spellings of one e-mail: %s", contacts_dump(&x));
    expect_value(&x, "jordan.lee@example.org", "SELECT email_norm FROM crm.contacts");

    body = lead_body("norm-3", "2026-11-30T09:02:00.000Z",
                     "{\"name\":\"Sam Phone\",\"phone\":\"+1 (555) 010-0199\"}");
    c = post_event(&x, body, "stored");
    free(body);
    wait_event_done(&x, c);
    body = lead_body("norm-4", "2026-11-30T09:03:00.000Z",
                     "{\"name\":\"Sam Phone\",\"phone\":\"+1 555 0100199\"}");
    d = post_event(&x, body, "stored");
    free(body);
    wait_event_done(&x, d);
    cr_assert_eq(contacts(&x), 2, "two formats of one phone: %s", contacts_dump(&x));
    cr_assert_eq(h_sql_long(x.hx_db.hd_conninfo, "SELECT count(*) FROM crm.contacts"
                            " WHERE phone_norm = '+15550100199' AND email_norm IS NULL"
                            " AND cardinality(event_ids) = 2"), 1,
                 "contacts: %s", contacts_dump(&x));

    body = lead_body("norm-5", "2026-11-30T09:04:00.000Z", "{\"name\":\"Nobody Here\"}");
    e = post_event(&x, body, "stored");
    free(body);
    wait_event_done(&x, e);
    out = value(&x, "SELECT output FROM hookd.jobs WHERE event_id = %ld", e);
    cr_assert_str_eq(out, "no contact details");
    free(out);
    cr_assert_eq(contacts(&x), 2, "a lead without details made a contact: %s",
                 contacts_dump(&x));
    h_ctx_finish(&x, NULL, NULL);
}


/* C20 (a): the newer lead by createdAt wins though it arrived first. */
Test(crm_handoff, lead_created_earlier_but_delivered_later_does_not_overwrite_the_newer)
{
    struct h_ctx x;
    char *newer = lead_body("c20-thread-t", "2026-11-30T09:16:00Z",
                            "{\"name\":\"Casey Newer\",\"email\":\"casey@example.net\","
                            "\"phone\":\"+1 555 0199\",\"customFields\":{\"plan\":\"Scale\"}}");
    char *older = lead_body("c20-thread-t", "2026-11-30T09:14:30Z",
                            "{\"name\":\"Casey Older\",\"email\":\"casey@example.net\","
                            "\"phone\":\"+1 555 0100\",\"customFields\":{\"plan\":\"Growth\","
                            "\"company\":\"Older Co\"}}");
    long n_id, o_id;
    char *want;

    start_crm(&x, "crm_c20", 4);
    n_id = post_event(&x, newer, "stored");
    o_id = post_event(&x, older, "stored");
    wait_event_done(&x, n_id);
    wait_event_done(&x, o_id);

    cr_assert_eq(h_events(&x), 2, "both leads are stored");
    cr_assert_eq(contacts(&x), 1, "contacts: %s", contacts_dump(&x));
    expect_value(&x, "+1 555 0199", "SELECT phone FROM crm.contacts");
    expect_value(&x, "+15550199", "SELECT phone_norm FROM crm.contacts");
    expect_value(&x, "Casey Newer", "SELECT name FROM crm.contacts");
    expect_value(&x, "t", "SELECT custom_fields = '{\"plan\":\"Scale\","
                 "\"company\":\"Older Co\"}'::jsonb FROM crm.contacts");
    expect_value(&x, "t", "SELECT last_lead_at = '2026-11-30T09:16:00Z'"
                 " AND first_seen = '2026-11-30T09:14:30Z' FROM crm.contacts");
    want = h_strdupf("{%ld,%ld}", n_id, o_id);
    expect_value(&x, want, "SELECT ARRAY(SELECT unnest(event_ids) ORDER BY 1)::text"
                 " FROM crm.contacts");
    free(want);
    free(newer);
    free(older);
    h_ctx_finish(&x, NULL, NULL);
}


#define CH_PEOPLE 5
#define CH_LEADS_EACH 4

Test(crm_handoff, shuffled_concurrent_and_duplicate_leads_make_one_contact_per_person)
{
    /* Spellings of visitor<p>@example.com: before the number, the number, after it. */
    static const char *const spellings[CH_LEADS_EACH][2] = {
        {"visitor", "@example.com"}, {"  Visitor", "@Example.COM "},
        {"VISITOR", "@EXAMPLE.COM"}, {" visitor", "@EXAMPLE.com"}
    };
    enum { N = CH_PEOPLE * CH_LEADS_EACH };
    struct h_ctx x;
    char *bodies[N];
    int order[2 * N];
    long matched;

    start_crm(&x, "crm_concurrent", 4);
    for (int p = 0; p < CH_PEOPLE; p++) {
        for (int k = 0; k < CH_LEADS_EACH; k++) {
            char thread[32], created[32], lead[256];
            char *email = h_strdupf("%s%d%s", spellings[k][0], p + 1, spellings[k][1]);
            int i = p * CH_LEADS_EACH + k;
            char *b;

            snprintf(thread, sizeof(thread), "conc-%d-%d", p + 1, k);
            snprintf(created, sizeof(created), "2026-11-30T09:%02d:00.000Z", 10 + k);
            snprintf(lead, sizeof(lead), "{\"name\":\"Visitor %d\",\"email\":\"%s\","
                     "\"customFields\":{\"k%d\":\"v\"}}", p + 1, email, k);
            b = lead_body(thread, created, lead);
            /* data.visitor tells the test whose lead it is. */
            bodies[i] = h_strdupf("%.*s,\"visitor\":\"visitor%d\"}}", (int)strlen(b) - 2, b,
                                  p + 1);
            free(b);
            free(email);
            order[2 * i] = i;
            order[2 * i + 1] = i;
        }
    }
    shuffle(order, 2 * N);
    post_concurrently(&x, bodies, order, 2 * N, 4);

    cr_assert_eq(h_events(&x), N, "each lead is stored once");
    cr_assert_eq(jobs_total(&x), N, "each lead has one job");
    cr_assert_eq(h_wait_long(&x, N, CH_WAIT_MS, "SELECT count(*) FROM hookd.jobs"
                             " WHERE status = 'done'"), N, "jobs: %s",
                 value(&x, "SELECT string_agg(status || '/' || coalesce(last_error, ''), ', ')"
                       " FROM hookd.jobs WHERE status <> 'done'"));
    cr_assert_eq(contacts(&x), CH_PEOPLE, "contacts: %s", contacts_dump(&x));
    matched = h_sql_long(x.hx_db.hd_conninfo,
                         "SELECT count(*) FROM (SELECT payload #>> '{data,visitor}' AS v,"
                         " array_agg(id ORDER BY id) AS ids FROM hookd.events GROUP BY 1) w"
                         " JOIN crm.contacts c ON c.email_norm = w.v || '@example.com'"
                         " WHERE w.ids = ARRAY(SELECT unnest(c.event_ids) ORDER BY 1)"
                         " AND c.custom_fields = '{\"k0\":\"v\",\"k1\":\"v\",\"k2\":\"v\","
                         "\"k3\":\"v\"}'::jsonb");
    cr_assert_eq(matched, CH_PEOPLE, "contacts whose event ids are not their leads': %s",
                 contacts_dump(&x));
    cr_log_info("crm attempts beyond the first: %ld", h_sql_long(x.hx_db.hd_conninfo,
                "SELECT coalesce(sum(attempts - 1), 0) FROM hookd.jobs"));
    for (int i = 0; i < N; i++) {
        free(bodies[i]);
    }
    h_ctx_finish(&x, NULL, NULL);
}


/* Sessions of the test database waiting for an advisory lock. */
#define CH_LOCK_WAITERS                                                                 \
    "FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"                          \
    " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"

/*
 * The crm's promise that two workers never create the same person twice, for
 * phone-only leads. The test holds the advisory lock the crm takes for the
 * number ("hookd-crm:<phone>") while leads for it arrive, so that several
 * workers' upserts are under way at once when it lets go. A worker that
 * checks the crm schema waits behind an upsert that waits for the lock, so
 * while only one worker waits the test cancels its statement (the crm
 * retries) to let the others through to the lock. A crm that no longer
 * takes this lock just races.
 */
Test(crm_handoff, phone_only_leads_run_by_concurrent_workers_make_one_contact)
{
    static const char *const phones[] = {
        "+44 20 7946 0018", "+44 (20) 7946-0018", "+442079460018", " +44 20 79460018 ",
        "+44-20-7946-0018", "+44 207 946 0018", "+44.20.7946.0018", "+44 2079 460018"
    };
    enum { N = sizeof(phones) / sizeof(phones[0]) };
    struct h_ctx x;
    char *bodies[N];
    int order[N];
    char *first;
    PGconn *holder;
    PGresult *res;
    long waiting;

    start_crm(&x, "crm_phone_race", 4);
    /* The crm schema exists before the racing leads. */
    first = lead_body("phone-race-first", "2026-11-30T09:29:00.000Z",
                      "{\"phone\":\"+44 20 7946 0999\"}");
    wait_event_done(&x, post_event(&x, first, "stored"));
    free(first);

    holder = PQconnectdb(x.hx_db.hd_conninfo);
    cr_assert_eq(PQstatus(holder), CONNECTION_OK, "%s", PQerrorMessage(holder));
    res = PQexec(holder, "SELECT pg_advisory_lock(hashtext('hookd-crm:+442079460018'))");
    cr_assert_eq(PQresultStatus(res), PGRES_TUPLES_OK, "%s", PQerrorMessage(holder));
    PQclear(res);

    for (int i = 0; i < N; i++) {
        char thread[32], lead[128];

        snprintf(thread, sizeof(thread), "phone-race-%d", i);
        snprintf(lead, sizeof(lead), "{\"name\":\"Alex Phone\",\"phone\":\"%s\"}",
                 phones[i]);
        bodies[i] = lead_body(thread, "2026-11-30T09:30:00.000Z", lead);
        order[i] = i;
    }
    post_concurrently(&x, bodies, order, N, 4);
    for (int i = 0; i < N; i++) {
        free(bodies[i]);
    }
    waiting = h_wait_long(&x, 1, 5000, "SELECT (count(*) >= 1)::int " CH_LOCK_WAITERS);
    if (waiting == 1 && h_sql_long(x.hx_db.hd_conninfo, "SELECT count(*) "
                                   CH_LOCK_WAITERS) == 1)
    {
        cr_assert(h_sql_try(x.hx_db.hd_conninfo, "SELECT pg_cancel_backend(pid) "
                            CH_LOCK_WAITERS));
        (void)h_wait_long(&x, 3, 5000, "SELECT count(*) " CH_LOCK_WAITERS);
    }
    waiting = h_sql_long(x.hx_db.hd_conninfo, "SELECT count(*) " CH_LOCK_WAITERS);
    cr_log_info("%ld workers waited together for the number's lock", waiting);
    PQfinish(holder);

    cr_assert_eq(h_wait_long(&x, 1 + N, CH_WAIT_MS, "SELECT count(*) FROM hookd.jobs"
                             " WHERE status = 'done'"), 1 + N, "not every lead was handled");
    cr_assert_eq(h_sql_long(x.hx_db.hd_conninfo, "SELECT count(*) FROM crm.contacts"
                            " WHERE phone_norm = '+442079460018'"), 1,
                 "one phone number became several contacts (%ld workers were let go"
                 " together): %s", waiting, contacts_dump(&x));
    cr_assert_eq(h_sql_long(x.hx_db.hd_conninfo, "SELECT cardinality(event_ids)"
                            " FROM crm.contacts WHERE phone_norm = '+442079460018'"), N);
    cr_assert_eq(contacts(&x), 2);
    h_ctx_finish(&x, NULL, NULL);
}


/* ======================================================================== */
/* handoff                                                                  */
/* ======================================================================== */

/* Makes x with the handoff route; *script and *notices are paths in x's dir. */
static void
start_handoff(struct h_ctx *x, const char *tag, char **script, char **notices, int code)
{
    char *routes;

    h_ctx_init(x, tag);
    *script = h_strdupf("%s/notify.sh", x->hx_dir);
    *notices = h_strdupf("%s/notices.log", x->hx_dir);
    write_notify(*script, *notices, code);
    routes = handoff_routes(*script);
    start_routes(x, "build/handlers", "handoff.so", 2, routes);
    free(routes);
}


/* The ticket id of the open ticket of thread (asserts there is one). */
static long
ticket_of(struct h_ctx *x, const char *thread)
{
    cr_assert_eq(h_sql_long(x->hx_db.hd_conninfo, "SELECT count(*) FROM hookd.handoff_tickets"
                            " WHERE thread_id = '%s'", thread), 1,
                 "want one ticket for thread %s", thread);
    return h_sql_long(x->hx_db.hd_conninfo, "SELECT id FROM hookd.handoff_tickets"
                      " WHERE thread_id = '%s'", thread);
}


Test(crm_handoff, escalation_opens_one_ticket_per_thread_and_notifies_once_per_escalation)
{
    struct h_ctx x;
    char *script, *path;
    char *esc = h_sample("conversation_escalated.json", NULL);
    char *again, *tmp, *other;
    struct notices ns;
    json_object *t, *contact;
    long e1, e2, e3, ticket, ticket2;
    char id[24];

    start_handoff(&x, "handoff_basic", &script, &path, 0);

    e1 = post_event(&x, esc, "stored");
    wait_event_done(&x, e1);
    ticket = ticket_of(&x, CH_THREAD);
    snprintf(id, sizeof(id), "%ld", ticket);
    expect_value(&x, "open|1|Jordan Lee|jordan.lee@example.org|+1 555 0100|" CH_PROMPT,
                 "SELECT concat_ws('|', status, escalations, contact_name, contact_email,"
                 " contact_phone, last_prompt) FROM hookd.handoff_tickets");
    cr_assert_eq(wait_notices(path, 1), 1);
    read_notices(path, &ns);
    t = notice_json(ns.lines[0]);
    cr_assert_str_eq(jstr(t, "ticket"), id);
    cr_assert_str_eq(jstr(t, "chatbotId"), CH_BOT);
    cr_assert_str_eq(jstr(t, "threadId"), CH_THREAD);
    cr_assert_str_eq(jstr(t, "escalations"), "1");
    cr_assert_str_eq(jstr(t, "prompt"), CH_PROMPT);
    cr_assert(json_object_object_get_ex(t, "contact", &contact) && contact != NULL,
              "no contact in %s", ns.lines[0]);
    cr_assert_str_eq(jstr(contact, "name"), "Jordan Lee");
    cr_assert_str_eq(jstr(contact, "email"), "jordan.lee@example.org");
    cr_assert_str_eq(jstr(contact, "phone"), "+1 555 0100");
    expect_var(notice_vars(ns.lines[0]), "HOOKD_TICKET_ID", id);
    expect_var(notice_vars(ns.lines[0]), "HOOKD_CHATBOT_ID", CH_BOT);
    expect_var(notice_vars(ns.lines[0]), "HOOKD_THREAD_ID", CH_THREAD);
    expect_var(notice_vars(ns.lines[0]), "HOOKD_ESCALATIONS", "1");
    json_object_put(t);
    free_notices(&ns);

    /* A second escalation in the thread adds to the same ticket. */
    tmp = h_replace(esc, CH_PROMPT, "Is anyone there? A person, please.");
    again = h_replace(tmp, "2026-11-30T09:15:10.442Z", "2026-11-30T09:17:45.000Z");
    free(tmp);
    e2 = post_event(&x, again, "stored");
    wait_event_done(&x, e2);
    cr_assert_eq(ticket_of(&x, CH_THREAD), ticket, "a second ticket for the thread");
    expect_value(&x, "2|Is anyone there? A person, please.",
                 "SELECT concat_ws('|', escalations, last_prompt) FROM hookd.handoff_tickets");
    cr_assert_eq(wait_notices(path, 2), 2, "want two notices in all");
    read_notices(path, &ns);
    t = notice_json(ns.lines[1]);
    cr_assert_str_eq(jstr(t, "ticket"), id);
    cr_assert_str_eq(jstr(t, "escalations"), "2");
    expect_var(notice_vars(ns.lines[1]), "HOOKD_ESCALATIONS", "2");
    json_object_put(t);
    free_notices(&ns);
    expect_value(&x, "opened,notified,escalated,notified",
                 "SELECT string_agg(action, ',' ORDER BY id) FROM hookd.handoff_log");

    /* Another thread gets its own ticket. */
    other = h_replace(esc, CH_THREAD, CH_OTHER_THREAD);
    e3 = post_event(&x, other, "stored");
    wait_event_done(&x, e3);
    ticket2 = ticket_of(&x, CH_OTHER_THREAD);
    cr_assert_neq(ticket2, ticket);
    cr_assert_eq(h_sql_long(x.hx_db.hd_conninfo, "SELECT count(*) FROM hookd.handoff_tickets"),
                 2);
    /* Notices are written before their job is done, and every job is done. */
    cr_assert_eq(count_notices(path), 3, "want one notice per escalation");
    cr_assert_eq(h_sql_long(x.hx_db.hd_conninfo, "SELECT count(*) FROM hookd.jobs"
                            " WHERE status <> 'done'"), 0);
    read_notices(path, &ns);
    t = notice_json(ns.lines[2]);
    cr_assert_str_eq(jstr(t, "threadId"), CH_OTHER_THREAD);
    cr_assert_str_eq(jstr(t, "escalations"), "1");
    json_object_put(t);
    free_notices(&ns);

    free(esc);
    free(again);
    free(other);
    free(script);
    free(path);
    h_ctx_finish(&x, NULL, NULL);
}


Test(crm_handoff, anonymous_escalation_opens_a_ticket_without_contact_details)
{
    struct h_ctx x;
    char *script, *path;
    char *esc = h_sample("conversation_escalated_anonymous.json", NULL);
    struct notices ns;
    json_object *t, *contact;
    long e;

    start_handoff(&x, "handoff_anon", &script, &path, 0);
    e = post_event(&x, esc, "stored");
    wait_event_done(&x, e);
    (void)ticket_of(&x, CH_ANON_THREAD);
    expect_value(&x, "open|1|t|t|t|Talk to a person",
                 "SELECT concat_ws('|', status, escalations, contact_name IS NULL,"
                 " contact_email IS NULL, contact_phone IS NULL, last_prompt)"
                 " FROM hookd.handoff_tickets");
    cr_assert_eq(wait_notices(path, 1), 1);
    read_notices(path, &ns);
    t = notice_json(ns.lines[0]);
    cr_assert(json_object_object_get_ex(t, "contact", &contact),
              "no contact member in %s", ns.lines[0]);
    cr_assert_null(contact, "contact is not null: %s", ns.lines[0]);
    cr_assert_str_eq(jstr(t, "threadId"), CH_ANON_THREAD);
    cr_assert_str_eq(jstr(t, "prompt"), "Talk to a person");
    expect_var(notice_vars(ns.lines[0]), "HOOKD_THREAD_ID", CH_ANON_THREAD);
    json_object_put(t);
    free_notices(&ns);
    free(esc);
    free(script);
    free(path);
    h_ctx_finish(&x, NULL, NULL);
}


Test(crm_handoff, failing_notify_command_is_retried_without_rewriting_the_ticket)
{
    struct h_ctx x;
    char *script, *path, *fails;
    char *esc = h_sample("conversation_escalated.json", NULL);
    char *want;
    struct notices ns;
    json_object *t;
    long e, ticket;

    h_ctx_init(&x, "handoff_retry");
    script = h_strdupf("%s/notify.sh", x.hx_dir);
    path = h_strdupf("%s/notices.log", x.hx_dir);
    fails = h_strdupf("%s/fails.log", x.hx_dir);
    write_notify(script, fails, 1);
    want = handoff_routes(script);
    start_routes(&x, "build/handlers", "handoff.so", 2, want);
    free(want);

    e = post_event(&x, esc, "stored");
    cr_assert_eq(h_wait_long(&x, 1, CH_WAIT_MS, "SELECT count(*) FROM hookd.jobs"
                             " WHERE event_id = %ld AND attempts >= 3", e), 1,
                 "the failing notice was not retried: %s", jobs_of(&x, e));
    cr_assert_geq(count_notices(fails), 2, "the notify command ran fewer than twice");
    expect_value(&x, "pending|running", "SELECT CASE WHEN status IN ('pending', 'running')"
                 " THEN 'pending|running' ELSE status END FROM hookd.jobs");
    ticket = ticket_of(&x, CH_THREAD);
    want = h_strdupf("1|{%ld}|{}", e);
    expect_value(&x, want, "SELECT concat_ws('|', escalations, event_ids, notified_ids)"
                 " FROM hookd.handoff_tickets");
    free(want);
    expect_value(&x, "opened", "SELECT string_agg(action, ',' ORDER BY id)"
                 " FROM hookd.handoff_log");
    want = value(&x, "SELECT last_error FROM hookd.jobs WHERE event_id = %ld", e);
    cr_assert_not_null(strstr(want, "exited with status 1"), "last_error: %s", want);
    free(want);

    /* Fixed: the next retry succeeds and the notice is recorded. */
    write_notify(script, path, 0);
    wait_event_done(&x, e);
    cr_assert_eq(wait_notices(path, 1), 1);
    read_notices(path, &ns);
    t = notice_json(ns.lines[0]);
    cr_assert_str_eq(jstr(t, "escalations"), "1");
    json_object_put(t);
    free_notices(&ns);
    cr_assert_eq(ticket_of(&x, CH_THREAD), ticket);
    want = h_strdupf("1|{%ld}|{%ld}", e, e);
    expect_value(&x, want, "SELECT concat_ws('|', escalations, event_ids, notified_ids)"
                 " FROM hookd.handoff_tickets");
    free(want);
    expect_value(&x, "opened,notified", "SELECT string_agg(action, ',' ORDER BY id)"
                 " FROM hookd.handoff_log");
    expect_value(&x, "t", "SELECT attempts >= 4 AND last_error IS NULL FROM hookd.jobs");
    free(esc);
    free(script);
    free(path);
    free(fails);
    h_ctx_finish(&x, NULL, NULL);
}


Test(crm_handoff, redelivered_escalation_makes_no_job_and_no_second_notice)
{
    struct h_ctx x;
    char *script, *path;
    char *esc = h_sample("conversation_escalated.json", NULL);
    char *other = h_replace(esc, CH_THREAD, CH_OTHER_THREAD);
    long e, e2;

    start_handoff(&x, "handoff_redeliver", &script, &path, 0);
    e = post_event(&x, esc, "stored");
    wait_event_done(&x, e);
    cr_assert_eq(wait_notices(path, 1), 1);

    (void)post_event(&x, esc, "duplicate");
    cr_assert_eq(jobs_total(&x), 1, "the redelivery got a job");
    /* A later escalation elsewhere goes through; the redelivery still added nothing. */
    e2 = post_event(&x, other, "stored");
    wait_event_done(&x, e2);
    cr_assert_eq(wait_notices(path, 2), 2);
    cr_assert_eq(jobs_total(&x), 2);
    cr_assert_eq(h_sql_long(x.hx_db.hd_conninfo, "SELECT escalations FROM"
                            " hookd.handoff_tickets WHERE thread_id = '%s'", CH_THREAD), 1);
    cr_assert_eq(h_sql_long(x.hx_db.hd_conninfo, "SELECT count(*) FROM hookd.handoff_log"
                            " WHERE action = 'notified'"), 2);
    free(esc);
    free(other);
    free(script);
    free(path);
    h_ctx_finish(&x, NULL, NULL);
}


/* check-config on a handoff route with these options: exit 2 naming route and reason. */
static void
expect_refused_options(struct h_ctx *x, const char *dir, const char *options,
                       const char *reason)
{
    struct h_config cfg = x->hx_cfg;
    char *routes = h_strdupf("  { name = \"handoff-bad\"; handler = \"handoff\";\n"
                             "    options = { %s };\n  }", options);
    char *top = dispatch_text(dir, 1, routes);
    const char *args[] = {"check-config", "--config", x->hx_conf, NULL};
    struct cli r;

    cfg.hc_top_extra = top;
    h_config_write(x->hx_conf, &cfg);
    run_cli(x, &r, args);
    cr_assert_eq(r.code, 2, "options { %s }: exit %d (want 2), stderr: %s", options, r.code,
                 r.err);
    cr_assert_not_null(strstr(r.err, x->hx_conf), "the file is not named: %s", r.err);
    cr_assert(strstr(r.err, "handoff-bad") != NULL || strstr(r.err, "routes[0]") != NULL,
              "the route is not named: %s", r.err);
    cr_assert_not_null(strstr(r.err, reason), "want \"%s\" in: %s", reason, r.err);
    cr_assert_eq(strchr(r.err, '\n'), r.err + strlen(r.err) - 1, "not one line: %s", r.err);
    free_cli(&r);
    free(top);
    free(routes);
}


Test(crm_handoff, bad_handoff_options_fail_check_config_naming_route_and_reason)
{
    struct h_ctx x;
    char *dir = build_dir("build/handlers", "handoff.so");
    char *plain, *opt, *routes, *top;
    const char *args[] = {"check-config", "--config", NULL, NULL};
    struct cli r;

    h_ctx_init(&x, "handoff_options");
    plain = h_strdupf("%s/not-executable.sh", x.hx_dir);
    h_write_file(plain, "#!/bin/sh\nexit 0\n", 17, 0644);

    expect_refused_options(&x, dir, "notify_command = [ \"bin/page-support\" ];",
                           "not an executable absolute path");
    opt = h_strdupf("notify_command = [ \"%s\" ];", plain);
    expect_refused_options(&x, dir, opt, "not an executable absolute path");
    free(opt);
    expect_refused_options(&x, dir, "notify_comand = [ \"/bin/true\" ];",
                           "unrecognized option \"notify_comand\"");
    expect_refused_options(&x, dir, "notify_timeout = 5;",
                           "notify_timeout must be 100 to 600000 ms");

    /* The same route with good options passes. */
    routes = h_strdupf("  { name = \"handoff-good\"; handler = \"handoff\";\n"
                       "    options = { notify_command = [ \"/bin/true\" ]; };\n  }");
    top = dispatch_text(dir, 1, routes);
    x.hx_cfg.hc_top_extra = top;
    h_config_write(x.hx_conf, &x.hx_cfg);
    args[2] = x.hx_conf;
    run_cli(&x, &r, args);
    cr_assert_eq(r.code, 0, "good options refused: %s", r.err);
    cr_assert_not_null(strstr(r.out, "config OK"));
    free_cli(&r);
    free(top);
    free(routes);
    free(plain);
    free(dir);
    h_db_drop(&x.hx_db);
}


/* ======================================================================== */
/* hookd jobs / replay / events                                             */
/* ======================================================================== */

static const char cli_routes[] =
    "  { name = \"ok\"; handler = \"counter\"; },\n"
    "  { name = \"bad\"; handler = \"counter\"; options = { outcome = \"fail\"; }; }";


/* A NEW_MESSAGE of thread, distinct by n (malloc'd). */
static char *
message_body(const char *thread, int n)
{
    return h_strdupf("{\"event\":\"NEW_MESSAGE\",\"data\":{\"chatbotId\":\"%s\","
                     "\"threadId\":\"%s\",\"messageId\":\"66%016d\","
                     "\"createdAt\":\"2026-11-30T09:14:02.118Z\"}}", CH_BOT, thread, n);
}


/* Counter runs of event on route (a plain name, no quotes). */
static long
runs_of(struct h_ctx *x, long event, const char *route)
{
    return h_sql_long(x->hx_db.hd_conninfo, "SELECT count(*) FROM public.counter_runs"
                      " WHERE event_id = %ld AND route = '%s'", event, route);
}


/* Waits until no job is pending or running; asserts it. */
static void
wait_queue_idle(struct h_ctx *x)
{
    cr_assert_eq(h_wait_long(x, 0, CH_WAIT_MS, "SELECT count(*) FROM hookd.jobs"
                             " WHERE status IN ('pending', 'running')"), 0,
                 "the queue did not settle");
}


/* Waits until the counter has want runs of event on route, then for an idle queue. */
static void
wait_runs(struct h_ctx *x, long event, const char *route, long want)
{
    long long deadline = h_now_ms() + CH_WAIT_MS;
    long n;

    while ((n = runs_of(x, event, route)) < want && h_now_ms() < deadline) {
        h_sleep_ms(50);
    }
    cr_assert_eq(n, want, "event %ld route %s: %ld runs, want %ld", event, route, n, want);
    wait_queue_idle(x);
}


/* Runs a command that must exit 2 with a message and change nothing. */
static void
expect_usage_error(struct h_ctx *x, const char *const args[])
{
    struct cli r;
    long replayed = h_sql_long(x->hx_db.hd_conninfo,
                               "SELECT count(*) FROM hookd.jobs WHERE replayed_at IS NOT NULL");

    run_cli(x, &r, args);
    cr_assert_eq(r.code, 2, "hookd %s %s %s %s %s: exit %d (want 2): %s", args[0],
                 args[1] ? args[1] : "", args[1] && args[2] ? args[2] : "",
                 args[1] && args[2] && args[3] ? args[3] : "",
                 args[1] && args[2] && args[3] && args[4] ? args[4] : "", r.code, r.err);
    cr_assert(r.err[0] != '\0', "exit 2 without a message");
    cr_assert_eq(h_sql_long(x->hx_db.hd_conninfo, "SELECT count(*) FROM hookd.jobs"
                            " WHERE replayed_at IS NOT NULL"), replayed,
                 "a refused command requeued jobs");
    free_cli(&r);
}


/* Sets up the counter routes with events e[0..2] in thread "cli-a", e[3] in "cli-b". */
static void
start_cli(struct h_ctx *x, const char *tag, long e[4])
{
    h_ctx_init(x, tag);
    cr_assert(h_sql_try(x->hx_db.hd_conninfo, "%s", counter_ddl));
    start_routes(x, "build/tests/plugins", "counter.so", 2, cli_routes);
    for (int i = 0; i < 4; i++) {
        char *b = message_body(i < 3 ? "cli-a" : "cli-b", i);

        e[i] = post_event(x, b, "stored");
        free(b);
    }
    cr_assert_eq(h_wait_long(x, 8, CH_WAIT_MS, "SELECT count(*) FROM hookd.jobs"
                             " WHERE status IN ('done', 'dead')"), 8, "jobs did not finish");
    cr_assert_eq(h_sql_long(x->hx_db.hd_conninfo, "SELECT count(*) FROM hookd.jobs WHERE"
                            " (route = 'ok' AND status = 'done')"
                            " OR (route = 'bad' AND status = 'dead')"), 8);
}


Test(crm_handoff, jobs_command_counts_per_route_and_lists_exactly_the_dead_jobs)
{
    static const char *const header[] = {"route", "pending", "running", "done", "dead"};
    struct h_ctx x;
    long e[4];
    struct cli r;
    const char *plain[] = {"jobs", "--config", NULL, NULL};
    const char *dead[] = {"jobs", "--config", NULL, "--status", "dead", "--json", NULL};
    json_object *arr;
    char *ids, *want;
    char *line, *save = NULL;
    int rows = 0;

    start_cli(&x, "cli_jobs", e);
    plain[2] = x.hx_conf;
    dead[2] = x.hx_conf;

    run_cli(&x, &r, plain);
    cr_assert_eq(r.code, 0, "hookd jobs exited %d: %s", r.code, r.err);
    line = strtok_r(r.out, "\n", &save);
    cr_assert_not_null(line, "no output");
    {
        const char *p = line;

        for (size_t i = 0; i < sizeof(header) / sizeof(header[0]); i++) {
            p = strstr(p, header[i]);
            cr_assert_not_null(p, "header without %s: %s", header[i], line);
            p += strlen(header[i]);
        }
    }
    for (line = strtok_r(NULL, "\n", &save); line != NULL; line = strtok_r(NULL, "\n", &save)) {
        char route[64];
        long pending, running, done, dd;

        cr_assert_eq(sscanf(line, "%63s %ld %ld %ld %ld", route, &pending, &running, &done,
                            &dd), 5, "not a route row: %s", line);
        if (strcmp(route, "ok") == 0) {
            cr_assert(pending == 0 && running == 0 && done == 4 && dd == 0, "row: %s", line);
        } else {
            cr_assert_str_eq(route, "bad", "row: %s", line);
            cr_assert(pending == 0 && running == 0 && done == 0 && dd == 4, "row: %s", line);
        }
        rows++;
    }
    cr_assert_eq(rows, 2, "want the rows of routes ok and bad: %s", r.out);
    free_cli(&r);

    /* Make one job of ok dead too, by hand, so the listing is not just "route bad". */
    cr_assert(h_sql_try(x.hx_db.hd_conninfo, "UPDATE hookd.jobs SET status = 'dead'"
                        " WHERE route = 'ok' AND event_id = %ld", e[1]));
    arr = run_cli_json(&x, dead);
    cr_assert_eq(json_object_array_length(arr), 5, "dead jobs: %s",
                 json_object_to_json_string(arr));
    for (size_t i = 0; i < json_object_array_length(arr); i++) {
        cr_assert_str_eq(jstr(json_object_array_get_idx(arr, i), "status"), "dead");
    }
    ids = json_column(arr, "job");
    want = value(&x, "SELECT string_agg(id::text, ',' ORDER BY id DESC) FROM hookd.jobs"
                 " WHERE status = 'dead'");
    cr_assert_str_eq(ids, want, "listed %s, dead are %s", ids, want);
    free(ids);
    free(want);
    json_object_put(arr);
    h_ctx_finish(&x, NULL, NULL);
}


Test(crm_handoff, replay_requeues_dead_jobs_by_job_route_or_event_and_they_run_again)
{
    struct h_ctx x;
    long e[4];
    struct cli r;
    char job[24], event[24];
    char *v;
    json_object *arr;
    const char *by_job[] = {"replay", "--config", NULL, "--job", job, NULL};
    const char *by_route[] = {"replay", "--config", NULL, "--route", "bad", "--dead", "--json",
                              NULL};
    const char *by_event[] = {"replay", "--config", NULL, "--event", event, NULL};

    start_cli(&x, "cli_replay", e);
    by_job[2] = x.hx_conf;
    by_route[2] = x.hx_conf;
    by_event[2] = x.hx_conf;

    /* One dead job: it runs once more (and dies again: outcome fail). */
    v = value(&x, "SELECT id FROM hookd.jobs WHERE route = 'bad' AND event_id = %ld", e[0]);
    snprintf(job, sizeof(job), "%s", v);
    free(v);
    run_cli(&x, &r, by_job);
    cr_assert_eq(r.code, 0, "replay --job exited %d: %s", r.code, r.err);
    cr_assert_not_null(strstr(r.out, job), "replay did not list job %s: %s", job, r.out);
    free_cli(&r);
    wait_runs(&x, e[0], "bad", 2);
    cr_assert_eq(runs_of(&x, e[0], "ok"), 1, "the done job of the event ran again");
    cr_assert_eq(runs_of(&x, e[1], "bad"), 1, "another dead job ran again");
    expect_value(&x, "dead|1|t", "SELECT concat_ws('|', status, attempts,"
                 " replayed_at IS NOT NULL) FROM hookd.jobs WHERE id = (SELECT id FROM"
                 " hookd.jobs WHERE route = 'bad' ORDER BY id LIMIT 1)");

    /* A job that is not dead is not requeued by --job. */
    v = value(&x, "SELECT id FROM hookd.jobs WHERE route = 'ok' AND event_id = %ld", e[0]);
    snprintf(job, sizeof(job), "%s", v);
    free(v);
    run_cli(&x, &r, by_job);
    cr_assert_eq(r.code, 1, "replay --job of a done job exited %d: %s", r.code, r.err);
    cr_assert_not_null(strstr(r.err, "nothing requeued"), "no reason given: %s", r.err);
    free_cli(&r);
    v = h_strdupf("SELECT concat_ws('|', status, replayed_at IS NULL) FROM hookd.jobs"
                  " WHERE id = %s", job);
    expect_value(&x, "done|t", v);
    free(v);

    /* Every dead job of a route. */
    arr = run_cli_json(&x, by_route);
    cr_assert_eq(json_object_array_length(arr), 4, "requeued: %s",
                 json_object_to_json_string(arr));
    json_object_put(arr);
    for (int i = 0; i < 4; i++) {
        wait_runs(&x, e[i], "bad", i == 0 ? 3 : 2);
        cr_assert_eq(runs_of(&x, e[i], "ok"), 1, "route ok ran again");
    }

    /* Every job of an event, done and dead alike. */
    snprintf(event, sizeof(event), "%ld", e[3]);
    run_cli(&x, &r, by_event);
    cr_assert_eq(r.code, 0, "replay --event exited %d: %s", r.code, r.err);
    free_cli(&r);
    wait_runs(&x, e[3], "bad", 3);
    wait_runs(&x, e[3], "ok", 2);
    cr_assert_eq(runs_of(&x, e[2], "ok") + runs_of(&x, e[2], "bad"), 3,
                 "another event's jobs ran again");
    h_ctx_finish(&x, NULL, NULL);
}


Test(crm_handoff, replay_and_queue_commands_refuse_bad_argument_combinations)
{
    struct h_ctx x;
    long e[4];
    const char *c;
    long runs;

    start_cli(&x, "cli_usage", e);
    c = x.hx_conf;
    runs = h_sql_long(x.hx_db.hd_conninfo, "SELECT count(*) FROM public.counter_runs");
    {
        const char *a[] = {"replay", "--config", c, NULL};
        expect_usage_error(&x, a);
    }
    {
        const char *a[] = {"replay", "--config", c, "--job", "1", "--event", "1", NULL};
        expect_usage_error(&x, a);
    }
    {
        const char *a[] = {"replay", "--config", c, "--route", "bad", NULL};
        expect_usage_error(&x, a);
    }
    {
        const char *a[] = {"replay", "--config", c, "--dead", NULL};
        expect_usage_error(&x, a);
    }
    {
        const char *a[] = {"replay", "--config", c, "--job", "1", "--route", "bad", "--dead",
                           NULL};
        expect_usage_error(&x, a);
    }
    {
        const char *a[] = {"replay", "--job", "1", NULL};
        expect_usage_error(&x, a);
    }
    {
        const char *a[] = {"replay", "--config", c, "--job", "1", "--bogus", NULL};
        expect_usage_error(&x, a);
    }
    {
        const char *a[] = {"replay", "--config", c, "--job", "1", "stray", NULL};
        expect_usage_error(&x, a);
    }
    {
        const char *a[] = {"jobs", "--config", c, "--status", "finished", NULL};
        expect_usage_error(&x, a);
    }
    {
        const char *a[] = {"events", "--config", c, "--chatbot", CH_BOT, NULL};
        expect_usage_error(&x, a);
    }
    {
        const char *a[] = {"events", "--config", c, "--thread", "cli-a", NULL};
        expect_usage_error(&x, a);
    }
    cr_assert_eq(h_sql_long(x.hx_db.hd_conninfo, "SELECT count(*) FROM hookd.jobs"
                            " WHERE status IN ('pending', 'running')"), 0,
                 "a refused command requeued jobs");
    cr_assert_eq(h_sql_long(x.hx_db.hd_conninfo, "SELECT count(*) FROM public.counter_runs"),
                 runs, "a refused command made jobs run");
    h_ctx_finish(&x, NULL, NULL);
}


Test(crm_handoff, events_command_lists_a_conversation_oldest_first_with_its_jobs)
{
    struct h_ctx x;
    long e[4];
    struct cli r;
    const char *table[] = {"events", "--config", NULL, "--chatbot", CH_BOT, "--thread",
                           "cli-a", NULL};
    const char *json[] = {"events", "--config", NULL, "--chatbot", CH_BOT, "--thread",
                          "cli-a", "--json", NULL};
    char *line, *save = NULL;
    long prev = 0;
    int rows = 0;
    json_object *arr;
    char *ids, *want;

    start_cli(&x, "cli_events", e);
    table[2] = x.hx_conf;
    json[2] = x.hx_conf;

    run_cli(&x, &r, table);
    cr_assert_eq(r.code, 0, "hookd events exited %d: %s", r.code, r.err);
    line = strtok_r(r.out, "\n", &save);
    cr_assert(line != NULL && strstr(line, "event") != NULL && strstr(line, "jobs") != NULL,
              "no header: %s", r.out);
    for (line = strtok_r(NULL, "\n", &save); line != NULL; line = strtok_r(NULL, "\n", &save)) {
        long id = strtol(line, NULL, 10);

        cr_assert_gt(id, prev, "not oldest first: %s", line);
        cr_assert_neq(id, e[3], "an event of another thread is listed");
        cr_assert_not_null(strstr(line, "ok:done"), "row: %s", line);
        cr_assert_not_null(strstr(line, "bad:dead"), "row: %s", line);
        cr_assert_not_null(strstr(line, "NEW_MESSAGE"), "row: %s", line);
        prev = id;
        rows++;
    }
    cr_assert_eq(rows, 3, "want the thread's 3 events: %s", r.out);
    free_cli(&r);

    arr = run_cli_json(&x, json);
    ids = json_column(arr, "event");
    want = h_strdupf("%ld,%ld,%ld", e[0], e[1], e[2]);
    cr_assert_str_eq(ids, want);
    for (size_t i = 0; i < json_object_array_length(arr); i++) {
        const char *jobs = jstr(json_object_array_get_idx(arr, i), "jobs");

        cr_assert(strstr(jobs, "ok:done") != NULL && strstr(jobs, "bad:dead") != NULL,
                  "jobs: %s", jobs);
    }
    free(ids);
    free(want);
    json_object_put(arr);
    h_ctx_finish(&x, NULL, NULL);
}
