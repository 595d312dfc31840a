/* test_db.c — migrations, group commit, per-job rollback, reads after commit, reopen. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "db.h"

static const char *const migrations[] = {
    "CREATE TABLE item (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE)",
    "ALTER TABLE item ADD COLUMN qty REAL NOT NULL DEFAULT 0",
};

static char path[256];

static int setup(void **state)
{
    (void)state;
    snprintf(path, sizeof path, "/tmp/lm-test-db-%d.sqlite", getpid());
    unlink(path);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    char p[300];
    unlink(path);
    snprintf(p, sizeof p, "%s-wal", path);
    unlink(p);
    snprintf(p, sizeof p, "%s-shm", path);
    unlink(p);
    return 0;
}

typedef struct insert_job {
    char name[32];
    int rc_seen;
    int done;
} insert_job;

static int insert_fn(lm_db_conn *c, void *arg)
{
    insert_job *j = arg;
    sqlite3_stmt *st = lm_db_stmt(c, "INSERT INTO item(name, qty) VALUES (?, 1)");
    if (!st) return 99;
    sqlite3_bind_text(st, 1, j->name, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_CONSTRAINT_UNIQUE) return 409;
    return rc == SQLITE_DONE ? 0 : 500;
}

static int done_count;
static void insert_done(int rc, void *arg)
{
    insert_job *j = arg;
    j->rc_seen = rc;
    j->done = 1;
    done_count++;
}

typedef struct count_job {
    long long n;
} count_job;

static int count_fn(lm_db_conn *c, void *arg)
{
    count_job *j = arg;
    sqlite3_stmt *st = lm_db_stmt(c, "SELECT count(*) FROM item");
    if (sqlite3_step(st) != SQLITE_ROW) return 500;
    j->n = sqlite3_column_int64(st, 0);
    return 0;
}

static void count_done(int rc, void *arg)
{
    (void)arg;
    assert_int_equal(rc, 0);
    done_count++;
}

static void test_group_commit_and_rollback(void **state)
{
    (void)state;
    char err[256];
    lm_db *db = lm_db_open(path, migrations, 2, err, sizeof err);
    assert_non_null(db);
    uv_loop_t loop;
    uv_loop_init(&loop);
    lm_db_port *port = lm_db_attach(db, &loop);

    enum { N = 200 };
    static insert_job jobs[N];
    for (int i = 0; i < N; i++) {
        snprintf(jobs[i].name, sizeof jobs[i].name, "item-%d", i % 150); /* 50 duplicates */
        jobs[i].done = 0;
        lm_db_write(port, insert_fn, insert_done, &jobs[i]);
    }
    done_count = 0;
    while (done_count < N)
        uv_run(&loop, UV_RUN_ONCE);
    int ok = 0, conflicts = 0;
    for (int i = 0; i < N; i++) {
        if (jobs[i].rc_seen == 0)
            ok++;
        else if (jobs[i].rc_seen == 409)
            conflicts++;
    }
    assert_int_equal(ok, 150);
    assert_int_equal(conflicts, 50);

    lm_db_stats st;
    lm_db_get_stats(db, &st);
    assert_int_equal(st.write_jobs, N);
    assert_true(st.commits < N); /* batched: fewer commits than jobs */
    assert_true(st.largest_batch > 1);

    count_job cj = {0};
    done_count = 0;
    lm_db_read(port, count_fn, count_done, &cj);
    while (done_count < 1)
        uv_run(&loop, UV_RUN_ONCE);
    assert_int_equal(cj.n, 150);

    lm_db_detach(port);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
    lm_db_close(db);

    /* reopen: data and schema version survive; no migration runs twice */
    db = lm_db_open(path, migrations, 2, err, sizeof err);
    assert_non_null(db);
    assert_int_equal(lm_db_exec_sync(db, count_fn, &cj), 0);
    assert_int_equal(cj.n, 150);
    lm_db_close(db);

    /* a build that knows fewer migrations than the file refuses to run */
    db = lm_db_open(path, migrations, 1, err, sizeof err);
    assert_null(db);
    assert_non_null(strstr(err, "newer than this build"));
}

static void test_bad_migration(void **state)
{
    (void)state;
    static const char *const bad[] = {"CREATE TABLE a (x)", "CREATE TABLE oops ("};
    char err[256];
    lm_db *db = lm_db_open(path, bad, 2, err, sizeof err);
    assert_null(db);
    assert_non_null(strstr(err, "migration 2 failed"));
    /* migration 1 committed; 2 did not */
    static const char *const good[] = {"CREATE TABLE a (x)", "CREATE TABLE b (y)"};
    db = lm_db_open(path, good, 2, err, sizeof err);
    assert_non_null(db);
    lm_db_close(db);
}

static void test_unwritable_path(void **state)
{
    (void)state;
    char err[256];
    lm_db *db = lm_db_open("/nonexistent-dir/x.db", migrations, 2, err, sizeof err);
    assert_null(db);
    assert_non_null(strstr(err, "cannot open database"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_group_commit_and_rollback, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_migration, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unwritable_path, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
