/* SPDX-License-Identifier: MIT */
/*
 * fake_http: the scripted HTTP/1.1 server of fake_http.h.
 */
#include "fake_http.h"

#include <criterion/criterion.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "support/harness.h"

#define FH_TICK_MS 100
#define FH_MAX_HEAD (64 * 1024)
#define FH_MAX_BODY (16 * 1024 * 1024)
#define FH_IDLE_MS 15000                /* a connection with nothing to say */
#define FH_HANDSHAKE_MS 5000

struct fh_queued {
    struct fh_answer q_answer;          /* strings owned */
    struct fh_queued *q_next;
};

struct fake_http {
    int fs_listen;
    int fs_port;
    bool fs_tls;
    SSL_CTX *fs_ctx;
    pthread_t fs_accept;
    atomic_bool fs_quit;

    pthread_mutex_t fs_lock;
    /*
     * Connection threads, joined by fh_stop: a thread still ending (running
     * OpenSSL's thread-exit cleanup) while the process exits crashes it.
     */
    pthread_t *fs_threads;
    size_t fs_nthreads;
    size_t fs_capthreads;
    struct fh_request **fs_reqs;
    size_t fs_nreqs;
    size_t fs_capreqs;
    size_t fs_handshake_failures;
    struct fh_queued *fs_head;
    struct fh_queued *fs_tail;
    struct fh_answer fs_default;        /* strings owned */
    fh_handler fs_fn;
    void *fs_fn_arg;
};

struct fh_conn {
    struct fake_http *c_s;
    int c_fd;
    SSL *c_ssl;
    char *c_buf;
    size_t c_len;
    size_t c_cap;
};


/* ---- answers and requests ------------------------------------------------ */

static char *
fh_strdup_or_null(const char *s)
{
    char *d;

    if (s == NULL) {
        return NULL;
    }
    d = strdup(s);
    cr_assert(d != NULL, "out of memory");
    return d;
}


static void
fh_answer_copy(struct fh_answer *dst, const struct fh_answer *src)
{
    *dst = *src;
    dst->fa_retry_after = fh_strdup_or_null(src->fa_retry_after);
    dst->fa_headers = fh_strdup_or_null(src->fa_headers);
    dst->fa_body = fh_strdup_or_null(src->fa_body);
    dst->fa_content_type = fh_strdup_or_null(src->fa_content_type);
}


static void
fh_answer_clear(struct fh_answer *a)
{
    free((char *)a->fa_retry_after);
    free((char *)a->fa_headers);
    free((char *)a->fa_body);
    free((char *)a->fa_content_type);
    memset(a, 0, sizeof(*a));
}


void
fh_request_free(struct fh_request *r)
{
    if (r == NULL) {
        return;
    }
    free(r->fr_method);
    free(r->fr_path);
    free(r->fr_headers);
    free(r->fr_body);
    free(r);
}


/* A deep copy, or NULL when out of memory. */
static struct fh_request *
fh_request_copy(const struct fh_request *r)
{
    struct fh_request *c = calloc(1, sizeof(*c));

    if (c == NULL) {
        return NULL;
    }
    c->fr_method = strdup(r->fr_method);
    c->fr_path = strdup(r->fr_path);
    c->fr_headers = strdup(r->fr_headers);
    c->fr_body = malloc(r->fr_body_len + 1);
    if (c->fr_method == NULL || c->fr_path == NULL || c->fr_headers == NULL
        || c->fr_body == NULL)
    {
        fh_request_free(c);
        return NULL;
    }
    memcpy(c->fr_body, r->fr_body, r->fr_body_len + 1);
    c->fr_body_len = r->fr_body_len;
    c->fr_at_ms = r->fr_at_ms;
    return c;
}


char *
fh_header(const struct fh_request *r, const char *name)
{
    size_t nlen = strlen(name);

    for (const char *line = r->fr_headers; *line != '\0';) {
        const char *eol = strstr(line, "\r\n");
        const char *v, *end;

        if (eol == NULL) {
            break;
        }
        if ((size_t)(eol - line) > nlen && line[nlen] == ':'
            && strncasecmp(line, name, nlen) == 0)
        {
            v = line + nlen + 1;
            end = eol;
            while (v < end && (*v == ' ' || *v == '\t')) {
                v++;
            }
            while (end > v && (end[-1] == ' ' || end[-1] == '\t')) {
                end--;
            }
            return strndup(v, (size_t)(end - v));
        }
        line = eol + 2;
    }
    return NULL;
}


