#!/usr/bin/env python3
"""bench/events_lag.py BUILD_DIR [RATE...] — end-to-end event lag, commit to applied in the
consumer (DESIGN 5: p99 under 50 ms at 1,000 events/s), in one run.

Starts lotmesh-articles (the producer) and lotmesh-charges (its consumer: the article replica
from artikel.*) from BUILD_DIR on loopback, each with its own SQLite database under a temp
dir, on the transport chosen by the environment (EVENT_BROKER_URL unset: the built-in feed;
set: that broker — passed to both processes). For each rate (events/s; default 1000 5000) it
creates articles open-loop at that rate for DURATION seconds (default 5) over CONNS keep-alive
connections (default 32), waits until the consumer has applied every event, and computes
each event's lag from the two databases, read after the run: the consumer's inbox row
(applied_ms, written in the transaction that applied it) minus the event's time (taken in the
producer's write transaction just before its commit). Prints a markdown table and writes it
to bench/results/events-<transport>-<date>.md.

Standard library only. Nothing here is a test: it reports, it does not assert.
"""
import asyncio
import datetime
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(port, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"GET /health HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n")
                if s.recv(64).startswith(b"HTTP/1.1 200"):
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise SystemExit(f"events_lag: port {port} not ready")


def metric(port, name):
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n")
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    for ln in data.decode(errors="replace").splitlines():
        if ln.startswith(name + " ") or ln.startswith(name + "{"):
            return float(ln.rsplit(" ", 1)[1])
    return None


async def load(port, rate, duration, conns, prefix):
    """Open-loop: request i is due at t0 + i/rate; each connection takes the next due one."""
    total = int(rate * duration)
    nxt = 0
    t0 = time.monotonic() + 0.2
    sent = ok = 0
    late = []

    async def conn_loop():
        nonlocal nxt, sent, ok
        r, w = await asyncio.open_connection("127.0.0.1", port)
        while True:
            i = nxt
            if i >= total:
                break
            nxt += 1
            due = t0 + i / rate
            now = time.monotonic()
            if due > now:
                await asyncio.sleep(due - now)
            else:
                late.append(now - due)
            body = json.dumps({"artikelnummer": f"{prefix}-{i}", "bezeichnung": "Lastartikel",
                               "einheit_id": 1}).encode()
            w.write(b"POST /api/v1/article/create HTTP/1.1\r\nHost: b\r\n"
                    b"Content-Type: application/json\r\nContent-Length: "
                    + str(len(body)).encode() + b"\r\n\r\n" + body)
            sent += 1
            head = await r.readuntil(b"\r\n\r\n")
            n = 0
            for ln in head.split(b"\r\n"):
                if ln.lower().startswith(b"content-length:"):
                    n = int(ln.split(b":")[1])
            await r.readexactly(n)
            if head.startswith(b"HTTP/1.1 201"):
                ok += 1
        w.close()

    start = time.monotonic()
    await asyncio.gather(*(conn_loop() for _ in range(conns)))
    took = time.monotonic() - max(start, t0)
    return {"sent": sent, "created": ok, "seconds": took,
            "behind_ms_p99": sorted(late)[int(len(late) * 0.99)] * 1000 if late else 0.0}


def pct(xs, p):
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def parse_time(s):
    return datetime.datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp() * 1000


def main():
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    build = os.path.abspath(sys.argv[1])
    rates = [int(x) for x in sys.argv[2:]] or [1000, 5000]
    duration = float(os.environ.get("DURATION", "5"))
    conns = int(os.environ.get("CONNS", "32"))
    broker = os.environ.get("EVENT_BROKER_URL", "")
    transport = "amqp" if broker else "feed"
    tmp = tempfile.mkdtemp(prefix="lotmesh-events-bench-")
    a_port, c_port = free_port(), free_port()
    base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "SERVICE_AUTH": "disabled",
            "OTEL_TRACES_EXPORTER": "none", "ACCESS_LOG": "false", "LOG_LEVEL": "warn",
            "BIND_ADDRESS": "127.0.0.1"}
    if broker:
        base["EVENT_BROKER_URL"] = broker
    procs = []
    try:
        for name, port, extra in (
                ("articles", a_port, {"CHARGES_URL": f"http://127.0.0.1:{c_port}"}),
                ("charges", c_port, {"ARTICLES_URL": f"http://127.0.0.1:{a_port}"})):
            d = os.path.join(tmp, name)
            os.makedirs(d)
            env = dict(base, PORT=str(port), LOTMESH_DATA_DIR=d, **extra)
            procs.append(subprocess.Popen([os.path.join(build, f"lotmesh-{name}")], env=env,
                                          stdout=subprocess.DEVNULL,
                                          stderr=open(os.path.join(tmp, f"{name}.log"), "wb")))
            wait_ready(port)
        a_db, c_db = os.path.join(tmp, "articles/articles.db"), os.path.join(tmp,
                                                                            "charges/charges.db")
        rows = []
        for rate in rates:
            prefix = f"B{rate}-{int(time.time())}"
            res = asyncio.run(load(a_port, rate, duration, conns, prefix))
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                con = sqlite3.connect(f"file:{c_db}?mode=ro", uri=True, timeout=10)
                n = con.execute("SELECT count(*) FROM artikel_replica WHERE artikelnummer"
                                " LIKE ?", (prefix + "-%",)).fetchone()[0]
                con.close()
                if n >= res["created"]:
                    break
                time.sleep(0.2)
            ca = sqlite3.connect(f"file:{a_db}?mode=ro", uri=True, timeout=10)
            ev = dict(ca.execute("SELECT event_id, time FROM outbox WHERE type ="
                                 " 'artikel.created' AND data LIKE ?",
                                 (f'%"artikelnummer":"{prefix}-%',)).fetchall())
            ca.close()
            cc = sqlite3.connect(f"file:{c_db}?mode=ro", uri=True, timeout=10)
            applied = dict(cc.execute("SELECT event_id, applied_ms FROM event_inbox").fetchall())
            cc.close()
            lags = [applied[i] - parse_time(t) for i, t in ev.items() if i in applied]
            rows.append({"rate": rate, "achieved": res["created"] / res["seconds"],
                         "events": len(ev), "applied": len(lags),
                         "p50": pct(lags, 50), "p90": pct(lags, 90), "p99": pct(lags, 99),
                         "max": max(lags) if lags else float("nan"),
                         "behind": res["behind_ms_p99"]})
        out = [f"# Event lag, commit to applied ({transport}), {datetime.date.today()}", "",
               f"articles → charges (artikel.created into the replica), SQLite, "
               f"{duration:g} s per rate, {conns} connections, load {os.getloadavg()[0]:.1f}.",
               "", "| transport | target events/s | achieved events/s | events | applied |"
               " lag p50 ms | p90 ms | p99 ms | max ms | load generator behind p99 ms |",
               "|---|---|---|---|---|---|---|---|---|---|"]
        for r in rows:
            out.append(f"| {transport} | {r['rate']} | {r['achieved']:.0f} | {r['events']} |"
                       f" {r['applied']} | {r['p50']:.0f} | {r['p90']:.0f} | {r['p99']:.0f} |"
                       f" {r['max']:.0f} | {r['behind']:.0f} |")
        text = "\n".join(out) + "\n"
        print(text)
        res_dir = os.path.join(HERE, "results")
        os.makedirs(res_dir, exist_ok=True)
        with open(os.path.join(res_dir, f"events-{transport}-{datetime.date.today()}.md"),
                  "w") as f:
            f.write(text)
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()


if __name__ == "__main__":
    main()
