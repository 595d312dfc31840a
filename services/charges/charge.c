/* charge.c — the Charge (batch) resource of the seed's Chargen-API, declared (lm_rest_declare;
 * the service keeps its rules in before_write): create, read, list
 * (filters, FEFO order, pagination: declared), replace, patch, delete. The rules of a batch ledger:
 * positive finite quantity, a real article and unit (refcheck.c), MHD not before the
 * production date and defaulted from the article's shelf life, unique charge_nummer
 * (generated from a yearly number series when not given), a known status set with allowed
 * transitions, server-set timestamps, optimistic concurrency and idempotent creates. */
#include "charges.h"

#include "problem.h"
#include "timefmt.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char *const statuses[] = {"aktiv", "gesperrt", "verbraucht", "abgelaufen", NULL};

static const lm_field_spec fields[] = {
    {.name = "artikel_id",
     .type = LM_F_INTEGER,
     .required = true,
     .has_min = true,
     .min = 1,
     .has_max = true,
     .max = (double)CHARGES_REF_ID_MAX},
    {.name = "menge",
     .type = LM_F_NUMBER,
     .required = true,
     .has_min = true,
     .min = 0,
     .exclusive_min = true,
     .has_max = true,
     .max = 1e12},
    {.name = "einheit_id",
     .type = LM_F_INTEGER,
     .required = true,
     .has_min = true,
     .min = 1,
     .has_max = true,
     .max = (double)CHARGES_REF_ID_MAX},
    {.name = "herstellungsdatum", .type = LM_F_DATE_OR_DATETIME, .required = true},
    {.name = "mindesthaltbarkeitsdatum", .type = LM_F_DATE_OR_DATETIME, .nullable = true},
    {.name = "charge_nummer", .type = LM_F_STRING, .min_len = 1, .max_len = 64},
    {.name = "status", .type = LM_F_STRING, .one_of = statuses},
    {.name = "bemerkungen", .type = LM_F_STRING, .nullable = true, .max_len = 2000},
    {.name = "id", .type = LM_F_INTEGER, .read_only = true},
    {.name = "erstellt_am", .type = LM_F_STRING, .read_only = true},
    {.name = "geaendert_am", .type = LM_F_STRING, .read_only = true},
};
#define N_FIELDS (sizeof fields / sizeof fields[0])

/* The table, declared (lm_rest_declare): the two *_ms columns are derived from the dates by
 * before_write and not part of the representation; the MHD's orders lists FEFO (expiry
 * first, the default) and takes the date range filters. */
static const lm_rest_col columns[] = {
    {.name = "id"},
    {.name = "artikel_id", .flags = LM_COL_WRITE | LM_COL_FILTER},
    {.name = "menge", .flags = LM_COL_WRITE},
    {.name = "einheit_id", .flags = LM_COL_WRITE},
    {.name = "herstellungsdatum", .flags = LM_COL_WRITE},
    {.name = "herstellungsdatum_ms", .flags = LM_COL_WRITE | LM_COL_HIDDEN},
    {.name = "mindesthaltbarkeitsdatum", .flags = LM_COL_WRITE},
    {.name = "mindesthaltbarkeitsdatum_ms",
     .flags = LM_COL_WRITE | LM_COL_HIDDEN | LM_COL_SORT | LM_COL_RANGE,
     .sort = "fefo",
     .below = "mhd_before",
     .above = "mhd_after"},
    {.name = "charge_nummer", .flags = LM_COL_WRITE | LM_COL_FILTER},
    {.name = "status", .flags = LM_COL_WRITE | LM_COL_FILTER, .def = "aktiv"},
    {.name = "bemerkungen", .flags = LM_COL_WRITE},
    {.name = "erstellt_am", .flags = LM_COL_CREATED},
    {.name = "geaendert_am", .flags = LM_COL_CHANGED},
};
/* The yearly series (nummernkreis): naechste is the next number to hand out; hand_max is at
 * least every number of the series' own form (CH-YYYY-NNNNNN) that was typed in by hand, so
 * a generated number above it is free without looking (one statement, one round trip per
 * create), and one at or below it is checked against the batches. */
static const char SQL_NEXT_NUMBER[] =
    "INSERT INTO nummernkreis (jahr, naechste) VALUES (?1, 2) ON CONFLICT(jahr)"
    " DO UPDATE SET naechste = nummernkreis.naechste + 1 RETURNING naechste - 1, hand_max";
