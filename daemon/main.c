/* SPDX-License-Identifier: MIT */
/*
 * main: the hookd command line and the life of `hookd serve`.
 *
 * The main thread owns the signals (all other threads block them): SIGHUP
 * reloads, SIGTERM and SIGINT stop in order (listener first, so requests in
 * flight finish, then the store). A second stop signal during shutdown exits
 * at once; everything acknowledged is already committed by then.
 */
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <systemd/sd-daemon.h>

#include "admin.h"
#include "api.h"
#include "cfg.h"
#include "cli.h"
#include "cli_api.h"
#include "clock.h"
#include "dispatch.h"
#include "http.h"
#include "log.h"
#include "sendtest.h"
#include "store.h"

#define HOOKD_VERSION "0.1.0"
/* A core thread silent this long counts as stalled (watchdog). */
#define MAIN_STALL_MS 10000

/* Exit codes: 0 done, 1 runtime failure, 2 usage or configuration error. */
enum {
    EXIT_RUNTIME = 1,
    EXIT_USAGE = 2
};

static const char main_usage[] =
    "usage: hookd COMMAND [OPTIONS]\n"
    "\n"
    "Receives ContextGPT webhooks over HTTPS, verifies them and stores each one\n"
    "durably in PostgreSQL before answering 200.\n"
    "\n"
    "commands:\n"
    "  serve          run the daemon in the foreground\n"
    "  migrate        apply the database migrations and exit\n"
    "  check-config   validate a configuration file and exit\n"
    "  send-test      sign and send sample events to a running hookd\n"
    "  jobs           show the job queue: counts by route and state, or jobs\n"
    "  replay         put dead jobs (or an event's jobs) back in the queue\n"
    "  events         show a conversation's events with their jobs\n"
    "  reply          send an agent message into a conversation\n"
    "  escalate       hand a conversation to a human\n"
    "  handoff        list, claim and close handoff tickets\n"
    "\n"
    "options:\n"
    "  -h, --help     show this help (hookd COMMAND --help for a command's)\n"
    "  -V, --version  show the version\n"
    "\n"
    "Exit status: 0 success, 1 runtime failure, 2 usage or configuration error.\n";

static const char serve_usage[] =
    "usage: hookd serve --config FILE\n"
    "\n"
    "Runs the daemon in the foreground, logging to stderr. Applies pending\n"
    "migrations at start; when PostgreSQL is unreachable it still starts,\n"
    "answers webhooks with 503 and Retry-After, and keeps retrying.\n"
    "\n"
    "  -c, --config FILE  configuration file (libconfig syntax)\n"
    "  -h, --help         show this help\n"
    "\n"
    "Signals: SIGHUP reloads the configuration (a broken one is refused and the\n"
    "current one kept); SIGTERM or SIGINT stop after the requests in flight; a\n"
    "second one exits at once.\n"
    "Environment: HOOKD_DATABASE_URL is the conninfo when the file sets none;\n"
    "CREDENTIALS_DIRECTORY is where `credentials` secrets are read.\n";

static const char migrate_usage[] =
    "usage: hookd migrate --config FILE\n"
    "\n"
    "Applies the SQL migrations built into hookd that the database lacks, under\n"
    "an advisory lock (instances starting together take turns), and exits.\n"
    "\n"
    "  -c, --config FILE  configuration file (for database.conninfo)\n"
    "  -h, --help         show this help\n";

static const char check_usage[] =
    "usage: hookd check-config --config FILE\n"
    "\n"
    "Validates the configuration without starting: syntax, unknown settings,\n"
    "types and ranges, secret files and TLS files, and loads every route's\n"
    "handler plugin with its options. Prints \"config OK\" or one\n"
    "error naming the file and line, exit status 2.\n"
    "\n"
    "  -c, --config FILE  configuration file\n"
    "  -h, --help         show this help\n";

static volatile sig_atomic_t main_stop_requested;


