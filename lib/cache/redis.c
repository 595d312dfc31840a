/* redis.c — lm_redis: a per-loop hiredis connection with reconnects, timeouts and scripts.
 * See redis.h. */
#include "redis.h"

#include "buf.h"

#include <hiredis/adapters/libuv.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RING           4096 /* commands pending on one connection at most */
#define RETRY_MIN_MS   100
#define RETRY_MAX_MS   2000
#define SWEEP_EVERY_MS 50

struct lm_redis {
    uv_loop_t *loop;
    lm_redis_addr addr;
    uint64_t timeout_ms;
    char **scripts;
    char (*shas)[41];
    size_t n_scripts;
    lm_redis_state_cb on_state;
    void *state_ud;
    redisAsyncContext *ac; /* NULL while down */
    bool up;               /* connected and set up (AUTH, SELECT, scripts sent) */
    bool reported_down;    /* on_state(false) called since the last up */
    bool closing;
    uint64_t connecting_since; /* when the pending connect started (ac set, not up) */
    uint64_t retry_ms;
    uv_timer_t retry; /* reconnect */
    uv_timer_t sweep; /* command timeouts */
    int open_handles;
    uint64_t sent[RING]; /* send times of the pending commands, oldest at head */
    size_t head, n;
};

typedef struct pending {
    lm_redis *r;
    lm_redis_cb cb;
    void *ud;
} pending;

int lm_redis_parse_url(const char *url, lm_redis_addr *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    out->port = 6379;
    if (strncmp(url, "redis://", 8) != 0) {
        snprintf(err, errlen, "must be redis://[:password@]host[:port][/db]");
        return -1;
    }
    const char *p = url + 8;
    const char *slash = strchr(p, '/');
    const char *end = slash ? slash : p + strlen(p);
    const char *at = memrchr(p, '@', (size_t)(end - p));
    if (at) {
        const char *colon = memchr(p, ':', (size_t)(at - p));
        const char *pw = colon ? colon + 1 : p; /* "redis://password@host" as some clients */
        size_t n = (size_t)(at - pw);
        if (n >= sizeof out->password) {
            snprintf(err, errlen, "the password is too long");
            return -1;
        }
        memcpy(out->password, pw, n);
        out->password[n] = '\0';
        p = at + 1;
    }
    const char *colon = memrchr(p, ':', (size_t)(end - p));
    const char *host_end = colon ? colon : end;
    if (host_end == p || (size_t)(host_end - p) >= sizeof out->host) {
        snprintf(err, errlen, "needs a host: redis://host[:port][/db]");
        return -1;
    }
    memcpy(out->host, p, (size_t)(host_end - p));
    out->host[host_end - p] = '\0';
    if (colon) {
        char *e;
        long port = strtol(colon + 1, &e, 10);
        if (e != end || colon + 1 == end || port < 1 || port > 65535) {
            snprintf(err, errlen, "the port must be an integer from 1 to 65535");
            return -1;
        }
        out->port = (int)port;
    }
    if (slash && slash[1]) {
        char *e;
        long db = strtol(slash + 1, &e, 10);
        if (*e || db < 0 || db > 1000) {
            /* not echoed: the URL may hold a password */
            snprintf(err, errlen, "the database must be an integer from 0 to 1000");
            return -1;
        }
        out->db = (int)db;
    }
    return 0;
}

static void on_retry(uv_timer_t *t);

static uint64_t now_ms(lm_redis *r)
{
    return uv_now(r->loop);
}

static void set_down(lm_redis *r, const char *why)
{
    r->up = false;
    if (!r->reported_down && !r->closing) {
        r->reported_down = true;
        if (r->on_state) r->on_state(r->state_ud, false, why);
    }
}

static void schedule_retry(lm_redis *r)
{
    if (r->closing) return;
    uv_timer_start(&r->retry, on_retry, r->retry_ms, 0);
    r->retry_ms = r->retry_ms * 2 > RETRY_MAX_MS ? RETRY_MAX_MS : r->retry_ms * 2;
}

static void on_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    (void)ac;
    pending *p = privdata;
    lm_redis *r = p->r;
    if (r->n) {
        r->head = (r->head + 1) % RING;
        r->n--;
    }
    p->cb(p->ud, reply);
    free(p);
}

