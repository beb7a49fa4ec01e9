/* SPDX-License-Identifier: MIT */
/*
 * The admin listener: /healthz, /readyz and /metrics. The metrics text is
 * parsed strictly (every sample line is name{labels} value, every metric
 * has HELP and TYPE first) and its counters must match what the test sent.
 */
#include <criterion/criterion.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "support/harness.h"

TestSuite(admin, .fini = h_suite_fini, .timeout = 60);


/* A plain HTTP GET on 127.0.0.1:port; returns the status, *body the rest. */
static int
http_get(int port, const char *path, const char *auth, char **body)
{
    struct sockaddr_in sa = {0};
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    char req[512];
    char *buf = NULL;
    size_t len = 0;
    char chunk[4096];
    ssize_t n;
    int status = 0;

    sa.sin_family = AF_INET;
    sa.sin_port = htons((unsigned short)port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cr_assert(fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0,
              "admin port %d not open", port);
    snprintf(req, sizeof(req), "GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n%s%s%s\r\n", path,
             auth ? "Authorization: Bearer " : "", auth ? auth : "", auth ? "\r\n" : "");
    cr_assert(write(fd, req, strlen(req)) == (ssize_t)strlen(req));
    while ((n = read(fd, chunk, sizeof(chunk))) > 0) {
        buf = realloc(buf, len + (size_t)n + 1);
        memcpy(buf + len, chunk, (size_t)n);
        len += (size_t)n;
        buf[len] = '\0';
    }
    close(fd);
    cr_assert_not_null(buf, "no answer on %s", path);
    sscanf(buf, "HTTP/1.%*d %d", &status);
    *body = strstr(buf, "\r\n\r\n") ? strdup(strstr(buf, "\r\n\r\n") + 4) : strdup("");
    free(buf);
    return status;
}


/*
 * Checks the exposition format line by line and returns the value of the
 * sample whose name and labels are exactly want ("name{labels}"), or -1.
 */
static double
metric(const char *text, const char *want)
{
    regex_t sample, help, type;
    char *copy = strdup(text);
    char *save = NULL;
    double found = -1;
    char typed[128] = "";

    cr_assert(regcomp(&sample, "^([a-zA-Z_:][a-zA-Z0-9_:]*)(\\{[a-zA-Z_][a-zA-Z0-9_]*=\"([^\"\\\\]"
                      "|\\\\.)*\"(,[a-zA-Z_][a-zA-Z0-9_]*=\"([^\"\\\\]|\\\\.)*\")*\\})? "
                      "[-+0-9.eEInfa]+$", REG_EXTENDED) == 0);
    cr_assert(regcomp(&help, "^# HELP [a-zA-Z_:][a-zA-Z0-9_:]* .+$", REG_EXTENDED) == 0);
    cr_assert(regcomp(&type, "^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge|histogram)$",
                      REG_EXTENDED) == 0);
    for (char *line = strtok_r(copy, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        if (strncmp(line, "# HELP", 6) == 0) {
            cr_assert(regexec(&help, line, 0, NULL, 0) == 0, "bad HELP line: %s", line);
            continue;
        }
        if (strncmp(line, "# TYPE", 6) == 0) {
            cr_assert(regexec(&type, line, 0, NULL, 0) == 0, "bad TYPE line: %s", line);
            sscanf(line, "# TYPE %127s", typed);
            continue;
        }
        cr_assert(regexec(&sample, line, 0, NULL, 0) == 0, "bad sample line: %s", line);
        /* Each sample belongs to the metric whose TYPE came last. */
        cr_assert(typed[0] != '\0' && strncmp(line, typed, strlen(typed)) == 0,
                  "sample without its TYPE: %s", line);
        if (strncmp(line, want, strlen(want)) == 0 && line[strlen(want)] == ' ') {
            found = strtod(line + strlen(want) + 1, NULL);
        }
    }
    regfree(&sample);
    regfree(&help);
    regfree(&type);
    free(copy);
    return found;
}


Test(admin, metrics_parse_and_count_what_was_sent)
{
    struct h_ctx x;
    char *body;
    char *text;
    size_t len;
    const char *secret;

    h_ctx_init(&x, "admin_metrics");
    x.hx_cfg.hc_admin_port = h_free_port();
    h_ctx_start(&x);
    secret = x.hx_cfg.hc_secrets[0];

    cr_assert_eq(http_get(x.hx_cfg.hc_admin_port, "/healthz", NULL, &text), 200);
    free(text);
    cr_assert_eq(http_get(x.hx_cfg.hc_admin_port, "/readyz", NULL, &text), 200);
    free(text);

    for (unsigned i = 1; i <= 2; i++) {
        body = h_user_event(i, &len);
        cr_assert_eq(h_post_signed(x.hx_port, H_DEFAULT_PATH, secret, body, len, NULL), 200);
        if (i == 2) {
            /* The same delivery again: a third 200, no new event. */
            cr_assert_eq(h_post_signed(x.hx_port, H_DEFAULT_PATH, secret, body, len, NULL),
                         200);
        }
        free(body);
    }
    body = h_user_event(3, &len);
    cr_assert_eq(h_post_signed(x.hx_port, H_DEFAULT_PATH, "wrong-secret-0123456789", body, len,
                               NULL), 401);
    free(body);

    cr_assert_eq(http_get(x.hx_cfg.hc_admin_port, "/metrics", NULL, &text), 200);
    cr_assert_eq(metric(text, "hookd_http_requests_total{endpoint=\"/webhooks/contextgpt\","
                        "status=\"200\"}"), 3, "%s", text);
    cr_assert_eq(metric(text, "hookd_http_requests_total{endpoint=\"/webhooks/contextgpt\","
                        "status=\"401\"}"), 1);
    cr_assert_eq(metric(text, "hookd_verification_failures_total{reason=\"bad_token\"}"), 1);
    cr_assert_eq(metric(text, "hookd_events_total{type=\"NEW_MESSAGE\"}"), 2);
    cr_assert_eq(metric(text, "hookd_ingest_duration_seconds_count"), 4);
    cr_assert_eq(metric(text, "hookd_ingest_duration_seconds_bucket{le=\"+Inf\"}"), 4);
    cr_assert_eq(metric(text, "hookd_database_up"), 1);
    cr_assert_geq(metric(text, "hookd_db_connections{state=\"open\"}"), 1);
    /* One request at a time: each of the three stored answers was its own batch. */
    cr_assert_eq(metric(text, "hookd_db_batches_total"), 3);
    cr_assert_eq(metric(text, "hookd_job_claims_total"), 0);    /* no routes */
    cr_assert_eq(metric(text, "hookd_api_requests_total{status=\"2xx\"}"), 0);
    free(text);
    h_ctx_finish(&x, NULL, NULL);
}


Test(admin, token_is_required_when_configured)
{
    struct h_ctx x;
    char *text;
    char *token_file;

    h_ctx_init(&x, "admin_token");
    token_file = h_secret_file(x.hx_dir, "admin-token", "admin-token-0123456789", 0600);
    x.hx_cfg.hc_admin_port = h_free_port();
    x.hx_cfg.hc_admin_token_file = token_file;
    h_ctx_start(&x);
    cr_assert_eq(http_get(x.hx_cfg.hc_admin_port, "/metrics", NULL, &text), 401);
    free(text);
    cr_assert_eq(http_get(x.hx_cfg.hc_admin_port, "/metrics", "not-it", &text), 401);
    free(text);
    cr_assert_eq(http_get(x.hx_cfg.hc_admin_port, "/metrics", "admin-token-0123456789", &text),
                 200);
    free(text);
    /* Liveness needs no token. */
    cr_assert_eq(http_get(x.hx_cfg.hc_admin_port, "/healthz", NULL, &text), 200);
    free(text);
    {
        static const char *const forbidden[] = {"admin-token-0123456789", NULL};

        h_ctx_finish(&x, forbidden, NULL);
    }
    free(token_file);
}


Test(admin, readyz_is_503_while_the_database_is_unreachable)
{
    struct h_ctx x;
    struct h_daemon d = {0};
    char *text;
    char *conninfo;

    h_ctx_init(&x, "admin_ready");
    conninfo = h_strdupf("host=127.0.0.1 port=%d dbname=x user=x connect_timeout=1",
                         h_free_port());
    x.hx_cfg.hc_conninfo = conninfo;
    x.hx_cfg.hc_admin_port = h_free_port();
    h_config_write(x.hx_conf, &x.hx_cfg);
    h_daemon_spawn(&d, x.hx_conf, x.hx_log);
    cr_assert(h_daemon_wait_log(&d, "admin listener on", 1, 10000), "admin did not start");
    cr_assert_eq(http_get(x.hx_cfg.hc_admin_port, "/healthz", NULL, &text), 200);
    free(text);
    cr_assert_eq(http_get(x.hx_cfg.hc_admin_port, "/readyz", NULL, &text), 503);
    cr_assert_not_null(strstr(text, "database"), "%s", text);
    free(text);
    cr_assert_eq(http_get(x.hx_cfg.hc_admin_port, "/metrics", NULL, &text), 200);
    cr_assert_eq(metric(text, "hookd_database_up"), 0);
    free(text);
    cr_assert_eq(h_daemon_stop(&d), 0);
    h_db_drop(&x.hx_db);
    free(conninfo);
}
