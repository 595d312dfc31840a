"""lotmesh-gateway through real clients (issue 5, DESIGN 3.1, 3.5): the one public entry.

Two module-scoped set-ups and a few of their own:

  real   registry, articles, two charges instances (one database file), a gateway with the
         least_outstanding balancer and one with round_robin — every service with
         SERVICE_AUTH=enabled and one shared SERVICE_TOKEN_SECRET. The seed's flow (token,
         article, charge, list, get, update, delete) through the gateway; the query string and
         the trace headers reaching articles (read back from its JSON access log); charges
         calling articles with a token; the load shared by the two charges instances; at a
         service port directly: no, bad, expired, forged token 401, wrong audience 403.
  rgw    a gateway whose instances come from SERVICE_REGISTRY_URL=static:… and point at a
         recording upstream in this process (gateway_util.Recorder), so the tests see exactly
         what arrives upstream: method, raw path and query, body, end-to-end headers; no
         hop-by-hop header, no client credential; X-Forwarded-*, X-Request-ID, a child
         traceparent; a service token that PyJWT verifies on its own. Smuggling attempts,
         bodies of 1 MB and over the limit, streamed and backpressured responses, upstream
         failures (refused 502, reset 502, cut mid-body, slow 504), unknown service 404, no
         instance 503, OAuth2 errors, API keys, read-only clients, /admin/services.

Every error is an RFC 9457 problem with instance and trace_id. Everything runs on loopback
with bounded waits; nothing here measures speed."""

import base64
import hashlib
import hmac
import json
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.parse

import jwt
import pytest
import requests

from gateway_util import (SECRET, SERVICE_ENV, Fleet, Gateway, Recorder, access_lines,
                          api_key_hash, bootstrap_clients, dead_port, echo, fleet_fixture,
                          gateway_env, new_traceparent, parse_traceparent, reply, wait_until)
from harness import IO_TIMEOUT, PeerClosed, RawConn
from services_util import assert_full_problem, unique

UNIT_LITER = 4           # seeded by articles: kg, g, t, l, ml, m, Stk, Pkg
BODY_LIMIT = 2_000_000   # MAX_BODY_BYTES of the recording gateway
SERVICE_TTL = 120        # SERVICE_TOKEN_TTL of the recording gateway, seconds
ACCESS_TTL = 60          # ACCESS_TOKEN_TTL of the recording gateway, seconds


# ---- fixtures ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def creds(tmp_path_factory):
    return bootstrap_clients(tmp_path_factory.mktemp("gw-clients"))


@pytest.fixture(scope="module")
def _rgw_fleet(tmp_path_factory):
    yield from fleet_fixture(tmp_path_factory, "gw-rec")


class RecGateway(Gateway):
    dead_port = None


@pytest.fixture(scope="module")
def rgw(rec, creds, _rgw_fleet):
    """The gateway in front of the recorder: charges_api and rec are the recorder, dead is a
    port nobody listens on, ghost has no instance, hidden is known to discovery but not
    exposed."""
    dead = dead_port()
    spec = (f"static:charges_api={rec.url};rec={rec.url};dead=http://127.0.0.1:{dead};"
            f"hidden={rec.url}")
    env = gateway_env(creds, spec, GATEWAY_SERVICES="charges_api,rec,dead,ghost",
                      MAX_BODY_BYTES=BODY_LIMIT, SERVICE_TOKEN_TTL=f"{SERVICE_TTL}s",
                      ACCESS_TOKEN_TTL=f"{ACCESS_TTL}s",
                      # the forwarding tests provoke failures on purpose, one after another:
                      # circuits are tested on gateways of their own
                      UPSTREAM_BREAKER_THRESHOLD=0, UPSTREAM_BREAKER_MIN_CALLS=100000)
    g = RecGateway(_rgw_fleet.start("gateway", env), creds)
    g.dead_port = dead
    return g


@pytest.fixture
def gw(rgw):
    assert rgw.proc.alive(), rgw.proc.stderr_tail()
    yield rgw
    assert rgw.proc.alive(), rgw.proc.stderr_tail()


class Real:
    pass


@pytest.fixture(scope="module")
def _real_fleet(tmp_path_factory):
    yield from fleet_fixture(tmp_path_factory, "gw-real")


def service_env(registry, workdir, db, ttl="1s"):
    return {**SERVICE_ENV, "SERVICE_REGISTRY_URL": registry.base_url, "SERVICE_CHECK_TTL": ttl,
            "ACCESS_LOG": "true", "WORKERS": "2", "DATABASE_URL": str(workdir / db)}


@pytest.fixture(scope="module")
def real(creds, _real_fleet):
    f = _real_fleet
    s = Real()
    s.registry = f.start("registry", {"REGISTRY_SNAPSHOT": "off", "WORKERS": "1"})
    s.articles = f.start("articles", service_env(s.registry, f.workdir, "articles.db"))
    # two charges instances of one installation share its database
    s.charges = [f.start("charges", service_env(s.registry, f.workdir, "charges.db"))
                 for _ in range(2)]
    s.gw = Gateway(f.start("gateway", gateway_env(creds, s.registry.base_url)), creds)
    s.gw_rr = Gateway(f.start("gateway", gateway_env(creds, s.registry.base_url,
                                                     GATEWAY_BALANCER="round_robin",
                                                     WORKERS="1")), creds)
    for g in (s.gw, s.gw_rr):
        assert wait_until(lambda: g.discovered("charges_api") == 2 and
                          g.discovered("articles_api") == 1, 10), g.proc.stderr_tail()
    for c in s.charges:
        assert wait_until(lambda: c.metric("lotmesh_discovery_instances",
                                           service="articles_api") == 1, 10)
    return s


# ---- small helpers ------------------------------------------------------------------------------

def raw_request(method, target, headers, body=b"", version="HTTP/1.1"):
    head = f"{method} {target} {version}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers)
    return (head + "\r\n").encode("latin-1") + body


def problem(resp, status, detail=None, trace_id=None):
    """assert_full_problem plus, when given, the trace id the client sent."""
    body = assert_full_problem(resp, status, detail)
    if trace_id:
        assert body["trace_id"] == trace_id, body
    return body


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(header, claims, key=None):
    """A JWT built by hand (PyJWT refuses alg none and HMAC with a PEM key on purpose)."""
    signing = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
    sig = b"" if key is None else hmac.new(key, signing.encode(), hashlib.sha256).digest()
    return f"{signing}.{b64url(sig)}"


def service_claims(aud, **over):
    now = int(time.time())
    c = {"iss": "gateway", "aud": aud, "sub": "blackbox", "scope": "read write", "iat": now,
         "exp": now + 300}
    c.update(over)
    return {k: v for k, v in c.items() if v is not None}


def bearer_of(record):
    authz = record.header("Authorization")
    assert authz and authz.startswith("Bearer "), record
    return authz[7:]


def pattern(n, seed=b"lotmesh"):
    """n deterministic, non-repeating-looking bytes."""
    out, i = bytearray(), 0
    while len(out) < n:
        out += hashlib.sha256(seed + i.to_bytes(8, "big")).digest()
        i += 1
    return bytes(out[:n])


# ---- first start: the clients file and dev-client.json ----------------------------------------

def test_first_start_creates_the_clients_file_and_dev_client(creds):
    first = creds.first_start
    dev = first["dev_client"]
    assert set(dev) == {"client_id", "client_secret", "api_key"}
    assert dev["client_id"] == "dev" and len(dev["client_secret"]) >= 40
    assert len(dev["api_key"]) >= 40 and dev["api_key"] != dev["client_secret"]
    assert first["dev_client_mode"] == 0o600 and first["clients_mode"] == 0o600
    (entry,) = first["clients_doc"]["clients"]
    assert entry["client_id"] == "dev" and entry["scope"] == "read write admin"
    assert entry["secret_hash"].startswith("$argon2id$")
    assert entry["api_key_hashes"] == [api_key_hash(dev["api_key"])]
    # only hashes are stored; the plain credentials are in dev-client.json alone
    for secret in (dev["client_secret"], dev["api_key"]):
        assert secret not in first["clients_text"]
        assert secret not in first["stderr"]
    assert "dev-client.json" in first["stderr"]


# ---- OAuth2 client credentials (POST /auth/token) -------------------------------------------

def test_token_with_basic_or_form_credentials(gw, creds):
    dev = creds["dev"]
    for kw in ({"auth": (dev.id, dev.secret), "data": {"grant_type": "client_credentials"}},
               {"data": {"grant_type": "client_credentials", "client_id": dev.id,
                         "client_secret": dev.secret}}):
        r = gw.proc.request("POST", "/auth/token", **kw)
        assert r.status_code == 200, r.text
        assert r.headers["Content-Type"] == "application/json"
        assert r.headers["Cache-Control"] == "no-store"
        doc = r.json()
        assert set(doc) == {"access_token", "token_type", "expires_in", "scope"}
        assert doc["token_type"] == "Bearer" and doc["expires_in"] == ACCESS_TTL
        assert doc["scope"] == "read write admin"
        # the access token works
        t = unique("tok-")
        r = gw.api("GET", f"/api/rec/api/{t}", client=None,
                   headers={"Authorization": f"Bearer {doc['access_token']}"})
        assert r.status_code == 200, r.text


def test_basic_credentials_are_form_urlencoded(gw, creds):
    """RFC 6749 2.3.1: client_id and secret are form-urlencoded before Basic encoding."""
    dev = creds["dev"]
    raw = f"{urllib.parse.quote(dev.id)}:{urllib.parse.quote(dev.secret, safe='')}"
    r = gw.proc.request("POST", "/auth/token", data={"grant_type": "client_credentials"},
                        headers={"Authorization": "Basic " + base64.b64encode(
                            raw.encode()).decode()})
    assert r.status_code == 200, r.text


def test_access_token_verifies_with_pyjwt(gw, creds):
    r = gw.token_response("reader")
    assert r.status_code == 200, r.text
    tok = r.json()["access_token"]
    assert jwt.get_unverified_header(tok)["alg"] == "HS256"
    claims = jwt.decode(tok, creds.access_key(), algorithms=["HS256"], audience="lotmesh-api",
                        issuer="lotmesh-gateway", options={"require": ["exp", "iss", "aud",
                                                                       "sub"]})
    assert claims["sub"] == "reader" and claims["scope"] == "read"
    assert abs(claims["exp"] - time.time() - ACCESS_TTL) < 30


def test_narrower_scope_on_request(gw):
    r = gw.token_response("dev", scope="read")
    assert r.status_code == 200, r.text
    assert r.json()["scope"] == "read"
    r = gw.token_response("dev", scope="write read")
    assert r.status_code == 200 and r.json()["scope"] == "write read"


def _form(gw, body, headers=None, auth=None):
    h = {"Content-Type": "application/x-www-form-urlencoded"}
    h.update(headers or {})
    return gw.proc.request("POST", "/auth/token", data=body, headers=h, auth=auth)


