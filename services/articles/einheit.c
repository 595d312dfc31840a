/* einheit.c — the Einheit (unit) resource: list, read, create. Units are referenced by
 * articles and batches, so they are never deleted or renamed through the API. */
#include "articles.h"

#include "rest.h"
#include "timefmt.h"

#include <stdio.h>

static const lm_field_spec fields[] = {
    {.name = "kuerzel", .type = LM_F_STRING, .required = true, .min_len = 1, .max_len = 16},
    {.name = "bezeichnung", .type = LM_F_STRING, .required = true, .min_len = 1, .max_len = 100},
    {.name = "id", .type = LM_F_INTEGER, .read_only = true},
    {.name = "erstellt_am", .type = LM_F_STRING, .read_only = true},
};
#define N_FIELDS (sizeof fields / sizeof fields[0])

static const char *const cols[] = {"id", "kuerzel", "bezeichnung", "erstellt_am"};
static const char SQL_BY_ID[] =
    "SELECT id, kuerzel, bezeichnung, erstellt_am FROM einheit WHERE id = ?";
static const char SQL_ALL[] =
    "SELECT id, kuerzel, bezeichnung, erstellt_am FROM einheit ORDER BY id";
static const char SQL_INSERT[] =
    "INSERT INTO einheit (kuerzel, bezeichnung, erstellt_am)"
    " VALUES (?, ?, ?) RETURNING id, kuerzel, bezeichnung, erstellt_am";

static const lm_rest_resource einheit = {
    .noun = "unit",
    .sql_by_id = SQL_BY_ID,
    .cols = cols,
    .n_cols = 4,
    .has_version = false, /* units are never changed through the API */
    .fields = fields,
    .n_fields = N_FIELDS,
    .unique_field = "kuerzel",
    .location = "/api/v1/unit/",
};

static int list_job(lm_db_conn *c, void *arg)
{
    lm_rest_op *op = arg;
    lm_db_st *st = lm_db_stmt(c, SQL_ALL);
    if (!st) return LM_DB_EIO;
    int rc = lm_rest_rows_body(op, st, cols, 4, &op->total);
    op->limit = op->total > 0 ? op->total : 1;
    return rc;
}

static int insert(lm_db_conn *c, lm_rest_op *op)
{
    lm_db_st *st = lm_db_stmt(c, SQL_INSERT);
    if (!st) return LM_DB_EIO;
    char now[LM_TIME_STRLEN];
    lm_timefmt_format(lm_timefmt_now_ms(), now);
    lm_rest_bind(st, 1, json_object_get(op->input, "kuerzel"));
    lm_rest_bind(st, 2, json_object_get(op->input, "bezeichnung"));
    lm_db_bind_text(st, 3, now, -1);
    return lm_rest_insert(c, op, st, op->input);
}

static articles_svc *svc_of(void *ctx)
{
    return ctx;
}

static void handle_list(lm_req *req, void *ctx)
{
    static const char *const allowed[] = {NULL};
    lm_rest_op *op;
    if (!lm_rest_query_allowed(req, allowed) || !(op = lm_rest_op_new(req, svc_of(ctx)->store)))
        return;
    lm_rest_list(op, list_job, lm_rest_op_done);
}

static void handle_get(lm_req *req, void *ctx)
{
    lm_rest_get(req, &einheit, svc_of(ctx)->store);
}

static void handle_create(lm_req *req, void *ctx)
{
    lm_rest_op *op = lm_rest_op_new(req, svc_of(ctx)->store);
    if (!op) return;
    json_t *in = lm_rest_body(req, &einheit, false, 0);
    if (!in) {
        lm_rest_op_free(op);
        return;
    }
    op->input = in;
    op->resource = &einheit;
    op->create = insert;
    lm_rest_write(op, lm_rest_create_job, lm_rest_op_done);
}

void einheit_routes(lm_router *r, articles_svc *svc)
{
    lm_router_add(r, "GET", "/api/v1/units", handle_list, svc);
    lm_router_add(r, "POST", "/api/v1/unit/create", handle_create, svc);
    lm_router_add(r, "GET", "/api/v1/unit/{id}", handle_get, svc);
}