static void on_setup_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    lm_redis *r = ac->data;
    const char *what = privdata;
    redisReply *rep = reply;
    if (!r || r->closing || r->ac != ac) return;
    if (!rep || rep->type == REDIS_REPLY_ERROR) {
        char why[400];
        snprintf(why, sizeof why, "%s failed: %.100s", what, rep ? rep->str : "no answer");
        set_down(r, why);
        redisAsyncDisconnect(ac);
    }
}

static void on_connect(const redisAsyncContext *cac, int status)
{
    redisAsyncContext *ac = (redisAsyncContext *)cac;
    lm_redis *r = ac->data;
    if (!r || r->closing) return;
    if (status != REDIS_OK) {
        char why[400];
        snprintf(why, sizeof why, "cannot connect to %.100s:%d: %.100s", r->addr.host, r->addr.port,
                 ac->errstr[0] ? ac->errstr : "error");
        r->ac = NULL; /* hiredis frees it after this callback */
        set_down(r, why);
        schedule_retry(r);
        return;
    }
    r->up = true;
    r->retry_ms = RETRY_MIN_MS;
    r->reported_down = false;
    if (r->on_state) r->on_state(r->state_ud, true, NULL);
}

static void on_disconnect(const redisAsyncContext *cac, int status)
{
    redisAsyncContext *ac = (redisAsyncContext *)cac;
    lm_redis *r = ac->data;
    if (!r || r->ac != ac) return;
    r->ac = NULL;
    r->n = r->head = 0;
    if (r->closing) return;
    char why[400];
    snprintf(why, sizeof why, "connection to %.100s:%d lost%s%.100s", r->addr.host, r->addr.port,
             status == REDIS_OK ? "" : ": ", status == REDIS_OK ? "" : ac->errstr);
    set_down(r, why);
    schedule_retry(r);
}

static void connect_now(lm_redis *r)
{
    redisAsyncContext *ac = redisAsyncConnect(r->addr.host, r->addr.port);
    if (!ac || ac->err) {
        char why[400];
        snprintf(why, sizeof why, "cannot connect to %.100s:%d: %.100s", r->addr.host, r->addr.port,
                 ac ? ac->errstr : "out of memory");
        if (ac) redisAsyncFree(ac);
        set_down(r, why);
        schedule_retry(r);
        return;
    }
    ac->data = r;
    r->ac = ac;
    r->connecting_since = now_ms(r);
    redisLibuvAttach(ac, r->loop);
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    /* queued now, sent first once connected, before any caller's command */
    if (r->addr.password[0]) {
        const char *argv[] = {"AUTH", r->addr.password};
        redisAsyncCommandArgv(ac, on_setup_reply, "AUTH", 2, argv, NULL);
    }
    if (r->addr.db) {
        char db[16];
        snprintf(db, sizeof db, "%d", r->addr.db);
        const char *argv[] = {"SELECT", db};
        redisAsyncCommandArgv(ac, on_setup_reply, "SELECT", 2, argv, NULL);
    }
    for (size_t i = 0; i < r->n_scripts; i++) {
        const char *argv[] = {"SCRIPT", "LOAD", r->scripts[i]};
        redisAsyncCommandArgv(ac, on_setup_reply, "SCRIPT LOAD", 3, argv, NULL);
    }
}

static void on_retry(uv_timer_t *t)
{
    lm_redis *r = t->data;
    if (!r->closing && !r->ac) connect_now(r);
}

static void on_sweep(uv_timer_t *t)
{
    lm_redis *r = t->data;
    if (r->ac && !r->up && now_ms(r) - r->connecting_since > r->timeout_ms) {
        /* hiredis 0.14's libuv adapter ignores a poll error (a refused connect reports
         * one), so a failed connect never completes by itself: give up on it here */
        char why[400];
        snprintf(why, sizeof why, "cannot connect to %.100s:%d within %llu ms", r->addr.host,
                 r->addr.port, (unsigned long long)r->timeout_ms);
        redisAsyncContext *ac = r->ac;
        r->ac = NULL;
        ac->data = NULL;
        redisAsyncFree(ac);
        set_down(r, why);
        schedule_retry(r);
        return;
    }
    if (r->ac && r->n && now_ms(r) - r->sent[r->head] > r->timeout_ms) {
        char why[400];
        snprintf(why, sizeof why, "%.100s:%d did not answer within %llu ms", r->addr.host,
                 r->addr.port, (unsigned long long)r->timeout_ms);
        set_down(r, why);
        redisAsyncDisconnect(r->ac); /* pending commands are answered with NULL */
    }
}

