/* SPDX-License-Identifier: MIT */
#include "cli_api.h"

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>
#include <libpq-fe.h>

#include "api.h"
#include "cfg.h"
#include "cli.h"

/* Longest agent name accepted; the platform shows it next to the message. */
#define CA_AGENT_MAX 100
/* Room for a percent-encoded chatbot or thread id. */

enum {
    CA_EXIT_RUNTIME = 1,
    CA_EXIT_USAGE = 2
};

/* What the command line may carry after its options. */
enum ca_operands {
    CA_OPERANDS_NONE,
    CA_OPERANDS_TEXT,           /* one or more words, joined */
    CA_OPERANDS_OPTIONAL_TEXT,  /* zero or more words */
    CA_OPERANDS_TICKET          /* exactly one ticket number */
};

/* One command's options and help. */
struct ca_command {
    const char *cc_usage;
    const char *cc_shortopts;
    const struct option *cc_opts;
    enum ca_operands cc_operands;
};

/* What the commands take, parsed by one getopt loop. */
struct ca_args {
    const char *config;
    const char *chatbot;
    const char *thread;
    const char *agent;
    const char *icon;
    const char *ticket;         /* --ticket N, or the TICKET operand */
    const char *update_json;
    char *text;                 /* the operands joined with spaces (malloc'd) */
    bool json;
    bool all;
    bool force;
    bool back_to_ai;
};

/* Long-only options. */
enum {
    CA_OPT_ICON = 256,
    CA_OPT_TICKET,
    CA_OPT_JSON,
    CA_OPT_ALL,
    CA_OPT_FORCE,
    CA_OPT_BACK_TO_AI,
    CA_OPT_UPDATE_JSON
};

static const char reply_usage[] =
    "usage: hookd reply --config FILE (--chatbot ID --thread ID | --ticket N)\n"
    "                   [--agent NAME] [--icon URL] [--json] TEXT...\n"
    "\n"
    "Sends TEXT into a conversation as an agent message through the ContextGPT\n"
    "API, with the config's api settings (key, rate limit, timeouts). Prints\n"
    "\"sent\", or the platform's reason with exit status 1; when the failure may\n"
    "pass and the wait is known, it says when to try again. Several TEXT\n"
    "arguments are joined with spaces.\n"
    "\n"
    "With --ticket the message goes into the thread of that handoff ticket,\n"
    "signed with the name of the agent who claimed it, and is logged on the\n"
    "ticket as \"replied\". A closed ticket is refused.\n"
    "\n"
    "  -c, --config FILE   configuration file (api, and database for --ticket)\n"
    "  -b, --chatbot ID    the conversation's chatbot id\n"
    "  -t, --thread ID     the conversation's thread id\n"
    "      --ticket N      the conversation of handoff ticket N instead\n"
    "  -a, --agent NAME    the name shown with the message (default: the\n"
    "                      ticket's agent, else api.agent_name)\n"
    "      --icon URL      the agent's picture (iconUrl)\n"
    "      --json          print the result as JSON\n"
    "  -h, --help          show this help\n"
    "\n"
    "Exit status: 0 sent, 1 not sent, 2 usage or configuration error (no API\n"
    "key configured included).\n";

static const char escalate_usage[] =
    "usage: hookd escalate --config FILE --chatbot ID --thread ID [--json] [PROMPT...]\n"
    "\n"
    "Escalates a conversation to a human through the ContextGPT API, with\n"
    "PROMPT as the escalation prompt (default \"Escalated by hookd\"). Prints\n"
    "\"escalated\", or the platform's reason with exit status 1; when the\n"
    "failure may pass and the wait is known, it says when to try again.\n"
    "\n"
    "  -c, --config FILE   configuration file (api settings)\n"
    "  -b, --chatbot ID    the conversation's chatbot id\n"
    "  -t, --thread ID     the conversation's thread id\n"
    "      --json          print the result as JSON\n"
    "  -h, --help          show this help\n"
    "\n"
    "Exit status: 0 escalated, 1 not escalated, 2 usage or configuration error\n"
    "(no API key configured included).\n";

static const char handoff_usage[] =
    "usage: hookd handoff list|claim|close ...\n"
    "\n"
    "The handoff tickets the handoff handler opens when a visitor asks for a\n"
    "human (one per conversation that is not closed):\n"
    "\n"
    "  list    the open and claimed tickets, oldest first\n"
    "  claim   take a ticket: hookd handoff claim TICKET --config FILE --agent NAME\n"
    "  close   close a ticket, optionally giving the thread back to the AI\n"
    "\n"
    "hookd reply --ticket N answers in a ticket's conversation.\n"
    "See hookd handoff COMMAND --help.\n";

