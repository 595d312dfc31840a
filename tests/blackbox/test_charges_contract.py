"""Contract tests of lotmesh-charges (issue 3): the served GET /openapi.json is a valid
OpenAPI 3.1 document (checked by a real validator, @seriousme/openapi-schema-validator, and
every schema in it compiled by Ajv in strict JSON Schema 2020-12 mode: tests/contract), it
documents exactly the routes the server has and the constraints charge.c enforces, and live
responses of every endpoint — bodies and headers of successes and problems, including the 503
of an articles outage — match its schemas (python3-jsonschema's Draft 2020-12 validator, and
Ajv again on the same exchanges). Request schemas agree with the server's validation on a set
of sample bodies.

The infrastructure (services_util.Contract, tests/contract/check.mjs) is shared with
test_articles_contract.py; a real articles process stands behind charges (charges_util)."""

import copy
import json

import pytest

from contract_checks import (METHODS, ajv_samples, assert_ajv, assert_live_responses,
                             assert_problem_responses,
                             assert_rejected, assert_routes, assert_served_document,
                             assert_statuses_exercised, assert_valid_openapi, exchange)

from events_util import pruned_feed
from charges_util import (CREATE, LIST, UNIT_LITER, Stack, assert_full_problem, charge_path,
                          module_stack, send_json, unique)
from services_util import AUTH_ENV, REPO, Contract, bearer, run_contract_check, service_token

DOC_FILE = REPO / "services" / "charges" / "openapi.json"
ONE = "/api/v1/charge/{id}"

# the server's routes: (path template, methods) — HEAD is answered wherever GET is
ROUTES = {
    LIST: {"GET", "HEAD"},
    CREATE: {"POST"},
    ONE: {"GET", "HEAD", "PUT", "PATCH", "DELETE"},
    "/api/v1/events": {"GET", "HEAD"},
    "/health": {"GET", "HEAD"},
    "/ready": {"GET", "HEAD"},
    "/metrics": {"GET", "HEAD"},
    "/openapi.json": {"GET", "HEAD"},
}
# statuses no black-box test can cause: a failing database (reads, deletes, readiness);
# the 503 of writes (articles unreachable) is caused in test_outage_problems_match_the_document
NOT_PRODUCIBLE = {"503"}


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    # EVENT_RETENTION=1s: the feed's 410 (a pruned position) is among the exchanges
    yield from module_stack(tmp_path_factory, charges_extra={"EVENT_RETENTION": "1s"})


@pytest.fixture(scope="module")
def svc(stack):
    return stack.charges


@pytest.fixture(scope="module")
def doc(svc):
    r = svc.get("/openapi.json")
    assert r.status_code == 200
    assert r.headers["Content-Type"] == "application/json"
    return r.json()


@pytest.fixture(scope="module")
def contract(doc):
    return Contract(doc)


def _schema_ok(contract, body, name):
    try:
        contract.validate(body, {"$ref": f"#/components/schemas/{name}"}, name)
    except AssertionError:
        return False
    return True


# ---- the document ---------------------------------------------------------------------------

def test_served_document_is_the_source_file(svc, doc):
    assert_served_document(svc, doc, DOC_FILE)


def test_document_is_valid_openapi_3_1(doc, tmp_path):
    assert_valid_openapi(doc, tmp_path)


@pytest.mark.parametrize("breakage", ["dangling-ref", "bad-type", "unknown-keyword",
                                      "optional-path-id"])
def test_validator_rejects_broken_documents(doc, tmp_path, breakage):
    """The tools are not a rubber stamp on this document either."""
    bad = copy.deepcopy(doc)
    props = bad["components"]["schemas"]["Charge"]["properties"]
    if breakage == "dangling-ref":
        props["status"] = {"$ref": "#/components/schemas/Status"}
    elif breakage == "bad-type":
        props["menge"]["type"] = "float"
    elif breakage == "unknown-keyword":
        props["menge"]["exclusiveMinimun"] = 0
    elif breakage == "optional-path-id":
        bad["components"]["parameters"]["ChargeId"]["required"] = False
    assert_rejected(bad, tmp_path)


def test_document_has_exactly_the_servers_routes(svc, doc):
    assert_routes(svc, doc, ROUTES)


def test_operation_ids_unique_and_problems_everywhere(doc, contract):
    assert_problem_responses(doc, contract)


