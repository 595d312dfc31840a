/* gateway.h — the API gateway (DESIGN 1, 3.1, 3.5): the one public entry. Clients
 * authenticate here (OAuth2 client credentials or API keys: clients.c, clientauth.c); requests to
 * /api/{service}/{path} go to a passing instance of the service with a short-lived service
 * token in place of the client's credentials (proxy.c); /admin/services shows the state
 * (admin.c). Everything per request runs on the worker loop that received it; the
 * per-worker state (gw_worker) is touched by that loop only. */
#ifndef GATEWAY_H
#define GATEWAY_H

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

#define GW_TOKEN_CACHE  256
#define GW_MAX_SERVICES 32
#define GW_BUCKETS      14 /* latency histogram buckets (metrics.c's bounds) */
#define GW_STALE_SEEN   64

struct fwd;

typedef struct gw_worker {
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

typedef struct gw_alias {
    char from[64], to[64];
} gw_alias;

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
/* The worker's per-try timer (worker start, on its loop) and its release (worker stop). */
void gw_proxy_worker_start(gw_worker *w, uv_loop_t *loop);
void gw_proxy_worker_stop(gw_worker *w);
bool gw_service_exposed(const gateway *gw, const char *name);
void gw_admin_routes(lm_router *r, gateway *gw);
/* Prometheus text for /metrics (metrics.c). */
void gw_metrics_render(lm_buf *out, void *gw);
void gw_metrics_observe(gateway *gw, int worker, int service, int status, double seconds);

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
