/* SPDX-License-Identifier: MIT */
/*
 * load: drives hookd with unique, correctly signed ContextGPT events over
 * HTTPS keep-alive connections, one thread per connection, for a fixed
 * time, and reports rate and latency percentiles. Each request is a new
 * event (a distinct messageId), so every 2xx must be a new row; the run
 * script compares the two.
 *
 * usage: load HOST PORT PATH SECRET_FILE CONNECTIONS SECONDS [reconnect]
 * With "reconnect", every request gets a new TCP and TLS connection; from
 * the second on, each resumes the TLS session of the connection before it
 * (a session ticket, as a sender that keeps its TLS state does).
 * Prints "sent=N ok=N other=N seconds=S rate=R p50_ms=.. p99_ms=.. p999_ms=..".
 *
 * The environment shapes the load further:
 *   LOAD_EVENT=lead    NEW_LEAD events (each its own person) instead of
 *                      visitor messages;
 *   LOAD_MAX=N         stop after N requests in all;
 *   LOAD_PACE_MS=M     wait M ms after each answer (one connection: idle
 *                      gaps, for the commit-to-start delay).
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/hmac.h>
#include <openssl/ssl.h>

#define LOAD_MAX_SAMPLES 2000000

struct shared {
    const char *host;
    int port;
    const char *path;
    char secret[256];
    double seconds;
    int reconnect;
    int lead;
    long long max;
    int pace_ms;
    SSL_CTX *ctx;
    atomic_ullong sent, ok, other;
    atomic_ullong connects, resumed;    /* TLS handshakes, and those resumed */
    atomic_llong budget;            /* requests left when LOAD_MAX is set */
    pthread_mutex_t lock;
    unsigned *lat_us;               /* every request's latency */
    size_t nlat;
};

struct worker {
    struct shared *s;
    int index;
};


static double
now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}


static SSL *
connect_tls(struct shared *s, SSL_SESSION *resume)
{
    struct sockaddr_in sa = {0};
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    SSL *ssl;

    sa.sin_family = AF_INET;
    sa.sin_port = htons((unsigned short)s->port);
    inet_pton(AF_INET, s->host, &sa.sin_addr);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        if (fd >= 0) {
            close(fd);
        }
        return NULL;
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    ssl = SSL_new(s->ctx);
    SSL_set_fd(ssl, fd);
    if (resume != NULL) {
        SSL_set_session(ssl, resume);
    }
    if (SSL_connect(ssl) != 1) {
        SSL_free(ssl);
        close(fd);
        return NULL;
    }
    atomic_fetch_add(&s->connects, 1);
    if (SSL_session_reused(ssl)) {
        atomic_fetch_add(&s->resumed, 1);
    }
    return ssl;
}


static void
close_tls(SSL *ssl)
{
    int fd = SSL_get_fd(ssl);

    /* A close_notify first: a session freed without one is not resumed. */
    (void)SSL_shutdown(ssl);
    SSL_free(ssl);
    close(fd);
}


/* Reads one answer; returns its status, or 0 when the connection failed. */
static int
read_answer(SSL *ssl)
{
    char buf[4096];
    size_t have = 0;
    char *end;
    long body = 0;
    int status = 0;

    for (;;) {
        int n = SSL_read(ssl, buf + have, (int)(sizeof(buf) - 1 - have));

        if (n <= 0) {
            return 0;
        }
        have += (size_t)n;
        buf[have] = '\0';
        end = strstr(buf, "\r\n\r\n");
        if (end != NULL) {
            const char *cl = strcasestr(buf, "Content-Length:");

            sscanf(buf, "HTTP/1.%*d %d", &status);
            body = cl ? strtol(cl + 15, NULL, 10) : 0;
            break;
        }
        if (have >= sizeof(buf) - 1) {
            return 0;
        }
    }
    /* Read the rest of the body, if the head did not bring it all. */
    {
        long got = (long)(have - (size_t)(end + 4 - buf));

        while (got < body) {
            int n = SSL_read(ssl, buf, (int)sizeof(buf));

            if (n <= 0) {
                return 0;
            }
            got += n;
        }
    }
    return status;
}


