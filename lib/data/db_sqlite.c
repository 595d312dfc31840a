/* db_sqlite.c — the SQLite backend of lm_db (db_backend.h): WAL, synchronous=FULL, foreign
 * keys; readers open read-only; every connection has casefold(text). The only file that
 * calls sqlite3_*. */
#include "casefold.h"
#include "db_backend.h"
#include "log.h"

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define STMT_CACHE 128

typedef struct sq_st {
    lm_db_st base;
    sqlite3_stmt *s;
    const char *sql;
    bool running; /* stepped since the last reset */
} sq_st;

typedef struct sq_conn {
    lm_db_conn base;
    sqlite3 *h;
    sq_st *cache[STMT_CACHE];
    size_t n_cache;
    char err[256];      /* the last failure's message */
    bool storage_error; /* a statement failed with SQLITE_FULL/SQLITE_IOERR */
} sq_conn;

static sq_conn *SQ(lm_db_conn *c)
{
    return (sq_conn *)c;
}
static sq_st *ST(lm_db_st *st)
{
    return (sq_st *)st;
}

static void sql_casefold(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    (void)argc;
    if (sqlite3_value_type(argv[0]) == SQLITE_NULL) {
        sqlite3_result_null(ctx);
        return;
    }
    const char *s = (const char *)sqlite3_value_text(argv[0]);
    int n = sqlite3_value_bytes(argv[0]);
    if (!s) {
        sqlite3_result_error_nomem(ctx);
        return;
    }
    lm_buf out = LM_BUF_INIT;
    lm_casefold(s, (size_t)n, &out);
    size_t len;
    char *folded = lm_buf_steal(&out, &len);
    sqlite3_result_text(ctx, folded ? folded : "", (int)len, folded ? free : SQLITE_STATIC);
}

static void sq_disconnect(lm_db_conn *c)
{
    sq_conn *q = SQ(c);
    for (size_t i = 0; i < q->n_cache; i++) {
        sqlite3_finalize(q->cache[i]->s);
        free(q->cache[i]);
    }
    if (c->db && !sqlite3_db_readonly(q->h, "main"))
        sqlite3_exec(q->h, "PRAGMA wal_checkpoint(TRUNCATE)", NULL, NULL, NULL);
    sqlite3_close(q->h);
    free(q);
}

static lm_db_conn *sq_connect(const char *url, const lm_db_opts *o, bool writer, char *err,
                              size_t errlen)
{
    (void)o;
    const char *path = url + 7; /* "sqlite:" */
    if (strncmp(path, "//", 2) == 0) path += 2;
    sq_conn *q = lm_xcalloc(1, sizeof *q);
    q->base.be = &lm_db_sqlite_backend;
    int flags = writer ? SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE : SQLITE_OPEN_READONLY;
    flags |= SQLITE_OPEN_NOMUTEX;
    int rc = sqlite3_open_v2(path, &q->h, flags, NULL);
    if (rc != SQLITE_OK) {
        snprintf(err, errlen, "cannot open database %s: %s", path,
                 q->h ? sqlite3_errmsg(q->h) : sqlite3_errstr(rc));
        sqlite3_close(q->h);
        free(q);
        return NULL;
    }
    sqlite3_busy_timeout(q->h, 5000);
    sqlite3_extended_result_codes(q->h, 1);
    /* SQL casefold(text): Unicode-aware case-insensitive search */
    sqlite3_create_function_v2(q->h, "casefold", 1,
                               SQLITE_UTF8 | SQLITE_DETERMINISTIC | SQLITE_INNOCUOUS, NULL,
                               sql_casefold, NULL, NULL, NULL);
    const char *pragmas = writer ? "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;"
                                   "PRAGMA foreign_keys=ON;"
                                 : "PRAGMA foreign_keys=ON; PRAGMA query_only=1;";
    char *msg = NULL;
    if (sqlite3_exec(q->h, pragmas, NULL, NULL, &msg) != SQLITE_OK) {
        snprintf(err, errlen, "cannot configure database %s: %s", path, msg ? msg : "?");
        sqlite3_free(msg);
        sqlite3_close(q->h);
        free(q);
        return NULL;
    }
    return &q->base;
}

static bool exec(sq_conn *q, const char *sql)
{
    char *msg = NULL;
    if (sqlite3_exec(q->h, sql, NULL, NULL, &msg) == SQLITE_OK) return true;
    snprintf(q->err, sizeof q->err, "%s", msg ? msg : sqlite3_errmsg(q->h));
    sqlite3_free(msg);
    return false;
}

