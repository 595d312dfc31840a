/* http_resp.c — response serialisation and request accessors (the lm_resp_* and lm_req_*
 * halves of http.h). Responses are written straight into the connection's output buffer;
 * the transport sends it. See http.h for the lifetime rules. */
#include "http_conn.h"
#include "status.h"

#include <assert.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

const char *lm_conn_date_now(void)
{
    static _Thread_local char date[40];
    static _Thread_local time_t cached;
    time_t now = time(NULL);
    if (now != cached) {
        struct tm tm;
        gmtime_r(&now, &tm);
        strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S GMT", &tm);
        cached = now;
    }
    return date;
}

const char *lm_req_header(const lm_req *req, const char *name)
{
    for (size_t i = 0; i < req->n_headers; i++)
        if (strcasecmp(req->headers[i].name, name) == 0) return req->headers[i].value;
    return NULL;
}

const char *lm_req_param(const lm_req *req, const char *name)
{
    for (size_t i = 0; i < req->route.n_params; i++)
        if (strcmp(req->route.params[i].name, name) == 0) return req->params[i];
    return NULL;
}

const char *lm_req_query(const lm_req *req, const char *key)
{
    return lm_query_get(&req->query, key);
}

bool lm_req_abandoned(const lm_req *req)
{
    return req->abandoned_;
}

/* RFC 9110 tchar (letters and digits first: every response header's name passes here) */
static bool tchar(unsigned char ch)
{
    static const char ok[] = "!#$%&'*+-.^_`|~";
    return (ch >= '0' && ch <= '9') || ((ch | 32) >= 'a' && (ch | 32) <= 'z') ||
           (ch && memchr(ok, ch, sizeof ok - 1));
}

static bool valid_token(const char *s)
{
    if (!*s) return false;
    for (; *s; s++)
        if (!tchar((unsigned char)*s)) return false;
    return true;
}

bool lm_resp_header(lm_req *req, const char *name, const char *value)
{
    lm_conn *c = req->conn_;
    if (c->resp_started || !valid_token(name) || strpbrk(value, "\r\n")) return false;
    lm_buf_append_str(&c->resp_headers, name);
    lm_buf_append(&c->resp_headers, ": ", 2);
    lm_buf_append_str(&c->resp_headers, value);
    lm_buf_append(&c->resp_headers, "\r\n", 2);
    return true;
}

static bool bodiless_status(int status)
{
    return status < 200 || status == 204 || status == 304;
}

/* "\r\nServer: lotmesh\r\nDate: <IMF-fixdate>\r\n", rebuilt once a second per thread */
static const char *server_date_line(size_t *len)
{
    static _Thread_local char line[96];
    static _Thread_local size_t line_len;
    static _Thread_local time_t for_sec = -1;
    time_t now = time(NULL);
    if (now != for_sec) {
        line_len = (size_t)snprintf(line, sizeof line, "\r\nServer: lotmesh\r\nDate: %s\r\n",
                                    lm_conn_date_now());
        for_sec = now;
    }
    *len = line_len;
    return line;
}

static void write_head(lm_conn *c, int status, const char *ctype, int64_t len)
{
    lm_req *r = &c->req;
    lm_buf *o = &c->out;
    if (c->draining || c->eof) c->keep_alive = false;
    if (c->stream_started && !c->stream_done) c->keep_alive = false; /* body left unread */
    lm_buf_reserve(o, 256 + c->resp_headers.len);
    if (status == 200) {
        LM_BUF_APPEND_LIT(o, "HTTP/1.1 200 OK");
    } else {
        LM_BUF_APPEND_LIT(o, "HTTP/1.1 ");
        lm_buf_append_u64(o, (unsigned long long)status);
        lm_buf_append_char(o, ' ');
        lm_buf_append_str(o, lm_status_reason(status));
    }
    size_t dl;
    const char *dline = server_date_line(&dl);
    lm_buf_append(o, dline, dl);
    if (ctype) {
        LM_BUF_APPEND_LIT(o, "Content-Type: ");
        lm_buf_append_str(o, ctype);
        LM_BUF_APPEND_LIT(o, "\r\n");
    }
    if (!bodiless_status(status)) {
        if (len >= 0) {
            LM_BUF_APPEND_LIT(o, "Content-Length: ");
            lm_buf_append_u64(o, (unsigned long long)len);
            LM_BUF_APPEND_LIT(o, "\r\n");
        } else if (r->http_minor >= 1) {
            lm_buf_append_str(o, "Transfer-Encoding: chunked\r\n");
            c->resp_chunked = true;
        } else {
            c->keep_alive = false; /* HTTP/1.0 without length: the close delimits the body */
        }
    }
    if (r->request_id[0]) {
        LM_BUF_APPEND_LIT(o, "X-Request-ID: ");
        lm_buf_append_str(o, r->request_id);
        LM_BUF_APPEND_LIT(o, "\r\n");
    }
    lm_buf_append(o, c->resp_headers.data, c->resp_headers.len);
    if (!c->keep_alive)
        lm_buf_append_str(o, "Connection: close\r\n");
    else if (r->http_minor == 0)
        lm_buf_append_str(o, "Connection: keep-alive\r\n");
    lm_buf_append(o, "\r\n", 2);
    c->resp_started = true;
    c->resp_status = status;
}