TOKEN_ERRORS = [
    # name, body, extra headers, basic credentials (None / "dev" / (id, secret)), status, error
    ("wrong-secret", "grant_type=client_credentials", {}, ("dev", "not-the-secret"), 401,
     "invalid_client"),
    ("unknown-client", "grant_type=client_credentials", {}, ("nobody", "DEV_SECRET"), 401,
     "invalid_client"),
    ("wrong-secret-in-form",
     "grant_type=client_credentials&client_id=dev&client_secret=not-the-secret", {}, None, 401,
     "invalid_client"),
    ("missing-credentials", "grant_type=client_credentials", {}, None, 401, "invalid_client"),
    ("missing-secret", "grant_type=client_credentials&client_id=dev", {}, None, 401,
     "invalid_client"),
    ("malformed-basic", "grant_type=client_credentials", {"Authorization": "Basic !!!"}, None,
     401, "invalid_client"),
    ("unsupported-grant", "grant_type=password&username=dev&password=x", {}, "dev", 400,
     "unsupported_grant_type"),
    ("authorization-code-grant", "grant_type=authorization_code&code=x", {}, "dev", 400,
     "unsupported_grant_type"),
    ("missing-grant", "", {}, "dev", 400, "invalid_request"),
    ("json-body", '{"grant_type": "client_credentials"}', {"Content-Type": "application/json"},
     "dev", 400, "invalid_request"),
    ("text-body", "grant_type=client_credentials", {"Content-Type": "text/plain"}, "dev", 400,
     "invalid_request"),
    ("credentials-twice", "grant_type=client_credentials&client_id=dev", {}, "dev", 400,
     "invalid_request"),
    ("duplicate-parameter", "grant_type=client_credentials&grant_type=client_credentials", {},
     "dev", 400, "invalid_request"),
    ("scope-beyond-the-client", "grant_type=client_credentials&scope=read%20write", {},
     ("reader", "DEV_SECRET"), 400, "invalid_scope"),
    ("unknown-scope", "grant_type=client_credentials&scope=superuser", {}, "dev", 400,
     "invalid_scope"),
]


@pytest.mark.parametrize("name,body,headers,basic,status,error", TOKEN_ERRORS,
                         ids=[c[0] for c in TOKEN_ERRORS])
def test_token_errors(gw, creds, name, body, headers, basic, status, error):
    if basic == "dev":
        basic = (creds["dev"].id, creds["dev"].secret)
    elif basic:
        basic = (basic[0], creds["dev"].secret if basic[1] == "DEV_SECRET" else basic[1])
    tid, _, tp = new_traceparent()
    h = {"traceparent": tp}
    h.update(headers)
    if "Content-Type" in headers:
        r = gw.proc.request("POST", "/auth/token", data=body.encode(), headers=h, auth=basic)
    else:
        r = _form(gw, body.encode(), h, basic)
    doc = problem(r, status, trace_id=tid)
    assert doc["error"] == error, doc
    assert r.headers.get("Cache-Control") == "no-store"
    assert "access_token" not in r.text
    if status == 401:
        assert r.headers["WWW-Authenticate"].startswith("Basic"), r.headers


def test_token_endpoint_without_body_type_or_with_get(gw, creds):
    dev = creds["dev"]
    r = gw.proc.request("POST", "/auth/token", data=b"grant_type=client_credentials",
                        auth=(dev.id, dev.secret))
    assert problem(r, 400)["error"] == "invalid_request"
    r = gw.proc.get("/auth/token")
    problem(r, 405)
    assert "POST" in r.headers["Allow"]


# ---- credentials on /api/ ---------------------------------------------------------------------

def _api_auth_cases(creds):
    now = int(time.time())
    key = creds.access_key()
    access = {"iss": "lotmesh-gateway", "aud": "lotmesh-api", "sub": "dev",
              "scope": "read write admin", "iat": now, "exp": now + 300}
    return {
        "none": ({}, 401, None),
        "empty-bearer": ({"Authorization": "Bearer "}, 401, None),
        "garbage-bearer": ({"Authorization": "Bearer not.a.token"}, 401, "invalid_token"),
        "basic-scheme": ({"Authorization": "Basic " + base64.b64encode(
            f"dev:{creds['dev'].secret}".encode()).decode()}, 401, None),
        "unknown-api-key": ({"X-API-Key": "no-such-key-" + "x" * 30}, 401, None),
        "expired-access-token": ({"Authorization": "Bearer " + jwt.encode(
            {**access, "iat": now - 600, "exp": now - 120}, key, algorithm="HS256")}, 401,
            "invalid_token"),
        "access-token-other-key": ({"Authorization": "Bearer " + jwt.encode(
            access, SECRET, algorithm="HS256")}, 401, "invalid_token"),
        "access-token-alg-none": ({"Authorization": "Bearer " + forge(
            {"alg": "none", "typ": "JWT"}, access)}, 401, "invalid_token"),
        "access-token-wrong-audience": ({"Authorization": "Bearer " + jwt.encode(
            {**access, "aud": "charges_api"}, key, algorithm="HS256")}, 401, "invalid_token"),
        "service-token": ({"Authorization": "Bearer " + jwt.encode(
            service_claims("charges_api"), SECRET, algorithm="HS256")}, 401, "invalid_token"),
    }


@pytest.mark.parametrize("case", ["none", "empty-bearer", "garbage-bearer", "basic-scheme",
                                  "unknown-api-key", "expired-access-token",
                                  "access-token-other-key", "access-token-alg-none",
                                  "access-token-wrong-audience", "service-token"])
def test_api_refuses_without_valid_credentials(gw, rec, creds, case):
    headers, status, www_error = _api_auth_cases(creds)[case]
    t = unique("noauth-")
    tid, _, tp = new_traceparent()
    for method in ("GET", "POST"):
        r = gw.api(method, f"/api/rec/api/{t}", client=None, headers={**headers, "traceparent": tp},
                   data=b"{}")
        problem(r, status, trace_id=tid)
        www = r.headers.get("WWW-Authenticate", "")
        assert www.startswith("Bearer"), r.headers
        if www_error:
            assert f'error="{www_error}"' in www
    assert rec.find(t) == []


def test_both_credentials_at_once_is_a_bad_request(gw, rec):
    t = unique("both-")
    h = {**gw.auth("dev"), **gw.auth("dev", api_key=True)}
    problem(gw.api("GET", f"/api/rec/api/{t}", client=None, headers=h), 400)
    assert rec.find(t) == []


def test_api_key_and_minted_access_token_authenticate(gw, rec, creds):
    t = unique("key-")
    r = gw.api("GET", f"/api/rec/api/{t}/key", api_key=True)
    assert r.status_code == 200, r.text
    # an access token the gateway's key signed is as good as one from /auth/token
    now = int(time.time())
    tok = jwt.encode({"iss": "lotmesh-gateway", "aud": "lotmesh-api", "sub": "writer",
                      "scope": "read", "iat": now, "exp": now + 60}, creds.access_key(),
                     algorithm="HS256")
    h = {"Authorization": f"Bearer {tok}"}
    assert gw.api("GET", f"/api/rec/api/{t}/minted", client=None, headers=h).status_code == 200
    problem(gw.api("POST", f"/api/rec/api/{t}/minted-post", client=None, headers=h, data=b"{}"), 403)
    recs = rec.find(t)
    assert [r.target for r in recs] == [f"/api/{t}/key", f"/api/{t}/minted"]
    subs = [jwt.decode(bearer_of(r), SECRET, algorithms=["HS256"], audience="rec")["sub"]
            for r in recs]
    assert subs == ["dev", "writer"]


READ_ONLY = [("reader", "token"), ("reader", "api_key"), ("dev-scope-read", "token")]


@pytest.mark.parametrize("who,how", READ_ONLY, ids=["reader-token", "reader-api-key",
                                                    "dev-token-with-scope-read"])
def test_read_only_client_gets_403_on_writes(gw, rec, who, how):
    if who == "dev-scope-read":
        h = gw.auth("dev", scope="read")
    else:
        h = gw.auth(who, api_key=how == "api_key")
    t = unique("ro-")
    for method in ("POST", "PUT", "PATCH", "DELETE"):
        r = gw.api(method, f"/api/rec/api/{t}/{method}", client=None, headers=h, json={"a": 1})
        problem(r, 403)
        assert 'error="insufficient_scope"' in r.headers["WWW-Authenticate"]
    assert rec.find(t) == []
    for method in ("GET", "HEAD", "OPTIONS"):
        r = gw.api(method, f"/api/rec/api/{t}/{method}", client=None, headers=h)
        assert r.status_code == 200, (method, r.text)
    recs = rec.find(t)
    assert [r.method for r in recs] == ["GET", "HEAD", "OPTIONS"]
    for r in recs:
        claims = jwt.decode(bearer_of(r), SECRET, algorithms=["HS256"], audience="rec")
        assert claims["scope"] == "read"


# ---- /admin/services --------------------------------------------------------------------------

def test_admin_services_requires_the_admin_scope(gw, rec):
    for h in (gw.auth("dev"), gw.auth("dev", api_key=True)):
        r = requests.get(gw.url("/admin/services"), headers=h, timeout=IO_TIMEOUT)
        assert r.status_code == 200, r.text
        doc = r.json()
        assert doc["balancer"] == "least_outstanding"
        by_name = {s["name"]: s for s in doc["services"]}
        assert set(by_name) == {"charges_api", "rec", "dead", "ghost"}
        assert "charges" in by_name["charges_api"]["aliases"]
        (inst,) = by_name["rec"]["instances"]
        assert inst["host"] == "127.0.0.1" and inst["port"] == rec.port
        assert inst["health"] == "passing" and inst["in_flight"] >= 0
        assert by_name["ghost"]["instances"] == []
        assert {"requests", "responses", "connects", "reuses", "connections_open",
                "connections_idle", "in_flight"} <= set(doc["upstream_pool"])
    for who in ("writer", "reader"):
        for api_key in (False, True):
            r = requests.get(gw.url("/admin/services"), headers=gw.auth(who, api_key=api_key),
                             timeout=IO_TIMEOUT)
            problem(r, 403, "admin")
    r = requests.get(gw.url("/admin/services"), timeout=IO_TIMEOUT)
    problem(r, 401)
    assert r.headers["WWW-Authenticate"].startswith("Bearer")
    r = requests.get(gw.url("/admin/services"), headers={"Authorization": "Bearer x.y.z"},
                     timeout=IO_TIMEOUT)
    problem(r, 401)
    problem(requests.post(gw.url("/admin/services"), headers=gw.auth("dev"),
                          timeout=IO_TIMEOUT), 405)


# ---- what arrives upstream ---------------------------------------------------------------------

