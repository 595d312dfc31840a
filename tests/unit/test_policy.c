/* test_policy.c — the outbound-call policy: what counts against an instance, the one retry
 * decision, ejection and its cap, the service's circuit, the bulkhead, the retry budget, and
 * one state shared by threads (run under TSan: make tsan-policy). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "log.h"
#include "policy.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>

static lm_disc_set *set_of(int n)
{
    char body[2048] = "[";
    for (int i = 0; i < n; i++)
        snprintf(body + strlen(body), sizeof body - strlen(body),
                 "%s{\"Node\":{\"Address\":\"127.0.0.1\"},\"Service\":{\"ID\":\"i%d\","
                 "\"Service\":\"s\",\"Address\":\"127.0.0.1\",\"Port\":%d},\"Checks\":[]}",
                 i ? "," : "", i, 9000 + i);
    strcat(body, "]");
    char err[128];
    lm_disc_set *s = lm_disc_set_from_health(body, strlen(body), err, sizeof err);
    assert_non_null(s);
    return s;
}

static lm_policy_config cfg(void)
{
    lm_policy_config pc;
    lm_policy_config_default(&pc, 10000, 1000, 1000);
    pc.backoff_ms = 1;
    pc.backoff_max_ms = 1;
    return pc;
}

static void test_classify(void **state)
{
    (void)state;
    lm_header prob[] = {{.name = "Content-Type", .value = "application/problem+json"}};
    lm_header html[] = {{.name = "Content-Type", .value = "text/html"}};
    lm_client_response r = {.status = 503, .headers = prob, .n_headers = 1};
    assert_int_equal(lm_policy_classify(LM_CLIENT_OK, &r), LM_OUT_OK); /* considered */
    r.headers = html;
    assert_int_equal(lm_policy_classify(LM_CLIENT_OK, &r), LM_OUT_GATEWAY);
    r.n_headers = 0;
    r.status = 502;
    assert_int_equal(lm_policy_classify(LM_CLIENT_OK, &r), LM_OUT_GATEWAY);
    r.status = 500; /* a bug answered, not an unhealthy instance */
    assert_int_equal(lm_policy_classify(LM_CLIENT_OK, &r), LM_OUT_OK);
    r.status = 408; /* no complete request received: a draining instance's refusal */
    assert_int_equal(lm_policy_classify(LM_CLIENT_OK, &r), LM_OUT_REFUSED);
    r.headers = prob;
    r.n_headers = 1;
    assert_int_equal(lm_policy_classify(LM_CLIENT_OK, &r), LM_OUT_REFUSED);
    r.n_headers = 0;
    assert_int_equal(lm_policy_classify(LM_CLIENT_ERR_CONNECT, NULL), LM_OUT_CONNECT);
    assert_int_equal(lm_policy_classify(LM_CLIENT_ERR_CONNECT_TIMEOUT, NULL), LM_OUT_CONNECT);
    assert_int_equal(lm_policy_classify(LM_CLIENT_ERR_CLOSED, NULL), LM_OUT_RESET);
    assert_int_equal(lm_policy_classify(LM_CLIENT_ERR_RESPONSE_TIMEOUT, NULL), LM_OUT_TIMEOUT);
    assert_int_equal(lm_policy_classify(LM_CLIENT_ERR_CANCELLED, NULL), LM_OUT_IGNORED);
    assert_int_equal(lm_policy_classify(LM_CLIENT_ERR_QUEUE_FULL, NULL), LM_OUT_IGNORED);
}

static void test_retry_goes_to_another_instance(void **state)
{
    (void)state;
    lm_policy_config pc = cfg();
    lm_policy *p = lm_policy_new("s", &pc);
    lm_disc_set *set = set_of(3);
    lm_call c;
    assert_int_equal(lm_policy_begin(p, &c, 0, 10000, true), LM_POLICY_GO);
    int first = lm_policy_pick(&c, set, true, 0);
    assert_true(first >= 0);
    lm_policy_try_done(&c, LM_OUT_RESET, 5);
    lm_next nx;
    assert_true(lm_policy_next(&c, LM_OUT_RESET, 0, false, true, set, true, 5, &nx));
    assert_int_not_equal(nx.index, first);
    int second = nx.index;
    lm_policy_try_done(&c, LM_OUT_GATEWAY, 10);
    assert_true(lm_policy_next(&c, LM_OUT_GATEWAY, 0, false, true, set, true, 10, &nx));
    assert_int_not_equal(nx.index, first);
    assert_int_not_equal(nx.index, second);
    lm_policy_try_done(&c, LM_OUT_GATEWAY, 20);
    /* three tries in all (RETRIES=2): no fourth */
    assert_false(lm_policy_next(&c, LM_OUT_GATEWAY, 0, false, true, set, true, 20, &nx));
    lm_policy_end(&c, LM_OUT_GATEWAY, 20);
    lm_policy_stats st;
    lm_policy_stats_get(p, &st);
    assert_int_equal(st.tries, 3);
    assert_int_equal(st.retries, 2);
    assert_int_equal(st.in_flight, 0);
    lm_disc_set_release(set);
    lm_policy_free(p);
}

