/* SPDX-License-Identifier: MIT */
/*
 * api: the ContextGPT REST API client (libcurl), shared by every worker.
 *
 * One client per process. Each thread keeps its own curl handle, so
 * connections are reused; a limiter shared by all threads keeps hookd under
 * the platform's per-user limit (api.rate_limit requests per
 * api.rate_window seconds): a call that would have to wait longer than a
 * few seconds is not sent and comes back as "retry after N s" instead.
 *
 * Every answer becomes done, retry (with the platform's Retry-After or
 * retryAfter, capped) or failed for good with the platform's reason:
 *   2xx with success true         done
 *   429 MESSAGES_LIMIT_REACHED    failed (the monthly quota does not clear
 *                                 by waiting; replay the job later)
 *   429                           retry after the platform's wait
 *   5xx, timeout, no connection   retry (the route's backoff)
 *   404 within api.not_found_grace seconds of the event   retry (the
 *                                 platform may not show the thread yet)
 *   other 4xx, 2xx with success false   failed
 * The API key is never logged and never put in a result.
 */
#ifndef HOOKD_API_H
#define HOOKD_API_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "hookd_plugin.h"

struct api;
struct cfg;

/*
 * Makes the client from cfg's api settings; *ret is NULL (and 0 returned)
 * when the config has no API key. Returns -1 with err on failure.
 */
int api_new(const struct cfg *cfg, struct api **ret, char *err, size_t errlen);

/* Frees the client; NULL is fine. Other threads must be done with it. */
void api_free(struct api *api);

/*
 * Sends one request: method "GET", "POST" or "PATCH", path below the base
 * URL (e.g. "/v1/chatting/ID/thread/ID/message"), body JSON text or NULL.
 * event_received_us (0 if none) decides the 404 grace. Fills *res; the
 * caller releases res->har_data with json_object_put. Returns false when
 * nothing left hookd (held back by the limiter, or curl could not start),
 * so the caller knows an unanswered call was never sent.
 */
bool api_call(struct api *api, const char *method, const char *path, const char *body,
              int64_t event_received_us, struct hookd_api_result *res);

/*
 * A request of one of the platform's conversation operations, built in one
 * place for the handlers and the CLI: method, path and body (malloc'd JSON
 * text, or NULL). Release with api_request_clear.
 */
/* Room for one percent-encoded id: ids up to a third of it always fit. */
#define API_SEGMENT_MAX 512

struct api_request {
    const char *ar_method;
    char ar_path[2 * API_SEGMENT_MAX + 64];
    char *ar_body;
};

/* POST .../thread/{thread}/message {"message","from":"AGENT","agentName","iconUrl"?} */
void api_request_message(struct api_request *r, const char *chatbot, const char *thread,
                         const char *text, const char *agent_name, const char *icon_url);

/* POST .../thread/{thread}/escalate {"escalationPrompt"} */
void api_request_escalate(struct api_request *r, const char *chatbot, const char *thread,
                          const char *prompt);

/* PATCH /v1/chatting/{chatbot}/thread/update-thread with fields as the body */
void api_request_update_thread(struct api_request *r, const char *chatbot,
                               json_object *fields);

/* GET .../thread/{thread}/messages */
void api_request_messages(struct api_request *r, const char *chatbot, const char *thread);

void api_request_clear(struct api_request *r);

/* Sends a built request (see api_call). */
bool api_send(struct api *api, const struct api_request *r, int64_t event_received_us,
              struct hookd_api_result *res);

/* Writes a URL path segment (chatbot or thread id) percent-encoded into out. */
void api_path_segment(const char *in, char *out, size_t cap);

/* The agent name to sign messages with when a handler gives none. */
const char *api_default_agent(const struct api *api);

/* Requests sent so far and rate-limit waits, for logs and tests. */
void api_counters(struct api *api, uint64_t *ret_sent, uint64_t *ret_limited);

/* Answers by class, in the order of API_STATUS_CLASSES. */
#define API_STATUS_CLASSES {"2xx", "429", "4xx", "5xx", "none"}
#define API_NSTATUS 5
void api_status_counts(struct api *api, uint64_t ret[API_NSTATUS]);

#endif
