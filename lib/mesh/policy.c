/* policy.c — the outbound-call policy. See policy.h. */
#include "policy.h"

#include "log.h"
#include "trace.h"

#include <jansson.h>
#include <uv.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

struct lm_policy_inst {
    char id[160];
    atomic_int in_flight;
    atomic_ullong requests, failures;
    lm_breaker breaker; /* under the policy's lock */
    int ejections;      /* openings in a row without a quiet period: the next wait grows */
    uint64_t closed_at; /* when it last closed */
    uint64_t last_used; /* for recycling the entry of an instance gone for good */
};

struct lm_policy {
    char service[64];
    lm_policy_config pc;
    pthread_mutex_t lock;
    lm_breaker svc;        /* the service's breaker */
    atomic_int svc_closed; /* svc.state == CLOSED, published for the lock-free fast path */
    /* every instance met, for as long as it is known: entries are allocated once and never
     * move (calls hold pointers); past LM_POLICY_MAX_TRACKED the least recently used idle
     * one with a closed circuit is recycled */
    lm_policy_inst *inst[LM_POLICY_MAX_TRACKED];
    int n_inst;
    int known; /* instances in the last set picked from (the ejection cap's base) */
    /* the last set picked from, referenced, and its instances' entries by index: a pick from
     * the same set (every pick while discovery has not changed) finds them without comparing
     * ids. Held, the set cannot be freed, so no other set can appear at its address. */
    lm_disc_set *cset;
    lm_policy_inst *cinst[LM_POLICY_MAX_INSTANCES];
    bool recycled; /* inst_of recycled an entry: an index's entry may have changed */
    atomic_ullong rr;
    atomic_int in_flight, retries_in_flight;
    atomic_ullong calls, tries, retries, budget_exhausted, bulkhead_rejected, open_rejected,
        deadline_exceeded;
};

/* ---- configuration ------------------------------------------------------------------- */

void lm_policy_config_default(lm_policy_config *pc, uint64_t timeout_ms,
                              uint64_t connect_timeout_ms, uint64_t open_ms)
{
    *pc = (lm_policy_config){
        .timeout_ms = timeout_ms,
        .connect_timeout_ms = connect_timeout_ms,
        .try_timeout_ms = 5000,
        .max_attempts = 3,
        .backoff_ms = 25,
        .backoff_max_ms = 250,
        .budget_pct = 20,
        .budget_min = 3,
        .bulkhead = 1024,
        .breaker = {.time_based = false,
                    .window_size = 20,
                    .min_calls = 10,
                    .failure_rate_pct = 50,
                    .slow_rate_pct = 100,
                    .slow_call_ms = 5000,
                    .open_ms = open_ms,
                    .half_open_calls = 3,
                    .consecutive_failures = 5},
        .eject_max_ms = 300000,
        .eject_max_pct = 50,
    };
}

static void name(char *out, size_t n, const char *prefix, const char *var)
{
    snprintf(out, n, "%s%s", prefix, var);
}

void lm_policy_config_env(lm_policy_config *pc, lm_cfg *cfg, const char *prefix)
{
    char v[128];
#define DUR(var, field, min, max)                                                                  \
    (name(v, sizeof v, prefix, var), pc->field = lm_cfg_duration_ms(cfg, v, pc->field, min, max))
#define INT(var, field, min, max)                                                                  \
    (name(v, sizeof v, prefix, var), pc->field = (int)lm_cfg_int(cfg, v, pc->field, min, max))
    DUR("TIMEOUT", timeout_ms, 10, 3600000);
    DUR("CONNECT_TIMEOUT", connect_timeout_ms, 10, 60000);
    DUR("TRY_TIMEOUT", try_timeout_ms, 10, 3600000);
    int retries = pc->max_attempts - 1;
    name(v, sizeof v, prefix, "RETRIES");
    retries = (int)lm_cfg_int(cfg, v, retries, 0, 10);
    pc->max_attempts = retries + 1;
    DUR("RETRY_BACKOFF", backoff_ms, 1, 60000);
    DUR("RETRY_BACKOFF_MAX", backoff_max_ms, 1, 600000);
    INT("RETRY_BUDGET", budget_pct, 0, 100);
    INT("RETRY_BUDGET_MIN", budget_min, 0, 10000);
    INT("BULKHEAD", bulkhead, 0, 1000000);
    name(v, sizeof v, prefix, "BREAKER_WINDOW");
    const char *w = lm_cfg_str(cfg, v, NULL);
    if (w) { /* "20": the last 20 calls; "30s": the calls of the last 30 seconds */
        long long calls;
        uint64_t ms;
        if (lm_parse_int(w, &calls) && calls >= 1 && calls <= LM_BREAKER_MAX_WINDOW) {
            pc->breaker.time_based = false;
            pc->breaker.window_size = (int)calls;
        } else if (lm_parse_duration_ms(w, &ms) && ms >= 1000 &&
                   ms <= 1000ull * LM_BREAKER_MAX_WINDOW && ms % 1000 == 0) {
            pc->breaker.time_based = true;
            pc->breaker.window_size = (int)(ms / 1000);
        } else {
            lm_cfg_error(cfg, v,
                         "must be a number of calls from 1 to %d or whole seconds from 1s to %ds "
                         "(got \"%.64s\")",
                         LM_BREAKER_MAX_WINDOW, LM_BREAKER_MAX_WINDOW, w);
        }
    }
    INT("BREAKER_MIN_CALLS", breaker.min_calls, 1, 100000);
    INT("BREAKER_FAILURE_RATE", breaker.failure_rate_pct, 1, 100);
    DUR("BREAKER_SLOW_CALL", breaker.slow_call_ms, 1, 3600000);
    INT("BREAKER_SLOW_RATE", breaker.slow_rate_pct, 1, 100);
    INT("BREAKER_THRESHOLD", breaker.consecutive_failures, 0, 1000);
    DUR("BREAKER_RESET", breaker.open_ms, 100, 3600000);
    INT("BREAKER_HALF_OPEN_CALLS", breaker.half_open_calls, 1, 1000);
    DUR("EJECT_MAX", eject_max_ms, 100, 86400000);
    INT("EJECT_MAX_PERCENT", eject_max_pct, 0, 100);
#undef DUR
#undef INT
    if (lm_cfg_ok(cfg) && pc->backoff_max_ms < pc->backoff_ms) {
        name(v, sizeof v, prefix, "RETRY_BACKOFF_MAX");
        lm_cfg_error(cfg, v, "must not be below %sRETRY_BACKOFF", prefix);
    }
    if (pc->eject_max_ms < pc->breaker.open_ms) pc->eject_max_ms = pc->breaker.open_ms;
}