static const char SQL_NUMBER_USED[] = "SELECT 1 FROM charge WHERE charge_nummer = ?";
static const char SQL_HAND_TYPED[] =
    "INSERT INTO nummernkreis (jahr, naechste, hand_max) VALUES (?1, 1, ?2) ON CONFLICT(jahr)"
    " DO UPDATE SET hand_max = CASE WHEN nummernkreis.hand_max < excluded.hand_max"
    " THEN excluded.hand_max ELSE nummernkreis.hand_max END";
#define NUMBER_FORMAT "CH-%04d-%06lld"

/* The domain part of an op: the batch being written and its references; for a pipelined
 * create (lm_db_write_pipelined) whose number the series gives, the series' statement sent
 * in the first step and read in the middle one. */
typedef struct charge_op {
    charges_svc *svc;
    charges_refs refs;
    bool pipelined;   /* written in steps: the number is sent for, then taken */
    lm_db_st *number; /* the series' upsert sent, its answer not taken yet */
    int year;         /* of that series */
    bool generated;   /* op->input's charge_nummer came from the series (undone on a rerun) */
} charge_op;

/* Allowed status changes; a status may always stay as it is. */
static bool transition_ok(const char *from, const char *to)
{
    if (strcmp(from, to) == 0) return true;
    if (!strcmp(from, "aktiv")) return strcmp(to, "aktiv") != 0;
    if (!strcmp(from, "gesperrt")) return strcmp(to, "gesperrt") != 0;
    if (!strcmp(from, "abgelaufen")) return !strcmp(to, "verbraucht");
    return false; /* verbraucht is final */
}

/* Representable times: the API writes years 0001 to 9999 (RFC 3339), so a date that would
 * normalise (to UTC, or by adding a shelf life) outside them is refused rather than stored
 * with text that no longer matches its instant. */
#define MIN_TIME_MS (-62135596800000LL) /* 0001-01-01T00:00:00Z */
#define MAX_TIME_MS 253402300799999LL   /* 9999-12-31T23:59:59.999Z */

static bool time_in_range(int64_t ms)
{
    return ms >= MIN_TIME_MS && ms <= MAX_TIME_MS;
}

/* Rules across fields: dates in the representable range, MHD not before production. */
static void check_dates(json_t *in, lm_verrs *errs)
{
    const char *hd = lm_json_str(in, "herstellungsdatum");
    const char *mhd = lm_json_str(in, "mindesthaltbarkeitsdatum");
    int64_t hd_ms, mhd_ms;
    bool hd_ok = hd && lm_timefmt_parse(hd, true, &hd_ms);
    bool mhd_ok = mhd && lm_timefmt_parse(mhd, true, &mhd_ms);
    if (hd_ok && !time_in_range(hd_ms))
        lm_verrs_add(errs, "herstellungsdatum", "must be from 0001-01-01 to 9999-12-31 in UTC");
    if (mhd_ok && !time_in_range(mhd_ms))
        lm_verrs_add(errs, "mindesthaltbarkeitsdatum",
                     "must be from 0001-01-01 to 9999-12-31 in UTC");
    if (!errs->n && hd_ok && mhd_ok && mhd_ms < hd_ms)
        lm_verrs_add(errs, "mindesthaltbarkeitsdatum", "must not be before herstellungsdatum");
}

static int before_write(lm_db_conn *c, lm_rest_op *op, const json_t *cur, json_t *next);

static lm_rest_resource charge = {
    .event_type = "charge",
    .noun = "batch",
    .table = "charge",
    .columns = columns,
    .n_columns = sizeof columns / sizeof columns[0],
    .before_write = before_write,
    .default_sort = "fefo",
    .has_version = true,
    .fields = fields,
    .n_fields = N_FIELDS,
    .check = check_dates,
    .unique_field = "charge_nummer",
    .location = "/api/v1/charge/",
};

/* Normalises a date field of obj to RFC 3339 UTC text; returns its epoch ms, or *absent. */
static int64_t normalise_date(json_t *obj, const char *key, bool *absent)
{
    const char *s = json_string_value(json_object_get(obj, key));
    int64_t ms = 0;
    *absent = !s;
    if (!s) return 0;
    lm_timefmt_parse(s, true, &ms); /* validated before */
    char out[LM_TIME_STRLEN];
    lm_timefmt_format(ms, out);
    json_object_set_new(obj, key, json_string(out));
    return ms;
}