static const char list_usage[] =
    "usage: hookd handoff list --config FILE [--all] [--json]\n"
    "\n"
    "The open and claimed handoff tickets, oldest first: chatbot, thread,\n"
    "status, agent, escalations, how long the visitor has waited since the\n"
    "ticket opened (until it closed), and the visitor's contact details when\n"
    "the escalation carried them.\n"
    "\n"
    "  -c, --config FILE   configuration file (for database.conninfo)\n"
    "      --all           closed tickets too\n"
    "      --json          JSON instead of a table\n"
    "  -h, --help          show this help\n";

static const char claim_usage[] =
    "usage: hookd handoff claim TICKET --config FILE --agent NAME [--force]\n"
    "\n"
    "Claims a ticket for an agent: its replies through hookd reply --ticket\n"
    "are signed with NAME. A closed ticket is refused, and so is a ticket\n"
    "another agent claimed, unless --force takes it over.\n"
    "\n"
    "  -c, --config FILE   configuration file (for database.conninfo)\n"
    "  -a, --agent NAME    who takes the ticket\n"
    "      --force         take it over from the agent who has it\n"
    "  -h, --help          show this help\n";

static const char close_usage[] =
    "usage: hookd handoff close TICKET --config FILE [--back-to-ai [--update-json JSON]]\n"
    "\n"
    "Closes a ticket. With --back-to-ai the thread is first given back to the\n"
    "AI through the ContextGPT API:\n"
    "  PATCH /v1/chatting/{chatbot}/thread/update-thread\n"
    "  {\"threadId\": \"<thread>\", \"isEscalated\": false}\n"
    "and the ticket is closed only when the platform accepted that. The\n"
    "platform does not document the field that ends an escalation;\n"
    "\"isEscalated\" is hookd's guess. --update-json replaces it: its members\n"
    "are sent with threadId (and may replace threadId too), e.g.\n"
    "  --update-json '{\"escalated\": false}'\n"
    "\n"
    "  -c, --config FILE       configuration file (database, and api settings\n"
    "                          for --back-to-ai)\n"
    "      --back-to-ai        give the thread back to the AI, then close\n"
    "      --update-json JSON  the fields of the thread update (a JSON object)\n"
    "  -h, --help              show this help\n"
    "\n"
    "Exit status: 0 closed, 1 not closed (the ticket stays as it was),\n"
    "2 usage or configuration error.\n";

static const struct option reply_opts[] = {
    {"config", required_argument, NULL, 'c'},
    {"chatbot", required_argument, NULL, 'b'},
    {"thread", required_argument, NULL, 't'},
    {"ticket", required_argument, NULL, CA_OPT_TICKET},
    {"agent", required_argument, NULL, 'a'},
    {"icon", required_argument, NULL, CA_OPT_ICON},
    {"json", no_argument, NULL, CA_OPT_JSON},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0}
};

static const struct option escalate_opts[] = {
    {"config", required_argument, NULL, 'c'},
    {"chatbot", required_argument, NULL, 'b'},
    {"thread", required_argument, NULL, 't'},
    {"json", no_argument, NULL, CA_OPT_JSON},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0}
};

static const struct option list_opts[] = {
    {"config", required_argument, NULL, 'c'},
    {"all", no_argument, NULL, CA_OPT_ALL},
    {"json", no_argument, NULL, CA_OPT_JSON},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0}
};

static const struct option claim_opts[] = {
    {"config", required_argument, NULL, 'c'},
    {"agent", required_argument, NULL, 'a'},
    {"force", no_argument, NULL, CA_OPT_FORCE},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0}
};

static const struct option close_opts[] = {
    {"config", required_argument, NULL, 'c'},
    {"back-to-ai", no_argument, NULL, CA_OPT_BACK_TO_AI},
    {"update-json", required_argument, NULL, CA_OPT_UPDATE_JSON},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0}
};

static const struct ca_command reply_cmd = {
    reply_usage, "c:b:t:a:h", reply_opts, CA_OPERANDS_TEXT
};
static const struct ca_command escalate_cmd = {
    escalate_usage, "c:b:t:h", escalate_opts, CA_OPERANDS_OPTIONAL_TEXT
};
static const struct ca_command list_cmd = {
    list_usage, "c:h", list_opts, CA_OPERANDS_NONE
};
static const struct ca_command claim_cmd = {
    claim_usage, "c:a:h", claim_opts, CA_OPERANDS_TICKET
};
static const struct ca_command close_cmd = {
    close_usage, "c:h", close_opts, CA_OPERANDS_TICKET
};

/*
 * The listing: every ticket in view with its wait, $1 true for closed ones
 * too. The table and JSON forms select from it.
 */
