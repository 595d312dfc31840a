/* db_pg.c — the PostgreSQL backend of lm_db (db_backend.h), on libpq; the only file that
 * calls PQ*. Each connection belongs to one thread at a time (db.c: the writer thread, or a
 * pool thread for the length of a read job) and is used with blocking calls, bounded by
 * connect_timeout, statement_timeout and TCP keepalives/user timeout, so a dead server
 * costs a bounded wait and an LM_DB_EIO, never a hang.
 *
 * SQL is the neutral dialect of db.h: "?", "?N" and ":name" parameters become $N when a
 * statement is prepared (once per connection, cached by the SQL text's address). Values
 * travel as text; results are read as text and typed by the column's type OID. casefold()
 * and instr() are SQL functions the migration step creates (lower() and strpos(): in a
 * database whose LC_CTYPE is C.UTF-8 lower() uses the same C library tables as
 * lm_casefold). */
#include "db_backend.h"
#include "log.h"
#include "sqlparam.h"

#include <libpq-fe.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define STMT_CACHE 128
#define MAX_PARAMS LM_SQLPARAM_MAX
/* NOTIFY channel of committed writes (payload: the writer's instance id, or
 * "<instance id>:<note>" for lm_db_notify) */
#define CHANNEL "lotmesh_writes"
/* pg_advisory_lock key of the migration step: "lotmesh" */
#define MIGRATION_LOCK 0x6c6f746d657368LL

/* type OIDs (pg_type.h) */
enum {
    OID_BOOL = 16,
    OID_INT8 = 20,
    OID_INT2 = 21,
    OID_INT4 = 23,
    OID_OID = 26,
    OID_FLOAT4 = 700,
    OID_FLOAT8 = 701,
    OID_NUMERIC = 1700
};

typedef struct pg_st {
    lm_db_st base;
    const char *sql; /* the cache key */
    char name[16];
    int n_params;
    char *names[MAX_PARAMS]; /* ":name" of parameter i+1, or NULL */
    char *vals[MAX_PARAMS];  /* text of parameter i+1, NULL: SQL NULL */
    PGresult *res;
    int row, n_rows;
    /* answers of lm_db_send_rows not read yet, oldest first (finish steps read them) */
    PGresult **queue;
    int q_head, q_len, q_cap;
} pg_st;

typedef struct pg_conn {
    lm_db_conn base;
    PGconn *h;
    pg_st *cache[STMT_CACHE];
    size_t n_cache;
    unsigned next_name;
    char err[256];
    /* pipeline mode: the writer's connection from BEGIN to COMMIT/ROLLBACK of a write
     * transaction (see "pipeline" below) */
    bool pipeline;
    int n_deferred;   /* commands sent whose answers are not read yet */
    bool poisoned;    /* a deferred command failed: the transaction cannot commit */
    bool stmt_failed; /* a statement failed since the last SAVEPOINT */
    bool lost;        /* the answers went out of step: the connection is unusable */
    /* lm_db_lock: the key asked for in this transaction, and by whom: 0 nobody, 1 the
     * current job (gone with its ROLLBACK TO), 2 the transaction (a job released) */
    long long lock_key;
    int lock_held;
    bool tx_prepared; /* TX_SQL is prepared on it (the writer's) */
    /* a pipelined batch (fast_begin .. fast_collect): every command sent, in order, with the
     * statement whose rows it is (NULL: an answer only checked) */
    bool fast, fast_failed;
    pg_st **sent;
    int n_sent, cap_sent;
} pg_conn;

static pg_conn *PG(lm_db_conn *c)
{
    return (pg_conn *)c;
}
static pg_st *ST(lm_db_st *st)
{
    return (pg_st *)st;
}

/* The first line of a libpq message, without its trailing newline. */
static void set_err(pg_conn *p, const char *msg)
{
    snprintf(p->err, sizeof p->err, "%s", msg && *msg ? msg : "unknown error");
    char *nl = strchr(p->err, '\n');
    if (nl) *nl = 0;
}

static void clear_params(pg_st *s)
{
    for (int i = 0; i < s->n_params; i++) {
        free(s->vals[i]);
        s->vals[i] = NULL;
    }
}

static void clear_queue(pg_st *s)
{
    for (int i = 0; i < s->q_len; i++)
        PQclear(s->queue[(s->q_head + i) % s->q_cap]);
    s->q_head = s->q_len = 0;
}

static void push_queue(pg_st *s, PGresult *r)
{
    if (s->q_len == s->q_cap) {
        int cap = s->q_cap ? s->q_cap * 2 : 8;
        PGresult **q = lm_xmalloc((size_t)cap * sizeof *q);
        for (int i = 0; i < s->q_len; i++)
            q[i] = s->queue[(s->q_head + i) % s->q_cap];
        free(s->queue);
        s->queue = q;
        s->q_cap = cap;
        s->q_head = 0;
    }
    s->queue[(s->q_head + s->q_len++) % s->q_cap] = r;
}

static void free_st(pg_st *s)
{
    clear_queue(s);
    free(s->queue);
    clear_params(s);
    for (int i = 0; i < s->n_params; i++)
        free(s->names[i]);
    PQclear(s->res);
    free(s);
}

static void pg_disconnect(lm_db_conn *c)
{
    pg_conn *p = PG(c);
    free(p->sent);
    for (size_t i = 0; i < p->n_cache; i++)
        free_st(p->cache[i]);
    PQfinish(p->h);
    free(p);
}

