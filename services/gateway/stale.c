/* stale.c — stale-if-error for the gateway's GETs (DESIGN 3.8, RFC 5861): the last 200 answer
 * of each GET (service, path and query) kept in memory, so that when the service cannot
 * answer (its instances fail, its circuit is open, none passes) the client gets that answer,
 * marked with Age and Cache-Status (RFC 9211, detail=stale), if it is at most
 * GATEWAY_STALE_IF_ERROR old. Answers marked no-store or private are not kept; bodies over
 * 256 KiB are not kept. The store is bounded by GATEWAY_STALE_MAX_BYTES (keys, headers,
 * bodies and bookkeeping), least recently stored evicted first; a key is refreshed at most
 * once a second, so under load keeping costs one lookup per request, not one copy.
 *
 * One store per process, shared by the workers under one mutex; nothing is sent while it is
 * held (an answer copies out first). */
#include "gateway.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define STALE_BUCKETS 4096
#define REFRESH_MS    1000

typedef struct entry {
    struct entry *next_hash, *prev_lru, *next_lru;
    uint64_t hash, stored_ms;
    size_t size;
    char *key, *ctype, *headers, *body; /* one allocation after the struct */
    size_t headers_len, body_len;
} entry;

struct gw_stale {
    pthread_mutex_t lock;
    uint64_t max_age_ms;
    size_t max_bytes, bytes;
    unsigned long long entries, served;
    entry *buckets[STALE_BUCKETS];
    entry *oldest, *newest; /* LRU by store time */
};

/* 8 bytes a step (a multiply-xorshift mix per word): the key is hashed on every GET. */
static uint64_t fnv(const char *s)
{
    size_t n = strlen(s);
    uint64_t h = 1469598103934665603ull ^ n;
    for (; n >= 8; n -= 8, s += 8) {
        uint64_t w;
        memcpy(&w, s, 8);
        h = (h ^ w) * 0x9e3779b97f4a7c15ull;
        h ^= h >> 29;
    }
    uint64_t w = 0;
    memcpy(&w, s, n);
    h = (h ^ w) * 0x9e3779b97f4a7c15ull;
    return h ^ (h >> 32);
}

uint64_t gw_stale_hash(const char *key)
{
    return fnv(key);
}

gw_stale *gw_stale_new(uint64_t max_age_ms, size_t max_bytes)
{
    gw_stale *s = lm_xcalloc(1, sizeof *s);
    pthread_mutex_init(&s->lock, NULL);
    s->max_age_ms = max_age_ms;
    s->max_bytes = max_bytes;
    return s;
}

static entry *find(gw_stale *s, const char *key, uint64_t h)
{
    for (entry *e = s->buckets[h % STALE_BUCKETS]; e; e = e->next_hash)
        if (e->hash == h && !strcmp(e->key, key)) return e;
    return NULL;
}

static void unlink_entry(gw_stale *s, entry *e)
{
    entry **pp = &s->buckets[e->hash % STALE_BUCKETS];
    while (*pp != e)
        pp = &(*pp)->next_hash;
    *pp = e->next_hash;
    if (e->prev_lru)
        e->prev_lru->next_lru = e->next_lru;
    else
        s->oldest = e->next_lru;
    if (e->next_lru)
        e->next_lru->prev_lru = e->prev_lru;
    else
        s->newest = e->prev_lru;
    s->bytes -= e->size;
    s->entries--;
    free(e);
}

void gw_stale_free(gw_stale *s)
{
    if (!s) return;
    while (s->oldest)
        unlink_entry(s, s->oldest);
    pthread_mutex_destroy(&s->lock);
    free(s);
}

bool gw_stale_wanted(gw_stale *s, const char *key, uint64_t now)
{
    uint64_t h = fnv(key);
    pthread_mutex_lock(&s->lock);
    entry *e = find(s, key, h);
    bool want = !e || now - e->stored_ms >= REFRESH_MS;
    pthread_mutex_unlock(&s->lock);
    return want;
}

void gw_stale_put(gw_stale *s, const char *key, const char *ctype, const char *headers,
                  size_t headers_len, const char *body, size_t body_len, uint64_t now)
{
    size_t kl = strlen(key) + 1, cl = strlen(ctype) + 1;
    size_t size = sizeof(entry) + kl + cl + headers_len + 1 + body_len + 1;
    if (size > s->max_bytes / 4) return; /* one answer never takes most of the store */
    entry *e = lm_xmalloc(size);
    memset(e, 0, sizeof *e);
    char *p = (char *)(e + 1);
    e->key = memcpy(p, key, kl);
    p += kl;
    e->ctype = memcpy(p, ctype, cl);
    p += cl;
    e->headers = p;
    memcpy(p, headers, headers_len);
    p[headers_len] = '\0';
    p += headers_len + 1;
    e->body = p;
    memcpy(p, body, body_len);
    p[body_len] = '\0';
    e->headers_len = headers_len;
    e->body_len = body_len;
    e->size = size;
    e->hash = fnv(key);
    e->stored_ms = now;
    pthread_mutex_lock(&s->lock);
    entry *old = find(s, key, e->hash);
    if (old) unlink_entry(s, old);
    while (s->oldest && s->bytes + size > s->max_bytes)
        unlink_entry(s, s->oldest);
    e->next_hash = s->buckets[e->hash % STALE_BUCKETS];
    s->buckets[e->hash % STALE_BUCKETS] = e;
    e->prev_lru = s->newest;
    if (s->newest)
        s->newest->next_lru = e;
    else
        s->oldest = e;
    s->newest = e;
    s->bytes += size;
    s->entries++;
    pthread_mutex_unlock(&s->lock);
}

bool gw_stale_answer(gw_stale *s, lm_req *req, const char *key, uint64_t now)
{
    uint64_t h = fnv(key);
    pthread_mutex_lock(&s->lock);
    entry *e = find(s, key, h);
    if (!e || now - e->stored_ms > s->max_age_ms) {
        pthread_mutex_unlock(&s->lock);
        return false;
    }
    entry *copy = lm_xmalloc(e->size); /* sent after the lock is released */
    memcpy(copy, e, e->size);
    ptrdiff_t d = (char *)copy - (char *)e;
    copy->ctype = e->ctype + d;
    copy->headers = e->headers + d;
    copy->body = e->body + d;
    s->served++;
    pthread_mutex_unlock(&s->lock);
    for (char *line = copy->headers; *line;) {
        char *eol = strstr(line, "\r\n");
        if (!eol) break;
        *eol = '\0';
        char *colon = strchr(line, ':');
        if (colon) {
            *colon = '\0';
            const char *v = colon + 1;
            while (*v == ' ')
                v++;
            lm_resp_header(req, line, v);
        }
        line = eol + 2;
    }
    char age[24];
    snprintf(age, sizeof age, "%llu", (unsigned long long)((now - copy->stored_ms) / 1000));
    lm_resp_header(req, "Age", age);
    lm_resp_header(req, "Cache-Status", "lotmesh-gateway; hit; detail=stale");
    lm_resp_send(req, 200, copy->ctype[0] ? copy->ctype : NULL, copy->body, copy->body_len);
    free(copy);
    return true;
}

void gw_stale_stats(gw_stale *s, unsigned long long *entries, unsigned long long *bytes,
                    unsigned long long *served)
{
    pthread_mutex_lock(&s->lock);
    *entries = s->entries;
    *bytes = s->bytes;
    *served = s->served;
    pthread_mutex_unlock(&s->lock);
}
