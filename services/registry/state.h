/* state.h — the registry's catalog in memory (rg_state): services, their checks, and the
 * Consul-style indexes that blocking queries watch.
 *
 * Pure data and rules, no I/O and no clock of its own (callers pass `now` in milliseconds of
 * a monotonic clock), so the unit tests drive it directly. What it decides:
 *   - registration: default check IDs ("service:<ID>", "service:<ID>:<n>" when several) and
 *     names as Consul assigns them; re-registering an identical definition changes nothing
 *     (no index bump, no watcher woken); a changed one keeps the status of checks whose ID
 *     and kind stay, as Consul restores check state across re-registration;
 *   - indexes: `index` rises on every visible change; each service name keeps the index of
 *     its last change (also after its last instance left), which health and catalog
 *     queries for that name report and block on; `catalog_index` rises only when services
 *     come and go. A TTL pass that does not change the status changes no index (Consul
 *     defers output-only updates the same way), so heartbeats never wake watchers;
 *   - time: TTL checks go critical at their deadline, and a service with a check critical
 *     for longer than that check's DeregisterCriticalServiceAfter is removed (rg_state_tick).
 *
 * Hooks tell the owner when a check appears or is about to disappear, so it can start and
 * stop HTTP probes; `io` on a check is the owner's.
 *
 * Ownership: the state owns services and checks; pointers returned by lookups are valid until
 * the next mutating call. Threading: one thread at a time (the registry's event loop; main
 * before the server starts and after it stopped). */
#ifndef RG_STATE_H
#define RG_STATE_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "consul.h"

typedef struct rg_service rg_service;

typedef struct rg_check {
    lm_consul_check def; /* def.id and def.name always set */
    rg_service *svc;
    lm_consul_status status;
    char *output;
    uint64_t create_index, modify_index;
    int64_t ttl_deadline;   /* TTL checks: critical at this time unless passed */
    int64_t critical_since; /* -1 when not critical */
    void *io;               /* the owner's (HTTP probe) */
} rg_check;

struct rg_service {
    lm_consul_service def; /* def.checks moved into checks[] (def.n_checks is 0) */
    rg_check **checks;
    size_t n_checks;
    uint64_t create_index, modify_index;
};

typedef struct rg_hooks {
    void (*check_added)(rg_check *c, void *ctx);
    void (*check_removed)(rg_check *c, void *ctx);
    void *ctx;
} rg_hooks;

typedef struct rg_name {
    char *name;
    uint64_t index;
} rg_name;

typedef struct rg_state {
    rg_service **svcs; /* sorted by ID */
    size_t n_svcs, cap_svcs;
    rg_name *names;
    size_t n_names, cap_names;
    uint64_t index;         /* >= 1 */
    uint64_t catalog_index; /* >= 1 */
    bool dirty;             /* changed since rg_state_clean() */
    char node_name[128];
    char node_id[37];
    char node_address[64];
    char datacenter[32];
    rg_hooks hooks;
    uint64_t ttl_expired, reaped; /* counters */
} rg_state;

/* Node identity: node_id NULL generates a random UUID. */
void rg_state_init(rg_state *st, const char *node_name, const char *node_address,
                   const char *node_id);
void rg_state_free(rg_state *st);
void rg_state_set_hooks(rg_state *st, const rg_hooks *hooks);

/* Takes def (moved; *def is emptied in every case). Returns 1 when registered or changed,
 * 0 when identical to what is registered, -1 when refused (err says why). */
int rg_state_register(rg_state *st, lm_consul_service *def, int64_t now, char *err, size_t errlen);
bool rg_state_deregister(rg_state *st, const char *id);

enum { RG_OK = 0, RG_UNKNOWN = -1, RG_NOT_TTL = -2 };
/* TTL update (pass/warn/fail): resets the TTL clock; note NULL means "". */
int rg_state_ttl_update(rg_state *st, const char *check_id, lm_consul_status status,
                        const char *note, int64_t now);
/* Result of an HTTP probe of c. */
void rg_state_check_result(rg_state *st, rg_check *c, lm_consul_status status, const char *output,
                           int64_t now);
/* Expires TTLs and removes services critical too long. Returns the next time something is
 * due (INT64_MAX: nothing). */
int64_t rg_state_tick(rg_state *st, int64_t now);

rg_service *rg_state_service(const rg_state *st, const char *id);
rg_check *rg_state_check(const rg_state *st, const char *check_id);

/* Indexes as the read endpoints report them. */
uint64_t rg_state_name_index(const rg_state *st, const char *name);
static inline uint64_t rg_state_catalog_index(const rg_state *st)
{
    return st->catalog_index;
}
static inline uint64_t rg_state_index(const rg_state *st)
{
    return st->index;
}
/* True when every check of s passes (a service without checks passes). */
bool rg_service_passing(const rg_service *s);

/* Response bodies (new references), shaped as Consul's. tags: every one must be present
 * (case-insensitive), n_tags may be 0. */
json_t *rg_state_health_json(const rg_state *st, const char *name, bool passing,
                             const char *const *tags, size_t n_tags);
json_t *rg_state_catalog_service_json(const rg_state *st, const char *name, const char *const *tags,
                                      size_t n_tags);
json_t *rg_state_catalog_services_json(const rg_state *st);
json_t *rg_state_agent_services_json(const rg_state *st);
json_t *rg_state_agent_checks_json(const rg_state *st);

/* Counts for metrics. */
size_t rg_state_count_checks(const rg_state *st, lm_consul_status status);

/* ---- snapshot (snapshot.c) ------------------------------------------------------------- */

/* The state as a JSON document (services with their definitions and check states, indexes,
 * node id). */
json_t *rg_snap_encode(const rg_state *st);
/* Loads doc into an empty st; TTL clocks restart at now. -1 with err on a malformed doc. */
int rg_snap_decode(rg_state *st, const json_t *doc, int64_t now, char *err, size_t errlen);
/* Writes atomically (temporary file, fsync, rename). -1 with err. */
int rg_snap_write(const rg_state *st, const char *path, char *err, size_t errlen);
/* 1: loaded; 0: no file; -1: unreadable or malformed (err says why; st stays empty). */
int rg_snap_load(rg_state *st, const char *path, int64_t now, char *err, size_t errlen);

#endif
