"""Abuse at the gateway's edge (issue 15): /auth/token guessing (failures per client id and per
source address slow down, then lock out with 429; an unknown id and a wrong secret get the
same answer; shared through the session's real redis-server), the bounded Argon2 work under a
flood of wrong secrets, and duplicate credential headers (400).

Every client here connects from 127.0.0.1, so the per-address budget is raised where a test
is about the per-id one. Nothing here measures speed."""

import json
import threading

import pytest
import requests

from gateway_util import Gateway, bootstrap_clients, gateway_env
from harness import IO_TIMEOUT, RawConn
from services_util import assert_full_problem


@pytest.fixture(scope="module")
def creds(tmp_path_factory):
    return bootstrap_clients(tmp_path_factory.mktemp("guard-clients"))


def start_gw(fleet, creds, rec, **env):
    e = gateway_env(creds, f"static:rec={rec.url}", GATEWAY_SERVICES="rec", ACCESS_LOG="false",
                    UPSTREAM_CONNECT_TIMEOUT="10s", **env)
    return Gateway(fleet.start("gateway", e), creds)


def token(gw, client_id, secret, session=None):
    send = session.post if session else requests.post
    return send(gw.url("/auth/token"), data={"grant_type": "client_credentials"},
                auth=(client_id, secret), timeout=IO_TIMEOUT * 3)


def comparable(r):
    """A refusal without what differs per request (instance, trace_id)."""
    body = r.json()
    body.pop("trace_id", None)
    body.pop("instance", None)
    return r.status_code, r.headers.get("WWW-Authenticate"), r.headers.get("Retry-After"), body


def test_failures_per_id_slow_down_then_lock_out_even_the_right_secret(fleet, creds, rec):
    gw = start_gw(fleet, creds, rec, GATEWAY_AUTH_MAX_FAILURES="5", GATEWAY_AUTH_LOCKOUT="5m")
    dev = creds["dev"]
    for _ in range(5):
        r = token(gw, dev.id, "wrong")
        assert_full_problem(r, 401)
        assert r.json()["error"] == "invalid_client"
    r = token(gw, dev.id, dev.secret)  # the right secret, too late
    p = assert_full_problem(r, 429)
    assert p["error"] == "invalid_client" and "too many failed attempts" in p["detail"]
    assert 1 <= int(r.headers["Retry-After"]) <= 60  # 5 per 5 min: one refills each minute
    # another client from the same address is not locked out
    assert token(gw, "reader", creds["reader"].secret).status_code == 200
    assert gw.proc.metric("lotmesh_gateway_auth_total", outcome="failed") == 5
    assert gw.proc.metric("lotmesh_gateway_auth_total", outcome="refused") == 1


def test_unknown_id_and_wrong_secret_get_the_same_answers(fleet, creds, rec):
    gw = start_gw(fleet, creds, rec, GATEWAY_AUTH_MAX_FAILURES="4")
    known = [comparable(token(gw, "writer", "wrong")) for _ in range(5)]
    unknown = [comparable(token(gw, "nobody-at-all", "wrong")) for _ in range(5)]
    assert [k[0] for k in known] == [401, 401, 401, 401, 429]
    # Retry-After of the lockout may differ by the second it was computed in
    assert [k[:2] + (k[3],) for k in known] == [u[:2] + (u[3],) for u in unknown]


def test_failures_per_address_lock_out_every_id(fleet, creds, rec):
    gw = start_gw(fleet, creds, rec, GATEWAY_AUTH_MAX_FAILURES="100",
                  GATEWAY_AUTH_ADDRESS_MAX_FAILURES="3")
    for i in range(3):
        assert token(gw, f"guess-{i}", "wrong").status_code == 401
    r = token(gw, "dev", creds["dev"].secret)
    assert_full_problem(r, 429)


