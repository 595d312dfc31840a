/* gateway.h — the API gateway (DESIGN 1, 3.1, 3.5): the one public entry. Clients
 * authenticate here (OAuth2 client credentials or API keys: clients.c, clientauth.c); requests to
 * /api/{service}/{path} go to a passing instance of the service with a short-lived service
 * token in place of the client's credentials (proxy.c); /admin/services shows the state
 * (admin.c). Everything per request runs on the worker loop that received it; the
 * per-worker state (gw_worker) is touched by that loop only. */
#ifndef GATEWAY_H
#define GATEWAY_H

#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "app.h"
#include "client.h"
#include "policy.h"
#include "tokcache.h"
#include "workerclient.h"
#include "token.h"

/* ---- rate limits (limit.c) ------------------------------------------------------------ */

/* count requests per period_s seconds, up to burst at once (GCRA) */
typedef struct gw_rate {
    double interval_us; /* period / count */
    uint32_t count, period_s, burst;
} gw_rate;

/* "100/s", "6000/m", "N/h", "N/d"; burst = count. 0, or -1 when malformed. */
int gw_rate_parse(const char *s, gw_rate *out);

#define GW_LIMIT_MAX_KEYS 2

typedef struct gw_limit_key {
    const char *key;     /* borrowed for the call */
    const gw_rate *rate; /* borrowed for the call */
} gw_limit_key;

typedef struct gw_limit_result {
    bool allowed;
    bool store_failed;   /* Redis did not answer: allowed is the fail-open/closed rule */
    long long remaining; /* requests still allowed now (least over the keys), -1 unknown */
    long long key_remaining[GW_LIMIT_MAX_KEYS]; /* the same for each key (dry: as if charged) */
    uint64_t reset_s;                           /* until the buckets are full again */
    uint64_t retry_after_s;                     /* refused: when a retry can pass */
} gw_limit_result;

typedef void (*gw_limit_cb)(void *ud, const gw_limit_result *res);
typedef struct gw_limiter gw_limiter;

gw_limiter *gw_limiter_new(void);
void gw_limiter_free(gw_limiter *l);

/* the Lua script the Redis store runs (EVALSHA), script 0 of the workers' connections */
extern const char *const gw_limit_script;

/* ---- clients (clients.c) --------------------------------------------------------------- */

typedef struct gw_service_rate {
    char service[64];
    gw_rate rate;
} gw_service_rate;

typedef struct gw_client {
    char id[128];
    char secret_hash[128];         /* Argon2id string (libsodium crypto_pwhash_str) */
    char scope[128];               /* "read write admin" */
    unsigned char (*api_keys)[32]; /* BLAKE2b-256 of each API key */
    size_t n_api_keys;
    bool has_rate; /* "rate_limit" (and "rate_limit_burst") in the clients file */
    gw_rate rate;
    gw_service_rate *service_rates; /* "service_rate_limits": {"service": "rate"}; owned */
    size_t n_service_rates;
} gw_client;

/* One version of the clients file. Published snapshots are immutable and refcounted: each
 * worker keeps a reference to the newest it has seen (gw_clients_now), so a request never
 * sees a client table change or vanish under it, and the hot path takes no lock. */
typedef struct gw_clients {
    gw_client *items;
    size_t n;
    uint64_t version; /* published: 1, 2, … */
    atomic_int refs;
} gw_clients;

/* Loads path; when it does not exist, creates it with one client and writes that client's
 * credentials to dev_path (DESIGN 2: dev-client.json). One-line reason in err on failure. */
int gw_clients_load(gw_clients *cs, const char *path, const char *dev_path, char *err,
                    size_t errlen);
/* Parses a clients document (doc borrowed; path only for messages). */
int gw_clients_parse(gw_clients *cs, json_t *doc, const char *path, char *err, size_t errlen);
void gw_clients_free(gw_clients *cs);
struct gateway;
/* Makes fresh (moved in) the current table of every worker (any thread). */
void gw_clients_publish(struct gateway *gw, gw_clients *fresh);
gw_clients *gw_clients_acquire(struct gateway *gw);
void gw_clients_release(gw_clients *cs);
/* The worker's current table (on that worker's loop), refreshed when a newer one exists. */
const gw_clients *gw_clients_now(struct gateway *gw, int worker);
/* Helpers of the clients file: write via a temporary file, fsync and rename (mode 0600);
 * BLAKE2b-256 of an API key; a random URL-safe token of bytes random bytes. */
