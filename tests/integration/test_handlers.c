/* SPDX-License-Identifier: MIT */
/*
 * The exec and forward handler plugins (build/handlers/exec.so, forward.so), run by the
 * real daemon's dispatch on signed events.
 *
 * exec: exit 0 / a retry code / another code / a signal / the timeout, the
 * minimal environment and closed descriptors, output capture and its cap,
 * and case C25 (visitor-typed text never reaches a shell and arrives
 * byte-exact on stdin). forward: against tests/support/fake_http.c over
 * HTTPS: 2xx, 429 with Retry-After (case C18), 5xx, 4xx, no answer, and
 * certificate checks. Options the plugins refuse stop the daemon at start.
 */
#include <criterion/criterion.h>

#include <errno.h>
#include <glob.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "support/fake_http.h"
#include "support/harness.h"

TestSuite(handlers, .fini = h_suite_fini, .timeout = 120);

#define HT_THREAD "06b3b43c-5651-49a2-b618-d7f24667c1b6"
#define HT_CHATBOT "365062873485935184"
#define HT_API_KEY "api-key-7f3c9e1d5b2a4680"
#define HT_SIGN_SECRET "forward-sign-secret-2468ace0"
#define HT_FAST_RETRY "retry = { attempts = 3; first_delay = 100; factor = 1.0; " \
                      "max_delay = 100; };"


/* ---- helpers ------------------------------------------------------------- */

/* build/handlers, next to this binary's build/tests/. */
static char *
ht_plugin_dir(void)
{
    char exe[H_PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    char *dir, *so;

    cr_assert(n > 0, "readlink /proc/self/exe: %s", strerror(errno));
    exe[n] = '\0';
    for (int i = 0; i < 2; i++) {
        char *slash = strrchr(exe, '/');

        cr_assert(slash != NULL);
        *slash = '\0';
    }
    dir = h_strdupf("%s/handlers", exe);
    so = h_strdupf("%s/exec.so", dir);
    cr_assert(access(so, R_OK) == 0, "%s is missing: run make", so);
    free(so);
    return dir;
}


/* Starts the daemon with dispatch on and the given route groups. */
static void
ht_start(struct h_ctx *x, const char *routes)
{
    char *dir = ht_plugin_dir();
    char *top = h_strdupf("dispatch = {\n  plugin_dir = \"%s\";\n  workers = 2;\n"
                          "  poll_interval = 200;\n  lease = 30;\n};\nroutes = (\n%s\n);",
                          dir, routes);

    x->hx_cfg.hc_top_extra = top;
    h_ctx_start(x);
    free(dir);
}


/* Writes an executable shell script <dir>/<name>; returns its path. */
static char *
ht_script(const char *dir, const char *name, const char *body)
{
    char *path = h_strdupf("%s/%s", dir, name);
    char *text = h_strdupf("#!/bin/sh\n%s", body);

    h_write_file(path, text, strlen(text), 0755);
    free(text);
    return path;
}


/* Posts a signed event; returns its event id. */
static long long
ht_post(struct h_ctx *x, const char *body, size_t len)
{
    struct h_resp r = {0};
    const char *id;
    long long ev;

    h_post_signed(x->hx_port, H_DEFAULT_PATH, x->hx_cfg.hc_secrets[0], body, len, &r);
    h_assert_status(&r, 200, "posting an event");
    id = strstr(r.hr_body, "\"id\":\"");
    cr_assert(id != NULL, "no id in %s", r.hr_body);
    ev = atoll(id + 6);
    h_resp_free(&r);
    return ev;
}


/* A column of the job of event ev on route (malloc'd, or NULL). */
static char *
ht_job(struct h_ctx *x, long long ev, const char *route, const char *column)
{
    return h_sql_value(x->hx_db.hd_conninfo, "SELECT %s FROM hookd.jobs WHERE event_id = %lld"
                       " AND route = '%s'", column, ev, route);
}


/* Waits until the job's status is want; fails the test with its row if not. */
static void
ht_wait_job(struct h_ctx *x, long long ev, const char *route, const char *want,
            int timeout_ms)
{
    long long deadline = h_now_ms() + timeout_ms;
    char *status = NULL;

    for (;;) {
        free(status);
        status = ht_job(x, ev, route, "status");
        if ((status != NULL && strcmp(status, want) == 0) || h_now_ms() >= deadline) {
            break;
        }
        h_sleep_ms(50);
    }
    if (status == NULL || strcmp(status, want) != 0) {
        char *row = ht_job(x, ev, route, "concat_ws(' | ', status, attempts, last_error, "
                           "output)");

        cr_assert_fail("job of event %lld on route %s: want %s, have %s", ev, route, want,
                       row ? row : "(no job)");
    }
    free(status);
}


static void
ht_expect_job(struct h_ctx *x, long long ev, const char *route, const char *column,
              const char *want)
{
    char *have = ht_job(x, ev, route, column);

    cr_expect(have != NULL && strcmp(have, want) == 0, "route %s %s: want \"%.200s\", have "
              "\"%.200s\"", route, column, want, have ? have : "(null)");
    free(have);
}


/* True while pid is a live process (a zombie counts as gone). */
static bool
ht_pid_alive(pid_t pid)
{
    char path[64];
    char *stat;
    bool alive;

    if (kill(pid, 0) != 0) {
        return false;
    }
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    stat = h_read_file(path, NULL);
    if (stat == NULL) {
        return false;
    }
    /* "pid (comm) S ...": the state follows the last ')'. */
    alive = strrchr(stat, ')') != NULL && strrchr(stat, ')')[2] != 'Z';
    free(stat);
    return alive;
}


static pid_t
ht_read_pid(const char *path)
{
    char *text = h_read_file(path, NULL);
    pid_t pid;

    cr_assert(text != NULL, "the script did not write %s", path);
    pid = (pid_t)atoi(text);
    free(text);
    cr_assert(pid > 1, "bad pid in %s", path);
    return pid;
}


/* s as a JSON string literal (malloc'd). */
static char *
ht_json_quote(const char *s)
{
    size_t cap = strlen(s) * 6 + 3, n = 0;
    char *out = malloc(cap);

    cr_assert(out != NULL);
    out[n++] = '"';
    for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++) {
        if (*p == '"' || *p == '\\') {
            out[n++] = '\\';
            out[n++] = (char)*p;
        } else if (*p == '\n') {
            out[n++] = '\\';
            out[n++] = 'n';
        } else if (*p < 0x20) {
            n += (size_t)snprintf(out + n, cap - n, "\\u%04x", *p);
        } else {
            out[n++] = (char)*p;
        }
    }
    out[n++] = '"';
    out[n] = '\0';
    return out;
}


