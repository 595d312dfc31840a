/* transport.h — how events leave a producer and reach a consumer (lm_transport): one API,
 * backends chosen by configuration, in the manner of redis's ae.c (one interface, an
 * ae_*.c per mechanism):
 *
 *   "feed"  the built-in default (transport_feed.c), EVENT_BROKER_URL unset: nothing is sent
 *           anywhere — the producer's own GET /api/v1/events serves the outbox — so a
 *           publish is confirmed at once (DESIGN 3.6; relay.h says what "published" means
 *           then); consuming long-polls the producer's feed (found through a resolver the
 *           app layer supplies, since this layer may not use mesh).
 *   "amqp"  RabbitMQ (transport_amqp.c), EVENT_BROKER_URL=amqp://user:pass@host:port/vhost:
 *           durable topic exchange lotmesh.events, routing key = type, persistent messages,
 *           message_id = id, publisher confirms; consuming from the durable queue
 *           "<service>.events" bound to the subscription's patterns, manual acks, bounded
 *           prefetch, dead-letter exchange lotmesh.events.dlx into "<service>.events.dlq".
 *
 * Who uses it: the relay (relay.h) publishes outbox rows; the consumer framework
 * (consumer.h) subscribes and applies deliveries. Nothing else calls a transport.
 *
 * THREADING. A transport belongs to one libuv loop, the process's control loop (lm_app_loop)
 * — given to lm_transport_open. Every function below is called on that loop's thread only,
 * and every callback in lm_transport_cbs is called on that thread only, never from inside
 * the lm_transport_* call that caused it (a backend that confirms at once defers the call
 * with a uv_idle/uv_timer/uv_async). A backend may run threads of its own (a blocking AMQP
 * client, say) but hands results to the loop (uv_async) before calling back.
 *
 * OWNERSHIP. lm_transport_open copies cfg's strings; cbs.ctx is borrowed and must outlive
 * the transport (until lm_transport_close's callback). Envelopes given to
 * lm_transport_publish are borrowed for the call only: the backend copies what it keeps.
 * A delivery (lm_delivery) and every pointer in it belong to the transport; the consumer
 * may read it from the deliver callback until it settles it by exactly one call of
 * lm_transport_ack, lm_transport_retry or lm_transport_reject (then it is freed; forget it).
 * Deliveries not settled when the transport closes are abandoned (a broker redelivers them;
 * the feed re-reads from the checkpoint), never settled after the close callback.
 *
 * PUBLISHING (the relay). The relay hands a batch of outbox envelopes in sequence order
 * (lm_transport_publish) while lm_transport_window says there is room: several batches may
 * be in flight. For every sequence accepted the backend later calls cbs.confirmed exactly
 * once — ok true when the broker took responsibility (publisher confirm), false when it
 * refused or the connection was lost before the confirm (the relay then publishes the row
 * again: at least once). Confirms may arrive in any grouping, but a backend reports them
 * per batch order where it can. While the backend is not LM_TRANSPORT_UP,
 * lm_transport_publish refuses (-1) and the relay waits for cbs.state.
 *
 * CONSUMING (the consumer framework). lm_transport_subscribe once, after open. The backend
 * delivers envelopes via cbs.deliver — several may be outstanding (up to sub.prefetch); the
 * consumer applies each in a database transaction (effect + inbox row) and then settles it:
 *   ack     after its transaction committed (or when the inbox shows it was applied):
 *           AMQP basic.ack; feed: the position is done, and once every earlier delivery of
 *           the stream is done too the backend calls cbs.checkpoint so the consumer stores
 *           it (a lagging checkpoint only causes redeliveries, which the inbox absorbs).
 *   retry   the apply failed in a way worth trying again (database unavailable, a bug of
 *           the moment): the same envelope comes again after delay_ms with attempt + 1
 *           (AMQP: nack with requeue, or a delayed redelivery — the backend's choice; the
 *           attempt count is carried as the backend can: a header or redelivered).
 *   reject  poison: unparseable, or failing after the consumer's bounded attempts; the
 *           consumer has already recorded it in its dead-letter table. AMQP: nack without
 *           requeue (the queue's dead-letter exchange takes it); feed: the position is
 *           passed like an ack. Never blocks the stream.
 *
 * CONNECTION STATE. cbs.state reports every change (DOWN → CONNECTING → UP, and back on a
 * loss) with one line why; a backend reconnects by itself with backoff (100 ms doubling to
 * 5 s, jittered). The feed backend is UP from open (its consuming side reports trouble with
 * a producer through lm_transport_stats and the log, not as state). */
