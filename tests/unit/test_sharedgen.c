/* test_sharedgen.c — the cross-process write counter: two handles on one file stand for two
 * processes (each keeps its own view); a process's own writes never flush its cache, another's
 * always do, once; with the cache, entries read before a flush are void. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "cache.h"
#include "sharedgen.h"

#include <stdio.h>
#include <stdlib.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

static int flushes[2];

static void flush(void *ctx)
{
    flushes[*(int *)ctx]++;
}

static void test_own_writes_do_not_flush_foreign_ones_do(void **state)
{
    (void)state;
    char path[] = "/tmp/lm-sharedgen-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    char err[256];
    static int ia = 0, ib = 1;
    lm_sharedgen *a = lm_sharedgen_open(path, flush, &ia, err, sizeof err);
    lm_sharedgen *b = lm_sharedgen_open(path, flush, &ib, err, sizeof err);
    assert_non_null(a);
    assert_non_null(b);
    memset(flushes, 0, sizeof flushes);
    assert_false(lm_sharedgen_sync(a));
    lm_sharedgen_bump(a);
    lm_sharedgen_bump(a);
    assert_false(lm_sharedgen_sync(a)); /* its own */
    assert_int_equal(flushes[0], 0);
    assert_true(lm_sharedgen_sync(b)); /* a's, seen by b once */
    assert_false(lm_sharedgen_sync(b));
    assert_int_equal(flushes[1], 1);
    lm_sharedgen_bump(b);
    lm_sharedgen_bump(a); /* a's bump notices b's write */
    assert_int_equal(flushes[0], 1);
    assert_false(lm_sharedgen_sync(a));
    assert_true(lm_sharedgen_sync(b));
    lm_sharedgen_close(a);
    lm_sharedgen_close(b);
    /* the count survives: a new handle starts from it, not from zero */
    lm_sharedgen *c = lm_sharedgen_open(path, flush, &ia, err, sizeof err);
    assert_false(lm_sharedgen_sync(c));
    lm_sharedgen_close(c);
    unlink(path);
}

static void test_era_is_shared_and_a_new_file_starts_another(void **state)
{
    (void)state;
    char path[] = "/tmp/lm-sharedgen-XXXXXX";
    int fd = mkstemp(path); /* empty: created now, as on a first start */
    assert_true(fd >= 0);
    close(fd);
    char err[256];
    static int ia = 0, ib = 1;
    lm_sharedgen *a = lm_sharedgen_open(path, flush, &ia, err, sizeof err);
    lm_sharedgen *b = lm_sharedgen_open(path, flush, &ib, err, sizeof err);
    uint64_t e0 = lm_sharedgen_era(a);
    assert_true(e0 == lm_sharedgen_era(b));
    lm_sharedgen_bump(a); /* writes do not move it */
    assert_true(lm_sharedgen_era(b) == e0);
    /* the fenced era: a new file has nothing to fence; recorded by one, seen by the other */
    assert_true(lm_sharedgen_fenced(a) == e0);
    lm_sharedgen_set_fenced(a, e0 + 7);
    assert_true(lm_sharedgen_fenced(b) == e0 + 7);
    lm_sharedgen_set_fenced(a, e0);
    assert_true(lm_sharedgen_fenced(b) == e0);
    lm_sharedgen_bump_era(b);
    assert_true(lm_sharedgen_era(a) == e0 + 1);
    assert_true(lm_sharedgen_fenced(a) != lm_sharedgen_era(a)); /* a new starter fences */
    lm_sharedgen_close(a);
    lm_sharedgen_close(b);
    unlink(path);
    /* the file lost and made again: an era no entry of the old one carries */
    fd = open(path, O_RDWR | O_CREAT | O_EXCL, 0600);
    assert_true(fd >= 0);
    close(fd);
    lm_sharedgen *c = lm_sharedgen_open(path, flush, &ia, err, sizeof err);
    assert_true(lm_sharedgen_era(c) != e0 + 1 && lm_sharedgen_era(c) != e0);
    lm_sharedgen_close(c);
    unlink(path);
}

static void test_open_errors_are_one_line(void **state)
{
    (void)state;
    char err[256];
    assert_null(lm_sharedgen_open("/nonexistent-dir/x-lmgen", flush, NULL, err, sizeof err));
    assert_non_null(strstr(err, "cannot open /nonexistent-dir/x-lmgen"));
    assert_null(strchr(err, '\n'));
}

static void test_cache_flush_voids_what_was_read_before(void **state)
{
    (void)state;
    lm_cache *c = lm_cache_new(1 << 20);
    uint64_t e0 = lm_cache_epoch(c);
    assert_true(lm_cache_put(c, "/a/1", 4, "one", 3, 1, -1, 0, e0));
    uint64_t e1 = lm_cache_epoch(c); /* a read starts */
    lm_cache_invalidate_all(c);
    assert_null(lm_cache_get(c, "/a/1", 4));                          /* read before: void */
    assert_false(lm_cache_put(c, "/a/1", 4, "one", 3, 1, -1, 0, e1)); /* in flight: refused */
    uint64_t e2 = lm_cache_epoch(c);
    assert_true(lm_cache_put(c, "/a/1", 4, "uno", 3, 2, -1, 0, e2));
    lm_cache_invalidate(c, "/b/9", 4); /* a local write elsewhere keeps it */
    const lm_cache_val *v = lm_cache_get(c, "/a/1", 4);
    assert_non_null(v);
    assert_int_equal(v->version, 2);
    lm_cache_release(v);
    lm_cache_stats st;
    lm_cache_get_stats(c, &st);
    assert_int_equal(st.flushes, 1);
    lm_cache_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_own_writes_do_not_flush_foreign_ones_do),
        cmocka_unit_test(test_era_is_shared_and_a_new_file_starts_another),
        cmocka_unit_test(test_open_errors_are_one_line),
        cmocka_unit_test(test_cache_flush_voids_what_was_read_before),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