def test_failures_are_shared_by_gateways_through_redis(fleet, creds, rec, redis_server):
    env = {"GATEWAY_AUTH_MAX_FAILURES": "4", "RATE_LIMIT_URL": redis_server.url}
    a, b = start_gw(fleet, creds, rec, **env), start_gw(fleet, creds, rec, **env)
    rc = redis_server.client()
    rc.delete("lotmesh:rl:a:id:writer", "lotmesh:rl:a:ip:127.0.0.1")
    codes = [token(g, "writer", "wrong").status_code for g in (a, b, a, b)]
    assert codes == [401] * 4
    assert rc.exists("lotmesh:rl:a:id:writer")
    for g in (a, b):
        assert_full_problem(token(g, "writer", creds["writer"].secret), 429)
    rc.delete("lotmesh:rl:a:id:writer", "lotmesh:rl:a:ip:127.0.0.1")  # an operator's unlock
    assert token(a, "writer", creds["writer"].secret).status_code == 200


def test_flood_of_wrong_secrets_waits_behind_real_clients(fleet, creds, rec):
    """One verification at a time, four waiting at most: a 32-thread flood against one id
    fills its queue (the rest refused at once, without hashing); the real client's
    verification is queued ahead of the flood's and succeeds."""
    gw = start_gw(fleet, creds, rec, WORKERS="1", GATEWAY_AUTH_CONCURRENCY="1",
                  GATEWAY_AUTH_QUEUE="4", GATEWAY_AUTH_MAX_FAILURES="1000", GATEWAY_AUTH_LOCKOUT="1h",
                  GATEWAY_AUTH_ADDRESS_MAX_FAILURES="0")
    assert token(gw, "mallory", "wrong").status_code == 401  # mallory has failures now
    stop = threading.Event()
    flood = []

    def flooder():
        s = requests.Session()
        while not stop.is_set():
            flood.append(token(gw, "mallory", "wrong", session=s).status_code)

    ts = [threading.Thread(target=flooder) for _ in range(32)]
    for t in ts:
        t.start()
    try:
        from harness import poll
        assert poll(lambda: flood.count(429) > 20, timeout=30)
        good = [token(gw, "dev", creds["dev"].secret) for _ in range(3)]
        good = [(g.status_code, g.text) if g.status_code != 200 else 200 for g in good]
    finally:
        stop.set()
        for t in ts:
            t.join()
    assert good == [200, 200, 200]
    assert set(flood) <= {401, 429}


@pytest.mark.parametrize("h1, h2", [
    ("X-API-Key: {k}", "X-API-Key: {k}"),
    ("Authorization: Bearer x", "Authorization: Bearer y"),
    ("X-Api-Key: {k}", "x-api-key: other"),
])
def test_duplicate_credential_headers_are_400(fleet, creds, rec, h1, h2):
    gw = start_gw(fleet, creds, rec)
    k = creds["dev"].api_key
    head = (f"GET /api/rec/api/x HTTP/1.1\r\nHost: t\r\n{h1.format(k=k)}\r\n{h2.format(k=k)}\r\n"
            "Connection: close\r\n\r\n")
    with RawConn(gw.port) as c:
        c.send(head.encode())
        r = c.read_response()
    assert r.status == 400
    body = json.loads(r.body)
    assert "more than once" in body["detail"]
    assert not rec.find("/x")
    # and on the token endpoint
    with RawConn(gw.port) as c:
        form = b"grant_type=client_credentials"
        c.send(b"POST /auth/token HTTP/1.1\r\nHost: t\r\nAuthorization: Basic eDp5\r\n"
               b"Authorization: Basic eDp6\r\nContent-Type: application/x-www-form-urlencoded\r\n"
               b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(form), form))
        r = c.read_response()
    assert r.status == 400


# ---- CORS ----------------------------------------------------------------------------------------

CORS_ENV = {"GATEWAY_CORS_ORIGINS": "https://app.example,http://localhost:3000",
            "GATEWAY_CORS_MAX_AGE": "10m"}


