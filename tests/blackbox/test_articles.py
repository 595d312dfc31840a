"""lotmesh-articles through its HTTP API (issue 3, DESIGN 3.3/3.4): Einheiten (seeded, list,
get, create) and Artikel (create, get, list with filters and pagination, PUT, PATCH, DELETE),
every rule (unique artikelnummer 409, existing einheit_id, bounds, enums, trimmed strings with
lengths in characters, unknown and server-set fields refused by name), optimistic concurrency
(ETag / If-Match 412), Idempotency-Key, and hostile bodies (truncated, wrong types, deep
nesting, huge numbers, invalid UTF-8, 1 MB strings, duplicate keys). Every error must be an
RFC 9457 problem with type, title, status, detail, instance and trace_id. Routes under /api/
need a service token (DESIGN 3.5): a second process checks them.

One articles process (SERVICE_AUTH=disabled, as the harness sets) serves the module (its own
database in a temporary folder); tests keep apart by unique artikelnummer prefixes and filter
lists by them."""

import json
import socket
import threading

import pytest
import requests

from harness import IO_TIMEOUT, RawConn, assert_problem
from services_util import (AUTH_ENV, RFC3339, assert_full_problem, bearer, field_messages,
                           module_process, post_json, service_token, unique)

CREATE = "/api/v1/article/create"
LIST = "/api/v1/articles"
UNITS = "/api/v1/units"
UNIT_CREATE = "/api/v1/unit/create"
ARTIKEL_KEYS = {"id", "artikelnummer", "bezeichnung", "einheit_id", "beschreibung",
                "mindesthaltbarkeit_tage", "status", "erstellt_am", "geaendert_am"}
SEEDED_UNITS = ["kg", "g", "t", "l", "ml", "m", "Stk", "Pkg"]


@pytest.fixture(scope="module")
def _svc(tmp_path_factory):
    yield from module_process(tmp_path_factory, "articles", {"WORKERS": "2"})


@pytest.fixture
def svc(_svc):
    assert _svc.alive(), _svc.stderr_tail()
    yield _svc
    assert _svc.alive(), f"articles died:\n{_svc.stderr_tail()}"


def art(path_id):
    return f"/api/v1/article/{path_id}"


def new_body(prefix=None, **kw):
    body = {"artikelnummer": unique(prefix or "A-"), "bezeichnung": "Weizenmehl Type 550",
            "einheit_id": 1}
    body.update(kw)
    return body


def create(svc, prefix=None, headers=None, **kw):
    r = post_json(svc, CREATE, new_body(prefix, **kw), headers)
    assert r.status_code == 201, r.text
    return r.json()


def get(svc, path_id):
    r = svc.get(art(path_id))
    assert r.status_code == 200, r.text
    return r


def count(svc, q):
    r = svc.get(LIST, params={"q": q, "limit": 500})
    assert r.status_code == 200, r.text
    return int(r.headers["X-Total-Count"])


# ---- units ------------------------------------------------------------------------------------

def test_units_are_seeded_and_listed(svc):
    r = svc.get(UNITS)
    assert r.status_code == 200
    assert r.headers["Content-Type"] == "application/json"
    units = r.json()
    assert isinstance(units, list)
    assert [u["kuerzel"] for u in units[:len(SEEDED_UNITS)]] == SEEDED_UNITS
    assert int(r.headers["X-Total-Count"]) == len(units)
    assert "Link" not in r.headers
    ids = [u["id"] for u in units]
    assert ids == sorted(ids)
    for u in units:
        assert set(u) == {"id", "kuerzel", "bezeichnung", "erstellt_am"}
        assert RFC3339.match(u["erstellt_am"]), u
    by = {u["kuerzel"]: u for u in units}
    assert by["kg"]["bezeichnung"] == "Kilogramm"
    assert by["Stk"]["bezeichnung"] == "Stück"


def test_unit_get(svc):
    kg = next(u for u in svc.get(UNITS).json() if u["kuerzel"] == "kg")
    r = svc.get(f"/api/v1/unit/{kg['id']}")
    assert r.status_code == 200
    assert r.json() == kg
    assert "ETag" not in r.headers


def test_unit_get_unknown_and_bad_ids(svc):
    assert_full_problem(svc.get("/api/v1/unit/999999"), 404, "no unit with id 999999",
                        instance="/api/v1/unit/999999")
    for bad in ("abc", "0", "-3", "1.5", "99999999999999999999"):
        assert_full_problem(svc.get(f"/api/v1/unit/{bad}"), 400, "positive integer",
                            instance=f"/api/v1/unit/{bad}")


def test_unit_create_trimmed_then_listed_and_readable(svc):
    k = unique("u")[-12:]
    r = post_json(svc, UNIT_CREATE, {"kuerzel": f"  {k}\t", "bezeichnung": " Einheit  "})
    assert r.status_code == 201, r.text
    u = r.json()
    assert set(u) == {"id", "kuerzel", "bezeichnung", "erstellt_am"}
    assert u["kuerzel"] == k and u["bezeichnung"] == "Einheit"
    assert RFC3339.match(u["erstellt_am"])
    assert r.headers["Location"] == f"/api/v1/unit/{u['id']}"
    assert svc.get(r.headers["Location"]).json() == u
    assert u in svc.get(UNITS).json()
    # and an article can use it
    a = create(svc, einheit_id=u["id"])
    assert a["einheit_id"] == u["id"]


def test_unit_duplicate_kuerzel_is_409(svc):
    before = svc.get(UNITS).json()
    r = post_json(svc, UNIT_CREATE, {"kuerzel": "kg", "bezeichnung": "noch ein Kilogramm"})
    body = assert_full_problem(r, 409, instance=UNIT_CREATE, fields=["kuerzel"])
    assert body["type"] == "urn:lotmesh:problem:conflict"
    k = unique("d")[-12:]
    assert post_json(svc, UNIT_CREATE, {"kuerzel": k, "bezeichnung": "x"}).status_code == 201
    assert_full_problem(post_json(svc, UNIT_CREATE, {"kuerzel": f" {k} ", "bezeichnung": "y"}),
                        409, fields=["kuerzel"])
    after = svc.get(UNITS).json()
    assert len(after) == len(before) + 1


@pytest.mark.parametrize("body,fields", [
    ({}, ["kuerzel", "bezeichnung"]),
    ({"kuerzel": "x"}, ["bezeichnung"]),
    ({"kuerzel": "   ", "bezeichnung": "x"}, ["kuerzel"]),
    ({"kuerzel": "k" * 17, "bezeichnung": "x"}, ["kuerzel"]),
    ({"kuerzel": "x", "bezeichnung": "b" * 101}, ["bezeichnung"]),
    ({"kuerzel": 5, "bezeichnung": "x"}, ["kuerzel"]),
    ({"kuerzel": None, "bezeichnung": "x"}, ["kuerzel"]),
    ({"kuerzel": "x", "bezeichnung": "x", "faktor": 1000}, ["faktor"]),
    ({"kuerzel": "x", "bezeichnung": "x", "id": 77}, ["id"]),
    ({"kuerzel": "x", "bezeichnung": "x", "erstellt_am": "2026-01-01T00:00:00Z"},
     ["erstellt_am"]),
])
def test_unit_create_validation(svc, body, fields):
    before = len(svc.get(UNITS).json())
    r = post_json(svc, UNIT_CREATE, body)
    problem = assert_full_problem(r, 422, instance=UNIT_CREATE, fields=fields)
    assert problem["type"] == "urn:lotmesh:problem:validation"
    assert len(svc.get(UNITS).json()) == before


def test_unit_lengths_count_characters(svc):
    k = "ä" * 16  # 32 bytes, 16 characters
    r = post_json(svc, UNIT_CREATE, {"kuerzel": k, "bezeichnung": "€" * 100})
    assert r.status_code == 201, r.text
    assert r.json()["kuerzel"] == k
    assert_full_problem(post_json(svc, UNIT_CREATE, {"kuerzel": "ö" * 17, "bezeichnung": "x"}),
                        422, fields=["kuerzel"])


