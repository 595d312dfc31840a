"""The producing half of events (issue 11, DESIGN 3.6): every committed write of an article,
unit or batch appends its CloudEvents 1.0 envelope to the outbox in the same transaction;
the built-in feed GET /api/v1/events serves it. Runs on SQLite and, with LOTMESH_TEST_DB=pg,
on PostgreSQL (the outbox rows are read independently from the database as well)."""

import json
import threading
import time

import pytest

import pg_server
from events_util import (HEX32, TRACEPARENT, all_events, create_article, create_batch, db_rows,
                         db_url, feed, metric, wait_metric)
from harness import poll
from services_util import assert_full_problem, unique


@pytest.fixture
def articles(start_process):
    return start_process("articles", {"WORKERS": "2", "CHARGES_URL": "http://127.0.0.1:9"})


def check_envelope(ev, source, type_, subject):
    assert ev["specversion"] == "1.0"
    assert HEX32.match(ev["id"]), ev
    assert ev["source"] == source
    assert ev["type"] == type_
    assert ev["subject"] == str(subject)
    assert ev["datacontenttype"] == "application/json"
    assert isinstance(ev["sequence"], int) and ev["sequence"] >= 1
    assert isinstance(ev["aggregateversion"], int) and ev["aggregateversion"] >= 1
    assert isinstance(ev["time"], str) and ev["time"].endswith("Z")
    assert isinstance(ev["data"], dict)


def test_article_writes_append_their_events_with_the_representation(articles):
    nr = unique("EV")
    r = create_article(articles, nr)
    created = r.json()
    aid = created["id"]
    etag1 = r.headers["ETag"]
    r = articles.request("PATCH", f"/api/v1/article/{aid}", data=json.dumps(
        {"status": "gesperrt", "bezeichnung": "umbenannt"}),
        headers={"Content-Type": "application/json", "If-Match": etag1})
    assert r.status_code == 200, r.text
    updated = r.json()
    etag2 = r.headers["ETag"]
    r = articles.request("DELETE", f"/api/v1/article/{aid}", headers={"If-Match": etag2})
    assert r.status_code == 204, r.text

    evs = [e for e in all_events(articles)
           if e["subject"] == str(aid) and e["type"].startswith("artikel.")]
    assert [e["type"] for e in evs] == ["artikel.created", "artikel.updated", "artikel.deleted"]
    for e, t in zip(evs, ["artikel.created", "artikel.updated", "artikel.deleted"]):
        check_envelope(e, "/lotmesh/articles_api", t, aid)
    assert evs[0]["data"] == created            # exactly as the API returned it
    assert evs[1]["data"] == updated
    assert evs[2]["data"] == {"id": aid}
    assert evs[0]["aggregateversion"] == int(etag1.strip('W/"'))
    assert evs[1]["aggregateversion"] == int(etag2.strip('W/"'))
    assert evs[2]["aggregateversion"] > evs[1]["aggregateversion"], evs
    seqs = [e["sequence"] for e in evs]
    assert seqs == sorted(seqs) and len(set(seqs)) == 3
    assert len({e["id"] for e in evs}) == 3
    # the rows are in the database itself, one per event
    rows = db_rows(articles, "SELECT seq, type FROM outbox WHERE subject = ? AND type LIKE ?"
                   " ORDER BY seq", (aid, "artikel.%"))
    assert [(s, t) for s, t in rows] == [(e["sequence"], e["type"]) for e in evs]


def test_unit_create_appends_einheit_created(articles):
    r = articles.request("POST", "/api/v1/unit/create", data=json.dumps(
        {"kuerzel": unique("u")[:16], "bezeichnung": "Testeinheit"}),
        headers={"Content-Type": "application/json"})
    assert r.status_code == 201, r.text
    unit = r.json()
    evs = [e for e in all_events(articles) if e["type"].startswith("einheit.")]
    assert evs and evs[-1]["type"] == "einheit.created"
    check_envelope(evs[-1], "/lotmesh/articles_api", "einheit.created", unit["id"])
    assert evs[-1]["data"] == unit


def test_refused_writes_leave_no_event(articles):
    """A write answered 4xx rolled back: no outbox row commits with it."""
    nr = unique("RB")
    aid = create_article(articles, nr).json()["id"]
    before = all_events(articles)
    h = {"Content-Type": "application/json"}
    # unknown unit: 422 from before_write inside the transaction
    r = articles.request("POST", "/api/v1/article/create", data=json.dumps(
        {"artikelnummer": unique("RB"), "bezeichnung": "x", "einheit_id": 999999}), headers=h)
    assert r.status_code == 422
    # duplicate artikelnummer: the INSERT fails (409)
    r = articles.request("POST", "/api/v1/article/create", data=json.dumps(
        {"artikelnummer": nr, "bezeichnung": "x", "einheit_id": 1}), headers=h)
    assert r.status_code == 409
    # stale If-Match: 412 after the row was loaded
    r = articles.request("PUT", f"/api/v1/article/{aid}", data=json.dumps(
        {"artikelnummer": nr, "bezeichnung": "y", "einheit_id": 1}),
        headers={**h, "If-Match": '"99"'})
    assert r.status_code == 412
    r = articles.request("DELETE", f"/api/v1/article/{aid}", headers={"If-Match": '"7"'})
    assert r.status_code == 412
    assert all_events(articles) == before
    n = db_rows(articles, "SELECT count(*) FROM outbox")[0][0]
    assert n == len(before)