/* Parses "--config FILE" (and --help) for the simple commands. */
static int
parse_config_arg(int argc, char **argv, const char *usage, const char **ret_file)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0}
    };
    int c;

    *ret_file = NULL;
    optind = 1;
    while ((c = getopt_long(argc, argv, "c:h", opts, NULL)) != -1) {
        switch (c) {
        case 'c':
            *ret_file = optarg;
            break;
        case 'h':
            fputs(usage, stdout);
            exit(0);
        default:
            fputs(usage, stderr);
            return -1;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "hookd: unexpected argument \"%s\"\n%s", argv[optind], usage);
        return -1;
    }
    if (*ret_file == NULL) {
        fprintf(stderr, "hookd: --config FILE is required\n%s", usage);
        return -1;
    }
    return 0;
}


static int
load_or_report(const char *file, struct cfg **ret)
{
    char err[CFG_ERR_MAX];

    if (cfg_load(file, ret, err, sizeof(err)) < 0) {
        fprintf(stderr, "hookd: %s\n", err);
        return -1;
    }
    return 0;
}


static int
cmd_check_config(int argc, char **argv)
{
    const char *file;
    struct cfg *cfg;

    if (parse_config_arg(argc, argv, check_usage, &file) < 0) {
        return EXIT_USAGE;
    }
    if (load_or_report(file, &cfg) < 0) {
        return EXIT_USAGE;
    }
    printf("config OK: %zu listen address(es), %zu endpoint(s), %zu route(s) with their "
           "plugins loaded, API client %s, database %s\n", cfg->cf_nlisten, cfg->cf_nendpoints,
           cfg->cf_nroutes, cfg->cf_api_key ? "configured" : "not configured",
           *cfg_conninfo(cfg) ? "configured" : "from libpq defaults");
    cfg_free(cfg);
    return 0;
}


static int
cmd_migrate(int argc, char **argv)
{
    const char *file;
    struct cfg *cfg;
    char err[CFG_ERR_MAX];
    int applied = 0;
    int rc;

    if (parse_config_arg(argc, argv, migrate_usage, &file) < 0) {
        return EXIT_USAGE;
    }
    if (load_or_report(file, &cfg) < 0) {
        return EXIT_USAGE;
    }
    rc = store_migrate(cfg_conninfo(cfg), cfg->cf_connect_timeout, &applied, err, sizeof(err));
    cfg_free(cfg);
    if (rc < 0) {
        fprintf(stderr, "hookd: %s\n", err);
        return EXIT_RUNTIME;
    }
    printf("migrations applied: %d\n", applied);
    return 0;
}


static void
reload(struct cfg_holder *cfgs, struct http *h, const char *file)
{
    struct cfg *new_cfg;
    const struct cfg *old;
    char err[CFG_ERR_MAX];
    char changes[256];

    sd_notify(0, "RELOADING=1");
    if (cfg_load(file, &new_cfg, err, sizeof(err)) < 0) {
        log_error("reload failed, keeping the current configuration: %s", err);
        sd_notify(0, "READY=1");
        return;
    }
    /* The certificate first: a file that does not load refuses the whole reload. */
    if (http_reload_tls(h, new_cfg->cf_tls_cert, new_cfg->cf_tls_key, err, sizeof(err)) < 0) {
        log_error("reload failed, keeping the current configuration: %s", err);
        cfg_free(new_cfg);
        sd_notify(0, "READY=1");
        return;
    }
    old = cfg_get(cfgs);
    cfg_restart_changes(old, new_cfg, changes, sizeof(changes));
    cfg_put(cfgs, old);
    if (changes[0] != '\0') {
        log_warning("reload: these settings change only on restart and were not applied: %s",
                    changes);
    }
    log_set_level(new_cfg->cf_log_level);
    log_notice("reload done endpoints=%zu routes=%zu", new_cfg->cf_nendpoints,
               new_cfg->cf_nroutes);
    if (!cfg_holder_swap(cfgs, new_cfg)) {
        log_error("could not apply the new configuration: out of memory");
    }
    sd_notify(0, "READY=1");
}