#define CA_TICKETS_CTE \
    "WITH t AS (SELECT *, greatest(0, floor(extract(epoch FROM" \
    "  coalesce(closed_at, now()) - opened_at)))::bigint AS s" \
    " FROM hookd.handoff_tickets WHERE $1::boolean OR status <> 'closed')," \
    " f AS (SELECT t.*, CASE WHEN s < 60 THEN s || 's'" \
    "  WHEN s < 3600 THEN s / 60 || 'm'" \
    "  WHEN s < 86400 THEN s / 3600 || 'h ' || s % 3600 / 60 || 'm'" \
    "  ELSE s / 86400 || 'd ' || s % 86400 / 3600 || 'h' END AS waiting FROM t)"

static const char list_table_sql[] =
    CA_TICKETS_CTE
    " SELECT id AS ticket, chatbot_id AS chatbot, thread_id AS thread, status, agent,"
    " escalations, waiting, nullif(concat_ws(' ', contact_name, '<' || contact_email || '>',"
    "  contact_phone), '') AS contact"
    " FROM f ORDER BY opened_at, id";

static const char list_json_sql[] =
    CA_TICKETS_CTE
    " SELECT coalesce(json_agg(json_build_object('ticket', id, 'chatbot', chatbot_id,"
    "  'thread', thread_id, 'status', status, 'agent', agent, 'escalations', escalations,"
    "  'waiting', waiting, 'waitingSeconds', s, 'openedAt', opened_at,"
    "  'claimedAt', claimed_at, 'closedAt', closed_at,"
    "  'contact', CASE WHEN coalesce(contact_name, contact_email, contact_phone) IS NULL"
    "   THEN NULL ELSE json_build_object('name', contact_name, 'email', contact_email,"
    "   'phone', contact_phone) END,"
    "  'prompt', last_prompt) ORDER BY opened_at, id), '[]')"
    " FROM f";

static const char ticket_sql[] =
    "SELECT chatbot_id, thread_id, status, agent FROM hookd.handoff_tickets"
    " WHERE id = $1::bigint";

static const char log_sql[] =
    "INSERT INTO hookd.handoff_log (ticket_id, action, detail) VALUES ($1::bigint, $2, $3)";


/* Joins argv[from..argc-1] with single spaces (malloc'd; "" when none). */
static char *
join_words(int argc, char **argv, int from)
{
    size_t len = 1;
    char *text;

    for (int i = from; i < argc; i++) {
        len += strlen(argv[i]) + 1;
    }
    text = malloc(len);
    if (text == NULL) {
        return NULL;
    }
    text[0] = '\0';
    for (int i = from; i < argc; i++) {
        if (i > from) {
            strcat(text, " ");
        }
        strcat(text, argv[i]);
    }
    return text;
}


/* True for a ticket number: decimal digits, not 0, fits a bigint. */
static bool
valid_ticket(const char *s)
{
    char *end;
    long long v;

    if (*s < '0' || *s > '9') {
        return false;
    }
    errno = 0;
    v = strtoll(s, &end, 10);
    return *end == '\0' && errno == 0 && v > 0;
}


/* True for a name fit to sign messages with: 1..CA_AGENT_MAX bytes, no controls. */
static bool
valid_agent(const char *s)
{
    size_t n = strlen(s);

    if (n == 0 || n > CA_AGENT_MAX) {
        return false;
    }
    for (; *s != '\0'; s++) {
        if ((unsigned char)*s < 0x20 || *s == 0x7f) {
            return false;
        }
    }
    return true;
}


/* True when a chatbot or thread id fits a path segment once percent-encoded. */
static bool
id_fits(const char *id)
{
    return strlen(id) < API_SEGMENT_MAX / 3;
}


/*
 * Parses argv for cmd into a (a->text to be freed with free). Prints the
 * reason and returns -1 on a usage error; --help prints the help and exits.
 */
