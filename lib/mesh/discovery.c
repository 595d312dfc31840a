/* discovery.c — the discovery cache and the watches that keep it fresh (lm_disc). See
 * discovery.h.
 *
 * Pieces:
 *   slot      one watched service name: its current lm_disc_set (under d->mu), a
 *             generation that moves with every swap, and its watch (control loop only).
 *             Slots are never removed; the array is append-only and its length is
 *             published with release semantics, so lookups find names without a lock.
 *   wcache    per worker thread: a reference to each slot's set and the generation it was
 *             taken at, plus a round-robin cursor; touched only by its worker.
 *   watches   one blocking query per slot on the control loop, through one lm_client owned
 *             here; failures retry after lm_consul_retry_ms. */
#include "discovery.h"

#include "buf.h"
#include "client.h"
#include "consul.h"
#include "dnsdisc.h"
#include "log.h"
#include "parse.h"
#include "url.h"

#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RETRY_MAX_MS     5000
#define WATCH_MIN_GAP_MS 100 /* at most ten queries a second per service */
#define REQ_TIMEOUT_MS   2000
#define NAME_MAX_LEN     128

struct lm_disc_set {
    atomic_uint refs;
    size_t n;
    lm_disc_instance *items; /* strings owned by the set */
};

typedef struct slot {
    char name[NAME_MAX_LEN + 1]; /* immutable once published */
    atomic_uint gen;
    lm_disc_set *set; /* d->mu */
    atomic_uint rr;   /* round-robin for threads without a wcache */
    atomic_ullong m_updates, m_errors, m_misses;
    atomic_uint m_instances;
    /* control loop only */
    bool started;
    uint64_t index;
    unsigned failures;
    uint64_t sent_ms;
    lm_client_req *inflight;
    uv_timer_t timer;
    struct lm_disc *reg;
    size_t idx; /* position in d->slots, immutable */
} slot;

typedef struct wentry {
    unsigned gen;
    lm_disc_set *set;
    unsigned rr;
} wentry;

struct lm_disc {
    uv_loop_t *loop; /* the control loop */
    lm_component comp;
    lm_disc_mode mode;
    lm_disc_registry registry;
    uint64_t watch_wait_ms;
    lm_dnsdisc *dns; /* dns: mode; handed to the control loop by lm_dnsdisc_stop */
    uint64_t dns_refresh_ms;

    pthread_mutex_t mu;
    slot *slots[LM_DISC_MAX_SERVICES];
    atomic_size_t n_slots;
    bool async_ok; /* mu: the control loop's watch_async may be signalled */

    int n_workers;
    wentry **wcache; /* [worker][slot] */

    /* control loop */
    lm_client *client;
    uv_async_t watch_async; /* new slots to start */
    bool running, stopping;
};

/* ---- sets ------------------------------------------------------------------------------ */

static lm_disc_set *set_new(size_t n)
{
    lm_disc_set *s = lm_xcalloc(1, sizeof *s);
    atomic_init(&s->refs, 1);
    s->items = n ? lm_xcalloc(n, sizeof *s->items) : NULL;
    return s;
}

static void set_add(lm_disc_set *s, const char *id, const char *host, int port,
                    const char *const *tags, size_t n_tags)
{
    lm_disc_instance *in = &s->items[s->n++];
    in->id = lm_xstrdup(id);
    in->host = lm_xstrdup(host);
    in->port = port;
    char **t = lm_xcalloc(n_tags + 1, sizeof *t);
    for (size_t i = 0; i < n_tags; i++)
        t[i] = lm_xstrdup(tags[i]);
    in->tags = (const char *const *)t;
    in->n_tags = n_tags;
}

static lm_disc_set *set_ref(lm_disc_set *s)
{
    if (s) atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed);
    return s;
}

lm_disc_set *lm_disc_set_retain(lm_disc_set *s)
{
    if (s) atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed);
    return s;
}

