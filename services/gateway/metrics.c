/* metrics.c — the gateway's own Prometheus metrics, next to the runtime's: requests and
 * latency by service and status class, requests, failures and in-flight by upstream
 * instance, and the upstream pools. Counters live per worker (gw_worker), written by that
 * worker only with relaxed atomics, summed here at scrape time. */
#include "gateway.h"

#include <stdatomic.h>
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

/* Instances seen by any worker: sums by id (each worker has its own table). */
static void render_instances(lm_buf *out, gateway *gw)
{
    lm_buf_append_str(out, "# HELP lotmesh_gateway_upstream_requests_total Requests sent to an "
                           "upstream instance.\n# TYPE lotmesh_gateway_upstream_requests_total "
                           "counter\n");
    lm_buf seen = LM_BUF_INIT; /* "\n"-separated ids already rendered */
    lm_buf gauges = LM_BUF_INIT, fails = LM_BUF_INIT;
    for (int w = 0; w < gw->n_workers; w++) {
        gw_worker *k = &gw->workers[w];
        int used = atomic_load(&k->n_out);
        for (int i = 0; i < used && i < GW_MAX_UPSTREAMS; i++) {
            const char *id = k->out[i].id;
            lm_buf key = LM_BUF_INIT;
            lm_buf_printf(&key, "\n%s\n", id);
            bool dup = seen.len && strstr(lm_buf_cstr(&seen), lm_buf_cstr(&key));
            if (!dup) {
                lm_buf_append(&seen, key.data, key.len - 1);
                unsigned long long req = 0, fail = 0;
                long long inflight = 0;
                for (int v = 0; v < gw->n_workers; v++) {
                    gw_worker *o = &gw->workers[v];
                    int u = atomic_load(&o->n_out);
                    for (int j = 0; j < u && j < GW_MAX_UPSTREAMS; j++) {
                        if (strcmp(o->out[j].id, id) != 0) continue;
                        req += atomic_load_explicit(&o->out[j].requests, memory_order_relaxed);
                        fail += atomic_load_explicit(&o->out[j].failures, memory_order_relaxed);
                        inflight += atomic_load_explicit(&o->out[j].n, memory_order_relaxed);
                    }
                }
                lm_buf_printf(out,
                              "lotmesh_gateway_upstream_requests_total{instance=\"%s\"} %llu\n", id,
                              req);
                lm_buf_printf(&fails,
                              "lotmesh_gateway_upstream_failures_total{instance=\"%s\"} %llu\n", id,
                              fail);
                lm_buf_printf(&gauges, "lotmesh_gateway_upstream_in_flight{instance=\"%s\"} %lld\n",
                              id, inflight);
            }
            lm_buf_free(&key);
        }
    }
    lm_buf_append_str(out, "# HELP lotmesh_gateway_upstream_failures_total Upstream requests that "
                           "got no response (refused, reset, timeout).\n# TYPE "
                           "lotmesh_gateway_upstream_failures_total counter\n");
    lm_buf_append(out, fails.data, fails.len);
    lm_buf_append_str(out, "# HELP lotmesh_gateway_upstream_in_flight Requests in flight per "
                           "upstream instance.\n# TYPE lotmesh_gateway_upstream_in_flight gauge\n");
    lm_buf_append(out, gauges.data, gauges.len);
    lm_buf_free(&seen);
    lm_buf_free(&gauges);
    lm_buf_free(&fails);
}

void gw_pool_stats(const gateway *gw, lm_client_stats *t)
{
    memset(t, 0, sizeof *t);
    for (int w = 0; w < gw->n_workers; w++) {
        lm_client_stats st;
        if (!gw->workers[w].client) continue;
        lm_client_stats_get(gw->workers[w].client, &st);
        t->requests += st.requests;
        t->responses += st.responses;
        t->retries += st.retries;
        t->connects += st.connects;
        t->reuses += st.reuses;
        t->conns_open += st.conns_open;
        t->conns_idle += st.conns_idle;
        t->queued += st.queued;
        t->inflight += st.inflight;
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
    gw_pool_stats(gw, &t);
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
}