def test_documented_query_parameters_are_the_accepted_ones(svc, contract):
    op = contract.operation("GET", LIST)
    params = [contract.resolve(p) for p in op["parameters"]]
    names = [p["name"] for p in params if p["in"] == "query"]
    r = svc.get(LIST + "?nope=1")
    assert r.json()["detail"].endswith("known: " + ", ".join(names))
    by_name = {p["name"]: p["schema"] for p in params}
    assert by_name["sort"] == {"type": "string", "enum": ["fefo", "id"], "default": "fefo"}
    assert by_name["status"]["enum"] == ["aktiv", "gesperrt", "verbraucht", "abgelaufen"]
    assert (by_name["limit"]["minimum"], by_name["limit"]["maximum"],
            by_name["limit"]["default"]) == (1, 500, 50)
    assert (by_name["charge_nummer"]["minLength"], by_name["charge_nummer"]["maxLength"]) == \
        (1, 64)
    # the bounds really are the server's: just inside passes, just outside is 400
    for name, ok, bad in (("limit", 500, 501), ("limit", 1, 0), ("offset", 0, -1),
                          ("artikel_id", by_name["artikel_id"]["maximum"],
                           by_name["artikel_id"]["maximum"] + 1),
                          ("artikel_id", 1, 0)):
        assert svc.get(LIST, params={name: ok}).status_code == 200, (name, ok)
        assert svc.get(LIST, params={name: bad}).status_code == 400, (name, bad)


def test_schema_constraints_match_the_server(doc):
    """The numbers in the document are the ones charge.c enforces (the live checks below probe
    each of them)."""
    s = doc["components"]["schemas"]
    for name in ("ChargeCreate", "ChargeUpdate", "ChargePatch"):
        p = s[name]["properties"]
        assert p["menge"]["exclusiveMinimum"] == 0 and p["menge"]["maximum"] == 1e12
        assert (p["charge_nummer"]["minLength"], p["charge_nummer"]["maxLength"]) == (1, 64)
        assert p["bemerkungen"]["maxLength"] == 2000 and "null" in p["bemerkungen"]["type"]
        assert "null" in p["mindesthaltbarkeitsdatum"]["type"]
        for ref in ("artikel_id", "einheit_id"):
            assert (p[ref]["minimum"], p[ref]["maximum"]) == (1, 9200000000000000000)
        assert s[name]["additionalProperties"] is False
    assert s["ChargeCreate"]["properties"]["status"]["enum"] == ["aktiv", "gesperrt"]
    for name in ("ChargeUpdate", "ChargePatch", "Charge"):
        assert s[name]["properties"]["status"]["enum"] == \
            ["aktiv", "gesperrt", "verbraucht", "abgelaufen"]
    for name in ("ChargeCreate", "ChargeUpdate"):
        assert set(s[name]["required"]) == {"artikel_id", "menge", "einheit_id",
                                            "herstellungsdatum"}
    assert "required" not in s["ChargePatch"]
    assert set(s["Charge"]["required"]) == set(s["Charge"]["properties"])
    for f in ("id", "erstellt_am", "geaendert_am"):
        assert s["Charge"]["properties"][f]["readOnly"] is True
        assert f not in s["ChargeCreate"]["properties"]
    for name in ("Charge", "Problem", "FieldError"):
        assert s[name]["additionalProperties"] is False, name


# ---- request schemas vs the server's validation ----------------------------------------------

