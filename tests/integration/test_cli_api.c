/* SPDX-License-Identifier: MIT */
/*
 * The operator commands of daemon/cli_api.c, run as the real binary:
 * `hookd reply`, `hookd escalate` and `hookd handoff list|claim|close`,
 * against a fake ContextGPT API (tests/support/fake_http.c over HTTPS) and
 * a test database migrated with `hookd migrate`; no daemon is started.
 * Tickets are made by SQL INSERT the way the handoff handler leaves them.
 */
#include <criterion/criterion.h>

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <json-c/json.h>

#include "support/fake_http.h"
#include "support/harness.h"

TestSuite(cli_api, .fini = h_suite_fini, .timeout = 120);

#define CA_BOT "365062873485935184"
#define CA_THREAD "06b3b43c-5651-49a2-b618-d7f24667c1b6"
#define CA_KEY "cli-api-key-4e8b1f27c9d03a65"
#define CA_AGENT_NAME "Support Desk"
#define CA_CLI_MS 30000
#define CA_MAX_ARGS 24
#define CA_OK_BODY "{\"statusCode\":200,\"success\":true,\"message\":\"OK\"," \
                   "\"data\":{\"id\":\"msg-1\"}}"

/* A finished hookd command. */
struct ca_run {
    int cr_code;
    char *cr_out;
    char *cr_err;
};


/* ---- helpers ------------------------------------------------------------- */

/*
 * Runs $HOOKD_BIN with args (NULL-ended, after argv[0]), stdout and stderr
 * to files of x's dir, at most CA_CLI_MS. Asserts that it finished, printed
 * no sanitizer report and never showed the API key.
 */
static void
ca_cli(struct h_ctx *x, struct ca_run *r, const char *const args[])
{
    char *out_path = h_strdupf("%s/cli.out", x->hx_dir);
    char *err_path = h_strdupf("%s/cli.err", x->hx_dir);
    const char *bin = h_env("HOOKD_BIN");
    const char *argv[CA_MAX_ARGS + 2];
    long long deadline = h_now_ms() + CA_CLI_MS;
    int status = 0;
    int n = 0;
    pid_t pid;
    pid_t got;

    argv[n++] = "hookd";
    for (; args[n - 1] != NULL; n++) {
        cr_assert(n <= CA_MAX_ARGS, "too many arguments");
        argv[n] = args[n - 1];
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
        execv(bin, (char *const *)argv);
        _exit(127);
    }
    while ((got = waitpid(pid, &status, WNOHANG)) == 0 && h_now_ms() < deadline) {
        h_sleep_ms(20);
    }
    if (got != pid) {
        (void)kill(pid, SIGKILL);
        (void)waitpid(pid, &status, 0);
        cr_assert_fail("hookd %s did not finish within %d ms", args[0], CA_CLI_MS);
    }
    r->cr_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    r->cr_out = h_read_file(out_path, NULL);
    r->cr_err = h_read_file(err_path, NULL);
    cr_assert(r->cr_out != NULL && r->cr_err != NULL);
    cr_assert(strstr(r->cr_err, "Sanitizer") == NULL
              && strstr(r->cr_err, "runtime error:") == NULL,
              "sanitizer report from hookd %s: %s", args[0], r->cr_err);
    cr_assert(strstr(r->cr_out, CA_KEY) == NULL && strstr(r->cr_err, CA_KEY) == NULL,
              "hookd %s printed the API key", args[0]);
    free(out_path);
    free(err_path);
}


/*
 * Makes x (database, dir, config) with the api group pointing at srv, or
 * without an api group when srv is NULL, and migrates the database.
 */
static void
ca_setup(struct h_ctx *x, const char *tag, struct fake_http *srv)
{
    struct ca_run r;
    const char *migrate[] = {"migrate", "--config", x->hx_conf, NULL};

    h_ctx_init(x, tag);
    if (srv != NULL) {
        char *key = h_secret_file(x->hx_dir, "api-key", CA_KEY, 0600);
        char *base = fh_url(srv, "/api");

        x->hx_cfg.hc_top_extra = h_strdupf("api = {\n  base_url = \"%s\";\n"
                                           "  key_file = \"%s\";\n"
                                           "  cacert = \"%s/cert.pem\";\n"
                                           "  agent_name = \"%s\";\n"
                                           "  connect_timeout = 2000;\n  timeout = 5000;\n};",
                                           base, key, h_env("HOOKD_TEST_TLS_DIR"),
                                           CA_AGENT_NAME);
        free(key);
        free(base);
    }
    h_config_write(x->hx_conf, &x->hx_cfg);
    ca_cli(x, &r, migrate);
    cr_assert_eq(r.cr_code, 0, "hookd migrate exited %d: %s", r.cr_code, r.cr_err);
    free(r.cr_out);
    free(r.cr_err);
}


