/* feed.c — GET /api/v1/events, the built-in event feed (feed.h).
 *
 * A poll reads the outbox in a read job (one snapshot: the pruning horizon and the page).
 * An empty page with wait > 0 parks the poll on its worker's list with a timer for what is
 * left of its wait; lm_feed_notify bumps a generation and wakes every worker (uv_async), which
 * re-reads its parked polls. A generation taken before each read closes the race between a
 * read that found nothing and a commit landing just after it: the poll is re-read at once
 * instead of parked. Parked polls are also re-read once a second (commits of other
 * processes writing the same database do not reach lm_feed_notify). */
#include "feed.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http.h"
#include "outbox.h"
#include "parse.h"
#include "problem.h"
#include "server.h"

#define FEED_RECHECK_MS 1000

typedef struct feed_poll feed_poll;

typedef struct feed_worker {
    struct lm_feed *feed;
    uv_loop_t *loop;
    lm_db_port *port;
    uv_async_t wake;
    uv_timer_t recheck;
    feed_poll *parked;    /* doubly linked */
    atomic_bool stopping; /* set by the control loop too */
    bool started;         /* under the feed's lock */
} feed_worker;

struct lm_feed {
    lm_db *db;
    char *source;
    int n_workers;
    feed_worker *workers;
    _Atomic unsigned long long gen;
    uv_mutex_t lock; /* workers' started and their wake handles, against lm_feed_notify */
    lm_component comp;
};

struct feed_poll {
    feed_worker *w;
    lm_req *req;
    long long after;
    int limit;
    uint64_t deadline; /* loop time (ms) when the wait ends */
    unsigned long long gen;
    uv_timer_t timer;
    bool timer_open, parked, reading;
    feed_poll *prev, *next;
    /* the read's outcome */
    int rc;
    long long pruned;
    lm_buf body;
    size_t n;
};

static void feed_read(feed_poll *p);

static void feed_unpark(feed_poll *p)
{
    if (!p->parked) return;
    if (p->prev)
        p->prev->next = p->next;
    else
        p->w->parked = p->next;
    if (p->next) p->next->prev = p->prev;
    p->prev = p->next = NULL;
    p->parked = false;
}

static void feed_poll_closed(uv_handle_t *h)
{
    feed_poll *p = h->data;
    lm_buf_free(&p->body);
    free(p);
}

static void feed_poll_free(feed_poll *p)
{
    feed_unpark(p);
    if (p->timer_open) {
        p->timer_open = false;
        uv_close((uv_handle_t *)&p->timer, feed_poll_closed);
    } else {
        lm_buf_free(&p->body);
        free(p);
    }
}

static void feed_answer(feed_poll *p)
{
    lm_req *req = p->req;
    if (p->rc != 0) {
        lm_resp_problem(req, 503, "the event outbox cannot be read now");
    } else if (p->after < p->pruned) {
        char detail[200];
        snprintf(detail, sizeof detail,
                 "events up to sequence %lld were pruned by retention; the oldest available is "
                 "%lld: resynchronise and read from after=%lld",
                 p->pruned, p->pruned + 1, p->pruned);
        lm_problem pr = {.status = 410, .detail = detail};
        char tid[33];
        lm_trace_id_hex(&req->trace, tid);
        char inst[256];
        snprintf(inst, sizeof inst, "%.*s", (int)req->path_len, req->path);
        pr.instance = inst;
        pr.trace_id = tid;
        lm_buf b = LM_BUF_INIT;
        lm_problem_format(&b, &pr);
        if (b.len && b.data[b.len - 1] == '}') b.len--;
        lm_buf_printf(&b, ",\"oldest\":%lld,\"pruned_through\":%lld}", p->pruned + 1, p->pruned);
        lm_resp_send(req, 410, LM_PROBLEM_CONTENT_TYPE, b.data, b.len);
        lm_buf_free(&b);
    } else {
        lm_resp_send(req, 200, "application/json", p->body.data, p->body.len);
    }
    feed_poll_free(p);
}

static int feed_snapshot(lm_db_conn *c, void *arg)
{
    feed_poll *p = arg;
    int rc = lm_outbox_pruned_through(c, &p->pruned);
    if (rc || p->after < p->pruned) return rc;
    lm_envelope *evs;
    size_t n;
    if ((rc = lm_outbox_read(c, p->w->feed->source, p->after, p->limit, &evs, &n))) return rc;
    p->body.len = 0;
    lm_buf_append(&p->body, "[", 1);
    for (size_t i = 0; i < n; i++) {
        if (i) lm_buf_append(&p->body, ",", 1);
        lm_buf_append(&p->body, evs[i].json, evs[i].json_len);
        lm_envelope_clear(&evs[i]);
    }
    lm_buf_append(&p->body, "]", 1);
    free(evs);
    p->n = n;
    return 0;
}

static int feed_job(lm_db_conn *c, void *arg)
{
    return lm_db_snapshot(c, feed_snapshot, arg);
}

static void feed_on_timer(uv_timer_t *t)
{
    feed_poll *p = t->data;
    if (p->reading) return; /* the read's outcome answers */
    feed_unpark(p);
    feed_answer(p);
}

static void feed_done(int rc, void *arg)
{
    feed_poll *p = arg;
    p->reading = false;
    p->rc = rc;
    feed_worker *w = p->w;
    uint64_t now = uv_now(w->loop);
    if (rc != 0 || p->n > 0 || p->after < p->pruned || now >= p->deadline ||
        atomic_load(&w->stopping)) {
        feed_answer(p);
        return;
    }
    if (atomic_load(&w->feed->gen) != p->gen) { /* a commit landed meanwhile */
        feed_read(p);
        return;
    }
    if (!p->timer_open) {
        uv_timer_init(w->loop, &p->timer);
        p->timer.data = p;
        p->timer_open = true;
        uv_timer_start(&p->timer, feed_on_timer, p->deadline - now, 0);
    }
    p->parked = true;
    p->prev = NULL;
    p->next = w->parked;
    if (w->parked) w->parked->prev = p;
    w->parked = p;
}

