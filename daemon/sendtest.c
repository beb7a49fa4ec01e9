/* SPDX-License-Identifier: MIT */
#include "sendtest.h"

#include <errno.h>
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>
#include <json-c/json.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "cfg.h"
#include "codec.h"
#include "embedded.h"
#include "verify.h"

#define SENDTEST_MAX_FILE (16 << 20)
#define SENDTEST_MAX_ANSWER 4096

static const char sendtest_usage[] =
    "usage: hookd send-test [--config FILE [--endpoint PATH]] [--url URL]\n"
    "                       [--secret TEXT | --secret-file FILE]\n"
    "                       [--cacert FILE | --insecure] [--file JSON]... [--fresh]\n"
    "\n"
    "Signs and POSTs sample ContextGPT events (every built-in sample, or the\n"
    "files given) and prints one line per answer. With --config, the URL, the\n"
    "secret and the signing settings come from that file's endpoint, and its\n"
    "TLS certificate is trusted (right for the self-signed one of `make run`).\n"
    "\n"
    "  -c, --config FILE       take URL, secret and scheme from this config\n"
    "  -e, --endpoint PATH     which endpoint of the config (default: the first)\n"
    "  -u, --url URL           where to send (overrides the config's)\n"
    "  -s, --secret TEXT       the secret (visible in `ps`; prefer --secret-file)\n"
    "  -S, --secret-file FILE  read the secret from FILE\n"
    "      --standard          sign as Standard Webhooks (without --config)\n"
    "      --cacert FILE       trust this CA certificate (PEM)\n"
    "  -k, --insecure          do not check the server's certificate\n"
    "  -f, --file JSON         send this file instead of the samples (repeatable)\n"
    "      --fresh             set data.createdAt to now and a new data.messageId,\n"
    "                          so a second run stores new events, not duplicates\n"
    "  -h, --help              show this help\n"
    "\n"
    "Exit status: 0 when every answer is 2xx, 1 otherwise, 2 on usage errors.\n";

struct sendtest {
    const char *url;
    char url_buf[512];
    const char *cacert;
    char cacert_buf[4096];
    bool insecure;
    bool fresh;
    struct verify_policy policy;   /* how to sign */
    char *secret;                  /* owned, wiped */
    unsigned char key[256];        /* standard scheme key */
    size_t key_len;
};

struct answer {
    char data[SENDTEST_MAX_ANSWER];
    size_t len;
};


static size_t
collect(char *ptr, size_t size, size_t nmemb, void *userdata)
{
    struct answer *a = userdata;
    size_t n = size * nmemb;
    size_t room = sizeof(a->data) - 1 - a->len;
    size_t take = n < room ? n : room;

    memcpy(a->data + a->len, ptr, take);
    a->len += take;
    a->data[a->len] = '\0';
    return n;
}


static int
read_file(const char *path, char **ret, size_t *ret_len)
{
    FILE *f = fopen(path, "rb");
    char *buf;
    size_t n;

    if (f == NULL) {
        fprintf(stderr, "hookd: could not open \"%s\": %s\n", path, strerror(errno));
        return -1;
    }
    buf = malloc(SENDTEST_MAX_FILE + 1);
    if (buf == NULL) {
        fclose(f);
        return -1;
    }
    n = fread(buf, 1, SENDTEST_MAX_FILE + 1, f);
    fclose(f);
    if (n > SENDTEST_MAX_FILE) {
        fprintf(stderr, "hookd: \"%s\" is larger than %d bytes\n", path, SENDTEST_MAX_FILE);
        free(buf);
        return -1;
    }
    buf[n] = '\0';
    *ret = buf;
    *ret_len = n;
    return 0;
}


