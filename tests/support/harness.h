/* SPDX-License-Identifier: MIT */
/*
 * harness: helpers for hookd's integration tests. They start the real
 * daemon ($HOOKD_BIN) with a generated config on 127.0.0.1, talk HTTPS to
 * it with a raw OpenSSL client, and read rows from a throwaway PostgreSQL
 * database made for each test.
 *
 * Environment (see notes/contract.md): HOOKD_BIN, HOOKD_TEST_PG,
 * HOOKD_TEST_PGSCRIPT, HOOKD_TEST_TLS_DIR, HOOKD_TEST_SAMPLES, HOOKD_TEST_TMP.
 *
 * Each Criterion test runs in its own process; these helpers keep per-process
 * state (daemons, databases and clusters to clean up) and are not
 * thread-safe. Helpers whose name ends in nothing special assert on failure
 * (cr_assert), so a broken environment fails the test with a message. Use
 * h_suite_fini as the suite's .fini: it ends every daemon still running,
 * stops clusters the test started and drops its databases, even after a
 * failed assertion.
 */
#ifndef HOOKD_TEST_HARNESS_H
#define HOOKD_TEST_HARNESS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>
#include <time.h>

#define H_PATH_MAX 512
#define H_DEFAULT_PATH "/webhooks/contextgpt"
#define H_MAX_SECRETS 4
#define H_SAMPLE_EMAIL "jordan.lee@example.org"
#define H_SAMPLE_QUESTION "Hi, can I change the delivery address on order 10482?"

/* ---- environment and files --------------------------------------------- */

/* The value of an environment variable the suite needs; fails if unset. */
const char *h_env(const char *name);

/* Milliseconds on the monotonic clock. */
long long h_now_ms(void);

/* Sleeps ms milliseconds (for pacing loops, never to assert timing). */
void h_sleep_ms(int ms);

/*
 * Creates a new directory $HOOKD_TEST_TMP/t<pid>_<n>_<tag> (mode 755, so the
 * postgres user can enter it) and returns its path (malloc'd).
 */
char *h_tmpdir(const char *tag);

/* Writes len bytes to path with mode (created or truncated, then chmod). */
void h_write_file(const char *path, const void *data, size_t len, mode_t mode);

/*
 * Writes data to path through a temporary file and rename(2), so a reader
 * never sees half a file.
 */
void h_replace_file(const char *path, const char *text, mode_t mode);

/* Reads a whole file; returns malloc'd bytes plus a NUL, or NULL. */
char *h_read_file(const char *path, size_t *ret_len);

/* Reads $HOOKD_TEST_SAMPLES/<name> exactly (asserts it exists). */
char *h_sample(const char *name, size_t *ret_len);

/* Returns a malloc'd copy of s with every occurrence of from replaced by to. */
char *h_replace(const char *s, const char *from, const char *to);

/* malloc'd printf. */
char *h_strdupf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/*
 * Writes secret (plus a newline) to <dir>/<name> with mode and returns the
 * path (malloc'd). The mode is set with chmod after writing.
 */
char *h_secret_file(const char *dir, const char *name, const char *secret,
                    mode_t mode);

/* ---- crypto ------------------------------------------------------------ */

/* Lowercase hex SHA-256 of data into out (65 bytes). */
void h_sha256_hex(const void *data, size_t len, char out[65]);

/* Lowercase hex HMAC-SHA256(secret, body) into out (65 bytes). */
void h_hmac_hex(const char *secret, const void *body, size_t len,
                char out[65]);

/* Lowercase hex HMAC-SHA256(secret, "<ts>.<body>") into out (65 bytes). */
void h_hmac_ts_hex(const char *secret, const char *ts, const void *body,
                   size_t len, char out[65]);

/*
 * Standard Webhooks signature: base64 HMAC-SHA256 under the key of the
 * whsec_ secret of "<id>.<ts>.<body>" into out (at least 64 bytes).
 */
void h_standard_sign(const char *whsec, const char *id, const char *ts,
                     const void *body, size_t len, char *out, size_t cap);

/* ---- databases --------------------------------------------------------- */

struct h_db {
    char hd_name[64];
    char hd_conninfo[H_PATH_MAX];
};

/*
 * Creates database hookd_t_<pid>_<n> through $HOOKD_TEST_PG and fills db.
 * It is dropped (WITH (FORCE)) by h_db_drop or h_suite_fini.
 */
void h_db_create(struct h_db *db);

/* Drops the database; fine if already dropped. */
void h_db_drop(struct h_db *db);

/*
 * Runs a query built from fmt on conninfo and returns the first column of
 * the first row (malloc'd), or NULL when there is no row or it is NULL.
 * Asserts that the query succeeds.
 */