/* ---- connection I/O ------------------------------------------------------ */

/* Waits until the connection has bytes to read; false on quit or timeout. */
static bool
fh_wait_readable(struct fh_conn *c, int timeout_ms)
{
    long long deadline = h_now_ms() + timeout_ms;

    for (;;) {
        struct pollfd p = {c->c_fd, POLLIN, 0};

        if (c->c_ssl != NULL && SSL_pending(c->c_ssl) > 0) {
            return true;
        }
        if (atomic_load(&c->c_s->fs_quit) || h_now_ms() >= deadline) {
            return false;
        }
        if (poll(&p, 1, FH_TICK_MS) > 0) {
            return true;
        }
    }
}


/* Reads more bytes into c_buf; false at EOF, on an error, on quit or when idle. */
static bool
fh_read_more(struct fh_conn *c)
{
    long long deadline = h_now_ms() + FH_IDLE_MS;

    if (c->c_cap - c->c_len < 16384) {
        size_t cap = c->c_cap * 2 + 16384;
        char *b = realloc(c->c_buf, cap);

        if (b == NULL) {
            return false;
        }
        c->c_buf = b;
        c->c_cap = cap;
    }
    while (h_now_ms() < deadline) {
        ssize_t r;

        if (!fh_wait_readable(c, (int)(deadline - h_now_ms()))) {
            return false;
        }
        if (c->c_ssl != NULL) {
            int n = SSL_read(c->c_ssl, c->c_buf + c->c_len, (int)(c->c_cap - c->c_len - 1));
            int e = n > 0 ? SSL_ERROR_NONE : SSL_get_error(c->c_ssl, n);

            if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
                continue;
            }
            r = n > 0 ? n : 0;
        } else {
            r = recv(c->c_fd, c->c_buf + c->c_len, c->c_cap - c->c_len - 1, 0);
            if (r < 0 && (errno == EINTR || errno == EAGAIN)) {
                continue;
            }
        }
        if (r <= 0) {
            return false;
        }
        c->c_len += (size_t)r;
        c->c_buf[c->c_len] = '\0';
        return true;
    }
    return false;
}


/* Makes c_buf hold at least n bytes; false when the peer went away first. */
static bool
fh_need(struct fh_conn *c, size_t n)
{
    while (c->c_len < n) {
        if (!fh_read_more(c)) {
            return false;
        }
    }
    return true;
}


static bool
fh_write_all(struct fh_conn *c, const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t w;

        if (c->c_ssl != NULL) {
            int n = SSL_write(c->c_ssl, buf, (int)len);

            w = n > 0 ? n : -1;
        } else {
            w = send(c->c_fd, buf, len, MSG_NOSIGNAL);
            if (w < 0 && errno == EINTR) {
                continue;
            }
        }
        if (w <= 0) {
            return false;
        }
        buf += w;
        len -= (size_t)w;
    }
    return true;
}


/* Sleeps ms in ticks; false when the server is stopping. */
static bool
fh_pause(struct fake_http *s, int ms)
{
    long long deadline = h_now_ms() + ms;

    while (h_now_ms() < deadline) {
        long long left = deadline - h_now_ms();

        if (atomic_load(&s->fs_quit)) {
            return false;
        }
        h_sleep_ms(left < FH_TICK_MS ? (int)left : FH_TICK_MS);
    }
    return !atomic_load(&s->fs_quit);
}


/* ---- parsing ------------------------------------------------------------- */

/* Offset just past the next "\r\n" at or after from, reading as needed; 0 if none. */
static size_t
fh_line_end(struct fh_conn *c, size_t from, size_t limit)
{
    for (;;) {
        char *eol = c->c_len > from ? memmem(c->c_buf + from, c->c_len - from, "\r\n", 2)
                    : NULL;

        if (eol != NULL) {
            return (size_t)(eol - c->c_buf) + 2;
        }
        if (c->c_len - from > limit || !fh_read_more(c)) {
            return 0;
        }
    }
}


/*
 * Decodes a chunked body starting at offset pos of c_buf into r. Returns the
 * offset just past the body and its trailers, or 0 on a broken body.
 */
