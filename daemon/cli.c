/* SPDX-License-Identifier: MIT */
#include "cli.h"

#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>
#include <libpq-fe.h>

#include "cfg.h"

/* Widest a table column gets before its text is cut. */
#define CLI_COL_MAX 48

enum {
    CLI_EXIT_RUNTIME = 1,
    CLI_EXIT_USAGE = 2
};

/* What every command takes, parsed by one getopt loop. */
struct cli_args {
    const char *config;
    const char *status;
    const char *route;
    const char *chatbot;
    const char *thread;
    const char *job;
    const char *event;
    int limit;
    bool dead;
    bool json;
};

static const char jobs_usage[] =
    "usage: hookd jobs --config FILE [--status STATUS] [--route NAME] [--limit N] [--json]\n"
    "\n"
    "Without --status or --route: how many jobs each route has in each state\n"
    "(pending, running, done, dead). With them: the jobs themselves, newest\n"
    "first, with their attempts and last error.\n"
    "\n"
    "  -c, --config FILE   configuration file (for database.conninfo)\n"
    "  -s, --status STATUS pending, running, done or dead\n"
    "  -r, --route NAME    only this route\n"
    "  -n, --limit N       at most N jobs (default 50)\n"
    "      --json          JSON instead of a table\n"
    "  -h, --help          show this help\n";

static const char replay_usage[] =
    "usage: hookd replay --config FILE (--job ID | --route NAME --dead | --event ID) [--json]\n"
    "\n"
    "Puts jobs back in the queue with their attempts reset: one dead job, every\n"
    "dead job of a route, or every job of an event (except running ones). The\n"
    "jobs keep their place in their conversation's order. Running daemons are\n"
    "woken at once.\n"
    "\n"
    "  -c, --config FILE   configuration file (for database.conninfo)\n"
    "  -j, --job ID        this dead job\n"
    "  -r, --route NAME    with --dead: every dead job of this route\n"
    "      --dead          see --route\n"
    "  -e, --event ID      every job of this event\n"
    "      --json          JSON instead of a table\n"
    "  -h, --help          show this help\n";

static const char events_usage[] =
    "usage: hookd events --config FILE [--chatbot ID --thread ID | --event ID]\n"
    "                    [--limit N] [--json]\n"
    "\n"
    "A conversation's timeline: its events in the order received, each with its\n"
    "jobs' routes and states. Without --chatbot/--thread or --event: the latest\n"
    "events of every conversation.\n"
    "\n"
    "  -c, --config FILE   configuration file (for database.conninfo)\n"
    "  -b, --chatbot ID    the conversation's chatbot id\n"
    "  -t, --thread ID     the conversation's thread id\n"
    "  -e, --event ID      one event\n"
    "  -n, --limit N       at most N events (default 50)\n"
    "      --json          JSON instead of a table\n"
    "  -h, --help          show this help\n";


/* True when s is a positive decimal id. */
static bool
is_id(const char *s)
{
    if (s == NULL || *s == '\0' || strlen(s) > 18) {
        return false;
    }
    for (const char *p = s; *p != '\0'; p++) {
        if (*p < '0' || *p > '9') {
            return false;
        }
    }
    return true;
}