void lm_disc_set_release(lm_disc_set *s)
{
    if (!s || atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) != 1) return;
    for (size_t i = 0; i < s->n; i++) {
        lm_disc_instance *in = &s->items[i];
        free((char *)in->id);
        free((char *)in->host);
        for (size_t j = 0; j < in->n_tags; j++)
            free((char *)in->tags[j]);
        free((void *)in->tags);
    }
    free(s->items);
    free(s);
}

size_t lm_disc_set_count(const lm_disc_set *s)
{
    return s ? s->n : 0;
}

const lm_disc_instance *lm_disc_set_get(const lm_disc_set *s, size_t i)
{
    return s && i < s->n ? &s->items[i] : NULL;
}

static bool sets_equal(const lm_disc_set *a, const lm_disc_set *b)
{
    if (!a || !b) return a == b;
    if (a->n != b->n) return false;
    for (size_t i = 0; i < a->n; i++) {
        const lm_disc_instance *x = &a->items[i], *y = &b->items[i];
        if (x->port != y->port || strcmp(x->id, y->id) || strcmp(x->host, y->host) ||
            x->n_tags != y->n_tags)
            return false;
        for (size_t j = 0; j < x->n_tags; j++)
            if (strcmp(x->tags[j], y->tags[j])) return false;
    }
    return true;
}

lm_disc_set *lm_disc_set_from_health(const char *body, size_t len, char *err, size_t errlen)
{
    json_error_t jerr;
    json_t *doc = json_loadb(body, len, 0, &jerr);
    if (!doc) {
        snprintf(err, errlen, "malformed JSON at line %d, column %d: %s", jerr.line, jerr.column,
                 jerr.text);
        return NULL;
    }
    if (!json_is_array(doc)) {
        snprintf(err, errlen, "expected an array of health entries");
        json_decref(doc);
        return NULL;
    }
    lm_disc_set *s = set_new(json_array_size(doc));
    size_t i;
    json_t *e;
    json_array_foreach(doc, i, e)
    {
        json_t *svc = lm_consul_get(e, "Service");
        const char *id = json_string_value(lm_consul_get(svc, "ID"));
        const char *addr = json_string_value(lm_consul_get(svc, "Address"));
        json_t *port = lm_consul_get(svc, "Port");
        if (!addr || !*addr)
            addr = json_string_value(lm_consul_get(lm_consul_get(e, "Node"), "Address"));
        if (!id || !addr || !*addr || !json_is_integer(port) || json_integer_value(port) < 1 ||
            json_integer_value(port) > 65535) {
            snprintf(err, errlen,
                     "entry %zu lacks Service.ID, an address or a port from 1 to 65535", i);
            lm_disc_set_release(s);
            json_decref(doc);
            return NULL;
        }
        json_t *tags = lm_consul_get(svc, "Tags");
        const char *tv[64];
        size_t nt = 0, k;
        json_t *t;
        json_array_foreach(tags, k, t)
        {
            if (json_is_string(t) && nt < 64) tv[nt++] = json_string_value(t);
        }
        set_add(s, id, addr, (int)json_integer_value(port), tv, nt);
    }
    json_decref(doc);
    return s;
}

/* ---- static: parsing ------------------------------------------------------------------- */

