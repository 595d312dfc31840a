/* app.c — process lifecycle around the server. See app.h. */
#include "app.h"

#include "client.h"
#include "metrics.h"
#include "log.h"
#include "problem.h"
#include "span.h"
#include "token.h"
#include "tracer.h"

#include <arpa/inet.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MAX_COMPONENTS 32

struct lm_app {
    char name[64];
    const char *openapi;
    size_t openapi_len;
    lm_server_config scfg;
    lm_component_env env;
    uint64_t shutdown_ms;
    lm_router *router;
    lm_metrics *metrics;
    lm_server *server;
    uv_loop_t loop;
    uv_signal_t sigint, sigterm;
    uv_async_t stop_async;
    lm_component comps[MAX_COMPONENTS]; /* in order of installation */
    size_t n_comps;
    uint64_t t0_ns;
    const lm_token_key *trace_key; /* borrowed: signs the span exporter's tokens */
};

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void handle_health(lm_req *req, void *ctx)
{
    (void)ctx;
    static const char body[] = "{\"status\":\"ok\"}";
    lm_resp_send(req, 200, "application/json", body, sizeof body - 1);
}

static void handle_ready(lm_req *req, void *ctx)
{
    lm_app *app = ctx;
    lm_buf body = LM_BUF_INIT, why = LM_BUF_INIT, failed = LM_BUF_INIT;
    bool ok = true;
    lm_buf_append_str(&body, "{\"status\":\"");
    size_t status_pos = body.len;
    lm_buf_append_str(&body, "ready\",\"checks\":{");
    bool first = true;
    for (size_t i = 0; i < app->n_comps; i++) {
        const lm_component *k = &app->comps[i];
        if (!k->ready) continue;
        lm_buf_reset(&why);
        bool c = k->ready(k->ctx, &why);
        if (!first) lm_buf_append_char(&body, ',');
        first = false;
        lm_buf_printf(&body, "\"%s\":\"", k->ready_name ? k->ready_name : "check");
        const char *msg = c ? "ok" : (why.len ? lm_buf_cstr(&why) : "failing");
        lm_buf_append_json_escaped(&body, msg, strlen(msg));
        lm_buf_append_char(&body, '"');
        if (!c) {
            ok = false;
            lm_buf_printf(&failed, "%s%s: %s", failed.len ? "; " : "",
                          k->ready_name ? k->ready_name : "check", msg);
        }
    }
    lm_buf_append_str(&body, "}}");
    if (ok) {
        lm_resp_send(req, 200, "application/json", body.data, body.len);
    } else {
        (void)status_pos;
        lm_resp_problemf(req, 503, "not ready: %s", lm_buf_cstr(&failed));
    }
    lm_buf_free(&body);
    lm_buf_free(&why);
    lm_buf_free(&failed);
}

static void handle_metrics(lm_req *req, void *ctx)
{
    lm_app *app = ctx;
    lm_buf out = LM_BUF_INIT;
    lm_metrics_render(app->metrics, &out);
    lm_resp_send(req, 200, "text/plain; version=0.0.4; charset=utf-8", out.data, out.len);
    lm_buf_free(&out);
}

static void handle_openapi(lm_req *req, void *ctx)
{
    lm_app *app = ctx;
    lm_resp_header(req, "Cache-Control", "public, max-age=300");
    lm_resp_send(req, 200, "application/json", app->openapi, app->openapi_len);
}

void lm_app_set_guard(lm_app *app, const char *prefix, lm_app_guard_fn fn, void *ctx)
{
    app->scfg.guard = fn;
    app->scfg.guard_ctx = ctx;
    app->scfg.guard_prefix = prefix;
}

void lm_app_add_openapi(lm_app *app, const char *doc, size_t len)
{
    app->openapi = doc;
    app->openapi_len = len;
    lm_router_add(app->router, "GET", "/openapi.json", handle_openapi, app);
}

