"""Durability of lotmesh-articles (issue 3, DESIGN 5): SIGKILL during a create load, restart on
the same database: every create that was answered 201 is there, complete and exactly as
answered; no row is half-written; the rows of creates that were in flight are either
complete or absent; Idempotency-Key results survive the restart, so retrying the creates that
got no answer creates each article exactly once."""

import json
import signal
import threading
import time

import requests

from harness import IO_TIMEOUT
from pg_server import query
from services_util import RFC3339, post_json

CREATE = "/api/v1/article/create"
CLIENTS = 4
ACKED_BEFORE_KILL = 200   # creates answered 201 before the SIGKILL
LOAD_TIMEOUT = 60.0       # seconds to reach that many (sanitizer builds are slow)
KEYS = {"id", "artikelnummer", "bezeichnung", "einheit_id", "beschreibung",
        "mindesthaltbarkeit_tage", "status", "erstellt_am", "geaendert_am"}


def body_for(client, i):
    nr = f"D{client}-{i:06d}"
    return nr, {"artikelnummer": nr, "bezeichnung": f"Lastartikel {client}/{i}",
                "einheit_id": 1 + (i % 8), "beschreibung": "ß" * (i % 40) or None,
                "mindesthaltbarkeit_tage": i % 400, "status": ("aktiv", "inaktiv")[i % 2]}


def same_as_sent(row, sent):
    return all(row[k] == v for k, v in sent.items())


def all_articles(p):
    out, offset = [], 0
    while True:
        r = p.get("/api/v1/articles", params={"limit": 500, "offset": offset})
        assert r.status_code == 200, r.text
        page = r.json()
        out += page
        offset += len(page)
        if offset >= int(r.headers["X-Total-Count"]) or not page:
            return out


