/* component.h — a part of a process with a lifecycle (lm_component), and what it may know
 * of the process it runs in (lm_component_env).
 *
 * Modules below the app layer (the store, discovery and registration, the token guard …)
 * cannot see lm_app. Each describes its lifecycle as an lm_component — a table of hooks,
 * in the manner of nginx's module hooks — and the app layer runs them in order: worker
 * hooks on every worker thread, control hooks on the control loop, the ready check and the
 * metrics renderer on worker threads when /ready or /metrics is asked.
 *
 * Ownership: a component is copied by whoever installs it; ctx is borrowed and must outlive
 * the process's run (the stopped hook is the last call and may free it).
 * Threading: see each member. */
#ifndef LM_COMPONENT_H
#define LM_COMPONENT_H

#include <stdbool.h>
#include <uv.h>

#include "buf.h"
#include "server.h"

/* What a component may know of its process; valid from lm_app_new until the process ends. */
typedef struct lm_component_env {
    const char *name;   /* the service name (MODULE_NAME) */
    const char *host;   /* the bind address */
    int workers;        /* number of worker threads (indexes 0 .. workers-1) */
    uv_loop_t *control; /* the control loop on the main thread */
} lm_component_env;

/* Every member may be NULL. */
typedef struct lm_component {
    void *ctx;
    /* On each worker thread: before it accepts / after its connections are gone. Stop hooks
     * run in reverse order of installation, like destructors. */
    lm_worker_hook worker_start, worker_stop;
    /* On the control loop: after the server accepts (port: the bound port). */
    void (*started)(void *ctx, int port);
    /* On the control loop, before the server stops accepting (deregister here); must close
     * the control-loop handles the component keeps. */
    void (*stopping)(void *ctx);
    /* On the control loop, after every worker has ended (flush, close, free ctx). */
    void (*stopped)(void *ctx);
    /* /ready: true when ready, otherwise writes why. Any worker thread, concurrently; must
     * not block. ready_name names the check in the /ready document. */
    const char *ready_name;
    bool (*ready)(void *ctx, lm_buf *why);
    /* /metrics: appends Prometheus text. Any worker thread. */
    void (*metrics)(lm_buf *out, void *ctx);
} lm_component;

#endif
