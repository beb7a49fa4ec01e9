/* SPDX-License-Identifier: MIT */
/*
 * Unit tests for verify: HMAC-SHA256 (RFC 4231 vectors), Standard Webhooks
 * keys and signatures (the example of the public Standard Webhooks spec),
 * and the contextgpt token/signature scheme.
 *
 * Expected MACs other than the RFC vectors were computed once with
 *   printf '%s' BYTES | openssl dgst -sha256 -mac HMAC -macopt key:SECRET
 * and are written here as fixed values.
 */
#include <criterion/criterion.h>

#include <ctype.h>
#include <string.h>
#include <strings.h>

#include "codec.h"
#include "verify.h"

/* ---- a static header table for verify_header_fn ------------------------- */

struct hdr {
    const char *name;
    const char *value;
};

/* ctx is an array of struct hdr ending with { NULL, NULL }. */
static const char *
table_header(void *ctx, const char *name, int index)
{
    const struct hdr *h = ctx;
    int seen = 0;

    for (; h->name != NULL; h++) {
        if (strcasecmp(h->name, name) != 0) {
            continue;
        }
        if (seen == index) {
            return h->value;
        }
        seen++;
    }
    return NULL;
}


#define UNTOUCHED "untouched"

/*
 * Runs verify_check over the header table and body. Also checks the
 * ret_used contract: set on VERIFY_OK, left alone otherwise.
 */
static enum verify_result
run_check(const struct verify_policy *p, const struct hdr *hdrs,
          const char *body, size_t body_len, time_t now, const char **used)
{
    struct verify_request req = {
        .vr_header = table_header,
        .vr_ctx = (void *)hdrs,
        .vr_body = (const unsigned char *)body,
        .vr_body_len = body_len,
        .vr_now = now,
    };
    enum verify_result r;

    *used = UNTOUCHED;
    r = verify_check(p, &req, used);
    if (r != VERIFY_OK) {
        cr_assert_str_eq(*used, UNTOUCHED, "ret_used written on failure");
    } else {
        cr_assert_str_neq(*used, UNTOUCHED, "ret_used not set on success");
    }
    return r;
}


/* ---- RFC 4231 HMAC-SHA256 ------------------------------------------------ */

struct rfc4231_case {
    unsigned char key[131];
    size_t key_len;
    const char *data;       /* NULL: data_byte repeated data_len times */
    unsigned char data_byte;
    size_t data_len;
    const char *mac_hex;    /* may be a prefix (case 5: 128 bits) */
};

static void
rfc4231_case(int number, struct rfc4231_case *c)
{
    memset(c, 0, sizeof(*c));
    switch (number) {
    case 1:
        memset(c->key, 0x0b, 20);
        c->key_len = 20;
        c->data = "Hi There";
        c->mac_hex = "b0344c61d8db38535ca8afceaf0bf12b"
                     "881dc200c9833da726e9376c2e32cff7";
        break;
    case 2:
        memcpy(c->key, "Jefe", 4);
        c->key_len = 4;
        c->data = "what do ya want for nothing?";
        c->mac_hex = "5bdcc146bf60754e6a042426089575c7"
                     "5a003f089d2739839dec58b964ec3843";
        break;
    case 3:
        memset(c->key, 0xaa, 20);
        c->key_len = 20;
        c->data_byte = 0xdd;
        c->data_len = 50;
        c->mac_hex = "773ea91e36800e46854db8ebd09181a7"
                     "2959098b3ef8c122d9635514ced565fe";
        break;
    case 4:
        for (size_t i = 0; i < 25; i++) {
            c->key[i] = (unsigned char)(i + 1);
        }
        c->key_len = 25;
        c->data_byte = 0xcd;
        c->data_len = 50;
        c->mac_hex = "82558a389a443c0ea4cc819899f2083a"
                     "85f0faa3e578f8077a2e3ff46729665b";
        break;
    case 5:
        memset(c->key, 0x0c, 20);
        c->key_len = 20;
        c->data = "Test With Truncation";
        c->mac_hex = "a3b6167473100ee06e0c796c2955552b";
        break;
    case 6:
        memset(c->key, 0xaa, 131);
        c->key_len = 131;
        c->data = "Test Using Larger Than Block-Size Key - Hash Key First";
        c->mac_hex = "60e431591ee0b67f0d8a26aacbf5b77f"
                     "8e0bc6213728c5140546040f0ee37f54";
        break;
    case 7:
        memset(c->key, 0xaa, 131);
        c->key_len = 131;
        c->data = "This is a test using a larger than block-size key and a "
                  "larger than block-size data. The key needs to be hashed "
                  "before being used by the HMAC algorithm.";
        c->mac_hex = "9b09ffa71b942fcb27635fbcd5b0e944"
                     "bfdc63644f0713938a7f51535c3a35e2";
        break;
    default:
        cr_assert_fail("no RFC 4231 case %d", number);
    }
}


/* Fills buf with the case's data and returns its length. */
static size_t
rfc4231_data(const struct rfc4231_case *c, unsigned char *buf, size_t cap)
{
    size_t len = c->data != NULL ? strlen(c->data) : c->data_len;

    cr_assert_leq(len, cap);
    if (c->data != NULL) {
        memcpy(buf, c->data, len);
    } else {
        memset(buf, c->data_byte, len);
    }
    return len;
}


static void
assert_mac_hex(const unsigned char mac[VERIFY_MAC_LEN], const char *want,
               int number)
{
    char hex[2 * VERIFY_MAC_LEN + 1];

    codec_hex_encode(mac, VERIFY_MAC_LEN, hex);
    cr_assert_eq(strncmp(hex, want, strlen(want)), 0,
                 "RFC 4231 case %d: got %s, want %s", number, hex, want);
}


