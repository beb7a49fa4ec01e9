/* SPDX-License-Identifier: MIT */
/*
 * Unit tests for cfg: loading configs written into a fresh directory under
 * /tmp (one per test), the documented defaults, every refusal with its
 * FILE:LINE, secret handling, and the helpers used at run time and on
 * reload. The TLS files are dummies: cfg only checks they are readable.
 * etc/hookd.conf is read from the repo (the current directory, or the
 * parent of $HOOKD_TEST_SAMPLES) and loaded with its paths redirected.
 */
#include <criterion/criterion.h>

#include <fcntl.h>
#include <ftw.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cfg.h"

#define SECRET "literal-secret-at-least-16"
#define TLS "tls = { certificate = \"@DIR@/cert.pem\"; key = \"@DIR@/key.pem\"; };\n"
#define EP "endpoints = ( { secrets = [ \"" SECRET "\" ]; } );\n"

/* Standard Webhooks example secret and its decoded key (also in test_verify). */
#define STD_SECRET "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

static const unsigned char std_key[24] = {
    0x31, 0xf2, 0x90, 0xf6, 0xbf, 0x06, 0x29, 0x8a, 0xab, 0x4f, 0x08, 0xd4,
    0x3c, 0x3f, 0x08, 0x2c, 0xf6, 0x48, 0xa3, 0x62, 0xda, 0x2d, 0xa4, 0xb0,
};

static char tmp_dir[64];
static char conf_path[128];
static char err[CFG_ERR_MAX];
static struct cfg sentinel;

/* ---- scaffolding --------------------------------------------------------- */

/* A path inside the test directory; a few results may be alive at once. */
static const char *
tpath(const char *name)
{
    static char bufs[8][256];
    static unsigned next;
    char *b = bufs[next++ % 8];

    snprintf(b, sizeof(bufs[0]), "%s/%s", tmp_dir, name);
    return b;
}


static void
write_file(const char *path, const char *text, mode_t mode)
{
    size_t len = strlen(text);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);

    cr_assert_geq(fd, 0, "could not create %s", path);
    cr_assert_eq(write(fd, text, len), (ssize_t)len, "could not write %s", path);
    cr_assert_eq(fchmod(fd, mode), 0);
    cr_assert_eq(close(fd), 0);
}


/* text with every from replaced by to; malloc'd. *count gets the number. */
static char *
replace_all(const char *text, const char *from, const char *to, int *count)
{
    size_t from_len = strlen(from);
    size_t to_len = strlen(to);
    size_t cap = strlen(text) + 1;
    char *out;
    char *o;
    int n = 0;

    for (const char *p = strstr(text, from); p != NULL; p = strstr(p + from_len, from)) {
        n++;
    }
    cap += (size_t)n * to_len;
    out = malloc(cap);
    cr_assert_not_null(out);
    o = out;
    for (const char *p = text;;) {
        const char *hit = strstr(p, from);

        if (hit == NULL) {
            strcpy(o, p);
            break;
        }
        memcpy(o, p, (size_t)(hit - p));
        o += hit - p;
        memcpy(o, to, to_len);
        o += to_len;
        p = hit + from_len;
    }
    if (count != NULL) {
        *count = n;
    }
    return out;
}


/* Writes the config text, with @DIR@ standing for the test directory. */
static void
write_conf(const char *text)
{
    char *t = replace_all(text, "@DIR@", tmp_dir, NULL);

    write_file(conf_path, t, 0600);
    free(t);
}


static struct cfg *
load_ok(const char *text)
{
    struct cfg *cfg = NULL;

    write_conf(text);
    err[0] = '\0';
    cr_assert_eq(cfg_load(conf_path, &cfg, err, sizeof(err)), 0, "refused: %s", err);
    cr_assert_not_null(cfg);
    return cfg;
}


/* The line number after "FILE:", or -1 when err does not start so. */
static int
err_line(const char *e)
{
    size_t n = strlen(conf_path);
    char *end;
    long line;

    if (strncmp(e, conf_path, n) != 0 || e[n] != ':') {
        return -1;
    }
    line = strtol(e + n + 1, &end, 10);
    if (end == e + n + 1 || *end != ':') {
        return -1;
    }
    return (int)line;
}


/* Loads text expecting a refusal; checks the FILE:LINE prefix (line 0: any). */
static const char *
load_err(const char *text, int want_line)
{
    struct cfg *cfg = &sentinel;
    int line;

    write_conf(text);
    err[0] = '\0';
    cr_assert_eq(cfg_load(conf_path, &cfg, err, sizeof(err)), -1, "loaded:\n%s", text);
    cr_assert_eq(cfg, &sentinel, "*ret changed on failure");
    cr_assert_eq(strchr(err, '\n'), NULL, "error has several lines: %s", err);
    line = err_line(err);
    cr_assert_geq(line, 0, "no FILE:LINE prefix: %s", err);
    if (want_line > 0) {
        cr_assert_eq(line, want_line, "wrong line: %s", err);
    }
    return err;
}


static void
assert_has(const char *e, const char *needle)
{
    cr_assert_not_null(strstr(e, needle), "\"%s\" lacks \"%s\"", e, needle);
}


static int
rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}


static void
setup(void)
{
    snprintf(tmp_dir, sizeof(tmp_dir), "/tmp/hookd-test-cfg-XXXXXX");
    cr_assert_not_null(mkdtemp(tmp_dir));
    snprintf(conf_path, sizeof(conf_path), "%s/hookd.conf", tmp_dir);
    write_file(tpath("cert.pem"), "dummy certificate\n", 0644);
    write_file(tpath("key.pem"), "dummy key\n", 0600);
    (void)unsetenv("CREDENTIALS_DIRECTORY");
    (void)unsetenv("HOOKD_DATABASE_URL");
}


