"""test_events_amqp.py — the RabbitMQ event transport (lib/events/transport_amqp.c) against a
real broker (rabbitmq_server.py, once per session), driven by lm_evbench (bench/evbench.c:
the relay's path through lm_transport, and a consumer), read independently with python3-pika.

What the broker must show (DESIGN 3.6): the durable topic exchange lotmesh.events; messages
with routing key = type, persistent, content type application/cloudevents+json, message_id =
the event id, a traceparent header, the CloudEvent as body; a consumer's durable queue
<service>.events bound to its patterns, manual acks, redelivery with growing attempts,
dead-lettering into <service>.events.dlq; and the services on it: articles' messages equal its
feed, a bad EVENT_BROKER_URL is one line, a broker SIGKILLed and restarted under write load
loses no event and applies none twice (the consumer suite, test_events_consumer.py, runs on
RabbitMQ as well: consumer and producer SIGKILLs, poison events, replica, live batches).
"""

import json
import os
import signal
import subprocess
import threading
import time
import uuid

import pytest

from harness import BIN_DIR, _live_pids, free_port, poll

pika = pytest.importorskip("pika")

EXCHANGE = "lotmesh.events"


def evbench():
    exe = BIN_DIR / "lm_evbench"
    if not exe.is_file():
        pytest.fail(f"{exe} not built", pytrace=False)
    return str(exe)


def env():
    e = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
         "ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0:halt_on_error=1",
         "UBSAN_OPTIONS": "halt_on_error=1:print_stacktrace=1"}
    return e


