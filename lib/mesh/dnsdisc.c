/* dnsdisc.c — discovery through DNS (lm_dnsdisc). See dnsdisc.h.
 *
 * One entry per configured name, each with its own timer and at most one getaddrinfo in
 * flight. The object counts what still refers to it (timers not yet closed, lookups not yet
 * returned) and frees itself when stopped and that count is zero. */
#include "dnsdisc.h"

#include "buf.h"
#include "parse.h"

#include <ctype.h>
#include <errno.h>
#include <netdb.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct entry {
    char service[129];
    char host[256];
    int port;
    struct lm_dnsdisc *d;
    uv_timer_t timer;
    uv_getaddrinfo_t req;
    bool inflight;
} entry;

struct lm_dnsdisc {
    entry *entries;
    size_t n;
    uint64_t refresh_ms;
    lm_dnsdisc_fn fn;
    void *ctx;
    bool started, stopping;
    size_t pending; /* timers not closed + lookups not returned, once started */
};

static void maybe_free(lm_dnsdisc *d)
{
    if (!d->stopping || d->pending) return;
    free(d->entries);
    free(d);
}

static int parse_one(char *ent, entry *e, char *err, size_t errlen)
{
    char *eq = strchr(ent, '=');
    if (!eq) {
        snprintf(err, errlen, "\"%.64s\" is not name=host:port", ent);
        return -1;
    }
    *eq = '\0';
    char *name = lm_parse_trim(ent), *hp = lm_parse_trim(eq + 1);
    if (!*name || strlen(name) >= sizeof e->service) {
        snprintf(err, errlen, "a service name must be 1 to %zu characters", sizeof e->service - 1);
        return -1;
    }
    char *host = hp, *colon;
    if (*hp == '[') { /* [v6]:port */
        char *close = strchr(hp, ']');
        if (!close || close[1] != ':') {
            snprintf(err, errlen, "service \"%.64s\": \"%.100s\" is not [address]:port", name, hp);
            return -1;
        }
        *close = '\0';
        host = hp + 1;
        colon = close + 1;
    } else {
        colon = strrchr(hp, ':');
        if (!colon || strchr(hp, ':') != colon) {
            snprintf(err, errlen, "service \"%.64s\": \"%.100s\" is not host:port", name, hp);
            return -1;
        }
        *colon = '\0';
    }
    const char *port = colon + 1;
    char *end;
    errno = 0;
    long p = strtol(port, &end, 10);
    if (!*host || strlen(host) >= sizeof e->host || !isdigit((unsigned char)*port) || *end ||
        errno || p < 1 || p > 65535) {
        snprintf(err, errlen, "service \"%.64s\": needs a host and a port from 1 to 65535", name);
        return -1;
    }
    for (const char *c = host; *c; c++)
        if (!isalnum((unsigned char)*c) && !strchr(".-_:", *c)) {
            snprintf(err, errlen, "service \"%.64s\": \"%.100s\" is not a host name or address",
                     name, host);
            return -1;
        }
    snprintf(e->service, sizeof e->service, "%s", name);
    snprintf(e->host, sizeof e->host, "%s", host);
    e->port = (int)p;
    return 0;
}

lm_dnsdisc *lm_dnsdisc_new(const char *spec, uint64_t refresh_ms, lm_dnsdisc_fn fn, void *ctx,
                           char *err, size_t errlen)
{
    lm_dnsdisc *d = lm_xcalloc(1, sizeof *d);
    d->entries = lm_xcalloc(LM_DNSDISC_MAX_NAMES, sizeof *d->entries);
    d->refresh_ms = refresh_ms;
    d->fn = fn;
    d->ctx = ctx;
    char *copy = lm_xstrdup(spec ? spec : ""), *save = NULL;
    int rc = 0;
    for (char *ent = strtok_r(copy, ";", &save); ent && rc == 0; ent = strtok_r(NULL, ";", &save)) {
        ent = lm_parse_trim(ent);
        if (!*ent) continue;
        if (d->n == LM_DNSDISC_MAX_NAMES) {
            snprintf(err, errlen, "more than %d services", LM_DNSDISC_MAX_NAMES);
            rc = -1;
            break;
        }
        entry *e = &d->entries[d->n];
        rc = parse_one(ent, e, err, errlen);
        for (size_t i = 0; rc == 0 && i < d->n; i++)
            if (strcmp(d->entries[i].service, e->service) == 0) {
                snprintf(err, errlen, "service \"%.64s\" is given twice", e->service);
                rc = -1;
            }
        if (rc == 0) d->n++;
    }
    free(copy);
    if (rc == 0 && d->n == 0) {
        snprintf(err, errlen, "no service given (expected dns:name=host:port;…)");
        rc = -1;
    }
    if (rc != 0) {
        free(d->entries);
        free(d);
        return NULL;
    }
    return d;
}

