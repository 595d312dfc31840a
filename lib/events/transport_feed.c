/* transport_feed.c — the built-in event transport (transport.h), no broker.
 *
 * Publishing: the producer's GET /api/v1/events (feed.h) serves the outbox itself, so there
 * is nothing to send: every accepted sequence is confirmed on the next loop turn.
 *
 * Consuming: one long poll at a time on the producer's feed (GET /api/v1/events?after=
 * &limit=&wait=), through the resolver the app layer gives (discovery + service token).
 * Each event of a page becomes a delivery in sequence order (events whose type matches no
 * pattern are passed at once); the next poll starts while fewer than prefetch deliveries are
 * outstanding. The positions of a page are kept in order; once a prefix is settled the
 * highest settled sequence is reported as the checkpoint. A 410 (position pruned) is
 * reported as a resync and reading continues from the oldest available event. Failed polls
 * back off 100 ms doubling to 5 s.
 *
 * Everything runs on the transport's loop; deliveries are owned here (transport.h). */
#include "transport.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client.h"
#include "log.h"

typedef struct feed_pos {
    long long seq;
    bool done;
    struct feed_dlv *dlv; /* the delivery while outstanding, or NULL */
} feed_pos;

typedef struct feed_dlv {
    lm_delivery d;
    struct feed_tr *f;
    uv_timer_t retry_timer; /* a retry's delay */
    bool timer_open;
} feed_dlv;

typedef struct feed_tr {
    lm_transport *t;
    /* publishing: sequences accepted, confirmed on the next turn */
    long long *pending;
    size_t n_pending, cap_pending;
    uv_timer_t kick; /* deferred callbacks: confirms, checkpoints, the next poll */
    /* consuming */
    bool subscribed, closing;
    char **patterns;
    size_t n_patterns;
    char *producer;
    unsigned prefetch;
    long long cursor;     /* the last sequence fetched */
    long long checkpoint; /* the last sequence reported settled */
    feed_pos *pos;        /* positions fetched and not yet passed by the checkpoint, in order */
    size_t n_pos, cap_pos;
    size_t outstanding;
    lm_client *client;
    lm_client_req *poll; /* the long poll in flight */
    uv_timer_t backoff;
    unsigned backoff_ms;
    bool backoff_on;
    int open_handles;
    /* counters */
    lm_transport_stats st;
} feed_tr;

#define FEED_MAX_PENDING 100000

static bool feed_accepts(const char *url)
{
    return url == NULL;
}

static void feed_poll(feed_tr *f);
static void feed_on_kick(uv_timer_t *h);

static void feed_kick(feed_tr *f)
{
    if (!f->closing && !uv_is_active((uv_handle_t *)&f->kick))
        uv_timer_start(&f->kick, feed_on_kick, 0, 0);
}

static int feed_open(lm_transport *t, char *err, size_t errlen)
{
    feed_tr *f = calloc(1, sizeof *f);
    f->t = t;
    uv_timer_init(t->loop, &f->kick);
    uv_timer_init(t->loop, &f->backoff);
    f->kick.data = f;
    f->backoff.data = f;
    f->open_handles = 2;
    f->st.state = LM_TRANSPORT_UP;
    t->impl = f;
    (void)err;
    (void)errlen;
    return 0;
}

/* ---- publishing -------------------------------------------------------------------------- */

static size_t feed_window(const lm_transport *t)
{
    const feed_tr *f = t->impl;
    return f->closing ? 0 : FEED_MAX_PENDING - f->n_pending;
}

static int feed_publish(lm_transport *t, const lm_envelope *const *evs, size_t n)
{
    feed_tr *f = t->impl;
    if (f->closing || n > FEED_MAX_PENDING - f->n_pending) return -1;
    if (f->n_pending + n > f->cap_pending) {
        size_t cap = f->cap_pending ? f->cap_pending : 256;
        while (cap < f->n_pending + n)
            cap *= 2;
        f->pending = realloc(f->pending, cap * sizeof *f->pending);
        f->cap_pending = cap;
    }
    for (size_t i = 0; i < n; i++)
        f->pending[f->n_pending++] = evs[i]->sequence;
    f->st.published += n;
    feed_kick(f);
    return 0;
}

/* ---- consuming ----------------------------------------------------------------------------- */

