/* workerclient.c — one lm_client per worker thread. See workerclient.h. */
#include "workerclient.h"

#include "buf.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

struct lm_workerclient {
    lm_component comp;
    lm_client_config cc;
    int n;
    _Atomic(lm_client *) *clients; /* [worker]; set and cleared by that worker */
    /* held by lm_workerclient_stats while it reads a client and by worker_stop while it
     * takes its client away, so a reader on another thread never reads one being closed
     * (the get path stays lock-free: a worker only reads its own) */
    uv_mutex_t retire;
};

static void worker_start(lm_worker *w, void *ctx)
{
    lm_workerclient *wc = ctx;
    int i = lm_worker_index(w);
    if (i < wc->n) atomic_store(&wc->clients[i], lm_client_new(lm_worker_loop(w), &wc->cc));
}

static void worker_stop(lm_worker *w, void *ctx)
{
    lm_workerclient *wc = ctx;
    int i = lm_worker_index(w);
    if (i >= wc->n) return;
    uv_mutex_lock(&wc->retire);
    lm_client *c = atomic_exchange(&wc->clients[i], NULL);
    uv_mutex_unlock(&wc->retire);
    if (c) lm_client_close(c, NULL, NULL);
}

static void on_stopped(void *ctx)
{
    lm_workerclient *wc = ctx;
    uv_mutex_destroy(&wc->retire);
    free(wc->clients);
    free(wc);
}

lm_workerclient *lm_workerclient_new(const lm_component_env *env, const lm_client_config *cc)
{
    lm_workerclient *wc = lm_xcalloc(1, sizeof *wc);
    if (cc)
        wc->cc = *cc;
    else
        lm_client_config_default(&wc->cc);
    wc->n = env->workers;
    wc->clients = lm_xcalloc((size_t)wc->n, sizeof *wc->clients);
    if (uv_mutex_init(&wc->retire) != 0) abort();
    wc->comp = (lm_component){
        .ctx = wc, .worker_start = worker_start, .worker_stop = worker_stop, .stopped = on_stopped};
    return wc;
}

const lm_component *lm_workerclient_component(lm_workerclient *wc)
{
    return &wc->comp;
}

lm_client *lm_workerclient_get(lm_workerclient *wc, int worker)
{
    return worker >= 0 && worker < wc->n
               ? atomic_load_explicit(&wc->clients[worker], memory_order_relaxed)
               : NULL;
}

void lm_workerclient_stats(const lm_workerclient *wc, lm_client_stats *t)
{
    memset(t, 0, sizeof *t);
    uv_mutex_lock(&((lm_workerclient *)wc)->retire);
    for (int w = 0; w < wc->n; w++) {
        lm_client *c = atomic_load(&((lm_workerclient *)wc)->clients[w]);
        if (!c) continue;
        lm_client_stats st;
        lm_client_stats_get(c, &st);
        t->requests += st.requests;
        t->responses += st.responses;
        for (size_t e = 0; e < sizeof t->errors / sizeof t->errors[0]; e++)
            t->errors[e] += st.errors[e];
        t->retries += st.retries;
        t->connects += st.connects;
        t->reuses += st.reuses;
        t->conns_open += st.conns_open;
        t->conns_idle += st.conns_idle;
        t->queued += st.queued;
        t->inflight += st.inflight;
        t->resolves += st.resolves;
        t->resolve_cache_hits += st.resolve_cache_hits;
    }
    uv_mutex_unlock(&((lm_workerclient *)wc)->retire);
}
