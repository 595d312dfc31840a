"""deploy/k8s: every overlay renders offline (scripts/kustomize.sh: `kubectl kustomize`, or
Debian's older kubectl) and every object passes the Kubernetes schemas of npm
kubernetes-models plus a strict unknown-field check (tools/k8s-check.mjs); the rendered
objects carry what DESIGN 3.9 asks for; broken manifests fail."""

import shutil
import subprocess

import pytest
import yaml

from util import DEPLOY, REPO

TOOLS = REPO / "tests" / "delivery" / "tools"
OVERLAYS = ("dev", "prod")
WORKLOADS = {"gateway": 8000, "articles": 8002, "charges": 8001}


@pytest.fixture(scope="module", autouse=True)
def tools():
    subprocess.run([str(TOOLS / "setup.sh")], check=True, timeout=300)


def render(directory):
    return subprocess.run([str(REPO / "scripts" / "kustomize.sh"), str(directory)],
                          capture_output=True, text=True, timeout=120)


def check(path):
    return subprocess.run(["node", str(TOOLS / "k8s-check.mjs"), str(path)],
                          capture_output=True, text=True, timeout=120, cwd=str(TOOLS))


def rendered(overlay, tmp_path):
    r = render(DEPLOY / "k8s" / "overlays" / overlay)
    assert r.returncode == 0, r.stderr
    out = tmp_path / f"{overlay}.yaml"
    out.write_text(r.stdout)
    return out, [d for d in yaml.safe_load_all(r.stdout) if d]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_and_validates(overlay, tmp_path):
    out, objs = rendered(overlay, tmp_path)
    v = check(out)
    assert v.returncode == 0, v.stdout + v.stderr
    assert "23 objects checked" in v.stdout, v.stdout
    kinds = {o["kind"] for o in objs}
    assert kinds == {"ConfigMap", "Deployment", "HorizontalPodAutoscaler", "NetworkPolicy",
                     "PodDisruptionBudget", "Service"}
    assert all(o["metadata"]["namespace"] == ("lotmesh-dev" if overlay == "dev" else "lotmesh")
               for o in objs)
    assert "Secret" not in kinds  # referenced, never stored


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_objects_carry_the_design(overlay, tmp_path):
    _, objs = rendered(overlay, tmp_path)
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
            assert "secretKeyRef" in env["EVENT_BROKER_URL"]["valueFrom"]
        image = c["image"]
        if overlay == "prod":
            assert image.startswith(f"ghcr.io/lotmesh/{name}:") and not image.endswith(":latest")
        hpa = by[("HorizontalPodAutoscaler", name)]
        assert hpa["spec"]["scaleTargetRef"]["name"] == name
        pdb = by[("PodDisruptionBudget", name)]
        assert pdb["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"] == name
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


@pytest.mark.parametrize("edit,expected", [
    (lambda r: replace_in(r / "base" / "charges.yaml", "readinessProbe:", "readinessProbes:"),
     "Deployment/charges: /spec/template/spec/containers/0/readinessProbes: unknown field"),
    (lambda r: replace_in(r / "base" / "articles.yaml", "terminationGracePeriodSeconds: 30",
                          "terminationGracePeriodSeconds: thirty"),
     "/spec/template/spec/terminationGracePeriodSeconds must be integer"),
    (lambda r: replace_in(r / "base" / "networkpolicy.yaml", "policyTypes:", "policyType:"),
     "/spec/policyType: unknown field"),
    (lambda r: replace_in(r / "base" / "networkpolicy.yaml", "kind: NetworkPolicy",
                          "kind: NetworkPolicies"),
     "unknown kind NetworkPolicies"),
], ids=["unknown-field", "wrong-type", "unknown-field-top", "unknown-kind"])
def test_a_broken_manifest_fails(tmp_path, edit, expected):
    overlay = broken_copy(tmp_path, edit)
    r = render(overlay)
    assert r.returncode == 0, r.stderr
    out = tmp_path / "broken.yaml"
    out.write_text(r.stdout)
    v = check(out)
    assert v.returncode == 1, v.stdout
    assert expected in v.stdout, v.stdout


def test_a_kustomization_naming_a_missing_file_fails(tmp_path):
    overlay = broken_copy(tmp_path, lambda r: (r / "base" / "charges.yaml").unlink())
    r = render(overlay)
    assert r.returncode != 0
    assert "charges.yaml" in r.stderr
