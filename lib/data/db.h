/* db.h — a service's own database (lm_db), one neutral interface over two backends chosen by
 * the URL: SQLite (db_sqlite.c) and PostgreSQL (db_pg.c). No sqlite3_* or PQ* call exists
 * outside its backend file; services and lib/rest speak only this interface.
 *
 * Execution model (the same for both backends, db.c):
 * - Reads run on libuv's thread pool. Each takes a connection from a bounded pool
 *   (DATABASE_POOL_SIZE, lm_db_opts.pool_size) and gives it back after the job.
 * - Writes go to one writer thread with its own connection, which takes every write job
 *   queued meanwhile, runs each inside its own SAVEPOINT within one transaction and commits
 *   once: N concurrent creates cost one commit (one fsync; on PostgreSQL also one COMMIT round
 *   trip and one WAL flush), and a failing job rolls back only itself. A job's completion is
 *   posted back to the loop that submitted it after the commit, so an acknowledged write is
 *   durable. A commit whose outcome is unknown (the connection broke during COMMIT) is
 *   reported as LM_DB_EIO: never acknowledged, so never "lost".
 * Why threads and not non-blocking libpq on the loops: job functions are ordinary sequential
 * code (load, check, write) shared by both backends; threads let the same job run on SQLite
 * and PostgreSQL, and the group commit gives the fsync economy for concurrent writes. On
 * PostgreSQL the writer's transactions also run in libpq's pipeline mode: transaction
 * control (BEGIN, SAVEPOINT, RELEASE, NOTIFY) and the statements a job only sends
 * (lm_db_send: an event's outbox row, a lock) go without waiting and travel with the next
 * statement whose answer a job needs, so a batch of N creates costs N + 1 round trips (each
 * INSERT … RETURNING, then COMMIT) instead of 3N + 2; jobs written in two steps
 * (lm_db_write_pipelined) send all their statements before one wait for every answer, so
 * such a batch costs 2 (db_pg.c).
 *
 * Health: a connection that breaks (server restarted, network) marks the database down; the
 * writer thread reconnects with exponential backoff (100 ms .. 2 s) while it is down, jobs
 * fail fast with LM_DB_EIO meanwhile (503 to clients), and lm_db_health reports it (/ready).
 * A commit that fails (SQLite: disk full) marks it unable to commit until a probe write
 * succeeds; one log line per failure.
 *
 * SQL dialect: statements are written once for both backends. Parameters are "?" (numbered
 * in order), "?N" or ":name"; both backends understand INSERT/UPDATE … RETURNING and
 * INSERT … ON CONFLICT … DO UPDATE. Both have the SQL functions casefold(text) (Unicode
 * simple lowercase, casefold.h) and instr(text, text). Migrations are per backend.
 *
 * Ownership: lm_db owns its connections and threads. A job's arg belongs to the caller and
 * must stay valid until its done callback ran. A statement from lm_db_stmt belongs to the
 * connection (cached by the SQL text's address) and is valid until the job returns.
 * Threading: lm_db_open/close and lm_db_exec_sync from the main thread (start-up/shutdown);
 * lm_db_attach/detach on the loop's own thread; lm_db_read/lm_db_write on the loop a port
 * belongs to; job functions run on other threads and may touch only their arg and the
 * connection they are given; lm_db_health and lm_db_get_stats from any thread. */
#ifndef LM_DB_H
#define LM_DB_H

#include <stdbool.h>
#include <stddef.h>
#include <uv.h>

#include "buf.h"

typedef struct lm_db lm_db;
typedef struct lm_db_port lm_db_port; /* one per event loop that submits work */
typedef struct lm_db_conn lm_db_conn; /* a connection as job functions see it */
typedef struct lm_db_st lm_db_st;     /* a prepared statement of a connection */

/* Runs off-loop. Returns 0 on success or a caller-defined non-zero code; for writes a
 * non-zero code rolls back this job only. */
typedef int (*lm_db_fn)(lm_db_conn *conn, void *arg);
/* Runs on the submitting loop. rc: the job's code, or LM_DB_EIO when the database failed
 * (unreachable, commit failed, disk full…): nothing of the job was written. */
typedef void (*lm_db_done)(int rc, void *arg);

#define LM_DB_EIO (-1)

/* lm_db_step results */
enum {
    LM_DB_ROW = 100,
    LM_DB_DONE = 101,
    LM_DB_E_UNIQUE = -2,     /* unique or primary key violation */
    LM_DB_E_FK = -3,         /* foreign key violation */
    LM_DB_E_CONSTRAINT = -4, /* CHECK / NOT NULL violation */
    /* LM_DB_EIO: anything else (connection lost, I/O, SQL error) */
};
/* column types */
enum { LM_DB_NULL, LM_DB_INT, LM_DB_REAL, LM_DB_TEXT };

