/* main.c — lotmesh-gateway: configuration, keys, clients, per-worker pools, routes, run. */
#include "gateway.h"

#include "config.h"
#include "log.h"
#include "app_use.h"
#include "redis.h"
#include "server.h"
#include "tracestore.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void worker_start(lm_worker *w, void *ctx)
{
    gateway *gw = ctx;
    gw_worker *gwk = &gw->workers[lm_worker_index(w)];
    gwk->gw = gw;
    if (lm_worker_index(w) == 0) gw_admin_clients_watch(gw, lm_worker_loop(w));
    gw_clientauth_worker_init(gwk);
    gwk->breaker_threshold = gw->breaker_threshold;
    gwk->breaker_reset_ms = gw->breaker_reset_ms;
    if (gw->limit_redis) {
        lm_redis_addr a;
        char err[200];
        lm_redis_parse_url(gw->limit_url, &a, err, sizeof err); /* checked at start-up */
        gwk->redis = lm_redis_new(lm_worker_loop(w), &a, gw->limit_timeout_ms, &gw_limit_script, 1,
                                  gw_limit_redis_state, gwk);
    }
}

static void worker_stop(lm_worker *w, void *ctx)
{
    gateway *gw = ctx;
    gw_worker *gwk = &gw->workers[lm_worker_index(w)];
    gw_clientauth_worker_free(gwk);
    if (lm_worker_index(w) == 0) gw_admin_clients_unwatch(gw);
    gw_clients_release(gwk->clients);
    gwk->clients = NULL;
    lm_redis_free(gwk->redis);
    gwk->redis = NULL;
}

/* GATEWAY_RATE_LIMIT(_BURST), RATE_LIMIT_URL, RATE_LIMIT_FAIL, RATE_LIMIT_TIMEOUT */
static void parse_limits(gateway *gw, lm_cfg *cfg)
{
    const char *rate = lm_cfg_str(cfg, "GATEWAY_RATE_LIMIT", NULL);
    if (rate && gw_rate_parse(rate, &gw->default_rate) != 0) {
        lm_cfg_error(cfg, "GATEWAY_RATE_LIMIT",
                     "must be a rate N/s, N/m, N/h or N/d with N from 1 to 100000000 (got "
                     "\"%.64s\")",
                     rate);
        return;
    }
    gw->has_default_rate = rate != NULL;
    long long burst = lm_cfg_int(cfg, "GATEWAY_RATE_LIMIT_BURST", 0, 1, 100000000);
    if (burst && !rate)
        lm_cfg_error(cfg, "GATEWAY_RATE_LIMIT_BURST", "needs GATEWAY_RATE_LIMIT to be set");
    if (burst && rate) gw->default_rate.burst = (uint32_t)burst;
    const char *url = lm_cfg_str(cfg, "RATE_LIMIT_URL", NULL);
    if (url) {
        lm_redis_addr a;
        char err[200];
        if (strlen(url) >= sizeof gw->limit_url || lm_redis_parse_url(url, &a, err, sizeof err))
            lm_cfg_error(cfg, "RATE_LIMIT_URL", "%s",
                         strlen(url) >= sizeof gw->limit_url ? "is too long" : err);
        else {
            gw->limit_redis = true;
            snprintf(gw->limit_url, sizeof gw->limit_url, "%s", url);
        }
    }
    static const char *const fail[] = {"open", "closed", NULL};
    gw->limit_fail_closed = lm_cfg_enum(cfg, "RATE_LIMIT_FAIL", "open", fail) == 1;
    gw->limit_timeout_ms = lm_cfg_duration_ms(cfg, "RATE_LIMIT_TIMEOUT", 250, 1, 60000);
    gw->limiter = gw_limiter_new();

    /* /auth/token: failures per client id and per source address within a window */
    uint64_t window_ms = lm_cfg_duration_ms(cfg, "GATEWAY_AUTH_LOCKOUT", 300000, 1000, 86400000);
    long long per_id = lm_cfg_int(cfg, "GATEWAY_AUTH_MAX_FAILURES", 10, 0, 1000000);
    long long per_addr = lm_cfg_int(cfg, "GATEWAY_AUTH_ADDRESS_MAX_FAILURES", 100, 0, 1000000);
    gw_rate *rates[2] = {&gw->auth_id_rate, &gw->auth_addr_rate};
    long long counts[2] = {per_id, per_addr};
    for (int i = 0; i < 2; i++) {
        if (!counts[i]) continue;
        rates[i]->count = (uint32_t)counts[i];
        rates[i]->burst = (uint32_t)counts[i];
        rates[i]->period_s = (uint32_t)(window_ms / 1000);
        rates[i]->interval_us = (double)window_ms * 1000.0 / (double)counts[i];
    }
    int workers = lm_app_server_config(gw->app)->workers;
    long long conc = lm_cfg_int(cfg, "GATEWAY_AUTH_CONCURRENCY", 2, 1, 1024);
    gw->auth_concurrency = (int)((conc + workers - 1) / workers);
    gw->auth_queue = (int)lm_cfg_int(cfg, "GATEWAY_AUTH_QUEUE", 64, 1, 100000);
}

