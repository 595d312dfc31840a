"""lotmesh-charges through its HTTP API, with a real lotmesh-articles behind it (issue 3,
DESIGN 3.2/3.4): the seed's Chargen-API — create (201, Location, ETag, Idempotency-Key), read,
list (filters, FEFO order, pagination with X-Total-Count and Link), PUT, PATCH, DELETE with
If-Match — and every rule of a batch ledger: menge > 0 and finite, artikel_id and einheit_id
known to articles (422 naming the field), an aktiv article for a new batch, herstellungsdatum
required and normalised to UTC, mindesthaltbarkeitsdatum not before it and defaulted from the
article's shelf life, unique charge_nummer (409) or one from the yearly series, the status set
and its transitions, server-set timestamps. Hostile bodies (truncated, wrong types, deep
nesting, huge numbers, invalid UTF-8, 1 MB strings) get a 4xx problem and write nothing.

Resilience: with articles stopped, a batch for an article (and unit) charges has seen is still
created, an unknown one gets 503 and nothing is written, and a retried create is answered from
its Idempotency-Key; with articles restarted, everything is normal again. Durability: charges
SIGKILLed under a concurrent create load and restarted on the same database has every batch it
answered 201 for, and nothing half-written.

Every error must be an RFC 9457 problem with type, title, status, detail, instance, trace_id.
Most tests share one articles + charges pair (module scope) and keep apart by using their own
articles; the outage and crash tests start their own pair."""

import datetime as dt
import json
import re
import signal
import sqlite3
import threading
import time

import pytest
import requests

import pg_server

from charges_util import (CHARGE_KEYS, CREATE, LIST, OMIT, STATUSES, UNIT_LITER, UTC_TIME,
                          Stack, assert_full_problem, charge_path, messages, module_stack,
                          send_json, unique, wait_until)
from harness import free_port
from services_util import assert_config_error

YEAR = dt.datetime.now(dt.timezone.utc).year
NUMBER = re.compile(rf"^CH-{YEAR}-(\d{{6}})$")
ALLOWED = {"aktiv": {"gesperrt", "verbraucht", "abgelaufen"},
           "gesperrt": {"aktiv", "verbraucht", "abgelaufen"},
           "abgelaufen": {"verbraucht"},
           "verbraucht": set()}


@pytest.fixture(scope="module")
def _stack(tmp_path_factory):
    yield from module_stack(tmp_path_factory)


@pytest.fixture
def stack(_stack):
    for p in (_stack.articles, _stack.charges):
        assert p.alive(), f"{p.name} died:\n{p.stderr_tail()}"
    yield _stack
    for p in (_stack.articles, _stack.charges):
        assert p.alive(), f"{p.name} died:\n{p.stderr_tail()}"


def parse_time(s):
    return dt.datetime.fromisoformat(s.replace("Z", "+00:00"))


def etag(resp):
    return resp.headers.get("ETag")


def ids(items):
    return [c["id"] for c in items]


# ---- create ---------------------------------------------------------------------------------

def test_create_answers_201_with_location_etag_and_the_batch(stack):
    art = stack.article(mindesthaltbarkeit_tage=10)
    before = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=5)
    r = stack.post_charge({"artikel_id": art["id"], "menge": 250, "einheit_id": UNIT_LITER,
                           "herstellungsdatum": "2026-03-01T08:30:00+01:00",
                           "bemerkungen": "  Tank 3  "})
    assert r.status_code == 201, r.text
    assert r.headers["Content-Type"] == "application/json"
    c = r.json()
    assert set(c) == CHARGE_KEYS
    assert r.headers["Location"] == charge_path(c["id"])
    assert etag(r) == '"1"'
    assert c["artikel_id"] == art["id"] and c["einheit_id"] == UNIT_LITER
    assert c["menge"] == 250
    assert c["herstellungsdatum"] == "2026-03-01T07:30:00Z"
    assert c["mindesthaltbarkeitsdatum"] == "2026-03-11T07:30:00Z"
    assert NUMBER.match(c["charge_nummer"]), c["charge_nummer"]
    assert c["status"] == "aktiv"
    assert c["bemerkungen"] == "Tank 3"
    assert c["geaendert_am"] is None
    assert UTC_TIME.match(c["erstellt_am"])
    assert before <= parse_time(c["erstellt_am"]) <= dt.datetime.now(dt.timezone.utc) + \
        dt.timedelta(seconds=5)
    g = stack.charges.get(r.headers["Location"])
    assert g.status_code == 200
    assert g.json() == c
    assert etag(g) == '"1"'


def test_create_with_every_field(stack):
    art = stack.article()
    nr = unique("LOT-")
    c = stack.charge(art, menge=0.125, herstellungsdatum="2026-02-10",
                     mindesthaltbarkeitsdatum="2026-08-10T12:00:00Z", charge_nummer=nr,
                     status="gesperrt", bemerkungen="Qualitätsprüfung läuft")
    assert c["menge"] == 0.125
    assert c["herstellungsdatum"] == "2026-02-10T00:00:00Z"
    assert c["mindesthaltbarkeitsdatum"] == "2026-08-10T12:00:00Z"
    assert c["charge_nummer"] == nr
    assert c["status"] == "gesperrt"
    assert c["bemerkungen"] == "Qualitätsprüfung läuft"


@pytest.mark.parametrize("given,stored", [
    ("2026-01-15T10:00:00+02:00", "2026-01-15T08:00:00Z"),
    ("2026-01-15T00:30:00-01:00", "2026-01-15T01:30:00Z"),
    ("2026-01-01T00:30:00+01:00", "2025-12-31T23:30:00Z"),
    ("2026-01-15", "2026-01-15T00:00:00Z"),
    ("2024-02-29", "2024-02-29T00:00:00Z"),
    ("2026-01-15t10:00:00z", "2026-01-15T10:00:00Z"),
    ("2026-01-15 10:00:00Z", "2026-01-15T10:00:00Z"),
    ("2026-01-15T10:00:00.5Z", "2026-01-15T10:00:00.500Z"),
    ("2026-01-15T10:00:00.123456789Z", "2026-01-15T10:00:00.123Z"),
    ("  2026-01-15T10:00:00Z \t", "2026-01-15T10:00:00Z"),
    ("0001-01-01T00:00:00Z", "0001-01-01T00:00:00Z"),
    ("9999-12-31T23:59:59.999Z", "9999-12-31T23:59:59.999Z"),
])
def test_dates_are_normalised_to_utc(stack, given, stored):
    art = stack.article()  # no shelf life: the MHD stays what is given
    c = stack.charge(art, herstellungsdatum=given, mindesthaltbarkeitsdatum=given)
    assert c["herstellungsdatum"] == stored
    assert c["mindesthaltbarkeitsdatum"] == stored
    assert stack.get(c["id"]).json() == c


@pytest.mark.parametrize("bad", [
    "2026-02-30", "2025-02-29", "2026-13-01", "2026-00-10", "2026-1-01", "26-01-01",
    "2026-01-01T10:00:00", "2026-01-01T24:00:00Z", "2026-01-01T10:60:00Z",
    "2026-01-01T10:00:60Z", "2026-01-01T10:00Z", "2026-01-01Z", "2026-01-01T10:00:00.Z",
    "2026-01-01T10:00:00.1234567891Z", "2026-01-01T10:00:00+24:00", "2026-01-01T10:00:00+0200",
    "", "   ", "yesterday", "01.02.2026", "0000-01-01",
    "9999-12-31T23:00:00-05:00",   # after 9999-12-31 once in UTC
    "0001-01-01T00:00:00+01:00",   # before 0001-01-01 once in UTC
    20260101, 1.5, True, ["2026-01-01"], {"date": "2026-01-01"},
])
def test_invalid_herstellungsdatum_is_422(stack, bad):
    art = stack.article()
    total = stack.count()
    r = stack.post_charge(stack.body(art, herstellungsdatum=bad))
    assert_full_problem(r, 422, instance=CREATE, fields=["herstellungsdatum"])
    r = stack.post_charge(stack.body(art, mindesthaltbarkeitsdatum=bad))
    assert_full_problem(r, 422, instance=CREATE, fields=["mindesthaltbarkeitsdatum"])
    assert stack.count() == total


def test_herstellungsdatum_is_required_and_not_null(stack):
    art = stack.article()
    r = stack.post_charge(stack.body(art, herstellungsdatum=OMIT))
    body = assert_full_problem(r, 422, fields=["herstellungsdatum"])
    assert "required" in messages(body)["herstellungsdatum"][0]
    r = stack.post_charge(stack.body(art, herstellungsdatum=None))
    assert_full_problem(r, 422, fields=["herstellungsdatum"])


def test_every_missing_required_field_is_named(stack):
    r = stack.post_charge({})
    body = assert_full_problem(r, 422, instance=CREATE)
    assert set(messages(body)) == {"artikel_id", "menge", "einheit_id", "herstellungsdatum"}


# ---- menge ----------------------------------------------------------------------------------

@pytest.mark.parametrize("menge", [0, 0.0, -0.0, -1, -0.001, 1e12 + 1, 1e13, 1.7e308,
                                   "5", "", None, True, [5], {"wert": 5}])
def test_menge_must_be_a_positive_finite_number_up_to_1e12(stack, menge):
    art = stack.article()
    total = stack.count()
    r = stack.post_charge(stack.body(art, menge=menge))
    assert_full_problem(r, 422, instance=CREATE, fields=["menge"])
    assert stack.count() == total


@pytest.mark.parametrize("menge", [1e-9, 1, 0.001, 999999.999, 1e12])
def test_menge_accepted(stack, menge):
    art = stack.article()
    c = stack.charge(art, menge=menge)
    assert c["menge"] == menge


def test_menge_is_required(stack):
    art = stack.article()
    r = stack.post_charge(stack.body(art, menge=OMIT))
    assert_full_problem(r, 422, fields=["menge"])


# ---- article and unit -----------------------------------------------------------------------

def test_unknown_article_is_422_naming_artikel_id(stack):
    art = stack.article()
    total = stack.count()
    r = stack.post_charge(stack.body(art, artikel_id=987654321))
    body = assert_full_problem(r, 422, instance=CREATE, fields=["artikel_id"])
    assert "987654321" in messages(body)["artikel_id"][0]
    assert "einheit_id" not in messages(body)
    assert stack.count() == total


