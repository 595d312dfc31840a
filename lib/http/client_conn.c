/* client_conn.c — one client connection (lm_client_conn): connect (through the dnscache),
 * write, parse the response with llhttp, read, pause and resume, fail. See client_impl.h. */
#include "client_impl.h"

static void resume_list_remove(cconn *k);
static void conn_failed(cconn *k, lm_client_err err);

/* ---- connections: lifecycle ------------------------------------------------------------- */

void lm_client_conn_set_ref(cconn *k, bool on)
{
    if (k->ref_on == on) return;
    k->ref_on = on;
    if (on) {
        uv_ref((uv_handle_t *)&k->tcp);
        uv_ref((uv_handle_t *)&k->timer);
    } else {
        uv_unref((uv_handle_t *)&k->tcp);
        uv_unref((uv_handle_t *)&k->timer);
    }
}

static void conn_unref(cconn *k)
{
    if (--k->refs) return;
    lm_client *c = k->c;
    if (k->a_prev)
        k->a_prev->a_next = k->a_next;
    else
        c->conns = k->a_next;
    if (k->a_next) k->a_next->a_prev = k->a_prev;
    lm_buf_free(&k->out);
    lm_buf_free(&k->inflight);
    lm_buf_free(&k->pending_in);
    lm_buf_free(&k->held_body);
    lm_client_pool_origin_unref(k->o);
    free(k);
    c->live_conns--;
    lm_client_maybe_finalize(c);
}

static void on_conn_handle_closed(uv_handle_t *h)
{
    conn_unref(h->data);
}

/* Closes k (no request may be attached). pump: let queued requests use the freed slot. */
void lm_client_conn_close(cconn *k, bool pump)
{
    if (k->state == K_CLOSING) return;
    assert(k->req == NULL);
    origin *o = k->o;
    lm_client *c = k->c;
    if (k->state == K_IDLE) lm_client_pool_idle_remove(k);
    k->state = K_CLOSING;
    resume_list_remove(k);
    o->n_conns--;
    STAT_SUB(c, conns_open, 1);
    if (k->gai_active) uv_cancel((uv_req_t *)&k->gai); /* its callback still comes */
    uv_close((uv_handle_t *)&k->tcp, on_conn_handle_closed);
    uv_close((uv_handle_t *)&k->timer, on_conn_handle_closed);
    if (pump) lm_client_pool_origin_pump(o);
}

static void buf_trim(lm_buf *b)
{
    if (b->cap > KEEP_BUF)
        lm_buf_free(b);
    else
        lm_buf_reset(b);
}

static void pool_put(cconn *k)
{
    lm_client *c = k->c;
    origin *o = k->o;
    buf_trim(&k->out); /* one large upload must not pin its buffers for the pool's life */
    buf_trim(&k->inflight);
    buf_trim(&k->pending_in);
    buf_trim(&k->held_body);
    k->req = NULL;
    k->state = K_IDLE;
    uv_timer_stop(&k->timer);
    lm_client_conn_set_ref(k, false);
    k->idle_since = uv_now(c->loop);
    k->o_prev = NULL;
    k->o_next = o->idle;
    if (o->idle) o->idle->o_prev = k;
    o->idle = k;
    k->g_next = NULL;
    k->g_prev = c->idle_tail;
    if (c->idle_tail)
        c->idle_tail->g_next = k;
    else
        c->idle_head = k;
    c->idle_tail = k;
    o->n_idle++;
    STAT_ADD(c, conns_idle, 1);
    if (!uv_is_active((uv_handle_t *)&c->idle_timer))
        uv_timer_start(&c->idle_timer, lm_client_pool_on_idle_timer, c->cfg.idle_timeout_ms, 0);
    lm_client_conn_update_reading(k); /* an idle connection reads to notice the server closing it */
}

/* Detaches the request from its connection (k->req, r->k). */
void lm_client_conn_detach(cconn *k, creq *r)
{
    k->req = NULL;
    r->k = NULL;
    r->state = R_NEW;
}

/* ---- connections: failing and resuming ------------------------------------------------ */

void lm_client_conn_resume_later(cconn *k)
{
    lm_client *c = k->c;
    if (k->resume_queued) return;
    k->resume_queued = true;
    k->resume_next = NULL;
    if (c->resume_tail)
        c->resume_tail->resume_next = k;
    else
        c->resume_head = k;
    c->resume_tail = k;
    lm_client_defer_start(c);
}

