/* SPDX-License-Identifier: MIT */
/*
 * hookd_plugin.h: the handler plugin ABI, version 1.
 *
 * A handler is a shared object that exports one symbol,
 *
 *     const struct hookd_plugin hookd_plugin_v1 = { HOOKD_PLUGIN_ABI, "name", ... };
 *
 * hookd loads it with dlopen(RTLD_NOW | RTLD_LOCAL) from the configured
 * plugin directory and refuses it when the symbol is missing or its abi is
 * not HOOKD_PLUGIN_ABI. Build one with only this header and json-c:
 *
 *     cc -shared -fPIC -o myhandler.so myhandler.c
 *
 * Threads: init and fini run once per route on the main thread; handle runs
 * on worker threads, several at once for different conversations, so state
 * shared between calls must be thread-safe. hookd runs at most one job per
 * conversation (chatbot id + thread id) and route at a time, in the order
 * the events were received.
 *
 * Delivery is at least once: a job whose worker died, or whose answer was
 * lost, runs again (ctx->hc_attempt counts the claims of the job, so it
 * tells which run this is; a job that was waiting in the claim of a killed
 * hookd counts one more); so does one that finished in the last fraction
 * of a second before hookd was killed (the results of fast handlers are
 * recorded a few at a time) or before PostgreSQL itself crashed (job
 * states commit without waiting for the disk). Handlers make
 * their effects idempotent, for example keyed by ev->he_event_id.
 */
#ifndef HOOKD_PLUGIN_H
#define HOOKD_PLUGIN_H

#include <stddef.h>
#include <stdint.h>

#include <json-c/json.h>

#define HOOKD_PLUGIN_ABI 1

/* What an attempt came to. */
enum hookd_outcome {
    HOOKD_DONE = 0,      /* finished; never run again */
    HOOKD_RETRY = 1,     /* failed for now; run again after the route's backoff */
    HOOKD_FAIL = 2       /* failed for good; the job goes to the dead letters */
};

/* The event a job is for. Read-only; valid during the call only. */
struct hookd_event {
    int64_t he_event_id;         /* hookd.events.id */
    const char *he_type;         /* "NEW_MESSAGE", ... */
    const char *he_chatbot_id;   /* NULL when the event has none */
    const char *he_thread_id;    /* NULL when the event has none */
    const char *he_raw;          /* the exact body received */
    size_t he_raw_len;
    json_object *he_json;        /* the parsed body; do not modify or keep */
    int64_t he_received_us;      /* when it was received, Unix microseconds */
};

/* Log levels for hc_log, as syslog's. */
enum hookd_log_level {
    HOOKD_LOG_ERROR = 3,
    HOOKD_LOG_WARNING = 4,
    HOOKD_LOG_NOTICE = 5,
    HOOKD_LOG_INFO = 6,
    HOOKD_LOG_DEBUG = 7
};

/* What a ContextGPT API call came to. */
struct hookd_api_result {
    enum hookd_outcome har_outcome;  /* DONE: the platform took it; RETRY: try later;
                                      * FAIL: it never will (bad key, no such chatbot) */
    int har_status;                  /* HTTP status; 0 when no answer came */
    int har_retry_after;             /* for RETRY: seconds the platform asked for, or 0 */
    int har_repeated;                /* 1: an earlier attempt already did this; not resent */
    char har_reason[256];            /* the platform's message, or what went wrong */
    json_object *har_data;           /* the answer's "data", or NULL; hookd's, valid
                                      * until the attempt ends */
};

/* What hookd lends a handler for one attempt. */
struct hookd_ctx {
    const char *hc_route;        /* the route's name */
    int hc_attempt;              /* 1 for the first run */
    int hc_timeout_ms;           /* the route's limit for this attempt */
    void *hc_host;               /* hookd's; pass back to the functions below */

    /*
     * Logs one line with the route, job and event ids added. Never log
     * secrets or payload text (visitors' contact details).
     */
    void (*hc_log)(struct hookd_ctx *ctx, enum hookd_log_level level, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));

    /*
     * Records a short text on the job (shown by `hookd jobs`), such as a
     * command's output or a ticket id; the last call wins; capped at 4 KiB.
     */
    void (*hc_set_output)(struct hookd_ctx *ctx, const char *text, size_t len);

    /*
     * Says why an attempt asked to retry or failed (kept on the job as its
     * last error and logged); one line, capped at 512 bytes.
     */
    void (*hc_set_reason)(struct hookd_ctx *ctx, const char *text);

    /*
     * A libpq connection (PGconn *) for the handler's own writes, to the
     * database named by conninfo (NULL: hookd's own database). It is the
     * handler's until the call returns; do not close it. NULL when the
     * database cannot be reached (return HOOKD_RETRY then).
     */
    void *(*hc_db)(struct hookd_ctx *ctx, const char *conninfo);

    /*
     * For HOOKD_RETRY: the earliest retry in seconds from now (e.g. from a
     * Retry-After), which replaces the backoff when it is longer.
     */
    void (*hc_retry_after)(struct hookd_ctx *ctx, int seconds);

    /*
     * The ContextGPT API, through hookd's one client and rate limiter. NULL
     * when no API key is configured. Calls are numbered within an attempt;
     * on a retry, a call whose number succeeded in an earlier attempt of
     * the same job is not sent again (har_repeated = 1), and a message whose
     * answer was lost is looked for in the thread before it is sent again.
     * So a handler that makes the same calls in the same order never posts
     * twice. The result is filled in every case.
     */
    void (*hc_api_send_message)(struct hookd_ctx *ctx, const char *chatbot_id,
                                const char *thread_id, const char *text,
                                const char *agent_name, const char *icon_url,
                                struct hookd_api_result *res);
    void (*hc_api_escalate)(struct hookd_ctx *ctx, const char *chatbot_id,
                            const char *thread_id, const char *prompt,
                            struct hookd_api_result *res);
    /* fields: the thread update, e.g. {"threadId": ..., "isEscalated": false} */
    void (*hc_api_update_thread)(struct hookd_ctx *ctx, const char *chatbot_id,
                                 json_object *fields, struct hookd_api_result *res);
    void (*hc_api_messages)(struct hookd_ctx *ctx, const char *chatbot_id,
                            const char *thread_id, struct hookd_api_result *res);
};

struct hookd_plugin {
    int hp_abi;                  /* HOOKD_PLUGIN_ABI */
    const char *hp_name;         /* short name, e.g. "exec" */

    /*
     * Called once per route using the plugin, with the route's options (a
     * JSON object made from the config's `options` group; NULL when none).
     * Returns 0 and sets *state, or -1 with a one-line reason in err, which
     * fails check-config and start-up.
     */
    int (*hp_init)(json_object *options, void **state, char *err, size_t errlen);

    /* Runs one attempt of a job. */
    enum hookd_outcome (*hp_handle)(void *state, const struct hookd_event *ev,
                                    struct hookd_ctx *ctx);

    /* Releases what init made; called once, after the last handle. */
    void (*hp_fini)(void *state);
};

#endif
