/* SPDX-License-Identifier: MIT */
/*
 * embedded: files compiled into the binary by scripts/embed.sh: the SQL
 * migrations of sql/ (in name order) and the sample events of samples/.
 * Each table ends with an entry whose name is NULL. Each blob is also
 * NUL-terminated one byte past ef_len.
 */
#ifndef HOOKD_EMBEDDED_H
#define HOOKD_EMBEDDED_H

#include <stddef.h>

struct embedded_file {
    const char *ef_name;
    const unsigned char *ef_data;
    size_t ef_len;
};

extern const struct embedded_file embedded_migrations[];
extern const struct embedded_file embedded_samples[];

#endif
