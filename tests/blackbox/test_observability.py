"""Observability (DESIGN 3.7, issue 13): spans over OTLP/HTTP, the gateway's trace store and
dashboard, the merged OpenAPI document and Swagger UI, the registry's UI.

Real processes on loopback: a registry, articles (a second instance joins for the page test
and is killed), charges and a gateway, every one exporting its spans to the gateway's
POST /v1/traces (what `make run` does). A second installation exports to npm
@elastic/mockotlpserver, a third-party OTLP receiver. Pages are driven in Debian's Chromium
through npm playwright-core (tests/pages/driver.js); screenshots are kept under
build/test-artifacts/ (LOTMESH_ARTIFACTS overrides).
"""

import json
import os
import pathlib
import secrets
import subprocess
import threading
import time

import jwt
import pytest
import requests

from gateway_util import (SECRET, SERVICE_ENV, Fleet, Gateway, bootstrap_clients,
                          fleet_fixture, gateway_env)
from harness import IO_TIMEOUT, free_port
from harness import poll as wait_until
from services_util import run_contract_check

ROOT = pathlib.Path(__file__).resolve().parents[2]
PAGES = ROOT / "tests" / "pages"
ARTIFACTS = pathlib.Path(os.environ.get("LOTMESH_ARTIFACTS", ROOT / "build" / "test-artifacts"))


def otel_env(port, **extra):
    env = {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
           "OTEL_BSP_SCHEDULE_DELAY": "100ms"}
    env.update(extra)
    return env


def service_env(registry, workdir, db, otel):
    return {**SERVICE_ENV, **otel, "SERVICE_REGISTRY_URL": registry.base_url,
            "SERVICE_CHECK_TTL": "1s", "WORKERS": "2", "DATABASE_URL": str(workdir / db)}


def traceparent():
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return trace_id, span_id, f"00-{trace_id}-{span_id}-01"


class Install:
    pass


def start_install(fleet, creds, otel, gw_port):
    s = Install()
    s.registry = fleet.start("registry", {"REGISTRY_SNAPSHOT": "off", "WORKERS": "1",
                                          "SERVICE_TOKEN_SECRET": SECRET, **otel})
    s.articles = fleet.start("articles", service_env(s.registry, fleet.workdir, "articles.db", otel))
    s.charges = fleet.start("charges", service_env(s.registry, fleet.workdir, "charges.db", otel))
    s.gw = Gateway(fleet.start("gateway", gateway_env(creds, s.registry.base_url, **otel),
                               port=gw_port), creds)
    assert wait_until(lambda: s.gw.discovered("charges_api") == 1 and
                      s.gw.discovered("articles_api") == 1, 10), s.gw.proc.stderr_tail()
    assert wait_until(lambda: s.charges.metric("lotmesh_discovery_instances",
                                               service="articles_api") == 1, 10)
    return s


def create_article(gw):
    nr = f"OBS-{secrets.token_hex(4)}"
    r = gw.api("POST", "/api/articles_api/api/v1/article/create",
               json={"artikelnummer": nr, "bezeichnung": "Gouda", "einheit_id": 1,
                     "mindesthaltbarkeit_tage": 30})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def create_charge(gw, article, tp):
    return gw.api("POST", "/api/charges_api/api/v1/charge/create",
                  headers={"traceparent": tp},
                  json={"artikel_id": article, "menge": 3.5, "einheit_id": 1,
                        "herstellungsdatum": "2026-11-24"})


@pytest.fixture(scope="module")
def creds(tmp_path_factory):
    return bootstrap_clients(tmp_path_factory.mktemp("obs-creds"))


@pytest.fixture(scope="module")
def _fleet(tmp_path_factory):
    yield from fleet_fixture(tmp_path_factory, "obs")


@pytest.fixture(scope="module")
def inst(creds, _fleet):
    port = free_port()
    s = start_install(_fleet, creds, otel_env(port), port)
    s.fleet = _fleet
    s.otel = otel_env(port)
    return s


def admin(gw):
    return {"X-API-Key": gw.creds["dev"].api_key}


def store_spans(gw, trace_id):
    r = requests.get(gw.url(f"/dashboard/api/traces/{trace_id}"), headers=admin(gw),
                     timeout=IO_TIMEOUT)
    return r.json() if r.status_code == 200 else []


# ---- the span tree ----------------------------------------------------------------------------