static bool pg_broken(lm_db_conn *c)
{
    return PG(c)->lost || PQstatus(PG(c)->h) == CONNECTION_BAD;
}

static bool prepare_tx(PGconn *h);

static lm_db_conn *pg_connect(const char *url, const lm_db_opts *o, bool writer, char *err,
                              size_t errlen)
{
    char connect_timeout[16], options[160], user_timeout[16];
    int ct = (o->connect_timeout_ms + 999) / 1000;
    snprintf(connect_timeout, sizeof connect_timeout, "%d", ct < 2 ? 2 : ct);
    snprintf(options, sizeof options, "-c statement_timeout=%d -c client_min_messages=warning%s",
             o->statement_timeout_ms, writer ? "" : " -c default_transaction_read_only=on");
    /* a dead peer that sends nothing (no RST) is noticed after at most this long */
    snprintf(user_timeout, sizeof user_timeout, "%d",
             o->statement_timeout_ms + o->connect_timeout_ms);
    /* dbname first: it expands the URL/keyword string, the later ones override it */
    const char *const keys[] = {"dbname",
                                "connect_timeout",
                                "options",
                                "application_name",
                                "client_encoding",
                                "keepalives",
                                "keepalives_idle",
                                "keepalives_interval",
                                "keepalives_count",
                                "tcp_user_timeout",
                                NULL};
    const char *const vals[] = {url, connect_timeout, options, "lotmesh", "UTF8", "1", "5", "2",
                                "2", user_timeout,    NULL};
    PGconn *h = PQconnectdbParams(keys, vals, 1);
    if (!h || PQstatus(h) != CONNECTION_OK) {
        pg_conn tmp = {0};
        set_err(&tmp, h ? PQerrorMessage(h) : "out of memory");
        snprintf(err, errlen, "cannot connect to PostgreSQL: %s", tmp.err);
        PQfinish(h);
        return NULL;
    }
    pg_conn *p = lm_xcalloc(1, sizeof *p);
    p->base.be = &lm_db_pg_backend;
    p->h = h;
    p->tx_prepared = writer && prepare_tx(h); /* else each is parsed: slower, as correct */
    return &p->base;
}

/* ---- pipeline mode ----------------------------------------------------------------------
 * The writer's connection runs each write transaction (a group commit) in libpq's pipeline
 * mode, so transaction control costs no round trip of its own: BEGIN, SAVEPOINT, RELEASE,
 * ROLLBACK TO and NOTIFY are sent without waiting ("deferred") and travel with the next
 * statement whose answer a job needs, or with the COMMIT. A sync point follows every command
 * whose answer is read, so a failing statement aborts nothing after it.
 *
 * Per job that makes one round trip per statement it executes (a create: its INSERT …
 * RETURNING), plus one per batch for the COMMIT, instead of three per job and two per batch.
 * The rules stay those of the synchronous code: a job whose statement failed is rolled back
 * (RELEASE refuses while a statement failed since the SAVEPOINT); a deferred command that
 * fails — not expected, the transaction is healthy when each is sent — poisons the
 * transaction: it is rolled back, no job of the batch is acknowledged; answers that come out
 * of step mark the connection lost (reconnected, nothing acknowledged).
 *
 * Pipelined batches (fast_begin .. fast_collect, db.c run_pipelined) go further: from BEGIN
 * on, every command of the batch's two-step jobs is sent without a sync point — each one's
 * place noted in p->sent — then one sync point brings every answer, rows into the queue of
 * the statement they belong to for the finish steps. Without savepoints a failure aborts the
 * rest, so any failure (or a step that would wait, or a statement not prepared yet) makes
 * db.c roll the batch back and run it job by job as above. */

static void count_round_trip(pg_conn *p)
{
    lm_db_count_round_trip(&p->base);
}

/* The answer of the next command of the pipeline, with the NULL that ends it consumed;
 * NULL (and the connection lost) when the connection failed or the answers are out of
 * step. */
static PGresult *next_result(pg_conn *p)
{
    PGresult *r = PQgetResult(p->h);
    if (!r || PQresultStatus(r) == PGRES_PIPELINE_SYNC) {
        set_err(p, PQerrorMessage(p->h));
        PQclear(r);
        p->lost = true;
        return NULL;
    }
    PGresult *end = PQgetResult(p->h);
    if (end) {
        PQclear(end);
        PQclear(r);
        set_err(p, "unexpected answer from PostgreSQL in pipeline mode");
        p->lost = true;
        return NULL;
    }
    return r;
}

/* The writer's transaction control, prepared once per connection (pg_connect), so the
 * server does not parse it again for every job. */
static const char *const TX_SQL[] = {"BEGIN", "SAVEPOINT job", "RELEASE SAVEPOINT job",
                                     "ROLLBACK TO SAVEPOINT job", "COMMIT"};
#define N_TX_SQL (sizeof TX_SQL / sizeof TX_SQL[0])

static bool prepare_tx(PGconn *h)
{
    for (size_t i = 0; i < N_TX_SQL; i++) {
        char name[16];
        snprintf(name, sizeof name, "lm_tx%zu", i);
        PGresult *r = PQprepare(h, name, TX_SQL[i], 0, NULL);
        bool ok = PQresultStatus(r) == PGRES_COMMAND_OK;
        PQclear(r);
        if (!ok) return false;
    }
    return true;
}