def test_unknown_unit_is_422_naming_einheit_id(stack):
    art = stack.article()
    total = stack.count()
    r = stack.post_charge(stack.body(art, einheit_id=987654))
    body = assert_full_problem(r, 422, fields=["einheit_id"])
    assert "artikel_id" not in messages(body)
    r = stack.post_charge(stack.body(art, artikel_id=987654321, einheit_id=987654))
    assert_full_problem(r, 422, fields=["artikel_id", "einheit_id"])
    assert stack.count() == total


def test_unit_may_differ_from_the_articles_unit(stack):
    art = stack.article(einheit_id=UNIT_LITER)
    c = stack.charge(art, einheit_id=5)  # ml
    assert c["einheit_id"] == 5


@pytest.mark.parametrize("field", ["artikel_id", "einheit_id"])
@pytest.mark.parametrize("value", [0, -1, 9.3e18, 9223372036854775807, 1.0, 2.5, "1", None,
                                   True, [1]])
def test_reference_ids_must_be_positive_integers(stack, field, value):
    art = stack.article()
    r = stack.post_charge(stack.body(art, **{field: value}))
    assert_full_problem(r, 422, fields=[field])


REF_ID_MAX = 9200000000000000000  # openapi.json's maximum of artikel_id and einheit_id


def test_artikel_id_has_one_bound_as_a_field_and_as_a_filter(stack):
    """Issue 9: the filter stopped at 2^62 while the field took up to 9.2e18, and the field's
    check compared doubles (9.2e18 + 1 passed it)."""
    assert stack.list(artikel_id=REF_ID_MAX).json() == []
    r = stack.charges.get(LIST, params={"artikel_id": REF_ID_MAX + 1}, headers=stack._c())
    assert_full_problem(r, 400, fields=["artikel_id"])
    art = stack.article()
    for field in ("artikel_id", "einheit_id"):
        r = stack.post_charge(stack.body(art, **{field: REF_ID_MAX + 1}))
        body = assert_full_problem(r, 422, fields=[field])
        assert messages(body)[field] == [f"must be at most {REF_ID_MAX}"], body


@pytest.mark.parametrize("status", ["inaktiv", "gesperrt"])
def test_new_batch_needs_an_aktiv_article(stack, status):
    art = stack.article(mindesthaltbarkeit_tage=3)
    old = stack.charge(art)
    stack.set_article_status(art, status)
    total = stack.count()
    r = stack.post_charge(stack.body(art))
    body = assert_full_problem(r, 422, fields=["artikel_id"])
    assert status in messages(body)["artikel_id"][0]
    assert stack.count() == total
    # an existing batch of that article can still be changed
    r = stack.patch(old["id"], {"artikel_id": art["id"], "menge": 1, "status": "gesperrt"})
    assert r.status_code == 200, r.text
    # and once the article is aktiv again, new batches are fine
    stack.set_article_status(art, "aktiv")
    stack.charge(art)


def test_article_changes_in_articles_are_seen(stack):
    art = stack.article(mindesthaltbarkeit_tage=5)
    c1 = stack.charge(art, herstellungsdatum="2026-04-01")
    assert c1["mindesthaltbarkeitsdatum"] == "2026-04-06T00:00:00Z"
    r = send_json(stack.articles, "PATCH", f"/api/v1/article/{art['id']}",
                  {"mindesthaltbarkeit_tage": 20})
    assert r.status_code == 200, r.text
    c2 = stack.charge(art, herstellungsdatum="2026-04-01")
    assert c2["mindesthaltbarkeitsdatum"] == "2026-04-21T00:00:00Z"


# ---- mindesthaltbarkeitsdatum ------------------------------------------------------------------

@pytest.mark.parametrize("days,hd,mhd", [
    (10, "2026-01-15T10:00:00+02:00", "2026-01-25T08:00:00Z"),
    (10, "2024-02-20", "2024-03-01T00:00:00Z"),
    (0, "2026-05-05T05:05:05.5Z", "2026-05-05T05:05:05.500Z"),
    (365, "2027-03-01", "2028-02-29T00:00:00Z"),
    (36500, "2026-01-01", "2125-12-08T00:00:00Z"),
])
def test_mhd_defaults_to_production_plus_shelf_life(stack, days, hd, mhd):
    art = stack.article(mindesthaltbarkeit_tage=days)
    c = stack.charge(art, herstellungsdatum=hd)
    assert c["mindesthaltbarkeitsdatum"] == mhd
    c = stack.charge(art, herstellungsdatum=hd, mindesthaltbarkeitsdatum=None)
    assert c["mindesthaltbarkeitsdatum"] == mhd


def test_given_mhd_wins_over_the_default(stack):
    art = stack.article(mindesthaltbarkeit_tage=10)
    c = stack.charge(art, herstellungsdatum="2026-01-01", mindesthaltbarkeitsdatum="2026-01-03")
    assert c["mindesthaltbarkeitsdatum"] == "2026-01-03T00:00:00Z"


def test_no_shelf_life_no_mhd(stack):
    art = stack.article()
    assert art["mindesthaltbarkeit_tage"] is None
    c = stack.charge(art)
    assert c["mindesthaltbarkeitsdatum"] is None


def test_mhd_default_beyond_year_9999_is_422(stack):
    art = stack.article(mindesthaltbarkeit_tage=10)
    total = stack.count()
    r = stack.post_charge(stack.body(art, herstellungsdatum="9999-12-31"))
    assert_full_problem(r, 422, fields=["mindesthaltbarkeitsdatum"])
    assert stack.count() == total
    c = stack.charge(art, herstellungsdatum="9999-12-21T23:59:59.999Z")
    assert c["mindesthaltbarkeitsdatum"] == "9999-12-31T23:59:59.999Z"


@pytest.mark.parametrize("hd,mhd", [
    ("2026-03-01", "2026-02-28"),
    ("2026-03-01T10:00:00Z", "2026-03-01T09:59:59.999Z"),
    ("2026-03-01T10:00:00Z", "2026-03-01T11:00:00+02:00"),
    ("2026-03-01T00:00:00.001Z", "2026-03-01"),
])
def test_mhd_before_production_is_422(stack, hd, mhd):
    art = stack.article(mindesthaltbarkeit_tage=30)
    total = stack.count()
    r = stack.post_charge(stack.body(art, herstellungsdatum=hd, mindesthaltbarkeitsdatum=mhd))
    body = assert_full_problem(r, 422, instance=CREATE, fields=["mindesthaltbarkeitsdatum"])
    assert "herstellungsdatum" in messages(body)["mindesthaltbarkeitsdatum"][0]
    assert stack.count() == total


def test_mhd_equal_to_production_is_fine(stack):
    art = stack.article()
    c = stack.charge(art, herstellungsdatum="2026-03-01T10:00:00+01:00",
                     mindesthaltbarkeitsdatum="2026-03-01T09:00:00Z")
    assert c["mindesthaltbarkeitsdatum"] == c["herstellungsdatum"]


# ---- charge_nummer ----------------------------------------------------------------------------

def test_charge_nummer_must_be_unique(stack):
    art = stack.article()
    nr = unique("DUP-")
    first = stack.charge(art, charge_nummer=nr)
    total = stack.count()
    for given in (nr, f"  {nr}  "):
        r = stack.post_charge(stack.body(art, charge_nummer=given))
        body = assert_full_problem(r, 409, instance=CREATE, fields=["charge_nummer"])
        assert nr in messages(body)["charge_nummer"][0]
    assert stack.count() == total
    assert stack.list(charge_nummer=nr).json() == [first]


def test_generated_numbers_follow_the_yearly_series_and_skip_taken_ones(stack):
    art = stack.article()
    a = stack.charge(art)
    n = int(NUMBER.match(a["charge_nummer"]).group(1))
    taken = f"CH-{YEAR}-{n + 1:06d}"
    stack.charge(art, charge_nummer=taken)  # typed in by hand: the series must skip it
    b = stack.charge(art)
    assert b["charge_nummer"] == f"CH-{YEAR}-{n + 2:06d}"
    c = stack.charge(art)
    assert c["charge_nummer"] == f"CH-{YEAR}-{n + 3:06d}"


def test_a_number_of_the_series_given_by_patch_is_skipped_too(stack):
    art = stack.article()
    a = stack.charge(art)
    n = int(NUMBER.match(a["charge_nummer"]).group(1))
    other = stack.charge(art, charge_nummer=unique("HAND-"))
    r = stack.patch(other["id"], {"charge_nummer": f"CH-{YEAR}-{n + 2:06d}"})
    assert r.status_code == 200, r.text
    # the same number with another padding is another text: it takes nothing of the series
    stack.charge(art, charge_nummer=f"CH-{YEAR}-0{n + 3:06d}")
    assert stack.charge(art)["charge_nummer"] == f"CH-{YEAR}-{n + 1:06d}"
    assert stack.charge(art)["charge_nummer"] == f"CH-{YEAR}-{n + 3:06d}"


def creates_at_once(stack, bodies, workers=8):
    """workers threads, started together, each posting the create bodies bodies(w) gives, one
    after another on its own connection; returns [(body, response)]."""
    results, barrier = [], threading.Barrier(workers)

    def worker(w):
        barrier.wait(timeout=10)
        s = requests.Session()
        for body in bodies(w):
            results.append((body, s.post(stack.charges.url(CREATE), json=body, timeout=10)))

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return results


def test_concurrent_creates_get_distinct_consecutive_numbers(stack):
    art = stack.article()
    results = [r for _, r in creates_at_once(stack, lambda w: [stack.body(art)] * 10)]
    assert len(results) == 80 and {r.status_code for r in results} == {201}
    numbers = sorted(int(NUMBER.match(r.json()["charge_nummer"]).group(1)) for r in results)
    assert numbers == list(range(numbers[0], numbers[0] + 80))
    assert len({r.json()["id"] for r in results}) == 80
    assert stack.count(artikel_id=art["id"]) == 80


def pipelined_counts(stack):
    """charges' lotmesh_db_write_pipelined_jobs_total and _pipeline_fallbacks_total."""
    m = stack.charges.get("/metrics").text
    return [float(ln.split()[-1]) for ln in m.splitlines() if ln.startswith(
        ("lotmesh_db_write_pipelined_jobs_total ", "lotmesh_db_write_pipeline_fallbacks_total "))]


