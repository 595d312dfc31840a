/* tracestore.c — recent traces from OTLP/HTTP JSON, bounded (lm_tracestore). */
#include "tracestore.h"

#include "buf.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_STR   256
#define MAX_ATTRS 32

typedef struct st_trace {
    char id[33];
    json_t *spans; /* array of normalised span objects */
    uint64_t start_ns, end_ns;
    uint64_t touched; /* store clock at the last update */
    size_t errors;
} st_trace;

struct lm_tracestore {
    pthread_mutex_t mu;
    st_trace *traces;
    size_t n, cap, max_spans;
    uint64_t clock;
    lm_tracestore_stats st;
};

lm_tracestore *lm_tracestore_new(size_t max_traces, size_t max_spans)
{
    lm_tracestore *ts = lm_xcalloc(1, sizeof *ts);
    pthread_mutex_init(&ts->mu, NULL);
    ts->cap = max_traces ? max_traces : 1;
    ts->max_spans = max_spans ? max_spans : 1;
    ts->traces = lm_xcalloc(ts->cap, sizeof *ts->traces);
    return ts;
}

void lm_tracestore_free(lm_tracestore *ts)
{
    if (!ts) return;
    for (size_t i = 0; i < ts->n; i++)
        json_decref(ts->traces[i].spans);
    free(ts->traces);
    pthread_mutex_destroy(&ts->mu);
    free(ts);
}

/* ---- parsing -------------------------------------------------------------------------- */

static bool is_hex(const char *s, size_t n)
{
    if (strlen(s) != n) return false;
    bool nonzero = false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')))
            return false;
        if (c != '0') nonzero = true;
    }
    return nonzero;
}

static void lower(char *s)
{
    for (; *s; s++)
        if (*s >= 'A' && *s <= 'F') *s = (char)(*s - 'A' + 'a');
}

/* A uint64 given as a decimal string or a non-negative JSON integer. */
static bool get_u64(json_t *v, uint64_t *out)
{
    if (json_is_integer(v) && json_integer_value(v) >= 0) {
        *out = (uint64_t)json_integer_value(v);
        return true;
    }
    if (!json_is_string(v)) return false;
    const char *s = json_string_value(v);
    if (!*s || strlen(s) > 20) return false;
    uint64_t x = 0;
    for (; *s; s++) {
        if (*s < '0' || *s > '9') return false;
        uint64_t d = (uint64_t)(*s - '0');
        if (x > (UINT64_MAX - d) / 10) return false;
        x = x * 10 + d;
    }
    *out = x;
    return true;
}

static json_t *cut_string(const char *s)
{
    size_t n = strlen(s);
    if (n <= MAX_STR) return json_string(s);
    while (n > 0 && n > MAX_STR)
        n--;
    while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80)
        n--;
    return json_stringn(s, n);
}

/* An AnyValue as a plain JSON value; NULL when malformed. */
static json_t *any_value(json_t *v)
{
    if (!json_is_object(v)) return NULL;
    json_t *x;
    if ((x = json_object_get(v, "stringValue")))
        return json_is_string(x) ? cut_string(json_string_value(x)) : NULL;
    if ((x = json_object_get(v, "boolValue"))) return json_is_boolean(x) ? json_copy(x) : NULL;
    if ((x = json_object_get(v, "intValue"))) {
        if (json_is_integer(x)) return json_copy(x);
        if (!json_is_string(x)) return NULL;
        char *end;
        const char *s = json_string_value(x);
        long long i = strtoll(s, &end, 10);
        return *s && !*end ? json_integer(i) : NULL;
    }
    if ((x = json_object_get(v, "doubleValue"))) return json_is_number(x) ? json_copy(x) : NULL;
    if (json_object_get(v, "arrayValue") || json_object_get(v, "kvlistValue") ||
        json_object_get(v, "bytesValue"))
        return json_string("(structured value)");
    if (json_object_size(v) == 0) return json_null();
    return NULL;
}

