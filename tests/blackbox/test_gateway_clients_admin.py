"""Client administration at the gateway (issue 15): /admin/clients with the admin scope.
Secrets and API keys are shown once and stored hashed; scopes and limits change; secrets
and keys rotate; a revoked client's tokens stop working at once on the instance that revoked
it and within seconds on another instance sharing the clients file (which watches it)."""

import json
import shutil
import threading

import pytest
import requests

from gateway_util import Fleet, Gateway, bootstrap_clients, gateway_env
from harness import IO_TIMEOUT, poll
from services_util import assert_full_problem


@pytest.fixture(scope="module")
def creds(tmp_path_factory):
    return bootstrap_clients(tmp_path_factory.mktemp("adm-clients"))


@pytest.fixture
def setup(tmp_path, creds, rec):
    path = tmp_path / "clients.json"
    shutil.copy(creds.clients_file, path)
    fleet = Fleet(tmp_path)
    env = gateway_env(creds, f"static:rec={rec.url}", GATEWAY_SERVICES="rec", ACCESS_LOG="false",
                      GATEWAY_CLIENTS_FILE=str(path))
    a = Gateway(fleet.start("gateway", env), creds)
    b = Gateway(fleet.start("gateway", env), creds)
    yield a, b, path
    problems = fleet.stop()
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


def admin(gw, method, path="", **kw):
    return gw.api(method, "/admin/clients" + path, client="dev", api_key=True, **kw)


def token(gw, cid, secret):
    return requests.post(gw.url("/auth/token"), data={"grant_type": "client_credentials"},
                         auth=(cid, secret), timeout=IO_TIMEOUT * 3)


def call(gw, headers):
    return requests.get(gw.url("/api/rec/api/x"), headers=headers, timeout=IO_TIMEOUT)


def test_create_shows_secrets_once_and_stores_hashes(setup):
    a, b, path = setup
    r = admin(a, "POST", json={"client_id": "erp-1", "scope": "read write",
                               "rate_limit": "100/m"})
    assert r.status_code == 201, r.text
    assert r.headers["Location"] == "/admin/clients/erp-1"
    assert r.headers["Cache-Control"] == "no-store"
    c = r.json()
    assert c["client_id"] == "erp-1" and c["scope"] == "read write" and c["api_keys"] == 1
    secret, key = c["client_secret"], c["api_key"]
    text = path.read_text()
    assert secret not in text and key not in text and "$argon2id$" in text
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    listed = admin(a, "GET").json()
    assert {"client_id": "erp-1", "scope": "read write", "api_keys": 1, "rate_limit": "100/m",
            "rate_limit_burst": 100} in listed
    assert all("secret" not in json.dumps(x) and "hash" not in json.dumps(x) for x in listed)
    assert admin(a, "GET", "/erp-1").json()["scope"] == "read write"
    # usable at once here, and on the other instance once it has seen the file
    t = token(a, "erp-1", secret)
    assert t.status_code == 200 and t.json()["scope"] == "read write"
    assert call(a, {"X-API-Key": key}).status_code == 200
    assert poll(lambda: call(b, {"X-API-Key": key}).status_code == 200, timeout=10)
    # generated id when none is given
    g = admin(a, "POST", json={})
    assert g.status_code == 201 and g.json()["client_id"].startswith("c-")
    assert g.json()["scope"] == "read"


def test_patch_rotates_and_changes_scope(setup):
    a, b, path = setup
    c = admin(a, "POST", json={"client_id": "erp-2"}).json()
    assert call(a, {"X-API-Key": c["api_key"]}).status_code == 200
    r = admin(a, "PATCH", "/erp-2", json={"rotate_api_key": True, "scope": "read write"})
    assert r.status_code == 200, r.text
    assert "client_secret" not in r.json() and r.json()["scope"] == "read write"
    new_key = r.json()["api_key"]
    assert call(a, {"X-API-Key": c["api_key"]}).status_code == 401
    assert call(a, {"X-API-Key": new_key}).status_code == 200
    r = admin(a, "PATCH", "/erp-2", json={"rotate_secret": True})
    new_secret = r.json()["client_secret"]
    assert token(a, "erp-2", c["client_secret"]).status_code == 401
    assert token(a, "erp-2", new_secret).status_code == 200
    r = admin(a, "PATCH", "/erp-2", json={"rate_limit": "1/m"})
    assert r.json()["rate_limit"] == "1/m"
    assert [call(a, {"X-API-Key": new_key}).status_code for _ in range(2)] == [200, 429]
    r = admin(a, "PATCH", "/erp-2", json={"rate_limit": None})
    assert "rate_limit" not in r.json()


