"""gateway_util.py — helpers for the black-box tests of lotmesh-gateway (test_gateway.py), on
top of harness.py:

    fleet = Fleet(workdir)                       # processes of one module or test
    p = fleet.start("charges", env)              # -> harness.Proc, healthy
    problems = fleet.stop()                      # SIGTERM in reverse order, harness checks

    creds = bootstrap_clients(workdir)           # a clients file with dev, reader, writer
    gw = Gateway(fleet.start("gateway", gateway_env(creds, registry_url)), creds)
    gw.token("reader"); gw.api("GET", "/api/charges_api/api/v1/charges", client="dev")

    rec = Recorder()                             # a recording HTTP/1.1 upstream (threads)
    rec.on("slow-", lambda h, r: ...)            # a responder for targets containing a text
    rec.on_head("s-", lambda h, r: ...)          # one that runs before the body is read
    rec.find("tok")                              # the requests whose target contains "tok"
    rec.close()

Clients: the gateway creates its clients file and dev-client.json on first start (DESIGN 2);
bootstrap_clients runs it once for that, then adds two clients to a copy of the file:
"reader" (scope "read") and "writer" (scope "read write"), each with its own API key
(BLAKE2b-256, hashlib) and — as no Argon2id implementation is installed for Python — the
dev client's secret hash, so their secret is the dev client's secret. Every gateway of a
module uses that file, one access-token key file and one service-token secret (SECRET).
"""

import hashlib
import http.server
import json
import os
import secrets
import socket
import threading
import time

import pytest
import requests

from harness import IO_TIMEOUT, Proc, base_env, free_port
from harness import poll as wait_until

SECRET = "gw-blackbox-shared-service-token-secret-0123456789"  # >= 32 bytes (HS256)
SERVICE_ENV = {"SERVICE_AUTH": "enabled", "SERVICE_TOKEN_SECRET": SECRET}


# ---- processes -------------------------------------------------------------------------------

class Fleet:
    """Processes started for one module or one test, each on a free loopback port with its
    own LOTMESH_DATA_DIR; stop() stops them in reverse order with the harness's checks (exit
    code, hang, sanitizer report) and returns the problems."""

    def __init__(self, workdir):
        self.workdir = workdir
        self.procs = []

    def start(self, name, env=None, port=None, wait=True):
        port = port or free_port()
        data = self.workdir / f"data-{name}-{port}"
        data.mkdir(exist_ok=True)
        full = {"PORT": str(port), "BIND_ADDRESS": "127.0.0.1", "ACCESS_LOG": "false",
                "LOG_LEVEL": "info", "LOTMESH_DATA_DIR": str(data)}
        full.update({k: str(v) for k, v in (env or {}).items()})
        p = Proc(name, base_env(full), port, self.workdir)
        p.data_dir = data
        self.procs.append(p)
        p.start()
        if wait:
            p.wait_healthy()
        return p

    def stop(self):
        problems = []
        for p in reversed(self.procs):
            try:
                problems += p.check_stopped_cleanly()
            finally:
                if p.alive():
                    p.kill()
        return problems


def fleet_fixture(tmp_path_factory, tag):
    """Generator body of a module-scoped fixture yielding a Fleet; a process that exits
    badly, hangs or reports a sanitizer error fails the module's last teardown."""
    fleet = Fleet(tmp_path_factory.mktemp(tag))
    try:
        yield fleet
    finally:
        problems = fleet.stop()
        if problems:
            pytest.fail("\n".join(problems), pytrace=False)


# ---- clients -----------------------------------------------------------------------------------

class Client:
    def __init__(self, client_id, secret, api_key, scope):
        self.id = client_id
        self.secret = secret
        self.api_key = api_key
        self.scope = scope


class Creds:
    """The clients of a module: dev (read write admin), reader (read), writer (read write)."""

    def __init__(self, clients_file, access_key_file, clients, first_start):
        self.clients_file = clients_file
        self.access_key_file = access_key_file
        self.clients = clients
        self.first_start = first_start  # what the bootstrap gateway wrote, for the tests

    def __getitem__(self, name):
        return self.clients[name]

    def access_key(self):
        """The gateway's own access-token key (HS256), as the gateway reads its file."""
        return self.access_key_file.read_bytes().rstrip(b"\r\n ")


def api_key_hash(key):
    """What clients.c stores for an API key: hex BLAKE2b-256 (libsodium crypto_generichash)."""
    return hashlib.blake2b(key.encode(), digest_size=32).hexdigest()


