/* test_json.c — field validation rules and RFC 3339 times. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "json.h"
#include "timefmt.h"

static const char *const statuses[] = {"aktiv", "gesperrt", NULL};
static const lm_field_spec specs[] = {
    {.name = "name", .type = LM_F_STRING, .required = true, .min_len = 1, .max_len = 5},
    {.name = "menge",
     .type = LM_F_NUMBER,
     .required = true,
     .has_min = true,
     .min = 0,
     .exclusive_min = true},
    {.name = "tage", .type = LM_F_INTEGER, .has_min = true, .min = 0},
    {.name = "when", .type = LM_F_DATETIME, .nullable = true},
    {.name = "status", .type = LM_F_STRING, .one_of = statuses},
    {.name = "id", .type = LM_F_INTEGER, .read_only = true},
};
#define NSPECS (sizeof specs / sizeof specs[0])

static const char *error_for(lm_verrs *e, const char *field)
{
    for (size_t i = 0; i < e->n; i++)
        if (strcmp(e->items[i].field, field) == 0) return e->items[i].message;
    return NULL;
}

static void test_valid_and_trimmed(void **state)
{
    (void)state;
    json_t *o = json_loads("{\"name\":\"  K\xc3\xa4se \",\"menge\":2.5,\"tage\":3,"
                           "\"when\":\"2026-11-24T08:00:00+01:00\",\"status\":\"aktiv\"}",
                           0, NULL);
    lm_verrs e = {0};
    lm_json_validate(o, specs, NSPECS, false, &e);
    assert_int_equal(e.n, 0);
    assert_string_equal(lm_json_str(o, "name"), "K\xc3\xa4se"); /* 4 characters, 5 bytes */
    json_decref(o);
}

static void test_every_rule(void **state)
{
    (void)state;
    json_t *o = json_loads("{\"name\":\"toolong\",\"menge\":0,\"tage\":1.5,\"when\":\"yesterday\","
                           "\"status\":\"weg\",\"id\":7,\"extra\":true}",
                           0, NULL);
    lm_verrs e = {0};
    lm_json_validate(o, specs, NSPECS, false, &e);
    assert_string_equal(error_for(&e, "name"), "must have at most 5 characters");
    assert_string_equal(error_for(&e, "menge"), "must be greater than 0");
    assert_string_equal(error_for(&e, "tage"), "must be an integer");
    assert_non_null(strstr(error_for(&e, "when"), "RFC 3339"));
    assert_string_equal(error_for(&e, "status"), "must be one of: aktiv, gesperrt");
    assert_non_null(strstr(error_for(&e, "id"), "set by the server"));
    assert_string_equal(error_for(&e, "extra"), "unknown field");
    lm_verrs_free(&e);
    json_decref(o);

    o = json_loads("{\"name\":\"   \",\"when\":null,\"menge\":\"5\"}", 0, NULL);
    lm_json_validate(o, specs, NSPECS, false, &e);
    assert_string_equal(error_for(&e, "name"), "must not be empty");
    assert_string_equal(error_for(&e, "menge"), "must be a number");
    assert_null(error_for(&e, "when"));
    lm_verrs_free(&e);
    json_decref(o);

    o = json_loads("{}", 0, NULL);
    lm_json_validate(o, specs, NSPECS, false, &e);
    assert_string_equal(error_for(&e, "name"), "is required");
    assert_string_equal(error_for(&e, "menge"), "is required");
    assert_int_equal(e.n, 2);
    lm_verrs_free(&e);
    lm_json_validate(o, specs, NSPECS, true, &e); /* partial: nothing required */
    assert_int_equal(e.n, 0);
    json_decref(o);

    o = json_loads("{\"name\":null}", 0, NULL);
    lm_json_validate(o, specs, NSPECS, true, &e);
    assert_string_equal(error_for(&e, "name"), "must not be null");
    lm_verrs_free(&e);
    json_decref(o);
}

static void test_times(void **state)
{
    (void)state;
    int64_t ms;
    char out[LM_TIME_STRLEN];
    assert_true(lm_timefmt_parse("1970-01-01T00:00:00Z", false, &ms));
    assert_int_equal(ms, 0);
    assert_true(lm_timefmt_parse("2026-11-24T10:00:00.5+01:00", false, &ms));
    lm_timefmt_format(ms, out);
    assert_string_equal(out, "2026-11-24T09:00:00.500Z");
    assert_true(lm_timefmt_parse("2024-02-29", true, &ms));
    lm_timefmt_format(ms, out);
    assert_string_equal(out, "2024-02-29T00:00:00Z");
    assert_false(lm_timefmt_parse("2024-02-29", false, &ms));
    assert_false(lm_timefmt_parse("2026-02-29T00:00:00Z", false, &ms));
    assert_false(lm_timefmt_parse("2026-13-01T00:00:00Z", false, &ms));
    assert_false(lm_timefmt_parse("2026-11-24T24:00:00Z", false, &ms));
    assert_false(lm_timefmt_parse("2026-11-24T10:00:00", false, &ms)); /* offset required */
    assert_false(lm_timefmt_parse("2026-11-24T10:00:00Zjunk", false, &ms));
    assert_false(lm_timefmt_parse("2026-11-24T10:00:00.Z", false, &ms));
    assert_false(lm_timefmt_parse("", true, &ms));
    assert_true(lm_timefmt_parse("1969-12-31T23:59:59.999Z", false, &ms));
    assert_int_equal(ms, -1);
    lm_timefmt_format(ms, out);
    assert_string_equal(out, "1969-12-31T23:59:59.999Z");
    /* outside four-digit years: saturated, never a wrong date inside the range */
    lm_timefmt_format(253402300800000LL, out);
    assert_string_equal(out, "9999-12-31T23:59:59.999Z");
    lm_timefmt_format(-62135596800001LL, out);
    assert_string_equal(out, "0001-01-01T00:00:00Z");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_and_trimmed),
        cmocka_unit_test(test_every_rule),
        cmocka_unit_test(test_times),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
