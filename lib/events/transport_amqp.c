/* transport_amqp.c — the RabbitMQ event transport (transport.h), EVENT_BROKER_URL=amqp://…
 *
 * Two links of rmq.h, each one connection on its own thread: the publisher (opened with the
 * transport) and the consumer (opened by subscribe). They hand confirms, deliveries and state
 * changes to the loop through one uv_async; its callback turns them into cbs.confirmed,
 * cbs.deliver and cbs.state on the loop thread.
 *
 * Publishing: each accepted envelope is sent with routing key = type, message_id = id, the
 * traceparent header, persistent, mandatory; at most LM_TRANSPORT_AMQP_WINDOW unconfirmed.
 * Confirms come back in publish order; a nack, a return (no queue bound for the type: no
 * consumer has declared its queue yet) or a connection lost before the confirm reports the
 * sequence as not published — FAIL_DELAY_MS later, so that the relay, which publishes it
 * again at once, does not spin while no queue is bound.
 *
 * Consuming: the durable queue "<service>.events", classic or (EVENT_BROKER_QUEUE_TYPE=quorum)
 * quorum with x-delivery-limit LM_TRANSPORT_AMQP_DELIVERY_LIMIT, dead-lettering to
 * lotmesh.events.dlx → "<service>.events.dlq"), prefetch = sub.prefetch. The attempt of a
 * delivery: rmq.h. ack → basic.ack; retry → after delay_ms (a timer holding the
 * delivery, so it still counts against the prefetch) basic.nack with requeue; reject →
 * basic.reject without requeue (dead-lettered).
 *
 * State: the publisher link's (UP connected, DOWN backing off, CONNECTING otherwise), each
 * change reported with its reason; the consumer link reconnects by itself and logs. */
#include "transport.h"

#include "rmq.h"
#include "amqp_url.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LM_TRANSPORT_AMQP_WINDOW         1000
#define LM_TRANSPORT_AMQP_DELIVERY_LIMIT 10
#define FAIL_DELAY_MS                    200

typedef struct amqp_dlv {
    lm_delivery d;
    struct amqp_tr *tr;
    lm_rmq_delivery *raw;
    uv_timer_t timer; /* a retry's delay */
    bool timer_open;
    struct amqp_dlv *prev, *next; /* outstanding deliveries */
} amqp_dlv;

typedef struct amqp_tr {
    lm_transport *t;
    lm_amqp_url url;
    /* atomic: lm_transport_metrics reads them from the scraping thread */
    lm_rmq *_Atomic pub;
    lm_rmq *_Atomic con;
    char queue[300];
    uv_async_t async;
    unsigned open_handles; /* the async and retry timers not yet closed */
    bool closing;
    lm_transport_state state;
    size_t in_flight;
    /* sequences that failed (refused by the link, nacked, returned, lost with a connection):
     * reported FAIL_DELAY_MS later, so that a relay publishing them again at once does not
     * spin while, say, no queue is bound for their type yet */
    long long *failed;
    size_t n_failed, cap_failed;
    uv_timer_t fail_timer;
    bool fail_armed;
    amqp_dlv *outstanding;
    unsigned long long published, confirmed, delivered, acked, retried, rejected;
} amqp_tr;

static bool amqp_accepts(const char *url)
{
    return url && (strncmp(url, "amqp://", 7) == 0 || strncmp(url, "amqps://", 8) == 0);
}

/* The parser's reasons start with the variable's name, which the configuration error line
 * names already. */
static bool amqp_check(const char *url, char *err, size_t errlen)
{
    lm_amqp_url u;
    if (lm_amqp_url_parse(url, &u, err, errlen) == 0) return true;
    static const char *const prefixes[] = {"EVENT_BROKER_URL: ", "EVENT_BROKER_URL "};
    for (size_t i = 0; i < 2; i++) {
        size_t n = strlen(prefixes[i]);
        if (strncmp(err, prefixes[i], n) == 0) {
            memmove(err, err + n, strlen(err + n) + 1);
            break;
        }
    }
    return false;
}

/* ---- loop side ---------------------------------------------------------------------- */

static void link_notify(void *arg)
{
    amqp_tr *a = arg;
    uv_async_send(&a->async);
}

