/* test_precond.c — If-Match lists (RFC 9110 13.1.1): strong comparison, "*", weak never;
 * If-None-Match (13.1.2): weak comparison, "*", several header lines. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "precond.h"

#include <string.h>

static void test_if_match_lists(void **state)
{
    (void)state;
    assert_true(lm_precond_if_match_list_ok("\"3\"", 3));
    assert_true(lm_precond_if_match_list_ok("\"1\", \"3\"", 3));
    assert_true(lm_precond_if_match_list_ok("  \"1\" ,\"3\"  ", 3));
    assert_true(lm_precond_if_match_list_ok("*", 3));
    assert_false(lm_precond_if_match_list_ok("\"2\"", 3));
    assert_false(lm_precond_if_match_list_ok("W/\"3\"", 3)); /* weak tags never match */
    assert_false(lm_precond_if_match_list_ok("\"3", 3));     /* unterminated */
    assert_false(lm_precond_if_match_list_ok("\"3\" x", 3)); /* junk after a tag */
    assert_false(lm_precond_if_match_list_ok("3", 3));       /* not quoted */
    assert_false(lm_precond_if_match_list_ok("", 3));
}

static bool inm(long long version, const char *a, const char *b)
{
    lm_header h[3] = {{.name = "Accept", .value = "*/*"}};
    size_t n = 1;
    if (a) h[n++] = (lm_header){.name = "If-None-Match", .value = a};
    if (b) h[n++] = (lm_header){.name = "if-none-match", .value = b};
    for (size_t i = 0; i < n; i++) {
        h[i].name_len = strlen(h[i].name);
        h[i].value_len = strlen(h[i].value);
    }
    lm_req req = {.headers = h, .n_headers = n};
    return lm_precond_if_none_match_hit(&req, version);
}

static void test_if_none_match(void **state)
{
    (void)state;
    assert_true(inm(3, "\"3\"", NULL));
    assert_true(inm(3, "W/\"3\"", NULL)); /* weak comparison */
    assert_true(inm(3, "\"1\", W/\"3\"", NULL));
    assert_true(inm(3, "*", NULL));
    assert_true(inm(3, "\"1\"", "\"3\"")); /* the second header line counts */
    assert_false(inm(3, NULL, NULL));
    assert_false(inm(3, "\"2\"", NULL));
    assert_false(inm(3, "W/3", NULL));
    assert_false(inm(3, "\"3", NULL));
    assert_false(inm(3, "\"3\"x", NULL));
    assert_false(inm(3, "", NULL));
    assert_false(inm(0, "*", NULL)); /* no version: nothing to compare */
    /* a malformed weak tag is parsed as a quoted tag in both modes (found by fuzz_text:
     * If-Match skipped it and matched the next tag, If-None-Match refused the list) */
    const char *bad = "\"&1\", W/\"2* x, \"2\"";
    assert_false(lm_precond_if_match_list_ok(bad, 2));
    assert_false(inm(2, bad, NULL));
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_if_match_lists),
                                       cmocka_unit_test(test_if_none_match)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
