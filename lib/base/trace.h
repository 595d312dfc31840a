/* trace.h — W3C Trace Context (traceparent) and request ids (lm_trace).
 *
 * Every request carries a trace id (16 bytes), its own span id (8 bytes) and the span id of
 * its parent, taken from a valid incoming `traceparent` or freshly generated. Outgoing calls
 * send lm_trace_format_child(), so a trace runs gateway -> service -> service -> event.
 * Span export is a later concern; this module only parses, validates and generates.
 *
 * Random ids come from a per-thread xoshiro256** generator seeded from getrandom(2): fast,
 * lock-free, and unpredictable enough for ids (not for secrets: use lm_trace_random_bytes there).
 */
#ifndef LM_TRACE_H
#define LM_TRACE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define LM_TRACEPARENT_LEN 55 /* "00-" 32 "-" 16 "-" 2 */
#define LM_REQUEST_ID_MAX  128

typedef struct lm_trace_ctx {
    uint8_t trace_id[16];
    uint8_t span_id[8];        /* this request's span */
    uint8_t parent_span_id[8]; /* all zero when this request started the trace */
    uint8_t flags;             /* bit 0: sampled */
    bool has_parent;
} lm_trace_ctx;

/* Fast per-thread random numbers (ids, jitter). Thread-safe: each thread has its own state. */
uint64_t lm_trace_rand64(void);
/* Cryptographically secure bytes from getrandom(2); returns 0 or -errno. */
int lm_trace_random_bytes(void *out, size_t n);

/* Parses a traceparent header value (version 00, or a later version's first four fields).
 * Returns true when valid; on false *ctx is untouched. */
bool lm_trace_parse(const char *value, size_t len, lm_trace_ctx *ctx);
/* Starts ctx from a valid traceparent (as its child) or as a new sampled trace. */
void lm_trace_begin(lm_trace_ctx *ctx, const char *traceparent, size_t len);
/* Writes "00-<trace>-<span>-<flags>" for this span into out (LM_TRACEPARENT_LEN + 1 bytes). */
void lm_trace_format(const lm_trace_ctx *ctx, char *out);
/* Makes a child context (same trace, new span, parent = ctx's span). */
void lm_trace_child(const lm_trace_ctx *ctx, lm_trace_ctx *child);
/* Hex forms, NUL-terminated: out has 33 / 17 bytes. */
void lm_trace_id_hex(const lm_trace_ctx *ctx, char out[33]);
void lm_trace_span_id_hex(const uint8_t id[8], char out[17]);

/* A client-supplied X-Request-ID is kept when 1..128 bytes of [A-Za-z0-9._:@/+=-];
 * otherwise (or when absent) a fresh 32-hex-digit id is written. out has 129 bytes. */
void lm_trace_request_id_assign(const char *value, size_t len, char out[LM_REQUEST_ID_MAX + 1]);

void lm_trace_hex_encode(const uint8_t *in, size_t n, char *out); /* writes 2n chars + NUL */

#endif