def run_relay(url, n, timeout=120, extra=()):
    r = subprocess.run([evbench(), "relay", url, str(n), *extra], env=env(),
                       capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, r.stderr
    assert "runtime error" not in r.stderr and "Sanitizer" not in r.stderr, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


class Sink:
    """An exclusive pika queue bound to the exchange with pattern, read on a thread."""

    def __init__(self, rabbitmq, pattern="#"):
        self.con = rabbitmq.connect()
        self.ch = self.con.channel()
        self.ch.exchange_declare(EXCHANGE, "topic", durable=True)
        self.queue = self.ch.queue_declare("", exclusive=True).method.queue
        self.ch.queue_bind(self.queue, EXCHANGE, pattern)

    def drain(self, want, timeout=60):
        """Messages (method, properties, body) until want have come or timeout passes."""
        got = []
        deadline = time.monotonic() + timeout
        while len(got) < want and time.monotonic() < deadline:
            m, p, b = self.ch.basic_get(self.queue, auto_ack=True)
            if m is None:
                self.con.sleep(0.05)
                continue
            got.append((m, p, b))
        return got

    def close(self):
        try:
            self.con.close()
        except Exception:
            pass


class Consumer:
    """lm_evbench consume as SERVICE: a real process whose stdout lines are deliveries."""

    def __init__(self, url, service, patterns, retry_below=0, hold=False):
        e = env()
        if retry_below:
            e["RETRY_BELOW"] = str(retry_below)
        if hold:
            e["HOLD"] = "1"
        self.service = service
        self.proc = subprocess.Popen([evbench(), "consume", url, service, *patterns], env=e,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        _live_pids.add(self.proc.pid)
        self.lines = []
        self.err = []
        self._t = threading.Thread(target=self._read, daemon=True)
        self._t.start()
        self._te = threading.Thread(target=lambda: self.err.extend(self.proc.stderr), daemon=True)
        self._te.start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(json.loads(line))

    def up(self):
        """The consumer link has declared its queue (the transport's "up" is the publisher's)."""
        return any(f"as {self.service}.events" in e for e in self.err)

    def stop(self, sig=signal.SIGTERM):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        self.proc.wait(timeout=30)
        _live_pids.discard(self.proc.pid)
        self._t.join(timeout=5)
        self._te.join(timeout=5)
        text = "".join(self.err)
        assert "runtime error" not in text and "Sanitizer" not in text, text
        return self.proc.returncode


def test_published_envelope_as_pika_sees_it(rabbitmq):
    sink = Sink(rabbitmq, "artikel.*")
    try:
        res = run_relay(rabbitmq.url, 20)
        assert res["n"] == 20 and res["confirm_failures"] == 0
        msgs = sink.drain(20)
    finally:
        sink.close()
    assert len(msgs) == 20
    seqs = []
    for m, p, body in msgs:
        ev = json.loads(body)
        assert m.exchange == EXCHANGE
        assert m.routing_key == ev["type"] == "artikel.updated"
        assert p.content_type == "application/cloudevents+json"
        assert p.delivery_mode == 2  # persistent
        assert p.message_id == ev["id"]
        assert p.type == ev["type"]
        assert p.headers["traceparent"] == ev["traceparent"]
        assert ev["specversion"] == "1.0" and ev["source"] == "/lotmesh/evbench"
        assert ev["datacontenttype"] == "application/json"
        assert ev["subject"] == str(ev["data"]["id"])
        seqs.append(ev["sequence"])
    assert seqs == sorted(seqs) == list(range(1, 21))  # one connection: publish order kept


def test_exchange_is_durable_topic(rabbitmq):
    sink = Sink(rabbitmq, "artikel.*")
    con = rabbitmq.connect()
    try:
        ch = con.channel()
        run_relay(rabbitmq.url, 1)
        assert len(sink.drain(1)) == 1
        # a passive declare with the same attributes succeeds; another type is refused
        ch.exchange_declare(EXCHANGE, "topic", durable=True, passive=True)
        with pytest.raises(pika.exceptions.ChannelClosedByBroker):
            ch.exchange_declare(EXCHANGE, "direct", durable=True)
    finally:
        sink.close()
        try:
            con.close()
        except Exception:
            pass


def test_unroutable_message_counts_as_a_confirm_failure(rabbitmq):
    """With no queue bound for a type the broker returns the message: not published."""
    con = rabbitmq.connect()
    ch = con.channel()
    try:
        # nothing bound for artikel.updated: every message comes back; the relay keeps
        # publishing them again, so bound a queue after the first failures to let it end
        qname = f"late-{uuid.uuid4().hex[:8]}"
        ch.queue_declare(qname, exclusive=True)
        p = subprocess.Popen([evbench(), "relay", rabbitmq.url, "5"], env=env(),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        _live_pids.add(p.pid)
        time.sleep(1.0)
        ch.queue_bind(qname, EXCHANGE, "artikel.updated")
        out, err = p.communicate(timeout=60)
        _live_pids.discard(p.pid)
        assert p.returncode == 0, err
        res = json.loads(out.strip().splitlines()[-1])
        assert res["confirm_failures"] >= 5, res
        assert ch.queue_declare(qname, passive=True).method.message_count == 5
    finally:
        con.close()


@pytest.fixture
def svc(rabbitmq):
    """A consumer name of its own; its queues are deleted afterwards (a durable queue left
    bound to artikel.* would take events later tests' consumers must not miss)."""
    name = f"t{uuid.uuid4().hex[:6]}"
    yield name
    rabbitmq.reset_queues(name)


def test_consumer_queue_bindings_retry_and_ack(rabbitmq, svc):
    c = Consumer(rabbitmq.url, svc, ["artikel.*", "einheit.*"], retry_below=3)
    try:
        assert poll(c.up, timeout=30), "".join(c.err)
        con = rabbitmq.connect()
        ch = con.channel()
        q = ch.queue_declare(f"{svc}.events", passive=True)
        assert q.method.message_count == 0
        con.close()
        run_relay(rabbitmq.url, 4)
        # each comes three times: attempts 1, 2 (retried, redelivered), 3 (acked)
        assert poll(lambda: len(c.lines) >= 12, timeout=30), c.lines
        time.sleep(0.3)
        by_id = {}
        for d in c.lines:
            by_id.setdefault(d["id"], []).append(d)
        assert len(by_id) == 4
        for ds in by_id.values():
            assert [d["attempt"] for d in ds] == [1, 2, 3]
            assert [d["redelivered"] for d in ds] == [False, True, True]
    finally:
        assert c.stop() == 0
    con = rabbitmq.connect()
    try:
        ch = con.channel()
        # durable, dead-lettering; nothing left after the acks
        q = ch.queue_declare(f"{svc}.events", passive=True)
        assert q.method.message_count == 0
        assert ch.queue_declare(f"{svc}.events.dlq", passive=True).method.message_count == 0
    finally:
        con.close()
    out = rabbitmq.ctl("list_queues", "-p", "lotmesh", "name", "durable", "type", "arguments")
    line = next(l for l in out.splitlines() if l.startswith(f"{svc}.events\t"))
    assert "true" in line and "classic" in line and "lotmesh.events.dlx" in line, line


def test_malformed_message_is_dead_lettered_and_does_not_block(rabbitmq, svc):
    c = Consumer(rabbitmq.url, svc, ["artikel.*"])
    try:
        assert poll(c.up, timeout=30), "".join(c.err)
        con = rabbitmq.connect()
        ch = con.channel()
        ch.basic_publish(EXCHANGE, "artikel.created", b"{not json",
                         pika.BasicProperties(message_id="bad-1", delivery_mode=2))
        ch.basic_publish(EXCHANGE, "artikel.created", b'{"specversion":"1.0"}',
                         pika.BasicProperties(message_id="bad-2", delivery_mode=2))
        run_relay(rabbitmq.url, 3)
        assert poll(lambda: len(c.lines) >= 5, timeout=30), c.lines
        assert [d["parsed"] for d in c.lines[:2]] == [False, False]
        assert all(d["parsed"] for d in c.lines[2:5])
        dlq = f"{svc}.events.dlq"
        assert poll(lambda: ch.queue_declare(dlq, passive=True).method.message_count == 2,
                    timeout=10)
        m, p, body = ch.basic_get(dlq, auto_ack=True)
        assert p.message_id == "bad-1" and body == b"{not json"
        assert p.headers["x-first-death-reason"] == "rejected"
        con.close()
    finally:
        assert c.stop() == 0


def test_consumer_killed_mid_stream_gets_redelivery(rabbitmq, svc):
    """Deliveries a consumer held unacked when SIGKILLed come again to the next one, marked
    redelivered and with the next attempt number."""
    c = Consumer(rabbitmq.url, svc, ["artikel.*"], hold=True)  # applies, never acks
    try:
        assert poll(c.up, timeout=30), "".join(c.err)
        run_relay(rabbitmq.url, 5)
        assert poll(lambda: len(c.lines) >= 5, timeout=30)
    finally:
        c.stop(signal.SIGKILL)
    c2 = Consumer(rabbitmq.url, svc, ["artikel.*"])
    try:
        assert poll(lambda: len({d["id"] for d in c2.lines}) >= 5, timeout=30), c2.lines
        first = {}
        for d in c2.lines:
            first.setdefault(d["id"], d)
        assert all(d["redelivered"] and d["attempt"] == 2 for d in first.values()), c2.lines
        assert len(c2.lines) == 5  # acked now: no further redelivery
    finally:
        assert c2.stop() == 0


# ---- the services on RabbitMQ ---------------------------------------------------------------


def _patch(proc, path, doc, headers=None):
    h = {"Content-Type": "application/json"}
    h.update(headers or {})
    r = proc.request("PATCH", path, data=json.dumps(doc), headers=h)
    assert r.status_code == 200, r.text
    return r.json()


def test_articles_events_on_the_exchange_are_the_feeds(start_process, rabbitmq):
    """What articles publishes, read independently with pika: one message per committed
    write, routing key = type, persistent, application/cloudevents+json, message_id = id,
    traceparent header, and a body equal to the event its own feed serves."""
    from events_util import all_events, create_article, wait_metric
    from services_util import unique

    rabbitmq.reset_queues("articles_api", "charges_api")
    sink = Sink(rabbitmq, "#")
    try:
        a = start_process("articles", {"CHARGES_URL": "http://127.0.0.1:9",
                                       "EVENT_BROKER_URL": rabbitmq.url})
        tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        unit = a.request("POST", "/api/v1/unit/create", data=json.dumps(
            {"kuerzel": unique("u")[:16], "bezeichnung": "Kiste"}),
            headers={"Content-Type": "application/json"}).json()
        art = create_article(a, unique("MQ"), unit=unit["id"], headers={"traceparent": tp}).json()
        _patch(a, f"/api/v1/article/{art['id']}", {"status": "gesperrt"})
        assert a.request("DELETE", f"/api/v1/article/{art['id']}").status_code == 204
        feed = {e["id"]: e for e in all_events(a)}
        msgs = sink.drain(len(feed), timeout=30)
    finally:
        sink.close()
    # the seeded units are announced first (migration 3), then the four writes
    assert len(feed) >= 4 and len(msgs) == len(feed), (feed, msgs)
    types = []
    for m, p, body in msgs:
        ev = json.loads(body)
        assert ev == feed[p.message_id]           # the same envelope as the feed's
        assert m.exchange == EXCHANGE and m.routing_key == ev["type"]
        assert p.delivery_mode == 2 and p.content_type == "application/cloudevents+json"
        assert (p.headers or {}).get("traceparent") == ev.get("traceparent")
        types.append(ev["type"])
    assert types[-4:] == ["einheit.created", "artikel.created", "artikel.updated",
                          "artikel.deleted"]
    assert [json.loads(b)["sequence"] for _, _, b in msgs] == sorted(
        e["sequence"] for e in feed.values())
    created = json.loads(msgs[-3][2])
    assert created["traceparent"].split("-")[1] == tp.split("-")[1]
    assert created["data"] == art
    wait_metric(a, "lotmesh_events_published_total", lambda v: v == len(feed))


@pytest.mark.parametrize("url", ["amqp://u:hunter2@h:0/v", "amqps://u:hunter2@h/v",
                                 "amqp://u:hunter2@h/a/b", "amqp://u:hunter2@h/v?heartbeat=5"])
def test_bad_broker_url_stops_with_one_line(run_process, url):
    r = run_process("articles", {"EVENT_BROKER_URL": url})
    assert r.returncode != 0
    lines = [ln for ln in r.stderr.splitlines() if "EVENT_BROKER_URL" in ln]
    assert len(lines) == 1, r.stderr
    assert "hunter2" not in r.stderr


def test_malformed_message_to_a_service_is_dead_lettered(start_process, rabbitmq):
    from events_util import metric, wait_metric
    rabbitmq.reset_queues("charges_api")
    c = start_process("charges", {"ARTICLES_URL": "http://127.0.0.1:9",
                                  "EVENT_BROKER_URL": rabbitmq.url})
    assert poll(lambda: metric(c, "lotmesh_events_broker_connected", {"link": "consumer"}) == 1,
                timeout=30)
    con = rabbitmq.connect()
    try:
        ch = con.channel()
        ch.basic_publish(EXCHANGE, "artikel.created", b"\x00garbage",
                         pika.BasicProperties(message_id="garbage-1", delivery_mode=2))
        wait_metric(c, "lotmesh_events_consumed_total", lambda v: v == 1,
                    {"outcome": "dead_lettered"}, timeout=15)
        assert poll(lambda: ch.queue_declare("charges_api.events.dlq", passive=True)
                    .method.message_count == 1, timeout=10)
        assert ch.queue_declare("charges_api.events", passive=True).method.message_count == 0
    finally:
        con.close()
    assert metric(c, "lotmesh_events_broker_dead_lettered_total") == 1
    assert metric(c, "lotmesh_events_broker_connected", {"link": "consumer"}) == 1
    assert metric(c, "lotmesh_events_broker_connected", {"link": "publisher"}) == 1


def rabbitmq_queue_exists(rabbitmq, name):
    con = rabbitmq.connect()
    try:
        con.channel().queue_declare(name, passive=True)
        return True
    except pika.exceptions.ChannelClosedByBroker:
        return False
    finally:
        try:
            con.close()
        except Exception:
            pass


def test_broker_restart_under_write_load_every_event_applied_once(start_process, rabbitmq):
    """articles writes under load while the broker is SIGKILLed and started again; charges
    consumes: every committed write's event arrives and is applied exactly once."""
    from events_util import all_events, create_article, db_rows, metric, wait_metric
    from services_util import unique

    rabbitmq.reset_queues("articles_api", "charges_api")
    rabbitmq.declare_service_queue("charges_api", ["artikel.*", "einheit.*"])
    rabbitmq.declare_service_queue("articles_api", ["charge.*"])
    a_port, c_port = free_port(), free_port()
    env = {"EVENT_BROKER_URL": rabbitmq.url}
    a = start_process("articles", {"PORT": a_port, "CHARGES_URL": f"http://127.0.0.1:{c_port}",
                                   **env})
    c = start_process("charges", {"PORT": c_port, "ARTICLES_URL": f"http://127.0.0.1:{a_port}",
                                  "ARTICLES_TIMEOUT": "500ms", **env})
    assert poll(lambda: rabbitmq_queue_exists(rabbitmq, "charges_api.events"), timeout=30)
    created = []
    stop = threading.Event()

    def writer(k):
        while not stop.is_set() and len(created) < 600:
            created.append(create_article(a, unique(f"W{k}")).json()["id"])
            time.sleep(0.01)

    ts = [threading.Thread(target=writer, args=(k,)) for k in range(2)]
    for t in ts:
        t.start()
    try:
        poll(lambda: len(created) >= 30, timeout=20)
        rabbitmq.stop(signal.SIGKILL)
        time.sleep(0.5)          # writes go on while the broker is away: the outbox holds them
        rabbitmq.start()
        poll(lambda: (metric(c, "lotmesh_events_consumed_total", {"outcome": "applied"}) or 0)
             > 0 and len(created) >= 200, timeout=30)
    finally:
        stop.set()
        for t in ts:
            t.join()
        if rabbitmq.proc is None:
            rabbitmq.start()
    events = all_events(a)
    total = len(events)  # the seeded units' announcements and one per article
    assert sorted(int(e["subject"]) for e in events if e["type"] == "artikel.created") == \
        sorted(created)
    wait_metric(c, "lotmesh_events_consumed_total", lambda v: v >= total,
                {"outcome": "applied"}, timeout=90)
    time.sleep(0.5)
    assert metric(c, "lotmesh_events_consumed_total", {"outcome": "applied"}) == total
    assert db_rows(c, "SELECT count(*) FROM event_inbox")[0][0] == total
    assert db_rows(c, "SELECT count(*) FROM artikel_replica")[0][0] == len(created)
    # every row marked published once its confirm came; the gauge is read each relay tick
    # and the marks queue behind the writes in the group commit: it drains, bounded
    wait_metric(a, "lotmesh_events_outbox_backlog", lambda v: v == 0, timeout=30)
    # both links of both services reconnected after the broker came back
    for proc in (a, c):
        for link in ("publisher", "consumer"):
            assert metric(proc, "lotmesh_events_broker_connects_total", {"link": link}) >= 2
            assert metric(proc, "lotmesh_events_broker_connected", {"link": link}) == 1
