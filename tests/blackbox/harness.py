"""harness.py — black-box test harness for lotmesh processes.

Starts the real binaries (from $LOTMESH_BIN_DIR, default <repo>/build/asan) on free loopback
ports with an explicit environment, waits until GET /health answers, captures stderr into the
test's tmp dir, and on teardown stops every process by PID with SIGTERM, then asserts a clean
exit (code 0 unless told otherwise) and no sanitizer report in stderr.

API for test modules:

    def test_x(start_process):
        p = start_process("registry", {"WORKERS": "1"})   # -> Proc, already healthy
        r = p.get("/health")                               # requests.Response
        c = p.connect()                                    # RawConn on a raw socket
        c.send(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        resp = c.read_response()                           # RawResponse
        p.assert_healthy()

    def test_y(run_process):
        res = run_process("registry", {"PORT": "abc"})     # runs to exit, bounded
        assert res.returncode == 2

Everything has a timeout; nothing here waits unboundedly.
"""

import atexit
import json
import os
import re
import select
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import requests

import pg_server
import ports

REPO = Path(__file__).resolve().parents[2]
BIN_DIR = Path(os.environ.get("LOTMESH_BIN_DIR", REPO / "build" / "asan"))
# the ThreadSanitizer build (make tsan): memory figures mean little under its shadow memory
UNDER_TSAN = os.environ.get("LOTMESH_SANITIZER") == "thread"

SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                     "WARNING: ThreadSanitizer:")

STARTUP_TIMEOUT = 15.0  # seconds until /health must answer (ASan builds start slower)
STOP_TIMEOUT = 20.0     # seconds a process gets to exit after SIGTERM in teardown
IO_TIMEOUT = 5.0        # default socket / request timeout

_live_pids = set()  # every PID started and not yet reaped, for the atexit safety net


def _kill_leftovers():
    for pid in list(_live_pids):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


atexit.register(_kill_leftovers)


# ---- helpers --------------------------------------------------------------------------------

_handed_out_ports = set()


def poll(pred, timeout=IO_TIMEOUT, step=0.02):
    """Calls pred until it returns something truthy (returned) or timeout passes (its last,
    falsy value is returned). Every wait in the tests is this loop, bounded by timeout."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v or time.monotonic() >= deadline:
            return v
        time.sleep(step)


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on right now (and not handed out before
    in this session, so two processes of one test never get the same one; under xdist only
    this worker's share of the ports, ports.py)."""
    port = ports.free_port(taken=_handed_out_ports)
    _handed_out_ports.add(port)
    return port


def binary(name):
    """Path of a lotmesh binary by short name ("registry") or full name ("lotmesh-registry")."""
    exe = name if name.startswith("lotmesh-") else f"lotmesh-{name}"
    path = BIN_DIR / exe
    if not path.is_file() or not os.access(path, os.X_OK):
        pytest.fail(f"binary {path} not found; build it or set LOTMESH_BIN_DIR", pytrace=False)
    return path


