"""The service registry (issue 4) seen by real clients: python-consul 0.7.1 (Debian) against
lotmesh-registry — registration with TTL and HTTP checks, health/catalog/agent reads, the
passing and tag filters, deregistration, TTL passes, TTL expiry, failing HTTP checks,
deregister-after-critical, blocking queries (woken by a change, or answered at their wait),
snapshots across restarts, bad input as RFC 9457 problems — and lotmesh processes
registering themselves: SIGTERM leaves at once, SIGKILL after the TTL, two instances both
listed and both in each other's discovery cache, a registry restart re-learns everyone.

Timings are small (TTL 1 s, intervals of 100–200 ms) and every wait is a bounded poll, so
the suite takes seconds and does not depend on machine speed beyond generous deadlines."""

import http.server
import json
import signal
import threading
import time

import consul
import pytest
import requests

from harness import assert_problem
from harness import poll as wait_until  # IO_TIMEOUT (5 s) as before


@pytest.fixture
def cc(start_process):
    """Factory: cc(port) -> consul.Consul. Their keep-alive sessions are closed before the
    processes stop (a client that never reads its idle connection would otherwise hold a
    server's lingering close for its full 2 s)."""
    made = []

    def make(port):
        cl = consul.Consul(host="127.0.0.1", port=port)
        made.append(cl)
        return cl

    yield make
    for cl in made:
        cl.http.session.close()


@pytest.fixture
def reg(start_process):
    return start_process("registry", {"REGISTRY_SNAPSHOT": "off"})


@pytest.fixture
def c(reg, cc):
    return cc(reg.port)


def ids(entries):
    return sorted(e["Service"]["ID"] for e in entries)


def passing_ids(c, name, **kw):
    return ids(c.health.service(name, passing=True, **kw)[1])


def check_status(c, check_id):
    return c.agent.checks().get(check_id, {}).get("Status")


