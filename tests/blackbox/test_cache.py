"""test_cache.py — the services' in-process response cache (lib/cache, CACHE_URL), through the
real articles binary: what a client sees must be what the database holds, with or without the
cache; hits are visible in /metrics; If-None-Match is answered 304; a bounded cache evicts;
bad settings stop the process with one line.

The coherence tests are the point: a write acknowledged to a client is never followed (for any
client, on any worker) by a read of what it replaced — a read by id, a read by a non-canonical
id spelling, or a list and its X-Total-Count.
"""

import threading

import pytest
import requests

from services_util import assert_config_error, assert_full_problem, module_process, post_json, unique

CREATE = "/api/v1/article/create"
LIST = "/api/v1/articles"


def art(path_id):
    return f"/api/v1/article/{path_id}"


@pytest.fixture(scope="module")
def svc(tmp_path_factory):
    yield from module_process(tmp_path_factory, "articles", {"WORKERS": "2"})


@pytest.fixture(scope="module")
def small(tmp_path_factory):  # a cache that holds only a few dozen articles
    yield from module_process(tmp_path_factory, "articles",
                              {"WORKERS": "2", "CACHE_MAX_BYTES": "64k"}, tag="small")


@pytest.fixture(scope="module")
def nocache(tmp_path_factory):
    yield from module_process(tmp_path_factory, "articles",
                              {"WORKERS": "2", "CACHE_URL": "none"}, tag="nocache")


def create(proc, **kw):
    body = {"artikelnummer": unique("C-"), "bezeichnung": "Roggenmehl", "einheit_id": 1, **kw}
    r = post_json(proc, CREATE, body)
    assert r.status_code == 201, r.text
    return r.json()


def patch(proc, aid, doc, headers=None):
    r = post_json(proc, art(aid), doc, headers, method="PATCH")
    assert r.status_code == 200, r.text
    return r


def hits(proc):
    return proc.metric("lotmesh_cache_hits_total") or 0


# ---- hits and coherence ------------------------------------------------------------------------

def test_repeated_reads_are_hits_and_identical(svc):
    a = create(svc)
    first = svc.get(art(a["id"]))
    before = hits(svc)
    for _ in range(5):
        r = svc.get(art(a["id"]))
        assert r.status_code == 200
        assert r.content == first.content and r.headers["ETag"] == first.headers["ETag"] == '"1"'
        assert r.headers["Content-Type"] == "application/json"
    assert hits(svc) >= before + 5
    assert r.json() == a


@pytest.mark.parametrize("cache", ["svc", "nocache"])
def test_reads_after_writes_see_the_writes(request, cache):
    proc = request.getfixturevalue(cache)
    a = create(proc)
    assert proc.get(art(a["id"])).json() == a  # now cached (when there is a cache)
    n = patch(proc, a["id"], {"bezeichnung": "neu"}).json()
    r = proc.get(art(a["id"]))
    assert r.json() == n and r.headers["ETag"] == '"2"'
    put = {k: n[k] for k in ("artikelnummer", "einheit_id")} | {"bezeichnung": "ganz neu"}
    r = post_json(proc, art(a["id"]), put, method="PUT")
    assert r.status_code == 200, r.text
    assert proc.get(art(a["id"])).json()["bezeichnung"] == "ganz neu"
    assert proc.request("DELETE", art(a["id"])).status_code == 204
    assert_full_problem(proc.get(art(a["id"])), 404)
    assert proc.get(art(a["id"])).status_code == 404  # a miss is not cached either


def test_non_canonical_id_spelling_sees_writes(svc):
    a = create(svc)
    odd = art(f"000{a['id']}")
    assert svc.get(odd).json() == a
    assert svc.get(art(a["id"])).json() == a
    n = patch(svc, a["id"], {"bezeichnung": "anders"}).json()
    assert svc.get(odd).json() == n
    patch(svc, f"0{a['id']}", {"bezeichnung": "wieder anders"})
    assert svc.get(art(a["id"])).json()["bezeichnung"] == "wieder anders"


def test_lists_and_totals_follow_creates_updates_and_deletes(svc):
    tag = unique("L-")
    q = {"q": tag, "limit": "2"}

    def listing():
        r = svc.get(LIST, params=q)
        assert r.status_code == 200, r.text
        return r.json(), int(r.headers["X-Total-Count"])

    assert listing() == ([], 0)
    assert listing() == ([], 0)  # cached empty page
    a = create(svc, bezeichnung=f"{tag} eins")
    items, total = listing()
    assert total == 1 and items == [a]
    b = create(svc, bezeichnung=f"{tag} zwei")
    c = create(svc, bezeichnung=f"{tag} drei")
    items, total = listing()
    assert total == 3 and [i["id"] for i in items] == [a["id"], b["id"]]
    assert svc.get(LIST, params=q).headers["Link"].endswith('rel="next"')
    patch(svc, b["id"], {"bezeichnung": "nicht mehr dabei"})
    items, total = listing()
    assert total == 2 and [i["id"] for i in items] == [a["id"], c["id"]]
    assert "Link" not in svc.get(LIST, params=q).headers
    assert svc.request("DELETE", art(a["id"])).status_code == 204
    items, total = listing()
    assert total == 1 and items == [c]


