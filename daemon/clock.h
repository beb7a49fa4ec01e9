/* SPDX-License-Identifier: MIT */
/*
 * clock: the few time helpers every module needs, inline.
 */
#ifndef HOOKD_CLOCK_H
#define HOOKD_CLOCK_H

#include <stdint.h>
#include <time.h>

/* Microseconds on the monotonic clock (for durations). */
static inline long long
clock_mono_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* Milliseconds on the monotonic clock (for timeouts and deadlines). */
static inline long long
clock_mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}


/* Microseconds since the Unix epoch (for timestamps that are stored). */
static inline int64_t
clock_wall_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}


/* The monotonic time ms from now, for pthread_cond_timedwait on a
 * condition variable set up with CLOCK_MONOTONIC. */
static inline struct timespec
clock_mono_after(long long ms)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (long)(ms % 1000) * 1000000;
    if (ts.tv_nsec >= 1000000000) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000;
    }
    return ts;
}

#endif
