/* relay.c — the outbox relay (relay.h). */
#include "relay.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "outbox.h"
#include "span.h"
#include "timefmt.h"
#include "trace.h"
#include "tracer.h"

#define RELAY_TICK_MS 1000

/* A published event waiting for its confirm: its span. */
typedef struct relay_flight {
    long long seq;
    lm_span span;
    bool traced;
} relay_flight;

struct lm_relay {
    uv_loop_t *loop;
    lm_db *db;
    lm_db_port *port;
    lm_transport *t;
    char *source;
    long long retention_ms;
    unsigned batch;
    long long cursor; /* the last sequence handed to the transport */
    bool reading, closing, dirty;
    int jobs; /* database jobs in flight */
    uv_async_t wake;
    uv_timer_t tick;
    int open_handles;
    relay_flight *flights; /* in sequence order */
    size_t n_flights, cap_flights;
    /* the watermark stored (event_meta published_through): every sequence up to it is
     * published; read at the start, raised as confirms come */
    long long marked;
    bool started, starting, marking;
    bool maintaining;
    unsigned ticks, prune_every; /* prune every prune_every-th tick */
    void (*done)(void *);
    void *done_arg;
    /* metrics */
    _Atomic long long backlog, oldest_age_ms;
    _Atomic unsigned long long published, confirm_failures, pruned;
    atomic_int up;
};

typedef struct relay_read {
    lm_relay *r;
    long long after;
    int limit;
    lm_envelope *evs;
    size_t n;
} relay_read;

typedef struct relay_mark {
    lm_relay *r;
    long long through;
} relay_mark;

typedef struct relay_maint {
    lm_relay *r;
    long long pruned, backlog, age;
} relay_maint;

static void relay_pump(lm_relay *r);
static void relay_mark_start(lm_relay *r);
static void relay_maybe_free(lm_relay *r);

static int relay_read_job(lm_db_conn *c, void *arg)
{
    relay_read *rd = arg;
    return lm_outbox_read(c, rd->r->source, rd->after, rd->limit, &rd->evs, &rd->n);
}

static int relay_flight_cmp(const void *a, const void *b)
{
    long long x = ((const relay_flight *)a)->seq, y = ((const relay_flight *)b)->seq;
    return x < y ? -1 : x > y;
}

static relay_flight *relay_flight_add(lm_relay *r)
{
    if (r->n_flights == r->cap_flights) {
        r->cap_flights = r->cap_flights ? r->cap_flights * 2 : 256;
        r->flights = realloc(r->flights, r->cap_flights * sizeof *r->flights);
    }
    return &r->flights[r->n_flights++];
}

static void relay_read_done(int rc, void *arg)
{
    relay_read *rd = arg;
    lm_relay *r = rd->r;
    r->reading = false;
    r->jobs--;
    if (rc == 0 && rd->n > 0 && !r->closing && rd->after == r->cursor) {
        const lm_envelope **ptrs = malloc(rd->n * sizeof *ptrs);
        for (size_t i = 0; i < rd->n; i++)
            ptrs[i] = &rd->evs[i];
        if (lm_transport_publish(r->t, ptrs, rd->n) == 0) {
            uint64_t now = lm_span_now_unix_ns();
            for (size_t i = 0; i < rd->n; i++) {
                const lm_envelope *e = &rd->evs[i];
                relay_flight *fl = relay_flight_add(r);
                fl->seq = e->sequence;
                fl->traced = false;
                lm_trace_ctx parent, ctx;
                if (e->traceparent &&
                    lm_trace_parse(e->traceparent, strlen(e->traceparent), &parent)) {
                    /* a child of the writing request's span (the traceparent's) */
                    lm_trace_begin(&ctx, e->traceparent, strlen(e->traceparent));
                    if (ctx.flags & 1) {
                        char name[LM_SPAN_NAME];
                        snprintf(name, sizeof name, "%s publish", e->type);
                        lm_span_init(&fl->span, &ctx, LM_SPAN_PRODUCER, name, now);
                        lm_span_attr_cstr(&fl->span, "messaging.system",
                                          strcmp(lm_transport_name(r->t), "amqp") == 0
                                              ? "rabbitmq"
                                              : "lotmesh-feed");
                        lm_span_attr_cstr(&fl->span, "messaging.operation.type", "publish");
                        lm_span_attr_cstr(&fl->span, "messaging.destination.name", e->type);
                        lm_span_attr_cstr(&fl->span, "messaging.message.id", e->id);
                        lm_span_attr_int(&fl->span, "lotmesh.event.sequence", e->sequence);
                        fl->traced = true;
                    }
                }
            }
            r->cursor = rd->evs[rd->n - 1].sequence;
            /* after a failed confirm rows are sent again below flights still out: keep the
             * flights sorted (relay_flight_find searches them) */
            size_t first = r->n_flights - rd->n;
            if (first > 0 && r->flights[first - 1].seq > r->flights[first].seq)
                qsort(r->flights, r->n_flights, sizeof *r->flights, relay_flight_cmp);
        }
        free(ptrs);
    }
    bool more = rc == 0 && rd->n == (size_t)rd->limit;
    for (size_t i = 0; i < rd->n; i++)
        lm_envelope_clear(&rd->evs[i]);
    free(rd->evs);
    free(rd);
    if (r->closing) {
        relay_maybe_free(r);
        return;
    }
    if (more || r->dirty) relay_pump(r);
}