/* Queues sql (no parameters) in the pipeline: a prepared one when it is transaction control. */
static int send_command(pg_conn *p, const char *sql)
{
    if (p->tx_prepared)
        for (size_t i = 0; i < N_TX_SQL; i++)
            if (!strcmp(sql, TX_SQL[i])) {
                char name[16];
                snprintf(name, sizeof name, "lm_tx%zu", i);
                return PQsendQueryPrepared(p->h, name, 0, NULL, NULL, NULL, 0);
            }
    return PQsendQueryParams(p->h, sql, 0, NULL, NULL, NULL, NULL, 0);
}

/* A command sent in a pipelined batch: its answer is read by fast_collect. */
static void note_sent(pg_conn *p, pg_st *rows_of)
{
    if (p->n_sent == p->cap_sent) {
        p->cap_sent = p->cap_sent ? p->cap_sent * 2 : 64;
        p->sent = lm_xrealloc(p->sent, (size_t)p->cap_sent * sizeof *p->sent);
    }
    p->sent[p->n_sent++] = rows_of;
}

/* After a PQsend* of a command whose answer is only checked (sent: its result): noted for
 * the next sync point, or the connection lost. */
static bool deferred(pg_conn *p, int sent)
{
    if (!sent) {
        set_err(p, PQerrorMessage(p->h));
        p->lost = true;
        return false;
    }
    if (p->fast)
        note_sent(p, NULL);
    else
        p->n_deferred++;
    return true;
}

/* The end of a segment: its sync point's answer; false (the connection lost) when another
 * answer comes instead. */
static bool read_sync(pg_conn *p)
{
    PGresult *sync = PQgetResult(p->h);
    bool ok = sync && PQresultStatus(sync) == PGRES_PIPELINE_SYNC;
    PQclear(sync);
    if (!ok) {
        set_err(p, "unexpected answer from PostgreSQL in pipeline mode");
        p->lost = true;
    }
    return ok;
}

/* Sends a command without waiting for its answer (read at the next sync point). */
static bool defer(pg_conn *p, const char *sql)
{
    lm_db_count_statement(&p->base);
    return deferred(p, send_command(p, sql));
}

/* Sends statement s with its parameters (PQsendQueryPrepared). */
static int send_prepared(pg_conn *p, pg_st *s)
{
    return PQsendQueryPrepared(p->h, s->name, s->n_params, (const char *const *)s->vals, NULL, NULL,
                               0);
}

/* Ends the segment with a sync point, sends it and reads every answer up to it: the deferred
 * commands' (a failure poisons the transaction) and, when last, the answer of the command
 * sent last, which is returned (the caller clears it). NULL when last is false, or when the
 * connection failed (p->lost). */
static PGresult *sync_point(pg_conn *p, bool last)
{
    int n = p->n_deferred;
    p->n_deferred = 0;
    count_round_trip(p);
    if (!PQpipelineSync(p->h)) {
        set_err(p, PQerrorMessage(p->h));
        p->lost = true;
        return NULL;
    }
    PGresult *res = NULL;
    for (int i = 0; i < n + (last ? 1 : 0); i++) {
        PGresult *r = next_result(p);
        if (!r) {
            PQclear(res);
            return NULL;
        }
        if (i == n) {
            res = r;
            continue;
        }
        ExecStatusType st = PQresultStatus(r);
        if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
            if (!p->poisoned)
                set_err(p, PQresultStatus(r) == PGRES_FATAL_ERROR ? PQresultErrorMessage(r)
                                                                  : "transaction was aborted");
            p->poisoned = true;
        }
        PQclear(r);
    }
    if (!read_sync(p)) {
        PQclear(res);
        return NULL;
    }
    return res;
}

/* Sends sql and waits for its answer (and the deferred commands'). */
static PGresult *pipeline_exec(pg_conn *p, const char *sql)
{
    lm_db_count_statement(&p->base);
    if (!send_command(p, sql)) {
        set_err(p, PQerrorMessage(p->h));
        p->lost = true;
        return NULL;
    }
    return sync_point(p, true);
}

static bool enter_pipeline(pg_conn *p)
{
    if (!p->pipeline) {
        if (!PQenterPipelineMode(p->h)) {
            set_err(p, PQerrorMessage(p->h));
            return false;
        }
        p->pipeline = true;
    }
    p->n_deferred = 0;
    p->poisoned = p->stmt_failed = false;
    return true;
}

/* Back to ordinary mode at the end of a transaction: every answer has been read. */
static void leave_pipeline(pg_conn *p)
{
    if (!p->pipeline) return;
    if (p->n_deferred && !p->lost) PQclear(sync_point(p, false));
    if (!p->lost && !PQexitPipelineMode(p->h)) {
        set_err(p, PQerrorMessage(p->h));
        p->lost = true;
    }
    p->pipeline = false;
    p->n_deferred = 0;
}

/* A command that returns no rows we need (simple protocol; in pipeline mode extended). */
static bool exec(pg_conn *p, const char *sql)
{
    PGresult *r;
    if (p->pipeline) {
        if (p->lost) return false; /* answers out of step: nothing more on it */
        r = pipeline_exec(p, sql);
    } else {
        r = PQexec(p->h, sql);
        lm_db_count_statement(&p->base);
        count_round_trip(p);
    }
    ExecStatusType s = PQresultStatus(r);
    bool ok = r && (s == PGRES_COMMAND_OK || s == PGRES_TUPLES_OK);
    if (!ok && !(p->pipeline && s == PGRES_PIPELINE_ABORTED))
        set_err(p, r ? PQresultErrorMessage(r) : PQerrorMessage(p->h));
    PQclear(r);
    return ok;
}