static void
ca_run_free(struct ca_run *r)
{
    free(r->cr_out);
    free(r->cr_err);
    r->cr_out = NULL;
    r->cr_err = NULL;
}


/* Parses text as JSON (asserting it is JSON of type want). */
static json_object *
ca_json(const char *text, json_type want)
{
    json_object *o = json_tokener_parse(text);

    cr_assert_not_null(o, "not JSON: %s", text);
    cr_assert(json_object_is_type(o, want), "JSON of the wrong type: %s", text);
    return o;
}


/* The string member key of o, or NULL. */
static const char *
ca_str(json_object *o, const char *key)
{
    json_object *v;

    if (!json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_string)) {
        return NULL;
    }
    return json_object_get_string(v);
}


/* The integer member key of o, or -1. */
static long long
ca_int(json_object *o, const char *key)
{
    json_object *v;

    if (!json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_int)) {
        return -1;
    }
    return json_object_get_int64(v);
}


/* Asserts s equals want (NULL-safe), naming what. */
static void
ca_expect_str(const char *s, const char *want, const char *what)
{
    cr_expect(s != NULL && strcmp(s, want) == 0, "%s: want \"%s\", have \"%s\"", what, want,
              s ? s : "(null)");
}


/*
 * Inserts a ticket as the handoff handler leaves it, opened `age` ago (an
 * SQL interval), with status and agent; returns its id as text (malloc'd).
 */
static char *
ca_ticket(struct h_ctx *x, const char *thread, const char *age, const char *status,
          const char *agent)
{
    char *id = h_sql_value(x->hx_db.hd_conninfo,
                           "INSERT INTO hookd.handoff_tickets (chatbot_id, thread_id, status,"
                           " agent, contact_name, contact_email, contact_phone, last_prompt,"
                           " opened_at, claimed_at, closed_at)"
                           " VALUES ('%s', '%s', '%s', %s%s%s, 'Jo Lee', 'jo@example.org',"
                           " '+15550100', 'A human please', now() - interval '%s',"
                           " CASE WHEN '%s' = 'claimed' THEN now() END,"
                           " CASE WHEN '%s' = 'closed' THEN now() END) RETURNING id",
                           CA_BOT, thread, status, agent ? "'" : "", agent ? agent : "NULL",
                           agent ? "'" : "", age, status, status);

    cr_assert_not_null(id);
    return id;
}


/* The ticket's log actions in order, "a,b,c" (malloc'd, "" when none). */
static char *
ca_log(struct h_ctx *x, const char *ticket)
{
    char *v = h_sql_value(x->hx_db.hd_conninfo, "SELECT string_agg(action, ',' ORDER BY id)"
                          " FROM hookd.handoff_log WHERE ticket_id = %s", ticket);

    return v != NULL ? v : strdup("");
}


/* A column (SQL expression) of the ticket (malloc'd, or NULL). */
static char *
ca_col(struct h_ctx *x, const char *ticket, const char *expr)
{
    return h_sql_value(x->hx_db.hd_conninfo, "SELECT %s FROM hookd.handoff_tickets"
                       " WHERE id = %s", expr, ticket);
}


/* ---- reply and escalate ---------------------------------------------------- */