/* Expects the file at path to hold exactly want_len bytes of want. */
static void
ht_expect_file(const char *path, const char *want, size_t want_len, const char *what)
{
    size_t len = 0;
    char *have = h_read_file(path, &len);

    cr_assert(have != NULL, "%s: %s was not written", what, path);
    cr_expect(len == want_len && memcmp(have, want, len) == 0,
              "%s: %s differs (%zu bytes, want %zu)", what, path, len, want_len);
    free(have);
}


/* ---- exec ---------------------------------------------------------------- */

Test(handlers, exec_done_env_fds_and_output)
{
    struct h_ctx x;
    char *script, *routes, *env, *fds, *body, *want, *sigs;
    unsigned long long blk = 1, ign = 1;
    size_t len;
    long long ev;
    const char *allowed[] = {
        "PATH", "PWD", "SHLVL", "_", "OUT", "HOOKD_EVENT_TYPE", "HOOKD_EVENT_ID",
        "HOOKD_CHATBOT_ID", "HOOKD_THREAD_ID", "HOOKD_ROUTE", "HOOKD_ATTEMPT", NULL
    };

    h_ctx_init(&x, "exec_done");
    script = ht_script(x.hx_dir, "ok.sh",
                       "cat > \"$OUT/stdin\"\n"
                       "env | sort > \"$OUT/env\"\n"
                       "ls -l /proc/$$/fd/ > \"$OUT/fds\" 2>&1\n"
                       "echo 'hello from exec'\n"
                       "echo 'to stderr' >&2\n");
    /*
     * No signal blocked or ignored (hookd's workers block SIGTERM, SIGINT and
     * SIGHUP, and hookd ignores SIGPIPE), read by a program run directly.
     */
    routes = h_strdupf("{ name = \"run\"; handler = \"exec\"; options = { command = [ \"%s\" ];"
                       " env = { OUT = \"%s\"; }; }; },\n"
                       "{ name = \"sigs\"; handler = \"exec\"; options = { command = ["
                       " \"/usr/bin/grep\", \"-E\", \"^Sig(Blk|Ign):\", \"/proc/self/status\" ];"
                       " }; }", script, x.hx_dir);
    ht_start(&x, routes);

    body = h_user_event(1, &len);
    ev = ht_post(&x, body, len);
    ht_wait_job(&x, ev, "run", "done", 15000);
    ht_expect_job(&x, ev, "run", "output", "hello from exec\nto stderr\n");
    ht_expect_job(&x, ev, "run", "attempts", "1");
    ht_wait_job(&x, ev, "sigs", "done", 15000);
    sigs = ht_job(&x, ev, "sigs", "output");
    cr_assert(sigs != NULL && sscanf(sigs, "SigBlk:\t%llx\nSigIgn:\t%llx", &blk, &ign) == 2,
              "output %s", sigs);
    /*
     * glibc's posix_spawn leaves its two internal signals (32 and 33,
     * SIGCANCEL and SIGSETXID) ignored; glibc programs reset them at start.
     */
    cr_expect(blk == 0 && (ign & ~0x180000000ULL) == 0, "signals not reset:\n%s", sigs);
    free(sigs);

    /* stdin is the exact body. */
    want = h_strdupf("%s/stdin", x.hx_dir);
    ht_expect_file(want, body, len, "stdin");
    free(want);

    /* Only the documented variables (and what sh adds itself). */
    want = h_strdupf("%s/env", x.hx_dir);
    env = h_read_file(want, NULL);
    free(want);
    cr_assert(env != NULL);
    for (char *line = env; *line != '\0';) {
        char *eol = strchr(line, '\n');
        size_t name_len = strcspn(line, "=");
        bool ok = false;

        for (int i = 0; allowed[i] != NULL; i++) {
            ok |= strlen(allowed[i]) == name_len && strncmp(line, allowed[i], name_len) == 0;
        }
        cr_expect(ok, "unexpected variable in the program's environment: %.*s",
                  (int)name_len, line);
        line = eol ? eol + 1 : line + strlen(line);
    }
    want = h_strdupf("HOOKD_EVENT_ID=%lld\n", ev);
    cr_expect(strstr(env, want) != NULL, "%s", env);
    free(want);
    cr_expect(strstr(env, "PATH=/usr/bin:/bin\n") != NULL, "%s", env);
    cr_expect(strstr(env, "HOOKD_EVENT_TYPE=NEW_MESSAGE\n") != NULL, "%s", env);
    cr_expect(strstr(env, "HOOKD_CHATBOT_ID=" HT_CHATBOT "\n") != NULL, "%s", env);
    cr_expect(strstr(env, "HOOKD_THREAD_ID=" HT_THREAD "\n") != NULL, "%s", env);
    cr_expect(strstr(env, "HOOKD_ROUTE=run\n") != NULL, "%s", env);
    cr_expect(strstr(env, "HOOKD_ATTEMPT=1\n") != NULL, "%s", env);
    want = h_strdupf("OUT=%s\n", x.hx_dir);
    cr_expect(strstr(env, want) != NULL, "%s", env);
    free(want);

    /* No socket, log file or other hookd descriptor was inherited. */
    want = h_strdupf("%s/fds", x.hx_dir);
    fds = h_read_file(want, NULL);
    free(want);
    cr_assert(fds != NULL);
    cr_expect(strstr(fds, "socket:") == NULL, "the program inherited a socket:\n%s", fds);
    cr_expect(strstr(fds, "anon_inode") == NULL, "the program inherited hookd's fds:\n%s",
              fds);
    cr_expect(strstr(fds, "hookd.log") == NULL, "the program inherited the log:\n%s", fds);

    free(env);
    free(fds);
    free(body);
    free(routes);
    free(script);
    h_ctx_finish(&x, NULL, NULL);
}


