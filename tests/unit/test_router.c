/* test_router.c — templates, parameters, literal precedence (a static segment owns its path for
 * every method), 404 vs 405 with Allow. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "router.h"

static int tag[8];
static void h(struct lm_req *req, void *ctx)
{
    (void)req;
    (void)ctx;
}

static lm_router *make(void)
{
    lm_router *r = lm_router_new();
    assert_int_equal(lm_router_add(r, "GET", "/api/v1/charges", h, &tag[0]), 0);
    assert_int_equal(lm_router_add(r, "GET", "/api/v1/charge/{id}", h, &tag[1]), 1);
    assert_int_equal(lm_router_add(r, "POST", "/api/v1/charge/create", h, &tag[2]), 2);
    assert_int_equal(lm_router_add(r, "PUT", "/api/v1/charge/{id}", h, &tag[3]), 3);
    assert_int_equal(lm_router_add(r, "GET", "/", h, &tag[5]), 4);
    return r;
}

static int match(lm_router *r, const char *m, const char *path, lm_route_match *out)
{
    return lm_router_match(r, m, path, strlen(path), out);
}

static void test_params(void **state)
{
    (void)state;
    lm_router *r = make();
    lm_route_match m;
    assert_int_equal(match(r, "GET", "/api/v1/charge/42", &m), LM_ROUTE_FOUND);
    assert_int_equal(m.route_id, 1);
    assert_ptr_equal(m.ctx, &tag[1]);
    assert_int_equal(m.n_params, 1);
    assert_string_equal(m.params[0].name, "id");
    assert_int_equal(m.params[0].raw_len, 2);
    assert_memory_equal(m.params[0].raw, "42", 2);
    assert_string_equal(m.template_path, "/api/v1/charge/{id}");
    assert_int_equal(match(r, "GET", "/", &m), LM_ROUTE_FOUND);
    assert_int_equal(m.route_id, 4);
    lm_router_free(r);
}

static void test_literal_beats_param(void **state)
{
    (void)state;
    lm_router *r = make();
    lm_route_match m;
    assert_int_equal(match(r, "POST", "/api/v1/charge/create", &m), LM_ROUTE_FOUND);
    assert_int_equal(m.route_id, 2);
    lm_router_free(r);
}

static void test_rest_param(void **state)
{
    (void)state;
    lm_router *r = lm_router_new();
    lm_route_match m;
    assert_int_equal(lm_router_add(r, "GET", "/api/v1/charges", h, &tag[0]), 0);
    assert_int_equal(lm_router_add(r, "*", "/api/{service}/{path...}", h, &tag[4]), 1);
    assert_int_equal(match(r, "DELETE", "/api/charges_api/api/v1/charge/7", &m), LM_ROUTE_FOUND);
    assert_int_equal(m.route_id, 1);
    assert_int_equal(m.n_params, 2);
    assert_memory_equal(m.params[0].raw, "charges_api", 11);
    assert_int_equal(m.params[1].raw_len, strlen("api/v1/charge/7"));
    assert_memory_equal(m.params[1].raw, "api/v1/charge/7", m.params[1].raw_len);
    /* the rest parameter needs at least one byte */
    assert_int_equal(match(r, "DELETE", "/api/x/", &m), LM_ROUTE_NOT_FOUND);
    /* a literal route still wins over the catch-all */
    assert_int_equal(match(r, "GET", "/api/v1/charges", &m), LM_ROUTE_FOUND);
    assert_int_equal(m.route_id, 0);
    /* the literal route owns its path for every method: the catch-all does not take the
     * methods it lacks */
    assert_int_equal(match(r, "POST", "/api/v1/charges", &m), LM_ROUTE_METHOD_NOT_ALLOWED);
    assert_string_equal(m.allow, "GET, HEAD");
    assert_int_equal(match(r, "POST", "/api/v1/charge", &m), LM_ROUTE_FOUND);
    assert_int_equal(m.route_id, 1);
    lm_router_free(r);
}

static void test_static_segment_owns_its_path(void **state)
{
    (void)state;
    lm_router *r = make();
    lm_route_match m;
    static const char *const others[] = {"GET", "HEAD", "PUT", "PATCH", "DELETE", "OPTIONS"};
    for (size_t i = 0; i < sizeof others / sizeof *others; i++) {
        assert_int_equal(match(r, others[i], "/api/v1/charge/create", &m),
                         LM_ROUTE_METHOD_NOT_ALLOWED);
        assert_string_equal(m.allow, "POST");
        assert_null(m.handler);
        /* the route that owns the path, for metrics */
        assert_int_equal(m.route_id, 2);
        assert_string_equal(m.template_path, "/api/v1/charge/create");
    }
    /* the parameter route still answers every other id, HEAD included */
    assert_int_equal(match(r, "GET", "/api/v1/charge/created", &m), LM_ROUTE_FOUND);
    assert_int_equal(m.route_id, 1);
    assert_int_equal(match(r, "HEAD", "/api/v1/charge/7", &m), LM_ROUTE_FOUND);
    assert_int_equal(m.route_id, 1);
    assert_int_equal(match(r, "PUT", "/api/v1/charge/7", &m), LM_ROUTE_FOUND);
    assert_int_equal(m.route_id, 3);
    lm_router_free(r);
}

