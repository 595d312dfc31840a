/* http_conn.c — request parsing on llhttp: limits, smuggling defences, pipelining by pausing
 * the parser at each message end. Response writing lives in http_resp.c. See http_conn.h. */
#include "http_conn.h"

#include "problem.h"
#include "status.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <uv.h>

#define F_CONTENT_LENGTH_FLAG 0x20 /* llhttp's F_CONTENT_LENGTH */
#define F_CHUNKED_FLAG        0x08 /* llhttp's F_CHUNKED */
#define F_TRANSFER_ENC_FLAG   0x200

void lm_conn_limits_default(lm_conn_limits *l)
{
    l->max_head_bytes = 16 * 1024;
    l->max_uri_bytes = 8 * 1024;
    l->max_headers = 100;
    l->max_body_bytes = 1024 * 1024;
    l->max_pending_bytes = 64 * 1024;
    l->max_out_bytes = 256 * 1024;
}

static lm_conn *conn_of(llhttp_t *p)
{
    return (lm_conn *)p->data;
}

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int fail_cb(lm_conn *c, int status, const char *detail)
{
    c->error_status = status;
    c->error_detail = detail;
    return HPE_USER;
}

static int on_message_begin(llhttp_t *p)
{
    lm_conn *c = conn_of(p);
    c->state = LM_CONN_HEAD;
    lm_buf_reset(&c->head);
    lm_buf_reset(&c->body);
    lm_buf_reset(&c->resp_headers);
    c->n_hdrs = 0;
    c->head_bytes = 0;
    c->url_len = 0;
    c->url_complete = false;
    c->url_off = 0;
    c->in_field = false;
    c->expect_continue = false;
    c->value_started = false;
    c->stream = c->stream_started = c->stream_paused = c->stream_done = false;
    c->stream_bytes = 0;
    c->body_data = NULL;
    c->body_end = NULL;
    c->error_status = 0;
    c->error_detail = NULL;
    c->req.start_ns = mono_ns();
    return 0;
}

static int count_head(lm_conn *c, size_t len)
{
    c->head_bytes += len;
    if (c->head_bytes > c->limits->max_head_bytes)
        return fail_cb(c, 431, "request header section is larger than the limit");
    return 0;
}

static int on_url(llhttp_t *p, const char *at, size_t len)
{
    lm_conn *c = conn_of(p);
    c->url_len += len;
    if (c->url_len > c->limits->max_uri_bytes)
        return fail_cb(c, 414, "request target is longer than the limit");
    lm_buf_append(&c->head, at, len);
    return count_head(c, len);
}

static int on_url_complete(llhttp_t *p)
{
    lm_conn *c = conn_of(p);
    c->url_complete = true;
    lm_buf_append_char(&c->head, '\0');
    return 0;
}

/* RFC 9110 5.6.2 tchar. llhttp 8 lets SP through in field names ("Transfer-Encoding :"),
 * which another parser on the path may read differently: a smuggling vector. */
static bool is_tchar(unsigned char ch)
{
    if (ch >= '0' && ch <= '9') return true;
    if ((ch | 0x20) >= 'a' && (ch | 0x20) <= 'z') return true;
    return ch && strchr("!#$%&'*+-.^_`|~", ch) != NULL;
}

static int on_header_field(llhttp_t *p, const char *at, size_t len)
{
    lm_conn *c = conn_of(p);
    for (size_t i = 0; i < len; i++)
        if (!is_tchar((unsigned char)at[i]))
            return fail_cb(c, 400, "invalid character in a header field name");
    /* Trailer fields (after a chunked body) are counted against the limit but not kept:
     * the request's header views point into c->head, which must not move any more. */
    if (c->state == LM_CONN_BODY) return count_head(c, len + 4);
    if (!c->in_field) {
        if (c->n_hdrs >= c->limits->max_headers)
            return fail_cb(c, 431, "too many request header fields");
        if (c->n_hdrs == c->cap_hdrs) {
            c->cap_hdrs = c->cap_hdrs ? c->cap_hdrs * 2 : 16;
            c->hdrs = lm_xrealloc(c->hdrs, c->cap_hdrs * sizeof *c->hdrs);
        }
        lm_hdr_off *h = &c->hdrs[c->n_hdrs++];
        h->name_off = c->head.len;
        h->name_len = 0;
        h->value_off = 0;
        h->value_len = 0;
        c->in_field = true;
    }
    c->hdrs[c->n_hdrs - 1].name_len += len;
    lm_buf_append(&c->head, at, len);
    return count_head(c, len + 4);
}

