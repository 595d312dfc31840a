"""Process lifecycle of a lotmesh process: graceful shutdown on SIGTERM/SIGINT (idle
connections closed, in-flight requests finished, new connections refused, exit 0 within
SHUTDOWN_TIMEOUT), configuration errors (exit 2, one line naming the variable), a port in
use (exit 1, one line)."""

import signal
import socket
import time

import pytest

from harness import assert_problem, free_port, poll

H = b"Host: lotmesh.test\r\n"


def get(extra=b""):
    return b"GET /health HTTP/1.1\r\n" + H + extra + b"\r\n"


def refused(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return False
    except ConnectionRefusedError:
        return True


# ---- graceful shutdown -----------------------------------------------------------------------

@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_closes_idle_connections_and_exits_0(start_process, sig):
    p = start_process("registry", {"WORKERS": "2", "SHUTDOWN_TIMEOUT": "8s",
                                   "IDLE_TIMEOUT": "60s"})
    conns = [p.connect() for _ in range(6)]
    try:
        for c in conns:
            c.send(get())
            assert c.read_response().status == 200
        t0 = time.monotonic()
        p.signal(sig)
        rc = p.wait(10)
        assert rc == 0, p.stderr_tail()
        # idle keep-alive connections do not hold the shutdown until the deadline (these
        # clients never close their side: the server's lingering close ends after 2 s)
        assert time.monotonic() - t0 < 5
        for c in conns:
            # a 408 before anything was read: a request that crossed it was not processed,
            # which a bare close could not tell its client (README, "Draining")
            r = c.read_response()
            assert r.status == 408 and r.closes, r.raw
            assert "no request was read" in r.json()["detail"], r.raw
            assert c.wait_closed(2)
            assert c.buf == b""
    finally:
        for c in conns:
            c.close()
    msgs = [ln.get("msg", "") for ln in p.log_lines()]
    assert f"received {sig.name}" in msgs
    assert msgs[-1] == "stopped"
    assert refused(p.port)


def test_stalled_client_does_not_hold_shutdown_past_deadline(start_process):
    p = start_process("registry", {"WORKERS": "1", "SHUTDOWN_TIMEOUT": "1s",
                                   "HEADER_TIMEOUT": "60s", "IDLE_TIMEOUT": "60s"})
    with p.connect() as slow, p.connect() as idle:
        slow.send(b"GET /health HTTP/1.1\r\n" + H + b"X-Half: ")  # never finished
        idle.send(get())
        assert idle.read_response().status == 200
        t0 = time.monotonic()
        p.signal(signal.SIGTERM)
        assert idle.read_response().status == 408, "idle connections are ended at once"
        assert idle.wait_closed(2)
        # the process is still draining the slow client, but takes no new connections
        assert poll(lambda: refused(p.port), 2)
        assert p.alive()
        rc = p.wait(6)
        elapsed = time.monotonic() - t0
        assert rc == 0, p.stderr_tail()
        assert elapsed < 1 + 2.5, f"exit took {elapsed:.2f}s with SHUTDOWN_TIMEOUT=1s"
        assert slow.wait_closed(2)


def test_in_flight_request_finishes_during_shutdown(start_process):
    p = start_process("registry", {"WORKERS": "1", "SHUTDOWN_TIMEOUT": "5s",
                                   "BODY_TIMEOUT": "60s"})
    with p.connect() as c:
        c.send(b"POST /health HTTP/1.1\r\n" + H + b"Content-Length: 5\r\n\r\nab")
        time.sleep(0.2)
        p.signal(signal.SIGTERM)
        assert poll(lambda: refused(p.port), 2)
        assert p.alive(), "an in-flight request holds the shutdown (until the deadline)"
        # the rest of the body, and a pipelined request that must not be served any more
        c.send(b"cde" + get(b"X-Request-ID: too-late\r\n"))
        r = c.read_response()
        assert_problem(r, 405)
        assert r.closes, "a response during shutdown says Connection: close"
        assert c.wait_closed(2)
        assert b"too-late" not in c.buf
        assert p.wait(5) == 0


def test_shutdown_with_many_connections_in_every_state(start_process):
    p = start_process("registry", {"WORKERS": "2", "SHUTDOWN_TIMEOUT": "1s",
                                   "IDLE_TIMEOUT": "60s", "HEADER_TIMEOUT": "60s",
                                   "BODY_TIMEOUT": "60s"})
    socks = []
    try:
        for i in range(60):
            c = p.connect()
            socks.append(c)
            kind = i % 4
            if kind == 0:
                pass  # connected, silent
            elif kind == 1:
                c.send(get())
                c.read_response()
            elif kind == 2:
                c.send(b"GET /health HTTP/1.1\r\n" + H)
            else:
                c.send(b"POST /health HTTP/1.1\r\n" + H + b"Content-Length: 9\r\n\r\nab")
        p.signal(signal.SIGTERM)
        assert p.wait(6) == 0, p.stderr_tail()
        for c in socks:
            assert c.wait_closed(2)
    finally:
        for c in socks:
            c.close()


# ---- configuration errors ----------------------------------------------------------------------

CONFIG_ERRORS = [
    ("PORT", "abc"), ("PORT", "70000"), ("PORT", "-1"), ("PORT", "80a"),
    ("WORKERS", "0"), ("WORKERS", "many"), ("WORKERS", "100000"),
    ("HEADER_TIMEOUT", "10x"), ("HEADER_TIMEOUT", "1ms"), ("BODY_TIMEOUT", "-5s"),
    ("IDLE_TIMEOUT", "1y"), ("WRITE_TIMEOUT", "fast"), ("SHUTDOWN_TIMEOUT", "forever"),
    ("LOG_LEVEL", "loud"), ("ACCESS_LOG", "maybe"),
    ("MAX_BODY_BYTES", "lots"), ("MAX_BODY_BYTES", "2g"), ("MAX_HEADER_BYTES", "10"),
    ("MAX_URI_BYTES", "1q"), ("MAX_HEADERS", "0"), ("MAX_CONNECTIONS", "0"),
    ("BIND_ADDRESS", "not-an-address"),
]


@pytest.mark.parametrize("var,value", CONFIG_ERRORS, ids=[f"{v}={x}" for v, x in CONFIG_ERRORS])
def test_configuration_error_exits_2_with_one_line(run_process, var, value):
    env = {"PORT": str(free_port()), var: value}
    res = run_process("registry", env)
    assert res.returncode == 2, res.stderr
    lines = res.stderr_lines
    assert len(lines) == 1, res.stderr
    line = lines[0]
    assert line.startswith("lotmesh-registry: configuration error: "), line
    assert f" {var} " in line, line
    assert f'"{value}"' in line, "the offending value is quoted back"


def test_first_configuration_error_wins(run_process):
    res = run_process("registry", {"PORT": "abc", "WORKERS": "0", "LOG_LEVEL": "loud"})
    assert res.returncode == 2
    assert len(res.stderr_lines) == 1
    assert "PORT" in res.stderr_lines[0]


def test_empty_variable_counts_as_unset(start_process):
    p = start_process("registry", {"WORKERS": "", "LOG_LEVEL": "", "HEADER_TIMEOUT": ""})
    p.assert_healthy()


def test_valid_configuration_forms(start_process):
    p = start_process("registry", {"WORKERS": "1", "HEADER_TIMEOUT": "1500ms",
                                   "BODY_TIMEOUT": "2s", "IDLE_TIMEOUT": "1m",
                                   "WRITE_TIMEOUT": "1h", "SHUTDOWN_TIMEOUT": "0",
                                   "MAX_BODY_BYTES": "64k", "MAX_HEADER_BYTES": "8KiB",
                                   "MAX_URI_BYTES": "1024", "LOG_LEVEL": "debug",
                                   "ACCESS_LOG": "off", "MODULE_NAME": "charges_api"})
    p.assert_healthy()

    def started():  # workers accept before the line is written: wait for it, bounded
        return [ln for ln in p.log_lines() if ln.get("msg", "").startswith("listening")]

    assert poll(started), p.stderr_tail()
    assert started()[0]["service"] == "charges_api"


# ---- start-up failures ------------------------------------------------------------------------

def test_port_in_use_exits_1_with_one_line(run_process):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        res = run_process("registry", {"PORT": str(port), "BIND_ADDRESS": "127.0.0.1",
                                       "WORKERS": "1"})
    assert res.returncode == 1, res.stderr
    assert len(res.stderr_lines) == 1, res.stderr
    line = res.stderr_lines[0]
    assert f"127.0.0.1:{port}" in line and "in use" in line, line


def test_port_taken_by_another_instance(start_process, run_process):
    first = start_process("articles", {"WORKERS": "2"})  # two SO_REUSEPORT listeners
    res = run_process("registry", {"PORT": str(first.port), "BIND_ADDRESS": "127.0.0.1",
                                   "WORKERS": "1"})
    assert res.returncode == 1
    assert len(res.stderr_lines) == 1 and "in use" in res.stderr_lines[0]
    first.assert_healthy()  # SO_REUSEPORT did not let the second one share the port


def test_address_not_available_exits_1(run_process):
    res = run_process("registry", {"PORT": str(free_port()), "BIND_ADDRESS": "192.0.2.1",
                                   "WORKERS": "1"})
    assert res.returncode == 1, res.stderr
    assert len(res.stderr_lines) == 1, res.stderr
    assert "192.0.2.1" in res.stderr_lines[0]
