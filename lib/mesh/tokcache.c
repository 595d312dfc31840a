/* tokcache.c — verified and minted service tokens, cached per thread. See tokcache.h. */
#include "tokcache.h"

#include "buf.h"
#include "hash.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define REMINT_BEFORE_S 60 /* a minted token is replaced when it has less than this left */

void lm_tokcache_free(lm_tokcache *c)
{
    if (!c->slots) return;
    for (size_t i = 0; i < c->n; i++)
        free(c->slots[i].token);
    free(c->slots);
    c->slots = NULL;
}

static lm_tokcache_entry *slot_for(lm_tokcache *c, uint64_t h)
{
    if (!c->slots) c->slots = lm_xcalloc(c->n, sizeof *c->slots);
    return &c->slots[h % c->n];
}

bool lm_tokcache_find(const lm_tokcache *c, const char *token, long long now, lm_token_claims *out)
{
    if (!c->slots) return false;
    uint64_t h = lm_hash_str(token);
    const lm_tokcache_entry *e = &c->slots[h % c->n];
    if (!e->token || e->hash != h || strcmp(e->token, token) != 0 || e->claims.exp <= now)
        return false;
    *out = e->claims;
    return true;
}

void lm_tokcache_store(lm_tokcache *c, const char *token, const lm_token_claims *claims)
{
    uint64_t h = lm_hash_str(token);
    lm_tokcache_entry *e = slot_for(c, h);
    free(e->token);
    e->token = lm_xstrdup(token);
    e->hash = h;
    e->key[0] = '\0';
    e->claims = *claims;
}

const char *lm_tokcache_mint(lm_tokcache *c, const lm_token_key *k, const char *iss,
                             const char *aud, const char *sub, const char *scope, long long ttl_s,
                             long long now)
{
    if (!k->sign_key) return NULL;
    char key[LM_TOKCACHE_KEY_MAX];
    int n = snprintf(key, sizeof key, "%s|%s|%s", aud, sub, scope);
    if (n < 0 || (size_t)n >= sizeof key) return NULL;
    uint64_t h = lm_hash(key, (size_t)n);
    lm_tokcache_entry *e = slot_for(c, h);
    if (e->token && e->hash == h && strcmp(e->key, key) == 0 &&
        e->claims.exp - REMINT_BEFORE_S > now)
        return e->token;
    lm_token_claims claims = {0};
    snprintf(claims.iss, sizeof claims.iss, "%s", iss);
    snprintf(claims.aud, sizeof claims.aud, "%s", aud);
    snprintf(claims.sub, sizeof claims.sub, "%s", sub);
    snprintf(claims.scope, sizeof claims.scope, "%s", scope);
    claims.iat = now;
    claims.exp = now + ttl_s;
    char *tok = lm_token_mint(k, &claims);
    if (!tok) return NULL;
    free(e->token);
    e->token = tok;
    e->hash = h;
    memcpy(e->key, key, (size_t)n + 1);
    e->claims = claims;
    return tok;
}
