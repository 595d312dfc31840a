/* clientauth.c — client authentication at the gateway (DESIGN 3.5): who the client is, and
 * the service token that stands for it upstream.
 *
 * POST /auth/token is the OAuth2 client-credentials grant (RFC 6749 4.4): credentials in
 * HTTP Basic or in the form body; the secret is checked against its Argon2id hash on the
 * thread pool (it takes tens of milliseconds and 64 MiB on purpose); the answer is a
 * short-lived HS256 access token. Errors are problem+json with OAuth2's "error" member.
 *
 * Every /api request then carries "Authorization: Bearer <access token>" or "X-API-Key".
 * Verified access tokens are cached per worker (lm_tokcache: keyed by a hash, confirmed by
 * comparing the whole token), so the common path costs a hash and a compare, not a signature check.
 * Service tokens (iss gateway, aud the service, sub the client, scope, ~5 min) are minted
 * once per (service, client, scope) and worker and re-minted a minute before expiry. */
#include "gateway.h"

#include "json.h"
#include "log.h"
#include "problem.h"
#include "server.h"
#include "tokcache.h"
#include "url.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <uv.h>

static gw_worker *worker_of(gateway *gw, const lm_req *req)
{
    return &gw->workers[lm_req_worker_index(req)];
}

static int header_count(const lm_req *req, const char *name)
{
    int n = 0;
    for (size_t i = 0; i < req->n_headers; i++)
        n += !strcasecmp(req->headers[i].name, name);
    return n;
}

static void oauth_error(lm_req *req, int status, const char *error, const char *detail)
{
    if (status == 401) lm_resp_header(req, "WWW-Authenticate", "Basic realm=\"lotmesh\"");
    lm_resp_header(req, "Cache-Control", "no-store");
    lm_problem p = {.status = status,
                    .type = "urn:lotmesh:problem:oauth",
                    .detail = detail,
                    .ext_name = "error",
                    .ext_value = error};
    lm_resp_problem_full(req, &p);
}

/* ---- POST /auth/token ------------------------------------------------------------------- */

typedef struct token_req {
    uv_work_t work;
    lm_req *req;
    gateway *gw;
    char client_id[128];
    char secret[256];
    char scope[128];
    const gw_client *client; /* in snap, or NULL */
    gw_clients *snap;        /* a reference, released with t */
    bool ok;
    int worker;
    char peer[64];    /* the source address */
    char key_id[160]; /* limiter keys: failures of this client id, of this address */
    char key_addr[80];
    gw_limit_key keys[2];
    size_t n_keys;
    bool failures_before;   /* the id had failures in the window: queued behind clean ones */
    struct token_req *next; /* in the worker's hashing queue */
    uv_timer_t delay;       /* a failed attempt's slow-down */
} token_req;

static void token_free(token_req *t)
{
    gw_clients_release(t->snap);
    free(t);
}

/* The hash an unknown client id is checked against: made on first use, on the thread pool
 * (Argon2id takes ~100 ms by design; at start-up it would delay readiness). */
static uv_once_t dummy_once = UV_ONCE_INIT;
static char dummy_hash[crypto_pwhash_STRBYTES];

static void make_dummy_hash(void)
{
    unsigned char junk[32];
    randombytes_buf(junk, sizeof junk);
    if (crypto_pwhash_str(dummy_hash, (const char *)junk, sizeof junk,
                          crypto_pwhash_OPSLIMIT_INTERACTIVE,
                          crypto_pwhash_MEMLIMIT_INTERACTIVE) != 0)
        dummy_hash[0] = '\0'; /* out of memory: every verification fails, as it should */
}

static void verify_work(uv_work_t *w)
{
    token_req *t = w->data;
    /* an unknown client costs the same as a known one: timing tells nothing about ids */
    uv_once(&dummy_once, make_dummy_hash);
    const char *hash = t->client && t->client->secret_hash[0] ? t->client->secret_hash : dummy_hash;
    bool match = crypto_pwhash_str_verify(hash, t->secret, strlen(t->secret)) == 0;
    t->ok = match && t->client && t->client->secret_hash[0];
}

/* Is every word of want in have? */
static bool scope_subset(const char *want, const char *have)
{
    char buf[128];
    snprintf(buf, sizeof buf, "%s", want);
    char *save = NULL;
    for (char *w = strtok_r(buf, " ", &save); w; w = strtok_r(NULL, " ", &save))
        if (!lm_token_has_scope(have, w)) return false;
    return true;
}

static void start_next(gateway *gw, gw_worker *w);

static void free_after_delay(uv_handle_t *h)
{
    token_free(h->data);
}

static void refuse_now(uv_timer_t *timer)
{
    token_req *t = timer->data;
    oauth_error(t->req, 401, "invalid_client", "unknown client or wrong secret");
    uv_close((uv_handle_t *)&t->delay, free_after_delay);
}

