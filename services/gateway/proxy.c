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
 * Every call goes through the service's outbound-call policy (lib/mesh/policy.h, one state
 * per process): a deadline (the route's timeout, or less when the client sends
 * X-Request-Timeout; the rest goes upstream in X-Request-Timeout), the bulkhead, the
 * service's circuit, the pick among instances whose circuits are closed, a per-try timeout
 * while a retry could follow, and after a failed try lm_policy_next — the one place that
 * decides whether and where to try again. A request body is kept (up to RETRY_BODY_MAX) while
 * it streams so that a try can be repeated once the body is complete.
 *
 * Failures answer fast with a problem: unknown service 404, no passing instance, open
 * circuit or full bulkhead 503 with Retry-After, refused/reset 502, deadline spent 504 — or,
 * for a GET, the last good answer when it is recent enough (stale.c). A failure after the
 * response head went out cannot become a problem any more: the client's response is cut
 * (lm_resp_abort). */
#include "gateway.h"

#include "log.h"
#include "outbound.h"
#include "problem.h"
#include "discovery.h"
#include "server.h"

#include <stdatomic.h>
#include <uv.h>
#include <stdio.h>
#include <time.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define MAX_FWD_HEADERS 128
#define RETRY_BODY_MAX  (64 * 1024) /* a streamed body up to this size can be sent again */
#define STALE_BODY_MAX  (256 * 1024)

typedef struct fwd {
    gateway *gw;
    lm_req *req;
    uv_loop_t *loop;
    lm_client_req *creq;
    char service[64];
    gw_principal who;
    lm_disc_set *set; /* the passing instances, referenced until done */
    int n_inst;
    int chosen;
    lm_call call; /* the policy's view of this request */
    bool call_begun;
    lm_outcome last;                 /* the last try's outcome */
    uv_timer_t *timer;               /* a retry's backoff (rare); closed by fwd_free */
    struct fwd *try_prev, *try_next; /* in the worker's per-try FIFO while in_tries */
    uint64_t try_due;
    bool in_tries;
    bool try_timed_out; /* the per-try timeout cancelled the try */
    bool refused;       /* the instance answered 408 (took no request): the try was cancelled */
    bool retry_on_head; /* on_head chose a retry: the cancel that follows is not an end */
    lm_next next;       /* where the retry goes */
    lm_buf body;        /* the request body so far, for a repeat (streamed requests) */
    bool body_done;     /* the client's body is complete */
    bool body_too_big;  /* over RETRY_BODY_MAX: not kept, not repeatable */
    bool await_body;    /* a retry is decided and waits for the rest of the body */
    lm_buf stale;       /* a GET 200's headers then body, kept for stale-if-error */
    size_t stale_head_len;
    bool stale_keep;
    char *stale_ctype; /* owned, while stale_keep */
    bool head_sent;
    bool paused;     /* upstream response paused: the client reads slowly */
    bool streaming;  /* the request body streams to the upstream as it arrives */
    bool req_paused; /* client body paused: the upstream takes it slowly */
    int body_error;  /* why the client's body failed (413, 400, 408, 499), or 0 */
    int worker;      /* for metrics: req may be gone by the time f is freed */
    int svc_index;   /* in gw->services, -1 before it is known */
    int status;      /* answered to the client */
    uint64_t t0_ns;
    char prefix[80];      /* "/api/<service as the client named it>": for Location and Link */
    gw_rate rate;         /* the client's limit on this service, when limited */
    uint64_t deadline_ms; /* on the loop's clock: when the request's budget is spent */
} fwd;

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

static const lm_disc_instance *inst(const fwd *f, int i)
{
    return lm_disc_set_get(f->set, (size_t)i);
}

static lm_policy *policy_of(const fwd *f)
{
    return f->gw->policies[f->svc_index];
}

static void timer_closed(uv_handle_t *h)
{
    free(h);
}

/* ---- per-try timeouts: one FIFO and one timer per worker ------------------------------- */

static gw_worker *worker_at(const fwd *f)
{
    return &f->gw->workers[f->worker];
}

