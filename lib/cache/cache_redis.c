/* cache_redis.c — lm_cache_redis: the Redis response-cache backend. See cache_redis.h. */
#include "cache_redis.h"

#include "buf.h"
#include "cache.h"

#include <hiredis/hiredis.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { SCRIPT_GET, SCRIPT_PUT, SCRIPT_INVALIDATE, SCRIPT_FENCE, SCRIPT_BEGIN };

/* How long a write's marks (lm_cache_redis_begin) hold at most: longer than a write takes
 * from its begin to its invalidation (DATABASE_STATEMENT_TIMEOUT's default is 10 s); an
 * instance that died in between leaves them to expire. */
#define WRITE_LEASE_MS "30000"

/* KEYS: gen, era, entry. Returns {gen} (miss) or {gen, value}. */
static const char get_script[] = "local g = redis.call('GET', KEYS[1]) or '0'\n"
                                 "local e = redis.call('GET', KEYS[2]) or '0'\n"
                                 "local v = redis.call('GET', KEYS[3])\n"
                                 "if not v then return {g} end\n"
                                 "local ve, vg, vf = string.match(v, '^(%d+) (%d+) (%d+) ')\n"
                                 "if ve ~= e or (vf == '1' and vg ~= g) then return {g} end\n"
                                 "return {g, v}\n";

/* KEYS: gen, era, entry, busy, the entry's write mark; ARGV: the generation seen, "flags
 * version total\n", body, ttl ms. Returns 1 when stored, 0 when a write or a fence happened
 * since, or a write is in flight that it may not reflect (stale): for a list any write (busy:
 * their tokens by deadline, the expired ones dropped), for an item one of it (its mark). */
static const char put_script[] =
    "local g = redis.call('GET', KEYS[1]) or '0'\n"
    "if g ~= ARGV[1] then return 0 end\n"
    "if string.sub(ARGV[2], 1, 1) == '1' then\n"
    "  local t = redis.call('TIME')\n"
    "  redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', t[1] * 1000 + math.floor(t[2] / 1000))\n"
    "  if redis.call('ZCARD', KEYS[4]) > 0 then return 0 end\n"
    "elseif tonumber(redis.call('GET', KEYS[5]) or '0') > 0 then\n"
    "  return 0\n"
    "end\n"
    "local e = redis.call('GET', KEYS[2]) or '0'\n"
    "redis.call('SET', KEYS[3], e .. ' ' .. g .. ' ' .. ARGV[2] .. ARGV[3], 'PX', ARGV[4])\n"
    "return 1\n";

/* KEYS: gen, busy[, the entry's write mark, entry]; ARGV: the lease, the write's token. Before
 * a write: its entry and every list are void, and no put for them is taken until the write
 * ended or its lease ran out. */
static const char begin_script[] = "local t = redis.call('TIME')\n"
                                   "local now = t[1] * 1000 + math.floor(t[2] / 1000)\n"
                                   "redis.call('INCR', KEYS[1])\n"
                                   "redis.call('ZADD', KEYS[2], now + tonumber(ARGV[1]), ARGV[2])\n"
                                   "redis.call('PEXPIRE', KEYS[2], ARGV[1])\n"
                                   "if KEYS[3] then\n"
                                   "  redis.call('INCR', KEYS[3])\n"
                                   "  redis.call('PEXPIRE', KEYS[3], ARGV[1])\n"
                                   "  redis.call('DEL', KEYS[4])\n"
                                   "end\n"
                                   "return 1\n";

/* KEYS: gen, busy, the begun item's mark (or ""), the entry (or ""); ARGV: the begun write's
 * token (or ""). Ends a write: the generation moves, the entry goes, its marks are given
 * back. */
static const char invalidate_script[] =
    "redis.call('INCR', KEYS[1])\n"
    "if ARGV[1] ~= '' then redis.call('ZREM', KEYS[2], ARGV[1]) end\n"
    "if KEYS[3] ~= '' and redis.call('EXISTS', KEYS[3]) == 1 and\n"
    "   redis.call('DECR', KEYS[3]) <= 0 then\n"
    "  redis.call('DEL', KEYS[3])\n"
    "end\n"
    "if KEYS[4] ~= '' then redis.call('DEL', KEYS[4]) end\n"
    "return 1\n";

/* KEYS: gen, era. Voids every entry (their era is past) and every put in flight (gen). */
static const char fence_script[] = "redis.call('INCR', KEYS[1])\n"
                                   "return redis.call('INCR', KEYS[2])\n";

