/* SPDX-License-Identifier: MIT */
#include "http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <civetweb.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/sha.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "body.h"
#include "cfg.h"
#include "clock.h"
#include "codec.h"
#include "log.h"
#include "metrics.h"
#include "route.h"
#include "store.h"
#include "verify.h"

/* Slots for per-request body deadlines; CivetWeb threads are at most 1024. */
#define HTTP_MAX_SLOTS 1100
/* How long the reaper sleeps between looks at the deadlines. */
#define HTTP_REAPER_TICK_MS 100
/* After a 413, this much of the rest of the body is read and dropped so the
 * client can see the answer before the connection closes. */
#define HTTP_DRAIN_BYTES (256 * 1024)
#define HTTP_DRAIN_MS 1000
#define HTTP_MAX_DELIVERY_ID 256

/* A body read in progress: the reaper shuts the socket down at the deadline. */
struct deadline_slot {
    int ds_fd;
    long long ds_deadline_ms;
    bool ds_active;
    bool ds_fired;
};

struct http {
    struct mg_context *h_ctx;
    struct store *h_store;

    struct cfg_holder *h_cfgs;

    pthread_mutex_t h_slot_lock;
    struct deadline_slot h_slots[HTTP_MAX_SLOTS];
    atomic_int h_next_slot;
    pthread_t h_reaper;
    bool h_reaper_started;
    atomic_bool h_stopping;
    atomic_bool h_reaper_quit;

    /* The certificate handed to each new handshake; swapped on reload. */
    pthread_mutex_t h_tls_lock;
    struct tls_pair *h_tls;
};

/* A certificate, its chain and its key, as loaded from the config's files. */
struct tls_pair {
    X509 *tp_cert;
    STACK_OF(X509) *tp_chain;
    EVP_PKEY *tp_key;
};

/*
 * The client socket of the connection this worker thread is serving. CivetWeb
 * accepts TLS on the worker thread that then serves the connection, so the
 * handshake callback records it here; the handler checks it by peer port.
 */
static __thread int tl_client_fd = -1;
static __thread int tl_slot = -1;

/*
 * The webhook request this thread is answering, for its metrics. They are
 * counted by respond(), just before the answer is written: a client that
 * reads /metrics right after its answer then finds its request counted.
 */
static __thread struct {
    bool rm_pending;
    const char *rm_path;            /* the endpoint, NULL when none matched */
    long long rm_started_ms;
} tl_metrics;


/* ---- deadlines --------------------------------------------------------- */

static void *
reaper_main(void *arg)
{
    struct http *h = arg;

    while (!atomic_load(&h->h_reaper_quit)) {
        long long now = clock_mono_ms();

        pthread_mutex_lock(&h->h_slot_lock);
        for (int i = 0; i < HTTP_MAX_SLOTS; i++) {
            struct deadline_slot *s = &h->h_slots[i];

            if (s->ds_active && !s->ds_fired && now >= s->ds_deadline_ms) {
                /* Wakes the worker blocked in a read of this socket. */
                (void)shutdown(s->ds_fd, SHUT_RDWR);
                s->ds_fired = true;
            }
        }
        pthread_mutex_unlock(&h->h_slot_lock);
        usleep(HTTP_REAPER_TICK_MS * 1000);
    }
    return NULL;
}


/* The client socket of conn, or -1 when it cannot be known for sure. */
static int
client_fd(const struct mg_request_info *ri)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    int port = -1;

    if (tl_client_fd < 0 || getpeername(tl_client_fd, (struct sockaddr *)&ss, &len) != 0) {
        return -1;
    }
    if (ss.ss_family == AF_INET) {
        port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
    } else if (ss.ss_family == AF_INET6) {
        port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    }
    return port == ri->remote_port ? tl_client_fd : -1;
}


