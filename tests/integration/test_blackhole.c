/* SPDX-License-Identifier: MIT */
/*
 * Case C12: PostgreSQL traffic silently dropped (no RST, no answer). The
 * daemon reaches PostgreSQL through a TCP relay in this test process; when
 * the relay "blackholes", it keeps every connection open but forwards
 * nothing, the way a firewall DROP rule behaves. hookd must answer 503 with
 * Retry-After within its configured timeouts, never hang, and recover by
 * itself once traffic flows again.
 */
#include <criterion/criterion.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "support/harness.h"

TestSuite(blackhole, .fini = h_suite_fini, .timeout = 90);

struct relay {
    int r_listen;
    int r_port;
    int r_target_port;
    atomic_bool r_blackhole;
    atomic_bool r_quit;
    pthread_t r_thread;
};

struct pipe_pair {
    struct relay *p_relay;
    int p_client;
    int p_server;
};


static int
tcp_connect(int port)
{
    struct sockaddr_in sa = {0};
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

    sa.sin_family = AF_INET;
    sa.sin_port = htons((unsigned short)port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        close(fd);
        fd = -1;
    }
    return fd;
}


/* Copies bytes both ways until either side closes; stalls while blackholed. */
static void *
pipe_main(void *arg)
{
    struct pipe_pair *p = arg;
    char buf[16384];

    while (!atomic_load(&p->p_relay->r_quit)) {
        struct pollfd fds[2] = {{p->p_client, POLLIN, 0}, {p->p_server, POLLIN, 0}};

        if (atomic_load(&p->p_relay->r_blackhole)) {
            /* Read nothing, answer nothing: the peer's bytes just sit. */
            h_sleep_ms(50);
            continue;
        }
        if (poll(fds, 2, 100) <= 0) {
            continue;
        }
        for (int i = 0; i < 2; i++) {
            if (fds[i].revents & (POLLIN | POLLHUP | POLLERR)) {
                ssize_t n = read(fds[i].fd, buf, sizeof(buf));

                if (n <= 0 || write(fds[1 - i].fd, buf, (size_t)n) != n) {
                    goto out;
                }
            }
        }
    }
out:
    close(p->p_client);
    close(p->p_server);
    free(p);
    return NULL;
}


static void *
relay_main(void *arg)
{
    struct relay *r = arg;

    while (!atomic_load(&r->r_quit)) {
        struct pollfd pfd = {r->r_listen, POLLIN, 0};
        struct pipe_pair *p;
        pthread_t t;
        int client;

        if (poll(&pfd, 1, 100) <= 0) {
            continue;
        }
        client = accept4(r->r_listen, NULL, NULL, SOCK_CLOEXEC);
        if (client < 0) {
            continue;
        }
        p = calloc(1, sizeof(*p));
        cr_assert_not_null(p);
        p->p_relay = r;
        p->p_client = client;
        /* Blackholed: accept (the kernel would have anyway) and never connect on. */
        while (atomic_load(&r->r_blackhole) && !atomic_load(&r->r_quit)) {
            h_sleep_ms(50);
        }
        p->p_server = tcp_connect(r->r_target_port);
        if (p->p_server < 0) {
            close(client);
            free(p);
            continue;
        }
        if (pthread_create(&t, NULL, pipe_main, p) == 0) {
            pthread_detach(t);
        }
    }
    return NULL;
}


static void
relay_start(struct relay *r, int target_port)
{
    struct sockaddr_in sa = {0};
    socklen_t len = sizeof(sa);
    int one = 1;

    memset(r, 0, sizeof(*r));
    r->r_target_port = target_port;
    r->r_listen = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    cr_assert(r->r_listen >= 0);
    setsockopt(r->r_listen, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cr_assert(bind(r->r_listen, (struct sockaddr *)&sa, sizeof(sa)) == 0);
    cr_assert(listen(r->r_listen, 64) == 0);
    cr_assert(getsockname(r->r_listen, (struct sockaddr *)&sa, &len) == 0);
    r->r_port = ntohs(sa.sin_port);
    cr_assert(pthread_create(&r->r_thread, NULL, relay_main, r) == 0);
}


/* The TCP port of the shared test cluster, from $HOOKD_TEST_PG. */
static int
test_pg_port(void)
{
    const char *p = strstr(h_env("HOOKD_TEST_PG"), "port=");

    cr_assert_not_null(p, "HOOKD_TEST_PG has no port=");
    return atoi(p + 5);
}


Test(blackhole, silent_database_gives_503_within_timeouts_and_recovers_alone)
{
    struct h_ctx x;
    struct relay r;
    struct h_resp resp = {0};
    char *conninfo;
    long long started;
    long long elapsed;
    unsigned n = 1;
    size_t len;
    char *body;
    int status;
    int stored = 0;

    relay_start(&r, test_pg_port());
    h_ctx_init(&x, "blackhole");
    conninfo = h_strdupf("host=127.0.0.1 port=%d user=hookd dbname=%s", r.r_port,
                         x.hx_db.hd_name);
    x.hx_cfg.hc_conninfo = conninfo;
    x.hx_cfg.hc_query_timeout = 2;
    x.hx_cfg.hc_connect_timeout = 2;
    h_ctx_start(&x);

    body = h_user_event(n++, &len);
    cr_assert_eq(h_post_signed(x.hx_port, H_DEFAULT_PATH, x.hx_cfg.hc_secrets[0], body, len,
                               NULL), 200);
    stored++;
    free(body);

    atomic_store(&r.r_blackhole, true);
    /* Each request must end in 503 + Retry-After well within query + connect timeouts. */
    for (int i = 0; i < 3; i++) {
        char *retry;

        body = h_user_event(n++, &len);
        started = h_now_ms();
        status = h_post_signed(x.hx_port, H_DEFAULT_PATH, x.hx_cfg.hc_secrets[0], body, len,
                               &resp);
        elapsed = h_now_ms() - started;
        h_assert_status(&resp, 503, "event while the database is silent");
        cr_assert_leq(elapsed, 8000, "a request hung %lld ms on a silent database", elapsed);
        retry = h_resp_header(&resp, "Retry-After");
        cr_assert_not_null(retry, "503 without Retry-After");
        free(retry);
        h_resp_free(&resp);
        free(body);
    }

    /* Traffic flows again: answers return to 200 without a restart. */
    atomic_store(&r.r_blackhole, false);
    started = h_now_ms();
    do {
        body = h_user_event(n++, &len);
        status = h_post_signed(x.hx_port, H_DEFAULT_PATH, x.hx_cfg.hc_secrets[0], body, len,
                               NULL);
        free(body);
        if (status != 200) {
            h_sleep_ms(250);
        }
    } while (status != 200 && h_now_ms() - started < 20000);
    cr_assert_eq(status, 200, "hookd did not recover within 20 s after the network came back");
    stored++;

    /* Nothing acknowledged is missing. */
    cr_assert_geq(h_events(&x), stored);
    {
        static const char *const allowed[] = {"database unavailable", "could not store", NULL};

        h_ctx_finish(&x, NULL, allowed);
    }
    atomic_store(&r.r_quit, true);
    pthread_join(r.r_thread, NULL);
    close(r.r_listen);
    free(conninfo);
}