def test_request_reaches_the_upstream_intact(gw, rec, creds):
    t = unique("intact-")
    tid, sid, tp = new_traceparent()
    target = f"/{t}/a%20b/c%2Fd/%C3%A4;p=1?x=1&y=%C3%A4&x=2&empty=&plus=a+b&sl=%2F&q=%22x%22"
    body = '{"bezeichnung": "Käse", "n": 1}'.encode()
    rid = f"rid-{t}"
    hop = [("Connection", "keep-alive, X-Hop-Named"), ("X-Hop-Named", "secret-hop"),
           ("Connection", "X-Hop-Second"), ("X-Hop-Second", "named-in-a-second-field"),
           ("Keep-Alive", "timeout=5"), ("TE", "trailers"), ("Trailer", "X-Checksum"),
           ("Proxy-Authorization", "Basic Zm9vOmJhcg=="), ("Proxy-Connection", "keep-alive")]
    e2e = [("Content-Type", "application/json; charset=utf-8"), ("Accept", "application/json"),
           ("X-Custom", "one"), ("X-Custom", "two"), ("Cookie", "a=1; b=2"),
           ("If-Match", '"3"'), ("Idempotency-Key", f"key-{t}"), ("User-Agent", "blackbox/1"),
           ("Accept-Language", "de-DE, en;q=0.5"), ("X-Empty", "")]
    fwd = [("X-Forwarded-For", "203.0.113.7"), ("X-Forwarded-Host", "evil.example"),
           ("X-Forwarded-Proto", "https"), ("X-Request-ID", rid), ("traceparent", tp)]
    headers = [("Host", "gateway.example:8443"), ("X-API-Key", creds["dev"].api_key),
               ("Content-Length", str(len(body)))] + hop + e2e + fwd
    with RawConn(gw.port) as c:
        c.send(raw_request("PATCH", f"/api/rec/api{target}", headers, body))
        resp = c.read_response()
    assert resp.status == 200, resp
    (r,) = rec.find(t)
    assert (r.method, r.target, r.version, r.body) == ("PATCH", "/api" + target, "HTTP/1.1", body)
    # end-to-end headers pass, in order, duplicates kept
    for name in {k for k, _ in e2e}:
        assert r.header_all(name) == [v for k, v in e2e if k == name], (name, r.headers)
    # hop-by-hop headers and the client's credentials do not
    names = r.names()
    for name in ("connection", "x-hop-named", "x-hop-second", "keep-alive", "te", "trailer",
                 "proxy-authorization", "proxy-connection", "x-api-key", "transfer-encoding"):
        assert name not in names, (name, r.headers)
    assert "secret-hop" not in json.dumps(r.headers)
    assert creds["dev"].api_key not in json.dumps(r.headers)
    # rebuilt: Host is the upstream's, Content-Length the body's
    assert r.header_all("Host") == [f"127.0.0.1:{rec.port}"]
    assert r.header_all("Content-Length") == [str(len(body))]
    # set by the gateway, once each
    assert r.header_all("X-Forwarded-For") == ["203.0.113.7, 127.0.0.1"]
    assert r.header_all("X-Forwarded-Proto") == ["http"]
    assert r.header_all("X-Forwarded-Host") == ["gateway.example:8443"]
    assert r.header_all("X-Request-ID") == [rid]
    (fwd_tp,) = r.header_all("traceparent")
    f_tid, f_span, f_flags = parse_traceparent(fwd_tp)
    assert f_tid == tid and f_flags == "01"
    assert f_span != sid  # a child span: same trace, new parent-id
    # the gateway's own log line carries the trace, and a span that is neither
    (line,) = wait_until(lambda: access_lines(gw.proc, rid))
    assert line["trace_id"] == tid and line["span_id"] not in (sid, f_span)
    assert line["path"] == f"/api/rec/api{target.split('?')[0]}" and line["status"] == 200
    assert resp.header_all("X-Request-ID") == [rid]


@pytest.mark.parametrize("method", ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
def test_every_method_is_forwarded(gw, rec, method):
    t = unique(f"m-{method}-")
    body = f"body of {method}".encode() if method in ("POST", "PUT", "PATCH", "DELETE") else b""
    r = gw.api(method, f"/api/rec/api/{t}?k=v", data=body or None)
    assert r.status_code == 200, r.text
    (got,) = rec.find(t)
    assert (got.method, got.target, got.body) == (method, f"/api/{t}?k=v", body)
    if method == "HEAD":
        assert r.content == b"" and int(r.headers["Content-Length"]) > 0
    else:
        doc = r.json()
        assert doc["method"] == method and doc["body_len"] == len(body)


def test_forwarded_for_chain_of_several_headers(gw, rec, creds):
    """Several X-Forwarded-For fields are one list (RFC 9110 5.3): all of it is kept."""
    t = unique("xff-")
    headers = [("Host", "gw"), ("X-API-Key", creds["dev"].api_key),
               ("X-Forwarded-For", "198.51.100.1"),
               ("X-Forwarded-For", "203.0.113.9, 192.0.2.4")]
    with RawConn(gw.port) as c:
        c.send(raw_request("GET", f"/api/rec/api/{t}", headers))
        assert c.read_response().status == 200
    (r,) = rec.find(t)
    assert r.header_all("X-Forwarded-For") == ["198.51.100.1, 203.0.113.9, 192.0.2.4, 127.0.0.1"]
    # a long chain is kept whole: the client's own address, last, is never cut off
    chain = ", ".join(f"10.0.{i // 256}.{i % 256}" for i in range(100))
    r = gw.api("GET", f"/api/rec/api/{t}-long", headers={"X-Forwarded-For": chain})
    assert r.status_code == 200
    (r,) = rec.find(f"{t}-long")
    assert r.header_all("X-Forwarded-For") == [chain + ", 127.0.0.1"]


def test_trace_and_request_id_when_the_client_sends_none_or_bad_ones(gw, rec):
    t = unique("notrace-")
    r = gw.api("GET", f"/api/rec/api/{t}/1")
    assert r.status_code == 200
    rid = r.headers["X-Request-ID"]
    (got,) = rec.find(f"{t}/1")
    assert got.header_all("X-Request-ID") == [rid]
    f_tid, _, flags = parse_traceparent(got.header("traceparent"))
    (line,) = wait_until(lambda: access_lines(gw.proc, rid))
    assert line["trace_id"] == f_tid
    # a malformed traceparent starts a new trace; a request id with spaces is replaced
    r = gw.api("GET", f"/api/rec/api/{t}/2", headers={"traceparent": "00-xyz-bad-01",
                                                 "X-Request-ID": "has spaces and ü"})
    assert r.status_code == 200
    (got,) = rec.find(f"{t}/2")
    parse_traceparent(got.header("traceparent"))
    assert got.header("X-Request-ID") == r.headers["X-Request-ID"] != "has spaces and ü"
    # the sampled flag is kept as the client set it
    tid, sid, tp = new_traceparent(flags="00")
    assert gw.api("GET", f"/api/rec/api/{t}/3", headers={"traceparent": tp}).status_code == 200
    (got,) = rec.find(f"{t}/3")
    assert parse_traceparent(got.header("traceparent"))[0::2] == (tid, "00")


def test_alias_resolves_to_the_service(gw, rec):
    t = unique("alias-")
    r = gw.api("GET", f"/api/charges/api/{t}/x")  # GATEWAY_ALIASES default: charges=charges_api
    assert r.status_code == 200, r.text
    (got,) = rec.find(t)
    assert got.target == f"/api/{t}/x"
    assert jwt.decode(bearer_of(got), SECRET, algorithms=["HS256"],
                      audience="charges_api")["aud"] == "charges_api"


def test_chunked_request_body_arrives_whole_and_framed_once(gw, rec, creds):
    t = unique("chunked-")
    chunks = [b"hello ", b"chunked ", b"world" * 1000]
    body = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"
    headers = [("Host", "gw"), ("X-API-Key", creds["dev"].api_key),
               ("Transfer-Encoding", "chunked"), ("Content-Type", "text/plain")]
    with RawConn(gw.port) as c:
        c.send(raw_request("POST", f"/api/rec/api/{t}", headers, body))
        assert c.read_response().status == 200
    (r,) = rec.find(t)
    assert r.body == b"".join(chunks)
    cl, te = r.header_all("Content-Length"), r.header_all("Transfer-Encoding")
    assert (cl, te) in (([str(len(r.body))], []), ([], ["chunked"])), r.headers


def test_a_body_that_looks_like_a_request_stays_a_body(gw, rec, creds):
    t = unique("inner-")
    inner = (f"GET /{t}-smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
             f"GET /{t}-smuggled2 HTTP/1.1\r\nHost: x\r\n\r\n").encode()
    headers = [("Host", "gw"), ("X-API-Key", creds["dev"].api_key),
               ("Content-Length", str(len(inner)))]
    with RawConn(gw.port) as c:
        c.send(raw_request("POST", f"/api/rec/api/{t}-outer", headers, inner))
        assert c.read_response().status == 200
    (r,) = rec.wait_for(t)
    assert r.target == f"/api/{t}-outer" and r.body == inner
    assert gw.api("GET", f"/api/rec/api/{t}-sentinel").status_code == 200
    assert [x.target for x in rec.find(t)] == [f"/api/{t}-outer", f"/api/{t}-sentinel"]


# ---- smuggling is refused at the gateway -------------------------------------------------------

def _smuggle_cases(t, key):
    hidden = (f"GET /api/rec/api/{t}-smuggled HTTP/1.1\r\nHost: gw\r\nX-API-Key: {key}\r\n\r\n"
              ).encode()
    chunk = b"%x\r\n%s\r\n0\r\n\r\n" % (len(hidden), hidden)
    return {
        "cl-te": ([("Content-Length", str(5 + len(hidden))), ("Transfer-Encoding", "chunked")],
                  b"0\r\n\r\n" + hidden),
        "te-cl": ([("Transfer-Encoding", "chunked"), ("Content-Length", "4")], chunk),
        "duplicate-cl": ([("Content-Length", "0"), ("Content-Length", str(len(hidden)))],
                         hidden),
        "cl-list": ([("Content-Length", f"0, {len(hidden)}")], hidden),
        "obs-fold": ([("X-Note", "a\r\n folded")], b""),
        "obs-fold-te": ([("Content-Length", "0"), ("Transfer-Encoding", "\r\n chunked")],
                        chunk),
        "te-space-before-colon": ([("Transfer-Encoding ", "chunked"), ("Content-Length", "0")],
                                  chunk),
        "te-chunked-not-last": ([("Transfer-Encoding", "chunked, identity")], chunk),
        "te-twice": ([("Transfer-Encoding", "chunked"), ("Transfer-Encoding", "chunked")], chunk),
        "te-unknown": ([("Transfer-Encoding", "xchunked")], chunk),
        "bare-lf-te": ([("X-A", "1\nTransfer-Encoding: chunked")], chunk),
    }


SMUGGLE = ["cl-te", "te-cl", "duplicate-cl", "cl-list", "obs-fold", "obs-fold-te",
           "te-space-before-colon", "te-chunked-not-last", "te-twice", "te-unknown",
           "bare-lf-te"]


@pytest.mark.parametrize("case", SMUGGLE)
def test_smuggling_is_refused_and_never_reaches_a_service(gw, rec, creds, case):
    t = unique("smuggle-")
    key = creds["dev"].api_key
    extra, body = _smuggle_cases(t, key)[case]
    headers = [("Host", "gw"), ("X-API-Key", key)] + extra
    with RawConn(gw.port) as c:
        c.send(raw_request("POST", f"/api/rec/api/{t}-outer", headers, body))
        resp = c.read_response()
        assert resp.status == 400, resp
        problem(resp, 400)
        assert c.wait_closed(), "the connection stays open after a framing error"
    # a request after it (on a new connection) arrives; nothing of the refused one did
    assert gw.api("GET", f"/api/rec/api/{t}-sentinel").status_code == 200
    assert [r.target for r in rec.find(t)] == [f"/api/{t}-sentinel"]


# ---- bodies -------------------------------------------------------------------------------------

def test_one_megabyte_passes_both_ways(gw, rec):
    t = unique("mb-")
    rec.on(f"{t}-back", lambda h, r: reply(h, 200, r.body, ctype="application/octet-stream"))
    body = pattern(1 << 20)
    r = gw.api("POST", f"/api/rec/api/{t}-back", data=body,
               headers={"Content-Type": "application/octet-stream"}, timeout=30)
    assert r.status_code == 200
    assert r.headers["Content-Length"] == str(len(body)) and r.content == body
    (got,) = rec.find(t)
    assert got.body == body and got.header_all("Content-Length") == [str(1 << 20)]


def test_body_limit_boundary_and_413(gw, rec, creds):
    t = unique("limit-")
    r = gw.api("PUT", f"/api/rec/api/{t}-at", data=pattern(BODY_LIMIT), timeout=30)
    assert r.status_code == 200 and r.json()["body_len"] == BODY_LIMIT
    r = gw.api("PUT", f"/api/rec/api/{t}-over", data=pattern(BODY_LIMIT + 1), timeout=30)
    problem(r, 413)
    # declared over the limit with Expect: 100-continue: refused before the body is sent
    headers = [("Host", "gw"), ("X-API-Key", creds["dev"].api_key),
               ("Content-Length", str(BODY_LIMIT + 1)), ("Expect", "100-continue")]
    with RawConn(gw.port) as c:
        c.send(raw_request("POST", f"/api/rec/api/{t}-expect", headers))
        problem(c.read_final_response(), 413)
    # chunked, over the limit only once the chunks add up
    piece = b"x" * 500_000
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for _ in range(5)) + b"0\r\n\r\n"
    headers = [("Host", "gw"), ("X-API-Key", creds["dev"].api_key),
               ("Transfer-Encoding", "chunked")]
    with RawConn(gw.port) as c:
        try:
            c.send(raw_request("POST", f"/api/rec/api/{t}-chunked", headers, chunked))
        except (BrokenPipeError, ConnectionResetError):
            pass  # the gateway may answer and close before all of it is sent
        problem(c.read_final_response(), 413)
    # the streamed body may have begun upstream, but no request there ever completed, and
    # the next one arrives whole (a cut upstream connection is not used again)
    assert gw.api("POST", f"/api/rec/api/{t}-next", data=b"next").json()["body_len"] == 4
    assert [r.target for r in rec.find(t)] == [f"/api/{t}-at", f"/api/{t}-next"]