static int
parse_args(int argc, char **argv, const struct ca_command *cmd, struct ca_args *a)
{
    int c;

    memset(a, 0, sizeof(*a));
    optind = 1;
    while ((c = getopt_long(argc, argv, cmd->cc_shortopts, cmd->cc_opts, NULL)) != -1) {
        switch (c) {
        case 'c':
            a->config = optarg;
            break;
        case 'b':
            a->chatbot = optarg;
            break;
        case 't':
            a->thread = optarg;
            break;
        case 'a':
            a->agent = optarg;
            break;
        case CA_OPT_ICON:
            a->icon = optarg;
            break;
        case CA_OPT_TICKET:
            a->ticket = optarg;
            break;
        case CA_OPT_JSON:
            a->json = true;
            break;
        case CA_OPT_ALL:
            a->all = true;
            break;
        case CA_OPT_FORCE:
            a->force = true;
            break;
        case CA_OPT_BACK_TO_AI:
            a->back_to_ai = true;
            break;
        case CA_OPT_UPDATE_JSON:
            a->update_json = optarg;
            break;
        case 'h':
            fputs(cmd->cc_usage, stdout);
            exit(0);
        default:
            fputs(cmd->cc_usage, stderr);
            return -1;
        }
    }
    switch (cmd->cc_operands) {
    case CA_OPERANDS_NONE:
        if (optind < argc) {
            fprintf(stderr, "hookd: unexpected argument \"%s\"\n%s", argv[optind],
                    cmd->cc_usage);
            return -1;
        }
        break;
    case CA_OPERANDS_TICKET:
        if (optind >= argc) {
            fprintf(stderr, "hookd: which ticket? Give its number\n%s", cmd->cc_usage);
            return -1;
        }
        if (optind + 1 < argc) {
            fprintf(stderr, "hookd: unexpected argument \"%s\"\n%s", argv[optind + 1],
                    cmd->cc_usage);
            return -1;
        }
        a->ticket = argv[optind];
        break;
    case CA_OPERANDS_TEXT:
    case CA_OPERANDS_OPTIONAL_TEXT:
        a->text = join_words(argc, argv, optind);
        if (a->text == NULL) {
            fprintf(stderr, "hookd: out of memory\n");
            return -1;
        }
        if (cmd->cc_operands == CA_OPERANDS_TEXT
            && a->text[strspn(a->text, " \t\r\n")] == '\0')
        {
            fprintf(stderr, "hookd: the message is empty\n%s", cmd->cc_usage);
            free(a->text);
            a->text = NULL;
            return -1;
        }
        break;
    }
    if (a->config == NULL) {
        fprintf(stderr, "hookd: --config FILE is required\n%s", cmd->cc_usage);
    } else if (a->ticket != NULL && !valid_ticket(a->ticket)) {
        fprintf(stderr, "hookd: \"%s\" is not a ticket number\n", a->ticket);
    } else if (a->agent != NULL && !valid_agent(a->agent)) {
        fprintf(stderr, "hookd: --agent must be 1 to %d characters, no control characters\n",
                CA_AGENT_MAX);
    } else if ((a->chatbot != NULL && !id_fits(a->chatbot))
               || (a->thread != NULL && !id_fits(a->thread)))
    {
        fprintf(stderr, "hookd: the chatbot or thread id is too long\n");
    } else {
        return 0;
    }
    free(a->text);
    a->text = NULL;
    return -1;
}


/* Loads the config; prints the reason and returns NULL on failure. */
static struct cfg *
load_config(const char *file)
{
    struct cfg *cfg;
    char err[CFG_ERR_MAX];

    if (cfg_load(file, &cfg, err, sizeof(err)) < 0) {
        fprintf(stderr, "hookd: %s\n", err);
        return NULL;
    }
    return cfg;
}


/*
 * Makes the API client of cfg into *ret. Returns 0, or the exit status
 * after printing the reason (2 when file configures no key).
 */
static int
make_api(const struct cfg *cfg, const char *file, struct api **ret)
{
    char err[CFG_ERR_MAX];

    if (api_new(cfg, ret, err, sizeof(err)) < 0) {
        fprintf(stderr, "hookd: could not set up the ContextGPT API client: %s\n", err);
        return CA_EXIT_RUNTIME;
    }
    if (*ret == NULL) {
        fprintf(stderr, "hookd: %s configures no ContextGPT API key: set api.key_file (a file "
                "holding the key) or api.credential (a systemd credential name)\n", file);
        return CA_EXIT_USAGE;
    }
    /* libcurl is told not to touch signals; a dropped connection must not kill us. */
    signal(SIGPIPE, SIG_IGN);
    return 0;
}


/* Connects with cfg's conninfo; prints the reason and returns NULL on failure. */
static PGconn *
connect_db(const struct cfg *cfg)
{
    PGconn *c = PQconnectdb(cfg_conninfo(cfg));

    if (PQstatus(c) != CONNECTION_OK) {
        const char *msg = PQerrorMessage(c);

        fprintf(stderr, "hookd: could not connect to the database: %.*s\n",
                (int)strcspn(msg, "\n"), msg);
        PQfinish(c);
        return NULL;
    }
    return c;
}


/*
 * Runs sql with n text parameters, expecting want. Returns the result, or
 * NULL after printing "could not <what>" and the server's reason.
 */