lm_policy *lm_policy_new(const char *service, const lm_policy_config *pc)
{
    lm_policy *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    snprintf(p->service, sizeof p->service, "%s", service);
    p->pc = *pc;
    pthread_mutex_init(&p->lock, NULL);
    lm_breaker_init(&p->svc);
    atomic_store(&p->svc_closed, 1);
    return p;
}

void lm_policy_free(lm_policy *p)
{
    if (!p) return;
    lm_disc_set_release(p->cset);
    for (int i = 0; i < p->n_inst; i++)
        free(p->inst[i]);
    pthread_mutex_destroy(&p->lock);
    free(p);
}

const lm_policy_config *lm_policy_get_config(const lm_policy *p)
{
    return &p->pc;
}

const char *lm_policy_service(const lm_policy *p)
{
    return p->service;
}

/* ---- outcomes --------------------------------------------------------------------------- */

lm_outcome lm_policy_classify(lm_client_err err, const lm_client_response *resp)
{
    switch (err) {
    case LM_CLIENT_OK:
        break;
    case LM_CLIENT_ERR_RESOLVE:
    case LM_CLIENT_ERR_CONNECT:
    case LM_CLIENT_ERR_CONNECT_TIMEOUT:
        return LM_OUT_CONNECT;
    case LM_CLIENT_ERR_RESPONSE_TIMEOUT:
        return LM_OUT_TIMEOUT;
    case LM_CLIENT_ERR_CLOSED:
        return LM_OUT_RESET;
    case LM_CLIENT_ERR_PROTOCOL:
    case LM_CLIENT_ERR_TOO_LARGE:
        return LM_OUT_BROKEN;
    default: /* cancelled, the caller's own queue, its own body: nothing about the callee */
        return LM_OUT_IGNORED;
    }
    if (!resp) return LM_OUT_OK;
    if (resp->status == 408) return LM_OUT_REFUSED; /* RFC 9110 15.5.9: no complete request */
    if (resp->status == 502 || resp->status == 503 || resp->status == 504) {
        const char *ct = lm_client_response_header(resp, "content-type");
        /* a problem document is the service's considered answer (policy.h) */
        if (ct && !strncasecmp(ct, "application/problem+json", 24)) return LM_OUT_OK;
        return LM_OUT_GATEWAY;
    }
    return LM_OUT_OK;
}

const char *lm_outcome_name(lm_outcome o)
{
    static const char *const n[] = {"ok",      "connect", "reset",   "timeout",
                                    "gateway", "broken",  "ignored", "refused"};
    return (unsigned)o < sizeof n / sizeof n[0] ? n[o] : "?";
}

/* ---- instances --------------------------------------------------------------------------- */

/* The entry of id, created when new (recycling one idle and unused for longest when full).
 * Under the lock. */