typedef struct lm_db_migrations {
    const char *const *sqlite; /* migration i+1 is sqlite[i] */
    size_t n_sqlite;
    const char *const *pg;
    size_t n_pg;
} lm_db_migrations;

typedef struct lm_db_opts {
    int pool_size;            /* read connections at most (>= 1) */
    int connect_timeout_ms;   /* PostgreSQL: connecting */
    int statement_timeout_ms; /* PostgreSQL: one statement */
} lm_db_opts;

/* url: "sqlite:PATH", or "postgresql://…" / "postgres://…" / a libpq keyword string
 * ("host=… dbname=…"); the password may come from PGPASSFILE. Opens (creates) the database
 * and applies the backend's migrations not applied yet, each in its own transaction (on
 * PostgreSQL under an advisory lock, so instances starting at once apply each once).
 * Returns NULL and a one-line reason on error. */
lm_db *lm_db_open(const char *url, const lm_db_migrations *m, const lm_db_opts *opts, char *err,
                  size_t errlen);
/* Stops the writer (after finishing queued jobs) and closes every connection. No job may be
 * in flight and every port must be detached. */
void lm_db_close(lm_db *db);
/* "sqlite" or "postgresql" */
const char *lm_db_backend_name(const lm_db *db);
/* The same for a job's connection (any thread holding it). */
const char *lm_db_conn_backend_name(const lm_db_conn *conn);

lm_db_port *lm_db_attach(lm_db *db, uv_loop_t *loop);
/* Closes the port's handle; pending completions are delivered first. */
void lm_db_detach(lm_db_port *port);

void lm_db_read(lm_db_port *port, lm_db_fn fn, lm_db_done done, void *arg);
void lm_db_write(lm_db_port *port, lm_db_fn fn, lm_db_done done, void *arg);

/* A write job in steps, so that the writer can send the statements of many jobs before it
 * waits for an answer: on PostgreSQL the jobs of a batch written this way run their send
 * steps one after the other, then every answer comes back in one round trip, then (for the
 * jobs that have one) their middle steps `then` the same way, then their finish steps — one
 * or two waits per batch instead of some per job. send and then may only send: statements
 * go by lm_db_send, and those whose rows a later step reads by lm_db_send_rows (a statement
 * that has to wait, or one not prepared on this connection yet, makes the batch run the
 * ordinary way). Should any statement of those jobs fail, or a step return non-zero, the
 * batch is rolled back and each job runs again the ordinary way — send, then, finish, in its
 * own SAVEPOINT, where a step may also wait — so the steps must be repeatable (derive what
 * they send from arg, and undo in send what a later step changed in arg). finish returns
 * the job's code as a job function does. then may be NULL. On SQLite every job runs the
 * ordinary way. */
void lm_db_write_pipelined(lm_db_port *port, lm_db_fn send, lm_db_fn then, lm_db_fn finish,
                           lm_db_done done, void *arg);
/* Synchronous execution in one transaction on the writer connection; start-up only. */
int lm_db_exec_sync(lm_db *db, lm_db_fn fn, void *arg);

/* ---- statements (job functions) ------------------------------------------------------ */

/* A cached prepared statement for sql (a string literal or a text kept for the process's
 * life: cached by its address), reset and with bindings cleared. NULL on a prepare error or
 * a lost connection (see lm_db_errmsg). */
lm_db_st *lm_db_stmt(lm_db_conn *conn, const char *sql);
void lm_db_bind_int(lm_db_st *st, int idx, long long v);
void lm_db_bind_double(lm_db_st *st, int idx, double v);
/* s[0..len) is copied; len < 0: NUL-terminated. */
void lm_db_bind_text(lm_db_st *st, int idx, const char *s, long len);
void lm_db_bind_null(lm_db_st *st, int idx);
/* The index of ":name", or 0 when the statement has no such parameter (binding 0 is a
 * no-op). */
int lm_db_param_index(lm_db_st *st, const char *name);
/* Executes (first call) or advances: LM_DB_ROW, LM_DB_DONE or an error (LM_DB_E_*, EIO). */
int lm_db_step(lm_db_st *st);
/* Executes st, a statement whose rows the job does not read and whose failure no job
 * expects (an event's outbox row, a replica's upsert, a lock): in the PostgreSQL writer's
 * transaction it is sent without waiting, and its answer is read with the next statement
 * whose answer a job needs, or with the COMMIT; should it fail, the whole batch rolls back
 * and no job of it is acknowledged (LM_DB_EIO, as for a failed COMMIT). Elsewhere (SQLite,
 * reads) it runs at once. Returns 0, or an error known now (LM_DB_E_*, LM_DB_EIO); st is
 * reset either way. For a statement whose failure a job handles (a unique key it reports
 * as a conflict), use lm_db_step. */