static int on_header_field_complete(llhttp_t *p)
{
    lm_conn *c = conn_of(p);
    if (c->state == LM_CONN_BODY) return 0; /* trailer */
    lm_buf_append_char(&c->head, '\0');
    c->hdrs[c->n_hdrs - 1].value_off = c->head.len;
    return 0;
}

static int on_header_value(llhttp_t *p, const char *at, size_t len)
{
    lm_conn *c = conn_of(p);
    if (c->value_started) {
        bool contiguous = c->last_val_gen == c->exec_gen
                              ? at == c->last_val_end
                              : c->last_val_at_end && at == c->exec_start;
        if (!contiguous)
            return fail_cb(c, 400, "obs-fold (a header line starting with whitespace) is refused");
    } else if (len > 0) {
        /* a fold after an empty value arrives as the value's first chunk: after LF [SP/HT]*.
         * (An empty value itself is a zero-length chunk pointing at the next line.) */
        const char *q = at;
        while (q > c->exec_start && (q[-1] == ' ' || q[-1] == '\t'))
            q--;
        if (q > c->exec_start ? q[-1] == '\n' : c->prev_tail_lf)
            return fail_cb(c, 400, "obs-fold (a header line starting with whitespace) is refused");
    }
    c->value_started = true;
    c->last_val_gen = c->exec_gen;
    c->last_val_end = at + len;
    c->last_val_at_end = at + len == c->exec_end;
    if (c->state == LM_CONN_BODY) return count_head(c, len); /* trailer */
    c->hdrs[c->n_hdrs - 1].value_len += len;
    lm_buf_append(&c->head, at, len);
    return count_head(c, len);
}

static int on_header_value_complete(llhttp_t *p)
{
    lm_conn *c = conn_of(p);
    c->value_started = false;
    if (c->state == LM_CONN_BODY) return 0; /* trailer */
    /* llhttp keeps trailing whitespace; a field value excludes it (RFC 9110 5.5) */
    lm_hdr_off *h = &c->hdrs[c->n_hdrs - 1];
    while (h->value_len > 0 &&
           (c->head.data[c->head.len - 1] == ' ' || c->head.data[c->head.len - 1] == '\t')) {
        h->value_len--;
        c->head.len--;
    }
    lm_buf_append_char(&c->head, '\0');
    c->in_field = false;
    return 0;
}

static void split_target(lm_req *r)
{
    const char *t = r->target;
    const char *path = t;
    /* absolute-form (RFC 9112 3.2.2): skip scheme and authority */
    if (strncasecmp(t, "http://", 7) == 0 || strncasecmp(t, "https://", 8) == 0) {
        const char *auth = strstr(t, "://") + 3;
        const char *slash = strpbrk(auth, "/?");
        path = slash ? slash : "/";
        if (slash && *slash == '?') path = slash; /* "http://h?x": path empty, handled below */
    }
    const char *q = strchr(path, '?');
    if (path[0] == '?') {
        r->path = "/";
        r->path_len = 1;
    } else {
        r->path = path;
        r->path_len = q ? (size_t)(q - path) : strlen(path);
    }
    r->query_string = q ? q + 1 : "";
    r->query_len = q ? strlen(q + 1) : 0;
}

