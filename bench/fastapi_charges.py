"""The FastAPI + SQLite equivalent of lotmesh-charges that bench/services.sh measures against.

Written the way the FastAPI documentation and the seed (../shared/seed, section 3) write a
service: pydantic models for the body and the response (`response_model`), plain `def`
path operations for a blocking database library (FastAPI runs them on its thread pool, as its
docs advise for sqlite3), one SQLite connection per thread. The contract of the three
endpoints bench/services.sh measures is lotmesh-charges' (DESIGN 3.2, services/charges):

  GET  /api/v1/charge/{id}      200 + ETag, 404 problem, 400 for a non-positive id
  GET  /api/v1/charges          FEFO order (MHD ascending, missing last, then id), filters
                                artikel_id, status, charge_nummer, mhd_before, mhd_after,
                                sort=fefo|id, limit 1..500 (50), offset; unknown parameters 400;
                                X-Total-Count and Link headers
  POST /api/v1/charge/create    201 + Location + ETag; the same rules: unknown and read-only
                                fields refused, menge > 0, finite, <= 1e12, ids >= 1, RFC 3339
                                dates (trimmed), MHD not before the production date and
                                defaulted from the article's shelf life, charge_nummer 1..64
                                characters, unique (409), generated CH-YYYY-NNNNNN when absent,
                                status aktiv|gesperrt on create, bemerkungen <= 2000; the
                                article must exist and be aktiv and the unit exist (422)

Durability as lotmesh's: WAL, synchronous=FULL, one transaction (BEGIN IMMEDIATE ... COMMIT)
per create, answered after its commit. Differences, all in FastAPI's favour: the article and
unit are checked against local tables (`artikel`, `einheit`, filled by `init`), where
lotmesh-charges asks the articles service over HTTP on every create and records the answer
in its replica tables in the same transaction; no Idempotency-Key (the benchmark sends none);
no service-token check (lotmesh verifies one per request, from a per-thread cache).

  python3 fastapi_charges.py init DB REFS.json     create the schema, load units and articles
  CHARGES_DB=DB uvicorn fastapi_charges:app ...    serve (GET /health for readiness)

DB is a SQLite file or a PostgreSQL URL (postgresql://…): then psycopg2 (Debian's
python3-psycopg2), one connection per thread, the same statements (BEGIN … COMMIT per create,
synchronous_commit on: the durability of lotmesh on PostgreSQL).

Debian bookworm: python3-fastapi 0.92, python3-pydantic 1.10, python3-uvicorn 0.17 (run with
/usr/bin/python3: a pyenv python on PATH does not see Debian's packages).
"""
import json
import math
import os
import sqlite3
import sys
import threading
import time
from typing import List, Optional, Union

from fastapi import FastAPI, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Extra, StrictFloat, StrictInt, conint, constr, root_validator, validator

DB = os.environ.get("CHARGES_DB", "charges-fastapi.db")
PG = DB.startswith("postgres")
STATUSES = ("aktiv", "gesperrt", "verbraucht", "abgelaufen")
MIN_TIME_MS = -62135596800000  # 0001-01-01T00:00:00Z
MAX_TIME_MS = 253402300799999  # 9999-12-31T23:59:59.999Z

SCHEMA = """
CREATE TABLE IF NOT EXISTS charge (
 id INTEGER PRIMARY KEY,
 artikel_id INTEGER NOT NULL,
 menge REAL NOT NULL CHECK (menge > 0),
 einheit_id INTEGER NOT NULL,
 herstellungsdatum TEXT NOT NULL,
 herstellungsdatum_ms INTEGER NOT NULL,
 mindesthaltbarkeitsdatum TEXT,
 mindesthaltbarkeitsdatum_ms INTEGER,
 charge_nummer TEXT NOT NULL UNIQUE,
 status TEXT NOT NULL DEFAULT 'aktiv'
  CHECK (status IN ('aktiv','gesperrt','verbraucht','abgelaufen')),
 bemerkungen TEXT,
 version INTEGER NOT NULL DEFAULT 1,
 erstellt_am TEXT NOT NULL,
 geaendert_am TEXT,
 CHECK (mindesthaltbarkeitsdatum_ms IS NULL OR mindesthaltbarkeitsdatum_ms >= herstellungsdatum_ms));
CREATE INDEX IF NOT EXISTS charge_artikel ON charge(artikel_id);
CREATE INDEX IF NOT EXISTS charge_fefo ON charge(mindesthaltbarkeitsdatum_ms IS NULL,
 mindesthaltbarkeitsdatum_ms, id);
CREATE INDEX IF NOT EXISTS charge_status ON charge(status);
CREATE TABLE IF NOT EXISTS nummernkreis (jahr INTEGER PRIMARY KEY, naechste INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS einheit (id INTEGER PRIMARY KEY, kuerzel TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS artikel (id INTEGER PRIMARY KEY, artikelnummer TEXT NOT NULL,
 einheit_id INTEGER NOT NULL, mindesthaltbarkeit_tage INTEGER, status TEXT NOT NULL);
"""