int lm_db_send(lm_db_st *st);
/* In the send step of a pipelined write job: executes st, whose rows the finish step reads
 * with lm_db_step on the same st (and an error it returns, such as LM_DB_E_UNIQUE, too). At
 * most one per send step. 0, or LM_DB_EIO when it could not be sent. */
int lm_db_send_rows(lm_db_st *st);
/* In a write job: holds the lock named key until the transaction ends, so writers of other
 * processes that take it too commit one after the other (the outbox's sequence order).
 * PostgreSQL: pg_advisory_xact_lock(key), sent without waiting (as lm_db_send), once per
 * transaction while it is held; SQLite: nothing, one writer holds the whole file. 0 or
 * LM_DB_EIO. */
int lm_db_lock(lm_db_conn *conn, long long key);
/* Ends the current execution; bindings stay. */
void lm_db_reset(lm_db_st *st);
int lm_db_col_type(lm_db_st *st, int i);
long long lm_db_col_int(lm_db_st *st, int i);
double lm_db_col_double(lm_db_st *st, int i);
/* NUL-terminated; valid until the next step/reset. NULL for SQL NULL. */
const char *lm_db_col_text(lm_db_st *st, int i);
size_t lm_db_col_bytes(lm_db_st *st, int i);
const char *lm_db_errmsg(lm_db_conn *conn);

/* Statements whose WHERE holds only the conditions a request uses (lists with optional
 * filters): one SQL text per combination, built on first use and kept for the process's
 * life, so lm_db_stmt caches each by address and the planner uses the indexes it can
 * instead of testing "(? IS NULL OR …)" on every row. Conditions use named parameters
 * (":status"); bind by lm_db_param_index. */
#define LM_DB_VARIANT_CONDS 6
typedef struct lm_db_sql_variants {
    const char *head;         /* "SELECT … FROM t" */
    const char *const *conds; /* "status = :status", … (at most LM_DB_VARIANT_CONDS) */
    int n_conds;
    const char *tail;                                 /* " ORDER BY id LIMIT :limit …" */
    _Atomic(char *) built[1u << LM_DB_VARIANT_CONDS]; /* zero-initialised; filled lazily */
} lm_db_sql_variants;
/* The SQL text with conds[i] for every bit i set in mask. Any thread. */
const char *lm_db_sql_variant(lm_db_sql_variants *v, unsigned mask);

/* In a read job: runs fn inside one read-only transaction, so its statements (a count and a
 * page, say) see the same snapshot. Returns fn's code, or LM_DB_EIO. */
int lm_db_snapshot(lm_db_conn *conn, lm_db_fn fn, void *arg);

/* ---- change notifications ------------------------------------------------------------ */

/* Called on a data-layer thread when another process committed writes to this database.
 * note: NULL for a plain commit; LM_DB_NOTE_MISSED when the listener was not listening for a
 * while (notifications may have been missed); otherwise the note another process sent with
 * lm_db_notify. */
typedef void (*lm_db_changed)(void *ctx, const char *note);
#define LM_DB_NOTE_MISSED ""
/* Asks to be told of other processes' writes: on PostgreSQL every commit of a write batch
 * sends NOTIFY (in the same round trip as its COMMIT, delivered only if it commits) and a
 * listener thread with its own connection (LISTEN) calls fn, typically within milliseconds;
 * after its connection was lost it calls fn(LM_DB_NOTE_MISSED) once when it is back. Returns
 * false when the backend has no notifications (SQLite: processes share a file; see
 * sharedgen.h). Main thread, after lm_db_open; at most once. */
bool lm_db_watch(lm_db *db, lm_db_changed fn, void *ctx);
/* In a write job: tells the other processes' lm_db_watch listeners note (at most 63 bytes,
 * no ':'), delivered only if the job's transaction commits. 0, LM_DB_EIO; 0 and nothing sent
 * on a backend without notifications. */
int lm_db_notify(lm_db_conn *conn, const char *note);

/* ---- state ------------------------------------------------------------------------------ */

/* true when the database is reachable and the last commit (or probe) succeeded; otherwise
 * false and why appended to why (may be NULL). */
bool lm_db_health(lm_db *db, lm_buf *why);

/* Statistics for /metrics. */
typedef struct lm_db_stats {
    unsigned long long commits, write_jobs, reads, failed_commits;
    unsigned long long largest_batch, reconnects;
    unsigned long long statements;         /* statements executed, transaction control too */
    unsigned long long write_statements;   /* of those, on the writer's connection */
    unsigned long long round_trips;        /* PostgreSQL: waits for the server's answers */
    unsigned long long write_round_trips;  /* of those, on the writer's connection */
    unsigned long long pipelined_jobs;     /* write jobs run in pipelined batches */
    unsigned long long pipeline_fallbacks; /* pipelined batches run again job by job */
} lm_db_stats;
void lm_db_get_stats(lm_db *db, lm_db_stats *out);

#endif
