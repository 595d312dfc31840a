/* metrics.h — Prometheus metrics of the HTTP runtime (lm_metrics).
 *
 * Per worker shard: requests by route template x method x status class, a latency histogram
 * by route, in-flight requests and open connections. Each shard is written only by its own
 * worker thread with relaxed atomics (no lock, no contended cache line) and summed on scrape.
 * Modules with metrics of their own (registry client, breakers, pools …) add a renderer that
 * appends Prometheus text at scrape time.
 *
 * Ownership: the route names are copied; the metrics object outlives the server.
 * Threading: lm_metrics_observe/inflight/connections from the shard's worker only;
 * lm_metrics_render from any thread; lm_metrics_add_renderer before the workers start. */
#ifndef LM_METRICS_H
#define LM_METRICS_H

#include "buf.h"
#include <stddef.h>

typedef struct lm_metrics lm_metrics;
typedef void (*lm_metrics_renderer)(lm_buf *out, void *ctx);

/* The methods counted apart; every other method counts as LM_METRICS_OTHER. */
typedef enum {
    LM_METRICS_GET,
    LM_METRICS_HEAD,
    LM_METRICS_POST,
    LM_METRICS_PUT,
    LM_METRICS_PATCH,
    LM_METRICS_DELETE,
    LM_METRICS_OPTIONS,
    LM_METRICS_OTHER,
    LM_METRICS_N_METHODS
} lm_metrics_method;

/* route_names[i]: the template of route id i (copied), rendered as route="…". */
lm_metrics *lm_metrics_new(int n_workers, const char *const *route_names, size_t n_routes);
void lm_metrics_free(lm_metrics *m);
/* route_id: the route whose path matched, also for a 405; -1 means no path matched (a 404,
 * or a request refused before routing), rendered as route="unmatched". */
void lm_metrics_observe(lm_metrics *m, int worker, int route_id, lm_metrics_method method,
                        int status, double seconds);
void lm_metrics_inflight(lm_metrics *m, int worker, int delta);
void lm_metrics_connections(lm_metrics *m, int worker, int delta);
void lm_metrics_add_renderer(lm_metrics *m, lm_metrics_renderer fn, void *ctx);
void lm_metrics_render(lm_metrics *m, lm_buf *out);

/* Process figures from /proc: resident set size and open file descriptors. */
long lm_metrics_process_rss_bytes(void);
int lm_metrics_process_open_fds(void);

#endif
