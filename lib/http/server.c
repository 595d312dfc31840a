/* server.c — libuv transport for the HTTP engine: listeners, connections, writes,
 * timeouts, graceful shutdown, dispatch through the router. See server.h. */
#include "server.h"

#include "log.h"
#include "problem.h"

#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define READ_BUF_SIZE  (64 * 1024)
#define OUT_HIGH_WATER (256 * 1024)
#define OUT_LOW_WATER  (64 * 1024)
#define SWEEP_MS       250
#define LINGER_MS      2000

typedef struct srv_conn srv_conn;

struct lm_worker {
    int index;
    lm_server *server;
    uv_loop_t loop;
    uv_thread_t thread;
    int listen_fd;
    uv_tcp_t listener;
    uv_async_t wake;
    uv_timer_t sweep;
    uv_check_t log_flush;
    srv_conn *conns; /* intrusive list */
    size_t n_conns;
    bool stopping;
    uint64_t stop_deadline;
    uint64_t refused, refused_logged_at; /* connections over the limit, not yet logged */
    uint64_t refused_addr;               /* over the per-address limit, not yet logged */
    uint64_t shed;                       /* idle connections closed for new ones, not logged */
    size_t closing_conns;                /* closed, handle not yet released */
    char readbuf[READ_BUF_SIZE];
};

/* Open connections per client address, for the whole process (every worker). */
#define ADDR_BUCKETS 4096
typedef struct addr_count {
    struct addr_count *next;
    uint32_t n;
    char ip[48];
} addr_count;

struct lm_server {
    lm_server_config cfg;
    pthread_mutex_t addr_mu;
    addr_count *addrs[ADDR_BUCKETS];
    const lm_router *router;
    lm_server_observer obs;
    lm_worker *workers;
    int n_workers;
    int port;
    size_t max_conns_per_worker;
    uv_sem_t started;
    int start_error;
    lm_worker_hook on_start, on_stop;
    void *hook_ctx;
    /* set by lm_server_shutdown before it wakes the workers, read by them: atomic, since
     * the wake-up (uv_async_send) orders it in fact but not for ThreadSanitizer */
    _Atomic uint64_t shutdown_deadline_ms;
    bool running;
};

struct srv_conn {
    uv_tcp_t tcp;
    lm_conn http;
    lm_worker *w;
    srv_conn *prev, *next;
    uv_write_t wreq;
    uv_shutdown_t sreq;
    lm_buf inflight; /* bytes handed to uv_write */
    bool writing, reading, closing, closed, shut;
    lm_conn_state seen_state;
    uint64_t seen_requests;
    uint64_t state_since, last_write_progress, linger_until;
    char peer[64];    /* "ip:port", for the access log */
    char peer_ip[48]; /* for X-Forwarded-For */
    bool counted;     /* in the server's per-address counts */
};

static _Thread_local lm_worker *current_worker;

lm_worker *lm_worker_current(void)
{
    return current_worker;
}
uv_loop_t *lm_worker_loop(lm_worker *w)
{
    return &w->loop;
}
int lm_worker_index(const lm_worker *w)
{
    return w->index;
}
int lm_server_worker_count(const lm_server *s)
{
    return s->n_workers;
}
int lm_server_port(const lm_server *s)
{
    return s->port;
}
uv_loop_t *lm_req_loop(const lm_req *req)
{
    return &req->worker->loop;
}
int lm_req_worker_index(const lm_req *req)
{
    return req->worker ? req->worker->index : 0;
}

void lm_server_config_default(lm_server_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->host = "127.0.0.1";
    cfg->port = 8080;
    cfg->workers = 1;
    lm_conn_limits_default(&cfg->limits);
    cfg->max_connections = 10000;
    cfg->header_timeout_ms = 10000;
    cfg->body_timeout_ms = 30000;
    cfg->idle_timeout_ms = 60000;
    cfg->write_timeout_ms = 30000;
    cfg->access_log = true;
}

/* ---- connection lifecycle ------------------------------------------------------------- */

static void conn_flush(srv_conn *sc);
static void conn_close(srv_conn *sc);

