/* client.c — the HTTP/1.1 client: origins, pooled connections, llhttp response parsing,
 * timeouts, retries on stale connections. See client.h for the contract.
 *
 * Why it is built this way:
 * - Single-threaded per loop, so the pools are plain linked lists: a per-origin LIFO stack
 *   of idle connections (push/pop at the head) and one client-wide list of idle connections
 *   in the order they became idle, whose head is always the next to expire: one uv_timer
 *   serves every idle timeout exactly.
 * - A connection owns one uv_timer for whatever its request is waiting for (connect, then
 *   response); queued requests share one client timer set to the earliest queue deadline.
 *   No handle lives in a request, so a request is freed right after its on_done.
 * - User callbacks can do anything (send, cancel, pause, close the client). Two rules keep
 *   that safe: functions the user calls never call back (an error found there completes the
 *   request from an idle handle on the next loop turn: req_fail_later), except cancel and
 *   close which are documented to; and code that calls on_head/on_body/on_drain checks
 *   afterwards whether the request was aborted meanwhile (abort_pending) before going on.
 *   Connections are freed only from their close callbacks, never under a running frame.
 * - Response parsing pauses llhttp at the end of every message, so completion always runs
 *   outside llhttp_execute and input after a response (never legitimate without pipelining)
 *   marks the connection unusable.
 * - Host names go through the client's lm_dnscache before getaddrinfo (conn_new): a hit
 *   connects at once, with no thread-pool round trip; on_resolved fills it, and a failed
 *   connect (or connect timeout) to an address got by name drops the name's entry. */
#include "client.h"

#include "buf.h"
#include "dnscache.h"
#include "log.h"

#include <llhttp.h>
#include <uv.h>

#include <arpa/inet.h>
#include <assert.h>
#include <netdb.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define READ_BUF_SIZE (64 * 1024)
#define HIGH_WATER    (256 * 1024) /* streamed upload: lm_client_write returns false above */
#define MAX_HEADERS   256
#define KEEP_BUF      (64 * 1024) /* a pooled connection keeps buffers up to this capacity */
#define DNS_MAX_NAMES 64          /* host names in a client's resolution cache */
#define DNS_NEG_TTL   1000        /* ms a name found not to exist is not looked up again */

typedef struct origin origin;
typedef struct cconn cconn;
typedef lm_client_req creq;

typedef enum { R_NEW, R_QUEUED, R_CONNECTING, R_ACTIVE, R_DEFERRED, R_DONE } rstate;
typedef enum { K_CONNECTING, K_IDLE, K_ACTIVE, K_CLOSING } kstate;

typedef struct hdr_off {
    size_t name_off, name_len, value_off, value_len;
} hdr_off;

struct lm_client_req {
    lm_client *c;
    origin *o;
    cconn *k;
    rstate state;
    creq *prev, *next;     /* client's list of live requests */
    creq *q_prev, *q_next; /* origin wait queue, or the client's deferred list */
    lm_buf wire;           /* request bytes to send on dispatch (kept for a retry) */
    bool stream, chunked, ended;
    int64_t declared, written;
    bool is_head, retriable, retried, reused, paused, want_drain;
    bool abort_pending;
    int cb_depth;
    lm_client_err abort_err, deferred_err;
    uint64_t connect_to, queue_to, response_to, queue_deadline;
    size_t max_body;
    lm_client_head_fn on_head;
    lm_client_body_fn on_body;
    lm_client_done_fn on_done;
    lm_client_drain_fn on_drain;
    void *ud;
    /* response */
    bool have_head, in_field;
    lm_buf rhead; /* header names and values, NUL-separated */
    hdr_off *hoffs;
    size_t n_h, cap_h, head_bytes;
    lm_header *hdrs;
    lm_buf body;
    lm_client_response resp;
};

struct cconn {
    uv_tcp_t tcp;
    uv_timer_t timer;
    uv_connect_t connect_req;
    uv_getaddrinfo_t gai;
    uv_write_t wreq;
    llhttp_t parser;
    lm_client *c;
    origin *o;
    creq *req;
    kstate state;
    int refs; /* tcp + timer handles, pending getaddrinfo */
    bool gai_active, reading, writing, ref_on, resume_queued;
    bool by_name;      /* connecting to an address resolved from the origin's host name */
    lm_buf out;        /* streamed body bytes not yet handed to libuv */
    lm_buf inflight;   /* bytes of the write in progress (when not the request's wire) */
    size_t write_len;  /* bytes in the write in progress */
    lm_buf pending_in; /* unparsed input held while paused */
    lm_buf held_body;  /* body bytes that arrived while paused */
    uint64_t requests;
    uint64_t idle_since;
    cconn *o_next, *o_prev; /* origin's idle stack */
    cconn *g_next, *g_prev; /* client's idle list, oldest first */
    cconn *resume_next;     /* client's resume list */
    cconn *a_next, *a_prev; /* client's list of all connections */
    bool any_bytes, msg_complete, informational, keep_alive, complete_held;
    lm_client_err fail_err;
};

struct origin {
    origin *next;
    lm_client *c;
    char *host;
    int port;
    char *host_hdr; /* "host:port" as sent in Host */
    bool numeric;
    struct sockaddr_storage addr;
    cconn *idle; /* stack */
    size_t n_idle, n_conns, n_queued, refs;
    creq *q_head, *q_tail;
};

typedef struct client_stats {
    _Atomic uint64_t requests, responses, errors[LM_CLIENT_ERR__COUNT], retries, connects, reuses,
        conns_open, conns_idle, queued, inflight, resolves, resolve_cache_hits;
} client_stats;

struct lm_client {
    uv_loop_t *loop;
    lm_client_config cfg;
    lm_dnscache *dns; /* NULL when cfg.dns_ttl_ms is 0 */
    origin *origins;
    creq *reqs;   /* live requests */
    cconn *conns; /* every connection not yet freed */
    cconn *idle_head, *idle_tail;
    creq *def_head, *def_tail; /* requests to complete on the next loop turn */
    cconn *resume_head, *resume_tail;
    uv_idle_t defer;
    uv_timer_t idle_timer, queue_timer;
    uint64_t queue_due; /* when queue_timer fires, UINT64_MAX when stopped */
    size_t live_conns;
    int handles_open;
    bool closing;
    void (*close_cb)(void *);
    void *close_ctx;
    client_stats st;
    char readbuf[READ_BUF_SIZE];
};

/* single writer (the loop thread), readers anywhere: relaxed load + store is enough */
#define STAT_ADD(c, f, d)                                                                          \
    atomic_store_explicit(&(c)->st.f,                                                              \
                          atomic_load_explicit(&(c)->st.f, memory_order_relaxed) + (uint64_t)(d),  \
                          memory_order_relaxed)