static void relay_pump(lm_relay *r)
{
    if (r->closing || !r->started) return;
    if (r->reading) {
        r->dirty = true;
        return;
    }
    size_t win = lm_transport_window(r->t);
    if (win == 0) return;
    r->dirty = false;
    relay_read *rd = calloc(1, sizeof *rd);
    rd->r = r;
    rd->after = r->cursor;
    rd->limit = (int)(win < r->batch ? win : r->batch);
    r->reading = true;
    r->jobs++;
    lm_db_read(r->port, relay_read_job, relay_read_done, rd);
}

/* ---- confirms ------------------------------------------------------------------------------ */

/* Where the watermark can stand: below the lowest sequence still in flight, at most the
 * cursor (lowered after a failed confirm). */
static long long relay_watermark(const lm_relay *r)
{
    long long w = r->cursor;
    if (r->n_flights && r->flights[0].seq - 1 < w) w = r->flights[0].seq - 1;
    return w;
}

static int relay_mark_job(lm_db_conn *c, void *arg)
{
    relay_mark *m = arg;
    return lm_outbox_mark_published(c, m->through);
}

static void relay_mark_done(int rc, void *arg)
{
    relay_mark *m = arg;
    lm_relay *r = m->r;
    r->jobs--;
    r->marking = false;
    if (rc == 0 && m->through > r->marked) r->marked = m->through;
    if (rc != 0 && !r->closing) /* tried again on the next tick */
        lm_log_warn("events: storing the published watermark (%lld) failed; after a restart"
                    " the events above %lld are sent again",
                    m->through, r->marked);
    bool again = rc == 0;
    free(m);
    if (r->closing) {
        relay_maybe_free(r);
        return;
    }
    if (again) relay_mark_start(r);
}

/* Stores the watermark when confirms raised it (one write job at a time). */
static void relay_mark_start(lm_relay *r)
{
    if (r->marking || r->closing || !r->started) return;
    long long w = relay_watermark(r);
    if (w <= r->marked) return;
    relay_mark *m = malloc(sizeof *m);
    m->r = r;
    m->through = w;
    r->marking = true;
    r->jobs++;
    lm_db_write(r->port, relay_mark_job, relay_mark_done, m);
}

/* ---- the start: the watermark stored, where publishing goes on ------------------------- */

typedef struct relay_start {
    lm_relay *r;
    long long through;
} relay_start;

static int relay_start_job(lm_db_conn *c, void *arg)
{
    relay_start *st = arg;
    return lm_outbox_published_through(c, &st->through);
}

static void relay_start_done(int rc, void *arg)
{
    relay_start *st = arg;
    lm_relay *r = st->r;
    r->jobs--;
    r->starting = false;
    if (rc == 0 && !r->closing) { /* else the next tick asks again */
        r->cursor = r->marked = st->through;
        r->started = true;
    }
    free(st);
    if (r->closing) {
        relay_maybe_free(r);
        return;
    }
    relay_pump(r);
}