static void try_disarm(fwd *f)
{
    if (!f->in_tries) return;
    gw_worker *w = worker_at(f);
    if (f->try_prev)
        f->try_prev->try_next = f->try_next;
    else
        w->tries_head = f->try_next;
    if (f->try_next)
        f->try_next->try_prev = f->try_prev;
    else
        w->tries_tail = f->try_prev;
    f->try_prev = f->try_next = NULL;
    f->in_tries = false;
}

static void on_try_timer(uv_timer_t *t)
{
    gw_worker *w = t->data;
    uint64_t now = uv_now(t->loop);
    fwd *f;
    while ((f = w->tries_head) && f->try_due <= now) {
        try_disarm(f);
        if (f->creq) {
            f->try_timed_out = true;
            lm_client_cancel(f->creq); /* on_done(CANCELLED) now: counted as a timeout */
        }
    }
    if (w->tries_head) uv_timer_start(t, on_try_timer, w->tries_head->try_due - now, 0);
}

/* Every entry has the same length (the per-try timeout), so appending keeps the FIFO in
 * due order; the timer runs while the list is not empty. */
static void try_arm(fwd *f, uint64_t now, uint64_t ms)
{
    gw_worker *w = worker_at(f);
    f->try_due = now + ms;
    f->try_prev = w->tries_tail;
    f->try_next = NULL;
    if (w->tries_tail)
        w->tries_tail->try_next = f;
    else
        w->tries_head = f;
    w->tries_tail = f;
    f->in_tries = true;
    if (f->try_prev == NULL) uv_timer_start(w->try_timer, on_try_timer, ms, 0);
}

void gw_proxy_worker_start(gw_worker *w, uv_loop_t *loop)
{
    w->try_timer = lm_xmalloc(sizeof *w->try_timer);
    uv_timer_init(loop, w->try_timer);
    w->try_timer->data = w;
}

