"""The services' shared response cache in Redis (issue 15, CACHE_URL=redis://…): the
in-process cache in front of the session's real redis-server (harness.RedisServer).

Two charges instances on one database file (what the gateway balances over) share one cache:
what one read, the other answers from Redis without its database; a write through either is
never followed by a stale read through the other; Redis killed and restarted under load
causes no 5xx and no stale read; python3-redis looks at the keys. Bad settings: one line."""

import os
import threading

import pytest
import requests

from harness import IO_TIMEOUT, poll
from services_util import assert_config_error, post_json, unique

NS = "lotmesh:cache:charges_api:"


def charge(cid):
    return f"/api/v1/charge/{cid}"


@pytest.fixture(scope="module")
def article(tmp_path_factory):
    """One articles process with one article (charges checks references against it)."""
    from gateway_util import Fleet
    fleet = Fleet(tmp_path_factory.mktemp("redis-articles"))
    try:
        a = fleet.start("articles", {"WORKERS": "1"})
        r = post_json(a, "/api/v1/article/create",
                      {"artikelnummer": unique("R-"), "bezeichnung": "Mehl", "einheit_id": 1})
        assert r.status_code == 201, r.text
        yield a, r.json()["id"]
    finally:
        problems = fleet.stop()
        if problems:
            pytest.fail("\n".join(problems), pytrace=False)


@pytest.fixture
def pair(start_process, tmp_path, article, redis_server):
    proc, _ = article
    env = {"DATABASE_URL": str(tmp_path / "charges.db"), "WORKERS": "2",
           "ARTICLES_URL": proc.base_url, "CACHE_URL": redis_server.url,
           "CACHE_TIMEOUT": "200ms"}
    rc = redis_server.client()
    for k in rc.scan_iter(NS + "*"):
        rc.delete(k)
    return start_process("charges", env), start_process("charges", env)


def create(proc, article_id):
    r = post_json(proc, "/api/v1/charge/create",
                  {"artikel_id": article_id, "menge": 5, "einheit_id": 1,
                   "herstellungsdatum": "2026-11-24", "charge_nummer": unique("RC-")})
    assert r.status_code == 201, r.text
    return r.json()


def l2(proc, op, outcome):
    return proc.metric("lotmesh_cache_redis_total", op=op, outcome=outcome) or 0


def test_one_instance_reads_what_the_other_put_in_redis(pair, article, redis_server):
    a, b = pair
    c = create(a, article[1])
    assert a.get(charge(c["id"])).json() == c  # a: miss, read, put in Redis (after answering)
    rc = redis_server.client()
    value = poll(lambda: rc.get(NS + "e:" + charge(c["id"])))
    assert value is not None
    head, body = value.split(b"\n", 1)
    era, gen, flags, version, total = head.split()
    assert flags == b"0" and int(version) == 1 and body == a.get(charge(c["id"])).content
    assert 0 < rc.pttl(NS + "e:" + charge(c["id"])) <= 600_000
    misses = b.metric("lotmesh_cache_misses_total") or 0
    r = b.get(charge(c["id"]))
    assert r.json() == c and r.headers["ETag"] == '"1"'
    assert l2(b, "get", "hit") == 1
    # answered from Redis, not the database (lotmesh_db_reads_total also counts the events
    # relay's polls since issue 11, so the Redis level's own counters tell)
    assert l2(b, "get", "miss") == 0 and b.metric("lotmesh_cache_misses_total") == misses + 1
    assert b.get(charge(c["id"])).json() == c  # now in b's own cache
    assert l2(b, "get", "hit") == 1 and b.metric("lotmesh_cache_hits_total") >= 1
    assert a.metric("lotmesh_cache_redis_up") == b.metric("lotmesh_cache_redis_up") == 1