COLS = ("id, artikel_id, menge, einheit_id, herstellungsdatum, mindesthaltbarkeitsdatum,"
        " charge_nummer, status, bemerkungen, erstellt_am, geaendert_am, version")
LIST_WHERE = ("WHERE (?1 IS NULL OR artikel_id = ?1) AND (?2 IS NULL OR status = ?2)"
              " AND (?3 IS NULL OR charge_nummer = ?3) AND (?4 IS NULL OR mindesthaltbarkeitsdatum_ms < ?4)"
              " AND (?5 IS NULL OR mindesthaltbarkeitsdatum_ms > ?5) ")


# ---- RFC 3339, as lotmesh's timefmt.c -----------------------------------------------------

def _days_from_civil(y, m, d):
    y -= m <= 2
    era = (y if y >= 0 else y - 399) // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def _dim(y, m):
    if m == 2:
        return 29 if (y % 4 == 0 and y % 100 != 0) or y % 400 == 0 else 28
    return (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)[m - 1]


def _num(s, i, n):
    part = s[i:i + n]
    if len(part) != n or not part.isascii() or not part.isdigit():
        raise ValueError
    return int(part)


def parse_time(s, allow_date=True):
    """epoch ms of an RFC 3339 date-time (or date), or None."""
    try:
        y, mo, d = _num(s, 0, 4), _num(s, 5, 2), _num(s, 8, 2)
        if s[4] != "-" or s[7] != "-" or y < 1 or not 1 <= mo <= 12 or not 1 <= d <= _dim(y, mo):
            return None
        h = mi = sec = ms = off = 0
        p = s[10:]
        if p == "":
            if not allow_date:
                return None
        else:
            if p[0] not in "Tt " or len(p) < 9 or p[3] != ":" or p[6] != ":":
                return None
            h, mi, sec = _num(p, 1, 2), _num(p, 4, 2), _num(p, 7, 2)
            if h > 23 or mi > 59 or sec > 59:
                return None
            p = p[9:]
            if p.startswith("."):
                i = 1
                while i < len(p) and p[i].isascii() and p[i].isdigit():
                    i += 1
                digits = p[1:i]
                if not 1 <= len(digits) <= 9:
                    return None
                ms = int((digits + "00")[:3])
                p = p[i:]
            if p in ("Z", "z"):
                pass
            elif len(p) == 6 and p[0] in "+-" and p[3] == ":":
                oh, om = _num(p, 1, 2), _num(p, 4, 2)
                if oh > 23 or om > 59:
                    return None
                off = (oh * 60 + om) * (-1 if p[0] == "-" else 1)
            else:
                return None
        secs = _days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + sec - off * 60
        return secs * 1000 + ms
    except (ValueError, IndexError):
        return None


def format_time(ms):
    ms = min(max(ms, MIN_TIME_MS), MAX_TIME_MS)
    secs, frac = divmod(ms, 1000)
    days, rem = divmod(secs, 86400)
    # civil_from_days (Howard Hinnant)
    z = days + 719468
    era = (z if z >= 0 else z - 146096) // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    y = yoe + era * 400
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + 3 if mp < 10 else mp - 9
    y += m <= 2
    t = f"{y:04d}-{m:02d}-{d:02d}T{rem // 3600:02d}:{rem // 60 % 60:02d}:{rem % 60:02d}"
    return f"{t}.{frac:03d}Z" if frac else t + "Z"


# ---- models ---------------------------------------------------------------------------------