Test(verify_hmac, rfc4231_cases_1_to_7_single_part)
{
    for (int number = 1; number <= 7; number++) {
        struct rfc4231_case c;
        unsigned char data[256];
        unsigned char mac[VERIFY_MAC_LEN];
        size_t len;
        const void *parts[1];
        size_t lens[1];

        rfc4231_case(number, &c);
        len = rfc4231_data(&c, data, sizeof(data));
        parts[0] = data;
        lens[0] = len;
        cr_assert(verify_hmac_sha256(c.key, c.key_len, parts, lens, 1, mac));
        assert_mac_hex(mac, c.mac_hex, number);
    }
}


Test(verify_hmac, rfc4231_cases_split_parts_give_same_mac)
{
    for (int number = 1; number <= 7; number++) {
        struct rfc4231_case c;
        unsigned char data[256];
        unsigned char mac[VERIFY_MAC_LEN];
        size_t len;

        rfc4231_case(number, &c);
        len = rfc4231_data(&c, data, sizeof(data));

        /* Every split point, with an empty part in the middle. */
        for (size_t cut = 0; cut <= len; cut++) {
            const void *parts[3] = { data, "", data + cut };
            size_t lens[3] = { cut, 0, len - cut };

            cr_assert(verify_hmac_sha256(c.key, c.key_len, parts, lens, 3,
                                         mac));
            assert_mac_hex(mac, c.mac_hex, number);
        }

        /* One byte per part. */
        {
            const void *parts[256];
            size_t lens[256];

            for (size_t i = 0; i < len; i++) {
                parts[i] = data + i;
                lens[i] = 1;
            }
            cr_assert(verify_hmac_sha256(c.key, c.key_len, parts, lens, len,
                                         mac));
            assert_mac_hex(mac, c.mac_hex, number);
        }
    }
}


Test(verify_hmac, empty_key_and_no_parts_is_hmac_of_empty_message)
{
    /* openssl dgst -sha256 -hmac '' of the empty input. */
    static const char want[] =
        "b613679a0814d9ec772f95d778c35fc5ff1697c493715653c6c712144292c5ad";
    unsigned char mac[VERIFY_MAC_LEN];

    cr_assert(verify_hmac_sha256((const unsigned char *)"", 0, NULL, NULL, 0,
                                 mac));
    assert_mac_hex(mac, want, 0);
}


/* ---- verify_standard_key ------------------------------------------------- */

#define STD_SECRET "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
#define STD_SECRET_BARE "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

static const unsigned char std_key[24] = {
    0x31, 0xf2, 0x90, 0xf6, 0xbf, 0x06, 0x29, 0x8a, 0xab, 0x4f, 0x08, 0xd4,
    0x3c, 0x3f, 0x08, 0x2c, 0xf6, 0x48, 0xa3, 0x62, 0xda, 0x2d, 0xa4, 0xb0,
};

Test(verify_standard_key, whsec_prefix_decoded)
{
    unsigned char key[64];

    cr_assert_eq(verify_standard_key(STD_SECRET, key, sizeof(key)), 24);
    cr_assert_arr_eq(key, std_key, sizeof(std_key));
}


Test(verify_standard_key, bare_base64_decoded)
{
    unsigned char key[64];

    cr_assert_eq(verify_standard_key(STD_SECRET_BARE, key, sizeof(key)), 24);
    cr_assert_arr_eq(key, std_key, sizeof(std_key));
}


Test(verify_standard_key, garbage_rejected)
{
    unsigned char key[64];

    cr_assert_eq(verify_standard_key("whsec_not base64!", key, sizeof(key)),
                 -1);
    cr_assert_eq(verify_standard_key("secret with spaces", key, sizeof(key)),
                 -1);
    cr_assert_eq(verify_standard_key("whsec_Zh==", key, sizeof(key)), -1);
    cr_assert_eq(verify_standard_key("whsec_MfKQ9r8G=", key, sizeof(key)),
                 -1);
}


Test(verify_standard_key, too_small_output_rejected)
{
    unsigned char key[64];

    cr_assert_eq(verify_standard_key(STD_SECRET, key, 23), -1);
    cr_assert_eq(verify_standard_key(STD_SECRET, key, 24), 24);
}


/* ---- Standard Webhooks --------------------------------------------------- */

#define STD_ID "msg_p5jXN8AQM9LWM0D4loKWxJek"
#define STD_TS "1614265330"
#define STD_NOW ((time_t)1614265330)
#define STD_BODY "{\"test\": 2432232314}"
#define STD_SIG "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
/* A well-formed v1 signature that belongs to something else. */
#define STD_DECOY "v1,3QYx4dgqBpjB6O6hDuIjG/n8QtsAtelDMNTJ1Kk9wc0="

static struct verify_secret std_secret = {
    .vs_text = STD_SECRET,
    .vs_text_len = sizeof(STD_SECRET) - 1,
    .vs_key = std_key,
    .vs_key_len = sizeof(std_key),
};

static const struct verify_policy std_policy = {
    .vp_scheme = VERIFY_SCHEME_STANDARD,
    .vp_tolerance = 300,
    .vp_secrets = &std_secret,
    .vp_nsecrets = 1,
};