/* "charges=charges_api,articles=articles_api" */
static void parse_aliases(gateway *gw, lm_cfg *cfg)
{
    const char *spec =
        lm_cfg_str(cfg, "GATEWAY_ALIASES", "charges=charges_api,articles=articles_api");
    char buf[2048];
    snprintf(buf, sizeof buf, "%s", spec);
    char *save = NULL;
    for (char *item = strtok_r(buf, ",", &save); item; item = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(item, '=');
        if (!eq || eq == item || !eq[1] || strlen(item) >= 64 || strlen(eq + 1) >= 64 ||
            gw->n_aliases == sizeof gw->aliases / sizeof gw->aliases[0]) {
            lm_cfg_error(cfg, "GATEWAY_ALIASES",
                         "must be alias=service[,alias=service…] (got \"%.64s\")", item);
            return;
        }
        *eq = '\0';
        snprintf(gw->aliases[gw->n_aliases].from, 64, "%s", item);
        snprintf(gw->aliases[gw->n_aliases].to, 64, "%s", eq + 1);
        gw->n_aliases++;
    }
}

static void parse_services(gateway *gw, lm_cfg *cfg)
{
    const char *spec = lm_cfg_str(cfg, "GATEWAY_SERVICES", "articles_api,charges_api");
    char buf[2048];
    snprintf(buf, sizeof buf, "%s", spec);
    char *save = NULL;
    for (char *item = strtok_r(buf, ",", &save); item; item = strtok_r(NULL, ",", &save)) {
        if (!*item || strlen(item) >= 64 || gw->n_services == GW_MAX_SERVICES) {
            lm_cfg_error(cfg, "GATEWAY_SERVICES", "must be service[,service…] (got \"%.64s\")",
                         item);
            return;
        }
        snprintf(gw->services[gw->n_services++], 64, "%s", item);
    }
}