class ChargeCreate(BaseModel):
    artikel_id: conint(strict=True, ge=1, le=9200000000000000000)
    menge: Union[StrictInt, StrictFloat]
    einheit_id: conint(strict=True, ge=1, le=9200000000000000000)
    herstellungsdatum: constr(strict=True, strip_whitespace=True)
    mindesthaltbarkeitsdatum: Optional[constr(strict=True, strip_whitespace=True)] = None
    charge_nummer: Optional[constr(strict=True, strip_whitespace=True, min_length=1, max_length=64)] = None
    status: Optional[constr(strict=True, strip_whitespace=True)] = None
    bemerkungen: Optional[constr(strict=True, strip_whitespace=True, max_length=2000)] = None

    class Config:
        extra = Extra.forbid

    @root_validator(pre=True)
    def no_server_fields(cls, values):
        for f in ("id", "erstellt_am", "geaendert_am"):
            if f in values:
                raise ValueError(f"{f} is set by the server and cannot be written")
        for f in ("charge_nummer", "status"):
            if f in values and values[f] is None:
                raise ValueError(f"{f} must not be null")
        return values

    @validator("menge")
    def menge_positive(cls, v):
        if not math.isfinite(v) or v <= 0 or v > 1e12:
            raise ValueError("must be greater than 0 and at most 1e12")
        return v

    @validator("herstellungsdatum", "mindesthaltbarkeitsdatum")
    def rfc3339(cls, v):
        if v is None:
            return v
        ms = parse_time(v)
        if ms is None:
            raise ValueError("must be an RFC 3339 date or date-time string, e.g. 2026-11-24T08:00:00Z")
        if not MIN_TIME_MS <= ms <= MAX_TIME_MS:
            raise ValueError("must be from 0001-01-01 to 9999-12-31 in UTC")
        return v

    @validator("status")
    def new_status(cls, v):
        if v is not None and v not in ("aktiv", "gesperrt"):
            raise ValueError("a new batch must be aktiv or gesperrt")
        return v

    @validator("mindesthaltbarkeitsdatum")
    def mhd_not_before(cls, v, values):
        hd = values.get("herstellungsdatum")
        if v is not None and hd is not None and parse_time(v) < parse_time(hd):
            raise ValueError("must not be before herstellungsdatum")
        return v


class Charge(BaseModel):
    id: int
    artikel_id: int
    menge: float
    einheit_id: int
    herstellungsdatum: str
    mindesthaltbarkeitsdatum: Optional[str]
    charge_nummer: str
    status: str
    bemerkungen: Optional[str]
    erstellt_am: str
    geaendert_am: Optional[str]


SCHEMA_PG = """
CREATE TABLE IF NOT EXISTS charge (
 id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
 artikel_id bigint NOT NULL,
 menge double precision NOT NULL CHECK (menge > 0),
 einheit_id bigint NOT NULL,
 herstellungsdatum text NOT NULL,
 herstellungsdatum_ms bigint NOT NULL,
 mindesthaltbarkeitsdatum text,
 mindesthaltbarkeitsdatum_ms bigint,
 charge_nummer text NOT NULL UNIQUE,
 status text NOT NULL DEFAULT 'aktiv'
  CHECK (status IN ('aktiv','gesperrt','verbraucht','abgelaufen')),
 bemerkungen text,
 version bigint NOT NULL DEFAULT 1,
 erstellt_am text NOT NULL,
 geaendert_am text,
 CHECK (mindesthaltbarkeitsdatum_ms IS NULL OR mindesthaltbarkeitsdatum_ms >= herstellungsdatum_ms));
CREATE INDEX IF NOT EXISTS charge_artikel ON charge(artikel_id);
CREATE INDEX IF NOT EXISTS charge_fefo ON charge((mindesthaltbarkeitsdatum_ms IS NULL),
 mindesthaltbarkeitsdatum_ms, id);
CREATE INDEX IF NOT EXISTS charge_status ON charge(status);
CREATE TABLE IF NOT EXISTS nummernkreis (jahr bigint PRIMARY KEY, naechste bigint NOT NULL);
CREATE TABLE IF NOT EXISTS einheit (id bigint PRIMARY KEY, kuerzel text NOT NULL);
CREATE TABLE IF NOT EXISTS artikel (id bigint PRIMARY KEY, artikelnummer text NOT NULL,
 einheit_id bigint NOT NULL, mindesthaltbarkeit_tage bigint, status text NOT NULL);
"""