static void *
worker_main(void *arg)
{
    struct worker *w = arg;
    struct shared *s = w->s;
    double end = now_s() + s->seconds;
    SSL *ssl = connect_tls(s, NULL);
    SSL_SESSION *session = NULL;
    unsigned *mine = malloc(sizeof(unsigned) * 200000);
    size_t nmine = 0;
    unsigned long long seq = 0;

    while (ssl != NULL && now_s() < end) {
        char body[1024], req[2048], hex[65];
        unsigned char mac[32];
        unsigned mac_len = 0;
        int blen, rlen, status;
        double t0;

        if (s->max > 0 && atomic_fetch_sub(&s->budget, 1) <= 0) {
            break;
        }
        if (s->lead) {
            blen = snprintf(body, sizeof(body),
                            "{\"event\":\"NEW_LEAD\",\"data\":{\"chatbotId\":"
                            "\"365062873485935184\",\"threadId\":\"bench-%d-%llu\","
                            "\"lead\":{\"name\":\"Visitor %d-%llu\","
                            "\"email\":\"visitor-%d-%d-%llu@example.org\","
                            "\"phone\":\"+1 555 %04llu\",\"customFields\":{\"plan\":\"Growth\"}},"
                            "\"createdAt\":\"2026-11-30T09:14:30.000Z\"}}",
                            w->index, seq, w->index, seq, (int)getpid(), w->index, seq,
                            seq % 10000);
        } else {
            blen = snprintf(body, sizeof(body),
                            "{\"event\":\"NEW_MESSAGE\",\"data\":{\"chatbotId\":"
                            "\"365062873485935184\",\"threadId\":\"bench-%d-%llu\","
                            "\"messageId\":\"%d-%d-%llu\","
                            "\"question\":\"Hi, can I change the delivery address?\","
                            "\"answer\":null,\"messageType\":\"NORMAL_MESSAGE\","
                            "\"createdAt\":\"2026-11-30T09:14:02Z\"}}",
                            w->index, seq % 64, (int)getpid(), w->index, seq);
        }
        seq++;
        HMAC(EVP_sha256(), s->secret, (int)strlen(s->secret), (unsigned char *)body,
             (size_t)blen, mac, &mac_len);
        for (int i = 0; i < 32; i++) {
            snprintf(hex + 2 * i, 3, "%02x", mac[i]);
        }
        rlen = snprintf(req, sizeof(req),
                        "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
                        "X-WEBHOOK-TOKEN: %s\r\nX-WEBHOOK-SIGNATURE: %s\r\n%s"
                        "Content-Length: %d\r\n\r\n%s", s->path, s->host, s->secret, hex,
                        s->reconnect ? "Connection: close\r\n" : "", blen, body);
        t0 = now_s();
        if (SSL_write(ssl, req, rlen) != rlen) {
            break;
        }
        status = read_answer(ssl);
        atomic_fetch_add(&s->sent, 1);
        if (status >= 200 && status < 300) {
            atomic_fetch_add(&s->ok, 1);
        } else {
            atomic_fetch_add(&s->other, 1);
        }
        if (mine != NULL && nmine < 200000) {
            mine[nmine++] = (unsigned)((now_s() - t0) * 1e6);
        }
        if (status == 0 || s->reconnect) {
            if (status != 0 && SSL_SESSION_is_resumable(SSL_get0_session(ssl))) {
                SSL_SESSION_free(session);
                session = SSL_get1_session(ssl);
            }
            close_tls(ssl);
            ssl = connect_tls(s, session);
        }
        if (s->pace_ms > 0) {
            usleep((useconds_t)s->pace_ms * 1000);
        }
    }
    if (ssl != NULL) {
        close_tls(ssl);
    }
    SSL_SESSION_free(session);
    pthread_mutex_lock(&s->lock);
    for (size_t i = 0; mine != NULL && i < nmine && s->nlat < LOAD_MAX_SAMPLES; i++) {
        s->lat_us[s->nlat++] = mine[i];
    }
    pthread_mutex_unlock(&s->lock);
    free(mine);
    return NULL;
}


