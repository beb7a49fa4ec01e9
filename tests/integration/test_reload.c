/* SPDX-License-Identifier: MIT */
/*
 * Reload (SIGHUP) the way operators and tools really change files: case
 * C26 (the config replaced by rename, or deleted and written again, as git
 * and editors do) and a secret change under continuous load, where a
 * request signed with a secret valid before and after must never fail.
 */
#include <criterion/criterion.h>

#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "support/harness.h"

TestSuite(reload, .fini = h_suite_fini, .timeout = 90);

#define SECRET_A "reload-secret-aaaaaaaaaaaa"
#define SECRET_B "reload-secret-bbbbbbbbbbbb"
#define SECRET_C "reload-secret-cccccccccccc"


static int
post_with(struct h_ctx *x, const char *secret, unsigned n)
{
    size_t len;
    char *body = h_user_event(n, &len);
    int status = h_post_signed(x->hx_port, H_DEFAULT_PATH, secret, body, len, NULL);

    free(body);
    return status;
}


/* Writes the config with these secrets by fn, then SIGHUP and waits for reload n. */
static void
reload_with(struct h_ctx *x, const char *s1, const char *s2, bool delete_first, int n)
{
    char *text;

    x->hx_cfg.hc_secrets[0] = s1;
    x->hx_cfg.hc_secrets[1] = s2;
    x->hx_cfg.hc_secrets[2] = NULL;
    text = h_config_text(&x->hx_cfg);
    if (delete_first) {
        /* rm, a moment without the file, then a new one (case C26 c). */
        cr_assert(unlink(x->hx_conf) == 0);
        h_sleep_ms(200);
        h_write_file(x->hx_conf, text, strlen(text), 0600);
    } else {
        /* A new file renamed over the old one (git, vim, mv; case C26 a and b). */
        h_replace_file(x->hx_conf, text, 0600);
    }
    free(text);
    h_daemon_signal(&x->hx_daemon, SIGHUP);
    cr_assert(h_daemon_wait_log(&x->hx_daemon, "reload done", n, 10000), "reload %d not done",
              n);
}


Test(reload, config_replaced_by_rename_or_rewrite_is_picked_up)
{
    struct h_ctx x;
    unsigned n = 1;

    h_ctx_init(&x, "reload_c26");
    x.hx_cfg.hc_secrets[0] = SECRET_A;
    h_ctx_start(&x);
    cr_assert_eq(post_with(&x, SECRET_A, n++), 200);

    reload_with(&x, SECRET_B, NULL, false, 1);
    cr_assert_eq(post_with(&x, SECRET_B, n++), 200);
    cr_assert_eq(post_with(&x, SECRET_A, n++), 401, "the old secret still worked");

    reload_with(&x, SECRET_C, NULL, true, 2);
    cr_assert_eq(post_with(&x, SECRET_C, n++), 200);
    cr_assert_eq(post_with(&x, SECRET_B, n++), 401);
    h_ctx_finish(&x, NULL, NULL);
}


struct load {
    struct h_ctx *l_x;
    atomic_uint l_next;                 /* distinct events for every request */
    atomic_bool l_stop;
    atomic_int l_sent;
    atomic_int l_failed;
    int l_first_failure;
};


static void *
load_main(void *arg)
{
    struct load *l = arg;

    while (!atomic_load(&l->l_stop)) {
        int status = post_with(l->l_x, SECRET_A, atomic_fetch_add(&l->l_next, 1));

        atomic_fetch_add(&l->l_sent, 1);
        if (status != 200 && atomic_fetch_add(&l->l_failed, 1) == 0) {
            l->l_first_failure = status;
        }
    }
    return NULL;
}


Test(reload, secret_change_under_load_fails_no_request_in_flight)
{
    struct h_ctx x;
    struct load l;
    pthread_t t[2];

    h_ctx_init(&x, "reload_load");
    x.hx_cfg.hc_secrets[0] = SECRET_A;
    x.hx_cfg.hc_secrets[1] = SECRET_B;
    h_ctx_start(&x);
    memset(&l, 0, sizeof(l));
    l.l_x = &x;
    atomic_store(&l.l_next, 1000);
    for (int i = 0; i < 2; i++) {
        cr_assert(pthread_create(&t[i], NULL, load_main, &l) == 0);
    }
    /* A stays valid throughout; B comes and goes, C comes. */
    for (int i = 1; i <= 6; i++) {
        reload_with(&x, SECRET_A, i % 2 ? SECRET_B : SECRET_C, false, i);
        h_sleep_ms(150);
    }
    atomic_store(&l.l_stop, true);
    for (int i = 0; i < 2; i++) {
        pthread_join(t[i], NULL);
    }
    cr_assert_gt(atomic_load(&l.l_sent), 10, "too little load to mean anything");
    cr_assert_eq(atomic_load(&l.l_failed), 0, "%d of %d requests failed (first: %d)",
                 atomic_load(&l.l_failed), atomic_load(&l.l_sent), l.l_first_failure);
    cr_assert_eq(post_with(&x, SECRET_B, 1), 401, "B was removed by the last reload");
    cr_assert_eq(h_events(&x), atomic_load(&l.l_sent), "an answered event is missing");
    h_ctx_finish(&x, NULL, NULL);
}


