/* registry — the service registry process (DESIGN 1). For now it runs the shared runtime
 * only (/health, /ready, /metrics); the Consul HTTP API subset arrives with the registry
 * issue. */
#include "app.h"
#include "config.h"

int main(void)
{
    lm_cfg cfg;
    lm_cfg_init(&cfg, "lotmesh-registry");
    lm_app *app = lm_app_new(&cfg, "registry", 8500);
    lm_cfg_exit_on_error(&cfg);
    int rc = lm_app_run(app);
    lm_app_free(app);
    return rc;
}