#define STAT_SUB(c, f, d) STAT_ADD(c, f, -(uint64_t)(d))

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

/* ---- small list helpers ----------------------------------------------------------------- */

static void q_append(creq **head, creq **tail, creq *r)
{
    r->q_next = NULL;
    r->q_prev = *tail;
    if (*tail)
        (*tail)->q_next = r;
    else
        *head = r;
    *tail = r;
}

static void q_remove(creq **head, creq **tail, creq *r)
{
    if (r->q_prev)
        r->q_prev->q_next = r->q_next;
    else
        *head = r->q_next;
    if (r->q_next)
        r->q_next->q_prev = r->q_prev;
    else
        *tail = r->q_prev;
    r->q_prev = r->q_next = NULL;
}

static uint64_t pick(uint64_t v, uint64_t dflt)
{
    return v ? v : dflt;
}

/* ---- forward declarations --------------------------------------------------------------- */

static void conn_close(cconn *k, bool pump);
static void conn_new(origin *o, creq *r);
static void dispatch(cconn *k, creq *r);
static void origin_pump(origin *o);
static void req_complete(creq *r, lm_client_err err);
static void conn_update_reading(cconn *k);
static void client_maybe_finalize(lm_client *c);
static void conn_resume_work(cconn *k);

/* ---- deferral: completions and resumes on the next loop turn ---------------------------- */

static void on_defer(uv_idle_t *h)
{
    lm_client *c = h->data;
    creq *r;
    while ((r = c->def_head)) {
        q_remove(&c->def_head, &c->def_tail, r);
        r->state = R_NEW;
        req_complete(r, r->deferred_err);
    }
    cconn *k;
    while ((k = c->resume_head)) {
        c->resume_head = k->resume_next;
        if (!c->resume_head) c->resume_tail = NULL;
        k->resume_next = NULL;
        k->resume_queued = false;
        conn_resume_work(k);
    }
    if (!c->closing && !c->def_head && !c->resume_head) uv_idle_stop(&c->defer);
}

static void defer_start(lm_client *c)
{
    if (!c->closing) uv_idle_start(&c->defer, on_defer);
}

/* The request is detached from queue and connection; complete it from the loop. */
static void req_fail_later(creq *r, lm_client_err err)
{
    lm_client *c = r->c;
    r->state = R_DEFERRED;
    r->deferred_err = err;
    q_append(&c->def_head, &c->def_tail, r);
    defer_start(c);
}

static void conn_resume_later(cconn *k)
{
    lm_client *c = k->c;
    if (k->resume_queued) return;
    k->resume_queued = true;
    k->resume_next = NULL;
    if (c->resume_tail)
        c->resume_tail->resume_next = k;
    else
        c->resume_head = k;
    c->resume_tail = k;
    defer_start(c);
}

static void resume_list_remove(cconn *k)
{
    lm_client *c = k->c;
    if (!k->resume_queued) return;
    cconn *prev = NULL;
    for (cconn *x = c->resume_head; x; prev = x, x = x->resume_next) {
        if (x != k) continue;
        if (prev)
            prev->resume_next = k->resume_next;
        else
            c->resume_head = k->resume_next;
        if (c->resume_tail == k) c->resume_tail = prev;
        break;
    }
    k->resume_next = NULL;
    k->resume_queued = false;
}

/* ---- origins ---------------------------------------------------------------------------- */

static origin *origin_get(lm_client *c, const char *host, size_t host_len, int port)
{
    for (origin *o = c->origins; o; o = o->next)
        if (o->port == port && strlen(o->host) == host_len &&
            strncasecmp(o->host, host, host_len) == 0)
            return o;
    origin *o = lm_xcalloc(1, sizeof *o);
    o->c = c;
    o->host = lm_xstrndup(host, host_len);
    o->port = port;
    bool v6 = strchr(o->host, ':') != NULL;
    lm_buf hh = LM_BUF_INIT;
    lm_buf_printf(&hh, v6 ? "[%s]" : "%s", o->host);
    if (port != 80) lm_buf_printf(&hh, ":%d", port);
    o->host_hdr = lm_buf_steal(&hh, NULL);
    struct sockaddr_in *a4 = (struct sockaddr_in *)&o->addr;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&o->addr;
    if (uv_ip4_addr(o->host, port, a4) == 0 || uv_ip6_addr(o->host, port, a6) == 0)
        o->numeric = true;
    o->next = c->origins;
    c->origins = o;
    return o;
}

static void origin_unref(origin *o)
{
    if (--o->refs) return;
    lm_client *c = o->c;
    for (origin **pp = &c->origins; *pp; pp = &(*pp)->next) {
        if (*pp == o) {
            *pp = o->next;
            break;
        }
    }
    free(o->host);
    free(o->host_hdr);
    free(o);
}

static void queue_timer_arm(lm_client *c, uint64_t deadline);

static void enqueue(origin *o, creq *r)
{
    lm_client *c = o->c;
    r->state = R_QUEUED;
    r->queue_deadline =
        r->queue_to == LM_CLIENT_NO_TIMEOUT ? UINT64_MAX : uv_now(c->loop) + r->queue_to;
    q_append(&o->q_head, &o->q_tail, r);
    o->n_queued++;
    STAT_ADD(c, queued, 1);
    queue_timer_arm(c, r->queue_deadline);
}

static void dequeue(creq *r)
{
    origin *o = r->o;
    q_remove(&o->q_head, &o->q_tail, r);
    o->n_queued--;
    STAT_SUB(r->c, queued, 1);
    r->state = R_NEW;
}

static void idle_remove(cconn *k)
{
    origin *o = k->o;
    lm_client *c = k->c;
    if (k->o_prev)
        k->o_prev->o_next = k->o_next;
    else
        o->idle = k->o_next;
    if (k->o_next) k->o_next->o_prev = k->o_prev;
    if (k->g_prev)
        k->g_prev->g_next = k->g_next;
    else
        c->idle_head = k->g_next;
    if (k->g_next)
        k->g_next->g_prev = k->g_prev;
    else
        c->idle_tail = k->g_prev;
    k->o_next = k->o_prev = k->g_next = k->g_prev = NULL;
    o->n_idle--;
    STAT_SUB(c, conns_idle, 1);
}

/* Gives queued requests the free connections and slots of their origin. Never calls back. */
static void origin_pump(origin *o)
{
    lm_client *c = o->c;
    while (o->q_head && !c->closing) {
        creq *r = o->q_head;
        if (o->idle) {
            cconn *k = o->idle;
            idle_remove(k);
            dequeue(r);
            dispatch(k, r);
        } else if (o->n_conns < c->cfg.max_conns_per_origin) {
            dequeue(r);
            conn_new(o, r);
        } else {
            break;
        }
    }
}

