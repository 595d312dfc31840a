/* limit.c — the gateway's rate limits (gw_limit): GCRA (the generic cell rate algorithm, a
 * token bucket kept as one timestamp per key, the "theoretical arrival time" TAT).
 *
 * A rate is count per period with a burst B; the emission interval is T = period / count. A
 * request of cost c at time now is allowed when max(TAT, now) + c*T - B*T <= now, and then
 * TAT becomes max(TAT, now) + c*T. Remaining = what another c=1 request could still take;
 * reset = when the bucket is full again (TAT - now); retry-after = when a denied request
 * would be allowed.
 *
 * Why this module lives in the gateway and not in lib/mesh: only the gateway limits clients;
 * the services are limited through it. Its Redis transport is lib's lm_redis (the cache
 * layer's connection), which the gateway uses per worker loop.
 *
 * Stores:
 * - in-process (RATE_LIMIT_URL unset): one table for the whole process, exact across its
 *   worker threads: 64 shards, each a spinlock over 512 slots (held for a probe of at most
 *   16 slots: a contended mutex would cost the sleeping worker a futex round trip) keyed by two
 * 64-bit hashes of the key; a slot whose TAT has passed is a full bucket and may be reused, so the
 * table holds the keys that are actually constrained (client ids, addresses that failed to sign
 * in). When a shard's probe window is full of constrained keys, the least constrained gives way.
 * - Redis (RATE_LIMIT_URL=redis://…): one Lua script (atomic in Redis, Redis's own clock)
 *   checks every key of a request and charges them only if all allow: one budget for every
 *   gateway instance. When Redis cannot answer, the request is allowed (fail open, the
 *   default) or refused (closed); either is counted, and the outage is logged once.
 *
 * Threading: gw_limit_check on a worker loop (the worker's own Redis connection); the
 * in-process table from any thread. */
#include "gateway.h"

#include "log.h"
#include "redis.h"

#include <hiredis/hiredis.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SHARDS 64
#define SLOTS  512
#define PROBE  16

typedef struct slot {
    uint64_t h1, h2; /* 0,0: never used */
    int64_t tat_us;
} slot;

typedef struct shard {
    pthread_spinlock_t mu; /* held for a hash probe and a few additions */
    slot slots[SLOTS];
} shard;

struct gw_limiter {
    shard shards[SHARDS];
};

/* ---- rates ------------------------------------------------------------------------------ */

int gw_rate_parse(const char *s, gw_rate *out)
{
    char *end;
    unsigned long long count = strtoull(s, &end, 10);
    if (end == s || *end != '/' || count < 1 || count > 100000000ULL) return -1;
    uint64_t period_s;
    if (!strcmp(end + 1, "s"))
        period_s = 1;
    else if (!strcmp(end + 1, "m"))
        period_s = 60;
    else if (!strcmp(end + 1, "h"))
        period_s = 3600;
    else if (!strcmp(end + 1, "d"))
        period_s = 86400;
    else
        return -1;
    out->count = (uint32_t)count;
    out->period_s = (uint32_t)period_s;
    out->interval_us = (double)period_s * 1e6 / (double)count;
    out->burst = (uint32_t)count;
    return 0;
}

/* ---- in-process --------------------------------------------------------------------------- */

gw_limiter *gw_limiter_new(void)
{
    gw_limiter *l = lm_xcalloc(1, sizeof *l);
    for (int i = 0; i < SHARDS; i++)
        pthread_spin_init(&l->shards[i].mu, PTHREAD_PROCESS_PRIVATE);
    return l;
}

void gw_limiter_free(gw_limiter *l)
{
    if (!l) return;
    for (int i = 0; i < SHARDS; i++)
        pthread_spin_destroy(&l->shards[i].mu);
    free(l);
}

static void hash2(const char *key, uint64_t *h1, uint64_t *h2)
{
    uint64_t a = 0xcbf29ce484222325ULL, b = 0x9e3779b97f4a7c15ULL;
    for (const unsigned char *p = (const unsigned char *)key; *p; p++) {
        a = (a ^ *p) * 0x100000001b3ULL;
        b = (b ^ *p) * 0xff51afd7ed558ccdULL;
        b ^= b >> 29;
    }
    *h1 = a | 1; /* never 0,0 */
    *h2 = b;
}

static slot *find_slot(shard *s, uint64_t h1, uint64_t h2, int64_t now)
{
    slot *reuse = NULL, *least = NULL;
    for (int i = 0; i < PROBE; i++) {
        slot *x = &s->slots[(h1 + (uint64_t)i) % SLOTS];
        if (x->h1 == h1 && x->h2 == h2) return x;
        if (!reuse && (x->h1 == 0 || x->tat_us <= now)) reuse = x;
        if (!least || x->tat_us < least->tat_us) least = x;
    }
    slot *x = reuse ? reuse : least;
    x->h1 = h1;
    x->h2 = h2;
    x->tat_us = now;
    return x;
}

