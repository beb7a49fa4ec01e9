/* SPDX-License-Identifier: MIT */
#include "cfg.h"

#include <errno.h>
#include <fcntl.h>
#include <libconfig.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <pthread.h>

#include "plugin.h"

#define CFG_MAX_SECRET_LEN 4096

/* Everything a loader step needs to report an error with a line number. */
struct loader {
    const char *file;
    char *err;
    size_t errlen;
};


static int
fail_at(struct loader *ld, const config_setting_t *s, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int
fail_at(struct loader *ld, const config_setting_t *s, const char *fmt, ...)
{
    int n = snprintf(ld->err, ld->errlen, "%s:%d: ", ld->file,
                     s != NULL ? (int)config_setting_source_line(s) : 0);
    va_list ap;

    if (n < 0 || (size_t)n >= ld->errlen) {
        return -1;
    }
    va_start(ap, fmt);
    vsnprintf(ld->err + n, ld->errlen - (size_t)n, fmt, ap);
    va_end(ap);
    return -1;
}


/* Refuses any member of group whose name is not in allowed (NULL-ended). */
static int
check_keys(struct loader *ld, const config_setting_t *group, const char *where,
           const char *const allowed[])
{
    int n = config_setting_length(group);

    for (int i = 0; i < n; i++) {
        const config_setting_t *m = config_setting_get_elem(group, (unsigned)i);
        const char *name = config_setting_name(m);
        bool known = false;

        for (size_t j = 0; allowed[j] != NULL && name != NULL; j++) {
            known |= strcmp(allowed[j], name) == 0;
        }
        if (!known) {
            return fail_at(ld, m, "unrecognized setting \"%s%s%s\"", where,
                           *where ? "." : "", name ? name : "?");
        }
    }
    return 0;
}


static int
get_int(struct loader *ld, const config_setting_t *group, const char *where,
        const char *name, long long min, long long max, long long *val)
{
    const config_setting_t *s = group ? config_setting_get_member(group, name) : NULL;
    long long v;

    if (s == NULL) {
        return 0;
    }
    if (config_setting_type(s) != CONFIG_TYPE_INT && config_setting_type(s) != CONFIG_TYPE_INT64) {
        return fail_at(ld, s, "%s.%s must be an integer", where, name);
    }
    v = config_setting_get_int64(s);
    if (v < min || v > max) {
        return fail_at(ld, s, "%s.%s must be between %lld and %lld, not %lld", where, name,
                       min, max, v);
    }
    *val = v;
    return 0;
}


static int
get_int32(struct loader *ld, const config_setting_t *group, const char *where,
          const char *name, long long min, long long max, int *val)
{
    long long v = *val;

    if (get_int(ld, group, where, name, min, max, &v) < 0) {
        return -1;
    }
    *val = (int)v;
    return 0;
}


/* Copies a string setting (or def when absent) into *val; NULL def stays NULL. */
static int
get_str(struct loader *ld, const config_setting_t *group, const char *where,
        const char *name, const char *def, char **val)
{
    const config_setting_t *s = group ? config_setting_get_member(group, name) : NULL;
    const char *v = def;

    if (s != NULL) {
        if (config_setting_type(s) != CONFIG_TYPE_STRING) {
            return fail_at(ld, s, "%s.%s must be a string", where, name);
        }
        v = config_setting_get_string(s);
    }
    if (v == NULL) {
        *val = NULL;
        return 0;
    }
    *val = strdup(v);
    if (*val == NULL) {
        return fail_at(ld, s, "out of memory");
    }
    return 0;
}


/* The setting name, or NULL when absent; fails when it is not a string list. */
static int
get_str_list(struct loader *ld, const config_setting_t *group, const char *where,
             const char *name, const config_setting_t **ret)
{
    const config_setting_t *s = config_setting_get_member(group, name);

    *ret = NULL;
    if (s == NULL) {
        return 0;
    }
    if (config_setting_type(s) != CONFIG_TYPE_ARRAY && config_setting_type(s) != CONFIG_TYPE_LIST) {
        return fail_at(ld, s, "%s.%s must be a list of strings, like [ \"a\", \"b\" ]", where,
                       name);
    }
    for (int i = 0; i < config_setting_length(s); i++) {
        if (config_setting_type(config_setting_get_elem(s, (unsigned)i)) != CONFIG_TYPE_STRING) {
            return fail_at(ld, s, "%s.%s must be a list of strings", where, name);
        }
    }
    *ret = s;
    return 0;
}


static int
check_readable_file(struct loader *ld, const config_setting_t *s, const char *what,
                    const char *path)
{
    if (access(path, R_OK) != 0) {
        return fail_at(ld, s, "could not read %s \"%s\": %s", what, path, strerror(errno));
    }
    return 0;
}


/*
 * Reads one secret file: refused when it is not a regular file, has no
 * owner read bit, or is readable by everyone. One trailing newline is
 * dropped. The result is malloc'd; the caller wipes and frees it.
 */
static int
read_secret_file(struct loader *ld, const config_setting_t *s, const char *path, char **ret)
{
    char buf[CFG_MAX_SECRET_LEN + 2];
    struct stat st;
    ssize_t n;
    size_t len = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    int saved;

    if (fd < 0) {
        return fail_at(ld, s, "could not open secret file \"%s\": %s", path, strerror(errno));
    }
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return fail_at(ld, s, "secret file \"%s\" is not a regular file", path);
    }
    if ((st.st_mode & S_IRUSR) == 0) {
        close(fd);
        return fail_at(ld, s, "secret file \"%s\" is not readable by its owner (mode %04o)",
                       path, (unsigned)(st.st_mode & 07777));
    }
    if ((st.st_mode & S_IROTH) != 0) {
        close(fd);
        return fail_at(ld, s, "secret file \"%s\" is readable by everyone (mode %04o); "
                       "chmod o-r it", path, (unsigned)(st.st_mode & 07777));
    }
    while ((n = read(fd, buf + len, sizeof(buf) - 1 - len)) > 0) {
        len += (size_t)n;
        if (len >= sizeof(buf) - 1) {
            break;
        }
    }
    saved = errno;
    close(fd);
    if (n < 0) {
        OPENSSL_cleanse(buf, sizeof(buf));
        return fail_at(ld, s, "could not read secret file \"%s\": %s", path, strerror(saved));
    }
    if (len > CFG_MAX_SECRET_LEN) {
        OPENSSL_cleanse(buf, sizeof(buf));
        return fail_at(ld, s, "secret file \"%s\" is longer than %d bytes", path,
                       CFG_MAX_SECRET_LEN);
    }
    if (len > 0 && buf[len - 1] == '\n') {
        len--;
    }
    if (len > 0 && buf[len - 1] == '\r') {
        len--;
    }
    buf[len] = '\0';
    *ret = strdup(buf);
    OPENSSL_cleanse(buf, sizeof(buf));
    if (*ret == NULL) {
        return fail_at(ld, s, "out of memory");
    }
    return 0;
}