static void resume_list_remove(cconn *k)
{
    lm_client *c = k->c;
    if (!k->resume_queued) return;
    cconn *prev = NULL;
    for (cconn *x = c->resume_head; x; prev = x, x = x->resume_next) {
        if (x != k) continue;
        if (prev)
            prev->resume_next = k->resume_next;
        else
            c->resume_head = k->resume_next;
        if (c->resume_tail == k) c->resume_tail = prev;
        break;
    }
    k->resume_next = NULL;
    k->resume_queued = false;
}

/* Sends r again on a fresh connection to its origin, once (k is detached from r already). */
static void resend(cconn *k, creq *r, const char *why)
{
    lm_client *c = k->c;
    origin *o = k->o;
    lm_client_conn_close(k, false);
    r->retried = true;
    STAT_ADD(c, retries, 1);
    lm_log_debug("http client: %s:%d %s; sending the request again on a fresh connection", o->host,
                 o->port, why);
    lm_client_conn_new(o, r); /* takes the slot just freed, ahead of the queue */
    lm_client_pool_origin_pump(o);
}

static void conn_failed(cconn *k, lm_client_err err)
{
    creq *r = k->req;
    lm_client *c = k->c;
    if (!r) {
        lm_client_conn_close(k, true);
        return;
    }
    if (r->abort_pending) err = r->abort_err;
    lm_client_conn_detach(k, r);
    if (err == LM_CLIENT_ERR_CLOSED && !k->any_bytes && r->reused && r->retriable && !r->retried &&
        !r->abort_pending && !c->closing) {
        resend(k, r, "closed a pooled connection as it was reused");
        return;
    }
    lm_client_conn_close(k, true);
    lm_client_req_complete(r, err);
}

/* Same, from code the user called (no callbacks allowed there). */
void lm_client_conn_failed_later(cconn *k, lm_client_err err)
{
    creq *r = k->req;
    if (!r) {
        lm_client_conn_close(k, true);
        return;
    }
    lm_client_conn_detach(k, r);
    lm_client_conn_close(k, true);
    lm_client_req_fail_later(r, err);
}

/* ---- writing ---------------------------------------------------------------------------- */

static bool req_sent(const cconn *k, const creq *r)
{
    return (!r->stream || r->ended) && !k->writing && k->out.len == 0;
}

size_t lm_client_conn_req_buffered(const creq *r)
{
    if (r->k && r->state == R_ACTIVE) return (r->k->writing ? r->k->write_len : 0) + r->k->out.len;
    return r->wire.len;
}

static void on_write(uv_write_t *w, int status);

/* Hands k->out to libuv (nothing may be in flight). False: the connection is broken. */
static bool conn_write_out(cconn *k)
{
    lm_buf tmp = k->inflight; /* swap: new output keeps accumulating in k->out */
    k->inflight = k->out;
    k->out = tmp;
    lm_buf_reset(&k->out);
    uv_buf_t b = uv_buf_init(k->inflight.data, (unsigned)k->inflight.len);
    k->wreq.data = k;
    if (uv_write(&k->wreq, (uv_stream_t *)&k->tcp, &b, 1, on_write) != 0) return false;
    k->writing = true;
    k->write_len = k->inflight.len;
    return true;
}

/* Writes what the socket takes now; the rest goes through k->out and uv_write. Trying first
 * matters beyond saving a copy: a uv_write that completes at once still reports on the next
 * loop turn, and a response read before that would find the request "not yet sent" and
 * close a connection that could have been pooled. False: the connection is broken. */
bool lm_client_conn_sendv(cconn *k, uv_buf_t *bufs, unsigned n)
{
    size_t done = 0;
    if (!k->writing && k->out.len == 0) {
        int w = uv_try_write((uv_stream_t *)&k->tcp, bufs, n);
        if (w < 0 && w != UV_EAGAIN) return false;
        done = w > 0 ? (size_t)w : 0;
    }
    for (unsigned i = 0; i < n; i++) {
        if (done >= bufs[i].len) {
            done -= bufs[i].len;
            continue;
        }
        lm_buf_append(&k->out, bufs[i].base + done, bufs[i].len - done);
        done = 0;
    }
    if (k->writing || k->out.len == 0) return true;
    return conn_write_out(k);
}