static int on_headers_complete(llhttp_t *p)
{
    lm_conn *c = conn_of(p);
    lm_req *r = &c->req;
    c->state = LM_CONN_BODY;
    if (c->url_len == 0) return fail_cb(c, 400, "empty request target");

    /* The head buffer is complete and will not move again: build the public views. */
    r->headers = lm_xrealloc(r->headers, (c->n_hdrs ? c->n_hdrs : 1) * sizeof(lm_header));
    for (size_t i = 0; i < c->n_hdrs; i++) {
        r->headers[i].name = c->head.data + c->hdrs[i].name_off;
        r->headers[i].name_len = c->hdrs[i].name_len;
        r->headers[i].value = c->head.data + c->hdrs[i].value_off;
        r->headers[i].value_len = c->hdrs[i].value_len;
    }
    r->n_headers = c->n_hdrs;
    r->target = c->head.data + c->url_off;
    r->target_len = c->url_len;
    _Static_assert(
        (int)LM_METHOD_DELETE == (int)HTTP_DELETE && (int)LM_METHOD_GET == (int)HTTP_GET &&
            (int)LM_METHOD_HEAD == (int)HTTP_HEAD && (int)LM_METHOD_POST == (int)HTTP_POST &&
            (int)LM_METHOD_PUT == (int)HTTP_PUT && (int)LM_METHOD_OPTIONS == (int)HTTP_OPTIONS &&
            (int)LM_METHOD_PATCH == (int)HTTP_PATCH,
        "lm_method follows llhttp_method_t");
    r->method_id = p->method;
    r->method = llhttp_method_name((llhttp_method_t)p->method);
    r->http_minor = p->http_minor;
    r->head_ = p->method == HTTP_HEAD;
    split_target(r);

    if (p->http_major == 0) return fail_cb(c, 400, "request line lacks the HTTP version");
    if (p->http_major != 1) return fail_cb(c, 505, "only HTTP/1.0 and HTTP/1.1 are supported");
    if (r->target[0] != '/' && r->target[0] != '*' && strncasecmp(r->target, "http://", 7) != 0 &&
        strncasecmp(r->target, "https://", 8) != 0)
        return fail_cb(c, 400, "request target must be origin-form or absolute-form");

    /* RFC 9112 3.2: exactly one Host in HTTP/1.1. */
    size_t hosts = 0;
    const char *expect = NULL;
    for (size_t i = 0; i < r->n_headers; i++) {
        if (strcasecmp(r->headers[i].name, "host") == 0)
            hosts++;
        else if (strcasecmp(r->headers[i].name, "expect") == 0)
            expect = r->headers[i].value;
    }
    if (hosts > 1) return fail_cb(c, 400, "more than one Host header");
    if (hosts == 0 && p->http_minor == 1) return fail_cb(c, 400, "missing Host header");

    /* Transfer-Encoding in HTTP/1.0 is a smuggling vector (RFC 9112 6.1). */
    if ((p->flags & F_TRANSFER_ENC_FLAG) && p->http_minor == 0)
        return fail_cb(c, 400, "Transfer-Encoding is not allowed in HTTP/1.0");

    if ((p->flags & F_CONTENT_LENGTH_FLAG) && p->content_length > c->limits->max_body_bytes)
        return fail_cb(c, 413, "request body is larger than the limit");

    bool has_body = (p->flags & F_CHUNKED_FLAG) ||
                    ((p->flags & F_CONTENT_LENGTH_FLAG) && p->content_length > 0);
    if (expect) {
        if (strcasecmp(expect, "100-continue") != 0)
            return fail_cb(c, 417, "only 'Expect: 100-continue' is supported");
        if (has_body && p->http_minor == 1) {
            static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
            lm_buf_append(&c->out, cont, sizeof cont - 1);
        }
    }
    c->keep_alive = llhttp_should_keep_alive(p);
    if (has_body && c->ops->stream && c->ops->stream(c, r)) {
        c->stream = true;
        return HPE_PAUSED; /* run() dispatches now; the body follows to the handler */
    }
    return 0;
}

