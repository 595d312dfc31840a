/* artikel.c — the Artikel resource: create, read, list (filter + pagination), replace,
 * patch, delete; optimistic concurrency through ETag/If-Match, idempotent creates. Every
 * database step is one job on the service's store (reads pooled, writes group-committed). */
#include "articles.h"

#include "problem.h"
#include "rest.h"
#include "timefmt.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const statuses[] = {"aktiv", "inaktiv", "gesperrt", NULL};

static const lm_field_spec fields[] = {
    {.name = "artikelnummer", .type = LM_F_STRING, .required = true, .min_len = 1, .max_len = 64},
    {.name = "bezeichnung", .type = LM_F_STRING, .required = true, .min_len = 1, .max_len = 200},
    {.name = "einheit_id",
     .type = LM_F_INTEGER,
     .required = true,
     .has_min = true,
     .min = 1,
     .has_max = true,
     .max = 9.2e18},
    {.name = "beschreibung", .type = LM_F_STRING, .nullable = true, .max_len = 2000},
    {.name = "mindesthaltbarkeit_tage",
     .type = LM_F_INTEGER,
     .nullable = true,
     .has_min = true,
     .min = 0,
     .has_max = true,
     .max = 36500},
    {.name = "status", .type = LM_F_STRING, .one_of = statuses},
    {.name = "id", .type = LM_F_INTEGER, .read_only = true},
    {.name = "erstellt_am", .type = LM_F_STRING, .read_only = true},
    {.name = "geaendert_am", .type = LM_F_STRING, .read_only = true},
};
#define N_FIELDS (sizeof fields / sizeof fields[0])

static const char *const cols[] = {"id",         "artikelnummer", "bezeichnung",
                                   "einheit_id", "beschreibung",  "mindesthaltbarkeit_tage",
                                   "status",     "erstellt_am",   "geaendert_am"};
#define N_COLS 9
#define COLS                                                                                       \
    "id, artikelnummer, bezeichnung, einheit_id, beschreibung, mindesthaltbarkeit_tage,"           \
    " status, erstellt_am, geaendert_am, version"
#define SELECT_COLS "SELECT " COLS " FROM artikel "

static const char SQL_BY_ID[] = SELECT_COLS "WHERE id = ?";
/* Lists: the WHERE holds only the filters given (lm_db_sql_variants). */
static const char *const list_conds[] = {"status = :status",
                                         "(instr(casefold(artikelnummer), casefold(:q)) > 0 OR"
                                         " instr(casefold(bezeichnung), casefold(:q)) > 0)"};
static lm_db_sql_variants sql_list = {.head = SELECT_COLS,
                                      .conds = list_conds,
                                      .n_conds = 2,
                                      .tail = " ORDER BY id LIMIT :limit OFFSET :offset"};
static lm_db_sql_variants sql_count = {
    .head = "SELECT count(*) FROM artikel", .conds = list_conds, .n_conds = 2, .tail = ""};
static const char SQL_UNIT_EXISTS[] = "SELECT 1 FROM einheit WHERE id = ?";
static const char SQL_INSERT[] =
    "INSERT INTO artikel (artikelnummer, bezeichnung, einheit_id, beschreibung,"
    " mindesthaltbarkeit_tage, status, erstellt_am) VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING " COLS;
static const char SQL_UPDATE[] =
    "UPDATE artikel SET artikelnummer = ?, bezeichnung = ?, einheit_id = ?, beschreibung = ?,"
    " mindesthaltbarkeit_tage = ?, status = ?, geaendert_am = ?, version = version + 1"
    " WHERE id = ? AND version = ? RETURNING " COLS;
static const char SQL_DELETE[] = "DELETE FROM artikel WHERE id = ? RETURNING version";

static articles_svc *svc_of(void *ctx)
{
    return ctx;
}

static const lm_rest_resource artikel = {
    .noun = "article",
    .sql_by_id = SQL_BY_ID,
    .sql_delete = SQL_DELETE,
    .cols = cols,
    .n_cols = N_COLS,
    .has_version = true,
    .fields = fields,
    .n_fields = N_FIELDS,
    .unique_field = "artikelnummer",
    .location = "/api/v1/article/",
};

