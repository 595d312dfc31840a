/* proxy.c — /api/{service}/{path}: the gateway's forwarding (DESIGN 3.1).
 *
 * For each request: authenticate (auth.c), resolve an alias, take the service's passing
 * instances from the registry cache (never waiting on the registry), pick one (round-robin,
 * or least outstanding of two random choices), and forward through this worker's keep-alive
 * pool: method, path, query and body as they came; end-to-end headers pass, hop-by-hop
 * ones (Connection and what it names, Keep-Alive, TE, Trailer, Transfer-Encoding, Upgrade,
 * Proxy-*) are dropped both ways; Host and Content-Length are rebuilt; X-Forwarded-For,
 * -Proto and -Host appended; X-Request-ID and a child traceparent set; the client's
 * credentials are replaced by a service token. The response streams back as it arrives,
 * pausing the upstream while the client's socket is full.
 *
 * Request bodies stream too (LM_ROUTE_STREAM_BODY): the upstream request starts when the
 * client's headers are complete and body chunks are written to it as they arrive, the
 * client's body paused while the upstream connection is backed up.
 *
 * Only a service's API is forwarded: /api/{service}/api/… reaches the instance as /api/…;
 * any other path of it (/metrics, /health, /ready, /openapi.json, a dot-segment) is a 404
 * from the gateway.
 *
 * Failures answer fast with a problem: unknown service 404, no passing instance 503,
 * refused/reset 502, timeout 504. A GET/HEAD whose connection failed before anything was
 * sent is tried once more on another instance. A failure after the response head went out
 * cannot become a problem any more: the client's response is cut (lm_resp_abort). */
#include "gateway.h"

#include "log.h"
#include "outbound.h"
#include "parse.h"
#include "problem.h"
#include "discovery.h"
#include "server.h"

#include <stdatomic.h>
#include <stdio.h>
#include <time.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define MAX_FWD_HEADERS 128

typedef struct fwd {
    gateway *gw;
    lm_req *req;
    lm_client_req *creq;
    char service[64];
    gw_principal who;
    lm_disc_set *set; /* the passing instances, referenced until done */
    int n_inst;
    int chosen;
    int attempts;
    gw_upstream_stat *us; /* the chosen instance's entry, held (holders) until done */
    bool head_sent;
    bool paused;     /* upstream response paused: the client reads slowly */
    bool streaming;  /* the request body streams to the upstream as it arrives */
    bool req_paused; /* client body paused: the upstream takes it slowly */
    int body_error;  /* why the client's body failed (413, 400, 408, 499), or 0 */
    int worker;      /* for metrics: req may be gone by the time f is freed */
    int svc_index;   /* in gw->services, -1 before it is known */
    int status;      /* answered to the client */
    uint64_t t0_ns;
    char prefix[80]; /* "/api/<service as the client named it>": for Location and Link */
    gw_rate rate;    /* the client's limit on this service, when limited */
} fwd;

static gw_worker *worker_of(gateway *gw, const lm_req *req)
{
    return &gw->workers[lm_req_worker_index(req)];
}

static bool hop_by_hop(const char *name, const char *connection)
{
    static const char *const hop[] = {
        "connection", "keep-alive",     "te",   "trailer", "transfer-encoding",
        "upgrade",    "content-length", "host", NULL};
    for (const char *const *h = hop; *h; h++)
        if (!strcasecmp(name, *h)) return true;
    if (!strncasecmp(name, "proxy-", 6)) return true;
    if (connection) { /* headers named by Connection are hop-by-hop too */
        size_t n = strlen(name);
        for (const char *p = connection; *p;) {
            while (*p == ' ' || *p == ',' || *p == '\t')
                p++;
            const char *e = p;
            while (*e && *e != ',' && *e != ' ' && *e != '\t')
                e++;
            if ((size_t)(e - p) == n && !strncasecmp(p, name, n)) return true;
            p = e;
        }
    }
    return false;
}

/* Every Connection field joined with commas — a header named in any of them is hop-by-hop
 * (RFC 9110 7.6.1), not only in the first. NULL when there is none; the caller frees. */