# ---- database -------------------------------------------------------------------------------

_local = threading.local()


class PgConn:
    """The few sqlite3.Connection calls this service makes, on psycopg2: "?N" and "?"
    parameters become pyformat ones, rows are addressable by name and index."""

    def __init__(self, url):
        import psycopg2
        import psycopg2.extras
        self.IntegrityError = psycopg2.IntegrityError
        self.conn = psycopg2.connect(url)
        self.conn.autocommit = True  # BEGIN/COMMIT as written, like isolation_level=None
        self.factory = psycopg2.extras.DictCursor

    @staticmethod
    def _sql(sql, args):
        out, params, n, i = [], {}, 0, 0
        while i < len(sql):
            ch = sql[i]
            if ch == "?":
                j = i + 1
                while j < len(sql) and sql[j].isdigit():
                    j += 1
                k = int(sql[i + 1:j]) if j > i + 1 else n + 1
                n = max(n, k)
                params[f"p{k}"] = args[k - 1]
                out.append(f"%(p{k})s")
                i = j
                continue
            out.append("%%" if ch == "%" else ch)
            i += 1
        return "".join(out), params

    def execute(self, sql, args=()):
        sql = "BEGIN" if sql == "BEGIN IMMEDIATE" else sql
        text, params = self._sql(sql, args)
        cur = self.conn.cursor(cursor_factory=self.factory)
        cur.execute(text, params)
        return cur

    @property
    def in_transaction(self):
        import psycopg2.extensions as ext
        return self.conn.get_transaction_status() != ext.TRANSACTION_STATUS_IDLE