/* Framing check over the bytes that are not body data. llhttp without LLHTTP_STRICT_MODE
 * skips the byte after a CR without looking at it (headers ending in "\r\n\rX", chunk-size
 * lines "5\rX") and the two bytes after chunk data without checking they are CRLF
 * ("5\r\nhelloXY"): framing that another parser on the path reads differently, i.e. request
 * smuggling. CMakeLists.txt compiles llhttp with strict mode, which refuses these; this scan
 * checks the same rules itself so that the defence does not depend on how llhttp is built:
 * every CR must be followed by LF, and chunk data by CRLF. State lives in c->frame across
 * reads. */
enum { FRAME_ANY, FRAME_LF, FRAME_CR };

static bool frame_scan(lm_conn *c, const char *p, const char *end)
{
    while (p < end) {
        if (c->frame == FRAME_ANY) {
            p = memchr(p, '\r', (size_t)(end - p));
            if (!p) return true;
            c->frame = FRAME_LF;
        } else if (c->frame == FRAME_LF) {
            if (*p != '\n') return false;
            c->frame = FRAME_ANY;
        } else {
            if (*p != '\r') return false;
            c->frame = FRAME_LF;
        }
        p++;
    }
    return true;
}

static int on_body(llhttp_t *p, const char *at, size_t len)
{
    lm_conn *c = conn_of(p);
    if (!frame_scan(c, c->scan_pos, at))
        return fail_cb(c, 400, "malformed message framing (bare CR)");
    c->scan_pos = at + len;
    /* llhttp has already subtracted this span: 0 left means the chunk's data is complete */
    if ((p->flags & F_CHUNKED_FLAG) && p->content_length == 0) c->frame = FRAME_CR;
    if (c->stream) {
        c->stream_bytes += len;
        if (c->stream_bytes > c->limits->max_body_bytes)
            return fail_cb(c, 413, "request body is larger than the limit");
        if (c->body_data && c->dispatched && !c->stream_done) {
            bool d = c->in_dispatch;
            c->in_dispatch = true; /* a response finished here is flushed by the caller */
            c->body_data(&c->req, at, len, c->body_ud);
            c->in_dispatch = d;
            /* paused from the callback: stop here, not at the end of this read (no data may
             * arrive while paused); run() keeps the rest in pending */
            if (c->stream_paused) {
                c->body_pause = true;
                return HPE_PAUSED;
            }
        }
        return 0;
    }
    if (c->body.len + len > c->limits->max_body_bytes)
        return fail_cb(c, 413, "request body is larger than the limit");
    lm_buf_append(&c->body, at, len);
    return 0;
}

/* A chunk's size is known before its data: refuse an oversized body at once rather than
 * after buffering up to the limit. */
static int on_chunk_header(llhttp_t *p)
{
    lm_conn *c = conn_of(p);
    if (p->content_length > c->limits->max_body_bytes - c->body.len)
        return fail_cb(c, 413, "request body is larger than the limit");
    return 0;
}

static int on_message_complete(llhttp_t *p)
{
    lm_conn *c = conn_of(p);
    if (c->state == LM_CONN_CLOSING) return HPE_PAUSED; /* answered before the body ended */
    c->keep_alive = llhttp_should_keep_alive(p);
    /* Upgrade/CONNECT: llhttp parses no more HTTP after this message. We never switch
     * protocols, so this request is answered and the connection closed. */
    if (p->upgrade) c->keep_alive = false;
    c->state = LM_CONN_BUSY;
    return HPE_PAUSED; /* one request at a time: resume when its response is finished */
}

static llhttp_settings_t settings;
static uv_once_t settings_once = UV_ONCE_INIT;

/* Runs once, whichever worker thread accepts the first connection (uv_once). */
static void settings_init(void)
{
    llhttp_settings_init(&settings);
    settings.on_message_begin = on_message_begin;
    settings.on_url = on_url;
    settings.on_url_complete = on_url_complete;
    settings.on_header_field = on_header_field;
    settings.on_header_field_complete = on_header_field_complete;
    settings.on_header_value = on_header_value;
    settings.on_header_value_complete = on_header_value_complete;
    settings.on_headers_complete = on_headers_complete;
    settings.on_body = on_body;
    settings.on_chunk_header = on_chunk_header;
    settings.on_message_complete = on_message_complete;
}

