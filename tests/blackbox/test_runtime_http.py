"""The shared runtime's normal HTTP behaviour, seen by real clients: /health, /ready, /metrics,
404/405 problems, X-Request-ID, traceparent, HEAD, keep-alive, HTTP/1.0, Expect: 100-continue,
chunked request bodies, pipelining.

Every lotmesh process serves this runtime; the tests run against lotmesh-registry (the first
process, the lightest to start) and only use what the runtime itself routes (/health,
/ready, /metrics, and paths no service uses). Multi-worker behaviour uses lotmesh-articles,
which runs one worker per WORKERS (the registry keeps its catalog on one loop)."""

import re
import socket
import threading
import time

import pytest
import requests

from harness import RawConn, assert_problem

HEX32 = re.compile(r"^[0-9a-f]{32}$")
TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
TRACEPARENT = f"00-{TRACE_ID}-b7ad6b7169203331-01"


@pytest.fixture
def reg(start_process):
    return start_process("registry", {"WORKERS": "2"})


def req(method, path, headers=(), body=b"", version="1.1", host=True):
    lines = [f"{method} {path} HTTP/{version}"]
    if host:
        lines.append("Host: lotmesh.test")
    lines += [f"{k}: {v}" for k, v in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


# ---- the runtime's endpoints ---------------------------------------------------------------

def test_health(reg):
    r = reg.get("/health")
    assert r.status_code == 200
    assert r.headers["Content-Type"] == "application/json"
    assert r.json() == {"status": "ok"}
    assert r.headers["Server"] == "lotmesh"
    assert r.headers["Date"].endswith(" GMT")
    assert HEX32.match(r.headers["X-Request-ID"])


def test_ready(reg):
    r = reg.get("/ready")
    assert r.status_code == 200
    assert r.headers["Content-Type"] == "application/json"
    body = r.json()
    assert body["status"] == "ready"
    assert isinstance(body["checks"], dict)
    assert all(v == "ok" for v in body["checks"].values()), body


def test_metrics_prometheus_text(reg):
    m0 = reg.metrics()  # the harness's start-up probe already hit /health
    # new connection per request, so both workers' shards take part in the sums
    for _ in range(3):
        assert reg.get("/health").status_code == 200
    assert reg.request("POST", "/health").status_code == 405
    assert reg.get("/ready").status_code == 200
    assert reg.get("/nope").status_code == 404
    r = reg.get("/metrics")
    assert r.status_code == 200
    assert r.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    text = r.text
    for name, kind in (("lotmesh_http_requests_total", "counter"),
                       ("lotmesh_http_request_duration_seconds", "histogram"),
                       ("lotmesh_http_requests_in_flight", "gauge"),
                       ("lotmesh_http_connections", "gauge"),
                       ("process_resident_memory_bytes", "gauge"),
                       ("process_open_fds", "gauge")):
        assert f"# TYPE {name} {kind}\n" in text, name
        assert f"# HELP {name} " in text, name
    m = reg.metrics()  # (a second scrape: also parses every line strictly)

    def val(name, **labels):
        return m.get((name, frozenset(labels.items())))

    def delta(name, **labels):
        key = (name, frozenset(labels.items()))
        return m.get(key, 0) - m0.get(key, 0)

    assert delta("lotmesh_http_requests_total", route="/health", method="GET", status="2xx") == 3
    # a 405 counts under the template whose path matched; only a 404 is "unmatched"
    assert delta("lotmesh_http_requests_total", route="/health", method="POST",
                 status="4xx") == 1
    assert delta("lotmesh_http_requests_total", route="unmatched", method="POST",
                 status="4xx") == 0
    assert delta("lotmesh_http_requests_total", route="/ready", method="GET", status="2xx") == 1
    assert delta("lotmesh_http_requests_total", route="unmatched", method="GET",
                 status="4xx") == 1
    # two scrapes before this one's render: m0's and the text one
    assert delta("lotmesh_http_requests_total", route="/metrics", method="GET", status="2xx") == 2

    # histogram of /health: cumulative buckets, +Inf == count, sum > 0
    buckets = sorted(
        (float(dict(k[1])["le"]), v) for k, v in m.items()
        if k[0] == "lotmesh_http_request_duration_seconds_bucket"
        and dict(k[1]).get("route") == "/health")
    assert buckets and buckets[-1][0] == float("inf")
    counts = [v for _, v in buckets]
    assert counts == sorted(counts), "buckets must be cumulative"
    count = val("lotmesh_http_request_duration_seconds_count", route="/health")
    assert count == buckets[-1][1]
    # the 3 GETs and the POST (405) on /health since m0
    assert delta("lotmesh_http_request_duration_seconds_count", route="/health") == 4
    assert val("lotmesh_http_request_duration_seconds_sum", route="/health") > 0

    assert val("lotmesh_http_requests_in_flight") == 1  # this scrape
    assert val("lotmesh_http_connections") >= 1
    assert val("process_resident_memory_bytes") > 1e6
    assert val("process_open_fds") > 3


# ---- errors: RFC 9457 problems ----------------------------------------------------------------

def test_404_problem(reg):
    r = reg.get("/no/such/thing?x=1")
    body = assert_problem(r, 404, "/no/such/thing")
    assert body["instance"] == "/no/such/thing"
    assert HEX32.match(body["trace_id"])
    assert body["title"] == "Not Found"


def test_405_problem_with_allow(reg):
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        r = reg.request(method, "/health", data=b"{}")
        body = assert_problem(r, 405)
        assert r.headers["Allow"] == "GET, HEAD"
        assert method in body["detail"]
        assert body["instance"] == "/health"


def test_head_has_length_but_no_body(reg):
    with reg.connect() as c:
        # pipelined: if HEAD carried a body, the GET's status line would not come next
        c.send(req("HEAD", "/health") + req("GET", "/health") + req("HEAD", "/nope"))
        h = c.read_response(head=True)
        assert h.status == 200
        assert h.header("content-length") == "15"
        assert h.header("content-type") == "application/json"
        g = c.read_response()
        assert g.status == 200 and g.body == b'{"status":"ok"}'
        n = c.read_response(head=True)
        assert n.status == 404
        assert int(n.header("content-length")) > 0
        assert n.header("content-type") == "application/problem+json"
        c.send(req("GET", "/health", [("Connection", "close")]))
        last = c.read_response()
        assert last.status == 200 and last.closes
        assert c.wait_closed(2)
        assert c.buf == b"", "HEAD responses must not carry a body"


def test_requests_head(reg):
    r = reg.request("HEAD", "/health")
    assert r.status_code == 200
    assert r.headers["Content-Length"] == "15"
    assert r.content == b""


# ---- X-Request-ID and traceparent -------------------------------------------------------------

@pytest.mark.parametrize("rid", ["abc-123", "A.b_c:d@e/f+g=h-", "x" * 128, "7"])
def test_request_id_echoed_when_sane(reg, rid):
    r = reg.get("/health", headers={"X-Request-ID": rid})
    assert r.status_code == 200
    assert r.headers["X-Request-ID"] == rid
    r = reg.get("/nope", headers={"X-Request-ID": rid})
    assert r.status_code == 404
    assert r.headers["X-Request-ID"] == rid


@pytest.mark.parametrize("rid", ["x" * 129, "has space", "semi;colon", "quote\"d", "<script>",
                                 "tab\there", "ümlaut"])
def test_request_id_generated_when_not_sane(reg, rid):
    with reg.connect() as c:
        c.send(req("GET", "/health", [("X-Request-ID", rid)]).replace(
            rid.encode("latin-1"), rid.encode("utf-8")))
        r = c.read_response()
    assert r.status == 200
    assert HEX32.match(r.header("x-request-id")), r.header("x-request-id")


def test_request_id_generated_when_absent_and_unique(reg):
    ids = {reg.get("/health").headers["X-Request-ID"] for _ in range(10)}
    assert len(ids) == 10
    assert all(HEX32.match(i) for i in ids)


def test_traceparent_trace_id_in_problem(reg):
    r = reg.get("/nope", headers={"traceparent": TRACEPARENT})
    body = assert_problem(r, 404)
    assert body["trace_id"] == TRACE_ID
    r = reg.request("POST", "/health", headers={"traceparent": TRACEPARENT})
    assert assert_problem(r, 405)["trace_id"] == TRACE_ID


@pytest.mark.parametrize("tp", [
    "00-00000000000000000000000000000000-b7ad6b7169203331-01",  # zero trace id
    f"00-{TRACE_ID}-0000000000000000-01",                       # zero parent id
    f"ff-{TRACE_ID}-b7ad6b7169203331-01",                       # version ff
    f"00-{TRACE_ID.upper()}-b7ad6b7169203331-01",               # upper-case hex
    f"00-{TRACE_ID}-b7ad6b7169203331",                          # truncated
    "garbage",
])
def test_invalid_traceparent_starts_new_trace(reg, tp):
    r = reg.get("/nope", headers={"traceparent": tp})
    body = assert_problem(r, 404)
    assert HEX32.match(body["trace_id"])
    assert body["trace_id"] not in (TRACE_ID, "0" * 32)


def test_fresh_trace_per_request(reg):
    a = reg.get("/nope").json()["trace_id"]
    b = reg.get("/nope").json()["trace_id"]
    assert a != b


# ---- connections --------------------------------------------------------------------------

def test_keep_alive_reuses_connection(reg):
    with reg.connect() as c:
        for i in range(20):
            c.send(req("GET", "/health", [("X-Request-ID", f"k{i}")]))
            r = c.read_response()
            assert r.status == 200
            assert r.header("x-request-id") == f"k{i}"
            assert r.header("connection") is None  # HTTP/1.1 default: persistent
        assert c.is_open_now()


def test_requests_session_keep_alive(reg):
    with requests.Session() as s:
        for _ in range(10):
            r = s.get(reg.url("/health"), timeout=5)
            assert r.status_code == 200
            assert "close" not in r.headers.get("Connection", "")
        pool = s.get_adapter(reg.base_url).poolmanager.connection_from_url(reg.base_url)
        assert pool.num_connections == 1, "ten requests should share one connection"


def test_connection_close_honoured(reg):
    with reg.connect() as c:
        c.send(req("GET", "/health", [("Connection", "close")]))
        r = c.read_response()
        assert r.status == 200 and r.closes
        assert c.wait_closed(2)


def test_http10_closes_by_default(reg):
    with reg.connect() as c:
        c.send(req("GET", "/health", version="1.0", host=False))
        r = c.read_response()
        assert r.status == 200
        assert r.version == "HTTP/1.1"
        assert r.closes
        assert r.body == b'{"status":"ok"}'
        assert c.wait_closed(2)


def test_http10_keep_alive(reg):
    with reg.connect() as c:
        for _ in range(3):
            c.send(req("GET", "/health", [("Connection", "keep-alive")], version="1.0",
                       host=False))
            r = c.read_response()
            assert r.status == 200
            assert r.header("connection").lower() == "keep-alive"
        assert c.is_open_now()
        c.send(req("GET", "/health", version="1.0", host=False))
        assert c.read_response().closes
        assert c.wait_closed(2)


def test_absolute_form_target(reg):
    r = reg.raw_exchange(req("GET", "http://lotmesh.test/health"))
    assert r.status == 200 and r.body == b'{"status":"ok"}'


def test_client_half_close_still_answered(reg):
    with reg.connect() as c:
        # two pipelined requests, then FIN: both are answered, then the server closes
        c.send(req("GET", "/health", [("X-Request-ID", "h1")]) +
               req("GET", "/nope", [("X-Request-ID", "h2")]))
        c.shutdown_write()
        assert c.read_response().header("x-request-id") == "h1"
        assert c.read_response().header("x-request-id") == "h2"
        assert c.wait_closed(2)


# ---- request bodies -----------------------------------------------------------------------

def test_expect_100_continue(reg):
    with reg.connect(timeout=3) as c:
        c.send(req("POST", "/health", [("Content-Length", "5"), ("Expect", "100-continue")]))
        interim = c.read_response()
        assert interim.status == 100
        assert interim.raw == b"HTTP/1.1 100 Continue\r\n\r\n"
        c.send(b"hello")
        final = c.read_response()
        assert_problem(final, 405)
        assert not final.closes  # body was read: the connection stays usable
        c.send(req("GET", "/health"))
        assert c.read_response().status == 200


def test_expect_100_continue_http10_gets_no_interim(reg):
    with reg.connect(timeout=3) as c:
        c.send(req("POST", "/health", [("Content-Length", "5"), ("Expect", "100-continue")],
                   version="1.0", host=False) + b"hello")
        r = c.read_response()
        assert r.status == 405


def test_expect_100_continue_without_body_no_interim(reg):
    with reg.connect(timeout=3) as c:
        c.send(req("GET", "/health", [("Expect", "100-continue")]))
        r = c.read_response()
        assert r.status == 200


def test_expect_unknown_is_417(reg):
    r = reg.raw_exchange(req("POST", "/health", [("Content-Length", "2"), ("Expect", "tea")],
                             b"{}"))
    assert_problem(r, 417)
    assert r.closes


def test_requests_expect_continue(reg):
    r = reg.request("PUT", "/health", data=b"x" * 100, headers={"Expect": "100-continue"})
    assert r.status_code == 405


def test_content_length_body_then_next_request(reg):
    with reg.connect() as c:
        c.send(req("POST", "/health", [("Content-Length", "11")], b"GET /nope X") +
               req("GET", "/health"))
        assert c.read_response().status == 405
        assert c.read_response().status == 200


def test_chunked_request_body(reg):
    body = b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n"
    with reg.connect() as c:
        c.send(req("POST", "/health", [("Transfer-Encoding", "chunked")], body) +
               req("GET", "/health", [("X-Request-ID", "after-chunked")]))
        assert_problem(c.read_response(), 405)
        r = c.read_response()
        assert r.status == 200 and r.header("x-request-id") == "after-chunked"


def test_chunked_request_body_split_in_tiny_writes(reg):
    data = req("POST", "/health", [("Transfer-Encoding", "chunked")],
               b"3\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\n\r\n") + req("GET", "/health")
    with reg.connect() as c:
        c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i in range(len(data)):
            c.send(data[i:i + 1])
        assert c.read_response().status == 405
        assert c.read_response().status == 200


def test_chunked_body_with_trailers(reg):
    # trailer fields after the last chunk, one large enough to make the engine's header
    # arena grow if trailers were stored in it (they must not move the request's headers)
    body = b"5\r\nhello\r\n0\r\nX-Checksum: abc\r\nX-Big: " + b"t" * 3000 + b"\r\n\r\n"
    with reg.connect() as c:
        c.send(req("POST", "/health", [("Transfer-Encoding", "chunked"),
                                       ("X-Request-ID", "trailers")], body))
        r = c.read_response()
        assert_problem(r, 405)
        assert r.header("x-request-id") == "trailers"
        c.send(req("GET", "/health"))
        assert c.read_response().status == 200


def test_requests_chunked_upload(reg):
    def gen():
        yield b"part one "
        yield b"part two"
    r = reg.request("POST", "/health", data=gen())
    assert r.status_code == 405


# ---- pipelining -----------------------------------------------------------------------------

def test_pipelined_requests_in_order(reg):
    n = 50
    paths = ["/health", "/nope", "/ready", "/health"]
    data = b"".join(req("HEAD" if i % 7 == 3 else "GET", paths[i % 4],
                        [("X-Request-ID", f"p{i}")]) for i in range(n))
    with reg.connect() as c:
        c.send(data)
        for i in range(n):
            r = c.read_response(head=(i % 7 == 3))
            assert r.header("x-request-id") == f"p{i}"
            assert r.status == {0: 200, 1: 404, 2: 200, 3: 200}[i % 4]


def test_concurrent_clients(reg):
    errors = []

    def worker(k):
        try:
            with requests.Session() as s:
                for i in range(20):
                    r = s.get(reg.url("/health"), headers={"X-Request-ID": f"c{k}-{i}"},
                              timeout=5)
                    assert r.status_code == 200
                    assert r.headers["X-Request-ID"] == f"c{k}-{i}"
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors


def test_multi_worker_metrics_are_summed(start_process):
    p = start_process("articles", {"WORKERS": "3", "IDLE_TIMEOUT": "30s"})
    # /health may answer a moment before the "listening" line is written: wait for it
    deadline = time.monotonic() + 5
    started = []
    while not started and time.monotonic() < deadline:
        started = [ln for ln in p.log_lines() if ln.get("msg", "").startswith("listening")]
        if not started:
            time.sleep(0.02)
    assert started and "with 3 workers" in started[0]["msg"]
    m0 = p.metrics()
    # a new connection per request: the kernel spreads them over the workers' listeners
    n = 60
    for _ in range(n):
        assert p.get("/health").status_code == 200
    key = ("lotmesh_http_requests_total",
           frozenset({"route": "/health", "method": "GET", "status": "2xx"}.items()))
    m1 = p.metrics()
    assert m1[key] - m0.get(key, 0) == n
    held = [p.connect() for _ in range(9)]
    try:
        for c in held:
            c.send(req("GET", "/health"))
            assert c.read_response().status == 200
        assert p.metric("lotmesh_http_connections") == 9 + 1  # the held ones and the scrape
    finally:
        for c in held:
            c.close()


def test_access_log_line_per_request(start_process):
    p = start_process("registry", {"WORKERS": "1", "ACCESS_LOG": "true"})
    with p.connect() as c:
        c.send(req("GET", "/health?x=1", [("X-Request-ID", "log-me"),
                                          ("traceparent", TRACEPARENT)]))
        assert c.read_response().status == 200
    assert p.get("/nope").status_code == 404
    p.terminate()  # flushes the per-thread access-log buffers
    lines = [ln for ln in p.log_lines() if ln.get("msg") == "access"]
    mine = [ln for ln in lines if ln.get("request_id") == "log-me"]
    assert len(mine) == 1, lines
    a = mine[0]
    assert a["method"] == "GET" and a["path"] == "/health" and a["status"] == 200
    assert a["trace_id"] == TRACE_ID
    assert a["bytes"] == 15
    assert isinstance(a["duration_ms"], (int, float))
    assert any(ln["path"] == "/nope" and ln["status"] == 404 for ln in lines)


def test_raw_conn_helper_sanity(reg):
    # the harness itself: a closed connection is reported as closed
    c = RawConn(reg.port)
    c.send(req("GET", "/health", [("Connection", "close")]))
    assert c.read_response().status == 200
    assert c.wait_closed(2)
    assert not c.is_open_now()
    c.close()
