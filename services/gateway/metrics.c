/* metrics.c — the gateway's own Prometheus metrics, next to the runtime's: requests and
 * latency by service and status class, requests, failures and in-flight by upstream
 * instance, the call policy's circuits, retries, budget and bulkhead, and the upstream pools.
 * Counters live per worker (gw_worker), written by that worker only with relaxed atomics, summed
 * here at scrape time. */
#include "gateway.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

static const double bounds[GW_BUCKETS] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                          0.1,    0.25,  0.5,    1,     2.5,  5,     10};

static void bump(atomic_ullong *c, unsigned long long by)
{
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + by,
                          memory_order_relaxed);
}

void gw_metrics_observe(gateway *gw, int worker, int service, int status, double seconds)
{
    if (worker < 0 || worker >= gw->n_workers || service < 0 || service >= GW_MAX_SERVICES) return;
    gw_worker *w = &gw->workers[worker];
    int cls = status / 100 - 1;
    if (cls < 0 || cls > 4) cls = 4;
    bump(&w->svc[service].by_class[cls], 1);
    int b = 0;
    while (b < GW_BUCKETS && seconds > bounds[b])
        b++;
    bump(&w->svc[service].buckets[b], 1);
    bump(&w->svc[service].sum_us, (unsigned long long)(seconds * 1e6));
}

static unsigned long long sum_svc(gateway *gw, size_t s, int what, int i)
{
    unsigned long long n = 0;
    for (int w = 0; w < gw->n_workers; w++) {
        gw_worker *k = &gw->workers[w];
        atomic_ullong *c = what == 0   ? &k->svc[s].by_class[i]
                           : what == 1 ? &k->svc[s].buckets[i]
                                       : &k->svc[s].sum_us;
        n += atomic_load_explicit(c, memory_order_relaxed);
    }
    return n;
}

typedef struct inst_render {
    lm_buf *requests, *failures, *gauges, *circuits;
} inst_render;

static void one_instance(void *ctx, const char *id, unsigned long long req, unsigned long long fail,
                         long long inflight, const char *circuit)
{
    inst_render *r = ctx;
    lm_buf_printf(r->circuits, "lotmesh_gateway_upstream_circuit_open{instance=\"%s\"} %d\n", id,
                  strcmp(circuit, "closed") != 0);
    lm_buf_printf(r->requests, "lotmesh_gateway_upstream_requests_total{instance=\"%s\"} %llu\n",
                  id, req);
    lm_buf_printf(r->failures, "lotmesh_gateway_upstream_failures_total{instance=\"%s\"} %llu\n",
                  id, fail);
    lm_buf_printf(r->gauges, "lotmesh_gateway_upstream_in_flight{instance=\"%s\"} %lld\n", id,
                  inflight);
}

/* Every instance the services' policies know (one table per process, policy.h). */
static void render_instances(lm_buf *out, gateway *gw)
{
    lm_buf fails = LM_BUF_INIT, gauges = LM_BUF_INIT, circuits = LM_BUF_INIT;
    lm_buf_append_str(out, "# HELP lotmesh_gateway_upstream_requests_total Requests sent to an "
                           "upstream instance (tries).\n# TYPE "
                           "lotmesh_gateway_upstream_requests_total counter\n");
    inst_render r = {.requests = out, .failures = &fails, .gauges = &gauges, .circuits = &circuits};
    for (size_t s = 0; s < gw->n_services; s++)
        lm_policy_each_instance(gw->policies[s], one_instance, &r);
    lm_buf_append_str(out,
                      "# HELP lotmesh_gateway_upstream_failures_total Tries that showed the "
                      "instance unhealthy (refused, reset, timeout, bare 502/503/504).\n# TYPE "
                      "lotmesh_gateway_upstream_failures_total counter\n");
    lm_buf_append(out, fails.data, fails.len);
    lm_buf_append_str(out, "# HELP lotmesh_gateway_upstream_in_flight Requests in flight per "
                           "upstream instance.\n# TYPE lotmesh_gateway_upstream_in_flight gauge\n");
    lm_buf_append(out, gauges.data, gauges.len);
    lm_buf_free(&gauges);
    lm_buf_append_str(out, "# HELP lotmesh_gateway_upstream_circuit_open 1 while the circuit to an "
                           "upstream instance is open or half-open.\n"
                           "# TYPE lotmesh_gateway_upstream_circuit_open gauge\n");
    lm_buf_append(out, circuits.data, circuits.len);
    lm_buf_free(&circuits);
    lm_buf_free(&fails);
    lm_policy_metrics(gw->policies, (int)gw->n_services, out, lm_policy_now_ms());
    if (gw->stale) {
        unsigned long long e, b, served;
        gw_stale_stats(gw->stale, &e, &b, &served);
        lm_buf_printf(
            out,
            "# HELP lotmesh_gateway_stale_entries GET answers kept for stale-if-error.\n"
            "# TYPE lotmesh_gateway_stale_entries gauge\nlotmesh_gateway_stale_entries %llu\n"
            "# HELP lotmesh_gateway_stale_bytes Their memory.\n"
            "# TYPE lotmesh_gateway_stale_bytes gauge\nlotmesh_gateway_stale_bytes %llu\n"
            "# HELP lotmesh_gateway_stale_served_total Answers served stale.\n"
            "# TYPE lotmesh_gateway_stale_served_total counter\n"
            "lotmesh_gateway_stale_served_total %llu\n",
            e, b, served);
    }
}

