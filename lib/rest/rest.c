/* rest.c — shared resource-request flows. See rest.h. */
#include "rest.h"

#include "parse.h"
#include "problem.h"
#include "precond.h"
#include "timefmt.h"
#include "trace.h"

#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

lm_rest_op *lm_rest_op_new(lm_req *req, lm_store *store)
{
    lm_rest_op *op = lm_xcalloc(1, sizeof *op);
    op->req = req;
    op->store = store;
    op->cache = lm_store_cache(store);
    op->total = -1;
    op->l2_gen = UINT64_MAX;
    op->if_match = lm_precond_if_match_copy(req);
    if (req->method_id != LM_METHOD_GET) lm_trace_format(&req->trace, op->traceparent);
    /* Idempotency-Key means something only for a create (POST); other methods ignore it */
    if (req->method_id != LM_METHOD_POST) return op;
    switch (lm_idem_key(req, op->idem_key)) {
    case LM_IDEM_BAD:
        free(op->if_match);
        free(op);
        lm_resp_problem(req, 400, "Idempotency-Key must be 1 to 255 printable ASCII characters");
        return NULL;
    case LM_IDEM_OK:
        op->has_idem = true;
        lm_idem_fingerprint(req, op->fingerprint);
        break;
    case LM_IDEM_NONE:
        break;
    }
    return op;
}

void lm_rest_op_free(lm_rest_op *op)
{
    if (!op) return;
    json_decref(op->input);
    if (op->cached) lm_cache_release(op->cached);
    free(op->cache_key);
    free(op->if_match);
    free(op->body);
    free(op->detail);
    lm_verrs_free(&op->errs);
    free(op);
}

int lm_rest_fail(lm_rest_op *op, int status, const char *type, const char *fmt, ...)
{
    lm_buf d = LM_BUF_INIT;
    va_list ap;
    va_start(ap, fmt);
    lm_buf_vprintf(&d, fmt, ap);
    va_end(ap);
    free(op->detail);
    op->detail = lm_buf_steal(&d, NULL);
    op->status = status;
    op->problem_type = type;
    return status;
}

int lm_rest_check_version(lm_rest_op *op, long long current_version)
{
    if (!op->if_match || lm_precond_if_match_list_ok(op->if_match, current_version)) return 0;
    return lm_rest_fail(op, 412, NULL,
                        "If-Match does not match the current version (ETag \"%lld\")",
                        current_version);
}

static void append_query_escaped(lm_buf *b, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch <= ' ' || ch >= 0x7f || strchr("&=#%<>+\"", ch)) {
            char esc[3] = {'%', hex[ch >> 4], hex[ch & 15]};
            lm_buf_append(b, esc, 3);
        } else {
            lm_buf_append_char(b, (char)ch);
        }
    }
}

static void send_link(lm_req *req, const lm_rest_op *op)
{
    lm_buf link = LM_BUF_INIT;
    lm_buf base = LM_BUF_INIT;
    lm_buf_append(&base, req->path, req->path_len);
    lm_buf_append_char(&base, '?');
    /* keep the other query parameters as they came */
    for (size_t i = 0; i < req->query.n; i++) {
        const char *k = req->query.pairs[i].key;
        if (!strcmp(k, "limit") || !strcmp(k, "offset")) continue;
        const char *v = req->query.pairs[i].value;
        append_query_escaped(&base, k);
        lm_buf_append_char(&base, '=');
        append_query_escaped(&base, v);
        lm_buf_append_char(&base, '&');
    }
    const char *b = lm_buf_cstr(&base);
    if (op->offset + op->limit < op->total)
        lm_buf_printf(&link, "<%slimit=%lld&offset=%lld>; rel=\"next\"", b, op->limit,
                      op->offset + op->limit);
    if (op->offset > 0) {
        long long prev = op->offset - op->limit > 0 ? op->offset - op->limit : 0;
        lm_buf_printf(&link, "%s<%slimit=%lld&offset=%lld>; rel=\"prev\"", link.len ? ", " : "", b,
                      op->limit, prev);
    }
    if (link.len) lm_resp_header(req, "Link", lm_buf_cstr(&link));
    lm_buf_free(&link);
    lm_buf_free(&base);
}

static bool is_read(const lm_req *req)
{
    return lm_method_is_read(req->method_id);
}

/* The canonical cache key of resource r's item id ("/api/v1/charge/42"). */
static size_t item_key(const lm_rest_resource *r, long long id, char *out, size_t outlen)
{
    int n = snprintf(out, outlen, "%s%lld", r->location, id);
    return n > 0 && (size_t)n < outlen ? (size_t)n : 0;
}

/* After a write's commit (its done callback runs after it): nothing cached may outlive it. */
static void invalidate(lm_rest_op *op)
{
    char key[192];
    size_t klen = op->resource && op->id > 0 ? item_key(op->resource, op->id, key, sizeof key) : 0;
    lm_cache_invalidate(op->cache, klen ? key : NULL, klen);
}

static void send_ok(lm_rest_op *op, const char *body, size_t len, long long version)
{
    lm_req *req = op->req;
    if (version > 0) lm_precond_resp_etag(req, version);
    if (op->status == 200 && version > 0 && is_read(req) &&
        lm_precond_if_none_match_hit(req, version)) {
        lm_resp_send(req, 304, NULL, NULL, 0);
        return;
    }
    if (op->location[0]) lm_resp_header(req, "Location", op->location);
    if (op->total >= 0) {
        char n[32];
        snprintf(n, sizeof n, "%lld", op->total);
        lm_resp_header(req, "X-Total-Count", n);
        send_link(req, op);
    }
    if (op->status == 204)
        lm_resp_send(req, 204, NULL, NULL, 0);
    else
        lm_resp_send(req, op->status, "application/json", body, len);
}

static void finish(lm_rest_op *op, int rc);

/* The in-process caches, this process's and (through the shared counter) every other's. */
static void invalidate_local(lm_rest_op *op)
{
    lm_store_wrote(op->store);
    if (op->cache) invalidate(op);
}

/* The announcement of a missed invalidation (lm_store_l2_announce_job) committed or failed:
 * the write's own caches, then its response. A failed announcement (the database lost just
 * after the write's commit) leaves the other hosts to their listener, which flushes and stops
 * trusting Redis once it is back (LM_DB_NOTE_MISSED). */
static void after_l2_announce(int rc, void *arg)
{
    lm_rest_op *op = arg;
    (void)rc;
    invalidate_local(op);
    finish(op, op->done_rc);
}

/* The write's invalidation did not reach Redis: no instance may trust Redis before it was
 * fenced, so this one and those on its host stop at once, and the other hosts are told
 * through the database before the write is answered. */