struct lm_cache_redis {
    lm_redis_addr addr;
    char ns[128];
    char gen_key[160], era_key[160], busy_key[160];
    uint64_t timeout_ms, ttl_ms;
    lm_redis **conns; /* by worker */
    struct conn_ctx {
        struct lm_cache_redis *c;
        int worker;
    } * ctxs; /* by worker: what each connection's state hook gets */
    int workers;
    lm_cache_redis_state_cb on_state;
    void *state_ud;
    atomic_ullong hits, misses, puts, stale_puts, begins, invalidations, fences, errors;
    atomic_int up_conns;
    char token_prefix[24]; /* this process's writes' tokens: "<prefix>:<n>" */
    atomic_ullong next_token;
};

static void bump(atomic_ullong *c)
{
    atomic_fetch_add_explicit(c, 1, memory_order_relaxed);
}

lm_cache_redis *lm_cache_redis_new(const lm_redis_addr *addr, const char *ns, uint64_t timeout_ms,
                                   uint64_t ttl_ms, int workers, lm_cache_redis_state_cb on_state,
                                   void *state_ud)
{
    lm_cache_redis *c = lm_xcalloc(1, sizeof *c);
    c->addr = *addr;
    snprintf(c->ns, sizeof c->ns, "%s", ns);
    snprintf(c->gen_key, sizeof c->gen_key, "%sgen", c->ns);
    snprintf(c->era_key, sizeof c->era_key, "%sera", c->ns);
    snprintf(c->busy_key, sizeof c->busy_key, "%sbusy", c->ns);
    unsigned char r[8];
    uv_random(NULL, NULL, r, sizeof r, 0, NULL);
    for (int i = 0; i < 8; i++)
        snprintf(c->token_prefix + 2 * i, 3, "%02x", r[i]);
    c->timeout_ms = timeout_ms;
    c->ttl_ms = ttl_ms;
    c->workers = workers;
    c->conns = lm_xcalloc((size_t)workers, sizeof *c->conns);
    c->ctxs = lm_xcalloc((size_t)workers, sizeof *c->ctxs);
    c->on_state = on_state;
    c->state_ud = state_ud;
    return c;
}

void lm_cache_redis_free(lm_cache_redis *c)
{
    if (!c) return;
    free(c->conns);
    free(c->ctxs);
    free(c);
}

static void on_conn_state(void *ud, bool up, const char *why)
{
    struct conn_ctx *x = ud;
    if (x->c->on_state) x->c->on_state(x->c->state_ud, x->worker, up, why);
}

void lm_cache_redis_attach(lm_cache_redis *c, int worker, uv_loop_t *loop)
{
    static const char *const scripts[] = {get_script, put_script, invalidate_script, fence_script,
                                          begin_script};
    c->ctxs[worker] = (struct conn_ctx){.c = c, .worker = worker};
    c->conns[worker] =
        lm_redis_new(loop, &c->addr, c->timeout_ms, scripts, sizeof scripts / sizeof scripts[0],
                     on_conn_state, &c->ctxs[worker]);
}

void lm_cache_redis_detach(lm_cache_redis *c, int worker)
{
    lm_redis_free(c->conns[worker]);
    c->conns[worker] = NULL;
}

static size_t entry_key(const lm_cache_redis *c, const char *key, size_t klen, char *out,
                        size_t outlen)
{
    int n = snprintf(out, outlen, "%se:%.*s", c->ns, (int)klen, key);
    return n > 0 && (size_t)n < outlen ? (size_t)n : 0;
}

/* The key of an entry's write mark: "<ns>w:<key>". */
static size_t mark_key(const lm_cache_redis *c, const char *key, size_t klen, char *out,
                       size_t outlen)
{
    int n = snprintf(out, outlen, "%sw:%.*s", c->ns, (int)klen, key);
    return n > 0 && (size_t)n < outlen ? (size_t)n : 0;
}

bool lm_cache_redis_up(lm_cache_redis *c, int worker)
{
    return lm_redis_up(c->conns[worker]);
}

static bool usable(lm_cache_redis *c, int worker)
{
    return lm_redis_up(c->conns[worker]);
}

/* ---- get ------------------------------------------------------------------------------------ */

typedef struct get_req {
    lm_cache_redis *c;
    lm_cache_redis_get_cb cb;
    void *ud;
} get_req;