static void
deadline_arm(struct http *h, int fd, int timeout_ms)
{
    struct deadline_slot *s;

    if (fd < 0) {
        return;
    }
    if (tl_slot < 0) {
        tl_slot = atomic_fetch_add(&h->h_next_slot, 1);
    }
    if (tl_slot >= HTTP_MAX_SLOTS) {
        return;
    }
    s = &h->h_slots[tl_slot];
    pthread_mutex_lock(&h->h_slot_lock);
    s->ds_fd = fd;
    s->ds_deadline_ms = clock_mono_ms() + timeout_ms;
    s->ds_fired = false;
    s->ds_active = true;
    pthread_mutex_unlock(&h->h_slot_lock);
}


/* Disarms this thread's deadline; true when it had fired. */
static bool
deadline_disarm(struct http *h)
{
    struct deadline_slot *s;
    bool fired;

    if (tl_slot < 0 || tl_slot >= HTTP_MAX_SLOTS) {
        return false;
    }
    s = &h->h_slots[tl_slot];
    pthread_mutex_lock(&h->h_slot_lock);
    fired = s->ds_active && s->ds_fired;
    s->ds_active = false;
    pthread_mutex_unlock(&h->h_slot_lock);
    return fired;
}


/* ---- answers ----------------------------------------------------------- */

/*
 * Writes a whole answer with one write, so it leaves as one TLS record:
 * status line, headers, a JSON body and a newline.
 */
static void
respond(struct mg_connection *conn, int status, const char *json, const char *hname,
        const char *hvalue)
{
    char out[1024];
    int n;

    if (tl_metrics.rm_pending) {
        tl_metrics.rm_pending = false;
        metrics_request(tl_metrics.rm_path, status,
                        (clock_mono_ms() - tl_metrics.rm_started_ms) / 1000.0);
    }
    n = snprintf(out, sizeof(out),
                 "HTTP/1.1 %d %s\r\n"
                 "Content-Type: application/json\r\n"
                 "Content-Length: %zu\r\n"
                 "Cache-Control: no-store\r\n"
                 "%s%s%s"
                 "%s"
                 "\r\n%s\n",
                 status, mg_get_response_code_text(conn, status), strlen(json) + 1,
                 hname ? hname : "", hname ? ": " : "", hname ? hvalue : "",
                 hname ? "\r\n" : "", json);

    if (n > 0 && (size_t)n < sizeof(out)) {
        mg_write(conn, out, (size_t)n);
    }
}


static void
respond_unavailable(struct mg_connection *conn, const struct cfg *cfg)
{
    char retry[16];

    snprintf(retry, sizeof(retry), "%d", cfg->cf_retry_after);
    respond(conn, 503, "{\"error\":\"unavailable\"}", "Retry-After", retry);
}


/* ---- request pieces ---------------------------------------------------- */

struct header_ctx {
    const struct mg_request_info *hc_ri;
};


static const char *
header_lookup(void *ctx, const char *name, int index)
{
    const struct mg_request_info *ri = ((struct header_ctx *)ctx)->hc_ri;

    for (int i = 0; i < ri->num_headers; i++) {
        if (strcasecmp(ri->http_headers[i].name, name) == 0 && index-- == 0) {
            return ri->http_headers[i].value;
        }
    }
    return NULL;
}


/* JSON content types: application/json, optionally with charset=utf-8. */
static bool
content_type_ok(const char *ct)
{
    const char *p;

    if (ct == NULL) {
        return true;
    }
    while (*ct == ' ') {
        ct++;
    }
    if (strncasecmp(ct, "application/json", 16) != 0) {
        return false;
    }
    p = ct + 16;
    while (*p == ' ') {
        p++;
    }
    if (*p == '\0') {
        return true;
    }
    if (*p++ != ';') {
        return false;
    }
    while (*p == ' ') {
        p++;
    }
    if (*p == '\0') {
        return true;
    }
    if (strncasecmp(p, "charset=", 8) != 0) {
        return false;
    }
    p += 8;
    if (*p == '"') {
        p++;
    }
    return strncasecmp(p, "utf-8", 5) == 0 || strncasecmp(p, "utf8", 4) == 0;
}


