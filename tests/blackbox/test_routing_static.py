"""Static path segments own their paths (lib/router.c), seen through articles and charges.

`POST /api/v1/article/create` and `GET|PUT|PATCH|DELETE /api/v1/article/{id}` coexist; the
literal template is the more specific one for the path `/api/v1/article/create`, so every
other method there is a 405 problem with `Allow: POST` — never the `{id}` route answering
400 "bad id" for "create". The parameter routes keep serving every other path (GET, HEAD,
PUT …), and an id that merely starts with "create" is still an id.

One articles and one charges process (charges_util.module_stack) serve the module; the
harness runs them with SERVICE_AUTH=disabled."""

import pytest

from charges_util import (Stack, assert_full_problem, charge_path, module_stack, send_json)

ARTICLE_CREATE = "/api/v1/article/create"
CHARGE_CREATE = "/api/v1/charge/create"
OTHER_METHODS = ["GET", "PUT", "PATCH", "DELETE", "OPTIONS"]


@pytest.fixture(scope="module")
def _stack(tmp_path_factory):
    yield from module_stack(tmp_path_factory, tag="routing-static")


@pytest.fixture
def stack(_stack):
    for p in (_stack.articles, _stack.charges):
        assert p.alive(), p.stderr_tail()
    yield _stack
    for p in (_stack.articles, _stack.charges):
        assert p.alive(), f"{p.name} died:\n{p.stderr_tail()}"


def _service(stack: Stack, which):
    return stack.articles if which == "articles" else stack.charges


CREATES = [("articles", ARTICLE_CREATE), ("charges", CHARGE_CREATE)]


@pytest.mark.parametrize("which,path", CREATES)
@pytest.mark.parametrize("method", OTHER_METHODS)
def test_other_methods_on_create_are_405_allow_post(stack, which, path, method):
    svc = _service(stack, which)
    # with a JSON body too: the body must not make it look like a write to {id}
    r = send_json(svc, method, path, {"menge": 1}) if method in ("PUT", "PATCH") \
        else svc.request(method, path)
    body = assert_full_problem(r, 405, instance=path)
    assert r.headers["Allow"] == "POST"
    assert method in body["detail"] and "POST" in body["detail"]
    assert "id" not in {e.get("field") for e in body.get("errors", [])}


@pytest.mark.parametrize("which,path", CREATES)
def test_head_on_create_is_405_without_body(stack, which, path):
    r = _service(stack, which).request("HEAD", path)
    assert r.status_code == 405
    assert r.headers["Allow"] == "POST"
    assert r.content == b""


def test_create_and_parameter_routes_still_work(stack):
    art = stack.article()
    c = stack.charge(art)
    for svc, path, ident in ((stack.articles, f"/api/v1/article/{art['id']}", art["id"]),
                             (stack.charges, charge_path(c["id"]), c["id"])):
        r = svc.get(path)
        assert r.status_code == 200, r.text
        assert r.json()["id"] == ident
        h = svc.request("HEAD", path)
        assert h.status_code == 200 and h.content == b""
        assert h.headers["ETag"] == r.headers["ETag"]
        # the other methods of {id} are still there (a 405 would list them)
        r = svc.request("POST", path)
        assert_full_problem(r, 405, instance=path)
        assert {m.strip() for m in r.headers["Allow"].split(",")} == \
            {"GET", "HEAD", "PUT", "PATCH", "DELETE"}


@pytest.mark.parametrize("which,path", [("articles", "/api/v1/article/created"),
                                        ("articles", "/api/v1/article/Create"),
                                        ("charges", "/api/v1/charge/created"),
                                        ("charges", "/api/v1/charge/create1")])
def test_ids_that_only_look_like_create_go_to_the_id_route(stack, which, path):
    # not the literal segment: the {id} route answers, refusing the id
    assert_full_problem(_service(stack, which).get(path), 400, "id", instance=path)


@pytest.mark.parametrize("which,path", [("articles", "/api/v1/article/create/x"),
                                        ("charges", "/api/v1/charge/create/x"),
                                        ("charges", "/api/v1/charge/create/")])
def test_longer_paths_under_create_are_404(stack, which, path):
    assert_full_problem(_service(stack, which).get(path), 404, instance=path)


# ---- metrics: a 405 counts under the template whose path matched ----------------------------

def test_405_is_counted_under_the_matched_template_404_as_unmatched(stack):
    svc = stack.articles
    m0 = svc.metrics()
    for _ in range(2):
        assert svc.request("DELETE", ARTICLE_CREATE).status_code == 405
    assert svc.request("POST", "/api/v1/article/7").status_code == 405
    assert svc.request("POST", "/api/v1/articles").status_code == 405
    assert svc.request("DELETE", "/api/v1/nothing/here").status_code == 404
    m = svc.metrics()

    def delta(route, method):
        key = ("lotmesh_http_requests_total",
               frozenset({"route": route, "method": method, "status": "4xx"}.items()))
        return m.get(key, 0) - m0.get(key, 0)

    assert delta(ARTICLE_CREATE, "DELETE") == 2
    assert delta("/api/v1/article/{id}", "POST") == 1
    assert delta("/api/v1/articles", "POST") == 1
    assert delta("unmatched", "POST") == 0
    assert delta("unmatched", "DELETE") == 1
    # the latency histogram follows the same label
    hist = ("lotmesh_http_request_duration_seconds_count",
            frozenset({"route": ARTICLE_CREATE}.items()))
    assert m.get(hist, 0) - m0.get(hist, 0) >= 2
