/* SPDX-License-Identifier: MIT */
/*
 * Configuration and lifecycle: a daemon without a usable secret never
 * starts (C06 a-d); an unreachable database gives 503 (C06 e); SIGHUP swaps
 * secrets and refuses a broken file (C05 step 2, C26 d-e); SIGTERM exits 0.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/wait.h>

#include <criterion/criterion.h>

#include "support/harness.h"

#define OLD_SECRET "config-old-secret-71c0de55"
#define NEW_SECRET "config-new-secret-a83f19b2"

TestSuite(config, .fini = h_suite_fini, .timeout = 60);


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


/*
 * Starts hookd with x's config and expects it to exit non-zero within 5 s
 * with one line naming FILE:LINE and a setting that contains "secret", not
 * holding value, and without ever accepting a connection.
 */
static void
expect_refused(struct h_ctx *x, const char *value)
{
    long long t0;
    bool opened = false;
    char *log;
    char *where;
    int code;

    h_config_write(x->hx_conf, &x->hx_cfg);
    t0 = h_now_ms();
    h_daemon_spawn(&x->hx_daemon, x->hx_conf, x->hx_log);
    while (!h_daemon_wait_exit(&x->hx_daemon, 0) && h_now_ms() - t0 < 5000) {
        opened = opened || h_port_open(x->hx_port);
        h_sleep_ms(20);
    }
    cr_assert(!x->hx_daemon.hd_running, "hookd still running 5 s after a bad config");
    code = h_daemon_stop(&x->hx_daemon);
    cr_expect(code != 0, "hookd exited 0 with a bad config");
    cr_expect(!opened, "the port opened although the config is bad");
    cr_expect(!h_port_open(x->hx_port));

    log = h_daemon_log(&x->hx_daemon);
    where = h_strdupf("%s:", x->hx_conf);
    cr_expect_eq(count_lines(log), 1, "want one line, got:\n%s", log);
    cr_expect(strstr(log, where) != NULL, "the line does not name FILE:LINE: %s", log);
    cr_expect(strcasestr(log, "secret") != NULL, "the line names no secret setting: %s", log);
    if (value != NULL && *value != '\0') {
        cr_expect(strstr(log, value) == NULL, "the line shows the secret's value");
    }
    free(where);
    free(log);
    h_db_drop(&x->hx_db);
}


Test(config, endpoint_without_any_secret_is_refused_at_start)
{
    struct h_ctx x;

    h_ctx_init(&x, "c06a");
    x.hx_cfg.hc_secrets[0] = NULL;
    expect_refused(&x, NULL);
}


Test(config, empty_secret_is_refused_at_start)
{
    struct h_ctx x;

    h_ctx_init(&x, "c06b");
    x.hx_cfg.hc_secrets[0] = "";
    expect_refused(&x, NULL);
}


Test(config, secret_shorter_than_16_is_refused_without_showing_it)
{
    struct h_ctx x;

    h_ctx_init(&x, "c06c");
    x.hx_cfg.hc_secrets[0] = "Sh0rtSecret-15c";
    expect_refused(&x, "Sh0rtSecret-15c");
}


Test(config, secret_file_of_mode_000_is_refused_even_for_root)
{
    struct h_ctx x;
    char *path;

    h_ctx_init(&x, "c06d");
    path = h_secret_file(x.hx_dir, "hookd.key", "mode-000-secret-value-9f3b", 0000);
    x.hx_cfg.hc_secrets[0] = NULL;
    x.hx_cfg.hc_secret_files[0] = path;
    expect_refused(&x, "mode-000-secret-value-9f3b");
    free(path);
}


Test(config, world_readable_secret_file_is_refused)
{
    struct h_ctx x;
    char *path;

    h_ctx_init(&x, "c06d2");
    path = h_secret_file(x.hx_dir, "hookd.key", "world-readable-secret-4c1e", 0644);
    x.hx_cfg.hc_secrets[0] = NULL;
    x.hx_cfg.hc_secret_files[0] = path;
    expect_refused(&x, "world-readable-secret-4c1e");
    free(path);
}


