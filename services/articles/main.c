/* main.c — lotmesh-articles: configuration, database, routes, run. */
#include "app_use.h"
#include "articles.h"
#include "config.h"

extern const char articles_openapi[];
extern const unsigned long articles_openapi_len;

int main(void)
{
    lm_cfg cfg;
    lm_cfg_init(&cfg, "lotmesh-articles");
    lm_app *app = lm_app_new(&cfg, "articles_api", 8002);
    articles_svc svc = {0};
    svc.store = lm_app_use_store(app, &cfg, "articles", &articles_migrations);
    lm_disc *disc = lm_app_use_registry(app, &cfg);
    lm_guard *guard = lm_app_use_guard(app, &cfg);
    /* produces artikel.* and einheit.*; keeps the live batches per article from charge.* */
    static const char *const patterns[] = {"charge.*"};
    const char *charges_url = lm_cfg_str(&cfg, "CHARGES_URL", NULL);
    lm_app_use_events(app, &cfg, svc.store, disc, guard,
                      &(lm_app_events_opts){
                          .produce = true,
                          .consume_from = "charges_api",
                          .patterns = patterns,
                          .n_patterns = 1,
                          .apply = artikel_apply_charge_event,
                          .producer_url = charges_url,
                          .producer_url_env = "CHARGES_URL",
                      });
    lm_cfg_exit_on_error(&cfg);
    lm_app_add_openapi(app, articles_openapi, articles_openapi_len);
    artikel_routes(lm_app_router(app), &svc);
    einheit_routes(lm_app_router(app), &svc);
    int rc = lm_app_run(app);
    lm_app_free(app);
    return rc;
}