int gw_write_private(const char *path, const char *text, char *err, size_t errlen);
void gw_key_hash(const char *key, unsigned char out[32]);
void gw_random_token(char *out, size_t outlen, size_t bytes);
const gw_client *gw_clients_find(const gw_clients *cs, const char *id);
const gw_client *gw_clients_by_api_key(const gw_clients *cs, const char *key);

/* ---- who is calling (clientauth.c) ---------------------------------------------------------- */

typedef struct gw_principal {
    char client_id[128];
    char scope[128];
} gw_principal;

/* ---- per worker ------------------------------------------------------------------------ */

#define GW_TOKEN_CACHE  256
#define GW_MAX_SERVICES 32
#define GW_BUCKETS      14 /* latency histogram buckets (metrics.c's bounds) */
#define GW_STALE_SEEN   64

struct fwd;

typedef struct gw_worker {
    gw_clients *clients;    /* this worker's reference to the newest table it has seen */
    struct lm_redis *redis; /* RATE_LIMIT_URL's Redis on this loop, or NULL */
    struct gateway *gw;
    int hashing; /* Argon2id verifications of this worker on the thread pool */
    struct {
        struct token_req *head, *tail;
        int n;
    } auth_q[2];         /* waiting verifications: [0] ids without recent failures, [1] the rest */
    int redis_state;     /* 0 not known yet, 1 up, 2 down (this worker's loop only) */
    lm_tokcache access;  /* access tokens already verified */
    lm_tokcache service; /* minted service tokens, by service|client|scope */
    /* the per-try timeouts of this worker's calls (proxy.c): all of one length, so a FIFO
     * list and one timer serve them all */
    struct fwd *tries_head, *tries_tail;
    uv_timer_t *try_timer; /* owned; data: this gw_worker */
    struct {
        uint64_t hash, at;
    } stale_seen[GW_STALE_SEEN]; /* keys asked of the stale store in the last second */
    struct {
        atomic_ullong by_class[5];             /* 1xx..5xx answered to clients */
        atomic_ullong buckets[GW_BUCKETS + 1]; /* latency histogram, last +Inf */
        atomic_ullong sum_us;
    } svc[GW_MAX_SERVICES]; /* by index in gateway.services */
} gw_worker;

/* ---- the gateway ---------------------------------------------------------------------- */

#define GW_CORS_MAX_ORIGINS 32

typedef struct gw_cors {
    bool enabled;    /* GATEWAY_CORS_ORIGINS set */
    bool any_origin; /* "*" among them */
    char origins[GW_CORS_MAX_ORIGINS][256];
    size_t n_origins;
    char methods[512], headers[512], expose[512]; /* comma-separated */
    uint64_t max_age_s;
    bool credentials;
} gw_cors;

typedef struct gw_alias {
    char from[64], to[64];
} gw_alias;

/* ---- the dashboard's time series (dashboard.c) ------------------------------------------- */

#define GW_SERIES 300 /* one point a second: five minutes */

typedef struct gw_point {
    long long t; /* Unix seconds */
    unsigned long long requests, errors;
    unsigned long long buckets[GW_BUCKETS + 1];
} gw_point;

typedef struct gw_series {
    pthread_mutex_t mu;
    uv_timer_t timer; /* control loop */
    gw_point points[GW_MAX_SERVICES][GW_SERIES];
    size_t head, n;
    bool primed;
    unsigned long long last_req[GW_MAX_SERVICES], last_err[GW_MAX_SERVICES];
    unsigned long long last_b[GW_MAX_SERVICES][GW_BUCKETS + 1];
} gw_series;

struct lm_tracestore;

