/* policy.h — the outbound-call policy (lm_policy, lm_call; DESIGN 3.8): deadlines, retries,
 * per-try timeouts, circuit breakers per instance (outlier ejection) and per service, a
 * bulkhead per service, for every call a process makes to another service — the gateway's
 * proxy and charges' calls to articles.
 *
 * One lm_policy per upstream service per process, shared by all worker threads: its breakers
 * and instance table sit behind one mutex (held for a few hundred instructions: a pick, a
 * record), its counters (in flight, bulkhead, retry budget, statistics) are atomics.
 *
 * A call is one request of the caller's, which may take several tries:
 *
 *   lm_call c;
 *   if (lm_policy_begin(pol, &c, now, deadline, safe) != LM_POLICY_GO) → fast answer
 *   i = lm_policy_pick(&c, set, now)             → -1: every instance ejected (fast 503)
 *   send with lm_call_try_timeout(&c, now) …
 *   o = lm_policy_classify(err, resp)
 *   lm_policy_try_done(&c, o, now)
 *   if (lm_policy_next(&c, o, retry_after, sent, repeatable, set, now, &nx)) → wait
 *       nx.delay_ms, send to nx.index (already picked), …
 *   lm_policy_end(&c, o, now)                    → once, whatever happened
 *
 * What counts against an instance (and is retried where the method allows): a connection
 * refused or timed out, or a 408 (the instance says it received no complete request: a
 * draining server answers so on its idle connections) — nothing was processed: retried for
 * any method whose body can be sent again —, a reset or close before the response, no response
 * within the try's time, a malformed response, and a 502/503/504 that is NOT a problem document
 * (application/problem+json) — a bare gateway error from the instance's side of the network.
 * A problem document is the service's considered answer (charges' 503
 * dependency-unavailable while articles is down, a 503 for a full disk, a 504 for a spent
 * deadline): it goes to the client as it is, is not retried and counts as a success of the
 * instance, which answered. Cancels and the caller's own pool limits count for nothing.
 *
 * Ownership: the policy owns its state; lm_call lives in the caller's per-request struct.
 * Threading: lm_policy_new/free on main before/after the workers; everything else from any
 * thread, a given lm_call from one thread at a time. */
#ifndef LM_POLICY_H
#define LM_POLICY_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "breaker.h"
#include "buf.h"
#include "client.h"
#include "config.h"
#include "discovery.h"

#define LM_POLICY_MAX_INSTANCES 64   /* instances one call chooses among (a set's first 64) */
#define LM_POLICY_MAX_TRACKED   1024 /* instances whose state a policy keeps */

typedef struct lm_policy_config {
    uint64_t timeout_ms;                 /* the deadline when the caller gives none */
    uint64_t connect_timeout_ms;         /* per connection */
    uint64_t try_timeout_ms;             /* per try while another try could follow */
    int max_attempts;                    /* tries in all (1: no retries) */
    uint64_t backoff_ms, backoff_max_ms; /* full jitter: random(0, min(max, base·2^(n-1))) */
    int budget_pct, budget_min; /* retries in flight <= max(min, pct% of calls in flight) */
    int bulkhead;               /* calls in flight per service; 0: no cap */
    lm_breaker_config breaker;  /* the instances' and the service's */
    uint64_t eject_max_ms;      /* cap of the growing ejection time */
    int eject_max_pct;          /* at most this share of the instances ejected at once */
} lm_policy_config;

/* Defaults for a caller: timeout and connect timeout as given, the rest as the README says. */
void lm_policy_config_default(lm_policy_config *pc, uint64_t timeout_ms,
                              uint64_t connect_timeout_ms, uint64_t open_ms);
