/* fuzz_http_request.c — libFuzzer target: the HTTP/1.1 engine (lm_conn) driven without
 * sockets, the way server.c drives it.
 *
 * Input: 4 control bytes, then the bytes a client sends. The control bytes choose the limits
 * (small ones reach 413/414/431 and backpressure quickly), how many reads the bytes arrive in
 * and a seed for every other decision: where the reads are split, how each request is answered
 * (synchronously; streamed chunked or sized; left pending and answered after the next read,
 * which keeps pipelined input in conn->pending; problem; 204), whether the simulated socket is
 * slow (out_blocked, as server.c sets it) and whether a timeout (lm_conn_fail 408) strikes.
 *
 * Oracle, beyond the sanitizers: the output stream parses as a sequence of well-formed
 * responses; responses to dispatched requests come in dispatch order (X-Seq header); HEAD,
 * 1xx, 204 and 304 responses carry no body; nothing follows a "Connection: close" response;
 * every dispatched request completes; the conn is not busy when freed. Handlers read every
 * byte of the request (target, headers, body) so a dangling view shows up under ASan. */
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
    lm_http_limits limits;
    lm_buf all;      /* everything "written to the socket" */
    lm_req *held;    /* answered after the next read */
    int held_mode;
    unsigned seq;    /* requests dispatched */
    unsigned completed;
    unsigned char is_head[MAX_SEQ];
    uint64_t rng;
    unsigned sink;   /* keeps the reads of request bytes from being optimised away */
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
    for (size_t i = 0; i < req->target_len; i++) h += (unsigned char)req->target[i];
    for (size_t i = 0; i < req->path_len; i++) h += (unsigned char)req->path[i];
    for (size_t i = 0; i < req->query_len; i++) h += (unsigned char)req->query_string[i];
    for (size_t i = 0; i < req->n_headers; i++) {
        const lm_header *hd = &req->headers[i];
        if (strlen(hd->name) != hd->name_len || strlen(hd->value) != hd->value_len)
            die("header name/value length does not match its NUL terminator");
        for (size_t k = 0; k < hd->value_len; k++) h += (unsigned char)hd->value[k];
    }
    for (size_t i = 0; i <= req->body_len; i++) h += (unsigned char)req->body[i];
    if (req->body[req->body_len] != '\0') die("body not NUL-terminated");
    const char *rid = lm_req_header(req, "x-request-id");
    lm_request_id_assign(rid, rid ? strlen(rid) : 0, req->request_id);
    const char *tp = lm_req_header(req, "traceparent");
    lm_trace_begin(&req->trace, tp, tp ? strlen(tp) : 0);
    lm_query q;
    if (lm_query_parse(req->query_string, req->query_len, &q) == 0) {
        h += (unsigned)q.n;
        lm_query_free(&q);
    }
    F.sink += h;
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
    int mode = (int)(rnd() % 9);
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
        lm_problem_send(req, 404, "no such thing");
        break;
    case 6:
        lm_resp_send(req, 204, NULL, NULL, 0);
        break;
    case 7: /* response splitting attempts are refused; body echoed */
        if (lm_resp_header(req, "Bad\r\nName", "x")) die("header name with CRLF accepted");
        if (lm_resp_header(req, "X-A", "v\r\nInjected: 1")) die("header value with CRLF accepted");
        lm_resp_send(req, 200, "application/octet-stream", req->body, req->body_len);
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
}

static const lm_conn_ops ops = {on_dispatch, on_output, on_completed};

static void answer_held(void)
{
    lm_req *r = F.held;
    if (!r) return;
    F.held = NULL; /* before answering: finishing may dispatch the next request */
    if (F.held_mode == 3) {
        lm_resp_send(r, 201, "text/plain", "late", 4);
    } else if (F.held_mode == 4) {
        lm_resp_write(r, "bc", 2);
        lm_resp_end(r);
    } else {
        lm_resp_write(r, "c", 1);
        lm_resp_end(r);
    }
}

/* The socket took everything: clear backpressure and continue, as server.c's conn_flush. */
static void unblock(void)
{
    for (int i = 0; i < 100000; i++) {
        drain();
        if (!F.c.out_blocked) {
            lm_conn_resume(&F.c);
            drain();
            if (!F.c.out_blocked) return;
            continue;
        }
        F.c.out_blocked = false;
        lm_conn_resume(&F.c);
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
    while (v < eol && *v == ' ') v++;
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
    if (expect_seq != (long)(F.seq < MAX_SEQ ? F.seq : expect_seq))
        die("a dispatched request got no response");
}

/* ---- driver ------------------------------------------------------------------------------ */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 4) return 0;
    const uint8_t ctl = data[0];
    memset(&F, 0, sizeof F);
    F.rng = (uint64_t)data[1] | (uint64_t)data[2] << 8 | (uint64_t)data[3] << 16;
    const char *in = (const char *)data + 4;
    size_t len = size - 4;

    lm_http_limits_default(&F.limits);
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
    for (size_t i = 1; i < n_reads; i++) cuts[i] = len ? rnd() % (len + 1) : 0;
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
            unblock();
        }
        if (lm_conn_wants_input(&F.c)) lm_conn_feed(&F.c, in + cuts[i], cuts[i + 1] - cuts[i]);
        if ((rnd() & 63) == 0 && !lm_conn_busy(&F.c)) lm_conn_fail(&F.c, 408, "timed out");
        if (rnd() & 1) answer_held();
        /* a slow socket (server.c: inflight over the high-water mark) or a fast one */
        if (F.c.out.len && (rnd() & 3) == 0) F.c.out_blocked = true;
        else unblock();
    }
    lm_conn_eof(&F.c);
    for (int i = 0; i < 100000 && (F.held || lm_conn_busy(&F.c) || F.c.out_blocked ||
                                   F.c.pending.len); i++) {
        answer_held();
        unblock();
        if (!F.held && !lm_conn_busy(&F.c) && !F.c.out_blocked) break;
    }
    drain();
    if (F.held || lm_conn_busy(&F.c)) die("a request never completed");
    if (F.completed < F.seq) die("fewer completions than dispatches");
    check_output(lm_buf_cstr(&F.all), F.all.len); /* NUL after the end: strtoul stops */
    lm_conn_free(&F.c);
    lm_buf_free(&F.all);
    return 0;
}