static lm_policy_inst *inst_of(lm_policy *p, const char *id, uint64_t now)
{
    for (int i = 0; i < p->n_inst; i++)
        if (!strcmp(p->inst[i]->id, id)) return p->inst[i];
    lm_policy_inst *e = NULL;
    if (p->n_inst < LM_POLICY_MAX_TRACKED) {
        e = p->inst[p->n_inst++] = calloc(1, sizeof *e);
        if (!e) {
            p->n_inst--;
            return NULL;
        }
    } else {
        for (int i = 0; i < p->n_inst; i++) {
            lm_policy_inst *k = p->inst[i];
            if (atomic_load_explicit(&k->in_flight, memory_order_relaxed) == 0 &&
                k->breaker.state == LM_BREAKER_CLOSED && (!e || k->last_used < e->last_used))
                e = k;
        }
        if (!e) return NULL; /* all busy or open: the caller skips this one */
        p->recycled = true;
    }
    snprintf(e->id, sizeof e->id, "%s", id);
    atomic_store_explicit(&e->in_flight, 0, memory_order_relaxed);
    atomic_store_explicit(&e->requests, 0, memory_order_relaxed);
    atomic_store_explicit(&e->failures, 0, memory_order_relaxed);
    lm_breaker_init(&e->breaker);
    e->ejections = 0;
    e->closed_at = now;
    e->last_used = now;
    return e;
}

static int ejected(const lm_policy *p, uint64_t now)
{
    int n = 0;
    for (int i = 0; i < p->n_inst; i++)
        if (!lm_breaker_ready(&p->inst[i]->breaker, &p->pc.breaker, now) ||
            p->inst[i]->breaker.state == LM_BREAKER_HALF_OPEN)
            n++;
    return n;
}

static int eject_cap(const lm_policy *p)
{
    int n = p->known;
    if (n < 2) return 0; /* a single instance is judged by the service's circuit */
    int cap = n * p->pc.eject_max_pct / 100;
    return cap < 1 && p->pc.eject_max_pct > 0 ? 1 : cap;
}

static uint64_t eject_ms(const lm_policy *p, int ejections)
{
    uint64_t ms = p->pc.breaker.open_ms;
    for (int i = 1; i < ejections && ms < p->pc.eject_max_ms; i++)
        ms *= 2;
    return ms < p->pc.eject_max_ms ? ms : p->pc.eject_max_ms;
}

/* The entries of the set's first n instances, by index (NULL: none could be made). Under the
 * lock. */
static lm_policy_inst *const *entries_of(lm_policy *p, const lm_disc_set *set, int n, uint64_t now)
{
    if (set && set == p->cset) return p->cinst;
    lm_disc_set_release(p->cset);
    p->cset = NULL;
    p->recycled = false;
    for (int i = 0; i < n; i++)
        p->cinst[i] = inst_of(p, lm_disc_set_get(set, (size_t)i)->id, now);
    /* recycling may have given an entry made for an earlier index to a later one: then the
     * entries are this pick's only, and the next one looks them up again */
    if (!p->recycled) p->cset = lm_disc_set_retain((lm_disc_set *)set); /* a count, not data */
    return p->cinst;
}

/* Picks among the set's instances whose circuits let a call through, preferring those not
 * tried in this call; takes the permission. Under the lock. */
static int pick_locked(lm_call *c, const lm_disc_set *set, bool least_outstanding, uint64_t now,
                       char *log, size_t loglen)
{
    lm_policy *p = c->pol;
    int n = set ? (int)lm_disc_set_count(set) : 0;
    if (n > LM_POLICY_MAX_INSTANCES) n = LM_POLICY_MAX_INSTANCES;
    p->known = n;
    int ready[LM_POLICY_MAX_INSTANCES], m = 0;
    lm_policy_inst *const *e = entries_of(p, set, n, now);
    /* in order, the first pass that finds any: untried and let through by its circuit;
     * untried whatever its circuit says (a retry goes to another instance where there is
     * one, and with every circuit closed to calls — the others ejected, the rest busy with
     * their half-open trials — any instance is better than none: Envoy's panic routing; the
     * service's own circuit stops calls to a service down as a whole); tried and let
     * through; tried */
    bool panic = false;
    for (int pass = 0; pass < 4 && m == 0; pass++) {
        bool want_tried = pass >= 2, need_ready = pass % 2 == 0;
        for (int i = 0; i < n; i++) {
            if (((c->tried >> i & 1) != 0) != want_tried) continue;
            lm_policy_inst *k = e[i];
            if (!k || (need_ready && !lm_breaker_ready(&k->breaker, &p->pc.breaker, now))) continue;
            ready[m++] = i;
        }
        panic = !need_ready;
    }
    if (m == 0) return -1;
    int pick;
    if (least_outstanding && m > 1) {
        int a = (int)(lm_trace_rand64() % (uint64_t)m),
            b = (int)(lm_trace_rand64() % (uint64_t)(m - 1));
        if (b >= a) b++;
        a = ready[a];
        b = ready[b];
        pick = atomic_load_explicit(&e[a]->in_flight, memory_order_relaxed) <=
                       atomic_load_explicit(&e[b]->in_flight, memory_order_relaxed)
                   ? a
                   : b;
    } else if (least_outstanding) {
        pick = ready[0];
    } else {
        pick = ready[atomic_fetch_add_explicit(&p->rr, 1, memory_order_relaxed) % (uint64_t)m];
    }
    lm_policy_inst *k = e[pick];
    lm_breaker_transition t = LM_BREAKER_NO_CHANGE;
    if (!panic) lm_breaker_acquire(&k->breaker, &p->pc.breaker, now, &t);
    if (t == LM_BREAKER_HALF_OPENED)
        snprintf(log, loglen,
                 "circuit of instance %s of %s half-open: ejection time over, %d trial calls",
                 k->id, p->service, p->pc.breaker.half_open_calls);
    k->last_used = now;
    atomic_fetch_add_explicit(&k->in_flight, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&k->requests, 1, memory_order_relaxed);
    c->cur = k;
    c->index = pick;
    c->tried |= 1ull << pick;
    c->try_start_ms = now;
    c->attempts++;
    atomic_fetch_add_explicit(&p->tries, 1, memory_order_relaxed);
    return pick;
}