static void local_check(gw_limiter *l, const gw_limit_key *keys, size_t n, unsigned cost, bool dry,
                        gw_limit_result *res)
{
    int64_t now = (int64_t)(uv_hrtime() / 1000);
    uint64_t h1[GW_LIMIT_MAX_KEYS], h2[GW_LIMIT_MAX_KEYS];
    int sh[GW_LIMIT_MAX_KEYS];
    for (size_t i = 0; i < n; i++) {
        hash2(keys[i].key, &h1[i], &h2[i]);
        sh[i] = (int)((h1[i] >> 32) % SHARDS);
    }
    /* lock the shards involved in ascending order, each once */
    int order[GW_LIMIT_MAX_KEYS], m = 0;
    if (n == 1) order[m++] = sh[0]; /* the usual case: one key */
    for (int s = 0; n > 1 && s < SHARDS && m < (int)n; s++)
        for (size_t i = 0; i < n; i++)
            if (sh[i] == s) {
                order[m++] = s;
                break;
            }
    for (int i = 0; i < m; i++)
        pthread_spin_lock(&l->shards[order[i]].mu);
    slot *sl[GW_LIMIT_MAX_KEYS];
    int64_t new_tat[GW_LIMIT_MAX_KEYS];
    res->allowed = true;
    res->remaining = -1;
    res->reset_s = 0;
    res->retry_after_s = 0;
    for (size_t i = 0; i < n; i++) {
        sl[i] = find_slot(&l->shards[sh[i]], h1[i], h2[i], now);
        double t = keys[i].rate->interval_us, b = (double)keys[i].rate->burst;
        int64_t tat = sl[i]->tat_us > now ? sl[i]->tat_us : now;
        new_tat[i] = tat + (int64_t)(t * cost);
        int64_t allow_at = new_tat[i] - (int64_t)(b * t);
        if (now < allow_at) {
            res->allowed = false;
            uint64_t ra = (uint64_t)ceil((double)(allow_at - now) / 1e6);
            if (ra > res->retry_after_s) res->retry_after_s = ra;
            new_tat[i] = tat; /* what the bucket holds now */
        }
    }
    for (size_t i = 0; i < n; i++) {
        double t = keys[i].rate->interval_us, b = (double)keys[i].rate->burst;
        int64_t tat = res->allowed ? new_tat[i] : (sl[i]->tat_us > now ? sl[i]->tat_us : now);
        if (res->allowed && !dry) sl[i]->tat_us = new_tat[i];
        double rem = floor(((double)now + b * t - (double)tat) / t);
        if (rem < 0) rem = 0;
        res->key_remaining[i] = (long long)rem;
        if (res->remaining < 0 || (long long)rem < res->remaining) res->remaining = (long long)rem;
        uint64_t reset = (uint64_t)ceil((double)(tat - now) / 1e6);
        if (reset > res->reset_s) res->reset_s = reset;
    }
    for (int i = m - 1; i >= 0; i--)
        pthread_spin_unlock(&l->shards[order[i]].mu);
}

/* ---- Redis ------------------------------------------------------------------------------- */

/* KEYS: the buckets; ARGV: cost, dry (0/1), then per key its interval (µs) and burst.
 * Returns {allowed, remaining, retry_after_us, reset_us, remaining of each key…}. */
const char *const gw_limit_script =
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000000 + tonumber(t[2])\n"
    "local cost = tonumber(ARGV[1])\n"
    "local dry = ARGV[2] == '1'\n"
    "local allowed, remaining, retry, reset = 1, -1, 0, 0\n"
    "local tats, news, rems = {}, {}, {}\n"
    "for i, k in ipairs(KEYS) do\n"
    "  local T = tonumber(ARGV[1 + 2 * i]); local B = tonumber(ARGV[2 + 2 * i])\n"
    "  local tat = tonumber(redis.call('GET', k) or '0')\n"
    "  if tat < now then tat = now end\n"
    "  tats[i] = tat\n"
    "  news[i] = tat + T * cost\n"
    "  local allow_at = news[i] - B * T\n"
    "  if now < allow_at then\n"
    "    allowed = 0\n"
    "    if allow_at - now > retry then retry = allow_at - now end\n"
    "  end\n"
    "end\n"
    "for i, k in ipairs(KEYS) do\n"
    "  local T = tonumber(ARGV[1 + 2 * i]); local B = tonumber(ARGV[2 + 2 * i])\n"
    "  local tat = tats[i]\n"
    "  if allowed == 1 then\n"
    "    tat = news[i]\n"
    "    if not dry then\n"
    "      redis.call('SET', k, string.format('%.0f', tat), 'PX', math.ceil((tat - now) / 1000) + "
    "1)\n"
    "    end\n"
    "  end\n"
    "  local rem = math.floor((now + B * T - tat) / T)\n"
    "  if rem < 0 then rem = 0 end\n"
    "  rems[i] = rem\n"
    "  if remaining < 0 or rem < remaining then remaining = rem end\n"
    "  if tat - now > reset then reset = tat - now end\n"
    "end\n"
    "local out = {allowed, remaining, math.ceil(retry), math.ceil(reset)}\n"
    "for i = 1, #rems do out[4 + i] = rems[i] end\n"
    "return out\n";

typedef struct redis_check {
    gateway *gw;
    gw_limit_cb cb;
    void *ud;
} redis_check;

