/* cache.h — the in-process response cache (lm_cache): DESIGN 2's embedded cache backend
 * ("in-process LRU", CACHE_URL), shared by all worker loops of a process.
 *
 * What it holds: finished JSON representations (body, ETag version, list total) keyed by a
 * canonical string ("/api/v1/charge/42", or a list's path and query). A hit is answered on the
 * event loop from memory: no thread-pool hop, no SQLite, no JSON building.
 *
 * Why it stays correct: the database is the truth and this process its only writer (see
 * README). Every write invalidates after its commit and before its response (lm_cache_invalidate
 * removes the item's key and bumps the epoch). A read that misses takes the epoch before it
 * starts (lm_cache_epoch) and stores its result only if no invalidation happened meanwhile, so a
 * row read before a commit can never be stored after that commit's invalidation. Entries put
 * with LM_CACHE_ANY_WRITE (lists: any write may change them) are valid only for the epoch
 * they were read in. When writes it cannot attribute to keys happened (another process
 * wrote the same database: sharedgen.h), lm_cache_invalidate_all voids every entry read
 * before it in O(1).
 *
 * Bounds: max_bytes over all entries (keys, bodies and bookkeeping), split over shards, each
 * an LRU list under its own mutex, so loops rarely wait for each other.
 *
 * Ownership: the cache owns its entries. lm_cache_get returns a reference to an immutable
 * value; the caller sends from it and releases it (lm_cache_release), even if the entry was
 * evicted or invalidated meanwhile. lm_cache_put copies what it is given.
 *
 * Threading: every function may be called from any thread, except lm_cache_new/free (main,
 * before the workers start / after they stopped). */
#ifndef LM_CACHE_H
#define LM_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct lm_cache lm_cache;

/* An immutable cached representation. */
typedef struct lm_cache_val {
    long long version; /* ETag version, 0 for none */
    long long total;   /* lists: X-Total-Count, else -1 */
    size_t len;        /* body bytes (not counting the NUL after them) */
    const char *body;
} lm_cache_val;

/* Flags for lm_cache_put. */
#define LM_CACHE_ANY_WRITE 1u /* any invalidation drops this entry (lists) */

typedef struct lm_cache_stats {
    unsigned long long hits, misses, puts, stale_puts, evictions, invalidations, flushes;
    unsigned long long entries, bytes, max_bytes;
} lm_cache_stats;

/* A cache of at most max_bytes (> 0). */
lm_cache *lm_cache_new(size_t max_bytes);
void lm_cache_free(lm_cache *c);

/* The current epoch: take it before the read whose result may be put. */
uint64_t lm_cache_epoch(lm_cache *c);
/* A reference to key's value, or NULL (counted as a miss). */
const lm_cache_val *lm_cache_get(lm_cache *c, const char *key, size_t klen);
void lm_cache_release(const lm_cache_val *v);
/* Stores a copy of body under key, replacing an older one, unless an invalidation happened
 * since epoch or the entry alone exceeds its shard's share. True when stored. */
bool lm_cache_put(lm_cache *c, const char *key, size_t klen, const char *body, size_t len,
                  long long version, long long total, unsigned flags, uint64_t epoch);
/* After a committed write: drops key (may be NULL) and every LM_CACHE_ANY_WRITE entry. */
void lm_cache_invalidate(lm_cache *c, const char *key, size_t klen);
/* After writes of unknown keys: voids every entry read before now. */
void lm_cache_invalidate_all(lm_cache *c);
void lm_cache_get_stats(lm_cache *c, lm_cache_stats *out);

#endif