static void
teardown(void)
{
    if (tmp_dir[0] != '\0') {
        (void)nftw(tmp_dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
    }
}


TestSuite(cfg_load, .init = setup, .fini = teardown);
TestSuite(cfg_errors, .init = setup, .fini = teardown);
TestSuite(cfg_secrets, .init = setup, .fini = teardown);
TestSuite(cfg_helpers, .init = setup, .fini = teardown);

/* ---- loading and defaults ------------------------------------------------ */

static void
assert_default_settings(const struct cfg *c)
{
    cr_assert_eq(c->cf_threads, 64);
    cr_assert_eq(c->cf_max_body, 1048576);
    cr_assert_eq(c->cf_max_header, 16384);
    cr_assert_eq(c->cf_request_timeout_ms, 10000);
    cr_assert_eq(c->cf_body_timeout_ms, 20000);
    cr_assert_eq(c->cf_keep_alive_timeout_ms, 5000);
    cr_assert_eq(c->cf_json_max_depth, 64);
    cr_assert_eq(c->cf_connect_timeout, 5);
    cr_assert_eq(c->cf_query_timeout, 10);
    cr_assert_eq(c->cf_writers, 2);
    cr_assert_eq(c->cf_max_batch, 512);
    cr_assert_eq(c->cf_retry_after, 5);
    cr_assert_eq(c->cf_log_level, LOG_LVL_INFO);
    cr_assert_eq(c->cf_nlisten, 1);
    cr_assert_str_eq(c->cf_listen[0], "127.0.0.1:8443");
    cr_assert_not_null(c->cf_tls_ciphers);
    cr_assert_not_null(strstr(c->cf_tls_ciphers, "ECDHE"));
}


static void
assert_default_endpoint(const struct cfg_endpoint *ep)
{
    const struct verify_policy *p = &ep->ce_policy;

    cr_assert_str_eq(ep->ce_path, "/webhooks/contextgpt");
    cr_assert_str_eq(ep->ce_scheme_name, "contextgpt");
    cr_assert_eq(p->vp_scheme, VERIFY_SCHEME_CONTEXTGPT);
    cr_assert_eq(p->vp_require, VERIFY_REQUIRE_BOTH);
    cr_assert_eq(p->vp_encoding, VERIFY_ENCODING_HEX);
    cr_assert_str_eq(p->vp_token_header, "X-WEBHOOK-TOKEN");
    cr_assert_str_eq(p->vp_signature_header, "X-WEBHOOK-SIGNATURE");
    cr_assert_str_eq(p->vp_signature_prefix, "sha256=");
    cr_assert(p->vp_timestamp_header == NULL || *p->vp_timestamp_header == '\0');
    cr_assert_eq(p->vp_tolerance, 300);
    cr_assert_null(ep->ce_delivery_id_header);
    cr_assert_eq(p->vp_secrets, ep->ce_secrets);
    cr_assert_eq(p->vp_nsecrets, ep->ce_nsecrets);
}


Test(cfg_load, minimal_config_has_documented_defaults)
{
    struct cfg *c = load_ok(TLS EP);

    assert_default_settings(c);
    cr_assert_null(c->cf_conninfo);
    cr_assert_str_eq(c->cf_file, conf_path);
    cr_assert_str_eq(c->cf_tls_cert, tpath("cert.pem"));
    cr_assert_str_eq(c->cf_tls_key, tpath("key.pem"));
    cr_assert_eq(c->cf_nendpoints, 1);
    assert_default_endpoint(&c->cf_endpoints[0]);
    cr_assert_eq(c->cf_endpoints[0].ce_nsecrets, 1);
    cr_assert_str_eq(c->cf_endpoints[0].ce_secrets[0].vs_text, SECRET);
    cr_assert_eq(c->cf_endpoints[0].ce_secrets[0].vs_text_len, strlen(SECRET));
    cfg_free(c);
}


/* The repo's etc/hookd.conf; relative to $HOOKD_TEST_SAMPLES/.. when set. */
static char *
read_example(void)
{
    const char *samples = getenv("HOOKD_TEST_SAMPLES");
    char path[4096];
    char *text;
    FILE *f;
    long n;

    if (samples != NULL && *samples != '\0') {
        snprintf(path, sizeof(path), "%s/../etc/hookd.conf", samples);
    } else {
        snprintf(path, sizeof(path), "etc/hookd.conf");
    }
    f = fopen(path, "rb");
    cr_assert_not_null(f, "could not open %s", path);
    cr_assert_eq(fseek(f, 0, SEEK_END), 0);
    n = ftell(f);
    cr_assert_gt(n, 0);
    rewind(f);
    text = malloc((size_t)n + 1);
    cr_assert_not_null(text);
    cr_assert_eq(fread(text, 1, (size_t)n, f), (size_t)n);
    text[n] = '\0';
    fclose(f);
    return text;
}


/* Replaces one quoted path of the example, which must occur exactly once. */
static char *
redirect(char *text, const char *from, const char *to)
{
    char qfrom[256];
    char qto[256];
    int n;
    char *out;

    snprintf(qfrom, sizeof(qfrom), "\"%s\"", from);
    snprintf(qto, sizeof(qto), "\"%s\"", to);
    out = replace_all(text, qfrom, qto, &n);
    cr_assert_eq(n, 1, "%s occurs %d times in etc/hookd.conf", qfrom, n);
    free(text);
    return out;
}


Test(cfg_load, example_config_loads_and_shows_the_defaults)
{
    char *text = read_example();
    struct cfg *c;

    text = redirect(text, "/etc/hookd/tls/cert.pem", tpath("cert.pem"));
    text = redirect(text, "/etc/hookd/tls/key.pem", tpath("key.pem"));
    /* The example takes its secret as a systemd credential, as the unit gives it. */
    write_file(tpath("hookd-secret"), "example-secret-0123456789\n", 0600);
    setenv("CREDENTIALS_DIRECTORY", tmp_dir, 1);
    c = load_ok(text);
    unsetenv("CREDENTIALS_DIRECTORY");
    free(text);

    /* "Every setting shows its default": the example equals the defaults. */
    assert_default_settings(c);
    cr_assert_null(c->cf_conninfo);
    cr_assert_eq(c->cf_nendpoints, 1);
    assert_default_endpoint(&c->cf_endpoints[0]);
    cr_assert_eq(c->cf_endpoints[0].ce_nsecrets, 1);
    cr_assert_str_eq(c->cf_endpoints[0].ce_secrets[0].vs_text, "example-secret-0123456789");
    cfg_free(c);
}


Test(cfg_load, every_setting_read)
{
    struct cfg *c = load_ok(
        "listen = [ \"127.0.0.1:9443\", \"[::1]:9443\" ];\n"
        TLS
        "http = { threads = 8; max_body = 2048; max_header = 8192; request_timeout = 1000;\n"
        "  body_timeout = 2000; keep_alive_timeout = 0; json_max_depth = 10; };\n"
        "database = { conninfo = \"dbname=x\"; connect_timeout = 2; query_timeout = 3;\n"
        "  writers = 4; max_batch = 100; retry_after = 7; };\n"
        "log = { level = \"DEBUG\"; };\n"
        "endpoints = ( {\n"
        "  path = \"/hooks/std\"; scheme = \"standard\"; secrets = [ \"" STD_SECRET "\" ];\n"
        "  require = \"signature\"; token_header = \"X-T\"; signature_header = \"X-S\";\n"
        "  signature_encoding = \"base64\"; signature_prefix = \"\";\n"
        "  timestamp_header = \"X-TS\"; tolerance = 60; delivery_id_header = \"X-ID\";\n"
        "} );\n");
    const struct cfg_endpoint *ep = &c->cf_endpoints[0];

    cr_assert_eq(c->cf_nlisten, 2);
    cr_assert_str_eq(c->cf_listen[0], "127.0.0.1:9443");
    cr_assert_str_eq(c->cf_listen[1], "[::1]:9443");
    cr_assert_eq(c->cf_threads, 8);
    cr_assert_eq(c->cf_max_body, 2048);
    cr_assert_eq(c->cf_max_header, 8192);
    cr_assert_eq(c->cf_request_timeout_ms, 1000);
    cr_assert_eq(c->cf_body_timeout_ms, 2000);
    cr_assert_eq(c->cf_keep_alive_timeout_ms, 0);
    cr_assert_eq(c->cf_json_max_depth, 10);
    cr_assert_str_eq(c->cf_conninfo, "dbname=x");
    cr_assert_eq(c->cf_connect_timeout, 2);
    cr_assert_eq(c->cf_query_timeout, 3);
    cr_assert_eq(c->cf_writers, 4);
    cr_assert_eq(c->cf_max_batch, 100);
    cr_assert_eq(c->cf_retry_after, 7);
    cr_assert_eq(c->cf_log_level, LOG_LVL_DEBUG);
    cr_assert_str_eq(ep->ce_path, "/hooks/std");
    cr_assert_str_eq(ep->ce_scheme_name, "standard");
    cr_assert_eq(ep->ce_policy.vp_require, VERIFY_REQUIRE_SIGNATURE);
    cr_assert_eq(ep->ce_policy.vp_encoding, VERIFY_ENCODING_BASE64);
    cr_assert_str_eq(ep->ce_policy.vp_token_header, "X-T");
    cr_assert_str_eq(ep->ce_policy.vp_signature_header, "X-S");
    cr_assert_str_eq(ep->ce_policy.vp_signature_prefix, "");
    cr_assert_str_eq(ep->ce_policy.vp_timestamp_header, "X-TS");
    cr_assert_eq(ep->ce_policy.vp_tolerance, 60);
    cr_assert_str_eq(ep->ce_delivery_id_header, "X-ID");
    cfg_free(c);
}


Test(cfg_load, documented_listen_forms_accepted)
{
    static const char *const forms[] = {
        "0.0.0.0:8443", "[::]:8443", "[::1]:8443", "127.0.0.1:1", "127.0.0.1:65535",
    };

    for (size_t i = 0; i < sizeof(forms) / sizeof(forms[0]); i++) {
        char text[512];
        struct cfg *c;

        snprintf(text, sizeof(text), "listen = [ \"%s\" ];\n" TLS EP, forms[i]);
        c = load_ok(text);
        cr_assert_str_eq(c->cf_listen[0], forms[i]);
        cfg_free(c);
    }
}


/* The test certificates carry SAN localhost; a host name must be usable. */
Test(cfg_load, listen_on_a_host_name_accepted)
{
    struct cfg *c = load_ok("listen = [ \"localhost:8443\" ];\n" TLS EP);

    cr_assert_str_eq(c->cf_listen[0], "localhost:8443");
    cfg_free(c);
}


Test(cfg_load, enum_values_are_case_insensitive)
{
    struct cfg *c = load_ok(TLS "endpoints = ( { scheme = \"ContextGPT\"; require = \"ANY\";\n"
                            "  signature_encoding = \"Base64\"; secrets = [ \"" SECRET
                            "\" ]; } );\n");

    cr_assert_eq(c->cf_endpoints[0].ce_policy.vp_require, VERIFY_REQUIRE_ANY);
    cr_assert_eq(c->cf_endpoints[0].ce_policy.vp_encoding, VERIFY_ENCODING_BASE64);
    cfg_free(c);
}


Test(cfg_load, sixteen_character_secret_accepted)
{
    struct cfg *c = load_ok(TLS "endpoints = ( { secrets = [ \"0123456789abcdef\" ]; } );\n");

    cr_assert_eq(c->cf_endpoints[0].ce_secrets[0].vs_text_len, 16);
    cfg_free(c);
}


Test(cfg_load, several_secrets_kept_in_order)
{
    struct cfg *c;

    write_file(tpath("s"), "file-secret-0123456789\n", 0600);
    c = load_ok(TLS "endpoints = ( { secrets = [ \"" SECRET "\", \"second-secret-0123456\" ];\n"
                "  secret_files = [ \"@DIR@/s\" ]; } );\n");
    cr_assert_eq(c->cf_endpoints[0].ce_nsecrets, 3);
    cr_assert_str_eq(c->cf_endpoints[0].ce_secrets[0].vs_text, SECRET);
    cr_assert_str_eq(c->cf_endpoints[0].ce_secrets[1].vs_text, "second-secret-0123456");
    cr_assert_str_eq(c->cf_endpoints[0].ce_secrets[2].vs_text, "file-secret-0123456789");
    cr_assert_eq(c->cf_endpoints[0].ce_policy.vp_nsecrets, 3);
    cfg_free(c);
}


Test(cfg_load, missing_config_file_refused)
{
    struct cfg *c = NULL;

    cr_assert_eq(cfg_load(tpath("absent.conf"), &c, err, sizeof(err)), -1);
    cr_assert_null(c);
    assert_has(err, tpath("absent.conf"));
}


Test(cfg_load, free_null_is_safe)
{
    cfg_free(NULL);
}


/* ---- errors -------------------------------------------------------------- */

Test(cfg_errors, syntax_error_names_its_line)
{
    const char *e = load_err(TLS "http = { threads = = 4; };\n" EP, 2);

    assert_has(e, "syntax");
}


Test(cfg_errors, unknown_top_level_key)
{
    const char *e = load_err(TLS EP "bogus_top = 1;\n", 3);

    assert_has(e, "bogus_top");
}


struct err_case {
    const char *text;
    int line;
    const char *needles[3];
};


static void
run_err_cases(const struct err_case *cases, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char at[160];
        const char *e = load_err(cases[i].text, cases[i].line);

        snprintf(at, sizeof(at), "%s:%d", conf_path, cases[i].line);
        if (cases[i].line > 0) {
            assert_has(e, at);
        }
        for (size_t j = 0; j < 3 && cases[i].needles[j] != NULL; j++) {
            assert_has(e, cases[i].needles[j]);
        }
    }
}