def test_an_unrelated_write_does_not_serve_a_stale_list(svc):
    """Lists are dropped by any write, including writes that reach them only through a
    filter they did not have before (status)."""
    tag = unique("S-")
    a = create(svc, bezeichnung=tag)
    params = {"q": tag, "status": "inaktiv"}
    assert svc.get(LIST, params=params).json() == []
    patch(svc, a["id"], {"status": "inaktiv"})
    assert [i["id"] for i in svc.get(LIST, params=params).json()] == [a["id"]]


def test_concurrent_writers_and_readers_never_go_back(svc):
    """Four clients each patch their own article and read it and a shared list back: every
    read after an acknowledged write shows that write or a later one (two workers, one
    cache, racing reads that started before a commit)."""
    tag = unique("R-")
    ids = [create(svc, bezeichnung=f"{tag} 0")["id"] for _ in range(4)]
    errors = []

    def client(aid):
        s = requests.Session()
        try:
            for i in range(1, 41):
                r = s.patch(svc.url(art(aid)), json={"beschreibung": str(i)}, timeout=10)
                assert r.status_code == 200, r.text
                acked = int(r.headers["ETag"].strip('"'))
                g = s.get(svc.url(art(aid)), timeout=10)
                seen = int(g.headers["ETag"].strip('"'))
                assert seen >= acked, f"read version {seen} after write {acked}"
                assert int(g.json()["beschreibung"]) >= i
                lst = s.get(svc.url(LIST), params={"q": tag, "limit": "10"}, timeout=10).json()
                mine = [x for x in lst if x["id"] == aid]
                assert mine and int(mine[0]["beschreibung"]) >= i, mine
        except AssertionError as e:  # pragma: no cover - reported below
            errors.append(str(e))

    threads = [threading.Thread(target=client, args=(aid,)) for aid in ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors[:3]
    for aid in ids:
        r = svc.get(art(aid))
        assert r.json()["beschreibung"] == "40" and r.headers["ETag"] == '"41"'


# ---- conditional GET -------------------------------------------------------------------------

def test_if_none_match_is_304_until_the_resource_changes(svc):
    a = create(svc)
    p = art(a["id"])
    for inm in ('"1"', 'W/"1"', '"9", "1"', "*"):
        r = svc.get(p, headers={"If-None-Match": inm})
        assert r.status_code == 304, (inm, r.status_code)
        assert r.content == b"" and r.headers["ETag"] == '"1"'
    r = svc.get(p, headers={"If-None-Match": '"2"'})
    assert r.status_code == 200 and r.json() == a
    patch(svc, a["id"], {"bezeichnung": "geaendert"})
    r = svc.get(p, headers={"If-None-Match": '"1"'})
    assert r.status_code == 200 and r.headers["ETag"] == '"2"'
    assert svc.get(p, headers={"If-None-Match": '"2"'}).status_code == 304


def test_head_answers_like_get_without_a_body(svc):
    a = create(svc)
    svc.get(art(a["id"]))
    r = svc.request("HEAD", art(a["id"]))
    assert r.status_code == 200 and r.content == b"" and r.headers["ETag"] == '"1"'
    assert int(r.headers["Content-Length"]) == len(svc.get(art(a["id"])).content)


def test_item_paths_refuse_query_parameters(svc):
    a = create(svc)
    for method in ("GET", "DELETE"):
        r = svc.request(method, art(a["id"]) + "?x=1")
        assert_full_problem(r, 400, "unknown query parameter 'x'")
    r = post_json(svc, art(a["id"]) + "?fields=id", {"bezeichnung": "z"}, method="PATCH")
    assert_full_problem(r, 400, "unknown query parameter 'fields'")
    assert svc.get(art(a["id"])).json() == a  # nothing was changed


# ---- bounds, metrics, configuration -----------------------------------------------------------

def test_a_small_cache_evicts_and_stays_correct(small):
    created = [create(small, beschreibung="x" * 1500) for _ in range(80)]
    for _ in range(2):
        for a in created:
            assert small.get(art(a["id"])).json() == a
    m = small.metrics()
    assert m[("lotmesh_cache_evictions_total", frozenset())] > 0
    assert m[("lotmesh_cache_bytes", frozenset())] <= 64 * 1024
    assert m[("lotmesh_cache_entries", frozenset())] < 80


def test_metrics_count_hits_misses_and_invalidations(svc):
    a = create(svc)
    m0 = svc.metrics()
    svc.get(art(a["id"]))
    svc.get(art(a["id"]))
    patch(svc, a["id"], {"bezeichnung": "m"})
    m1 = svc.metrics()

    def d(name):
        return m1[(name, frozenset())] - m0[(name, frozenset())]

    assert d("lotmesh_cache_misses_total") >= 1 and d("lotmesh_cache_hits_total") >= 1
    assert d("lotmesh_cache_invalidations_total") >= 1


def test_cache_none_has_no_cache_metrics(nocache):
    a = create(nocache)
    nocache.get(art(a["id"]))
    assert nocache.metric("lotmesh_cache_hits_total") is None
    assert nocache.metric("lotmesh_db_reads_total") >= 1


@pytest.mark.parametrize("env,name", [
    ({"CACHE_URL": "redis://"}, "CACHE_URL"),
    ({"CACHE_URL": "http://127.0.0.1:6379"}, "CACHE_URL"),
    ({"CACHE_URL": "memory"}, "CACHE_URL"),
    ({"CACHE_MAX_BYTES": "lots"}, "CACHE_MAX_BYTES"),
    ({"CACHE_MAX_BYTES": "1k"}, "CACHE_MAX_BYTES"),
])
def test_bad_cache_settings_stop_with_one_clear_line(run_process, tmp_path, env, name):
    assert_config_error(run_process, "articles", tmp_path / "a.db", env, name)


# ---- several processes on one database ---------------------------------------------------------

@pytest.mark.parametrize("writer_cache", ["memory:", "none"])
def test_instances_sharing_a_database_see_each_others_writes(start_process, tmp_path,
                                                             writer_cache):
    """Two instances of a service on one database file (what the gateway balances over): a
    write through one is seen at once through the other, whose cache held the old answer —
    whether or not the writer has a cache of its own."""
    db = str(tmp_path / "shared.db")
    a = start_process("articles", {"DATABASE_URL": db, "WORKERS": "2"})
    b = start_process("articles", {"DATABASE_URL": db, "WORKERS": "2",
                                   "CACHE_URL": writer_cache})
    x = create(a)
    tag = unique("M-")
    q = {"q": tag}
    for _ in range(2):  # cached in a
        assert a.get(art(x["id"])).json() == x
        assert a.get(LIST, params=q).json() == []
    flushes = a.metric("lotmesh_cache_flushes_total")
    # writes that were refused changed nothing: a's cache stays
    r = post_json(b, CREATE, {"artikelnummer": x["artikelnummer"], "bezeichnung": "d",
                              "einheit_id": 1})
    assert_full_problem(r, 409)
    assert_full_problem(post_json(b, art(x["id"]), {"bezeichnung": "z"}, {"If-Match": '"9"'},
                                  method="PATCH"), 412)
    assert a.get(art(x["id"])).json() == x
    assert a.metric("lotmesh_cache_flushes_total") == flushes
    n = patch(b, x["id"], {"bezeichnung": tag}).json()
    assert a.get(art(x["id"])).json() == n
    assert a.get(LIST, params=q).json() == [n]
    assert a.metric("lotmesh_cache_flushes_total") > flushes
    assert b.request("DELETE", art(x["id"])).status_code == 204
    assert a.get(art(x["id"])).status_code == 404
    assert a.get(LIST, params=q).json() == []
    y = create(b, bezeichnung=tag)  # a create through b is in a's list
    assert a.get(LIST, params=q).json() == [y]
    # and the other way round, b's cache too when it has one
    assert b.get(art(y["id"])).json() == y
    m = patch(a, y["id"], {"beschreibung": "von a"}).json()
    assert b.get(art(y["id"])).json() == m


def test_racing_instances_never_serve_an_acknowledged_write_back(start_process, tmp_path):
    db = str(tmp_path / "shared.db")
    a = start_process("articles", {"DATABASE_URL": db, "WORKERS": "2"})
    b = start_process("articles", {"DATABASE_URL": db, "WORKERS": "2"})
    ids = [create(a)["id"] for _ in range(2)]
    errors = []

    def client(aid, writer, reader):
        s = requests.Session()
        try:
            for i in range(1, 31):
                r = s.patch(writer.url(art(aid)), json={"beschreibung": str(i)}, timeout=10)
                assert r.status_code == 200, r.text
                g = s.get(reader.url(art(aid)), timeout=10)
                assert int(g.json()["beschreibung"]) >= i, (i, g.json())
        except AssertionError as e:  # pragma: no cover - reported below
            errors.append(str(e))

    threads = [threading.Thread(target=client, args=(ids[0], a, b)),
               threading.Thread(target=client, args=(ids[1], b, a))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors[:3]
