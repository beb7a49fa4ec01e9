/* SPDX-License-Identifier: MIT */
/*
 * fake-api: a stand-in for the ContextGPT REST API to try hookd's answering
 * handlers on one machine (`HOOKD_RUN_FAKE_API=1 make run`). It serves
 * HTTPS on 127.0.0.1, answers every request with the platform's success
 * envelope, and prints one line per request: method, path and body. It
 * never prints the Authorization header.
 *
 * usage: fake-api PORT CERT.pem KEY.pem
 */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <civetweb.h>

#define FAKE_API_MAX_BODY 65536

static int
answer(struct mg_connection *conn, void *arg)
{
    const struct mg_request_info *ri = mg_get_request_info(conn);
    static const char envelope[] =
        "{\"statusCode\":200,\"success\":true,\"message\":\"ok (fake-api)\","
        "\"data\":{\"messages\":[]}}";
    char body[FAKE_API_MAX_BODY + 1];
    int len = 0;
    int n;

    (void)arg;
    while (len < FAKE_API_MAX_BODY && (n = mg_read(conn, body + len,
                                                   (size_t)(FAKE_API_MAX_BODY - len))) > 0)
    {
        len += n;
    }
    body[len] = '\0';
    printf("fake-api: %s %s %s\n", ri->request_method, ri->local_uri, body);
    fflush(stdout);
    mg_printf(conn, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
              "Content-Length: %zu\r\n\r\n%s", sizeof(envelope) - 1, envelope);
    return 200;
}


int
main(int argc, char **argv)
{
    char port[32];
    const char *options[] = {
        "listening_ports", port, "ssl_certificate", NULL, "num_threads", "4",
        "enable_keep_alive", "yes", NULL
    };
    struct mg_callbacks cb;
    struct mg_context *ctx;
    char pem[4096];
    sigset_t stop;
    int sig;
    FILE *out;

    if (argc != 4) {
        fprintf(stderr, "usage: fake-api PORT CERT.pem KEY.pem\n");
        return 2;
    }
    /* CivetWeb wants the key and certificate in one file. */
    snprintf(pem, sizeof(pem), "%s.fake-api.pem", argv[2]);
    umask(077);     /* the copy holds the private key */
    out = fopen(pem, "w");
    if (out == NULL) {
        perror("fake-api: could not write the combined PEM");
        return 1;
    }
    for (int i = 3; i >= 2; i--) {
        FILE *in = fopen(argv[i], "r");
        char buf[4096];
        size_t n;

        if (in == NULL) {
            perror(argv[i]);
            fclose(out);
            return 1;
        }
        while ((n = fread(buf, 1, sizeof(buf), in)) > 0) {
            fwrite(buf, 1, n, out);
        }
        fclose(in);
    }
    fclose(out);
    snprintf(port, sizeof(port), "127.0.0.1:%ss", argv[1]);
    options[3] = pem;
    /* Blocked before CivetWeb starts its threads, so only sigwait sees them. */
    sigemptyset(&stop);
    sigaddset(&stop, SIGINT);
    sigaddset(&stop, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop, NULL);
    memset(&cb, 0, sizeof(cb));
    mg_init_library(MG_FEATURES_TLS);
    ctx = mg_start(&cb, NULL, options);
    if (ctx == NULL) {
        fprintf(stderr, "fake-api: could not listen on %s\n", port);
        return 1;
    }
    mg_set_request_handler(ctx, "/", answer, NULL);
    printf("fake-api: listening on https://127.0.0.1:%s/api\n", argv[1]);
    fflush(stdout);
    (void)sigwait(&stop, &sig);
    mg_stop(ctx);
    unlink(pem);
    return 0;
}
