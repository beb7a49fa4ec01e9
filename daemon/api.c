/* SPDX-License-Identifier: MIT */
#include "api.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <openssl/crypto.h>

#include "cfg.h"
#include "clock.h"
#include "retry_after.h"

/* Longest the limiter lets a call wait before answering "retry later". */
#define API_LIMIT_MAX_WAIT_MS 5000
/* Most bytes of an answer read; the envelope is small. */
#define API_MAX_ANSWER (1 << 20)

struct api {
    char *a_base;
    char *a_auth;                   /* "Authorization: Bearer <key>"; wiped on free */
    char *a_cacert;
    char *a_agent;
    long a_connect_timeout_ms;
    long a_timeout_ms;
    int a_max_retry_after;
    int a_not_found_grace;

    /* The limiter: when each of the last a_limit requests went out. */
    pthread_mutex_t a_lock;
    long long *a_sent_at;           /* ring of monotonic ms */
    int a_limit;
    int a_head;
    int a_count;
    long long a_window_ms;

    atomic_uint_fast64_t a_sent;
    atomic_uint_fast64_t a_by_status[API_NSTATUS];
    atomic_uint_fast64_t a_limited;
    pthread_key_t a_curl_key;       /* each thread's CURL handle */
};

struct answer {
    char *an_data;
    size_t an_len;
    char an_retry_after[64];
};

static pthread_once_t api_curl_once = PTHREAD_ONCE_INIT;


static void
api_curl_init(void)
{
    (void)curl_global_init(CURL_GLOBAL_DEFAULT);
}


static void
free_curl(void *handle)
{
    curl_easy_cleanup(handle);
}


