/* dashboard.c — GET /dashboard (DESIGN 3.7): a live page of services and instances with
 * health, circuit state, in-flight, request rate, error rate and p99 over the last five
 * minutes, and recent traces with their span waterfall. The page (dashboard.html, compiled
 * in) polls two JSON documents: /dashboard/api/state and /dashboard/api/traces[/{id}].
 *
 * Time series: a one-second timer on the control loop sums the per-worker counters of each
 * exposed service (metrics.c) and keeps the differences in a ring of GW_SERIES points; the
 * p99 of a point comes from the latency histogram's differences (the upper bound of the
 * bucket holding the 99th percentile). Nothing is stored outside the process.
 *
 * Access: the admin scope, as /admin/services — Bearer access token, X-API-Key, or HTTP
 * Basic whose password is an admin client's API key (what a browser can send: it asks once
 * and repeats it for the page's own requests).
 *
 * Threading: the timer writes the ring under series_mu on the control loop; handlers read
 * it under the same lock on the workers. */
#include "gateway.h"

#include "json.h"
#include "parse.h"
#include "problem.h"
#include "discovery.h"
#include "tracer.h"
#include "tracestore.h"

#include <pthread.h>
#include <sodium.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

extern const char gw_dashboard_html[];
extern const unsigned long gw_dashboard_html_len;

static const double bounds_ms[GW_BUCKETS] = {0.5, 1,   2.5, 5,    10,   25,   50,
                                             100, 250, 500, 1000, 2500, 5000, 10000};

/* ---- time series ------------------------------------------------------------------------ */

static void totals(gateway *gw, size_t s, unsigned long long *req, unsigned long long *err,
                   unsigned long long b[GW_BUCKETS + 1])
{
    *req = *err = 0;
    memset(b, 0, sizeof(unsigned long long) * (GW_BUCKETS + 1));
    for (int w = 0; w < gw->n_workers; w++) {
        gw_worker *k = &gw->workers[w];
        for (int c = 0; c < 5; c++) {
            unsigned long long v =
                atomic_load_explicit(&k->svc[s].by_class[c], memory_order_relaxed);
            *req += v;
            if (c == 4) *err += v;
        }
        for (int i = 0; i <= GW_BUCKETS; i++)
            b[i] += atomic_load_explicit(&k->svc[s].buckets[i], memory_order_relaxed);
    }
}

static double p99_ms(const unsigned long long b[GW_BUCKETS + 1])
{
    unsigned long long n = 0, seen = 0;
    for (int i = 0; i <= GW_BUCKETS; i++)
        n += b[i];
    if (!n) return 0;
    unsigned long long want = n - n / 100; /* the 99th percentile's rank, rounded up */
    for (int i = 0; i < GW_BUCKETS; i++) {
        seen += b[i];
        if (seen >= want) return bounds_ms[i];
    }
    return bounds_ms[GW_BUCKETS - 1] * 2; /* beyond the last bound */
}

static void sample(uv_timer_t *t)
{
    gateway *gw = t->data;
    gw_series *se = &gw->series;
    long long now = (long long)time(NULL);
    pthread_mutex_lock(&se->mu);
    for (size_t s = 0; s < gw->n_services; s++) {
        unsigned long long req, err, b[GW_BUCKETS + 1];
        totals(gw, s, &req, &err, b);
        gw_point *p = &se->points[s][se->head];
        p->t = now;
        p->requests = se->primed ? req - se->last_req[s] : 0;
        p->errors = se->primed ? err - se->last_err[s] : 0;
        for (int i = 0; i <= GW_BUCKETS; i++) {
            p->buckets[i] = se->primed ? b[i] - se->last_b[s][i] : 0;
            se->last_b[s][i] = b[i];
        }
        se->last_req[s] = req;
        se->last_err[s] = err;
    }
    se->head = (se->head + 1) % GW_SERIES;
    if (se->n < GW_SERIES) se->n++;
    se->primed = true;
    pthread_mutex_unlock(&se->mu);
}

static void on_started(void *ctx, int port)
{
    (void)port;
    gateway *gw = ctx;
    uv_timer_init(lm_app_loop(gw->app), &gw->series.timer);
    gw->series.timer.data = gw;
    uv_timer_start(&gw->series.timer, sample, 0, 1000);
}

static void on_stopping(void *ctx)
{
    gateway *gw = ctx;
    uv_timer_stop(&gw->series.timer);
    uv_close((uv_handle_t *)&gw->series.timer, NULL);
}

/* The last `window` points of service s, oldest first, as [{t, rps, error_rate, p99_ms}];
 * *now gets the same figures over the last 10 s. Under series.mu. */