struct counted_load {
    struct h_ctx *c_x;
    atomic_uint c_next;
    atomic_int c_ok;
    atomic_bool c_stop;
};


static void *
counted_main(void *arg)
{
    struct counted_load *c = arg;

    while (!atomic_load(&c->c_stop)) {
        int status = post_with(c->c_x, SECRET_A, atomic_fetch_add(&c->c_next, 1));

        if (status == 200) {
            atomic_fetch_add(&c->c_ok, 1);
        } else if (status == 0) {
            break;      /* the listener is gone */
        }
    }
    return NULL;
}


Test(reload, sigterm_under_load_loses_nothing_acknowledged_and_strands_no_job)
{
    struct h_ctx x;
    struct counted_load c;
    pthread_t t[2];
    char plugins[4096];
    char *top;
    int code;

    cr_assert_not_null(realpath("build/tests/plugins", plugins), "run from the repo root");
    top = h_strdupf("dispatch = { plugin_dir = \"%s\"; workers = 2; poll_interval = 200; };\n"
                    "routes = ( { name = \"slow\"; handler = \"counter\";"
                    " options = { sleep_ms = 300; }; } );", plugins);
    h_ctx_init(&x, "reload_term");
    x.hx_cfg.hc_secrets[0] = SECRET_A;
    x.hx_cfg.hc_top_extra = top;
    h_ctx_start(&x);
    memset(&c, 0, sizeof(c));
    c.c_x = &x;
    atomic_store(&c.c_next, 5000);
    for (int i = 0; i < 2; i++) {
        cr_assert(pthread_create(&t[i], NULL, counted_main, &c) == 0);
    }
    h_sleep_ms(1000);
    h_daemon_signal(&x.hx_daemon, SIGTERM);
    cr_assert(h_daemon_wait_exit(&x.hx_daemon, 40000), "hookd did not exit after SIGTERM");
    atomic_store(&c.c_stop, true);
    for (int i = 0; i < 2; i++) {
        pthread_join(t[i], NULL);
    }
    code = WIFEXITED(x.hx_daemon.hd_status) ? WEXITSTATUS(x.hx_daemon.hd_status) : -1;
    cr_assert_eq(code, 0, "exit status %d", code);
    cr_assert_gt(atomic_load(&c.c_ok), 0);
    /* Every 200 has its row, and every row its job; none left running. */
    cr_assert_geq(h_events(&x), atomic_load(&c.c_ok), "an acknowledged event is missing");
    cr_assert_eq(h_sql_long(x.hx_db.hd_conninfo, "SELECT count(*) FROM hookd.events e WHERE"
                            " NOT EXISTS (SELECT 1 FROM hookd.jobs j WHERE j.event_id = e.id)"),
                 0, "an event without its job");
    cr_assert_eq(h_sql_long(x.hx_db.hd_conninfo, "SELECT count(*) FROM hookd.jobs"
                            " WHERE status = 'running'"), 0, "a job left running");
    {
        char *log = h_daemon_log(&x.hx_daemon);

        h_log_assert_clean(log, NULL, NULL);
        free(log);
    }
    h_db_drop(&x.hx_db);
    free(top);
}


/* Rewrites the config with the given certificate and key files and reloads. */
static void
reload_tls(struct h_ctx *x, const char *cert, const char *key)
{
    char *text = h_config_text(&x->hx_cfg);
    const char *dir = h_env("HOOKD_TEST_TLS_DIR");
    char *from_cert = h_strdupf("%s/cert.pem", dir);
    char *from_key = h_strdupf("%s/key.pem", dir);
    char *to_cert = h_strdupf("%s/%s", dir, cert);
    char *to_key = h_strdupf("%s/%s", dir, key);
    char *a = h_replace(text, from_cert, to_cert);
    char *b = h_replace(a, from_key, to_key);

    h_replace_file(x->hx_conf, b, 0600);
    h_daemon_signal(&x->hx_daemon, SIGHUP);
    free(text);
    free(a);
    free(b);
    free(from_cert);
    free(from_key);
    free(to_cert);
    free(to_key);
}


