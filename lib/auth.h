/* auth.h — the service side of DESIGN 3.5 (lm_auth): every service refuses /api/ requests
 * without a valid service token for its own audience, so a service port reached directly
 * lets nobody in. 401 for a missing, malformed, badly signed or expired token; 403 for a
 * valid token for another service or one whose scope does not allow the method (reads need
 * "read" or "write", changes need "write"). /health, /ready, /metrics and /openapi.json
 * stay open.
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

#endif