def _create_samples(art):
    good = {"artikel_id": art["id"], "menge": 1, "einheit_id": UNIT_LITER,
            "herstellungsdatum": "2026-01-01"}
    return [
        (good, True),
        ({**good, "mindesthaltbarkeitsdatum": None, "bemerkungen": None}, True),
        ({**good, "herstellungsdatum": "2026-01-01T10:00:00.123+02:00",
          "mindesthaltbarkeitsdatum": "2026-01-01t10:00:00z", "status": "gesperrt",
          "bemerkungen": "ü" * 2000, "menge": 1e12}, True),
        ({**good, "herstellungsdatum": "2026-01-01 10:00:00Z", "menge": 1e-6}, True),
        ({**good, "charge_nummer": "ä" * 60}, True),
        ({**good, "menge": 0}, False), ({**good, "menge": -1}, False),
        ({**good, "menge": 1e12 + 1}, False), ({**good, "menge": "1"}, False),
        ({**good, "artikel_id": 0}, False), ({**good, "artikel_id": 1.5}, False),
        ({**good, "artikel_id": 9223372036854775807}, False),
        ({**good, "einheit_id": None}, False),
        ({**good, "herstellungsdatum": "2026-01-01T10:00:00"}, False),
        ({**good, "herstellungsdatum": "01.01.2026"}, False),
        ({**good, "herstellungsdatum": None}, False),
        ({**good, "mindesthaltbarkeitsdatum": "morgen"}, False),
        ({**good, "charge_nummer": ""}, False), ({**good, "charge_nummer": "   "}, False),
        ({**good, "charge_nummer": "ä" * 65}, False), ({**good, "charge_nummer": None}, False),
        ({**good, "bemerkungen": "x" * 2001}, False), ({**good, "bemerkungen": 1}, False),
        ({**good, "status": "verbraucht"}, False), ({**good, "status": "abgelaufen"}, False),
        ({**good, "status": "neu"}, False), ({**good, "status": None}, False),
        ({**good, "id": 1}, False), ({**good, "erstellt_am": "2026-01-01T00:00:00Z"}, False),
        ({**good, "geaendert_am": None}, False), ({**good, "farbe": "rot"}, False),
        ({k: v for k, v in good.items() if k != "menge"}, False), ({}, False),
    ]


def test_create_schema_agrees_with_server(stack, contract):
    art = stack.article()
    for body, valid in _create_samples(art):
        body = dict(body)
        nr = body.get("charge_nummer")
        if isinstance(nr, str) and nr.strip():  # unique, same length class
            u = unique("S")
            body["charge_nummer"] = u + nr[len(u):]
        assert _schema_ok(contract, body, "ChargeCreate") == valid, \
            (body, "schema disagrees with the expectation")
        r = stack.post_charge(body)
        assert r.status_code == (201 if valid else 422), (json.dumps(body)[:200], r.text[:300])
        contract.check(r, "POST", CREATE)
        if valid:
            contract.validate(r.json(), {"$ref": "#/components/schemas/Charge"}, "created")


def test_patch_and_update_schemas_agree_with_server(stack, contract):
    art = stack.article()
    c = stack.charge(art)
    path = charge_path(c["id"])
    cases = [({"status": "gesperrt"}, True), ({"bemerkungen": None}, True), ({}, True),
             ({"mindesthaltbarkeitsdatum": None}, True),
             ({"id": c["id"], "erstellt_am": "x", "geaendert_am": 1, "menge": 3}, True),
             ({"charge_nummer": None}, False), ({"menge": 0}, False),
             ({"status": "weg"}, False), ({"farbe": 1}, False),
             ({"bemerkungen": "€" * 2001}, False), ({"herstellungsdatum": None}, False),
             ({"herstellungsdatum": "2026-13-01"}, False)]
    for body, valid in cases:
        assert _schema_ok(contract, body, "ChargePatch") == valid, body
        r = stack.patch(c["id"], body)
        assert r.status_code == (200 if valid else 422), (body, r.text)
        contract.check(r, "PATCH", ONE)
    rep = stack.get(c["id"]).json()
    assert _schema_ok(contract, rep, "ChargeUpdate"), "a GET body must be a valid PUT body"
    r = stack.put(c["id"], rep)
    assert r.status_code == 200, r.text
    contract.check(r, "PUT", ONE)
    short = {k: rep[k] for k in ("artikel_id", "menge", "einheit_id")}
    assert not _schema_ok(contract, short, "ChargeUpdate")
    r = stack.put(c["id"], short)
    assert r.status_code == 422
    contract.check(r, "PUT", ONE)
    # what a schema cannot express is still documented as a 422: an id naming another batch,
    # a status change that is not allowed, an MHD before the production date
    for body in ({**rep, "id": rep["id"] + 1},
                 {**rep, "mindesthaltbarkeitsdatum": "2000-01-01"}):
        r = stack.put(c["id"], body)
        assert r.status_code == 422, r.text
        contract.check(r, "PUT", ONE)
    assert stack.patch(c["id"], {"status": "verbraucht"}).status_code == 200
    r = stack.patch(c["id"], {"status": "aktiv"})
    assert r.status_code == 422
    contract.check(r, "PATCH", ONE)
    assert path == r.json()["instance"]


