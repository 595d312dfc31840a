#!/usr/bin/env python3
"""Helpers for bench/services.sh and bench/gateway.sh, standard library only, loopback only.
Builds on bench/benchlib.py (imported: its wrk parsing, units, ports and time-to-ready).

  stacklib.py token SECRET AUD [SCOPE]       an HS256 service token as the gateway mints them
                                             (iss gateway, sub bench, 1 h), for the services
  stacklib.py refs FILE                      write the reference data (8 units as lotmesh's
                                             articles migration seeds them, 20 articles)
  stacklib.py seed-articles PORT TOKEN REFS  create the articles of REFS in lotmesh-articles
  stacklib.py seed-charges PORT TOKEN REFS N CONNS
                                             create N batches (the same N on every server),
                                             CONNS at a time; fails unless each is a 201
  stacklib.py gw-token PORT DEV_CLIENT_JSON  an access token from the lotmesh gateway's
                                             POST /auth/token (client credentials, Basic)
  stacklib.py json-get FILE KEY              print one string member of a JSON file
  stacklib.py wait PORT PATH SECONDS [H: V]...  until GET PATH answers 200
  stacklib.py get PORT PATH [H: V]...        print "status<TAB>content-type<TAB>body"
  stacklib.py same-charges PORT_A PORT_B TOKEN REFS
                                             check both services answer the measured requests
                                             alike (status, type, headers, body); prints a line
  stacklib.py same-proxied PATH PORT:NAME... [-- H: V...]
                                             check every proxy relays the same status and body
  stacklib.py svc-report META WRKDIR         markdown report of bench/services.sh
  stacklib.py gw-report META WRKDIR          markdown report of bench/gateway.sh
"""
import base64
import hashlib
import hmac
import http.client
import json
import os
import statistics
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402  (bench/benchlib.py: parse_wrk, msf, mb, NOISY, OTHERS_BUSY, ...)

med = statistics.median


# ---- HTTP with headers ------------------------------------------------------------------------

def parse_headers(args):
    out = {}
    for a in args:
        k, _, v = a.partition(":")
        out[k.strip()] = v.strip()
    return out


def request(port, method, path, headers=None, body=None, conn=None, timeout=5.0):
    """One request; returns (status, headers dict lower-case, body bytes). Reuses conn if given."""
    own = conn is None
    c = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        data = json.dumps(body).encode() if body is not None and not isinstance(body, bytes) else body
        h = dict(headers or {})
        if data is not None:
            h.setdefault("Content-Type", "application/json")
        c.request(method, path, body=data, headers=h)
        r = c.getresponse()
        payload = r.read()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, payload
    finally:
        if own:
            c.close()


def cmd_wait(port, path, seconds, headers):
    deadline = time.monotonic() + seconds
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            st, _, body = request(port, "GET", path, headers, timeout=1.0)
            if st == 200:
                return 0
            last = f"{st} {body[:200]!r}"
        except (OSError, http.client.HTTPException) as e:
            last = str(e)
        time.sleep(0.02)
    print(f"wait: GET {path} on {port} did not answer 200 within {seconds} s ({last})", file=sys.stderr)
    return 1


def cmd_get(port, path, headers):
    st, h, body = request(port, "GET", path, headers)
    print(f"{st}\t{h.get('content-type', '')}\t{body.decode('utf-8', 'replace')}")
    return 0


# ---- tokens and data ----------------------------------------------------------------------------