/* The series' upsert for year, sent (lm_db_send_rows): its row is the next number. */
static int number_send(lm_db_conn *c, int year, lm_db_st **st)
{
    *st = lm_db_stmt(c, SQL_NEXT_NUMBER);
    if (!*st) return LM_DB_EIO;
    lm_db_bind_int(*st, 1, year);
    return lm_db_send_rows(*st) == 0 ? 0 : LM_DB_EIO;
}

/* The number number_send asked for (st), as text: CH-2026-000123. At or below hand_max one
 * of the series' form typed in by hand may have taken it: then it is looked up (a wait; in
 * a pipelined batch that makes the batch run job by job) and the series asked again. */
static int number_take(lm_db_conn *c, lm_db_st *st, int year, char *out, size_t outlen)
{
    for (int attempt = 0; attempt < 1000; attempt++) {
        if (lm_db_step(st) != LM_DB_ROW) {
            lm_db_reset(st);
            return LM_DB_EIO;
        }
        long long n = lm_db_col_int(st, 0), hand_max = lm_db_col_int(st, 1);
        lm_db_reset(st);
        snprintf(out, outlen, NUMBER_FORMAT, year, n);
        if (n > hand_max) return 0;
        lm_db_st *used = lm_db_stmt(c, SQL_NUMBER_USED);
        if (!used) return LM_DB_EIO;
        lm_db_bind_text(used, 1, out, -1);
        int rc = lm_db_step(used);
        lm_db_reset(used);
        if (rc == LM_DB_DONE) return 0;
        if (rc != LM_DB_ROW) return LM_DB_EIO;
        if ((rc = number_send(c, year, &st))) return rc;
    }
    return LM_DB_EIO;
}

static int this_year(void)
{
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    return tm.tm_year + 1900;
}

/* A number written by hand that has the series' own form (the text NUMBER_FORMAT would make
 * of its year and number) raises that year's hand_max, so the series checks before handing
 * it out. Sent without waiting: it changes no answer of this job. */
static int note_hand_typed(lm_db_conn *c, const char *nr)
{
    int year = 0;
    long long n = 0;
    size_t len = nr ? strlen(nr) : 0;
    if (len < 14 || len > 26 || strncmp(nr, "CH-", 3) != 0 || nr[7] != '-') return 0;
    for (size_t i = 3; i < len; i++) {
        if (i == 7) continue;
        if (nr[i] < '0' || nr[i] > '9') return 0;
        if (i < 7)
            year = year * 10 + (nr[i] - '0');
        else
            n = n * 10 + (nr[i] - '0');
    }
    char canon[48];
    snprintf(canon, sizeof canon, NUMBER_FORMAT, year, n);
    if (strcmp(canon, nr) != 0) return 0; /* 0-padded otherwise: never generated */
    lm_db_st *st = lm_db_stmt(c, SQL_HAND_TYPED);
    if (!st) return LM_DB_EIO;
    lm_db_bind_int(st, 1, year);
    lm_db_bind_int(st, 2, n);
    return lm_db_send(st) == 0 ? 0 : LM_DB_EIO;
}

/* ---- jobs ------------------------------------------------------------------------------ */

/* The rules of a write, in its transaction: the status transition and the kept number (an
 * update), dates normalised to UTC text with their epoch ms, the references recorded in the
 * replica, a number from this year's series when none is given (a create). */
