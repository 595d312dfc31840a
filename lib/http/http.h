/* http.h — what a request handler sees: the request (lm_req) and the response API (lm_resp).
 *
 * Ownership and lifetime: the server owns every lm_req. It is valid from the handler call
 * until the handler finishes the response (lm_resp_send, lm_resp_end, or a helper built on
 * them such as lm_resp_problem / lm_json_resp). A handler must finish exactly one response
 * per request, synchronously or later, and after that must not touch the request again.
 * All strings in a request are NUL-terminated and owned by the request.
 *
 * Threading: a request lives on the worker thread (event loop) that parsed it. Handlers run
 * there and must not block: blocking work goes to the loop's thread pool (uv_queue_work on
 * lm_req_loop(req)), and the response is finished from the after-work callback, which runs on
 * the same loop. Never call lm_resp_* from another thread.
 *
 * If the client disconnects while a handler is working, the request stays valid until the
 * handler responds (the response is then discarded); lm_req_abandoned() tells a handler that
 * wants to stop early. */
#ifndef LM_HTTP_H
#define LM_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "problem.h"
#include "router.h"
#include "trace.h"
#include "url.h"

typedef struct lm_header {
    const char *name; /* as received; compare case-insensitively */
    const char *value;
    size_t name_len;
    size_t value_len;
} lm_header;

/* The methods handlers test for, as req->method_id (the values of llhttp_method_t, which
 * http_conn.c checks at compile time; other methods keep llhttp's other numbers). */
typedef enum lm_method {
    LM_METHOD_DELETE = 0,
    LM_METHOD_GET = 1,
    LM_METHOD_HEAD = 2,
    LM_METHOD_POST = 3,
    LM_METHOD_PUT = 4,
    LM_METHOD_OPTIONS = 6,
    LM_METHOD_PATCH = 28,
} lm_method;

/* GET or HEAD: a read that changes nothing. */
static inline bool lm_method_is_read(int method_id)
{
    return method_id == LM_METHOD_GET || method_id == LM_METHOD_HEAD;
}

struct lm_conn;
struct lm_worker;
typedef struct uv_loop_s uv_loop_t;

typedef struct lm_req {
    /* --- public, read-only for handlers --- */
    const char *method; /* "GET", "POST", … */
    int method_id;      /* lm_method (llhttp's numbering): compare this, not the string */
    const char *target; /* raw request-target */
    size_t target_len;
    const char *path; /* raw (not decoded) path part of target */
    size_t path_len;
    const char *query_string; /* raw text after '?', "" when none */
    size_t query_len;
    lm_query query; /* decoded query pairs */
    lm_header *headers;
    size_t n_headers;
    const char *body; /* NUL-terminated (may contain NULs), "" when none */
    size_t body_len;
    int http_minor;                          /* 1 for HTTP/1.1, 0 for HTTP/1.0 */
    lm_route_match route;                    /* which route matched, raw params */
    const char *params[LM_ROUTE_MAX_PARAMS]; /* decoded path parameters, in route order */
    lm_trace_ctx trace;                      /* this request's span */
    char request_id[LM_REQUEST_ID_MAX + 1];
    uint64_t start_ns;        /* uv_hrtime() when the request line arrived */
    struct lm_worker *worker; /* the worker whose loop runs this request */
    void *user;               /* free for the handler; the server never touches it */
    char caller[128];         /* authenticated caller (token sub), set by the guard */
    char caller_scope[128];

    /* --- private: the server's bookkeeping --- */
    struct lm_conn *conn_;
    bool abandoned_;
    bool head_;
} lm_req;

/* First header with this name (case-insensitive), or NULL. */
const char *lm_req_header(const lm_req *req, const char *name);
/* Decoded path parameter by template name, or NULL. */
const char *lm_req_param(const lm_req *req, const char *name);
/* First decoded query value for key, or NULL. */
const char *lm_req_query(const lm_req *req, const char *key);
bool lm_req_abandoned(const lm_req *req);
uv_loop_t *lm_req_loop(const lm_req *req);
/* Index of the worker running the request: 0 .. workers-1. */
int lm_req_worker_index(const lm_req *req);

/* Adds a response header before the response starts. name and value are copied; a value
 * with CR or LF is refused (returns false) so no handler can split a response. */
bool lm_resp_header(lm_req *req, const char *name, const char *value);

/* Sends a complete response. content_type may be NULL (no body type). For HEAD the body is
 * omitted but Content-Length stays. Finishes the request. */
void lm_resp_send(lm_req *req, int status, const char *content_type, const void *body, size_t len);

/* Sends an RFC 9457 problem (instance = the request's path, trace_id = its trace unless p
 * sets them). Finishes the request. */
void lm_resp_problem(lm_req *req, int status, const char *detail);
void lm_resp_problemf(lm_req *req, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void lm_resp_problem_full(lm_req *req, const lm_problem *p);

/* Streaming: begin with a known length (>= 0) or -1 for chunked transfer coding, write any
 * number of times, then end. lm_resp_write returns false when the client is gone or output
 * is over its high-water mark; the caller may keep writing (it is buffered) or slow down. */
void lm_resp_begin(lm_req *req, int status, const char *content_type, int64_t content_length);
bool lm_resp_write(lm_req *req, const void *data, size_t len);
void lm_resp_end(lm_req *req);

/* Streamed request bodies (routes added with LM_ROUTE_STREAM_BODY). The handler runs when
 * the headers are complete, with req->body empty; before it returns it calls
 * lm_req_read_body to receive the body as it arrives: data(req, bytes, len, ud) any number
 * of times, then end(req, status, ud) once — status 0 when the body is complete, else why
 * it failed (413 over MAX_BODY_BYTES, 400 malformed framing, 408 too slow, 499 the client
 * went away); after a failure the connection closes once the handler has responded. The
 * handler may respond at any time; a response finished before the body ended closes the
 * connection after it. lm_req_streaming tells whether req is such a request (a route
 * streams only requests that have a body). Pause/resume: while paused no data arrives and
 * the client's socket is no longer read (TCP backpressure). All on the request's loop. */
typedef void (*lm_body_data_fn)(lm_req *req, const char *data, size_t len, void *ud);
typedef void (*lm_body_end_fn)(lm_req *req, int status, void *ud);
bool lm_req_streaming(const lm_req *req);
void lm_req_read_body(lm_req *req, lm_body_data_fn data, lm_body_end_fn end, void *ud);
void lm_req_pause_body(lm_req *req);
void lm_req_resume_body(lm_req *req);

/* Streaming backpressure: after lm_resp_write returned false, cb(req, ud) runs once, on the
 * request's loop, when the queued output has been written to the socket. */
void lm_resp_on_drain(lm_req *req, void (*cb)(lm_req *req, void *ud), void *ud);
/* Ends a started (or not yet started) response abnormally: the connection closes without a
 * proper end of body, so the client sees a truncated response, never a complete wrong one
 * (a proxy whose upstream failed mid-body). Finishes the request. */
void lm_resp_abort(lm_req *req);
/* The client's IP address as text, "" when unknown. */
void lm_req_peer_ip(const lm_req *req, char *out, size_t len);

/* Reason phrase for a status code ("Not Found"); "Unknown" for others. */

#endif
