"""test_resilience.py — the gateway's outbound-call policy, rule by rule, against a recording
upstream (gateway_util.Recorder): what counts against an instance (a problem document does
not), deadlines in and on, the bulkhead, /ready before discovery. The chaos suite
(test_chaos.py) drives the same rules with real services and faults under load."""

import json
import threading
import time

import pytest
import requests

from gateway_util import Gateway, bootstrap_clients, gateway_env, reply
from harness import poll as wait_until
from services_util import unique


@pytest.fixture(scope="module")
def creds(tmp_path_factory):
    return bootstrap_clients(tmp_path_factory.mktemp("res-clients"))


def start_gw(start_process, creds, rec, **extra):
    spec = f"static:svc={rec.url}"
    env = gateway_env(creds, spec, GATEWAY_SERVICES="svc", WORKERS="2", ACCESS_LOG="false",
                      **extra)
    return Gateway(start_process("gateway", env), creds)


def admin_policy(g):
    doc = g.api("GET", "/admin/services").json()
    return next(s for s in doc["services"] if s["name"] == "svc")["policy"]


def test_problem_answers_do_not_open_circuits_bare_gateway_errors_do(start_process, creds, rec):
    """Issue 12's defect: a service's 503 problem (its considered answer about a dependency)
    is passed on and never counted; a bare 503 (no problem document) is an unhealthy instance."""
    g = start_gw(start_process, creds, rec, UPSTREAM_BREAKER_THRESHOLD="3",
                 UPSTREAM_BREAKER_RESET="10m", UPSTREAM_RETRIES="0")
    t = unique("prob-")
    problem = {"type": "urn:lotmesh:problem:dependency-unavailable", "title": "Service Unavailable",
               "status": 503, "detail": "articles is down"}
    rec.on(t, lambda h, r: reply(h, 503, json.dumps(problem), ctype="application/problem+json"))
    for _ in range(20):
        r = g.api("POST", f"/api/svc/api/{t}", data=b"{}")
        assert r.status_code == 503 and r.json()["type"] == problem["type"], r.text
    pol = admin_policy(g)
    assert pol["circuit"]["state"] == "closed" and pol["circuit"]["opens"] == 0, pol
    assert all(i["state"] == "closed" and i["failures"] == 0 for i in pol["instances"]), pol
    b = unique("bare-")
    rec.on(b, lambda h, r: reply(h, 503, b"down", ctype="text/plain"))
    codes = [g.api("GET", f"/api/svc/api/{b}").status_code for _ in range(4)]
    assert codes[:3] == [503, 503, 503], codes
    r = g.api("GET", f"/api/svc/api/{b}")
    assert r.status_code == 503 and r.json()["type"] == "urn:lotmesh:problem:circuit-open", r.text
    assert r.headers["Retry-After"] == "1"
    assert g.proc.metric("lotmesh_circuit_state", service="svc", instance="") == 1
    assert any("circuit of service svc opened (3 failures in a row)" in ln.get("msg", "")
               for ln in g.proc.log_lines())


def test_deadline_goes_upstream_and_is_enforced(start_process, creds, rec):
    g = start_gw(start_process, creds, rec, UPSTREAM_TIMEOUT="20s",
                 GATEWAY_ROUTE_TIMEOUTS="svc/api/slow-route=700ms")
    t = unique("dl-")
    assert g.api("GET", f"/api/svc/api/{t}/a", headers={"X-Request-Timeout": "1500"}).status_code == 200
    sent = int(rec.find(f"{t}/a")[0].header("X-Request-Timeout"))
    assert 0 < sent <= 1500, sent
    assert g.api("GET", f"/api/svc/api/{t}/b").status_code == 200
    assert 19000 < int(rec.find(f"{t}/b")[0].header("X-Request-Timeout")) <= 20000
    r = g.api("GET", f"/api/svc/api/{t}/c", headers={"X-Request-Timeout": "soon"})
    assert r.status_code == 400, r.text

    def slow(h, r):
        time.sleep(1.5)
        reply(h, 200, b"{}")
    rec.on("slow-route", slow)
    t0 = time.monotonic()
    r = g.api("POST", f"/api/svc/api/slow-route/{t}", data=b"{}")  # the route's 700 ms
    assert r.status_code == 504, r.text
    assert "deadline" in r.json()["detail"], r.text
    assert time.monotonic() - t0 < 1.4
    t0 = time.monotonic()
    r = g.api("POST", f"/api/svc/api/slow-route/{t}x", data=b"{}", headers={"X-Request-Timeout": "200"})
    assert r.status_code == 504 and time.monotonic() - t0 < 1.0, r.text


