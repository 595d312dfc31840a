/* rmq.c — see rmq.h. The only file that calls rabbitmq-c (amqp_*). */
#include "rmq.h"

#include "log.h"

#include <amqp.h>
#include <amqp_tcp_socket.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#define CHANNEL      1
#define HEARTBEAT_S  10
#define IO_TIMEOUT_S 5
/* declaring and consuming a quorum queue waits for its leader: after a broker restart on a
 * busy machine that takes longer than a connect should */
#define RPC_TIMEOUT_S  30
#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000
#define SEEN_SLOTS     8192
#define GEN_SHIFT      48
#define DTAG_MASK      ((UINT64_C(1) << GEN_SHIFT) - 1)

typedef struct msg {
    struct msg *next;
    uint64_t seq;
    uint64_t dtag; /* delivery tag on the current connection, once sent */
    int state;     /* 0 unconfirmed, 1 confirmed, 2 failed */
    bool returned;
    char *key, *id, *tp, *body;
    size_t len;
} msg;

typedef struct msgq {
    msg *head, *tail;
    size_t n;
} msgq;

typedef struct settle {
    uint64_t tag;
    lm_rmq_verdict v;
} settle;

struct lm_rmq {
    lm_amqp_url url;
    lm_rmq_opts o;
    char *service;
    char **bindings;
    size_t n_bindings;
    char queue[300], dlq[300];

    pthread_t thread;
    int wakefd;
    atomic_bool stopping;

    pthread_mutex_t mu; /* guards everything below */
    lm_rmq_stats st;
    char why[256];          /* why the link is not connected, "" when it is */
    msgq pending;           /* publisher: submitted, not sent on this connection */
    lm_rmq_result *results; /* publisher: settled, not taken */
    size_t n_results, cap_results;
    lm_rmq_delivery **dels; /* consumer: received, not taken */
    size_t n_dels, cap_dels;
    settle *settles; /* consumer: verdicts not yet sent */
    size_t n_settles, cap_settles;

    /* link thread only */
    struct {
        uint64_t hash;
        unsigned count;
    } * seen; /* consumer on a classic queue: deliveries seen per message id */
    amqp_connection_state_t conn;
    uint64_t gen;
    uint64_t next_dtag;
    msgq inflight;
    char last_err[256];
};

/* ---- small helpers ---- */

static char *dupn(const char *s, size_t n)
{
    char *p = malloc(n + 1);
    if (!p) return NULL;
    if (n) memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

static char *dups(const char *s)
{
    return s ? dupn(s, strlen(s)) : NULL;
}

static void msg_free(msg *m)
{
    if (!m) return;
    free(m->key);
    free(m->id);
    free(m->tp);
    free(m->body);
    free(m);
}

static void q_push(msgq *q, msg *m)
{
    m->next = NULL;
    if (q->tail)
        q->tail->next = m;
    else
        q->head = m;
    q->tail = m;
    q->n++;
}

static msg *q_pop(msgq *q)
{
    msg *m = q->head;
    if (m) {
        q->head = m->next;
        if (!q->head) q->tail = NULL;
        q->n--;
        m->next = NULL;
    }
    return m;
}

/* Puts all of src in front of dst (src emptied). */
static void q_prepend(msgq *dst, msgq *src)
{
    if (!src->head) return;
    src->tail->next = dst->head;
    if (!dst->head) dst->tail = src->tail;
    dst->head = src->head;
    dst->n += src->n;
    src->head = src->tail = NULL;
    src->n = 0;
}

static void q_clear(msgq *q)
{
    msg *m;
    while ((m = q_pop(q)))
        msg_free(m);
}

static void wake(lm_rmq *a)
{
    uint64_t one = 1;
    ssize_t r = write(a->wakefd, &one, sizeof one);
    (void)r;
}

static void drain_wake(lm_rmq *a)
{
    uint64_t v;
    ssize_t r = read(a->wakefd, &v, sizeof v);
    (void)r;
}

static void notify(lm_rmq *a)
{
    if (a->o.notify) a->o.notify(a->o.notify_arg);
}

static bool grow(void **arr, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap) return true;
    size_t nc = *cap ? *cap * 2 : 64;
    while (nc < need)
        nc *= 2;
    void *p = realloc(*arr, nc * elem);
    if (!p) return false;
    *arr = p;
    *cap = nc;
    return true;
}