Test(cli_api, reply_sends_one_post_with_path_key_and_body_and_prints_sent)
{
    struct fake_http *srv = fh_start(true);
    struct h_ctx x;
    struct ca_run r;
    struct fh_request *req;
    json_object *body;
    char *v;

    ca_setup(&x, "reply_basic", srv);
    fh_push(srv, &(struct fh_answer){.fa_status = 201, .fa_body = CA_OK_BODY});
    {
        const char *args[] = {"reply", "--config", x.hx_conf, "--chatbot", CA_BOT, "--thread",
                              "th 1/x", "--agent", "Dana", "--icon",
                              "https://example.org/dana.png", "Your order", "ships today.",
                              NULL};

        ca_cli(&x, &r, args);
    }
    cr_assert_eq(r.cr_code, 0, "exit %d: %s", r.cr_code, r.cr_err);
    ca_expect_str(r.cr_out, "sent\n", "stdout");
    cr_expect_eq(fh_count(srv), 1, "want exactly one request, have %zu", fh_count(srv));
    req = fh_request(srv, 0);
    cr_assert_not_null(req);
    ca_expect_str(req->fr_method, "POST", "method");
    ca_expect_str(req->fr_path, "/api/v1/chatting/" CA_BOT "/thread/th%201%2Fx/message", "path");
    v = fh_header(req, "Authorization");
    ca_expect_str(v, "Bearer " CA_KEY, "Authorization");
    free(v);
    v = fh_header(req, "Content-Type");
    ca_expect_str(v, "application/json", "Content-Type");
    free(v);
    body = ca_json(req->fr_body, json_type_object);
    ca_expect_str(ca_str(body, "message"), "Your order ships today.", "message");
    ca_expect_str(ca_str(body, "from"), "AGENT", "from");
    ca_expect_str(ca_str(body, "agentName"), "Dana", "agentName");
    ca_expect_str(ca_str(body, "iconUrl"), "https://example.org/dana.png", "iconUrl");
    cr_expect_eq(json_object_object_length(body), 4, "extra members: %s", req->fr_body);
    json_object_put(body);
    fh_request_free(req);
    ca_run_free(&r);
    fh_stop(srv);
    h_db_drop(&x.hx_db);
}


/* Ids of "." or ".." must not become dot segments that the URL collapses. */
Test(cli_api, dot_ids_stay_in_their_path_segment)
{
    struct fake_http *srv = fh_start(true);
    struct h_ctx x;
    struct ca_run r;
    struct fh_request *req;

    ca_setup(&x, "dot_ids", srv);
    fh_push(srv, &(struct fh_answer){.fa_status = 200, .fa_body = CA_OK_BODY});
    {
        const char *args[] = {"escalate", "--config", x.hx_conf, "--chatbot", ".", "--thread",
                              "..", NULL};

        ca_cli(&x, &r, args);
    }
    cr_assert_eq(r.cr_code, 0, "exit %d: %s", r.cr_code, r.cr_err);
    req = fh_request(srv, 0);
    cr_assert_not_null(req);
    ca_expect_str(req->fr_path, "/api/v1/chatting/%2E/thread/%2E%2E/escalate", "path");
    fh_request_free(req);
    ca_run_free(&r);
    fh_stop(srv);
    h_db_drop(&x.hx_db);
}


Test(cli_api, reply_json_signs_with_the_configured_agent_name_and_parses)
{
    struct fake_http *srv = fh_start(true);
    struct h_ctx x;
    struct ca_run r;
    struct fh_request *req;
    json_object *body, *out, *data;

    ca_setup(&x, "reply_json", srv);
    fh_push(srv, &(struct fh_answer){.fa_body = CA_OK_BODY});
    {
        const char *args[] = {"reply", "--config", x.hx_conf, "-b", CA_BOT, "-t", CA_THREAD,
                              "--json", "Hello", NULL};

        ca_cli(&x, &r, args);
    }
    cr_assert_eq(r.cr_code, 0, "exit %d: %s", r.cr_code, r.cr_err);
    out = ca_json(r.cr_out, json_type_object);
    ca_expect_str(ca_str(out, "outcome"), "sent", "outcome");
    cr_expect_eq(ca_int(out, "httpStatus"), 200);
    cr_expect(json_object_object_get_ex(out, "data", &data)
              && strcmp(ca_str(data, "id") ? ca_str(data, "id") : "", "msg-1") == 0,
              "no data.id in %s", r.cr_out);
    req = fh_request(srv, 0);
    cr_assert_not_null(req);
    body = ca_json(req->fr_body, json_type_object);
    ca_expect_str(ca_str(body, "agentName"), CA_AGENT_NAME, "agentName");
    cr_expect(!json_object_object_get_ex(body, "iconUrl", NULL), "iconUrl sent: %s",
              req->fr_body);
    json_object_put(body);
    json_object_put(out);
    fh_request_free(req);
    ca_run_free(&r);
    fh_stop(srv);
    h_db_drop(&x.hx_db);
}


