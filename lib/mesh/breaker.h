/* breaker.h — a circuit breaker in the manner of resilience4j (lm_breaker), for the
 * outbound-call policy (policy.h: per upstream instance and per upstream service).
 *
 * CLOSED: every call goes out; each call's outcome (success or failure, slow or not) goes
 * into a sliding window — the last window_size calls (count-based) or the calls of the last
 * window_size seconds (time-based, one-second buckets). Once the window holds at least
 * min_calls calls, a failure rate >= failure_rate_pct or a slow-call rate >= slow_rate_pct
 * opens the circuit. consecutive_failures (Envoy's consecutive gateway failures; 0: off)
 * opens it too, whatever the window holds.
 * OPEN: no call for open_ms (the caller may grow it per opening: ejection time), then
 * HALF_OPEN: exactly half_open_calls trial calls go out; when they are all back, a failure
 * or slow-call rate of the trials at or over its threshold opens the circuit again, else it
 * closes with an empty window.
 *
 * Outcomes that say nothing about the callee (cancelled, the caller's own limits) are not
 * recorded; a trial taken and not recorded must be given back (lm_breaker_release).
 *
 * A breaker is plain data without a lock: its owner serialises the calls (policy.c holds one
 * mutex per upstream). No allocation. Time in milliseconds from the caller (monotonic). */
#ifndef LM_BREAKER_H
#define LM_BREAKER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum { LM_BREAKER_CLOSED, LM_BREAKER_OPEN, LM_BREAKER_HALF_OPEN } lm_breaker_state;

#define LM_BREAKER_MAX_WINDOW 128 /* calls (count-based) or seconds (time-based) */

typedef struct lm_breaker_config {
    bool time_based;          /* window of seconds, else of calls */
    int window_size;          /* 1 .. LM_BREAKER_MAX_WINDOW */
    int min_calls;            /* >= 1 */
    int failure_rate_pct;     /* 1 .. 100 */
    int slow_rate_pct;        /* 1 .. 100 */
    uint64_t slow_call_ms;    /* a call taking at least this long is slow */
    uint64_t open_ms;         /* wait in OPEN before the trials */
    int half_open_calls;      /* >= 1 */
    int consecutive_failures; /* 0: off */
} lm_breaker_config;

/* What a transition was, for the caller's log line and metrics. */
typedef enum {
    LM_BREAKER_NO_CHANGE,
    LM_BREAKER_OPENED,      /* closed → open, or half-open → open */
    LM_BREAKER_HALF_OPENED, /* open → half-open (the wait is over) */
    LM_BREAKER_CLOSED_AGAIN /* half-open → closed */
} lm_breaker_transition;

typedef struct lm_breaker_bucket {
    uint64_t second; /* time-based: which second this bucket counts */
    uint32_t calls, failures, slow;
} lm_breaker_bucket;

typedef struct lm_breaker {
    lm_breaker_state state;
    uint64_t opened_at, open_ms; /* the current opening and its wait */
    /* window: a ring of outcomes (count-based: 1 call per slot) or of seconds */
    lm_breaker_bucket ring[LM_BREAKER_MAX_WINDOW];
    int head, filled;
    uint32_t calls, failures, slow; /* sums over the ring */
    int consecutive;
    /* half-open */
    int trials_taken, trials_done, trial_failures, trial_slow;
    uint64_t opens; /* times it opened (metrics) */
} lm_breaker;

void lm_breaker_init(lm_breaker *b);
/* Would a call be let through now? No state change (for choosing among several). */
bool lm_breaker_ready(const lm_breaker *b, const lm_breaker_config *c, uint64_t now_ms);
/* Takes the permission for one call: true when it may go out (in HALF_OPEN it takes one of
 * the trials). *t tells whether the wait of OPEN just ended. */
bool lm_breaker_acquire(lm_breaker *b, const lm_breaker_config *c, uint64_t now_ms,
                        lm_breaker_transition *t);
/* Gives back a permission whose call ended without an outcome to record. */
void lm_breaker_release(lm_breaker *b);
/* Records a call's outcome. open_ms: the wait should this open the circuit. Returns the
 * transition; why (may be NULL) gets a one-line reason when there is one. */
lm_breaker_transition lm_breaker_record(lm_breaker *b, const lm_breaker_config *c, uint64_t now_ms,
                                        bool failure, bool slow, uint64_t open_ms, char *why,
                                        size_t whylen);
/* Opens the circuit now (a cap that lifts, an operator's order), or forgets the window. */
void lm_breaker_force_open(lm_breaker *b, uint64_t now_ms, uint64_t open_ms);
void lm_breaker_reset_window(lm_breaker *b);
/* Rates over the current window, in percent (0 with no calls). */
void lm_breaker_rates(const lm_breaker *b, const lm_breaker_config *c, uint64_t now_ms, int *calls,
                      int *failure_pct, int *slow_pct);
const char *lm_breaker_state_name(lm_breaker_state s);

#endif