static lm_db_st *sq_stmt(lm_db_conn *c, const char *sql)
{
    sq_conn *q = SQ(c);
    for (size_t i = 0; i < q->n_cache; i++) {
        sq_st *st = q->cache[i];
        if (st->sql == sql) {
            sqlite3_reset(st->s);
            sqlite3_clear_bindings(st->s);
            st->running = false;
            return &st->base;
        }
    }
    sqlite3_stmt *s = NULL;
    if (sqlite3_prepare_v3(q->h, sql, -1, SQLITE_PREPARE_PERSISTENT, &s, NULL) != SQLITE_OK) {
        snprintf(q->err, sizeof q->err, "%s", sqlite3_errmsg(q->h));
        return NULL;
    }
    sq_st *st = lm_xcalloc(1, sizeof *st);
    st->base.be = &lm_db_sqlite_backend;
    st->base.conn = c;
    st->s = s;
    st->sql = sql;
    if (q->n_cache < STMT_CACHE) {
        q->cache[q->n_cache++] = st;
    } else {
        /* cache full: a programming error (too many distinct statements); keep working */
        lm_log_warn("statement cache full; finalize on reuse");
        sqlite3_finalize(q->cache[0]->s);
        free(q->cache[0]);
        q->cache[0] = st;
    }
    return &st->base;
}

static bool sq_tx(lm_db_conn *c, lm_db_tx what)
{
    static const char *const sql[] = {
        [LM_DB_TX_BEGIN_WRITE] = "BEGIN IMMEDIATE",
        [LM_DB_TX_BEGIN_READ] = "BEGIN",
        [LM_DB_TX_COMMIT] = "COMMIT",
        [LM_DB_TX_ROLLBACK] = "ROLLBACK",
        [LM_DB_TX_SAVEPOINT] = "SAVEPOINT job",
        [LM_DB_TX_ROLLBACK_TO] = "ROLLBACK TO job",
        [LM_DB_TX_RELEASE] = "RELEASE job",
        [LM_DB_TX_COMMIT_NOTIFY] = "COMMIT",
    };
    sq_conn *q = SQ(c);
    lm_db_st *st = sq_stmt(c, sql[what]); /* prepared once, not parsed per job */
    if (!st) return exec(q, sql[what]);
    int rc = sqlite3_step(ST(st)->s);
    sqlite3_reset(ST(st)->s);
    if (rc == SQLITE_DONE || rc == SQLITE_ROW) return true;
    snprintf(q->err, sizeof q->err, "%s", sqlite3_errmsg(q->h));
    return false;
}

static bool sq_in_txn(lm_db_conn *c)
{
    return !sqlite3_get_autocommit(SQ(c)->h);
}

static bool sq_broken(lm_db_conn *c)
{
    (void)c;
    return false; /* a file does not go away; failures are per commit */
}

static bool sq_take_storage_error(lm_db_conn *c)
{
    bool e = SQ(c)->storage_error;
    SQ(c)->storage_error = false;
    return e;
}

static int sq_probe(lm_db_conn *c)
{
    /* a write that needs space in the WAL, and leaves nothing behind */
    sq_conn *q = SQ(c);
    if (exec(q, "BEGIN IMMEDIATE; CREATE TABLE lm_probe(x); DROP TABLE lm_probe; COMMIT")) return 0;
    if (sq_in_txn(c)) sqlite3_exec(q->h, "ROLLBACK", NULL, NULL, NULL);
    return LM_DB_EIO;
}

static int sq_migrate(lm_db_conn *c, const lm_db_migrations *mig, char *err, size_t errlen)
{
    sq_conn *q = SQ(c);
    const char *const *m = mig->sqlite;
    size_t n = mig->n_sqlite;
    if (!exec(q, "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY,"
                 " applied_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')))")) {
        snprintf(err, errlen, "cannot create schema_migrations: %s", q->err);
        return -1;
    }
    sqlite3_stmt *st;
    sqlite3_prepare_v2(q->h, "SELECT coalesce(max(version),0) FROM schema_migrations", -1, &st,
                       NULL);
    long long have = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
    sqlite3_finalize(st);
    if ((size_t)have > n) {
        snprintf(err, errlen, "database schema version %lld is newer than this build (%zu)", have,
                 n);
        return -1;
    }
    for (size_t v = (size_t)have + 1; v <= n; v++) {
        char ins[96];
        snprintf(ins, sizeof ins, "INSERT INTO schema_migrations(version) VALUES (%zu)", v);
        if (!exec(q, "BEGIN IMMEDIATE") || !exec(q, m[v - 1]) || !exec(q, ins) ||
            !exec(q, "COMMIT")) {
            snprintf(err, errlen, "migration %zu failed: %s", v, q->err);
            sqlite3_exec(q->h, "ROLLBACK", NULL, NULL, NULL);
            return -1;
        }
        lm_log_info("database: applied migration %zu", v);
    }
    return 0;
}