Test(cfg_errors, unknown_key_in_each_group)
{
    static const struct err_case cases[] = {
        { "tls = {\n  certificate = \"@DIR@/cert.pem\";\n  key = \"@DIR@/key.pem\";\n"
          "  bogus_tls = 1;\n};\n" EP, 4, { "bogus_tls", NULL } },
        { TLS "http = {\n  threads = 8;\n  bogus_http = 1;\n};\n" EP, 4,
          { "bogus_http", NULL } },
        { TLS "database = {\n  bogus_db = \"x\";\n};\n" EP, 3, { "bogus_db", NULL } },
        { TLS "log = { level = \"info\";\n  bogus_log = 1; };\n" EP, 3, { "bogus_log", NULL } },
        { TLS "endpoints = ( {\n  secrets = [ \"" SECRET "\" ];\n  bogus_ep = 1;\n} );\n", 4,
          { "bogus_ep", NULL } },
        { TLS "endpoints = ( {\n  secrets = [ \"" SECRET "\" ];\n  secret = \"x\";\n} );\n", 4,
          { "\"endpoints[0].secret\"", NULL } },
    };

    run_err_cases(cases, sizeof(cases) / sizeof(cases[0]));
}


Test(cfg_errors, wrong_types)
{
    static const struct err_case cases[] = {
        /* a string where an integer belongs */
        { TLS "http = {\n  threads = \"64\";\n};\n" EP, 3, { "threads", NULL } },
        { TLS "database = { retry_after = \"5\"; };\n" EP, 2, { "retry_after", NULL } },
        { TLS "http = { max_body = 1.5; };\n" EP, 2, { "max_body", NULL } },
        { TLS "endpoints = ( { secrets = [ \"" SECRET "\" ];\n  tolerance = true; } );\n", 3,
          { "tolerance", NULL } },
        /* an integer where a string belongs */
        { TLS "log = { level = 3; };\n" EP, 2, { "level", NULL } },
        { TLS "endpoints = ( { secrets = [ \"" SECRET "\" ];\n  path = 5; } );\n", 3,
          { "path", NULL } },
        { TLS "endpoints = ( { secrets = [ \"" SECRET "\" ];\n  scheme = 1; } );\n", 3,
          { "scheme", NULL } },
        { "tls = { certificate = 1; key = \"@DIR@/key.pem\"; };\n" EP, 1,
          { "certificate", NULL } },
        { TLS "database = { conninfo = 5; };\n" EP, 2, { "conninfo", NULL } },
        /* a group where a list belongs, and the other way round */
        { "listen = { a = \"127.0.0.1:8443\"; };\n" TLS EP, 1, { "listen", NULL } },
        { TLS "endpoints = ( {\n  secrets = { a = \"" SECRET "\"; };\n} );\n", 3,
          { "secrets", NULL } },
        { TLS "endpoints = {\n  a = { secrets = [ \"" SECRET "\" ]; };\n};\n", 2,
          { "endpoints", NULL } },
        { TLS "endpoints = ( [ \"" SECRET "\" ] );\n", 2, { "endpoints[0]", NULL } },
        { TLS "http = ( 1 );\n" EP, 2, { "http", NULL } },
        { TLS "database = 5;\n" EP, 2, { "database", NULL } },
        { "tls = \"@DIR@/cert.pem\";\n" EP, 1, { "tls", NULL } },
        /* a list that holds something other than strings */
        { TLS "endpoints = ( {\n  secrets = [ 1, 2 ];\n} );\n", 3, { "secrets", NULL } },
        { "listen = [ 8443 ];\n" TLS EP, 1, { "listen", NULL } },
    };

    run_err_cases(cases, sizeof(cases) / sizeof(cases[0]));
}