size_t lm_dnsdisc_count(const lm_dnsdisc *d)
{
    return d->n;
}
const char *lm_dnsdisc_service(const lm_dnsdisc *d, size_t i)
{
    return i < d->n ? d->entries[i].service : NULL;
}
const char *lm_dnsdisc_host(const lm_dnsdisc *d, size_t i)
{
    return i < d->n ? d->entries[i].host : NULL;
}
int lm_dnsdisc_port(const lm_dnsdisc *d, size_t i)
{
    return i < d->n ? d->entries[i].port : 0;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static void resolve(entry *e);

static void on_timer(uv_timer_t *t)
{
    resolve(t->data);
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    entry *e = req->data;
    lm_dnsdisc *d = e->d;
    e->inflight = false;
    d->pending--;
    if (d->stopping) {
        uv_freeaddrinfo(res);
        maybe_free(d);
        return;
    }
    char text[LM_DNSDISC_MAX_ADDRS][INET6_ADDRSTRLEN]; /* 11.5 kB on the control loop's stack */
    const char *addrs[LM_DNSDISC_MAX_ADDRS];
    size_t n = 0;
    if (status == 0) {
        for (struct addrinfo *ai = res; ai && n < LM_DNSDISC_MAX_ADDRS; ai = ai->ai_next) {
            char *out = text[n];
            if (ai->ai_family == AF_INET)
                uv_ip4_name((const struct sockaddr_in *)ai->ai_addr, out, INET6_ADDRSTRLEN);
            else if (ai->ai_family == AF_INET6)
                uv_ip6_name((const struct sockaddr_in6 *)ai->ai_addr, out, INET6_ADDRSTRLEN);
            else
                continue;
            addrs[n++] = out;
        }
        qsort(addrs, n, sizeof *addrs, cmp_str);
        size_t k = 0; /* one per address (getaddrinfo may repeat one per socket type) */
        for (size_t i = 0; i < n; i++)
            if (k == 0 || strcmp(addrs[k - 1], addrs[i]) != 0) addrs[k++] = addrs[i];
        n = k;
    } else if (status == UV_EAI_NONAME || status == UV_EAI_NODATA) {
        status = 0; /* the name has no address now: no instances */
    }
    uv_freeaddrinfo(res);
    d->fn(d->ctx, e->service, addrs, n, e->port, status);
    uv_timer_start(&e->timer, on_timer, d->refresh_ms, 0);
}

static void resolve(entry *e)
{
    lm_dnsdisc *d = e->d;
    if (d->stopping || e->inflight) return;
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    e->req.data = e;
    char port[8];
    snprintf(port, sizeof port, "%d", e->port);
    int rc = uv_getaddrinfo(e->timer.loop, &e->req, on_resolved, e->host, port, &hints);
    if (rc != 0) { /* could not even queue it: report and try again later */
        d->fn(d->ctx, e->service, NULL, 0, e->port, rc);
        uv_timer_start(&e->timer, on_timer, d->refresh_ms, 0);
        return;
    }
    e->inflight = true;
    d->pending++;
}

void lm_dnsdisc_start(lm_dnsdisc *d, uv_loop_t *loop)
{
    d->started = true;
    for (size_t i = 0; i < d->n; i++) {
        entry *e = &d->entries[i];
        e->d = d;
        uv_timer_init(loop, &e->timer);
        e->timer.data = e;
        d->pending++;
        resolve(e);
    }
}

static void on_timer_closed(uv_handle_t *h)
{
    entry *e = h->data;
    e->d->pending--;
    maybe_free(e->d);
}

void lm_dnsdisc_stop(lm_dnsdisc *d)
{
    if (!d) return;
    d->stopping = true;
    if (!d->started) {
        maybe_free(d);
        return;
    }
    for (size_t i = 0; i < d->n; i++) {
        entry *e = &d->entries[i];
        if (e->inflight) uv_cancel((uv_req_t *)&e->req); /* its callback still runs */
        uv_close((uv_handle_t *)&e->timer, on_timer_closed);
    }
}
