/* SPDX-License-Identifier: MIT */
/*
 * handoff: on CONVERSATION_ESCALATED, opens a handoff ticket for the
 * conversation in hookd.handoff_tickets (one open ticket per thread; a
 * repeated escalation adds to it) and tells the team: it runs a command
 * and/or POSTs to a URL with the ticket as JSON.
 *
 * Options:
 *   notify_command = [ "/usr/local/bin/page-support", "--queue", "chat" ];
 *       run without a shell; the ticket JSON on stdin; HOOKD_TICKET_ID,
 *       HOOKD_CHATBOT_ID, HOOKD_THREAD_ID, HOOKD_ESCALATIONS in its
 *       environment; exit 0 means told, anything else is retried.
 *   notify_url = "https://chat.example.com/hooks/support";
 *       POSTed the ticket JSON; 2xx means told, anything else is retried.
 *   notify_timeout = 10000;      (ms, for each of the two)
 *   cacert = "/etc/ssl/private-ca.pem";   (for notify_url; checks stay on)
 *   agent_message = "Someone from our team will answer here shortly.";
 *       posted into the thread through the ContextGPT API (needs api.key_file)
 *       when the escalation is noted; signed with agent_name, default the
 *       api's. Sent once per escalation event even when the job retries.
 *
 * The ticket JSON holds the visitor's contact details when the escalation
 * carried them: it is meant for the team's own channel.
 *
 * Delivery: the ticket row is written once per event (redelivery and
 * retries change nothing); the notice goes out at least once per event: a
 * notice whose success could not be recorded is sent again on the retry.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <libpq-fe.h>

#include "hookd_plugin.h"

#define HANDOFF_MAX_ARGS 32

struct handoff {
    char *h_argv[HANDOFF_MAX_ARGS + 1];
    char *h_url;
    char *h_cacert;
    char *h_agent_message;     /* posted into the thread when a ticket opens */
    char *h_agent_name;
    int h_timeout_ms;
};

static pthread_once_t handoff_curl_once = PTHREAD_ONCE_INIT;

/*
 * Opens or adds to the conversation's ticket, once per event. Returns the
 * ticket id, whether this event's notice is still owed, and the counts.
 * $1 chatbot, $2 thread, $3 event id, $4 name, $5 email, $6 phone, $7 prompt.
 */
static const char ticket_sql[] =
    "WITH up AS ("
    " INSERT INTO hookd.handoff_tickets AS t (chatbot_id, thread_id, contact_name,"
    "  contact_email, contact_phone, last_prompt, event_ids)"
    " VALUES ($1, $2, $4, $5, $6, $7, ARRAY[$3::bigint])"
    " ON CONFLICT (chatbot_id, thread_id) WHERE status <> 'closed' DO UPDATE SET"
    "  escalations = t.escalations + CASE WHEN $3::bigint = ANY (t.event_ids) THEN 0 ELSE 1 END,"
    "  event_ids = CASE WHEN $3::bigint = ANY (t.event_ids) THEN t.event_ids"
    "   ELSE t.event_ids || $3::bigint END,"
    "  contact_name = coalesce($4, t.contact_name),"
    "  contact_email = coalesce($5, t.contact_email),"
    "  contact_phone = coalesce($6, t.contact_phone),"
    "  last_prompt = coalesce($7, t.last_prompt),"
    "  updated_at = now()"
    " RETURNING t.id, t.escalations, t.notified_ids, (xmax = 0) AS opened,"
    "  t.contact_name, t.contact_email, t.contact_phone, t.last_prompt"
    "), logged AS ("
    " INSERT INTO hookd.handoff_log (ticket_id, action, detail)"
    " SELECT id, CASE WHEN opened THEN 'opened' ELSE 'escalated' END, 'event ' || $3"
    " FROM up WHERE NOT ($3::bigint = ANY (notified_ids))"
    "  AND NOT EXISTS (SELECT 1 FROM hookd.handoff_log l WHERE l.ticket_id = up.id"
    "   AND l.detail = 'event ' || $3)"
    ")"
    " SELECT id, escalations, NOT ($3::bigint = ANY (notified_ids)) AS owed,"
    "  contact_name, contact_email, contact_phone, last_prompt FROM up";

