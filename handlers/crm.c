/* SPDX-License-Identifier: MIT */
/*
 * crm: turns NEW_LEAD events, and the contact details of escalations, into
 * contacts in crm.contacts, one per person.
 *
 * A person is matched by normalised e-mail (trimmed, lower-cased), else by
 * normalised phone (digits and a leading +). Name, e-mail and phone come
 * from the newest lead by the event's createdAt, so a lead delivered late
 * never overwrites a newer one; custom fields are merged the same way (newer
 * keys win). Each event id is recorded on the contact, and an event already
 * recorded changes nothing, so redelivery and retries are harmless.
 *
 * Options:
 *   conninfo = "...";   another database for the CRM tables (default: hookd's)
 *
 * The schema is created on first use (CREATE ... IF NOT EXISTS).
 */
#include <ctype.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libpq-fe.h>

#include "hookd_plugin.h"

#define CRM_FIELD_MAX 320

struct crm {
    char *c_conninfo;          /* NULL: hookd's database */
    pthread_mutex_t c_lock;
    bool c_schema_ready;       /* created (or found) once by this route */
};

static const char crm_schema_sql[] =
    "CREATE SCHEMA IF NOT EXISTS crm;"
    "CREATE TABLE IF NOT EXISTS crm.contacts ("
    " id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
    " email_norm text UNIQUE,"
    " phone_norm text,"
    " name text, email text, phone text,"
    " custom_fields jsonb NOT NULL DEFAULT '{}',"
    " chatbot_id text,"
    " first_seen timestamptz NOT NULL,"
    " last_seen timestamptz NOT NULL,"
    " last_lead_at timestamptz NOT NULL,"
    " event_ids bigint[] NOT NULL DEFAULT '{}');"
    "CREATE INDEX IF NOT EXISTS contacts_phone_idx ON crm.contacts (phone_norm);";

/*
 * The upsert, run after the advisory lock on the match key was taken by an
 * earlier statement of the same transaction: its snapshot then sees what
 * the lock's previous holder committed, so two workers never create the
 * same person twice (a lock taken inside this statement would come after
 * its snapshot). $1 email_norm,
 * $2 phone_norm, $3 name, $4 email, $5 phone, $6 custom fields (jsonb),
 * $7 chatbot, $8 event id, $9 the lead's time.
 */
static const char crm_upsert_sql[] =
    "WITH found AS (SELECT c.id FROM crm.contacts c"
    "  WHERE ($1::text IS NOT NULL AND c.email_norm = $1)"
    "  OR ($1::text IS NULL AND c.phone_norm = $2)"
    "  ORDER BY c.id LIMIT 1),"
    " upd AS (UPDATE crm.contacts c SET"
    "  name = CASE WHEN $9::timestamptz >= c.last_lead_at THEN coalesce($3, c.name) ELSE"
    "   coalesce(c.name, $3) END,"
    "  email = CASE WHEN $9::timestamptz >= c.last_lead_at THEN coalesce($4, c.email) ELSE"
    "   coalesce(c.email, $4) END,"
    "  email_norm = coalesce(c.email_norm, $1),"
    "  phone = CASE WHEN $9::timestamptz >= c.last_lead_at THEN coalesce($5, c.phone) ELSE"
    "   coalesce(c.phone, $5) END,"
    "  phone_norm = CASE WHEN $9::timestamptz >= c.last_lead_at THEN coalesce($2, c.phone_norm)"
    "   ELSE coalesce(c.phone_norm, $2) END,"
    "  custom_fields = CASE WHEN $9::timestamptz >= c.last_lead_at"
    "   THEN c.custom_fields || coalesce($6::jsonb, '{}') ELSE coalesce($6::jsonb, '{}')"
    "   || c.custom_fields END,"
    "  chatbot_id = coalesce(c.chatbot_id, $7),"
    "  first_seen = least(c.first_seen, $9::timestamptz),"
    "  last_seen = greatest(c.last_seen, $9::timestamptz),"
    "  last_lead_at = greatest(c.last_lead_at, $9::timestamptz),"
    "  event_ids = c.event_ids || $8::bigint"
    "  FROM found WHERE c.id = found.id AND NOT ($8::bigint = ANY (c.event_ids))"
    "  RETURNING c.id),"
    " ins AS (INSERT INTO crm.contacts (email_norm, phone_norm, name, email, phone,"
    "  custom_fields, chatbot_id, first_seen, last_seen, last_lead_at, event_ids)"
    "  SELECT $1, $2, $3, $4, $5, coalesce($6::jsonb, '{}'), $7, $9::timestamptz,"
    "  $9::timestamptz, $9::timestamptz, ARRAY[$8::bigint]"
    "  WHERE NOT EXISTS (SELECT 1 FROM found)"
    "  RETURNING id)"
    " SELECT (SELECT id FROM upd) AS updated, (SELECT id FROM ins) AS inserted,"
    "  (SELECT id FROM found) AS existing";


