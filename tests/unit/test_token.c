/* test_token.c — service tokens: round trip, expiry, audience, tampering, alg pinning. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "token.h"

static const char secret[] = "0123456789abcdef0123456789abcdef-test";

static lm_token_claims claims(long long exp_in)
{
    lm_token_claims c = {
        .iss = "gateway", .sub = "dev", .aud = "charges_api", .scope = "read write"};
    c.exp = (long long)time(NULL) + exp_in;
    return c;
}

static void test_hs256(void **state)
{
    (void)state;
    lm_token_key k;
    char err[128];
    assert_int_equal(lm_token_key_secret(&k, "short", 5, err, sizeof err), -1);
    assert_int_equal(lm_token_key_secret(&k, secret, strlen(secret), err, sizeof err), 0);
    lm_token_claims c = claims(300), out;
    char *t = lm_token_mint(&k, &c);
    assert_non_null(t);
    assert_int_equal(lm_token_verify(&k, t, "gateway", "charges_api", &out), LM_TOKEN_OK);
    assert_string_equal(out.sub, "dev");
    assert_true(lm_token_has_scope(out.scope, "write"));
    assert_false(lm_token_has_scope(out.scope, "wri"));
    assert_int_equal(lm_token_verify(&k, t, "gateway", "articles_api", &out),
                     LM_TOKEN_WRONG_AUDIENCE);
    assert_int_equal(lm_token_verify(&k, t, "someone", "charges_api", &out), LM_TOKEN_WRONG_ISSUER);
    /* tampered payload */
    char *dot = strchr(t, '.');
    dot[3] ^= 1;
    assert_int_equal(lm_token_verify(&k, t, "gateway", "charges_api", &out), LM_TOKEN_MALFORMED);
    free(t);
    /* expired beyond the leeway */
    c = claims(-120);
    t = lm_token_mint(&k, &c);
    assert_int_equal(lm_token_verify(&k, t, "gateway", "charges_api", &out), LM_TOKEN_EXPIRED);
    free(t);
    /* alg none: header {"alg":"none","typ":"JWT"}, payload with the right claims */
    char none[512];
    snprintf(none, sizeof none, "%s.%s.", "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0",
             "eyJpc3MiOiJnYXRld2F5IiwiYXVkIjoiY2hhcmdlc19hcGkiLCJleHAiOjQxMDI0NDQ4MDB9");
    assert_int_equal(lm_token_verify(&k, none, "gateway", "charges_api", &out), LM_TOKEN_MALFORMED);
    assert_int_equal(lm_token_verify(&k, "garbage", NULL, NULL, &out), LM_TOKEN_MALFORMED);
    assert_int_equal(lm_token_verify(&k, "", NULL, NULL, &out), LM_TOKEN_MALFORMED);
    lm_token_key_free(&k);
}

static void keypair(const char *dir, const char *kind, char *priv, char *pub)
{
    char cmd[1024];
    sprintf(priv, "%s/%s.key", dir, kind);
    sprintf(pub, "%s/%s.pub", dir, kind);
    if (!strcmp(kind, "rsa"))
        snprintf(cmd, sizeof cmd,
                 "openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out %s 2>/dev/null"
                 " && openssl pkey -in %s -pubout -out %s 2>/dev/null",
                 priv, priv, pub);
    else
        snprintf(
            cmd, sizeof cmd,
            "openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out %s 2>/dev/null"
            " && openssl pkey -in %s -pubout -out %s 2>/dev/null",
            priv, priv, pub);
    assert_int_equal(system(cmd), 0);
}

static void test_key_pairs_and_confusion(void **state)
{
    (void)state;
    char dir[] = "/tmp/lm-token-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char rpriv[256], rpub[256], epriv[256], epub[256], err[256];
    keypair(dir, "rsa", rpriv, rpub);
    keypair(dir, "ec", epriv, epub);

    lm_token_key rs, es, rs_verify, wrong;
    assert_int_equal(lm_token_key_pem(&rs, LM_TOKEN_RS256, rpriv, rpub, err, sizeof err), 0);
    assert_int_equal(lm_token_key_pem(&es, LM_TOKEN_ES256, epriv, epub, err, sizeof err), 0);
    assert_int_equal(lm_token_key_pem(&rs_verify, LM_TOKEN_RS256, NULL, rpub, err, sizeof err), 0);
    assert_int_equal(lm_token_key_pem(&wrong, LM_TOKEN_RS256, rpriv, epub, err, sizeof err), -1);
    assert_non_null(strstr(err, "key pair"));

    lm_token_claims c = claims(300), out;
    char *t = lm_token_mint(&rs, &c);
    assert_int_equal(lm_token_verify(&rs_verify, t, "gateway", "charges_api", &out), LM_TOKEN_OK);
    assert_null(lm_token_mint(&rs_verify, &c)); /* verify-only key cannot sign */
    assert_int_equal(lm_token_verify(&es, t, "gateway", "charges_api", &out), LM_TOKEN_MALFORMED);
    free(t);
    t = lm_token_mint(&es, &c);
    assert_int_equal(lm_token_verify(&es, t, "gateway", "charges_api", &out), LM_TOKEN_OK);
    free(t);

    /* confusion: an HS256 token whose secret is the RSA public key PEM */
    lm_token_key hs_pub;
    assert_int_equal(
        lm_token_key_secret(&hs_pub, rs_verify.verify_key, rs_verify.verify_len, err, sizeof err),
        0);
    t = lm_token_mint(&hs_pub, &c);
    assert_int_equal(lm_token_verify(&rs_verify, t, "gateway", "charges_api", &out),
                     LM_TOKEN_MALFORMED);
    free(t);
    lm_token_key_free(&hs_pub);
    lm_token_key_free(&rs);
    lm_token_key_free(&es);
    lm_token_key_free(&rs_verify);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hs256),
        cmocka_unit_test(test_key_pairs_and_confusion),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