static void on_write(uv_write_t *w, int status)
{
    cconn *k = w->data;
    k->writing = false;
    k->write_len = 0;
    lm_buf_reset(&k->inflight);
    if (k->state == K_CLOSING || !k->req) return;
    creq *r = k->req;
    if (status < 0) {
        conn_failed(k, LM_CLIENT_ERR_CLOSED);
        return;
    }
    if (k->out.len && !conn_write_out(k)) {
        conn_failed(k, LM_CLIENT_ERR_CLOSED);
        return;
    }
    if (r->want_drain && !k->writing && r->on_drain) {
        r->want_drain = false;
        if (!lm_client_call_drain(r)) conn_failed(k, r->abort_err);
    }
}

/* ---- response parsing ------------------------------------------------------------------- */

static cconn *conn_of(llhttp_t *p)
{
    return p->data;
}

static int fail_parse(cconn *k, lm_client_err err)
{
    k->fail_err = err;
    return HPE_USER;
}

static int p_message_begin(llhttp_t *p)
{
    cconn *k = conn_of(p);
    creq *r = k->req;
    lm_buf_reset(&r->rhead);
    r->n_h = 0;
    r->head_bytes = 0;
    r->in_field = false;
    k->informational = false;
    return 0;
}

static int count_head(cconn *k, creq *r, size_t n)
{
    r->head_bytes += n;
    if (r->head_bytes > k->c->cfg.max_response_head) return fail_parse(k, LM_CLIENT_ERR_TOO_LARGE);
    return 0;
}

static int p_status(llhttp_t *p, const char *at, size_t len)
{
    cconn *k = conn_of(p);
    return count_head(k, k->req, len);
}

static int p_header_field(llhttp_t *p, const char *at, size_t len)
{
    cconn *k = conn_of(p);
    creq *r = k->req;
    if (r->have_head) return 0; /* trailers: ignored */
    if (!r->in_field) {
        if (r->n_h >= MAX_HEADERS) return fail_parse(k, LM_CLIENT_ERR_TOO_LARGE);
        if (r->n_h == r->cap_h) {
            r->cap_h = r->cap_h ? r->cap_h * 2 : 16;
            r->hoffs = lm_xrealloc(r->hoffs, r->cap_h * sizeof *r->hoffs);
        }
        hdr_off *h = &r->hoffs[r->n_h++];
        memset(h, 0, sizeof *h);
        h->name_off = r->rhead.len;
        r->in_field = true;
    }
    r->hoffs[r->n_h - 1].name_len += len;
    lm_buf_append(&r->rhead, at, len);
    return count_head(k, r, len + 4);
}

static int p_header_field_complete(llhttp_t *p)
{
    creq *r = conn_of(p)->req;
    if (r->have_head) return 0;
    lm_buf_append_char(&r->rhead, '\0');
    r->hoffs[r->n_h - 1].value_off = r->rhead.len;
    return 0;
}

static int p_header_value(llhttp_t *p, const char *at, size_t len)
{
    cconn *k = conn_of(p);
    creq *r = k->req;
    if (r->have_head) return 0;
    r->hoffs[r->n_h - 1].value_len += len;
    lm_buf_append(&r->rhead, at, len);
    return count_head(k, r, len);
}

static int p_header_value_complete(llhttp_t *p)
{
    creq *r = conn_of(p)->req;
    if (r->have_head) return 0;
    lm_buf_append_char(&r->rhead, '\0');
    r->in_field = false;
    return 0;
}