Test(cfg_errors, out_of_range_numbers)
{
    static const struct err_case cases[] = {
        { TLS "http = { threads = 0; };\n" EP, 2, { "threads", NULL } },
        { TLS "http = { threads = 100000; };\n" EP, 2, { "threads", NULL } },
        { TLS "http = { max_body = 10; };\n" EP, 2, { "max_body", NULL } },
        { TLS "http = { max_body = 100000000000L; };\n" EP, 2, { "max_body", NULL } },
        { TLS "http = { json_max_depth = 0; };\n" EP, 2, { "json_max_depth", NULL } },
        { TLS "http = { request_timeout = -1; };\n" EP, 2, { "request_timeout", NULL } },
        { TLS "database = { writers = 0; };\n" EP, 2, { "writers", NULL } },
        { TLS "database = { retry_after = 0; };\n" EP, 2, { "retry_after", NULL } },
        { TLS "endpoints = ( { secrets = [ \"" SECRET "\" ];\n  tolerance = 0; } );\n", 3,
          { "tolerance", NULL } },
    };

    run_err_cases(cases, sizeof(cases) / sizeof(cases[0]));
}


Test(cfg_errors, bad_enum_values)
{
    static const struct err_case cases[] = {
        { TLS "endpoints = ( { secrets = [ \"" SECRET "\" ];\n  scheme = \"x\"; } );\n", 3,
          { "scheme", "\"x\"", NULL } },
        { TLS "endpoints = ( { secrets = [ \"" SECRET "\" ];\n  require = \"x\"; } );\n", 3,
          { "require", "\"x\"", NULL } },
        { TLS "endpoints = ( { secrets = [ \"" SECRET "\" ];\n"
          "  signature_encoding = \"x\"; } );\n", 3, { "signature_encoding", "\"x\"", NULL } },
        { TLS "log = {\n  level = \"loud\";\n};\n" EP, 3, { "level", "loud", NULL } },
    };

    run_err_cases(cases, sizeof(cases) / sizeof(cases[0]));
}


