/* test_db.c — the SQLite backend through the neutral interface: migrations, group commit,
 * per-job rollback, reads after commit, reopen, casefold(), types, named parameters.
 * (The PostgreSQL backend is tested against a real server by the black-box suite.) */
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

static const char *const migration_sql[] = {
    "CREATE TABLE item (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE)",
    "ALTER TABLE item ADD COLUMN qty REAL NOT NULL DEFAULT 0",
};
static const lm_db_migrations migrations = {.sqlite = migration_sql, .n_sqlite = 2};
static const lm_db_migrations migrations1 = {.sqlite = migration_sql, .n_sqlite = 1};
static const lm_db_opts opts = {.pool_size = 2};

static char path[256], url[300];

static int setup(void **state)
{
    (void)state;
    snprintf(path, sizeof path, "/tmp/lm-test-db-%d.sqlite", getpid());
    snprintf(url, sizeof url, "sqlite:%s", path);
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
    lm_db_st *st = lm_db_stmt(c, "INSERT INTO item(name, qty) VALUES (?, 1)");
    if (!st) return 99;
    lm_db_bind_text(st, 1, j->name, -1);
    int rc = lm_db_step(st);
    if (rc == LM_DB_E_UNIQUE) return 409;
    return rc == LM_DB_DONE ? 0 : 500;
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
    lm_db_st *st = lm_db_stmt(c, "SELECT count(*) FROM item");
    if (lm_db_step(st) != LM_DB_ROW) return 500;
    j->n = lm_db_col_int(st, 0);
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
    lm_db *db = lm_db_open(url, &migrations, &opts, err, sizeof err);
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
    db = lm_db_open(url, &migrations, &opts, err, sizeof err);
    assert_non_null(db);
    assert_int_equal(lm_db_exec_sync(db, count_fn, &cj), 0);
    assert_int_equal(cj.n, 150);
    lm_db_close(db);

    /* a build that knows fewer migrations than the file refuses to run */
    db = lm_db_open(url, &migrations1, &opts, err, sizeof err);
    assert_null(db);
    assert_non_null(strstr(err, "newer than this build"));
}

static void test_bad_migration(void **state)
{
    (void)state;
    static const char *const bad_sql[] = {"CREATE TABLE a (x)", "CREATE TABLE oops ("};
    static const lm_db_migrations bad = {.sqlite = bad_sql, .n_sqlite = 2};
    char err[256];
    lm_db *db = lm_db_open(url, &bad, &opts, err, sizeof err);
    assert_null(db);
    assert_non_null(strstr(err, "migration 2 failed"));
    /* migration 1 committed; 2 did not */
    static const char *const good_sql[] = {"CREATE TABLE a (x)", "CREATE TABLE b (y)"};
    static const lm_db_migrations good = {.sqlite = good_sql, .n_sqlite = 2};
    db = lm_db_open(url, &good, &opts, err, sizeof err);
    assert_non_null(db);
    lm_db_close(db);
}

static void test_unwritable_path(void **state)
{
    (void)state;
    char err[256];
    lm_db *db = lm_db_open("sqlite:/nonexistent-dir/x.db", &migrations, &opts, err, sizeof err);
    assert_null(db);
    assert_non_null(strstr(err, "cannot open database"));
    db = lm_db_open("mysql://x", &migrations, &opts, err, sizeof err);
    assert_null(db);
    assert_non_null(strstr(err, "unknown database URL scheme"));
}

static int sql_fn(lm_db_conn *c, void *arg)
{
    (void)arg;
    lm_db_st *st = lm_db_stmt(c, "SELECT casefold('ÄPFEL'), casefold(NULL),"
                                 " instr(casefold('Äpfel aus Übersee'), casefold(:q)), 2.5, :q");
    assert_non_null(st);
    assert_int_equal(lm_db_param_index(st, ":q"), 1);
    assert_int_equal(lm_db_param_index(st, ":absent"), 0);
    lm_db_bind_text(st, lm_db_param_index(st, ":q"), "ÜBER", -1);
    lm_db_bind_text(st, lm_db_param_index(st, ":absent"), "ignored", -1);
    assert_int_equal(lm_db_step(st), LM_DB_ROW);
    assert_string_equal(lm_db_col_text(st, 0), "äpfel");
    assert_int_equal(lm_db_col_type(st, 1), LM_DB_NULL);
    assert_int_equal(lm_db_col_type(st, 2), LM_DB_INT);
    assert_int_equal(lm_db_col_int(st, 2), 11);
    assert_int_equal(lm_db_col_type(st, 3), LM_DB_REAL);
    assert_true(lm_db_col_double(st, 3) == 2.5);
    assert_int_equal(lm_db_col_type(st, 4), LM_DB_TEXT);
    assert_int_equal(lm_db_col_bytes(st, 4), strlen("ÜBER"));
    assert_int_equal(lm_db_step(st), LM_DB_DONE);
    lm_db_reset(st);
    /* RETURNING and a constraint violation's class */
    st = lm_db_stmt(c, "INSERT INTO item(name) VALUES (?) RETURNING id, name");
    lm_db_bind_text(st, 1, "x", -1);
    assert_int_equal(lm_db_step(st), LM_DB_ROW);
    assert_true(lm_db_col_int(st, 0) > 0);
    lm_db_reset(st);
    assert_int_equal(lm_db_step(st), LM_DB_E_UNIQUE);
    return 0;
}

static void test_sql_dialect(void **state)
{
    (void)state;
    char err[256];
    lm_db *db = lm_db_open(url, &migrations, &opts, err, sizeof err);
    assert_non_null(db);
    assert_string_equal(lm_db_backend_name(db), "sqlite");
    assert_int_equal(lm_db_exec_sync(db, sql_fn, NULL), 0);
    lm_buf why = LM_BUF_INIT;
    assert_true(lm_db_health(db, &why));
    lm_buf_free(&why);
    lm_db_close(db);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_group_commit_and_rollback, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_migration, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unwritable_path, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sql_dialect, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