int main(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    lm_cfg cfg;
    lm_cfg_init(&cfg, "lotmesh-gateway");
    static gateway gw;
    lm_app *app = lm_app_new(&cfg, "gateway", 8000);
    gw.app = app;
    char def_clients[1024], def_dev[1024], def_access[1024], err[512];
    snprintf(def_clients, sizeof def_clients, "%s/gateway-clients.json", lm_cfg_data_dir());
    snprintf(def_dev, sizeof def_dev, "%s/dev-client.json", lm_cfg_data_dir());
    snprintf(def_access, sizeof def_access, "%s/gateway-access.key", lm_cfg_data_dir());
    const char *clients = lm_cfg_str(&cfg, "GATEWAY_CLIENTS_FILE", def_clients);
    const char *access = lm_cfg_str(&cfg, "GATEWAY_ACCESS_KEY_FILE", def_access);
    gw.access_ttl_s = lm_cfg_duration_ms(&cfg, "ACCESS_TOKEN_TTL", 900000, 10000, 86400000) / 1000;
    gw.service_ttl_s = lm_cfg_duration_ms(&cfg, "SERVICE_TOKEN_TTL", 300000, 90000, 3600000) / 1000;
    static const char *const balancers[] = {"least_outstanding", "round_robin", NULL};
    gw.least_outstanding =
        lm_cfg_enum(&cfg, "GATEWAY_BALANCER", "least_outstanding", balancers) == 0;
    gw.connect_timeout_ms = lm_cfg_duration_ms(&cfg, "UPSTREAM_CONNECT_TIMEOUT", 1000, 10, 60000);
    gw.upstream_timeout_ms = lm_cfg_duration_ms(&cfg, "UPSTREAM_TIMEOUT", 30000, 10, 3600000);
    gw.breaker_threshold = (int)lm_cfg_int(&cfg, "UPSTREAM_BREAKER_THRESHOLD", 5, 1, 1000);
    gw.breaker_reset_ms = lm_cfg_duration_ms(&cfg, "UPSTREAM_BREAKER_RESET", 10000, 100, 3600000);
    size_t max_traces = (size_t)lm_cfg_int(&cfg, "GATEWAY_TRACE_STORE_TRACES", 200, 1, 100000);
    size_t max_spans = (size_t)lm_cfg_int(&cfg, "GATEWAY_TRACE_STORE_SPANS", 256, 1, 100000);
    snprintf(gw.docs_dir, sizeof gw.docs_dir, "%s",
             lm_cfg_str(&cfg, "GATEWAY_DOCS_DIR", LM_DOCS_DIR));
    parse_aliases(&gw, &cfg);
    parse_services(&gw, &cfg);
    parse_limits(&gw, &cfg);
    gw_cors_parse(&gw, &cfg);
    gw.clients_watch_ms = lm_cfg_duration_ms(&cfg, "GATEWAY_CLIENTS_WATCH", 1000, 100, 3600000);
    if (lm_cfg_ok(&cfg)) lm_token_key_from_env(&gw.service_key, &cfg, true);
    if (lm_cfg_ok(&cfg) && lm_token_key_secret_file(&gw.access_key, access, true, err, sizeof err))
        lm_cfg_error(&cfg, "GATEWAY_ACCESS_KEY_FILE", "%s", err);
    gw_clients first;
    pthread_mutex_init(&gw.clients_mu, NULL);
    snprintf(gw.clients_path, sizeof gw.clients_path, "%s", clients);
    if (lm_cfg_ok(&cfg) && gw_clients_load(&first, clients, def_dev, err, sizeof err))
        lm_cfg_error(&cfg, "GATEWAY_CLIENTS_FILE", "%s", err);
    else if (lm_cfg_ok(&cfg))
        gw_clients_publish(&gw, &first);
    gw.reg = lm_app_use_registry(app, &cfg);
    lm_client_config cc;
    lm_client_config_default(&cc);
    cc.connect_timeout_ms = gw.connect_timeout_ms;
    cc.response_timeout_ms = gw.upstream_timeout_ms;
    cc.max_conns_per_origin = 256;
    cc.max_response_body = 64 * 1024 * 1024;
    gw.upstreams = lm_app_use_clients(app, &cc);
    lm_cfg_exit_on_error(&cfg);

    for (size_t i = 0; i < gw.n_services; i++)
        lm_disc_watch(gw.reg, gw.services[i]);
    gw.n_workers = lm_app_env(app)->workers;
    gw.workers = lm_xcalloc((size_t)gw.n_workers, sizeof *gw.workers);
    for (int i = 0; i < gw.n_workers; i++)
        gw_upstream_init(&gw.workers[i]);
    lm_app_add(app, &(lm_component){.ctx = &gw,
                                    .worker_start = worker_start,
                                    .worker_stop = worker_stop,
                                    .metrics = gw_metrics_render});
    gw_cors_routes(lm_app_router(app), &gw);
    gw_clientauth_routes(lm_app_router(app), &gw);
    gw_admin_routes(lm_app_router(app), &gw);
    gw_admin_clients_routes(lm_app_router(app), &gw);
    gw_proxy_routes(lm_app_router(app), &gw);
    gw.traces = lm_tracestore_new(max_traces, max_spans);
    lm_app_trace_auth(app, &gw.service_key);
    gw_traces_routes(lm_app_router(app), &gw);
    gw_dashboard_routes(lm_app_router(app), &gw);
    gw_openapi_routes(lm_app_router(app), &gw);
    int rc = lm_app_run(app);
    lm_tracestore_free(gw.traces);
    lm_app_free(app);
    for (int i = 0; i < gw.n_workers; i++)
        gw_upstream_free(&gw.workers[i]);
    free(gw.workers);
    gw_clients_release(gw.clients_cur);
    pthread_mutex_destroy(&gw.clients_mu);
    gw_limiter_free(gw.limiter);
    lm_token_key_free(&gw.access_key);
    lm_token_key_free(&gw.service_key);
    return rc;
}
