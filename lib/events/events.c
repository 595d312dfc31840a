/* events.c — a process's events: transport, feed, relay and consumer wired together
 * (events.h). */
#include "events.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "feed.h"
#include "log.h"
#include "relay.h"

struct lm_events {
    lm_db *db;
    uv_loop_t *control;
    char *service, *source, *broker_url, *producer;
    char **patterns;
    size_t n_patterns;
    lm_events_cfg cfg; /* strings point into the copies above */
    lm_feed *feed;
    const lm_component *feed_comp;
    lm_transport *t;
    lm_relay *relay;
    lm_consumer *consumer;
    uv_mutex_t lock; /* relay, against lm_events_notify from worker threads */
    lm_component comp;
};

static void ev_confirmed(void *ctx, const long long *seqs, size_t n, bool ok)
{
    lm_events *ev = ctx;
    if (ev->relay) lm_relay_confirmed(ev->relay, seqs, n, ok);
}

static void ev_state(void *ctx, lm_transport_state st, const char *why)
{
    lm_events *ev = ctx;
    if (st == LM_TRANSPORT_UP)
        lm_log_info("events: %s transport up", lm_transport_name(ev->t));
    else
        lm_log_warn("events: %s transport %s%s%s", lm_transport_name(ev->t),
                    lm_transport_state_name(st), why && *why ? ": " : "", why ? why : "");
    if (ev->relay) lm_relay_state(ev->relay, st);
}

static void ev_deliver(void *ctx, lm_delivery *d)
{
    lm_events *ev = ctx;
    if (ev->consumer) lm_consumer_deliver(ev->consumer, d);
}

static void ev_checkpoint(void *ctx, const char *stream, long long seq)
{
    lm_events *ev = ctx;
    if (ev->consumer) lm_consumer_checkpoint(ev->consumer, stream, seq);
}

static void ev_resync(void *ctx, const char *stream, long long after, long long oldest)
{
    lm_events *ev = ctx;
    if (ev->consumer) lm_consumer_resync(ev->consumer, stream, after, oldest);
}

static void ev_worker_start(lm_worker *w, void *ctx)
{
    lm_events *ev = ctx;
    if (ev->feed_comp) ev->feed_comp->worker_start(w, ev->feed_comp->ctx);
}

static void ev_worker_stop(lm_worker *w, void *ctx)
{
    lm_events *ev = ctx;
    if (ev->feed_comp) ev->feed_comp->worker_stop(w, ev->feed_comp->ctx);
}

static void ev_started(void *ctx, int port)
{
    (void)port;
    lm_events *ev = ctx;
    lm_transport_cfg tc = {
        .broker_url = ev->cfg.broker_url,
        .service = ev->cfg.service,
        .resolve = ev->cfg.resolve,
        .resolve_ctx = ev->cfg.resolve_ctx,
    };
    lm_transport_cbs cbs = {
        .ctx = ev,
        .confirmed = ev_confirmed,
        .state = ev_state,
        .deliver = ev_deliver,
        .checkpoint = ev_checkpoint,
        .resync = ev_resync,
    };
    char err[256];
    lm_transport *t = lm_transport_open(ev->control, &tc, &cbs, err, sizeof err);
    uv_mutex_lock(&ev->lock); /* ev_metrics reads ev->t from the scraping thread */
    ev->t = t;
    uv_mutex_unlock(&ev->lock);
    if (!ev->t) {
        lm_log_error("events: %s", err);
        return;
    }
    if (ev->cfg.produce) {
        lm_relay_cfg rc = {.source = ev->source, .retention_ms = ev->cfg.retention_ms};
        lm_relay *r = lm_relay_new(ev->control, ev->db, ev->t, &rc);
        uv_mutex_lock(&ev->lock);
        ev->relay = r;
        uv_mutex_unlock(&ev->lock);
    }
    if (ev->cfg.consume.producer) {
        lm_consumer *k = lm_consumer_new(ev->control, ev->db, ev->t, &ev->cfg.consume);
        uv_mutex_lock(&ev->lock);
        ev->consumer = k;
        uv_mutex_unlock(&ev->lock);
    }
}

static void ev_transport_closed(void *arg)
{
    (void)arg;
}

