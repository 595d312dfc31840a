/* registration.h — this process's own entry in the registry (lm_registration), kept on the
 * control loop. Its counterpart, finding other services, is discovery.h; the registry server
 * itself is services/registry.
 *
 * Only in discovery's registry mode (SERVICE_REGISTRY_URL=http://host:port: our registry or
 * a Consul agent); otherwise nothing registers and the component does nothing. The process
 * registers itself once it accepts connections, keeps its check passing, re-registers when
 * the registry forgets it, and deregisters on graceful shutdown before it stops accepting.
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
 * Ownership: once its component is installed the process owns it (the stopped hook frees
 * it). Threading: lm_registration_open on main before the process runs; the rest runs on the
 * control loop (lm_component_env.control); the ready check and metrics on any worker. */
#ifndef LM_REGISTRATION_H
#define LM_REGISTRATION_H

#include "component.h"
#include "config.h"
#include "discovery.h"

typedef struct lm_registration lm_registration;

/* Reads the SERVICE_ADDRESS, SERVICE_TAGS, SERVICE_CHECK* and SERVICE_DEREGISTER_AFTER
 * variables (errors go into cfg); the registry is discovery's (copied from d). env->name is
 * this process's service name, env->host its bind address. Never NULL. */
lm_registration *lm_registration_open(lm_cfg *cfg, const lm_component_env *env, const lm_disc *d);
/* Its lifecycle: registration, heartbeats and deregistration on the control loop, the ready
 * check "registered" (registry mode) and the lotmesh_discovery_* registration metrics. */
const lm_component *lm_registration_component(lm_registration *r);
/* This instance's registration ID ("" until started, or when not registering). Control
 * loop, or after the started hooks ran. */
const char *lm_registration_self_id(const lm_registration *r);

#endif