static char *connection_names(const lm_header *hs, size_t n)
{
    lm_buf b = LM_BUF_INIT;
    for (size_t i = 0; i < n; i++)
        if (!strcasecmp(hs[i].name, "connection")) {
            if (b.len) lm_buf_append_char(&b, ',');
            lm_buf_append_str(&b, hs[i].value);
        }
    return b.len ? lm_buf_steal(&b, NULL) : NULL;
}

static const char *resolve_alias(gateway *gw, const char *name)
{
    for (size_t i = 0; i < gw->n_aliases; i++)
        if (!strcmp(gw->aliases[i].from, name)) return gw->aliases[i].to;
    return name;
}

/* ---- per instance: counters and the circuit ----------------------------------------------- */

void gw_upstream_init(gw_worker *w)
{
    w->out = NULL;
    if (uv_mutex_init(&w->out_lock) != 0) abort();
}

void gw_upstream_free(gw_worker *w)
{
    while (w->out) {
        gw_upstream_stat *e = w->out;
        w->out = e->next;
        free(e->id);
        free(e);
    }
    uv_mutex_destroy(&w->out_lock);
}

void gw_upstream_each(gateway *gw, void (*fn)(const gw_upstream_stat *s, void *ud), void *ud)
{
    for (int i = 0; i < gw->n_workers; i++) {
        gw_worker *w = &gw->workers[i];
        uv_mutex_lock(&w->out_lock);
        for (const gw_upstream_stat *e = w->out; e; e = e->next)
            fn(e, ud);
        uv_mutex_unlock(&w->out_lock);
    }
}

/* Does discovery list the instance (passing) under any exposed service? */
static bool instance_known(gateway *gw, const char *id)
{
    bool known = false;
    for (size_t i = 0; i < gw->n_services && !known; i++) {
        lm_disc_set *set = lm_disc_instances(gw->reg, gw->services[i]);
        for (size_t j = 0; set && j < lm_disc_set_count(set) && !known; j++)
            known = !strcmp(lm_disc_set_get(set, j)->id, id);
        if (set) lm_disc_set_release(set);
    }
    return known;
}

/* This worker's entry for an instance, made on first sight. Meeting a new instance is also
 * when the entries of instances that discovery no longer lists, and that no request holds,
 * go: an entry lives as long as its instance is known or a request uses it. */
static gw_upstream_stat *upstream_stat(gateway *gw, gw_worker *w, const char *id)
{
    for (gw_upstream_stat *e = w->out; e; e = e->next) /* this worker alone changes the list */
        if (!strcmp(e->id, id)) return e;
    for (gw_upstream_stat **pp = &w->out; *pp;) {
        gw_upstream_stat *e = *pp;
        if (e->holders == 0 && !instance_known(gw, e->id)) {
            uv_mutex_lock(&w->out_lock);
            *pp = e->next;
            uv_mutex_unlock(&w->out_lock);
            free(e->id);
            free(e);
        } else {
            pp = &e->next;
        }
    }
    gw_upstream_stat *e = lm_xcalloc(1, sizeof *e);
    e->id = lm_xstrdup(id);
    lm_breaker_init(&e->breaker, w->breaker_threshold, w->breaker_reset_ms);
    uv_mutex_lock(&w->out_lock);
    e->next = w->out;
    w->out = e;
    uv_mutex_unlock(&w->out_lock);
    return e;
}

static const lm_disc_instance *inst(const fwd *f, int i)
{
    return lm_disc_set_get(f->set, (size_t)i);
}

/* Picks an instance (not exclude) whose circuit lets a call through: the less loaded of two
 * random ones (power of two choices), or the next one round-robin; -1 when every circuit is
 * open. Taking the pick claims its half-open trial, if it is in one. */
