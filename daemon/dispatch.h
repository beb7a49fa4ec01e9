/* SPDX-License-Identifier: MIT */
/*
 * dispatch: runs the jobs of hookd.jobs through the routes' handler plugins.
 *
 * Worker threads claim one runnable job at a time with FOR UPDATE SKIP
 * LOCKED: pending and due, or running with an expired lease (its worker or
 * instance died), and with no earlier open job of the same route and
 * conversation. So one conversation runs in order while others run in
 * parallel, on one instance or many. A listener thread LISTENs on
 * hookd_jobs and wakes the workers; the workers also poll every
 * dispatch.poll_interval, so a NOTIFY lost while the listener reconnects
 * only delays work. No database connection is in a transaction while a
 * handler runs. The supervisor renews the lease of every running job every
 * third of dispatch.lease, so a dead instance's jobs come back within one
 * lease and a live one's never.
 *
 * A handler that overruns its route's timeout counts as a failed attempt:
 * its job is rescheduled at once, the stuck thread is abandoned (its late
 * result ignored) and a new worker takes its place.
 */
#ifndef HOOKD_DISPATCH_H
#define HOOKD_DISPATCH_H

#include <stddef.h>

struct api;
struct cfg_holder;
struct dispatch;

/*
 * Starts cfg->cf_workers workers (none when 0) on conninfo, reading routes
 * from cfgs for each job; api (may be NULL) is lent to handlers. Returns 0,
 * or -1 with a message in err.
 */
int dispatch_start(struct cfg_holder *cfgs, const char *conninfo, struct api *api,
                   struct dispatch **ret, char *err, size_t errlen);

/* Stops claiming new jobs at once (running ones go on); NULL is fine. */
void dispatch_quiesce(struct dispatch *d);

/*
 * Stops claiming, waits up to grace_ms for running handlers, and hands the
 * jobs still running back to the queue as pending without counting the
 * attempt. NULL is fine.
 */
void dispatch_stop(struct dispatch *d, int grace_ms);

/*
 * Monotonic ms of the listener/supervisor thread's last round (every 100 ms
 * while running), and jobs done and dead since start. NULL d: 0.
 */
long long dispatch_heartbeat_ms(struct dispatch *d);
void dispatch_counts(struct dispatch *d, unsigned long long *ret_done,
                     unsigned long long *ret_dead);

/* Claim statements that took at least one job (several when handlers are fast). NULL d: 0. */
unsigned long long dispatch_claims(struct dispatch *d);

/*
 * Backoff in milliseconds before attempt `attempt` + 1 (attempt >= 1):
 * first * factor^(attempt-1) capped at max, then "equal jitter" (a random
 * point in its upper half) from rnd in [0, 1).
 */
long dispatch_backoff_ms(int attempt, int first_ms, double factor, int max_ms, double rnd);

#endif
