/* breaker.c — closed / open / half-open. See breaker.h. */
#include "breaker.h"

void lm_breaker_init(lm_breaker *b, int threshold, uint64_t reset_ms)
{
    *b = (lm_breaker){.state = LM_BREAKER_CLOSED,
                      .threshold = threshold > 0 ? threshold : 1,
                      .reset_ms = reset_ms};
}

bool lm_breaker_allow(lm_breaker *b, uint64_t now)
{
    switch (b->state) {
    case LM_BREAKER_CLOSED:
        return true;
    case LM_BREAKER_OPEN:
        if (now - b->opened_at < b->reset_ms) return false;
        b->state = LM_BREAKER_HALF_OPEN;
        b->trial_in_flight = true;
        return true;
    case LM_BREAKER_HALF_OPEN:
        if (b->trial_in_flight) return false; /* one trial at a time */
        b->trial_in_flight = true;
        return true;
    }
    return true;
}

bool lm_breaker_ready(const lm_breaker *b, uint64_t now)
{
    if (b->state == LM_BREAKER_CLOSED) return true;
    if (b->state == LM_BREAKER_OPEN) return now - b->opened_at >= b->reset_ms;
    return !b->trial_in_flight;
}

void lm_breaker_success(lm_breaker *b)
{
    b->state = LM_BREAKER_CLOSED;
    b->failures = 0;
    b->trial_in_flight = false;
}

void lm_breaker_failure(lm_breaker *b, uint64_t now)
{
    b->trial_in_flight = false;
    if (b->state == LM_BREAKER_HALF_OPEN ||
        (b->state == LM_BREAKER_CLOSED && ++b->failures >= b->threshold)) {
        b->state = LM_BREAKER_OPEN;
        b->opened_at = now;
        b->failures = 0;
        b->opens++;
    }
}

const char *lm_breaker_state_name(lm_breaker_state s)
{
    return s == LM_BREAKER_OPEN ? "open" : s == LM_BREAKER_HALF_OPEN ? "half_open" : "closed";
}