/* Rewrites body with data.createdAt = now and a new data.messageId. */
static char *
freshen(const char *body, size_t len, size_t *ret_len)
{
    json_object *root = json_tokener_parse(body);
    json_object *data;
    char when[96];
    char id[24];
    struct timespec ts;
    struct tm tm;
    unsigned char rnd[8];
    char *out = NULL;

    (void)len;
    if (root == NULL || !json_object_object_get_ex(root, "data", &data)
        || !json_object_is_type(data, json_type_object))
    {
        json_object_put(root);
        return NULL;
    }
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    snprintf(when, sizeof(when), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000);
    json_object_object_add(data, "createdAt", json_object_new_string(when));
    if (json_object_object_get_ex(data, "messageId", NULL)) {
        unsigned long long v = 0;

        (void)RAND_bytes(rnd, sizeof(rnd));
        memcpy(&v, rnd, sizeof(v));
        snprintf(id, sizeof(id), "%llu", v % 900000000000000000ULL + 100000000000000000ULL);
        json_object_object_add(data, "messageId", json_object_new_string(id));
    }
    out = strdup(json_object_to_json_string_ext(root, JSON_C_TO_STRING_PLAIN
                                                | JSON_C_TO_STRING_NOSLASHESCAPE));
    json_object_put(root);
    if (out != NULL) {
        *ret_len = strlen(out);
    }
    return out;
}


static struct curl_slist *
add_header(struct curl_slist *list, const char *name, const char *value)
{
    char line[1024];

    snprintf(line, sizeof(line), "%s: %s", name, value);
    return curl_slist_append(list, line);
}


/* The signing headers for body, as the endpoint's policy verifies them. */
static struct curl_slist *
sign(const struct sendtest *t, const char *body, size_t len, struct curl_slist *h)
{
    const struct verify_policy *p = &t->policy;
    unsigned char mac[VERIFY_MAC_LEN];
    char text[2 * VERIFY_MAC_LEN + 16];
    char ts[24];
    const void *parts[5];
    size_t lens[5];
    size_t n = 0;

    snprintf(ts, sizeof(ts), "%lld", (long long)time(NULL));
    if (p->vp_scheme == VERIFY_SCHEME_STANDARD) {
        unsigned char rnd[12];
        char id[40] = "msg_";
        char sig[64] = "v1,";

        (void)RAND_bytes(rnd, sizeof(rnd));
        codec_hex_encode(rnd, sizeof(rnd), id + 4);
        parts[0] = id;
        lens[0] = strlen(id);
        parts[1] = ".";
        lens[1] = 1;
        parts[2] = ts;
        lens[2] = strlen(ts);
        parts[3] = ".";
        lens[3] = 1;
        parts[4] = body;
        lens[4] = len;
        verify_hmac_sha256(t->key, t->key_len, parts, lens, 5, mac);
        codec_base64_encode(mac, sizeof(mac), sig + 3);
        h = add_header(h, "webhook-id", id);
        h = add_header(h, "webhook-timestamp", ts);
        return add_header(h, "webhook-signature", sig);
    }
    if (p->vp_timestamp_header != NULL && *p->vp_timestamp_header != '\0') {
        parts[n] = ts;
        lens[n++] = strlen(ts);
        parts[n] = ".";
        lens[n++] = 1;
        h = add_header(h, p->vp_timestamp_header, ts);
    }
    parts[n] = body;
    lens[n++] = len;
    verify_hmac_sha256((const unsigned char *)t->secret, strlen(t->secret), parts, lens, n, mac);
    if (p->vp_encoding == VERIFY_ENCODING_BASE64) {
        codec_base64_encode(mac, sizeof(mac), text);
    } else {
        codec_hex_encode(mac, sizeof(mac), text);
    }
    if (p->vp_require != VERIFY_REQUIRE_TOKEN) {
        h = add_header(h, p->vp_signature_header, text);
    }
    if (p->vp_require != VERIFY_REQUIRE_SIGNATURE) {
        h = add_header(h, p->vp_token_header, t->secret);
    }
    return h;
}


/* Sends one body; prints "NAME -> STATUS ANSWER". Returns true on 2xx. */
static bool
send_one(CURL *curl, const struct sendtest *t, const char *name, const char *body, size_t len)
{
    struct curl_slist *headers = NULL;
    struct answer a = {{0}, 0};
    long status = 0;
    CURLcode rc;

    headers = curl_slist_append(headers, "Content-Type: application/json");
    headers = curl_slist_append(headers, "Expect:");
    headers = sign(t, body, len, headers);
    curl_easy_setopt(curl, CURLOPT_URL, t->url);
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, &a);
    rc = curl_easy_perform(curl);
    curl_slist_free_all(headers);
    if (rc != CURLE_OK) {
        printf("%s -> error: %s\n", name, curl_easy_strerror(rc));
        return false;
    }
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
    while (a.len > 0 && (a.data[a.len - 1] == '\n' || a.data[a.len - 1] == '\r')) {
        a.data[--a.len] = '\0';
    }
    printf("%s -> %ld %s\n", name, status, a.data);
    return status >= 200 && status < 300;
}