static int p_headers_complete(llhttp_t *p)
{
    cconn *k = conn_of(p);
    creq *r = k->req;
    int status = llhttp_get_status_code(p);
    if (status >= 100 && status < 200) {
        if (status == 101) return fail_parse(k, LM_CLIENT_ERR_PROTOCOL); /* never asked */
        k->informational = true; /* 100 Continue, 103 Early Hints: skipped */
        return 0;
    }
    if (llhttp_get_http_major(p) != 1) return fail_parse(k, LM_CLIENT_ERR_PROTOCOL);
    /* 408: the server says it did not receive a complete request (RFC 9110 15.5.9) — a
     * draining lotmesh server sends it on its idle keep-alive connections, where a request
     * may cross it. Nothing was processed, so the request goes again on a fresh connection,
     * whatever its method, when its bytes were kept (not streamed). */
    if (status == 408 && !r->stream && !r->retried && !r->abort_pending && !k->c->closing) {
        k->refused = true;
        return HPE_USER;
    }
    r->hdrs = lm_xrealloc(r->hdrs, (r->n_h ? r->n_h : 1) * sizeof *r->hdrs);
    for (size_t i = 0; i < r->n_h; i++) {
        r->hdrs[i].name = r->rhead.data + r->hoffs[i].name_off;
        r->hdrs[i].name_len = r->hoffs[i].name_len;
        r->hdrs[i].value = r->rhead.data + r->hoffs[i].value_off;
        r->hdrs[i].value_len = r->hoffs[i].value_len;
    }
    r->have_head = true;
    r->resp.status = status;
    r->resp.http_minor = llhttp_get_http_minor(p);
    r->resp.headers = r->hdrs;
    r->resp.n_headers = r->n_h;
    bool no_body = r->is_head || status == 204 || status == 304;
    if (!no_body && !r->on_body && (p->flags & F_CONTENT_LENGTH) && p->content_length > r->max_body)
        return fail_parse(k, LM_CLIENT_ERR_TOO_LARGE);
    if (r->on_head && !lm_client_call_head(r)) return HPE_USER;
    if (no_body) return 1; /* llhttp cannot know about HEAD; 204/304 for good measure */
    if (r->paused) return HPE_PAUSED;
    return 0;
}

static int p_body(llhttp_t *p, const char *at, size_t len)
{
    cconn *k = conn_of(p);
    creq *r = k->req;
    if (!r->on_body) {
        if (r->body.len + len > r->max_body) return fail_parse(k, LM_CLIENT_ERR_TOO_LARGE);
        lm_buf_append(&r->body, at, len);
        return 0;
    }
    if (r->paused) { /* cannot happen by the rules above; hold it rather than lose it */
        lm_buf_append(&k->held_body, at, len);
        return HPE_PAUSED;
    }
    if (!lm_client_call_body(r, at, len)) return HPE_USER;
    return r->paused ? HPE_PAUSED : 0;
}

static int p_message_complete(llhttp_t *p)
{
    cconn *k = conn_of(p);
    if (k->informational) {
        k->informational = false;
        return 0; /* the final response follows */
    }
    k->msg_complete = true;
    k->keep_alive = llhttp_should_keep_alive(p);
    return HPE_PAUSED; /* completion runs outside the parser */
}

static llhttp_settings_t settings;
static uv_once_t settings_once = UV_ONCE_INIT;

static void settings_init(void)
{
    llhttp_settings_init(&settings);
    settings.on_message_begin = p_message_begin;
    settings.on_status = p_status;
    settings.on_header_field = p_header_field;
    settings.on_header_field_complete = p_header_field_complete;
    settings.on_header_value = p_header_value;
    settings.on_header_value_complete = p_header_value_complete;
    settings.on_headers_complete = p_headers_complete;
    settings.on_body = p_body;
    settings.on_message_complete = p_message_complete;
}

/* The response on k is complete: pool or close the connection, then tell the caller. */
static void finish_success(cconn *k)
{
    creq *r = k->req;
    origin *o = k->o;
    bool reusable = k->keep_alive && req_sent(k, r) && k->pending_in.len == 0 && !k->c->closing;
    lm_client_conn_detach(k, r);
    if (reusable) {
        pool_put(k);
        lm_client_pool_origin_pump(o);
    } else {
        lm_client_conn_close(k, true);
    }
    lm_client_req_complete(r, LM_CLIENT_OK);
}