static PGresult *
run_sql(PGconn *c, const char *what, const char *sql, int n, const char *const *params,
        ExecStatusType want)
{
    PGresult *res = PQexecParams(c, sql, n, NULL, params, NULL, NULL, 0);

    if (PQresultStatus(res) != want) {
        const char *msg = PQresultErrorMessage(res);

        fprintf(stderr, "hookd: could not %s: %.*s\n", what, (int)strcspn(msg, "\n"), msg);
        PQclear(res);
        return NULL;
    }
    return res;
}


/* Runs a statement without result rows; false after printing the reason. */
static bool
run_cmd(PGconn *c, const char *what, const char *sql, int n, const char *const *params)
{
    PGresult *res = run_sql(c, what, sql, n, params, PGRES_COMMAND_OK);

    PQclear(res);
    return res != NULL;
}


/* Reads ticket's row (chatbot_id, thread_id, status, agent); NULL if none or on error. */
static PGresult *
read_ticket(PGconn *c, const char *ticket)
{
    PGresult *res = run_sql(c, "read the ticket", ticket_sql, 1, &ticket, PGRES_TUPLES_OK);

    if (res != NULL && PQntuples(res) != 1) {
        fprintf(stderr, "hookd: no handoff ticket %s\n", ticket);
        PQclear(res);
        return NULL;
    }
    return res;
}


/*
 * Prints how a call went: done_word (unless NULL) on stdout when the
 * platform took it, else "could not <what>" with the platform's reason (and when to try
 * again) on stderr. --json prints the result object on stdout in either
 * case. Returns the exit status.
 */
static int
report(const struct hookd_api_result *res, const char *done_word, const char *what,
       const char *ticket, bool json)
{
    bool done = res->har_outcome == HOOKD_DONE;
    bool retry = res->har_outcome == HOOKD_RETRY;

    if (json) {
        json_object *o = json_object_new_object();

        json_object_object_add(o, "outcome", json_object_new_string(
                                   done ? (done_word ? done_word : "done")
                                   : retry ? "retry" : "failed"));
        json_object_object_add(o, "httpStatus", res->har_status > 0
                               ? json_object_new_int(res->har_status) : NULL);
        if (ticket != NULL) {
            json_object_object_add(o, "ticket", json_object_new_int64(atoll(ticket)));
        }
        if (!done) {
            json_object_object_add(o, "reason", json_object_new_string(res->har_reason));
        }
        if (retry) {
            json_object_object_add(o, "retryAfter", res->har_retry_after > 0
                                   ? json_object_new_int(res->har_retry_after) : NULL);
        }
        if (done && res->har_data != NULL) {
            json_object_object_add(o, "data", json_object_get(res->har_data));
        }
        puts(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY
                                            | JSON_C_TO_STRING_NOSLASHESCAPE));
        json_object_put(o);
    } else if (done && done_word != NULL) {
        puts(done_word);
    }
    if (done) {
        return 0;
    }
    if (retry && res->har_retry_after > 0) {
        fprintf(stderr, "hookd: could not %s: %s; try again in %d s\n", what, res->har_reason,
                res->har_retry_after);
    } else if (retry) {
        fprintf(stderr, "hookd: could not %s: %s; this may pass, try again later\n", what,
                res->har_reason);
    } else {
        fprintf(stderr, "hookd: could not %s: %s\n", what, res->har_reason);
    }
    return CA_EXIT_RUNTIME;
}


/* POSTs an agent message; fills res. */
static void
send_message(struct api *api, const char *chatbot, const char *thread, const char *text,
             const char *agent, const char *icon, struct hookd_api_result *res)
{
    struct api_request req;

    api_request_message(&req, chatbot, thread, text, agent, icon);
    api_send(api, &req, 0, res);
    api_request_clear(&req);
}


