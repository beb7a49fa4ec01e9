/* SPDX-License-Identifier: MIT */
#include "admin.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <civetweb.h>
#include <libpq-fe.h>
#include <openssl/crypto.h>
#include <openssl/sha.h>

#include "api.h"
#include "cfg.h"
#include "dispatch.h"
#include "log.h"
#include "metrics.h"
#include "store.h"

struct admin {
    struct mg_context *a_ctx;
    struct store *a_store;
    struct api *a_api;
    _Atomic(struct dispatch *) a_dispatch;
    unsigned char a_token_hash[SHA256_DIGEST_LENGTH];
    bool a_has_token;
    char *a_conninfo;
    pthread_mutex_t a_db_lock;      /* one scrape at a time uses the connection */
    PGconn *a_db;
};


static void
reply(struct mg_connection *conn, int status, const char *type, const char *body, size_t len)
{
    mg_printf(conn, "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
              "Cache-Control: no-store\r\n\r\n", status, mg_get_response_code_text(conn, status),
              type, len);
    mg_write(conn, body, len);
}


/* Bearer token check in constant time (both sides hashed). */
static bool
authorised(const struct admin *a, struct mg_connection *conn)
{
    const char *auth = mg_get_header(conn, "Authorization");
    unsigned char got[SHA256_DIGEST_LENGTH];

    if (!a->a_has_token) {
        return true;
    }
    /* The scheme name is case-insensitive (RFC 9110). */
    if (auth == NULL || strncasecmp(auth, "Bearer ", 7) != 0) {
        return false;
    }
    SHA256((const unsigned char *)auth + 7, strlen(auth + 7), got);
    return CRYPTO_memcmp(got, a->a_token_hash, sizeof(got)) == 0;
}


/* Jobs by route and state, read from the database; false when it cannot be. */
static bool
render_queue(struct admin *a, char **buf, size_t *len)
{
    PGresult *res;
    bool ok = true;

    pthread_mutex_lock(&a->a_db_lock);
    if (a->a_db != NULL && (!PQconsumeInput(a->a_db) || PQstatus(a->a_db) != CONNECTION_OK)) {
        PQfinish(a->a_db);
        a->a_db = NULL;
    }
    if (a->a_db == NULL) {
        const char *keys[] = {"connect_timeout", "application_name", "options", "dbname", NULL};
        const char *vals[] = {"2", "hookd-admin", "-c statement_timeout=2000", a->a_conninfo,
                              NULL};

        if (*a->a_conninfo == '\0') {
            keys[3] = NULL;
        }
        a->a_db = PQconnectdbParams(keys, vals, 1);
    }
    res = PQstatus(a->a_db) == CONNECTION_OK
          ? PQexec(a->a_db, "SELECT route, s.status, count(j.id) FROM (SELECT DISTINCT route"
                   " FROM hookd.jobs) r CROSS JOIN (VALUES ('pending'), ('running'), ('done'),"
                   " ('dead')) s(status) LEFT JOIN hookd.jobs j ON j.route = r.route"
                   " AND j.status = s.status GROUP BY 1, 2 ORDER BY 1, 2")
          : NULL;
    if (PQresultStatus(res) == PGRES_TUPLES_OK) {
        ok = metrics_text(buf, len, "# HELP hookd_jobs Jobs in the queue, by route and state.\n"
                          "# TYPE hookd_jobs gauge\n");
        for (int i = 0; ok && i < PQntuples(res); i++) {
            char route[160], labels[256];

            metrics_label_value(PQgetvalue(res, i, 0), route, sizeof(route));
            snprintf(labels, sizeof(labels), "route=\"%s\",state=\"%s\"", route,
                     PQgetvalue(res, i, 1));
            ok = metrics_line(buf, len, "hookd_jobs", labels, atof(PQgetvalue(res, i, 2)));
        }
    }
    PQclear(res);
    pthread_mutex_unlock(&a->a_db_lock);
    return ok;
}