/* COMMIT (with NOTIFY first when notify): true only when PostgreSQL answered COMMIT — a
 * COMMIT of a failed transaction "succeeds" as ROLLBACK, a lost answer is a failure. */
static bool commit(pg_conn *p, bool notify)
{
    char sql[96] = "COMMIT";
    if (notify) /* delivered only if it commits */
        snprintf(sql, sizeof sql, "NOTIFY " CHANNEL ", '%s'%s", lm_db_conn_instance(&p->base),
                 p->pipeline ? "" : "; COMMIT");
    PGresult *r;
    if (p->pipeline) {
        if (p->poisoned) return false; /* why is in err; the caller rolls back */
        if (notify && !defer(p, sql)) return false;
        r = pipeline_exec(p, "COMMIT");
    } else {
        r = PQexec(p->h, sql); /* the NOTIFY travels with the COMMIT: one round trip */
        lm_db_count_statement(&p->base);
        count_round_trip(p);
    }
    bool ok =
        PQresultStatus(r) == PGRES_COMMAND_OK && !strcmp(PQcmdStatus(r), "COMMIT") && !p->poisoned;
    if (!ok && !p->poisoned)
        set_err(p, PQresultStatus(r) == PGRES_COMMAND_OK ? "transaction was aborted"
                   : r                                   ? PQresultErrorMessage(r)
                                                         : PQerrorMessage(p->h));
    PQclear(r);
    if (ok) leave_pipeline(p);
    return ok;
}

static bool pg_tx(lm_db_conn *c, lm_db_tx what)
{
    pg_conn *p = PG(c);
    switch (what) { /* a lock taken in a savepoint that is rolled back is released */
    case LM_DB_TX_RELEASE:
        if (p->lock_held == 1 && !p->stmt_failed) p->lock_held = 2;
        break;
    case LM_DB_TX_ROLLBACK_TO:
        if (p->lock_held == 1) p->lock_held = 0;
        break;
    case LM_DB_TX_SAVEPOINT:
        break;
    default: /* the transaction begins or ends */
        p->lock_held = 0;
    }
    switch (what) {
    case LM_DB_TX_BEGIN_WRITE:
        /* the writer's transactions run in pipeline mode (above) */
        if (c->writer) return enter_pipeline(p) && defer(p, "BEGIN");
        return exec(p, "BEGIN");
    case LM_DB_TX_BEGIN_READ:
        return exec(p, "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY");
    case LM_DB_TX_COMMIT:
    case LM_DB_TX_COMMIT_NOTIFY:
        return commit(p, what == LM_DB_TX_COMMIT_NOTIFY);
    case LM_DB_TX_ROLLBACK: {
        /* the deferred commands first: after a failure among them the server skips the rest
         * of their segment, a ROLLBACK in it too */
        if (p->pipeline && p->n_deferred && !p->lost) PQclear(sync_point(p, false));
        bool ok = exec(p, "ROLLBACK");
        leave_pipeline(p);
        return ok;
    }
    case LM_DB_TX_SAVEPOINT:
        if (!p->pipeline) return exec(p, "SAVEPOINT job");
        p->stmt_failed = false;
        return !p->poisoned && defer(p, "SAVEPOINT job");
    case LM_DB_TX_ROLLBACK_TO:
        if (!p->pipeline) return exec(p, "ROLLBACK TO SAVEPOINT job");
        p->stmt_failed = false;
        return !p->poisoned && defer(p, "ROLLBACK TO SAVEPOINT job");
    case LM_DB_TX_RELEASE:
        if (!p->pipeline) return exec(p, "RELEASE SAVEPOINT job");
        if (p->stmt_failed) {
            /* what the server would answer: the job's statement failed, the transaction is
             * aborted until the ROLLBACK TO that follows */
            set_err(p, "a statement of the job failed");
            return false;
        }
        return !p->poisoned && defer(p, "RELEASE SAVEPOINT job");
    }
    return false;
}

static bool pg_in_txn(lm_db_conn *c)
{
    if (PG(c)->pipeline) return true; /* a write transaction, perhaps with BEGIN not sent yet */
    PGTransactionStatusType t = PQtransactionStatus(PG(c)->h);
    return t == PQTRANS_INTRANS || t == PQTRANS_INERROR || t == PQTRANS_ACTIVE;
}

static int pg_probe(lm_db_conn *c)
{
    return exec(PG(c), "SELECT 1") ? 0 : LM_DB_EIO;
}

/* ---- migrations ------------------------------------------------------------------------ */

static long long query_int(pg_conn *p, const char *sql, bool *ok)
{
    PGresult *r = PQexec(p->h, sql);
    *ok = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1;
    long long v = *ok ? strtoll(PQgetvalue(r, 0, 0), NULL, 10) : 0;
    if (!*ok) set_err(p, r ? PQresultErrorMessage(r) : PQerrorMessage(p->h));
    PQclear(r);
    return v;
}