/* A failed attempt was charged to the id's and the address's budgets: the more failures
 * in the window, the later the answer (the same for an unknown id and a wrong secret). */
static void on_failure_charged(void *ud, const gw_limit_result *res)
{
    token_req *t = ud;
    long long failures = 0;
    for (size_t i = 0; i < t->n_keys; i++) {
        long long f = (long long)t->keys[i].rate->burst - res->key_remaining[i];
        if (!res->store_failed && f > failures) failures = f;
    }
    uint64_t delay = failures > GW_AUTH_FREE_FAILURES
                         ? (uint64_t)(failures - GW_AUTH_FREE_FAILURES) * GW_AUTH_DELAY_STEP_MS
                         : 0;
    if (delay > GW_AUTH_DELAY_MAX_MS) delay = GW_AUTH_DELAY_MAX_MS;
    t->delay.data = t;
    uv_timer_init(lm_req_loop(t->req), &t->delay);
    uv_timer_start(&t->delay, refuse_now, delay, 0);
}

static void verify_after(uv_work_t *w, int status)
{
    token_req *t = w->data;
    lm_req *req = t->req;
    gateway *gw = t->gw;
    sodium_memzero(t->secret, sizeof t->secret);
    gw_worker *wk = &gw->workers[t->worker];
    wk->hashing--;
    start_next(gw, wk);
    if (status != 0 || !t->ok) {
        atomic_fetch_add_explicit(&gw->auth_failures, 1, memory_order_relaxed);
        lm_log(LM_LOG_WARN, &(lm_log_ctx){.request_id = req->request_id, .trace = &req->trace},
               "token request refused for client '%s'", t->client_id);
        gw_limit_check(gw, t->worker, t->keys, t->n_keys, 1, false, on_failure_charged, t);
        return;
    }
    const char *scope = t->scope[0] ? t->scope : t->client->scope;
    if (!scope_subset(scope, t->client->scope)) {
        oauth_error(req, 400, "invalid_scope", "the requested scope exceeds the client's");
        token_free(t);
        return;
    }
    lm_token_claims c = {0};
    snprintf(c.iss, sizeof c.iss, "%s", GW_ACCESS_ISSUER);
    snprintf(c.aud, sizeof c.aud, "%s", GW_ACCESS_AUDIENCE);
    snprintf(c.sub, sizeof c.sub, "%s", t->client->id);
    snprintf(c.scope, sizeof c.scope, "%s", scope);
    c.exp = (long long)time(NULL) + (long long)gw->access_ttl_s;
    char *tok = lm_token_mint(&gw->access_key, &c);
    if (!tok) {
        lm_resp_problem(req, 500, "could not sign the access token");
        token_free(t);
        return;
    }
    json_t *doc = json_pack("{s:s, s:s, s:I, s:s}", "access_token", tok, "token_type", "Bearer",
                            "expires_in", (json_int_t)gw->access_ttl_s, "scope", scope);
    free(tok);
    lm_resp_header(req, "Cache-Control", "no-store");
    lm_json_resp(req, 200, doc);
    token_free(t);
}

static void too_many(token_req *t, uint64_t retry_after_s, const char *detail)
{
    char ra[32];
    snprintf(ra, sizeof ra, "%llu", (unsigned long long)(retry_after_s ? retry_after_s : 1));
    lm_resp_header(t->req, "Retry-After", ra);
    atomic_fetch_add_explicit(&t->gw->auth_refused, 1, memory_order_relaxed);
    sodium_memzero(t->secret, sizeof t->secret);
    oauth_error(t->req, 429, "invalid_client", detail);
    token_free(t);
}

/* Starts queued verifications while this worker has hashing capacity: every attempt whose
 * id had no failure in the window before any that had (a flood of wrong secrets waits
 * behind real clients, and a full queue refuses it at once). */
static void start_next(gateway *gw, gw_worker *w)
{
    while (w->hashing < gw->auth_concurrency && (w->auth_q[0].head || w->auth_q[1].head)) {
        int q = w->auth_q[0].head ? 0 : 1;
        token_req *t = w->auth_q[q].head;
        w->auth_q[q].head = t->next;
        if (!t->next) w->auth_q[q].tail = NULL;
        w->auth_q[q].n--;
        w->hashing++;
        uv_queue_work(lm_req_loop(t->req), &t->work, verify_work, verify_after);
    }
}