char *h_sql_value(const char *conninfo, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Like h_sql_value for a count(*)-like query; returns the number. */
long h_sql_long(const char *conninfo, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/*
 * Polls a one-number query on x's database (every 50 ms, at most
 * timeout_ms) until it gives want; returns the last value.
 */
struct h_ctx;
long h_wait_long(struct h_ctx *x, long want, int timeout_ms, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Runs a statement; returns true if it succeeded (does not assert). */
bool h_sql_try(const char *conninfo, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* ---- a private PostgreSQL cluster (for outage tests) ------------------- */

struct h_cluster {
    char hc_dir[H_PATH_MAX];
    char hc_conninfo[H_PATH_MAX];
    int hc_port;
};

/* Runs `$HOOKD_TEST_PGSCRIPT start DIR PORT` and keeps the conninfo. */
void h_cluster_start(struct h_cluster *c, const char *dir, int port);

/* Runs `$HOOKD_TEST_PGSCRIPT stop DIR`; true when it exited 0. */
bool h_cluster_stop(struct h_cluster *c);

/* ---- network ----------------------------------------------------------- */

/* A TCP port on 127.0.0.1 that was free a moment ago (bind :0, close). */
int h_free_port(void);

/* True if a TCP connect to 127.0.0.1:port succeeds right now. */
bool h_port_open(int port);

/* ---- config ------------------------------------------------------------ */

/*
 * What the generated config holds. Zero means "the test default" for every
 * number (small timeouts, see harness.c); NULL means the default text.
 */
struct h_config {
    int hc_port;
    const char *hc_conninfo;
    int hc_threads;
    long hc_max_body;
    int hc_request_timeout;
    int hc_body_timeout;
    int hc_keep_alive_timeout;
    int hc_connect_timeout;
    int hc_query_timeout;
    int hc_retry_after;
    const char *hc_log_level;
    const char *hc_path;               /* endpoint path */
    const char *hc_scheme;             /* "contextgpt" (default) or "standard" */
    const char *hc_require;            /* NULL: not written (daemon default) */
    const char *hc_secrets[H_MAX_SECRETS]; /* literal secrets, NULL-ended */
    const char *hc_secret_files[H_MAX_SECRETS];
    const char *hc_endpoint_extra;     /* more settings inside the endpoint */
    const char *hc_extra_endpoints;    /* more endpoint groups, comma-led */
    const char *hc_http_extra;         /* more settings inside http */
    const char *hc_top_extra;          /* more top-level settings, written last */
    int hc_admin_port;                 /* 0: no admin listener */
    const char *hc_admin_token_file;   /* with hc_admin_port: a bearer token */
};

/* Returns the config text (malloc'd) for c; TLS from $HOOKD_TEST_TLS_DIR. */
char *h_config_text(const struct h_config *c);

/* Writes the config of c to path (mode 600, via rename). */
void h_config_write(const char *path, const struct h_config *c);

/* ---- the daemon -------------------------------------------------------- */

struct h_daemon {
    pid_t hd_pid;
    bool hd_running;
    int hd_status;                     /* waitpid status once exited */
    char hd_log[H_PATH_MAX];
    char hd_conf[H_PATH_MAX];
};

/*
 * Starts `$HOOKD_BIN serve --config conf` with stdout and stderr appended
 * to log; does not wait for anything.
 */
void h_daemon_spawn(struct h_daemon *d, const char *conf, const char *log);

/*
 * Starts the daemon and waits (max 20 s) until its log holds "hookd ready";
 * fails the test with the log if it exits or times out.
 */
void h_daemon_start(struct h_daemon *d, const char *conf, const char *log);

/*
 * Polls (every 50 ms, at most timeout_ms) until the log holds needle at
 * least count times. Returns false on timeout or when the daemon exited.
 */
bool h_daemon_wait_log(struct h_daemon *d, const char *needle, int count,
                       int timeout_ms);

/* Number of occurrences of needle in the daemon's log. */
int h_daemon_log_count(struct h_daemon *d, const char *needle);

/*
 * Waits at most timeout_ms for the daemon to exit. Returns true and sets
 * d->hd_status when it did.
 */
bool h_daemon_wait_exit(struct h_daemon *d, int timeout_ms);

/*
 * SIGTERM, then waitpid for at most 15 s, then SIGKILL. Fails the test if
 * the log holds a sanitizer report ("AddressSanitizer", "LeakSanitizer",
 * "runtime error:"). Returns the exit code, or 128+signal when killed.
 */
int h_daemon_stop(struct h_daemon *d);

/* Sends sig to the daemon. */
void h_daemon_signal(struct h_daemon *d, int sig);

/* The daemon's log (malloc'd). */
char *h_daemon_log(struct h_daemon *d);

/*
 * Asserts that log holds none of the NULL-ended strings in forbidden, no
 * sanitizer report, and no error-level line unless it contains one of the
 * NULL-ended strings in allowed_errors (either list may be NULL).
 */
void h_log_assert_clean(const char *log, const char *const forbidden[],
                        const char *const allowed_errors[]);

/* The level word of a log line ("info", "error", ...) into out. */
void h_log_line_level(const char *line, size_t len, char *out, size_t cap);

/* ---- TLS client -------------------------------------------------------- */

struct h_conn {
    int hc_fd;
    void *hc_ctx;                      /* SSL_CTX */
    void *hc_ssl;                      /* SSL */
    char *hc_buf;                      /* bytes read and not used yet */
    size_t hc_len;
    size_t hc_cap;
    bool hc_eof;
};

struct h_resp {
    int hr_status;                     /* 0 when no response was read */
    char *hr_head;                     /* status line and headers, NUL-ended */
    char *hr_body;                     /* NUL-ended */
    size_t hr_body_len;
};

/*
 * Connects to 127.0.0.1:port and does the TLS handshake, verifying the
 * server against $HOOKD_TEST_TLS_DIR/cert.pem. Returns 0, or -1 when the
 * TCP connect or the handshake fails within timeout_ms.
 */
int h_conn_open(struct h_conn *c, int port, int timeout_ms);

/* Closes the connection; fine on a closed or zeroed one. */
void h_conn_close(struct h_conn *c);

/*
 * Writes len bytes within timeout_ms. Returns 0, or -1 when the peer closed
 * or reset the connection or the time ran out.
 */
int h_conn_send(struct h_conn *c, const void *buf, size_t len,
                int timeout_ms);

/*
 * Reads one HTTP/1.1 response (Content-Length, chunked, or until close)
 * within timeout_ms. Returns 0, -1 on timeout, -2 when the connection
 * closed before a whole response arrived.
 */
int h_conn_read_response(struct h_conn *c, struct h_resp *r, int timeout_ms);

/*
 * Waits at most timeout_ms for the peer to close the connection, dropping
 * anything it sends. True when it closed (EOF or reset).
 */
bool h_conn_wait_closed(struct h_conn *c, int timeout_ms);

/*
 * Reads whatever is available now without blocking and keeps it for
 * h_conn_read_response; true when response bytes or EOF are there.
 */
bool h_conn_pending(struct h_conn *c);

/* Reads whatever is available now without blocking; true on EOF/reset. */
bool h_conn_poll_closed(struct h_conn *c);

/* The value of a response header (case-insensitive), malloc'd, or NULL. */
char *h_resp_header(const struct h_resp *r, const char *name);

/* Frees a response's buffers; fine on a zeroed one. */
void h_resp_free(struct h_resp *r);

/*
 * Builds "METHOD PATH HTTP/1.1\r\nHost: 127.0.0.1\r\n<headers>
 * Content-Length: n\r\n\r\n<body>". headers is zero or more complete lines
 * ending in "\r\n" (may be NULL). Content-Length is added only when body
 * is not NULL and headers hold neither Content-Length nor
 * Transfer-Encoding. Returns malloc'd bytes and their length.
 */
char *h_request(const char *method, const char *path, const char *headers,
                const void *body, size_t len, size_t *ret_len);

/*
 * One request on a new connection: sends the bytes, reads one response
 * (timeout 10 s). Returns the status (0 when none was read).
 */
int h_exchange(int port, const void *req, size_t len, struct h_resp *r);

/* The headers a signed ContextGPT POST carries (malloc'd). */
char *h_signed_headers(const char *secret, const void *body, size_t len);

/*
 * POSTs body to path with token and signature for secret and Content-Type
 * application/json. Returns the status; r (may be NULL) gets the response.
 */
int h_post_signed(int port, const char *path, const char *secret,
                  const void *body, size_t len, struct h_resp *r);

/* POSTs body with exactly the given extra header lines. */
int h_post(int port, const char *path, const char *headers, const void *body,
           size_t len, struct h_resp *r);

/* ---- a whole test setup ------------------------------------------------ */

struct h_ctx {
    struct h_db hx_db;
    char *hx_dir;
    char hx_conf[H_PATH_MAX];
    char hx_log[H_PATH_MAX];
    int hx_port;
    struct h_config hx_cfg;
    struct h_daemon hx_daemon;
};

/*
 * Makes a database, a temp dir and a port, and fills x->hx_cfg with them
 * and one literal secret; the test may change hx_cfg before h_ctx_start.
 */
void h_ctx_init(struct h_ctx *x, const char *tag);

/* Writes x->hx_cfg to x->hx_conf and starts the daemon (waits for ready). */
void h_ctx_start(struct h_ctx *x);

/*
 * Stops the daemon (asserting exit 0), checks its log (no secret of
 * hx_cfg, no sample e-mail or question, none of extra_forbidden, no error
 * line except allowed_errors) and drops the database.
 */
void h_ctx_finish(struct h_ctx *x, const char *const extra_forbidden[],
                  const char *const allowed_errors[]);

/* Count of hookd.events rows in the test database. */
long h_events(struct h_ctx *x);

/* Count of hookd.quarantine rows in the test database. */
long h_quarantined(struct h_ctx *x);

/* Asserts r's status is want; the message shows what and the body. */
void h_assert_status(const struct h_resp *r, int want, const char *what);

/*
 * new_message_user.json with its messageId replaced by one made from n, so
 * each n gives a distinct event (malloc'd).
 */
char *h_user_event(unsigned n, size_t *ret_len);

/* Rows of hookd.events whose raw_body is byte-identical to body. */
long h_events_with_body(struct h_ctx *x, const void *body, size_t len);

/* Rows of hookd.quarantine whose raw_body is byte-identical to body. */
long h_quarantined_with_body(struct h_ctx *x, const void *body, size_t len);

/* Criterion .fini for every suite: cleans up whatever the test left. */
void h_suite_fini(void);

#endif
