/* test_redis.c — the Redis URL parser behind CACHE_URL and RATE_LIMIT_URL. (The connection
 * itself is tested against a real redis-server in the black-box tests.) */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "redis.h"

static void test_accepts(void **state)
{
    (void)state;
    lm_redis_addr a;
    char err[200];
    assert_int_equal(lm_redis_parse_url("redis://127.0.0.1", &a, err, sizeof err), 0);
    assert_string_equal(a.host, "127.0.0.1");
    assert_int_equal(a.port, 6379);
    assert_int_equal(a.db, 0);
    assert_string_equal(a.password, "");
    assert_int_equal(lm_redis_parse_url("redis://:s3cret@cache:6380/2", &a, err, sizeof err), 0);
    assert_string_equal(a.host, "cache");
    assert_int_equal(a.port, 6380);
    assert_int_equal(a.db, 2);
    assert_string_equal(a.password, "s3cret");
    assert_int_equal(lm_redis_parse_url("redis://user:p@ss@h/", &a, err, sizeof err), 0);
    assert_string_equal(a.password, "p@ss"); /* the last '@' ends the credentials */
    assert_string_equal(a.host, "h");
}

static void test_refuses(void **state)
{
    (void)state;
    lm_redis_addr a;
    char err[200];
    const char *bad[] = {"http://h:6379",   "redis://",    "redis://:pw@", "redis://h:0",
                         "redis://h:65536", "redis://h:x", "redis://h/db", "redis://h/-1",
                         "redis://h/1001",  "redis://h:"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        err[0] = '\0';
        assert_int_equal(lm_redis_parse_url(bad[i], &a, err, sizeof err), -1);
        assert_true(err[0] != '\0');
    }
    assert_int_equal(lm_redis_parse_url("redis://:hunter22@h:99999", &a, err, sizeof err), -1);
    assert_null(strstr(err, "hunter22"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_accepts),
        cmocka_unit_test(test_refuses),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