/*
 * Tells systemd we are alive, but only when the threads that must keep
 * turning did so lately: the store's monitor (every second) and dispatch's
 * listener and supervisor (every 100 ms). A wedged one stops the pings and
 * systemd restarts hookd. Also refreshes the one-line STATUS.
 */
static void
supervise_tick(struct store *st, struct dispatch *disp, bool watchdog)
{
    long long now = clock_mono_ms();
    static long long last_status;
    bool alive = now - store_heartbeat_ms(st) < MAIN_STALL_MS
                 && (disp == NULL || now - dispatch_heartbeat_ms(disp) < MAIN_STALL_MS);

    if (watchdog && alive) {
        sd_notify(0, "WATCHDOG=1");
    } else if (watchdog) {
        log_error("a core thread stalled; not telling the watchdog we are alive");
    }
    if (now - last_status >= 10000) {
        unsigned long long done, dead;
        char status[160];

        dispatch_counts(disp, &done, &dead);
        snprintf(status, sizeof(status), "STATUS=%s; %llu events stored, %llu jobs done, "
                 "%llu dead since start", store_ready(st) ? "serving" : "database unavailable",
                 store_events_stored(st), done, dead);
        sd_notify(0, status);
        last_status = now;
    }
}


/* Runs during shutdown: a second stop signal ends the process at once. */
static void *
second_signal_main(void *arg)
{
    sigset_t *set = arg;
    int sig;

    while (sigwait(set, &sig) == 0) {
        if (sig == SIGTERM || sig == SIGINT) {
            log_warning("second stop signal, exiting now without waiting");
            _exit(0);
        }
    }
    return NULL;
}


static int
cmd_serve(int argc, char **argv)
{
    const char *file;
    struct cfg *cfg;
    struct cfg_holder *cfgs;
    struct store *st = NULL;
    struct http *h = NULL;
    struct dispatch *disp = NULL;
    struct api *api = NULL;
    struct admin *adm = NULL;
    char conninfo[4096];
    int rc = 0;
    uint64_t watchdog_usec = 0;
    bool watchdog;
    int stop_grace_ms;
    char err[CFG_ERR_MAX];
    static sigset_t set;
    struct timespec tick = {1, 0};
    pthread_t second;
    bool announced = false;

    if (parse_config_arg(argc, argv, serve_usage, &file) < 0) {
        return EXIT_USAGE;
    }
    if (load_or_report(file, &cfg) < 0) {
        return EXIT_USAGE;
    }
    log_set_level(cfg->cf_log_level);

    /* Every thread created from here on inherits the blocked set. */
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);

    log_notice("hookd %s starting config=\"%s\"", HOOKD_VERSION, file);
    if (api_new(cfg, &api, err, sizeof(err)) < 0) {
        log_error("could not set up the ContextGPT API client: %s", err);
        cfg_free(cfg);
        return EXIT_RUNTIME;
    }
    log_notice("ContextGPT API client %s", api ? "configured (key set)" : "not configured");
    sd_notify(0, "STATUS=connecting to the database");
    if (store_start(cfg, &st, err, sizeof(err)) < 0) {
        log_error("could not start the store: %s", err);
        cfg_free(cfg);
        return EXIT_RUNTIME;
    }
    snprintf(conninfo, sizeof(conninfo), "%s", cfg_conninfo(cfg));
    watchdog = sd_watchdog_enabled(0, &watchdog_usec) > 0;
    stop_grace_ms = cfg->cf_stop_grace_ms;
    cfgs = cfg_holder_new(cfg);
    if (cfgs == NULL || http_start(cfgs, st, &h, err, sizeof(err)) < 0) {
        log_error("%s", cfgs ? err : "out of memory");
        store_stop(st);
        cfg_holder_free(cfgs);
        return EXIT_RUNTIME;
    }
    for (size_t i = 0; i < cfg->cf_nlisten; i++) {
        log_notice("listening on https://%s", cfg->cf_listen[i]);
    }
    if (admin_start(cfg, st, api, &adm, err, sizeof(err)) < 0) {
        log_error("%s", err);
        http_stop(h);
        store_stop(st);
        api_free(api);
        cfg_holder_free(cfgs);
        return EXIT_RUNTIME;
    }
    if (adm != NULL) {
        log_notice("admin listener on http://%s (/healthz, /readyz, /metrics)",
                   cfg->cf_admin_listen);
    }

    while (!main_stop_requested) {
        int sig;

        if (!announced && store_ready(st)) {
            /* Dispatch starts once the schema it needs is there. */
            if (dispatch_start(cfgs, conninfo, api, &disp, err, sizeof(err)) < 0) {
                log_error("%s", err);
                rc = EXIT_RUNTIME;
                break;
            }
            admin_set_dispatch(adm, disp);
            announced = true;
            log_notice("hookd ready");
            sd_notify(0, "READY=1\nSTATUS=serving");
        } else if (!store_ready(st)) {
                }
        supervise_tick(st, disp, watchdog);
        /* Look often until ready, so "ready" is reported promptly. */
        tick.tv_sec = announced ? 1 : 0;
        tick.tv_nsec = announced ? 0 : 50000000;
        sig = sigtimedwait(&set, NULL, &tick);
        if (sig == SIGHUP) {
            reload(cfgs, h, file);
        } else if (sig == SIGTERM || sig == SIGINT) {
            main_stop_requested = 1;
        }
    }

    log_notice("stopping: finishing requests in flight");
    sd_notify(0, "STOPPING=1");
    dispatch_quiesce(disp);
    if (pthread_create(&second, NULL, second_signal_main, &set) == 0) {
        pthread_detach(second);
    }
    http_stop(h);
    admin_stop(adm);     /* before dispatch, whose counters it reads */
    dispatch_stop(disp, stop_grace_ms);
    api_free(api);
    store_stop(st);
    cfg_holder_free(cfgs);
    OPENSSL_cleanse(conninfo, sizeof(conninfo));
    log_notice("stopped");
    return rc;
}