static void test_what_is_never_retried(void **state)
{
    (void)state;
    lm_policy_config pc = cfg();
    lm_policy *p = lm_policy_new("s", &pc);
    lm_disc_set *set = set_of(2);
    lm_call c;
    lm_next nx;
    /* a POST without Idempotency-Key: a reset or timeout may have done the write */
    lm_policy_begin(p, &c, 0, 10000, false);
    lm_policy_pick(&c, set, false, 0);
    lm_policy_try_done(&c, LM_OUT_RESET, 1);
    assert_false(lm_policy_next(&c, LM_OUT_RESET, 0, false, true, set, false, 1, &nx));
    assert_false(lm_policy_next(&c, LM_OUT_TIMEOUT, 0, false, true, set, false, 1, &nx));
    /* … but a refused connection sent nothing */
    assert_true(lm_policy_next(&c, LM_OUT_CONNECT, 0, false, true, set, false, 1, &nx));
    lm_policy_try_done(&c, LM_OUT_OK, 2);
    lm_policy_end(&c, LM_OUT_OK, 2);
    /* … and a 408 says no request was taken */
    lm_policy_begin(p, &c, 0, 10000, false);
    lm_policy_pick(&c, set, false, 0);
    lm_policy_try_done(&c, LM_OUT_REFUSED, 1);
    assert_true(lm_policy_next(&c, LM_OUT_REFUSED, 0, false, true, set, false, 1, &nx));
    assert_false(lm_policy_next(&c, LM_OUT_REFUSED, 0, false, false, set, false, 1, &nx));
    lm_policy_try_done(&c, LM_OUT_OK, 2);
    lm_policy_end(&c, LM_OUT_OK, 2);
    /* safe, but the head reached the client, or the body cannot be sent again */
    lm_policy_begin(p, &c, 0, 10000, true);
    lm_policy_pick(&c, set, false, 0);
    lm_policy_try_done(&c, LM_OUT_RESET, 1);
    assert_false(lm_policy_next(&c, LM_OUT_RESET, 0, true, true, set, false, 1, &nx));
    assert_false(lm_policy_next(&c, LM_OUT_RESET, 0, false, false, set, false, 1, &nx));
    /* a considered answer and a broken one are not retried */
    assert_false(lm_policy_next(&c, LM_OUT_OK, 0, false, true, set, false, 1, &nx));
    assert_false(lm_policy_next(&c, LM_OUT_BROKEN, 0, false, true, set, false, 1, &nx));
    /* Retry-After past the deadline: no */
    assert_false(lm_policy_next(&c, LM_OUT_GATEWAY, 20000, false, true, set, false, 1, &nx));
    /* within it: the wait is Retry-After's */
    assert_true(lm_policy_next(&c, LM_OUT_GATEWAY, 2000, false, true, set, false, 1, &nx));
    assert_int_equal(nx.delay_ms, 2000);
    lm_policy_end(&c, LM_OUT_IGNORED, 3);
    lm_policy_stats st;
    lm_policy_stats_get(p, &st);
    assert_int_equal(st.in_flight, 0);
    lm_disc_set_release(set);
    lm_policy_free(p);
}

static void test_deadline_and_try_timeout(void **state)
{
    (void)state;
    lm_policy_config pc = cfg();
    pc.try_timeout_ms = 300;
    lm_policy *p = lm_policy_new("s", &pc);
    lm_disc_set *set = set_of(2);
    lm_call c;
    assert_int_equal(lm_policy_begin(p, &c, 100, 100, true), LM_POLICY_DEADLINE);
    assert_int_equal(lm_policy_begin(p, &c, 0, 1000, true), LM_POLICY_GO);
    lm_policy_pick(&c, set, false, 0);
    assert_int_equal(lm_call_try_timeout(&c, 0), 300);   /* a retry could follow */
    assert_int_equal(lm_call_try_timeout(&c, 800), 200); /* what is left */
    lm_policy_try_done(&c, LM_OUT_TIMEOUT, 300);
    lm_next nx;
    assert_true(lm_policy_next(&c, LM_OUT_TIMEOUT, 0, false, true, set, false, 300, &nx));
    lm_policy_try_done(&c, LM_OUT_TIMEOUT, 600);
    assert_true(lm_policy_next(&c, LM_OUT_TIMEOUT, 0, false, true, set, false, 600, &nx));
    assert_int_equal(lm_call_try_timeout(&c, 600), 400); /* the last try: the rest */
    assert_false(lm_policy_next(&c, LM_OUT_TIMEOUT, 0, false, true, set, false, 995, &nx));
    lm_policy_end(&c, LM_OUT_TIMEOUT, 1000);
    lm_disc_set_release(set);
    lm_policy_free(p);
}

