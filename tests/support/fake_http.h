/* SPDX-License-Identifier: MIT */
/*
 * fake_http: a small scripted HTTP/1.1 server for integration tests, the
 * far end of hookd's outgoing calls (the forward handler's targets, and the
 * fake ContextGPT API). It listens on 127.0.0.1 on a port of its own,
 * speaks HTTPS with $HOOKD_TEST_TLS_DIR/cert.pem and key.pem (or plain
 * HTTP), and serves each connection on its own thread, with keep-alive.
 *
 * Every complete request is recorded (method, path, header lines, body,
 * arrival time) before it is answered. Answers come, in this order of
 * preference, from a handler function, from a queue of scripted answers
 * (one per request), or from the default answer (200, empty body). An
 * answer can be delayed, never sent (the connection is held until the
 * client gives up or the server stops), or replaced by closing the
 * connection.
 *
 * The functions are thread-safe. Setup failures assert (Criterion), so they
 * may only be called from the test's own thread. Nothing here logs request
 * contents.
 */
#ifndef HOOKD_TEST_FAKE_HTTP_H
#define HOOKD_TEST_FAKE_HTTP_H

#include <stdbool.h>
#include <stddef.h>

/* How to answer one request. Strings are copied when queued. */
struct fh_answer {
    int fa_status;                  /* 0 means 200 */
    const char *fa_retry_after;     /* Retry-After value, or NULL for none */
    const char *fa_headers;         /* more header lines, each ending "\r\n" */
    const char *fa_body;            /* NULL: empty */
    const char *fa_content_type;    /* NULL: application/json when there is a body */
    int fa_delay_ms;                /* wait before answering */
    bool fa_never;                  /* never answer; hold the connection */
    bool fa_close;                  /* close the connection without answering */
};

/* A recorded request. */
struct fh_request {
    char *fr_method;
    char *fr_path;                  /* the request target as sent */
    char *fr_headers;               /* header lines, each ending "\r\n" */
    char *fr_body;                  /* NUL-ended copy of the (de-chunked) body */
    size_t fr_body_len;
    long long fr_at_ms;             /* h_now_ms() when it was complete */
};

/*
 * Decides an answer for req (called on the connection's thread with no lock
 * held). Strings put into ans must stay valid until the answer is sent.
 */
typedef void (*fh_handler)(const struct fh_request *req, struct fh_answer *ans, void *arg);

struct fake_http;

/* Starts a server (HTTPS when tls) on 127.0.0.1 and an ephemeral port. */
struct fake_http *fh_start(bool tls);

/* Its port. */
int fh_port(const struct fake_http *s);

/* "https://127.0.0.1:<port><path>" or http://... (malloc'd). */
char *fh_url(const struct fake_http *s, const char *path);

/* Queues an answer for the next request that has none yet. */
void fh_push(struct fake_http *s, const struct fh_answer *a);

/* The answer used when the queue is empty (initially 200, empty body). */
void fh_set_default(struct fake_http *s, const struct fh_answer *a);

/* Routes every request through fn (NULL: back to the queue). */
void fh_set_handler(struct fake_http *s, fh_handler fn, void *arg);

/* Requests recorded so far. */
size_t fh_count(struct fake_http *s);

/* TLS handshakes that failed (for example: the client refused our cert). */
size_t fh_handshake_failures(struct fake_http *s);

/* Waits at most timeout_ms until n requests were recorded. */
bool fh_wait(struct fake_http *s, size_t n, int timeout_ms);

/* A copy of request i (0 first), or NULL; free with fh_request_free. */
struct fh_request *fh_request(struct fake_http *s, size_t i);

void fh_request_free(struct fh_request *r);

/* The value of header name in r (case-insensitive, trimmed; malloc'd), or NULL. */
char *fh_header(const struct fh_request *r, const char *name);

/*
 * Stops the server: closes the listener, ends every connection (held ones
 * too) and frees everything. NULL is fine.
 */
void fh_stop(struct fake_http *s);

#endif
