/* rest.h — the request flows every resource service shares (lm_rest).
 *
 * A handler validates on the loop, then hands an lm_rest_op to a database job; the job
 * fills in the outcome (status + JSON body + ETag version + Location, or a problem), and
 * lm_rest_op_done — the job's done callback, back on the loop — sends it and frees the op.
 * lm_rest_create_job wraps a create with Idempotency-Key handling in the same transaction.
 *
 * Lists are plain JSON arrays (the seed's List[Charge]); the total goes in X-Total-Count and
 * neighbouring pages in Link (RFC 8288).
 *
 * Reads go through the store's response cache (lm_cache) when it has one: a GET by id is
 * keyed by the resource's canonical path, a list by its path and query; a hit is answered on
 * the loop. Every write op invalidates in lm_rest_op_done, after its commit and before its
 * response, so a client that saw a write acknowledged never reads what it replaced (a write
 * answered 4xx/5xx rolled back and invalidates nothing). Rows are
 * written as JSON straight from the statement (lm_rest_row_write), not through jansson trees.
 * A GET whose If-None-Match names the current ETag is answered 304.
 *
 * Ownership: the op owns input (a JSON reference), body, detail, errs, cache_key and its
 * reference to a cached value. Threading: op
 * creation and lm_rest_op_done on the request's loop; the job function on a database thread,
 * where it may only touch the op and the connection. */
#ifndef LM_REST_H
#define LM_REST_H

#include <jansson.h>
#include <stdbool.h>

#include "buf.h"
#include "cache.h"
#include "db.h"
#include "idempotency.h"
#include "json.h"
#include "store.h"

typedef struct lm_rest_op lm_rest_op;
typedef int (*lm_rest_fn)(lm_db_conn *c, lm_rest_op *op);

typedef enum { LM_REST_CREATED, LM_REST_UPDATED, LM_REST_DELETED } lm_rest_change;

/* Declared resources: a column table from which lm_rest_declare derives the SQL (SELECT by
 * id, list with the filters given and its count, INSERT … RETURNING, UPDATE … RETURNING with
 * the version check, DELETE … RETURNING version), the binding from validated JSON and the
 * JSON rendering; the service keeps only its rules (check, before_write, after_write). */
enum {
    LM_COL_WRITE = 1,   /* bound from the request body (its lm_field_spec of the same name) */
    LM_COL_CREATED = 2, /* set to the time of the insert (RFC 3339 text) */
    LM_COL_CHANGED = 4, /* set to the time of each update */
    LM_COL_FILTER = 8,  /* lists: ?name=value, equality, validated by the field's spec */
    LM_COL_SEARCH = 16, /* lists: ?q= finds it case-insensitively (Unicode: casefold) */
    LM_COL_HIDDEN = 32, /* not in the representation (with LM_COL_WRITE: a derived column the
                         * before_write hook puts into the row, e.g. a date's epoch ms) */
    LM_COL_SORT = 64,   /* lists: ?sort=<sort> orders by it (ascending, NULLs last, then id) */
    LM_COL_RANGE = 128, /* lists: a date's epoch ms; ?<below>=D and ?<above>=D (RFC 3339 date
                         * or date-time) find rows with the column before / after D */
};
typedef struct lm_rest_col {
    const char *name;
    unsigned flags;
    const char *def;           /* LM_COL_WRITE: text bound when the body has none (or null) */
    const char *sort;          /* LM_COL_SORT: the ?sort= value naming this order */
    const char *below, *above; /* LM_COL_RANGE: the query parameters */
} lm_rest_col;
#define LM_REST_MAX_COLS 24

/* A resource table as the generic flows see it. The SELECT returns cols in order, then the
 * version (when has_version); cols[0] is the id. */