static void one_call(lm_policy *p, lm_disc_set *set, lm_outcome o, uint64_t now)
{
    lm_call c;
    if (lm_policy_begin(p, &c, now, now + 10000, true) != LM_POLICY_GO) return;
    if (lm_policy_pick(&c, set, false, now) >= 0) lm_policy_try_done(&c, o, now);
    lm_policy_end(&c, o, now);
}

/* A set of instances named by ids, in that order. */
static lm_disc_set *set_named(const char *const *ids, int n)
{
    char body[2048] = "[";
    for (int i = 0; i < n; i++)
        snprintf(body + strlen(body), sizeof body - strlen(body),
                 "%s{\"Node\":{\"Address\":\"127.0.0.1\"},\"Service\":{\"ID\":\"%s\","
                 "\"Service\":\"s\",\"Address\":\"127.0.0.1\",\"Port\":%d},\"Checks\":[]}",
                 i ? "," : "", ids[i], 9100 + i);
    strcat(body, "]");
    char err[128];
    lm_disc_set *s = lm_disc_set_from_health(body, strlen(body), err, sizeof err);
    assert_non_null(s);
    return s;
}

/* The policy finds the entries of the set it picked from last by index: a new set (discovery
 * changed, another order, one more instance) must map each index to its own instance. */
static void test_new_set_maps_instances_by_id(void **state)
{
    (void)state;
    lm_policy_config pc = cfg();
    pc.breaker.consecutive_failures = 1;
    lm_policy *p = lm_policy_new("s", &pc);
    const char *ab[] = {"a", "b"}, *cba[] = {"c", "b", "a"};
    lm_disc_set *s1 = set_named(ab, 2);
    lm_call c;
    lm_policy_begin(p, &c, 0, 10000, true);
    c.tried = 2; /* steer the pick to "a" */
    assert_int_equal(lm_policy_pick(&c, s1, false, 0), 0);
    lm_policy_try_done(&c, LM_OUT_CONNECT, 0); /* "a" ejected */
    lm_policy_end(&c, LM_OUT_OK, 0);
    lm_disc_set *s2 = set_named(cba, 3);
    lm_disc_set_release(s1);      /* the policy still holds it until it picks from another */
    for (int i = 0; i < 6; i++) { /* "a" is index 2 now: never picked while ejected */
        lm_policy_begin(p, &c, 10, 10000, true);
        int k = lm_policy_pick(&c, s2, false, 10);
        assert_true(k == 0 || k == 1);
        lm_policy_try_done(&c, LM_OUT_OK, 10);
        lm_policy_end(&c, LM_OUT_OK, 10);
    }
    long long n;
    assert_string_equal(lm_policy_instance_state(p, "a", &n), "open");
    assert_string_equal(lm_policy_instance_state(p, "c", &n), "closed");
    lm_disc_set_release(s2);
    lm_policy_free(p);
}