int lm_disc_parse_static(const char *spec, lm_disc_static_fn fn, void *ctx, char *err,
                         size_t errlen)
{
    char *copy = lm_xstrdup(spec ? spec : "");
    char *names[LM_DISC_MAX_SERVICES];
    size_t n_names = 0;
    int rc = -1;
    char *save = NULL;
    lm_url *urls = lm_xcalloc(64, sizeof *urls);
    for (char *ent = strtok_r(copy, ";", &save); ent; ent = strtok_r(NULL, ";", &save)) {
        ent = lm_parse_trim(ent);
        if (!*ent) continue;
        char *eq = strchr(ent, '=');
        if (!eq) {
            snprintf(err, errlen, "\"%.64s\" is not name=url[,url…]", ent);
            goto out;
        }
        *eq = '\0';
        char *name = lm_parse_trim(ent), *list = eq + 1;
        if (!*name || strlen(name) > NAME_MAX_LEN) {
            snprintf(err, errlen, "a service name must be 1 to %d characters", NAME_MAX_LEN);
            goto out;
        }
        for (size_t i = 0; i < n_names; i++)
            if (strcmp(names[i], name) == 0) {
                snprintf(err, errlen, "service \"%.64s\" is given twice", name);
                goto out;
            }
        if (n_names == LM_DISC_MAX_SERVICES) {
            snprintf(err, errlen, "more than %d services", LM_DISC_MAX_SERVICES);
            goto out;
        }
        names[n_names++] = name;
        const char *hosts[64];
        int ports[64];
        size_t n = 0;
        char *save2 = NULL;
        for (char *u = strtok_r(list, ",", &save2); u; u = strtok_r(NULL, ",", &save2)) {
            u = lm_parse_trim(u);
            if (!*u) continue;
            if (n == 64) {
                snprintf(err, errlen, "service \"%.64s\": more than 64 URLs", name);
                goto out;
            }
            char uerr[256];
            if (lm_url_parse(u, &urls[n], uerr, sizeof uerr) != 0) {
                snprintf(err, errlen, "service \"%.64s\": %s", name, uerr);
                goto out;
            }
            if (urls[n].path[0] && strcmp(urls[n].path, "/") != 0) {
                snprintf(err, errlen,
                         "service \"%.64s\": \"%.100s\" has a path; give the "
                         "instance's origin http://host:port",
                         name, u);
                goto out;
            }
            hosts[n] = urls[n].host;
            ports[n] = urls[n].port;
            n++;
        }
        if (n == 0) {
            snprintf(err, errlen, "service \"%.64s\" has no URL", name);
            goto out;
        }
        if (fn) fn(ctx, name, hosts, ports, n);
    }
    if (n_names == 0) {
        snprintf(err, errlen, "no service given (expected static:name=http://host:port,…;…)");
        goto out;
    }
    rc = 0;
out:
    free(urls);
    free(copy);
    return rc;
}

/* ---- slots and lookups ----------------------------------------------------------------- */

static slot *slot_find(lm_disc *reg, const char *name)
{
    size_t n = atomic_load_explicit(&reg->n_slots, memory_order_acquire);
    for (size_t i = 0; i < n; i++)
        if (strcmp(reg->slots[i]->name, name) == 0) return reg->slots[i];
    return NULL;
}

/* Swaps in a new set (taking the reference); false when equal to the current one. */
static bool slot_publish(lm_disc *reg, slot *s, lm_disc_set *set)
{
    pthread_mutex_lock(&reg->mu);
    if (sets_equal(s->set, set)) {
        pthread_mutex_unlock(&reg->mu);
        lm_disc_set_release(set);
        return false;
    }
    lm_disc_set *old = s->set;
    s->set = set;
    atomic_fetch_add_explicit(&s->gen, 1, memory_order_release);
    atomic_store_explicit(&s->m_instances, (unsigned)lm_disc_set_count(set), memory_order_relaxed);
    pthread_mutex_unlock(&reg->mu);
    lm_disc_set_release(old);
    return true;
}

/* Finds or creates the slot for name. Returns NULL when the table is full or the name is
 * unusable. created tells whether it is new. */