enum read_outcome {
    READ_OK = 0,
    READ_TOO_LARGE,
    READ_TIMEOUT,
    READ_BROKEN,
    READ_NO_MEMORY
};


/*
 * Reads the whole body into a malloc'd buffer (NUL-terminated), at most
 * max_body bytes, within timeout_ms from now however slowly it trickles.
 */
static enum read_outcome
read_body(struct http *h, struct mg_connection *conn, const struct mg_request_info *ri,
          long max_body, int timeout_ms, unsigned char **ret, size_t *ret_len)
{
    long long declared = ri->content_length;
    size_t cap = declared >= 0 ? (size_t)declared + 1 : 16384;
    size_t len = 0;
    unsigned char *buf;
    enum read_outcome out = READ_OK;

    if (declared > max_body) {
        return READ_TOO_LARGE;
    }
    buf = malloc(cap);
    if (buf == NULL) {
        return READ_NO_MEMORY;
    }
    deadline_arm(h, client_fd(ri), timeout_ms);
    for (;;) {
        size_t want;
        int n;

        if (len + 1 >= cap) {
            size_t grown_cap = cap * 2 > (size_t)max_body + 2 ? (size_t)max_body + 2 : cap * 2;
            unsigned char *grown;

            if (grown_cap <= cap) {
                out = READ_TOO_LARGE;
                break;
            }
            grown = realloc(buf, grown_cap);
            if (grown == NULL) {
                out = READ_NO_MEMORY;
                break;
            }
            buf = grown;
            cap = grown_cap;
        }
        want = cap - 1 - len;
        n = mg_read(conn, buf + len, want);
        if (n == 0) {
            break;
        }
        if (n < 0) {
            out = READ_BROKEN;
            break;
        }
        len += (size_t)n;
        if (len > (size_t)max_body) {
            out = READ_TOO_LARGE;
            break;
        }
        if (declared >= 0 && len == (size_t)declared) {
            break;
        }
    }
    /* mg_read gives 0 also when a declared body stops short (closed or timed out). */
    if (out == READ_OK && declared >= 0 && len != (size_t)declared) {
        out = READ_BROKEN;
    }
    if (deadline_disarm(h)) {
        out = READ_TIMEOUT;
    }
    if (out != READ_OK) {
        free(buf);
        return out;
    }
    buf[len] = '\0';
    *ret = buf;
    *ret_len = len;
    return READ_OK;
}


/* After refusing a body, drops a bounded part of the rest so the answer can be read. */
static void
drain_some(struct http *h, struct mg_connection *conn, const struct mg_request_info *ri)
{
    char scratch[16384];
    size_t dropped = 0;
    int n;

    deadline_arm(h, client_fd(ri), HTTP_DRAIN_MS);
    while (dropped < HTTP_DRAIN_BYTES && (n = mg_read(conn, scratch, sizeof(scratch))) > 0) {
        dropped += (size_t)n;
    }
    (void)deadline_disarm(h);
}


/*
 * The dedup key: the sender's delivery id when there is one, else the
 * body's hash. False only when OpenSSL could not hash.
 */
static bool
dedup_key(const struct cfg_endpoint *ep, struct header_ctx *hc, const unsigned char *body,
          size_t len, char *out, size_t cap, const char **ret_delivery_id)
{
    const char *id = NULL;
    unsigned char digest[SHA256_DIGEST_LENGTH];
    char hex[2 * SHA256_DIGEST_LENGTH + 1];

    if (ep->ce_policy.vp_scheme == VERIFY_SCHEME_STANDARD) {
        id = header_lookup(hc, "webhook-id", 0);
    } else if (ep->ce_delivery_id_header != NULL) {
        id = header_lookup(hc, ep->ce_delivery_id_header, 0);
    }
    if (id != NULL && *id != '\0' && strlen(id) <= HTTP_MAX_DELIVERY_ID) {
        snprintf(out, cap, "id:%s:%s", ep->ce_path, id);
        *ret_delivery_id = id;
        return true;
    }
    *ret_delivery_id = NULL;
    if (!verify_sha256(body, len, digest)) {
        return false;
    }
    codec_hex_encode(digest, sizeof(digest), hex);
    snprintf(out, cap, "sha256:%s", hex);
    return true;
}