/* Adds one secret text to the endpoint, checking it; takes ownership of text. */
static int
add_secret(struct loader *ld, const config_setting_t *s, struct cfg_endpoint *ep,
           char *text, const char *origin)
{
    size_t len = strlen(text);
    struct verify_secret *grown;
    struct verify_secret *vs;
    unsigned char *key = NULL;
    long key_len = 0;

    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)text[i];

        if (c < 0x20 || c == 0x7f) {
            OPENSSL_cleanse(text, len);
            free(text);
            return fail_at(ld, s, "secret from %s of endpoint \"%s\" contains a control "
                           "character", origin, ep->ce_path);
        }
    }
    if (len < CFG_MIN_SECRET_LEN) {
        OPENSSL_cleanse(text, len);
        free(text);
        return fail_at(ld, s, "secret from %s of endpoint \"%s\" is shorter than %d characters",
                       origin, ep->ce_path, CFG_MIN_SECRET_LEN);
    }
    if (ep->ce_policy.vp_scheme == VERIFY_SCHEME_STANDARD) {
        key = malloc(len);
        key_len = key ? verify_standard_key(text, key, len) : -1;
        if (key_len < 16) {
            free(key);
            OPENSSL_cleanse(text, len);
            free(text);
            return fail_at(ld, s, "secret from %s of endpoint \"%s\" is not a Standard Webhooks "
                           "secret (whsec_ and base64 of at least 16 bytes)", origin,
                           ep->ce_path);
        }
    }
    grown = realloc(ep->ce_secrets, (ep->ce_nsecrets + 1) * sizeof(*grown));
    if (grown == NULL) {
        free(key);
        OPENSSL_cleanse(text, len);
        free(text);
        return fail_at(ld, s, "out of memory");
    }
    ep->ce_secrets = grown;
    vs = &ep->ce_secrets[ep->ce_nsecrets++];
    vs->vs_text = text;
    vs->vs_text_len = len;
    vs->vs_key = key;
    vs->vs_key_len = key ? (size_t)key_len : 0;
    return 0;
}


static int
load_secrets(struct loader *ld, const config_setting_t *g, struct cfg_endpoint *ep,
             const char *where)
{
    const config_setting_t *list;
    const char *credentials_dir = getenv("CREDENTIALS_DIRECTORY");

    if (get_str_list(ld, g, where, "secrets", &list) < 0) {
        return -1;
    }
    for (int i = 0; list != NULL && i < config_setting_length(list); i++) {
        char *text = strdup(config_setting_get_string_elem(list, (unsigned)i));

        if (text == NULL || add_secret(ld, list, ep, text, "secrets") < 0) {
            return text == NULL ? fail_at(ld, list, "out of memory") : -1;
        }
    }

    if (get_str_list(ld, g, where, "secret_files", &list) < 0) {
        return -1;
    }
    for (int i = 0; list != NULL && i < config_setting_length(list); i++) {
        const char *path = config_setting_get_string_elem(list, (unsigned)i);
        char *text;

        if (read_secret_file(ld, list, path, &text) < 0
            || add_secret(ld, list, ep, text, "secret_files") < 0)
        {
            return -1;
        }
    }

    if (get_str_list(ld, g, where, "credentials", &list) < 0) {
        return -1;
    }
    for (int i = 0; list != NULL && i < config_setting_length(list); i++) {
        const char *name = config_setting_get_string_elem(list, (unsigned)i);
        char path[PATH_MAX];
        char *text;

        if (credentials_dir == NULL || *credentials_dir == '\0') {
            return fail_at(ld, list, "%s.credentials names \"%s\" but $CREDENTIALS_DIRECTORY "
                           "is not set (use LoadCredential= in the unit)", where, name);
        }
        if (strchr(name, '/') != NULL
            || snprintf(path, sizeof(path), "%s/%s", credentials_dir, name) >= (int)sizeof(path))
        {
            return fail_at(ld, list, "%s.credentials: \"%s\" is not a credential name", where,
                           name);
        }
        if (read_secret_file(ld, list, path, &text) < 0
            || add_secret(ld, list, ep, text, "credentials") < 0)
        {
            return -1;
        }
    }

    if (ep->ce_nsecrets == 0) {
        return fail_at(ld, g, "endpoint \"%s\" has no secret: set secrets, secret_files or "
                       "credentials", ep->ce_path);
    }
    return 0;
}


static int
parse_enum(struct loader *ld, const config_setting_t *g, const char *where, const char *name,
           const char *const names[], int def, int *ret)
{
    const config_setting_t *s = config_setting_get_member(g, name);
    const char *v;

    *ret = def;
    if (s == NULL) {
        return 0;
    }
    if (config_setting_type(s) != CONFIG_TYPE_STRING) {
        return fail_at(ld, s, "%s.%s must be a string", where, name);
    }
    v = config_setting_get_string(s);
    for (int i = 0; names[i] != NULL; i++) {
        if (strcasecmp(v, names[i]) == 0) {
            *ret = i;
            return 0;
        }
    }
    return fail_at(ld, s, "%s.%s: unrecognized value \"%s\"", where, name, v);
}


static const char *const endpoint_keys[] = {
    "path", "scheme", "secrets", "secret_files", "credentials", "require", "token_header",
    "signature_header", "signature_encoding", "signature_prefix", "timestamp_header",
    "tolerance", "delivery_id_header", NULL
};
static const char *const scheme_names[] = {"contextgpt", "standard", NULL};
static const char *const require_names[] = {"both", "signature", "token", "any", NULL};
static const char *const encoding_names[] = {"hex", "base64", NULL};


