/* tracer.c — sampling, the bounded span queue and the export thread (lm_tracer). */
#include "tracer.h"

#include "log.h"
#include "parse.h"
#include "url.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_HEADERS 16

static struct {
    lm_tracer_exporter exporter;
    lm_sampler sampler;
    lm_resource res;
    char host[256];
    char port[8];
    char path[1024];
    char *hdr_names[MAX_HEADERS], *hdr_values[MAX_HEADERS];
    size_t n_hdrs;
    uint64_t timeout_ms, delay_ms;
    size_t queue_cap, batch;
    lm_tracer_header_fn header_fn;
    void *header_ctx;

    pthread_mutex_t mu;
    pthread_cond_t cv;
    lm_span *queue; /* ring of queue_cap spans */
    size_t head, count;
    bool stop, started;
    uint64_t stop_deadline_ns;
    pthread_t thread;

    atomic_ullong submitted, exported, dropped, failures;
} T = {.exporter = LM_EXPORT_NONE,
       .sampler = {LM_SAMPLER_PB_ALWAYS_ON, 1.0},
       .mu = PTHREAD_MUTEX_INITIALIZER,
       .cv = PTHREAD_COND_INITIALIZER};

/* ---- sampler and resource ------------------------------------------------------------- */

static bool ratio_keep(const uint8_t trace_id[16], double ratio)
{
    if (ratio >= 1.0) return true;
    if (ratio <= 0.0) return false;
    uint64_t x = 0;
    for (int i = 8; i < 16; i++)
        x = (x << 8) | trace_id[i];
    return (double)(x >> 1) < ratio * 9223372036854775808.0;
}

bool lm_sampler_keep(const lm_sampler *s, const lm_trace_ctx *ctx)
{
    switch (s->kind) {
    case LM_SAMPLER_ALWAYS_ON:
        return true;
    case LM_SAMPLER_ALWAYS_OFF:
        return false;
    case LM_SAMPLER_RATIO:
        return ratio_keep(ctx->trace_id, s->ratio);
    case LM_SAMPLER_PB_ALWAYS_ON:
        return ctx->has_parent ? (ctx->flags & 1) : true;
    case LM_SAMPLER_PB_ALWAYS_OFF:
        return ctx->has_parent ? (ctx->flags & 1) : false;
    case LM_SAMPLER_PB_RATIO:
        return ctx->has_parent ? (ctx->flags & 1) : ratio_keep(ctx->trace_id, s->ratio);
    }
    return true;
}

static char *decode_dup(const char *s, size_t n)
{
    char *out = lm_xmalloc(n + 1);
    size_t len;
    if (!lm_url_decode(s, n, out, &len, false)) {
        free(out);
        return NULL;
    }
    out[len] = '\0';
    return out;
}

static char *trim_dup(const char *s, size_t n)
{
    while (n && (*s == ' ' || *s == '\t'))
        s++, n--;
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t'))
        n--;
    return decode_dup(s, n);
}

/* "k=v,k2=v2" into parallel arrays; false on a malformed list. */
static bool parse_pairs(const char *spec, char **keys, char **values, size_t *n, size_t max)
{
    const char *p = spec;
    while (*p) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        const char *eq = memchr(p, '=', len);
        if (len == 0) {
            p += end ? 1 : 0;
            if (!end) break;
            continue;
        }
        if (!eq || eq == p || *n >= max) return false;
        char *k = trim_dup(p, (size_t)(eq - p));
        char *v = trim_dup(eq + 1, len - (size_t)(eq - p) - 1);
        if (!k || !v || !*k) {
            free(k);
            free(v);
            return false;
        }
        keys[*n] = k;
        values[*n] = v;
        (*n)++;
        if (!end) break;
        p = end + 1;
    }
    return true;
}

bool lm_resource_parse(lm_resource *res, const char *spec)
{
    char *keys[32], *values[32];
    size_t n = 0;
    bool ok = parse_pairs(spec, keys, values, &n, 32);
    for (size_t i = 0; i < n; i++) {
        if (ok) lm_resource_set(res, keys[i], values[i]);
        free(keys[i]);
        free(values[i]);
    }
    return ok;
}