int
api_new(const struct cfg *cfg, struct api **ret, char *err, size_t errlen)
{
    struct api *api;

    *ret = NULL;
    if (cfg->cf_api_key == NULL) {
        return 0;
    }
    pthread_once(&api_curl_once, api_curl_init);
    api = calloc(1, sizeof(*api));
    if (api == NULL
        || (api->a_sent_at = calloc((size_t)cfg->cf_api_rate_limit, sizeof(long long))) == NULL
        || asprintf(&api->a_auth, "Authorization: Bearer %s", cfg->cf_api_key) < 0
        || (api->a_base = strdup(cfg->cf_api_base_url)) == NULL
        || (api->a_agent = strdup(cfg->cf_api_agent_name)) == NULL
        || (cfg->cf_api_cacert != NULL && (api->a_cacert = strdup(cfg->cf_api_cacert)) == NULL))
    {
        api_free(api);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    /* A trailing slash would double up with the paths' leading one. */
    while (strlen(api->a_base) > 8 && api->a_base[strlen(api->a_base) - 1] == '/') {
        api->a_base[strlen(api->a_base) - 1] = '\0';
    }
    api->a_connect_timeout_ms = cfg->cf_api_connect_timeout_ms;
    api->a_timeout_ms = cfg->cf_api_timeout_ms;
    api->a_max_retry_after = cfg->cf_api_max_retry_after_s;
    api->a_not_found_grace = cfg->cf_api_not_found_grace_s;
    api->a_limit = cfg->cf_api_rate_limit;
    api->a_window_ms = (long long)cfg->cf_api_rate_window_s * 1000;
    pthread_mutex_init(&api->a_lock, NULL);
    pthread_key_create(&api->a_curl_key, free_curl);
    *ret = api;
    return 0;
}


void
api_free(struct api *api)
{
    if (api == NULL) {
        return;
    }
    if (api->a_auth != NULL) {
        OPENSSL_cleanse(api->a_auth, strlen(api->a_auth));
        free(api->a_auth);
    }
    if (api->a_sent_at != NULL) {
        CURL *mine = pthread_getspecific(api->a_curl_key);

        curl_easy_cleanup(mine);
        pthread_setspecific(api->a_curl_key, NULL);
        pthread_key_delete(api->a_curl_key);
        pthread_mutex_destroy(&api->a_lock);
    }
    free(api->a_sent_at);
    free(api->a_base);
    free(api->a_cacert);
    free(api->a_agent);
    free(api);
}


const char *
api_default_agent(const struct api *api)
{
    return api->a_agent;
}


void
api_status_counts(struct api *api, uint64_t ret[API_NSTATUS])
{
    for (int i = 0; i < API_NSTATUS; i++) {
        ret[i] = atomic_load(&api->a_by_status[i]);
    }
}


/* Counts an answer (status 0: none came) in its class. */
static void
count_status(struct api *api, long status)
{
    int i = status >= 200 && status < 300 ? 0 : status == 429 ? 1
            : status >= 400 && status < 500 ? 2 : status >= 500 ? 3 : 4;

    atomic_fetch_add(&api->a_by_status[i], 1);
}


void
api_counters(struct api *api, uint64_t *ret_sent, uint64_t *ret_limited)
{
    *ret_sent = atomic_load(&api->a_sent);
    *ret_limited = atomic_load(&api->a_limited);
}


/*
 * Takes a slot in the sliding window, waiting up to API_LIMIT_MAX_WAIT_MS.
 * Returns 0, or the milliseconds until a slot frees when that is longer.
 */
static long long
limiter_take(struct api *api)
{
    long long waited = 0;

    for (;;) {
        long long now = clock_mono_ms();
        long long wait;

        pthread_mutex_lock(&api->a_lock);
        if (api->a_count < api->a_limit) {
            api->a_sent_at[(api->a_head + api->a_count) % api->a_limit] = now;
            api->a_count++;
            pthread_mutex_unlock(&api->a_lock);
            return 0;
        }
        wait = api->a_sent_at[api->a_head] + api->a_window_ms - now;
        if (wait <= 0) {
            /* The oldest request has left the window: its slot is ours. */
            api->a_sent_at[api->a_head] = now;
            api->a_head = (api->a_head + 1) % api->a_limit;
            pthread_mutex_unlock(&api->a_lock);
            return 0;
        }
        pthread_mutex_unlock(&api->a_lock);
        if (waited == 0) {
            atomic_fetch_add(&api->a_limited, 1);
        }
        if (waited + wait > API_LIMIT_MAX_WAIT_MS) {
            return wait;
        }
        usleep((useconds_t)(wait > 50 ? 50 : wait) * 1000);
        waited += wait > 50 ? 50 : wait;
    }
}


static size_t
collect(char *ptr, size_t size, size_t nmemb, void *userdata)
{
    struct answer *a = userdata;
    size_t n = size * nmemb;
    char *grown;

    if (a->an_len + n > API_MAX_ANSWER) {
        return 0;
    }
    grown = realloc(a->an_data, a->an_len + n + 1);
    if (grown == NULL) {
        return 0;
    }
    a->an_data = grown;
    memcpy(a->an_data + a->an_len, ptr, n);
    a->an_len += n;
    a->an_data[a->an_len] = '\0';
    return n;
}


static size_t
header_seen(char *line, size_t size, size_t nmemb, void *userdata)
{
    struct answer *a = userdata;
    size_t n = size * nmemb;

    if (n > 12 && strncasecmp(line, "Retry-After:", 12) == 0) {
        size_t v = n - 12;

        if (v >= sizeof(a->an_retry_after)) {
            v = sizeof(a->an_retry_after) - 1;
        }
        memcpy(a->an_retry_after, line + 12, v);
        a->an_retry_after[v] = '\0';
        a->an_retry_after[strcspn(a->an_retry_after, "\r\n")] = '\0';
    }
    return n;
}


void
api_path_segment(const char *in, char *out, size_t cap)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t o = 0;

    for (; *in != '\0' && o + 4 < cap; in++) {
        unsigned char c = (unsigned char)*in;

        /* Dots too: "." or ".." would be dot segments that clients collapse. */
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')
            || c == '-' || c == '_' || c == '~')
        {
            out[o++] = (char)c;
        } else {
            out[o++] = '%';
            out[o++] = hex[c >> 4];
            out[o++] = hex[c & 15];
        }
    }
    out[o] = '\0';
}


/* The platform's words for a failure: message, error names, field errors. */
static void
envelope_reason(json_object *env, int status, char *out, size_t cap)
{
    json_object *v;
    size_t n;

    n = (size_t)snprintf(out, cap, "HTTP %d", status);
    if (env == NULL) {
        return;
    }
    if (json_object_object_get_ex(env, "message", &v) && json_object_is_type(v, json_type_string)
        && n < cap)
    {
        n += (size_t)snprintf(out + n, cap - n, ": %s", json_object_get_string(v));
    }
    if (json_object_object_get_ex(env, "errors", &v) && json_object_is_type(v, json_type_array)) {
        for (size_t i = 0; i < json_object_array_length(v) && i < 3 && n < cap; i++) {
            json_object *e = json_object_array_get_idx(v, i);
            json_object *path, *msg;

            if (json_object_object_get_ex(e, "path", &path)
                && json_object_object_get_ex(e, "message", &msg))
            {
                n += (size_t)snprintf(out + n, cap - n, "; %s: %s",
                                      json_object_to_json_string_ext(path,
                                                                     JSON_C_TO_STRING_PLAIN),
                                      json_object_get_string(msg));
            }
        }
    }
    /* One line, whatever the platform sent. */
    for (char *p = out; *p != '\0'; p++) {
        if (*p == '\n' || *p == '\r') {
            *p = ' ';
        }
    }
}