void lm_conn_init(lm_conn *c, const lm_conn_limits *limits, const lm_conn_ops *ops, void *owner)
{
    memset(c, 0, sizeof *c);
    c->limits = limits;
    c->ops = ops;
    c->owner = owner;
    c->state = LM_CONN_IDLE;
    c->keep_alive = true;
    uv_once(&settings_once, settings_init);
    llhttp_init(&c->parser, HTTP_REQUEST, &settings);
    c->parser.data = c;
}

void lm_conn_free(lm_conn *c)
{
    assert(!lm_conn_busy(c));
    lm_query_free(&c->req.query);
    free(c->req.headers);
    free(c->hdrs);
    lm_buf_free(&c->out);
    lm_buf_free(&c->pending);
    lm_buf_free(&c->head);
    lm_buf_free(&c->body);
    lm_buf_free(&c->resp_headers);
    lm_buf_free(&c->params);
}

bool lm_conn_busy(const lm_conn *c)
{
    return c->dispatched;
}

/* May the parser go on now? Not while a request waits for its response, output is backed
 * up, or the handler paused its streamed body. */
static bool parse_blocked(const lm_conn *c)
{
    return (c->state == LM_CONN_BUSY && c->dispatched) || c->out_blocked || c->stream_paused;
}

/* Ends a streamed body once: status 0 complete, else why it failed (the connection will
 * close after the response; further input is discarded). */
static void stream_end(lm_conn *c, int status)
{
    if (c->stream_done) return;
    c->stream_done = true;
    c->stream_paused = false;
    if (status) {
        c->keep_alive = false;
        c->parse_failed = true;
        lm_buf_reset(&c->pending);
    }
    lm_body_end_fn end = c->body_end;
    void *ud = c->body_ud;
    c->body_data = NULL;
    c->body_end = NULL;
    if (end && c->dispatched) {
        bool d = c->in_dispatch;
        c->in_dispatch = true;
        end(&c->req, status, ud);
        c->in_dispatch = d;
    }
}

bool lm_conn_wants_input(const lm_conn *c)
{
    if (c->state == LM_CONN_CLOSING) return true; /* read and discard (lingering close) */
    if (c->parse_failed) return true;             /* discard until the close */
    if (parse_blocked(c)) return c->pending.len < c->limits->max_pending_bytes;
    return true;
}

void lm_conn_fail(lm_conn *c, int status, const char *detail)
{
    if (c->state == LM_CONN_CLOSING) return;
    if (lm_conn_busy(c)) { /* the handler answers; a streamed body it reads has failed */
        if (c->stream_started) stream_end(c, status);
        return;
    }
    char trace_hex[33];
    lm_trace_ctx t;
    lm_trace_begin(&t, NULL, 0);
    lm_trace_id_hex(&t, trace_hex);
    /* instance: the request's path when the request line got that far (DESIGN 3.4) */
    char *instance = NULL;
    if (c->url_complete && c->url_len) {
        const char *target = c->head.data + c->url_off;
        size_t n = strcspn(target, "?");
        if (n > 512) n = 512;
        instance = lm_xstrndup(target, n);
    }
    lm_problem pr = {
        .status = status, .detail = detail, .trace_id = trace_hex, .instance = instance};
    lm_buf body = LM_BUF_INIT;
    lm_problem_format(&body, &pr);
    free(instance);
    lm_buf_printf(&c->out,
                  "HTTP/1.1 %d %s\r\nServer: lotmesh\r\nDate: %s\r\nContent-Type: "
                  "application/problem+json\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n",
                  status, lm_status_reason(status), lm_conn_date_now(), body.len);
    lm_buf_append(&c->out, body.data, body.len);
    lm_buf_free(&body);
    c->state = LM_CONN_CLOSING;
    lm_buf_reset(&c->pending);
    if (c->ops->completed) {
        c->req.method = c->req.method ? c->req.method : "-";
        c->req.trace = t;
        c->ops->completed(c, &c->req, status, 0);
    }
}

