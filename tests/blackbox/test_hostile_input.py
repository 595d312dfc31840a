"""Hostile and malformed input on raw sockets (issue 2, "Hostile input"): each request gets
its exact 4xx as an RFC 9457 problem with Connection: close, the server closes that
connection and reads nothing more from it, and it keeps serving everyone else."""

import socket
import time

import pytest

from harness import PeerClosed, assert_problem
from services_util import module_process

LIMITS = {
    "WORKERS": "2",
    "MAX_HEADER_BYTES": "2048",
    "MAX_URI_BYTES": "512",
    "MAX_HEADERS": "10",
    "MAX_BODY_BYTES": "1024",
}


@pytest.fixture(scope="module")
def _module_proc(request, tmp_path_factory):
    # One server for the whole module keeps the many cases fast; every case checks /health
    # afterwards and the teardown checks exit code and sanitizer output once at the end.
    yield from module_process(tmp_path_factory, "registry", {"ACCESS_LOG": "true", **LIMITS},
                              tag="hostile")


@pytest.fixture
def srv(_module_proc):
    assert _module_proc.alive(), _module_proc.stderr_tail()
    return _module_proc


H = b"Host: lotmesh.test\r\n"


def post(headers=b"", body=b"", path=b"/health"):
    return b"POST " + path + b" HTTP/1.1\r\n" + H + headers + b"\r\n" + body


def get(headers=b"", path=b"/health", version=b"1.1"):
    return b"GET " + path + b" HTTP/" + version + b"\r\n" + H + headers + b"\r\n"