static int
load_endpoint(struct loader *ld, const config_setting_t *g, int idx, struct cfg_endpoint *ep)
{
    char where[32];
    struct verify_policy *p = &ep->ce_policy;
    int scheme, require, encoding;
    long long tolerance = 300;

    snprintf(where, sizeof(where), "endpoints[%d]", idx);
    if (config_setting_type(g) != CONFIG_TYPE_GROUP) {
        return fail_at(ld, g, "%s must be a group { ... }", where);
    }
    if (check_keys(ld, g, where, endpoint_keys) < 0
        || get_str(ld, g, where, "path", "/webhooks/contextgpt", &ep->ce_path) < 0
        || parse_enum(ld, g, where, "scheme", scheme_names, 0, &scheme) < 0
        || parse_enum(ld, g, where, "require", require_names, 0, &require) < 0
        || parse_enum(ld, g, where, "signature_encoding", encoding_names, 0, &encoding) < 0
        || get_str(ld, g, where, "token_header", "X-WEBHOOK-TOKEN", &ep->ce_token_header) < 0
        || get_str(ld, g, where, "signature_header", "X-WEBHOOK-SIGNATURE",
                   &ep->ce_signature_header) < 0
        || get_str(ld, g, where, "signature_prefix", "sha256=", &ep->ce_signature_prefix) < 0
        || get_str(ld, g, where, "timestamp_header", "", &ep->ce_timestamp_header) < 0
        || get_str(ld, g, where, "delivery_id_header", "", &ep->ce_delivery_id_header) < 0
        || get_int(ld, g, where, "tolerance", 1, 86400, &tolerance) < 0)
    {
        return -1;
    }
    if (ep->ce_path[0] != '/' || strpbrk(ep->ce_path, " ?#%") != NULL) {
        return fail_at(ld, g, "%s.path must start with \"/\" and hold no spaces, ?, # or %%",
                       where);
    }
    if (*ep->ce_token_header == '\0' || *ep->ce_signature_header == '\0') {
        return fail_at(ld, g, "%s: token_header and signature_header must not be empty", where);
    }
    if (*ep->ce_delivery_id_header == '\0') {
        free(ep->ce_delivery_id_header);
        ep->ce_delivery_id_header = NULL;
    }
    ep->ce_scheme_name = scheme_names[scheme];
    p->vp_scheme = (enum verify_scheme)scheme;
    p->vp_require = (enum verify_require)require;
    p->vp_encoding = (enum verify_encoding)encoding;
    p->vp_token_header = ep->ce_token_header;
    p->vp_signature_header = ep->ce_signature_header;
    p->vp_signature_prefix = ep->ce_signature_prefix;
    p->vp_timestamp_header = ep->ce_timestamp_header;
    p->vp_tolerance = (long)tolerance;
    if (load_secrets(ld, g, ep, where) < 0) {
        return -1;
    }
    p->vp_secrets = ep->ce_secrets;
    p->vp_nsecrets = ep->ce_nsecrets;
    return 0;
}


static const char *const top_keys[] = {
    "listen", "tls", "http", "database", "log", "endpoints", "dispatch", "routes", "api",
    "admin", NULL
};
static const char *const admin_keys[] = {"listen", "token_file", NULL};
static const char *const api_keys[] = {
    "base_url", "key_file", "credential", "connect_timeout", "timeout", "rate_limit",
    "rate_window", "max_retry_after", "not_found_grace", "cacert", "agent_name", NULL
};
static const char *const dispatch_keys[] = {
    "plugin_dir", "workers", "poll_interval", "lease", "stop_grace", NULL
};
static const char *const route_keys[] = {
    "name", "events", "chatbots", "when", "handler", "options", "retry", "timeout", NULL
};
static const char *const retry_keys[] = {"attempts", "first_delay", "factor", "max_delay", NULL};
static const char *const cond_keys[] = {"field", "equals", "matches", "is_null", NULL};

#ifndef HOOKD_PLUGIN_DIR
#define HOOKD_PLUGIN_DIR "/usr/local/lib/hookd/handlers"
#endif
static const char *const tls_keys[] = {"certificate", "key", "ciphers", NULL};
static const char *const http_keys[] = {
    "threads", "max_body", "max_header", "request_timeout", "body_timeout",
    "keep_alive_timeout", "json_max_depth", NULL
};
static const char *const db_keys[] = {
    "conninfo", "connect_timeout", "query_timeout", "writers", "max_batch", "retry_after", NULL
};
static const char *const log_keys[] = {"level", NULL};

/* Modern TLS 1.2 suites (forward secret AEAD only); TLS 1.3 uses OpenSSL's. */
#define CFG_DEFAULT_CIPHERS                                                                 \
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"                            \
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"                            \
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"


/* A group setting, or NULL when absent; fails when present but not a group. */
static int
get_group(struct loader *ld, const config_setting_t *root, const char *name,
          const char *const keys[], const config_setting_t **ret)
{
    const config_setting_t *g = config_setting_get_member(root, name);

    *ret = NULL;
    if (g == NULL) {
        return 0;
    }
    if (config_setting_type(g) != CONFIG_TYPE_GROUP) {
        return fail_at(ld, g, "%s must be a group { ... }", name);
    }
    if (check_keys(ld, g, name, keys) < 0) {
        return -1;
    }
    *ret = g;
    return 0;
}


static int
load_listen(struct loader *ld, const config_setting_t *root, struct cfg *cfg)
{
    const config_setting_t *list;
    static const char *const def = "127.0.0.1:8443";

    if (get_str_list(ld, root, "", "listen", &list) < 0) {
        return -1;
    }
    cfg->cf_nlisten = list ? (size_t)config_setting_length(list) : 1;
    if (cfg->cf_nlisten == 0) {
        return fail_at(ld, list, "listen must name at least one address");
    }
    cfg->cf_listen = calloc(cfg->cf_nlisten, sizeof(char *));
    if (cfg->cf_listen == NULL) {
        return fail_at(ld, list, "out of memory");
    }
    for (size_t i = 0; i < cfg->cf_nlisten; i++) {
        const char *v = list ? config_setting_get_string_elem(list, (unsigned)i) : def;
        const char *colon = strrchr(v, ':');
        char *end = NULL;
        long port;

        port = colon ? strtol(colon + 1, &end, 10) : 0;
        if (colon == NULL || colon == v || end == NULL || *end != '\0' || port < 1
            || port > 65535 || strpbrk(v, ", \t") != NULL
            || (v[0] == '[' && colon[-1] != ']'))
        {
            return fail_at(ld, list, "listen: \"%s\" is not host:port (IPv6 as [::1]:8443)", v);
        }
        cfg->cf_listen[i] = strdup(v);
        if (cfg->cf_listen[i] == NULL) {
            return fail_at(ld, list, "out of memory");
        }
    }
    return 0;
}


/* Converts a libconfig setting into json-c (groups become objects). */
static json_object *
setting_to_json(const config_setting_t *s)
{
    json_object *o;

    switch (config_setting_type(s)) {
    case CONFIG_TYPE_GROUP:
        o = json_object_new_object();
        for (int i = 0; o != NULL && i < config_setting_length(s); i++) {
            const config_setting_t *m = config_setting_get_elem(s, (unsigned)i);

            json_object_object_add(o, config_setting_name(m), setting_to_json(m));
        }
        return o;
    case CONFIG_TYPE_ARRAY:
    case CONFIG_TYPE_LIST:
        o = json_object_new_array();
        for (int i = 0; o != NULL && i < config_setting_length(s); i++) {
            json_object_array_add(o, setting_to_json(config_setting_get_elem(s, (unsigned)i)));
        }
        return o;
    case CONFIG_TYPE_INT:
    case CONFIG_TYPE_INT64:
        return json_object_new_int64(config_setting_get_int64(s));
    case CONFIG_TYPE_FLOAT:
        return json_object_new_double(config_setting_get_float(s));
    case CONFIG_TYPE_BOOL:
        return json_object_new_boolean(config_setting_get_bool(s));
    case CONFIG_TYPE_STRING:
        return json_object_new_string(config_setting_get_string(s));
    default:
        return NULL;
    }
}


