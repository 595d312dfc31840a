/* traces.c — the gateway's embedded trace receiver (DESIGN 3.7): POST /v1/traces takes
 * OTLP/HTTP JSON from every process of the installation into a bounded in-memory store
 * (lm_tracestore) that the dashboard shows. A service token for the audience "gateway"
 * with the write scope is required (the processes mint one per export, tracer.h), so the
 * store cannot be filled by anyone who merely reaches the port.
 *
 * Threading: the handler runs on any worker; the store has its own lock. */
#include "gateway.h"

#include "problem.h"
#include "tracestore.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

static bool deny(lm_req *req, int status, const char *detail)
{
    lm_resp_header(req, "WWW-Authenticate", "Bearer realm=\"lotmesh-traces\"");
    lm_problem p = {.status = status, .type = "urn:lotmesh:problem:auth", .detail = detail};
    lm_resp_problem_full(req, &p);
    return false;
}

static bool authorized(gateway *gw, lm_req *req)
{
    const char *authz = lm_req_header(req, "authorization");
    if (!authz || strncasecmp(authz, "Bearer ", 7) != 0)
        return deny(req, 401, "a service token for the audience gateway is required");
    lm_token_claims c;
    lm_token_result r = lm_token_verify(&gw->service_key, authz + 7, NULL, "gateway", &c);
    if (r == LM_TOKEN_WRONG_AUDIENCE) return deny(req, 403, lm_token_result_str(r));
    if (r != LM_TOKEN_OK) return deny(req, 401, lm_token_result_str(r));
    if (!c.iss[0] || !lm_token_has_scope(c.scope, "write"))
        return deny(req, 403, "the token needs an issuer and the write scope");
    return true;
}

static void handle_traces(lm_req *req, void *ctx)
{
    gateway *gw = ctx;
    if (!authorized(gw, req)) return;
    const char *ct = lm_req_header(req, "content-type");
    if (!ct || strncasecmp(ct, "application/json", 16) != 0 || (ct[16] && ct[16] != ';')) {
        lm_resp_problemf(req, 415,
                         "OTLP/HTTP JSON (Content-Type: application/json) is accepted here, not "
                         "\"%.64s\"",
                         ct ? ct : "");
        return;
    }
    char err[256];
    long n = lm_tracestore_ingest(gw->traces, req->body, req->body_len, err, sizeof err);
    if (n < 0) {
        lm_resp_problem(req, 400, err);
        return;
    }
    static const char ok[] = "{\"partialSuccess\":{}}";
    lm_resp_send(req, 200, "application/json", ok, sizeof ok - 1);
}

static void render_metrics(lm_buf *out, void *ctx)
{
    gateway *gw = ctx;
    lm_tracestore_stats st;
    lm_tracestore_stats_get(gw->traces, &st);
    lm_buf_printf(out,
                  "# HELP lotmesh_trace_store_spans_total Spans received at /v1/traces.\n"
                  "# TYPE lotmesh_trace_store_spans_total counter\n"
                  "lotmesh_trace_store_spans_total %llu\n"
                  "# HELP lotmesh_trace_store_spans_dropped_total Spans over a trace's bound.\n"
                  "# TYPE lotmesh_trace_store_spans_dropped_total counter\n"
                  "lotmesh_trace_store_spans_dropped_total %llu\n"
                  "# HELP lotmesh_trace_store_traces_evicted_total Traces evicted by newer ones.\n"
                  "# TYPE lotmesh_trace_store_traces_evicted_total counter\n"
                  "lotmesh_trace_store_traces_evicted_total %llu\n"
                  "# HELP lotmesh_trace_store_traces Traces held.\n"
                  "# TYPE lotmesh_trace_store_traces gauge\n"
                  "lotmesh_trace_store_traces %zu\n",
                  (unsigned long long)st.spans_received, (unsigned long long)st.spans_dropped,
                  (unsigned long long)st.traces_evicted, st.traces);
}

void gw_traces_routes(lm_router *r, gateway *gw)
{
    lm_router_add_flags(r, "POST", "/v1/traces", handle_traces, gw, LM_ROUTE_UNTRACED);
    lm_app_add(gw->app, &(lm_component){.ctx = gw, .metrics = render_metrics});
}