Test(cfg_errors, bad_listen_addresses)
{
    static const struct err_case cases[] = {
        { "listen = [ \"nonsense\" ];\n" TLS EP, 1, { "listen", "nonsense", NULL } },
        { "listen = \"nonsense\";\n" TLS EP, 1, { "listen", NULL } },
        { "listen = [ \"127.0.0.1\" ];\n" TLS EP, 1, { "listen", NULL } },
        { "listen = [ \"127.0.0.1:0\" ];\n" TLS EP, 1, { "listen", NULL } },
        { "listen = [ \"127.0.0.1:65536\" ];\n" TLS EP, 1, { "listen", NULL } },
        { "listen = [ \"127.0.0.1:84x3\" ];\n" TLS EP, 1, { "listen", NULL } },
        { "listen = [ \":8443\" ];\n" TLS EP, 1, { "listen", NULL } },
        { "listen = [ \"[::1]8443\" ];\n" TLS EP, 1, { "listen", NULL } },
        { "listen = [ \"127.0.0.1:8443, 127.0.0.1:9443\" ];\n" TLS EP, 1, { "listen", NULL } },
        { "listen = [ ];\n" TLS EP, 1, { "listen", NULL } },
    };

    run_err_cases(cases, sizeof(cases) / sizeof(cases[0]));
}


Test(cfg_errors, missing_tls)
{
    const char *e = load_err(EP, 0);

    assert_has(e, "tls");
}


Test(cfg_errors, tls_without_key)
{
    const char *e = load_err("tls = {\n  certificate = \"@DIR@/cert.pem\";\n};\n" EP, 1);

    assert_has(e, "tls.key");
}


Test(cfg_errors, missing_certificate_file)
{
    const char *e = load_err("tls = {\n  certificate = \"@DIR@/absent.pem\";\n"
                             "  key = \"@DIR@/key.pem\";\n};\n" EP, 2);

    assert_has(e, "tls.certificate");
    assert_has(e, tpath("absent.pem"));
}


Test(cfg_errors, missing_key_file)
{
    const char *e = load_err("tls = {\n  certificate = \"@DIR@/cert.pem\";\n"
                             "  key = \"@DIR@/absent.pem\";\n};\n" EP, 3);

    assert_has(e, "tls.key");
}


Test(cfg_errors, no_endpoints)
{
    const char *e = load_err(TLS, 0);

    assert_has(e, "endpoint");
    e = load_err(TLS "endpoints = ( );\n", 2);
    assert_has(e, "endpoint");
}


Test(cfg_errors, endpoint_without_any_secret)
{
    const char *e = load_err(TLS "endpoints = (\n  { path = \"/a\"; }\n);\n", 3);

    assert_has(e, "/a");
    assert_has(e, "secret");
    e = load_err(TLS "endpoints = (\n  { secrets = [ ]; secret_files = [ ]; }\n);\n", 3);
    assert_has(e, "secret");
}


Test(cfg_errors, empty_secret_refused)
{
    const char *e = load_err(TLS "endpoints = ( {\n  secrets = [ \"\" ];\n} );\n", 3);

    assert_has(e, "16");
}


Test(cfg_errors, short_secret_refused_without_showing_it)
{
    /* 15 characters, one short of the minimum. */
    static const char short_secret[] = "Zq7-secret-15ch";
    const char *e;

    cr_assert_eq(strlen(short_secret), CFG_MIN_SECRET_LEN - 1);
    e = load_err(TLS "endpoints = ( {\n  secrets = [ \"Zq7-secret-15ch\" ];\n} );\n", 3);
    assert_has(e, "16");
    cr_assert_null(strstr(e, short_secret), "secret leaked: %s", e);
    cr_assert_null(strstr(e, "Zq7"), "secret leaked: %s", e);
}


Test(cfg_errors, secret_with_control_character_refused_without_showing_it)
{
    const char *e = load_err(TLS "endpoints = ( {\n  secrets = [ \"Kx9-control\\tsecret-abc\" ];"
                             "\n} );\n", 3);

    cr_assert_null(strstr(e, "Kx9"), "secret leaked: %s", e);
}


