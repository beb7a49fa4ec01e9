/* SPDX-License-Identifier: MIT */
#include "support/harness.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <libpq-fe.h>
#include <openssl/err.h>
#include <openssl/sha.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "codec.h"
#include "verify.h"

/* Test defaults: small timeouts keep the suite short. */
#define H_DEF_THREADS 16
#define H_DEF_MAX_BODY 1048576L
#define H_DEF_REQUEST_TIMEOUT 3000
#define H_DEF_BODY_TIMEOUT 3000
#define H_DEF_KEEP_ALIVE 2000
#define H_DEF_CONNECT_TIMEOUT 2
#define H_DEF_QUERY_TIMEOUT 3
#define H_DEF_RETRY_AFTER 7

#define H_READY_MS 20000
#define H_STOP_MS 15000
#define H_EXCHANGE_MS 10000
#define H_MAX_TRACKED 32
#define H_MAX_DIGESTS 512

/* What this test process must clean up (copies, not pointers into frames). */
static pid_t reg_pids[H_MAX_TRACKED];
static char reg_dbs[H_MAX_TRACKED][64];
static char reg_clusters[H_MAX_TRACKED][H_PATH_MAX];
static int tmp_counter;
static int db_counter;

/* Every signature the tests sent, to check that none reaches a log. */
static char sent_digests[H_MAX_DIGESTS][65];
static int n_sent_digests;

static const char *const sanitizer_marks[] = {
    "AddressSanitizer", "LeakSanitizer", "runtime error:", "ThreadSanitizer", NULL
};


/* ---- environment and files --------------------------------------------- */

/* Copies src into dst (cap bytes), cut if needed, always NUL-ended. */
static void
copy_str(char *dst, size_t cap, const char *src)
{
    size_t n = strnlen(src, cap - 1);

    memcpy(dst, src, n);
    dst[n] = '\0';
}


const char *
h_env(const char *name)
{
    const char *v = getenv(name);

    cr_assert(v != NULL && *v != '\0', "environment variable %s is not set "
              "(run the suite through scripts/check.sh)", name);
    return v;
}


long long
h_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}


void
h_sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};

    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
        continue;
    }
}


char *
h_strdupf(const char *fmt, ...)
{
    va_list ap;
    char *s = NULL;
    int n;

    va_start(ap, fmt);
    n = vasprintf(&s, fmt, ap);
    va_end(ap);
    cr_assert(n >= 0, "out of memory");
    return s;
}


char *
h_tmpdir(const char *tag)
{
    char *dir = h_strdupf("%s/t%d_%d_%s", h_env("HOOKD_TEST_TMP"), (int)getpid(),
                          tmp_counter++, tag);

    cr_assert(mkdir(dir, 0755) == 0, "mkdir %s: %s", dir, strerror(errno));
    cr_assert(chmod(dir, 0755) == 0);
    return dir;
}


void
h_write_file(const char *path, const void *data, size_t len, mode_t mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    const char *p = data;

    cr_assert(fd >= 0, "open %s: %s", path, strerror(errno));
    while (len > 0) {
        ssize_t n = write(fd, p, len);

        cr_assert(n > 0, "write %s: %s", path, strerror(errno));
        p += n;
        len -= (size_t)n;
    }
    cr_assert(fchmod(fd, mode) == 0);
    cr_assert(close(fd) == 0);
}


void
h_replace_file(const char *path, const char *text, mode_t mode)
{
    char *tmp = h_strdupf("%s.new", path);

    h_write_file(tmp, text, strlen(text), mode);
    cr_assert(rename(tmp, path) == 0, "rename to %s: %s", path, strerror(errno));
    free(tmp);
}


char *
h_read_file(const char *path, size_t *ret_len)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    size_t len = 0;
    size_t cap = 0;
    size_t n;

    if (f == NULL) {
        return NULL;
    }
    do {
        if (cap - len < 65536) {
            cap = cap * 2 + 65536;
            buf = realloc(buf, cap + 1);
            cr_assert(buf != NULL);
        }
        n = fread(buf + len, 1, cap - len, f);
        len += n;
    } while (n > 0);
    fclose(f);
    buf[len] = '\0';
    if (ret_len != NULL) {
        *ret_len = len;
    }
    return buf;
}


char *
h_sample(const char *name, size_t *ret_len)
{
    char *path = h_strdupf("%s/%s", h_env("HOOKD_TEST_SAMPLES"), name);
    char *data = h_read_file(path, ret_len);

    cr_assert(data != NULL, "cannot read sample %s", path);
    free(path);
    return data;
}


char *
h_replace(const char *s, const char *from, const char *to)
{
    size_t nf = strlen(from);
    size_t nt = strlen(to);
    size_t count = 0;
    const char *p;
    char *out;
    char *o;

    for (p = s; (p = strstr(p, from)) != NULL; p += nf) {
        count++;
    }
    out = malloc(strlen(s) + count * nt + 1);
    cr_assert(out != NULL);
    o = out;
    for (p = s;;) {
        const char *hit = strstr(p, from);

        if (hit == NULL) {
            strcpy(o, p);
            break;
        }
        memcpy(o, p, (size_t)(hit - p));
        o += hit - p;
        memcpy(o, to, nt);
        o += nt;
        p = hit + nf;
    }
    return out;
}


char *
h_secret_file(const char *dir, const char *name, const char *secret, mode_t mode)
{
    char *path = h_strdupf("%s/%s", dir, name);
    char *text = h_strdupf("%s\n", secret);

    h_write_file(path, text, strlen(text), mode);
    free(text);
    return path;
}


/* ---- crypto ------------------------------------------------------------ */

void
h_sha256_hex(const void *data, size_t len, char out[65])
{
    unsigned char d[SHA256_DIGEST_LENGTH];

    SHA256(data, len, d);
    codec_hex_encode(d, sizeof(d), out);
}


static void
remember_digest(const char *hex)
{
    if (n_sent_digests < H_MAX_DIGESTS) {
        snprintf(sent_digests[n_sent_digests++], 65, "%s", hex);
    }
}


