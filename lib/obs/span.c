/* span.c — span values and their OTLP/JSON encoding (lm_span). */
#include "span.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

uint64_t lm_span_now_unix_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int64_t mono_offset;
static pthread_once_t offset_once = PTHREAD_ONCE_INIT;

static void take_offset(void)
{
    struct timespec m;
    clock_gettime(CLOCK_MONOTONIC, &m);
    uint64_t mono = (uint64_t)m.tv_sec * 1000000000u + (uint64_t)m.tv_nsec;
    mono_offset = (int64_t)(lm_span_now_unix_ns() - mono);
}

uint64_t lm_span_unix_from_mono(uint64_t mono_ns)
{
    pthread_once(&offset_once, take_offset);
    return (uint64_t)((int64_t)mono_ns + mono_offset);
}

void lm_span_init(lm_span *s, const lm_trace_ctx *ctx, lm_span_kind kind, const char *name,
                  uint64_t start_unix_ns)
{
    memcpy(s->trace_id, ctx->trace_id, 16);
    memcpy(s->span_id, ctx->span_id, 8);
    if (ctx->has_parent)
        memcpy(s->parent_span_id, ctx->parent_span_id, 8);
    else
        memset(s->parent_span_id, 0, 8);
    s->flags = ctx->flags;
    s->kind = kind;
    s->status = LM_SPAN_UNSET;
    s->start_unix_ns = start_unix_ns;
    s->end_unix_ns = start_unix_ns;
    snprintf(s->name, sizeof s->name, "%s", name ? name : "");
    s->has_link = false;
    s->n_attrs = 0;
    s->text_len = 0;
}

static lm_span_attr *new_attr(lm_span *s, const char *key, lm_attr_type type)
{
    if (s->n_attrs >= LM_SPAN_MAX_ATTRS) return NULL;
    lm_span_attr *a = &s->attrs[s->n_attrs++];
    a->key = key;
    a->type = type;
    return a;
}

void lm_span_attr_str(lm_span *s, const char *key, const char *v, size_t len)
{
    size_t room = LM_SPAN_TEXT - s->text_len;
    if (len > room) {
        len = room;
        while (len > 0 && ((unsigned char)v[len] & 0xC0) == 0x80)
            len--; /* do not cut a UTF-8 sequence */
    }
    lm_span_attr *a = new_attr(s, key, LM_ATTR_STR);
    if (!a) return;
    memcpy(s->text + s->text_len, v, len);
    a->v.s.off = s->text_len;
    a->v.s.len = (uint16_t)len;
    s->text_len = (uint16_t)(s->text_len + len);
}

void lm_span_attr_cstr(lm_span *s, const char *key, const char *v)
{
    lm_span_attr_str(s, key, v, strlen(v));
}

void lm_span_attr_int(lm_span *s, const char *key, int64_t v)
{
    lm_span_attr *a = new_attr(s, key, LM_ATTR_INT);
    if (a) a->v.i = v;
}

void lm_span_attr_double(lm_span *s, const char *key, double v)
{
    lm_span_attr *a = new_attr(s, key, LM_ATTR_DOUBLE);
    if (a) a->v.d = v;
}

void lm_span_attr_bool(lm_span *s, const char *key, bool v)
{
    lm_span_attr *a = new_attr(s, key, LM_ATTR_BOOL);
    if (a) a->v.b = v;
}

void lm_span_link(lm_span *s, const lm_trace_ctx *linked)
{
    s->has_link = true;
    memcpy(s->link_trace_id, linked->trace_id, 16);
    memcpy(s->link_span_id, linked->span_id, 8);
}

const lm_span_attr *lm_span_attr_get(const lm_span *s, const char *key)
{
    for (size_t i = 0; i < s->n_attrs; i++)
        if (!strcmp(s->attrs[i].key, key)) return &s->attrs[i];
    return NULL;
}

static void hex(lm_buf *out, const uint8_t *id, size_t n)
{
    char tmp[33];
    lm_trace_hex_encode(id, n, tmp);
    lm_buf_append(out, tmp, 2 * n);
}

static void json_str(lm_buf *out, const char *s, size_t n)
{
    lm_buf_append_char(out, '"');
    lm_buf_append_json_escaped(out, s, n);
    lm_buf_append_char(out, '"');
}

/* Attribute keys are the static semantic-convention names (span.h): plain ASCII, written as
 * they are; anything else is escaped. */
static void json_key(lm_buf *out, const char *k)
{
    size_t n = strlen(k);
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)k[i] < 0x20 || k[i] == '"' || k[i] == '\\' ||
            (unsigned char)k[i] >= 0x80) {
            json_str(out, k, n);
            return;
        }
    lm_buf_reserve(out, n + 2);
    out->data[out->len++] = '"';
    memcpy(out->data + out->len, k, n);
    out->len += n;
    out->data[out->len++] = '"';
}

