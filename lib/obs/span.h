/* span.h — one finished span and its OTLP/JSON form (lm_span). Part of the obs layer: it
 * uses only base (buffers, trace context).
 *
 * A span is a plain value: ids from an lm_trace_ctx, a name, a kind, start and end in Unix
 * nanoseconds, a status and up to LM_SPAN_MAX_ATTRS attributes with OpenTelemetry
 * semantic-convention keys, and at most one link (an event applied, linked to the span that
 * published it). String attribute values are copied into the span's own text area, so a
 * span owns everything but its attribute keys, which must be static strings (the
 * semantic-convention names, e.g. "http.request.method").
 *
 * Building a span does not allocate. lm_tracer_submit() (tracer.h) copies it into the
 * export queue, so a span may live on the stack.
 *
 * Threading: a span belongs to whoever builds it; the encoders are pure. */
#ifndef LM_SPAN_H
#define LM_SPAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "trace.h"

/* OTLP SpanKind numbers. */
typedef enum lm_span_kind {
    LM_SPAN_INTERNAL = 1,
    LM_SPAN_SERVER = 2,
    LM_SPAN_CLIENT = 3,
    LM_SPAN_PRODUCER = 4,
    LM_SPAN_CONSUMER = 5
} lm_span_kind;

/* OTLP StatusCode numbers. */
typedef enum lm_span_status { LM_SPAN_UNSET = 0, LM_SPAN_OK = 1, LM_SPAN_ERROR = 2 } lm_span_status;

#define LM_SPAN_MAX_ATTRS 12
#define LM_SPAN_TEXT      640
#define LM_SPAN_NAME      96

typedef enum { LM_ATTR_STR, LM_ATTR_INT, LM_ATTR_DOUBLE, LM_ATTR_BOOL } lm_attr_type;

typedef struct lm_span_attr {
    const char *key; /* static string, not owned */
    lm_attr_type type;
    union {
        struct {
            uint16_t off, len; /* into lm_span.text */
        } s;
        int64_t i;
        double d;
        bool b;
    } v;
} lm_span_attr;

typedef struct lm_span {
    uint8_t trace_id[16];
    uint8_t span_id[8];
    uint8_t parent_span_id[8]; /* all zero: a root span */
    uint8_t flags;             /* W3C trace flags; bit 0: sampled */
    lm_span_kind kind;
    lm_span_status status;
    uint64_t start_unix_ns, end_unix_ns;
    char name[LM_SPAN_NAME];
    bool has_link;
    uint8_t link_trace_id[16], link_span_id[8];
    uint8_t n_attrs;
    lm_span_attr attrs[LM_SPAN_MAX_ATTRS];
    uint16_t text_len;
    char text[LM_SPAN_TEXT];
} lm_span;

/* Unix time now in nanoseconds (CLOCK_REALTIME). */
uint64_t lm_span_now_unix_ns(void);
/* Converts a CLOCK_MONOTONIC (uv_hrtime) reading to Unix nanoseconds, with an offset taken
 * once per process. */
uint64_t lm_span_unix_from_mono(uint64_t mono_ns);

/* Starts s as the span of ctx: its trace id, span id = ctx's span, parent = ctx's parent.
 * name is truncated to LM_SPAN_NAME - 1 bytes. */
void lm_span_init(lm_span *s, const lm_trace_ctx *ctx, lm_span_kind kind, const char *name,
                  uint64_t start_unix_ns);
/* Attributes; a span with LM_SPAN_MAX_ATTRS attributes, or a string that no longer fits
 * its text area, keeps what it has (a string is cut at a UTF-8 boundary). Setting a key
 * twice adds it twice: callers set each key once. */
void lm_span_attr_str(lm_span *s, const char *key, const char *v, size_t len);
void lm_span_attr_cstr(lm_span *s, const char *key, const char *v);
void lm_span_attr_int(lm_span *s, const char *key, int64_t v);
void lm_span_attr_double(lm_span *s, const char *key, double v);
void lm_span_attr_bool(lm_span *s, const char *key, bool v);
/* Links s to another span (an applied event to the span that published it). */
void lm_span_link(lm_span *s, const lm_trace_ctx *linked);
/* Looks an attribute up by key; NULL when absent. */
const lm_span_attr *lm_span_attr_get(const lm_span *s, const char *key);

/* Resource attributes of the process: "key=value" pairs already parsed (tracer.h). */
typedef struct lm_resource {
    size_t n;
    char *keys[32]; /* owned by whoever fills it (the tracer) */
    char *values[32];
} lm_resource;

/* Appends one OTLP/JSON ExportTraceServiceRequest holding spans[0..n) of one resource
 * (opentelemetry-proto's JSON mapping: hex ids, 64-bit integers as strings). */
void lm_span_encode_otlp_json(lm_buf *out, const lm_resource *res, const lm_span *spans, size_t n);

#endif
