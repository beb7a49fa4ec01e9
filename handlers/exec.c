/* SPDX-License-Identifier: MIT */
/*
 * exec: runs a configured program for each event, never through a shell.
 *
 *   options = {
 *     command = [ "/usr/local/bin/notify", "--quiet" ];  # argv, absolute path
 *     retry_codes = [ 75 ];       # exit codes that mean "try again later"
 *     timeout = 20000;            # ms; default: the route's timeout less a margin
 *     max_output = 4096;          # bytes of stdout + stderr kept on the job
 *     env = { LANG = "C.UTF-8"; }; # more environment variables
 *   };
 *
 * The program gets the exact raw body on stdin and a minimal environment:
 * PATH=/usr/bin:/bin (unless env sets PATH), HOOKD_EVENT_TYPE,
 * HOOKD_EVENT_ID, HOOKD_CHATBOT_ID and HOOKD_THREAD_ID (when the event has
 * them), HOOKD_ROUTE, HOOKD_ATTEMPT and the configured variables. Nothing
 * from the payload is ever put on its command line. It runs in its own
 * process group with default signal handling and no other open descriptor
 * than 0, 1 and 2; stdout and stderr share one pipe, of which the first
 * max_output bytes are kept (the rest is read and dropped, so the program
 * never blocks on a full pipe).
 *
 * (glibc's posix_spawn leaves its two internal signals, 32 and 33, ignored;
 * glibc programs reset them when they start.)
 *
 * Outcome: exit 0 is done; an exit code in retry_codes (default 75,
 * EX_TEMPFAIL) retries; any other exit code or a signal fails the job. At
 * the timeout the whole process group gets SIGKILL and the attempt
 * retries. When the program exits, whatever it left running in its process
 * group is killed too, and the program is always reaped.
 *
 * The timeout is capped at the route's timeout less a margin (a tenth, at
 * most one second), so the program is stopped before hookd gives up on the
 * attempt. Thread-safe: the state is read-only after init.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <spawn.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/pidfd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "hookd_plugin.h"

#define EXEC_MAX_ARGS 256
#define EXEC_MAX_ENV 64
#define EXEC_DEFAULT_OUTPUT 4096
#define EXEC_MAX_OUTPUT (1024 * 1024)
#define EXEC_DEFAULT_RETRY 75           /* EX_TEMPFAIL of sysexits.h */
#define EXEC_MARGIN_MS 1000
#define EXEC_TICK_MS 20                 /* exit checks when pidfd is missing */
#define EXEC_WRITE_CHUNK 65536
#define EXEC_DRAIN_READS 64
#define EXEC_DEFAULT_PATH "PATH=/usr/bin:/bin"

struct exec_cfg {
    char **ec_argv;                     /* NULL-ended */
    int ec_retry[256];                  /* ec_retry[code] != 0: retry */
    int ec_timeout_ms;                  /* 0: from the route */
    size_t ec_max_output;
    char **ec_env;                      /* "NAME=value", NULL-ended */
    size_t ec_nenv;
    bool ec_sets_path;
};

/* One run of the program. */
struct exec_run {
    pid_t er_pid;
    int er_pidfd;                       /* -1: poll for the exit instead */
    int er_in;                          /* our end of its stdin, -1 once closed */
    int er_out;                         /* our end of its stdout/stderr, -1 at EOF */
    const char *er_body;
    size_t er_body_len;
    size_t er_written;
    char *er_buf;                       /* the kept output */
    size_t er_len;
    size_t er_cap;
    size_t er_dropped;
};

static const char *const exec_keys[] = {
    "command", "retry_codes", "timeout", "max_output", "env", NULL
};


/* ---- options ------------------------------------------------------------- */

static void
exec_free_strv(char **v)
{
    if (v == NULL) {
        return;
    }
    for (char **p = v; *p != NULL; p++) {
        free(*p);
    }
    free(v);
}


static void
exec_cfg_free(struct exec_cfg *c)
{
    if (c == NULL) {
        return;
    }
    exec_free_strv(c->ec_argv);
    exec_free_strv(c->ec_env);
    free(c);
}


