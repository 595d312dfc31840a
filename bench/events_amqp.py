#!/usr/bin/env python3
"""bench/events_bench.py BUILD_DIR — the events benchmark (DESIGN 5, issue 11), in one run.

1. Relay throughput with publisher confirms: lm_evbench relay (the relay's path through
   lm_transport and transport_amqp.c: window, confirms, results handed to the loop) against
   lm_evbench bare (rabbitmq-c alone, confirm.select, the same 1000-message window, the same
   properties and bodies) on the same broker, alternating, ROUNDS rounds of N messages each;
   the ratio of the medians (goal >= 80%).
2. End-to-end lag from commit to applied: lotmesh-articles produces (article creates paced by
   wrk at RATE/s through bench/wrk/article_create_paced.lua), lotmesh-charges consumes
   (its replica); the lag is charges' lotmesh_events_lag_seconds histogram (event time, set in
   the writing transaction, to the consumer's commit), p50/p99 interpolated within buckets
   like Prometheus' histogram_quantile. For RabbitMQ and for the built-in feed, at each RATE
   (goal p99 < 50 ms at 1,000/s).

Knobs (environment): ROUNDS=5, N=20000 (messages per throughput round), RATES="1000 5000",
DURATION=10 (s of load per lag run), TRANSPORTS="rabbitmq feed", KEEP_TMP=0.
Writes bench/results/events-<date>.md and prints it.
"""

import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "tests", "blackbox"))
import rabbitmq_server  # noqa: E402

ROUNDS = int(os.environ.get("ROUNDS", "5"))
N = int(os.environ.get("N", "20000"))
RATES = [int(x) for x in os.environ.get("RATES", "1000 5000").split()]
DURATION = int(os.environ.get("DURATION", "10"))
TRANSPORTS = os.environ.get("TRANSPORTS", "rabbitmq feed").split()


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(port, path, timeout=5):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
        return r.read().decode()


def metrics(port):
    out = {}
    for line in get(port, "/metrics").splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name, _, value = line.rpartition(" ")
        try:
            out[name] = float(value)
        except ValueError:
            pass
    return out


def quantile(m, q, name="lotmesh_events_lag_seconds"):
    """histogram_quantile over the cumulative buckets of name in metrics m (seconds)."""
    bs = []
    for k, v in m.items():
        mm = re.fullmatch(name + r'_bucket\{le="([^"]+)"\}', k)
        if mm:
            bs.append((float("inf") if mm.group(1) == "+Inf" else float(mm.group(1)), v))
    bs.sort()
    if not bs or bs[-1][1] == 0:
        return None
    total = bs[-1][1]
    rank = q * total
    prev_le, prev_c = 0.0, 0.0
    for le, c in bs:
        if c >= rank:
            if le == float("inf"):
                return prev_le
            return prev_le + (le - prev_le) * (rank - prev_c) / max(c - prev_c, 1e-9)
        prev_le, prev_c = le, c
    return bs[-1][0]


def sink_queue(url, name="bench.sink"):
    import pika
    con = pika.BlockingConnection(pika.URLParameters(url))
    ch = con.channel()
    ch.exchange_declare("lotmesh.events", "topic", durable=True)
    ch.queue_declare(name, durable=True)
    ch.queue_bind(name, "lotmesh.events", "#")
    ch.queue_purge(name)
    con.close()


def throughput(build, url):
    exe = os.path.join(build, "lm_evbench")
    res = {"relay": [], "bare": []}
    for r in range(ROUNDS):
        order = ["relay", "bare"] if r % 2 == 0 else ["bare", "relay"]
        for mode in order:
            sink_queue(url)
            p = subprocess.run([exe, mode, url, str(N)], capture_output=True, text=True,
                               timeout=600)
            if p.returncode != 0:
                raise SystemExit(f"lm_evbench {mode}: {p.stderr}")
            out = json.loads(p.stdout.strip().splitlines()[-1])
            res[mode].append(out["per_s"])
            print(f"  round {r + 1} {mode}: {out['per_s']:.0f} msg/s", file=sys.stderr)
    sink_queue(url)
    return res