typedef struct gateway {
    lm_app *app;
    pthread_mutex_t clients_mu;
    gw_clients *clients_cur; /* the newest table (a reference), under clients_mu */
    atomic_ullong clients_version;
    char clients_path[1024];
    uv_fs_poll_t clients_watch;  /* on worker 0's loop (admin_clients.c) */
    bool clients_reloading;      /* a reload job is running (worker 0's loop) */
    uint64_t clients_watch_ms;   /* GATEWAY_CLIENTS_WATCH: how often the file is looked at */
    uv_timer_t clients_announce; /* with RATE_LIMIT_URL: polls the change counter in Redis */
    long long clients_announced; /* the counter last seen, -1 before the first answer */
    lm_token_key access_key;     /* the gateway's own access tokens (HS256) */
    lm_token_key service_key;    /* service tokens (shared with, or public to, the services) */
    uint64_t access_ttl_s, service_ttl_s;
    gw_alias aliases[32];
    size_t n_aliases;
    char services[GW_MAX_SERVICES][64]; /* exposed through /api/ (GATEWAY_SERVICES) */
    size_t n_services;
    bool least_outstanding; /* else round-robin */
    /* the outbound-call policy (UPSTREAM_*), one state per exposed service and process */
    lm_policy_config policy;
    lm_policy *policies[GW_MAX_SERVICES]; /* by index in services; owned */
    struct gw_route_timeout {
        char service[64];
        char prefix[128]; /* path under the service, "" for all */
        uint64_t ms;
    } route_timeouts[32]; /* GATEWAY_ROUTE_TIMEOUTS */
    size_t n_route_timeouts;
    struct gw_stale *stale;  /* stale-if-error copies of GET answers (stale.c), or NULL */
    _Atomic bool discovered; /* every exposed service had an instance once (/ready) */
    struct lm_disc *reg;
    lm_workerclient *upstreams; /* each worker's upstream connections */
    gw_worker *workers;         /* by worker index */
    int n_workers;
    /* rate limits (limit.c) */
    bool has_default_rate; /* GATEWAY_RATE_LIMIT set */
    gw_rate default_rate;
    gw_limiter *limiter; /* the in-process store (always made: RATE_LIMIT_URL unset) */
    bool limit_redis;    /* RATE_LIMIT_URL=redis://… */
    char limit_url[512];
    uint64_t limit_timeout_ms;
    bool limit_fail_closed;
    atomic_int limit_redis_down; /* workers whose Redis connection is down */
    atomic_ullong limit_allowed, limit_refused, limit_store_failures;
    /* /auth/token guessing protection (auth.c) */
    gw_rate auth_id_rate, auth_addr_rate; /* failures allowed per window; count 0: off */
    int auth_concurrency;                 /* verifications at once per worker */
    int auth_queue;                       /* waiting verifications per worker and class */
    atomic_ullong auth_failures, auth_refused;
    gw_cors cors; /* cors.c */
    atomic_ullong cors_preflights;
    struct lm_tracestore *traces; /* POST /v1/traces, shown on /dashboard */
    gw_series series;
    char docs_dir[1024];        /* swagger-ui-dist's files (GATEWAY_DOCS_DIR) */
    struct gw_openapi *openapi; /* the merged document's cache (openapi.c) */
} gateway;

#define GW_AUTH_FREE_FAILURES 3   /* failures in the window answered without delay */
#define GW_AUTH_DELAY_STEP_MS 250 /* each further one answers this much later */
#define GW_AUTH_DELAY_MAX_MS  2000

#define GW_ACCESS_ISSUER   "lotmesh-gateway"
#define GW_ACCESS_AUDIENCE "lotmesh-api"
#define GW_SERVICE_ISSUER  "gateway"

/* Checks (and unless dry, charges cost to) every key on worker's loop; cb is called once,
 * before the return for the in-process store, later for Redis. */
void gw_limit_check(gateway *gw, int worker, const gw_limit_key *keys, size_t n, unsigned cost,
                    bool dry, gw_limit_cb cb, void *ud);
/* RateLimit-Limit/-Remaining/-Reset (IETF httpapi draft) for rate's bucket, unless unknown. */
void gw_limit_headers(lm_req *req, const gw_rate *rate, const gw_limit_result *res);
/* lm_redis state hook of a worker's connection (ud: its gw_worker): counts the workers that
 * cannot reach Redis and logs once per outage (the first worker losing it, the last one
 * getting it back). */