void gw_proxy_worker_stop(gw_worker *w)
{
    if (!w->try_timer) return;
    uv_close((uv_handle_t *)w->try_timer, timer_closed);
    w->try_timer = NULL;
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
    if (f->call_begun) lm_policy_end(&f->call, f->last, uv_now(f->loop));
    try_disarm(f);
    if (f->timer) {
        f->timer->data = NULL;
        uv_close((uv_handle_t *)f->timer, timer_closed);
    }
    lm_buf_free(&f->body);
    lm_buf_free(&f->stale);
    free(f->stale_ctype);
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

/* The stale-if-error key: service and path with query, as the client sent them. False
 * when it does not fit in n (such GETs have no stale copy). */
static bool stale_key(const fwd *f, char *out, size_t n)
{
    const lm_req *req = f->req;
    size_t sl = strlen(f->service), pl = req->path_len, ql = req->query_len;
    if (sl + 1 + pl + 1 + ql + 1 > n) return false;
    char *p = out;
    memcpy(p, f->service, sl);
    p += sl;
    *p++ = ' ';
    memcpy(p, req->path, pl);
    p += pl;
    *p++ = '?';
    if (ql) memcpy(p, req->query_string, ql);
    p[ql] = '\0';
    return true;
}

static bool is_get(const lm_req *req)
{
    return req->method_id == LM_METHOD_GET;
}

/* A GET that cannot be answered by the service: its last good answer when there is one recent
 * enough (stale-if-error, RFC 5861). True when it answered (f freed). */
static bool answer_stale(fwd *f)
{
    if (!f->gw->stale || !is_get(f->req) || f->head_sent) return false;
    char key[1200];
    if (!stale_key(f, key, sizeof key) ||
        !gw_stale_answer(f->gw->stale, f->req, key, uv_now(f->loop)))
        return false;
    f->status = 200;
    fwd_free(f);
    return true;
}

/* Decimal, without printf's machinery (per request): written from the end, two digits a
 * step. out: at least 21 bytes. Returns the length. */
static size_t format_u64(char *out, uint64_t v)
{
    static const char pairs[201] = "000102030405060708091011121314151617181920212223242526272829"
                                   "303132333435363738394041424344454647484950515253545556575859"
                                   "606162636465666768697071727374757677787980818283848586878889"
                                   "90919293949596979899";
    char tmp[20];
    char *p = tmp + sizeof tmp;
    while (v >= 100) {
        unsigned d = (unsigned)(v % 100) * 2;
        v /= 100;
        *--p = pairs[d + 1];
        *--p = pairs[d];
    }
    if (v >= 10) {
        *--p = pairs[v * 2 + 1];
        *--p = pairs[v * 2];
    } else {
        *--p = (char)('0' + v);
    }
    size_t n = (size_t)(tmp + sizeof tmp - p);
    memcpy(out, p, n);
    out[n] = '\0';
    return n;
}

/* A request header by name of known length (the length compared first). */
static const char *req_header(const lm_req *req, const char *name, size_t len)
{
    for (size_t i = 0; i < req->n_headers; i++)
        if (req->headers[i].name_len == len && !strcasecmp(req->headers[i].name, name))
            return req->headers[i].value;
    return NULL;
}

/* Should this GET's 200 be kept now? A per-worker memo of keys this worker asked about in the
 * last second answers most requests without the store's lock. */
static bool stale_due(fwd *f, const char *key)
{
    gw_worker *w = worker_at(f);
    uint64_t h = gw_stale_hash(key), now = uv_now(f->loop);
    size_t slot = h % GW_STALE_SEEN;
    if (w->stale_seen[slot].hash == h && now - w->stale_seen[slot].at < 1000) return false;
    w->stale_seen[slot].hash = h;
    w->stale_seen[slot].at = now;
    return gw_stale_wanted(f->gw->stale, key, now);
}

static void on_head(lm_client_req *creq, const lm_client_response *resp, void *ud)
{
    fwd *f = ud;
    lm_req *req = f->req;
    try_disarm(f); /* the answer is here: the per-try timeout is over */
    lm_outcome o = lm_policy_classify(LM_CLIENT_OK, resp);
    if (o == LM_OUT_REFUSED) { /* not an answer for the client: on_done decides, as for a reset */
        f->refused = true;
        lm_client_cancel(creq);
        return;
    }
    if (o == LM_OUT_GATEWAY) { /* a bare 502/503/504: another instance may answer */
        uint64_t now = uv_now(f->loop);
        lm_policy_try_done(&f->call, o, now);
        f->last = o;
        uint64_t ra = lm_policy_parse_retry_after(lm_client_response_header(resp, "retry-after"));
        bool repeatable = !f->streaming || (f->body_done && !f->body_too_big);
        if (lm_policy_next(&f->call, o, ra, false, repeatable, f->set, f->gw->least_outstanding,
                           now, &f->next)) {
            f->retry_on_head = true;
            lm_client_cancel(creq); /* on_done follows and starts the retry */
            return;
        }
        /* no retry: a GET answered from its recent good answer, if there is one */
        if (is_get(req) && f->gw->stale) {
            char key[1200];
            if (stale_key(f, key, sizeof key) && gw_stale_answer(f->gw->stale, req, key, now)) {
                f->status = 200;
                f->retry_on_head = true; /* answered: on_done only frees */
                f->next.index = -1;
                lm_client_cancel(creq);
                return;
            }
        }
    }
    char *connection = connection_names(resp->headers, resp->n_headers);
    const char *ctype = NULL;
    const char *cc = NULL;
    for (size_t i = 0; i < resp->n_headers; i++) {
        const lm_header *h = &resp->headers[i];
        if (hop_by_hop(h->name, connection) || !strcasecmp(h->name, "date") ||
            !strcasecmp(h->name, "server") || !strcasecmp(h->name, "x-request-id"))
            continue;
        if (!strcasecmp(h->name, "content-type")) {
            ctype = h->value;
            continue;
        }
        if (h->name_len == 13 && !strcasecmp(h->name, "cache-control")) cc = h->value;
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
    const char *cl = lm_client_response_header(resp, "content-length");
    const char *te = lm_client_response_header(resp, "transfer-encoding");
    int64_t len = cl && !te ? strtoll(cl, NULL, 10) : -1;
    /* stale-if-error: keep a 200 GET answer (not no-store/private, not too large) */
    if (resp->status == 200 && f->gw->stale && is_get(req) && len <= STALE_BODY_MAX &&
        !(cc && (strcasestr(cc, "no-store") || strcasestr(cc, "private")))) {
        char key[1200];
        if (stale_key(f, key, sizeof key) && stale_due(f, key)) {
            f->stale_keep = true;
            free(f->stale_ctype);
            f->stale_ctype = lm_xstrdup(ctype ? ctype : "");
            lm_buf_reset(&f->stale);
            for (size_t i = 0; i < resp->n_headers; i++) {
                const lm_header *h = &resp->headers[i];
                if (hop_by_hop(h->name, connection) || !strcasecmp(h->name, "date") ||
                    !strcasecmp(h->name, "server") || !strcasecmp(h->name, "x-request-id") ||
                    !strcasecmp(h->name, "content-type") || !strcasecmp(h->name, "location") ||
                    !strcasecmp(h->name, "content-location") || !strcasecmp(h->name, "link") ||
                    !strcasecmp(h->name, "age") || !strcasecmp(h->name, "cache-status"))
                    continue;
                lm_buf_printf(&f->stale, "%s: %s\r\n", h->name, h->value);
            }
            f->stale_head_len = f->stale.len;
        }
    }
    free(connection);
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
    if (f->stale_keep) {
        if (f->stale.len - f->stale_head_len + len > STALE_BODY_MAX)
            f->stale_keep = false;
        else
            lm_buf_append(&f->stale, data, len);
    }
    if (!lm_resp_write(f->req, data, len) && !lm_req_abandoned(f->req) && !f->paused) {
        f->paused = true; /* the client reads slower than the upstream sends */
        lm_client_pause(creq);
        lm_resp_on_drain(f->req, on_drain, f);
    }
}

static void on_timer(uv_timer_t *t);

/* The next try, now or after its backoff. */
static void retry(fwd *f)
{
    f->chosen = f->next.index;
    f->try_timed_out = f->refused = false;
    if (f->req_paused) { /* the failed try held the client's body back */
        f->req_paused = false;
        lm_req_resume_body(f->req);
    }
    if (f->next.delay_ms == 0) {
        send_upstream(f);
        return;
    }
    if (!f->timer) {
        f->timer = lm_xmalloc(sizeof *f->timer);
        uv_timer_init(f->loop, f->timer);
    }
    f->timer->data = f;
    f->creq = NULL;
    uv_timer_start(f->timer, on_timer, f->next.delay_ms, 0);
}

static void on_done(lm_client_req *creq, lm_client_err err, const lm_client_response *resp,
                    void *ud)
{
    (void)creq;
    fwd *f = ud;
    lm_req *req = f->req;
    f->creq = NULL;
    try_disarm(f);
    uint64_t now = uv_now(f->loop);
    if (f->retry_on_head) { /* on_head recorded the try and chose what follows */
        f->retry_on_head = false;
        if (f->next.index >= 0) {
            retry(f);
            return;
        }
        fwd_free(f); /* answered from the stale copy */
        return;
    }
    lm_outcome o = f->try_timed_out ? LM_OUT_TIMEOUT
                   : f->refused     ? LM_OUT_REFUSED
                                    : lm_policy_classify(err, resp);
    f->last = o;
    if (err == LM_CLIENT_OK) {
        lm_policy_finish(&f->call, o, now); /* the try and the call in one step */
        f->call_begun = false;
        if (f->stale_keep && f->status == 200) {
            char key[1200];
            if (stale_key(f, key, sizeof key))
                gw_stale_put(f->gw->stale, key, f->stale_ctype, f->stale.data, f->stale_head_len,
                             f->stale.data + f->stale_head_len, f->stale.len - f->stale_head_len,
                             now);
        }
        lm_resp_end(req);
        fwd_free(f);
        return;
    }
    lm_policy_try_done(&f->call, o, now);
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
                   f->try_timed_out ? "deadline spent" : lm_client_strerror(err));
        lm_resp_abort(req);
        fwd_free(f);
        return;
    }
    /* a body still arriving (up to RETRY_BODY_MAX) can be sent again once it is complete */
    bool body_pending = f->streaming && !f->body_done && !f->body_too_big;
    bool repeatable = !f->streaming || (f->body_done && !f->body_too_big) || body_pending;
    if (lm_policy_next(&f->call, o, 0, false, repeatable, f->set, f->gw->least_outstanding, now,
                       &f->next)) {
        if (body_pending) { /* decided; sent when on_req_end says the body is complete */
            f->await_body = true;
            if (f->req_paused) {
                f->req_paused = false;
                lm_req_resume_body(f->req);
            }
            return;
        }
        retry(f);
        return;
    }
    if (lm_outcome_failed(o) && answer_stale(f)) return;
    if (o == LM_OUT_REFUSED) { /* nothing was processed: the client may send it again */
        lm_problem p = {.status = 503,
                        .type = "urn:lotmesh:problem:upstream",
                        .detail = "the service's instance is shutting down and took no request; "
                                  "retry shortly"};
        lm_resp_header(req, "Retry-After", "1");
        f->status = 503;
        lm_resp_problem_full(req, &p);
        fwd_free(f);
        return;
    }
    char detail[256];
    int status = 502;
    if (o == LM_OUT_TIMEOUT || err == LM_CLIENT_ERR_QUEUE_TIMEOUT) status = 504;
    if (err == LM_CLIENT_ERR_QUEUE_FULL) status = 503;
    if (o == LM_OUT_TIMEOUT && lm_call_remaining(&f->call, now) == 0)
        snprintf(detail, sizeof detail, "%s: the request's deadline was spent", f->service);
    else
        snprintf(detail, sizeof detail, "%s: %s", f->service,
                 f->try_timed_out ? "no response in time" : lm_client_strerror(err));
    fail(f, status, detail);
    fwd_free(f);
}