/* KeyValue list into obj; false with err on malformed input. */
static bool attributes(json_t *list, json_t *obj, const char *where, char *err, size_t errlen)
{
    if (!list) return true;
    if (!json_is_array(list)) {
        snprintf(err, errlen, "%s.attributes must be an array", where);
        return false;
    }
    size_t i;
    json_t *kv;
    json_array_foreach(list, i, kv)
    {
        json_t *k = json_object_get(kv, "key");
        if (!json_is_object(kv) || !json_is_string(k)) {
            snprintf(err, errlen, "%s.attributes[%zu] needs a string key", where, i);
            return false;
        }
        json_t *val = any_value(json_object_get(kv, "value"));
        if (!val) {
            snprintf(err, errlen, "%s.attributes[%zu] (%.64s) has a malformed value", where, i,
                     json_string_value(k));
            return false;
        }
        if (json_object_size(obj) >= MAX_ATTRS || strlen(json_string_value(k)) > 128) {
            json_decref(val);
            continue;
        }
        json_object_set_new(obj, json_string_value(k), val);
    }
    return true;
}

static json_t *parse_span(json_t *sp, const char *service, const char *where, char *err,
                          size_t errlen)
{
    if (!json_is_object(sp)) {
        snprintf(err, errlen, "%s must be an object", where);
        return NULL;
    }
    const char *tid = json_string_value(json_object_get(sp, "traceId"));
    const char *sid = json_string_value(json_object_get(sp, "spanId"));
    json_t *pj = json_object_get(sp, "parentSpanId");
    const char *pid = json_string_value(pj);
    const char *name = json_string_value(json_object_get(sp, "name"));
    json_t *kind = json_object_get(sp, "kind");
    uint64_t start, end;
    if (!tid || !is_hex(tid, 32)) {
        snprintf(err, errlen, "%s.traceId must be 32 hex digits, not all zero", where);
        return NULL;
    }
    if (!sid || !is_hex(sid, 16)) {
        snprintf(err, errlen, "%s.spanId must be 16 hex digits, not all zero", where);
        return NULL;
    }
    if (pj && (!pid || (*pid && !is_hex(pid, 16)))) {
        snprintf(err, errlen, "%s.parentSpanId must be 16 hex digits or empty", where);
        return NULL;
    }
    if (!name) {
        snprintf(err, errlen, "%s.name must be a string", where);
        return NULL;
    }
    if (kind &&
        (!json_is_integer(kind) || json_integer_value(kind) < 0 || json_integer_value(kind) > 5)) {
        snprintf(err, errlen, "%s.kind must be an integer from 0 to 5", where);
        return NULL;
    }
    if (!get_u64(json_object_get(sp, "startTimeUnixNano"), &start) ||
        !get_u64(json_object_get(sp, "endTimeUnixNano"), &end)) {
        snprintf(err, errlen, "%s needs startTimeUnixNano and endTimeUnixNano (unsigned integers)",
                 where);
        return NULL;
    }
    if (end < start) {
        snprintf(err, errlen, "%s ends before it starts", where);
        return NULL;
    }
    json_t *status = json_object_get(sp, "status");
    long long code = 0;
    if (status) {
        json_t *c = json_object_get(status, "code");
        if (!json_is_object(status) || (c && (!json_is_integer(c) || json_integer_value(c) < 0 ||
                                              json_integer_value(c) > 2))) {
            snprintf(err, errlen, "%s.status.code must be 0, 1 or 2", where);
            return NULL;
        }
        code = c ? json_integer_value(c) : 0;
    }
    json_t *attrs = json_object();
    if (!attributes(json_object_get(sp, "attributes"), attrs, where, err, errlen)) {
        json_decref(attrs);
        return NULL;
    }
    char t[33], s[17], p[17] = "";
    snprintf(t, sizeof t, "%s", tid);
    snprintf(s, sizeof s, "%s", sid);
    if (pid && *pid) snprintf(p, sizeof p, "%s", pid);
    lower(t);
    lower(s);
    lower(p);
    char sb[24], eb[24];
    snprintf(sb, sizeof sb, "%" PRIu64, start);
    snprintf(eb, sizeof eb, "%" PRIu64, end);
    json_t *out = json_object();
    json_object_set_new(out, "trace_id", json_string(t));
    json_object_set_new(out, "span_id", json_string(s));
    json_object_set_new(out, "parent_span_id", json_string(p));
    json_object_set_new(out, "name", cut_string(name));
    json_object_set_new(out, "kind", json_integer(kind ? json_integer_value(kind) : 0));
    json_object_set_new(out, "service", cut_string(service));
    json_object_set_new(out, "start_unix_nano", json_string(sb));
    json_object_set_new(out, "end_unix_nano", json_string(eb));
    json_object_set_new(out, "duration_ms", json_real((double)(end - start) / 1e6));
    json_object_set_new(out, "status", json_integer(code));
    json_object_set_new(out, "attributes", attrs);
    return out;
}

