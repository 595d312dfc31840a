/* http_conn.h — the HTTP/1.1 server connection engine (lm_conn), independent of sockets.
 *
 * Bytes go in through lm_conn_feed(); complete requests come out through ops->dispatch();
 * response bytes accumulate in conn->out for the transport (server.c) to write. Keeping the
 * protocol apart from libuv lets the unit tests and the fuzzer drive exactly the code that
 * serves real clients.
 *
 * One request is in flight per connection: when a request is complete the parser pauses,
 * the request is dispatched, and further (pipelined) bytes wait in conn->pending until the
 * response is finished. This answers pipelined requests in order by construction and is the
 * backpressure point against request floods.
 *
 * Protocol errors (malformed request, smuggling patterns such as Content-Length with
 * Transfer-Encoding or duplicate Content-Length, obs-fold, limits exceeded) produce a
 * problem+json response with Connection: close, after which the engine discards input.
 *
 * Threading: a conn belongs to one thread. Ownership: the transport owns the lm_conn memory
 * and frees it with lm_conn_free() only when lm_conn_busy() is false. */
#ifndef LM_HTTP_CONN_H
#define LM_HTTP_CONN_H

#include <llhttp.h>

#include "buf.h"
#include "http.h"

typedef struct lm_conn_limits {
    size_t max_head_bytes; /* request line + headers (431; 414 when the URI alone is over) */
    size_t max_uri_bytes;
    size_t max_headers; /* count */
    size_t max_body_bytes;
    size_t max_pending_bytes; /* pipelined input buffered while a request is in flight */
    size_t max_out_bytes;     /* response bytes queued before parsing of pipelined requests
                                 pauses (out_blocked) until the transport has drained them */
} lm_conn_limits;

void lm_conn_limits_default(lm_conn_limits *l);

typedef struct lm_conn lm_conn;

typedef struct lm_conn_ops {
    /* A complete request. The handler side must eventually finish its response. */
    void (*dispatch)(lm_conn *c, lm_req *req);
    /* A response finished outside of dispatch (asynchronously), or streamed output grew:
     * the transport should write conn->out and call lm_conn_resume(). */
    void (*output)(lm_conn *c);
    /* The response of req is complete (status known): metrics and access log. */
    void (*completed)(lm_conn *c, lm_req *req, int status, uint64_t bytes_out);
    /* Optional: at headers complete of a request with a body, should it be dispatched now
     * and its body streamed to the handler (its route has LM_ROUTE_STREAM_BODY)? */
    bool (*stream)(lm_conn *c, lm_req *req);
} lm_conn_ops;

typedef enum {
    LM_CONN_IDLE,   /* between requests, nothing buffered */
    LM_CONN_HEAD,   /* receiving a request line/headers */
    LM_CONN_BODY,   /* receiving a body */
    LM_CONN_BUSY,   /* request dispatched, response not finished */
    LM_CONN_CLOSING /* final response queued; discard input, close once written */
} lm_conn_state;

typedef struct lm_hdr_off {
    size_t name_off, name_len, value_off, value_len;
} lm_hdr_off;

struct lm_conn {
    llhttp_t parser;
    const lm_conn_limits *limits; /* borrowed; outlives the conn */
    const lm_conn_ops *ops;       /* borrowed */
    void *owner;                  /* the transport's object */
    struct lm_worker *worker;     /* may be NULL (tests, fuzzer) */

    lm_conn_state state;
    lm_buf out;     /* response bytes not yet handed to the socket */
    lm_buf pending; /* input that arrived while a request was in flight */
    lm_buf head;    /* current request: target, header names and values (NUL-separated) */
    lm_buf body;
    lm_buf resp_headers; /* extra response headers set by the handler */
    lm_buf params;       /* decoded path parameters of the current request */
    lm_hdr_off *hdrs;
    size_t n_hdrs, cap_hdrs;
    size_t head_bytes;
    size_t url_off, url_len;
    bool url_complete; /* the request target is in head, NUL-terminated */
    bool in_field;     /* last header callback was a field name */
    /* obs-fold detection: llhttp 8 unfolds silently, delivering the continuation as another
     * value chunk; a chunk not byte-contiguous with the previous one of the same value is a
     * fold (contiguity across reads: the previous chunk ended its read, this one starts one) */
    unsigned exec_gen, last_val_gen;
    const char *exec_start, *exec_end, *last_val_end;
    bool value_started, last_val_at_end;
    bool prev_tail_lf;    /* the bytes parsed before exec_start ended in LF [SP/HT]* */
    const char *scan_pos; /* framing check (http_conn.c frame_scan): checked up to here */
    unsigned char frame;  /* its state: any byte, LF due, CRLF due (after chunk data) */
    int error_status;     /* set by callbacks to choose the error response */
    const char *error_detail;
    bool expect_continue;
    bool keep_alive;  /* may the connection carry another request after this one */
    bool draining;    /* server is shutting down: close after the current response */
    bool out_blocked; /* output over high-water mark (set by the transport, or by the engine
                         when out passes max_out_bytes): do not parse further; the transport
                         clears it and calls lm_conn_resume() once output has drained */
    bool in_dispatch;
    bool eof;                /* client half-closed */
    uint64_t state_since_ms; /* when the current state began (transport's clock) */

    /* streamed request body (see lm_req_read_body) */
    bool stream;         /* this request's body goes to its handler as it arrives */
    bool stream_started; /* dispatched at headers complete */
    bool stream_paused;  /* the handler paused the body */
    bool stream_done;    /* body complete or failed: no more data/end calls */
    bool parse_failed;   /* a streamed body failed: input is discarded until the close */
    bool body_pause;     /* on_body stopped llhttp because the handler paused the body */
    bool body_kick;      /* llhttp stopped at a body's end: execute once more on resume */
    size_t stream_bytes;
    lm_body_data_fn body_data;
    lm_body_end_fn body_end;
    void *body_ud;
    bool dispatched; /* the handler holds req: from dispatch until its response finished */

    void (*drain_cb)(lm_req *req, void *ud); /* lm_resp_on_drain, one-shot */
    void *drain_ud;

    lm_req req;
    bool resp_started, resp_chunked, resp_finished;
    int resp_status;
    uint64_t resp_bytes;
    uint64_t requests;
};

void lm_conn_init(lm_conn *c, const lm_conn_limits *limits, const lm_conn_ops *ops, void *owner);
void lm_conn_free(lm_conn *c);
/* Parses data (not retained). */
void lm_conn_feed(lm_conn *c, const char *data, size_t len);
/* Continues with pending input after a response finished or output drained. */
void lm_conn_resume(lm_conn *c);
/* The client closed its sending side. */
void lm_conn_eof(lm_conn *c);
/* The transport is closing: an in-flight request is marked abandoned. */
void lm_conn_abandon(lm_conn *c);
/* A request is in the handler's hands (the conn must not be freed). */
bool lm_conn_busy(const lm_conn *c);
/* Is more input wanted now (false while busy with a full pending buffer, or closing)? */
bool lm_conn_wants_input(const lm_conn *c);
/* The transport wrote every queued byte: runs a pending lm_resp_on_drain callback. */
void lm_conn_drained(lm_conn *c);
/* Sends a final error (e.g. 408 on a header timeout) and enters CLOSING. */
void lm_conn_fail(lm_conn *c, int status, const char *detail);

/* The process-wide "Server" and Date header helpers the engine uses. */
const char *lm_conn_date_now(void); /* "Tue, 24 Nov 2026 10:00:00 GMT", cached per second */

#endif
