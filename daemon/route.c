/* SPDX-License-Identifier: MIT */
#include "route.h"

#include <stdio.h>
#include <string.h>


json_object *
route_lookup(json_object *root, const char *path)
{
    json_object *cur = root;
    char step[128];

    while (cur != NULL && *path != '\0') {
        size_t n = strcspn(path, ".");

        if (n == 0 || n >= sizeof(step) || !json_object_is_type(cur, json_type_object)) {
            return NULL;
        }
        memcpy(step, path, n);
        step[n] = '\0';
        if (!json_object_object_get_ex(cur, step, &cur)) {
            return NULL;
        }
        path += n + (path[n] == '.');
    }
    return cur;
}


/* Text of a scalar for comparisons: strings as they are, others printed. */
static const char *
scalar_text(json_object *v)
{
    if (v == NULL) {
        return NULL;
    }
    switch (json_object_get_type(v)) {
    case json_type_string:
        return json_object_get_string(v);
    case json_type_int:
    case json_type_double:
    case json_type_boolean:
        return json_object_to_json_string_ext(v, JSON_C_TO_STRING_PLAIN);
    default:
        return NULL;
    }
}


static bool
cond_holds(const struct cfg_cond *c, json_object *root)
{
    json_object *v = route_lookup(root, c->cc_field);
    const char *text;

    switch (c->cc_op) {
    case CFG_COND_IS_NULL:
        return v == NULL;
    case CFG_COND_NOT_NULL:
        return v != NULL;
    case CFG_COND_EQUALS:
        text = scalar_text(v);
        return text != NULL && strcmp(text, c->cc_value) == 0;
    case CFG_COND_MATCHES:
        text = scalar_text(v);
        return text != NULL && regexec(&c->cc_regex, text, 0, NULL, 0) == 0;
    }
    return false;
}


bool
route_matches(const struct cfg_route *route, const struct body_event *ev)
{
    bool ok = route->cr_nevents == 0;

    for (size_t i = 0; !ok && i < route->cr_nevents; i++) {
        ok = strcmp(route->cr_events[i], ev->be_type) == 0;
    }
    if (!ok) {
        return false;
    }
    ok = route->cr_nchatbots == 0;
    for (size_t i = 0; !ok && i < route->cr_nchatbots && ev->be_chatbot_id != NULL; i++) {
        ok = strcmp(route->cr_chatbots[i], ev->be_chatbot_id) == 0;
    }
    for (size_t i = 0; ok && i < route->cr_nconds; i++) {
        ok = cond_holds(&route->cr_conds[i], ev->be_root);
    }
    return ok;
}


bool
route_select(const struct cfg *cfg, const struct body_event *ev, char *out, size_t cap)
{
    size_t n = 0;

    out[0] = '\0';
    for (size_t i = 0; i < cfg->cf_nroutes; i++) {
        const struct cfg_route *r = &cfg->cf_routes[i];
        int w;

        if (!route_matches(r, ev)) {
            continue;
        }
        w = snprintf(out + n, cap - n, "%s%s", n ? "," : "", r->cr_name);
        if (w < 0 || (size_t)w >= cap - n) {
            return false;
        }
        n += (size_t)w;
    }
    return true;
}
