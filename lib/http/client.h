/* client.h — the HTTP/1.1 client of the runtime (lm_client): keep-alive pools per origin on a
 * libuv loop, for the gateway's proxying, service-to-service calls and the registry client.
 *
 * One lm_client per event loop. A server worker creates its own in a worker-start hook and
 * closes it in the worker-stop hook; the main control loop may have one too. Everything a
 * client owns (connections, timers, requests) lives on that loop, so nothing here takes a
 * lock. The pieces:
 *
 *   origin      (host, port) of plain http://. Each has a LIFO stack of idle keep-alive
 *               connections (the most recently used one is the warmest and the least likely
 *               to have been closed by the server), a cap on its connections, and a FIFO wait
 *               queue for requests that arrive while the cap is reached.
 *   connection  one TCP connection and one llhttp response parser; one request at a time (no
 *               pipelining). Returned to its origin's pool only when the response was read
 *               completely, the request was sent completely and neither side asked to close.
 *   request     built once into wire bytes (request line, headers, body), sent on a pooled or
 *               fresh connection; the response arrives as callbacks.
 *
 * Timeouts, per request (0 in lm_client_opts: the client's default):
 *   queue_timeout     waiting in the origin's queue for a connection slot (pool at its cap)
 *   connect_timeout   name resolution + TCP connect of the connection opened for the request
 *   response_timeout  from the moment the request is written to a connection until its
 *                     response is complete: the upload of a streamed body, the server's work
 *                     and the download, time spent paused included. LM_CLIENT_NO_TIMEOUT
 *                     disables it (long polls bound it themselves).
 *
 * Reuse safety: a request that fails on a reused connection before any response byte came
 * back (the server closed the idle connection at that very moment) is sent once more on a
 * fresh connection when its method is idempotent (GET, HEAD, PUT, DELETE, OPTIONS) and its
 * body was given in memory. Idle connections close after idle_timeout_ms unused; keep it
 * below the servers' keep-alive timeout (ours: 60 s).
 *
 * Callbacks and lifetime. Every request accepted by lm_client_send() gets exactly one on_done
 * call, never from inside lm_client_send() itself. on_done comes with LM_CLIENT_OK or an
 * error; after on_done returns the request is freed, so the caller forgets its pointer there.
 * lm_client_cancel() completes the request with LM_CLIENT_ERR_CANCELLED before it returns
 * (when called from inside one of that request's own on_head/on_body/on_drain callbacks:
 * right after that callback returns). lm_client_close() cancels every pending request the
 * same way, closes all handles, and calls its callback once the loop owes the client
 * nothing more; the client is freed then.
 *
 * A streamed upload stops at on_done: a server may answer (413, 401 …) before the body is
 * all sent; the connection is then closed rather than pooled.
 *
 * Hosts: numeric IPv4/IPv6 addresses connect directly. Names resolve with uv_getaddrinfo (the
 * loop's thread pool), the first IPv4 address preferred, without a fallback to further
 * addresses, through a per-client (so per-loop) cache (lm_dnscache, dnscache.h): a resolved
 * address serves new connections to that name for dns_ttl_ms (default 30 s, the process's
 * CLIENT_DNS_TTL_MS; 0: a lookup for every new connection), a name that does not exist fails
 * fast for 1 s, at most 64 names are kept, and an address that fails to connect (refused,
 * timed out) is dropped so the next connection looks the name up again. Lookups running at
 * the same time for one name are not merged. The cache is freed with the client.
 *
 * Memory: options, headers and body are copied by lm_client_send(); the caller keeps nothing
 * alive. The lm_client_response and every pointer in it belong to the request and are valid
 * only during the callback that receives them.
 *
 * Threading: all functions on the client's loop thread, except lm_client_stats_get() (any thread,
 * while the client exists: counters are relaxed atomics with a single writer) and
 * lm_client_strerror()/lm_client_config_default() (pure, but for the process default that
 * lm_client_set_default_dns_ttl() sets at start-up). URLs are parsed by url.h's lm_url_parse.
 * The implementation is split as h2o splits its client (client_impl.h): client.c (this
 * API), client_pool.c (origins and pools), client_conn.c (a connection), client_wire.c
 * (request bytes). */
#ifndef LM_CLIENT_H
#define LM_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "http.h" /* lm_header */

typedef struct uv_loop_s uv_loop_t;
typedef struct lm_client lm_client;
typedef struct lm_client_req lm_client_req;

#define LM_CLIENT_NO_TIMEOUT UINT64_MAX