Test(handlers, exec_retry_code_then_done)
{
    struct h_ctx x;
    char *script, *routes, *body, *path;
    size_t len;
    long long ev;

    h_ctx_init(&x, "exec_retry");
    script = ht_script(x.hx_dir, "retry.sh",
                       "echo \"$HOOKD_ATTEMPT\" >> \"$OUT/attempts\"\n"
                       "if [ \"$HOOKD_ATTEMPT\" -lt 2 ]; then echo busy; exit 75; fi\n"
                       "echo 'second time'\n");
    routes = h_strdupf("{ name = \"run\"; handler = \"exec\"; options = { command = [ \"%s\" ];"
                       " env = { OUT = \"%s\"; }; }; " HT_FAST_RETRY " }", script, x.hx_dir);
    ht_start(&x, routes);

    body = h_user_event(2, &len);
    ev = ht_post(&x, body, len);
    ht_wait_job(&x, ev, "run", "done", 15000);
    ht_expect_job(&x, ev, "run", "attempts", "2");
    ht_expect_job(&x, ev, "run", "output", "second time\n");
    cr_expect(h_daemon_log_count(&x.hx_daemon, "exited with status 75") >= 1,
              "the retry's reason is not in the log");
    cr_expect(h_daemon_log_count(&x.hx_daemon, "job will retry") == 1);
    path = h_strdupf("%s/attempts", x.hx_dir);
    ht_expect_file(path, "1\n2\n", 4, "attempts");

    free(path);
    free(body);
    free(routes);
    free(script);
    h_ctx_finish(&x, NULL, NULL);
}


Test(handlers, exec_failures_signals_and_early_stdin_close)
{
    struct h_ctx x;
    char *bad, *sig, *nostdin, *routes, *body, *big, *question;
    size_t len;
    long long ev;

    h_ctx_init(&x, "exec_fail");
    bad = ht_script(x.hx_dir, "bad.sh", "echo 'bad input'\nexit 3\n");
    /* hookd's workers block SIGTERM: the program must not inherit that. */
    sig = ht_script(x.hx_dir, "sig.sh", "kill -TERM $$\nsleep 5\nexit 0\n");
    /* Closes stdin at once: hookd meets EPIPE on a body bigger than a pipe. */
    nostdin = ht_script(x.hx_dir, "nostdin.sh", "exec 0<&-\nsleep 0.2\necho fine\n");
    routes = h_strdupf(
        "{ name = \"bad\"; handler = \"exec\"; options = { command = [ \"%s\" ]; }; "
        HT_FAST_RETRY " },\n"
        "{ name = \"sig\"; handler = \"exec\"; options = { command = [ \"%s\" ]; }; "
        HT_FAST_RETRY " },\n"
        "{ name = \"nostdin\"; handler = \"exec\"; options = { command = [ \"%s\" ]; }; "
        HT_FAST_RETRY " }", bad, sig, nostdin);
    ht_start(&x, routes);

    /* A 300 KB question. */
    big = malloc(300001);
    cr_assert(big != NULL);
    memset(big, 'q', 300000);
    big[300000] = '\0';
    question = h_strdupf("\"%s\"", big);
    body = h_user_event(3, &len);
    free(big);
    big = h_replace(body, "\"" H_SAMPLE_QUESTION "\"", question);
    ev = ht_post(&x, big, strlen(big));

    ht_wait_job(&x, ev, "bad", "dead", 15000);
    ht_expect_job(&x, ev, "bad", "attempts", "1");
    ht_expect_job(&x, ev, "bad", "last_error", "exited with status 3");
    ht_expect_job(&x, ev, "bad", "output", "bad input\n");
    ht_wait_job(&x, ev, "sig", "dead", 15000);
    ht_expect_job(&x, ev, "sig", "attempts", "1");
    ht_expect_job(&x, ev, "sig", "last_error", "killed by signal 15");
    ht_wait_job(&x, ev, "nostdin", "done", 15000);
    ht_expect_job(&x, ev, "nostdin", "output", "fine\n");

    free(question);
    free(big);
    free(body);
    free(routes);
    free(bad);
    free(sig);
    free(nostdin);
    h_ctx_finish(&x, NULL, NULL);
}


