"""The consuming half of events (issue 11, DESIGN 3.6), ONE suite parameterised by transport:
charges keeps its article and unit replica from artikel.*/einheit.*, articles keeps the live
batches per article from charge.* and refuses to delete an article that has any; each event
id is applied once (inbox), a stale event changes nothing, a poison event is dead-lettered
after bounded attempts without blocking, and the faults: a consumer SIGKILLed mid-stream, a
producer SIGKILLed right after its commit, a feed consumer behind a pruned position.

Adding a transport: add its name to TRANSPORTS and a branch in the `transport` fixture that
returns an events_util.Transport (its env() — e.g. EVENT_BROKER_URL — goes into every service
started here). inject() puts a raw event into the producer's outbox, so the relay carries it on
whatever transport runs."""

import json
import signal
import sqlite3
import threading
import time
import uuid

import pytest

import pg_server
from events_util import (FEED, Transport, all_events, create_article, create_batch, db_rows,
                         db_url, metric, wait_metric)
from harness import free_port, poll
from services_util import unique

pytestmark = pytest.mark.skipif(pg_server.BACKEND == "pg",
                                reason="the consumer suite runs on SQLite (producer tests "
                                       "cover both backends)")

TRANSPORTS = ["feed", "rabbitmq"]


@pytest.fixture(params=TRANSPORTS)
def transport(request):
    if request.param == "feed":
        yield FEED
        return
    if request.param == "rabbitmq":
        # the session's broker (rabbitmq_server.py); each test starts from empty queues
        rmq = request.getfixturevalue("rabbitmq")
        rmq.reset_queues("articles_api", "charges_api")
        # declared before the services start, as a deployment does: events published before
        # a consumer's first connection must not miss its queue
        rmq.declare_service_queue("charges_api", ["artikel.*", "einheit.*"])
        rmq.declare_service_queue("articles_api", ["charge.*"])
        yield Transport("rabbitmq", {"EVENT_BROKER_URL": rmq.url})
        # durable queues left bound to artikel.*/charge.* would take the messages later
        # suites expect to be unroutable (test_events_amqp) or to reach their own queues
        rmq.reset_queues("articles_api", "charges_api")
        return
    raise AssertionError(f"unknown transport {request.param}")