static int
parse_args(int argc, char **argv, const char *usage, struct cli_args *a)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"status", required_argument, NULL, 's'},
        {"route", required_argument, NULL, 'r'},
        {"chatbot", required_argument, NULL, 'b'},
        {"thread", required_argument, NULL, 't'},
        {"job", required_argument, NULL, 'j'},
        {"event", required_argument, NULL, 'e'},
        {"limit", required_argument, NULL, 'n'},
        {"dead", no_argument, NULL, 'D'},
        {"json", no_argument, NULL, 'J'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0}
    };
    int c;

    memset(a, 0, sizeof(*a));
    a->limit = 50;
    optind = 1;
    while ((c = getopt_long(argc, argv, "c:s:r:b:t:j:e:n:h", opts, NULL)) != -1) {
        switch (c) {
        case 'c':
            a->config = optarg;
            break;
        case 's':
            a->status = optarg;
            break;
        case 'r':
            a->route = optarg;
            break;
        case 'b':
            a->chatbot = optarg;
            break;
        case 't':
            a->thread = optarg;
            break;
        case 'j':
            a->job = optarg;
            break;
        case 'e':
            a->event = optarg;
            break;
        case 'n': {
            char *end = NULL;
            long v = strtol(optarg, &end, 10);

            if (end == optarg || *end != '\0' || v < 1 || v > 100000) {
                fprintf(stderr, "hookd: --limit must be a number from 1 to 100000\n");
                return -1;
            }
            a->limit = (int)v;
            break;
        }
        case 'D':
            a->dead = true;
            break;
        case 'J':
            a->json = true;
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
    if (a->config == NULL) {
        fprintf(stderr, "hookd: --config FILE is required\n%s", usage);
        return -1;
    }
    if ((a->job != NULL && !is_id(a->job)) || (a->event != NULL && !is_id(a->event))) {
        fprintf(stderr, "hookd: \"%s\" is not a job or event id (a number)\n",
                a->job != NULL && !is_id(a->job) ? a->job : a->event);
        return -1;
    }
    return 0;
}


/*
 * Connects with the config's conninfo. On failure prints the reason,
 * returns NULL and sets *ret_code: 2 for a configuration error, 1 when the
 * database could not be reached.
 */
static PGconn *
cli_connect(const char *file, int *ret_code)
{
    struct cfg *cfg;
    char err[CFG_ERR_MAX];
    PGconn *c;

    *ret_code = CLI_EXIT_RUNTIME;
    if (cfg_load(file, &cfg, err, sizeof(err)) < 0) {
        fprintf(stderr, "hookd: %s\n", err);
        *ret_code = CLI_EXIT_USAGE;
        return NULL;
    }
    c = PQconnectdb(cfg_conninfo(cfg));
    cfg_free(cfg);
    if (PQstatus(c) != CONNECTION_OK) {
        const char *msg = PQerrorMessage(c);

        fprintf(stderr, "hookd: could not connect to the database: %.*s\n",
                (int)strcspn(msg, "\n"), msg);
        PQfinish(c);
        return NULL;
    }
    return c;
}


/* Prints a result as an aligned table (cells cut at CLI_COL_MAX) or as JSON. */
static void
print_result(PGresult *res, bool json)
{
    int rows = PQntuples(res);
    int cols = PQnfields(res);
    int width[32] = {0};

    if (json) {
        json_object *arr = json_object_new_array();

        for (int r = 0; r < rows; r++) {
            json_object *o = json_object_new_object();

            for (int c = 0; c < cols; c++) {
                json_object_object_add(o, PQfname(res, c), PQgetisnull(res, r, c) ? NULL
                                       : json_object_new_string(PQgetvalue(res, r, c)));
            }
            json_object_array_add(arr, o);
        }
        puts(json_object_to_json_string_ext(arr, JSON_C_TO_STRING_PRETTY
                                            | JSON_C_TO_STRING_NOSLASHESCAPE));
        json_object_put(arr);
        return;
    }
    if (cols > 32) {
        cols = 32;
    }
    for (int c = 0; c < cols; c++) {
        width[c] = (int)strlen(PQfname(res, c));
        for (int r = 0; r < rows; r++) {
            int w = PQgetlength(res, r, c);

            width[c] = w > width[c] ? w : width[c];
        }
        width[c] = width[c] > CLI_COL_MAX ? CLI_COL_MAX : width[c];
    }
    for (int c = 0; c < cols; c++) {
        printf("%-*s%s", width[c], PQfname(res, c), c + 1 < cols ? "  " : "\n");
    }
    for (int r = 0; r < rows; r++) {
        for (int c = 0; c < cols; c++) {
            const char *v = PQgetisnull(res, r, c) ? "-" : PQgetvalue(res, r, c);
            int len = (int)strcspn(v, "\r\n");

            if (len > width[c]) {
                printf("%.*s..%s", width[c] - 2, v, c + 1 < cols ? "  " : "\n");
            } else {
                printf("%-*.*s%s", width[c], len, v, c + 1 < cols ? "  " : "\n");
            }
        }
    }
    if (rows == 0) {
        puts("(none)");
    }
}


int
cli_query_print(PGconn *c, const char *sql, int n, const char *const *params, bool json)
{
    PGresult *res = PQexecParams(c, sql, n, NULL, params, NULL, NULL, 0);
    int rc = 0;

    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        const char *msg = PQresultErrorMessage(res);

        fprintf(stderr, "hookd: query failed: %.*s\n", (int)strcspn(msg, "\n"), msg);
        rc = CLI_EXIT_RUNTIME;
    } else {
        print_result(res, json);
    }
    PQclear(res);
    return rc;
}


