/* server.h — the HTTP server: N worker threads, one libuv loop and one SO_REUSEPORT listener
 * each (lm_server, lm_worker).
 *
 * The kernel spreads new connections over the workers' listeners; a connection then lives
 * on one loop for its whole life, so nothing in the request path takes a lock. Each worker
 * enforces the timeouts (header, body, idle keep-alive, write) with one sweep timer rather
 * than a timer per connection, caps its connections, and dispatches complete requests
 * through the router. Blocking work goes to libuv's thread pool from handlers.
 *
 * Ownership: the server borrows the router, which must outlive it; the observer is copied.
 * Threading: lm_server_new/start/shutdown/free from one control thread (main). Worker hooks
 * run on each worker thread. lm_worker_current() is valid on worker threads only. */
#ifndef LM_SERVER_H
#define LM_SERVER_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "http_conn.h"
#include "router.h"

typedef struct lm_server_config {
    const char *host; /* bind address, e.g. "127.0.0.1", "0.0.0.0", "::" */
    int port;         /* 0: an ephemeral port (lm_server_port tells which) */
    int workers;
    lm_conn_limits limits;
    /* per process; at the cap a new connection closes the worker's longest-idle keep-alive
     * connection to make room, or is closed at once when none is idle */
    size_t max_connections;
    /* open connections from one client address per process (0: no limit); beyond it the
     * address's new connections are closed at once */
    size_t max_connections_per_address;
    uint64_t header_timeout_ms;
    uint64_t body_timeout_ms;
    uint64_t idle_timeout_ms;
    uint64_t write_timeout_ms;
    bool access_log;
    /* Runs before the handler of routes whose template starts with guard_prefix; returns
     * false after answering the request itself (e.g. 401). NULL: none. */
    bool (*guard)(lm_req *req, void *ctx);
    void *guard_ctx;
    const char *guard_prefix;
} lm_server_config;

void lm_server_config_default(lm_server_config *cfg);

typedef struct lm_server lm_server;
typedef struct lm_worker lm_worker;
typedef void (*lm_worker_hook)(lm_worker *w, void *ctx);

/* What the server tells about its traffic (metrics, spans — the layers above connect them;
 * the HTTP layer knows neither). Every member may be NULL. Called on the worker thread that
 * serves the request or the connection; worker is its index. */
typedef struct lm_server_observer {
    void *ctx;
    /* A complete request head arrived and is about to be routed. */
    void (*request_started)(void *ctx, int worker, lm_req *req);
    /* The response is complete (or the connection failed it). dispatched: request_started
     * ran for it (false for protocol errors answered before routing). */
    void (*request_done)(void *ctx, int worker, const lm_req *req, int status, double seconds,
                         bool dispatched);
    /* A connection was accepted (+1) or closed (-1). */
    void (*connection)(void *ctx, int worker, int delta);
} lm_server_observer;

/* observer: copied; NULL for none. */
lm_server *lm_server_new(const lm_server_config *cfg, const lm_router *router,
                         const lm_server_observer *observer);
/* Runs on each worker thread: start before it accepts; stop once its connections are gone
 * during shutdown, so modules close the handles they keep on that loop and it can end. */
void lm_server_on_worker(lm_server *s, lm_worker_hook start, lm_worker_hook stop, void *ctx);
/* Binds every listener and starts the workers; returns once all accept connections.
 * On failure returns -errno and writes a one-line reason into err. */
int lm_server_start(lm_server *s, char *err, size_t errlen);
int lm_server_port(const lm_server *s);
/* Graceful stop: connections completed but not yet accepted are taken in, listeners close,
 * idle keep-alive connections get a 408 with Connection: close before anything is read from
 * them (a request crossing it is certain not to have run; a bare close would leave its
 * client in doubt) and a lingering close, in-flight requests finish with Connection: close;
 * whatever is left after deadline_ms is closed. Blocks until every worker thread has ended. */
void lm_server_shutdown(lm_server *s, uint64_t deadline_ms);
void lm_server_free(lm_server *s);

uv_loop_t *lm_worker_loop(lm_worker *w);
int lm_worker_index(const lm_worker *w);
lm_worker *lm_worker_current(void);
int lm_server_worker_count(const lm_server *s);

#endif