/* ---- timers ----------------------------------------------------------------------------- */

static void on_queue_timer(uv_timer_t *t)
{
    lm_client *c = t->data;
    uint64_t now = uv_now(c->loop), next = UINT64_MAX;
    c->queue_due = UINT64_MAX;
    for (origin *o = c->origins; o; o = o->next) {
        creq *rn;
        for (creq *r = o->q_head; r; r = rn) {
            rn = r->q_next;
            if (r->queue_deadline <= now) {
                dequeue(r);
                req_fail_later(r, LM_CLIENT_ERR_QUEUE_TIMEOUT);
            } else if (r->queue_deadline < next) {
                next = r->queue_deadline;
            }
        }
    }
    if (next != UINT64_MAX) queue_timer_arm(c, next);
}

static void queue_timer_arm(lm_client *c, uint64_t deadline)
{
    if (deadline == UINT64_MAX || deadline >= c->queue_due || c->closing) return;
    uint64_t now = uv_now(c->loop);
    c->queue_due = deadline;
    uv_timer_start(&c->queue_timer, on_queue_timer, deadline > now ? deadline - now : 0, 0);
}

static void on_idle_timer(uv_timer_t *t)
{
    lm_client *c = t->data;
    uint64_t now = uv_now(c->loop);
    while (c->idle_head && now - c->idle_head->idle_since >= c->cfg.idle_timeout_ms)
        conn_close(c->idle_head, true);
    if (c->idle_head && !c->closing)
        uv_timer_start(&c->idle_timer, on_idle_timer,
                       c->idle_head->idle_since + c->cfg.idle_timeout_ms - now, 0);
}

/* ---- connections: lifecycle ------------------------------------------------------------- */

static void conn_set_ref(cconn *k, bool on)
{
    if (k->ref_on == on) return;
    k->ref_on = on;
    if (on) {
        uv_ref((uv_handle_t *)&k->tcp);
        uv_ref((uv_handle_t *)&k->timer);
    } else {
        uv_unref((uv_handle_t *)&k->tcp);
        uv_unref((uv_handle_t *)&k->timer);
    }
}

static void conn_unref(cconn *k)
{
    if (--k->refs) return;
    lm_client *c = k->c;
    if (k->a_prev)
        k->a_prev->a_next = k->a_next;
    else
        c->conns = k->a_next;
    if (k->a_next) k->a_next->a_prev = k->a_prev;
    lm_buf_free(&k->out);
    lm_buf_free(&k->inflight);
    lm_buf_free(&k->pending_in);
    lm_buf_free(&k->held_body);
    origin_unref(k->o);
    free(k);
    c->live_conns--;
    client_maybe_finalize(c);
}

static void on_conn_handle_closed(uv_handle_t *h)
{
    conn_unref(h->data);
}

/* Closes k (no request may be attached). pump: let queued requests use the freed slot. */
static void conn_close(cconn *k, bool pump)
{
    if (k->state == K_CLOSING) return;
    assert(k->req == NULL);
    origin *o = k->o;
    lm_client *c = k->c;
    if (k->state == K_IDLE) idle_remove(k);
    k->state = K_CLOSING;
    resume_list_remove(k);
    o->n_conns--;
    STAT_SUB(c, conns_open, 1);
    if (k->gai_active) uv_cancel((uv_req_t *)&k->gai); /* its callback still comes */
    uv_close((uv_handle_t *)&k->tcp, on_conn_handle_closed);
    uv_close((uv_handle_t *)&k->timer, on_conn_handle_closed);
    if (pump) origin_pump(o);
}

static void buf_trim(lm_buf *b)
{
    if (b->cap > KEEP_BUF)
        lm_buf_free(b);
    else
        lm_buf_reset(b);
}

static void pool_put(cconn *k)
{
    lm_client *c = k->c;
    origin *o = k->o;
    buf_trim(&k->out); /* one large upload must not pin its buffers for the pool's life */
    buf_trim(&k->inflight);
    buf_trim(&k->pending_in);
    buf_trim(&k->held_body);
    k->req = NULL;
    k->state = K_IDLE;
    uv_timer_stop(&k->timer);
    conn_set_ref(k, false);
    k->idle_since = uv_now(c->loop);
    k->o_prev = NULL;
    k->o_next = o->idle;
    if (o->idle) o->idle->o_prev = k;
    o->idle = k;
    k->g_next = NULL;
    k->g_prev = c->idle_tail;
    if (c->idle_tail)
        c->idle_tail->g_next = k;
    else
        c->idle_head = k;
    c->idle_tail = k;
    o->n_idle++;
    STAT_ADD(c, conns_idle, 1);
    if (!uv_is_active((uv_handle_t *)&c->idle_timer))
        uv_timer_start(&c->idle_timer, on_idle_timer, c->cfg.idle_timeout_ms, 0);
    conn_update_reading(k); /* an idle connection reads to notice the server closing it */
}

/* Detaches the request from its connection (k->req, r->k). */
static void detach(cconn *k, creq *r)
{
    k->req = NULL;
    r->k = NULL;
    r->state = R_NEW;
}

/* ---- requests: completion --------------------------------------------------------------- */

static void req_free(creq *r)
{
    lm_buf_free(&r->wire);
    lm_buf_free(&r->rhead);
    lm_buf_free(&r->body);
    free(r->hoffs);
    free(r->hdrs);
    origin_unref(r->o);
    free(r);
}

static void req_complete(creq *r, lm_client_err err)
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
        dequeue(r);
        break;
    case R_DEFERRED:
        q_remove(&c->def_head, &c->def_tail, r);
        r->state = R_NEW;
        break;
    case R_CONNECTING:
        detach(k, r);
        conn_set_ref(k, false); /* an orphan must not hold the loop open */
        break;
    case R_ACTIVE:
        detach(k, r);
        conn_close(k, true);
        break;
    default:
        break;
    }
}

static void req_cancel_now(creq *r)
{
    req_detach_any(r);
    req_complete(r, LM_CLIENT_ERR_CANCELLED);
}

/* Calls into user code; false when the request was aborted (cancel, close) meanwhile. */
static bool call_head(creq *r)
{
    r->cb_depth++;
    r->on_head(r, &r->resp, r->ud);
    r->cb_depth--;
    return !r->abort_pending;
}

static bool call_body(creq *r, const char *data, size_t len)
{
    r->cb_depth++;
    r->on_body(r, data, len, r->ud);
    r->cb_depth--;
    return !r->abort_pending;
}

