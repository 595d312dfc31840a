/* breaker.h — circuit breaker (lm_breaker), the seed's pattern: after `threshold` failures
 * in a row the circuit opens and calls fail fast (the caller takes its fallback at once
 * instead of waiting for a timeout); after `reset_ms` one trial call is let through
 * (half-open); its success closes the circuit, its failure opens it again.
 *
 * A breaker is plain data owned by one thread (one per worker loop and dependency): no
 * locks, no allocation. Time comes from the caller (uv_now of the loop). */
#ifndef LM_BREAKER_H
#define LM_BREAKER_H

#include <stdbool.h>
#include <stdint.h>

typedef enum { LM_BREAKER_CLOSED, LM_BREAKER_OPEN, LM_BREAKER_HALF_OPEN } lm_breaker_state;

typedef struct lm_breaker {
    lm_breaker_state state;
    int failures; /* in a row, while closed */
    int threshold;
    uint64_t reset_ms;
    uint64_t opened_at;
    bool trial_in_flight; /* half-open: the one call being tried */
    uint64_t opens;       /* times it opened (metrics) */
} lm_breaker;

void lm_breaker_init(lm_breaker *b, int threshold, uint64_t reset_ms);
/* May a call go out now? Open: false until reset_ms passed, then one trial (half-open). */
bool lm_breaker_allow(lm_breaker *b, uint64_t now_ms);
/* Would lm_breaker_allow say yes now? (No state change: for choosing among several.) */
bool lm_breaker_ready(const lm_breaker *b, uint64_t now_ms);
void lm_breaker_success(lm_breaker *b);
void lm_breaker_failure(lm_breaker *b, uint64_t now_ms);
const char *lm_breaker_state_name(lm_breaker_state s);

#endif
