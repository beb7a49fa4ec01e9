/* SPDX-License-Identifier: MIT */
/*
 * http: the HTTPS listener (CivetWeb) and the webhook endpoints.
 *
 * Each request runs on a CivetWeb worker thread: route, method, size and
 * content-type checks, the body read under a total deadline, verification,
 * classification, then a blocking store_submit(); the answer goes out only
 * after the store reports the commit. Each request holds a reference to the
 * configuration it started with (cfg_get), so a reload applies to new
 * requests while requests in flight finish on the old one.
 */
#ifndef HOOKD_HTTP_H
#define HOOKD_HTTP_H

#include <stddef.h>

struct cfg_holder;
struct http;
struct store;

/*
 * Starts listening with the configuration in cfgs (listen, tls and http
 * settings are read once here; endpoints per request, so a swap in cfgs
 * applies to new requests). Returns 0, or -1 with a message in err.
 */
int http_start(struct cfg_holder *cfgs, struct store *store, struct http **ret, char *err,
               size_t errlen);

/*
 * Loads a certificate (with its chain) and key and makes them the ones new
 * TLS handshakes get; connections already open keep theirs. Returns 0, or
 * -1 with err when the files do not load or do not match (nothing changes).
 */
int http_reload_tls(struct http *h, const char *cert_file, const char *key_file, char *err,
                    size_t errlen);

/* Stops accepting, finishes requests in flight, frees everything; NULL is fine. */
void http_stop(struct http *h);

#endif