def bootstrap_clients(workdir):
    """Starts a gateway with a fresh data directory (it creates gateway-clients.json,
    dev-client.json and gateway-access.key), stops it, and writes clients.json: the dev
    client plus "reader" and "writer"."""
    fleet = Fleet(workdir)
    try:
        gw = fleet.start("gateway", {**SERVICE_ENV, "WORKERS": "1"})
        data = gw.data_dir
    finally:
        problems = fleet.stop()
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)
    dev_path, clients_path = data / "dev-client.json", data / "gateway-clients.json"
    dev = json.loads(dev_path.read_text())
    doc = json.loads(clients_path.read_text())
    first = {"dev_client": dev, "dev_client_mode": os.stat(dev_path).st_mode & 0o777,
             "clients_doc": json.loads(json.dumps(doc)),
             "clients_text": clients_path.read_text(),
             "clients_mode": os.stat(clients_path).st_mode & 0o777,
             "stderr": gw.stderr()}
    entry = doc["clients"][0]
    clients = {"dev": Client(dev["client_id"], dev["client_secret"], dev["api_key"],
                             entry["scope"])}
    for name, scope in (("reader", "read"), ("writer", "read write")):
        key = secrets.token_urlsafe(32)
        doc["clients"].append({"client_id": name, "secret_hash": entry["secret_hash"],
                               "scope": scope, "api_key_hashes": [api_key_hash(key)]})
        clients[name] = Client(name, dev["client_secret"], key, scope)
    path = workdir / "clients.json"
    path.write_text(json.dumps(doc, indent=2))
    os.chmod(path, 0o600)
    return Creds(path, data / "gateway-access.key", clients, first)


def gateway_env(creds, registry_url, **extra):
    env = {"GATEWAY_CLIENTS_FILE": str(creds.clients_file),
           "GATEWAY_ACCESS_KEY_FILE": str(creds.access_key_file),
           "SERVICE_TOKEN_SECRET": SECRET, "SERVICE_REGISTRY_URL": registry_url,
           "ACCESS_LOG": "true", "WORKERS": "2"}
    env.update({k: str(v) for k, v in extra.items()})
    return env


class Gateway:
    """A gateway process with its clients: tokens (cached per client and scope) and calls."""

    def __init__(self, proc, creds):
        self.proc = proc
        self.creds = creds
        self._tokens = {}
        self.port = proc.port

    def url(self, path):
        return self.proc.url(path)

    def token_response(self, client="dev", scope=None):
        c = self.creds[client]
        form = {"grant_type": "client_credentials"}
        if scope is not None:
            form["scope"] = scope
        return self.proc.request("POST", "/auth/token", data=form, auth=(c.id, c.secret))

    def token(self, client="dev", scope=None):
        if (client, scope) not in self._tokens:
            r = self.token_response(client, scope)
            assert r.status_code == 200, r.text
            self._tokens[(client, scope)] = r.json()["access_token"]
        return self._tokens[(client, scope)]

    def auth(self, client="dev", scope=None, api_key=False):
        if api_key:
            return {"X-API-Key": self.creds[client].api_key}
        return {"Authorization": f"Bearer {self.token(client, scope)}"}

    def api(self, method, path, client="dev", headers=None, api_key=False, session=None,
            **kw):
        """A request with the client's credentials; client=None sends none."""
        h = dict(self.auth(client, api_key=api_key)) if client else {}
        h.update(headers or {})
        kw.setdefault("timeout", IO_TIMEOUT)
        send = session.request if session else requests.request
        return send(method, self.url(path), headers=h, **kw)

    def discovered(self, service):
        return self.proc.metric("lotmesh_discovery_instances", service=service) or 0


# ---- W3C trace context -------------------------------------------------------------------------

def new_traceparent(flags="01"):
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return trace_id, span_id, f"00-{trace_id}-{span_id}-{flags}"


def parse_traceparent(value):
    parts = value.split("-")
    assert len(parts) == 4 and parts[0] == "00", value
    assert len(parts[1]) == 32 and len(parts[2]) == 16 and len(parts[3]) == 2, value
    int(parts[1], 16), int(parts[2], 16), int(parts[3], 16)
    assert parts[1] != "0" * 32 and parts[2] != "0" * 16, value
    return parts[1], parts[2], parts[3]


def access_lines(proc, request_id=None, prefix=None):
    """The process's access-log lines (JSON, msg "access"), by request_id or its prefix."""
    out = []
    for ln in proc.log_lines():
        if ln.get("msg") != "access":
            continue
        rid = ln.get("request_id") or ""
        if request_id is not None and rid != request_id:
            continue
        if prefix is not None and not rid.startswith(prefix):
            continue
        out.append(ln)
    return out


# ---- a recording upstream ------------------------------------------------------------------------

class Record:
    """One request as the upstream received it: method, target (path and query as sent),
    headers (list of (name, value) in order, duplicates kept), body bytes."""

    def __init__(self, method, target, version, headers, body):
        self.method = method
        self.target = target
        self.version = version
        self.headers = headers
        self.body = body
        self.at = time.monotonic()

    def header(self, name):
        vals = self.header_all(name)
        return vals[0] if vals else None

    def header_all(self, name):
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def names(self):
        return {k.lower() for k, _ in self.headers}

    def __repr__(self):
        n = "?" if self.body is None else len(self.body)
        return f"<Record {self.method} {self.target} {self.headers} {n} bytes>"


