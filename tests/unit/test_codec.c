/* SPDX-License-Identifier: MIT */
/*
 * Unit tests for codec: hex and base64 encoding/decoding and the
 * constant-time comparison. Base64 and base16 vectors are from RFC 4648
 * section 10.
 */
#include <criterion/criterion.h>

#include <string.h>

#include "codec.h"

struct rfc4648_vector {
    const char *plain;
    const char *b64;
    const char *b16;
};

static const struct rfc4648_vector rfc4648_vectors[] = {
    { "", "", "" },
    { "f", "Zg==", "66" },
    { "fo", "Zm8=", "666F" },
    { "foo", "Zm9v", "666F6F" },
    { "foob", "Zm9vYg==", "666F6F62" },
    { "fooba", "Zm9vYmE=", "666F6F6261" },
    { "foobar", "Zm9vYmFy", "666F6F626172" },
};

#define N_RFC4648 (sizeof(rfc4648_vectors) / sizeof(rfc4648_vectors[0]))


/* Decodes a NUL-terminated base64 string with a roomy output buffer. */
static long
b64_dec(const char *in, unsigned char *out, size_t cap)
{
    return codec_base64_decode(in, strlen(in), out, cap);
}


static long
hex_dec(const char *in, unsigned char *out, size_t cap)
{
    return codec_hex_decode(in, strlen(in), out, cap);
}


/* ---- hex ---------------------------------------------------------------- */

Test(codec, hex_encode_rfc4648_vectors_lowercase)
{
    for (size_t i = 0; i < N_RFC4648; i++) {
        const struct rfc4648_vector *v = &rfc4648_vectors[i];
        char out[32];
        char want[32];
        size_t n = strlen(v->b16);

        memset(out, 'X', sizeof(out));
        for (size_t j = 0; j <= n; j++) {
            want[j] = v->b16[j] >= 'A' && v->b16[j] <= 'F'
                      ? (char)(v->b16[j] - 'A' + 'a') : v->b16[j];
        }
        codec_hex_encode((const unsigned char *)v->plain, strlen(v->plain),
                         out);
        cr_assert_str_eq(out, want, "hex of \"%s\"", v->plain);
    }
}


Test(codec, hex_decode_rfc4648_vectors_uppercase)
{
    for (size_t i = 0; i < N_RFC4648; i++) {
        const struct rfc4648_vector *v = &rfc4648_vectors[i];
        unsigned char out[16];
        long n = hex_dec(v->b16, out, sizeof(out));

        cr_assert_eq(n, (long)strlen(v->plain), "length for %s", v->b16);
        cr_assert_arr_eq(out, v->plain, strlen(v->plain));
    }
}


Test(codec, hex_decode_accepts_mixed_case)
{
    unsigned char out[4];
    const unsigned char want[] = { 0xab, 0xcd, 0xef, 0x09 };

    cr_assert_eq(hex_dec("aBcDEf09", out, sizeof(out)), 4);
    cr_assert_arr_eq(out, want, 4);
}


Test(codec, hex_round_trip_all_byte_values)
{
    unsigned char in[256];
    unsigned char back[256];
    char text[2 * 256 + 1];

    for (size_t i = 0; i < sizeof(in); i++) {
        in[i] = (unsigned char)i;
    }
    for (size_t len = 0; len <= sizeof(in); len += 17) {
        codec_hex_encode(in, len, text);
        cr_assert_eq(strlen(text), 2 * len);
        cr_assert_eq(codec_hex_decode(text, 2 * len, back, sizeof(back)),
                     (long)len);
        cr_assert_arr_eq(back, in, len, "round trip of %zu bytes", len);
    }
}


Test(codec, hex_decode_exact_capacity_accepted)
{
    unsigned char out[2];

    cr_assert_eq(hex_dec("0a0b", out, 2), 2);
}


Test(codec, hex_decode_rejects_odd_length)
{
    unsigned char out[8];

    cr_assert_eq(hex_dec("abc", out, sizeof(out)), -1);
    cr_assert_eq(hex_dec("0", out, sizeof(out)), -1);
}


