"""charges_util.py — helpers for the black-box tests of lotmesh-charges (test_charges.py,
test_charges_contract.py), on top of harness.py and services_util.py (whose problem checks,
unique texts and polling it re-exports).

charges needs a live articles service (ARTICLES_URL), so a "stack" is one articles and one
charges process, each with its own database in a temporary folder:

    stack = Stack.start(start_process, tmp_path)  # function scope, the harness's fixture
    yield from module_stack(tmp_path_factory)   # a module-scoped fixture's body
    art = stack.article(mindesthaltbarkeit_tage=10)      # an article dict, created in articles
    c = stack.charge(art, menge=2.5)                     # a batch dict, created in charges (201)
    r = stack.post_charge({...}, headers={...})          # the raw requests.Response
    assert_full_problem(r, 422, fields=["menge"])        # RFC 9457 with instance and trace_id
"""

import re

import pytest

from harness import Proc, base_env, free_port
from services_util import HEX32, assert_full_problem, post_json, unique, wait_until
from services_util import field_messages as messages

UTC_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{3})?Z$")
CHARGE_KEYS = {"id", "artikel_id", "menge", "einheit_id", "herstellungsdatum",
               "mindesthaltbarkeitsdatum", "charge_nummer", "status", "bemerkungen",
               "erstellt_am", "geaendert_am"}
STATUSES = ["aktiv", "gesperrt", "verbraucht", "abgelaufen"]

CREATE = "/api/v1/charge/create"
LIST = "/api/v1/charges"
ARTICLE_CREATE = "/api/v1/article/create"
UNIT_LITER = 4  # seeded by the articles service: kg, g, t, l, ml, m, Stk, Pkg


def charge_path(cid):
    return f"/api/v1/charge/{cid}"


def send_json(proc, method, path, doc, headers=None):
    """doc: any JSON value, or bytes sent as they are; Content-Type application/json unless
    headers say otherwise."""
    return post_json(proc, path, doc, headers, method=method)


def stop_problems(proc):
    """Stops proc if it runs (SIGTERM) and returns what went wrong (harness semantics)."""
    problems = proc.check_stopped_cleanly()
    if proc.alive():
        proc.kill()
    return problems


class Stack:
    """One articles and one charges process. charges reaches articles at ARTICLES_URL."""

    def __init__(self, articles, charges, articles_env, charges_env):
        self.articles = articles
        self.charges = charges
        self.articles_env = articles_env
        self.charges_env = charges_env
        # sent with every request of the helpers below (service tokens, when checked)
        self.articles_headers = {}
        self.charges_headers = {}

    @staticmethod
    def envs(workdir, articles_port, charges_extra=None, both_extra=None):
        a = {"DATABASE_URL": str(workdir / "articles.db"), "WORKERS": "2", **(both_extra or {})}
        # EVENT_CONSUME=false: these suites test what charges asks articles and its replica
        # of those answers (events keep the replica in test_events_consumer.py)
        c = {"DATABASE_URL": str(workdir / "charges.db"), "WORKERS": "2",
             "ARTICLES_URL": f"http://127.0.0.1:{articles_port}", "ARTICLES_TIMEOUT": "1s",
             "EVENT_CONSUME": "false",
             **(both_extra or {})}
        c.update(charges_extra or {})
        return a, c

    def _a(self, headers=None):
        return {**self.articles_headers, **(headers or {})}

    def _c(self, headers=None):
        return {**self.charges_headers, **(headers or {})}

    @classmethod
    def start(cls, start_process, workdir, charges_extra=None):
        """Through the harness's start_process fixture (function scope: the fixture stops
        and checks both processes at teardown)."""
        aport = free_port()
        a_env, c_env = cls.envs(workdir, aport, charges_extra)
        articles = start_process("articles", a_env, port=aport)
        charges = start_process("charges", c_env)
        return cls(articles, charges, a_env, c_env)

    # ---- articles side ----------------------------------------------------------------

    def article(self, **kw):
        """Creates an article in the articles service; returns its JSON."""
        body = {"artikelnummer": unique("ART-"), "bezeichnung": "Vollmilch 3,5 %",
                "einheit_id": UNIT_LITER}
        body.update(kw)
        r = send_json(self.articles, "POST", ARTICLE_CREATE, body, self._a())
        assert r.status_code == 201, r.text
        return r.json()

    def set_article_status(self, art, status):
        r = send_json(self.articles, "PATCH", f"/api/v1/article/{art['id']}",
                      {"status": status}, self._a())
        assert r.status_code == 200, r.text
        return r.json()

    # ---- charges side -----------------------------------------------------------------

    @staticmethod
    def body(art, **kw):
        b = {"artikel_id": art["id"], "menge": 12.5, "einheit_id": art["einheit_id"],
             "herstellungsdatum": "2026-03-01T06:00:00Z"}
        b.update(kw)
        return {k: v for k, v in b.items() if v is not OMIT}

    def post_charge(self, doc, headers=None):
        return send_json(self.charges, "POST", CREATE, doc, self._c(headers))

    def charge(self, art, headers=None, **kw):
        """Creates a batch (expects 201); returns its JSON."""
        r = self.post_charge(self.body(art, **kw), headers)
        assert r.status_code == 201, r.text
        return r.json()

    def get(self, cid):
        return self.charges.get(charge_path(cid), headers=self._c())

    def list(self, **params):
        r = self.charges.get(LIST, params=params, headers=self._c())
        assert r.status_code == 200, r.text
        return r

    def count(self, **params):
        params.setdefault("limit", 1)
        return int(self.list(**params).headers["X-Total-Count"])

    def patch(self, cid, doc, headers=None):
        return send_json(self.charges, "PATCH", charge_path(cid), doc, self._c(headers))

    def put(self, cid, doc, headers=None):
        return send_json(self.charges, "PUT", charge_path(cid), doc, self._c(headers))


class _Omit:
    def __repr__(self):
        return "OMIT"


OMIT = _Omit()  # Stack.body(art, menge=OMIT) leaves the member out


def module_stack(tmp_path_factory, charges_extra=None, both_extra=None, tag="charges-stack"):
    """Generator for a module-scoped fixture: one articles and one charges process for the
    whole module, stopped with SIGTERM at the end; a non-zero exit, a hang or a sanitizer
    report of either fails the module's last teardown. both_extra: environment for both
    (e.g. the service-token check)."""
    workdir = tmp_path_factory.mktemp(tag)
    aport, cport = free_port(), free_port()
    a_env, c_env = Stack.envs(workdir, aport, charges_extra, both_extra)
    common = {"BIND_ADDRESS": "127.0.0.1", "ACCESS_LOG": "false", "LOG_LEVEL": "info"}
    articles = Proc("articles", base_env({**common, "PORT": str(aport), **a_env}), aport,
                    workdir)
    charges = Proc("charges", base_env({**common, "PORT": str(cport), **c_env}), cport,
                   workdir)
    procs = []
    try:
        for p in (articles, charges):
            procs.append(p)
            p.start()
            p.wait_healthy()
        yield Stack(articles, charges, a_env, c_env)
    finally:
        problems = []
        for p in reversed(procs):
            problems += stop_problems(p)
        if problems:
            pytest.fail("\n".join(problems), pytrace=False)


__all__ = ["ARTICLE_CREATE", "CHARGE_KEYS", "CREATE", "HEX32", "LIST", "OMIT", "STATUSES", "Stack",
           "UNIT_LITER", "UTC_TIME", "assert_full_problem", "charge_path", "messages",
           "module_stack", "send_json", "stop_problems", "unique", "wait_until"]