static const char notified_sql[] =
    "WITH t AS (UPDATE hookd.handoff_tickets SET notified_ids = notified_ids || $2::bigint"
    " WHERE id = $1::bigint AND NOT ($2::bigint = ANY (notified_ids)) RETURNING id)"
    " INSERT INTO hookd.handoff_log (ticket_id, action, detail)"
    " SELECT id, 'notified', $3 FROM t";


static void
curl_setup(void)
{
    (void)curl_global_init(CURL_GLOBAL_DEFAULT);
}


static void handoff_fini(void *state);


static int
read_options(struct handoff *h, json_object *options, char *err, size_t errlen)
{
    json_object *v;

    if (options == NULL) {
        return 0;
    }
    json_object_object_foreach(options, key, val) {
        if (strcmp(key, "notify_command") == 0) {
            size_t n = json_object_is_type(val, json_type_array)
                       ? json_object_array_length(val) : 0;

            if (n == 0 || n > HANDOFF_MAX_ARGS) {
                snprintf(err, errlen, "notify_command must be a list of 1 to %d strings",
                         HANDOFF_MAX_ARGS);
                return -1;
            }
            for (size_t i = 0; i < n; i++) {
                h->h_argv[i] = strdup(json_object_get_string(json_object_array_get_idx(val, i)));
            }
            if (h->h_argv[0][0] != '/' || access(h->h_argv[0], X_OK) != 0) {
                snprintf(err, errlen, "notify_command \"%s\" is not an executable absolute path",
                         h->h_argv[0]);
                return -1;
            }
        } else if (strcmp(key, "notify_url") == 0) {
            h->h_url = strdup(json_object_get_string(val));
            if (strncmp(h->h_url, "https://", 8) != 0) {
                snprintf(err, errlen, "notify_url must start with https://");
                return -1;
            }
        } else if (strcmp(key, "notify_timeout") == 0) {
            h->h_timeout_ms = json_object_get_int(val);
            if (h->h_timeout_ms < 100 || h->h_timeout_ms > 600000) {
                snprintf(err, errlen, "notify_timeout must be 100 to 600000 ms");
                return -1;
            }
        } else if (strcmp(key, "cacert") == 0) {
            h->h_cacert = strdup(json_object_get_string(val));
        } else if (strcmp(key, "agent_message") == 0) {
            h->h_agent_message = strdup(json_object_get_string(val));
        } else if (strcmp(key, "agent_name") == 0) {
            h->h_agent_name = strdup(json_object_get_string(val));
        } else {
            snprintf(err, errlen, "unrecognized option \"%s\"", key);
            return -1;
        }
    }
    if (json_object_object_get_ex(options, "notify_url", &v)) {
        pthread_once(&handoff_curl_once, curl_setup);
    }
    return 0;
}


static int
handoff_init(json_object *options, void **state, char *err, size_t errlen)
{
    struct handoff *h = calloc(1, sizeof(*h));

    if (h == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    h->h_timeout_ms = 10000;
    if (read_options(h, options, err, errlen) < 0) {
        handoff_fini(h);
        return -1;
    }
    *state = h;
    return 0;
}


static long long
mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}