/* A string field of obj, or NULL (empty strings count as absent). */
static const char *
str_field(json_object *obj, const char *name)
{
    json_object *v;

    if (obj == NULL || !json_object_object_get_ex(obj, name, &v)
        || !json_object_is_type(v, json_type_string) || json_object_get_string_len(v) == 0)
    {
        return NULL;
    }
    return json_object_get_string(v);
}


static json_object *
obj_field(json_object *obj, const char *name)
{
    json_object *v;

    if (obj == NULL || !json_object_object_get_ex(obj, name, &v)
        || !json_object_is_type(v, json_type_object))
    {
        return NULL;
    }
    return v;
}


/* Trimmed, lower-cased e-mail into out; false when there is none. */
static bool
norm_email(const char *in, char *out, size_t cap)
{
    size_t n = 0;

    if (in == NULL) {
        return false;
    }
    while (isspace((unsigned char)*in)) {
        in++;
    }
    for (; *in != '\0' && n + 1 < cap; in++) {
        out[n++] = (char)tolower((unsigned char)*in);
    }
    while (n > 0 && isspace((unsigned char)out[n - 1])) {
        n--;
    }
    out[n] = '\0';
    return n > 0 && strchr(out, '@') != NULL;
}


/* Digits of a phone with a leading + kept; false when under 5 digits. */
static bool
norm_phone(const char *in, char *out, size_t cap)
{
    size_t n = 0;
    size_t digits = 0;

    if (in == NULL) {
        return false;
    }
    while (isspace((unsigned char)*in)) {
        in++;
    }
    if (*in == '+' && cap > 1) {
        out[n++] = '+';
    }
    for (; *in != '\0' && n + 1 < cap; in++) {
        if (isdigit((unsigned char)*in)) {
            out[n++] = *in;
            digits++;
        }
    }
    out[n] = '\0';
    return digits >= 5;
}


/* An ISO 8601 time PostgreSQL will read, e.g. 2026-11-30T09:14:30.000Z. */
static bool
looks_like_time(const char *s)
{
    static const char shape[] = "dddd-dd-ddTdd:dd";

    if (s == NULL || strlen(s) < sizeof(shape) - 1 || strlen(s) > 40) {
        return false;
    }
    for (size_t i = 0; i < sizeof(shape) - 1; i++) {
        if (shape[i] == 'd' ? !isdigit((unsigned char)s[i]) : s[i] != shape[i]) {
            return false;
        }
    }
    for (const char *p = s; *p != '\0'; p++) {
        if (!isdigit((unsigned char)*p) && strchr("-:T.Z+", *p) == NULL) {
            return false;
        }
    }
    return true;
}


