/* SPDX-License-Identifier: MIT */
/*
 * cli: the operator commands that read and change the queue directly in
 * PostgreSQL: `hookd jobs`, `hookd replay` and `hookd events`. Each prints a
 * table that fits a terminal, or JSON with --json.
 */
#ifndef HOOKD_CLI_H
#define HOOKD_CLI_H

#include <stdbool.h>

#include <libpq-fe.h>

/* Each takes argv from the command name on and returns the exit status. */
int cli_jobs(int argc, char **argv);
int cli_replay(int argc, char **argv);
int cli_events(int argc, char **argv);

/*
 * Shared with cli_api.c: runs sql with n text parameters and prints the rows
 * as a table, or as a JSON array of objects with text values when json is
 * set. Prints the reason on failure; returns an exit status (0 or 1).
 */
int cli_query_print(PGconn *c, const char *sql, int n, const char *const *params,
                    bool json);

#endif