#ifndef LM_TRANSPORT_H
#define LM_TRANSPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <uv.h>

#include "buf.h"
#include "envelope.h"

typedef struct lm_transport lm_transport;

typedef enum {
    LM_TRANSPORT_DOWN,       /* not connected, waiting to retry */
    LM_TRANSPORT_CONNECTING, /* connecting / declaring */
    LM_TRANSPORT_UP,         /* publishing and consuming */
} lm_transport_state;

const char *lm_transport_state_name(lm_transport_state s); /* "down", "connecting", "up" */

/* One delivered event, owned by the transport until settled. */
typedef struct lm_delivery {
    /* parsed: the envelope; false: the message did not parse (why says why; raw holds it),
     * and the consumer must reject it. */
    bool parsed;
    lm_envelope ev;
    const char *raw; /* the message body as received */
    size_t raw_len;
    char why[160];
    unsigned attempt;   /* 1 on the first delivery, +1 for each redelivery the backend knows */
    bool redelivered;   /* the backend delivered it before (AMQP redelivered flag, feed retry) */
    const char *stream; /* the producer service (feed) or the queue name (amqp) */
    void *handle;       /* the backend's (delivery tag, feed position …) */
} lm_delivery;

/* Where a feed consumer finds a producer: the app layer's discovery (mesh) fills host/port
 * and a bearer token for the producer's audience. Returns false when no instance is known
 * now (the backend tries again later). Called on the transport's loop. */
typedef bool (*lm_transport_resolve_fn)(void *ctx, const char *service, char *host, size_t hostlen,
                                        int *port, lm_buf *authorization);

typedef struct lm_transport_cfg {
    const char *broker_url; /* EVENT_BROKER_URL, or NULL/"" for the feed */
    const char *service;    /* this process's service name (MODULE_NAME): queue names */
    /* feed consuming: how to reach producers */
    lm_transport_resolve_fn resolve;
    void *resolve_ctx;
    unsigned feed_wait_s; /* long-poll wait (1..60; default 25) */
    unsigned feed_limit;  /* page size (1..1000; default 200) */
} lm_transport_cfg;

typedef struct lm_transport_cbs {
    void *ctx;
    /* publishing: the outcome of each accepted sequence, exactly once each */
    void (*confirmed)(void *ctx, const long long *sequences, size_t n, bool ok);
    /* a state change, why: one line (may be "") */
    void (*state)(void *ctx, lm_transport_state st, const char *why);
    /* consuming: a delivery to apply and settle */
    void (*deliver)(void *ctx, lm_delivery *d);
    /* feed consuming: every delivery of stream up to and including sequence is settled;
     * store it as the checkpoint (may be NULL for backends without checkpoints) */
    void (*checkpoint)(void *ctx, const char *stream, long long sequence);
    /* feed consuming: the producer no longer holds position `after` (pruned); the feed
     * continues from oldest - 1 (oldest: its oldest available sequence). The consumer logs
     * the resync and counts it. */
    void (*resync)(void *ctx, const char *stream, long long after, long long oldest);
} lm_transport_cbs;

/* What a consumer subscribes to. */
typedef struct lm_transport_sub {
    /* AMQP topic patterns ("artikel.*", "einheit.*") bound to the consumer's queue; the feed
     * delivers only types matching one of them */
    const char *const *patterns;
    size_t n_patterns;
    /* feed: the producer service to read ("articles_api") and the stored checkpoint (0:
     * from the start); ignored by AMQP, whose queue keeps the position */
    const char *producer;
    long long after;
    unsigned prefetch; /* outstanding deliveries at most (1..1000; default 100) */
} lm_transport_sub;

typedef struct lm_transport_stats {
    lm_transport_state state;
    unsigned long long published, confirmed, confirm_failures; /* sequences */
    unsigned long long delivered, acked, retried, rejected;
    unsigned long long reconnects;
    unsigned long long feed_errors; /* feed consuming: failed polls */
    size_t in_flight;               /* published, not confirmed yet */
} lm_transport_stats;

