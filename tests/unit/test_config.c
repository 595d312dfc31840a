/* test_config.c — environment parsing and the one-line error. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"

static void test_getters(void **state)
{
    (void)state;
    lm_cfg cfg;
    lm_cfg_init(&cfg, "t");
    setenv("T_PORT", "8001", 1);
    setenv("T_FLAG", "off", 1);
    setenv("T_TIMEOUT", "3s", 1);
    setenv("T_EMPTY", "", 1);
    unsetenv("T_UNSET");
    assert_int_equal(lm_cfg_int(&cfg, "T_PORT", 1, 1, 65535), 8001);
    assert_false(lm_cfg_bool(&cfg, "T_FLAG", true));
    assert_int_equal(lm_cfg_duration_ms(&cfg, "T_TIMEOUT", 1, 0, 10000), 3000);
    assert_string_equal(lm_cfg_str(&cfg, "T_EMPTY", "dflt"), "dflt");
    assert_int_equal(lm_cfg_int(&cfg, "T_UNSET", 77, 0, 100), 77);
    static const char *const choices[] = {"a", "b", NULL};
    setenv("T_ENUM", "b", 1);
    assert_int_equal(lm_cfg_enum(&cfg, "T_ENUM", "a", choices), 1);
    assert_true(lm_cfg_ok(&cfg));
}

static void test_first_error_wins(void **state)
{
    (void)state;
    lm_cfg cfg;
    lm_cfg_init(&cfg, "t");
    setenv("T_BAD_PORT", "80a", 1);
    setenv("T_BAD_DUR", "10x", 1);
    assert_int_equal(lm_cfg_int(&cfg, "T_BAD_PORT", 5, 1, 65535), 5);
    lm_cfg_duration_ms(&cfg, "T_BAD_DUR", 1, 0, 10);
    assert_false(lm_cfg_ok(&cfg));
    assert_non_null(strstr(cfg.error, "T_BAD_PORT"));
    assert_non_null(strstr(cfg.error, "\"80a\""));
    assert_null(strstr(cfg.error, "T_BAD_DUR"));

    lm_cfg_init(&cfg, "t");
    setenv("T_RANGE", "70000", 1);
    lm_cfg_int(&cfg, "T_RANGE", 5, 1, 65535);
    assert_non_null(strstr(cfg.error, "from 1 to 65535"));

    lm_cfg_init(&cfg, "t");
    static const char *const choices[] = {"debug", "info", NULL};
    setenv("T_LEVEL", "loud", 1);
    lm_cfg_enum(&cfg, "T_LEVEL", "info", choices);
    assert_non_null(strstr(cfg.error, "debug|info"));

    lm_cfg_init(&cfg, "t");
    setenv("T_BOOL", "maybe", 1);
    lm_cfg_bool(&cfg, "T_BOOL", true);
    assert_non_null(strstr(cfg.error, "true or false"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_getters),
        cmocka_unit_test(test_first_error_wins),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
