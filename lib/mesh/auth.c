/* auth.c — service-token guard for /api/ routes. See auth.h.
 *
 * The gateway reuses one service token per (service, client, scope) for minutes, so a
 * per-thread cache of verified tokens (keyed by hash, confirmed by full comparison, bounded
 * by the token's exp) turns most checks into a hash and a compare. */
#include "auth.h"

#include "log.h"
#include "problem.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define CACHE_SLOTS 64

struct lm_auth {
    lm_component comp;
    bool enabled;
    char audience[64];
    char issuers[256]; /* ",gateway,articles_api," — commas around each for lookup */
    lm_token_key key;
};

static _Thread_local struct {
    char key[256];
    char *token;
    long long exp;
} outbound[8];

typedef struct cached {
    uint64_t hash;
    char *token;
    lm_token_claims claims;
} cached;

static _Thread_local cached cache[CACHE_SLOTS];

static uint64_t hash64(const char *s)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 0x100000001b3ULL;
    }
    return h;
}

static bool deny(lm_req *req, int status, const char *www, const char *detail)
{
    lm_resp_header(req, "WWW-Authenticate", www);
    lm_problem p = {.status = status, .type = "urn:lotmesh:problem:auth", .detail = detail};
    lm_resp_problem_full(req, &p);
    return false;
}

bool lm_auth_guard(lm_req *req, void *ctx)
{
    lm_auth *a = ctx;
    if (!a->enabled) return true;
    const char *authz = lm_req_header(req, "authorization");
    if (!authz || strncasecmp(authz, "Bearer ", 7) != 0)
        return deny(req, 401, "Bearer realm=\"lotmesh-service\"",
                    "a service token is required (requests come through the gateway)");
    const char *tok = authz + 7;
    uint64_t h = hash64(tok);
    cached *slot = &cache[h % CACHE_SLOTS];
    lm_token_claims claims;
    long long now = (long long)time(NULL);
    if (slot->token && slot->hash == h && strcmp(slot->token, tok) == 0 && slot->claims.exp > now) {
        claims = slot->claims;
    } else {
        lm_token_result r = lm_token_verify(&a->key, tok, NULL, a->audience, &claims);
        char needle[80];
        snprintf(needle, sizeof needle, ",%s,", claims.iss);
        if (r == LM_TOKEN_OK && (!claims.iss[0] || !strstr(a->issuers, needle)))
            r = LM_TOKEN_WRONG_ISSUER;
        if (r == LM_TOKEN_WRONG_AUDIENCE)
            return deny(req, 403, "Bearer realm=\"lotmesh-service\", error=\"invalid_token\"",
                        lm_token_result_str(r));
        if (r != LM_TOKEN_OK)
            return deny(req, 401, "Bearer realm=\"lotmesh-service\", error=\"invalid_token\"",
                        lm_token_result_str(r));
        free(slot->token);
        slot->token = lm_xstrdup(tok);
        slot->hash = h;
        slot->claims = claims;
    }
    if (!lm_token_scope_allows(claims.scope, req->method_id))
        return deny(req, 403, "Bearer realm=\"lotmesh-service\", error=\"insufficient_scope\"",
                    "the token's scope does not allow this method");
    snprintf(req->caller, sizeof req->caller, "%s", claims.sub);
    snprintf(req->caller_scope, sizeof req->caller_scope, "%s", claims.scope);
    return true;
}

static void release_cache(lm_worker *w, void *ctx)
{
    (void)w;
    (void)ctx;
    for (size_t i = 0; i < CACHE_SLOTS; i++) {
        free(cache[i].token);
        cache[i].token = NULL;
    }
    for (size_t i = 0; i < 8; i++) {
        free(outbound[i].token);
        outbound[i].token = NULL;
    }
}

const char *lm_auth_outbound_token(lm_auth *a, const char *aud, const char *sub, const char *scope)
{
    if (!a || !a->enabled || !a->key.sign_key) return NULL;
    char key[256];
    snprintf(key, sizeof key, "%s|%s|%s", aud, sub, scope);
    long long now = (long long)time(NULL);
    size_t slot = hash64(key) % 8;
    if (outbound[slot].token && !strcmp(outbound[slot].key, key) && outbound[slot].exp - 60 > now)
        return outbound[slot].token;
    lm_token_claims c = {0};
    snprintf(c.iss, sizeof c.iss, "%s", a->audience); /* this process's own name */
    snprintf(c.aud, sizeof c.aud, "%s", aud);
    snprintf(c.sub, sizeof c.sub, "%s", sub);
    snprintf(c.scope, sizeof c.scope, "%s", scope);
    c.iat = now;
    c.exp = now + 300;
    char *t = lm_token_mint(&a->key, &c);
    if (!t) return NULL;
    free(outbound[slot].token);
    outbound[slot].token = t;
    outbound[slot].exp = c.exp;
    snprintf(outbound[slot].key, sizeof outbound[slot].key, "%s", key);
    return t;
}

static void on_stopped(void *ctx)
{
    lm_auth *a = ctx;
    lm_token_key_free(&a->key);
    free(a);
}

lm_auth *lm_auth_open(lm_cfg *cfg, const lm_component_env *env)
{
    static const char *const modes[] = {"enabled", "disabled", NULL};
    lm_auth *a = lm_xcalloc(1, sizeof *a);
    a->enabled = lm_cfg_enum(cfg, "SERVICE_AUTH", "enabled", modes) == 0;
    snprintf(a->audience, sizeof a->audience, "%s", env->name);
    snprintf(a->issuers, sizeof a->issuers, ",%s,",
             lm_cfg_str(cfg, "SERVICE_TOKEN_ISSUERS", "gateway,articles_api,charges_api"));
    bool can_sign = lm_cfg_str(cfg, "SERVICE_TOKEN_PRIVATE_KEY_FILE", NULL) != NULL;
    if (a->enabled && lm_token_key_from_env(&a->key, cfg, can_sign) != 0) {
        free(a);
        return NULL;
    }
    if (!a->enabled)
        lm_log_warn("SERVICE_AUTH=disabled: /api/ requests are accepted without a service token");
    a->comp = (lm_component){.ctx = a, .worker_stop = release_cache, .stopped = on_stopped};
    return a;
}

const lm_component *lm_auth_component(lm_auth *a)
{
    return &a->comp;
}
