/* main.c — lotmesh-charges: configuration, database, the articles client, routes, run. */
#include "app_use.h"
#include "charges.h"
#include "config.h"
#include "log.h"
#include "server.h"

#include <stdlib.h>
#include <string.h>

extern const char charges_openapi[];
extern const unsigned long charges_openapi_len;

static void charges_policy_metrics(lm_buf *out, void *ctx)
{
    charges_svc *svc = ctx;
    lm_policy_metrics(&svc->policy, 1, out, lm_policy_now_ms());
}

int main(void)
{
    lm_cfg cfg;
    lm_cfg_init(&cfg, "lotmesh-charges");
    lm_app *app = lm_app_new(&cfg, "charges_api", 8001);
    charges_svc svc = {0};
    const char *url = lm_cfg_str(&cfg, "ARTICLES_URL", NULL);
    svc.articles_fixed = url != NULL;
    if (!url) url = "http://127.0.0.1:8002"; /* standalone, no registry */
    char err[256];
    if (lm_url_parse(url, &svc.articles, err, sizeof err) != 0)
        lm_cfg_error(&cfg, "ARTICLES_URL", "must be an http:// URL: %s", err);
    else if (strchr(svc.articles.path, '?'))
        lm_cfg_error(&cfg, "ARTICLES_URL", "must not have a query (got \"%.200s\")", url);
    /* the path is a prefix for /api/v1/...: "http://h:8002/" must not ask for //api/v1/...,
     * which articles answers 404, read here as "no such article" */
    for (size_t n = strlen(svc.articles.path); n > 0 && svc.articles.path[n - 1] == '/'; n--)
        svc.articles.path[n - 1] = '\0';
    charges_refcheck_init(&svc, &cfg);
    svc.store = lm_app_use_store(app, &cfg, "charges", &charges_migrations);
    svc.reg = lm_app_use_registry(app, &cfg);
    svc.guard = lm_app_use_guard(app, &cfg);
    /* produces charge.*; keeps the article and unit replica from artikel.* and einheit.* */
    static const char *const patterns[] = {"artikel.*", "einheit.*"};
    lm_app_use_events(app, &cfg, svc.store, svc.reg, svc.guard,
                      &(lm_app_events_opts){
                          .produce = true,
                          .consume_from = "articles_api",
                          .patterns = patterns,
                          .n_patterns = 2,
                          .apply = charges_apply_article_event,
                          .producer_url = svc.articles_fixed ? url : NULL,
                          .producer_url_env = "ARTICLES_URL",
                      });
    lm_cfg_exit_on_error(&cfg);
    if (!svc.articles_fixed) lm_disc_watch(svc.reg, "articles_api");

    lm_client_config cc;
    lm_client_config_default(&cc);
    cc.connect_timeout_ms = lm_policy_get_config(svc.policy)->connect_timeout_ms;
    cc.response_timeout_ms = lm_policy_get_config(svc.policy)->timeout_ms;
    svc.articles_clients = lm_app_use_clients(app, &cc);
    svc.n_workers = lm_app_env(app)->workers;
    svc.memos = charges_memos_new(svc.n_workers);
    lm_app_add(app, &(lm_component){.ctx = &svc, .metrics = charges_policy_metrics});
    lm_app_add_openapi(app, charges_openapi, charges_openapi_len);
    charge_routes(lm_app_router(app), &svc);
    int rc = lm_app_run(app);
    lm_app_free(app);
    charges_refcheck_free(&svc);
    charges_memos_free(svc.memos);
    return rc;
}