static void set_err_reply(lm_rmq *a, const char *what, amqp_rpc_reply_t r)
{
    switch (r.reply_type) {
    case AMQP_RESPONSE_NORMAL:
        snprintf(a->last_err, sizeof a->last_err, "%s: ok", what);
        break;
    case AMQP_RESPONSE_NONE:
        snprintf(a->last_err, sizeof a->last_err, "%s: no reply", what);
        break;
    case AMQP_RESPONSE_LIBRARY_EXCEPTION:
        snprintf(a->last_err, sizeof a->last_err, "%s: %s", what,
                 amqp_error_string2(r.library_error));
        break;
    case AMQP_RESPONSE_SERVER_EXCEPTION:
        if (r.reply.id == AMQP_CONNECTION_CLOSE_METHOD) {
            amqp_connection_close_t *c = r.reply.decoded;
            snprintf(a->last_err, sizeof a->last_err, "%s: broker closed the connection: %u %.*s",
                     what, c->reply_code, (int)c->reply_text.len, (char *)c->reply_text.bytes);
        } else if (r.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
            amqp_channel_close_t *c = r.reply.decoded;
            snprintf(a->last_err, sizeof a->last_err, "%s: broker closed the channel: %u %.*s",
                     what, c->reply_code, (int)c->reply_text.len, (char *)c->reply_text.bytes);
        } else {
            snprintf(a->last_err, sizeof a->last_err, "%s: broker error (method 0x%08x)", what,
                     (unsigned)r.reply.id);
        }
        break;
    }
}

static bool ok_reply(lm_rmq *a, const char *what)
{
    amqp_rpc_reply_t r = amqp_get_rpc_reply(a->conn);
    if (r.reply_type == AMQP_RESPONSE_NORMAL) return true;
    set_err_reply(a, what, r);
    return false;
}

/* ---- connection ---- */

static void disconnect(lm_rmq *a, bool polite)
{
    if (!a->conn) return;
    if (polite) {
        amqp_channel_close(a->conn, CHANNEL, AMQP_REPLY_SUCCESS);
        amqp_connection_close(a->conn, AMQP_REPLY_SUCCESS);
    }
    amqp_destroy_connection(a->conn);
    a->conn = NULL;
}

static int declare_consumer(lm_rmq *a)
{
    amqp_connection_state_t c = a->conn;
    amqp_exchange_declare(c, CHANNEL, amqp_cstring_bytes(LM_RMQ_DLX), amqp_cstring_bytes("direct"),
                          0, 1, 0, 0, amqp_empty_table);
    if (!ok_reply(a, "declaring " LM_RMQ_DLX)) return -1;
    amqp_queue_declare(c, CHANNEL, amqp_cstring_bytes(a->dlq), 0, 1, 0, 0, amqp_empty_table);
    if (!ok_reply(a, "declaring the dead-letter queue")) return -1;
    amqp_queue_bind(c, CHANNEL, amqp_cstring_bytes(a->dlq), amqp_cstring_bytes(LM_RMQ_DLX),
                    amqp_cstring_bytes(a->service), amqp_empty_table);
    if (!ok_reply(a, "binding the dead-letter queue")) return -1;
    amqp_table_entry_t args[4];
    int n = 0;
    args[n].key = amqp_cstring_bytes("x-dead-letter-exchange");
    args[n].value.kind = AMQP_FIELD_KIND_UTF8;
    args[n++].value.value.bytes = amqp_cstring_bytes(LM_RMQ_DLX);
    args[n].key = amqp_cstring_bytes("x-dead-letter-routing-key");
    args[n].value.kind = AMQP_FIELD_KIND_UTF8;
    args[n++].value.value.bytes = amqp_cstring_bytes(a->service);
    if (a->o.quorum) {
        args[n].key = amqp_cstring_bytes("x-queue-type");
        args[n].value.kind = AMQP_FIELD_KIND_UTF8;
        args[n++].value.value.bytes = amqp_cstring_bytes("quorum");
        args[n].key = amqp_cstring_bytes("x-delivery-limit");
        args[n].value.kind = AMQP_FIELD_KIND_I64;
        args[n++].value.value.i64 = (int64_t)a->o.delivery_limit;
    }
    amqp_table_t t = {.num_entries = n, .entries = args};
    amqp_queue_declare(c, CHANNEL, amqp_cstring_bytes(a->queue), 0, 1, 0, 0, t);
    if (!ok_reply(a, "declaring the queue")) return -1;
    for (size_t i = 0; i < a->n_bindings; i++) {
        amqp_queue_bind(c, CHANNEL, amqp_cstring_bytes(a->queue),
                        amqp_cstring_bytes(LM_RMQ_EXCHANGE), amqp_cstring_bytes(a->bindings[i]),
                        amqp_empty_table);
        if (!ok_reply(a, "binding the queue")) return -1;
    }
    amqp_basic_qos(c, CHANNEL, 0, (uint16_t)a->o.prefetch, 0);
    if (!ok_reply(a, "setting the prefetch")) return -1;
    amqp_basic_consume(c, CHANNEL, amqp_cstring_bytes(a->queue), amqp_empty_bytes, 0, 0, 0,
                       amqp_empty_table);
    if (!ok_reply(a, "consuming")) return -1;
    return 0;
}

