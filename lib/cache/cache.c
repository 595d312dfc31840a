/* cache.c — sharded LRU of refcounted immutable values, with the epoch rule that keeps reads
 * racing a write from storing stale data. See cache.h.
 *
 * Layout: a key's 64-bit FNV-1a hash picks the shard (top bits) and the bucket (low bits).
 * Each shard is a chained hash table plus a doubly linked recency list (head: most recently
 * used) and a byte budget; putting past the budget evicts from the tail. Values are
 * allocated and copied before a shard's lock is taken, so the lock covers only pointer
 * work. */
#include "cache.h"

#include "buf.h"
#include "hash.h"

#include <assert.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#define N_SHARDS    16
#define SHARD_OF(h) ((size_t)((h) >> 60) & (N_SHARDS - 1))
#define MIN_BUCKETS 64

typedef struct val {
    lm_cache_val pub; /* first: a const lm_cache_val * is a val * */
    atomic_int refs;
    char data[]; /* body, then a NUL */
} val;

typedef struct entry {
    struct entry *hnext;       /* bucket chain */
    struct entry *prev, *next; /* recency list */
    uint64_t hash;
    uint64_t epoch; /* the epoch it was read in */
    unsigned flags;
    size_t charge; /* bytes it counts against the budget */
    val *v;        /* one reference */
    size_t klen;
    char key[];
} entry;

typedef struct shard {
    pthread_mutex_t mu;
    entry **buckets;
    size_t n_buckets; /* a power of two */
    size_t n;
    entry *head, *tail;
    size_t bytes, max_bytes;
    unsigned long long hits, misses, puts, stale_puts, evictions;
} shard;

struct lm_cache {
    _Atomic uint64_t epoch;
    _Atomic uint64_t flush_epoch; /* entries read before it are void (lm_cache_invalidate_all) */
    atomic_ullong invalidations, flushes;
    size_t max_bytes;
    shard shards[N_SHARDS];
};

static uint64_t hash_key(const char *k, size_t n)
{
    /* FNV-1a's top bits barely depend on a key's last bytes ("/a/1", "/a/2" share a
     * shard): a multiply-xorshift finaliser spreads them over every shard */
    uint64_t h = lm_hash(k, n);
    h ^= h >> 29;
    h *= 0xbf58476d1ce4e5b9ULL;
    return h ^ (h >> 32); /* the top bits pick the shard: mix the low ones in */
}

static void val_unref(val *v)
{
    if (v && atomic_fetch_sub_explicit(&v->refs, 1, memory_order_acq_rel) == 1) free(v);
}

lm_cache *lm_cache_new(size_t max_bytes)
{
    assert(max_bytes > 0);
    lm_cache *c = lm_xcalloc(1, sizeof *c);
    atomic_init(&c->epoch, 1);
    c->max_bytes = max_bytes;
    for (int i = 0; i < N_SHARDS; i++) {
        shard *s = &c->shards[i];
        pthread_mutex_init(&s->mu, NULL);
        s->n_buckets = MIN_BUCKETS;
        s->buckets = lm_xcalloc(s->n_buckets, sizeof *s->buckets);
        s->max_bytes = max_bytes / N_SHARDS;
    }
    return c;
}

void lm_cache_free(lm_cache *c)
{
    if (!c) return;
    for (int i = 0; i < N_SHARDS; i++) {
        shard *s = &c->shards[i];
        for (entry *e = s->head, *next; e; e = next) {
            next = e->next;
            val_unref(e->v);
            free(e);
        }
        free(s->buckets);
        pthread_mutex_destroy(&s->mu);
    }
    free(c);
}

uint64_t lm_cache_epoch(lm_cache *c)
{
    return atomic_load(&c->epoch);
}

/* ---- shard internals (lock held) ------------------------------------------------------ */

static entry **find_slot(shard *s, uint64_t h, const char *key, size_t klen)
{
    entry **p = &s->buckets[h & (s->n_buckets - 1)];
    for (; *p; p = &(*p)->hnext) {
        entry *e = *p;
        if (e->hash == h && e->klen == klen && memcmp(e->key, key, klen) == 0) return p;
    }
    return p;
}

static void lru_unlink(shard *s, entry *e)
{
    if (e->prev)
        e->prev->next = e->next;
    else
        s->head = e->next;
    if (e->next)
        e->next->prev = e->prev;
    else
        s->tail = e->prev;
    e->prev = e->next = NULL;
}

static void lru_push_front(shard *s, entry *e)
{
    e->prev = NULL;
    e->next = s->head;
    if (s->head) s->head->prev = e;
    s->head = e;
    if (!s->tail) s->tail = e;
}

/* Unlinks the entry at *slot from both structures; the caller frees it. */
static entry *remove_at(shard *s, entry **slot)
{
    entry *e = *slot;
    *slot = e->hnext;
    lru_unlink(s, e);
    s->n--;
    s->bytes -= e->charge;
    return e;
}

static void grow(shard *s)
{
    size_t nb = s->n_buckets * 2;
    entry **b = lm_xcalloc(nb, sizeof *b);
    for (size_t i = 0; i < s->n_buckets; i++) {
        for (entry *e = s->buckets[i], *next; e; e = next) {
            next = e->hnext;
            e->hnext = b[e->hash & (nb - 1)];
            b[e->hash & (nb - 1)] = e;
        }
    }
    free(s->buckets);
    s->buckets = b;
    s->n_buckets = nb;
}

/* ---- API ------------------------------------------------------------------------------ */