static slot *slot_get(lm_disc *reg, const char *name, bool *created)
{
    *created = false;
    slot *s = slot_find(reg, name);
    if (s) return s;
    if (!*name || strlen(name) > NAME_MAX_LEN) return NULL;
    pthread_mutex_lock(&reg->mu);
    s = slot_find(reg, name);
    size_t n = atomic_load_explicit(&reg->n_slots, memory_order_relaxed);
    if (!s && n < LM_DISC_MAX_SERVICES) {
        s = lm_xcalloc(1, sizeof *s);
        snprintf(s->name, sizeof s->name, "%s", name);
        s->reg = reg;
        s->idx = n;
        reg->slots[n] = s;
        atomic_store_explicit(&reg->n_slots, n + 1, memory_order_release);
        *created = true;
        if (reg->mode == LM_DISC_REGISTRY && reg->async_ok) uv_async_send(&reg->watch_async);
    }
    pthread_mutex_unlock(&reg->mu);
    return s;
}

int lm_disc_watch(lm_disc *reg, const char *service)
{
    bool created;
    return slot_get(reg, service, &created) ? 0 : -1;
}

/* The current set of s for the calling thread: a borrowed pointer into the worker's cache
 * (*owned false) or a new reference (*owned true). rr: the round-robin cursor to use. */
static lm_disc_set *current_set(lm_disc *reg, slot *s, bool *owned, unsigned *rr)
{
    lm_worker *w = lm_worker_current();
    int wi = w ? lm_worker_index(w) : -1;
    if (wi >= 0 && wi < reg->n_workers && reg->wcache[wi]) {
        wentry *e = &reg->wcache[wi][s->idx];
        unsigned g = atomic_load_explicit(&s->gen, memory_order_acquire);
        if (e->gen != g) {
            pthread_mutex_lock(&reg->mu);
            lm_disc_set *fresh = set_ref(s->set);
            e->gen = atomic_load_explicit(&s->gen, memory_order_relaxed);
            pthread_mutex_unlock(&reg->mu);
            lm_disc_set_release(e->set);
            e->set = fresh;
        }
        *owned = false;
        *rr = e->rr++;
        return e->set;
    }
    pthread_mutex_lock(&reg->mu);
    lm_disc_set *set = set_ref(s->set);
    pthread_mutex_unlock(&reg->mu);
    *owned = true;
    *rr = atomic_fetch_add_explicit(&s->rr, 1, memory_order_relaxed);
    return set;
}

bool lm_disc_pick(lm_disc *reg, const char *service, lm_disc_addr *out)
{
    bool created, owned;
    unsigned rr;
    slot *s = slot_get(reg, service, &created);
    if (!s) return false;
    lm_disc_set *set = current_set(reg, s, &owned, &rr);
    bool ok = set && set->n > 0;
    if (ok) {
        const lm_disc_instance *in = &set->items[rr % set->n];
        snprintf(out->host, sizeof out->host, "%s", in->host);
        out->port = in->port;
    } else {
        atomic_fetch_add_explicit(&s->m_misses, 1, memory_order_relaxed);
    }
    if (owned) lm_disc_set_release(set);
    return ok;
}

lm_disc_set *lm_disc_instances(lm_disc *reg, const char *service)
{
    bool created, owned;
    unsigned rr;
    slot *s = slot_get(reg, service, &created);
    if (!s) return NULL;
    lm_disc_set *set = current_set(reg, s, &owned, &rr); /* a worker: no lock */
    if (!owned) set_ref(set);
    if (set && set->n) return set;
    lm_disc_set_release(set);
    atomic_fetch_add_explicit(&s->m_misses, 1, memory_order_relaxed);
    return NULL;
}

/* ---- watches (control loop) ------------------------------------------------------------ */

static void watch_send(slot *s);

static void on_watch_timer(uv_timer_t *t)
{
    watch_send(t->data);
}

static void watch_later(slot *s, uint64_t ms)
{
    if (s->reg->stopping) return;
    uv_timer_start(&s->timer, on_watch_timer, ms, 0);
}