static void l2_missed(lm_rest_op *op)
{
    lm_store_l2_lost(op->store);
    if (lm_store_l2_announces(op->store)) {
        lm_rest_write(op, lm_store_l2_announce_job, after_l2_announce);
        return;
    }
    invalidate_local(op);
    finish(op, op->done_rc);
}

static void l2_released(void *ud, bool ok)
{
    (void)ud; /* not given back: the lease ends the marks */
    (void)ok;
}

static void after_l2_invalidate(void *ud, bool ok)
{
    lm_rest_op *op = ud;
    if (!ok) {
        l2_missed(op);
        return;
    }
    invalidate_local(op);
    finish(op, op->done_rc);
}

void lm_rest_op_done(int rc, void *arg)
{
    lm_rest_op *op = arg;
    lm_req *req = op->req;
    /* a write that committed (failures roll back and change nothing): before anyone hears
     * of it, every cache is told. The shared level in Redis first (the response waits for
     * its answer; Redis down: at once, see cache_redis.h), the in-process ones after it: a
     * read that meanwhile fetched the old value from Redis into an in-process cache is
     * dropped by that invalidation, never left behind it. */
    lm_cache_redis *l2 = lm_store_l2(op->store);
    if (!is_read(req) && rc == 0 && op->status >= 200 && op->status < 300) {
        if (l2) {
            char key[192];
            size_t klen =
                op->resource && op->id > 0 ? item_key(op->resource, op->id, key, sizeof key) : 0;
            op->done_rc = rc;
            if (lm_cache_redis_invalidate(l2, lm_req_worker_index(req), klen ? key : NULL, klen,
                                          &op->l2_write, after_l2_invalidate, op) != 0)
                l2_missed(op);
            return;
        }
        invalidate_local(op);
    } else if (l2 && op->l2_write.begun) { /* nothing changed: give the write's marks back */
        char key[192];
        size_t klen = op->l2_write.item ? item_key(op->resource, op->id, key, sizeof key) : 0;
        lm_cache_redis_invalidate(l2, lm_req_worker_index(req), klen ? key : NULL, klen,
                                  &op->l2_write, l2_released, NULL);
    }
    finish(op, rc);
}

static void finish(lm_rest_op *op, int rc)
{
    lm_req *req = op->req;
    if (rc == LM_DB_EIO) {
        lm_resp_problem(req, 503, "the database is unavailable; nothing was written");
    } else if (op->errs.n) {
        lm_verrs_send(req, &op->errs, op->status ? op->status : 422, op->detail);
    } else if (op->status >= 400 || op->status == 0) {
        lm_problem p = {.status = op->status ? op->status : 500,
                        .type = op->problem_type,
                        .detail = op->detail ? op->detail : "the request could not be handled"};
        lm_resp_problem_full(req, &p);
    } else if (op->cached) {
        send_ok(op, op->cached->body, op->cached->len, op->cached->version);
    } else {
        size_t len = op->body ? strlen(op->body) : 4;
        if (op->cache_key && op->status == 200 && op->body) {
            lm_store_cache_sync(op->store); /* another process's write meanwhile: not stored */
            lm_cache_put(op->cache, op->cache_key, op->cache_klen, op->body, len, op->version,
                         op->total, op->cache_flags, op->cache_epoch);
            lm_cache_redis *l2 = lm_store_l2(op->store);
            if (l2 && !op->l2_hit && lm_store_l2_still(op->store, op->l2_mark))
                lm_cache_redis_put(l2, lm_req_worker_index(req), op->cache_key, op->cache_klen,
                                   op->body, len, op->version, op->total, op->cache_flags,
                                   op->l2_gen);
        }
        send_ok(op, op->body ? op->body : "null", len, op->version);
    }
    lm_rest_op_free(op);
}

void lm_rest_read(lm_rest_op *op, lm_db_fn fn, lm_db_done done)
{
    lm_db_read(lm_store_port(op->store, lm_req_worker_index(op->req)), fn, done, op);
}

/* The write marked in Redis (or not: Redis unusable, the write goes on without): now run. */
static void after_l2_begin(void *ud, bool ok)
{
    lm_rest_op *op = ud;
    if (!ok) op->l2_write.begun = false; /* not known to have happened: the lease ends it */
    lm_db_port *port = lm_store_port(op->store, lm_req_worker_index(op->req));
    if (op->l2_finish)
        lm_db_write_pipelined(port, op->l2_fn, op->l2_then, op->l2_finish, op->l2_done, op);
    else
        lm_db_write(port, op->l2_fn, op->l2_done, op);
}

/* lm_rest_write, the job in one step (last NULL) or in steps (lm_db_write_pipelined). */
static void write_job(lm_rest_op *op, lm_db_fn fn, lm_db_fn then, lm_db_fn last, lm_db_done done)
{
    int w = lm_req_worker_index(op->req);
    lm_cache_redis *l2 = lm_store_l2(op->store);
    /* before a write through the rest flows: marked in Redis (cache_redis.h), so that this
     * process dying between its commit and its invalidation leaves no older copy there */
    if (l2 && !op->l2_write.begun && fn != lm_store_l2_announce_job) {
        char key[192];
        size_t klen =
            op->resource && op->id > 0 ? item_key(op->resource, op->id, key, sizeof key) : 0;
        op->l2_fn = fn;
        op->l2_then = then;
        op->l2_finish = last;
        op->l2_done = done;
        if (lm_cache_redis_begin(l2, w, klen ? key : NULL, klen, &op->l2_write, after_l2_begin,
                                 op) == 0)
            return;
    }
    if (last)
        lm_db_write_pipelined(lm_store_port(op->store, w), fn, then, last, done, op);
    else
        lm_db_write(lm_store_port(op->store, w), fn, done, op);
}

void lm_rest_write(lm_rest_op *op, lm_db_fn fn, lm_db_done done)
{
    write_job(op, fn, NULL, NULL, done);
}

void lm_rest_write_pipelined(lm_rest_op *op, lm_db_fn send, lm_db_fn then, lm_db_fn last,
                             lm_db_done done)
{
    write_job(op, send, then, last, done);
}

/* The shared level answered: a hit is sent (and put in the process's cache by
 * lm_rest_op_done); a miss reads the database, remembering the generation for the put. */
static void on_l2(void *ud, const lm_cache_redis_hit *h)
{
    lm_rest_op *op = ud;
    if (h->hit) {
        op->body = lm_xstrndup(h->body, h->len);
        op->l2_hit = true;
        op->status = 200;
        op->version = h->version;
        op->total = h->total;
        op->l2_done(0, op);
        return;
    }
    op->l2_gen = h->gen;
    lm_rest_read(op, op->l2_fn, op->l2_done);
}

