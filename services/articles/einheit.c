/* einheit.c — the Einheit (unit) resource, declared: list, read, create. Units are referenced by
 * articles and batches, so they are never deleted or renamed through the API. */
#include "articles.h"

#include "rest.h"

#include <stdio.h>

static const lm_field_spec fields[] = {
    {.name = "kuerzel", .type = LM_F_STRING, .required = true, .min_len = 1, .max_len = 16},
    {.name = "bezeichnung", .type = LM_F_STRING, .required = true, .min_len = 1, .max_len = 100},
    {.name = "id", .type = LM_F_INTEGER, .read_only = true},
    {.name = "erstellt_am", .type = LM_F_STRING, .read_only = true},
};
#define N_FIELDS (sizeof fields / sizeof fields[0])

static const lm_rest_col columns[] = {
    {.name = "id"},
    {.name = "kuerzel", .flags = LM_COL_WRITE},
    {.name = "bezeichnung", .flags = LM_COL_WRITE},
    {.name = "erstellt_am", .flags = LM_COL_CREATED},
};
static const char SQL_ALL[] =
    "SELECT id, kuerzel, bezeichnung, erstellt_am FROM einheit ORDER BY id";

static lm_rest_resource einheit = {
    .event_type = "einheit",
    .noun = "unit",
    .table = "einheit",
    .columns = columns,
    .n_columns = 4,
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
    int rc = lm_rest_rows_body(op, st, einheit.cols, einheit.n_cols, &op->total);
    op->limit = op->total > 0 ? op->total : 1;
    return rc;
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
    lm_rest_create(req, &einheit, svc_of(ctx)->store);
}

void einheit_routes(lm_router *r, articles_svc *svc)
{
    lm_rest_declare(&einheit);
    lm_router_add(r, "GET", "/api/v1/units", handle_list, svc);
    lm_router_add(r, "POST", "/api/v1/unit/create", handle_create, svc);
    lm_router_add(r, "GET", "/api/v1/unit/{id}", handle_get, svc);
}
