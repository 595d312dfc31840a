/* test_tokcache.c — the token cache of the guard and the gateway: verified tokens bounded
 * by exp, minted tokens reused until a minute before expiry. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "tokcache.h"

static void test_verified(void **state)
{
    (void)state;
    lm_tokcache c = LM_TOKCACHE_INIT(4);
    lm_token_claims in = {.sub = "dev", .scope = "read", .exp = 1000}, out;
    assert_false(lm_tokcache_find(&c, "tok-a", 10, &out));
    lm_tokcache_store(&c, "tok-a", &in);
    assert_true(lm_tokcache_find(&c, "tok-a", 10, &out));
    assert_string_equal(out.sub, "dev");
    assert_false(lm_tokcache_find(&c, "tok-a", 1000, &out)); /* expired */
    assert_false(lm_tokcache_find(&c, "tok-b", 10, &out));   /* never stored */
    /* a token whose slot another took is verified again */
    char name[16];
    for (int i = 0; i < 16; i++) {
        snprintf(name, sizeof name, "other-%d", i);
        lm_tokcache_store(&c, name, &in);
    }
    int found = 0;
    for (int i = 0; i < 16; i++) {
        snprintf(name, sizeof name, "other-%d", i);
        found += lm_tokcache_find(&c, name, 10, &out);
    }
    assert_true(found >= 1 && found <= 4);
    lm_tokcache_free(&c);
    assert_false(lm_tokcache_find(&c, "other-15", 10, &out));
    lm_tokcache_free(&c);
}

static void test_minted(void **state)
{
    (void)state;
    lm_token_key k;
    char err[200];
    assert_int_equal(
        lm_token_key_secret(&k, "0123456789abcdef0123456789abcdef", 32, err, sizeof err), 0);
    lm_tokcache c = LM_TOKCACHE_INIT(8);
    long long now = (long long)time(NULL);
    const char *t1 = lm_tokcache_mint(&c, &k, "gateway", "charges_api", "dev", "read", 300, now);
    assert_non_null(t1);
    char first[2048];
    snprintf(first, sizeof first, "%s", t1);
    lm_token_claims claims;
    assert_int_equal(lm_token_verify(&k, first, "gateway", "charges_api", &claims), LM_TOKEN_OK);
    assert_string_equal(claims.sub, "dev");
    assert_int_equal(claims.exp, now + 300);
    /* reused while more than a minute is left */
    const char *t2 =
        lm_tokcache_mint(&c, &k, "gateway", "charges_api", "dev", "read", 300, now + 239);
    assert_string_equal(t2, first);
    /* re-minted after that */
    const char *t3 =
        lm_tokcache_mint(&c, &k, "gateway", "charges_api", "dev", "read", 300, now + 240);
    assert_string_not_equal(t3, first);
    /* another scope is another token */
    const char *t4 =
        lm_tokcache_mint(&c, &k, "gateway", "charges_api", "dev", "read write", 300, now + 240);
    assert_non_null(t4);
    /* a key too long for the cache is refused, not truncated into another's */
    char longsub[400];
    memset(longsub, 'x', sizeof longsub - 1);
    longsub[sizeof longsub - 1] = '\0';
    assert_null(
        lm_tokcache_mint(&c, &k, "gateway", "charges_api", longsub, "read", 300, now + 240));
    lm_tokcache_free(&c);
    /* a verifying-only key mints nothing */
    lm_token_key ro = k;
    ro.sign_key = NULL;
    assert_null(lm_tokcache_mint(&c, &ro, "gateway", "charges_api", "dev", "read", 300, now));
    lm_tokcache_free(&c);
    lm_token_key_free(&k);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_verified),
        cmocka_unit_test(test_minted),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
