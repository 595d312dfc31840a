"""The whole system in containers, as deploy/compose.yaml describes it, with podman-compose.

What runs: the file a user runs names PostgreSQL, RabbitMQ and Redis (official images) and
points the services at them with DATABASE_URL, EVENT_BROKER_URL and CACHE_URL. The services
do not speak RabbitMQ or Redis yet and no PostgreSQL image can be pulled here, so this test
derives its compose file from deploy/compose.yaml and leaves exactly those parts out (the three services, their volumes, the depends_on on them,
the four URL variables, and the build sections): everything else — images, hardening,
volumes, secrets, hostnames, registration addresses, the one published port — is the user's
file. The services then use their embedded defaults (SQLite in the named volumes; both charges
instances share one database file, as they share one PostgreSQL database in the user's file).

Drives: up (timed until the gateway answers through to a service), every container healthy by
the images' own HEALTHCHECK, non-root and read-only, the seed's flow through the gateway
(token, article, batch, list), one charges container killed (SIGKILL) under read load and
started again, every instance of charges restarted in turn with SIGTERM (exit 0 as PID 1),
the registry and articles restarted too, then down, leaving no container, volume or network.
Measurements go to build/delivery/compose.json (README, Delivery)."""

import json
import re
from datetime import datetime
import subprocess
import time
import uuid

import pytest
import requests
import yaml

from util import DEPLOY, PROCESSES, REPO, Load, free_port, podman, podman_env, wait_until

LEFT_OUT_SERVICES = ("postgres", "rabbitmq", "redis")
LEFT_OUT_ENV = ("DATABASE_URL", "EVENT_BROKER_URL", "CACHE_URL", "RATE_LIMIT_URL")
REPORT = REPO / "build" / "delivery" / "compose.json"
report = {}


def derive_compose(port, secret_file):
    """deploy/compose.yaml without the backends the services cannot use yet (see above)."""
    doc = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    for key in [k for k in doc if k.startswith("x-")]:  # anchors, already merged in
        del doc[key]
    services = doc["services"]
    for name in LEFT_OUT_SERVICES:
        del services[name]
    for vol in ("postgres-data", "rabbitmq-data"):
        del doc["volumes"][vol]
    for svc in services.values():
        svc.pop("build", None)
        deps = svc.get("depends_on") or {}
        for name in LEFT_OUT_SERVICES:
            deps.pop(name, None)
        env = svc.get("environment") or {}
        for var in LEFT_OUT_ENV:
            env.pop(var, None)
        # the registrations expire quickly here, so a killed instance leaves the gateway's
        # view within the test's time (defaults: 10 s TTL, 60 s until removal)
        if "SERVICE_ADDRESS" in env:
            env["SERVICE_CHECK_TTL"] = "2s"
            env["SERVICE_DEREGISTER_AFTER"] = "5s"
    services["gateway"]["ports"] = [f"127.0.0.1:{port}:8000"]
    doc["secrets"]["service_token"]["file"] = str(secret_file)
    return doc


def started_at(container):
    """The container's start as a Unix time (podman prints RFC 3339 with nanoseconds)."""
    text = json.loads(podman("inspect", container).stdout)[0]["State"]["StartedAt"]
    m = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)", text)
    assert m, text
    base = datetime.fromisoformat(m.group(1) + (m.group(3).replace("Z", "+00:00")))
    return base.timestamp() + float(m.group(2) or 0)


class System:
    def __init__(self, tmp):
        self.tmp = tmp
        self.project = "lmtest" + uuid.uuid4().hex[:8]
        self.port = free_port()
        secrets = tmp / "secrets"
        secrets.mkdir()
        self.secret_file = secrets / "service_token"
        self.secret_file.write_text(uuid.uuid4().hex + uuid.uuid4().hex + "\n")
        self.secret_file.chmod(0o644)
        self.file = tmp / "compose.yaml"
        self.file.write_text(yaml.safe_dump(derive_compose(self.port, self.secret_file)))
        self.url = f"http://127.0.0.1:{self.port}"
        self.token = None

    def compose(self, *args, timeout=180, check=True):
        env = podman_env()
        env["LOTMESH_VERSION"] = "latest"
        p = subprocess.run(["podman-compose", "-p", self.project, "-f", str(self.file), *args],
                           capture_output=True, text=True, timeout=timeout, env=env,
                           stdin=subprocess.DEVNULL, cwd=str(self.tmp))
        if check and p.returncode != 0:
            raise AssertionError(f"podman-compose {' '.join(args)} failed: {p.stderr[-3000:]}")
        return p

    def containers(self):
        out = podman("ps", "-a", "--format", "json", "--filter",
                     f"label=io.podman.compose.project={self.project}").stdout
        res = {}
        for c in json.loads(out or "[]"):
            res[c["Labels"]["com.docker.compose.service"]] = c["Names"][0]
        return res

    def healthy(self, name):
        return podman("healthcheck", "run", name, check=False, timeout=30).returncode == 0

    def headers(self):
        return {"Authorization": f"Bearer {self.token}"}

    def get(self, path, **kw):
        return requests.get(self.url + path, headers=self.headers(), timeout=10, **kw)

    def post(self, path, body):
        return requests.post(self.url + path, headers=self.headers(), json=body, timeout=10)

    def instances(self, service):
        """Passing instances of service as the gateway sees them (/admin/services)."""
        r = self.get("/admin/services")
        r.raise_for_status()
        doc = r.json()
        for s in doc.get("services", doc if isinstance(doc, list) else []):
            if s.get("name") == service:
                return s.get("instances", [])
        return []


