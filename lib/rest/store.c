/* store.c — database selection and per-worker ports. See store.h. */
#include "store.h"

#include "cache.h"
#include "log.h"
#include "sharedgen.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

struct lm_store {
    char name[64];
    char url[1024];  /* "sqlite:PATH" or the PostgreSQL connection string */
    char shown[160]; /* for the log: the path, or host/database without credentials */
    lm_db *db;
    lm_db_port **ports; /* by worker index */
    int n_ports;
    lm_cache *cache;    /* NULL: CACHE_URL=none */
    lm_cache_redis *l2; /* CACHE_URL=redis://…, or NULL */
    int *l2_state;      /* by worker: 0 not known yet, 1 up, 2 down (its loop only) */
    atomic_int l2_down; /* workers whose Redis connection is down */
    /* writes whose Redis invalidation may have failed, as known here (l2_lost), and how many
     * of them a fence has covered (l2_fenced); Redis is trusted while they are equal */
    _Atomic uint64_t l2_lost, l2_fenced;
    _Atomic uint64_t host_era_seen; /* the host counter's era as last accounted for */
    atomic_bool l2_fencing;         /* a fence is in flight */
    bool watched;                   /* PostgreSQL: other hosts hear notes (lm_db_watch) */
    lm_sharedgen *writes;           /* counts every process's writes to this database */
    void (*on_wrote)(void *ctx);
    void *on_wrote_ctx;
    lm_component comp;
};

/* One log line per outage: the first worker losing Redis, the last one getting it back. A
 * connection back while a missed write is known fences at once (not at the next read that
 * gets past the in-process level). */
static void on_l2_state(void *ud, int worker, bool up, const char *why)
{
    lm_store *s = ud;
    uint64_t mark;
    if (up) lm_store_l2_ready(s, worker, &mark);
    int was = s->l2_state[worker];
    s->l2_state[worker] = up ? 1 : 2;
    if (up) {
        if (was == 2 && atomic_fetch_sub(&s->l2_down, 1) == 1)
            lm_log_info("cache: Redis reachable again; the shared cache is in use");
    } else if (was != 2 && atomic_fetch_add(&s->l2_down, 1) == 0) {
        lm_log_warn("cache: Redis unavailable (%s); reads miss to the database until it is back",
                    why);
    }
}

static void worker_start(lm_worker *w, void *ctx)
{
    lm_store *s = ctx;
    int i = lm_worker_index(w);
    s->ports[i] = lm_db_attach(s->db, lm_worker_loop(w));
    if (s->l2) lm_cache_redis_attach(s->l2, i, lm_worker_loop(w));
}

static void worker_stop(lm_worker *w, void *ctx)
{
    lm_store *s = ctx;
    int i = lm_worker_index(w);
    if (s->l2) lm_cache_redis_detach(s->l2, i);
    lm_db_detach(s->ports[i]);
    s->ports[i] = NULL;
}

static bool ready(void *ctx, lm_buf *why)
{
    lm_store *s = ctx;
    return lm_db_health(s->db, why);
}

