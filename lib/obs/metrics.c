/* metrics.c — sharded counters and histograms, Prometheus text exposition. See metrics.h. */
#include "metrics.h"

#include <dirent.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define N_METHODS LM_METRICS_N_METHODS
#define N_CLASSES 5 /* 1xx .. 5xx */
static const double bucket_le[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                   0.1,    0.25,  0.5,    1,     2.5,  5,     10};
#define N_BUCKETS (sizeof bucket_le / sizeof bucket_le[0])
static const char *method_names[N_METHODS] = {"GET",   "HEAD",   "POST",    "PUT",
                                              "PATCH", "DELETE", "OPTIONS", "other"};

typedef struct route_stats {
    atomic_ullong requests[N_METHODS][N_CLASSES];
    atomic_ullong buckets[N_BUCKETS + 1]; /* last: +Inf */
    atomic_ullong sum_us;
} route_stats;

typedef struct shard {
    route_stats *routes; /* n_routes + 1; index 0 = unmatched */
    atomic_llong inflight;
    atomic_llong connections;
    char pad[64];
} shard;

typedef struct renderer {
    lm_metrics_renderer fn;
    void *ctx;
} renderer;

struct lm_metrics {
    int n_workers;
    size_t n_routes;
    char **route_names; /* n_routes, copied */
    shard *shards;
    renderer renderers[16];
    size_t n_renderers;
};

lm_metrics *lm_metrics_new(int n_workers, const char *const *route_names, size_t n_routes)
{
    lm_metrics *m = lm_xcalloc(1, sizeof *m);
    m->n_workers = n_workers;
    m->n_routes = n_routes;
    m->route_names = lm_xcalloc(n_routes ? n_routes : 1, sizeof *m->route_names);
    for (size_t i = 0; i < n_routes; i++)
        m->route_names[i] = lm_xstrdup(route_names[i]);
    m->shards = lm_xcalloc((size_t)n_workers, sizeof(shard));
    for (int i = 0; i < n_workers; i++)
        m->shards[i].routes = lm_xcalloc(m->n_routes + 1, sizeof(route_stats));
    return m;
}

void lm_metrics_free(lm_metrics *m)
{
    if (!m) return;
    for (int i = 0; i < m->n_workers; i++)
        free(m->shards[i].routes);
    for (size_t i = 0; i < m->n_routes; i++)
        free(m->route_names[i]);
    free(m->route_names);
    free(m->shards);
    free(m);
}

/* Single writer per shard: a relaxed load+store is enough and avoids a locked instruction. */
static inline void bump(atomic_ullong *c, unsigned long long by)
{
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + by,
                          memory_order_relaxed);
}

void lm_metrics_observe(lm_metrics *m, int worker, int route_id, lm_metrics_method method,
                        int status, double seconds)
{
    if (!m || worker < 0 || worker >= m->n_workers) return;
    size_t r = route_id >= 0 && (size_t)route_id < m->n_routes ? (size_t)route_id + 1 : 0;
    route_stats *s = &m->shards[worker].routes[r];
    int cls = status / 100 - 1;
    if (cls < 0) cls = 0;
    if (cls >= N_CLASSES) cls = N_CLASSES - 1;
    bump(&s->requests[(method >= 0 && method < N_METHODS ? method : LM_METRICS_OTHER)][cls], 1);
    size_t b = 0;
    while (b < N_BUCKETS && seconds > bucket_le[b])
        b++;
    bump(&s->buckets[b], 1);
    bump(&s->sum_us, (unsigned long long)(seconds * 1e6));
}

void lm_metrics_inflight(lm_metrics *m, int worker, int delta)
{
    if (m && worker >= 0 && worker < m->n_workers)
        atomic_fetch_add_explicit(&m->shards[worker].inflight, delta, memory_order_relaxed);
}

void lm_metrics_connections(lm_metrics *m, int worker, int delta)
{
    if (m && worker >= 0 && worker < m->n_workers)
        atomic_fetch_add_explicit(&m->shards[worker].connections, delta, memory_order_relaxed);
}

void lm_metrics_add_renderer(lm_metrics *m, lm_metrics_renderer fn, void *ctx)
{
    if (m->n_renderers < sizeof m->renderers / sizeof m->renderers[0])
        m->renderers[m->n_renderers++] = (renderer){fn, ctx};
}

static const char *route_label(const lm_metrics *m, size_t r)
{
    return r == 0 ? "unmatched" : m->route_names[r - 1];
}

static void label_value(lm_buf *out, const char *s)
{
    for (; *s; s++) {
        if (*s == '\\' || *s == '"') lm_buf_append_char(out, '\\');
        if (*s == '\n') {
            lm_buf_append_str(out, "\\n");
            continue;
        }
        lm_buf_append_char(out, *s);
    }
}