static void on_guard(void *ud, const gw_limit_result *res)
{
    token_req *t = ud;
    gateway *gw = t->gw;
    if (!res->allowed) {
        too_many(t, res->retry_after_s,
                 res->store_failed ? "the attempt store is unavailable; retry shortly"
                                   : "too many failed attempts; retry later");
        return;
    }
    t->failures_before =
        t->n_keys && !res->store_failed && gw->auth_id_rate.count &&
        res->key_remaining[0] < (long long)gw->auth_id_rate.burst - 1; /* dry: after this one */
    gw_worker *w = &gw->workers[t->worker];
    int q = t->failures_before ? 1 : 0;
    if (w->auth_q[q].n >= gw->auth_queue) {
        too_many(t, 1, "too many sign-in attempts in progress; retry shortly");
        return;
    }
    if (w->auth_q[q].tail)
        w->auth_q[q].tail->next = t;
    else
        w->auth_q[q].head = t;
    w->auth_q[q].tail = t;
    w->auth_q[q].n++;
    start_next(gw, w);
}

static bool form_get(const lm_query *form, const char *key, char *out, size_t outlen, bool *dup)
{
    if (lm_query_count(form, key) > 1) *dup = true;
    const char *v = lm_query_get(form, key);
    if (!v) return false;
    if (strlen(v) >= outlen) return false;
    snprintf(out, outlen, "%s", v);
    return true;
}

static void handle_token(lm_req *req, void *ctx)
{
    gateway *gw = ctx;
    gw_cors_actual(gw, req);
    const char *ct = lm_req_header(req, "content-type");
    if (!ct || strncasecmp(ct, "application/x-www-form-urlencoded", 33) != 0) {
        oauth_error(req, 400, "invalid_request",
                    "the body must be application/x-www-form-urlencoded");
        return;
    }
    lm_query form;
    if (lm_query_parse(req->body, req->body_len, &form) != 0) {
        oauth_error(req, 400, "invalid_request", "malformed form body");
        return;
    }
    token_req *t = lm_xcalloc(1, sizeof *t);
    t->req = req;
    t->gw = gw;
    bool dup = false;
    char grant[64] = "";
    form_get(&form, "grant_type", grant, sizeof grant, &dup);
    bool have_id = form_get(&form, "client_id", t->client_id, sizeof t->client_id, &dup);
    bool have_secret = form_get(&form, "client_secret", t->secret, sizeof t->secret, &dup);
    form_get(&form, "scope", t->scope, sizeof t->scope, &dup);
    lm_query_free(&form);

    const char *authz = lm_req_header(req, "authorization");
    if (header_count(req, "authorization") > 1) {
        token_free(t);
        oauth_error(req, 400, "invalid_request",
                    "the Authorization header was given more than once");
        return;
    }
    if (authz && strncasecmp(authz, "Basic ", 6) == 0) {
        unsigned char dec[400];
        size_t n = 0;
        if (sodium_base642bin(dec, sizeof dec - 1, authz + 6, strlen(authz + 6), " ", &n, NULL,
                              sodium_base64_VARIANT_ORIGINAL) != 0) {
            token_free(t);
            oauth_error(req, 401, "invalid_client", "malformed Basic credentials");
            return;
        }
        dec[n] = '\0';
        char *colon = strchr((char *)dec, ':');
        /* RFC 6749 2.3.1: both parts are form-urlencoded */
        if (!colon || have_id || have_secret) {
            token_free(t);
            oauth_error(req, 400, "invalid_request",
                        "give credentials once: Basic as client_id:client_secret");
            return;
        }
        *colon = '\0';
        size_t l1, l2;
        char id_buf[400], sec_buf[400];
        if (!lm_url_decode((char *)dec, strlen((char *)dec), id_buf, &l1, true) ||
            !lm_url_decode(colon + 1, strlen(colon + 1), sec_buf, &l2, true) ||
            l1 >= sizeof t->client_id || l2 >= sizeof t->secret) {
            token_free(t);
            oauth_error(req, 401, "invalid_client", "malformed Basic credentials");
            return;
        }
        memcpy(t->client_id, id_buf, l1 + 1);
        memcpy(t->secret, sec_buf, l2 + 1);
        sodium_memzero(sec_buf, sizeof sec_buf);
        sodium_memzero(dec, sizeof dec);
        have_id = have_secret = true;
    }
    if (dup) {
        token_free(t);
        oauth_error(req, 400, "invalid_request", "a parameter was given more than once");
        return;
    }
    if (strcmp(grant, "client_credentials") != 0) {
        token_free(t);
        oauth_error(req, 400, grant[0] ? "unsupported_grant_type" : "invalid_request",
                    "grant_type must be client_credentials");
        return;
    }
    if (!have_id || !have_secret) {
        token_free(t);
        oauth_error(req, 401, "invalid_client", "client_id and client_secret are required");
        return;
    }
    t->snap = gw_clients_acquire(gw); /* the client stays valid off the loop */
    t->client = gw_clients_find(t->snap, t->client_id);
    t->work.data = t;
    t->worker = lm_req_worker_index(req);
    lm_req_peer_ip(req, t->peer, sizeof t->peer);
    /* the same keys whether the id exists or not: equal answers, equal timing */
    snprintf(t->key_id, sizeof t->key_id, "a:id:%s", t->client_id);
    snprintf(t->key_addr, sizeof t->key_addr, "a:ip:%s", t->peer);
    if (gw->auth_id_rate.count)
        t->keys[t->n_keys++] = (gw_limit_key){.key = t->key_id, .rate = &gw->auth_id_rate};
    if (gw->auth_addr_rate.count)
        t->keys[t->n_keys++] = (gw_limit_key){.key = t->key_addr, .rate = &gw->auth_addr_rate};
    gw_limit_check(gw, t->worker, t->keys, t->n_keys, 1, true, on_guard, t);
}