/* Reads <prefix>TIMEOUT, <prefix>CONNECT_TIMEOUT, <prefix>TRY_TIMEOUT, <prefix>RETRIES,
 * <prefix>RETRY_BACKOFF, <prefix>RETRY_BACKOFF_MAX, <prefix>RETRY_BUDGET,
 * <prefix>RETRY_BUDGET_MIN, <prefix>BULKHEAD, <prefix>BREAKER_WINDOW (a number of calls, or a
 * duration for a time-based window), <prefix>BREAKER_MIN_CALLS, <prefix>BREAKER_FAILURE_RATE,
 * <prefix>BREAKER_SLOW_CALL, <prefix>BREAKER_SLOW_RATE, <prefix>BREAKER_THRESHOLD,
 * <prefix>BREAKER_RESET, <prefix>BREAKER_HALF_OPEN_CALLS, <prefix>EJECT_MAX,
 * <prefix>EJECT_MAX_PERCENT over the defaults in pc; errors go into cfg. */
void lm_policy_config_env(lm_policy_config *pc, lm_cfg *cfg, const char *prefix);

typedef struct lm_policy lm_policy;
typedef struct lm_policy_inst lm_policy_inst;

lm_policy *lm_policy_new(const char *service, const lm_policy_config *pc);
void lm_policy_free(lm_policy *p);
const lm_policy_config *lm_policy_get_config(const lm_policy *p);
const char *lm_policy_service(const lm_policy *p);

typedef enum {
    LM_OUT_OK,      /* an answer of the service's (a problem document included) */
    LM_OUT_CONNECT, /* refused, connect timed out, name did not resolve: nothing was sent */
    LM_OUT_RESET,   /* closed or reset before the response was complete */
    LM_OUT_TIMEOUT, /* no response within the try's time */
    LM_OUT_GATEWAY, /* 502/503/504 that is not a problem document */
    LM_OUT_BROKEN,  /* malformed or oversized response */
    LM_OUT_IGNORED, /* cancelled, the caller's own pool full: says nothing of the callee */
    LM_OUT_REFUSED, /* 408: the instance took no request (a draining server's notice on an
                     * idle keep-alive connection): nothing was processed */
} lm_outcome;

/* What a try's end says of the instance. resp may be NULL. */
lm_outcome lm_policy_classify(lm_client_err err, const lm_client_response *resp);
static inline bool lm_outcome_failed(lm_outcome o)
{
    return o != LM_OUT_OK && o != LM_OUT_IGNORED;
}
const char *lm_outcome_name(lm_outcome o);

typedef enum {
    LM_POLICY_GO,
    LM_POLICY_BULKHEAD, /* the service's cap of calls in flight: 503 + Retry-After */
    LM_POLICY_OPEN,     /* the service's circuit is open: 503 + Retry-After */
    LM_POLICY_DEADLINE, /* no time left: 504 */
} lm_policy_verdict;

typedef struct lm_call {
    lm_policy *pol;
    uint64_t start_ms, deadline_ms; /* monotonic ms (uv_now of any loop) */
    int attempts;
    bool safe; /* a repeat is harmless: GET, HEAD, PUT, DELETE, OPTIONS, or a key */
    bool begun, svc_permit, retry_in_budget, forced;
    bool per_try;        /* tries are cut at try_timeout_ms (default: safe); a caller clears it
                          * for writes that may take long, which then get the whole deadline */
    lm_policy_inst *cur; /* the instance of the try in flight, or NULL */
    uint64_t try_start_ms;
    uint64_t tried; /* bit i: set index i was tried */
    int index;      /* the current try's index in the set */
} lm_call;

/* Starts a call: bulkhead, the service's circuit, the deadline (absolute ms). */
lm_policy_verdict lm_policy_begin(lm_policy *p, lm_call *c, uint64_t now_ms, uint64_t deadline_ms,
                                  bool safe);
/* The same for a call the caller makes although the service's circuit is open, because its
 * fallback cannot answer either (charges: an article its replica does not know): bulkhead
 * and deadline apply; success closes the open circuit at once. */
lm_policy_verdict lm_policy_begin_forced(lm_policy *p, lm_call *c, uint64_t now_ms,
                                         uint64_t deadline_ms);