/* True when the answer names the monthly quota (it does not clear by waiting). */
static bool
quota_spent(const struct answer *a)
{
    return a->an_data != NULL && strstr(a->an_data, "MESSAGES_LIMIT_REACHED") != NULL;
}


/* The wait the platform asked for: Retry-After, else the body's retryAfter. */
static int
platform_wait(const struct api *api, const struct answer *a, json_object *env)
{
    int wait = retry_after_parse(a->an_retry_after, (long long)time(NULL),
                                 api->a_max_retry_after);
    json_object *v;

    if (wait < 0 && env != NULL && json_object_object_get_ex(env, "retryAfter", &v)
        && json_object_is_type(v, json_type_int))
    {
        long long body_wait = json_object_get_int64(v);

        wait = body_wait < 0 ? -1 : body_wait > api->a_max_retry_after
               ? api->a_max_retry_after : (int)body_wait;
    }
    return wait < 0 ? 0 : wait;
}


static void
classify(const struct api *api, long status, const struct answer *a, int64_t event_us,
         struct hookd_api_result *res)
{
    json_object *env = a->an_data ? json_tokener_parse(a->an_data) : NULL;
    json_object *v;

    if (env != NULL && !json_object_is_type(env, json_type_object)) {
        json_object_put(env);
        env = NULL;
    }
    res->har_status = (int)status;
    envelope_reason(env, (int)status, res->har_reason, sizeof(res->har_reason));
    if (status >= 200 && status < 300) {
        bool ok = env == NULL || !json_object_object_get_ex(env, "success", &v)
                  || json_object_get_boolean(v);

        res->har_outcome = ok ? HOOKD_DONE : HOOKD_FAIL;
        if (ok && env != NULL && json_object_object_get_ex(env, "data", &v)) {
            res->har_data = json_object_get(v);
        }
    } else if (status == 429 && quota_spent(a)) {
        res->har_outcome = HOOKD_FAIL;
        snprintf(res->har_reason, sizeof(res->har_reason),
                 "HTTP 429: monthly message quota reached (MESSAGES_LIMIT_REACHED)");
    } else if (status == 429) {
        res->har_outcome = HOOKD_RETRY;
        res->har_retry_after = platform_wait(api, a, env);
    } else if (status >= 500) {
        res->har_outcome = HOOKD_RETRY;
    } else if (status == 404 && event_us > 0
               && clock_wall_us() - event_us < (int64_t)api->a_not_found_grace * 1000000)
    {
        /* A thread only just created may not be readable yet (case C20). */
        res->har_outcome = HOOKD_RETRY;
    } else {
        res->har_outcome = HOOKD_FAIL;
    }
    json_object_put(env);
}