static void metrics(lm_buf *out, void *ctx)
{
    lm_store *s = ctx;
    lm_db_stats st;
    lm_db_get_stats(s->db, &st);
    lm_buf_printf(out,
                  "# HELP lotmesh_db_commits_total Write transactions committed (group commits).\n"
                  "# TYPE lotmesh_db_commits_total counter\n"
                  "lotmesh_db_commits_total %llu\n"
                  "# HELP lotmesh_db_write_jobs_total Write jobs (requests) in those commits.\n"
                  "# TYPE lotmesh_db_write_jobs_total counter\n"
                  "lotmesh_db_write_jobs_total %llu\n"
                  "# HELP lotmesh_db_failed_commits_total Commits that failed.\n"
                  "# TYPE lotmesh_db_failed_commits_total counter\n"
                  "lotmesh_db_failed_commits_total %llu\n"
                  "# HELP lotmesh_db_reads_total Read jobs.\n"
                  "# TYPE lotmesh_db_reads_total counter\n"
                  "lotmesh_db_reads_total %llu\n"
                  "# HELP lotmesh_db_statements_total Statements executed, transaction "
                  "control included.\n"
                  "# TYPE lotmesh_db_statements_total counter\n"
                  "lotmesh_db_statements_total %llu\n"
                  "# HELP lotmesh_db_write_statements_total Of those, on the writer's "
                  "connection.\n"
                  "# TYPE lotmesh_db_write_statements_total counter\n"
                  "lotmesh_db_write_statements_total %llu\n"
                  "# HELP lotmesh_db_round_trips_total Waits for the database server's answers "
                  "(PostgreSQL; 0 on SQLite).\n"
                  "# TYPE lotmesh_db_round_trips_total counter\n"
                  "lotmesh_db_round_trips_total %llu\n"
                  "# HELP lotmesh_db_write_round_trips_total Of those, on the writer's "
                  "connection (per write job: round trips per create).\n"
                  "# TYPE lotmesh_db_write_round_trips_total counter\n"
                  "lotmesh_db_write_round_trips_total %llu\n"
                  "# HELP lotmesh_db_write_pipelined_jobs_total Write jobs run in pipelined "
                  "batches (PostgreSQL: sent before any answer was read).\n"
                  "# TYPE lotmesh_db_write_pipelined_jobs_total counter\n"
                  "lotmesh_db_write_pipelined_jobs_total %llu\n"
                  "# HELP lotmesh_db_write_pipeline_fallbacks_total Pipelined batches rolled "
                  "back and run again job by job (a statement of one failed).\n"
                  "# TYPE lotmesh_db_write_pipeline_fallbacks_total counter\n"
                  "lotmesh_db_write_pipeline_fallbacks_total %llu\n"
                  "# HELP lotmesh_db_reconnects_total Reconnections after the database was "
                  "unreachable.\n"
                  "# TYPE lotmesh_db_reconnects_total counter\n"
                  "lotmesh_db_reconnects_total %llu\n"
                  "# HELP lotmesh_db_up Whether the database is reachable and commits.\n"
                  "# TYPE lotmesh_db_up gauge\n"
                  "lotmesh_db_up %d\n",
                  st.commits, st.write_jobs, st.failed_commits, st.reads, st.statements,
                  st.write_statements, st.round_trips, st.write_round_trips, st.pipelined_jobs,
                  st.pipeline_fallbacks, st.reconnects, lm_db_health(s->db, NULL) ? 1 : 0);
    if (s->l2) {
        lm_cache_redis_stats rs;
        lm_cache_redis_get_stats(s->l2, &rs);
        lm_buf_printf(out,
                      "# HELP lotmesh_cache_redis_total Operations of the shared cache level in "
                      "Redis by outcome.\n"
                      "# TYPE lotmesh_cache_redis_total counter\n"
                      "lotmesh_cache_redis_total{op=\"get\",outcome=\"hit\"} %llu\n"
                      "lotmesh_cache_redis_total{op=\"get\",outcome=\"miss\"} %llu\n"
                      "lotmesh_cache_redis_total{op=\"put\",outcome=\"stored\"} %llu\n"
                      "lotmesh_cache_redis_total{op=\"put\",outcome=\"stale\"} %llu\n"
                      "lotmesh_cache_redis_total{op=\"begin\",outcome=\"done\"} %llu\n"
                      "lotmesh_cache_redis_total{op=\"invalidate\",outcome=\"done\"} %llu\n"
                      "lotmesh_cache_redis_total{op=\"fence\",outcome=\"done\"} %llu\n"
                      "lotmesh_cache_redis_total{op=\"any\",outcome=\"error\"} %llu\n"
                      "# HELP lotmesh_cache_redis_up 1 while every worker reaches Redis.\n"
                      "# TYPE lotmesh_cache_redis_up gauge\n"
                      "lotmesh_cache_redis_up %d\n"
                      "# HELP lotmesh_cache_redis_trusted 0 while a write whose invalidation "
                      "missed Redis is known and Redis was not fenced since.\n"
                      "# TYPE lotmesh_cache_redis_trusted gauge\n"
                      "lotmesh_cache_redis_trusted %d\n",
                      rs.hits, rs.misses, rs.puts, rs.stale_puts, rs.begins, rs.invalidations,
                      rs.fences, rs.errors, atomic_load(&s->l2_down) == 0 ? 1 : 0,
                      atomic_load(&s->l2_fenced) >= atomic_load(&s->l2_lost) ? 1 : 0);
    }
    if (!s->cache) return;
    lm_cache_stats cs;
    lm_cache_get_stats(s->cache, &cs);
    lm_buf_printf(out,
                  "# HELP lotmesh_cache_hits_total Reads answered from the in-process cache.\n"
                  "# TYPE lotmesh_cache_hits_total counter\n"
                  "lotmesh_cache_hits_total %llu\n"
                  "# HELP lotmesh_cache_misses_total Cacheable reads that went to the database.\n"
                  "# TYPE lotmesh_cache_misses_total counter\n"
                  "lotmesh_cache_misses_total %llu\n"
                  "# HELP lotmesh_cache_stale_puts_total Reads not cached because a write "
                  "committed meanwhile.\n"
                  "# TYPE lotmesh_cache_stale_puts_total counter\n"
                  "lotmesh_cache_stale_puts_total %llu\n"
                  "# HELP lotmesh_cache_evictions_total Entries evicted for space.\n"
                  "# TYPE lotmesh_cache_evictions_total counter\n"
                  "lotmesh_cache_evictions_total %llu\n"
                  "# HELP lotmesh_cache_invalidations_total Writes that invalidated the cache.\n"
                  "# TYPE lotmesh_cache_invalidations_total counter\n"
                  "lotmesh_cache_invalidations_total %llu\n"
                  "# HELP lotmesh_cache_flushes_total Whole-cache flushes: another process "
                  "wrote the database.\n"
                  "# TYPE lotmesh_cache_flushes_total counter\n"
                  "lotmesh_cache_flushes_total %llu\n"
                  "# HELP lotmesh_cache_entries Entries in the cache.\n"
                  "# TYPE lotmesh_cache_entries gauge\n"
                  "lotmesh_cache_entries %llu\n"
                  "# HELP lotmesh_cache_bytes Bytes the entries take (CACHE_MAX_BYTES bounds it).\n"
                  "# TYPE lotmesh_cache_bytes gauge\n"
                  "lotmesh_cache_bytes %llu\n",
                  cs.hits, cs.misses, cs.stale_puts, cs.evictions, cs.invalidations, cs.flushes,
                  cs.entries, cs.bytes);
}

