/* test_http_conn.c — the HTTP engine without sockets: requests in, bytes out. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>

#include "http_conn.h"

#include <uv.h>

/* Handler behaviour chosen per test. */
static enum { SYNC, ASYNC, CHUNKED } mode;
static lm_req *held; /* the request an ASYNC handler has not answered yet */
static int dispatched, completed, last_status;
static char seen[16][64];

static void on_dispatch(lm_conn *c, lm_req *req)
{
    (void)c;
    snprintf(seen[dispatched % 16], sizeof seen[0], "%s %s|%.*s", req->method, req->target,
             (int)req->body_len, req->body);
    dispatched++;
    if (mode == SYNC) {
        lm_resp_send(req, 200, "text/plain", req->target, req->target_len);
    } else if (mode == CHUNKED) {
        lm_resp_begin(req, 200, "text/plain", -1);
        lm_resp_write(req, "ab", 2);
        lm_resp_write(req, "cde", 3);
        lm_resp_end(req);
    } else {
        held = req;
    }
}

static int outputs;
static void on_output(lm_conn *c)
{
    (void)c;
    outputs++;
}

static void on_completed(lm_conn *c, lm_req *req, int status, uint64_t bytes)
{
    (void)c;
    (void)req;
    (void)bytes;
    completed++;
    last_status = status;
}

static bool stream_mode; /* the test's "route" streams bodies */
static bool on_stream(lm_conn *c, lm_req *req)
{
    (void)c;
    (void)req;
    return stream_mode;
}

static const lm_conn_ops ops = {on_dispatch, on_output, on_completed, on_stream};
static lm_conn_limits limits;

static void setup_conn(lm_conn *c)
{
    lm_conn_limits_default(&limits);
    limits.max_body_bytes = 64;
    limits.max_headers = 8;
    limits.max_head_bytes = 1024;
    limits.max_uri_bytes = 200;
    lm_conn_init(c, &limits, &ops, NULL);
    dispatched = completed = last_status = outputs = 0;
    held = NULL;
    mode = SYNC;
    stream_mode = false;
}

static void feed(lm_conn *c, const char *s)
{
    lm_conn_feed(c, s, strlen(s));
}

static int count(const char *hay, const char *needle)
{
    int n = 0;
    for (const char *p = hay; (p = strstr(p, needle)); p++)
        n++;
    return n;
}

/* Worker threads accept their first connections at the same time: the parser settings are
 * set up once for all of them (a data race under ThreadSanitizer before uv_once). */
static void init_on_thread(void *arg)
{
    lm_conn *c = arg;
    lm_conn_init(c, &limits, &ops, NULL);
}

static void test_first_connections_on_two_threads(void **state)
{
    (void)state;
    lm_conn_limits_default(&limits);
    static lm_conn a, b;
    uv_thread_t ta, tb;
    assert_int_equal(uv_thread_create(&ta, init_on_thread, &a), 0);
    assert_int_equal(uv_thread_create(&tb, init_on_thread, &b), 0);
    uv_thread_join(&ta);
    uv_thread_join(&tb);
    assert_non_null(a.parser.settings);
    assert_ptr_equal(a.parser.settings, b.parser.settings);
    lm_conn_free(&a);
    lm_conn_free(&b);
}

