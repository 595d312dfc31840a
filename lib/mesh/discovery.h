/* discovery.h — where the other services' instances are (lm_disc): the discovery cache that
 * worker threads read without a lock, kept fresh by watches on the control loop. Its
 * counterpart, this process's own registration, is registration.h; the registry server
 * itself is services/registry.
 *
 * SERVICE_REGISTRY_URL chooses the mode:
 *   http://host:port              our registry or a Consul agent (the same API): lookups are
 *                                 answered from watches of the services looked up.
 *   static:name=url,url;name=url  fixed instances (Kubernetes Services, Compose names); no
 *                                 watches.
 *   dns:name=host:port;…          Kubernetes without a registry process: each host (a headless
 *                                 Service) resolved to all its addresses at start and every
 *                                 SERVICE_DNS_REFRESH (default 5 s), each address an instance
 *                                 with that port (dnsdisc.h). A failed resolution keeps the last
 *                                 addresses.
 *   unset                         standalone: lookups find nothing.
 *
 * SERVICE_WATCH (comma-separated names) warms the caches at start; any lookup of another
 * name starts its watch too. Each watched service has a cache of its passing instances, kept
 * fresh by a blocking query (GET
 * /v1/health/service/<name>?passing&index=…&wait=SERVICE_WATCH_WAIT) on the control loop.
 * Lookups read the cache and never wait on the registry; when the registry is unreachable the
 * last known instances stay. The cache of a service is an immutable, reference-counted
 * lm_disc_set swapped under a mutex; each worker thread keeps its own reference and re-reads
 * only when the service's generation moved, so a lookup on a worker is a lock-free
 * generation check plus a round-robin step.
 *
 * Ownership: once its component is installed the process owns the lm_disc (the component's
 * stopped hook frees it: do not use it after the process's run returns). An lm_disc_set from
 * lm_disc_instances is the caller's reference until lm_disc_set_release; the strings of its
 * instances live as long as the set. Threading: lm_disc_open on main before the process
 * runs. lm_disc_watch, lm_disc_pick, lm_disc_instances and lm_disc_set_* from any thread.
 * The watches run on the control loop (lm_component_env.control). */
#ifndef LM_DISCOVERY_H
#define LM_DISCOVERY_H

#include <stdbool.h>
#include <stddef.h>

#include "component.h"
#include "config.h"

typedef struct lm_disc lm_disc;
typedef struct lm_disc_set lm_disc_set;

#define LM_DISC_MAX_SERVICES 256 /* watched service names per process */

typedef enum { LM_DISC_NONE, LM_DISC_STATIC, LM_DISC_REGISTRY, LM_DISC_DNS } lm_disc_mode;

typedef struct lm_disc_instance {
    const char *id;
    const char *host; /* IP address or name, IPv6 without brackets */
    int port;
    const char *const *tags;
    size_t n_tags;
} lm_disc_instance;

/* A chosen instance, copied (valid as long as the caller keeps it). */
typedef struct lm_disc_addr {
    char host[256];
    int port;
} lm_disc_addr;

/* The registry a process registers with and watches (registry mode). */
typedef struct lm_disc_registry {
    char url[256]; /* SERVICE_REGISTRY_URL as given, for messages */
    char host[256];
    int port;
} lm_disc_registry;

/* Reads SERVICE_REGISTRY_URL, SERVICE_WATCH and SERVICE_WATCH_WAIT (errors go into cfg).
 * Never NULL. */
lm_disc *lm_disc_open(lm_cfg *cfg, const lm_component_env *env);
/* Its lifecycle: watches on the control loop, per-worker caches and the lotmesh_discovery_*
 * cache metrics. */
const lm_component *lm_disc_component(lm_disc *d);
lm_disc_mode lm_disc_get_mode(const lm_disc *d);
/* The registry's address in registry mode, else NULL. Valid as long as d. */
const lm_disc_registry *lm_disc_get_registry(const lm_disc *d);

/* Starts keeping the passing instances of service in the cache (idempotent). Returns 0, or
 * -1 when LM_DISC_MAX_SERVICES names are watched already. Lookups watch on their own; call
 * this at start-up for the services a process needs so the cache is warm at the first
 * request. */
int lm_disc_watch(lm_disc *d, const char *service);

/* A passing instance of service, round-robin. False when none is known (not yet answered,
 * none passing, unknown in static mode, standalone); the service is watched from then on. */
bool lm_disc_pick(lm_disc *d, const char *service, lm_disc_addr *out);

/* Every passing instance of service (a reference the caller releases), or NULL when none
 * is known. The service is watched from then on. */
lm_disc_set *lm_disc_instances(lm_disc *d, const char *service);
size_t lm_disc_set_count(const lm_disc_set *s);
const lm_disc_instance *lm_disc_set_get(const lm_disc_set *s, size_t i);
/* Another reference to a set the caller holds (any thread); NULL stays NULL. */
lm_disc_set *lm_disc_set_retain(lm_disc_set *s);
void lm_disc_set_release(lm_disc_set *s);

/* ---- pure parsers (exposed for tests) --------------------------------------------------- */

/* A set from a /v1/health/service body (an array of {Node, Service, Checks}); the address
 * is Service.Address, or Node.Address when that is empty. NULL with err when malformed. */
lm_disc_set *lm_disc_set_from_health(const char *body, size_t len, char *err, size_t errlen);

/* Parses the part after "static:" — "name=http://h:p,http://h:p;name=http://h:p" — calling
 * fn once per service with its URLs' hosts and ports. -1 with err on a malformed spec
 * (empty name or URL list, a URL that is not http://host[:port][/], a name twice). */
typedef void (*lm_disc_static_fn)(void *ctx, const char *service, const char *const *hosts,
                                  const int *ports, size_t n);
int lm_disc_parse_static(const char *spec, lm_disc_static_fn fn, void *ctx, char *err,
                         size_t errlen);

#endif