/* A cacheable read of key: a hit goes straight to done; a miss remembers the key and the
 * epoch before the read, so lm_rest_op_done may store the result. */
static void cached_read(lm_rest_op *op, const char *key, size_t klen, unsigned flags, lm_db_fn fn,
                        lm_db_done done)
{
    if (op->cache && klen) {
        lm_store_cache_sync(op->store);
        const lm_cache_val *v = lm_cache_get(op->cache, key, klen);
        if (v) {
            op->cached = v;
            op->status = 200;
            op->version = v->version;
            op->total = v->total;
            done(0, op);
            return;
        }
        op->cache_epoch = lm_cache_epoch(op->cache);
        op->cache_key = lm_xstrndup(key, klen);
        op->cache_klen = klen;
        op->cache_flags = flags;
        lm_cache_redis *l2 = lm_store_l2(op->store);
        int w = lm_req_worker_index(op->req);
        if (l2 && lm_store_l2_ready(op->store, w, &op->l2_mark)) {
            op->l2_fn = fn;
            op->l2_done = done;
            if (lm_cache_redis_get(l2, w, key, klen, on_l2, op) == 0) return;
        }
    }
    lm_rest_read(op, fn, done);
}

void lm_rest_list(lm_rest_op *op, lm_db_fn fn, lm_db_done done)
{
    lm_req *req = op->req;
    lm_buf key = LM_BUF_INIT;
    lm_buf_append(&key, req->path, req->path_len);
    lm_buf_append_char(&key, '?');
    lm_buf_append(&key, req->query_string, req->query_len);
    cached_read(op, key.data, key.len, LM_CACHE_ANY_WRITE, fn, done);
    lm_buf_free(&key);
}

int lm_rest_create_job(lm_db_conn *c, void *arg)
{
    lm_rest_op *op = arg;
    if (op->has_idem) { /* again inside the transaction: a concurrent twin may have won */
        int rc = lm_rest_idem_probe_job(c, op);
        if (rc) return rc;
        if (op->status) return op->status >= 400 ? op->status : 0; /* refused, or replayed */
    }
    int rc = op->create(c, op);
    if (rc != 0) return rc;
    if (op->has_idem && op->status < 400 &&
        lm_idem_store(c, op->idem_key, op->fingerprint, op->status,
                      op->location[0] ? op->location : NULL, op->body ? op->body : "null") != 0)
        return LM_DB_EIO;
    return 0;
}

bool lm_rest_id(lm_req *req, const char *name, long long *out)
{
    const char *s = lm_req_param(req, name);
    long long v;
    if (!lm_parse_int(s, &v) || v < 1) {
        lm_resp_problemf(req, 400, "%s must be a positive integer (got \"%.40s\")", name,
                         s ? s : "");
        return false;
    }
    *out = v;
    return true;
}

bool lm_rest_query_allowed(lm_req *req, const char *const *allowed)
{
    for (size_t i = 0; i < req->query.n; i++) {
        const char *k = req->query.pairs[i].key;
        bool ok = false;
        for (const char *const *a = allowed; *a && !ok; a++)
            ok = strcmp(*a, k) == 0;
        if (!ok) {
            lm_buf list = LM_BUF_INIT;
            for (const char *const *a = allowed; *a; a++)
                lm_buf_printf(&list, "%s%s", a == allowed ? "" : ", ", *a);
            lm_resp_problemf(req, 400, "unknown query parameter '%.64s'; known: %s", k,
                             lm_buf_cstr(&list));
            lm_buf_free(&list);
            return false;
        }
    }
    return true;
}

bool lm_rest_query_int(lm_req *req, const char *key, long long min, long long max, long long *out,
                       bool *present, lm_verrs *errs)
{
    const char *s = lm_req_query(req, key);
    if (present) *present = s != NULL;
    if (!s) return true;
    long long v;
    if (!lm_parse_int(s, &v) || v < min || v > max) {
        lm_verrs_add(errs, key, "must be an integer from %lld to %lld", min, max);
        return false;
    }
    *out = v;
    return true;
}

bool lm_rest_page(lm_req *req, lm_rest_op *op, long long def, long long max)
{
    lm_verrs errs = {0};
    op->limit = def;
    op->offset = 0;
    lm_rest_query_int(req, "limit", 1, max, &op->limit, NULL, &errs);
    lm_rest_query_int(req, "offset", 0, 1LL << 40, &op->offset, NULL, &errs);
    if (errs.n) {
        lm_verrs_send(req, &errs, 400, "invalid pagination parameters");
        return false;
    }
    return true;
}

json_t *lm_rest_column(lm_db_st *st, int i)
{
    switch (lm_db_col_type(st, i)) {
    case LM_DB_INT:
        return json_integer(lm_db_col_int(st, i));
    case LM_DB_REAL:
        return json_real(lm_db_col_double(st, i));
    case LM_DB_TEXT:
        return json_stringn(lm_db_col_text(st, i), lm_db_col_bytes(st, i));
    default:
        return json_null();
    }
}

void lm_rest_bind(lm_db_st *st, int idx, const json_t *v)
{
    if (!v || json_is_null(v))
        lm_db_bind_null(st, idx);
    else if (json_is_string(v))
        lm_db_bind_text(st, idx, json_string_value(v), (long)json_string_length(v));
    else if (json_is_integer(v))
        lm_db_bind_int(st, idx, json_integer_value(v));
    else if (json_is_real(v))
        lm_db_bind_double(st, idx, json_real_value(v));
    else if (json_is_boolean(v))
        lm_db_bind_int(st, idx, json_is_true(v));
    else
        lm_db_bind_null(st, idx);
}

json_t *lm_rest_row(lm_db_st *st, const char *const *cols, int n)
{
    json_t *o = json_object();
    for (int i = 0; i < n; i++)
        json_object_set_new(o, cols[i], lm_rest_column(st, i));
    return o;
}

/* The shortest text that reads back as d, always with a '.' or an exponent so that it stays
 * a real; non-finite values (never stored: the API refuses them) as null. */
static void append_real(lm_buf *b, double d)
{
    if (!isfinite(d)) {
        LM_BUF_APPEND_LIT(b, "null");
        return;
    }
    char tmp[40];
    int k = 0;
    for (int prec = 15; prec <= 17; prec++) {
        k = snprintf(tmp, sizeof tmp, "%.*g", prec, d);
        if (strtod(tmp, NULL) == d) break;
    }
    lm_buf_append(b, tmp, (size_t)k);
    if (!strpbrk(tmp, ".e")) LM_BUF_APPEND_LIT(b, ".0");
}

