/* config.h — configuration from environment variables (lm_cfg).
 *
 * All configuration is environment variables, validated at start-up. Each getter reads one
 * variable, returns its value or the default, and on a bad value records an error naming the
 * variable and what is expected; the first error wins. main() calls lm_cfg_exit_on_error()
 * once after reading everything: a bad value stops the process with one clear line, e.g.
 *   lotmesh-articles: configuration error: PORT must be an integer from 1 to 65535 (got "80a")
 * An empty variable counts as unset.
 *
 * Threading: start-up only (getenv is not safe against concurrent setenv). */
#ifndef LM_CONFIG_H
#define LM_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "parse.h"

typedef struct lm_cfg {
    const char *prog; /* not owned */
    char error[512];  /* first error, "" when none */
} lm_cfg;

void lm_cfg_init(lm_cfg *cfg, const char *prog);

/* Returns the value (owned by the environment) or def when unset. */
const char *lm_cfg_str(lm_cfg *cfg, const char *name, const char *def);
long long lm_cfg_int(lm_cfg *cfg, const char *name, long long def, long long min, long long max);
bool lm_cfg_bool(lm_cfg *cfg, const char *name, bool def);
/* "250ms", "5s", "2m", "1h", or a plain number of milliseconds. Result in milliseconds. */
uint64_t lm_cfg_duration_ms(lm_cfg *cfg, const char *name, uint64_t def, uint64_t min,
                            uint64_t max);
/* "1048576", "64k", "64KiB", "1m", "1MB" (binary multiples). Result in bytes. */
uint64_t lm_cfg_size(lm_cfg *cfg, const char *name, uint64_t def, uint64_t min, uint64_t max);
/* One of choices (NULL-terminated); returns its index, or the index of def. */
int lm_cfg_enum(lm_cfg *cfg, const char *name, const char *def, const char *const choices[]);

/* Records a custom error for name unless one is recorded already. */
void lm_cfg_error(lm_cfg *cfg, const char *name, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
bool lm_cfg_ok(const lm_cfg *cfg);
/* Prints "<prog>: configuration error: <error>" to stderr and exits 2 if there is an error. */
void lm_cfg_exit_on_error(const lm_cfg *cfg);

/* The data directory ($LOTMESH_DATA_DIR, default ./var), created if missing: databases,
 * snapshots, generated keys. */
const char *lm_cfg_data_dir(void);

#endif