CASES = [
    # --- request line ---
    ("garbage", b"GARBAGE\r\n\r\n", 400, "method"),
    ("binary-junk", bytes(range(256)) * 2, 400, None),
    ("lower-case-method", b"get /health HTTP/1.1\r\n" + H + b"\r\n", 400, "method"),
    ("no-version", b"GET /health\r\n\r\n", 400, "version"),
    ("trailing-junk-after-version", b"GET /health HTTP/1.1 x\r\n" + H + b"\r\n", 400,
     "version"),
    ("bad-version", b"GET /health HTTP/9.9\r\n" + H + b"\r\n", 400, "version"),
    ("http2-version", b"GET /health HTTP/2.0\r\n" + H + b"\r\n", 505, "HTTP/1"),
    ("nul-in-target", b"GET /he\x00alth HTTP/1.1\r\n" + H + b"\r\n", 400, None),
    ("space-in-target", b"GET /he alth HTTP/1.1\r\n" + H + b"\r\n", 400, None),
    ("relative-target", b"GET health HTTP/1.1\r\n" + H + b"\r\n", 400, None),
    ("authority-form", b"CONNECT lotmesh.test:443 HTTP/1.1\r\n" + H + b"\r\n", 400,
     "origin-form"),
    # --- header syntax ---
    ("ctl-in-field-name", get(b"X-A\x01b: v\r\n"), 400, "header"),
    ("space-in-field-name", get(b"X A: v\r\n"), 400, "header field name"),
    ("space-before-colon", get(b"X-A : v\r\n"), 400, "header field name"),
    ("te-space-before-colon",
     post(b"Transfer-Encoding : chunked\r\nContent-Length: 3\r\n", b"0\r\n\r\n"), 400,
     "header field"),
    ("nul-in-value", get(b"X-A: v\x00x\r\n"), 400, "header"),
    ("ctl-in-value", get(b"X-A: v\x01x\r\n"), 400, "header"),
    ("del-in-value", get(b"X-A: v\x7fx\r\n"), 400, "header"),
    ("bare-cr-in-value", get(b"X-A: v\rx\r\n"), 400, None),
    ("bare-lf-line-end", b"GET /health HTTP/1.1\r\nHost: a\nX-A: v\r\n\r\n", 400, None),
    ("header-without-colon", get(b"X-A v\r\n"), 400, None),
    ("obs-fold", get(b"X-A: b\r\n c\r\n"), 400, "obs-fold"),
    ("obs-fold-tab", get(b"X-A: b\r\n\tc\r\n"), 400, "obs-fold"),
    ("obs-fold-after-empty-value", get(b"X-A:\r\n c\r\n"), 400, "obs-fold"),
    ("obs-fold-on-transfer-encoding",
     post(b"Transfer-Encoding:\r\n chunked\r\nContent-Length: 5\r\n", b"0\r\n\r\n"), 400,
     None),
    ("first-header-line-starts-with-space",
     b"GET /health HTTP/1.1\r\n Host: a\r\n\r\n", 400, None),
    ("missing-host", b"GET /health HTTP/1.1\r\n\r\n", 400, "Host"),
    ("two-hosts", get(b"Host: other\r\n"), 400, "Host"),
    # --- limits ---
    ("header-over-limit", get(b"X-Big: " + b"a" * 3000 + b"\r\n"), 431, "header"),
    ("many-small-headers-over-byte-limit",
     get(b"".join(b"X-%d: %s\r\n" % (i, b"v" * 300) for i in range(8))), 431, None),
    ("too-many-headers", get(b"".join(b"X-%d: v\r\n" % i for i in range(10))), 431,
     "too many"),
    ("uri-too-long", get(path=b"/" + b"a" * 600), 414, "target"),
    ("body-over-limit", post(b"Content-Length: 1025\r\n"), 413, "body"),
    ("body-over-limit-huge", post(b"Content-Length: 1000000000000\r\n"), 413, "body"),
    ("chunked-body-over-limit",
     post(b"Transfer-Encoding: chunked\r\n", b"200\r\n" + b"x" * 512 + b"\r\n" +
          b"200\r\n" + b"x" * 512 + b"\r\n" + b"1\r\nx\r\n0\r\n\r\n"), 413, "body"),
    ("chunk-size-over-limit", post(b"Transfer-Encoding: chunked\r\n", b"100000\r\nabc"), 413,
     "body"),
    # --- smuggling: Content-Length and Transfer-Encoding ---
    ("cl-and-te", post(b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", b"0\r\n\r\n"),
     400, "Content-Length"),
    ("te-and-cl", post(b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n", b"0\r\n\r\n"),
     400, "Content-Length"),
    ("two-different-cl", post(b"Content-Length: 5\r\nContent-Length: 6\r\n", b"hello!"), 400,
     "Content-Length"),
    ("two-equal-cl", post(b"Content-Length: 5\r\nContent-Length: 5\r\n", b"hello"), 400,
     "Content-Length"),
    ("cl-list", post(b"Content-Length: 5, 5\r\n", b"hello"), 400, "Content-Length"),
    ("cl-negative", post(b"Content-Length: -1\r\n"), 400, "Content-Length"),
    ("cl-plus-sign", post(b"Content-Length: +5\r\n", b"hello"), 400, "Content-Length"),
    ("cl-non-numeric", post(b"Content-Length: abc\r\n"), 400, "Content-Length"),
    ("cl-exponent", post(b"Content-Length: 1e3\r\n"), 400, "Content-Length"),
    ("cl-hex", post(b"Content-Length: 0x10\r\n"), 400, "Content-Length"),
    ("cl-empty", post(b"Content-Length:\r\n"), 400, "Content-Length"),
    ("cl-overflow", post(b"Content-Length: 99999999999999999999999\r\n"), 400,
     "Content-Length"),
    ("te-not-chunked", post(b"Transfer-Encoding: gzip\r\n"), 400, "Transfer-Encoding"),
    ("te-chunked-not-last", post(b"Transfer-Encoding: chunked, gzip\r\n"), 400,
     "Transfer-Encoding"),
    ("te-chunked-twice",
     post(b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", b"0\r\n\r\n"), 400,
     "Transfer-Encoding"),
    ("te-in-http10",
     b"POST /health HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400,
     "Transfer-Encoding"),
    # --- chunk syntax ---
    ("chunk-size-not-hex", post(b"Transfer-Encoding: chunked\r\n", b"zz\r\nhello\r\n0\r\n\r\n"),
     400, "chunk"),
    ("chunk-size-negative",
     post(b"Transfer-Encoding: chunked\r\n", b"-5\r\nhello\r\n0\r\n\r\n"), 400, "chunk"),
    ("chunk-size-overflow",
     post(b"Transfer-Encoding: chunked\r\n", b"ffffffffffffffffffff\r\nhello\r\n0\r\n\r\n"),
     400, "chunk"),
    ("chunk-size-0x-prefix",
     post(b"Transfer-Encoding: chunked\r\n", b"0x5\r\nhello\r\n0\r\n\r\n"), 400, None),
    ("chunk-data-longer-than-size",
     post(b"Transfer-Encoding: chunked\r\n", b"3\r\nhello\r\n0\r\n\r\n"), 400, None),
    ("chunk-data-not-followed-by-crlf",
     post(b"Transfer-Encoding: chunked\r\n", b"5\r\nhelloXX0\r\n\r\n"), 400, "framing"),
    # --- bare CR / missing CRLF in the framing (llhttp's lenient build skips these bytes) ---
    ("bare-cr-ends-header-section", get()[:-2] + b"\rX", 400, "framing"),
    ("bare-cr-in-chunk-size-line",
     post(b"Transfer-Encoding: chunked\r\n", b"5\rXhello\r\n0\r\n\r\n"), 400, "framing"),
    ("bare-cr-after-last-chunk",
     post(b"Transfer-Encoding: chunked\r\n", b"5\r\nhello\r\n0\rX\r\n"), 400, "framing"),
    ("bare-cr-ends-trailers",
     post(b"Transfer-Encoding: chunked\r\n", b"5\r\nhello\r\n0\r\n\rX"), 400, "framing"),
    ("chunk-data-cr-only",
     post(b"Transfer-Encoding: chunked\r\n", b"5\r\nhello\r0\r\n\r\n"), 400, None),
    ("chunk-data-lf-only",
     post(b"Transfer-Encoding: chunked\r\n", b"5\r\nhello\n0\r\n\r\n"), 400, None),
    ("chunk-size-lf-only",
     post(b"Transfer-Encoding: chunked\r\n", b"5\nhello\r\n0\r\n\r\n"), 400, None),
    ("chunk-size-trailing-space",
     post(b"Transfer-Encoding: chunked\r\n", b"5 \r\nhello\r\n0\r\n\r\n"), 400, None),
    ("chunk-extension-ctl",
     post(b"Transfer-Encoding: chunked\r\n", b"5;a=\x01\r\nhello\r\n0\r\n\r\n"), 400, None),
    ("lf-only-line-endings", b"GET /health HTTP/1.1\nHost: a\n\n", 400, None),
    # --- expectations ---
    ("expect-unknown", post(b"Content-Length: 2\r\nExpect: tea\r\n", b"{}"), 417, "Expect"),
]


@pytest.mark.parametrize("name,data,status,detail", CASES, ids=[c[0] for c in CASES])
def test_hostile_request(srv, name, data, status, detail):
    with srv.connect(timeout=3) as c:
        # a valid request pipelined behind the bad one must never be answered
        c.send(data + get(b"X-Request-ID: smuggled\r\n"))
        r = c.read_response()
        assert_problem(r, status, detail)
        assert r.closes, r.header_list
        assert c.wait_closed(3), "the server must close after a protocol error"
        assert b"smuggled" not in c.buf
        assert b"HTTP/1.1" not in c.buf, "nothing may follow the error response"
    srv.assert_healthy()


@pytest.mark.parametrize("cut", [0, 1, 2])
def test_chunk_crlf_checked_across_reads(srv, cut):
    """The bytes after chunk data arrive in a later read than the data itself."""
    head = post(b"Transfer-Encoding: chunked\r\n", b"5\r\nhello")
    tail = b"XY0\r\n\r\n"
    with srv.connect(timeout=3) as c:
        c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        c.send(head + tail[:cut])
        time.sleep(0.1)
        c.send(tail[cut:])
        assert_problem(c.read_response(), 400, "framing")
        assert c.wait_closed(3)
    with srv.connect(timeout=3) as c:  # and the valid one, split the same way
        c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        good = b"\r\n0\r\n\r\n"
        c.send(head + good[:cut])
        time.sleep(0.1)
        c.send(good[cut:] + get())
        assert_problem(c.read_response(), 405)
        assert c.read_response().status == 200


def test_valid_limits_boundaries_pass(srv):
    # exactly at the limits: accepted
    r = srv.raw_exchange(get(b"".join(b"X-%d: v\r\n" % i for i in range(9))))  # 10 headers
    assert r.status == 200
    r = srv.raw_exchange(get(path=b"/" + b"a" * 511))  # 512-byte target
    assert_problem(r, 404)
    r = srv.raw_exchange(post(b"Content-Length: 1024\r\n", b"x" * 1024))
    assert_problem(r, 405)
    r = srv.raw_exchange(post(b"Transfer-Encoding: chunked\r\n",
                              b"400\r\n" + b"x" * 1024 + b"\r\n0\r\n\r\n"))
    assert_problem(r, 405)
    # obs-text in a value and a tab as OWS are legal
    assert srv.raw_exchange(get(b"X-A: caf\xe9\r\nX-B:\tv\t\r\n")).status == 200


def test_expect_continue_over_limit_answers_413_without_waiting(srv):
    with srv.connect(timeout=3) as c:
        c.send(post(b"Content-Length: 5000\r\nExpect: 100-continue\r\n"))
        t0 = time.monotonic()
        r = c.read_response()  # no body sent: must not wait for it
        assert time.monotonic() - t0 < 2
        assert_problem(r, 413)
        assert r.closes
        assert b"100 Continue" not in r.raw
        assert c.wait_closed(3)
    srv.assert_healthy()


def test_trailing_whitespace_not_part_of_value(srv):
    r = srv.raw_exchange(get(b"X-Request-ID: trimmed  \t\r\n"))
    assert r.status == 200
    assert r.header("x-request-id") == "trimmed"
    r = srv.raw_exchange(post(b"Content-Length: 1\r\nExpect: 100-continue \r\n", b"x"))
    assert r.status == 405  # not 417: the value is "100-continue"


def test_error_after_good_pipelined_request(srv):
    with srv.connect(timeout=3) as c:
        c.send(get(b"X-Request-ID: first\r\n") + b"BAD REQUEST\r\n\r\n" +
               get(b"X-Request-ID: third\r\n"))
        r1 = c.read_response()
        assert r1.status == 200 and r1.header("x-request-id") == "first"
        assert_problem(c.read_response(), 400)
        assert c.wait_closed(3)
        assert b"third" not in c.buf
    srv.assert_healthy()


def test_body_looking_like_request_is_not_parsed(srv):
    inner = get(b"X-Request-ID: inner\r\n")
    with srv.connect(timeout=3) as c:
        c.send(post(b"Content-Length: %d\r\n" % len(inner), inner) +
               get(b"X-Request-ID: outer\r\n"))
        assert_problem(c.read_response(), 405)
        r = c.read_response()
        assert r.header("x-request-id") == "outer"


def test_upgrade_request_answered_then_closed(srv):
    with srv.connect(timeout=3) as c:
        c.send(get(b"Connection: Upgrade\r\nUpgrade: websocket\r\n") +
               get(b"X-Request-ID: after-upgrade\r\n"))
        r = c.read_response()
        assert r.status == 200
        assert r.closes
        assert c.wait_closed(3)
        assert b"after-upgrade" not in c.buf
    srv.assert_healthy()


def test_bad_percent_encoding_in_query(srv):
    r = srv.raw_exchange(get(path=b"/health?a=%zz"))
    assert_problem(r, 400, "percent-encoding")
    r = srv.raw_exchange(get(path=b"/health?a=%00"))
    assert_problem(r, 400, "percent-encoding")


def test_half_request_then_client_closes(srv):
    for partial in (b"GET /hea", get()[:-2], post(b"Content-Length: 10\r\n", b"abc"),
                    post(b"Transfer-Encoding: chunked\r\n", b"5\r\nhe")):
        with srv.connect(timeout=3) as c:
            c.send(partial)
            c.shutdown_write()
            # nobody can read an answer to half a request reliably: just a close
            assert c.wait_closed(3)
    srv.assert_healthy()


def test_reset_mid_request(srv):
    for partial in (get()[:20], post(b"Content-Length: 100\r\n", b"x" * 50)):
        s = socket.create_connection(("127.0.0.1", srv.port), timeout=3)
        s.sendall(partial)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        s.close()  # RST
    srv.assert_healthy()


def test_many_bad_clients_then_good_ones(srv):
    for i in range(200):
        data = CASES[i % len(CASES)][1]
        with srv.connect(timeout=3) as c:
            c.send(data)
            try:
                c.read_response()
            except PeerClosed:
                pass
    for _ in range(20):
        srv.assert_healthy()