static void add_failed(amqp_tr *a, long long seq)
{
    if (a->n_failed == a->cap_failed) {
        size_t cap = a->cap_failed ? a->cap_failed * 2 : 256;
        long long *f = realloc(a->failed, cap * sizeof *f);
        if (!f) {
            /* neither confirmed nor failed: the relay sends it again after a reconnect */
            return;
        }
        a->failed = f;
        a->cap_failed = cap;
    }
    a->failed[a->n_failed++] = seq;
}

static void on_fail_timer(uv_timer_t *h)
{
    amqp_tr *a = h->data;
    a->fail_armed = false;
    if (a->closing || a->n_failed == 0) return;
    size_t k = a->n_failed;
    long long *f = a->failed;
    a->failed = NULL;
    a->n_failed = a->cap_failed = 0;
    a->in_flight -= k < a->in_flight ? k : a->in_flight;
    if (a->t->cbs.confirmed) a->t->cbs.confirmed(a->t->cbs.ctx, f, k, false);
    free(f);
}

static void arm_failures(amqp_tr *a)
{
    if (a->n_failed && !a->fail_armed && !a->closing) {
        a->fail_armed = true;
        uv_timer_start(&a->fail_timer, on_fail_timer, FAIL_DELAY_MS, 0);
    }
}

static void report_confirms(amqp_tr *a)
{
    lm_rmq_result res[256];
    long long seqs[256];
    size_t n;
    while (!a->closing && (n = lm_rmq_take_results(a->pub, res, 256)) > 0) {
        size_t k = 0;
        for (size_t i = 0; i < n; i++) {
            if (res[i].ok)
                seqs[k++] = (long long)res[i].seq;
            else
                add_failed(a, (long long)res[i].seq);
        }
        if (k) {
            a->in_flight -= k < a->in_flight ? k : a->in_flight;
            a->confirmed += k;
            if (a->t->cbs.confirmed) a->t->cbs.confirmed(a->t->cbs.ctx, seqs, k, true);
        }
    }
    arm_failures(a);
}

static void dlv_unlink(amqp_tr *a, amqp_dlv *x)
{
    if (x->prev)
        x->prev->next = x->next;
    else
        a->outstanding = x->next;
    if (x->next) x->next->prev = x->prev;
    x->prev = x->next = NULL;
}

static void dlv_free(amqp_dlv *x)
{
    lm_envelope_clear(&x->d.ev);
    lm_rmq_delivery_free(x->raw);
    free(x);
}

static void report_deliveries(amqp_tr *a)
{
    lm_rmq_delivery *got[64];
    size_t n;
    while (!a->closing && a->con && (n = lm_rmq_take_deliveries(a->con, got, 64)) > 0) {
        for (size_t i = 0; i < n; i++) {
            amqp_dlv *x = calloc(1, sizeof *x);
            if (!x) {
                /* cannot hold it: the broker gets it back and redelivers it */
                lm_rmq_settle(a->con, got[i]->tag, LM_RMQ_RETRY);
                lm_rmq_delivery_free(got[i]);
                continue;
            }
            x->tr = a;
            x->raw = got[i];
            x->d.raw = got[i]->body;
            x->d.raw_len = got[i]->len;
            x->d.parsed = lm_envelope_parse(got[i]->body, got[i]->len, &x->d.ev, x->d.why,
                                            sizeof x->d.why) == 0;
            x->d.attempt = got[i]->attempt;
            x->d.redelivered = got[i]->redelivered;
            x->d.stream = a->queue;
            x->d.handle = x;
            x->next = a->outstanding;
            if (a->outstanding) a->outstanding->prev = x;
            a->outstanding = x;
            a->delivered++;
            if (a->closing || !a->t->cbs.deliver) {
                continue;
            }
            a->t->cbs.deliver(a->t->cbs.ctx, &x->d);
        }
    }
}

/* The state is the publisher link's: the relay waits for it. The consumer link reconnects on
 * its own and logs its outages; reporting them here would make the relay send its
 * in-flight window again for nothing. */
static void report_state(amqp_tr *a)
{
    lm_rmq_stats st;
    char why[256];
    lm_rmq_get_stats(a->pub, &st, why, sizeof why);
    lm_transport_state s = st.state == LM_RMQ_CONNECTED    ? LM_TRANSPORT_UP
                           : st.state == LM_RMQ_CONNECTING ? LM_TRANSPORT_CONNECTING
                                                           : LM_TRANSPORT_DOWN;
    /* a link backing off goes DOWN → CONNECTING → DOWN at every attempt: it stays DOWN
     * until it is connected (one state line per outage, not one per attempt) */
    if (a->state == LM_TRANSPORT_DOWN && s == LM_TRANSPORT_CONNECTING) return;
    if (s != a->state) {
        a->state = s;
        if (a->t->cbs.state) a->t->cbs.state(a->t->cbs.ctx, s, s == LM_TRANSPORT_UP ? "" : why);
    }
}

