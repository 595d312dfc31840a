/* consumer.h — applying another service's events exactly once in effect (lm_consumer).
 *
 * At least once in (the transport redelivers whatever was not settled), exactly once in
 * effect: each delivery runs one write job that
 *   1. finds the event id in event_inbox: applied before — acked, nothing changes;
 *   2. finds the aggregate ("<first word of type>:<subject>") in event_version at the same
 *      or a higher aggregateversion: stale — recorded in the inbox, nothing else changes;
 *   3. otherwise runs the service's apply and, in the same transaction, records the inbox row
 *      and the aggregate's version.
 * Only after the job committed is the delivery acked (RabbitMQ) or its position passed to
 * the checkpoint (feed; stored in event_checkpoint by a later write job — a checkpoint that
 * lags only causes redeliveries, which step 1 absorbs).
 * Failures: the database unavailable (LM_DB_EIO) — retried with backoff, never dead-
 * lettered; apply refusing the event (a positive code: malformed data) or an unparseable
 * message — after max_attempts attempts (unparseable: at once) recorded in event_dead,
 * counted and rejected (RabbitMQ: to the dead-letter queue), so the stream moves on.
 *
 * Spans: one CONSUMER span per applied event ("<type> process"), a child of the event's
 * traceparent and linked to it.
 *
 * Threading: everything on the transport's loop except lm_consumer_metrics (any thread).
 * apply runs on the database writer thread (it may touch only the connection and ctx).
 * Ownership: borrows db and the transport; cfg's strings are copied; ctx is borrowed. */
#ifndef LM_CONSUMER_H
#define LM_CONSUMER_H

#include "buf.h"
#include "db.h"
#include "transport.h"

typedef struct lm_consumer lm_consumer;

/* In the apply job: 0 applied, LM_DB_EIO (retry), or > 0: the event cannot be applied. */
typedef int (*lm_consumer_apply_fn)(lm_db_conn *c, const lm_envelope *ev, void *ctx);

typedef struct lm_consumer_cfg {
    const char *producer;        /* the producing service ("articles_api") */
    const char *const *patterns; /* "artikel.*", … */
    size_t n_patterns;
    lm_consumer_apply_fn apply;
    void *ctx;
    unsigned max_attempts; /* default 5 */
    unsigned prefetch;     /* default 100 */
} lm_consumer_cfg;

/* Reads the stored checkpoint (a read job; retried while the database is unavailable), then
 * subscribes to the transport. */
lm_consumer *lm_consumer_new(uv_loop_t *loop, lm_db *db, lm_transport *t,
                             const lm_consumer_cfg *cfg);
/* The transport's consuming callbacks end here (events.c forwards them). */
void lm_consumer_deliver(lm_consumer *k, lm_delivery *d);
void lm_consumer_checkpoint(lm_consumer *k, const char *stream, long long seq);
void lm_consumer_resync(lm_consumer *k, const char *stream, long long after, long long oldest);
void lm_consumer_metrics(lm_consumer *k, lm_buf *out);
/* Stops settling (deliveries still being applied finish their jobs; the transport must be
 * closed after done ran); done(arg) when freed. */
void lm_consumer_close(lm_consumer *k, void (*done)(void *arg), void *arg);

#endif