static int choose(fwd *f, int exclude)
{
    gateway *gw = f->gw;
    gw_worker *w = worker_of(gw, f->req);
    uint64_t now = uv_now(lm_req_loop(f->req));
    int ready[GW_MAX_UPSTREAMS], m = 0;
    for (int i = 0; i < f->n_inst && m < GW_MAX_UPSTREAMS; i++)
        if (i != exclude && lm_breaker_ready(&upstream_stat(gw, w, inst(f, i)->id)->breaker, now))
            ready[m++] = i;
    if (m == 0) return -1;
    int pick;
    if (f->gw->least_outstanding && m > 1) {
        int a = (int)(lm_trace_rand64() % (uint64_t)m),
            b = (int)(lm_trace_rand64() % (uint64_t)(m - 1));
        if (b >= a) b++;
        a = ready[a];
        b = ready[b];
        pick =
            atomic_load_explicit(&upstream_stat(gw, w, inst(f, a)->id)->n, memory_order_relaxed) <=
                    atomic_load_explicit(&upstream_stat(gw, w, inst(f, b)->id)->n,
                                         memory_order_relaxed)
                ? a
                : b;
    } else if (f->gw->least_outstanding) {
        pick = ready[0];
    } else {
        pick = ready[w->rr++ % (uint64_t)m];
    }
    gw_upstream_stat *us = upstream_stat(gw, w, inst(f, pick)->id);
    lm_breaker_allow(&us->breaker, now);
    if (f->us) f->us->holders--; /* a retry lets go of the first choice */
    f->us = us;
    us->holders++;
    return pick;
}

static void fwd_free(fwd *f)
{
    if (f->svc_index >= 0 && f->status) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        uint64_t now = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
        gw_metrics_observe(f->gw, f->worker, f->svc_index, f->status,
                           f->t0_ns && now > f->t0_ns ? (double)(now - f->t0_ns) / 1e9 : 0);
    }
    if (f->us) f->us->holders--;
    if (f->set) lm_disc_set_release(f->set);
    free(f);
}

static void send_upstream(fwd *f);

static void fail(fwd *f, int status, const char *detail)
{
    f->status = status;
    lm_problem p = {.status = status, .type = "urn:lotmesh:problem:upstream", .detail = detail};
    lm_resp_problem_full(f->req, &p);
}

static void on_head(lm_client_req *creq, const lm_client_response *resp, void *ud)
{
    (void)creq;
    fwd *f = ud;
    lm_req *req = f->req;
    char *connection = connection_names(resp->headers, resp->n_headers);
    const char *ctype = NULL;
    for (size_t i = 0; i < resp->n_headers; i++) {
        const lm_header *h = &resp->headers[i];
        if (hop_by_hop(h->name, connection) || !strcasecmp(h->name, "date") ||
            !strcasecmp(h->name, "server") || !strcasecmp(h->name, "x-request-id"))
            continue;
        if (!strcasecmp(h->name, "content-type")) {
            ctype = h->value;
            continue;
        }
        if ((!strcasecmp(h->name, "location") || !strcasecmp(h->name, "content-location")) &&
            h->value[0] == '/' && h->value[1] != '/') {
            /* the service's path, seen from the client: under the gateway's prefix */
            lm_buf v = LM_BUF_INIT;
            lm_buf_printf(&v, "%s%s", f->prefix, h->value);
            lm_resp_header(req, h->name, lm_buf_cstr(&v));
            lm_buf_free(&v);
            continue;
        }
        if (!strcasecmp(h->name, "link")) { /* <"/path…">: the same rewrite per link */
            lm_buf v = LM_BUF_INIT;
            for (const char *p = h->value; *p; p++) {
                lm_buf_append_char(&v, *p);
                if (*p == '<' && p[1] == '/' && p[2] != '/') lm_buf_append_str(&v, f->prefix);
            }
            lm_resp_header(req, h->name, lm_buf_cstr(&v));
            lm_buf_free(&v);
            continue;
        }
        lm_resp_header(req, h->name, h->value);
    }
    free(connection);
    const char *cl = lm_client_response_header(resp, "content-length");
    const char *te = lm_client_response_header(resp, "transfer-encoding");
    long long len = -1;
    if (!cl || te || !lm_parse_int(cl, &len)) len = -1;
    lm_resp_begin(req, resp->status, ctype, len);
    f->status = resp->status;
    f->head_sent = true;
}

static void on_drain(lm_req *req, void *ud)
{
    (void)req;
    fwd *f = ud;
    if (f->paused && f->creq) {
        f->paused = false;
        lm_client_resume(f->creq);
    }
}