static int
crm_init(json_object *options, void **state, char *err, size_t errlen)
{
    struct crm *c = calloc(1, sizeof(*c));
    json_object *v;

    if (c == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    if (options != NULL) {
        json_object_object_foreach(options, key, val) {
            (void)val;
            if (strcmp(key, "conninfo") != 0) {
                snprintf(err, errlen, "unrecognized option \"%s\"", key);
                free(c);
                return -1;
            }
        }
        if (json_object_object_get_ex(options, "conninfo", &v)) {
            c->c_conninfo = strdup(json_object_get_string(v));
        }
    }
    pthread_mutex_init(&c->c_lock, NULL);
    *state = c;
    return 0;
}


/*
 * Creates the schema once per route. Under the lock, so workers starting
 * together do not race each other's CREATE statements.
 */
static bool
ensure_schema(struct crm *c, PGconn *db)
{
    PGresult *res;
    bool ok;

    pthread_mutex_lock(&c->c_lock);
    ok = c->c_schema_ready;
    if (!ok) {
        res = PQexec(db, crm_schema_sql);
        ok = c->c_schema_ready = PQresultStatus(res) == PGRES_COMMAND_OK;
        PQclear(res);
    }
    pthread_mutex_unlock(&c->c_lock);
    return ok;
}


/* Runs sql alone; true when it succeeded. */
static bool
exec_ok(PGconn *db, const char *sql)
{
    PGresult *res = PQexec(db, sql);
    bool ok = PQresultStatus(res) == PGRES_COMMAND_OK || PQresultStatus(res) == PGRES_TUPLES_OK;

    PQclear(res);
    return ok;
}


static enum hookd_outcome
crm_handle(void *state, const struct hookd_event *ev, struct hookd_ctx *ctx)
{
    struct crm *c = state;
    json_object *data = obj_field(ev->he_json, "data");
    json_object *lead;
    json_object *custom;
    char email[CRM_FIELD_MAX], phone[64], event[24], out[96], received[64];
    const char *created;
    const char *vals[9];
    bool has_email, has_phone;
    PGconn *db;
    PGresult *res;

    /* Lead fields are read tolerantly: data.lead, data.leadInfo, data.user, data. */
    lead = obj_field(data, "lead");
    if (lead == NULL) {
        lead = obj_field(data, "leadInfo");
    }
    if (lead == NULL) {
        lead = obj_field(data, "user");
    }
    if (lead == NULL && strcmp(ev->he_type, "NEW_LEAD") == 0) {
        lead = data;
    }
    has_email = norm_email(str_field(lead, "email"), email, sizeof(email));
    has_phone = norm_phone(str_field(lead, "phone"), phone, sizeof(phone));
    if (!has_email && !has_phone) {
        ctx->hc_set_output(ctx, "no contact details", 18);
        return HOOKD_DONE;
    }
    custom = obj_field(lead, "customFields");
    created = str_field(data, "createdAt");
    snprintf(event, sizeof(event), "%lld", (long long)ev->he_event_id);
    vals[0] = has_email ? email : NULL;
    vals[1] = has_phone ? phone : NULL;
    vals[2] = str_field(lead, "name");
    vals[3] = str_field(lead, "email");
    vals[4] = str_field(lead, "phone");
    vals[5] = custom ? json_object_to_json_string_ext(custom, JSON_C_TO_STRING_PLAIN) : NULL;
    vals[6] = ev->he_chatbot_id;
    vals[7] = event;
    /* Without a usable createdAt the lead counts from when it was received. */
    if (looks_like_time(created)) {
        vals[8] = created;
    } else {
        time_t secs = (time_t)(ev->he_received_us / 1000000);
        struct tm tm;

        gmtime_r(&secs, &tm);
        snprintf(received, sizeof(received), "%04d-%02d-%02dT%02d:%02d:%02d.%06lldZ",
                 tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                 tm.tm_sec, (long long)(ev->he_received_us % 1000000));
        vals[8] = received;
    }

    db = ctx->hc_db(ctx, c->c_conninfo);
    if (db == NULL) {
        ctx->hc_set_reason(ctx, "could not connect to the CRM database");
        return HOOKD_RETRY;
    }
    if (!ensure_schema(c, db)) {
        ctx->hc_set_reason(ctx, "could not create the crm schema");
        return HOOKD_RETRY;
    }
    {
        const char *key[1] = {has_email ? email : phone};

        if (!exec_ok(db, "BEGIN")) {
            ctx->hc_set_reason(ctx, "could not begin a transaction");
            return HOOKD_RETRY;
        }
        res = PQexecParams(db, "SELECT pg_advisory_xact_lock(hashtext('hookd-crm:' || $1))", 1,
                           NULL, key, NULL, NULL, 0);
        if (PQresultStatus(res) != PGRES_TUPLES_OK) {
            PQclear(res);
            (void)exec_ok(db, "ROLLBACK");
            ctx->hc_set_reason(ctx, "could not lock the contact");
            return HOOKD_RETRY;
        }
        PQclear(res);
    }
    res = PQexecParams(db, crm_upsert_sql, 9, NULL, vals, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK || !exec_ok(db, "COMMIT")) {
        const char *state_code = PQresultErrorField(res, PG_DIAG_SQLSTATE);

        snprintf(out, sizeof(out), "could not store the contact (sqlstate %s)",
                 state_code ? state_code : "?");
        (void)exec_ok(db, "ROLLBACK");
        ctx->hc_set_reason(ctx, out);
        PQclear(res);
        /* A unique race with another worker clears on the next attempt. */
        return HOOKD_RETRY;
    }
    if (!PQgetisnull(res, 0, 1)) {
        snprintf(out, sizeof(out), "contact %s created", PQgetvalue(res, 0, 1));
    } else if (!PQgetisnull(res, 0, 0)) {
        snprintf(out, sizeof(out), "contact %s updated", PQgetvalue(res, 0, 0));
    } else {
        snprintf(out, sizeof(out), "contact %s already has this event",
                 PQgetisnull(res, 0, 2) ? "?" : PQgetvalue(res, 0, 2));
    }
    PQclear(res);
    ctx->hc_set_output(ctx, out, strlen(out));
    ctx->hc_log(ctx, HOOKD_LOG_INFO, "crm: %s", out);
    return HOOKD_DONE;
}


static void
crm_fini(void *state)
{
    struct crm *c = state;

    pthread_mutex_destroy(&c->c_lock);
    free(c->c_conninfo);
    free(c);
}


const struct hookd_plugin hookd_plugin_v1 = {
    HOOKD_PLUGIN_ABI, "crm", crm_init, crm_handle, crm_fini
};
