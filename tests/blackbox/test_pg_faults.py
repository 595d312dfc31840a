"""PostgreSQL faults (issue 10): the server restarted under write load — no acknowledged write
is lost, clients get 503 problems while it is down and success after it, /ready says so, and
the service recovers without a restart; a server that cannot be reached at start-up is one
configuration line. (SIGKILL of a service under load on PostgreSQL: the durability tests of
articles and charges, run on both backends by `make test`.)

Uses the session's PostgreSQL server (pg_server.get()) and restarts it: nothing else uses it
while these run."""

import json
import threading
import time

import requests

import pg_server
from harness import IO_TIMEOUT, free_port, poll
from services_util import post_json, unique

CREATE = "/api/v1/article/create"
CLIENTS = 4


class WriteLoad:
    """Client threads sending creates in a loop until stopped: post(session, c, i) sends the
    i-th create of client c and returns (its key, the response). Keeps the acknowledged bodies
    by key, the 503 problems, and anything else (which stops that client); counts the
    acknowledged ones per phase ("before", "down", "after")."""

    def __init__(self, post, clients):
        self.post, self.acked, self.unavailable, self.wrong = post, {}, [], []
        self.phase = "before"
        self.counts = {"before": 0, "down": 0, "after": 0}
        self.lock, self.stop = threading.Lock(), threading.Event()
        self.threads = [threading.Thread(target=self._client, args=(c,), daemon=True)
                        for c in range(clients)]

    def _client(self, c):
        s = requests.Session()
        i = 0
        while not self.stop.is_set():
            i += 1
            try:
                key, r = self.post(s, c, i)
            except requests.RequestException as e:
                with self.lock:
                    self.wrong.append((c, i, repr(e)))
                return
            with self.lock:
                if r.status_code == 201:
                    self.acked[key] = r.json()
                    self.counts[self.phase] += 1
                elif r.status_code == 503 and \
                        r.headers.get("Content-Type", "").startswith("application/problem+json"):
                    self.unavailable.append(r.json())
                else:
                    self.wrong.append((key, r.status_code, r.text[:200]))
                    return
            if r.status_code == 503:
                time.sleep(0.02)

    def set_phase(self, name):
        with self.lock:
            self.phase = name

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(timeout=IO_TIMEOUT * 2)


def test_postgres_restart_under_write_load_loses_no_acknowledged_write(start_process):
    srv = pg_server.get()
    url = srv.database(f"faults-restart-{unique()}")
    p = start_process("articles", {"WORKERS": "2", "DATABASE_URL": url, "TMPDIR": srv.dir,
                                   "DATABASE_CONNECT_TIMEOUT": "2s"})
    assert p.get("/ready").status_code == 200
    pid = p.pid

    def post(s, c, i):
        nr = f"F{c}-{i:06d}"
        body = {"artikelnummer": nr, "bezeichnung": f"Fehlerlast {c}/{i}",
                "einheit_id": 1 + i % 8}
        return nr, s.post(p.url(CREATE), data=json.dumps(body), timeout=IO_TIMEOUT,
                          headers={"Content-Type": "application/json",
                                   "Idempotency-Key": f"fault-{nr}"})

    with WriteLoad(post, CLIENTS) as load:
        assert poll(lambda: load.counts["before"] >= 100 or load.wrong, timeout=60), "no load"
        assert not load.wrong, load.wrong[:5]
        load.set_phase("down")
        srv.stop("fast")  # every connection is cut; the server is gone
        assert poll(lambda: p.get("/ready").status_code == 503, timeout=15), \
            "/ready still says ready with the database down"
        ready = p.get("/ready")
        assert "database" in ready.text, ready.text
        assert poll(lambda: len(load.unavailable) >= 10, timeout=15), "no 503 during the outage"
        srv.start()
        assert poll(lambda: p.get("/ready").status_code == 200, timeout=30), \
            "/ready does not recover after the database came back"
        load.set_phase("after")
        assert poll(lambda: load.counts["after"] >= 100 or load.wrong, timeout=60), \
            "writes do not succeed again after the restart"
    assert not load.wrong, load.wrong[:5]
    acked, unavailable = load.acked, load.unavailable
    assert p.alive() and p.pid == pid, "the service restarted or died"
    for problem in unavailable[:20]:
        assert problem["status"] == 503 and "database" in problem["detail"], problem

    # every acknowledged create is in the database, read without the service
    rows = dict(pg_server.query(url, "SELECT artikelnummer, id FROM artikel"))
    missing = [nr for nr in acked if nr not in rows]
    assert not missing, f"{len(missing)} acknowledged creates lost: {missing[:5]}"
    for nr, doc in list(acked.items())[:200]:
        assert rows[nr] == doc["id"]
    # and through the service, as answered
    for nr, doc in list(acked.items())[::25]:
        r = p.get(f"/api/v1/article/{doc['id']}")
        assert r.status_code == 200 and r.json() == doc
    # no create half-written: each row is complete and its key was stored with it
    keys = {k for (k,) in pg_server.query(url, "SELECT key FROM idempotency_keys")}
    assert keys == {f"fault-{nr}" for nr in rows}
    m = p.metrics()
    assert m[("lotmesh_db_reconnects_total", frozenset())] >= 1
    assert m[("lotmesh_db_up", frozenset())] == 1


