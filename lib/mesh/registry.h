/* registry.h — service registration and discovery for every process (lm_reg).
 *
 * SERVICE_REGISTRY_URL chooses the mode:
 *   http://host:port              our registry or a Consul agent (the same API). The process
 *                                 registers itself once it accepts connections, keeps its
 *                                 check passing, re-registers when the registry forgets it,
 *                                 deregisters on graceful shutdown before it stops accepting,
 *                                 and watches the services it looks up.
 *   static:name=url,url;name=url  fixed instances (Kubernetes Services, Compose names); no
 *                                 registration, no watches.
 *   unset                         standalone: nothing registers, lookups find nothing.
 *
 * Registration: ID "<name>-<address>-<port>-<random>" (unique per instance, also across
 * restarts on the same port), Address from SERVICE_ADDRESS (default: the bind address, or
 * 127.0.0.1 when binding 0.0.0.0), Port from the listening socket, Tags from SERVICE_TAGS,
 * and one check: SERVICE_CHECK=ttl (default; the control loop passes it every third of
 * SERVICE_CHECK_TTL, and a pass answered 404 means the registry lost us: re-register) or
 * SERVICE_CHECK=http (the registry probes GET /health every SERVICE_CHECK_INTERVAL with
 * SERVICE_CHECK_TIMEOUT; the registration is re-sent every three intervals (1 s to 30 s),
 * which a registry that still has it ignores). DeregisterCriticalServiceAfter is
 * SERVICE_DEREGISTER_AFTER.
 *
 * Discovery: SERVICE_WATCH (comma-separated names) warms the caches at start; any lookup
 * of another name starts its watch too. Each watched service has a cache of its passing instances,
 * kept fresh by a blocking query (GET
 * /v1/health/service/<name>?passing&index=…&wait=SERVICE_WATCH_WAIT) on the control loop. Lookups
 * read the cache and never wait on the registry; when the registry is unreachable the last known
 * instances stay. The cache of a service is an immutable, reference-counted lm_reg_set swapped
 * under a mutex; each worker thread keeps its own reference and re-reads only when the service's
 * generation moved, so a lookup on a worker is a lock-free generation check plus a round-robin
 * step.
 *
 * Ownership: once its component is installed the process owns the lm_reg (the component's
 * stopped hook frees it: do not use it after the process's run returns). An lm_reg_set from
 * lm_reg_instances is the caller's reference until lm_reg_set_release; the strings of its instances
 * live as long as the set. Threading: lm_reg_open on main before the process runs. lm_reg_watch,
 * lm_reg_pick, lm_reg_instances and lm_reg_set_* from any thread. Everything else internal runs on
 * the control loop (lm_component_env.control). */
#ifndef LM_REGISTRY_H
#define LM_REGISTRY_H

#include <stdbool.h>
#include <stddef.h>

#include "component.h"
#include "config.h"

typedef struct lm_reg lm_reg;
typedef struct lm_reg_set lm_reg_set;

#define LM_REG_MAX_SERVICES 256 /* watched service names per process */

typedef enum { LM_REG_NONE, LM_REG_STATIC, LM_REG_CONSUL } lm_reg_mode;

typedef struct lm_reg_instance {
    const char *id;
    const char *host; /* IP address or name, IPv6 without brackets */
    int port;
    const char *const *tags;
    size_t n_tags;
} lm_reg_instance;

/* A chosen instance, copied (valid as long as the caller keeps it). */
typedef struct lm_reg_addr {
    char host[256];
    int port;
} lm_reg_addr;

/* Reads the SERVICE_* variables (errors go into cfg). env->name is this process's service
 * name, env->host its bind address. Never NULL. */
lm_reg *lm_reg_open(lm_cfg *cfg, const lm_component_env *env);
/* Its lifecycle: registration and watches on the control loop, per-worker caches, the ready
 * check "registered" (registry mode) and the lotmesh_discovery_* metrics. */
const lm_component *lm_reg_component(lm_reg *reg);
lm_reg_mode lm_reg_get_mode(const lm_reg *reg);
/* This instance's registration ID ("" until started, or when not registering). Control
 * loop, or after the started hooks ran. */
const char *lm_reg_self_id(const lm_reg *reg);

/* Starts keeping the passing instances of service in the cache (idempotent). Returns 0, or
 * -1 when LM_REG_MAX_SERVICES names are watched already. Lookups watch on their own; call
 * this at start-up for the services a process needs so the cache is warm at the first
 * request. */
int lm_reg_watch(lm_reg *reg, const char *service);

/* A passing instance of service, round-robin. False when none is known (not yet answered,
 * none passing, unknown in static mode, standalone); the service is watched from then on. */
bool lm_reg_pick(lm_reg *reg, const char *service, lm_reg_addr *out);

/* Every passing instance of service (a reference the caller releases), or NULL when none
 * is known. The service is watched from then on. */
lm_reg_set *lm_reg_instances(lm_reg *reg, const char *service);
size_t lm_reg_set_count(const lm_reg_set *s);
const lm_reg_instance *lm_reg_set_get(const lm_reg_set *s, size_t i);
void lm_reg_set_release(lm_reg_set *s);

/* ---- pure parsers (exposed for tests) --------------------------------------------------- */

/* A set from a /v1/health/service body (an array of {Node, Service, Checks}); the address
 * is Service.Address, or Node.Address when that is empty. NULL with err when malformed. */
lm_reg_set *lm_reg_set_from_health(const char *body, size_t len, char *err, size_t errlen);

/* Parses the part after "static:" — "name=http://h:p,http://h:p;name=http://h:p" — calling
 * fn once per service with its URLs' hosts and ports. -1 with err on a malformed spec
 * (empty name or URL list, a URL that is not http://host[:port][/], a name twice). */
typedef void (*lm_reg_static_fn)(void *ctx, const char *service, const char *const *hosts,
                                 const int *ports, size_t n);
int lm_reg_parse_static(const char *spec, lm_reg_static_fn fn, void *ctx, char *err, size_t errlen);

#endif