def base_env(extra=None):
    """A clean environment: nothing from the caller's shell leaks into the process under test
    except PATH; sanitizer options make every report fatal and visible."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "ASAN_OPTIONS": os.environ.get(
            "LOTMESH_ASAN_OPTIONS", "detect_leaks=1:halt_on_error=1:abort_on_error=0"),
        "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1",
        "LSAN_OPTIONS": "report_objects=1",
        "TSAN_OPTIONS": "second_deadlock_stack=1:history_size=4:suppressions="
                        + str(Path(__file__).with_name("tsan.supp")),
        # Services refuse /api/ requests without a service token (DESIGN 3.5); tests of a
        # single service talk to it directly, so they switch the check off explicitly.
        # Tests of tokens pass SERVICE_AUTH=enabled and a SERVICE_TOKEN_SECRET.
        "SERVICE_AUTH": "disabled",
        # No OTLP collector listens in most tests: spans are off unless a test turns them
        # on (test_observability.py points the processes at a receiver).
        "OTEL_TRACES_EXPORTER": "none",
    }
    if extra:
        env.update({k: str(v) for k, v in extra.items()})
    return env


def sanitizer_lines(text):
    return [ln for ln in text.splitlines() if any(m in ln for m in SANITIZER_MARKERS)]


# ---- raw HTTP over a socket -----------------------------------------------------------------

class RawResponse:
    """One parsed HTTP response: status, reason, headers (list of (name, value) and a
    lower-cased dict of the last value per name), body bytes, and the raw bytes."""

    def __init__(self, version, status, reason, headers, body, raw):
        self.version = version
        self.status = status
        self.reason = reason
        self.header_list = headers
        self.headers = {k.lower(): v for k, v in headers}
        self.body = body
        self.raw = raw

    def header(self, name):
        return self.headers.get(name.lower())

    def header_all(self, name):
        return [v for k, v in self.header_list if k.lower() == name.lower()]

    def json(self):
        return json.loads(self.body.decode("utf-8"))

    @property
    def closes(self):
        return (self.header("connection") or "").lower() == "close"

    def __repr__(self):
        return f"<RawResponse {self.status} {self.headers} {self.body[:200]!r}>"


class PeerClosed(Exception):
    """The server closed the connection before a complete response arrived."""


class RawConn:
    """A client socket with a receive buffer, for byte-exact requests and pipelining."""

    def __init__(self, port, timeout=IO_TIMEOUT, rcvbuf=None, host="127.0.0.1"):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect((host, port))
        self.timeout = timeout
        self.buf = b""
        self.eof = False

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def send(self, data):
        if isinstance(data, str):
            data = data.encode("latin-1")
        self.sock.sendall(data)

    def shutdown_write(self):
        self.sock.shutdown(socket.SHUT_WR)

    def _fill(self, deadline):
        """Reads more bytes into buf; raises socket.timeout at deadline, PeerClosed on EOF
        or reset."""
        if self.eof:
            raise PeerClosed("connection closed by server")
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise socket.timeout("timed out waiting for the server")
        self.sock.settimeout(remaining)
        try:
            chunk = self.sock.recv(65536)
        except ConnectionResetError:
            self.eof = True
            raise PeerClosed("connection reset by server")
        if not chunk:
            self.eof = True
            raise PeerClosed("connection closed by server")
        self.buf += chunk

    def _read_until(self, marker, deadline):
        while marker not in self.buf:
            self._fill(deadline)
        i = self.buf.index(marker) + len(marker)
        out, self.buf = self.buf[:i], self.buf[i:]
        return out

    def _read_exact(self, n, deadline):
        while len(self.buf) < n:
            self._fill(deadline)
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_response(self, head=False, timeout=None):
        """Reads exactly one response (a 1xx interim response counts as one). head=True: the
        request was HEAD, so there is no body whatever the headers say."""
        deadline = time.monotonic() + (timeout if timeout is not None else self.timeout)
        raw_head = self._read_until(b"\r\n\r\n", deadline)
        lines = raw_head[:-4].split(b"\r\n")
        m = re.match(rb"^(HTTP/1\.[01]) (\d{3}) ?(.*)$", lines[0])
        assert m, f"malformed status line {lines[0]!r}"
        version, status, reason = m.group(1).decode(), int(m.group(2)), m.group(3).decode()
        headers = []
        for ln in lines[1:]:
            name, sep, value = ln.partition(b":")
            assert sep and name and name == name.strip(), f"malformed header line {ln!r}"
            headers.append((name.decode("latin-1"), value.strip().decode("latin-1")))
        hdrs = {k.lower(): v for k, v in headers}
        body = b""
        if head or status < 200 or status in (204, 304):
            pass
        elif "content-length" in hdrs:
            body = self._read_exact(int(hdrs["content-length"]), deadline)
        elif hdrs.get("transfer-encoding", "").lower() == "chunked":
            while True:
                size_line = self._read_until(b"\r\n", deadline)
                size = int(size_line.split(b";")[0].strip(), 16)
                if size == 0:
                    while self._read_until(b"\r\n", deadline) != b"\r\n":
                        pass  # trailer fields
                    break
                body += self._read_exact(size, deadline)
                assert self._read_exact(2, deadline) == b"\r\n"
        else:  # delimited by close
            try:
                while True:
                    self._fill(deadline)
            except PeerClosed:
                pass
            body, self.buf = self.buf, b""
        return RawResponse(version, status, reason, headers, body, raw_head + body)

    def read_final_response(self, head=False, timeout=None):
        """Skips 1xx interim responses."""
        while True:
            r = self.read_response(head=head, timeout=timeout)
            if r.status >= 200:
                return r

    def wait_closed(self, timeout=IO_TIMEOUT):
        """True when the server closes (EOF or reset) within timeout; bytes that arrive
        before the close are kept in buf. False when still open at timeout."""
        deadline = time.monotonic() + timeout
        try:
            while True:
                self._fill(deadline)
        except PeerClosed:
            return True
        except (socket.timeout, TimeoutError):
            return False

    def is_open_now(self):
        """Non-blocking check: no EOF/reset and nothing to read right now."""
        if self.eof:
            return False
        r, _, _ = select.select([self.sock], [], [], 0)
        if not r:
            return True
        try:
            self.sock.setblocking(False)
            data = self.sock.recv(65536)
        except BlockingIOError:
            return True
        except (ConnectionResetError, OSError):
            self.eof = True
            return False
        finally:
            self.sock.setblocking(True)
            self.sock.settimeout(self.timeout)
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True


# ---- processes ------------------------------------------------------------------------------

class Proc:
    """One lotmesh process under test. Created by the start_process fixture."""

    def __init__(self, name, env, port, workdir):
        self.name = name
        self.port = port
        # LOTMESH_TEST_DB=pg: articles/charges use PostgreSQL instead of their SQLite file
        self.env = pg_server.map_env(name, env)
        self.exe = binary(name)
        self.stderr_path = workdir / f"{Path(self.exe).name}-{port}.stderr"
        self.stdout_path = workdir / f"{Path(self.exe).name}-{port}.stdout"
        self.popen = None
        self.expected_exit = 0
        self.returncode = None
        self.checked = False

    # lifecycle

    def start(self):
        self._err = open(self.stderr_path, "wb")
        self._out = open(self.stdout_path, "wb")
        self.popen = subprocess.Popen([str(self.exe)], env=self.env, stdin=subprocess.DEVNULL,
                                      stdout=self._out, stderr=self._err, cwd=str(
                                          self.stderr_path.parent),
                                      start_new_session=True)
        _live_pids.add(self.popen.pid)
        return self

    @property
    def pid(self):
        return self.popen.pid

    def alive(self):
        return self.popen is not None and self.popen.poll() is None

    def wait_healthy(self, timeout=STARTUP_TIMEOUT):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if not self.alive():
                self._reap()
                pytest.fail(f"{self.name} exited with {self.returncode} during start-up:\n"
                            f"{self.stderr_tail()}", pytrace=False)
            try:
                with RawConn(self.port, timeout=1.0) as c:
                    c.send(b"GET /health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
                    if c.read_response().status == 200:
                        return self
            except (OSError, PeerClosed, AssertionError) as e:
                last = e
            time.sleep(0.02)
        pytest.fail(f"{self.name} on port {self.port} did not answer /health within "
                    f"{timeout}s (last: {last!r}):\n{self.stderr_tail()}", pytrace=False)

    def signal(self, sig):
        """Sends sig to this process (by PID)."""
        if self.alive():
            os.kill(self.popen.pid, sig)

    def wait(self, timeout):
        """Waits for exit; returns the exit code, or None when still running at timeout."""
        try:
            self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        self._reap()
        return self.returncode

    def terminate(self, timeout=STOP_TIMEOUT):
        """SIGTERM and wait; returns the exit code (None when it did not exit in time)."""
        self.signal(signal.SIGTERM)
        return self.wait(timeout)

    def kill(self):
        if self.alive():
            os.kill(self.popen.pid, signal.SIGKILL)
        self.popen.wait(timeout=STOP_TIMEOUT)
        self._reap()

    def _reap(self):
        if self.popen.returncode is not None:
            self.returncode = self.popen.returncode
            _live_pids.discard(self.popen.pid)
            for f in (self._err, self._out):
                if not f.closed:
                    f.close()

    # output

    def stderr(self):
        try:
            self._err.flush()
        except (ValueError, AttributeError):
            pass
        return self.stderr_path.read_text(errors="replace")

    def stderr_tail(self, n=40):
        return "\n".join(self.stderr().splitlines()[-n:])

    def log_lines(self):
        """stderr parsed as JSON lines (non-JSON lines are skipped)."""
        out = []
        for ln in self.stderr().splitlines():
            try:
                out.append(json.loads(ln))
            except ValueError:
                pass
        return out

    def sanitizer_report(self):
        return sanitizer_lines(self.stderr())

    # clients

    @property
    def base_url(self):
        return f"http://127.0.0.1:{self.port}"

    def url(self, path):
        return self.base_url + path

    def request(self, method, path, **kw):
        kw.setdefault("timeout", IO_TIMEOUT)
        return requests.request(method, self.url(path), **kw)

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def connect(self, timeout=IO_TIMEOUT, rcvbuf=None):
        return RawConn(self.port, timeout=timeout, rcvbuf=rcvbuf)

    def raw_exchange(self, data, head=False, timeout=IO_TIMEOUT):
        """Sends data on a new connection and returns the first final response."""
        with self.connect(timeout=timeout) as c:
            c.send(data)
            return c.read_final_response(head=head)

    def assert_healthy(self, timeout=IO_TIMEOUT):
        """GET /health on a fresh connection answers 200 {"status":"ok"}."""
        assert self.alive(), f"{self.name} died:\n{self.stderr_tail()}"
        r = requests.get(self.url("/health"), timeout=timeout)
        assert r.status_code == 200, r.text
        assert r.json() == {"status": "ok"}

    def metrics(self):
        """GET /metrics parsed into {(name, frozenset(labels.items())): value}."""
        r = self.get("/metrics")
        assert r.status_code == 200
        return parse_prometheus(r.text)

    def metric(self, name, **labels):
        return self.metrics().get((name, frozenset(labels.items())))

    # teardown check

    def check_stopped_cleanly(self):
        """Stops the process if it still runs and returns a list of problems (empty = ok)."""
        problems = []
        if self.checked:
            return problems
        self.checked = True
        if self.alive():
            rc = self.terminate()
            if rc is None:
                self.kill()
                problems.append(f"{self.name} (pid {self.pid}) did not exit within "
                                f"{STOP_TIMEOUT}s of SIGTERM; killed")
        else:
            self._reap()
        if self.returncode is not None and self.returncode != self.expected_exit and \
                not problems:
            problems.append(f"{self.name} exited with {self.returncode}, expected "
                            f"{self.expected_exit}")
        san = self.sanitizer_report()
        if san:
            problems.append(f"{self.name}: sanitizer report in stderr: {san[:5]}")
        if problems:
            problems.append(f"--- stderr tail of {self.name} ({self.stderr_path}) ---\n"
                            f"{self.stderr_tail()}")
        return problems


class Finished:
    """The outcome of a process that ran to its exit (see the run_process fixture)."""

    def __init__(self, returncode, stderr, stdout):
        self.returncode = returncode
        self.stderr = stderr
        self.stdout = stdout

    @property
    def stderr_lines(self):
        return [ln for ln in self.stderr.splitlines() if ln.strip()]


_PROM_LINE = re.compile(
    r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (-?[0-9.eE+-]+|\+Inf|-Inf|NaN)$')
_PROM_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_prometheus(text):
    """Parses Prometheus text format; asserts every sample line is well-formed."""
    out = {}
    for ln in text.splitlines():
        if not ln or ln.startswith("#"):
            if ln.startswith("#"):
                assert re.match(r"^# (HELP|TYPE) [a-zA-Z_:][a-zA-Z0-9_:]* .+$", ln), ln
            continue
        m = _PROM_LINE.match(ln)
        assert m, f"malformed metrics line {ln!r}"
        labels = {}
        if m.group(3):
            labels = dict(_PROM_LABEL.findall(m.group(3)))
        out[(m.group(1), frozenset(labels.items()))] = float(m.group(4))
    return out


# ---- assertions shared by test modules ------------------------------------------------------

def assert_problem(resp, status, detail_contains=None):
    """resp is an RFC 9457 problem with this status: right content type, JSON members type,
    title, status, detail (and detail_contains in detail when given). Works on RawResponse
    and requests.Response; returns the parsed body."""
    if isinstance(resp, RawResponse):
        got_status, ctype, body = resp.status, resp.header("content-type"), resp.json()
    else:
        got_status, ctype, body = resp.status_code, resp.headers.get("content-type"), \
            resp.json()
    assert got_status == status, f"expected {status}, got {got_status}: {body}"
    assert ctype == "application/problem+json", ctype
    for k in ("type", "title", "status", "detail"):
        assert k in body, f"problem lacks {k}: {body}"
    assert body["status"] == status
    assert isinstance(body["title"], str) and body["title"]
    assert isinstance(body["detail"], str) and body["detail"]
    assert isinstance(body["type"], str) and body["type"]
    if detail_contains:
        assert detail_contains.lower() in body["detail"].lower(), body["detail"]
    return body


# ---- Redis (DESIGN 2: CACHE_URL, RATE_LIMIT_URL) ----------------------------------------------

class RedisServer:
    """Debian's redis-server on a free loopback port, its files under workdir, no persistence
    (INFRA.md). Started once per test session by the redis_server fixture; tests that take it
    down (stop(), then start() on the same port) leave it running again. Stopped by PID."""

    def __init__(self, workdir):
        self.workdir = Path(workdir)
        self.port = free_port()
        self.proc = None

    @property
    def url(self):
        return f"redis://127.0.0.1:{self.port}"

    def start(self):
        exe = "/usr/bin/redis-server"
        if not os.access(exe, os.X_OK):
            pytest.fail("redis-server is not installed (scripts/deps.sh test)", pytrace=False)
        log = open(self.workdir / "redis.log", "ab")
        self.proc = subprocess.Popen(
            [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.workdir), "--daemonize", "no",
             "--protected-mode", "no"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
        log.close()
        _live_pids.add(self.proc.pid)
        ok = poll(self._answers, timeout=STARTUP_TIMEOUT)
        if not ok:
            self.stop()
            pytest.fail(f"redis-server did not answer on port {self.port}", pytrace=False)

    def _answers(self):
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self, sig=signal.SIGKILL):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=STOP_TIMEOUT)
        if self.proc:
            _live_pids.discard(self.proc.pid)
        self.proc = None

    def client(self):
        import redis  # python3-redis
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=IO_TIMEOUT)