lm_app *lm_app_new(lm_cfg *cfg, const char *name, int default_port)
{
    lm_app *app = lm_xcalloc(1, sizeof *app);
    app->t0_ns = mono_ns();
    snprintf(app->name, sizeof app->name, "%s", lm_cfg_str(cfg, "MODULE_NAME", name));
    lm_server_config *s = &app->scfg;
    lm_server_config_default(s);
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    s->port = (int)lm_cfg_int(cfg, "PORT", default_port, 0, 65535);
    s->host = lm_cfg_str(cfg, "BIND_ADDRESS", "127.0.0.1");
    unsigned char addr[sizeof(struct in6_addr)];
    if (inet_pton(AF_INET, s->host, addr) != 1 && inet_pton(AF_INET6, s->host, addr) != 1)
        lm_cfg_error(cfg, "BIND_ADDRESS",
                     "must be an IPv4 or IPv6 address such as 127.0.0.1, 0.0.0.0 or :: "
                     "(got \"%.64s\")",
                     s->host);
    s->workers = (int)lm_cfg_int(cfg, "WORKERS", cores > 0 ? cores : 1, 1, 256);
    s->access_log = lm_cfg_bool(cfg, "ACCESS_LOG", true);
    s->limits.max_body_bytes =
        lm_cfg_size(cfg, "MAX_BODY_BYTES", s->limits.max_body_bytes, 0, 1ULL << 30);
    s->limits.max_head_bytes =
        lm_cfg_size(cfg, "MAX_HEADER_BYTES", s->limits.max_head_bytes, 1024, 1 << 20);
    s->limits.max_uri_bytes =
        lm_cfg_size(cfg, "MAX_URI_BYTES", s->limits.max_uri_bytes, 256, 1 << 20);
    s->limits.max_headers = (size_t)lm_cfg_int(cfg, "MAX_HEADERS", 100, 1, 10000);
    s->max_connections = (size_t)lm_cfg_int(cfg, "MAX_CONNECTIONS", 10000, 1, 1000000);
    s->max_connections_per_address =
        (size_t)lm_cfg_int(cfg, "MAX_CONNECTIONS_PER_ADDRESS", 1024, 0, 1000000);
    s->header_timeout_ms = lm_cfg_duration_ms(cfg, "HEADER_TIMEOUT", 10000, 10, 3600000);
    s->body_timeout_ms = lm_cfg_duration_ms(cfg, "BODY_TIMEOUT", 30000, 10, 3600000);
    s->idle_timeout_ms = lm_cfg_duration_ms(cfg, "IDLE_TIMEOUT", 60000, 10, 3600000);
    s->write_timeout_ms = lm_cfg_duration_ms(cfg, "WRITE_TIMEOUT", 30000, 10, 3600000);
    app->shutdown_ms = lm_cfg_duration_ms(cfg, "SHUTDOWN_TIMEOUT", 10000, 0, 3600000);
    /* how long the HTTP clients (lm_client) reuse a resolved host name; 0: no cache */
    lm_client_set_default_dns_ttl(lm_cfg_duration_ms(cfg, "CLIENT_DNS_TTL_MS", 30000, 0, 3600000));
    static const char *const levels[] = {"debug", "info", "warn", "error", NULL};
    int level = lm_cfg_enum(cfg, "LOG_LEVEL", "info", levels);
    lm_log_init(app->name, (lm_log_level)level);
    lm_tracer_configure(cfg, app->name);

    app->router = lm_router_new();
    lm_router_add(app->router, "GET", "/health", handle_health, app);
    lm_router_add(app->router, "GET", "/ready", handle_ready, app);
    lm_router_add_flags(app->router, "GET", "/metrics", handle_metrics, app, LM_ROUTE_UNTRACED);
    uv_loop_init(&app->loop);
    app->env = (lm_component_env){
        .name = app->name, .host = s->host, .workers = s->workers, .control = &app->loop};
    return app;
}

void lm_app_free(lm_app *app)
{
    if (!app) return;
    lm_server_free(app->server);
    lm_metrics_free(app->metrics);
    lm_router_free(app->router);
    uv_loop_close(&app->loop);
    free(app);
}