static void feed_read(feed_poll *p)
{
    p->gen = atomic_load(&p->w->feed->gen);
    p->reading = true;
    p->n = 0;
    lm_db_read(p->w->port, feed_job, feed_done, p);
}

/* Re-reads every parked poll (a wake-up or the periodic re-check). */
static void feed_reread(feed_worker *w)
{
    feed_poll *p = w->parked;
    w->parked = NULL;
    while (p) {
        feed_poll *next = p->next;
        p->parked = false;
        p->prev = p->next = NULL;
        if (atomic_load(&w->stopping))
            feed_answer(p);
        else
            feed_read(p);
        p = next;
    }
}

static void feed_on_wake(uv_async_t *a)
{
    feed_reread(a->data);
}

static void feed_on_recheck(uv_timer_t *t)
{
    feed_reread(t->data);
}

static bool feed_param(lm_req *req, const char *key, long long min, long long max, long long def,
                       long long *out)
{
    const char *s = lm_req_query(req, key);
    *out = def;
    if (!s) return true;
    if (!lm_parse_int(s, out) || *out < min || *out > max) {
        lm_resp_problemf(req, 400, "%s must be an integer from %lld to %lld (got \"%.40s\")", key,
                         min, max, s);
        return false;
    }
    return true;
}

static void feed_handle(lm_req *req, void *ctx)
{
    lm_feed *f = ctx;
    for (size_t i = 0; i < req->query.n; i++) {
        const char *k = req->query.pairs[i].key;
        if (strcmp(k, "after") && strcmp(k, "limit") && strcmp(k, "wait")) {
            lm_resp_problemf(req, 400, "unknown query parameter '%.64s'; known: after, limit, wait",
                             k);
            return;
        }
    }
    long long after, limit, wait;
    if (!feed_param(req, "after", 0, 9223372036854775806LL, 0, &after) ||
        !feed_param(req, "limit", 1, 1000, 100, &limit) ||
        !feed_param(req, "wait", 0, 60, 0, &wait))
        return;
    feed_worker *w = &f->workers[lm_req_worker_index(req)];
    feed_poll *p = calloc(1, sizeof *p);
    p->w = w;
    p->req = req;
    p->after = after;
    p->limit = (int)limit;
    p->deadline = uv_now(w->loop) + (uint64_t)wait * 1000;
    feed_read(p);
}

static void feed_worker_start(lm_worker *wk, void *ctx)
{
    lm_feed *f = ctx;
    feed_worker *w = &f->workers[lm_worker_index(wk)];
    w->feed = f;
    w->loop = lm_worker_loop(wk);
    w->port = lm_db_attach(f->db, w->loop);
    uv_async_init(w->loop, &w->wake, feed_on_wake);
    w->wake.data = w;
    uv_timer_init(w->loop, &w->recheck);
    w->recheck.data = w;
    uv_timer_start(&w->recheck, feed_on_recheck, FEED_RECHECK_MS, FEED_RECHECK_MS);
    uv_mutex_lock(&f->lock);
    w->started = true;
    uv_mutex_unlock(&f->lock);
}

static void feed_worker_stop(lm_worker *wk, void *ctx)
{
    lm_feed *f = ctx;
    feed_worker *w = &f->workers[lm_worker_index(wk)];
    uv_mutex_lock(&f->lock);
    bool was = w->started;
    w->started = false;
    uv_mutex_unlock(&f->lock);
    if (!was) return;
    atomic_store(&w->stopping, true);
    feed_reread(w);
    uv_close((uv_handle_t *)&w->wake, NULL);
    uv_close((uv_handle_t *)&w->recheck, NULL);
    lm_db_detach(w->port);
}

/* Before the server drains: parked polls are answered (with what there is) at once, so a
 * long poll does not hold the shutdown for its whole wait. */
static void feed_stopping(void *ctx)
{
    lm_feed *f = ctx;
    for (int i = 0; i < f->n_workers; i++)
        atomic_store(&f->workers[i].stopping, true);
    lm_feed_notify(f);
}

static void feed_stopped(void *ctx)
{
    lm_feed *f = ctx;
    uv_mutex_destroy(&f->lock);
    free(f->workers);
    free(f->source);
    free(f);
}

lm_feed *lm_feed_new(lm_db *db, const char *source, int workers)
{
    lm_feed *f = calloc(1, sizeof *f);
    f->db = db;
    f->source = strdup(source);
    f->n_workers = workers;
    f->workers = calloc((size_t)workers, sizeof *f->workers);
    uv_mutex_init(&f->lock);
    f->comp = (lm_component){
        .ctx = f,
        .worker_start = feed_worker_start,
        .worker_stop = feed_worker_stop,
        .stopping = feed_stopping,
        .stopped = feed_stopped,
    };
    return f;
}

void lm_feed_routes(lm_feed *f, lm_router *r)
{
    lm_router_add(r, "GET", "/api/v1/events", feed_handle, f);
}

const lm_component *lm_feed_component(lm_feed *f)
{
    return &f->comp;
}

void lm_feed_notify(lm_feed *f)
{
    atomic_fetch_add(&f->gen, 1);
    uv_mutex_lock(&f->lock);
    for (int i = 0; i < f->n_workers; i++)
        if (f->workers[i].started) uv_async_send(&f->workers[i].wake);
    uv_mutex_unlock(&f->lock);
}