/* Copies a string list setting into a malloc'd array. */
static int
get_str_array(struct loader *ld, const config_setting_t *g, const char *where, const char *name,
              char ***ret, size_t *ret_n)
{
    const config_setting_t *list;

    if (get_str_list(ld, g, where, name, &list) < 0) {
        return -1;
    }
    *ret_n = list ? (size_t)config_setting_length(list) : 0;
    *ret = *ret_n ? calloc(*ret_n, sizeof(char *)) : NULL;
    if (*ret_n > 0 && *ret == NULL) {
        return fail_at(ld, list, "out of memory");
    }
    for (size_t i = 0; i < *ret_n; i++) {
        (*ret)[i] = strdup(config_setting_get_string_elem(list, (unsigned)i));
        if ((*ret)[i] == NULL) {
            return fail_at(ld, list, "out of memory");
        }
    }
    return 0;
}


static int
load_cond(struct loader *ld, const config_setting_t *g, const char *where, struct cfg_cond *c)
{
    const config_setting_t *eq = config_setting_get_member(g, "equals");
    const config_setting_t *re = config_setting_get_member(g, "matches");
    const config_setting_t *nul = config_setting_get_member(g, "is_null");
    char *pattern = NULL;
    int rc;

    if (config_setting_type(g) != CONFIG_TYPE_GROUP) {
        return fail_at(ld, g, "%s must be a group { field = ...; equals = ...; }", where);
    }
    if (check_keys(ld, g, where, cond_keys) < 0
        || get_str(ld, g, where, "field", NULL, &c->cc_field) < 0)
    {
        return -1;
    }
    if (c->cc_field == NULL || *c->cc_field == '\0') {
        return fail_at(ld, g, "%s.field is required (a path such as \"data.messageType\")",
                       where);
    }
    if ((eq != NULL) + (re != NULL) + (nul != NULL) != 1) {
        return fail_at(ld, g, "%s needs exactly one of equals, matches or is_null", where);
    }
    if (nul != NULL) {
        if (config_setting_type(nul) != CONFIG_TYPE_BOOL) {
            return fail_at(ld, nul, "%s.is_null must be true or false", where);
        }
        c->cc_op = config_setting_get_bool(nul) ? CFG_COND_IS_NULL : CFG_COND_NOT_NULL;
        return 0;
    }
    if (eq != NULL) {
        c->cc_op = CFG_COND_EQUALS;
        return get_str(ld, g, where, "equals", NULL, &c->cc_value);
    }
    c->cc_op = CFG_COND_MATCHES;
    if (get_str(ld, g, where, "matches", NULL, &pattern) < 0) {
        return -1;
    }
    rc = regcomp(&c->cc_regex, pattern, REG_EXTENDED | REG_ICASE | REG_NOSUB);
    free(pattern);
    if (rc != 0) {
        char msg[128];

        regerror(rc, &c->cc_regex, msg, sizeof(msg));
        return fail_at(ld, re, "%s.matches is not a valid regular expression: %s", where, msg);
    }
    c->cc_has_regex = true;
    return 0;
}


static int
load_retry(struct loader *ld, const config_setting_t *r, const char *where, struct cfg_route *rt)
{
    const config_setting_t *f;
    long long attempts = 5, first = 1000, max = 300000;

    rt->cr_factor = 2.0;
    if (r != NULL) {
        if (config_setting_type(r) != CONFIG_TYPE_GROUP) {
            return fail_at(ld, r, "%s.retry must be a group { attempts = ...; }", where);
        }
        if (check_keys(ld, r, where, retry_keys) < 0
            || get_int(ld, r, where, "attempts", 1, 1000, &attempts) < 0
            || get_int(ld, r, where, "first_delay", 0, 86400000, &first) < 0
            || get_int(ld, r, where, "max_delay", 0, 604800000, &max) < 0)
        {
            return -1;
        }
        f = config_setting_get_member(r, "factor");
        if (f != NULL) {
            if (config_setting_type(f) != CONFIG_TYPE_FLOAT
                && config_setting_type(f) != CONFIG_TYPE_INT)
            {
                return fail_at(ld, f, "%s.retry.factor must be a number such as 2.0", where);
            }
            rt->cr_factor = config_setting_type(f) == CONFIG_TYPE_FLOAT
                            ? config_setting_get_float(f) : (double)config_setting_get_int(f);
            if (rt->cr_factor < 1.0 || rt->cr_factor > 100.0) {
                return fail_at(ld, f, "%s.retry.factor must be between 1.0 and 100.0", where);
            }
        }
    }
    rt->cr_attempts = (int)attempts;
    rt->cr_first_delay_ms = (int)first;
    rt->cr_max_delay_ms = (int)max;
    return 0;
}


static int
load_route(struct loader *ld, const config_setting_t *g, int idx, const char *plugin_dir,
           struct cfg_route *rt)
{
    char where[96];
    char err[CFG_ERR_MAX];
    const config_setting_t *when;
    const config_setting_t *opts;
    long long timeout = 30000;