void gw_limit_redis_state(void *ud, bool up, const char *why);
/* The rate that applies to client on service: its own for the service, its own, the
 * default; NULL when none does. */
const gw_rate *gw_rate_for(const gateway *gw, const gw_client *c, const char *service);

/* CORS (cors.c): GATEWAY_CORS_* at start-up; a preflight answered (true) or not one (false);
 * the headers of an actual request's response, set before it is sent. */
void gw_cors_parse(gateway *gw, struct lm_cfg *cfg);
bool gw_cors_preflight(gateway *gw, lm_req *req);
void gw_cors_actual(gateway *gw, lm_req *req);
void gw_cors_routes(lm_router *r, gateway *gw);

/* /admin/clients (admin_clients.c); the watch of the clients file runs on one loop. */
void gw_admin_clients_routes(lm_router *r, gateway *gw);
void gw_admin_clients_watch(gateway *gw, uv_loop_t *loop);
void gw_admin_clients_unwatch(gateway *gw);

void gw_clientauth_routes(lm_router *r, gateway *gw);
/* Authenticates req (Bearer access token or X-API-Key) and checks the scope its method
 * needs; on failure sends 401 (with WWW-Authenticate) or 403 and returns false. */
bool gw_clientauth_check(gateway *gw, lm_req *req, gw_principal *who);
/* A service token for (service, principal), cached per worker and re-minted before expiry;
 * the pointer stays valid until the next call on this worker. NULL if minting failed. */
const char *gw_clientauth_service_token(gateway *gw, lm_req *req, const char *service,
                                        const gw_principal *who);
/* The worker's token caches: empty at its start, freed at its stop (its own thread). */
void gw_clientauth_worker_init(gw_worker *w);
void gw_clientauth_worker_free(gw_worker *w);

void gw_proxy_routes(lm_router *r, gateway *gw);
/* The worker's per-try timer (worker start, on its loop) and its release (worker stop). */
void gw_proxy_worker_start(gw_worker *w, uv_loop_t *loop);
void gw_proxy_worker_stop(gw_worker *w);
bool gw_service_exposed(const gateway *gw, const char *name);
void gw_admin_routes(lm_router *r, gateway *gw);
/* Prometheus text for /metrics (metrics.c). */
void gw_metrics_render(lm_buf *out, void *gw);
void gw_metrics_observe(gateway *gw, int worker, int service, int status, double seconds);

/* POST /v1/traces (traces.c). */
void gw_traces_routes(lm_router *r, gateway *gw);
/* /dashboard and its JSON (dashboard.c). */
void gw_dashboard_routes(lm_router *r, gateway *gw);
/* Admin scope by Bearer, X-API-Key or Basic with an API key as the password; on failure
 * answers 401/403 itself and returns false. */
bool gw_admin_access(gateway *gw, lm_req *req);
/* GET /openapi.json (merged) and /docs (openapi.c). */
void gw_openapi_routes(lm_router *r, gateway *gw);

/* ---- stale-if-error (stale.c): the last good answer of GETs, bounded memory, shared by the
 * workers under one lock. ---- */
typedef struct gw_stale gw_stale;
/* max_age_ms: how stale an answer may be served; max_bytes: the whole store's bound. */
gw_stale *gw_stale_new(uint64_t max_age_ms, size_t max_bytes);
void gw_stale_free(gw_stale *s);
uint64_t gw_stale_hash(const char *key);
/* Should a 200 for key be kept now? (False when a copy younger than a second exists: under
 * load the store is refreshed once a second per key, not per request.) */
bool gw_stale_wanted(gw_stale *s, const char *key, uint64_t now_ms);
/* Keeps a copy (headers as "Name: value\r\n" lines, the body); replaces the older one. */
void gw_stale_put(gw_stale *s, const char *key, const char *ctype, const char *headers,
                  size_t headers_len, const char *body, size_t body_len, uint64_t now_ms);
/* Answers req from a copy not older than max_age_ms: 200 with Age and Cache-Status; true
 * when it did. */
bool gw_stale_answer(gw_stale *s, lm_req *req, const char *key, uint64_t now_ms);
void gw_stale_stats(gw_stale *s, unsigned long long *entries, unsigned long long *bytes,
                    unsigned long long *served);

#endif
