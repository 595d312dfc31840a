/* fuzz_http_request.c — libFuzzer target: the HTTP/1.1 engine (lm_conn) driven without
 * sockets, the way server.c drives it.
 *
 * Input: 4 control bytes, then the bytes a client sends. The control bytes choose the limits
 * (small ones reach 413/414/431 and backpressure quickly), how many reads the bytes arrive in
 * and a seed for every other decision: where the reads are split, how each request is answered
 * (synchronously; streamed chunked or sized; left pending and answered after the next read,
 * which keeps pipelined input in conn->pending; streamed until backpressure and continued from
 * lm_resp_on_drain; aborted mid-body with lm_resp_abort; problem; 204), whether a request with
 * a body is streamed to its handler (lm_req_read_body: answered at the end of the body,
 * before it, from a data callback, without reading it, or later; paused and resumed), whether
 * the simulated socket is slow (out_blocked, as server.c sets it) and whether a timeout
 * (lm_conn_fail 408) strikes.
 *
 * Oracle, beyond the sanitizers: the output stream parses as a sequence of well-formed
 * responses (only an aborted one may be cut short, and then nothing follows it); responses to
 * dispatched requests come in dispatch order (X-Seq header); HEAD, 1xx, 204 and 304 responses
 * carry no body; nothing follows a "Connection: close" response;
 * every dispatched request completes; the conn is not busy when freed; a streamed body's
 * callbacks come only while its request is in flight, never after its end, and end comes once.
 * Handlers read every byte of the request (target, headers, body) so a dangling view shows up under
 * ASan. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "http_conn.h"
#include "problem.h"
#include "trace.h"
#include "url.h"

#define MAX_SEQ 4096

typedef struct fz {
    lm_conn c;
    lm_conn_limits limits;
    lm_buf all;   /* everything "written to the socket" */
    lm_req *held; /* answered after the next read */
    int held_mode;
    unsigned seq; /* requests dispatched */
    unsigned completed;
    long aborted; /* seq of the request answered with lm_resp_abort, -1 if none */
    unsigned char is_head[MAX_SEQ];
    uint64_t rng;
    unsigned sink; /* keeps the reads of request bytes from being optimised away */
    /* the streamed request in flight, if any */
    lm_req *sreq;
    int smode;
    bool sended, spaused, sresponded;
    uint64_t sbytes;
} fz;

static fz F;