static void on_body(lm_client_req *creq, const char *data, size_t len, void *ud)
{
    fwd *f = ud;
    if (lm_req_abandoned(f->req)) { /* the client is gone: stop the upstream's work too */
        lm_client_cancel(creq);     /* completes after this callback returns */
        return;
    }
    if (!lm_resp_write(f->req, data, len) && !lm_req_abandoned(f->req) && !f->paused) {
        f->paused = true; /* the client reads slower than the upstream sends */
        lm_client_pause(creq);
        lm_resp_on_drain(f->req, on_drain, f);
    }
}

static void on_done(lm_client_req *creq, lm_client_err err, const lm_client_response *resp,
                    void *ud)
{
    (void)creq;
    (void)resp;
    fwd *f = ud;
    lm_req *req = f->req;
    f->creq = NULL;
    gw_upstream_stat *us = f->us;
    atomic_fetch_sub_explicit(&us->n, 1, memory_order_relaxed);
    if (err != LM_CLIENT_OK && err != LM_CLIENT_ERR_CANCELLED)
        atomic_fetch_add_explicit(&us->failures, 1, memory_order_relaxed);
    /* the circuit: no answer (or a 5xx) counts against the instance, any other answer for it;
     * a cancel (client gone, its body failed) and a full pool say nothing about it */
    if (err == LM_CLIENT_OK && f->status < 500)
        lm_breaker_success(&us->breaker);
    else if (err != LM_CLIENT_ERR_CANCELLED && err != LM_CLIENT_ERR_QUEUE_FULL &&
             err != LM_CLIENT_ERR_QUEUE_TIMEOUT)
        lm_breaker_failure(&us->breaker, uv_now(lm_req_loop(req)));
    if (err == LM_CLIENT_OK) {
        lm_resp_end(req);
        fwd_free(f);
        return;
    }
    if (f->body_error && !f->head_sent) { /* the client's body failed: say why */
        fail(f, f->body_error,
             f->body_error == 413   ? "request body is larger than the limit"
             : f->body_error == 408 ? "request body not received in time"
             : f->body_error == 499 ? "the client went away"
                                    : "malformed request body");
        fwd_free(f);
        return;
    }
    if (f->head_sent) { /* too late for a problem: cut the response */
        if (!lm_req_abandoned(req))
            lm_log(LM_LOG_WARN, &(lm_log_ctx){.request_id = req->request_id, .trace = &req->trace},
                   "upstream %s failed mid-response: %s", inst(f, f->chosen)->id,
                   lm_client_strerror(err));
        lm_resp_abort(req);
        fwd_free(f);
        return;
    }
    bool idempotent_read = lm_method_is_read(req->method_id);
    if ((err == LM_CLIENT_ERR_CONNECT || err == LM_CLIENT_ERR_CONNECT_TIMEOUT ||
         err == LM_CLIENT_ERR_RESOLVE) &&
        idempotent_read && !f->streaming && f->attempts < 2 && f->n_inst > 1) {
        int next = choose(f, f->chosen);
        if (next >= 0) { /* nothing was sent: try another instance once */
            f->chosen = next;
            send_upstream(f);
            return;
        }
    }
    char detail[256];
    int status = 502;
    if (err == LM_CLIENT_ERR_RESPONSE_TIMEOUT || err == LM_CLIENT_ERR_CONNECT_TIMEOUT ||
        err == LM_CLIENT_ERR_QUEUE_TIMEOUT)
        status = 504;
    if (err == LM_CLIENT_ERR_QUEUE_FULL) status = 503;
    snprintf(detail, sizeof detail, "%s: %s", f->service, lm_client_strerror(err));
    fail(f, status, detail);
    fwd_free(f);
}

/* ---- the client's body, streamed ------------------------------------------------------ */

static void on_upstream_drain(lm_client_req *creq, void *ud)
{
    (void)creq;
    fwd *f = ud;
    if (f->req_paused) {
        f->req_paused = false;
        lm_req_resume_body(f->req);
    }
}

