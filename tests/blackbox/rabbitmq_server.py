"""rabbitmq_server.py — a real RabbitMQ (Debian's rabbitmq-server) for the black-box tests.

One broker per test session, started on first use (it boots in 8–10 s, so never per test),
as ../shared/INFRA.md describes: the inner /usr/lib/rabbitmq/bin/rabbitmq-server (no
systemd, no user switch), HOME, mnesia, logs, config and the Erlang cookie under a temp
directory, the AMQP listener, the distribution port and epmd on free loopback ports.

epmd is started by us in the foreground (`epmd -port P -address 127.0.0.1`) before the node,
so the node finds it running and we hold its PID: at the end of the session the node and then
epmd are stopped by their PIDs, never by name. A crash dump lands in the temp directory.

    srv = rabbitmq_server.get()          # RabbitServer, running
    srv.url                              # amqp://lotmesh:secret@127.0.0.1:PORT/lotmesh
    srv.stop(); srv.start()              # a broker restart (fault tests); same port, same data
    con = srv.connect()                  # a pika.BlockingConnection (management-free look)
    srv.reset_queues("charges")          # deletes charges.events and charges.events.dlq
    srv.ctl("list_queues", "name", "messages")  # rabbitmqctl with this node's environment

Durable queues and persistent messages survive stop()/start(): the data directory is kept.
"""

import atexit
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import time

import ports

RMQ_BIN = "/usr/lib/rabbitmq/bin"
USER, PASSWORD, VHOST = "lotmesh", "secret", "lotmesh"
BOOT_TIMEOUT = 90.0  # seconds; an idle machine boots it in 8–10 s, a loaded one slower

_server = None


def _free_port():
    return ports.free_port()  # this xdist worker's share of the ports


def _stop_pid(proc, sig, timeout):
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