/* API answers by class (status="none": no answer came). */
static bool
render_api(struct admin *a, char **buf, size_t *len)
{
    static const char *const classes[] = API_STATUS_CLASSES;
    uint64_t counts[API_NSTATUS] = {0};
    bool ok = metrics_text(buf, len, "# HELP hookd_api_requests_total Requests sent to the "
                           "ContextGPT API, by the class of their answer.\n"
                           "# TYPE hookd_api_requests_total counter\n");

    if (a->a_api != NULL) {
        api_status_counts(a->a_api, counts);
    }
    for (int i = 0; ok && i < API_NSTATUS; i++) {
        char labels[32];

        snprintf(labels, sizeof(labels), "status=\"%s\"", classes[i]);
        ok = metrics_line(buf, len, "hookd_api_requests_total", labels, (double)counts[i]);
    }
    return ok;
}


/* The writers' database connections: open, and busy with a commit. */
static bool
render_pool(struct admin *a, char **buf, size_t *len)
{
    int open, busy;

    store_connections(a->a_store, &open, &busy);
    return metrics_text(buf, len, "# HELP hookd_db_connections Writer connections to the "
                        "database, open and busy with a batch.\n"
                        "# TYPE hookd_db_connections gauge\n")
           && metrics_line(buf, len, "hookd_db_connections", "state=\"open\"", open)
           && metrics_line(buf, len, "hookd_db_connections", "state=\"busy\"", busy)
           && metrics_text(buf, len, "# HELP hookd_db_batches_total Event batches committed, "
                           "each in one statement and one transaction.\n"
                           "# TYPE hookd_db_batches_total counter\n")
           && metrics_line(buf, len, "hookd_db_batches_total", "",
                           (double)store_batches(a->a_store));
}


static void
serve_metrics(struct admin *a, struct mg_connection *conn)
{
    char *buf = NULL;
    size_t len = 0;
    unsigned long long done, dead;
    uint64_t sent = 0, limited = 0;

    bool ok;

    dispatch_counts(atomic_load(&a->a_dispatch), &done, &dead);
    if (a->a_api != NULL) {
        api_counters(a->a_api, &sent, &limited);
    }
    ok = metrics_text(&buf, &len, "# HELP hookd_database_up Whether the database is reachable "
                      "and migrated.\n# TYPE hookd_database_up gauge\n")
         && metrics_line(&buf, &len, "hookd_database_up", "", store_ready(a->a_store) ? 1 : 0)
         && metrics_render(&buf, &len)
         && metrics_text(&buf, &len, "# HELP hookd_jobs_done_total Jobs finished by this "
                         "instance.\n# TYPE hookd_jobs_done_total counter\n")
         && metrics_line(&buf, &len, "hookd_jobs_done_total", "", (double)done)
         && metrics_text(&buf, &len, "# HELP hookd_jobs_dead_total Jobs this instance "
                         "dead-lettered.\n# TYPE hookd_jobs_dead_total counter\n")
         && metrics_line(&buf, &len, "hookd_jobs_dead_total", "", (double)dead)
         && metrics_text(&buf, &len, "# HELP hookd_job_claims_total Claims that took jobs; a "
                         "claim takes several when handlers finish fast.\n"
                         "# TYPE hookd_job_claims_total counter\n")
         && metrics_line(&buf, &len, "hookd_job_claims_total", "",
                         (double)dispatch_claims(atomic_load(&a->a_dispatch)))
         && render_api(a, &buf, &len)
         && render_pool(a, &buf, &len)
         && metrics_text(&buf, &len, "# HELP hookd_api_rate_limit_waits_total API calls "
                         "hookd's limiter made wait.\n"
                         "# TYPE hookd_api_rate_limit_waits_total counter\n")
         && metrics_line(&buf, &len, "hookd_api_rate_limit_waits_total", "", (double)limited)
         && render_queue(a, &buf, &len);
    if (!ok) {
        reply(conn, 503, "text/plain", "out of memory\n", 14);
    } else {
        reply(conn, 200, "text/plain; version=0.0.4; charset=utf-8", buf, len);
    }
    free(buf);
}


