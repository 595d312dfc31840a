/* tokcache.h — the one cache of service tokens (lm_tokcache), for both sides of DESIGN 3.5:
 * tokens already verified (the services' guard, the gateway's access tokens), so that most
 * checks cost a hash and a compare instead of a signature; and tokens minted for calling a
 * service (the gateway, a service calling another), re-minted a minute before they expire.
 *
 * A cache is a fixed number of slots addressed by the FNV-1a hash (hash.h) of the token or
 * of "aud|sub|scope"; a slot holds one entry, a newer one replaces it. A hit is confirmed by
 * comparing the whole token or key, and a verified token counts only until its exp.
 *
 * Ownership: the cache owns its slots and their tokens (lm_tokcache_free). A token returned
 * by lm_tokcache_mint is the cache's, valid until the next call on the same cache.
 * Threading: none inside; one cache per thread (_Thread_local, or one per worker used only by
 * that worker). */
#ifndef LM_TOKCACHE_H
#define LM_TOKCACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "token.h"

#define LM_TOKCACHE_KEY_MAX 400 /* "aud|sub|scope" */

typedef struct lm_tokcache_entry {
    uint64_t hash;
    char *token;                   /* owned; NULL: empty slot */
    char key[LM_TOKCACHE_KEY_MAX]; /* minted tokens: "aud|sub|scope" */
    lm_token_claims claims;        /* verified: the token's; minted: what it was minted with */
} lm_tokcache_entry;

typedef struct lm_tokcache {
    size_t n;                 /* slots, fixed */
    lm_tokcache_entry *slots; /* allocated by the first store */
} lm_tokcache;

/* An empty cache of n slots (a constant expression: fit for _Thread_local). */
#define LM_TOKCACHE_INIT(n_slots)                                                                  \
    {                                                                                              \
        .n = (n_slots), .slots = NULL                                                              \
    }

/* Frees every token and the slots; the cache is empty and usable again afterwards. */
void lm_tokcache_free(lm_tokcache *c);

/* Verified tokens: true and the claims when token is cached and its exp is after now. */
bool lm_tokcache_find(const lm_tokcache *c, const char *token, long long now, lm_token_claims *out);
/* Remembers a token that verified, with its claims (copies both). */
void lm_tokcache_store(lm_tokcache *c, const char *token, const lm_token_claims *claims);

/* Minted tokens: a token for (aud, sub, scope) issued by iss, signed with k and valid for
 * ttl_s from now; the cached one while it has more than a minute left. NULL when the key
 * cannot sign, minting fails or "aud|sub|scope" is longer than LM_TOKCACHE_KEY_MAX - 1. */
const char *lm_tokcache_mint(lm_tokcache *c, const lm_token_key *k, const char *iss,
                             const char *aud, const char *sub, const char *scope, long long ttl_s,
                             long long now);

#endif