void lm_resource_set(lm_resource *res, const char *key, const char *value)
{
    for (size_t i = 0; i < res->n; i++)
        if (!strcmp(res->keys[i], key)) {
            free(res->values[i]);
            res->values[i] = lm_xstrdup(value);
            return;
        }
    if (res->n == 32) return;
    res->keys[res->n] = lm_xstrdup(key);
    res->values[res->n++] = lm_xstrdup(value);
}

void lm_resource_free(lm_resource *res)
{
    for (size_t i = 0; i < res->n; i++) {
        free(res->keys[i]);
        free(res->values[i]);
    }
    res->n = 0;
}

/* ---- configuration -------------------------------------------------------------------- */

static const char *first(lm_cfg *cfg, const char *specific, const char *general, const char *def)
{
    const char *v = lm_cfg_str(cfg, specific, NULL);
    return v ? v : lm_cfg_str(cfg, general, def);
}

static void parse_endpoint(lm_cfg *cfg, const char *name, const char *url, bool append)
{
    if (strncasecmp(url, "http://", 7) != 0) {
        lm_cfg_error(cfg, name, "must be an http:// URL (got \"%.200s\")", url);
        return;
    }
    const char *h = url + 7;
    const char *slash = strchr(h, '/');
    size_t hostport = slash ? (size_t)(slash - h) : strlen(h);
    const char *colon = NULL;
    if (*h == '[') {
        const char *rb = memchr(h, ']', hostport);
        if (!rb) {
            lm_cfg_error(cfg, name, "has an unclosed IPv6 address (got \"%.200s\")", url);
            return;
        }
        snprintf(T.host, sizeof T.host, "%.*s", (int)(rb - h - 1), h + 1);
        if (rb + 1 < h + hostport && rb[1] == ':') colon = rb + 1;
    } else {
        colon = memchr(h, ':', hostport);
        size_t hl = colon ? (size_t)(colon - h) : hostport;
        if (hl == 0 || hl >= sizeof T.host) {
            lm_cfg_error(cfg, name, "has no host (got \"%.200s\")", url);
            return;
        }
        snprintf(T.host, sizeof T.host, "%.*s", (int)hl, h);
    }
    snprintf(T.port, sizeof T.port, "80");
    if (colon) {
        size_t pl = (size_t)(h + hostport - colon - 1);
        char tmp[8] = "";
        if (pl == 0 || pl > 5) {
            lm_cfg_error(cfg, name, "has a bad port (got \"%.200s\")", url);
            return;
        }
        memcpy(tmp, colon + 1, pl);
        long long port;
        if (!lm_parse_int(tmp, &port) || port < 1 || port > 65535) {
            lm_cfg_error(cfg, name, "has a bad port (got \"%.200s\")", url);
            return;
        }
        snprintf(T.port, sizeof T.port, "%lld", port);
    }
    const char *path = slash ? slash : "";
    if (append) {
        size_t pl = strlen(path);
        while (pl && path[pl - 1] == '/')
            pl--;
        snprintf(T.path, sizeof T.path, "%.*s/v1/traces", (int)pl, path);
    } else {
        snprintf(T.path, sizeof T.path, "%s", *path ? path : "/");
    }
}

