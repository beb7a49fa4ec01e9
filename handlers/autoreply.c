/* SPDX-License-Identifier: MIT */
/*
 * autoreply: answers visitors' messages by rules, through the ContextGPT
 * API: replies with a configured text, or escalates the thread to a human.
 *
 * Only NEW_MESSAGE events with visitor text (data.question) are looked at;
 * AI and agent messages never are, so hookd cannot answer itself. Rules are
 * tried in order and the first that matches acts:
 *
 *   options = {
 *     agent_name = "Support";                  # signs replies (default: api.agent_name)
 *     office_hours = { timezone = "Europe/Berlin"; days = [ 1, 2, 3, 4, 5 ];
 *                      from = "09:00"; to = "17:00"; };   # days 1 = Monday
 *     rules = (
 *       { keywords = [ "human", "agent", "person" ]; action = "escalate";
 *         prompt = "The visitor asked for a person"; },
 *       { matches = "refund|money back"; action = "reply"; text = "..."; },
 *       { outside_hours = true; action = "reply"; once_per_thread = true;
 *         text = "We are closed now; we answer from 9:00." }
 *     );
 *   };
 *
 * keywords match whole words, case-insensitively; matches is a POSIX
 * extended expression, case-insensitive; outside_hours = true (or false)
 * makes a rule act only outside (or inside) office hours. A rule with
 * once_per_thread acts at most once per conversation.
 */
#include <ctype.h>
#include <regex.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "hookd_plugin.h"

#define AUTOREPLY_MAX_RULES 32
#define AUTOREPLY_MAX_WORDS 32

enum ar_action {
    AR_REPLY = 0,
    AR_ESCALATE
};

enum ar_hours {
    AR_ANY_TIME = 0,
    AR_OUTSIDE,
    AR_INSIDE
};

struct ar_rule {
    char *r_words[AUTOREPLY_MAX_WORDS];
    int r_nwords;
    regex_t r_regex;
    bool r_has_regex;
    enum ar_hours r_hours;
    enum ar_action r_action;
    char *r_text;                 /* reply text, or the escalation prompt */
    bool r_once;
};

struct autoreply {
    struct ar_rule a_rules[AUTOREPLY_MAX_RULES];
    int a_nrules;
    char *a_agent;
    char *a_tz;                   /* NULL: no office hours */
    bool a_days[8];               /* 1..7, ISO: Monday is 1 */
    int a_from_min;
    int a_to_min;
};


static void autoreply_fini(void *state);


static int
parse_hhmm(const char *s, int *ret)
{
    int h, m;
    char tail;

    if (s == NULL || sscanf(s, "%2d:%2d%c", &h, &m, &tail) != 2 || h < 0 || h > 24 || m < 0
        || m > 59 || (h == 24 && m != 0))
    {
        return -1;
    }
    *ret = h * 60 + m;
    return 0;
}


static int
read_hours(struct autoreply *a, json_object *oh, char *err, size_t errlen)
{
    json_object *v;
    char path[512];

    if (!json_object_object_get_ex(oh, "timezone", &v) || !json_object_is_type(v, json_type_string))
    {
        snprintf(err, errlen, "office_hours.timezone is required (e.g. \"Europe/Berlin\")");
        return -1;
    }
    a->a_tz = strdup(json_object_get_string(v));
    snprintf(path, sizeof(path), "/usr/share/zoneinfo/%s", a->a_tz);
    if (strstr(a->a_tz, "..") != NULL || access(path, R_OK) != 0) {
        snprintf(err, errlen, "office_hours.timezone \"%s\" is not a known time zone", a->a_tz);
        return -1;
    }
    if (!json_object_object_get_ex(oh, "from", &v)
        || parse_hhmm(json_object_get_string(v), &a->a_from_min) < 0
        || !json_object_object_get_ex(oh, "to", &v)
        || parse_hhmm(json_object_get_string(v), &a->a_to_min) < 0)
    {
        snprintf(err, errlen, "office_hours.from and .to must be times like \"09:00\"");
        return -1;
    }
    if (json_object_object_get_ex(oh, "days", &v)) {
        for (size_t i = 0; json_object_is_type(v, json_type_array)
             && i < json_object_array_length(v); i++)
        {
            int d = json_object_get_int(json_object_array_get_idx(v, i));

            if (d < 1 || d > 7) {
                snprintf(err, errlen, "office_hours.days are 1 (Monday) to 7 (Sunday)");
                return -1;
            }
            a->a_days[d] = true;
        }
    } else {
        for (int d = 1; d <= 5; d++) {
            a->a_days[d] = true;
        }
    }
    return 0;
}


