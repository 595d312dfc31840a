"""Slow, silent and greedy clients (issue 2, "Hostile input"): header, body, idle and write
timeouts; a client that never reads; thousands of idle connections against MAX_CONNECTIONS;
a flood of pipelined requests. Timeouts are set small through the environment; every wait
here is bounded. Assertions are on outcomes (status, close, order), with generous upper
bounds for "eventually" so a loaded machine does not make them flaky."""

import errno
import socket
import threading
import time

import pytest

from harness import UNDER_TSAN, PeerClosed, assert_problem, poll

H = b"Host: lotmesh.test\r\n"


def get(extra=b"", path=b"/health"):
    return b"GET " + path + b" HTTP/1.1\r\n" + H + extra + b"\r\n"


def open_connections(p, timeout=5):
    """The server's own count of open client connections, minus the scrape's."""
    return p.metric("lotmesh_http_connections") - 1


# ---- header and body timeouts ------------------------------------------------------------

def test_header_timeout_408_then_close(start_process):
    p = start_process("registry", {"WORKERS": "1", "HEADER_TIMEOUT": "300ms",
                                   "IDLE_TIMEOUT": "30s"})
    with p.connect(timeout=5) as c:
        c.send(b"GET /health HTTP/1.1\r\nHost: a\r\nX-Half: ")
        t0 = time.monotonic()
        r = c.read_response()
        waited = time.monotonic() - t0
        assert_problem(r, 408, "header")
        assert r.closes
        assert waited >= 0.25, "408 must come from the timeout, not at once"
        assert c.wait_closed(3)
    p.assert_healthy()


def test_header_timeout_slowloris_trickle(start_process):
    """One byte at a time never resets the header deadline."""
    p = start_process("registry", {"WORKERS": "1", "HEADER_TIMEOUT": "400ms",
                                   "IDLE_TIMEOUT": "30s"})
    data = b"GET /health HTTP/1.1\r\nHost: a\r\nX-Slow: " + b"s" * 200 + b"\r\n\r\n"
    with p.connect(timeout=5) as c:
        c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        got = None
        for i in range(len(data)):  # 200+ bytes * 30 ms = 6+ s if never stopped
            try:
                c.send(data[i:i + 1])
            except (BrokenPipeError, ConnectionResetError):
                break
            time.sleep(0.03)
            if c.is_open_now() is False or c.buf:
                break
        got = c.read_response()
        assert_problem(got, 408)
        assert i < len(data) - 1, "the server waited for the whole trickle"
        assert c.wait_closed(3)
    p.assert_healthy()


@pytest.mark.parametrize("kind", ["content-length", "chunked"])
def test_body_timeout_408_then_close(start_process, kind):
    p = start_process("registry", {"WORKERS": "1", "BODY_TIMEOUT": "300ms",
                                   "HEADER_TIMEOUT": "30s", "IDLE_TIMEOUT": "30s"})
    if kind == "content-length":
        data = b"POST /health HTTP/1.1\r\n" + H + b"Content-Length: 10\r\n\r\nabc"
    else:
        data = b"POST /health HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n5\r\nab"
    with p.connect(timeout=5) as c:
        c.send(data)
        t0 = time.monotonic()
        r = c.read_response()
        assert time.monotonic() - t0 >= 0.25
        assert_problem(r, 408, "body")
        assert r.closes
        assert c.wait_closed(3)
    p.assert_healthy()


def test_timeouts_do_not_hit_healthy_slow_but_complete_requests(start_process):
    p = start_process("registry", {"WORKERS": "1", "HEADER_TIMEOUT": "1s",
                                   "BODY_TIMEOUT": "1s", "IDLE_TIMEOUT": "1s"})
    with p.connect(timeout=5) as c:
        c.send(b"POST /health HTTP/1.1\r\n" + H)
        time.sleep(0.3)
        c.send(b"Content-Length: 4\r\n\r\nab")
        time.sleep(0.3)
        c.send(b"cd")
        assert_problem(c.read_response(), 405)
        c.send(get())
        assert c.read_response().status == 200


# ---- idle keep-alive ------------------------------------------------------------------------

