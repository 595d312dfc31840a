/* test_trace.c — W3C traceparent validation, children, request ids. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "trace.h"

#define VALID "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

static bool parse(const char *s, lm_trace_ctx *t)
{
    return lm_trace_parse(s, strlen(s), t);
}

static void test_parse_valid(void **state)
{
    (void)state;
    lm_trace_ctx t;
    assert_true(parse(VALID, &t));
    char hex[33];
    lm_trace_id_hex(&t, hex);
    assert_string_equal(hex, "4bf92f3577b34da6a3ce929d0e0e4736");
    lm_trace_span_id_hex(t.parent_span_id, hex);
    assert_string_equal(hex, "00f067aa0ba902b7");
    assert_int_equal(t.flags, 1);
    /* a future version may carry more fields */
    assert_true(parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-extra", &t));
    assert_int_equal(t.flags, 0);
}

static void test_parse_invalid(void **state)
{
    (void)state;
    lm_trace_ctx t;
    assert_false(parse("", &t));
    assert_false(parse("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", &t));
    assert_false(parse("00-00000000000000000000000000000000-00f067aa0ba902b7-01", &t));
    assert_false(parse("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", &t));
    assert_false(parse("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", &t));
    assert_false(parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x", &t));
    assert_false(parse("00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", &t));
    assert_false(parse("00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01", &t));
    assert_false(parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x", &t));
}

static void test_begin_and_child(void **state)
{
    (void)state;
    lm_trace_ctx t, c;
    lm_trace_begin(&t, VALID, strlen(VALID));
    char tp[LM_TRACEPARENT_LEN + 1];
    lm_trace_format(&t, tp);
    assert_int_equal(strlen(tp), LM_TRACEPARENT_LEN);
    assert_memory_equal(tp, "00-4bf92f3577b34da6a3ce929d0e0e4736-", 36);
    assert_memory_not_equal(tp + 36, "00f067aa0ba902b7", 16); /* our own span */
    lm_trace_child(&t, &c);
    assert_memory_equal(c.trace_id, t.trace_id, 16);
    assert_memory_equal(c.parent_span_id, t.span_id, 8);
    assert_memory_not_equal(c.span_id, t.span_id, 8);
    lm_trace_ctx p;
    lm_trace_format(&c, tp);
    assert_true(parse(tp, &p));

    lm_trace_begin(&t, "garbage", 7); /* invalid: a new trace */
    assert_false(t.has_parent);
    lm_trace_format(&t, tp);
    assert_true(parse(tp, &p));
    lm_trace_ctx u;
    lm_trace_begin(&u, NULL, 0);
    assert_memory_not_equal(u.trace_id, t.trace_id, 16);
}

static void test_request_id(void **state)
{
    (void)state;
    char out[LM_REQUEST_ID_MAX + 1];
    lm_trace_request_id_assign("abc-123_x.y", 11, out);
    assert_string_equal(out, "abc-123_x.y");
    lm_trace_request_id_assign("bad id", 6, out);
    assert_int_equal(strlen(out), 32);
    lm_trace_request_id_assign("evil\r\nX: y", 10, out);
    assert_int_equal(strlen(out), 32);
    lm_trace_request_id_assign(NULL, 0, out);
    assert_int_equal(strlen(out), 32);
    char longid[200];
    memset(longid, 'a', sizeof longid);
    lm_trace_request_id_assign(longid, sizeof longid, out);
    assert_int_equal(strlen(out), 32);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_valid),
        cmocka_unit_test(test_parse_invalid),
        cmocka_unit_test(test_begin_and_child),
        cmocka_unit_test(test_request_id),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
