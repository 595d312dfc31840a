"""events_util.py — helpers for the event suites (issue 11, DESIGN 3.6).

    feed(proc, after=0, limit=None, wait=None)   # GET /api/v1/events -> list of events
    all_events(proc)                             # every event the feed still holds
    db_url(proc)                                 # the database a service process uses
    db_rows(proc, sql, params)                   # rows of it, read independently
    metric(proc, name, labels=None)              # one sample of /metrics (float or None)
    Transport                                    # how to start services on one transport

The consumer suite is ONE suite parameterised by transport: the `transport` fixture
(conftest-free, in test_events_consumer.py) yields a Transport; a transport adds what it
needs to a service's environment in env(). The feed needs nothing (consumers long-poll the
producer's GET /api/v1/events); a broker transport returns EVENT_BROKER_URL and starts its
broker once per session in its own fixture.
"""

import json
import re
import time

import pg_server
from harness import IO_TIMEOUT, poll

HEX32 = re.compile(r"^[0-9a-f]{32}$")
TRACEPARENT = re.compile(r"^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")


def feed(proc, after=0, limit=None, wait=None, headers=None):
    q = [f"after={after}"]
    if limit is not None:
        q.append(f"limit={limit}")
    if wait is not None:
        q.append(f"wait={wait}")
    r = proc.get("/api/v1/events?" + "&".join(q), headers=headers or {},
                 timeout=IO_TIMEOUT + (wait or 0))
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/json"), r.headers
    return r.json()


def all_events(proc):
    out, after = [], 0
    while True:
        page = feed(proc, after=after, limit=1000)
        if not page:
            return out
        out += page
        after = page[-1]["sequence"]


def db_url(proc):
    url = proc.env.get("DATABASE_URL")
    if url:
        return url
    short = proc.name[len("lotmesh-"):] if proc.name.startswith("lotmesh-") else proc.name
    return f"{proc.env['LOTMESH_DATA_DIR']}/{short}.db"


def db_rows(proc, sql, params=()):
    return pg_server.query(db_url(proc), sql, params)


def db_exec(proc, sql, params=()):
    """Writes to the database of proc (SQLite file or PostgreSQL), as another program would."""
    url = db_url(proc)
    if url.startswith("postgres"):
        import psycopg2
        con = psycopg2.connect(url, connect_timeout=5)
        try:
            with con.cursor() as cur:
                cur.execute(sql.replace("?", "%s"), params)
            con.commit()
        finally:
            con.close()
        return
    import sqlite3
    con = sqlite3.connect(url[len("sqlite:"):] if url.startswith("sqlite:") else url, timeout=10)
    try:
        con.execute(sql, params)
        con.commit()
    finally:
        con.close()


def pruned_feed(proc, timeout=15):
    """Waits until retention pruned proc's outbox (EVENT_RETENTION short) and returns the
    410 answer to after=0."""
    r = poll(lambda: (lambda r: [r] if r.status_code == 410 else None)(
        proc.get("/api/v1/events?after=0")), timeout=timeout)
    assert r, "the outbox was not pruned"
    return r[0]


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$")


def metric(proc, name, labels=None):
    """The value of one sample of proc's /metrics, or None when absent."""
    text = proc.get("/metrics").text
    want = None
    if labels:
        want = "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}"
    for ln in text.splitlines():
        m = _SAMPLE.match(ln)
        if m and m.group(1) == name and (want is None or m.group(2) == want):
            return float(m.group(3))
    return None


def wait_metric(proc, name, pred, labels=None, timeout=10.0):
    got = poll(lambda: (lambda x: [x] if x is not None and pred(x) else None)(
        metric(proc, name, labels)), timeout=timeout)
    assert got, f"{name}{labels or ''} of {proc.name} stayed {metric(proc, name, labels)}"
    return got[0]


def create_article(proc, nr, unit=1, headers=None, **extra):
    doc = {"artikelnummer": nr, "bezeichnung": f"Artikel {nr}", "einheit_id": unit}
    doc.update(extra)
    h = {"Content-Type": "application/json"}
    h.update(headers or {})
    r = proc.request("POST", "/api/v1/article/create", data=json.dumps(doc), headers=h)
    assert r.status_code == 201, r.text
    return r


def create_batch(proc, artikel_id, unit=1, **extra):
    doc = {"artikel_id": artikel_id, "menge": 5, "einheit_id": unit,
           "herstellungsdatum": "2026-01-01"}
    doc.update(extra)
    r = proc.request("POST", "/api/v1/charge/create", data=json.dumps(doc),
                     headers={"Content-Type": "application/json"})
    return r


class Transport:
    """How services are started on one event transport. name: "feed" or a broker's name;
    env(): what to add to every producing/consuming service's environment."""

    def __init__(self, name, env=None):
        self.name = name
        self._env = dict(env or {})

    def env(self):
        return dict(self._env)

    def __repr__(self):
        return f"Transport({self.name})"


FEED = Transport("feed")
