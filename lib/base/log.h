/* log.h — structured logging: one JSON object per line on stderr (lm_log).
 *
 * Fields: time (RFC 3339, UTC, ms), level, service, msg, and when a request is in scope
 * request_id, trace_id, span_id. Lines are written with a single write(2), so lines from
 * different threads never interleave. Access-log lines are buffered per thread and written
 * once per event-loop iteration (lm_log_flush_thread), so logging every request costs one
 * syscall per batch, not per request.
 *
 * Threading: every function may be called from any thread after lm_log_init().
 * Secrets must never be passed in: callers log ids, never tokens or passwords. */
#ifndef LM_LOG_H
#define LM_LOG_H

#include <stdbool.h>
#include <stddef.h>

#include "trace.h"

typedef enum { LM_LOG_DEBUG, LM_LOG_INFO, LM_LOG_WARN, LM_LOG_ERROR, LM_LOG_FATAL } lm_log_level;

/* What ties a log line to a request; any member may be NULL. */
typedef struct lm_log_ctx {
    const char *request_id;
    const lm_trace_ctx *trace;
} lm_log_ctx;

/* service: copied. Call once at start-up, before threads start. */
void lm_log_init(const char *service, lm_log_level level);
void lm_log_set_level(lm_log_level level);
bool lm_log_enabled(lm_log_level level);
/* Parses "debug|info|warn|error"; returns false on anything else. */
bool lm_log_level_parse(const char *s, lm_log_level *out);

void lm_log(lm_log_level level, const lm_log_ctx *ctx, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define lm_log_debug(...) lm_log(LM_LOG_DEBUG, NULL, __VA_ARGS__)
#define lm_log_info(...)  lm_log(LM_LOG_INFO, NULL, __VA_ARGS__)
#define lm_log_warn(...)  lm_log(LM_LOG_WARN, NULL, __VA_ARGS__)
#define lm_log_error(...) lm_log(LM_LOG_ERROR, NULL, __VA_ARGS__)

/* One access-log line, buffered in the calling thread until lm_log_flush_thread(). */
typedef struct lm_access_entry {
    const char *method;
    const char *path; /* raw path without query */
    size_t path_len;
    int status;
    unsigned long long bytes_out;
    double duration_ms;
    const char *route; /* template or NULL */
    const char *peer;  /* client address or NULL */
    lm_log_ctx ctx;
} lm_access_entry;

void lm_log_access(const lm_access_entry *e);
/* Writes this thread's buffered lines. Cheap when nothing is buffered. */
void lm_log_flush_thread(void);
/* Flushes and releases this thread's buffer; a thread that logged calls it before it ends. */
void lm_log_thread_end(void);

/* Formats now as RFC 3339 UTC with milliseconds into out (>= 25 bytes). */
void lm_log_time_now(char *out, size_t outlen);

#endif
