/* dnscache.h — a small cache of host-name resolutions (lm_dnscache), for the HTTP client.
 *
 * The client (client.c) opens connections to upstreams by host name; without a cache every
 * new connection costs a getaddrinfo on the loop's thread pool. The cache keeps, per host
 * name, the one address the client connects to:
 *
 *   positive entries  for ttl_ms after the resolution (getaddrinfo does not tell the
 *                     record's own TTL, so the bound is ours: CLIENT_DNS_TTL_MS);
 *   negative entries  "the name does not exist", for neg_ttl_ms (short: a name that
 *                     appears is seen soon; a flood of requests to a missing name costs
 *                     one lookup per neg_ttl_ms, not one per connection).
 *
 * An expired entry is a miss (and is dropped). The caller drops an entry whose address
 * failed to connect (lm_dnscache_forget), so a moved host is looked up again at once.
 * Names compare case-insensitively. Addresses are kept with port 0; the caller sets its own.
 * Bounded: at most max_entries; a new name in a full cache replaces an expired entry, or
 * else the one that expires soonest. ttl_ms 0 is a disabled cache: every get misses, put
 * stores nothing.
 *
 * Ownership: the cache owns its entries (copies of the names); lm_dnscache_free releases
 * everything. Threading: plain data owned by one thread (one per client, i.e. per loop), no
 * locks. Time comes from the caller (uv_now of the loop), so tests need no clock. */
#ifndef LM_DNSCACHE_H
#define LM_DNSCACHE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

typedef struct lm_dnscache lm_dnscache;

typedef enum {
    LM_DNS_MISS = 0, /* not cached (or expired): resolve */
    LM_DNS_HIT,      /* *out is the address (port 0) */
    LM_DNS_NEGATIVE, /* the name was found not to exist, within neg_ttl_ms */
} lm_dnscache_result;

lm_dnscache *lm_dnscache_new(size_t max_entries, uint64_t ttl_ms, uint64_t neg_ttl_ms);
void lm_dnscache_free(lm_dnscache *dc); /* NULL: no-op */

lm_dnscache_result lm_dnscache_get(lm_dnscache *dc, const char *host, uint64_t now_ms,
                                   struct sockaddr_storage *out);
/* addr: AF_INET or AF_INET6 (others are ignored); replaces an entry for the name. */
void lm_dnscache_put(lm_dnscache *dc, const char *host, const struct sockaddr *addr,
                     uint64_t now_ms);
void lm_dnscache_put_negative(lm_dnscache *dc, const char *host, uint64_t now_ms);
void lm_dnscache_forget(lm_dnscache *dc, const char *host);
size_t lm_dnscache_size(const lm_dnscache *dc); /* entries held, expired ones included */

#endif