def test_sequence_only_grows_under_concurrent_writes(articles):
    n_threads, per = 4, 15
    errors = []

    def writer():
        for _ in range(per):
            try:
                create_article(articles, unique("CC"))
            except AssertionError as e:  # pragma: no cover - reported below
                errors.append(e)

    ts = [threading.Thread(target=writer) for _ in range(n_threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors, errors
    evs = all_events(articles)
    seqs = [e["sequence"] for e in evs]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert len([e for e in evs if e["type"] == "artikel.created"]) >= n_threads * per


def test_event_carries_the_writing_requests_traceparent(articles):
    trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    tp = f"00-{trace}-00f067aa0ba902b7-01"
    r = create_article(articles, unique("TP"), headers={"traceparent": tp})
    aid = r.json()["id"]
    ev = [e for e in all_events(articles)
          if e["subject"] == str(aid) and e["type"] == "artikel.created"][0]
    assert TRACEPARENT.match(ev["traceparent"]), ev
    assert ev["traceparent"].split("-")[1] == trace       # the same trace
    assert ev["traceparent"].split("-")[2] != "00f067aa0ba902b7"  # the service's own span


def test_feed_pages_in_order_and_long_polls_until_a_commit(articles):
    for _ in range(5):
        create_article(articles, unique("PG"))
    evs = all_events(articles)
    page = feed(articles, after=evs[0]["sequence"], limit=2)
    assert [e["sequence"] for e in page] == [e["sequence"] for e in evs[1:3]]
    last = evs[-1]["sequence"]
    assert feed(articles, after=last) == []               # no wait: answered at once

    got = {}

    def poller():
        t0 = time.monotonic()
        got["page"] = feed(articles, after=last, wait=20)
        got["took"] = time.monotonic() - t0

    t = threading.Thread(target=poller)
    t.start()
    time.sleep(0.3)
    assert t.is_alive(), "the long poll answered before anything was committed"
    aid = create_article(articles, unique("LP")).json()["id"]
    t.join(15)
    assert not t.is_alive()
    assert [(e["type"], e["subject"]) for e in got["page"]] == [("artikel.created", str(aid))]
    assert got["took"] < 10, got                         # woken by the commit, not the wait


@pytest.mark.parametrize("query", ["after=-1", "after=x", "limit=0", "limit=1001", "wait=61",
                                   "wait=1.5", "after=1&bogus=2"])
def test_feed_refuses_bad_parameters(articles, query):
    r = articles.get("/api/v1/events?" + query)
    assert_full_problem(r, 400, instance="/api/v1/events")


def test_feed_needs_a_service_token(start_process):
    from services_util import AUTH_ENV, bearer, service_token
    a = start_process("articles", {**AUTH_ENV, "CHARGES_URL": "http://127.0.0.1:9"})
    assert a.get("/api/v1/events").status_code == 401
    r = a.get("/api/v1/events", headers=bearer(service_token("articles_api", scope="read")))
    assert r.status_code == 200, r.text


def test_charge_writes_append_charge_events(start_process, articles):
    charges = start_process("charges", {"ARTICLES_URL": articles.base_url})
    aid = create_article(articles, unique("CH")).json()["id"]
    r = create_batch(charges, aid)
    assert r.status_code == 201, r.text
    batch = r.json()
    r = charges.request("PATCH", f"/api/v1/charge/{batch['id']}", data=json.dumps(
        {"status": "verbraucht"}), headers={"Content-Type": "application/json"})
    assert r.status_code == 200, r.text
    updated = r.json()
    assert charges.request("DELETE", f"/api/v1/charge/{batch['id']}").status_code == 204
    evs = [e for e in all_events(charges) if e["subject"] == str(batch["id"])]
    assert [e["type"] for e in evs] == ["charge.created", "charge.updated", "charge.deleted"]
    for e in evs:
        check_envelope(e, "/lotmesh/charges_api", e["type"], batch["id"])
    assert evs[0]["data"] == batch and evs[1]["data"] == updated
    assert evs[2]["data"] == {"id": batch["id"]}


def test_retention_prunes_published_events_and_the_feed_says_so(start_process):
    a = start_process("articles", {"EVENT_RETENTION": "1s", "CHARGES_URL": "http://127.0.0.1:9"})
    create_article(a, unique("RT"))
    create_article(a, unique("RT"))
    wait_metric(a, "lotmesh_events_pruned_through", lambda v: v >= 10, timeout=15)
    r = a.get("/api/v1/events?after=0")
    body = assert_full_problem(r, 410, instance="/api/v1/events")
    assert body["oldest"] == body["pruned_through"] + 1 >= 11, body  # 8 units, 2 articles
    assert "pruned" in body["detail"]
    # from the oldest available position on, the feed answers
    assert feed(a, after=body["pruned_through"]) == []
    aid = create_article(a, unique("RT")).json()["id"]
    page = feed(a, after=body["pruned_through"])
    assert [(e["type"], e["subject"]) for e in page] == [("artikel.created", str(aid))]
    assert metric(a, "lotmesh_events_outbox_backlog") is not None


def test_a_database_from_before_the_watermark_goes_on_where_its_marks_ended(start_process):
    """The relay keeps one watermark (event_meta published_through) instead of marking each
    row published; the migration that brings it (articles: SQLite 4, PostgreSQL 3) starts it
    below the first row the old relay had not marked, so only those are published again."""
    a = start_process("articles", {"CHARGES_URL": "http://127.0.0.1:9"})
    for _ in range(3):
        create_article(a, unique("WM"))
    seqs = [s for (s,) in db_rows(a, "SELECT seq FROM outbox ORDER BY seq")]
    wait_metric(a, "lotmesh_events_published_total", lambda v: v == len(seqs))
    # the relay counts an event published when the transport confirms it, then stores the
    # watermark in a database job of its own: a moment later on a busy machine
    assert poll(lambda: db_rows(a, "SELECT v FROM event_meta WHERE k = 'published_through'")
                == [(seqs[-1],)], timeout=10), \
        db_rows(a, "SELECT v FROM event_meta WHERE k = 'published_through'")
    url, env = db_url(a), dict(a.env)
    a.terminate()
    marked = seqs[4]  # what the relay before the watermark had marked: the first five rows
    version = 3 if url.startswith("postgres") else 4
    pg_server.execute(url, "DELETE FROM event_meta WHERE k = 'published_through';"
                           "CREATE INDEX outbox_unpublished ON outbox(seq)"
                           " WHERE published_at IS NULL;"
                           f"UPDATE outbox SET published_at = 1 WHERE seq <= {marked};"
                           f"DELETE FROM schema_migrations WHERE version >= {version}")
    b = start_process("articles", env)
    assert poll(lambda: db_rows(b, "SELECT v FROM event_meta WHERE k = 'published_through'")
                == [(seqs[-1],)], timeout=10)
    assert metric(b, "lotmesh_events_published_total") == len(seqs) - 5
    assert db_rows(b, "SELECT count(*) FROM outbox") == [(len(seqs),)]


@pytest.mark.parametrize("env,var", [({"EVENT_RETENTION": "0s"}, "EVENT_RETENTION"),
                                     ({"EVENT_RETENTION": "soon"}, "EVENT_RETENTION"),
                                     ({"EVENT_MAX_ATTEMPTS": "0"}, "EVENT_MAX_ATTEMPTS"),
                                     ({"EVENT_BROKER_URL": "kafka://x"}, "EVENT_BROKER_URL")])
def test_bad_event_configuration_stops_with_one_line(run_process, env, var):
    r = run_process("articles", env)
    assert r.returncode != 0
    lines = [ln for ln in r.stderr.splitlines() if var in ln]
    assert len(lines) == 1, r.stderr


def test_feed_through_the_gateway_with_a_read_scope(fleet, tmp_path):
    """ERP integrations read the feed through the gateway like any /api/v1 path: a client
    with the read scope gets it, none gets 401."""
    from gateway_util import SECRET, Gateway, bootstrap_clients, gateway_env
    (tmp_path / "clients").mkdir()
    creds = bootstrap_clients(tmp_path / "clients")
    a = fleet.start("articles", {"SERVICE_AUTH": "enabled", "SERVICE_TOKEN_SECRET": SECRET,
                                 "CHARGES_URL": "http://127.0.0.1:9"})
    gw = Gateway(fleet.start("gateway", gateway_env(
        creds, f"static:articles_api={a.base_url}", GATEWAY_SERVICES="articles_api")), creds)
    from services_util import service_token
    aid = create_article(a, unique("GW"), headers={
        "Authorization": "Bearer " + service_token("articles_api", secret=SECRET)}).json()["id"]
    r = gw.api("GET", "/api/articles_api/api/v1/events?after=0&limit=1000", client="reader")
    assert r.status_code == 200, r.text
    assert ("artikel.created", str(aid)) in [(e["type"], e["subject"]) for e in r.json()]
    assert gw.api("GET", "/api/articles_api/api/v1/events", client=None).status_code == 401
