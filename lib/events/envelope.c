/* envelope.c — CloudEvents 1.0 structured JSON: parse and write (envelope.h). */
#include "envelope.h"

#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"

#include "timefmt.h"
#include "trace.h"

bool lm_envelope_type_ok(const char *type)
{
    size_t n = type ? strlen(type) : 0;
    if (n == 0 || n > 120 || type[0] == '.' || type[n - 1] == '.') return false;
    for (size_t i = 0; i < n; i++) {
        char c = type[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '.';
        if (!ok || (c == '.' && type[i + 1] == '.')) return false;
    }
    return true;
}

/* AMQP topic matching over words: p[0..np) against t[0..nt), each word [start, len). */
typedef struct env_word {
    const char *s;
    size_t n;
} env_word;

static size_t env_split(const char *s, env_word *w, size_t max)
{
    size_t n = 0;
    while (n < max) {
        const char *e = strchr(s, '.');
        size_t len = e ? (size_t)(e - s) : strlen(s);
        w[n++] = (env_word){s, len};
        if (!e) break;
        s = e + 1;
    }
    return n;
}

static bool env_match(const env_word *p, size_t np, const env_word *t, size_t nt)
{
    if (np == 0) return nt == 0;
    if (p[0].n == 1 && p[0].s[0] == '#') {
        for (size_t k = 0; k <= nt; k++)
            if (env_match(p + 1, np - 1, t + k, nt - k)) return true;
        return false;
    }
    if (nt == 0) return false;
    bool word = (p[0].n == 1 && p[0].s[0] == '*') ||
                (p[0].n == t[0].n && memcmp(p[0].s, t[0].s, p[0].n) == 0);
    return word && env_match(p + 1, np - 1, t + 1, nt - 1);
}

bool lm_envelope_type_matches(const char *pattern, const char *type)
{
    if (!pattern || !type) return false;
    env_word p[16], t[16];
    size_t np = env_split(pattern, p, 16), nt = env_split(type, t, 16);
    return env_match(p, np, t, nt);
}

void lm_envelope_clear(lm_envelope *e)
{
    free(e->id);
    free(e->source);
    free(e->type);
    free(e->subject);
    free(e->time);
    free(e->traceparent);
    free(e->data);
    free(e->json);
    memset(e, 0, sizeof *e);
}

static char *env_dup(const char *s)
{
    return s ? strdup(s) : NULL;
}

void lm_envelope_copy(lm_envelope *dst, const lm_envelope *src)
{
    *dst = *src;
    dst->id = env_dup(src->id);
    dst->source = env_dup(src->source);
    dst->type = env_dup(src->type);
    dst->subject = env_dup(src->subject);
    dst->time = env_dup(src->time);
    dst->traceparent = env_dup(src->traceparent);
    dst->data = env_dup(src->data);
    if (src->json) {
        dst->json = malloc(src->json_len + 1);
        memcpy(dst->json, src->json, src->json_len);
        dst->json[src->json_len] = '\0';
    }
}

/* A required string member of 1..max bytes. */
static const char *env_str(json_t *o, const char *key, size_t max, char *err, size_t errlen)
{
    json_t *v = json_object_get(o, key);
    if (!v) {
        lm_buf_errf(err, errlen, "%s: missing", key);
        return NULL;
    }
    if (!json_is_string(v)) {
        lm_buf_errf(err, errlen, "%s: must be a string", key);
        return NULL;
    }
    size_t n = json_string_length(v);
    const char *s = json_string_value(v);
    if (n == 0 || n > max || strlen(s) != n) {
        lm_buf_errf(err, errlen, "%s: must be 1 to %zu bytes without NUL", key, max);
        return NULL;
    }
    return s;
}

static int env_int(json_t *o, const char *key, long long *out, char *err, size_t errlen)
{
    json_t *v = json_object_get(o, key);
    if (!v) return lm_buf_errf(err, errlen, "%s: missing", key);
    if (!json_is_integer(v) || json_integer_value(v) < 1)
        return lm_buf_errf(err, errlen, "%s: must be an integer >= 1", key);
    *out = (long long)json_integer_value(v);
    return 0;
}

static int env_from_json(json_t *o, const char *text, size_t len, lm_envelope *out, char *err,
                         size_t errlen)
{
    memset(out, 0, sizeof *out);
    if (!json_is_object(o)) return lm_buf_errf(err, errlen, "event: must be a JSON object");
    const char *sv = env_str(o, "specversion", 16, err, errlen);
    if (!sv) return -1;
    if (strcmp(sv, "1.0") != 0) return lm_buf_errf(err, errlen, "specversion: must be \"1.0\"");
    const char *id = env_str(o, "id", 200, err, errlen);
    const char *source = id ? env_str(o, "source", 200, err, errlen) : NULL;
    const char *type = source ? env_str(o, "type", 120, err, errlen) : NULL;
    const char *subject = type ? env_str(o, "subject", 20, err, errlen) : NULL;
    const char *time = subject ? env_str(o, "time", 64, err, errlen) : NULL;
    if (!time) return -1;
    if (!lm_envelope_type_ok(type))
        return lm_buf_errf(err, errlen, "type: must be dotted lower-case words");
    char *end = NULL;
    errno = 0;
    long long sid = strtoll(subject, &end, 10);
    if (*end != '\0' || errno == ERANGE || sid < 1 || subject[0] < '1' || subject[0] > '9')
        return lm_buf_errf(err, errlen, "subject: must be the aggregate id (a decimal >= 1)");
    int64_t ms;
    if (!lm_timefmt_parse(time, false, &ms)) return lm_buf_errf(err, errlen, "time: not RFC 3339");
    json_t *dct = json_object_get(o, "datacontenttype");
    if (dct && (!json_is_string(dct) || strcmp(json_string_value(dct), "application/json") != 0))
        return lm_buf_errf(err, errlen, "datacontenttype: must be \"application/json\"");
    long long seq, ver;
    if (env_int(o, "sequence", &seq, err, errlen) != 0) return -1;
    if (env_int(o, "aggregateversion", &ver, err, errlen) != 0) return -1;
    json_t *tp = json_object_get(o, "traceparent");
    const char *tps = NULL;
    if (tp && !json_is_null(tp)) {
        lm_trace_ctx ctx;
        if (!json_is_string(tp) ||
            !lm_trace_parse(json_string_value(tp), json_string_length(tp), &ctx))
            return lm_buf_errf(err, errlen, "traceparent: not a W3C traceparent");
        tps = json_string_value(tp);
    }
    json_t *data = json_object_get(o, "data");
    if (!data) return lm_buf_errf(err, errlen, "data: missing");
    if (!json_is_object(data)) return lm_buf_errf(err, errlen, "data: must be a JSON object");
    char *dtext = json_dumps(data, JSON_COMPACT | JSON_ENCODE_ANY | JSON_PRESERVE_ORDER);
    if (!dtext) return lm_buf_errf(err, errlen, "data: cannot be encoded");
    out->sequence = seq;
    out->aggregateversion = ver;
    out->subject_id = sid;
    out->id = strdup(id);
    out->source = strdup(source);
    out->type = strdup(type);
    out->subject = strdup(subject);
    out->time = strdup(time);
    out->traceparent = env_dup(tps);
    out->data = dtext;
    if (text) {
        out->json = malloc(len + 1);
        memcpy(out->json, text, len);
        out->json[len] = '\0';
        out->json_len = len;
    } else {
        out->json = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
        out->json_len = out->json ? strlen(out->json) : 0;
    }
    return 0;
}

int lm_envelope_parse(const char *text, size_t len, lm_envelope *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    if (len > LM_ENVELOPE_MAX_BYTES)
        return lm_buf_errf(err, errlen, "event: larger than %u bytes", LM_ENVELOPE_MAX_BYTES);
    json_error_t je;
    json_t *o = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
    if (!o)
        return lm_buf_errf(err, errlen, "event: not JSON (line %d, column %d: %s)", je.line,
                           je.column, je.text);
    int rc = env_from_json(o, text, len, out, err, errlen);
    json_decref(o);
    if (rc != 0) lm_envelope_clear(out);
    return rc;
}

int lm_envelope_parse_array(const char *text, size_t len, lm_envelope **out, size_t *n, char *err,
                            size_t errlen)
{
    *out = NULL;
    *n = 0;
    json_error_t je;
    json_t *a = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
    if (!a)
        return lm_buf_errf(err, errlen, "feed: not JSON (line %d, column %d: %s)", je.line,
                           je.column, je.text);
    if (!json_is_array(a)) {
        json_decref(a);
        return lm_buf_errf(err, errlen, "feed: must be a JSON array");
    }
    size_t cnt = json_array_size(a);
    lm_envelope *evs = cnt ? calloc(cnt, sizeof *evs) : NULL;
    size_t i;
    json_t *o;
    char sub[160];
    json_array_foreach(a, i, o)
    {
        if (env_from_json(o, NULL, 0, &evs[i], sub, sizeof sub) != 0 ||
            (i > 0 && evs[i].sequence <= evs[i - 1].sequence)) {
            if (evs[i].id && i > 0 && evs[i].sequence <= evs[i - 1].sequence)
                snprintf(sub, sizeof sub, "sequence: must rise (%lld after %lld)", evs[i].sequence,
                         evs[i - 1].sequence);
            for (size_t j = 0; j <= i; j++)
                lm_envelope_clear(&evs[j]);
            free(evs);
            json_decref(a);
            return lm_buf_errf(err, errlen, "feed[%zu]: %s", i, sub);
        }
    }
    json_decref(a);
    *out = evs;
    *n = cnt;
    return 0;
}

static void env_json_str(lm_buf *out, const char *s)
{
    json_t *v = json_string(s ? s : "");
    char *t = v ? json_dumps(v, JSON_ENCODE_ANY) : NULL;
    if (t) {
        lm_buf_append(out, t, strlen(t));
        free(t);
    } else {
        lm_buf_append(out, "\"\"", 2);
    }
    json_decref(v);
}

static void env_key(lm_buf *out, const char *key)
{
    lm_buf_printf(out, ",\"%s\":", key);
}

void lm_envelope_write(lm_buf *out, const char *id, const char *source, const char *type,
                       long long subject_id, const char *time, long long sequence,
                       long long aggregateversion, const char *traceparent, const char *data_json)
{
    lm_buf_append(out, "{\"specversion\":\"1.0\",\"id\":", 26);
    env_json_str(out, id);
    env_key(out, "source");
    env_json_str(out, source);
    env_key(out, "type");
    env_json_str(out, type);
    lm_buf_printf(out, ",\"subject\":\"%lld\"", subject_id);
    env_key(out, "time");
    env_json_str(out, time);
    lm_buf_printf(out,
                  ",\"datacontenttype\":\"application/json\",\"sequence\":%lld,"
                  "\"aggregateversion\":%lld",
                  sequence, aggregateversion);
    if (traceparent && *traceparent) {
        env_key(out, "traceparent");
        env_json_str(out, traceparent);
    }
    lm_buf_append(out, ",\"data\":", 8);
    lm_buf_append(out, data_json, strlen(data_json));
    lm_buf_append(out, "}", 1);
}