static void sha1_hex(const char *text, char out[41])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    EVP_Digest(text, strlen(text), md, &n, EVP_sha1(), NULL);
    for (unsigned int i = 0; i < n && i < 20; i++)
        snprintf(out + 2 * i, 3, "%02x", md[i]);
    out[40] = '\0';
}

lm_redis *lm_redis_new(uv_loop_t *loop, const lm_redis_addr *addr, uint64_t timeout_ms,
                       const char *const *scripts, size_t n_scripts, lm_redis_state_cb on_state,
                       void *state_ud)
{
    lm_redis *r = lm_xcalloc(1, sizeof *r);
    r->loop = loop;
    r->addr = *addr;
    r->timeout_ms = timeout_ms ? timeout_ms : 1000;
    r->on_state = on_state;
    r->state_ud = state_ud;
    r->retry_ms = RETRY_MIN_MS;
    r->n_scripts = n_scripts;
    r->scripts = lm_xcalloc(n_scripts + 1, sizeof *r->scripts);
    r->shas = lm_xcalloc(n_scripts + 1, sizeof *r->shas);
    for (size_t i = 0; i < n_scripts; i++) {
        r->scripts[i] = lm_xstrdup(scripts[i]);
        sha1_hex(scripts[i], r->shas[i]);
    }
    uv_timer_init(loop, &r->retry);
    uv_timer_init(loop, &r->sweep);
    r->retry.data = r->sweep.data = r;
    r->open_handles = 2;
    uv_timer_start(&r->sweep, on_sweep, SWEEP_EVERY_MS, SWEEP_EVERY_MS);
    uv_unref((uv_handle_t *)&r->sweep);
    connect_now(r);
    return r;
}

static void on_handle_closed(uv_handle_t *h)
{
    lm_redis *r = h->data;
    if (--r->open_handles) return;
    for (size_t i = 0; i < r->n_scripts; i++)
        free(r->scripts[i]);
    free(r->scripts);
    free(r->shas);
    free(r);
}

void lm_redis_free(lm_redis *r)
{
    if (!r) return;
    r->closing = true;
    if (r->ac) {
        redisAsyncContext *ac = r->ac;
        r->ac = NULL;
        ac->data = NULL;
        redisAsyncFree(ac); /* answers every pending command with NULL */
    }
    uv_close((uv_handle_t *)&r->retry, on_handle_closed);
    uv_close((uv_handle_t *)&r->sweep, on_handle_closed);
}

bool lm_redis_up(const lm_redis *r)
{
    return r && r->up && r->ac;
}

static int send_argv(lm_redis *r, lm_redis_cb cb, void *ud, int argc, const char **argv,
                     const size_t *argvlen)
{
    if (!lm_redis_up(r) || r->n == RING) return -1;
    pending *p = lm_xcalloc(1, sizeof *p);
    p->r = r;
    p->cb = cb;
    p->ud = ud;
    if (redisAsyncCommandArgv(r->ac, on_reply, p, argc, argv, argvlen) != REDIS_OK) {
        free(p);
        return -1;
    }
    r->sent[(r->head + r->n) % RING] = now_ms(r);
    r->n++;
    return 0;
}

int lm_redis_cmd(lm_redis *r, lm_redis_cb cb, void *ud, int argc, const char **argv,
                 const size_t *argvlen)
{
    return send_argv(r, cb, ud, argc, argv, argvlen);
}

int lm_redis_eval(lm_redis *r, size_t script, lm_redis_cb cb, void *ud, int numkeys, int argc,
                  const char **argv, const size_t *argvlen)
{
    if (script >= r->n_scripts || argc > 30) return -1;
    const char *av[32];
    size_t al[32];
    char nk[16];
    snprintf(nk, sizeof nk, "%d", numkeys);
    av[0] = "EVALSHA";
    al[0] = 7;
    av[1] = r->shas[script];
    al[1] = 40;
    av[2] = nk;
    al[2] = strlen(nk);
    for (int i = 0; i < argc; i++) {
        av[3 + i] = argv[i];
        al[3 + i] = argvlen ? argvlen[i] : strlen(argv[i]);
    }
    return send_argv(r, cb, ud, argc + 3, av, al);
}
