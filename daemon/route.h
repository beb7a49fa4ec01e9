/* SPDX-License-Identifier: MIT */
/*
 * route: decides which routes an event goes to. Pure code, no logging.
 */
#ifndef HOOKD_ROUTE_H
#define HOOKD_ROUTE_H

#include <stdbool.h>
#include <stddef.h>

#include "body.h"
#include "cfg.h"

/* True when ev passes route's event, chatbot and `when` filters. */
bool route_matches(const struct cfg_route *route, const struct body_event *ev);

/*
 * Writes the names of every route of cfg that ev matches into out,
 * separated by commas ("" when none). Returns false when out is too small.
 */
bool route_select(const struct cfg *cfg, const struct body_event *ev, char *out, size_t cap);

/*
 * The value at a dotted path ("data.lead.email") of root, or NULL when a
 * step is missing. A JSON null is returned as NULL too.
 */
json_object *route_lookup(json_object *root, const char *path);

#endif