def test_unit_create_idempotent(svc):
    key = unique("unit-key-")
    body = {"kuerzel": unique("i")[-10:], "bezeichnung": "Idempotent"}
    r1 = post_json(svc, UNIT_CREATE, body, {"Idempotency-Key": key})
    r2 = post_json(svc, UNIT_CREATE, body, {"Idempotency-Key": key})
    assert r1.status_code == r2.status_code == 201
    assert r1.json() == r2.json()
    assert r1.headers["Location"] == r2.headers["Location"]
    assert [u["kuerzel"] for u in svc.get(UNITS).json()].count(body["kuerzel"]) == 1


def test_units_refuse_query_parameters_and_other_methods(svc):
    body = assert_full_problem(svc.get(UNITS + "?limit=5"), 400, "limit", instance=UNITS)
    assert "unknown query parameter" in body["detail"]
    for method, path in (("POST", UNITS), ("PUT", "/api/v1/unit/1"),
                         ("PATCH", "/api/v1/unit/1"), ("DELETE", "/api/v1/unit/1")):
        r = svc.request(method, path)
        assert_full_problem(r, 405, instance=path)
        assert "GET" in r.headers["Allow"] and method not in r.headers["Allow"]


# ---- create and read ---------------------------------------------------------------------------

def test_create_minimal_defaults_location_etag(svc):
    body = new_body()
    r = post_json(svc, CREATE, body)
    assert r.status_code == 201, r.text
    assert r.headers["Content-Type"] == "application/json"
    a = r.json()
    assert set(a) == ARTIKEL_KEYS
    assert isinstance(a["id"], int) and a["id"] >= 1
    assert a["artikelnummer"] == body["artikelnummer"]
    assert a["bezeichnung"] == body["bezeichnung"]
    assert a["einheit_id"] == 1
    assert a["beschreibung"] is None and a["mindesthaltbarkeit_tage"] is None
    assert a["status"] == "aktiv"
    assert RFC3339.match(a["erstellt_am"]) and a["geaendert_am"] is None
    assert r.headers["Location"] == art(a["id"])
    assert r.headers["ETag"] == '"1"'
    g = svc.get(r.headers["Location"])
    assert g.status_code == 200
    assert g.json() == a
    assert g.headers["ETag"] == '"1"'
    assert g.headers["Content-Type"] == "application/json"


def test_create_all_fields(svc):
    a = create(svc, beschreibung="Für Brot und Brötchen", mindesthaltbarkeit_tage=365,
               status="gesperrt", einheit_id=2)
    assert a["beschreibung"] == "Für Brot und Brötchen"
    assert a["mindesthaltbarkeit_tage"] == 365
    assert a["status"] == "gesperrt"
    assert a["einheit_id"] == 2
    assert get(svc, a["id"]).json() == a


def test_create_explicit_nulls_for_optional_fields(svc):
    a = create(svc, beschreibung=None, mindesthaltbarkeit_tage=None)
    assert a["beschreibung"] is None and a["mindesthaltbarkeit_tage"] is None


@pytest.mark.parametrize("st", ["aktiv", "inaktiv", "gesperrt"])
def test_create_each_status(svc, st):
    assert create(svc, status=st)["status"] == st


def test_strings_are_trimmed(svc):
    nr = unique("T-")
    a = create(svc, artikelnummer=f" \t{nr}\r\n ", bezeichnung="  Zucker  ",
               beschreibung="\n weiß \t", status=" inaktiv ")
    assert a["artikelnummer"] == nr
    assert a["bezeichnung"] == "Zucker"
    assert a["beschreibung"] == "weiß"
    assert a["status"] == "inaktiv"
    # the trimmed value is the unique one
    assert_full_problem(post_json(svc, CREATE, new_body(artikelnummer=f"  {nr}")), 409,
                        fields=["artikelnummer"])


def test_length_limits_count_characters_not_bytes(svc):
    pre = unique("L")  # ASCII, shorter than 64
    ok_nr = pre + "ä" * (64 - len(pre))  # 64 characters, more bytes
    a = create(svc, artikelnummer=ok_nr, bezeichnung="€" * 200, beschreibung="𝄞" * 2000)
    assert a["artikelnummer"] == ok_nr and len(a["artikelnummer"]) == 64
    assert a["bezeichnung"] == "€" * 200
    assert a["beschreibung"] == "𝄞" * 2000
    # trimming happens before counting
    pre2 = unique("M")
    nr2 = pre2 + "x" * (64 - len(pre2))
    assert create(svc, artikelnummer=f"   {nr2}   ")["artikelnummer"] == nr2
    for field, value, limit in (("artikelnummer", pre + "ä" * (65 - len(pre)), 64),
                                ("bezeichnung", "€" * 201, 200),
                                ("beschreibung", "𝄞" * 2001, 2000)):
        body = assert_full_problem(post_json(svc, CREATE, new_body(**{field: value})), 422,
                                   fields=[field])
        assert f"at most {limit} characters" in field_messages(body)[field][0]


@pytest.mark.parametrize("field", ["artikelnummer", "bezeichnung", "einheit_id"])
def test_required_fields(svc, field):
    body = new_body()
    del body[field]
    problem = assert_full_problem(post_json(svc, CREATE, body), 422, instance=CREATE,
                                  fields=[field])
    assert field_messages(problem)[field] == ["is required"]


@pytest.mark.parametrize("field", ["artikelnummer", "bezeichnung"])
@pytest.mark.parametrize("value", ["", "   ", "\t\r\n"])
def test_empty_strings_refused(svc, field, value):
    problem = assert_full_problem(post_json(svc, CREATE, new_body(**{field: value})), 422,
                                  fields=[field])
    assert field_messages(problem)[field] == ["must not be empty"]


def test_all_field_errors_come_together(svc):
    r = post_json(svc, CREATE, {"artikelnummer": "", "bezeichnung": 7, "einheit_id": "kg",
                                "mindesthaltbarkeit_tage": -1, "status": "weg", "farbe": "rot"})
    problem = assert_full_problem(r, 422, fields=["artikelnummer", "bezeichnung", "einheit_id",
                                                  "mindesthaltbarkeit_tage", "status", "farbe"])
    assert problem["detail"] == "the request has invalid fields"


WRONG_TYPES = [
    ("artikelnummer", 5), ("artikelnummer", None), ("artikelnummer", ["A"]),
    ("artikelnummer", {"a": 1}), ("artikelnummer", True),
    ("bezeichnung", 1.5), ("bezeichnung", None), ("bezeichnung", []),
    ("einheit_id", "1"), ("einheit_id", 1.5), ("einheit_id", 1.0), ("einheit_id", True),
    ("einheit_id", None), ("einheit_id", [1]), ("einheit_id", 1e300),
    ("beschreibung", 5), ("beschreibung", False), ("beschreibung", ["x"]),
    ("mindesthaltbarkeit_tage", "30"), ("mindesthaltbarkeit_tage", 2.5),
    ("mindesthaltbarkeit_tage", 30.0), ("mindesthaltbarkeit_tage", {}),
    ("status", None), ("status", 1), ("status", ["aktiv"]),
]


@pytest.mark.parametrize("field,value", WRONG_TYPES, ids=[f"{f}={v!r}" for f, v in WRONG_TYPES])
def test_wrong_types(svc, field, value):
    nr = unique("W-")
    body = new_body(artikelnummer=nr, **{field: value}) if field != "artikelnummer" else \
        new_body(**{field: value})
    problem = assert_full_problem(post_json(svc, CREATE, body), 422, fields=[field])
    assert problem["type"] == "urn:lotmesh:problem:validation"
    assert count(svc, nr) == 0


@pytest.mark.parametrize("field,value,ok", [
    ("einheit_id", 0, False), ("einheit_id", -1, False),
    ("einheit_id", 9223372036854775807, False), ("einheit_id", -9223372036854775808, False),
    ("mindesthaltbarkeit_tage", -1, False), ("mindesthaltbarkeit_tage", 36501, False),
    ("mindesthaltbarkeit_tage", 0, True), ("mindesthaltbarkeit_tage", 36500, True),
    ("status", "archiviert", False), ("status", "Aktiv", False), ("status", "", False),
])
def test_bounds_and_enums(svc, field, value, ok):
    r = post_json(svc, CREATE, new_body(**{field: value}))
    if ok:
        assert r.status_code == 201, r.text
        assert r.json()[field] == value
    else:
        assert_full_problem(r, 422, fields=[field])