int
cli_reply(int argc, char **argv)
{
    struct ca_args a;
    struct cfg *cfg = NULL;
    struct api *api = NULL;
    PGconn *db = NULL;
    PGresult *t = NULL;
    struct hookd_api_result res;
    const char *chatbot = NULL;
    const char *thread = NULL;
    const char *agent;
    int rc;

    if (parse_args(argc, argv, &reply_cmd, &a) < 0) {
        return CA_EXIT_USAGE;
    }
    if (a.ticket != NULL ? a.chatbot != NULL || a.thread != NULL
        : a.chatbot == NULL || a.thread == NULL)
    {
        fprintf(stderr, "hookd: give --chatbot ID and --thread ID, or --ticket N\n%s",
                reply_usage);
        free(a.text);
        return CA_EXIT_USAGE;
    }
    if ((cfg = load_config(a.config)) == NULL) {
        rc = CA_EXIT_USAGE;
        goto out;
    }
    if ((rc = make_api(cfg, a.config, &api)) != 0) {
        goto out;
    }
    agent = a.agent != NULL ? a.agent : api_default_agent(api);
    chatbot = a.chatbot;
    thread = a.thread;
    if (a.ticket != NULL) {
        const char *status;
        const char *claimer;

        rc = CA_EXIT_RUNTIME;
        if ((db = connect_db(cfg)) == NULL || (t = read_ticket(db, a.ticket)) == NULL) {
            goto out;
        }
        chatbot = PQgetvalue(t, 0, 0);
        thread = PQgetvalue(t, 0, 1);
        status = PQgetvalue(t, 0, 2);
        claimer = PQgetisnull(t, 0, 3) ? NULL : PQgetvalue(t, 0, 3);
        if (!id_fits(chatbot) || !id_fits(thread)) {
            fprintf(stderr, "hookd: the ticket's chatbot or thread id is too long\n");
            goto out;
        }
        if (strcmp(status, "closed") == 0) {
            fprintf(stderr, "hookd: ticket %s is closed; the conversation is no longer "
                    "handed off\n", a.ticket);
            goto out;
        }
        if (strcmp(status, "claimed") == 0 && claimer != NULL) {
            if (a.agent != NULL && strcmp(a.agent, claimer) != 0) {
                fprintf(stderr, "hookd: ticket %s is claimed by %s; to answer as %s, claim "
                        "it first (hookd handoff claim %s --agent NAME --force)\n", a.ticket,
                        claimer, a.agent, a.ticket);
                goto out;
            }
            agent = claimer;
        }
    }
    send_message(api, chatbot, thread, a.text, agent, a.icon, &res);
    rc = report(&res, "sent", "send the message", a.ticket, a.json);
    json_object_put(res.har_data);
    if (rc == 0 && a.ticket != NULL) {
        char *detail = NULL;
        const char *params[3] = {a.ticket, "replied", NULL};

        if (asprintf(&detail, "by %s", agent) < 0) {
            detail = NULL;
        }
        params[2] = detail;
        if (!run_cmd(db, "log the reply on the ticket (the message was sent)", log_sql, 3,
                     params))
        {
            rc = CA_EXIT_RUNTIME;
        }
        free(detail);
    }
out:
    PQclear(t);
    PQfinish(db);
    api_free(api);
    cfg_free(cfg);
    free(a.text);
    return rc;
}


int
cli_escalate(int argc, char **argv)
{
    struct ca_args a;
    struct cfg *cfg = NULL;
    struct api *api = NULL;
    struct hookd_api_result res;
    struct api_request req;
    int rc;

    if (parse_args(argc, argv, &escalate_cmd, &a) < 0) {
        return CA_EXIT_USAGE;
    }
    if (a.chatbot == NULL || a.thread == NULL) {
        fprintf(stderr, "hookd: --chatbot ID and --thread ID are required\n%s", escalate_usage);
        free(a.text);
        return CA_EXIT_USAGE;
    }
    if ((cfg = load_config(a.config)) == NULL) {
        rc = CA_EXIT_USAGE;
        goto out;
    }
    if ((rc = make_api(cfg, a.config, &api)) != 0) {
        goto out;
    }
    api_request_escalate(&req, a.chatbot, a.thread, a.text[0] != '\0' ? a.text : NULL);
    api_send(api, &req, 0, &res);
    api_request_clear(&req);
    rc = report(&res, "escalated", "escalate the conversation", NULL, a.json);
    json_object_put(res.har_data);
out:
    api_free(api);
    cfg_free(cfg);
    free(a.text);
    return rc;
}


static int
handoff_list(int argc, char **argv)
{
    struct ca_args a;
    struct cfg *cfg;
    PGconn *db;
    PGresult *res;
    const char *all;
    int rc = 0;

    if (parse_args(argc, argv, &list_cmd, &a) < 0) {
        return CA_EXIT_USAGE;
    }
    if ((cfg = load_config(a.config)) == NULL) {
        return CA_EXIT_USAGE;
    }
    db = connect_db(cfg);
    cfg_free(cfg);
    if (db == NULL) {
        return CA_EXIT_RUNTIME;
    }
    all = a.all ? "true" : "false";
    if (!a.json) {
        rc = cli_query_print(db, list_table_sql, 1, &all, false);
    } else if ((res = run_sql(db, "list the tickets", list_json_sql, 1, &all,
                              PGRES_TUPLES_OK)) == NULL)
    {
        rc = CA_EXIT_RUNTIME;
    } else {
        json_object *arr = json_tokener_parse(PQgetvalue(res, 0, 0));

        puts(json_object_to_json_string_ext(arr, JSON_C_TO_STRING_PRETTY
                                            | JSON_C_TO_STRING_NOSLASHESCAPE));
        json_object_put(arr);
        PQclear(res);
    }
    PQfinish(db);
    return rc;
}