void
h_hmac_hex(const char *secret, const void *body, size_t len, char out[65])
{
    const void *parts[1] = {body};
    size_t lens[1] = {len};
    unsigned char mac[VERIFY_MAC_LEN];

    cr_assert(verify_hmac_sha256((const unsigned char *)secret, strlen(secret), parts, lens,
                                 1, mac));
    codec_hex_encode(mac, sizeof(mac), out);
    remember_digest(out);
}


void
h_hmac_ts_hex(const char *secret, const char *ts, const void *body, size_t len, char out[65])
{
    const void *parts[3] = {ts, ".", body};
    size_t lens[3] = {strlen(ts), 1, len};
    unsigned char mac[VERIFY_MAC_LEN];

    cr_assert(verify_hmac_sha256((const unsigned char *)secret, strlen(secret), parts, lens,
                                 3, mac));
    codec_hex_encode(mac, sizeof(mac), out);
    remember_digest(out);
}


void
h_standard_sign(const char *whsec, const char *id, const char *ts, const void *body,
                size_t len, char *out, size_t cap)
{
    unsigned char key[256];
    long key_len = verify_standard_key(whsec, key, sizeof(key));
    const void *parts[5] = {id, ".", ts, ".", body};
    size_t lens[5] = {strlen(id), 1, strlen(ts), 1, len};
    unsigned char mac[VERIFY_MAC_LEN];

    cr_assert(key_len > 0, "not a whsec_ secret");
    cr_assert(cap >= 4 * ((VERIFY_MAC_LEN + 2) / 3) + 1);
    cr_assert(verify_hmac_sha256(key, (size_t)key_len, parts, lens, 5, mac));
    codec_base64_encode(mac, sizeof(mac), out);
}


/* ---- databases --------------------------------------------------------- */

static void
track_add(pid_t pid, const char *db, const char *cluster)
{
    for (int i = 0; i < H_MAX_TRACKED; i++) {
        if (pid > 0 && reg_pids[i] == 0) {
            reg_pids[i] = pid;
            return;
        }
        if (db != NULL && reg_dbs[i][0] == '\0') {
            snprintf(reg_dbs[i], sizeof(reg_dbs[i]), "%s", db);
            return;
        }
        if (cluster != NULL && reg_clusters[i][0] == '\0') {
            snprintf(reg_clusters[i], sizeof(reg_clusters[i]), "%s", cluster);
            return;
        }
    }
}


static void
track_remove(pid_t pid, const char *db, const char *cluster)
{
    for (int i = 0; i < H_MAX_TRACKED; i++) {
        if (pid > 0 && reg_pids[i] == pid) {
            reg_pids[i] = 0;
        }
        if (db != NULL && strcmp(reg_dbs[i], db) == 0) {
            reg_dbs[i][0] = '\0';
        }
        if (cluster != NULL && strcmp(reg_clusters[i], cluster) == 0) {
            reg_clusters[i][0] = '\0';
        }
    }
}


/* Drops server notices ("does not exist, skipping"). */
static void
quiet_notice(void *arg, const char *message)
{
    (void)arg;
    (void)message;
}


/* Connects with conninfo; returns the connection or NULL with a message. */
static PGconn *
pg_open(const char *conninfo, bool must)
{
    PGconn *pg = PQconnectdb(conninfo);

    if (PQstatus(pg) != CONNECTION_OK) {
        if (must) {
            cr_assert_fail("cannot connect to the test PostgreSQL: %s", PQerrorMessage(pg));
        }
        PQfinish(pg);
        return NULL;
    }
    (void)PQsetNoticeProcessor(pg, quiet_notice, NULL);
    return pg;
}


static bool
admin_exec(const char *sql, bool must)
{
    PGconn *pg = pg_open(h_env("HOOKD_TEST_PG"), must);
    PGresult *res;
    bool ok;

    if (pg == NULL) {
        return false;
    }
    res = PQexec(pg, sql);
    ok = PQresultStatus(res) == PGRES_COMMAND_OK;
    if (!ok && must) {
        char msg[512];

        snprintf(msg, sizeof(msg), "%s", PQerrorMessage(pg));
        PQclear(res);
        PQfinish(pg);
        cr_assert_fail("%s: %s", sql, msg);
    }
    PQclear(res);
    PQfinish(pg);
    return ok;
}


void
h_db_create(struct h_db *db)
{
    const char *admin = h_env("HOOKD_TEST_PG");
    char *sql;
    const char *p;

    snprintf(db->hd_name, sizeof(db->hd_name), "hookd_t_%d_%d", (int)getpid(), db_counter++);
    sql = h_strdupf("DROP DATABASE IF EXISTS %s WITH (FORCE)", db->hd_name);
    admin_exec(sql, true);
    free(sql);
    sql = h_strdupf("CREATE DATABASE %s", db->hd_name);
    admin_exec(sql, true);
    free(sql);
    track_add(0, db->hd_name, NULL);

    /* The admin conninfo with its dbname swapped (a later key wins anyway). */
    p = strstr(admin, "dbname=");
    if (p != NULL && (p == admin || p[-1] == ' ')) {
        const char *end = strchr(p, ' ');

        snprintf(db->hd_conninfo, sizeof(db->hd_conninfo), "%.*sdbname=%s%s",
                 (int)(p - admin), admin, db->hd_name, end ? end : "");
    } else {
        snprintf(db->hd_conninfo, sizeof(db->hd_conninfo), "%s dbname=%s", admin,
                 db->hd_name);
    }
}


void
h_db_drop(struct h_db *db)
{
    char *sql;

    if (db->hd_name[0] == '\0') {
        return;
    }
    sql = h_strdupf("DROP DATABASE IF EXISTS %s WITH (FORCE)", db->hd_name);
    (void)admin_exec(sql, false);
    free(sql);
    track_remove(0, db->hd_name, NULL);
    db->hd_name[0] = '\0';
}


static char *
sql_value_v(const char *conninfo, const char *fmt, va_list ap)
{
    char *sql = NULL;
    PGconn *pg;
    PGresult *res;
    char *value = NULL;

    cr_assert(vasprintf(&sql, fmt, ap) >= 0);
    pg = pg_open(conninfo, true);
    res = PQexec(pg, sql);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        char msg[512];

        snprintf(msg, sizeof(msg), "%s", PQerrorMessage(pg));
        PQclear(res);
        PQfinish(pg);
        cr_assert_fail("query failed: %s: %s", sql, msg);
    }
    if (PQntuples(res) > 0 && !PQgetisnull(res, 0, 0)) {
        value = strdup(PQgetvalue(res, 0, 0));
        cr_assert(value != NULL);
    }
    PQclear(res);
    PQfinish(pg);
    free(sql);
    return value;
}