static void flush_cache(void *ctx)
{
    lm_store *s = ctx;
    if (s->cache) lm_cache_invalidate_all(s->cache);
}

#define NOTE_L2_LOST "cache-redis-lost"

/* Another process's commit (PostgreSQL's listener thread). A note that its Redis invalidation
 * failed, or notifications missed while not listening: Redis is not trusted until fenced. */
static void on_db_change(void *ctx, const char *note)
{
    lm_store *s = ctx;
    if (s->l2 && note && (!strcmp(note, NOTE_L2_LOST) || !strcmp(note, LM_DB_NOTE_MISSED)))
        atomic_fetch_add(&s->l2_lost, 1);
    flush_cache(s);
}

static void on_stopped(void *ctx)
{
    lm_store *s = ctx;
    lm_db_close(s->db);
    lm_cache_free(s->cache);
    lm_cache_redis_free(s->l2);
    free(s->l2_state);
    lm_sharedgen_close(s->writes);
    free(s->ports);
    free(s); /* the app is done with it: every worker and hook that used it has ended */
}

/* host/dbname of a PostgreSQL connection string, for the log (no password). */
static void show_pg(const char *url, char *out, size_t outlen)
{
    const char *at = strrchr(url, '@');
    const char *rest = strstr(url, "://");
    if (rest) {
        const char *from = at ? at + 1 : rest + 3;
        size_t n = strcspn(from, "?");
        snprintf(out, outlen, "postgresql://%.*s", (int)(n > 120 ? 120 : n), from);
    } else {
        snprintf(out, outlen, "postgresql (keyword connection string)");
    }
}