static void watch_done(lm_client_req *r, lm_client_err err, const lm_client_response *resp,
                       void *ud)
{
    (void)r;
    slot *s = ud;
    lm_disc *reg = s->reg;
    s->inflight = NULL;
    if (err == LM_CLIENT_ERR_CANCELLED || reg->stopping) return;
    char why[300] = "";
    lm_disc_set *set = NULL;
    uint64_t index = 0;
    if (err != LM_CLIENT_OK) {
        snprintf(why, sizeof why, "%s", lm_client_strerror(err));
    } else if (resp->status != 200) {
        snprintf(why, sizeof why, "HTTP %d: %.200s", resp->status, resp->body ? resp->body : "");
    } else {
        const char *ix = lm_client_response_header(resp, "X-Consul-Index");
        if (!ix || !lm_parse_uint(ix, &index)) index = 0;
        set = lm_disc_set_from_health(resp->body, resp->body_len, why, sizeof why);
    }
    if (!set) {
        atomic_fetch_add_explicit(&s->m_errors, 1, memory_order_relaxed);
        if (s->failures++ == 0)
            lm_log_warn("discovery: watch of %s failing (%s); keeping its last %u instances",
                        s->name, why, atomic_load(&s->m_instances));
        s->index = 0; /* resynchronise with a plain query once the registry answers again */
        watch_later(s, lm_consul_retry_ms(s->failures));
        return;
    }
    if (s->failures) lm_log_info("discovery: watch of %s answers again", s->name);
    s->failures = 0;
    atomic_fetch_add_explicit(&s->m_updates, 1, memory_order_relaxed);
    size_t n = set->n;
    if (slot_publish(reg, s, set))
        lm_log_info("discovery: %s has %zu passing instance%s", s->name, n, n == 1 ? "" : "s");
    /* An index that went backwards means a new registry: start over (Consul's advice). */
    s->index = index < s->index ? 0 : index;
    uint64_t now = uv_now(reg->loop);
    uint64_t gap = now - s->sent_ms;
    watch_later(s, gap < WATCH_MIN_GAP_MS ? WATCH_MIN_GAP_MS - gap : 0);
}

static void watch_send(slot *s)
{
    lm_disc *reg = s->reg;
    if (reg->stopping || s->inflight) return;
    lm_buf path = LM_BUF_INIT;
    lm_buf_append_str(&path, "/v1/health/service/");
    lm_url_append_segment(&path, s->name);
    lm_buf_append_str(&path, "?passing=1");
    uint64_t timeout = REQ_TIMEOUT_MS * 5;
    if (s->index) {
        char wait[32];
        lm_consul_format_duration(reg->watch_wait_ms, wait, sizeof wait);
        lm_buf_printf(&path, "&index=%llu&wait=%s", (unsigned long long)s->index, wait);
        timeout = reg->watch_wait_ms + reg->watch_wait_ms / 16 + 5000;
    }
    lm_client_opts o = {
        .method = "GET",
        .host = reg->registry.host,
        .port = reg->registry.port,
        .path = lm_buf_cstr(&path),
        .connect_timeout_ms = REQ_TIMEOUT_MS,
        .queue_timeout_ms = REQ_TIMEOUT_MS,
        .response_timeout_ms = timeout,
        .on_done = watch_done,
        .ud = s,
    };
    s->sent_ms = uv_now(reg->loop);
    s->inflight = lm_client_send(reg->client, &o);
    lm_buf_free(&path);
    if (!s->inflight) watch_later(s, RETRY_MAX_MS);
}

static void start_new_watches(lm_disc *reg)
{
    size_t n = atomic_load_explicit(&reg->n_slots, memory_order_acquire);
    for (size_t i = 0; i < n; i++) {
        slot *s = reg->slots[i];
        if (s->started) continue;
        s->started = true;
        uv_timer_init(reg->loop, &s->timer);
        s->timer.data = s;
        watch_send(s);
    }
}

static void on_watch_async(uv_async_t *a)
{
    start_new_watches(a->data);
}

/* ---- lifecycle ------------------------------------------------------------------------- */