void lm_rest_row_write(lm_buf *b, lm_db_st *st, const char *const *cols, int n)
{
    lm_buf_append_char(b, '{');
    for (int i = 0; i < n; i++) {
        if (i) lm_buf_append_char(b, ',');
        lm_buf_append_char(b, '"');
        lm_buf_append_str(b, cols[i]);
        LM_BUF_APPEND_LIT(b, "\":");
        switch (lm_db_col_type(st, i)) {
        case LM_DB_INT: {
            long long v = lm_db_col_int(st, i);
            if (v < 0) {
                lm_buf_append_char(b, '-');
                lm_buf_append_u64(b, 0ULL - (unsigned long long)v);
            } else {
                lm_buf_append_u64(b, (unsigned long long)v);
            }
            break;
        }
        case LM_DB_REAL:
            append_real(b, lm_db_col_double(st, i));
            break;
        case LM_DB_TEXT:
            lm_buf_append_char(b, '"');
            lm_buf_append_json_escaped(b, lm_db_col_text(st, i), lm_db_col_bytes(st, i));
            lm_buf_append_char(b, '"');
            break;
        default:
            LM_BUF_APPEND_LIT(b, "null");
        }
    }
    lm_buf_append_char(b, '}');
}

int lm_rest_rows_body(lm_rest_op *op, lm_db_st *st, const char *const *cols, int n,
                      long long *n_rows)
{
    lm_buf b = LM_BUF_INIT;
    lm_buf_append_char(&b, '[');
    int rc, k = 0;
    while ((rc = lm_db_step(st)) == LM_DB_ROW) {
        if (k++) lm_buf_append_char(&b, ',');
        lm_rest_row_write(&b, st, cols, n);
    }
    lm_db_reset(st);
    lm_buf_append_char(&b, ']');
    if (rc != LM_DB_DONE) {
        lm_buf_free(&b);
        return LM_DB_EIO;
    }
    if (n_rows) *n_rows = k;
    free(op->body);
    op->body = lm_buf_steal(&b, NULL);
    op->status = 200;
    op->version = 0;
    return 0;
}

bool lm_rest_patch_is_noop(const json_t *cur, const json_t *patch)
{
    const char *k;
    const json_t *v;
    json_object_foreach((json_t *)patch, k, v)
    {
        if (!json_equal(json_object_get(cur, k), (json_t *)v)) return false;
    }
    return true;
}

/* ---- generic flows over an lm_rest_resource ------------------------------------------- */

int lm_rest_load(lm_db_conn *c, const lm_rest_resource *r, long long id, json_t **row,
                 long long *version)
{
    lm_db_st *st = lm_db_stmt(c, r->sql_by_id);
    if (!st) return LM_DB_EIO;
    lm_db_bind_int(st, 1, id);
    int rc = lm_db_step(st);
    if (rc != LM_DB_ROW) { /* ended on every path: a cached statement holds nothing */
        lm_db_reset(st);
        return rc == LM_DB_DONE ? 404 : LM_DB_EIO;
    }
    *row = lm_rest_row(st, r->cols, r->n_cols);
    *version = r->has_version ? lm_db_col_int(st, r->n_cols) : 0;
    lm_db_reset(st);
    return 0;
}

int lm_rest_not_found(lm_rest_op *op)
{
    return lm_rest_fail(op, 404, NULL, "no %s with id %lld", op->resource->noun, op->id);
}

int lm_rest_row_body(lm_db_conn *c, lm_rest_op *op, int status)
{
    const lm_rest_resource *r = op->resource;
    lm_db_st *st = lm_db_stmt(c, r->sql_by_id);
    if (!st) return LM_DB_EIO;
    lm_db_bind_int(st, 1, op->id);
    int rc = lm_db_step(st);
    if (rc != LM_DB_ROW) {
        lm_db_reset(st);
        return rc == LM_DB_DONE ? lm_rest_not_found(op) : LM_DB_EIO;
    }
    lm_buf b = LM_BUF_INIT;
    lm_rest_row_write(&b, st, r->cols, r->n_cols);
    op->version = r->has_version ? lm_db_col_int(st, r->n_cols) : 0;
    lm_db_reset(st);
    free(op->body);
    op->body = lm_buf_steal(&b, NULL);
    op->status = status;
    return 0;
}

static int get_job(lm_db_conn *c, void *arg)
{
    return lm_rest_row_body(c, arg, 200);
}

static int after_write(lm_db_conn *c, lm_rest_op *op, lm_rest_change what);

int lm_rest_delete_job(lm_db_conn *c, void *arg)
{
    /* one statement: delete and learn the version; a refused If-Match rolls it back */
    lm_rest_op *op = arg;
    lm_db_st *st = lm_db_stmt(c, op->resource->sql_delete);
    if (!st) return LM_DB_EIO;
    lm_db_bind_int(st, 1, op->id);
    int rc = lm_db_step(st);
    if (rc != LM_DB_ROW) {
        lm_db_reset(st);
        return rc == LM_DB_DONE ? lm_rest_not_found(op) : LM_DB_EIO;
    }
    long long version = lm_db_col_int(st, 0);
    lm_db_reset(st);
    if ((rc = lm_rest_check_version(op, version))) return rc;
    op->status = 204;
    op->version = version; /* for the event; a 204 carries no ETag */
    rc = after_write(c, op, LM_REST_DELETED);
    op->version = 0;
    return rc;
}

int lm_rest_idem_probe_job(lm_db_conn *c, void *arg)
{
    lm_rest_op *op = arg;
    lm_idem_hit hit;
    if (lm_idem_lookup(c, op->idem_key, op->fingerprint, &hit) != 0) return LM_DB_EIO;
    if (hit.status && hit.mismatch) {
        lm_rest_fail(op, 422, "urn:lotmesh:problem:idempotency-key-reused",
                     "this Idempotency-Key was used for a different request");
    } else if (hit.status) {
        op->status = hit.status;
        /* the first result was a create's: its representation is version 1 (lm_rest_insert) */
        if (hit.status == 201 && op->resource && op->resource->has_version) op->version = 1;
        op->body = hit.body;
        hit.body = NULL;
        if (hit.location) snprintf(op->location, sizeof op->location, "%s", hit.location);
    }
    lm_idem_hit_free(&hit);
    return 0;
}

lm_rest_op *lm_rest_item_op(lm_req *req, const lm_rest_resource *r, lm_store *store)
{
    static const char *const none[] = {NULL};
    long long id;
    lm_rest_op *op;
    if (!lm_rest_query_allowed(req, none) || !lm_rest_id(req, "id", &id) ||
        !(op = lm_rest_op_new(req, store)))
        return NULL;
    op->id = id;
    op->resource = r;
    return op;
}