    snprintf(where, sizeof(where), "routes[%d]", idx);
    if (config_setting_type(g) != CONFIG_TYPE_GROUP) {
        return fail_at(ld, g, "%s must be a group { name = ...; handler = ...; }", where);
    }
    if (check_keys(ld, g, where, route_keys) < 0
        || get_str(ld, g, where, "name", NULL, &rt->cr_name) < 0
        || get_str(ld, g, where, "handler", NULL, &rt->cr_handler) < 0
        || get_str_array(ld, g, where, "events", &rt->cr_events, &rt->cr_nevents) < 0
        || get_str_array(ld, g, where, "chatbots", &rt->cr_chatbots, &rt->cr_nchatbots) < 0
        || get_int(ld, g, where, "timeout", 100, 3600000, &timeout) < 0
        || load_retry(ld, config_setting_get_member(g, "retry"), where, rt) < 0)
    {
        return -1;
    }
    rt->cr_timeout_ms = (int)timeout;
    if (rt->cr_name == NULL || rt->cr_handler == NULL) {
        return fail_at(ld, g, "%s needs a name and a handler", where);
    }
    for (const char *p = rt->cr_name; *p != '\0'; p++) {
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9')
              || *p == '-' || *p == '_' || *p == '.'))
        {
            return fail_at(ld, g, "%s.name \"%s\" may hold only letters, digits, '-', '_' "
                           "and '.'", where, rt->cr_name);
        }
    }
    if (*rt->cr_name == '\0' || strlen(rt->cr_name) > 64) {
        return fail_at(ld, g, "%s.name must be 1 to 64 characters", where);
    }
    /* From here on, errors name the route. */
    snprintf(where, sizeof(where), "route \"%s\"", rt->cr_name);
    when = config_setting_get_member(g, "when");
    if (when != NULL) {
        if (config_setting_type(when) != CONFIG_TYPE_LIST) {
            return fail_at(ld, when, "%s.when must be a list ( { field = ...; ... } )", where);
        }
        rt->cr_nconds = (size_t)config_setting_length(when);
        rt->cr_conds = calloc(rt->cr_nconds ? rt->cr_nconds : 1, sizeof(*rt->cr_conds));
        if (rt->cr_conds == NULL) {
            return fail_at(ld, when, "out of memory");
        }
        for (size_t i = 0; i < rt->cr_nconds; i++) {
            char cw[160];

            snprintf(cw, sizeof(cw), "%s.when[%zu]", where, i);
            if (load_cond(ld, config_setting_get_elem(when, (unsigned)i), cw,
                          &rt->cr_conds[i]) < 0)
            {
                return -1;
            }
        }
    }
    opts = config_setting_get_member(g, "options");
    if (opts != NULL) {
        if (config_setting_type(opts) != CONFIG_TYPE_GROUP) {
            return fail_at(ld, opts, "%s.options must be a group { ... }", where);
        }
        rt->cr_options = setting_to_json(opts);
    }
    if (plugin_load(plugin_dir, rt->cr_handler, &rt->cr_plugin, err, sizeof(err)) < 0) {
        return fail_at(ld, g, "%s: %s", where, err);
    }
    if (rt->cr_plugin->pl_desc->hp_init != NULL
        && rt->cr_plugin->pl_desc->hp_init(rt->cr_options, &rt->cr_state, err, sizeof(err)) != 0)
    {
        return fail_at(ld, opts ? opts : g, "%s: handler \"%s\" refused its options: %s", where,
                       rt->cr_handler, err);
    }
    rt->cr_initialised = true;
    return 0;
}


static int
load_api(struct loader *ld, const config_setting_t *root, struct cfg *cfg)
{
    const config_setting_t *g;
    char *key_file = NULL;
    char *credential = NULL;
    const char *cred_dir = getenv("CREDENTIALS_DIRECTORY");
    int r = 0;

    cfg->cf_api_connect_timeout_ms = 5000;
    cfg->cf_api_timeout_ms = 15000;
    cfg->cf_api_rate_limit = 500;
    cfg->cf_api_rate_window_s = 60;
    cfg->cf_api_max_retry_after_s = 300;
    cfg->cf_api_not_found_grace_s = 60;
    if (get_group(ld, root, "api", api_keys, &g) < 0
        || get_str(ld, g, "api", "base_url", "https://ContextGPT.in/api", &cfg->cf_api_base_url) < 0
        || get_str(ld, g, "api", "cacert", NULL, &cfg->cf_api_cacert) < 0
        || get_str(ld, g, "api", "agent_name", "Support", &cfg->cf_api_agent_name) < 0
        || get_str(ld, g, "api", "key_file", NULL, &key_file) < 0
        || get_str(ld, g, "api", "credential", NULL, &credential) < 0
        || get_int32(ld, g, "api", "connect_timeout", 100, 60000,
                     &cfg->cf_api_connect_timeout_ms) < 0
        || get_int32(ld, g, "api", "timeout", 100, 300000, &cfg->cf_api_timeout_ms) < 0
        || get_int32(ld, g, "api", "rate_limit", 1, 100000, &cfg->cf_api_rate_limit) < 0
        || get_int32(ld, g, "api", "rate_window", 1, 3600, &cfg->cf_api_rate_window_s) < 0
        || get_int32(ld, g, "api", "max_retry_after", 1, 86400,
                     &cfg->cf_api_max_retry_after_s) < 0
        || get_int32(ld, g, "api", "not_found_grace", 0, 3600,
                     &cfg->cf_api_not_found_grace_s) < 0)
    {
        r = -1;
        goto out;
    }
    if (strncmp(cfg->cf_api_base_url, "https://", 8) != 0) {
        r = fail_at(ld, config_setting_get_member(g, "base_url"),
                    "api.base_url must be an https:// URL");
        goto out;
    }
    if (key_file != NULL && credential != NULL) {
        r = fail_at(ld, g, "api: give key_file or credential, not both");
        goto out;
    }
    if (credential != NULL) {
        char path[PATH_MAX];

        if (cred_dir == NULL || *cred_dir == '\0') {
            r = fail_at(ld, g, "api.credential names \"%s\" but $CREDENTIALS_DIRECTORY is not "
                        "set (use LoadCredential= in the unit)", credential);
            goto out;
        }
        if (strchr(credential, '/') != NULL) {
            r = fail_at(ld, g, "api.credential: \"%s\" is not a credential name", credential);
            goto out;
        }
        snprintf(path, sizeof(path), "%s/%s", cred_dir, credential);
        r = read_secret_file(ld, g, path, &cfg->cf_api_key);
    } else if (key_file != NULL) {
        r = read_secret_file(ld, config_setting_get_member(g, "key_file"), key_file,
                             &cfg->cf_api_key);
    }
    if (r == 0 && cfg->cf_api_key != NULL && *cfg->cf_api_key == '\0') {
        r = fail_at(ld, g, "api: the API key is empty");
    }
out:
    free(key_file);
    free(credential);
    return r;
}


static int
load_admin(struct loader *ld, const config_setting_t *root, struct cfg *cfg)
{
    const config_setting_t *g;
    char *token_file = NULL;
    int r;

    if (get_group(ld, root, "admin", admin_keys, &g) < 0
        || get_str(ld, g, "admin", "listen", "127.0.0.1:9464", &cfg->cf_admin_listen) < 0
        || get_str(ld, g, "admin", "token_file", NULL, &token_file) < 0)
    {
        free(token_file);
        return -1;
    }
    if (*cfg->cf_admin_listen != '\0') {
        const char *colon = strrchr(cfg->cf_admin_listen, ':');
        char *end = NULL;
        long port = colon ? strtol(colon + 1, &end, 10) : 0;

        if (colon == NULL || colon == cfg->cf_admin_listen || *end != '\0' || port < 1
            || port > 65535 || strpbrk(cfg->cf_admin_listen, ", \t") != NULL)
        {
            free(token_file);
            return fail_at(ld, config_setting_get_member(g, "listen"), "admin.listen: \"%s\" "
                           "is not host:port (\"\" turns the admin listener off)",
                           cfg->cf_admin_listen);
        }
    }
    r = token_file ? read_secret_file(ld, config_setting_get_member(g, "token_file"),
                                      token_file, &cfg->cf_admin_token) : 0;
    free(token_file);
    return r;
}


