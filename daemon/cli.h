/* SPDX-License-Identifier: MIT */
/*
 * cli: the operator commands that read and change the queue directly in
 * PostgreSQL: `hookd jobs`, `hookd replay` and `hookd events`. Each prints a
 * table that fits a terminal, or JSON with --json.
 */
#ifndef HOOKD_CLI_H
#define HOOKD_CLI_H

/* Each takes argv from the command name on and returns the exit status. */
int cli_jobs(int argc, char **argv);
int cli_replay(int argc, char **argv);
int cli_events(int argc, char **argv);

#endif