char *
h_sql_value(const char *conninfo, const char *fmt, ...)
{
    va_list ap;
    char *v;

    va_start(ap, fmt);
    v = sql_value_v(conninfo, fmt, ap);
    va_end(ap);
    return v;
}


long
h_sql_long(const char *conninfo, const char *fmt, ...)
{
    va_list ap;
    char *v;
    long n;

    va_start(ap, fmt);
    v = sql_value_v(conninfo, fmt, ap);
    va_end(ap);
    cr_assert(v != NULL, "query returned no value");
    n = strtol(v, NULL, 10);
    free(v);
    return n;
}


bool
h_sql_try(const char *conninfo, const char *fmt, ...)
{
    va_list ap;
    char *sql = NULL;
    PGconn *pg;
    PGresult *res;
    bool ok;
    int n;

    va_start(ap, fmt);
    n = vasprintf(&sql, fmt, ap);
    va_end(ap);
    cr_assert(n >= 0);
    pg = pg_open(conninfo, false);
    if (pg == NULL) {
        free(sql);
        return false;
    }
    res = PQexec(pg, sql);
    ok = PQresultStatus(res) == PGRES_COMMAND_OK || PQresultStatus(res) == PGRES_TUPLES_OK;
    PQclear(res);
    PQfinish(pg);
    free(sql);
    return ok;
}


/* ---- private clusters -------------------------------------------------- */

/*
 * Runs pg.sh with args, stdout into out (cap bytes, may be NULL), stderr
 * appended to <dir>/pgsh.log. Returns the exit status (-1 on failure).
 */
static int
run_pg_script(const char *dir, const char *const args[], char *out, size_t cap)
{
    const char *script = h_env("HOOKD_TEST_PGSCRIPT");
    char *log = h_strdupf("%s.pgsh.log", dir);
    int pipefd[2];
    size_t len = 0;
    int status;
    pid_t pid;

    cr_assert(pipe2(pipefd, O_CLOEXEC) == 0);
    pid = fork();
    cr_assert(pid >= 0);
    if (pid == 0) {
        const char *argv[8] = {script};
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        int i;

        for (i = 0; args[i] != NULL && i < 6; i++) {
            argv[i + 1] = args[i];
        }
        argv[i + 1] = NULL;
        dup2(pipefd[1], STDOUT_FILENO);
        if (fd >= 0) {
            dup2(fd, STDERR_FILENO);
        }
        execv(script, (char *const *)argv);
        _exit(127);
    }
    close(pipefd[1]);
    for (;;) {
        char tmp[256];
        ssize_t n = read(pipefd[0], tmp, sizeof(tmp));

        if (n <= 0) {
            break;
        }
        if (out != NULL && len + 1 < cap) {
            size_t take = (size_t)n < cap - 1 - len ? (size_t)n : cap - 1 - len;

            memcpy(out + len, tmp, take);
            len += take;
        }
    }
    close(pipefd[0]);
    if (out != NULL) {
        out[len] = '\0';
        while (len > 0 && (out[len - 1] == '\n' || out[len - 1] == '\r')) {
            out[--len] = '\0';
        }
    }
    free(log);
    while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR) {
            return -1;
        }
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}


void
h_cluster_start(struct h_cluster *c, const char *dir, int port)
{
    char portbuf[16];
    const char *args[] = {"start", dir, portbuf, NULL};
    int rc;

    snprintf(c->hc_dir, sizeof(c->hc_dir), "%s", dir);
    c->hc_port = port;
    snprintf(portbuf, sizeof(portbuf), "%d", port);
    track_add(0, NULL, c->hc_dir);
    rc = run_pg_script(dir, args, c->hc_conninfo, sizeof(c->hc_conninfo));
    cr_assert(rc == 0, "pg.sh start %s %d failed (exit %d), see %s.pgsh.log", dir, port, rc,
              dir);
    cr_assert(strstr(c->hc_conninfo, "host=") != NULL, "unexpected conninfo from pg.sh: %s",
              c->hc_conninfo);
}


bool
h_cluster_stop(struct h_cluster *c)
{
    const char *args[] = {"stop", c->hc_dir, NULL};

    return run_pg_script(c->hc_dir, args, NULL, 0) == 0;
}


/* ---- network ----------------------------------------------------------- */

int
h_free_port(void)
{
    struct sockaddr_in sa;
    socklen_t len = sizeof(sa);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int port;

    cr_assert(fd >= 0);
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sa.sin_port = 0;
    cr_assert(bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0, "bind: %s", strerror(errno));
    cr_assert(getsockname(fd, (struct sockaddr *)&sa, &len) == 0);
    port = ntohs(sa.sin_port);
    close(fd);
    return port;
}


static int
tcp_connect(int port)
{
    struct sockaddr_in sa;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;

    cr_assert(fd >= 0);
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sa.sin_port = htons((unsigned short)port);
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        close(fd);
        return -1;
    }
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    return fd;
}


bool
h_port_open(int port)
{
    int fd = tcp_connect(port);

    if (fd < 0) {
        return false;
    }
    close(fd);
    return true;
}


/* ---- config ------------------------------------------------------------ */

/* Appends a libconfig string literal of s to the stream. */
static void
put_quoted(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s != '\0'; s++) {
        if (*s == '"' || *s == '\\') {
            fputc('\\', f);
        }
        fputc(*s, f);
    }
    fputc('"', f);
}


static void
put_list(FILE *f, const char *name, const char *const items[])
{
    if (items[0] == NULL) {
        return;
    }
    fprintf(f, "    %s = [ ", name);
    for (int i = 0; i < H_MAX_SECRETS && items[i] != NULL; i++) {
        if (i > 0) {
            fputs(", ", f);
        }
        put_quoted(f, items[i]);
    }
    fputs(" ];\n", f);
}