def test_request_body_streams_to_the_upstream(gw, rec, creds):
    """The upstream gets the head and the first bytes while the client still sends."""
    t = unique("reqstream-")

    def respond(h, r):
        body = h.rfile.read(int(h.headers["Content-Length"]))
        reply(h, 200, body, ctype="application/octet-stream")

    rec.on_head(t, respond)
    with RawConn(gw.port) as c:
        c.send(raw_request("POST", f"/api/rec/api/{t}", [("Host", "gw"),
                                                    ("X-API-Key", creds["dev"].api_key),
                                                    ("Content-Length", "20")], b"0123456789"))
        (got,) = rec.wait_for(t)  # before the rest of the body was sent
        assert got.header_all("Content-Length") == ["20"]
        c.send(b"abcdefghij")
        resp = c.read_response()
        assert resp.status == 200 and resp.body == b"0123456789abcdefghij"


def test_expect_100_continue_is_answered_by_the_gateway(gw, rec, creds):
    t = unique("expect-")
    with RawConn(gw.port) as c:
        c.send(raw_request("PUT", f"/api/rec/api/{t}", [("Host", "gw"),
                                                   ("X-API-Key", creds["dev"].api_key),
                                                   ("Content-Length", "5"),
                                                   ("Expect", "100-continue")]))
        assert c.read_response().status == 100
        c.send(b"hello")
        resp = c.read_response()
        assert resp.status == 200 and resp.json()["body_len"] == 5
    (r,) = rec.find(t)
    assert r.body == b"hello" and r.header("Expect") is None


