/* db_backend.h — what a database backend provides to the executor (db.c); private to
 * lib/data. Each backend file (db_sqlite.c, db_pg.c) defines one lm_db_backend; every
 * connection and statement it makes starts with a pointer to it, so db.c dispatches the
 * public lm_db_* calls without knowing the backend.
 *
 * Threading: a connection is used by one thread at a time (db.c hands it out); the functions
 * below are called on that thread. Ownership: connect returns a connection its caller owns
 * until disconnect; statements belong to their connection. */
#ifndef LM_DB_BACKEND_H
#define LM_DB_BACKEND_H

#include "db.h"

typedef enum {
    LM_DB_TX_BEGIN_WRITE,
    LM_DB_TX_BEGIN_READ, /* a read-only snapshot */
    LM_DB_TX_COMMIT,
    LM_DB_TX_ROLLBACK,
    LM_DB_TX_SAVEPOINT,
    LM_DB_TX_ROLLBACK_TO,
    LM_DB_TX_RELEASE,
    LM_DB_TX_COMMIT_NOTIFY, /* commit and tell other processes (lm_db_watch) */
} lm_db_tx;

typedef struct lm_db_backend lm_db_backend;

struct lm_db_conn {
    const lm_db_backend *be;
    unsigned long long generation; /* db.c: the reconnect generation it was opened in */
    struct lm_db *db;              /* db.c: for statistics */
    bool writer;                   /* db.c: the writer's connection */
};

struct lm_db_st {
    const lm_db_backend *be;
    lm_db_conn *conn;
};

struct lm_db_backend {
    const char *name;
    /* url as given to lm_db_open. writer: the connection that writes (and migrates). NULL and
     * a reason on failure. */
    lm_db_conn *(*connect)(const char *url, const lm_db_opts *o, bool writer, char *err,
                           size_t errlen);
    void (*disconnect)(lm_db_conn *c);
    int (*migrate)(lm_db_conn *c, const lm_db_migrations *m, char *err, size_t errlen);
    /* Transaction control; false after logging nothing (errmsg says why). */
    bool (*tx)(lm_db_conn *c, lm_db_tx what);
    bool (*in_txn)(lm_db_conn *c);
    /* The connection is lost (reconnect needed). */
    bool (*broken)(lm_db_conn *c);
    /* Optional: true (once) when a statement failed for want of storage since the last call
     * (SQLite: SQLITE_FULL, SQLITE_IOERR). */
    bool (*take_storage_error)(lm_db_conn *c);
    /* A write that proves the database can commit again (SQLite: disk space). 0 or EIO. */
    int (*probe)(lm_db_conn *c);
    lm_db_st *(*stmt)(lm_db_conn *c, const char *sql);
    void (*bind_int)(lm_db_st *st, int idx, long long v);
    void (*bind_double)(lm_db_st *st, int idx, double v);
    void (*bind_text)(lm_db_st *st, int idx, const char *s, size_t len);
    void (*bind_null)(lm_db_st *st, int idx);
    int (*param_index)(lm_db_st *st, const char *name);
    int (*step)(lm_db_st *st);
    /* Optional (NULL: step and reset): lm_db_send. */
    int (*send)(lm_db_st *st);
    /* Optional, all five or none (NULL: no pipelined batches; lm_db_send_rows then sends
     * nothing and the finish step's lm_db_step executes the statement). Pipelined batches
     * (db.c): fast_begin begins the write transaction and from then on every statement is
     * sent without waiting; fast_collect sends one sync point and reads every answer
     * (0, or LM_DB_EIO when any failed, a step had to wait or the connection broke); the
     * rows of lm_db_send_rows wait in their statement for the finish steps; fast_discard
     * drops rows nobody read (after a rollback). */
    bool (*fast_begin)(lm_db_conn *c);
    bool (*fast_resume)(lm_db_conn *c); /* after a fast_collect: a further round of sends */
    int (*fast_collect)(lm_db_conn *c);
    void (*fast_discard)(lm_db_conn *c);
    int (*send_rows)(lm_db_st *st);
    /* Optional (NULL: nothing to do): lm_db_lock. */
    int (*lock)(lm_db_conn *c, long long key);
    void (*reset)(lm_db_st *st);
    int (*col_type)(lm_db_st *st, int i);
    long long (*col_int)(lm_db_st *st, int i);
    double (*col_double)(lm_db_st *st, int i);
    const char *(*col_text)(lm_db_st *st, int i);
    size_t (*col_bytes)(lm_db_st *st, int i);
    const char *(*errmsg)(lm_db_conn *c);
    /* Optional (NULL: the backend has no notifications): a thread with its own connection
     * that calls fn(ctx, NULL) whenever another process (another instance id) committed a
     * write, fn(ctx, note) for each note another process sent (notify), and
     * fn(ctx, LM_DB_NOTE_MISSED) once after each reconnect (notifications may have been
     * missed). */
    void *(*watch_start)(lm_db *db, const char *url, const lm_db_opts *o, lm_db_changed fn,
                         void *ctx);
    void (*watch_stop)(void *watch);
    /* Optional, with watch_start: sends note in c's transaction (lm_db_notify). */
    bool (*notify)(lm_db_conn *c, const char *note);
};

extern const lm_db_backend lm_db_sqlite_backend;
extern const lm_db_backend lm_db_pg_backend;

/* db.c: counts a statement execution / a round trip to the server (statistics). */
void lm_db_count_statement(lm_db_conn *c);
void lm_db_count_round_trip(lm_db_conn *c);
/* db.c: this process's id among the writers of the database (16 hex digits). */
const char *lm_db_instance(const lm_db *db);
/* db.c: the instance id of c's database. */
const char *lm_db_conn_instance(const lm_db_conn *c);

#endif