def test_reads_answer_503_while_postgres_is_down_and_recover(start_process):
    srv = pg_server.get()
    url = srv.database(f"faults-read-{unique()}")
    p = start_process("articles", {"WORKERS": "1", "DATABASE_URL": url, "CACHE_URL": "none",
                                   "TMPDIR": srv.dir})
    r = post_json(p, CREATE, {"artikelnummer": "R-1", "bezeichnung": "lesbar", "einheit_id": 1})
    assert r.status_code == 201
    loc = r.headers["Location"]
    srv.stop("immediate")  # a crash of the server: no goodbye to the clients
    try:
        got = p.get(loc)
        assert got.status_code == 503, got.text
        assert got.headers["Content-Type"].startswith("application/problem+json")
        assert poll(lambda: p.get("/ready").status_code == 503, timeout=15)
        assert p.get("/api/v1/articles").status_code == 503
    finally:
        srv.start()
    assert poll(lambda: p.get(loc).status_code == 200, timeout=30)
    assert p.get(loc).json() == r.json()
    assert poll(lambda: p.get("/ready").status_code == 200, timeout=15)


def test_unreachable_postgres_at_start_is_one_configuration_line(run_process):
    res = run_process("articles", {
        "PORT": str(free_port()), "BIND_ADDRESS": "127.0.0.1",
        "DATABASE_URL": f"postgresql://postgres@127.0.0.1:{free_port()}/nowhere",
        "DATABASE_CONNECT_TIMEOUT": "2s"}, timeout=20)
    assert res.returncode == 2, res.stderr
    lines = [ln for ln in res.stderr_lines if "configuration error" in ln]
    assert len(lines) == 1 and "DATABASE_URL" in lines[0] and "connect" in lines[0], res.stderr


def test_instances_on_other_hosts_see_writes_through_notify(start_process, tmp_path):
    """Two instances on one PostgreSQL database that share no counter file (as on two hosts:
    different TMPDIR): a write through one drops the other's cached answers when its
    NOTIFY arrives — within milliseconds, so a poll sees it well inside a second."""
    srv = pg_server.get()
    url = srv.database(f"notify-{unique()}")
    dirs = [tmp_path / "host-a", tmp_path / "host-b"]
    for d in dirs:
        d.mkdir()
    a = start_process("articles", {"DATABASE_URL": url, "WORKERS": "2", "TMPDIR": str(dirs[0])})
    b = start_process("articles", {"DATABASE_URL": url, "WORKERS": "2", "TMPDIR": str(dirs[1])})
    r = post_json(a, CREATE, {"artikelnummer": unique("N-"), "bezeichnung": "alt",
                              "einheit_id": 1})
    assert r.status_code == 201
    x = r.json()
    path = f"/api/v1/article/{x['id']}"
    for _ in range(2):  # cached in a
        assert a.get(path).json() == x
    hits = a.metric("lotmesh_cache_hits_total")
    assert hits >= 1
    r = post_json(b, path, {"bezeichnung": "neu"}, method="PATCH")
    assert r.status_code == 200
    t0 = time.monotonic()
    assert poll(lambda: a.get(path).json() == r.json(), timeout=2.0, step=0.005), \
        "a still serves the old article"
    window = time.monotonic() - t0
    assert a.metric("lotmesh_cache_flushes_total") >= 1
    print(f"staleness window observed: {window * 1000:.1f} ms")
    # and creates through b appear in a's cached list
    q = {"q": "neu"}
    assert a.get("/api/v1/articles", params=q).json() == [r.json()]
    r2 = post_json(b, CREATE, {"artikelnummer": unique("N-"), "bezeichnung": "neu auch",
                               "einheit_id": 1})
    assert r2.status_code == 201
    assert poll(lambda: len(a.get("/api/v1/articles", params=q).json()) == 2, timeout=2.0,
                step=0.005)


