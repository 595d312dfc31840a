/* test_breaker.c — the breaker's state machine. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "breaker.h"

static void test_opens_after_threshold_and_fails_fast(void **state)
{
    (void)state;
    lm_breaker b;
    lm_breaker_init(&b, 3, 1000);
    for (int i = 0; i < 2; i++) {
        assert_true(lm_breaker_allow(&b, 0));
        lm_breaker_failure(&b, 0);
    }
    assert_int_equal(b.state, LM_BREAKER_CLOSED);
    lm_breaker_success(&b); /* a success resets the run of failures */
    for (int i = 0; i < 3; i++)
        lm_breaker_failure(&b, 10);
    assert_int_equal(b.state, LM_BREAKER_OPEN);
    assert_int_equal(b.opens, 1);
    assert_false(lm_breaker_ready(&b, 500));
    assert_false(lm_breaker_allow(&b, 500));
    assert_false(lm_breaker_allow(&b, 1009));
    assert_true(lm_breaker_ready(&b, 1010));
    assert_int_equal(b.state, LM_BREAKER_OPEN); /* ready changes nothing */
}

static void test_half_open_trial(void **state)
{
    (void)state;
    lm_breaker b;
    lm_breaker_init(&b, 1, 1000);
    lm_breaker_failure(&b, 0);
    assert_true(lm_breaker_allow(&b, 1000)); /* the trial */
    assert_int_equal(b.state, LM_BREAKER_HALF_OPEN);
    assert_false(lm_breaker_allow(&b, 1001)); /* only one at a time */
    lm_breaker_failure(&b, 1002);             /* trial failed: open again, timer restarts */
    assert_int_equal(b.state, LM_BREAKER_OPEN);
    assert_false(lm_breaker_allow(&b, 1500));
    assert_true(lm_breaker_allow(&b, 2002));
    lm_breaker_success(&b);
    assert_int_equal(b.state, LM_BREAKER_CLOSED);
    assert_true(lm_breaker_allow(&b, 2003));
    assert_string_equal(lm_breaker_state_name(b.state), "closed");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_opens_after_threshold_and_fails_fast),
        cmocka_unit_test(test_half_open_trial),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
