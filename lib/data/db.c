/* db.c — the executor both backends share: writer thread with group commit, a bounded pool of
 * read connections, completions posted back to the loops, health and reconnection. See db.h
 * for the why; the backends are db_sqlite.c and db_pg.c (db_backend.h). */
#include "db.h"

#include "db_backend.h"
#include "log.h"

#include <assert.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_BATCH      512
#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 2000

typedef struct job {
    lm_db_port *port;
    lm_db_fn fn;
    lm_db_fn then;   /* a pipelined job's middle step (reads what fn sent, sends), or NULL */
    lm_db_fn finish; /* a pipelined job's last step (fn sends), else NULL */
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
    const lm_db_backend *be;
    char *url;
    lm_db_opts opts;
    /* writer (its thread only, after open) */
    lm_db_conn *writer; /* NULL while the database is unreachable */
    uv_thread_t writer_thread;
    uint64_t next_attempt_ms; /* reconnect/probe not before */
    int backoff_ms;
    /* write queue */
    uv_mutex_t lock;
    uv_cond_t cond;
    job *queue_head, *queue_tail;
    bool stopping;
    bool writer_running;
    /* read pool */
    uv_mutex_t pool_lock;
    uv_cond_t pool_cond;
    lm_db_conn **pool_free;
    int n_free, n_open;
    atomic_ullong generation; /* bumped when the writer reconnected: older readers are stale */
    /* health */
    atomic_bool up;        /* reachable */
    atomic_bool commit_ok; /* the last commit or probe succeeded */
    uv_mutex_t health_lock;
    char why[256];
    atomic_ullong commits, write_jobs, reads, failed_commits, largest_batch, reconnects, statements,
        write_statements, round_trips, write_round_trips, pipelined, pipeline_fallbacks;
    char instance[17]; /* this process among the database's writers (NOTIFY payload) */
    void *watch;       /* the backend's listener (lm_db_watch), or NULL */
};

static uint64_t now_ms(void)
{
    return uv_hrtime() / 1000000;
}

const char *lm_db_instance(const lm_db *db)
{
    return db->instance;
}

const char *lm_db_conn_instance(const lm_db_conn *c)
{
    return c->db ? c->db->instance : "";
}

bool lm_db_watch(lm_db *db, lm_db_changed fn, void *ctx)
{
    if (!db->be->watch_start || db->watch) return false;
    db->watch = db->be->watch_start(db, db->url, &db->opts, fn, ctx);
    return db->watch != NULL;
}

int lm_db_notify(lm_db_conn *c, const char *note)
{
    if (!c->be->notify) return 0;
    return c->be->notify(c, note) ? 0 : LM_DB_EIO;
}

void lm_db_count_statement(lm_db_conn *c)
{
    if (!c->db) return;
    atomic_fetch_add_explicit(&c->db->statements, 1, memory_order_relaxed);
    if (c->writer) atomic_fetch_add_explicit(&c->db->write_statements, 1, memory_order_relaxed);
}

void lm_db_count_round_trip(lm_db_conn *c)
{
    if (!c->db) return;
    atomic_fetch_add_explicit(&c->db->round_trips, 1, memory_order_relaxed);
    if (c->writer) atomic_fetch_add_explicit(&c->db->write_round_trips, 1, memory_order_relaxed);
}

static void set_why(lm_db *db, const char *what, const char *msg)
{
    uv_mutex_lock(&db->health_lock);
    snprintf(db->why, sizeof db->why, "%s: %s", what, msg && *msg ? msg : "?");
    uv_mutex_unlock(&db->health_lock);
}

/* Marks the database unreachable (once: one log line per outage) and wakes the writer, which
 * reconnects. */
static void mark_down(lm_db *db, const char *msg)
{
    if (atomic_exchange(&db->up, false)) {
        set_why(db, "unreachable", msg);
        lm_log_error("database: unreachable: %s", msg && *msg ? msg : "?");
        uv_mutex_lock(&db->lock);
        uv_cond_signal(&db->cond);
        uv_mutex_unlock(&db->lock);
    }
}