def test_slow_upstream_reader_holds_the_client_back(start_process, rec, creds):
    """Backpressure on the request body: while the upstream reads nothing, the client's
    sending stalls far below the size of its body; then all of it arrives upstream."""
    g = Gateway(start_process("gateway", gateway_env(
        creds, f"static:rec={rec.url}", GATEWAY_SERVICES="rec", MAX_BODY_BYTES=str(1 << 30),
        WORKERS="1")), creds)
    t = unique("reqbp-")
    total = 96 << 20
    go, got = threading.Event(), {}

    def respond(h, r):
        go.wait(30)
        digest, n, want = hashlib.sha256(), 0, int(h.headers["Content-Length"])
        while n < want:
            d = h.rfile.read(min(1 << 20, want - n))
            if not d:
                break
            digest.update(d)
            n += len(d)
        got["n"], got["sha"] = n, digest.hexdigest()
        reply(h, 200, b"ok", ctype="text/plain")

    rec.on_head(t, respond)
    block = pattern(1 << 16)
    with RawConn(g.port, timeout=60) as c:
        c.send(raw_request("POST", f"/api/rec/api/{t}", [("Host", "gw"),
                                                    ("X-API-Key", creds["dev"].api_key),
                                                    ("Content-Length", str(total))]))
        rec.wait_for(t)
        c.sock.setblocking(False)
        sent, progress, deadline = 0, time.monotonic(), time.monotonic() + 20
        while time.monotonic() - progress < 1.0 and time.monotonic() < deadline:
            try:
                sent += c.sock.send(block[sent % len(block):])
                progress = time.monotonic()
            except BlockingIOError:
                time.sleep(0.01)
        assert sent <= total // 2, f"{sent} of {total} bytes taken while the upstream reads nothing"
        go.set()
        c.sock.setblocking(True)
        c.sock.settimeout(60)
        while sent < total:
            sent += c.sock.send(block[sent % len(block):])
        resp = c.read_response(timeout=60)
        assert resp.status == 200 and resp.body == b"ok"
    expect = hashlib.sha256()
    for _ in range(total // len(block)):
        expect.update(block)
    assert got == {"n": total, "sha": expect.hexdigest()}


def test_client_gone_mid_body_cuts_the_upstream_request(gw, rec, creds):
    t = unique("gonebody-")
    seen, done = {}, threading.Event()

    def respond(h, r):
        want, body = int(h.headers["Content-Length"]), b""
        while len(body) < want:
            d = h.rfile.read1(want - len(body))
            if not d:
                break
            body += d
        seen["body"] = body
        done.set()
        h.close_connection = True

    rec.on_head(t, respond)
    with RawConn(gw.port) as c:
        c.send(raw_request("POST", f"/api/rec/api/{t}", [("Host", "gw"),
                                                    ("X-API-Key", creds["dev"].api_key),
                                                    ("Content-Length", "1000")], b"x" * 100))
        rec.wait_for(t)
    assert done.wait(5), "the upstream still waits for a body whose client is gone"
    assert seen["body"] == b"x" * 100
    assert gw.api("POST", f"/api/rec/api/{unique('after-')}", data=b"whole").json()["body_len"] == 5
    gw.proc.assert_healthy()


def test_upstream_answering_before_the_body_is_relayed(gw, rec, creds):
    t = unique("early-")

    def respond(h, r):  # refuses at once without reading the body, then closes gracefully
        reply(h, 403, b'{"refused": true}', headers=[("Connection", "close")])
        h.connection.shutdown(socket.SHUT_WR)
        h.connection.settimeout(5)
        try:  # a lingering close: an unread body would make the close a reset
            while h.connection.recv(1 << 16):
                pass
        except OSError:
            pass
        h.close_connection = True

    rec.on_head(t, respond)
    with RawConn(gw.port) as c:
        c.send(raw_request("POST", f"/api/rec/api/{t}", [("Host", "gw"),
                                                    ("X-API-Key", creds["dev"].api_key),
                                                    ("Content-Length", "1000000")],
                           b"x" * 100_000))
        resp = c.read_response()
        assert resp.status == 403 and resp.json() == {"refused": True}
        assert c.wait_closed()  # the rest of the body is not read: the connection ends
    gw.proc.assert_healthy()


# ---- responses ---------------------------------------------------------------------------------

def test_response_status_and_end_to_end_headers_relayed(gw, rec):
    t = unique("resp-")

    def respond(h, r):
        body = b'{"id": 7}'
        h.send_response(201)
        for k, v in [("Content-Type", "application/vnd.lotmesh+json"),
                     ("Location", "/api/v1/thing/7"), ("ETag", '"7"'),
                     ("Set-Cookie", "a=1; Path=/"), ("Set-Cookie", "b=2; Path=/"),
                     ("Cache-Control", "no-cache"), ("X-Total-Count", "7"),
                     ("X-Request-ID", "made-up-upstream"), ("Connection", "X-Hop-Resp"),
                     ("X-Hop-Resp", "1"), ("Connection", "X-Hop-Second"),
                     ("X-Hop-Second", "1"), ("Keep-Alive", "timeout=5"),
                     ("Proxy-Authenticate", "Basic realm=x"), ("Trailer", "X-Sum"),
                     ("Content-Length", str(len(body)))]:
            h.send_header(k, v)
        h.end_headers()
        h.wfile.write(body)

    rec.on(f"{t}-respond", respond)
    rid = f"rid-{t}"
    with RawConn(gw.port) as c:
        c.send(raw_request("POST", f"/api/rec/api/{t}-respond",
                           [("Host", "gw"), ("X-API-Key", gw.creds["dev"].api_key),
                            ("X-Request-ID", rid), ("Content-Length", "2")], b"{}"))
        resp = c.read_response()
        assert resp.status == 201 and resp.body == b'{"id": 7}'
        assert resp.header_all("Content-Type") == ["application/vnd.lotmesh+json"]
        # the service's own path, rewritten into the gateway's URL space
        assert resp.header_all("Location") == ["/api/rec/api/v1/thing/7"]
        assert resp.header_all("ETag") == ['"7"']
        assert resp.header_all("Set-Cookie") == ["a=1; Path=/", "b=2; Path=/"]
        assert resp.header_all("Cache-Control") == ["no-cache"]
        assert resp.header_all("X-Total-Count") == ["7"]
        assert resp.header_all("X-Request-ID") == [rid]
        assert resp.header_all("Content-Length") == ["9"]
        assert len(resp.header_all("Date")) == 1 and len(resp.header_all("Server")) == 1
        for name in ("X-Hop-Resp", "X-Hop-Second", "Keep-Alive", "Proxy-Authenticate",
                     "Trailer"):
            assert resp.header(name) is None, (name, resp.header_list)
        assert (resp.header("Connection") or "").lower() in ("", "keep-alive")
        # the connection is still good for the next request
        c.send(raw_request("GET", f"/api/rec/api/{t}-next",
                           [("Host", "gw"), ("X-API-Key", gw.creds["dev"].api_key)]))
        assert c.read_response().status == 200


def test_bodiless_responses_keep_the_connection_in_step(gw, rec):
    t = unique("bodiless-")
    rec.on(f"{t}-204", lambda h, r: reply(h, 204, ctype=None, headers=[("X-Done", "1")]))
    rec.on(f"{t}-304", lambda h, r: reply(h, 304, ctype=None, headers=[("ETag", '"5"')]))
    rec.on(f"{t}-head", lambda h, r: reply(h, 200, b"z" * 1234, ctype="text/plain"))
    key = gw.creds["dev"].api_key
    with RawConn(gw.port) as c:
        for method, path, status in (("DELETE", f"{t}-204", 204), ("GET", f"{t}-304", 304),
                                     ("HEAD", f"{t}-head", 200), ("GET", f"{t}-head", 200)):
            c.send(raw_request(method, f"/api/rec/api/{path}", [("Host", "gw"), ("X-API-Key", key)]))
            resp = c.read_response(head=method == "HEAD")
            assert resp.status == status, resp
            if status == 204:
                assert resp.header("X-Done") == "1" and resp.body == b""
                assert resp.header("Content-Length") in (None, "0")
                assert resp.header("Transfer-Encoding") is None
            elif status == 304:
                assert resp.header("ETag") == '"5"' and resp.body == b""
            elif method == "HEAD":
                assert resp.header("Content-Length") == "1234"
            else:
                assert resp.body == b"z" * 1234
        assert c.is_open_now() and c.buf == b""


def chunked_upstream(parts):
    """A recorder handler answering 200 with parts as chunks of a chunked body."""
    def handler(h, r):
        h.send_response(200)
        h.send_header("Content-Type", "text/plain")
        h.send_header("Transfer-Encoding", "chunked")
        h.end_headers()
        for p in parts:
            h.wfile.write(b"%x\r\n%s\r\n" % (len(p), p))
        h.wfile.write(b"0\r\n\r\n")
    return handler


def test_chunked_and_close_delimited_upstream_bodies(gw, rec):
    t = unique("framing-")
    parts = [b"alpha-", b"beta-" * 1000, b"gamma"]

    chunked = chunked_upstream(parts)

    def close_delimited(h, r):
        h.send_response(200)
        h.send_header("Content-Type", "text/plain")
        h.send_header("Connection", "close")
        h.end_headers()
        for p in parts:
            h.wfile.write(p)
        h.close_connection = True

    rec.on(f"{t}-chunked", chunked)
    rec.on(f"{t}-close", close_delimited)
    for path in (f"{t}-chunked", f"{t}-close"):
        r = gw.api("GET", f"/api/rec/api/{path}")
        assert r.status_code == 200 and r.content == b"".join(parts), path
        assert r.headers.get("Connection", "").lower() != "close"


def test_http10_client_gets_a_close_delimited_body(gw, rec, creds):
    t = unique("h10-")
    parts = [b"one-", b"two-" * 500, b"three"]

    chunked = chunked_upstream(parts)

    rec.on(t, chunked)
    with RawConn(gw.port) as c:
        c.send(raw_request("GET", f"/api/rec/api/{t}", [("X-API-Key", creds["dev"].api_key)],
                           version="HTTP/1.0"))
        resp = c.read_response()
        assert resp.status == 200 and resp.body == b"".join(parts)
        assert resp.header("Transfer-Encoding") is None
        assert c.wait_closed()
    (r,) = rec.find(t)
    assert r.header("X-Forwarded-Host") is None  # the client sent no Host


def test_pipelined_requests_are_answered_in_order(gw, rec, creds):
    t = unique("pipe-")
    rec.on(f"{t}-0", lambda h, r: (time.sleep(0.3), echo(h, r)))  # the first is the slowest
    key = creds["dev"].api_key
    with RawConn(gw.port) as c:
        c.send(b"".join(raw_request("GET", f"/api/rec/api/{t}-{i}",
                                    [("Host", "gw"), ("X-API-Key", key),
                                     ("X-Request-ID", f"{t}-{i}")]) for i in range(3)))
        for i in range(3):
            resp = c.read_response()
            assert resp.status == 200 and resp.header("X-Request-ID") == f"{t}-{i}"
            assert resp.json()["target"] == f"/api/{t}-{i}"


def test_response_streams_before_the_upstream_has_finished(gw, rec):
    t = unique("stream-")
    go = threading.Event()

    def respond(h, r):
        h.send_response(200)
        h.send_header("Content-Type", "text/plain")
        h.send_header("Transfer-Encoding", "chunked")
        h.end_headers()
        h.wfile.write(b"b\r\nfirst part\n\r\n")
        go.wait(10)
        h.wfile.write(b"b\r\nsecond part\r\n0\r\n\r\n")

    rec.on(t, respond)
    with RawConn(gw.port) as c:
        c.send(raw_request("GET", f"/api/rec/api/{t}", [("Host", "gw"),
                                                   ("X-API-Key", gw.creds["dev"].api_key)]))
        deadline = time.monotonic() + 5
        while b"first part" not in c.buf:
            c._fill(deadline)  # the first part arrives while the upstream still holds the rest
        assert not go.is_set()
        go.set()
        resp = c.read_response()
        assert resp.status == 200 and resp.body == b"first part\nsecond part"


def test_slow_reader_holds_the_upstream_back(gw, rec):
    """Backpressure: while the client reads nothing the upstream's writes stall far below the
    size of the body; then the client reads it all, intact."""
    t = unique("backpressure-")
    total, block = 96 << 20, pattern(256 << 10)
    sent = [0]
    finished = threading.Event()

    def respond(h, r):
        h.send_response(200)
        h.send_header("Content-Type", "application/octet-stream")
        h.send_header("Content-Length", str(total))
        h.end_headers()
        try:
            while sent[0] < total:
                h.wfile.write(block)
                sent[0] += len(block)
        finally:
            finished.set()

    rec.on(t, respond)
    with RawConn(gw.port, rcvbuf=64 << 10, timeout=60) as c:
        c.send(raw_request("GET", f"/api/rec/api/{t}", [("Host", "gw"),
                                                   ("X-API-Key", gw.creds["dev"].api_key)]))
        # wait until the upstream's progress stops (for 1 s), bounded
        last, still_since, deadline = -1, time.monotonic(), time.monotonic() + 20
        while time.monotonic() < deadline:
            now = sent[0]
            if now != last:
                last, still_since = now, time.monotonic()
            elif time.monotonic() - still_since >= 1.0:
                break
            time.sleep(0.05)
        assert not finished.is_set() and sent[0] <= total // 2, \
            f"the upstream wrote {sent[0]} of {total} bytes to a client that reads nothing"
        # now read everything
        deadline = time.monotonic() + 60
        head = c._read_until(b"\r\n\r\n", deadline)
        assert head.startswith(b"HTTP/1.1 200") and b"Content-Length: %d" % total in head
        h, got = hashlib.sha256(), 0
        h.update(c.buf)
        got += len(c.buf)
        c.buf = b""
        while got < total:
            c.sock.settimeout(max(0.1, deadline - time.monotonic()))
            chunk = c.sock.recv(1 << 20)
            assert chunk, f"closed after {got} of {total} bytes"
            h.update(chunk)
            got += len(chunk)
        assert got == total
    expect = hashlib.sha256()
    for _ in range(total // len(block)):
        expect.update(block)
    assert h.hexdigest() == expect.hexdigest()
    assert finished.wait(10)


def test_client_gone_mid_response_releases_the_upstream(gw, rec, creds):
    """A client that leaves while the body trickles in: the upstream download stops at
    once instead of running to its end (or to UPSTREAM_TIMEOUT) for nobody."""
    t = unique("drip-")
    ended = {}
    done = threading.Event()

    def respond(h, r):
        h.send_response(200)
        h.send_header("Content-Type", "text/plain")
        h.send_header("Transfer-Encoding", "chunked")
        h.end_headers()
        try:
            for _ in range(200):  # 10 s unless the gateway hangs up
                h.wfile.write(b"5\r\ndrip\n\r\n")
                if rec.closing.wait(0.05):
                    break
            h.wfile.write(b"0\r\n\r\n")
            ended["how"] = "completed"
        except OSError:
            ended["how"] = "cut"
        done.set()

    rec.on(t, respond)
    with RawConn(gw.port) as c:
        c.send(raw_request("GET", f"/api/rec/api/{t}", [("Host", "gw"),
                                                   ("X-API-Key", creds["dev"].api_key)]))
        deadline = time.monotonic() + 5
        while b"drip" not in c.buf:
            c._fill(deadline)
    assert done.wait(5) and ended["how"] == "cut", ended
    assert not any("mid-response" in ln.get("msg", "") and t in json.dumps(ln)
                   for ln in gw.proc.log_lines())
    gw.proc.assert_healthy()


def test_client_gone_while_backpressured_releases_the_upstream(gw, rec, creds):
    t = unique("gone-")
    total, block = 96 << 20, pattern(256 << 10)
    sent, done = [0], threading.Event()

    def respond(h, r):
        h.send_response(200)
        h.send_header("Content-Type", "application/octet-stream")
        h.send_header("Content-Length", str(total))
        h.end_headers()
        try:
            while sent[0] < total and not rec.closing.is_set():
                h.wfile.write(block)
                sent[0] += len(block)
        except OSError:
            pass
        done.set()

    rec.on(t, respond)
    with RawConn(gw.port, rcvbuf=64 << 10) as c:
        c.send(raw_request("GET", f"/api/rec/api/{t}", [("Host", "gw"),
                                                   ("X-API-Key", creds["dev"].api_key)]))
        c._read_until(b"\r\n\r\n", time.monotonic() + 5)
        last = -1
        while sent[0] != last:  # until the upstream is held back
            last = sent[0]
            time.sleep(0.5)
    # the client is gone; UPSTREAM_TIMEOUT is 30 s here: the upstream must not wait for it
    assert done.wait(5), f"the upstream is still held after writing {sent[0]} of {total} bytes"
    assert sent[0] < total


# ---- failures -----------------------------------------------------------------------------------

def test_unknown_service_is_404(gw, rec):
    t = unique("unknown-")
    # hidden is known to discovery but not exposed; articles is an alias of a service
    # that is not exposed here
    for name in ("nosuch", "hidden", "articles", "articles_api"):
        tid, _, tp = new_traceparent()
        r = gw.api("GET", f"/api/{name}/api/{t}", headers={"traceparent": tp})
        body = problem(r, 404, trace_id=tid)
        assert body["instance"] == f"/api/{name}/api/{t}"
    assert rec.find(t) == []
    problem(gw.api("GET", "/api/rec"), 404)  # no path at all: no route


def test_only_the_api_paths_of_a_service_are_forwarded(gw, rec):
    """Issue 9: the gateway forwarded any path of an instance, its /metrics, /health, /ready
    and /openapi.json included. Only /api/… of the instance is the service's API; anything
    else is a 404 from the gateway that never reaches the instance."""
    t = unique("notapi-")
    for path in ("metrics", "health", "ready", "openapi.json", "", "apix", "API/x", "x/api/y"):
        r = gw.api("GET", f"/api/rec/{path}?tag={t}")
        problem(r, 404)
    # dot-segments as sent (a client library would remove them before sending)
    key = gw.creds["dev"].api_key
    with RawConn(gw.port) as c:
        for path in ("api/../metrics", "api/%2e%2E/health", "api/./x", "api/x/.."):
            c.send(raw_request("GET", f"/api/rec/{path}?tag={t}",
                               [("Host", "gw"), ("X-API-Key", key)]))
            resp = c.read_response()
            assert resp.status == 404, (path, resp)
    assert rec.find(t) == []
    r = gw.api("GET", f"/api/rec/api/{t}/..x/.x.")  # dots inside a name are fine
    assert r.status_code == 200 and r.json()["target"] == f"/api/{t}/..x/.x.", r.text


def test_instance_metrics_are_not_exposed_through_the_gateway(real):
    r = real.gw.api("GET", "/api/charges_api/metrics")
    problem(r, 404)
    assert "lotmesh_" not in r.text
    assert real.gw.api("GET", "/api/charges_api/api/v1/charges").status_code == 200


def test_no_passing_instance_is_503(gw):
    tid, _, tp = new_traceparent()
    r = gw.api("GET", "/api/ghost/api/v1/things", headers={"traceparent": tp})
    body = problem(r, 503, trace_id=tid)
    assert body["instance"] == "/api/ghost/api/v1/things"
    assert r.headers["Retry-After"] == "1"


def test_open_circuit_fails_fast_with_503(creds, tmp_path):
    """UPSTREAM_BREAKER_THRESHOLD failures in a row open the instance's circuit: the next
    request is not sent at all but answered 503 circuit-open; with a healthy second
    instance the failing one is skipped instead."""
    fleet = Fleet(tmp_path)
    try:
        dead = dead_port()
        rec = Recorder()
        try:
            spec = (f"static:charges_api=http://127.0.0.1:{dead};"
                    f"rec=http://127.0.0.1:{dead},{rec.url}")
            env = gateway_env(creds, spec, WORKERS=1, UPSTREAM_BREAKER_THRESHOLD=2,
                              UPSTREAM_BREAKER_RESET="10m", GATEWAY_SERVICES="charges_api,rec",
                              GATEWAY_BALANCER="round_robin")
            g = Gateway(fleet.start("gateway", env), creds)
            for _ in range(2):
                r = g.api("POST", "/api/charges_api/api/x", data=b"{}")
                assert r.status_code == 502, r.text
            r = g.api("POST", "/api/charges_api/api/x", data=b"{}")
            assert r.status_code == 503, r.text
            assert r.json()["type"] == "urn:lotmesh:problem:circuit-open"
            assert r.headers["Retry-After"] == "1"
            # two instances, one dead: once its circuit opens every request reaches the other
            codes = [g.api("POST", f"/api/rec/api/{unique('cb-')}", data=b"{}").status_code
                     for _ in range(8)]
            assert codes[-4:] == [200] * 4, codes
        finally:
            rec.close()
    finally:
        assert fleet.stop() == []


def test_open_circuit_outlives_many_other_instances(creds, tmp_path):
    """Issue 9: a worker's counters and circuits lived in 64 slots, and meeting a 65th
    instance id evicted an idle one, forgetting an open circuit (and, with requests in
    flight, resetting their count). An instance discovery still lists keeps its circuit
    however many others the worker meets."""
    fleet = Fleet(tmp_path)
    try:
        dead = dead_port()
        wide = ",".join(f"http://127.0.1.{i}:{dead}" for i in range(1, 65))
        env = gateway_env(creds, f"static:one=http://127.0.0.1:{dead};wide={wide}", WORKERS=1,
                          UPSTREAM_BREAKER_THRESHOLD=1, UPSTREAM_BREAKER_RESET="10m",
                          GATEWAY_SERVICES="one,wide")
        g = Gateway(fleet.start("gateway", env), creds)
        assert g.api("GET", "/api/one/api/x").status_code == 502  # refused: the circuit opens
        r = g.api("GET", "/api/one/api/x")
        assert r.status_code == 503 and r.json()["type"] == "urn:lotmesh:problem:circuit-open"
        # one request to wide meets its 64 instances (each one's circuit is looked at)
        assert g.api("GET", "/api/wide/api/x").status_code == 502
        r = g.api("GET", "/api/one/api/x")
        problem(r, 503)
        assert r.json()["type"] == "urn:lotmesh:problem:circuit-open", r.text
        m = g.proc.request("GET", "/metrics").text
        assert f'lotmesh_gateway_upstream_in_flight{{instance="one-127.0.0.1-{dead}"}} 0' in m
    finally:
        assert fleet.stop() == []


NO_TOKEN_SHIM = "#include <stddef.h>\nchar *jwt_encode_str(void *jwt) { (void)jwt; return NULL; }\n"


def test_failed_service_token_is_a_500_and_nothing_is_forwarded(creds, tmp_path, rec):
    """Issue 9: when minting the service token failed, the request went out with
    "Authorization: Bearer " and the client saw the service's 401 for the gateway's fault.
    libjwt's encoder is made to fail (LD_PRELOAD) in a gateway reached by API key."""
    shim_src, shim = tmp_path / "nojwt.c", tmp_path / "libnojwt.so"
    shim_src.write_text(NO_TOKEN_SHIM)
    subprocess.run(["cc", "-shared", "-fPIC", "-o", str(shim), str(shim_src)], check=True)
    asan = os.environ.get("LOTMESH_ASAN_OPTIONS",
                          "detect_leaks=1:halt_on_error=1:abort_on_error=0")
    fleet = Fleet(tmp_path)
    try:
        env = gateway_env(creds, f"static:rec={rec.url}", WORKERS=1, GATEWAY_SERVICES="rec",
                          LD_PRELOAD=shim, ASAN_OPTIONS=asan + ":verify_asan_link_order=0")
        g = Gateway(fleet.start("gateway", env), creds)
        t = unique("notoken-")
        r = g.api("GET", f"/api/rec/api/{t}", api_key=True)
        problem(r, 500)
        assert r.json()["type"] == "urn:lotmesh:problem:service-token", r.text
        time.sleep(0.2)
        assert rec.find(t) == []
    finally:
        assert fleet.stop() == []


def test_refused_upstream_is_502(gw):
    for method in ("GET", "POST"):
        tid, _, tp = new_traceparent()
        r = gw.api(method, "/api/dead/api/v1/x", headers={"traceparent": tp}, data=b"{}")
        problem(r, 502, trace_id=tid)
    gw.proc.assert_healthy()


def test_reset_and_malformed_upstream_answers_are_502(gw, rec):
    t = unique("broken-")

    def hang_up(h, r):
        h.close_connection = True  # read the request, answer nothing

    def reset(h, r):
        h.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00"
                                b"\x00\x00\x00\x00")
        h.close_connection = True

    def garbage(h, r):
        h.wfile.write(b"HTTP/1.1 2x0 What\r\nContent-Length: 0\r\n\r\n")
        h.close_connection = True

    def cl_and_te(h, r):  # a response another parser would frame differently
        h.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked"
                      b"\r\n\r\n0\r\n\r\n")
        h.close_connection = True

    def huge_head(h, r):
        h.wfile.write(b"HTTP/1.1 200 OK\r\nX-Big: " + b"b" * (80 << 10) +
                      b"\r\nContent-Length: 0\r\n\r\n")
        h.close_connection = True

    cases = {"hangup": hang_up, "reset": reset, "garbage": garbage, "cl-and-te": cl_and_te,
             "huge-head": huge_head}
    for what, fn in cases.items():
        rec.on(f"{t}-{what}", fn)
    for what in cases:
        tid, _, tp = new_traceparent()
        r = gw.api("POST", f"/api/rec/api/{t}-{what}", headers={"traceparent": tp}, data=b"{}")
        problem(r, 502, trace_id=tid)
        assert len(rec.find(f"{t}-{what}")) == 1  # a POST is never sent twice
    gw.proc.assert_healthy()