static void on_get(void *ud, const struct redisReply *r)
{
    get_req *g = ud;
    lm_cache_redis *c = g->c;
    lm_cache_redis_hit h = {0};
    bool ok = r && r->type == REDIS_REPLY_ARRAY && r->elements >= 1 &&
              r->element[0]->type == REDIS_REPLY_STRING;
    if (ok) h.gen = strtoull(r->element[0]->str, NULL, 10);
    if (ok && r->elements == 2 && r->element[1]->type == REDIS_REPLY_STRING) {
        const char *v = r->element[1]->str;
        const char *nl = memchr(v, '\n', r->element[1]->len);
        unsigned long long era, gen;
        unsigned flags;
        if (nl &&
            sscanf(v, "%llu %llu %u %lld %lld", &era, &gen, &flags, &h.version, &h.total) == 5) {
            h.hit = true;
            h.body = nl + 1;
            h.len = r->element[1]->len - (size_t)(nl + 1 - v);
        }
    }
    if (!ok) bump(&c->errors);
    bump(h.hit ? &c->hits : &c->misses);
    if (ok) {
        g->cb(g->ud, &h);
    } else { /* failed or timed out: a miss that must not be put (generation unknown) */
        h.gen = UINT64_MAX;
        g->cb(g->ud, &h);
    }
    free(g);
}

int lm_cache_redis_get(lm_cache_redis *c, int worker, const char *key, size_t klen,
                       lm_cache_redis_get_cb cb, void *ud)
{
    if (!usable(c, worker)) return -1;
    char ek[1024];
    size_t ekl = entry_key(c, key, klen, ek, sizeof ek);
    if (!ekl) return -1;
    get_req *g = lm_xcalloc(1, sizeof *g);
    g->c = c;
    g->cb = cb;
    g->ud = ud;
    const char *argv[] = {c->gen_key, c->era_key, ek};
    size_t lens[] = {strlen(c->gen_key), strlen(c->era_key), ekl};
    if (lm_redis_eval(c->conns[worker], SCRIPT_GET, on_get, g, 3, 3, argv, lens) != 0) {
        free(g);
        return -1;
    }
    return 0;
}

/* ---- put ------------------------------------------------------------------------------------ */

static void on_put(void *ud, const struct redisReply *r)
{
    lm_cache_redis *c = ud;
    if (!r || r->type != REDIS_REPLY_INTEGER)
        bump(&c->errors);
    else
        bump(r->integer == 1 ? &c->puts : &c->stale_puts);
}

void lm_cache_redis_put(lm_cache_redis *c, int worker, const char *key, size_t klen,
                        const char *body, size_t len, long long version, long long total,
                        unsigned flags, uint64_t gen)
{
    if (gen == UINT64_MAX || !usable(c, worker)) return;
    char ek[1024], mk[1024], g[32], meta[80], ttl[32];
    size_t ekl = entry_key(c, key, klen, ek, sizeof ek);
    size_t mkl = mark_key(c, key, klen, mk, sizeof mk);
    if (!ekl || !mkl) return;
    snprintf(g, sizeof g, "%llu", (unsigned long long)gen);
    snprintf(meta, sizeof meta, "%u %lld %lld\n", (flags & LM_CACHE_ANY_WRITE) ? 1u : 0u, version,
             total);
    snprintf(ttl, sizeof ttl, "%llu", (unsigned long long)c->ttl_ms);
    const char *argv[] = {c->gen_key, c->era_key, ek, c->busy_key, mk, g, meta, body, ttl};
    size_t lens[] = {strlen(c->gen_key), strlen(c->era_key), ekl, strlen(c->busy_key), mkl,
                     strlen(g),          strlen(meta),       len, strlen(ttl)};
    lm_redis_eval(c->conns[worker], SCRIPT_PUT, on_put, c, 5, 9, argv, lens);
}

/* ---- invalidate ------------------------------------------------------------------------------ */

typedef struct inv_req {
    lm_cache_redis *c;
    atomic_ullong *done_count; /* counted when it was done */
    lm_cache_redis_done_cb done;
    void *ud;
} inv_req;

static void on_invalidated(void *ud, const struct redisReply *r)
{
    inv_req *q = ud;
    bool ok = r && r->type == REDIS_REPLY_INTEGER; /* else: it may or may not have happened */
    bump(ok ? q->done_count : &q->c->errors);
    q->done(q->ud, ok);
    free(q);
}