/* ---- calls ------------------------------------------------------------------------------- */

lm_policy_verdict lm_policy_begin(lm_policy *p, lm_call *c, uint64_t now, uint64_t deadline_ms,
                                  bool safe)
{
    *c = (lm_call){.pol = p,
                   .start_ms = now,
                   .deadline_ms = deadline_ms,
                   .safe = safe,
                   .per_try = safe,
                   .index = -1};
    atomic_fetch_add_explicit(&p->calls, 1, memory_order_relaxed);
    if (deadline_ms <= now) {
        atomic_fetch_add_explicit(&p->deadline_exceeded, 1, memory_order_relaxed);
        return LM_POLICY_DEADLINE;
    }
    int inflight = atomic_fetch_add_explicit(&p->in_flight, 1, memory_order_relaxed) + 1;
    if (p->pc.bulkhead > 0 && inflight > p->pc.bulkhead) {
        atomic_fetch_sub_explicit(&p->in_flight, 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&p->bulkhead_rejected, 1, memory_order_relaxed);
        return LM_POLICY_BULKHEAD;
    }
    char log[256];
    log[0] = '\0';
    lm_breaker_transition t = LM_BREAKER_NO_CHANGE;
    bool permit = true;
    if (!atomic_load_explicit(&p->svc_closed, memory_order_acquire)) {
        pthread_mutex_lock(&p->lock); /* decided under the lock */
        permit = lm_breaker_acquire(&p->svc, &p->pc.breaker, now, &t);
        pthread_mutex_unlock(&p->lock);
    }
    if (t == LM_BREAKER_HALF_OPENED)
        snprintf(log, sizeof log, "circuit of service %s half-open: open wait over, %d trial calls",
                 p->service, p->pc.breaker.half_open_calls);
    if (log[0]) lm_log(LM_LOG_WARN, NULL, "%s", log);
    if (!permit) {
        atomic_fetch_sub_explicit(&p->in_flight, 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&p->open_rejected, 1, memory_order_relaxed);
        return LM_POLICY_OPEN;
    }
    c->begun = true;
    c->svc_permit = true;
    return LM_POLICY_GO;
}

lm_policy_verdict lm_policy_begin_forced(lm_policy *p, lm_call *c, uint64_t now,
                                         uint64_t deadline_ms)
{
    *c = (lm_call){.pol = p,
                   .start_ms = now,
                   .deadline_ms = deadline_ms,
                   .safe = true,
                   .per_try = true,
                   .index = -1,
                   .forced = true};
    atomic_fetch_add_explicit(&p->calls, 1, memory_order_relaxed);
    if (deadline_ms <= now) {
        atomic_fetch_add_explicit(&p->deadline_exceeded, 1, memory_order_relaxed);
        return LM_POLICY_DEADLINE;
    }
    int inflight = atomic_fetch_add_explicit(&p->in_flight, 1, memory_order_relaxed) + 1;
    if (p->pc.bulkhead > 0 && inflight > p->pc.bulkhead) {
        atomic_fetch_sub_explicit(&p->in_flight, 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&p->bulkhead_rejected, 1, memory_order_relaxed);
        return LM_POLICY_BULKHEAD;
    }
    c->begun = true;
    return LM_POLICY_GO;
}

bool lm_policy_permits(lm_policy *p, uint64_t now)
{
    if (atomic_load_explicit(&p->svc_closed, memory_order_acquire)) return true;
    pthread_mutex_lock(&p->lock);
    bool ok = lm_breaker_ready(&p->svc, &p->pc.breaker, now);
    pthread_mutex_unlock(&p->lock);
    return ok;
}

int lm_policy_pick(lm_call *c, const lm_disc_set *set, bool least_outstanding, uint64_t now)
{
    char log[512];
    log[0] = '\0';
    pthread_mutex_lock(&c->pol->lock);
    int i = pick_locked(c, set, least_outstanding, now, log, sizeof log);
    pthread_mutex_unlock(&c->pol->lock);
    if (log[0]) lm_log(LM_LOG_WARN, NULL, "%s", log);
    return i;
}

