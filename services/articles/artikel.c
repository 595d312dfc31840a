/* artikel.c — the Artikel resource, declared (lm_rest_declare): create, read, list (status
 * filter, q search, pagination), replace, patch, delete; optimistic concurrency through
 * ETag/If-Match, idempotent creates. What is the service's own: the field rules and that the
 * unit exists (before_write). */
#include "articles.h"

#include "problem.h"
#include "rest.h"

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

/* The table, declared: lm_rest derives its SQL, binding, rendering and list filters. */
static const lm_rest_col columns[] = {
    {.name = "id"},
    {.name = "artikelnummer", .flags = LM_COL_WRITE | LM_COL_SEARCH},
    {.name = "bezeichnung", .flags = LM_COL_WRITE | LM_COL_SEARCH},
    {.name = "einheit_id", .flags = LM_COL_WRITE},
    {.name = "beschreibung", .flags = LM_COL_WRITE},
    {.name = "mindesthaltbarkeit_tage", .flags = LM_COL_WRITE},
    {.name = "status", .flags = LM_COL_WRITE | LM_COL_FILTER, .def = "aktiv"},
    {.name = "erstellt_am", .flags = LM_COL_CREATED},
    {.name = "geaendert_am", .flags = LM_COL_CHANGED},
};

static const char SQL_UNIT_EXISTS[] = "SELECT 1 FROM einheit WHERE id = ?";

static articles_svc *svc_of(void *ctx)
{
    return ctx;
}

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

/* The rule of an article: its unit exists (create and update). */
static int before_write(lm_db_conn *c, lm_rest_op *op, const json_t *cur, json_t *next)
{
    (void)cur;
    long long unit = json_integer_value(json_object_get(next, "einheit_id"));
    int rc;
    if (unit_exists(c, unit, &rc)) return 0;
    if (rc) return rc;
    lm_verrs_add(&op->errs, "einheit_id", "no unit with id %lld", unit);
    op->status = 422;
    return 422;
}

static lm_rest_resource artikel = {
    .event_type = "artikel",
    .noun = "article",
    .table = "artikel",
    .columns = columns,
    .n_columns = sizeof columns / sizeof columns[0],
    .has_version = true,
    .fields = fields,
    .n_fields = N_FIELDS,
    .unique_field = "artikelnummer",
    .location = "/api/v1/article/",
    .before_write = before_write,
};

/* ---- handlers -------------------------------------------------------------------------- */

static void handle_get(lm_req *req, void *ctx)
{
    lm_rest_get(req, &artikel, svc_of(ctx)->store);
}

static void handle_list(lm_req *req, void *ctx)
{
    lm_rest_list_all(req, &artikel, svc_of(ctx)->store);
}

static void handle_create(lm_req *req, void *ctx)
{
    lm_rest_create(req, &artikel, svc_of(ctx)->store);
}

static void handle_put(lm_req *req, void *ctx)
{
    lm_rest_replace(req, &artikel, svc_of(ctx)->store, false);
}

static void handle_patch(lm_req *req, void *ctx)
{
    lm_rest_replace(req, &artikel, svc_of(ctx)->store, true);
}

/* An article with live batches (learnt from charge.* events, charges_seen) is not deleted:
 * 409 naming their number. Eventually consistent by design (DESIGN 3.6): a batch created a
 * moment ago may not be known yet. */
static int delete_job(lm_db_conn *c, void *arg)
{
    lm_rest_op *op = arg;
    /* (a missing article is the delete job's 404, whatever batches still name it) */
    lm_db_st *st = lm_db_stmt(c, "SELECT count(*) FROM charge_seen WHERE artikel_id = ?1"
                                 " AND live = 1 AND EXISTS (SELECT 1 FROM artikel WHERE id = ?1)");
    if (!st) return LM_DB_EIO;
    lm_db_bind_int(st, 1, op->id);
    int rc = lm_db_step(st);
    long long live = rc == LM_DB_ROW ? lm_db_col_int(st, 0) : 0;
    lm_db_reset(st);
    if (rc != LM_DB_ROW) return LM_DB_EIO;
    if (live > 0)
        return lm_rest_fail(op, 409, NULL,
                            "article %lld has %lld live batch%s (status not verbraucht); it "
                            "cannot be deleted while they exist",
                            op->id, live, live == 1 ? "" : "es");
    return lm_rest_delete_job(c, op);
}

static void handle_delete(lm_req *req, void *ctx)
{
    lm_rest_op *op = lm_rest_item_op(req, &artikel, svc_of(ctx)->store);
    if (op) lm_rest_write(op, delete_job, lm_rest_op_done);
}

/* charge.* events (consumer.h): which article each batch belongs to and whether it is
 * live. 0, LM_DB_EIO, or 422 for an event whose data lacks what it needs. */
int artikel_apply_charge_event(lm_db_conn *c, const lm_envelope *ev, void *ctx)
{
    (void)ctx;
    if (strcmp(ev->type, "charge.deleted") == 0) {
        lm_db_st *st = lm_db_stmt(c, "DELETE FROM charge_seen WHERE id = ?");
        if (!st) return LM_DB_EIO;
        lm_db_bind_int(st, 1, ev->subject_id);
        int rc = lm_db_step(st);
        lm_db_reset(st);
        return rc == LM_DB_DONE ? 0 : LM_DB_EIO;
    }
    if (strcmp(ev->type, "charge.created") != 0 && strcmp(ev->type, "charge.updated") != 0)
        return 0; /* a type this service does not keep anything of */
    json_error_t je;
    json_t *d = json_loads(ev->data, 0, &je);
    json_t *art = json_object_get(d, "artikel_id");
    json_t *status = json_object_get(d, "status");
    if (!json_is_integer(art) || !json_is_string(status)) {
        json_decref(d);
        return 422;
    }
    lm_db_st *st = lm_db_stmt(c, "INSERT INTO charge_seen (id, artikel_id, live) VALUES (?, ?, ?)"
                                 " ON CONFLICT(id) DO UPDATE SET artikel_id = excluded.artikel_id,"
                                 " live = excluded.live");
    int rc = LM_DB_EIO;
    if (st) {
        lm_db_bind_int(st, 1, ev->subject_id);
        lm_db_bind_int(st, 2, json_integer_value(art));
        lm_db_bind_int(st, 3, strcmp(json_string_value(status), "verbraucht") != 0);
        rc = lm_db_step(st) == LM_DB_DONE ? 0 : LM_DB_EIO;
        lm_db_reset(st);
    }
    json_decref(d);
    return rc;
}

void artikel_routes(lm_router *r, articles_svc *svc)
{
    lm_rest_declare(&artikel);
    lm_router_add(r, "GET", "/api/v1/articles", handle_list, svc);
    lm_router_add(r, "POST", "/api/v1/article/create", handle_create, svc);
    lm_router_add(r, "GET", "/api/v1/article/{id}", handle_get, svc);
    lm_router_add(r, "PUT", "/api/v1/article/{id}", handle_put, svc);
    lm_router_add(r, "PATCH", "/api/v1/article/{id}", handle_patch, svc);
    lm_router_add(r, "DELETE", "/api/v1/article/{id}", handle_delete, svc);
}