Test(cli_api, reply_refused_with_401_exits_1_with_the_platform_message)
{
    struct fake_http *srv = fh_start(true);
    struct h_ctx x;
    struct ca_run r;
    const char *args[] = {"reply", "--config", NULL, "--chatbot", CA_BOT, "--thread",
                          CA_THREAD, "Hello", NULL};

    ca_setup(&x, "reply_401", srv);
    args[2] = x.hx_conf;
    fh_push(srv, &(struct fh_answer){
        .fa_status = 401,
        .fa_body = "{\"statusCode\":401,\"success\":false,\"message\":\"Invalid API key\"}"});
    ca_cli(&x, &r, args);
    cr_expect_eq(r.cr_code, 1, "exit %d, want 1", r.cr_code);
    ca_expect_str(r.cr_out, "", "stdout");
    cr_expect(strstr(r.cr_err, "could not send the message") != NULL
              && strstr(r.cr_err, "Invalid API key") != NULL
              && strstr(r.cr_err, "401") != NULL, "stderr: %s", r.cr_err);
    cr_expect(strstr(r.cr_err, "try again") == NULL, "a 401 is not worth retrying: %s",
              r.cr_err);
    cr_expect_eq(fh_count(srv), 1);
    ca_run_free(&r);
    fh_stop(srv);
    h_db_drop(&x.hx_db);
}


Test(cli_api, reply_limited_with_429_says_when_to_try_again)
{
    struct fake_http *srv = fh_start(true);
    struct h_ctx x;
    struct ca_run r;
    json_object *out;
    const char *args[] = {"reply", "--config", NULL, "--chatbot", CA_BOT, "--thread",
                          CA_THREAD, "--json", "Hello", NULL};

    ca_setup(&x, "reply_429", srv);
    args[2] = x.hx_conf;
    fh_push(srv, &(struct fh_answer){
        .fa_status = 429, .fa_retry_after = "7",
        .fa_body = "{\"statusCode\":429,\"success\":false,\"message\":\"Too many requests\"}"});
    ca_cli(&x, &r, args);
    cr_expect_eq(r.cr_code, 1, "exit %d, want 1", r.cr_code);
    cr_expect(strstr(r.cr_err, "try again in 7 s") != NULL, "stderr: %s", r.cr_err);
    out = ca_json(r.cr_out, json_type_object);
    ca_expect_str(ca_str(out, "outcome"), "retry", "outcome");
    cr_expect_eq(ca_int(out, "retryAfter"), 7);
    cr_expect_eq(ca_int(out, "httpStatus"), 429);
    cr_expect(ca_str(out, "reason") != NULL && strstr(ca_str(out, "reason"), "Too many"),
              "reason: %s", r.cr_out);
    json_object_put(out);
    ca_run_free(&r);
    fh_stop(srv);
    h_db_drop(&x.hx_db);
}


Test(cli_api, reply_and_escalate_without_an_api_key_exit_2_naming_the_settings)
{
    struct h_ctx x;
    struct ca_run r;
    const char *reply[] = {"reply", "--config", NULL, "--chatbot", CA_BOT, "--thread",
                           CA_THREAD, "Hello", NULL};
    const char *escalate[] = {"escalate", "--config", NULL, "--chatbot", CA_BOT, "--thread",
                              CA_THREAD, NULL};

    ca_setup(&x, "no_api", NULL);
    reply[2] = x.hx_conf;
    escalate[2] = x.hx_conf;
    ca_cli(&x, &r, reply);
    cr_expect_eq(r.cr_code, 2, "exit %d, want 2", r.cr_code);
    cr_expect(strstr(r.cr_err, "api.key_file") != NULL
              && strstr(r.cr_err, "api.credential") != NULL, "stderr: %s", r.cr_err);
    ca_expect_str(r.cr_out, "", "stdout");
    ca_run_free(&r);
    ca_cli(&x, &r, escalate);
    cr_expect_eq(r.cr_code, 2, "escalate: exit %d, want 2", r.cr_code);
    ca_run_free(&r);
    h_db_drop(&x.hx_db);
}


Test(cli_api, escalate_posts_the_prompt_and_prints_escalated)
{
    struct fake_http *srv = fh_start(true);
    struct h_ctx x;
    struct ca_run r;
    struct fh_request *req;
    json_object *body;
    const char *args[] = {"escalate", "--config", NULL, "--chatbot", CA_BOT, "--thread",
                          CA_THREAD, "Refund over the limit", NULL};

    ca_setup(&x, "escalate", srv);
    args[2] = x.hx_conf;
    fh_push(srv, &(struct fh_answer){.fa_body = CA_OK_BODY});
    ca_cli(&x, &r, args);
    cr_assert_eq(r.cr_code, 0, "exit %d: %s", r.cr_code, r.cr_err);
    ca_expect_str(r.cr_out, "escalated\n", "stdout");
    req = fh_request(srv, 0);
    cr_assert_not_null(req);
    ca_expect_str(req->fr_method, "POST", "method");
    ca_expect_str(req->fr_path, "/api/v1/chatting/" CA_BOT "/thread/" CA_THREAD "/escalate",
                  "path");
    body = ca_json(req->fr_body, json_type_object);
    ca_expect_str(ca_str(body, "escalationPrompt"), "Refund over the limit", "prompt");
    json_object_put(body);
    fh_request_free(req);
    ca_run_free(&r);
    fh_stop(srv);
    h_db_drop(&x.hx_db);
}


