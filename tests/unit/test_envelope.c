/* test_envelope.c — the CloudEvents envelope parser and writer (lib/events/envelope.c) and the
 * topic matcher. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "envelope.h"

#define TP "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

static const char GOOD[] =
    "{\"specversion\":\"1.0\",\"id\":\"e1\",\"source\":\"/lotmesh/articles_api\","
    "\"type\":\"artikel.updated\",\"subject\":\"42\",\"time\":\"2026-12-05T10:00:00.123Z\","
    "\"datacontenttype\":\"application/json\",\"sequence\":7,\"aggregateversion\":3,"
    "\"traceparent\":\"" TP "\",\"data\":{\"id\":42,\"status\":\"gesperrt\",\"x\":null},"
    "\"otherextension\":\"ignored\"}";

static int parse(const char *s, lm_envelope *e, char *err)
{
    return lm_envelope_parse(s, strlen(s), e, err, 160);
}

static void test_parse_good(void **state)
{
    (void)state;
    lm_envelope e = {0};
    char err[160];
    assert_int_equal(parse(GOOD, &e, err), 0);
    assert_string_equal(e.id, "e1");
    assert_string_equal(e.source, "/lotmesh/articles_api");
    assert_string_equal(e.type, "artikel.updated");
    assert_string_equal(e.subject, "42");
    assert_int_equal(e.subject_id, 42);
    assert_int_equal(e.sequence, 7);
    assert_int_equal(e.aggregateversion, 3);
    assert_string_equal(e.traceparent, TP);
    assert_string_equal(e.data, "{\"id\":42,\"status\":\"gesperrt\",\"x\":null}");
    assert_int_equal(e.json_len, strlen(GOOD));
    assert_memory_equal(e.json, GOOD, e.json_len);
    lm_envelope copy = {0};
    lm_envelope_copy(&copy, &e);
    lm_envelope_clear(&e);
    assert_null(e.id);
    assert_string_equal(copy.type, "artikel.updated");
    assert_string_equal(copy.json, GOOD);
    lm_envelope_clear(&copy);
}

/* Replaces the first occurrence of from in GOOD with to. */
static char *variant(const char *from, const char *to)
{
    const char *p = strstr(GOOD, from);
    assert_non_null(p);
    size_t n = strlen(GOOD) - strlen(from) + strlen(to) + 1;
    char *s = malloc(n);
    snprintf(s, n, "%.*s%s%s", (int)(p - GOOD), GOOD, to, p + strlen(from));
    return s;
}

static void refused(const char *from, const char *to, const char *why)
{
    char *s = variant(from, to);
    lm_envelope e = {0};
    char err[160] = "";
    int rc = parse(s, &e, err);
    if (rc == 0) fail_msg("accepted: %s", s);
    if (!strstr(err, why)) fail_msg("reason \"%s\" lacks \"%s\" for %s", err, why, s);
    assert_null(e.id);
    assert_null(e.json);
    free(s);
}

static void test_parse_refuses(void **state)
{
    (void)state;
    refused("\"1.0\"", "\"0.3\"", "specversion");
    refused("\"id\":\"e1\",", "", "id: missing");
    refused("\"id\":\"e1\"", "\"id\":\"\"", "id");
    refused("\"id\":\"e1\"", "\"id\":7", "id: must be a string");
    refused("\"artikel.updated\"", "\"Artikel.Updated\"", "type");
    refused("\"artikel.updated\"", "\"artikel..x\"", "type");
    refused("\"subject\":\"42\"", "\"subject\":\"042\"", "subject");
    refused("\"subject\":\"42\"", "\"subject\":\"0\"", "subject");
    refused("\"subject\":\"42\"", "\"subject\":\"99999999999999999999\"", "subject");
    refused("2026-12-05T10:00:00.123Z", "yesterday", "time");
    refused("\"application/json\"", "\"text/plain\"", "datacontenttype");
    refused("\"sequence\":7", "\"sequence\":0", "sequence");
    refused("\"sequence\":7", "\"sequence\":7.5", "sequence");
    refused("\"sequence\":7,", "", "sequence: missing");
    refused("\"aggregateversion\":3", "\"aggregateversion\":\"3\"", "aggregateversion");
    refused(TP, "00-zz", "traceparent");
    refused("{\"id\":42,\"status\":\"gesperrt\",\"x\":null}", "[42]", "data");
    refused("\"data\":{", "\"dat\":{", "data: missing");
    refused("\"otherextension\":\"ignored\"", "\"id\":\"dup\"", "event: not JSON");
    lm_envelope e = {0};
    char err[160] = "";
    assert_int_equal(parse("[1,2]", &e, err), -1);
    assert_non_null(strstr(err, "object"));
    assert_int_equal(parse("{\"specversion\":", &e, err), -1);
    assert_non_null(strstr(err, "not JSON"));
}

