/* store.h — a service's database wired into its process (lm_store).
 *
 * Chooses the database from DATABASE_URL: "sqlite:PATH", "sqlite://PATH" or a plain path
 * (default $LOTMESH_DATA_DIR/<name>.db, LOTMESH_DATA_DIR defaulting to ./var), or PostgreSQL
 * as "postgresql://…", "postgres://…" or a libpq keyword string ("host=… dbname=…"; the
 * password also from PGPASSFILE). DATABASE_POOL_SIZE bounds the read connections (default
 * 4), DATABASE_CONNECT_TIMEOUT and DATABASE_STATEMENT_TIMEOUT bound waits on PostgreSQL
 * (defaults 5s, 10s). Opens it with the service's migrations for that backend, gives every
 * worker loop its own lm_db_port, adds a readiness check ("database": reachable and able to
 * commit) and database metrics, and closes it after the workers stopped.
 *
 * The store also owns the database's response cache (lm_cache, CACHE_URL: "memory:" by
 * default, "none" to turn it off; CACHE_MAX_BYTES bounds it, default 32 MiB). With
 * CACHE_URL=redis://… the in-process cache stands in front of a Redis level shared by every
 * instance (cache_redis.h; CACHE_TTL, CACHE_TIMEOUT), one connection per worker loop. The lm_rest
 * flows invalidate it precisely on this process's writes; writes by other processes on the
 * same database file (several instances of a service) are counted in a shared counter beside
 * it (sharedgen.h) that every process bumps, cache or not, and the cache is flushed when it
 * moved. Writes by programs that do not count (the sqlite3 shell) are not seen: run them with
 * the services stopped, or set CACHE_URL=none.
 *
 * Threading: lm_store_open from main before the process runs (its lm_store_component then
 * installed with the app); lm_store_port from handlers on worker threads. */
#ifndef LM_STORE_H
#define LM_STORE_H

#include "cache.h"
#include "cache_redis.h"
#include "component.h"
#include "config.h"
#include "db.h"

typedef struct lm_store lm_store;

/* On failure records a configuration error in cfg and returns NULL. */
lm_store *lm_store_open(lm_cfg *cfg, const lm_component_env *env, const char *name,
                        const lm_db_migrations *migrations);
/* Its lifecycle: a database port per worker loop, the "database" ready check, database and
 * cache metrics, closing after the workers stopped (the stopped hook frees the store). */
const lm_component *lm_store_component(lm_store *s);
lm_db *lm_store_db(lm_store *s);
/* The response cache, or NULL when CACHE_URL=none. */
lm_cache *lm_store_cache(lm_store *s);
/* The shared second level (CACHE_URL=redis://…), or NULL. */
lm_cache_redis *lm_store_l2(lm_store *s);
/* Whether worker may read from and store into the shared level now. False while this process
 * knows of a committed write whose Redis invalidation may not have happened — its own, one
 * of a process sharing its host counter (sharedgen.h era), or one another host announced
 * through the database (PostgreSQL: lm_db_notify; also after the listener missed
 * notifications) — and has not fenced Redis since (lm_cache_redis_fence, started here on
 * worker's connection). *mark: give it to lm_store_l2_still before a put. Worker thread. */
bool lm_store_l2_ready(lm_store *s, int worker, uint64_t *mark);
/* True if no such write became known since mark was taken (then the put may be sent). */
bool lm_store_l2_still(lm_store *s, uint64_t mark);
/* After a write whose Redis invalidation failed, before its response: this process and the
 * processes sharing its host counter stop trusting Redis until one of them fenced it. Then,
 * if lm_store_l2_announces, run lm_store_l2_announce_job as a write job before responding:
 * it tells the other hosts' instances through the database. */
void lm_store_l2_lost(lm_store *s);
bool lm_store_l2_announces(lm_store *s);
int lm_store_l2_announce_job(lm_db_conn *c, void *arg);
/* Before using the cache: flushes it when another process wrote the database. */
void lm_store_cache_sync(lm_store *s);
/* After a committed write, before its response (with or without a cache). */
void lm_store_wrote(lm_store *s);
/* fn(ctx) runs in every lm_store_wrote (on the writing request's worker thread): how the
 * app layer tells the events layer that outbox rows were committed. Main thread, before the
 * run; one observer. */
void lm_store_on_wrote(lm_store *s, void (*fn)(void *ctx), void *ctx);
/* The port of worker thread `worker` (lm_req_worker_index of the request it serves). */
lm_db_port *lm_store_port(lm_store *s, int worker);

#endif