lm_store *lm_store_open(lm_cfg *cfg, const lm_component_env *env, const char *name,
                        const lm_db_migrations *migrations)
{
    lm_store *s = lm_xcalloc(1, sizeof *s);
    snprintf(s->name, sizeof s->name, "%s", name);
    const char *url = lm_cfg_str(cfg, "DATABASE_URL", NULL);
    const char *path = NULL;
    bool pg = false;
    if (!url) {
        snprintf(s->url, sizeof s->url, "sqlite:%s/%s.db", lm_cfg_data_dir(), name);
    } else if (strncmp(url, "sqlite://", 9) == 0) {
        path = url + 9;
    } else if (strncmp(url, "sqlite:", 7) == 0) {
        path = url + 7;
    } else if (strncmp(url, "postgresql://", 13) == 0 || strncmp(url, "postgres://", 11) == 0 ||
               (!strstr(url, "://") && strchr(url, '='))) {
        pg = true;
        snprintf(s->url, sizeof s->url, "%s", url);
    } else if (strstr(url, "://")) {
        lm_cfg_error(cfg, "DATABASE_URL",
                     "must be sqlite:PATH or postgresql://… (got a URL of an unsupported scheme: "
                     "\"%.32s\")",
                     url);
        free(s);
        return NULL;
    } else {
        path = url;
    }
    if (path) snprintf(s->url, sizeof s->url, "sqlite:%s", path);
    if (pg)
        show_pg(s->url, s->shown, sizeof s->shown);
    else
        snprintf(s->shown, sizeof s->shown, "%s", s->url + 7);
    lm_db_opts opts = {
        .pool_size = (int)lm_cfg_int(cfg, "DATABASE_POOL_SIZE", 4, 1, 256),
        .connect_timeout_ms =
            (int)lm_cfg_duration_ms(cfg, "DATABASE_CONNECT_TIMEOUT", 5000, 1000, 600000),
        .statement_timeout_ms =
            (int)lm_cfg_duration_ms(cfg, "DATABASE_STATEMENT_TIMEOUT", 10000, 100, 3600000),
    };
    const char *cache_url = lm_cfg_str(cfg, "CACHE_URL", "memory:");
    uint64_t cache_bytes = lm_cfg_size(cfg, "CACHE_MAX_BYTES", 32u << 20, 64u << 10, 1ULL << 40);
    bool cache_on = true, redis = false;
    lm_redis_addr raddr;
    uint64_t ttl_ms = lm_cfg_duration_ms(cfg, "CACHE_TTL", 600000, 1000, 7 * 86400000ULL);
    uint64_t timeout_ms = lm_cfg_duration_ms(cfg, "CACHE_TIMEOUT", 250, 1, 60000);
    if (!strcmp(cache_url, "none")) {
        cache_on = false;
    } else if (!strncmp(cache_url, "redis://", 8)) {
        char err[200];
        if (lm_redis_parse_url(cache_url, &raddr, err, sizeof err) != 0)
            lm_cfg_error(cfg, "CACHE_URL", "%s", err);
        redis = true;
    } else if (strcmp(cache_url, "memory:") != 0 && strcmp(cache_url, "memory://") != 0) {
        lm_cfg_error(cfg, "CACHE_URL",
                     "must be memory: (in-process LRU, the default), "
                     "redis://[:password@]host[:port][/db] (shared, behind the in-process one) "
                     "or none (got \"%.32s\")",
                     cache_url);
    }
    if (!lm_cfg_ok(cfg)) { /* an earlier variable is wrong: report that one */
        free(s);
        return NULL;
    }
    char err[512];
    s->db = lm_db_open(s->url, migrations, &opts, err, sizeof err);
    if (!s->db) {
        lm_cfg_error(cfg, "DATABASE_URL", "unusable: %s", err);
        free(s);
        return NULL;
    }
    /* processes sharing a database file share its counter beside it; on PostgreSQL the
     * instances on one host share one keyed by the connection string */
    char gen_path[1200];
    if (pg) {
        const char *tmp = getenv("TMPDIR");
        unsigned long long h = 1469598103934665603ULL; /* FNV-1a */
        for (const char *c = s->url; *c; c++)
            h = (h ^ (unsigned char)*c) * 1099511628211ULL;
        snprintf(gen_path, sizeof gen_path, "%s/lotmesh-%s-%016llx.lmgen",
                 tmp && *tmp ? tmp : "/tmp", name, h);
    } else
        snprintf(gen_path, sizeof gen_path, "%s-lmgen", s->url + 7);
    if (cache_on) s->cache = lm_cache_new(cache_bytes);
    s->writes = lm_sharedgen_open(gen_path, flush_cache, s, err, sizeof err);
    if (!s->writes) {
        lm_cfg_error(cfg, "DATABASE_URL", "unusable: %s", err);
        lm_cache_free(s->cache);
        lm_db_close(s->db);
        free(s);
        return NULL;
    }
    /* other hosts' instances on the same PostgreSQL database: their commits NOTIFY */
    if (pg && cache_on) s->watched = lm_db_watch(s->db, on_db_change, s);
    atomic_init(&s->host_era_seen, lm_sharedgen_era(s->writes));
    /* a missed invalidation on this host not fenced yet (or a new counter file): this process
     * fences before it trusts Redis, as the others on the host do */
    if (lm_sharedgen_fenced(s->writes) != lm_sharedgen_era(s->writes)) atomic_init(&s->l2_lost, 1);
    s->n_ports = env->workers;
    s->ports = lm_xcalloc((size_t)s->n_ports, sizeof *s->ports);
    if (redis && cache_on) {
        char ns[200];
        snprintf(ns, sizeof ns, "lotmesh:cache:%s:", env->name);
        s->l2_state = lm_xcalloc((size_t)env->workers, sizeof *s->l2_state);
        s->l2 = lm_cache_redis_new(&raddr, ns, timeout_ms, ttl_ms, env->workers, on_l2_state, s);
    }
    s->comp = (lm_component){.ctx = s,
                             .worker_start = worker_start,
                             .worker_stop = worker_stop,
                             .stopped = on_stopped,
                             .ready_name = "database",
                             .ready = ready,
                             .metrics = metrics};
    lm_log_info("database: %s (%s); cache: %s", s->shown, lm_db_backend_name(s->db),
                !cache_on ? "none"
                : s->l2   ? "memory in front of redis"
                          : "memory");
    return s;
}

