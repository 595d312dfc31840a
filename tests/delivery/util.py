"""util.py — shared helpers of the delivery tests (tests/delivery): paths, free ports, podman
with the project's containers.conf, and a bounded load generator that counts every answer.

Nothing here waits without a bound; every podman call has a timeout."""

import os
import socket
import subprocess
import threading
import time
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
CONTAINERS_CONF = os.environ.get("CONTAINERS_CONF", str(DEPLOY / "podman" / "containers.conf"))
PROCESSES = ("registry", "gateway", "articles", "charges")


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def podman_env():
    env = dict(os.environ)
    env["CONTAINERS_CONF"] = CONTAINERS_CONF
    return env


def podman(*args, timeout=120, check=True, env=None):
    """Runs `podman ARGS`; returns CompletedProcess (text). Raises on failure when check."""
    p = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout,
                       env=env or podman_env(), stdin=subprocess.DEVNULL)
    if check and p.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)} failed ({p.returncode}): {p.stderr[-2000:]}")
    return p


class Load:
    """Threads sending `fn(session)` in a loop until stop(); counts answers by outcome.
    fn returns a requests.Response; a non-2xx status or an exception is an error, kept with
    its time and text for the report."""

    def __init__(self, fn, threads=4, max_seconds=120):
        self.fn, self.n, self.max_seconds = fn, threads, max_seconds
        self.ok = 0
        self.errors = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = []

    def _run(self):
        s = requests.Session()
        deadline = time.monotonic() + self.max_seconds
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                r = self.fn(s)
                good = 200 <= r.status_code < 300
                msg = f"{r.status_code} {r.text[:200]}"
            except requests.RequestException as e:
                good, msg = False, f"{type(e).__name__}: {e}"
            with self._lock:
                if good:
                    self.ok += 1
                else:
                    self.errors.append((time.strftime("%H:%M:%S"), msg))

    def start(self):
        for _ in range(self.n):
            t = threading.Thread(target=self._run, daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def count(self):
        with self._lock:
            return self.ok + len(self.errors)

    def stop(self):
        self._stop.set()
        for t in self._threads:
            t.join(timeout=30)
        return self


def wait_until(pred, timeout, what, interval=0.1):
    """Polls pred() until it returns a true value (returned) or timeout seconds pass."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            v = pred()
            if v:
                return v
        except Exception as e:  # noqa: BLE001 — reported if it never succeeds
            last = e
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last error: {last})")
