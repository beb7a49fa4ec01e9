/* SPDX-License-Identifier: MIT */
/*
 * http: the HTTPS listener (CivetWeb) and the webhook endpoints.
 *
 * Each request runs on a CivetWeb worker thread: route, method, size and
 * content-type checks, the body read under a total deadline, verification,
 * classification, then a blocking store_submit(); the answer goes out only
 * after the store reports the commit. The configuration in use is
 * reference-counted: a reload swaps in a new one for new requests while
 * requests in flight finish on the old one.
 */
#ifndef HOOKD_HTTP_H
#define HOOKD_HTTP_H

#include <stddef.h>

struct cfg;
struct http;
struct store;

/*
 * Starts listening with cfg (ownership of cfg passes to the server). Returns
 * 0, or -1 with a message in err; on failure cfg is freed.
 */
int http_start(struct cfg *cfg, struct store *store, struct http **ret, char *err,
               size_t errlen);

/*
 * Makes new_cfg the configuration for new requests (ownership passes). The
 * old one is freed when its last request ends. Restart-only settings of
 * new_cfg are ignored; the caller reports them.
 */
void http_swap_cfg(struct http *h, struct cfg *new_cfg);

/* The configuration currently in use, for comparisons; valid until the next swap. */
const struct cfg *http_cfg(struct http *h);

/* Stops accepting, finishes requests in flight, frees everything; NULL is fine. */
void http_stop(struct http *h);

#endif