const char *lm_app_name(const lm_app *app)
{
    return app->name;
}
lm_router *lm_app_router(lm_app *app)
{
    return app->router;
}
uv_loop_t *lm_app_loop(lm_app *app)
{
    return &app->loop;
}
lm_server_config *lm_app_server_config(lm_app *app)
{
    return &app->scfg;
}
int lm_app_port(const lm_app *app)
{
    return app->server ? lm_server_port(app->server) : 0;
}

void lm_app_add(lm_app *app, const lm_component *c)
{
    if (app->n_comps == MAX_COMPONENTS) abort(); /* a programming error, found at once */
    app->comps[app->n_comps++] = *c;
}

const lm_component_env *lm_app_env(lm_app *app)
{
    app->env.host = app->scfg.host; /* the server configuration may have been adjusted */
    app->env.workers = app->scfg.workers;
    return &app->env;
}

/* The control-loop phases run in order of installation. */
static void run_started(lm_app *app, int port)
{
    for (size_t i = 0; i < app->n_comps; i++)
        if (app->comps[i].started) app->comps[i].started(app->comps[i].ctx, port);
}

static void run_stopping(lm_app *app)
{
    for (size_t i = 0; i < app->n_comps; i++)
        if (app->comps[i].stopping) app->comps[i].stopping(app->comps[i].ctx);
}

static void run_stopped(lm_app *app)
{
    for (size_t i = 0; i < app->n_comps; i++)
        if (app->comps[i].stopped) app->comps[i].stopped(app->comps[i].ctx);
}

static void render_component_metrics(lm_buf *out, void *ctx)
{
    lm_app *app = ctx;
    for (size_t i = 0; i < app->n_comps; i++)
        if (app->comps[i].metrics) app->comps[i].metrics(out, app->comps[i].ctx);
}

static void begin_stop(lm_app *app)
{
    lm_log_info("stopping: deregistering, draining connections (deadline %llums)",
                (unsigned long long)app->shutdown_ms);
    uv_signal_stop(&app->sigint);
    uv_signal_stop(&app->sigterm);
    uv_close((uv_handle_t *)&app->sigint, NULL);
    uv_close((uv_handle_t *)&app->sigterm, NULL);
    uv_close((uv_handle_t *)&app->stop_async, NULL);
    run_stopping(app);
}

static void on_signal(uv_signal_t *h, int signum)
{
    lm_app *app = h->data;
    lm_log_info("received %s", signum == SIGINT ? "SIGINT" : "SIGTERM");
    begin_stop(app);
}

static void on_stop_async(uv_async_t *a)
{
    begin_stop(a->data);
}

void lm_app_stop(lm_app *app)
{
    uv_async_send(&app->stop_async);
}

static void worker_start(lm_worker *w, void *ctx)
{
    lm_app *app = ctx;
    for (size_t i = 0; i < app->n_comps; i++)
        if (app->comps[i].worker_start) app->comps[i].worker_start(w, app->comps[i].ctx);
}

/* in reverse order of registration, like destructors */
static void worker_stop(lm_worker *w, void *ctx)
{
    lm_app *app = ctx;
    for (size_t i = app->n_comps; i-- > 0;)
        if (app->comps[i].worker_stop) app->comps[i].worker_stop(w, app->comps[i].ctx);
}

/* The server's traffic, into the metrics (lm_server_observer). */
static lm_metrics_method metrics_method(int method_id)
{
    switch (method_id) {
    case LM_METHOD_GET:
        return LM_METRICS_GET;
    case LM_METHOD_HEAD:
        return LM_METRICS_HEAD;
    case LM_METHOD_POST:
        return LM_METRICS_POST;
    case LM_METHOD_PUT:
        return LM_METRICS_PUT;
    case LM_METHOD_PATCH:
        return LM_METRICS_PATCH;
    case LM_METHOD_DELETE:
        return LM_METRICS_DELETE;
    case LM_METHOD_OPTIONS:
        return LM_METRICS_OPTIONS;
    default:
        return LM_METRICS_OTHER;
    }
}

static void observe_started(void *ctx, int worker, lm_req *req)
{
    lm_app *app = ctx;
    lm_metrics_inflight(app->metrics, worker, 1);
    lm_tracer_sample(&req->trace); /* the sampled flag every outbound call passes on */
}

