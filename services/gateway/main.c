/* main.c — lotmesh-gateway: configuration, keys, clients, per-worker pools, routes, run. */
#include "gateway.h"

#include "discovery.h"

#include "config.h"
#include "log.h"
#include "app_use.h"
#include "server.h"

#include <stdatomic.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void worker_start(lm_worker *w, void *ctx)
{
    gateway *gw = ctx;
    gw_worker *gwk = &gw->workers[lm_worker_index(w)];
    gw_clientauth_worker_init(gwk);
    gw_proxy_worker_start(gwk, lm_worker_loop(w));
}

static void worker_stop(lm_worker *w, void *ctx)
{
    gateway *gw = ctx;
    gw_worker *gwk = &gw->workers[lm_worker_index(w)];
    gw_proxy_worker_stop(gwk);
    gw_clientauth_worker_free(gwk);
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
    parse_aliases(&gw, &cfg);
    parse_services(&gw, &cfg);
    parse_route_timeouts(&gw, &cfg);
    if (lm_cfg_ok(&cfg)) lm_token_key_from_env(&gw.service_key, &cfg, true);
    if (lm_cfg_ok(&cfg) && lm_token_key_secret_file(&gw.access_key, access, true, err, sizeof err))
        lm_cfg_error(&cfg, "GATEWAY_ACCESS_KEY_FILE", "%s", err);
    if (lm_cfg_ok(&cfg) && gw_clients_load(&gw.clients, clients, def_dev, err, sizeof err))
        lm_cfg_error(&cfg, "GATEWAY_CLIENTS_FILE", "%s", err);
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
    gw_clientauth_routes(lm_app_router(app), &gw);
    gw_admin_routes(lm_app_router(app), &gw);
    gw_proxy_routes(lm_app_router(app), &gw);
    int rc = lm_app_run(app);
    lm_app_free(app);
    free(gw.workers);
    for (size_t i = 0; i < gw.n_services; i++)
        lm_policy_free(gw.policies[i]);
    gw_stale_free(gw.stale);
    gw_clients_free(&gw.clients);
    lm_token_key_free(&gw.access_key);
    lm_token_key_free(&gw.service_key);
    return rc;
}
