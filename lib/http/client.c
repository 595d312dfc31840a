/* client.c — the HTTP/1.1 client's API and request lifecycle (lm_client). See client.h for
 * the contract, client_impl.h for how the client is split. */
#include "client_impl.h"

static const char *const err_text[LM_CLIENT_ERR__COUNT] = {
    [LM_CLIENT_OK] = "ok",
    [LM_CLIENT_ERR_RESOLVE] = "host name did not resolve",
    [LM_CLIENT_ERR_CONNECT] = "connection refused or failed",
    [LM_CLIENT_ERR_CONNECT_TIMEOUT] = "connect timed out",
    [LM_CLIENT_ERR_QUEUE_TIMEOUT] = "no connection became free in time (pool at its cap)",
    [LM_CLIENT_ERR_QUEUE_FULL] = "connection pool and its wait queue are full",
    [LM_CLIENT_ERR_RESPONSE_TIMEOUT] = "response timed out",
    [LM_CLIENT_ERR_CLOSED] = "connection closed before the response was complete",
    [LM_CLIENT_ERR_PROTOCOL] = "malformed response",
    [LM_CLIENT_ERR_TOO_LARGE] = "response larger than the limit",
    [LM_CLIENT_ERR_BODY] = "streamed request body does not match its declared length",
    [LM_CLIENT_ERR_CANCELLED] = "cancelled",
};

const char *lm_client_strerror(lm_client_err err)
{
    if ((int)err < 0 || err >= LM_CLIENT_ERR__COUNT) return "unknown client error";
    return err_text[err];
}

/* Set once at start-up (lm_app_new, from CLIENT_DNS_TTL_MS), before any thread reads it. */
static uint64_t default_dns_ttl_ms = 30000;

void lm_client_set_default_dns_ttl(uint64_t ms)
{
    default_dns_ttl_ms = ms;
}

void lm_client_config_default(lm_client_config *cfg)
{
    cfg->max_conns_per_origin = 64;
    cfg->max_queue_per_origin = 1024;
    cfg->idle_timeout_ms = 30000;
    cfg->connect_timeout_ms = 2000;
    cfg->queue_timeout_ms = 2000;
    cfg->response_timeout_ms = 30000;
    cfg->max_response_head = 64 * 1024;
    cfg->max_response_body = 8 * 1024 * 1024;
    cfg->dns_ttl_ms = default_dns_ttl_ms;
}

const char *lm_client_response_header(const lm_client_response *resp, const char *name)
{
    for (size_t i = 0; i < resp->n_headers; i++)
        if (strcasecmp(resp->headers[i].name, name) == 0) return resp->headers[i].value;
    return NULL;
}

void lm_client_stats_get(const lm_client *c, lm_client_stats *out)
{
#define LD(f) atomic_load_explicit(&c->st.f, memory_order_relaxed)
    out->requests = LD(requests);
    out->responses = LD(responses);
    for (int i = 0; i < LM_CLIENT_ERR__COUNT; i++)
        out->errors[i] = LD(errors[i]);
    out->retries = LD(retries);
    out->connects = LD(connects);
    out->reuses = LD(reuses);
    out->conns_open = LD(conns_open);
    out->conns_idle = LD(conns_idle);
    out->queued = LD(queued);
    out->inflight = LD(inflight);
    out->resolves = LD(resolves);
    out->resolve_cache_hits = LD(resolve_cache_hits);
#undef LD
}

/* ---- deferral: completions and resumes on the next loop turn ---------------------------- */

static void on_defer(uv_idle_t *h)
{
    lm_client *c = h->data;
    creq *r;
    while ((r = c->def_head)) {
        q_remove(&c->def_head, &c->def_tail, r);
        r->state = R_NEW;
        lm_client_req_complete(r, r->deferred_err);
    }
    cconn *k;
    while ((k = c->resume_head)) {
        c->resume_head = k->resume_next;
        if (!c->resume_head) c->resume_tail = NULL;
        k->resume_next = NULL;
        k->resume_queued = false;
        lm_client_conn_resume_work(k);
    }
    if (!c->closing && !c->def_head && !c->resume_head) uv_idle_stop(&c->defer);
}

void lm_client_defer_start(lm_client *c)
{
    if (!c->closing) uv_idle_start(&c->defer, on_defer);
}

/* The request is detached from queue and connection; complete it from the loop. */
void lm_client_req_fail_later(creq *r, lm_client_err err)
{
    lm_client *c = r->c;
    r->state = R_DEFERRED;
    r->deferred_err = err;
    q_append(&c->def_head, &c->def_tail, r);
    lm_client_defer_start(c);
}

/* ---- requests: completion --------------------------------------------------------------- */

