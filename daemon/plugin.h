/* SPDX-License-Identifier: MIT */
/*
 * plugin: loads handler plugins (handlers/hookd_plugin.h) with dlopen.
 *
 * A plugin file is <dir>/<name>.so. Loading checks the exported descriptor
 * and its ABI version and fails with one line naming the file and reason.
 * A loaded plugin stays until plugin_unload; each route calls its init with
 * its own options and keeps its own state. Logs nothing itself.
 */
#ifndef HOOKD_PLUGIN_HOST_H
#define HOOKD_PLUGIN_HOST_H

#include <stddef.h>

#include "hookd_plugin.h"

struct plugin {
    char *pl_path;
    void *pl_handle;                       /* from dlopen */
    const struct hookd_plugin *pl_desc;
};

/*
 * Loads <dir>/<name>.so. name must be letters, digits, '-' or '_'.
 * Returns 0 with *ret set, or -1 with a reason in err.
 */
int plugin_load(const char *dir, const char *name, struct plugin **ret, char *err,
                size_t errlen);

/* dlcloses and frees; NULL is fine. Call only after every fini. */
void plugin_unload(struct plugin *pl);

#endif
