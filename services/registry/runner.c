/* runner.c — what keeps the registry's catalog true over time (rg_server): the timer for
 * TTL expiry and deregister-after-critical, the HTTP probes of HTTP checks, coalesced
 * atomic snapshots, the metrics, and the lifecycle on the one worker loop that owns the
 * state. See registry_server.h for the threading model. */
#include "registry_server.h"

#include "log.h"
#include "url.h"
#include "status.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#define SNAP_MIN_GAP_MS       100 /* at most ten snapshot writes a second */
#define SWEEP_MS              1000
#define PROBE_OUTPUT_MAX      4096  /* as Consul: the first 4 KiB of a probe's body */
#define PROBE_DEFAULT_MS      10000 /* Consul's default HTTP check timeout */
#define PROBE_MIN_INTERVAL_MS 10

int64_t rg_now(const rg_server *srv)
{
    return (int64_t)uv_now(srv->loop);
}

/* ---- HTTP probes ----------------------------------------------------------------------- */

typedef struct probe {
    rg_server *srv;
    rg_check *check; /* NULL once the check is gone */
    uv_timer_t *timer;
    lm_client_req *inflight;
    int status;
    lm_buf body;
} probe;

static void probe_free_maybe(probe *p)
{
    if (p->timer || p->inflight) return;
    lm_buf_free(&p->body);
    free(p);
}

static void on_probe_timer_closed(uv_handle_t *h)
{
    probe *p = h->data;
    free(h);
    p->timer = NULL;
    probe_free_maybe(p);
}

static void probe_head(lm_client_req *r, const lm_client_response *resp, void *ud)
{
    (void)r;
    probe *p = ud;
    p->status = resp->status;
}

static void probe_body(lm_client_req *r, const char *data, size_t len, void *ud)
{
    (void)r;
    probe *p = ud;
    if (p->body.len < PROBE_OUTPUT_MAX) {
        size_t room = PROBE_OUTPUT_MAX - p->body.len;
        lm_buf_append(&p->body, data, len < room ? len : room);
    }
}

static void probe_done(lm_client_req *r, lm_client_err err, const lm_client_response *resp,
                       void *ud)
{
    (void)r;
    (void)resp;
    probe *p = ud;
    p->inflight = NULL;
    rg_check *c = p->check;
    if (!c || err == LM_CLIENT_ERR_CANCELLED) {
        probe_free_maybe(p);
        return;
    }
    rg_server *srv = p->srv;
    lm_consul_status status;
    lm_buf out = LM_BUF_INIT;
    lm_buf_printf(&out, "HTTP %s %s: ", c->def.method, c->def.http);
    if (err != LM_CLIENT_OK) {
        status = LM_CONSUL_CRITICAL;
        lm_buf_append_str(&out, lm_client_strerror(err));
        atomic_fetch_add_explicit(&srv->m_probes_fail, 1, memory_order_relaxed);
    } else {
        /* Consul's rule: 2xx passing, 429 Too Many Requests warning, anything else critical */
        status = p->status >= 200 && p->status < 300 ? LM_CONSUL_PASSING
                 : p->status == 429                  ? LM_CONSUL_WARNING
                                                     : LM_CONSUL_CRITICAL;
        lm_buf_printf(&out, "%d %s Output: ", p->status, lm_status_reason(p->status));
        lm_buf_append(&out, p->body.data, p->body.len);
        atomic_fetch_add_explicit(status == LM_CONSUL_PASSING ? &srv->m_probes_ok
                                                              : &srv->m_probes_fail,
                                  1, memory_order_relaxed);
    }
    uint64_t before = rg_state_index(&srv->st);
    rg_state_check_result(&srv->st, c, status, lm_buf_cstr(&out), rg_now(srv));
    lm_buf_free(&out);
    if (rg_state_index(&srv->st) != before) {
        lm_log_info("check %s of service %s is now %s", c->def.id, c->svc->def.id,
                    lm_consul_status_name(status));
        rg_after_change(srv);
    }
}

