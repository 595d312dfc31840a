"""SERVICE_REGISTRY_URL=dns: (DESIGN 3.9, lib/mesh/dnsdisc.c): a name resolves to all of its
addresses, each an instance, and the list follows the name as it changes.

The name lives in a hosts file this test owns: the gateway runs in a private mount namespace
(`unshare --mount`) in which that file is bind-mounted over /etc/hosts, so getaddrinfo inside
the gateway — and nothing else on the machine — sees it; rewriting the file in place is a DNS
change. Two real articles processes listen on 127.0.0.2 and 127.0.0.3 on the same port, each
with its own database holding one article the other lacks, so every answer through the
gateway tells which address served it."""

import json
import shutil
import subprocess

import pytest
import requests

from gateway_util import SECRET
from harness import IO_TIMEOUT, Proc, base_env, free_port, poll

NAME = "articles.lotmesh.test"
ADDRS = ("127.0.0.2", "127.0.0.3")


class NamespacedProc(Proc):
    """A Proc whose /etc/hosts is hosts_file: unshare and sh exec into the binary, so the
    PID is the process's own and the harness stops it by PID as usual."""

    def __init__(self, name, env, port, workdir, hosts_file):
        super().__init__(name, env, port, workdir)
        self.hosts_file = hosts_file

    def start(self):
        self._err = open(self.stderr_path, "wb")
        self._out = open(self.stdout_path, "wb")
        self.popen = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c",
             'mount --bind "$0" /etc/hosts && exec "$1"', str(self.hosts_file), str(self.exe)],
            env=self.env, stdin=subprocess.DEVNULL, stdout=self._out, stderr=self._err,
            cwd=str(self.stderr_path.parent), start_new_session=True)
        return self


def write_hosts(path, addrs):
    # in place (same inode): the bind mount keeps showing this file
    with open(path, "r+" if path.exists() else "w") as f:
        f.truncate(0)
        f.write("127.0.0.1 localhost\n" + "".join(f"{a} {NAME}\n" for a in addrs))


@pytest.fixture
def system(start_process, tmp_path):
    if shutil.which("unshare") is None:
        pytest.fail("unshare (util-linux) is missing", pytrace=False)
    port = free_port()
    articles = {}
    for addr in ADDRS:
        # token check off (the harness's default): the test writes to each one directly
        data = tmp_path / f"articles-{addr}"  # a database each
        data.mkdir()
        p = start_process("articles", {"BIND_ADDRESS": addr, "PORT": str(port), "WORKERS": "1",
                                       "LOTMESH_DATA_DIR": str(data)}, wait=False)
        articles[addr] = p
    for addr, p in articles.items():  # the harness probes 127.0.0.1; these listen elsewhere
        poll(lambda: _answers(addr, port), timeout=15)
    hosts = tmp_path / "hosts"
    write_hosts(hosts, ADDRS)
    gw_port = free_port()
    data = tmp_path / "gateway-data"
    data.mkdir()
    env = base_env({"PORT": gw_port, "BIND_ADDRESS": "127.0.0.1", "WORKERS": "2",
                    "ACCESS_LOG": "false", "LOTMESH_DATA_DIR": data,
                    "SERVICE_TOKEN_SECRET": SECRET,
                    "SERVICE_REGISTRY_URL": f"dns:articles_api={NAME}:{port}",
                    "SERVICE_DNS_REFRESH": "200ms"})
    gw = NamespacedProc("gateway", env, gw_port, tmp_path, hosts)
    gw.start()
    try:
        gw.wait_healthy()
        dev = json.loads((data / "dev-client.json").read_text())
        r = gw.request("POST", "/auth/token", data={"grant_type": "client_credentials"},
                       auth=(dev["client_id"], dev["client_secret"]))
        assert r.status_code == 200, r.text
        token = r.json()["access_token"]
        marks = {addr: f"DNS-{addr}" for addr in ADDRS}
        yield {"gw": gw, "hosts": hosts, "token": token, "marks": marks, "port": port,
               "articles": articles}
    finally:
        problems = gw.check_stopped_cleanly()
        if problems:
            pytest.fail("\n".join(problems), pytrace=False)


def _answers(addr, port):
    try:
        return requests.get(f"http://{addr}:{port}/health", timeout=1).status_code == 200
    except requests.RequestException:
        return False


def seed(s):
    """Each articles instance gets its own article, written to it directly (through the
    gateway, whichever instance answered would get it)."""
    for addr, mark in s["marks"].items():
        r = requests.post(f"http://{addr}:{s['port']}/api/v1/article/create",
                          json={"artikelnummer": mark, "bezeichnung": mark, "einheit_id": 1},
                          timeout=IO_TIMEOUT)
        assert r.status_code == 201, r.text


def served_by(s, n=30):
    """Which instances answered n lists through the gateway (every answer must be 200)."""
    seen = set()
    for _ in range(n):
        r = requests.get(s["gw"].url("/api/articles_api/api/v1/articles"),
                         headers={"Authorization": f"Bearer {s['token']}"}, timeout=IO_TIMEOUT)
        assert r.status_code == 200, r.text
        nums = {a["artikelnummer"] for a in r.json()}
        (addr,) = [a for a, m in s["marks"].items() if m in nums]
        seen.add(addr)
    return seen


def instances(s):
    return s["gw"].metric("lotmesh_discovery_instances", service="articles_api")


def test_dns_name_resolves_to_every_address_and_follows_changes(system):
    s = system
    seed(s)
    poll(lambda: instances(s) == 2, timeout=10)
    assert served_by(s) == set(ADDRS)

    write_hosts(s["hosts"], ADDRS[1:])  # one address left
    poll(lambda: instances(s) == 1, timeout=10)
    assert served_by(s) == {ADDRS[1]}

    write_hosts(s["hosts"], ADDRS)  # back to both
    poll(lambda: instances(s) == 2, timeout=10)
    assert served_by(s) == set(ADDRS)
    assert s["gw"].metric("lotmesh_discovery_watch_updates_total", service="articles_api") >= 3
    assert s["gw"].metric("lotmesh_discovery_dns_refresh_seconds") == pytest.approx(0.2)


@pytest.mark.parametrize("spec", ["dns:", "dns:articles_api", "dns:articles_api=host",
                                  "dns:articles_api=host:0", "dns:a=h:1;a=h:2",
                                  "dns:a=ho st:80"])
def test_bad_dns_spec_is_one_configuration_error(run_process, spec):
    res = run_process("gateway", {"PORT": str(free_port()), "SERVICE_REGISTRY_URL": spec})
    assert res.returncode == 2, res.stderr
    lines = [ln for ln in res.stderr.splitlines() if "configuration error" in ln]
    assert len(lines) == 1 and "SERVICE_REGISTRY_URL" in lines[0] and "dns:" in lines[0], \
        res.stderr