bool
api_call(struct api *api, const char *method, const char *path, const char *body,
         int64_t event_received_us, struct hookd_api_result *res)
{
    CURL *curl = pthread_getspecific(api->a_curl_key);
    struct curl_slist *headers = NULL;
    struct answer a;
    char url[2048];
    long status = 0;
    long long wait;
    CURLcode rc;

    memset(res, 0, sizeof(*res));
    memset(&a, 0, sizeof(a));
    wait = limiter_take(api);
    if (wait > 0) {
        res->har_outcome = HOOKD_RETRY;
        res->har_retry_after = (int)((wait + 999) / 1000);
        snprintf(res->har_reason, sizeof(res->har_reason),
                 "held back by hookd's rate limiter for %lld ms", wait);
        return false;
    }
    if (curl == NULL) {
        curl = curl_easy_init();
        if (curl == NULL) {
            res->har_outcome = HOOKD_RETRY;
            snprintf(res->har_reason, sizeof(res->har_reason), "could not start libcurl");
            return false;
        }
        pthread_setspecific(api->a_curl_key, curl);
    }
    curl_easy_reset(curl);
    snprintf(url, sizeof(url), "%s%s", api->a_base, path);
    headers = curl_slist_append(headers, api->a_auth);
    headers = curl_slist_append(headers, "Accept: application/json");
    if (body != NULL) {
        headers = curl_slist_append(headers, "Content-Type: application/json");
        curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body);
    }
    curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(curl, CURLOPT_URL, url);
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "https");
    curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, api->a_connect_timeout_ms);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, api->a_timeout_ms);
    curl_easy_setopt(curl, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(curl, CURLOPT_SSL_VERIFYHOST, 2L);
    curl_easy_setopt(curl, CURLOPT_USERAGENT, "hookd");
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, &a);
    curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, header_seen);
    curl_easy_setopt(curl, CURLOPT_HEADERDATA, &a);
    if (api->a_cacert != NULL) {
        curl_easy_setopt(curl, CURLOPT_CAINFO, api->a_cacert);
    }
    atomic_fetch_add(&api->a_sent, 1);
    rc = curl_easy_perform(curl);
    /* The header list holds the key: it is wiped, not just freed. */
    for (struct curl_slist *h = headers; h != NULL; h = h->next) {
        OPENSSL_cleanse(h->data, strlen(h->data));
    }
    curl_slist_free_all(headers);
    if (rc != CURLE_OK) {
        res->har_outcome = HOOKD_RETRY;
        snprintf(res->har_reason, sizeof(res->har_reason), "no answer: %s",
                 curl_easy_strerror(rc));
        free(a.an_data);
        count_status(api, 0);
        return true;
    }
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
    count_status(api, status);
    classify(api, status, &a, event_received_us, res);
    free(a.an_data);
    return true;
}


/* The path of a thread's resource: /v1/chatting/{chatbot}/thread/{thread}{tail}. */
static void
thread_path(char *out, size_t cap, const char *chatbot, const char *thread, const char *tail)
{
    char cb[API_SEGMENT_MAX], th[API_SEGMENT_MAX];

    api_path_segment(chatbot, cb, sizeof(cb));
    api_path_segment(thread, th, sizeof(th));
    snprintf(out, cap, "/v1/chatting/%s/thread/%s%s", cb, th, tail);
}


static char *
body_text(json_object *body)
{
    char *text = strdup(json_object_to_json_string_ext(body, JSON_C_TO_STRING_PLAIN
                                                       | JSON_C_TO_STRING_NOSLASHESCAPE));

    json_object_put(body);
    return text;
}


void
api_request_message(struct api_request *r, const char *chatbot, const char *thread,
                    const char *text, const char *agent_name, const char *icon_url)
{
    json_object *body = json_object_new_object();

    r->ar_method = "POST";
    thread_path(r->ar_path, sizeof(r->ar_path), chatbot, thread, "/message");
    json_object_object_add(body, "message", json_object_new_string(text));
    json_object_object_add(body, "from", json_object_new_string("AGENT"));
    json_object_object_add(body, "agentName", json_object_new_string(agent_name));
    if (icon_url != NULL) {
        json_object_object_add(body, "iconUrl", json_object_new_string(icon_url));
    }
    r->ar_body = body_text(body);
}


void
api_request_escalate(struct api_request *r, const char *chatbot, const char *thread,
                     const char *prompt)
{
    json_object *body = json_object_new_object();

    r->ar_method = "POST";
    thread_path(r->ar_path, sizeof(r->ar_path), chatbot, thread, "/escalate");
    json_object_object_add(body, "escalationPrompt",
                           json_object_new_string(prompt ? prompt : "Escalated by hookd"));
    r->ar_body = body_text(body);
}


void
api_request_update_thread(struct api_request *r, const char *chatbot, json_object *fields)
{
    char cb[API_SEGMENT_MAX];

    r->ar_method = "PATCH";
    api_path_segment(chatbot, cb, sizeof(cb));
    snprintf(r->ar_path, sizeof(r->ar_path), "/v1/chatting/%s/thread/update-thread", cb);
    r->ar_body = body_text(json_object_get(fields));
}


void
api_request_messages(struct api_request *r, const char *chatbot, const char *thread)
{
    r->ar_method = "GET";
    thread_path(r->ar_path, sizeof(r->ar_path), chatbot, thread, "/messages");
    r->ar_body = NULL;
}


void
api_request_clear(struct api_request *r)
{
    free(r->ar_body);
    r->ar_body = NULL;
}


bool
api_send(struct api *api, const struct api_request *r, int64_t event_received_us,
         struct hookd_api_result *res)
{
    return api_call(api, r->ar_method, r->ar_path, r->ar_body, event_received_us, res);
}