def test_upstream_failing_mid_body_cuts_the_client_response(gw, rec):
    t = unique("cut-")

    def respond(h, r):
        h.send_response(200)
        h.send_header("Content-Type", "application/octet-stream")
        h.send_header("Content-Length", "100000")
        h.end_headers()
        h.wfile.write(b"x" * 1000)
        h.wfile.flush()
        h.close_connection = True

    rec.on(t, respond)
    with RawConn(gw.port) as c:
        c.send(raw_request("GET", f"/api/rec/api/{t}", [("Host", "gw"),
                                                   ("X-API-Key", gw.creds["dev"].api_key)]))
        # the head (200, Content-Length 100000) and the 1,000 bytes, then the cut; failed once
        # in a loaded full run without a cut in IO_TIMEOUT (not reproduced in 80 runs and the
        # whole suite on ASan): what arrived, and the gateway's log, say which part was late
        try:
            r = c.read_response()
            pytest.fail(f"a whole response instead of a cut: {r.raw[:300]!r}")
        except PeerClosed:
            pass
        except (socket.timeout, TimeoutError):
            pytest.fail(f"no cut within {c.timeout} s; {len(c.buf)} bytes unread "
                        f"(head and/or body): {c.buf[:120]!r}; gateway log:\n"
                        f"{gw.proc.stderr_tail(15)}")
        assert c.buf.startswith(b"x" * 1000) or c.buf == b"", c.buf[:100]
    assert wait_until(lambda: any("mid-response" in ln.get("msg", "")
                                  for ln in gw.proc.log_lines()))
    gw.proc.assert_healthy()


# ---- service tokens, as PyJWT sees them ---------------------------------------------------------

def test_service_token_verifies_with_pyjwt(gw, rec, creds):
    t = unique("svc-")
    with requests.Session() as s:  # one connection: one worker and its token cache
        assert gw.api("GET", f"/api/charges_api/api/{t}/1", session=s).status_code == 200
        # cross a second boundary: a token minted again would differ in iat
        time.sleep(1.05 - (time.time() % 1))
        assert gw.api("GET", f"/api/charges_api/api/{t}/2", session=s).status_code == 200
        r = gw.api("GET", f"/api/rec/api/{t}/3", session=s)
        assert r.status_code == 200, r.text
        r = gw.api("GET", f"/api/rec/api/{t}/4", client="reader", api_key=True, session=s)
        assert r.status_code == 200, r.text
    r1, r2, r3, r4 = (rec.find(f"{t}/{i}")[0] for i in (1, 2, 3, 4))
    tok = bearer_of(r1)
    assert bearer_of(r2) == tok, "a service token is cached, not minted per request"
    assert tok not in (gw.token("dev"), creds["dev"].api_key)
    header = jwt.get_unverified_header(tok)
    assert header["alg"] == "HS256"
    claims = jwt.decode(tok, SECRET, algorithms=["HS256"], audience="charges_api",
                        issuer="gateway",
                        options={"require": ["iss", "aud", "sub", "iat", "exp"]})
    assert claims["sub"] == "dev" and claims["scope"] == "read write admin"
    assert claims["exp"] - claims["iat"] == SERVICE_TTL
    assert abs(claims["iat"] - time.time()) < 30
    # one token per target service and per client
    c3 = jwt.decode(bearer_of(r3), SECRET, algorithms=["HS256"], audience="rec",
                    issuer="gateway")
    c4 = jwt.decode(bearer_of(r4), SECRET, algorithms=["HS256"], audience="rec",
                    issuer="gateway")
    assert (c3["sub"], c3["scope"]) == ("dev", "read write admin")
    assert (c4["sub"], c4["scope"]) == ("reader", "read")
    with pytest.raises(jwt.InvalidAudienceError):
        jwt.decode(bearer_of(r3), SECRET, algorithms=["HS256"], audience="charges_api")
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(tok, SECRET + "x", algorithms=["HS256"], audience="charges_api")