Test(cfg_errors, duplicate_endpoint_path)
{
    const char *e = load_err(TLS "endpoints = (\n"
                             "  { path = \"/a\"; secrets = [ \"" SECRET "\" ]; },\n"
                             "  { path = \"/b\"; secrets = [ \"" SECRET "\" ]; },\n"
                             "  { path = \"/a\"; secrets = [ \"" SECRET "\" ]; }\n"
                             ");\n", 5);

    assert_has(e, "/a");
    /* Two endpoints both left at the default path collide too. */
    load_err(TLS "endpoints = (\n  { secrets = [ \"" SECRET "\" ]; },\n"
             "  { secrets = [ \"" SECRET "\" ]; }\n);\n", 4);
}


Test(cfg_errors, path_must_start_with_a_slash)
{
    static const struct err_case cases[] = {
        { TLS "endpoints = (\n  { path = \"webhooks\"; secrets = [ \"" SECRET "\" ]; }\n);\n",
          3, { "path", NULL } },
        { TLS "endpoints = (\n  { path = \"\"; secrets = [ \"" SECRET "\" ]; }\n);\n",
          3, { "path", NULL } },
        { TLS "endpoints = (\n  { path = \"/a?b=1\"; secrets = [ \"" SECRET "\" ]; }\n);\n",
          3, { "path", NULL } },
    };

    run_err_cases(cases, sizeof(cases) / sizeof(cases[0]));
}


Test(cfg_errors, empty_header_names_refused)
{
    load_err(TLS "endpoints = (\n  { token_header = \"\"; secrets = [ \"" SECRET "\" ]; }\n);\n",
             3);
    load_err(TLS "endpoints = (\n  { signature_header = \"\"; secrets = [ \"" SECRET "\" ]; }"
             "\n);\n", 3);
}


/* Every refusal above with a line to name names a line > 0. */
Test(cfg_errors, error_lines_are_positive_where_a_line_exists)
{
    static const char *const texts[] = {
        TLS EP "x = 1;\n",
        TLS "http = { threads = 0; };\n" EP,
        "listen = [ \"nonsense\" ];\n" TLS EP,
        TLS "endpoints = ( { path = \"a\"; secrets = [ \"" SECRET "\" ]; } );\n",
        TLS "endpoints = ( { secret_files = [ \"@DIR@/absent\" ]; } );\n",
        TLS "endpoints = ( { credentials = [ \"c\" ]; } );\n",
        TLS "endpoints = ( { secrets = [ \"short\" ]; } );\n",
        TLS "endpoints = ( { path = \"/a\"; } );\n",
        TLS "endpoints = ( );\n",
        "tls = { certificate = \"@DIR@/nope\"; key = \"@DIR@/key.pem\"; };\n" EP,
        TLS "http = {\n",
    };

    for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
        const char *e = load_err(texts[i], 0);

        cr_assert_gt(err_line(e), 0, "%s", e);
    }
}


/* ---- secrets from files and credentials ---------------------------------- */

#define EP_FILE(path) "endpoints = ( {\n  secret_files = [ \"" path "\" ];\n} );\n"


Test(cfg_secrets, secret_file_missing)
{
    const char *e = load_err(TLS EP_FILE("@DIR@/absent"), 3);

    assert_has(e, tpath("absent"));
}


Test(cfg_secrets, secret_file_not_a_regular_file)
{
    load_err(TLS EP_FILE("@DIR@"), 3);
}


Test(cfg_secrets, secret_file_without_owner_read_refused_even_as_root)
{
    const char *e;

    write_file(tpath("s"), "file-secret-0123456789\n", 0000);
    e = load_err(TLS EP_FILE("@DIR@/s"), 3);
    assert_has(e, tpath("s"));
    assert_has(e, "owner");
    cr_assert_null(strstr(e, "file-secret"), "secret leaked: %s", e);
}


Test(cfg_secrets, world_readable_secret_file_refused)
{
    static const mode_t modes[] = { 0644, 0604, 0666, 0755 };

    for (size_t i = 0; i < sizeof(modes) / sizeof(modes[0]); i++) {
        const char *e;

        write_file(tpath("s"), "file-secret-0123456789\n", modes[i]);
        e = load_err(TLS EP_FILE("@DIR@/s"), 3);
        assert_has(e, tpath("s"));
        cr_assert_null(strstr(e, "file-secret"), "secret leaked: %s", e);
    }
}


Test(cfg_secrets, owner_and_group_readable_secret_files_load)
{
    static const mode_t modes[] = { 0600, 0640, 0400, 0440 };

    for (size_t i = 0; i < sizeof(modes) / sizeof(modes[0]); i++) {
        struct cfg *c;

        write_file(tpath("s"), "file-secret-0123456789", modes[i]);
        c = load_ok(TLS EP_FILE("@DIR@/s"));
        cr_assert_str_eq(c->cf_endpoints[0].ce_secrets[0].vs_text, "file-secret-0123456789",
                         "mode %04o", (unsigned)modes[i]);
        cfg_free(c);
    }
}


Test(cfg_secrets, trailing_newline_and_crlf_stripped)
{
    static const char *const contents[] = {
        "file-secret-0123456789\n", "file-secret-0123456789\r\n", "file-secret-0123456789",
    };

    for (size_t i = 0; i < sizeof(contents) / sizeof(contents[0]); i++) {
        struct cfg *c;

        write_file(tpath("s"), contents[i], 0600);
        c = load_ok(TLS EP_FILE("@DIR@/s"));
        cr_assert_str_eq(c->cf_endpoints[0].ce_secrets[0].vs_text, "file-secret-0123456789");
        cr_assert_eq(c->cf_endpoints[0].ce_secrets[0].vs_text_len, 22);
        cfg_free(c);
    }
}


