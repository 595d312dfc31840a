/* test_parse.c — the one integer, duration and size parser. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "parse.h"

static void test_parsers(void **state)
{
    (void)state;
    uint64_t v;
    assert_true(lm_parse_duration_ms("250", &v) && v == 250);
    assert_true(lm_parse_duration_ms("250ms", &v) && v == 250);
    assert_true(lm_parse_duration_ms("5s", &v) && v == 5000);
    assert_true(lm_parse_duration_ms("2m", &v) && v == 120000);
    assert_true(lm_parse_duration_ms("1h", &v) && v == 3600000);
    assert_false(lm_parse_duration_ms("10x", &v));
    assert_false(lm_parse_duration_ms("-1s", &v));
    assert_false(lm_parse_duration_ms("", &v));
    assert_false(lm_parse_duration_ms("s", &v));
    assert_false(lm_parse_duration_ms("99999999999999999999h", &v));
    assert_true(lm_parse_size("64k", &v) && v == 65536);
    assert_true(lm_parse_size("1MiB", &v) && v == 1048576);
    assert_true(lm_parse_size("1mb", &v) && v == 1048576);
    assert_true(lm_parse_size("12", &v) && v == 12);
    assert_false(lm_parse_size("1.5m", &v));
    long long i;
    assert_true(lm_parse_int("-12", &i) && i == -12);
    assert_false(lm_parse_int("12a", &i));
    assert_false(lm_parse_int(" 12", &i));
    assert_false(lm_parse_int("99999999999999999999", &i));
    assert_false(lm_parse_int("+12", &i));
    assert_false(lm_parse_int("-", &i));
    assert_false(lm_parse_int("", &i));
    assert_false(lm_parse_int(NULL, &i));
    assert_true(lm_parse_uint("18446744073709551615", &v) && v == UINT64_MAX);
    assert_false(lm_parse_uint("18446744073709551616", &v));
    assert_false(lm_parse_uint("-1", &v));
    assert_false(lm_parse_uint("1 ", &v));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parsers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
