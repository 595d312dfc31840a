"""services_util.py — helpers for the black-box tests of the resource services (articles,
charges), on top of harness.py:

    module_process(tmp_path_factory, "articles", env)   # generator for a module-scoped fixture
    assert_full_problem(resp, 422, instance="/api/v1/article/create", fields=["foo"])
    post_json(proc, path, doc_or_bytes, headers=None)   # requests.Response
    unique("A")                                          # a fresh, test-unique text
    Contract(doc)                                        # response-vs-OpenAPI checks
    contract_tools()                                     # path of tests/contract, installed
    AUTH_ENV, service_token(aud, scope="read write", …)  # services with the token check on
"""

import itertools
import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest
import requests

from harness import (IO_TIMEOUT, Proc, RawResponse, assert_problem, base_env, free_port,
                     poll)

HEX32 = re.compile(r"^[0-9a-f]{32}$")
REPO = Path(__file__).resolve().parents[2]
CONTRACT_DIR = REPO / "tests" / "contract"


def module_process(tmp_path_factory, name, env=None, tag=None):
    """Generator for a module-scoped fixture: one process for the whole module (many cases,
    one start), stopped with SIGTERM at the end; a non-zero exit, a hang or a sanitizer
    report fails the module's last test teardown. Usage:

        @pytest.fixture(scope="module")
        def svc(tmp_path_factory):
            yield from module_process(tmp_path_factory, "articles", {"WORKERS": "2"})
    """
    port = free_port()
    workdir = tmp_path_factory.mktemp(tag or name)
    full = {"PORT": str(port), "BIND_ADDRESS": "127.0.0.1", "ACCESS_LOG": "false",
            "LOG_LEVEL": "info", "LOTMESH_DATA_DIR": str(workdir / "data")}
    full.update(env or {})
    p = Proc(name, base_env(full), port, workdir)
    p.start()
    try:
        p.wait_healthy()
        yield p
    finally:
        problems = p.check_stopped_cleanly()
        if p.alive():
            p.kill()
        if problems:
            pytest.fail("\n".join(problems), pytrace=False)


_counter = itertools.count()


def unique(prefix="T"):
    """A text no other call in this test session returns (prefix + pid + counter + time)."""
    return f"{prefix}{os.getpid() % 10000:04d}{next(_counter):05d}{int(time.time() * 1000) % 100000:05d}"


def post_json(proc, path, doc, headers=None, method="POST"):
    """Sends doc (any JSON value, or bytes as they are) with Content-Type application/json."""
    h = {"Content-Type": "application/json"}
    h.update(headers or {})
    data = doc if isinstance(doc, (bytes, bytearray)) else json.dumps(doc).encode()
    return proc.request(method, path, data=data, headers=h)


def assert_full_problem(resp, status, detail_contains=None, instance=None, fields=None):
    """An RFC 9457 problem as DESIGN 3.4 wants it: harness.assert_problem's checks plus
    instance (the request path, when given) and trace_id (32 hex digits); fields: the names
    errors[] must mention (each at least once). Returns the body."""
    body = assert_problem(resp, status, detail_contains)
    assert "instance" in body, f"problem lacks instance: {body}"
    assert isinstance(body["instance"], str) and body["instance"], body
    if instance is not None:
        assert body["instance"] == instance, body
    assert HEX32.match(body.get("trace_id", "")), f"problem lacks a trace_id: {body}"
    if fields:
        errs = body.get("errors")
        assert isinstance(errs, list) and errs, f"problem lacks errors[]: {body}"
        for e in errs:
            assert set(e) == {"field", "message"} and e["message"], body
        named = {e["field"] for e in errs}
        for f in fields:
            assert f in named, f"errors[] does not name {f!r}: {body}"
    return body


def field_messages(body):
    """{field: [messages]} of a problem's errors[]."""
    out = {}
    for e in body.get("errors", []):
        out.setdefault(e["field"], []).append(e["message"])
    return out


# ---- contract tools (tests/contract) ---------------------------------------------------------

