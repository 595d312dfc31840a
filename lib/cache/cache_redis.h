/* cache_redis.h — the Redis response-cache backend (lm_cache_redis): DESIGN 2's production
 * cache (CACHE_URL=redis://…), shared by every instance of a service. The services use it as
 * a second level behind the in-process cache (cache.h): a miss there asks Redis, a miss in
 * Redis reads the database and fills both.
 *
 * Correctness, with several instances writing:
 * - Every committed write, before its response, runs one script in Redis (lm_cache_redis_
 *   invalidate): it bumps the namespace's generation and deletes the item's key. Lists and
 *   other LM_CACHE_ANY_WRITE entries carry the generation they were read in and count only
 *   while it is current; items are deleted by key.
 * - A reader takes the generation with its miss (lm_cache_redis_get returns it) and stores
 *   its result only if the generation is still the same (lm_cache_redis_put checks in the
 *   script): a row read before a commit is never stored after that commit's invalidation.
 * - Entries carry the era of the namespace ("<ns>era", in Redis, so shared by every instance
 *   on every host) at their put and count only while it is current. lm_cache_redis_fence
 *   bumps it (and the generation): every entry and every put in flight are void at once.
 * - Writes whose invalidation could not reach Redis (down, timed out, cut off from this
 *   instance only) are the caller's to fence: an instance that knows of one (its own, or
 *   another's told through the database) neither reads nor stores here until it has fenced
 *   (lib/rest/store.h, README "Redis as the shared cache").
 * - Redis down means misses, never errors: get/put/invalidate answer at once (lm_redis).
 *
 * - A write marks itself before it starts (lm_cache_redis_begin): its item's entry is deleted
 *   and puts of it (and of lists) are refused until the write's invalidation or a lease ends,
 *   so a writer that dies between its commit and its invalidation leaves no older copy.
 *
 * Keys: "<ns>gen", "<ns>era", "<ns>busy" (writes in flight: tokens by deadline), "<ns>w:<key>"
 * (writes of key in flight), "<ns>e:<key>"; an entry's value is
 * "<era> <gen> <flags> <version> <total>\n<body>".
 *
 * Ownership: copies what it is given; a hit's body is valid during the callback only.
 * Threading: new/free on the main thread (before the workers start, after they stopped);
 * attach/detach on the worker's own loop thread; get/put/invalidate on that worker's thread;
 * stats from any thread. */
#ifndef LM_CACHE_REDIS_H
#define LM_CACHE_REDIS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "redis.h"

typedef struct lm_cache_redis lm_cache_redis;

typedef struct lm_cache_redis_hit {
    bool hit;
    uint64_t gen; /* the generation at the miss: give it to lm_cache_redis_put */
    long long version, total;
    const char *body; /* hit: the body, valid during the callback */
    size_t len;
} lm_cache_redis_hit;

typedef void (*lm_cache_redis_get_cb)(void *ud, const lm_cache_redis_hit *h);
typedef void (*lm_cache_redis_done_cb)(void *ud, bool ok);

typedef struct lm_cache_redis_stats {
    unsigned long long hits, misses, puts, stale_puts, begins, invalidations, fences, errors;
} lm_cache_redis_stats;

/* A worker's connection became usable or was lost (on that worker's loop). */
typedef void (*lm_cache_redis_state_cb)(void *ud, int worker, bool up, const char *why);

/* ns: the key prefix ("lotmesh:cache:charges_api:"). */
lm_cache_redis *lm_cache_redis_new(const lm_redis_addr *addr, const char *ns, uint64_t timeout_ms,
                                   uint64_t ttl_ms, int workers, lm_cache_redis_state_cb on_state,
                                   void *state_ud);
void lm_cache_redis_free(lm_cache_redis *c);
void lm_cache_redis_attach(lm_cache_redis *c, int worker, uv_loop_t *loop);
void lm_cache_redis_detach(lm_cache_redis *c, int worker);

/* Whether worker's connection is up now. */
bool lm_cache_redis_up(lm_cache_redis *c, int worker);
/* 0: cb will be called once (hit or miss with the generation); -1: Redis is not usable now,
 * nothing will be called — read the database and do not put. */
int lm_cache_redis_get(lm_cache_redis *c, int worker, const char *key, size_t klen,
                       lm_cache_redis_get_cb cb, void *ud);
/* Stores body under key, stamped with the current era, if the generation is still gen (fire
 * and forget); gen as taken at the miss. */
void lm_cache_redis_put(lm_cache_redis *c, int worker, const char *key, size_t klen,
                        const char *body, size_t len, long long version, long long total,
                        unsigned flags, uint64_t gen);
/* Before a write (of item key, or NULL for none): the generation moves, key's entry goes,
 * and until the write ended (lm_cache_redis_invalidate with w) or its lease ran
 * out (30 s: the writer died), no list and no entry of key is stored — so an instance killed
 * between its commit and its invalidation leaves nothing older than its write behind. 0: done
 * is called with the outcome; -1: not sent, done is not called (the write goes on without).
 * Fills w (the caller's, until the invalidation). */
typedef struct lm_cache_redis_write {
    char token[48]; /* this write's, among every instance's */
    bool begun;     /* the mark is (believed) taken */
    bool item;      /* … with the item key */
} lm_cache_redis_write;
int lm_cache_redis_begin(lm_cache_redis *c, int worker, const char *key, size_t klen,
                         lm_cache_redis_write *w, lm_cache_redis_done_cb done, void *ud);
/* After a write (committed, or failed when it had begun): bumps the generation, deletes key
 * (may be NULL), and gives back what w (may be NULL) took. 0: done is called once it is done
 * (ok) or failed; -1: could not be sent, done is not called. After a committed write's
 * failure the caller must fence before trusting Redis again (see above). */
int lm_cache_redis_invalidate(lm_cache_redis *c, int worker, const char *key, size_t klen,
                              const lm_cache_redis_write *w, lm_cache_redis_done_cb done, void *ud);
/* Voids everything stored so far (new era, new generation). Same contract as invalidate. */
int lm_cache_redis_fence(lm_cache_redis *c, int worker, lm_cache_redis_done_cb done, void *ud);
void lm_cache_redis_get_stats(lm_cache_redis *c, lm_cache_redis_stats *out);

#endif