static int pg_migrate(lm_db_conn *c, const lm_db_migrations *mig, char *err, size_t errlen)
{
    pg_conn *p = PG(c);
    char lock[96], unlock[96];
    snprintf(lock, sizeof lock, "SELECT pg_advisory_lock(%lld)", MIGRATION_LOCK);
    snprintf(unlock, sizeof unlock, "SELECT pg_advisory_unlock(%lld)", MIGRATION_LOCK);
    /* instances starting at once: one migrates, the others wait and then find it done */
    if (!exec(p, lock)) {
        snprintf(err, errlen, "cannot take the migration lock: %s", p->err);
        return -1;
    }
    int rc = -1;
    bool ok;
    if (!exec(p, "CREATE TABLE IF NOT EXISTS schema_migrations (version bigint PRIMARY KEY,"
                 " applied_at timestamptz NOT NULL DEFAULT now());"
                 "CREATE OR REPLACE FUNCTION casefold(text) RETURNS text LANGUAGE sql"
                 " IMMUTABLE STRICT PARALLEL SAFE AS 'SELECT lower($1)';"
                 "CREATE OR REPLACE FUNCTION instr(text, text) RETURNS integer LANGUAGE sql"
                 " IMMUTABLE STRICT PARALLEL SAFE AS 'SELECT strpos($1, $2)'")) {
        snprintf(err, errlen, "cannot create schema_migrations: %s", p->err);
        goto out;
    }
    long long have = query_int(p, "SELECT coalesce(max(version), 0) FROM schema_migrations", &ok);
    if (!ok) {
        snprintf(err, errlen, "cannot read schema_migrations: %s", p->err);
        goto out;
    }
    if ((size_t)have > mig->n_pg) {
        snprintf(err, errlen, "database schema version %lld is newer than this build (%zu)", have,
                 mig->n_pg);
        goto out;
    }
    for (size_t v = (size_t)have + 1; v <= mig->n_pg; v++) {
        char ins[96];
        snprintf(ins, sizeof ins, "INSERT INTO schema_migrations(version) VALUES (%zu)", v);
        if (!exec(p, "BEGIN") || !exec(p, mig->pg[v - 1]) || !exec(p, ins) ||
            !pg_tx(c, LM_DB_TX_COMMIT)) {
            snprintf(err, errlen, "migration %zu failed: %s", v, p->err);
            exec(p, "ROLLBACK");
            goto out;
        }
        lm_log_info("database: applied migration %zu", v);
    }
    PGresult *r = PQexec(p->h, "SHOW lc_ctype");
    if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1) {
        const char *ctype = PQgetvalue(r, 0, 0);
        if (!strcmp(ctype, "C") || !strcmp(ctype, "POSIX"))
            lm_log_warn("database: LC_CTYPE is %s: case-insensitive search (q) folds ASCII only;"
                        " create the database with LC_CTYPE C.UTF-8",
                        ctype);
    }
    PQclear(r);
    rc = 0;
out:
    exec(p, unlock);
    return rc;
}

/* ---- statements ------------------------------------------------------------------------ */

static lm_db_st *pg_stmt(lm_db_conn *c, const char *sql)
{
    pg_conn *p = PG(c);
    for (size_t i = 0; i < p->n_cache; i++) {
        pg_st *s = p->cache[i];
        if (s->sql == sql) {
            PQclear(s->res);
            s->res = NULL;
            clear_params(s);
            return &s->base;
        }
    }
    if (p->fast) { /* preparing waits: this batch runs the ordinary way */
        p->fast_failed = true;
        set_err(p, "a statement to prepare in a pipelined batch");
        return NULL;
    }
    pg_st *s = lm_xcalloc(1, sizeof *s);
    s->base.be = &lm_db_pg_backend;
    s->base.conn = c;
    s->sql = sql;
    snprintf(s->name, sizeof s->name, "s%u", p->next_name++);
    lm_sqlparam params;
    char *text = lm_sqlparam_translate(sql, &params);
    if (text) {
        s->n_params = params.n;
        memcpy(s->names, params.names, sizeof s->names); /* s owns them now */
    }
    if (!text) {
        set_err(p, "too many parameters");
        free_st(s);
        return NULL;
    }
    PGresult *r;
    if (p->pipeline) {
        r = PQsendPrepare(p->h, s->name, text, s->n_params, NULL) ? sync_point(p, true) : NULL;
        if (!r && !p->lost) set_err(p, PQerrorMessage(p->h));
    } else {
        r = PQprepare(p->h, s->name, text, s->n_params, NULL);
        count_round_trip(p);
    }
    lm_db_count_statement(c);
    free(text);
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        p->stmt_failed = true;
        if (PQresultStatus(r) == PGRES_PIPELINE_ABORTED) {
            if (!p->poisoned) set_err(p, "transaction was aborted");
        } else if (!p->lost) {
            set_err(p, r ? PQresultErrorMessage(r) : PQerrorMessage(p->h));
        }
        if (!pg_broken(c)) lm_log_error("database: cannot prepare a statement: %s", p->err);
        PQclear(r);
        free_st(s);
        return NULL;
    }
    PQclear(r);
    if (p->n_cache < STMT_CACHE) {
        p->cache[p->n_cache++] = s;
    } else {
        lm_log_warn("statement cache full; replacing the oldest");
        free_st(p->cache[0]); /* stays prepared on the server until the connection ends */
        p->cache[0] = s;
    }
    return &s->base;
}

static void set_param(lm_db_st *st, int idx, char *v)
{
    pg_st *s = ST(st);
    if (idx < 1 || idx > s->n_params) {
        free(v);
        return;
    }
    free(s->vals[idx - 1]);
    s->vals[idx - 1] = v;
}

