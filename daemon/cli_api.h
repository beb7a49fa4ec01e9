/* SPDX-License-Identifier: MIT */
/*
 * cli_api: the operator commands that act in conversations through the
 * ContextGPT API, and the handoff tickets people work from:
 *   hookd reply      an agent message into a thread (or a ticket's thread)
 *   hookd escalate   hands a thread to a human
 *   hookd handoff    list, claim and close tickets (close can give the
 *                    thread back to the AI)
 * Calls go through the daemon's client (api.c): same key, rate limiter and
 * classification of answers. Tickets are read and changed in PostgreSQL.
 */
#ifndef HOOKD_CLI_API_H
#define HOOKD_CLI_API_H

/* Each takes argv from the command name on and returns the exit status. */
int cli_reply(int argc, char **argv);
int cli_escalate(int argc, char **argv);
int cli_handoff(int argc, char **argv);

#endif