#define H_OR(v, d) ((v) ? (v) : (d))

char *
h_config_text(const struct h_config *c)
{
    const char *tls = h_env("HOOKD_TEST_TLS_DIR");
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);

    cr_assert(f != NULL);
    fprintf(f, "# generated by tests/support/harness.c\n");
    fprintf(f, "listen = [ \"127.0.0.1:%d\" ];\n", c->hc_port);
    fprintf(f, "tls = {\n  certificate = \"%s/cert.pem\";\n  key = \"%s/key.pem\";\n};\n", tls,
            tls);
    fprintf(f, "http = {\n  threads = %d;\n  max_body = %ld;\n  request_timeout = %d;\n"
            "  body_timeout = %d;\n  keep_alive_timeout = %d;\n%s};\n",
            H_OR(c->hc_threads, H_DEF_THREADS), H_OR(c->hc_max_body, H_DEF_MAX_BODY),
            H_OR(c->hc_request_timeout, H_DEF_REQUEST_TIMEOUT),
            H_OR(c->hc_body_timeout, H_DEF_BODY_TIMEOUT),
            H_OR(c->hc_keep_alive_timeout, H_DEF_KEEP_ALIVE), H_OR(c->hc_http_extra, ""));
    fprintf(f, "database = {\n  conninfo = ");
    put_quoted(f, H_OR(c->hc_conninfo, ""));
    fprintf(f, ";\n  connect_timeout = %d;\n  query_timeout = %d;\n  retry_after = %d;\n};\n",
            H_OR(c->hc_connect_timeout, H_DEF_CONNECT_TIMEOUT),
            H_OR(c->hc_query_timeout, H_DEF_QUERY_TIMEOUT),
            H_OR(c->hc_retry_after, H_DEF_RETRY_AFTER));
    fprintf(f, "log = { level = \"%s\"; };\n", H_OR(c->hc_log_level, "info"));
    fprintf(f, "endpoints = (\n  {\n    path = ");
    put_quoted(f, H_OR(c->hc_path, H_DEFAULT_PATH));
    fprintf(f, ";\n    scheme = \"%s\";\n", H_OR(c->hc_scheme, "contextgpt"));
    if (c->hc_require != NULL) {
        fprintf(f, "    require = \"%s\";\n", c->hc_require);
    }
    put_list(f, "secrets", c->hc_secrets);
    put_list(f, "secret_files", c->hc_secret_files);
    fprintf(f, "%s  }%s\n);\n", H_OR(c->hc_endpoint_extra, ""),
            H_OR(c->hc_extra_endpoints, ""));
    if (c->hc_top_extra != NULL) {
        fprintf(f, "%s\n", c->hc_top_extra);
    }
    /* Tests run many daemons at once: the admin listener only where asked. */
    if (c->hc_admin_port > 0) {
        fprintf(f, "admin = { listen = \"127.0.0.1:%d\";", c->hc_admin_port);
        if (c->hc_admin_token_file != NULL) {
            fprintf(f, " token_file = ");
            put_quoted(f, c->hc_admin_token_file);
            fprintf(f, ";");
        }
        fprintf(f, " };\n");
    } else {
        fprintf(f, "admin = { listen = \"\"; };\n");
    }
    cr_assert(fclose(f) == 0);
    return text;
}


void
h_config_write(const char *path, const struct h_config *c)
{
    char *text = h_config_text(c);

    h_replace_file(path, text, 0600);
    free(text);
}


/* ---- the daemon -------------------------------------------------------- */

void
h_daemon_spawn(struct h_daemon *d, const char *conf, const char *log)
{
    const char *bin = h_env("HOOKD_BIN");
    pid_t parent = getpid();
    pid_t pid;

    memset(d, 0, sizeof(*d));
    snprintf(d->hd_conf, sizeof(d->hd_conf), "%s", conf);
    snprintf(d->hd_log, sizeof(d->hd_log), "%s", log);
    cr_assert(access(bin, X_OK) == 0, "HOOKD_BIN %s is not executable", bin);

    pid = fork();
    cr_assert(pid >= 0, "fork: %s", strerror(errno));
    if (pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0600);
        int nul = open("/dev/null", O_RDONLY);

        /* The daemon must not outlive a test process that was killed. */
        (void)prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent || fd < 0 || nul < 0) {
            _exit(126);
        }
        dup2(nul, STDIN_FILENO);
        dup2(fd, STDOUT_FILENO);
        dup2(fd, STDERR_FILENO);
        closefrom(3);
        signal(SIGPIPE, SIG_DFL);
        unsetenv("JOURNAL_STREAM");
        unsetenv("NOTIFY_SOCKET");
        /* Only a test that listens for notifications gets them. */
        if (getenv("HOOKD_TEST_NOTIFY_SOCKET") != NULL) {
            setenv("NOTIFY_SOCKET", getenv("HOOKD_TEST_NOTIFY_SOCKET"), 1);
        }
        unsetenv("HOOKD_DATABASE_URL");
        unsetenv("CREDENTIALS_DIRECTORY");
        execl(bin, bin, "serve", "--config", conf, (char *)NULL);
        _exit(127);
    }
    d->hd_pid = pid;
    d->hd_running = true;
    track_add(pid, NULL, NULL);
}


static void
reaped(struct h_daemon *d, int status)
{
    d->hd_running = false;
    d->hd_status = status;
    track_remove(d->hd_pid, NULL, NULL);
}


bool
h_daemon_wait_exit(struct h_daemon *d, int timeout_ms)
{
    long long deadline = h_now_ms() + timeout_ms;
    int status;

    if (!d->hd_running) {
        return true;
    }
    for (;;) {
        pid_t r = waitpid(d->hd_pid, &status, WNOHANG);

        if (r == d->hd_pid) {
            reaped(d, status);
            return true;
        }
        if (r < 0 && errno != EINTR) {
            reaped(d, 0);
            return true;
        }
        if (h_now_ms() >= deadline) {
            return false;
        }
        h_sleep_ms(20);
    }
}


static int
count_in(const char *hay, const char *needle)
{
    int n = 0;
    size_t nl = strlen(needle);

    for (const char *p = hay; (p = strstr(p, needle)) != NULL; p += nl) {
        n++;
    }
    return n;
}