static void ev_relay_closed(void *arg)
{
    lm_events *ev = arg;
    ev->relay = NULL;
    if (ev->t) {
        lm_transport *t = ev->t;
        uv_mutex_lock(&ev->lock);
        ev->t = NULL;
        uv_mutex_unlock(&ev->lock);
        lm_transport_close(t, ev_transport_closed, ev);
    }
}

static void ev_consumer_closed(void *arg)
{
    lm_events *ev = arg;
    if (ev->relay) {
        lm_relay *r = ev->relay;
        uv_mutex_lock(&ev->lock);
        ev->relay = NULL;
        uv_mutex_unlock(&ev->lock);
        lm_relay_close(r, ev_relay_closed, ev);
    } else {
        ev_relay_closed(ev);
    }
}

static void ev_stopping(void *ctx)
{
    lm_events *ev = ctx;
    if (ev->feed_comp) ev->feed_comp->stopping(ev->feed_comp->ctx);
    uv_mutex_lock(&ev->lock);
    lm_consumer *k = ev->consumer;
    ev->consumer = NULL;
    uv_mutex_unlock(&ev->lock);
    if (k)
        lm_consumer_close(k, ev_consumer_closed, ev);
    else
        ev_consumer_closed(ev);
}

static void ev_stopped(void *ctx)
{
    lm_events *ev = ctx;
    if (ev->feed_comp) ev->feed_comp->stopped(ev->feed_comp->ctx);
    for (size_t i = 0; i < ev->n_patterns; i++)
        free(ev->patterns[i]);
    free(ev->patterns);
    free(ev->service);
    free(ev->source);
    free(ev->broker_url);
    free(ev->producer);
    uv_mutex_destroy(&ev->lock);
    free(ev);
}

static void ev_metrics(lm_buf *out, void *ctx)
{
    lm_events *ev = ctx;
    uv_mutex_lock(&ev->lock);
    if (ev->relay) lm_relay_metrics(ev->relay, out);
    if (ev->consumer) lm_consumer_metrics(ev->consumer, out);
    if (ev->t) lm_transport_metrics(ev->t, out);
    uv_mutex_unlock(&ev->lock);
}

lm_events *lm_events_new(lm_db *db, const lm_events_cfg *cfg, const lm_component_env *env)
{
    lm_events *ev = calloc(1, sizeof *ev);
    ev->db = db;
    ev->control = env->control;
    ev->cfg = *cfg;
    ev->service = strdup(cfg->service);
    ev->cfg.service = ev->service;
    char src[200];
    snprintf(src, sizeof src, "/lotmesh/%s", cfg->service);
    ev->source = strdup(src);
    ev->broker_url = cfg->broker_url && *cfg->broker_url ? strdup(cfg->broker_url) : NULL;
    ev->cfg.broker_url = ev->broker_url;
    if (cfg->consume.producer) {
        ev->producer = strdup(cfg->consume.producer);
        ev->cfg.consume.producer = ev->producer;
        ev->n_patterns = cfg->consume.n_patterns;
        ev->patterns = calloc(ev->n_patterns ? ev->n_patterns : 1, sizeof *ev->patterns);
        for (size_t i = 0; i < ev->n_patterns; i++)
            ev->patterns[i] = strdup(cfg->consume.patterns[i]);
        ev->cfg.consume.patterns = (const char *const *)ev->patterns;
    }
    uv_mutex_init(&ev->lock);
    if (cfg->produce) {
        ev->feed = lm_feed_new(db, ev->source, env->workers);
        ev->feed_comp = lm_feed_component(ev->feed);
    }
    ev->comp = (lm_component){
        .ctx = ev,
        .worker_start = ev_worker_start,
        .worker_stop = ev_worker_stop,
        .started = ev_started,
        .stopping = ev_stopping,
        .stopped = ev_stopped,
        .metrics = ev_metrics,
    };
    return ev;
}

void lm_events_routes(lm_events *ev, lm_router *r)
{
    if (ev->feed) lm_feed_routes(ev->feed, r);
}

const lm_component *lm_events_component(lm_events *ev)
{
    return &ev->comp;
}

void lm_events_notify(lm_events *ev)
{
    if (ev->feed) lm_feed_notify(ev->feed);
    uv_mutex_lock(&ev->lock);
    if (ev->relay) lm_relay_notify(ev->relay);
    uv_mutex_unlock(&ev->lock);
}