static void sq_bind_int(lm_db_st *st, int idx, long long v)
{
    sqlite3_bind_int64(ST(st)->s, idx, v);
}
static void sq_bind_double(lm_db_st *st, int idx, double v)
{
    sqlite3_bind_double(ST(st)->s, idx, v);
}
static void sq_bind_text(lm_db_st *st, int idx, const char *s, size_t len)
{
    sqlite3_bind_text(ST(st)->s, idx, s, (int)len, SQLITE_TRANSIENT);
}
static void sq_bind_null(lm_db_st *st, int idx)
{
    sqlite3_bind_null(ST(st)->s, idx);
}
static int sq_param_index(lm_db_st *st, const char *name)
{
    return sqlite3_bind_parameter_index(ST(st)->s, name);
}

static int sq_step(lm_db_st *st)
{
    sq_st *s = ST(st);
    if (!s->running) {
        s->running = true;
        lm_db_count_statement(st->conn);
    }
    int rc = sqlite3_step(s->s);
    switch (rc) {
    case SQLITE_ROW:
        return LM_DB_ROW;
    case SQLITE_DONE:
        return LM_DB_DONE;
    case SQLITE_CONSTRAINT_UNIQUE:
    case SQLITE_CONSTRAINT_PRIMARYKEY:
        return LM_DB_E_UNIQUE;
    case SQLITE_CONSTRAINT_FOREIGNKEY:
        return LM_DB_E_FK;
    default:
        snprintf(SQ(st->conn)->err, sizeof SQ(st->conn)->err, "%s",
                 sqlite3_errmsg(SQ(st->conn)->h));
        if ((rc & 0xff) == SQLITE_FULL || (rc & 0xff) == SQLITE_IOERR)
            SQ(st->conn)->storage_error = true;
        return (rc & 0xff) == SQLITE_CONSTRAINT ? LM_DB_E_CONSTRAINT : LM_DB_EIO;
    }
}
static void sq_reset(lm_db_st *st)
{
    sqlite3_reset(ST(st)->s);
    ST(st)->running = false;
}
static int sq_col_type(lm_db_st *st, int i)
{
    switch (sqlite3_column_type(ST(st)->s, i)) {
    case SQLITE_INTEGER:
        return LM_DB_INT;
    case SQLITE_FLOAT:
        return LM_DB_REAL;
    case SQLITE_NULL:
        return LM_DB_NULL;
    default:
        return LM_DB_TEXT;
    }
}
static long long sq_col_int(lm_db_st *st, int i)
{
    return sqlite3_column_int64(ST(st)->s, i);
}
static double sq_col_double(lm_db_st *st, int i)
{
    return sqlite3_column_double(ST(st)->s, i);
}
static const char *sq_col_text(lm_db_st *st, int i)
{
    return (const char *)sqlite3_column_text(ST(st)->s, i);
}
static size_t sq_col_bytes(lm_db_st *st, int i)
{
    return (size_t)sqlite3_column_bytes(ST(st)->s, i);
}
static const char *sq_errmsg(lm_db_conn *c)
{
    sq_conn *q = SQ(c);
    return q->err[0] ? q->err : sqlite3_errmsg(q->h);
}

const lm_db_backend lm_db_sqlite_backend = {
    .name = "sqlite",
    .connect = sq_connect,
    .disconnect = sq_disconnect,
    .migrate = sq_migrate,
    .tx = sq_tx,
    .in_txn = sq_in_txn,
    .broken = sq_broken,
    .probe = sq_probe,
    .take_storage_error = sq_take_storage_error,
    .stmt = sq_stmt,
    .bind_int = sq_bind_int,
    .bind_double = sq_bind_double,
    .bind_text = sq_bind_text,
    .bind_null = sq_bind_null,
    .param_index = sq_param_index,
    .step = sq_step,
    .reset = sq_reset,
    .col_type = sq_col_type,
    .col_int = sq_col_int,
    .col_double = sq_col_double,
    .col_text = sq_col_text,
    .col_bytes = sq_col_bytes,
    .errmsg = sq_errmsg,
};