bool lm_db_health(lm_db *db, lm_buf *why)
{
    bool ok = atomic_load(&db->up) && atomic_load(&db->commit_ok);
    if (!ok && why) {
        uv_mutex_lock(&db->health_lock);
        lm_buf_append_str(why, db->why);
        uv_mutex_unlock(&db->health_lock);
    }
    return ok;
}

const char *lm_db_backend_name(const lm_db *db)
{
    return db->be->name;
}

const char *lm_db_conn_backend_name(const lm_db_conn *conn)
{
    return conn->be->name;
}

/* ---- statements: dispatch -------------------------------------------------------------- */

lm_db_st *lm_db_stmt(lm_db_conn *c, const char *sql)
{
    return c->be->stmt(c, sql);
}
void lm_db_bind_int(lm_db_st *st, int idx, long long v)
{
    if (idx > 0) st->be->bind_int(st, idx, v);
}
void lm_db_bind_double(lm_db_st *st, int idx, double v)
{
    if (idx > 0) st->be->bind_double(st, idx, v);
}
void lm_db_bind_text(lm_db_st *st, int idx, const char *s, long len)
{
    if (idx > 0) st->be->bind_text(st, idx, s, len < 0 ? strlen(s) : (size_t)len);
}
void lm_db_bind_null(lm_db_st *st, int idx)
{
    if (idx > 0) st->be->bind_null(st, idx);
}
int lm_db_param_index(lm_db_st *st, const char *name)
{
    return st->be->param_index(st, name);
}
int lm_db_step(lm_db_st *st)
{
    return st->be->step(st);
}
int lm_db_send(lm_db_st *st)
{
    if (st->be->send) return st->be->send(st);
    int rc = st->be->step(st);
    st->be->reset(st);
    return rc == LM_DB_DONE || rc == LM_DB_ROW ? 0 : rc;
}
int lm_db_send_rows(lm_db_st *st)
{
    return st->be->send_rows ? st->be->send_rows(st) : 0;
}
int lm_db_lock(lm_db_conn *c, long long key)
{
    return c->be->lock ? c->be->lock(c, key) : 0;
}
void lm_db_reset(lm_db_st *st)
{
    st->be->reset(st);
}
int lm_db_col_type(lm_db_st *st, int i)
{
    return st->be->col_type(st, i);
}
long long lm_db_col_int(lm_db_st *st, int i)
{
    return st->be->col_int(st, i);
}
double lm_db_col_double(lm_db_st *st, int i)
{
    return st->be->col_double(st, i);
}
const char *lm_db_col_text(lm_db_st *st, int i)
{
    return st->be->col_text(st, i);
}
size_t lm_db_col_bytes(lm_db_st *st, int i)
{
    return st->be->col_bytes(st, i);
}
const char *lm_db_errmsg(lm_db_conn *c)
{
    return c->be->errmsg(c);
}

