/* test_sqlparam.c — the neutral SQL dialect's parameters as PostgreSQL's $N. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>

#include "sqlparam.h"

static void expect(const char *sql, const char *pg, int n)
{
    lm_sqlparam p;
    char *out = lm_sqlparam_translate(sql, &p);
    assert_non_null(out);
    assert_string_equal(out, pg);
    assert_int_equal(p.n, n);
    free(out);
    lm_sqlparam_free(&p);
}

static void refused(const char *sql)
{
    lm_sqlparam p;
    assert_null(lm_sqlparam_translate(sql, &p));
    for (int i = 0; i < LM_SQLPARAM_MAX; i++)
        assert_null(p.names[i]);
}

static void test_positional(void **state)
{
    (void)state;
    expect("SELECT a FROM t WHERE id = ? AND b = ?", "SELECT a FROM t WHERE id = $1 AND b = $2", 2);
    /* "?N" is N; a bare "?" one more than the highest so far (SQLite's rule) */
    expect("VALUES (?3, ?, ?1)", "VALUES ($3, $4, $1)", 4);
    expect("SELECT 1", "SELECT 1", 0);
}

static void test_named(void **state)
{
    (void)state;
    lm_sqlparam p;
    char *out = lm_sqlparam_translate(
        "SELECT * FROM c WHERE s = :status AND x < :before OR s = :status LIMIT :limit", &p);
    assert_string_equal(out, "SELECT * FROM c WHERE s = $1 AND x < $2 OR s = $1 LIMIT $3");
    assert_int_equal(p.n, 3);
    assert_string_equal(p.names[0], ":status");
    assert_string_equal(p.names[1], ":before");
    assert_string_equal(p.names[2], ":limit");
    assert_null(p.names[3]);
    free(out);
    lm_sqlparam_free(&p);
}

static void test_quotes_and_casts_are_kept(void **state)
{
    (void)state;
    expect("SELECT 'a?b:c', \"d:e?\", x::text, ? FROM t",
           "SELECT 'a?b:c', \"d:e?\", x::text, $1 FROM t", 1);
    expect("SELECT 'it''s ?', ?", "SELECT 'it''s ?', $1", 1);
    expect("SELECT 'open ?", "SELECT 'open ?", 0); /* unterminated: copied to the end */
    expect("SELECT :1, : x", "SELECT :1, : x", 0); /* not names */
}

static void test_out_of_range_is_refused(void **state)
{
    (void)state;
    refused("SELECT ?0");
    refused("SELECT ?33");
    refused("SELECT ?99999999999999999999");
    expect("SELECT ?32", "SELECT $32", 32);
    /* 33 names: the 33rd is refused, and the 32 recorded are freed */
    char sql[33 * 8 + 1] = "";
    char *w = sql;
    for (int i = 0; i < 33; i++)
        w += sprintf(w, ":n%02d, ", i);
    refused(sql);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_positional),
        cmocka_unit_test(test_named),
        cmocka_unit_test(test_quotes_and_casts_are_kept),
        cmocka_unit_test(test_out_of_range_is_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
