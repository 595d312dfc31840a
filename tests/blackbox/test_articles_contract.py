"""Contract tests of lotmesh-articles (issue 3): the served GET /openapi.json is a valid
OpenAPI 3.1 document (checked by a real validator, @seriousme/openapi-schema-validator, and
every schema in it compiled by Ajv in strict JSON Schema 2020-12 mode: tests/contract), it
documents exactly the routes the server has, and live responses of every endpoint — bodies
and headers of successes and problems — match its schemas (python3-jsonschema's Draft 2020-12
validator, and Ajv again on the same exchanges). Request schemas agree with the server's
validation on a set of sample bodies."""

import copy
import json

import pytest

from contract_checks import (METHODS, ajv_samples, assert_ajv, assert_live_responses,
                             assert_problem_responses,
                             assert_rejected, assert_routes, assert_served_document,
                             assert_statuses_exercised, assert_valid_openapi, exchange)

from events_util import db_exec, pruned_feed
from services_util import (AUTH_ENV, REPO, Contract, assert_full_problem, bearer,
                           module_process, post_json, service_token, unique)

DOC_FILE = REPO / "services" / "articles" / "openapi.json"

# the server's routes: (path template, methods) — HEAD is answered wherever GET is
ROUTES = {
    "/api/v1/articles": {"GET", "HEAD"},
    "/api/v1/article/create": {"POST"},
    "/api/v1/article/{id}": {"GET", "HEAD", "PUT", "PATCH", "DELETE"},
    "/api/v1/units": {"GET", "HEAD"},
    "/api/v1/unit/create": {"POST"},
    "/api/v1/unit/{id}": {"GET", "HEAD"},
    "/api/v1/events": {"GET", "HEAD"},
    "/health": {"GET", "HEAD"},
    "/ready": {"GET", "HEAD"},
    "/metrics": {"GET", "HEAD"},
    "/openapi.json": {"GET", "HEAD"},
}
# statuses the document lists but no black-box test can cause: a failing database
NOT_PRODUCIBLE = {"503"}


@pytest.fixture(scope="module")
def svc(tmp_path_factory):
    # EVENT_RETENTION=1s: the feed's 410 (a pruned position) is among the exchanges
    yield from module_process(tmp_path_factory, "articles",
                              {"WORKERS": "2", "EVENT_RETENTION": "1s"}, tag="articles-contract")


@pytest.fixture(scope="module")
def svc_auth(tmp_path_factory):
    yield from module_process(tmp_path_factory, "articles", {"WORKERS": "1", **AUTH_ENV},
                              tag="articles-contract-auth")


@pytest.fixture(scope="module")
def doc(svc):
    r = svc.get("/openapi.json")
    assert r.status_code == 200
    assert r.headers["Content-Type"] == "application/json"
    return r.json()


@pytest.fixture(scope="module")
def contract(doc):
    return Contract(doc)


# ---- the document ---------------------------------------------------------------------------

def test_served_document_is_the_source_file(svc, doc):
    assert_served_document(svc, doc, DOC_FILE)


def test_document_is_valid_openapi_3_1(doc, tmp_path):
    assert_valid_openapi(doc, tmp_path)


@pytest.mark.parametrize("breakage", ["no-description", "dangling-ref", "bad-type",
                                      "unknown-keyword", "bad-parameter-in"])
def test_validator_rejects_broken_documents(doc, tmp_path, breakage):
    """The tools are not a rubber stamp: each kind of mistake is caught."""
    bad = copy.deepcopy(doc)
    art = bad["components"]["schemas"]["Artikel"]["properties"]
    if breakage == "no-description":
        del bad["paths"]["/health"]["get"]["responses"]["200"]["description"]
    elif breakage == "dangling-ref":
        art["einheit_id"] = {"$ref": "#/components/schemas/Nope"}
    elif breakage == "bad-type":
        art["id"]["type"] = "int"
    elif breakage == "unknown-keyword":
        art["bezeichnung"]["maxLenght"] = 3
    elif breakage == "bad-parameter-in":
        bad["components"]["parameters"]["limit"]["in"] = "body"
    assert_rejected(bad, tmp_path)


def test_document_has_exactly_the_servers_routes(svc, doc):
    assert_routes(svc, doc, ROUTES)


def test_operation_ids_unique_and_problems_everywhere(doc, contract):
    assert_problem_responses(doc, contract)