Test(codec, hex_decode_rejects_non_hex_digit)
{
    unsigned char out[8];

    cr_assert_eq(hex_dec("0g", out, sizeof(out)), -1);
    cr_assert_eq(hex_dec("g0", out, sizeof(out)), -1);
    cr_assert_eq(hex_dec("00 1", out, sizeof(out)), -1);
    cr_assert_eq(hex_dec("0x12", out, sizeof(out)), -1);
    cr_assert_eq(codec_hex_decode("a\0", 2, out, sizeof(out)), -1);
}


Test(codec, hex_decode_rejects_too_small_output)
{
    unsigned char out[4];

    cr_assert_eq(hex_dec("001122", out, 2), -1);
    cr_assert_eq(hex_dec("00", out, 0), -1);
}


/* ---- base64 ------------------------------------------------------------- */

Test(codec, base64_encode_rfc4648_vectors)
{
    for (size_t i = 0; i < N_RFC4648; i++) {
        const struct rfc4648_vector *v = &rfc4648_vectors[i];
        char out[32];

        memset(out, 'X', sizeof(out));
        codec_base64_encode((const unsigned char *)v->plain,
                            strlen(v->plain), out);
        cr_assert_str_eq(out, v->b64, "base64 of \"%s\"", v->plain);
    }
}


Test(codec, base64_decode_rfc4648_vectors)
{
    for (size_t i = 0; i < N_RFC4648; i++) {
        const struct rfc4648_vector *v = &rfc4648_vectors[i];
        unsigned char out[16];
        long n = b64_dec(v->b64, out, sizeof(out));

        cr_assert_eq(n, (long)strlen(v->plain), "length for \"%s\"", v->b64);
        cr_assert_arr_eq(out, v->plain, strlen(v->plain));
    }
}


Test(codec, base64_decode_padding_optional)
{
    unsigned char out[16];

    cr_assert_eq(b64_dec("Zg", out, sizeof(out)), 1);
    cr_assert_eq(out[0], 'f');
    cr_assert_eq(b64_dec("Zm8", out, sizeof(out)), 2);
    cr_assert_arr_eq(out, "fo", 2);
    cr_assert_eq(b64_dec("Zm9vYmE", out, sizeof(out)), 5);
    cr_assert_arr_eq(out, "fooba", 5);
}


Test(codec, base64_round_trip_all_byte_values)
{
    unsigned char in[256];
    unsigned char back[256];
    char text[4 * ((256 + 2) / 3) + 1];

    for (size_t i = 0; i < sizeof(in); i++) {
        in[i] = (unsigned char)(255 - i);
    }
    for (size_t len = 0; len <= sizeof(in); len++) {
        codec_base64_encode(in, len, text);
        cr_assert_eq(strlen(text), 4 * ((len + 2) / 3));
        cr_assert_eq(codec_base64_decode(text, strlen(text), back, len),
                     (long)len, "round trip of %zu bytes", len);
        cr_assert_arr_eq(back, in, len, "round trip of %zu bytes", len);
    }
}


Test(codec, base64_decode_url_safe_alphabet_accepted)
{
    const unsigned char want3[] = { 0xfb, 0xef, 0xff };
    const unsigned char want2[] = { 0xfb, 0xff };
    unsigned char out[8];

    /* Standard "++//" and URL-safe "--__" are the same bytes. */
    cr_assert_eq(b64_dec("++//", out, sizeof(out)), 3);
    cr_assert_arr_eq(out, want3, 3);
    cr_assert_eq(b64_dec("--__", out, sizeof(out)), 3);
    cr_assert_arr_eq(out, want3, 3);
    cr_assert_eq(b64_dec("-_8=", out, sizeof(out)), 2);
    cr_assert_arr_eq(out, want2, 2);
    cr_assert_eq(b64_dec("-_8", out, sizeof(out)), 2);
    cr_assert_arr_eq(out, want2, 2);
}