static void relay_begin(lm_relay *r)
{
    if (r->started || r->starting || r->closing) return;
    relay_start *st = calloc(1, sizeof *st);
    st->r = r;
    r->starting = true;
    r->jobs++;
    lm_db_read(r->port, relay_start_job, relay_start_done, st);
}

static relay_flight *relay_flight_find(lm_relay *r, long long seq)
{
    size_t lo = 0, hi = r->n_flights;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (r->flights[mid].seq < seq)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < r->n_flights && r->flights[lo].seq == seq ? &r->flights[lo] : NULL;
}

void lm_relay_confirmed(lm_relay *r, const long long *seqs, size_t n, bool ok)
{
    uint64_t now = lm_span_now_unix_ns();
    long long lowest_failed = 0;
    for (size_t i = 0; i < n; i++) {
        relay_flight *fl = relay_flight_find(r, seqs[i]);
        if (fl) {
            if (fl->traced) {
                fl->span.end_unix_ns = now;
                fl->span.status = ok ? LM_SPAN_OK : LM_SPAN_ERROR;
                lm_tracer_submit(&fl->span);
            }
            fl->seq = -1; /* removed below */
        }
        if (!ok && (lowest_failed == 0 || seqs[i] < lowest_failed)) lowest_failed = seqs[i];
    }
    size_t k = 0;
    for (size_t i = 0; i < r->n_flights; i++)
        if (r->flights[i].seq >= 0) r->flights[k++] = r->flights[i];
    r->n_flights = k;
    if (ok) {
        atomic_fetch_add(&r->published, n);
        relay_mark_start(r);
    } else {
        atomic_fetch_add(&r->confirm_failures, n);
        if (lowest_failed - 1 < r->cursor) r->cursor = lowest_failed - 1;
    }
    relay_pump(r);
}

void lm_relay_state(lm_relay *r, lm_transport_state st)
{
    atomic_store(&r->up, st == LM_TRANSPORT_UP);
    if (st == LM_TRANSPORT_UP) {
        /* whatever was in flight when the connection went is sent again */
        long long lowest = 0;
        for (size_t i = 0; i < r->n_flights; i++)
            if (lowest == 0 || r->flights[i].seq < lowest) lowest = r->flights[i].seq;
        r->n_flights = 0;
        if (lowest && lowest - 1 < r->cursor) r->cursor = lowest - 1;
        relay_pump(r);
    }
}

/* ---- maintenance: retention and the backlog gauges ---------------------------------------- */

/* Every tick reads the backlog; every RELAY_PRUNE_TICKS-th prunes (a write). */
#define RELAY_PRUNE_TICKS 10

static int relay_backlog_job(lm_db_conn *c, void *arg)
{
    relay_maint *m = arg;
    return lm_outbox_backlog(c, lm_timefmt_now_ms(), &m->backlog, &m->age);
}

static int relay_prune_job(lm_db_conn *c, void *arg)
{
    relay_maint *m = arg;
    return lm_outbox_prune(c, lm_timefmt_now_ms() - m->r->retention_ms, &m->pruned);
}

static void relay_maint_done(int rc, void *arg)
{
    relay_maint *m = arg;
    lm_relay *r = m->r;
    r->jobs--;
    r->maintaining = false;
    if (rc == 0 && m->backlog >= 0) {
        atomic_store(&r->backlog, m->backlog);
        atomic_store(&r->oldest_age_ms, m->age);
    }
    if (rc == 0 && m->pruned > 0) atomic_store(&r->pruned, (unsigned long long)m->pruned);
    free(m);
    if (r->closing) relay_maybe_free(r);
}

static void relay_on_tick(uv_timer_t *h)
{
    lm_relay *r = h->data;
    relay_begin(r);
    relay_mark_start(r);
    if (!r->maintaining && !r->closing) {
        relay_maint *m = calloc(1, sizeof *m);
        m->r = r;
        r->maintaining = true;
        r->jobs++;
        if (++r->ticks % r->prune_every == 0) {
            m->backlog = -1;
            lm_db_write(r->port, relay_prune_job, relay_maint_done, m);
        } else {
            lm_db_read(r->port, relay_backlog_job, relay_maint_done, m);
        }
    }
    relay_pump(r);
}