/* The end of a retry's backoff. */
static void on_timer(uv_timer_t *t)
{
    fwd *f = t->data;
    if (f) send_upstream(f);
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

/* A retry that waited for the body cannot happen (the body failed or is too long to keep):
 * the retry's permission goes back and the client gets the failure. */
static void abandon_awaited_retry(fwd *f, int status, const char *detail)
{
    f->await_body = false;
    lm_policy_try_done(&f->call, LM_OUT_IGNORED, uv_now(f->loop));
    fail(f, status, detail);
    fwd_free(f);
}

static void on_req_data(lm_req *req, const char *data, size_t len, void *ud)
{
    fwd *f = ud;
    if (!f->body_too_big) { /* kept for a repeat */
        if (f->body.len + len > RETRY_BODY_MAX) {
            f->body_too_big = true;
            lm_buf_free(&f->body);
            if (f->await_body) {
                abandon_awaited_retry(f, 502,
                                      "the service failed and the request body is too "
                                      "long to send again");
                return;
            }
        } else {
            lm_buf_append(&f->body, data, len);
        }
    }
    if (f->creq && !lm_client_write(f->creq, data, len) && !f->req_paused) {
        f->req_paused = true;
        lm_req_pause_body(req);
    }
}

static void on_req_end(lm_req *req, int status, void *ud)
{
    (void)req;
    fwd *f = ud;
    if (status == 0) f->body_done = true;
    if (f->await_body) { /* the retry decided in on_done can go now, or not at all */
        if (status == 0) {
            f->await_body = false;
            retry(f);
        } else {
            abandon_awaited_retry(f, status, "request body failed");
        }
        return;
    }
    if (!f->creq) {
        if (status != 0) f->body_error = status;
        return;
    }
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
    uint64_t now = uv_now(f->loop);
    bool first = f->call.attempts <= 1;
    if (f->body_error) { /* the client's body failed while a retry waited */
        f->last = LM_OUT_IGNORED;
        lm_policy_try_done(&f->call, LM_OUT_IGNORED, now);
        fail(f, f->body_error, "request body failed");
        fwd_free(f);
        return;
    }
    /* without a service token the instance would refuse the call (401) for a fault of the
     * gateway's: answer the gateway's fault and send nothing */
    const char *tok = gw_clientauth_service_token(gw, req, f->service, &f->who);
    if (!tok) {
        lm_log(LM_LOG_ERROR, &(lm_log_ctx){.request_id = req->request_id, .trace = &req->trace},
               "minting a service token for %s failed", f->service);
        lm_policy_try_done(&f->call, LM_OUT_IGNORED, now);
        f->status = 500;
        lm_problem p = {.status = 500,
                        .type = "urn:lotmesh:problem:service-token",
                        .detail = "the gateway could not mint a service token"};
        lm_resp_problem_full(req, &p);
        fwd_free(f);
        return;
    }
    uint64_t try_ms = lm_call_try_timeout(&f->call, now);
    uint64_t left = lm_call_remaining(&f->call, now);
    if (try_ms == 0) {
        lm_policy_try_done(&f->call, LM_OUT_IGNORED, now);
        fail(f, 504, "the request's deadline was spent");
        fwd_free(f);
        return;
    }

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
            !strcasecmp(h->name, "x-request-id") ||
            (h->name_len == 17 && !strcasecmp(h->name, "x-request-timeout")) ||
            !strncasecmp(h->name, "x-forwarded-", 12))
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
    char budget[24];
    size_t budget_len = format_u64(budget, left);
    lm_outbound ob; /* each try is its own client span */
    n = lm_outbound_headers(&ob, req, tok, hs, n);
    hs[n++] = (lm_header){.name = "X-Forwarded-For", .value = lm_buf_cstr(&xff)};
    hs[n++] = (lm_header){.name = "X-Forwarded-Proto", .value = "http"};
    if (host) hs[n++] = (lm_header){.name = "X-Forwarded-Host", .value = host};
    hs[n++] = (lm_header){
        .name = "X-Request-Timeout", .value = budget, .name_len = 17, .value_len = budget_len};
    /* Host: the instance's authority, as the client would write it (given here, the client
     * skips formatting it) */
    char authority[300];
    size_t hl = strlen(in->host);
    if (hl < 256) {
        char *a = authority;
        bool v6 = memchr(in->host, ':', hl) != NULL;
        if (v6) *a++ = '[';
        memcpy(a, in->host, hl);
        a += hl;
        if (v6) *a++ = ']';
        *a = '\0';
        if (in->port != 80) {
            *a++ = ':';
            format_u64(a, (uint64_t)in->port);
        }
        hs[n++] = (lm_header){.name = "Host", .value = authority};
    }

    /* the first try streams the client's body; a repeat sends the copy kept meanwhile */
    bool stream = f->streaming && first;
    int64_t stream_length = -1; /* chunked unless the client gave a length */
    const char *cl = lm_req_header(req, "content-length");
    if (stream && cl) stream_length = strtoll(cl, NULL, 10);
    const void *body = NULL;
    size_t body_len = 0;
    if (!f->streaming && req->body_len) {
        body = req->body;
        body_len = req->body_len;
    } else if (f->streaming && !first) {
        body = f->body.data;
        body_len = f->body.len;
    }
    uint64_t connect_ms =
        gw->policy.connect_timeout_ms < try_ms ? gw->policy.connect_timeout_ms : try_ms;
    lm_client_opts o = {
        .method = req->method,
        .host = in->host,
        .port = in->port,
        .path = path,
        .headers = hs,
        .n_headers = n,
        .body = body,
        .body_len = body_len,
        .stream_body = stream,
        .stream_length = stream_length,
        .on_drain = on_upstream_drain,
        .connect_timeout_ms = connect_ms,
        .response_timeout_ms = left, /* the deadline; the per-try limit is the timer's */
        .on_head = on_head,
        .on_body = on_body,
        .on_done = on_done,
        .ud = f,
        .span = &ob.span, /* reported as a client span when sampled */
    };
    f->creq =
        lm_client_send(lm_workerclient_get(gw->upstreams, f->worker), &o); /* copies the headers */
    free(path);
    lm_buf_free(&xff);
    if (!f->creq) {
        lm_policy_try_done(&f->call, LM_OUT_IGNORED, now);
        fail(f, 400, "the request cannot be forwarded (malformed header or method)");
        fwd_free(f);
        return;
    }
    if (try_ms < left) /* a retry could follow: this try gets try_ms, not the whole budget */
        try_arm(f, now, try_ms);
    if (stream) lm_req_read_body(req, on_req_data, on_req_end, f);
}