static void on_probe_timer(uv_timer_t *t)
{
    probe *p = t->data;
    rg_check *c = p->check;
    if (!c || p->inflight || p->srv->stopping) return; /* the previous probe is still out */
    lm_url u;
    char err[256];
    if (lm_url_parse(c->def.http, &u, err, sizeof err) != 0) return; /* validated */
    lm_header hdrs[LM_CONSUL_MAX_HEADERS + 2];
    size_t n = 0;
    bool ua = false, accept = false;
    for (size_t i = 0; i < c->def.n_headers; i++) {
        hdrs[n++] = (lm_header){.name = c->def.headers[i].name, .value = c->def.headers[i].value};
        ua |= strcasecmp(c->def.headers[i].name, "user-agent") == 0;
        accept |= strcasecmp(c->def.headers[i].name, "accept") == 0;
    }
    if (!ua) hdrs[n++] = (lm_header){.name = "User-Agent", .value = "Consul Health Check"};
    if (!accept) hdrs[n++] = (lm_header){.name = "Accept", .value = "text/plain, text/*, */*"};
    uint64_t timeout = c->def.timeout_ms ? c->def.timeout_ms : PROBE_DEFAULT_MS;
    p->status = 0;
    lm_buf_reset(&p->body);
    lm_client_opts o = {
        .method = c->def.method,
        .host = u.host,
        .port = u.port,
        .path = u.path[0] ? u.path : "/",
        .headers = hdrs,
        .n_headers = n,
        .connect_timeout_ms = timeout,
        .queue_timeout_ms = timeout,
        .response_timeout_ms = timeout,
        .on_head = probe_head,
        .on_body = probe_body,
        .on_done = probe_done,
        .ud = p,
    };
    p->inflight = lm_client_send(p->srv->client, &o);
}

static void check_added(rg_check *c, void *ctx)
{
    rg_server *srv = ctx;
    if (c->def.type != LM_CONSUL_CHECK_HTTP || !srv->running) return;
    probe *p = lm_xcalloc(1, sizeof *p);
    p->srv = srv;
    p->check = c;
    p->timer = lm_xmalloc(sizeof *p->timer);
    uv_timer_init(srv->loop, p->timer);
    p->timer->data = p;
    uint64_t every =
        c->def.interval_ms < PROBE_MIN_INTERVAL_MS ? PROBE_MIN_INTERVAL_MS : c->def.interval_ms;
    uv_timer_start(p->timer, on_probe_timer, 0, every); /* the first probe at once */
    c->io = p;
}

static void check_removed(rg_check *c, void *ctx)
{
    (void)ctx;
    probe *p = c->io;
    if (!p) return;
    c->io = NULL;
    p->check = NULL;
    if (p->inflight) lm_client_cancel(p->inflight); /* probe_done runs now and frees nothing */
    uv_close((uv_handle_t *)p->timer, on_probe_timer_closed);
}

/* ---- snapshots ------------------------------------------------------------------------- */

static void snapshot_now(rg_server *srv)
{
    if (!srv->snapshot_path || !srv->st.dirty) return;
    char err[512];
    if (rg_snap_write(&srv->st, srv->snapshot_path, err, sizeof err) != 0) {
        atomic_fetch_add_explicit(&srv->m_snap_errors, 1, memory_order_relaxed);
        if (!srv->snap_failing) lm_log_error("registry snapshot not written: %s", err);
        srv->snap_failing = true;
        return; /* stays dirty: the next change tries again */
    }
    if (srv->snap_failing) lm_log_info("registry snapshot written again: %s", srv->snapshot_path);
    srv->snap_failing = false;
    srv->st.dirty = false;
    atomic_fetch_add_explicit(&srv->m_snap_writes, 1, memory_order_relaxed);
}

static void on_snap_timer(uv_timer_t *t)
{
    rg_server *srv = t->data;
    snapshot_now(srv);
    srv->last_snap_ms = uv_now(srv->loop);
}

static void schedule_snapshot(rg_server *srv)
{
    if (!srv->snapshot_path || !srv->st.dirty || uv_is_active((uv_handle_t *)&srv->snap_timer))
        return;
    uint64_t now = uv_now(srv->loop), due = srv->last_snap_ms + SNAP_MIN_GAP_MS;
    uv_timer_start(&srv->snap_timer, on_snap_timer, due > now ? due - now : 0, 0);
}

/* ---- changes, timers ------------------------------------------------------------------- */

static void update_gauges(rg_server *srv)
{
    rg_state *st = &srv->st;
    atomic_store_explicit(&srv->m_services, st->n_svcs, memory_order_relaxed);
    atomic_store_explicit(&srv->m_passing, rg_state_count_checks(st, LM_CONSUL_PASSING),
                          memory_order_relaxed);
    atomic_store_explicit(&srv->m_warning, rg_state_count_checks(st, LM_CONSUL_WARNING),
                          memory_order_relaxed);
    atomic_store_explicit(&srv->m_critical, rg_state_count_checks(st, LM_CONSUL_CRITICAL),
                          memory_order_relaxed);
    atomic_store_explicit(&srv->m_index, st->index, memory_order_relaxed);
    atomic_store_explicit(&srv->m_ttl_expired, st->ttl_expired, memory_order_relaxed);
    atomic_store_explicit(&srv->m_reaped, st->reaped, memory_order_relaxed);
}

static void on_tick(uv_timer_t *t)
{
    rg_after_change(t->data);
}