def inject(producer, type_, subject, version, data):
    """Appends a raw event to the producer's stream as its outbox would (feed transport:
    the row goes into its outbox table; the feed serves it)."""
    now = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
    con = sqlite3.connect(db_url(producer), timeout=10)
    try:
        con.execute("INSERT INTO outbox (event_id, type, subject, aggregateversion, time, data)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (uuid.uuid4().hex, type_, subject, version, now, data))
        con.commit()
    finally:
        con.close()


class System:
    """articles and charges, each consuming the other's events on one transport."""

    def __init__(self, start_process, transport, articles_env=None, charges_env=None):
        self.start_process = start_process
        self.transport = transport
        self.a_port, self.c_port = free_port(), free_port()
        self.articles_env = dict(articles_env or {})
        self.charges_env = dict(charges_env or {})
        self.articles = self.start_articles()
        self.charges = self.start_charges()

    def start_articles(self, wait=True):
        env = {"PORT": self.a_port, "CHARGES_URL": f"http://127.0.0.1:{self.c_port}",
               **self.transport.env(), **self.articles_env}
        self.articles = self.start_process("articles", env, wait=wait)
        return self.articles

    def start_charges(self, wait=True):
        env = {"PORT": self.c_port, "ARTICLES_URL": f"http://127.0.0.1:{self.a_port}",
               "ARTICLES_TIMEOUT": "500ms", **self.transport.env(), **self.charges_env}
        self.charges = self.start_process("charges", env, wait=wait)
        return self.charges

    def replica(self, aid):
        rows = db_rows(self.charges, "SELECT artikelnummer, status FROM artikel_replica"
                                     " WHERE id = ?", (aid,))
        return rows[0] if rows else None

    def wait_applied(self, proc, n, timeout=15):
        return wait_metric(proc, "lotmesh_events_consumed_total", lambda v: v >= n,
                           {"outcome": "applied"}, timeout=timeout)


@pytest.fixture
def system(start_process, transport):
    return System(start_process, transport)


def patch(proc, path, doc):
    r = proc.request("PATCH", path, data=json.dumps(doc),
                     headers={"Content-Type": "application/json"})
    assert r.status_code == 200, r.text
    return r.json()


def test_charges_replica_follows_articles_and_serves_while_articles_is_down(system):
    a, c = system.articles, system.charges
    unit = a.request("POST", "/api/v1/unit/create", data=json.dumps(
        {"kuerzel": unique("u")[:16], "bezeichnung": "Kiste"}),
        headers={"Content-Type": "application/json"}).json()
    live = create_article(a, unique("OK"), unit=unit["id"]).json()
    blocked = create_article(a, unique("BL"), unit=unit["id"]).json()
    renamed = patch(a, f"/api/v1/article/{blocked['id']}",
                    {"status": "gesperrt", "artikelnummer": unique("RN")})
    gone = create_article(a, unique("GO")).json()
    assert a.request("DELETE", f"/api/v1/article/{gone['id']}").status_code == 204
    # charges never asked about any of them: its replica learns them from the events
    assert poll(lambda: system.replica(blocked["id"]) == (renamed["artikelnummer"], "gesperrt"),
                timeout=15), system.replica(blocked["id"])
    assert poll(lambda: system.replica(gone["id"]) is None and
                metric(c, "lotmesh_events_consumed_total", {"outcome": "applied"}) >= 13)
    assert system.replica(live["id"]) == (live["artikelnummer"], "aktiv")
    assert db_rows(c, "SELECT kuerzel FROM einheit_replica WHERE id = ?",
                   (unit["id"],)) == [(unit["kuerzel"],)]

    assert a.terminate() == 0
    r = create_batch(c, live["id"], unit=unit["id"])
    assert r.status_code == 201, r.text                # validated against the replica
    r = create_batch(c, blocked["id"], unit=unit["id"])
    assert r.status_code == 422, r.text                # known blocked without asking
    assert "gesperrt" in r.text


def test_articles_refuses_to_delete_an_article_with_live_batches(system):
    a, c = system.articles, system.charges
    aid = create_article(a, unique("LB")).json()["id"]
    b1 = create_batch(c, aid)
    b2 = create_batch(c, aid)
    assert b1.status_code == 201 and b2.status_code == 201
    # eventually consistent by design: a DELETE before articles learnt of them would succeed
    system.wait_applied(a, 2)
    # (a Response is falsy for 4xx: poll on a list holding it)
    got = poll(lambda: (lambda r: [r] if r.status_code == 409 and "2 live" in r.text else None)(
        a.request("DELETE", f"/api/v1/article/{aid}")), timeout=15)
    assert got, "articles never learnt of the two batches"
    r = got[0]
    assert r.headers["content-type"].startswith("application/problem+json")
    assert "2 live batches" in r.json()["detail"]
    patch(c, f"/api/v1/charge/{b1.json()['id']}", {"status": "verbraucht"})
    assert c.request("DELETE", f"/api/v1/charge/{b2.json()['id']}").status_code == 204
    system.wait_applied(a, 4)
    r = a.request("DELETE", f"/api/v1/article/{aid}")
    assert r.status_code == 204, r.text


def test_stale_and_duplicate_events_change_nothing(system):
    a, c = system.articles, system.charges
    art = create_article(a, unique("ST")).json()
    upd = patch(a, f"/api/v1/article/{art['id']}", {"bezeichnung": "zwei"})
    patch(a, f"/api/v1/article/{art['id']}", {"status": "gesperrt"})
    assert poll(lambda: system.replica(art["id"]) == (upd["artikelnummer"], "gesperrt"),
                timeout=15)
    stale_before = metric(c, "lotmesh_events_consumed_total", {"outcome": "stale"})
    # an older version of the article arrives late: nothing changes
    inject(a, "artikel.updated", art["id"], 2, json.dumps({**upd, "status": "aktiv"}))
    wait_metric(c, "lotmesh_events_consumed_total", lambda v: v >= stale_before + 1,
                {"outcome": "stale"}, timeout=15)
    assert system.replica(art["id"]) == (upd["artikelnummer"], "gesperrt")


def test_poison_event_is_dead_lettered_after_bounded_attempts_and_does_not_block(
        start_process, transport):
    s = System(start_process, transport, charges_env={"EVENT_MAX_ATTEMPTS": "3"})
    a, c = s.articles, s.charges
    inject(a, "artikel.created", 987654, 1, json.dumps({"id": 987654}))  # lacks its fields
    after = create_article(a, unique("PO")).json()
    assert poll(lambda: s.replica(after["id"]) is not None, timeout=15), \
        "an event after the poison one was not applied"
    wait_metric(c, "lotmesh_events_consumed_total", lambda v: v == 1,
                {"outcome": "dead_lettered"})
    assert metric(c, "lotmesh_events_consume_retries_total") >= 2
    rows = db_rows(c, "SELECT stream, reason, body FROM event_dead")
    assert len(rows) == 1 and "987654" in rows[0][2] and "artikel.created" in rows[0][1], rows
    assert s.replica(987654) is None


def test_consumer_killed_mid_stream_applies_every_event_exactly_once(system):
    a, c = system.articles, system.charges
    n = 300
    assert c.terminate() == 0
    errs = []

    def writer(k):
        for i in range(n // 4):
            try:
                create_article(a, unique(f"K{k}"))
            except AssertionError as e:  # pragma: no cover
                errs.append(e)

    ts = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errs
    total = len(all_events(a))
    c = system.start_charges()
    # SIGKILL as soon as it has applied some (where exactly varies: the checks below hold
    # for any point, also when it had finished)
    poll(lambda: db_rows(c, "SELECT count(*) FROM event_inbox")[0][0] > 0, step=0.005)
    c.signal(signal.SIGKILL)
    c.wait(10)
    c.expected_exit = -9
    before = db_rows(c, "SELECT count(*) FROM event_inbox")[0][0]
    c = system.start_charges()
    system.wait_applied(c, total - before)
    poll(lambda: db_rows(c, "SELECT count(*) FROM event_inbox")[0][0] >= total)
    assert db_rows(c, "SELECT count(*) FROM event_inbox")[0][0] == total
    # nothing applied twice: after the restart exactly the events not yet in the inbox were
    # applied; the rest were recognised as duplicates
    time.sleep(0.3)
    assert metric(c, "lotmesh_events_consumed_total", {"outcome": "applied"}) == total - before
    assert db_rows(c, "SELECT count(*) FROM artikel_replica")[0][0] == n


def test_producer_killed_right_after_commit_still_delivers_after_restart(system):
    a, c = system.articles, system.charges
    art = create_article(a, unique("PK")).json()
    a.signal(signal.SIGKILL)
    a.wait(10)
    a.expected_exit = -9
    a = system.start_articles()
    assert poll(lambda: system.replica(art["id"]) is not None, timeout=15)
    wait_metric(a, "lotmesh_events_outbox_backlog", lambda v: v == 0)


def test_feed_consumer_behind_a_pruned_position_resyncs_and_logs_it(start_process, transport):
    if transport.name != "feed":
        pytest.skip("positions and retention are the feed's")
    s = System.__new__(System)
    s.start_process, s.transport = start_process, transport
    s.a_port, s.c_port = free_port(), free_port()
    s.articles_env, s.charges_env = {"EVENT_RETENTION": "1s"}, {}
    a = s.start_articles()
    create_article(a, unique("PR"))
    wait_metric(a, "lotmesh_events_pruned_through", lambda v: v >= 9, timeout=15)
    c = s.start_charges()
    wait_metric(c, "lotmesh_events_resyncs_total", lambda v: v == 1)
    logged = [ln for ln in c.log_lines() if "resync" in ln.get("msg", "")]
    assert len(logged) == 1 and logged[0]["level"] == "warn", logged
    art = create_article(a, unique("PR")).json()
    assert poll(lambda: s.replica(art["id"]) is not None, timeout=15)