def test_lists_are_shared_and_dropped_by_any_write(pair, article, redis_server):
    a, b = pair
    c = create(a, article[1])
    q = {"charge_nummer": c["charge_nummer"]}
    assert a.get("/api/v1/charges", params=q).json() == [c]
    rc = redis_server.client()
    assert poll(lambda: rc.exists(NS + "e:/api/v1/charges?charge_nummer=" + c["charge_nummer"]))
    assert b.get("/api/v1/charges", params=q).json() == [c]
    assert l2(b, "get", "hit") == 1
    r = post_json(b, charge(c["id"]), {"menge": 7}, method="PATCH")
    assert r.status_code == 200, r.text
    assert a.get("/api/v1/charges", params=q).json() == [r.json()]
    assert a.get(charge(c["id"])).json() == r.json()


def test_writes_through_either_are_never_read_back_stale(pair, article, redis_server):
    a, b = pair
    ids = [create(a, article[1])["id"] for _ in range(2)]
    errors = []

    def client(cid, writer, reader):
        s = requests.Session()
        try:
            for i in range(1, 26):
                r = s.patch(writer.url(charge(cid)), json={"bemerkungen": str(i)},
                            timeout=IO_TIMEOUT)
                assert r.status_code == 200, r.text
                for p in (reader, writer):
                    g = s.get(p.url(charge(cid)), timeout=IO_TIMEOUT)
                    assert int(g.json()["bemerkungen"]) >= i, (i, g.json())
        except AssertionError as e:
            errors.append(str(e))

    ts = [threading.Thread(target=client, args=(ids[0], a, b)),
          threading.Thread(target=client, args=(ids[1], b, a))]
    for t in ts:
        t.start()
    for t in ts:
        t.join(120)
    assert not errors, errors[:3]
    assert l2(a, "invalidate", "done") + l2(b, "invalidate", "done") >= 50
    rc = redis_server.client()  # every write gave its marks back
    assert rc.zcard(NS + "busy") == 0 and not list(rc.scan_iter(NS + "w:*"))


def test_redis_killed_and_restarted_under_load_no_5xx_no_stale(pair, article, redis_server):
    a, b = pair
    cid = create(a, article[1])["id"]
    stop = threading.Event()
    errors, done = [], [0]

    def writer_reader():
        s = requests.Session()
        i = 0
        while not stop.is_set():
            i += 1
            try:
                r = s.patch((a if i % 2 else b).url(charge(cid)), json={"menge": i},
                            timeout=IO_TIMEOUT)
                if r.status_code != 200:
                    errors.append(("patch", r.status_code, r.text))
                    continue
                for p in (a, b):
                    g = s.get(p.url(charge(cid)), timeout=IO_TIMEOUT)
                    if g.status_code != 200 or g.json()["menge"] < i:
                        errors.append(("get", g.status_code, g.text, i))
                done[0] += 1
            except requests.RequestException as e:
                errors.append(repr(e))

    def reader():
        s = requests.Session()
        while not stop.is_set():
            for p in (a, b):
                try:
                    g = s.get(p.url(charge(cid)), timeout=IO_TIMEOUT)
                    if g.status_code >= 500:
                        errors.append(("read", g.status_code, g.text))
                except requests.RequestException as e:
                    errors.append(repr(e))

    from harness import poll
    ts = [threading.Thread(target=writer_reader)] + [threading.Thread(target=reader)
                                                     for _ in range(2)]
    for t in ts:
        t.start()
    try:
        poll(lambda: done[0] > 10, timeout=20)
        redis_server.stop()
        n = done[0]
        poll(lambda: done[0] > n + 10, timeout=20)
        assert poll(lambda: a.metric("lotmesh_cache_redis_up") == 0)
    finally:
        redis_server.start()
    try:
        assert poll(lambda: a.metric("lotmesh_cache_redis_up") == 1
                    and b.metric("lotmesh_cache_redis_up") == 1, timeout=15)
        n = done[0]
        poll(lambda: done[0] > n + 10, timeout=20)
    finally:
        stop.set()
        for t in ts:
            t.join(30)
    assert not errors, errors[:5]
    assert done[0] > 20
    assert l2(a, "any", "error") + l2(b, "any", "error") > 0
    # logged per outage, not per failed operation (a command timing out on a loaded machine
    # may make a second, short one)
    down = [ln for ln in a.stderr().splitlines() if "cache: Redis unavailable" in ln]
    assert 1 <= len(down) <= 3, down
    assert len(down) < l2(a, "any", "error") + 1