static int
cmp_unsigned(const void *a, const void *b)
{
    unsigned x = *(const unsigned *)a, y = *(const unsigned *)b;

    return x < y ? -1 : x > y;
}


int
main(int argc, char **argv)
{
    struct shared s;
    pthread_t *threads;
    struct worker *workers;
    FILE *f;
    int n;
    double start, took;

    if (argc != 7 && argc != 8) {
        fprintf(stderr, "usage: load HOST PORT PATH SECRET_FILE CONNECTIONS SECONDS "
                "[reconnect]\n");
        return 2;
    }
    /* A server that dies mid-run must not kill the tool before it reports. */
    signal(SIGPIPE, SIG_IGN);
    memset(&s, 0, sizeof(s));
    s.host = argv[1];
    s.port = atoi(argv[2]);
    s.path = argv[3];
    f = fopen(argv[4], "r");
    if (f == NULL || fgets(s.secret, sizeof(s.secret), f) == NULL) {
        fprintf(stderr, "load: could not read the secret file\n");
        return 1;
    }
    fclose(f);
    s.secret[strcspn(s.secret, "\r\n")] = '\0';
    n = atoi(argv[5]);
    s.seconds = atof(argv[6]);
    s.reconnect = argc == 8 && strcmp(argv[7], "reconnect") == 0;
    s.lead = getenv("LOAD_EVENT") != NULL && strcmp(getenv("LOAD_EVENT"), "lead") == 0;
    s.max = getenv("LOAD_MAX") != NULL ? atoll(getenv("LOAD_MAX")) : 0;
    s.pace_ms = getenv("LOAD_PACE_MS") != NULL ? atoi(getenv("LOAD_PACE_MS")) : 0;
    atomic_store(&s.budget, s.max);
    s.ctx = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_verify(s.ctx, SSL_VERIFY_NONE, NULL);
    pthread_mutex_init(&s.lock, NULL);
    s.lat_us = malloc(sizeof(unsigned) * LOAD_MAX_SAMPLES);
    threads = calloc((size_t)n, sizeof(*threads));
    workers = calloc((size_t)n, sizeof(*workers));
    if (s.lat_us == NULL || threads == NULL || workers == NULL) {
        return 1;
    }
    start = now_s();
    for (int i = 0; i < n; i++) {
        workers[i].s = &s;
        workers[i].index = i;
        pthread_create(&threads[i], NULL, worker_main, &workers[i]);
    }
    for (int i = 0; i < n; i++) {
        pthread_join(threads[i], NULL);
    }
    took = now_s() - start;
    qsort(s.lat_us, s.nlat, sizeof(unsigned), cmp_unsigned);
    printf("sent=%llu ok=%llu other=%llu seconds=%.1f rate=%.0f p50_ms=%.2f p99_ms=%.2f "
           "p999_ms=%.2f", (unsigned long long)s.sent, (unsigned long long)s.ok,
           (unsigned long long)s.other, took, (double)s.ok / took,
           s.nlat ? s.lat_us[s.nlat / 2] / 1000.0 : 0,
           s.nlat ? s.lat_us[s.nlat * 99 / 100] / 1000.0 : 0,
           s.nlat ? s.lat_us[s.nlat * 999 / 1000] / 1000.0 : 0);
    if (s.reconnect) {
        printf(" handshakes=%llu resumed=%llu", (unsigned long long)s.connects,
               (unsigned long long)s.resumed);
    }
    printf("\n");
    free(s.lat_us);
    free(threads);
    free(workers);
    SSL_CTX_free(s.ctx);
    return 0;
}
