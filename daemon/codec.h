/* SPDX-License-Identifier: MIT */
/*
 * codec: hex and base64 encoding and decoding, and small byte helpers.
 *
 * Pure functions: no allocation, no logging, safe from any thread.
 */
#ifndef HOOKD_CODEC_H
#define HOOKD_CODEC_H

#include <stdbool.h>
#include <stddef.h>

/* Writes 2 * len lowercase hex digits and a NUL to out (size >= 2*len+1). */
void codec_hex_encode(const unsigned char *in, size_t len, char *out);

/*
 * Decodes n hex digits (either case) into out. Returns the number of bytes
 * written, or -1 when n is odd, a digit is not hex, or out (cap bytes) is
 * too small.
 */
long codec_hex_decode(const char *in, size_t n, unsigned char *out, size_t cap);

/* Writes standard base64 with padding and a NUL; out needs 4*((len+2)/3)+1. */
void codec_base64_encode(const unsigned char *in, size_t len, char *out);

/*
 * Decodes standard base64 (padding optional, "-" and "_" of the URL-safe
 * alphabet also accepted) of n characters into out. Returns the number of
 * bytes written, or -1 on a character outside the alphabet, bad padding or
 * too small an output (cap bytes).
 */
long codec_base64_decode(const char *in, size_t n, unsigned char *out,
                         size_t cap);

/* Constant-time equality of two equally long byte strings. */
bool codec_equal_ct(const void *a, const void *b, size_t len);

#endif