static bool unit_exists(lm_db_conn *c, long long id, int *rc)
{
    lm_db_st *st = lm_db_stmt(c, SQL_UNIT_EXISTS);
    *rc = 0;
    if (!st) {
        *rc = LM_DB_EIO;
        return false;
    }
    lm_db_bind_int(st, 1, id);
    int r = lm_db_step(st);
    if (r != LM_DB_ROW && r != LM_DB_DONE) *rc = LM_DB_EIO;
    lm_db_reset(st);
    return r == LM_DB_ROW;
}

/* Binds the six writable columns from obj in table order. */
static void bind_fields(lm_db_st *st, const json_t *obj)
{
    lm_rest_bind(st, 1, json_object_get(obj, "artikelnummer"));
    lm_rest_bind(st, 2, json_object_get(obj, "bezeichnung"));
    lm_rest_bind(st, 3, json_object_get(obj, "einheit_id"));
    lm_rest_bind(st, 4, json_object_get(obj, "beschreibung"));
    lm_rest_bind(st, 5, json_object_get(obj, "mindesthaltbarkeit_tage"));
    const json_t *status = json_object_get(obj, "status");
    if (status && !json_is_null(status))
        lm_rest_bind(st, 6, status);
    else
        lm_db_bind_text(st, 6, "aktiv", -1);
}

static int check_unit(lm_db_conn *c, lm_rest_op *op, const json_t *obj)
{
    long long unit = json_integer_value(json_object_get(obj, "einheit_id"));
    int rc;
    if (unit_exists(c, unit, &rc)) return 0;
    if (rc) return rc;
    lm_verrs_add(&op->errs, "einheit_id", "no unit with id %lld", unit);
    op->status = 422;
    return 422;
}

/* ---- jobs ------------------------------------------------------------------------------ */

typedef struct list_filter {
    char *status; /* owned or NULL */
    char *q;
} list_filter;

static void bind_filter(lm_db_st *st, const list_filter *f)
{
    if (f->status) lm_db_bind_text(st, lm_db_param_index(st, ":status"), f->status, -1);
    if (f->q) lm_db_bind_text(st, lm_db_param_index(st, ":q"), f->q, -1);
}

/* The total and the page from one snapshot (list_job). */
static int list_query(lm_db_conn *c, void *arg)
{
    lm_rest_op *op = arg;
    list_filter *f = op->domain;
    unsigned mask = (f->status ? 1u : 0) | (f->q ? 2u : 0);
    lm_db_st *st = lm_db_stmt(c, lm_db_sql_variant(&sql_count, mask));
    if (!st) return LM_DB_EIO;
    bind_filter(st, f);
    if (lm_db_step(st) != LM_DB_ROW) return LM_DB_EIO;
    op->total = lm_db_col_int(st, 0);
    lm_db_reset(st);
    st = lm_db_stmt(c, lm_db_sql_variant(&sql_list, mask));
    if (!st) return LM_DB_EIO;
    bind_filter(st, f);
    lm_db_bind_int(st, lm_db_param_index(st, ":limit"), op->limit);
    lm_db_bind_int(st, lm_db_param_index(st, ":offset"), op->offset);
    return lm_rest_rows_body(op, st, cols, N_COLS, NULL);
}

static int list_job(lm_db_conn *c, void *arg)
{
    return lm_db_snapshot(c, list_query, arg);
}

static int insert(lm_db_conn *c, lm_rest_op *op)
{
    int rc = check_unit(c, op, op->input);
    if (rc) return rc;
    lm_db_st *st = lm_db_stmt(c, SQL_INSERT);
    if (!st) return LM_DB_EIO;
    char now[LM_TIME_STRLEN];
    lm_timefmt_format(lm_timefmt_now_ms(), now);
    bind_fields(st, op->input);
    lm_db_bind_text(st, 7, now, -1);
    return lm_rest_insert(c, op, st, op->input);
}