static size_t
fh_read_chunked(struct fh_conn *c, size_t pos, struct fh_request *r)
{
    for (;;) {
        size_t eol = fh_line_end(c, pos, 64);
        unsigned long long size;
        char *endp;
        char *b;

        if (eol == 0) {
            return 0;
        }
        errno = 0;
        size = strtoull(c->c_buf + pos, &endp, 16);
        if (endp == c->c_buf + pos || errno != 0 || size > FH_MAX_BODY - r->fr_body_len) {
            return 0;
        }
        if (size == 0) {
            /* Trailers, up to an empty line. */
            for (pos = eol;;) {
                size_t next = fh_line_end(c, pos, FH_MAX_HEAD);

                if (next == 0) {
                    return 0;
                }
                if (next == pos + 2) {
                    return next;
                }
                pos = next;
            }
        }
        if (!fh_need(c, eol + size + 2) || memcmp(c->c_buf + eol + size, "\r\n", 2) != 0) {
            return 0;
        }
        b = realloc(r->fr_body, r->fr_body_len + size + 1);
        if (b == NULL) {
            return 0;
        }
        r->fr_body = b;
        memcpy(r->fr_body + r->fr_body_len, c->c_buf + eol, size);
        r->fr_body_len += size;
        r->fr_body[r->fr_body_len] = '\0';
        pos = eol + size + 2;
    }
}


/*
 * Reads one request into *ret and drops its bytes from c_buf. Sets *close
 * when the client asked for the connection to end. False when there is no
 * (complete, valid) request.
 */
static bool
fh_read_request(struct fh_conn *c, struct fh_request **ret, bool *close)
{
    struct fh_request *r;
    char *head_end, *sp1, *sp2, *line_end, *v;
    size_t head_len, end;

    while ((head_end = memmem(c->c_buf ? c->c_buf : "", c->c_len, "\r\n\r\n", 4)) == NULL) {
        if (c->c_len > FH_MAX_HEAD || !fh_read_more(c)) {
            return false;
        }
    }
    head_len = (size_t)(head_end - c->c_buf) + 4;
    line_end = memmem(c->c_buf, head_len, "\r\n", 2);
    sp1 = memchr(c->c_buf, ' ', (size_t)(line_end - c->c_buf));
    sp2 = sp1 ? memchr(sp1 + 1, ' ', (size_t)(line_end - sp1 - 1)) : NULL;
    if (sp2 == NULL || (r = calloc(1, sizeof(*r))) == NULL) {
        return false;
    }
    r->fr_method = strndup(c->c_buf, (size_t)(sp1 - c->c_buf));
    r->fr_path = strndup(sp1 + 1, (size_t)(sp2 - sp1 - 1));
    r->fr_headers = strndup(line_end + 2, (size_t)(head_end + 2 - (line_end + 2)));
    r->fr_body = calloc(1, 1);
    if (r->fr_method == NULL || r->fr_path == NULL || r->fr_headers == NULL
        || r->fr_body == NULL)
    {
        fh_request_free(r);
        return false;
    }
    *close = strncmp(sp2 + 1, "HTTP/1.0", 8) == 0;
    if ((v = fh_header(r, "Connection")) != NULL) {
        *close = *close || strcasecmp(v, "close") == 0;
        free(v);
    }
    if ((v = fh_header(r, "Expect")) != NULL) {
        if (strcasecmp(v, "100-continue") == 0) {
            static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";

            (void)fh_write_all(c, cont, sizeof(cont) - 1);
        }
        free(v);
    }

    /* The body: chunked, or Content-Length bytes, or none. */
    end = head_len;
    if ((v = fh_header(r, "Transfer-Encoding")) != NULL) {
        bool chunked = strcasecmp(v, "chunked") == 0;

        free(v);
        end = chunked ? fh_read_chunked(c, head_len, r) : 0;
    } else if ((v = fh_header(r, "Content-Length")) != NULL) {
        char *endp;
        unsigned long long n = strtoull(v, &endp, 10);
        bool ok = *v != '\0' && *endp == '\0' && n <= FH_MAX_BODY;
        char *b = ok ? realloc(r->fr_body, n + 1) : NULL;

        free(v);
        if (b != NULL) {
            r->fr_body = b;
        }
        if (b == NULL || !fh_need(c, head_len + n)) {
            end = 0;
        } else {
            memcpy(r->fr_body, c->c_buf + head_len, n);
            r->fr_body[n] = '\0';
            r->fr_body_len = n;
            end = head_len + n;
        }
    }
    if (end == 0) {
        fh_request_free(r);
        return false;
    }
    memmove(c->c_buf, c->c_buf + end, c->c_len - end);
    c->c_len -= end;
    r->fr_at_ms = h_now_ms();
    *ret = r;
    return true;
}