int
h_daemon_log_count(struct h_daemon *d, const char *needle)
{
    char *log = h_read_file(d->hd_log, NULL);
    int n = log ? count_in(log, needle) : 0;

    free(log);
    return n;
}


bool
h_daemon_wait_log(struct h_daemon *d, const char *needle, int count, int timeout_ms)
{
    long long deadline = h_now_ms() + timeout_ms;

    for (;;) {
        if (h_daemon_log_count(d, needle) >= count) {
            return true;
        }
        if (h_daemon_wait_exit(d, 0) || h_now_ms() >= deadline) {
            return h_daemon_log_count(d, needle) >= count;
        }
        h_sleep_ms(50);
    }
}


char *
h_daemon_log(struct h_daemon *d)
{
    char *log = h_read_file(d->hd_log, NULL);

    return log != NULL ? log : strdup("");
}


/* The last part of a log, for failure messages. */
static const char *
log_tail(const char *log)
{
    size_t n = strlen(log);

    return n > 3000 ? log + n - 3000 : log;
}


void
h_daemon_start(struct h_daemon *d, const char *conf, const char *log)
{
    h_daemon_spawn(d, conf, log);
    if (!h_daemon_wait_log(d, "hookd ready", 1, H_READY_MS)) {
        char *text = h_daemon_log(d);

        cr_assert_fail("hookd did not log \"hookd ready\" within %d ms (%s); log:\n%s",
                       H_READY_MS, d->hd_running ? "still running" : "exited",
                       log_tail(text));
    }
}


void
h_daemon_signal(struct h_daemon *d, int sig)
{
    cr_assert(d->hd_running, "the daemon is not running");
    cr_assert(kill(d->hd_pid, sig) == 0);
}


static void
assert_no_sanitizer(const char *log)
{
    for (int i = 0; sanitizer_marks[i] != NULL; i++) {
        const char *hit = strstr(log, sanitizer_marks[i]);

        cr_expect(hit == NULL, "sanitizer report in the daemon log:\n%.4000s",
                  hit ? (hit - log > 200 ? hit - 200 : log) : "");
    }
}


int
h_daemon_stop(struct h_daemon *d)
{
    int code;
    char *log;

    if (d->hd_running) {
        (void)kill(d->hd_pid, SIGTERM);
        if (!h_daemon_wait_exit(d, H_STOP_MS)) {
            (void)kill(d->hd_pid, SIGKILL);
            cr_expect_fail("hookd did not exit within %d ms of SIGTERM", H_STOP_MS);
            while (!h_daemon_wait_exit(d, 1000)) {
                continue;
            }
        }
    }
    log = h_daemon_log(d);
    assert_no_sanitizer(log);
    free(log);
    if (WIFEXITED(d->hd_status)) {
        code = WEXITSTATUS(d->hd_status);
    } else {
        code = 128 + WTERMSIG(d->hd_status);
    }
    return code;
}


void
h_log_line_level(const char *line, size_t len, char *out, size_t cap)
{
    static const char *const prio[] = {
        "emerg", "alert", "crit", "error", "warning", "notice", "info", "debug"
    };
    size_t i = 0;
    size_t o = 0;

    out[0] = '\0';
    if (len >= 3 && line[0] == '<' && line[1] >= '0' && line[1] <= '7' && line[2] == '>') {
        snprintf(out, cap, "%s", prio[line[1] - '0']);
        return;
    }
    /* "<timestamp> <level> message": skip the first word and spaces. */
    while (i < len && line[i] != ' ') {
        i++;
    }
    while (i < len && line[i] == ' ') {
        i++;
    }
    while (i < len && line[i] != ' ' && o + 1 < cap) {
        out[o++] = line[i++];
    }
    out[o] = '\0';
}


static bool
is_error_level(const char *level)
{
    return strcasecmp(level, "error") == 0 || strcasecmp(level, "crit") == 0
           || strcasecmp(level, "alert") == 0 || strcasecmp(level, "emerg") == 0
           || strcasecmp(level, "fatal") == 0;
}


void
h_log_assert_clean(const char *log, const char *const forbidden[],
                   const char *const allowed_errors[])
{
    const char *p = log;

    assert_no_sanitizer(log);
    for (int i = 0; forbidden != NULL && forbidden[i] != NULL; i++) {
        if (*forbidden[i] != '\0') {
            cr_expect(strstr(log, forbidden[i]) == NULL,
                      "the daemon log holds a forbidden string (item %d, %zu bytes)", i,
                      strlen(forbidden[i]));
        }
    }
    for (int i = 0; i < n_sent_digests; i++) {
        cr_expect(strstr(log, sent_digests[i]) == NULL,
                  "the daemon log holds a signature the test sent");
    }
    while (*p != '\0') {
        const char *end = strchr(p, '\n');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        char level[16];

        h_log_line_level(p, len, level, sizeof(level));
        if (is_error_level(level)) {
            bool allowed = false;
            char *line = strndup(p, len);

            for (int i = 0; allowed_errors != NULL && allowed_errors[i] != NULL; i++) {
                allowed = allowed || strstr(line, allowed_errors[i]) != NULL;
            }
            cr_expect(allowed, "unexpected error line in the daemon log: %s", line);
            free(line);
        }
        p += len + (end ? 1 : 0);
    }
}


/* ---- TLS client -------------------------------------------------------- */

/*
 * After an SSL call returned ret, waits for the socket as OpenSSL asks.
 * Returns 0 to retry, -1 on timeout, -2 when the connection is finished.
 */
static int
tls_wait(struct h_conn *c, int ret, long long deadline)
{
    int err = SSL_get_error(c->hc_ssl, ret);
    struct pollfd pfd = {c->hc_fd, 0, 0};
    long long left;
    int n;

    if (err == SSL_ERROR_WANT_READ) {
        pfd.events = POLLIN;
    } else if (err == SSL_ERROR_WANT_WRITE) {
        pfd.events = POLLOUT;
    } else {
        ERR_clear_error();
        return -2;
    }
    left = deadline - h_now_ms();
    if (left <= 0) {
        return -1;
    }
    n = poll(&pfd, 1, (int)left);
    if (n == 0) {
        return -1;
    }
    return 0;
}


