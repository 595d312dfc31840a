/* rmq.h — the RabbitMQ link of the events layer (lm_rmq), on rabbitmq-c 0.11.
 *
 * rabbitmq-c is blocking and its connection is not thread-safe, so each link owns one
 * connection and one thread that does all of its I/O; the event loops talk to it through a
 * mutex-protected queue and are told that results are waiting through `notify` (called on the
 * link's thread; typically a uv_async_send). The link connects, declares its topology,
 * reconnects with exponential backoff (100 ms doubling to 5 s) while the broker is away, and
 * says so in its state.
 *
 * Topology (DESIGN 3.6): durable topic exchange `lotmesh.events`; a publisher sends with the
 * routing key = the event type, persistent, content type application/cloudevents+json,
 * message_id = the event id, type = the event type, a `traceparent` header, mandatory.
 * A consumer declares the durable queue `<service>.events` (classic, or with opts.quorum a
 * quorum queue with `x-delivery-limit` = delivery_limit) bound to its keys, dead-lettering
 * into the direct exchange `lotmesh.events.dlx` with the routing key `<service>`, to which the
 * durable queue `<service>.events.dlq` is bound; it consumes with manual acks and prefetch.
 *
 * Publisher: every submitted message gets exactly one result, in submission order: ok once the
 * broker confirmed it (basic.ack); failed when the broker nacked it or returned it as
 * unroutable (no queue bound for its key) — both counted as confirm failures — or when the
 * connection dropped before its confirm (counted as lost; the caller publishes it again: at
 * least once). Up to max_inflight messages are unconfirmed at a time.
 *
 * Consumer: deliveries are handed out in broker order; the caller settles each one after its
 * own commit (ACK, RETRY: requeue, DEAD: dead-letter at once). A quorum queue counts every
 * return (a RETRY, or a consumer that died holding the message) in x-delivery-count, which
 * gives each delivery its attempt number, and dead-letters a message returned more than
 * delivery_limit times by itself — so a poison message that kills its consumer before it can
 * settle is dead-lettered too. On a classic queue the link counts deliveries per message id
 * itself (a direct-mapped cache; a redelivered message is at least attempt 2). Deliveries of a
 * connection that has since dropped cannot be settled (the broker redelivers them); settling them
 * is a no-op.
 *
 * Ownership: a link copies its options; deliveries taken belong to the caller
 * (lm_rmq_delivery_free). Threading: every function may be called from any thread except
 * lm_rmq_stop, which must not race other calls on the same link. */
#ifndef LM_RMQ_H
#define LM_RMQ_H

#include "amqp_url.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define LM_RMQ_EXCHANGE     "lotmesh.events"
#define LM_RMQ_DLX          "lotmesh.events.dlx"
#define LM_RMQ_CONTENT_TYPE "application/cloudevents+json"

typedef struct lm_rmq lm_rmq;

typedef enum { LM_RMQ_PUBLISHER, LM_RMQ_CONSUMER } lm_rmq_role;

typedef struct lm_rmq_opts {
    lm_rmq_role role;
    const char *service;         /* consumer: queue <service>.events; both: connection name */
    const char *const *bindings; /* consumer: routing-key patterns, NULL-terminated */
    unsigned prefetch;           /* consumer: unacked deliveries at most (default 64) */
    unsigned delivery_limit;     /* consumer: the queue's x-delivery-limit (default 20) */
    bool quorum; /* consumer: a quorum queue (x-delivery-count, x-delivery-limit) instead of a
                  * classic durable one */
    unsigned max_inflight;     /* publisher: unconfirmed messages at most (default 256) */
    unsigned max_queued;       /* publisher: submitted, not yet sent (default 4096) */
    void (*notify)(void *arg); /* results or deliveries are waiting (link thread) */
    void *notify_arg;
} lm_rmq_opts;

typedef enum {
    LM_RMQ_DISCONNECTED = 0, /* never connected yet, or connection lost: backing off */
    LM_RMQ_CONNECTING = 1,   /* connecting, logging in, declaring */
    LM_RMQ_CONNECTED = 2,    /* connected, topology declared */
} lm_rmq_state;

typedef struct lm_rmq_stats {
    lm_rmq_state state;
    uint64_t connects;         /* successful connections (reconnects = connects - 1) */
    uint64_t connect_failures; /* attempts that failed (connect, login or declare) */
    uint64_t published;        /* publisher: confirmed by the broker */
    uint64_t confirm_failures; /* publisher: nacked or returned */
    uint64_t returned;         /* publisher: of which returned as unroutable */
    uint64_t lost;             /* publisher: unconfirmed when the connection dropped */
    uint64_t delivered;        /* consumer: deliveries handed out */
    uint64_t acked;            /* consumer */
    uint64_t requeued;         /* consumer: RETRY */
    uint64_t dead_lettered;    /* consumer: DEAD */
    size_t queued;             /* publisher: submitted, not yet confirmed */
} lm_rmq_stats;

/* Starts a link's thread (it connects in the background). Returns NULL with a reason in err
 * when the options are invalid or the thread cannot start. */
lm_rmq *lm_rmq_start(const lm_amqp_url *url, const lm_rmq_opts *opts, char *err, size_t errlen);
/* Stops the thread (closing the connection politely when it is up) and frees the link;
 * unsettled deliveries go back to the broker, unconfirmed messages are dropped (the caller's
 * outbox still has them). */
void lm_rmq_stop(lm_rmq *a);
/* The counters, and in why (may be NULL) one line why the link is not connected ("" when it
 * is). */
void lm_rmq_get_stats(lm_rmq *a, lm_rmq_stats *out, char *why, size_t whylen);

/* ---- publisher ---- */

/* Copies the message into the link's queue. key: routing key (event type); id: message_id;
 * traceparent may be NULL. seq: the caller's reference, returned with the result. Returns 0,
 * or -1 when max_queued messages are waiting (submit again after taking results). */
int lm_rmq_submit(lm_rmq *a, uint64_t seq, const char *key, const char *id, const char *traceparent,
                  const char *body, size_t len);

typedef struct lm_rmq_result {
    uint64_t seq;
    bool ok; /* false: nacked or returned */
} lm_rmq_result;

/* Moves up to max results into out (submission order); returns how many. */
size_t lm_rmq_take_results(lm_rmq *a, lm_rmq_result *out, size_t max);

/* ---- consumer ---- */

typedef struct lm_rmq_delivery {
    uint64_t tag;      /* for lm_rmq_settle (includes the connection's generation) */
    char *routing_key; /* owned, NUL-terminated */
    char *message_id;  /* owned, "" when absent */
    char *body;        /* owned, NUL-terminated (len bytes before it) */
    size_t len;
    unsigned attempt; /* 1 on the first delivery */
    bool redelivered;
} lm_rmq_delivery;

typedef enum { LM_RMQ_ACK, LM_RMQ_RETRY, LM_RMQ_DEAD } lm_rmq_verdict;

/* Moves up to max deliveries into out (broker order); returns how many. */
size_t lm_rmq_take_deliveries(lm_rmq *a, lm_rmq_delivery **out, size_t max);
void lm_rmq_delivery_free(lm_rmq_delivery *d);
/* Settles a delivery after the caller's commit: ACK basic.ack, RETRY basic.nack with requeue
 * (the quorum queue counts the attempt), DEAD basic.reject without requeue (dead-lettered). */
void lm_rmq_settle(lm_rmq *a, uint64_t tag, lm_rmq_verdict v);

#endif