static enum verify_result
std_run(const char *id, const char *ts, const char *sig, const char *body,
        time_t now, const char **used)
{
    struct hdr hdrs[4];
    size_t n = 0;

    if (id != NULL) {
        hdrs[n++] = (struct hdr){ "webhook-id", id };
    }
    if (ts != NULL) {
        hdrs[n++] = (struct hdr){ "Webhook-Timestamp", ts };
    }
    if (sig != NULL) {
        hdrs[n++] = (struct hdr){ "WEBHOOK-SIGNATURE", sig };
    }
    hdrs[n] = (struct hdr){ NULL, NULL };
    return run_check(&std_policy, hdrs, body, strlen(body), now, used);
}


Test(verify_standard, spec_example_verifies)
{
    const char *used;

    cr_assert_eq(std_run(STD_ID, STD_TS, STD_SIG, STD_BODY, STD_NOW, &used),
                 VERIFY_OK);
    cr_assert_str_eq(used, "standard-webhooks");
}


Test(verify_standard, spec_example_within_tolerance_verifies)
{
    const char *used;

    cr_assert_eq(std_run(STD_ID, STD_TS, STD_SIG, STD_BODY, STD_NOW + 300,
                         &used), VERIFY_OK);
    cr_assert_eq(std_run(STD_ID, STD_TS, STD_SIG, STD_BODY, STD_NOW - 300,
                         &used), VERIFY_OK);
}


Test(verify_standard, stale_timestamp_rejected)
{
    const char *used;

    cr_assert_eq(std_run(STD_ID, STD_TS, STD_SIG, STD_BODY, STD_NOW + 301,
                         &used), VERIFY_STALE_TIMESTAMP);
}


Test(verify_standard, future_timestamp_rejected)
{
    const char *used;

    cr_assert_eq(std_run(STD_ID, STD_TS, STD_SIG, STD_BODY, STD_NOW - 301,
                         &used), VERIFY_STALE_TIMESTAMP);
}


Test(verify_standard, body_changed_one_byte_rejected)
{
    const char *used;

    cr_assert_eq(std_run(STD_ID, STD_TS, STD_SIG, "{\"test\": 2432232315}",
                         STD_NOW, &used), VERIFY_BAD_SIGNATURE);
}


Test(verify_standard, id_changed_rejected)
{
    const char *used;

    cr_assert_eq(std_run("msg_p5jXN8AQM9LWM0D4loKWxJel", STD_TS, STD_SIG,
                         STD_BODY, STD_NOW, &used), VERIFY_BAD_SIGNATURE);
}


Test(verify_standard, timestamp_changed_rejected)
{
    const char *used;

    cr_assert_eq(std_run(STD_ID, "1614265331", STD_SIG, STD_BODY, STD_NOW,
                         &used), VERIFY_BAD_SIGNATURE);
}


Test(verify_standard, only_other_versions_rejected)
{
    const char *used;
    enum verify_result r;

    /* The right MAC, but labelled v2: must not be taken as v1. */
    r = std_run(STD_ID, STD_TS,
                "v2,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE= v2,abc",
                STD_BODY, STD_NOW, &used);
    cr_assert(r == VERIFY_BAD_SIGNATURE || r == VERIFY_MISSING_SIGNATURE,
              "got %s", verify_result_name(r));
}


Test(verify_standard, valid_signature_first_of_several_accepted)
{
    const char *used;

    cr_assert_eq(std_run(STD_ID, STD_TS,
                         STD_SIG " " STD_DECOY " v2,Zm9vYmFy",
                         STD_BODY, STD_NOW, &used), VERIFY_OK);
}


Test(verify_standard, valid_signature_last_of_several_accepted)
{
    const char *used;

    cr_assert_eq(std_run(STD_ID, STD_TS,
                         "v2,Zm9vYmFy " STD_DECOY " " STD_SIG,
                         STD_BODY, STD_NOW, &used), VERIFY_OK);
}


Test(verify_standard, only_wrong_signatures_rejected)
{
    const char *used;

    cr_assert_eq(std_run(STD_ID, STD_TS, STD_DECOY " " STD_DECOY, STD_BODY,
                         STD_NOW, &used), VERIFY_BAD_SIGNATURE);
}


Test(verify_standard, missing_id_rejected)
{
    const char *used;

    cr_assert_eq(std_run(NULL, STD_TS, STD_SIG, STD_BODY, STD_NOW, &used),
                 VERIFY_MISSING_ID);
}


Test(verify_standard, missing_timestamp_rejected)
{
    const char *used;

    cr_assert_eq(std_run(STD_ID, NULL, STD_SIG, STD_BODY, STD_NOW, &used),
                 VERIFY_MISSING_TIMESTAMP);
}


Test(verify_standard, non_numeric_timestamp_rejected)
{
    const char *used;

    cr_assert_eq(std_run(STD_ID, "16142653x0", STD_SIG, STD_BODY, STD_NOW,
                         &used), VERIFY_BAD_TIMESTAMP);
}


Test(verify_standard, missing_signature_rejected)
{
    const char *used;

    cr_assert_eq(std_run(STD_ID, STD_TS, NULL, STD_BODY, STD_NOW, &used),
                 VERIFY_MISSING_SIGNATURE);
}


Test(verify_standard, no_headers_no_credentials)
{
    const char *used;

    cr_assert_eq(std_run(NULL, NULL, NULL, STD_BODY, STD_NOW, &used),
                 VERIFY_NO_CREDENTIALS);
}


