/* store.h — a service's database wired into its process (lm_store).
 *
 * Chooses the database from DATABASE_URL ("sqlite:PATH", "sqlite://PATH" or a plain path;
 * default $LOTMESH_DATA_DIR/<name>.db, LOTMESH_DATA_DIR defaulting to ./var), opens it with
 * the service's migrations, gives every worker loop its own lm_db_port, adds a readiness
 * check and database metrics, and closes it after the workers stopped.
 *
 * The store also owns the database's response cache (lm_cache, CACHE_URL: "memory:" by
 * default, "none" to turn it off; CACHE_MAX_BYTES bounds it, default 32 MiB). The in-process
 * cache is correct only while this process is the database's one writer, which SQLite per
 * service (DESIGN 2) makes the rule: the lm_rest flows invalidate it on every write.
 *
 * Threading: lm_store_open from main before lm_app_run; lm_store_port from handlers. */
#ifndef LM_STORE_H
#define LM_STORE_H

#include "app.h"
#include "cache.h"
#include "db.h"
#include "http.h"

typedef struct lm_store lm_store;

/* On failure records a configuration error in cfg and returns NULL. */
lm_store *lm_store_open(lm_app *app, lm_cfg *cfg, const char *name, const char *const *migrations,
                        size_t n_migrations);
lm_db *lm_store_db(lm_store *s);
/* The response cache, or NULL when CACHE_URL=none. */
lm_cache *lm_store_cache(lm_store *s);
/* The port of the worker running req. */
lm_db_port *lm_store_port(lm_store *s, const lm_req *req);
/* The data directory ($LOTMESH_DATA_DIR or ./var), created if missing. */
const char *lm_data_dir(void);

#endif
