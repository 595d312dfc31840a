/* auth.h — the service side of DESIGN 3.5 (lm_auth): every service refuses /api/ requests
 * without a valid service token for its own audience, so a service port reached directly
 * lets nobody in. 401 for a missing, malformed, badly signed or expired token; 403 for a
 * valid token for another service or one whose scope does not allow the method (reads need
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
 * Threading: lm_auth_install before lm_app_run; the check runs on worker threads and only
 * reads the key. */
#ifndef LM_AUTH_H
#define LM_AUTH_H

#include "app.h"
#include "token.h"

typedef struct lm_auth lm_auth;

/* Reads the configuration (errors into cfg) and guards every route under /api/. */
lm_auth *lm_auth_install(lm_app *app, lm_cfg *cfg);
/* A guarded request's verified caller is in req->caller and req->caller_scope. */

/* A token for calling another service (aud) from this one, on behalf of sub (may be ""),
 * with scope "read" or "read write"; minted with this process's name as issuer, cached per
 * thread and re-minted before expiry. Valid until the next call on this thread; NULL when
 * auth is disabled or this process cannot sign (RS256/ES256 without a private key). */
const char *lm_auth_outbound_token(lm_auth *a, const char *aud, const char *sub, const char *scope);

#endif