def contract_tools():
    """Installs tests/contract's npm packages when missing (tests/contract/setup.sh, bounded
    in time) and returns the folder."""
    try:
        r = subprocess.run(["bash", str(CONTRACT_DIR / "setup.sh")], capture_output=True,
                           text=True, timeout=300, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        pytest.fail("tests/contract/setup.sh did not finish within 300 s", pytrace=False)
    if r.returncode != 0:
        pytest.fail(f"tests/contract/setup.sh failed ({r.returncode}):\n{r.stderr}",
                    pytrace=False)
    return CONTRACT_DIR


def run_contract_check(doc_path, samples_path=None, timeout=120):
    """Runs tests/contract/check.mjs; returns (exit code, parsed JSON output)."""
    d = contract_tools()
    cmd = ["node", str(d / "check.mjs"), str(doc_path)]
    if samples_path:
        cmd.append(str(samples_path))
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=str(d),
                           stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        pytest.fail(f"check.mjs did not finish within {timeout} s", pytrace=False)
    try:
        out = json.loads(r.stdout)
    except ValueError:
        pytest.fail(f"check.mjs printed no JSON (exit {r.returncode}):\n{r.stdout}\n{r.stderr}",
                    pytrace=False)
    return r.returncode, out


class Contract:
    """Checks live responses against an OpenAPI 3.1 document with python3-jsonschema's
    Draft 2020-12 validator (OpenAPI 3.1 schemas are JSON Schema 2020-12)."""

    def __init__(self, doc):
        from jsonschema import Draft202012Validator, FormatChecker, RefResolver
        self.doc = doc
        self._V = Draft202012Validator
        self._resolver = RefResolver(base_uri="", referrer=doc)
        fc = FormatChecker()

        @fc.checks("date-time", raises=ValueError)
        def _dt(value):  # RFC 3339 (jsonschema needs an extra package for its own check)
            if not isinstance(value, str):
                return True
            if not RFC3339.match(value):
                raise ValueError(f"not an RFC 3339 date-time: {value!r}")
            return True

        self._fc = fc

    def resolve(self, obj):
        while isinstance(obj, dict) and "$ref" in obj:
            ref = obj["$ref"]
            assert ref.startswith("#/"), ref
            node = self.doc
            for part in ref[2:].split("/"):
                node = node[part.replace("~1", "/").replace("~0", "~")]
            obj = node
        return obj

    def validate(self, instance, schema, what=""):
        """Raises AssertionError naming every violation."""
        v = self._V(schema, resolver=self._resolver, format_checker=self._fc)
        errs = sorted(v.iter_errors(instance), key=lambda e: list(e.path))
        assert not errs, f"{what}: " + "; ".join(
            f"{'/'.join(map(str, e.path)) or '(root)'}: {e.message}" for e in errs[:10])

    def operation(self, method, path_template):
        item = self.doc["paths"].get(path_template)
        assert item is not None, f"{path_template} is not in the document"
        op = item.get(method.lower())
        assert op is not None, f"{method} {path_template} is not in the document"
        return op

    def check(self, resp, method, path_template):
        """resp (requests.Response or RawResponse) is one of the operation's documented
        responses: its status (or default), content type, body schema and headers."""
        op = self.operation(method, path_template)
        if isinstance(resp, RawResponse):
            status, ctype, body, headers = resp.status, resp.header("content-type"), \
                resp.body, resp.headers
        else:
            status, ctype, body = resp.status_code, resp.headers.get("content-type"), \
                resp.content
            headers = {k.lower(): v for k, v in resp.headers.items()}
        what = f"{method} {path_template} -> {status}"
        spec = op["responses"].get(str(status)) or op["responses"].get("default")
        assert spec is not None, f"{what}: status not documented"
        spec = self.resolve(spec)
        content = spec.get("content")
        if method.upper() == "HEAD" or status in (204, 304):
            assert not content or method.upper() == "HEAD", f"{what}: documents a body"
            assert not body, f"{what}: has a body"
        else:
            assert content, f"{what}: undocumented body ({ctype})"
            assert ctype in content, f"{what}: content type {ctype!r} not in {list(content)}"
            schema = content[ctype].get("schema")
            if schema is not None:
                if ctype.startswith("application/") and "json" in ctype:
                    inst = json.loads(body.decode("utf-8"))
                else:
                    inst = body.decode("utf-8")
                self.validate(inst, schema, what)
        for name, h in (spec.get("headers") or {}).items():
            h = self.resolve(h)
            val = headers.get(name.lower())
            if val is None:
                assert not h.get("required"), f"{what}: required header {name} missing"
                continue
            schema = h.get("schema", {})
            inst = val
            if schema.get("type") == "integer":
                assert re.fullmatch(r"-?[0-9]+", val), f"{what}: header {name}={val!r}"
                inst = int(val)
            self.validate(inst, schema, f"{what} header {name}")
        return spec


RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")


def wait_until(pred, timeout=IO_TIMEOUT, step=0.02, what="condition"):
    """Polls pred() until true; fails the test at timeout."""
    if not poll(pred, timeout, step):
        pytest.fail(f"{what} not reached within {timeout}s", pytrace=False)


def session():
    """A requests.Session (keep-alive) with the default timeout applied by callers."""
    return requests.Session()


# ---- service tokens (DESIGN 3.5) ---------------------------------------------------------------

# Environment for a service that checks service tokens (HS256 with this test secret).
TOKEN_SECRET = "lotmesh-blackbox-test-secret-0123456789abcdef"
AUTH_ENV = {"SERVICE_AUTH": "enabled", "SERVICE_TOKEN_SECRET": TOKEN_SECRET}


def service_token(aud, scope="read write", iss="gateway", sub="blackbox", exp_in=300,
                  secret=TOKEN_SECRET, alg="HS256", **extra):
    """A service token as the gateway mints it (PyJWT, python3-jwt)."""
    import jwt
    now = int(time.time())
    claims = {"iss": iss, "aud": aud, "sub": sub, "scope": scope, "iat": now,
              "exp": now + exp_in}
    claims.update(extra)
    return jwt.encode(claims, secret, algorithm=alg)


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


def assert_config_error(run_process, name, db_path, env, variable):
    """Starting service name (on a free port, database at db_path) with env stops it at once:
    exit 2 and exactly one "configuration error" line, naming variable."""
    res = run_process(name, {"PORT": str(free_port()), "BIND_ADDRESS": "127.0.0.1",
                             "DATABASE_URL": str(db_path), **env})
    assert res.returncode == 2, res.stderr
    lines = [ln for ln in res.stderr_lines if "configuration error" in ln]
    assert len(lines) == 1 and variable in lines[0], res.stderr