Test(codec, base64_decode_rejects_bad_character)
{
    unsigned char out[16];

    cr_assert_eq(b64_dec("Zm9v!A==", out, sizeof(out)), -1);
    cr_assert_eq(b64_dec("Zm 9v", out, sizeof(out)), -1);
    cr_assert_eq(b64_dec("Zm9v\n", out, sizeof(out)), -1);
    cr_assert_eq(b64_dec("Zm.v", out, sizeof(out)), -1);
    cr_assert_eq(codec_base64_decode("Zm\0v", 4, out, sizeof(out)), -1);
}


Test(codec, base64_decode_rejects_bad_padding)
{
    unsigned char out[16];

    cr_assert_eq(b64_dec("Zg=", out, sizeof(out)), -1, "short padding");
    cr_assert_eq(b64_dec("Zg===", out, sizeof(out)), -1, "three pads");
    cr_assert_eq(b64_dec("Z===", out, sizeof(out)), -1, "lone char + pads");
    cr_assert_eq(b64_dec("Zm9v=", out, sizeof(out)), -1, "pad after quad");
    cr_assert_eq(b64_dec("Zm9v====", out, sizeof(out)), -1, "pad quad");
    cr_assert_eq(b64_dec("Zg==Zg==", out, sizeof(out)), -1, "inner pad");
    cr_assert_eq(b64_dec("=Zg=", out, sizeof(out)), -1, "leading pad");
    cr_assert_eq(b64_dec("Zm9vY", out, sizeof(out)), -1, "one char over");
    cr_assert_eq(b64_dec("====", out, sizeof(out)), -1, "only pads");
}


Test(codec, base64_decode_rejects_too_small_output)
{
    unsigned char out[8];

    cr_assert_eq(b64_dec("Zm9v", out, 2), -1);
    cr_assert_eq(b64_dec("Zm9vYmFy", out, 5), -1);
    cr_assert_eq(b64_dec("Zg==", out, 0), -1);
    cr_assert_eq(b64_dec("Zm9vYmFy", out, 6), 6, "exact capacity is fine");
}


Test(codec, base64_decode_rejects_non_canonical_trailing_bits)
{
    unsigned char out[8];

    /* "Zg==" is 'f'; "Zh==" carries the same byte with a stray low bit. */
    cr_assert_eq(b64_dec("Zh==", out, sizeof(out)), -1);
    cr_assert_eq(b64_dec("Zh", out, sizeof(out)), -1);
    /* "Zm8=" is "fo"; "Zm9=" sets one of the two unused bits. */
    cr_assert_eq(b64_dec("Zm9=", out, sizeof(out)), -1);
    cr_assert_eq(b64_dec("Zm9vYmF=", out, sizeof(out)), -1);
}


/* ---- codec_equal_ct ------------------------------------------------------ */

Test(codec, equal_ct_equal_buffers_true)
{
    const unsigned char a[] = { 1, 2, 3, 4, 5 };
    const unsigned char b[] = { 1, 2, 3, 4, 5 };

    cr_assert(codec_equal_ct(a, b, sizeof(a)));
    cr_assert(codec_equal_ct(a, a, sizeof(a)));
}


Test(codec, equal_ct_differing_first_or_last_byte_false)
{
    const unsigned char a[] = { 1, 2, 3, 4, 5 };
    const unsigned char first[] = { 0, 2, 3, 4, 5 };
    const unsigned char last[] = { 1, 2, 3, 4, 0x85 };

    cr_assert_not(codec_equal_ct(a, first, sizeof(a)));
    cr_assert_not(codec_equal_ct(a, last, sizeof(a)));
}


Test(codec, equal_ct_zero_length_true)
{
    cr_assert(codec_equal_ct("a", "b", 0));
}


Test(codec, equal_ct_compares_only_len_bytes)
{
    cr_assert(codec_equal_ct("abcX", "abcY", 3));
    cr_assert_not(codec_equal_ct("abcX", "abcY", 4));
}