typedef struct lm_rest_resource {
    const char *noun;       /* "article", "batch": in messages */
    const char *sql_by_id;  /* "SELECT <cols>, version FROM t WHERE id = ?" (a literal) */
    const char *sql_delete; /* "DELETE FROM t WHERE id = ? RETURNING version", or NULL */
    const char *const *cols;
    int n_cols;
    bool has_version;            /* ETag/If-Match */
    const lm_field_spec *fields; /* request bodies */
    size_t n_fields;
    /* Optional rules across fields, run when every field is valid by itself. */
    void (*check)(json_t *body, lm_verrs *errs);
    const char *unique_field; /* the UNIQUE column a 409 names, or NULL */
    const char *location;     /* "/api/v1/article/" — Location of a created one is this + id */
    /* Optional: runs inside the write's transaction right after the row changed (op->id set;
     * op->body is the new representation for created/updated) — e.g. an outbox row that must
     * commit with it. Non-zero rolls the write back and is its outcome. */
    int (*after_write)(lm_db_conn *c, lm_rest_op *op, lm_rest_change what);
    /* Optional: the event type's first word ("artikel"): every committed write then appends
     * its event ("artikel.created|updated|deleted") to the outbox in the same transaction,
     * before after_write (lm_rest_outbox_append). */
    const char *event_type;
    /* Declared: the table and its columns (the first "id"); lm_rest_declare fills in the
     * rest. */
    const char *table;
    const lm_rest_col *columns;
    int n_columns;
    /* Optional, declared: in the write job before the INSERT/UPDATE, with the current row
     * (NULL for a create) and the row about to be written (may be amended): reference
     * checks, status transitions, numbering. Non-zero refuses the write (set op->errs or
     * lm_rest_fail) or is LM_DB_EIO. */
    int (*before_write)(lm_db_conn *c, lm_rest_op *op, const json_t *cur, json_t *next);
    /* Declared: the order of a list without ?sort= — a LM_COL_SORT column's sort, or NULL
     * (by id). With any LM_COL_SORT column, ?sort= takes "id" or a column's sort. */
    const char *default_sort;
    /* derived by lm_rest_declare */
    const char *sql_insert, *sql_update;
    lm_db_sql_variants *sql_list, *sql_count;          /* sql_list: by id */
    lm_db_sql_variants *sql_list_by[LM_REST_MAX_COLS]; /* by column i (LM_COL_SORT), or NULL */
    const char *col_names[LM_REST_MAX_COLS];
} lm_rest_resource;

/* Derives r's SQL and column names from r->table and r->columns (main thread, before the
 * routes are served; once per resource). */
void lm_rest_declare(lm_rest_resource *r);
/* Whole handlers of a declared resource: POST create (Idempotency-Key honoured), PUT/PATCH
 * (partial) of /…/{id}, and the list: filters from the LM_COL_FILTER columns (values checked
 * by the field of the same name: one_of, integer range, string length), date ranges of the
 * LM_COL_RANGE ones, q over the LM_COL_SEARCH ones (1 to 100 characters), limit (1..500,
 * default 50) and offset, ordered by ?sort= (default_sort, or id), total in X-Total-Count;
 * one snapshot for the count and the page. The same SQL on both backends. */
void lm_rest_create(lm_req *req, const lm_rest_resource *r, lm_store *store);
void lm_rest_replace(lm_req *req, const lm_rest_resource *r, lm_store *store, bool partial);
void lm_rest_list_all(lm_req *req, const lm_rest_resource *r, lm_store *store);
/* The pieces of those handlers, for services whose handlers do more on the loop first
 * (charges asks articles): op->create for lm_rest_create_job, and the PUT/PATCH job. */
int lm_rest_declared_insert(lm_db_conn *c, lm_rest_op *op);
int lm_rest_declared_update_job(lm_db_conn *c, void *op);