void lm_tracer_configure(lm_cfg *cfg, const char *service)
{
    static const char *const exporters[] = {"otlp", "console", "none", NULL};
    static const char *const samplers[] = {"always_on",
                                           "always_off",
                                           "traceidratio",
                                           "parentbased_always_on",
                                           "parentbased_always_off",
                                           "parentbased_traceidratio",
                                           NULL};
    T.exporter = (lm_tracer_exporter)lm_cfg_enum(cfg, "OTEL_TRACES_EXPORTER", "otlp", exporters);
    if (lm_cfg_bool(cfg, "OTEL_SDK_DISABLED", false)) T.exporter = LM_EXPORT_NONE;
    T.sampler.kind =
        (lm_sampler_kind)lm_cfg_enum(cfg, "OTEL_TRACES_SAMPLER", "parentbased_always_on", samplers);
    T.sampler.ratio = 1.0;
    const char *arg = lm_cfg_str(cfg, "OTEL_TRACES_SAMPLER_ARG", NULL);
    if (arg && (T.sampler.kind == LM_SAMPLER_RATIO || T.sampler.kind == LM_SAMPLER_PB_RATIO)) {
        char *end;
        errno = 0;
        double r = strtod(arg, &end);
        if (errno || end == arg || *end || !(r >= 0.0 && r <= 1.0))
            lm_cfg_error(cfg, "OTEL_TRACES_SAMPLER_ARG",
                         "must be a number from 0 to 1 (got \"%s\")", arg);
        else
            T.sampler.ratio = r;
    }
    const char *proto = first(cfg, "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
                              "OTEL_EXPORTER_OTLP_PROTOCOL", "http/json");
    if (T.exporter == LM_EXPORT_OTLP && strcmp(proto, "http/json") != 0)
        lm_cfg_error(cfg, "OTEL_EXPORTER_OTLP_PROTOCOL",
                     "must be http/json, the protocol lotmesh exports (got \"%s\")", proto);
    const char *ep = lm_cfg_str(cfg, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", NULL);
    if (ep)
        parse_endpoint(cfg, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", ep, false);
    else
        parse_endpoint(cfg, "OTEL_EXPORTER_OTLP_ENDPOINT",
                       lm_cfg_str(cfg, "OTEL_EXPORTER_OTLP_ENDPOINT", "http://localhost:4318"),
                       true);
    const char *hdrs =
        first(cfg, "OTEL_EXPORTER_OTLP_TRACES_HEADERS", "OTEL_EXPORTER_OTLP_HEADERS", NULL);
    if (hdrs && !parse_pairs(hdrs, T.hdr_names, T.hdr_values, &T.n_hdrs, MAX_HEADERS))
        lm_cfg_error(cfg, "OTEL_EXPORTER_OTLP_HEADERS",
                     "must be name=value[,name=value…] (at most 16)");
    for (size_t i = 0; i < T.n_hdrs; i++)
        if (strpbrk(T.hdr_names[i], "\r\n: ") || strpbrk(T.hdr_values[i], "\r\n"))
            lm_cfg_error(cfg, "OTEL_EXPORTER_OTLP_HEADERS", "has a malformed header (\"%.64s\")",
                         T.hdr_names[i]);
    const char *to =
        first(cfg, "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT", NULL);
    T.timeout_ms = 10000;
    if (to &&
        (!lm_parse_duration_ms(to, &T.timeout_ms) || T.timeout_ms == 0 || T.timeout_ms > 600000))
        lm_cfg_error(cfg, "OTEL_EXPORTER_OTLP_TIMEOUT",
                     "must be milliseconds from 1 to 600000 (got \"%s\")", to);
    T.queue_cap = (size_t)lm_cfg_int(cfg, "OTEL_BSP_MAX_QUEUE_SIZE", 2048, 1, 1 << 20);
    T.batch = (size_t)lm_cfg_int(cfg, "OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512, 1, 1 << 20);
    if (T.batch > T.queue_cap) T.batch = T.queue_cap;
    T.delay_ms = lm_cfg_duration_ms(cfg, "OTEL_BSP_SCHEDULE_DELAY", 5000, 1, 3600000);
    lm_resource_set(&T.res, "service.name", service);
    const char *ra = lm_cfg_str(cfg, "OTEL_RESOURCE_ATTRIBUTES", NULL);
    if (ra && !lm_resource_parse(&T.res, ra))
        lm_cfg_error(cfg, "OTEL_RESOURCE_ATTRIBUTES", "must be key=value[,key=value…]");
    const char *sn = lm_cfg_str(cfg, "OTEL_SERVICE_NAME", NULL);
    if (sn) lm_resource_set(&T.res, "service.name", sn);
    lm_resource_set(&T.res, "telemetry.sdk.name", "lotmesh");
    lm_resource_set(&T.res, "telemetry.sdk.language", "c");
}

void lm_tracer_set_header_fn(lm_tracer_header_fn fn, void *ctx)
{
    T.header_fn = fn;
    T.header_ctx = ctx;
}

bool lm_tracer_exporting(void)
{
    return T.exporter != LM_EXPORT_NONE;
}

bool lm_tracer_recording(void)
{
    return T.exporter != LM_EXPORT_NONE && T.started;
}

void lm_tracer_sample(lm_trace_ctx *ctx)
{
    if (lm_sampler_keep(&T.sampler, ctx))
        ctx->flags |= 1;
    else
        ctx->flags &= (uint8_t)~1u;
}

static void bump(atomic_ullong *c, uint64_t n)
{
    atomic_fetch_add_explicit(c, n, memory_order_relaxed);
}

void lm_tracer_submit(const lm_span *s)
{
    if (!(s->flags & 1) || !lm_tracer_recording()) return;
    bump(&T.submitted, 1);
    pthread_mutex_lock(&T.mu);
    if (T.count == T.queue_cap || T.stop) {
        pthread_mutex_unlock(&T.mu);
        bump(&T.dropped, 1);
        return;
    }
    T.queue[(T.head + T.count) % T.queue_cap] = *s;
    T.count++;
    bool wake = T.count == T.batch;
    pthread_mutex_unlock(&T.mu);
    if (wake) pthread_cond_signal(&T.cv);
}

void lm_tracer_stats_get(lm_tracer_stats *out)
{
    out->submitted = atomic_load(&T.submitted);
    out->exported = atomic_load(&T.exported);
    out->dropped = atomic_load(&T.dropped);
    out->export_failures = atomic_load(&T.failures);
    pthread_mutex_lock(&T.mu);
    out->queued = T.count;
    pthread_mutex_unlock(&T.mu);
}

void lm_tracer_render_metrics(lm_buf *out, void *unused)
{
    (void)unused;
    lm_tracer_stats st;
    lm_tracer_stats_get(&st);
    lm_buf_printf(out,
                  "# HELP lotmesh_spans_submitted_total Sampled spans handed to the exporter.\n"
                  "# TYPE lotmesh_spans_submitted_total counter\n"
                  "lotmesh_spans_submitted_total %llu\n"
                  "# HELP lotmesh_spans_exported_total Spans the collector accepted.\n"
                  "# TYPE lotmesh_spans_exported_total counter\n"
                  "lotmesh_spans_exported_total %llu\n"
                  "# HELP lotmesh_spans_dropped_total Spans dropped: queue full, or export "
                  "failed after its retries.\n"
                  "# TYPE lotmesh_spans_dropped_total counter\n"
                  "lotmesh_spans_dropped_total %llu\n"
                  "# HELP lotmesh_span_export_failures_total Export attempts that failed.\n"
                  "# TYPE lotmesh_span_export_failures_total counter\n"
                  "lotmesh_span_export_failures_total %llu\n"
                  "# HELP lotmesh_span_queue_spans Spans waiting for export.\n"
                  "# TYPE lotmesh_span_queue_spans gauge\n"
                  "lotmesh_span_queue_spans %llu\n",
                  (unsigned long long)st.submitted, (unsigned long long)st.exported,
                  (unsigned long long)st.dropped, (unsigned long long)st.export_failures,
                  (unsigned long long)st.queued);
}

/* ---- the export thread ---------------------------------------------------------------- */

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void deadline_ts(struct timespec *ts, uint64_t ms)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
    uint64_t ns = (uint64_t)ts->tv_nsec + (ms % 1000) * 1000000u;
    ts->tv_sec += (time_t)(ms / 1000 + ns / 1000000000u);
    ts->tv_nsec = (long)(ns % 1000000000u);
}

static int wait_fd(int fd, short events, uint64_t deadline)
{
    for (;;) {
        uint64_t now = now_ns();
        if (now >= deadline) return -ETIMEDOUT;
        struct pollfd p = {.fd = fd, .events = events};
        int ms = (int)((deadline - now) / 1000000u) + 1;
        int r = poll(&p, 1, ms);
        if (r > 0) return 0;
        if (r < 0 && errno != EINTR) return -errno;
    }
}

/* POSTs body; returns the HTTP status, or -errno when no response came. */
static int http_post(const char *body, size_t len)
{
    uint64_t deadline = now_ns() + T.timeout_ms * 1000000u;
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *ai = NULL;
    if (getaddrinfo(T.host, T.port, &hints, &ai) != 0 || !ai) return -EHOSTUNREACH;
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        freeaddrinfo(ai);
        return -errno;
    }
    int rc = connect(fd, ai->ai_addr, ai->ai_addrlen);
    freeaddrinfo(ai);
    if (rc < 0 && errno != EINPROGRESS) {
        rc = -errno;
        close(fd);
        return rc;
    }
    if ((rc = wait_fd(fd, POLLOUT, deadline)) < 0) {
        close(fd);
        return rc;
    }
    int soerr = 0;
    socklen_t sl = sizeof soerr;
    getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl);
    if (soerr) {
        close(fd);
        return -soerr;
    }
    lm_buf req = LM_BUF_INIT;
    lm_buf_printf(&req,
                  "POST %s HTTP/1.1\r\nHost: %s:%s\r\nContent-Type: application/json\r\n"
                  "Content-Length: %zu\r\nConnection: close\r\nUser-Agent: lotmesh\r\n",
                  T.path, T.host, T.port, len);
    for (size_t i = 0; i < T.n_hdrs; i++)
        lm_buf_printf(&req, "%s: %s\r\n", T.hdr_names[i], T.hdr_values[i]);
    char hn[64], hv[2048];
    if (T.header_fn && T.header_fn(T.header_ctx, hn, sizeof hn, hv, sizeof hv) &&
        !strpbrk(hn, "\r\n:") && !strpbrk(hv, "\r\n"))
        lm_buf_printf(&req, "%s: %s\r\n", hn, hv);
    LM_BUF_APPEND_LIT(&req, "\r\n");
    lm_buf_append(&req, body, len);
    size_t off = 0;
    rc = 0;
    while (off < req.len) {
        ssize_t w = send(fd, req.data + off, req.len - off, MSG_NOSIGNAL);
        if (w > 0) {
            off += (size_t)w;
        } else if (w < 0 && (errno == EAGAIN || errno == EINTR)) {
            if ((rc = wait_fd(fd, POLLOUT, deadline)) < 0) break;
        } else {
            rc = -errno;
            break;
        }
    }
    lm_buf_free(&req);
    char head[64];
    size_t got = 0;
    while (rc == 0 && got < 12) {
        ssize_t r = recv(fd, head + got, sizeof head - 1 - got, 0);
        if (r > 0) {
            got += (size_t)r;
        } else if (r < 0 && (errno == EAGAIN || errno == EINTR)) {
            rc = wait_fd(fd, POLLIN, deadline);
        } else {
            rc = r == 0 ? -ECONNRESET : -errno;
        }
    }
    close(fd);
    if (rc < 0) return rc;
    head[got] = '\0';
    int status = 0;
    if (sscanf(head, "HTTP/1.%*d %d", &status) != 1) return -EPROTO;
    return status;
}