static void list_remove(srv_conn *sc)
{
    lm_worker *w = sc->w;
    if (sc->prev)
        sc->prev->next = sc->next;
    else
        w->conns = sc->next;
    if (sc->next) sc->next->prev = sc->prev;
    sc->prev = sc->next = NULL;
}

static void conn_release(srv_conn *sc)
{
    /* freed only when libuv is done with the handle and no handler holds the request */
    if (!sc->closed || lm_conn_busy(&sc->http) || sc->writing) return;
    lm_conn_free(&sc->http);
    lm_buf_free(&sc->inflight);
    free(sc);
}

static addr_count **addr_slot(lm_server *s, const char *ip)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    for (const char *p = ip; *p; p++)
        h = (h ^ (unsigned char)*p) * 0x100000001b3ULL;
    addr_count **pp = &s->addrs[h % ADDR_BUCKETS];
    while (*pp && strcmp((*pp)->ip, ip) != 0)
        pp = &(*pp)->next;
    return pp;
}

/* Counts a new connection from ip; false (nothing counted) when the address is at its cap. */
static bool addr_acquire(lm_server *s, const char *ip)
{
    if (!s->cfg.max_connections_per_address || !ip[0]) return true;
    pthread_mutex_lock(&s->addr_mu);
    addr_count **pp = addr_slot(s, ip);
    bool ok = true;
    if (!*pp) {
        *pp = lm_xcalloc(1, sizeof **pp);
        snprintf((*pp)->ip, sizeof(*pp)->ip, "%s", ip);
    }
    if ((*pp)->n >= s->cfg.max_connections_per_address)
        ok = false;
    else
        (*pp)->n++;
    pthread_mutex_unlock(&s->addr_mu);
    return ok;
}

static void addr_release(lm_server *s, const char *ip)
{
    pthread_mutex_lock(&s->addr_mu);
    addr_count **pp = addr_slot(s, ip);
    if (*pp && --(*pp)->n == 0) {
        addr_count *dead = *pp;
        *pp = dead->next;
        free(dead);
    }
    pthread_mutex_unlock(&s->addr_mu);
}

static void on_closed(uv_handle_t *h)
{
    srv_conn *sc = h->data;
    lm_worker *w = sc->w;
    list_remove(sc);
    w->n_conns--;
    w->closing_conns--;
    if (sc->counted) addr_release(w->server, sc->peer_ip);
    if (w->server->obs.connection) w->server->obs.connection(w->server->obs.ctx, w->index, -1);
    sc->closed = true;
    sc->writing = false; /* uv_close cancels pending writes; their callbacks ran */
    conn_release(sc);
}

static void conn_close(srv_conn *sc)
{
    if (sc->closing) return;
    sc->closing = true;
    sc->w->closing_conns++;
    if (sc->counted) { /* a connection being closed no longer counts against its address */
        sc->counted = false;
        addr_release(sc->w->server, sc->peer_ip);
    }
    lm_conn_abandon(&sc->http);
    uv_close((uv_handle_t *)&sc->tcp, on_closed);
}

/* Timeouts run from when the current state began. A request answered synchronously goes
 * IDLE -> ... -> IDLE within one read, so a finished request also counts as a new state:
 * otherwise a busy keep-alive connection is closed as idle (and a pipelined request's header
 * timeout runs from the previous request's start). */
static void note_state(srv_conn *sc)
{
    if (sc->http.state != sc->seen_state || sc->http.requests != sc->seen_requests) {
        sc->seen_state = sc->http.state;
        sc->seen_requests = sc->http.requests;
        sc->state_since = uv_now(&sc->w->loop);
    }
}

static void update_reading(srv_conn *sc);

static void on_shutdown(uv_shutdown_t *req, int status)
{
    srv_conn *sc = req->data;
    if (status < 0 || sc->closing) {
        conn_close(sc);
        return;
    }
    /* Lingering close: keep reading (and discarding) briefly so that a client still sending
     * does not get a reset that destroys the response it has not read yet. */
    sc->linger_until = uv_now(&sc->w->loop) + LINGER_MS;
    update_reading(sc);
}