def test_bulkhead_answers_503_fast(start_process, creds, rec):
    g = start_gw(start_process, creds, rec, UPSTREAM_BULKHEAD="1")
    t = unique("bh-")
    release = threading.Event()

    def hold(h, r):
        release.wait(5)
        reply(h, 200, b"{}")
    rec.on(t + "/hold", hold)
    held = threading.Thread(target=lambda: g.api("GET", f"/api/svc/api/{t}/hold", timeout=10))
    held.start()
    try:
        assert wait_until(lambda: admin_policy(g)["bulkhead"]["in_flight"] == 1)
        r = g.api("GET", f"/api/svc/api/{t}/other")
        assert r.status_code == 503, r.text
        assert r.json()["type"] == "urn:lotmesh:problem:bulkhead-full"
        assert r.headers["Retry-After"] == "1"
    finally:
        release.set()
        held.join(10)
    assert g.api("GET", f"/api/svc/api/{t}/after").status_code == 200
    assert g.proc.metric("lotmesh_upstream_bulkhead_rejected_total", service="svc") == 1


def test_gateway_not_ready_before_discovery(start_process, creds, rec):
    """/ready stays 503 until the discovery cache has an instance of every served service."""
    reg = start_process("registry", {"REGISTRY_SNAPSHOT": "off", "WORKERS": "1"})
    env = gateway_env(creds, reg.base_url, GATEWAY_SERVICES="svc", WORKERS="1",
                      SERVICE_WATCH_WAIT="1s")
    g = Gateway(start_process("gateway", env), creds)
    r = g.proc.get("/ready")
    assert r.status_code == 503 and "no instance of svc discovered yet" in r.text, r.text
    host, port = rec.url.rsplit("//", 1)[1].split(":")
    r = requests.put(reg.url("/v1/agent/service/register"), timeout=5,
                     json={"ID": "svc-1", "Name": "svc", "Address": host, "Port": int(port)})
    assert r.status_code == 200, r.text
    assert wait_until(lambda: g.proc.get("/ready").status_code == 200, timeout=10), \
        g.proc.get("/ready").text
    assert g.api("GET", f"/api/svc/api/{unique('rd-')}").status_code == 200


@pytest.mark.parametrize("bad,variable", [
    ({"UPSTREAM_BREAKER_WINDOW": "0"}, "UPSTREAM_BREAKER_WINDOW"),
    ({"UPSTREAM_BREAKER_WINDOW": "1500ms"}, "UPSTREAM_BREAKER_WINDOW"),
    ({"UPSTREAM_BREAKER_WINDOW": "129"}, "UPSTREAM_BREAKER_WINDOW"),
    ({"UPSTREAM_BREAKER_FAILURE_RATE": "101"}, "UPSTREAM_BREAKER_FAILURE_RATE"),
    ({"UPSTREAM_BREAKER_SLOW_RATE": "0"}, "UPSTREAM_BREAKER_SLOW_RATE"),
    ({"UPSTREAM_BREAKER_MIN_CALLS": "-1"}, "UPSTREAM_BREAKER_MIN_CALLS"),
    ({"UPSTREAM_BREAKER_HALF_OPEN_CALLS": "0"}, "UPSTREAM_BREAKER_HALF_OPEN_CALLS"),
    ({"UPSTREAM_BREAKER_RESET": "soon"}, "UPSTREAM_BREAKER_RESET"),
    ({"UPSTREAM_RETRIES": "11"}, "UPSTREAM_RETRIES"),
    ({"UPSTREAM_RETRY_BACKOFF": "100ms", "UPSTREAM_RETRY_BACKOFF_MAX": "50ms"},
     "UPSTREAM_RETRY_BACKOFF_MAX"),
    ({"UPSTREAM_RETRY_BUDGET": "120"}, "UPSTREAM_RETRY_BUDGET"),
    ({"UPSTREAM_EJECT_MAX_PERCENT": "101"}, "UPSTREAM_EJECT_MAX_PERCENT"),
    ({"GATEWAY_STALE_IF_ERROR": "forever"}, "GATEWAY_STALE_IF_ERROR"),
])
def test_policy_configuration_is_validated(run_process, creds, bad, variable):
    """A bad policy variable stops the gateway at start-up: exit 2, one line naming it."""
    env = gateway_env(creds, "static:svc=http://127.0.0.1:9", GATEWAY_SERVICES="svc",
                      WORKERS="1", **bad)
    res = run_process("gateway", env)
    assert res.returncode == 2, res.stderr
    lines = [ln for ln in res.stderr_lines if "configuration error" in ln]
    assert len(lines) == 1 and variable in lines[0], res.stderr


