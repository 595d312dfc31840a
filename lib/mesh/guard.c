/* guard.c — service-token guard for /api/ routes. See guard.h.
 *
 * The gateway reuses one service token per (service, client, scope) for minutes, so a
 * per-thread cache of verified tokens (lm_tokcache: keyed by hash, confirmed by full
 * comparison, bounded by the token's exp) turns most checks into a hash and a compare. */
#include "guard.h"

#include "log.h"
#include "problem.h"
#include "tokcache.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define OUTBOUND_TTL_S 300

struct lm_guard {
    lm_component comp;
    bool enabled;
    char audience[64];
    char issuers[256]; /* ",gateway,articles_api," — commas around each for lookup */
    lm_token_key key;
};

static _Thread_local lm_tokcache verified = LM_TOKCACHE_INIT(64);
static _Thread_local lm_tokcache outbound = LM_TOKCACHE_INIT(8);

static bool deny(lm_req *req, int status, const char *www, const char *detail)
{
    lm_resp_header(req, "WWW-Authenticate", www);
    lm_problem p = {.status = status, .type = "urn:lotmesh:problem:auth", .detail = detail};
    lm_resp_problem_full(req, &p);
    return false;
}

bool lm_guard_check(lm_req *req, void *ctx)
{
    lm_guard *g = ctx;
    if (!g->enabled) return true;
    const char *authz = lm_req_header(req, "authorization");
    if (!authz || strncasecmp(authz, "Bearer ", 7) != 0)
        return deny(req, 401, "Bearer realm=\"lotmesh-service\"",
                    "a service token is required (requests come through the gateway)");
    const char *tok = authz + 7;
    lm_token_claims claims;
    if (!lm_tokcache_find(&verified, tok, (long long)time(NULL), &claims)) {
        lm_token_result r = lm_token_verify(&g->key, tok, NULL, g->audience, &claims);
        char needle[80];
        snprintf(needle, sizeof needle, ",%s,", claims.iss);
        if (r == LM_TOKEN_OK && (!claims.iss[0] || !strstr(g->issuers, needle)))
            r = LM_TOKEN_WRONG_ISSUER;
        if (r == LM_TOKEN_WRONG_AUDIENCE)
            return deny(req, 403, "Bearer realm=\"lotmesh-service\", error=\"invalid_token\"",
                        lm_token_result_str(r));
        if (r != LM_TOKEN_OK)
            return deny(req, 401, "Bearer realm=\"lotmesh-service\", error=\"invalid_token\"",
                        lm_token_result_str(r));
        lm_tokcache_store(&verified, tok, &claims);
    }
    if (!lm_token_scope_allows(claims.scope, req->method_id))
        return deny(req, 403, "Bearer realm=\"lotmesh-service\", error=\"insufficient_scope\"",
                    "the token's scope does not allow this method");
    snprintf(req->caller, sizeof req->caller, "%s", claims.sub);
    snprintf(req->caller_scope, sizeof req->caller_scope, "%s", claims.scope);
    return true;
}

static void release_caches(lm_worker *w, void *ctx)
{
    (void)w;
    (void)ctx;
    lm_tokcache_free(&verified);
    lm_tokcache_free(&outbound);
}

const char *lm_guard_outbound_token(lm_guard *g, const char *aud, const char *sub,
                                    const char *scope)
{
    if (!g || !g->enabled) return NULL;
    /* issued in this process's own name */
    return lm_tokcache_mint(&outbound, &g->key, g->audience, aud, sub, scope, OUTBOUND_TTL_S,
                            (long long)time(NULL));
}

static void on_stopped(void *ctx)
{
    lm_guard *g = ctx;
    lm_token_key_free(&g->key);
    free(g);
}

lm_guard *lm_guard_open(lm_cfg *cfg, const lm_component_env *env)
{
    static const char *const modes[] = {"enabled", "disabled", NULL};
    lm_guard *g = lm_xcalloc(1, sizeof *g);
    g->enabled = lm_cfg_enum(cfg, "SERVICE_AUTH", "enabled", modes) == 0;
    snprintf(g->audience, sizeof g->audience, "%s", env->name);
    snprintf(g->issuers, sizeof g->issuers, ",%s,",
             lm_cfg_str(cfg, "SERVICE_TOKEN_ISSUERS", "gateway,articles_api,charges_api"));
    bool can_sign = lm_cfg_str(cfg, "SERVICE_TOKEN_PRIVATE_KEY_FILE", NULL) != NULL;
    if (g->enabled && lm_token_key_from_env(&g->key, cfg, can_sign) != 0) {
        free(g);
        return NULL;
    }
    if (!g->enabled)
        lm_log_warn("SERVICE_AUTH=disabled: /api/ requests are accepted without a service token");
    g->comp = (lm_component){.ctx = g, .worker_stop = release_caches, .stopped = on_stopped};
    return g;
}

const lm_component *lm_guard_component(lm_guard *g)
{
    return &g->comp;
}

const lm_token_key *lm_guard_signing_key(const lm_guard *a)
{
    return a && a->enabled && a->key.sign_key ? &a->key : NULL;
}