static void on_req_data(lm_req *req, const char *data, size_t len, void *ud)
{
    fwd *f = ud;
    if (f->creq && !lm_client_write(f->creq, data, len) && !f->req_paused) {
        f->req_paused = true;
        lm_req_pause_body(req);
    }
}

static void on_req_end(lm_req *req, int status, void *ud)
{
    (void)req;
    fwd *f = ud;
    if (!f->creq) return;
    if (status == 0) {
        lm_client_end(f->creq);
        return;
    }
    f->body_error = status;
    lm_client_cancel(f->creq); /* completes now: on_done answers and frees f */
}

static void send_upstream(fwd *f)
{
    lm_req *req = f->req;
    gateway *gw = f->gw;
    const lm_disc_instance *in = inst(f, f->chosen);
    /* without a service token the instance would refuse the call (401) for a fault of the
     * gateway's: answer the gateway's fault and send nothing */
    const char *tok = gw_clientauth_service_token(gw, req, f->service, &f->who);
    if (!tok) {
        lm_log(LM_LOG_ERROR, &(lm_log_ctx){.request_id = req->request_id, .trace = &req->trace},
               "minting a service token for %s failed", f->service);
        f->status = 500;
        lm_problem p = {.status = 500,
                        .type = "urn:lotmesh:problem:service-token",
                        .detail = "the gateway could not mint a service token"};
        lm_resp_problem_full(req, &p);
        fwd_free(f);
        return;
    }
    f->attempts++;

    /* path: "/" + the rest of /api/{service}/ + the query */
    size_t rest_raw_len = 0;
    const char *rest_raw = "";
    for (size_t i = 0; i < req->route.n_params; i++)
        if (!strcmp(req->route.params[i].name, "path")) {
            rest_raw = req->route.params[i].raw;
            rest_raw_len = req->route.params[i].raw_len;
        }
    lm_buf p = LM_BUF_INIT;
    lm_buf_append_char(&p, '/');
    lm_buf_append(&p, rest_raw, rest_raw_len); /* forwarded as received, not re-encoded */
    if (req->query_len) {
        lm_buf_append_char(&p, '?');
        lm_buf_append(&p, req->query_string, req->query_len);
    }
    char *path = lm_buf_steal(&p, NULL);

    lm_header hs[MAX_FWD_HEADERS + 8];
    size_t n = 0;
    char *connection = connection_names(req->headers, req->n_headers);
    const char *host = lm_req_header(req, "host");
    for (size_t i = 0; i < req->n_headers && n < MAX_FWD_HEADERS; i++) {
        const lm_header *h = &req->headers[i];
        if (hop_by_hop(h->name, connection) || !strcasecmp(h->name, "authorization") ||
            !strcasecmp(h->name, "expect") || /* answered here (100 Continue) */
            !strcasecmp(h->name, "x-api-key") || !strcasecmp(h->name, "traceparent") ||
            !strcasecmp(h->name, "x-request-id") || !strncasecmp(h->name, "x-forwarded-", 12))
            continue;
        hs[n++] = *h;
    }
    free(connection);
    /* X-Forwarded-For: every field the client sent (one list, RFC 9110 5.3), then the
     * client's address — never cut, as that last entry is the one the gateway vouches for */
    lm_buf xff = LM_BUF_INIT;
    for (size_t i = 0; i < req->n_headers; i++)
        if (!strcasecmp(req->headers[i].name, "x-forwarded-for") && req->headers[i].value[0]) {
            if (xff.len) lm_buf_append_str(&xff, ", ");
            lm_buf_append_str(&xff, req->headers[i].value);
        }
    char peer[64] = "";
    lm_req_peer_ip(req, peer, sizeof peer);
    if (xff.len) lm_buf_append_str(&xff, ", ");
    lm_buf_append_str(&xff, peer);
    lm_outbound ob;
    n = lm_outbound_headers(&ob, req, tok, hs, n);
    hs[n++] = (lm_header){.name = "X-Forwarded-For", .value = lm_buf_cstr(&xff)};
    hs[n++] = (lm_header){.name = "X-Forwarded-Proto", .value = "http"};
    if (host) hs[n++] = (lm_header){.name = "X-Forwarded-Host", .value = host};

    int64_t stream_length = -1; /* chunked unless the client gave a length */
    const char *cl = lm_req_header(req, "content-length");
    long long cl_value;
    if (f->streaming && cl && lm_parse_int(cl, &cl_value)) stream_length = cl_value;
    lm_client_opts o = {
        .method = req->method,
        .host = in->host,
        .port = in->port,
        .path = path,
        .headers = hs,
        .n_headers = n,
        .body = !f->streaming && req->body_len ? req->body : NULL,
        .body_len = f->streaming ? 0 : req->body_len,
        .stream_body = f->streaming,
        .stream_length = stream_length,
        .on_drain = on_upstream_drain,
        .connect_timeout_ms = gw->connect_timeout_ms,
        .response_timeout_ms = gw->upstream_timeout_ms,
        .on_head = on_head,
        .on_body = on_body,
        .on_done = on_done,
        .ud = f,
        .span = &ob.span, /* reported as a client span when sampled */
    };
    atomic_fetch_add_explicit(&f->us->n, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&f->us->requests, 1, memory_order_relaxed);
    f->creq = lm_client_send(lm_workerclient_get(gw->upstreams, lm_req_worker_index(req)), &o);
    free(path);
    lm_buf_free(&xff);
    if (!f->creq) {
        atomic_fetch_sub_explicit(&f->us->n, 1, memory_order_relaxed);
        fail(f, 400, "the request cannot be forwarded (malformed header or method)");
        fwd_free(f);
        return;
    }
    if (f->streaming && f->attempts == 1) lm_req_read_body(req, on_req_data, on_req_end, f);
}