static void test_ejection_grows_and_is_capped(void **state)
{
    (void)state;
    lm_policy_config pc = cfg();
    pc.breaker.consecutive_failures = 2;
    pc.breaker.half_open_calls = 1;
    pc.eject_max_pct = 50;
    lm_policy *p = lm_policy_new("s", &pc);
    lm_disc_set *set = set_of(2);
    lm_call c;
    /* i0 fails twice: ejected for open_ms (1 s) */
    for (int i = 0; i < 2; i++) {
        lm_policy_begin(p, &c, 0, 10000, true);
        c.tried = 2; /* steer the pick to i0 */
        assert_int_equal(lm_policy_pick(&c, set, false, 0), 0);
        lm_policy_try_done(&c, LM_OUT_CONNECT, 0);
        lm_policy_end(&c, LM_OUT_OK, 0);
    }
    long long n;
    assert_string_equal(lm_policy_instance_state(p, "i0", &n), "open");
    for (int i = 0; i < 4; i++) { /* only i1 is picked */
        lm_policy_begin(p, &c, 10, 10000, true);
        assert_int_equal(lm_policy_pick(&c, set, false, 10), 1);
        /* i1 fails too: the cap (50% of 2) keeps it in */
        lm_policy_try_done(&c, LM_OUT_CONNECT, 10);
        lm_policy_end(&c, LM_OUT_OK, 10);
    }
    assert_string_equal(lm_policy_instance_state(p, "i1", &n), "closed");
    /* after 1 s i0 gets its trial, fails it: ejected again for twice as long */
    lm_policy_begin(p, &c, 1000, 20000, true);
    c.tried = 2;
    assert_int_equal(lm_policy_pick(&c, set, false, 1000), 0);
    lm_policy_try_done(&c, LM_OUT_RESET, 1000);
    lm_policy_end(&c, LM_OUT_OK, 1000);
    lm_policy_begin(p, &c, 2500, 20000, true);
    assert_int_equal(lm_policy_pick(&c, set, false, 2500), 1); /* i0 still out at 2.5 s */
    lm_policy_try_done(&c, LM_OUT_OK, 2500);
    lm_policy_end(&c, LM_OUT_OK, 2500);
    lm_policy_begin(p, &c, 3000, 20000, true);
    c.tried = 2;
    assert_int_equal(lm_policy_pick(&c, set, false, 3000), 0); /* 1 s + 2 s */
    lm_policy_try_done(&c, LM_OUT_OK, 3000);
    lm_policy_end(&c, LM_OUT_OK, 3000);
    assert_string_equal(lm_policy_instance_state(p, "i0", &n), "closed");
    lm_disc_set_release(set);
    lm_policy_free(p);
}

static void test_retry_prefers_an_untried_ejected_instance(void **state)
{
    (void)state;
    lm_policy_config pc = cfg();
    pc.breaker.consecutive_failures = 1;
    lm_policy *p = lm_policy_new("s", &pc);
    lm_disc_set *set = set_of(2);
    lm_call c;
    lm_policy_begin(p, &c, 0, 10000, true); /* i0 fails once: ejected */
    c.tried = 2;
    assert_int_equal(lm_policy_pick(&c, set, false, 0), 0);
    lm_policy_try_done(&c, LM_OUT_CONNECT, 0);
    lm_policy_end(&c, LM_OUT_OK, 0);
    /* a call's first try avoids i0; when i1 fails, the retry goes to i0 all the same (another
     * instance where there is one), not to i1 again */
    lm_policy_begin(p, &c, 10, 10000, true);
    assert_int_equal(lm_policy_pick(&c, set, false, 10), 1);
    lm_policy_try_done(&c, LM_OUT_RESET, 10);
    lm_next nx;
    assert_true(lm_policy_next(&c, LM_OUT_RESET, 0, false, true, set, false, 10, &nx));
    assert_int_equal(nx.index, 0);
    lm_policy_try_done(&c, LM_OUT_OK, 20);
    lm_policy_end(&c, LM_OUT_OK, 20);
    lm_disc_set_release(set);
    lm_policy_free(p);
}

static void test_service_circuit_and_considered_answers(void **state)
{
    (void)state;
    lm_policy_config pc = cfg();
    pc.breaker.consecutive_failures = 3;
    lm_policy *p = lm_policy_new("s", &pc);
    lm_disc_set *set = set_of(1);
    /* a service's considered 503s (problem documents) are answers: nothing opens */
    for (int i = 0; i < 50; i++)
        one_call(p, set, LM_OUT_OK, 0);
    for (int i = 0; i < 3; i++)
        one_call(p, set, LM_OUT_GATEWAY, 0);
    lm_call c;
    assert_int_equal(lm_policy_begin(p, &c, 1, 10000, true), LM_POLICY_OPEN);
    /* after the open wait: trial calls; their success closes it */
    for (int i = 0; i < 3; i++) {
        assert_int_equal(lm_policy_begin(p, &c, 1000, 10000, true), LM_POLICY_GO);
        lm_policy_pick(&c, set, false, 1000);
        lm_policy_try_done(&c, LM_OUT_OK, 1000);
        lm_policy_end(&c, LM_OUT_OK, 1000);
    }
    assert_int_equal(lm_policy_begin(p, &c, 1001, 10000, true), LM_POLICY_GO);
    lm_policy_end(&c, LM_OUT_IGNORED, 1001);
    lm_policy_stats st;
    lm_policy_stats_get(p, &st);
    assert_int_equal(st.open_rejected, 1);
    lm_disc_set_release(set);
    lm_policy_free(p);
}