static void req_free(creq *r)
{
    lm_buf_free(&r->wire);
    free(r->path);
    lm_buf_free(&r->rhead);
    lm_buf_free(&r->body);
    free(r->hoffs);
    free(r->hdrs);
    lm_client_pool_origin_unref(r->o);
    free(r);
}

static lm_client_call_fn call_observer;
static void *call_observer_ctx;

void lm_client_set_call_observer(lm_client_call_fn fn, void *ctx)
{
    call_observer = fn;
    call_observer_ctx = ctx;
}

static void report_call(creq *r, lm_client_err err)
{
    lm_client_call call = {.method = r->method,
                           .host = r->o->host,
                           .port = r->o->port,
                           .path = r->path ? r->path : "",
                           .span = &r->span,
                           .status = r->have_head ? r->resp.status : 0,
                           .err = err,
                           .start_ns = r->start_ns,
                           .end_ns = uv_hrtime()};
    call_observer(&call, call_observer_ctx);
}

void lm_client_req_complete(creq *r, lm_client_err err)
{
    lm_client *c = r->c;
    assert(r->state == R_NEW && r->k == NULL);
    if (r->prev)
        r->prev->next = r->next;
    else
        c->reqs = r->next;
    if (r->next) r->next->prev = r->prev;
    r->state = R_DONE;
    STAT_SUB(c, inflight, 1);
    if (err == LM_CLIENT_OK)
        STAT_ADD(c, responses, 1);
    else
        STAT_ADD(c, errors[err], 1);
    if (r->traced && call_observer) report_call(r, err);
    if (r->on_done) {
        const lm_client_response *resp = NULL;
        if (r->have_head) {
            resp = &r->resp;
            if (err == LM_CLIENT_OK && !r->on_body) {
                r->resp.body = r->body.len ? lm_buf_cstr(&r->body) : "";
                r->resp.body_len = r->body.len;
            } else {
                r->resp.body = NULL;
                r->resp.body_len = 0;
            }
        }
        r->on_done(r, err, resp, r->ud);
    }
    req_free(r);
}

/* Takes r off whatever holds it (queue, deferred list, connection). A connection in the middle
 * of r's exchange is closed; one still connecting for r goes on and joins the pool. */
static void req_detach_any(creq *r)
{
    lm_client *c = r->c;
    cconn *k = r->k;
    switch (r->state) {
    case R_QUEUED:
        lm_client_pool_dequeue(r);
        break;
    case R_DEFERRED:
        q_remove(&c->def_head, &c->def_tail, r);
        r->state = R_NEW;
        break;
    case R_CONNECTING:
        lm_client_conn_detach(k, r);
        lm_client_conn_set_ref(k, false); /* an orphan must not hold the loop open */
        break;
    case R_ACTIVE:
        lm_client_conn_detach(k, r);
        lm_client_conn_close(k, true);
        break;
    default:
        break;
    }
}

static void req_cancel_now(creq *r)
{
    req_detach_any(r);
    lm_client_req_complete(r, LM_CLIENT_ERR_CANCELLED);
}

/* Calls into user code; false when the request was aborted (cancel, close) meanwhile. */
bool lm_client_call_head(creq *r)
{
    r->cb_depth++;
    r->on_head(r, &r->resp, r->ud);
    r->cb_depth--;
    return !r->abort_pending;
}

bool lm_client_call_body(creq *r, const char *data, size_t len)
{
    r->cb_depth++;
    r->on_body(r, data, len, r->ud);
    r->cb_depth--;
    return !r->abort_pending;
}

bool lm_client_call_drain(creq *r)
{
    r->cb_depth++;
    r->on_drain(r, r->ud);
    r->cb_depth--;
    return !r->abort_pending;
}

/* The request on k failed in a loop callback: retry it on a fresh connection when that is
 * safe, else complete it. */