int
h_conn_open(struct h_conn *c, int port, int timeout_ms)
{
    long long deadline = h_now_ms() + timeout_ms;
    char *ca = h_strdupf("%s/cert.pem", h_env("HOOKD_TEST_TLS_DIR"));
    SSL_CTX *ctx;
    SSL *ssl;
    int ret;

    memset(c, 0, sizeof(*c));
    c->hc_fd = -1;
    signal(SIGPIPE, SIG_IGN);
    c->hc_fd = tcp_connect(port);
    if (c->hc_fd < 0) {
        free(ca);
        return -1;
    }
    cr_assert(fcntl(c->hc_fd, F_SETFL, O_NONBLOCK) == 0);
    ctx = SSL_CTX_new(TLS_client_method());
    cr_assert(ctx != NULL);
    c->hc_ctx = ctx;
    cr_assert(SSL_CTX_load_verify_locations(ctx, ca, NULL) == 1, "cannot load %s", ca);
    free(ca);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    SSL_CTX_set_options(ctx, SSL_OP_IGNORE_UNEXPECTED_EOF);
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    ssl = SSL_new(ctx);
    cr_assert(ssl != NULL);
    c->hc_ssl = ssl;
    cr_assert(X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), "127.0.0.1") == 1);
    SSL_set_fd(ssl, c->hc_fd);
    while ((ret = SSL_connect(ssl)) != 1) {
        if (tls_wait(c, ret, deadline) != 0) {
            h_conn_close(c);
            return -1;
        }
    }
    return 0;
}


void
h_conn_close(struct h_conn *c)
{
    if (c->hc_ssl != NULL) {
        SSL_free(c->hc_ssl);
    }
    if (c->hc_ctx != NULL) {
        SSL_CTX_free(c->hc_ctx);
    }
    if (c->hc_fd >= 0) {
        close(c->hc_fd);
    }
    free(c->hc_buf);
    memset(c, 0, sizeof(*c));
    c->hc_fd = -1;
}


int
h_conn_send(struct h_conn *c, const void *buf, size_t len, int timeout_ms)
{
    long long deadline = h_now_ms() + timeout_ms;
    const char *p = buf;

    if (c->hc_ssl == NULL) {
        return -1;
    }
    while (len > 0) {
        int chunk = len > (1 << 20) ? (1 << 20) : (int)len;
        int n = SSL_write(c->hc_ssl, p, chunk);

        if (n > 0) {
            p += n;
            len -= (size_t)n;
            continue;
        }
        if (tls_wait(c, n, deadline) != 0) {
            return -1;
        }
    }
    return 0;
}


/*
 * Reads more bytes into the buffer. Returns the count, 0 on EOF or reset,
 * -1 on timeout.
 */
static int
conn_fill(struct h_conn *c, long long deadline)
{
    for (;;) {
        int n;
        int w;

        if (c->hc_eof) {
            return 0;
        }
        if (c->hc_cap - c->hc_len < 16384) {
            c->hc_cap = c->hc_cap * 2 + 65536;
            c->hc_buf = realloc(c->hc_buf, c->hc_cap + 1);
            cr_assert(c->hc_buf != NULL);
        }
        n = SSL_read(c->hc_ssl, c->hc_buf + c->hc_len, (int)(c->hc_cap - c->hc_len));
        if (n > 0) {
            c->hc_len += (size_t)n;
            c->hc_buf[c->hc_len] = '\0';
            return n;
        }
        w = tls_wait(c, n, deadline);
        if (w == -2) {
            c->hc_eof = true;
            return 0;
        }
        if (w == -1) {
            return -1;
        }
    }
}


static void
conn_consume(struct h_conn *c, size_t n)
{
    memmove(c->hc_buf, c->hc_buf + n, c->hc_len - n);
    c->hc_len -= n;
    c->hc_buf[c->hc_len] = '\0';
}


/* The value of header name in head, or NULL (malloc'd). */
static char *
head_value(const char *head, const char *name)
{
    size_t nl = strlen(name);
    const char *p = strstr(head, "\r\n");

    while (p != NULL && p[2] != '\0' && p[2] != '\r') {
        const char *line = p + 2;
        const char *end = strstr(line, "\r\n");

        if (end == NULL) {
            break;
        }
        if ((size_t)(end - line) > nl && strncasecmp(line, name, nl) == 0 && line[nl] == ':') {
            const char *v = line + nl + 1;
            const char *e = end;

            while (v < e && (*v == ' ' || *v == '\t')) {
                v++;
            }
            while (e > v && (e[-1] == ' ' || e[-1] == '\t')) {
                e--;
            }
            return strndup(v, (size_t)(e - v));
        }
        p = end;
    }
    return NULL;
}


char *
h_resp_header(const struct h_resp *r, const char *name)
{
    return r->hr_head ? head_value(r->hr_head, name) : NULL;
}


void
h_resp_free(struct h_resp *r)
{
    free(r->hr_head);
    free(r->hr_body);
    memset(r, 0, sizeof(*r));
}


/* Appends n bytes to the response body. */
static void
body_add(struct h_resp *r, const char *p, size_t n)
{
    r->hr_body = realloc(r->hr_body, r->hr_body_len + n + 1);
    cr_assert(r->hr_body != NULL);
    memcpy(r->hr_body + r->hr_body_len, p, n);
    r->hr_body_len += n;
    r->hr_body[r->hr_body_len] = '\0';
}


/* Reads a chunked body. Returns 0, -1 timeout, -2 closed early. */
static int
read_chunked(struct h_conn *c, struct h_resp *r, long long deadline)
{
    for (;;) {
        char *eol;
        unsigned long size;
        int n;

        while ((eol = strstr(c->hc_buf ? c->hc_buf : "", "\r\n")) == NULL) {
            if ((n = conn_fill(c, deadline)) <= 0) {
                return n < 0 ? -1 : -2;
            }
        }
        size = strtoul(c->hc_buf, NULL, 16);
        conn_consume(c, (size_t)(eol - c->hc_buf) + 2);
        if (size == 0) {
            /* Trailers end with an empty line. */
            while ((eol = strstr(c->hc_buf, "\r\n")) == NULL || eol != c->hc_buf) {
                if (eol != NULL) {
                    conn_consume(c, (size_t)(eol - c->hc_buf) + 2);
                    continue;
                }
                if ((n = conn_fill(c, deadline)) <= 0) {
                    return n < 0 ? -1 : -2;
                }
            }
            conn_consume(c, 2);
            return 0;
        }
        while (c->hc_len < size + 2) {
            if ((n = conn_fill(c, deadline)) <= 0) {
                return n < 0 ? -1 : -2;
            }
        }
        body_add(r, c->hc_buf, size);
        conn_consume(c, size + 2);
    }
}