/* Is the path after /api/{service}/ (raw, as received) one of the service's API paths
 * "api/…"? Nothing else of an instance (/metrics, /health, /ready, /openapi.json) is the
 * gateway's to expose, and no dot-segment may climb out of /api/ on the way. */
static bool api_path(const char *raw, size_t len)
{
    if (len < 4 || memcmp(raw, "api/", 4) != 0) return false;
    for (size_t i = 0; i < len;) {
        size_t e = i;
        while (e < len && raw[e] != '/' && raw[e] != '?')
            e++;
        size_t dots = 0, n = 0;
        for (size_t k = i; k < e; n++) { /* count the segment's characters, "%2e" as one */
            if (raw[k] == '.') {
                dots++;
                k++;
            } else if (e - k >= 3 && raw[k] == '%' && raw[k + 1] == '2' &&
                       (raw[k + 2] == 'e' || raw[k + 2] == 'E')) {
                dots++;
                k += 3;
            } else {
                k++;
            }
        }
        if (n > 0 && dots == n && n <= 2) return false; /* "." or ".." */
        if (e < len && raw[e] == '?') break;
        i = e + 1;
    }
    return true;
}

/* A fast 503 before anything was sent upstream (the client may retry in a second); frees f. */
static void unavailable(fwd *f, const char *type, const char *detail)
{
    lm_problem p = {.status = 503, .type = type, .detail = detail};
    lm_resp_header(f->req, "Retry-After", "1");
    f->status = 503;
    lm_resp_problem_full(f->req, &p);
    fwd_free(f);
}

/* After the limits: pick an instance and send. */
static void forward(fwd *f)
{
    gateway *gw = f->gw;
    f->set = lm_disc_instances(gw->reg, f->service);
    f->n_inst = f->set ? (int)lm_disc_set_count(f->set) : 0;
    if (f->n_inst == 0) {
        unavailable(f, "urn:lotmesh:problem:no-instance", "the service has no passing instance");
        return;
    }
    f->streaming = lm_req_streaming(f->req);
    f->chosen = choose(f, -1);
    if (f->chosen < 0) { /* every instance's circuit is open: fail fast */
        unavailable(f, "urn:lotmesh:problem:circuit-open",
                    "the service's instances are failing; retry shortly");
        return;
    }
    send_upstream(f);
}