/* The server span of a request (OpenTelemetry HTTP semantic conventions). */
static void server_span(const lm_req *req, int status, double seconds)
{
    lm_span sp;
    char name[LM_SPAN_NAME];
    const char *route = req->route.template_path;
    snprintf(name, sizeof name, "%s%s%s", req->method, route ? " " : "", route ? route : "");
    uint64_t start = lm_span_unix_from_mono(req->start_ns);
    lm_span_init(&sp, &req->trace, LM_SPAN_SERVER, name, start);
    sp.end_unix_ns = start + (uint64_t)(seconds * 1e9);
    lm_span_attr_cstr(&sp, "http.request.method", req->method);
    if (route) lm_span_attr_cstr(&sp, "http.route", route);
    lm_span_attr_str(&sp, "url.path", req->path, req->path_len);
    lm_span_attr_cstr(&sp, "url.scheme", "http");
    lm_span_attr_int(&sp, "http.response.status_code", status);
    const char *host = lm_req_header(req, "host");
    if (host) lm_span_attr_str(&sp, "server.address", host, strcspn(host, ":"));
    char peer[64];
    lm_req_peer_ip(req, peer, sizeof peer);
    if (peer[0]) lm_span_attr_cstr(&sp, "client.address", peer);
    lm_span_attr_cstr(&sp, "network.protocol.version", req->http_minor ? "1.1" : "1.0");
    if (req->request_id[0])
        lm_span_attr_cstr(&sp, "http.request.header.x-request-id", req->request_id);
    if (status >= 500) {
        sp.status = LM_SPAN_ERROR;
        char code[16];
        snprintf(code, sizeof code, "%d", status);
        lm_span_attr_cstr(&sp, "error.type", code);
    }
    lm_tracer_submit(&sp);
}

/* The client span of an outbound call (lm_client's call observer). */
static void client_span(const lm_client_call *call, void *ctx)
{
    (void)ctx;
    if (!(call->span->flags & 1)) return;
    lm_span sp;
    uint64_t start = lm_span_unix_from_mono(call->start_ns);
    lm_span_init(&sp, call->span, LM_SPAN_CLIENT, call->method, start);
    sp.end_unix_ns = lm_span_unix_from_mono(call->end_ns);
    lm_span_attr_cstr(&sp, "http.request.method", call->method);
    lm_span_attr_cstr(&sp, "server.address", call->host);
    lm_span_attr_int(&sp, "server.port", call->port);
    char url[600];
    snprintf(url, sizeof url, strchr(call->host, ':') ? "http://[%s]:%d%s" : "http://%s:%d%s",
             call->host, call->port, call->path);
    lm_span_attr_cstr(&sp, "url.full", url);
    if (call->status) lm_span_attr_int(&sp, "http.response.status_code", call->status);
    if (call->err != LM_CLIENT_OK) {
        sp.status = LM_SPAN_ERROR;
        lm_span_attr_cstr(&sp, "error.type", lm_client_strerror(call->err));
    } else if (call->status >= 500) {
        sp.status = LM_SPAN_ERROR;
        char code[16];
        snprintf(code, sizeof code, "%d", call->status);
        lm_span_attr_cstr(&sp, "error.type", code);
    }
    lm_tracer_submit(&sp);
}

static void observe_done(void *ctx, int worker, const lm_req *req, int status, double seconds,
                         bool dispatched)
{
    lm_app *app = ctx;
    if (dispatched) lm_metrics_inflight(app->metrics, worker, -1);
    if (dispatched && (req->trace.flags & 1) && !(req->route.flags & LM_ROUTE_UNTRACED) &&
        lm_tracer_recording())
        server_span(req, status, seconds);
    lm_metrics_observe(app->metrics, worker,
                       req->route.route_id >= 0 && dispatched ? req->route.route_id : -1,
                       metrics_method(req->method_id), status, seconds);
}

static void observe_connection(void *ctx, int worker, int delta)
{
    lm_app *app = ctx;
    lm_metrics_connections(app->metrics, worker, delta);
}