static bool call_drain(creq *r)
{
    r->cb_depth++;
    r->on_drain(r, r->ud);
    r->cb_depth--;
    return !r->abort_pending;
}

/* The request on k failed in a loop callback: retry it on a fresh connection when that is
 * safe, else complete it. */
static void conn_failed(cconn *k, lm_client_err err)
{
    creq *r = k->req;
    origin *o = k->o;
    lm_client *c = k->c;
    if (!r) {
        conn_close(k, true);
        return;
    }
    if (r->abort_pending) err = r->abort_err;
    detach(k, r);
    if (err == LM_CLIENT_ERR_CLOSED && !k->any_bytes && r->reused && r->retriable && !r->retried &&
        !r->abort_pending && !c->closing) {
        conn_close(k, false);
        r->retried = true;
        STAT_ADD(c, retries, 1);
        lm_log_debug("http client: %s:%d closed a pooled connection as it was reused; "
                     "sending the request again on a fresh one",
                     o->host, o->port);
        conn_new(o, r); /* takes the slot just freed, ahead of the queue */
        origin_pump(o);
        return;
    }
    conn_close(k, true);
    req_complete(r, err);
}

/* Same, from code the user called (no callbacks allowed there). */
static void conn_failed_later(cconn *k, lm_client_err err)
{
    creq *r = k->req;
    if (!r) {
        conn_close(k, true);
        return;
    }
    detach(k, r);
    conn_close(k, true);
    req_fail_later(r, err);
}

/* ---- writing ---------------------------------------------------------------------------- */

static bool req_sent(const cconn *k, const creq *r)
{
    return (!r->stream || r->ended) && !k->writing && k->out.len == 0;
}

static size_t req_buffered(const creq *r)
{
    if (r->k && r->state == R_ACTIVE) return (r->k->writing ? r->k->write_len : 0) + r->k->out.len;
    return r->wire.len;
}

static void on_write(uv_write_t *w, int status);

/* Hands k->out to libuv (nothing may be in flight). False: the connection is broken. */
static bool conn_write_out(cconn *k)
{
    lm_buf tmp = k->inflight; /* swap: new output keeps accumulating in k->out */
    k->inflight = k->out;
    k->out = tmp;
    lm_buf_reset(&k->out);
    uv_buf_t b = uv_buf_init(k->inflight.data, (unsigned)k->inflight.len);
    k->wreq.data = k;
    if (uv_write(&k->wreq, (uv_stream_t *)&k->tcp, &b, 1, on_write) != 0) return false;
    k->writing = true;
    k->write_len = k->inflight.len;
    return true;
}

/* Writes what the socket takes now; the rest goes through k->out and uv_write. Trying first
 * matters beyond saving a copy: a uv_write that completes at once still reports on the next
 * loop turn, and a response read before that would find the request "not yet sent" and
 * close a connection that could have been pooled. False: the connection is broken. */
static bool conn_sendv(cconn *k, uv_buf_t *bufs, unsigned n)
{
    size_t done = 0;
    if (!k->writing && k->out.len == 0) {
        int w = uv_try_write((uv_stream_t *)&k->tcp, bufs, n);
        if (w < 0 && w != UV_EAGAIN) return false;
        done = w > 0 ? (size_t)w : 0;
    }
    for (unsigned i = 0; i < n; i++) {
        if (done >= bufs[i].len) {
            done -= bufs[i].len;
            continue;
        }
        lm_buf_append(&k->out, bufs[i].base + done, bufs[i].len - done);
        done = 0;
    }
    if (k->writing || k->out.len == 0) return true;
    return conn_write_out(k);
}

static void on_write(uv_write_t *w, int status)
{
    cconn *k = w->data;
    k->writing = false;
    k->write_len = 0;
    lm_buf_reset(&k->inflight);
    if (k->state == K_CLOSING || !k->req) return;
    creq *r = k->req;
    if (status < 0) {
        conn_failed(k, LM_CLIENT_ERR_CLOSED);
        return;
    }
    if (k->out.len && !conn_write_out(k)) {
        conn_failed(k, LM_CLIENT_ERR_CLOSED);
        return;
    }
    if (r->want_drain && !k->writing && r->on_drain) {
        r->want_drain = false;
        if (!call_drain(r)) conn_failed(k, r->abort_err);
    }
}

/* ---- response parsing ------------------------------------------------------------------- */

static cconn *conn_of(llhttp_t *p)
{
    return p->data;
}

static int fail_parse(cconn *k, lm_client_err err)
{
    k->fail_err = err;
    return HPE_USER;
}

static int p_message_begin(llhttp_t *p)
{
    cconn *k = conn_of(p);
    creq *r = k->req;
    lm_buf_reset(&r->rhead);
    r->n_h = 0;
    r->head_bytes = 0;
    r->in_field = false;
    k->informational = false;
    return 0;
}

static int count_head(cconn *k, creq *r, size_t n)
{
    r->head_bytes += n;
    if (r->head_bytes > k->c->cfg.max_response_head) return fail_parse(k, LM_CLIENT_ERR_TOO_LARGE);
    return 0;
}

static int p_status(llhttp_t *p, const char *at, size_t len)
{
    cconn *k = conn_of(p);
    return count_head(k, k->req, len);
}

static int p_header_field(llhttp_t *p, const char *at, size_t len)
{
    cconn *k = conn_of(p);
    creq *r = k->req;
    if (r->have_head) return 0; /* trailers: ignored */
    if (!r->in_field) {
        if (r->n_h >= MAX_HEADERS) return fail_parse(k, LM_CLIENT_ERR_TOO_LARGE);
        if (r->n_h == r->cap_h) {
            r->cap_h = r->cap_h ? r->cap_h * 2 : 16;
            r->hoffs = lm_xrealloc(r->hoffs, r->cap_h * sizeof *r->hoffs);
        }
        hdr_off *h = &r->hoffs[r->n_h++];
        memset(h, 0, sizeof *h);
        h->name_off = r->rhead.len;
        r->in_field = true;
    }
    r->hoffs[r->n_h - 1].name_len += len;
    lm_buf_append(&r->rhead, at, len);
    return count_head(k, r, len + 4);
}

static int p_header_field_complete(llhttp_t *p)
{
    creq *r = conn_of(p)->req;
    if (r->have_head) return 0;
    lm_buf_append_char(&r->rhead, '\0');
    r->hoffs[r->n_h - 1].value_off = r->rhead.len;
    return 0;
}

static int p_header_value(llhttp_t *p, const char *at, size_t len)
{
    cconn *k = conn_of(p);
    creq *r = k->req;
    if (r->have_head) return 0;
    r->hoffs[r->n_h - 1].value_len += len;
    lm_buf_append(&r->rhead, at, len);
    return count_head(k, r, len);
}