static void dispatch(lm_conn *c)
{
    lm_req *r = &c->req;
    lm_buf_append_char(&c->body, '\0');
    r->body = c->body.data;
    r->body_len = c->body.len - 1;
    r->conn_ = c;
    r->worker = c->worker;
    c->resp_started = c->resp_finished = c->resp_chunked = false;
    c->resp_status = 0;
    c->resp_bytes = 0;
    c->dispatched = true;
    c->in_dispatch = true;
    c->ops->dispatch(c, r);
    c->in_dispatch = false;
}

/* Do the bytes end in LF [SP/HT]* (prev: whether what came before them did)? */
static bool tail_lf(const char *data, size_t len, bool prev)
{
    while (len > 0 && (data[len - 1] == ' ' || data[len - 1] == '\t'))
        len--;
    return len > 0 ? data[len - 1] == '\n' : prev;
}

/* Parses data until it is consumed, a request is in flight, or the connection is closing.
 * Unparsed input is kept in c->pending. */
static void run(lm_conn *c, const char *data, size_t len)
{
    /* after a pause at a body's last byte llhttp owes on_message_complete: execute once even
     * without input */
    bool kick = c->body_kick;
    c->body_kick = false;
    while (len > 0 || kick) {
        kick = false;
        c->exec_gen++;
        c->exec_start = data;
        c->exec_end = data + len;
        c->scan_pos = data;
        llhttp_errno_t err = llhttp_execute(&c->parser, data, len);
        if (err == HPE_OK) {
            c->prev_tail_lf = tail_lf(data, len, c->prev_tail_lf);
            if (!frame_scan(c, c->scan_pos, data + len)) goto framing_error;
            return;
        }
        if (err == HPE_PAUSED) {
            const char *pos = llhttp_get_error_pos(&c->parser);
            size_t used = (size_t)(pos - data);
            assert(used <= len);
            c->prev_tail_lf = tail_lf(data, used, c->prev_tail_lf);
            if (!frame_scan(c, c->scan_pos, data + used)) goto framing_error; /* not dispatched */
            data += used;
            len -= used;
            llhttp_resume(&c->parser);
            if (c->state == LM_CONN_CLOSING) return;
            if (c->body_pause) { /* the handler paused its streamed body mid-read */
                c->body_pause = false;
                c->body_kick = true;
                lm_buf_append(&c->pending, data, len);
                return;
            }
            if (c->stream && !c->stream_started) { /* headers of a streamed request */
                c->stream_started = true;
                dispatch(c);
            } else if (c->stream) { /* the end of a streamed body */
                stream_end(c, 0);
            } else {
                dispatch(c);
            }
            if (c->state == LM_CONN_CLOSING) return;
            /* Backpressure against pipelining clients that do not read: one read of small
             * requests can ask for megabytes of responses. */
            if (c->out.len >= c->limits->max_out_bytes) c->out_blocked = true;
            if (parse_blocked(c)) {
                lm_buf_append(&c->pending, data, len);
                return;
            }
            continue;
        }
        /* a callback's own verdict wins, whatever errno llhttp wraps it in */
        int status = c->error_status ? c->error_status : 400;
        const char *detail = c->error_status && c->error_detail
                                 ? c->error_detail
                                 : llhttp_get_error_reason(&c->parser);
        if (c->error_status) {
            /* keep the callback's detail */
        } else if (err == HPE_INVALID_CONTENT_LENGTH || err == HPE_UNEXPECTED_CONTENT_LENGTH)
            detail = "invalid, duplicate or conflicting Content-Length";
        else if (err == HPE_INVALID_TRANSFER_ENCODING)
            detail = "invalid Transfer-Encoding";
        else if (err == HPE_INVALID_CHUNK_SIZE)
            detail = "invalid chunk size";
        else if (err == HPE_INVALID_METHOD)
            detail = "invalid or unsupported request method";
        else if (err == HPE_INVALID_VERSION)
            detail = "invalid HTTP version";
        else if (err == HPE_INVALID_HEADER_TOKEN)
            detail = strstr(llhttp_get_error_reason(&c->parser), "value") == NULL
                         ? "invalid character in a header field name"
                         : "invalid character in a header field (obs-fold and bare CR/LF are "
                           "refused)";
        else if (err == HPE_STRICT || err == HPE_CR_EXPECTED || err == HPE_LF_EXPECTED)
            /* llhttp's strict mode and frame_scan() guard the same framing rules */
            detail = "malformed message framing (bare CR, or chunk data not followed by CRLF)";
        if (c->stream_started && lm_conn_busy(c)) { /* the handler has the request */
            stream_end(c, status);
            return;
        }
        /* already answered (a streamed request's response finished before its body): the
         * rest of the body is discarded, and nothing may follow that Connection: close */
        if (c->state == LM_CONN_CLOSING) return;
        c->state = LM_CONN_HEAD; /* not busy: allowed to answer */
        lm_conn_fail(c, status, detail ? detail : "malformed request");
        return;
    }
    return;
framing_error:
    if (c->stream_started && lm_conn_busy(c)) {
        stream_end(c, 400);
        return;
    }
    if (c->state == LM_CONN_CLOSING) return; /* answered already, see above */
    c->state = LM_CONN_HEAD;
    lm_conn_fail(c, 400, "malformed message framing (bare CR, or chunk data not followed by CRLF)");
}