/* ---- per-request authentication -------------------------------------------------------- */

static bool deny(lm_req *req, int status, const char *www, const char *detail)
{
    if (www) lm_resp_header(req, "WWW-Authenticate", www);
    lm_problem p = {.status = status, .type = "urn:lotmesh:problem:auth", .detail = detail};
    lm_resp_problem_full(req, &p);
    return false;
}

bool gw_clientauth_check(gateway *gw, lm_req *req, gw_principal *who)
{
    const char *authz = lm_req_header(req, "authorization");
    const char *api_key = lm_req_header(req, "x-api-key");
    int n_authz = header_count(req, "authorization"), n_keys = header_count(req, "x-api-key");
    /* which one would count is ambiguous (a proxy in front may look at the other) */
    if (n_authz > 1 || n_keys > 1)
        return deny(req, 400, NULL,
                    n_authz > 1 ? "the Authorization header was given more than once"
                                : "the X-API-Key header was given more than once");
    if (authz && api_key)
        return deny(req, 400, NULL, "send either Authorization or X-API-Key, not both");
    if (api_key) {
        const gw_client *c =
            gw_clients_by_api_key(gw_clients_now(gw, lm_req_worker_index(req)), api_key);
        if (!c) return deny(req, 401, "Bearer realm=\"lotmesh\"", "unknown API key");
        snprintf(who->client_id, sizeof who->client_id, "%s", c->id);
        snprintf(who->scope, sizeof who->scope, "%s", c->scope);
    } else if (authz && strncasecmp(authz, "Bearer ", 7) == 0) {
        const char *tok = authz + 7;
        gw_worker *w = worker_of(gw, req);
        lm_token_claims c;
        if (!lm_tokcache_find(&w->access, tok, (long long)time(NULL), &c)) {
            lm_token_result r =
                lm_token_verify(&gw->access_key, tok, GW_ACCESS_ISSUER, GW_ACCESS_AUDIENCE, &c);
            if (r != LM_TOKEN_OK)
                return deny(req, 401, "Bearer realm=\"lotmesh\", error=\"invalid_token\"",
                            lm_token_result_str(r));
            lm_tokcache_store(&w->access, tok, &c);
        }
        snprintf(who->client_id, sizeof who->client_id, "%s", c.sub);
        snprintf(who->scope, sizeof who->scope, "%s", c.scope);
        /* a revoked client's tokens stop working at once (the newest table of clients) */
        if (!gw_clients_find(gw_clients_now(gw, lm_req_worker_index(req)), who->client_id))
            return deny(req, 401, "Bearer realm=\"lotmesh\", error=\"invalid_token\"",
                        "the token's client was revoked");
    } else {
        return deny(req, 401, "Bearer realm=\"lotmesh\"",
                    authz ? "unsupported Authorization scheme; use Bearer or X-API-Key"
                          : "credentials are required: a Bearer access token or X-API-Key");
    }
    if (!lm_token_scope_allows(who->scope, req->method_id))
        return deny(req, 403, "Bearer realm=\"lotmesh\", error=\"insufficient_scope\"",
                    "the client's scope does not allow this method");
    return true;
}

const char *gw_clientauth_service_token(gateway *gw, lm_req *req, const char *service,
                                        const gw_principal *who)
{
    return lm_tokcache_mint(&worker_of(gw, req)->service, &gw->service_key, GW_SERVICE_ISSUER,
                            service, who->client_id, who->scope, (long long)gw->service_ttl_s,
                            (long long)time(NULL));
}

void gw_clientauth_worker_init(gw_worker *w)
{
    w->access = (lm_tokcache)LM_TOKCACHE_INIT(GW_TOKEN_CACHE);
    w->service = (lm_tokcache)LM_TOKCACHE_INIT(GW_TOKEN_CACHE);
}

void gw_clientauth_worker_free(gw_worker *w)
{
    lm_tokcache_free(&w->access);
    lm_tokcache_free(&w->service);
}

void gw_clientauth_routes(lm_router *r, gateway *gw)
{
    lm_router_add(r, "POST", "/auth/token", handle_token, gw);
}