static int connect_broker(lm_rmq *a)
{
    a->conn = amqp_new_connection();
    if (!a->conn) {
        snprintf(a->last_err, sizeof a->last_err, "out of memory");
        return -1;
    }
    amqp_socket_t *s = amqp_tcp_socket_new(a->conn);
    if (!s) {
        snprintf(a->last_err, sizeof a->last_err, "cannot create a socket");
        return -1;
    }
    struct timeval tv = {.tv_sec = IO_TIMEOUT_S};
    int rc = amqp_socket_open_noblock(s, a->url.host, a->url.port, &tv);
    if (rc != AMQP_STATUS_OK) {
        snprintf(a->last_err, sizeof a->last_err, "connect: %s", amqp_error_string2(rc));
        return -1;
    }
    amqp_set_handshake_timeout(a->conn, &tv);
    struct timeval rpc = {.tv_sec = RPC_TIMEOUT_S};
    amqp_set_rpc_timeout(a->conn, &rpc);
    char name[200];
    snprintf(name, sizeof name, "lotmesh-%s %s", a->service,
             a->o.role == LM_RMQ_PUBLISHER ? "relay" : "consumer");
    amqp_table_entry_t pe = {
        .key = amqp_cstring_bytes("connection_name"),
        .value = {.kind = AMQP_FIELD_KIND_UTF8, .value.bytes = amqp_cstring_bytes(name)}};
    amqp_table_t props = {.num_entries = 1, .entries = &pe};
    amqp_rpc_reply_t r =
        amqp_login_with_properties(a->conn, a->url.vhost, 0, 131072, HEARTBEAT_S, &props,
                                   AMQP_SASL_METHOD_PLAIN, a->url.user, a->url.password);
    if (r.reply_type != AMQP_RESPONSE_NORMAL) {
        set_err_reply(a, "login", r);
        return -1;
    }
    amqp_channel_open(a->conn, CHANNEL);
    if (!ok_reply(a, "opening a channel")) return -1;
    amqp_exchange_declare(a->conn, CHANNEL, amqp_cstring_bytes(LM_RMQ_EXCHANGE),
                          amqp_cstring_bytes("topic"), 0, 1, 0, 0, amqp_empty_table);
    if (!ok_reply(a, "declaring " LM_RMQ_EXCHANGE)) return -1;
    if (a->o.role == LM_RMQ_PUBLISHER) {
        amqp_confirm_select(a->conn, CHANNEL);
        if (!ok_reply(a, "selecting confirms")) return -1;
    } else if (declare_consumer(a) != 0) {
        return -1;
    }
    return 0;
}

/* ---- publisher ---- */

static int publish_one(lm_rmq *a, msg *m)
{
    amqp_basic_properties_t p;
    memset(&p, 0, sizeof p);
    amqp_table_entry_t h = {.key = amqp_cstring_bytes("traceparent"),
                            .value = {.kind = AMQP_FIELD_KIND_UTF8,
                                      .value.bytes = amqp_cstring_bytes(m->tp ? m->tp : "")}};
    p._flags = AMQP_BASIC_CONTENT_TYPE_FLAG | AMQP_BASIC_DELIVERY_MODE_FLAG |
               AMQP_BASIC_MESSAGE_ID_FLAG | AMQP_BASIC_TYPE_FLAG;
    p.content_type = amqp_cstring_bytes(LM_RMQ_CONTENT_TYPE);
    p.delivery_mode = AMQP_DELIVERY_PERSISTENT;
    p.message_id = amqp_cstring_bytes(m->id);
    p.type = amqp_cstring_bytes(m->key);
    if (m->tp && *m->tp) {
        p._flags |= AMQP_BASIC_HEADERS_FLAG;
        p.headers.num_entries = 1;
        p.headers.entries = &h;
    }
    amqp_bytes_t body = {.len = m->len, .bytes = m->body};
    int rc = amqp_basic_publish(a->conn, CHANNEL, amqp_cstring_bytes(LM_RMQ_EXCHANGE),
                                amqp_cstring_bytes(m->key), 1, 0, &p, body);
    if (rc != AMQP_STATUS_OK) {
        snprintf(a->last_err, sizeof a->last_err, "publish: %s", amqp_error_string2(rc));
        return -1;
    }
    m->dtag = a->next_dtag++;
    m->state = 0;
    m->returned = false;
    return 0;
}