static void on_started(void *ctx, int port)
{
    (void)port;
    lm_disc *reg = ctx;
    if (reg->mode == LM_DISC_DNS) {
        lm_dnsdisc_start(reg->dns, reg->loop);
        return;
    }
    if (reg->mode != LM_DISC_REGISTRY) return;
    reg->client = lm_client_new(reg->loop, NULL);
    uv_async_init(reg->loop, &reg->watch_async, on_watch_async);
    reg->watch_async.data = reg;
    pthread_mutex_lock(&reg->mu);
    reg->async_ok = true;
    pthread_mutex_unlock(&reg->mu);
    reg->running = true;
    start_new_watches(reg);
}

static void on_stopping(void *ctx)
{
    lm_disc *reg = ctx;
    if (reg->mode == LM_DISC_DNS) {
        lm_dnsdisc_stop(reg->dns);
        reg->dns = NULL;
        return;
    }
    if (!reg->running) return;
    reg->running = false;
    reg->stopping = true;
    pthread_mutex_lock(&reg->mu);
    reg->async_ok = false;
    pthread_mutex_unlock(&reg->mu);
    size_t n = atomic_load_explicit(&reg->n_slots, memory_order_acquire);
    for (size_t i = 0; i < n; i++) {
        slot *s = reg->slots[i];
        if (s->started) uv_timer_stop(&s->timer);
        if (s->inflight) lm_client_cancel(s->inflight);
    }
    lm_client_close(reg->client, NULL, NULL);
    reg->client = NULL;
    uv_close((uv_handle_t *)&reg->watch_async, NULL);
    for (size_t i = 0; i < n; i++)
        if (reg->slots[i]->started) uv_close((uv_handle_t *)&reg->slots[i]->timer, NULL);
}

static void on_stopped(void *ctx)
{
    lm_disc *reg = ctx;        /* every worker, hook and handle that used it has ended */
    lm_dnsdisc_stop(reg->dns); /* never started (the process did not run) */
    size_t n = atomic_load_explicit(&reg->n_slots, memory_order_acquire);
    for (size_t i = 0; i < n; i++) {
        lm_disc_set_release(reg->slots[i]->set);
        free(reg->slots[i]);
    }
    for (int w = 0; w < reg->n_workers; w++)
        free(reg->wcache[w]);
    free(reg->wcache);
    pthread_mutex_destroy(&reg->mu);
    free(reg);
}

static void worker_start(lm_worker *w, void *ctx)
{
    lm_disc *reg = ctx;
    int i = lm_worker_index(w);
    if (i < reg->n_workers) reg->wcache[i] = lm_xcalloc(LM_DISC_MAX_SERVICES, sizeof(wentry));
}

static void worker_stop(lm_worker *w, void *ctx)
{
    lm_disc *reg = ctx;
    int i = lm_worker_index(w);
    if (i >= reg->n_workers || !reg->wcache[i]) return;
    for (size_t j = 0; j < LM_DISC_MAX_SERVICES; j++)
        lm_disc_set_release(reg->wcache[i][j].set);
    free(reg->wcache[i]);
    reg->wcache[i] = NULL;
}