Test(handlers, exec_timeout_kills_the_process_group)
{
    struct h_ctx x;
    char *script, *routes, *body, *path;
    const char *names[2] = {"short", "routecap"};
    size_t len;
    long long ev, start;

    h_ctx_init(&x, "exec_timeout");
    script = ht_script(x.hx_dir, "sleepy.sh",
                       "echo $$ > \"$OUT/pid.$HOOKD_ROUTE\"\n"
                       "sleep 30 &\n"
                       "echo $! > \"$OUT/bg.$HOOKD_ROUTE\"\n"
                       "echo started\n"
                       "wait\n");
    /* An explicit timeout, and one taken from the route's (1000 less 100). */
    routes = h_strdupf(
        "{ name = \"short\"; handler = \"exec\"; options = { command = [ \"%s\" ];"
        " timeout = 700; env = { OUT = \"%s\"; }; }; retry = { attempts = 1; };"
        " timeout = 10000; },\n"
        "{ name = \"routecap\"; handler = \"exec\"; options = { command = [ \"%s\" ];"
        " timeout = 60000; env = { OUT = \"%s\"; }; }; retry = { attempts = 1; };"
        " timeout = 1000; }", script, x.hx_dir, script, x.hx_dir);
    ht_start(&x, routes);

    body = h_user_event(4, &len);
    start = h_now_ms();
    ev = ht_post(&x, body, len);
    ht_wait_job(&x, ev, "short", "dead", 10000);
    ht_wait_job(&x, ev, "routecap", "dead", 10000);
    cr_expect(h_now_ms() - start < 8000, "the timeouts took %lld ms", h_now_ms() - start);
    ht_expect_job(&x, ev, "short", "last_error", "timed out after 700 ms");
    ht_expect_job(&x, ev, "routecap", "last_error", "timed out after 900 ms");
    ht_expect_job(&x, ev, "short", "output", "started\n");
    cr_expect(h_daemon_log_count(&x.hx_daemon, "worker replaced") == 0,
              "the program outlived the route's timeout");

    for (int i = 0; i < 2; i++) {
        pid_t sh, bg;
        long long until = h_now_ms() + 3000;

        path = h_strdupf("%s/pid.%s", x.hx_dir, names[i]);
        sh = ht_read_pid(path);
        free(path);
        path = h_strdupf("%s/bg.%s", x.hx_dir, names[i]);
        bg = ht_read_pid(path);
        free(path);

        /* hookd reaped its child: not even a zombie is left. */
        errno = 0;
        cr_expect(kill(sh, 0) != 0 && errno == ESRCH, "%s: pid %d still exists", names[i],
                  (int)sh);
        /* The grandchild died with the group (its reaper is init). */
        while (ht_pid_alive(bg) && h_now_ms() < until) {
            h_sleep_ms(50);
        }
        cr_expect(!ht_pid_alive(bg), "%s: background pid %d survived", names[i], (int)bg);
    }

    free(body);
    free(routes);
    free(script);
    h_ctx_finish(&x, NULL, NULL);
}


Test(handlers, exec_output_is_capped)
{
    struct h_ctx x;
    char *script, *routes, *body, *want;
    size_t len;
    long long ev;

    h_ctx_init(&x, "exec_cap");
    /* 200 KB, three times a pipe's buffer, then exit 0. */
    script = ht_script(x.hx_dir, "chatty.sh", "head -c 200000 /dev/zero | tr '\\0' x\n");
    routes = h_strdupf("{ name = \"run\"; handler = \"exec\"; options = { command = [ \"%s\" ];"
                       " max_output = 100; timeout = 5000; }; }", script);
    ht_start(&x, routes);

    body = h_user_event(5, &len);
    ev = ht_post(&x, body, len);
    ht_wait_job(&x, ev, "run", "done", 15000);
    want = malloc(101);
    cr_assert(want != NULL);
    memset(want, 'x', 100);
    want[100] = '\0';
    ht_expect_job(&x, ev, "run", "output", want);

    free(want);
    free(body);
    free(routes);
    free(script);
    h_ctx_finish(&x, NULL, NULL);
}