class Stack:
    def __init__(self, build, transport, url, tmp):
        self.dir = tempfile.mkdtemp(prefix="ev-", dir=tmp)
        self.a_port, self.c_port = free_port(), free_port()
        common = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "BIND_ADDRESS": "127.0.0.1",
                  "SERVICE_AUTH": "disabled", "LOG_LEVEL": "warn", "OTEL_TRACES_EXPORTER": "none"}
        if transport == "rabbitmq":
            common["EVENT_BROKER_URL"] = url
        self.procs = []
        for name, port, extra in (
                ("articles", self.a_port, {"CHARGES_URL": f"http://127.0.0.1:{self.c_port}"}),
                ("charges", self.c_port, {"ARTICLES_URL": f"http://127.0.0.1:{self.a_port}"})):
            d = os.path.join(self.dir, name)
            os.makedirs(d)
            env = dict(common, PORT=str(port), LOTMESH_DATA_DIR=d, **extra)
            log = open(os.path.join(self.dir, f"{name}.log"), "w")
            self.procs.append(subprocess.Popen([os.path.join(build, f"lotmesh-{name}")],
                                               env=env, stdout=log, stderr=log))
        for port in (self.a_port, self.c_port):
            deadline = time.monotonic() + 20
            while True:
                try:
                    get(port, "/health", 1)
                    break
                except Exception:
                    if time.monotonic() > deadline:
                        raise SystemExit(f"no /health on {port}; see {self.dir}")
                    time.sleep(0.05)

    def stop(self):
        for p in self.procs:
            p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def lag_run(build, transport, url, rate, tmp):
    if transport == "rabbitmq":
        rabbitmq_server._server.reset_queues("articles_api", "charges_api")
    st = Stack(build, transport, url, tmp)
    try:
        # the seeded units' announcements first: wait until charges has applied them
        deadline = time.monotonic() + 30
        while metrics(st.c_port).get('lotmesh_events_consumed_total{outcome="applied"}', 0) < 8:
            if time.monotonic() > deadline:
                raise SystemExit(f"charges applied nothing on {transport}; see {st.dir}")
            time.sleep(0.1)
        base = metrics(st.c_port)
        conns = 20 if rate <= 2000 else 50
        w = subprocess.run(["wrk", "-t2", f"-c{conns}", f"-d{DURATION}s", "--latency", "-s",
                            os.path.join(HERE, "wrk", "article_create_paced.lua"),
                            f"http://127.0.0.1:{st.a_port}", "--", f"R{rate}", str(rate),
                            str(conns)], capture_output=True, text=True, timeout=DURATION + 60)
        m = re.search(r"(\d+) requests in ([\d.]+)s", w.stdout)
        sent = int(m.group(1)) if m else 0
        secs = float(m.group(2)) if m else DURATION
        non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", w.stdout)
        created = sent - (int(non2xx.group(1)) if non2xx else 0)
        want = base.get('lotmesh_events_consumed_total{outcome="applied"}', 0) + created
        deadline = time.monotonic() + 120
        while True:
            cm = metrics(st.c_port)
            if cm.get('lotmesh_events_consumed_total{outcome="applied"}', 0) >= want:
                break
            if time.monotonic() > deadline:
                break
            time.sleep(0.2)
        # only this run's lags: subtract the announcements' buckets
        diff = {k: v - base.get(k, 0) for k, v in cm.items()
                if k.startswith("lotmesh_events_lag_seconds")}
        cnt = diff.get("lotmesh_events_lag_seconds_count", 0)
        mean = diff.get("lotmesh_events_lag_seconds_sum", 0) / cnt if cnt else None
        applied = cm.get('lotmesh_events_consumed_total{outcome="applied"}', 0) - \
            base.get('lotmesh_events_consumed_total{outcome="applied"}', 0)
        return {"transport": transport, "rate": rate, "achieved": created / secs,
                "created": created, "applied": applied,
                "p50_ms": (quantile(diff, 0.5) or 0) * 1000,
                "p99_ms": (quantile(diff, 0.99) or 0) * 1000,
                "mean_ms": (mean or 0) * 1000}
    finally:
        st.stop()


def main():
    if len(sys.argv) != 2:
        raise SystemExit("usage: bench/events_bench.py BUILD_DIR")
    build = os.path.abspath(sys.argv[1])
    tmp = tempfile.mkdtemp(prefix="lotmesh-evbench-")
    print("events bench: starting RabbitMQ (8-10 s on an idle machine)", file=sys.stderr)
    srv = rabbitmq_server.get()
    url = srv.url
    try:
        print(f"events bench: relay vs bare rabbitmq-c, {ROUNDS} rounds of {N}", file=sys.stderr)
        tp = throughput(build, url)
        lags = []
        for transport in TRANSPORTS:
            for rate in RATES:
                print(f"events bench: lag on {transport} at {rate}/s", file=sys.stderr)
                lags.append(lag_run(build, transport, url, rate, tmp))
    finally:
        if os.environ.get("KEEP_TMP") != "1":
            shutil.rmtree(tmp, ignore_errors=True)
    relay, bare = statistics.median(tp["relay"]), statistics.median(tp["bare"])
    load = os.getloadavg()
    lines = [
        f"# events benchmark — {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        "",
        f"Machine: {os.cpu_count()} cores, load average {load[0]:.1f} {load[1]:.1f} "
        f"{load[2]:.1f} at the end; RabbitMQ 3.10 (Debian), one node, durable queue.",
        "",
        "## Relay throughput with publisher confirms (same broker, alternating rounds)",
        "",
        "| publisher | median msg/s | rounds |",
        "|---|---|---|",
        f"| lotmesh relay path (lm_transport, amqp) | {relay:,.0f} | "
        + ", ".join(f"{x:,.0f}" for x in tp["relay"]) + " |",
        f"| bare rabbitmq-c, confirms, window 1000 | {bare:,.0f} | "
        + ", ".join(f"{x:,.0f}" for x in tp["bare"]) + " |",
        "",
        f"**Ratio relay / bare: {relay / bare:.0%}** (goal >= 80%)",
        "",
        "## End-to-end lag, commit to applied (articles -> charges' replica)",
        "",
        "| transport | target/s | achieved/s | applied | p50 ms | p99 ms | mean ms |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in lags:
        lines.append(f"| {r['transport']} | {r['rate']:,} | {r['achieved']:,.0f} | "
                     f"{r['applied']:,.0f}/{r['created']:,} | {r['p50_ms']:.1f} | "
                     f"{r['p99_ms']:.1f} | {r['mean_ms']:.1f} |")
    lines += ["", "p50/p99 interpolated within charges' lotmesh_events_lag_seconds buckets "
              "(5, 10, 25, 50, 100 ms …), as Prometheus' histogram_quantile does.", ""]
    text = "\n".join(lines)
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    out = os.path.join(HERE, "results", f"events-{time.strftime('%Y%m%d-%H%M%S')}.md")
    with open(out, "w") as f:
        f.write(text)
    print(text)
    print(f"(written to {out})", file=sys.stderr)


if __name__ == "__main__":
    main()