static int
read_rule(struct autoreply *a, json_object *o, int idx, char *err, size_t errlen)
{
    struct ar_rule *r = &a->a_rules[idx];
    json_object *v;
    const char *action;

    if (!json_object_is_type(o, json_type_object)) {
        snprintf(err, errlen, "rules[%d] must be a group", idx);
        return -1;
    }
    if (json_object_object_get_ex(o, "keywords", &v)) {
        for (size_t i = 0; json_object_is_type(v, json_type_array)
             && i < json_object_array_length(v) && r->r_nwords < AUTOREPLY_MAX_WORDS; i++)
        {
            r->r_words[r->r_nwords++] = strdup(json_object_get_string(
                                                   json_object_array_get_idx(v, i)));
        }
    }
    if (json_object_object_get_ex(o, "matches", &v)) {
        if (regcomp(&r->r_regex, json_object_get_string(v),
                    REG_EXTENDED | REG_ICASE | REG_NOSUB) != 0)
        {
            snprintf(err, errlen, "rules[%d].matches is not a valid regular expression", idx);
            return -1;
        }
        r->r_has_regex = true;
    }
    if (json_object_object_get_ex(o, "outside_hours", &v)) {
        if (a->a_tz == NULL) {
            snprintf(err, errlen, "rules[%d].outside_hours needs office_hours", idx);
            return -1;
        }
        r->r_hours = json_object_get_boolean(v) ? AR_OUTSIDE : AR_INSIDE;
    }
    r->r_once = json_object_object_get_ex(o, "once_per_thread", &v) && json_object_get_boolean(v);
    action = json_object_object_get_ex(o, "action", &v) ? json_object_get_string(v) : "";
    if (strcmp(action, "reply") == 0) {
        r->r_action = AR_REPLY;
        if (!json_object_object_get_ex(o, "text", &v) || json_object_get_string_len(v) == 0) {
            snprintf(err, errlen, "rules[%d]: a reply needs a text", idx);
            return -1;
        }
        r->r_text = strdup(json_object_get_string(v));
    } else if (strcmp(action, "escalate") == 0) {
        r->r_action = AR_ESCALATE;
        r->r_text = strdup(json_object_object_get_ex(o, "prompt", &v) ? json_object_get_string(v)
                           : "The visitor asked for a person");
    } else {
        snprintf(err, errlen, "rules[%d].action must be \"reply\" or \"escalate\"", idx);
        return -1;
    }
    if (r->r_nwords == 0 && !r->r_has_regex && r->r_hours == AR_ANY_TIME) {
        snprintf(err, errlen, "rules[%d] has no condition (keywords, matches or outside_hours)",
                 idx);
        return -1;
    }
    return 0;
}


static int
read_options(struct autoreply *a, json_object *options, char *err, size_t errlen)
{
    json_object *v;

    if (options == NULL) {
        snprintf(err, errlen, "autoreply needs options with rules");
        return -1;
    }
    json_object_object_foreach(options, key, val) {
        (void)val;
        if (strcmp(key, "rules") != 0 && strcmp(key, "office_hours") != 0
            && strcmp(key, "agent_name") != 0)
        {
            snprintf(err, errlen, "unrecognized option \"%s\"", key);
            return -1;
        }
    }
    if (json_object_object_get_ex(options, "agent_name", &v)) {
        a->a_agent = strdup(json_object_get_string(v));
    }
    if (json_object_object_get_ex(options, "office_hours", &v)
        && read_hours(a, v, err, errlen) < 0)
    {
        return -1;
    }
    if (!json_object_object_get_ex(options, "rules", &v) || !json_object_is_type(v, json_type_array)
        || json_object_array_length(v) == 0)
    {
        snprintf(err, errlen, "rules must list at least one rule");
        return -1;
    }
    if (json_object_array_length(v) > AUTOREPLY_MAX_RULES) {
        snprintf(err, errlen, "at most %d rules", AUTOREPLY_MAX_RULES);
        return -1;
    }
    for (size_t i = 0; i < json_object_array_length(v); i++) {
        a->a_nrules++;
        if (read_rule(a, json_object_array_get_idx(v, i), (int)i, err, errlen) < 0) {
            return -1;
        }
    }
    return 0;
}


