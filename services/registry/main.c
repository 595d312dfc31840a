/* main.c — lotmesh-registry: the service registry (DESIGN 1), speaking the part of Consul's
 * HTTP API that registration and discovery need, so our processes and Consul clients (such
 * as python-consul) use it as they would a Consul agent.
 *
 * Configuration (besides the common variables of app.h):
 *   REGISTRY_SNAPSHOT  snapshot file, written atomically on change and loaded on start;
 *                      default $LOTMESH_DATA_DIR/registry.json; "off" keeps state in memory
 *                      only.
 * WORKERS is fixed at 1: the catalog is owned by one event loop (see registry_server.h).
 *
 * The registry does not register itself: it is the root of discovery, found through
 * SERVICE_REGISTRY_URL, and an entry for it in its own catalog would name an address every
 * client already has (and would have to be special-cased, having no one to heartbeat it). */
#include "app.h"
#include "config.h"
#include "registry_server.h"
#include "token.h"
#include "tracer.h"

#include <stdio.h>
#include <string.h>

int main(void)
{
    lm_cfg cfg;
    lm_cfg_init(&cfg, "lotmesh-registry");
    lm_app *app = lm_app_new(&cfg, "registry", 8500);
    const char *snap = lm_cfg_str(&cfg, "REGISTRY_SNAPSHOT", NULL);
    /* spans go to the gateway's trace store with a service token, as every process's do */
    static lm_token_key trace_key;
    if (lm_tracer_exporting() && lm_cfg_ok(&cfg) &&
        lm_token_key_from_env(&trace_key, &cfg, false) == 0)
        lm_app_trace_auth(app, &trace_key);
    lm_cfg_exit_on_error(&cfg);
    char path[4096];
    if (!snap) {
        snprintf(path, sizeof path, "%s/registry.json", lm_cfg_data_dir());
        snap = path;
    } else if (strcmp(snap, "off") == 0) {
        snap = NULL;
    }
    rg_server *srv = rg_server_new(app, snap);
    rg_api_routes(srv, lm_app_router(app));
    rg_ui_routes(lm_app_router(app));
    int rc = lm_app_run(app);
    rg_server_free(srv);
    lm_app_free(app);
    lm_token_key_free(&trace_key);
    return rc;
}