static void store_failed(gateway *gw, gw_limit_result *res)
{
    atomic_fetch_add_explicit(&gw->limit_store_failures, 1, memory_order_relaxed);
    res->store_failed = true;
    res->allowed = !gw->limit_fail_closed;
    res->remaining = -1;
    res->retry_after_s = 1;
}

static void on_redis_reply(void *ud, const struct redisReply *r)
{
    redis_check *c = ud;
    gw_limit_result res = {0};
    if (r && r->type == REDIS_REPLY_ARRAY && r->elements >= 4 &&
        r->elements <= 4 + GW_LIMIT_MAX_KEYS && r->element[0]->type == REDIS_REPLY_INTEGER) {
        for (size_t i = 4; i < r->elements; i++)
            res.key_remaining[i - 4] = r->element[i]->integer;
        res.allowed = r->element[0]->integer == 1;
        res.remaining = r->element[1]->integer;
        res.retry_after_s = (uint64_t)((r->element[2]->integer + 999999) / 1000000);
        res.reset_s = (uint64_t)((r->element[3]->integer + 999999) / 1000000);
    } else {
        store_failed(c->gw, &res);
    }
    c->cb(c->ud, &res);
    free(c);
}

void gw_limit_redis_state(void *ud, bool up, const char *why)
{
    gw_worker *w = ud;
    gateway *gw = w->gw;
    int was = w->redis_state;
    w->redis_state = up ? 1 : 2;
    if (up) {
        if (was == 2 && atomic_fetch_sub(&gw->limit_redis_down, 1) == 1)
            lm_log_info("rate limits: Redis reachable again; limits are shared again");
    } else if (was != 2 && atomic_fetch_add(&gw->limit_redis_down, 1) == 0) {
        lm_log_warn("rate limits: Redis unavailable (%s); failing %s until it is back", why,
                    gw->limit_fail_closed ? "closed (refusing)" : "open (allowing)");
    }
}

void gw_limit_check(gateway *gw, int worker, const gw_limit_key *keys, size_t n, unsigned cost,
                    bool dry, gw_limit_cb cb, void *ud)
{
    gw_limit_result res = {0};
    if (n == 0 || n > GW_LIMIT_MAX_KEYS) {
        res.allowed = true;
        res.remaining = -1;
        cb(ud, &res);
        return;
    }
    if (!gw->limit_redis) {
        local_check(gw->limiter, keys, n, cost, dry, &res);
        cb(ud, &res);
        return;
    }
    const char *argv[2 + 3 * GW_LIMIT_MAX_KEYS];
    char nums[2 * GW_LIMIT_MAX_KEYS + 2][32], full[GW_LIMIT_MAX_KEYS][300];
    int a = 0;
    for (size_t i = 0; i < n; i++) {
        snprintf(full[i], sizeof full[i], "lotmesh:rl:%.280s", keys[i].key);
        argv[a++] = full[i];
    }
    snprintf(nums[0], sizeof nums[0], "%u", cost);
    argv[a++] = nums[0];
    argv[a++] = dry ? "1" : "0";
    for (size_t i = 0; i < n; i++) {
        snprintf(nums[1 + 2 * i], 32, "%.3f", keys[i].rate->interval_us);
        snprintf(nums[2 + 2 * i], 32, "%u", keys[i].rate->burst);
        argv[a++] = nums[1 + 2 * i];
        argv[a++] = nums[2 + 2 * i];
    }
    redis_check *c = lm_xcalloc(1, sizeof *c);
    c->gw = gw;
    c->cb = cb;
    c->ud = ud;
    lm_redis *r = gw->workers[worker].redis;
    if (!r || lm_redis_eval(r, 0, on_redis_reply, c, (int)n, a, argv, NULL) != 0) {
        free(c);
        store_failed(gw, &res);
        cb(ud, &res);
    }
}

const gw_rate *gw_rate_for(const gateway *gw, const gw_client *c, const char *service)
{
    if (c) {
        for (size_t i = 0; service && i < c->n_service_rates; i++)
            if (!strcmp(c->service_rates[i].service, service)) return &c->service_rates[i].rate;
        if (c->has_rate) return &c->rate;
    }
    return gw->has_default_rate ? &gw->default_rate : NULL;
}

/* n in decimal into out (at least 21 bytes), NUL-terminated: on every limited request, three
 * times — snprintf cost a third of the limit's instructions (bench/instr.sh proxy-limit). */
static const char *decimal(uint64_t n, char out[21])
{
    char *p = out + 20;
    *p = '\0';
    do {
        *--p = (char)('0' + n % 10);
        n /= 10;
    } while (n);
    return p;
}

void gw_limit_headers(lm_req *req, const gw_rate *rate, const gw_limit_result *res)
{
    if (res->store_failed || res->remaining < 0) return;
    char v[21];
    lm_resp_header(req, "RateLimit-Limit", decimal(rate->burst, v));
    lm_resp_header(req, "RateLimit-Remaining", decimal((uint64_t)res->remaining, v));
    lm_resp_header(req, "RateLimit-Reset", decimal(res->reset_s, v));
}