/* ---- handoff list, claim, close ------------------------------------------- */

Test(cli_api, list_shows_open_tickets_with_contact_and_waiting_time)
{
    struct h_ctx x;
    struct ca_run r;
    json_object *arr, *t, *contact;
    char *open_id, *closed_id;
    const char *table[] = {"handoff", "list", "--config", NULL, NULL};
    const char *all[] = {"handoff", "list", "--config", NULL, "--all", "--json", NULL};

    ca_setup(&x, "list", NULL);
    table[3] = x.hx_conf;
    all[3] = x.hx_conf;
    closed_id = ca_ticket(&x, "old-thread", "2 days 1 hour 5 minutes", "closed", "alice");
    open_id = ca_ticket(&x, CA_THREAD, "3 hours 4 minutes 10 seconds", "open", NULL);

    ca_cli(&x, &r, table);
    cr_assert_eq(r.cr_code, 0, "exit %d: %s", r.cr_code, r.cr_err);
    cr_expect(strstr(r.cr_out, "waiting") != NULL && strstr(r.cr_out, "contact") != NULL,
              "no header: %s", r.cr_out);
    cr_expect(strstr(r.cr_out, CA_THREAD) != NULL && strstr(r.cr_out, "3h 4m") != NULL
              && strstr(r.cr_out, "jo@example.org") != NULL
              && strstr(r.cr_out, "Jo Lee") != NULL, "open ticket missing: %s", r.cr_out);
    cr_expect(strstr(r.cr_out, "old-thread") == NULL, "closed ticket listed: %s", r.cr_out);
    ca_run_free(&r);

    ca_cli(&x, &r, all);
    cr_assert_eq(r.cr_code, 0, "exit %d: %s", r.cr_code, r.cr_err);
    arr = ca_json(r.cr_out, json_type_array);
    cr_assert_eq(json_object_array_length(arr), 2, "%s", r.cr_out);
    /* Oldest first: the closed ticket opened two days ago. */
    t = json_object_array_get_idx(arr, 0);
    cr_expect_eq(ca_int(t, "ticket"), atoll(closed_id));
    ca_expect_str(ca_str(t, "status"), "closed", "status");
    ca_expect_str(ca_str(t, "agent"), "alice", "agent");
    ca_expect_str(ca_str(t, "waiting"), "2d 1h", "waiting of the closed ticket");
    t = json_object_array_get_idx(arr, 1);
    cr_expect_eq(ca_int(t, "ticket"), atoll(open_id));
    ca_expect_str(ca_str(t, "status"), "open", "status");
    ca_expect_str(ca_str(t, "chatbot"), CA_BOT, "chatbot");
    ca_expect_str(ca_str(t, "waiting"), "3h 4m", "waiting");
    cr_expect(ca_int(t, "waitingSeconds") >= 3 * 3600 + 4 * 60, "%s", r.cr_out);
    cr_expect_eq(ca_int(t, "escalations"), 1);
    cr_assert(json_object_object_get_ex(t, "contact", &contact)
              && json_object_is_type(contact, json_type_object), "%s", r.cr_out);
    ca_expect_str(ca_str(contact, "email"), "jo@example.org", "email");
    ca_expect_str(ca_str(contact, "phone"), "+15550100", "phone");
    json_object_put(arr);
    ca_run_free(&r);
    free(open_id);
    free(closed_id);
    h_db_drop(&x.hx_db);
}


