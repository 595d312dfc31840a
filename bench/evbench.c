/* evbench.c — drives the RabbitMQ event transport (lib/events, transport_amqp.c) on its own,
 * for bench/events.sh and tests/blackbox/test_events_amqp.py.
 *
 *   lm_evbench relay URL N [BYTES]   publishes N envelopes through lm_transport (the relay's
 *                                    path: window, confirms; failures published again) and
 *                                    prints {"mode":"relay","n":N,"seconds":S,"per_s":R,…}
 *   lm_evbench bare URL N [BYTES]    the same messages with a bare rabbitmq-c publisher:
 *                                    confirm.select, the same window (1000 unconfirmed), the
 *                                    same properties, the same exchange
 *   lm_evbench consume URL SERVICE PATTERN...
 *                                    subscribes as SERVICE and prints one JSON line per
 *                                    delivery ({"id","type","attempt","parsed","redelivered"});
 *                                    acks parsed ones, rejects the rest; with RETRY_BELOW=K,
 *                                    retries (delay 0) a parsed delivery while its attempt is
 *                                    below K; with HOLD=1 settles nothing. Runs until
 *                                    SIGTERM/SIGINT.
 *
 * Envelopes are CloudEvents of type artikel.updated (subject i % 100 + 1, sequence i + 1),
 * padded to about BYTES (default 600) with a data member. Writes one line on stderr per
 * transport state change. */
#include <amqp.h>
#include <amqp_tcp_socket.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <uv.h>

#include "amqp_url.h"
#include "buf.h"
#include "envelope.h"
#include "transport.h"

#define WINDOW 1000

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static lm_envelope *make_events(size_t n, size_t bytes)
{
    lm_envelope *evs = calloc(n, sizeof *evs);
    char *pad = malloc(bytes + 1);
    memset(pad, 'x', bytes);
    pad[bytes > 300 ? bytes - 300 : 0] = '\0';
    for (size_t i = 0; i < n; i++) {
        lm_buf data = {0}, out = {0};
        char id[64];
        snprintf(id, sizeof id, "evbench-%d-%zu", (int)getpid(), i + 1);
        lm_buf_printf(&data, "{\"id\":%zu,\"name\":\"Artikel %zu\",\"pad\":\"%s\"}", i % 100 + 1, i,
                      pad);
        lm_envelope_write(&out, id, "/lotmesh/evbench", "artikel.updated", (long long)(i % 100 + 1),
                          "2026-12-05T23:00:00Z", (long long)i + 1, (long long)i + 1,
                          "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", data.data);
        char err[160];
        if (lm_envelope_parse(out.data, out.len, &evs[i], err, sizeof err) != 0) {
            fprintf(stderr, "evbench: envelope: %s\n", err);
            exit(1);
        }
        lm_buf_free(&data);
        lm_buf_free(&out);
    }
    free(pad);
    return evs;
}

/* ---- relay mode: through lm_transport ---- */

typedef struct relay {
    uv_loop_t *loop;
    lm_transport *t;
    lm_envelope *evs;
    size_t n, next;
    size_t *again; /* indexes to publish again */
    size_t n_again;
    size_t confirmed, failed;
    double t0, t1;
    bool up, done;
    uv_timer_t pump_timer;
} relay;

static void relay_pump(relay *r)
{
    while (r->up && !r->done) {
        size_t w = lm_transport_window(r->t);
        if (w == 0) return;
        const lm_envelope *batch[100];
        size_t k = 0;
        while (k < 100 && k < w && r->n_again > 0)
            batch[k++] = &r->evs[r->again[--r->n_again]];
        while (k < 100 && k < w && r->next < r->n)
            batch[k++] = &r->evs[r->next++];
        if (k == 0) return;
        if (lm_transport_publish(r->t, batch, k) != 0) {
            fprintf(stderr, "evbench: publish refused\n");
            return;
        }
    }
}

static void on_closed(void *arg)
{
    (void)arg;
}