/* Parses input for k's request. Returns true when more input is wanted. */
static bool conn_parse(cconn *k, const char *data, size_t len)
{
    creq *r = k->req;
    if (r->paused || k->pending_in.len || k->held_body.len || k->complete_held) {
        lm_buf_append(&k->pending_in, data, len);
        return false;
    }
    llhttp_errno_t e = llhttp_execute(&k->parser, data, len);
    if (e == HPE_OK) return true;
    if (e == HPE_PAUSED) {
        const char *pos = llhttp_get_error_pos(&k->parser);
        size_t used = pos ? (size_t)(pos - data) : len;
        if (used > len) used = len;
        llhttp_resume(&k->parser);
        if (k->msg_complete) {
            if (used < len) k->keep_alive = false; /* bytes after a response: unusable */
            if (r->paused) {
                k->complete_held = true;
                return false;
            }
            finish_success(k);
            return false;
        }
        lm_buf_append(&k->pending_in, data + used, len - used); /* user pause */
        return false;
    }
    if (k->refused && !r->abort_pending) {
        lm_client_conn_detach(k, r);
        resend(k, r, "answered 408 (the request was not taken)");
        return false;
    }
    /* a callback's own verdict wins, whatever errno llhttp wraps it in */
    lm_client_err err = LM_CLIENT_ERR_PROTOCOL;
    if (r->abort_pending)
        err = r->abort_err;
    else if (k->fail_err)
        err = k->fail_err;
    lm_client_conn_detach(k, r);
    lm_client_conn_close(k, true);
    lm_client_req_complete(r, err);
    return false;
}

/* Runs from the loop (deferred): tells a streaming uploader that its output drained, then
 * delivers what a pause held back and reads on. */
void lm_client_conn_resume_work(cconn *k)
{
    creq *r = k->req;
    if (k->state != K_ACTIVE || !r) return;
    if (r->want_drain && !k->writing && !k->out.len && r->on_drain) {
        r->want_drain = false;
        if (!lm_client_call_drain(r)) {
            conn_failed(k, r->abort_err);
            return;
        }
        if (k->req != r || k->state != K_ACTIVE) return;
    }
    if (r->paused) return;
    if (k->held_body.len) {
        lm_buf held = k->held_body;
        k->held_body = (lm_buf)LM_BUF_INIT;
        bool ok = lm_client_call_body(r, held.data, held.len);
        lm_buf_free(&held);
        if (!ok) {
            conn_failed(k, r->abort_err);
            return;
        }
        if (r->paused) return;
    }
    if (k->complete_held) {
        k->complete_held = false;
        finish_success(k);
        return;
    }
    /* Always re-enter the parser, with no bytes if none are held: a pause on the last piece
     * of a body (or in on_head of an empty one) leaves llhttp one step short of the message
     * end, a step that needs no input. */
    lm_buf in = k->pending_in;
    k->pending_in = (lm_buf)LM_BUF_INIT;
    bool more = conn_parse(k, in.data ? in.data : "", in.len);
    lm_buf_free(&in);
    if (more) lm_client_conn_update_reading(k);
}

/* ---- reading ---------------------------------------------------------------------------- */

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    cconn *k = h->data;
    (void)suggested;
    /* libuv calls read_cb before the next alloc on this loop: one buffer per client */
    *buf = uv_buf_init(k->c->readbuf, READ_BUF_SIZE);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    cconn *k = s->data;
    if (k->state == K_CLOSING || nread == 0) return;
    creq *r = k->req;
    if (nread > 0) {
        if (k->state != K_ACTIVE || !r) {
            lm_client_conn_close(k, true); /* bytes nobody asked for */
            return;
        }
        k->any_bytes = true;
        if (!conn_parse(k, buf->base, (size_t)nread)) lm_client_conn_update_reading(k);
        return;
    }
    if (k->state != K_ACTIVE || !r) {
        lm_client_conn_close(k, true); /* the server closed an idle connection */
        return;
    }
    if (nread == UV_EOF) {
        /* a close-delimited body ends here; llhttp_finish calls on_message_complete */
        llhttp_finish(&k->parser);
        if (k->msg_complete) {
            k->keep_alive = false;
            if (r->paused) {
                k->complete_held = true;
                lm_client_conn_update_reading(k);
                return;
            }
            finish_success(k);
            return;
        }
    }
    conn_failed(k, LM_CLIENT_ERR_CLOSED);
}

void lm_client_conn_update_reading(cconn *k)
{
    if (k->state == K_CLOSING || k->state == K_CONNECTING) return;
    bool want = true;
    if (k->state == K_ACTIVE) {
        creq *r = k->req;
        want = r && !r->paused && !k->pending_in.len && !k->held_body.len && !k->complete_held &&
               !k->msg_complete;
    }
    if (want && !k->reading) {
        if (uv_read_start((uv_stream_t *)&k->tcp, on_alloc, on_read) == 0) k->reading = true;
    } else if (!want && k->reading) {
        uv_read_stop((uv_stream_t *)&k->tcp);
        k->reading = false;
    }
}