lm_client_req *lm_client_send(lm_client *c, const lm_client_opts *op)
{
    if (c->closing || !op->method || !op->host || !op->path || !op->host[0]) return NULL;
    if (!lm_client_wire_valid_token(op->method, strlen(op->method)) ||
        !lm_client_wire_valid_path(op->path))
        return NULL;
    if (op->port < 1 || op->port > 65535) return NULL;
    if (op->body_len && (!op->body || op->stream_body)) return NULL;
    if (op->stream_body && op->stream_length < -1) return NULL;
    const char *host = op->host;
    size_t hl = strlen(host);
    if (host[0] == '[' && hl > 2 && host[hl - 1] == ']') {
        host++;
        hl -= 2;
    }
    if (!hl || !lm_client_wire_valid_value(host, hl) || strcspn(host, " \t/?#@") < hl) return NULL;

    origin *o = lm_client_pool_origin_get(c, host, hl, op->port);
    creq *r = lm_xcalloc(1, sizeof *r);
    r->c = c;
    r->o = o;
    o->refs++;
    if (op->span) {
        r->traced = true;
        r->span = *op->span;
        r->start_ns = uv_hrtime();
        snprintf(r->method, sizeof r->method, "%s", op->method);
        r->path = lm_xstrndup(op->path, strcspn(op->path, "?"));
    }
    if (!lm_client_wire_build(r, op, o)) {
        req_free(r);
        return NULL;
    }
    r->stream = op->stream_body;
    r->chunked = op->stream_body && op->stream_length < 0;
    r->declared = op->stream_length;
    r->is_head = !strcmp(op->method, "HEAD");
    r->retriable = !r->stream && lm_client_wire_idempotent(op->method);
    r->connect_to = pick(op->connect_timeout_ms, c->cfg.connect_timeout_ms);
    r->queue_to = pick(op->queue_timeout_ms, c->cfg.queue_timeout_ms);
    r->response_to = pick(op->response_timeout_ms, c->cfg.response_timeout_ms);
    r->max_body = op->max_body ? op->max_body : c->cfg.max_response_body;
    r->on_head = op->on_head;
    r->on_body = op->on_body;
    r->on_done = op->on_done;
    r->on_drain = op->on_drain;
    r->ud = op->ud;
    r->state = R_NEW;
    r->next = c->reqs;
    if (c->reqs) c->reqs->prev = r;
    c->reqs = r;
    STAT_ADD(c, requests, 1);
    STAT_ADD(c, inflight, 1);

    if (o->q_head) {
        if (o->n_queued >= c->cfg.max_queue_per_origin)
            lm_client_req_fail_later(r, LM_CLIENT_ERR_QUEUE_FULL);
        else
            lm_client_pool_enqueue(o, r);
    } else if (o->idle) {
        cconn *k = o->idle;
        lm_client_pool_idle_remove(k);
        lm_client_conn_dispatch(k, r);
    } else if (o->n_conns < c->cfg.max_conns_per_origin) {
        lm_client_conn_new(o, r);
    } else if (o->n_queued >= c->cfg.max_queue_per_origin) {
        lm_client_req_fail_later(r, LM_CLIENT_ERR_QUEUE_FULL);
    } else {
        lm_client_pool_enqueue(o, r);
    }
    return r;
}

/* ---- streamed request bodies, pause, cancel --------------------------------------------- */

/* Fails r from code the user called: later, or after the running callback of r. */
static void req_abort_from_user(creq *r, lm_client_err err)
{
    if (r->abort_pending || r->state == R_DONE || r->state == R_DEFERRED) return;
    if (r->cb_depth > 0) {
        r->abort_pending = true;
        r->abort_err = err;
        return;
    }
    req_detach_any(r);
    lm_client_req_fail_later(r, err);
}

/* Streamed body bytes: into the request's wire bytes until it is on a connection. */
static void body_append(creq *r, const void *data, size_t len)
{
    if (r->state != R_ACTIVE || !r->k) {
        if (r->chunked) lm_buf_printf(&r->wire, "%zx\r\n", len);
        lm_buf_append(&r->wire, data, len);
        if (r->chunked) lm_buf_append(&r->wire, "\r\n", 2);
        return;
    }
    char sz[24];
    uv_buf_t b[3];
    unsigned n = 0;
    if (r->chunked) b[n++] = uv_buf_init(sz, (unsigned)snprintf(sz, sizeof sz, "%zx\r\n", len));
    b[n++] = uv_buf_init((char *)data, (unsigned)len);
    if (r->chunked) b[n++] = uv_buf_init("\r\n", 2);
    if (!lm_client_conn_sendv(r->k, b, n)) lm_client_conn_failed_later(r->k, LM_CLIENT_ERR_CLOSED);
}

bool lm_client_write(lm_client_req *r, const void *data, size_t len)
{
    if (!r->stream || r->ended || r->abort_pending || r->state == R_DONE || r->state == R_DEFERRED)
        return false;
    if (len == 0) return true;
    if (r->k && r->k->msg_complete) return false; /* the response has arrived already */
    if (!r->chunked && (uint64_t)r->written + len > (uint64_t)r->declared) {
        req_abort_from_user(r, LM_CLIENT_ERR_BODY);
        return false;
    }
    r->written += (int64_t)len;
    body_append(r, data, len);
    if (r->state == R_DEFERRED) return false;
    if (lm_client_conn_req_buffered(r) > HIGH_WATER) {
        r->want_drain = true;
        return false;
    }
    return true;
}