static int p_header_value_complete(llhttp_t *p)
{
    creq *r = conn_of(p)->req;
    if (r->have_head) return 0;
    lm_buf_append_char(&r->rhead, '\0');
    r->in_field = false;
    return 0;
}

static int p_headers_complete(llhttp_t *p)
{
    cconn *k = conn_of(p);
    creq *r = k->req;
    int status = llhttp_get_status_code(p);
    if (status >= 100 && status < 200) {
        if (status == 101) return fail_parse(k, LM_CLIENT_ERR_PROTOCOL); /* never asked */
        k->informational = true; /* 100 Continue, 103 Early Hints: skipped */
        return 0;
    }
    if (llhttp_get_http_major(p) != 1) return fail_parse(k, LM_CLIENT_ERR_PROTOCOL);
    r->hdrs = lm_xrealloc(r->hdrs, (r->n_h ? r->n_h : 1) * sizeof *r->hdrs);
    for (size_t i = 0; i < r->n_h; i++) {
        r->hdrs[i].name = r->rhead.data + r->hoffs[i].name_off;
        r->hdrs[i].name_len = r->hoffs[i].name_len;
        r->hdrs[i].value = r->rhead.data + r->hoffs[i].value_off;
        r->hdrs[i].value_len = r->hoffs[i].value_len;
    }
    r->have_head = true;
    r->resp.status = status;
    r->resp.http_minor = llhttp_get_http_minor(p);
    r->resp.headers = r->hdrs;
    r->resp.n_headers = r->n_h;
    bool no_body = r->is_head || status == 204 || status == 304;
    if (!no_body && !r->on_body && (p->flags & F_CONTENT_LENGTH) && p->content_length > r->max_body)
        return fail_parse(k, LM_CLIENT_ERR_TOO_LARGE);
    if (r->on_head && !call_head(r)) return HPE_USER;
    if (no_body) return 1; /* llhttp cannot know about HEAD; 204/304 for good measure */
    if (r->paused) return HPE_PAUSED;
    return 0;
}

static int p_body(llhttp_t *p, const char *at, size_t len)
{
    cconn *k = conn_of(p);
    creq *r = k->req;
    if (!r->on_body) {
        if (r->body.len + len > r->max_body) return fail_parse(k, LM_CLIENT_ERR_TOO_LARGE);
        lm_buf_append(&r->body, at, len);
        return 0;
    }
    if (r->paused) { /* cannot happen by the rules above; hold it rather than lose it */
        lm_buf_append(&k->held_body, at, len);
        return HPE_PAUSED;
    }
    if (!call_body(r, at, len)) return HPE_USER;
    return r->paused ? HPE_PAUSED : 0;
}

static int p_message_complete(llhttp_t *p)
{
    cconn *k = conn_of(p);
    if (k->informational) {
        k->informational = false;
        return 0; /* the final response follows */
    }
    k->msg_complete = true;
    k->keep_alive = llhttp_should_keep_alive(p);
    return HPE_PAUSED; /* completion runs outside the parser */
}

static llhttp_settings_t settings;
static uv_once_t settings_once = UV_ONCE_INIT;

static void settings_init(void)
{
    llhttp_settings_init(&settings);
    settings.on_message_begin = p_message_begin;
    settings.on_status = p_status;
    settings.on_header_field = p_header_field;
    settings.on_header_field_complete = p_header_field_complete;
    settings.on_header_value = p_header_value;
    settings.on_header_value_complete = p_header_value_complete;
    settings.on_headers_complete = p_headers_complete;
    settings.on_body = p_body;
    settings.on_message_complete = p_message_complete;
}

/* The response on k is complete: pool or close the connection, then tell the caller. */
static void finish_success(cconn *k)
{
    creq *r = k->req;
    origin *o = k->o;
    bool reusable = k->keep_alive && req_sent(k, r) && k->pending_in.len == 0 && !k->c->closing;
    detach(k, r);
    if (reusable) {
        pool_put(k);
        origin_pump(o);
    } else {
        conn_close(k, true);
    }
    req_complete(r, LM_CLIENT_OK);
}

/* Parses input for k's request. Returns true when more input is wanted. */
static bool conn_parse(cconn *k, const char *data, size_t len)
{
    creq *r = k->req;
    if (r->paused || k->pending_in.len || k->held_body.len || k->complete_held) {
        lm_buf_append(&k->pending_in, data, len);
        return false;
    }
    llhttp_errno_t e = llhttp_execute(&k->parser, data, len);
    if (e == HPE_OK) return true;
    if (e == HPE_PAUSED) {
        const char *pos = llhttp_get_error_pos(&k->parser);
        size_t used = pos ? (size_t)(pos - data) : len;
        if (used > len) used = len;
        llhttp_resume(&k->parser);
        if (k->msg_complete) {
            if (used < len) k->keep_alive = false; /* bytes after a response: unusable */
            if (r->paused) {
                k->complete_held = true;
                return false;
            }
            finish_success(k);
            return false;
        }
        lm_buf_append(&k->pending_in, data + used, len - used); /* user pause */
        return false;
    }
    /* a callback's own verdict wins, whatever errno llhttp wraps it in */
    lm_client_err err = LM_CLIENT_ERR_PROTOCOL;
    if (r->abort_pending)
        err = r->abort_err;
    else if (k->fail_err)
        err = k->fail_err;
    detach(k, r);
    conn_close(k, true);
    req_complete(r, err);
    return false;
}

/* Runs from the loop (deferred): tells a streaming uploader that its output drained, then
 * delivers what a pause held back and reads on. */
static void conn_resume_work(cconn *k)
{
    creq *r = k->req;
    if (k->state != K_ACTIVE || !r) return;
    if (r->want_drain && !k->writing && !k->out.len && r->on_drain) {
        r->want_drain = false;
        if (!call_drain(r)) {
            conn_failed(k, r->abort_err);
            return;
        }
        if (k->req != r || k->state != K_ACTIVE) return;
    }
    if (r->paused) return;
    if (k->held_body.len) {
        lm_buf held = k->held_body;
        k->held_body = (lm_buf)LM_BUF_INIT;
        bool ok = call_body(r, held.data, held.len);
        lm_buf_free(&held);
        if (!ok) {
            conn_failed(k, r->abort_err);
            return;
        }
        if (r->paused) return;
    }
    if (k->complete_held) {
        k->complete_held = false;
        finish_success(k);
        return;
    }
    /* Always re-enter the parser, with no bytes if none are held: a pause on the last piece
     * of a body (or in on_head of an empty one) leaves llhttp one step short of the message
     * end, a step that needs no input. */
    lm_buf in = k->pending_in;
    k->pending_in = (lm_buf)LM_BUF_INIT;
    bool more = conn_parse(k, in.data ? in.data : "", in.len);
    lm_buf_free(&in);
    if (more) conn_update_reading(k);
}

