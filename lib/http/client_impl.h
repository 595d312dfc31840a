/* client_impl.h — the HTTP/1.1 client's insides, shared by its four files and by nothing
 * else (client.h is the contract users see). As h2o splits httpclient, http1client and
 * socketpool:
 *   client.c       lm_client: the API, request lifecycle and completion, deferral, close
 *   client_pool.c  lm_client_pool: origins, their idle stacks and wait queues, pool timers
 *   client_conn.c  lm_client_conn: one connection: connect, write, llhttp response parsing,
 *                  read, pause/resume
 *   client_wire.c  lm_client_wire: a request's bytes on the wire and their validation
 * Everything here runs on the client's loop thread, except the stats counters.
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
 *   request from an idle handle on the next loop turn: lm_client_req_fail_later), except cancel and
 *   close which are documented to; and code that calls on_head/on_body/on_drain checks
 *   afterwards whether the request was aborted meanwhile (abort_pending) before going on.
 *   Connections are freed only from their close callbacks, never under a running frame.
 * - Response parsing pauses llhttp at the end of every message, so completion always runs
 *   outside llhttp_execute and input after a response (never legitimate without pipelining)
 *   marks the connection unusable.
 * - Host names go through the client's lm_dnscache before getaddrinfo (lm_client_conn_new): a hit
 *   connects at once, with no thread-pool round trip; on_resolved fills it, and a failed
 *   connect (or connect timeout) to an address got by name drops the name's entry. */
#ifndef LM_CLIENT_IMPL_H
#define LM_CLIENT_IMPL_H

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
    /* observation (opts.span set): the call's span context, start, method and path */
    bool traced;
    lm_trace_ctx span;
    uint64_t start_ns;
    char method[16];
    char *path; /* owned */
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
    bool refused; /* a 408 answered the request: the server did not take it, resend it */
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

/* ---- small list helpers ---------------------------------------------------------------- */

static inline void q_append(creq **head, creq **tail, creq *r)
{
    r->q_next = NULL;
    r->q_prev = *tail;
    if (*tail)
        (*tail)->q_next = r;
    else
        *head = r;
    *tail = r;
}

static inline void q_remove(creq **head, creq **tail, creq *r)
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

static inline uint64_t pick(uint64_t v, uint64_t dflt)
{
    return v ? v : dflt;
}

/* ---- client.c -------------------------------------------------------------------------- */

void lm_client_defer_start(lm_client *c);
void lm_client_req_fail_later(creq *r, lm_client_err err);
void lm_client_req_complete(creq *r, lm_client_err err);
bool lm_client_call_head(creq *r);
bool lm_client_call_body(creq *r, const char *data, size_t len);
bool lm_client_call_drain(creq *r);
void lm_client_maybe_finalize(lm_client *c);

/* ---- client_pool.c --------------------------------------------------------------------- */

origin *lm_client_pool_origin_get(lm_client *c, const char *host, size_t host_len, int port);
void lm_client_pool_origin_unref(origin *o);
void lm_client_pool_enqueue(origin *o, creq *r);
void lm_client_pool_dequeue(creq *r);
void lm_client_pool_idle_remove(cconn *k);
void lm_client_pool_origin_pump(origin *o);
void lm_client_pool_on_idle_timer(uv_timer_t *t);

/* ---- client_conn.c --------------------------------------------------------------------- */

/* The llhttp settings, once per process (lm_client_new). */
void lm_client_conn_init(void);
void lm_client_conn_set_ref(cconn *k, bool on);
void lm_client_conn_close(cconn *k, bool pump);
void lm_client_conn_detach(cconn *k, creq *r);
void lm_client_conn_resume_later(cconn *k);
void lm_client_conn_failed_later(cconn *k, lm_client_err err);
size_t lm_client_conn_req_buffered(const creq *r);
bool lm_client_conn_sendv(cconn *k, uv_buf_t *bufs, unsigned n);
void lm_client_conn_resume_work(cconn *k);
void lm_client_conn_update_reading(cconn *k);
void lm_client_conn_dispatch(cconn *k, creq *r);
void lm_client_conn_new(origin *o, creq *r);

/* ---- client_wire.c --------------------------------------------------------------------- */

bool lm_client_wire_valid_token(const char *s, size_t n);
bool lm_client_wire_valid_value(const char *s, size_t n);
bool lm_client_wire_valid_path(const char *p);
bool lm_client_wire_build(creq *r, const lm_client_opts *op, origin *o);
bool lm_client_wire_idempotent(const char *m);

#endif