static void relay_confirmed(void *ctx, const long long *seqs, size_t n, bool ok)
{
    relay *r = ctx;
    if (ok) {
        r->confirmed += n;
    } else {
        r->failed += n;
        for (size_t i = 0; i < n; i++)
            r->again[r->n_again++] = (size_t)seqs[i] - 1;
    }
    if (r->confirmed == r->n && !r->done) {
        r->done = true;
        r->t1 = now_s();
        uv_timer_stop(&r->pump_timer);
        uv_close((uv_handle_t *)&r->pump_timer, NULL);
        lm_transport_close(r->t, on_closed, NULL);
        return;
    }
    /* publishing again waits for the pump timer (failures come in bursts on a reconnect) */
    if (ok) relay_pump(r);
}

static void relay_state(void *ctx, lm_transport_state st, const char *why)
{
    relay *r = ctx;
    fprintf(stderr, "evbench: transport %s %s\n", lm_transport_state_name(st), why);
    r->up = st == LM_TRANSPORT_UP;
    if (r->up && r->t0 == 0) r->t0 = now_s();
    relay_pump(r);
}

static void relay_tick(uv_timer_t *h)
{
    relay_pump(h->data);
}

static int run_relay(const char *url, size_t n, size_t bytes)
{
    relay r = {0};
    r.loop = uv_default_loop();
    r.n = n;
    r.evs = make_events(n, bytes);
    r.again = calloc(n, sizeof *r.again);
    lm_transport_cfg cfg = {.broker_url = url, .service = "evbench"};
    lm_transport_cbs cbs = {.ctx = &r, .confirmed = relay_confirmed, .state = relay_state};
    char err[256];
    r.t = lm_transport_open(r.loop, &cfg, &cbs, err, sizeof err);
    if (!r.t) {
        fprintf(stderr, "%s\n", err);
        return 2;
    }
    uv_timer_init(r.loop, &r.pump_timer);
    r.pump_timer.data = &r;
    uv_timer_start(&r.pump_timer, relay_tick, 50, 50);
    uv_run(r.loop, UV_RUN_DEFAULT);
    double s = r.t1 - r.t0;
    printf(
        "{\"mode\":\"relay\",\"n\":%zu,\"seconds\":%.4f,\"per_s\":%.0f,\"confirm_failures\":%zu}\n",
        n, s, (double)n / s, r.failed);
    for (size_t i = 0; i < n; i++)
        lm_envelope_clear(&r.evs[i]);
    free(r.evs);
    free(r.again);
    return 0;
}

/* ---- bare mode: rabbitmq-c alone ---- */

static void die_reply(amqp_connection_state_t c, const char *what)
{
    amqp_rpc_reply_t r = amqp_get_rpc_reply(c);
    if (r.reply_type != AMQP_RESPONSE_NORMAL) {
        fprintf(stderr, "evbench: %s failed (%d)\n", what, (int)r.reply_type);
        exit(1);
    }
}

