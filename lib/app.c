/* app.c — process lifecycle around the server. See app.h. */
#include "app.h"

#include "client.h"
#include "log.h"
#include "problem.h"

#include <arpa/inet.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MAX_HOOKS 16

typedef struct ready_check {
    const char *name;
    lm_ready_check fn;
    void *ctx;
} ready_check;

typedef struct app_hook {
    lm_app_hook fn;
    void *ctx;
} app_hook;

typedef struct hook_list {
    app_hook items[MAX_HOOKS];
    size_t n;
} hook_list;

struct lm_app {
    char name[64];
    const char *openapi;
    size_t openapi_len;
    lm_server_config scfg;
    uint64_t shutdown_ms;
    lm_router *router;
    lm_metrics *metrics;
    lm_server *server;
    uv_loop_t loop;
    uv_signal_t sigint, sigterm;
    uv_async_t stop_async;
    ready_check checks[MAX_HOOKS];
    size_t n_checks;
    struct {
        lm_metrics_renderer fn;
        void *ctx;
    } renderers[MAX_HOOKS];
    size_t n_renderers;
    struct {
        lm_worker_hook start, stop;
        void *ctx;
    } worker_hooks[MAX_HOOKS];
    size_t n_worker_hooks;
    hook_list started, stopping, stopped;
    uint64_t t0_ns;
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
    for (size_t i = 0; i < app->n_checks; i++) {
        lm_buf_reset(&why);
        bool c = app->checks[i].fn(app->checks[i].ctx, &why);
        if (i) lm_buf_append_char(&body, ',');
        lm_buf_printf(&body, "\"%s\":\"", app->checks[i].name);
        const char *msg = c ? "ok" : (why.len ? lm_buf_cstr(&why) : "failing");
        lm_buf_append_json_escaped(&body, msg, strlen(msg));
        lm_buf_append_char(&body, '"');
        if (!c) {
            ok = false;
            lm_buf_printf(&failed, "%s%s: %s", failed.len ? "; " : "", app->checks[i].name, msg);
        }
    }
    lm_buf_append_str(&body, "}}");
    if (ok) {
        lm_resp_send(req, 200, "application/json", body.data, body.len);
    } else {
        (void)status_pos;
        lm_problem_sendf(req, 503, "not ready: %s", lm_buf_cstr(&failed));
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

void lm_app_set_guard(lm_app *app, const char *prefix, lm_guard_fn fn, void *ctx)
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

    app->router = lm_router_new();
    lm_router_add(app->router, "GET", "/health", handle_health, app);
    lm_router_add(app->router, "GET", "/ready", handle_ready, app);
    lm_router_add(app->router, "GET", "/metrics", handle_metrics, app);
    uv_loop_init(&app->loop);
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

void lm_app_add_ready_check(lm_app *app, const char *name, lm_ready_check fn, void *ctx)
{
    if (app->n_checks < MAX_HOOKS) app->checks[app->n_checks++] = (ready_check){name, fn, ctx};
}

void lm_app_add_metrics(lm_app *app, lm_metrics_renderer fn, void *ctx)
{
    if (app->n_renderers < MAX_HOOKS) {
        app->renderers[app->n_renderers].fn = fn;
        app->renderers[app->n_renderers++].ctx = ctx;
    }
}

void lm_app_on_worker(lm_app *app, lm_worker_hook start, lm_worker_hook stop, void *ctx)
{
    if (app->n_worker_hooks == MAX_HOOKS) abort(); /* a programming error, found at once */
    app->worker_hooks[app->n_worker_hooks].start = start;
    app->worker_hooks[app->n_worker_hooks].stop = stop;
    app->worker_hooks[app->n_worker_hooks++].ctx = ctx;
}

static void add_hook(hook_list *l, lm_app_hook fn, void *ctx)
{
    if (l->n < MAX_HOOKS) l->items[l->n++] = (app_hook){fn, ctx};
}

void lm_app_on_started(lm_app *app, lm_app_hook fn, void *ctx)
{
    add_hook(&app->started, fn, ctx);
}
void lm_app_on_stopping(lm_app *app, lm_app_hook fn, void *ctx)
{
    add_hook(&app->stopping, fn, ctx);
}
void lm_app_on_stopped(lm_app *app, lm_app_hook fn, void *ctx)
{
    add_hook(&app->stopped, fn, ctx);
}

static void run_hooks(lm_app *app, hook_list *l)
{
    for (size_t i = 0; i < l->n; i++)
        l->items[i].fn(app, l->items[i].ctx);
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
    run_hooks(app, &app->stopping);
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
    for (size_t i = 0; i < app->n_worker_hooks; i++)
        if (app->worker_hooks[i].start) app->worker_hooks[i].start(w, app->worker_hooks[i].ctx);
}

/* in reverse order of registration, like destructors */
static void worker_stop(lm_worker *w, void *ctx)
{
    lm_app *app = ctx;
    for (size_t i = app->n_worker_hooks; i-- > 0;)
        if (app->worker_hooks[i].stop) app->worker_hooks[i].stop(w, app->worker_hooks[i].ctx);
}

int lm_app_run(lm_app *app)
{
    signal(SIGPIPE, SIG_IGN);
    app->metrics = lm_metrics_new(app->scfg.workers, app->router);
    for (size_t i = 0; i < app->n_renderers; i++)
        lm_metrics_add_renderer(app->metrics, app->renderers[i].fn, app->renderers[i].ctx);
    app->server = lm_server_new(&app->scfg, app->router, app->metrics);
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
        run_hooks(app, &app->stopped); /* release what the modules set up (stores, registry) */
        uv_close((uv_handle_t *)&app->sigint, NULL);
        uv_close((uv_handle_t *)&app->sigterm, NULL);
        uv_close((uv_handle_t *)&app->stop_async, NULL);
        uv_run(&app->loop, UV_RUN_DEFAULT);
        return 1;
    }
    lm_log_info("listening on %s:%d with %d workers, ready in %.1f ms", app->scfg.host,
                lm_server_port(app->server), app->scfg.workers,
                (double)(mono_ns() - app->t0_ns) / 1e6);
    run_hooks(app, &app->started);
    uv_run(&app->loop, UV_RUN_DEFAULT); /* until a signal, and the stopping hooks, are done */
    lm_server_shutdown(app->server, app->shutdown_ms);
    run_hooks(app, &app->stopped);
    uv_run(&app->loop, UV_RUN_DEFAULT); /* let stopped hooks close what they opened */
    lm_log_info("stopped");
    return 0;
}