static int
load_dispatch(struct loader *ld, const config_setting_t *root, struct cfg *cfg)
{
    const config_setting_t *d;
    const config_setting_t *routes;
    const char *env_dir = getenv("HOOKD_PLUGIN_DIR");

    cfg->cf_workers = 4;
    cfg->cf_poll_interval_ms = 5000;
    cfg->cf_lease_s = 30;
    cfg->cf_stop_grace_ms = 20000;
    if (get_group(ld, root, "dispatch", dispatch_keys, &d) < 0
        || get_str(ld, d, "dispatch", "plugin_dir",
                   env_dir && *env_dir ? env_dir : HOOKD_PLUGIN_DIR, &cfg->cf_plugin_dir) < 0
        || get_int32(ld, d, "dispatch", "workers", 0, 256, &cfg->cf_workers) < 0
        || get_int32(ld, d, "dispatch", "poll_interval", 10, 600000,
                     &cfg->cf_poll_interval_ms) < 0
        || get_int32(ld, d, "dispatch", "lease", 3, 86400, &cfg->cf_lease_s) < 0
        || get_int32(ld, d, "dispatch", "stop_grace", 0, 600000, &cfg->cf_stop_grace_ms) < 0)
    {
        return -1;
    }
    routes = config_setting_get_member(root, "routes");
    if (routes == NULL) {
        return 0;
    }
    if (config_setting_type(routes) != CONFIG_TYPE_LIST) {
        return fail_at(ld, routes, "routes must be a list ( { ... }, { ... } )");
    }
    cfg->cf_nroutes = (size_t)config_setting_length(routes);
    cfg->cf_routes = calloc(cfg->cf_nroutes ? cfg->cf_nroutes : 1, sizeof(*cfg->cf_routes));
    if (cfg->cf_routes == NULL) {
        return fail_at(ld, routes, "out of memory");
    }
    for (size_t i = 0; i < cfg->cf_nroutes; i++) {
        const config_setting_t *g = config_setting_get_elem(routes, (unsigned)i);

        if (load_route(ld, g, (int)i, cfg->cf_plugin_dir, &cfg->cf_routes[i]) < 0) {
            return -1;
        }
        for (size_t j = 0; j < i; j++) {
            if (strcmp(cfg->cf_routes[j].cr_name, cfg->cf_routes[i].cr_name) == 0) {
                return fail_at(ld, g, "route name \"%s\" is used twice",
                               cfg->cf_routes[i].cr_name);
            }
        }
    }
    return 0;
}


static int
load_all(struct loader *ld, config_t *lc, struct cfg *cfg)
{
    const config_setting_t *root = config_root_setting(lc);
    const config_setting_t *tls, *http, *db, *log, *eps;
    char *level = NULL;
    long long max_body = 1048576;
    int r;

    if (check_keys(ld, root, "", top_keys) < 0 || load_listen(ld, root, cfg) < 0
        || get_group(ld, root, "tls", tls_keys, &tls) < 0
        || get_group(ld, root, "http", http_keys, &http) < 0
        || get_group(ld, root, "database", db_keys, &db) < 0
        || get_group(ld, root, "log", log_keys, &log) < 0)
    {
        return -1;
    }

    if (tls == NULL) {
        return fail_at(ld, root, "tls { certificate = ...; key = ...; } is required");
    }
    if (get_str(ld, tls, "tls", "certificate", NULL, &cfg->cf_tls_cert) < 0
        || get_str(ld, tls, "tls", "key", NULL, &cfg->cf_tls_key) < 0
        || get_str(ld, tls, "tls", "ciphers", CFG_DEFAULT_CIPHERS, &cfg->cf_tls_ciphers) < 0)
    {
        return -1;
    }
    if (cfg->cf_tls_cert == NULL || cfg->cf_tls_key == NULL) {
        return fail_at(ld, tls, "tls.certificate and tls.key are required");
    }
    if (check_readable_file(ld, config_setting_get_member(tls, "certificate"),
                            "tls.certificate", cfg->cf_tls_cert) < 0
        || check_readable_file(ld, config_setting_get_member(tls, "key"), "tls.key",
                               cfg->cf_tls_key) < 0)
    {
        return -1;
    }

    cfg->cf_threads = 64;
    cfg->cf_max_header = 16384;
    cfg->cf_request_timeout_ms = 10000;
    cfg->cf_body_timeout_ms = 20000;
    cfg->cf_keep_alive_timeout_ms = 5000;
    cfg->cf_json_max_depth = 64;
    if (get_int32(ld, http, "http", "threads", 2, 1024, &cfg->cf_threads) < 0
        || get_int(ld, http, "http", "max_body", 1024, 64LL << 20, &max_body) < 0
        || get_int32(ld, http, "http", "max_header", 4096, 1 << 20, &cfg->cf_max_header) < 0
        || get_int32(ld, http, "http", "request_timeout", 100, 600000,
                     &cfg->cf_request_timeout_ms) < 0
        || get_int32(ld, http, "http", "body_timeout", 100, 600000, &cfg->cf_body_timeout_ms) < 0
        || get_int32(ld, http, "http", "keep_alive_timeout", 0, 600000,
                     &cfg->cf_keep_alive_timeout_ms) < 0
        || get_int32(ld, http, "http", "json_max_depth", 4, 1000, &cfg->cf_json_max_depth) < 0)
    {
        return -1;
    }
    cfg->cf_max_body = (long)max_body;

    cfg->cf_connect_timeout = 5;
    cfg->cf_query_timeout = 10;
    cfg->cf_writers = 2;
    cfg->cf_max_batch = 512;
    cfg->cf_retry_after = 5;
    if (get_str(ld, db, "database", "conninfo", NULL, &cfg->cf_conninfo) < 0
        || get_int32(ld, db, "database", "connect_timeout", 1, 300, &cfg->cf_connect_timeout) < 0
        || get_int32(ld, db, "database", "query_timeout", 1, 600, &cfg->cf_query_timeout) < 0
        || get_int32(ld, db, "database", "writers", 1, 32, &cfg->cf_writers) < 0
        || get_int32(ld, db, "database", "max_batch", 1, 10000, &cfg->cf_max_batch) < 0
        || get_int32(ld, db, "database", "retry_after", 1, 3600, &cfg->cf_retry_after) < 0)
    {
        return -1;
    }

    cfg->cf_log_level = LOG_LVL_INFO;
    if (get_str(ld, log, "log", "level", "info", &level) < 0) {
        return -1;
    }
    r = log_parse_level(level, &cfg->cf_log_level) ? 0
        : fail_at(ld, config_setting_get_member(log, "level"),
                  "log.level: unrecognized value \"%s\" (debug, info, notice, warning, error)",
                  level);
    free(level);
    if (r < 0) {
        return -1;
    }

    eps = config_setting_get_member(root, "endpoints");
    if (eps == NULL || config_setting_length(eps) == 0) {
        return fail_at(ld, eps ? eps : root, "endpoints = ( { path = ...; secrets = ...; } ) "
                       "must list at least one endpoint");
    }
    if (config_setting_type(eps) != CONFIG_TYPE_LIST) {
        return fail_at(ld, eps, "endpoints must be a list ( { ... }, { ... } )");
    }
    cfg->cf_nendpoints = (size_t)config_setting_length(eps);
    cfg->cf_endpoints = calloc(cfg->cf_nendpoints, sizeof(*cfg->cf_endpoints));
    if (cfg->cf_endpoints == NULL) {
        return fail_at(ld, eps, "out of memory");
    }
    for (size_t i = 0; i < cfg->cf_nendpoints; i++) {
        const config_setting_t *g = config_setting_get_elem(eps, (unsigned)i);

        if (load_endpoint(ld, g, (int)i, &cfg->cf_endpoints[i]) < 0) {
            return -1;
        }
        for (size_t j = 0; j < i; j++) {
            if (strcmp(cfg->cf_endpoints[j].ce_path, cfg->cf_endpoints[i].ce_path) == 0) {
                return fail_at(ld, g, "endpoint path \"%s\" is used twice",
                               cfg->cf_endpoints[i].ce_path);
            }
        }
    }
    if (load_api(ld, root, cfg) < 0 || load_admin(ld, root, cfg) < 0) {
        return -1;
    }
    return load_dispatch(ld, root, cfg);
}