static int run_bare(const char *url, size_t n, size_t bytes)
{
    lm_amqp_url u;
    char err[256];
    if (lm_amqp_url_parse(url, &u, err, sizeof err) != 0) {
        fprintf(stderr, "%s\n", err);
        return 2;
    }
    lm_envelope *evs = make_events(n, bytes);
    amqp_connection_state_t c = amqp_new_connection();
    amqp_socket_t *s = amqp_tcp_socket_new(c);
    if (amqp_socket_open(s, u.host, u.port) != AMQP_STATUS_OK) {
        fprintf(stderr, "evbench: cannot connect\n");
        return 1;
    }
    amqp_rpc_reply_t lr =
        amqp_login(c, u.vhost, 0, 131072, 10, AMQP_SASL_METHOD_PLAIN, u.user, u.password);
    if (lr.reply_type != AMQP_RESPONSE_NORMAL) {
        fprintf(stderr, "evbench: login failed\n");
        return 1;
    }
    amqp_channel_open(c, 1);
    die_reply(c, "channel.open");
    amqp_exchange_declare(c, 1, amqp_cstring_bytes("lotmesh.events"), amqp_cstring_bytes("topic"),
                          0, 1, 0, 0, amqp_empty_table);
    die_reply(c, "exchange.declare");
    amqp_confirm_select(c, 1);
    die_reply(c, "confirm.select");
    double t0 = now_s();
    size_t sent = 0, acked = 0, failed = 0;
    uint64_t tag = 0;
    while (acked + failed < n) {
        while (sent < n && sent - acked - failed < WINDOW) {
            const lm_envelope *e = &evs[sent];
            amqp_table_entry_t h = {.key = amqp_cstring_bytes("traceparent"),
                                    .value = {.kind = AMQP_FIELD_KIND_UTF8,
                                              .value.bytes = amqp_cstring_bytes(e->traceparent)}};
            amqp_basic_properties_t p = {0};
            p._flags = AMQP_BASIC_CONTENT_TYPE_FLAG | AMQP_BASIC_DELIVERY_MODE_FLAG |
                       AMQP_BASIC_MESSAGE_ID_FLAG | AMQP_BASIC_TYPE_FLAG | AMQP_BASIC_HEADERS_FLAG;
            p.content_type = amqp_cstring_bytes("application/cloudevents+json");
            p.delivery_mode = AMQP_DELIVERY_PERSISTENT;
            p.message_id = amqp_cstring_bytes(e->id);
            p.type = amqp_cstring_bytes(e->type);
            p.headers.num_entries = 1;
            p.headers.entries = &h;
            amqp_bytes_t body = {.len = e->json_len, .bytes = e->json};
            if (amqp_basic_publish(c, 1, amqp_cstring_bytes("lotmesh.events"),
                                   amqp_cstring_bytes(e->type), 1, 0, &p, body) != AMQP_STATUS_OK) {
                fprintf(stderr, "evbench: publish failed\n");
                return 1;
            }
            sent++;
        }
        amqp_frame_t f;
        if (amqp_simple_wait_frame(c, &f) != AMQP_STATUS_OK) {
            fprintf(stderr, "evbench: connection lost\n");
            return 1;
        }
        if (f.frame_type != AMQP_FRAME_METHOD) continue;
        if (f.payload.method.id == AMQP_BASIC_ACK_METHOD ||
            f.payload.method.id == AMQP_BASIC_NACK_METHOD) {
            bool ack = f.payload.method.id == AMQP_BASIC_ACK_METHOD;
            uint64_t dt = ack ? ((amqp_basic_ack_t *)f.payload.method.decoded)->delivery_tag
                              : ((amqp_basic_nack_t *)f.payload.method.decoded)->delivery_tag;
            bool multiple = ack ? ((amqp_basic_ack_t *)f.payload.method.decoded)->multiple
                                : ((amqp_basic_nack_t *)f.payload.method.decoded)->multiple;
            size_t k = multiple ? (size_t)(dt - tag) : 1;
            tag = multiple ? dt : tag + 1;
            if (ack)
                acked += k;
            else
                failed += k;
        } else if (f.payload.method.id == AMQP_BASIC_RETURN_METHOD) {
            amqp_message_t m;
            amqp_read_message(c, 1, &m, 0);
            amqp_destroy_message(&m);
        }
        amqp_maybe_release_buffers(c);
    }
    double sec = now_s() - t0;
    printf(
        "{\"mode\":\"bare\",\"n\":%zu,\"seconds\":%.4f,\"per_s\":%.0f,\"confirm_failures\":%zu}\n",
        n, sec, (double)n / sec, failed);
    amqp_channel_close(c, 1, AMQP_REPLY_SUCCESS);
    amqp_connection_close(c, AMQP_REPLY_SUCCESS);
    amqp_destroy_connection(c);
    for (size_t i = 0; i < n; i++)
        lm_envelope_clear(&evs[i]);
    free(evs);
    return 0;
}