uint64_t lm_call_remaining(const lm_call *c, uint64_t now)
{
    return c->deadline_ms > now ? c->deadline_ms - now : 0;
}

uint64_t lm_call_try_timeout(const lm_call *c, uint64_t now)
{
    uint64_t left = lm_call_remaining(c, now);
    /* only a safe call may be tried again after a timeout: others get the whole deadline */
    if (c->per_try && c->attempts < c->pol->pc.max_attempts && left > c->pol->pc.try_timeout_ms)
        return c->pol->pc.try_timeout_ms;
    return left;
}

/* The try's outcome in its instance's breaker; under the lock. log gets a transition. */
static void try_done_locked(lm_call *c, lm_policy_inst *k, lm_outcome o, uint64_t now, char *log,
                            size_t loglen)
{
    lm_policy *p = c->pol;
    bool failed = lm_outcome_failed(o);
    char why[160];
    why[0] = '\0';
    atomic_fetch_sub_explicit(&k->in_flight, 1, memory_order_relaxed);
    if (o == LM_OUT_IGNORED) {
        lm_breaker_release(&k->breaker);
    } else {
        bool slow = now - c->try_start_ms >= p->pc.breaker.slow_call_ms;
        if (k->breaker.state == LM_BREAKER_CLOSED && now - k->closed_at > p->pc.eject_max_ms)
            k->ejections = 0; /* quiet long enough: the next ejection starts short again */
        uint64_t open_ms = eject_ms(p, k->ejections + 1);
        lm_breaker_state before = k->breaker.state;
        lm_breaker_transition t = lm_breaker_record(&k->breaker, &p->pc.breaker, now, failed, slow,
                                                    open_ms, why, sizeof why);
        if (t == LM_BREAKER_OPENED && before == LM_BREAKER_CLOSED &&
            ejected(p, now) > eject_cap(p)) {
            /* over the cap of the share ejected: keep it in (the service's circuit judges) */
            uint64_t opens = k->breaker.opens - 1; /* this opening did not happen */
            lm_breaker_init(&k->breaker);
            k->breaker.opens = opens;
            if (p->known >= 2) /* a lone instance is the service's circuit's to judge */
                snprintf(log, loglen,
                         "instance %s of %s not ejected (%s): at most %d%% of %d instances may be",
                         k->id, p->service, why, p->pc.eject_max_pct, p->known);
        } else if (t == LM_BREAKER_OPENED) {
            k->ejections++;
            snprintf(log, loglen, "circuit of instance %s of %s opened (%s): ejected for %llu ms",
                     k->id, p->service, why, (unsigned long long)open_ms);
        } else if (t == LM_BREAKER_CLOSED_AGAIN) {
            k->closed_at = now;
            snprintf(log, loglen, "circuit of instance %s of %s closed (%s)", k->id, p->service,
                     why);
        }
    }
}

void lm_policy_try_done(lm_call *c, lm_outcome o, uint64_t now)
{
    lm_policy *p = c->pol;
    lm_policy_inst *k = c->cur;
    if (c->retry_in_budget) {
        atomic_fetch_sub_explicit(&p->retries_in_flight, 1, memory_order_relaxed);
        c->retry_in_budget = false;
    }
    if (!k) return;
    c->cur = NULL;
    if (lm_outcome_failed(o)) atomic_fetch_add_explicit(&k->failures, 1, memory_order_relaxed);
    char log[640];
    log[0] = '\0';
    pthread_mutex_lock(&p->lock);
    try_done_locked(c, k, o, now, log, sizeof log);
    pthread_mutex_unlock(&p->lock);
    if (log[0]) lm_log(LM_LOG_WARN, NULL, "%s", log);
}

static bool retryable(const lm_call *c, lm_outcome o)
{
    switch (o) {
    case LM_OUT_CONNECT:
    case LM_OUT_REFUSED:
        return true; /* nothing was sent, or nothing was taken: not a repeat */
    case LM_OUT_RESET:
    case LM_OUT_TIMEOUT:
    case LM_OUT_GATEWAY:
        return c->safe;
    default:
        return false;
    }
}