def test_idle_connection_closed_after_idle_timeout(start_process):
    p = start_process("registry", {"WORKERS": "1", "IDLE_TIMEOUT": "500ms"})
    with p.connect(timeout=5) as silent, p.connect(timeout=5) as used:
        used.send(get())
        assert used.read_response().status == 200
        t0 = time.monotonic()
        assert used.wait_closed(4), "idle keep-alive connection must be closed"
        assert silent.wait_closed(4), "a connection that never sends must be closed"
        assert time.monotonic() - t0 >= 0.4
        assert used.buf == b"" and silent.buf == b"", "an idle close sends nothing"
    p.assert_healthy()


def test_active_keep_alive_connection_not_closed_as_idle(start_process):
    """Idle means time since the last response, not since the connection opened."""
    p = start_process("registry", {"WORKERS": "1", "IDLE_TIMEOUT": "600ms"})
    with p.connect(timeout=5) as c:
        for i in range(14):  # ~2.1 s in total, far beyond the idle timeout
            c.send(get(b"X-Request-ID: a%d\r\n" % i))
            r = c.read_response()
            assert r.status == 200 and r.header("x-request-id") == f"a{i}"
            time.sleep(0.15)
        assert c.is_open_now()
        assert c.wait_closed(4)  # and once really idle, it goes


# ---- clients that do not read -----------------------------------------------------------------

