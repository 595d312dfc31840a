"""The gateway's rate limits (issue 15): GCRA per client, per client and service, in-process
or shared through the session's real redis-server (harness.RedisServer), RateLimit-* headers,
429 problems with Retry-After, fail open / closed when Redis is gone, bad configuration.

Upstream is a recording server in this process (gateway_util.Recorder) reached through
SERVICE_REGISTRY_URL=static:…; clients authenticate with API keys (no Argon2 on the way).
Nothing here measures speed: limits are set per minute, so a slow machine never refills a
bucket within a test."""

import json
import threading
import time

import pytest
import requests

from gateway_util import (Gateway, api_key_hash, bootstrap_clients, dead_port,
                          gateway_env, wait_until)
from harness import IO_TIMEOUT
from services_util import assert_full_problem

PATH = "/api/rec/api/things/1"


@pytest.fixture(scope="module")
def creds(tmp_path_factory):
    return bootstrap_clients(tmp_path_factory.mktemp("lim-clients"))


def start_gw(fleet, creds, rec, **env):
    """A gateway in front of the recorder (whose small listen backlog can drop a SYN when
    many connections open at once: a generous connect timeout rides out the retransmit)."""
    spec = f"static:rec={rec.url};other={rec.url}"
    e = gateway_env(creds, spec, GATEWAY_SERVICES="rec,other", ACCESS_LOG="false",
                    UPSTREAM_CONNECT_TIMEOUT="10s", **env)
    return Gateway(fleet.start("gateway", e), creds)


def call(gw, client="dev", path=PATH, session=None):
    return gw.api("GET", path, client=client, api_key=True, session=session)


def limit_headers(r):
    return {k: int(r.headers[k]) for k in ("RateLimit-Limit", "RateLimit-Remaining",
                                           "RateLimit-Reset")}


def test_in_process_limit_counts_down_then_429(fleet, creds, rec):
    gw = start_gw(fleet, creds, rec, GATEWAY_RATE_LIMIT="5/m")
    s = requests.Session()
    seen = []
    for _ in range(5):
        r = call(gw, session=s)
        assert r.status_code == 200, r.text
        h = limit_headers(r)
        assert h["RateLimit-Limit"] == 5
        assert 0 < h["RateLimit-Reset"] <= 60
        seen.append(h["RateLimit-Remaining"])
    assert seen == [4, 3, 2, 1, 0]
    r = call(gw, session=s)
    assert r.status_code == 429
    p = assert_full_problem(r, 429)
    assert p["type"] == "urn:lotmesh:problem:rate-limited"
    assert 1 <= int(r.headers["Retry-After"]) <= 12  # one request every 12 s refills
    assert limit_headers(r)["RateLimit-Remaining"] == 0
    # another client has its own budget; the refused request never reached the upstream
    assert call(gw, client="reader").status_code == 200
    assert gw.proc.metric("lotmesh_gateway_rate_limit_total", outcome="refused") == 1
    assert gw.proc.metric("lotmesh_gateway_rate_limit_total", outcome="allowed") == 6