static int update_job(lm_db_conn *c, void *arg)
{
    lm_rest_op *op = arg;
    json_t *cur;
    long long version;
    int rc = lm_rest_load_current(c, op, &cur, &version);
    if (rc) return rc;
    json_t *next;
    if (op->partial && lm_rest_patch_is_noop(cur, op->input)) { /* nothing changes */
        json_decref(cur);
        return lm_rest_row_body(c, op, 200);
    }
    if (op->partial) {
        next = cur;
        json_object_update(next, op->input);
    } else {
        json_decref(cur);
        next = json_deep_copy(op->input);
    }
    if ((rc = check_unit(c, op, next))) {
        json_decref(next);
        return rc;
    }
    lm_db_st *st = lm_db_stmt(c, SQL_UPDATE);
    if (!st) {
        json_decref(next);
        return LM_DB_EIO;
    }
    char now[LM_TIME_STRLEN];
    lm_timefmt_format(lm_timefmt_now_ms(), now);
    bind_fields(st, next);
    lm_db_bind_text(st, 7, now, -1);
    lm_db_bind_int(st, 8, op->id);
    lm_db_bind_int(st, 9, version);
    rc = lm_rest_update(c, op, st, next);
    json_decref(next);
    return rc;
}

/* ---- handlers -------------------------------------------------------------------------- */

static void handle_get(lm_req *req, void *ctx)
{
    lm_rest_get(req, &artikel, svc_of(ctx)->store);
}

static void free_filter_done(int rc, void *arg)
{
    lm_rest_op *op = arg;
    list_filter *f = op->domain;
    free(f->status);
    free(f->q);
    free(f);
    lm_rest_op_done(rc, arg);
}

static void handle_list(lm_req *req, void *ctx)
{
    static const char *const allowed[] = {"status", "q", "limit", "offset", NULL};
    if (!lm_rest_query_allowed(req, allowed)) return;
    lm_rest_op *op = lm_rest_op_new(req, svc_of(ctx)->store);
    if (!op) return;
    if (!lm_rest_page(req, op, 50, 500)) {
        lm_rest_op_free(op);
        return;
    }
    const char *status = lm_req_query(req, "status"), *q = lm_req_query(req, "q");
    lm_verrs errs = {0};
    if (status) {
        bool ok = false;
        for (const char *const *s = statuses; *s; s++)
            ok |= strcmp(*s, status) == 0;
        if (!ok) lm_verrs_add(&errs, "status", "must be one of: aktiv, inaktiv, gesperrt");
    }
    if (q && (lm_json_utf8_length(q) > 100 || !*q))
        lm_verrs_add(&errs, "q", "must have 1 to 100 characters");
    if (errs.n) {
        lm_rest_op_free(op);
        lm_verrs_send(req, &errs, 400, "invalid query parameters");
        return;
    }
    list_filter *f = lm_xcalloc(1, sizeof *f);
    f->status = status ? lm_xstrdup(status) : NULL;
    f->q = q ? lm_xstrdup(q) : NULL;
    op->domain = f;
    lm_rest_list(op, list_job, free_filter_done);
}

static void handle_create(lm_req *req, void *ctx)
{
    lm_rest_op *op = lm_rest_op_new(req, svc_of(ctx)->store);
    if (!op) return;
    op->resource = &artikel;
    if (!(op->input = lm_rest_body(req, &artikel, false, 0))) {
        lm_rest_op_free(op);
        return;
    }
    op->create = insert;
    lm_rest_write(op, lm_rest_create_job, lm_rest_op_done);
}

static void handle_update(lm_req *req, void *ctx, bool partial)
{
    lm_rest_op *op = lm_rest_update_op(req, &artikel, svc_of(ctx)->store, partial);
    if (!op) return;
    lm_rest_write(op, update_job, lm_rest_op_done);
}

static void handle_put(lm_req *req, void *ctx)
{
    handle_update(req, ctx, false);
}
static void handle_patch(lm_req *req, void *ctx)
{
    handle_update(req, ctx, true);
}

static void handle_delete(lm_req *req, void *ctx)
{
    lm_rest_delete(req, &artikel, svc_of(ctx)->store);
}

void artikel_routes(lm_router *r, articles_svc *svc)
{
    lm_router_add(r, "GET", "/api/v1/articles", handle_list, svc);
    lm_router_add(r, "POST", "/api/v1/article/create", handle_create, svc);
    lm_router_add(r, "GET", "/api/v1/article/{id}", handle_get, svc);
    lm_router_add(r, "PUT", "/api/v1/article/{id}", handle_put, svc);
    lm_router_add(r, "PATCH", "/api/v1/article/{id}", handle_patch, svc);
    lm_router_add(r, "DELETE", "/api/v1/article/{id}", handle_delete, svc);
}
