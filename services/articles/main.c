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
    lm_app_use_registry(app, &cfg);
    lm_app_use_guard(app, &cfg);
    lm_cfg_exit_on_error(&cfg);
    lm_app_add_openapi(app, articles_openapi, articles_openapi_len);
    artikel_routes(lm_app_router(app), &svc);
    einheit_routes(lm_app_router(app), &svc);
    int rc = lm_app_run(app);
    lm_app_free(app);
    return rc;
}