Test(verify_standard, rotated_second_secret_accepted)
{
    static const unsigned char other_key[24] = { 1, 2, 3 };
    struct verify_secret secrets[2] = {
        { "whsec_other", 11, other_key, sizeof(other_key) },
        std_secret,
    };
    struct verify_policy p = std_policy;
    struct hdr hdrs[] = {
        { "webhook-id", STD_ID },
        { "webhook-timestamp", STD_TS },
        { "webhook-signature", STD_SIG },
        { NULL, NULL },
    };
    const char *used;

    p.vp_secrets = secrets;
    p.vp_nsecrets = 2;
    cr_assert_eq(run_check(&p, hdrs, STD_BODY, strlen(STD_BODY), STD_NOW,
                           &used), VERIFY_OK);
    p.vp_nsecrets = 1;
    cr_assert_eq(run_check(&p, hdrs, STD_BODY, strlen(STD_BODY), STD_NOW,
                           &used), VERIFY_BAD_SIGNATURE);
}


/* ---- contextgpt ---------------------------------------------------------- */

#define SECRET_A "ctx-secret-alpha-0001"
#define SECRET_B "ctx-secret-bravo-0002"
#define SECRET_C "ctx-secret-other-0003"

/* 51 bytes, ending in one LF, like the real samples. */
#define BODY "{\"event\":\"NEW_MESSAGE\",\"data\":{\"messageId\":\"m-1\"}}\n"
#define BODY_ONE_BYTE_CHANGED \
    "{\"event\":\"NEW_MESSAGE\",\"data\":{\"messageId\":\"m-2\"}}\n"

/* HMAC-SHA256(SECRET_A, BODY) */
#define MAC_A "dd0631e1d82a0698c1e8eea10ee2231bf9fc42db00b5e94330d4c9d4a93dc1cd"
#define MAC_A_UPPER \
    "DD0631E1D82A0698C1E8EEA10EE2231BF9FC42DB00B5E94330D4C9D4A93DC1CD"
#define MAC_A_B64 "3QYx4dgqBpjB6O6hDuIjG/n8QtsAtelDMNTJ1Kk9wc0="
/* HMAC-SHA256(SECRET_B, BODY) */
#define MAC_B "95bd29722df5b3032634e5cb0fc16e1c6c5576151bb79ca314b3521de1beac90"
/* HMAC-SHA256(SECRET_C, BODY) */
#define MAC_C "15f3590df6685066190ddbfd9a1c7c026cd59319dd88af736746e66914249b1f"
/* HMAC-SHA256(SECRET_A, BODY without its final LF) */
#define MAC_A_NOLF \
    "211bc9ce2c3cc0955f5c4cf38768a690efb0afbb9f0b0ca4821913b968a717b7"
/* HMAC-SHA256(SECRET_A, "1700000000." BODY) */
#define MAC_A_TS \
    "5d295b769faa04acc50f5b93c8c34f0dd319bcbd63b6edf0be2b79989c9220f9"

#define TS "1700000000"
#define NOW ((time_t)1700000000)

#define TOK_H "X-WEBHOOK-TOKEN"
#define SIG_H "X-WEBHOOK-SIGNATURE"
#define TS_H "X-WEBHOOK-TIMESTAMP"

#define SECRET_INIT(s) \
    { s, sizeof(s) - 1, (const unsigned char *)(s), sizeof(s) - 1 }

static const struct verify_secret secret_a[] = { SECRET_INIT(SECRET_A) };
/* Rotation: NEW (B) first, OLD (A) second. */
static const struct verify_secret secrets_ba[] = {
    SECRET_INIT(SECRET_B),
    SECRET_INIT(SECRET_A),
};


static struct verify_policy
ctx_policy(enum verify_require require)
{
    struct verify_policy p = {
        .vp_scheme = VERIFY_SCHEME_CONTEXTGPT,
        .vp_require = require,
        .vp_encoding = VERIFY_ENCODING_HEX,
        .vp_token_header = TOK_H,
        .vp_signature_header = SIG_H,
        .vp_signature_prefix = "sha256=",
        .vp_timestamp_header = "",
        .vp_tolerance = 300,
        .vp_secrets = secret_a,
        .vp_nsecrets = 1,
    };

    return p;
}


static enum verify_result
ctx_run(const struct verify_policy *p, const struct hdr *hdrs,
        const char **used)
{
    return run_check(p, hdrs, BODY, strlen(BODY), NOW, used);
}


/* Header tables, named by what they carry. */
static const struct hdr h_tok_sig[] = {
    { TOK_H, SECRET_A }, { SIG_H, "sha256=" MAC_A }, { NULL, NULL },
};
static const struct hdr h_tok_only[] = {
    { TOK_H, SECRET_A }, { NULL, NULL },
};
static const struct hdr h_sig_only[] = {
    { SIG_H, "sha256=" MAC_A }, { NULL, NULL },
};
static const struct hdr h_none[] = {
    { "Content-Type", "application/json" }, { NULL, NULL },
};
static const struct hdr h_badtok_sig[] = {
    { TOK_H, SECRET_C }, { SIG_H, "sha256=" MAC_A }, { NULL, NULL },
};
static const struct hdr h_tok_badsig[] = {
    { TOK_H, SECRET_A }, { SIG_H, "sha256=" MAC_C }, { NULL, NULL },
};


/* -- accepted encodings -- */

Test(verify_contextgpt, token_and_hex_signature_ok)
{
    struct verify_policy p = ctx_policy(VERIFY_REQUIRE_BOTH);
    const char *used;

    cr_assert_eq(ctx_run(&p, h_tok_sig, &used), VERIFY_OK);
    cr_assert_str_eq(used, "token+signature");
}