/* A JSON string without NUL bytes, as a C string; NULL when not one. */
static const char *
exec_json_str(json_object *v)
{
    const char *s;

    if (!json_object_is_type(v, json_type_string)) {
        return NULL;
    }
    s = json_object_get_string(v);
    if (strlen(s) != (size_t)json_object_get_string_len(v)) {
        return NULL;
    }
    return s;
}


static int
exec_opt_command(json_object *options, struct exec_cfg *c, char *err, size_t errlen)
{
    json_object *cmd;
    const char *path;
    struct stat st;
    size_t n;

    if (!json_object_object_get_ex(options, "command", &cmd)
        || !json_object_is_type(cmd, json_type_array) || json_object_array_length(cmd) == 0)
    {
        snprintf(err, errlen, "command must be a list [ \"/path/program\", \"arg\", ... ]");
        return -1;
    }
    n = json_object_array_length(cmd);
    if (n > EXEC_MAX_ARGS) {
        snprintf(err, errlen, "command has more than %d words", EXEC_MAX_ARGS);
        return -1;
    }
    c->ec_argv = calloc(n + 1, sizeof(*c->ec_argv));
    if (c->ec_argv == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        const char *s = exec_json_str(json_object_array_get_idx(cmd, i));

        if (s == NULL) {
            snprintf(err, errlen, "command[%zu] must be a string", i);
            return -1;
        }
        if ((c->ec_argv[i] = strdup(s)) == NULL) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }
    }

    /* The program itself: absolute (no PATH search), a file, executable. */
    path = c->ec_argv[0];
    if (path[0] != '/') {
        snprintf(err, errlen, "command[0] \"%s\" must be an absolute path", path);
        return -1;
    }
    if (stat(path, &st) != 0) {
        snprintf(err, errlen, "command \"%s\": %s", path, strerror(errno));
        return -1;
    }
    if (!S_ISREG(st.st_mode) || access(path, X_OK) != 0) {
        snprintf(err, errlen, "command \"%s\" is not an executable file", path);
        return -1;
    }
    return 0;
}


static int
exec_opt_retry_codes(json_object *options, struct exec_cfg *c, char *err, size_t errlen)
{
    json_object *codes;

    if (!json_object_object_get_ex(options, "retry_codes", &codes)) {
        c->ec_retry[EXEC_DEFAULT_RETRY] = 1;
        return 0;
    }
    if (!json_object_is_type(codes, json_type_array)) {
        snprintf(err, errlen, "retry_codes must be a list of exit codes such as [ 75 ]");
        return -1;
    }
    for (size_t i = 0; i < json_object_array_length(codes); i++) {
        json_object *v = json_object_array_get_idx(codes, i);
        int64_t code = json_object_get_int64(v);

        if (!json_object_is_type(v, json_type_int) || code < 1 || code > 255) {
            snprintf(err, errlen, "retry_codes[%zu] must be an exit code from 1 to 255", i);
            return -1;
        }
        c->ec_retry[code] = 1;
    }
    return 0;
}


/* An optional integer option within [min, max]; *out is left alone when absent. */
static int
exec_opt_int(json_object *options, const char *key, int64_t min, int64_t max, int64_t *out,
             char *err, size_t errlen)
{
    json_object *v;
    int64_t n;

    if (!json_object_object_get_ex(options, key, &v)) {
        return 0;
    }
    n = json_object_get_int64(v);
    if (!json_object_is_type(v, json_type_int) || n < min || n > max) {
        snprintf(err, errlen, "%s must be an integer from %" PRId64 " to %" PRId64, key, min,
                 max);
        return -1;
    }
    *out = n;
    return 0;
}