/* ---- consume mode ---- */

typedef struct consumer {
    lm_transport *t;
    unsigned retry_below;
    bool hold;
    uv_signal_t sigterm, sigint;
} consumer;

static void cons_deliver(void *ctx, lm_delivery *d)
{
    consumer *c = ctx;
    lm_buf line = {0};
    lm_buf_printf(&line,
                  "{\"id\":\"%s\",\"type\":\"%s\",\"sequence\":%lld,\"attempt\":%u,\"parsed\":%s,"
                  "\"redelivered\":%s}\n",
                  d->parsed ? d->ev.id : "", d->parsed ? d->ev.type : "",
                  d->parsed ? d->ev.sequence : 0LL, d->attempt, d->parsed ? "true" : "false",
                  d->redelivered ? "true" : "false");
    fwrite(line.data, 1, line.len, stdout);
    fflush(stdout);
    lm_buf_free(&line);
    if (c->hold) return; /* never settled: the broker gets it back when the connection goes */
    if (!d->parsed)
        lm_transport_reject(c->t, d);
    else if (d->attempt < c->retry_below)
        lm_transport_retry(c->t, d, 0);
    else
        lm_transport_ack(c->t, d);
}

static void cons_state(void *ctx, lm_transport_state st, const char *why)
{
    (void)ctx;
    fprintf(stderr, "evbench: transport %s %s\n", lm_transport_state_name(st), why);
}

static void cons_stop(uv_signal_t *h, int signum)
{
    (void)signum;
    consumer *c = h->data;
    uv_close((uv_handle_t *)&c->sigterm, NULL);
    uv_close((uv_handle_t *)&c->sigint, NULL);
    lm_transport_close(c->t, on_closed, NULL);
}

static int run_consume(const char *url, const char *service, const char *const *patterns,
                       size_t n_patterns)
{
    consumer c = {0};
    const char *rb = getenv("RETRY_BELOW");
    c.retry_below = rb ? (unsigned)atoi(rb) : 0;
    c.hold = getenv("HOLD") != NULL;
    uv_loop_t *loop = uv_default_loop();
    lm_transport_cfg cfg = {.broker_url = url, .service = service};
    lm_transport_cbs cbs = {.ctx = &c, .deliver = cons_deliver, .state = cons_state};
    char err[256];
    c.t = lm_transport_open(loop, &cfg, &cbs, err, sizeof err);
    if (!c.t) {
        fprintf(stderr, "%s\n", err);
        return 2;
    }
    lm_transport_sub sub = {.patterns = patterns, .n_patterns = n_patterns, .prefetch = 50};
    if (lm_transport_subscribe(c.t, &sub, err, sizeof err) != 0) {
        fprintf(stderr, "%s\n", err);
        return 2;
    }
    uv_signal_init(loop, &c.sigterm);
    uv_signal_init(loop, &c.sigint);
    c.sigterm.data = c.sigint.data = &c;
    uv_signal_start(&c.sigterm, cons_stop, SIGTERM);
    uv_signal_start(&c.sigint, cons_stop, SIGINT);
    uv_run(loop, UV_RUN_DEFAULT);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc >= 4 && !strcmp(argv[1], "relay"))
        return run_relay(argv[2], strtoul(argv[3], NULL, 10),
                         argc > 4 ? strtoul(argv[4], NULL, 10) : 600);
    if (argc >= 4 && !strcmp(argv[1], "bare"))
        return run_bare(argv[2], strtoul(argv[3], NULL, 10),
                        argc > 4 ? strtoul(argv[4], NULL, 10) : 600);
    if (argc >= 5 && !strcmp(argv[1], "consume"))
        return run_consume(argv[2], argv[3], (const char *const *)&argv[4], (size_t)argc - 4);
    fprintf(stderr,
            "usage: lm_evbench relay|bare URL N [BYTES] | consume URL SERVICE PATTERN...\n");
    return 2;
}