def test_revoked_clients_tokens_stop_at_once_everywhere(setup):
    a, b, path = setup
    c = admin(a, "POST", json={"client_id": "erp-3", "scope": "read"}).json()
    tok = token(a, "erp-3", c["client_secret"]).json()["access_token"]
    bearer = {"Authorization": f"Bearer {tok}"}
    assert poll(lambda: call(b, bearer).status_code == 200, timeout=10)
    assert call(a, bearer).status_code == 200  # cached as verified on both
    assert admin(a, "DELETE", "/erp-3").status_code == 204
    r = call(a, bearer)
    p = assert_full_problem(r, 401)
    assert "revoked" in p["detail"]
    assert poll(lambda: call(b, bearer).status_code == 401, timeout=10)
    assert call(a, {"X-API-Key": c["api_key"]}).status_code == 401
    assert token(a, "erp-3", c["client_secret"]).status_code == 401
    assert admin(a, "GET", "/erp-3").status_code == 404
    assert admin(a, "DELETE", "/erp-3").status_code == 404


def test_changes_through_two_instances_at_once_are_all_kept(setup):
    a, b, path = setup
    codes = []

    def create(gw, i):
        codes.append(admin(gw, "POST", json={"client_id": f"par-{i}"}, timeout=60).status_code)

    ts = [threading.Thread(target=create, args=((a, b)[i % 2], i)) for i in range(6)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert codes == [201] * 6
    ids = {c["client_id"] for c in json.loads(path.read_text())["clients"]}
    assert {f"par-{i}" for i in range(6)} <= ids


@pytest.mark.parametrize("method, sub, body, status", [
    ("POST", "", {"client_id": "dev"}, 409),
    ("POST", "", {"client_id": "bad id!"}, 422),
    ("POST", "", {"scope": "root"}, 422),
    ("POST", "", {"rate_limit": "lots"}, 422),
    ("POST", "", {"secret": "mine"}, 400),
    ("PATCH", "/nobody", {"scope": "read"}, 404),
    ("PATCH", "/reader", {"rotate_secret": "yes"}, 422),
])
def test_bad_admin_requests_are_problems(setup, method, sub, body, status):
    a, b, path = setup
    before = path.read_text()
    r = admin(a, method, sub, json=body)
    assert_full_problem(r, status)
    assert path.read_text() == before


def test_admin_scope_is_required(setup, creds):
    a, b, path = setup
    r = a.api("GET", "/admin/clients", client="writer", api_key=True)
    assert_full_problem(r, 403)
    assert_full_problem(requests.get(a.url("/admin/clients"), timeout=IO_TIMEOUT), 401)


def test_with_redis_a_change_is_announced_to_every_instance(tmp_path, creds, rec, redis_server):
    """The file is looked at only every minute here: the other instance learns of the
    revocation through Redis (the change counter it reads every 250 ms)."""
    path = tmp_path / "clients.json"
    shutil.copy(creds.clients_file, path)
    fleet = Fleet(tmp_path)
    try:
        env = gateway_env(creds, f"static:rec={rec.url}", GATEWAY_SERVICES="rec",
                          ACCESS_LOG="false", GATEWAY_CLIENTS_FILE=str(path),
                          GATEWAY_CLIENTS_WATCH="60s", RATE_LIMIT_URL=redis_server.url)
        a = Gateway(fleet.start("gateway", env), creds)
        b = Gateway(fleet.start("gateway", env), creds)
        c = admin(a, "POST", json={"client_id": "ann-1"}).json()
        key = {"X-API-Key": c["api_key"]}
        assert poll(lambda: call(b, key).status_code == 200, timeout=5)
        assert admin(a, "DELETE", "/ann-1").status_code == 204
        assert poll(lambda: call(b, key).status_code == 401, timeout=5)
        assert int(redis_server.client().get("lotmesh:gateway:clients")) >= 2
    finally:
        problems = fleet.stop()
    assert not problems, problems