/* True when a new TLS connection verifies against the test's ECDSA certificate. */
static bool
handshake_ok(struct h_ctx *x)
{
    struct h_conn c;
    bool ok = h_conn_open(&c, x->hx_port, 5000) == 0;

    h_conn_close(&c);
    return ok;
}


Test(reload, certificate_and_key_reload_for_new_connections)
{
    struct h_ctx x;

    h_ctx_init(&x, "reload_tls");
    x.hx_cfg.hc_secrets[0] = SECRET_A;
    h_ctx_start(&x);
    cr_assert(handshake_ok(&x));

    /* RSA pair: new handshakes get it (and our client, pinned to ECDSA, refuses). */
    reload_tls(&x, "rsa-cert.pem", "rsa-key.pem");
    cr_assert(h_daemon_wait_log(&x.hx_daemon, "reload done", 1, 10000));
    cr_assert(!handshake_ok(&x), "still the old certificate after the reload");

    /* A certificate with the wrong key is refused; the RSA pair stays. */
    reload_tls(&x, "cert.pem", "rsa-key.pem");
    cr_assert(h_daemon_wait_log(&x.hx_daemon, "reload failed", 1, 10000));
    cr_assert(!handshake_ok(&x));

    /* Back to the ECDSA pair: accepted again, and events flow. */
    reload_tls(&x, "cert.pem", "key.pem");
    cr_assert(h_daemon_wait_log(&x.hx_daemon, "reload done", 2, 10000));
    cr_assert(handshake_ok(&x));
    cr_assert_eq(post_with(&x, SECRET_A, 1), 200);
    {
        static const char *const allowed[] = {"reload failed", NULL};

        h_ctx_finish(&x, NULL, allowed);
    }
}


/*
 * Case C27 with a handler longer than the grace: SIGTERM ends hookd within
 * grace + 5 s with exit 0, the running job goes back to the queue as
 * pending with its attempt uncounted, and the next start runs it once.
 */
Test(reload, sigterm_hands_back_a_job_longer_than_the_grace)
{
    struct h_ctx x;
    char plugins[4096];
    char *slow, *quick;
    long long t0;
    int code;

    cr_assert_not_null(realpath("build/tests/plugins", plugins), "run from the repo root");
    slow = h_strdupf("dispatch = { plugin_dir = \"%s\"; workers = 1; poll_interval = 200;"
                     " stop_grace = 1000; };\nroutes = ( { name = \"long\"; handler = \"counter\";"
                     " timeout = 120000; options = { sleep_ms = 60000; }; } );", plugins);
    quick = h_strdupf("dispatch = { plugin_dir = \"%s\"; workers = 1; poll_interval = 200; };\n"
                      "routes = ( { name = \"long\"; handler = \"counter\"; } );", plugins);
    h_ctx_init(&x, "reload_grace");
    x.hx_cfg.hc_secrets[0] = SECRET_A;
    x.hx_cfg.hc_top_extra = slow;
    h_ctx_start(&x);
    cr_assert_eq(post_with(&x, SECRET_A, 1), 200);
    t0 = h_now_ms();
    while (h_sql_long(x.hx_db.hd_conninfo, "SELECT count(*) FROM hookd.jobs WHERE status ="
                      " 'running'") == 0 && h_now_ms() - t0 < 10000)
    {
        h_sleep_ms(50);
    }
    t0 = h_now_ms();
    h_daemon_signal(&x.hx_daemon, SIGTERM);
    cr_assert(h_daemon_wait_exit(&x.hx_daemon, 6000), "not stopped within grace + 5 s");
    code = WIFEXITED(x.hx_daemon.hd_status) ? WEXITSTATUS(x.hx_daemon.hd_status) : -1;
    cr_assert_eq(code, 0, "exit status %d after %lld ms", code, h_now_ms() - t0);
    cr_assert_eq(h_sql_long(x.hx_db.hd_conninfo, "SELECT count(*) FROM hookd.jobs WHERE"
                            " status = 'pending' AND attempts = 0"), 1,
                 "the job was not handed back uncounted");

    /* The next start runs it once (this time quickly). */
    x.hx_cfg.hc_top_extra = quick;
    h_ctx_start(&x);
    t0 = h_now_ms();
    while (h_sql_long(x.hx_db.hd_conninfo, "SELECT count(*) FROM hookd.jobs WHERE status ="
                      " 'done'") == 0 && h_now_ms() - t0 < 10000)
    {
        h_sleep_ms(50);
    }
    cr_assert_eq(h_sql_long(x.hx_db.hd_conninfo, "SELECT attempts FROM hookd.jobs"), 1);
    h_ctx_finish(&x, NULL, NULL);
    free(slow);
    free(quick);
}