Test(verify_contextgpt, header_names_case_insensitive)
{
    struct verify_policy p = ctx_policy(VERIFY_REQUIRE_BOTH);
    const struct hdr h[] = {
        { "x-webhook-token", SECRET_A },
        { "X-Webhook-Signature", "sha256=" MAC_A },
        { NULL, NULL },
    };
    const char *used;

    cr_assert_eq(ctx_run(&p, h, &used), VERIFY_OK);
}


Test(verify_contextgpt, uppercase_hex_signature_ok)
{
    struct verify_policy p = ctx_policy(VERIFY_REQUIRE_BOTH);
    const struct hdr h[] = {
        { TOK_H, SECRET_A }, { SIG_H, "sha256=" MAC_A_UPPER }, { NULL, NULL },
    };
    const char *used;

    cr_assert_eq(ctx_run(&p, h, &used), VERIFY_OK);
}


Test(verify_contextgpt, hex_signature_without_prefix_ok)
{
    struct verify_policy p = ctx_policy(VERIFY_REQUIRE_BOTH);
    const struct hdr lower[] = {
        { TOK_H, SECRET_A }, { SIG_H, MAC_A }, { NULL, NULL },
    };
    const struct hdr upper[] = {
        { TOK_H, SECRET_A }, { SIG_H, MAC_A_UPPER }, { NULL, NULL },
    };
    const char *used;

    cr_assert_eq(ctx_run(&p, lower, &used), VERIFY_OK);
    cr_assert_eq(ctx_run(&p, upper, &used), VERIFY_OK);
}


Test(verify_contextgpt, base64_signature_ok_when_policy_base64)
{
    struct verify_policy p = ctx_policy(VERIFY_REQUIRE_BOTH);
    const struct hdr bare[] = {
        { TOK_H, SECRET_A }, { SIG_H, MAC_A_B64 }, { NULL, NULL },
    };
    const struct hdr prefixed[] = {
        { TOK_H, SECRET_A }, { SIG_H, "sha256=" MAC_A_B64 }, { NULL, NULL },
    };
    const char *used;

    p.vp_encoding = VERIFY_ENCODING_BASE64;
    cr_assert_eq(ctx_run(&p, bare, &used), VERIFY_OK);
    cr_assert_eq(ctx_run(&p, prefixed, &used), VERIFY_OK);
}


Test(verify_contextgpt, hex_signature_rejected_when_policy_base64)
{
    struct verify_policy p = ctx_policy(VERIFY_REQUIRE_BOTH);
    const char *used;

    p.vp_encoding = VERIFY_ENCODING_BASE64;
    cr_assert_eq(ctx_run(&p, h_tok_sig, &used), VERIFY_BAD_SIGNATURE);
}


Test(verify_contextgpt, base64_signature_rejected_when_policy_hex)
{
    struct verify_policy p = ctx_policy(VERIFY_REQUIRE_BOTH);
    const struct hdr h[] = {
        { TOK_H, SECRET_A }, { SIG_H, MAC_A_B64 }, { NULL, NULL },
    };
    const char *used;

    cr_assert_eq(ctx_run(&p, h, &used), VERIFY_BAD_SIGNATURE);
}


Test(verify_contextgpt, malformed_or_empty_signature_rejected)
{
    struct verify_policy p = ctx_policy(VERIFY_REQUIRE_BOTH);
    const char *bad[] = {
        "", "sha256=", "sha256=zz", MAC_A "00", "sha256=" MAC_A_NOLF,
    };
    const char *used;

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        const struct hdr h[] = {
            { TOK_H, SECRET_A }, { SIG_H, bad[i] }, { NULL, NULL },
        };

        cr_assert_eq(ctx_run(&p, h, &used), VERIFY_BAD_SIGNATURE,
                     "signature case %zu", i);
    }
}


/* -- require modes, each credential missing -- */

Test(verify_contextgpt, require_both_missing_token_rejected)
{
    struct verify_policy p = ctx_policy(VERIFY_REQUIRE_BOTH);
    const char *used;

    cr_assert_eq(ctx_run(&p, h_sig_only, &used), VERIFY_MISSING_TOKEN);
}


Test(verify_contextgpt, require_both_missing_signature_rejected)
{
    struct verify_policy p = ctx_policy(VERIFY_REQUIRE_BOTH);
    const char *used;

    cr_assert_eq(ctx_run(&p, h_tok_only, &used), VERIFY_MISSING_SIGNATURE);
}


Test(verify_contextgpt, require_signature_missing_token_ok)
{
    struct verify_policy p = ctx_policy(VERIFY_REQUIRE_SIGNATURE);
    const char *used;

    cr_assert_eq(ctx_run(&p, h_sig_only, &used), VERIFY_OK);
    cr_assert_str_eq(used, "signature");
}


Test(verify_contextgpt, require_signature_missing_signature_rejected)
{
    struct verify_policy p = ctx_policy(VERIFY_REQUIRE_SIGNATURE);
    const char *used;

    cr_assert_eq(ctx_run(&p, h_tok_only, &used), VERIFY_MISSING_SIGNATURE);
}


Test(verify_contextgpt, require_token_missing_token_rejected)
{
    struct verify_policy p = ctx_policy(VERIFY_REQUIRE_TOKEN);
    const char *used;

    cr_assert_eq(ctx_run(&p, h_sig_only, &used), VERIFY_MISSING_TOKEN);
}


Test(verify_contextgpt, require_token_missing_signature_ok)
{
    struct verify_policy p = ctx_policy(VERIFY_REQUIRE_TOKEN);
    const char *used;

    cr_assert_eq(ctx_run(&p, h_tok_only, &used), VERIFY_OK);
    cr_assert_str_eq(used, "token");
}