void lm_metrics_render(lm_metrics *m, lm_buf *out)
{
    lm_buf_append_str(out, "# HELP lotmesh_http_requests_total HTTP requests answered.\n"
                           "# TYPE lotmesh_http_requests_total counter\n");
    for (size_t r = 0; r <= m->n_routes; r++) {
        for (int me = 0; me < N_METHODS; me++) {
            for (int c = 0; c < N_CLASSES; c++) {
                unsigned long long sum = 0;
                for (int w = 0; w < m->n_workers; w++)
                    sum += atomic_load_explicit(&m->shards[w].routes[r].requests[me][c],
                                                memory_order_relaxed);
                if (!sum) continue;
                lm_buf_append_str(out, "lotmesh_http_requests_total{route=\"");
                label_value(out, route_label(m, r));
                lm_buf_printf(out, "\",method=\"%s\",status=\"%dxx\"} %llu\n", method_names[me],
                              c + 1, sum);
            }
        }
    }
    lm_buf_append_str(out, "# HELP lotmesh_http_request_duration_seconds Time from request "
                           "line to finished response.\n"
                           "# TYPE lotmesh_http_request_duration_seconds histogram\n");
    for (size_t r = 0; r <= m->n_routes; r++) {
        unsigned long long b[N_BUCKETS + 1] = {0}, sum_us = 0, total = 0;
        for (int w = 0; w < m->n_workers; w++) {
            route_stats *s = &m->shards[w].routes[r];
            for (size_t i = 0; i <= N_BUCKETS; i++)
                b[i] += atomic_load_explicit(&s->buckets[i], memory_order_relaxed);
            sum_us += atomic_load_explicit(&s->sum_us, memory_order_relaxed);
        }
        for (size_t i = 0; i <= N_BUCKETS; i++)
            total += b[i];
        if (!total) continue;
        unsigned long long cum = 0;
        for (size_t i = 0; i <= N_BUCKETS; i++) {
            cum += b[i];
            lm_buf_append_str(out, "lotmesh_http_request_duration_seconds_bucket{route=\"");
            label_value(out, route_label(m, r));
            if (i < N_BUCKETS)
                lm_buf_printf(out, "\",le=\"%g\"} %llu\n", bucket_le[i], cum);
            else
                lm_buf_printf(out, "\",le=\"+Inf\"} %llu\n", cum);
        }
        lm_buf_append_str(out, "lotmesh_http_request_duration_seconds_sum{route=\"");
        label_value(out, route_label(m, r));
        lm_buf_printf(out, "\"} %.6f\n", (double)sum_us / 1e6);
        lm_buf_append_str(out, "lotmesh_http_request_duration_seconds_count{route=\"");
        label_value(out, route_label(m, r));
        lm_buf_printf(out, "\"} %llu\n", total);
    }
    long long inflight = 0, conns = 0;
    for (int w = 0; w < m->n_workers; w++) {
        inflight += atomic_load_explicit(&m->shards[w].inflight, memory_order_relaxed);
        conns += atomic_load_explicit(&m->shards[w].connections, memory_order_relaxed);
    }
    lm_buf_printf(out,
                  "# HELP lotmesh_http_requests_in_flight Requests being handled.\n"
                  "# TYPE lotmesh_http_requests_in_flight gauge\n"
                  "lotmesh_http_requests_in_flight %lld\n"
                  "# HELP lotmesh_http_connections Open client connections.\n"
                  "# TYPE lotmesh_http_connections gauge\n"
                  "lotmesh_http_connections %lld\n"
                  "# HELP process_resident_memory_bytes Resident memory size in bytes.\n"
                  "# TYPE process_resident_memory_bytes gauge\n"
                  "process_resident_memory_bytes %ld\n"
                  "# HELP process_open_fds Number of open file descriptors.\n"
                  "# TYPE process_open_fds gauge\n"
                  "process_open_fds %d\n",
                  inflight, conns, lm_metrics_process_rss_bytes(), lm_metrics_process_open_fds());
    for (size_t i = 0; i < m->n_renderers; i++)
        m->renderers[i].fn(out, m->renderers[i].ctx);
}

long lm_metrics_process_rss_bytes(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    long pages = 0, rss = 0;
    if (!f) return -1;
    if (fscanf(f, "%ld %ld", &pages, &rss) != 2) rss = -1;
    fclose(f);
    return rss < 0 ? -1 : rss * sysconf(_SC_PAGESIZE);
}

int lm_metrics_process_open_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    int n = 0;
    if (!d) return -1;
    while (readdir(d))
        n++;
    closedir(d);
    return n - 3; /* ".", ".." and the directory's own descriptor */
}
