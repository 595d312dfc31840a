"""test_rabbitmq_definitions.py — deploy/rabbitmq: the RabbitMQ topology a deployment loads at
broker start is exactly the one the services declare.

deploy/rabbitmq/start.sh writes what Compose's broker loads at boot (definitions.json, the
exchanges lotmesh.events and lotmesh.events.dlx, the queues <service>.events and
<service>.events.dlq with their bindings; a users file from RABBITMQ_DEFAULT_USER/_PASS; the
rabbitmq.conf line `load_definitions`). Here a broker of its own (Debian's rabbitmq-server,
rabbitmq_server.RabbitServer on the vhost "/", as Compose runs it) starts with those files,
and then:
- the topology on the broker equals definitions.json;
- articles and charges connect (their own exchange, queue and binding declares come after the
  pre-declared ones): every link connected with no failed attempt — a queue argument that
  differed would be a PRECONDITION_FAILED channel error on each attempt — and the topology
  afterwards is the same, nothing added;
- an event published before its consumer ever ran (charges not started yet) waits in the
  pre-declared queue and is applied once charges starts: what the definitions are for;
- a declare that differs from the definitions (one dead-letter argument missing) is refused
  by the broker with 406, so the equality above is a real check.
"""

import json
import os
import subprocess

import pytest

import rabbitmq_server
from events_util import create_article, db_rows, metric, wait_metric
from harness import REPO, free_port, poll
from services_util import unique

pika = pytest.importorskip("pika")

MQ = REPO / "deploy" / "rabbitmq"


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    d = tmp_path_factory.mktemp("mqdefs")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
           "RABBITMQ_DEFAULT_USER": rabbitmq_server.USER,
           "RABBITMQ_DEFAULT_PASS": rabbitmq_server.PASSWORD,
           "LOTMESH_RABBITMQ_DEFINITIONS": str(d / "definitions.d"),
           "LOTMESH_RABBITMQ_CONF": str(d / "conf.d" / "30-lotmesh-definitions.conf")}
    r = subprocess.run(["sh", str(MQ / "start.sh")], env=env, capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 0, r.stderr
    conf = (d / "conf.d" / "30-lotmesh-definitions.conf").read_text()
    assert conf == f"load_definitions = {d / 'definitions.d'}\n"
    srv = rabbitmq_server.RabbitServer(vhost="/", extra_conf=conf)
    try:
        srv.start()
    except RuntimeError as e:
        srv.cleanup()
        pytest.fail(str(e), pytrace=False)
    yield srv
    srv.cleanup()


def test_start_sh_refuses_a_missing_password(tmp_path):
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "RABBITMQ_DEFAULT_USER": "lotmesh",
           "LOTMESH_RABBITMQ_DEFINITIONS": str(tmp_path / "d"),
           "LOTMESH_RABBITMQ_CONF": str(tmp_path / "c.conf")}
    r = subprocess.run(["sh", str(MQ / "start.sh"), "true"], env=env, capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        "start.sh: RABBITMQ_DEFAULT_USER and RABBITMQ_DEFAULT_PASS must be set"]
    assert not (tmp_path / "c.conf").exists()


def topology(srv):
    """What the broker holds on "/" besides its own amq.* objects: ({exchange: (type,
    durable, auto_delete, internal, arguments)}, {queue: (durable, auto_delete, exclusive,
    arguments)}, {(source, destination, routing key)})."""
    def rows(*args):
        return json.loads(srv.ctl(*args, "--formatter", "json"))

    ex = {e["name"]: (e["type"], e["durable"], e["auto_delete"], e["internal"],
                      json.dumps(e["arguments"], sort_keys=True))
          for e in rows("list_exchanges", "-p", "/", "name", "type", "durable", "auto_delete",
                        "internal", "arguments")
          if e["name"] and not e["name"].startswith("amq.")}
    qs = {q["name"]: (q["durable"], q["auto_delete"], q["exclusive"],
                      json.dumps(q["arguments"], sort_keys=True))
          for q in rows("list_queues", "-p", "/", "name", "durable", "auto_delete", "exclusive",
                        "arguments")}
    bs = {(b["source_name"], b["destination_name"], b["routing_key"])
          for b in rows("list_bindings", "-p", "/", "source_name", "destination_name",
                        "routing_key")
          if b["source_name"]}  # the default exchange's implicit bindings left out
    return ex, qs, bs