def test_einheit_must_exist(svc):
    nr = unique("E-")
    r = post_json(svc, CREATE, new_body(artikelnummer=nr, einheit_id=987654321))
    problem = assert_full_problem(r, 422, fields=["einheit_id"])
    assert "no unit with id 987654321" in field_messages(problem)["einheit_id"][0]
    assert count(svc, nr) == 0


def test_unknown_fields_refused_by_name(svc):
    nr = unique("U-")
    r = post_json(svc, CREATE, new_body(artikelnummer=nr, farbe="rot", Status="aktiv",
                                        **{"gewicht kg": 3}))
    problem = assert_full_problem(r, 422, fields=["farbe", "Status", "gewicht kg"])
    for f in ("farbe", "Status", "gewicht kg"):
        assert field_messages(problem)[f] == ["unknown field"]
    assert count(svc, nr) == 0


@pytest.mark.parametrize("field,value", [("id", 1), ("erstellt_am", "2026-01-01T00:00:00Z"),
                                         ("geaendert_am", None), ("id", None)])
def test_read_only_fields_refused_on_create(svc, field, value):
    nr = unique("R-")
    problem = assert_full_problem(post_json(svc, CREATE, new_body(artikelnummer=nr,
                                                                  **{field: value})),
                                  422, fields=[field])
    assert "set by the server" in field_messages(problem)[field][0]
    assert count(svc, nr) == 0


def test_duplicate_artikelnummer_is_409_and_case_sensitive(svc):
    a = create(svc)
    r = post_json(svc, CREATE, new_body(artikelnummer=a["artikelnummer"], bezeichnung="other"))
    problem = assert_full_problem(r, 409, "artikelnummer must be unique", instance=CREATE,
                                  fields=["artikelnummer"])
    assert problem["type"] == "urn:lotmesh:problem:conflict"
    assert a["artikelnummer"] in field_messages(problem)["artikelnummer"][0]
    assert count(svc, a["artikelnummer"]) == 1
    # unique is exact: another case is another number
    assert create(svc, artikelnummer=a["artikelnummer"].lower())["id"] != a["id"]


@pytest.mark.parametrize("bad", ["abc", "0", "-1", "1.5", "1e3", "99999999999999999999",
                                 "%20", "0x10", "1%2F2"])
def test_get_bad_ids_are_400(svc, bad):
    assert_full_problem(svc.get(art(bad)), 400, "id must be a positive integer",
                        instance=art(bad))


def test_get_unknown_is_404_and_percent_encoded_id_works(svc):
    assert_full_problem(svc.get(art(987654321)), 404, "no article with id 987654321",
                        instance=art(987654321))
    a = create(svc)
    encoded = "".join(f"%{ord(c):02X}" for c in str(a["id"]))
    r = svc.get(f"/api/v1/article/{encoded}")
    assert r.status_code == 200 and r.json() == a


def test_head_article(svc):
    a = create(svc)
    g = get(svc, a["id"])
    with RawConn(svc.port) as c:
        c.send(f"HEAD {art(a['id'])} HTTP/1.1\r\nHost: t\r\n\r\n")
        r = c.read_response(head=True)
        assert r.status == 200 and r.body == b""
        assert r.header("etag") == '"1"'
        assert r.header("content-type") == "application/json"
        assert r.header("content-length") == g.headers["Content-Length"]
        c.send(f"HEAD {art(987654321)} HTTP/1.1\r\nHost: t\r\n\r\n")
        r = c.read_response(head=True)
        assert r.status == 404 and r.body == b""
        assert r.header("content-type") == "application/problem+json"


# ---- bad bodies ---------------------------------------------------------------------------------

DEEP_ARRAYS = b"[" * 10000 + b"]" * 10000
DEEP_OBJECTS = b'{"a":' * 10000 + b"1" + b"}" * 10000
BAD_JSON = [
    ("truncated", b'{"artikelnummer": "A-1", "bezeichnung": "Mehl", "einheit_id": 1'),
    ("truncated-string", b'{"artikelnummer": "A-'),
    ("trailing-garbage", b'{"artikelnummer": "A-1"} x'),
    ("two-documents", b'{"a":1}{"b":2}'),
    ("empty", b""),
    ("whitespace-only", b"  \n"),
    ("array", b"[]"),
    ("string", b'"text"'),
    ("number", b"42"),
    ("null", b"null"),
    ("single-quotes", b"{'artikelnummer': 'A'}"),
    ("trailing-comma", b'{"artikelnummer": "A",}'),
    ("comment", b'{"artikelnummer": "A" /* c */}'),
    ("nan", b'{"einheit_id": NaN}'),
    ("infinity", b'{"einheit_id": Infinity}'),
    ("deep-arrays-10000", DEEP_ARRAYS),
    ("deep-objects-10000", DEEP_OBJECTS),
    ("deep-array-in-field", b'{"artikelnummer": ' + DEEP_ARRAYS + b"}"),
    ("huge-real", b'{"artikelnummer": "A", "bezeichnung": "B", "einheit_id": 1e400}'),
    ("huge-negative-real", b'{"einheit_id": -1e400}'),
    ("huge-integer", b'{"artikelnummer": "A", "bezeichnung": "B", "einheit_id":'
                     b' 99999999999999999999}'),
    ("huge-negative-integer", b'{"einheit_id": -99999999999999999999}'),
    ("invalid-utf8-ff", b'{"artikelnummer": "\xff", "bezeichnung": "B", "einheit_id": 1}'),
    ("invalid-utf8-overlong", b'{"artikelnummer": "\xc0\xaf", "bezeichnung": "B",'
                              b' "einheit_id": 1}'),
    ("invalid-utf8-surrogate", b'{"artikelnummer": "\xed\xa0\x80", "bezeichnung": "B",'
                               b' "einheit_id": 1}'),
    ("invalid-utf8-truncated", b'{"artikelnummer": "\xe2\x82", "bezeichnung": "B",'
                               b' "einheit_id": 1}'),
    ("invalid-utf8-in-key", b'{"\xfe": 1}'),
    ("lone-surrogate-escape", b'{"artikelnummer": "\\ud800", "bezeichnung": "B",'
                              b' "einheit_id": 1}'),
    ("nul-escape", b'{"artikelnummer": "A\\u0000B", "bezeichnung": "B", "einheit_id": 1}'),
    ("raw-control-char", b'{"artikelnummer": "A\x01", "bezeichnung": "B", "einheit_id": 1}'),
    ("bom", b'\xef\xbb\xbf{"artikelnummer": "A", "bezeichnung": "B", "einheit_id": 1}'),
    ("duplicate-keys", b'{"artikelnummer": "A", "bezeichnung": "B", "einheit_id": 1,'
                       b' "einheit_id": 2}'),
    ("duplicate-keys-same-value", b'{"artikelnummer": "A", "artikelnummer": "A",'
                                  b' "bezeichnung": "B", "einheit_id": 1}'),
]


def _bad_body_targets(svc):
    a = create(svc)
    return [("POST", CREATE), ("PUT", art(a["id"])), ("PATCH", art(a["id"])),
            ("POST", UNIT_CREATE)], a


@pytest.mark.parametrize("name,data", BAD_JSON, ids=[n for n, _ in BAD_JSON])
def test_malformed_json_is_400(svc, name, data):
    targets, a = _bad_body_targets(svc)
    total = int(svc.get(LIST, params={"limit": 1}).headers["X-Total-Count"])
    for method, path in targets:
        r = svc.request(method, path, data=data, headers={"Content-Type": "application/json"})
        problem = assert_full_problem(r, 400, instance=path)
        assert ("malformed JSON at line" in problem["detail"] or
                problem["detail"] == "the request body must be a JSON object"), problem
    assert get(svc, a["id"]).json() == a  # nothing changed
    assert int(svc.get(LIST, params={"limit": 1}).headers["X-Total-Count"]) == total