static void on_async(uv_async_t *h)
{
    amqp_tr *a = h->data;
    if (a->closing) return;
    report_state(a);
    report_confirms(a);
    report_deliveries(a);
}

/* ---- backend functions -------------------------------------------------------------- */

/* open failed: a goes with the last of its two handles */
static void free_on_close(uv_handle_t *h)
{
    amqp_tr *a = h->data;
    if (--a->open_handles == 0) free(a);
}

static int amqp_open(lm_transport *t, char *err, size_t errlen)
{
    amqp_tr *a = calloc(1, sizeof *a);
    if (!a) {
        snprintf(err, errlen, "events: out of memory");
        return -1;
    }
    if (lm_amqp_url_parse(t->cfg.broker_url, &a->url, err, errlen) != 0) {
        free(a);
        return -1;
    }
    a->t = t;
    a->state = LM_TRANSPORT_CONNECTING;
    snprintf(a->queue, sizeof a->queue, "%s.events", t->cfg.service);
    uv_async_init(t->loop, &a->async, on_async);
    a->async.data = a;
    uv_timer_init(t->loop, &a->fail_timer);
    a->fail_timer.data = a;
    a->open_handles = 2;
    lm_rmq_opts o = {.role = LM_RMQ_PUBLISHER,
                     .service = t->cfg.service,
                     .max_inflight = LM_TRANSPORT_AMQP_WINDOW,
                     .max_queued = LM_TRANSPORT_AMQP_WINDOW,
                     .notify = link_notify,
                     .notify_arg = a};
    a->pub = lm_rmq_start(&a->url, &o, err, errlen);
    if (!a->pub) {
        uv_close((uv_handle_t *)&a->fail_timer, free_on_close);
        uv_close((uv_handle_t *)&a->async, free_on_close);
        return -1;
    }
    t->impl = a;
    return 0;
}

static size_t amqp_window(const lm_transport *t)
{
    const amqp_tr *a = t->impl;
    if (a->closing || a->state == LM_TRANSPORT_DOWN || !a->pub) return 0;
    lm_rmq_stats st;
    lm_rmq_get_stats(a->pub, &st, NULL, 0);
    if (st.state != LM_RMQ_CONNECTED) return 0;
    return a->in_flight >= LM_TRANSPORT_AMQP_WINDOW ? 0 : LM_TRANSPORT_AMQP_WINDOW - a->in_flight;
}

static int amqp_publish(lm_transport *t, const lm_envelope *const *evs, size_t n)
{
    amqp_tr *a = t->impl;
    if (n > amqp_window(t)) return -1;
    for (size_t i = 0; i < n; i++) {
        const lm_envelope *e = evs[i];
        a->in_flight++;
        a->published++;
        if (lm_rmq_submit(a->pub, (uint64_t)e->sequence, e->type, e->id, e->traceparent, e->json,
                          e->json_len) != 0)
            add_failed(a, e->sequence);
    }
    arm_failures(a);
    return 0;
}

static int amqp_subscribe(lm_transport *t, const lm_transport_sub *sub, char *err, size_t errlen)
{
    amqp_tr *a = t->impl;
    if (a->con) {
        snprintf(err, errlen, "events: already subscribed");
        return -1;
    }
    const char **keys = calloc(sub->n_patterns + 1, sizeof *keys);
    if (!keys) {
        snprintf(err, errlen, "events: out of memory");
        return -1;
    }
    for (size_t i = 0; i < sub->n_patterns; i++)
        keys[i] = sub->patterns[i];
    /* EVENT_BROKER_QUEUE_TYPE: classic (default) or quorum */
    const char *qt = getenv("EVENT_BROKER_QUEUE_TYPE");
    bool quorum = qt && strcmp(qt, "quorum") == 0;
    if (qt && *qt && !quorum && strcmp(qt, "classic") != 0) {
        free(keys);
        snprintf(err, errlen, "EVENT_BROKER_QUEUE_TYPE must be classic or quorum");
        return -1;
    }
    unsigned prefetch = sub->prefetch ? sub->prefetch : 100;
    if (prefetch > 1000) prefetch = 1000;
    lm_rmq_opts o = {.role = LM_RMQ_CONSUMER,
                     .service = t->cfg.service,
                     .bindings = keys,
                     .prefetch = prefetch,
                     .delivery_limit = LM_TRANSPORT_AMQP_DELIVERY_LIMIT,
                     .quorum = quorum,
                     .notify = link_notify,
                     .notify_arg = a};
    a->con = lm_rmq_start(&a->url, &o, err, errlen);
    free(keys);
    if (!a->con) return -1;
    return 0;
}