static int
handoff_claim(int argc, char **argv)
{
    struct ca_args a;
    struct cfg *cfg;
    PGconn *db;
    PGresult *t = NULL;
    const char *status;
    const char *claimer;
    char *detail = NULL;
    int rc = CA_EXIT_RUNTIME;

    if (parse_args(argc, argv, &claim_cmd, &a) < 0) {
        return CA_EXIT_USAGE;
    }
    if (a.agent == NULL) {
        fprintf(stderr, "hookd: --agent NAME is required\n%s", claim_usage);
        return CA_EXIT_USAGE;
    }
    if ((cfg = load_config(a.config)) == NULL) {
        return CA_EXIT_USAGE;
    }
    db = connect_db(cfg);
    cfg_free(cfg);
    if (db == NULL) {
        return CA_EXIT_RUNTIME;
    }
    /* The row stays locked until COMMIT: two agents claiming at once take turns. */
    if (!run_cmd(db, "start a transaction", "BEGIN", 0, NULL)
        || (t = run_sql(db, "read the ticket", "SELECT status, agent FROM hookd.handoff_tickets"
                        " WHERE id = $1::bigint FOR UPDATE", 1, &a.ticket,
                        PGRES_TUPLES_OK)) == NULL)
    {
        goto out;
    }
    if (PQntuples(t) != 1) {
        fprintf(stderr, "hookd: no handoff ticket %s\n", a.ticket);
        goto out;
    }
    status = PQgetvalue(t, 0, 0);
    claimer = PQgetisnull(t, 0, 1) ? NULL : PQgetvalue(t, 0, 1);
    if (strcmp(status, "closed") == 0) {
        fprintf(stderr, "hookd: could not claim ticket %s: it is closed\n", a.ticket);
        goto out;
    }
    if (strcmp(status, "claimed") == 0 && claimer != NULL && strcmp(claimer, a.agent) == 0) {
        printf("ticket %s is already claimed by %s\n", a.ticket, claimer);
        rc = 0;
        goto out;
    }
    if (strcmp(status, "claimed") == 0 && claimer != NULL && !a.force) {
        fprintf(stderr, "hookd: could not claim ticket %s: %s has it (--force takes it "
                "over)\n", a.ticket, claimer);
        goto out;
    }
    if (strcmp(status, "claimed") == 0 && claimer != NULL) {
        if (asprintf(&detail, "by %s, taken over from %s", a.agent, claimer) < 0) {
            detail = NULL;
        }
    } else if (asprintf(&detail, "by %s", a.agent) < 0) {
        detail = NULL;
    }
    {
        const char *up[2] = {a.ticket, a.agent};
        const char *lg[3] = {a.ticket, "claimed", detail};

        if (!run_cmd(db, "claim the ticket", "UPDATE hookd.handoff_tickets SET"
                     " status = 'claimed', agent = $2, claimed_at = now(), updated_at = now()"
                     " WHERE id = $1::bigint", 2, up)
            || !run_cmd(db, "log the claim", log_sql, 3, lg)
            || !run_cmd(db, "commit the claim", "COMMIT", 0, NULL))
        {
            goto out;
        }
    }
    printf("ticket %s claimed by %s\n", a.ticket, a.agent);
    rc = 0;
out:
    free(detail);
    PQclear(t);
    PQfinish(db);
    return rc;
}


/*
 * The thread update that gives a thread back to the AI: threadId plus the
 * members of override (a JSON object), or plus "isEscalated": false.
 * Returns NULL (after printing why) when override is no JSON object.
 */
static json_object *
back_to_ai_fields(const char *thread, const char *override)
{
    json_object *fields = json_object_new_object();
    json_object *extra;

    json_object_object_add(fields, "threadId", json_object_new_string(thread));
    if (override == NULL) {
        json_object_object_add(fields, "isEscalated", json_object_new_boolean(0));
        return fields;
    }
    extra = json_tokener_parse(override);
    if (extra == NULL || !json_object_is_type(extra, json_type_object)) {
        fprintf(stderr, "hookd: --update-json must be a JSON object, e.g. "
                "'{\"isEscalated\": false}'\n");
        json_object_put(extra);
        json_object_put(fields);
        return NULL;
    }
    json_object_object_foreach(extra, key, val) {
        json_object_object_add(fields, key, json_object_get(val));
    }
    json_object_put(extra);
    return fields;
}