static bool feed_wanted(const feed_tr *f, const char *type)
{
    if (f->n_patterns == 0) return true;
    for (size_t i = 0; i < f->n_patterns; i++)
        if (lm_envelope_type_matches(f->patterns[i], type)) return true;
    return false;
}

static feed_pos *feed_pos_add(feed_tr *f, long long seq)
{
    if (f->n_pos == f->cap_pos) {
        f->cap_pos = f->cap_pos ? f->cap_pos * 2 : 256;
        f->pos = realloc(f->pos, f->cap_pos * sizeof *f->pos);
    }
    feed_pos *p = &f->pos[f->n_pos++];
    *p = (feed_pos){.seq = seq};
    return p;
}

static feed_pos *feed_pos_find(feed_tr *f, long long seq)
{
    size_t lo = 0, hi = f->n_pos;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (f->pos[mid].seq < seq)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < f->n_pos && f->pos[lo].seq == seq ? &f->pos[lo] : NULL;
}

static void feed_dlv_free(feed_dlv *fd)
{
    lm_envelope_clear(&fd->d.ev);
    free((char *)fd->d.raw);
    free(fd);
}

static void feed_timer_closed(uv_handle_t *h)
{
    feed_dlv_free(h->data);
}

/* Passes the settled prefix to the checkpoint (on the kick). */
static void feed_advance(feed_tr *f)
{
    size_t k = 0;
    while (k < f->n_pos && f->pos[k].done)
        k++;
    if (k == 0) return;
    long long seq = f->pos[k - 1].seq;
    memmove(f->pos, f->pos + k, (f->n_pos - k) * sizeof *f->pos);
    f->n_pos -= k;
    if (seq > f->checkpoint) {
        f->checkpoint = seq;
        if (f->t->cbs.checkpoint) f->t->cbs.checkpoint(f->t->cbs.ctx, f->producer, seq);
    }
}

static void feed_on_kick(uv_timer_t *h)
{
    feed_tr *f = h->data;
    if (f->n_pending) {
        size_t n = f->n_pending;
        long long *seqs = f->pending;
        f->pending = NULL;
        f->n_pending = f->cap_pending = 0;
        f->st.confirmed += n;
        f->t->cbs.confirmed(f->t->cbs.ctx, seqs, n, true);
        free(seqs);
    }
    if (f->subscribed && !f->closing) {
        feed_advance(f);
        /* the next page once at least half the prefetch is free (not one event at a time) */
        if (!f->poll && !f->backoff_on && f->outstanding <= f->prefetch / 2) feed_poll(f);
    }
}

static void feed_settle(feed_tr *f, feed_dlv *fd)
{
    feed_pos *p = feed_pos_find(f, (long long)(intptr_t)fd->d.handle);
    if (p) {
        p->done = true;
        p->dlv = NULL;
    }
    f->outstanding--;
    if (fd->timer_open) {
        fd->timer_open = false;
        uv_close((uv_handle_t *)&fd->retry_timer, feed_timer_closed);
    } else {
        feed_dlv_free(fd);
    }
    feed_kick(f);
}

static void feed_ack(lm_transport *t, lm_delivery *d)
{
    feed_tr *f = t->impl;
    f->st.acked++;
    feed_settle(f, (feed_dlv *)d);
}

static void feed_reject(lm_transport *t, lm_delivery *d)
{
    feed_tr *f = t->impl;
    f->st.rejected++;
    feed_settle(f, (feed_dlv *)d);
}

static void feed_on_retry(uv_timer_t *h)
{
    feed_dlv *fd = h->data;
    feed_tr *f = fd->f;
    if (f->closing) return;
    fd->d.attempt++;
    fd->d.redelivered = true;
    f->st.delivered++;
    f->t->cbs.deliver(f->t->cbs.ctx, &fd->d);
}

static void feed_retry(lm_transport *t, lm_delivery *d, unsigned delay_ms)
{
    feed_tr *f = t->impl;
    feed_dlv *fd = (feed_dlv *)d;
    f->st.retried++;
    if (!fd->timer_open) {
        uv_timer_init(t->loop, &fd->retry_timer);
        fd->retry_timer.data = fd;
        fd->timer_open = true;
    }
    uv_timer_start(&fd->retry_timer, feed_on_retry, delay_ms, 0);
}

static void feed_backoff_fire(uv_timer_t *h)
{
    feed_tr *f = h->data;
    f->backoff_on = false;
    feed_kick(f);
}