/* A portable environment name that is not one of ours. */
static bool
exec_env_name_ok(const char *name)
{
    if (!((*name >= 'A' && *name <= 'Z') || (*name >= 'a' && *name <= 'z') || *name == '_')) {
        return false;
    }
    for (const char *p = name; *p != '\0'; p++) {
        if (!((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9')
              || *p == '_'))
        {
            return false;
        }
    }
    return strncmp(name, "HOOKD_", 6) != 0;
}


static int
exec_opt_env(json_object *options, struct exec_cfg *c, char *err, size_t errlen)
{
    json_object *env;
    size_t n = 0;

    if (!json_object_object_get_ex(options, "env", &env)) {
        return 0;
    }
    if (!json_object_is_type(env, json_type_object)) {
        snprintf(err, errlen, "env must be a group { NAME = \"value\"; }");
        return -1;
    }
    if (json_object_object_length(env) > EXEC_MAX_ENV) {
        snprintf(err, errlen, "env has more than %d variables", EXEC_MAX_ENV);
        return -1;
    }
    c->ec_env = calloc((size_t)json_object_object_length(env) + 1, sizeof(*c->ec_env));
    if (c->ec_env == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    json_object_object_foreach(env, name, val) {
        const char *s = exec_json_str(val);

        if (!exec_env_name_ok(name)) {
            snprintf(err, errlen, "env: \"%s\" is not a usable variable name (letters, digits, "
                     "_; HOOKD_ is reserved)", name);
            return -1;
        }
        if (s == NULL) {
            snprintf(err, errlen, "env.%s must be a string", name);
            return -1;
        }
        if (asprintf(&c->ec_env[n], "%s=%s", name, s) < 0) {
            c->ec_env[n] = NULL;
            snprintf(err, errlen, "out of memory");
            return -1;
        }
        n++;
        c->ec_sets_path |= strcmp(name, "PATH") == 0;
    }
    c->ec_nenv = n;
    return 0;
}


static int
exec_init(json_object *options, void **state, char *err, size_t errlen)
{
    struct exec_cfg *c = calloc(1, sizeof(*c));
    int64_t timeout = 0, max_output = EXEC_DEFAULT_OUTPUT;

    if (c == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    if (options == NULL) {
        snprintf(err, errlen, "options = { command = [ \"/path/program\" ]; } is required");
        goto fail;
    }
    json_object_object_foreach(options, key, val) {
        bool known = false;

        (void)val;
        for (size_t i = 0; exec_keys[i] != NULL; i++) {
            known |= strcmp(key, exec_keys[i]) == 0;
        }
        if (!known) {
            snprintf(err, errlen, "unknown option \"%s\"", key);
            goto fail;
        }
    }
    if (exec_opt_command(options, c, err, errlen) < 0
        || exec_opt_retry_codes(options, c, err, errlen) < 0
        || exec_opt_int(options, "timeout", 1, 86400000, &timeout, err, errlen) < 0
        || exec_opt_int(options, "max_output", 0, EXEC_MAX_OUTPUT, &max_output, err,
                        errlen) < 0
        || exec_opt_env(options, c, err, errlen) < 0)
    {
        goto fail;
    }
    c->ec_timeout_ms = (int)timeout;
    c->ec_max_output = (size_t)max_output;
    *state = c;
    return 0;

fail:
    exec_cfg_free(c);
    return -1;
}


static void
exec_fini(void *state)
{
    exec_cfg_free(state);
}


/* ---- one run ------------------------------------------------------------- */

static long long
exec_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}


/* The attempt's limit: the configured one, within the route's less a margin. */
static int
exec_timeout_ms(const struct exec_cfg *c, const struct hookd_ctx *ctx)
{
    int route = ctx->hc_timeout_ms;
    int margin = route / 10 < EXEC_MARGIN_MS ? route / 10 : EXEC_MARGIN_MS;
    int limit = route - margin;

    if (route <= 0) {
        return c->ec_timeout_ms > 0 ? c->ec_timeout_ms : 30000 - EXEC_MARGIN_MS;
    }
    if (limit < 1) {
        limit = 1;
    }
    return c->ec_timeout_ms > 0 && c->ec_timeout_ms < limit ? c->ec_timeout_ms : limit;
}


/* Appends one formatted "NAME=value" to envp; false when out of memory. */
static bool __attribute__((format(printf, 3, 4)))
exec_env_add(char **envp, size_t *n, const char *fmt, ...)
{
    va_list ap;
    char *s;
    int r;

    va_start(ap, fmt);
    r = vasprintf(&s, fmt, ap);
    va_end(ap);
    if (r < 0) {
        return false;
    }
    envp[(*n)++] = s;
    return true;
}


/* The program's environment (malloc'd, with its strings); NULL when out of memory. */
static char **
exec_build_env(const struct exec_cfg *c, const struct hookd_event *ev,
               const struct hookd_ctx *ctx)
{
    char **envp = calloc(c->ec_nenv + 8, sizeof(*envp));
    size_t n = 0;
    bool ok = envp != NULL;

    ok = ok && (c->ec_sets_path || exec_env_add(envp, &n, "%s", EXEC_DEFAULT_PATH));
    ok = ok && exec_env_add(envp, &n, "HOOKD_EVENT_TYPE=%s", ev->he_type ? ev->he_type : "");
    ok = ok && exec_env_add(envp, &n, "HOOKD_EVENT_ID=%" PRId64, ev->he_event_id);
    ok = ok && (ev->he_chatbot_id == NULL
                || exec_env_add(envp, &n, "HOOKD_CHATBOT_ID=%s", ev->he_chatbot_id));
    ok = ok && (ev->he_thread_id == NULL
                || exec_env_add(envp, &n, "HOOKD_THREAD_ID=%s", ev->he_thread_id));
    ok = ok && exec_env_add(envp, &n, "HOOKD_ROUTE=%s", ctx->hc_route ? ctx->hc_route : "");
    ok = ok && exec_env_add(envp, &n, "HOOKD_ATTEMPT=%d", ctx->hc_attempt);
    for (size_t i = 0; ok && i < c->ec_nenv; i++) {
        ok = exec_env_add(envp, &n, "%s", c->ec_env[i]);
    }
    if (!ok) {
        exec_free_strv(envp);
        return NULL;
    }
    return envp;
}


/*
 * Starts the program with stdin and stdout/stderr on new pipes. Returns 0,
 * or an errno value.
 */
static int
exec_spawn(const struct exec_cfg *c, char **envp, struct exec_run *run)
{
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    sigset_t none, all;
    int in[2] = {-1, -1}, out[2] = {-1, -1};
    int rc;

    if (pipe2(in, O_CLOEXEC) != 0 || pipe2(out, O_CLOEXEC) != 0) {
        rc = errno;
        goto out;
    }
    (void)sigemptyset(&none);
    (void)sigfillset(&all);
    if ((rc = posix_spawn_file_actions_init(&fa)) != 0) {
        goto out;
    }
    if ((rc = posix_spawnattr_init(&attr)) != 0) {
        (void)posix_spawn_file_actions_destroy(&fa);
        goto out;
    }

    /*
     * Own process group (so the timeout can kill all of it), no blocked
     * signals and default dispositions (hookd ignores SIGPIPE and blocks its
     * stop signals), and only fds 0-2 open.
     */
    rc = posix_spawn_file_actions_adddup2(&fa, in[0], STDIN_FILENO);
    rc = rc ? rc : posix_spawn_file_actions_adddup2(&fa, out[1], STDOUT_FILENO);
    rc = rc ? rc : posix_spawn_file_actions_adddup2(&fa, out[1], STDERR_FILENO);
    rc = rc ? rc : posix_spawn_file_actions_addclosefrom_np(&fa, STDERR_FILENO + 1);
    rc = rc ? rc : posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP
                                            | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    rc = rc ? rc : posix_spawnattr_setpgroup(&attr, 0);
    rc = rc ? rc : posix_spawnattr_setsigmask(&attr, &none);
    rc = rc ? rc : posix_spawnattr_setsigdefault(&attr, &all);
    rc = rc ? rc : posix_spawn(&run->er_pid, c->ec_argv[0], &fa, &attr, c->ec_argv, envp);
    (void)posix_spawn_file_actions_destroy(&fa);
    (void)posix_spawnattr_destroy(&attr);
    if (rc != 0) {
        goto out;
    }

    /* Ours are non-blocking; the child's ends stay blocking. */
    run->er_in = in[1];
    run->er_out = out[0];
    in[1] = out[0] = -1;
    (void)fcntl(run->er_in, F_SETFL, O_NONBLOCK);
    (void)fcntl(run->er_out, F_SETFL, O_NONBLOCK);
    run->er_pidfd = pidfd_open(run->er_pid, 0);

out:
    for (int i = 0; i < 2; i++) {
        if (in[i] >= 0) {
            close(in[i]);
        }
        if (out[i] >= 0) {
            close(out[i]);
        }
    }
    return rc;
}


static void
exec_close(int *fd)
{
    if (*fd >= 0) {
        close(*fd);
        *fd = -1;
    }
}


/* Writes what the pipe takes of the body; closes stdin when done or refused. */
static void
exec_feed(struct exec_run *run)
{
    while (run->er_in >= 0 && run->er_written < run->er_body_len) {
        size_t n = run->er_body_len - run->er_written;
        ssize_t w = write(run->er_in, run->er_body + run->er_written,
                          n < EXEC_WRITE_CHUNK ? n : EXEC_WRITE_CHUNK);

        if (w > 0) {
            run->er_written += (size_t)w;
        } else if (w < 0 && errno == EINTR) {
            continue;
        } else if (w < 0 && errno == EAGAIN) {
            return;
        } else {
            /* EPIPE (SIGPIPE is ignored in hookd): it stopped reading; its exit decides. */
            break;
        }
    }
    exec_close(&run->er_in);
}


/*
 * Reads what is there now, at most EXEC_DRAIN_READS reads so a chatty child
 * cannot hold us past the deadline: keeps up to er_cap bytes, drops the rest.
 */
static void
exec_drain(struct exec_run *run)
{
    char scratch[4096];

    for (int i = 0; i < EXEC_DRAIN_READS && run->er_out >= 0; i++) {
        bool keep = run->er_len < run->er_cap;
        char *dst = keep ? run->er_buf + run->er_len : scratch;
        size_t room = keep ? run->er_cap - run->er_len : sizeof(scratch);
        ssize_t r = read(run->er_out, dst, room);

        if (r > 0 && keep) {
            run->er_len += (size_t)r;
        } else if (r > 0) {
            run->er_dropped += (size_t)r;
        } else if (r < 0 && errno == EINTR) {
            continue;
        } else if (r < 0 && errno == EAGAIN) {
            return;
        } else {
            exec_close(&run->er_out);
        }
    }
}


/* True when the child has exited (it is not reaped, so its pid stays reserved). */
static bool
exec_exited(const struct exec_run *run)
{
    siginfo_t si;

    memset(&si, 0, sizeof(si));
    if (waitid(P_PID, (id_t)run->er_pid, &si, WEXITED | WNOHANG | WNOWAIT) != 0) {
        return errno != EINTR;
    }
    return si.si_pid == run->er_pid;
}


/*
 * Feeds stdin and collects output until the child exits (true) or the
 * deadline passes (false).
 */
static bool
exec_pump(struct exec_run *run, long long deadline)
{
    if (run->er_body_len == 0) {
        exec_close(&run->er_in);
    }
    for (;;) {
        struct pollfd pfd[3];
        int n = 0;
        long long wait = deadline - exec_now_ms();

        if (exec_exited(run)) {
            /* What it wrote before exiting is in the pipe now. */
            exec_drain(run);
            return true;
        }
        if (wait <= 0) {
            return false;
        }
        if (run->er_in >= 0) {
            pfd[n++] = (struct pollfd){run->er_in, POLLOUT, 0};
        }
        if (run->er_out >= 0) {
            pfd[n++] = (struct pollfd){run->er_out, POLLIN, 0};
        }
        if (run->er_pidfd >= 0) {
            pfd[n++] = (struct pollfd){run->er_pidfd, POLLIN, 0};
        } else if (wait > EXEC_TICK_MS) {
            wait = EXEC_TICK_MS;
        }
        if (poll(pfd, (nfds_t)n, (int)wait) < 0 && errno != EINTR) {
            /* Cannot happen with valid fds; wait out the time in ticks. */
            struct timespec ts = {0, EXEC_TICK_MS * 1000000L};

            (void)nanosleep(&ts, NULL);
        }
        exec_feed(run);
        exec_drain(run);
    }
}


/*
 * Kills the process group, then reaps the child. Returns true and its wait
 * status, or false when it could not be collected (someone else reaped it).
 */
static bool
exec_reap(struct exec_run *run, int *status)
{
    pid_t r;

    /* Still unreaped, so the group id cannot have been reused. */
    (void)kill(-run->er_pid, SIGKILL);
    while ((r = waitpid(run->er_pid, status, 0)) < 0 && errno == EINTR) {
    }
    return r == run->er_pid;
}


static enum hookd_outcome
exec_outcome(const struct exec_cfg *c, int status, struct hookd_ctx *ctx)
{
    char reason[64];

    if (WIFEXITED(status)) {
        int code = WEXITSTATUS(status);

        if (code == 0) {
            return HOOKD_DONE;
        }
        snprintf(reason, sizeof(reason), "exited with status %d", code);
        ctx->hc_set_reason(ctx, reason);
        return c->ec_retry[code] ? HOOKD_RETRY : HOOKD_FAIL;
    }
    if (WIFSIGNALED(status)) {
        snprintf(reason, sizeof(reason), "killed by signal %d", WTERMSIG(status));
    } else {
        snprintf(reason, sizeof(reason), "ended with wait status %d", status);
    }
    ctx->hc_set_reason(ctx, reason);
    return HOOKD_FAIL;
}


static enum hookd_outcome
exec_handle(void *state, const struct hookd_event *ev, struct hookd_ctx *ctx)
{
    const struct exec_cfg *c = state;
    struct exec_run run;
    enum hookd_outcome outcome = HOOKD_RETRY;
    int timeout_ms = exec_timeout_ms(c, ctx);
    long long deadline = exec_now_ms() + timeout_ms;
    char **envp = exec_build_env(c, ev, ctx);
    char reason[128];
    int rc, status = 0;
    bool exited;

    memset(&run, 0, sizeof(run));
    run.er_pid = -1;
    run.er_pidfd = run.er_in = run.er_out = -1;
    run.er_body = ev->he_raw;
    run.er_body_len = ev->he_raw_len;
    run.er_cap = c->ec_max_output;
    run.er_buf = malloc(run.er_cap > 0 ? run.er_cap : 1);
    if (envp == NULL || run.er_buf == NULL) {
        ctx->hc_set_reason(ctx, "out of memory");
        goto out;
    }
    rc = exec_spawn(c, envp, &run);
    if (rc != 0) {
        snprintf(reason, sizeof(reason), "could not run the command: %s", strerror(rc));
        ctx->hc_set_reason(ctx, reason);
        ctx->hc_log(ctx, HOOKD_LOG_WARNING, "could not run the command: %s", strerror(rc));
        goto out;
    }
    ctx->hc_log(ctx, HOOKD_LOG_DEBUG, "command started pid=%d timeout_ms=%d", (int)run.er_pid,
                timeout_ms);

    exited = exec_pump(&run, deadline);
    if (!exec_reap(&run, &status)) {
        ctx->hc_set_reason(ctx, "could not collect the command's exit status");
        ctx->hc_log(ctx, HOOKD_LOG_WARNING, "could not collect the command's exit status "
                    "pid=%d", (int)run.er_pid);
    } else if (exited) {
        outcome = exec_outcome(c, status, ctx);
    } else {
        snprintf(reason, sizeof(reason), "timed out after %d ms", timeout_ms);
        ctx->hc_set_reason(ctx, reason);
    }
    if (run.er_dropped > 0) {
        ctx->hc_log(ctx, HOOKD_LOG_DEBUG, "command output cut kept=%zu dropped=%zu",
                    run.er_len, run.er_dropped);
    }
    if (run.er_len > 0) {
        ctx->hc_set_output(ctx, run.er_buf, run.er_len);
    }

out:
    exec_close(&run.er_in);
    exec_close(&run.er_out);
    exec_close(&run.er_pidfd);
    free(run.er_buf);
    exec_free_strv(envp);
    return outcome;
}


const struct hookd_plugin hookd_plugin_v1 = {
    HOOKD_PLUGIN_ABI, "exec", exec_init, exec_handle, exec_fini
};