/* ---- reading ---------------------------------------------------------------------------- */

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    cconn *k = h->data;
    (void)suggested;
    /* libuv calls read_cb before the next alloc on this loop: one buffer per client */
    *buf = uv_buf_init(k->c->readbuf, READ_BUF_SIZE);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    cconn *k = s->data;
    if (k->state == K_CLOSING || nread == 0) return;
    creq *r = k->req;
    if (nread > 0) {
        if (k->state != K_ACTIVE || !r) {
            conn_close(k, true); /* bytes nobody asked for */
            return;
        }
        k->any_bytes = true;
        if (!conn_parse(k, buf->base, (size_t)nread)) conn_update_reading(k);
        return;
    }
    if (k->state != K_ACTIVE || !r) {
        conn_close(k, true); /* the server closed an idle connection */
        return;
    }
    if (nread == UV_EOF) {
        /* a close-delimited body ends here; llhttp_finish calls on_message_complete */
        llhttp_finish(&k->parser);
        if (k->msg_complete) {
            k->keep_alive = false;
            if (r->paused) {
                k->complete_held = true;
                conn_update_reading(k);
                return;
            }
            finish_success(k);
            return;
        }
    }
    conn_failed(k, LM_CLIENT_ERR_CLOSED);
}

static void conn_update_reading(cconn *k)
{
    if (k->state == K_CLOSING || k->state == K_CONNECTING) return;
    bool want = true;
    if (k->state == K_ACTIVE) {
        creq *r = k->req;
        want = r && !r->paused && !k->pending_in.len && !k->held_body.len && !k->complete_held &&
               !k->msg_complete;
    }
    if (want && !k->reading) {
        if (uv_read_start((uv_stream_t *)&k->tcp, on_alloc, on_read) == 0) k->reading = true;
    } else if (!want && k->reading) {
        uv_read_stop((uv_stream_t *)&k->tcp);
        k->reading = false;
    }
}

/* ---- dispatch and connect --------------------------------------------------------------- */

static void on_conn_timer(uv_timer_t *t)
{
    cconn *k = t->data;
    if (k->state == K_CLOSING) return;
    if (k->state == K_CONNECTING) {
        if (k->by_name) lm_dnscache_forget(k->c->dns, k->o->host);
        creq *r = k->req;
        if (r) {
            detach(k, r);
            conn_close(k, true);
            req_complete(r, LM_CLIENT_ERR_CONNECT_TIMEOUT);
        } else {
            conn_close(k, true);
        }
        return;
    }
    if (k->state == K_ACTIVE) conn_failed(k, LM_CLIENT_ERR_RESPONSE_TIMEOUT);
}

/* Sends r on the connected k. Called from user-reachable paths: never calls back. */
static void dispatch(cconn *k, creq *r)
{
    lm_client *c = k->c;
    k->req = r;
    r->k = k;
    r->state = R_ACTIVE;
    k->state = K_ACTIVE;
    conn_set_ref(k, true);
    llhttp_init(&k->parser, HTTP_RESPONSE, &settings);
    k->parser.data = k;
    k->any_bytes = k->msg_complete = k->informational = k->complete_held = false;
    k->keep_alive = false;
    k->fail_err = LM_CLIENT_OK;
    lm_buf_reset(&k->out);
    r->reused = k->requests > 0;
    if (r->reused) STAT_ADD(c, reuses, 1);
    k->requests++;
    if (r->response_to != LM_CLIENT_NO_TIMEOUT)
        uv_timer_start(&k->timer, on_conn_timer, r->response_to, 0);
    else
        uv_timer_stop(&k->timer);
    conn_update_reading(k);
    uv_buf_t wb = uv_buf_init(r->wire.data, (unsigned)r->wire.len);
    if (r->wire.len && !conn_sendv(k, &wb, 1)) {
        if (r->reused && r->retriable && !r->retried) {
            /* the pooled connection is already dead: same as a reset before the response */
            detach(k, r);
            conn_close(k, false);
            r->retried = true;
            STAT_ADD(c, retries, 1);
            conn_new(r->o, r);
            return;
        }
        conn_failed_later(k, LM_CLIENT_ERR_CLOSED);
        return;
    }
    /* all of it went out at once: no write callback will announce the drain */
    if (r->want_drain && !k->writing) conn_resume_later(k);
}

static void on_connect(uv_connect_t *cr, int status)
{
    cconn *k = cr->data;
    if (status == UV_ECANCELED || k->state == K_CLOSING) return;
    uv_timer_stop(&k->timer);
    creq *r = k->req;
    if (status < 0) {
        /* a cached address may be stale: the next connection asks the resolver again */
        if (k->by_name) lm_dnscache_forget(k->c->dns, k->o->host);
        if (r) detach(k, r);
        conn_close(k, true);
        if (r) req_complete(r, LM_CLIENT_ERR_CONNECT);
        return;
    }
    uv_tcp_nodelay(&k->tcp, 1);
    if (r) {
        dispatch(k, r);
    } else { /* its request was cancelled while connecting: serve the next one */
        pool_put(k);
        origin_pump(k->o);
    }
}

static bool connect_start(cconn *k, const struct sockaddr *sa)
{
    k->connect_req.data = k;
    return uv_tcp_connect(&k->connect_req, &k->tcp, sa, on_connect) == 0;
}

static void on_resolved(uv_getaddrinfo_t *g, int status, struct addrinfo *res)
{
    cconn *k = g->data;
    k->gai_active = false;
    if (k->state == K_CLOSING) {
        if (res) uv_freeaddrinfo(res);
        conn_unref(k);
        return;
    }
    conn_unref(k); /* not the last ref: the handles are open */
    creq *r = k->req;
    const struct addrinfo *pick_ai = NULL;
    for (const struct addrinfo *ai = status == 0 ? res : NULL; ai; ai = ai->ai_next) {
        if (ai->ai_family == AF_INET) { /* IPv4 first: no happy-eyeballs fallback here */
            pick_ai = ai;
            break;
        }
        if (ai->ai_family == AF_INET6 && !pick_ai) pick_ai = ai;
    }
    if (pick_ai)
        lm_dnscache_put(k->c->dns, k->o->host, pick_ai->ai_addr, uv_now(k->c->loop));
    else if (status == UV_EAI_NONAME || status == UV_EAI_NODATA || status == 0)
        lm_dnscache_put_negative(k->c->dns, k->o->host, uv_now(k->c->loop)); /* not transient */
    bool ok = pick_ai && connect_start(k, pick_ai->ai_addr);
    if (res) uv_freeaddrinfo(res);
    if (ok) return;
    uv_timer_stop(&k->timer);
    if (r) detach(k, r);
    conn_close(k, true);
    if (r) req_complete(r, pick_ai ? LM_CLIENT_ERR_CONNECT : LM_CLIENT_ERR_RESOLVE);
}