lm_db *lm_store_db(lm_store *s)
{
    return s->db;
}

lm_cache_redis *lm_store_l2(lm_store *s)
{
    return s->l2;
}

typedef struct fence_ctx {
    lm_store *s;
    uint64_t covers;   /* l2_lost when it was sent */
    uint64_t host_era; /* the host counter's era then */
} fence_ctx;

static void on_fenced(void *ud, bool ok)
{
    fence_ctx *f = ud;
    lm_store *s = f->s;
    if (ok) {
        lm_sharedgen_set_fenced(s->writes, f->host_era);
        uint64_t was = atomic_load(&s->l2_fenced);
        while (was < f->covers && !atomic_compare_exchange_weak(&s->l2_fenced, &was, f->covers)) {
        }
        if (was < f->covers && atomic_load(&s->l2_fenced) >= atomic_load(&s->l2_lost))
            lm_log_info("cache: Redis fenced (every entry from before a write it missed is "
                        "void); the shared cache is in use again");
    }
    atomic_store(&s->l2_fencing, false);
    free(f);
}

bool lm_store_l2_ready(lm_store *s, int worker, uint64_t *mark)
{
    uint64_t era = lm_sharedgen_era(s->writes);
    uint64_t seen = atomic_load(&s->host_era_seen);
    if (era != seen && atomic_compare_exchange_strong(&s->host_era_seen, &seen, era))
        atomic_fetch_add(&s->l2_lost, 1); /* a process on this host missed an invalidation */
    uint64_t lost = atomic_load(&s->l2_lost);
    *mark = lost;
    if (atomic_load(&s->l2_fenced) >= lost) return true;
    bool idle = false;
    if (lm_cache_redis_up(s->l2, worker) &&
        atomic_compare_exchange_strong(&s->l2_fencing, &idle, true)) {
        fence_ctx *f = lm_xcalloc(1, sizeof *f);
        *f = (fence_ctx){.s = s, .covers = lost, .host_era = era};
        if (lm_cache_redis_fence(s->l2, worker, on_fenced, f) != 0) {
            free(f);
            atomic_store(&s->l2_fencing, false);
        }
    }
    return false;
}

bool lm_store_l2_still(lm_store *s, uint64_t mark)
{
    return atomic_load(&s->l2_lost) == mark &&
           lm_sharedgen_era(s->writes) == atomic_load(&s->host_era_seen);
}

void lm_store_l2_lost(lm_store *s)
{
    bool trusted = atomic_load(&s->l2_fenced) >= atomic_load(&s->l2_lost);
    lm_sharedgen_bump_era(s->writes); /* the other processes on this host: at their next read */
    atomic_fetch_add(&s->l2_lost, 1);
    if (trusted)
        lm_log_warn("cache: a write's invalidation did not reach Redis; the shared cache is not "
                    "used until Redis is fenced%s",
                    s->watched ? " (other hosts are told through the database)" : "");
}

bool lm_store_l2_announces(lm_store *s)
{
    return s->watched;
}

int lm_store_l2_announce_job(lm_db_conn *c, void *arg)
{
    (void)arg;
    return lm_db_notify(c, NOTE_L2_LOST);
}

lm_cache *lm_store_cache(lm_store *s)
{
    return s->cache;
}

void lm_store_cache_sync(lm_store *s)
{
    lm_sharedgen_sync(s->writes);
}

void lm_store_wrote(lm_store *s)
{
    lm_sharedgen_bump(s->writes);
    if (s->on_wrote) s->on_wrote(s->on_wrote_ctx);
}

void lm_store_on_wrote(lm_store *s, void (*fn)(void *ctx), void *ctx)
{
    s->on_wrote = fn;
    s->on_wrote_ctx = ctx;
}

const lm_component *lm_store_component(lm_store *s)
{
    return &s->comp;
}

lm_db_port *lm_store_port(lm_store *s, int worker)
{
    return s->ports[worker];
}
