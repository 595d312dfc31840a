/* db.c — SQLite executor: writer thread with group commit, per-thread read connections.
 * See db.h for the why. */
#include "db.h"

#include "buf.h"
#include "casefold.h"
#include "log.h"

#include <assert.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define STMT_CACHE  128
#define MAX_BATCH   512
#define MAX_READERS 64

struct lm_db_conn {
    sqlite3 *h;
    struct {
        const char *sql;
        sqlite3_stmt *st;
    } cache[STMT_CACHE];
    size_t n_cache;
};

typedef struct job {
    lm_db_port *port;
    lm_db_fn fn;
    lm_db_done done;
    void *arg;
    int rc;
    struct job *next;
} job;

struct lm_db_port {
    lm_db *db;
    uv_loop_t *loop;
    uv_async_t async;
    uv_mutex_t lock;
    job *done_head, *done_tail; /* completed jobs waiting for the loop */
};

typedef struct read_req {
    uv_work_t work;
    job j;
} read_req;

struct lm_db {
    unsigned long long id; /* unique per open: keys the pool threads' reader slots */
    char *path;
    lm_db_conn writer;
    uv_thread_t writer_thread;
    uv_mutex_t lock;
    uv_cond_t cond;
    job *queue_head, *queue_tail;
    bool stopping;
    bool writer_running;
    uv_mutex_t readers_lock;
    lm_db_conn *readers[MAX_READERS];
    size_t n_readers;
    atomic_ullong commits, write_jobs, reads, failed_commits, largest_batch;
};

static atomic_ullong next_db_id = 1;
static _Thread_local struct {
    unsigned long long db_id; /* 0: free; never reused, so a closed db never matches */
    lm_db_conn *conn;
} tls_reader[4];
static _Thread_local unsigned tls_victim;

/* ---- connections --------------------------------------------------------------------- */

static int open_conn(const char *path, bool readonly, lm_db_conn *c, char *err, size_t errlen)
{
    memset(c, 0, sizeof *c);
    int flags = readonly ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE;
    flags |= SQLITE_OPEN_NOMUTEX;
    int rc = sqlite3_open_v2(path, &c->h, flags, NULL);
    if (rc != SQLITE_OK) {
        snprintf(err, errlen, "cannot open database %s: %s", path,
                 c->h ? sqlite3_errmsg(c->h) : sqlite3_errstr(rc));
        sqlite3_close(c->h);
        c->h = NULL;
        return -1;
    }
    sqlite3_busy_timeout(c->h, 5000);
    sqlite3_extended_result_codes(c->h, 1);
    lm_casefold_register(c->h); /* SQL casefold(text): Unicode-aware case-insensitive search */
    const char *pragmas = readonly ? "PRAGMA foreign_keys=ON; PRAGMA query_only=1;"
                                   : "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;"
                                     "PRAGMA foreign_keys=ON;";
    char *msg = NULL;
    if (sqlite3_exec(c->h, pragmas, NULL, NULL, &msg) != SQLITE_OK) {
        snprintf(err, errlen, "cannot configure database %s: %s", path, msg ? msg : "?");
        sqlite3_free(msg);
        sqlite3_close(c->h);
        c->h = NULL;
        return -1;
    }
    return 0;
}

static void close_conn(lm_db_conn *c)
{
    for (size_t i = 0; i < c->n_cache; i++)
        sqlite3_finalize(c->cache[i].st);
    c->n_cache = 0;
    sqlite3_close(c->h);
    c->h = NULL;
}

sqlite3_stmt *lm_db_stmt(lm_db_conn *c, const char *sql)
{
    for (size_t i = 0; i < c->n_cache; i++) {
        if (c->cache[i].sql == sql) {
            sqlite3_stmt *st = c->cache[i].st;
            sqlite3_reset(st);
            sqlite3_clear_bindings(st);
            return st;
        }
    }
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v3(c->h, sql, -1, SQLITE_PREPARE_PERSISTENT, &st, NULL) != SQLITE_OK)
        return NULL;
    if (c->n_cache < STMT_CACHE) {
        c->cache[c->n_cache].sql = sql;
        c->cache[c->n_cache].st = st;
        c->n_cache++;
    } else {
        /* cache full: a programming error (too many distinct statements); keep working */
        lm_log_warn("statement cache full; finalize on reuse");
        sqlite3_finalize(c->cache[0].st);
        c->cache[0].sql = sql;
        c->cache[0].st = st;
    }
    return st;
}

