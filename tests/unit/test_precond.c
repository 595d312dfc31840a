/* test_precond.c — If-Match lists (RFC 9110 13.1.1): strong comparison, "*", weak never. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "precond.h"

static void test_if_match_lists(void **state)
{
    (void)state;
    assert_true(lm_if_match_list_ok("\"3\"", 3));
    assert_true(lm_if_match_list_ok("\"1\", \"3\"", 3));
    assert_true(lm_if_match_list_ok("  \"1\" ,\"3\"  ", 3));
    assert_true(lm_if_match_list_ok("*", 3));
    assert_false(lm_if_match_list_ok("\"2\"", 3));
    assert_false(lm_if_match_list_ok("W/\"3\"", 3)); /* weak tags never match */
    assert_false(lm_if_match_list_ok("\"3", 3));     /* unterminated */
    assert_false(lm_if_match_list_ok("\"3\" x", 3)); /* junk after a tag */
    assert_false(lm_if_match_list_ok("3", 3));       /* not quoted */
    assert_false(lm_if_match_list_ok("", 3));
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_if_match_lists)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