typedef enum lm_client_err {
    LM_CLIENT_OK = 0,
    LM_CLIENT_ERR_RESOLVE,          /* the host name did not resolve */
    LM_CLIENT_ERR_CONNECT,          /* connection refused or failed */
    LM_CLIENT_ERR_CONNECT_TIMEOUT,  /* resolve + connect took longer than connect_timeout */
    LM_CLIENT_ERR_QUEUE_TIMEOUT,    /* pool at its cap and no connection freed in time */
    LM_CLIENT_ERR_QUEUE_FULL,       /* pool at its cap and its wait queue full */
    LM_CLIENT_ERR_RESPONSE_TIMEOUT, /* response not complete within response_timeout */
    LM_CLIENT_ERR_CLOSED,           /* connection reset or closed before the response ended */
    LM_CLIENT_ERR_PROTOCOL,         /* malformed response */
    LM_CLIENT_ERR_TOO_LARGE,        /* response head or buffered body over its limit */
    LM_CLIENT_ERR_BODY,             /* streamed request body differs from its declared length */
    LM_CLIENT_ERR_CANCELLED,        /* lm_client_cancel() or lm_client_close() */
    LM_CLIENT_ERR__COUNT
} lm_client_err;

/* "connection refused or failed", … ; never NULL. */
const char *lm_client_strerror(lm_client_err err);

typedef struct lm_client_config {
    size_t max_conns_per_origin;  /* cap: open + connecting connections (default 64) */
    size_t max_queue_per_origin;  /* waiting requests beyond it fail fast (default 1024;
                                   * 0: no waiting, a full pool fails at once) */
    uint64_t idle_timeout_ms;     /* pooled connection unused that long is closed (30000) */
    uint64_t connect_timeout_ms;  /* default per request (2000) */
    uint64_t queue_timeout_ms;    /* default per request (2000) */
    uint64_t response_timeout_ms; /* default per request (30000) */
    size_t max_response_head;     /* status line + headers (64 KiB) */
    size_t max_response_body;     /* buffered mode (8 MiB); streaming has no limit */
    uint64_t dns_ttl_ms;          /* cache a resolved host name this long (the process
                                   * default, 30000); 0 here: no cache */
} lm_client_config;

/* Defaults; dns_ttl_ms is the process default (lm_client_set_default_dns_ttl). */
void lm_client_config_default(lm_client_config *cfg);
/* The process-wide default of dns_ttl_ms (0: no cache), from CLIENT_DNS_TTL_MS (lm_app_new).
 * Start-up only, before any thread creates a client. */
void lm_client_set_default_dns_ttl(uint64_t ms);

/* What a response looks like to callbacks. headers: name and value NUL-terminated, lengths
 * set, in received order, names as received (compare case-insensitively). body: in buffered
 * mode on success NUL-terminated ("" when empty); NULL when streaming or on error. */
typedef struct lm_client_response {
    int status;
    int http_minor; /* 1 for HTTP/1.1, 0 for HTTP/1.0 */
    const lm_header *headers;
    size_t n_headers;
    const char *body;
    size_t body_len;
} lm_client_response;

/* First header with this name (case-insensitive), or NULL. */
const char *lm_client_response_header(const lm_client_response *resp, const char *name);

/* Status line and headers are complete (1xx responses are skipped, never reported). */
typedef void (*lm_client_head_fn)(lm_client_req *req, const lm_client_response *resp, void *ud);
/* A piece of the response body (streaming mode); data is valid during the call only. */
typedef void (*lm_client_body_fn)(lm_client_req *req, const char *data, size_t len, void *ud);
/* The end, exactly once. resp is non-NULL whenever the response head had arrived, also with
 * an error (a proxy that already forwarded the head must then abort, not answer 502). */
typedef void (*lm_client_done_fn)(lm_client_req *req, lm_client_err err,
                                  const lm_client_response *resp, void *ud);
/* Streamed request body: buffered output drained after lm_client_write() returned false. */
typedef void (*lm_client_drain_fn)(lm_client_req *req, void *ud);