/* Fills t from the config's endpoint: URL, secret and signing policy. */
static int
from_config(struct sendtest *t, const char *file, const char *path)
{
    struct cfg *cfg;
    const struct cfg_endpoint *ep;
    char err[CFG_ERR_MAX];
    const char *listen;
    const char *colon;
    char host[256];

    if (cfg_load(file, &cfg, err, sizeof(err)) < 0) {
        fprintf(stderr, "hookd: %s\n", err);
        return -1;
    }
    ep = path ? cfg_find_endpoint(cfg, path) : &cfg->cf_endpoints[0];
    if (ep == NULL) {
        fprintf(stderr, "hookd: no endpoint \"%s\" in %s\n", path, file);
        cfg_free(cfg);
        return -1;
    }
    listen = cfg->cf_listen[0];
    colon = strrchr(listen, ':');
    snprintf(host, sizeof(host), "%.*s", (int)(colon - listen), listen);
    if (strcmp(host, "0.0.0.0") == 0 || strcmp(host, "*") == 0) {
        snprintf(host, sizeof(host), "127.0.0.1");
    } else if (strcmp(host, "[::]") == 0) {
        snprintf(host, sizeof(host), "[::1]");
    }
    snprintf(t->url_buf, sizeof(t->url_buf), "https://%s%s%s", host, colon, ep->ce_path);
    if (t->url == NULL) {
        t->url = t->url_buf;
    }
    if (t->cacert == NULL && !t->insecure) {
        snprintf(t->cacert_buf, sizeof(t->cacert_buf), "%s", cfg->cf_tls_cert);
        t->cacert = t->cacert_buf;
    }
    if (t->secret == NULL) {
        t->secret = strdup(ep->ce_secrets[0].vs_text);
    }
    t->policy = ep->ce_policy;
    t->policy.vp_token_header = strdup(ep->ce_token_header);
    t->policy.vp_signature_header = strdup(ep->ce_signature_header);
    t->policy.vp_timestamp_header = strdup(ep->ce_timestamp_header);
    t->policy.vp_signature_prefix = "";
    t->policy.vp_secrets = NULL;
    t->policy.vp_nsecrets = 0;
    cfg_free(cfg);
    return 0;
}


static int
parse_args(int argc, char **argv, struct sendtest *t, const char **files, int *nfiles)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"endpoint", required_argument, NULL, 'e'},
        {"url", required_argument, NULL, 'u'},
        {"secret", required_argument, NULL, 's'},
        {"secret-file", required_argument, NULL, 'S'},
        {"standard", no_argument, NULL, 'W'},
        {"cacert", required_argument, NULL, 'C'},
        {"insecure", no_argument, NULL, 'k'},
        {"file", required_argument, NULL, 'f'},
        {"fresh", no_argument, NULL, 'F'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0}
    };
    const char *config = NULL;
    const char *endpoint = NULL;
    const char *secret_file = NULL;
    bool standard = false;
    int c;

    optind = 1;
    while ((c = getopt_long(argc, argv, "c:e:u:s:S:kf:h", opts, NULL)) != -1) {
        switch (c) {
        case 'c':
            config = optarg;
            break;
        case 'e':
            endpoint = optarg;
            break;
        case 'u':
            t->url = optarg;
            break;
        case 's':
            free(t->secret);
            t->secret = strdup(optarg);
            break;
        case 'S':
            secret_file = optarg;
            break;
        case 'W':
            standard = true;
            break;
        case 'C':
            t->cacert = optarg;
            break;
        case 'k':
            t->insecure = true;
            break;
        case 'f':
            if (*nfiles < 64) {
                files[(*nfiles)++] = optarg;
            }
            break;
        case 'F':
            t->fresh = true;
            break;
        case 'h':
            fputs(sendtest_usage, stdout);
            exit(0);
        default:
            fputs(sendtest_usage, stderr);
            return -1;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "hookd: unexpected argument \"%s\"\n", argv[optind]);
        return -1;
    }
    if (secret_file != NULL) {
        char *text;
        size_t len;

        if (read_file(secret_file, &text, &len) < 0) {
            return -1;
        }
        while (len > 0 && (text[len - 1] == '\n' || text[len - 1] == '\r')) {
            text[--len] = '\0';
        }
        free(t->secret);
        t->secret = text;
    }
    t->policy.vp_scheme = standard ? VERIFY_SCHEME_STANDARD : VERIFY_SCHEME_CONTEXTGPT;
    t->policy.vp_token_header = strdup("X-WEBHOOK-TOKEN");
    t->policy.vp_signature_header = strdup("X-WEBHOOK-SIGNATURE");
    t->policy.vp_timestamp_header = strdup("");
    if (config != NULL) {
        free((void *)t->policy.vp_token_header);
        free((void *)t->policy.vp_signature_header);
        free((void *)t->policy.vp_timestamp_header);
        if (from_config(t, config, endpoint) < 0) {
            t->policy.vp_token_header = NULL;
            t->policy.vp_signature_header = NULL;
            t->policy.vp_timestamp_header = NULL;
            return -1;
        }
    }
    if (t->url == NULL || t->secret == NULL) {
        fprintf(stderr, "hookd: send-test needs --config, or --url and a secret\n%s",
                sendtest_usage);
        return -1;
    }
    if (t->policy.vp_scheme == VERIFY_SCHEME_STANDARD) {
        long n = verify_standard_key(t->secret, t->key, sizeof(t->key));

        if (n < 1) {
            fprintf(stderr, "hookd: the secret is not a Standard Webhooks secret (whsec_...)\n");
            return -1;
        }
        t->key_len = (size_t)n;
    }
    return 0;
}


