"""SQLite with the disk full (issue 10): creates answer 503 problems and nothing acknowledged is
lost; /ready says the database cannot write; each failure is one log line (no "ROLLBACK
failed: cannot rollback - no transaction is active"); once space is back, /ready recovers
and creates succeed, without a restart.

The full disk is a 3 MiB tmpfs mounted in a private mount namespace of the service only
(unshare -m, as root), partly taken by a filler file; the test frees space by removing the
filler through /proc/<pid>/root."""

import json
import os
import shutil
import subprocess

import pytest
import requests

from harness import IO_TIMEOUT, Proc, _live_pids, base_env, free_port, poll

CREATE = "/api/v1/article/create"

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"),
                                reason="mounting a small tmpfs needs root and unshare")


class UnsharedProc(Proc):
    """A Proc whose binary runs in its own mount namespace with a small tmpfs at mnt."""

    def __init__(self, name, env, port, workdir, mnt):
        super().__init__(name, env, port, workdir)
        self.mnt = mnt

    def start(self):
        self._err = open(self.stderr_path, "wb")
        self._out = open(self.stdout_path, "wb")
        script = (f"mount -t tmpfs -o size=3m lotmesh-full {self.mnt} && "
                  f"dd if=/dev/zero of={self.mnt}/filler bs=1k count=1024 2>/dev/null && "
                  f"exec {self.exe}")
        self.popen = subprocess.Popen(
            ["unshare", "-m", "--propagation", "private", "sh", "-c", script], env=self.env,
            stdin=subprocess.DEVNULL, stdout=self._out, stderr=self._err,
            cwd=str(self.stderr_path.parent), start_new_session=True)
        _live_pids.add(self.popen.pid)
        return self


def failed_commits(p):
    for ln in p.get("/metrics").text.splitlines():
        if ln.startswith("lotmesh_db_failed_commits_total "):
            return float(ln.split()[1])
    raise AssertionError("no lotmesh_db_failed_commits_total")


def test_disk_full_is_503_not_ready_one_line_each_and_recovers(tmp_path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    (tmp_path / "data").mkdir()
    port = free_port()
    env = base_env({"PORT": str(port), "BIND_ADDRESS": "127.0.0.1", "ACCESS_LOG": "false",
                    "LOG_LEVEL": "info", "WORKERS": "1", "CACHE_URL": "none",
                    "LOTMESH_DATA_DIR": str(tmp_path / "data"),
                    "DATABASE_URL": f"sqlite:{mnt}/articles.db"})
    p = UnsharedProc("articles", env, port, tmp_path, mnt)
    p.start()
    try:
        p.wait_healthy()
        s = requests.Session()
        acked, unavailable = {}, 0
        for i in range(20000):
            body = {"artikelnummer": f"FULL-{i:06d}", "bezeichnung": "x" * 200,
                    "einheit_id": 1, "beschreibung": "ü" * 1000}
            r = s.post(p.url(CREATE), data=json.dumps(body), timeout=IO_TIMEOUT,
                       headers={"Content-Type": "application/json"})
            if r.status_code == 201:
                acked[r.json()["id"]] = r.json()
                continue
            assert r.status_code == 503, r.text
            assert r.headers["Content-Type"].startswith("application/problem+json")
            unavailable += 1
            if unavailable >= 5:
                break
        assert unavailable >= 5, "the disk never filled"
        assert len(acked) > 10
        ready = p.get("/ready")
        assert ready.status_code == 503 and "database" in ready.text, ready.text
        # reads go on; nothing acknowledged is lost
        for aid, doc in list(acked.items())[::50]:
            assert p.get(f"/api/v1/article/{aid}").json() == doc
        # one line per failure: per failed commit (the clients' and the outbox relay's own
        # writes, which fail alike), read between two looks at the counter
        before = failed_commits(p)
        log = p.stderr()
        after = failed_commits(p)
        assert "cannot rollback" not in log and "ROLLBACK failed" not in log, log[-2000:]
        errors = [ln for ln in log.splitlines() if '"level":"error"' in ln]
        assert errors and all("commit of" in ln or "a write failed" in ln for ln in errors), errors
        assert before <= len([ln for ln in errors if "commit of" in ln]) <= after, errors
        # space again: the probe finds out, creates succeed, no restart
        os.remove(f"/proc/{p.pid}/root{mnt}/filler")
        assert poll(lambda: p.get("/ready").status_code == 200, timeout=15), p.get("/ready").text
        r = s.post(p.url(CREATE), data=json.dumps({"artikelnummer": "FULL-AFTER",
                                                   "bezeichnung": "danach", "einheit_id": 1}),
                   headers={"Content-Type": "application/json"}, timeout=IO_TIMEOUT)
        assert r.status_code == 201, r.text
        for aid, doc in acked.items():
            assert p.get(f"/api/v1/article/{aid}").json() == doc
    finally:
        problems = p.check_stopped_cleanly()
        if p.alive():
            p.kill()
    assert not problems, problems