def test_malformed_json_detail_is_precise(svc):
    r = post_json(svc, CREATE, b'{\n  "artikelnummer": "A",\n  "bezeichnung": }')
    problem = assert_full_problem(r, 400)
    assert problem["detail"].startswith("malformed JSON at line 3, column"), problem
    problem = assert_full_problem(post_json(svc, CREATE, b'{"a": "x\\u0000"}'), 400)
    assert "JSON_ALLOW_NUL" not in problem["detail"] and "NUL" in problem["detail"]
    problem = assert_full_problem(post_json(svc, CREATE, b'{"a": 1, "a": 2}'), 400)
    assert "duplicate" in problem["detail"]


@pytest.mark.parametrize("ctype", [None, "text/plain", "application/xml",
                                   "application/x-www-form-urlencoded", "application/jsonx",
                                   "multipart/form-data; boundary=x"])
def test_not_json_is_415(svc, ctype):
    a = create(svc)
    body = json.dumps(new_body()).encode()
    for method, path in (("POST", CREATE), ("PUT", art(a["id"])), ("PATCH", art(a["id"])),
                         ("POST", UNIT_CREATE)):
        headers = {"Content-Type": ctype} if ctype else {}
        r = svc.request(method, path, data=body, headers=headers)
        assert_full_problem(r, 415, "Content-Type", instance=path)
    assert get(svc, a["id"]).json() == a


@pytest.mark.parametrize("ctype", ["application/json; charset=utf-8", "APPLICATION/JSON",
                                   "application/vnd.lotmesh+json"])
def test_json_content_types_accepted(svc, ctype):
    r = svc.request("POST", CREATE, data=json.dumps(new_body()), headers={"Content-Type": ctype})
    assert r.status_code == 201, r.text


def test_one_megabyte_string_is_413_and_server_survives(svc):
    nr = unique("BIG-")
    data = json.dumps(new_body(artikelnummer=nr, beschreibung="x" * (1 << 20))).encode()
    assert len(data) > (1 << 20)
    r = svc.request("POST", CREATE, data=data, headers={"Content-Type": "application/json"})
    assert r.status_code == 413
    assert r.headers["Content-Type"] == "application/problem+json"
    body = r.json()
    for k in ("type", "title", "status", "detail", "trace_id"):
        assert k in body, body
    assert body["status"] == 413
    assert count(svc, nr) == 0
    svc.assert_healthy()


def test_one_megabyte_string_problem_has_instance(svc):
    data = json.dumps(new_body(beschreibung="x" * (1 << 20))).encode()
    r = svc.request("POST", CREATE, data=data, headers={"Content-Type": "application/json"})
    assert_full_problem(r, 413, instance=CREATE)


def test_900kb_strings_are_422_too_long(svc):
    a = create(svc)
    for field in ("artikelnummer", "bezeichnung", "beschreibung"):
        nr = unique("K-")
        body = new_body(**{"artikelnummer": nr, field: "ü" * 450_000})  # 900 kB of UTF-8
        assert len(json.dumps(body, ensure_ascii=False).encode()) < (1 << 20)
        r = svc.request("POST", CREATE, data=json.dumps(body, ensure_ascii=False).encode(),
                        headers={"Content-Type": "application/json"})
        problem = assert_full_problem(r, 422, fields=[field])
        assert "must have at most" in field_messages(problem)[field][0]
        assert count(svc, nr) == 0
        r = svc.request("PATCH", art(a["id"]), headers={"Content-Type": "application/json"},
                        data=json.dumps({field: "ü" * 450_000}, ensure_ascii=False).encode())
        assert_full_problem(r, 422, fields=[field])
    assert get(svc, a["id"]).json() == a


# ---- list: filters and pagination -------------------------------------------------------------

def test_list_is_plain_array_with_total(svc):
    create(svc)
    r = svc.get(LIST)
    assert r.status_code == 200
    assert r.headers["Content-Type"] == "application/json"
    items = r.json()
    assert isinstance(items, list) and items
    total = int(r.headers["X-Total-Count"])
    assert len(items) == min(total, 50)  # default limit
    ids = [i["id"] for i in items]
    assert ids == sorted(ids)
    for i in items:
        assert set(i) == ARTIKEL_KEYS


def test_list_filters_status_and_text(svc):
    tag = unique("Q")
    made = {
        "a": create(svc, artikelnummer=f"{tag}-A", bezeichnung="Roggenmehl", status="aktiv"),
        "b": create(svc, artikelnummer=f"{tag}-B", bezeichnung="Dinkel", status="inaktiv"),
        "c": create(svc, artikelnummer=f"X{unique()}", bezeichnung=f"Salz {tag.lower()}",
                    status="gesperrt"),
        "d": create(svc, artikelnummer=f"{tag}-D", bezeichnung="Hefe", status="aktiv"),
    }

    def ids(**params):
        r = svc.get(LIST, params=params)
        assert r.status_code == 200, r.text
        got = [i["id"] for i in r.json()]
        assert int(r.headers["X-Total-Count"]) == len(got)
        return got

    ids_of = lambda *ks: [made[k]["id"] for k in ks]  # noqa: E731
    assert ids(q=tag) == ids_of("a", "b", "c", "d")           # artikelnummer or bezeichnung
    assert ids(q=tag.lower()) == ids_of("a", "b", "c", "d")   # case-insensitive
    assert ids(q=tag, status="aktiv") == ids_of("a", "d")
    assert ids(q=tag, status="inaktiv") == ids_of("b")
    assert ids(q=tag, status="gesperrt") == ids_of("c")
    assert ids(q=f"{tag}-B") == ids_of("b")
    assert ids(q=f"{tag}%") == []                             # no wildcards
    assert ids(q=f"{tag}_A") == []
    for i in svc.get(LIST, params={"status": "inaktiv", "limit": 500}).json():
        assert i["status"] == "inaktiv"


def test_list_q_with_special_and_non_ascii_characters(svc):
    tag = unique("S")
    a = create(svc, artikelnummer=f"{tag} & Co=1+2 #ä", bezeichnung="Sonderzeichen")
    r = svc.get(LIST, params={"q": f"{tag} & Co=1+2 #ä"})
    assert [i["id"] for i in r.json()] == [a["id"]]


def test_list_q_is_case_insensitive_beyond_ascii(svc):
    tag = unique("U")
    a = create(svc, bezeichnung=f"{tag} ÄPFEL aus Übersee")
    b = create(svc, bezeichnung=f"{tag} Σοφία ЖУРНАЛ straße")
    ids = lambda q: [i["id"] for i in svc.get(LIST, params={"q": q, "limit": 500}).json()]  # noqa
    assert ids(f"{tag.lower()} äpfel") == [a["id"]]
    assert ids("äpfel aus übersee") == ids("ÄPFEL AUS ÜBERSEE") == [a["id"]]
    assert ids(f"{tag} σοφία журнал") == ids(f"{tag} ΣΟΦΊΑ Журнал") == [b["id"]]
    assert ids(f"{tag} STRASSE") == []  # simple case mapping: ß is not ss
    r = svc.get(LIST, params={"q": "übersee", "limit": 1})
    assert int(r.headers["X-Total-Count"]) >= 1


def _link(r):
    """{rel: url} of a Link header."""
    out = {}
    for part in r.headers.get("Link", "").split(","):
        part = part.strip()
        if not part:
            continue
        url, _, params = part.partition(";")
        assert url.startswith("<") and url.endswith(">"), part
        rel = params.strip()
        assert rel.startswith('rel="') and rel.endswith('"'), part
        out[rel[5:-1]] = url[1:-1]
    return out