def test_service_token_is_required_exactly_under_api(doc):
    scheme = doc["components"]["securitySchemes"]["serviceToken"]
    assert (scheme["type"], scheme["scheme"], scheme["bearerFormat"]) == ("http", "bearer", "JWT")
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if method not in METHODS:
                continue
            if path.startswith("/api/"):
                assert op.get("security") == [{"serviceToken": []}], (path, method)
                assert {"401", "403"} <= set(op["responses"]), (path, method)
            else:
                assert "security" not in op and "401" not in op["responses"], (path, method)


def test_documented_query_parameters_are_the_accepted_ones(svc, contract):
    op = contract.operation("GET", "/api/v1/articles")
    names = [contract.resolve(p)["name"] for p in op["parameters"]
             if contract.resolve(p)["in"] == "query"]
    r = svc.get("/api/v1/articles?nope=1")
    assert r.json()["detail"].endswith("known: " + ", ".join(names))
    op = contract.operation("GET", "/api/v1/units")
    assert not [p for p in op["parameters"] if contract.resolve(p)["in"] == "query"]


def test_schema_constraints_match_the_server(doc):
    """The numbers in the document are the ones artikel.c/einheit.c enforce (the live checks
    below probe each of them)."""
    s = doc["components"]["schemas"]
    a = s["ArtikelCreate"]["properties"]
    assert (a["artikelnummer"]["minLength"], a["artikelnummer"]["maxLength"]) == (1, 64)
    assert (a["bezeichnung"]["minLength"], a["bezeichnung"]["maxLength"]) == (1, 200)
    assert a["beschreibung"]["maxLength"] == 2000 and "null" in a["beschreibung"]["type"]
    assert (a["mindesthaltbarkeit_tage"]["minimum"], a["mindesthaltbarkeit_tage"]["maximum"]) \
        == (0, 36500)
    assert a["status"]["enum"] == ["aktiv", "inaktiv", "gesperrt"]
    assert set(s["ArtikelCreate"]["required"]) == {"artikelnummer", "bezeichnung", "einheit_id"}
    e = s["EinheitCreate"]["properties"]
    assert (e["kuerzel"]["maxLength"], e["bezeichnung"]["maxLength"]) == (16, 100)
    for name in ("Artikel", "Einheit"):
        for f in ("id", "erstellt_am"):
            assert s[name]["properties"][f]["readOnly"] is True
    for name in ("ArtikelCreate", "ArtikelUpdate", "ArtikelPatch", "EinheitCreate", "Artikel",
                 "Einheit", "Problem"):
        assert s[name]["additionalProperties"] is False, name


# ---- request schemas vs the server's validation ----------------------------------------------

def _sample_bodies():
    good = {"artikelnummer": "X", "bezeichnung": "B", "einheit_id": 1}
    return [
        (good, True), ({**good, "beschreibung": None, "mindesthaltbarkeit_tage": None}, True),
        ({**good, "beschreibung": "ü" * 2000, "mindesthaltbarkeit_tage": 36500,
          "status": "gesperrt"}, True),
        ({**good, "artikelnummer": "ä" * 64, "bezeichnung": "€" * 200}, True),
        ({**good, "mindesthaltbarkeit_tage": 0, "status": "inaktiv"}, True),
        ({**good, "artikelnummer": "ä" * 65}, False), ({**good, "bezeichnung": "€" * 201}, False),
        ({**good, "beschreibung": "x" * 2001}, False), ({**good, "artikelnummer": ""}, False),
        ({**good, "artikelnummer": "   "}, False), ({**good, "bezeichnung": "\t"}, False),
        ({**good, "einheit_id": 0}, False), ({**good, "einheit_id": 1.5}, False),
        ({**good, "einheit_id": "1"}, False), ({**good, "einheit_id": None}, False),
        ({**good, "einheit_id": 9223372036854775807}, False),
        ({**good, "mindesthaltbarkeit_tage": -1}, False),
        ({**good, "mindesthaltbarkeit_tage": 36501}, False),
        ({**good, "mindesthaltbarkeit_tage": 2.5}, False),
        ({**good, "status": "alt"}, False), ({**good, "status": None}, False),
        ({**good, "id": 5}, False), ({**good, "erstellt_am": "2026-01-01T00:00:00Z"}, False),
        ({**good, "geaendert_am": None}, False), ({**good, "farbe": "rot"}, False),
        ({"bezeichnung": "B", "einheit_id": 1}, False), ({"artikelnummer": "X"}, False),
        ({}, False), ({**good, "artikelnummer": 5}, False),
        ({**good, "beschreibung": ["x"]}, False), ({**good, "bezeichnung": True}, False),
    ]