static json_t *series_json(gateway *gw, size_t s, json_t **now)
{
    gw_series *se = &gw->series;
    json_t *arr = json_array();
    unsigned long long req10 = 0, err10 = 0, b10[GW_BUCKETS + 1] = {0};
    for (size_t k = 0; k < se->n; k++) {
        size_t idx = (se->head + GW_SERIES - se->n + k) % GW_SERIES;
        gw_point *p = &se->points[s][idx];
        json_array_append_new(arr,
                              json_pack("{s:I, s:I, s:f, s:f}", "t", (json_int_t)p->t, "requests",
                                        (json_int_t)p->requests, "error_rate",
                                        p->requests ? (double)p->errors / (double)p->requests : 0.0,
                                        "p99_ms", p99_ms(p->buckets)));
        if (k + 10 >= se->n) {
            req10 += p->requests;
            err10 += p->errors;
            for (int i = 0; i <= GW_BUCKETS; i++)
                b10[i] += p->buckets[i];
        }
    }
    size_t secs = se->n < 10 ? se->n : 10;
    *now =
        json_pack("{s:f, s:f, s:f}", "rps", secs ? (double)req10 / (double)secs : 0.0, "error_rate",
                  req10 ? (double)err10 / (double)req10 : 0.0, "p99_ms", p99_ms(b10));
    return arr;
}

/* ---- access ----------------------------------------------------------------------------- */

static bool need_login(lm_req *req, const char *detail)
{
    lm_resp_header(req, "WWW-Authenticate", "Basic realm=\"lotmesh dashboard\", charset=\"UTF-8\"");
    lm_problem p = {.status = 401, .type = "urn:lotmesh:problem:auth", .detail = detail};
    lm_resp_problem_full(req, &p);
    return false;
}

bool gw_admin_access(gateway *gw, lm_req *req)
{
    const char *authz = lm_req_header(req, "authorization");
    gw_principal who;
    if (authz && strncasecmp(authz, "Basic ", 6) == 0) {
        unsigned char dec[512];
        size_t n = 0;
        if (sodium_base642bin(dec, sizeof dec - 1, authz + 6, strlen(authz + 6), " ", &n, NULL,
                              sodium_base64_VARIANT_ORIGINAL) != 0)
            return need_login(req, "malformed Basic credentials");
        dec[n] = '\0';
        char *colon = strchr((char *)dec, ':');
        const gw_client *c =
            colon ? gw_clients_by_api_key(gw_clients_now(gw, lm_req_worker_index(req)), colon + 1)
                  : NULL;
        sodium_memzero(dec, sizeof dec);
        if (!c) return need_login(req, "the password must be an admin client's API key");
        snprintf(who.scope, sizeof who.scope, "%s", c->scope);
    } else if (authz || lm_req_header(req, "x-api-key")) {
        if (!gw_clientauth_check(gw, req, &who)) return false;
    } else {
        return need_login(req, "an admin credential is required (Basic with an API key as "
                               "the password, a Bearer token, or X-API-Key)");
    }
    if (!lm_token_has_scope(who.scope, "admin")) {
        lm_resp_problem(req, 403, "the admin scope is required");
        return false;
    }
    return true;
}

/* ---- handlers --------------------------------------------------------------------------- */

static void handle_page(lm_req *req, void *ctx)
{
    gateway *gw = ctx;
    if (!gw_admin_access(gw, req)) return;
    lm_resp_header(req, "Cache-Control", "no-store");
    lm_resp_header(req, "Content-Security-Policy",
                   "default-src 'self'; style-src 'self' 'unsafe-inline'; script-src 'self' "
                   "'unsafe-inline'; img-src 'self' data:");
    lm_resp_send(req, 200, "text/html; charset=utf-8", gw_dashboard_html, gw_dashboard_html_len);
}

typedef struct inst_view {
    char id[160];
    long long in_flight;
    unsigned long long requests, failures;
    int open, half_open;
} inst_view;

typedef struct inst_views {
    inst_view *v;
    size_t n, max;
} inst_views;

static void add_view(void *ud, const char *id, unsigned long long requests,
                     unsigned long long failures, long long in_flight, const char *state)
{
    inst_views *all = ud;
    if (all->n == all->max) return;
    inst_view *v = &all->v[all->n++];
    memset(v, 0, sizeof *v);
    snprintf(v->id, sizeof v->id, "%s", id);
    v->in_flight = in_flight;
    v->requests = requests;
    v->failures = failures;
    v->open = !strcmp(state, "open");
    v->half_open = !strcmp(state, "half_open");
}

/* Instance ids the services' policies know (one state per process), with their circuits. */
static size_t collect(gateway *gw, inst_view *v, size_t max)
{
    inst_views all = {v, 0, max};
    for (size_t s = 0; s < gw->n_services; s++)
        lm_policy_each_instance(gw->policies[s], add_view, &all);
    return all.n;
}

static const char *circuit(const inst_view *v)
{
    if (!v) return "closed";
    return v->open ? "open" : v->half_open ? "half_open" : "closed";
}

