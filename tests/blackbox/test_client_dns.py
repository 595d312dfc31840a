"""The HTTP clients' host-name cache (lib/dnscache.c in lib/client.c) from outside.

CLIENT_DNS_TTL_MS is validated at start-up like every variable (exit 2, one line naming it);
a gateway whose upstream is given by host name (static:rec=http://localhost:PORT) proxies
with the cache on (the default) and off (0), with many upstream connections opened at once,
and stops with no sanitizer report (the harness reads ASan/LSan output at stop: the cache is
freed with each worker's client). Lookups per connection are counted in the unit tests
(tests/unit/test_client.c, test_dnscache.c); nothing here depends on an outside resolver."""

import threading

import pytest
import requests

from gateway_util import Fleet, Gateway, bootstrap_clients, gateway_env
from harness import IO_TIMEOUT, free_port


@pytest.mark.parametrize("value", ["abc", "-1", "10x", "2h", "1.5s"])
def test_bad_ttl_exits_2_with_one_line(run_process, value):
    res = run_process("registry", {"PORT": str(free_port()), "CLIENT_DNS_TTL_MS": value})
    assert res.returncode == 2, res.stderr
    assert len(res.stderr_lines) == 1, res.stderr
    line = res.stderr_lines[0]
    assert line.startswith("lotmesh-registry: configuration error: CLIENT_DNS_TTL_MS "), line
    assert f'"{value}"' in line


@pytest.mark.parametrize("value", ["0", "30000", "5s", ""])
def test_valid_ttls_start(start_process, value):
    start_process("registry", {"CLIENT_DNS_TTL_MS": value}).assert_healthy()


@pytest.fixture(scope="module")
def creds(tmp_path_factory):
    return bootstrap_clients(tmp_path_factory.mktemp("dns-clients"))


@pytest.mark.parametrize("ttl", [None, "0"], ids=["cache-default", "cache-off"])
def test_gateway_reaches_an_upstream_by_host_name(tmp_path, creds, rec, ttl):
    fleet = Fleet(tmp_path)
    try:
        extra = {"GATEWAY_SERVICES": "rec"}
        if ttl is not None:
            extra["CLIENT_DNS_TTL_MS"] = ttl
        env = gateway_env(creds, f"static:rec=http://localhost:{rec.port}", **extra)
        gw = Gateway(fleet.start("gateway", env), creds)
        headers = gw.auth()
        tag = f"dns-{ttl or 'default'}-{free_port()}"
        statuses, lock = [], threading.Lock()

        def call(i):
            # a new client connection each, several at once: the gateway opens several
            # upstream connections to "localhost" (first lookups, then cache hits)
            r = requests.get(gw.url(f"/api/rec/api/{tag}/{i}"), headers=headers,
                             timeout=IO_TIMEOUT)
            with lock:
                statuses.append(r.status_code)

        # waves of 4: the recorder listens with Python's backlog of 5, and a SYN it drops
        # comes again only after 1 s, the gateway's connect timeout (a 504 of the test's own)
        for wave in range(6):
            threads = [threading.Thread(target=call, args=(wave * 4 + i,)) for i in range(4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(IO_TIMEOUT * 2)
        assert statuses == [200] * 24, statuses
        assert len(rec.wait_for(tag, 24)) == 24
    finally:
        problems = fleet.stop()
    assert not problems, "\n".join(problems)