void rg_after_change(rg_server *srv)
{
    if (!srv->running) return;
    int64_t now = rg_now(srv);
    int64_t next = rg_state_tick(&srv->st, now); /* may expire or remove more */
    if (next == INT64_MAX)
        uv_timer_stop(&srv->tick_timer);
    else
        uv_timer_start(&srv->tick_timer, on_tick, next > now ? (uint64_t)(next - now) : 0, 0);
    if (srv->st.index != srv->notified_index) {
        srv->notified_index = srv->st.index;
        rg_api_wake(srv, false);
    }
    schedule_snapshot(srv);
    update_gauges(srv);
}

static void on_sweep(uv_timer_t *t)
{
    rg_api_sweep(t->data);
}

static void on_flush(uv_async_t *a)
{
    rg_server *srv = a->data;
    rg_api_wake(srv, true); /* stopping: every parked query answers now */
}

/* ---- lifecycle ------------------------------------------------------------------------- */

static void worker_start(lm_worker *w, void *ctx)
{
    rg_server *srv = ctx;
    srv->loop = lm_worker_loop(w);
    lm_client_config cc;
    lm_client_config_default(&cc);
    cc.max_conns_per_origin = 4; /* a probe at a time per check; few checks per origin */
    srv->client = lm_client_new(srv->loop, &cc);
    uv_timer_init(srv->loop, &srv->tick_timer);
    uv_timer_init(srv->loop, &srv->snap_timer);
    uv_timer_init(srv->loop, &srv->sweep_timer);
    srv->tick_timer.data = srv->snap_timer.data = srv->sweep_timer.data = srv;
    uv_async_init(srv->loop, &srv->flush_async, on_flush);
    srv->flush_async.data = srv;
    uv_timer_start(&srv->sweep_timer, on_sweep, SWEEP_MS, SWEEP_MS);
    uv_unref((uv_handle_t *)&srv->sweep_timer);
    srv->running = true;
    srv->notified_index = srv->st.index;
    rg_hooks h = {check_added, check_removed, srv};
    rg_state_set_hooks(&srv->st, &h);
    for (size_t i = 0; i < srv->st.n_svcs; i++) /* probes for checks loaded from a snapshot */
        for (size_t j = 0; j < srv->st.svcs[i]->n_checks; j++)
            check_added(srv->st.svcs[i]->checks[j], srv);
    rg_after_change(srv);
}

static void worker_stop(lm_worker *w, void *ctx)
{
    (void)w;
    rg_server *srv = ctx;
    rg_api_wake(srv, true);
    for (size_t i = 0; i < srv->st.n_svcs; i++)
        for (size_t j = 0; j < srv->st.svcs[i]->n_checks; j++)
            check_removed(srv->st.svcs[i]->checks[j], srv);
    rg_hooks none = {0};
    rg_state_set_hooks(&srv->st, &none);
    srv->running = false;
    lm_client_close(srv->client, NULL, NULL);
    srv->client = NULL;
    uv_close((uv_handle_t *)&srv->tick_timer, NULL);
    uv_close((uv_handle_t *)&srv->snap_timer, NULL);
    uv_close((uv_handle_t *)&srv->sweep_timer, NULL);
    uv_close((uv_handle_t *)&srv->flush_async, NULL);
}

static void on_stopping(void *ctx)
{
    rg_server *srv = ctx;
    atomic_store(&srv->stopping, true);
    uv_async_send(&srv->flush_async);
}

static void on_stopped(void *ctx)
{
    rg_server *srv = ctx;
    snapshot_now(srv); /* the worker has ended: main owns the state again */
}