static int
autoreply_init(json_object *options, void **state, char *err, size_t errlen)
{
    struct autoreply *a = calloc(1, sizeof(*a));

    if (a == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    if (read_options(a, options, err, errlen) < 0) {
        autoreply_fini(a);
        return -1;
    }
    *state = a;
    return 0;
}


/* Whole-word, case-insensitive: "Human?" has "human", "humane" does not. */
static bool
has_word(const char *text, const char *word)
{
    size_t n = strlen(word);

    for (const char *p = text; n > 0 && *p != '\0'; p++) {
        if (strncasecmp(p, word, n) == 0
            && (p == text || !isalnum((unsigned char)p[-1]))
            && !isalnum((unsigned char)p[n]))
        {
            return true;
        }
    }
    return false;
}


/*
 * Inside office hours now? PostgreSQL does the time-zone arithmetic (the C
 * library's is not thread-safe). Returns 1, 0, or -1 when it could not ask.
 */
static int
inside_hours(const struct autoreply *a, PGconn *db)
{
    const char *vals[1] = {a->a_tz};
    PGresult *res;
    int dow, minute;

    if (db == NULL) {
        return -1;
    }
    res = PQexecParams(db, "SELECT extract(isodow FROM now() AT TIME ZONE $1)::int,"
                       " (extract(hour FROM now() AT TIME ZONE $1) * 60"
                       " + extract(minute FROM now() AT TIME ZONE $1))::int",
                       1, NULL, vals, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
        PQclear(res);
        return -1;
    }
    dow = atoi(PQgetvalue(res, 0, 0));
    minute = atoi(PQgetvalue(res, 0, 1));
    PQclear(res);
    if (dow < 1 || dow > 7 || !a->a_days[dow]) {
        return 0;
    }
    if (a->a_from_min <= a->a_to_min) {
        return minute >= a->a_from_min && minute < a->a_to_min;
    }
    /* Hours across midnight, e.g. 22:00 to 06:00. */
    return minute >= a->a_from_min || minute < a->a_to_min;
}


/* Claims a once-per-thread rule for this conversation; false when already used. */
static int
claim_once(PGconn *db, const struct hookd_ctx *ctx, int rule, const struct hookd_event *ev)
{
    char r[16], e[24];
    const char *vals[5] = {ctx->hc_route, r, ev->he_chatbot_id, ev->he_thread_id, e};
    PGresult *res;
    int claimed;

    snprintf(r, sizeof(r), "%d", rule);
    snprintf(e, sizeof(e), "%lld", (long long)ev->he_event_id);
    /* The same event claiming again (a retry) still counts as its own claim. */
    res = PQexecParams(db, "WITH ins AS (INSERT INTO hookd.autoreply_sent (route, rule,"
                       " chatbot_id, thread_id, event_id) VALUES ($1, $2, $3, $4, $5)"
                       " ON CONFLICT DO NOTHING RETURNING 1)"
                       " SELECT EXISTS (SELECT 1 FROM ins) OR EXISTS (SELECT 1 FROM"
                       " hookd.autoreply_sent WHERE route = $1 AND rule = $2::int"
                       " AND chatbot_id = $3 AND thread_id = $4 AND event_id = $5::bigint)",
                       5, NULL, vals, NULL, NULL, 0);
    claimed = PQresultStatus(res) == PGRES_TUPLES_OK ? PQgetvalue(res, 0, 0)[0] == 't' : -1;
    PQclear(res);
    return claimed;
}


static enum hookd_outcome
autoreply_handle(void *state, const struct hookd_event *ev, struct hookd_ctx *ctx)
{
    struct autoreply *a = state;
    struct hookd_api_result res;
    json_object *data, *q, *mt;
    const char *question;
    PGconn *db = NULL;
    int inside = -1;
    char out[128];

    if (strcmp(ev->he_type, "NEW_MESSAGE") != 0 || ev->he_chatbot_id == NULL
        || ev->he_thread_id == NULL || !json_object_object_get_ex(ev->he_json, "data", &data)
        || !json_object_object_get_ex(data, "question", &q)
        || !json_object_is_type(q, json_type_string) || json_object_get_string_len(q) == 0)
    {
        ctx->hc_set_output(ctx, "not a visitor message", 21);
        return HOOKD_DONE;
    }
    /* An agent's message with question text would still be ours to ignore. */
    if (json_object_object_get_ex(data, "messageType", &mt)
        && json_object_is_type(mt, json_type_string)
        && strcmp(json_object_get_string(mt), "AGENT_MESSAGE") == 0)
    {
        ctx->hc_set_output(ctx, "agent message", 13);
        return HOOKD_DONE;
    }
    question = json_object_get_string(q);
    if (ctx->hc_api_send_message == NULL) {
        ctx->hc_set_reason(ctx, "autoreply needs the ContextGPT API (api.key_file)");
        return HOOKD_FAIL;
    }
    for (int i = 0; i < a->a_nrules; i++) {
        const struct ar_rule *r = &a->a_rules[i];
        bool match = r->r_nwords == 0;

        for (int w = 0; !match && w < r->r_nwords; w++) {
            match = has_word(question, r->r_words[w]);
        }
        if (match && r->r_has_regex) {
            match = regexec(&r->r_regex, question, 0, NULL, 0) == 0;
        }
        if (match && r->r_hours != AR_ANY_TIME) {
            if (inside < 0) {
                db = db ? db : ctx->hc_db(ctx, NULL);
                inside = inside_hours(a, db);
                if (inside < 0) {
                    ctx->hc_set_reason(ctx, "could not read the time of day from the database");
                    return HOOKD_RETRY;
                }
            }
            match = (r->r_hours == AR_OUTSIDE) == (inside == 0);
        }
        if (!match) {
            continue;
        }
        if (r->r_once) {
            int claimed;

            db = db ? db : ctx->hc_db(ctx, NULL);
            claimed = db ? claim_once(db, ctx, i, ev) : -1;
            if (claimed < 0) {
                ctx->hc_set_reason(ctx, "could not record the once-per-thread answer");
                return HOOKD_RETRY;
            }
            if (claimed == 0) {
                continue;
            }
        }
        if (r->r_action == AR_ESCALATE) {
            ctx->hc_api_escalate(ctx, ev->he_chatbot_id, ev->he_thread_id, r->r_text, &res);
        } else {
            ctx->hc_api_send_message(ctx, ev->he_chatbot_id, ev->he_thread_id, r->r_text,
                                     a->a_agent, NULL, &res);
        }
        if (res.har_outcome != HOOKD_DONE) {
            ctx->hc_set_reason(ctx, res.har_reason);
            if (res.har_retry_after > 0) {
                ctx->hc_retry_after(ctx, res.har_retry_after);
            }
            return res.har_outcome;
        }
        snprintf(out, sizeof(out), "rule %d: %s%s", i + 1,
                 r->r_action == AR_ESCALATE ? "escalated" : "replied",
                 res.har_repeated ? " (by an earlier attempt)" : "");
        ctx->hc_set_output(ctx, out, strlen(out));
        ctx->hc_log(ctx, HOOKD_LOG_INFO, "autoreply: %s", out);
        return HOOKD_DONE;
    }
    ctx->hc_set_output(ctx, "no rule matched", 15);
    return HOOKD_DONE;
}


static void
autoreply_fini(void *state)
{
    struct autoreply *a = state;

    for (int i = 0; i < a->a_nrules; i++) {
        struct ar_rule *r = &a->a_rules[i];

        for (int w = 0; w < r->r_nwords; w++) {
            free(r->r_words[w]);
        }
        if (r->r_has_regex) {
            regfree(&r->r_regex);
        }
        free(r->r_text);
    }
    free(a->a_agent);
    free(a->a_tz);
    free(a);
}


const struct hookd_plugin hookd_plugin_v1 = {
    HOOKD_PLUGIN_ABI, "autoreply", autoreply_init, autoreply_handle, autoreply_fini
};