KINDS = {"SPAN_KIND_SERVER": 2, "SPAN_KIND_CLIENT": 3, "SPAN_KIND_PRODUCER": 4,
         "SPAN_KIND_CONSUMER": 5}


def check_tree(spans, trace_id, parent, port_of, article):
    """spans: dicts with span_id, parent_span_id, name, kind (2 server, 3 client), service,
    attributes. The request under test: client span `parent` -> gateway SERVER -> gateway
    CLIENT -> charges SERVER -> charges CLIENT (one per call to articles) -> articles SERVER."""
    by_id = {s["span_id"]: s for s in spans}
    assert len(by_id) == len(spans), "span ids repeat"
    for s in spans:
        assert s["parent_span_id"] == parent or s["parent_span_id"] in by_id, \
            f"orphan span {s['name']} of {s['service']}"

    def children(sid, kind=None):
        return [s for s in spans if s["parent_span_id"] == sid and (kind is None or s["kind"] == kind)]

    roots = children(parent)
    assert len(roots) == 1, roots
    g = roots[0]
    assert (g["service"], g["kind"], g["name"]) == ("gateway", 2, "POST /api/{service}/{path...}")
    assert g["attributes"]["http.request.method"] == "POST"
    assert g["attributes"]["http.route"] == "/api/{service}/{path...}"
    assert g["attributes"]["http.response.status_code"] == 201
    [gc] = children(g["span_id"])
    assert (gc["service"], gc["kind"]) == ("gateway", 3)
    assert gc["attributes"]["server.port"] == port_of["charges"]
    assert gc["attributes"]["http.response.status_code"] == 201
    assert gc["attributes"]["url.full"].endswith("/api/v1/charge/create")
    [c] = children(gc["span_id"])
    assert (c["service"], c["kind"], c["name"]) == ("charges_api", 2, "POST /api/v1/charge/create")
    assert c["attributes"]["http.route"] == "/api/v1/charge/create"
    calls = children(c["span_id"], 3)
    assert calls and all(x["service"] == "charges_api" for x in calls)
    # the batch's event (issue 11): charges' relay publishes it (PRODUCER) and articles, when it
    # consumes charge.*, applies it (CONSUMER); both children of the writing request's span
    messaging = [s for s in children(c["span_id"]) if s["kind"] in (4, 5)]
    assert len(children(c["span_id"])) == len(calls) + len(messaging)
    pub = [s for s in messaging if s["kind"] == 4]
    assert len(pub) == 1 and (pub[0]["service"], pub[0]["name"]) == \
        ("charges_api", "charge.created publish"), messaging
    assert pub[0]["attributes"]["messaging.destination.name"] == "charge.created"
    for s in messaging:
        assert s["kind"] == 4 or (s["service"], s["name"]) == ("articles_api",
                                                                "charge.created process")
        assert not children(s["span_id"])
    assert any(x["attributes"]["url.full"].endswith(f"/api/v1/article/{article}") for x in calls)
    for x in calls:
        assert x["attributes"]["server.port"] == port_of["articles"]
        [a] = children(x["span_id"])
        assert a["service"] == "articles_api" and a["kind"] == 2
        assert a["attributes"]["http.response.status_code"] == 200
        assert not children(a["span_id"])
    assert len(spans) == 3 + 2 * len(calls) + len(messaging)
    # nested in time: a child lies within its parent (the event's spans come after the
    # request, by design: published and applied after its commit)
    for s in spans:
        p = by_id.get(s["parent_span_id"])
        if p and s["kind"] not in (4, 5):
            assert int(p["start"]) <= int(s["start"]) and int(s["end"]) <= int(p["end"]) + 1000


def store_view(spans):
    return [{**s, "start": s["start_unix_nano"], "end": s["end_unix_nano"]} for s in spans]


def test_one_request_through_the_gateway_is_one_trace_in_its_store(inst):
    article = create_article(inst.gw)
    trace_id, parent, tp = traceparent()
    r = create_charge(inst.gw, article, tp)
    assert r.status_code == 201, r.text
    ports = {"charges": inst.charges.port, "articles": inst.articles.port}

    def complete():
        spans = store_spans(inst.gw, trace_id)
        try:
            check_tree(store_view(spans), trace_id, parent, ports, article)
            return True
        except (AssertionError, ValueError, KeyError):  # spans still arriving
            return False

    assert wait_until(complete, 10), json.dumps(store_spans(inst.gw, trace_id), indent=1)
    check_tree(store_view(store_spans(inst.gw, trace_id)), trace_id, parent, ports, article)
    listed = requests.get(inst.gw.url("/dashboard/api/traces"), headers=admin(inst.gw),
                          timeout=IO_TIMEOUT).json()
    mine = [t for t in listed if t["trace_id"] == trace_id]
    assert mine and mine[0]["service"] == "gateway" and mine[0]["spans"] >= 5


