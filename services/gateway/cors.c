/* cors.c — Cross-Origin Resource Sharing at the gateway (gw_cors; Fetch standard, CORS
 * protocol). Off unless GATEWAY_CORS_ORIGINS lists origins ("https://a.example,https://b…"
 * compared exactly, or "*").
 *
 * Preflights (OPTIONS with Origin and Access-Control-Request-Method) are answered here with
 * 204, without a credential and without reaching a service, on every path a page may call
 * with a credential: /api/{service}/… (proxy.c), /auth/token, /admin/clients[/{id}],
 * /admin/services and /openapi.json (their handlers add the actual requests' headers). An allowed
 * origin gets Access-Control-Allow-Origin (the origin itself; "*" only when every origin is allowed
 * and credentials are not), -Methods, -Headers, -Max-Age and, when configured, -Credentials; a
 * disallowed origin, a method or a header not allowed gets no CORS header at all (the browser
 * then refuses). Actual requests from an allowed origin get Allow-Origin and
 * Access-Control-Expose-Headers. Responses on CORS paths carry Vary: Origin whenever the
 * answer depends on the origin (a list, or credentials), so caches keep them apart.
 *
 * Threading: the configuration is read at start-up and only read afterwards (any loop). */
#include "gateway.h"

#include "config.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define DEFAULT_METHODS "GET,HEAD,POST,PUT,PATCH,DELETE"
#define DEFAULT_HEADERS                                                                            \
    "Authorization,Content-Type,X-API-Key,If-Match,If-None-Match,Idempotency-Key,X-Request-ID,"    \
    "X-Request-Timeout,traceparent"
#define DEFAULT_EXPOSE                                                                             \
    "ETag,Location,Link,X-Total-Count,X-Request-ID,Retry-After,RateLimit-Limit,"                   \
    "RateLimit-Remaining,RateLimit-Reset"

/* Is each comma-separated item a token (RFC 9110 5.6.2)? */
static bool token_list(const char *s)
{
    bool any = false;
    for (const char *p = s; *p; p++) {
        if (*p == ',' || *p == ' ') continue;
        if (!strchr("!#$%&'*+-.^_`|~", *p) && !(*p >= '0' && *p <= '9') &&
            !((*p | 32) >= 'a' && (*p | 32) <= 'z'))
            return false;
        any = true;
    }
    return any;
}

void gw_cors_parse(gateway *gw, lm_cfg *cfg)
{
    gw_cors *c = &gw->cors;
    const char *origins = lm_cfg_str(cfg, "GATEWAY_CORS_ORIGINS", NULL);
    if (!origins) return;
    char buf[4096];
    if (strlen(origins) >= sizeof buf) {
        lm_cfg_error(cfg, "GATEWAY_CORS_ORIGINS", "is too long");
        return;
    }
    snprintf(buf, sizeof buf, "%s", origins);
    char *save = NULL;
    for (char *o = strtok_r(buf, ", ", &save); o; o = strtok_r(NULL, ", ", &save)) {
        if (!strcmp(o, "*")) {
            c->any_origin = true;
            continue;
        }
        size_t n = strlen(o);
        bool ok = (!strncmp(o, "http://", 7) || !strncmp(o, "https://", 8)) && o[n - 1] != '/' &&
                  !strchr(strstr(o, "//") + 2, '/') && n < sizeof c->origins[0] &&
                  strstr(o, "//")[2];
        if (!ok || c->n_origins == GW_CORS_MAX_ORIGINS) {
            lm_cfg_error(cfg, "GATEWAY_CORS_ORIGINS",
                         "must be * or origins scheme://host[:port] separated by commas (got "
                         "\"%.80s\")",
                         o);
            return;
        }
        snprintf(c->origins[c->n_origins++], sizeof c->origins[0], "%s", o);
    }
    const char *methods = lm_cfg_str(cfg, "GATEWAY_CORS_METHODS", DEFAULT_METHODS);
    const char *headers = lm_cfg_str(cfg, "GATEWAY_CORS_HEADERS", DEFAULT_HEADERS);
    const char *expose = lm_cfg_str(cfg, "GATEWAY_CORS_EXPOSE_HEADERS", DEFAULT_EXPOSE);
    const char *names[] = {"GATEWAY_CORS_METHODS", "GATEWAY_CORS_HEADERS",
                           "GATEWAY_CORS_EXPOSE_HEADERS"};
    const char *vals[] = {methods, headers, expose};
    char *outs[] = {c->methods, c->headers, c->expose};
    for (int i = 0; i < 3; i++) {
        if (strlen(vals[i]) >= sizeof c->methods || !token_list(vals[i])) {
            lm_cfg_error(cfg, names[i], "must be names separated by commas (got \"%.80s\")",
                         vals[i]);
            return;
        }
        snprintf(outs[i], sizeof c->methods, "%s", vals[i]);
    }
    c->max_age_s = lm_cfg_duration_ms(cfg, "GATEWAY_CORS_MAX_AGE", 600000, 0, 86400000) / 1000;
    c->credentials = lm_cfg_bool(cfg, "GATEWAY_CORS_CREDENTIALS", false);
    c->enabled = true;
}

