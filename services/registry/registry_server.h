/* registry_server.h — the registry process (rg_server): the catalog (state.h) served over Consul's
 * HTTP API (api.c), kept honest by timers, HTTP probes and snapshots (runner.c).
 *
 * Threading model: the registry runs exactly one server worker (main forces WORKERS=1), and
 * that worker's event loop owns everything here: the state, the parked blocking queries, the
 * TTL/deregistration timer, the HTTP probes (an lm_client on the same loop) and the snapshot
 * timer. Nothing in the request path takes a lock, state changes and the watchers they wake
 * are one sequence, and a handler never waits on another thread. One loop is plenty: every
 * operation is a few microseconds of in-memory work and a parked query costs no CPU.
 * Ownership passes by thread start and join: main loads the snapshot before the worker
 * starts and writes the final one after it has ended. The control loop only sets `stopping`
 * and wakes the worker (flush_async) so parked queries answer before connections drain.
 * Metrics are atomics written by the owner and read by /metrics on any thread. */
#ifndef RG_REGISTRY_H
#define RG_REGISTRY_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "app.h"
#include "client.h"
#include "state.h"

typedef struct rg_waiter rg_waiter;

typedef struct rg_server {
    lm_app *app;
    rg_state st;
    char *snapshot_path; /* NULL: no snapshot */

    /* the worker loop's (valid between the worker's start and stop hooks) */
    uv_loop_t *loop;
    lm_client *client;
    uv_timer_t tick_timer;  /* next TTL expiry or deregistration */
    uv_timer_t snap_timer;  /* coalesced snapshot writes */
    uv_timer_t sweep_timer; /* parked queries whose client left */
    uv_async_t flush_async; /* from the control loop: answer every parked query */
    bool running;
    uint64_t last_snap_ms;
    bool snap_failing;
    rg_waiter *waiters;
    uint64_t notified_index;

    atomic_bool stopping;
    /* metrics (written by the owner loop, read anywhere) */
    atomic_ullong m_services, m_passing, m_warning, m_critical, m_waiters, m_index;
    atomic_ullong m_probes_ok, m_probes_fail, m_ttl_expired, m_reaped;
    atomic_ullong m_snap_writes, m_snap_errors;
} rg_server;

/* runner.c */
rg_server *rg_server_new(lm_app *app, const char *snapshot_path);
void rg_server_free(rg_server *srv);
/* After a change of the state: reschedules the timer, wakes watchers, schedules a snapshot,
 * updates the gauges. Owner loop only. */
void rg_after_change(rg_server *srv);
/* The owner loop's clock, in ms. */
int64_t rg_now(const rg_server *srv);

/* api.c */
void rg_api_routes(rg_server *srv, lm_router *r);
/* GET /ui/ (ui.c): the registry's page, services, instances and checks, live. */
void rg_ui_routes(lm_router *r);
/* Answers the parked queries whose data changed (all of them when all is true). */
void rg_api_wake(rg_server *srv, bool all);
/* Answers parked queries whose client has gone. */
void rg_api_sweep(rg_server *srv);

#endif