Test(cli_api, claim_sets_agent_and_logs_and_refuses_a_taken_or_closed_ticket)
{
    struct h_ctx x;
    struct ca_run r;
    char *id, *closed_id, *v;
    const char *alice[] = {"handoff", "claim", NULL, "--config", NULL, "--agent", "alice",
                           NULL};
    const char *bob[] = {"handoff", "claim", NULL, "--config", NULL, "--agent", "bob", NULL};
    const char *bob_force[] = {"handoff", "claim", NULL, "--config", NULL, "--agent", "bob",
                               "--force", NULL};
    const char *on_closed[] = {"handoff", "claim", NULL, "--config", NULL, "--agent", "alice",
                               NULL};

    ca_setup(&x, "claim", NULL);
    id = ca_ticket(&x, CA_THREAD, "5 minutes", "open", NULL);
    closed_id = ca_ticket(&x, "old-thread", "1 day", "closed", NULL);
    alice[2] = bob[2] = bob_force[2] = id;
    on_closed[2] = closed_id;
    alice[4] = bob[4] = bob_force[4] = on_closed[4] = x.hx_conf;

    ca_cli(&x, &r, alice);
    cr_assert_eq(r.cr_code, 0, "exit %d: %s", r.cr_code, r.cr_err);
    v = ca_col(&x, id, "concat_ws('|', status, agent, claimed_at IS NOT NULL)");
    ca_expect_str(v, "claimed|alice|t", "ticket after claim");
    free(v);
    v = ca_log(&x, id);
    ca_expect_str(v, "claimed", "log");
    free(v);
    ca_run_free(&r);

    ca_cli(&x, &r, bob);
    cr_expect_eq(r.cr_code, 1, "claim of a claimed ticket: exit %d, want 1", r.cr_code);
    cr_expect(strstr(r.cr_err, "alice") != NULL && strstr(r.cr_err, "--force") != NULL,
              "stderr: %s", r.cr_err);
    v = ca_col(&x, id, "agent");
    ca_expect_str(v, "alice", "agent after the refused claim");
    free(v);
    v = ca_log(&x, id);
    ca_expect_str(v, "claimed", "log after the refused claim");
    free(v);
    ca_run_free(&r);

    ca_cli(&x, &r, bob_force);
    cr_expect_eq(r.cr_code, 0, "--force: exit %d: %s", r.cr_code, r.cr_err);
    v = ca_col(&x, id, "agent");
    ca_expect_str(v, "bob", "agent after --force");
    free(v);
    v = h_sql_value(x.hx_db.hd_conninfo, "SELECT detail FROM hookd.handoff_log"
                    " WHERE ticket_id = %s ORDER BY id DESC LIMIT 1", id);
    cr_expect(v != NULL && strstr(v, "bob") && strstr(v, "alice"), "detail: %s", v);
    free(v);
    ca_run_free(&r);

    ca_cli(&x, &r, on_closed);
    cr_expect_eq(r.cr_code, 1, "claim of a closed ticket: exit %d, want 1", r.cr_code);
    cr_expect(strstr(r.cr_err, "closed") != NULL, "stderr: %s", r.cr_err);
    v = ca_col(&x, closed_id, "concat_ws('|', status, agent)");
    ca_expect_str(v, "closed", "closed ticket after the refused claim");
    free(v);
    ca_run_free(&r);
    free(id);
    free(closed_id);
    h_db_drop(&x.hx_db);
}


Test(cli_api, close_back_to_ai_sends_the_patch_then_closes_and_logs_both)
{
    struct fake_http *srv = fh_start(true);
    struct h_ctx x;
    struct ca_run r;
    struct fh_request *req;
    json_object *body;
    json_object *flag;
    char *id, *other, *v;
    const char *back[] = {"handoff", "close", NULL, "--config", NULL, "--back-to-ai", NULL};
    const char *custom[] = {"handoff", "close", NULL, "--config", NULL, "--back-to-ai",
                            "--update-json", "{\"escalated\": false}", NULL};

    ca_setup(&x, "close_back", srv);
    id = ca_ticket(&x, CA_THREAD, "20 minutes", "claimed", "alice");
    other = ca_ticket(&x, "second-thread", "10 minutes", "open", NULL);
    back[2] = id;
    custom[2] = other;
    back[4] = custom[4] = x.hx_conf;
    fh_set_default(srv, &(struct fh_answer){.fa_body = CA_OK_BODY});

    ca_cli(&x, &r, back);
    cr_assert_eq(r.cr_code, 0, "exit %d: %s", r.cr_code, r.cr_err);
    cr_assert_eq(fh_count(srv), 1);
    req = fh_request(srv, 0);
    cr_assert_not_null(req);
    ca_expect_str(req->fr_method, "PATCH", "method");
    ca_expect_str(req->fr_path, "/api/v1/chatting/" CA_BOT "/thread/update-thread", "path");
    body = ca_json(req->fr_body, json_type_object);
    ca_expect_str(ca_str(body, "threadId"), CA_THREAD, "threadId");
    cr_expect(json_object_object_get_ex(body, "isEscalated", &flag)
              && json_object_is_type(flag, json_type_boolean) && !json_object_get_boolean(flag),
              "body: %s", req->fr_body);
    json_object_put(body);
    fh_request_free(req);
    v = ca_col(&x, id, "concat_ws('|', status, closed_at IS NOT NULL)");
    ca_expect_str(v, "closed|t", "ticket after close");
    free(v);
    v = ca_log(&x, id);
    ca_expect_str(v, "returned to AI,closed", "log");
    free(v);
    ca_run_free(&r);

    /* --update-json replaces the undocumented field. */
    ca_cli(&x, &r, custom);
    cr_assert_eq(r.cr_code, 0, "exit %d: %s", r.cr_code, r.cr_err);
    cr_assert_eq(fh_count(srv), 2);
    req = fh_request(srv, 1);
    body = ca_json(req->fr_body, json_type_object);
    ca_expect_str(ca_str(body, "threadId"), "second-thread", "threadId");
    cr_expect(json_object_object_get_ex(body, "escalated", NULL)
              && !json_object_object_get_ex(body, "isEscalated", NULL), "body: %s",
              req->fr_body);
    json_object_put(body);
    fh_request_free(req);
    ca_run_free(&r);
    free(id);
    free(other);
    fh_stop(srv);
    h_db_drop(&x.hx_db);
}