Test(config, secret_file_of_mode_600_is_used)
{
    struct h_ctx x;
    char *path;
    size_t len;
    char *body;
    const char *forbidden[] = {"file-secret-value-5d0a7e21", NULL};

    h_ctx_init(&x, "secretfile");
    path = h_secret_file(x.hx_dir, "hookd.key", "file-secret-value-5d0a7e21", 0600);
    x.hx_cfg.hc_secrets[0] = NULL;
    x.hx_cfg.hc_secret_files[0] = path;
    h_ctx_start(&x);
    body = h_user_event(1, &len);
    cr_expect_eq(h_post_signed(x.hx_port, H_DEFAULT_PATH, "file-secret-value-5d0a7e21", body,
                               len, NULL), 200, "the file's secret (its newline dropped)");
    cr_expect_eq(h_events(&x), 1);
    free(body);
    free(path);
    h_ctx_finish(&x, forbidden, NULL);
}


/*
 * C06 e. Chosen behaviour (contract): with the database unreachable hookd
 * starts anyway, does not log "hookd ready", and answers every webhook 503
 * with Retry-After, never 2xx, while it retries the database.
 */
Test(config, unreachable_database_gives_503_with_retry_after)
{
    struct h_ctx x;
    long long t0;
    char *conninfo;
    const char *allowed[] = {"database", "connect", "postgres", NULL};

    h_ctx_init(&x, "c06e");
    conninfo = h_strdupf("host=127.0.0.1 port=%d user=hookd dbname=hookd", h_free_port());
    x.hx_cfg.hc_conninfo = conninfo;
    x.hx_cfg.hc_retry_after = 9;
    h_config_write(x.hx_conf, &x.hx_cfg);
    h_daemon_spawn(&x.hx_daemon, x.hx_conf, x.hx_log);
    t0 = h_now_ms();
    while (!h_port_open(x.hx_port) && h_now_ms() - t0 < 20000) {
        cr_assert(!h_daemon_wait_exit(&x.hx_daemon, 0), "hookd exited; log:\n%s",
                  h_daemon_log(&x.hx_daemon));
        h_sleep_ms(50);
    }
    cr_assert(h_port_open(x.hx_port), "hookd did not listen within 20 s");

    for (unsigned i = 0; i < 3; i++) {
        struct h_resp r;
        size_t len;
        char *body = h_user_event(i, &len);
        char *retry;

        h_post_signed(x.hx_port, H_DEFAULT_PATH, x.hx_cfg.hc_secrets[0], body, len, &r);
        h_assert_status(&r, 503, "event with the database unreachable");
        retry = h_resp_header(&r, "Retry-After");
        cr_expect(retry != NULL && strcmp(retry, "9") == 0, "Retry-After: %s",
                  retry ? retry : "(none)");
        cr_expect(strstr(r.hr_body, "\"error\":\"unavailable\"") != NULL, "body %s",
                  r.hr_body);
        free(retry);
        h_resp_free(&r);
        free(body);
    }
    cr_expect_eq(h_daemon_log_count(&x.hx_daemon, "hookd ready"), 0,
                 "\"hookd ready\" logged with no database");
    h_ctx_finish(&x, NULL, allowed);
    free(conninfo);
}


Test(config, sigterm_exits_0_promptly_and_closes_the_port)
{
    struct h_ctx x;
    size_t len;
    char *body;
    long long t0;

    h_ctx_init(&x, "sigterm");
    h_ctx_start(&x);
    body = h_user_event(1, &len);
    cr_expect_eq(h_post_signed(x.hx_port, H_DEFAULT_PATH, x.hx_cfg.hc_secrets[0], body, len,
                               NULL), 200);
    free(body);
    t0 = h_now_ms();
    h_daemon_signal(&x.hx_daemon, SIGTERM);
    cr_assert(h_daemon_wait_exit(&x.hx_daemon, 10000), "no exit within 10 s of SIGTERM");
    cr_expect(WIFEXITED(x.hx_daemon.hd_status) && WEXITSTATUS(x.hx_daemon.hd_status) == 0,
              "wait status %d", x.hx_daemon.hd_status);
    cr_log_info("SIGTERM to exit: %lld ms", h_now_ms() - t0);
    cr_expect(!h_port_open(x.hx_port), "port still open after exit");
    cr_expect_eq(h_events(&x), 1);
    h_ctx_finish(&x, NULL, NULL);
}


