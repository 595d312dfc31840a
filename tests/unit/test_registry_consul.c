/* test_registry_consul.c — the Consul wire format (lib/consul.c): Go durations, Consul's key
 * matching, registration decoding with precise errors, and encode/decode round trips. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "consul.h"

static void test_durations(void **state)
{
    (void)state;
    uint64_t ns;
    assert_true(lm_consul_parse_duration("10s", &ns) && ns == 10000000000ULL);
    assert_true(lm_consul_parse_duration("1m30s", &ns) && ns == 90000000000ULL);
    assert_true(lm_consul_parse_duration("500ms", &ns) && ns == 500000000ULL);
    assert_true(lm_consul_parse_duration("1.5h", &ns) && ns == 5400000000000ULL);
    assert_true(lm_consul_parse_duration("2h45m", &ns) && ns == 9900000000000ULL);
    assert_true(lm_consul_parse_duration("250us", &ns) && ns == 250000);
    assert_true(lm_consul_parse_duration("250\xc2\xb5s", &ns) && ns == 250000);
    assert_true(lm_consul_parse_duration("7ns", &ns) && ns == 7);
    assert_true(lm_consul_parse_duration(".5s", &ns) && ns == 500000000ULL);
    assert_true(lm_consul_parse_duration("0", &ns) && ns == 0);
    assert_true(lm_consul_parse_duration("0s", &ns) && ns == 0);
    assert_false(lm_consul_parse_duration("10x", &ns));
    assert_false(lm_consul_parse_duration("10", &ns)); /* Go wants a unit */
    assert_false(lm_consul_parse_duration("", &ns));
    assert_false(lm_consul_parse_duration("s", &ns));
    assert_false(lm_consul_parse_duration(".s", &ns));
    assert_false(lm_consul_parse_duration("-1s", &ns));
    assert_false(lm_consul_parse_duration("1s ", &ns));
    assert_false(lm_consul_parse_duration("1 s", &ns));
    assert_false(lm_consul_parse_duration("9999999999999999999h", &ns));
    assert_false(lm_consul_parse_duration("3000000h", &ns)); /* beyond int64 nanoseconds */
    assert_false(lm_consul_parse_duration(NULL, &ns));

    uint64_t ms;
    json_t *v = json_string("1us");
    assert_true(lm_consul_duration_ms(v, &ms) && ms == 1); /* rounded up, never 0 */
    json_decref(v);
    v = json_integer(2500000000LL); /* nanoseconds */
    assert_true(lm_consul_duration_ms(v, &ms) && ms == 2500);
    json_decref(v);
    v = json_integer(-1);
    assert_false(lm_consul_duration_ms(v, &ms));
    json_decref(v);
    v = json_real(1.5);
    assert_false(lm_consul_duration_ms(v, &ms));
    json_decref(v);

    char buf[32];
    lm_consul_format_duration(10000, buf, sizeof buf);
    assert_string_equal(buf, "10s");
    lm_consul_format_duration(1500, buf, sizeof buf);
    assert_string_equal(buf, "1500ms");
}

static void test_keys(void **state)
{
    (void)state;
    assert_true(lm_consul_key_eq("CheckID", "checkid"));
    assert_true(lm_consul_key_eq("check_id", "CheckID"));
    assert_true(
        lm_consul_key_eq("deregister_critical_service_after", "DeregisterCriticalServiceAfter"));
    assert_false(lm_consul_key_eq("Name", "Names"));
    assert_false(lm_consul_key_eq("ID", ""));
    json_t *o = json_pack("{s:i}", "port", 8);
    assert_int_equal(json_integer_value(lm_consul_get(o, "Port")), 8);
    assert_null(lm_consul_get(o, "Address"));
    json_decref(o);
}

/* Decodes text; returns rc and leaves the error in err. */
static int decode(const char *text, lm_consul_service *s, char *err, size_t errlen)
{
    json_error_t je;
    json_t *doc = json_loads(text, 0, &je);
    assert_non_null(doc);
    int rc = lm_consul_service_decode(doc, s, err, errlen);
    json_decref(doc);
    return rc;
}

