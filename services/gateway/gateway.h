/* gateway.h — the API gateway (DESIGN 1, 3.1, 3.5): the one public entry. Clients
 * authenticate here (OAuth2 client credentials or API keys: clients.c, clientauth.c); requests to
 * /api/{service}/{path} go to a passing instance of the service with a short-lived service
 * token in place of the client's credentials (proxy.c); /admin/services shows the state
 * (admin.c). Everything per request runs on the worker loop that received it; the
 * per-worker state (gw_worker) is touched by that loop only. */
#ifndef GATEWAY_H
#define GATEWAY_H

#include <pthread.h>
#include <stdatomic.h>
#include <uv.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "app.h"
#include "breaker.h"
#include "client.h"
#include "tokcache.h"
#include "workerclient.h"
#include "token.h"

/* ---- clients (clients.c) --------------------------------------------------------------- */

typedef struct gw_client {
    char id[128];
    char secret_hash[128];         /* Argon2id string (libsodium crypto_pwhash_str) */
    char scope[128];               /* "read write admin" */
    unsigned char (*api_keys)[32]; /* BLAKE2b-256 of each API key */
    size_t n_api_keys;
} gw_client;

typedef struct gw_clients {
    gw_client *items;
    size_t n;
} gw_clients;

/* Loads path; when it does not exist, creates it with one client and writes that client's
 * credentials to dev_path (DESIGN 2: dev-client.json). One-line reason in err on failure. */
int gw_clients_load(gw_clients *cs, const char *path, const char *dev_path, char *err,
                    size_t errlen);
void gw_clients_free(gw_clients *cs);
const gw_client *gw_clients_find(const gw_clients *cs, const char *id);
const gw_client *gw_clients_by_api_key(const gw_clients *cs, const char *key);

/* ---- who is calling (clientauth.c) ---------------------------------------------------------- */

typedef struct gw_principal {
    char client_id[128];
    char scope[128];
} gw_principal;

/* ---- per worker ------------------------------------------------------------------------ */

#define GW_TOKEN_CACHE   256
#define GW_MAX_UPSTREAMS 64 /* instances one request chooses among */
#define GW_MAX_SERVICES  32
#define GW_BUCKETS       14 /* latency histogram buckets (metrics.c's bounds) */

typedef struct gw_worker {
    lm_tokcache access;    /* access tokens already verified */
    lm_tokcache service;   /* minted service tokens, by service|client|scope */
    uint64_t rr;           /* round-robin cursor */
    int breaker_threshold; /* for the circuits of new instances */
    uint64_t breaker_reset_ms;
    /* Per upstream instance, one entry per id for as long as discovery knows the instance
     * or a request holds it (proxy.c): counters and the circuit are never reset under a
     * request. The worker alone adds, removes and writes entries; it changes the list under
     * out_lock, which other threads hold while they read it (gw_upstream_each). */
    struct gw_upstream_stat *out; /* owned */
    uv_mutex_t out_lock;
    struct {
        atomic_ullong by_class[5];             /* 1xx..5xx answered to clients */
        atomic_ullong buckets[GW_BUCKETS + 1]; /* latency histogram, last +Inf */
        atomic_ullong sum_us;
    } svc[GW_MAX_SERVICES]; /* by index in gateway.services */
} gw_worker;

typedef struct gw_upstream_stat {
    struct gw_upstream_stat *next;
    char *id;               /* owned */
    int holders;            /* requests that chose it (this worker only) */
    atomic_int n;           /* in flight; written by this worker, read elsewhere */
    atomic_ullong requests; /* sent to it */
    atomic_ullong failures; /* connect/timeout/reset: no response */
    lm_breaker breaker;     /* this worker's circuit to the instance */
} gw_upstream_stat;

/* ---- the gateway ---------------------------------------------------------------------- */

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
    gw_clients clients;
    lm_token_key access_key;  /* the gateway's own access tokens (HS256) */
    lm_token_key service_key; /* service tokens (shared with, or public to, the services) */
    uint64_t access_ttl_s, service_ttl_s;
    gw_alias aliases[32];
    size_t n_aliases;
    char services[GW_MAX_SERVICES][64]; /* exposed through /api/ (GATEWAY_SERVICES) */
    size_t n_services;
    bool least_outstanding; /* else round-robin */
    uint64_t connect_timeout_ms, upstream_timeout_ms;
    int breaker_threshold;
    uint64_t breaker_reset_ms;
    struct lm_disc *reg;
    lm_workerclient *upstreams; /* each worker's upstream connections */
    gw_worker *workers;         /* by worker index */
    int n_workers;
    struct lm_tracestore *traces; /* POST /v1/traces, shown on /dashboard */
    gw_series series;
    char docs_dir[1024];        /* swagger-ui-dist's files (GATEWAY_DOCS_DIR) */
    struct gw_openapi *openapi; /* the merged document's cache (openapi.c) */
} gateway;

#define GW_ACCESS_ISSUER   "lotmesh-gateway"
#define GW_ACCESS_AUDIENCE "lotmesh-api"
#define GW_SERVICE_ISSUER  "gateway"

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
/* Calls fn for every upstream entry of every worker, under that worker's out_lock (any
 * thread; fn must not call back into the gateway). */
void gw_upstream_each(gateway *gw, void (*fn)(const gw_upstream_stat *s, void *ud), void *ud);
/* The worker's upstream entries: set up before its thread runs, freed after it stopped. */
void gw_upstream_init(gw_worker *w);
void gw_upstream_free(gw_worker *w);
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

#endif