int lm_db_snapshot(lm_db_conn *c, lm_db_fn fn, void *arg)
{
    if (!c->be->tx(c, LM_DB_TX_BEGIN_READ)) return LM_DB_EIO;
    int rc = fn(c, arg);
    if (!c->be->tx(c, LM_DB_TX_COMMIT)) {
        if (c->be->in_txn(c)) c->be->tx(c, LM_DB_TX_ROLLBACK);
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

static lm_db_conn *connect_conn(lm_db *db, bool writer, char *err, size_t errlen)
{
    lm_db_conn *c = db->be->connect(db->url, &db->opts, writer, err, errlen);
    if (c) {
        c->db = db;
        c->writer = writer;
        c->generation = atomic_load(&db->generation);
    }
    return c;
}

static void backoff(lm_db *db)
{
    db->backoff_ms = db->backoff_ms ? db->backoff_ms * 2 : BACKOFF_MIN_MS;
    if (db->backoff_ms > BACKOFF_MAX_MS) db->backoff_ms = BACKOFF_MAX_MS;
    db->next_attempt_ms = now_ms() + (uint64_t)db->backoff_ms;
}

/* On the writer thread: brings a lost connection back or proves commits work again, at most
 * once per backoff interval. */
static void recover(lm_db *db)
{
    if (db->writer && db->be->broken(db->writer)) {
        mark_down(db, db->be->errmsg(db->writer));
        db->be->disconnect(db->writer);
        db->writer = NULL;
    }
    bool healthy = db->writer && atomic_load(&db->up) && atomic_load(&db->commit_ok);
    if (healthy || now_ms() < db->next_attempt_ms) return;
    if (!db->writer) {
        char err[256];
        atomic_fetch_add(&db->generation, 1);
        db->writer = connect_conn(db, true, err, sizeof err);
        if (!db->writer) {
            mark_down(db, err);
            backoff(db);
            return;
        }
        atomic_fetch_add(&db->reconnects, 1);
    }
    /* connected (again), or a reader saw the connection break, or commits failed: probe */
    if (db->be->probe(db->writer) != 0) {
        const char *msg = db->be->errmsg(db->writer);
        if (db->be->broken(db->writer)) {
            mark_down(db, msg);
            db->be->disconnect(db->writer);
            db->writer = NULL;
        } else if (atomic_exchange(&db->commit_ok, false)) {
            set_why(db, "cannot commit", msg);
        }
        backoff(db);
        return;
    }
    db->backoff_ms = 0;
    db->next_attempt_ms = 0;
    if (!atomic_exchange(&db->up, true)) lm_log_info("database: reachable again");
    if (!atomic_exchange(&db->commit_ok, true)) lm_log_info("database: commits succeed again");
}

static bool tx(lm_db_conn *c, lm_db_tx what)
{
    return c->be->tx(c, what);
}

/* The pipelined jobs of a batch (those with a finish step), their send steps first, then
 * one wait for every answer (and again for the middle steps of those that have one), then
 * their finish steps, all in the write transaction it begins
 * (no savepoints: nothing is expected to fail). true when every one of them succeeded and
 * the transaction goes on; false when it was rolled back (or the connection broke), with
 * nothing of them written and the connection out of its transaction. */
static bool run_pipelined(lm_db *db, job *batch)
{
    lm_db_conn *w = db->writer;
    const lm_db_backend *be = db->be;
    if (!be->fast_begin(w)) {
        if (!be->broken(w) && be->in_txn(w)) tx(w, LM_DB_TX_ROLLBACK);
        return false;
    }
    bool ok = true, then = false;
    for (job *j = batch; j && ok; j = j->next)
        if (j->finish) {
            ok = j->fn(w, j->arg) == 0;
            then |= j->then != NULL;
        }
    ok = be->fast_collect(w) == 0 && ok;           /* always: reads what was sent */
    if (ok && then && (ok = be->fast_resume(w))) { /* the middle steps: a second round */
        for (job *j = batch; j && ok; j = j->next)
            if (j->finish && j->then) ok = j->then(w, j->arg) == 0;
        ok = be->fast_collect(w) == 0 && ok;
    }
    size_t n = 0;
    for (job *j = batch; j && ok; j = j->next)
        if (j->finish) {
            ok = (j->rc = j->finish(w, j->arg)) == 0;
            n++;
        }
    if (ok) {
        atomic_fetch_add(&db->pipelined, n);
        return true;
    }
    atomic_fetch_add(&db->pipeline_fallbacks, 1);
    if (!be->broken(w)) tx(w, LM_DB_TX_ROLLBACK);
    be->fast_discard(w);
    return false;
}

static void run_batch(lm_db *db, job *batch, size_t n)
{
    lm_db_conn *w = db->writer;
    size_t n_pipelined = 0;
    for (job *j = batch; j; j = j->next)
        n_pipelined += j->finish != NULL;
    /* the pipelined jobs together when there are several; the others (and all of them when
     * that failed) one by one, each in its own SAVEPOINT */
    bool piped = w && atomic_load(&db->up) && db->be->fast_begin && n_pipelined > 1 &&
                 run_pipelined(db, batch);
    bool ok = piped || (w && atomic_load(&db->up) && tx(w, LM_DB_TX_BEGIN_WRITE));
    for (job *j = batch; j; j = j->next) {
        if (piped && j->finish) continue;
        if (!ok || !tx(w, LM_DB_TX_SAVEPOINT)) {
            ok = false;
            j->rc = LM_DB_EIO;
            continue;
        }
        j->rc = j->fn(w, j->arg);
        if (j->rc == 0 && j->then) j->rc = j->then(w, j->arg);
        if (j->rc == 0 && j->finish) j->rc = j->finish(w, j->arg);
        if (j->rc != 0) {
            ok = tx(w, LM_DB_TX_ROLLBACK_TO) && tx(w, LM_DB_TX_RELEASE);
        } else if (!tx(w, LM_DB_TX_RELEASE)) {
            /* a statement failed and the job did not say so: undo it, fail it */
            j->rc = LM_DB_EIO;
            ok = tx(w, LM_DB_TX_ROLLBACK_TO) && tx(w, LM_DB_TX_RELEASE);
        }
    }
    bool wrote = false;
    for (job *j = batch; j; j = j->next)
        wrote |= j->rc == 0;
    bool committed =
        w && ok && tx(w, wrote && db->watch ? LM_DB_TX_COMMIT_NOTIFY : LM_DB_TX_COMMIT);
    /* a job's statement that failed for want of storage (disk full) while the rest
     * committed: the database cannot take writes, whatever the empty commit said */
    bool storage = w && db->be->take_storage_error && db->be->take_storage_error(w);
    if (committed && storage) {
        const char *msg = db->be->errmsg(w);
        lm_log_error("database: a write failed: %s", msg);
        set_why(db, "cannot write", msg);
        atomic_store(&db->commit_ok, false);
        if (!db->next_attempt_ms) backoff(db);
    } else if (committed) {
        if (!atomic_load(&db->commit_ok)) {
            atomic_store(&db->commit_ok, true);
            lm_log_info("database: commits succeed again");
        }
    } else if (w) {
        /* one line per failed commit; the backend already ended a transaction it could not
         * commit (SQLite after SQLITE_FULL), so roll back only one still open */
        const char *msg = db->be->errmsg(w);
        if (db->be->broken(w)) {
            mark_down(db, msg);
        } else {
            lm_log_error("database: commit of %zu write jobs failed: %s", n, msg);
            set_why(db, "cannot commit", msg);
            atomic_store(&db->commit_ok, false);
            if (!db->next_attempt_ms) backoff(db);
            if (db->be->in_txn(w)) tx(w, LM_DB_TX_ROLLBACK);
        }
        for (job *j = batch; j; j = j->next)
            j->rc = LM_DB_EIO;
        atomic_fetch_add(&db->failed_commits, 1);
    } else {
        for (job *j = batch; j; j = j->next)
            j->rc = LM_DB_EIO;
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

static void writer_main(void *arg)
{
    lm_db *db = arg;
    for (;;) {
        uv_mutex_lock(&db->lock);
        while (!db->queue_head && !db->stopping) {
            bool healthy = db->writer && atomic_load(&db->up) && atomic_load(&db->commit_ok);
            if (healthy) {
                uv_cond_wait(&db->cond, &db->lock);
                continue;
            }
            uint64_t now = now_ms(), wait = 0;
            if (db->next_attempt_ms > now) wait = db->next_attempt_ms - now;
            if (wait == 0 || uv_cond_timedwait(&db->cond, &db->lock, wait * 1000000) != 0)
                break; /* time to try again */
        }
        if (!db->queue_head && db->stopping) {
            uv_mutex_unlock(&db->lock);
            return;
        }
        job *batch = db->queue_head, *last = batch;
        size_t n = batch ? 1 : 0;
        while (last && last->next && n < MAX_BATCH) {
            last = last->next;
            n++;
        }
        if (last) {
            db->queue_head = last->next;
            if (!db->queue_head) db->queue_tail = NULL;
            last->next = NULL;
        }
        uv_mutex_unlock(&db->lock);
        recover(db);
        if (batch) run_batch(db, batch, n);
    }
}

lm_db *lm_db_open(const char *url, const lm_db_migrations *m, const lm_db_opts *opts, char *err,
                  size_t errlen)
{
    lm_db *db = lm_xcalloc(1, sizeof *db);
    if (strncmp(url, "sqlite:", 7) == 0) {
        db->be = &lm_db_sqlite_backend;
    } else if (strncmp(url, "postgresql://", 13) == 0 || strncmp(url, "postgres://", 11) == 0 ||
               strchr(url, '=')) {
        db->be = &lm_db_pg_backend;
    } else {
        snprintf(err, errlen, "unknown database URL scheme (sqlite:PATH or postgresql://…)");
        free(db);
        return NULL;
    }
    db->url = lm_xstrdup(url);
    db->opts = *opts;
    uint64_t r = uv_hrtime() ^ ((uint64_t)uv_os_getpid() << 32) ^ (uint64_t)(uintptr_t)db;
    snprintf(db->instance, sizeof db->instance, "%016llx",
             (unsigned long long)(r * 0x9E3779B97F4A7C15ULL));
    if (db->opts.pool_size < 1) db->opts.pool_size = 1;
    atomic_store(&db->up, true);
    atomic_store(&db->commit_ok, true);
    atomic_store(&db->generation, 1);
    uv_mutex_init(&db->health_lock);
    db->writer = connect_conn(db, true, err, errlen);
    if (!db->writer || db->be->migrate(db->writer, m, err, errlen) != 0) {
        if (db->writer) db->be->disconnect(db->writer);
        uv_mutex_destroy(&db->health_lock);
        free(db->url);
        free(db);
        return NULL;
    }
    db->pool_free = lm_xcalloc((size_t)db->opts.pool_size, sizeof *db->pool_free);
    uv_mutex_init(&db->lock);
    uv_cond_init(&db->cond);
    uv_mutex_init(&db->pool_lock);
    uv_cond_init(&db->pool_cond);
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
    if (db->watch) db->be->watch_stop(db->watch);
    uv_mutex_lock(&db->pool_lock);
    for (int i = 0; i < db->n_free; i++)
        db->be->disconnect(db->pool_free[i]);
    uv_mutex_unlock(&db->pool_lock);
    if (db->writer) db->be->disconnect(db->writer);
    uv_mutex_destroy(&db->lock);
    uv_cond_destroy(&db->cond);
    uv_mutex_destroy(&db->pool_lock);
    uv_cond_destroy(&db->pool_cond);
    uv_mutex_destroy(&db->health_lock);
    free(db->pool_free);
    free(db->url);
    free(db);
}

static void enqueue(lm_db_port *port, lm_db_fn fn, lm_db_fn then, lm_db_fn finish, lm_db_done done,
                    void *arg)
{
    lm_db *db = port->db;
    job *j = lm_xcalloc(1, sizeof *j);
    *j = (job){.port = port, .fn = fn, .then = then, .finish = finish, .done = done, .arg = arg};
    uv_mutex_lock(&db->lock);
    if (db->queue_tail)
        db->queue_tail->next = j;
    else
        db->queue_head = j;
    db->queue_tail = j;
    uv_cond_signal(&db->cond);
    uv_mutex_unlock(&db->lock);
}

void lm_db_write(lm_db_port *port, lm_db_fn fn, lm_db_done done, void *arg)
{
    enqueue(port, fn, NULL, NULL, done, arg);
}

void lm_db_write_pipelined(lm_db_port *port, lm_db_fn send, lm_db_fn then, lm_db_fn finish,
                           lm_db_done done, void *arg)
{
    enqueue(port, send, then, finish, done, arg);
}

int lm_db_exec_sync(lm_db *db, lm_db_fn fn, void *arg)
{
    /* start-up only: take the queue lock so no batch runs concurrently on the connection */
    uv_mutex_lock(&db->lock);
    lm_db_conn *w = db->writer;
    int rc = w && tx(w, LM_DB_TX_BEGIN_WRITE) ? fn(w, arg) : LM_DB_EIO;
    if (rc == 0 && !tx(w, LM_DB_TX_COMMIT)) rc = LM_DB_EIO;
    if (rc != 0 && w && db->be->in_txn(w)) tx(w, LM_DB_TX_ROLLBACK);
    uv_mutex_unlock(&db->lock);
    return rc;
}

/* ---- readers ------------------------------------------------------------------------- */

/* A read connection from the pool (waits while pool_size are busy), or NULL when the database
 * is down or cannot be reached. */
static lm_db_conn *acquire(lm_db *db)
{
    if (!atomic_load(&db->up)) return NULL; /* fail fast; the writer reconnects */
    unsigned long long gen = atomic_load(&db->generation);
    uv_mutex_lock(&db->pool_lock);
    for (;;) {
        if (db->n_free > 0) {
            lm_db_conn *c = db->pool_free[--db->n_free];
            if (c->generation == gen) {
                uv_mutex_unlock(&db->pool_lock);
                return c;
            }
            db->be->disconnect(c); /* opened before a reconnect: its server may be gone */
            db->n_open--;
            continue;
        }
        if (db->n_open < db->opts.pool_size) break;
        uv_cond_wait(&db->pool_cond, &db->pool_lock);
    }
    db->n_open++;
    uv_mutex_unlock(&db->pool_lock);
    char err[256];
    lm_db_conn *c = connect_conn(db, false, err, sizeof err);
    if (!c) {
        uv_mutex_lock(&db->pool_lock);
        db->n_open--;
        uv_cond_signal(&db->pool_cond);
        uv_mutex_unlock(&db->pool_lock);
        mark_down(db, err);
    }
    return c;
}

static void release(lm_db *db, lm_db_conn *c)
{
    bool broken = db->be->broken(c);
    if (broken) mark_down(db, db->be->errmsg(c));
    uv_mutex_lock(&db->pool_lock);
    if (broken) {
        db->be->disconnect(c);
        db->n_open--;
    } else {
        db->pool_free[db->n_free++] = c;
    }
    uv_cond_signal(&db->pool_cond);
    uv_mutex_unlock(&db->pool_lock);
}

static void read_work(uv_work_t *w)
{
    read_req *r = w->data;
    lm_db *db = r->j.port->db;
    lm_db_conn *c = acquire(db);
    r->j.rc = c ? r->j.fn(c, r->j.arg) : LM_DB_EIO;
    if (c) {
        if (db->be->in_txn(c)) tx(c, LM_DB_TX_ROLLBACK); /* a job that left one open */
        release(db, c);
    }
    atomic_fetch_add(&db->reads, 1);
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
    out->reconnects = atomic_load(&db->reconnects);
    out->statements = atomic_load(&db->statements);
    out->write_statements = atomic_load(&db->write_statements);
    out->round_trips = atomic_load(&db->round_trips);
    out->write_round_trips = atomic_load(&db->write_round_trips);
    out->pipelined_jobs = atomic_load(&db->pipelined);
    out->pipeline_fallbacks = atomic_load(&db->pipeline_fallbacks);
}