typedef struct lm_client_opts {
    const char *method; /* "GET", "POST", … (a token) */
    const char *host;   /* "10.0.0.7", "::1", "[::1]", "articles" (resolved asynchronously) */
    int port;           /* 1..65535 */
    const char *path;   /* path and query, starting with '/' (or "*" for OPTIONS) */
    /* Extra headers; a name_len/value_len of 0 means strlen. Host is added unless given
     * here; framing is the client's: Content-Length, Transfer-Encoding, Connection,
     * Keep-Alive, Upgrade and Proxy-Connection given here are dropped. */
    const lm_header *headers;
    size_t n_headers;

    /* Body from memory (copied), or a streamed body: stream_body with stream_length >= 0
     * (Content-Length) or -1 (chunked), then lm_client_write()… lm_client_end(). */
    const void *body;
    size_t body_len;
    bool stream_body;
    int64_t stream_length;

    uint64_t connect_timeout_ms, queue_timeout_ms, response_timeout_ms; /* 0: default */
    size_t max_body; /* buffered mode; 0: client default */

    /* Streaming mode when on_body is set (body never buffered), else buffered mode. */
    lm_client_head_fn on_head; /* optional in both modes */
    lm_client_body_fn on_body;
    lm_client_done_fn on_done; /* may be NULL: fire and forget */
    lm_client_drain_fn on_drain;
    void *ud;

    /* The call's own span context — a child of the request it serves, whose traceparent is
     * among headers (lm_outbound sets both) — or NULL. When set, the call is reported to the
     * call observer as it ends. Copied. */
    const lm_trace_ctx *span;
} lm_client_opts;

/* An outbound call as the call observer sees it (client spans are built from it by the
 * app layer, so this layer knows nothing of spans or exporters). Valid during the call. */
typedef struct lm_client_call {
    const char *method;
    const char *host; /* as given, IPv6 without brackets */
    int port;
    const char *path;         /* without the query */
    const lm_trace_ctx *span; /* the call's own context */
    int status;               /* the response's status, 0 when no head arrived */
    lm_client_err err;
    uint64_t start_ns, end_ns; /* CLOCK_MONOTONIC (uv_hrtime) */
} lm_client_call;
typedef void (*lm_client_call_fn)(const lm_client_call *call, void *ctx);
/* Process-wide; called on the client's loop thread as each traced call ends, before its
 * on_done. Start-up only, before any thread creates a client. */
void lm_client_set_call_observer(lm_client_call_fn fn, void *ctx);

/* cfg NULL: defaults. The loop must outlive the client. */
lm_client *lm_client_new(uv_loop_t *loop, const lm_client_config *cfg);

/* Starts a request. Returns NULL, with no callback ever, only for a malformed request
 * (method, path or header characters, port, body options) or a closing client. */
lm_client_req *lm_client_send(lm_client *c, const lm_client_opts *opts);

/* Streamed request body. write returns false when output buffered for the request is over
 * its high-water mark (the data is still taken: wait for on_drain) or when the request
 * cannot send any more (it is completing). A body longer or shorter than a declared
 * stream_length fails the request with LM_CLIENT_ERR_BODY. Zero-length writes are ignored. */
bool lm_client_write(lm_client_req *req, const void *data, size_t len);
void lm_client_end(lm_client_req *req);

/* Backpressure for a streaming consumer: while paused no on_body and no successful on_done
 * is delivered and the connection is not read (errors such as timeouts still complete the
 * request). resume delivers what was held back from the next loop iteration on. */
void lm_client_pause(lm_client_req *req);
void lm_client_resume(lm_client_req *req);

/* See the top: on_done(LM_CLIENT_ERR_CANCELLED) once; a no-op inside the request's on_done. */
void lm_client_cancel(lm_client_req *req);

/* Cancels every pending request, closes every connection and handle; cb(ctx) runs (from the
 * loop) when all are closed, after which the client is freed. cb may be NULL. */
void lm_client_close(lm_client *c, void (*cb)(void *ctx), void *ctx);

typedef struct lm_client_stats {
    uint64_t requests;                     /* accepted by lm_client_send */
    uint64_t responses;                    /* completed with LM_CLIENT_OK */
    uint64_t errors[LM_CLIENT_ERR__COUNT]; /* completed with each error ([0] unused) */
    uint64_t retries;                      /* resent after a stale pooled connection */
    uint64_t connects;                     /* connections opened (attempts) */
    uint64_t reuses;                       /* requests sent on a pooled connection */
    uint64_t conns_open;                   /* gauge: open or connecting connections */
    uint64_t conns_idle;                   /* gauge: idle in the pools */
    uint64_t queued;                       /* gauge: requests waiting for a connection slot */
    uint64_t inflight;                     /* gauge: requests not yet completed */
    uint64_t resolves;                     /* host-name lookups started (getaddrinfo) */
    uint64_t resolve_cache_hits;           /* connections to a name that needed no lookup */
} lm_client_stats;

/* Any thread, while the client exists. */
void lm_client_stats_get(const lm_client *c, lm_client_stats *out);

#endif
