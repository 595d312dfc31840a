"""deploy/k8s: every overlay renders offline (scripts/kustomize.sh: `kubectl kustomize` of
kustomize v4+, or a standalone kustomize) with no deprecated field, and every object passes the Kubernetes schemas of npm
kubernetes-models plus a strict unknown-field check (tools/k8s-check.mjs); the rendered
objects carry what DESIGN 3.9 asks for; broken manifests fail."""

import json
import shutil
import subprocess
import time
import uuid

import pytest
import yaml

from util import DEPLOY, REPO, podman

TOOLS = REPO / "tests" / "delivery" / "tools"
OVERLAYS = ("dev", "prod")
WORKLOADS = {"gateway": 8000, "articles": 8002, "charges": 8001}


@pytest.fixture(scope="module", autouse=True)
def tools():
    subprocess.run([str(REPO / "scripts" / "npm-tools.sh"), str(TOOLS)], check=True, timeout=300)


def render(directory):
    return subprocess.run([str(REPO / "scripts" / "kustomize.sh"), str(directory)],
                          capture_output=True, text=True, timeout=120)


def check(*paths):
    return subprocess.run(["node", str(TOOLS / "k8s-check.mjs"), *map(str, paths)],
                          capture_output=True, text=True, timeout=120, cwd=str(TOOLS))


@pytest.fixture(scope="module")
def overlays(tmp_path_factory):
    """Each overlay rendered once: {overlay: (path of the YAML, [objects])}."""
    tmp = tmp_path_factory.mktemp("k8s")
    out = {}
    for overlay in OVERLAYS:
        r = render(DEPLOY / "k8s" / "overlays" / overlay)
        assert r.returncode == 0, r.stderr
        # current kustomize fields only: no deprecation warning
        assert "deprecated" not in r.stderr, r.stderr
        path = tmp / f"{overlay}.yaml"
        path.write_text(r.stdout)
        out[overlay] = (path, [d for d in yaml.safe_load_all(r.stdout) if d])
    return out