int
cli_jobs(int argc, char **argv)
{
    struct cli_args a;
    char limit[16];
    PGconn *c;
    int rc;

    if (parse_args(argc, argv, jobs_usage, &a) < 0) {
        return CLI_EXIT_USAGE;
    }
    if (a.status != NULL && strcmp(a.status, "pending") != 0 && strcmp(a.status, "running") != 0
        && strcmp(a.status, "done") != 0 && strcmp(a.status, "dead") != 0)
    {
        fprintf(stderr, "hookd: --status must be pending, running, done or dead\n");
        return CLI_EXIT_USAGE;
    }
    if ((c = cli_connect(a.config, &rc)) == NULL) {
        return rc;
    }
    snprintf(limit, sizeof(limit), "%d", a.limit);
    if (a.status == NULL && a.route == NULL) {
        rc = cli_query_print(c,
                         "SELECT route,"
                         " count(*) FILTER (WHERE status = 'pending') AS pending,"
                         " count(*) FILTER (WHERE status = 'running') AS running,"
                         " count(*) FILTER (WHERE status = 'done') AS done,"
                         " count(*) FILTER (WHERE status = 'dead') AS dead,"
                         " to_char(min(run_at) FILTER (WHERE status = 'pending'),"
                         "  'YYYY-MM-DD HH24:MI:SS') AS next_run"
                         " FROM hookd.jobs GROUP BY route ORDER BY route", 0, NULL, a.json);
    } else {
        const char *params[3] = {a.status, a.route, limit};

        rc = cli_query_print(c,
                         "SELECT j.id AS job, j.route, j.status, j.attempts, j.event_id AS event,"
                         " e.event_type AS type, j.conversation,"
                         " to_char(j.updated_at, 'YYYY-MM-DD HH24:MI:SS') AS updated,"
                         " j.last_error"
                         " FROM hookd.jobs j JOIN hookd.events e ON e.id = j.event_id"
                         " WHERE ($1::text IS NULL OR j.status = $1)"
                         " AND ($2::text IS NULL OR j.route = $2)"
                         " ORDER BY j.id DESC LIMIT $3::int", 3, params, a.json);
    }
    PQfinish(c);
    return rc;
}


/* Runs a replay; when it requeued nothing, says why and answers 1. */
static int
replay_print(PGconn *c, const char *sql, const char *param, bool json, const char *none)
{
    PGresult *res = PQexecParams(c, sql, 1, NULL, &param, NULL, NULL, 0);
    int rc = 0;

    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        const char *msg = PQresultErrorMessage(res);

        fprintf(stderr, "hookd: could not requeue: %.*s\n", (int)strcspn(msg, "\n"), msg);
        rc = CLI_EXIT_RUNTIME;
    } else if (PQntuples(res) == 0 && !json) {
        fprintf(stderr, "hookd: nothing requeued: %s\n", none);
        rc = CLI_EXIT_RUNTIME;
    } else {
        print_result(res, json);
        if (!json) {
            printf("%d job(s) requeued\n", PQntuples(res));
        }
    }
    PQclear(res);
    return rc;
}