/* Sends what is pending, up to max_inflight unconfirmed. */
static int pump_publish(lm_rmq *a)
{
    for (;;) {
        if (a->inflight.n >= a->o.max_inflight) return 0;
        pthread_mutex_lock(&a->mu);
        msg *m = q_pop(&a->pending);
        pthread_mutex_unlock(&a->mu);
        if (!m) return 0;
        q_push(&a->inflight, m);
        if (publish_one(a, m) != 0) return -1;
    }
}

static void mark_confirms(lm_rmq *a, uint64_t tag, bool multiple, bool ack)
{
    for (msg *m = a->inflight.head; m; m = m->next) {
        if (m->dtag > tag) break;
        if (m->state != 0 || (!multiple && m->dtag != tag)) continue;
        m->state = ack && !m->returned ? 1 : 2;
    }
}

/* Moves settled messages from the front of inflight into the results. */
static void collect_results(lm_rmq *a)
{
    bool any = false;
    pthread_mutex_lock(&a->mu);
    while (a->inflight.head && a->inflight.head->state != 0) {
        msg *m = q_pop(&a->inflight);
        if (grow((void **)&a->results, &a->cap_results, a->n_results + 1, sizeof *a->results)) {
            a->results[a->n_results++] = (lm_rmq_result){.seq = m->seq, .ok = m->state == 1};
            any = true;
        }
        if (m->state == 1) {
            a->st.published++;
        } else {
            a->st.confirm_failures++;
            if (m->returned) a->st.returned++;
        }
        a->st.queued--;
        msg_free(m);
    }
    pthread_mutex_unlock(&a->mu);
    if (any) notify(a);
}

/* The connection is gone: every message sent or waiting is reported failed (the caller
 * publishes it again once the link is up: at least once). */
static void fail_unconfirmed(lm_rmq *a)
{
    pthread_mutex_lock(&a->mu);
    q_prepend(&a->pending, &a->inflight);
    size_t n = 0;
    for (msg *m = a->pending.head; m; m = m->next)
        n++;
    bool any = n > 0;
    if (any && grow((void **)&a->results, &a->cap_results, a->n_results + n, sizeof *a->results)) {
        for (msg *m = a->pending.head; m; m = m->next)
            a->results[a->n_results++] = (lm_rmq_result){.seq = m->seq, .ok = false};
    }
    a->st.lost += n;
    a->st.queued -= n;
    q_clear(&a->pending);
    pthread_mutex_unlock(&a->mu);
    if (any) notify(a);
}

static void mark_returned(lm_rmq *a, amqp_bytes_t id)
{
    for (msg *m = a->inflight.head; m; m = m->next) {
        if (m->state == 0 && !m->returned && strlen(m->id) == id.len &&
            memcmp(m->id, id.bytes, id.len) == 0) {
            m->returned = true;
            return;
        }
    }
}

/* ---- consumer ---- */

static unsigned delivery_count(const amqp_table_t *h)
{
    for (int i = 0; i < h->num_entries; i++) {
        const amqp_table_entry_t *e = &h->entries[i];
        if (e->key.len != 16 || memcmp(e->key.bytes, "x-delivery-count", 16) != 0) continue;
        int64_t v;
        switch (e->value.kind) {
        case AMQP_FIELD_KIND_I8:
            v = e->value.value.i8;
            break;
        case AMQP_FIELD_KIND_U8:
            v = e->value.value.u8;
            break;
        case AMQP_FIELD_KIND_I16:
            v = e->value.value.i16;
            break;
        case AMQP_FIELD_KIND_U16:
            v = e->value.value.u16;
            break;
        case AMQP_FIELD_KIND_I32:
            v = e->value.value.i32;
            break;
        case AMQP_FIELD_KIND_U32:
            v = e->value.value.u32;
            break;
        case AMQP_FIELD_KIND_I64:
            v = e->value.value.i64;
            break;
        case AMQP_FIELD_KIND_U64:
            v = e->value.value.u64 > INT32_MAX ? INT32_MAX : (int64_t)e->value.value.u64;
            break;
        default:
            return 0;
        }
        return v < 0 ? 0 : v > 1000000 ? 1000000 : (unsigned)v;
    }
    return 0;
}