static int
quarantine(struct http *h, struct mg_connection *conn, const struct mg_request_info *ri,
           const struct cfg *cfg, const struct cfg_endpoint *ep, const char *used,
           const unsigned char *body, size_t len, const char *reason)
{
    struct store_item item;
    char answer[160];
    enum store_result r;

    memset(&item, 0, sizeof(item));
    item.si_kind = STORE_QUARANTINE;
    item.si_endpoint = ep->ce_path;
    item.si_reason = reason;
    item.si_content_type = mg_get_header(conn, "Content-Type");
    item.si_scheme = used;
    item.si_remote_addr = ri->remote_addr;
    item.si_body = body;
    item.si_body_len = len;
    item.si_received_us = clock_wall_us();
    r = store_submit(h->h_store, &item);
    if (r != STORE_QUARANTINED) {
        log_warning("could not quarantine a malformed event endpoint=%s reason=\"%s\" "
                    "result=%s", ep->ce_path, reason, store_result_name(r));
        respond_unavailable(conn, cfg);
        return 503;
    }
    log_info("malformed event quarantined quarantine_id=%lld endpoint=%s reason=\"%s\" "
             "remote=%s", item.si_id, ep->ce_path, reason, ri->remote_addr);
    /* Reasons are fixed texts of body.c with no quote or backslash. */
    snprintf(answer, sizeof(answer), "{\"error\":\"malformed\",\"reason\":\"%s\"}", reason);
    respond(conn, 400, answer, NULL, NULL);
    return 400;
}


static int
store_event(struct http *h, struct mg_connection *conn, const struct mg_request_info *ri,
            const struct cfg *cfg, const struct cfg_endpoint *ep, const char *used,
            const unsigned char *body, size_t len, struct body_event *ev)
{
    struct header_ctx hc = {ri};
    struct store_item item;
    char *routes;
    size_t routes_cap = 1;
    char key[HTTP_MAX_DELIVERY_ID + 160];
    char answer[96];
    char type[72];
    enum store_result r;

    memset(&item, 0, sizeof(item));
    item.si_kind = STORE_EVENT;
    if (!dedup_key(ep, &hc, body, len, key, sizeof(key), &item.si_delivery_id)) {
        log_error("could not hash the body for its dedup key endpoint=%s", ep->ce_path);
        respond_unavailable(conn, cfg);
        return 503;
    }
    item.si_dedup_key = key;
    item.si_event_type = ev->be_type;
    /* Room for every route name: whatever matches fits. */
    for (size_t i = 0; i < cfg->cf_nroutes; i++) {
        routes_cap += strlen(cfg->cf_routes[i].cr_name) + 1;
    }
    routes = malloc(routes_cap);
    if (routes == NULL || !route_select(cfg, ev, routes, routes_cap)) {
        free(routes);
        log_error("could not allocate the route list endpoint=%s", ep->ce_path);
        respond_unavailable(conn, cfg);
        return 503;
    }
    item.si_routes = routes;
    item.si_endpoint = ep->ce_path;
    item.si_scheme = used;
    item.si_remote_addr = ri->remote_addr;
    item.si_body = body;
    item.si_body_len = len;
    item.si_received_us = clock_wall_us();
    r = store_submit(h->h_store, &item);
    free(routes);
    log_value(ev->be_type, 64, type, sizeof(type));
    switch (r) {
    case STORE_STORED:
    case STORE_DUPLICATE:
        if (r == STORE_STORED) {
            metrics_event(ev->be_type);
        }
        log_info("event %s id=%lld type=%s endpoint=%s verified=%s remote=%s",
                 r == STORE_STORED ? "stored" : "duplicate, already stored", item.si_id, type,
                 ep->ce_path, used, ri->remote_addr);
        if (item.si_id > 0) {
            snprintf(answer, sizeof(answer), "{\"status\":\"%s\",\"id\":\"%lld\"}",
                     store_result_name(r), item.si_id);
        } else {
            snprintf(answer, sizeof(answer), "{\"status\":\"%s\"}", store_result_name(r));
        }
        respond(conn, 200, answer, NULL, NULL);
        return 200;
    case STORE_QUARANTINED:
        snprintf(answer, sizeof(answer), "{\"error\":\"malformed\",\"reason\":"
                 "\"database refused the payload\"}");
        respond(conn, 400, answer, NULL, NULL);
        return 400;
    case STORE_UNAVAILABLE:
        break;
    }
    log_info("event not stored, answered 503 type=%s endpoint=%s remote=%s", type, ep->ce_path,
             ri->remote_addr);
    respond_unavailable(conn, cfg);
    return 503;
}