Test(verify_contextgpt, require_any_missing_token_ok)
{
    struct verify_policy p = ctx_policy(VERIFY_REQUIRE_ANY);
    const char *used;

    cr_assert_eq(ctx_run(&p, h_sig_only, &used), VERIFY_OK);
    cr_assert_str_eq(used, "signature");
}


Test(verify_contextgpt, require_any_missing_signature_ok)
{
    struct verify_policy p = ctx_policy(VERIFY_REQUIRE_ANY);
    const char *used;

    cr_assert_eq(ctx_run(&p, h_tok_only, &used), VERIFY_OK);
    cr_assert_str_eq(used, "token");
}


Test(verify_contextgpt, require_any_both_present_checks_both)
{
    struct verify_policy p = ctx_policy(VERIFY_REQUIRE_ANY);
    const char *used;

    cr_assert_eq(ctx_run(&p, h_tok_sig, &used), VERIFY_OK);
    cr_assert_str_eq(used, "token+signature");
}


Test(verify_contextgpt, every_require_mode_no_credentials_rejected)
{
    const enum verify_require modes[] = {
        VERIFY_REQUIRE_BOTH, VERIFY_REQUIRE_SIGNATURE,
        VERIFY_REQUIRE_TOKEN, VERIFY_REQUIRE_ANY,
    };
    const char *used;

    for (size_t i = 0; i < sizeof(modes) / sizeof(modes[0]); i++) {
        struct verify_policy p = ctx_policy(modes[i]);

        cr_assert_eq(ctx_run(&p, h_none, &used), VERIFY_NO_CREDENTIALS,
                     "require mode %d", (int)modes[i]);
    }
}


/* -- a present credential is always checked -- */

Test(verify_contextgpt, wrong_token_rejected_even_when_only_signature_required)
{
    struct verify_policy p = ctx_policy(VERIFY_REQUIRE_SIGNATURE);
    const char *used;

    cr_assert_eq(ctx_run(&p, h_badtok_sig, &used), VERIFY_BAD_TOKEN);
}


Test(verify_contextgpt, wrong_signature_rejected_even_when_only_token_required)
{
    struct verify_policy p = ctx_policy(VERIFY_REQUIRE_TOKEN);
    const char *used;

    cr_assert_eq(ctx_run(&p, h_tok_badsig, &used), VERIFY_BAD_SIGNATURE);
}


Test(verify_contextgpt, require_any_wrong_token_or_signature_rejected)
{
    struct verify_policy p = ctx_policy(VERIFY_REQUIRE_ANY);
    const char *used;

    cr_assert_eq(ctx_run(&p, h_badtok_sig, &used), VERIFY_BAD_TOKEN);
    cr_assert_eq(ctx_run(&p, h_tok_badsig, &used), VERIFY_BAD_SIGNATURE);
}


Test(verify_contextgpt, require_both_wrong_token_or_signature_rejected)
{
    struct verify_policy p = ctx_policy(VERIFY_REQUIRE_BOTH);
    const char *used;

    cr_assert_eq(ctx_run(&p, h_badtok_sig, &used), VERIFY_BAD_TOKEN);
    cr_assert_eq(ctx_run(&p, h_tok_badsig, &used), VERIFY_BAD_SIGNATURE);
}


Test(verify_contextgpt, token_prefix_or_extension_of_secret_rejected)
{
    struct verify_policy p = ctx_policy(VERIFY_REQUIRE_TOKEN);
    const char *bad[] = {
        "", "ctx-secret-alpha-000", SECRET_A "1", SECRET_A " ",
        "CTX-SECRET-ALPHA-0001",
    };
    const char *used;

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        const struct hdr h[] = { { TOK_H, bad[i] }, { NULL, NULL } };

        cr_assert_eq(ctx_run(&p, h, &used), VERIFY_BAD_TOKEN,
                     "token case %zu", i);
    }
}


/* -- rotation -- */

Test(verify_contextgpt, rotated_second_secret_accepted)
{
    struct verify_policy p = ctx_policy(VERIFY_REQUIRE_SIGNATURE);
    const char *used;

    p.vp_secrets = secrets_ba;
    p.vp_nsecrets = 2;
    cr_assert_eq(ctx_run(&p, h_sig_only, &used), VERIFY_OK);
}


Test(verify_contextgpt, rotated_first_secret_accepted)
{
    struct verify_policy p = ctx_policy(VERIFY_REQUIRE_SIGNATURE);
    const struct hdr h[] = { { SIG_H, "sha256=" MAC_B }, { NULL, NULL } };
    const char *used;

    p.vp_secrets = secrets_ba;
    p.vp_nsecrets = 2;
    cr_assert_eq(ctx_run(&p, h, &used), VERIFY_OK);
}


Test(verify_contextgpt, rotated_second_secret_token_accepted)
{
    struct verify_policy p = ctx_policy(VERIFY_REQUIRE_TOKEN);
    const char *used;

    p.vp_secrets = secrets_ba;
    p.vp_nsecrets = 2;
    cr_assert_eq(ctx_run(&p, h_tok_only, &used), VERIFY_OK);
}


Test(verify_contextgpt, rotated_second_secret_token_and_signature_accepted)
{
    struct verify_policy p = ctx_policy(VERIFY_REQUIRE_BOTH);
    const char *used;

    p.vp_secrets = secrets_ba;
    p.vp_nsecrets = 2;
    cr_assert_eq(ctx_run(&p, h_tok_sig, &used), VERIFY_OK);
}