sqlite3 *lm_db_handle(lm_db_conn *c)
{
    return c->h;
}
const char *lm_db_errmsg(lm_db_conn *c)
{
    return sqlite3_errmsg(c->h);
}

static bool exec(lm_db_conn *c, const char *sql)
{
    char *msg = NULL;
    if (sqlite3_exec(c->h, sql, NULL, NULL, &msg) == SQLITE_OK) return true;
    lm_log_error("database: %s failed: %s", sql, msg ? msg : sqlite3_errmsg(c->h));
    sqlite3_free(msg);
    return false;
}

/* One step of a cached statement: the writer's transaction control, prepared once instead of
 * parsed by sqlite3_exec for every job. sql must be a static array (cached by address). */
static bool step(lm_db_conn *c, const char *sql)
{
    sqlite3_stmt *st = lm_db_stmt(c, sql);
    if (!st) return exec(c, sql); /* logs why */
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    if (rc == SQLITE_DONE || rc == SQLITE_ROW) return true;
    lm_log_error("database: %s failed: %s", sql, sqlite3_errmsg(c->h));
    return false;
}

static const char SQL_BEGIN[] = "BEGIN IMMEDIATE", SQL_COMMIT[] = "COMMIT",
                  SQL_ROLLBACK[] = "ROLLBACK", SQL_SAVEPOINT[] = "SAVEPOINT job",
                  SQL_ROLLBACK_TO[] = "ROLLBACK TO job", SQL_RELEASE[] = "RELEASE job";

static const char SQL_BEGIN_READ[] = "BEGIN";

int lm_db_snapshot(lm_db_conn *c, lm_db_fn fn, void *arg)
{
    if (!step(c, SQL_BEGIN_READ)) return LM_DB_EIO;
    int rc = fn(c, arg);
    if (!step(c, SQL_COMMIT)) {
        step(c, SQL_ROLLBACK);
        return LM_DB_EIO;
    }
    return rc;
}

const char *lm_db_sql_variant(lm_db_sql_variants *v, unsigned mask)
{
    assert(v->n_conds <= LM_DB_VARIANT_CONDS && mask < (1u << v->n_conds));
    const char *sql = atomic_load(&v->built[mask]);
    if (sql) return sql;
    lm_buf b = LM_BUF_INIT;
    lm_buf_append_str(&b, v->head);
    const char *sep = " WHERE ";
    for (int i = 0; i < v->n_conds; i++) {
        if (!(mask & (1u << i))) continue;
        lm_buf_append_str(&b, sep);
        lm_buf_append_str(&b, v->conds[i]);
        sep = " AND ";
    }
    lm_buf_append_str(&b, v->tail);
    char *mine = lm_buf_steal(&b, NULL);
    char *expected = NULL;
    if (atomic_compare_exchange_strong(&v->built[mask], &expected, mine)) return mine;
    free(mine); /* another thread built it first: use that one (its address is cached) */
    return expected;
}

/* ---- migrations ---------------------------------------------------------------------- */

static int migrate(lm_db_conn *c, const char *const *m, size_t n, char *err, size_t errlen)
{
    if (!exec(c, "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY,"
                 " applied_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')))")) {
        snprintf(err, errlen, "cannot create schema_migrations: %s", sqlite3_errmsg(c->h));
        return -1;
    }
    sqlite3_stmt *st;
    sqlite3_prepare_v2(c->h, "SELECT coalesce(max(version),0) FROM schema_migrations", -1, &st,
                       NULL);
    long long have = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
    sqlite3_finalize(st);
    if ((size_t)have > n) {
        snprintf(err, errlen, "database schema version %lld is newer than this build (%zu)", have,
                 n);
        return -1;
    }
    for (size_t v = (size_t)have + 1; v <= n; v++) {
        char *msg = NULL;
        char ins[96];
        snprintf(ins, sizeof ins, "INSERT INTO schema_migrations(version) VALUES (%zu)", v);
        if (sqlite3_exec(c->h, "BEGIN IMMEDIATE", NULL, NULL, &msg) != SQLITE_OK ||
            sqlite3_exec(c->h, m[v - 1], NULL, NULL, &msg) != SQLITE_OK ||
            sqlite3_exec(c->h, ins, NULL, NULL, &msg) != SQLITE_OK ||
            sqlite3_exec(c->h, "COMMIT", NULL, NULL, &msg) != SQLITE_OK) {
            snprintf(err, errlen, "migration %zu failed: %s", v, msg ? msg : "?");
            sqlite3_free(msg);
            sqlite3_exec(c->h, "ROLLBACK", NULL, NULL, NULL);
            return -1;
        }
        lm_log_info("database: applied migration %zu", v);
    }
    return 0;
}