/* Opens a connection for r (which is not queued anywhere). Never calls back. */
static void conn_new(origin *o, creq *r)
{
    lm_client *c = o->c;
    cconn *k = lm_xcalloc(1, sizeof *k);
    k->c = c;
    k->o = o;
    k->a_next = c->conns;
    if (c->conns) c->conns->a_prev = k;
    c->conns = k;
    o->refs++;
    o->n_conns++;
    c->live_conns++;
    STAT_ADD(c, connects, 1);
    STAT_ADD(c, conns_open, 1);
    uv_tcp_init(c->loop, &k->tcp);
    uv_timer_init(c->loop, &k->timer);
    k->tcp.data = k->timer.data = k;
    k->refs = 2;
    k->ref_on = true;
    k->state = K_CONNECTING;
    k->req = r;
    r->k = k;
    r->state = R_CONNECTING;
    if (r->connect_to != LM_CLIENT_NO_TIMEOUT)
        uv_timer_start(&k->timer, on_conn_timer, r->connect_to, 0);
    bool ok;
    lm_client_err err = LM_CLIENT_ERR_CONNECT;
    struct sockaddr_storage cached;
    lm_dns_result dr =
        o->numeric ? LM_DNS_MISS : lm_dnscache_get(c->dns, o->host, uv_now(c->loop), &cached);
    k->by_name = !o->numeric;
    if (o->numeric) {
        ok = connect_start(k, (const struct sockaddr *)&o->addr);
    } else if (dr == LM_DNS_HIT) {
        STAT_ADD(c, resolve_cache_hits, 1);
        if (cached.ss_family == AF_INET)
            ((struct sockaddr_in *)&cached)->sin_port = htons((uint16_t)o->port);
        else
            ((struct sockaddr_in6 *)&cached)->sin6_port = htons((uint16_t)o->port);
        ok = connect_start(k, (const struct sockaddr *)&cached);
    } else if (dr == LM_DNS_NEGATIVE) {
        STAT_ADD(c, resolve_cache_hits, 1);
        ok = false;
        err = LM_CLIENT_ERR_RESOLVE;
    } else {
        STAT_ADD(c, resolves, 1);
        char port[8];
        snprintf(port, sizeof port, "%d", o->port);
        struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_protocol = IPPROTO_TCP};
        k->gai.data = k;
        ok = uv_getaddrinfo(c->loop, &k->gai, on_resolved, o->host, port, &hints) == 0;
        if (ok) {
            k->gai_active = true;
            k->refs++;
        } else {
            err = LM_CLIENT_ERR_RESOLVE;
        }
    }
    if (!ok) {
        detach(k, r);
        conn_close(k, false);
        req_fail_later(r, err);
    }
}

/* ---- building requests ------------------------------------------------------------------ */

static bool is_tchar(unsigned char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           (ch && strchr("!#$%&'*+-.^_`|~", ch));
}

static bool valid_token(const char *s, size_t n)
{
    if (n == 0) return false;
    for (size_t i = 0; i < n; i++)
        if (!is_tchar((unsigned char)s[i])) return false;
    return true;
}

/* field-value: no control characters but HTAB (so no CR/LF/NUL: no request splitting) */
static bool valid_value(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if ((ch < 0x20 && ch != '\t') || ch == 0x7f) return false;
    }
    return true;
}

static bool valid_path(const char *p)
{
    if (strcmp(p, "*") == 0) return true;
    if (p[0] != '/') return false;
    for (const unsigned char *s = (const unsigned char *)p; *s; s++)
        if (*s <= 0x20 || *s == 0x7f) return false;
    return true;
}

static bool is_framing_header(const char *name, size_t n)
{
    static const char *const drop[] = {"content-length", "transfer-encoding", "connection",
                                       "keep-alive",     "upgrade",           "proxy-connection"};
    for (size_t i = 0; i < sizeof drop / sizeof drop[0]; i++)
        if (strlen(drop[i]) == n && strncasecmp(drop[i], name, n) == 0) return true;
    return false;
}

static bool build_wire(creq *r, const lm_client_opts *op, origin *o)
{
    lm_buf *w = &r->wire;
    lm_buf_printf(w, "%s %s HTTP/1.1\r\n", op->method, op->path);
    bool have_host = false;
    for (size_t i = 0; i < op->n_headers; i++) {
        const lm_header *h = &op->headers[i];
        if (!h->name || !h->value) return false;
        size_t nl = h->name_len ? h->name_len : strlen(h->name);
        size_t vl = h->value_len ? h->value_len : strlen(h->value);
        if (!valid_token(h->name, nl) || !valid_value(h->value, vl)) return false;
        if (is_framing_header(h->name, nl)) continue;
        if (nl == 4 && strncasecmp(h->name, "host", 4) == 0) {
            if (have_host) continue;
            have_host = true;
        }
        lm_buf_append(w, h->name, nl);
        lm_buf_append(w, ": ", 2);
        lm_buf_append(w, h->value, vl);
        lm_buf_append(w, "\r\n", 2);
    }
    if (!have_host) lm_buf_printf(w, "Host: %s\r\n", o->host_hdr);
    if (op->stream_body) {
        if (op->stream_length >= 0)
            lm_buf_printf(w, "Content-Length: %lld\r\n", (long long)op->stream_length);
        else
            lm_buf_append_str(w, "Transfer-Encoding: chunked\r\n");
    } else if (op->body_len || !strcmp(op->method, "POST") || !strcmp(op->method, "PUT") ||
               !strcmp(op->method, "PATCH")) {
        lm_buf_printf(w, "Content-Length: %zu\r\n", op->body_len);
    }
    lm_buf_append(w, "\r\n", 2);
    if (!op->stream_body && op->body_len) lm_buf_append(w, op->body, op->body_len);
    return true;
}

static bool idempotent(const char *m)
{
    return !strcmp(m, "GET") || !strcmp(m, "HEAD") || !strcmp(m, "PUT") || !strcmp(m, "DELETE") ||
           !strcmp(m, "OPTIONS");
}