static int
handle(struct mg_connection *conn, void *cbdata)
{
    struct admin *a = cbdata;
    const struct mg_request_info *ri = mg_get_request_info(conn);
    const char *path = ri->local_uri ? ri->local_uri : "";

    /* Liveness stays open to probes; everything else needs the token. */
    if (strcmp(path, "/healthz") != 0 && !authorised(a, conn)) {
        reply(conn, 401, "text/plain", "unauthorized\n", 13);
        return 401;
    }
    if (strcmp(ri->request_method, "GET") != 0 && strcmp(ri->request_method, "HEAD") != 0) {
        reply(conn, 405, "text/plain", "only GET\n", 9);
        return 405;
    }
    if (strcmp(path, "/healthz") == 0) {
        reply(conn, 200, "text/plain", "ok\n", 3);
        return 200;
    }
    if (strcmp(path, "/readyz") == 0) {
        if (store_ready(a->a_store)) {
            reply(conn, 200, "text/plain", "ready\n", 6);
            return 200;
        }
        reply(conn, 503, "text/plain", "not ready: database unavailable\n", 32);
        return 503;
    }
    if (strcmp(path, "/metrics") == 0) {
        serve_metrics(a, conn);
        return 200;
    }
    reply(conn, 404, "text/plain", "not found\n", 10);
    return 404;
}


static int
admin_log(const struct mg_connection *conn, const char *message)
{
    (void)conn;
    log_debug("admin civetweb: %.200s", message);
    return 1;
}


int
admin_start(const struct cfg *cfg, struct store *st, struct api *api, struct admin **ret,
            char *err, size_t errlen)
{
    struct admin *a;
    struct mg_callbacks cb;
    const char *options[] = {
        "listening_ports", cfg->cf_admin_listen, "num_threads", "2",
        "request_timeout_ms", "5000", "enable_keep_alive", "no", NULL
    };

    *ret = NULL;
    if (cfg->cf_admin_listen == NULL || *cfg->cf_admin_listen == '\0') {
        return 0;
    }
    a = calloc(1, sizeof(*a));
    if (a == NULL || (a->a_conninfo = strdup(cfg_conninfo(cfg))) == NULL) {
        free(a);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    a->a_store = st;
    a->a_api = api;
    pthread_mutex_init(&a->a_db_lock, NULL);
    if (cfg->cf_admin_token != NULL) {
        SHA256((const unsigned char *)cfg->cf_admin_token, strlen(cfg->cf_admin_token),
               a->a_token_hash);
        a->a_has_token = true;
    }
    memset(&cb, 0, sizeof(cb));
    cb.log_message = admin_log;
    mg_init_library(0);
    a->a_ctx = mg_start(&cb, a, options);
    if (a->a_ctx == NULL) {
        snprintf(err, errlen, "could not listen on %s for the admin listener (is the port in "
                 "use?)", cfg->cf_admin_listen);
        admin_stop(a);
        return -1;
    }
    mg_set_request_handler(a->a_ctx, "/", handle, a);
    *ret = a;
    return 0;
}


void
admin_set_dispatch(struct admin *a, struct dispatch *d)
{
    if (a != NULL) {
        atomic_store(&a->a_dispatch, d);
    }
}


void
admin_stop(struct admin *a)
{
    if (a == NULL) {
        return;
    }
    if (a->a_ctx != NULL) {
        mg_stop(a->a_ctx);
    }
    mg_exit_library();
    PQfinish(a->a_db);
    pthread_mutex_destroy(&a->a_db_lock);
    OPENSSL_cleanse(a->a_token_hash, sizeof(a->a_token_hash));
    free(a->a_conninfo);
    free(a);
}