static void on_limit(void *ud, const gw_limit_result *res)
{
    fwd *f = ud;
    gw_limit_headers(f->req, &f->rate, res);
    if (res->allowed) {
        atomic_fetch_add_explicit(&f->gw->limit_allowed, 1, memory_order_relaxed);
        forward(f);
        return;
    }
    atomic_fetch_add_explicit(&f->gw->limit_refused, 1, memory_order_relaxed);
    char ra[32];
    snprintf(ra, sizeof ra, "%llu",
             (unsigned long long)(res->retry_after_s ? res->retry_after_s : 1));
    lm_resp_header(f->req, "Retry-After", ra);
    if (res->store_failed) { /* RATE_LIMIT_FAIL=closed and Redis does not answer */
        f->status = 503;
        lm_problem p = {.status = 503,
                        .type = "urn:lotmesh:problem:rate-limit-unavailable",
                        .detail = "the rate-limit store is unavailable; retry shortly"};
        lm_resp_problem_full(f->req, &p);
    } else {
        f->status = 429;
        lm_problem p = {.status = 429,
                        .type = "urn:lotmesh:problem:rate-limited",
                        .detail = "the client's request rate is over its limit"};
        lm_resp_problem_full(f->req, &p);
    }
    fwd_free(f);
}

static void handle_proxy(lm_req *req, void *ctx)
{
    gateway *gw = ctx;
    fwd *f = lm_xcalloc(1, sizeof *f);
    f->gw = gw;
    f->req = req;
    f->worker = lm_req_worker_index(req);
    f->svc_index = -1;
    f->t0_ns = req->start_ns;
    snprintf(f->prefix, sizeof f->prefix, "/api/%.64s", lm_req_param(req, "service"));
    if (gw_cors_preflight(gw, req)) { /* no credential, no service */
        fwd_free(f);
        return;
    }
    gw_cors_actual(gw, req);
    if (!gw_clientauth_check(gw, req, &f->who)) {
        fwd_free(f);
        return;
    }
    const char *name = resolve_alias(gw, lm_req_param(req, "service"));
    if (!gw_service_exposed(gw, name)) {
        lm_resp_problemf(req, 404, "unknown service '%.64s'", name);
        fwd_free(f);
        return;
    }
    snprintf(f->service, sizeof f->service, "%s", name);
    for (size_t i = 0; i < gw->n_services; i++)
        if (!strcmp(gw->services[i], name)) f->svc_index = (int)i;
    const char *raw = "";
    size_t raw_len = 0;
    for (size_t i = 0; i < req->route.n_params; i++)
        if (!strcmp(req->route.params[i].name, "path")) {
            raw = req->route.params[i].raw;
            raw_len = req->route.params[i].raw_len;
        }
    if (!api_path(raw, raw_len)) { /* answered here: the instance never sees it */
        f->status = 404;
        lm_resp_problemf(req, 404,
                         "the gateway exposes only the API paths (/api/%.64s/api/…) "
                         "of a service",
                         lm_req_param(req, "service"));
        fwd_free(f);
        return;
    }
    const gw_client *c = gw_clients_find(gw_clients_now(gw, f->worker), f->who.client_id);
    const gw_rate *rate = gw_rate_for(gw, c, f->service);
    if (!rate) {
        forward(f);
        return;
    }
    f->rate = *rate;
    char key[256];
    bool per_service =
        c && rate >= &c->service_rates[0].rate && rate < &c->service_rates[c->n_service_rates].rate;
    if (per_service)
        snprintf(key, sizeof key, "cs:%.127s|%.64s", f->who.client_id, f->service);
    else
        snprintf(key, sizeof key, "c:%.127s", f->who.client_id);
    gw_limit_key k = {.key = key, .rate = &f->rate};
    gw_limit_check(gw, f->worker, &k, 1, 1, false, on_limit, f);
}

void gw_proxy_routes(lm_router *r, gateway *gw)
{
    lm_router_add_flags(r, "*", "/api/{service}/{path...}", handle_proxy, gw, LM_ROUTE_STREAM_BODY);
    lm_router_add_flags(r, "*", "/api/{service}/", handle_proxy, gw, LM_ROUTE_STREAM_BODY);
}

bool gw_service_exposed(const gateway *gw, const char *name)
{
    for (size_t i = 0; i < gw->n_services; i++)
        if (!strcmp(gw->services[i], name)) return true;
    return false;
}
