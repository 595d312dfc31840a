/* test_breaker.c — the breaker's windows and state machine (resilience4j's rules). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "breaker.h"

static lm_breaker_config count_cfg(void)
{
    return (lm_breaker_config){.window_size = 10,
                               .min_calls = 5,
                               .failure_rate_pct = 50,
                               .slow_rate_pct = 100,
                               .slow_call_ms = 1000,
                               .open_ms = 1000,
                               .half_open_calls = 2,
                               .consecutive_failures = 0};
}

static lm_breaker_transition rec(lm_breaker *b, const lm_breaker_config *c, uint64_t now, bool fail,
                                 bool slow)
{
    return lm_breaker_record(b, c, now, fail, slow, c->open_ms, NULL, 0);
}

static void test_rate_needs_min_calls(void **state)
{
    (void)state;
    lm_breaker_config c = count_cfg();
    lm_breaker b;
    lm_breaker_init(&b);
    for (int i = 0; i < 4; i++) /* 4 failures, 4 calls: under min_calls */
        assert_int_equal(rec(&b, &c, 0, true, false), LM_BREAKER_NO_CHANGE);
    assert_int_equal(b.state, LM_BREAKER_CLOSED);
    char why[128];
    assert_int_equal(lm_breaker_record(&b, &c, 0, true, false, 1000, why, sizeof why),
                     LM_BREAKER_OPENED);
    assert_string_equal(why, "failure rate 100%, slow-call rate 0% over 5 calls");
    assert_int_equal(b.opens, 1);
}

static void test_rate_under_threshold_stays_closed_and_window_slides(void **state)
{
    (void)state;
    lm_breaker_config c = count_cfg();
    lm_breaker b;
    lm_breaker_init(&b);
    for (int i = 0; i < 100; i++) /* 20%: one in every 5 calls */
        assert_int_equal(rec(&b, &c, 0, i % 5 == 0, false), LM_BREAKER_NO_CHANGE);
    assert_int_equal(b.calls, 10); /* the window holds the last 10 */
    assert_int_equal(b.failures, 2);
    for (int i = 0; i < 10; i++) /* old failures leave the window */
        rec(&b, &c, 0, false, false);
    assert_int_equal(b.failures, 0);
}

static void test_slow_calls_open(void **state)
{
    (void)state;
    lm_breaker_config c = count_cfg();
    c.slow_rate_pct = 60;
    lm_breaker b;
    lm_breaker_init(&b);
    for (int i = 0; i < 4; i++)
        rec(&b, &c, 0, false, true);
    assert_int_equal(rec(&b, &c, 0, false, false), LM_BREAKER_OPENED); /* 4/5 = 80% slow */
}

static void test_consecutive_failures_open(void **state)
{
    (void)state;
    lm_breaker_config c = count_cfg();
    c.consecutive_failures = 2;
    c.min_calls = 100;
    lm_breaker b;
    lm_breaker_init(&b);
    rec(&b, &c, 0, true, false);
    rec(&b, &c, 0, false, false); /* a success ends the run */
    rec(&b, &c, 0, true, false);
    assert_int_equal(rec(&b, &c, 0, true, false), LM_BREAKER_OPENED);
}

static void test_open_wait_then_half_open_trials(void **state)
{
    (void)state;
    lm_breaker_config c = count_cfg();
    lm_breaker b;
    lm_breaker_init(&b);
    lm_breaker_force_open(&b, 100, 1000);
    lm_breaker_transition t;
    assert_false(lm_breaker_ready(&b, &c, 1099));
    assert_false(lm_breaker_acquire(&b, &c, 1099, &t));
    assert_true(lm_breaker_ready(&b, &c, 1100));
    assert_int_equal(b.state, LM_BREAKER_OPEN); /* ready changes nothing */
    assert_true(lm_breaker_acquire(&b, &c, 1100, &t));
    assert_int_equal(t, LM_BREAKER_HALF_OPENED);
    assert_true(lm_breaker_acquire(&b, &c, 1100, &t)); /* two trials */
    assert_int_equal(t, LM_BREAKER_NO_CHANGE);
    assert_false(lm_breaker_acquire(&b, &c, 1100, &t)); /* no third */
    assert_int_equal(rec(&b, &c, 1200, false, false), LM_BREAKER_NO_CHANGE);
    assert_int_equal(rec(&b, &c, 1200, false, false), LM_BREAKER_CLOSED_AGAIN);
    assert_int_equal(b.state, LM_BREAKER_CLOSED);
    assert_int_equal(b.calls, 0); /* closed with an empty window */
}

static void test_failed_trials_reopen_and_release_gives_back(void **state)
{
    (void)state;
    lm_breaker_config c = count_cfg();
    lm_breaker b;
    lm_breaker_init(&b);
    lm_breaker_force_open(&b, 0, 1000);
    lm_breaker_transition t;
    assert_true(lm_breaker_acquire(&b, &c, 1000, &t));
    assert_true(lm_breaker_acquire(&b, &c, 1000, &t));
    lm_breaker_release(&b); /* cancelled: the trial is free again */
    assert_true(lm_breaker_acquire(&b, &c, 1000, &t));
    rec(&b, &c, 1000, false, false);
    assert_int_equal(lm_breaker_record(&b, &c, 1000, true, false, 4000, NULL, 0),
                     LM_BREAKER_OPENED); /* 1 of 2 failed: 50% >= 50% */
    assert_int_equal(b.open_ms, 4000);   /* the caller's growing wait */
    assert_false(lm_breaker_ready(&b, &c, 4999));
    assert_true(lm_breaker_ready(&b, &c, 5000));
}

static void test_time_window_forgets_old_seconds(void **state)
{
    (void)state;
    lm_breaker_config c = count_cfg();
    c.time_based = true;
    c.window_size = 3; /* seconds */
    c.min_calls = 4;
    lm_breaker b;
    lm_breaker_init(&b);
    rec(&b, &c, 0, true, false);
    rec(&b, &c, 500, true, false);
    rec(&b, &c, 1500, true, false);
    /* at 5 s the failures of seconds 0 and 1 are out of the window */
    assert_int_equal(rec(&b, &c, 5000, false, false), LM_BREAKER_NO_CHANGE);
    int calls, fr, sr;
    lm_breaker_rates(&b, &c, 5000, &calls, &fr, &sr);
    assert_int_equal(calls, 1);
    assert_int_equal(fr, 0);
    rec(&b, &c, 5100, true, false);
    rec(&b, &c, 6100, true, false);
    assert_int_equal(rec(&b, &c, 7100, true, false), LM_BREAKER_OPENED); /* 3 of 4 in 5..7 s */
    /* a view far later: the window is empty */
    lm_breaker_init(&b);
    rec(&b, &c, 0, true, false);
    lm_breaker_rates(&b, &c, 100000, &calls, &fr, &sr);
    assert_int_equal(calls, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rate_needs_min_calls),
        cmocka_unit_test(test_rate_under_threshold_stays_closed_and_window_slides),
        cmocka_unit_test(test_slow_calls_open),
        cmocka_unit_test(test_consecutive_failures_open),
        cmocka_unit_test(test_open_wait_then_half_open_trials),
        cmocka_unit_test(test_failed_trials_reopen_and_release_gives_back),
        cmocka_unit_test(test_time_window_forgets_old_seconds),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