lm_rest_op *lm_rest_update_op(lm_req *req, const lm_rest_resource *r, lm_store *store, bool partial)
{
    lm_rest_op *op = lm_rest_item_op(req, r, store);
    if (!op) return NULL;
    op->partial = partial;
    if (!(op->input = lm_rest_body(req, r, partial, op->id))) {
        lm_rest_op_free(op);
        return NULL;
    }
    return op;
}

void lm_rest_get(lm_req *req, const lm_rest_resource *r, lm_store *store)
{
    lm_rest_op *op = lm_rest_item_op(req, r, store);
    if (!op) return;
    char key[192];
    size_t klen = item_key(r, op->id, key, sizeof key);
    cached_read(op, key, klen, 0, get_job, lm_rest_op_done);
}

void lm_rest_delete(lm_req *req, const lm_rest_resource *r, lm_store *store)
{
    lm_rest_op *op = lm_rest_item_op(req, r, store);
    if (op) lm_rest_write(op, lm_rest_delete_job, lm_rest_op_done);
}

json_t *lm_rest_body(lm_req *req, const lm_rest_resource *r, bool partial, long long path_id)
{
    json_t *in = lm_json_body_object(req);
    if (!in) return NULL;
    lm_verrs errs = {0};
    if (path_id) {
        json_t *id = json_object_get(in, "id");
        if (id && (!json_is_integer(id) || json_integer_value(id) != path_id))
            lm_verrs_add(&errs, "id", "does not match the %s in the path (%lld)", r->noun, path_id);
        json_object_del(in, "id");
        json_object_del(in, "erstellt_am");
        json_object_del(in, "geaendert_am");
    }
    lm_json_validate(in, r->fields, r->n_fields, partial, &errs);
    if (!errs.n && r->check) r->check(in, &errs);
    if (errs.n) {
        json_decref(in);
        lm_verrs_send(req, &errs, 422, NULL);
        return NULL;
    }
    return in;
}

int lm_rest_conflict(lm_rest_op *op, const json_t *body)
{
    const lm_rest_resource *r = op->resource;
    const char *field = r->unique_field ? r->unique_field : "id";
    const char *value = json_string_value(json_object_get(body, field));
    lm_verrs_add(&op->errs, field, "a %s with %s '%s' already exists", r->noun, field,
                 value ? value : "?");
    op->status = 409;
    free(op->detail);
    lm_buf d = LM_BUF_INIT;
    lm_buf_printf(&d, "%s must be unique", field);
    op->detail = lm_buf_steal(&d, NULL);
    return 409;
}

int lm_rest_outbox_append(lm_db_conn *c, const char *type, long long subject, long long version,
                          const char *data, const char *traceparent)
{
    if (lm_db_lock(c, 7100311) != 0) return LM_DB_EIO; /* sequences commit in order */
    uint8_t raw[16];
    char id[33];
    lm_trace_random_bytes(raw, sizeof raw);
    lm_trace_hex_encode(raw, sizeof raw, id);
    char now[LM_TIME_STRLEN];
    lm_timefmt_format(lm_timefmt_now_ms(), now);
    lm_db_st *st = lm_db_stmt(c, "INSERT INTO outbox (event_id, type, subject, aggregateversion,"
                                 " time, traceparent, data) VALUES (?, ?, ?, ?, ?, ?, ?)");
    if (!st) return LM_DB_EIO;
    lm_db_bind_text(st, 1, id, -1);
    lm_db_bind_text(st, 2, type, -1);
    lm_db_bind_int(st, 3, subject);
    lm_db_bind_int(st, 4, version);
    lm_db_bind_text(st, 5, now, -1);
    if (traceparent && *traceparent)
        lm_db_bind_text(st, 6, traceparent, -1);
    else
        lm_db_bind_null(st, 6);
    lm_db_bind_text(st, 7, data, -1);
    return lm_db_send(st) == 0 ? 0 : LM_DB_EIO;
}

static int after_write(lm_db_conn *c, lm_rest_op *op, lm_rest_change what)
{
    const lm_rest_resource *r = op->resource;
    if (r->event_type) {
        static const char *const verbs[] = {"created", "updated", "deleted"};
        char type[64], data[48];
        snprintf(type, sizeof type, "%s.%s", r->event_type, verbs[what]);
        /* a delete's event carries {"id": N} and the version after the last one */
        long long version = op->version > 0 ? op->version : 1;
        if (what == LM_REST_DELETED) {
            snprintf(data, sizeof data, "{\"id\":%lld}", op->id);
            version = op->version > 0 ? op->version + 1 : 2;
        }
        int rc = lm_rest_outbox_append(c, type, op->id, version,
                                       what == LM_REST_DELETED ? data : op->body, op->traceparent);
        if (rc) return rc;
    }
    return r->after_write ? r->after_write(c, op, what) : 0;
}

/* The outcome from the row st is positioned on (cols, then version): status, body, ETag. */
static void row_outcome(lm_rest_op *op, lm_db_st *st, int status)
{
    const lm_rest_resource *r = op->resource;
    lm_buf b = LM_BUF_INIT;
    lm_rest_row_write(&b, st, r->cols, r->n_cols);
    op->version = r->has_version ? lm_db_col_int(st, r->n_cols) : 0;
    free(op->body);
    op->body = lm_buf_steal(&b, NULL);
    op->status = status;
}

int lm_rest_insert(lm_db_conn *c, lm_rest_op *op, lm_db_st *st, const json_t *body)
{
    (void)c;
    int rc = lm_db_step(st);
    if (rc != LM_DB_ROW) lm_db_reset(st);
    if (rc == LM_DB_E_UNIQUE) return lm_rest_conflict(op, body);
    if (rc != LM_DB_ROW) return LM_DB_EIO;
    op->id = lm_db_col_int(st, 0); /* cols[0] is the id */
    row_outcome(op, st, 201);
    lm_db_reset(st);
    assert(!op->resource->has_version || op->version == 1); /* replays rely on it */
    snprintf(op->location, sizeof op->location, "%s%lld", op->resource->location, op->id);
    return after_write(c, op, LM_REST_CREATED);
}

int lm_rest_load_current(lm_db_conn *c, lm_rest_op *op, json_t **cur, long long *version)
{
    int rc = lm_rest_load(c, op->resource, op->id, cur, version);
    if (rc == 404) return lm_rest_not_found(op);
    if (rc) return rc;
    if ((rc = lm_rest_check_version(op, *version))) {
        json_decref(*cur);
        *cur = NULL;
        return rc;
    }
    return 0;
}