void lm_conn_feed(lm_conn *c, const char *data, size_t len)
{
    if (c->state == LM_CONN_CLOSING || c->parse_failed || len == 0) return;
    if (parse_blocked(c) || c->pending.len > 0) {
        lm_buf_append(&c->pending, data, len);
        if (!parse_blocked(c)) lm_conn_resume(c);
        return;
    }
    run(c, data, len);
}

void lm_conn_resume(lm_conn *c)
{
    if (c->state == LM_CONN_CLOSING || c->parse_failed || parse_blocked(c)) return;
    if (c->pending.len == 0) {
        if (c->body_kick) run(c, "", 0);
        if (c->eof) lm_conn_eof(c);
        return;
    }
    lm_buf in = c->pending;
    c->pending = (lm_buf)LM_BUF_INIT;
    run(c, in.data, in.len);
    if (c->pending.data == NULL) {
        c->pending = in; /* recycle the memory */
        c->pending.len = 0;
    } else {
        lm_buf_free(&in);
    }
    if (c->eof && c->pending.len == 0 && !lm_conn_busy(c)) lm_conn_eof(c);
}

void lm_conn_eof(lm_conn *c)
{
    c->eof = true;
    if (c->stream_started && lm_conn_busy(c) && !c->stream_done && c->pending.len == 0) {
        stream_end(c, 499); /* the body will never be complete */
        return;
    }
    if (lm_conn_busy(c) || c->pending.len > 0) return; /* answer what we have first */
    /* idle, or half a request (nobody will read an answer reliably): just close */
    c->state = LM_CONN_CLOSING;
}

void lm_conn_abandon(lm_conn *c)
{
    if (lm_conn_busy(c)) {
        c->req.abandoned_ = true;
        if (c->stream_started) stream_end(c, 499);
        /* a producer waiting for the output to drain must learn it never will */
        if (lm_conn_busy(c)) lm_conn_drained(c);
    }
    lm_buf_reset(&c->pending);
    if (!lm_conn_busy(c)) c->state = LM_CONN_CLOSING;
}

bool lm_req_streaming(const lm_req *req)
{
    return req->conn_ && req->conn_->stream;
}

void lm_req_read_body(lm_req *req, lm_body_data_fn data, lm_body_end_fn end, void *ud)
{
    lm_conn *c = req->conn_;
    assert(c->stream && c->dispatched);
    c->body_data = data;
    c->body_end = end;
    c->body_ud = ud;
}

void lm_req_pause_body(lm_req *req)
{
    req->conn_->stream_paused = !req->conn_->stream_done;
}

void lm_req_resume_body(lm_req *req)
{
    lm_conn *c = req->conn_;
    if (!c->stream_paused) return;
    c->stream_paused = false;
    if (!c->in_dispatch) c->ops->output(c); /* the transport parses what waited, reads again */
}
