#!/usr/bin/env python3
"""Small helpers for bench/run.sh, standard library only, loopback only.

  benchlib.py freeport [N]                  print N distinct free TCP ports on 127.0.0.1
  benchlib.py get PORT PATH                 print "status<TAB>content-type<TAB>body" of one GET
  benchlib.py load PORT N CONNS PATH [HEADER…] send N keep-alive GETs over CONNS connections (each
                                            waits for its answer), fail unless every one is 200
  benchlib.py cgtop FILE REQUESTS TOP       markdown: Ir per request in total, by function (self,
                                            TOP rows) and for the request path's main steps
  benchlib.py report META WRKDIR            the markdown report of a run (see run.sh)
  benchlib.py ready PORT RUNS LOGRE -- CMD  start CMD (env inherited) RUNS times, measure the
                                            time from spawn to the first 200 on /health, then
                                            stop it by PID; LOGRE ("-" for none) is a regex with
                                            one group (ms) read from the process's stderr.
                                            Prints "spawn_ms_median spawn_ms_min internal_ms_median"
"""
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

REQ = b"GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"


def http_get(port, path="/health", timeout=1.0):
    """One GET over a fresh connection; returns (status, headers dict, body) or raises OSError."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(REQ % path.encode())
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    return status, headers, body


def health_ok(port):
    try:
        return http_get(port, timeout=0.5)[0] == 200
    except (OSError, ValueError, IndexError):
        return False


def cmd_freeport(n=1):
    socks = []
    try:
        for _ in range(n):  # held open together, so the ports are distinct
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        print(" ".join(str(s.getsockname()[1]) for s in socks))
    finally:
        for s in socks:
            s.close()


def cmd_get(port, path):
    status, headers, body = http_get(port, path)
    print(f"{status}\t{headers.get('content-type', '')}\t{body.decode('utf-8', 'replace')}")
    return 0


def cmd_ready(port, runs, logre, cmd):
    spawn_ms, internal_ms = [], []
    rx = re.compile(logre) if logre != "-" else None
    for _ in range(runs):
        with tempfile.TemporaryFile() as err:
            t0 = time.monotonic_ns()
            p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err)
            try:
                deadline = time.monotonic() + 5
                while not health_ok(port):
                    if p.poll() is not None or time.monotonic() > deadline:
                        print("ready: process did not become ready", file=sys.stderr)
                        return 1
                    time.sleep(0.0005)
                spawn_ms.append((time.monotonic_ns() - t0) / 1e6)
            finally:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
            if rx:
                err.seek(0)
                m = rx.search(err.read().decode("utf-8", "replace"))
                if m:
                    internal_ms.append(float(m.group(1)))
        time.sleep(0.05)  # let the port leave TIME_WAIT-free listeners behind
    internal = f"{statistics.median(internal_ms):.2f}" if internal_ms else "-"
    print(f"{statistics.median(spawn_ms):.2f} {min(spawn_ms):.2f} {internal}")
    return 0


def cmd_load(port, n, conns, path, headers=()):
    """A tiny closed-loop client: exactly n requests, so instruction counts per request are exact.
    headers: extra "Name: value" lines sent with every request."""
    import selectors
    extra = "".join(h + "\r\n" for h in headers)
    req = (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}\r\n").encode()
    sel = selectors.DefaultSelector()
    sent = done = 0
    bufs = {}
    for _ in range(min(conns, n)):
        s = socket.create_connection(("127.0.0.1", port))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.sendall(req)
        sent += 1
        bufs[s] = b""
        sel.register(s, selectors.EVENT_READ)
    while done < n:
        for key, _ in sel.select(timeout=10):
            s = key.fileobj
            chunk = s.recv(65536)
            if not chunk:
                raise SystemExit("load: server closed a connection")
            buf = bufs[s] + chunk
            while True:
                head, sep, rest = buf.partition(b"\r\n\r\n")
                if not sep:
                    break
                lines = head.decode("latin-1").split("\r\n")
                if lines[0].split()[1] != "200":
                    raise SystemExit(f"load: got {lines[0]}")
                clen = 0
                for line in lines[1:]:
                    k, _, v = line.partition(":")
                    if k.strip().lower() == "content-length":
                        clen = int(v)
                if len(rest) < clen:
                    break
                buf = rest[clen:]
                done += 1
                if sent < n:
                    s.sendall(req)
                    sent += 1
            bufs[s] = buf
    for s in bufs:
        sel.unregister(s)
        s.close()
    print(done)
    return 0


# inclusive costs worth following from one commit to the next
CG_STEPS = ["lm_conn_feed", "llhttp_execute", "engine_dispatch", "lm_router_match",
            "lm_request_id_assign", "lm_trace_begin", "handle_health", "write_head", "finish",
            "engine_completed", "lm_log_access", "lm_metrics_observe", "conn_flush",
            "uv__io_poll", "uv_try_write"]


def callgrind_rows(path, inclusive):
    out = subprocess.run(["callgrind_annotate", f"--inclusive={'yes' if inclusive else 'no'}",
                          "--threshold=100", path], capture_output=True, text=True,
                         check=True).stdout
    rows = []
    total = None
    for line in out.splitlines():
        m = re.match(r"\s*([\d,]+) \(\s*[\d.]+%\)\s+(.*)$", line)
        if not m:
            continue
        ir = int(m.group(1).replace(",", ""))
        what = m.group(2)
        if what.startswith("PROGRAM TOTALS"):
            total = ir
            continue
        fm = re.match(r"(.*?):(\S+)(?: \[(.*)\])?$", what)
        if not fm:
            continue
        fn, obj = fm.group(2), os.path.basename(fm.group(3) or "?")
        rows.append((ir, fn, obj))
    return total, rows


def cmd_cgtop(path, requests, top):
    total, self_rows = callgrind_rows(path, False)
    _, incl_rows = callgrind_rows(path, True)
    print(f"instructions per request: **{total / requests:,.0f}** ({total:,} over {requests:,} "
          "requests)")
    print()
    print("| function (self) | object | Ir/request | share |")
    print("|---|---|--:|--:|")
    merged = {}
    for ir, fn, obj in self_rows:
        merged[(fn, obj)] = merged.get((fn, obj), 0) + ir
    # functions on the stack when the counters were zeroed show the whole cost as "self"
    merged = {k: v for k, v in merged.items() if v < 0.9 * total}
    for (fn, obj), ir in sorted(merged.items(), key=lambda kv: -kv[1])[:top]:
        print(f"| `{fn}` | {obj} | {ir / requests:,.0f} | {100 * ir / total:.1f}% |")
    print()
    print("| step (inclusive) | Ir/request |")
    print("|---|--:|")
    incl = {}
    for ir, fn, _ in incl_rows:
        incl[fn] = max(incl.get(fn, 0), ir)
    for fn in CG_STEPS:
        if fn in incl:
            print(f"| `{fn}` | {incl[fn] / requests:,.0f} |")
    return 0


# ---- report ---------------------------------------------------------------------------------

NOISY = 1.25  # a round whose calibration loop ran this much slower than the run's best
OTHERS_BUSY = 10  # % of all cores used by other processes during a round

def to_ms(v):
    for suffix, scale in (("us", 1e-3), ("ms", 1.0), ("s", 1e3), ("m", 60e3)):
        if v.endswith(suffix):
            return float(v[: -len(suffix)]) * scale
    return float(v)


def parse_wrk(text):
    """requests/s, p50 and p99 in ms, requests, socket errors + non-2xx from wrk --latency."""
    r = {"rps": None, "p50": None, "p99": None, "requests": 0, "errors": 0}
    for line in text.splitlines():
        f = line.split()
        if not f:
            continue
        if f[0] == "50%":
            r["p50"] = to_ms(f[1])
        elif f[0] == "99%":
            r["p99"] = to_ms(f[1])
        elif f[0] == "Requests/sec:":
            r["rps"] = float(f[1])
        elif len(f) > 2 and f[1] == "requests" and f[2] == "in":
            r["requests"] = int(f[0])
        elif line.strip().startswith("Socket errors:"):
            r["errors"] += sum(int(x) for x in re.findall(r"\d+", line))
        elif line.strip().startswith("Non-2xx"):
            r["errors"] += int(f[-1])
    return r


def msf(x):
    return f"{x:.2f} ms" if x < 10 else f"{x:.1f} ms"


def mb(kb):
    return f"{int(kb) / 1024:.1f} MB"


def cmd_report(meta_path, wrkdir):
    meta = {}
    with open(meta_path) as f:
        for line in f:
            k, _, v = line.rstrip("\n").partition("=")
            meta[k] = v
    runs = {}  # (variant, workers, server) -> [(round, result)]
    for name in sorted(os.listdir(wrkdir)):
        variant, workers, server, rnd = name[:-4].split(",")
        with open(os.path.join(wrkdir, name)) as f:
            res = parse_wrk(f.read())
        cpu = meta.get(f"cpu_{variant},{workers},{server},{rnd}")
        res["cpu_us_req"] = int(cpu) / 1e3 / res["requests"] if cpu and res["requests"] else None
        res["cpu_pct"] = int(cpu) / 1e7 / float(meta["duration"]) if cpu else None
        others = meta.get(f"others_{variant},{workers},{server},{rnd}")
        # percent of the whole machine (all cores) over the round
        res["others_pct"] = (max(int(others), 0) / 10 / float(meta["duration"]) /
                             int(meta.get("nproc", "1"))) if others else None
        calib = meta.get(f"calib_{variant},{workers},{server},{rnd}")
        res["calib"] = int(calib) if calib else None
        runs.setdefault((variant, int(workers), server), []).append((int(rnd), res))
    cases = sorted({(v, w) for v, w, _ in runs}, key=lambda c: (c[0] != "raw", c[1]))
    med = statistics.median
    out = []
    cpu_rows = []
    p = out.append
    nproc = int(meta.get("nproc", "1"))
    p(f"# lotmesh runtime vs nginx, {meta['date']}")
    p("")
    p(f"- lotmesh: HEAD `{meta['commit']}` when run, build {meta['build']}; nginx {meta['nginx']}; "
      f"{meta['wrk']}")
    p(f"- {meta['cpu']}; kernel {meta['kernel']}; load average before the run "
      f"{meta.get('loadavg', '?')} (other work on the machine competes with the servers and wrk)")
    status, ctype, body = meta["body"].split("\t", 2)
    p(f"- both answer `GET /health` with {status} `{ctype}` `{body}` (checked before the run)")
    p(f"- wrk -c{meta['conns']} --latency on 127.0.0.1, keep-alive; per server and case "
      f"{meta['warmup']} s warm-up, then {meta['rounds']} rounds of {meta['duration']} s, the "
      "two servers taking turns (first server alternates by round); figures are medians of the rounds")
    for w in sorted({w for _, w in cases}):
        srv, wrk, threads = meta.get(f"pin_w{w}", "none|none|?").split("|")
        if srv == "none":
            p(f"- {w} worker{'s' if w > 1 else ''}: nothing pinned, wrk -t{threads} shares the "
              f"{nproc} cores with the server")
        else:
            p(f"- {w} worker: server (all its processes/threads) under `{srv}`, "
              f"wrk -t{threads} under `{wrk}`")
    others = sorted(r["others_pct"] for rs in runs.values() for _, r in rs
                    if r["others_pct"] is not None)
    if others:
        busy = sum(1 for o in others if o > OTHERS_BUSY)
        p(f"- other work on the machine during the rounds (all busy CPU minus server and wrk): "
          f"median {statistics.median(others):.0f}%, max {others[-1]:.0f}% of all cores; "
          f"{busy} of {len(others)} rounds over {OTHERS_BUSY:.0f}% (marked ⚠ below)")
    calibs = sorted(r["calib"] for rs in runs.values() for _, r in rs if r["calib"])
    fastest = calibs[0] if calibs else None
    if calibs:
        slow = sum(1 for c in calibs if c > NOISY * fastest)
        p(f"- host noise: a fixed CPU loop on every core, timed before each round, took "
          f"{calibs[0]}–{calibs[-1]} ms (median {statistics.median(calibs):.0f}); {slow} of "
          f"{len(calibs)} rounds started on a machine over {NOISY:.2f}× slower than its best "
          "(marked ⚠ below). This VM shares its host; rerun when many rounds are marked")
    p(f"- run took {meta.get('elapsed', '?')} s")
    p("")
    p("## Requests/s and latency")
    p("")
    p("| access log | workers | lotmesh req/s | nginx req/s | **req/s lotmesh/nginx** | "
      "per-round ratios | lotmesh p50 | nginx p50 | lotmesh p99 | nginx p99 | **p99 lotmesh/nginx** |")
    p("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
    for v, w in cases:
        lm = [r for _, r in sorted(runs.get((v, w, "lotmesh"), []))]
        ng = [r for _, r in sorted(runs.get((v, w, "nginx"), []))]
        if not lm or not ng:
            continue
        lrps, nrps = med([r["rps"] for r in lm]), med([r["rps"] for r in ng])
        l50, n50 = med([r["p50"] for r in lm]), med([r["p50"] for r in ng])
        l99, n99 = med([r["p99"] for r in lm]), med([r["p99"] for r in ng])
        per = [a["rps"] / b["rps"] for a, b in zip(lm, ng)]
        label = "off" if v == "raw" else "on"
        p(f"| {label} | {w} | {lrps:,.0f} | {nrps:,.0f} | **{lrps / nrps:.2f}** | "
          f"{min(per):.2f}–{max(per):.2f} | {msf(l50)} | {msf(n50)} | {msf(l99)} | {msf(n99)} | "
          f"**{l99 / n99:.2f}** |")
        lc = [r["cpu_us_req"] for r in lm if r["cpu_us_req"]]
        nc = [r["cpu_us_req"] for r in ng if r["cpu_us_req"]]
        if lc and nc:
            lp = med([r["cpu_pct"] for r in lm if r["cpu_pct"] is not None])
            np_ = med([r["cpu_pct"] for r in ng if r["cpu_pct"] is not None])
            cpu_rows.append(f"| {label} | {w} | {med(lc):.1f} µs | {med(nc):.1f} µs | "
                            f"**{med(lc) / med(nc):.2f}** | {lp:.0f}% | {np_:.0f}% |")
    p("")
    p("req/s ratio above 1 and p99 ratio below 1 favour lotmesh. The issue's goal: req/s ratio "
      ">= 1 and p99 ratio <= 1 in every row.")
    if cpu_rows:
        p("")
        p("## Server CPU per request")
        p("")
        p("CPU time of the server's processes and threads during each round (schedstat), divided "
          "by the requests wrk counted; CPU % is of one core (200% = both). Lower is better; "
          "unlike req/s this does not depend on whether wrk or the server was the bottleneck.")
        p("")
        p("| access log | workers | lotmesh CPU/req | nginx CPU/req | **lotmesh/nginx** | "
          "lotmesh CPU | nginx CPU |")
        p("|---|--:|--:|--:|--:|--:|--:|")
        out.extend(cpu_rows)
    p("")
    p("## Footprint (lotmesh-registry)")
    p("")
    p("| figure | value | bar (DESIGN 5) |")
    p("|---|--:|---|")
    for w in (1, nproc):
        k = f"rss_idle_w{w}"
        if k in meta:
            kb = int(meta[k])
            p(f"| idle RSS, WORKERS={w} (VmRSS 0.5 s after ready) | {mb(kb)} | "
              f"< 10 MB {'met' if kb < 10 * 1024 else 'MISSED'} |")
        if nproc == 1:
            break
    for k in sorted(meta, key=lambda k: (not k.startswith("rss_after_raw"), k)):
        if k.startswith("rss_after_"):
            tag = k[len("rss_after_"):]
            v, w = tag.split("-w")
            p(f"| RSS after the load, access log {'off' if v == 'raw' else 'on'}, "
              f"WORKERS={w} | {mb(meta[k])} | |")
    if "ready_lotmesh" in meta:
        spawn, spawn_min, internal = meta["ready_lotmesh"].split()
        ok = float(spawn) < 100
        p(f"| time to ready, spawn to first 200 on /health (median; min {spawn_min} ms), "
          f"WORKERS={nproc} | {spawn} ms | < 100 ms {'met' if ok else 'MISSED'} |")
        p(f"| time to ready as logged (`ready in X ms`, from main()) | {internal} ms | |")
    if "ready_nginx" in meta:
        spawn, spawn_min, _ = meta["ready_nginx"].split()
        p(f"| for reference: nginx spawn to first 200 (median; min {spawn_min} ms) | "
          f"{spawn} ms | |")
    p("")
    p("## Every round")
    p("")
    p("| access log | workers | server | round | req/s | p50 | p99 | requests | errors | "
      "server CPU/req | other load | host slowdown |")
    p("|---|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
    for v, w in cases:
        for s in ("lotmesh", "nginx"):
            for rnd, r in sorted(runs.get((v, w, s), [])):
                cpu = f"{r['cpu_us_req']:.1f} µs" if r["cpu_us_req"] else "-"
                slow = "-"
                if r["calib"] and fastest:
                    f = r["calib"] / fastest
                    slow = f"{f:.2f}{' ⚠' if f > NOISY else ''}"
                oth = "-"
                if r["others_pct"] is not None:
                    oth = f"{r['others_pct']:.0f}%{' ⚠' if r['others_pct'] > OTHERS_BUSY else ''}"
                p(f"| {'off' if v == 'raw' else 'on'} | {w} | {s} | {rnd} | {r['rps']:,.0f} | "
                  f"{msf(r['p50'])} | {msf(r['p99'])} | {r['requests']:,} | {r['errors']} | "
                  f"{cpu} | {oth} | {slow} |")
    logs = sorted(k for k in meta if k.startswith("loglines_"))
    if logs:
        p("")
        p("Access-log lines written during the logged cases (warm-up included), and bytes per "
          "line: " + ", ".join(
              f"{k[len('loglines_'):].replace('_logged-w', ' WORKERS=')}: {int(meta[k]):,} "
              f"({int(meta.get('logbytes_' + k[len('loglines_'):], 0)) / max(int(meta[k]), 1):.0f} B)"
              for k in logs) + ".")
    print("\n".join(out))
    return 0


def main(argv):
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    op = argv[0]
    if op == "freeport":
        cmd_freeport(int(argv[1]) if len(argv) > 1 else 1)
        return 0
    if op == "load":
        return cmd_load(int(argv[1]), int(argv[2]), int(argv[3]), argv[4], argv[5:])
    if op == "cgtop":
        return cmd_cgtop(argv[1], int(argv[2]), int(argv[3]))
    if op == "report":
        return cmd_report(argv[1], argv[2])
    if op == "get":
        return cmd_get(int(argv[1]), argv[2])
    if op == "ready":
        sep = argv.index("--")
        return cmd_ready(int(argv[1]), int(argv[2]), argv[3], argv[sep + 1:])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