void lm_client_end(lm_client_req *r)
{
    if (!r->stream || r->ended || r->abort_pending || r->state == R_DONE || r->state == R_DEFERRED)
        return;
    r->ended = true;
    if (!r->chunked && r->written != r->declared) {
        req_abort_from_user(r, LM_CLIENT_ERR_BODY);
        return;
    }
    if (!r->chunked) return;
    if (r->state != R_ACTIVE || !r->k)
        lm_buf_append(&r->wire, "0\r\n\r\n", 5);
    else {
        uv_buf_t b = uv_buf_init("0\r\n\r\n", 5);
        if (!lm_client_conn_sendv(r->k, &b, 1))
            lm_client_conn_failed_later(r->k, LM_CLIENT_ERR_CLOSED);
    }
}

void lm_client_pause(lm_client_req *r)
{
    if (r->state == R_DONE || r->paused) return;
    r->paused = true;
    if (r->k && r->state == R_ACTIVE) lm_client_conn_update_reading(r->k);
}

void lm_client_resume(lm_client_req *r)
{
    if (r->state == R_DONE || !r->paused) return;
    r->paused = false;
    if (r->k && r->state == R_ACTIVE) lm_client_conn_resume_later(r->k);
}

void lm_client_cancel(lm_client_req *r)
{
    if (r->state == R_DONE || r->abort_pending) return;
    if (r->cb_depth > 0) {
        r->abort_pending = true;
        r->abort_err = LM_CLIENT_ERR_CANCELLED;
        return;
    }
    req_cancel_now(r);
}

/* ---- client ----------------------------------------------------------------------------- */

lm_client *lm_client_new(uv_loop_t *loop, const lm_client_config *cfg)
{
    lm_client_conn_init();
    lm_client *c = lm_xcalloc(1, sizeof *c);
    c->loop = loop;
    if (cfg)
        c->cfg = *cfg;
    else
        lm_client_config_default(&c->cfg);
    lm_client_config d;
    lm_client_config_default(&d);
    if (!c->cfg.max_conns_per_origin) c->cfg.max_conns_per_origin = d.max_conns_per_origin;
    if (!c->cfg.idle_timeout_ms) c->cfg.idle_timeout_ms = d.idle_timeout_ms;
    if (!c->cfg.connect_timeout_ms) c->cfg.connect_timeout_ms = d.connect_timeout_ms;
    if (!c->cfg.queue_timeout_ms) c->cfg.queue_timeout_ms = d.queue_timeout_ms;
    if (!c->cfg.response_timeout_ms) c->cfg.response_timeout_ms = d.response_timeout_ms;
    if (!c->cfg.max_response_head) c->cfg.max_response_head = d.max_response_head;
    if (!c->cfg.max_response_body) c->cfg.max_response_body = d.max_response_body;
    if (c->cfg.dns_ttl_ms) c->dns = lm_dnscache_new(DNS_MAX_NAMES, c->cfg.dns_ttl_ms, DNS_NEG_TTL);
    c->queue_due = UINT64_MAX;
    uv_idle_init(loop, &c->defer);
    uv_timer_init(loop, &c->idle_timer);
    uv_timer_init(loop, &c->queue_timer);
    c->defer.data = c->idle_timer.data = c->queue_timer.data = c;
    uv_unref((uv_handle_t *)&c->idle_timer);
    c->handles_open = 3;
    return c;
}

void lm_client_maybe_finalize(lm_client *c)
{
    if (!c->closing || c->handles_open || c->live_conns) return;
    assert(c->origins == NULL && c->reqs == NULL);
    void (*cb)(void *) = c->close_cb;
    void *ctx = c->close_ctx;
    lm_dnscache_free(c->dns);
    free(c);
    if (cb) cb(ctx);
}

static void on_client_handle_closed(uv_handle_t *h)
{
    lm_client *c = h->data;
    c->handles_open--;
    lm_client_maybe_finalize(c);
}

void lm_client_close(lm_client *c, void (*cb)(void *ctx), void *ctx)
{
    if (c->closing) return;
    c->closing = true;
    c->close_cb = cb;
    c->close_ctx = ctx;
    /* complete every request; one that is inside its own callback completes when it returns */
    for (;;) {
        creq *r = c->reqs;
        while (r && (r->cb_depth > 0 || r->abort_pending)) {
            if (!r->abort_pending) {
                r->abort_pending = true;
                r->abort_err = LM_CLIENT_ERR_CANCELLED;
            }
            r = r->next;
        }
        if (!r) break;
        req_cancel_now(r);
    }
    /* then every connection without a request: idle ones, orphans still connecting (one
     * whose request completes after its callback is closed then) */
    for (cconn *k = c->conns; k; k = k->a_next)
        if (!k->req) lm_client_conn_close(k, false);
    uv_close((uv_handle_t *)&c->defer, on_client_handle_closed);
    uv_close((uv_handle_t *)&c->idle_timer, on_client_handle_closed);
    uv_close((uv_handle_t *)&c->queue_timer, on_client_handle_closed);
}
