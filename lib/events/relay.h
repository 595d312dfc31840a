/* relay.h — the outbox relay (lm_relay): reads outbox rows above its watermark in sequence
 * order, hands them to the transport (several batches in flight, as the transport's window
 * allows), and raises the watermark — event_meta's "published_through": every sequence up
 * to it is published — only over sequences the transport confirmed; a failed confirm puts
 * the relay's cursor back so the row is published again (at least once, in order per
 * aggregate since sequences follow commit order). One small write per confirmed batch keeps
 * the watermark (not one per row), and a restart goes on from it (rows confirmed above it
 * but not yet stored are published again: at least once).
 *
 * What "published" means: with RabbitMQ, the broker confirmed the message (publisher
 * confirm). With the built-in feed there is no broker: consumers read the outbox itself
 * through GET /api/v1/events, so a committed row is available to them at once and the feed
 * transport confirms every row immediately. Retention: published rows whose event time is
 * older than EVENT_RETENTION are pruned, oldest first (lm_outbox_prune); a feed consumer
 * behind that point is told (410).
 *
 * Metrics (lm_relay_metrics): lotmesh_events_outbox_backlog, lotmesh_events_outbox_oldest_
 * unpublished_seconds, lotmesh_events_published_total, lotmesh_events_confirm_failures_total,
 * lotmesh_events_pruned_total, lotmesh_events_transport_up.
 *
 * Spans: one PRODUCER span per published event ("<type> publish"), a child of the writing
 * request's span (the envelope's traceparent), ended at its confirm.
 *
 * Threading: everything on the transport's loop (the control loop), except
 * lm_relay_notify (any thread) and lm_relay_metrics (any thread: atomics).
 * Ownership: the relay borrows db and the transport; it owns its port and timers. */
#ifndef LM_RELAY_H
#define LM_RELAY_H

#include <stdbool.h>

#include "buf.h"
#include "db.h"
#include "transport.h"

typedef struct lm_relay lm_relay;

typedef struct lm_relay_cfg {
    const char *source;     /* "/lotmesh/<service>" */
    long long retention_ms; /* published rows kept this long (> 0) */
    unsigned batch;         /* rows per read (default 200) */
} lm_relay_cfg;

/* On the loop. */
lm_relay *lm_relay_new(uv_loop_t *loop, lm_db *db, lm_transport *t, const lm_relay_cfg *cfg);
/* The transport's confirm and state callbacks end here (events.c forwards them). */
void lm_relay_confirmed(lm_relay *r, const long long *seqs, size_t n, bool ok);
void lm_relay_state(lm_relay *r, lm_transport_state st);
/* New rows were committed: wakes the relay. Any thread. */
void lm_relay_notify(lm_relay *r);
void lm_relay_metrics(lm_relay *r, lm_buf *out);
/* Stops reading, closes its handles; done(arg) when the relay is freed (on the loop).
 * Unconfirmed rows stay unpublished. */
void lm_relay_close(lm_relay *r, void (*done)(void *arg), void *arg);

#endif
