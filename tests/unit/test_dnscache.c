/* test_dnscache.c — the client's host-name cache (lib/dnscache.c): hits within the TTL,
 * expiry, negative entries, forgetting, the size bound and its eviction order, a disabled
 * cache, case-insensitive names, ports cleared. Time is passed in, so no clock is needed. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "dnscache.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

static struct sockaddr_in v4(const char *ip, int port)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    assert_int_equal(inet_pton(AF_INET, ip, &a.sin_addr), 1);
    return a;
}

static const char *ip_of(const struct sockaddr_storage *ss, char *buf, size_t len)
{
    const void *src = ss->ss_family == AF_INET
                          ? (const void *)&((const struct sockaddr_in *)ss)->sin_addr
                          : (const void *)&((const struct sockaddr_in6 *)ss)->sin6_addr;
    return inet_ntop(ss->ss_family, src, buf, (socklen_t)len);
}

static void test_hit_until_ttl(void **state)
{
    (void)state;
    lm_dnscache *dc = lm_dnscache_new(8, 30000, 1000);
    struct sockaddr_storage out;
    char ip[64];
    assert_int_equal(lm_dnscache_get(dc, "articles", 0, &out), LM_DNS_MISS);
    struct sockaddr_in a = v4("10.0.0.7", 8002);
    lm_dnscache_put(dc, "articles", (struct sockaddr *)&a, 1000);
    assert_int_equal(lm_dnscache_get(dc, "ARTICLES", 1000, &out), LM_DNS_HIT);
    assert_string_equal(ip_of(&out, ip, sizeof ip), "10.0.0.7");
    assert_int_equal(((struct sockaddr_in *)&out)->sin_port, 0); /* the caller's port */
    assert_int_equal(lm_dnscache_get(dc, "articles", 30999, &out), LM_DNS_HIT);
    assert_int_equal(lm_dnscache_get(dc, "articles", 31000, &out), LM_DNS_MISS);
    assert_int_equal(lm_dnscache_size(dc), 0); /* the expired entry was dropped */
    /* a new resolution replaces the old one */
    lm_dnscache_put(dc, "articles", (struct sockaddr *)&a, 40000);
    struct sockaddr_in6 b = {.sin6_family = AF_INET6, .sin6_port = htons(1)};
    inet_pton(AF_INET6, "fd00::1", &b.sin6_addr);
    lm_dnscache_put(dc, "articles", (struct sockaddr *)&b, 41000);
    assert_int_equal(lm_dnscache_size(dc), 1);
    assert_int_equal(lm_dnscache_get(dc, "articles", 70500, &out), LM_DNS_HIT);
    assert_string_equal(ip_of(&out, ip, sizeof ip), "fd00::1");
    assert_int_equal(((struct sockaddr_in6 *)&out)->sin6_port, 0);
    /* a failed connect forgets it */
    lm_dnscache_forget(dc, "articles");
    assert_int_equal(lm_dnscache_get(dc, "articles", 41001, &out), LM_DNS_MISS);
    lm_dnscache_forget(dc, "never-there");
    lm_dnscache_free(dc);
}

static void test_negative_entries(void **state)
{
    (void)state;
    lm_dnscache *dc = lm_dnscache_new(8, 30000, 1000);
    struct sockaddr_storage out;
    lm_dnscache_put_negative(dc, "nope.invalid", 5000);
    assert_int_equal(lm_dnscache_get(dc, "nope.invalid", 5999, &out), LM_DNS_NEGATIVE);
    assert_int_equal(lm_dnscache_get(dc, "nope.invalid", 6000, &out), LM_DNS_MISS);
    /* a positive answer replaces a negative one */
    lm_dnscache_put_negative(dc, "late", 7000);
    struct sockaddr_in a = v4("10.0.0.9", 80);
    lm_dnscache_put(dc, "late", (struct sockaddr *)&a, 7100);
    assert_int_equal(lm_dnscache_get(dc, "late", 7200, &out), LM_DNS_HIT);
    lm_dnscache_free(dc);
    /* neg_ttl 0: negative answers are not kept */
    dc = lm_dnscache_new(8, 30000, 0);
    lm_dnscache_put_negative(dc, "nope.invalid", 0);
    assert_int_equal(lm_dnscache_size(dc), 0);
    lm_dnscache_free(dc);
}

static void test_bounded_eviction(void **state)
{
    (void)state;
    lm_dnscache *dc = lm_dnscache_new(4, 1000, 100);
    struct sockaddr_storage out;
    struct sockaddr_in a = v4("10.0.0.1", 0);
    char name[32];
    for (int i = 0; i < 4; i++) {
        snprintf(name, sizeof name, "h%d", i);
        lm_dnscache_put(dc, name, (struct sockaddr *)&a, (uint64_t)i * 10); /* h0 oldest */
    }
    assert_int_equal(lm_dnscache_size(dc), 4);
    /* full, none expired: the one expiring soonest (h0) makes room */
    lm_dnscache_put(dc, "h4", (struct sockaddr *)&a, 50);
    assert_int_equal(lm_dnscache_size(dc), 4);
    assert_int_equal(lm_dnscache_get(dc, "h0", 60, &out), LM_DNS_MISS);
    for (int i = 1; i <= 4; i++) {
        snprintf(name, sizeof name, "h%d", i);
        assert_int_equal(lm_dnscache_get(dc, name, 60, &out), LM_DNS_HIT);
    }
    /* negative entries take a slot like any other; an expired one makes room first */
    lm_dnscache_put_negative(dc, "gone", 60); /* full: h1 (expires 1010) makes room */
    assert_int_equal(lm_dnscache_get(dc, "h1", 70, &out), LM_DNS_MISS);
    lm_dnscache_put(dc, "h5", (struct sockaddr *)&a, 500); /* "gone" expired at 160 */
    assert_int_equal(lm_dnscache_get(dc, "gone", 150, &out), LM_DNS_MISS);
    assert_int_equal(lm_dnscache_get(dc, "h2", 500, &out), LM_DNS_HIT);
    assert_int_equal(lm_dnscache_get(dc, "h5", 500, &out), LM_DNS_HIT);
    assert_true(lm_dnscache_size(dc) <= 4);
    lm_dnscache_free(dc);
}

static void test_disabled(void **state)
{
    (void)state;
    lm_dnscache *dc = lm_dnscache_new(8, 0, 1000);
    struct sockaddr_storage out;
    struct sockaddr_in a = v4("10.0.0.1", 0);
    lm_dnscache_put(dc, "x", (struct sockaddr *)&a, 0);
    lm_dnscache_put_negative(dc, "y", 0);
    assert_int_equal(lm_dnscache_size(dc), 0);
    assert_int_equal(lm_dnscache_get(dc, "x", 0, &out), LM_DNS_MISS);
    lm_dnscache_free(dc);
    /* NULL is a disabled cache too (the client keeps none when the TTL is 0) */
    assert_int_equal(lm_dnscache_get(NULL, "x", 0, &out), LM_DNS_MISS);
    lm_dnscache_put(NULL, "x", (struct sockaddr *)&a, 0);
    lm_dnscache_put_negative(NULL, "x", 0);
    lm_dnscache_forget(NULL, "x");
    assert_int_equal(lm_dnscache_size(NULL), 0);
    lm_dnscache_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hit_until_ttl),
        cmocka_unit_test(test_negative_entries),
        cmocka_unit_test(test_bounded_eviction),
        cmocka_unit_test(test_disabled),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
