/* test_cache.c — the response cache: hits, replacement, invalidation, the epoch rule against
 * racing reads, list entries dropped by any write, byte bounds and LRU order, references that
 * outlive eviction, and many threads at once (for the sanitizers). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "cache.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define K(s) (s), strlen(s)

static bool put(lm_cache *c, const char *key, const char *body, long long version, unsigned flags)
{
    return lm_cache_put(c, K(key), K(body), version, -1, flags, lm_cache_epoch(c));
}

static void expect(lm_cache *c, const char *key, const char *body, long long version)
{
    const lm_cache_val *v = lm_cache_get(c, K(key));
    assert_non_null(v);
    assert_int_equal(v->len, strlen(body));
    assert_memory_equal(v->body, body, v->len);
    assert_int_equal(v->body[v->len], '\0');
    assert_int_equal(v->version, version);
    lm_cache_release(v);
}

static void test_get_put_replace(void **state)
{
    (void)state;
    lm_cache *c = lm_cache_new(1 << 20);
    assert_null(lm_cache_get(c, K("/a/1")));
    assert_true(put(c, "/a/1", "{\"v\":1}", 1, 0));
    expect(c, "/a/1", "{\"v\":1}", 1);
    assert_true(put(c, "/a/1", "{\"v\":22}", 2, 0)); /* replaces */
    expect(c, "/a/1", "{\"v\":22}", 2);
    assert_null(lm_cache_get(c, K("/a/10"))); /* no prefix matches */
    assert_true(
        lm_cache_put(c, K("/list?x"), K("[]"), 0, 7, LM_CACHE_ANY_WRITE, lm_cache_epoch(c)));
    const lm_cache_val *v = lm_cache_get(c, K("/list?x"));
    assert_non_null(v);
    assert_int_equal(v->total, 7);
    lm_cache_release(v);
    lm_cache_stats st;
    lm_cache_get_stats(c, &st);
    assert_int_equal(st.entries, 2);
    assert_int_equal(st.hits, 3);
    assert_int_equal(st.misses, 2);
    assert_int_equal(st.puts, 3);
    lm_cache_free(c);
}

static void test_invalidate_drops_the_key_and_every_list(void **state)
{
    (void)state;
    lm_cache *c = lm_cache_new(1 << 20);
    put(c, "/a/1", "one", 1, 0);
    put(c, "/a/2", "two", 1, 0);
    put(c, "/list?", "[one,two]", 0, LM_CACHE_ANY_WRITE);
    lm_cache_invalidate(c, K("/a/1"));
    assert_null(lm_cache_get(c, K("/a/1")));
    expect(c, "/a/2", "two", 1);               /* another item stays */
    assert_null(lm_cache_get(c, K("/list?"))); /* every list goes */
    put(c, "/list?", "[two]", 0, LM_CACHE_ANY_WRITE);
    lm_cache_invalidate(c, NULL, 0); /* a write with no item key (a create) */
    assert_null(lm_cache_get(c, K("/list?")));
    expect(c, "/a/2", "two", 1);
    lm_cache_free(c);
}

/* The race the epoch rule exists for: a read takes its snapshot, a write commits and
 * invalidates, then the read tries to store the row it read before the commit. */
static void test_a_read_that_raced_a_write_is_not_stored(void **state)
{
    (void)state;
    lm_cache *c = lm_cache_new(1 << 20);
    uint64_t e0 = lm_cache_epoch(c);                                  /* read starts */
    lm_cache_invalidate(c, K("/a/1"));                                /* write commits meanwhile */
    assert_false(lm_cache_put(c, K("/a/1"), K("old"), 1, -1, 0, e0)); /* read ends */
    assert_null(lm_cache_get(c, K("/a/1")));
    /* a write to another key also refuses it: the rule is conservative, never stale */
    e0 = lm_cache_epoch(c);
    lm_cache_invalidate(c, K("/a/2"));
    assert_false(lm_cache_put(c, K("/a/1"), K("maybe"), 1, -1, 0, e0));
    /* a read that started after the last write is stored */
    e0 = lm_cache_epoch(c);
    assert_true(lm_cache_put(c, K("/a/1"), K("new"), 2, -1, 0, e0));
    expect(c, "/a/1", "new", 2);
    lm_cache_stats st;
    lm_cache_get_stats(c, &st);
    assert_int_equal(st.stale_puts, 2);
    assert_int_equal(st.invalidations, 2);
    lm_cache_free(c);
}