Test(cli_api, close_when_the_api_fails_leaves_the_ticket_open_and_plain_close_sends_nothing)
{
    struct fake_http *srv = fh_start(true);
    struct h_ctx x;
    struct ca_run r;
    char *id, *v;
    const char *back[] = {"handoff", "close", NULL, "--config", NULL, "--back-to-ai", NULL};
    const char *plain[] = {"handoff", "close", NULL, "--config", NULL, NULL};

    ca_setup(&x, "close_500", srv);
    id = ca_ticket(&x, CA_THREAD, "20 minutes", "open", NULL);
    back[2] = plain[2] = id;
    back[4] = plain[4] = x.hx_conf;
    fh_set_default(srv, &(struct fh_answer){
        .fa_status = 500, .fa_body = "{\"statusCode\":500,\"success\":false,"
                                     "\"message\":\"Internal error\"}"});

    ca_cli(&x, &r, back);
    cr_expect_eq(r.cr_code, 1, "exit %d, want 1", r.cr_code);
    cr_expect(strstr(r.cr_err, "Internal error") != NULL && strstr(r.cr_err, "open") != NULL,
              "stderr: %s", r.cr_err);
    cr_expect_eq(fh_count(srv), 1);
    v = ca_col(&x, id, "concat_ws('|', status, closed_at IS NULL)");
    ca_expect_str(v, "open|t", "ticket after the failed close");
    free(v);
    v = ca_log(&x, id);
    ca_expect_str(v, "", "log after the failed close");
    free(v);
    ca_run_free(&r);

    ca_cli(&x, &r, plain);
    cr_expect_eq(r.cr_code, 0, "plain close: exit %d: %s", r.cr_code, r.cr_err);
    cr_expect_eq(fh_count(srv), 1, "a plain close called the API");
    v = ca_log(&x, id);
    ca_expect_str(v, "closed", "log after the plain close");
    free(v);
    ca_run_free(&r);

    ca_cli(&x, &r, plain);
    cr_expect_eq(r.cr_code, 1, "closing twice: exit %d, want 1", r.cr_code);
    ca_run_free(&r);
    free(id);
    fh_stop(srv);
    h_db_drop(&x.hx_db);
}


