/* breaker.c — sliding windows and the closed / open / half-open machine. See breaker.h. */
#include "breaker.h"

#include <stdio.h>
#include <string.h>

void lm_breaker_init(lm_breaker *b)
{
    memset(b, 0, sizeof *b);
    b->state = LM_BREAKER_CLOSED;
}

void lm_breaker_reset_window(lm_breaker *b)
{
    memset(b->ring, 0, sizeof b->ring);
    b->head = b->filled = 0;
    b->calls = b->failures = b->slow = 0;
    b->consecutive = 0;
}

/* Time-based: drops the buckets of seconds that left the window. head is the slot of the
 * newest second seen (ring[head].second). */
static void expire(lm_breaker *b, const lm_breaker_config *c, uint64_t sec)
{
    int n = c->window_size;
    if (!b->filled) {
        b->head = 0;
        b->ring[0] = (lm_breaker_bucket){.second = sec};
        b->filled = 1;
        return;
    }
    uint64_t newest = b->ring[b->head].second;
    if (sec <= newest) return;
    uint64_t steps = sec - newest;
    if (steps > (uint64_t)n) steps = (uint64_t)n;
    for (uint64_t i = 0; i < steps; i++) {
        b->head = (b->head + 1) % n;
        lm_breaker_bucket *k = &b->ring[b->head];
        if (b->filled == n) {
            b->calls -= k->calls;
            b->failures -= k->failures;
            b->slow -= k->slow;
        } else {
            b->filled++;
        }
        *k = (lm_breaker_bucket){0};
    }
    b->ring[b->head].second = sec;
}

static void add(lm_breaker *b, const lm_breaker_config *c, uint64_t now, bool failure, bool slow)
{
    if (c->time_based) {
        expire(b, c, now / 1000);
        lm_breaker_bucket *k = &b->ring[b->head];
        k->calls++;
        k->failures += failure;
        k->slow += slow;
    } else {
        int n = c->window_size;
        lm_breaker_bucket *k = &b->ring[b->head];
        if (b->filled == n) {
            b->calls -= k->calls;
            b->failures -= k->failures;
            b->slow -= k->slow;
        } else {
            b->filled++;
        }
        *k = (lm_breaker_bucket){.calls = 1, .failures = failure, .slow = slow};
        b->head = (b->head + 1) % n;
    }
    b->calls++;
    b->failures += failure;
    b->slow += slow;
}

void lm_breaker_rates(const lm_breaker *b, const lm_breaker_config *c, uint64_t now, int *calls,
                      int *failure_pct, int *slow_pct)
{
    lm_breaker copy_ = *b; /* expiring is a change; the caller asked for a view */
    if (c->time_based && b->filled) expire(&copy_, c, now / 1000);
    *calls = (int)copy_.calls;
    *failure_pct = copy_.calls ? (int)(100u * copy_.failures / copy_.calls) : 0;
    *slow_pct = copy_.calls ? (int)(100u * copy_.slow / copy_.calls) : 0;
}

bool lm_breaker_ready(const lm_breaker *b, const lm_breaker_config *c, uint64_t now)
{
    switch (b->state) {
    case LM_BREAKER_CLOSED:
        return true;
    case LM_BREAKER_OPEN:
        return now - b->opened_at >= b->open_ms;
    case LM_BREAKER_HALF_OPEN:
        return b->trials_taken < c->half_open_calls;
    }
    return true;
}

bool lm_breaker_acquire(lm_breaker *b, const lm_breaker_config *c, uint64_t now,
                        lm_breaker_transition *t)
{
    *t = LM_BREAKER_NO_CHANGE;
    switch (b->state) {
    case LM_BREAKER_CLOSED:
        return true;
    case LM_BREAKER_OPEN:
        if (now - b->opened_at < b->open_ms) return false;
        b->state = LM_BREAKER_HALF_OPEN;
        b->trials_taken = b->trials_done = b->trial_failures = b->trial_slow = 0;
        *t = LM_BREAKER_HALF_OPENED;
        /* fall through: take the first trial */
        /* FALLTHRU */
    case LM_BREAKER_HALF_OPEN:
        if (b->trials_taken >= c->half_open_calls) return false;
        b->trials_taken++;
        return true;
    }
    return true;
}

void lm_breaker_release(lm_breaker *b)
{
    if (b->state == LM_BREAKER_HALF_OPEN && b->trials_taken > b->trials_done) b->trials_taken--;
}

static void open_now(lm_breaker *b, uint64_t now, uint64_t open_ms)
{
    b->state = LM_BREAKER_OPEN;
    b->opened_at = now;
    b->open_ms = open_ms;
    b->opens++;
    lm_breaker_reset_window(b);
}

void lm_breaker_force_open(lm_breaker *b, uint64_t now, uint64_t open_ms)
{
    open_now(b, now, open_ms);
}

lm_breaker_transition lm_breaker_record(lm_breaker *b, const lm_breaker_config *c, uint64_t now,
                                        bool failure, bool slow, uint64_t open_ms, char *why,
                                        size_t whylen)
{
    if (b->state == LM_BREAKER_OPEN) return LM_BREAKER_NO_CHANGE; /* a call from before */
    if (b->state == LM_BREAKER_HALF_OPEN) {
        if (b->trials_done >= b->trials_taken) return LM_BREAKER_NO_CHANGE; /* not a trial */
        b->trials_done++;
        b->trial_failures += failure;
        b->trial_slow += slow;
        if (b->trials_done < c->half_open_calls) return LM_BREAKER_NO_CHANGE;
        int fr = 100 * b->trial_failures / b->trials_done;
        int sr = 100 * b->trial_slow / b->trials_done;
        if (fr >= c->failure_rate_pct || sr >= c->slow_rate_pct) {
            if (why)
                snprintf(why, whylen, "%d of %d trial calls failed, %d slow", b->trial_failures,
                         b->trials_done, b->trial_slow);
            open_now(b, now, open_ms);
            return LM_BREAKER_OPENED;
        }
        if (why)
            snprintf(why, whylen, "%d of %d trial calls succeeded",
                     b->trials_done - b->trial_failures, b->trials_done);
        b->state = LM_BREAKER_CLOSED;
        lm_breaker_reset_window(b);
        return LM_BREAKER_CLOSED_AGAIN;
    }
    add(b, c, now, failure, slow);
    b->consecutive = failure ? b->consecutive + 1 : 0;
    if (c->consecutive_failures > 0 && b->consecutive >= c->consecutive_failures) {
        if (why) snprintf(why, whylen, "%d failures in a row", b->consecutive);
        open_now(b, now, open_ms);
        return LM_BREAKER_OPENED;
    }
    if (b->calls < (uint32_t)c->min_calls) return LM_BREAKER_NO_CHANGE;
    int fr = (int)(100u * b->failures / b->calls), sr = (int)(100u * b->slow / b->calls);
    if (fr >= c->failure_rate_pct || sr >= c->slow_rate_pct) {
        if (why)
            snprintf(why, whylen, "failure rate %d%%, slow-call rate %d%% over %u calls", fr, sr,
                     b->calls);
        open_now(b, now, open_ms);
        return LM_BREAKER_OPENED;
    }
    return LM_BREAKER_NO_CHANGE;
}

const char *lm_breaker_state_name(lm_breaker_state s)
{
    return s == LM_BREAKER_OPEN ? "open" : s == LM_BREAKER_HALF_OPEN ? "half_open" : "closed";
}