# ---- live responses vs the document -----------------------------------------------------------


@pytest.fixture(scope="module")
def exchanges(stack):
    """Every endpoint with every status a client can cause (except 413, see below, and 503),
    as (method, path template, response)."""
    svc = stack.charges
    out = []

    def add(method, template, r):
        out.append(exchange(method, template, r))
        return r

    def post(doc, headers=None):
        return add("POST", CREATE, stack.post_charge(doc, headers))

    art = stack.article(mindesthaltbarkeit_tage=14)
    plain = stack.article()
    body = stack.body
    # creates
    created = []
    for i in range(5):
        r = post(body(art if i % 2 else plain, menge=i + 0.5,
                      herstellungsdatum=f"2026-0{i + 1}-15T08:00:00+01:00",
                      mindesthaltbarkeitsdatum=None if i % 2 else f"2026-1{i % 3}-01",
                      bemerkungen="b" if i % 2 else None,
                      status="gesperrt" if i == 3 else "aktiv"))
        assert r.status_code == 201, r.text
        created.append(r.json())
    c = created[0]
    ci = charge_path(c["id"])
    key = unique("ck-")
    kb = body(art)
    assert post(kb, {"Idempotency-Key": key}).status_code == 201
    r = post(kb, {"Idempotency-Key": key})  # the replay carries the first answer's ETag too
    assert r.status_code == 201 and r.headers["ETag"] == '"1"'
    assert post(body(art, menge=2), {"Idempotency-Key": key}).status_code == 422
    assert post(kb, {"Idempotency-Key": "a b"}).status_code == 400
    assert post(b'{"menge": ').status_code == 400
    assert post(b"[" * 10000).status_code == 400
    assert post(b'{"menge": 1e400}').status_code == 400
    assert post(b'{"bemerkungen": "\xff"}').status_code == 400
    assert post(body(art, charge_nummer=c["charge_nummer"])).status_code == 409
    assert add("POST", CREATE, svc.request("POST", CREATE, data=json.dumps(kb),
                                           headers={"Content-Type": "text/plain"})) \
        .status_code == 415
    assert post(body(art, menge=0, farbe=1, id=3)).status_code == 422
    assert post(body(art, artikel_id=987654321)).status_code == 422
    assert post(body(art, mindesthaltbarkeitsdatum="2020-01-01")).status_code == 422
    # reads
    assert add("GET", ONE, svc.get(ci)).status_code == 200
    assert add("GET", ONE, svc.get(ci, headers={"If-None-Match": '"1"'})).status_code == 304
    assert add("GET", ONE, svc.get(ci + "?x=1")).status_code == 400
    assert add("HEAD", ONE, svc.request("HEAD", ci)).status_code == 200
    assert add("GET", ONE, svc.get("/api/v1/charge/abc")).status_code == 400
    assert add("GET", ONE, svc.get("/api/v1/charge/987654321")).status_code == 404
    assert add("HEAD", ONE, svc.request("HEAD", "/api/v1/charge/987654321")).status_code == 404
    assert add("HEAD", ONE, svc.request("HEAD", "/api/v1/charge/0")).status_code == 400
    # lists
    r = add("GET", LIST, svc.get(LIST, params={"artikel_id": art["id"], "limit": 1,
                                               "offset": 1}))
    assert r.status_code == 200 and "Link" in r.headers
    for params in ({}, {"sort": "id", "limit": 500}, {"status": "gesperrt"},
                   {"mhd_before": "2026-12-01", "mhd_after": "2026-01-01T00:00:00+01:00"},
                   {"charge_nummer": c["charge_nummer"]}, {"artikel_id": 987654321}):
        assert add("GET", LIST, svc.get(LIST, params=params)).status_code == 200
    assert add("HEAD", LIST, svc.request("HEAD", LIST, params={"limit": 1})).status_code == 200
    assert add("GET", LIST, svc.get(LIST, params={"q": "x"})).status_code == 400
    assert add("GET", LIST, svc.get(LIST, params={"limit": 0, "status": "x"})).status_code == 400
    assert add("GET", LIST, svc.get(LIST, params={"sort": "mhd"})).status_code == 400
    assert add("HEAD", LIST, svc.request("HEAD", LIST, params={"limit": 0})).status_code == 400
    # updates
    r = add("PUT", ONE, stack.put(c["id"], {**c, "menge": 9}))
    assert r.status_code == 200
    tag = r.headers["ETag"]
    full = {k: c[k] for k in ("artikel_id", "menge", "einheit_id", "herstellungsdatum")}
    assert add("PUT", ONE, stack.put(c["id"], full, {"If-Match": '"1"'})).status_code == 412
    assert add("PUT", ONE, stack.put(c["id"], {**full, "charge_nummer":
                                               created[1]["charge_nummer"]})).status_code == 409
    assert add("PUT", ONE, stack.put(c["id"], {"menge": 1})).status_code == 422
    assert add("PUT", ONE, stack.put(c["id"], b"{")).status_code == 400
    assert add("PUT", ONE, send_json(svc, "PUT", "/api/v1/charge/x", full)).status_code == 400
    assert add("PUT", ONE, svc.request("PUT", ci, data=b"{}")).status_code == 415
    assert add("PUT", ONE, stack.put(987654321, full)).status_code == 404
    r = add("PATCH", ONE, svc.request("PATCH", ci, data=json.dumps({"status": "gesperrt"}),
                                      headers={"Content-Type": "application/merge-patch+json",
                                               "If-Match": tag}))
    assert r.status_code == 200
    assert add("PATCH", ONE, stack.patch(c["id"], {"status": "aktiv"}, {"If-Match": tag})) \
        .status_code == 412
    assert add("PATCH", ONE, stack.patch(c["id"], {"charge_nummer":
                                                   created[1]["charge_nummer"]})) \
        .status_code == 409
    assert add("PATCH", ONE, stack.patch(c["id"], {"status": None})).status_code == 422
    assert add("PATCH", ONE, stack.patch(c["id"], {"einheit_id": 987654})).status_code == 422
    assert add("PATCH", ONE, stack.patch(c["id"], b"[]")).status_code == 400
    assert add("PATCH", ONE, svc.request("PATCH", ci, data=b"{}",
                                         headers={"Content-Type": "text/json"})).status_code \
        == 415
    assert add("PATCH", ONE, stack.patch(987654321, {})).status_code == 404
    # deletes
    d = created[4]
    di = charge_path(d["id"])
    assert add("DELETE", ONE, svc.request("DELETE", di, headers={"If-Match": '"9"'})) \
        .status_code == 412
    assert add("DELETE", ONE, svc.request("DELETE", di, headers={"If-Match": '"1"'})) \
        .status_code == 204
    assert add("DELETE", ONE, svc.request("DELETE", di)).status_code == 404
    assert add("DELETE", ONE, svc.request("DELETE", "/api/v1/charge/-5")).status_code == 400
    # operations
    for p in ("/health", "/ready", "/metrics", "/openapi.json"):
        assert add("GET", p, svc.get(p, headers={"X-Request-ID": "contract-1"})).status_code \
            == 200
        assert add("HEAD", p, svc.request("HEAD", p)).status_code == 200
    # errors outside any operation: the document's "default" problem
    assert add("GET", "/health", svc.request("DELETE", "/health")).status_code == 405
    assert add("GET", ONE, svc.request("POST", ci)).status_code == 405
    assert add("GET", LIST, svc.request("PUT", LIST)).status_code == 405
    # the event feed: a page, a bad parameter, a pruned position (410, EVENT_RETENTION=1s)
    E = "/api/v1/events"
    r = add("GET", E, svc.get(E + "?after=0&limit=1000"))
    assert r.status_code in (200, 410)
    assert add("GET", E, svc.get(E + "?wait=99")).status_code == 400
    assert add("HEAD", E, svc.request("HEAD", E + "?wait=99")).status_code == 400
    add("GET", E, pruned_feed(svc))
    assert add("HEAD", E, svc.request("HEAD", E + "?after=0")).status_code == 410
    last = pruned_feed(svc).json()["pruned_through"]
    assert add("GET", E, svc.get(f"{E}?after={last}")).status_code == 200
    assert add("HEAD", E, svc.request("HEAD", f"{E}?after={last}")).status_code == 200
    return out