static void maybe_finish(srv_conn *sc)
{
    if (sc->closing) return;
    if (sc->http.state != LM_CONN_CLOSING || sc->writing || sc->http.out.len) return;
    if (sc->shut) return;
    sc->shut = true;
    sc->sreq.data = sc;
    if (uv_shutdown(&sc->sreq, (uv_stream_t *)&sc->tcp, on_shutdown) != 0) conn_close(sc);
}

static void on_write(uv_write_t *req, int status)
{
    srv_conn *sc = req->data;
    sc->writing = false;
    lm_buf_reset(&sc->inflight);
    if (sc->closed) {
        conn_release(sc);
        return;
    }
    if (status < 0) {
        conn_close(sc);
        return;
    }
    sc->last_write_progress = uv_now(&sc->w->loop);
    conn_flush(sc); /* what accumulated meanwhile; resumes a parser stopped for output */
    update_reading(sc);
}

/* Writes conn output: what the socket takes now, the rest through one uv_write at a time.
 * When everything is written and the engine had stopped parsing for output (out_blocked),
 * parsing resumes here, which may produce more output: hence the loop. */
static void conn_flush(srv_conn *sc)
{
    lm_buf *out = &sc->http.out;
    for (;;) {
        if (sc->closing || sc->writing) return;
        if (out->len) {
            uv_buf_t b = uv_buf_init(out->data, (unsigned)out->len);
            int n = uv_try_write((uv_stream_t *)&sc->tcp, &b, 1);
            if (n > 0) {
                lm_buf_consume(out, (size_t)n);
                sc->last_write_progress = uv_now(&sc->w->loop);
            } else if (n < 0 && n != UV_EAGAIN) {
                conn_close(sc);
                return;
            }
        }
        if (out->len) {
            /* hand the rest to libuv: swap buffers so new output keeps accumulating */
            lm_buf tmp = sc->inflight;
            sc->inflight = *out;
            *out = tmp;
            lm_buf_reset(out);
            uv_buf_t b = uv_buf_init(sc->inflight.data, (unsigned)sc->inflight.len);
            sc->wreq.data = sc;
            if (uv_write(&sc->wreq, (uv_stream_t *)&sc->tcp, &b, 1, on_write) != 0) {
                conn_close(sc);
                return;
            }
            sc->writing = true;
            if (sc->inflight.len > OUT_HIGH_WATER) sc->http.out_blocked = true;
            return;
        }
        bool was_blocked = sc->http.out_blocked;
        sc->http.out_blocked = false;
        if (sc->http.drain_cb) { /* a streaming response may go on */
            lm_conn_drained(&sc->http);
            if (out->len) continue;
        }
        if (!was_blocked) break;
        lm_conn_resume(&sc->http);
        note_state(sc);
        if (!out->len) break;
    }
    maybe_finish(sc);
}

/* ---- reading -------------------------------------------------------------------------- */

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    srv_conn *sc = h->data;
    (void)suggested;
    /* libuv calls read_cb before the next alloc on this loop: one buffer per worker */
    *buf = uv_buf_init(sc->w->readbuf, READ_BUF_SIZE);
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
    srv_conn *sc = stream->data;
    if (nread > 0) {
        if (sc->shut) return; /* lingering: discard */
        lm_conn_feed(&sc->http, buf->base, (size_t)nread);
        note_state(sc);
        conn_flush(sc);
        update_reading(sc);
    } else if (nread == UV_EOF) {
        if (sc->shut) {
            conn_close(sc);
            return;
        }
        lm_conn_eof(&sc->http);
        note_state(sc);
        if (sc->http.state == LM_CONN_CLOSING && !sc->http.out.len && !sc->writing) {
            conn_close(sc);
            return;
        }
        uv_read_stop(stream);
        sc->reading = false;
        conn_flush(sc);
    } else if (nread < 0) {
        conn_close(sc);
    }
}

static void update_reading(srv_conn *sc)
{
    if (sc->closing || sc->http.eof) return;
    bool want = lm_conn_wants_input(&sc->http);
    if (want && !sc->reading) {
        if (uv_read_start((uv_stream_t *)&sc->tcp, on_alloc, on_read) == 0) sc->reading = true;
    } else if (!want && sc->reading) {
        uv_read_stop((uv_stream_t *)&sc->tcp);
        sc->reading = false;
    }
}

/* ---- engine callbacks ------------------------------------------------------------------ */