static void test_bounded_lru_and_references_outlive_eviction(void **state)
{
    (void)state;
    /* 16 shards of 4 KiB: ~300-byte entries, at most ~13 per shard */
    lm_cache *c = lm_cache_new(64 * 1024);
    char body[200];
    memset(body, 'x', sizeof body - 1);
    body[sizeof body - 1] = '\0';
    assert_true(put(c, "/keep", body, 1, 0));
    const lm_cache_val *held = lm_cache_get(c, K("/keep"));
    assert_non_null(held);
    char key[32];
    for (int i = 0; i < 2000; i++) {
        snprintf(key, sizeof key, "/a/%d", i);
        put(c, key, body, i + 1, 0);
    }
    lm_cache_stats st;
    lm_cache_get_stats(c, &st);
    assert_true(st.bytes <= 64 * 1024);
    assert_true(st.evictions > 0);
    assert_true(st.entries < 2000);
    assert_null(lm_cache_get(c, K("/a/0")));          /* the oldest went first */
    expect(c, "/a/1999", body, 2000);                 /* the newest stays */
    assert_memory_equal(held->body, body, held->len); /* still readable after eviction */
    lm_cache_release(held);
    /* an entry larger than a shard's share is not stored */
    static char big[8192];
    memset(big, 'y', sizeof big - 1);
    assert_false(put(c, "/big", big, 1, 0));
    assert_null(lm_cache_get(c, K("/big")));
    lm_cache_free(c);
}

static void test_recently_used_survive(void **state)
{
    (void)state;
    lm_cache *c = lm_cache_new(16 * 4096); /* shards of 4 KiB */
    char body[300];
    memset(body, 'z', sizeof body - 1);
    body[sizeof body - 1] = '\0';
    put(c, "/hot", body, 1, 0);
    char key[32];
    for (int i = 0; i < 3000; i++) {
        expect(c, "/hot", body, 1); /* used all the time: never the least recent */
        snprintf(key, sizeof key, "/cold/%d", i);
        put(c, key, body, 1, 0);
    }
    expect(c, "/hot", body, 1);
    lm_cache_free(c);
}

/* ---- many threads -------------------------------------------------------------------- */

typedef struct {
    lm_cache *c;
    int seed;
} worker_arg;

static void *hammer(void *p)
{
    worker_arg *a = p;
    char key[32], body[64];
    unsigned x = (unsigned)a->seed * 2654435761u + 1;
    for (int i = 0; i < 20000; i++) {
        x = x * 1103515245u + 12345u;
        int k = (int)(x >> 16) % 200;
        snprintf(key, sizeof key, "/a/%d", k);
        switch ((x >> 8) % 8) {
        case 0:
            lm_cache_invalidate(a->c, key, strlen(key));
            break;
        case 1:
        case 2: {
            uint64_t e = lm_cache_epoch(a->c);
            int n = snprintf(body, sizeof body, "{\"k\":%d,\"i\":%d}", k, i);
            lm_cache_put(a->c, key, strlen(key), body, (size_t)n, i + 1, -1,
                         k % 5 == 0 ? LM_CACHE_ANY_WRITE : 0, e);
            break;
        }
        default: {
            const lm_cache_val *v = lm_cache_get(a->c, key, strlen(key));
            if (v) {
                /* a value is whole and belongs to its key */
                char want[16];
                int n = snprintf(want, sizeof want, "{\"k\":%d,", k);
                if (v->len < (size_t)n || memcmp(v->body, want, (size_t)n) != 0) abort();
                lm_cache_release(v);
            }
        }
        }
    }
    return NULL;
}

static void test_threads(void **state)
{
    (void)state;
    lm_cache *c = lm_cache_new(32 * 1024); /* small: eviction runs all the time too */
    pthread_t t[4];
    worker_arg args[4];
    for (int i = 0; i < 4; i++) {
        args[i] = (worker_arg){.c = c, .seed = i};
        assert_int_equal(pthread_create(&t[i], NULL, hammer, &args[i]), 0);
    }
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    lm_cache_stats st;
    lm_cache_get_stats(c, &st);
    assert_true(st.bytes <= 32 * 1024);
    assert_true(st.hits > 0 && st.puts > 0);
    lm_cache_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_get_put_replace),
        cmocka_unit_test(test_invalidate_drops_the_key_and_every_list),
        cmocka_unit_test(test_a_read_that_raced_a_write_is_not_stored),
        cmocka_unit_test(test_bounded_lru_and_references_outlive_eviction),
        cmocka_unit_test(test_recently_used_survive),
        cmocka_unit_test(test_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