lm_client_req *lm_client_send(lm_client *c, const lm_client_opts *op)
{
    if (c->closing || !op->method || !op->host || !op->path || !op->host[0]) return NULL;
    if (!valid_token(op->method, strlen(op->method)) || !valid_path(op->path)) return NULL;
    if (op->port < 1 || op->port > 65535) return NULL;
    if (op->body_len && (!op->body || op->stream_body)) return NULL;
    if (op->stream_body && op->stream_length < -1) return NULL;
    const char *host = op->host;
    size_t hl = strlen(host);
    if (host[0] == '[' && hl > 2 && host[hl - 1] == ']') {
        host++;
        hl -= 2;
    }
    if (!hl || !valid_value(host, hl) || strcspn(host, " \t/?#@") < hl) return NULL;

    origin *o = origin_get(c, host, hl, op->port);
    creq *r = lm_xcalloc(1, sizeof *r);
    r->c = c;
    r->o = o;
    o->refs++;
    if (!build_wire(r, op, o)) {
        req_free(r);
        return NULL;
    }
    r->stream = op->stream_body;
    r->chunked = op->stream_body && op->stream_length < 0;
    r->declared = op->stream_length;
    r->is_head = !strcmp(op->method, "HEAD");
    r->retriable = !r->stream && idempotent(op->method);
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
            req_fail_later(r, LM_CLIENT_ERR_QUEUE_FULL);
        else
            enqueue(o, r);
    } else if (o->idle) {
        cconn *k = o->idle;
        idle_remove(k);
        dispatch(k, r);
    } else if (o->n_conns < c->cfg.max_conns_per_origin) {
        conn_new(o, r);
    } else if (o->n_queued >= c->cfg.max_queue_per_origin) {
        req_fail_later(r, LM_CLIENT_ERR_QUEUE_FULL);
    } else {
        enqueue(o, r);
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
    req_fail_later(r, err);
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
    if (!conn_sendv(r->k, b, n)) conn_failed_later(r->k, LM_CLIENT_ERR_CLOSED);
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
    if (req_buffered(r) > HIGH_WATER) {
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
        if (!conn_sendv(r->k, &b, 1)) conn_failed_later(r->k, LM_CLIENT_ERR_CLOSED);
    }
}

void lm_client_pause(lm_client_req *r)
{
    if (r->state == R_DONE || r->paused) return;
    r->paused = true;
    if (r->k && r->state == R_ACTIVE) conn_update_reading(r->k);
}

void lm_client_resume(lm_client_req *r)
{
    if (r->state == R_DONE || !r->paused) return;
    r->paused = false;
    if (r->k && r->state == R_ACTIVE) conn_resume_later(r->k);
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
    uv_once(&settings_once, settings_init);
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

static void client_maybe_finalize(lm_client *c)
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
    client_maybe_finalize(c);
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
        if (!k->req) conn_close(k, false);
    uv_close((uv_handle_t *)&c->defer, on_client_handle_closed);
    uv_close((uv_handle_t *)&c->idle_timer, on_client_handle_closed);
    uv_close((uv_handle_t *)&c->queue_timer, on_client_handle_closed);
}

/* ---- URLs ------------------------------------------------------------------------------- */

int lm_client_parse_url(const char *url, lm_client_url *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
#define FAIL(...)                                                                                  \
    do {                                                                                           \
        if (err && errlen) snprintf(err, errlen, __VA_ARGS__);                                     \
        return -1;                                                                                 \
    } while (0)
    if (!url) FAIL("no URL");
    if (strncasecmp(url, "https://", 8) == 0)
        FAIL("'%.200s': https is not supported; the client speaks plain http:// only", url);
    if (strncasecmp(url, "http://", 7) != 0) FAIL("'%.200s': only http:// URLs are supported", url);
    const char *a = url + 7;
    size_t alen = strcspn(a, "/?#");
    const char *rest = a + alen;
    if (memchr(a, '@', alen)) FAIL("'%.200s': user information in URLs is not supported", url);
    const char *host = a;
    size_t hl;
    const char *port_s = NULL;
    size_t pl = 0;
    if (alen && a[0] == '[') {
        const char *close = memchr(a, ']', alen);
        if (!close) FAIL("'%.200s': unterminated IPv6 address", url);
        host = a + 1;
        hl = (size_t)(close - host);
        const char *after = close + 1;
        if (after < a + alen) {
            if (*after != ':') FAIL("'%.200s': junk after the IPv6 address", url);
            port_s = after + 1;
            pl = (size_t)(a + alen - port_s);
        }
        char tmp[64];
        struct sockaddr_in6 sa;
        if (hl == 0 || hl >= sizeof tmp) FAIL("'%.200s': bad IPv6 address", url);
        memcpy(tmp, host, hl);
        tmp[hl] = '\0';
        if (uv_ip6_addr(tmp, 0, &sa) != 0) FAIL("'%.200s': bad IPv6 address", url);
    } else {
        const char *colon = memchr(a, ':', alen);
        hl = colon ? (size_t)(colon - a) : alen;
        if (colon) {
            port_s = colon + 1;
            pl = (size_t)(a + alen - port_s);
        }
        for (size_t i = 0; i < hl; i++) {
            unsigned char ch = (unsigned char)host[i];
            if (!(ch == '-' || ch == '.' || ch == '_' || (ch >= '0' && ch <= '9') ||
                  (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z')))
                FAIL("'%.200s': bad character in host name", url);
        }
    }
    if (hl == 0) FAIL("'%.200s': no host", url);
    if (hl >= sizeof out->host) FAIL("'%.200s': host name too long", url);
    int port = 80;
    if (port_s) {
        if (pl == 0 || pl > 5) FAIL("'%.200s': bad port", url);
        port = 0;
        for (size_t i = 0; i < pl; i++) {
            if (port_s[i] < '0' || port_s[i] > '9') FAIL("'%.200s': bad port", url);
            port = port * 10 + (port_s[i] - '0');
        }
        if (port < 1 || port > 65535) FAIL("'%.200s': port out of range", url);
    }
    size_t plen = strcspn(rest, "#");
    if (plen >= sizeof out->path) FAIL("'%.200s': path too long", url);
    for (size_t i = 0; i < plen; i++)
        if ((unsigned char)rest[i] <= 0x20 || rest[i] == 0x7f)
            FAIL("'%.200s': space or control character in the path", url);
    strcpy(out->scheme, "http");
    memcpy(out->host, host, hl);
    out->host[hl] = '\0';
    out->port = port;
    if (plen && rest[0] == '?') { /* "http://h?x": the path is "/" */
        out->path[0] = '/';
        if (plen + 1 >= sizeof out->path) FAIL("'%.200s': path too long", url);
        memcpy(out->path + 1, rest, plen);
        out->path[plen + 1] = '\0';
    } else {
        memcpy(out->path, rest, plen);
        out->path[plen] = '\0';
    }
    return 0;
#undef FAIL
}