def reply(h, status, body=b"", headers=(), ctype="application/json"):
    """Writes a complete response with Content-Length (no body for HEAD)."""
    if isinstance(body, str):
        body = body.encode()
    h.send_response(status)
    if ctype:
        h.send_header("Content-Type", ctype)
    for k, v in headers:
        h.send_header(k, v)
    if status not in (204, 304) and not 100 <= status < 200:
        h.send_header("Content-Length", str(len(body)))
    h.end_headers()
    if h.command != "HEAD" and body:
        h.wfile.write(body)


def echo(h, rec):
    """The default answer: 200 with what arrived, as JSON."""
    doc = {"method": rec.method, "target": rec.target, "headers": rec.headers,
           "body_len": len(rec.body), "body_sha256": hashlib.sha256(rec.body).hexdigest()}
    reply(h, 200, json.dumps(doc), headers=[("X-Upstream", "recorder")])


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 30  # an idle keep-alive connection of the gateway's pool
    server_version = "recorder"

    def log_message(self, *args):
        pass

    def setup(self):
        super().setup()
        self.server.recorder._track(self.connection, True)

    def finish(self):
        try:
            super().finish()
        finally:
            self.server.recorder._track(self.connection, False)

    def _read_body(self):
        """(body, complete): a body cut short (the gateway gave up on it) is not complete."""
        te = (self.headers.get("Transfer-Encoding") or "").lower()
        if te == "chunked":
            body = b""
            try:
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass
                        return body, True
                    data = self.rfile.read(size)
                    body += data
                    if len(data) != size or self.rfile.readline() != b"\r\n":
                        return body, False
            except (ValueError, OSError):
                return body, False
        n = int(self.headers.get("Content-Length") or 0)
        try:
            body = self.rfile.read(n) if n else b""
        except OSError:
            return b"", False
        return body, len(body) == n

    def _any(self):
        up = self.server.recorder
        early = up._responder(self.path, early=True)
        if early:  # the responder reads the body itself (or not)
            rec = Record(self.command, self.path, self.request_version,
                         list(self.headers.items()), None)
            up._add(rec)
            try:
                early(self, rec)
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True
            return
        body, complete = self._read_body()
        rec = Record(self.command, self.path, self.request_version, list(self.headers.items()),
                     body)
        if not complete:
            up._add(rec, partial=True)
            self.close_connection = True
            return
        up._add(rec)
        fn = up._responder(self.path) or echo
        try:
            fn(self, rec)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _any


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True


class Recorder:
    """A small HTTP/1.1 upstream on a free loopback port that records every request it gets
    and answers with echo(), or with the responder registered for a text in the target.
    A request whose body ends early (the gateway gave up on the client's body) goes to
    partial, not records, and is not answered."""

    def __init__(self):
        self.records = []  # complete requests
        self.partial = []  # requests whose body was cut short (never answered)
        self.closing = threading.Event()  # responders that wait stop waiting on close()
        self._lock = threading.Lock()
        self._responders = []
        self._conns = set()
        self.srv = _Server(("127.0.0.1", 0), _Handler)
        self.srv.recorder = self
        self.port = self.srv.server_address[1]
        self.thread = threading.Thread(target=self.srv.serve_forever, kwargs={
            "poll_interval": 0.05}, daemon=True)
        self.thread.start()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def _track(self, conn, add):
        with self._lock:
            (self._conns.add if add else self._conns.discard)(conn)

    def _add(self, rec, partial=False):
        with self._lock:
            (self.partial if partial else self.records).append(rec)

    def _responder(self, target, early=False):
        with self._lock:
            for text, fn, at_head in self._responders:
                if text in target and at_head == early:
                    return fn
        return None

    def on(self, text, fn):
        """Requests whose target contains text are answered by fn(handler, record)."""
        with self._lock:
            self._responders.append((text, fn, False))
        return text

    def on_head(self, text, fn):
        """Like on(), but fn runs as soon as the head has arrived: the record's body is None
        and fn reads the body from handler.rfile itself (or leaves it)."""
        with self._lock:
            self._responders.append((text, fn, True))
        return text

    def find(self, text):
        with self._lock:
            return [r for r in self.records if text in r.target]

    def wait_for(self, text, n=1, timeout=IO_TIMEOUT):
        wait_until(lambda: len(self.find(text)) >= n, timeout)
        recs = self.find(text)
        assert len(recs) >= n, f"{len(recs)} of {n} requests with {text!r} arrived: {recs}"
        return recs

    def close(self):
        self.closing.set()
        self.srv.shutdown()
        self.srv.server_close()
        with self._lock:
            conns = list(self._conns)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def dead_port():
    """A loopback port nothing listens on (connections are refused)."""
    return free_port()