/* Parses the whole request into a flat array of normalised spans. */
static json_t *parse_request(const char *body, size_t len, char *err, size_t errlen)
{
    json_error_t je;
    json_t *root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &je);
    if (!root) {
        snprintf(err, errlen, "malformed JSON at line %d, column %d: %s", je.line, je.column,
                 je.text);
        return NULL;
    }
    json_t *rs = json_object_get(root, "resourceSpans");
    if (!json_is_object(root) || !json_is_array(rs)) {
        snprintf(err, errlen, "the body must be an object with a resourceSpans array");
        json_decref(root);
        return NULL;
    }
    json_t *out = json_array();
    size_t i, j, k;
    json_t *r, *ss, *sp;
    json_array_foreach(rs, i, r)
    {
        char where[96];
        snprintf(where, sizeof where, "resourceSpans[%zu]", i);
        if (!json_is_object(r)) {
            snprintf(err, errlen, "%s must be an object", where);
            goto bad;
        }
        json_t *res = json_object_get(r, "resource");
        json_t *rattrs = json_object();
        if (res && (!json_is_object(res) ||
                    !attributes(json_object_get(res, "attributes"), rattrs, where, err, errlen))) {
            if (!json_is_object(res)) snprintf(err, errlen, "%s.resource must be an object", where);
            json_decref(rattrs);
            goto bad;
        }
        const char *svc = json_string_value(json_object_get(rattrs, "service.name"));
        char service[MAX_STR + 1];
        snprintf(service, sizeof service, "%s", svc ? svc : "unknown_service");
        json_decref(rattrs);
        json_t *scopes = json_object_get(r, "scopeSpans");
        if (scopes && !json_is_array(scopes)) {
            snprintf(err, errlen, "%s.scopeSpans must be an array", where);
            goto bad;
        }
        json_array_foreach(scopes, j, ss)
        {
            json_t *spans = json_object_get(ss, "spans");
            if (!json_is_object(ss) || (spans && !json_is_array(spans))) {
                snprintf(err, errlen, "%s.scopeSpans[%zu] must be an object with a spans array",
                         where, j);
                goto bad;
            }
            json_array_foreach(spans, k, sp)
            {
                char w2[160];
                snprintf(w2, sizeof w2, "%s.scopeSpans[%zu].spans[%zu]", where, j, k);
                json_t *n = parse_span(sp, service, w2, err, errlen);
                if (!n) goto bad;
                json_array_append_new(out, n);
            }
        }
    }
    json_decref(root);
    return out;
bad:
    json_decref(root);
    json_decref(out);
    return NULL;
}

/* ---- the store ------------------------------------------------------------------------ */

static uint64_t span_u64(json_t *span, const char *key)
{
    uint64_t v = 0;
    get_u64(json_object_get(span, key), &v);
    return v;
}

static st_trace *find_or_add(lm_tracestore *ts, const char *id)
{
    for (size_t i = 0; i < ts->n; i++)
        if (!strcmp(ts->traces[i].id, id)) return &ts->traces[i];
    st_trace *t;
    if (ts->n < ts->cap) {
        t = &ts->traces[ts->n++];
    } else {
        t = &ts->traces[0];
        for (size_t i = 1; i < ts->n; i++)
            if (ts->traces[i].touched < t->touched) t = &ts->traces[i];
        ts->st.spans -= json_array_size(t->spans);
        json_decref(t->spans);
        ts->st.traces_evicted++;
    }
    memset(t, 0, sizeof *t);
    snprintf(t->id, sizeof t->id, "%s", id);
    t->spans = json_array();
    return t;
}

