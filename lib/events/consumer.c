/* consumer.c — the consumer framework with inbox (consumer.h). */
#include "consumer.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "span.h"
#include "timefmt.h"
#include "trace.h"
#include "tracer.h"

enum { K_APPLIED, K_DUPLICATE, K_STALE };

/* lag buckets (seconds) for lotmesh_events_lag_seconds: event time to applied */
static const double k_buckets[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
#define K_NB (sizeof k_buckets / sizeof k_buckets[0])

struct lm_consumer {
    uv_loop_t *loop;
    lm_db *db;
    lm_db_port *port;
    lm_transport *t;
    char *producer;
    char **patterns;
    size_t n_patterns;
    lm_consumer_apply_fn apply;
    void *ctx;
    unsigned max_attempts;
    bool closing;
    int jobs;
    unsigned prefetch;
    uv_timer_t timer; /* retrying the checkpoint read */
    bool timer_open, timer_closing;
    /* checkpoint writes: one at a time, the newest wins */
    char *cp_stream;
    long long cp_pending, cp_stored;
    bool cp_writing;
    void (*done)(void *);
    void *done_arg;
    /* metrics */
    _Atomic unsigned long long applied, duplicates, stale, dead, retries, resyncs;
    _Atomic unsigned long long lag_buckets[K_NB + 1];
    _Atomic unsigned long long lag_count;
    _Atomic long long lag_sum_us;
    _Atomic long long checkpoint;
};

typedef struct k_job {
    lm_consumer *k;
    lm_delivery *d;
    int outcome;
    uint64_t start_ns;
} k_job;

static void k_maybe_free(lm_consumer *k);

/* ---- applying ------------------------------------------------------------------------------ */

static int k_apply_job(lm_db_conn *c, void *arg)
{
    k_job *j = arg;
    const lm_envelope *ev = &j->d->ev;
    lm_db_st *st = lm_db_stmt(c, "SELECT 1 FROM event_inbox WHERE event_id = ?");
    if (!st) return LM_DB_EIO;
    lm_db_bind_text(st, 1, ev->id, -1);
    int rc = lm_db_step(st);
    lm_db_reset(st);
    if (rc == LM_DB_ROW) {
        j->outcome = K_DUPLICATE;
        return 0;
    }
    if (rc != LM_DB_DONE) return LM_DB_EIO;
    char agg[160];
    const char *dot = strchr(ev->type, '.');
    snprintf(agg, sizeof agg, "%.*s:%s", dot ? (int)(dot - ev->type) : (int)strlen(ev->type),
             ev->type, ev->subject);
    st = lm_db_stmt(c, "SELECT version FROM event_version WHERE aggregate = ?");
    if (!st) return LM_DB_EIO;
    lm_db_bind_text(st, 1, agg, -1);
    rc = lm_db_step(st);
    long long have = rc == LM_DB_ROW ? lm_db_col_int(st, 0) : 0;
    lm_db_reset(st);
    if (rc != LM_DB_ROW && rc != LM_DB_DONE) return LM_DB_EIO;
    if (have >= ev->aggregateversion) {
        j->outcome = K_STALE;
    } else {
        rc = j->k->apply(c, ev, j->k->ctx);
        if (rc != 0) return rc;
        st = lm_db_stmt(c, "INSERT INTO event_version (aggregate, version) VALUES (?, ?)"
                           " ON CONFLICT(aggregate) DO UPDATE SET version = excluded.version");
        if (!st) return LM_DB_EIO;
        lm_db_bind_text(st, 1, agg, -1);
        lm_db_bind_int(st, 2, ev->aggregateversion);
        rc = lm_db_step(st);
        lm_db_reset(st);
        if (rc != LM_DB_DONE) return LM_DB_EIO;
        j->outcome = K_APPLIED;
    }
    st = lm_db_stmt(c, "INSERT INTO event_inbox (event_id, applied_ms) VALUES (?, ?)");
    if (!st) return LM_DB_EIO;
    lm_db_bind_text(st, 1, ev->id, -1);
    lm_db_bind_int(st, 2, lm_timefmt_now_ms());
    rc = lm_db_step(st);
    lm_db_reset(st);
    return rc == LM_DB_DONE ? 0 : LM_DB_EIO;
}

static int k_dead_job(lm_db_conn *c, void *arg)
{
    k_job *j = arg;
    lm_delivery *d = j->d;
    lm_db_st *st = lm_db_stmt(c, "INSERT INTO event_dead (stream, event_id, seq, reason, body,"
                                 " at_ms) VALUES (?, ?, ?, ?, ?, ?)");
    if (!st) return LM_DB_EIO;
    lm_db_bind_text(st, 1, d->stream ? d->stream : "", -1);
    if (d->parsed) {
        lm_db_bind_text(st, 2, d->ev.id, -1);
        lm_db_bind_int(st, 3, d->ev.sequence);
    } else {
        lm_db_bind_null(st, 2);
        lm_db_bind_null(st, 3);
    }
    lm_db_bind_text(st, 4, d->why, -1);
    lm_db_bind_text(st, 5, d->raw ? d->raw : "", d->raw ? (long)d->raw_len : 0);
    lm_db_bind_int(st, 6, lm_timefmt_now_ms());
    int rc = lm_db_step(st);
    lm_db_reset(st);
    return rc == LM_DB_DONE ? 0 : LM_DB_EIO;
}

static void k_dead_done(int rc, void *arg)
{
    k_job *j = arg;
    lm_consumer *k = j->k;
    k->jobs--;
    if (!k->closing) {
        if (rc == 0) {
            atomic_fetch_add(&k->dead, 1);
            lm_log_warn("events: dead-lettered a message from %s after %u attempt(s): %s",
                        j->d->stream ? j->d->stream : "?", j->d->attempt, j->d->why);
            lm_transport_reject(k->t, j->d);
        } else {
            atomic_fetch_add(&k->retries, 1);
            lm_transport_retry(k->t, j->d, 1000);
        }
    }
    free(j);
    k_maybe_free(k);
}

static void k_dead_letter(lm_consumer *k, lm_delivery *d)
{
    k_job *j = calloc(1, sizeof *j);
    j->k = k;
    j->d = d;
    k->jobs++;
    lm_db_write(k->port, k_dead_job, k_dead_done, j);
}

static void k_span(const lm_consumer *k, const lm_envelope *ev, uint64_t start, bool ok)
{
    lm_trace_ctx parent, ctx;
    if (!ev->traceparent || !lm_trace_parse(ev->traceparent, strlen(ev->traceparent), &parent))
        return;
    /* a child of the writing request's span, linked to it (parse puts that span in
     * parent_span_id: the link names it as the span) */
    lm_trace_begin(&ctx, ev->traceparent, strlen(ev->traceparent));
    if (!(ctx.flags & 1)) return;
    memcpy(parent.span_id, parent.parent_span_id, sizeof parent.span_id);
    lm_span s;
    char name[LM_SPAN_NAME];
    snprintf(name, sizeof name, "%s process", ev->type);
    lm_span_init(&s, &ctx, LM_SPAN_CONSUMER, name, start);
    lm_span_link(&s, &parent);
    lm_span_attr_cstr(&s, "messaging.system",
                      strcmp(lm_transport_name(k->t), "amqp") == 0 ? "rabbitmq" : "lotmesh-feed");
    lm_span_attr_cstr(&s, "messaging.operation.type", "process");
    lm_span_attr_cstr(&s, "messaging.destination.name", ev->type);
    lm_span_attr_cstr(&s, "messaging.message.id", ev->id);
    lm_span_attr_int(&s, "lotmesh.event.sequence", ev->sequence);
    s.end_unix_ns = lm_span_now_unix_ns();
    s.status = ok ? LM_SPAN_OK : LM_SPAN_ERROR;
    lm_tracer_submit(&s);
}

static void k_observe_lag(lm_consumer *k, const lm_envelope *ev)
{
    int64_t t;
    if (!lm_timefmt_parse(ev->time, false, &t)) return;
    long long us = (long long)(lm_timefmt_now_ms() - t) * 1000;
    if (us < 0) us = 0;
    double s = us / 1e6;
    size_t b = 0;
    while (b < K_NB && s > k_buckets[b])
        b++;
    atomic_fetch_add(&k->lag_buckets[b], 1);
    atomic_fetch_add(&k->lag_count, 1);
    atomic_fetch_add(&k->lag_sum_us, us);
}

static void k_apply_done(int rc, void *arg)
{
    k_job *j = arg;
    lm_consumer *k = j->k;
    lm_delivery *d = j->d;
    k->jobs--;
    if (k->closing) { /* abandoned: redelivered after the restart */
        free(j);
        k_maybe_free(k);
        return;
    }
    if (rc == 0) {
        if (j->outcome == K_APPLIED) {
            atomic_fetch_add(&k->applied, 1);
            k_observe_lag(k, &d->ev);
            k_span(k, &d->ev, j->start_ns, true);
        } else if (j->outcome == K_DUPLICATE) {
            atomic_fetch_add(&k->duplicates, 1);
        } else {
            atomic_fetch_add(&k->stale, 1);
        }
        lm_transport_ack(k->t, d);
        free(j);
        return;
    }
    if (rc == LM_DB_EIO) { /* the database, not the event: try again, never dead-letter */
        atomic_fetch_add(&k->retries, 1);
        unsigned delay = 100u << (d->attempt < 6 ? d->attempt : 6);
        lm_transport_retry(k->t, d, delay > 5000 ? 5000 : delay);
        free(j);
        return;
    }
    k_span(k, &d->ev, j->start_ns, false);
    if (d->attempt >= k->max_attempts) {
        snprintf(d->why, sizeof d->why, "%s refused by the consumer (code %d)", d->ev.type, rc);
        free(j);
        k_dead_letter(k, d);
        return;
    }
    atomic_fetch_add(&k->retries, 1);
    lm_transport_retry(k->t, d, 100u * d->attempt);
    free(j);
}

void lm_consumer_deliver(lm_consumer *k, lm_delivery *d)
{
    if (k->closing) return;
    if (!d->parsed) {
        k_dead_letter(k, d);
        return;
    }
    k_job *j = calloc(1, sizeof *j);
    j->k = k;
    j->d = d;
    j->start_ns = lm_span_now_unix_ns();
    k->jobs++;
    lm_db_write(k->port, k_apply_job, k_apply_done, j);
}

/* ---- checkpoints --------------------------------------------------------------------------- */

typedef struct k_cp {
    lm_consumer *k;
    long long seq;
} k_cp;

static int k_cp_job(lm_db_conn *c, void *arg)
{
    k_cp *cp = arg;
    lm_db_st *st = lm_db_stmt(c, "INSERT INTO event_checkpoint (stream, seq) VALUES (?, ?)"
                                 " ON CONFLICT(stream) DO UPDATE SET seq = excluded.seq");
    if (!st) return LM_DB_EIO;
    lm_db_bind_text(st, 1, cp->k->cp_stream, -1);
    lm_db_bind_int(st, 2, cp->seq);
    int rc = lm_db_step(st);
    lm_db_reset(st);
    return rc == LM_DB_DONE ? 0 : LM_DB_EIO;
}

static void k_cp_start(lm_consumer *k);

static void k_cp_done(int rc, void *arg)
{
    k_cp *cp = arg;
    lm_consumer *k = cp->k;
    k->jobs--;
    k->cp_writing = false;
    if (rc == 0) {
        k->cp_stored = cp->seq;
        atomic_store(&k->checkpoint, cp->seq);
    }
    free(cp);
    if (!k->closing && k->cp_pending != k->cp_stored) k_cp_start(k);
    k_maybe_free(k);
}

static void k_cp_start(lm_consumer *k)
{
    if (k->cp_writing || k->closing) return;
    k_cp *cp = malloc(sizeof *cp);
    cp->k = k;
    cp->seq = k->cp_pending;
    k->cp_writing = true;
    k->jobs++;
    lm_db_write(k->port, k_cp_job, k_cp_done, cp);
}

void lm_consumer_checkpoint(lm_consumer *k, const char *stream, long long seq)
{
    (void)stream;
    k->cp_pending = seq;
    k_cp_start(k);
}

void lm_consumer_resync(lm_consumer *k, const char *stream, long long after, long long oldest)
{
    atomic_fetch_add(&k->resyncs, 1);
    lm_log_warn("events: resync: the feed of %s no longer holds the events after %lld (pruned "
                "by retention); continuing from the oldest available, %lld — events between "
                "were missed and the replica may lag until they change again",
                stream, after, oldest);
    k->cp_pending = oldest - 1;
    k_cp_start(k);
}

/* ---- life ---------------------------------------------------------------------------------- */

/* The stored checkpoint is read by a read job before subscribing (never a blocking call on
 * the loop: the database may be down at start, then it is tried again every second). */
typedef struct k_load {
    lm_consumer *k;
    long long seq;
} k_load;

static int k_load_job(lm_db_conn *c, void *arg)
{
    k_load *l = arg;
    lm_db_st *st = lm_db_stmt(c, "SELECT seq FROM event_checkpoint WHERE stream = ?");
    if (!st) return LM_DB_EIO;
    lm_db_bind_text(st, 1, l->k->cp_stream, -1);
    int rc = lm_db_step(st);
    if (rc == LM_DB_ROW) l->seq = lm_db_col_int(st, 0);
    lm_db_reset(st);
    return rc == LM_DB_ROW || rc == LM_DB_DONE ? 0 : LM_DB_EIO;
}

static void k_load_start(lm_consumer *k);

static void k_load_retry(uv_timer_t *h)
{
    lm_consumer *k = h->data;
    k_load_start(k);
}

static void k_timer_closed(uv_handle_t *h)
{
    lm_consumer *k = h->data;
    k->timer_open = false;
    k_maybe_free(k);
}

static void k_load_done(int rc, void *arg)
{
    k_load *l = arg;
    lm_consumer *k = l->k;
    long long seq = l->seq;
    free(l);
    k->jobs--;
    if (k->closing) {
        k_maybe_free(k);
        return;
    }
    if (rc != 0) {
        lm_log_warn("events: cannot read the checkpoint of %s yet; trying again", k->producer);
        uv_timer_start(&k->timer, k_load_retry, 1000, 0);
        return;
    }
    k->cp_pending = k->cp_stored = seq;
    atomic_store(&k->checkpoint, seq);
    lm_transport_sub sub = {
        .patterns = (const char *const *)k->patterns,
        .n_patterns = k->n_patterns,
        .producer = k->producer,
        .after = seq,
        .prefetch = k->prefetch,
    };
    char err[200];
    if (lm_transport_subscribe(k->t, &sub, err, sizeof err) != 0)
        lm_log_error("events: cannot consume %s: %s", k->producer, err);
}

static void k_load_start(lm_consumer *k)
{
    k_load *l = calloc(1, sizeof *l);
    l->k = k;
    k->jobs++;
    lm_db_read(k->port, k_load_job, k_load_done, l);
}

lm_consumer *lm_consumer_new(uv_loop_t *loop, lm_db *db, lm_transport *t,
                             const lm_consumer_cfg *cfg)
{
    lm_consumer *k = calloc(1, sizeof *k);
    k->loop = loop;
    k->db = db;
    k->t = t;
    k->producer = strdup(cfg->producer);
    k->cp_stream = strdup(cfg->producer);
    k->n_patterns = cfg->n_patterns;
    k->patterns = calloc(cfg->n_patterns ? cfg->n_patterns : 1, sizeof *k->patterns);
    for (size_t i = 0; i < cfg->n_patterns; i++)
        k->patterns[i] = strdup(cfg->patterns[i]);
    k->apply = cfg->apply;
    k->ctx = cfg->ctx;
    k->max_attempts = cfg->max_attempts ? cfg->max_attempts : 5;
    k->prefetch = cfg->prefetch ? cfg->prefetch : 100;
    k->port = lm_db_attach(db, loop);
    uv_timer_init(loop, &k->timer);
    k->timer.data = k;
    k->timer_open = true;
    k_load_start(k);
    return k;
}

void lm_consumer_metrics(lm_consumer *k, lm_buf *out)
{
    lm_buf_printf(out,
                  "# HELP lotmesh_events_consumed_total Events delivered to this consumer, by "
                  "outcome.\n"
                  "# TYPE lotmesh_events_consumed_total counter\n"
                  "lotmesh_events_consumed_total{outcome=\"applied\"} %llu\n"
                  "lotmesh_events_consumed_total{outcome=\"duplicate\"} %llu\n"
                  "lotmesh_events_consumed_total{outcome=\"stale\"} %llu\n"
                  "lotmesh_events_consumed_total{outcome=\"dead_lettered\"} %llu\n"
                  "# HELP lotmesh_events_consume_retries_total Deliveries tried again.\n"
                  "# TYPE lotmesh_events_consume_retries_total counter\n"
                  "lotmesh_events_consume_retries_total %llu\n"
                  "# HELP lotmesh_events_resyncs_total Feed positions found pruned.\n"
                  "# TYPE lotmesh_events_resyncs_total counter\n"
                  "lotmesh_events_resyncs_total %llu\n"
                  "# HELP lotmesh_events_checkpoint The stored feed checkpoint.\n"
                  "# TYPE lotmesh_events_checkpoint gauge\n"
                  "lotmesh_events_checkpoint{stream=\"%s\"} %lld\n"
                  "# HELP lotmesh_events_lag_seconds From the event's time (its commit) to "
                  "applied here.\n"
                  "# TYPE lotmesh_events_lag_seconds histogram\n",
                  atomic_load(&k->applied), atomic_load(&k->duplicates), atomic_load(&k->stale),
                  atomic_load(&k->dead), atomic_load(&k->retries), atomic_load(&k->resyncs),
                  k->producer, atomic_load(&k->checkpoint));
    unsigned long long cum = 0;
    for (size_t i = 0; i < K_NB; i++) {
        cum += atomic_load(&k->lag_buckets[i]);
        lm_buf_printf(out, "lotmesh_events_lag_seconds_bucket{le=\"%g\"} %llu\n", k_buckets[i],
                      cum);
    }
    cum += atomic_load(&k->lag_buckets[K_NB]);
    lm_buf_printf(out,
                  "lotmesh_events_lag_seconds_bucket{le=\"+Inf\"} %llu\n"
                  "lotmesh_events_lag_seconds_sum %.6f\n"
                  "lotmesh_events_lag_seconds_count %llu\n",
                  cum, atomic_load(&k->lag_sum_us) / 1e6, atomic_load(&k->lag_count));
}

static void k_maybe_free(lm_consumer *k)
{
    if (!k->closing || k->jobs > 0 || k->timer_open) return;
    if (k->port) {
        lm_db_detach(k->port);
        k->port = NULL;
    }
    void (*done)(void *) = k->done;
    void *arg = k->done_arg;
    for (size_t i = 0; i < k->n_patterns; i++)
        free(k->patterns[i]);
    free(k->patterns);
    free(k->producer);
    free(k->cp_stream);
    free(k);
    if (done) done(arg);
}

void lm_consumer_close(lm_consumer *k, void (*done)(void *arg), void *arg)
{
    k->closing = true;
    k->done = done;
    k->done_arg = arg;
    if (k->timer_open && !k->timer_closing) {
        k->timer_closing = true;
        uv_close((uv_handle_t *)&k->timer, k_timer_closed);
    }
    k_maybe_free(k);
}