/* ---- serving ------------------------------------------------------------- */

static const char *
fh_reason(int status)
{
    switch (status) {
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 413: return "Content Too Large";
    case 422: return "Unprocessable Content";
    case 429: return "Too Many Requests";
    case 500: return "Internal Server Error";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    default: return "Status";
    }
}


/* Records r (taking it) and picks its answer into ans; *owned if ans must be cleared. */
static void
fh_record(struct fake_http *s, struct fh_request *r, struct fh_answer *ans, bool *owned)
{
    fh_handler fn;
    void *arg;

    pthread_mutex_lock(&s->fs_lock);
    if (s->fs_nreqs == s->fs_capreqs) {
        size_t cap = s->fs_capreqs * 2 + 16;
        struct fh_request **v = realloc(s->fs_reqs, cap * sizeof(*v));

        cr_assert(v != NULL, "out of memory");
        s->fs_reqs = v;
        s->fs_capreqs = cap;
    }
    s->fs_reqs[s->fs_nreqs++] = r;
    fn = s->fs_fn;
    arg = s->fs_fn_arg;
    *owned = fn == NULL;
    if (fn == NULL && s->fs_head != NULL) {
        struct fh_queued *q = s->fs_head;

        s->fs_head = q->q_next;
        if (s->fs_head == NULL) {
            s->fs_tail = NULL;
        }
        *ans = q->q_answer;
        free(q);
    } else if (fn == NULL) {
        fh_answer_copy(ans, &s->fs_default);
    }
    pthread_mutex_unlock(&s->fs_lock);
    if (fn != NULL) {
        memset(ans, 0, sizeof(*ans));
        fn(r, ans, arg);
    }
}


/* Sends ans; false when the connection must end. */
static bool
fh_answer_send(struct fh_conn *c, const struct fh_answer *ans, bool close)
{
    int status = ans->fa_status ? ans->fa_status : 200;
    size_t body_len = ans->fa_body ? strlen(ans->fa_body) : 0;
    char *text = NULL;
    int n;
    bool ok;

    if (ans->fa_delay_ms > 0 && !fh_pause(c->c_s, ans->fa_delay_ms)) {
        return false;
    }
    if (ans->fa_close) {
        return false;
    }
    if (ans->fa_never) {
        /* Hold on, drop whatever comes, until the client leaves or we stop. */
        while (fh_read_more(c)) {
            c->c_len = 0;
        }
        return false;
    }
    n = asprintf(&text, "HTTP/1.1 %d %s\r\nContent-Length: %zu\r\n%s%s%s%s%s%s%s\r\n", status,
                 fh_reason(status), body_len,
                 body_len || ans->fa_content_type ? "Content-Type: " : "",
                 ans->fa_content_type ? ans->fa_content_type
                 : body_len ? "application/json" : "",
                 body_len || ans->fa_content_type ? "\r\n" : "",
                 ans->fa_retry_after ? "Retry-After: " : "",
                 ans->fa_retry_after ? ans->fa_retry_after : "",
                 ans->fa_retry_after ? "\r\n" : "",
                 close ? "Connection: close\r\n" : "");
    if (n < 0) {
        return false;
    }
    if (ans->fa_headers != NULL) {
        /* The extra lines go before the blank line that ends the head. */
        char *full = NULL;

        text[n - 2] = '\0';
        n = asprintf(&full, "%s%s\r\n", text, ans->fa_headers);
        free(text);
        if (n < 0) {
            return false;
        }
        text = full;
    }
    ok = fh_write_all(c, text, (size_t)n) && fh_write_all(c, ans->fa_body ? ans->fa_body : "",
                                                           body_len);
    free(text);
    return ok && !close;
}