def test_pagination_total_and_links(svc):
    tag = unique("P")
    made = [create(svc, artikelnummer=f"{tag}-{i}")["id"] for i in range(7)]
    r = svc.get(LIST, params={"q": tag, "limit": 3})
    assert [i["id"] for i in r.json()] == made[:3]
    assert r.headers["X-Total-Count"] == "7"
    links = _link(r)
    assert set(links) == {"next"}
    assert links["next"] == f"/api/v1/articles?q={tag}&limit=3&offset=3"
    # follow next to the end, then prev back to the start
    seen, url, pages = [], f"{LIST}?q={tag}&limit=3", 0
    while url:
        r = svc.get(url)
        assert r.status_code == 200 and r.headers["X-Total-Count"] == "7"
        seen += [i["id"] for i in r.json()]
        last = r
        url = _link(r).get("next")
        pages += 1
        assert pages <= 5
    assert seen == made and pages == 3
    links = _link(last)
    assert set(links) == {"prev"}
    assert links["prev"] == f"/api/v1/articles?q={tag}&limit=3&offset=3"
    r = svc.get(f"{LIST}?q={tag}&limit=3&offset=3")
    links = _link(r)
    assert links == {"next": f"/api/v1/articles?q={tag}&limit=3&offset=6",
                     "prev": f"/api/v1/articles?q={tag}&limit=3&offset=0"}
    # an offset not on a page boundary: prev never goes below 0
    r = svc.get(LIST, params={"q": tag, "limit": 3, "offset": 1})
    assert [i["id"] for i in r.json()] == made[1:4]
    assert _link(r)["prev"].endswith("limit=3&offset=0")
    # past the end: empty page, the total still right
    r = svc.get(LIST, params={"q": tag, "limit": 3, "offset": 100})
    assert r.json() == [] and r.headers["X-Total-Count"] == "7"
    assert "next" not in _link(r) and "prev" in _link(r)
    # everything on one page: no Link at all
    r = svc.get(LIST, params={"q": tag, "limit": 7})
    assert len(r.json()) == 7 and "Link" not in r.headers


def test_link_keeps_filters_escaped(svc):
    tag = unique("Z")
    for i in range(3):
        create(svc, artikelnummer=f"{tag} & ä{i}", status="inaktiv")
    r = svc.get(LIST, params={"q": f"{tag} & ä", "status": "inaktiv", "limit": 2})
    assert r.headers["X-Total-Count"] == "3"
    nxt = _link(r)["next"]
    assert " " not in nxt and "ä" not in nxt
    r2 = svc.get(nxt)
    assert r2.status_code == 200 and len(r2.json()) == 1
    assert r2.json()[0]["artikelnummer"] == f"{tag} & ä2"


def test_limit_bounds(svc):
    tag = unique("B")
    for i in range(3):
        create(svc, artikelnummer=f"{tag}-{i}")
    assert len(svc.get(LIST, params={"q": tag, "limit": 1}).json()) == 1
    assert svc.get(LIST, params={"limit": 500}).status_code == 200
    for params, fields in (({"limit": 0}, ["limit"]), ({"limit": 501}, ["limit"]),
                           ({"limit": -1}, ["limit"]), ({"limit": "abc"}, ["limit"]),
                           ({"limit": ""}, ["limit"]), ({"limit": "1.5"}, ["limit"]),
                           ({"offset": -1}, ["offset"]), ({"offset": "x"}, ["offset"]),
                           ({"offset": 2 ** 41}, ["offset"]),
                           ({"limit": 0, "offset": -1}, ["limit", "offset"])):
        problem = assert_full_problem(svc.get(LIST, params=params), 400, instance=LIST,
                                      fields=fields)
        assert problem["type"] == "urn:lotmesh:problem:invalid-parameters"


def test_list_query_validation(svc):
    problem = assert_full_problem(svc.get(LIST, params={"status": "weg"}), 400,
                                  fields=["status"])
    assert "aktiv, inaktiv, gesperrt" in field_messages(problem)["status"][0]
    assert_full_problem(svc.get(LIST, params={"q": ""}), 400, fields=["q"])
    assert_full_problem(svc.get(LIST, params={"q": "ä" * 101}), 400, fields=["q"])
    assert svc.get(LIST, params={"q": "ä" * 100}).status_code == 200


@pytest.mark.parametrize("query", ["foo=1", "sort=id", "Status=aktiv", "limit=5&page=2",
                                   "q=x&einheit_id=1"])
def test_list_unknown_query_parameters_are_400(svc, query):
    problem = assert_full_problem(svc.get(f"{LIST}?{query}"), 400, "unknown query parameter",
                                  instance=LIST)
    assert "status, q, limit, offset" in problem["detail"]


# ---- update (PUT / PATCH) -----------------------------------------------------------------------

def test_put_replaces_and_bumps_etag(svc):
    a = create(svc, beschreibung="alt", mindesthaltbarkeit_tage=10, status="inaktiv")
    nr = unique("N-")
    r = post_json(svc, art(a["id"]), {"artikelnummer": f" {nr} ", "bezeichnung": "Neu",
                                      "einheit_id": 3}, method="PUT")
    assert r.status_code == 200, r.text
    b = r.json()
    assert r.headers["ETag"] == '"2"'
    assert b["id"] == a["id"] and b["artikelnummer"] == nr and b["bezeichnung"] == "Neu"
    assert b["einheit_id"] == 3
    # PUT replaces: what was left out takes its default
    assert b["beschreibung"] is None and b["mindesthaltbarkeit_tage"] is None
    assert b["status"] == "aktiv"
    assert b["erstellt_am"] == a["erstellt_am"]
    assert RFC3339.match(b["geaendert_am"])
    g = get(svc, a["id"])
    assert g.json() == b and g.headers["ETag"] == '"2"'
    r = post_json(svc, art(a["id"]), {**new_body(artikelnummer=nr), "status": "gesperrt"},
                  method="PUT")
    assert r.status_code == 200 and r.headers["ETag"] == '"3"'
    assert r.json()["status"] == "gesperrt"


def test_put_accepts_its_own_representation(svc):
    a = create(svc, beschreibung="x")
    rep = get(svc, a["id"]).json()
    rep["bezeichnung"] = "geändert"
    rep["erstellt_am"] = "1999-01-01T00:00:00Z"    # ignored
    rep["geaendert_am"] = "not even a date"       # ignored
    r = post_json(svc, art(a["id"]), rep, method="PUT")
    assert r.status_code == 200, r.text
    b = r.json()
    assert b["bezeichnung"] == "geändert"
    assert b["erstellt_am"] == a["erstellt_am"]
    assert b["geaendert_am"] != "not even a date" and RFC3339.match(b["geaendert_am"])


@pytest.mark.parametrize("method", ["PUT", "PATCH"])
@pytest.mark.parametrize("bad_id", [999999, "1", None, 1.0])
def test_update_with_other_id_is_422(svc, method, bad_id):
    a = create(svc)
    body = {**new_body(artikelnummer=a["artikelnummer"]), "id": bad_id}
    problem = assert_full_problem(post_json(svc, art(a["id"]), body, method=method), 422,
                                  fields=["id"])
    assert f"({a['id']})" in field_messages(problem)["id"][0]
    assert get(svc, a["id"]).json() == a


def test_put_validation(svc):
    a = create(svc)
    p = art(a["id"])
    assert_full_problem(post_json(svc, p, {"bezeichnung": "x"}, method="PUT"), 422,
                        fields=["artikelnummer", "einheit_id"])
    assert_full_problem(post_json(svc, p, {**new_body(), "farbe": "rot"}, method="PUT"), 422,
                        fields=["farbe"])
    assert_full_problem(post_json(svc, p, new_body(einheit_id=987654), method="PUT"), 422,
                        fields=["einheit_id"])
    assert_full_problem(post_json(svc, p, new_body(mindesthaltbarkeit_tage=-5), method="PUT"),
                        422, fields=["mindesthaltbarkeit_tage"])
    assert_full_problem(post_json(svc, p, new_body(status=None), method="PUT"), 422,
                        fields=["status"])
    assert get(svc, a["id"]).json() == a


