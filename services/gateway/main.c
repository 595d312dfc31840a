/* main.c — lotmesh-gateway: configuration, keys, clients, per-worker pools, routes, run. */
#include "gateway.h"

#include "discovery.h"

#include "config.h"
#include "log.h"
#include "app_use.h"
#include "redis.h"
#include "server.h"
#include "tracestore.h"

#include <stdatomic.h>
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
    if (gw->limit_redis) {
        lm_redis_addr a;
        char err[200];
        lm_redis_parse_url(gw->limit_url, &a, err, sizeof err); /* checked at start-up */
        gwk->redis = lm_redis_new(lm_worker_loop(w), &a, gw->limit_timeout_ms, &gw_limit_script, 1,
                                  gw_limit_redis_state, gwk);
    }
    gw_proxy_worker_start(gwk, lm_worker_loop(w));
}

static void worker_stop(lm_worker *w, void *ctx)
{
    gateway *gw = ctx;
    gw_worker *gwk = &gw->workers[lm_worker_index(w)];
    gw_proxy_worker_stop(gwk);
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

/* /ready: not before the discovery cache has an instance of every exposed service (then the
 * first requests find one); once it had, an outage is the circuits' business, not a reason to
 * take the gateway out of its load balancer. */
static bool discovered(void *ctx, lm_buf *why)
{
    gateway *gw = ctx;
    if (atomic_load(&gw->discovered) || lm_disc_get_mode(gw->reg) == LM_DISC_NONE) return true;
    bool all = true;
    for (size_t i = 0; i < gw->n_services; i++) {
        lm_disc_set *set = lm_disc_instances(gw->reg, gw->services[i]);
        bool some = set && lm_disc_set_count(set) > 0;
        if (set) lm_disc_set_release(set);
        if (!some) {
            lm_buf_printf(why, "%sno instance of %s discovered yet", all ? "" : "; ",
                          gw->services[i]);
            all = false;
        }
    }
    if (all) atomic_store(&gw->discovered, true);
    return all;
}

/* "charges_api=5s,articles_api/api/v1/articles=2s": a service, optionally a path prefix under
 * it, and the deadline of its requests. */
static void parse_route_timeouts(gateway *gw, lm_cfg *cfg)
{
    const char *spec = lm_cfg_str(cfg, "GATEWAY_ROUTE_TIMEOUTS", "");
    char buf[4096];
    snprintf(buf, sizeof buf, "%s", spec);
    char *save = NULL;
    for (char *item = strtok_r(buf, ",", &save); item; item = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(item, '=');
        uint64_t ms = 0;
        if (eq) *eq = '\0';
        char *slash = strchr(item, '/');
        size_t svc_len = slash ? (size_t)(slash - item) : strlen(item);
        if (!eq || svc_len == 0 || svc_len >= 64 || (slash && strlen(slash + 1) >= 128) ||
            !lm_parse_duration_ms(eq + 1, &ms) || ms < 10 || ms > 3600000 ||
            gw->n_route_timeouts == sizeof gw->route_timeouts / sizeof gw->route_timeouts[0]) {
            lm_cfg_error(cfg, "GATEWAY_ROUTE_TIMEOUTS",
                         "must be service[/path-prefix]=duration[,…] with 10ms to 1h (got "
                         "\"%.64s\")",
                         item);
            return;
        }
        struct gw_route_timeout *t = &gw->route_timeouts[gw->n_route_timeouts++];
        snprintf(t->service, sizeof t->service, "%.*s", (int)svc_len, item);
        snprintf(t->prefix, sizeof t->prefix, "%s", slash ? slash + 1 : "");
        t->ms = ms;
    }
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
    lm_policy_config_default(&gw.policy, 30000, 1000, 10000);
    lm_policy_config_env(&gw.policy, &cfg, "UPSTREAM_");
    uint64_t stale_ms = lm_cfg_duration_ms(&cfg, "GATEWAY_STALE_IF_ERROR", 300000, 0, 86400000);
    uint64_t stale_bytes =
        lm_cfg_size(&cfg, "GATEWAY_STALE_MAX_BYTES", 16u << 20, 64u << 10, 4ull << 30);
    size_t max_traces = (size_t)lm_cfg_int(&cfg, "GATEWAY_TRACE_STORE_TRACES", 200, 1, 100000);
    size_t max_spans = (size_t)lm_cfg_int(&cfg, "GATEWAY_TRACE_STORE_SPANS", 256, 1, 100000);
    snprintf(gw.docs_dir, sizeof gw.docs_dir, "%s",
             lm_cfg_str(&cfg, "GATEWAY_DOCS_DIR", LM_DOCS_DIR));
    parse_aliases(&gw, &cfg);
    parse_services(&gw, &cfg);
    parse_limits(&gw, &cfg);
    gw_cors_parse(&gw, &cfg);
    gw.clients_watch_ms = lm_cfg_duration_ms(&cfg, "GATEWAY_CLIENTS_WATCH", 1000, 100, 3600000);
    parse_route_timeouts(&gw, &cfg);
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
    cc.connect_timeout_ms = gw.policy.connect_timeout_ms;
    cc.response_timeout_ms = gw.policy.timeout_ms;
    cc.max_conns_per_origin = 256;
    cc.max_response_body = 64 * 1024 * 1024;
    gw.upstreams = lm_app_use_clients(app, &cc);
    lm_cfg_exit_on_error(&cfg);

    for (size_t i = 0; i < gw.n_services; i++)
        lm_disc_watch(gw.reg, gw.services[i]);
    for (size_t i = 0; i < gw.n_services; i++)
        gw.policies[i] = lm_policy_new(gw.services[i], &gw.policy);
    if (stale_ms) gw.stale = gw_stale_new(stale_ms, stale_bytes);
    gw.n_workers = lm_app_env(app)->workers;
    gw.workers = lm_xcalloc((size_t)gw.n_workers, sizeof *gw.workers);
    lm_app_add(app, &(lm_component){.ctx = &gw,
                                    .worker_start = worker_start,
                                    .worker_stop = worker_stop,
                                    .ready_name = "discovery",
                                    .ready = discovered,
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
    free(gw.workers);
    for (size_t i = 0; i < gw.n_services; i++)
        lm_policy_free(gw.policies[i]);
    gw_stale_free(gw.stale);
    gw_clients_release(gw.clients_cur);
    pthread_mutex_destroy(&gw.clients_mu);
    gw_limiter_free(gw.limiter);
    lm_token_key_free(&gw.access_key);
    lm_token_key_free(&gw.service_key);
    return rc;
}