def preflight(gw, path, origin, method="POST", headers="authorization, content-type"):
    h = {"Origin": origin, "Access-Control-Request-Method": method}
    if headers:
        h["Access-Control-Request-Headers"] = headers
    return requests.options(gw.url(path), headers=h, timeout=IO_TIMEOUT)


def test_cors_preflight_is_answered_by_the_gateway(fleet, creds, rec):
    gw = start_gw(fleet, creds, rec, **CORS_ENV)
    for path in ("/api/rec/api/things/1", "/auth/token"):
        r = preflight(gw, path, "https://app.example")
        assert r.status_code == 204
        assert r.headers["Access-Control-Allow-Origin"] == "https://app.example"
        assert "PATCH" in r.headers["Access-Control-Allow-Methods"].split(",")
        allowed = [h.lower() for h in r.headers["Access-Control-Allow-Headers"].split(",")]
        assert {"authorization", "content-type", "x-api-key"} <= set(allowed)
        assert r.headers["Access-Control-Max-Age"] == "600"
        assert r.headers["Vary"] == "Origin"
        assert "Access-Control-Allow-Credentials" not in r.headers
    assert not rec.find("/things/1")  # never reached the service, no credential needed


@pytest.mark.parametrize("origin, method, headers", [
    ("https://evil.example", "POST", None),
    ("https://app.example.evil", "GET", None),
    ("https://app.example", "TRACE", None),
    ("https://app.example", "POST", "x-secret-header"),
])
def test_cors_refused_preflight_has_no_cors_headers(fleet, creds, rec, origin, method, headers):
    gw = start_gw(fleet, creds, rec, **CORS_ENV)
    r = preflight(gw, "/api/rec/api/x", origin, method, headers)
    assert r.status_code == 204
    assert not [h for h in r.headers if h.lower().startswith("access-control-")], r.headers
    assert r.headers["Vary"] == "Origin"


def test_cors_actual_requests(fleet, creds, rec):
    gw = start_gw(fleet, creds, rec, GATEWAY_RATE_LIMIT="100/m", **CORS_ENV)
    ok = gw.api("GET", "/api/rec/api/y", api_key=True, headers={"Origin": "http://localhost:3000"})
    assert ok.status_code == 200
    assert ok.headers["Access-Control-Allow-Origin"] == "http://localhost:3000"
    assert "RateLimit-Remaining" in ok.headers["Access-Control-Expose-Headers"]
    assert "Origin" in ok.headers["Vary"]
    # errors are readable by the page too; other origins get nothing
    denied = requests.get(gw.url("/api/rec/api/y"), headers={"Origin": "https://app.example"},
                          timeout=IO_TIMEOUT)
    assert denied.status_code == 401
    assert denied.headers["Access-Control-Allow-Origin"] == "https://app.example"
    other = gw.api("GET", "/api/rec/api/y", api_key=True, headers={"Origin": "https://evil.example"})
    assert other.status_code == 200 and "Access-Control-Allow-Origin" not in other.headers