def test_patch_changes_only_given_fields(svc):
    a = create(svc, beschreibung="bleibt", mindesthaltbarkeit_tage=30, status="aktiv")
    p = art(a["id"])
    r = post_json(svc, p, {"bezeichnung": "  Nur der Name  "}, method="PATCH")
    assert r.status_code == 200, r.text
    b = r.json()
    assert b["bezeichnung"] == "Nur der Name"
    for k in ("artikelnummer", "einheit_id", "beschreibung", "mindesthaltbarkeit_tage",
              "status", "erstellt_am"):
        assert b[k] == a[k], k
    assert RFC3339.match(b["geaendert_am"])
    assert r.headers["ETag"] == '"2"'
    # null clears an optional field
    r = post_json(svc, p, {"beschreibung": None, "mindesthaltbarkeit_tage": None}, method="PATCH")
    assert r.status_code == 200
    assert r.json()["beschreibung"] is None and r.json()["mindesthaltbarkeit_tage"] is None
    assert r.json()["bezeichnung"] == "Nur der Name"
    assert r.headers["ETag"] == '"3"'
    # status and unit
    r = post_json(svc, p, {"status": "gesperrt", "einheit_id": 4}, method="PATCH")
    assert r.json()["status"] == "gesperrt" and r.json()["einheit_id"] == 4
    # an empty patch changes nothing of the data
    r = post_json(svc, p, {}, method="PATCH")
    assert r.status_code == 200
    c = r.json()
    for k in ARTIKEL_KEYS - {"geaendert_am"}:
        assert c[k] == get(svc, a["id"]).json()[k]


def test_patch_merge_patch_content_type(svc):
    a = create(svc)
    r = svc.request("PATCH", art(a["id"]), data=json.dumps({"status": "inaktiv"}),
                    headers={"Content-Type": "application/merge-patch+json"})
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "inaktiv"


def test_patch_ignores_server_fields_of_a_representation(svc):
    a = create(svc)
    r = post_json(svc, art(a["id"]), {"id": a["id"], "erstellt_am": "x", "geaendert_am": 5,
                                      "bezeichnung": "P"}, method="PATCH")
    assert r.status_code == 200, r.text
    assert r.json()["erstellt_am"] == a["erstellt_am"]
    assert r.json()["bezeichnung"] == "P"


@pytest.mark.parametrize("body,fields", [
    ({"artikelnummer": None}, ["artikelnummer"]),
    ({"bezeichnung": None}, ["bezeichnung"]),
    ({"einheit_id": None}, ["einheit_id"]),
    ({"status": None}, ["status"]),
    ({"artikelnummer": "  "}, ["artikelnummer"]),
    ({"einheit_id": 987654}, ["einheit_id"]),
    ({"einheit_id": "2"}, ["einheit_id"]),
    ({"mindesthaltbarkeit_tage": 36501}, ["mindesthaltbarkeit_tage"]),
    ({"status": "alt"}, ["status"]),
    ({"farbe": "blau", "bezeichnung": 1}, ["farbe", "bezeichnung"]),
])
def test_patch_validation(svc, body, fields):
    a = create(svc)
    assert_full_problem(post_json(svc, art(a["id"]), body, method="PATCH"), 422,
                        instance=art(a["id"]), fields=fields)
    g = get(svc, a["id"])
    assert g.json() == a and g.headers["ETag"] == '"1"'


@pytest.mark.parametrize("method", ["PUT", "PATCH"])
def test_update_to_taken_artikelnummer_is_409(svc, method):
    a, b = create(svc), create(svc)
    body = new_body(artikelnummer=f" {a['artikelnummer']} ")
    problem = assert_full_problem(post_json(svc, art(b["id"]), body, method=method), 409,
                                  fields=["artikelnummer"])
    assert problem["type"] == "urn:lotmesh:problem:conflict"
    assert get(svc, b["id"]).json() == b
    # keeping one's own number is fine
    r = post_json(svc, art(b["id"]), new_body(artikelnummer=b["artikelnummer"]), method=method)
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("method", ["PUT", "PATCH", "DELETE"])
def test_update_or_delete_unknown_is_404(svc, method):
    r = post_json(svc, art(987654321), new_body(), method=method)
    assert_full_problem(r, 404, "no article with id 987654321", instance=art(987654321))


@pytest.mark.parametrize("method", ["PUT", "PATCH", "DELETE"])
def test_update_or_delete_bad_id_is_400(svc, method):
    r = post_json(svc, art("x1"), new_body(), method=method)
    assert_full_problem(r, 400, "positive integer", instance=art("x1"))


# ---- ETag / If-Match ----------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["PUT", "PATCH", "DELETE"])
def test_if_match(svc, method):
    a = create(svc)
    p = art(a["id"])
    sent = []

    def send(if_match):  # every body changes something: a PATCH that changes nothing keeps the version
        sent.append(if_match)
        body = new_body(artikelnummer=a["artikelnummer"], bezeichnung=f"neu {len(sent)}")
        return post_json(svc, p, body, headers={"If-Match": if_match}, method=method)

    for stale in ('"2"', '"0"', 'W/"1"', '"1', "1", '"01"', '"abc"', "W/*", ","):
        problem = assert_full_problem(send(stale), 412, "If-Match", instance=p)
        assert '"1"' in problem["detail"]
        g = get(svc, a["id"])
        assert g.json() == a and g.headers["ETag"] == '"1"'
    r = send('"7", "1"')  # a list with the current tag
    assert r.status_code == (204 if method == "DELETE" else 200), r.text
    if method == "DELETE":
        assert svc.get(p).status_code == 404
        return
    assert r.headers["ETag"] == '"2"'
    assert_full_problem(send('"1"'), 412)  # the old tag no longer matches
    r = send("*")
    assert r.status_code == 200 and r.headers["ETag"] == '"3"'
    r = send('"3"')
    assert r.status_code == 200 and r.headers["ETag"] == '"4"'
    r = send('W/"4" , "4"')  # the weak one is skipped, the strong one matches
    assert r.status_code == 200 and r.headers["ETag"] == '"5"'


def test_if_match_star_on_delete_and_several_header_lines(svc):
    a = create(svc)
    assert svc.request("DELETE", art(a["id"]), headers={"If-Match": "*"}).status_code == 204
    b = create(svc)
    raw = (f"PATCH {art(b['id'])} HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
           f"If-Match: \"5\"\r\nIf-Match: \"1\"\r\nContent-Length: 2\r\n\r\n{{}}")
    r = svc.raw_exchange(raw.encode())
    assert r.status == 200, r.body
    assert r.header("etag") == '"1"'  # an empty PATCH changes nothing: same version
    body = '{"bezeichnung":"neu"}'
    raw = raw.replace("Content-Length: 2\r\n\r\n{}", f"Content-Length: {len(body)}\r\n\r\n{body}")
    r = svc.raw_exchange(raw.encode())
    assert r.status == 200, r.body
    assert r.header("etag") == '"2"'



def test_if_match_without_header_is_unconditional(svc):
    a = create(svc)
    for i in range(3):
        r = post_json(svc, art(a["id"]), {"bezeichnung": f"v{i}"}, method="PATCH")
        assert r.status_code == 200 and r.headers["ETag"] == f'"{i + 2}"'


def test_concurrent_updates_with_if_match_only_one_wins(svc):
    a = create(svc)
    results = []

    def worker(i):
        r = post_json(svc, art(a["id"]), {"bezeichnung": f"writer {i}"},
                      headers={"If-Match": '"1"'}, method="PATCH")
        results.append(r.status_code)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=IO_TIMEOUT * 2)
    assert sorted(results) == [200] + [412] * 7
    assert get(svc, a["id"]).headers["ETag"] == '"2"'


# ---- delete ---------------------------------------------------------------------------------------

def test_ids_are_never_reused(svc):
    a = create(svc)
    assert svc.request("DELETE", art(a["id"])).status_code == 204
    b = create(svc)  # a was the newest: without AUTOINCREMENT SQLite would hand out a's id
    assert b["id"] > a["id"]
    assert_full_problem(svc.get(art(a["id"])), 404)
    # a stale ETag of the deleted article cannot touch the new one
    r = post_json(svc, art(a["id"]), {"bezeichnung": "x"}, headers={"If-Match": '"1"'},
                  method="PATCH")
    assert_full_problem(r, 404)


def test_delete(svc):
    a = create(svc)
    r = svc.request("DELETE", art(a["id"]))
    assert r.status_code == 204
    assert r.content == b""
    assert "Content-Type" not in r.headers
    assert_full_problem(svc.get(art(a["id"])), 404)
    assert_full_problem(svc.request("DELETE", art(a["id"])), 404)
    assert count(svc, a["artikelnummer"]) == 0
    # the number is free again, under a new id
    b = create(svc, artikelnummer=a["artikelnummer"])
    assert b["id"] != a["id"]