def test_concurrent_generated_numbers_skip_the_ones_typed_in_by_hand(stack):
    """Creates without a number are pipelined on PostgreSQL in two rounds (the series' upsert,
    then the INSERT with its number); a number at or below one typed in by hand is looked up,
    which runs that batch job by job: the series still skips every taken number, none twice."""
    art = stack.article()
    n = int(NUMBER.match(stack.charge(art)["charge_nummer"]).group(1))
    hand = {n + 3, n + 6}
    for k in sorted(hand):
        stack.charge(art, charge_nummer=f"CH-{YEAR}-{k:06d}")
    results = [r for _, r in creates_at_once(stack, lambda w: [stack.body(art)] * 5)]
    assert len(results) == 40 and {r.status_code for r in results} == {201}, \
        [r.text for r in results if r.status_code != 201][:3]
    got = sorted(int(NUMBER.match(r.json()["charge_nummer"]).group(1)) for r in results)
    assert got == sorted(set(range(n + 1, n + 43)) - hand)
    if pg_server.BACKEND == "pg":
        assert sum(pipelined_counts(stack)) > 0


def test_concurrent_creates_with_a_taken_number_among_them_lose_nothing(stack):
    """Creates with their numbers given are written in pipelined batches on PostgreSQL (every
    INSERT of a batch sent before any answer is read); one that collides makes its batch run
    again job by job: it alone gets its 409, every other create of the batch its 201, each
    once."""
    art = stack.article()
    tag = unique("PL")
    taken = stack.charge(art, charge_nummer=f"{tag}-taken")
    results = [(b["charge_nummer"], r) for b, r in creates_at_once(stack, lambda w: [
        stack.body(art, charge_nummer=f"{tag}-taken" if i % 4 == 3 else f"{tag}-{w}-{i}")
        for i in range(12)])]
    assert len(results) == 96
    for nr, r in results:
        if nr.endswith("-taken"):
            assert_full_problem(r, 409, instance=CREATE, fields=["charge_nummer"])
        else:
            assert r.status_code == 201, r.text
            assert r.json()["charge_nummer"] == nr
    created = [r.json() for nr, r in results if r.status_code == 201]
    assert len({c["id"] for c in created}) == len(created) == 72
    assert stack.count(artikel_id=art["id"]) == 73
    listed = {c["charge_nummer"] for c in stack.list(artikel_id=art["id"], limit=100).json()}
    assert listed == {c["charge_nummer"] for c in created} | {taken["charge_nummer"]}
    # one event each, in the outbox of the same transactions (read from the database itself)
    rows = pg_server.query(stack.charges.env["DATABASE_URL"],
                           "SELECT subject FROM outbox WHERE type = 'charge.created'")
    events = [s for (s,) in rows if s in {c["id"] for c in created}]
    assert sorted(events) == sorted(c["id"] for c in created)
    if pg_server.BACKEND == "pg":  # 8 writers at once: batches of several creates
        counts = pipelined_counts(stack)
        assert len(counts) == 2 and sum(counts) > 0, counts


@pytest.mark.parametrize("nr", ["", "   ", "x" * 65, "ä" * 65, None, 12345, ["CH-1"]])
def test_invalid_charge_nummer_is_422(stack, nr):
    art = stack.article()
    r = stack.post_charge(stack.body(art, charge_nummer=nr))
    assert_full_problem(r, 422, fields=["charge_nummer"])


def test_charge_nummer_is_trimmed_and_counted_in_characters(stack):
    art = stack.article()
    nr = "Ü" * 60 + unique("")[-4:]
    c = stack.charge(art, charge_nummer=f"\t {nr} \n")
    assert c["charge_nummer"] == nr and len(nr) == 64


# ---- status, bemerkungen, unknown fields ---------------------------------------------------------

@pytest.mark.parametrize("status", ["verbraucht", "abgelaufen"])
def test_new_batch_must_be_aktiv_or_gesperrt(stack, status):
    art = stack.article()
    total = stack.count()
    r = stack.post_charge(stack.body(art, status=status))
    assert_full_problem(r, 422, fields=["status"])
    assert stack.count() == total


@pytest.mark.parametrize("status", ["AKTIV", "Aktiv", "offen", "", None, 1])
def test_unknown_status_is_422(stack, status):
    art = stack.article()
    r = stack.post_charge(stack.body(art, status=status))
    body = assert_full_problem(r, 422, fields=["status"])
    if status == "offen":
        assert "aktiv, gesperrt, verbraucht, abgelaufen" in messages(body)["status"][0]


def test_status_is_trimmed(stack):
    art = stack.article()
    assert stack.charge(art, status=" gesperrt ")["status"] == "gesperrt"


def test_bemerkungen_limits(stack):
    art = stack.article()
    assert stack.charge(art, bemerkungen="ä" * 2000)["bemerkungen"] == "ä" * 2000
    assert stack.charge(art, bemerkungen=None)["bemerkungen"] is None
    assert stack.charge(art, bemerkungen="   ")["bemerkungen"] == ""
    for bad in ("x" * 2001, "€" * 2001, 5, ["a"], {"a": 1}):
        r = stack.post_charge(stack.body(art, bemerkungen=bad))
        assert_full_problem(r, 422, fields=["bemerkungen"])


@pytest.mark.parametrize("extra", [{"id": 5}, {"erstellt_am": "2026-01-01T00:00:00Z"},
                                   {"geaendert_am": None}, {"version": 1}, {"Menge": 5},
                                   {"lagerort": "A1"}, {"": 1}])
def test_unknown_and_server_set_fields_are_refused_by_name(stack, extra):
    art = stack.article()
    total = stack.count()
    r = stack.post_charge({**stack.body(art), **extra})
    assert_full_problem(r, 422, fields=list(extra))
    assert stack.count() == total


def test_all_field_errors_come_together(stack):
    r = stack.post_charge({"artikel_id": "x", "menge": -1, "einheit_id": 0,
                           "herstellungsdatum": "heute", "status": "neu", "bemerkungen": 1,
                           "charge_nummer": "", "farbe": "rot"})
    body = assert_full_problem(r, 422)
    assert set(messages(body)) == {"artikel_id", "menge", "einheit_id", "herstellungsdatum",
                                   "status", "bemerkungen", "charge_nummer", "farbe"}


# ---- hostile and malformed bodies ------------------------------------------------------------

def _deep(n):
    return b'{"bemerkungen":' + b"[" * n + b"]" * n + b"}"


BAD_JSON = [
    ("truncated", b'{"artikel_id": 1, "menge": 5, "einheit_id": 4'),
    ("truncated string", b'{"artikel_id": 1, "bemerkungen": "abc'),
    ("empty", b""),
    ("whitespace", b"   \r\n"),
    ("array", b"[]"),
    ("string", b'"charge"'),
    ("number", b"42"),
    ("null", b"null"),
    ("trailing garbage", b'{"menge": 1} x'),
    ("two documents", b'{"menge": 1}{"menge": 2}'),
    ("single quotes", b"{'menge': 1}"),
    ("trailing comma", b'{"menge": 1,}'),
    ("comment", b'{"menge": 1 /* x */}'),
    ("unquoted key", b"{menge: 1}"),
    ("NaN", b'{"menge": NaN}'),
    ("Infinity", b'{"menge": Infinity}'),
    ("minus Infinity", b'{"menge": -Infinity}'),
    ("1e400", b'{"menge": 1e400}'),
    ("-1e400", b'{"menge": -1e400}'),
    ("huge integer", b'{"artikel_id": 99999999999999999999}'),
    ("huge negative integer", b'{"artikel_id": -99999999999999999999}'),
    ("long digits", b'{"menge": ' + b"9" * 5000 + b"}"),
    ("leading zero", b'{"menge": 05}'),
    ("hex", b'{"menge": 0x10}'),
    ("invalid UTF-8 in a string", b'{"bemerkungen": "\xff\xfe"}'),
    ("invalid UTF-8 in a key", b'{"\xc3\x28": 1}'),
    ("overlong UTF-8", b'{"bemerkungen": "\xc0\xaf"}'),
    ("UTF-8 surrogate", b'{"bemerkungen": "\xed\xa0\x80"}'),
    ("lone surrogate escape", b'{"bemerkungen": "\\ud800"}'),
    ("NUL escape", b'{"bemerkungen": "a\\u0000b"}'),
    ("raw control character", b'{"bemerkungen": "a\x01b"}'),
    ("bad escape", b'{"bemerkungen": "\\x41"}'),
    ("byte order mark", b'\xef\xbb\xbf{"menge": 1}'),
    ("duplicate key", b'{"menge": 1, "menge": 2}'),
    ("deep nesting", _deep(100000)),
    ("nesting just over the limit", _deep(2100)),
]


@pytest.mark.parametrize("label,raw", BAD_JSON, ids=[b[0] for b in BAD_JSON])
def test_malformed_json_is_400_and_writes_nothing(stack, label, raw):
    total = stack.count()
    r = send_json(stack.charges, "POST", CREATE, raw)
    assert_full_problem(r, 400, instance=CREATE)
    assert stack.count() == total
    stack.charges.assert_healthy()


def test_moderate_nesting_is_a_type_error(stack):
    art = stack.article()
    doc = json.dumps(stack.body(art))[:-1].encode() + b', "bemerkungen": ' + \
        b"[" * 500 + b"]" * 500 + b"}"
    r = send_json(stack.charges, "POST", CREATE, doc)
    assert_full_problem(r, 422, fields=["bemerkungen"])


def test_escaped_unicode_is_decoded(stack):
    art = stack.article()
    doc = json.dumps(stack.body(art))[:-1] + ', "bemerkungen": "\\u00c4pfel \\ud83c\\udf4e"}'
    r = send_json(stack.charges, "POST", CREATE, doc.encode())
    assert r.status_code == 201, r.text
    assert r.json()["bemerkungen"] == "Äpfel 🍎"


@pytest.mark.parametrize("field", ["bemerkungen", "charge_nummer", "herstellungsdatum"])
@pytest.mark.parametrize("char", ["x", "ä", "🍎"])
def test_one_megabyte_strings_are_422(stack, field, char):
    art = stack.article()
    total = stack.count()
    n = 1_000_000 // len(char.encode())
    body = json.dumps({**stack.body(art), field: char * n}, ensure_ascii=False).encode()
    assert 1_000_000 <= len(body) < 1024 * 1024
    r = send_json(stack.charges, "POST", CREATE, body)
    assert_full_problem(r, 422, fields=[field])
    assert len(r.content) < 4096, "the problem must not echo the string"
    assert stack.count() == total