@pytest.mark.parametrize("path, method", [
    ("/admin/clients", "POST"),
    ("/admin/clients/reader", "PATCH"),
    ("/admin/clients/reader", "DELETE"),
    ("/admin/services", "GET"),
    ("/openapi.json", "GET"),
    ("/auth/token", "POST"),
])
def test_cors_on_the_gateways_own_paths(fleet, creds, rec, path, method):
    """Every path a page may call with a credential: preflight answered without one (allowed
    origin: the headers; other origins: none), actual answers (errors too) readable by an
    allowed origin only, Vary: Origin on both."""
    gw = start_gw(fleet, creds, rec, **CORS_ENV)
    ok = preflight(gw, path, "https://app.example", method)
    assert ok.status_code == 204, ok.text
    assert ok.headers["Access-Control-Allow-Origin"] == "https://app.example"
    assert method in ok.headers["Access-Control-Allow-Methods"].split(",")
    assert ok.headers["Vary"] == "Origin"
    evil = preflight(gw, path, "https://evil.example", method)
    assert evil.status_code == 204 and evil.headers["Vary"] == "Origin"
    assert not [h for h in evil.headers if h.lower().startswith("access-control-")]
    if path == "/auth/token":
        return
    # the read of each path with a credential, and without one (the error must be readable)
    read = path if method == "GET" else "/admin/clients"
    r = gw.api("GET", read, api_key=True, headers={"Origin": "https://app.example"})
    assert r.status_code == 200, r.text
    assert r.headers["Access-Control-Allow-Origin"] == "https://app.example"
    assert "Origin" in r.headers["Vary"]
    if read != "/openapi.json":
        denied = requests.get(gw.url(read), headers={"Origin": "https://app.example"},
                              timeout=IO_TIMEOUT)
        assert denied.status_code == 401
        assert denied.headers["Access-Control-Allow-Origin"] == "https://app.example"
    other = gw.api("GET", read, api_key=True, headers={"Origin": "https://evil.example"})
    assert other.status_code == 200 and "Access-Control-Allow-Origin" not in other.headers
    assert "Origin" in other.headers["Vary"]
    # an OPTIONS that is no preflight is refused with the methods the path serves
    plain = requests.options(gw.url(path), timeout=IO_TIMEOUT)
    assert plain.status_code == 405 and method in plain.headers["Allow"]


def test_cors_any_origin_with_credentials_echoes_the_origin(fleet, creds, rec):
    gw = start_gw(fleet, creds, rec, GATEWAY_CORS_ORIGINS="*", GATEWAY_CORS_CREDENTIALS="true")
    r = preflight(gw, "/api/rec/api/x", "https://anything.example", "GET", None)
    assert r.headers["Access-Control-Allow-Origin"] == "https://anything.example"
    assert r.headers["Access-Control-Allow-Credentials"] == "true"
    plain = start_gw(fleet, creds, rec, GATEWAY_CORS_ORIGINS="*")
    r = preflight(plain, "/api/rec/api/x", "https://anything.example", "GET", None)
    assert r.headers["Access-Control-Allow-Origin"] == "*" and "Vary" not in r.headers


def test_cors_off_by_default_options_goes_upstream(fleet, creds, rec):
    gw = start_gw(fleet, creds, rec)
    r = preflight(gw, "/api/rec/api/x", "https://app.example", "GET", None)
    assert r.status_code == 401  # an ordinary OPTIONS request: credentials required
    assert "Access-Control-Allow-Origin" not in r.headers


@pytest.mark.parametrize("env, words", [
    ({"GATEWAY_CORS_ORIGINS": "app.example"}, "GATEWAY_CORS_ORIGINS must be"),
    ({"GATEWAY_CORS_ORIGINS": "https://app.example/path"}, "GATEWAY_CORS_ORIGINS must be"),
    ({"GATEWAY_CORS_ORIGINS": "*", "GATEWAY_CORS_METHODS": "GET;POST"}, "GATEWAY_CORS_METHODS"),
    ({"GATEWAY_CORS_ORIGINS": "*", "GATEWAY_CORS_MAX_AGE": "forever"}, "GATEWAY_CORS_MAX_AGE"),
    ({"GATEWAY_AUTH_MAX_FAILURES": "-1"}, "GATEWAY_AUTH_MAX_FAILURES"),
    ({"GATEWAY_AUTH_CONCURRENCY": "0"}, "GATEWAY_AUTH_CONCURRENCY"),
])
def test_bad_edge_configuration_is_one_clear_line(run_process, creds, env, words):
    res = run_process("gateway", {"GATEWAY_CLIENTS_FILE": str(creds.clients_file),
                                  "GATEWAY_ACCESS_KEY_FILE": str(creds.access_key_file),
                                  "PORT": "0", **env})
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "configuration error" in lines[0] and words in lines[0], lines
