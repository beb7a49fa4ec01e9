/* SPDX-License-Identifier: MIT */
/*
 * admin: the operator's listener, plain HTTP on admin.listen (default
 * 127.0.0.1:9464), separate from the webhooks:
 *   /healthz  200 while the process serves at all
 *   /readyz   200 when the database is reachable and migrated, else 503
 *   /metrics  Prometheus text: requests, verification failures, events,
 *             latencies, jobs by route and state, API calls
 * With admin.token_file set, every path needs "Authorization: Bearer
 * <token>". Serves from its own threads; never logs request contents.
 */
#ifndef HOOKD_ADMIN_H
#define HOOKD_ADMIN_H

#include <stddef.h>

struct admin;
struct api;
struct cfg;
struct dispatch;
struct store;

/*
 * Starts the listener from cfg's admin settings; *ret is NULL (and 0
 * returned) when admin.listen is empty. Returns -1 with err on failure.
 */
int admin_start(const struct cfg *cfg, struct store *st, struct api *api, struct admin **ret,
                char *err, size_t errlen);

/* Tells the listener about dispatch once it runs (for its counters). */
void admin_set_dispatch(struct admin *a, struct dispatch *d);

/* Stops the listener; NULL is fine. */
void admin_stop(struct admin *a);

#endif