/* Classic queues count no deliveries: the link remembers, per message id (a direct-mapped
 * cache, link thread only), how often it saw a message; a message redelivered after a
 * consumer's restart counts as at least its second attempt. */
static unsigned seen_attempt(lm_rmq *a, const char *id, bool redelivered)
{
    unsigned floor = redelivered ? 2 : 1;
    if (!a->seen || !*id) return floor;
    uint64_t h = 1469598103934665603ull;
    for (const char *c = id; *c; c++)
        h = (h ^ (unsigned char)*c) * 1099511628211ull;
    size_t i = (size_t)(h % SEEN_SLOTS);
    if (a->seen[i].hash != h) {
        a->seen[i].hash = h;
        a->seen[i].count = 0;
    }
    unsigned n = ++a->seen[i].count;
    return n > floor ? n : floor;
}

static int on_deliver(lm_rmq *a, amqp_basic_deliver_t *d)
{
    uint64_t tag = (a->gen << GEN_SHIFT) | (d->delivery_tag & DTAG_MASK);
    bool redelivered = d->redelivered;
    char *key = dupn(d->routing_key.bytes, d->routing_key.len);
    amqp_message_t m;
    amqp_rpc_reply_t r = amqp_read_message(a->conn, CHANNEL, &m, 0);
    if (r.reply_type != AMQP_RESPONSE_NORMAL) {
        free(key);
        set_err_reply(a, "reading a delivery", r);
        return -1;
    }
    lm_rmq_delivery *del = calloc(1, sizeof *del);
    if (del && key) {
        del->tag = tag;
        del->routing_key = key;
        key = NULL;
        bool has_id = m.properties._flags & AMQP_BASIC_MESSAGE_ID_FLAG;
        del->message_id =
            has_id ? dupn(m.properties.message_id.bytes, m.properties.message_id.len) : dups("");
        del->body = dupn(m.body.bytes, m.body.len);
        del->len = m.body.len;
        del->redelivered = redelivered;
        del->attempt = 1 + ((m.properties._flags & AMQP_BASIC_HEADERS_FLAG)
                                ? delivery_count(&m.properties.headers)
                                : 0);
        if (!a->o.quorum) del->attempt = seen_attempt(a, del->message_id, redelivered);
    }
    amqp_destroy_message(&m);
    free(key);
    if (!del || !del->routing_key || !del->message_id || !del->body) {
        lm_rmq_delivery_free(del);
        snprintf(a->last_err, sizeof a->last_err, "out of memory for a delivery");
        return -1;
    }
    pthread_mutex_lock(&a->mu);
    bool ok = grow((void **)&a->dels, &a->cap_dels, a->n_dels + 1, sizeof *a->dels);
    if (ok) {
        a->dels[a->n_dels++] = del;
        a->st.delivered++;
    }
    pthread_mutex_unlock(&a->mu);
    if (!ok) {
        lm_rmq_delivery_free(del);
        snprintf(a->last_err, sizeof a->last_err, "out of memory for a delivery");
        return -1;
    }
    notify(a);
    return 0;
}

static int pump_settles(lm_rmq *a)
{
    pthread_mutex_lock(&a->mu);
    settle *s = a->settles;
    size_t n = a->n_settles;
    a->settles = NULL;
    a->n_settles = a->cap_settles = 0;
    pthread_mutex_unlock(&a->mu);
    int rc = 0;
    uint64_t acked = 0, requeued = 0, dead = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        if ((s[i].tag >> GEN_SHIFT) != a->gen)
            continue; /* a delivery of a dropped connection: the broker redelivers it */
        uint64_t dt = s[i].tag & DTAG_MASK;
        int r;
        if (s[i].v == LM_RMQ_ACK) {
            r = amqp_basic_ack(a->conn, CHANNEL, dt, 0);
            acked++;
        } else if (s[i].v == LM_RMQ_RETRY) {
            r = amqp_basic_nack(a->conn, CHANNEL, dt, 0, 1);
            requeued++;
        } else {
            r = amqp_basic_reject(a->conn, CHANNEL, dt, 0);
            dead++;
        }
        if (r != AMQP_STATUS_OK) {
            snprintf(a->last_err, sizeof a->last_err, "settling: %s", amqp_error_string2(r));
            rc = -1;
        }
    }
    free(s);
    if (acked || requeued || dead) {
        pthread_mutex_lock(&a->mu);
        a->st.acked += acked;
        a->st.requeued += requeued;
        a->st.dead_lettered += dead;
        pthread_mutex_unlock(&a->mu);
    }
    return rc;
}