static void render_metrics(lm_buf *out, void *ctx)
{
    lm_disc *reg = ctx;
#define LD(x) ((unsigned long long)atomic_load_explicit(&(x), memory_order_relaxed))
    if (reg->mode == LM_DISC_DNS) /* the watch series count resolutions */
        lm_buf_printf(out,
                      "# HELP lotmesh_discovery_dns_refresh_seconds How often dns: resolves "
                      "each name.\n"
                      "# TYPE lotmesh_discovery_dns_refresh_seconds gauge\n"
                      "lotmesh_discovery_dns_refresh_seconds %.3f\n",
                      (double)reg->dns_refresh_ms / 1000.0);
    size_t n = atomic_load_explicit(&reg->n_slots, memory_order_acquire);
    if (!n) return;
    static const char *const heads[] = {
        "# HELP lotmesh_discovery_instances Passing instances in the cache.\n"
        "# TYPE lotmesh_discovery_instances gauge\n",
        "# HELP lotmesh_discovery_watch_updates_total Watch answers received.\n"
        "# TYPE lotmesh_discovery_watch_updates_total counter\n",
        "# HELP lotmesh_discovery_watch_errors_total Watch queries that failed.\n"
        "# TYPE lotmesh_discovery_watch_errors_total counter\n",
        "# HELP lotmesh_discovery_lookup_misses_total Lookups that found no instance.\n"
        "# TYPE lotmesh_discovery_lookup_misses_total counter\n"};
    static const char *const names[] = {"instances", "watch_updates_total", "watch_errors_total",
                                        "lookup_misses_total"};
    for (int k = 0; k < 4; k++) {
        lm_buf_append_str(out, heads[k]);
        for (size_t i = 0; i < n; i++) {
            slot *s = reg->slots[i];
            unsigned long long v = k == 0   ? LD(s->m_instances)
                                   : k == 1 ? LD(s->m_updates)
                                   : k == 2 ? LD(s->m_errors)
                                            : LD(s->m_misses);
            lm_buf_printf(out, "lotmesh_discovery_%s{service=\"", names[k]);
            lm_buf_append_json_escaped(out, s->name, strlen(s->name));
            lm_buf_printf(out, "\"} %llu\n", v);
        }
    }
#undef LD
}

/* ---- opening --------------------------------------------------------------------------- */

static void static_add(void *ctx, const char *service, const char *const *hosts, const int *ports,
                       size_t n)
{
    lm_disc *reg = ctx;
    bool created;
    slot *s = slot_get(reg, service, &created);
    if (!s) return;
    lm_disc_set *set = set_new(n);
    for (size_t i = 0; i < n; i++) {
        char id[400];
        snprintf(id, sizeof id, "%s-%s-%d", service, hosts[i], ports[i]);
        set_add(set, id, hosts[i], ports[i], NULL, 0);
    }
    slot_publish(reg, s, set);
}

/* dns: one answer from lm_dnsdisc (control loop): the service's instances are exactly these
 * addresses; an error keeps the last answer. */
static void dns_publish(void *ctx, const char *service, const char *const *addrs, size_t n,
                        int port, int status)
{
    lm_disc *reg = ctx;
    bool created;
    slot *s = slot_get(reg, service, &created);
    if (!s) return;
    if (status != 0) {
        atomic_fetch_add_explicit(&s->m_errors, 1, memory_order_relaxed);
        if (s->failures++ == 0) /* once per run of failures */
            lm_log_warn("discovery: dns: cannot resolve the instances of %s: %s; keeping %u",
                        service, uv_strerror(status),
                        atomic_load_explicit(&s->m_instances, memory_order_relaxed));
        return;
    }
    s->failures = 0;
    atomic_fetch_add_explicit(&s->m_updates, 1, memory_order_relaxed);
    lm_disc_set *set = set_new(n);
    for (size_t i = 0; i < n; i++) {
        char id[400];
        snprintf(id, sizeof id, "%s-%s-%d", service, addrs[i], port);
        set_add(set, id, addrs[i], port, NULL, 0);
    }
    if (slot_publish(reg, s, set)) lm_log_info("discovery: dns: %s has %zu instances", service, n);
}