static bool
fh_handshake(struct fh_conn *c)
{
    long long deadline = h_now_ms() + FH_HANDSHAKE_MS;

    c->c_ssl = SSL_new(c->c_s->fs_ctx);
    if (c->c_ssl == NULL || SSL_set_fd(c->c_ssl, c->c_fd) != 1) {
        return false;
    }
    while (h_now_ms() < deadline && !atomic_load(&c->c_s->fs_quit)) {
        int r = SSL_accept(c->c_ssl);
        int e = r == 1 ? SSL_ERROR_NONE : SSL_get_error(c->c_ssl, r);

        if (r == 1) {
            return true;
        }
        if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) {
            break;
        }
    }
    ERR_clear_error();
    return false;
}


static void *
fh_conn_main(void *arg)
{
    struct fh_conn *c = arg;
    struct fake_http *s = c->c_s;
    struct timeval tv = {1, 0};

    /* Blocking I/O that never blocks for long, so a stop is noticed. */
    (void)setsockopt(c->c_fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    (void)setsockopt(c->c_fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    if (s->fs_tls && !fh_handshake(c)) {
        pthread_mutex_lock(&s->fs_lock);
        s->fs_handshake_failures++;
        pthread_mutex_unlock(&s->fs_lock);
    } else {
        for (;;) {
            struct fh_request *r = NULL;
            struct fh_answer ans;
            bool close = false, owned = false, keep;

            if (!fh_read_request(c, &r, &close)) {
                break;
            }
            fh_record(s, r, &ans, &owned);
            keep = fh_answer_send(c, &ans, close);
            if (owned) {
                fh_answer_clear(&ans);
            }
            if (!keep) {
                break;
            }
        }
    }
    if (c->c_ssl != NULL) {
        (void)SSL_shutdown(c->c_ssl);
        SSL_free(c->c_ssl);
    }
    close(c->c_fd);
    free(c->c_buf);
    free(c);
    return NULL;
}


static void *
fh_accept_main(void *arg)
{
    struct fake_http *s = arg;

    while (!atomic_load(&s->fs_quit)) {
        struct pollfd p = {s->fs_listen, POLLIN, 0};
        struct fh_conn *c;
        pthread_t t;
        int fd;

        if (poll(&p, 1, FH_TICK_MS) <= 0) {
            continue;
        }
        fd = accept4(s->fs_listen, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0) {
            continue;
        }
        c = calloc(1, sizeof(*c));
        if (c == NULL) {
            close(fd);
            continue;
        }
        c->c_s = s;
        c->c_fd = fd;
        pthread_mutex_lock(&s->fs_lock);
        if (s->fs_nthreads == s->fs_capthreads) {
            size_t cap = s->fs_capthreads * 2 + 16;
            pthread_t *v = realloc(s->fs_threads, cap * sizeof(*v));

            if (v != NULL) {
                s->fs_threads = v;
                s->fs_capthreads = cap;
            }
        }
        if (s->fs_nthreads < s->fs_capthreads
            && pthread_create(&t, NULL, fh_conn_main, c) == 0)
        {
            s->fs_threads[s->fs_nthreads++] = t;
            c = NULL;
        }
        pthread_mutex_unlock(&s->fs_lock);
        if (c != NULL) {
            close(fd);
            free(c);
        }
    }
    return NULL;
}


/* ---- the API ------------------------------------------------------------- */

static SSL_CTX *
fh_tls_ctx(void)
{
    const char *dir = h_env("HOOKD_TEST_TLS_DIR");
    char *cert = h_strdupf("%s/cert.pem", dir);
    char *key = h_strdupf("%s/key.pem", dir);
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());

    cr_assert(ctx != NULL, "SSL_CTX_new failed");
    cr_assert(SSL_CTX_use_certificate_chain_file(ctx, cert) == 1, "cannot load %s", cert);
    cr_assert(SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) == 1, "cannot load %s",
              key);
    free(cert);
    free(key);
    return ctx;
}