def test_an_unsampled_request_records_no_span_anywhere(inst):
    """parentbased_always_on (the default): a parent that says "not sampled" decides for
    every process, so the trace is whole or absent, never partial."""
    article = create_article(inst.gw)
    trace_id, parent, _ = traceparent()
    r = create_charge(inst.gw, article, f"00-{trace_id}-{parent}-00")
    assert r.status_code == 201
    # a sampled request after it, exported in the same batches, proves the batch went out
    t2, p2, tp2 = traceparent()
    assert create_charge(inst.gw, article, tp2).status_code == 201
    assert wait_until(lambda: len(store_spans(inst.gw, t2)) >= 5, 10)
    assert store_spans(inst.gw, trace_id) == []


def test_span_counters_in_metrics(inst):
    for p in (inst.gw.proc, inst.charges, inst.articles, inst.registry):
        assert wait_until(lambda: (p.metric("lotmesh_spans_exported_total") or 0) > 0, 10), p.name
        assert p.metric("lotmesh_spans_dropped_total") == 0, p.name
    assert inst.gw.proc.metric("lotmesh_trace_store_traces") > 0


# ---- POST /v1/traces --------------------------------------------------------------------------

def service_token(aud="gateway", iss="articles_api", scope="write"):
    now = int(time.time())
    return jwt.encode({"iss": iss, "aud": aud, "sub": iss, "scope": scope, "iat": now,
                       "exp": now + 60}, SECRET, algorithm="HS256")


BODY = (ROOT / "fuzz" / "corpus" / "fuzz_otlp" / "two-spans").read_bytes()


# tokens are minted when the test runs (parameters are made at collection, minutes earlier)
VALID = {"aud": "gateway", "scope": "write"}


@pytest.mark.parametrize("token, ctype, body, status, detail", [
    (None, None, BODY, 401, "service token"),
    ("x.y.z", None, BODY, 401, None),
    ({"aud": "charges_api", "scope": "write"}, None, BODY, 403, None),
    ({"aud": "gateway", "scope": "read"}, None, BODY, 403, "write scope"),
    (VALID, "application/x-protobuf", BODY, 415, "application/json"),
    (VALID, "application/json", b'{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"zz"}]}]}]}',
     400, "resourceSpans[0].scopeSpans[0].spans[0].traceId"),
    (VALID, "application/json", b'{"resourceSpans":', 400, "malformed JSON"),
], ids=["no-token", "malformed-token", "other-audience", "read-scope", "protobuf", "bad-trace-id",
        "bad-json"])
def test_trace_receiver_refuses(inst, token, ctype, body, status, detail):
    headers = {}
    if isinstance(token, dict):
        headers["Authorization"] = f"Bearer {service_token(**token)}"
    elif token:
        headers["Authorization"] = f"Bearer {token}"
    if ctype:
        headers["Content-Type"] = ctype
    r = requests.post(inst.gw.url("/v1/traces"), data=body, headers=headers, timeout=IO_TIMEOUT)
    assert r.status_code == status, r.text
    assert r.headers["Content-Type"] == "application/problem+json"
    if detail:
        assert detail in r.json()["detail"]


def test_trace_receiver_takes_otlp_json(inst):
    r = requests.post(inst.gw.url("/v1/traces"), data=BODY, timeout=IO_TIMEOUT,
                      headers={"Authorization": f"Bearer {service_token()}",
                               "Content-Type": "application/json"})
    assert r.status_code == 200 and r.json() == {"partialSuccess": {}}
    spans = store_spans(inst.gw, "4bf92f3577b34da6a3ce929d0e0e4736")
    assert [s["name"] for s in spans] == ["GET /api/{service}/{path}", "GET"]
    assert spans[1]["parent_span_id"] == spans[0]["span_id"] and spans[1]["status"] == 2