static void pg_bind_int(lm_db_st *st, int idx, long long v)
{
    char t[24];
    snprintf(t, sizeof t, "%lld", v);
    set_param(st, idx, lm_xstrdup(t));
}
static void pg_bind_double(lm_db_st *st, int idx, double v)
{
    char t[40];
    snprintf(t, sizeof t, "%.17g", v);
    set_param(st, idx, lm_xstrdup(t));
}
static void pg_bind_text(lm_db_st *st, int idx, const char *s, size_t len)
{
    set_param(st, idx, lm_xstrndup(s, len));
}
static void pg_bind_null(lm_db_st *st, int idx)
{
    set_param(st, idx, NULL);
}
static int pg_param_index(lm_db_st *st, const char *name)
{
    pg_st *s = ST(st);
    for (int i = 0; i < s->n_params; i++)
        if (s->names[i] && !strcmp(s->names[i], name)) return i + 1;
    return 0;
}

static int classify(PGresult *r)
{
    const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    if (!state) return LM_DB_EIO;
    if (!strcmp(state, "23505")) return LM_DB_E_UNIQUE;
    if (!strcmp(state, "23503")) return LM_DB_E_FK;
    if (!strcmp(state, "23514") || !strcmp(state, "23502")) return LM_DB_E_CONSTRAINT;
    return LM_DB_EIO;
}

static void pg_reset(lm_db_st *st);

/* What an answer in s->res says: LM_DB_ROW/DONE, or an error (the answer cleared). */
static int take_result(pg_st *s, pg_conn *p)
{
    switch (PQresultStatus(s->res)) {
    case PGRES_TUPLES_OK:
        s->row = 0;
        s->n_rows = PQntuples(s->res);
        return s->n_rows > 0 ? LM_DB_ROW : LM_DB_DONE;
    case PGRES_COMMAND_OK:
        s->row = s->n_rows = 0;
        return LM_DB_DONE;
    default: {
        p->stmt_failed = true;
        if (PQresultStatus(s->res) == PGRES_PIPELINE_ABORTED) /* a deferred command failed */
        {
            if (!p->poisoned) set_err(p, "transaction was aborted");
        } else if (!p->lost)
            set_err(p, s->res ? PQresultErrorMessage(s->res) : PQerrorMessage(p->h));
        int rc = s->res ? classify(s->res) : LM_DB_EIO;
        if (rc == LM_DB_EIO && !pg_broken(&p->base)) /* lost connections are logged once */
            lm_log_error("database: statement failed: %s", p->err);
        PQclear(s->res);
        s->res = NULL;
        return rc;
    }
    }
}

static int pg_step(lm_db_st *st)
{
    pg_st *s = ST(st);
    pg_conn *p = PG(st->conn);
    if (s->res) {
        s->row++;
        return s->row < s->n_rows ? LM_DB_ROW : LM_DB_DONE;
    }
    if (s->q_len) { /* the rows lm_db_send_rows asked for */
        s->res = s->queue[s->q_head];
        s->q_head = (s->q_head + 1) % s->q_cap;
        s->q_len--;
        return take_result(s, p);
    }
    if (p->fast) { /* a wait in a pipelined batch: it runs the ordinary way */
        p->fast_failed = true;
        set_err(p, "a statement that waits in a pipelined batch");
        return LM_DB_EIO;
    }
    if (p->pipeline) {
        s->res = send_prepared(p, s) ? sync_point(p, true) : NULL;
        if (!s->res && !p->lost) {
            set_err(p, PQerrorMessage(p->h));
            p->lost = true;
        }
    } else {
        s->res =
            PQexecPrepared(p->h, s->name, s->n_params, (const char *const *)s->vals, NULL, NULL, 0);
        count_round_trip(p);
    }
    lm_db_count_statement(st->conn);
    return take_result(s, p);
}

/* lm_db_send: in the writer's transaction the statement is deferred like transaction
 * control (its parameters are copied into libpq's output buffer at once); a failure poisons
 * the transaction (sync_point), so the batch rolls back and nothing of it is acknowledged. */
static int pg_send(lm_db_st *st)
{
    pg_st *s = ST(st);
    pg_conn *p = PG(st->conn);
    if (!p->pipeline) {
        int rc = pg_step(st);
        pg_reset(st);
        return rc == LM_DB_DONE || rc == LM_DB_ROW ? 0 : rc;
    }
    if (p->lost || p->poisoned) return LM_DB_EIO;
    lm_db_count_statement(st->conn);
    return deferred(p, send_prepared(p, s)) ? 0 : LM_DB_EIO;
}

/* lm_db_send_rows: in a pipelined batch sent now and answered at fast_collect; otherwise
 * executed at once. Either way the answer waits in the statement's queue for lm_db_step. */
