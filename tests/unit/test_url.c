/* test_url.c — strict percent-decoding and query parsing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "url.h"

static void test_decode(void **state)
{
    (void)state;
    char out[64];
    size_t n;
    assert_true(lm_url_decode("a%20b%2Fc", 9, out, &n, false));
    assert_string_equal(out, "a b/c");
    assert_int_equal(n, 5);
    assert_true(lm_url_decode("a+b", 3, out, &n, false));
    assert_string_equal(out, "a+b");
    assert_true(lm_url_decode("a+b", 3, out, &n, true));
    assert_string_equal(out, "a b");
    assert_true(lm_url_decode("%c3%A4", 6, out, &n, false));
    assert_string_equal(out, "\xc3\xa4");
    assert_false(lm_url_decode("%", 1, out, &n, false));
    assert_false(lm_url_decode("%2", 2, out, &n, false));
    assert_false(lm_url_decode("%zz", 3, out, &n, false));
    assert_false(lm_url_decode("a%00b", 5, out, &n, false)); /* decoded NUL refused */
    assert_true(lm_url_decode("", 0, out, &n, false));
    assert_string_equal(out, "");
}

static void test_query(void **state)
{
    (void)state;
    lm_query q;
    const char *s = "status=aktiv&limit=50&&q=K%C3%A4se+alt&flag&status=gesperrt&empty=";
    assert_int_equal(lm_query_parse(s, strlen(s), &q), 0);
    assert_int_equal(q.n, 6);
    assert_string_equal(lm_query_get(&q, "status"), "aktiv");
    assert_int_equal(lm_query_count(&q, "status"), 2);
    assert_string_equal(lm_query_get(&q, "q"), "K\xc3\xa4se alt");
    assert_string_equal(lm_query_get(&q, "flag"), "");
    assert_string_equal(lm_query_get(&q, "empty"), "");
    assert_null(lm_query_get(&q, "missing"));
    lm_query_free(&q);

    assert_int_equal(lm_query_parse("", 0, &q), 0);
    assert_int_equal(q.n, 0);
    lm_query_free(&q);
    assert_int_equal(lm_query_parse("a=%zz", 5, &q), -1);
    assert_int_equal(lm_query_parse("%41=1", 5, &q), 0);
    assert_string_equal(lm_query_get(&q, "A"), "1");
    lm_query_free(&q);
    assert_int_equal(lm_query_parse("&&&", 3, &q), 0);
    assert_int_equal(q.n, 0);
    lm_query_free(&q);
}

static void test_parse_url(void **state)
{
    (void)state;
    lm_url u;
    char err[256];
    assert_int_equal(lm_url_parse("http://articles:8002/base", &u, err, sizeof err), 0);
    assert_string_equal(u.scheme, "http");
    assert_string_equal(u.host, "articles");
    assert_int_equal(u.port, 8002);
    assert_string_equal(u.path, "/base");
    assert_int_equal(lm_url_parse("HTTP://10.0.0.7", &u, err, sizeof err), 0);
    assert_string_equal(u.host, "10.0.0.7");
    assert_int_equal(u.port, 80);
    assert_string_equal(u.path, "");
    assert_int_equal(lm_url_parse("http://[::1]:9000/x?y=1#frag", &u, err, sizeof err), 0);
    assert_string_equal(u.host, "::1");
    assert_int_equal(u.port, 9000);
    assert_string_equal(u.path, "/x?y=1");
    assert_int_equal(lm_url_parse("http://h?q", &u, err, sizeof err), 0);
    assert_string_equal(u.path, "/?q");
    assert_int_equal(lm_url_parse("https://a:443/", &u, err, sizeof err), -1);
    assert_non_null(strstr(err, "https is not supported"));
    assert_int_equal(lm_url_parse("ftp://a/", &u, err, sizeof err), -1);
    assert_int_equal(lm_url_parse("http://:80/", &u, err, sizeof err), -1);
    assert_int_equal(lm_url_parse("http://a:0/", &u, err, sizeof err), -1);
    assert_int_equal(lm_url_parse("http://a:65536/", &u, err, sizeof err), -1);
    assert_int_equal(lm_url_parse("http://a:8x/", &u, err, sizeof err), -1);
    assert_int_equal(lm_url_parse("http://u:p@a/", &u, err, sizeof err), -1);
    assert_int_equal(lm_url_parse("http://[::1/", &u, err, sizeof err), -1);
    assert_int_equal(lm_url_parse("http://a b/", &u, err, sizeof err), -1);
    assert_int_equal(lm_url_parse(NULL, &u, err, sizeof err), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_url),
        cmocka_unit_test(test_decode),
        cmocka_unit_test(test_query),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
