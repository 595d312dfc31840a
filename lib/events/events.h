/* events.h — a process's events (lm_events): the facade the app layer wires (DESIGN 3.6,
 * 4.1 `events`). It owns the transport (transport.h, chosen by EVENT_BROKER_URL), and, as
 * configured, the producing side — the feed GET /api/v1/events (feed.h) and the outbox
 * relay (relay.h) — and one consumer of another service's events (consumer.h).
 *
 * Configuration read by the app layer (README): EVENT_BROKER_URL, EVENT_RETENTION (how long
 * published outbox rows are kept; a duration, 1s .. 365d, default 7d), EVENT_MAX_ATTEMPTS
 * (a poison event's attempts before it is dead-lettered, 1..100, default 5).
 *
 * Threading: lm_events_new/routes/component on the main thread before the run; the
 * transport, relay and consumer live on the control loop (opened in the component's started
 * hook, closed in stopping); lm_events_notify from any thread.
 * Ownership: the app owns it through its component (stopped frees it); db is borrowed. */
#ifndef LM_EVENTS_H
#define LM_EVENTS_H

#include <stdbool.h>

#include "component.h"
#include "consumer.h"
#include "db.h"
#include "router.h"
#include "transport.h"

typedef struct lm_events lm_events;

typedef struct lm_events_cfg {
    const char *service;    /* MODULE_NAME: the source "/lotmesh/<service>", queue names */
    const char *broker_url; /* EVENT_BROKER_URL or NULL (the feed) */
    long long retention_ms; /* EVENT_RETENTION */
    bool produce;           /* serve the feed and run the relay */
    /* consuming: consume.producer NULL for none; apply and ctx as consumer.h */
    lm_consumer_cfg consume;
    /* feed consuming: where the producer is (the app layer's discovery and tokens) */
    lm_transport_resolve_fn resolve;
    void *resolve_ctx;
} lm_events_cfg;

/* cfg's strings are copied. */
lm_events *lm_events_new(lm_db *db, const lm_events_cfg *cfg, const lm_component_env *env);
void lm_events_routes(lm_events *ev, lm_router *r);
const lm_component *lm_events_component(lm_events *ev);
/* This process committed outbox rows: wakes the feed's long polls and the relay. */
void lm_events_notify(lm_events *ev);

#endif
