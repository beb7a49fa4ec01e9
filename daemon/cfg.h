/* SPDX-License-Identifier: MIT */
/*
 * cfg: reads and validates the libconfig file into one immutable object.
 *
 * Loading checks everything before anything is used: unknown settings, wrong
 * types, out-of-range numbers, unreadable or loosely permitted secret files,
 * short secrets, missing TLS files. Every error names the file and line.
 * A loaded cfg is never modified; reload builds a new one and swaps it in
 * (see cfg_current). Secrets live only here and are wiped on free.
 */
#ifndef HOOKD_CFG_H
#define HOOKD_CFG_H

#include <regex.h>
#include <stdbool.h>
#include <stddef.h>

#include <json-c/json.h>

#include "log.h"
#include "verify.h"

struct plugin;

#define CFG_MIN_SECRET_LEN 16
#define CFG_ERR_MAX 512

struct cfg_endpoint {
    char *ce_path;
    const char *ce_scheme_name;       /* "contextgpt" or "standard" */
    struct verify_policy ce_policy;   /* points into the fields below */
    struct verify_secret *ce_secrets;
    size_t ce_nsecrets;
    char *ce_token_header;
    char *ce_signature_header;
    char *ce_signature_prefix;
    char *ce_timestamp_header;
    char *ce_delivery_id_header;      /* NULL when not configured */
};

enum cfg_cond_op {
    CFG_COND_EQUALS = 0,
    CFG_COND_MATCHES,
    CFG_COND_IS_NULL,
    CFG_COND_NOT_NULL
};

/* One condition of a route: a dotted path into the event and a test. */
struct cfg_cond {
    char *cc_field;                   /* e.g. "data.messageType" */
    enum cfg_cond_op cc_op;
    char *cc_value;                   /* equals: the text to compare */
    regex_t cc_regex;                 /* matches: POSIX extended, no case */
    bool cc_has_regex;
};

/* A route: which events go to which handler, and how failures retry. */
struct cfg_route {
    char *cr_name;
    char **cr_events;                 /* event types; none means all */
    size_t cr_nevents;
    char **cr_chatbots;               /* chatbot ids; none means all */
    size_t cr_nchatbots;
    struct cfg_cond *cr_conds;        /* all must hold */
    size_t cr_nconds;
    char *cr_handler;                 /* plugin name */
    json_object *cr_options;          /* the handler's options, or NULL */
    int cr_attempts;                  /* runs before the job is dead */
    int cr_first_delay_ms;
    double cr_factor;
    int cr_max_delay_ms;
    int cr_timeout_ms;                /* one attempt */

    struct plugin *cr_plugin;         /* loaded with the config */
    void *cr_state;                   /* from the plugin's init */
    bool cr_initialised;
};

struct cfg {
    char *cf_file;

    char **cf_listen;                 /* "host:port" or "[v6]:port" */
    size_t cf_nlisten;
    char *cf_tls_cert;
    char *cf_tls_key;
    char *cf_tls_ciphers;             /* TLS 1.2 cipher list */

    int cf_threads;
    long cf_max_body;
    int cf_max_header;                /* bytes of request line + headers */
    int cf_request_timeout_ms;
    int cf_body_timeout_ms;
    int cf_keep_alive_timeout_ms;
    int cf_json_max_depth;

    char *cf_conninfo;                /* NULL: HOOKD_DATABASE_URL or libpq defaults */
    int cf_connect_timeout;
    int cf_query_timeout;
    int cf_writers;
    int cf_max_batch;
    int cf_retry_after;

    enum log_level cf_log_level;

    struct cfg_endpoint *cf_endpoints;
    size_t cf_nendpoints;

    char *cf_api_base_url;
    char *cf_api_key;                 /* NULL: no API client; wiped on free */
    char *cf_api_cacert;              /* extra CA file, or NULL */
    char *cf_api_agent_name;
    int cf_api_connect_timeout_ms;
    int cf_api_timeout_ms;
    int cf_api_rate_limit;            /* requests per window, across threads */
    int cf_api_rate_window_s;
    int cf_api_max_retry_after_s;
    int cf_api_not_found_grace_s;

    char *cf_admin_listen;            /* "" or NULL: no admin listener */
    char *cf_admin_token;             /* bearer token for it, or NULL; wiped */

    char *cf_plugin_dir;
    int cf_workers;                   /* dispatch threads; 0 disables dispatch */
    int cf_poll_interval_ms;          /* fallback when no NOTIFY arrives */
    int cf_lease_s;                   /* a running job is reclaimed after this */
    int cf_stop_grace_ms;             /* running handlers' time to finish at stop */
    struct cfg_route *cf_routes;
    size_t cf_nroutes;
};

/*
 * Loads file. On success returns 0 and *ret owns a new cfg; on failure
 * returns -1 with one line in err ("FILE:LINE: what is wrong") and leaves
 * *ret alone. Reads secret files and $CREDENTIALS_DIRECTORY; logs nothing.
 */
int cfg_load(const char *file, struct cfg **ret, char *err, size_t errlen);

/* Frees a cfg and wipes its secrets; NULL is fine. */
void cfg_free(struct cfg *cfg);

/* The route called name, or NULL. */
const struct cfg_route *cfg_find_route(const struct cfg *cfg, const char *name);

/*
 * Shares the configuration in use between threads: readers take a
 * reference for the length of one request or job, and a reload swaps in a
 * new configuration without waiting for them. The last reference frees.
 */
struct cfg_holder;

/* A holder owning cfg; NULL on allocation failure (cfg is then freed). */
struct cfg_holder *cfg_holder_new(struct cfg *cfg);

/* Takes a reference to the configuration in use; give it back with cfg_put. */
const struct cfg *cfg_get(struct cfg_holder *h);

/* Gives back a reference taken with cfg_get. */
void cfg_put(struct cfg_holder *h, const struct cfg *cfg);

/* Makes new_cfg the one in use; ownership passes. False if out of memory. */
bool cfg_holder_swap(struct cfg_holder *h, struct cfg *new_cfg);

/* Drops the holder's own reference and frees the holder. */
void cfg_holder_free(struct cfg_holder *h);

/* The endpoint serving path, or NULL. */
const struct cfg_endpoint *cfg_find_endpoint(const struct cfg *cfg, const char *path);

/* The conninfo to use: the config's, else $HOOKD_DATABASE_URL, else "". */
const char *cfg_conninfo(const struct cfg *cfg);

/*
 * Writes into buf a comma-separated list of restart-only settings that
 * differ between old and new ("" when none). Returns buf.
 */
const char *cfg_restart_changes(const struct cfg *old, const struct cfg *new_cfg,
                                char *buf, size_t cap);

#endif
