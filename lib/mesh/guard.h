/* guard.h — the service side of DESIGN 3.5 (lm_guard), the services' token guard: every service
 * refuses /api/ requests without a valid service token for its own audience, so a service port
 * reached directly lets nobody in. 401 for a missing, malformed, badly signed or expired token; 403
 * for a valid token for another service or one whose scope does not allow the method (reads need
 * "read" or "write", changes need "write"). /health, /ready, /metrics and /openapi.json
 * stay open.
 *
 * Tokens are accepted from the issuers in SERVICE_TOKEN_ISSUERS (default
 * "gateway,articles_api,charges_api": the gateway and the services calling each other).
 *
 * Configuration: the SERVICE_TOKEN_* variables of token.h, and SERVICE_AUTH=disabled to
 * switch the check off explicitly (development and tests of a single service); there is no
 * silent default that lets requests through.
 *
 * Threading: lm_guard_open before the process runs; lm_guard_check runs on worker threads and
 * only reads the key. */
#ifndef LM_GUARD_H
#define LM_GUARD_H

#include "component.h"
#include "config.h"
#include "http.h"
#include "token.h"

typedef struct lm_guard lm_guard;

/* Reads the configuration (errors into cfg; NULL then). The audience is env->name. */
lm_guard *lm_guard_open(lm_cfg *cfg, const lm_component_env *env);
/* Its lifecycle: per-thread token caches released on each worker, the guard freed at the end. */
const lm_component *lm_guard_component(lm_guard *a);
/* The service-token key when this process can sign with it (checks enabled, HS256 secret or
 * a private key), else NULL; owned by a, valid until its component's stopped hook. */
const lm_token_key *lm_guard_signing_key(const lm_guard *a);
/* The guard (ctx: the lm_guard) for every route under /api/: returns false after answering
 * 401/403 itself. A guarded request's verified caller is in req->caller and
 * req->caller_scope. */
bool lm_guard_check(lm_req *req, void *ctx);

/* A token for calling another service (aud) from this one, on behalf of sub (may be ""),
 * with scope "read" or "read write"; minted with this process's name as issuer, cached per
 * thread (lm_tokcache) and re-minted before expiry. Valid until the next call on this thread; NULL
 * when auth is disabled or this process cannot sign (RS256/ES256 without a private key). */
const char *lm_guard_outbound_token(lm_guard *a, const char *aud, const char *sub,
                                    const char *scope);

#endif