static void engine_output(lm_conn *c)
{
    srv_conn *sc = c->owner;
    if (sc->closed) {
        conn_release(sc);
        return;
    }
    if (sc->closing) return;
    lm_conn_resume(c);
    note_state(sc);
    conn_flush(sc);
    update_reading(sc);
}

static void engine_dispatch(lm_conn *c, lm_req *req)
{
    srv_conn *sc = c->owner;
    lm_worker *w = sc->w;
    lm_server *s = w->server;
    const char *rid = lm_req_header(req, "x-request-id");
    lm_trace_request_id_assign(rid, rid ? strlen(rid) : 0, req->request_id);
    const char *tp = lm_req_header(req, "traceparent");
    lm_trace_begin(&req->trace, tp, tp ? strlen(tp) : 0);
    if (s->obs.request_started) s->obs.request_started(s->obs.ctx, w->index, req);

    int rc = lm_router_match(s->router, req->method, req->path, req->path_len, &req->route);
    if (rc == LM_ROUTE_NOT_FOUND) {
        lm_resp_problemf(req, 404, "no resource at %.200s", req->path);
        return;
    }
    if (rc == LM_ROUTE_METHOD_NOT_ALLOWED) {
        lm_resp_header(req, "Allow", req->route.allow);
        lm_resp_problemf(req, 405, "%s is not allowed here; allowed: %s", req->method,
                         req->route.allow);
        return;
    }
    /* decode path parameters into the connection's parameter buffer */
    lm_buf *pb = &c->params;
    size_t offs[LM_ROUTE_MAX_PARAMS];
    lm_buf_reset(pb);
    for (size_t i = 0; i < req->route.n_params; i++) {
        const lm_route_param *p = &req->route.params[i];
        size_t n;
        offs[i] = pb->len;
        lm_buf_reserve(pb, p->raw_len + 1);
        if (!lm_url_decode(p->raw, p->raw_len, pb->data + pb->len, &n, false)) {
            lm_resp_problemf(req, 400, "malformed percent-encoding in path parameter '%s'",
                             p->name);
            return;
        }
        pb->len += n + 1;
    }
    for (size_t i = 0; i < req->route.n_params; i++)
        req->params[i] = pb->data + offs[i];
    if (req->query_len && lm_query_parse(req->query_string, req->query_len, &req->query) != 0) {
        lm_resp_problem(req, 400, "malformed percent-encoding in query string");
        return;
    }
    if (s->cfg.guard &&
        !strncmp(req->route.template_path, s->cfg.guard_prefix, strlen(s->cfg.guard_prefix)) &&
        !s->cfg.guard(req, s->cfg.guard_ctx))
        return;
    req->route.handler(req, req->route.ctx);
}

static void engine_completed(lm_conn *c, lm_req *req, int status, uint64_t bytes)
{
    srv_conn *sc = c->owner;
    lm_worker *w = sc->w;
    lm_server *s = w->server;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    uint64_t now_ns = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
    double secs = req->start_ns ? (double)(now_ns - req->start_ns) / 1e9 : 0;
    bool dispatched = req->request_id[0] != '\0';
    if (s->obs.request_done)
        s->obs.request_done(s->obs.ctx, w->index, req, status, secs, dispatched);
    if (s->cfg.access_log) {
        lm_access_entry e = {
            .method = req->method ? req->method : "-",
            .path = req->path ? req->path : "-",
            .path_len = req->path ? req->path_len : 1,
            .status = status,
            .bytes_out = bytes,
            .duration_ms = secs * 1e3,
            .route = dispatched && req->route.template_path ? req->route.template_path : NULL,
            .peer = sc->peer,
            .ctx = {.request_id = dispatched ? req->request_id : NULL, .trace = &req->trace},
        };
        lm_log_access(&e);
    }
}

/* At headers complete: does the request's route take its body as a stream? */
static bool engine_stream(lm_conn *c, lm_req *req)
{
    srv_conn *sc = c->owner;
    lm_route_match m;
    return lm_router_match(sc->w->server->router, req->method, req->path, req->path_len, &m) ==
               LM_ROUTE_FOUND &&
           (m.flags & LM_ROUTE_STREAM_BODY);
}