static int send_done(lm_cache_redis *c, int worker, size_t script, int numkeys, int argc,
                     const char **argv, const size_t *lens, lm_cache_redis_done_cb done, void *ud)
{
    lm_redis *r = c->conns[worker];
    inv_req *q = lm_xcalloc(1, sizeof *q);
    q->c = c;
    q->done_count = script == SCRIPT_BEGIN ? &c->begins : &c->invalidations;
    q->done = done;
    q->ud = ud;
    if (!lm_redis_up(r) || lm_redis_eval(r, script, on_invalidated, q, numkeys, argc, argv, lens)) {
        free(q);
        bump(&c->errors);
        return -1;
    }
    return 0;
}

int lm_cache_redis_begin(lm_cache_redis *c, int worker, const char *key, size_t klen,
                         lm_cache_redis_write *w, lm_cache_redis_done_cb done, void *ud)
{
    char ek[1024], mk[1024];
    size_t ekl = key ? entry_key(c, key, klen, ek, sizeof ek) : 0;
    size_t mkl = key ? mark_key(c, key, klen, mk, sizeof mk) : 0;
    bool item = ekl && mkl;
    snprintf(w->token, sizeof w->token, "%s:%llu", c->token_prefix,
             (unsigned long long)atomic_fetch_add(&c->next_token, 1));
    w->begun = true;
    w->item = item;
    const char *argv[] = {c->gen_key, c->busy_key, mk, ek, WRITE_LEASE_MS, w->token};
    size_t lens[] = {strlen(c->gen_key),     strlen(c->busy_key), mkl, ekl,
                     strlen(WRITE_LEASE_MS), strlen(w->token)};
    int rc;
    if (item) {
        rc = send_done(c, worker, SCRIPT_BEGIN, 4, 6, argv, lens, done, ud);
    } else {
        const char *av[] = {c->gen_key, c->busy_key, WRITE_LEASE_MS, w->token};
        size_t al[] = {lens[0], lens[1], lens[4], lens[5]};
        rc = send_done(c, worker, SCRIPT_BEGIN, 2, 4, av, al, done, ud);
    }
    if (rc != 0) w->begun = w->item = false;
    return rc;
}

int lm_cache_redis_invalidate(lm_cache_redis *c, int worker, const char *key, size_t klen,
                              const lm_cache_redis_write *w, lm_cache_redis_done_cb done, void *ud)
{
    bool begun = w && w->begun;
    char ek[1024], mk[1024];
    size_t ekl = key ? entry_key(c, key, klen, ek, sizeof ek) : 0;
    size_t mkl = key && begun && w->item ? mark_key(c, key, klen, mk, sizeof mk) : 0;
    const char *argv[] = {c->gen_key, c->busy_key, mkl ? mk : "", ekl ? ek : "",
                          begun ? w->token : ""};
    size_t lens[] = {strlen(c->gen_key), strlen(c->busy_key), mkl, ekl,
                     begun ? strlen(w->token) : 0};
    return send_done(c, worker, SCRIPT_INVALIDATE, 4, 5, argv, lens, done, ud);
}

/* ---- fence ---------------------------------------------------------------------------------- */

typedef struct fence_req {
    lm_cache_redis *c;
    lm_cache_redis_done_cb done;
    void *ud;
} fence_req;

static void on_fenced(void *ud, const struct redisReply *r)
{
    fence_req *q = ud;
    bool ok = r && r->type == REDIS_REPLY_INTEGER;
    bump(ok ? &q->c->fences : &q->c->errors);
    q->done(q->ud, ok);
    free(q);
}

int lm_cache_redis_fence(lm_cache_redis *c, int worker, lm_cache_redis_done_cb done, void *ud)
{
    fence_req *q = lm_xcalloc(1, sizeof *q);
    *q = (fence_req){.c = c, .done = done, .ud = ud};
    const char *argv[] = {c->gen_key, c->era_key};
    size_t lens[] = {strlen(c->gen_key), strlen(c->era_key)};
    if (!usable(c, worker) ||
        lm_redis_eval(c->conns[worker], SCRIPT_FENCE, on_fenced, q, 2, 2, argv, lens) != 0) {
        free(q);
        return -1;
    }
    return 0;
}

void lm_cache_redis_get_stats(lm_cache_redis *c, lm_cache_redis_stats *out)
{
    out->hits = atomic_load(&c->hits);
    out->misses = atomic_load(&c->misses);
    out->puts = atomic_load(&c->puts);
    out->stale_puts = atomic_load(&c->stale_puts);
    out->begins = atomic_load(&c->begins);
    out->invalidations = atomic_load(&c->invalidations);
    out->fences = atomic_load(&c->fences);
    out->errors = atomic_load(&c->errors);
}
