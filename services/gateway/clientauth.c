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
    const gw_client *client;
    bool ok;
} token_req;

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

static void verify_after(uv_work_t *w, int status)
{
    token_req *t = w->data;
    lm_req *req = t->req;
    gateway *gw = t->gw;
    sodium_memzero(t->secret, sizeof t->secret);
    if (status != 0 || !t->ok) {
        lm_log(LM_LOG_WARN, &(lm_log_ctx){.request_id = req->request_id, .trace = &req->trace},
               "token request refused for client '%s'", t->client_id);
        oauth_error(req, 401, "invalid_client", "unknown client or wrong secret");
        free(t);
        return;
    }
    const char *scope = t->scope[0] ? t->scope : t->client->scope;
    if (!scope_subset(scope, t->client->scope)) {
        oauth_error(req, 400, "invalid_scope", "the requested scope exceeds the client's");
        free(t);
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
        free(t);
        return;
    }
    json_t *doc = json_pack("{s:s, s:s, s:I, s:s}", "access_token", tok, "token_type", "Bearer",
                            "expires_in", (json_int_t)gw->access_ttl_s, "scope", scope);
    free(tok);
    lm_resp_header(req, "Cache-Control", "no-store");
    lm_json_resp(req, 200, doc);
    free(t);
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
    if (authz && strncasecmp(authz, "Basic ", 6) == 0) {
        unsigned char dec[400];
        size_t n = 0;
        if (sodium_base642bin(dec, sizeof dec - 1, authz + 6, strlen(authz + 6), " ", &n, NULL,
                              sodium_base64_VARIANT_ORIGINAL) != 0) {
            free(t);
            oauth_error(req, 401, "invalid_client", "malformed Basic credentials");
            return;
        }
        dec[n] = '\0';
        char *colon = strchr((char *)dec, ':');
        /* RFC 6749 2.3.1: both parts are form-urlencoded */
        if (!colon || have_id || have_secret) {
            free(t);
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
            free(t);
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
        free(t);
        oauth_error(req, 400, "invalid_request", "a parameter was given more than once");
        return;
    }
    if (strcmp(grant, "client_credentials") != 0) {
        free(t);
        oauth_error(req, 400, grant[0] ? "unsupported_grant_type" : "invalid_request",
                    "grant_type must be client_credentials");
        return;
    }
    if (!have_id || !have_secret) {
        free(t);
        oauth_error(req, 401, "invalid_client", "client_id and client_secret are required");
        return;
    }
    t->client = gw_clients_find(&gw->clients, t->client_id);
    t->work.data = t;
    uv_queue_work(lm_req_loop(req), &t->work, verify_work, verify_after);
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
    if (authz && api_key)
        return deny(req, 400, NULL, "send either Authorization or X-API-Key, not both");
    if (api_key) {
        const gw_client *c = gw_clients_by_api_key(&gw->clients, api_key);
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
