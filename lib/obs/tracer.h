/* tracer.h — the process's span pipeline (lm_tracer): sampling, a bounded queue, and a
 * background thread that batches spans and exports them over OTLP/HTTP (JSON), to the
 * console, or nowhere. Part of the obs layer: uses only base (config, buffers, logging,
 * trace context) and libc sockets; it speaks the few lines of HTTP/1.1 a POST needs itself,
 * so nothing here depends on the http layer.
 *
 * Configuration, the OpenTelemetry SDK environment variables (read by lm_tracer_configure):
 *   OTEL_SDK_DISABLED                   true: exporter none
 *   OTEL_TRACES_EXPORTER                otlp (default) | console | none
 *   OTEL_EXPORTER_OTLP_TRACES_ENDPOINT  used as is, e.g. http://collector:4318/v1/traces
 *   OTEL_EXPORTER_OTLP_ENDPOINT         base URL; "/v1/traces" is appended
 *                                       (default http://localhost:4318)
 *   OTEL_EXPORTER_OTLP_PROTOCOL / _TRACES_PROTOCOL   http/json (http/protobuf and grpc are
 *                                       refused with one line at start-up)
 *   OTEL_EXPORTER_OTLP_HEADERS / _TRACES_HEADERS     k=v,k2=v2 (values percent-decoded)
 *   OTEL_EXPORTER_OTLP_TIMEOUT / _TRACES_TIMEOUT     ms per export attempt (10000)
 *   OTEL_SERVICE_NAME                   service.name (default: the process's MODULE_NAME)
 *   OTEL_RESOURCE_ATTRIBUTES            k=v,k2=v2 (percent-decoded values)
 *   OTEL_TRACES_SAMPLER                 always_on | always_off | traceidratio |
 *                                       parentbased_always_on (default) |
 *                                       parentbased_always_off | parentbased_traceidratio
 *   OTEL_TRACES_SAMPLER_ARG             the ratio, 0..1 (default 1)
 *   OTEL_BSP_MAX_QUEUE_SIZE             queue bound in spans (2048)
 *   OTEL_BSP_MAX_EXPORT_BATCH_SIZE      spans per export (512)
 *   OTEL_BSP_SCHEDULE_DELAY             ms between exports of a partial batch (5000)
 *
 * Sampling: traceidratio keeps a trace when the last 8 bytes of its id, as a big-endian
 * number shifted right by one, are below ratio * 2^63 — the same decision in every process,
 * so parentbased_traceidratio keeps a trace whole across processes (the root decides, the
 * others follow the sampled flag).
 *
 * Export: lm_tracer_submit copies a span into the queue under a mutex held for a memcpy; a
 * full queue drops the span and counts it (lotmesh_spans_dropped_total in /metrics), so a
 * request never waits. The export thread sends a batch when it is full or the schedule
 * delay passed; a failed export (no connection, 408/429/5xx) is retried with exponential
 * backoff (100 ms doubling to 5 s, 8 attempts), spans are dropped (counted) after that or
 * on a 4xx; meanwhile new spans queue up to the bound.
 *
 * Threading: configure/start/shutdown from the main thread at start-up and stop; submit,
 * sample and render from any thread; the headers callback runs on the export thread. */
#ifndef LM_TRACER_H
#define LM_TRACER_H

#include <stdbool.h>
#include <stdint.h>

#include "buf.h"
#include "config.h"
#include "span.h"
#include "trace.h"

typedef enum { LM_EXPORT_OTLP, LM_EXPORT_CONSOLE, LM_EXPORT_NONE } lm_tracer_exporter;

typedef enum {
    LM_SAMPLER_ALWAYS_ON,
    LM_SAMPLER_ALWAYS_OFF,
    LM_SAMPLER_RATIO,
    LM_SAMPLER_PB_ALWAYS_ON,
    LM_SAMPLER_PB_ALWAYS_OFF,
    LM_SAMPLER_PB_RATIO
} lm_sampler_kind;

typedef struct lm_sampler {
    lm_sampler_kind kind;
    double ratio;
} lm_sampler;

/* Does the sampler keep a span whose context is ctx (parent from has_parent/flags)? */
bool lm_sampler_keep(const lm_sampler *s, const lm_trace_ctx *ctx);
/* Parses "k=v,k2=v2" (percent-decoded values) into res (appends; keys/values malloc'd).
 * Returns false on a malformed list. */
bool lm_resource_parse(lm_resource *res, const char *spec);
void lm_resource_set(lm_resource *res, const char *key, const char *value); /* replaces */
void lm_resource_free(lm_resource *res);

/* Reads the OTEL_* variables; errors are recorded in cfg. service: service.name unless
 * OTEL_SERVICE_NAME is set. Call once, before lm_tracer_start. */
void lm_tracer_configure(lm_cfg *cfg, const char *service);
/* An extra request header for every export (e.g. Authorization with a fresh service token):
 * fn writes the header's name and value; returns false for none. Runs on the export thread.
 * Set before lm_tracer_start. */
typedef bool (*lm_tracer_header_fn)(void *ctx, char *name, size_t name_len, char *value,
                                    size_t value_len);
void lm_tracer_set_header_fn(lm_tracer_header_fn fn, void *ctx);
/* Starts the export thread (nothing when the exporter is none). Returns 0 or -errno. */
int lm_tracer_start(void);
/* Exports what is queued (waiting at most deadline_ms) and ends the thread. */
void lm_tracer_shutdown(uint64_t deadline_ms);

/* true when the configured exporter is not none (valid after lm_tracer_configure). */
bool lm_tracer_exporting(void);
/* true when spans are recorded (an exporter other than none was started). */
bool lm_tracer_recording(void);
/* Applies the sampler to ctx: sets or clears its sampled flag. */
void lm_tracer_sample(lm_trace_ctx *ctx);
/* Queues a copy of s when it is sampled and the tracer records; never blocks. */
void lm_tracer_submit(const lm_span *s);
/* Prometheus text: spans queued, exported, dropped; exports failed. */
void lm_tracer_render_metrics(lm_buf *out, void *unused);

typedef struct lm_tracer_stats {
    uint64_t submitted, exported, dropped, export_failures, queued;
} lm_tracer_stats;
void lm_tracer_stats_get(lm_tracer_stats *out);

#endif