struct lm_rest_op {
    lm_req *req;
    lm_store *store;
    lm_cache *cache; /* the store's, or NULL */
    /* a cacheable read: its key (owned), flags, and the epoch before the read */
    char *cache_key;
    size_t cache_klen;
    unsigned cache_flags;
    uint64_t cache_epoch;
    const lm_cache_val *cached; /* a hit being sent (a reference), or NULL */
    /* the second level (CACHE_URL=redis://): the generation at the miss (UINT64_MAX: do not
     * store there), whether the body came from it, and the read to run on a miss */
    uint64_t l2_gen, l2_mark; /* the generation at the miss; lm_store_l2_ready's mark */
    bool l2_hit;
    lm_cache_redis_write l2_write;      /* a write's mark in Redis (lm_cache_redis_begin) */
    lm_db_fn l2_fn, l2_then, l2_finish; /* the write to run once marked (in steps) */
    lm_db_done l2_done;
    int done_rc; /* a write's outcome while its invalidation reaches Redis */
    /* input, set on the loop */
    json_t *input;  /* validated body, or NULL */
    long long id;   /* path id, or 0 */
    bool partial;   /* PATCH */
    char *if_match; /* copy of If-Match (owned), or NULL */
    bool has_idem;
    char idem_key[LM_IDEM_KEY_MAX + 1];
    char fingerprint[17];
    lm_rest_fn create;                /* for lm_rest_create_job */
    lm_db_st *sent;                   /* lm_rest_create_send's INSERT, for its finish */
    const lm_rest_resource *resource; /* for the generic jobs */
    void *domain;                     /* the service's own input */
    char traceparent[56];             /* the request's span (W3C), for its events */
    /* outcome, set by the job */
    int status;
    char *body;         /* JSON text (owned) */
    long long version;  /* > 0: sent as ETag */
    char location[160]; /* sent as Location when not empty */
    long long total;    /* lists: X-Total-Count when >= 0 */
    long long limit, offset;
    const char *problem_type;
    char *detail; /* owned */
    lm_verrs errs;
};

/* New op for req on store; for a POST sets has_idem/idem_key/fingerprint from the request
 * (other methods ignore Idempotency-Key). Returns NULL after sending 400 when a POST's
 * Idempotency-Key header is malformed. */
lm_rest_op *lm_rest_op_new(lm_req *req, lm_store *store);
void lm_rest_op_free(lm_rest_op *op);
/* In a job: record a problem outcome. Returns status, so a job can `return lm_rest_fail(…)`
 * to roll back. */