static int pg_send_rows(lm_db_st *st)
{
    pg_st *s = ST(st);
    pg_conn *p = PG(st->conn);
    if (p->lost) return LM_DB_EIO;
    PQclear(s->res);
    s->res = NULL;
    lm_db_count_statement(st->conn);
    if (p->fast) {
        if (!send_prepared(p, s)) {
            set_err(p, PQerrorMessage(p->h));
            p->lost = true;
            return LM_DB_EIO;
        }
        note_sent(p, s);
        return 0;
    }
    PGresult *r;
    if (p->pipeline) {
        r = send_prepared(p, s) ? sync_point(p, true) : NULL;
        if (!r && !p->lost) {
            set_err(p, PQerrorMessage(p->h));
            p->lost = true;
        }
    } else {
        r = PQexecPrepared(p->h, s->name, s->n_params, (const char *const *)s->vals, NULL, NULL, 0);
        count_round_trip(p);
    }
    if (!r) return LM_DB_EIO;
    ExecStatusType rs = PQresultStatus(r);
    if (rs != PGRES_TUPLES_OK && rs != PGRES_COMMAND_OK) p->stmt_failed = true;
    push_queue(s, r); /* an error too: lm_db_step reports it */
    return 0;
}

/* ---- pipelined batches (db.c run_pipelined) -------------------------------------------- */

static bool pg_fast_begin(lm_db_conn *c)
{
    pg_conn *p = PG(c);
    if (p->lost || !enter_pipeline(p)) return false;
    p->fast = true;
    p->fast_failed = false;
    p->n_sent = 0;
    p->lock_held = 0;
    if (defer(p, "BEGIN")) return true;
    p->fast = false; /* lost: replaced by the writer's reconnect */
    return false;
}

static bool pg_fast_resume(lm_db_conn *c)
{
    pg_conn *p = PG(c);
    if (p->lost || p->poisoned || !p->pipeline) return false;
    p->fast = true;
    p->fast_failed = false;
    p->n_sent = 0;
    return true;
}

static int pg_fast_collect(lm_db_conn *c)
{
    pg_conn *p = PG(c);
    p->fast = false;
    int n = p->n_sent;
    p->n_sent = 0;
    bool failed = p->fast_failed;
    if (p->lost) return LM_DB_EIO;
    count_round_trip(p);
    if (!PQpipelineSync(p->h)) {
        set_err(p, PQerrorMessage(p->h));
        p->lost = true;
        return LM_DB_EIO;
    }
    for (int i = 0; i < n; i++) {
        PGresult *r = next_result(p);
        if (!r) return LM_DB_EIO; /* lost: out of step */
        ExecStatusType rs = PQresultStatus(r);
        if (rs != PGRES_COMMAND_OK && rs != PGRES_TUPLES_OK) {
            if (!failed && rs != PGRES_PIPELINE_ABORTED) set_err(p, PQresultErrorMessage(r));
            failed = true;
        }
        if (p->sent[i])
            push_queue(p->sent[i], r);
        else
            PQclear(r);
    }
    if (!read_sync(p)) return LM_DB_EIO;
    if (failed) p->poisoned = true; /* the transaction is aborted: only ROLLBACK now */
    return failed ? LM_DB_EIO : 0;
}

static void pg_fast_discard(lm_db_conn *c)
{
    pg_conn *p = PG(c);
    p->fast = p->fast_failed = false;
    p->n_sent = 0;
    for (size_t i = 0; i < p->n_cache; i++) {
        pg_st *s = p->cache[i];
        clear_queue(s);
        PQclear(s->res);
        s->res = NULL;
    }
}

static int pg_lock(lm_db_conn *c, long long key)
{
    pg_conn *p = PG(c);
    if (p->pipeline && p->lock_held && p->lock_key == key) return 0;
    lm_db_st *st = lm_db_stmt(c, "SELECT pg_advisory_xact_lock(?)");
    if (!st) return LM_DB_EIO;
    lm_db_bind_int(st, 1, key);
    if (pg_send(st) != 0) return LM_DB_EIO;
    if (p->pipeline) {
        p->lock_key = key;
        p->lock_held = p->fast ? 2 : 1; /* no savepoint in a pipelined batch */
    }
    return 0;
}

static void pg_reset(lm_db_st *st)
{
    PQclear(ST(st)->res);
    ST(st)->res = NULL;
}

static bool have_value(pg_st *s, int i)
{
    return s->res && s->row < s->n_rows && i < PQnfields(s->res) && !PQgetisnull(s->res, s->row, i);
}

static int pg_col_type(lm_db_st *st, int i)
{
    pg_st *s = ST(st);
    if (!have_value(s, i)) return LM_DB_NULL;
    switch (PQftype(s->res, i)) {
    case OID_BOOL:
    case OID_INT2:
    case OID_INT4:
    case OID_INT8:
    case OID_OID:
        return LM_DB_INT;
    case OID_FLOAT4:
    case OID_FLOAT8:
        return LM_DB_REAL;
    case OID_NUMERIC:
        return strpbrk(PQgetvalue(s->res, s->row, i), ".eEN") ? LM_DB_REAL : LM_DB_INT;
    default:
        return LM_DB_TEXT;
    }
}
static long long pg_col_int(lm_db_st *st, int i)
{
    pg_st *s = ST(st);
    if (!have_value(s, i)) return 0;
    const char *v = PQgetvalue(s->res, s->row, i);
    if (PQftype(s->res, i) == OID_BOOL) return *v == 't';
    return strtoll(v, NULL, 10);
}
static double pg_col_double(lm_db_st *st, int i)
{
    pg_st *s = ST(st);
    return have_value(s, i) ? strtod(PQgetvalue(s->res, s->row, i), NULL) : 0.0;
}
static const char *pg_col_text(lm_db_st *st, int i)
{
    pg_st *s = ST(st);
    return have_value(s, i) ? PQgetvalue(s->res, s->row, i) : NULL;
}
static size_t pg_col_bytes(lm_db_st *st, int i)
{
    pg_st *s = ST(st);
    return have_value(s, i) ? (size_t)PQgetlength(s->res, s->row, i) : 0;
}
static const char *pg_errmsg(lm_db_conn *c)
{
    pg_conn *p = PG(c);
    if (pg_broken(c)) set_err(p, PQerrorMessage(p->h));
    return p->err[0] ? p->err : "unknown error";
}