int
cli_replay(int argc, char **argv)
{
    struct cli_args a;
    const char *sql;
    const char *param;
    PGconn *c;
    int rc;

    if (parse_args(argc, argv, replay_usage, &a) < 0) {
        return CLI_EXIT_USAGE;
    }
    if ((a.job != NULL) + (a.route != NULL) + (a.event != NULL) != 1
        || (a.route != NULL) != a.dead)
    {
        fprintf(stderr, "hookd: give one of --job ID, --route NAME --dead, --event ID\n%s",
                replay_usage);
        return CLI_EXIT_USAGE;
    }
    if ((c = cli_connect(a.config, &rc)) == NULL) {
        return rc;
    }
    if (a.job != NULL) {
        sql = "WITH r AS (UPDATE hookd.jobs SET status = 'pending', attempts = 0,"
              " run_at = now(), replayed_at = now(), updated_at = now(), finished_at = NULL,"
              " lease_until = NULL WHERE id = $1::bigint AND status = 'dead'"
              " RETURNING id, route, event_id)"
              " SELECT r.id AS job, r.route, r.event_id AS event"
              " FROM r, (SELECT pg_notify('hookd_jobs', '')) n";
        param = a.job;
    } else if (a.route != NULL) {
        sql = "WITH r AS (UPDATE hookd.jobs SET status = 'pending', attempts = 0,"
              " run_at = now(), replayed_at = now(), updated_at = now(), finished_at = NULL,"
              " lease_until = NULL WHERE route = $1 AND status = 'dead'"
              " RETURNING id, route, event_id)"
              " SELECT r.id AS job, r.route, r.event_id AS event"
              " FROM r, (SELECT pg_notify('hookd_jobs', '')) n ORDER BY r.id";
        param = a.route;
    } else {
        sql = "WITH r AS (UPDATE hookd.jobs SET status = 'pending', attempts = 0,"
              " run_at = now(), replayed_at = now(), updated_at = now(), finished_at = NULL,"
              " lease_until = NULL WHERE event_id = $1::bigint AND status <> 'running'"
              " RETURNING id, route, event_id)"
              " SELECT r.id AS job, r.route, r.event_id AS event"
              " FROM r, (SELECT pg_notify('hookd_jobs', '')) n ORDER BY r.id";
        param = a.event;
    }
    rc = replay_print(c, sql, param, a.json, a.job != NULL ? "no dead job has that id"
                      : a.route != NULL ? "that route has no dead job"
                      : "no event with that id has a job that is not running");
    PQfinish(c);
    return rc;
}


int
cli_events(int argc, char **argv)
{
    struct cli_args a;
    char limit[16];
    const char *params[4];
    PGconn *c;
    int rc;

    if (parse_args(argc, argv, events_usage, &a) < 0) {
        return CLI_EXIT_USAGE;
    }
    if ((a.chatbot != NULL) != (a.thread != NULL)) {
        fprintf(stderr, "hookd: --chatbot and --thread go together\n");
        return CLI_EXIT_USAGE;
    }
    if ((c = cli_connect(a.config, &rc)) == NULL) {
        return rc;
    }
    snprintf(limit, sizeof(limit), "%d", a.limit);
    params[0] = a.chatbot;
    params[1] = a.thread;
    params[2] = a.event;
    params[3] = limit;
    /* Newest first when listing everything; a conversation reads oldest first. */
    rc = cli_query_print(c,
                     "SELECT * FROM (SELECT e.id AS event,"
                     " to_char(e.received_at, 'YYYY-MM-DD HH24:MI:SS') AS received,"
                     " e.event_type AS type, e.chatbot_id AS chatbot, e.thread_id AS thread,"
                     " coalesce(string_agg(j.route || ':' || j.status"
                     "  || CASE WHEN j.attempts > 1 THEN '(' || j.attempts || ')' ELSE '' END,"
                     "  ' ' ORDER BY j.route), '-') AS jobs"
                     " FROM hookd.events e LEFT JOIN hookd.jobs j ON j.event_id = e.id"
                     " WHERE ($1::text IS NULL OR (e.chatbot_id = $1 AND e.thread_id = $2))"
                     " AND ($3::bigint IS NULL OR e.id = $3::bigint)"
                     " GROUP BY e.id"
                     " ORDER BY e.id DESC LIMIT $4::int) t"
                     " ORDER BY CASE WHEN $1::text IS NULL THEN -event ELSE event END",
                     4, params, a.json);
    PQfinish(c);
    return rc;
}