static void test_python_consul_payloads(void **state)
{
    (void)state;
    char err[512];
    lm_consul_service s;
    /* what python-consul 0.7.1 sends: lowercase keys, Check.http/Check.ttl */
    assert_int_equal(decode("{\"name\":\"web\",\"id\":\"web1\",\"address\":\"10.0.0.1\","
                            "\"port\":8080,\"tags\":[\"a\",\"b\"],\"enabletagoverride\":true,"
                            "\"check\":{\"http\":\"http://10.0.0.1:8080/health\","
                            "\"interval\":\"10s\",\"timeout\":\"1s\","
                            "\"DeregisterCriticalServiceAfter\":\"1m\"}}",
                            &s, err, sizeof err),
                     0);
    assert_string_equal(s.name, "web");
    assert_string_equal(s.id, "web1");
    assert_string_equal(s.address, "10.0.0.1");
    assert_int_equal(s.port, 8080);
    assert_int_equal(s.n_tags, 2);
    assert_string_equal(s.tags[1], "b");
    assert_true(s.enable_tag_override);
    assert_int_equal(s.n_checks, 1);
    assert_int_equal(s.checks[0].type, LM_CONSUL_CHECK_HTTP);
    assert_string_equal(s.checks[0].http, "http://10.0.0.1:8080/health");
    assert_int_equal(s.checks[0].interval_ms, 10000);
    assert_int_equal(s.checks[0].timeout_ms, 1000);
    assert_int_equal(s.checks[0].deregister_ms, 60000);
    assert_null(s.checks[0].id);
    lm_consul_service_free(&s);

    assert_int_equal(decode("{\"name\":\"api\",\"check\":{\"ttl\":\"15s\"}}", &s, err, sizeof err),
                     0);
    assert_string_equal(s.id, "api"); /* ID defaults to Name */
    assert_string_equal(s.address, "");
    assert_int_equal(s.checks[0].type, LM_CONSUL_CHECK_TTL);
    assert_int_equal(s.checks[0].ttl_ms, 15000);
    assert_false(s.checks[0].has_status);
    lm_consul_service_free(&s);

    /* Consul's own keys, snake_case aliases, Check + Checks, Meta, Weights, Status */
    assert_int_equal(
        decode("{\"Name\":\"x\",\"Meta\":{\"version\":\"1.2\"},\"Weights\":{\"passing\":3},"
               "\"Check\":{\"check_id\":\"c1\",\"TTL\":\"5s\",\"status\":\"passing\","
               "\"deregister_critical_service_after\":\"90s\"},"
               "\"Checks\":[{\"HTTP\":\"http://h/\",\"Interval\":\"1s\",\"Method\":\"HEAD\","
               "\"Header\":{\"X-A\":[\"1\",\"2\"],\"X-B\":\"3\"}},null]}",
               &s, err, sizeof err),
        0);
    assert_int_equal(s.n_meta, 1);
    assert_string_equal(s.meta[0].value, "1.2");
    assert_int_equal(s.weight_passing, 3);
    assert_int_equal(s.weight_warning, 1);
    assert_int_equal(s.n_checks, 2);
    assert_string_equal(s.checks[0].id, "c1");
    assert_true(s.checks[0].has_status);
    assert_int_equal(s.checks[0].status, LM_CONSUL_PASSING);
    assert_int_equal(s.checks[0].deregister_ms, 90000);
    assert_string_equal(s.checks[1].method, "HEAD");
    assert_int_equal(s.checks[1].n_headers, 3);
    lm_consul_service_free(&s);
}

static void expect_error(const char *text, const char *fragment)
{
    char err[512] = "";
    lm_consul_service s;
    assert_int_equal(decode(text, &s, err, sizeof err), -1);
    if (!strstr(err, fragment)) fail_msg("error \"%s\" lacks \"%s\"", err, fragment);
    /* a failed decode leaves nothing to free */
    assert_null(s.name);
    assert_null(s.checks);
}