def test_the_definitions_are_loaded_at_start(broker):
    want = json.loads((MQ / "definitions.json").read_text())
    ex, qs, bs = topology(broker)
    assert set(ex) == {e["name"] for e in want["exchanges"]} == \
        {"lotmesh.events", "lotmesh.events.dlx"}
    assert ex["lotmesh.events"][:4] == ("topic", True, False, False)
    assert ex["lotmesh.events.dlx"][:4] == ("direct", True, False, False)
    assert set(qs) == {q["name"] for q in want["queues"]} == {
        "articles_api.events", "articles_api.events.dlq",
        "charges_api.events", "charges_api.events.dlq"}
    assert all(q[:3] == (True, False, False) for q in qs.values()), qs
    for service in ("articles_api", "charges_api"):
        # rabbitmqctl's JSON: [name, AMQP table type, value]; longstr is what rabbitmq-c's
        # AMQP_FIELD_KIND_UTF8 sends (lib/events/rmq.c)
        args = {k: (t, v) for k, t, v in json.loads(qs[f"{service}.events"][3])}
        assert args == {"x-dead-letter-exchange": ("longstr", "lotmesh.events.dlx"),
                        "x-dead-letter-routing-key": ("longstr", service)}, args
    assert bs == {(b["source"], b["destination"], b["routing_key"]) for b in want["bindings"]}
    # the patterns the services consume (services/*/main.c)
    assert {(d, k) for s, d, k in bs if s == "lotmesh.events"} == {
        ("articles_api.events", "charge.*"), ("charges_api.events", "artikel.*"),
        ("charges_api.events", "einheit.*")}


def test_services_declare_the_same_topology_and_an_early_event_waits(broker, start_process):
    before = topology(broker)
    a_port, c_port = free_port(), free_port()
    articles = start_process("articles", {"PORT": a_port,
                                          "CHARGES_URL": f"http://127.0.0.1:{c_port}",
                                          "EVENT_BROKER_URL": broker.url})
    for link in ("publisher", "consumer"):
        wait_metric(articles, "lotmesh_events_broker_connected", lambda v: v == 1,
                    {"link": link}, timeout=30)
    # charges has never run: articles' events for it wait in the pre-declared queue
    art = create_article(articles, unique("DEF")).json()

    def waiting():
        out = broker.ctl("list_queues", "-p", "/", "name", "messages", "--formatter", "json")
        n = {q["name"]: q["messages"] for q in json.loads(out)}["charges_api.events"]
        return n if n >= 1 else None

    assert poll(waiting, timeout=30), "articles' events did not reach charges_api.events"
    charges = start_process("charges", {"PORT": c_port,
                                        "ARTICLES_URL": f"http://127.0.0.1:{a_port}",
                                        "EVENT_BROKER_URL": broker.url})
    for proc in (articles, charges):
        for link in ("publisher", "consumer"):
            wait_metric(proc, "lotmesh_events_broker_connected", lambda v: v == 1,
                        {"link": link}, timeout=30)
            # a declare that conflicted would fail every attempt (PRECONDITION_FAILED)
            assert metric(proc, "lotmesh_events_broker_connect_failures_total",
                          {"link": link}) == 0, proc.stderr_tail()
        assert "PRECONDITION_FAILED" not in proc.stderr()
    assert poll(lambda: db_rows(charges, "SELECT artikelnummer FROM artikel_replica"
                                         " WHERE id = ?", (art["id"],)), timeout=30), \
        "the event published before charges first ran was not applied"
    # the services' declares added nothing: the definitions are what they declare
    assert topology(broker) == before


def test_a_differing_declare_is_refused(broker):
    con = broker.connect()
    try:
        ch = con.channel()
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
            ch.queue_declare("charges_api.events", durable=True,
                             arguments={"x-dead-letter-exchange": "lotmesh.events.dlx"})
        assert e.value.reply_code == 406, e.value
    finally:
        con.close()