static void settle(amqp_tr *a, amqp_dlv *x, lm_rmq_verdict v)
{
    dlv_unlink(a, x);
    if (a->con) lm_rmq_settle(a->con, x->raw->tag, v);
    dlv_free(x);
}

static void amqp_ack(lm_transport *t, lm_delivery *d)
{
    amqp_tr *a = t->impl;
    a->acked++;
    settle(a, d->handle, LM_RMQ_ACK);
}

static void amqp_reject(lm_transport *t, lm_delivery *d)
{
    amqp_tr *a = t->impl;
    a->rejected++;
    settle(a, d->handle, LM_RMQ_DEAD);
}

/* The last handle closed: frees the backend's state, then the transport. */
static void handle_gone(amqp_tr *a)
{
    if (--a->open_handles > 0) return;
    lm_transport *t = a->t;
    free(a);
    lm_transport_closed(t);
}

static void retry_timer_closed(uv_handle_t *h)
{
    amqp_dlv *x = h->data;
    amqp_tr *a = x->tr;
    dlv_free(x);
    handle_gone(a);
}

static void on_retry_timer(uv_timer_t *h)
{
    amqp_dlv *x = h->data;
    amqp_tr *a = x->tr;
    dlv_unlink(a, x);
    if (a->con) lm_rmq_settle(a->con, x->raw->tag, LM_RMQ_RETRY);
    uv_close((uv_handle_t *)&x->timer, retry_timer_closed);
}

static void amqp_retry(lm_transport *t, lm_delivery *d, unsigned delay_ms)
{
    amqp_tr *a = t->impl;
    amqp_dlv *x = d->handle;
    a->retried++;
    if (delay_ms == 0 || a->closing) {
        settle(a, x, LM_RMQ_RETRY);
        return;
    }
    /* held (still unacked, so it counts against the prefetch) until the delay is over */
    uv_timer_init(t->loop, &x->timer);
    x->timer.data = x;
    x->timer_open = true;
    a->open_handles++;
    uv_timer_start(&x->timer, on_retry_timer, delay_ms, 0);
}

static void amqp_stats(const lm_transport *t, lm_transport_stats *out)
{
    const amqp_tr *a = t->impl;
    out->state = a->state;
    out->published = a->published;
    out->confirmed = a->confirmed;
    out->delivered = a->delivered;
    out->acked = a->acked;
    out->retried = a->retried;
    out->rejected = a->rejected;
    out->in_flight = a->in_flight;
    lm_rmq_stats st;
    if (a->pub) {
        lm_rmq_get_stats(a->pub, &st, NULL, 0);
        out->confirm_failures = st.confirm_failures;
        out->reconnects += st.connects > 1 ? st.connects - 1 : 0;
    }
    if (a->con) {
        lm_rmq_get_stats(a->con, &st, NULL, 0);
        out->reconnects += st.connects > 1 ? st.connects - 1 : 0;
    }
}