static void feed_fail(feed_tr *f, const char *why)
{
    f->st.feed_errors++;
    f->backoff_ms = f->backoff_ms ? f->backoff_ms * 2 : 100;
    if (f->backoff_ms > 5000) f->backoff_ms = 5000;
    if (f->backoff_ms >= 800 || f->st.feed_errors == 1)
        lm_log_warn("events: feed of %s: %s; next poll in %u ms", f->producer, why, f->backoff_ms);
    f->backoff_on = true;
    uv_timer_start(&f->backoff, feed_backoff_fire, f->backoff_ms, 0);
}

/* One element of a page: a delivery (parsed or poison) or a passed position. Returns false
 * when the element has no usable sequence (the page is refused). */
static bool feed_take(feed_tr *f, json_t *o)
{
    json_t *sv = json_object_get(o, "sequence");
    if (!json_is_integer(sv) || json_integer_value(sv) <= f->cursor) return false;
    long long seq = (long long)json_integer_value(sv);
    char *text = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_ENCODE_ANY);
    if (!text) return false;
    feed_dlv *fd = calloc(1, sizeof *fd);
    fd->f = f;
    fd->d.raw = text;
    fd->d.raw_len = strlen(text);
    fd->d.parsed =
        lm_envelope_parse(text, fd->d.raw_len, &fd->d.ev, fd->d.why, sizeof fd->d.why) == 0;
    f->cursor = seq;
    feed_pos *p = feed_pos_add(f, seq);
    if (fd->d.parsed && !feed_wanted(f, fd->d.ev.type)) {
        p->done = true;
        feed_dlv_free(fd);
        return true;
    }
    fd->d.attempt = 1;
    fd->d.stream = f->producer;
    fd->d.handle = (void *)(intptr_t)seq;
    p->dlv = fd;
    f->outstanding++;
    f->st.delivered++;
    f->t->cbs.deliver(f->t->cbs.ctx, &fd->d);
    return true;
}

static void feed_on_done(lm_client_req *req, lm_client_err err, const lm_client_response *resp,
                         void *ud)
{
    feed_tr *f = ud;
    f->poll = NULL;
    if (f->closing) return;
    char why[200];
    if (err != LM_CLIENT_OK) {
        snprintf(why, sizeof why, "%s", lm_client_strerror(err));
        feed_fail(f, why);
        return;
    }
    json_error_t je;
    json_t *doc = json_loadb(resp->body, resp->body_len, 0, &je);
    if (resp->status == 410 && json_is_object(doc)) {
        json_t *ov = json_object_get(doc, "oldest");
        if (json_is_integer(ov) && json_integer_value(ov) > f->cursor + 1) {
            long long oldest = (long long)json_integer_value(ov);
            long long after = f->cursor;
            f->cursor = oldest - 1;
            if (f->checkpoint < f->cursor && f->n_pos == 0) f->checkpoint = f->cursor;
            json_decref(doc);
            if (f->t->cbs.resync) f->t->cbs.resync(f->t->cbs.ctx, f->producer, after, oldest);
            feed_kick(f);
            return;
        }
    }
    if (resp->status != 200 || !json_is_array(doc)) {
        snprintf(why, sizeof why, "HTTP %d%s", resp->status,
                 resp->status == 200 ? " with a body that is not a JSON array" : "");
        json_decref(doc);
        feed_fail(f, why);
        return;
    }
    f->backoff_ms = 0;
    size_t i;
    json_t *o;
    json_array_foreach(doc, i, o)
    {
        if (!feed_take(f, o)) {
            json_decref(doc);
            feed_fail(f, "an event without a rising sequence");
            return;
        }
    }
    json_decref(doc);
    feed_kick(f);
}

static void feed_poll(feed_tr *f)
{
    char host[256];
    int port = 0;
    lm_buf auth = {0};
    if (!f->t->cfg.resolve ||
        !f->t->cfg.resolve(f->t->cfg.resolve_ctx, f->producer, host, sizeof host, &port, &auth)) {
        lm_buf_free(&auth);
        feed_fail(f, "no instance known");
        return;
    }
    unsigned room = f->prefetch - (unsigned)f->outstanding;
    unsigned limit = f->t->cfg.feed_limit < room ? f->t->cfg.feed_limit : room;
    char path[160];
    snprintf(path, sizeof path, "/api/v1/events?after=%lld&limit=%u&wait=%u", f->cursor, limit,
             f->t->cfg.feed_wait_s);
    lm_header h[1];
    size_t nh = 0;
    if (auth.len) h[nh++] = (lm_header){.name = "Authorization", .value = lm_buf_cstr(&auth)};
    lm_client_opts o = {
        .method = "GET",
        .host = host,
        .port = port,
        .path = path,
        .headers = h,
        .n_headers = nh,
        .response_timeout_ms = (uint64_t)f->t->cfg.feed_wait_s * 1000 + 10000,
        .max_body = 64u << 20,
        .on_done = feed_on_done,
        .ud = f,
    };
    f->poll = lm_client_send(f->client, &o);
    lm_buf_free(&auth);
    if (!f->poll) feed_fail(f, "the request could not be made");
}