/* ---- the link thread ---- */

static int handle_frame(lm_rmq *a, amqp_frame_t *f)
{
    if (f->frame_type != AMQP_FRAME_METHOD)
        return 0; /* stray content of a message we did not read: ignored */
    switch (f->payload.method.id) {
    case AMQP_BASIC_ACK_METHOD: {
        amqp_basic_ack_t *m = f->payload.method.decoded;
        mark_confirms(a, m->delivery_tag, m->multiple, true);
        collect_results(a);
        return 0;
    }
    case AMQP_BASIC_NACK_METHOD: {
        amqp_basic_nack_t *m = f->payload.method.decoded;
        mark_confirms(a, m->delivery_tag, m->multiple, false);
        collect_results(a);
        return 0;
    }
    case AMQP_BASIC_RETURN_METHOD: {
        amqp_message_t msgr;
        amqp_rpc_reply_t r = amqp_read_message(a->conn, f->channel, &msgr, 0);
        if (r.reply_type != AMQP_RESPONSE_NORMAL) {
            set_err_reply(a, "reading a returned message", r);
            return -1;
        }
        if (msgr.properties._flags & AMQP_BASIC_MESSAGE_ID_FLAG)
            mark_returned(a, msgr.properties.message_id);
        amqp_destroy_message(&msgr);
        return 0;
    }
    case AMQP_BASIC_DELIVER_METHOD:
        return on_deliver(a, f->payload.method.decoded);
    case AMQP_CHANNEL_CLOSE_METHOD: {
        amqp_channel_close_t *m = f->payload.method.decoded;
        snprintf(a->last_err, sizeof a->last_err, "broker closed the channel: %u %.*s",
                 m->reply_code, (int)m->reply_text.len, (char *)m->reply_text.bytes);
        return -1;
    }
    case AMQP_CONNECTION_CLOSE_METHOD: {
        amqp_connection_close_t *m = f->payload.method.decoded;
        snprintf(a->last_err, sizeof a->last_err, "broker closed the connection: %u %.*s",
                 m->reply_code, (int)m->reply_text.len, (char *)m->reply_text.bytes);
        return -1;
    }
    case AMQP_BASIC_CANCEL_METHOD:
        snprintf(a->last_err, sizeof a->last_err, "the broker cancelled the consumer");
        return -1;
    default:
        return 0;
    }
}

/* Runs a connected link until it fails (-1) or is stopped (0). */
static int run_connected(lm_rmq *a)
{
    int fd = amqp_get_sockfd(a->conn);
    for (;;) {
        if (atomic_load(&a->stopping)) return 0;
        if (a->o.role == LM_RMQ_PUBLISHER ? pump_publish(a) : pump_settles(a)) return -1;
        bool buffered = amqp_frames_enqueued(a->conn) || amqp_data_in_buffer(a->conn);
        if (!buffered) {
            struct pollfd p[2] = {{.fd = fd, .events = POLLIN},
                                  {.fd = a->wakefd, .events = POLLIN}};
            int n = poll(p, 2, 1000);
            if (n < 0 && errno != EINTR) {
                snprintf(a->last_err, sizeof a->last_err, "poll: %s", strerror(errno));
                return -1;
            }
            if (n > 0 && (p[1].revents & POLLIN)) drain_wake(a);
        }
        /* reads what is there without blocking; also services heartbeats once a second */
        for (int i = 0; i < 256; i++) {
            amqp_frame_t f;
            struct timeval zero = {0, 0};
            int rc = amqp_simple_wait_frame_noblock(a->conn, &f, &zero);
            if (rc == AMQP_STATUS_TIMEOUT) break;
            if (rc != AMQP_STATUS_OK) {
                snprintf(a->last_err, sizeof a->last_err, "%s", amqp_error_string2(rc));
                return -1;
            }
            if (handle_frame(a, &f) != 0) return -1;
            if (!amqp_frames_enqueued(a->conn) && !amqp_data_in_buffer(a->conn)) break;
        }
        amqp_maybe_release_buffers(a->conn);
    }
}

