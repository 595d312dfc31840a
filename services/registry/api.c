/* api.c — the registry's Consul HTTP API subset (rg_api): registration, deregistration, TTL
 * updates, and the read endpoints with blocking queries.
 *
 * Blocking queries (?index=N&wait=D) are parked, not waited on: the request stays in a list
 * on the owner loop with a timer, and is answered either when the data it watches moves
 * past N (rg_api_wake, called after every change) or when D (default 5 min, at most 10 min,
 * plus up to D/16 of jitter as Consul adds) has passed. A parked query holds no thread.
 * An index from a previous life of the registry (greater than the current one) is answered
 * at once so a client after a restart never waits out its D for nothing.
 *
 * Compatibility: python-consul 0.7.1 sends GET for deregister and check pass/warn/fail, so
 * those accept GET and PUT. Errors are RFC 9457 problems (DESIGN 3.4) where Consul answers
 * plain text; the status codes are Consul's. Every /v1 response carries X-Consul-Index. */
#include "registry_server.h"

#include "json.h"
#include "log.h"
#include "parse.h"
#include "problem.h"
#include "trace.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define WAIT_DEFAULT_MS (5 * 60 * 1000)
#define WAIT_MAX_MS     (10 * 60 * 1000)

typedef enum {
    V_HEALTH,
    V_CATALOG_SERVICE,
    V_CATALOG_SERVICES,
    V_AGENT_SERVICES,
    V_AGENT_CHECKS
} view;

typedef struct query {
    view v;
    char *name; /* V_HEALTH, V_CATALOG_SERVICE */
    bool passing;
    char **tags;
    size_t n_tags;
} query;

struct rg_waiter {
    rg_waiter *prev, *next;
    rg_server *srv;
    lm_req *req;
    query q;
    uint64_t index;
    uv_timer_t timer;
};

static void query_free(query *q)
{
    free(q->name);
    for (size_t i = 0; i < q->n_tags; i++)
        free(q->tags[i]);
    free(q->tags);
}

static uint64_t view_index(const rg_server *srv, const query *q)
{
    switch (q->v) {
    case V_HEALTH:
    case V_CATALOG_SERVICE:
        return rg_state_name_index(&srv->st, q->name);
    case V_CATALOG_SERVICES:
    case V_AGENT_SERVICES:
        return rg_state_catalog_index(&srv->st);
    default:
        return rg_state_index(&srv->st);
    }
}

static void set_index_header(lm_req *req, uint64_t index)
{
    char buf[24];
    snprintf(buf, sizeof buf, "%llu", (unsigned long long)index);
    lm_resp_header(req, "X-Consul-Index", buf);
}

static void respond(rg_server *srv, lm_req *req, const query *q)
{
    const rg_state *st = &srv->st;
    json_t *doc;
    switch (q->v) {
    case V_HEALTH:
        doc =
            rg_state_health_json(st, q->name, q->passing, (const char *const *)q->tags, q->n_tags);
        break;
    case V_CATALOG_SERVICE:
        doc = rg_state_catalog_service_json(st, q->name, (const char *const *)q->tags, q->n_tags);
        break;
    case V_CATALOG_SERVICES:
        doc = rg_state_catalog_services_json(st);
        break;
    case V_AGENT_SERVICES:
        doc = rg_state_agent_services_json(st);
        break;
    default:
        doc = rg_state_agent_checks_json(st);
        break;
    }
    set_index_header(req, view_index(srv, q));
    lm_resp_header(req, "X-Consul-KnownLeader", "true");
    lm_resp_header(req, "X-Consul-LastContact", "0");
    lm_json_resp(req, 200, doc);
}