bool lm_policy_next(lm_call *c, lm_outcome o, uint64_t retry_after_ms, bool sent_to_client,
                    bool repeatable, const lm_disc_set *set, bool least_outstanding, uint64_t now,
                    lm_next *out)
{
    lm_policy *p = c->pol;
    if (sent_to_client || !repeatable || !retryable(c, o) || c->attempts >= p->pc.max_attempts)
        return false;
    /* full jitter: random(0, min(max, base·2^(attempt-1))) */
    uint64_t cap = p->pc.backoff_ms;
    for (int i = 1; i < c->attempts && cap < p->pc.backoff_max_ms; i++)
        cap *= 2;
    if (cap > p->pc.backoff_max_ms) cap = p->pc.backoff_max_ms;
    uint64_t delay = lm_trace_rand64() % (cap + 1);
    if (retry_after_ms > delay) delay = retry_after_ms;
    /* the retry must have time to answer after its wait: at least a tenth of a try */
    uint64_t left = lm_call_remaining(c, now);
    if (delay + 10 >= left) return false;
    /* the budget: retries in flight at most budget_pct of calls in flight (Envoy) */
    int active = atomic_load_explicit(&p->in_flight, memory_order_relaxed);
    int allowed = active * p->pc.budget_pct / 100;
    if (allowed < p->pc.budget_min) allowed = p->pc.budget_min;
    int mine = atomic_fetch_add_explicit(&p->retries_in_flight, 1, memory_order_relaxed) + 1;
    if (mine > allowed) {
        atomic_fetch_sub_explicit(&p->retries_in_flight, 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&p->budget_exhausted, 1, memory_order_relaxed);
        return false;
    }
    c->retry_in_budget = true;
    int i = lm_policy_pick(c, set, least_outstanding, now + delay);
    if (i < 0) {
        atomic_fetch_sub_explicit(&p->retries_in_flight, 1, memory_order_relaxed);
        c->retry_in_budget = false;
        return false;
    }
    c->try_start_ms = now + delay;
    atomic_fetch_add_explicit(&p->retries, 1, memory_order_relaxed);
    out->index = i;
    out->delay_ms = delay;
    return true;
}

/* The call's final outcome in the service's breaker; under the lock. */
static void end_locked(lm_call *c, lm_outcome final, uint64_t now, char *log, size_t loglen)
{
    lm_policy *p = c->pol;
    char why[160];
    why[0] = '\0';
    bool slow = now - c->start_ms >= p->pc.breaker.slow_call_ms;
    lm_breaker_transition t;
    if (final == LM_OUT_IGNORED) {
        lm_breaker_release(&p->svc);
        t = LM_BREAKER_NO_CHANGE;
    } else {
        t = lm_breaker_record(&p->svc, &p->pc.breaker, now, lm_outcome_failed(final), slow,
                              p->pc.breaker.open_ms, why, sizeof why);
    }
    atomic_store_explicit(&p->svc_closed, p->svc.state == LM_BREAKER_CLOSED, memory_order_release);
    if (t == LM_BREAKER_OPENED)
        snprintf(log, loglen, "circuit of service %s opened (%s): calls fail fast for %llu ms",
                 p->service, why, (unsigned long long)p->pc.breaker.open_ms);
    else if (t == LM_BREAKER_CLOSED_AGAIN)
        snprintf(log, loglen, "circuit of service %s closed (%s)", p->service, why);
}

void lm_policy_end(lm_call *c, lm_outcome final, uint64_t now)
{
    lm_policy *p = c->pol;
    if (c->cur) lm_policy_try_done(c, LM_OUT_IGNORED, now);
    if (c->retry_in_budget) {
        atomic_fetch_sub_explicit(&p->retries_in_flight, 1, memory_order_relaxed);
        c->retry_in_budget = false;
    }
    if (!c->begun) return;
    c->begun = false;
    atomic_fetch_sub_explicit(&p->in_flight, 1, memory_order_relaxed);
    if (c->forced && final == LM_OUT_OK) { /* a forced call got through: the service is back */
        bool closed = false;
        pthread_mutex_lock(&p->lock);
        if (p->svc.state != LM_BREAKER_CLOSED) {
            p->svc.state = LM_BREAKER_CLOSED;
            lm_breaker_reset_window(&p->svc);
            closed = true;
        }
        atomic_store_explicit(&p->svc_closed, 1, memory_order_release);
        pthread_mutex_unlock(&p->lock);
        if (closed)
            lm_log(LM_LOG_WARN, NULL,
                   "circuit of service %s closed (a call made while open, as the fallback "
                   "could not answer, succeeded)",
                   p->service);
        return;
    }
    if (!c->svc_permit) return;
    char log[512];
    log[0] = '\0';
    pthread_mutex_lock(&p->lock);
    end_locked(c, final, now, log, sizeof log);
    pthread_mutex_unlock(&p->lock);
    if (log[0]) lm_log(LM_LOG_WARN, NULL, "%s", log);
}

void lm_policy_finish(lm_call *c, lm_outcome o, uint64_t now)
{
    lm_policy *p = c->pol;
    lm_policy_inst *k = c->cur;
    if (!k || !c->begun || !c->svc_permit || c->forced) { /* the general path */
        lm_policy_try_done(c, o, now);
        lm_policy_end(c, o, now);
        return;
    }
    if (c->retry_in_budget) {
        atomic_fetch_sub_explicit(&p->retries_in_flight, 1, memory_order_relaxed);
        c->retry_in_budget = false;
    }
    c->cur = NULL;
    c->begun = false;
    if (lm_outcome_failed(o)) atomic_fetch_add_explicit(&k->failures, 1, memory_order_relaxed);
    atomic_fetch_sub_explicit(&p->in_flight, 1, memory_order_relaxed);
    char log1[640], log2[512]; /* not zero-filled: per request */
    log1[0] = log2[0] = '\0';
    pthread_mutex_lock(&p->lock);
    try_done_locked(c, k, o, now, log1, sizeof log1);
    end_locked(c, o, now, log2, sizeof log2);
    pthread_mutex_unlock(&p->lock);
    if (log1[0]) lm_log(LM_LOG_WARN, NULL, "%s", log1);
    if (log2[0]) lm_log(LM_LOG_WARN, NULL, "%s", log2);
}