static void set_state(lm_rmq *a, lm_rmq_state s, bool connected_now, bool failed_attempt)
{
    pthread_mutex_lock(&a->mu);
    bool changed = a->st.state != s;
    a->st.state = s;
    if (s == LM_RMQ_CONNECTED)
        a->why[0] = '\0';
    else if (failed_attempt || s == LM_RMQ_DISCONNECTED)
        snprintf(a->why, sizeof a->why, "%s", a->last_err);
    if (connected_now) a->st.connects++;
    if (failed_attempt) a->st.connect_failures++;
    pthread_mutex_unlock(&a->mu);
    if (changed) notify(a);
}

static void backoff_wait(lm_rmq *a, int ms)
{
    struct pollfd p = {.fd = a->wakefd, .events = POLLIN};
    if (poll(&p, 1, ms) > 0) drain_wake(a);
}

static void *link_main(void *arg)
{
    lm_rmq *a = arg;
    char where[600];
    lm_amqp_url_redacted(&a->url, where, sizeof where);
    int backoff = BACKOFF_MIN_MS;
    bool reported = false; /* the current outage was logged */
    char logged[256] = ""; /* with this reason */
    while (!atomic_load(&a->stopping)) {
        a->gen++;
        a->next_dtag = 1;
        set_state(a, LM_RMQ_CONNECTING, false, false);
        if (connect_broker(a) != 0) {
            disconnect(a, false);
            set_state(a, LM_RMQ_DISCONNECTED, false, true);
            /* one line per outage, and another whenever the reason changes (a broker that
             * accepts connections again but refuses the topology says why) */
            if (!reported || strcmp(logged, a->last_err) != 0)
                lm_log_warn("events: broker %s unreachable (%s); retrying with backoff", where,
                            a->last_err);
            snprintf(logged, sizeof logged, "%s", a->last_err);
            reported = true;
            backoff_wait(a, backoff);
            backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
            continue;
        }
        backoff = BACKOFF_MIN_MS;
        reported = false;
        set_state(a, LM_RMQ_CONNECTED, true, false);
        lm_log_info("events: connected to broker %s as %s", where,
                    a->o.role == LM_RMQ_PUBLISHER ? "publisher" : a->queue);
        int rc = run_connected(a);
        if (rc == 0) {
            disconnect(a, true);
            break;
        }
        lm_log_warn("events: lost broker %s (%s); reconnecting", where, a->last_err);
        reported = true;
        disconnect(a, false);
        set_state(a, LM_RMQ_DISCONNECTED, false, false);
        fail_unconfirmed(a);
        pthread_mutex_lock(&a->mu);
        /* verdicts for the dropped connection's deliveries are moot */
        a->n_settles = 0;
        pthread_mutex_unlock(&a->mu);
        backoff_wait(a, backoff);
    }
    set_state(a, LM_RMQ_DISCONNECTED, false, false);
    return NULL;
}

/* ---- public ---- */

lm_rmq *lm_rmq_start(const lm_amqp_url *url, const lm_rmq_opts *opts, char *err, size_t errlen)
{
    if (!opts->service || !*opts->service) {
        snprintf(err, errlen, "events: a broker link needs a service name");
        return NULL;
    }
    if (opts->role == LM_RMQ_CONSUMER && (!opts->bindings || !opts->bindings[0])) {
        snprintf(err, errlen, "events: a consumer needs at least one routing key");
        return NULL;
    }
    lm_rmq *a = calloc(1, sizeof *a);
    if (!a) {
        snprintf(err, errlen, "events: out of memory");
        return NULL;
    }
    a->url = *url;
    a->o = *opts;
    if (!a->o.prefetch) a->o.prefetch = 64;
    if (a->o.prefetch > 65535) a->o.prefetch = 65535;
    if (!a->o.delivery_limit) a->o.delivery_limit = 20;
    if (!a->o.max_inflight) a->o.max_inflight = 256;
    if (!a->o.max_queued) a->o.max_queued = 4096;
    a->service = dups(opts->service);
    a->o.service = a->service;
    a->o.bindings = NULL;
    snprintf(a->queue, sizeof a->queue, "%s.events", opts->service);
    snprintf(a->dlq, sizeof a->dlq, "%s.events.dlq", opts->service);
    if (opts->bindings) {
        while (opts->bindings[a->n_bindings])
            a->n_bindings++;
        a->bindings = calloc(a->n_bindings + 1, sizeof *a->bindings);
        for (size_t i = 0; a->bindings && i < a->n_bindings; i++)
            a->bindings[i] = dups(opts->bindings[i]);
    }
    if (opts->role == LM_RMQ_CONSUMER && !opts->quorum)
        a->seen = calloc(SEEN_SLOTS, sizeof *a->seen);
    a->wakefd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    pthread_mutex_init(&a->mu, NULL);
    atomic_init(&a->stopping, false);
    if (!a->service || (a->n_bindings && !a->bindings) || a->wakefd < 0 ||
        pthread_create(&a->thread, NULL, link_main, a) != 0) {
        snprintf(err, errlen, "events: cannot start the broker link");
        if (a->wakefd >= 0) close(a->wakefd);
        pthread_mutex_destroy(&a->mu);
        for (size_t i = 0; a->bindings && i < a->n_bindings; i++)
            free(a->bindings[i]);
        free(a->bindings);
        free(a->service);
        free(a);
        return NULL;
    }
    return a;
}