void gw_metrics_render(lm_buf *out, void *ctx)
{
    gateway *gw = ctx;
    lm_buf_append_str(out, "# HELP lotmesh_gateway_requests_total Requests answered through "
                           "/api/, by target service and status class.\n# TYPE "
                           "lotmesh_gateway_requests_total counter\n");
    for (size_t s = 0; s < gw->n_services; s++)
        for (int c = 0; c < 5; c++) {
            unsigned long long n = sum_svc(gw, s, 0, c);
            if (n)
                lm_buf_printf(
                    out, "lotmesh_gateway_requests_total{service=\"%s\",status=\"%dxx\"} %llu\n",
                    gw->services[s], c + 1, n);
        }
    lm_buf_append_str(out, "# HELP lotmesh_gateway_request_duration_seconds Time through the "
                           "gateway, by service.\n# TYPE lotmesh_gateway_request_duration_seconds "
                           "histogram\n");
    for (size_t s = 0; s < gw->n_services; s++) {
        unsigned long long cum = 0;
        for (int b = 0; b <= GW_BUCKETS; b++) {
            cum += sum_svc(gw, s, 1, b);
            if (b < GW_BUCKETS)
                lm_buf_printf(out,
                              "lotmesh_gateway_request_duration_seconds_bucket{service=\"%s\",le="
                              "\"%g\"} %llu\n",
                              gw->services[s], bounds[b], cum);
            else
                lm_buf_printf(out,
                              "lotmesh_gateway_request_duration_seconds_bucket{service=\"%s\",le="
                              "\"+Inf\"} %llu\n",
                              gw->services[s], cum);
        }
        lm_buf_printf(out, "lotmesh_gateway_request_duration_seconds_sum{service=\"%s\"} %.6f\n",
                      gw->services[s], (double)sum_svc(gw, s, 2, 0) / 1e6);
        lm_buf_printf(out, "lotmesh_gateway_request_duration_seconds_count{service=\"%s\"} %llu\n",
                      gw->services[s], cum);
    }
    render_instances(out, gw);
    lm_client_stats t;
    lm_workerclient_stats(gw->upstreams, &t);
    lm_buf_printf(
        out,
        "# HELP lotmesh_gateway_pool_connections Upstream connections by state.\n"
        "# TYPE lotmesh_gateway_pool_connections gauge\n"
        "lotmesh_gateway_pool_connections{state=\"open\"} %llu\n"
        "lotmesh_gateway_pool_connections{state=\"idle\"} %llu\n"
        "# HELP lotmesh_gateway_pool_queued Requests waiting for an upstream connection.\n"
        "# TYPE lotmesh_gateway_pool_queued gauge\n"
        "lotmesh_gateway_pool_queued %llu\n"
        "# HELP lotmesh_gateway_pool_connects_total Upstream connections opened.\n"
        "# TYPE lotmesh_gateway_pool_connects_total counter\n"
        "lotmesh_gateway_pool_connects_total %llu\n"
        "# HELP lotmesh_gateway_pool_reuses_total Requests sent on a pooled connection.\n"
        "# TYPE lotmesh_gateway_pool_reuses_total counter\n"
        "lotmesh_gateway_pool_reuses_total %llu\n"
        "# HELP lotmesh_gateway_pool_retries_total Requests resent after a stale pooled "
        "connection.\n"
        "# TYPE lotmesh_gateway_pool_retries_total counter\n"
        "lotmesh_gateway_pool_retries_total %llu\n",
        (unsigned long long)t.conns_open, (unsigned long long)t.conns_idle,
        (unsigned long long)t.queued, (unsigned long long)t.connects, (unsigned long long)t.reuses,
        (unsigned long long)t.retries);
    lm_buf_printf(
        out,
        "# HELP lotmesh_gateway_rate_limit_total Rate-limit decisions by outcome (failed: the "
        "Redis store did not answer; RATE_LIMIT_FAIL decided).\n"
        "# TYPE lotmesh_gateway_rate_limit_total counter\n"
        "lotmesh_gateway_rate_limit_total{outcome=\"allowed\"} %llu\n"
        "lotmesh_gateway_rate_limit_total{outcome=\"refused\"} %llu\n"
        "lotmesh_gateway_rate_limit_total{outcome=\"store_failed\"} %llu\n"
        "# HELP lotmesh_gateway_rate_limit_store_up 1 while the rate-limit store answers.\n"
        "# TYPE lotmesh_gateway_rate_limit_store_up gauge\n"
        "lotmesh_gateway_rate_limit_store_up %d\n",
        (unsigned long long)atomic_load(&gw->limit_allowed),
        (unsigned long long)atomic_load(&gw->limit_refused),
        (unsigned long long)atomic_load(&gw->limit_store_failures),
        atomic_load(&gw->limit_redis_down) ? 0 : 1);
    lm_buf_printf(out,
                  "# HELP lotmesh_gateway_auth_total /auth/token attempts that failed (wrong "
                  "secret or unknown id) or were refused before any check (locked out, busy).\n"
                  "# TYPE lotmesh_gateway_auth_total counter\n"
                  "lotmesh_gateway_auth_total{outcome=\"failed\"} %llu\n"
                  "lotmesh_gateway_auth_total{outcome=\"refused\"} %llu\n",
                  (unsigned long long)atomic_load(&gw->auth_failures),
                  (unsigned long long)atomic_load(&gw->auth_refused));
}
