/* SPDX-License-Identifier: MIT */
/*
 * The systemd notification protocol, read from a datagram socket that
 * stands in for systemd's NOTIFY_SOCKET: READY=1 once serving, STATUS=
 * lines, WATCHDOG=1 while the core threads turn, STOPPING=1 at shutdown;
 * and no more WATCHDOG=1 once a core thread stalls (a fault injected with
 * HOOKD_FAULT_INJECT=monitor-stall), so that systemd restarts hookd.
 */
#include <criterion/criterion.h>

#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "support/harness.h"

TestSuite(notify, .fini = h_suite_fini, .timeout = 60);

struct notify {
    int n_fd;
    char n_path[108];
    int n_ready, n_status, n_watchdog, n_stopping;
    long long n_last_watchdog_ms;
};


static void
notify_open(struct notify *n, const char *dir)
{
    struct sockaddr_un sa = {0};

    memset(n, 0, sizeof(*n));
    snprintf(n->n_path, sizeof(n->n_path), "%s/notify.sock", dir);
    n->n_fd = socket(AF_UNIX, SOCK_DGRAM, 0);
    cr_assert(n->n_fd >= 0);
    sa.sun_family = AF_UNIX;
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", n->n_path);
    cr_assert(bind(n->n_fd, (struct sockaddr *)&sa, sizeof(sa)) == 0, "bind %s", n->n_path);
    setenv("HOOKD_TEST_NOTIFY_SOCKET", n->n_path, 1);
    setenv("WATCHDOG_USEC", "1000000", 1);
}


/* Reads whatever arrives within ms and counts it. */
static void
notify_read(struct notify *n, int ms)
{
    long long end = h_now_ms() + ms;

    while (h_now_ms() < end) {
        struct pollfd pfd = {n->n_fd, POLLIN, 0};
        char msg[1024];
        ssize_t got;

        if (poll(&pfd, 1, (int)(end - h_now_ms())) <= 0) {
            continue;
        }
        got = recv(n->n_fd, msg, sizeof(msg) - 1, 0);
        if (got <= 0) {
            continue;
        }
        msg[got] = '\0';
        n->n_ready += strstr(msg, "READY=1") != NULL;
        n->n_status += strstr(msg, "STATUS=") != NULL;
        n->n_stopping += strstr(msg, "STOPPING=1") != NULL;
        if (strstr(msg, "WATCHDOG=1") != NULL) {
            n->n_watchdog++;
            n->n_last_watchdog_ms = h_now_ms();
        }
    }
}


Test(notify, ready_status_watchdog_and_stopping_are_sent)
{
    struct h_ctx x;
    struct notify n;

    h_ctx_init(&x, "notify_ok");
    notify_open(&n, x.hx_dir);
    h_ctx_start(&x);
    notify_read(&n, 2500);
    cr_assert_geq(n.n_ready, 1, "no READY=1");
    cr_assert_geq(n.n_status, 1, "no STATUS=");
    cr_assert_geq(n.n_watchdog, 2, "watchdog pings: %d", n.n_watchdog);
    h_daemon_signal(&x.hx_daemon, SIGTERM);
    notify_read(&n, 1000);
    cr_assert_geq(n.n_stopping, 1, "no STOPPING=1");
    h_ctx_finish(&x, NULL, NULL);
    close(n.n_fd);
}


Test(notify, watchdog_pings_stop_when_a_core_thread_stalls)
{
    struct h_ctx x;
    struct notify n;
    long long start;

    h_ctx_init(&x, "notify_stall");
    notify_open(&n, x.hx_dir);
    setenv("HOOKD_FAULT_INJECT", "monitor-stall", 1);
    h_ctx_start(&x);
    /* The monitor stalls once migrated; pings stop within the stall limit (10 s). */
    start = h_now_ms();
    do {
        notify_read(&n, 500);
    } while (h_now_ms() - n.n_last_watchdog_ms < 3000 && h_now_ms() - start < 25000);
    cr_assert_geq(n.n_watchdog, 1, "never pinged at all");
    cr_assert_geq(h_now_ms() - n.n_last_watchdog_ms, 3000, "pings went on for 25 s");
    cr_assert(h_daemon_wait_log(&x.hx_daemon, "a core thread stalled", 1, 2000));
    {
        static const char *const allowed[] = {"a core thread stalled", NULL};

        h_ctx_finish(&x, NULL, allowed);
    }
    close(n.n_fd);
}