int
h_conn_read_response(struct h_conn *c, struct h_resp *r, int timeout_ms)
{
    long long deadline = h_now_ms() + timeout_ms;
    char *end;
    char *te;
    char *cl;
    int n;

    memset(r, 0, sizeof(*r));
    if (c->hc_ssl == NULL) {
        return -2;
    }
    while ((end = strstr(c->hc_buf ? c->hc_buf : "", "\r\n\r\n")) == NULL) {
        if ((n = conn_fill(c, deadline)) <= 0) {
            return n < 0 ? -1 : -2;
        }
    }
    r->hr_head = strndup(c->hc_buf, (size_t)(end - c->hc_buf) + 2);
    cr_assert(r->hr_head != NULL);
    conn_consume(c, (size_t)(end - c->hc_buf) + 4);
    if (strncmp(r->hr_head, "HTTP/1.", 7) != 0 || strlen(r->hr_head) < 12) {
        return -2;
    }
    r->hr_status = atoi(r->hr_head + 9);
    body_add(r, "", 0);

    te = head_value(r->hr_head, "Transfer-Encoding");
    cl = head_value(r->hr_head, "Content-Length");
    if (te != NULL && strcasecmp(te, "chunked") == 0) {
        n = read_chunked(c, r, deadline);
    } else if (cl != NULL) {
        size_t want = strtoul(cl, NULL, 10);

        n = 0;
        while (c->hc_len < want && (n = conn_fill(c, deadline)) > 0) {
            continue;
        }
        n = c->hc_len < want ? (n < 0 ? -1 : -2) : 0;
        if (n == 0) {
            body_add(r, c->hc_buf, want);
            conn_consume(c, want);
        }
    } else if (r->hr_status == 204 || r->hr_status == 304 || r->hr_status < 200) {
        n = 0;
    } else {
        while ((n = conn_fill(c, deadline)) > 0) {
            continue;
        }
        n = n < 0 ? -1 : 0;
        body_add(r, c->hc_buf, c->hc_len);
        conn_consume(c, c->hc_len);
    }
    free(te);
    free(cl);
    return n;
}


bool
h_conn_pending(struct h_conn *c)
{
    if (c->hc_ssl == NULL || c->hc_eof || c->hc_len > 0) {
        return true;
    }
    (void)conn_fill(c, h_now_ms());
    return c->hc_len > 0 || c->hc_eof;
}


bool
h_conn_poll_closed(struct h_conn *c)
{
    if (c->hc_ssl == NULL || c->hc_eof) {
        return true;
    }
    while (conn_fill(c, h_now_ms()) > 0) {
        conn_consume(c, c->hc_len);
    }
    return c->hc_eof;
}


bool
h_conn_wait_closed(struct h_conn *c, int timeout_ms)
{
    long long deadline = h_now_ms() + timeout_ms;

    if (c->hc_ssl == NULL) {
        return true;
    }
    while (!c->hc_eof) {
        int n = conn_fill(c, deadline);

        if (n < 0) {
            return false;
        }
        conn_consume(c, c->hc_len);
    }
    return true;
}


/* True if headers hold a line starting with name: (case-insensitive). */
static bool
has_header(const char *headers, const char *name)
{
    size_t nl = strlen(name);
    const char *p = headers;

    while (p != NULL && *p != '\0') {
        if (strncasecmp(p, name, nl) == 0 && p[nl] == ':') {
            return true;
        }
        p = strstr(p, "\r\n");
        p = p ? p + 2 : NULL;
    }
    return false;
}


char *
h_request(const char *method, const char *path, const char *headers, const void *body,
          size_t len, size_t *ret_len)
{
    char *out = NULL;
    size_t out_len = 0;
    FILE *f = open_memstream(&out, &out_len);

    cr_assert(f != NULL);
    headers = headers ? headers : "";
    fprintf(f, "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\n%s", method, path, headers);
    if (body != NULL && !has_header(headers, "Content-Length")
        && !has_header(headers, "Transfer-Encoding"))
    {
        fprintf(f, "Content-Length: %zu\r\n", len);
    }
    fputs("\r\n", f);
    if (body != NULL && len > 0) {
        cr_assert(fwrite(body, 1, len, f) == len);
    }
    cr_assert(fclose(f) == 0);
    *ret_len = out_len;
    return out;
}


int
h_exchange(int port, const void *req, size_t len, struct h_resp *r)
{
    struct h_conn c;
    struct h_resp local;
    int status = 0;

    if (r == NULL) {
        r = &local;
    }
    memset(r, 0, sizeof(*r));
    if (h_conn_open(&c, port, H_EXCHANGE_MS) != 0) {
        return 0;
    }
    /* Even after a failed write an answer (413) may be waiting. */
    (void)h_conn_send(&c, req, len, H_EXCHANGE_MS);
    (void)h_conn_read_response(&c, r, H_EXCHANGE_MS);
    status = r->hr_status;
    h_conn_close(&c);
    if (r == &local) {
        h_resp_free(&local);
    }
    return status;
}


char *
h_signed_headers(const char *secret, const void *body, size_t len)
{
    char sig[65];

    h_hmac_hex(secret, body, len, sig);
    return h_strdupf("Content-Type: application/json\r\nX-WEBHOOK-TOKEN: %s\r\n"
                     "X-WEBHOOK-SIGNATURE: %s\r\n", secret, sig);
}


int
h_post(int port, const char *path, const char *headers, const void *body, size_t len,
       struct h_resp *r)
{
    size_t req_len;
    char *req = h_request("POST", path, headers, body != NULL ? body : "", len, &req_len);
    int status = h_exchange(port, req, req_len, r);

