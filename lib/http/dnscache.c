/* dnscache.c — the client's host-name cache: a small array scanned linearly (a client talks
 * to a handful of upstream names; max_entries bounds the scan), entries allocated as names
 * arrive, so an unused cache costs one small allocation. See dnscache.h. */
#include "dnscache.h"

#include "buf.h"

#include <netinet/in.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

typedef struct entry {
    char *host;
    struct sockaddr_storage addr;
    uint64_t expires; /* ms, the caller's clock */
    bool negative;
} entry;

struct lm_dnscache {
    entry *entries;
    size_t n, cap, max;
    uint64_t ttl_ms, neg_ttl_ms;
};

lm_dnscache *lm_dnscache_new(size_t max_entries, uint64_t ttl_ms, uint64_t neg_ttl_ms)
{
    lm_dnscache *dc = lm_xcalloc(1, sizeof *dc);
    dc->max = max_entries ? max_entries : 1;
    dc->ttl_ms = ttl_ms;
    dc->neg_ttl_ms = neg_ttl_ms;
    return dc;
}

void lm_dnscache_free(lm_dnscache *dc)
{
    if (!dc) return;
    for (size_t i = 0; i < dc->n; i++)
        free(dc->entries[i].host);
    free(dc->entries);
    free(dc);
}

size_t lm_dnscache_size(const lm_dnscache *dc)
{
    return dc ? dc->n : 0;
}

static entry *find(lm_dnscache *dc, const char *host)
{
    for (size_t i = 0; i < dc->n; i++)
        if (strcasecmp(dc->entries[i].host, host) == 0) return &dc->entries[i];
    return NULL;
}

/* Removes e, moving the last entry into its place. */
static void drop(lm_dnscache *dc, entry *e)
{
    free(e->host);
    *e = dc->entries[--dc->n];
}

lm_dnscache_result lm_dnscache_get(lm_dnscache *dc, const char *host, uint64_t now_ms,
                                   struct sockaddr_storage *out)
{
    if (!dc || !dc->ttl_ms) return LM_DNS_MISS;
    entry *e = find(dc, host);
    if (!e) return LM_DNS_MISS;
    if (now_ms >= e->expires) {
        drop(dc, e);
        return LM_DNS_MISS;
    }
    if (e->negative) return LM_DNS_NEGATIVE;
    *out = e->addr;
    return LM_DNS_HIT;
}

/* The entry for host: its old one, a new one, or (full) the expired or soonest-expiring
 * one, reused. */
static entry *slot(lm_dnscache *dc, const char *host, uint64_t now_ms)
{
    entry *e = find(dc, host);
    if (e) return e;
    if (dc->n == dc->max) {
        entry *victim = &dc->entries[0];
        for (size_t i = 0; i < dc->n && victim->expires > now_ms; i++)
            if (dc->entries[i].expires < victim->expires) victim = &dc->entries[i];
        free(victim->host);
        victim->host = lm_xstrdup(host);
        return victim;
    }
    if (dc->n == dc->cap) {
        dc->cap = dc->cap ? dc->cap * 2 : 4;
        if (dc->cap > dc->max) dc->cap = dc->max;
        dc->entries = lm_xrealloc(dc->entries, dc->cap * sizeof *dc->entries);
    }
    e = &dc->entries[dc->n++];
    memset(e, 0, sizeof *e);
    e->host = lm_xstrdup(host);
    return e;
}

void lm_dnscache_put(lm_dnscache *dc, const char *host, const struct sockaddr *addr,
                     uint64_t now_ms)
{
    if (!dc || !dc->ttl_ms) return;
    size_t len = addr->sa_family == AF_INET    ? sizeof(struct sockaddr_in)
                 : addr->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                               : 0;
    if (!len) return;
    entry *e = slot(dc, host, now_ms);
    memset(&e->addr, 0, sizeof e->addr);
    memcpy(&e->addr, addr, len);
    if (addr->sa_family == AF_INET)
        ((struct sockaddr_in *)&e->addr)->sin_port = 0;
    else
        ((struct sockaddr_in6 *)&e->addr)->sin6_port = 0;
    e->negative = false;
    e->expires = now_ms + dc->ttl_ms;
}

void lm_dnscache_put_negative(lm_dnscache *dc, const char *host, uint64_t now_ms)
{
    if (!dc || !dc->ttl_ms || !dc->neg_ttl_ms) return;
    entry *e = slot(dc, host, now_ms);
    memset(&e->addr, 0, sizeof e->addr);
    e->negative = true;
    e->expires = now_ms + dc->neg_ttl_ms;
}

void lm_dnscache_forget(lm_dnscache *dc, const char *host)
{
    entry *e = dc ? find(dc, host) : NULL;
    if (e) drop(dc, e);
}
