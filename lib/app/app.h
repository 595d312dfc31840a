/* app.h — a lotmesh process (lm_app): common configuration, the HTTP server with /health,
 * /ready and /metrics, signals, graceful shutdown.
 *
 * Every service's main() is: lm_app_new, add routes and hooks, lm_app_run. The control loop
 * (lm_app_loop) runs on the main thread for process-wide background work (registration,
 * watches, relays); request handling runs on the server's worker loops.
 *
 * Common environment (validated; see README): PORT, BIND_ADDRESS, WORKERS, LOG_LEVEL,
 * ACCESS_LOG, MAX_BODY_BYTES, MAX_HEADER_BYTES, MAX_URI_BYTES, MAX_HEADERS, MAX_CONNECTIONS,
 * MAX_CONNECTIONS_PER_ADDRESS,
 * HEADER_TIMEOUT, BODY_TIMEOUT, IDLE_TIMEOUT, WRITE_TIMEOUT, SHUTDOWN_TIMEOUT, MODULE_NAME,
 * CLIENT_DNS_TTL_MS (milliseconds, or a duration such as 30s, up to 1 h; 0 disables the
 * HTTP clients' host-name cache; default 30000: sets lm_client's process default).
 *
 * Threading: everything here from the main thread, before lm_app_run, except where noted. */
#ifndef LM_APP_H
#define LM_APP_H

#include <stdbool.h>

#include "buf.h"
#include "component.h"
#include "config.h"
#include "router.h"
#include "server.h"

typedef struct lm_app lm_app;

/* Reads the common configuration into the app; errors are recorded in cfg (the caller runs
 * lm_cfg_exit_on_error after reading its own variables). name: default MODULE_NAME. */
lm_app *lm_app_new(lm_cfg *cfg, const char *name, int default_port);
void lm_app_free(lm_app *app);

const char *lm_app_name(const lm_app *app);
lm_router *lm_app_router(lm_app *app);
uv_loop_t *lm_app_loop(lm_app *app);
lm_server_config *lm_app_server_config(lm_app *app);
/* Valid after lm_app_run has started the server (e.g. in a start hook). */
int lm_app_port(const lm_app *app);

/* A guard runs before the handler of every route whose template starts with prefix; it
 * returns true to continue or sends a response itself and returns false. One per app. */
typedef bool (*lm_app_guard_fn)(lm_req *req, void *ctx);
void lm_app_set_guard(lm_app *app, const char *prefix, lm_app_guard_fn fn, void *ctx);
/* Serves doc (static, JSON text of len bytes) at GET /openapi.json. */
void lm_app_add_openapi(lm_app *app, const char *doc, size_t len);
/* Installs a component (copied): its worker hooks, control-loop hooks, ready check and
 * metrics join the process's (see component.h). Services install their own per-worker state
 * the same way. At most 32. */
void lm_app_add(lm_app *app, const lm_component *c);
/* What components may know of this process (name, bind address, workers, control loop). */
const lm_component_env *lm_app_env(lm_app *app);

/* Span export to the gateway's trace store (POST /v1/traces) needs a service token: with a
 * key that can sign, every export carries one minted here (iss this process, aud "gateway",
 * scope write). The key is borrowed and must live until lm_app_run returns. NULL: none. */
struct lm_token_key;
void lm_app_trace_auth(lm_app *app, const struct lm_token_key *key);

/* Starts everything and runs until SIGINT/SIGTERM, then shuts down gracefully.
 * Returns the process exit code (0 after a clean stop, 1 when start-up failed). */
int lm_app_run(lm_app *app);
/* Asks a running app to stop as if it got SIGTERM (any thread). */
void lm_app_stop(lm_app *app);

#endif