int lm_app_run(lm_app *app)
{
    signal(SIGPIPE, SIG_IGN);
    size_t n_routes = lm_router_count(app->router);
    const char **route_names = lm_xcalloc(n_routes ? n_routes : 1, sizeof *route_names);
    for (size_t i = 0; i < n_routes; i++)
        route_names[i] = lm_router_template(app->router, (int)i);
    app->metrics = lm_metrics_new(app->scfg.workers, route_names, n_routes);
    free(route_names);
    lm_metrics_add_renderer(app->metrics, render_component_metrics, app);
    lm_metrics_add_renderer(app->metrics, lm_tracer_render_metrics, NULL);
    int trc = lm_tracer_start();
    if (trc != 0) lm_log_error("the span export thread did not start: %s", strerror(-trc));
    if (lm_tracer_recording()) lm_client_set_call_observer(client_span, NULL);
    lm_server_observer obs = {.ctx = app,
                              .request_started = observe_started,
                              .request_done = observe_done,
                              .connection = observe_connection};
    app->server = lm_server_new(&app->scfg, app->router, &obs);
    lm_server_on_worker(app->server, worker_start, worker_stop, app);

    uv_signal_init(&app->loop, &app->sigint);
    uv_signal_init(&app->loop, &app->sigterm);
    app->sigint.data = app->sigterm.data = app;
    uv_signal_start(&app->sigint, on_signal, SIGINT);
    uv_signal_start(&app->sigterm, on_signal, SIGTERM);
    uv_async_init(&app->loop, &app->stop_async, on_stop_async);
    app->stop_async.data = app;

    char err[256];
    if (lm_server_start(app->server, err, sizeof err) != 0) {
        fprintf(stderr, "%s: %s\n", app->name, err);
        lm_tracer_shutdown(0);
        run_stopped(app); /* release what the components set up (stores, registry) */
        uv_close((uv_handle_t *)&app->sigint, NULL);
        uv_close((uv_handle_t *)&app->sigterm, NULL);
        uv_close((uv_handle_t *)&app->stop_async, NULL);
        uv_run(&app->loop, UV_RUN_DEFAULT);
        return 1;
    }
    lm_log_info("listening on %s:%d with %d workers, ready in %.1f ms", app->scfg.host,
                lm_server_port(app->server), app->scfg.workers,
                (double)(mono_ns() - app->t0_ns) / 1e6);
    run_started(app, lm_server_port(app->server));
    uv_run(&app->loop, UV_RUN_DEFAULT); /* until a signal, and the stopping hooks, are done */
    lm_server_shutdown(app->server, app->shutdown_ms);
    lm_tracer_shutdown(2000); /* every span is queued; before the components free the key */
    run_stopped(app);
    uv_run(&app->loop, UV_RUN_DEFAULT); /* let stopped hooks close what they opened */
    lm_log_info("stopped");
    return 0;
}

/* The exporter's Authorization: a fresh service token (iss this process, aud gateway, scope
 * write) per export, minted on the export thread and not kept. */
static bool trace_auth_header(void *ctx, char *name, size_t name_len, char *value, size_t value_len)
{
    lm_app *app = ctx;
    lm_token_claims c = {0};
    snprintf(c.iss, sizeof c.iss, "%s", app->name);
    snprintf(c.aud, sizeof c.aud, "gateway");
    snprintf(c.sub, sizeof c.sub, "%s", app->name);
    snprintf(c.scope, sizeof c.scope, "write");
    c.iat = (long long)time(NULL);
    c.exp = c.iat + 120;
    char *t = lm_token_mint(app->trace_key, &c);
    if (!t) return false;
    snprintf(name, name_len, "Authorization");
    int n = snprintf(value, value_len, "Bearer %s", t);
    free(t);
    return n > 0 && (size_t)n < value_len;
}

void lm_app_trace_auth(lm_app *app, const lm_token_key *key)
{
    if (!key || !key->sign_key) return;
    app->trace_key = key;
    lm_tracer_set_header_fn(trace_auth_header, app);
}