static bool
send_all(CURL *curl, const struct sendtest *t, const char **files, int nfiles)
{
    bool all_ok = true;

    for (int i = 0; nfiles == 0 ? embedded_samples[i].ef_name != NULL : i < nfiles; i++) {
        const char *name = nfiles ? files[i] : embedded_samples[i].ef_name;
        char *owned = NULL;
        const char *body;
        size_t len;

        if (nfiles > 0) {
            if (read_file(files[i], &owned, &len) < 0) {
                all_ok = false;
                continue;
            }
            body = owned;
        } else {
            body = (const char *)embedded_samples[i].ef_data;
            len = embedded_samples[i].ef_len;
        }
        if (t->fresh) {
            size_t fresh_len = 0;
            char *fresh = freshen(body, len, &fresh_len);

            if (fresh == NULL) {
                fprintf(stderr, "hookd: %s: not a JSON object with a data object; sent as is\n",
                        name);
            } else {
                free(owned);
                owned = fresh;
                body = fresh;
                len = fresh_len;
            }
        }
        all_ok &= send_one(curl, t, name, body, len);
        free(owned);
    }
    return all_ok;
}


int
sendtest_main(int argc, char **argv)
{
    struct sendtest t;
    const char *files[64];
    int nfiles = 0;
    CURL *curl;
    bool ok;
    int rc = 2;

    memset(&t, 0, sizeof(t));
    if (parse_args(argc, argv, &t, files, &nfiles) < 0) {
        goto out;
    }
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != 0 || (curl = curl_easy_init()) == NULL) {
        fprintf(stderr, "hookd: could not start libcurl\n");
        rc = 1;
        goto out;
    }
    curl_easy_setopt(curl, CURLOPT_TIMEOUT, 15L);
    curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT, 5L);
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl, CURLOPT_USERAGENT, "hookd-send-test");
    if (t.insecure) {
        curl_easy_setopt(curl, CURLOPT_SSL_VERIFYPEER, 0L);
        curl_easy_setopt(curl, CURLOPT_SSL_VERIFYHOST, 0L);
    } else if (t.cacert != NULL) {
        curl_easy_setopt(curl, CURLOPT_CAINFO, t.cacert);
    }
    printf("sending to %s\n", t.url);
    ok = send_all(curl, &t, files, nfiles);
    curl_easy_cleanup(curl);
    curl_global_cleanup();
    rc = ok ? 0 : 1;
out:
    if (t.secret != NULL) {
        OPENSSL_cleanse(t.secret, strlen(t.secret));
        free(t.secret);
    }
    OPENSSL_cleanse(t.key, sizeof(t.key));
    free((void *)t.policy.vp_token_header);
    free((void *)t.policy.vp_signature_header);
    free((void *)t.policy.vp_timestamp_header);
    return rc;
}