static int before_write(lm_db_conn *c, lm_rest_op *op, const json_t *cur, json_t *next)
{
    charge_op *co = op->domain;
    if (cur) {
        const char *from = json_string_value(json_object_get(cur, "status"));
        const char *to = json_string_value(json_object_get(next, "status"));
        if (!to) to = "aktiv";
        if (!transition_ok(from, to)) {
            lm_verrs_add(&op->errs, "status", "cannot change from %s to %s", from, to);
            op->status = 422;
            return 422;
        }
        if (!json_object_get(next, "charge_nummer")) /* PUT without a number keeps the old one */
            json_object_set(next, "charge_nummer", json_object_get(cur, "charge_nummer"));
    }
    bool no_hd, no_mhd;
    int64_t hd = normalise_date(next, "herstellungsdatum", &no_hd);
    int64_t mhd = normalise_date(next, "mindesthaltbarkeitsdatum", &no_mhd);
    if (cur && !no_mhd && mhd < hd) {
        lm_verrs_add(&op->errs, "mindesthaltbarkeitsdatum", "must not be before herstellungsdatum");
        op->status = 422;
        return 422;
    }
    json_object_set_new(next, "herstellungsdatum_ms", json_integer(hd));
    json_object_set_new(next, "mindesthaltbarkeitsdatum_ms",
                        no_mhd ? json_null() : json_integer(mhd));
    int rc = charges_refs_remember(c, &co->refs);
    if (rc) return rc;
    const char *nr = json_string_value(json_object_get(next, "charge_nummer"));
    if (!nr) { /* a create without a number: the series' next */
        co->year = this_year();
        lm_db_st *st;
        if ((rc = number_send(c, co->year, &st))) return rc;
        if (co->pipelined) {
            co->number = st; /* taken in the middle step */
            return 0;
        }
        char gen[48];
        if ((rc = number_take(c, st, co->year, gen, sizeof gen))) return rc;
        json_object_set_new(next, "charge_nummer", json_string(gen));
    } else if (!cur || !lm_json_str(cur, "charge_nummer") ||
               strcmp(nr, lm_json_str(cur, "charge_nummer")) != 0) {
        if ((rc = note_hand_typed(c, nr))) return rc;
    }
    return 0;
}

/* A pipelined create (lm_db_write_pipelined): its rules and, with the number given, its
 * INSERT; else the series' upsert, then (charge_then) the number and the INSERT. */
static int charge_send(lm_db_conn *c, void *arg)
{
    lm_rest_op *op = arg;
    charge_op *co = op->domain;
    if (co->generated) { /* run again: the number of the first run was rolled back with it */
        json_object_del(op->input, "charge_nummer");
        co->generated = false;
    }
    co->number = NULL;
    int rc = before_write(c, op, NULL, op->input);
    if (rc || co->number) return rc;
    return lm_rest_create_send_insert(c, op);
}

static int charge_then(lm_db_conn *c, void *arg)
{
    lm_rest_op *op = arg;
    charge_op *co = op->domain;
    if (!co->number) return 0;
    char nr[48];
    int rc = number_take(c, co->number, co->year, nr, sizeof nr);
    co->number = NULL;
    if (rc) return rc;
    json_object_set_new(op->input, "charge_nummer", json_string(nr));
    co->generated = true;
    return lm_rest_create_send_insert(c, op);
}

/* ---- handlers -------------------------------------------------------------------------- */

static charges_svc *svc_of(void *ctx)
{
    return ctx;
}

static void op_done(int rc, void *arg)
{
    lm_rest_op *op = arg;
    charge_op *co = op->domain;
    if (co && rc == 0 && op->status >= 200 && op->status < 300) /* committed */
        charges_refs_committed(co->svc, op->req, &co->refs);
    free(op->domain);
    op->domain = NULL;
    lm_rest_op_done(rc, op);
}

static void handle_get(lm_req *req, void *ctx)
{
    lm_rest_get(req, &charge, svc_of(ctx)->store);
}

static void handle_list(lm_req *req, void *ctx)
{
    lm_rest_list_all(req, &charge, svc_of(ctx)->store);
}