def test_live_responses_match_the_document(contract, exchanges):
    assert_live_responses(contract, exchanges)


def test_every_documented_status_is_exercised(doc, exchanges, auth_exchanges):
    assert_statuses_exercised(doc, exchanges + auth_exchanges, NOT_PRODUCIBLE)


def test_live_responses_match_the_document_by_ajv(contract, exchanges, tmp_path, doc):
    """The same exchanges through Ajv (JSON Schema 2020-12 with formats), a second,
    independent validator; plus instances that must fail, so a silent pass shows."""
    samples = ajv_samples(contract, exchanges)
    good = json.loads(exchanges[0].body)
    for label, inst in (("no id", {k: v for k, v in good.items() if k != "id"}),
                        ("extra", {**good, "x": 1}),
                        ("menge 0", {**good, "menge": 0}),
                        ("local time", {**good, "herstellungsdatum": "2026-01-01T10:00:00+01:00"}),
                        ("bad date", {**good, "erstellt_am": "yesterday"}),
                        ("bad status", {**good, "status": "weg"})):
        samples.append({"label": f"must fail: {label}", "expect_valid": False,
                        "schema": "#/components/schemas/Charge", "instance": inst})
    samples.append({"label": "must fail: problem without instance", "expect_valid": False,
                    "schema": "#/components/schemas/Problem",
                    "instance": {"type": "about:blank", "title": "t", "status": 400,
                                 "detail": "d", "trace_id": "0" * 32}})
    assert_ajv(doc, samples, tmp_path)