/* Case C25: hostile visitor text reaches the program only as data. */
Test(handlers, exec_c25_hostile_fields)
{
    struct h_ctx x;
    char *script, *routes, *pwn, *line;
    char *values[9];
    char *bodies[19];
    long long ids[19];
    char *msg = h_sample("new_message_user.json", NULL);
    char *lead = h_sample("new_lead.json", NULL);
    char *env_marker, *pattern;
    size_t n = 0;
    glob_t g;

    h_ctx_init(&x, "c25");
    pwn = h_strdupf("%s/cgpt_pwn", x.hx_dir);
    line = malloc(10241);
    cr_assert(line != NULL);
    for (int i = 0; i < 10240; i++) {
        line[i] = (char)('a' + i % 26);
    }
    line[10240] = '\0';
    values[0] = h_strdupf("$(touch %s1)", pwn);
    values[1] = h_strdupf("`touch %s2`", pwn);
    values[2] = h_strdupf("x; touch %s3", pwn);
    values[3] = h_strdupf("a'||'b");
    values[4] = h_strdupf("--help");
    values[5] = h_strdupf("first line\ntouch %s4", pwn);
    values[6] = h_strdupf("Ada'); DROP TABLE events;--");
    values[7] = h_strdupf("%%s%%s%%s%%n");
    values[8] = line;

    script = ht_script(x.hx_dir, "copy.sh",
                       "cat > \"$OUT/in.$HOOKD_EVENT_ID\"\n"
                       "printf '%s' \"$HOOKD_THREAD_ID\" > \"$OUT/thread.$HOOKD_EVENT_ID\"\n");
    routes = h_strdupf("{ name = \"copy\"; handler = \"exec\"; options = { command = [ \"%s\" ];"
                       " env = { OUT = \"%s\"; }; }; }", script, x.hx_dir);
    ht_start(&x, routes);

    for (int i = 0; i < 9; i++) {
        char *q = ht_json_quote(values[i]);
        char *tmp;

        bodies[n] = h_replace(msg, "\"" H_SAMPLE_QUESTION "\"", q);
        ids[n] = ht_post(&x, bodies[n], strlen(bodies[n]));
        n++;
        tmp = h_replace(lead, "\"Jordan Lee\"", q);
        bodies[n] = h_replace(tmp, "\"Lee & Daughters Bakery\"", q);
        free(tmp);
        ids[n] = ht_post(&x, bodies[n], strlen(bodies[n]));
        n++;
        free(q);
    }
    /* The thread id reaches the program through its environment. */
    env_marker = h_strdupf("$(touch %s/cgpt_envpwn6)", x.hx_dir);
    {
        char *q = ht_json_quote(env_marker);

        bodies[n] = h_replace(msg, "\"" HT_THREAD "\"", q);
        free(q);
        ids[n] = ht_post(&x, bodies[n], strlen(bodies[n]));
        n++;
    }

    for (size_t i = 0; i < n; i++) {
        char *path = h_strdupf("%s/in.%lld", x.hx_dir, ids[i]);

        ht_wait_job(&x, ids[i], "copy", "done", 30000);
        ht_expect_file(path, bodies[i], strlen(bodies[i]), "the program's stdin");
        cr_expect_eq(h_events_with_body(&x, bodies[i], strlen(bodies[i])), 1);
        free(path);
    }
    {
        char *path = h_strdupf("%s/thread.%lld", x.hx_dir, ids[n - 1]);

        ht_expect_file(path, env_marker, strlen(env_marker), "HOOKD_THREAD_ID");
        free(path);
    }

    /* Nothing ran, here or in /tmp; the events table is whole. */
    pattern = h_strdupf("%s/cgpt_*pwn*", x.hx_dir);
    for (int i = 0; i < 2; i++) {
        int rc = glob(i == 0 ? pattern : "/tmp/cgpt_pwn*", 0, NULL, &g);

        cr_expect(rc == GLOB_NOMATCH, "%s exists", rc == 0 ? g.gl_pathv[0] : "a match");
        if (rc == 0) {
            globfree(&g);
        }
    }
    cr_expect_eq(h_events(&x), (long)n);
    cr_expect_eq(h_sql_long(x.hx_db.hd_conninfo, "SELECT count(*) FROM hookd.jobs WHERE "
                            "status = 'done'"), (long)n);

    {
        char chunk[41];
        const char *forbidden[] = {
            "cgpt_pwn", "cgpt_envpwn", "DROP TABLE", "%s%s%s%n", "a'||'b", "Ada'",
            "Jordan Lee", "Lee & Daughters", chunk, NULL
        };

        memcpy(chunk, line + 1000, 40);
        chunk[40] = '\0';
        h_ctx_finish(&x, forbidden, NULL);
    }
    for (size_t i = 0; i < n; i++) {
        free(bodies[i]);
    }
    for (int i = 0; i < 9; i++) {
        free(values[i]);
    }
    free(env_marker);
    free(pattern);
    free(pwn);
    free(msg);
    free(lead);
    free(routes);
    free(script);
}


/* ---- forward ------------------------------------------------------------- */

/* A forward route to srv; extra goes inside options. */
static char *
ht_forward_route(const char *name, struct fake_http *srv, const char *extra, const char *retry)
{
    char *url = fh_url(srv, "/hook");
    char *r = h_strdupf("{ name = \"%s\"; handler = \"forward\"; options = { url = \"%s\";"
                        " cacert = \"%s/cert.pem\"; %s }; %s timeout = 10000; }", name, url,
                        h_env("HOOKD_TEST_TLS_DIR"), extra ? extra : "",
                        retry ? retry : HT_FAST_RETRY);

    free(url);
    return r;
}


Test(handlers, forward_done_body_and_headers)
{
    struct h_ctx x;
    struct fake_http *srv = fh_start(true);
    struct fh_request *req;
    char *routes, *body, *v, *want;
    char mac[65];
    size_t len;
    long long ev;

    h_ctx_init(&x, "fwd_done");
    routes = ht_forward_route("fwd", srv, "sign_secret = \"" HT_SIGN_SECRET "\";"
                              " headers = { X-Api-Key = \"" HT_API_KEY "\"; };", NULL);
    ht_start(&x, routes);

    body = h_user_event(10, &len);
    ev = ht_post(&x, body, len);
    ht_wait_job(&x, ev, "fwd", "done", 15000);
    ht_expect_job(&x, ev, "fwd", "output", "HTTP 200");
    cr_assert_eq(fh_count(srv), 1);

    req = fh_request(srv, 0);
    cr_assert(req != NULL);
    cr_expect_str_eq(req->fr_method, "POST");
    cr_expect_str_eq(req->fr_path, "/hook");
    cr_expect(req->fr_body_len == len && memcmp(req->fr_body, body, len) == 0,
              "the body arrived changed (%zu bytes, want %zu)", req->fr_body_len, len);
    v = fh_header(req, "Content-Type");
    cr_expect(v != NULL && strcmp(v, "application/json") == 0, "Content-Type %s", v);
    free(v);
    v = fh_header(req, "X-Api-Key");
    cr_expect(v != NULL && strcmp(v, HT_API_KEY) == 0, "X-Api-Key missing");
    free(v);
    h_hmac_hex(HT_SIGN_SECRET, body, len, mac);
    want = h_strdupf("sha256=%s", mac);
    v = fh_header(req, "X-HOOKD-SIGNATURE");
    cr_expect(v != NULL && strcmp(v, want) == 0, "signature %s, want %s", v, want);
    free(v);
    free(want);

    fh_request_free(req);
    fh_stop(srv);
    free(body);
    free(routes);
    h_ctx_finish(&x, (const char *const[]){HT_API_KEY, HT_SIGN_SECRET, NULL}, NULL);
}