def test_exact_across_worker_threads(fleet, creds, rec):
    """WORKERS=2 and many connections at once: the in-process budget is one per process."""
    gw = start_gw(fleet, creds, rec, GATEWAY_RATE_LIMIT="40/h", WORKERS="2")
    codes = []
    lock = threading.Lock()

    def worker():
        s = requests.Session()
        for _ in range(10):
            r = call(gw, session=s)
            with lock:
                codes.append(r.status_code)

    ts = [threading.Thread(target=worker) for _ in range(8)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert sorted(set(codes)) == [200, 429]
    assert codes.count(200) == 40


def test_no_limit_configured_sends_no_headers(fleet, creds, rec):
    gw = start_gw(fleet, creds, rec)
    r = call(gw)
    assert r.status_code == 200
    assert "RateLimit-Limit" not in r.headers


def test_clients_file_limits_per_client_and_service(fleet, creds, rec, tmp_path):
    doc = json.loads(creds.clients_file.read_text())
    for c in doc["clients"]:
        if c["client_id"] == "reader":
            c["rate_limit"] = "2/m"
        if c["client_id"] == "writer":
            c["rate_limit"] = "100/m"
            c["rate_limit_burst"] = 3
            c["service_rate_limits"] = {"other": "1/m"}
    path = tmp_path / "clients.json"
    path.write_text(json.dumps(doc))
    gw = start_gw(fleet, creds, rec, GATEWAY_CLIENTS_FILE=str(path), GATEWAY_RATE_LIMIT="50/m")
    assert [call(gw, "reader").status_code for _ in range(3)] == [200, 200, 429]
    assert limit_headers(call(gw, "dev"))["RateLimit-Limit"] == 50  # the default
    # writer: burst 3 on its own limit; on "other" its per-service limit (burst 3 as well)
    assert [call(gw, "writer").status_code for _ in range(4)] == [200, 200, 200, 429]
    other = [call(gw, "writer", path="/api/other/api/x") for _ in range(4)]
    assert [r.status_code for r in other] == [200, 200, 200, 429]
    assert limit_headers(other[0])["RateLimit-Limit"] == 3


def test_two_gateways_share_one_budget_in_redis(fleet, creds, rec, redis_server):
    env = {"GATEWAY_RATE_LIMIT": "10/m", "RATE_LIMIT_URL": redis_server.url}
    a = start_gw(fleet, creds, rec, **env)
    b = start_gw(fleet, creds, rec, **env)
    rc = redis_server.client()
    rc.delete("lotmesh:rl:c:writer")
    codes = []
    for i in range(20):
        codes.append(call(a if i % 2 else b, client="writer").status_code)
    assert codes.count(200) == 10, codes
    assert codes[-1] == 429
    # the bucket is one key in Redis: a TAT in microseconds, expiring when the bucket is full
    tat = int(rc.get("lotmesh:rl:c:writer"))
    assert tat > time.time() * 1e6
    assert 0 < rc.pttl("lotmesh:rl:c:writer") <= 61_000
    for g in (a, b):
        assert g.proc.metric("lotmesh_gateway_rate_limit_store_up") == 1


def fire_until(stop, gw, codes, client="dev"):
    s = requests.Session()
    while not stop.is_set():
        try:
            codes.append(call(gw, client=client, session=s).status_code)
        except requests.RequestException as e:  # counted as a failure of the gateway
            codes.append(repr(e))


def test_redis_killed_and_restarted_under_load_fails_open(fleet, creds, rec, redis_server):
    gw = start_gw(fleet, creds, rec, GATEWAY_RATE_LIMIT="100000/s", RATE_LIMIT_URL=redis_server.url,
                  RATE_LIMIT_TIMEOUT="200ms")
    codes, stop = [], threading.Event()
    ts = [threading.Thread(target=fire_until, args=(stop, gw, codes)) for _ in range(4)]
    for t in ts:
        t.start()
    try:
        wait_until(lambda: len(codes) > 50)
        redis_server.stop()
        n = len(codes)
        wait_until(lambda: len(codes) > n + 100)
        assert wait_until(lambda: gw.proc.metric("lotmesh_gateway_rate_limit_store_up") == 0)
    finally:
        redis_server.start()
    try:
        assert wait_until(lambda: gw.proc.metric("lotmesh_gateway_rate_limit_store_up") == 1,
                          timeout=10)
        failed = gw.proc.metric("lotmesh_gateway_rate_limit_total", outcome="store_failed")
        n = len(codes)
        wait_until(lambda: len(codes) > n + 50)
        # decided by Redis again: no more store failures
        assert gw.proc.metric("lotmesh_gateway_rate_limit_total", outcome="store_failed") == failed
    finally:
        stop.set()
        for t in ts:
            t.join()
    assert set(codes) == {200}, {c for c in codes if c != 200}
    assert gw.proc.metric("lotmesh_gateway_rate_limit_total", outcome="store_failed") > 0
    down = [ln for ln in gw.proc.stderr().splitlines() if "Redis unavailable" in ln]
    back = [ln for ln in gw.proc.stderr().splitlines() if "Redis reachable again" in ln]
    # logged per outage, not per request (a command timing out on a loaded machine may make a
    # second, short one)
    assert 1 <= len(down) <= 3 and len(back) >= 1, down + back


def test_redis_unreachable_fail_closed_is_503_fail_open_passes(fleet, creds, rec):
    url = f"redis://127.0.0.1:{dead_port()}"
    closed = start_gw(fleet, creds, rec, GATEWAY_RATE_LIMIT="10/m", RATE_LIMIT_URL=url,
                      RATE_LIMIT_FAIL="closed")
    r = call(closed)
    p = assert_full_problem(r, 503)
    assert p["type"] == "urn:lotmesh:problem:rate-limit-unavailable"
    assert r.headers["Retry-After"] == "1"
    opened = start_gw(fleet, creds, rec, GATEWAY_RATE_LIMIT="10/m", RATE_LIMIT_URL=url)
    assert [call(opened).status_code for _ in range(12)] == [200] * 12
    assert opened.proc.metric("lotmesh_gateway_rate_limit_total", outcome="store_failed") == 12
    assert wait_until(lambda: opened.proc.metric("lotmesh_gateway_rate_limit_store_up") == 0)


@pytest.mark.parametrize("env, words", [
    ({"GATEWAY_RATE_LIMIT": "100"}, "GATEWAY_RATE_LIMIT must be a rate"),
    ({"GATEWAY_RATE_LIMIT": "0/s"}, "GATEWAY_RATE_LIMIT must be a rate"),
    ({"GATEWAY_RATE_LIMIT": "5/fortnight"}, "GATEWAY_RATE_LIMIT must be a rate"),
    ({"GATEWAY_RATE_LIMIT_BURST": "5"}, "GATEWAY_RATE_LIMIT_BURST needs GATEWAY_RATE_LIMIT"),
    ({"GATEWAY_RATE_LIMIT": "5/s", "GATEWAY_RATE_LIMIT_BURST": "-1"}, "GATEWAY_RATE_LIMIT_BURST"),
    ({"RATE_LIMIT_URL": "http://127.0.0.1:6379"}, "RATE_LIMIT_URL must be redis://"),
    ({"RATE_LIMIT_URL": "redis://127.0.0.1:99999"}, "RATE_LIMIT_URL the port must be"),
    ({"RATE_LIMIT_FAIL": "sometimes"}, "RATE_LIMIT_FAIL"),
])
def test_bad_configuration_is_one_clear_line(run_process, creds, env, words):
    res = run_process("gateway", {"GATEWAY_CLIENTS_FILE": str(creds.clients_file),
                                  "GATEWAY_ACCESS_KEY_FILE": str(creds.access_key_file),
                                  "PORT": "0", **env})
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "configuration error" in lines[0] and words in lines[0], lines


def test_bad_rate_in_clients_file_is_one_clear_line(run_process, creds, tmp_path):
    doc = json.loads(creds.clients_file.read_text())
    doc["clients"][1]["rate_limit"] = "fast"
    path = tmp_path / "clients.json"
    path.write_text(json.dumps(doc))
    res = run_process("gateway", {"GATEWAY_CLIENTS_FILE": str(path),
                                  "GATEWAY_ACCESS_KEY_FILE": str(creds.access_key_file),
                                  "PORT": "0"})
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "rate_limit must be a rate" in lines[0], lines
    assert "reader" in lines[0]