static const lm_conn_ops engine_ops = {engine_dispatch, engine_output, engine_completed,
                                       engine_stream};

/* ---- accepting ------------------------------------------------------------------------- */

/* The client's address: ip (for X-Forwarded-For) and "ip:port" (for the access log). */
static void peer_name(srv_conn *sc)
{
    struct sockaddr_storage ss;
    int sl = sizeof ss;
    sc->peer[0] = sc->peer_ip[0] = '\0';
    if (uv_tcp_getpeername(&sc->tcp, (struct sockaddr *)&ss, &sl) != 0) return;
    if (ss.ss_family == AF_INET) {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        uv_ip4_name(a, sc->peer_ip, sizeof sc->peer_ip);
        snprintf(sc->peer, sizeof sc->peer, "%s:%d", sc->peer_ip, ntohs(a->sin_port));
    } else if (ss.ss_family == AF_INET6) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        uv_ip6_name(a, sc->peer_ip, sizeof sc->peer_ip);
        snprintf(sc->peer, sizeof sc->peer, "[%s]:%d", sc->peer_ip, ntohs(a->sin6_port));
    }
}

void lm_req_peer_ip(const lm_req *req, char *out, size_t len)
{
    const srv_conn *sc = req->conn_ ? req->conn_->owner : NULL;
    snprintf(out, len, "%s", sc ? sc->peer_ip : "");
}

static void on_reject_closed(uv_handle_t *h)
{
    free(h);
}

/* One line per second at most: a connection flood must not become a log flood (each line is
 * a write on this loop). The sweep logs what was counted since. */
static void log_refused(lm_worker *w)
{
    lm_log_warn("connection limits: refused %llu connection(s) over the limit of %zu per worker "
                "and %llu over the limit of %zu per client address; closed %llu idle "
                "connection(s) to make room",
                (unsigned long long)w->refused, w->server->max_conns_per_worker,
                (unsigned long long)w->refused_addr, w->server->cfg.max_connections_per_address,
                (unsigned long long)w->shed);
    w->refused = w->refused_addr = w->shed = 0;
    w->refused_logged_at = uv_now(&w->loop);
}
static void on_accept_failed_closed(uv_handle_t *h)
{
    free(h->data); /* the srv_conn */
}

static void conn_accepted(lm_worker *w, srv_conn *sc);

static void on_connection(uv_stream_t *listener, int status)
{
    lm_worker *w = listener->data;
    if (status < 0) {
        lm_log_warn("accept failed: %s", uv_strerror(status));
        return;
    }
    if (w->stopping) {
        uv_tcp_t *t = lm_xmalloc(sizeof *t);
        uv_tcp_init(&w->loop, t);
        uv_accept(listener, (uv_stream_t *)t);
        uv_close((uv_handle_t *)t, on_reject_closed);
        return;
    }
    srv_conn *sc = lm_xcalloc(1, sizeof *sc);
    sc->w = w;
    uv_tcp_init(&w->loop, &sc->tcp);
    sc->tcp.data = sc;
    if (uv_accept(listener, (uv_stream_t *)&sc->tcp) != 0) {
        /* the handle is registered with the loop since uv_tcp_init: close, then free */
        uv_close((uv_handle_t *)&sc->tcp, on_accept_failed_closed);
        return;
    }
    conn_accepted(w, sc);
}