Test(handlers, forward_plain_http_when_allowed)
{
    struct h_ctx x;
    struct fake_http *srv = fh_start(false);
    char *url = fh_url(srv, "/plain");
    char *routes, *body;
    size_t len;
    long long ev;

    h_ctx_init(&x, "fwd_http");
    routes = h_strdupf("{ name = \"fwd\"; handler = \"forward\"; options = { url = \"%s\";"
                       " allow_http = true; }; }", url);
    ht_start(&x, routes);
    body = h_user_event(11, &len);
    ev = ht_post(&x, body, len);
    ht_wait_job(&x, ev, "fwd", "done", 15000);
    cr_expect_eq(fh_count(srv), 1);

    fh_stop(srv);
    free(body);
    free(routes);
    free(url);
    h_ctx_finish(&x, NULL, NULL);
}


Test(handlers, forward_429_honours_retry_after)
{
    struct h_ctx x;
    struct fake_http *srv = fh_start(true);
    struct fh_request *r0, *r1;
    char *routes, *body;
    size_t len;
    long long ev;

    h_ctx_init(&x, "fwd_429");
    fh_push(srv, &(struct fh_answer){.fa_status = 429, .fa_retry_after = "1"});
    routes = ht_forward_route("fwd", srv, NULL, NULL);
    ht_start(&x, routes);

    body = h_user_event(12, &len);
    ev = ht_post(&x, body, len);
    ht_wait_job(&x, ev, "fwd", "done", 15000);
    ht_expect_job(&x, ev, "fwd", "attempts", "2");
    cr_assert_eq(fh_count(srv), 2);
    r0 = fh_request(srv, 0);
    r1 = fh_request(srv, 1);
    cr_expect(r1->fr_at_ms - r0->fr_at_ms >= 1000, "retried after %lld ms, before Retry-After",
              r1->fr_at_ms - r0->fr_at_ms);
    cr_expect(h_daemon_log_count(&x.hx_daemon, "HTTP 429, Retry-After 1 s") == 1);

    fh_request_free(r0);
    fh_request_free(r1);
    fh_stop(srv);
    free(body);
    free(routes);
    h_ctx_finish(&x, NULL, NULL);
}


struct ht_ra_script {
    pthread_mutex_t rs_lock;
    int rs_seen[3];
};

static const char *const ht_ra_markers[3] = {"ra-invalid", "ra-huge", "ra-past"};
static const char *const ht_ra_values[3] = {"1.5", "86400", "Fri, 01 Jan 1999 00:00:00 GMT"};


/* The first request of each marked conversation gets 429 with its Retry-After. */
static void
ht_ra_answer(const struct fh_request *req, struct fh_answer *ans, void *arg)
{
    struct ht_ra_script *rs = arg;

    for (int i = 0; i < 3; i++) {
        if (strstr(req->fr_body, ht_ra_markers[i]) != NULL) {
            pthread_mutex_lock(&rs->rs_lock);
            if (rs->rs_seen[i]++ == 0) {
                ans->fa_status = 429;
                ans->fa_retry_after = ht_ra_values[i];
            }
            pthread_mutex_unlock(&rs->rs_lock);
        }
    }
}


/* Case C18 end to end: invalid is ignored, huge is capped, past is now. */
Test(handlers, forward_retry_after_c18)
{
    struct h_ctx x;
    struct fake_http *srv = fh_start(true);
    struct ht_ra_script rs = {PTHREAD_MUTEX_INITIALIZER, {0, 0, 0}};
    char *routes, *sample, *body, *wait;
    long long ev[3];

    h_ctx_init(&x, "fwd_c18");
    fh_set_handler(srv, ht_ra_answer, &rs);
    routes = ht_forward_route("fwd", srv, NULL, NULL);
    ht_start(&x, routes);

    sample = h_user_event(13, &(size_t){0});
    for (int i = 0; i < 3; i++) {
        body = h_replace(sample, HT_THREAD, ht_ra_markers[i]);
        ev[i] = ht_post(&x, body, strlen(body));
        free(body);
    }
    ht_wait_job(&x, ev[0], "fwd", "done", 15000);
    ht_wait_job(&x, ev[2], "fwd", "done", 15000);
    ht_expect_job(&x, ev[0], "fwd", "attempts", "2");
    ht_expect_job(&x, ev[2], "fwd", "attempts", "2");
    cr_expect(h_daemon_log_count(&x.hx_daemon, "Retry-After ignored (not valid)") == 1);
    cr_expect(h_daemon_log_count(&x.hx_daemon, "HTTP 429, Retry-After 0 s") == 1);

    /* 86400 waits the cap, an hour, and blocks nobody else. */
    ht_wait_job(&x, ev[1], "fwd", "pending", 15000);
    ht_expect_job(&x, ev[1], "fwd", "last_error", "HTTP 429, Retry-After 3600 s");
    wait = ht_job(&x, ev[1], "fwd", "extract(epoch FROM run_at - now())::int");
    cr_expect(wait != NULL && atoi(wait) > 3500 && atoi(wait) <= 3600, "waits %s s", wait);
    free(wait);

    fh_stop(srv);
    free(sample);
    free(routes);
    h_ctx_finish(&x, NULL, NULL);
}