Test(cli_api, reply_to_a_ticket_signs_with_the_claiming_agent_and_logs)
{
    struct fake_http *srv = fh_start(true);
    struct h_ctx x;
    struct ca_run r;
    struct fh_request *req;
    json_object *body;
    char *id, *closed_id, *v;
    const char *reply[] = {"reply", "--config", NULL, "--ticket", NULL, "On it!", NULL};
    const char *as_bob[] = {"reply", "--config", NULL, "--ticket", NULL, "--agent", "bob",
                            "Hi", NULL};
    const char *to_closed[] = {"reply", "--config", NULL, "--ticket", NULL, "Hi", NULL};

    ca_setup(&x, "reply_ticket", srv);
    id = ca_ticket(&x, CA_THREAD, "8 minutes", "claimed", "alice");
    closed_id = ca_ticket(&x, "old-thread", "1 day", "closed", "alice");
    reply[2] = as_bob[2] = to_closed[2] = x.hx_conf;
    reply[4] = as_bob[4] = id;
    to_closed[4] = closed_id;
    fh_set_default(srv, &(struct fh_answer){.fa_body = CA_OK_BODY});

    ca_cli(&x, &r, reply);
    cr_assert_eq(r.cr_code, 0, "exit %d: %s", r.cr_code, r.cr_err);
    ca_expect_str(r.cr_out, "sent\n", "stdout");
    cr_assert_eq(fh_count(srv), 1);
    req = fh_request(srv, 0);
    ca_expect_str(req->fr_path, "/api/v1/chatting/" CA_BOT "/thread/" CA_THREAD "/message",
                  "path");
    body = ca_json(req->fr_body, json_type_object);
    ca_expect_str(ca_str(body, "agentName"), "alice", "agentName");
    ca_expect_str(ca_str(body, "message"), "On it!", "message");
    json_object_put(body);
    fh_request_free(req);
    v = ca_log(&x, id);
    ca_expect_str(v, "replied", "log");
    free(v);
    ca_run_free(&r);

    /* Another agent's name on alice's ticket, and a closed ticket: nothing sent. */
    ca_cli(&x, &r, as_bob);
    cr_expect_eq(r.cr_code, 1, "as bob: exit %d, want 1", r.cr_code);
    cr_expect(strstr(r.cr_err, "alice") != NULL, "stderr: %s", r.cr_err);
    ca_run_free(&r);
    ca_cli(&x, &r, to_closed);
    cr_expect_eq(r.cr_code, 1, "closed: exit %d, want 1", r.cr_code);
    cr_expect(strstr(r.cr_err, "closed") != NULL, "stderr: %s", r.cr_err);
    ca_run_free(&r);
    cr_expect_eq(fh_count(srv), 1, "a refused reply was sent");
    v = ca_log(&x, id);
    ca_expect_str(v, "replied", "log after the refused replies");
    free(v);
    free(id);
    free(closed_id);
    fh_stop(srv);
    h_db_drop(&x.hx_db);
}


Test(cli_api, usage_errors_exit_2_and_help_exits_0)
{
    struct h_ctx x;
    struct ca_run r;
    const char *c;

    ca_setup(&x, "usage", NULL);
    c = x.hx_conf;
    {
        const char *const cases[][10] = {
            {"reply", "--config", c, "--chatbot", CA_BOT, "Hi", NULL},
            {"reply", "--config", c, "--ticket", "1", "--thread", CA_THREAD, "Hi", NULL},
            {"reply", "--config", c, "--chatbot", CA_BOT, "--thread", CA_THREAD, NULL},
            {"reply", "--config", c, "--ticket", "x1", "Hi", NULL},
            {"handoff", "claim", "1", "--config", c, NULL},
            {"handoff", "claim", "--config", c, "--agent", "a", NULL},
            {"handoff", "close", "1", "--config", c, "--update-json", "{}", NULL},
            {"handoff", "close", "1", "--config", c, "--back-to-ai", "--update-json", "[1]",
             NULL},
            {"handoff", "list", "--config", c, "--force", NULL},
            {"handoff", "reopen", NULL},
        };

        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
            ca_cli(&x, &r, cases[i]);
            cr_expect_eq(r.cr_code, 2, "case %zu (%s %s): exit %d, want 2: %s", i, cases[i][0],
                         cases[i][1], r.cr_code, r.cr_err);
            ca_run_free(&r);
        }
    }
    {
        const char *const helps[][4] = {
            {"reply", "--help", NULL},
            {"escalate", "--help", NULL},
            {"handoff", "--help", NULL},
            {"handoff", "list", "--help", NULL},
            {"handoff", "claim", "--help", NULL},
            {"handoff", "close", "--help", NULL},
        };

        for (size_t i = 0; i < sizeof(helps) / sizeof(helps[0]); i++) {
            ca_cli(&x, &r, helps[i]);
            cr_expect_eq(r.cr_code, 0, "%s %s --help: exit %d", helps[i][0], helps[i][1],
                         r.cr_code);
            cr_expect(strncmp(r.cr_out, "usage: hookd ", 13) == 0, "help: %s", r.cr_out);
            ca_run_free(&r);
        }
    }
    ca_cli(&x, &r, (const char *const[]){"handoff", "close", "--help", NULL});
    cr_expect(strstr(r.cr_out, "does not document") != NULL, "close help: %s", r.cr_out);
    ca_run_free(&r);
    h_db_drop(&x.hx_db);
}