const lm_cache_val *lm_cache_get(lm_cache *c, const char *key, size_t klen)
{
    uint64_t h = hash_key(key, klen);
    shard *s = &c->shards[SHARD_OF(h)];
    entry *dead = NULL;
    val *v = NULL;
    pthread_mutex_lock(&s->mu);
    entry **slot = find_slot(s, h, key, klen);
    entry *e = *slot;
    if (e && ((e->flags & LM_CACHE_ANY_WRITE) ? e->epoch != atomic_load(&c->epoch)
                                              : e->epoch < atomic_load(&c->flush_epoch))) {
        dead = remove_at(s, slot); /* a write it may not reflect happened since it was read */
        e = NULL;
    }
    if (e) {
        lru_unlink(s, e);
        lru_push_front(s, e);
        v = e->v;
        atomic_fetch_add_explicit(&v->refs, 1, memory_order_relaxed);
        s->hits++;
    } else {
        s->misses++;
    }
    pthread_mutex_unlock(&s->mu);
    if (dead) {
        val_unref(dead->v);
        free(dead);
    }
    return v ? &v->pub : NULL;
}

void lm_cache_release(const lm_cache_val *pub)
{
    val_unref((val *)(uintptr_t)pub); /* pub is the first member of a val */
}

bool lm_cache_put(lm_cache *c, const char *key, size_t klen, const char *body, size_t len,
                  long long version, long long total, unsigned flags, uint64_t epoch)
{
    uint64_t h = hash_key(key, klen);
    shard *s = &c->shards[SHARD_OF(h)];
    size_t charge = sizeof(entry) + klen + sizeof(val) + len + 1;
    if (charge > s->max_bytes) return false;

    val *v = lm_xmalloc(sizeof *v + len + 1);
    memcpy(v->data, body, len);
    v->data[len] = '\0';
    v->pub = (lm_cache_val){.version = version, .total = total, .len = len, .body = v->data};
    atomic_init(&v->refs, 1);
    entry *e = lm_xmalloc(sizeof *e + klen);
    *e = (entry){.hash = h, .epoch = epoch, .flags = flags, .charge = charge, .v = v, .klen = klen};
    memcpy(e->key, key, klen);

    entry *garbage = NULL; /* chained through hnext, freed after unlocking */
    bool stored = false;
    pthread_mutex_lock(&s->mu);
    if (atomic_load(&c->epoch) != epoch) {
        s->stale_puts++; /* a write committed while this was read: it may be older */
        e->hnext = garbage;
        garbage = e;
    } else {
        entry **slot = find_slot(s, h, key, klen);
        if (*slot) {
            entry *old = remove_at(s, slot);
            old->hnext = garbage;
            garbage = old;
            slot = find_slot(s, h, key, klen);
        }
        *slot = e;
        lru_push_front(s, e);
        s->n++;
        s->bytes += charge;
        s->puts++;
        stored = true;
        while (s->bytes > s->max_bytes && s->tail && s->tail != e) {
            entry *victim = s->tail;
            entry **vs = find_slot(s, victim->hash, victim->key, victim->klen);
            assert(*vs == victim);
            remove_at(s, vs);
            victim->hnext = garbage;
            garbage = victim;
            s->evictions++;
        }
        if (s->n > s->n_buckets) grow(s);
    }
    pthread_mutex_unlock(&s->mu);
    while (garbage) {
        entry *next = garbage->hnext;
        val_unref(garbage->v);
        free(garbage);
        garbage = next;
    }
    return stored;
}

void lm_cache_invalidate(lm_cache *c, const char *key, size_t klen)
{
    atomic_fetch_add(&c->epoch, 1); /* first: a read in flight can no longer put */
    atomic_fetch_add_explicit(&c->invalidations, 1, memory_order_relaxed);
    if (!key) return;
    uint64_t h = hash_key(key, klen);
    shard *s = &c->shards[SHARD_OF(h)];
    entry *dead = NULL;
    pthread_mutex_lock(&s->mu);
    entry **slot = find_slot(s, h, key, klen);
    if (*slot) dead = remove_at(s, slot);
    pthread_mutex_unlock(&s->mu);
    if (dead) {
        val_unref(dead->v);
        free(dead);
    }
}

void lm_cache_invalidate_all(lm_cache *c)
{
    uint64_t e = atomic_fetch_add(&c->epoch, 1) + 1; /* reads in flight can no longer put */
    uint64_t f = atomic_load(&c->flush_epoch);
    while (f < e && !atomic_compare_exchange_weak(&c->flush_epoch, &f, e)) {
    } /* a maximum: two flushes racing must not move it back */
    atomic_fetch_add_explicit(&c->flushes, 1, memory_order_relaxed);
}

void lm_cache_get_stats(lm_cache *c, lm_cache_stats *out)
{
    memset(out, 0, sizeof *out);
    out->max_bytes = c->max_bytes;
    out->invalidations = atomic_load_explicit(&c->invalidations, memory_order_relaxed);
    out->flushes = atomic_load_explicit(&c->flushes, memory_order_relaxed);
    for (int i = 0; i < N_SHARDS; i++) {
        shard *s = &c->shards[i];
        pthread_mutex_lock(&s->mu);
        out->hits += s->hits;
        out->misses += s->misses;
        out->puts += s->puts;
        out->stale_puts += s->stale_puts;
        out->evictions += s->evictions;
        out->entries += s->n;
        out->bytes += s->bytes;
        pthread_mutex_unlock(&s->mu);
    }
}