/* ---- headers ------------------------------------------------------------------------------ */

bool lm_policy_parse_timeout(const char *v, uint64_t *ms)
{
    if (!v || !*v) return false;
    uint64_t n = 0;
    for (const char *s = v; *s; s++) {
        if (*s < '0' || *s > '9' || s - v >= 9) return false;
        n = n * 10 + (uint64_t)(*s - '0');
    }
    if (n > 86400000) return false;
    *ms = n;
    return true;
}

uint64_t lm_policy_parse_retry_after(const char *v)
{
    uint64_t ms;
    if (!v || !lm_policy_parse_timeout(v, &ms) || ms > 3600) return 0;
    return ms * 1000;
}

/* ---- observation ------------------------------------------------------------------------- */

void lm_policy_stats_get(lm_policy *p, lm_policy_stats *o)
{
    *o = (lm_policy_stats){
        .calls = atomic_load(&p->calls),
        .tries = atomic_load(&p->tries),
        .retries = atomic_load(&p->retries),
        .budget_exhausted = atomic_load(&p->budget_exhausted),
        .bulkhead_rejected = atomic_load(&p->bulkhead_rejected),
        .open_rejected = atomic_load(&p->open_rejected),
        .deadline_exceeded = atomic_load(&p->deadline_exceeded),
        .in_flight = (uint64_t)atomic_load(&p->in_flight),
    };
}

static int state_num(lm_breaker_state s)
{
    return s == LM_BREAKER_OPEN ? 1 : s == LM_BREAKER_HALF_OPEN ? 2 : 0;
}

void lm_policy_metrics(lm_policy *const *ps, int n, lm_buf *out, uint64_t now)
{
    static const struct {
        const char *name, *help;
        size_t off;
    } counters[] = {
        {"calls", "calls made to the service", offsetof(lm_policy_stats, calls)},
        {"tries", "tries (first tries and retries)", offsetof(lm_policy_stats, tries)},
        {"retries", "tries after the first", offsetof(lm_policy_stats, retries)},
        {"retry_budget_exhausted", "retries refused by the retry budget",
         offsetof(lm_policy_stats, budget_exhausted)},
        {"bulkhead_rejected", "calls refused over the bulkhead",
         offsetof(lm_policy_stats, bulkhead_rejected)},
        {"circuit_rejected", "calls refused by the service's open circuit",
         offsetof(lm_policy_stats, open_rejected)},
        {"deadline_exceeded", "calls with no time left",
         offsetof(lm_policy_stats, deadline_exceeded)},
    };
    lm_policy_stats st[16];
    if (n > 16) n = 16;
    for (int i = 0; i < n; i++)
        lm_policy_stats_get(ps[i], &st[i]);
    for (size_t k = 0; k < sizeof counters / sizeof counters[0]; k++) {
        lm_buf_printf(
            out, "# HELP lotmesh_upstream_%s_total %s\n# TYPE lotmesh_upstream_%s_total counter\n",
            counters[k].name, counters[k].help, counters[k].name);
        for (int i = 0; i < n; i++)
            lm_buf_printf(
                out, "lotmesh_upstream_%s_total{service=\"%s\"} %llu\n", counters[k].name,
                ps[i]->service,
                (unsigned long long)*(const uint64_t *)((const char *)&st[i] + counters[k].off));
    }
    lm_buf_printf(out, "# HELP lotmesh_upstream_in_flight calls in flight (the bulkhead's count)\n"
                       "# TYPE lotmesh_upstream_in_flight gauge\n");
    for (int i = 0; i < n; i++)
        lm_buf_printf(out, "lotmesh_upstream_in_flight{service=\"%s\"} %llu\n", ps[i]->service,
                      (unsigned long long)st[i].in_flight);
    lm_buf_printf(out,
                  "# HELP lotmesh_circuit_state 0 closed, 1 open, 2 half-open (instance \"\": the "
                  "service's)\n# TYPE lotmesh_circuit_state gauge\n");
    lm_buf opens = LM_BUF_INIT;
    for (int i = 0; i < n; i++) {
        lm_policy *p = ps[i];
        pthread_mutex_lock(&p->lock);
        lm_buf_printf(out, "lotmesh_circuit_state{service=\"%s\",instance=\"\"} %d\n", p->service,
                      state_num(p->svc.state));
        lm_buf_printf(&opens, "lotmesh_circuit_opens_total{service=\"%s\",instance=\"\"} %llu\n",
                      p->service, (unsigned long long)p->svc.opens);
        for (int j = 0; j < p->n_inst; j++) {
            const lm_policy_inst *k = p->inst[j];
            int s = state_num(k->breaker.state);
            if (k->breaker.state == LM_BREAKER_OPEN &&
                lm_breaker_ready(&k->breaker, &p->pc.breaker, now))
                s = 1; /* open until a call takes the first trial */
            lm_buf_printf(out, "lotmesh_circuit_state{service=\"%s\",instance=\"%s\"} %d\n",
                          p->service, k->id, s);
            lm_buf_printf(&opens,
                          "lotmesh_circuit_opens_total{service=\"%s\",instance=\"%s\"} %llu\n",
                          p->service, k->id, (unsigned long long)k->breaker.opens);
        }
        pthread_mutex_unlock(&p->lock);
    }
    lm_buf_printf(out, "# HELP lotmesh_circuit_opens_total times a circuit opened\n"
                       "# TYPE lotmesh_circuit_opens_total counter\n");
    lm_buf_append(out, opens.data, opens.len);
    lm_buf_free(&opens);
}