static int
serve_webhook(struct http *h, struct mg_connection *conn, const struct mg_request_info *ri,
              const struct cfg *cfg, const struct cfg_endpoint *ep)
{
    struct header_ctx hc = {ri};
    struct verify_request vreq;
    struct body_event ev;
    unsigned char *body = NULL;
    size_t len = 0;
    const char *used = NULL;
    enum verify_result vr;
    enum body_class bc;
    int status;

    if (strcmp(ri->request_method, "POST") != 0) {
        respond(conn, 405, "{\"error\":\"method not allowed\"}", "Allow", "POST");
        return 405;
    }
    if (!content_type_ok(mg_get_header(conn, "Content-Type"))) {
        log_client("request refused: content type is not JSON endpoint=%s remote=%s",
                   ep->ce_path, ri->remote_addr);
        respond(conn, 415, "{\"error\":\"content type must be application/json\"}", NULL,
                NULL);
        return 415;
    }
    switch (read_body(h, conn, ri, cfg->cf_max_body, cfg->cf_body_timeout_ms, &body, &len)) {
    case READ_OK:
        break;
    case READ_TOO_LARGE:
        log_client("request refused: body over the limit endpoint=%s limit=%ld remote=%s",
                   ep->ce_path, cfg->cf_max_body, ri->remote_addr);
        respond(conn, 413, "{\"error\":\"body too large\"}", "Connection", "close");
        drain_some(h, conn, ri);
        return 413;
    case READ_TIMEOUT:
        log_client("request dropped: body not received in time endpoint=%s timeout_ms=%d "
                   "remote=%s", ep->ce_path, cfg->cf_body_timeout_ms, ri->remote_addr);
        return 408;
    case READ_BROKEN:
        log_client("request dropped: body could not be read endpoint=%s remote=%s",
                   ep->ce_path, ri->remote_addr);
        return 400;
    case READ_NO_MEMORY:
        log_error("could not allocate a request body endpoint=%s", ep->ce_path);
        respond_unavailable(conn, cfg);
        return 503;
    }

    vreq.vr_header = header_lookup;
    vreq.vr_ctx = &hc;
    vreq.vr_body = body;
    vreq.vr_body_len = len;
    vreq.vr_now = time(NULL);
    vr = verify_check(&ep->ce_policy, &vreq, &used);
    if (vr != VERIFY_OK) {
        log_client("request refused: not verified endpoint=%s reason=%s remote=%s",
                   ep->ce_path, verify_result_name(vr), ri->remote_addr);
        metrics_verify_failure(vr);
        respond(conn, 401, "{\"error\":\"unauthorized\"}", NULL, NULL);
        free(body);
        return 401;
    }

    bc = body_classify(body, len, cfg->cf_json_max_depth, &ev);
    if (bc != BODY_OK) {
        status = quarantine(h, conn, ri, cfg, ep, used, body, len, body_class_reason(bc));
    } else {
        status = store_event(h, conn, ri, cfg, ep, used, body, len, &ev);
        body_event_clear(&ev);
    }
    free(body);
    return status;
}


