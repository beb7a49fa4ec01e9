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

#include <stdbool.h>
#include <stddef.h>

#include "log.h"
#include "verify.h"

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
};

/*
 * Loads file. On success returns 0 and *ret owns a new cfg; on failure
 * returns -1 with one line in err ("FILE:LINE: what is wrong") and leaves
 * *ret alone. Reads secret files and $CREDENTIALS_DIRECTORY; logs nothing.
 */
int cfg_load(const char *file, struct cfg **ret, char *err, size_t errlen);

/* Frees a cfg and wipes its secrets; NULL is fine. */
void cfg_free(struct cfg *cfg);

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
