/* hash.h — the one non-cryptographic hash (lm_hash): 64-bit FNV-1a, for hash tables and
 * caches keyed by strings (the response cache, the token caches) and for fingerprints
 * (Idempotency-Key requests). Not for anything an attacker may choose to collide on
 * purpose where a collision would be more than a miss.
 *
 * Threading: pure functions, any thread. */
#ifndef LM_HASH_H
#define LM_HASH_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define LM_HASH_INIT 0xcbf29ce484222325ULL /* FNV-1a offset basis */

/* Continues hash h over n bytes of data (start with LM_HASH_INIT). */
static inline uint64_t lm_hash_add(uint64_t h, const void *data, size_t n)
{
    const unsigned char *p = data;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 0x100000001b3ULL; /* FNV prime */
    }
    return h;
}

static inline uint64_t lm_hash(const void *data, size_t n)
{
    return lm_hash_add(LM_HASH_INIT, data, n);
}

static inline uint64_t lm_hash_str(const char *s)
{
    return lm_hash(s, strlen(s));
}

#endif