int
main(int argc, char **argv)
{
    const char *cmd = argc > 1 ? argv[1] : NULL;

    if (cmd == NULL) {
        fputs(main_usage, stderr);
        return EXIT_USAGE;
    }
    if (strcmp(cmd, "-h") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "help") == 0) {
        fputs(main_usage, stdout);
        return 0;
    }
    if (strcmp(cmd, "-V") == 0 || strcmp(cmd, "--version") == 0) {
        printf("hookd %s\n", HOOKD_VERSION);
        return 0;
    }
    if (strcmp(cmd, "serve") == 0) {
        return cmd_serve(argc - 1, argv + 1);
    }
    if (strcmp(cmd, "migrate") == 0) {
        return cmd_migrate(argc - 1, argv + 1);
    }
    if (strcmp(cmd, "check-config") == 0) {
        return cmd_check_config(argc - 1, argv + 1);
    }
    if (strcmp(cmd, "send-test") == 0) {
        return sendtest_main(argc - 1, argv + 1);
    }
    if (strcmp(cmd, "jobs") == 0) {
        return cli_jobs(argc - 1, argv + 1);
    }
    if (strcmp(cmd, "replay") == 0) {
        return cli_replay(argc - 1, argv + 1);
    }
    if (strcmp(cmd, "events") == 0) {
        return cli_events(argc - 1, argv + 1);
    }
    if (strcmp(cmd, "reply") == 0) {
        return cli_reply(argc - 1, argv + 1);
    }
    if (strcmp(cmd, "escalate") == 0) {
        return cli_escalate(argc - 1, argv + 1);
    }
    if (strcmp(cmd, "handoff") == 0) {
        return cli_handoff(argc - 1, argv + 1);
    }
    fprintf(stderr, "hookd: unrecognized command \"%s\"\n%s", cmd, main_usage);
    return EXIT_USAGE;
}