Test(cfg_secrets, short_secret_file_refused_without_showing_it)
{
    const char *e;

    write_file(tpath("s"), "Qw8-fifteen-chr\n", 0600);
    e = load_err(TLS EP_FILE("@DIR@/s"), 3);
    cr_assert_null(strstr(e, "Qw8"), "secret leaked: %s", e);
}


Test(cfg_secrets, credentials_without_credentials_directory_refused)
{
    const char *e = load_err(TLS "endpoints = ( {\n  credentials = [ \"hookd-secret\" ];\n} );\n",
                             3);

    assert_has(e, "CREDENTIALS_DIRECTORY");
    cr_assert_eq(setenv("CREDENTIALS_DIRECTORY", "", 1), 0);
    load_err(TLS "endpoints = ( {\n  credentials = [ \"hookd-secret\" ];\n} );\n", 3);
}


Test(cfg_secrets, credentials_read_from_credentials_directory)
{
    struct cfg *c;

    cr_assert_eq(mkdir(tpath("creds"), 0700), 0);
    write_file(tpath("creds/hookd-secret"), "credential-secret-0123\n", 0400);
    cr_assert_eq(setenv("CREDENTIALS_DIRECTORY", tpath("creds"), 1), 0);
    c = load_ok(TLS "endpoints = ( {\n  credentials = [ \"hookd-secret\" ];\n} );\n");
    cr_assert_eq(c->cf_endpoints[0].ce_nsecrets, 1);
    cr_assert_str_eq(c->cf_endpoints[0].ce_secrets[0].vs_text, "credential-secret-0123");
    cfg_free(c);
}


Test(cfg_secrets, missing_credential_refused)
{
    cr_assert_eq(mkdir(tpath("creds"), 0700), 0);
    cr_assert_eq(setenv("CREDENTIALS_DIRECTORY", tpath("creds"), 1), 0);
    load_err(TLS "endpoints = ( {\n  credentials = [ \"absent\" ];\n} );\n", 3);
}


Test(cfg_secrets, credential_name_with_slash_refused)
{
    const char *e;

    /* ../s exists and is fine as a file: only the name is wrong. */
    cr_assert_eq(mkdir(tpath("creds"), 0700), 0);
    write_file(tpath("s"), "credential-secret-0123\n", 0600);
    write_file(tpath("creds/x"), "credential-secret-0123\n", 0600);
    cr_assert_eq(setenv("CREDENTIALS_DIRECTORY", tpath("creds"), 1), 0);
    e = load_err(TLS "endpoints = ( {\n  credentials = [ \"../s\" ];\n} );\n", 3);
    assert_has(e, "../s");
    load_err(TLS "endpoints = ( {\n  credentials = [ \"./x\" ];\n} );\n", 3);
    load_err(TLS "endpoints = ( {\n  credentials = [ \"/etc/passwd\" ];\n} );\n", 3);
}


Test(cfg_secrets, standard_scheme_decodes_whsec_key)
{
    struct cfg *c = load_ok(TLS "endpoints = ( { scheme = \"standard\";\n"
                            "  secrets = [ \"" STD_SECRET "\" ]; } );\n");
    const struct verify_secret *s = &c->cf_endpoints[0].ce_secrets[0];

    cr_assert_eq(c->cf_endpoints[0].ce_policy.vp_scheme, VERIFY_SCHEME_STANDARD);
    cr_assert_str_eq(c->cf_endpoints[0].ce_scheme_name, "standard");
    cr_assert_str_eq(s->vs_text, STD_SECRET);
    cr_assert_not_null(s->vs_key);
    cr_assert_eq(s->vs_key_len, sizeof(std_key));
    cr_assert_arr_eq(s->vs_key, std_key, sizeof(std_key));
    cfg_free(c);
}


Test(cfg_secrets, standard_scheme_refuses_non_base64_secret_without_showing_it)
{
    const char *e = load_err(TLS "endpoints = ( {\n  scheme = \"standard\";\n"
                             "  secrets = [ \"whsec_Pv4!not-base64-at-all\" ];\n} );\n", 4);

    assert_has(e, "whsec_");
    cr_assert_null(strstr(e, "Pv4"), "secret leaked: %s", e);
    /* A plain contextgpt-style secret is no Standard Webhooks secret. */
    load_err(TLS "endpoints = ( {\n  scheme = \"standard\";\n"
             "  secrets = [ \"" SECRET "\" ];\n} );\n", 4);
}


Test(cfg_secrets, standard_scheme_refuses_key_under_16_bytes)
{
    /* 16 base64 characters decode to 12 bytes. */
    load_err(TLS "endpoints = ( {\n  scheme = \"standard\";\n"
             "  secrets = [ \"whsec_AAAAAAAAAAAAAAAA\" ];\n} );\n", 4);
}


/* ---- helpers: conninfo, find_endpoint, restart_changes ------------------- */

Test(cfg_helpers, conninfo_from_config_wins)
{
    struct cfg *c = load_ok(TLS "database = { conninfo = \"dbname=from_config\"; };\n" EP);

    cr_assert_eq(setenv("HOOKD_DATABASE_URL", "postgresql:///from_env", 1), 0);
    cr_assert_str_eq(cfg_conninfo(c), "dbname=from_config");
    cfg_free(c);
}


Test(cfg_helpers, conninfo_from_environment_when_config_has_none)
{
    struct cfg *c = load_ok(TLS EP);

    cr_assert_eq(setenv("HOOKD_DATABASE_URL", "postgresql:///from_env", 1), 0);
    cr_assert_str_eq(cfg_conninfo(c), "postgresql:///from_env");
    cfg_free(c);

    c = load_ok(TLS "database = { conninfo = \"\"; };\n" EP);
    cr_assert_str_eq(cfg_conninfo(c), "postgresql:///from_env");
    cfg_free(c);
}


Test(cfg_helpers, conninfo_empty_when_neither_is_set)
{
    struct cfg *c = load_ok(TLS EP);

    cr_assert_str_eq(cfg_conninfo(c), "");
    cfg_free(c);
}