static void relay_on_wake(uv_async_t *a)
{
    relay_pump(a->data);
}

void lm_relay_notify(lm_relay *r)
{
    uv_async_send(&r->wake);
}

lm_relay *lm_relay_new(uv_loop_t *loop, lm_db *db, lm_transport *t, const lm_relay_cfg *cfg)
{
    lm_relay *r = calloc(1, sizeof *r);
    r->loop = loop;
    r->db = db;
    r->t = t;
    r->source = strdup(cfg->source);
    r->retention_ms = cfg->retention_ms > 0 ? cfg->retention_ms : 7LL * 24 * 3600 * 1000;
    r->batch = cfg->batch ? cfg->batch : 200;
    long long every = r->retention_ms / RELAY_TICK_MS;
    r->prune_every = (unsigned)(every < 1                   ? 1
                                : every > RELAY_PRUNE_TICKS ? RELAY_PRUNE_TICKS
                                                            : every);
    r->port = lm_db_attach(db, loop);
    uv_async_init(loop, &r->wake, relay_on_wake);
    r->wake.data = r;
    uv_timer_init(loop, &r->tick);
    r->tick.data = r;
    r->open_handles = 2;
    uv_timer_start(&r->tick, relay_on_tick, 0, RELAY_TICK_MS);
    atomic_store(&r->up, lm_transport_window(t) > 0);
    return r;
}

void lm_relay_metrics(lm_relay *r, lm_buf *out)
{
    lm_buf_printf(out,
                  "# HELP lotmesh_events_outbox_backlog Outbox rows not yet published.\n"
                  "# TYPE lotmesh_events_outbox_backlog gauge\n"
                  "lotmesh_events_outbox_backlog %lld\n"
                  "# HELP lotmesh_events_outbox_oldest_unpublished_seconds Age of the oldest "
                  "unpublished outbox row.\n"
                  "# TYPE lotmesh_events_outbox_oldest_unpublished_seconds gauge\n"
                  "lotmesh_events_outbox_oldest_unpublished_seconds %.3f\n"
                  "# HELP lotmesh_events_published_total Events the transport confirmed.\n"
                  "# TYPE lotmesh_events_published_total counter\n"
                  "lotmesh_events_published_total %llu\n"
                  "# HELP lotmesh_events_confirm_failures_total Events the transport failed to "
                  "confirm (published again).\n"
                  "# TYPE lotmesh_events_confirm_failures_total counter\n"
                  "lotmesh_events_confirm_failures_total %llu\n"
                  "# HELP lotmesh_events_pruned_through Highest outbox sequence removed by "
                  "retention.\n"
                  "# TYPE lotmesh_events_pruned_through gauge\n"
                  "lotmesh_events_pruned_through %llu\n"
                  "# HELP lotmesh_events_transport_up 1 while the event transport is up.\n"
                  "# TYPE lotmesh_events_transport_up gauge\n"
                  "lotmesh_events_transport_up %d\n",
                  atomic_load(&r->backlog), atomic_load(&r->oldest_age_ms) / 1000.0,
                  atomic_load(&r->published), atomic_load(&r->confirm_failures),
                  atomic_load(&r->pruned), atomic_load(&r->up));
}

static void relay_maybe_free(lm_relay *r)
{
    if (!r->closing || r->jobs > 0 || r->open_handles > 0) return;
    if (r->port) {
        lm_db_detach(r->port);
        r->port = NULL;
    }
    void (*done)(void *) = r->done;
    void *arg = r->done_arg;
    free(r->flights);
    free(r->source);
    free(r);
    if (done) done(arg);
}

static void relay_handle_closed(uv_handle_t *h)
{
    lm_relay *r = h->data;
    r->open_handles--;
    relay_maybe_free(r);
}

void lm_relay_close(lm_relay *r, void (*done)(void *arg), void *arg)
{
    r->closing = true;
    r->done = done;
    r->done_arg = arg;
    uv_close((uv_handle_t *)&r->wake, relay_handle_closed);
    uv_close((uv_handle_t *)&r->tick, relay_handle_closed);
}
