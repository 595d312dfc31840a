/* store.h — a service's database wired into its process (lm_store).
 *
 * Chooses the database from DATABASE_URL ("sqlite:PATH", "sqlite://PATH" or a plain path;
 * default $LOTMESH_DATA_DIR/<name>.db, LOTMESH_DATA_DIR defaulting to ./var), opens it with
 * the service's migrations, gives every worker loop its own lm_db_port, adds a readiness
 * check and database metrics, and closes it after the workers stopped.
 *
 * The store also owns the database's response cache (lm_cache, CACHE_URL: "memory:" by
 * default, "none" to turn it off; CACHE_MAX_BYTES bounds it, default 32 MiB). The lm_rest
 * flows invalidate it precisely on this process's writes; writes by other processes on the
 * same database file (several instances of a service) are counted in a shared counter beside
 * it (sharedgen.h) that every process bumps, cache or not, and the cache is flushed when it
 * moved. Writes by programs that do not count (the sqlite3 shell) are not seen: run them with
 * the services stopped, or set CACHE_URL=none.
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
/* Before using the cache: flushes it when another process wrote the database. */
void lm_store_cache_sync(lm_store *s);
/* After a committed write, before its response (with or without a cache). */
void lm_store_wrote(lm_store *s);
/* The port of the worker running req. */
lm_db_port *lm_store_port(lm_store *s, const lm_req *req);
/* The data directory ($LOTMESH_DATA_DIR or ./var), created if missing. */
const char *lm_data_dir(void);

#endif