# ---- Idempotency-Key ----------------------------------------------------------------------------

def test_idempotent_retry_returns_first_result_and_creates_nothing(svc):
    key = unique("key-")
    body = new_body()
    r1 = post_json(svc, CREATE, body, {"Idempotency-Key": key})
    assert r1.status_code == 201
    r2 = post_json(svc, CREATE, body, {"Idempotency-Key": key})
    assert r2.status_code == 201
    assert r2.json() == r1.json()
    assert r2.headers["Location"] == r1.headers["Location"]
    assert r2.headers["Content-Type"] == "application/json"
    assert count(svc, body["artikelnummer"]) == 1
    # the replay is the first result even after the article changed
    post_json(svc, r1.headers["Location"], {"bezeichnung": "später"}, method="PATCH")
    r3 = post_json(svc, CREATE, body, {"Idempotency-Key": key})
    assert r3.status_code == 201 and r3.json() == r1.json()
    assert count(svc, body["artikelnummer"]) == 1


def test_idempotency_key_with_other_request_is_422(svc):
    key = unique("key-")
    body = new_body()
    assert post_json(svc, CREATE, body, {"Idempotency-Key": key}).status_code == 201
    other = new_body()
    problem = assert_full_problem(post_json(svc, CREATE, other, {"Idempotency-Key": key}), 422,
                                  "Idempotency-Key", instance=CREATE)
    assert problem["type"] == "urn:lotmesh:problem:idempotency-key-reused"
    assert count(svc, other["artikelnummer"]) == 0
    # same bytes to another endpoint is another request too
    problem = assert_full_problem(post_json(svc, UNIT_CREATE, {"kuerzel": "q", "bezeichnung": "q"},
                                            {"Idempotency-Key": key}), 422)
    assert problem["type"] == "urn:lotmesh:problem:idempotency-key-reused"


def test_failed_create_does_not_consume_the_key(svc):
    key = unique("key-")
    taken = create(svc)
    bad = new_body(artikelnummer=taken["artikelnummer"])
    assert_full_problem(post_json(svc, CREATE, bad, {"Idempotency-Key": key}), 409)
    assert_full_problem(post_json(svc, CREATE, bad, {"Idempotency-Key": key}), 409)
    good = new_body()
    r = post_json(svc, CREATE, good, {"Idempotency-Key": key})
    assert r.status_code == 201
    assert post_json(svc, CREATE, good, {"Idempotency-Key": key}).json() == r.json()


def _post_with_key(svc, key_bytes, nr):
    raw = json.dumps(new_body(artikelnummer=nr)).encode()
    return svc.raw_exchange(
        b"POST " + CREATE.encode() + b" HTTP/1.1\r\nHost: t\r\nContent-Type: application/json"
        b"\r\nIdempotency-Key: " + key_bytes + b"\r\nContent-Length: " +
        str(len(raw)).encode() + b"\r\n\r\n" + raw)


@pytest.mark.parametrize("key", ["a b", "tab\tin", "x" * 256, "ümlaut", "é€"],
                         ids=["space", "tab", "256-chars", "non-ascii", "non-ascii-2"])
def test_malformed_idempotency_key_is_400(svc, key):
    nr = unique("IK-")
    r = _post_with_key(svc, key.encode("utf-8"), nr)
    assert_full_problem(r, 400, "Idempotency-Key must be 1 to 255 printable ASCII characters",
                        instance=CREATE)
    assert count(svc, nr) == 0


@pytest.mark.parametrize("key", [b"\x7f", b"a\x01b", b"a\x00b"], ids=["DEL", "SOH", "NUL"])
def test_idempotency_key_with_control_characters_is_400(svc, key):
    # not a valid field value at all (RFC 9110 5.5): the HTTP engine refuses the request
    nr = unique("IK-")
    assert_problem(_post_with_key(svc, key, nr), 400)
    assert count(svc, nr) == 0


def test_empty_idempotency_key_and_if_match_reach_the_service(svc):
    nr = unique("IK-")
    for key in (b"", b" "):
        r = _post_with_key(svc, key, nr)
        assert_full_problem(r, 400, "Idempotency-Key must be", instance=CREATE)
    a = create(svc)
    r = svc.raw_exchange((f"DELETE {art(a['id'])} HTTP/1.1\r\nHost: t\r\nIf-Match: \r\n"
                          f"\r\n").encode())
    assert_full_problem(r, 412, instance=art(a["id"]))


def test_longest_and_odd_idempotency_keys_work(svc):
    # (the module's database is new, so these fixed keys are unused)
    for key in ("k" * 255, "!#$%&'*+-.^_`|~", "a/b:c=d"):
        body = new_body()
        r1 = post_json(svc, CREATE, body, {"Idempotency-Key": key})
        assert r1.status_code == 201, r1.text
        r2 = post_json(svc, CREATE, body, {"Idempotency-Key": key})
        assert r2.status_code == 201 and r2.json() == r1.json()
        assert count(svc, body["artikelnummer"]) == 1


def test_idempotency_key_is_ignored_on_other_methods(svc):
    a = create(svc)
    r = svc.get(art(a["id"]), headers={"Idempotency-Key": "not a valid key"})
    assert r.status_code == 200
    r = post_json(svc, art(a["id"]), {"bezeichnung": "x"},
                  headers={"Idempotency-Key": "not a valid key"}, method="PATCH")
    assert r.status_code == 200


def test_concurrent_retries_with_one_key_create_one_article(svc):
    key = unique("key-")
    body = new_body()
    results = []

    def worker():
        r = post_json(svc, CREATE, body, {"Idempotency-Key": key})
        results.append((r.status_code, r.text))

    threads = [threading.Thread(target=worker) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=IO_TIMEOUT * 2)
    assert len(results) == 10
    assert {s for s, _ in results} == {201}
    assert len({json.loads(t)["id"] for _, t in results}) == 1
    assert count(svc, body["artikelnummer"]) == 1


def test_concurrent_creates_same_number_one_wins(svc):
    body = new_body()
    results = []

    def worker():
        results.append(post_json(svc, CREATE, body).status_code)

    threads = [threading.Thread(target=worker) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=IO_TIMEOUT * 2)
    assert sorted(results) == [201] + [409] * 9
    assert count(svc, body["artikelnummer"]) == 1



def test_failing_creates_in_a_group_commit_roll_back_only_themselves(svc):
    """Forty creates at once, so they share group commits: every third takes a number that
    exists (409), every seventh names no unit (422); each failing one rolls back only itself,
    every other one is there as acknowledged. On PostgreSQL the writer's transaction control
    travels in the pipeline with the next statement, so a failed statement must still end its
    own job only."""
    taken = new_body("TAKEN-")
    assert post_json(svc, CREATE, taken).status_code == 201
    bodies = []
    for i in range(40):
        if i % 3 == 0:
            bodies.append(dict(taken, bezeichnung=f"doppelt {i}"))
        elif i % 7 == 0:
            bodies.append(new_body("NOUNIT-", einheit_id=999999))
        else:
            bodies.append(new_body("GROUP-"))
    results = [None] * len(bodies)
    barrier = threading.Barrier(len(bodies))

    def worker(i):
        barrier.wait()
        results[i] = post_json(svc, CREATE, bodies[i])

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(bodies))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=IO_TIMEOUT * 2)
    for i, (body, r) in enumerate(zip(bodies, results)):
        if i % 3 == 0:
            assert r.status_code == 409, r.text
        elif i % 7 == 0:
            assert r.status_code == 422, r.text
            assert count(svc, body["artikelnummer"]) == 0
        else:
            assert r.status_code == 201, r.text
            assert svc.get(r.headers["Location"]).json() == r.json()
    assert count(svc, taken["artikelnummer"]) == 1


# ---- routing, methods, runtime endpoints ----------------------------------------------------------

@pytest.mark.parametrize("method,path,allowed", [
    ("POST", "/api/v1/article/1", "GET, HEAD, PUT, PATCH, DELETE"),
    ("DELETE", LIST, "GET, HEAD"),
    ("POST", LIST, "GET, HEAD"),
    ("PUT", LIST, "GET, HEAD"),
])
def test_method_not_allowed(svc, method, path, allowed):
    r = svc.request(method, path)
    assert_full_problem(r, 405, instance=path)
    assert r.headers["Allow"] == allowed