int lm_rest_update(lm_db_conn *c, lm_rest_op *op, lm_db_st *st, const json_t *body)
{
    (void)c;
    int rc = lm_db_step(st);
    if (rc != LM_DB_ROW) lm_db_reset(st);
    if (rc == LM_DB_E_UNIQUE) return lm_rest_conflict(op, body);
    if (rc == LM_DB_DONE) /* loaded in this transaction by the single writer: not expected */
        return lm_rest_fail(op, 412, NULL, "the %s changed meanwhile", op->resource->noun);
    if (rc != LM_DB_ROW) return LM_DB_EIO;
    row_outcome(op, st, 200);
    lm_db_reset(st);
    return after_write(c, op, LM_REST_UPDATED);
}

/* ---- declared resources ---------------------------------------------------------------- */

static char *steal(lm_buf *b)
{
    return lm_buf_steal(b, NULL);
}

/* ", name, …, version" part shared by SELECT and RETURNING */
static void append_cols(lm_buf *b, const lm_rest_resource *r)
{
    int n = 0;
    for (int i = 0; i < r->n_columns; i++)
        if (!(r->columns[i].flags & LM_COL_HIDDEN))
            lm_buf_printf(b, "%s%s", n++ ? ", " : "", r->columns[i].name);
    if (r->has_version) lm_buf_append_str(b, ", version");
}

void lm_rest_declare(lm_rest_resource *r)
{
    assert(r->n_columns > 0 && r->n_columns <= LM_REST_MAX_COLS);
    int shown = 0;
    for (int i = 0; i < r->n_columns; i++)
        if (!(r->columns[i].flags & LM_COL_HIDDEN)) r->col_names[shown++] = r->columns[i].name;
    r->cols = r->col_names;
    r->n_cols = shown;
    lm_buf b = LM_BUF_INIT;
    /* SELECT … FROM t */
    LM_BUF_APPEND_LIT(&b, "SELECT ");
    append_cols(&b, r);
    lm_buf_printf(&b, " FROM %s", r->table);
    char *head = steal(&b);
    lm_buf_printf(&b, "%s WHERE id = ?", head);
    r->sql_by_id = steal(&b);
    /* INSERT INTO t (writable…, created) VALUES (?, …) RETURNING … */
    lm_buf_printf(&b, "INSERT INTO %s (", r->table);
    int n = 0;
    for (int i = 0; i < r->n_columns; i++)
        if (r->columns[i].flags & (LM_COL_WRITE | LM_COL_CREATED))
            lm_buf_printf(&b, "%s%s", n++ ? ", " : "", r->columns[i].name);
    LM_BUF_APPEND_LIT(&b, ") VALUES (");
    n = 0;
    for (int i = 0; i < r->n_columns; i++) {
        const lm_rest_col *col = &r->columns[i];
        if (!(col->flags & (LM_COL_WRITE | LM_COL_CREATED))) continue;
        lm_buf_append_str(&b, n++ ? ", " : "");
        if (col->def)
            lm_buf_printf(&b, "coalesce(?, '%s')", col->def);
        else
            lm_buf_append_char(&b, '?');
    }
    LM_BUF_APPEND_LIT(&b, ") RETURNING ");
    append_cols(&b, r);
    r->sql_insert = steal(&b);
    /* UPDATE t SET writable = ?, …, changed = ?, version = version + 1 WHERE id = ? AND … */
    if (r->has_version) {
        lm_buf_printf(&b, "UPDATE %s SET ", r->table);
        for (int i = 0; i < r->n_columns; i++) {
            const lm_rest_col *col = &r->columns[i];
            if (!(col->flags & (LM_COL_WRITE | LM_COL_CHANGED))) continue;
            if (col->def)
                lm_buf_printf(&b, "%s = coalesce(?, '%s'), ", col->name, col->def);
            else
                lm_buf_printf(&b, "%s = ?, ", col->name);
        }
        LM_BUF_APPEND_LIT(&b, "version = version + 1 WHERE id = ? AND version = ? RETURNING ");
        append_cols(&b, r);
        r->sql_update = steal(&b);
        lm_buf_printf(&b, "DELETE FROM %s WHERE id = ? RETURNING version", r->table);
        r->sql_delete = steal(&b);
    }
    /* lists: a condition per filter column, two per range column, then one for q over the
     * search columns; one ORDER BY per order (by id, by each sortable column) */
    static const char *conds_store[8][LM_DB_VARIANT_CONDS];
    static int n_declared;
    assert(n_declared < 8);
    const char **conds = conds_store[n_declared++];
    int nc = 0;
    bool search = false;
    for (int i = 0; i < r->n_columns; i++) {
        const lm_rest_col *col = &r->columns[i];
        if (col->flags & LM_COL_SEARCH) search = true;
        if (col->flags & LM_COL_FILTER) {
            assert(nc < LM_DB_VARIANT_CONDS);
            lm_buf_printf(&b, "%s = :%s", col->name, col->name);
            conds[nc++] = steal(&b);
        }
        if (col->flags & LM_COL_RANGE) {
            assert(nc + 2 <= LM_DB_VARIANT_CONDS && col->below && col->above);
            lm_buf_printf(&b, "%s < :%s", col->name, col->below);
            conds[nc++] = steal(&b);
            lm_buf_printf(&b, "%s > :%s", col->name, col->above);
            conds[nc++] = steal(&b);
        }
    }
    if (search) {
        assert(nc < LM_DB_VARIANT_CONDS);
        int k = 0;
        lm_buf_append_char(&b, '(');
        for (int i = 0; i < r->n_columns; i++)
            if (r->columns[i].flags & LM_COL_SEARCH)
                lm_buf_printf(&b, "%sinstr(casefold(%s), casefold(:q)) > 0", k++ ? " OR " : "",
                              r->columns[i].name);
        lm_buf_append_char(&b, ')');
        conds[nc++] = steal(&b);
    }
    r->sql_list = lm_xcalloc(1, sizeof *r->sql_list);
    r->sql_count = lm_xcalloc(1, sizeof *r->sql_count);
    r->sql_list->head = head;
    r->sql_list->conds = conds;
    r->sql_list->n_conds = nc;
    r->sql_list->tail = " ORDER BY id LIMIT :limit OFFSET :offset";
    for (int i = 0; i < r->n_columns; i++) {
        const lm_rest_col *col = &r->columns[i];
        if (!(col->flags & LM_COL_SORT)) continue;
        assert(col->sort && strcmp(col->sort, "id") != 0);
        lm_db_sql_variants *v = lm_xcalloc(1, sizeof *v);
        v->head = head;
        v->conds = conds;
        v->n_conds = nc;
        /* NULLs last on both backends (SQLite sorts them first, PostgreSQL last) */
        lm_buf_printf(&b, " ORDER BY %s IS NULL, %s, id LIMIT :limit OFFSET :offset", col->name,
                      col->name);
        v->tail = steal(&b);
        r->sql_list_by[i] = v;
    }
    lm_buf_printf(&b, "SELECT count(*) FROM %s", r->table);
    r->sql_count->head = steal(&b);
    r->sql_count->conds = conds;
    r->sql_count->n_conds = nc;
    r->sql_count->tail = "";
}