def test_create_schema_agrees_with_server(svc, contract):
    schema = {"$ref": "#/components/schemas/ArtikelCreate"}
    for body, valid in _sample_bodies():
        body = dict(body)
        nr = body.get("artikelnummer")
        if isinstance(nr, str) and nr.strip():  # unique, same length class
            u = unique("C")
            body["artikelnummer"] = u + nr[len(u):] if len(nr) >= 64 else u + nr
        schema_ok = True
        try:
            contract.validate(body, schema, "sample")
        except AssertionError:
            schema_ok = False
        assert schema_ok == valid, (body, "schema disagrees with the expectation")
        r = post_json(svc, "/api/v1/article/create", body)
        assert r.status_code == (201 if valid else 422), (json.dumps(body)[:200], r.text[:300])
        contract.check(r, "POST", "/api/v1/article/create")


def test_patch_and_update_schemas_agree_with_server(svc, contract):
    a = post_json(svc, "/api/v1/article/create",
                  {"artikelnummer": unique("PA-"), "bezeichnung": "B", "einheit_id": 1}).json()
    path = f"/api/v1/article/{a['id']}"
    cases = [({"status": "inaktiv"}, True), ({"beschreibung": None}, True), ({}, True),
             ({"id": a["id"], "erstellt_am": "x", "geaendert_am": 1, "bezeichnung": "Y"}, True),
             ({"artikelnummer": None}, False), ({"einheit_id": 0}, False),
             ({"status": "weg"}, False), ({"farbe": 1}, False), ({"bezeichnung": "€" * 201}, False)]
    for body, valid in cases:
        ok = True
        try:
            contract.validate(body, {"$ref": "#/components/schemas/ArtikelPatch"}, "patch")
        except AssertionError:
            ok = False
        assert ok == valid, body
        r = post_json(svc, path, body, method="PATCH")
        assert r.status_code == (200 if valid else 422), (body, r.text)
        contract.check(r, "PATCH", "/api/v1/article/{id}")
    rep = svc.get(path).json()
    contract.validate(rep, {"$ref": "#/components/schemas/ArtikelUpdate"}, "GET body as PUT")
    r = post_json(svc, path, rep, method="PUT")
    assert r.status_code == 200
    contract.check(r, "PUT", "/api/v1/article/{id}")
    for body in ({"bezeichnung": "B", "einheit_id": 1},
                 {**rep, "id": rep["id"] + 1}):
        if "id" in body and body["id"] != rep["id"]:
            # the schema cannot express "equals the path id": the server's 422 is documented
            r = post_json(svc, path, body, method="PUT")
            assert r.status_code == 422
            contract.check(r, "PUT", "/api/v1/article/{id}")
            continue
        with pytest.raises(AssertionError):
            contract.validate(body, {"$ref": "#/components/schemas/ArtikelUpdate"}, "put")
        r = post_json(svc, path, body, method="PUT")
        assert r.status_code == 422
        contract.check(r, "PUT", "/api/v1/article/{id}")


def test_unit_create_schema_agrees_with_server(svc, contract):
    cases = [({"kuerzel": unique("k")[-10:], "bezeichnung": "x"}, True),
             ({"kuerzel": "ä" * 16, "bezeichnung": "€" * 100}, True),
             ({"kuerzel": "k" * 17, "bezeichnung": "x"}, False),
             ({"kuerzel": "k", "bezeichnung": "x" * 101}, False),
             ({"kuerzel": " ", "bezeichnung": "x"}, False),
             ({"kuerzel": "k"}, False), ({"kuerzel": "k", "bezeichnung": "x", "id": 1}, False),
             ({"kuerzel": 1, "bezeichnung": "x"}, False)]
    for body, valid in cases:
        ok = True
        try:
            contract.validate(body, {"$ref": "#/components/schemas/EinheitCreate"}, "unit")
        except AssertionError:
            ok = False
        assert ok == valid, body
        r = post_json(svc, "/api/v1/unit/create", body)
        assert r.status_code == (201 if valid else 422), (body, r.text)
        contract.check(r, "POST", "/api/v1/unit/create")


# ---- live responses vs the document -----------------------------------------------------------