@pytest.mark.parametrize("path", ["/api/v1/article", "/api/v1/article/", "/api/v1/article/1/x",
                                  "/api/v2/articles", "/api/v1/articles/1", "/api/v1/unit",
                                  "/api/v1/artikel/1", "/"])
def test_unknown_paths_are_404(svc, path):
    assert_full_problem(svc.get(path), 404, instance=path)


def test_request_id_echoed_and_traceparent_in_problem(svc):
    trace = "0af7651916cd43dd8448eb211c80319c"
    r = svc.get(art(987654321), headers={"X-Request-ID": "req-123",
                                          "traceparent": f"00-{trace}-b7ad6b7169203331-01"})
    assert r.headers["X-Request-ID"] == "req-123"
    assert assert_full_problem(r, 404)["trace_id"] == trace


def test_runtime_endpoints(svc):
    assert svc.get("/health").json() == {"status": "ok"}
    r = svc.get("/ready")
    assert r.status_code == 200
    assert r.json() == {"status": "ready", "checks": {"database": "ok"}}
    create(svc)
    m = svc.metrics()
    assert m[("lotmesh_db_commits_total", frozenset())] >= 1
    assert m[("lotmesh_db_write_jobs_total", frozenset())] >= 1
    r = svc.get("/openapi.json")
    assert r.status_code == 200 and r.headers["Content-Type"] == "application/json"
    doc = r.json()
    assert doc["openapi"].startswith("3.1")
    assert "/api/v1/article/{id}" in doc["paths"]


def test_keep_alive_many_requests_one_connection(svc):
    s = requests.Session()
    try:
        tag = unique("KA")
        for i in range(20):
            r = s.post(svc.url(CREATE), json=new_body(artikelnummer=f"{tag}-{i}"),
                       timeout=IO_TIMEOUT)
            assert r.status_code == 201
            assert s.get(svc.url(r.headers["Location"]), timeout=IO_TIMEOUT).status_code == 200
        assert count(svc, tag) == 20
    finally:
        s.close()


def test_client_disconnect_mid_request_leaves_nothing_behind(svc):
    nr = unique("DC-")
    body = json.dumps(new_body(artikelnummer=nr)).encode()
    with socket.create_connection(("127.0.0.1", svc.port), timeout=IO_TIMEOUT) as s:
        s.sendall(b"POST " + CREATE.encode() + b" HTTP/1.1\r\nHost: t\r\nContent-Type: "
                  b"application/json\r\nContent-Length: " + str(len(body)).encode() +
                  b"\r\n\r\n" + body[: len(body) // 2])
    svc.assert_healthy()
    assert count(svc, nr) == 0


# ---- service tokens (DESIGN 3.5) ----------------------------------------------------------------

@pytest.fixture(scope="module")
def _svc_auth(tmp_path_factory):
    yield from module_process(tmp_path_factory, "articles", {"WORKERS": "2", **AUTH_ENV},
                              tag="articles-auth")


@pytest.fixture
def svc_auth(_svc_auth):
    assert _svc_auth.alive(), _svc_auth.stderr_tail()
    yield _svc_auth
    assert _svc_auth.alive(), f"articles died:\n{_svc_auth.stderr_tail()}"


WRITE = service_token("articles_api")
READ = service_token("articles_api", scope="read")


def api_calls(article_id):
    body = json.dumps(new_body()).encode()
    p = art(article_id)
    return [("GET", LIST, None), ("HEAD", LIST, None), ("POST", CREATE, body),
            ("GET", p, None), ("HEAD", p, None), ("PUT", p, body), ("PATCH", p, b"{}"),
            ("DELETE", p, None), ("GET", UNITS, None), ("GET", "/api/v1/unit/1", None),
            ("POST", UNIT_CREATE, json.dumps({"kuerzel": unique("z")[-9:],
                                              "bezeichnung": "z"}).encode())]


def _call(p, method, path, body, headers):
    h = {"Content-Type": "application/json", **headers}
    return p.request(method, path, data=body, headers=h)


def _assert_denied(r, status, path, error=None):
    challenge = r.headers.get("WWW-Authenticate", "")
    assert challenge.startswith('Bearer realm="lotmesh-service"'), challenge
    if error:
        assert f'error="{error}"' in challenge, challenge
    if r.request.method == "HEAD":
        assert r.status_code == status and r.content == b""
        return
    problem = assert_full_problem(r, status, instance=path)
    assert problem["type"] == "urn:lotmesh:problem:auth"


def test_every_api_route_needs_a_service_token(svc_auth):
    a = post_json(svc_auth, CREATE, new_body(), bearer(WRITE)).json()
    for method, path, body in api_calls(a["id"]):
        for headers in ({}, {"Authorization": "Basic dXNlcjpwdw=="},
                        {"Authorization": "Bearer"}, {"Authorization": "Bearer not.a.jwt"}):
            _assert_denied(_call(svc_auth, method, path, body, headers), 401, path)
    r = svc_auth.get(art(a["id"]), headers=bearer(WRITE))
    assert r.status_code == 200 and r.json() == a  # nothing changed


BAD_TOKENS = [
    ("expired", service_token("articles_api", exp_in=-120)),
    ("other-secret", service_token("articles_api", secret="x" * 48)),
    ("unknown-issuer", service_token("articles_api", iss="mallory")),
    ("alg-none", service_token("articles_api", secret=None, alg="none")),
    ("hs512", service_token("articles_api", alg="HS512")),
]


# ids by name only: a token holds the time it was made, and every pytest-xdist worker
# collects on its own; ids that differed between workers would stop the run
@pytest.mark.parametrize("name,token", BAD_TOKENS, ids=[n for n, _ in BAD_TOKENS])
def test_invalid_tokens_are_401(svc_auth, name, token):
    nr = unique("TK-")
    r = post_json(svc_auth, CREATE, new_body(artikelnummer=nr), bearer(token))
    _assert_denied(r, 401, CREATE, "invalid_token")
    assert_full_problem(svc_auth.get(LIST, params={"q": nr}, headers=bearer(token)), 401)


def test_token_for_another_service_is_403(svc_auth):
    token = service_token("charges_api")
    for method, path, body in api_calls(1):
        _assert_denied(_call(svc_auth, method, path, body, bearer(token)), 403, path,
                       "invalid_token")


def test_read_scope_reads_but_does_not_write(svc_auth):
    a = post_json(svc_auth, CREATE, new_body(), bearer(WRITE)).json()
    for method, path, body in api_calls(a["id"]):
        r = _call(svc_auth, method, path, body, bearer(READ))
        if method in ("GET", "HEAD"):
            assert r.status_code == 200, (method, path, r.text)
        else:
            _assert_denied(r, 403, path, "insufficient_scope")
    r = svc_auth.get(art(a["id"]), headers=bearer(READ))
    assert r.status_code == 200 and r.json() == a


def test_write_scope_does_everything(svc_auth):
    h = bearer(WRITE)
    r = post_json(svc_auth, CREATE, new_body(), h)
    assert r.status_code == 201
    p = r.headers["Location"]
    assert svc_auth.get(p, headers=h).status_code == 200
    assert post_json(svc_auth, p, {"status": "inaktiv"}, h, method="PATCH").status_code == 200
    assert svc_auth.request("DELETE", p, headers=h).status_code == 204
    assert svc_auth.get(UNITS, headers=h).status_code == 200


def test_auth_comes_after_routing_and_before_the_body(svc_auth):
    # unknown paths and methods are answered as such; a bad body without a token is a 401
    assert_full_problem(svc_auth.get("/api/v1/nope"), 404)
    assert_full_problem(svc_auth.request("DELETE", LIST), 405)
    r = svc_auth.request("POST", CREATE, data=b"{", headers={"Content-Type": "text/plain"})
    _assert_denied(r, 401, CREATE)


def test_operations_endpoints_are_open(svc_auth):
    for path in ("/health", "/ready", "/metrics", "/openapi.json"):
        assert svc_auth.get(path).status_code == 200, path
