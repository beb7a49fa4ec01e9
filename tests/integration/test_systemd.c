/* SPDX-License-Identifier: MIT */
/*
 * The unit file: it verifies, and its sandbox keeps a low exposure score.
 * The unit names /usr/local/bin/hookd; the tests point it at the binary
 * under test, which is all systemd-analyze needs to find.
 */
#include <criterion/criterion.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "support/harness.h"

TestSuite(systemd, .fini = h_suite_fini, .timeout = 60);


/* Writes the repo's unit with ExecStart on $HOOKD_BIN; returns its path. */
static char *
unit_copy(void)
{
    char *dir = h_tmpdir("unit");
    char *path = h_strdupf("%s/hookd.service", dir);
    size_t len;
    char *text = h_read_file("systemd/hookd.service", &len);
    char *patched;

    cr_assert_not_null(text, "systemd/hookd.service not found (run from the repo root)");
    patched = h_replace(text, "/usr/local/bin/hookd", h_env("HOOKD_BIN"));
    h_write_file(path, patched, strlen(patched), 0644);
    free(text);
    free(patched);
    free(dir);
    return path;
}


/* Runs `systemd-analyze <args> <unit>` and returns its exit code and output. */
static int
run(char *out, size_t cap, const char *args, const char *unit)
{
    char cmd[1024];
    FILE *p;
    size_t n;
    int status;

    snprintf(cmd, sizeof(cmd), "systemd-analyze %s '%s' 2>&1", args, unit);
    p = popen(cmd, "r");
    cr_assert_not_null(p);
    n = fread(out, 1, cap - 1, p);
    out[n] = '\0';
    status = pclose(p);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}


Test(systemd, unit_file_passes_systemd_analyze_verify)
{
    char *unit = unit_copy();
    char out[8192];
    int rc = run(out, sizeof(out), "verify", unit);

    cr_assert_eq(rc, 0, "systemd-analyze verify failed:\n%s", out);
    cr_assert_eq(out[0], '\0', "systemd-analyze verify complained:\n%s", out);
    free(unit);
}


Test(systemd, unit_sandbox_exposure_stays_low)
{
    char *unit = unit_copy();
    static char out[65536];
    const char *at;
    double score;

    cr_assert_eq(run(out, sizeof(out), "security --offline=true", unit), 0, "%s", out);
    at = strstr(out, "Overall exposure level for hookd.service: ");
    cr_assert_not_null(at, "no exposure level in:\n%s", out);
    score = strtod(at + strlen("Overall exposure level for hookd.service: "), NULL);
    /* The README quotes this figure; 0 is best, 10 worst. */
    cr_assert_leq(score, 2.0, "exposure level %.1f", score);
    free(unit);
}