@pytest.fixture(scope="module")
def exchanges(svc, svc_auth, doc):
    """Every endpoint with every status a client can cause (except 413, see below, and 503),
    as (method, path template, response)."""
    out = []
    # the service-token check (a second process, SERVICE_AUTH=enabled): every guarded
    # operation without a token (401), with one for another service (403), with a read-only
    # one (403 for changes)
    other, read = service_token("charges_api"), service_token("articles_api", scope="read")
    for template, item in doc["paths"].items():
        for method, op in item.items():
            if method not in METHODS or "security" not in op:
                continue
            path, m = template.replace("{id}", "1"), method.upper()
            h = {"Content-Type": "application/json"}
            out.append(exchange(m, template, svc_auth.request(m, path, data=b"{}", headers=h)))
            out.append(exchange(m, template, svc_auth.request(m, path, data=b"{}",
                                                        headers={**h, **bearer(other)})))
            if method not in ("get", "head"):
                out.append(exchange(m, template, svc_auth.request(m, path, data=b"{}",
                                                            headers={**h, **bearer(read)})))
    A, AC, AI = "/api/v1/articles", "/api/v1/article/create", "/api/v1/article/{id}"
    U, UC, UI = "/api/v1/units", "/api/v1/unit/create", "/api/v1/unit/{id}"

    def add(method, template, r):
        out.append(exchange(method, template, r))
        return r

    def body(**kw):
        b = {"artikelnummer": unique("X-"), "bezeichnung": "Kontrakt", "einheit_id": 1}
        b.update(kw)
        return b

    # creates
    tag = unique("CT")
    created = []
    for i in range(5):
        r = add("POST", AC, post_json(svc, AC, body(artikelnummer=f"{tag}-{i}",
                                                    beschreibung="b" if i % 2 else None,
                                                    mindesthaltbarkeit_tage=i * 10 or None)))
        assert r.status_code == 201
        created.append(r.json())
    a = created[0]
    ai = f"/api/v1/article/{a['id']}"
    key = unique("ck-")
    kb = body()
    assert add("POST", AC, post_json(svc, AC, kb, {"Idempotency-Key": key})).status_code == 201
    assert add("POST", AC, post_json(svc, AC, kb, {"Idempotency-Key": key})).status_code == 201
    assert add("POST", AC, post_json(svc, AC, body(), {"Idempotency-Key": key})).status_code == 422
    assert add("POST", AC, post_json(svc, AC, kb, {"Idempotency-Key": "a b"})).status_code == 400
    assert add("POST", AC, post_json(svc, AC, b'{"artikelnummer": ')).status_code == 400
    assert add("POST", AC, post_json(svc, AC, b"[" * 10000)).status_code == 400
    assert add("POST", AC, post_json(svc, AC, b'{"einheit_id": 1e400}')).status_code == 400
    assert add("POST", AC, post_json(svc, AC, b'{"a": "\xff"}')).status_code == 400
    assert add("POST", AC, post_json(svc, AC, body(artikelnummer=a["artikelnummer"]))) \
        .status_code == 409
    assert add("POST", AC, svc.request("POST", AC, data=json.dumps(body()),
                                       headers={"Content-Type": "text/plain"})).status_code == 415
    assert add("POST", AC, post_json(svc, AC, body(einheit_id=0, farbe=1, id=3))) \
        .status_code == 422
    assert add("POST", AC, post_json(svc, AC, body(einheit_id=987654))).status_code == 422
    # reads
    assert add("GET", AI, svc.get(ai)).status_code == 200
    assert add("GET", AI, svc.get(ai, headers={"If-None-Match": '"1"'})).status_code == 304
    assert add("GET", AI, svc.get(ai + "?x=1")).status_code == 400
    assert add("HEAD", AI, svc.request("HEAD", ai)).status_code == 200
    assert add("GET", AI, svc.get("/api/v1/article/abc")).status_code == 400
    assert add("GET", AI, svc.get("/api/v1/article/987654321")).status_code == 404
    assert add("HEAD", AI, svc.request("HEAD", "/api/v1/article/987654321")).status_code == 404
    assert add("HEAD", AI, svc.request("HEAD", "/api/v1/article/0")).status_code == 400
    # lists
    r = add("GET", A, svc.get(A, params={"q": tag, "limit": 2, "offset": 2}))
    assert r.status_code == 200 and "Link" in r.headers
    assert add("GET", A, svc.get(A, params={"status": "aktiv", "limit": 500})).status_code == 200
    assert add("GET", A, svc.get(A, params={"q": "no such article anywhere"})).status_code == 200
    assert add("HEAD", A, svc.request("HEAD", A, params={"q": tag, "limit": 1})) \
        .status_code == 200
    assert add("GET", A, svc.get(A, params={"sort": "id"})).status_code == 400
    assert add("GET", A, svc.get(A, params={"limit": 0, "status": "x"})).status_code == 400
    assert add("HEAD", A, svc.request("HEAD", A, params={"limit": 0})).status_code == 400
    # updates
    r = add("PUT", AI, post_json(svc, ai, {**a, "bezeichnung": "neu"}, method="PUT"))
    assert r.status_code == 200
    etag = r.headers["ETag"]
    assert add("PUT", AI, post_json(svc, ai, body(), {"If-Match": '"1"'}, method="PUT")) \
        .status_code == 412
    assert add("PUT", AI, post_json(svc, ai, body(artikelnummer=created[1]["artikelnummer"]),
                                    method="PUT")).status_code == 409
    assert add("PUT", AI, post_json(svc, ai, {"bezeichnung": 1}, method="PUT")).status_code == 422
    assert add("PUT", AI, post_json(svc, ai, b"{", method="PUT")).status_code == 400
    assert add("PUT", "/api/v1/article/{id}", post_json(svc, "/api/v1/article/x", body(),
                                                        method="PUT")).status_code == 400
    assert add("PUT", AI, svc.request("PUT", ai, data=b"{}")).status_code == 415
    assert add("PUT", AI, post_json(svc, "/api/v1/article/987654321", body(), method="PUT")) \
        .status_code == 404
    r = add("PATCH", AI, svc.request("PATCH", ai, data=json.dumps({"status": "gesperrt"}),
                                     headers={"Content-Type": "application/merge-patch+json",
                                              "If-Match": etag}))
    assert r.status_code == 200
    assert add("PATCH", AI, post_json(svc, ai, {"status": "aktiv"}, {"If-Match": etag},
                                      method="PATCH")).status_code == 412
    assert add("PATCH", AI, post_json(svc, ai, {"artikelnummer": created[1]["artikelnummer"]},
                                      method="PATCH")).status_code == 409
    assert add("PATCH", AI, post_json(svc, ai, {"status": None}, method="PATCH")) \
        .status_code == 422
    assert add("PATCH", AI, post_json(svc, ai, b"[]", method="PATCH")).status_code == 400
    assert add("PATCH", AI, svc.request("PATCH", ai, data=b"{}",
                                        headers={"Content-Type": "text/json"})).status_code == 415
    assert add("PATCH", AI, post_json(svc, "/api/v1/article/987654321", {}, method="PATCH")) \
        .status_code == 404
    # deletes
    d = created[4]
    di = f"/api/v1/article/{d['id']}"
    assert add("DELETE", AI, svc.request("DELETE", di, headers={"If-Match": '"9"'})) \
        .status_code == 412
    assert add("DELETE", AI, svc.request("DELETE", di, headers={"If-Match": '"1"'})) \
        .status_code == 204
    assert add("DELETE", AI, svc.request("DELETE", di)).status_code == 404
    assert add("DELETE", AI, svc.request("DELETE", "/api/v1/article/-5")).status_code == 400
    # units
    assert add("GET", U, svc.get(U)).status_code == 200
    assert add("HEAD", U, svc.request("HEAD", U)).status_code == 200
    assert add("GET", U, svc.get(U, params={"limit": 1})).status_code == 400
    r = add("POST", UC, post_json(svc, UC, {"kuerzel": unique("u")[-12:], "bezeichnung": "U"}))
    assert r.status_code == 201
    ukey = unique("uk-")
    ub = {"kuerzel": unique("v")[-12:], "bezeichnung": "V"}
    assert add("POST", UC, post_json(svc, UC, ub, {"Idempotency-Key": ukey})).status_code == 201
    assert add("POST", UC, post_json(svc, UC, ub, {"Idempotency-Key": ukey})).status_code == 201
    assert add("POST", UC, post_json(svc, UC, {"kuerzel": "kg", "bezeichnung": "x"})) \
        .status_code == 409
    assert add("POST", UC, post_json(svc, UC, {"kuerzel": "kg"})).status_code == 422
    assert add("POST", UC, post_json(svc, UC, b"nope")).status_code == 400
    assert add("POST", UC, svc.request("POST", UC, data=b"{}")).status_code == 415
    assert add("GET", UI, svc.get(f"/api/v1/unit/{r.json()['id']}")).status_code == 200
    assert add("HEAD", UI, svc.request("HEAD", "/api/v1/unit/1")).status_code == 200
    assert add("GET", UI, svc.get("/api/v1/unit/987654")).status_code == 404
    assert add("GET", UI, svc.get("/api/v1/unit/1x")).status_code == 400
    assert add("HEAD", UI, svc.request("HEAD", "/api/v1/unit/987654")).status_code == 404
    assert add("HEAD", UI, svc.request("HEAD", "/api/v1/unit/1x")).status_code == 400
    assert add("HEAD", U, svc.request("HEAD", U, params={"x": 1})).status_code == 400
    # operations
    for p in ("/health", "/ready", "/metrics", "/openapi.json"):
        assert add("GET", p, svc.get(p, headers={"X-Request-ID": "contract-1"})).status_code == 200
        assert add("HEAD", p, svc.request("HEAD", p)).status_code == 200
    # errors outside any operation: the document's "default" problem
    assert add("GET", "/health", svc.request("DELETE", "/health")).status_code == 405
    assert add("GET", AI, svc.request("POST", ai)).status_code == 405
    # the event feed: a page, a bad parameter, a pruned position (410, EVENT_RETENTION=1s)
    E = "/api/v1/events"
    r = add("GET", E, svc.get(E + "?after=0&limit=1000&wait=0"))
    assert r.status_code in (200, 410)
    assert add("GET", E, svc.get(E + "?limit=0")).status_code == 400
    assert add("HEAD", E, svc.request("HEAD", E + "?limit=0")).status_code == 400
    add("GET", E, pruned_feed(svc))
    assert add("HEAD", E, svc.request("HEAD", E + "?after=0")).status_code == 410
    last = pruned_feed(svc).json()["pruned_through"]
    assert add("GET", E, svc.get(f"{E}?after={last}")).status_code == 200
    assert add("HEAD", E, svc.request("HEAD", f"{E}?after={last}")).status_code == 200
    # an article with live batches (as articles learnt them from charge.* events: the row
    # written here as the consumer would) is not deleted: 409
    doomed = add("POST", AC, post_json(svc, AC, body())).json()
    db_exec(svc, "INSERT INTO charge_seen (id, artikel_id, live) VALUES (?, ?, 1)",
            (900000 + doomed["id"], doomed["id"]))
    r = add("DELETE", AI, svc.request("DELETE", f"/api/v1/article/{doomed['id']}"))
    assert r.status_code == 409 and "1 live batch" in r.json()["detail"], r.text
    return out