def test_every_transition_is_logged_once_with_its_reason(start_process, creds, rec):
    """Closed → open → half-open → closed: one warning line each, with the reason."""
    g = start_gw(start_process, creds, rec, UPSTREAM_BREAKER_THRESHOLD="3",
                 UPSTREAM_BREAKER_RESET="300ms", UPSTREAM_BREAKER_HALF_OPEN_CALLS="1",
                 UPSTREAM_RETRIES="0")
    t = unique("tr-")
    state = {"down": True}
    rec.on(t, lambda h, r: reply(h, 503, b"down", ctype="text/plain") if state["down"]
           else reply(h, 200, b"{}"))
    assert [g.api("GET", f"/api/svc/api/{t}").status_code for _ in range(3)] == [503] * 3
    r = g.api("GET", f"/api/svc/api/{t}")
    assert r.json()["type"] == "urn:lotmesh:problem:circuit-open", r.text
    state["down"] = False
    time.sleep(0.4)
    assert g.api("GET", f"/api/svc/api/{t}").status_code == 200
    assert wait_until(lambda: admin_policy(g)["circuit"]["state"] == "closed")

    def lines(text):
        return [ln["msg"] for ln in g.proc.log_lines() if text in ln.get("msg", "")]
    assert wait_until(lambda: len(lines("circuit of service svc closed")) == 1)
    assert lines("circuit of service svc opened") == [
        "circuit of service svc opened (3 failures in a row): calls fail fast for 300 ms"]
    assert lines("circuit of service svc half-open") == [
        "circuit of service svc half-open: open wait over, 1 trial calls"]
    assert lines("circuit of service svc closed") == [
        "circuit of service svc closed (1 of 1 trial calls succeeded)"]


def test_retry_budget_bounds_the_retries(start_process, creds, rec):
    """Retries in flight are at most RETRY_BUDGET % of the calls in flight, but always
    RETRY_BUDGET_MIN: with both 0 a failing GET is never tried again (each refusal counted),
    with the floor at 1 a lone GET gets its two retries."""
    t = unique("budget-")
    rec.on(t, lambda h, r: reply(h, 503, b"down", ctype="text/plain"))
    policy = {"UPSTREAM_BREAKER_THRESHOLD": "0", "UPSTREAM_BREAKER_MIN_CALLS": "100000",
              "UPSTREAM_RETRY_BACKOFF": "1ms", "UPSTREAM_RETRY_BACKOFF_MAX": "1ms"}
    for floor, tries_per_call in (("0", 1), ("1", 3)):
        g = start_gw(start_process, creds, rec, UPSTREAM_RETRY_BUDGET="0",
                     UPSTREAM_RETRY_BUDGET_MIN=floor, **policy)
        for _ in range(5):
            assert g.api("GET", f"/api/svc/api/{t}").status_code == 503
        calls = g.proc.metric("lotmesh_upstream_calls_total", service="svc")
        tries = g.proc.metric("lotmesh_upstream_tries_total", service="svc")
        refused = g.proc.metric("lotmesh_upstream_retry_budget_exhausted_total", service="svc")
        assert (calls, tries) == (5, 5 * tries_per_call), (floor, calls, tries)
        assert refused == (5 if floor == "0" else 0), (floor, refused)