static void test_bulkhead_and_budget(void **state)
{
    (void)state;
    lm_policy_config pc = cfg();
    pc.bulkhead = 10;
    pc.budget_pct = 20;
    pc.budget_min = 1;
    lm_policy *p = lm_policy_new("s", &pc);
    lm_disc_set *set = set_of(2);
    lm_call c[11];
    for (int i = 0; i < 10; i++)
        assert_int_equal(lm_policy_begin(p, &c[i], 0, 10000, true), LM_POLICY_GO);
    assert_int_equal(lm_policy_begin(p, &c[10], 0, 10000, true), LM_POLICY_BULKHEAD);
    /* 10 in flight, 20%: two retries at once, not three */
    lm_next nx;
    int granted = 0;
    for (int i = 0; i < 10; i++) {
        lm_policy_pick(&c[i], set, true, 0);
        lm_policy_try_done(&c[i], LM_OUT_RESET, 1);
        granted += lm_policy_next(&c[i], LM_OUT_RESET, 0, false, true, set, true, 1, &nx);
    }
    assert_int_equal(granted, 2);
    for (int i = 0; i < 10; i++)
        lm_policy_end(&c[i], LM_OUT_RESET, 2);
    lm_policy_stats st;
    lm_policy_stats_get(p, &st);
    assert_int_equal(st.budget_exhausted, 8);
    assert_int_equal(st.bulkhead_rejected, 1);
    assert_int_equal(st.in_flight, 0);
    lm_disc_set_release(set);
    lm_policy_free(p);
}

typedef struct {
    lm_policy *p;
    lm_disc_set *set;
    int seed;
} worker_arg;

static void *worker(void *arg)
{
    worker_arg *a = arg;
    for (int i = 0; i < 20000; i++) {
        uint64_t now = (uint64_t)i / 10;
        lm_call c;
        if (lm_policy_begin(a->p, &c, now, now + 1000, true) != LM_POLICY_GO) continue;
        lm_outcome o = (i + a->seed) % 7 == 0 ? LM_OUT_RESET : LM_OUT_OK;
        if (lm_policy_pick(&c, a->set, true, now) >= 0) {
            lm_policy_try_done(&c, o, now);
            lm_next nx;
            if (lm_policy_next(&c, o, 0, false, true, a->set, true, now, &nx)) {
                o = LM_OUT_OK;
                lm_policy_try_done(&c, o, now);
            }
        }
        lm_policy_end(&c, o, now);
    }
    return NULL;
}

static void test_one_state_shared_by_threads(void **state)
{
    (void)state;
    lm_policy_config pc = cfg();
    lm_policy *p = lm_policy_new("s", &pc);
    lm_disc_set *set = set_of(4);
    pthread_t t[4];
    worker_arg a[4];
    for (int i = 0; i < 4; i++) {
        a[i] = (worker_arg){.p = p, .set = set, .seed = i};
        pthread_create(&t[i], NULL, worker, &a[i]);
    }
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    lm_policy_stats st;
    lm_policy_stats_get(p, &st);
    assert_int_equal(st.calls, 80000);
    assert_int_equal(st.in_flight, 0);
    assert_true(st.tries >= st.calls - st.open_rejected - st.bulkhead_rejected);
    long long n;
    for (int i = 0; i < 4; i++) {
        char id[8];
        snprintf(id, sizeof id, "i%d", i);
        lm_policy_instance_state(p, id, &n);
        assert_int_equal(n, 0);
    }
    lm_disc_set_release(set);
    lm_policy_free(p);
}

static void test_timeout_header(void **state)
{
    (void)state;
    uint64_t ms;
    assert_true(lm_policy_parse_timeout("250", &ms));
    assert_int_equal(ms, 250);
    assert_false(lm_policy_parse_timeout("", &ms));
    assert_false(lm_policy_parse_timeout("-1", &ms));
    assert_false(lm_policy_parse_timeout("1.5", &ms));
    assert_false(lm_policy_parse_timeout("99999999999", &ms));
    assert_int_equal(lm_policy_parse_retry_after("2"), 2000);
    assert_int_equal(lm_policy_parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), 0);
}

int main(void)
{
    lm_log_init("test", LM_LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_classify),
        cmocka_unit_test(test_retry_goes_to_another_instance),
        cmocka_unit_test(test_what_is_never_retried),
        cmocka_unit_test(test_deadline_and_try_timeout),
        cmocka_unit_test(test_ejection_grows_and_is_capped),
        cmocka_unit_test(test_new_set_maps_instances_by_id),
        cmocka_unit_test(test_retry_prefers_an_untried_ejected_instance),
        cmocka_unit_test(test_service_circuit_and_considered_answers),
        cmocka_unit_test(test_bulkhead_and_budget),
        cmocka_unit_test(test_one_state_shared_by_threads),
        cmocka_unit_test(test_timeout_header),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
