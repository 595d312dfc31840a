"""gha.py — runs one job of a GitHub Actions workflow here, step by step, the way a runner
would, as far as this machine allows (test_workflows.py).

What it does for a job (one matrix entry):
- `uses: actions/checkout@…`: a fresh `git clone` of the repository's HEAD into the workspace
  (what checkout gives a push build: the committed tree, nothing of the working copy);
- `run:` steps in order with the runner's shell (`bash --noprofile --norc -eo pipefail`), in
  the workspace or the step's `working-directory`, with the step's and job's `env:`, the
  GITHUB_* variables a push build has (GITHUB_SHA, GITHUB_REF_NAME, GITHUB_REPOSITORY, …),
  GITHUB_OUTPUT read back into `steps.<id>.outputs`, and `${{ … }}` expressions of the forms
  the workflows use (matrix.*, github.*, steps.*.outputs.*, secrets.*) substituted;
- `if:` is honoured for `always()`; other conditions are refused (the workflows have none);
- any other `uses:` is refused: this runner does not download actions.

What it cannot do here, and the caller decides around: jobs in a `container:` (no Docker
daemon), pushing to a registry, a cluster to apply to. The tools a step calls come from PATH,
which the caller may prefix with its own directory (e.g. `docker` → podman with the locally
made Debian base, since no image can be pulled)."""

import os
import re
import subprocess
import tempfile
import time
from pathlib import Path

import yaml

EXPR = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")


def load(path):
    doc = yaml.safe_load(Path(path).read_text())
    if True in doc:  # YAML 1.1 reads the key `on` as True
        doc["on"] = doc.pop(True)
    return doc


class StepFailed(AssertionError):
    pass


class Runner:
    def __init__(self, repo, workflow, job, matrix=None, github=None, secrets=None,
                 path_prefix=None, timeout=600):
        self.repo = Path(repo)
        self.doc = load(workflow)
        self.job_name = job
        self.job = self.doc["jobs"][job]
        self.matrix = matrix or {}
        self.secrets = secrets or {}
        self.path_prefix = path_prefix
        self.timeout = timeout
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True,
                             text=True, check=True).stdout.strip()
        self.github = {"sha": sha, "ref_name": "main", "ref": "refs/heads/main",
                       "repository": "lotmesh/lotmesh", "repository_owner": "lotmesh",
                       "server_url": "https://github.com", "actor": "lotmesh-ci",
                       "event_name": "push", **(github or {})}
        self.outputs = {}
        self.log = []  # (step name, exit code, seconds, last lines of output)

    def expr(self, text):
        def one(m):
            e = m.group(1)
            parts = e.split(".")
            if parts[0] == "matrix" and len(parts) == 2:
                return str(self.matrix[parts[1]])
            if parts[0] == "github" and len(parts) == 2:
                return str(self.github[parts[1]])
            if parts[0] == "secrets" and len(parts) == 2:
                return str(self.secrets.get(parts[1], ""))
            if parts[0] == "steps" and len(parts) == 4 and parts[2] == "outputs":
                return self.outputs.get(parts[1], {}).get(parts[3], "")
            raise StepFailed(f"expression not supported by this runner: {e}")
        return EXPR.sub(one, str(text))

    def env(self, workspace, step, output_file):
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("GITHUB_", "RUNNER_", "CI"))}
        g = self.github
        env.update({
            "CI": "true", "GITHUB_ACTIONS": "true", "GITHUB_WORKSPACE": str(workspace),
            "GITHUB_SHA": g["sha"], "GITHUB_REF": g["ref"], "GITHUB_REF_NAME": g["ref_name"],
            "GITHUB_REPOSITORY": g["repository"], "GITHUB_REPOSITORY_OWNER": g["repository_owner"],
            "GITHUB_SERVER_URL": g["server_url"], "GITHUB_ACTOR": g["actor"],
            "GITHUB_EVENT_NAME": g["event_name"], "GITHUB_JOB": self.job_name,
            "GITHUB_OUTPUT": str(output_file), "RUNNER_TEMP": str(output_file.parent),
        })
        for scope in (self.doc.get("env") or {}, self.job.get("env") or {}, step.get("env") or {}):
            env.update({k: self.expr(v) for k, v in scope.items()})
        if self.path_prefix:
            env["PATH"] = f"{self.path_prefix}:{env['PATH']}"
        return env

    def run(self, workspace=None):
        """Runs every step; returns the log. Raises StepFailed at the first failing step."""
        tmp = Path(tempfile.mkdtemp(prefix="gha-"))
        workspace = Path(workspace or tmp / "workspace")
        workspace.mkdir(parents=True, exist_ok=True)
        failed = None
        for i, step in enumerate(self.job["steps"]):
            name = step.get("name") or step.get("uses") or step.get("run", "").split("\n")[0]
            cond = str(step.get("if", "")).strip()
            if failed and cond != "always()":
                continue
            if cond not in ("", "always()"):
                raise StepFailed(f"step {name!r}: condition {cond!r} not supported")
            uses = step.get("uses", "")
            if uses.startswith("actions/checkout@"):
                p = subprocess.run(["git", "clone", "-q", "--no-local", str(self.repo), str(workspace)],
                                   capture_output=True, text=True, timeout=300)
                self.log.append((name, p.returncode, 0.0, p.stderr[-500:]))
                if p.returncode:
                    failed = failed or name
                continue
            if uses:
                raise StepFailed(f"step {name!r}: action {uses} not available offline")
            out_file = tmp / f"output-{i}"
            out_file.write_text("")
            script = tmp / f"step-{i}.sh"
            script.write_text(self.expr(step["run"]))
            cwd = workspace / self.expr(step.get("working-directory", "."))
            t = time.monotonic()
            p = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", str(script)],
                               cwd=str(cwd), env=self.env(workspace, step, out_file),
                               capture_output=True, text=True, timeout=self.timeout,
                               stdin=subprocess.DEVNULL)
            outs = {}
            for line in out_file.read_text().splitlines():
                if "=" in line:
                    k, v = line.split("=", 1)
                    outs[k] = v
            if step.get("id"):
                self.outputs[step["id"]] = outs
            self.log.append((name, p.returncode, round(time.monotonic() - t, 1),
                             (p.stdout + p.stderr)[-1500:]))
            if p.returncode:
                failed = failed or name
        if failed:
            raise StepFailed(f"job {self.job_name}: step {failed!r} failed: {self.log}")
        return self.log