def test_live_responses_match_the_document(contract, exchanges):
    assert_live_responses(contract, exchanges)


def test_every_documented_status_is_exercised(doc, exchanges):
    assert_statuses_exercised(doc, exchanges, NOT_PRODUCIBLE)


def test_live_responses_match_the_document_by_ajv(contract, exchanges, tmp_path, doc):
    """The same exchanges through Ajv (JSON Schema 2020-12 with formats), a second,
    independent validator; plus instances that must fail, so a silent pass shows."""
    samples = ajv_samples(contract, exchanges)
    good = json.loads(exchanges[0].body)
    for label, inst in (("no id", {k: v for k, v in good.items() if k != "id"}),
                        ("extra", {**good, "x": 1}),
                        ("bad date", {**good, "erstellt_am": "yesterday"}),
                        ("bad status", {**good, "status": "weg"})):
        samples.append({"label": f"must fail: {label}", "expect_valid": False,
                        "schema": "#/components/schemas/Artikel", "instance": inst})
    samples.append({"label": "must fail: problem without trace_id", "expect_valid": False,
                    "schema": "#/components/schemas/Problem",
                    "instance": {"type": "about:blank", "title": "t", "status": 400,
                                 "detail": "d", "instance": "/x"}})
    assert_ajv(doc, samples, tmp_path)


def test_too_large_body_problem_matches_schema(svc, contract):
    data = json.dumps({"beschreibung": "x" * (1 << 20)}).encode()
    for method, template, path in (("POST", "/api/v1/article/create", "/api/v1/article/create"),
                                   ("PUT", "/api/v1/article/{id}", "/api/v1/article/1"),
                                   ("PATCH", "/api/v1/article/{id}", "/api/v1/article/1"),
                                   ("POST", "/api/v1/unit/create", "/api/v1/unit/create")):
        r = svc.request(method, path, data=data, headers={"Content-Type": "application/json"})
        assert r.status_code == 413
        contract.check(r, method, template)
        assert_full_problem(r, 413, instance=path)