void lm_rmq_stop(lm_rmq *a)
{
    if (!a) return;
    atomic_store(&a->stopping, true);
    wake(a);
    pthread_join(a->thread, NULL);
    q_clear(&a->pending);
    q_clear(&a->inflight);
    for (size_t i = 0; i < a->n_dels; i++)
        lm_rmq_delivery_free(a->dels[i]);
    free(a->dels);
    free(a->results);
    free(a->settles);
    close(a->wakefd);
    free(a->seen);
    pthread_mutex_destroy(&a->mu);
    for (size_t i = 0; i < a->n_bindings; i++)
        free(a->bindings[i]);
    free(a->bindings);
    free(a->service);
    free(a);
}

void lm_rmq_get_stats(lm_rmq *a, lm_rmq_stats *out, char *why, size_t whylen)
{
    pthread_mutex_lock(&a->mu);
    *out = a->st;
    if (why && whylen) snprintf(why, whylen, "%s", a->why);
    pthread_mutex_unlock(&a->mu);
}

int lm_rmq_submit(lm_rmq *a, uint64_t seq, const char *key, const char *id, const char *traceparent,
                  const char *body, size_t len)
{
    msg *m = calloc(1, sizeof *m);
    if (!m) return -1;
    m->seq = seq;
    m->key = dups(key);
    m->id = dups(id);
    m->tp = traceparent ? dups(traceparent) : NULL;
    m->body = dupn(body, len);
    m->len = len;
    if (!m->key || !m->id || !m->body || (traceparent && !m->tp)) {
        msg_free(m);
        return -1;
    }
    pthread_mutex_lock(&a->mu);
    if (a->st.queued >= a->o.max_queued) {
        pthread_mutex_unlock(&a->mu);
        msg_free(m);
        return -1;
    }
    q_push(&a->pending, m);
    a->st.queued++;
    pthread_mutex_unlock(&a->mu);
    wake(a);
    return 0;
}

size_t lm_rmq_take_results(lm_rmq *a, lm_rmq_result *out, size_t max)
{
    pthread_mutex_lock(&a->mu);
    size_t n = a->n_results < max ? a->n_results : max;
    if (n > 0) {
        memcpy(out, a->results, n * sizeof *out);
        memmove(a->results, a->results + n, (a->n_results - n) * sizeof *out);
        a->n_results -= n;
    }
    pthread_mutex_unlock(&a->mu);
    return n;
}

size_t lm_rmq_take_deliveries(lm_rmq *a, lm_rmq_delivery **out, size_t max)
{
    pthread_mutex_lock(&a->mu);
    size_t n = a->n_dels < max ? a->n_dels : max;
    if (n > 0) {
        memcpy(out, a->dels, n * sizeof *out);
        memmove(a->dels, a->dels + n, (a->n_dels - n) * sizeof *out);
        a->n_dels -= n;
    }
    pthread_mutex_unlock(&a->mu);
    return n;
}

void lm_rmq_delivery_free(lm_rmq_delivery *d)
{
    if (!d) return;
    free(d->routing_key);
    free(d->message_id);
    free(d->body);
    free(d);
}

void lm_rmq_settle(lm_rmq *a, uint64_t tag, lm_rmq_verdict v)
{
    pthread_mutex_lock(&a->mu);
    if (grow((void **)&a->settles, &a->cap_settles, a->n_settles + 1, sizeof *a->settles))
        a->settles[a->n_settles++] = (settle){.tag = tag, .v = v};
    pthread_mutex_unlock(&a->mu);
    wake(a);
}