/* Is name (len n) one of the comma-separated items of list, case-insensitively? */
static bool in_list(const char *list, const char *name, size_t n)
{
    for (const char *p = list; *p;) {
        while (*p == ',' || *p == ' ')
            p++;
        const char *e = p;
        while (*e && *e != ',' && *e != ' ')
            e++;
        if ((size_t)(e - p) == n && n && !strncasecmp(p, name, n)) return true;
        p = e;
    }
    return false;
}

static bool origin_allowed(const gw_cors *c, const char *origin)
{
    if (c->any_origin) return true;
    for (size_t i = 0; i < c->n_origins; i++)
        if (!strcmp(c->origins[i], origin)) return true;
    return false;
}

/* The answer depends on the origin unless it is a plain "*" for everyone. */
static bool varies(const gw_cors *c)
{
    return !c->any_origin || c->credentials;
}

static void allow_origin(const gw_cors *c, lm_req *req, const char *origin)
{
    lm_resp_header(req, "Access-Control-Allow-Origin",
                   c->any_origin && !c->credentials ? "*" : origin);
    if (c->credentials) lm_resp_header(req, "Access-Control-Allow-Credentials", "true");
}

void gw_cors_actual(gateway *gw, lm_req *req)
{
    const gw_cors *c = &gw->cors;
    if (!c->enabled) return;
    if (varies(c)) lm_resp_header(req, "Vary", "Origin");
    const char *origin = lm_req_header(req, "origin");
    if (!origin || !origin_allowed(c, origin)) return;
    allow_origin(c, req, origin);
    lm_resp_header(req, "Access-Control-Expose-Headers", c->expose);
}

bool gw_cors_preflight(gateway *gw, lm_req *req)
{
    const gw_cors *c = &gw->cors;
    const char *origin = lm_req_header(req, "origin");
    const char *method = lm_req_header(req, "access-control-request-method");
    if (!c->enabled || strcmp(req->method, "OPTIONS") != 0 || !origin || !method) return false;
    atomic_fetch_add_explicit(&gw->cors_preflights, 1, memory_order_relaxed);
    if (varies(c)) lm_resp_header(req, "Vary", "Origin");
    const char *want = lm_req_header(req, "access-control-request-headers");
    bool ok = origin_allowed(c, origin) && in_list(c->methods, method, strlen(method));
    for (const char *p = want ? want : ""; ok && *p;) {
        while (*p == ',' || *p == ' ' || *p == '\t')
            p++;
        const char *e = p;
        while (*e && *e != ',' && *e != ' ' && *e != '\t')
            e++;
        if (e > p && !in_list(c->headers, p, (size_t)(e - p))) ok = false;
        p = e;
    }
    if (ok) {
        char age[32];
        allow_origin(c, req, origin);
        lm_resp_header(req, "Access-Control-Allow-Methods", c->methods);
        lm_resp_header(req, "Access-Control-Allow-Headers", c->headers);
        snprintf(age, sizeof age, "%llu", (unsigned long long)c->max_age_s);
        lm_resp_header(req, "Access-Control-Max-Age", age);
    }
    lm_resp_send(req, 204, NULL, NULL, 0);
    return true;
}

/* The gateway's own paths a browser page may call with a credential (the proxied
 * /api/{service}/… paths answer preflights in proxy.c) and the methods each serves. */
static const struct cors_path {
    const char *path, *allow;
} cors_paths[] = {
    {"/auth/token", "POST"},
    {"/admin/clients", "GET, POST"},
    {"/admin/clients/{id}", "GET, PATCH, DELETE"},
    {"/admin/services", "GET"},
    {"/openapi.json", "GET"},
};

/* The gateway of this process: set once by gw_cors_routes on the main thread before the
 * workers start, only read afterwards. */
static gateway *cors_gw;

static void handle_preflight(lm_req *req, void *ctx)
{
    const struct cors_path *p = ctx;
    if (!gw_cors_preflight(cors_gw, req)) { /* OPTIONS that is no preflight */
        lm_resp_header(req, "Allow", p->allow);
        lm_resp_problem(req, 405, "OPTIONS here is answered only as a CORS preflight");
    }
}

void gw_cors_routes(lm_router *r, gateway *gw)
{
    if (!gw->cors.enabled) return;
    cors_gw = gw;
    for (size_t i = 0; i < sizeof cors_paths / sizeof cors_paths[0]; i++)
        lm_router_add(r, "OPTIONS", cors_paths[i].path, handle_preflight,
                      (void *)(uintptr_t)&cors_paths[i]);
}