static int
handle_request(struct mg_connection *conn, void *cbdata)
{
    struct http *h = cbdata;
    const struct mg_request_info *ri = mg_get_request_info(conn);
    const struct cfg *cfg;
    const struct cfg_endpoint *ep;
    long long started = clock_mono_ms();
    int status;

    if (atomic_load(&h->h_stopping)) {
        respond(conn, 503, "{\"error\":\"shutting down\"}", "Retry-After", "5");
        return 503;
    }
    /*
     * CivetWeb keeps the first MG_MAX_HEADERS headers and drops the rest
     * without a word, Content-Length and credentials included: a full table
     * may hide a cut, so it is refused (and the connection closed).
     */
    if (ri->num_headers >= MG_MAX_HEADERS) {
        log_client("request refused: too many headers remote=%s", ri->remote_addr);
        respond(conn, 431, "{\"error\":\"too many headers\"}", "Connection", "close");
        return 431;
    }
    cfg = cfg_get(h->h_cfgs);
    ep = ri->local_uri ? cfg_find_endpoint(cfg, ri->local_uri) : NULL;
    tl_metrics.rm_pending = true;
    tl_metrics.rm_path = ep ? ep->ce_path : NULL;
    tl_metrics.rm_started_ms = started;
    if (ep == NULL) {
        respond(conn, 404, "{\"error\":\"not found\"}", NULL, NULL);
        status = 404;
    } else {
        status = serve_webhook(h, conn, ri, cfg, ep);
    }
    if (tl_metrics.rm_pending) {
        /* Answered without respond() (by CivetWeb itself, say). */
        tl_metrics.rm_pending = false;
        metrics_request(ep ? ep->ce_path : NULL, status, (clock_mono_ms() - started) / 1000.0);
    }
    cfg_put(h->h_cfgs, cfg);
    return status;
}


/* ---- TLS and CivetWeb -------------------------------------------------- */

static void
tls_info(const SSL *ssl, int where, int ret)
{
    (void)ret;
    if ((where & SSL_CB_HANDSHAKE_START) && SSL_is_server((SSL *)ssl)) {
        tl_client_fd = SSL_get_fd(ssl);
    }
}


static void
tls_pair_free(struct tls_pair *p)
{
    if (p == NULL) {
        return;
    }
    X509_free(p->tp_cert);
    sk_X509_pop_free(p->tp_chain, X509_free);
    EVP_PKEY_free(p->tp_key);
    free(p);
}


/* Reads a PEM certificate (then its chain) and key, checking they match. */
static struct tls_pair *
tls_pair_load(const char *cert_file, const char *key_file)
{
    struct tls_pair *p = calloc(1, sizeof(*p));
    FILE *f;
    X509 *extra;

    if (p == NULL || (p->tp_chain = sk_X509_new_null()) == NULL) {
        free(p);
        return NULL;
    }
    f = fopen(cert_file, "r");
    if (f != NULL) {
        p->tp_cert = PEM_read_X509(f, NULL, NULL, NULL);
        while (p->tp_cert != NULL && (extra = PEM_read_X509(f, NULL, NULL, NULL)) != NULL) {
            if (!sk_X509_push(p->tp_chain, extra)) {
                X509_free(extra);
            }
        }
        fclose(f);
    }
    ERR_clear_error();
    f = fopen(key_file, "r");
    if (f != NULL) {
        p->tp_key = PEM_read_PrivateKey(f, NULL, NULL, NULL);
        fclose(f);
    }
    if (p->tp_cert == NULL || p->tp_key == NULL || X509_check_private_key(p->tp_cert,
                                                                          p->tp_key) != 1)
    {
        ERR_clear_error();
        tls_pair_free(p);
        return NULL;
    }
    return p;
}