/* ---- completions back on the loop ------------------------------------------------------ */

static void post_done(job *j)
{
    lm_db_port *p = j->port;
    j->next = NULL;
    uv_mutex_lock(&p->lock);
    if (p->done_tail)
        p->done_tail->next = j;
    else
        p->done_head = j;
    p->done_tail = j;
    uv_mutex_unlock(&p->lock);
    uv_async_send(&p->async);
}

static void on_port_async(uv_async_t *a)
{
    lm_db_port *p = a->data;
    uv_mutex_lock(&p->lock);
    job *j = p->done_head;
    p->done_head = p->done_tail = NULL;
    uv_mutex_unlock(&p->lock);
    while (j) {
        job *next = j->next;
        lm_db_done done = j->done;
        void *arg = j->arg;
        int rc = j->rc;
        free(j);
        done(rc, arg);
        j = next;
    }
}

lm_db_port *lm_db_attach(lm_db *db, uv_loop_t *loop)
{
    lm_db_port *p = lm_xcalloc(1, sizeof *p);
    p->db = db;
    p->loop = loop;
    uv_mutex_init(&p->lock);
    uv_async_init(loop, &p->async, on_port_async);
    p->async.data = p;
    return p;
}

static void on_port_closed(uv_handle_t *h)
{
    lm_db_port *p = h->data;
    on_port_async(&p->async); /* anything that arrived late */
    uv_mutex_destroy(&p->lock);
    free(p);
}

void lm_db_detach(lm_db_port *p)
{
    uv_close((uv_handle_t *)&p->async, on_port_closed);
}

/* ---- writer ---------------------------------------------------------------------------- */

static void writer_main(void *arg)
{
    lm_db *db = arg;
    for (;;) {
        uv_mutex_lock(&db->lock);
        while (!db->queue_head && !db->stopping)
            uv_cond_wait(&db->cond, &db->lock);
        if (!db->queue_head && db->stopping) {
            uv_mutex_unlock(&db->lock);
            return;
        }
        job *batch = db->queue_head, *last = batch;
        size_t n = 1;
        while (last->next && n < MAX_BATCH) {
            last = last->next;
            n++;
        }
        db->queue_head = last->next;
        if (!db->queue_head) db->queue_tail = NULL;
        last->next = NULL;
        uv_mutex_unlock(&db->lock);

        bool ok = step(&db->writer, SQL_BEGIN);
        for (job *j = batch; j; j = j->next) {
            if (!ok) {
                j->rc = LM_DB_EIO;
                continue;
            }
            step(&db->writer, SQL_SAVEPOINT);
            j->rc = j->fn(&db->writer, j->arg);
            if (j->rc != 0) step(&db->writer, SQL_ROLLBACK_TO);
            step(&db->writer, SQL_RELEASE);
        }
        if (ok && !step(&db->writer, SQL_COMMIT)) {
            step(&db->writer, SQL_ROLLBACK);
            for (job *j = batch; j; j = j->next)
                j->rc = LM_DB_EIO;
            atomic_fetch_add(&db->failed_commits, 1);
        }
        atomic_fetch_add(&db->commits, 1);
        atomic_fetch_add(&db->write_jobs, n);
        if (n > atomic_load(&db->largest_batch)) atomic_store(&db->largest_batch, n);
        job *next;
        for (job *j = batch; j; j = next) {
            next = j->next;
            post_done(j);
        }
    }
}

lm_db *lm_db_open(const char *path, const char *const *migrations, size_t n, char *err,
                  size_t errlen)
{
    lm_db *db = lm_xcalloc(1, sizeof *db);
    db->id = atomic_fetch_add(&next_db_id, 1);
    db->path = lm_xstrdup(path);
    if (open_conn(path, false, &db->writer, err, errlen) != 0 ||
        migrate(&db->writer, migrations, n, err, errlen) != 0) {
        if (db->writer.h) close_conn(&db->writer);
        free(db->path);
        free(db);
        return NULL;
    }
    uv_mutex_init(&db->lock);
    uv_cond_init(&db->cond);
    uv_mutex_init(&db->readers_lock);
    uv_thread_create(&db->writer_thread, writer_main, db);
    db->writer_running = true;
    return db;
}