int lm_rest_fail(lm_rest_op *op, int status, const char *type, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* In a job: 412 (and returns it) unless If-Match is absent or names current_version. */
int lm_rest_check_version(lm_rest_op *op, long long current_version);
/* lm_db_done for every op: invalidates the cache after a write, stores a cacheable read's
 * result, sends the outcome, frees the op. */
void lm_rest_op_done(int rc, void *arg);
/* Runs fn for op on the store's reader pool / group-committing writer; done ends in
 * lm_rest_op_done. With the Redis level, a write first marks itself there
 * (lm_cache_redis_begin; lm_rest_op_done gives the mark back). */
void lm_rest_read(lm_rest_op *op, lm_db_fn fn, lm_db_done done);
void lm_rest_write(lm_rest_op *op, lm_db_fn fn, lm_db_done done);
/* A list read: answered from the cache (keyed by path and query; any write drops it) when
 * it can be, by fn (which sets body, total, limit, offset) otherwise. */
void lm_rest_list(lm_rest_op *op, lm_db_fn fn, lm_db_done done);
/* A write job: replays a stored result for a known Idempotency-Key, refuses a reused key
 * (422), otherwise runs op->create and remembers its successful result. */
int lm_rest_create_job(lm_db_conn *c, void *arg);
/* A declared create in two steps (lm_db_write_pipelined), for an op without Idempotency-Key
 * whose resource's before_write only sends (lm_db_send) for it: send runs before_write and
 * sends the INSERT … RETURNING; finish reads the row and appends the event. Together they do
 * what lm_rest_create_job does with op->create = lm_rest_declared_insert. */
int lm_rest_create_send(lm_db_conn *c, void *arg);
int lm_rest_create_finish(lm_db_conn *c, void *arg);
/* lm_rest_create_send without before_write: binds op->input and sends the INSERT, for a
 * service whose rules need a middle step first (charges' generated number). */
int lm_rest_create_send_insert(lm_db_conn *c, lm_rest_op *op);
/* lm_rest_write for a job in steps (lm_db_write_pipelined; then may be NULL). */
void lm_rest_write_pipelined(lm_rest_op *op, lm_db_fn send, lm_db_fn then, lm_db_fn last,
                             lm_db_done done);

/* ---- the transactional outbox (DESIGN 3.6) -------------------------------------------- */

/* The outbox, inbox and checkpoint tables every producing or consuming service adds in one
 * migration of its own (SQLite, PostgreSQL), then LM_OUTBOX_WATERMARK_MIGRATION. outbox.seq is
 * the event's sequence; event_meta's "published_through" is the relay's watermark
 * (lib/events/relay.h; published_at is no longer written) and "pruned_through" the highest
 * sequence retention removed. */
#define LM_OUTBOX_SCHEMA                                                                           \
    "CREATE TABLE outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, event_id TEXT NOT NULL"           \
    " UNIQUE, type TEXT NOT NULL, subject INTEGER NOT NULL, aggregateversion INTEGER NOT"          \
    " NULL, time TEXT NOT NULL, traceparent TEXT, data TEXT NOT NULL, published_at"                \
    " INTEGER);"                                                                                   \
    "CREATE INDEX outbox_unpublished ON outbox(seq) WHERE published_at IS NULL;"                   \
    "CREATE TABLE event_meta (k TEXT PRIMARY KEY, v INTEGER NOT NULL);"                            \
    "CREATE TABLE event_inbox (event_id TEXT PRIMARY KEY, applied_ms INTEGER NOT NULL);"           \
    "CREATE TABLE event_version (aggregate TEXT PRIMARY KEY, version INTEGER NOT NULL);"           \
    "CREATE TABLE event_checkpoint (stream TEXT PRIMARY KEY, seq INTEGER NOT NULL);"               \
    "CREATE TABLE event_dead (id INTEGER PRIMARY KEY AUTOINCREMENT, stream TEXT NOT NULL,"         \
    " event_id TEXT, seq INTEGER, reason TEXT NOT NULL, body TEXT NOT NULL, at_ms INTEGER"         \
    " NOT NULL)"
#define LM_OUTBOX_SCHEMA_PG                                                                        \
    "CREATE TABLE outbox (seq bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,"                \
    " event_id text NOT NULL UNIQUE, type text NOT NULL, subject bigint NOT NULL,"                 \
    " aggregateversion bigint NOT NULL, time text NOT NULL, traceparent text, data text NOT"       \
    " NULL, published_at bigint);"                                                                 \
    "CREATE INDEX outbox_unpublished ON outbox(seq) WHERE published_at IS NULL;"                   \
    "CREATE TABLE event_meta (k text PRIMARY KEY, v bigint NOT NULL);"                             \
    "CREATE TABLE event_inbox (event_id text PRIMARY KEY, applied_ms bigint NOT NULL);"            \
    "CREATE TABLE event_version (aggregate text PRIMARY KEY, version bigint NOT NULL);"            \
    "CREATE TABLE event_checkpoint (stream text PRIMARY KEY, seq bigint NOT NULL);"                \
    "CREATE TABLE event_dead (id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,"             \
    " stream text NOT NULL, event_id text, seq bigint, reason text NOT NULL, body text NOT"        \
    " NULL, at_ms bigint NOT NULL)"

/* The outbox's second migration (both backends): the relay keeps a watermark
 * (event_meta "published_through") instead of marking each row, so the index of unpublished
 * rows goes; the watermark starts below the first row not marked yet. */
#define LM_OUTBOX_WATERMARK_MIGRATION                                                              \
    "INSERT INTO event_meta (k, v) SELECT 'published_through', coalesce((SELECT min(seq) - 1"      \
    " FROM outbox WHERE published_at IS NULL), (SELECT max(seq) FROM outbox), 0) WHERE true"       \
    " ON CONFLICT(k) DO NOTHING;"                                                                  \
    "DROP INDEX outbox_unpublished"

/* In a write job: appends the event of type (a full type, "charge.updated") about aggregate
 * subject at version to the outbox; data: the JSON text of the event's data; traceparent may
 * be "" or NULL. On PostgreSQL it first takes the outbox's transaction-scoped advisory lock,
 * so sequences commit in order even with several instances writing one database. 0 or
 * LM_DB_EIO. */
int lm_rest_outbox_append(lm_db_conn *c, const char *type, long long subject, long long version,
                          const char *data, const char *traceparent);

/* ---- generic flows over an lm_rest_resource ------------------------------------------- */

/* In a job: 0 and a new *row (and *version), 404, or LM_DB_EIO. */
int lm_rest_load(lm_db_conn *c, const lm_rest_resource *r, long long id, json_t **row,
                 long long *version);
/* In a job: the 404 outcome for op->id. */
int lm_rest_not_found(lm_rest_op *op);
/* Jobs for op->resource: delete op->id (If-Match checked); replay of an Idempotency-Key
 * before a create does other work (sets op->status when answered). */
int lm_rest_delete_job(lm_db_conn *c, void *op);
int lm_rest_idem_probe_job(lm_db_conn *c, void *op);
/* In a create job: steps the prepared INSERT st, an "INSERT … RETURNING <cols>, version" (the
 * columns of sql_by_id, cols[0] the id); on success the returned row is the outcome (201,
 * ETag, Location) without reading it again, a unique violation a 409 naming unique_field. */
int lm_rest_insert(lm_db_conn *c, lm_rest_op *op, lm_db_st *st, const json_t *body);
/* In an update job: steps the prepared "UPDATE … WHERE id = ? AND version = ? RETURNING
 * <cols>, version"; on success the returned row is the outcome (200, new ETag), a unique
 * violation a 409 naming unique_field of body. */
int lm_rest_update(lm_db_conn *c, lm_rest_op *op, lm_db_st *st, const json_t *body);
/* The 409 outcome for a unique violation of body's unique_field; returns 409. */
int lm_rest_conflict(lm_rest_op *op, const json_t *body);
/* In an update job: loads op->id (404) and checks If-Match (412). 0 and *cur, or a code. */
int lm_rest_load_current(lm_db_conn *c, lm_rest_op *op, json_t **cur, long long *version);
/* An op for /…/{id} of r (op->id, op->resource set): query parameters refused, the id
 * parsed; NULL after the problem (400) was sent. */
lm_rest_op *lm_rest_item_op(lm_req *req, const lm_rest_resource *r, lm_store *store);
/* An item op for PUT (partial false) or PATCH with its validated body as op->input; NULL
 * after the problem was sent. */
lm_rest_op *lm_rest_update_op(lm_req *req, const lm_rest_resource *r, lm_store *store,
                              bool partial);
/* Whole handlers: GET (cached) and DELETE of /…/{id} on store. */
void lm_rest_get(lm_req *req, const lm_rest_resource *r, lm_store *store);
void lm_rest_delete(lm_req *req, const lm_rest_resource *r, lm_store *store);
/* In a job: op->id's row as op's body (status, ETag version); 404 when it is gone. */
int lm_rest_row_body(lm_db_conn *c, lm_rest_op *op, int status);
/* In a job: every row st yields as op's body, a JSON array (status 200); *n_rows (may be
 * NULL) their number. */
int lm_rest_rows_body(lm_rest_op *op, lm_db_st *st, const char *const *cols, int n,
                      long long *n_rows);
/* In a PATCH job: true when every member of the patch equals cur's (nothing to write). */
bool lm_rest_patch_is_noop(const json_t *cur, const json_t *patch);
/* A request body for a create (path_id 0) or an update of path_id (partial: PATCH): parsed
 * and validated against r's fields; a GET representation sent back is accepted (server-set
 * id/erstellt_am/geaendert_am are dropped, an id naming another resource is an error). NULL
 * after the problem was sent. */
json_t *lm_rest_body(lm_req *req, const lm_rest_resource *r, bool partial, long long path_id);

/* Path parameter name as a positive 64-bit id; sends 400 and returns false otherwise. */
bool lm_rest_id(lm_req *req, const char *name, long long *out);
/* Refuses query parameters not in allowed (NULL-terminated): 400 naming them. */
bool lm_rest_query_allowed(lm_req *req, const char *const *allowed);
/* Reads limit (1..max, default def) and offset (>= 0) into op; sends 400 on bad values. */
bool lm_rest_page(lm_req *req, lm_rest_op *op, long long def, long long max);
/* Reads an integer query parameter; absent: *present = false. Adds an error when bad. */
bool lm_rest_query_int(lm_req *req, const char *key, long long min, long long max, long long *out,
                       bool *present, lm_verrs *errs);

/* Binds a JSON value to parameter idx: absent/null -> NULL, string, integer, real, bool. */
void lm_rest_bind(lm_db_st *st, int idx, const json_t *v);
/* Builds an object from the first n columns of a row, named by cols. */
json_t *lm_rest_row(lm_db_st *st, const char *const *cols, int n);
/* Writes the same object as JSON text to b (reals in their shortest round-trip form). */
void lm_rest_row_write(lm_buf *b, lm_db_st *st, const char *const *cols, int n);
/* Reads column i of a row as JSON: NULL -> null, integer, real, text. */
json_t *lm_rest_column(lm_db_st *st, int i);

#endif
