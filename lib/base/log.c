/* log.c — JSON-lines logger. See log.h. */
#include "log.h"

#include "buf.h"

#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define ACCESS_FLUSH_BYTES (32 * 1024)

static char log_service[64] = "lotmesh";
static atomic_int log_level = LM_LOG_INFO;
static _Thread_local lm_buf access_buf;

static const char *level_names[] = {"debug", "info", "warn", "error", "fatal"};

void lm_log_init(const char *service, lm_log_level level)
{
    snprintf(log_service, sizeof log_service, "%s", service);
    atomic_store(&log_level, (int)level);
}

void lm_log_set_level(lm_log_level level)
{
    atomic_store(&log_level, (int)level);
}

bool lm_log_enabled(lm_log_level level)
{
    return (int)level >= atomic_load(&log_level);
}

bool lm_log_level_parse(const char *s, lm_log_level *out)
{
    for (int i = 0; i <= LM_LOG_ERROR; i++) {
        if (strcmp(s, level_names[i]) == 0) {
            *out = (lm_log_level)i;
            return true;
        }
    }
    if (strcmp(s, "warning") == 0) {
        *out = LM_LOG_WARN;
        return true;
    }
    return false;
}

/* "YYYY-MM-DDTHH:MM:SS" of the last second formatted on this thread */
static _Thread_local time_t ts_cached_sec = -1;
static _Thread_local char ts_cached[64];

static void append_time(lm_buf *b)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    if (ts.tv_sec != ts_cached_sec) {
        struct tm tm;
        gmtime_r(&ts.tv_sec, &tm);
        snprintf(ts_cached, sizeof ts_cached, "%04d-%02d-%02dT%02d:%02d:%02d", tm.tm_year + 1900,
                 tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
        ts_cached_sec = ts.tv_sec;
    }
    unsigned ms = (unsigned)(ts.tv_nsec / 1000000);
    char frac[6] = {'.', (char)('0' + ms / 100), (char)('0' + ms / 10 % 10), (char)('0' + ms % 10),
                    'Z'};
    lm_buf_append(b, ts_cached, 19);
    lm_buf_append(b, frac, 5);
}

void lm_log_time_now(char *out, size_t outlen)
{
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    snprintf(out, outlen, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000);
}

static void write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            return; /* stderr gone: nothing sensible left to do */
        }
        p += w;
        n -= (size_t)w;
    }
}

static void append_head(lm_buf *b, lm_log_level level, const lm_log_ctx *ctx)
{
    lm_buf_append_str(b, "{\"time\":\"");
    append_time(b);
    lm_buf_append_str(b, "\",\"level\":\"");
    lm_buf_append_str(b, level_names[level]);
    lm_buf_append_str(b, "\",\"service\":\"");
    lm_buf_append_json_escaped(b, log_service, strlen(log_service));
    lm_buf_append_char(b, '"');
    if (ctx && ctx->request_id) {
        lm_buf_append_str(b, ",\"request_id\":\"");
        lm_buf_append_json_escaped(b, ctx->request_id, strlen(ctx->request_id));
        lm_buf_append_char(b, '"');
    }
    if (ctx && ctx->trace) {
        char hex[33];
        lm_trace_id_hex(ctx->trace, hex);
        lm_buf_append(b, ",\"trace_id\":\"", 13);
        lm_buf_append(b, hex, 32);
        lm_trace_span_id_hex(ctx->trace->span_id, hex);
        lm_buf_append(b, "\",\"span_id\":\"", 13);
        lm_buf_append(b, hex, 16);
        lm_buf_append_char(b, '"');
    }
}

void lm_log(lm_log_level level, const lm_log_ctx *ctx, const char *fmt, ...)
{
    if (!lm_log_enabled(level)) return;
    lm_buf msg = LM_BUF_INIT, line = LM_BUF_INIT;
    va_list ap;
    va_start(ap, fmt);
    lm_buf_vprintf(&msg, fmt, ap);
    va_end(ap);
    append_head(&line, level, ctx);
    lm_buf_append_str(&line, ",\"msg\":\"");
    lm_buf_append_json_escaped(&line, msg.data ? msg.data : "", msg.len);
    lm_buf_append_str(&line, "\"}\n");
    write_all(STDERR_FILENO, line.data, line.len);
    lm_buf_free(&msg);
    lm_buf_free(&line);
}

void lm_log_access(const lm_access_entry *e)
{
    if (!lm_log_enabled(LM_LOG_INFO)) return;
    lm_buf *b = &access_buf;
    append_head(b, LM_LOG_INFO, &e->ctx);
    lm_buf_append_str(b, ",\"msg\":\"access\",\"method\":\"");
    lm_buf_append_json_escaped(b, e->method, strlen(e->method));
    lm_buf_append_str(b, "\",\"path\":\"");
    lm_buf_append_json_escaped(b, e->path, e->path_len);
    lm_buf_append_char(b, '"');
    if (e->route) {
        lm_buf_append_str(b, ",\"route\":\"");
        lm_buf_append_json_escaped(b, e->route, strlen(e->route));
        lm_buf_append_char(b, '"');
    }
    unsigned long long us =
        e->duration_ms > 0 ? (unsigned long long)(e->duration_ms * 1e3 + 0.5) : 0;
    char frac[4] = {(char)('0' + us / 100 % 10), (char)('0' + us / 10 % 10), (char)('0' + us % 10),
                    0};
    lm_buf_append_str(b, ",\"status\":");
    lm_buf_append_u64(b, (unsigned long long)(e->status < 0 ? 0 : e->status));
    lm_buf_append_str(b, ",\"bytes\":");
    lm_buf_append_u64(b, e->bytes_out);
    lm_buf_append_str(b, ",\"duration_ms\":");
    lm_buf_append_u64(b, us / 1000);
    lm_buf_append_char(b, '.');
    lm_buf_append(b, frac, 3);
    if (e->peer) {
        lm_buf_append_str(b, ",\"peer\":\"");
        lm_buf_append_json_escaped(b, e->peer, strlen(e->peer));
        lm_buf_append_char(b, '"');
    }
    lm_buf_append_str(b, "}\n");
    if (b->len >= ACCESS_FLUSH_BYTES) lm_log_flush_thread();
}

void lm_log_flush_thread(void)
{
    if (access_buf.len == 0) return;
    write_all(STDERR_FILENO, access_buf.data, access_buf.len);
    lm_buf_reset(&access_buf);
}

void lm_log_thread_end(void)
{
    lm_log_flush_thread();
    lm_buf_free(&access_buf); /* thread-local: nobody else can free it */
}