static void test_errors(void **state)
{
    (void)state;
    expect_error("[]", "must be a JSON object");
    expect_error("{}", "Name: is required");
    expect_error("{\"Name\":\"\"}", "Name: must not be empty");
    expect_error("{\"Name\":7}", "Name: must be a string");
    expect_error("{\"Name\":\"a\\u0001b\"}", "control characters");
    expect_error("{\"Name\":\"x\",\"Port\":70000}", "Port: must be an integer from 0 to 65535");
    expect_error("{\"Name\":\"x\",\"Port\":-1}", "Port");
    expect_error("{\"Name\":\"x\",\"Port\":\"80\"}", "Port");
    expect_error("{\"Name\":\"x\",\"Port\":80.5}", "Port");
    expect_error("{\"Name\":\"x\",\"Check\":{\"TTL\":\"10x\"}}",
                 "Check.TTL: invalid duration \"10x\"");
    expect_error("{\"Name\":\"x\",\"Checks\":[{\"TTL\":\"1s\"},{\"HTTP\":\"http://h/\","
                 "\"Interval\":\"soon\"}]}",
                 "Checks[1].Interval: invalid duration");
    expect_error("{\"Name\":\"x\",\"Check\":{\"TTL\":\"0s\"}}",
                 "Check.TTL: must be greater than 0");
    expect_error("{\"Name\":\"x\",\"Check\":{\"HTTP\":\"http://h/\"}}",
                 "Check.Interval: must be greater than 0");
    expect_error("{\"Name\":\"x\",\"Check\":{\"HTTP\":\"https://h/\",\"Interval\":\"1s\"}}",
                 "https is not supported");
    expect_error("{\"Name\":\"x\",\"Check\":{\"TTL\":\"1s\",\"HTTP\":\"http://h/\"}}",
                 "either TTL or HTTP");
    expect_error("{\"Name\":\"x\",\"Check\":{\"TTL\":\"1s\",\"Interval\":\"1s\"}}",
                 "Interval and TTL");
    expect_error("{\"Name\":\"x\",\"Check\":{\"Notes\":\"n\"}}", "needs TTL");
    expect_error("{\"Name\":\"x\",\"Check\":{\"Script\":\"/bin/true\",\"Interval\":\"1s\"}}",
                 "Script checks are not supported");
    expect_error("{\"Name\":\"x\",\"Check\":{\"TCP\":\"h:1\",\"Interval\":\"1s\"}}",
                 "TCP checks are not supported");
    expect_error("{\"Name\":\"x\",\"Check\":{\"TTL\":\"1s\",\"Status\":\"fine\"}}",
                 "Check.Status: must be");
    expect_error("{\"Name\":\"x\",\"Connect\":{}}", "Connect is not supported");
    expect_error("{\"Name\":\"x\",\"Colour\":\"red\"}", "unknown or unsupported field \"Colour\"");
    expect_error("{\"Name\":\"x\",\"name\":\"y\"}", "given more than once");
    expect_error("{\"Name\":\"x\",\"Tags\":\"a\"}", "Tags: must be an array");
    expect_error("{\"Name\":\"x\",\"Tags\":[1]}", "Tags[0]: must be a string");
    expect_error("{\"Name\":\"x\",\"Meta\":{\"a b\":\"1\"}}", "Meta: key \"a b\"");
    expect_error("{\"Name\":\"x\",\"Meta\":{\"consul-x\":\"1\"}}", "reserved");
    expect_error("{\"Name\":\"x\",\"Meta\":{\"k\":1}}", "Meta.k: must be a string");
    expect_error("{\"Name\":\"x\",\"Weights\":{\"Passing\":0}}", "Weights.Passing");
    expect_error("{\"Name\":\"x\",\"Checks\":[{\"CheckID\":\"c\",\"TTL\":\"1s\"},"
                 "{\"CheckID\":\"c\",\"TTL\":\"1s\"}]}",
                 "given twice");
    expect_error("{\"Name\":\"x\",\"Check\":{\"TTL\":\"1s\",\"Header\":{\"a b\":\"1\"}}}",
                 "not a valid header name");
    expect_error("{\"Name\":\"x\",\"Check\":{\"CheckID\":\"a\",\"ID\":\"b\",\"TTL\":\"1s\"}}",
                 "CheckID or ID");
    char big[LM_CONSUL_MAX_ID + 40];
    memset(big, 'n', sizeof big);
    memcpy(big, "{\"Name\":\"", 9);
    memcpy(big + sizeof big - 3, "\"}", 3);
    expect_error(big, "Name: is longer than");
}

static void test_round_trip(void **state)
{
    (void)state;
    char err[512];
    lm_consul_service a, b;
    assert_int_equal(
        decode(
            "{\"ID\":\"i\",\"Name\":\"n\",\"Tags\":[\"t\"],\"Address\":\"::1\",\"Port\":1,"
            "\"Meta\":{\"k\":\"v\"},\"Checks\":[{\"TTL\":\"1500ms\",\"Status\":\"warning\"},"
            "{\"CheckID\":\"h\",\"Name\":\"probe\",\"Notes\":\"x\",\"HTTP\":\"http://[::1]:1/h\","
            "\"Method\":\"POST\",\"Header\":{\"A\":[\"1\"]},\"Interval\":\"2s\","
            "\"Timeout\":\"100ms\",\"DeregisterCriticalServiceAfter\":\"1h\"}]}",
            &a, err, sizeof err),
        0);
    json_t *doc = lm_consul_service_encode(&a);
    assert_int_equal(lm_consul_service_decode(doc, &b, err, sizeof err), 0);
    json_decref(doc);
    assert_true(lm_consul_service_equal(&a, &b));
    assert_true(b.checks[0].has_status && b.checks[0].status == LM_CONSUL_WARNING);
    lm_consul_service c;
    lm_consul_service_copy(&c, &b);
    assert_true(lm_consul_service_equal(&a, &c));
    free(c.checks[1].notes);
    c.checks[1].notes = strdup("changed");
    assert_false(lm_consul_service_equal(&a, &c));
    lm_consul_service_free(&a);
    lm_consul_service_free(&b);
    lm_consul_service_free(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_durations),
        cmocka_unit_test(test_keys),
        cmocka_unit_test(test_python_consul_payloads),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_round_trip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