int
cfg_load(const char *file, struct cfg **ret, char *err, size_t errlen)
{
    struct loader ld = {file, err, errlen};
    struct cfg *cfg = calloc(1, sizeof(*cfg));
    config_t lc;
    int result = -1;

    if (cfg == NULL) {
        snprintf(err, errlen, "%s: out of memory", file);
        return -1;
    }
    config_init(&lc);
    if (config_read_file(&lc, file) != CONFIG_TRUE) {
        if (config_error_type(&lc) == CONFIG_ERR_FILE_IO) {
            snprintf(err, errlen, "%s: could not read config file: %s", file,
                     errno ? strerror(errno) : "I/O error");
        } else {
            snprintf(err, errlen, "%s:%d: %s", config_error_file(&lc) ? config_error_file(&lc)
                     : file, config_error_line(&lc), config_error_text(&lc));
        }
        goto out;
    }
    cfg->cf_file = strdup(file);
    if (cfg->cf_file == NULL) {
        snprintf(err, errlen, "%s: out of memory", file);
        goto out;
    }
    if (load_all(&ld, &lc, cfg) < 0) {
        goto out;
    }
    *ret = cfg;
    cfg = NULL;
    result = 0;
out:
    config_destroy(&lc);
    cfg_free(cfg);
    return result;
}


static void
endpoint_free(struct cfg_endpoint *ep)
{
    for (size_t i = 0; i < ep->ce_nsecrets; i++) {
        struct verify_secret *s = &ep->ce_secrets[i];

        OPENSSL_cleanse((void *)s->vs_text, s->vs_text_len);
        free((void *)s->vs_text);
        if (s->vs_key != NULL) {
            OPENSSL_cleanse((void *)s->vs_key, s->vs_key_len);
            free((void *)s->vs_key);
        }
    }
    free(ep->ce_secrets);
    free(ep->ce_path);
    free(ep->ce_token_header);
    free(ep->ce_signature_header);
    free(ep->ce_signature_prefix);
    free(ep->ce_timestamp_header);
    free(ep->ce_delivery_id_header);
}


static void
route_free(struct cfg_route *rt)
{
    if (rt->cr_initialised && rt->cr_plugin->pl_desc->hp_fini != NULL) {
        rt->cr_plugin->pl_desc->hp_fini(rt->cr_state);
    }
    plugin_unload(rt->cr_plugin);
    for (size_t i = 0; i < rt->cr_nevents; i++) {
        free(rt->cr_events[i]);
    }
    free(rt->cr_events);
    for (size_t i = 0; i < rt->cr_nchatbots; i++) {
        free(rt->cr_chatbots[i]);
    }
    free(rt->cr_chatbots);
    for (size_t i = 0; i < rt->cr_nconds; i++) {
        free(rt->cr_conds[i].cc_field);
        free(rt->cr_conds[i].cc_value);
        if (rt->cr_conds[i].cc_has_regex) {
            regfree(&rt->cr_conds[i].cc_regex);
        }
    }
    free(rt->cr_conds);
    json_object_put(rt->cr_options);
    free(rt->cr_name);
    free(rt->cr_handler);
}


void
cfg_free(struct cfg *cfg)
{
    if (cfg == NULL) {
        return;
    }
    for (size_t i = 0; i < cfg->cf_nroutes; i++) {
        route_free(&cfg->cf_routes[i]);
    }
    free(cfg->cf_routes);
    free(cfg->cf_plugin_dir);
    if (cfg->cf_api_key != NULL) {
        OPENSSL_cleanse(cfg->cf_api_key, strlen(cfg->cf_api_key));
        free(cfg->cf_api_key);
    }
    if (cfg->cf_admin_token != NULL) {
        OPENSSL_cleanse(cfg->cf_admin_token, strlen(cfg->cf_admin_token));
        free(cfg->cf_admin_token);
    }
    free(cfg->cf_admin_listen);
    free(cfg->cf_api_base_url);
    free(cfg->cf_api_cacert);
    free(cfg->cf_api_agent_name);
    for (size_t i = 0; i < cfg->cf_nendpoints; i++) {
        endpoint_free(&cfg->cf_endpoints[i]);
    }
    free(cfg->cf_endpoints);
    for (size_t i = 0; i < cfg->cf_nlisten && cfg->cf_listen != NULL; i++) {
        free(cfg->cf_listen[i]);
    }
    free(cfg->cf_listen);
    free(cfg->cf_tls_cert);
    free(cfg->cf_tls_key);
    free(cfg->cf_tls_ciphers);
    if (cfg->cf_conninfo != NULL) {
        OPENSSL_cleanse(cfg->cf_conninfo, strlen(cfg->cf_conninfo));
        free(cfg->cf_conninfo);
    }
    free(cfg->cf_file);
    free(cfg);
}


const struct cfg_route *
cfg_find_route(const struct cfg *cfg, const char *name)
{
    for (size_t i = 0; i < cfg->cf_nroutes; i++) {
        if (strcmp(cfg->cf_routes[i].cr_name, name) == 0) {
            return &cfg->cf_routes[i];
        }
    }
    return NULL;
}