/* Sends one batch with retries; returns when it was accepted, refused or given up. */
static void export_batch(lm_span *spans, size_t n)
{
    lm_buf body = LM_BUF_INIT;
    lm_span_encode_otlp_json(&body, &T.res, spans, n);
    if (T.exporter == LM_EXPORT_CONSOLE) {
        lm_buf_append_char(&body, '\n');
        size_t off = 0;
        while (off < body.len) {
            ssize_t w = write(STDOUT_FILENO, body.data + off, body.len - off);
            if (w <= 0 && errno != EINTR) break;
            if (w > 0) off += (size_t)w;
        }
        bump(&T.exported, n);
        lm_buf_free(&body);
        return;
    }
    uint64_t backoff = 100;
    for (int attempt = 0;; attempt++) {
        int status = http_post(body.data, body.len);
        if (status >= 200 && status < 300) {
            bump(&T.exported, n);
            break;
        }
        bump(&T.failures, 1);
        bool retryable = status < 0 || status == 408 || status == 429 || status >= 500;
        if (attempt == 0 || !retryable) {
            char why[96];
            if (status < 0)
                snprintf(why, sizeof why, "%s", strerror(-status));
            else
                snprintf(why, sizeof why, "HTTP %d", status);
            lm_log_warn("span export to http://%s:%s%s failed (%s); retrying with backoff", T.host,
                        T.port, T.path, why);
        }
        if (!retryable || attempt == 7) {
            bump(&T.dropped, n);
            break;
        }
        pthread_mutex_lock(&T.mu);
        struct timespec ts;
        deadline_ts(&ts, backoff / 2 + lm_trace_rand64() % (backoff / 2 + 1));
        bool stopping = T.stop;
        while (!stopping && pthread_cond_timedwait(&T.cv, &T.mu, &ts) != ETIMEDOUT)
            stopping = T.stop;
        stopping = T.stop && now_ns() >= T.stop_deadline_ns;
        pthread_mutex_unlock(&T.mu);
        if (stopping) {
            bump(&T.dropped, n);
            break;
        }
        backoff = backoff * 2 > 5000 ? 5000 : backoff * 2;
    }
    lm_buf_free(&body);
}