static int feed_subscribe(lm_transport *t, const lm_transport_sub *sub, char *err, size_t errlen)
{
    feed_tr *f = t->impl;
    if (f->subscribed) {
        snprintf(err, errlen, "events: already subscribed");
        return -1;
    }
    if (!sub->producer || !*sub->producer) {
        snprintf(err, errlen, "events: the feed needs the producer's service name");
        return -1;
    }
    f->subscribed = true;
    f->producer = strdup(sub->producer);
    f->n_patterns = sub->n_patterns;
    f->patterns = calloc(sub->n_patterns ? sub->n_patterns : 1, sizeof *f->patterns);
    for (size_t i = 0; i < sub->n_patterns; i++)
        f->patterns[i] = strdup(sub->patterns[i]);
    f->prefetch = sub->prefetch ? sub->prefetch : 100;
    if (f->prefetch > 1000) f->prefetch = 1000;
    f->cursor = f->checkpoint = sub->after > 0 ? sub->after : 0;
    lm_client_config cc;
    lm_client_config_default(&cc);
    cc.max_conns_per_origin = 2;
    cc.response_timeout_ms = (uint64_t)t->cfg.feed_wait_s * 1000 + 10000;
    f->client = lm_client_new(t->loop, &cc);
    feed_kick(f);
    return 0;
}

static void feed_stats(const lm_transport *t, lm_transport_stats *out)
{
    const feed_tr *f = t->impl;
    *out = f->st;
    out->in_flight = f->n_pending;
}

/* ---- closing ------------------------------------------------------------------------------- */

static void feed_free_if_done(feed_tr *f)
{
    if (f->open_handles > 0 || f->client) return;
    lm_transport *t = f->t;
    for (size_t i = 0; i < f->n_patterns; i++)
        free(f->patterns[i]);
    free(f->patterns);
    free(f->producer);
    free(f->pos);
    free(f->pending);
    free(f);
    lm_transport_closed(t);
}

static void feed_handle_closed(uv_handle_t *h)
{
    feed_tr *f = h->data;
    f->open_handles--;
    feed_free_if_done(f);
}

static void feed_dlv_closed(uv_handle_t *h)
{
    feed_dlv *fd = h->data;
    feed_tr *f = fd->f;
    feed_dlv_free(fd);
    f->open_handles--;
    feed_free_if_done(f);
}

static void feed_client_closed(void *ctx)
{
    feed_tr *f = ctx;
    f->client = NULL;
    feed_free_if_done(f);
}

static void feed_close(lm_transport *t)
{
    feed_tr *f = t->impl;
    f->closing = true;
    /* outstanding deliveries are abandoned: the checkpoint stays where it was */
    for (size_t i = 0; i < f->n_pos; i++) {
        feed_dlv *fd = f->pos[i].dlv;
        if (!fd) continue;
        f->pos[i].dlv = NULL;
        if (fd->timer_open) {
            f->open_handles++;
            uv_close((uv_handle_t *)&fd->retry_timer, feed_dlv_closed);
        } else {
            feed_dlv_free(fd);
        }
    }
    f->n_pos = 0;
    uv_close((uv_handle_t *)&f->kick, feed_handle_closed);
    uv_close((uv_handle_t *)&f->backoff, feed_handle_closed);
    if (f->client) lm_client_close(f->client, feed_client_closed, f);
}

const lm_transport_backend lm_transport_feed = {
    .name = "feed",
    .accepts = feed_accepts,
    .open = feed_open,
    .publish = feed_publish,
    .window = feed_window,
    .subscribe = feed_subscribe,
    .ack = feed_ack,
    .retry = feed_retry,
    .reject = feed_reject,
    .stats = feed_stats,
    .close = feed_close,
};