def db():
    conn = getattr(_local, "conn", None)
    if conn is None and PG:
        conn = _local.conn = PgConn(DB)
    if conn is None:
        conn = sqlite3.connect(DB, isolation_level=None, timeout=30, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.row_factory = sqlite3.Row
        _local.conn = conn
    return conn


def row_dict(r):
    d = dict(r)
    d.pop("version", None)
    return d


# ---- problems (RFC 9457, as lotmesh answers) -----------------------------------------------

TITLES = {400: "Bad Request", 404: "Not Found", 409: "Conflict", 422: "Validation failed",
          500: "Internal Server Error"}


def problem(request, status, detail, errors=None, ptype=None):
    doc = {"type": ptype or "about:blank", "title": TITLES.get(status, "Error"), "status": status,
           "detail": detail, "instance": request.url.path}
    if errors:
        doc["errors"] = errors
    return JSONResponse(doc, status_code=status, media_type="application/problem+json")


app = FastAPI(title="Chargen API (FastAPI + SQLite, bench/)", version="1.0.0")


@app.exception_handler(RequestValidationError)
async def validation_problem(request: Request, exc: RequestValidationError):
    errors, where = [], set()
    for e in exc.errors():
        loc = [str(x) for x in e.get("loc", ())]
        where.add(loc[0] if loc else "body")
        errors.append({"field": ".".join(loc[1:]) or loc[0] if loc else "", "message": e.get("msg", "")})
    if "body" in where:
        return problem(request, 422, "the request has invalid fields", errors,
                       "urn:lotmesh:problem:validation")
    return problem(request, 400, "invalid path or query parameters", errors)


@app.get("/health")
def health():
    return {"status": "ok"}


@app.get("/api/v1/charge/{id}", response_model=Charge)
def get_charge(response: Response, request: Request,
               id: conint(ge=1) = Path(...)):  # noqa: A002 - the seed's name
    r = db().execute(f"SELECT {COLS} FROM charge WHERE id = ?", (id,)).fetchone()
    if r is None:
        return problem(request, 404, f"no batch with id {id}")
    response.headers["ETag"] = f'"{r["version"]}"'
    return row_dict(r)


LIST_PARAMS = {"artikel_id", "status", "charge_nummer", "mhd_before", "mhd_after", "sort", "limit",
               "offset"}


@app.get("/api/v1/charges", response_model=List[Charge])
def list_charges(request: Request, response: Response,
                 artikel_id: Optional[conint(ge=1, le=1 << 62)] = None,
                 status: Optional[str] = None,
                 charge_nummer: Optional[constr(min_length=1, max_length=64)] = None,
                 mhd_before: Optional[str] = None, mhd_after: Optional[str] = None,
                 sort: str = Query("fefo", regex="^(fefo|id)$"),
                 limit: conint(ge=1, le=500) = 50, offset: conint(ge=0, le=1 << 40) = 0):
    unknown = [k for k in request.query_params if k not in LIST_PARAMS]
    if unknown:
        return problem(request, 400, f"unknown query parameter '{unknown[0][:64]}'; known: "
                       + ", ".join(sorted(LIST_PARAMS)))
    errors = []
    if status is not None and status not in STATUSES:
        errors.append({"field": "status", "message": "must be one of: " + ", ".join(STATUSES)})
    before = parse_time(mhd_before) if mhd_before is not None else None
    after = parse_time(mhd_after) if mhd_after is not None else None
    if mhd_before is not None and before is None:
        errors.append({"field": "mhd_before", "message": "must be an RFC 3339 date or date-time"})
    if mhd_after is not None and after is None:
        errors.append({"field": "mhd_after", "message": "must be an RFC 3339 date or date-time"})
    if errors:
        return problem(request, 400, "invalid query parameters", errors)
    args = (artikel_id, status, charge_nummer, before, after, limit, offset)
    c = db()
    total = c.execute("SELECT count(*) FROM charge " + LIST_WHERE, args[:5]).fetchone()[0]
    order = ("ORDER BY mindesthaltbarkeitsdatum_ms IS NULL, mindesthaltbarkeitsdatum_ms, id"
             if sort == "fefo" else "ORDER BY id")
    rows = c.execute(f"SELECT {COLS} FROM charge {LIST_WHERE}{order} LIMIT ?6 OFFSET ?7",
                     args).fetchall()
    response.headers["X-Total-Count"] = str(total)
    base = request.url.path + "?" + "".join(f"{k}={v}&" for k, v in request.query_params.items()
                                            if k not in ("limit", "offset"))
    links = []
    if offset + limit < total:
        links.append(f'<{base}limit={limit}&offset={offset + limit}>; rel="next"')
    if offset > 0:
        links.append(f'<{base}limit={limit}&offset={max(offset - limit, 0)}>; rel="prev"')
    if links:
        response.headers["Link"] = ", ".join(links)
    return [row_dict(r) for r in rows]


@app.post("/api/v1/charge/create", response_model=Charge, status_code=201)
def create_charge(charge: ChargeCreate, request: Request, response: Response):
    c = db()
    c.execute("BEGIN IMMEDIATE")
    try:
        art = c.execute("SELECT status, mindesthaltbarkeit_tage FROM artikel WHERE id = ?",
                        (charge.artikel_id,)).fetchone()
        unit = c.execute("SELECT 1 FROM einheit WHERE id = ?", (charge.einheit_id,)).fetchone()
        errors = []
        if art is None:
            errors.append({"field": "artikel_id", "message": f"no article with id {charge.artikel_id}"})
        elif art["status"] != "aktiv":
            errors.append({"field": "artikel_id",
                           "message": f"article {charge.artikel_id} is {art['status']}: no new batches"})
        if unit is None:
            errors.append({"field": "einheit_id", "message": f"no unit with id {charge.einheit_id}"})
        if errors:
            c.execute("ROLLBACK")
            return problem(request, 422, "the request has invalid fields", errors,
                           "urn:lotmesh:problem:validation")
        hd = parse_time(charge.herstellungsdatum)
        mhd = parse_time(charge.mindesthaltbarkeitsdatum) if charge.mindesthaltbarkeitsdatum else None
        if mhd is None and art["mindesthaltbarkeit_tage"] is not None:
            days = art["mindesthaltbarkeit_tage"]
            if days > (MAX_TIME_MS - hd) // 86400000:
                c.execute("ROLLBACK")
                return problem(request, 422, "the request has invalid fields", [
                    {"field": "mindesthaltbarkeitsdatum",
                     "message": "herstellungsdatum plus the article's shelf life is after 9999-12-31"}],
                    "urn:lotmesh:problem:validation")
            mhd = hd + days * 86400000
        nummer = charge.charge_nummer
        if nummer is None:
            jahr = time.gmtime().tm_year
            while True:
                n = c.execute("INSERT INTO nummernkreis (jahr, naechste) VALUES (?1, 2)"
                              " ON CONFLICT(jahr) DO UPDATE SET naechste = nummernkreis.naechste + 1"
                              " RETURNING naechste - 1", (jahr,)).fetchone()[0]
                nummer = f"CH-{jahr:04d}-{n:06d}"
                if c.execute("SELECT 1 FROM charge WHERE charge_nummer = ?", (nummer,)).fetchone() is None:
                    break
        integrity = c.IntegrityError if PG else sqlite3.IntegrityError
        try:
            cur = c.execute(
                "INSERT INTO charge (artikel_id, menge, einheit_id, herstellungsdatum,"
                " herstellungsdatum_ms, mindesthaltbarkeitsdatum, mindesthaltbarkeitsdatum_ms,"
                " charge_nummer, status, bemerkungen, erstellt_am) VALUES (?,?,?,?,?,?,?,?,?,?,?)"
                " RETURNING id",
                (charge.artikel_id, float(charge.menge), charge.einheit_id, format_time(hd), hd,
                 format_time(mhd) if mhd is not None else None, mhd, nummer,
                 charge.status or "aktiv", charge.bemerkungen, format_time(int(time.time() * 1000))))
        except integrity:
            c.execute("ROLLBACK")
            return problem(request, 409, "charge_nummer must be unique", [
                {"field": "charge_nummer", "message": f"a batch with charge_nummer '{nummer}' already exists"}],
                "urn:lotmesh:problem:conflict")
        r = c.execute(f"SELECT {COLS} FROM charge WHERE id = ?", (cur.fetchone()[0],)).fetchone()
        c.execute("COMMIT")
    except BaseException:
        if c.in_transaction:
            c.execute("ROLLBACK")
        raise
    response.headers["Location"] = f"/api/v1/charge/{r['id']}"
    response.headers["ETag"] = f'"{r["version"]}"'
    return row_dict(r)


def init_pg(url, refs):
    c = PgConn(url)
    for stmt in SCHEMA_PG.split(";"):
        if stmt.strip():
            c.execute(stmt)
    c.execute("BEGIN")
    for u in refs["units"]:
        c.execute("INSERT INTO einheit (id, kuerzel) VALUES (?, ?) ON CONFLICT (id) DO UPDATE"
                  " SET kuerzel = excluded.kuerzel", (u["id"], u["kuerzel"]))
    for a in refs["articles"]:
        c.execute("INSERT INTO artikel (id, artikelnummer, einheit_id, mindesthaltbarkeit_tage,"
                  " status) VALUES (?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET"
                  " artikelnummer = excluded.artikelnummer, einheit_id = excluded.einheit_id,"
                  " mindesthaltbarkeit_tage = excluded.mindesthaltbarkeit_tage,"
                  " status = excluded.status",
                  (a["id"], a["artikelnummer"], a["einheit_id"], a["mindesthaltbarkeit_tage"],
                   a.get("status", "aktiv")))
    c.execute("COMMIT")
    c.conn.close()


def init(path, refs_file):
    with open(refs_file) as f:
        refs = json.load(f)
    if path.startswith("postgres"):
        init_pg(path, refs)
        return
    c = sqlite3.connect(path, isolation_level=None)
    c.execute("PRAGMA journal_mode=WAL")
    c.executescript(SCHEMA)
    c.execute("BEGIN")
    for u in refs["units"]:
        c.execute("INSERT OR REPLACE INTO einheit (id, kuerzel) VALUES (?, ?)", (u["id"], u["kuerzel"]))
    for a in refs["articles"]:
        c.execute("INSERT OR REPLACE INTO artikel (id, artikelnummer, einheit_id,"
                  " mindesthaltbarkeit_tage, status) VALUES (?, ?, ?, ?, ?)",
                  (a["id"], a["artikelnummer"], a["einheit_id"], a["mindesthaltbarkeit_tage"],
                   a.get("status", "aktiv")))
    c.execute("COMMIT")
    c.close()


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "init":
        init(sys.argv[2], sys.argv[3])
    else:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