def test_postgres_restart_under_pipelined_batch_creates_loses_nothing(start_process):
    """charges' creates with their numbers given are written in pipelined batches (every
    INSERT of a batch sent before one wait): PostgreSQL stopped and started under them — every
    acknowledged batch is in the database with its one event, 503 problems meanwhile, the
    service recovers by itself."""
    srv = pg_server.get()
    a_url = srv.database(f"faults-pipe-a-{unique()}")
    c_url = srv.database(f"faults-pipe-c-{unique()}")
    articles = start_process("articles", {"DATABASE_URL": a_url, "TMPDIR": srv.dir,
                                          "CHARGES_URL": "http://127.0.0.1:9"})
    charges = start_process("charges", {"WORKERS": "2", "DATABASE_URL": c_url,
                                         "TMPDIR": srv.dir, "DATABASE_CONNECT_TIMEOUT": "2s",
                                         "ARTICLES_URL": articles.base_url})
    r = articles.request("POST", CREATE, data=json.dumps(
        {"artikelnummer": unique("PIPE"), "bezeichnung": "Last", "einheit_id": 1}),
        headers={"Content-Type": "application/json"})
    assert r.status_code == 201, r.text
    aid = r.json()["id"]

    def post(s, c, i):
        nr = f"P{c}-{i:06d}"
        body = {"artikel_id": aid, "menge": 1.5, "einheit_id": 1,
                "herstellungsdatum": "2026-01-01", "charge_nummer": nr}
        return nr, s.post(charges.url("/api/v1/charge/create"), data=json.dumps(body),
                          timeout=IO_TIMEOUT, headers={"Content-Type": "application/json"})

    with WriteLoad(post, 8) as load:
        assert poll(lambda: load.counts["before"] >= 200 or load.wrong, timeout=60), "no load"
        assert not load.wrong, load.wrong[:5]
        load.set_phase("down")
        srv.stop("fast")
        assert poll(lambda: len(load.unavailable) >= 10, timeout=15), "no 503 during the outage"
        srv.start()
        assert poll(lambda: charges.get("/ready").status_code == 200, timeout=30), \
            "/ready does not recover after the database came back"
        load.set_phase("after")
        assert poll(lambda: load.counts["after"] >= 200 or load.wrong, timeout=60), \
            "writes do not succeed again after the restart"
    assert not load.wrong, load.wrong[:5]
    acked = load.acked
    rows = dict(pg_server.query(c_url, "SELECT charge_nummer, id FROM charge"))
    missing = [nr for nr in acked if nr not in rows]
    assert not missing, f"{len(missing)} acknowledged creates lost: {missing[:5]}"
    assert all(rows[nr] == doc["id"] for nr, doc in acked.items())
    # each batch written has its one event (a create answered 503 may have committed: its
    # outcome was unknown, never acknowledged)
    events = sorted(s for (s,) in pg_server.query(
        c_url, "SELECT subject FROM outbox WHERE type = 'charge.created'"))
    assert events == sorted(rows.values())
    m = charges.metrics()
    assert m[("lotmesh_db_write_pipelined_jobs_total", frozenset())] > 0
    assert m[("lotmesh_db_reconnects_total", frozenset())] >= 1