def test_every_overlay_validates(overlays):
    v = check(*(path for path, _ in overlays.values()))
    assert v.returncode == 0, v.stdout + v.stderr
    for path, _ in overlays.values():
        assert f"{path}: 24 objects checked" in v.stdout, v.stdout


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_kinds_and_namespace(overlay, overlays):
    _, objs = overlays[overlay]
    kinds = {o["kind"] for o in objs}
    assert kinds == {"ConfigMap", "Deployment", "HorizontalPodAutoscaler", "NetworkPolicy",
                     "PodDisruptionBudget", "Service"}
    assert all(o["metadata"]["namespace"] == ("lotmesh-dev" if overlay == "dev" else "lotmesh")
               for o in objs)
    assert "Secret" not in kinds  # referenced, never stored


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_objects_carry_the_design(overlay, overlays):
    _, objs = overlays[overlay]
    by = {(o["kind"], o["metadata"]["name"]): o for o in objs}
    config = by[("ConfigMap", "lotmesh-config")]["data"]
    assert config["SERVICE_REGISTRY_URL"].startswith("dns:")
    for name, port in WORKLOADS.items():
        dep = by[("Deployment", name)]
        spec = dep["spec"]
        assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
        pod = spec["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["automountServiceAccountToken"] is False
        (c,) = pod["containers"]
        assert c["readinessProbe"]["httpGet"]["path"] == "/ready"
        assert c["livenessProbe"]["httpGet"]["path"] == "/health"
        assert c["resources"]["requests"] and c["resources"]["limits"]
        sc = c["securityContext"]
        assert sc["readOnlyRootFilesystem"] and sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"]["drop"] == ["ALL"]
        # drain: the preStop pause plus the process's SHUTDOWN_TIMEOUT fit the grace period
        pause = c["lifecycle"]["preStop"]["sleep"]["seconds"]
        assert pause + int(config["SHUTDOWN_TIMEOUT"].rstrip("s")) < \
            pod["terminationGracePeriodSeconds"]
        assert c["ports"][0]["containerPort"] == port
        env = {e["name"]: e for e in c["env"]}
        assert env["SERVICE_ADDRESS"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
        assert env["SERVICE_TOKEN_SECRET"]["valueFrom"]["secretKeyRef"]["name"] == \
            "lotmesh-secrets"
        if name != "gateway":
            assert "secretKeyRef" in env["DATABASE_URL"]["valueFrom"]
            broker = env["EVENT_BROKER_URL"]["valueFrom"]["secretKeyRef"]
            assert (broker["name"], broker["key"]) == ("lotmesh-secrets", "event-broker-url")
            assert not broker.get("optional"), broker  # no silent fallback to the feed
        image = c["image"]
        if overlay == "prod":
            assert image.startswith(f"ghcr.io/lotmesh/{name}:") and not image.endswith(":latest")
        hpa = by[("HorizontalPodAutoscaler", name)]
        assert hpa["spec"]["scaleTargetRef"]["name"] == name
        pdb = by[("PodDisruptionBudget", name)]
        assert pdb["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"] == name
    # the event settings every pod gets (validated at start-up by the test below)
    assert config["EVENT_BROKER_QUEUE_TYPE"] == "classic"
    assert config["EVENT_RETENTION"] == ("720h" if overlay == "prod" else "168h")
    assert config["EVENT_MAX_ATTEMPTS"] == "5"
    # the broker's definitions: deploy/rabbitmq/definitions.json, which Compose loads, and
    # classic queues, as EVENT_BROKER_QUEUE_TYPE declares them
    defs = json.loads(by[("ConfigMap", "lotmesh-rabbitmq-definitions")]["data"]["definitions.json"])
    assert defs == json.loads((DEPLOY / "rabbitmq" / "definitions.json").read_text())
    assert not [q for q in defs["queues"] if "x-queue-type" in q["arguments"]]
    # clients balance over pod addresses: the services the gateway and charges call are headless
    for svc in ("articles-api", "charges-api"):
        assert by[("Service", svc)]["spec"]["clusterIP"] == "None"
    assert by[("Service", "gateway")]["spec"]["type"] == "ClusterIP"
    for ext in ("postgres", "rabbitmq", "redis"):
        assert by[("Service", ext)]["spec"]["type"] == "ExternalName"
    # the network policies: default deny, and charges is reached only from the gateway
    assert by[("NetworkPolicy", "lotmesh-default-deny")]["spec"]["policyTypes"] == \
        ["Ingress", "Egress"]
    charges_in = by[("NetworkPolicy", "charges")]["spec"]["ingress"]
    assert [f["podSelector"]["matchLabels"]["app.kubernetes.io/name"]
            for rule in charges_in for f in rule["from"]] == ["gateway"]


def broken_copy(tmp_path, edit):
    root = tmp_path / "k8s"
    shutil.copytree(DEPLOY / "k8s", root)
    edit(root)
    return root / "overlays" / "prod"


def replace_in(path, old, new):
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


def test_a_broken_source_manifest_fails(tmp_path):
    """A typo in a base file, rendered through an overlay, fails the check by its path."""
    overlay = broken_copy(tmp_path, lambda r: replace_in(r / "base" / "charges.yaml",
                                                         "readinessProbe:", "readinessProbes:"))
    r = render(overlay)
    assert r.returncode == 0, r.stderr
    out = tmp_path / "broken.yaml"
    out.write_text(r.stdout)
    v = check(out)
    assert v.returncode == 1, v.stdout
    assert "Deployment/charges: /spec/template/spec/containers/0/readinessProbes: unknown field" \
        in v.stdout, v.stdout


BROKEN = {  # rendered prod manifests with one mistake each, and what the check must say
    "wrong-type": ("terminationGracePeriodSeconds: 30", "terminationGracePeriodSeconds: thirty",
                   "/spec/template/spec/terminationGracePeriodSeconds must be integer"),
    "unknown-field-top": ("policyTypes:", "policyType:", "/spec/policyType: unknown field"),
    "unknown-kind": ("kind: NetworkPolicy", "kind: NetworkPolicies",
                     "unknown kind NetworkPolicies"),
    "missing-required": ("      containers:\n      - ", "      containerz:\n      - ",
                         "must have required property containers"),
    "unknown-field-in-map-value": ("        - containerPort:", "        - containerPorts:",
                                   "/ports/0/containerPorts: unknown field"),
}


def test_broken_rendered_manifests_fail(overlays, tmp_path):
    text = overlays["prod"][0].read_text()
    files = {}
    for name, (old, new, _) in BROKEN.items():
        assert old in text, name
        files[name] = tmp_path / f"{name}.yaml"
        files[name].write_text(text.replace(old, new, 1))
    v = check(*files.values())
    assert v.returncode == 1, v.stdout
    for name, (_, _, expected) in BROKEN.items():
        lines = [ln for ln in v.stdout.splitlines() if ln.startswith(str(files[name]) + " ")]
        assert any(expected in ln for ln in lines), (name, v.stdout)


def test_a_kustomization_naming_a_missing_file_fails(tmp_path):
    overlay = broken_copy(tmp_path, lambda r: (r / "base" / "charges.yaml").unlink())
    r = render(overlay)
    assert r.returncode != 0
    assert "charges.yaml" in r.stderr


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_process_starts_with_its_pods_configuration(overlay, overlays):
    """Each Deployment's container, as the overlay configures it (the ConfigMap and its literal
    env values; the secret references replaced by test values), started from the image `make
    images` built, without a network: its configuration is accepted (a bad value is one line at
    start-up and exit 2) and it gets to listening, the backends being unreachable."""
    _, objs = overlays[overlay]
    config = next(o for o in objs if o["kind"] == "ConfigMap"
                  and o["metadata"]["name"] == "lotmesh-config")["data"]
    secrets = {"service-token": "k8s-test-" + uuid.uuid4().hex + uuid.uuid4().hex,
               "articles-database-url": "sqlite:/data/articles.db",
               "charges-database-url": "sqlite:/data/charges.db",
               "event-broker-url": "amqp://lotmesh:test@rabbitmq:5672/%2F"}
    for dep in (o for o in objs if o["kind"] == "Deployment"):
        name = dep["metadata"]["name"]
        c = dep["spec"]["template"]["spec"]["containers"][0]
        env = dict(config)
        for e in c.get("env", []):
            if "value" in e:
                env[e["name"]] = str(e["value"])
            elif "secretKeyRef" in e.get("valueFrom", {}):
                key = e["valueFrom"]["secretKeyRef"]["key"]
                if key in secrets:
                    env[e["name"]] = secrets[key]
            elif "fieldRef" in e.get("valueFrom", {}):
                env[e["name"]] = "10.0.0.1"
        # the gateway's clients file and access key come from a Secret volume: made in /data
        for var in ("GATEWAY_CLIENTS_FILE", "GATEWAY_ACCESS_KEY_FILE"):
            env.pop(var, None)
        cname = f"lmk8s-{name}-{uuid.uuid4().hex[:8]}"
        args = ["run", "-d", "--name", cname, "--network", "none"]
        for k, v in env.items():
            args += ["-e", f"{k}={v}"]
        podman(*args, f"lotmesh/{name}:latest")
        try:
            deadline = time.monotonic() + 30
            logs = ""
            while time.monotonic() < deadline:
                logs = podman("logs", cname, check=False).stdout + podman("logs", cname, check=False).stderr
                if "listening on" in logs:
                    break
                state = podman("inspect", "--format", "{{.State.Status}}", cname).stdout.strip()
                assert state == "running", f"{overlay}/{name} exited: {logs[-2000:]}"
                time.sleep(0.3)
            assert "listening on" in logs, f"{overlay}/{name}: {logs[-2000:]}"
        finally:
            podman("rm", "-f", "-t", "2", cname, check=False)