/* A connection just accepted (sc->tcp open): limits, then it joins the worker. */
static void conn_accepted(lm_worker *w, srv_conn *sc)
{
    lm_server *s = w->server;
    peer_name(sc);
    if (!addr_acquire(s, sc->peer_ip)) {
        w->refused_addr++;
        if (w->refused_logged_at == 0) log_refused(w); /* the first at once */
        uv_close((uv_handle_t *)&sc->tcp, on_accept_failed_closed);
        return;
    }
    sc->counted = s->cfg.max_connections_per_address && sc->peer_ip[0];
    if (w->n_conns - w->closing_conns >= s->max_conns_per_worker) {
        /* under pressure the longest-idle keep-alive connection gives way: a crowd of
         * silent connections cannot lock active clients out */
        srv_conn *victim = NULL;
        for (srv_conn *v = w->conns; v; v = v->next)
            if (!v->closing && v->http.state == LM_CONN_IDLE && !v->writing && !v->http.out.len &&
                !lm_conn_busy(&v->http) && (!victim || v->state_since <= victim->state_since))
                victim = v;
        if (victim) {
            w->shed++;
        } else {
            w->refused++;
        }
        if (w->refused_logged_at == 0) log_refused(w); /* the first at once */
        if (victim) {
            conn_close(victim); /* counted out when its handle has closed */
        } else {
            if (sc->counted) addr_release(s, sc->peer_ip);
            uv_close((uv_handle_t *)&sc->tcp, on_accept_failed_closed);
            return;
        }
    }
    uv_tcp_nodelay(&sc->tcp, 1);
    lm_conn_init(&sc->http, &s->cfg.limits, &engine_ops, sc);
    sc->http.worker = w;
    sc->http.req.worker = w;
    sc->http.req.conn_ = &sc->http;
    sc->seen_state = LM_CONN_IDLE;
    sc->state_since = sc->last_write_progress = uv_now(&w->loop);
    sc->next = w->conns;
    if (w->conns) w->conns->prev = sc;
    w->conns = sc;
    w->n_conns++;
    if (s->obs.connection) s->obs.connection(s->obs.ctx, w->index, 1);
    update_reading(sc);
}

/* ---- timeouts and shutdown ----------------------------------------------------------- */

static void close_worker_handles(lm_worker *w)
{
    lm_server *s = w->server;
    if (s->on_stop) s->on_stop(w, s->hook_ctx); /* modules close their handles on this loop */
    uv_close((uv_handle_t *)&w->sweep, NULL);
    uv_close((uv_handle_t *)&w->wake, NULL);
    uv_close((uv_handle_t *)&w->log_flush, NULL);
}

/* Ends an idle keep-alive connection of a draining server so that its client can tell that
 * nothing was processed. Closing it bare races a request the client sends on it at that
 * moment: the client sees the connection closed before any byte of a response and cannot know
 * whether the request ran (a create without Idempotency-Key could not be repeated). Instead
 * the connection gets a 408 with Connection: close (RFC 9110 15.5.9: no complete request was
 * received) before anything was read from it, then the lingering close, which discards what
 * arrives. A pool reading its idle connection drops it; a request that crossed the 408 gets
 * it as its answer and is certain it was not processed (lm_client sends it again on a fresh
 * connection; the call policy counts 408 as a refusal, retried for any method). */
static void drain_idle(srv_conn *sc)
{
    lm_conn_fail(&sc->http, 408, "the server is shutting down; no request was read");
    note_state(sc);
    conn_flush(sc);
    update_reading(sc);
}

static void on_sweep(uv_timer_t *t)
{
    lm_worker *w = t->data;
    lm_server *s = w->server;
    uint64_t now = uv_now(&w->loop);
    bool force = w->stopping && now >= w->stop_deadline;
    srv_conn *next;
    for (srv_conn *sc = w->conns; sc; sc = next) {
        next = sc->next;
        if (sc->closing) continue;
        uint64_t age = now - sc->state_since;
        lm_conn *c = &sc->http;
        if (force) {
            conn_close(sc);
        } else if (sc->writing && now - sc->last_write_progress > s->cfg.write_timeout_ms) {
            conn_close(sc); /* the client does not read its responses */
        } else if (sc->shut) {
            if (now >= sc->linger_until) conn_close(sc);
        } else if (c->state == LM_CONN_IDLE && !sc->writing && !c->out.len) {
            if (w->stopping)
                drain_idle(sc);
            else if (age > s->cfg.idle_timeout_ms)
                conn_close(sc);
        } else if (c->state == LM_CONN_HEAD && age > s->cfg.header_timeout_ms) {
            lm_conn_fail(c, 408, "request headers not received in time");
            note_state(sc);
            conn_flush(sc);
        } else if (c->state == LM_CONN_BODY && age > s->cfg.body_timeout_ms) {
            lm_conn_fail(c, 408, "request body not received in time");
            note_state(sc);
            conn_flush(sc);
        }
    }
    if ((w->refused || w->refused_addr || w->shed) && now - w->refused_logged_at >= 1000)
        log_refused(w);
    lm_log_flush_thread();
    if (w->stopping && w->conns == NULL) close_worker_handles(w);
}