static void handle_state(lm_req *req, void *ctx)
{
    gateway *gw = ctx;
    if (!gw_admin_access(gw, req)) return;
    static _Thread_local inst_view views[256];
    size_t nv = collect(gw, views, sizeof views / sizeof views[0]);
    json_t *services = json_array();
    for (size_t s = 0; s < gw->n_services; s++) {
        json_t *instances = json_array();
        lm_disc_set *set = lm_disc_instances(gw->reg, gw->services[s]);
        size_t prefix = strlen(gw->services[s]);
        bool listed[256] = {0};
        for (size_t j = 0; set && j < lm_disc_set_count(set); j++) {
            const lm_disc_instance *in = lm_disc_set_get(set, j);
            inst_view *v = NULL;
            for (size_t k = 0; k < nv; k++)
                if (!strcmp(views[k].id, in->id)) v = &views[k], listed[k] = true;
            char addr[300];
            snprintf(addr, sizeof addr, strchr(in->host, ':') ? "[%s]:%d" : "%s:%d", in->host,
                     in->port);
            json_array_append_new(
                instances, json_pack("{s:s, s:s, s:s, s:s, s:I, s:I, s:I}", "id", in->id, "address",
                                     addr, "health", "passing", "circuit", circuit(v), "in_flight",
                                     (json_int_t)(v ? v->in_flight : 0), "requests",
                                     (json_int_t)(v ? v->requests : 0), "failures",
                                     (json_int_t)(v ? v->failures : 0)));
        }
        if (set) lm_disc_set_release(set);
        /* instances this gateway sent to that no longer pass their checks */
        for (size_t k = 0; k < nv; k++) {
            if (listed[k] || strncmp(views[k].id, gw->services[s], prefix) != 0) continue;
            json_array_append_new(instances, json_pack("{s:s, s:s, s:s, s:s, s:I, s:I, s:I}", "id",
                                                       views[k].id, "address", "", "health",
                                                       "critical", "circuit", circuit(&views[k]),
                                                       "in_flight", (json_int_t)views[k].in_flight,
                                                       "requests", (json_int_t)views[k].requests,
                                                       "failures", (json_int_t)views[k].failures));
        }
        json_t *now = NULL;
        pthread_mutex_lock(&gw->series.mu);
        json_t *series = series_json(gw, s, &now);
        pthread_mutex_unlock(&gw->series.mu);
        json_array_append_new(services,
                              json_pack("{s:s, s:o, s:o, s:o}", "name", gw->services[s],
                                        "instances", instances, "now", now, "series", series));
    }
    lm_tracer_stats ts;
    lm_tracer_stats_get(&ts);
    lm_tracestore_stats ss;
    lm_tracestore_stats_get(gw->traces, &ss);
    lm_resp_header(req, "Cache-Control", "no-store");
    lm_json_resp(req, 200,
                 json_pack("{s:I, s:o, s:{s:I, s:I, s:I}, s:{s:I, s:I}}", "time",
                           (json_int_t)time(NULL), "services", services, "tracer", "exported",
                           (json_int_t)ts.exported, "dropped", (json_int_t)ts.dropped, "queued",
                           (json_int_t)ts.queued, "trace_store", "traces", (json_int_t)ss.traces,
                           "spans", (json_int_t)ss.spans_received));
}

static void handle_traces(lm_req *req, void *ctx)
{
    gateway *gw = ctx;
    if (!gw_admin_access(gw, req)) return;
    const char *l = lm_req_query(req, "limit");
    long long limit = 50;
    if (l && (!lm_parse_int(l, &limit) || limit < 1 || limit > 1000)) {
        lm_resp_problem(req, 400, "limit must be an integer from 1 to 1000");
        return;
    }
    lm_resp_header(req, "Cache-Control", "no-store");
    lm_json_resp(req, 200, lm_tracestore_recent(gw->traces, (size_t)limit));
}

static void handle_trace(lm_req *req, void *ctx)
{
    gateway *gw = ctx;
    if (!gw_admin_access(gw, req)) return;
    json_t *spans = lm_tracestore_get(gw->traces, lm_req_param(req, "id"));
    if (!spans) {
        lm_resp_problemf(req, 404, "no trace %.40s in the store (it keeps the most recent ones)",
                         lm_req_param(req, "id"));
        return;
    }
    lm_resp_header(req, "Cache-Control", "no-store");
    lm_json_resp(req, 200, spans);
}

void gw_dashboard_routes(lm_router *r, gateway *gw)
{
    pthread_mutex_init(&gw->series.mu, NULL);
    lm_router_add_flags(r, "GET", "/dashboard", handle_page, gw, LM_ROUTE_UNTRACED);
    lm_router_add_flags(r, "GET", "/dashboard/api/state", handle_state, gw, LM_ROUTE_UNTRACED);
    lm_router_add_flags(r, "GET", "/dashboard/api/traces", handle_traces, gw, LM_ROUTE_UNTRACED);
    lm_router_add_flags(r, "GET", "/dashboard/api/traces/{id}", handle_trace, gw,
                        LM_ROUTE_UNTRACED);
    lm_app_add(gw->app, &(lm_component){.ctx = gw, .started = on_started, .stopping = on_stopping});
}