def test_sigkill_under_create_load_loses_no_acknowledged_create(start_process, tmp_path):
    db = tmp_path / "articles-durability.db"
    env = {"WORKERS": "2", "DATABASE_URL": f"sqlite:{db}"}
    p = start_process("articles", env)

    # an idempotent create, answered well before the load
    key0 = "durability-key-0"
    body0 = {"artikelnummer": "D-IDEM-0", "bezeichnung": "vor dem Absturz", "einheit_id": 2}
    r0 = post_json(p, CREATE, body0, {"Idempotency-Key": key0})
    assert r0.status_code == 201

    sent = {}       # artikelnummer -> body, for every request sent
    acked = {}      # artikelnummer -> (response body, Location), for every 201
    unanswered = {}  # artikelnummer -> body, requests that got no answer (the kill)
    wrong = []      # any other answer
    lock = threading.Lock()
    stop = threading.Event()

    def client(c):
        s = requests.Session()
        try:
            for i in range(100000):
                if stop.is_set():
                    return
                nr, body = body_for(c, i)
                with lock:
                    sent[nr] = body
                try:
                    r = s.post(p.url(CREATE), data=json.dumps(body),
                               headers={"Content-Type": "application/json",
                                        "Idempotency-Key": f"load-{nr}"}, timeout=IO_TIMEOUT)
                except requests.RequestException:
                    with lock:
                        unanswered[nr] = body
                    return  # the server is gone
                with lock:
                    if r.status_code == 201:
                        acked[nr] = (r.json(), r.headers.get("Location"))
                    else:
                        wrong.append((nr, r.status_code, r.text[:200]))
                        return
        finally:
            s.close()

    threads = [threading.Thread(target=client, args=(c,), daemon=True) for c in range(CLIENTS)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + LOAD_TIMEOUT
    while time.monotonic() < deadline:
        with lock:
            n = len(acked)
        if n >= ACKED_BEFORE_KILL or wrong or not any(t.is_alive() for t in threads):
            break
        time.sleep(0.005)
    alive_at_kill = sum(t.is_alive() for t in threads)
    p.signal(signal.SIGKILL)
    p.expected_exit = -signal.SIGKILL
    assert p.wait(IO_TIMEOUT) == -signal.SIGKILL
    for t in threads:
        t.join(timeout=IO_TIMEOUT * 2)
    stop.set()
    assert not any(t.is_alive() for t in threads), "a load client hangs"
    assert not wrong, wrong[:5]
    assert len(acked) >= ACKED_BEFORE_KILL, f"only {len(acked)} creates answered"
    assert alive_at_kill == CLIENTS, "the load had stopped before the kill"

    # restart on the same database
    p2 = start_process("articles", env)

    # every acknowledged create is there, exactly as answered
    for nr, (doc, location) in acked.items():
        assert location == f"/api/v1/article/{doc['id']}"
        r = p2.get(location)
        assert r.status_code == 200, (nr, r.text)
        assert r.json() == doc
        assert r.headers["ETag"] == '"1"'
        assert same_as_sent(doc, sent[nr])

    # no half-written row: every row is complete and is one request's body, whole
    rows = all_articles(p2)
    numbers = [a["artikelnummer"] for a in rows]
    assert len(numbers) == len(set(numbers))
    for a in rows:
        assert set(a) == KEYS, a
        assert RFC3339.match(a["erstellt_am"]) and a["geaendert_am"] is None, a
        if a["artikelnummer"] == body0["artikelnummer"]:
            assert a == r0.json()
            continue
        assert a["artikelnummer"] in sent, a
        assert same_as_sent(a, sent[a["artikelnummer"]]), a
    assert set(acked) <= set(numbers)
    in_flight_committed = set(numbers) & set(unanswered)
    assert len(rows) == 1 + len(acked) + len(in_flight_committed)

    # the same, read from the database itself after the service recovered it, without the
    # service (the SQLite file read-only, or PostgreSQL through psycopg2)
    url = p2.env["DATABASE_URL"]
    if not url.startswith("postgres"):
        assert query(url, "PRAGMA integrity_check") == [("ok",)]
        assert query(url, "PRAGMA foreign_key_check") == []
    assert query(url, "SELECT count(*) FROM artikel")[0][0] == len(rows)
    assert query(url, "SELECT count(*) FROM artikel WHERE version <> 1 OR erstellt_am IS"
                 " NULL OR bezeichnung = '' OR artikelnummer = ''")[0][0] == 0
    assert query(url, "SELECT count(*) FROM artikel a WHERE NOT EXISTS"
                 " (SELECT 1 FROM einheit e WHERE e.id = a.einheit_id)")[0][0] == 0
    # every committed create remembered its Idempotency-Key in the same transaction
    keys = {k for (k,) in query(url, "SELECT key FROM idempotency_keys")}
    assert keys == {key0} | {f"load-{nr}" for nr in numbers if nr != body0["artikelnummer"]}

    # Idempotency-Key replays survive the restart
    r = post_json(p2, CREATE, body0, {"Idempotency-Key": key0})
    assert r.status_code == 201 and r.json() == r0.json()
    assert r.headers["Location"] == r0.headers["Location"]
    for nr in list(acked)[:50]:
        r = post_json(p2, CREATE, sent[nr], {"Idempotency-Key": f"load-{nr}"})
        assert r.status_code == 201 and r.json() == acked[nr][0]

    # retrying what got no answer, with the same keys, creates each article exactly once
    for nr, body in unanswered.items():
        r = post_json(p2, CREATE, body, {"Idempotency-Key": f"load-{nr}"})
        assert r.status_code == 201, (nr, r.text)
        assert same_as_sent(r.json(), body)
    rows = all_articles(p2)
    assert len(rows) == 1 + len(acked) + len(unanswered)
    assert len({a["artikelnummer"] for a in rows}) == len(rows)

    # and the service goes on working normally
    r = post_json(p2, CREATE, {"artikelnummer": "D-AFTER", "bezeichnung": "danach",
                               "einheit_id": 1})
    assert r.status_code == 201
    assert r.json()["id"] > max(a["id"] for a in rows)
