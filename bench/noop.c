/* SPDX-License-Identifier: MIT */
/*
 * noop: the benchmark's handler. It does nothing and answers done, so a
 * run through it measures hookd's own dispatch (claim, ordering, result)
 * and nothing else. With
 *
 *   options = { record = "/path/file"; }
 *
 * each attempt first appends "<event id> <wall clock, Unix microseconds>"
 * to that file, which is how `make bench` finds the delay from an event's
 * commit to its handler's start.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "hookd_plugin.h"

struct noop {
    int n_fd;                       /* the record file, or -1 */
};


static int
noop_init(json_object *options, void **state, char *err, size_t errlen)
{
    struct noop *n = calloc(1, sizeof(*n));
    json_object *v;

    if (n == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    n->n_fd = -1;
    if (options != NULL && json_object_object_get_ex(options, "record", &v)) {
        n->n_fd = open(json_object_get_string(v), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC,
                       0600);
        if (n->n_fd < 0) {
            snprintf(err, errlen, "cannot open the record file");
            free(n);
            return -1;
        }
    }
    *state = n;
    return 0;
}


static enum hookd_outcome
noop_handle(void *state, const struct hookd_event *ev, struct hookd_ctx *ctx)
{
    struct noop *n = state;

    (void)ctx;
    if (n->n_fd >= 0) {
        struct timespec ts;
        char line[64];
        int len;

        clock_gettime(CLOCK_REALTIME, &ts);
        len = snprintf(line, sizeof(line), "%lld %lld\n", (long long)ev->he_event_id,
                       (long long)ts.tv_sec * 1000000 + ts.tv_nsec / 1000);
        /* One append per line: whole lines even from several workers. */
        if (write(n->n_fd, line, (size_t)len) != len) {
            return HOOKD_RETRY;
        }
    }
    return HOOKD_DONE;
}


static void
noop_fini(void *state)
{
    struct noop *n = state;

    if (n->n_fd >= 0) {
        close(n->n_fd);
    }
    free(n);
}


const struct hookd_plugin hookd_plugin_v1 = {
    .hp_abi = HOOKD_PLUGIN_ABI,
    .hp_name = "noop",
    .hp_init = noop_init,
    .hp_handle = noop_handle,
    .hp_fini = noop_fini,
};
