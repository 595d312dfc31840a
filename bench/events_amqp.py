#!/usr/bin/env python3
"""bench/events_amqp.py BUILD_DIR — the RabbitMQ half of the events benchmark, in one run,
on one broker (tests/blackbox/rabbitmq_server.py: Debian's rabbitmq-server on loopback).

1. Relay throughput with publisher confirms: lm_evbench relay (the relay's path through
   lm_transport and transport_amqp.c: window, confirms, results handed to the loop) against
   lm_evbench bare (rabbitmq-c alone, confirm.select, the same 1000-message window, the same
   properties and bodies) on the same broker, alternating, ROUNDS rounds of N messages each
   into one durable queue; the ratio of the medians (goal >= 80%).
2. End-to-end lag, commit to applied, over that broker: bench/events_lag.py (articles ->
   charges, open-loop creates at each rate, lag from the two databases) with
   EVENT_BROKER_URL set (goal p99 < 50 ms at 1,000/s).

Knobs (environment): ROUNDS=5, N=20000, RATES="1000 5000", and events_lag.py's DURATION,
CONNS. Writes bench/results/events-amqp-<date>.md and prints it.
"""

import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "tests", "blackbox"))
import rabbitmq_server  # noqa: E402

ROUNDS = int(os.environ.get("ROUNDS", "5"))
N = int(os.environ.get("N", "20000"))
RATES = [int(x) for x in os.environ.get("RATES", "1000 5000").split()]


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


def main():
    if len(sys.argv) != 2:
        raise SystemExit("usage: bench/events_amqp.py BUILD_DIR")
    build = os.path.abspath(sys.argv[1])
    print("events_amqp: starting RabbitMQ (8-10 s on an idle machine)", file=sys.stderr)
    srv = rabbitmq_server.get()
    url = srv.url
    print(f"events_amqp: relay vs bare rabbitmq-c, {ROUNDS} rounds of {N}", file=sys.stderr)
    tp = throughput(build, url)
    relay, bare = statistics.median(tp["relay"]), statistics.median(tp["bare"])
    srv.reset_queues("articles_api", "charges_api")
    print(f"events_amqp: lag over RabbitMQ at {' '.join(map(str, RATES))}/s", file=sys.stderr)
    lag = subprocess.run([sys.executable, os.path.join(HERE, "events_lag.py"), build,
                          *map(str, RATES)], env=dict(os.environ, EVENT_BROKER_URL=url),
                         capture_output=True, text=True, timeout=1800)
    if lag.returncode != 0:
        raise SystemExit(f"events_lag.py: {lag.stderr}")
    load = os.getloadavg()
    lines = [
        f"# events over RabbitMQ — {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        "",
        f"Machine: {os.cpu_count()} cores, load average {load[0]:.1f} {load[1]:.1f} "
        f"{load[2]:.1f} at the end; RabbitMQ 3.10 (Debian), one node.",
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
        f"**Ratio relay / bare: {relay / bare:.0%}** (goal >= 80%); {N:,} persistent messages "
        "of ~600 bytes per round into one durable queue.",
        "",
        "## End-to-end lag over RabbitMQ (bench/events_lag.py)",
        "",
        lag.stdout.strip(),
        "",
    ]
    text = "\n".join(lines)
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    out = os.path.join(HERE, "results", f"events-amqp-{time.strftime('%Y%m%d-%H%M%S')}.md")
    with open(out, "w") as f:
        f.write(text)
    print(text)
    print(f"(written to {out})", file=sys.stderr)


if __name__ == "__main__":
    main()
