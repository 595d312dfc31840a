/* test_buf.c — lm_buf growth, escaping and ownership. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"

static void test_append_and_grow(void **state)
{
    (void)state;
    lm_buf b = LM_BUF_INIT;
    for (int i = 0; i < 10000; i++)
        lm_buf_append_char(&b, (char)('a' + i % 26));
    assert_int_equal(b.len, 10000);
    assert_true(b.cap > b.len);
    assert_int_equal(b.data[25], 'z');
    assert_int_equal(strlen(lm_buf_cstr(&b)), 10000);
    lm_buf_free(&b);
    assert_null(b.data);
}

static void test_u64_and_printf(void **state)
{
    (void)state;
    lm_buf b = LM_BUF_INIT;
    lm_buf_append_u64(&b, 0);
    lm_buf_append_char(&b, ' ');
    lm_buf_append_u64(&b, 18446744073709551615ULL);
    lm_buf_printf(&b, " %s-%d", "x", 42);
    assert_string_equal(lm_buf_cstr(&b), "0 18446744073709551615 x-42");
    lm_buf_free(&b);
}

static void test_consume_and_steal(void **state)
{
    (void)state;
    lm_buf b = LM_BUF_INIT;
    lm_buf_append_str(&b, "hello world");
    lm_buf_consume(&b, 6);
    assert_string_equal(lm_buf_cstr(&b), "world");
    lm_buf_consume(&b, 100);
    assert_int_equal(b.len, 0);
    lm_buf_append_str(&b, "abc");
    size_t n;
    char *s = lm_buf_steal(&b, &n);
    assert_int_equal(n, 3);
    assert_string_equal(s, "abc");
    assert_null(b.data);
    free(s);
}

static void check_escape(const char *in, size_t n, const char *want)
{
    lm_buf b = LM_BUF_INIT;
    lm_buf_append_json_escaped(&b, in, n);
    assert_string_equal(lm_buf_cstr(&b), want);
    lm_buf_free(&b);
}

static void test_json_escape(void **state)
{
    (void)state;
    check_escape("plain", 5, "plain");
    check_escape("a\"b\\c", 5, "a\\\"b\\\\c");
    check_escape("\n\r\t\b\f", 5, "\\n\\r\\t\\b\\f");
    check_escape("\x01\x1f", 2, "\\u0001\\u001f");
    check_escape("x\0y", 3, "x\\u0000y");
    check_escape("K\xc3\xa4se", 5, "K\xc3\xa4se"); /* valid UTF-8 kept */
    check_escape("\xff", 1, "\xEF\xBF\xBD");       /* invalid byte */
    check_escape("\xc3", 1, "\xEF\xBF\xBD");       /* truncated sequence */
    check_escape("\xed\xa0\x80", 3, "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD"); /* surrogate */
    check_escape("\xc0\xaf", 2, "\xEF\xBF\xBD\xEF\xBF\xBD");                 /* overlong */
    check_escape("\xf0\x9f\x98\x80", 4, "\xf0\x9f\x98\x80");                 /* 4-byte emoji */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_append_and_grow),
        cmocka_unit_test(test_u64_and_printf),
        cmocka_unit_test(test_consume_and_steal),
        cmocka_unit_test(test_json_escape),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