struct cfg_holder {
    pthread_mutex_t ch_lock;
    struct cfg *ch_cfg;
    /* References per configuration; the current one holds one of its own. */
    struct cfg_ref {
        struct cfg *cr_cfg;
        int cr_refs;
        struct cfg_ref *cr_next;
    } *ch_refs;
};


static struct cfg_ref *
holder_ref(struct cfg_holder *h, const struct cfg *cfg)
{
    for (struct cfg_ref *r = h->ch_refs; r != NULL; r = r->cr_next) {
        if (r->cr_cfg == cfg) {
            return r;
        }
    }
    return NULL;
}


struct cfg_holder *
cfg_holder_new(struct cfg *cfg)
{
    struct cfg_holder *h = calloc(1, sizeof(*h));

    if (h == NULL || (h->ch_refs = calloc(1, sizeof(*h->ch_refs))) == NULL) {
        free(h);
        cfg_free(cfg);
        return NULL;
    }
    pthread_mutex_init(&h->ch_lock, NULL);
    h->ch_cfg = cfg;
    h->ch_refs->cr_cfg = cfg;
    h->ch_refs->cr_refs = 1;
    return h;
}


const struct cfg *
cfg_get(struct cfg_holder *h)
{
    struct cfg *cfg;

    pthread_mutex_lock(&h->ch_lock);
    cfg = h->ch_cfg;
    holder_ref(h, cfg)->cr_refs++;
    pthread_mutex_unlock(&h->ch_lock);
    return cfg;
}


/* Drops one reference of cfg; frees it (outside the lock) at zero. */
void
cfg_put(struct cfg_holder *h, const struct cfg *cfg)
{
    struct cfg_ref **pp;
    struct cfg_ref *gone = NULL;

    pthread_mutex_lock(&h->ch_lock);
    for (pp = &h->ch_refs; *pp != NULL; pp = &(*pp)->cr_next) {
        if ((*pp)->cr_cfg == cfg) {
            if (--(*pp)->cr_refs == 0) {
                gone = *pp;
                *pp = gone->cr_next;
            }
            break;
        }
    }
    pthread_mutex_unlock(&h->ch_lock);
    if (gone != NULL) {
        cfg_free(gone->cr_cfg);
        free(gone);
    }
}


bool
cfg_holder_swap(struct cfg_holder *h, struct cfg *new_cfg)
{
    struct cfg_ref *r = calloc(1, sizeof(*r));
    struct cfg *old;

    if (r == NULL) {
        cfg_free(new_cfg);
        return false;
    }
    r->cr_cfg = new_cfg;
    r->cr_refs = 1;
    pthread_mutex_lock(&h->ch_lock);
    old = h->ch_cfg;
    r->cr_next = h->ch_refs;
    h->ch_refs = r;
    h->ch_cfg = new_cfg;
    pthread_mutex_unlock(&h->ch_lock);
    cfg_put(h, old);
    return true;
}


void
cfg_holder_free(struct cfg_holder *h)
{
    if (h == NULL) {
        return;
    }
    cfg_put(h, h->ch_cfg);
    /* Every other reference was given back before this. */
    while (h->ch_refs != NULL) {
        struct cfg_ref *r = h->ch_refs;

        h->ch_refs = r->cr_next;
        cfg_free(r->cr_cfg);
        free(r);
    }
    pthread_mutex_destroy(&h->ch_lock);
    free(h);
}


const struct cfg_endpoint *
cfg_find_endpoint(const struct cfg *cfg, const char *path)
{
    for (size_t i = 0; i < cfg->cf_nendpoints; i++) {
        if (strcmp(cfg->cf_endpoints[i].ce_path, path) == 0) {
            return &cfg->cf_endpoints[i];
        }
    }
    return NULL;
}


const char *
cfg_conninfo(const struct cfg *cfg)
{
    const char *env = getenv("HOOKD_DATABASE_URL");

    if (cfg->cf_conninfo != NULL && *cfg->cf_conninfo != '\0') {
        return cfg->cf_conninfo;
    }
    return env != NULL ? env : "";
}


static bool
str_differs(const char *a, const char *b)
{
    if (a == NULL || b == NULL) {
        return a != b;
    }
    return strcmp(a, b) != 0;
}


static void
note_change(char *buf, size_t cap, const char *name)
{
    size_t n = strlen(buf);

    snprintf(buf + n, cap - n, "%s%s", n ? "," : "", name);
}


const char *
cfg_restart_changes(const struct cfg *old, const struct cfg *new_cfg, char *buf, size_t cap)
{
    bool listen_changed = old->cf_nlisten != new_cfg->cf_nlisten;

    buf[0] = '\0';
    for (size_t i = 0; !listen_changed && i < old->cf_nlisten; i++) {
        listen_changed = str_differs(old->cf_listen[i], new_cfg->cf_listen[i]);
    }
    if (listen_changed) {
        note_change(buf, cap, "listen");
    }
    /* The certificate and key reload; the cipher list does not. */
    if (str_differs(old->cf_tls_ciphers, new_cfg->cf_tls_ciphers)) {
        note_change(buf, cap, "tls.ciphers");
    }
    if (str_differs(old->cf_admin_listen, new_cfg->cf_admin_listen)
        || str_differs(old->cf_admin_token, new_cfg->cf_admin_token))
    {
        note_change(buf, cap, "admin");
    }
    if (str_differs(old->cf_api_base_url, new_cfg->cf_api_base_url)
        || str_differs(old->cf_api_key, new_cfg->cf_api_key)
        || old->cf_api_rate_limit != new_cfg->cf_api_rate_limit
        || old->cf_api_timeout_ms != new_cfg->cf_api_timeout_ms)
    {
        note_change(buf, cap, "api");
    }
    if (old->cf_workers != new_cfg->cf_workers || old->cf_lease_s != new_cfg->cf_lease_s
        || old->cf_poll_interval_ms != new_cfg->cf_poll_interval_ms)
    {
        note_change(buf, cap, "dispatch.workers/lease/poll_interval");
    }
    if (old->cf_threads != new_cfg->cf_threads || old->cf_max_header != new_cfg->cf_max_header
        || old->cf_request_timeout_ms != new_cfg->cf_request_timeout_ms
        || old->cf_keep_alive_timeout_ms != new_cfg->cf_keep_alive_timeout_ms)
    {
        note_change(buf, cap, "http.threads/max_header/request_timeout/keep_alive_timeout");
    }
    if (str_differs(old->cf_conninfo, new_cfg->cf_conninfo)
        || old->cf_writers != new_cfg->cf_writers
        || old->cf_connect_timeout != new_cfg->cf_connect_timeout
        || old->cf_query_timeout != new_cfg->cf_query_timeout
        || old->cf_max_batch != new_cfg->cf_max_batch)
    {
        note_change(buf, cap, "database");
    }
    return buf;
}