/* Per handshake: the certificate currently loaded (reloads swap it). */
static int
tls_cert_cb(SSL *ssl, void *arg)
{
    struct http *h = arg;
    int ok;

    pthread_mutex_lock(&h->h_tls_lock);
    /*
     * OpenSSL keeps one certificate per key type: without clearing, an RSA
     * pair loaded over an ECDSA one would sit beside it and never be used.
     * SSL_use_cert_and_key takes its own references.
     */
    SSL_certs_clear(ssl);
    ok = h->h_tls != NULL && SSL_use_cert_and_key(ssl, h->h_tls->tp_cert, h->h_tls->tp_key,
                                                  h->h_tls->tp_chain, 1) == 1;
    pthread_mutex_unlock(&h->h_tls_lock);
    return ok ? 1 : 0;
}


int
http_reload_tls(struct http *h, const char *cert_file, const char *key_file, char *err,
                size_t errlen)
{
    struct tls_pair *p = tls_pair_load(cert_file, key_file);
    struct tls_pair *old;

    if (p == NULL) {
        snprintf(err, errlen, "could not load the TLS certificate \"%s\" with key \"%s\" (a "
                 "PEM certificate and its matching private key are needed)", cert_file,
                 key_file);
        return -1;
    }
    pthread_mutex_lock(&h->h_tls_lock);
    old = h->h_tls;
    h->h_tls = p;
    pthread_mutex_unlock(&h->h_tls_lock);
    tls_pair_free(old);
    return 0;
}


static int
init_tls(void *ssl_ctx, void *user_data)
{
    SSL_CTX *ctx = ssl_ctx;
    struct http *h = user_data;
    const struct cfg *cfg = cfg_get(h->h_cfgs);
    int result = 1;

    if (SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1
        || SSL_CTX_set_cipher_list(ctx, cfg->cf_tls_ciphers) != 1
        || SSL_CTX_set1_groups_list(ctx, "X25519:P-256:P-384") != 1
        || SSL_CTX_use_certificate_chain_file(ctx, cfg->cf_tls_cert) != 1
        || SSL_CTX_use_PrivateKey_file(ctx, cfg->cf_tls_key, SSL_FILETYPE_PEM) != 1
        || SSL_CTX_check_private_key(ctx) != 1)
    {
        log_error("could not set up TLS certificate=\"%s\" key=\"%s\"", cfg->cf_tls_cert,
                  cfg->cf_tls_key);
        result = -1;
    } else {
        SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
        SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER);
        SSL_CTX_set_info_callback(ctx, tls_info);
        SSL_CTX_set_cert_cb(ctx, tls_cert_cb, h);
    }
    cfg_put(h->h_cfgs, cfg);
    return result;
}


static int
civet_log(const struct mg_connection *conn, const char *message)
{
    (void)conn;
    log_debug("civetweb: %.200s", message);
    return 1;
}