static void on_wake(uv_async_t *a)
{
    lm_worker *w = a->data;
    if (w->stopping) return;
    w->stopping = true;
    w->stop_deadline = uv_now(&w->loop) + atomic_load(&w->server->shutdown_deadline_ms);
    /* Connections the kernel completed but nobody accepted yet would be reset when the
     * listening socket closes — after their clients may have sent a request, which they then
     * cannot tell from one that ran. They are taken in first and end as idle ones do. */
    uv_os_fd_t lfd;
    if (uv_fileno((uv_handle_t *)&w->listener, &lfd) == 0) {
        int fd;
        while ((fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
            srv_conn *sc = lm_xcalloc(1, sizeof *sc);
            sc->w = w;
            uv_tcp_init(&w->loop, &sc->tcp);
            sc->tcp.data = sc;
            if (uv_tcp_open(&sc->tcp, fd) != 0) {
                close(fd);
                uv_close((uv_handle_t *)&sc->tcp, on_accept_failed_closed);
                continue;
            }
            conn_accepted(w, sc);
        }
    }
    uv_close((uv_handle_t *)&w->listener, NULL);
    srv_conn *next;
    for (srv_conn *sc = w->conns; sc; sc = next) {
        next = sc->next; /* a failed write may close sc */
        /* a request in progress is answered with Connection: close (http_resp.c) */
        sc->http.draining = true;
        if (sc->http.state == LM_CONN_IDLE && !sc->writing && !sc->http.out.len && !sc->closing &&
            !sc->shut)
            drain_idle(sc);
    }
    uv_timer_start(&w->sweep, on_sweep, 0, 50);
}

static void on_check(uv_check_t *h)
{
    (void)h;
    lm_log_flush_thread();
}

static void worker_main(void *arg)
{
    lm_worker *w = arg;
    lm_server *s = w->server;
    current_worker = w;
    int rc = uv_tcp_open(&w->listener, w->listen_fd);
    if (rc == 0) rc = uv_listen((uv_stream_t *)&w->listener, 4096, on_connection);
    if (rc != 0) {
        s->start_error = rc;
        uv_sem_post(&s->started);
        return;
    }
    if (s->on_start) s->on_start(w, s->hook_ctx);
    uv_timer_start(&w->sweep, on_sweep, SWEEP_MS, SWEEP_MS);
    uv_check_start(&w->log_flush, on_check);
    uv_unref((uv_handle_t *)&w->log_flush);
    uv_sem_post(&s->started);
    uv_run(&w->loop, UV_RUN_DEFAULT);
    lm_log_thread_end();
}

/* ---- binding --------------------------------------------------------------------------- */

static int make_listen_socket(const struct sockaddr *sa, socklen_t len, bool reuseport)
{
    int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return -errno;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0) {
        int e = -errno;
        close(fd);
        return e;
    }
    if (sa->sa_family == AF_INET6) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    if (bind(fd, sa, len) != 0 || listen(fd, 4096) != 0) {
        int e = -errno;
        close(fd);
        return e;
    }
    return fd;
}

lm_server *lm_server_new(const lm_server_config *cfg, const lm_router *router,
                         const lm_server_observer *observer)
{
    lm_server *s = lm_xcalloc(1, sizeof *s);
    s->cfg = *cfg;
    s->router = router;
    if (observer) s->obs = *observer;
    s->n_workers = cfg->workers > 0 ? cfg->workers : 1;
    s->max_conns_per_worker = cfg->max_connections / (size_t)s->n_workers;
    if (s->max_conns_per_worker == 0) s->max_conns_per_worker = 1;
    pthread_mutex_init(&s->addr_mu, NULL);
    return s;
}

void lm_server_on_worker(lm_server *s, lm_worker_hook start, lm_worker_hook stop, void *ctx)
{
    s->on_start = start;
    s->on_stop = stop;
    s->hook_ctx = ctx;
}

