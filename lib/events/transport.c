/* transport.c — the event transport's one API dispatching to the backend the configuration
 * chose (transport.h). */
#include "transport.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The first backend whose accepts() says yes serves the URL. */
static const lm_transport_backend *const lm_transport_backends[] = {
    &lm_transport_feed,
    &lm_transport_amqp,
};

const char *lm_transport_state_name(lm_transport_state s)
{
    switch (s) {
    case LM_TRANSPORT_DOWN:
        return "down";
    case LM_TRANSPORT_CONNECTING:
        return "connecting";
    case LM_TRANSPORT_UP:
        return "up";
    }
    return "?";
}

static char *tr_dup(const char *s)
{
    return s ? strdup(s) : NULL;
}

static const lm_transport_backend *tr_backend(const char *url)
{
    for (size_t i = 0; i < sizeof lm_transport_backends / sizeof *lm_transport_backends; i++)
        if (lm_transport_backends[i]->accepts(url)) return lm_transport_backends[i];
    return NULL;
}

static void tr_no_backend(const char *url, char *err, size_t errlen)
{
    const char *colon = strchr(url, ':');
    snprintf(err, errlen, "no event transport for \"%.*s\" URLs in this build",
             colon ? (int)(colon - url) : 0, url);
}

bool lm_transport_url_ok(const char *url, char *err, size_t errlen)
{
    if (!url || !*url) return true;
    const lm_transport_backend *be = tr_backend(url);
    if (!be) {
        tr_no_backend(url, err, errlen);
        return false;
    }
    return !be->check || be->check(url, err, errlen);
}

lm_transport *lm_transport_open(uv_loop_t *loop, const lm_transport_cfg *cfg,
                                const lm_transport_cbs *cbs, char *err, size_t errlen)
{
    const char *url = cfg->broker_url && *cfg->broker_url ? cfg->broker_url : NULL;
    const lm_transport_backend *be = tr_backend(url);
    if (!be) {
        tr_no_backend(url, err, errlen);
        return NULL;
    }
    lm_transport *t = calloc(1, sizeof *t);
    t->be = be;
    t->loop = loop;
    t->cfg = *cfg;
    t->cfg.broker_url = tr_dup(url);
    t->cfg.service = tr_dup(cfg->service ? cfg->service : "lotmesh");
    if (t->cfg.feed_wait_s == 0 || t->cfg.feed_wait_s > 60) t->cfg.feed_wait_s = 25;
    if (t->cfg.feed_limit == 0 || t->cfg.feed_limit > 1000) t->cfg.feed_limit = 200;
    t->cbs = *cbs;
    if (be->open(t, err, errlen) != 0) {
        free((char *)t->cfg.broker_url);
        free((char *)t->cfg.service);
        free(t);
        return NULL;
    }
    return t;
}

const char *lm_transport_name(const lm_transport *t)
{
    return t->be->name;
}

int lm_transport_publish(lm_transport *t, const lm_envelope *const *evs, size_t n)
{
    if (n == 0) return 0;
    return t->be->publish(t, evs, n);
}

size_t lm_transport_window(const lm_transport *t)
{
    return t->be->window(t);
}

int lm_transport_subscribe(lm_transport *t, const lm_transport_sub *sub, char *err, size_t errlen)
{
    return t->be->subscribe(t, sub, err, errlen);
}

void lm_transport_ack(lm_transport *t, lm_delivery *d)
{
    t->be->ack(t, d);
}
void lm_transport_retry(lm_transport *t, lm_delivery *d, unsigned delay_ms)
{
    t->be->retry(t, d, delay_ms);
}
void lm_transport_reject(lm_transport *t, lm_delivery *d)
{
    t->be->reject(t, d);
}

void lm_transport_get_stats(const lm_transport *t, lm_transport_stats *out)
{
    memset(out, 0, sizeof *out);
    t->be->stats(t, out);
}

void lm_transport_metrics(const lm_transport *t, lm_buf *out)
{
    if (t->be->metrics) t->be->metrics(t, out);
}

void lm_transport_close(lm_transport *t, void (*closed)(void *arg), void *arg)
{
    t->closed = closed;
    t->closed_arg = arg;
    t->be->close(t);
}

void lm_transport_closed(lm_transport *t)
{
    void (*cb)(void *) = t->closed;
    void *arg = t->closed_arg;
    free((char *)t->cfg.broker_url);
    free((char *)t->cfg.service);
    free(t);
    if (cb) cb(arg);
}
