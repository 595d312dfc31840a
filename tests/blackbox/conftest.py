"""pytest fixtures of the lotmesh black-box suite; the machinery lives in harness.py.

    start_process(name, env=None, port=None, wait=True) -> harness.Proc (healthy)
    run_process(name, env=None, timeout=10) -> harness.Finished (for processes that exit)
"""

import os
import signal
import subprocess

import pytest

from harness import (STOP_TIMEOUT, Finished, Proc, _live_pids, base_env, binary, free_port,
                     sanitizer_lines)


def pytest_sessionfinish(session, exitstatus):
    """Stops the servers started on first use for this session (PostgreSQL, RabbitMQ) by
    their PIDs. Under pytest-xdist every worker is a session of its own with its own servers
    and stops them here, before it reports back."""
    import pg_server
    import rabbitmq_server
    rabbitmq_server.shutdown()
    pg_server.shutdown()


# ---- fixtures -------------------------------------------------------------------------------

@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


@pytest.fixture
def start_process(request, tmp_path):
    """Factory: start_process(name, env=None, port=None, wait=True) -> Proc.

    PORT is set to a free loopback port unless env gives one; BIND_ADDRESS to 127.0.0.1;
    ACCESS_LOG off unless env says otherwise (keeps stderr small); LOTMESH_DATA_DIR to a
    fresh directory under the test's tmp dir (databases, snapshots, keys stay per test). Teardown stops every
    process by PID with SIGTERM and fails the test on a non-zero exit (set
    proc.expected_exit to expect another), a hang, or a sanitizer report."""
    procs = []

    def start(name, env=None, port=None, wait=True):
        env = dict(env or {})
        if port is None:
            port = int(env["PORT"]) if "PORT" in env else free_port()
        data_dir = tmp_path / f"data-{name}-{port}"
        data_dir.mkdir(exist_ok=True)
        full = {"PORT": str(port), "BIND_ADDRESS": "127.0.0.1", "ACCESS_LOG": "false",
                "LOG_LEVEL": "info", "LOTMESH_DATA_DIR": str(data_dir)}
        full.update(env)
        p = Proc(name, base_env(full), port, tmp_path)
        procs.append(p)
        p.start()
        if wait:
            p.wait_healthy()
        return p

    yield start

    failed = getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed
    problems = []
    for p in procs:
        if failed:  # shown under "Captured stdout teardown"
            print(f"--- stderr tail of {p.name} (pid {p.pid}, port {p.port}) ---")
            print(p.stderr_tail())
        try:
            problems += p.check_stopped_cleanly()
        finally:
            if p.alive():
                p.kill()
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


@pytest.fixture
def run_process(tmp_path):
    """Runner for processes expected to exit on their own (configuration errors, start-up
    failures): run_process(name, env, timeout=10) -> Finished(returncode, stderr, stdout).
    The environment is exactly base_env(env): no PORT default. A sanitizer report fails."""

    def run(name, env=None, timeout=10.0):
        exe = binary(name)
        p = subprocess.Popen([str(exe)], env=base_env(env), stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=str(tmp_path),
                             start_new_session=True)
        _live_pids.add(p.pid)
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.kill(p.pid, signal.SIGKILL)
            out, err = p.communicate(timeout=STOP_TIMEOUT)
            _live_pids.discard(p.pid)
            pytest.fail(f"{name} did not exit within {timeout}s; stderr:\n"
                        f"{err.decode(errors='replace')}", pytrace=False)
        _live_pids.discard(p.pid)
        res = Finished(p.returncode, err.decode(errors="replace"),
                       out.decode(errors="replace"))
        san = sanitizer_lines(res.stderr)
        assert not san, f"sanitizer report:\n{res.stderr}"
        return res

    return run




@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    """One redis-server for the whole test session (harness.RedisServer); a test that stops
    it starts it again before it ends."""
    from harness import RedisServer
    srv = RedisServer(tmp_path_factory.mktemp("redis"))
    srv.start()
    yield srv
    srv.stop(signal.SIGTERM)


@pytest.fixture(scope="session")
def rabbitmq():
    """One RabbitMQ for the whole test session (rabbitmq_server.RabbitServer, started on first
    use: it boots in 8-10 s); a test that stops it starts it again before it ends."""
    import rabbitmq_server
    try:
        return rabbitmq_server.get()
    except RuntimeError as e:
        pytest.fail(str(e), pytrace=False)


# ---- shared by the gateway suites: one recording upstream per module, a fleet per test ----


@pytest.fixture(scope="module")
def rec():
    """A recording upstream (gateway_util.Recorder) for the module's gateways."""
    from gateway_util import Recorder

    r = Recorder()
    yield r
    r.close()


@pytest.fixture
def fleet(tmp_path):
    """Processes started by a test (gateway_util.Fleet); stopped after it, problems fail it."""
    from gateway_util import Fleet

    f = Fleet(tmp_path)
    yield f
    problems = f.stop()
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)