@pytest.fixture(scope="module")
def system(tmp_path_factory):
    for p in PROCESSES:
        if podman("image", "exists", f"lotmesh/{p}:latest", check=False).returncode != 0:
            pytest.fail(f"image lotmesh/{p}:latest is missing: run `make images`", pytrace=False)
    s = System(tmp_path_factory.mktemp("compose"))
    t0 = time.monotonic()
    s.compose("up", "-d")
    report["up_command_s"] = round(time.monotonic() - t0, 2)
    try:
        yield s, t0
    finally:
        # safety net: whatever a failed test left, removed by the names this project owns
        if s.containers():
            s.compose("down", "-v", "-t", "20", check=False)
        for c in s.containers().values():
            podman("rm", "-f", c, check=False)
        podman("network", "rm", "-f", f"{s.project}_default", check=False)
        REPORT.parent.mkdir(parents=True, exist_ok=True)
        REPORT.write_text(json.dumps(report, indent=2) + "\n")


def test_up_gateway_answers_and_every_container_is_healthy(system):
    s, t0 = system
    # the first client's credentials, written by the gateway to its volume
    names = s.containers()
    assert set(names) == {"registry", "articles", "charges-1", "charges-2", "gateway"}
    dev = s.tmp / "dev-client.json"

    def fetch_client():
        podman("cp", f"{names['gateway']}:/data/dev-client.json", str(dev), check=True)
        return json.loads(dev.read_text())

    client = wait_until(fetch_client, 30, "the gateway's dev-client.json")
    r = requests.post(s.url + "/auth/token", data={"grant_type": "client_credentials"},
                      auth=(client["client_id"], client["client_secret"]), timeout=10)
    assert r.status_code == 200, r.text
    s.token = r.json()["access_token"]
    wait_until(lambda: s.get("/api/articles_api/api/v1/units").status_code == 200, 60,
               "the gateway answering through to articles")
    answered = time.time()
    report["up_to_gateway_answering_s"] = round(time.monotonic() - t0, 2)
    # podman-compose 1.0.3 pauses 1 s after each podman command it runs; the system's own
    # start is measured from the first container's start to the gateway's answer
    starts = [started_at(n) for n in names.values()]
    report["first_container_start_to_gateway_answering_s"] = round(answered - min(starts), 2)
    report["last_container_start_to_gateway_answering_s"] = round(answered - max(starts), 2)
    wait_until(lambda: len(s.instances("charges_api")) == 2, 60, "both charges instances")
    for svc, name in names.items():
        wait_until(lambda: s.healthy(name), 60, f"{svc} healthy by its HEALTHCHECK")
    report["all_healthy_s"] = round(time.monotonic() - t0, 2)


def test_containers_are_hardened_and_labelled(system):
    s, _ = system
    for svc, name in s.containers().items():
        info = json.loads(podman("inspect", name).stdout)[0]
        assert info["Config"]["User"] == "65532:65532", svc
        assert info["HostConfig"]["ReadonlyRootfs"] is True, svc
        assert info["HostConfig"]["CapDrop"], svc
        published = [p for p in (info["HostConfig"].get("PortBindings") or {}).values() if p]
        assert bool(published) == (svc == "gateway"), f"{svc} publishes {published}"
    sizes = {}
    for p in PROCESSES:
        info = json.loads(podman("image", "inspect", f"lotmesh/{p}:latest").stdout)[0]
        labels = info["Labels"]
        for key in ("version", "revision", "source", "title"):
            assert labels.get(f"org.opencontainers.image.{key}"), (p, key)
        health = info.get("Healthcheck") or info["Config"].get("Healthcheck") or {}
        assert "/usr/local/bin/lotmesh-healthcheck" in health.get("Test", []), p
        sizes[p] = round(info["Size"] / 1e6, 1)
        # DESIGN's goal: under 20 MB (libpq with its Kerberos, LDAP and GnuTLS libraries is
        # only in the images of the services with a database).
        assert info["Size"] < 20_000_000, f"lotmesh/{p} is {sizes[p]} MB"
    report["image_sizes_mb"] = sizes