    free(req);
    return status;
}


int
h_post_signed(int port, const char *path, const char *secret, const void *body, size_t len,
              struct h_resp *r)
{
    char *headers = h_signed_headers(secret, body, len);
    int status = h_post(port, path, headers, body, len, r);

    free(headers);
    return status;
}


/* ---- a whole test setup ------------------------------------------------ */

void
h_ctx_init(struct h_ctx *x, const char *tag)
{
    memset(x, 0, sizeof(*x));
    h_db_create(&x->hx_db);
    x->hx_dir = h_tmpdir(tag);
    x->hx_port = h_free_port();
    snprintf(x->hx_conf, sizeof(x->hx_conf), "%s/hookd.conf", x->hx_dir);
    snprintf(x->hx_log, sizeof(x->hx_log), "%s/hookd.log", x->hx_dir);
    x->hx_cfg.hc_port = x->hx_port;
    x->hx_cfg.hc_conninfo = x->hx_db.hd_conninfo;
    x->hx_cfg.hc_secrets[0] = "test-secret-0123456789abcdef";
}


void
h_ctx_start(struct h_ctx *x)
{
    h_config_write(x->hx_conf, &x->hx_cfg);
    h_daemon_start(&x->hx_daemon, x->hx_conf, x->hx_log);
}


void
h_ctx_finish(struct h_ctx *x, const char *const extra_forbidden[],
             const char *const allowed_errors[])
{
    const char *forbidden[H_MAX_SECRETS + 16];
    int n = 0;
    int code;
    char *log;

    if (x->hx_daemon.hd_pid > 0) {
        code = h_daemon_stop(&x->hx_daemon);
        cr_expect_eq(code, 0, "hookd exited with %d after SIGTERM (want 0)", code);
    }
    for (int i = 0; i < H_MAX_SECRETS && x->hx_cfg.hc_secrets[i] != NULL; i++) {
        forbidden[n++] = x->hx_cfg.hc_secrets[i];
    }
    forbidden[n++] = H_SAMPLE_EMAIL;
    forbidden[n++] = H_SAMPLE_QUESTION;
    for (int i = 0; extra_forbidden != NULL && extra_forbidden[i] != NULL && n < 15 + 4;
         i++) {
        forbidden[n++] = extra_forbidden[i];
    }
    forbidden[n] = NULL;
    log = h_daemon_log(&x->hx_daemon);
    h_log_assert_clean(log, forbidden, allowed_errors);
    free(log);
    h_db_drop(&x->hx_db);
    free(x->hx_dir);
    x->hx_dir = NULL;
}


void
h_assert_status(const struct h_resp *r, int want, const char *what)
{
    cr_assert_eq(r->hr_status, want, "%s: got status %d (want %d), body: %.300s", what,
                 r->hr_status, want, r->hr_body ? r->hr_body : "(no response)");
}


char *
h_user_event(unsigned n, size_t *ret_len)
{
    char *sample = h_sample("new_message_user.json", NULL);
    char id[32];
    char *out;

    snprintf(id, sizeof(id), "77%016u", n);
    out = h_replace(sample, "376290410396385873", id);
    free(sample);
    *ret_len = strlen(out);
    return out;
}


long
h_events_with_body(struct h_ctx *x, const void *body, size_t len)
{
    char hex[65];

    h_sha256_hex(body, len, hex);
    return h_sql_long(x->hx_db.hd_conninfo, "SELECT count(*) FROM hookd.events WHERE "
                      "encode(sha256(convert_to(raw_body, 'UTF8')), 'hex') = '%s'", hex);
}


long
h_quarantined_with_body(struct h_ctx *x, const void *body, size_t len)
{
    char hex[65];

    h_sha256_hex(body, len, hex);
    return h_sql_long(x->hx_db.hd_conninfo, "SELECT count(*) FROM hookd.quarantine WHERE "
                      "encode(sha256(raw_body), 'hex') = '%s'", hex);
}


long
h_events(struct h_ctx *x)
{
    return h_sql_long(x->hx_db.hd_conninfo, "SELECT count(*) FROM hookd.events");
}


long
h_quarantined(struct h_ctx *x)
{
    return h_sql_long(x->hx_db.hd_conninfo, "SELECT count(*) FROM hookd.quarantine");
}


void
h_suite_fini(void)
{
    for (int i = 0; i < H_MAX_TRACKED; i++) {
        pid_t pid = reg_pids[i];
        int status;

        if (pid <= 0) {
            continue;
        }
        (void)kill(pid, SIGTERM);
        for (int t = 0; t < 500 && waitpid(pid, &status, WNOHANG) == 0; t++) {
            h_sleep_ms(20);
        }
        if (kill(pid, 0) == 0) {
            (void)kill(pid, SIGKILL);
            (void)waitpid(pid, &status, 0);
        }
        reg_pids[i] = 0;
    }
    for (int i = 0; i < H_MAX_TRACKED; i++) {
        if (reg_clusters[i][0] != '\0') {
            struct h_cluster c;

            memset(&c, 0, sizeof(c));
            copy_str(c.hc_dir, sizeof(c.hc_dir), reg_clusters[i]);
            (void)h_cluster_stop(&c);
            reg_clusters[i][0] = '\0';
        }
    }
    for (int i = 0; i < H_MAX_TRACKED; i++) {
        if (reg_dbs[i][0] != '\0') {
            struct h_db db;

            memset(&db, 0, sizeof(db));
            copy_str(db.hd_name, sizeof(db.hd_name), reg_dbs[i]);
            h_db_drop(&db);
        }
    }
}


long
h_wait_long(struct h_ctx *x, long want, int timeout_ms, const char *fmt, ...)
{
    long long deadline = h_now_ms() + timeout_ms;
    char *sql = NULL;
    va_list ap;
    long n;
    int rc;

    va_start(ap, fmt);
    rc = vasprintf(&sql, fmt, ap);
    va_end(ap);
    cr_assert(rc >= 0);
    for (;;) {
        n = h_sql_long(x->hx_db.hd_conninfo, "%s", sql);
        if (n == want || h_now_ms() >= deadline) {
            break;
        }
        h_sleep_ms(50);
    }
    free(sql);
    return n;
}