static void test_specificity_left_to_right(void **state)
{
    (void)state;
    lm_router *r = lm_router_new();
    lm_route_match m;
    assert_int_equal(lm_router_add(r, "GET", "/a/{x}/c", h, NULL), 0);
    assert_int_equal(lm_router_add(r, "GET", "/a/b/{y}", h, NULL), 1);
    assert_int_equal(lm_router_add(r, "GET", "/f/{rest...}", h, NULL), 2);
    assert_int_equal(lm_router_add(r, "POST", "/f/{x}/{y}", h, NULL), 3);
    assert_int_equal(lm_router_add(r, "*", "/f/{x}/{y}", h, NULL), 4);
    assert_int_equal(lm_router_add(r, "DELETE", "/a/b/{z}", h, NULL), 5);
    /* the first segment that differs decides, whatever the count of literals */
    assert_int_equal(match(r, "GET", "/a/b/c", &m), LM_ROUTE_FOUND);
    assert_int_equal(m.route_id, 1);
    assert_int_equal(match(r, "GET", "/a/z/c", &m), LM_ROUTE_FOUND);
    assert_int_equal(m.route_id, 0);
    /* same shape, other parameter names: one Allow list */
    assert_int_equal(match(r, "PUT", "/a/b/c", &m), LM_ROUTE_METHOD_NOT_ALLOWED);
    assert_string_equal(m.allow, "GET, HEAD, DELETE");
    assert_int_equal(match(r, "DELETE", "/a/b/c", &m), LM_ROUTE_FOUND);
    assert_int_equal(m.route_id, 5);
    /* a parameter beats a rest parameter; within a shape the first route taking the method */
    assert_int_equal(match(r, "POST", "/f/1/2", &m), LM_ROUTE_FOUND);
    assert_int_equal(m.route_id, 3);
    assert_int_equal(match(r, "GET", "/f/1/2", &m), LM_ROUTE_FOUND);
    assert_int_equal(m.route_id, 4);
    assert_int_equal(match(r, "GET", "/f/1/2/3", &m), LM_ROUTE_FOUND);
    assert_int_equal(m.route_id, 2);
    assert_int_equal(match(r, "POST", "/f/1/2/3", &m), LM_ROUTE_METHOD_NOT_ALLOWED);
    assert_string_equal(m.allow, "GET, HEAD");
    lm_router_free(r);
}

static void test_not_found_and_405(void **state)
{
    (void)state;
    lm_router *r = make();
    lm_route_match m;
    assert_int_equal(match(r, "GET", "/api/v1/charge", &m), LM_ROUTE_NOT_FOUND);
    assert_int_equal(m.route_id, -1);
    assert_null(m.template_path);
    assert_int_equal(match(r, "GET", "/api/v1/charge/", &m), LM_ROUTE_NOT_FOUND);
    assert_int_equal(match(r, "GET", "/api/v1/charge/1/x", &m), LM_ROUTE_NOT_FOUND);
    assert_int_equal(match(r, "GET", "/api/v1/charges/", &m), LM_ROUTE_NOT_FOUND);
    assert_int_equal(match(r, "GET", "", &m), LM_ROUTE_NOT_FOUND);
    assert_int_equal(match(r, "GET", "nope", &m), LM_ROUTE_NOT_FOUND);
    assert_int_equal(match(r, "DELETE", "/api/v1/charge/5", &m), LM_ROUTE_METHOD_NOT_ALLOWED);
    assert_string_equal(m.allow, "GET, HEAD, PUT");
    assert_int_equal(m.route_id, 1); /* the first route of the {id} shape */
    assert_string_equal(m.template_path, "/api/v1/charge/{id}");
    assert_int_equal(match(r, "POST", "/api/v1/charges", &m), LM_ROUTE_METHOD_NOT_ALLOWED);
    assert_string_equal(m.allow, "GET, HEAD");
    /* HEAD follows GET */
    assert_int_equal(match(r, "HEAD", "/api/v1/charges", &m), LM_ROUTE_FOUND);
    lm_router_free(r);
}

static void test_bad_templates(void **state)
{
    (void)state;
    lm_router *r = lm_router_new();
    assert_int_equal(lm_router_add(r, "GET", "no-slash", h, NULL), -1);
    assert_int_equal(lm_router_add(r, "GET", "/a/{rest...}/b", h, NULL), -1);
    assert_int_equal(lm_router_add(r, "GET", "/a/{}", h, NULL), -1);
    assert_int_equal(lm_router_add(r, "GET", "/a/b{c", h, NULL), -1);
    assert_int_equal(lm_router_add(r, "GET", "/{a}/{b}/{c}/{d}/{e}/{f}/{g}/{h}/{i}", h, NULL), -1);
    assert_int_equal(lm_router_count(r), 0);
    lm_router_free(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_params),
        cmocka_unit_test(test_literal_beats_param),
        cmocka_unit_test(test_rest_param),
        cmocka_unit_test(test_not_found_and_405),
        cmocka_unit_test(test_bad_templates),
        cmocka_unit_test(test_static_segment_owns_its_path),
        cmocka_unit_test(test_specificity_left_to_right),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