void lm_db_close(lm_db *db)
{
    if (!db) return;
    if (db->writer_running) {
        uv_mutex_lock(&db->lock);
        db->stopping = true;
        uv_cond_signal(&db->cond);
        uv_mutex_unlock(&db->lock);
        uv_thread_join(&db->writer_thread);
    }
    uv_mutex_lock(&db->readers_lock);
    for (size_t i = 0; i < db->n_readers; i++) {
        close_conn(db->readers[i]);
        free(db->readers[i]);
    }
    uv_mutex_unlock(&db->readers_lock);
    exec(&db->writer, "PRAGMA wal_checkpoint(TRUNCATE)");
    close_conn(&db->writer);
    uv_mutex_destroy(&db->lock);
    uv_cond_destroy(&db->cond);
    uv_mutex_destroy(&db->readers_lock);
    free(db->path);
    free(db);
}

void lm_db_write(lm_db_port *port, lm_db_fn fn, lm_db_done done, void *arg)
{
    lm_db *db = port->db;
    job *j = lm_xcalloc(1, sizeof *j);
    *j = (job){.port = port, .fn = fn, .done = done, .arg = arg};
    uv_mutex_lock(&db->lock);
    if (db->queue_tail)
        db->queue_tail->next = j;
    else
        db->queue_head = j;
    db->queue_tail = j;
    uv_cond_signal(&db->cond);
    uv_mutex_unlock(&db->lock);
}

int lm_db_exec_sync(lm_db *db, lm_db_fn fn, void *arg)
{
    /* start-up only: the writer thread is idle, but take the queue lock to be sure no batch
     * runs concurrently on the same connection */
    uv_mutex_lock(&db->lock);
    int rc = exec(&db->writer, "BEGIN IMMEDIATE") ? fn(&db->writer, arg) : LM_DB_EIO;
    if (rc == 0 && !exec(&db->writer, "COMMIT")) rc = LM_DB_EIO;
    if (rc != 0) exec(&db->writer, "ROLLBACK");
    uv_mutex_unlock(&db->lock);
    return rc;
}

/* ---- readers ------------------------------------------------------------------------- */

static lm_db_conn *reader_for(lm_db *db)
{
    for (size_t i = 0; i < 4; i++)
        if (tls_reader[i].db_id == db->id) return tls_reader[i].conn;
    lm_db_conn *c = lm_xcalloc(1, sizeof *c);
    char err[256];
    if (open_conn(db->path, true, c, err, sizeof err) != 0) {
        lm_log_error("database: %s", err);
        free(c);
        return NULL;
    }
    uv_mutex_lock(&db->readers_lock);
    if (db->n_readers < MAX_READERS) db->readers[db->n_readers++] = c;
    uv_mutex_unlock(&db->readers_lock);
    /* the connection stays owned by db (closed in lm_db_close); the slot only finds it */
    size_t slot = tls_victim++ % 4;
    for (size_t i = 0; i < 4; i++)
        if (tls_reader[i].db_id == 0) slot = i;
    tls_reader[slot].db_id = db->id;
    tls_reader[slot].conn = c;
    return c;
}

static void read_work(uv_work_t *w)
{
    read_req *r = w->data;
    lm_db_conn *c = reader_for(r->j.port->db);
    r->j.rc = c ? r->j.fn(c, r->j.arg) : LM_DB_EIO;
    atomic_fetch_add(&r->j.port->db->reads, 1);
}

static void read_after(uv_work_t *w, int status)
{
    read_req *r = w->data;
    int rc = status == 0 ? r->j.rc : LM_DB_EIO;
    lm_db_done done = r->j.done;
    void *arg = r->j.arg;
    free(r);
    done(rc, arg);
}

void lm_db_read(lm_db_port *port, lm_db_fn fn, lm_db_done done, void *arg)
{
    read_req *r = lm_xcalloc(1, sizeof *r);
    r->j = (job){.port = port, .fn = fn, .done = done, .arg = arg};
    r->work.data = r;
    uv_queue_work(port->loop, &r->work, read_work, read_after);
}

void lm_db_get_stats(lm_db *db, lm_db_stats *out)
{
    out->commits = atomic_load(&db->commits);
    out->write_jobs = atomic_load(&db->write_jobs);
    out->reads = atomic_load(&db->reads);
    out->failed_commits = atomic_load(&db->failed_commits);
    out->largest_batch = atomic_load(&db->largest_batch);
}