/* Chooses the backend by cfg->broker_url and opens it (connecting begins; it reports through
 * cbs.state). NULL and one line in err when the URL is malformed or names a backend this
 * build lacks. */
lm_transport *lm_transport_open(uv_loop_t *loop, const lm_transport_cfg *cfg,
                                const lm_transport_cbs *cbs, char *err, size_t errlen);
/* true when a backend of this build serves url and finds it well-formed; otherwise false and
 * one line why. */
bool lm_transport_url_ok(const char *url, char *err, size_t errlen);
/* "feed" or "amqp" */
const char *lm_transport_name(const lm_transport *t);

/* Accepts n envelopes (sequence order) for publishing; 0, or -1 when not UP or n exceeds the
 * window (nothing accepted). */
int lm_transport_publish(lm_transport *t, const lm_envelope *const *evs, size_t n);
/* How many more sequences may be accepted now (0 while not UP). */
size_t lm_transport_window(const lm_transport *t);

/* Starts consuming (once). 0, or -1 and err. */
int lm_transport_subscribe(lm_transport *t, const lm_transport_sub *sub, char *err, size_t errlen);
void lm_transport_ack(lm_transport *t, lm_delivery *d);
void lm_transport_retry(lm_transport *t, lm_delivery *d, unsigned delay_ms);
void lm_transport_reject(lm_transport *t, lm_delivery *d);

void lm_transport_get_stats(const lm_transport *t, lm_transport_stats *out);
/* Appends the backend's own Prometheus samples (the broker links' state and counters; the
 * feed has none). Any thread, while t is open (the caller keeps it from closing meanwhile). */
void lm_transport_metrics(const lm_transport *t, lm_buf *out);

/* Stops publishing and consuming, closes handles and connections, and calls closed(arg) on
 * the loop once the transport is freed (unconfirmed publishes are neither confirmed nor
 * failed: the relay forgets them, their rows stay unpublished). */
void lm_transport_close(lm_transport *t, void (*closed)(void *arg), void *arg);

/* ---- for backends (transport.c dispatches to these) ---------------------------------- */

typedef struct lm_transport_backend {
    const char *name;
    /* true when this backend serves url (NULL/"" is the feed's) */
    bool (*accepts)(const char *url);
    /* optional: validates an accepted url fully (lm_transport_url_ok, at start-up); true, or
     * false and one line in err */
    bool (*check)(const char *url, char *err, size_t errlen);
    /* allocates its state into t->impl; t->loop, t->cfg, t->cbs are set. 0 or -1 and err */
    int (*open)(lm_transport *t, char *err, size_t errlen);
    int (*publish)(lm_transport *t, const lm_envelope *const *evs, size_t n);
    size_t (*window)(const lm_transport *t);
    int (*subscribe)(lm_transport *t, const lm_transport_sub *sub, char *err, size_t errlen);
    void (*ack)(lm_transport *t, lm_delivery *d);
    void (*retry)(lm_transport *t, lm_delivery *d, unsigned delay_ms);
    void (*reject)(lm_transport *t, lm_delivery *d);
    void (*stats)(const lm_transport *t, lm_transport_stats *out);
    /* optional: lm_transport_metrics (any thread) */
    void (*metrics)(const lm_transport *t, lm_buf *out);
    /* closes everything; calls lm_transport_closed(t) once done (on the loop) */
    void (*close)(lm_transport *t);
} lm_transport_backend;

struct lm_transport {
    const lm_transport_backend *be;
    uv_loop_t *loop;
    lm_transport_cfg cfg; /* strings owned (copied by lm_transport_open) */
    lm_transport_cbs cbs;
    void *impl; /* the backend's */
    void (*closed)(void *arg);
    void *closed_arg;
};

/* A backend's close ends here: frees t and calls the closed callback. Loop thread. */
void lm_transport_closed(lm_transport *t);

/* The backends this build has: transport.c lists them in lm_transport_backends (the first
 * whose accepts() says yes is used); a backend adds its extern here and one line there. */
extern const lm_transport_backend lm_transport_feed;
extern const lm_transport_backend lm_transport_amqp;

#endif