def test_one_megabyte_unknown_key_is_422(stack):
    art = stack.article()
    key = "k" * 1_000_000
    r = send_json(stack.charges, "POST", CREATE, {**stack.body(art), key: 1})
    assert_full_problem(r, 422, fields=[key])


def _post_oversized(stack, n):
    with stack.charges.connect() as c:
        c.send((f"POST {CREATE} HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                f"Content-Length: {n}\r\n\r\n").encode() + b'{"bemerkungen": "' +
               b"x" * 1000)
        return c.read_final_response()


def test_body_over_the_limit_is_413(stack):
    total = stack.count()
    r = _post_oversized(stack, 1024 * 1024 + 1)
    assert r.status == 413
    body = r.json()
    assert r.header("content-type") == "application/problem+json"
    assert body["status"] == 413 and body["title"] and body["detail"] and body["type"]
    assert re.fullmatch(r"[0-9a-f]{32}", body["trace_id"])
    assert stack.count() == total
    stack.charges.assert_healthy()


def test_body_over_the_limit_problem_names_the_instance(stack):
    r = _post_oversized(stack, 1024 * 1024 + 1)
    assert r.status == 413
    assert r.json().get("instance") == CREATE


@pytest.mark.parametrize("ctype", [None, "text/plain", "application/x-www-form-urlencoded",
                                   "multipart/form-data; boundary=x", "application/jsonx",
                                   "application/xml", "json"])
def test_non_json_content_type_is_415(stack, ctype):
    art = stack.article()
    total = stack.count()
    headers = {"Content-Type": ctype} if ctype else {}
    r = stack.charges.request("POST", CREATE, data=json.dumps(stack.body(art)).encode(),
                              headers=headers)
    if ctype is None:
        assert "Content-Type" not in r.request.headers
    assert_full_problem(r, 415, instance=CREATE)
    assert stack.count() == total


@pytest.mark.parametrize("ctype", ["application/json; charset=utf-8", "APPLICATION/JSON",
                                   "application/merge-patch+json"])
def test_json_content_types_are_accepted(stack, ctype):
    art = stack.article()
    r = send_json(stack.charges, "POST", CREATE, stack.body(art), {"Content-Type": ctype})
    assert r.status_code == 201, r.text


# ---- read, 404, 405, bad ids ----------------------------------------------------------------

def test_unknown_batch_is_404(stack):
    art = stack.article()
    path = charge_path(9_000_000_000)
    for r in (stack.charges.get(path),
              stack.charges.request("DELETE", path),
              stack.put(9_000_000_000, stack.body(art)),
              stack.patch(9_000_000_000, {"bemerkungen": "x"})):
        body = assert_full_problem(r, 404, instance=path)
        assert "9000000000" in body["detail"]


@pytest.mark.parametrize("bad", ["abc", "0", "-1", "1.5", "1e3", "0x10", "%20", "99999999999999999999",
                                 "9223372036854775808", "+1", " 1"])
def test_bad_path_id_is_400(stack, bad):
    for method in ("GET", "DELETE"):
        r = stack.charges.request(method, f"/api/v1/charge/{bad}")
        assert_full_problem(r, 400, "id")
    r = send_json(stack.charges, "PATCH", f"/api/v1/charge/{bad}", {"menge": 1})
    assert_full_problem(r, 400)


@pytest.mark.parametrize("method,path,allow", [
    ("POST", LIST, {"GET", "HEAD"}),
    ("DELETE", LIST, {"GET", "HEAD"}),
    ("PUT", LIST, {"GET", "HEAD"}),
    ("POST", "/api/v1/charge/1", {"GET", "HEAD", "PUT", "PATCH", "DELETE"}),
])
def test_unsupported_method_is_405_with_allow(stack, method, path, allow):
    r = stack.charges.request(method, path, data=b"{}",
                              headers={"Content-Type": "application/json"})
    assert_full_problem(r, 405, instance=path)
    assert {m.strip() for m in r.headers["Allow"].split(",")} == allow


@pytest.mark.parametrize("path", ["/api/v1/charge", "/api/v1/charges/1", "/api/v1/charge/1/x",
                                  "/api/v1/charge/create/x", "/api/v2/charges", "/api/v1/chargen",
                                  "/api/v1/Charges"])
def test_unknown_path_is_404(stack, path):
    r = stack.charges.get(path)
    assert_full_problem(r, 404, instance=path)


def test_head_answers_like_get_without_body(stack):
    art = stack.article()
    c = stack.charge(art)
    r = requests.head(stack.charges.url(charge_path(c["id"])), timeout=5)
    assert r.status_code == 200 and r.content == b""
    assert r.headers["ETag"] == '"1"'
    r = requests.head(stack.charges.url(LIST), params={"artikel_id": art["id"]}, timeout=5)
    assert r.status_code == 200 and r.content == b""
    assert r.headers["X-Total-Count"] == "1"


# ---- list: FEFO, filters, pagination --------------------------------------------------------

@pytest.fixture
def five(stack):
    """Five batches of one new article without shelf life, MHDs chosen for FEFO:
    ids ascending b1..b5; FEFO order b2, b4, b1, b5, b3 (b3 has no MHD)."""
    art = stack.article()
    b1 = stack.charge(art, mindesthaltbarkeitsdatum="2026-05-01", herstellungsdatum="2026-01-01")
    b2 = stack.charge(art, mindesthaltbarkeitsdatum="2026-04-01", herstellungsdatum="2026-01-01")
    b3 = stack.charge(art, status="gesperrt", herstellungsdatum="2026-01-01")
    b4 = stack.charge(art, mindesthaltbarkeitsdatum="2026-04-01T02:00:00+02:00",
                      herstellungsdatum="2026-01-01")
    b5 = stack.charge(art, mindesthaltbarkeitsdatum="2026-06-01T12:00:00Z",
                      herstellungsdatum="2026-01-01")
    r = stack.patch(b5["id"], {"status": "verbraucht"})
    assert r.status_code == 200, r.text
    b5 = r.json()
    assert b3["mindesthaltbarkeitsdatum"] is None
    return art, [b1, b2, b3, b4, b5]


def test_list_is_fefo_by_default(stack, five):
    art, (b1, b2, b3, b4, b5) = five
    r = stack.list(artikel_id=art["id"])
    assert r.headers["Content-Type"] == "application/json"
    assert r.headers["X-Total-Count"] == "5"
    assert "Link" not in r.headers
    assert r.json() == [b2, b4, b1, b5, b3]
    assert stack.list(artikel_id=art["id"], sort="fefo").json() == [b2, b4, b1, b5, b3]


def test_list_sorted_by_id(stack, five):
    art, batches = five
    assert stack.list(artikel_id=art["id"], sort="id").json() == batches


def test_list_whole_table_is_fefo(stack):
    items, offset = [], 0
    while True:
        page = stack.list(limit=500, offset=offset).json()
        items += page
        offset += 500
        if len(page) < 500:
            break
    assert len(items) == stack.count()
    keys = [(c["mindesthaltbarkeitsdatum"] is None,
             parse_time(c["mindesthaltbarkeitsdatum"]) if c["mindesthaltbarkeitsdatum"]
             else None, c["id"]) for c in items]
    with_mhd = [k for k in keys if not k[0]]
    assert with_mhd == sorted(with_mhd)
    assert [k[2] for k in keys if k[0]] == sorted(k[2] for k in keys if k[0])
    assert keys == with_mhd + [k for k in keys if k[0]]


@pytest.mark.parametrize("params,expect", [
    ({"status": "gesperrt"}, [3]),
    ({"status": "verbraucht"}, [5]),
    ({"status": "aktiv"}, [2, 4, 1]),
    ({"status": "abgelaufen"}, []),
    ({"mhd_before": "2026-05-01"}, [2, 4]),
    ({"mhd_before": "2026-05-01T00:00:00.001Z"}, [2, 4, 1]),
    ({"mhd_before": "2026-05-01T02:00:00+02:00"}, [2, 4]),
    ({"mhd_before": "2026-04-01"}, []),
    ({"mhd_after": "2026-05-01"}, [5]),
    ({"mhd_after": "2026-04-30T23:59:59.999Z"}, [1, 5]),
    ({"mhd_after": "2026-03-31T23:59:59Z"}, [2, 4, 1, 5]),
    ({"mhd_after": "2026-04-01", "mhd_before": "2026-06-01T12:00:00.001Z"}, [1, 5]),
    ({"mhd_after": "2026-04-01", "mhd_before": "2026-04-01"}, []),
    ({"status": "aktiv", "mhd_before": "2026-04-02", "sort": "id"}, [2, 4]),
])
def test_list_filters(stack, five, params, expect):
    art, batches = five
    r = stack.list(artikel_id=art["id"], **params)
    assert ids(r.json()) == [batches[i - 1]["id"] for i in expect]
    assert r.headers["X-Total-Count"] == str(len(expect))


def test_list_filter_by_charge_nummer_and_article(stack, five):
    art, (b1, b2, b3, b4, b5) = five
    assert stack.list(charge_nummer=b4["charge_nummer"]).json() == [b4]
    assert stack.list(charge_nummer=b4["charge_nummer"], artikel_id=art["id"] + 1000000).json() \
        == []
    assert stack.list(charge_nummer="gibt-es-nicht").json() == []
    other = stack.article()
    oc = stack.charge(other)
    assert stack.list(artikel_id=other["id"]).json() == [oc]
    assert stack.list(artikel_id=999999999).json() == []


def test_list_pagination_with_total_and_link(stack, five):
    art, (b1, b2, b3, b4, b5) = five
    fefo = [b2, b4, b1, b5, b3]
    r = stack.list(artikel_id=art["id"], limit=2)
    assert r.json() == fefo[:2]
    assert r.headers["X-Total-Count"] == "5"
    links = parse_links(r.headers["Link"])
    assert set(links) == {"next"}
    seen, url = list(r.json()), links["next"]
    pages = 1
    while url:
        assert f"artikel_id={art['id']}" in url
        r = stack.charges.get(url)
        assert r.status_code == 200
        assert r.headers["X-Total-Count"] == "5"
        links = parse_links(r.headers.get("Link", ""))
        assert "prev" in links
        seen += r.json()
        url = links.get("next")
        pages += 1
    assert pages == 3 and seen == fefo
    r = stack.list(artikel_id=art["id"], limit=2, offset=3)
    assert r.json() == fefo[3:]
    links = parse_links(r.headers["Link"])
    assert set(links) == {"prev"}
    assert stack.charges.get(links["prev"]).json() == fefo[1:3]
    r = stack.list(artikel_id=art["id"], offset=10)
    assert r.json() == [] and r.headers["X-Total-Count"] == "5"
    assert set(parse_links(r.headers["Link"])) == {"prev"}
    r = stack.list(artikel_id=art["id"], limit=1, offset=4, sort="id")
    assert r.json() == [b5]


def test_list_default_limit_is_50(stack):
    art = stack.article()
    for i in range(52):
        stack.charge(art, mindesthaltbarkeitsdatum=f"2027-01-{1 + i % 28:02d}")
    r = stack.list(artikel_id=art["id"])
    assert len(r.json()) == 50 and r.headers["X-Total-Count"] == "52"
    assert len(stack.list(artikel_id=art["id"], limit=500).json()) == 52


def parse_links(header):
    out = {}
    for part in header.split(","):
        m = re.match(r'\s*<([^>]*)>\s*;\s*rel="(\w+)"', part)
        if m:
            out[m.group(2)] = m.group(1)
    return out


@pytest.mark.parametrize("params,field", [
    ({"artikel_id": "0"}, "artikel_id"),
    ({"artikel_id": "abc"}, "artikel_id"),
    ({"artikel_id": "1.5"}, "artikel_id"),
    ({"artikel_id": ""}, "artikel_id"),
    ({"artikel_id": "99999999999999999999"}, "artikel_id"),
    ({"status": "kaputt"}, "status"),
    ({"status": ""}, "status"),
    ({"charge_nummer": ""}, "charge_nummer"),
    ({"charge_nummer": "x" * 65}, "charge_nummer"),
    ({"mhd_before": "2026-02-30"}, "mhd_before"),
    ({"mhd_before": "morgen"}, "mhd_before"),
    ({"mhd_after": "2026-01-01T10:00:00"}, "mhd_after"),
    ({"sort": "mhd"}, "sort"),
    ({"sort": "FEFO"}, "sort"),
    ({"limit": "0"}, "limit"),
    ({"limit": "501"}, "limit"),
    ({"limit": "ten"}, "limit"),
    ({"offset": "-1"}, "offset"),
    ({"offset": "x"}, "offset"),
])
def test_invalid_list_parameters_are_400(stack, params, field):
    r = stack.charges.get(LIST, params=params)
    assert_full_problem(r, 400, instance=LIST, fields=[field])


@pytest.mark.parametrize("name", ["foo", "artikel", "mhd", "page", "q"])
def test_unknown_list_parameter_is_400(stack, name):
    r = stack.charges.get(LIST, params={name: "1"})
    assert_full_problem(r, 400, name, instance=LIST)


# ---- PUT ------------------------------------------------------------------------------------

def test_put_replaces_the_batch(stack):
    art = stack.article(mindesthaltbarkeit_tage=10)
    other = stack.article(einheit_id=1)
    c = stack.charge(art, bemerkungen="alt", status="gesperrt")
    nr = unique("PUT-")
    time.sleep(0.01)
    r = stack.put(c["id"], {"artikel_id": other["id"], "menge": 7.5, "einheit_id": 1,
                            "herstellungsdatum": "2026-06-01T12:00:00+02:00",
                            "mindesthaltbarkeitsdatum": "2026-07-01",
                            "charge_nummer": nr, "status": "verbraucht",
                            "bemerkungen": "neu"}, {"If-Match": '"1"'})
    assert r.status_code == 200, r.text
    n = r.json()
    assert etag(r) == '"2"'
    assert n == {**c, "artikel_id": other["id"], "menge": 7.5, "einheit_id": 1,
                 "herstellungsdatum": "2026-06-01T10:00:00Z",
                 "mindesthaltbarkeitsdatum": "2026-07-01T00:00:00Z", "charge_nummer": nr,
                 "status": "verbraucht", "bemerkungen": "neu",
                 "geaendert_am": n["geaendert_am"]}
    assert UTC_TIME.match(n["geaendert_am"])
    assert parse_time(n["geaendert_am"]) >= parse_time(c["erstellt_am"])
    g = stack.get(c["id"])
    assert g.json() == n and etag(g) == '"2"'


def test_put_fills_defaults_for_left_out_fields(stack):
    art = stack.article(mindesthaltbarkeit_tage=10)
    c = stack.charge(art, status="gesperrt", bemerkungen="weg damit",
                     mindesthaltbarkeitsdatum="2027-01-01")
    r = stack.put(c["id"], {"artikel_id": art["id"], "menge": 3, "einheit_id": UNIT_LITER,
                            "herstellungsdatum": "2026-02-01"})
    assert r.status_code == 200, r.text
    n = r.json()
    assert n["status"] == "aktiv"
    assert n["bemerkungen"] is None
    assert n["charge_nummer"] == c["charge_nummer"]  # kept
    assert n["mindesthaltbarkeitsdatum"] == "2026-02-11T00:00:00Z"  # from the shelf life


def test_put_accepts_the_get_representation(stack):
    art = stack.article()
    c = stack.charge(art)
    g = stack.get(c["id"])
    doc = g.json()
    doc["menge"] = 99
    r = stack.put(c["id"], doc, {"If-Match": etag(g)})
    assert r.status_code == 200, r.text
    assert r.json()["menge"] == 99
    assert r.json()["erstellt_am"] == c["erstellt_am"]
    doc["id"] = c["id"] + 1
    r = stack.put(c["id"], doc)
    assert_full_problem(r, 422, fields=["id"])


def test_put_validates_like_create(stack):
    art = stack.article()
    c = stack.charge(art)
    full = {k: c[k] for k in ("artikel_id", "menge", "einheit_id", "herstellungsdatum")}
    cases = [
        ({**full, "menge": 0}, ["menge"]),
        ({k: v for k, v in full.items() if k != "herstellungsdatum"}, ["herstellungsdatum"]),
        ({**full, "artikel_id": 987654321}, ["artikel_id"]),
        ({**full, "einheit_id": 987654}, ["einheit_id"]),
        ({**full, "mindesthaltbarkeitsdatum": "2020-01-01"}, ["mindesthaltbarkeitsdatum"]),
        ({**full, "status": "weg"}, ["status"]),
        ({**full, "farbe": "blau"}, ["farbe"]),
    ]
    for doc, fields in cases:
        r = stack.put(c["id"], doc)
        assert_full_problem(r, 422, instance=charge_path(c["id"]), fields=fields)
    g = stack.get(c["id"])
    assert g.json() == c and etag(g) == '"1"'


def test_put_and_patch_on_an_inactive_article_are_allowed(stack):
    art = stack.article()
    c = stack.charge(art)
    stack.set_article_status(art, "inaktiv")
    doc = {k: c[k] for k in ("artikel_id", "menge", "einheit_id", "herstellungsdatum")}
    r = stack.put(c["id"], {**doc, "menge": 2})
    assert r.status_code == 200, r.text
    r = stack.patch(c["id"], {"artikel_id": art["id"], "status": "gesperrt"})
    assert r.status_code == 200, r.text


# ---- PATCH ----------------------------------------------------------------------------------

def test_patch_changes_only_the_given_fields(stack):
    art = stack.article(mindesthaltbarkeit_tage=10)
    c = stack.charge(art, bemerkungen="eins")
    r = stack.patch(c["id"], {"menge": 4.25})
    assert r.status_code == 200, r.text
    n = r.json()
    assert n == {**c, "menge": 4.25, "geaendert_am": n["geaendert_am"]}
    assert etag(r) == '"2"'
    r = stack.patch(c["id"], {"bemerkungen": None, "mindesthaltbarkeitsdatum": None},
                    {"Content-Type": "application/merge-patch+json"})
    assert r.status_code == 200, r.text
    n = r.json()
    assert n["bemerkungen"] is None and n["mindesthaltbarkeitsdatum"] is None  # not defaulted
    assert n["menge"] == 4.25 and etag(r) == '"3"'
    r = stack.patch(c["id"], {})  # nothing to change: nothing written, same version
    assert r.status_code == 200 and etag(r) == '"3"' and r.json() == n
    r = stack.patch(c["id"], {"menge": 4.25, "bemerkungen": None})  # the values it has
    assert r.status_code == 200 and etag(r) == '"3"' and r.json() == n
    assert stack.get(c["id"]).json() == n


def test_patch_checks_mhd_against_production_date(stack):
    art = stack.article()
    c = stack.charge(art, herstellungsdatum="2026-03-01", mindesthaltbarkeitsdatum="2026-04-01")
    r = stack.patch(c["id"], {"mindesthaltbarkeitsdatum": "2026-02-28"})
    assert_full_problem(r, 422, fields=["mindesthaltbarkeitsdatum"])
    r = stack.patch(c["id"], {"herstellungsdatum": "2026-04-02"})  # after the stored MHD
    assert_full_problem(r, 422, fields=["mindesthaltbarkeitsdatum"])
    r = stack.patch(c["id"], {"herstellungsdatum": "2026-04-01T00:00:00Z"})
    assert r.status_code == 200, r.text
    r = stack.patch(c["id"], {"herstellungsdatum": "2026-05-01", "mindesthaltbarkeitsdatum":
                              "2026-05-02T01:00:00+01:00"})
    assert r.status_code == 200, r.text
    assert r.json()["mindesthaltbarkeitsdatum"] == "2026-05-02T00:00:00Z"


def test_patch_validates_fields_and_references(stack):
    art = stack.article()
    c = stack.charge(art)
    for doc, field in [({"menge": -3}, "menge"), ({"artikel_id": 987654321}, "artikel_id"),
                       ({"einheit_id": 987654}, "einheit_id"), ({"status": None}, "status"),
                       ({"herstellungsdatum": None}, "herstellungsdatum"),
                       ({"charge_nummer": None}, "charge_nummer"),
                       ({"erstellt_um": "x"}, "erstellt_um"), ({"id": c["id"] + 1}, "id")]:
        r = stack.patch(c["id"], doc)
        assert_full_problem(r, 422, fields=[field])
    assert stack.get(c["id"]).json() == c


def test_patch_and_put_to_a_taken_charge_nummer_is_409(stack):
    art = stack.article()
    a = stack.charge(art)
    b = stack.charge(art)
    r = stack.patch(b["id"], {"charge_nummer": a["charge_nummer"]})
    assert_full_problem(r, 409, fields=["charge_nummer"])
    doc = {k: b[k] for k in ("artikel_id", "menge", "einheit_id", "herstellungsdatum")}
    r = stack.put(b["id"], {**doc, "charge_nummer": a["charge_nummer"]})
    assert_full_problem(r, 409, fields=["charge_nummer"])
    assert stack.get(b["id"]).json() == b
    r = stack.patch(b["id"], {"charge_nummer": b["charge_nummer"]})  # its own: fine
    assert r.status_code == 200


@pytest.mark.parametrize("method", ["PUT", "PATCH"])
def test_update_with_a_bad_body(stack, method):
    art = stack.article()
    c = stack.charge(art)
    path = charge_path(c["id"])
    r = send_json(stack.charges, method, path, b'{"menge": ')
    assert_full_problem(r, 400, instance=path)
    r = send_json(stack.charges, method, path, b"[1]")
    assert_full_problem(r, 400, instance=path)
    r = stack.charges.request(method, path, data=b'{"menge": 1}',
                              headers={"Content-Type": "text/plain"})
    assert_full_problem(r, 415, instance=path)
    r = send_json(stack.charges, method, path, b'{"bemerkungen": "\xff"}')
    assert_full_problem(r, 400, instance=path)
    assert stack.get(c["id"]).json() == c


# ---- status transitions -----------------------------------------------------------------------

def _batch_in(stack, art, status):
    if status in ("aktiv", "gesperrt"):
        return stack.charge(art, status=status)
    c = stack.charge(art)
    r = stack.patch(c["id"], {"status": status})
    assert r.status_code == 200, r.text
    return r.json()


@pytest.mark.parametrize("frm", STATUSES)
@pytest.mark.parametrize("to", STATUSES)
def test_status_transitions(stack, frm, to):
    art = stack.article()
    c = _batch_in(stack, art, frm)
    r = stack.patch(c["id"], {"status": to})
    if to == frm or to in ALLOWED[frm]:
        assert r.status_code == 200, r.text
        assert r.json()["status"] == to
    else:
        body = assert_full_problem(r, 422, fields=["status"])
        assert frm in messages(body)["status"][0] and to in messages(body)["status"][0]
        assert stack.get(c["id"]).json() == c


def test_put_follows_the_transitions_too(stack):
    art = stack.article()
    c = _batch_in(stack, art, "verbraucht")
    doc = {k: c[k] for k in ("artikel_id", "menge", "einheit_id", "herstellungsdatum")}
    r = stack.put(c["id"], doc)  # status left out means aktiv: not allowed from verbraucht
    assert_full_problem(r, 422, fields=["status"])
    r = stack.put(c["id"], {**doc, "status": "verbraucht", "bemerkungen": "leer"})
    assert r.status_code == 200, r.text
    c = _batch_in(stack, art, "abgelaufen")
    r = stack.put(c["id"], {**doc, "status": "gesperrt"})
    assert_full_problem(r, 422, fields=["status"])


def test_final_batch_keeps_other_fields_editable(stack):
    art = stack.article()
    c = _batch_in(stack, art, "verbraucht")
    r = stack.patch(c["id"], {"bemerkungen": "aufgebraucht am Montag"})
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "verbraucht"


# ---- If-Match and DELETE -----------------------------------------------------------------------

@pytest.mark.parametrize("method", ["PUT", "PATCH", "DELETE"])
def test_if_match(stack, method):
    art = stack.article()
    c = stack.charge(art)
    doc = {k: c[k] for k in ("artikel_id", "menge", "einheit_id", "herstellungsdatum")}

    def send(if_match):
        h = {"If-Match": if_match} if if_match is not None else {}
        if method == "DELETE":
            return stack.charges.request("DELETE", charge_path(c["id"]), headers=h)
        return send_json(stack.charges, method, charge_path(c["id"]),
                         {**doc, "menge": 2} if method == "PUT" else {"menge": 2}, h)

    for stale in ('"2"', '"0"', 'W/"1"', "1", '"abc"', '""', '"2", W/"1"'):
        r = send(stale)
        body = assert_full_problem(r, 412, instance=charge_path(c["id"]))
        assert '"1"' in body["detail"]
    g = stack.get(c["id"])
    assert g.json() == c and etag(g) == '"1"'
    r = send('"7", "1"')
    assert r.status_code in (200, 204), r.text
    if method == "DELETE":
        assert stack.get(c["id"]).status_code == 404
        return
    assert etag(r) == '"2"'
    assert send('"1"').status_code == 412
    assert send("*").status_code == 200
    assert send(None).status_code == 200
    assert etag(stack.get(c["id"])) == '"4"'


def test_delete(stack):
    art = stack.article()
    c = stack.charge(art)
    keep = stack.charge(art)
    total = stack.count()
    r = stack.charges.request("DELETE", charge_path(c["id"]))
    assert r.status_code == 204 and r.content == b""
    assert_full_problem(stack.get(c["id"]), 404)
    r = stack.charges.request("DELETE", charge_path(c["id"]))
    assert_full_problem(r, 404, instance=charge_path(c["id"]))
    r = stack.patch(c["id"], {"menge": 1})
    assert_full_problem(r, 404)
    assert stack.count() == total - 1
    assert stack.list(artikel_id=art["id"]).json() == [keep]
    # the number of a deleted batch may be used again
    again = stack.charge(art, charge_nummer=c["charge_nummer"])
    assert again["id"] != c["id"]


def test_batch_ids_are_never_reused(stack):
    art = stack.article()
    c = stack.charge(art)
    assert stack.charges.request("DELETE", charge_path(c["id"])).status_code == 204
    d = stack.charge(art)  # c was the newest: without AUTOINCREMENT SQLite would hand out c's id
    assert d["id"] > c["id"]
    assert_full_problem(stack.get(c["id"]), 404)
    # a stale ETag of the deleted batch cannot touch the new one
    r = stack.patch(c["id"], {"menge": 2}, headers={"If-Match": '"1"'})
    assert_full_problem(r, 404)


def test_put_without_charge_nummer_keeps_the_number(stack):
    art = stack.article()
    c = stack.charge(art)
    doc = {k: c[k] for k in ("artikel_id", "menge", "einheit_id", "herstellungsdatum")}
    r = stack.put(c["id"], {**doc, "menge": 3})
    assert r.status_code == 200, r.text
    assert r.json()["charge_nummer"] == c["charge_nummer"] and r.json()["menge"] == 3


# ---- idempotency ------------------------------------------------------------------------------

def test_retry_with_the_same_key_returns_the_first_result(stack):
    art = stack.article()
    key = unique("idem-")
    body = stack.body(art)
    r1 = stack.post_charge(body, {"Idempotency-Key": key})
    assert r1.status_code == 201, r1.text
    for _ in range(3):
        r = stack.post_charge(body, {"Idempotency-Key": key})
        assert r.status_code == 201, r.text
        assert r.json() == r1.json()
        assert r.headers["Location"] == r1.headers["Location"]
    assert stack.count(artikel_id=art["id"]) == 1
    # without a key, or with another, it is a new batch
    assert stack.post_charge(body).status_code == 201
    assert stack.post_charge(body, {"Idempotency-Key": key + "-2"}).status_code == 201
    assert stack.count(artikel_id=art["id"]) == 3


def test_replay_is_the_first_result_even_after_changes(stack):
    art = stack.article()
    key = unique("idem-")
    body = stack.body(art)
    r1 = stack.post_charge(body, {"Idempotency-Key": key})
    assert r1.status_code == 201
    assert stack.patch(r1.json()["id"], {"menge": 1}).status_code == 200
    r = stack.post_charge(body, {"Idempotency-Key": key})
    assert r.status_code == 201 and r.json() == r1.json()
    assert stack.count(artikel_id=art["id"]) == 1


def test_key_reused_for_another_request_is_422(stack):
    art = stack.article()
    key = unique("idem-")
    assert stack.post_charge(stack.body(art), {"Idempotency-Key": key}).status_code == 201
    total = stack.count()
    r = stack.post_charge(stack.body(art, menge=1), {"Idempotency-Key": key})
    body = assert_full_problem(r, 422, instance=CREATE)
    assert body["type"] == "urn:lotmesh:problem:idempotency-key-reused"
    assert stack.count() == total


def test_failed_create_does_not_burn_the_key(stack):
    art = stack.article()
    stack.set_article_status(art, "gesperrt")
    key = unique("idem-")
    body = stack.body(art)
    r = stack.post_charge(body, {"Idempotency-Key": key})
    assert_full_problem(r, 422, fields=["artikel_id"])
    stack.set_article_status(art, "aktiv")
    r = stack.post_charge(body, {"Idempotency-Key": key})
    assert r.status_code == 201, r.text


@pytest.mark.parametrize("key", ["k" * 256, "mit leerzeichen", "tab\there", "ümlaut"])
def test_malformed_idempotency_key_is_400(stack, key):
    art = stack.article()
    total = stack.count()
    r = stack.post_charge(stack.body(art), {"Idempotency-Key": key.encode("utf-8")})
    assert_full_problem(r, 400, "Idempotency-Key", instance=CREATE)
    assert stack.count() == total


def test_longest_idempotency_key_is_fine(stack):
    art = stack.article()
    key = "~" + unique("K")
    key = key + "!" * (255 - len(key))
    r = stack.post_charge(stack.body(art), {"Idempotency-Key": key})
    assert r.status_code == 201, r.text


def test_concurrent_retries_create_one_batch(stack):
    art = stack.article()
    key = unique("idem-")
    body = stack.body(art)
    results = []
    barrier = threading.Barrier(8)

    def one():
        barrier.wait(timeout=10)
        results.append(stack.post_charge(body, {"Idempotency-Key": key}))

    threads = [threading.Thread(target=one) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert len(results) == 8
    assert {r.status_code for r in results} == {201}, [r.text for r in results]
    assert len({r.json()["id"] for r in results}) == 1
    assert stack.count(artikel_id=art["id"]) == 1


# ---- every error is a problem -----------------------------------------------------------------

def test_problem_carries_the_callers_trace_id(stack):
    trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    r = stack.charges.get(charge_path(123456789),
                          headers={"traceparent": f"00-{trace}-00f067aa0ba902b7-01"})
    body = assert_full_problem(r, 404)
    assert body["trace_id"] == trace


# ---- articles unavailable -------------------------------------------------------------------

def test_articles_down_known_article_still_works_unknown_is_503(start_process, tmp_path):
    stack = Stack.start(start_process, tmp_path)
    known = stack.article(mindesthaltbarkeit_tage=7)
    seen = stack.charge(known)                       # charges has now seen known and unit l
    key = unique("outage-")
    keyed_body = stack.body(known, menge=3)
    first = stack.post_charge(keyed_body, {"Idempotency-Key": key})
    assert first.status_code == 201
    unseen = stack.article()                         # exists, but charges never asked about it
    total = stack.count()

    assert stack.articles.terminate() == 0
    t0 = time.monotonic()
    r = stack.post_charge(stack.body(known, herstellungsdatum="2026-06-01T10:00:00+02:00"))
    assert r.status_code == 201, r.text
    assert time.monotonic() - t0 < 3, "fallback must not wait out a timeout on a refused connect"
    c = r.json()
    assert c["mindesthaltbarkeitsdatum"] == "2026-06-08T08:00:00Z"  # shelf life from the replica
    assert r.headers["Location"] == charge_path(c["id"]) and etag(r) == '"1"'
    assert stack.get(c["id"]).json() == c
    total += 1

    for body in (stack.body(unseen),                            # article not known locally
                 stack.body(known, einheit_id=1),               # unit not known locally
                 stack.body(known, artikel_id=876543210)):      # nobody can say
        r = stack.post_charge(body)
        problem = assert_full_problem(r, 503, "nothing was written", instance=CREATE)
        assert problem["type"] == "urn:lotmesh:problem:dependency-unavailable"
    assert stack.count() == total

    # a retried create is answered from its key without asking articles
    r = stack.post_charge(keyed_body, {"Idempotency-Key": key})
    assert r.status_code == 201 and r.json() == first.json()
    assert r.headers["Location"] == first.headers["Location"]
    # a refused create does not burn its key
    key2 = unique("outage-")
    r = stack.post_charge(stack.body(unseen), {"Idempotency-Key": key2})
    assert_full_problem(r, 503)
    # batches can be read, listed and changed where no new reference is involved
    assert stack.patch(seen["id"], {"bemerkungen": "während des Ausfalls"}).status_code == 200
    r = stack.put(seen["id"], stack.body(known, menge=8))  # known references: the replica
    assert r.status_code == 200, r.text
    assert r.json()["mindesthaltbarkeitsdatum"] == "2026-03-08T06:00:00Z"
    r = stack.patch(seen["id"], {"artikel_id": unseen["id"]})
    assert_full_problem(r, 503)
    assert stack.count() == total
    # validation still comes first
    r = stack.post_charge(stack.body(unseen, menge=0))
    assert_full_problem(r, 422, fields=["menge"])

    # articles back (same port, same database): normal again at once
    stack.articles = start_process("articles", stack.articles_env, port=stack.articles.port)
    r = stack.post_charge(stack.body(unseen), {"Idempotency-Key": key2})
    assert r.status_code == 201, r.text
    r = stack.post_charge(stack.body(known, einheit_id=1))
    assert r.status_code == 201, r.text
    r = stack.post_charge(stack.body(known, artikel_id=876543210))
    assert_full_problem(r, 422, fields=["artikel_id"])
    assert stack.count() == total + 2
    stack.charges.assert_healthy()


def test_articles_hanging_times_out_into_the_replica(start_process, tmp_path):
    stack = Stack.start(start_process, tmp_path, {"ARTICLES_TIMEOUT": "300ms"})
    known = stack.article(mindesthaltbarkeit_tage=1)
    stack.charge(known)
    unseen = stack.article()
    total = stack.count()
    stack.articles.signal(signal.SIGSTOP)  # accepts connections (backlog) but never answers
    try:
        t0 = time.monotonic()
        r = stack.post_charge(stack.body(known))
        assert r.status_code == 201, r.text
        r = stack.post_charge(stack.body(unseen))
        problem = assert_full_problem(r, 503)
        assert problem["type"] == "urn:lotmesh:problem:dependency-unavailable"
        assert time.monotonic() - t0 < 4
    finally:
        stack.articles.signal(signal.SIGCONT)
    assert stack.count() == total + 1
    r = stack.post_charge(stack.body(unseen))
    assert r.status_code == 201, r.text


def test_open_circuit_answers_known_references_without_waiting(start_process, tmp_path):
    """ARTICLES_BREAKER_THRESHOLD failures in a row open the circuit to articles: then a
    batch for a known article is validated against the replica without asking a hanging
    articles (its timeout is far longer than the client waits), an unknown one still asks
    (a 503 either way), and a reachable articles closes the circuit at once."""
    stack = Stack.start(start_process, tmp_path, {
        "WORKERS": "1", "ARTICLES_TIMEOUT": "1500ms", "ARTICLES_BREAKER_THRESHOLD": "1",
        "ARTICLES_BREAKER_RESET": "10m"})
    known = stack.article(mindesthaltbarkeit_tage=3)
    stack.charge(known)
    unseen = stack.article()
    total = stack.count()
    stack.articles.signal(signal.SIGSTOP)
    try:
        # the article lookup times out (the unit is known committed, so not asked): the
        # circuit opens
        r = stack.post_charge(stack.body(known))
        assert r.status_code == 201, r.text
        # open: no lookup is made, so this answers although articles would take 1.5 s
        for _ in range(3):
            r = requests.post(stack.charges.url(CREATE), json=stack.body(known), timeout=1.0)
            assert r.status_code == 201, r.text
        # an unknown article still asks (a 503 either way)
        r = stack.post_charge(stack.body(unseen))
        assert_full_problem(r, 503)
    finally:
        stack.articles.signal(signal.SIGCONT)
    assert stack.count() == total + 4
    # articles answers again: the replica miss asks it, succeeds, and closes the circuit
    r = stack.post_charge(stack.body(unseen))
    assert r.status_code == 201, r.text


def test_client_gone_while_articles_is_asked(start_process, tmp_path):
    """The request's connection closes while charges waits for articles: the late answer
    must go nowhere, without a crash or a leak (the teardown checks for sanitizer reports)."""
    stack = Stack.start(start_process, tmp_path, {"ARTICLES_TIMEOUT": "500ms"})
    known = stack.article()
    stack.charge(known)
    unseen = stack.article()
    total = stack.count()
    stack.articles.signal(signal.SIGSTOP)
    try:
        for art in (known, unseen, known, unseen):
            body = json.dumps(stack.body(art)).encode()
            with stack.charges.connect() as c:
                c.send((f"POST {CREATE} HTTP/1.1\r\nHost: t\r\nContent-Type: "
                        f"application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode()
                       + body)
                time.sleep(0.05)
        time.sleep(1.0)  # every lookup has timed out into the replica by now
    finally:
        stack.articles.signal(signal.SIGCONT)
    stack.charges.assert_healthy()
    assert stack.count() == total + 2  # the known article's batches were still written
    r = stack.post_charge(stack.body(unseen))
    assert r.status_code == 201, r.text


# ---- crash during a create load ------------------------------------------------------------------

def test_sigkill_during_create_load_loses_no_acknowledged_batch(start_process, tmp_path):
    stack = Stack.start(start_process, tmp_path)
    art = stack.article(mindesthaltbarkeit_tage=30)
    tag = unique("")
    acked, sent, errors = {}, set(), []
    lock = threading.Lock()
    stop = threading.Event()
    counter = iter(range(1_000_000))

    def body_of(i):
        return stack.body(art, menge=i + 1, charge_nummer=f"DUR-{tag}-{i}",
                          herstellungsdatum="2026-05-01T00:00:00Z", bemerkungen=f"load {i}")

    def client():
        s = requests.Session()
        while not stop.is_set():
            with lock:
                i = next(counter)
                sent.add(i)
            try:
                r = s.post(stack.charges.url(CREATE), data=json.dumps(body_of(i)).encode(),
                           headers={"Content-Type": "application/json",
                                    "Idempotency-Key": f"dur-{tag}-{i}"}, timeout=5)
            except requests.RequestException:
                return  # the crash: no answer, so no promise; the server is gone
            if r.status_code == 201:
                with lock:
                    acked[i] = r.json()
            else:
                errors.append((i, r.status_code, r.text))

    threads = [threading.Thread(target=client) for _ in range(8)]
    for t in threads:
        t.start()
    try:
        wait_until(lambda: len(acked) >= 150, timeout=60, what="150 acknowledged creates")
        stack.charges.expected_exit = -signal.SIGKILL
        stack.charges.kill()
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=15)
    assert not any(t.is_alive() for t in threads)
    assert not errors, errors[:5]

    charges = start_process("charges", stack.charges_env)
    stack.charges = charges
    # every acknowledged batch is there, exactly as answered
    for i, c in acked.items():
        r = stack.get(c["id"])
        assert r.status_code == 200, (i, r.text)
        assert r.json() == c
    # every row is complete and consistent
    rows = []
    while True:
        page = stack.list(artikel_id=art["id"], sort="id", limit=500, offset=len(rows)).json()
        rows += page
        if len(page) < 500:
            break
    by_nr = {}
    for c in rows:
        assert set(c) == CHARGE_KEYS
        m = re.fullmatch(rf"DUR-{tag}-(\d+)", c["charge_nummer"])
        assert m, c
        i = int(m.group(1))
        assert i in sent
        assert c == {**c, "artikel_id": art["id"], "menge": i + 1, "einheit_id": UNIT_LITER,
                     "herstellungsdatum": "2026-05-01T00:00:00Z",
                     "mindesthaltbarkeitsdatum": "2026-05-31T00:00:00Z", "status": "aktiv",
                     "bemerkungen": f"load {i}", "geaendert_am": None}
        assert UTC_TIME.match(c["erstellt_am"])
        by_nr[i] = c
    assert len(by_nr) == len(rows)
    assert set(acked) <= set(by_nr)
    # batch and Idempotency-Key were committed together: a retry of every request sent
    # replays the stored batch, or creates it now when the crash took it before the commit
    for i in sorted(sent):
        r = stack.post_charge(body_of(i), {"Idempotency-Key": f"dur-{tag}-{i}"})
        assert r.status_code == 201, (i, r.text)
        if i in by_nr:
            assert r.json() == by_nr[i], f"request {i}: key and batch were not stored together"
    assert stack.count(artikel_id=art["id"]) == len(sent)
    # the database itself, read without the service (sqlite3 or psycopg2): intact, and the
    # ms columns match the text
    url = stack.charges.env["DATABASE_URL"]
    if not url.startswith("postgres"):
        assert pg_server.query(url, "PRAGMA integrity_check")[0][0] == "ok"
    rows = pg_server.query(url, "SELECT herstellungsdatum, herstellungsdatum_ms,"
                           " mindesthaltbarkeitsdatum, mindesthaltbarkeitsdatum_ms FROM charge")
    for hd, hd_ms, mhd, mhd_ms in rows:
        assert parse_time(hd).timestamp() * 1000 == hd_ms
        assert (mhd is None and mhd_ms is None) or \
            parse_time(mhd).timestamp() * 1000 == mhd_ms


# ---- migrations --------------------------------------------------------------------------------

# The charge table as migration 1 made it (services/charges/schema.c): ids without AUTOINCREMENT.
CHARGE_V1 = """CREATE TABLE charge_v1 (
 id INTEGER PRIMARY KEY, artikel_id INTEGER NOT NULL, menge REAL NOT NULL CHECK (menge > 0),
 einheit_id INTEGER NOT NULL, herstellungsdatum TEXT NOT NULL,
 herstellungsdatum_ms INTEGER NOT NULL, mindesthaltbarkeitsdatum TEXT,
 mindesthaltbarkeitsdatum_ms INTEGER, charge_nummer TEXT NOT NULL UNIQUE,
 status TEXT NOT NULL DEFAULT 'aktiv'
  CHECK (status IN ('aktiv','gesperrt','verbraucht','abgelaufen')),
 bemerkungen TEXT, version INTEGER NOT NULL DEFAULT 1, erstellt_am TEXT NOT NULL,
 geaendert_am TEXT,
 CHECK (mindesthaltbarkeitsdatum_ms IS NULL OR mindesthaltbarkeitsdatum_ms >= herstellungsdatum_ms));
"""


@pytest.mark.skipif(pg_server.BACKEND == "pg",
                    reason="SQLite's migration 2; PostgreSQL ids come from an identity column")
def test_a_version_1_database_is_migrated_with_its_batches(start_process, tmp_path):
    """Migration 2 (issue 9) rebuilds the charge table with AUTOINCREMENT: every batch of a
    database made before it is kept as it was, and from then on no id is handed out twice."""
    aport = free_port()
    a_env, c_env = Stack.envs(tmp_path, aport)
    stack = Stack(start_process("articles", a_env, port=aport), start_process("charges", c_env),
                  a_env, c_env)
    art = stack.article()
    before = [stack.charge(art, bemerkungen=f"b{i}") for i in range(3)]
    stack.patch(before[1]["id"], {"menge": 7})
    before[1] = stack.get(before[1]["id"]).json()
    stack.charges.terminate()
    # back to schema version 1
    db = sqlite3.connect(c_env["DATABASE_URL"], isolation_level=None)
    try:
        db.executescript("BEGIN;" + CHARGE_V1 + "INSERT INTO charge_v1 SELECT * FROM charge;"
                         "DROP TABLE charge; ALTER TABLE charge_v1 RENAME TO charge;"
                         "DELETE FROM sqlite_sequence WHERE name = 'charge';"
                         "DELETE FROM schema_migrations WHERE version >= 2;"
                         # migration 3's event tables go too: back to exactly version 1
                         "DROP TABLE outbox; DROP TABLE event_meta; DROP TABLE event_inbox;"
                         "DROP TABLE event_version; DROP TABLE event_checkpoint;"
                         "DROP TABLE event_dead; DELETE FROM sqlite_sequence WHERE name IN"
                         " ('outbox', 'event_dead');"
                         "ALTER TABLE nummernkreis DROP COLUMN hand_max; COMMIT;")
        assert "AUTOINCREMENT" not in db.execute(
            "SELECT sql FROM sqlite_master WHERE name = 'charge'").fetchone()[0]
    finally:
        db.close()
    stack.charges = start_process("charges", c_env)
    assert [stack.get(c["id"]).json() for c in before] == before
    assert etag(stack.get(before[1]["id"])) == '"2"'
    newest = before[-1]
    assert stack.charges.request("DELETE", charge_path(newest["id"])).status_code == 204
    assert stack.charge(art)["id"] > newest["id"]


def test_numbers_typed_by_hand_before_the_series_learned_of_them_are_skipped(start_process,
                                                                            tmp_path):
    """The migration that adds the series' hand_max (SQLite 4, PostgreSQL 3) finds the
    numbers of the series' form already written, so the series still skips them."""
    aport = free_port()
    a_env, c_env = Stack.envs(tmp_path, aport)
    stack = Stack(start_process("articles", a_env, port=aport), start_process("charges", c_env),
                  a_env, c_env)
    art = stack.article()
    n = int(NUMBER.match(stack.charge(art)["charge_nummer"]).group(1))
    stack.charge(art, charge_nummer=f"CH-{YEAR}-{n + 2:06d}")
    stack.charge(art, charge_nummer=f"CH-{YEAR + 1}-000001")
    url = stack.charges.env["DATABASE_URL"]
    stack.charges.terminate()
    before = 3 if url.startswith("postgres") else 4
    # back to the version before it (the later outbox migration is undone too)
    pg_server.execute(url, "ALTER TABLE nummernkreis DROP COLUMN hand_max;"
                           "CREATE INDEX outbox_unpublished ON outbox(seq)"
                           " WHERE published_at IS NULL;"
                           f"DELETE FROM schema_migrations WHERE version >= {before}")
    stack.charges = start_process("charges", {**c_env, "DATABASE_URL": url})
    assert [stack.charge(art)["charge_nummer"] for _ in range(2)] == \
        [f"CH-{YEAR}-{n + 1:06d}", f"CH-{YEAR}-{n + 3:06d}"]
    assert pg_server.query(url, "SELECT hand_max FROM nummernkreis WHERE jahr = ?",
                           (YEAR + 1,)) == [(1,)]


# ---- configuration ----------------------------------------------------------------------------

@pytest.mark.parametrize("suffix", ["/", "//"])
def test_articles_url_with_a_trailing_slash(start_process, tmp_path, suffix):
    aport = free_port()
    a_env, c_env = Stack.envs(tmp_path, aport)
    articles = start_process("articles", a_env, port=aport)
    charges = start_process("charges", {**c_env, "ARTICLES_URL": f"http://127.0.0.1:{aport}"
                                                                 f"{suffix}"})
    stack = Stack(articles, charges, a_env, c_env)
    art = stack.article(mindesthaltbarkeit_tage=2)
    c = stack.charge(art, herstellungsdatum="2026-01-01")
    assert c["mindesthaltbarkeitsdatum"] == "2026-01-03T00:00:00Z"
    r = stack.post_charge(stack.body(art, artikel_id=987654321))
    assert_full_problem(r, 422, fields=["artikel_id"])


@pytest.mark.parametrize("env,name", [
    ({"ARTICLES_URL": "https://127.0.0.1:8002"}, "ARTICLES_URL"),
    ({"ARTICLES_URL": "127.0.0.1:8002"}, "ARTICLES_URL"),
    ({"ARTICLES_URL": "http://127.0.0.1:99999"}, "ARTICLES_URL"),
    ({"ARTICLES_URL": "http://127.0.0.1:8002/?x=1"}, "ARTICLES_URL"),
    ({"ARTICLES_TIMEOUT": "0"}, "ARTICLES_TIMEOUT"),
    ({"ARTICLES_TIMEOUT": "5ms"}, "ARTICLES_TIMEOUT"),
    ({"ARTICLES_TIMEOUT": "2h"}, "ARTICLES_TIMEOUT"),
    ({"ARTICLES_TIMEOUT": "soon"}, "ARTICLES_TIMEOUT"),
])
def test_bad_configuration_stops_with_one_clear_line(run_process, tmp_path, env, name):
    assert_config_error(run_process, "charges", tmp_path / "c.db", env, name)


def _asked(stack, route):
    """How many GETs of route articles answered (2xx and 4xx)."""
    return sum(stack.articles.metric("lotmesh_http_requests_total", route=route, method="GET",
                                     status=s) or 0 for s in ("2xx", "4xx"))


def test_a_unit_committed_once_is_not_asked_again(start_process, tmp_path):
    """Units never change through the articles API, so once a write that recorded a unit in
    the replica committed, the worker does not ask articles about it again; the article is
    still asked every time (its status may change). A write that rolled back teaches
    nothing."""
    stack = Stack.start(start_process, tmp_path, {"WORKERS": "1"})
    art = stack.article()
    unit_route, art_route = "/api/v1/unit/{id}", "/api/v1/article/{id}"
    first = stack.charge(art)
    units, arts = _asked(stack, unit_route), _asked(stack, art_route)
    assert units == 1 and arts == 1
    for _ in range(3):
        stack.charge(art)
    assert _asked(stack, unit_route) == 1 and _asked(stack, art_route) == 4
    # another unit, in a create that fails inside its transaction (a taken number): asked,
    # and asked again next time, since nothing of that create was committed
    kg = stack.body(art, einheit_id=1, charge_nummer=first["charge_nummer"])
    assert_full_problem(stack.post_charge(kg), 409)
    assert _asked(stack, unit_route) == 2
    stack.charge(art, einheit_id=1)
    assert _asked(stack, unit_route) == 3
    stack.charge(art, einheit_id=1)
    assert _asked(stack, unit_route) == 3
    # articles gone: the replica still knows both
    stack.articles.kill()
    stack.articles.expected_exit = -signal.SIGKILL
    c = stack.charge(art, einheit_id=1)
    assert c["einheit_id"] == 1
