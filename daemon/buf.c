/* SPDX-License-Identifier: MIT */
#include "buf.h"

#include <stdlib.h>
#include <string.h>


void
buf_reserve(struct buf *b, size_t more)
{
    size_t want = b->b_len + more + 1;
    char *grown;

    if (b->b_failed || want <= b->b_cap) {
        return;
    }
    if (want < b->b_cap * 2) {
        want = b->b_cap * 2;
    }
    grown = realloc(b->b_data, want);
    if (grown == NULL) {
        b->b_failed = true;
        return;
    }
    b->b_data = grown;
    b->b_cap = want;
}


void
buf_add(struct buf *b, const char *s, size_t n)
{
    buf_reserve(b, n);
    if (!b->b_failed) {
        memcpy(b->b_data + b->b_len, s, n);
        b->b_len += n;
        b->b_data[b->b_len] = '\0';
    }
}


void
buf_add_elem(struct buf *b, const char *s, size_t n, bool first)
{
    if (!first) {
        buf_add(b, ",", 1);
    }
    if (s == NULL) {
        buf_add(b, "NULL", 4);
        return;
    }
    buf_reserve(b, 2 * n + 2);
    if (b->b_failed) {
        return;
    }
    b->b_data[b->b_len++] = '"';
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '"' || s[i] == '\\') {
            b->b_data[b->b_len++] = '\\';
        }
        b->b_data[b->b_len++] = s[i];
    }
    b->b_data[b->b_len++] = '"';
    b->b_data[b->b_len] = '\0';
}


void
buf_free(struct buf *b)
{
    free(b->b_data);
    b->b_data = NULL;
    b->b_len = b->b_cap = 0;
}