static uint32_t rnd(void)
{
    /* splitmix64: deterministic per input */
    uint64_t z = (F.rng += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return (uint32_t)((z ^ (z >> 31)) >> 16);
}

static void die(const char *what)
{
    fprintf(stderr, "fuzz_http_request: invariant violated: %s\n", what);
    abort();
}

static void drain(void)
{
    lm_buf_append(&F.all, F.c.out.data, F.c.out.len);
    lm_buf_reset(&F.c.out);
}

/* Touches every byte the engine hands a handler, as server.c and handlers do. */
static void read_request(lm_req *req)
{
    unsigned h = 0;
    for (size_t i = 0; i < req->target_len; i++)
        h += (unsigned char)req->target[i];
    for (size_t i = 0; i < req->path_len; i++)
        h += (unsigned char)req->path[i];
    for (size_t i = 0; i < req->query_len; i++)
        h += (unsigned char)req->query_string[i];
    for (size_t i = 0; i < req->n_headers; i++) {
        const lm_header *hd = &req->headers[i];
        if (strlen(hd->name) != hd->name_len || strlen(hd->value) != hd->value_len)
            die("header name/value length does not match its NUL terminator");
        for (size_t k = 0; k < hd->value_len; k++)
            h += (unsigned char)hd->value[k];
    }
    for (size_t i = 0; i <= req->body_len; i++)
        h += (unsigned char)req->body[i];
    if (req->body[req->body_len] != '\0') die("body not NUL-terminated");
    const char *rid = lm_req_header(req, "x-request-id");
    lm_trace_request_id_assign(rid, rid ? strlen(rid) : 0, req->request_id);
    const char *tp = lm_req_header(req, "traceparent");
    lm_trace_begin(&req->trace, tp, tp ? strlen(tp) : 0);
    lm_query q;
    if (lm_query_parse(req->query_string, req->query_len, &q) == 0) {
        h += (unsigned)q.n;
        lm_query_free(&q);
    }
    F.sink += h;
}

/* ---- streamed request bodies ------------------------------------------------------------- */

enum { S_AT_END, S_BEFORE, S_PAUSED, S_UNREAD, S_IN_DATA, S_LATER, S_MODES };

static void stream_respond(lm_req *req, int status)
{
    F.sresponded = true;
    if (status) {
        lm_resp_problem(req, status == 499 ? 400 : status, "request body failed");
    } else {
        char n[32];
        int k = snprintf(n, sizeof n, "%llu", (unsigned long long)F.sbytes);
        lm_resp_send(req, 200, "text/plain", n, (size_t)k);
    }
}

static void on_body_data(lm_req *req, const char *data, size_t len, void *ud)
{
    (void)ud;
    if (req != F.sreq) die("body data for a request not in flight");
    if (F.sended) die("body data after the body's end");
    if (F.sresponded) die("body data after the response");
    if (F.spaused) die("body data while paused");
    for (size_t i = 0; i < len; i++)
        F.sink += (unsigned char)data[i];
    F.sbytes += len;
    if (F.smode == S_IN_DATA) {
        stream_respond(req, 0);
        return;
    }
    if ((rnd() & 7) == 0) {
        lm_req_pause_body(req);
        F.spaused = true;
    }
}

static void on_body_end(lm_req *req, int status, void *ud)
{
    (void)ud;
    if (req != F.sreq) die("body end for a request not in flight");
    if (F.sended) die("body end twice");
    if (F.sresponded) die("body end after the response");
    if (status != 0 && (status < 400 || status > 499)) die("body end with an odd status");
    F.sended = true;
    F.spaused = false;
    if (F.smode == S_LATER) return; /* answered after the next read */
    stream_respond(req, status);
}

static void dispatch_streamed(lm_req *req)
{
    F.sreq = req;
    F.smode = (int)(rnd() % S_MODES);
    F.sended = F.spaused = F.sresponded = false;
    F.sbytes = 0;
    if (req->body_len != 0) die("streamed request with a buffered body");
    if (F.smode != S_UNREAD) lm_req_read_body(req, on_body_data, on_body_end, NULL);
    switch (F.smode) {
    case S_BEFORE: /* answers before the body: the connection closes after */
    case S_UNREAD:
        stream_respond(req, 0);
        break;
    case S_PAUSED:
        lm_req_pause_body(req);
        F.spaused = true;
        break;
    case S_LATER:
        F.held = req;
        F.held_mode = 3;
        break;
    default:
        break;
    }
}

static bool on_stream(lm_conn *c, lm_req *req)
{
    (void)c;
    (void)req;
    return rnd() % 3 != 0;
}

/* The handler lets a paused body flow again (from outside any callback). */
static void resume_body(void)
{
    if (F.sreq && F.spaused && !F.sended && !F.sresponded) {
        F.spaused = false;
        lm_req_resume_body(F.sreq);
    }
}

static void on_drained(lm_req *req, void *ud)
{
    (void)ud;
    if (F.held != req || F.held_mode != 9) die("drain callback for a request not waiting");
    F.held = NULL;
    lm_resp_write(req, "drained", 7);
    lm_resp_end(req);
}

static void on_dispatch(lm_conn *c, lm_req *req)
{
    (void)c;
    if (F.held) die("a second request dispatched while one is in flight");
    unsigned s = F.seq++;
    if (s < MAX_SEQ) F.is_head[s] = req->method_id == HTTP_HEAD;
    read_request(req);
    char seqv[16];
    snprintf(seqv, sizeof seqv, "%u", s);
    if (!lm_resp_header(req, "X-Seq", seqv)) die("valid header refused");
    if (lm_req_streaming(req)) {
        dispatch_streamed(req);
        return;
    }
    int mode = (int)(rnd() % 11);
    switch (mode) {
    case 0:
        lm_resp_send(req, 200, "text/plain", req->target, req->target_len);
        break;
    case 1: /* chunked (or close-delimited for HTTP/1.0) */
        lm_resp_begin(req, 200, "text/plain", -1);
        lm_resp_write(req, req->target, req->target_len);
        lm_resp_write(req, "", 0);
        lm_resp_write(req, "x", 1);
        lm_resp_end(req);
        break;
    case 2: /* sized stream */
        lm_resp_begin(req, 200, "text/plain", (int64_t)req->target_len + 1);
        lm_resp_write(req, req->target, req->target_len);
        lm_resp_write(req, "!", 1);
        lm_resp_end(req);
        break;
    case 3: /* answered after the next read */
        F.held = req;
        F.held_mode = 3;
        break;
    case 4: /* stream started now, finished after the next read */
        lm_resp_begin(req, 200, "application/octet-stream", -1);
        lm_resp_write(req, "a", 1);
        F.held = req;
        F.held_mode = 4;
        break;
    case 5:
        lm_resp_problem(req, 404, "no such thing");
        break;
    case 6:
        lm_resp_send(req, 204, NULL, NULL, 0);
        break;
    case 7: /* response splitting attempts are refused; body echoed */
        if (lm_resp_header(req, "Bad\r\nName", "x")) die("header name with CRLF accepted");
        if (lm_resp_header(req, "X-A", "v\r\nInjected: 1")) die("header value with CRLF accepted");
        lm_resp_send(req, 200, "application/octet-stream", req->body, req->body_len);
        break;
    case 9: { /* stream until the output is over its mark, go on when it has drained */
        lm_resp_begin(req, 200, "text/plain", -1);
        for (int i = 0; i < 64; i++) {
            if (!lm_resp_write(req, "0123456789abcdef", 16)) {
                lm_resp_on_drain(req, on_drained, NULL);
                F.held = req;
                F.held_mode = 9;
                return;
            }
        }
        lm_resp_end(req);
        break;
    }
    case 10: /* the upstream failed: cut the response (before or after it started) */
        F.aborted = (long)s;
        if (rnd() & 1) {
            lm_resp_begin(req, 200, "text/plain", (int64_t)req->target_len + 10);
            lm_resp_write(req, req->target, req->target_len);
        }
        lm_resp_abort(req);
        break;
    default: /* sized stream, answered after the next read */
        lm_resp_begin(req, 200, "text/plain", 3);
        lm_resp_write(req, "ab", 2);
        F.held = req;
        F.held_mode = 8;
        break;
    }
}

static void on_output(lm_conn *c)
{
    /* server.c's engine_output: take the bytes, go on with pipelined input */
    drain();
    lm_conn_resume(c);
    drain();
}

static void on_completed(lm_conn *c, lm_req *req, int status, uint64_t bytes)
{
    (void)c;
    (void)req;
    (void)bytes;
    if (status < 100 || status > 599) die("completed with an impossible status");
    F.completed++;
    if (req == F.sreq) F.sresponded = true; /* no body callbacks from here on */
}

static const lm_conn_ops ops = {on_dispatch, on_output, on_completed, on_stream};

static void answer_held(void)
{
    lm_req *r = F.held;
    if (!r) return;
    F.held = NULL; /* before answering: finishing may dispatch the next request */
    if (F.held_mode == 3) {
        if (r == F.sreq) F.sresponded = true;
        lm_resp_send(r, 201, "text/plain", "late", 4);
    } else if (F.held_mode == 9) { /* ends without waiting for the drain */
        lm_resp_write(r, "early", 5);
        lm_resp_end(r);
    } else if (F.held_mode == 4) {
        lm_resp_write(r, "bc", 2);
        lm_resp_end(r);
    } else {
        lm_resp_write(r, "c", 1);
        lm_resp_end(r);
    }
}

/* The socket took everything: clear backpressure, run a drain callback and continue with
 * pipelined input, as server.c's conn_flush does. */
static void unblock(void)
{
    for (int i = 0; i < 100000; i++) {
        drain();
        bool was_blocked = F.c.out_blocked;
        F.c.out_blocked = false;
        if (F.c.drain_cb) {
            lm_conn_drained(&F.c);
            if (F.c.out.len) continue;
        }
        lm_conn_resume(&F.c); /* server.c only resumes when it was blocked: both are legal */
        (void)was_blocked;
        if (!F.c.out.len && !F.c.out_blocked) return;
    }
    die("unblock does not converge");
}

/* ---- the oracle: parse the output stream -------------------------------------------------- */

static const char *find(const char *p, const char *end, const char *needle)
{
    size_t n = strlen(needle);
    for (; p + n <= end; p++)
        if (memcmp(p, needle, n) == 0) return p;
    return NULL;
}

static bool header_is(const char *line, const char *eol, const char *name, const char **value)
{
    size_t n = strlen(name);
    if ((size_t)(eol - line) < n + 1 || strncasecmp(line, name, n) != 0 || line[n] != ':')
        return false;
    const char *v = line + n + 1;
    while (v < eol && *v == ' ')
        v++;
    *value = v;
    return true;
}

static void check_output(const char *p, size_t n)
{
    const char *end = p + n;
    long expect_seq = 0;
    bool closed = false;
    while (p < end) {
        if (closed) die("bytes after a Connection: close response");
        if (end - p < 12 || memcmp(p, "HTTP/1.1 ", 9) != 0) die("not a status line");
        int status = atoi(p + 9);
        if (status < 100 || status > 599) die("bad status code");
        const char *head_end = find(p, end, "\r\n\r\n");
        if (!head_end) die("response head not terminated");
        long content_length = -1, seq = -1;
        bool chunked = false;
        for (const char *line = find(p, end, "\r\n") + 2; line < head_end + 2;) {
            const char *eol = find(line, head_end + 2, "\r\n");
            const char *v;
            if (header_is(line, eol, "Content-Length", &v))
                content_length = atol(v);
            else if (header_is(line, eol, "Transfer-Encoding", &v))
                chunked = strncmp(v, "chunked", 7) == 0;
            else if (header_is(line, eol, "Connection", &v))
                closed = strncmp(v, "close", 5) == 0;
            else if (header_is(line, eol, "X-Seq", &v))
                seq = atol(v);
            line = eol + 2;
        }
        p = head_end + 4;
        if (status == 100) {
            if (closed || content_length >= 0 || seq >= 0) die("100 Continue with headers");
            continue;
        }
        if (seq >= 0) {
            if (seq != expect_seq) die("responses out of order");
            expect_seq++;
            if (seq == F.aborted) {
                /* cut short (its head went out before the abort): the rest of the stream is
                 * what was sent of its body, then the connection closes */
                p = end;
                continue;
            }
        }
        bool head = seq >= 0 && seq < MAX_SEQ && F.is_head[seq];
        if (head || status < 200 || status == 204 || status == 304) continue;
        if (content_length >= 0) {
            if (content_length > end - p) die("body shorter than Content-Length");
            p += content_length;
        } else if (chunked) {
            for (;;) {
                char *after;
                unsigned long size = strtoul(p, &after, 16);
                if (after == p || after + 2 > end || memcmp(after, "\r\n", 2) != 0)
                    die("bad chunk size line");
                p = after + 2;
                if (size == 0) {
                    if (end - p < 2 || memcmp(p, "\r\n", 2) != 0) die("bad last chunk");
                    p += 2;
                    break;
                }
                if ((unsigned long)(end - p) < size + 2 || memcmp(p + size, "\r\n", 2) != 0)
                    die("bad chunk data");
                p += size + 2;
            }
        } else {
            if (!closed) die("body without length on a persistent connection");
            p = end; /* delimited by the close */
        }
    }
    bool cut_before_start = F.aborted >= 0 && F.aborted == (long)F.seq - 1 &&
                            expect_seq == F.aborted; /* aborted before its head was written */
    if (expect_seq != (long)F.seq && !cut_before_start) die("a dispatched request got no response");
}

/* ---- driver ------------------------------------------------------------------------------ */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 4) return 0;
    const uint8_t ctl = data[0];
    memset(&F, 0, sizeof F);
    F.aborted = -1;
    F.rng = (uint64_t)data[1] | (uint64_t)data[2] << 8 | (uint64_t)data[3] << 16;
    const char *in = (const char *)data + 4;
    size_t len = size - 4;

    lm_conn_limits_default(&F.limits);
    if (ctl & 1) {
        F.limits.max_head_bytes = 256;
        F.limits.max_uri_bytes = 64;
        F.limits.max_headers = 4;
        F.limits.max_body_bytes = 32;
    }
    if (ctl & 2) {
        F.limits.max_pending_bytes = 64;
        F.limits.max_out_bytes = 128;
    }
    lm_conn_init(&F.c, &F.limits, &ops, &F);

    /* split points: up to 8 reads */
    size_t n_reads = 1 + (size_t)((ctl >> 2) & 7);
    size_t cuts[9];
    cuts[0] = 0;
    for (size_t i = 1; i < n_reads; i++)
        cuts[i] = len ? rnd() % (len + 1) : 0;
    cuts[n_reads] = len;
    for (size_t i = 1; i < n_reads; i++) /* insertion sort: few elements */
        for (size_t k = i; k > 1 && cuts[k] < cuts[k - 1]; k--) {
            size_t t = cuts[k];
            cuts[k] = cuts[k - 1];
            cuts[k - 1] = t;
        }

    for (size_t i = 0; i < n_reads; i++) {
        /* a transport reads only while the engine wants input */
        if (!lm_conn_wants_input(&F.c)) {
            answer_held();
            resume_body();
            unblock();
        }
        if (lm_conn_wants_input(&F.c)) lm_conn_feed(&F.c, in + cuts[i], cuts[i + 1] - cuts[i]);
        /* a timeout: answered by the engine, or ends a streamed body with 408 */
        if ((rnd() & 63) == 0) lm_conn_fail(&F.c, 408, "timed out");
        if (rnd() & 1) answer_held();
        if (rnd() & 1) resume_body();
        /* a slow socket (server.c: inflight over the high-water mark) or a fast one */
        if (F.c.out.len && (rnd() & 3) == 0)
            F.c.out_blocked = true;
        else
            unblock();
    }
    lm_conn_eof(&F.c);
    for (int i = 0;
         i < 100000 && (F.held || lm_conn_busy(&F.c) || F.c.out_blocked || F.c.pending.len); i++) {
        answer_held();
        resume_body();
        unblock();
        if (!F.held && !lm_conn_busy(&F.c) && !F.c.out_blocked) break;
    }
    drain();
    if (F.held || lm_conn_busy(&F.c)) die("a request never completed");
    if (F.completed < F.seq) die("fewer completions than dispatches");
    if (getenv("FUZZ_DUMP")) /* debugging an artifact: FUZZ_DUMP=1 fuzz_http_request <file> */
        fprintf(stderr, "---- output ----\n%.*s\n---- end ----\n", (int)F.all.len,
                lm_buf_cstr(&F.all));
    check_output(lm_buf_cstr(&F.all), F.all.len); /* NUL after the end: strtoul stops */
    lm_conn_free(&F.c);
    lm_buf_free(&F.all);
    return 0;
}