long lm_tracestore_ingest(lm_tracestore *ts, const char *body, size_t len, char *err, size_t errlen)
{
    json_t *spans = parse_request(body, len, err, errlen);
    if (!spans) {
        pthread_mutex_lock(&ts->mu);
        ts->st.requests_refused++;
        pthread_mutex_unlock(&ts->mu);
        return -1;
    }
    long taken = 0;
    size_t i;
    json_t *sp;
    pthread_mutex_lock(&ts->mu);
    json_array_foreach(spans, i, sp)
    {
        ts->st.spans_received++;
        st_trace *t = find_or_add(ts, json_string_value(json_object_get(sp, "trace_id")));
        t->touched = ++ts->clock;
        if (json_array_size(t->spans) >= ts->max_spans) {
            ts->st.spans_dropped++;
            continue;
        }
        uint64_t s = span_u64(sp, "start_unix_nano"), e = span_u64(sp, "end_unix_nano");
        if (json_array_size(t->spans) == 0 || s < t->start_ns) t->start_ns = s;
        if (e > t->end_ns) t->end_ns = e;
        if (json_integer_value(json_object_get(sp, "status")) == 2) t->errors++;
        json_array_append(t->spans, sp);
        ts->st.spans++;
        taken++;
    }
    ts->st.traces = ts->n;
    pthread_mutex_unlock(&ts->mu);
    json_decref(spans);
    return taken;
}

/* The root span (no parent, or a parent not in the trace), else the earliest. */
static json_t *root_of(const st_trace *t)
{
    json_t *best = NULL;
    size_t i;
    json_t *sp;
    json_array_foreach(t->spans, i, sp)
    {
        const char *p = json_string_value(json_object_get(sp, "parent_span_id"));
        if (!*p) return sp;
        if (!best || span_u64(sp, "start_unix_nano") < span_u64(best, "start_unix_nano")) best = sp;
    }
    return best;
}

static int by_start_desc(const void *a, const void *b)
{
    const st_trace *x = *(st_trace *const *)a, *y = *(st_trace *const *)b;
    return x->start_ns < y->start_ns ? 1 : x->start_ns > y->start_ns ? -1 : 0;
}

json_t *lm_tracestore_recent(lm_tracestore *ts, size_t limit)
{
    json_t *out = json_array();
    pthread_mutex_lock(&ts->mu);
    st_trace **order = lm_xcalloc(ts->n + 1, sizeof *order);
    for (size_t i = 0; i < ts->n; i++)
        order[i] = &ts->traces[i];
    qsort(order, ts->n, sizeof *order, by_start_desc);
    for (size_t i = 0; i < ts->n && i < limit; i++) {
        st_trace *t = order[i];
        json_t *root = root_of(t);
        char sb[24];
        snprintf(sb, sizeof sb, "%" PRIu64, t->start_ns);
        json_array_append_new(
            out, json_pack("{s:s, s:s, s:s, s:s, s:f, s:I, s:I}", "trace_id", t->id, "name",
                           root ? json_string_value(json_object_get(root, "name")) : "", "service",
                           root ? json_string_value(json_object_get(root, "service")) : "",
                           "start_unix_nano", sb, "duration_ms",
                           (double)(t->end_ns - t->start_ns) / 1e6, "spans",
                           (json_int_t)json_array_size(t->spans), "errors", (json_int_t)t->errors));
    }
    free(order);
    pthread_mutex_unlock(&ts->mu);
    return out;
}

static int by_span_start(const void *a, const void *b)
{
    uint64_t x = span_u64(*(json_t *const *)a, "start_unix_nano");
    uint64_t y = span_u64(*(json_t *const *)b, "start_unix_nano");
    return x < y ? -1 : x > y ? 1 : 0;
}

json_t *lm_tracestore_get(lm_tracestore *ts, const char *trace_id_hex)
{
    char id[33];
    if (!trace_id_hex || strlen(trace_id_hex) != 32) return NULL;
    snprintf(id, sizeof id, "%s", trace_id_hex);
    lower(id);
    json_t *out = NULL;
    pthread_mutex_lock(&ts->mu);
    for (size_t i = 0; i < ts->n; i++) {
        if (strcmp(ts->traces[i].id, id) != 0) continue;
        size_t n = json_array_size(ts->traces[i].spans);
        json_t **v = lm_xcalloc(n + 1, sizeof *v);
        for (size_t j = 0; j < n; j++)
            v[j] = json_array_get(ts->traces[i].spans, j);
        qsort(v, n, sizeof *v, by_span_start);
        out = json_array();
        for (size_t j = 0; j < n; j++)
            json_array_append_new(out, json_deep_copy(v[j]));
        free(v);
        break;
    }
    pthread_mutex_unlock(&ts->mu);
    return out;
}

void lm_tracestore_stats_get(lm_tracestore *ts, lm_tracestore_stats *out)
{
    pthread_mutex_lock(&ts->mu);
    *out = ts->st;
    out->traces = ts->n;
    pthread_mutex_unlock(&ts->mu);
}
