/* admin.c — GET /admin/services: what the gateway routes to and how (services, aliases,
 * passing instances with their circuits and requests in flight, each service's call policy —
 * its circuit, bulkhead, retry statistics and every instance it knows —, the balancer, the
 * upstream pools, the stale-if-error store).
 * Behind a client credential with the "admin" scope. */
#include "gateway.h"

#include "json.h"
#include "problem.h"
#include "discovery.h"

#include <stdatomic.h>
#include <string.h>

static void handle_services(lm_req *req, void *ctx)
{
    gateway *gw = ctx;
    gw_principal who;
    gw_cors_actual(gw, req);
    if (!gw_clientauth_check(gw, req, &who)) return;
    if (!lm_token_has_scope(who.scope, "admin")) {
        lm_resp_problem(req, 403, "the admin scope is required");
        return;
    }
    json_t *services = json_array();
    for (size_t i = 0; i < gw->n_services; i++) {
        json_t *instances = json_array();
        lm_disc_set *set = lm_disc_instances(gw->reg, gw->services[i]);
        for (size_t j = 0; set && j < lm_disc_set_count(set); j++) {
            const lm_disc_instance *in = lm_disc_set_get(set, j);
            long long n = 0;
            const char *circuit = lm_policy_instance_state(gw->policies[i], in->id, &n);
            json_array_append_new(instances,
                                  json_pack("{s:s, s:s, s:i, s:s, s:I, s:s}", "id", in->id, "host",
                                            in->host, "port", in->port, "health", "passing",
                                            "in_flight", (json_int_t)n, "circuit", circuit));
        }
        if (set) lm_disc_set_release(set);
        json_t *aliases = json_array();
        for (size_t a = 0; a < gw->n_aliases; a++)
            if (!strcmp(gw->aliases[a].to, gw->services[i]))
                json_array_append_new(aliases, json_string(gw->aliases[a].from));
        json_array_append_new(services,
                              json_pack("{s:s, s:o, s:o, s:o}", "name", gw->services[i], "aliases",
                                        aliases, "instances", instances, "policy",
                                        lm_policy_json(gw->policies[i], lm_policy_now_ms())));
    }
    lm_client_stats total;
    lm_workerclient_stats(gw->upstreams, &total);
    json_t *pool = json_pack(
        "{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "requests", (json_int_t)total.requests,
        "responses", (json_int_t)total.responses, "retries", (json_int_t)total.retries, "connects",
        (json_int_t)total.connects, "reuses", (json_int_t)total.reuses, "connections_open",
        (json_int_t)total.conns_open, "connections_idle", (json_int_t)total.conns_idle, "queued",
        (json_int_t)total.queued, "in_flight", (json_int_t)total.inflight);
    unsigned long long se = 0, sb = 0, ss = 0;
    if (gw->stale) gw_stale_stats(gw->stale, &se, &sb, &ss);
    lm_json_resp(req, 200,
                 json_pack("{s:o, s:s, s:o, s:{s:b, s:I, s:I, s:I}}", "services", services,
                           "balancer", gw->least_outstanding ? "least_outstanding" : "round_robin",
                           "upstream_pool", pool, "stale_if_error", "enabled", gw->stale != NULL,
                           "entries", (json_int_t)se, "bytes", (json_int_t)sb, "served",
                           (json_int_t)ss));
}

void gw_admin_routes(lm_router *r, gateway *gw)
{
    lm_router_add(r, "GET", "/admin/services", handle_services, gw);
}