Test(handlers, forward_500_retries_404_fails)
{
    struct h_ctx x;
    struct fake_http *s500 = fh_start(true);
    struct fake_http *s404 = fh_start(true);
    char *routes, *r500, *r404, *body;
    size_t len;
    long long ev;

    h_ctx_init(&x, "fwd_5xx");
    fh_push(s500, &(struct fh_answer){.fa_status = 500, .fa_body = "{\"error\":\"boom\"}"});
    fh_set_default(s404, &(struct fh_answer){.fa_status = 404});
    r500 = ht_forward_route("f500", s500, NULL, NULL);
    r404 = ht_forward_route("f404", s404, NULL, NULL);
    routes = h_strdupf("%s,\n%s", r500, r404);
    ht_start(&x, routes);

    body = h_user_event(14, &len);
    ev = ht_post(&x, body, len);
    ht_wait_job(&x, ev, "f500", "done", 15000);
    ht_expect_job(&x, ev, "f500", "attempts", "2");
    cr_expect(h_daemon_log_count(&x.hx_daemon, "reason=\"HTTP 500\"") == 1);
    ht_wait_job(&x, ev, "f404", "dead", 15000);
    ht_expect_job(&x, ev, "f404", "attempts", "1");
    ht_expect_job(&x, ev, "f404", "last_error", "HTTP 404");
    ht_expect_job(&x, ev, "f404", "output", "HTTP 404");
    h_sleep_ms(500);
    cr_expect_eq(fh_count(s404), 1, "a 404 was retried");
    cr_expect_eq(fh_count(s500), 2);

    fh_stop(s500);
    fh_stop(s404);
    free(body);
    free(r500);
    free(r404);
    free(routes);
    h_ctx_finish(&x, NULL, NULL);
}


Test(handlers, forward_no_answer_times_out_and_retries)
{
    struct h_ctx x;
    struct fake_http *srv = fh_start(true);
    char *routes, *body;
    size_t len;
    long long ev, start;

    h_ctx_init(&x, "fwd_never");
    fh_push(srv, &(struct fh_answer){.fa_never = true});
    routes = ht_forward_route("fwd", srv, "timeout = 500;", NULL);
    ht_start(&x, routes);

    body = h_user_event(15, &len);
    start = h_now_ms();
    ev = ht_post(&x, body, len);
    ht_wait_job(&x, ev, "fwd", "done", 15000);
    cr_expect(h_now_ms() - start < 8000);
    ht_expect_job(&x, ev, "fwd", "attempts", "2");
    cr_expect_eq(fh_count(srv), 2);
    cr_expect(h_daemon_log_count(&x.hx_daemon, "timed out after 500 ms") == 1);
    cr_expect(h_daemon_log_count(&x.hx_daemon, "worker replaced") == 0);

    fh_stop(srv);
    free(body);
    free(routes);
    h_ctx_finish(&x, NULL, NULL);
}


Test(handlers, forward_verifies_the_certificate)
{
    struct h_ctx x;
    struct fake_http *srv = fh_start(true);
    char *url = fh_url(srv, "/hook");
    char *routes, *trusted, *body, *err;
    size_t len;
    long long ev;

    h_ctx_init(&x, "fwd_cert");
    /* Without cacert the self-signed test certificate is refused. */
    trusted = ht_forward_route("trusted", srv, NULL, NULL);
    routes = h_strdupf("{ name = \"untrusted\"; handler = \"forward\"; options = {"
                       " url = \"%s\"; }; retry = { attempts = 2; first_delay = 100; }; },\n%s",
                       url, trusted);
    ht_start(&x, routes);

    body = h_user_event(16, &len);
    ev = ht_post(&x, body, len);
    ht_wait_job(&x, ev, "trusted", "done", 15000);
    ht_wait_job(&x, ev, "untrusted", "dead", 15000);
    ht_expect_job(&x, ev, "untrusted", "attempts", "2");
    err = ht_job(&x, ev, "untrusted", "last_error");
    cr_expect(err != NULL && strncmp(err, "could not post: ", 16) == 0, "last_error %s", err);
    free(err);
    cr_expect(h_daemon_log_count(&x.hx_daemon, "job will retry") == 1);
    cr_expect_eq(fh_count(srv), 1, "a request got through without verification");
    cr_expect(fh_handshake_failures(srv) >= 2);

    fh_stop(srv);
    free(body);
    free(url);
    free(trusted);
    free(routes);
    h_ctx_finish(&x, NULL, NULL);
}


/* ---- options refused at start -------------------------------------------- */

Test(handlers, bad_options_stop_the_start)
{
    struct h_ctx x;
    char *dir, *plain, *notexec;
    const char *secret_url = "http://hooks.example.test/T0KEN-SECRET-9f8e7d";
    struct {
        const char *options;
        const char *handler;
        const char *want;
    } cases[] = {
        {"command = [ \"bin/true\" ];", "exec", "must be an absolute path"},
        {NULL, "exec", "is not an executable file"},
        {"command = [ \"/bin/true\" ]; shell = true;", "exec", "unknown option \"shell\""},
        {"command = [ \"/bin/true\" ]; env = { HOOKD_ROUTE = \"x\"; };", "exec",
         "not a usable variable name"},
        {"command = [ \"/bin/true\" ]; retry_codes = [ 0 ];", "exec", "retry_codes[0]"},
        {NULL, "forward", "url must start with https://"},
        {"url = \"https://127.0.0.1/\"; headers = { Host = \"evil\"; };", "forward",
         "not a header name"},
        {"url = \"https://127.0.0.1/\"; sign_secret = \"short\";", "forward",
         "at least 16 characters"},
        {"url = \"ftp://127.0.0.1/\";", "forward", "url must start with https://"},
    };

    h_ctx_init(&x, "bad_opts");
    dir = ht_plugin_dir();
    notexec = h_strdupf("%s/notexec.sh", x.hx_dir);
    h_write_file(notexec, "#!/bin/sh\n", 10, 0644);
    cases[1].options = h_strdupf("command = [ \"%s\" ];", notexec);
    plain = h_strdupf("url = \"%s\";", secret_url);
    cases[5].options = plain;

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct h_daemon d;
        char *log = h_strdupf("%s/bad%zu.log", x.hx_dir, i);
        char *conf = h_strdupf("%s/bad%zu.conf", x.hx_dir, i);
        char *text;

        x.hx_cfg.hc_top_extra = h_strdupf(
            "dispatch = { plugin_dir = \"%s\"; workers = 1; };\n"
            "routes = ( { name = \"r\"; handler = \"%s\"; options = { %s }; } );", dir,
            cases[i].handler, cases[i].options);
        h_config_write(conf, &x.hx_cfg);
        free((char *)x.hx_cfg.hc_top_extra);
        x.hx_cfg.hc_top_extra = NULL;
        h_daemon_spawn(&d, conf, log);
        cr_assert(h_daemon_wait_exit(&d, 10000), "case %zu: hookd did not exit", i);
        text = h_daemon_log(&d);
        cr_expect(WIFEXITED(d.hd_status) && WEXITSTATUS(d.hd_status) == 2,
                  "case %zu: want exit 2; log:\n%s", i, text);
        cr_expect(strstr(text, cases[i].want) != NULL, "case %zu: want \"%s\" in:\n%s", i,
                  cases[i].want, text);
        cr_expect(strstr(text, "T0KEN-SECRET") == NULL, "case %zu: the url was logged", i);
        free(text);
        free(log);
        free(conf);
    }

    free((char *)cases[1].options);
    free(plain);
    free(notexec);
    free(dir);
    h_db_drop(&x.hx_db);
}


