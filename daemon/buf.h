/* SPDX-License-Identifier: MIT */
/*
 * buf: a growable byte buffer for building statement parameters (array
 * literals, binary arrays). On allocation failure it stays failed and
 * ignores further appends; the caller checks b_failed once at the end.
 */
#ifndef HOOKD_BUF_H
#define HOOKD_BUF_H

#include <stdbool.h>
#include <stddef.h>

struct buf {
    char *b_data;                   /* NUL-terminated after each append */
    size_t b_len;
    size_t b_cap;
    bool b_failed;
};

/* Makes room for more bytes (and a NUL) after b_len. */
void buf_reserve(struct buf *b, size_t more);

void buf_add(struct buf *b, const char *s, size_t n);

/*
 * Appends one element of a PostgreSQL text[] literal, after a comma unless
 * first: NULL for s == NULL, otherwise quoted, with '"' and '\' escaped.
 */
void buf_add_elem(struct buf *b, const char *s, size_t n, bool first);

void buf_free(struct buf *b);

#endif
