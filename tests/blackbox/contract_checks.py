"""Contract checks shared by the services' contract tests (test_*_contract.py): each service's
test module keeps what is its own (routes, samples, breakages) and asks these for the rest, so
both documents are held to exactly the same rules."""

import json
from types import SimpleNamespace

from harness import RawResponse
from services_util import assert_full_problem, run_contract_check

METHODS = ("get", "head", "put", "patch", "delete", "post")


def exchange(method, template, r):
    """One exchange, kept in a form both validators (jsonschema, Ajv) can use."""
    if isinstance(r, RawResponse):
        return SimpleNamespace(method=method, template=template, status=r.status,
                               headers=dict(r.headers), body=r.body, raw=r)
    return SimpleNamespace(method=method, template=template, status=r.status_code,
                           headers={k.lower(): v for k, v in r.headers.items()},
                           body=r.content, raw=r)


def assert_served_document(svc, doc, doc_file):
    """GET /openapi.json serves the repository's file, byte for byte, cacheable."""
    assert doc == json.loads(doc_file.read_text(encoding="utf-8"))
    r = svc.get("/openapi.json")
    assert r.content == doc_file.read_bytes()
    assert r.headers["Cache-Control"] == "public, max-age=300"


def assert_valid_openapi(doc, tmp_path):
    """The npm OpenAPI 3.1 validator accepts the document."""
    assert doc["openapi"].startswith("3.1.")
    f = tmp_path / "openapi.json"
    f.write_text(json.dumps(doc), encoding="utf-8")
    rc, out = run_contract_check(f)
    assert rc == 0 and out["valid"], json.dumps(out, indent=1)[:4000]


def assert_rejected(bad, tmp_path):
    """The validator refuses a deliberately broken document (it is no rubber stamp)."""
    f = tmp_path / "bad.json"
    f.write_text(json.dumps(bad), encoding="utf-8")
    rc, out = run_contract_check(f)
    assert rc == 1 and not out["valid"], out


def _matches(template, path):
    t, p = template.split("/"), path.split("/")
    return len(t) == len(p) and all(a == b or a == "{id}" for a, b in zip(t, p))


def _specificity(template):
    """Literal segments beat parameters, compared from the left (lib/router.h)."""
    return tuple(0 if seg.startswith("{") else 1 for seg in template.split("/"))


def assert_routes(svc, doc, routes):
    """The documented paths and methods are exactly routes, and the server agrees: a method
    no route has answers 405 with Allow naming the methods of the most specific template
    matching the path (…/create also matches {id}, but the literal owns it: OpenAPI's
    concrete paths before templated ones)."""
    documented = {p: {m.upper() for m in item if m in METHODS} for p, item in doc["paths"].items()}
    assert documented == routes
    for template in routes:
        path = template.replace("{id}", "1")
        owner = max((t for t in documented if _matches(t, path)), key=_specificity)
        expected = documented[owner]
        r = svc.request("OPTIONS", path)
        assert r.status_code == 405, (path, r.status_code)
        assert {m.strip() for m in r.headers["Allow"].split(",")} == expected, path


def assert_problem_responses(doc, contract):
    """Unique operation ids; every error response of every operation is the Problem schema."""
    ids = []
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if method not in METHODS:
                continue
            ids.append(op["operationId"])
            assert "default" in op["responses"], (path, method)
            for status, resp in op["responses"].items():
                resp = contract.resolve(resp)
                if status == "default" or int(status) >= 400:
                    if method == "head":
                        assert "content" not in resp
                        continue
                    assert list(resp["content"]) == ["application/problem+json"], (path, status)
                    assert resp["content"]["application/problem+json"]["schema"] == \
                        {"$ref": "#/components/schemas/Problem"}
                elif method != "head" and status not in ("204", "304"):  # no body
                    assert "content" in resp, (path, method, status)
    assert len(ids) == len(set(ids))
    problem = doc["components"]["schemas"]["Problem"]
    assert set(problem["required"]) == {"type", "title", "status", "detail", "instance",
                                        "trace_id"}
    assert problem["properties"]["errors"]["items"] == {"$ref": "#/components/schemas/FieldError"}


def assert_live_responses(contract, exchanges):
    """Every recorded response matches its documented operation; errors are full problems."""
    for x in exchanges:
        contract.check(x.raw, x.method, x.template)
        if x.status >= 400 and x.method != "HEAD":
            assert_full_problem(x.raw, x.status)


def assert_statuses_exercised(doc, exchanges, not_producible):
    """Every documented status was produced by some recorded exchange (except default, 413,
    tested on its own, and what cannot be caused from outside)."""
    seen = {(x.method, x.template, str(x.status)) for x in exchanges}
    missing = []
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if method not in METHODS:
                continue
            for status in op["responses"]:
                if status in ("default", "413") or status in not_producible:
                    continue
                if (method.upper(), path, status) not in seen:
                    missing.append(f"{method.upper()} {path} {status}")
    assert not missing, missing


def ajv_samples(contract, exchanges):
    """The recorded exchanges as Ajv samples: each JSON body and each documented header
    against the schema of its documented response."""
    samples = []
    for i, x in enumerate(exchanges):
        op = contract.operation(x.method, x.template)
        code = str(x.status) if str(x.status) in op["responses"] else "default"
        spec = contract.resolve(op["responses"][code])
        ctype = x.headers.get("content-type")
        if x.method != "HEAD" and x.body and ctype and "json" in ctype:
            samples.append({"label": f"{i} {x.method} {x.template} {x.status} body",
                            "schema": spec["content"][ctype]["schema"],
                            "instance": json.loads(x.body)})
        for name, h in (spec.get("headers") or {}).items():
            h = contract.resolve(h)
            v = x.headers.get(name.lower())
            if v is None:
                continue
            if h["schema"].get("type") == "integer":
                v = int(v)
            samples.append({"label": f"{i} {x.method} {x.template} {x.status} {name}",
                            "schema": h["schema"], "instance": v})
    return samples


def assert_ajv(doc, samples, tmp_path):
    """Runs Ajv over samples: each valid, except those labelled "must fail: …", which must
    be rejected (so a silent pass shows)."""
    (tmp_path / "openapi.json").write_text(json.dumps(doc), encoding="utf-8")
    (tmp_path / "samples.json").write_text(json.dumps(samples), encoding="utf-8")
    rc, out = run_contract_check(tmp_path / "openapi.json", tmp_path / "samples.json")
    bad = [s for s in out["samples"] if s["valid"] != (not s["label"].startswith("must fail"))]
    assert rc == 0 and out["valid"] and not bad, json.dumps(bad or out, indent=1)[:4000]
    assert len(out["samples"]) == len(samples)