static void *export_main(void *arg)
{
    (void)arg;
    lm_span *batch = lm_xmalloc(T.batch * sizeof *batch);
    pthread_mutex_lock(&T.mu);
    for (;;) {
        if (T.count < T.batch && !T.stop) {
            struct timespec ts;
            deadline_ts(&ts, T.delay_ms);
            while (T.count < T.batch && !T.stop)
                if (pthread_cond_timedwait(&T.cv, &T.mu, &ts) == ETIMEDOUT) break;
        }
        if (T.stop && (T.count == 0 || now_ns() >= T.stop_deadline_ns)) break;
        size_t n = T.count < T.batch ? T.count : T.batch;
        for (size_t i = 0; i < n; i++)
            batch[i] = T.queue[(T.head + i) % T.queue_cap];
        T.head = (T.head + n) % T.queue_cap;
        T.count -= n;
        pthread_mutex_unlock(&T.mu);
        if (n) export_batch(batch, n);
        pthread_mutex_lock(&T.mu);
    }
    bump(&T.dropped, T.count);
    T.count = 0;
    pthread_mutex_unlock(&T.mu);
    free(batch);
    lm_log_thread_end();
    return NULL;
}

int lm_tracer_start(void)
{
    if (T.exporter == LM_EXPORT_NONE || T.started) return 0;
    T.queue = lm_xcalloc(T.queue_cap, sizeof *T.queue);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_destroy(&T.cv);
    pthread_cond_init(&T.cv, &ca);
    pthread_condattr_destroy(&ca);
    T.stop = false;
    int rc = pthread_create(&T.thread, NULL, export_main, NULL);
    if (rc) return -rc;
    T.started = true;
    return 0;
}

void lm_tracer_shutdown(uint64_t deadline_ms)
{
    if (!T.started) return;
    pthread_mutex_lock(&T.mu);
    T.stop = true;
    T.stop_deadline_ns = now_ns() + deadline_ms * 1000000u;
    pthread_mutex_unlock(&T.mu);
    pthread_cond_broadcast(&T.cv);
    pthread_join(T.thread, NULL);
    T.started = false;
    free(T.queue);
    T.queue = NULL;
    for (size_t i = 0; i < T.n_hdrs; i++) {
        free(T.hdr_names[i]);
        free(T.hdr_values[i]);
    }
    T.n_hdrs = 0;
    lm_resource_free(&T.res);
}
