"""pg_server.py — a real PostgreSQL 15 for the black-box tests (../shared/INFRA.md).

One server per test session, started on first use: initdb into a temp directory (UTF-8,
LC_CTYPE C.UTF-8, so lower() folds like lm_casefold), pg_ctl start on a free loopback port
with its socket in the same directory, fsync on (durability tests claim it). Run as user
postgres when the tests run as root (initdb refuses root). Stopped by its postmaster PID at
the end of the session (atexit), never by name.

    srv = pg_server.get()            # PgServer, running
    url = srv.database("articles-x") # a database of that name (created once), as a URL
    srv.stop(); srv.start()          # a restart (fault tests)

Backend selection for the service suites: LOTMESH_TEST_DB=pg makes every articles/charges
process the harness starts use a PostgreSQL database instead of its SQLite file, one per
file path it would have used (two processes sharing a file share the database), so the same
tests run unchanged against both backends; psycopg2 reads the rows independently.
"""

import atexit
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import ports

BIN = "/usr/lib/postgresql/15/bin"
BACKEND = os.environ.get("LOTMESH_TEST_DB", "sqlite")
DB_SERVICES = ("articles", "charges")

_server = None


def _free_port():
    return ports.free_port()  # this xdist worker's share of the ports


def _as_postgres(cmd):
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--"] + cmd
    return cmd


class PgServer:
    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="lotmesh-pg-")
        self.data = os.path.join(self.dir, "data")
        self.log = os.path.join(self.dir, "pg.log")
        self.port = _free_port()
        self.pid = None
        self.databases = set()
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
        subprocess.run(_as_postgres([f"{BIN}/initdb", "-D", self.data, "-U", "postgres",
                                     "-A", "trust", "-E", "UTF8", "--locale=C.UTF-8"]),
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                       timeout=60)

    def start(self):
        opts = (f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1"
                " -c max_connections=300 -c fsync=on -c synchronous_commit=on")
        subprocess.run(_as_postgres([f"{BIN}/pg_ctl", "-D", self.data, "-l", self.log, "-w",
                                     "-t", "30", "-o", opts, "start"]),
                       check=True, stdout=subprocess.DEVNULL, timeout=60)
        with open(os.path.join(self.data, "postmaster.pid")) as f:
            self.pid = int(f.readline())
        return self

    def stop(self, mode="fast"):
        """Stops the postmaster by its PID (SIGINT: fast shutdown, SIGQUIT: immediate) and
        waits until it is gone."""
        if self.pid is None:
            return
        sig = {"fast": signal.SIGINT, "immediate": signal.SIGQUIT}[mode]
        try:
            os.kill(self.pid, sig)
        except ProcessLookupError:
            self.pid = None
            return
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                os.kill(self.pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        else:
            os.kill(self.pid, signal.SIGKILL)
        self.pid = None

    def url(self, dbname):
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def connect(self, dbname="postgres"):
        import psycopg2
        con = psycopg2.connect(host="127.0.0.1", port=self.port, user="postgres",
                               dbname=dbname, connect_timeout=5)
        con.autocommit = True
        return con

    def database(self, name):
        """A database for name (created on first use); its URL."""
        db = "lm_" + hashlib.sha1(name.encode()).hexdigest()[:16]
        if db not in self.databases:
            con = self.connect()
            try:
                with con.cursor() as cur:
                    cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (db,))
                    if not cur.fetchone():
                        cur.execute(f'CREATE DATABASE "{db}"')
            finally:
                con.close()
            self.databases.add(db)
        return self.url(db)

    def cleanup(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def get():
    """The session's server, started on first use."""
    global _server
    if _server is None:
        _server = PgServer().start()
        atexit.register(_server.cleanup)
    return _server


def shutdown():
    """Stops the session's server (by its PID) if one was started; conftest.py calls it at
    the end of the session, so each xdist worker stops its own before it exits (atexit stays
    the safety net for a session that dies)."""
    global _server
    if _server is not None:
        _server.cleanup()
        _server = None


def map_env(name, env):
    """For LOTMESH_TEST_DB=pg: env of service name with DATABASE_URL pointing at the
    PostgreSQL database that stands for the SQLite file it names (or would default to)."""
    short = name[len("lotmesh-"):] if name.startswith("lotmesh-") else name
    if BACKEND != "pg" or short not in DB_SERVICES:
        return env
    url = env.get("DATABASE_URL")
    if url and (url.startswith("postgres") or "=" in url):
        return env
    if url:
        key = url[len("sqlite:"):] if url.startswith("sqlite:") else url
    else:
        key = os.path.join(env.get("LOTMESH_DATA_DIR", "var"), f"{short}.db")
    env = dict(env)
    env["DATABASE_URL"] = get().database(os.path.abspath(key))
    # the cache's write counter of a PostgreSQL database lives under TMPDIR: the server's
    # temp dir, removed with it (instances of one database share it, as on one host)
    env.setdefault("TMPDIR", get().dir)
    return env


def query(url, sql, params=()):
    """Rows of sql on the database url names: a SQLite file (read-only) or PostgreSQL."""
    if url.startswith("postgres"):
        import psycopg2
        con = psycopg2.connect(url, connect_timeout=5)
        try:
            with con.cursor() as cur:
                cur.execute(sql.replace("?", "%s"), params)
                return cur.fetchall()
        finally:
            con.close()
    import sqlite3
    path = url[len("sqlite:"):] if url.startswith("sqlite:") else url
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    try:
        return con.execute(sql, params).fetchall()
    finally:
        con.close()


def execute(url, script):
    """Runs script (statements separated by ';', in one transaction) on the database url
    names, as an operator's tool would: a SQLite file or PostgreSQL."""
    if url.startswith("postgres"):
        import psycopg2
        con = psycopg2.connect(url, connect_timeout=5)
        try:
            with con, con.cursor() as cur:
                cur.execute(script)
        finally:
            con.close()
        return
    import sqlite3
    path = url[len("sqlite:"):] if url.startswith("sqlite:") else url
    con = sqlite3.connect(path, isolation_level=None, timeout=5)
    try:
        con.executescript("BEGIN;" + script + ";COMMIT;")
    finally:
        con.close()


if __name__ == "__main__":
    # bench/: python3 pg_server.py serve PORTFILE DB... — starts a server, creates the
    # databases, writes the port to PORTFILE, runs until SIGTERM/SIGINT, then stops it.
    if len(sys.argv) < 3 or sys.argv[1] != "serve":
        print("usage: pg_server.py serve PORTFILE [DATABASE...]", file=sys.stderr)
        sys.exit(2)
    srv = get()
    con = srv.connect()
    with con.cursor() as cur:
        for name in sys.argv[3:]:
            cur.execute(f'CREATE DATABASE "{name}"')
    con.close()
    with open(sys.argv[2] + ".tmp", "w") as f:
        f.write(f"{srv.port}\n")
    os.rename(sys.argv[2] + ".tmp", sys.argv[2])
    # a throwaway server: an immediate stop (no checkpoint) fits in the bench's 5 s grace
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        signal.pause()
    except (KeyboardInterrupt, SystemExit):
        pass
    srv.stop("immediate")
    srv.cleanup()