static json_t *breaker_json(const lm_breaker *b, const lm_breaker_config *bc, uint64_t now)
{
    int calls, fr, sr;
    lm_breaker_rates(b, bc, now, &calls, &fr, &sr);
    json_t *j = json_pack("{s:s, s:i, s:i, s:i, s:I}", "state", lm_breaker_state_name(b->state),
                          "window_calls", calls, "failure_rate", fr, "slow_rate", sr, "opens",
                          (json_int_t)b->opens);
    if (b->state == LM_BREAKER_OPEN)
        json_object_set_new(j, "retry_in_ms",
                            json_integer((json_int_t)(now - b->opened_at < b->open_ms
                                                          ? b->open_ms - (now - b->opened_at)
                                                          : 0)));
    return j;
}

json_t *lm_policy_json(lm_policy *p, uint64_t now)
{
    lm_policy_stats st;
    lm_policy_stats_get(p, &st);
    json_t *insts = json_array();
    pthread_mutex_lock(&p->lock);
    json_t *svc = breaker_json(&p->svc, &p->pc.breaker, now);
    for (int j = 0; j < p->n_inst; j++) {
        const lm_policy_inst *k = p->inst[j];
        json_t *b = breaker_json(&k->breaker, &p->pc.breaker, now);
        json_object_set_new(b, "id", json_string(k->id));
        json_object_set_new(b, "ejections", json_integer(k->ejections));
        json_object_set_new(
            b, "in_flight",
            json_integer(atomic_load_explicit(&k->in_flight, memory_order_relaxed)));
        json_object_set_new(b, "requests", json_integer((json_int_t)atomic_load(&k->requests)));
        json_object_set_new(b, "failures", json_integer((json_int_t)atomic_load(&k->failures)));
        json_array_append_new(insts, b);
    }
    pthread_mutex_unlock(&p->lock);
    return json_pack("{s:s, s:o, s:{s:i, s:I}, s:{s:I, s:I, s:I, s:I, s:I, s:I, s:I}, s:o}",
                     "service", p->service, "circuit", svc, "bulkhead", "limit", p->pc.bulkhead,
                     "in_flight", (json_int_t)st.in_flight, "stats", "calls", (json_int_t)st.calls,
                     "tries", (json_int_t)st.tries, "retries", (json_int_t)st.retries,
                     "retry_budget_exhausted", (json_int_t)st.budget_exhausted, "bulkhead_rejected",
                     (json_int_t)st.bulkhead_rejected, "circuit_rejected",
                     (json_int_t)st.open_rejected, "deadline_exceeded",
                     (json_int_t)st.deadline_exceeded, "instances", insts);
}

const char *lm_policy_instance_state(lm_policy *p, const char *id, long long *in_flight)
{
    const char *s = "closed";
    *in_flight = 0;
    pthread_mutex_lock(&p->lock);
    for (int j = 0; j < p->n_inst; j++)
        if (!strcmp(p->inst[j]->id, id)) {
            s = lm_breaker_state_name(p->inst[j]->breaker.state);
            *in_flight = atomic_load_explicit(&p->inst[j]->in_flight, memory_order_relaxed);
        }
    pthread_mutex_unlock(&p->lock);
    return s;
}

void lm_policy_each_instance(lm_policy *p, lm_policy_inst_fn fn, void *ctx)
{
    pthread_mutex_lock(&p->lock);
    for (int j = 0; j < p->n_inst; j++) {
        lm_policy_inst *k = p->inst[j];
        fn(ctx, k->id, atomic_load_explicit(&k->requests, memory_order_relaxed),
           atomic_load_explicit(&k->failures, memory_order_relaxed),
           atomic_load_explicit(&k->in_flight, memory_order_relaxed),
           lm_breaker_state_name(k->breaker.state));
    }
    pthread_mutex_unlock(&p->lock);
}

uint64_t lm_policy_now_ms(void)
{
    return uv_hrtime() / 1000000u;
}
