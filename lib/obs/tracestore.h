/* tracestore.h — a bounded in-memory store of recent traces fed with OTLP/HTTP JSON
 * (lm_tracestore): the gateway's embedded trace receiver behind POST /v1/traces and the
 * dashboard's trace list and waterfall (DESIGN 3.7). Part of the obs layer.
 *
 * Ingestion parses an ExportTraceServiceRequest (opentelemetry-proto JSON mapping: hex ids,
 * 64-bit integers as strings or numbers, kind and status code as numbers) strictly: a
 * request with any malformed span is refused as a whole with a precise reason. Each span is
 * kept normalised (ids in hex, service.name of its resource, times in Unix nanoseconds,
 * attributes as a flat object; strings cut at 256 bytes, 32 attributes at most).
 *
 * Bounds: at most max_traces traces (the least recently updated one is evicted) and at most
 * max_spans spans per trace (further spans of that trace are counted as dropped).
 *
 * Threading: every function from any thread; one mutex guards the store. Results are deep
 * copies the caller owns. */
#ifndef LM_TRACESTORE_H
#define LM_TRACESTORE_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

typedef struct lm_tracestore lm_tracestore;

lm_tracestore *lm_tracestore_new(size_t max_traces, size_t max_spans);
void lm_tracestore_free(lm_tracestore *ts);

/* Returns the number of spans taken (>= 0), or -1 with a one-line reason in err (nothing
 * is stored then). */
long lm_tracestore_ingest(lm_tracestore *ts, const char *body, size_t len, char *err,
                          size_t errlen);

/* The most recently started traces first, at most limit: [{trace_id, name (the root span's,
 * or the earliest span's), service, start_unix_nano (string), duration_ms, spans, errors}]. */
json_t *lm_tracestore_recent(lm_tracestore *ts, size_t limit);
/* The spans of one trace ordered by start: [{trace_id, span_id, parent_span_id, name, kind,
 * service, start_unix_nano, end_unix_nano (strings), duration_ms, status, attributes}], or
 * NULL when the store does not hold it. */
json_t *lm_tracestore_get(lm_tracestore *ts, const char *trace_id_hex);

typedef struct lm_tracestore_stats {
    uint64_t spans_received, spans_dropped, traces_evicted, requests_refused;
    size_t traces, spans;
} lm_tracestore_stats;
void lm_tracestore_stats_get(lm_tracestore *ts, lm_tracestore_stats *out);

#endif