struct fake_http *
fh_start(bool tls)
{
    struct fake_http *s = calloc(1, sizeof(*s));
    struct sockaddr_in sa = {0};
    socklen_t len = sizeof(sa);
    int one = 1;

    cr_assert(s != NULL, "out of memory");
    signal(SIGPIPE, SIG_IGN);
    s->fs_tls = tls;
    s->fs_ctx = tls ? fh_tls_ctx() : NULL;
    pthread_mutex_init(&s->fs_lock, NULL);
    atomic_init(&s->fs_quit, false);

    s->fs_listen = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    cr_assert(s->fs_listen >= 0, "socket: %s", strerror(errno));
    (void)setsockopt(s->fs_listen, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cr_assert(bind(s->fs_listen, (struct sockaddr *)&sa, sizeof(sa)) == 0, "bind: %s",
              strerror(errno));
    cr_assert(listen(s->fs_listen, 64) == 0, "listen: %s", strerror(errno));
    cr_assert(getsockname(s->fs_listen, (struct sockaddr *)&sa, &len) == 0);
    s->fs_port = ntohs(sa.sin_port);
    cr_assert(pthread_create(&s->fs_accept, NULL, fh_accept_main, s) == 0);
    return s;
}


int
fh_port(const struct fake_http *s)
{
    return s->fs_port;
}


char *
fh_url(const struct fake_http *s, const char *path)
{
    return h_strdupf("%s://127.0.0.1:%d%s", s->fs_tls ? "https" : "http", s->fs_port, path);
}


void
fh_push(struct fake_http *s, const struct fh_answer *a)
{
    struct fh_queued *q = calloc(1, sizeof(*q));

    cr_assert(q != NULL, "out of memory");
    fh_answer_copy(&q->q_answer, a);
    pthread_mutex_lock(&s->fs_lock);
    if (s->fs_tail != NULL) {
        s->fs_tail->q_next = q;
    } else {
        s->fs_head = q;
    }
    s->fs_tail = q;
    pthread_mutex_unlock(&s->fs_lock);
}


void
fh_set_default(struct fake_http *s, const struct fh_answer *a)
{
    struct fh_answer copy;

    fh_answer_copy(&copy, a);
    pthread_mutex_lock(&s->fs_lock);
    fh_answer_clear(&s->fs_default);
    s->fs_default = copy;
    pthread_mutex_unlock(&s->fs_lock);
}


void
fh_set_handler(struct fake_http *s, fh_handler fn, void *arg)
{
    pthread_mutex_lock(&s->fs_lock);
    s->fs_fn = fn;
    s->fs_fn_arg = arg;
    pthread_mutex_unlock(&s->fs_lock);
}


size_t
fh_count(struct fake_http *s)
{
    size_t n;

    pthread_mutex_lock(&s->fs_lock);
    n = s->fs_nreqs;
    pthread_mutex_unlock(&s->fs_lock);
    return n;
}


size_t
fh_handshake_failures(struct fake_http *s)
{
    size_t n;

    pthread_mutex_lock(&s->fs_lock);
    n = s->fs_handshake_failures;
    pthread_mutex_unlock(&s->fs_lock);
    return n;
}


bool
fh_wait(struct fake_http *s, size_t n, int timeout_ms)
{
    long long deadline = h_now_ms() + timeout_ms;

    while (fh_count(s) < n) {
        if (h_now_ms() >= deadline) {
            return false;
        }
        h_sleep_ms(20);
    }
    return true;
}


struct fh_request *
fh_request(struct fake_http *s, size_t i)
{
    struct fh_request *r = NULL;

    pthread_mutex_lock(&s->fs_lock);
    if (i < s->fs_nreqs) {
        r = fh_request_copy(s->fs_reqs[i]);
    }
    pthread_mutex_unlock(&s->fs_lock);
    return r;
}


void
fh_stop(struct fake_http *s)
{
    if (s == NULL) {
        return;
    }
    atomic_store(&s->fs_quit, true);
    pthread_join(s->fs_accept, NULL);
    close(s->fs_listen);

    /* Each notices the stop within a tick or a one-second socket timeout. */
    for (size_t i = 0; i < s->fs_nthreads; i++) {
        pthread_join(s->fs_threads[i], NULL);
    }
    free(s->fs_threads);
    for (size_t i = 0; i < s->fs_nreqs; i++) {
        fh_request_free(s->fs_reqs[i]);
    }
    free(s->fs_reqs);
    while (s->fs_head != NULL) {
        struct fh_queued *q = s->fs_head;

        s->fs_head = q->q_next;
        fh_answer_clear(&q->q_answer);
        free(q);
    }
    fh_answer_clear(&s->fs_default);
    SSL_CTX_free(s->fs_ctx);
    pthread_mutex_destroy(&s->fs_lock);
    free(s);
}