/* A fast 503 before anything was sent upstream (the client may retry in a second); frees f.
 * A GET is answered from its last good answer instead when there is one. */
static void unavailable(fwd *f, const char *type, const char *detail)
{
    if (answer_stale(f)) return;
    lm_problem p = {.status = 503, .type = type, .detail = detail};
    lm_resp_header(f->req, "Retry-After", "1");
    f->status = 503;
    lm_resp_problem_full(f->req, &p);
    fwd_free(f);
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

/* The route's timeout: the longest GATEWAY_ROUTE_TIMEOUTS prefix of this service and path,
 * else UPSTREAM_TIMEOUT. */
static uint64_t route_timeout(const gateway *gw, const char *service, const lm_req *req)
{
    uint64_t ms = gw->policy.timeout_ms;
    size_t best = 0;
    const char *rest = "";
    size_t rest_len = 0;
    for (size_t i = 0; i < req->route.n_params; i++)
        if (!strcmp(req->route.params[i].name, "path")) {
            rest = req->route.params[i].raw;
            rest_len = req->route.params[i].raw_len;
        }
    for (size_t i = 0; i < gw->n_route_timeouts; i++) {
        const struct gw_route_timeout *t = &gw->route_timeouts[i];
        if (strcmp(t->service, service) != 0) continue;
        size_t pl = strlen(t->prefix);
        if (pl > rest_len || strncmp(rest, t->prefix, pl) != 0) continue;
        if (pl >= best) {
            best = pl;
            ms = t->ms;
        }
    }
    return ms;
}

/* Safe to repeat (DESIGN 3.8): GET, HEAD, PUT, DELETE, OPTIONS, or a request that carries an
 * Idempotency-Key. */
static bool repeat_safe(const lm_req *req)
{
    switch (req->method_id) {
    case LM_METHOD_GET:
    case LM_METHOD_HEAD:
    case LM_METHOD_PUT:
    case LM_METHOD_DELETE:
    case LM_METHOD_OPTIONS:
        return true;
    default:
        return req_header(req, "idempotency-key", 15) != NULL;
    }
}

/* After the limits: the policy's admission (circuits, bulkhead, deadline), an instance, send. */
static void forward(fwd *f)
{
    gateway *gw = f->gw;
    uint64_t now = uv_now(f->loop);
    f->set = lm_disc_instances(gw->reg, f->service);
    f->n_inst = f->set ? (int)lm_disc_set_count(f->set) : 0;
    if (f->n_inst == 0) {
        unavailable(f, "urn:lotmesh:problem:no-instance", "the service has no passing instance");
        return;
    }
    f->streaming = lm_req_streaming(f->req);
    switch (lm_policy_begin(policy_of(f), &f->call, now, f->deadline_ms, repeat_safe(f->req))) {
    case LM_POLICY_GO:
        break;
    case LM_POLICY_BULKHEAD:
        unavailable(f, "urn:lotmesh:problem:bulkhead-full",
                    "too many calls to the service in flight; retry shortly");
        return;
    case LM_POLICY_OPEN:
        unavailable(f, "urn:lotmesh:problem:circuit-open", "the service is failing; retry shortly");
        return;
    case LM_POLICY_DEADLINE:
        fail(f, 504, "the request's deadline was spent before it was sent");
        fwd_free(f);
        return;
    }
    f->call_begun = true;
    f->last = LM_OUT_IGNORED;
    f->chosen = lm_policy_pick(&f->call, f->set, gw->least_outstanding, now);
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
    f->loop = lm_req_loop(req);
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
    /* the deadline: the route's timeout, or less when the client asks for less; it runs from
     * here, through the rate limit's check, to the last byte of the answer */
    uint64_t budget = route_timeout(gw, name, req);
    const char *xrt = req_header(req, "x-request-timeout", 17);
    if (xrt) {
        uint64_t asked;
        if (!lm_policy_parse_timeout(xrt, &asked)) {
            lm_resp_problem(req, 400, "X-Request-Timeout must be a whole number of milliseconds");
            fwd_free(f);
            return;
        }
        if (asked < budget) budget = asked;
    }
    f->deadline_ms = uv_now(f->loop) + budget;
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