/* ---- lm_client_conn_dispatch and connect
 * --------------------------------------------------------------- */

static void on_conn_timer(uv_timer_t *t)
{
    cconn *k = t->data;
    if (k->state == K_CLOSING) return;
    if (k->state == K_CONNECTING) {
        if (k->by_name) lm_dnscache_forget(k->c->dns, k->o->host);
        creq *r = k->req;
        if (r) {
            lm_client_conn_detach(k, r);
            lm_client_conn_close(k, true);
            lm_client_req_complete(r, LM_CLIENT_ERR_CONNECT_TIMEOUT);
        } else {
            lm_client_conn_close(k, true);
        }
        return;
    }
    if (k->state == K_ACTIVE) conn_failed(k, LM_CLIENT_ERR_RESPONSE_TIMEOUT);
}

/* Sends r on the connected k. Called from user-reachable paths: never calls back. */
void lm_client_conn_dispatch(cconn *k, creq *r)
{
    lm_client *c = k->c;
    k->req = r;
    r->k = k;
    r->state = R_ACTIVE;
    k->state = K_ACTIVE;
    lm_client_conn_set_ref(k, true);
    llhttp_init(&k->parser, HTTP_RESPONSE, &settings);
    k->parser.data = k;
    k->any_bytes = k->msg_complete = k->informational = k->complete_held = k->refused = false;
    k->keep_alive = false;
    k->fail_err = LM_CLIENT_OK;
    lm_buf_reset(&k->out);
    r->reused = k->requests > 0;
    if (r->reused) STAT_ADD(c, reuses, 1);
    k->requests++;
    if (r->response_to != LM_CLIENT_NO_TIMEOUT)
        uv_timer_start(&k->timer, on_conn_timer, r->response_to, 0);
    else
        uv_timer_stop(&k->timer);
    lm_client_conn_update_reading(k);
    uv_buf_t wb = uv_buf_init(r->wire.data, (unsigned)r->wire.len);
    if (r->wire.len && !lm_client_conn_sendv(k, &wb, 1)) {
        bool nothing_sent = k->out.len == 0 || k->out.len == r->wire.len;
        if (r->reused && !r->retried && (r->retriable || (!r->stream && nothing_sent))) {
            /* the pooled connection is already dead: an idempotent request goes again, any
             * other only when not a byte of it went out — then it certainly was not processed
             * (nginx retries a POST only before request_sent) */
            lm_client_conn_detach(k, r);
            lm_client_conn_close(k, false);
            r->retried = true;
            STAT_ADD(c, retries, 1);
            lm_client_conn_new(r->o, r);
            return;
        }
        lm_client_conn_failed_later(k, LM_CLIENT_ERR_CLOSED);
        return;
    }
    /* all of it went out at once: no write callback will announce the drain */
    if (r->want_drain && !k->writing) lm_client_conn_resume_later(k);
}

static void on_connect(uv_connect_t *cr, int status)
{
    cconn *k = cr->data;
    if (status == UV_ECANCELED || k->state == K_CLOSING) return;
    uv_timer_stop(&k->timer);
    creq *r = k->req;
    if (status < 0) {
        /* a cached address may be stale: the next connection asks the resolver again */
        if (k->by_name) lm_dnscache_forget(k->c->dns, k->o->host);
        if (r) lm_client_conn_detach(k, r);
        lm_client_conn_close(k, true);
        if (r) lm_client_req_complete(r, LM_CLIENT_ERR_CONNECT);
        return;
    }
    uv_tcp_nodelay(&k->tcp, 1);
    if (r) {
        lm_client_conn_dispatch(k, r);
    } else { /* its request was cancelled while connecting: serve the next one */
        pool_put(k);
        lm_client_pool_origin_pump(k->o);
    }
}

static bool connect_start(cconn *k, const struct sockaddr *sa)
{
    k->connect_req.data = k;
    return uv_tcp_connect(&k->connect_req, &k->tcp, sa, on_connect) == 0;
}