/* After the references were checked: refuse, or write. */
static void refs_checked(charges_refs *refs, void *ctx)
{
    lm_rest_op *op = ctx;
    if (refs->deadline_spent) {
        lm_rest_fail(op, 504, "urn:lotmesh:problem:deadline",
                     "the request's deadline (X-Request-Timeout) was spent; nothing was written");
        op_done(0, op);
        return;
    }
    if (refs->unavailable) {
        lm_rest_fail(op, 503, "urn:lotmesh:problem:dependency-unavailable",
                     "the articles service is unreachable and the article or unit is not known "
                     "locally; nothing was written");
        op_done(0, op);
        return;
    }
    if (!refs->article_found)
        lm_verrs_add(&op->errs, "artikel_id", "no article with id %lld", refs->artikel_id);
    else if (refs->artikel_id && strcmp(refs->article_status, "aktiv") != 0 && !op->id)
        lm_verrs_add(&op->errs, "artikel_id", "article %lld is %s: no new batches",
                     refs->artikel_id, refs->article_status);
    if (!refs->unit_found)
        lm_verrs_add(&op->errs, "einheit_id", "no unit with id %lld", refs->einheit_id);
    if (op->errs.n) {
        op->status = 422;
        op_done(0, op);
        return;
    }
    /* create and PUT (a whole representation): default the MHD from the article's shelf
     * life; a PATCH changes only what it names */
    json_t *mhd = json_object_get(op->input, "mindesthaltbarkeitsdatum");
    int64_t hd;
    if (!op->partial && (!mhd || json_is_null(mhd)) && refs->shelf_life_days >= 0 &&
        lm_timefmt_parse(lm_json_str(op->input, "herstellungsdatum"), true, &hd)) {
        int64_t days = refs->shelf_life_days;
        if (days > (MAX_TIME_MS - hd) / 86400000LL) {
            lm_verrs_add(&op->errs, "mindesthaltbarkeitsdatum",
                         "herstellungsdatum plus the article's shelf life (%lld days) is after "
                         "9999-12-31; give mindesthaltbarkeitsdatum",
                         (long long)days);
            op->status = 422;
            op_done(0, op);
            return;
        }
        char out[LM_TIME_STRLEN];
        lm_timefmt_format(hd + days * 86400000LL, out);
        json_object_set_new(op->input, "mindesthaltbarkeitsdatum", json_string(out));
    }
    charge_op *co = op->domain;
    if (!op->id && !op->has_idem) { /* a create: pipelined (a replay's lookup would wait) */
        co->pipelined = true;
        bool given = json_object_get(op->input, "charge_nummer") != NULL;
        lm_rest_write_pipelined(op, charge_send, given ? NULL : charge_then, lm_rest_create_finish,
                                op_done);
    } else {
        lm_rest_write(op, op->id ? lm_rest_declared_update_job : lm_rest_create_job, op_done);
    }
}

static void start_refcheck(lm_rest_op *op)
{
    charge_op *co = op->domain;
    co->refs.artikel_id = json_integer_value(json_object_get(op->input, "artikel_id"));
    co->refs.einheit_id = json_integer_value(json_object_get(op->input, "einheit_id"));
    charges_check_refs(co->svc, op->req, &co->refs, refs_checked, op);
}

static void idem_probed(int rc, void *arg)
{
    lm_rest_op *op = arg;
    if (rc != 0 || op->status) { /* replayed, key reused, or the database failed */
        op_done(rc, op);
        return;
    }
    start_refcheck(op);
}

static void handle_create(lm_req *req, void *ctx)
{
    lm_rest_op *op = lm_rest_op_new(req, svc_of(ctx)->store);
    if (!op) return;
    op->resource = &charge;
    if (!(op->input = lm_rest_body(req, &charge, false, 0))) {
        lm_rest_op_free(op);
        return;
    }
    const char *status = lm_json_str(op->input, "status");
    if (status && strcmp(status, "aktiv") != 0 && strcmp(status, "gesperrt") != 0) {
        lm_verrs errs = {0};
        lm_verrs_add(&errs, "status", "a new batch must be aktiv or gesperrt");
        lm_rest_op_free(op);
        lm_verrs_send(req, &errs, 422, NULL);
        return;
    }
    charge_op *co = lm_xcalloc(1, sizeof *co);
    co->svc = svc_of(ctx);
    op->domain = co;
    op->create = lm_rest_declared_insert;
    if (op->has_idem)
        lm_rest_read(op, lm_rest_idem_probe_job, idem_probed);
    else
        start_refcheck(op);
}

static void handle_update(lm_req *req, void *ctx, bool partial)
{
    lm_rest_op *op = lm_rest_update_op(req, &charge, svc_of(ctx)->store, partial);
    if (!op) return;
    charge_op *co = lm_xcalloc(1, sizeof *co);
    co->svc = svc_of(ctx);
    op->domain = co;
    start_refcheck(op); /* ids absent from a PATCH are 0: not checked */
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
    lm_rest_delete(req, &charge, svc_of(ctx)->store);
}

void charge_routes(lm_router *r, charges_svc *svc)
{
    lm_rest_declare(&charge);
    lm_router_add(r, "GET", "/api/v1/charges", handle_list, svc);
    lm_router_add(r, "POST", "/api/v1/charge/create", handle_create, svc);
    lm_router_add(r, "GET", "/api/v1/charge/{id}", handle_get, svc);
    lm_router_add(r, "PUT", "/api/v1/charge/{id}", handle_put, svc);
    lm_router_add(r, "PATCH", "/api/v1/charge/{id}", handle_patch, svc);
    lm_router_add(r, "DELETE", "/api/v1/charge/{id}", handle_delete, svc);
}