/* Binds the writable columns of next from index 1 on, then now for the CREATED (insert) or
 * CHANGED (update) column; returns the next free index. */
static int bind_row(lm_db_st *st, const lm_rest_resource *r, const json_t *next, unsigned stamp)
{
    char now[LM_TIME_STRLEN];
    lm_timefmt_format(lm_timefmt_now_ms(), now);
    int idx = 1;
    for (int i = 0; i < r->n_columns; i++) {
        const lm_rest_col *col = &r->columns[i];
        if (col->flags & LM_COL_WRITE)
            lm_rest_bind(st, idx++, json_object_get(next, col->name));
        else if (col->flags & stamp)
            lm_db_bind_text(st, idx++, now, -1);
    }
    return idx;
}

int lm_rest_declared_insert(lm_db_conn *c, lm_rest_op *op)
{
    const lm_rest_resource *r = op->resource;
    int rc = r->before_write ? r->before_write(c, op, NULL, op->input) : 0;
    if (rc) return rc;
    lm_db_st *st = lm_db_stmt(c, r->sql_insert);
    if (!st) return LM_DB_EIO;
    bind_row(st, r, op->input, LM_COL_CREATED);
    return lm_rest_insert(c, op, st, op->input);
}

int lm_rest_create_send_insert(lm_db_conn *c, lm_rest_op *op)
{
    const lm_rest_resource *r = op->resource;
    lm_db_st *st = lm_db_stmt(c, r->sql_insert);
    if (!st) return LM_DB_EIO;
    bind_row(st, r, op->input, LM_COL_CREATED);
    op->sent = st;
    return lm_db_send_rows(st) == 0 ? 0 : LM_DB_EIO;
}

int lm_rest_create_send(lm_db_conn *c, void *arg)
{
    lm_rest_op *op = arg;
    const lm_rest_resource *r = op->resource;
    assert(!op->has_idem);
    int rc = r->before_write ? r->before_write(c, op, NULL, op->input) : 0;
    return rc ? rc : lm_rest_create_send_insert(c, op);
}

int lm_rest_create_finish(lm_db_conn *c, void *arg)
{
    lm_rest_op *op = arg;
    return lm_rest_insert(c, op, op->sent, op->input);
}

int lm_rest_declared_update_job(lm_db_conn *c, void *arg)
{
    lm_rest_op *op = arg;
    const lm_rest_resource *r = op->resource;
    json_t *cur;
    long long version;
    int rc = lm_rest_load_current(c, op, &cur, &version);
    if (rc) return rc;
    if (op->partial && lm_rest_patch_is_noop(cur, op->input)) { /* nothing changes */
        json_decref(cur);
        return lm_rest_row_body(c, op, 200);
    }
    json_t *next = json_deep_copy(op->partial ? cur : op->input);
    if (op->partial) json_object_update(next, op->input);
    rc = r->before_write ? r->before_write(c, op, cur, next) : 0;
    json_decref(cur);
    lm_db_st *st = rc ? NULL : lm_db_stmt(c, r->sql_update);
    if (!rc && !st) rc = LM_DB_EIO;
    if (!rc) {
        int idx = bind_row(st, r, next, LM_COL_CHANGED);
        lm_db_bind_int(st, idx, op->id);
        lm_db_bind_int(st, idx + 1, version);
        rc = lm_rest_update(c, op, st, next);
    }
    json_decref(next);
    return rc;
}

void lm_rest_create(lm_req *req, const lm_rest_resource *r, lm_store *store)
{
    lm_rest_op *op = lm_rest_op_new(req, store);
    if (!op) return;
    op->resource = r;
    if (!(op->input = lm_rest_body(req, r, false, 0))) {
        lm_rest_op_free(op);
        return;
    }
    op->create = lm_rest_declared_insert;
    lm_rest_write(op, lm_rest_create_job, lm_rest_op_done);
}

void lm_rest_replace(lm_req *req, const lm_rest_resource *r, lm_store *store, bool partial)
{
    lm_rest_op *op = lm_rest_update_op(req, r, store, partial);
    if (op) lm_rest_write(op, lm_rest_declared_update_job, lm_rest_op_done);
}

/* A list's filter values (op->domain): by condition index, owned; and its order. */
typedef struct list_args {
    char *vals[LM_DB_VARIANT_CONDS];        /* text, or NULL: ints[i] */
    long long ints[LM_DB_VARIANT_CONDS];    /* integer filters, range bounds (epoch ms) */
    const char *names[LM_DB_VARIANT_CONDS]; /* ":status", ":q" */
    unsigned mask;
    lm_db_sql_variants *order; /* r->sql_list or one of r->sql_list_by */
} list_args;

static void bind_list_args(lm_db_st *st, const list_args *a)
{
    for (int i = 0; i < LM_DB_VARIANT_CONDS; i++) {
        if (!(a->mask & (1u << i))) continue;
        int idx = lm_db_param_index(st, a->names[i]);
        if (a->vals[i])
            lm_db_bind_text(st, idx, a->vals[i], -1);
        else
            lm_db_bind_int(st, idx, a->ints[i]);
    }
}

static int declared_list_query(lm_db_conn *c, void *arg)
{
    lm_rest_op *op = arg;
    const lm_rest_resource *r = op->resource;
    list_args *a = op->domain;
    lm_db_st *st = lm_db_stmt(c, lm_db_sql_variant(r->sql_count, a->mask));
    if (!st) return LM_DB_EIO;
    bind_list_args(st, a);
    if (lm_db_step(st) != LM_DB_ROW) {
        lm_db_reset(st);
        return LM_DB_EIO;
    }
    op->total = lm_db_col_int(st, 0);
    lm_db_reset(st);
    st = lm_db_stmt(c, lm_db_sql_variant(a->order, a->mask));
    if (!st) return LM_DB_EIO;
    bind_list_args(st, a);
    lm_db_bind_int(st, lm_db_param_index(st, ":limit"), op->limit);
    lm_db_bind_int(st, lm_db_param_index(st, ":offset"), op->offset);
    return lm_rest_rows_body(op, st, r->cols, r->n_cols, NULL);
}