def flood_without_reading(port, seconds, rcvbuf=4096):
    """Pipelines /metrics requests (large responses) on a socket whose receive buffer is tiny
    and never reads. Returns (socket, bytes_sent, stopped_because)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.connect(("127.0.0.1", port))
    s.setblocking(False)
    one = get(path=b"/metrics")
    batch = one * 200
    sent = 0
    deadline = time.monotonic() + seconds
    reason = "time"
    while time.monotonic() < deadline:
        try:
            sent += s.send(batch)
        except BlockingIOError:
            reason = "blocked"  # the server stopped reading us: backpressure
            break
        except (BrokenPipeError, ConnectionResetError):
            reason = "closed"
            break
    return s, sent, reason


def requests_total(p):
    return sum(v for (name, _), v in p.metrics().items()
               if name == "lotmesh_http_requests_total")


def wait_settled(p, timeout=15):
    """Waits until the server answers nothing but our scrapes: clients that do not read
    have filled every buffer and their connections are stalled."""
    prev = requests_total(p)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(0.3)
        cur = requests_total(p)
        if cur - prev <= 1:  # only the previous scrape
            return True
        prev = cur
    return False


def test_client_that_never_reads_is_bounded_and_dropped(start_process):
    # ASan keeps freed memory in a quarantine (256 MB by default) that would dwarf what is
    # measured here; a small one keeps RSS meaningful (no effect on non-ASan builds).
    # WRITE_TIMEOUT leaves room for a slow (sanitized) server to fill the buffers first: it
    # renders thousands of /metrics responses per client before the kernel stops taking them.
    p = start_process("registry", {
        "WORKERS": "1", "WRITE_TIMEOUT": "5s", "IDLE_TIMEOUT": "30s",
        "ASAN_OPTIONS": "detect_leaks=1:halt_on_error=1:quarantine_size_mb=16"})
    hogs = []
    try:
        def hog():
            s, sent, reason = flood_without_reading(p.port, seconds=3)
            hogs.append(s)
            # the server stops reading a client whose responses pile up, so the client's
            # send blocks long before 3 s of /metrics requests (tens of MB) are pushed
            assert reason == "blocked", (reason, sent)
            return sent

        hog()  # warm-up: allocator and quarantine reach their working size
        assert wait_settled(p)
        rss1 = p.metric("process_resident_memory_bytes")
        n = 6
        sent = sum(hog() for _ in range(n))
        assert wait_settled(p)
        rss2 = p.metric("process_resident_memory_bytes")
        assert open_connections(p) == n + 1, "measured after the hogs were dropped"
        # each hog asked for ~60x its request bytes in responses; what the server holds per
        # connection stays near its buffer caps (before the fix: 3.5 MB in a release build,
        # 6 MB with ASan: the responses to a whole 64 kB read of requests)
        per_hog = (rss2 - rss1) / n
        assert UNDER_TSAN or per_hog < 1.5 * 1024 * 1024, (per_hog, sent)
        # meanwhile everybody else is served
        for _ in range(3):
            p.assert_healthy()
        # and after WRITE_TIMEOUT without progress the hogs are dropped
        assert poll(lambda: open_connections(p) == 0, 10), open_connections(p)
        for s in hogs:  # their sockets see the close (after the buffered bytes)
            s.setblocking(True)
            s.settimeout(3)
            closed = False
            try:
                while s.recv(1 << 20):
                    pass
                closed = True
            except (ConnectionResetError, BrokenPipeError):
                closed = True
            except socket.timeout:
                pass
            assert closed
    finally:
        for s in hogs:
            s.close()
    p.assert_healthy()


def test_slow_reader_gets_everything_in_order(start_process):
    """Backpressure must not lose or reorder responses: a client that reads slowly still gets
    every response of a large pipeline, in order (no timeout: it keeps making progress)."""
    p = start_process("registry", {"WORKERS": "1", "WRITE_TIMEOUT": "5s"})
    n = 400
    data = b"".join(get(b"X-Request-ID: s%d\r\n" % i, path=b"/metrics") for i in range(n))
    with p.connect(timeout=10, rcvbuf=8192) as c:
        t = threading.Thread(target=c.send, args=(data,), daemon=True)
        t.start()
        time.sleep(0.3)  # let the server fill its buffers and block
        for i in range(n):
            r = c.read_response(timeout=10)
            assert r.status == 200
            assert r.header("x-request-id") == f"s{i}"
        t.join(10)


# ---- connection limit ---------------------------------------------------------------------

def test_per_address_limit_refuses_only_that_address(start_process):
    """10,000 silent connections from one address must not lock everyone out: each address
    gets MAX_CONNECTIONS_PER_ADDRESS (per process, over every worker); others are served."""
    p = start_process("registry", {"WORKERS": "2", "MAX_CONNECTIONS_PER_ADDRESS": "20",
                                   "IDLE_TIMEOUT": "60s", "HEADER_TIMEOUT": "60s"})
    assert poll(lambda: open_connections(p) == 0, 5)
    socks = []
    try:
        for _ in range(200):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.settimeout(5)
            s.connect(("127.0.0.1", p.port))
            socks.append(s)

        def open_count():
            n = 0
            for s in socks:
                s.setblocking(False)
                try:
                    n += s.recv(1) != b""
                except BlockingIOError:
                    n += 1
                except OSError:
                    pass
                finally:
                    s.setblocking(True)
            return n

        assert poll(lambda: open_count() == 20, 10, step=0.2), open_count()
        assert not _health_ok(p)  # 127.0.0.1 is at its limit
        # another address (127.0.0.0/8 is loopback) is served
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as other:
            other.settimeout(5)
            other.bind(("127.0.0.2", 0))
            other.connect(("127.0.0.1", p.port))
            other.sendall(get(b"Connection: close\r\n"))
            assert other.recv(12).startswith(b"HTTP/1.1 200")
    finally:
        for s in socks:
            s.close()
    assert poll(lambda: _health_ok(p), 5)  # released when they close
    lines = [ln for ln in p.log_lines() if "per client address" in ln.get("msg", "")]
    assert 1 <= len(lines) <= 5 and all(ln["level"] == "warn" for ln in lines)


def test_thousands_of_idle_connections_bounded(start_process):
    limit = 50
    p = start_process("registry", {"WORKERS": "1", "MAX_CONNECTIONS": str(limit),
                                   "IDLE_TIMEOUT": "60s", "HEADER_TIMEOUT": "60s"})
    # Earlier connections (the start-up probe, the scrape) must be gone from the server's
    # count first: libuv accepts the whole backlog of the flood before it would get to
    # their close, so each one still counted would take a slot.
    assert poll(lambda: open_connections(p) == 0, 5)
    time.sleep(0.2)  # the scrape's own close, on an otherwise idle loop
    socks = []
    try:
        for _ in range(2000):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.settimeout(5)
            s.connect(("127.0.0.1", p.port))
            socks.append(s)

        def still_open(s):
            s.setblocking(False)
            try:
                return s.recv(1) != b""  # data would be a protocol error: count as open
            except BlockingIOError:
                return True
            except OSError:
                return False
            finally:
                s.setblocking(True)

        # the server accepts and closes every connection beyond the limit
        def settled():
            return sum(1 for s in socks if still_open(s)) == limit
        assert poll(settled, 10, step=0.2), sum(1 for s in socks if still_open(s))
        # the ones left are the newest: under pressure the longest-idle give way
        assert all(still_open(s) for s in socks[-limit:])
        # so at the limit a new client is still served (an idle connection gives way) ...
        assert _health_ok(p)
        assert sum(1 for s in socks if still_open(s)) <= limit
    finally:
        for s in socks:
            s.close()
    # ... and once they are gone, the server serves as before
    assert poll(lambda: _health_ok(p), 5)
    assert poll(lambda: open_connections(p) == 0, 5)
    # ~1950 idle connections shed are logged as a few lines with counts, not one line each
    lines = [ln for ln in p.log_lines() if "connection limit" in ln.get("msg", "")]
    assert 1 <= len(lines) <= 5, len(lines)
    assert all(ln["level"] == "warn" for ln in lines)


def _health_ok(p):
    try:
        with p.connect(timeout=1) as c:
            c.send(get(b"Connection: close\r\n"))
            return c.read_response().status == 200
    except (OSError, PeerClosed):
        return False


def test_connection_churn_leaves_nothing_behind(start_process):
    p = start_process("registry", {"WORKERS": "2"})
    for i in range(300):
        s = socket.create_connection(("127.0.0.1", p.port), timeout=5)
        if i % 3 == 0:
            s.sendall(get())
        elif i % 3 == 1:
            s.sendall(get()[:10])
        s.close()
    assert poll(lambda: open_connections(p) == 0, 5), open_connections(p)
    fds = p.metric("process_open_fds")
    assert fds < 64, fds
    p.assert_healthy()


# ---- pipelined flood ----------------------------------------------------------------------

def test_pipelined_flood_answered_in_order(start_process):
    p = start_process("registry", {"WORKERS": "2"})
    n = 5000
    reqs = []
    for i in range(n):
        if i % 10 == 7:
            reqs.append(b"HEAD /health HTTP/1.1\r\n" + H + b"X-Request-ID: f%d\r\n\r\n" % i)
        elif i % 10 == 3:
            reqs.append(get(b"X-Request-ID: f%d\r\n" % i, path=b"/nope%d" % i))
        else:
            reqs.append(get(b"X-Request-ID: f%d\r\n" % i))
    reqs.append(get(b"X-Request-ID: last\r\nConnection: close\r\n"))
    data = b"".join(reqs)
    with p.connect(timeout=10) as c:
        errors = []

        def writer():
            try:
                c.send(data)  # > 200 kB: the server must apply backpressure, not buffer
            except OSError as e:
                errors.append(e)

        t = threading.Thread(target=writer, daemon=True)
        t.start()
        for i in range(n):
            r = c.read_response(head=(i % 10 == 7), timeout=10)
            assert r.header("x-request-id") == f"f{i}", (i, r)
            assert r.status == (404 if i % 10 == 3 else 200)
        last = c.read_response(timeout=10)
        assert last.header("x-request-id") == "last" and last.closes
        assert c.wait_closed(5)
        t.join(10)
        assert not errors
    p.assert_healthy()


def test_many_pipelining_clients_at_once(start_process):
    p = start_process("registry", {"WORKERS": "2"})
    n_clients, n_req = 16, 300
    failures = []

    def client(k):
        try:
            data = b"".join(get(b"X-Request-ID: c%d-%d\r\n" % (k, i)) for i in range(n_req))
            with p.connect(timeout=10) as c:
                t = threading.Thread(target=c.send, args=(data,), daemon=True)
                t.start()
                for i in range(n_req):
                    r = c.read_response(timeout=10)
                    if r.header("x-request-id") != f"c{k}-{i}" or r.status != 200:
                        failures.append((k, i, r))
                        return
                t.join(10)
        except Exception as e:  # noqa: BLE001 - collected and asserted below
            failures.append((k, e))

    threads = [threading.Thread(target=client, args=(k,)) for k in range(n_clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not failures, failures[:3]
    p.assert_healthy()


def test_no_errno_leak_on_client_resets_during_write(start_process):
    """Clients that reset while their responses are being written."""
    p = start_process("registry", {"WORKERS": "1"})
    data = get(path=b"/metrics") * 300
    for _ in range(20):
        s = socket.create_connection(("127.0.0.1", p.port), timeout=5)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        try:
            s.sendall(data)
        except OSError as e:
            assert e.errno in (errno.EPIPE, errno.ECONNRESET)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        s.close()
    assert poll(lambda: open_connections(p) == 0, 5)
    p.assert_healthy()