/* Runs the notify command with body on stdin; true when it exited 0 in time. */
static bool
run_command(const struct handoff *h, const char *body, char *const envp[], char *why,
            size_t whylen)
{
    int in[2];
    pid_t pid;
    int status = 0;
    long long deadline = mono_ms() + h->h_timeout_ms;
    size_t len = strlen(body);
    size_t off = 0;

    if (pipe2(in, O_CLOEXEC) != 0) {
        snprintf(why, whylen, "could not make a pipe: %s", strerror(errno));
        return false;
    }
    pid = fork();
    if (pid < 0) {
        close(in[0]);
        close(in[1]);
        snprintf(why, whylen, "could not fork: %s", strerror(errno));
        return false;
    }
    if (pid == 0) {
        int devnull = open("/dev/null", O_RDWR);

        setpgid(0, 0);
        dup2(in[0], STDIN_FILENO);
        dup2(devnull, STDOUT_FILENO);
        dup2(devnull, STDERR_FILENO);
        /* Nothing of hookd's (sockets, the database) may reach the command. */
        if (close_range(3, ~0U, 0) != 0) {
            for (int fd = 3; fd < 65536; fd++) {
                close(fd);
            }
        }
        signal(SIGPIPE, SIG_DFL);
        execve(h->h_argv[0], h->h_argv, envp);
        _exit(127);
    }
    close(in[0]);
    (void)fcntl(in[1], F_SETFL, O_NONBLOCK);
    for (;;) {
        pid_t done = waitpid(pid, &status, WNOHANG);

        if (done == pid) {
            break;
        }
        if (mono_ms() >= deadline) {
            kill(-pid, SIGKILL);
            kill(pid, SIGKILL);
            (void)waitpid(pid, &status, 0);
            close(in[1]);
            snprintf(why, whylen, "notify command timed out after %d ms", h->h_timeout_ms);
            return false;
        }
        if (in[1] >= 0 && off < len) {
            ssize_t n = write(in[1], body + off, len - off);

            if (n > 0) {
                off += (size_t)n;
            } else if (n < 0 && errno != EAGAIN && errno != EINTR) {
                off = len;     /* it stopped reading; its exit status decides */
            }
        }
        if (in[1] >= 0 && off >= len) {
            close(in[1]);
            in[1] = -1;
        }
        usleep(5000);
    }
    if (in[1] >= 0) {
        close(in[1]);
    }
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
        return true;
    }
    if (WIFEXITED(status)) {
        snprintf(why, whylen, "notify command exited with status %d", WEXITSTATUS(status));
    } else {
        snprintf(why, whylen, "notify command killed by signal %d", WTERMSIG(status));
    }
    return false;
}


static size_t
discard(char *ptr, size_t size, size_t nmemb, void *userdata)
{
    (void)ptr;
    (void)userdata;
    return size * nmemb;
}


static bool
post_url(const struct handoff *h, const char *body, char *why, size_t whylen)
{
    CURL *curl = curl_easy_init();
    struct curl_slist *headers = NULL;
    long status = 0;
    CURLcode rc;

    if (curl == NULL) {
        snprintf(why, whylen, "could not start libcurl");
        return false;
    }
    headers = curl_slist_append(headers, "Content-Type: application/json");
    curl_easy_setopt(curl, CURLOPT_URL, h->h_url);
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, (long)h->h_timeout_ms);
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "https");
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, discard);
    curl_easy_setopt(curl, CURLOPT_USERAGENT, "hookd-handoff");
    if (h->h_cacert != NULL) {
        curl_easy_setopt(curl, CURLOPT_CAINFO, h->h_cacert);
    }
    rc = curl_easy_perform(curl);
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
    curl_slist_free_all(headers);
    curl_easy_cleanup(curl);
    if (rc != CURLE_OK) {
        snprintf(why, whylen, "notify_url failed: %s", curl_easy_strerror(rc));
        return false;
    }
    if (status < 200 || status > 299) {
        snprintf(why, whylen, "notify_url answered HTTP %ld", status);
        return false;
    }
    return true;
}


static const char *
str_at(json_object *o, const char *a, const char *b)
{
    json_object *v;

    if (o == NULL || !json_object_object_get_ex(o, a, &v)) {
        return NULL;
    }
    if (b != NULL && (!json_object_is_type(v, json_type_object)
                      || !json_object_object_get_ex(v, b, &v)))
    {
        return NULL;
    }
    return json_object_is_type(v, json_type_string) && json_object_get_string_len(v) > 0
           ? json_object_get_string(v) : NULL;
}