Test(cfg_helpers, find_endpoint_by_exact_path)
{
    struct cfg *c = load_ok(TLS "endpoints = (\n"
                            "  { path = \"/a\"; secrets = [ \"" SECRET "\" ]; },\n"
                            "  { path = \"/b/c\"; secrets = [ \"" SECRET "\" ]; }\n"
                            ");\n");

    cr_assert_eq(cfg_find_endpoint(c, "/a"), &c->cf_endpoints[0]);
    cr_assert_eq(cfg_find_endpoint(c, "/b/c"), &c->cf_endpoints[1]);
    cr_assert_null(cfg_find_endpoint(c, "/b"));
    cr_assert_null(cfg_find_endpoint(c, "/a/"));
    cr_assert_null(cfg_find_endpoint(c, "/A"));
    cr_assert_null(cfg_find_endpoint(c, ""));
    cfg_free(c);
}


/* Loads base and changed, returns cfg_restart_changes(base, changed). */
static const char *
changes(const char *base, const char *changed)
{
    static char buf[256];
    struct cfg *a = load_ok(base);
    struct cfg *b = load_ok(changed);

    memset(buf, 'X', sizeof(buf));
    cfg_restart_changes(a, b, buf, sizeof(buf));
    cfg_free(a);
    cfg_free(b);
    return buf;
}

#define BASE_LISTEN "listen = [ \"127.0.0.1:8443\" ];\n"
#define BASE_DB "database = { conninfo = \"dbname=a\"; writers = 2; };\n"
#define BASE BASE_LISTEN TLS BASE_DB EP


Test(cfg_helpers, restart_changes_none_for_same_config)
{
    cr_assert_str_eq(changes(BASE, BASE), "");
}


Test(cfg_helpers, restart_changes_lists_listen)
{
    const char *got = changes(BASE, "listen = [ \"127.0.0.1:9443\" ];\n" TLS BASE_DB EP);

    assert_has(got, "listen");
    got = changes(BASE, "listen = [ \"127.0.0.1:8443\", \"[::1]:8443\" ];\n" TLS BASE_DB EP);
    assert_has(got, "listen");
}


/* The certificate and key reload (http_reload_tls); the cipher list does not. */
Test(cfg_helpers, restart_changes_lists_tls_ciphers_but_not_the_certificate)
{
    const char *got;

    write_file(tpath("cert2.pem"), "another dummy certificate\n", 0644);
    got = changes(BASE, BASE_LISTEN "tls = { certificate = \"@DIR@/cert2.pem\";"
                  " key = \"@DIR@/key.pem\"; };\n" BASE_DB EP);
    cr_assert_null(strstr(got, "tls"), "%s", got);
    got = changes(BASE, BASE_LISTEN "tls = { certificate = \"@DIR@/cert.pem\";"
                  " key = \"@DIR@/key.pem\"; ciphers = \"ECDHE-ECDSA-AES128-GCM-SHA256\"; };\n"
                  BASE_DB EP);
    assert_has(got, "tls.ciphers");
    cr_assert_null(strstr(got, "listen"), "%s", got);
    cr_assert_null(strstr(got, "database"), "%s", got);
}


Test(cfg_helpers, restart_changes_lists_database)
{
    const char *got = changes(BASE, BASE_LISTEN TLS
                              "database = { conninfo = \"dbname=b\"; writers = 2; };\n" EP);

    assert_has(got, "database");
    got = changes(BASE, BASE_LISTEN TLS
                  "database = { conninfo = \"dbname=a\"; writers = 3; };\n" EP);
    assert_has(got, "database");
}


Test(cfg_helpers, restart_changes_lists_several_at_once)
{
    const char *got = changes(BASE, "listen = [ \"127.0.0.1:9443\" ];\n" TLS
                              "database = { conninfo = \"dbname=b\"; };\n" EP);

    assert_has(got, "listen");
    assert_has(got, "database");
    cr_assert_null(strstr(got, "tls"), "%s", got);
}


Test(cfg_helpers, restart_changes_empty_for_endpoint_only_change)
{
    const char *got = changes(BASE, BASE_LISTEN TLS BASE_DB
                              "endpoints = (\n"
                              "  { path = \"/other\"; require = \"signature\";\n"
                              "    secrets = [ \"another-secret-0123456\" ]; },\n"
                              "  { path = \"/second\"; secrets = [ \"" SECRET "\" ]; }\n"
                              ");\n");

    cr_assert_str_eq(got, "");
}


Test(cfg_helpers, restart_changes_empty_for_reloadable_settings)
{
    const char *got = changes(BASE, BASE_LISTEN TLS
                              "database = { conninfo = \"dbname=a\"; writers = 2;"
                              " retry_after = 9; };\n"
                              "http = { max_body = 4096; body_timeout = 500;"
                              " json_max_depth = 8; };\n"
                              "log = { level = \"debug\"; };\n" EP);

    cr_assert_str_eq(got, "");
}


Test(cfg_helpers, restart_changes_fits_a_small_buffer)
{
    struct cfg *a = load_ok(BASE);
    struct cfg *b;
    char buf[16];

    write_file(tpath("cert2.pem"), "another dummy certificate\n", 0644);
    b = load_ok("listen = [ \"127.0.0.1:9443\" ];\n"
                "tls = { certificate = \"@DIR@/cert2.pem\"; key = \"@DIR@/key.pem\"; };\n"
                "http = { threads = 4; };\n"
                "database = { conninfo = \"dbname=b\"; };\n" EP);
    memset(buf, 'X', sizeof(buf));
    cr_assert_eq(cfg_restart_changes(a, b, buf, 8), buf);
    cr_assert_lt(strlen(buf), 8);
    for (size_t i = 8; i < sizeof(buf); i++) {
        cr_assert_eq(buf[i], 'X', "wrote past cap at %zu", i);
    }
    cfg_free(a);
    cfg_free(b);
}
