/* app_use.c — opening and installing the common modules. See app_use.h.
 *
 * lm_app_use_store is in app_use_store.c: a process that never opens a database (the
 * gateway, the registry) then links no database client library (libpq and its own
 * dependencies), which keeps its image small. */
#include "app_use.h"

lm_disc *lm_app_use_registry(lm_app *app, lm_cfg *cfg)
{
    lm_disc *d = lm_disc_open(cfg, lm_app_env(app));
    lm_registration *r = lm_registration_open(cfg, lm_app_env(app), d);
    lm_app_add(app, lm_registration_component(r)); /* deregisters first when stopping */
    lm_app_add(app, lm_disc_component(d));
    return d;
}

lm_guard *lm_app_use_guard(lm_app *app, lm_cfg *cfg)
{
    lm_guard *g = lm_guard_open(cfg, lm_app_env(app));
    if (!g) return NULL;
    lm_app_set_guard(app, "/api/", lm_guard_check, g);
    lm_app_add(app, lm_guard_component(g));
    lm_app_trace_auth(app, lm_guard_signing_key(g));
    return g;
}

lm_workerclient *lm_app_use_clients(lm_app *app, const lm_client_config *cc)
{
    lm_workerclient *wc = lm_workerclient_new(lm_app_env(app), cc);
    lm_app_add(app, lm_workerclient_component(wc));
    return wc;
}