class Target:
    """A tiny HTTP server for the registry's HTTP checks; status is what it answers."""

    def __init__(self):
        target = self
        self.status = 200
        self.hits = 0

        class H(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                target.hits += 1
                body = b"fine" if target.status < 300 else b"broken"
                self.send_response(target.status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a):
                pass

        self.srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.port = self.srv.server_address[1]
        self.thread = threading.Thread(target=self.srv.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path="/health"):
        return f"http://127.0.0.1:{self.port}{path}"

    def close(self):
        self.srv.shutdown()
        self.srv.server_close()


@pytest.fixture
def target():
    t = Target()
    yield t
    t.close()


# ---- python-consul against the registry ---------------------------------------------------

def test_register_with_ttl_and_pass(c, reg):
    assert c.agent.service.register("articles_api", service_id="a1", address="127.0.0.1",
                                    port=8002, tags=["v1"], check=consul.Check.ttl("10s"))
    index, nodes = c.health.service("articles_api")
    assert int(index) > 1
    assert ids(nodes) == ["a1"]
    svc = nodes[0]["Service"]
    assert (svc["Service"], svc["Address"], svc["Port"], svc["Tags"]) == \
        ("articles_api", "127.0.0.1", 8002, ["v1"])
    checks = {ch["CheckID"]: ch for ch in nodes[0]["Checks"]}
    assert checks["serfHealth"]["Status"] == "passing"
    assert checks["service:a1"]["Status"] == "critical"  # a TTL check starts critical
    assert checks["service:a1"]["Type"] == "ttl"
    assert passing_ids(c, "articles_api") == []

    assert c.agent.check.ttl_pass("service:a1", "all good")  # python-consul sends GET
    assert passing_ids(c, "articles_api") == ["a1"]
    ch = c.agent.checks()["service:a1"]
    assert (ch["Status"], ch["Output"], ch["ServiceID"]) == ("passing", "all good", "a1")
    assert c.agent.services()["a1"]["Port"] == 8002
    # PUT works as in Consul, and warn/fail with ?note=
    r = requests.put(reg.url("/v1/agent/check/warn/service:a1?note=slow"), timeout=5)
    assert r.status_code == 200 and "X-Consul-Index" in r.headers
    assert check_status(c, "service:a1") == "warning"
    assert passing_ids(c, "articles_api") == []  # warning is not passing
    assert c.agent.check.ttl_fail("service:a1", "down")
    assert c.agent.checks()["service:a1"]["Output"] == "down"
    assert check_status(c, "service:a1") == "critical"


def test_register_with_http_check(c, target):
    assert c.agent.service.register(
        "charges_api", service_id="c1", address="127.0.0.1", port=target.port,
        check=consul.Check.http(target.url(), "100ms", timeout="1s"))
    assert wait_until(lambda: passing_ids(c, "charges_api") == ["c1"])
    ch = c.agent.checks()["service:c1"]
    assert ch["Type"] == "http"
    assert ch["Output"].startswith(f"HTTP GET {target.url()}: 200 OK Output: fine")
    # a failing HTTP check takes the instance out of ?passing
    target.status = 500
    assert wait_until(lambda: passing_ids(c, "charges_api") == [])
    assert "500" in c.agent.checks()["service:c1"]["Output"]
    target.status = 429  # Consul's rule: Too Many Requests is a warning
    assert wait_until(lambda: check_status(c, "service:c1") == "warning")
    target.status = 200
    assert wait_until(lambda: passing_ids(c, "charges_api") == ["c1"])
    # a target that is gone is critical too
    target.close()
    assert wait_until(lambda: passing_ids(c, "charges_api") == [])
    assert wait_until(lambda: "connection refused" in c.agent.checks()["service:c1"]["Output"])


def test_http_check_timeout(c, reg):
    # a server that accepts and never answers: the probe's Timeout decides
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(16)
    try:
        port = s.getsockname()[1]
        assert c.agent.service.register(
            "slow", service_id="s1", port=port,
            check={"HTTP": f"http://127.0.0.1:{port}/", "Interval": "100ms", "Timeout": "150ms",
                   "Status": "passing"})
        assert wait_until(lambda: check_status(c, "service:s1") == "critical", 3)
        assert "timed out" in c.agent.checks()["service:s1"]["Output"]
    finally:
        s.close()


def test_catalog_and_tags(c):
    c.agent.service.register("articles_api", service_id="a1", port=1, tags=["primary", "v1"])
    c.agent.service.register("articles_api", service_id="a2", port=2, tags=["v1"])
    c.agent.service.register("charges_api", service_id="c1", port=3)
    index, services = c.catalog.services()
    assert int(index) > 1
    assert set(services) == {"articles_api", "charges_api"}
    assert sorted(services["articles_api"]) == ["primary", "v1"]
    assert services["charges_api"] == []
    _, nodes = c.catalog.service("articles_api")
    assert sorted(n["ServiceID"] for n in nodes) == ["a1", "a2"]
    assert {n["ServicePort"] for n in nodes} == {1, 2}
    _, nodes = c.catalog.service("articles_api", tag="primary")
    assert [n["ServiceID"] for n in nodes] == ["a1"]
    assert passing_ids(c, "articles_api", tag="PRIMARY") == ["a1"]  # no check: passing
    assert c.health.service("nobody")[1] == []
    assert c.catalog.service("nobody")[1] == []


def test_deregister(c, reg):
    c.agent.service.register("articles_api", service_id="a1", port=1,
                             check=consul.Check.ttl("10s"))
    assert c.agent.service.deregister("a1")  # python-consul sends GET
    assert c.health.service("articles_api")[1] == []
    assert "service:a1" not in c.agent.checks()
    assert not c.agent.service.deregister("a1")  # unknown: 404
    r = requests.put(reg.url("/v1/agent/service/deregister/a1"), timeout=5)
    body = assert_problem(r, 404, "Unknown service ID")
    assert "a1" in body["detail"]
    assert int(r.headers["X-Consul-Index"]) > 1
    assert not c.agent.check.ttl_pass("service:a1")
    r = requests.put(reg.url("/v1/agent/check/pass/service:a1"), timeout=5)
    assert_problem(r, 404, "Unknown check ID")
    assert "X-Consul-Index" in r.headers


def test_reregistration_keeps_status_and_index(c, reg):
    def register(port):
        return c.agent.service.register("articles_api", service_id="a1", port=port,
                                        check=consul.Check.ttl("10s"))
    register(1)
    c.agent.check.ttl_pass("service:a1")
    i1, _ = c.health.service("articles_api")
    register(1)  # identical: nothing changes, no watcher would wake
    assert c.health.service("articles_api")[0] == i1
    c.agent.check.ttl_pass("service:a1")  # a heartbeat keeping the status: index stays
    assert c.health.service("articles_api")[0] == i1
    register(2)  # changed: new index, the check keeps passing
    i2, nodes = c.health.service("articles_api", passing=True)
    assert int(i2) > int(i1)
    assert nodes[0]["Service"]["Port"] == 2


# ---- time: TTL expiry, deregister-after-critical ------------------------------------------

def test_ttl_expiry_takes_instance_out_of_passing(c):
    c.agent.service.register("articles_api", service_id="a1", port=1,
                             check=consul.Check.ttl("400ms"))
    c.agent.check.ttl_pass("service:a1", "beat")
    assert passing_ids(c, "articles_api") == ["a1"]
    t0 = time.monotonic()
    assert wait_until(lambda: passing_ids(c, "articles_api") == [], 3)
    assert time.monotonic() - t0 >= 0.3
    ch = c.agent.checks()["service:a1"]
    assert ch["Status"] == "critical"
    assert ch["Output"].startswith("TTL expired") and "beat" in ch["Output"]
    assert ids(c.health.service("articles_api")[1]) == ["a1"]  # still registered


def test_deregister_critical_service_after(c, reg):
    r = requests.put(reg.url("/v1/agent/service/register"), timeout=5, data=json.dumps({
        "Name": "articles_api", "ID": "a1", "Port": 1,
        "Check": {"TTL": "300ms", "Status": "passing",
                  "DeregisterCriticalServiceAfter": "500ms"}}))
    assert r.status_code == 200
    c.agent.service.register("articles_api", service_id="a2", port=2,
                             check=consul.Check.ttl("300ms"))  # critical, but never reaped
    assert wait_until(lambda: ids(c.health.service("articles_api")[1]) == ["a2"], 4)
    assert "a1" not in c.agent.services()
    assert "service:a1" not in c.agent.checks()
    m = reg.metrics()
    assert m[("lotmesh_registry_deregistered_critical_total", frozenset())] == 1
    assert m[("lotmesh_registry_services", frozenset())] == 1


# ---- blocking queries ---------------------------------------------------------------------

def test_blocking_query_wakes_on_change(c):
    c.agent.service.register("articles_api", service_id="a1", port=1)
    index, _ = c.health.service("articles_api")
    result = {}

    def block():
        t0 = time.monotonic()
        result["answer"] = c.health.service("articles_api", index=index, wait="10s")
        result["took"] = time.monotonic() - t0

    th = threading.Thread(target=block)
    th.start()
    time.sleep(0.3)
    assert th.is_alive()  # parked
    c.agent.service.register("articles_api", service_id="a2", port=2)
    th.join(5)
    assert not th.is_alive()
    new_index, nodes = result["answer"]
    assert int(new_index) > int(index)
    assert ids(nodes) == ["a1", "a2"]
    assert 0.25 < result["took"] < 3


def test_blocking_query_returns_at_its_wait(c):
    c.agent.service.register("articles_api", service_id="a1", port=1,
                             check=consul.Check.ttl("10s"))
    c.agent.check.ttl_pass("service:a1")
    index, _ = c.health.service("articles_api", passing=True)
    # changes elsewhere and heartbeats do not wake a watch of articles_api
    threading.Timer(0.2, lambda: c.agent.service.register("other", service_id="o1")).start()
    threading.Timer(0.4, lambda: c.agent.check.ttl_pass("service:a1")).start()
    t0 = time.monotonic()
    same, nodes = c.health.service("articles_api", passing=True, index=index, wait="1s")
    took = time.monotonic() - t0
    assert same == index
    assert ids(nodes) == ["a1"]
    assert 1.0 <= took < 1.0 + 1.0 / 16 + 1.0  # wait + at most wait/16 jitter + slack


def test_blocking_query_on_catalog_and_unknown_name(c):
    index, _ = c.health.service("later_api")  # never seen
    result = {}

    def block():
        result["answer"] = c.health.service("later_api", index=index, wait="10s")

    th = threading.Thread(target=block)
    th.start()
    time.sleep(0.2)
    assert th.is_alive()
    c.agent.service.register("later_api", service_id="l1", port=1)
    th.join(5)
    assert not th.is_alive() and ids(result["answer"][1]) == ["l1"]
    # catalog.services blocks on registrations
    cindex, _ = c.catalog.services()
    threading.Timer(0.2, lambda: c.agent.service.register("x", service_id="x1")).start()
    t0 = time.monotonic()
    newc, services = c.catalog.services(index=cindex, wait="5s")
    assert int(newc) > int(cindex) and "x" in services and time.monotonic() - t0 < 3


def test_index_from_a_previous_life_answers_at_once(c):
    index, _ = c.health.service("articles_api")
    t0 = time.monotonic()
    got, _ = c.health.service("articles_api", index=int(index) + 1000, wait="5s")
    assert time.monotonic() - t0 < 1
    assert int(got) <= int(index)  # the client sees the index go back and starts over


def test_parked_queries_do_not_hold_shutdown(start_process, cc):
    reg = start_process("registry", {"REGISTRY_SNAPSHOT": "off", "SHUTDOWN_TIMEOUT": "10s"})
    c = cc(reg.port)
    index, _ = c.health.service("articles_api")
    answers = []
    threads = [threading.Thread(target=lambda: answers.append(
        c.health.service("articles_api", index=index, wait="30s"))) for _ in range(3)]
    for t in threads:
        t.start()
    wait_until(lambda: reg.metric("lotmesh_registry_blocking_queries") == 3, 3)
    t0 = time.monotonic()
    assert reg.terminate() == 0
    assert time.monotonic() - t0 < 3
    for t in threads:
        t.join(5)
    assert len(answers) == 3  # each got an answer, not a reset


# ---- bad input ----------------------------------------------------------------------------

@pytest.mark.parametrize("body,detail", [
    (b"", "body is empty"),
    (b"{\"Name\":", "malformed JSON at line 1"),
    (b"[]", "must be a JSON object"),
    (b"{\"ID\":\"x\"}", "Name: is required"),
    (b"{\"Name\":\"x\",\"Check\":{\"TTL\":\"10x\"}}", "Check.TTL: invalid duration \"10x\""),
    (b"{\"Name\":\"x\",\"Check\":{\"HTTP\":\"http://h/\",\"Interval\":\"1y\"}}",
     "Check.Interval: invalid duration"),
    (b"{\"Name\":\"x\",\"Port\":70000}", "Port: must be an integer from 0 to 65535"),
    (b"{\"Name\":\"x\",\"Port\":-1}", "Port"),
    (b"{\"Name\":\"x\",\"Check\":{\"HTTP\":\"http://h/\"}}", "Interval: must be greater than 0"),
    (b"{\"Name\":\"x\",\"Check\":{\"Script\":\"rm -rf /\",\"Interval\":\"1s\"}}",
     "Script checks are not supported"),
    (b"{\"Name\":\"x\",\"Connect\":{\"Native\":true}}", "Connect is not supported"),
    (b"{\"Name\":\"x\",\"Bogus\":1}", "unknown or unsupported field \"Bogus\""),
    (b"{\"Name\":\"x\",\"name\":\"y\"}", "given more than once"),
    (b"{\"Name\":\"x\",\"Meta\":{\"k\":[1]}}", "Meta.k: must be a string"),
])
def test_bad_registration_is_400_problem(reg, c, body, detail):
    r = requests.put(reg.url("/v1/agent/service/register"), data=body, timeout=5)
    assert_problem(r, 400, detail)
    assert int(r.headers["X-Consul-Index"]) >= 1
    assert c.agent.services() == {}  # nothing half-registered


def test_python_consul_sees_bad_request(c):
    with pytest.raises(consul.base.BadRequest):
        c.agent.service.register("x", check=consul.Check.ttl("10x"))
    with pytest.raises(consul.base.BadRequest):
        c.agent.service.register("x", port=70000)


def test_bad_query_parameters(reg):
    for q, detail in (("index=abc", "Invalid index"), ("index=1&wait=10x", "Invalid wait time"),
                      ("passing=maybe", "Invalid value for ?passing"),
                      ("dc=mars", "No path to datacenter"),
                      ("filter=Service.Port%3D%3D1", "filter expressions are not supported")):
        r = reg.get("/v1/health/service/articles_api?" + q)
        assert_problem(r, 400, detail)
        assert "X-Consul-Index" in r.headers
    assert reg.get("/v1/health/service/a?passing=false&dc=dc1&stale&token=t").status_code == 200


def test_ttl_update_of_http_check_is_refused(c, reg, target):
    c.agent.service.register("x", service_id="x1", check=consul.Check.http(target.url(), "1s"))
    r = requests.put(reg.url("/v1/agent/check/pass/service:x1"), timeout=5)
    assert_problem(r, 400, "does not have associated TTL")


def test_huge_body_is_refused(start_process):
    reg = start_process("registry", {"REGISTRY_SNAPSHOT": "off", "MAX_BODY_BYTES": "4k"})
    body = json.dumps({"Name": "x", "Tags": ["t" * 100] * 100}).encode()
    r = requests.put(reg.url("/v1/agent/service/register"), data=body, timeout=5)
    assert_problem(r, 413)  # the HTTP engine refuses it before the registry parses anything
    tags = json.dumps({"Name": "x", "Tags": ["t"] * 65})
    r = requests.put(reg.url("/v1/agent/service/register"), data=tags, timeout=5)
    assert_problem(r, 400, "more than 64 tags")


def test_all_reads_carry_x_consul_index(reg):
    for path in ("/v1/health/service/a", "/v1/catalog/services", "/v1/catalog/service/a",
                 "/v1/agent/services", "/v1/agent/checks"):
        r = reg.get(path)
        assert r.status_code == 200, path
        assert r.headers["Content-Type"] == "application/json"
        assert int(r.headers["X-Consul-Index"]) >= 1, path


# ---- snapshots ----------------------------------------------------------------------------

def test_restart_with_snapshot(start_process, tmp_path, cc):
    snap = tmp_path / "registry.json"
    env = {"REGISTRY_SNAPSHOT": str(snap)}
    reg = start_process("registry", env)
    c = cc(reg.port)
    c.agent.service.register("articles_api", service_id="a1", port=1, tags=["t"],
                             check=consul.Check.ttl("30s"))
    c.agent.check.ttl_pass("service:a1", "fine")
    c.agent.service.register("charges_api", service_id="c1", port=2)
    index, _ = c.health.service("articles_api")
    c.http.session.close()
    assert reg.terminate() == 0  # the final snapshot is written on the way out
    assert json.loads(snap.read_text())["Version"] == 1

    reg2 = start_process("registry", env, port=reg.port)
    c2 = cc(reg2.port)
    index2, nodes = c2.health.service("articles_api", passing=True)
    assert index2 == index  # indexes do not go backwards across a restart
    assert ids(nodes) == ["a1"] and nodes[0]["Service"]["Tags"] == ["t"]
    assert c2.agent.checks()["service:a1"]["Output"] == "fine"
    assert set(c2.catalog.services()[1]) == {"articles_api", "charges_api"}
    # a SIGKILLed registry keeps what it had written (snapshots follow changes at once)
    c2.agent.service.deregister("c1")
    assert wait_until(lambda: "charges_api" not in json.loads(snap.read_text())["Names"] or
                      not any(s["Service"]["ID"] == "c1"
                              for s in json.loads(snap.read_text())["Services"]), 3)
    reg2.expected_exit = -signal.SIGKILL
    reg2.kill()
    reg3 = start_process("registry", env, port=reg.port)
    c3 = cc(reg3.port)
    assert set(c3.agent.services()) == {"a1"}


def test_corrupt_snapshot_is_set_aside(start_process, tmp_path, cc):
    snap = tmp_path / "registry.json"
    snap.write_text("{\"Version\": 1, \"Services\": [")
    reg = start_process("registry", {"REGISTRY_SNAPSHOT": str(snap)})
    assert cc(reg.port).agent.services() == {}
    assert list(tmp_path.glob("registry.json.corrupt-*"))
    assert any("snapshot unusable" in ln.get("msg", "") for ln in reg.log_lines())


# ---- lotmesh processes registering themselves ----------------------------------------------

def articles(start_process, reg, tmp_path, name="a", **extra):
    env = {"SERVICE_REGISTRY_URL": reg.base_url, "SERVICE_CHECK_TTL": "1s",
           "DATABASE_URL": str(tmp_path / f"articles-{name}.db"), "WORKERS": "2"}
    env.update(extra)
    return start_process("articles", env)


def instance_ports(c, name="articles_api", passing=True):
    _, nodes = c.health.service(name, passing=passing)
    return sorted(n["Service"]["Port"] for n in nodes)


def test_process_registers_and_sigterm_leaves_at_once(start_process, reg, c, tmp_path):
    a = articles(start_process, reg, tmp_path)
    assert wait_until(lambda: instance_ports(c) == [a.port])
    _, nodes = c.health.service("articles_api")
    svc = nodes[0]["Service"]
    assert svc["ID"].startswith(f"articles_api-127.0.0.1-{a.port}-")
    assert svc["Address"] == "127.0.0.1"
    assert a.get("/ready").json()["checks"]["registered"] == "ok"
    assert a.metric("lotmesh_discovery_registered") == 1
    assert a.terminate() == 0
    # deregistered before it stopped accepting: gone by the time it has exited
    assert c.health.service("articles_api")[1] == []
    assert any("deregistered" in ln.get("msg", "") for ln in a.log_lines())


def test_process_killed_leaves_after_its_ttl(start_process, reg, c, tmp_path):
    a = articles(start_process, reg, tmp_path, SERVICE_DEREGISTER_AFTER="1s")
    assert wait_until(lambda: instance_ports(c) == [a.port])
    time.sleep(0.5)  # heartbeats keep it passing past its first TTL's worth of time
    assert instance_ports(c) == [a.port]
    a.expected_exit = -signal.SIGKILL
    a.kill()
    assert instance_ports(c) == [a.port]  # nobody said goodbye
    t0 = time.monotonic()
    assert wait_until(lambda: instance_ports(c) == [], 4)
    assert time.monotonic() - t0 < 2.5
    # and DeregisterCriticalServiceAfter removes it from the catalog
    assert wait_until(lambda: c.health.service("articles_api")[1] == [], 4)


def test_http_check_mode(start_process, reg, c, tmp_path):
    a = articles(start_process, reg, tmp_path, SERVICE_CHECK="http",
                 SERVICE_CHECK_INTERVAL="200ms", SERVICE_CHECK_TIMEOUT="150ms")
    assert wait_until(lambda: instance_ports(c) == [a.port])
    ch = next(v for v in c.agent.checks().values() if v["ServiceName"] == "articles_api")
    assert ch["Type"] == "http"
    assert wait_until(lambda: "200 OK" in next(
        v for v in c.agent.checks().values() if v["ServiceName"] == "articles_api")["Output"])
    a.expected_exit = -signal.SIGKILL
    a.kill()
    assert wait_until(lambda: instance_ports(c) == [], 3)


def test_http_check_mode_registers_again_after_registry_restart(start_process, tmp_path, cc):
    reg = start_process("registry", {"REGISTRY_SNAPSHOT": "off"})
    a = articles(start_process, reg, tmp_path, SERVICE_CHECK="http",
                 SERVICE_CHECK_INTERVAL="200ms", SERVICE_CHECK_TIMEOUT="150ms")
    assert wait_until(lambda: instance_ports(cc(reg.port)) == [a.port])
    reg.expected_exit = -signal.SIGKILL
    reg.kill()
    reg2 = start_process("registry", {"REGISTRY_SNAPSHOT": "off"}, port=reg.port)
    # no heartbeat to be refused in this mode: the periodic re-registration brings it back
    assert wait_until(lambda: instance_ports(cc(reg2.port)) == [a.port], 5)


def discovered(p, service="articles_api"):
    return p.metric("lotmesh_discovery_instances", service=service)


def test_two_instances_listed_and_in_each_others_cache(start_process, reg, c, tmp_path):
    a = articles(start_process, reg, tmp_path, "a", SERVICE_WATCH="articles_api")
    b = articles(start_process, reg, tmp_path, "b", SERVICE_WATCH="articles_api")
    assert wait_until(lambda: instance_ports(c) == sorted([a.port, b.port]))
    assert wait_until(lambda: discovered(a) == 2 and discovered(b) == 2)
    # a change reaches the other's cache through its blocking query
    assert b.terminate() == 0
    assert wait_until(lambda: discovered(a) == 1, 3)
    updates = a.metric("lotmesh_discovery_watch_updates_total", service="articles_api")
    assert updates and updates >= 2


def test_registry_outage_and_restart(start_process, tmp_path, cc):
    reg = start_process("registry", {"REGISTRY_SNAPSHOT": "off"})
    c = cc(reg.port)
    a = articles(start_process, reg, tmp_path, "a", SERVICE_WATCH="articles_api")
    b = articles(start_process, reg, tmp_path, "b", SERVICE_WATCH="articles_api")
    assert wait_until(lambda: discovered(a) == 2 and discovered(b) == 2)
    # the registry dies: the caches keep the last known instances, requests keep working
    reg.expected_exit = -signal.SIGKILL
    reg.kill()
    assert wait_until(lambda: (a.metric("lotmesh_discovery_watch_errors_total",
                                        service="articles_api") or 0) >= 1, 3)
    assert discovered(a) == 2 and discovered(b) == 2
    a.assert_healthy()
    # a new registry without a snapshot knows nobody; the heartbeats' 404 makes both
    # instances register again, and the watches pick them up
    reg2 = start_process("registry", {"REGISTRY_SNAPSHOT": "off"}, port=reg.port)
    c2 = cc(reg2.port)
    assert wait_until(lambda: instance_ports(c2) == sorted([a.port, b.port]), 8)
    assert a.metric("lotmesh_discovery_registrations_total") == 2
    assert wait_until(lambda: discovered(a) == 2 and discovered(b) == 2, 8)
    assert c  # (the first client's registry is gone)


def test_ready_waits_for_registration(start_process, tmp_path, cc):
    from harness import free_port
    port = free_port()
    a = start_process("articles", {"SERVICE_REGISTRY_URL": f"http://127.0.0.1:{port}",
                                   "SERVICE_CHECK_TTL": "1s",
                                   "DATABASE_URL": str(tmp_path / "a.db")})
    r = a.get("/ready")
    assert_problem(r, 503, "registered")
    reg = start_process("registry", {"REGISTRY_SNAPSHOT": "off"}, port=port)
    assert wait_until(lambda: a.get("/ready").status_code == 200, 8)
    assert instance_ports(cc(reg.port)) == [a.port]


def test_registry_metrics(reg, c):
    c.agent.service.register("a", service_id="a1", check=consul.Check.ttl("10s"))
    c.agent.service.register("a", service_id="a2")
    m = reg.metrics()
    assert m[("lotmesh_registry_services", frozenset())] == 2
    assert m[("lotmesh_registry_checks", frozenset({("status", "critical")}))] == 1
    assert m[("lotmesh_registry_index", frozenset())] >= 3