/* POSTs a new event signed with secret; returns the status. */
static int
post_new(struct h_ctx *x, const char *secret, unsigned *n)
{
    size_t len;
    char *body = h_user_event((*n)++, &len);
    int status = h_post_signed(x->hx_port, H_DEFAULT_PATH, secret, body, len, NULL);

    free(body);
    return status;
}


Test(config, sighup_swaps_the_secret_list_and_keeps_serving)
{
    struct h_ctx x;
    unsigned n = 0;
    long long t0;
    int during = 0;
    const char *forbidden[] = {OLD_SECRET, NULL};

    h_ctx_init(&x, "reload");
    x.hx_cfg.hc_secrets[0] = NEW_SECRET;
    x.hx_cfg.hc_secrets[1] = OLD_SECRET;
    h_ctx_start(&x);
    cr_expect_eq(post_new(&x, OLD_SECRET, &n), 200, "old secret in the rotation window");
    cr_expect_eq(post_new(&x, NEW_SECRET, &n), 200, "new secret in the rotation window");

    /* Drop OLD; requests signed with NEW never fail around the reload. */
    x.hx_cfg.hc_secrets[1] = NULL;
    h_config_write(x.hx_conf, &x.hx_cfg);
    h_daemon_signal(&x.hx_daemon, SIGHUP);
    t0 = h_now_ms();
    while (h_daemon_log_count(&x.hx_daemon, "reload done") == 0 && h_now_ms() - t0 < 10000) {
        cr_expect_eq(post_new(&x, NEW_SECRET, &n), 200, "new secret during the reload");
        during++;
    }
    cr_assert(h_daemon_wait_log(&x.hx_daemon, "reload done", 1, 10000), "no \"reload done\"");
    cr_expect_eq(post_new(&x, OLD_SECRET, &n), 401, "old secret after the reload");
    cr_expect_eq(post_new(&x, NEW_SECRET, &n), 200, "new secret after the reload");
    cr_expect_eq(h_events(&x), 3 + during);
    x.hx_cfg.hc_secrets[1] = OLD_SECRET;     /* still checked against the log */
    h_ctx_finish(&x, forbidden, NULL);
}


Test(config, broken_config_on_sighup_is_refused_and_the_old_one_stays)
{
    struct h_ctx x;
    unsigned n = 0;
    const char *allowed[] = {"reload failed", NULL};
    const char *forbidden[] = {"broken-reload-secret-0c4d", NULL};

    h_ctx_init(&x, "badreload");
    x.hx_cfg.hc_secrets[0] = NEW_SECRET;
    h_ctx_start(&x);
    cr_expect_eq(post_new(&x, NEW_SECRET, &n), 200);

    /* A syntax error. */
    h_replace_file(x.hx_conf, "endpoints = ( { path = \"/x\"; secrets = [ "
                   "\"broken-reload-secret-0c4d\" ] \n", 0600);
    h_daemon_signal(&x.hx_daemon, SIGHUP);
    cr_assert(h_daemon_wait_log(&x.hx_daemon, "reload failed", 1, 10000),
              "no \"reload failed\" for a syntax error");
    cr_expect_eq(post_new(&x, NEW_SECRET, &n), 200, "old config after a broken reload");
    cr_expect_eq(post_new(&x, "broken-reload-secret-0c4d", &n), 401);

    /* Valid syntax, invalid content: a secret that is too short. */
    x.hx_cfg.hc_secrets[0] = "too-short";
    h_config_write(x.hx_conf, &x.hx_cfg);
    h_daemon_signal(&x.hx_daemon, SIGHUP);
    cr_assert(h_daemon_wait_log(&x.hx_daemon, "reload failed", 2, 10000),
              "no \"reload failed\" for a short secret");
    x.hx_cfg.hc_secrets[0] = NEW_SECRET;
    cr_expect_eq(post_new(&x, NEW_SECRET, &n), 200, "old config after a refused reload");
    cr_expect_eq(h_daemon_log_count(&x.hx_daemon, "reload done"), 0);
    cr_expect_eq(h_events(&x), 3);
    h_ctx_finish(&x, forbidden, allowed);
}