static void encode_kv_str(lm_buf *out, const char *k, const char *v, size_t vlen, bool static_key)
{
    LM_BUF_APPEND_LIT(out, "{\"key\":");
    if (static_key)
        json_key(out, k);
    else
        json_str(out, k, strlen(k));
    LM_BUF_APPEND_LIT(out, ",\"value\":{\"stringValue\":");
    json_str(out, v, vlen);
    LM_BUF_APPEND_LIT(out, "}}");
}

static void append_i64(lm_buf *out, int64_t v)
{
    if (v < 0) {
        lm_buf_append_char(out, '-');
        lm_buf_append_u64(out, (unsigned long long)(-(v + 1)) + 1u);
    } else {
        lm_buf_append_u64(out, (unsigned long long)v);
    }
}

static void encode_attr(lm_buf *out, const lm_span *s, const lm_span_attr *a)
{
    if (a->type == LM_ATTR_STR) {
        encode_kv_str(out, a->key, s->text + a->v.s.off, a->v.s.len, true);
        return;
    }
    LM_BUF_APPEND_LIT(out, "{\"key\":");
    json_key(out, a->key);
    switch (a->type) {
    case LM_ATTR_INT:
        LM_BUF_APPEND_LIT(out, ",\"value\":{\"intValue\":\"");
        append_i64(out, a->v.i);
        LM_BUF_APPEND_LIT(out, "\"}}");
        return;
    case LM_ATTR_DOUBLE:
        lm_buf_printf(out, ",\"value\":{\"doubleValue\":%.17g}}", a->v.d);
        return;
    case LM_ATTR_BOOL:
        if (a->v.b)
            LM_BUF_APPEND_LIT(out, ",\"value\":{\"boolValue\":true}}");
        else
            LM_BUF_APPEND_LIT(out, ",\"value\":{\"boolValue\":false}}");
        return;
    case LM_ATTR_STR:
        return;
    }
}

static bool zero(const uint8_t *id, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (id[i]) return false;
    return true;
}

void lm_span_encode_otlp_json(lm_buf *out, const lm_resource *res, const lm_span *spans, size_t n)
{
    LM_BUF_APPEND_LIT(out, "{\"resourceSpans\":[{\"resource\":{\"attributes\":[");
    for (size_t i = 0; res && i < res->n; i++) {
        if (i) lm_buf_append_char(out, ',');
        encode_kv_str(out, res->keys[i], res->values[i], strlen(res->values[i]), false);
    }
    LM_BUF_APPEND_LIT(out, "]},\"scopeSpans\":[{\"scope\":{\"name\":\"lotmesh\",\"version\":"
                           "\"1\"},\"spans\":[");
    for (size_t i = 0; i < n; i++) {
        const lm_span *s = &spans[i];
        if (i) lm_buf_append_char(out, ',');
        LM_BUF_APPEND_LIT(out, "{\"traceId\":\"");
        hex(out, s->trace_id, 16);
        LM_BUF_APPEND_LIT(out, "\",\"spanId\":\"");
        hex(out, s->span_id, 8);
        LM_BUF_APPEND_LIT(out, "\"");
        if (!zero(s->parent_span_id, 8)) {
            LM_BUF_APPEND_LIT(out, ",\"parentSpanId\":\"");
            hex(out, s->parent_span_id, 8);
            LM_BUF_APPEND_LIT(out, "\"");
        }
        LM_BUF_APPEND_LIT(out, ",\"flags\":");
        lm_buf_append_u64(out, s->flags);
        LM_BUF_APPEND_LIT(out, ",\"name\":");
        json_str(out, s->name, strlen(s->name));
        LM_BUF_APPEND_LIT(out, ",\"kind\":");
        lm_buf_append_u64(out, (unsigned)s->kind);
        LM_BUF_APPEND_LIT(out, ",\"startTimeUnixNano\":\"");
        lm_buf_append_u64(out, s->start_unix_ns);
        LM_BUF_APPEND_LIT(out, "\",\"endTimeUnixNano\":\"");
        lm_buf_append_u64(out, s->end_unix_ns);
        LM_BUF_APPEND_LIT(out, "\",\"attributes\":[");
        for (size_t a = 0; a < s->n_attrs; a++) {
            if (a) lm_buf_append_char(out, ',');
            encode_attr(out, s, &s->attrs[a]);
        }
        LM_BUF_APPEND_LIT(out, "]");
        if (s->has_link) {
            LM_BUF_APPEND_LIT(out, ",\"links\":[{\"traceId\":\"");
            hex(out, s->link_trace_id, 16);
            LM_BUF_APPEND_LIT(out, "\",\"spanId\":\"");
            hex(out, s->link_span_id, 8);
            LM_BUF_APPEND_LIT(out, "\"}]");
        }
        LM_BUF_APPEND_LIT(out, ",\"status\":{\"code\":");
        lm_buf_append_u64(out, (unsigned)s->status);
        LM_BUF_APPEND_LIT(out, "}}");
    }
    LM_BUF_APPEND_LIT(out, "]}]}]}");
}