def test_seed_flow_through_the_gateway(system):
    s, _ = system
    units = s.get("/api/articles_api/api/v1/units")
    assert units.status_code == 200 and units.json(), units.text
    unit = units.json()[0]["id"]
    nr = "A-" + uuid.uuid4().hex[:10]
    a = s.post("/api/articles_api/api/v1/article/create",
               {"artikelnummer": nr, "bezeichnung": "Gouda", "einheit_id": unit,
                "mindesthaltbarkeit_tage": 60})
    assert a.status_code == 201, a.text
    art = a.json()["id"]
    c = s.post("/api/charges_api/api/v1/charge/create",
               {"artikel_id": art, "menge": 12.5, "einheit_id": unit,
                "herstellungsdatum": "2026-11-24"})
    assert c.status_code == 201, c.text
    charge = c.json()
    assert charge["mindesthaltbarkeitsdatum"].startswith("2027-01-23"), charge  # 60 days
    listed = s.get(f"/api/charges/api/v1/charges?artikel_id={art}")
    assert listed.status_code == 200, listed.text
    assert [x["id"] for x in listed.json()] == [charge["id"]]
    # both instances share the data: the batch reads the same through either
    for _ in range(6):
        r = s.get(f"/api/charges_api/api/v1/charge/{charge['id']}")
        assert r.status_code == 200 and r.json()["charge_nummer"] == charge["charge_nummer"]
    s.charge_id = charge["id"]


def read_load(s):
    paths = ["/api/charges_api/api/v1/charges?limit=5",
             f"/api/charges_api/api/v1/charge/{s.charge_id}"]
    hdrs = s.headers()

    def one(session, i=[0]):
        i[0] += 1
        return session.get(s.url + paths[i[0] % 2], headers=hdrs, timeout=10)

    return Load(one, threads=4)


def test_charges_killed_under_load_then_restarted(system):
    s, _ = system
    name = s.containers()["charges-1"]
    load = read_load(s).start()
    time.sleep(1)
    podman("kill", "-s", "KILL", name)
    time.sleep(3)
    during = load.count()
    podman("start", name)
    wait_until(lambda: s.healthy(name), 60, "charges-1 healthy again")
    wait_until(lambda: len(s.instances("charges_api")) == 2, 60, "charges-1 registered again")
    time.sleep(1)
    load.stop()
    report["kill_charges"] = {"requests": load.ok + len(load.errors), "errors": len(load.errors),
                              "requests_before_restart": during}
    assert load.ok > 0
    assert not load.errors, load.errors[:5]


def test_rolling_restart_with_sigterm(system):
    """Every container but the gateway (the one entry, behind nothing here) is stopped with
    SIGTERM and started again, one after the other, under read load: each exits 0 (PID 1
    handles SIGTERM) and no read fails."""
    s, _ = system
    names = s.containers()
    load = read_load(s).start()
    steps = []
    for svc in ("charges-1", "charges-2", "articles", "registry"):
        t = time.monotonic()
        podman("stop", "-t", "20", names[svc], timeout=60)
        code = json.loads(podman("inspect", names[svc]).stdout)[0]["State"]["ExitCode"]
        assert code == 0, f"{svc} exited {code} on SIGTERM"
        stop_s = time.monotonic() - t
        podman("start", names[svc])
        wait_until(lambda: s.healthy(names[svc]), 60, f"{svc} healthy again")
        if svc.startswith("charges"):
            wait_until(lambda: len(s.instances("charges_api")) == 2, 60, f"{svc} registered")
        steps.append({"container": svc, "stop_s": round(stop_s, 2),
                      "back_s": round(time.monotonic() - t, 2)})
    time.sleep(1)
    load.stop()
    report["rolling_restart"] = {"requests": load.ok + len(load.errors),
                                 "errors": len(load.errors), "steps": steps}
    assert load.ok > 0
    assert not load.errors, load.errors[:5]


def test_down_leaves_nothing_behind(system):
    s, _ = system
    t = time.monotonic()
    s.compose("down", "-v", "-t", "20")
    # podman-compose 1.0.3 leaves the project's network behind; removing it is part of down
    podman("network", "rm", f"{s.project}_default", check=False)
    report["down_s"] = round(time.monotonic() - t, 2)
    label = f"label=io.podman.compose.project={s.project}"
    assert podman("ps", "-a", "-q", "--filter", label).stdout.strip() == ""
    assert podman("volume", "ls", "-q", "--filter", label).stdout.strip() == ""
    vols = podman("volume", "ls", "--format", "{{.Name}}").stdout.split()
    assert not [v for v in vols if v.startswith(s.project)], vols
    nets = podman("network", "ls", "--format", "{{.Name}}").stdout.split()
    assert not [n for n in nets if n.startswith(s.project)], nets