def test_a_dead_collector_drops_spans_and_counts_them(start_process):
    """Export never blocks a request: with nobody listening and a queue of 4, requests are
    answered at once and the spans beyond the queue are counted as dropped."""
    p = start_process("articles", otel_env(free_port(), OTEL_BSP_MAX_QUEUE_SIZE="4",
                                           OTEL_BSP_SCHEDULE_DELAY="10s"))
    for _ in range(30):
        assert p.get("/health").status_code == 200
    # at most the queue (4) and the batch being retried (4) are held; the rest is dropped
    assert p.metric("lotmesh_spans_dropped_total") >= 30 - 8
    assert p.metric("lotmesh_span_queue_spans") <= 4
    # the export thread's first attempt (refused) runs on its own schedule: wait for it
    assert wait_until(lambda: p.metric("lotmesh_span_export_failures_total") >= 1, 10)


@pytest.mark.parametrize("env, message", [
    ({"OTEL_TRACES_SAMPLER": "sometimes"}, "OTEL_TRACES_SAMPLER"),
    ({"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "2"},
     "OTEL_TRACES_SAMPLER_ARG must be a number from 0 to 1"),
    ({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, "OTEL_EXPORTER_OTLP_PROTOCOL must be http/json"),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "https://collector:4318"}, "must be an http:// URL"),
    ({"OTEL_RESOURCE_ATTRIBUTES": "novalue"}, "OTEL_RESOURCE_ATTRIBUTES"),
    ({"OTEL_TRACES_EXPORTER": "zipkin"}, "OTEL_TRACES_EXPORTER"),
])
def test_bad_otel_configuration_stops_with_one_line(run_process, env, message):
    res = run_process("articles", {"PORT": str(free_port()), "OTEL_TRACES_EXPORTER": "otlp", **env})
    assert res.returncode == 2
    errors = [ln for ln in res.stderr_lines if "configuration error" in ln]
    assert len(errors) == 1 and message in errors[0], res.stderr


def test_console_exporter_prints_otlp_json_with_resource_attributes(start_process):
    p = start_process("articles", {"OTEL_TRACES_EXPORTER": "console", "OTEL_BSP_SCHEDULE_DELAY": "50ms",
                                   "OTEL_SERVICE_NAME": "artikel-test",
                                   "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=ci,team=inv%20entory"})
    trace_id, parent, tp = traceparent()
    assert p.get("/health", headers={"traceparent": tp}).status_code == 200
    assert wait_until(lambda: (p.metric("lotmesh_spans_exported_total") or 0) >= 1, 5)
    p.terminate()
    out = p.stdout_path.read_text()
    docs = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    spans = [(rs, sp) for d in docs for rs in d["resourceSpans"]
             for ss in rs["scopeSpans"] for sp in ss["spans"] if sp["traceId"] == trace_id]
    assert len(spans) == 1, out
    rs, sp = spans[0]
    attrs = {a["key"]: a["value"]["stringValue"] for a in rs["resource"]["attributes"]}
    assert attrs["service.name"] == "artikel-test"
    assert attrs["deployment.environment"] == "ci" and attrs["team"] == "inv entory"
    assert sp["parentSpanId"] == parent and sp["name"] == "GET /health" and sp["kind"] == 2


# ---- a third-party receiver --------------------------------------------------------------------