static void test_write_round_trip(void **state)
{
    (void)state;
    lm_buf b = LM_BUF_INIT;
    lm_envelope_write(&b, "id-\"q\"", "/lotmesh/charges_api", "charge.deleted", 9,
                      "2026-12-05T10:00:00Z", 12, 5, NULL, "{\"id\":9}");
    lm_envelope e = {0};
    char err[160];
    assert_int_equal(lm_envelope_parse(b.data, b.len, &e, err, sizeof err), 0);
    assert_string_equal(e.id, "id-\"q\"");
    assert_string_equal(e.type, "charge.deleted");
    assert_string_equal(e.subject, "9");
    assert_int_equal(e.sequence, 12);
    assert_int_equal(e.aggregateversion, 5);
    assert_null(e.traceparent);
    assert_string_equal(e.data, "{\"id\":9}");
    lm_envelope_clear(&e);
    lm_buf_free(&b);
}

static void test_parse_array(void **state)
{
    (void)state;
    lm_buf b = LM_BUF_INIT;
    lm_buf_append(&b, "[", 1);
    lm_envelope_write(&b, "a", "/s", "charge.created", 1, "2026-12-05T10:00:00Z", 3, 1, TP, "{}");
    lm_buf_append(&b, ",", 1);
    lm_envelope_write(&b, "b", "/s", "charge.updated", 1, "2026-12-05T10:00:01Z", 5, 2, NULL,
                      "{\"a\":[1,2]}");
    lm_buf_append(&b, "]", 1);
    lm_envelope *evs;
    size_t n;
    char err[160];
    assert_int_equal(lm_envelope_parse_array(b.data, b.len, &evs, &n, err, sizeof err), 0);
    assert_int_equal(n, 2);
    assert_int_equal(evs[0].sequence, 3);
    assert_int_equal(evs[1].sequence, 5);
    assert_string_equal(evs[1].data, "{\"a\":[1,2]}");
    for (size_t i = 0; i < n; i++)
        lm_envelope_clear(&evs[i]);
    free(evs);
    assert_int_equal(lm_envelope_parse_array("[]", 2, &evs, &n, err, sizeof err), 0);
    assert_int_equal(n, 0);
    free(evs);
    /* sequences must rise */
    lm_buf c = LM_BUF_INIT;
    lm_buf_append(&c, "[", 1);
    lm_envelope_write(&c, "a", "/s", "x.y", 1, "2026-12-05T10:00:00Z", 5, 1, NULL, "{}");
    lm_buf_append(&c, ",", 1);
    lm_envelope_write(&c, "b", "/s", "x.y", 1, "2026-12-05T10:00:00Z", 5, 2, NULL, "{}");
    lm_buf_append(&c, "]", 1);
    assert_int_equal(lm_envelope_parse_array(c.data, c.len, &evs, &n, err, sizeof err), -1);
    assert_non_null(strstr(err, "feed[1]"));
    assert_null(evs);
    assert_int_equal(lm_envelope_parse_array("{}", 2, &evs, &n, err, sizeof err), -1);
    assert_non_null(strstr(err, "array"));
    lm_buf_free(&b);
    lm_buf_free(&c);
}

static void test_type_matching(void **state)
{
    (void)state;
    assert_true(lm_envelope_type_matches("artikel.*", "artikel.created"));
    assert_false(lm_envelope_type_matches("artikel.*", "artikel"));
    assert_false(lm_envelope_type_matches("artikel.*", "einheit.created"));
    assert_false(lm_envelope_type_matches("artikel.*", "artikel.created.x"));
    assert_true(lm_envelope_type_matches("#", "charge.updated"));
    assert_true(lm_envelope_type_matches("charge.#", "charge"));
    assert_true(lm_envelope_type_matches("charge.#", "charge.a.b"));
    assert_true(lm_envelope_type_matches("#.deleted", "charge.deleted"));
    assert_false(lm_envelope_type_matches("#.deleted", "charge.created"));
    assert_true(lm_envelope_type_matches("*.created", "einheit.created"));
    assert_true(lm_envelope_type_matches("einheit.created", "einheit.created"));
    assert_false(lm_envelope_type_matches("einheit.created", "einheit.create"));
    assert_true(lm_envelope_type_ok("charge.created"));
    assert_false(lm_envelope_type_ok(".x"));
    assert_false(lm_envelope_type_ok("x."));
    assert_false(lm_envelope_type_ok(""));
    assert_false(lm_envelope_type_ok("a b"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_good),       cmocka_unit_test(test_parse_refuses),
        cmocka_unit_test(test_write_round_trip), cmocka_unit_test(test_parse_array),
        cmocka_unit_test(test_type_matching),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