Test(verify_contextgpt, unrelated_secret_rejected_after_rotation)
{
    struct verify_policy p = ctx_policy(VERIFY_REQUIRE_SIGNATURE);
    const struct hdr sig[] = { { SIG_H, "sha256=" MAC_C }, { NULL, NULL } };
    const struct hdr tok[] = { { TOK_H, SECRET_C }, { NULL, NULL } };
    const char *used;

    p.vp_secrets = secrets_ba;
    p.vp_nsecrets = 2;
    cr_assert_eq(ctx_run(&p, sig, &used), VERIFY_BAD_SIGNATURE);
    p.vp_require = VERIFY_REQUIRE_TOKEN;
    cr_assert_eq(ctx_run(&p, tok, &used), VERIFY_BAD_TOKEN);
}


Test(verify_contextgpt, removed_old_secret_rejected)
{
    struct verify_policy p = ctx_policy(VERIFY_REQUIRE_SIGNATURE);
    const char *used;

    /* Only NEW (B) left: A's signature and token no longer pass. */
    p.vp_secrets = secrets_ba;
    p.vp_nsecrets = 1;
    cr_assert_eq(ctx_run(&p, h_sig_only, &used), VERIFY_BAD_SIGNATURE);
    p.vp_require = VERIFY_REQUIRE_TOKEN;
    cr_assert_eq(ctx_run(&p, h_tok_only, &used), VERIFY_BAD_TOKEN);
}


/* -- several signatures -- */

static void
assert_sig_header_ok(const char *value)
{
    struct verify_policy p = ctx_policy(VERIFY_REQUIRE_SIGNATURE);
    const struct hdr h[] = { { SIG_H, value }, { NULL, NULL } };
    const char *used;

    cr_assert_eq(ctx_run(&p, h, &used), VERIFY_OK, "header: %s", value);
}


Test(verify_contextgpt, comma_separated_signatures_right_one_first_accepted)
{
    assert_sig_header_ok("sha256=" MAC_A ",sha256=" MAC_C);
    assert_sig_header_ok(MAC_A "," MAC_C "," MAC_B);
}


Test(verify_contextgpt, comma_separated_signatures_right_one_last_accepted)
{
    assert_sig_header_ok("sha256=" MAC_C ",sha256=" MAC_A);
    assert_sig_header_ok("sha256=" MAC_C ", sha256=" MAC_B ", sha256=" MAC_A);
}


Test(verify_contextgpt, space_separated_signatures_right_one_first_accepted)
{
    assert_sig_header_ok("sha256=" MAC_A " sha256=" MAC_C);
}


Test(verify_contextgpt, space_separated_signatures_right_one_last_accepted)
{
    assert_sig_header_ok("sha256=" MAC_C " sha256=" MAC_B " sha256=" MAC_A);
    assert_sig_header_ok(MAC_C " " MAC_A);
}


Test(verify_contextgpt, several_signatures_all_wrong_rejected)
{
    struct verify_policy p = ctx_policy(VERIFY_REQUIRE_SIGNATURE);
    const struct hdr h[] = {
        { SIG_H, "sha256=" MAC_C ",sha256=" MAC_B " " MAC_A_NOLF },
        { NULL, NULL },
    };
    const char *used;

    cr_assert_eq(ctx_run(&p, h, &used), VERIFY_BAD_SIGNATURE);
}


Test(verify_contextgpt, repeated_signature_header_right_one_first_accepted)
{
    struct verify_policy p = ctx_policy(VERIFY_REQUIRE_SIGNATURE);
    const struct hdr h[] = {
        { SIG_H, "sha256=" MAC_A },
        { TOK_H, SECRET_A },
        { SIG_H, "sha256=" MAC_C },
        { NULL, NULL },
    };
    const char *used;

    cr_assert_eq(ctx_run(&p, h, &used), VERIFY_OK);
}


Test(verify_contextgpt, repeated_signature_header_right_one_last_accepted)
{
    struct verify_policy p = ctx_policy(VERIFY_REQUIRE_SIGNATURE);
    const struct hdr h[] = {
        { SIG_H, "sha256=" MAC_C },
        { SIG_H, "sha256=" MAC_A },
        { NULL, NULL },
    };
    const char *used;

    cr_assert_eq(ctx_run(&p, h, &used), VERIFY_OK);
}


Test(verify_contextgpt, repeated_signature_header_all_wrong_rejected)
{
    struct verify_policy p = ctx_policy(VERIFY_REQUIRE_SIGNATURE);
    const struct hdr h[] = {
        { SIG_H, "sha256=" MAC_C },
        { SIG_H, "sha256=" MAC_B },
        { NULL, NULL },
    };
    const char *used;

    cr_assert_eq(ctx_run(&p, h, &used), VERIFY_BAD_SIGNATURE);
}


Test(verify_contextgpt, repeated_token_header_with_wrong_first_rejected)
{
    struct verify_policy p = ctx_policy(VERIFY_REQUIRE_TOKEN);
    const struct hdr h[] = {
        { TOK_H, SECRET_C },
        { TOK_H, SECRET_A },
        { NULL, NULL },
    };
    const char *used;

    cr_assert_eq(ctx_run(&p, h, &used), VERIFY_BAD_TOKEN);
}


/* -- exact body bytes (case C01) -- */

Test(verify_contextgpt, mac_over_body_without_final_lf_rejected)
{
    struct verify_policy p = ctx_policy(VERIFY_REQUIRE_SIGNATURE);
    const struct hdr h[] = { { SIG_H, "sha256=" MAC_A_NOLF }, { NULL, NULL } };
    const char *used;

    cr_assert_eq(ctx_run(&p, h, &used), VERIFY_BAD_SIGNATURE);
}