static void amqp_metrics(const lm_transport *t, lm_buf *out)
{
    const amqp_tr *a = t->impl;
    lm_rmq *links[2] = {a->pub, a->con};
    static const char *const names[2] = {"publisher", "consumer"};
    lm_rmq_stats st[2];
    bool have[2] = {false, false};
    for (int i = 0; i < 2; i++) {
        if (links[i]) {
            lm_rmq_get_stats(links[i], &st[i], NULL, 0);
            have[i] = true;
        }
    }
    lm_buf_printf(out, "# HELP lotmesh_events_broker_connected 1 while the link's connection to "
                       "RabbitMQ is up (topology declared).\n"
                       "# TYPE lotmesh_events_broker_connected gauge\n");
    for (int i = 0; i < 2; i++)
        if (have[i])
            lm_buf_printf(out, "lotmesh_events_broker_connected{link=\"%s\"} %d\n", names[i],
                          st[i].state == LM_RMQ_CONNECTED);
    lm_buf_printf(out, "# HELP lotmesh_events_broker_connects_total Connections established "
                       "(the first and every reconnect).\n"
                       "# TYPE lotmesh_events_broker_connects_total counter\n");
    for (int i = 0; i < 2; i++)
        if (have[i])
            lm_buf_printf(out, "lotmesh_events_broker_connects_total{link=\"%s\"} %llu\n", names[i],
                          (unsigned long long)st[i].connects);
    lm_buf_printf(out, "# HELP lotmesh_events_broker_connect_failures_total Connection attempts "
                       "that failed (connect, login or declaring the topology).\n"
                       "# TYPE lotmesh_events_broker_connect_failures_total counter\n");
    for (int i = 0; i < 2; i++)
        if (have[i])
            lm_buf_printf(out, "lotmesh_events_broker_connect_failures_total{link=\"%s\"} %llu\n",
                          names[i], (unsigned long long)st[i].connect_failures);
    if (have[0])
        lm_buf_printf(
            out,
            "# HELP lotmesh_events_broker_confirm_failures_total Messages the broker did not "
            "take: nacked, or returned because no queue is bound for their type.\n"
            "# TYPE lotmesh_events_broker_confirm_failures_total counter\n"
            "lotmesh_events_broker_confirm_failures_total{reason=\"nack\"} %llu\n"
            "lotmesh_events_broker_confirm_failures_total{reason=\"returned\"} %llu\n"
            "# HELP lotmesh_events_broker_unconfirmed_lost_total Messages unconfirmed when "
            "the connection dropped (published again).\n"
            "# TYPE lotmesh_events_broker_unconfirmed_lost_total counter\n"
            "lotmesh_events_broker_unconfirmed_lost_total %llu\n",
            (unsigned long long)(st[0].confirm_failures - st[0].returned),
            (unsigned long long)st[0].returned, (unsigned long long)st[0].lost);
    if (have[1])
        lm_buf_printf(out,
                      "# HELP lotmesh_events_broker_dead_lettered_total Deliveries rejected "
                      "into the dead-letter queue (malformed, or out of attempts).\n"
                      "# TYPE lotmesh_events_broker_dead_lettered_total counter\n"
                      "lotmesh_events_broker_dead_lettered_total %llu\n"
                      "# HELP lotmesh_events_broker_requeued_total Deliveries sent back to the "
                      "queue for another attempt.\n"
                      "# TYPE lotmesh_events_broker_requeued_total counter\n"
                      "lotmesh_events_broker_requeued_total %llu\n",
                      (unsigned long long)st[1].dead_lettered, (unsigned long long)st[1].requeued);
}

static void async_closed(uv_handle_t *h)
{
    handle_gone(h->data);
}

static void amqp_close(lm_transport *t)
{
    amqp_tr *a = t->impl;
    a->closing = true;
    /* joins the link threads: unsettled deliveries go back to the broker with the
     * connection; unconfirmed publishes are forgotten (transport.h) */
    lm_rmq_stop(a->con);
    lm_rmq_stop(a->pub);
    a->con = a->pub = NULL;
    free(a->failed);
    a->failed = NULL;
    a->n_failed = 0;
    amqp_dlv *x = a->outstanding;
    a->outstanding = NULL;
    while (x) {
        amqp_dlv *next = x->next;
        if (x->timer_open) {
            uv_timer_stop(&x->timer);
            uv_close((uv_handle_t *)&x->timer, retry_timer_closed);
        } else {
            dlv_free(x);
        }
        x = next;
    }
    /* a (t->impl) and then t go with the last handle (handle_gone) */
    uv_timer_stop(&a->fail_timer);
    uv_close((uv_handle_t *)&a->fail_timer, async_closed);
    uv_close((uv_handle_t *)&a->async, async_closed);
}

const lm_transport_backend lm_transport_amqp = {
    .name = "amqp",
    .accepts = amqp_accepts,
    .check = amqp_check,
    .open = amqp_open,
    .publish = amqp_publish,
    .window = amqp_window,
    .subscribe = amqp_subscribe,
    .ack = amqp_ack,
    .retry = amqp_retry,
    .reject = amqp_reject,
    .stats = amqp_stats,
    .metrics = amqp_metrics,
    .close = amqp_close,
};