class RabbitServer:
    def __init__(self, vhost=VHOST, extra_conf=""):
        """vhost: the one the URL and connect() use; extra_conf: lines added to rabbitmq.conf
        (test_rabbitmq_definitions.py: load_definitions, whose users replace the default)."""
        self.vhost = vhost
        self.dir = tempfile.mkdtemp(prefix="lotmesh-rmq-")
        self.port = _free_port()
        self.dist_port = _free_port()
        self.epmd_port = _free_port()
        self.node = f"lm{self.port}@localhost"
        for d in ("mnesia", "log"):
            os.makedirs(os.path.join(self.dir, d))
        with open(os.path.join(self.dir, "rabbitmq.conf"), "w") as f:
            f.write(f"listeners.tcp.default = 127.0.0.1:{self.port}\n"
                    f"default_user = {USER}\ndefault_pass = {PASSWORD}\n"
                    f"default_vhost = {VHOST}\n"
                    "default_permissions.configure = .*\n"
                    "default_permissions.read = .*\ndefault_permissions.write = .*\n"
                    "loopback_users = none\n"
                    # tests fill no disk; the default 50 MB free-disk alarm must not block
                    "disk_free_limit.absolute = 1MB\n"
                    "vm_memory_high_watermark.relative = 0.8\n" + extra_conf)
        with open(os.path.join(self.dir, "enabled_plugins"), "w") as f:
            f.write("[].\n")
        self.epmd = None
        self.proc = None

    @property
    def url(self):
        vhost = "%2F" if self.vhost == "/" else self.vhost
        return f"amqp://{USER}:{PASSWORD}@127.0.0.1:{self.port}/{vhost}"

    def env(self):
        d = self.dir
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": d,
            "LANG": "C.UTF-8",
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "ERL_EPMD_PORT": str(self.epmd_port),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
            "RABBITMQ_MNESIA_BASE": os.path.join(d, "mnesia"),
            "RABBITMQ_LOG_BASE": os.path.join(d, "log"),
            "RABBITMQ_CONFIG_FILE": os.path.join(d, "rabbitmq.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": os.path.join(d, "enabled_plugins"),
            "RABBITMQ_PID_FILE": os.path.join(d, "rmq.pid"),
            "ERL_CRASH_DUMP": os.path.join(d, "erl_crash.dump"),
        }
        return env

    def start(self):
        if self.epmd is None or self.epmd.poll() is not None:
            self.epmd = subprocess.Popen(
                ["epmd", "-port", str(self.epmd_port), "-address", "127.0.0.1"],
                cwd=self.dir, env=self.env(), stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        log = open(os.path.join(self.dir, "out.log"), "ab")
        self.proc = subprocess.Popen([f"{RMQ_BIN}/rabbitmq-server"], cwd=self.dir,
                                     env=self.env(), stdin=subprocess.DEVNULL, stdout=log,
                                     stderr=log, start_new_session=True)
        log.close()
        deadline = time.monotonic() + BOOT_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"rabbitmq-server exited ({self.proc.returncode}); "
                                   f"see {self.dir}/out.log")
            if self._answers():
                return self
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"rabbitmq-server did not answer on port {self.port}")

    def _answers(self):
        # refused connections while it boots are expected: pika would log each one
        logging.getLogger("pika").setLevel(logging.CRITICAL)
        try:
            con = self.connect(timeout=2)
        except Exception:
            return False
        con.close()
        return True

    def connect(self, timeout=5):
        """A pika.BlockingConnection to the test vhost."""
        import pika
        params = pika.ConnectionParameters(
            host="127.0.0.1", port=self.port, virtual_host=self.vhost,
            credentials=pika.PlainCredentials(USER, PASSWORD), socket_timeout=timeout,
            blocked_connection_timeout=timeout, connection_attempts=1, heartbeat=0)
        return pika.BlockingConnection(params)

    def beam_pid(self):
        """The Erlang VM's PID (the node writes it to RABBITMQ_PID_FILE once booted); the
        process we started is the rabbitmq-server script, the VM is its child."""
        try:
            with open(os.path.join(self.dir, "rmq.pid")) as f:
                return int(f.read().strip())
        except (OSError, ValueError):
            return None

    def stop(self, sig=signal.SIGTERM):
        """Stops the node by its PIDs (SIGTERM: RabbitMQ's graceful shutdown; SIGKILL: a
        crash of the VM) and waits until the VM and its script are gone; epmd keeps running
        for a later start()."""
        if self.proc is None:
            return
        beam = self.beam_pid()
        if beam is not None and self.proc.poll() is None:
            try:
                os.kill(beam, sig)
            except ProcessLookupError:
                pass
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and self.proc.poll() is None:
                time.sleep(0.05)
        _stop_pid(self.proc, signal.SIGTERM, 60)
        try:
            os.unlink(os.path.join(self.dir, "rmq.pid"))
        except FileNotFoundError:
            pass
        self.proc = None

    def ctl(self, *args, timeout=60):
        """rabbitmqctl against this node (same HOME, cookie and epmd port); its stdout."""
        r = subprocess.run([f"{RMQ_BIN}/rabbitmqctl", "-n", self.node, "-q", *args],
                           env=self.env(), cwd=self.dir, capture_output=True, text=True,
                           timeout=timeout)
        if r.returncode != 0:
            raise RuntimeError(f"rabbitmqctl {' '.join(args)}: {r.stderr.strip()}")
        return r.stdout

    def reset_queues(self, *services):
        """Deletes <service>.events and <service>.events.dlq (a test's clean start)."""
        con = self.connect()
        try:
            ch = con.channel()
            for s in services:
                for q in (f"{s}.events", f"{s}.events.dlq"):
                    ch.queue_delete(q)
        finally:
            con.close()

    def declare_service_queue(self, service, patterns):
        """Declares <service>.events (classic, durable, dead-lettering to lotmesh.events.dlx
        with the routing key <service>, as lib/events/rmq.c does) bound to patterns: the
        topology a deployment declares before its services start, so that no event published
        before the consumer's first connection misses its queue."""
        con = self.connect()
        try:
            ch = con.channel()
            ch.exchange_declare("lotmesh.events", "topic", durable=True)
            q = f"{service}.events"
            ch.queue_declare(q, durable=True, arguments={
                "x-dead-letter-exchange": "lotmesh.events.dlx",
                "x-dead-letter-routing-key": service})
            for p in patterns:
                ch.queue_bind(q, "lotmesh.events", p)
        finally:
            con.close()

    def cleanup(self):
        self.stop()
        _stop_pid(self.epmd, signal.SIGTERM, 10)
        self.epmd = None
        shutil.rmtree(self.dir, ignore_errors=True)


def get():
    """The session's broker, started on first use."""
    global _server
    if _server is None:
        srv = RabbitServer()
        atexit.register(srv.cleanup)
        _server = srv.start()
    return _server


def shutdown():
    """Stops the session's broker (by its PID) if one was started; conftest.py calls it at
    the end of the session, so each xdist worker stops its own before it exits (atexit stays
    the safety net for a session that dies)."""
    global _server
    if _server is not None:
        _server.cleanup()
        _server = None


if __name__ == "__main__":
    # bench/: python3 rabbitmq_server.py serve PORTFILE — starts a broker, writes its URL to
    # PORTFILE, runs until SIGTERM/SIGINT, then stops it (node and epmd by PID).
    import sys
    if len(sys.argv) != 3 or sys.argv[1] != "serve":
        print("usage: rabbitmq_server.py serve URLFILE", file=sys.stderr)
        sys.exit(2)
    srv = get()
    with open(sys.argv[2] + ".tmp", "w") as f:
        f.write(srv.url + "\n")
    os.rename(sys.argv[2] + ".tmp", sys.argv[2])
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        signal.pause()
    except (KeyboardInterrupt, SystemExit):
        pass
