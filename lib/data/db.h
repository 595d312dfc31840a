/* db.h — a service's own database (lm_db): SQLite (WAL, synchronous=FULL, foreign keys),
 * numbered migrations at start-up, reads on libuv's thread pool, writes group-committed.
 *
 * Why this shape: request handlers run on event loops and must never block, and a durable
 * commit costs an fsync. So reads go to the thread pool, each pool thread with its own
 * read-only connection (WAL lets readers run beside the writer), and writes go to a single
 * writer thread that takes every write job queued meanwhile, runs each inside its own
 * SAVEPOINT within one transaction and commits once: N concurrent creates cost one fsync,
 * and a failing job rolls back only itself. A job's completion is posted back to the loop
 * that submitted it, after the commit, so an acknowledged write is durable.
 *
 * Every connection has the SQL function casefold(text) (casefold.h).
 *
 * Ownership: lm_db owns its connections and threads. A job's arg belongs to the caller and
 * must stay valid until its done callback ran. Threading: lm_db_open/close and
 * lm_db_exec_sync from the main thread (start-up/shutdown); lm_db_attach/detach on the loop's
 * own thread; lm_db_read/lm_db_write on the loop a port belongs to; job functions run on
 * other threads and may touch only their arg and the connection they are given. */
#ifndef LM_DB_H
#define LM_DB_H

#include <sqlite3.h>
#include <stddef.h>
#include <uv.h>

typedef struct lm_db lm_db;
typedef struct lm_db_port lm_db_port; /* one per event loop that submits work */

/* A connection as job functions see it: the handle plus a prepared-statement cache. */
typedef struct lm_db_conn lm_db_conn;

/* Runs off-loop. Returns 0 on success or a caller-defined non-zero code; for writes a
 * non-zero code rolls back this job only. */
typedef int (*lm_db_fn)(lm_db_conn *conn, void *arg);
/* Runs on the submitting loop. rc: the job's code, or LM_DB_EIO when the database failed
 * (commit failed, disk full…): nothing of the job was written. */
typedef void (*lm_db_done)(int rc, void *arg);

#define LM_DB_EIO (-1)

/* Opens (creates) the database at path and applies migrations[i] as version i+1 when not
 * applied yet, each in its own transaction. Returns NULL and a one-line reason on error. */
lm_db *lm_db_open(const char *path, const char *const *migrations, size_t n_migrations, char *err,
                  size_t errlen);
/* Stops the writer (after finishing queued jobs) and closes every connection. No job may be
 * in flight and every port must be detached. */
void lm_db_close(lm_db *db);

lm_db_port *lm_db_attach(lm_db *db, uv_loop_t *loop);
/* Closes the port's handle; pending completions are delivered first. */
void lm_db_detach(lm_db_port *port);

void lm_db_read(lm_db_port *port, lm_db_fn fn, lm_db_done done, void *arg);
void lm_db_write(lm_db_port *port, lm_db_fn fn, lm_db_done done, void *arg);

/* Synchronous execution on the writer connection; start-up only (seeding, checks). */
int lm_db_exec_sync(lm_db *db, lm_db_fn fn, void *arg);

/* For job functions: a cached prepared statement for sql (a string literal: cached by its
 * address), reset and with bindings cleared. NULL on a prepare error (see lm_db_errmsg). */
sqlite3_stmt *lm_db_stmt(lm_db_conn *conn, const char *sql);
sqlite3 *lm_db_handle(lm_db_conn *conn);

/* Statements whose WHERE holds only the conditions a request uses (lists with optional
 * filters): one SQL text per combination, built on first use and kept for the process's
 * life, so lm_db_stmt caches each by address and SQLite plans each with the indexes it can
 * use instead of testing "(? IS NULL OR …)" on every row. Conditions use named parameters
 * (":status"); bind by name (sqlite3_bind_parameter_index is 0 for an absent one). */
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
const char *lm_db_errmsg(lm_db_conn *conn);

/* In a read job: runs fn inside one read transaction, so its statements (a count and a
 * page, say) see the same snapshot. Returns fn's code, or LM_DB_EIO. */
int lm_db_snapshot(lm_db_conn *conn, lm_db_fn fn, void *arg);

/* Statistics for /metrics. */
typedef struct lm_db_stats {
    unsigned long long commits, write_jobs, reads, failed_commits;
    unsigned long long largest_batch;
} lm_db_stats;
void lm_db_get_stats(lm_db *db, lm_db_stats *out);

#endif