/* ---- change notifications (LISTEN) ---------------------------------------------------- */

typedef struct pg_watch {
    lm_db *db;
    char *url;
    lm_db_opts opts;
    lm_db_changed fn;
    void *ctx;
    uv_thread_t thread;
    atomic_bool stop;
} pg_watch;

/* The listener thread: LISTEN on its own connection, poll its socket (waking every 200 ms to
 * see whether to stop), call fn for every other instance's notification; reconnect with
 * backoff after a loss and then call fn once, since notifications may have been missed. */
static void watch_main(void *arg)
{
    pg_watch *w = arg;
    lm_db_conn *c = NULL;
    int backoff_ms = 0;
    bool first = true;
    while (!atomic_load(&w->stop)) {
        if (!c) {
            char err[256];
            c = pg_connect(w->url, &w->opts, true, err, sizeof err);
            if (c && !exec(PG(c), "LISTEN " CHANNEL)) {
                pg_disconnect(c);
                c = NULL;
            }
            if (!c) {
                backoff_ms = backoff_ms ? (backoff_ms * 2 > 2000 ? 2000 : backoff_ms * 2) : 100;
                for (int t = 0; t < backoff_ms && !atomic_load(&w->stop); t += 50)
                    uv_sleep(50);
                continue;
            }
            backoff_ms = 0;
            if (!first) w->fn(w->ctx, LM_DB_NOTE_MISSED); /* writes while not listening */
            first = false;
        }
        PGconn *h = PG(c)->h;
        struct pollfd pfd = {.fd = PQsocket(h), .events = POLLIN};
        int n = poll(&pfd, 1, 200);
        if (n < 0) continue;
        if (n > 0 && !PQconsumeInput(h)) {
            pg_disconnect(c); /* lost: reconnect */
            c = NULL;
            continue;
        }
        bool other = false;
        PGnotify *note;
        const char *me = lm_db_instance(w->db);
        size_t mlen = strlen(me);
        while ((note = PQnotifies(h))) {
            const char *x = note->extra;
            bool mine = !strncmp(x, me, mlen) && (x[mlen] == '\0' || x[mlen] == ':');
            const char *colon = strchr(x, ':');
            if (!mine && colon && colon[1])
                w->fn(w->ctx, colon + 1);
            else
                other |= !mine;
            PQfreemem(note);
        }
        if (other) w->fn(w->ctx, NULL);
        if (PQstatus(h) == CONNECTION_BAD) {
            pg_disconnect(c);
            c = NULL;
        }
    }
    if (c) pg_disconnect(c);
}

/* A note in the job's transaction: a statement like the job's own (pipeline mode included),
 * delivered with its COMMIT. */
static bool pg_notify(lm_db_conn *c, const char *note)
{
    char payload[96];
    snprintf(payload, sizeof payload, "%s:%.63s", lm_db_conn_instance(c), note);
    lm_db_st *st = lm_db_stmt(c, "SELECT pg_notify('" CHANNEL "', ?)");
    if (!st) return false;
    lm_db_bind_text(st, 1, payload, -1);
    return lm_db_send(st) == 0;
}

static void *pg_watch_start(lm_db *db, const char *url, const lm_db_opts *o, lm_db_changed fn,
                            void *ctx)
{
    pg_watch *w = lm_xcalloc(1, sizeof *w);
    *w = (pg_watch){.db = db, .url = lm_xstrdup(url), .opts = *o, .fn = fn, .ctx = ctx};
    if (uv_thread_create(&w->thread, watch_main, w) != 0) {
        free(w->url);
        free(w);
        return NULL;
    }
    return w;
}

static void pg_watch_stop(void *arg)
{
    pg_watch *w = arg;
    atomic_store(&w->stop, true);
    uv_thread_join(&w->thread);
    free(w->url);
    free(w);
}

const lm_db_backend lm_db_pg_backend = {
    .name = "postgresql",
    .connect = pg_connect,
    .disconnect = pg_disconnect,
    .migrate = pg_migrate,
    .tx = pg_tx,
    .in_txn = pg_in_txn,
    .broken = pg_broken,
    .probe = pg_probe,
    .stmt = pg_stmt,
    .bind_int = pg_bind_int,
    .bind_double = pg_bind_double,
    .bind_text = pg_bind_text,
    .bind_null = pg_bind_null,
    .param_index = pg_param_index,
    .step = pg_step,
    .send = pg_send,
    .lock = pg_lock,
    .fast_begin = pg_fast_begin,
    .fast_resume = pg_fast_resume,
    .fast_collect = pg_fast_collect,
    .fast_discard = pg_fast_discard,
    .send_rows = pg_send_rows,
    .reset = pg_reset,
    .col_type = pg_col_type,
    .col_int = pg_col_int,
    .col_double = pg_col_double,
    .col_text = pg_col_text,
    .col_bytes = pg_col_bytes,
    .errmsg = pg_errmsg,
    .watch_start = pg_watch_start,
    .watch_stop = pg_watch_stop,
    .notify = pg_notify,
};