/* A problem with the current index (Consul sends X-Consul-Index on errors too). */
static void problem(rg_server *srv, lm_req *req, int status, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void problem(rg_server *srv, lm_req *req, int status, const char *fmt, ...)
{
    char detail[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    set_index_header(req, rg_state_index(&srv->st));
    lm_resp_problem(req, status, detail);
}

/* ---- parked queries -------------------------------------------------------------------- */

static void on_waiter_closed(uv_handle_t *h)
{
    rg_waiter *w = h->data;
    query_free(&w->q);
    free(w);
}

static void waiter_finish(rg_waiter *w)
{
    rg_server *srv = w->srv;
    if (w->prev)
        w->prev->next = w->next;
    else
        srv->waiters = w->next;
    if (w->next) w->next->prev = w->prev;
    atomic_fetch_sub_explicit(&srv->m_waiters, 1, memory_order_relaxed);
    respond(srv, w->req, &w->q);
    w->req = NULL;
    uv_close((uv_handle_t *)&w->timer, on_waiter_closed);
}

static void on_waiter_timer(uv_timer_t *t)
{
    waiter_finish(t->data);
}

void rg_api_wake(rg_server *srv, bool all)
{
    rg_waiter *next;
    for (rg_waiter *w = srv->waiters; w; w = next) {
        next = w->next;
        if (all || view_index(srv, &w->q) > w->index) waiter_finish(w);
    }
}

void rg_api_sweep(rg_server *srv)
{
    rg_waiter *next;
    for (rg_waiter *w = srv->waiters; w; w = next) {
        next = w->next;
        if (lm_req_abandoned(w->req)) waiter_finish(w); /* the answer is discarded */
    }
}

static uint64_t jitter(uint64_t max)
{
    return max ? lm_trace_rand64() % (max + 1) : 0;
}

static void park(rg_server *srv, lm_req *req, query *q, uint64_t index, uint64_t wait_ms)
{
    rg_waiter *w = lm_xcalloc(1, sizeof *w);
    w->srv = srv;
    w->req = req;
    w->q = *q;
    memset(q, 0, sizeof *q);
    w->index = index;
    uv_timer_init(srv->loop, &w->timer);
    w->timer.data = w;
    uv_timer_start(&w->timer, on_waiter_timer, wait_ms + jitter(wait_ms / 16), 0);
    w->next = srv->waiters;
    if (srv->waiters) srv->waiters->prev = w;
    srv->waiters = w;
    atomic_fetch_add_explicit(&srv->m_waiters, 1, memory_order_relaxed);
}

/* ---- reads ----------------------------------------------------------------------------- */

/* Go's strconv.ParseBool, and "" (a bare ?passing) is true as in Consul. */
static bool parse_bool(const char *s, bool *out)
{
    static const char *const t[] = {"", "1", "t", "T", "true", "TRUE", "True"};
    static const char *const f[] = {"0", "f", "F", "false", "FALSE", "False"};
    for (size_t i = 0; i < sizeof t / sizeof *t; i++)
        if (strcmp(s, t[i]) == 0) {
            *out = true;
            return true;
        }
    for (size_t i = 0; i < sizeof f / sizeof *f; i++)
        if (strcmp(s, f[i]) == 0) {
            *out = false;
            return true;
        }
    return false;
}

static void read_endpoint(lm_req *req, rg_server *srv, view v, const char *name)
{
    query q = {.v = v, .name = name ? lm_xstrdup(name) : NULL};
    uint64_t index = 0, wait_ms = WAIT_DEFAULT_MS;
    for (size_t i = 0; i < req->query.n; i++) {
        const char *k = req->query.pairs[i].key, *val = req->query.pairs[i].value;
        if (strcmp(k, "index") == 0) {
            if (!lm_parse_uint(val, &index)) {
                problem(srv, req, 400, "Invalid index \"%.40s\": must be an unsigned integer", val);
                goto out;
            }
        } else if (strcmp(k, "wait") == 0) {
            uint64_t ns;
            if (!lm_consul_parse_duration(val, &ns)) {
                problem(srv, req, 400,
                        "Invalid wait time \"%.40s\" (expected e.g. \"10s\", \"5m\")", val);
                goto out;
            }
            wait_ms = ns / 1000000;
            if (wait_ms == 0) wait_ms = WAIT_DEFAULT_MS;
            if (wait_ms > WAIT_MAX_MS) wait_ms = WAIT_MAX_MS;
        } else if (strcmp(k, "passing") == 0 && (v == V_HEALTH)) {
            if (!parse_bool(val, &q.passing)) {
                problem(srv, req, 400, "Invalid value for ?passing: \"%.20s\"", val);
                goto out;
            }
        } else if (strcmp(k, "tag") == 0 && (v == V_HEALTH || v == V_CATALOG_SERVICE)) {
            q.tags = lm_xrealloc(q.tags, (q.n_tags + 1) * sizeof *q.tags);
            q.tags[q.n_tags++] = lm_xstrdup(val);
        } else if (strcmp(k, "dc") == 0 && *val && strcmp(val, srv->st.datacenter) != 0) {
            problem(srv, req, 400, "No path to datacenter \"%.40s\" (this registry serves %s)", val,
                    srv->st.datacenter);
            goto out;
        } else if (strcmp(k, "filter") == 0) {
            problem(srv, req, 400,
                    "filter expressions are not supported by this registry; "
                    "use ?tag and ?passing");
            goto out;
        }
        /* others (stale, consistent, cached, token, near, node-meta, ns, …) do not change
         * the answer of a single-node registry without ACLs */
    }
    uint64_t current = view_index(srv, &q);
    if (index > 0 && current <= index && index <= rg_state_index(&srv->st) &&
        !atomic_load(&srv->stopping)) {
        park(srv, req, &q, index, wait_ms);
        return;
    }
    respond(srv, req, &q);
out:
    query_free(&q);
}

static void h_health_service(lm_req *req, void *ctx)
{
    read_endpoint(req, ctx, V_HEALTH, lm_req_param(req, "name"));
}

static void h_catalog_service(lm_req *req, void *ctx)
{
    read_endpoint(req, ctx, V_CATALOG_SERVICE, lm_req_param(req, "name"));
}

static void h_catalog_services(lm_req *req, void *ctx)
{
    read_endpoint(req, ctx, V_CATALOG_SERVICES, NULL);
}

static void h_agent_services(lm_req *req, void *ctx)
{
    read_endpoint(req, ctx, V_AGENT_SERVICES, NULL);
}

static void h_agent_checks(lm_req *req, void *ctx)
{
    read_endpoint(req, ctx, V_AGENT_CHECKS, NULL);
}

static void h_status_leader(lm_req *req, void *ctx)
{
    rg_server *srv = ctx;
    char body[128];
    int n = snprintf(body, sizeof body, "\"%s:%d\"", srv->st.node_address, lm_app_port(srv->app));
    set_index_header(req, rg_state_index(&srv->st));
    lm_resp_send(req, 200, "application/json", body, (size_t)n);
}

/* ---- writes ---------------------------------------------------------------------------- */

static void ok_empty(rg_server *srv, lm_req *req)
{
    set_index_header(req, rg_state_index(&srv->st));
    lm_resp_send(req, 200, NULL, "", 0);
}

static void h_register(lm_req *req, void *ctx)
{
    rg_server *srv = ctx;
    if (req->body_len == 0) {
        problem(srv, req, 400,
                "the registration body is empty (expected a JSON object with "
                "at least Name)");
        return;
    }
    json_error_t jerr;
    json_t *doc = json_loadb(req->body, req->body_len, JSON_REJECT_DUPLICATES, &jerr);
    if (!doc) {
        problem(srv, req, 400, "Request decode failed: malformed JSON at line %d, column %d: %s",
                jerr.line, jerr.column, jerr.text);
        return;
    }
    lm_consul_service def;
    char err[512];
    int rc = lm_consul_service_decode(doc, &def, err, sizeof err);
    json_decref(doc);
    if (rc != 0) {
        problem(srv, req, 400, "Invalid service registration: %s", err);
        return;
    }
    char id[LM_CONSUL_MAX_ID + 1], name[LM_CONSUL_MAX_ID + 1];
    snprintf(id, sizeof id, "%s", def.id);
    snprintf(name, sizeof name, "%s", def.name);
    bool existed = rg_state_service(&srv->st, id) != NULL;
    rc = rg_state_register(&srv->st, &def, rg_now(srv), err, sizeof err);
    if (rc < 0) {
        problem(srv, req, 400, "Invalid service registration: %s", err);
        return;
    }
    if (rc > 0) {
        lm_log_info("service %s (%s) %s", id, name, existed ? "re-registered" : "registered");
        rg_after_change(srv);
    }
    ok_empty(srv, req);
}

static void h_deregister(lm_req *req, void *ctx)
{
    rg_server *srv = ctx;
    const char *id = lm_req_param(req, "id");
    if (!rg_state_deregister(&srv->st, id)) {
        problem(srv, req, 404,
                "Unknown service ID \"%.200s\". Ensure that the service ID is "
                "passed, not the service name.",
                id);
        return;
    }
    lm_log_info("service %s deregistered", id);
    rg_after_change(srv);
    ok_empty(srv, req);
}

static void ttl_update(lm_req *req, rg_server *srv, lm_consul_status status)
{
    const char *id = lm_req_param(req, "id");
    const char *note = lm_req_query(req, "note");
    if (note && strlen(note) > LM_CONSUL_MAX_TEXT) {
        problem(srv, req, 400, "note is longer than %d bytes", LM_CONSUL_MAX_TEXT);
        return;
    }
    uint64_t before = rg_state_index(&srv->st);
    int rc = rg_state_ttl_update(&srv->st, id, status, note, rg_now(srv));
    if (rc == RG_UNKNOWN) {
        problem(srv, req, 404,
                "Unknown check ID \"%.200s\". Ensure that the check ID is "
                "passed, not the check name.",
                id);
        return;
    }
    if (rc == RG_NOT_TTL) {
        problem(srv, req, 400, "CheckID \"%.200s\" does not have associated TTL", id);
        return;
    }
    /* a pass that keeps the status moves its deadline later: the timer set for the old
     * deadline finds nothing due and re-arms, so only status changes need the full path */
    if (rg_state_index(&srv->st) != before) rg_after_change(srv);
    ok_empty(srv, req);
}

static void h_pass(lm_req *req, void *ctx)
{
    ttl_update(req, ctx, LM_CONSUL_PASSING);
}
static void h_warn(lm_req *req, void *ctx)
{
    ttl_update(req, ctx, LM_CONSUL_WARNING);
}
static void h_fail(lm_req *req, void *ctx)
{
    ttl_update(req, ctx, LM_CONSUL_CRITICAL);
}

void rg_api_routes(rg_server *srv, lm_router *r)
{
    lm_router_add(r, "PUT", "/v1/agent/service/register", h_register, srv);
    static const char *const both[] = {"PUT", "GET"};
    for (size_t i = 0; i < 2; i++) {
        lm_router_add(r, both[i], "/v1/agent/service/deregister/{id...}", h_deregister, srv);
        /* TTL heartbeats: plumbing, several a second; no server span each (would crowd
         * the trace store out) */
        lm_router_add_flags(r, both[i], "/v1/agent/check/pass/{id...}", h_pass, srv,
                            LM_ROUTE_UNTRACED);
        lm_router_add(r, both[i], "/v1/agent/check/warn/{id...}", h_warn, srv);
        lm_router_add(r, both[i], "/v1/agent/check/fail/{id...}", h_fail, srv);
    }
    lm_router_add(r, "GET", "/v1/health/service/{name...}", h_health_service, srv);
    lm_router_add(r, "GET", "/v1/catalog/services", h_catalog_services, srv);
    lm_router_add(r, "GET", "/v1/catalog/service/{name...}", h_catalog_service, srv);
    lm_router_add(r, "GET", "/v1/agent/services", h_agent_services, srv);
    lm_router_add(r, "GET", "/v1/agent/checks", h_agent_checks, srv);
    lm_router_add(r, "GET", "/v1/status/leader", h_status_leader, srv);
}