static void test_simple_and_keepalive(void **state)
{
    (void)state;
    lm_conn c;
    setup_conn(&c);
    feed(&c, "GET /a?x=1 HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_int_equal(dispatched, 1);
    const char *out = lm_buf_cstr(&c.out);
    assert_non_null(strstr(out, "HTTP/1.1 200 OK\r\n"));
    assert_non_null(strstr(out, "Content-Length: 6\r\n"));
    assert_null(strstr(out, "Connection: close"));
    assert_int_equal(c.state, LM_CONN_IDLE);
    lm_conn_free(&c);
}

static void test_pipelined_sync_in_order(void **state)
{
    (void)state;
    lm_conn c;
    setup_conn(&c);
    /* three requests, the second split across feeds */
    feed(&c, "GET /1 HTTP/1.1\r\nHost: h\r\n\r\nPOST /2 HTTP/1.1\r\nHost: h\r\nContent-Le");
    feed(&c, "ngth: 3\r\n\r\nabcGET /3 HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_int_equal(dispatched, 3);
    assert_string_equal(seen[1], "POST /2|abc");
    const char *out = lm_buf_cstr(&c.out);
    const char *a = strstr(out, "\r\n\r\n/1"), *b = strstr(out, "\r\n\r\n/2"),
               *d = strstr(out, "\r\n\r\n/3");
    assert_true(a && b && d && a < b && b < d);
    lm_conn_free(&c);
}

static void test_pipelined_async_waits(void **state)
{
    (void)state;
    lm_conn c;
    setup_conn(&c);
    mode = ASYNC;
    feed(&c, "GET /1 HTTP/1.1\r\nHost: h\r\n\r\nGET /2 HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_int_equal(dispatched, 1); /* the second waits for the first's response */
    assert_true(lm_conn_busy(&c));
    assert_true(c.pending.len > 0);
    lm_req *first = held;
    mode = SYNC;
    lm_resp_send(first, 201, NULL, NULL, 0);
    assert_int_equal(outputs, 1); /* finished outside dispatch: transport told */
    lm_conn_resume(&c);
    assert_int_equal(dispatched, 2);
    const char *out = lm_buf_cstr(&c.out);
    assert_true(strstr(out, "201 Created") < strstr(out, "200 OK"));
    lm_conn_free(&c);
}

static void test_chunked_response_and_head(void **state)
{
    (void)state;
    lm_conn c;
    setup_conn(&c);
    mode = CHUNKED;
    feed(&c, "GET /c HTTP/1.1\r\nHost: h\r\n\r\n");
    const char *out = lm_buf_cstr(&c.out);
    assert_non_null(
        strstr(out, "Transfer-Encoding: chunked\r\n\r\n2\r\nab\r\n3\r\ncde\r\n0\r\n\r\n"));
    lm_buf_reset(&c.out);
    mode = SYNC;
    feed(&c, "HEAD /abcdef HTTP/1.1\r\nHost: h\r\n\r\n");
    out = lm_buf_cstr(&c.out);
    assert_non_null(strstr(out, "Content-Length: 7\r\n"));
    assert_true(strlen(out) >= 4 && strcmp(out + strlen(out) - 4, "\r\n\r\n") == 0);
    lm_conn_free(&c);
}

static void test_http10_and_close(void **state)
{
    (void)state;
    lm_conn c;
    setup_conn(&c);
    feed(&c, "GET /x HTTP/1.0\r\n\r\n");
    assert_non_null(strstr(lm_buf_cstr(&c.out), "Connection: close"));
    assert_int_equal(c.state, LM_CONN_CLOSING);
    lm_conn_free(&c);
    setup_conn(&c);
    feed(&c, "GET /x HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    assert_non_null(strstr(lm_buf_cstr(&c.out), "Connection: keep-alive"));
    assert_int_equal(c.state, LM_CONN_IDLE);
    lm_conn_free(&c);
    setup_conn(&c);
    feed(&c, "GET /x HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\nGET /y HTTP/1.1\r\n\r\n");
    assert_int_equal(dispatched, 1); /* nothing after Connection: close */
    assert_int_equal(c.state, LM_CONN_CLOSING);
    lm_conn_free(&c);
}

static void expect_error(const char *req, int status)
{
    lm_conn c;
    setup_conn(&c);
    feed(&c, req);
    char want[32];
    snprintf(want, sizeof want, "HTTP/1.1 %d ", status);
    const char *out = lm_buf_cstr(&c.out);
    if (!strstr(out, want)) fail_msg("request %s\nwanted %d, got: %s", req, status, out);
    assert_non_null(strstr(out, "application/problem+json"));
    assert_non_null(strstr(out, "Connection: close"));
    assert_int_equal(c.state, LM_CONN_CLOSING);
    assert_int_equal(dispatched, 0);
    if (count(out, "\r\nServer: lotmesh") != 1)
        fail_msg("request %s\ngot two responses: %s", req, out);
    lm_conn_free(&c);
}

static void test_smuggling_refused(void **state)
{
    (void)state;
    expect_error("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nTransfer-Encoding: "
                 "chunked\r\n\r\n0\r\n\r\n",
                 400);
    expect_error("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
                 400);
    expect_error("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n\r\n", 400);
    expect_error("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1x\r\n\r\n", 400);
    expect_error("GET / HTTP/1.1\r\nHost: h\r\nX-A: a\r\n b\r\n\r\n", 400); /* obs-fold */
    expect_error("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400);
    expect_error("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400);
    expect_error("GET / HTTP/1.1\r\n\r\n", 400);                       /* no Host */
    expect_error("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400); /* two Hosts */
    expect_error("GET / HTTP/1.1\r\nHo st: a\r\n\r\n", 400);
    expect_error("G\x01T / HTTP/1.1\r\nHost: a\r\n\r\n", 400);
    expect_error("GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505);
}

static void test_limits(void **state)
{
    (void)state;
    expect_error("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 65\r\n\r\n", 413);
    char big[2048];
    snprintf(big, sizeof big, "GET /%0300d HTTP/1.1\r\nHost: h\r\n\r\n", 0);
    expect_error(big, 414);
    expect_error("GET / HTTP/1.1\r\nHost: h\r\nA: 1\r\nB: 1\r\nC: 1\r\nD: 1\r\nE: 1\r\nF: 1\r\n"
                 "G: 1\r\nH: 1\r\n\r\n",
                 431);
    char hdr[1200];
    memset(hdr, 'v', sizeof hdr);
    hdr[sizeof hdr - 1] = '\0';
    snprintf(big, sizeof big, "GET / HTTP/1.1\r\nHost: h\r\nX: %s\r\n\r\n", hdr);
    expect_error(big, 431);
    /* a chunked body over the limit */
    char chunked[400];
    snprintf(
        chunked, sizeof chunked,
        "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n41\r\n%065d\r\n0\r\n\r\n",
        0);
    expect_error(chunked, 413);
    expect_error(
        "POST / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 1000\r\n\r\n", 413);
    expect_error("POST / HTTP/1.1\r\nHost: h\r\nExpect: teapot\r\nContent-Length: 1\r\n\r\nx", 417);
}

static void test_expect_continue(void **state)
{
    (void)state;
    lm_conn c;
    setup_conn(&c);
    feed(&c, "POST /e HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n");
    assert_string_equal(lm_buf_cstr(&c.out), "HTTP/1.1 100 Continue\r\n\r\n");
    feed(&c, "hi");
    assert_int_equal(dispatched, 1);
    assert_string_equal(seen[0], "POST /e|hi");
    lm_conn_free(&c);
}

static void test_chunked_request_body(void **state)
{
    (void)state;
    lm_conn c;
    setup_conn(&c);
    feed(&c, "POST /b HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n"
             "2;ext=1\r\nde\r\n0\r\nTrailer: x\r\n\r\n");
    assert_int_equal(dispatched, 1);
    assert_string_equal(seen[0], "POST /b|abcde");
    lm_conn_free(&c);
}

static void test_abandon_while_busy(void **state)
{
    (void)state;
    lm_conn c;
    setup_conn(&c);
    mode = ASYNC;
    feed(&c, "GET /slow HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_true(lm_conn_busy(&c));
    lm_conn_abandon(&c);
    assert_true(lm_req_abandoned(held));
    lm_resp_send(held, 200, "text/plain", "late", 4);
    assert_false(lm_conn_busy(&c));
    assert_null(strstr(lm_buf_cstr(&c.out), "late"));
    assert_int_equal(completed, 1);
    lm_conn_free(&c);
}

static void test_response_header_injection_refused(void **state)
{
    (void)state;
    lm_conn c;
    setup_conn(&c);
    mode = ASYNC;
    feed(&c, "GET / HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_false(lm_resp_header(held, "X-Evil", "a\r\nSet-Cookie: x"));
    assert_false(lm_resp_header(held, "Bad Name", "v"));
    assert_true(lm_resp_header(held, "ETag", "\"3\""));
    lm_resp_send(held, 204, NULL, NULL, 0);
    const char *out = lm_buf_cstr(&c.out);
    assert_non_null(strstr(out, "ETag: \"3\"\r\n"));
    assert_null(strstr(out, "Set-Cookie"));
    assert_null(strstr(out, "Content-Length")); /* 204 has none */
    lm_conn_free(&c);
}

/* ---- streamed request bodies --------------------------------------------------------- */

static char streamed[256];
static size_t streamed_len;
static int stream_end_status = -1;
static bool respond_on_end, pause_on_data;

static void on_data(lm_req *req, const char *d, size_t n, void *ud)
{
    (void)ud;
    memcpy(streamed + streamed_len, d, n);
    streamed_len += n;
    if (pause_on_data) lm_req_pause_body(req);
}

static void on_end(lm_req *req, int status, void *ud)
{
    (void)ud;
    stream_end_status = status;
    if (respond_on_end)
        lm_resp_send(req, status ? status : 200, "text/plain", streamed, streamed_len);
}

static void setup_stream(lm_conn *c)
{
    setup_conn(c);
    stream_mode = true;
    mode = ASYNC;
    streamed_len = 0;
    stream_end_status = -1;
    respond_on_end = true;
    pause_on_data = false;
}

static void start_reading(void)
{
    assert_non_null(held);
    assert_true(lm_req_streaming(held));
    lm_req_read_body(held, on_data, on_end, NULL);
}

static void test_stream_dispatch_at_headers(void **state)
{
    (void)state;
    lm_conn c;
    setup_stream(&c);
    feed(&c, "POST /s HTTP/1.1\r\nHost: h\r\nContent-Length: 6\r\n\r\n");
    assert_int_equal(dispatched, 1); /* before any body byte */
    start_reading();
    feed(&c, "abc");
    assert_int_equal(streamed_len, 3);
    assert_int_equal(stream_end_status, -1);
    feed(&c, "defGET /next HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_int_equal(stream_end_status, 0);
    assert_memory_equal(streamed, "abcdef", 6);
    /* the pipelined request after the streamed one is served (ASYNC: held again) */
    assert_int_equal(dispatched, 2);
    assert_non_null(strstr(lm_buf_cstr(&c.out), "HTTP/1.1 200 OK"));
    lm_resp_send(held, 204, NULL, NULL, 0);
    assert_int_equal(c.state, LM_CONN_IDLE);
    lm_conn_free(&c);
}

static void test_stream_answer_before_body_end_closes(void **state)
{
    (void)state;
    lm_conn c;
    setup_stream(&c);
    feed(&c, "POST /s HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n");
    start_reading();
    lm_resp_send(held, 401, "text/plain", "no", 2); /* e.g. authentication failed */
    assert_non_null(strstr(lm_buf_cstr(&c.out), "Connection: close"));
    assert_int_equal(c.state, LM_CONN_CLOSING);
    feed(&c, "3\r\ndef\r\n0\r\n\r\n"); /* discarded, no callback */
    assert_int_equal(stream_end_status, -1);
    lm_conn_free(&c);
}

static void test_stream_pause_and_resume(void **state)
{
    (void)state;
    lm_conn c;
    setup_stream(&c);
    feed(&c, "POST /s HTTP/1.1\r\nHost: h\r\nContent-Length: 6\r\n\r\n");
    start_reading();
    pause_on_data = true;
    feed(&c, "ab");
    assert_int_equal(streamed_len, 2);
    feed(&c, "cdef"); /* paused: kept for later */
    assert_int_equal(streamed_len, 2);
    assert_true(c.pending.len == 4);
    pause_on_data = false;
    lm_req_resume_body(held);
    lm_conn_resume(&c); /* what the transport does on output() */
    assert_int_equal(streamed_len, 6);
    assert_int_equal(stream_end_status, 0);
    lm_conn_free(&c);
}

static void test_stream_failures_reach_the_handler(void **state)
{
    (void)state;
    lm_conn c;
    setup_stream(&c); /* over the limit (64) in a chunked body */
    feed(&c, "POST /s HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n");
    start_reading();
    char big[200];
    snprintf(big, sizeof big, "50\r\n%080d\r\n", 0);
    feed(&c, big);
    assert_int_equal(stream_end_status, 413);
    assert_non_null(strstr(lm_buf_cstr(&c.out), "HTTP/1.1 413"));
    assert_int_equal(c.state, LM_CONN_CLOSING);
    lm_conn_free(&c);

    setup_stream(&c); /* the client goes away mid-body */
    respond_on_end = false;
    feed(&c, "POST /s HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\nabc");
    start_reading();
    lm_conn_eof(&c);
    assert_int_equal(stream_end_status, 499);
    lm_resp_send(held, 400, NULL, NULL, 0);
    assert_int_equal(c.state, LM_CONN_CLOSING);
    lm_conn_free(&c);

    setup_stream(&c); /* malformed chunk size mid-body */
    feed(&c, "POST /s HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n");
    start_reading();
    feed(&c, "zz\r\n");
    assert_int_equal(stream_end_status, 400);
    lm_conn_free(&c);

    setup_stream(&c); /* a body-less request is not streamed */
    mode = SYNC;
    feed(&c, "POST /s HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n");
    assert_int_equal(dispatched, 1);
    assert_int_equal(stream_end_status, -1);
    lm_conn_free(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_first_connections_on_two_threads), /* first: nothing before */
        cmocka_unit_test(test_simple_and_keepalive),
        cmocka_unit_test(test_pipelined_sync_in_order),
        cmocka_unit_test(test_pipelined_async_waits),
        cmocka_unit_test(test_chunked_response_and_head),
        cmocka_unit_test(test_http10_and_close),
        cmocka_unit_test(test_smuggling_refused),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_expect_continue),
        cmocka_unit_test(test_chunked_request_body),
        cmocka_unit_test(test_abandon_while_busy),
        cmocka_unit_test(test_response_header_injection_refused),
        cmocka_unit_test(test_stream_dispatch_at_headers),
        cmocka_unit_test(test_stream_answer_before_body_end_closes),
        cmocka_unit_test(test_stream_pause_and_resume),
        cmocka_unit_test(test_stream_failures_reach_the_handler),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
