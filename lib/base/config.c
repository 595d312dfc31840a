/* config.c — environment configuration with validation. See config.h. */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <strings.h>

void lm_cfg_init(lm_cfg *cfg, const char *prog)
{
    cfg->prog = prog;
    cfg->error[0] = '\0';
}

void lm_cfg_error(lm_cfg *cfg, const char *name, const char *fmt, ...)
{
    if (cfg->error[0]) return;
    int n = snprintf(cfg->error, sizeof cfg->error, "%s ", name);
    if (n < 0 || (size_t)n >= sizeof cfg->error) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cfg->error + n, sizeof cfg->error - (size_t)n, fmt, ap);
    va_end(ap);
}

bool lm_cfg_ok(const lm_cfg *cfg)
{
    return cfg->error[0] == '\0';
}

void lm_cfg_exit_on_error(const lm_cfg *cfg)
{
    if (lm_cfg_ok(cfg)) return;
    fprintf(stderr, "%s: configuration error: %s\n", cfg->prog, cfg->error);
    exit(2);
}

static const char *env(const char *name)
{
    const char *v = getenv(name);
    return v && *v ? v : NULL;
}

const char *lm_cfg_str(lm_cfg *cfg, const char *name, const char *def)
{
    (void)cfg;
    const char *v = env(name);
    return v ? v : def;
}

long long lm_cfg_int(lm_cfg *cfg, const char *name, long long def, long long min, long long max)
{
    const char *v = env(name);
    long long x;
    if (!v) return def;
    if (!lm_parse_int(v, &x) || x < min || x > max) {
        lm_cfg_error(cfg, name, "must be an integer from %lld to %lld (got \"%.64s\")", min, max,
                     v);
        return def;
    }
    return x;
}

bool lm_cfg_bool(lm_cfg *cfg, const char *name, bool def)
{
    const char *v = env(name);
    if (!v) return def;
    static const char *yes[] = {"1", "true", "yes", "on"}, *no[] = {"0", "false", "no", "off"};
    for (size_t i = 0; i < 4; i++) {
        if (strcasecmp(v, yes[i]) == 0) return true;
        if (strcasecmp(v, no[i]) == 0) return false;
    }
    lm_cfg_error(cfg, name, "must be true or false (got \"%.64s\")", v);
    return def;
}

/* An unsigned setting in a unit: parse reads it, what describes the form in the message,
 * lo_unit/hi_unit follow the bounds there ("ms"/"ms", ""/" bytes"). */
static uint64_t cfg_unit(lm_cfg *cfg, const char *name, uint64_t def, uint64_t min, uint64_t max,
                         bool (*parse)(const char *, uint64_t *), const char *what,
                         const char *lo_unit, const char *hi_unit)
{
    const char *v = env(name);
    uint64_t x;
    if (!v) return def;
    if (!parse(v, &x) || x < min || x > max) {
        lm_cfg_error(cfg, name, "must be %s from %" PRIu64 "%s to %" PRIu64 "%s (got \"%.64s\")",
                     what, min, lo_unit, max, hi_unit, v);
        return def;
    }
    return x;
}

uint64_t lm_cfg_duration_ms(lm_cfg *cfg, const char *name, uint64_t def, uint64_t min, uint64_t max)
{
    return cfg_unit(cfg, name, def, min, max, lm_parse_duration_ms,
                    "a duration like 500ms, 5s or 2m", "ms", "ms");
}

uint64_t lm_cfg_size(lm_cfg *cfg, const char *name, uint64_t def, uint64_t min, uint64_t max)
{
    return cfg_unit(cfg, name, def, min, max, lm_parse_size, "a size like 65536, 64k or 1m", "",
                    " bytes");
}

int lm_cfg_enum(lm_cfg *cfg, const char *name, const char *def, const char *const choices[])
{
    const char *v = env(name);
    int def_idx = 0;
    for (int i = 0; choices[i]; i++)
        if (strcmp(choices[i], def) == 0) def_idx = i;
    if (!v) return def_idx;
    for (int i = 0; choices[i]; i++)
        if (strcmp(choices[i], v) == 0) return i;
    char list[256] = "";
    for (int i = 0; choices[i]; i++) {
        strncat(list, i ? "|" : "", sizeof list - strlen(list) - 1);
        strncat(list, choices[i], sizeof list - strlen(list) - 1);
    }
    lm_cfg_error(cfg, name, "must be one of %s (got \"%.64s\")", list, v);
    return def_idx;
}

const char *lm_cfg_data_dir(void)
{
    const char *d = getenv("LOTMESH_DATA_DIR");
    if (!d || !*d) d = "var";
    mkdir(d, 0750);
    return d;
}