/* The ticket as the team sees it (malloc'd JSON text). */
static char *
ticket_json(PGresult *res, const struct hookd_event *ev)
{
    json_object *t = json_object_new_object();
    json_object *contact = NULL;
    char *text;

    json_object_object_add(t, "ticket", json_object_new_int64(atoll(PQgetvalue(res, 0, 0))));
    json_object_object_add(t, "chatbotId", json_object_new_string(ev->he_chatbot_id));
    json_object_object_add(t, "threadId", json_object_new_string(ev->he_thread_id));
    json_object_object_add(t, "escalations", json_object_new_int(atoi(PQgetvalue(res, 0, 1))));
    if (!PQgetisnull(res, 0, 3) || !PQgetisnull(res, 0, 4) || !PQgetisnull(res, 0, 5)) {
        contact = json_object_new_object();
        for (int c = 3; c <= 5; c++) {
            static const char *const names[] = {"name", "email", "phone"};

            json_object_object_add(contact, names[c - 3], PQgetisnull(res, 0, c) ? NULL
                                   : json_object_new_string(PQgetvalue(res, 0, c)));
        }
    }
    json_object_object_add(t, "contact", contact);
    json_object_object_add(t, "prompt", PQgetisnull(res, 0, 6) ? NULL
                           : json_object_new_string(PQgetvalue(res, 0, 6)));
    /* One line per ticket, so notices appended to a file stay one per line. */
    if (asprintf(&text, "%s\n", json_object_to_json_string_ext(t, JSON_C_TO_STRING_PLAIN
                                                          | JSON_C_TO_STRING_NOSLASHESCAPE)) < 0)
    {
        text = NULL;
    }
    json_object_put(t);
    return text;
}


