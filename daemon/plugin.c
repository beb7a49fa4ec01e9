/* SPDX-License-Identifier: MIT */
#include "plugin.h"

#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>


static int
name_ok(const char *name)
{
    if (*name == '\0' || strlen(name) > 64) {
        return 0;
    }
    for (const char *p = name; *p != '\0'; p++) {
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9')
              || *p == '-' || *p == '_'))
        {
            return 0;
        }
    }
    return 1;
}


int
plugin_load(const char *dir, const char *name, struct plugin **ret, char *err, size_t errlen)
{
    char path[PATH_MAX];
    struct plugin *pl;
    struct stat st;
    const struct hookd_plugin *desc;
    void *handle;

    if (!name_ok(name)) {
        snprintf(err, errlen, "handler \"%s\" is not a plugin name (letters, digits, - and _)",
                 name);
        return -1;
    }
    if (snprintf(path, sizeof(path), "%s/%s.so", dir, name) >= (int)sizeof(path)) {
        snprintf(err, errlen, "plugin path for \"%s\" is too long", name);
        return -1;
    }
    if (stat(path, &st) != 0) {
        snprintf(err, errlen, "could not find plugin \"%s\": %s", path, strerror(errno));
        return -1;
    }
    if ((st.st_mode & S_IWOTH) != 0) {
        snprintf(err, errlen, "plugin \"%s\" is writable by everyone; refusing to load it",
                 path);
        return -1;
    }
    handle = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (handle == NULL) {
        snprintf(err, errlen, "could not load plugin \"%s\": %s", path, dlerror());
        return -1;
    }
    desc = dlsym(handle, "hookd_plugin_v1");
    if (desc == NULL) {
        snprintf(err, errlen, "plugin \"%s\" does not export hookd_plugin_v1", path);
        dlclose(handle);
        return -1;
    }
    if (desc->hp_abi != HOOKD_PLUGIN_ABI || desc->hp_handle == NULL) {
        snprintf(err, errlen, "plugin \"%s\" is built for ABI %d; this hookd speaks ABI %d",
                 path, desc->hp_abi, HOOKD_PLUGIN_ABI);
        dlclose(handle);
        return -1;
    }
    pl = calloc(1, sizeof(*pl));
    if (pl == NULL || (pl->pl_path = strdup(path)) == NULL) {
        free(pl);
        dlclose(handle);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    pl->pl_handle = handle;
    pl->pl_desc = desc;
    *ret = pl;
    return 0;
}


void
plugin_unload(struct plugin *pl)
{
    if (pl == NULL) {
        return;
    }
    dlclose(pl->pl_handle);
    free(pl->pl_path);
    free(pl);
}