Test(verify_contextgpt, body_changed_one_byte_rejected)
{
    struct verify_policy p = ctx_policy(VERIFY_REQUIRE_SIGNATURE);
    const char *used;

    cr_assert_eq(run_check(&p, h_sig_only, BODY_ONE_BYTE_CHANGED,
                           strlen(BODY_ONE_BYTE_CHANGED), NOW, &used),
                 VERIFY_BAD_SIGNATURE);
}


Test(verify_contextgpt, body_length_used_not_nul_terminator)
{
    struct verify_policy p = ctx_policy(VERIFY_REQUIRE_SIGNATURE);
    const char with_tail[] = BODY "trailing bytes beyond vr_body_len";
    const char *used;

    cr_assert_eq(run_check(&p, h_sig_only, with_tail, strlen(BODY), NOW,
                           &used), VERIFY_OK);
    cr_assert_eq(run_check(&p, h_sig_only, with_tail, strlen(BODY) - 1, NOW,
                           &used), VERIFY_BAD_SIGNATURE);
}


/* -- timestamp header -- */

static enum verify_result
ts_run(const char *ts, const char *sig, time_t now)
{
    struct verify_policy p = ctx_policy(VERIFY_REQUIRE_BOTH);
    struct hdr h[4] = {
        { TOK_H, SECRET_A }, { SIG_H, sig }, { NULL, NULL }, { NULL, NULL },
    };
    const char *used;

    p.vp_timestamp_header = TS_H;
    if (ts != NULL) {
        h[2] = (struct hdr){ TS_H, ts };
    }
    return run_check(&p, h, BODY, strlen(BODY), now, &used);
}


Test(verify_contextgpt, timestamp_mac_over_ts_dot_body_ok)
{
    cr_assert_eq(ts_run(TS, "sha256=" MAC_A_TS, NOW), VERIFY_OK);
    cr_assert_eq(ts_run(TS, MAC_A_TS, NOW + 300), VERIFY_OK);
    cr_assert_eq(ts_run(TS, MAC_A_TS, NOW - 300), VERIFY_OK);
}


Test(verify_contextgpt, timestamp_configured_body_only_mac_rejected)
{
    cr_assert_eq(ts_run(TS, "sha256=" MAC_A, NOW), VERIFY_BAD_SIGNATURE);
}


Test(verify_contextgpt, timestamp_changed_rejected)
{
    cr_assert_eq(ts_run("1700000001", MAC_A_TS, NOW), VERIFY_BAD_SIGNATURE);
}


Test(verify_contextgpt, timestamp_missing_rejected)
{
    cr_assert_eq(ts_run(NULL, MAC_A_TS, NOW), VERIFY_MISSING_TIMESTAMP);
}


Test(verify_contextgpt, timestamp_non_numeric_rejected)
{
    const char *bad[] = {
        "abc", "17000000x0", "1700000000.5", "-1700000000", " 1700000000",
        "1700000000 ", "0x6553f100", "1e9",
    };

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        cr_assert_eq(ts_run(bad[i], MAC_A_TS, NOW), VERIFY_BAD_TIMESTAMP,
                     "timestamp \"%s\"", bad[i]);
    }
}


Test(verify_contextgpt, timestamp_huge_rejected_without_overflow)
{
    enum verify_result r = ts_run("99999999999999999999999", MAC_A_TS, NOW);

    cr_assert(r == VERIFY_BAD_TIMESTAMP || r == VERIFY_STALE_TIMESTAMP,
              "got %s", verify_result_name(r));
}


Test(verify_contextgpt, timestamp_stale_rejected)
{
    cr_assert_eq(ts_run(TS, MAC_A_TS, NOW + 301), VERIFY_STALE_TIMESTAMP);
}


Test(verify_contextgpt, timestamp_future_skewed_rejected)
{
    cr_assert_eq(ts_run(TS, MAC_A_TS, NOW - 301), VERIFY_STALE_TIMESTAMP);
}


/* ---- verify_result_name -------------------------------------------------- */

Test(verify_result_name, distinct_nonempty_lowercase_names)
{
    static const enum verify_result all[] = {
        VERIFY_OK, VERIFY_NO_CREDENTIALS, VERIFY_MISSING_TOKEN,
        VERIFY_BAD_TOKEN, VERIFY_MISSING_SIGNATURE, VERIFY_BAD_SIGNATURE,
        VERIFY_MISSING_TIMESTAMP, VERIFY_BAD_TIMESTAMP,
        VERIFY_STALE_TIMESTAMP, VERIFY_MISSING_ID,
    };
    const size_t n = sizeof(all) / sizeof(all[0]);

    for (size_t i = 0; i < n; i++) {
        const char *name = verify_result_name(all[i]);

        cr_assert_not_null(name, "result %d", (int)all[i]);
        cr_assert_gt(strlen(name), 0, "result %d", (int)all[i]);
        for (const char *c = name; *c != '\0'; c++) {
            unsigned char ch = (unsigned char)*c;

            cr_assert(!isupper(ch) && !isspace(ch),
                      "name \"%s\" not lowercase", name);
        }
        for (size_t j = 0; j < i; j++) {
            cr_assert_str_neq(name, verify_result_name(all[j]),
                              "results %d and %d share a name",
                              (int)all[i], (int)all[j]);
        }
    }
}


Test(verify_result_name, out_of_range_value_still_named)
{
    const char *name = verify_result_name((enum verify_result)99);

    cr_assert_not_null(name);
    cr_assert_gt(strlen(name), 0);
}