static int
handoff_close(int argc, char **argv)
{
    struct ca_args a;
    struct cfg *cfg = NULL;
    struct api *api = NULL;
    PGconn *db = NULL;
    PGresult *t = NULL;
    PGresult *up = NULL;
    json_object *fields = NULL;
    const char *sent = NULL;
    int rc;

    if (parse_args(argc, argv, &close_cmd, &a) < 0) {
        return CA_EXIT_USAGE;
    }
    if (a.update_json != NULL && !a.back_to_ai) {
        fprintf(stderr, "hookd: --update-json goes with --back-to-ai\n%s", close_usage);
        return CA_EXIT_USAGE;
    }
    if (a.update_json != NULL && (fields = back_to_ai_fields("", a.update_json)) == NULL) {
        return CA_EXIT_USAGE;
    }
    json_object_put(fields);
    fields = NULL;
    if ((cfg = load_config(a.config)) == NULL) {
        rc = CA_EXIT_USAGE;
        goto out;
    }
    if (a.back_to_ai && (rc = make_api(cfg, a.config, &api)) != 0) {
        goto out;
    }
    rc = CA_EXIT_RUNTIME;
    if ((db = connect_db(cfg)) == NULL || (t = read_ticket(db, a.ticket)) == NULL) {
        goto out;
    }
    if (strcmp(PQgetvalue(t, 0, 2), "closed") == 0) {
        fprintf(stderr, "hookd: ticket %s is already closed\n", a.ticket);
        goto out;
    }
    if (!id_fits(PQgetvalue(t, 0, 0))) {
        fprintf(stderr, "hookd: the ticket's chatbot id is too long\n");
        goto out;
    }
    if (a.back_to_ai) {
        struct hookd_api_result res;
        struct api_request req;

        /* The platform first: a ticket closes only once the AI has the thread back. */
        fields = back_to_ai_fields(PQgetvalue(t, 0, 1), a.update_json);
        sent = json_object_to_json_string_ext(fields, JSON_C_TO_STRING_PLAIN);
        api_request_update_thread(&req, PQgetvalue(t, 0, 0), fields);
        api_send(api, &req, 0, &res);
        api_request_clear(&req);
        json_object_put(res.har_data);
        if (report(&res, NULL, "give the thread back to the AI", NULL, false) != 0) {
            fprintf(stderr, "hookd: ticket %s stays %s\n", a.ticket, PQgetvalue(t, 0, 2));
            goto out;
        }
    }
    {
        const char *back[3] = {a.ticket, "returned to AI", sent};
        const char *closed[3] = {a.ticket, "closed", NULL};

        if (!run_cmd(db, "start a transaction", "BEGIN", 0, NULL)
            || (up = run_sql(db, "close the ticket", "UPDATE hookd.handoff_tickets SET"
                             " status = 'closed', closed_at = now(), updated_at = now()"
                             " WHERE id = $1::bigint AND status <> 'closed' RETURNING id", 1,
                             &a.ticket, PGRES_TUPLES_OK)) == NULL
            || (a.back_to_ai && !run_cmd(db, "log the return to the AI", log_sql, 3, back))
            || (PQntuples(up) == 1 && !run_cmd(db, "log the close", log_sql, 3, closed))
            || !run_cmd(db, "commit the close", "COMMIT", 0, NULL))
        {
            if (a.back_to_ai) {
                fprintf(stderr, "hookd: the thread was given back to the AI, but ticket %s "
                        "is not closed\n", a.ticket);
            }
            goto out;
        }
    }
    if (PQntuples(up) != 1) {
        fprintf(stderr, "hookd: ticket %s was closed by someone else meanwhile\n", a.ticket);
        goto out;
    }
    printf("ticket %s closed%s\n", a.ticket, a.back_to_ai ? ", thread returned to the AI" : "");
    rc = 0;
out:
    PQclear(up);
    PQclear(t);
    PQfinish(db);
    json_object_put(fields);
    api_free(api);
    cfg_free(cfg);
    return rc;
}


int
cli_handoff(int argc, char **argv)
{
    const char *sub = argc > 1 ? argv[1] : NULL;

    if (sub == NULL) {
        fputs(handoff_usage, stderr);
        return CA_EXIT_USAGE;
    }
    if (strcmp(sub, "-h") == 0 || strcmp(sub, "--help") == 0 || strcmp(sub, "help") == 0) {
        fputs(handoff_usage, stdout);
        return 0;
    }
    if (strcmp(sub, "list") == 0) {
        return handoff_list(argc - 1, argv + 1);
    }
    if (strcmp(sub, "claim") == 0) {
        return handoff_claim(argc - 1, argv + 1);
    }
    if (strcmp(sub, "close") == 0) {
        return handoff_close(argc - 1, argv + 1);
    }
    fprintf(stderr, "hookd: unrecognized handoff command \"%s\"\n%s", sub, handoff_usage);
    return CA_EXIT_USAGE;
}