static void on_resolved(uv_getaddrinfo_t *g, int status, struct addrinfo *res)
{
    cconn *k = g->data;
    k->gai_active = false;
    if (k->state == K_CLOSING) {
        if (res) uv_freeaddrinfo(res);
        conn_unref(k);
        return;
    }
    conn_unref(k); /* not the last ref: the handles are open */
    creq *r = k->req;
    const struct addrinfo *pick_ai = NULL;
    for (const struct addrinfo *ai = status == 0 ? res : NULL; ai; ai = ai->ai_next) {
        if (ai->ai_family == AF_INET) { /* IPv4 first: no happy-eyeballs fallback here */
            pick_ai = ai;
            break;
        }
        if (ai->ai_family == AF_INET6 && !pick_ai) pick_ai = ai;
    }
    if (pick_ai)
        lm_dnscache_put(k->c->dns, k->o->host, pick_ai->ai_addr, uv_now(k->c->loop));
    else if (status == UV_EAI_NONAME || status == UV_EAI_NODATA || status == 0)
        lm_dnscache_put_negative(k->c->dns, k->o->host, uv_now(k->c->loop)); /* not transient */
    bool ok = pick_ai && connect_start(k, pick_ai->ai_addr);
    if (res) uv_freeaddrinfo(res);
    if (ok) return;
    uv_timer_stop(&k->timer);
    if (r) lm_client_conn_detach(k, r);
    lm_client_conn_close(k, true);
    if (r) lm_client_req_complete(r, pick_ai ? LM_CLIENT_ERR_CONNECT : LM_CLIENT_ERR_RESOLVE);
}

/* Opens a connection for r (which is not queued anywhere). Never calls back. */
void lm_client_conn_new(origin *o, creq *r)
{
    lm_client *c = o->c;
    cconn *k = lm_xcalloc(1, sizeof *k);
    k->c = c;
    k->o = o;
    k->a_next = c->conns;
    if (c->conns) c->conns->a_prev = k;
    c->conns = k;
    o->refs++;
    o->n_conns++;
    c->live_conns++;
    STAT_ADD(c, connects, 1);
    STAT_ADD(c, conns_open, 1);
    uv_tcp_init(c->loop, &k->tcp);
    uv_timer_init(c->loop, &k->timer);
    k->tcp.data = k->timer.data = k;
    k->refs = 2;
    k->ref_on = true;
    k->state = K_CONNECTING;
    k->req = r;
    r->k = k;
    r->state = R_CONNECTING;
    if (r->connect_to != LM_CLIENT_NO_TIMEOUT)
        uv_timer_start(&k->timer, on_conn_timer, r->connect_to, 0);
    bool ok;
    lm_client_err err = LM_CLIENT_ERR_CONNECT;
    struct sockaddr_storage cached;
    lm_dnscache_result dr =
        o->numeric ? LM_DNS_MISS : lm_dnscache_get(c->dns, o->host, uv_now(c->loop), &cached);
    k->by_name = !o->numeric;
    if (o->numeric) {
        ok = connect_start(k, (const struct sockaddr *)&o->addr);
    } else if (dr == LM_DNS_HIT) {
        STAT_ADD(c, resolve_cache_hits, 1);
        if (cached.ss_family == AF_INET)
            ((struct sockaddr_in *)&cached)->sin_port = htons((uint16_t)o->port);
        else
            ((struct sockaddr_in6 *)&cached)->sin6_port = htons((uint16_t)o->port);
        ok = connect_start(k, (const struct sockaddr *)&cached);
    } else if (dr == LM_DNS_NEGATIVE) {
        STAT_ADD(c, resolve_cache_hits, 1);
        ok = false;
        err = LM_CLIENT_ERR_RESOLVE;
    } else {
        STAT_ADD(c, resolves, 1);
        char port[8];
        snprintf(port, sizeof port, "%d", o->port);
        struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_protocol = IPPROTO_TCP};
        k->gai.data = k;
        ok = uv_getaddrinfo(c->loop, &k->gai, on_resolved, o->host, port, &hints) == 0;
        if (ok) {
            k->gai_active = true;
            k->refs++;
        } else {
            err = LM_CLIENT_ERR_RESOLVE;
        }
    }
    if (!ok) {
        lm_client_conn_detach(k, r);
        lm_client_conn_close(k, false);
        lm_client_req_fail_later(r, err);
    }
}

void lm_client_conn_init(void)
{
    uv_once(&settings_once, settings_init);
}