lm_disc *lm_disc_open(lm_cfg *cfg, const lm_component_env *env)
{
    lm_disc *reg = lm_xcalloc(1, sizeof *reg);
    reg->loop = env->control;
    pthread_mutex_init(&reg->mu, NULL);
    const char *url = lm_cfg_str(cfg, "SERVICE_REGISTRY_URL", NULL);
    const char *watch = lm_cfg_str(cfg, "SERVICE_WATCH", NULL);
    reg->watch_wait_ms = lm_cfg_duration_ms(cfg, "SERVICE_WATCH_WAIT", 300000, 1000, 600000);
    reg->dns_refresh_ms = lm_cfg_duration_ms(cfg, "SERVICE_DNS_REFRESH", 5000, 100, 3600000);
    reg->n_workers = env->workers;
    reg->wcache = lm_xcalloc((size_t)reg->n_workers, sizeof *reg->wcache);

    char err[400];
    if (!url) {
        reg->mode = LM_DISC_NONE;
    } else if (strncmp(url, "static:", 7) == 0) {
        reg->mode = LM_DISC_STATIC;
        snprintf(reg->registry.url, sizeof reg->registry.url, "static");
        if (lm_disc_parse_static(url + 7, static_add, reg, err, sizeof err) != 0)
            lm_cfg_error(cfg, "SERVICE_REGISTRY_URL", "static: %s", err);
    } else if (strncmp(url, "dns:", 4) == 0) {
        reg->mode = LM_DISC_DNS;
        reg->dns = lm_dnsdisc_new(url + 4, reg->dns_refresh_ms, dns_publish, reg, err, sizeof err);
        if (!reg->dns)
            lm_cfg_error(cfg, "SERVICE_REGISTRY_URL", "dns: %s", err);
        else
            for (size_t i = 0; i < lm_dnsdisc_count(reg->dns); i++)
                lm_disc_watch(reg, lm_dnsdisc_service(reg->dns, i));
    } else {
        lm_url u;
        reg->mode = LM_DISC_REGISTRY;
        snprintf(reg->registry.url, sizeof reg->registry.url, "%s", url);
        if (lm_url_parse(url, &u, err, sizeof err) != 0)
            lm_cfg_error(cfg, "SERVICE_REGISTRY_URL",
                         "must be http://host:port, static:name=url,…;…, dns:name=host:port;… "
                         "or unset (%s)",
                         err);
        else if (u.path[0] && strcmp(u.path, "/") != 0)
            lm_cfg_error(cfg, "SERVICE_REGISTRY_URL",
                         "must be the registry's origin http://host:port (got a path: \"%.64s\")",
                         u.path);
        snprintf(reg->registry.host, sizeof reg->registry.host, "%s", u.host);
        reg->registry.port = u.port;
    }
    if (watch) { /* warm caches from the start, for the services this process calls */
        char *copy = lm_xstrdup(watch), *save = NULL;
        for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save))
            if (*lm_parse_trim(t) && lm_disc_watch(reg, lm_parse_trim(t)) != 0)
                lm_cfg_error(cfg, "SERVICE_WATCH", "\"%.64s\" is not a usable service name",
                             lm_parse_trim(t));
        free(copy);
    }
    reg->comp = (lm_component){.ctx = reg,
                               .worker_start = worker_start,
                               .worker_stop = worker_stop,
                               .started = on_started,
                               .stopping = on_stopping,
                               .stopped = on_stopped,
                               .metrics = render_metrics};
    if (lm_cfg_ok(cfg)) {
        if (reg->mode == LM_DISC_NONE)
            lm_log_info("discovery: SERVICE_REGISTRY_URL unset: standalone (no registration, "
                        "no lookups)");
        else if (reg->mode == LM_DISC_STATIC)
            lm_log_info("discovery: static instances for %zu services", atomic_load(&reg->n_slots));
        else if (reg->mode == LM_DISC_DNS)
            lm_log_info("discovery: dns: %zu services, resolved every %llu ms",
                        lm_dnsdisc_count(reg->dns), (unsigned long long)reg->dns_refresh_ms);
    }
    return reg;
}

const lm_component *lm_disc_component(lm_disc *reg)
{
    return &reg->comp;
}

lm_disc_mode lm_disc_get_mode(const lm_disc *reg)
{
    return reg->mode;
}

const lm_disc_registry *lm_disc_get_registry(const lm_disc *reg)
{
    return reg->mode == LM_DISC_REGISTRY ? &reg->registry : NULL;
}