/*
 * A command's output is whatever bytes it wrote; PostgreSQL text takes only
 * UTF-8. Bytes that are not UTF-8 are kept as '?', and a character cut by
 * max_output is dropped whole, so the result is recorded and the job ends
 * done instead of failing to record and running again.
 */
Test(handlers, exec_output_that_is_not_utf8_is_recorded_and_the_job_is_done)
{
    struct h_ctx x;
    char *latin1, *cut, *routes, *body;
    size_t len;
    long long ev;

    h_ctx_init(&x, "exec_utf8");
    latin1 = ht_script(x.hx_dir, "latin1.sh", "printf 'caf\\351 ok\\n'\n");
    /* "ab" then U+20AC (3 bytes), with max_output 4: the euro sign is cut. */
    cut = ht_script(x.hx_dir, "cut.sh", "printf 'ab\\342\\202\\254'\n");
    routes = h_strdupf(
        "{ name = \"latin1\"; handler = \"exec\"; options = { command = [ \"%s\" ]; }; "
        HT_FAST_RETRY " },\n"
        "{ name = \"cut\"; handler = \"exec\"; options = { command = [ \"%s\" ];"
        " max_output = 4; }; " HT_FAST_RETRY " }", latin1, cut);
    ht_start(&x, routes);
    body = h_user_event(7, &len);
    ev = ht_post(&x, body, len);
    ht_wait_job(&x, ev, "latin1", "done", 15000);
    ht_expect_job(&x, ev, "latin1", "attempts", "1");
    ht_expect_job(&x, ev, "latin1", "output", "caf? ok\n");
    ht_wait_job(&x, ev, "cut", "done", 15000);
    ht_expect_job(&x, ev, "cut", "attempts", "1");
    ht_expect_job(&x, ev, "cut", "output", "ab");
    free(body);
    free(routes);
    free(cut);
    free(latin1);
    h_ctx_finish(&x, NULL, NULL);
}


/*
 * A handler that finishes while PostgreSQL is away has done its work: its
 * done is recorded once the database is back, and it is not run again when
 * its lease runs out.
 */
Test(handlers, done_during_a_database_outage_is_recorded_after_it_and_not_run_again,
     .timeout = 90)
{
    struct h_ctx x;
    struct h_cluster pg;
    char *dir, *pgdir, *script, *runs, *plugins, *body, *text;
    size_t len;
    long long ev;
    const char *allowed[] = {"database", "record", "listen", "claim", "lease", "connect",
                             NULL};

    h_ctx_init(&x, "done_outage");
    dir = h_tmpdir("pgown");
    pgdir = h_strdupf("%s/pg", dir);
    h_cluster_start(&pg, pgdir, h_free_port());
    snprintf(x.hx_db.hd_conninfo, sizeof(x.hx_db.hd_conninfo), "%s", pg.hc_conninfo);
    x.hx_cfg.hc_query_timeout = 2;
    x.hx_cfg.hc_connect_timeout = 2;
    runs = h_strdupf("%s/runs", x.hx_dir);
    script = ht_script(x.hx_dir, "slow.sh", "echo run >> \"$RUNS\"\nsleep 3\n");
    plugins = ht_plugin_dir();
    x.hx_cfg.hc_top_extra = h_strdupf(
        "dispatch = {\n  plugin_dir = \"%s\";\n  workers = 1;\n  poll_interval = 200;\n"
        "  lease = 4;\n};\nroutes = (\n{ name = \"slow\"; handler = \"exec\"; options = {"
        " command = [ \"%s\" ]; env = { RUNS = \"%s\"; }; }; }\n);", plugins, script, runs);
    h_ctx_start(&x);
    body = h_user_event(9, &len);
    ev = ht_post(&x, body, len);
    ht_wait_job(&x, ev, "slow", "running", 5000);

    /* The handler finishes (3 s) while the database is away (5 s). */
    cr_assert(h_cluster_stop(&pg), "pg.sh stop failed");
    h_sleep_ms(5000);
    h_cluster_start(&pg, pgdir, pg.hc_port);
    ht_wait_job(&x, ev, "slow", "done", 20000);
    ht_expect_job(&x, ev, "slow", "attempts", "1");
    /* Past another lease: still one run. */
    h_sleep_ms(5000);
    text = h_read_file(runs, NULL);
    cr_assert_str_eq(text, "run\n", "the handler ran again: %s", text);
    h_ctx_finish(&x, NULL, allowed);
    (void)h_cluster_stop(&pg);
    free(text);
    free(body);
    free((char *)x.hx_cfg.hc_top_extra);
    free(plugins);
    free(script);
    free(runs);
    free(pgdir);
    free(dir);
}