def b64url(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def mint(secret, aud, scope="read write", sub="bench", iss="gateway", ttl=3600):
    now = int(time.time())
    head = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    body = b64url(json.dumps({"iss": iss, "aud": aud, "sub": sub, "scope": scope, "iat": now,
                              "exp": now + ttl}, separators=(",", ":")).encode())
    sig = b64url(hmac.new(secret.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest())
    return f"{head}.{body}.{sig}"


UNITS = ["kg", "g", "t", "l", "ml", "m", "Stk", "Pkg"]  # lotmesh-articles' migration 1, ids 1..8
N_ARTICLES = 20


def make_refs():
    arts = []
    for i in range(1, N_ARTICLES + 1):
        arts.append({"id": i, "artikelnummer": f"A-{i:04d}", "bezeichnung": f"Artikel {i}",
                     "einheit_id": (i - 1) % len(UNITS) + 1,
                     "mindesthaltbarkeit_tage": None if i % 5 == 0 else 30 * (i % 12 + 1),
                     "status": "aktiv"})
    return {"units": [{"id": i + 1, "kuerzel": k} for i, k in enumerate(UNITS)], "articles": arts}


def charge_body(i, refs):
    """The i-th seeded batch (i from 1): the same on every server."""
    a = refs["articles"][(i - 1) % len(refs["articles"])]
    day = (i * 7) % 365
    hd_ms = (20454 + day) * 86400000  # 2026-01-01 + day
    y, m, d = time.gmtime(hd_ms / 1000)[:3]
    b = {"artikel_id": a["id"], "menge": 1 + (i % 97) * 0.25, "einheit_id": a["einheit_id"],
         "herstellungsdatum": f"{y:04d}-{m:02d}-{d:02d}" if i % 2 else
         f"{y:04d}-{m:02d}-{d:02d}T{i % 24:02d}:{i % 60:02d}:00Z",
         "charge_nummer": f"S-{i:06d}"}
    if i % 3 == 0:
        mhd = time.gmtime(hd_ms / 1000 + 86400 * (30 + i % 200))
        b["mindesthaltbarkeitsdatum"] = f"{mhd.tm_year:04d}-{mhd.tm_mon:02d}-{mhd.tm_mday:02d}T00:00:00Z"
    if i % 4 == 0:
        b["bemerkungen"] = f"Seed-Charge {i}"
    return b


def cmd_seed_articles(port, token, refs_file):
    refs = json.load(open(refs_file))
    h = {"Authorization": f"Bearer {token}"}
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    for a in refs["articles"]:
        body = {k: a[k] for k in ("artikelnummer", "bezeichnung", "einheit_id",
                                  "mindesthaltbarkeit_tage")}
        st, _, resp = request(port, "POST", "/api/v1/article/create", h, body, conn)
        got = json.loads(resp)
        if st != 201 or got.get("id") != a["id"]:
            raise SystemExit(f"seed-articles: article {a['id']}: {st} {resp[:300]!r}")
    conn.close()
    return 0


def cmd_seed_charges(port, token, refs_file, n, conns):
    refs = json.load(open(refs_file))
    h = {"Authorization": f"Bearer {token}"}
    nxt = iter(range(1, n + 1))
    lock = threading.Lock()
    failures = []

    def worker():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        while not failures:
            with lock:
                i = next(nxt, None)
            if i is None:
                break
            st, _, resp = request(port, "POST", "/api/v1/charge/create", h, charge_body(i, refs), conn)
            if st != 201:
                failures.append(f"batch {i}: {st} {resp[:300]!r}")
        conn.close()

    t0 = time.monotonic()
    ts = [threading.Thread(target=worker) for _ in range(conns)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    if failures:
        raise SystemExit("seed-charges: " + failures[0])
    print(f"{n} {time.monotonic() - t0:.2f}")
    return 0


def cmd_gw_token(port, dev_client):
    dev = json.load(open(dev_client))
    basic = base64.b64encode(f"{dev['client_id']}:{dev['client_secret']}".encode()).decode()
    st, _, body = request(port, "POST", "/auth/token",
                          {"Authorization": f"Basic {basic}",
                           "Content-Type": "application/x-www-form-urlencoded"},
                          b"grant_type=client_credentials", timeout=30)
    if st != 200:
        raise SystemExit(f"gw-token: {st} {body[:300]!r}")
    print(json.loads(body)["access_token"])
    return 0


# ---- same contract? -----------------------------------------------------------------------------

VOLATILE = ("id", "erstellt_am", "geaendert_am")


def strip(doc):
    if isinstance(doc, list):
        return [strip(d) for d in doc]
    if isinstance(doc, dict):
        return {k: v for k, v in doc.items() if k not in VOLATILE}
    return doc


def cmd_same_charges(port_a, port_b, token, refs_file):
    """Both services answer the measured requests and their error cases alike. Ids and server
    timestamps differ (the seeding is concurrent), so rows are compared without them and
    matched by charge_nummer; key order and value types must be equal. (REFS: the reference
    data both were given; the bodies below use article 1..2 and unit 1..2 from it.)"""
    h = {"Authorization": f"Bearer {token}"}
    problems = []

    def both(method, path, body=None, what=None):
        ra = request(port_a, method, path, h, body)
        rb = request(port_b, method, path, h, body)
        return ra, rb

    def check(label, ra, rb, headers=()):
        (sa, ha, ba), (sb, hb, bb) = ra, rb
        if sa != sb:
            problems.append(f"{label}: status {sa} vs {sb}")
            return None, None
        ta, tb = ha.get("content-type", ""), hb.get("content-type", "")
        if ta.split(";")[0] != tb.split(";")[0]:
            problems.append(f"{label}: Content-Type {ta} vs {tb}")
        for k in headers:
            if (k in ha) != (k in hb):
                problems.append(f"{label}: header {k} only on one")
        return json.loads(ba or b"null"), json.loads(bb or b"null")

    # every seeded batch by charge_nummer: same fields, key order, values and types
    for i in (1, 2, 3, 4, 5, 6, 12, 60):
        ja, jb = check(f"charge_nummer=S-{i:06d}",
                       *both("GET", f"/api/v1/charges?charge_nummer=S-{i:06d}"), ("x-total-count",))
        if ja is None:
            continue
        if json.dumps(strip(ja)) != json.dumps(strip(jb)) or len(ja) != 1:
            problems.append(f"batch S-{i:06d}: {json.dumps(strip(ja))[:300]} vs {json.dumps(strip(jb))[:300]}")
        elif list(ja[0]) != list(jb[0]):
            problems.append(f"batch S-{i:06d}: key order {list(ja[0])} vs {list(jb[0])}")
    # by id: ETag, same keys; the list: same order of charge_nummer (FEFO), totals, Link
    ja, jb = check("GET /api/v1/charge/1", *both("GET", "/api/v1/charge/1"), ("etag",))
    if ja is not None and list(ja) != list(jb):
        problems.append(f"GET by id: keys {list(ja)} vs {list(jb)}")
    ra, rb = both("GET", "/api/v1/charges?limit=50")
    ja, jb = check("GET /api/v1/charges?limit=50", ra, rb, ("x-total-count", "link"))
    if ja is not None:
        # FEFO: the same sequence of MHDs; batches with the same MHD come in id order, and ids
        # follow the (concurrent) seeding, so within a tie the rows are compared as sets, and
        # the page's last tie group, which the limit may cut anywhere, not at all
        mhd = lambda xs: [x["mindesthaltbarkeitsdatum"] for x in xs]
        if mhd(ja) != mhd(jb):
            problems.append("list: different FEFO order")
        else:
            groups_a, groups_b = {}, {}
            for xs, g in ((ja, groups_a), (jb, groups_b)):
                for x in strip(xs):
                    g.setdefault(x["mindesthaltbarkeitsdatum"], set()).add(json.dumps(x))
            last = ja[-1]["mindesthaltbarkeitsdatum"] if ja else None
            if any(groups_a[k] != groups_b[k] for k in groups_a if k != last):
                problems.append("list: different rows")
        if ra[1].get("x-total-count") != rb[1].get("x-total-count"):
            problems.append(f"list: X-Total-Count {ra[1].get('x-total-count')} vs {rb[1].get('x-total-count')}")
        if ra[1].get("link") != rb[1].get("link"):
            problems.append(f"list: Link {ra[1].get('link')} vs {rb[1].get('link')}")
    sizes = (len(ra[2]), len(rb[2]))
    # errors: same status (and problem+json) for what the rules refuse
    good = {"artikel_id": 1, "menge": 12.5, "einheit_id": 1, "herstellungsdatum": "2026-11-24T08:00:00Z"}
    cases = [
        ("missing herstellungsdatum", {k: v for k, v in good.items() if k != "herstellungsdatum"}),
        ("unknown field", dict(good, farbe="rot")),
        ("read-only id", dict(good, id=5)),
        ("menge 0", dict(good, menge=0)),
        ("menge as string", dict(good, menge="1")),
        ("artikel_id 0", dict(good, artikel_id=0)),
        ("bad date", dict(good, herstellungsdatum="2026-02-30")),
        ("MHD before", dict(good, mindesthaltbarkeitsdatum="2026-11-23")),
        ("status verbraucht", dict(good, status="verbraucht")),
        ("unknown article", dict(good, artikel_id=999)),
        ("unknown unit", dict(good, einheit_id=999)),
        ("duplicate charge_nummer", dict(good, charge_nummer="S-000001")),
        ("charge_nummer 65 chars", dict(good, charge_nummer="X" * 65)),
    ]
    for label, body in cases:
        check(f"create, {label}", *both("POST", "/api/v1/charge/create", body))
    for label, path in (("id 0", "/api/v1/charge/0"), ("id abc", "/api/v1/charge/abc"),
                        ("no such id", "/api/v1/charge/99999999"),
                        ("limit 501", "/api/v1/charges?limit=501"),
                        ("unknown parameter", "/api/v1/charges?farbe=rot"),
                        ("status bogus", "/api/v1/charges?status=bogus")):
        check(f"GET, {label}", *both("GET", path))
    # a create without charge_nummer and MHD: generated number, MHD from the shelf life
    ra, rb = both("POST", "/api/v1/charge/create", dict(good, artikel_id=2, einheit_id=2))
    ja, jb = check("create, defaults", ra, rb, ("location", "etag"))
    if ja is not None:
        for k in ("mindesthaltbarkeitsdatum", "status", "menge", "herstellungsdatum"):
            if ja.get(k) != jb.get(k):
                problems.append(f"create defaults: {k} {ja.get(k)!r} vs {jb.get(k)!r}")
        if not (str(ja.get("charge_nummer", "")).startswith("CH-") and
                str(jb.get("charge_nummer", "")).startswith("CH-")):
            problems.append(f"create defaults: charge_nummer {ja.get('charge_nummer')} vs {jb.get('charge_nummer')}")
    n_cases = 8 + 2 + len(cases) + 6 + 1
    if problems:
        print(f"DIFFER ({len(problems)} of {n_cases} checks): " + "; ".join(problems[:6]))
        return 1
    print(f"{n_cases} requests answered alike (status, Content-Type, headers, bodies without "
          f"ids and server timestamps); list?limit=50 body {sizes[0]} vs {sizes[1]} bytes")
    return 0


def cmd_same_proxied(path, targets, headers):
    ref = None
    out = []
    for t in targets:
        port, _, name = t.partition(":")
        st, h, body = request(int(port), "GET", path, headers)
        key = (st, h.get("content-type", ""), body)
        if ref is None:
            ref = key
        elif key != ref:
            print(f"DIFFER: {name} answered {st} {h.get('content-type', '')} {body[:200]!r}, "
                  f"expected {ref[0]} {ref[1]} {ref[2][:200]!r}")
            return 1
        out.append(name)
    print(f"{ref[0]}\t{ref[1]}\t{ref[2].decode('utf-8', 'replace')}")
    return 0


# ---- reports ----------------------------------------------------------------------------------

def read_meta(path):
    meta = {}
    with open(path) as f:
        for line in f:
            k, _, v = line.rstrip("\n").partition("=")
            meta[k] = v
    return meta


def read_runs(meta, wrkdir):
    """(case, server) -> [(round, result)], with CPU, other load and calibration."""
    runs = {}
    nproc = int(meta.get("nproc", "1"))
    for name in sorted(os.listdir(wrkdir)):
        case, server, rnd = name[:-4].split(",")
        with open(os.path.join(wrkdir, name)) as f:
            res = benchlib.parse_wrk(f.read())
        key = f"{case},{server},{rnd}"
        dur = float(meta.get(f"duration_{case}", meta.get("duration", "1")))
        for m, field in (("cpu", "cpu_us_req"), ("cpu2", "cpu2_us_req")):
            v = meta.get(f"{m}_{key}")
            res[field] = int(v) / 1e3 / res["requests"] if v and res["requests"] else None
        v = meta.get(f"cpu_{key}")
        res["cpu_pct"] = int(v) / 1e7 / dur if v else None
        v = meta.get(f"others_{key}")
        res["others_pct"] = max(int(v), 0) / 10 / dur / nproc if v else None
        v = meta.get(f"calib_{key}")
        res["calib"] = int(v) if v else None
        runs.setdefault((case, server), []).append((int(rnd), res))
    return runs


def header_common(p, meta, runs):
    nproc = int(meta.get("nproc", "1"))
    p(f"- {meta['cpu']}; kernel {meta['kernel']}; {meta['wrk']}; load average before the run "
      f"{meta.get('loadavg', '?')}")
    others = sorted(r["others_pct"] for rs in runs.values() for _, r in rs if r["others_pct"] is not None)
    if others:
        busy = sum(1 for o in others if o > benchlib.OTHERS_BUSY)
        p(f"- other work on the machine during the rounds (all busy CPU minus the measured "
          f"processes and wrk): median {med(others):.0f}%, max {others[-1]:.0f}% of all "
          f"{nproc} cores; {busy} of {len(others)} rounds over {benchlib.OTHERS_BUSY:.0f}% (⚠ below)")
    calibs = sorted(r["calib"] for rs in runs.values() for _, r in rs if r["calib"])
    if calibs:
        slow = sum(1 for c in calibs if c > benchlib.NOISY * calibs[0])
        p(f"- host noise: the fixed CPU loop before each round took {calibs[0]}–{calibs[-1]} ms "
          f"(median {med(calibs):.0f}); {slow} of {len(calibs)} rounds over "
          f"{benchlib.NOISY:.2f}× the best (⚠ below)")
    return calibs[0] if calibs else None


def fmt_round_flags(r, fastest):
    slow = oth = "-"
    if r["calib"] and fastest:
        f = r["calib"] / fastest
        slow = f"{f:.2f}{' ⚠' if f > benchlib.NOISY else ''}"
    if r["others_pct"] is not None:
        oth = f"{r['others_pct']:.0f}%{' ⚠' if r['others_pct'] > benchlib.OTHERS_BUSY else ''}"
    return oth, slow


def us(x):
    return f"{x:.1f} µs" if x is not None else "-"


def medof(rs, k):
    v = [r[k] for r in rs if r.get(k) is not None]
    return med(v) if v else None


SVC_CASES = [("get", "GET /api/v1/charge/{id}", 20), ("list", "GET /api/v1/charges?limit=50", 20),
             ("create", "POST /api/v1/charge/create", 10),
             ("mixed", "GET by id, every 10th a create", 0)]


def cmd_svc_report(meta_path, wrkdir):
    meta = read_meta(meta_path)
    runs = read_runs(meta, wrkdir)
    out = []
    p = out.append
    dbname = "PostgreSQL" if meta.get("db") == "pg" else "SQLite"
    p(f"# lotmesh services vs FastAPI, both on {dbname}, {meta['date']}")
    p("")
    p(f"- lotmesh `{meta['commit']}`, build {meta['build']}; FastAPI {meta.get('fastapi', '?')}")
    fastest = header_common(p, meta, runs)
    pinned = meta.get("pin") == "1"
    where = ("pinned to core 0 (lotmesh-articles too), wrk pinned to core 1"
             if pinned else "nothing pinned, wrk on the same cores")
    p(f"- both services with {meta['workers']} workers on {meta['nproc']} cores, access logs off, "
      f"{where}; wrk -t{meta['threads']} -c{meta['conns']} --latency --timeout 10s; per endpoint and server {meta['warmup']} s warm-up then {meta['rounds']} rounds "
      f"of {meta['duration']} s, the servers taking turns (the first alternating by round); "
      "figures are medians of the rounds")
    p(f"- data: {meta['seed_n']} batches of {meta['n_articles']} articles and 8 units, created "
      f"through each service's own API before the run (lotmesh {meta.get('seed_lotmesh', '?')} s, "
      f"FastAPI {meta.get('seed_fastapi', '?')} s with {meta['seed_conns']} connections); reads are "
      "measured before creates, so both read the same rows")
    p(f"- same contract, checked before the run: {meta.get('same', '?')}")
    if meta.get("db") == "pg":
        p(f"- database: PostgreSQL {meta.get('postgres', '?')} on 127.0.0.1 (fsync and "
          "synchronous_commit on), one database per service; lotmesh's writer: "
          f"{meta.get('write_round_trips_per_job', '?')} round trips and "
          f"{meta.get('write_statements_per_job', '?')} statements per write job, "
          f"{meta.get('write_jobs_per_commit', '?')} jobs per commit (whole run)")
    p(f"- auth: lotmesh with SERVICE_AUTH={meta['auth']} (every request carries a service token, "
      "verified from a per-thread cache); the FastAPI service checks no token")
    cache = meta.get("cache", "?")
    if cache == "none":
        p("- lotmesh response cache off (CACHE_URL=none): every read is a SQLite query on the "
          "reader pool, like FastAPI's")
    else:
        p(f"- lotmesh response cache on (CACHE_URL={cache}, the default): reads by id and lists "
          "are answered from the in-process cache once read, invalidated by every write; the "
          "FastAPI service has no cache. Run with CACHE=none for the database path")
    p("- creates: lotmesh-charges asks lotmesh-articles (running, same machine) for the article "
      "and the unit over HTTP on every create and records the answers in its replica tables in "
      "the create's transaction; its CPU is shown apart (*+ articles*). The FastAPI service "
      "checks a local `artikel`/`einheit` table in its transaction. Both commit durably ("
      + ("PostgreSQL, synchronous_commit on" if meta.get("db") == "pg" else
         "WAL, synchronous=FULL") +
      "); lotmesh group-commits the creates queued meanwhile, FastAPI commits "
      "each create on its own (`BEGIN … COMMIT`). Batch numbers: "
      + ("each create names its own `charge_nummer`" if meta.get("numbers", "given") == "given"
         else "none given: both services number each batch from their yearly series "
              "(NUMBERS=generated)"))
    p(f"- FastAPI served by uvicorn {meta.get('uvicorn', '?')} --workers {meta['workers']} "
      f"({meta.get('uvicorn_impl', '?')}), `def` path operations on its thread pool, "
      "pydantic models for body and response, one "
      + ("psycopg2" if meta.get("db") == "pg" else "sqlite3") + " connection per thread "
      "(bench/fastapi_charges.py)")
    p(f"- run took {meta.get('elapsed', '?')} s")
    p("")
    p("## Requests/s and latency")
    p("")
    p("| endpoint | lotmesh req/s | FastAPI req/s | **ratio** | goal | per-round ratios | "
      "lotmesh p50 | FastAPI p50 | lotmesh p99 | FastAPI p99 | lotmesh CPU/req | FastAPI CPU/req | "
      "**CPU/req FastAPI ÷ lotmesh** |")
    p("|---|--:|--:|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|")
    for case, label, goal in SVC_CASES:
        lm = [r for _, r in sorted(runs.get((case, "lotmesh"), []))]
        fa = [r for _, r in sorted(runs.get((case, "fastapi"), []))]
        if not lm or not fa:
            continue
        lr, fr = med([r["rps"] for r in lm]), med([r["rps"] for r in fa])
        per = [a["rps"] / b["rps"] for a, b in zip(lm, fa)]
        ratio = lr / fr
        lc, fc, lc2 = medof(lm, "cpu_us_req"), medof(fa, "cpu_us_req"), medof(lm, "cpu2_us_req")
        lcs = us(lc) + (f" + {us(lc2)} articles" if lc2 else "")
        cratio = f"**{fc / (lc + (lc2 or 0)):.1f}×**" if lc and fc else "-"
        verdict = (f"> {goal}× {'met' if ratio > goal else 'MISSED'}" if goal else "-")
        p(f"| `{label}` | {lr:,.0f} | {fr:,.0f} | **{ratio:.1f}×** | {verdict} | "
          f"{min(per):.1f}–{max(per):.1f} | "
          f"{benchlib.msf(medof(lm, 'p50'))} | {benchlib.msf(medof(fa, 'p50'))} | "
          f"{benchlib.msf(medof(lm, 'p99'))} | {benchlib.msf(medof(fa, 'p99'))} | {lcs} | {us(fc)} | "
          f"{cratio} |")
    p("")
    p("Ratio: lotmesh/FastAPI of the median req/s. CPU/req: CPU time of the service's processes "
      "during the round (utime + stime from /proc/PID/stat, all threads, kernel time included) "
      "÷ requests wrk counted; for lotmesh's creates the articles service's share is added after "
      "the + and counted in the CPU ratio. wrk, the services and the other sessions' work share "
      "2 cores, so req/s is partly a measure of who got the CPU: the CPU ratio is the steadier "
      "figure of the two (it does not depend on who was the bottleneck).")
    p("")
    p("## Footprint")
    p("")
    p("| process | idle RSS (0.5 s after ready) | bar | time to ready (spawn → first 200 on /health, median; min) | bar | logged `ready in` |")
    p("|---|--:|---|--:|---|--:|")
    for name in ("lotmesh-charges", "lotmesh-articles", "fastapi"):
        rss = meta.get(f"rss_{name}")
        rdy = meta.get(f"ready_{name}")
        if not rss and not rdy:
            continue
        is_lm = name.startswith("lotmesh")
        rs = benchlib.mb(rss) if rss else "-"
        rbar = (f"< 10 MB {'met' if int(rss) < 10 * 1024 else 'MISSED'}" if rss else "") if is_lm else "(reference)"
        if rdy:
            spawn, mn, internal = rdy.split()
            rd = f"{spawn} ms; {mn} ms"
            dbar = f"< 100 ms {'met' if float(spawn) < 100 else 'MISSED'}" if is_lm else "(reference)"
        else:
            rd, dbar, internal = "-", "", "-"
        label = {"fastapi": f"FastAPI (uvicorn, {meta['workers']} workers, all processes)"}.get(
            name, f"{name}, WORKERS={meta['workers']}")
        p(f"| {label} | {rs} | {rbar} | {rd} | {dbar} | {internal + ' ms' if internal != '-' else '-'} |")
    for k in sorted(meta):
        if k.startswith("rss_after_"):
            p(f"| {k[len('rss_after_'):]} after the load | {benchlib.mb(meta[k])} | | | | |")
    p("")
    p("## Every round")
    p("")
    p("| endpoint | server | round | req/s | p50 | p99 | requests | errors | CPU/req | other load | host slowdown |")
    p("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
    for case, label, _ in SVC_CASES:
        for s in ("lotmesh", "fastapi"):
            for rnd, r in sorted(runs.get((case, s), [])):
                oth, slow = fmt_round_flags(r, fastest)
                cpu = us(r["cpu_us_req"]) + (f" + {us(r['cpu2_us_req'])}" if r.get("cpu2_us_req") else "")
                p(f"| {case} | {s} | {rnd} | {r['rps']:,.0f} | {benchlib.msf(r['p50'])} | "
                  f"{benchlib.msf(r['p99'])} | {r['requests']:,} | {r['errors']} | {cpu} | {oth} | {slow} |")
    print("\n".join(out))
    return 0


GW_ORDER = ["lotmesh-key", "lotmesh-traced", "lotmesh-bearer", "nginx", "haproxy", "seed", "direct"]
GW_LABEL = {"lotmesh-key": "lotmesh gateway, X-API-Key", "lotmesh-bearer": "lotmesh gateway, Bearer token",
            "lotmesh-traced": "lotmesh gateway, X-API-Key, spans exported (always_on)",
            "nginx": "nginx proxy_pass, keepalive", "haproxy": "HAProxy, http-reuse always",
            "seed": "seed's Starlette + httpx", "direct": "no proxy: wrk → one backend"}


def cmd_gw_report(meta_path, wrkdir):
    meta = read_meta(meta_path)
    runs = read_runs(meta, wrkdir)
    out = []
    p = out.append
    p(f"# lotmesh gateway vs nginx, HAProxy and the seed's gateway, {meta['date']}")
    p("")
    p(f"- lotmesh `{meta['commit']}`, build {meta['build']}; nginx {meta.get('nginx', '?')}; "
      f"{meta.get('haproxy', '?')}; seed gateway on Starlette {meta.get('starlette', '?')}, httpx "
      f"{meta.get('httpx', '?')}, uvicorn {meta.get('uvicorn', '?')} ({meta.get('uvicorn_impl', '?')})")
    fastest = header_common(p, meta, runs)
    p(f"- request: `GET {meta['path']}` (the articles service's unit 1, {meta.get('body_bytes', '?')} "
      f"bytes of JSON, read from SQLite), the same status and body through every proxy (checked "
      f"before the run); the client sends {meta.get('client_headers', '?')}")
    p(f"- backend: two lotmesh-articles instances (WORKERS={meta['backend_workers']} each, "
      "SERVICE_AUTH=enabled, access log off), the same two for every proxy; each proxy balances "
      "over both")
    p(f"- proxies: {meta['workers']} workers/threads/processes each on {meta['nproc']} cores, "
      f"access logs off; wrk -t{meta['threads']} -c{meta['conns']} --latency; per proxy "
      f"{meta['warmup']} s warm-up then {meta['rounds']} rounds of {meta['duration']} s, taking "
      "turns (the order rotates by round); figures are medians of the rounds. Nothing pinned: "
      "wrk, proxy and backends share the cores, so p99 is mostly the scheduler's")
    p("- lotmesh gateway: auth on (X-API-Key, hashed lookup; or Bearer access token, verified "
      "from a per-worker cache), discovery `static:` with both instances, least-outstanding "
      "balancer, a service token minted per (service, client) and cached, X-Request-ID and a "
      "child `traceparent` set, X-Forwarded-* appended, hop-by-hop headers dropped both ways")
    p("- nginx and HAProxy: no client auth (they have none to offer here); they add the "
      "Authorization header with a fixed valid service token the backends verify (minted by the "
      "bench), X-Forwarded-For/-Proto/-Host and X-Request-ID; the client's traceparent passes "
      "through unchanged (no child span). The seed's gateway: its proxy_request as written (a new "
      "httpx.AsyncClient per request, no keep-alive to the backend), generate_service_token "
      "returning a token minted once per service, get_service_url round-robin over a static table")
    p(f"- run took {meta.get('elapsed', '?')} s")
    p("")
    p("## Requests/s, latency, CPU per request")
    p("")
    ng = [r for _, r in sorted(runs.get(("proxy", "nginx"), []))]
    sd = [r for _, r in sorted(runs.get(("proxy", "seed"), []))]
    n_rps = med([r["rps"] for r in ng]) if ng else None
    n_p99 = medof(ng, "p99") if ng else None
    n_cpu = medof(ng, "cpu_us_req") if ng else None
    s_rps = med([r["rps"] for r in sd]) if sd else None
    p("| proxy | req/s | **vs nginx** | per-round vs nginx | vs seed | p50 | p99 | **p99 vs nginx** | "
      "proxy CPU/req | **vs nginx** | backend CPU/req | proxy/backend CPU |")
    p("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
    for s in GW_ORDER:
        rs = [r for _, r in sorted(runs.get(("proxy", s), []))]
        if not rs:
            continue
        rps = med([r["rps"] for r in rs])
        p99 = medof(rs, "p99")
        cpu = medof(rs, "cpu_us_req")
        be = medof(rs, "cpu2_us_req")
        vs_n = f"**{rps / n_rps:.2f}**" if n_rps else "-"
        per = "-"
        if ng and s != "nginx":
            pr = [a["rps"] / b["rps"] for a, b in zip(rs, ng)]
            per = f"{min(pr):.2f}–{max(pr):.2f}"
        vs_s = f"{rps / s_rps:.1f}×" if s_rps and s != "seed" else "-"
        p99r = f"**{p99 / n_p99:.2f}**" if n_p99 and s != "direct" else "-"
        cpur = f"**{cpu / n_cpu:.2f}**" if n_cpu and cpu and s != "direct" else "-"
        ratio = f"{cpu / be:.2f}" if cpu and be and s != "direct" else "-"
        p(f"| {GW_LABEL.get(s, s)} | {rps:,.0f} | {vs_n} | {per} | {vs_s} | {benchlib.msf(medof(rs, 'p50'))} | "
          f"{benchlib.msf(p99)} | {p99r} | {us(cpu) if s != 'direct' else '-'} | {cpur} | {us(be)} | {ratio} |")
    p("")
    p("Goals (DESIGN 5, issue 5) for the lotmesh rows: req/s vs nginx >= 1, p99 vs nginx <= 1, "
      "proxy CPU/req vs nginx < 1, req/s vs seed > 50. Proxy CPU/req: CPU time of the proxy's "
      "processes during the round (utime + stime from /proc/PID/stat, all threads, kernel time "
      "included; nginx master and workers, uvicorn and "
      "its workers) ÷ requests wrk counted; backend CPU/req the same for both backend instances; "
      "proxy/backend: what forwarding a request costs next to serving it.")
    p("")
    lm = {s: [r for _, r in sorted(runs.get(("proxy", s), []))]
          for s in ("lotmesh-key", "lotmesh-traced", "lotmesh-bearer")}
    goals = []
    for s, rs in lm.items():
        if not rs or not ng:
            continue
        rps, p99, cpu = med([r["rps"] for r in rs]), medof(rs, "p99"), medof(rs, "cpu_us_req")
        g = [f"req/s {rps / n_rps:.2f}× nginx ({'met' if rps >= n_rps else 'MISSED'})",
             f"p99 {p99 / n_p99:.2f}× ({'met' if p99 <= n_p99 else 'MISSED'})",
             f"CPU/req {cpu / n_cpu:.2f}× ({'met' if cpu < n_cpu else 'MISSED'})" if cpu and n_cpu else "CPU -"]
        if s_rps:
            g.append(f"{rps / s_rps:.0f}× the seed ({'met' if rps > 50 * s_rps else 'MISSED'})")
        goals.append(f"- {GW_LABEL[s]}: " + ", ".join(g))
    if goals:
        p("Against the goals:")
        p("")
        out.extend(goals)
        p("")
    if meta.get("spans_traced"):
        p(f"Span pipeline of the traced gateway over the whole run: `{meta['spans_traced'].strip()}` "
          "(dropped: the bounded queue was full; requests never wait for export).")
        p("")
    if meta.get("rss_gateway"):
        p(f"Gateway footprint: idle RSS {benchlib.mb(meta['rss_gateway'])} (WORKERS={meta['workers']}, "
          f"0.5 s after ready); time to ready, spawn to first 200 on /health: "
          f"{meta.get('ready_gateway', '? ? ?').split()[0]} ms (median of {meta.get('ready_runs', '?')}), "
          f"logged `ready in` {meta.get('ready_gateway', '? ? ?').split()[2]} ms.")
        p("")
    p("## Every round")
    p("")
    p("| proxy | round | req/s | p50 | p99 | requests | errors | proxy CPU/req | backend CPU/req | other load | host slowdown |")
    p("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
    for s in GW_ORDER:
        for rnd, r in sorted(runs.get(("proxy", s), [])):
            oth, slow = fmt_round_flags(r, fastest)
            p(f"| {s} | {rnd} | {r['rps']:,.0f} | {benchlib.msf(r['p50'])} | {benchlib.msf(r['p99'])} | "
              f"{r['requests']:,} | {r['errors']} | {us(r['cpu_us_req']) if s != 'direct' else '-'} | "
              f"{us(r.get('cpu2_us_req'))} | {oth} | {slow} |")
    print("\n".join(out))
    return 0


def main(argv):
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    op, a = argv[0], argv[1:]
    if op == "token":
        print(mint(a[0], a[1], a[2] if len(a) > 2 else "read write"))
        return 0
    if op == "refs":
        with open(a[0], "w") as f:
            json.dump(make_refs(), f)
        return 0
    if op == "seed-articles":
        return cmd_seed_articles(int(a[0]), a[1], a[2])
    if op == "seed-charges":
        return cmd_seed_charges(int(a[0]), a[1], a[2], int(a[3]), int(a[4]))
    if op == "gw-token":
        return cmd_gw_token(int(a[0]), a[1])
    if op == "json-get":
        print(json.load(open(a[0]))[a[1]])
        return 0
    if op == "wait":
        return cmd_wait(int(a[0]), a[1], float(a[2]), parse_headers(a[3:]))
    if op == "get":
        return cmd_get(int(a[0]), a[1], parse_headers(a[2:]))
    if op == "same-charges":
        return cmd_same_charges(int(a[0]), int(a[1]), a[2], a[3])
    if op == "same-proxied":
        hs = []
        if "--" in a:
            i = a.index("--")
            a, hs = a[:i], a[i + 1:]
        return cmd_same_proxied(a[0], a[1:], parse_headers(hs))
    if op == "svc-report":
        return cmd_svc_report(a[0], a[1])
    if op == "gw-report":
        return cmd_gw_report(a[0], a[1])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