/* Would lm_policy_begin let a call through the service's circuit now? (No state change.) */
bool lm_policy_permits(lm_policy *p, uint64_t now_ms);
/* Picks the instance of the first try: the less loaded of two random ones whose circuits
 * let a call through (least_outstanding), or the next one round-robin; takes the instance's
 * permission (a half-open trial). When no circuit lets a call through (the ejection cap
 * leaves instances in, but they are busy with their half-open trials), any instance (panic
 * routing, as Envoy). -1: the set is empty. */
int lm_policy_pick(lm_call *c, const lm_disc_set *set, bool least_outstanding, uint64_t now_ms);
/* The response timeout for the try about to start: what is left of the deadline, and at most
 * the per-try timeout while another try could follow (a safe call with tries left). 0: the
 * deadline is spent. */
uint64_t lm_call_try_timeout(const lm_call *c, uint64_t now_ms);
uint64_t lm_call_remaining(const lm_call *c, uint64_t now_ms);
/* The try's outcome, recorded in the instance's breaker (transitions logged). */
void lm_policy_try_done(lm_call *c, lm_outcome o, uint64_t now_ms);

typedef struct lm_next {
    int index;         /* the instance in the set, its permission taken */
    uint64_t delay_ms; /* backoff (full jitter), or Retry-After when longer */
} lm_next;

/* THE retry decision (as nginx's ngx_http_upstream_next): after a failed try, whether to try
 * again and where. Yes only when the outcome is one DESIGN 3.8 names (connect failure: any
 * method whose body can be resent, and so is a 408 refusal; reset, timeout, gateway error:
 * safe calls only), nothing
 * reached the client (sent_to_client false), the body can be sent again (repeatable), tries
 * are left, the retry budget allows it, the backoff (or retry_after_ms, when longer) ends
 * before the deadline, and an instance may be called — another one than those tried, where
 * there is one. */
bool lm_policy_next(lm_call *c, lm_outcome o, uint64_t retry_after_ms, bool sent_to_client,
                    bool repeatable, const lm_disc_set *set, bool least_outstanding,
                    uint64_t now_ms, lm_next *out);
/* The last try's outcome and the call's end at once (one lock instead of two): the same as
 * lm_policy_try_done then lm_policy_end with the same outcome. */
void lm_policy_finish(lm_call *c, lm_outcome o, uint64_t now_ms);
/* Ends the call (once, after its last try): the service's breaker, bulkhead and budget. */
void lm_policy_end(lm_call *c, lm_outcome final, uint64_t now_ms);

/* The policy's clock off a loop: monotonic ms, the clock of uv_now (for /metrics, admin). */
uint64_t lm_policy_now_ms(void);

/* X-Request-Timeout: milliseconds as a decimal integer (at most 24 h). False when absent or
 * malformed. */
bool lm_policy_parse_timeout(const char *value, uint64_t *ms);
/* Retry-After: delta-seconds (HTTP-dates are not honoured: 0). */
uint64_t lm_policy_parse_retry_after(const char *value);

/* ---- observation (any thread) -------------------------------------------------------- */

typedef struct lm_policy_stats {
    uint64_t calls, tries, retries, budget_exhausted, bulkhead_rejected, open_rejected,
        deadline_exceeded, ejected_now, in_flight;
} lm_policy_stats;
void lm_policy_stats_get(lm_policy *p, lm_policy_stats *out);
/* Prometheus text for several policies (one family header each). */
void lm_policy_metrics(lm_policy *const *ps, int n, lm_buf *out, uint64_t now_ms);
/* {"service", "circuit", "bulkhead", "stats", "instances": [{id, circuit, …}]}; the
 * caller owns the reference. */
struct json_t;
struct json_t *lm_policy_json(lm_policy *p, uint64_t now_ms);
/* Calls fn for every instance known (under the policy's lock: fn must not call back). */
typedef void (*lm_policy_inst_fn)(void *ctx, const char *id, unsigned long long requests,
                                  unsigned long long failures, long long in_flight,
                                  const char *circuit);
void lm_policy_each_instance(lm_policy *p, lm_policy_inst_fn fn, void *ctx);
/* An instance's circuit state name and calls in flight, for an id (closed/0 if unknown). */
const char *lm_policy_instance_state(lm_policy *p, const char *id, long long *in_flight);

#endif