int lm_server_start(lm_server *s, char *err, size_t errlen)
{
    struct addrinfo hints = {.ai_flags = AI_NUMERICHOST | AI_PASSIVE, .ai_socktype = SOCK_STREAM};
    struct addrinfo *ai = NULL;
    int rc = getaddrinfo(s->cfg.host, NULL, &hints, &ai);
    if (rc != 0) {
        snprintf(err, errlen, "cannot use bind address '%s': %s", s->cfg.host, gai_strerror(rc));
        return -EINVAL;
    }
    struct sockaddr_storage ss;
    socklen_t sl = (socklen_t)ai->ai_addrlen;
    memcpy(&ss, ai->ai_addr, ai->ai_addrlen);
    freeaddrinfo(ai);
    uint16_t *portp = ss.ss_family == AF_INET6 ? &((struct sockaddr_in6 *)&ss)->sin6_port
                                               : &((struct sockaddr_in *)&ss)->sin_port;
    *portp = htons((uint16_t)s->cfg.port);

    /* A plain bind first: fails if anyone (even another lotmesh with SO_REUSEPORT) has the
     * port, so two instances never silently share it. It also resolves port 0. */
    int probe = make_listen_socket((struct sockaddr *)&ss, sl, false);
    if (probe < 0) {
        snprintf(err, errlen, "cannot listen on %s:%d: %s", s->cfg.host, s->cfg.port,
                 strerror(-probe));
        return probe;
    }
    struct sockaddr_storage bound;
    socklen_t bl = sizeof bound;
    getsockname(probe, (struct sockaddr *)&bound, &bl);
    *portp = ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&bound)->sin6_port
                                      : ((struct sockaddr_in *)&bound)->sin_port;
    s->port = ntohs(*portp);
    close(probe);

    s->workers = lm_xcalloc((size_t)s->n_workers, sizeof(lm_worker));
    for (int i = 0; i < s->n_workers; i++) {
        lm_worker *w = &s->workers[i];
        w->index = i;
        w->server = s;
        w->listen_fd = make_listen_socket((struct sockaddr *)&ss, sl, true);
        if (w->listen_fd < 0) {
            snprintf(err, errlen, "cannot listen on %s:%d: %s", s->cfg.host, s->port,
                     strerror(-w->listen_fd));
            for (int j = 0; j < i; j++)
                close(s->workers[j].listen_fd);
            rc = w->listen_fd;
            free(s->workers);
            s->workers = NULL;
            return rc;
        }
    }
    uv_sem_init(&s->started, 0);
    for (int i = 0; i < s->n_workers; i++) {
        lm_worker *w = &s->workers[i];
        uv_loop_init(&w->loop);
        uv_tcp_init(&w->loop, &w->listener);
        w->listener.data = w;
        uv_async_init(&w->loop, &w->wake, on_wake);
        w->wake.data = w;
        uv_timer_init(&w->loop, &w->sweep);
        w->sweep.data = w;
        uv_check_init(&w->loop, &w->log_flush);
        uv_thread_create(&w->thread, worker_main, w);
    }
    for (int i = 0; i < s->n_workers; i++)
        uv_sem_wait(&s->started);
    s->running = true;
    if (s->start_error) {
        snprintf(err, errlen, "cannot listen: %s", uv_strerror(s->start_error));
        lm_server_shutdown(s, 0);
        return s->start_error;
    }
    return 0;
}

void lm_server_shutdown(lm_server *s, uint64_t deadline_ms)
{
    if (!s->running) return;
    atomic_store(&s->shutdown_deadline_ms, deadline_ms);
    for (int i = 0; i < s->n_workers; i++)
        uv_async_send(&s->workers[i].wake);
    for (int i = 0; i < s->n_workers; i++) {
        uv_thread_join(&s->workers[i].thread);
        uv_loop_close(&s->workers[i].loop);
    }
    uv_sem_destroy(&s->started);
    s->running = false;
}

void lm_server_free(lm_server *s)
{
    if (!s) return;
    lm_server_shutdown(s, 0);
    for (size_t i = 0; i < ADDR_BUCKETS; i++)
        while (s->addrs[i]) {
            addr_count *next = s->addrs[i]->next;
            free(s->addrs[i]);
            s->addrs[i] = next;
        }
    pthread_mutex_destroy(&s->addr_mu);
    free(s->workers);
    free(s);
}