def _keypair(alg, tmp_path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    key = (rsa.generate_private_key(65537, 2048) if alg == "RS256"
           else ec.generate_private_key(ec.SECP256R1()))
    priv = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
    pub = key.public_key().public_bytes(serialization.Encoding.PEM,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    (tmp_path / f"{alg}.key").write_bytes(priv)
    (tmp_path / f"{alg}.pub").write_bytes(pub)
    return tmp_path / f"{alg}.key", tmp_path / f"{alg}.pub", pub


@pytest.mark.parametrize("alg", ["RS256", "ES256"])
def test_asymmetric_service_tokens(start_process, tmp_path, rec, creds, alg):
    """With a key pair the gateway signs, the services hold only the public key: PyJWT
    verifies what the gateway minted, charges accepts it, and an HS256 token keyed with the
    public key (algorithm confusion) is refused."""
    priv, pub, pub_pem = _keypair(alg, tmp_path)
    keys = {"SERVICE_TOKEN_ALG": alg, "SERVICE_TOKEN_PUBLIC_KEY_FILE": str(pub)}
    charges = start_process("charges", {"SERVICE_AUTH": "enabled", **keys,
                                        "DATABASE_URL": str(tmp_path / "charges.db"),
                                        "WORKERS": "1"})
    env = gateway_env(creds, f"static:charges_api={charges.base_url};rec={rec.url}",
                      GATEWAY_SERVICES="charges_api,rec", WORKERS="1",
                      SERVICE_TOKEN_PRIVATE_KEY_FILE=str(priv), **keys)
    del env["SERVICE_TOKEN_SECRET"]
    g = Gateway(start_process("gateway", env), creds)
    r = g.api("GET", "/api/charges_api/api/v1/charges")
    assert r.status_code == 200, r.text
    t = unique(f"{alg}-")
    assert g.api("GET", f"/api/rec/api/{t}").status_code == 200
    (got,) = rec.find(t)
    tok = bearer_of(got)
    assert jwt.get_unverified_header(tok)["alg"] == alg
    claims = jwt.decode(tok, pub_pem, algorithms=[alg], audience="rec", issuer="gateway")
    assert claims["sub"] == "dev"
    # at the service port directly
    c = service_claims("charges_api")
    ok = jwt.encode(c, priv.read_bytes(), algorithm=alg)
    assert charges.get("/api/v1/charges", headers={"Authorization": f"Bearer {ok}"}
                       ).status_code == 200
    for bad in (forge({"alg": "HS256", "typ": "JWT"}, c, pub_pem),
                jwt.encode(c, SECRET, algorithm="HS256"),
                forge({"alg": "none", "typ": "JWT"}, c)):
        problem(charges.get("/api/v1/charges", headers={"Authorization": f"Bearer {bad}"}), 401)


# ---- a slow upstream: 504 at UPSTREAM_TIMEOUT ---------------------------------------------------

def test_slow_upstream_is_504_at_the_timeout(start_process, rec, creds):
    g = Gateway(start_process("gateway", gateway_env(
        creds, f"static:rec={rec.url}", GATEWAY_SERVICES="rec", UPSTREAM_TIMEOUT="800ms",
        WORKERS="1")), creds)
    t = unique("slow-")
    release = threading.Event()
    rec.on(f"{t}-slow", lambda h, r: (release.wait(10), echo(h, r)))
    try:
        tid, _, tp = new_traceparent()
        t0 = time.monotonic()
        r = g.api("GET", f"/api/rec/api/{t}-slow", headers={"traceparent": tp}, timeout=10)
        elapsed = time.monotonic() - t0
        problem(r, 504, trace_id=tid)
        assert 0.7 <= elapsed < 5, elapsed
        # a request under the timeout is fine, and the gateway still serves
        assert g.api("GET", f"/api/rec/api/{t}-fast").status_code == 200
        # a client that gives up while the upstream is slow costs nothing lasting
        with RawConn(g.port) as c:
            c.send(raw_request("GET", f"/api/rec/api/{t}-slow-gone",
                               [("Host", "gw"), ("X-API-Key", creds["dev"].api_key)]))
            rec.wait_for(f"{t}-slow-gone")
    finally:
        release.set()
    g.proc.assert_healthy()
    assert g.api("GET", f"/api/rec/api/{t}-after").status_code == 200


# ---- retry on another instance: GET/HEAD only --------------------------------------------------

def test_connect_failure_is_retried_on_another_instance(start_process, rec, creds):
    """Two static instances of one service, one refusing connections, round-robin: every GET,
    HEAD and POST succeeds — a refused connection sent nothing, so trying the other instance
    repeats nothing (DESIGN 3.8) — and each request reaches the recorder exactly once."""
    spec = f"static:pair={rec.url},http://127.0.0.1:{dead_port()}"
    # the circuit breaker would stop using the dead instance after a few failures (see
    # test_open_circuit_fails_fast_with_503): kept closed here to see the retry rules alone
    g = Gateway(start_process("gateway", gateway_env(creds, spec, GATEWAY_SERVICES="pair",
                                                     GATEWAY_BALANCER="round_robin",
                                                     UPSTREAM_BREAKER_THRESHOLD="1000",
                                                     WORKERS="1")), creds)
    t = unique("retry-")
    with requests.Session() as s:
        for i in range(10):
            for method in ("GET", "HEAD"):
                r = g.api(method, f"/api/pair/api/{t}/{method}/{i}", session=s)
                assert r.status_code == 200, (method, i, r.text)
        assert len(rec.find(f"{t}/GET/")) == 10 and len(rec.find(f"{t}/HEAD/")) == 10
        for i in range(6):
            r = g.api("POST", f"/api/pair/api/{t}/POST/{i}", data=b"{}", session=s)
            assert r.status_code == 200, r.text
    assert len(rec.find(f"{t}/POST/")) == 6


# ---- the real services: the seed's flow ---------------------------------------------------------

def test_seed_flow_through_the_gateway(real):
    gw = real.gw
    tok = gw.token()
    auth = {"Authorization": f"Bearer {tok}"}

    def call(method, path, **kw):
        h = dict(auth)
        h.update(kw.pop("headers", {}))
        return requests.request(method, gw.url(path), headers=h, timeout=IO_TIMEOUT, **kw)

    r = call("POST", "/api/articles_api/api/v1/article/create",
             json={"artikelnummer": unique("GW-"), "bezeichnung": "Vollmilch 3,5 %",
                   "einheit_id": UNIT_LITER, "mindesthaltbarkeit_tage": 10})
    assert r.status_code == 201, r.text
    art = r.json()
    rid = unique("flow-")
    tid, sid, tp = new_traceparent()
    r = call("POST", "/api/charges_api/api/v1/charge/create",
             json={"artikel_id": art["id"], "menge": 12.5, "einheit_id": UNIT_LITER,
                   "herstellungsdatum": "2026-03-01T06:00:00Z"},
             headers={"X-Request-ID": rid, "traceparent": tp, "Idempotency-Key": rid})
    assert r.status_code == 201, r.text
    c = r.json()
    assert c["artikel_id"] == art["id"] and c["status"] == "aktiv"
    assert c["mindesthaltbarkeitsdatum"].startswith("2026-03-11")
    assert r.headers["Location"].endswith(f"/api/v1/charge/{c['id']}")
    assert r.headers["ETag"] == '"1"' and r.headers["X-Request-ID"] == rid
    # charges asked articles, with a token of its own, in the same trace
    lines = wait_until(lambda: len(access_lines(real.articles, rid)) >= 2 and
                       access_lines(real.articles, rid))
    assert sorted(ln["path"] for ln in lines) == sorted(
        [f"/api/v1/article/{art['id']}", f"/api/v1/unit/{UNIT_LITER}"])
    assert all(ln["status"] == 200 and ln["trace_id"] == tid for ln in lines), lines
    # the same Idempotency-Key answers the first result again
    r = call("POST", "/api/charges_api/api/v1/charge/create",
             json={"artikel_id": art["id"], "menge": 12.5, "einheit_id": UNIT_LITER,
                   "herstellungsdatum": "2026-03-01T06:00:00Z"},
             headers={"Idempotency-Key": rid})
    assert r.status_code == 201 and r.json() == c

    r = call("GET", f"/api/charges_api/api/v1/charges?artikel_id={art['id']}")
    assert r.status_code == 200 and r.json() == [c]
    assert r.headers["X-Total-Count"] == "1"
    r = call("GET", f"/api/charges_api/api/v1/charge/{c['id']}")
    assert r.status_code == 200 and r.json() == c and r.headers["ETag"] == '"1"'
    r = call("GET", f"/api/charges/api/v1/charge/{c['id']}")  # the alias
    assert r.status_code == 200 and r.json() == c

    r = call("PATCH", f"/api/charges_api/api/v1/charge/{c['id']}", json={"menge": 3.5},
             headers={"If-Match": '"1"'})
    assert r.status_code == 200, r.text
    assert r.json()["menge"] == 3.5 and r.headers["ETag"] == '"2"'
    doc = {k: c[k] for k in ("artikel_id", "einheit_id", "herstellungsdatum")}
    r = call("PUT", f"/api/charges_api/api/v1/charge/{c['id']}",
             json={**doc, "menge": 4, "bemerkungen": "via gateway"}, headers={"If-Match": '"2"'})
    assert r.status_code == 200, r.text
    assert r.json()["bemerkungen"] == "via gateway" and r.headers["ETag"] == '"3"'
    tid2, _, tp2 = new_traceparent()
    r = call("PATCH", f"/api/charges_api/api/v1/charge/{c['id']}", json={"menge": 1},
             headers={"If-Match": '"1"', "traceparent": tp2})
    problem(r, 412, trace_id=tid2)  # the service's problem, relayed
    r = call("GET", f"/api/charges_api/api/v1/charge/{c['id']}")
    assert r.json()["menge"] == 4

    r = call("DELETE", f"/api/charges_api/api/v1/charge/{c['id']}")
    assert r.status_code == 204 and r.content == b""
    tid3, _, tp3 = new_traceparent()
    r = call("GET", f"/api/charges_api/api/v1/charge/{c['id']}", headers={"traceparent": tp3})
    body = problem(r, 404, trace_id=tid3)
    assert body["instance"] == f"/api/v1/charge/{c['id']}"
    # the API key works the same way
    r = gw.api("GET", f"/api/charges_api/api/v1/charges?artikel_id={art['id']}", api_key=True)
    assert r.status_code == 200 and r.json() == []


def test_query_string_and_trace_reach_articles(real):
    gw = real.gw
    t = unique("Q")
    for i in range(3):
        r = gw.api("POST", "/api/articles_api/api/v1/article/create",
                   json={"artikelnummer": f"{t}-{i}", "bezeichnung": f"Käse {t} Nr. {i}",
                         "einheit_id": 1})
        assert r.status_code == 201, r.text
    rid = unique("query-")
    tid, sid, tp = new_traceparent()
    q = urllib.parse.quote(f"Käse {t}")
    r = gw.api("GET", f"/api/articles_api/api/v1/articles?q={q}&limit=2",
               headers={"X-Request-ID": rid, "traceparent": tp})
    assert r.status_code == 200, r.text
    assert [a["artikelnummer"] for a in r.json()] == [f"{t}-0", f"{t}-1"]
    assert r.headers["X-Total-Count"] == "3"
    link = r.headers["Link"]
    assert 'rel="next"' in link and "limit=2" in link and "offset=2" in link and t in link
    assert r.headers["X-Request-ID"] == rid
    (svc_line,) = wait_until(lambda: access_lines(real.articles, rid))
    assert svc_line["path"] == "/api/v1/articles" and svc_line["status"] == 200
    assert svc_line["trace_id"] == tid and svc_line["span_id"] != sid
    (gw_line,) = wait_until(lambda: access_lines(gw.proc, rid))
    assert gw_line["trace_id"] == tid and gw_line["path"] == "/api/articles_api/api/v1/articles"
    assert gw_line["span_id"] not in (sid, svc_line["span_id"])
    # a query the service refuses comes back as its problem
    problem(gw.api("GET", "/api/articles_api/api/v1/articles?limit=2&bogus=1"), 400)


def test_admin_services_lists_the_discovered_instances(real):
    r = requests.get(real.gw.url("/admin/services"), headers=real.gw.auth("dev"),
                     timeout=IO_TIMEOUT)
    assert r.status_code == 200, r.text
    doc = r.json()
    by_name = {s["name"]: s for s in doc["services"]}
    assert sorted(i["port"] for i in by_name["charges_api"]["instances"]) == \
        sorted(c.port for c in real.charges)
    assert [i["port"] for i in by_name["articles_api"]["instances"]] == [real.articles.port]
    assert by_name["articles_api"]["aliases"] == ["articles"]
    assert doc["balancer"] == "least_outstanding"
    r = requests.get(real.gw_rr.url("/admin/services"), headers=real.gw_rr.auth("dev"),
                     timeout=IO_TIMEOUT)
    assert r.json()["balancer"] == "round_robin"


def test_gateway_metrics_by_service_status_and_instance(real):
    r = real.gw.api("GET", "/api/charges_api/api/v1/charges?limit=1")
    assert r.status_code == 200, r.text
    r = real.gw.api("GET", "/api/charges_api/api/v1/charge/999999999")
    assert r.status_code == 404
    text = requests.get(real.gw.url("/metrics"), timeout=IO_TIMEOUT).text
    def value(prefix):
        lines = [ln for ln in text.splitlines() if ln.startswith(prefix)]
        assert lines, f"no {prefix} in /metrics"
        return float(lines[0].rsplit(" ", 1)[1])
    assert value('lotmesh_gateway_requests_total{service="charges_api",status="2xx"}') >= 1
    assert value('lotmesh_gateway_requests_total{service="charges_api",status="4xx"}') >= 1
    assert value('lotmesh_gateway_request_duration_seconds_count{service="charges_api"}') >= 2
    inst = [ln for ln in text.splitlines()
            if ln.startswith("lotmesh_gateway_upstream_requests_total{instance=\"charges_api-")]
    assert inst and sum(float(ln.rsplit(" ", 1)[1]) for ln in inst) >= 2
    assert "lotmesh_gateway_upstream_in_flight{instance=" in text
    assert value('lotmesh_gateway_pool_connections{state="open"}') >= 1


@pytest.mark.parametrize("balancer", ["least_outstanding", "round_robin"])
def test_two_instances_each_get_about_half(real, balancer):
    gw = real.gw if balancer == "least_outstanding" else real.gw_rr
    prefix = unique(f"dist-{balancer[:2]}-")
    n = 200
    with requests.Session() as s:
        for i in range(n):
            r = gw.api("GET", "/api/charges_api/api/v1/charges?limit=1", session=s,
                       headers={"X-Request-ID": f"{prefix}-{i}"})
            assert r.status_code == 200, r.text

    def counts():
        return [len(access_lines(c, prefix=prefix)) for c in real.charges]

    assert wait_until(lambda: sum(counts()) == n), counts()
    a, b = counts()
    if balancer == "round_robin":
        assert (a, b) == (n // 2, n // 2)
    else:  # two random choices among two idle instances: a fair coin per request
        assert 0.3 * n <= a <= 0.7 * n and 0.3 * n <= b <= 0.7 * n, (a, b)


# ---- at a service port directly -----------------------------------------------------------------

def _direct_cases(aud, other):
    return {
        "missing": (None, "GET", 401),
        "basic": ("Basic " + base64.b64encode(b"dev:secret").decode(), "GET", 401),
        "garbage": ("Bearer not.a.jwt", "GET", 401),
        "bad-signature": ("Bearer " + jwt.encode(service_claims(aud), SECRET[::-1],
                                                 algorithm="HS256"), "GET", 401),
        "expired": ("Bearer " + jwt.encode(service_claims(
            aud, iat=int(time.time()) - 900, exp=int(time.time()) - 120), SECRET,
            algorithm="HS256"), "GET", 401),
        "wrong-issuer": ("Bearer " + jwt.encode(service_claims(aud, iss="mallory"), SECRET,
                                                algorithm="HS256"), "GET", 401),
        "alg-none": ("Bearer " + forge({"alg": "none", "typ": "JWT"}, service_claims(aud)),
                     "GET", 401),
        "no-exp": ("Bearer " + jwt.encode(service_claims(aud, exp=None), SECRET,
                                          algorithm="HS256"), "GET", 401),
        "wrong-audience": ("Bearer " + jwt.encode(service_claims(other), SECRET,
                                                  algorithm="HS256"), "GET", 403),
        "read-scope-post": ("Bearer " + jwt.encode(service_claims(aud, scope="read"), SECRET,
                                                   algorithm="HS256"), "POST", 403),
        "no-scope": ("Bearer " + jwt.encode(service_claims(aud, scope=""), SECRET,
                                            algorithm="HS256"), "GET", 403),
    }


DIRECT = ["missing", "basic", "garbage", "bad-signature", "expired", "wrong-issuer", "alg-none",
          "no-exp", "wrong-audience", "read-scope-post", "no-scope"]


@pytest.mark.parametrize("service", ["articles", "charges"])
@pytest.mark.parametrize("case", DIRECT)
def test_service_port_refuses_requests_without_a_valid_token(real, service, case):
    proc, aud, other, path, create = {
        "articles": (real.articles, "articles_api", "charges_api", "/api/v1/articles",
                     "/api/v1/article/create"),
        "charges": (real.charges[0], "charges_api", "articles_api", "/api/v1/charges",
                    "/api/v1/charge/create"),
    }[service]
    authz, method, status = _direct_cases(aud, other)[case]
    h = {"Authorization": authz} if authz else {}
    tid, _, tp = new_traceparent()
    h["traceparent"] = tp
    if method == "POST":
        r = proc.request("POST", create, headers=h, json={"x": 1})
    else:
        r = proc.get(path, headers=h)
    problem(r, status, trace_id=tid)
    www = r.headers["WWW-Authenticate"]
    assert www.startswith("Bearer")
    if status == 403:
        assert "error=" in www


@pytest.mark.parametrize("service", ["articles", "charges"])
def test_service_port_accepts_a_valid_token_and_keeps_operations_open(real, service):
    proc, aud, path = {"articles": (real.articles, "articles_api", "/api/v1/articles"),
                       "charges": (real.charges[1], "charges_api", "/api/v1/charges")}[service]
    for iss in ("gateway", "charges_api" if service == "articles" else "gateway"):
        tok = jwt.encode(service_claims(aud, iss=iss, scope="read"), SECRET, algorithm="HS256")
        r = proc.get(path, headers={"Authorization": f"Bearer {tok}"})
        assert r.status_code == 200, r.text
    for open_path in ("/health", "/ready", "/metrics", "/openapi.json"):
        assert proc.get(open_path).status_code == 200, open_path


# ---- an instance killed --------------------------------------------------------------------------

def test_gets_keep_succeeding_when_an_instance_is_killed(start_process, tmp_path, creds):
    reg = start_process("registry", {"REGISTRY_SNAPSHOT": "off", "WORKERS": "1"})
    charges = [start_process("charges", service_env(reg, tmp_path, "charges.db", ttl="2s"))
               for _ in range(2)]
    g = Gateway(start_process("gateway", gateway_env(creds, reg.base_url,
                                                     GATEWAY_BALANCER="round_robin",
                                                     WORKERS="1")), creds)
    assert wait_until(lambda: g.discovered("charges_api") == 2, 10)
    prefix = unique("kill-")
    with requests.Session() as s:
        def get(i):
            r = g.api("GET", "/api/charges_api/api/v1/charges?limit=1", session=s,
                      headers={"X-Request-ID": f"{prefix}-{i}"})
            assert r.status_code == 200, (i, r.text)

        for i in range(10):
            get(i)
        victim, survivor = charges
        # round-robin: both were in use
        assert wait_until(lambda: len(access_lines(victim, prefix=prefix)) == 5)
        victim.expected_exit = -signal.SIGKILL
        victim.kill()
        i = 10
        for _ in range(10):  # the dead instance is still listed: its turns are retried
            get(i)
            i += 1
        assert g.discovered("charges_api") == 2, "the registry dropped it too early to tell"
        deadline = time.monotonic() + 10
        while g.discovered("charges_api") != 1 and time.monotonic() < deadline:
            get(i)
            i += 1
        assert g.discovered("charges_api") == 1, "the killed instance was never dropped"
        for _ in range(10):
            get(i)
            i += 1
    assert wait_until(lambda: len(access_lines(survivor, prefix=prefix)) == i - 5), \
        (i, len(access_lines(survivor, prefix=prefix)))


# ---- secrets stay out of the logs ------------------------------------------------------------------

def test_secrets_never_appear_in_the_gateway_log(gw, creds):
    dev = creds["dev"]
    gw.proc.request("POST", "/auth/token", data={"grant_type": "client_credentials"},
                    auth=(dev.id, "wrong-" + dev.secret))
    tok = gw.token("dev")
    gw.api("GET", f"/api/rec/api/{unique('logs-')}", api_key=True)
    gw.api("GET", "/api/dead/api/x")
    text = gw.proc.stderr()
    for secret in (dev.secret, dev.api_key, creds["reader"].api_key, tok, SECRET):
        assert secret not in text