static enum hookd_outcome
handoff_handle(void *state, const struct hookd_event *ev, struct hookd_ctx *ctx)
{
    struct handoff *h = state;
    json_object *data;
    const char *vals[7];
    char event[24], why[256] = "", ticket[24], detail[64];
    PGconn *db;
    PGresult *res;
    char *body;
    bool ok = true;

    if (ev->he_chatbot_id == NULL || ev->he_thread_id == NULL) {
        ctx->hc_set_reason(ctx, "escalation without chatbot or thread id");
        return HOOKD_FAIL;
    }
    if (!json_object_object_get_ex(ev->he_json, "data", &data)) {
        data = NULL;
    }
    snprintf(event, sizeof(event), "%lld", (long long)ev->he_event_id);
    vals[0] = ev->he_chatbot_id;
    vals[1] = ev->he_thread_id;
    vals[2] = event;
    vals[3] = str_at(data, "leadInfo", "name") ? str_at(data, "leadInfo", "name")
              : str_at(data, "user", "name");
    vals[4] = str_at(data, "leadInfo", "email") ? str_at(data, "leadInfo", "email")
              : str_at(data, "user", "email");
    vals[5] = str_at(data, "leadInfo", "phone") ? str_at(data, "leadInfo", "phone")
              : str_at(data, "user", "phone");
    vals[6] = str_at(data, "escalationPrompt", NULL);

    db = ctx->hc_db(ctx, NULL);
    if (db == NULL) {
        ctx->hc_set_reason(ctx, "could not connect to the database");
        return HOOKD_RETRY;
    }
    res = PQexecParams(db, ticket_sql, 7, NULL, vals, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
        const char *code = PQresultErrorField(res, PG_DIAG_SQLSTATE);

        snprintf(why, sizeof(why), "could not open the ticket (sqlstate %s)", code ? code : "?");
        ctx->hc_set_reason(ctx, why);
        PQclear(res);
        return HOOKD_RETRY;
    }
    snprintf(ticket, sizeof(ticket), "%s", PQgetvalue(res, 0, 0));
    if (PQgetvalue(res, 0, 2)[0] != 't') {
        PQclear(res);
        snprintf(detail, sizeof(detail), "ticket %s, already notified", ticket);
        ctx->hc_set_output(ctx, detail, strlen(detail));
        return HOOKD_DONE;
    }
    if (h->h_agent_message != NULL) {
        struct hookd_api_result api_res;

        if (ctx->hc_api_send_message == NULL) {
            ctx->hc_set_reason(ctx, "agent_message needs the ContextGPT API (api.key_file)");
            PQclear(res);
            return HOOKD_FAIL;
        }
        /* Before the notice: when the notice fails, the retry skips this recorded call. */
        ctx->hc_api_send_message(ctx, ev->he_chatbot_id, ev->he_thread_id,
                                 h->h_agent_message, h->h_agent_name, NULL, &api_res);
        if (api_res.har_outcome != HOOKD_DONE) {
            ctx->hc_set_reason(ctx, api_res.har_reason);
            if (api_res.har_retry_after > 0) {
                ctx->hc_retry_after(ctx, api_res.har_retry_after);
            }
            PQclear(res);
            return api_res.har_outcome;
        }
    }
    body = ticket_json(res, ev);
    if (body == NULL) {
        PQclear(res);
        ctx->hc_set_reason(ctx, "out of memory");
        return HOOKD_RETRY;
    }
    {
        char e_ticket[48], e_chatbot[160], e_thread[160], e_count[48];
        char *envp[] = {"PATH=/usr/bin:/bin", e_ticket, e_chatbot, e_thread, e_count, NULL};

        snprintf(e_ticket, sizeof(e_ticket), "HOOKD_TICKET_ID=%s", ticket);
        snprintf(e_chatbot, sizeof(e_chatbot), "HOOKD_CHATBOT_ID=%s", ev->he_chatbot_id);
        snprintf(e_thread, sizeof(e_thread), "HOOKD_THREAD_ID=%s", ev->he_thread_id);
        snprintf(e_count, sizeof(e_count), "HOOKD_ESCALATIONS=%s", PQgetvalue(res, 0, 1));
        PQclear(res);
        if (h->h_argv[0] != NULL) {
            ok = run_command(h, body, envp, why, sizeof(why));
        }
    }
    if (ok && h->h_url != NULL) {
        ok = post_url(h, body, why, sizeof(why));
    }
    free(body);
    if (!ok) {
        ctx->hc_set_reason(ctx, why);
        return HOOKD_RETRY;
    }
    {
        const char *nvals[3] = {ticket, event, h->h_argv[0] && h->h_url ? "command and url"
                                : h->h_argv[0] ? "command" : h->h_url ? "url" : "nobody"};

        res = PQexecParams(db, notified_sql, 3, NULL, nvals, NULL, NULL, 0);
        if (PQresultStatus(res) != PGRES_COMMAND_OK) {
            /* The notice went out; a retry will send it again (at least once). */
            PQclear(res);
            ctx->hc_set_reason(ctx, "could not record the notice");
            return HOOKD_RETRY;
        }
        PQclear(res);
    }
    snprintf(detail, sizeof(detail), "ticket %s", ticket);
    ctx->hc_set_output(ctx, detail, strlen(detail));
    ctx->hc_log(ctx, HOOKD_LOG_INFO, "handoff: ticket %s notified", ticket);
    return HOOKD_DONE;
}


static void
handoff_fini(void *state)
{
    struct handoff *h = state;

    for (int i = 0; h->h_argv[i] != NULL; i++) {
        free(h->h_argv[i]);
    }
    free(h->h_url);
    free(h->h_cacert);
    free(h->h_agent_message);
    free(h->h_agent_name);
    free(h);
}


const struct hookd_plugin hookd_plugin_v1 = {
    HOOKD_PLUGIN_ABI, "handoff", handoff_init, handoff_handle, handoff_fini
};
