/* test_amqp_url.c — EVENT_BROKER_URL parsing (lm_amqp_url): defaults, percent-decoding, the
 * vhost rules of the RabbitMQ URI spec, and refusals with reasons that never echo a password. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "amqp_url.h"

static void test_full(void **state)
{
    (void)state;
    lm_amqp_url u;
    char err[200];
    assert_int_equal(
        lm_amqp_url_parse("amqp://lotmesh:s%40cret@127.0.0.1:5673/lotmesh", &u, err, sizeof err),
        0);
    assert_string_equal(u.user, "lotmesh");
    assert_string_equal(u.password, "s@cret");
    assert_string_equal(u.host, "127.0.0.1");
    assert_int_equal(u.port, 5673);
    assert_string_equal(u.vhost, "lotmesh");
}

static void test_defaults(void **state)
{
    (void)state;
    lm_amqp_url u;
    char err[200];
    assert_int_equal(lm_amqp_url_parse("amqp://rabbit", &u, err, sizeof err), 0);
    assert_string_equal(u.user, "guest");
    assert_string_equal(u.password, "guest");
    assert_string_equal(u.host, "rabbit");
    assert_int_equal(u.port, 5672);
    assert_string_equal(u.vhost, "/");
    /* %2f is the default vhost "/" */
    assert_int_equal(lm_amqp_url_parse("amqp://u:p@h:1/%2f", &u, err, sizeof err), 0);
    assert_string_equal(u.vhost, "/");
    assert_int_equal(u.port, 1);
    /* a user without a password */
    assert_int_equal(lm_amqp_url_parse("amqp://u@h/v%20x", &u, err, sizeof err), 0);
    assert_string_equal(u.user, "u");
    assert_string_equal(u.password, "");
    assert_string_equal(u.vhost, "v x");
    /* IPv6 */
    assert_int_equal(lm_amqp_url_parse("amqp://[::1]:5680", &u, err, sizeof err), 0);
    assert_string_equal(u.host, "::1");
    assert_int_equal(u.port, 5680);
    assert_int_equal(lm_amqp_url_parse("amqp://[fe80::2]/x", &u, err, sizeof err), 0);
    assert_string_equal(u.host, "fe80::2");
    assert_int_equal(u.port, 5672);
}

static void refused(const char *url, const char *reason_part)
{
    lm_amqp_url u;
    char err[200] = "";
    assert_int_equal(lm_amqp_url_parse(url, &u, err, sizeof err), -1);
    assert_non_null(strstr(err, "EVENT_BROKER_URL"));
    if (reason_part && !strstr(err, reason_part))
        fail_msg("%s: reason \"%s\" lacks \"%s\"", url, err, reason_part);
    assert_null(strstr(err, "hunter2")); /* the password never appears */
}

static void test_refusals(void **state)
{
    (void)state;
    refused("", "empty");
    refused("http://h/", "amqp://");
    refused("amqps://u:hunter2@h/", "TLS");
    refused("amqp://u:hunter2@h/v?heartbeat=5", "query");
    refused("amqp://u:hunter2@h/v#x", "fragment");
    refused("amqp://u:hunter2@h:0/", "port");
    refused("amqp://u:hunter2@h:65536/", "port");
    refused("amqp://u:hunter2@h:99999999999999999999/", "port");
    refused("amqp://u:hunter2@h:5x/", "port");
    refused("amqp://u:hunter2@h:/", "port");
    refused("amqp://u:hunter2@:5672/", "host");
    refused("amqp://u:hunter2@/", "host");
    refused("amqp://u:hunter2@h/", "vhost");
    refused("amqp://u:hunter2@h/a/b", "segment");
    refused("amqp://u:hunter2@h/%zz", "vhost");
    refused("amqp://u:hunter2@h/a%00b", "vhost");
    refused("amqp://:hunter2@h/", "user");
    refused("amqp://u:hunter2%@h/", "password");
    refused("amqp://u:hunter2@h!x/", "host");
    refused("amqp://u:hunter2@[::1/", "IPv6");
    refused("amqp://u:hunter2@[::1]x/", "]");
    refused("amqp://u:hunter2@h /", "space");
}

static void test_redacted(void **state)
{
    (void)state;
    lm_amqp_url u, back;
    char err[200], out[600];
    assert_int_equal(lm_amqp_url_parse("amqp://a%20b:hunter2@[::1]:5673/%2f", &u, err, sizeof err),
                     0);
    lm_amqp_url_redacted(&u, out, sizeof out);
    assert_string_equal(out, "amqp://a%20b@[::1]:5673/%2F");
    assert_null(strstr(out, "hunter2"));
    assert_int_equal(lm_amqp_url_parse(out, &back, err, sizeof err), 0);
    assert_string_equal(back.user, u.user);
    assert_string_equal(back.host, u.host);
    assert_int_equal(back.port, u.port);
    assert_string_equal(back.vhost, u.vhost);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_full),
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_redacted),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