int
http_start(struct cfg_holder *cfgs, struct store *store, struct http **ret, char *err,
           size_t errlen)
{
    struct http *h = calloc(1, sizeof(*h));
    const struct cfg *cfg;
    struct mg_callbacks cb;
    struct mg_init_data init;
    struct mg_error_data error;
    char error_text[256] = "";
    char ports[1024] = "";
    char threads[16], req_timeout[16], ka_timeout[16], max_header[16];
    const char *options[32];
    int o = 0;

    if (h == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    h->h_cfgs = cfgs;
    h->h_store = store;
    pthread_mutex_init(&h->h_slot_lock, NULL);
    pthread_mutex_init(&h->h_tls_lock, NULL);
    cfg = cfg_get(cfgs);
    if (http_reload_tls(h, cfg->cf_tls_cert, cfg->cf_tls_key, err, errlen) < 0) {
        cfg_put(cfgs, cfg);
        http_stop(h);
        return -1;
    }

    for (size_t i = 0; i < cfg->cf_nlisten; i++) {
        size_t n = strlen(ports);

        snprintf(ports + n, sizeof(ports) - n, "%s%ss", i ? "," : "", cfg->cf_listen[i]);
    }
    snprintf(threads, sizeof(threads), "%d", cfg->cf_threads);
    snprintf(req_timeout, sizeof(req_timeout), "%d", cfg->cf_request_timeout_ms);
    snprintf(ka_timeout, sizeof(ka_timeout), "%d", cfg->cf_keep_alive_timeout_ms);
    snprintf(max_header, sizeof(max_header), "%d", cfg->cf_max_header);
    options[o++] = "listening_ports";
    options[o++] = ports;
    options[o++] = "num_threads";
    options[o++] = threads;
    options[o++] = "request_timeout_ms";
    options[o++] = req_timeout;
    options[o++] = "keep_alive_timeout_ms";
    options[o++] = ka_timeout;
    options[o++] = "enable_keep_alive";
    options[o++] = "yes";
    options[o++] = "max_request_size";
    options[o++] = max_header;
    options[o++] = "tcp_nodelay";
    options[o++] = "1";
    options[o++] = "connection_queue";
    options[o++] = "1024";
    options[o++] = "listen_backlog";
    options[o++] = "1024";
    options[o++] = "ssl_protocol_version";
    options[o++] = "4";
    options[o++] = "enable_auth_domain_check";
    options[o++] = "no";
    options[o++] = NULL;

    memset(&cb, 0, sizeof(cb));
    cb.init_ssl = init_tls;
    cb.log_message = civet_log;
    memset(&init, 0, sizeof(init));
    init.callbacks = &cb;
    init.user_data = h;
    init.configuration_options = options;
    memset(&error, 0, sizeof(error));
    error.text = error_text;
    error.text_buffer_size = sizeof(error_text);

    mg_init_library(MG_FEATURES_TLS | MG_FEATURES_IPV6);
    h->h_ctx = mg_start2(&init, &error);
    if (h->h_ctx == NULL) {
        char shown[1024];
        size_t used = 0;

        /* The list as configured, without CivetWeb's "s" suffixes. */
        for (size_t i = 0; i < cfg->cf_nlisten && used < sizeof(shown); i++) {
            used += (size_t)snprintf(shown + used, sizeof(shown) - used, "%s%s", i ? ", " : "",
                                     cfg->cf_listen[i]);
        }
        snprintf(err, errlen, "could not listen on %s: %s (is the port in use, or the address "
                 "not this machine's?)", shown, error_text[0] ? error_text : "unknown error");
        cfg_put(cfgs, cfg);
        http_stop(h);
        return -1;
    }
    cfg_put(cfgs, cfg);
    mg_set_request_handler(h->h_ctx, "/", handle_request, h);
    if (pthread_create(&h->h_reaper, NULL, reaper_main, h) != 0) {
        snprintf(err, errlen, "could not start the deadline thread");
        http_stop(h);
        return -1;
    }
    h->h_reaper_started = true;
    *ret = h;
    return 0;
}


void
http_stop(struct http *h)
{
    if (h == NULL) {
        return;
    }
    atomic_store(&h->h_stopping, true);
    if (h->h_ctx != NULL) {
        /* Waits for the worker threads, so no request uses the config after. */
        mg_stop(h->h_ctx);
    }
    atomic_store(&h->h_reaper_quit, true);
    if (h->h_reaper_started) {
        pthread_join(h->h_reaper, NULL);
    }
    pthread_mutex_destroy(&h->h_slot_lock);
    tls_pair_free(h->h_tls);
    pthread_mutex_destroy(&h->h_tls_lock);
    mg_exit_library();
    free(h);
}