@pytest.fixture(scope="module")
def pages_tools():
    r = subprocess.run([str(PAGES / "setup.sh")], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    return PAGES


class Receiver:
    """npm @elastic/mockotlpserver on a free port; collects what it prints."""

    def __init__(self, tools):
        self.port = free_port()
        self.proc = subprocess.Popen(["node", str(tools / "otlp_receiver.js"), str(self.port)],
                                     cwd=str(tools), stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, start_new_session=True)
        first = self.proc.stdout.readline()
        assert json.loads(first) == {"listening": self.port}, first + self.proc.stderr.read()
        self.requests = []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        for line in self.proc.stdout:
            self.requests.append(json.loads(line))

    def spans(self, trace_id):
        out = []
        for req in list(self.requests):
            for rs in req.get("resourceSpans", []):
                attrs = rs.get("resource", {}).get("attributes", {})
                for ss in rs.get("scopeSpans", []):
                    for sp in ss.get("spans", []):
                        if sp["traceId"] == trace_id:
                            out.append({"span_id": sp["spanId"],
                                        "parent_span_id": sp.get("parentSpanId", ""),
                                        "name": sp["name"],
                                        "kind": KINDS.get(sp["kind"], 0),
                                        "service": attrs.get("service.name"),
                                        "attributes": sp.get("attributes", {}),
                                        "start": sp["startTimeUnixNano"], "end": sp["endTimeUnixNano"]})
        return out

    def close(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


def test_one_request_is_one_trace_at_a_third_party_receiver(creds, pages_tools, tmp_path):
    rec = Receiver(pages_tools)
    fleet = Fleet(tmp_path)
    try:
        s = start_install(fleet, creds, otel_env(rec.port, OTEL_RESOURCE_ATTRIBUTES="deployment.environment=test"),
                          free_port())
        article = create_article(s.gw)
        trace_id, parent, tp = traceparent()
        assert create_charge(s.gw, article, tp).status_code == 201
        ports = {"charges": s.charges.port, "articles": s.articles.port}

        def complete():
            try:
                check_tree(rec.spans(trace_id), trace_id, parent, ports, article)
                return True
            except (AssertionError, ValueError, KeyError):  # spans still arriving
                return False

        assert wait_until(complete, 10), json.dumps(rec.spans(trace_id), indent=1)
        check_tree(rec.spans(trace_id), trace_id, parent, ports, article)
    finally:
        problems = fleet.stop()
        rec.close()
    assert not problems, problems


# ---- OpenAPI and Swagger UI --------------------------------------------------------------------

def test_openapi_merges_the_services_contracts(inst, tmp_path):
    r = requests.get(inst.gw.url("/openapi.json"), timeout=IO_TIMEOUT)
    assert r.status_code == 200
    doc = r.json()
    paths = doc["paths"]
    assert "/auth/token" in paths
    for p in ("/api/articles_api/api/v1/articles", "/api/articles_api/api/v1/article/{id}",
              "/api/charges_api/api/v1/charges", "/api/charges_api/api/v1/charge/create"):
        assert p in paths, sorted(paths)
    own = json.loads((ROOT / "services" / "charges" / "openapi.json").read_text())
    assert len([p for p in paths if p.startswith("/api/charges_api/")]) == len(own["paths"])
    assert "charges_api.Charge" in doc["components"]["schemas"]
    assert "x-lotmesh-unavailable" not in doc
    text = json.dumps(doc)
    assert '"#/components/schemas/Charge"' not in text  # every $ref was prefixed
    f = tmp_path / "merged.json"
    f.write_text(text)
    rc, out = run_contract_check(f)
    assert rc == 0, json.dumps(out["errors"][:5], indent=1)


def test_docs_serves_swagger_ui_locally(inst):
    r = requests.get(inst.gw.url("/docs"), timeout=IO_TIMEOUT)
    assert r.status_code == 200 and "/docs/swagger-ui-bundle.js" in r.text
    assert "http" not in r.text.replace("http-equiv", "")  # no CDN
    js = requests.get(inst.gw.url("/docs/swagger-ui-bundle.js"), timeout=IO_TIMEOUT)
    assert js.status_code == 200 and js.headers["Content-Type"].startswith("text/javascript")
    assert len(js.content) > 500_000
    assert requests.get(inst.gw.url("/docs/../gateway-clients.json"),
                        timeout=IO_TIMEOUT).status_code == 404


def test_dashboard_needs_the_admin_scope(inst):
    r = requests.get(inst.gw.url("/dashboard"), timeout=IO_TIMEOUT)
    assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith("Basic")
    r = requests.get(inst.gw.url("/dashboard"), auth=("x", "wrong"), timeout=IO_TIMEOUT)
    assert r.status_code == 401
    reader = inst.gw.creds["reader"].api_key
    assert requests.get(inst.gw.url("/dashboard/api/state"), headers={"X-API-Key": reader},
                        timeout=IO_TIMEOUT).status_code == 403
    r = requests.get(inst.gw.url("/dashboard"), auth=("dev", inst.gw.creds["dev"].api_key),
                     timeout=IO_TIMEOUT)
    assert r.status_code == 200 and "<title>lotmesh gateway" in r.text


# ---- pages in Chromium -------------------------------------------------------------------------

class Browser:
    def __init__(self, tools):
        self.proc = subprocess.Popen(["node", str(tools / "driver.js")], cwd=str(tools),
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, start_new_session=True)

    def __call__(self, op, **kw):
        self.proc.stdin.write(json.dumps({"op": op, **kw}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line, self.proc.stderr.read()
        answer = json.loads(line)
        assert answer.pop("ok"), f"{op}: {answer.get('error')}"
        return answer

    def close(self):
        try:
            self("close")
            self.proc.stdin.close()
            self.proc.wait(20)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(5)


@pytest.fixture(scope="module")
def browser(pages_tools):
    b = Browser(pages_tools)
    yield b
    b.close()


def shot(browser, name):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    browser("screenshot", path=str(ARTIFACTS / name))
    assert (ARTIFACTS / name).stat().st_size > 10_000


def test_dashboard_page_is_live(inst, browser):
    gw = inst.gw
    article = create_article(gw)
    second = inst.fleet.start("articles", service_env(inst.registry, inst.fleet.workdir,
                                                      "articles.db", inst.otel))
    assert wait_until(lambda: gw.discovered("articles_api") == 2, 10)
    for _ in range(20):  # traffic for the figures, spread over both articles instances
        assert gw.api("GET", f"/api/articles_api/api/v1/article/{article}").status_code == 200
    trace_id, _, tp = traceparent()  # the most recent trace: listed on the page
    assert create_charge(gw, article, tp).status_code == 201
    browser("open", url=gw.url("/dashboard"), user="dev", password=gw.creds["dev"].api_key)
    admin_view = requests.get(gw.url("/admin/services"), headers=admin(gw), timeout=IO_TIMEOUT).json()
    ids = [i["id"] for s in admin_view["services"] for i in s["instances"]]
    assert len(ids) == 3
    for i in ids:  # every instance the API knows, passing
        browser("wait", js=f"document.querySelector('tr[data-instance=\"{i}\"] .badge.passing') !== null")
    browser("wait", js=f"document.querySelector('tr[data-trace=\"{trace_id}\"]') !== null")
    # the 5-minute series holds the requests just made
    browser("wait", js="Number(document.querySelector('section[data-service=articles_api]').dataset.requests) >= 20")
    browser("click", selector=f"tr[data-trace=\"{trace_id}\"]")
    browser("wait", js="document.querySelectorAll('#waterfall .span').length >= 5")
    names = browser("eval", js="[...document.querySelectorAll('#waterfall .span')].map(e => e.textContent)")["value"]
    assert any("POST /api/v1/charge/create" in n for n in names)
    shot(browser, "dashboard.png")
    # an instance dies: its row stops passing (shown critical while the gateway still holds
    # an entry for it, gone once discovery has dropped it)
    second.kill()
    dead = [i for i in ids if i.startswith("articles_api") and str(second.port) in i][0]
    browser("wait", timeout=15000,
            js=f"!document.querySelector('tr[data-instance=\"{dead}\"] .badge.passing')")
    shot(browser, "dashboard-instance-down.png")
    assert browser("errors")["errors"] == []
    inst.fleet.procs.remove(second)


def test_registry_ui_is_live(inst, browser):
    reg = inst.registry
    extra = inst.fleet.start("charges", service_env(reg, inst.fleet.workdir, "charges.db", inst.otel))
    browser("open", url=reg.url("/ui"))
    health = requests.get(reg.url("/v1/health/service/charges_api"), timeout=IO_TIMEOUT).json()
    assert len(health) == 2
    browser("click", selector="li[data-service=charges_api]")
    for e in health:
        browser("wait", js=f"document.querySelector('tr[data-instance=\"{e['Service']['ID']}\"][data-health=passing]') !== null")
    listed = browser("eval", js="[...document.querySelectorAll('li[data-service]')].map(e => e.dataset.service)")["value"]
    assert "articles_api" in listed and "charges_api" in listed
    shot(browser, "registry-ui.png")
    victim = [e["Service"]["ID"] for e in health if str(extra.port) in e["Service"]["ID"]][0]
    extra.kill()  # SIGKILL: no deregistration; its TTL check goes critical
    browser("wait", timeout=15000,
            js=f"!document.querySelector('tr[data-instance=\"{victim}\"][data-health=passing]')")
    shot(browser, "registry-ui-instance-down.png")
    assert browser("errors")["errors"] == []
    inst.fleet.procs.remove(extra)


def test_swagger_ui_page_renders_the_merged_document(inst, browser):
    browser("open", url=inst.gw.url("/docs"))
    browser("wait", timeout=20000,
            js="document.querySelectorAll('.opblock').length > 10")
    text = browser("eval", js="document.body.textContent")["value"]
    assert "/api/charges_api/api/v1/charge/create" in text and "/auth/token" in text
    shot(browser, "docs.png")
    assert browser("errors")["errors"] == []