ON_PG = os.environ.get("LOTMESH_TEST_DB") == "pg"


@pytest.mark.parametrize("hosts", [
    "one",
    pytest.param("two", marks=pytest.mark.skipif(
        not ON_PG, reason="instances on two hosts share a database only on PostgreSQL")),
])
def test_a_write_cut_off_from_redis_is_never_read_back_stale(start_process, tmp_path, article,
                                                             redis_server, hosts):
    """a reaches Redis through a path the test cuts; b directly. After a's write whose
    invalidation cannot reach Redis, b never serves the older copy from Redis or its own
    cache: on one host at once (the host counter), on two hosts (TMPDIR apart: no shared
    counter) once the database's notification arrived (milliseconds). a fences Redis when it
    is back and uses it again."""
    from faultproxy import TcpCut
    proc, art_id = article
    path = TcpCut(redis_server.port)
    env = {"DATABASE_URL": str(tmp_path / "charges.db"), "WORKERS": "2",
           "ARTICLES_URL": proc.base_url, "CACHE_TIMEOUT": "200ms"}
    tmp_a, tmp_b = tmp_path / "host-a", tmp_path / "host-b"
    tmp_a.mkdir()
    tmp_b.mkdir()
    apart = {"TMPDIR": str(tmp_a)} if hosts == "two" else {}
    a = start_process("charges", {**env, **apart,
                                  "CACHE_URL": f"redis://127.0.0.1:{path.port}"})
    apart = {"TMPDIR": str(tmp_b)} if hosts == "two" else {}
    b = start_process("charges", {**env, **apart, "CACHE_URL": redis_server.url})
    rc = redis_server.client()
    try:
        c = create(a, art_id)
        key = NS + "e:" + charge(c["id"])
        assert a.get(charge(c["id"])).json() == c  # a: read, put in Redis
        assert poll(lambda: rc.exists(key))
        assert b.get(charge(c["id"])).json() == c  # b: from Redis (now in b's own level too)
        assert l2(b, "get", "hit") == 1  # shared across hosts too: one era in Redis
        era = int(rc.get(NS + "era") or 0)

        path.cut()
        r = post_json(a, charge(c["id"]), {"bemerkungen": "after the cut"}, method="PATCH")
        assert r.status_code == 200, r.text
        assert rc.exists(key)  # a could not delete it: Redis still holds the older copy
        assert a.get(charge(c["id"])).json()["bemerkungen"] == "after the cut"
        if hosts == "one":  # an instance started now, before anyone fenced, fences first
            n = start_process("charges", {**env, "CACHE_URL": redis_server.url})
            assert n.get(charge(c["id"])).json()["bemerkungen"] == "after the cut"
        new = lambda: b.get(charge(c["id"])).json()["bemerkungen"] == "after the cut"
        if hosts == "one":
            assert new()
        else:
            assert poll(new, timeout=5)
        assert poll(lambda: new() and l2(b, "fence", "done") >= 1, timeout=5)
        assert int(rc.get(NS + "era")) > era  # b fenced: every older entry is void
        assert all(new() for _ in range(5))
        assert b.metric("lotmesh_cache_redis_trusted") == 1

        path.heal()  # a reconnects, fences before it trusts Redis again, and uses it
        assert poll(lambda: a.get(charge(c["id"])).status_code == 200
                    and a.metric("lotmesh_cache_redis_up") == 1
                    and a.metric("lotmesh_cache_redis_trusted") == 1, timeout=15)
        assert l2(a, "fence", "done") >= 1
        d = create(b, art_id)
        hits = l2(a, "get", "hit")
        assert b.get(charge(d["id"])).json() == d
        assert poll(lambda: rc.exists(NS + "e:" + charge(d["id"])))
        assert a.get(charge(d["id"])).json() == d
        assert l2(a, "get", "hit") == hits + 1
        assert any("did not reach Redis" in ln for ln in a.stderr().splitlines())
    finally:
        path.close()


