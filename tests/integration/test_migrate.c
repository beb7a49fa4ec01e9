/* SPDX-License-Identifier: MIT */
/*
 * Migrations: `hookd migrate` applies each migration once, and instances
 * that start together on an empty database take turns under the advisory
 * lock instead of racing on CREATE statements.
 */
#include <criterion/criterion.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "support/harness.h"

TestSuite(migrate, .fini = h_suite_fini, .timeout = 60);


/* Starts `hookd migrate --config conf` with output to log; returns the pid. */
static pid_t
spawn_migrate(const char *conf, const char *log)
{
    pid_t pid = fork();

    cr_assert(pid >= 0);
    if (pid == 0) {
        FILE *f = freopen(log, "w", stdout);

        (void)f;
        dup2(STDOUT_FILENO, STDERR_FILENO);
        execl(h_env("HOOKD_BIN"), "hookd", "migrate", "--config", conf, (char *)NULL);
        _exit(127);
    }
    return pid;
}


static int
wait_exit_code(pid_t pid)
{
    int status = 0;

    cr_assert_eq(waitpid(pid, &status, 0), pid);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}


Test(migrate, applies_each_migration_once_and_reports_nothing_left_after)
{
    struct h_ctx x;
    char log[H_PATH_MAX];
    char *out;
    long expected;

    h_ctx_init(&x, "migrate_once");
    h_config_write(x.hx_conf, &x.hx_cfg);
    snprintf(log, sizeof(log), "%s/migrate.log", x.hx_dir);

    cr_assert_eq(wait_exit_code(spawn_migrate(x.hx_conf, log)), 0);
    out = h_read_file(log, NULL);
    cr_assert_not_null(strstr(out, "migrations applied: "), "output: %s", out);
    cr_assert_null(strstr(out, "migrations applied: 0"), "first run applied nothing: %s", out);
    free(out);
    expected = h_sql_long(x.hx_db.hd_conninfo, "SELECT count(*) FROM hookd.schema_migrations");
    cr_assert_geq(expected, 1);

    cr_assert_eq(wait_exit_code(spawn_migrate(x.hx_conf, log)), 0);
    out = h_read_file(log, NULL);
    cr_assert_not_null(strstr(out, "migrations applied: 0"), "second run: %s", out);
    free(out);
    cr_assert_eq(h_sql_long(x.hx_db.hd_conninfo,
                            "SELECT count(*) FROM hookd.schema_migrations"), expected);
    cr_assert_eq(h_sql_long(x.hx_db.hd_conninfo, "SELECT count(*) FROM hookd.events"), 0);
    h_db_drop(&x.hx_db);
}


Test(migrate, concurrent_migrations_on_an_empty_database_take_turns)
{
    struct h_ctx x;
    char log[H_PATH_MAX];
    pid_t pids[4];

    h_ctx_init(&x, "migrate_race");
    h_config_write(x.hx_conf, &x.hx_cfg);
    for (int i = 0; i < 4; i++) {
        snprintf(log, sizeof(log), "%s/migrate%d.log", x.hx_dir, i);
        pids[i] = spawn_migrate(x.hx_conf, log);
    }
    for (int i = 0; i < 4; i++) {
        int code = wait_exit_code(pids[i]);

        snprintf(log, sizeof(log), "%s/migrate%d.log", x.hx_dir, i);
        cr_assert_eq(code, 0, "migrate %d exited %d: %s", i, code, h_read_file(log, NULL));
    }
    cr_assert_eq(h_sql_long(x.hx_db.hd_conninfo,
                            "SELECT count(*) - count(DISTINCT version)"
                            " FROM hookd.schema_migrations"), 0);
    h_db_drop(&x.hx_db);
}


Test(migrate, two_instances_starting_together_both_serve_the_same_database)
{
    struct h_ctx x;
    struct h_daemon second;
    char conf2[H_PATH_MAX];
    char log2[H_PATH_MAX];
    struct h_config cfg2;
    size_t len;
    char *body;

    h_ctx_init(&x, "two_instances");
    cfg2 = x.hx_cfg;
    cfg2.hc_port = h_free_port();
    snprintf(conf2, sizeof(conf2), "%s/second.conf", x.hx_dir);
    snprintf(log2, sizeof(log2), "%s/second.log", x.hx_dir);
    h_config_write(x.hx_conf, &x.hx_cfg);
    h_config_write(conf2, &cfg2);

    memset(&second, 0, sizeof(second));
    h_daemon_spawn(&x.hx_daemon, x.hx_conf, x.hx_log);
    h_daemon_spawn(&second, conf2, log2);
    cr_assert(h_daemon_wait_log(&x.hx_daemon, "hookd ready", 1, 20000), "first not ready");
    cr_assert(h_daemon_wait_log(&second, "hookd ready", 1, 20000), "second not ready");

    body = h_user_event(1, &len);
    cr_assert_eq(h_post_signed(x.hx_port, H_DEFAULT_PATH, x.hx_cfg.hc_secrets[0], body, len,
                               NULL), 200);
    /* The same delivery through the other instance is a duplicate, not a second row. */
    cr_assert_eq(h_post_signed(cfg2.hc_port, H_DEFAULT_PATH, cfg2.hc_secrets[0], body, len,
                               NULL), 200);
    free(body);
    cr_assert_eq(h_events(&x), 1);
    cr_assert_eq(h_sql_long(x.hx_db.hd_conninfo,
                            "SELECT count(*) - count(DISTINCT version)"
                            " FROM hookd.schema_migrations"), 0);
    cr_assert_eq(h_daemon_stop(&second), 0);
    h_ctx_finish(&x, NULL, NULL);
}