# ---- service tokens (DESIGN 3.5) ---------------------------------------------------------------

@pytest.fixture(scope="module")
def auth_stack(tmp_path_factory):
    yield from module_stack(tmp_path_factory, both_extra=AUTH_ENV, tag="charges-auth")


@pytest.fixture(scope="module")
def auth_exchanges(auth_stack):
    """Both processes check service tokens: every /api/ operation without a usable token
    (401) and with a token that does not allow it (403), and the open operations."""
    s = auth_stack
    s.articles_headers = bearer(service_token("articles_api"))
    s.charges_headers = bearer(service_token("charges_api"))
    art = s.article(mindesthaltbarkeit_tage=3)
    c = s.charge(art, herstellungsdatum="2026-01-01")  # charges asked articles with its token
    assert c["mindesthaltbarkeitsdatum"] == "2026-01-04T00:00:00Z"
    ci = charge_path(c["id"])
    unauthorized = [{}, {"Authorization": "Basic dXNlcjpwdw=="}, {"Authorization": "Bearer"},
                    {"Authorization": "Bearer not.a.jwt"},
                    bearer(service_token("charges_api", exp_in=-120)),
                    bearer(service_token("charges_api", secret="another-secret-" * 3)),
                    bearer(service_token("charges_api", iss="mallory"))]
    other_audience = bearer(service_token("articles_api"))
    read_only = bearer(service_token("charges_api", scope="read"))
    full = {k: c[k] for k in ("artikel_id", "menge", "einheit_id", "herstellungsdatum")}
    ops = [("GET", LIST, LIST, None), ("HEAD", LIST, LIST, None),
           ("POST", CREATE, CREATE, s.body(art)), ("GET", ONE, ci, None),
           ("HEAD", ONE, ci, None), ("PUT", ONE, ci, full), ("PATCH", ONE, ci, {"menge": 2}),
           ("DELETE", ONE, ci, None), ("GET", "/api/v1/events", "/api/v1/events", None),
           ("HEAD", "/api/v1/events", "/api/v1/events", None)]
    out = []

    def send(method, path, doc, headers):
        if doc is None:
            return s.charges.request(method, path, headers=headers)
        return send_json(s.charges, method, path, doc, headers)

    for method, template, path, doc in ops:
        for h in unauthorized:
            r = send(method, path, doc, h)
            assert r.status_code == 401, (method, path, h, r.text)
            out.append(exchange(method, template, r))
        r = send(method, path, doc, other_audience)
        assert r.status_code == 403, (method, path, r.text)
        out.append(exchange(method, template, r))
        r = send(method, path, doc, read_only)
        reading = method in ("GET", "HEAD")
        assert r.status_code == (200 if reading else 403), (method, path, r.text)
        out.append(exchange(method, template, r))
        # the token is checked before the request: no token and a bad body is still 401
        if doc is not None:
            r = send_json(s.charges, method, path, b"{", {})
            assert r.status_code == 401
            out.append(exchange(method, template, r))
    for p in ("/health", "/ready", "/metrics", "/openapi.json"):
        r = s.charges.get(p)
        assert r.status_code == 200, (p, r.text)
        out.append(exchange("GET", p, r))
    # the full token still works for everything
    assert s.patch(c["id"], {"menge": 3}).status_code == 200
    assert s.list().status_code == 200
    return out


