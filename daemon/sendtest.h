/* SPDX-License-Identifier: MIT */
/*
 * sendtest: `hookd send-test`, the dashboard's "Send Test" button from the
 * shell. Signs sample events (built in, or files) the way an endpoint
 * verifies them and POSTs them with libcurl, printing each answer.
 */
#ifndef HOOKD_SENDTEST_H
#define HOOKD_SENDTEST_H

/* Runs the command; argv[0] is "send-test". Returns the exit status. */
int sendtest_main(int argc, char **argv);

#endif