static void render_metrics(lm_buf *out, void *ctx)
{
    rg_server *srv = ctx;
#define LD(x) ((unsigned long long)atomic_load_explicit(&srv->x, memory_order_relaxed))
    lm_buf_printf(
        out,
        "# HELP lotmesh_registry_services Registered service instances.\n"
        "# TYPE lotmesh_registry_services gauge\n"
        "lotmesh_registry_services %llu\n"
        "# HELP lotmesh_registry_checks Health checks by status.\n"
        "# TYPE lotmesh_registry_checks gauge\n"
        "lotmesh_registry_checks{status=\"passing\"} %llu\n"
        "lotmesh_registry_checks{status=\"warning\"} %llu\n"
        "lotmesh_registry_checks{status=\"critical\"} %llu\n"
        "# HELP lotmesh_registry_index The catalog's change index (X-Consul-Index).\n"
        "# TYPE lotmesh_registry_index gauge\n"
        "lotmesh_registry_index %llu\n"
        "# HELP lotmesh_registry_blocking_queries Blocking queries parked now.\n"
        "# TYPE lotmesh_registry_blocking_queries gauge\n"
        "lotmesh_registry_blocking_queries %llu\n"
        "# HELP lotmesh_registry_http_probes_total HTTP check probes by result.\n"
        "# TYPE lotmesh_registry_http_probes_total counter\n"
        "lotmesh_registry_http_probes_total{result=\"passing\"} %llu\n"
        "lotmesh_registry_http_probes_total{result=\"failing\"} %llu\n"
        "# HELP lotmesh_registry_ttl_expired_total TTL checks that went critical.\n"
        "# TYPE lotmesh_registry_ttl_expired_total counter\n"
        "lotmesh_registry_ttl_expired_total %llu\n"
        "# HELP lotmesh_registry_deregistered_critical_total Services removed after being "
        "critical for their DeregisterCriticalServiceAfter.\n"
        "# TYPE lotmesh_registry_deregistered_critical_total counter\n"
        "lotmesh_registry_deregistered_critical_total %llu\n"
        "# HELP lotmesh_registry_snapshot_writes_total Snapshot files written.\n"
        "# TYPE lotmesh_registry_snapshot_writes_total counter\n"
        "lotmesh_registry_snapshot_writes_total %llu\n"
        "# HELP lotmesh_registry_snapshot_errors_total Snapshot writes that failed.\n"
        "# TYPE lotmesh_registry_snapshot_errors_total counter\n"
        "lotmesh_registry_snapshot_errors_total %llu\n",
        LD(m_services), LD(m_passing), LD(m_warning), LD(m_critical), LD(m_index), LD(m_waiters),
        LD(m_probes_ok), LD(m_probes_fail), LD(m_ttl_expired), LD(m_reaped), LD(m_snap_writes),
        LD(m_snap_errors));
#undef LD
}

static void load_snapshot(rg_server *srv)
{
    char err[600];
    /* the loop's clock is not running yet: clocks restart when the worker starts (below) */
    int rc = rg_snap_load(&srv->st, srv->snapshot_path, 0, err, sizeof err);
    if (rc > 0) {
        lm_log_info("registry snapshot loaded: %zu services, index %llu (%s)", srv->st.n_svcs,
                    (unsigned long long)srv->st.index, srv->snapshot_path);
    } else if (rc < 0) {
        /* The catalog is soft state (every instance re-registers within its TTL): keep the
         * bad file for inspection and start empty rather than refuse to serve. */
        char aside[4200];
        snprintf(aside, sizeof aside, "%s.corrupt-%lld", srv->snapshot_path, (long long)time(NULL));
        rename(srv->snapshot_path, aside);
        lm_log_error("registry snapshot unusable, moved to %s; starting empty: %s", aside, err);
    }
}

/* Loaded checks' clocks are relative to 0; move them to the worker loop's clock. */
static void rebase_clocks(rg_server *srv)
{
    int64_t now = rg_now(srv);
    for (size_t i = 0; i < srv->st.n_svcs; i++)
        for (size_t j = 0; j < srv->st.svcs[i]->n_checks; j++) {
            rg_check *c = srv->st.svcs[i]->checks[j];
            c->ttl_deadline = now + (int64_t)c->def.ttl_ms;
            if (c->critical_since >= 0) c->critical_since = now;
        }
}

static void worker_start_outer(lm_worker *w, void *ctx)
{
    rg_server *srv = ctx;
    srv->loop = lm_worker_loop(w);
    rebase_clocks(srv);
    worker_start(w, ctx);
}

rg_server *rg_server_new(lm_app *app, const char *snapshot_path)
{
    rg_server *srv = lm_xcalloc(1, sizeof *srv);
    srv->app = app;
    lm_server_config *sc = lm_app_server_config(app);
    if (sc->workers != 1 && getenv("WORKERS"))
        lm_log_info("registry: WORKERS=%d ignored: the catalog is owned by one event loop",
                    sc->workers);
    sc->workers = 1;
    char host[128] = "lotmesh";
    gethostname(host, sizeof host - 1);
    const char *addr = sc->host;
    if (strcmp(addr, "0.0.0.0") == 0 || strcmp(addr, "::") == 0) addr = "127.0.0.1";
    rg_state_init(&srv->st, host, addr, NULL);
    if (snapshot_path) {
        srv->snapshot_path = lm_xstrdup(snapshot_path);
        load_snapshot(srv);
    }
    update_gauges(srv);
    lm_app_add(app, &(lm_component){.ctx = srv,
                                    .worker_start = worker_start_outer,
                                    .worker_stop = worker_stop,
                                    .stopping = on_stopping,
                                    .stopped = on_stopped,
                                    .metrics = render_metrics});
    return srv;
}

void rg_server_free(rg_server *srv)
{
    if (!srv) return;
    rg_state_free(&srv->st);
    free(srv->snapshot_path);
    free(srv);
}