def test_token_problems_match_the_document(contract, auth_exchanges):
    for x in auth_exchanges:
        contract.check(x.raw, x.method, x.template)
        if x.status in (401, 403):
            www = x.headers.get("www-authenticate", "")
            assert www.startswith('Bearer realm="lotmesh-service"'), (x.method, x.template)
            if x.method != "HEAD":
                body = assert_full_problem(x.raw, x.status)
                assert body["type"] == "urn:lotmesh:problem:auth"


def test_token_problems_match_the_document_by_ajv(contract, auth_exchanges, tmp_path, doc):
    samples = ajv_samples(contract, auth_exchanges)
    (tmp_path / "openapi.json").write_text(json.dumps(doc), encoding="utf-8")
    (tmp_path / "samples.json").write_text(json.dumps(samples), encoding="utf-8")
    rc, out = run_contract_check(tmp_path / "openapi.json", tmp_path / "samples.json")
    assert rc == 0 and out["valid"], json.dumps(out, indent=1)[:4000]


def test_security_is_documented_where_it_is_checked(doc, auth_exchanges):
    scheme = doc["components"]["securitySchemes"]["serviceToken"]
    assert (scheme["type"], scheme["scheme"], scheme["bearerFormat"]) == ("http", "bearer", "JWT")
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if method not in METHODS:
                continue
            if path.startswith("/api/"):
                assert op.get("security") == [{"serviceToken": []}], (path, method)
            else:
                assert "security" not in op, (path, method)
    assert "security" not in doc


def test_outage_problems_match_the_document(start_process, tmp_path, contract):
    """The 503 of the writes: articles unreachable and the article unknown locally."""
    stack = Stack.start(start_process, tmp_path)
    known = stack.article()
    c = stack.charge(known)
    unseen = stack.article()
    assert stack.articles.terminate() == 0
    out = []
    r = stack.post_charge(stack.body(known))
    assert r.status_code == 201
    out.append(exchange("POST", CREATE, r))
    r = stack.post_charge(stack.body(unseen))
    out.append(exchange("POST", CREATE, r))
    r = stack.put(c["id"], {**c, "artikel_id": unseen["id"]})
    out.append(exchange("PUT", ONE, r))
    r = stack.patch(c["id"], {"artikel_id": unseen["id"]})
    out.append(exchange("PATCH", ONE, r))
    for x in out[1:]:
        assert x.status == 503
        body = assert_full_problem(x.raw, 503)
        assert body["type"] == "urn:lotmesh:problem:dependency-unavailable"
    for x in out:
        contract.check(x.raw, x.method, x.template)
    f = tmp_path / "samples.json"
    f.write_text(json.dumps(ajv_samples(contract, out)), encoding="utf-8")
    d = tmp_path / "openapi.json"
    d.write_text(json.dumps(contract.doc), encoding="utf-8")
    rc, res = run_contract_check(d, f)
    assert rc == 0 and res["valid"], json.dumps(res, indent=1)[:4000]


def test_too_large_body_is_documented_413(svc, contract):
    data = json.dumps({"bemerkungen": "x" * (1 << 20)}).encode()
    r = svc.request("POST", CREATE, data=data, headers={"Content-Type": "application/json"})
    assert r.status_code == 413
    op = contract.operation("POST", CREATE)
    spec = contract.resolve(op["responses"]["413"])
    assert list(spec["content"]) == ["application/problem+json"]
    assert r.headers["Content-Type"] == "application/problem+json"


def test_too_large_body_problem_matches_schema(svc, contract):
    data = json.dumps({"bemerkungen": "x" * (1 << 20)}).encode()
    for method, path in (("POST", CREATE), ("PUT", "/api/v1/charge/1"),
                         ("PATCH", "/api/v1/charge/1")):
        r = svc.request(method, path, data=data, headers={"Content-Type": "application/json"})
        assert r.status_code == 413
        contract.check(r, method, CREATE if method == "POST" else ONE)