@pytest.mark.skipif(ON_PG, reason="holds the SQLite file's write lock to keep a write in flight")
def test_a_write_in_flight_leaves_no_older_copy_even_if_its_writer_dies(pair, article,
                                                                        redis_server, tmp_path):
    """A write marks itself in Redis before it starts: its item's copy is deleted and no copy
    of it is stored until the write ended — or, when its writer died between its commit and
    its invalidation, until the mark's lease ran out. Here a's write waits for the database
    file's lock the test holds; a read meanwhile answers the committed (old) value and does not
    store it; a is killed with its write in flight; the mark stays, with its lease."""
    import signal
    import sqlite3
    a, b = pair
    c = create(b, article[1])
    key, mark = NS + "e:" + charge(c["id"]), NS + "w:" + charge(c["id"])
    rc = redis_server.client()
    assert b.get(charge(c["id"])).json() == c
    assert poll(lambda: rc.exists(key))
    lock = sqlite3.connect(str(tmp_path / "charges.db"), isolation_level=None, timeout=5)
    lock.execute("BEGIN IMMEDIATE")  # a's write now waits (its busy timeout: 5 s)
    codes = []

    def patch():
        try:
            codes.append(post_json(a, charge(c["id"]), {"bemerkungen": "in flight"},
                                   method="PATCH").status_code)
        except requests.RequestException as e:
            codes.append(repr(e))

    t = threading.Thread(target=patch)
    t.start()
    try:
        assert poll(lambda: rc.get(mark) == b"1", timeout=5)
        assert rc.zcard(NS + "busy") == 1  # lists are not stored either
        assert not rc.exists(key)  # the copy from before the write is gone
        assert 0 < rc.pttl(mark) <= 30_000
        stale = l2(a, "put", "stale")
        assert a.get(charge(c["id"])).json() == c  # nothing committed yet: the old value …
        assert poll(lambda: l2(a, "put", "stale") == stale + 1)  # … not stored
        assert not rc.exists(key)
        a.kill()
        a.expected_exit = -signal.SIGKILL
    finally:
        lock.rollback()
        lock.close()
        t.join(30)
    assert codes and codes[0] != 200, codes
    assert rc.exists(mark) and 0 < rc.pttl(mark) <= 30_000  # held until its lease ends
    assert rc.zcard(NS + "busy") == 1
    assert b.get(charge(c["id"])).json() == c  # the write never committed


def test_unreachable_redis_at_start_means_misses_not_errors(start_process, tmp_path, article):
    from gateway_util import dead_port
    proc, art_id = article
    c = start_process("charges", {"DATABASE_URL": str(tmp_path / "c.db"),
                                  "ARTICLES_URL": proc.base_url, "CACHE_TIMEOUT": "100ms",
                                  "CACHE_URL": f"redis://127.0.0.1:{dead_port()}"})
    x = create(c, art_id)
    for _ in range(3):
        assert c.get(charge(x["id"])).json() == x
    assert poll(lambda: c.metric("lotmesh_cache_redis_up") == 0)  # once a connect timed out
    assert c.metric("lotmesh_cache_hits_total") >= 1  # the in-process level still works


@pytest.mark.parametrize("env", [
    {"CACHE_URL": "redis://"},
    {"CACHE_URL": "redis://127.0.0.1:70000"},
    {"CACHE_URL": "redis://127.0.0.1/x"},
    {"CACHE_URL": "redis://127.0.0.1", "CACHE_TTL": "soon"},
    {"CACHE_URL": "redis://127.0.0.1", "CACHE_TIMEOUT": "0ms"},
])
def test_bad_redis_cache_settings_stop_with_one_line(run_process, tmp_path, env):
    name = "CACHE_URL" if len(env) == 1 else [k for k in env if k != "CACHE_URL"][0]
    assert_config_error(run_process, "charges", tmp_path / "c.db", env, name)