static void finish(lm_conn *c)
{
    c->resp_finished = true;
    c->dispatched = false;
    if (c->stream_started && !c->stream_done) c->keep_alive = false; /* body left unread */
    c->body_data = NULL;
    c->body_end = NULL;
    c->stream_paused = false;
    c->drain_cb = NULL;
    c->drain_ud = NULL;
    if (c->ops->completed) c->ops->completed(c, &c->req, c->resp_status, c->resp_bytes);
    c->requests++;
    lm_query_free(&c->req.query);
    lm_header *h = c->req.headers;
    memset(&c->req, 0, sizeof c->req);
    c->req.headers = h;
    c->req.conn_ = c;
    c->req.worker = c->worker;
    lm_buf_reset(&c->resp_headers);
    if (!c->keep_alive || c->draining || c->eof) {
        c->state = LM_CONN_CLOSING;
        lm_buf_reset(&c->pending);
    } else {
        c->state = LM_CONN_IDLE;
    }
    c->resp_finished = false;
    if (!c->in_dispatch) c->ops->output(c);
}

void lm_resp_send(lm_req *req, int status, const char *content_type, const void *body, size_t len)
{
    lm_conn *c = req->conn_;
    assert(c->dispatched && !c->resp_started);
    if (req->abandoned_) {
        c->resp_status = status;
        finish(c);
        return;
    }
    if (bodiless_status(status)) len = 0;
    write_head(c, status, len || !bodiless_status(status) ? content_type : NULL, (int64_t)len);
    if (!req->head_ && len) lm_buf_append(&c->out, body, len);
    c->resp_bytes = len;
    finish(c);
}

void lm_resp_begin(lm_req *req, int status, const char *content_type, int64_t content_length)
{
    lm_conn *c = req->conn_;
    assert(c->dispatched && !c->resp_started);
    if (req->abandoned_) {
        c->resp_started = true;
        c->resp_status = status;
        return;
    }
    write_head(c, status, content_type, content_length);
}

bool lm_resp_write(lm_req *req, const void *data, size_t len)
{
    lm_conn *c = req->conn_;
    assert(c->resp_started);
    if (req->abandoned_) return false;
    if (len == 0 || req->head_) return !c->out_blocked;
    if (c->resp_chunked) {
        char sz[24];
        int n = snprintf(sz, sizeof sz, "%zx\r\n", len);
        lm_buf_append(&c->out, sz, (size_t)n);
    }
    lm_buf_append(&c->out, data, len);
    if (c->resp_chunked) lm_buf_append(&c->out, "\r\n", 2);
    c->resp_bytes += len;
    if (c->out.len >= c->limits->max_out_bytes) c->out_blocked = true; /* until drained */
    if (!c->in_dispatch) c->ops->output(c);
    return !c->out_blocked;
}

void lm_resp_end(lm_req *req)
{
    lm_conn *c = req->conn_;
    assert(c->resp_started);
    if (!req->abandoned_ && c->resp_chunked && !req->head_) lm_buf_append_str(&c->out, "0\r\n\r\n");
    finish(c);
}

void lm_resp_on_drain(lm_req *req, void (*cb)(lm_req *req, void *ud), void *ud)
{
    lm_conn *c = req->conn_;
    c->drain_cb = cb;
    c->drain_ud = ud;
}

void lm_conn_drained(lm_conn *c)
{
    void (*cb)(lm_req *, void *) = c->drain_cb;
    void *ud = c->drain_ud;
    c->drain_cb = NULL;
    c->drain_ud = NULL;
    if (cb && lm_conn_busy(c)) cb(&c->req, ud);
}

void lm_resp_abort(lm_req *req)
{
    lm_conn *c = req->conn_;
    assert(c->dispatched);
    c->keep_alive = false; /* the close is what tells the client the body is incomplete */
    if (!c->resp_started) c->resp_status = 502;
    c->resp_chunked = false; /* no terminating chunk */
    finish(c);
}

/* ---- problem responses (RFC 9457) ---------------------------------------------------- */

void lm_resp_problem_full(lm_req *req, const lm_problem *p)
{
    char trace[33];
    char *instance = lm_xstrndup(req->path ? req->path : "", req->path ? req->path_len : 0);
    lm_problem q = *p;
    lm_trace_id_hex(&req->trace, trace);
    if (!q.trace_id) q.trace_id = trace;
    if (!q.instance && instance[0]) q.instance = instance;
    lm_buf body = LM_BUF_INIT;
    lm_problem_format(&body, &q);
    lm_resp_send(req, p->status, LM_PROBLEM_CONTENT_TYPE, body.data, body.len);
    lm_buf_free(&body);
    free(instance);
}

void lm_resp_problem(lm_req *req, int status, const char *detail)
{
    lm_problem p = {.status = status, .detail = detail};
    lm_resp_problem_full(req, &p);
}

void lm_resp_problemf(lm_req *req, int status, const char *fmt, ...)
{
    lm_buf detail = LM_BUF_INIT;
    va_list ap;
    va_start(ap, fmt);
    lm_buf_vprintf(&detail, fmt, ap);
    va_end(ap);
    lm_resp_problem(req, status, lm_buf_cstr(&detail));
    lm_buf_free(&detail);
}