static int declared_list_job(lm_db_conn *c, void *arg)
{
    return lm_db_snapshot(c, declared_list_query, arg);
}

static void free_list_args(list_args *a)
{
    for (int i = 0; i < LM_DB_VARIANT_CONDS; i++) {
        free(a->vals[i]);
        free((char *)a->names[i]);
    }
    free(a);
}

static void declared_list_done(int rc, void *arg)
{
    lm_rest_op *op = arg;
    free_list_args(op->domain);
    op->domain = NULL;
    lm_rest_op_done(rc, arg);
}

static const lm_field_spec *field_of(const lm_rest_resource *r, const char *name)
{
    for (size_t i = 0; i < r->n_fields; i++)
        if (!strcmp(r->fields[i].name, name)) return &r->fields[i];
    return NULL;
}

/* A filter value as its field allows it, into a->vals[k] or a->ints[k]; adds an error
 * otherwise. */
static void check_filter(const lm_field_spec *f, const char *name, const char *v, list_args *a,
                         int k, lm_verrs *errs)
{
    if (f && f->type == LM_F_INTEGER) {
        long long min = f->has_min ? (long long)f->min : LLONG_MIN;
        long long max = f->has_max ? (long long)f->max : LLONG_MAX;
        if (!lm_parse_int(v, &a->ints[k]) || a->ints[k] < min || a->ints[k] > max)
            lm_verrs_add(errs, name, "must be an integer from %lld to %lld", min, max);
        return;
    }
    a->vals[k] = lm_xstrdup(v);
    if (f && f->one_of) {
        for (const char *const *s = f->one_of; *s; s++)
            if (!strcmp(*s, v)) return;
        lm_buf list = LM_BUF_INIT;
        for (const char *const *s = f->one_of; *s; s++)
            lm_buf_printf(&list, "%s%s", s == f->one_of ? "" : ", ", *s);
        lm_verrs_add(errs, name, "must be one of: %s", lm_buf_cstr(&list));
        lm_buf_free(&list);
        return;
    }
    size_t len = lm_json_utf8_length(v), max = f && f->max_len ? f->max_len : 200;
    if (len < 1 || len > max) lm_verrs_add(errs, name, "must have 1 to %zu characters", max);
}

/* ?name=D of a range column into a->ints[k] (epoch ms); adds an error when D is no date. */
static void check_range(lm_req *req, const char *name, list_args *a, int k, lm_verrs *errs)
{
    lm_buf nm = LM_BUF_INIT;
    lm_buf_printf(&nm, ":%s", name);
    a->names[k] = steal(&nm);
    const char *v = lm_req_query(req, name);
    if (!v) return;
    int64_t ms = 0;
    if (!lm_timefmt_parse(v, true, &ms))
        lm_verrs_add(errs, name, "must be an RFC 3339 date or date-time");
    a->ints[k] = ms;
    a->mask |= 1u << k;
}

void lm_rest_list_all(lm_req *req, const lm_rest_resource *r, lm_store *store)
{
    const char *allowed[2 * LM_DB_VARIANT_CONDS + 5];
    int na = 0;
    bool search = false, sortable = false;
    for (int i = 0; i < r->n_columns; i++) {
        const lm_rest_col *col = &r->columns[i];
        if (col->flags & LM_COL_FILTER) allowed[na++] = col->name;
        if (col->flags & LM_COL_RANGE) {
            allowed[na++] = col->below;
            allowed[na++] = col->above;
        }
        search |= (col->flags & LM_COL_SEARCH) != 0;
        sortable |= (col->flags & LM_COL_SORT) != 0;
    }
    if (search) allowed[na++] = "q";
    if (sortable) allowed[na++] = "sort";
    allowed[na++] = "limit";
    allowed[na++] = "offset";
    allowed[na] = NULL;
    if (!lm_rest_query_allowed(req, allowed)) return;
    lm_rest_op *op = lm_rest_op_new(req, store);
    if (!op) return;
    op->resource = r;
    if (!lm_rest_page(req, op, 50, 500)) {
        lm_rest_op_free(op);
        return;
    }
    list_args *a = lm_xcalloc(1, sizeof *a);
    lm_verrs errs = {0};
    int k = 0;
    for (int i = 0; i < r->n_columns; i++) {
        const lm_rest_col *col = &r->columns[i];
        if (col->flags & LM_COL_FILTER) {
            const char *v = lm_req_query(req, col->name);
            if (v) {
                check_filter(field_of(r, col->name), col->name, v, a, k, &errs);
                a->mask |= 1u << k;
            }
            lm_buf nm = LM_BUF_INIT;
            lm_buf_printf(&nm, ":%s", col->name);
            a->names[k++] = steal(&nm);
        }
        if (col->flags & LM_COL_RANGE) {
            check_range(req, col->below, a, k++, &errs);
            check_range(req, col->above, a, k++, &errs);
        }
    }
    const char *q = search ? lm_req_query(req, "q") : NULL;
    if (q) {
        if (lm_json_utf8_length(q) > 100 || !*q)
            lm_verrs_add(&errs, "q", "must have 1 to 100 characters");
        a->mask |= 1u << k;
        a->vals[k] = lm_xstrdup(q);
    }
    if (search) a->names[k] = lm_xstrdup(":q");
    const char *sort = sortable ? lm_req_query(req, "sort") : NULL;
    if (!sort) sort = r->default_sort ? r->default_sort : "id";
    a->order = strcmp(sort, "id") == 0 ? r->sql_list : NULL;
    for (int i = 0; i < r->n_columns && !a->order; i++)
        if ((r->columns[i].flags & LM_COL_SORT) && !strcmp(r->columns[i].sort, sort))
            a->order = r->sql_list_by[i];
    if (!a->order) {
        lm_buf list = LM_BUF_INIT;
        lm_buf_printf(&list, "id%s", r->default_sort ? "" : " (default)");
        for (int i = 0; i < r->n_columns; i++)
            if (r->columns[i].flags & LM_COL_SORT)
                lm_buf_printf(&list, ", %s%s", r->columns[i].sort,
                              r->default_sort && !strcmp(r->default_sort, r->columns[i].sort)
                                  ? " (default)"
                                  : "");
        lm_verrs_add(&errs, "sort", "must be one of: %s", lm_buf_cstr(&list));
        lm_buf_free(&list);
    }
    if (errs.n) {
        free_list_args(a);
        lm_rest_op_free(op);
        lm_verrs_send(req, &errs, 400, "invalid query parameters");
        return;
    }
    op->domain = a;
    lm_rest_list(op, declared_list_job, declared_list_done);
}
