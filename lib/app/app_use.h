/* app_use.h — the parts every lotmesh process wires the same way, opened and installed in
 * one call each (lm_app_use): its database store, its registration and discovery, and the
 * service-token guard on /api/.
 *
 * Each opens its module with the process's environment (lm_app_env), installs the module's
 * component (lm_app_add) and returns the module; configuration errors go into cfg (the
 * caller then runs lm_cfg_exit_on_error) and NULL is returned where the module could not
 * be opened.
 *
 * Ownership: the app owns what these return (freed by the components' stopped hooks).
 * Threading: main thread, before lm_app_run. */
#ifndef LM_APP_USE_H
#define LM_APP_USE_H

#include "app.h"
#include "guard.h"
#include "discovery.h"
#include "events.h"
#include "registration.h"
#include "store.h"
#include "workerclient.h"

lm_store *lm_app_use_store(lm_app *app, lm_cfg *cfg, const char *name,
                           const lm_db_migrations *migrations);
/* Discovery (returned) and this process's registration (owned by the app), both with the
 * registry of SERVICE_REGISTRY_URL. */
lm_disc *lm_app_use_registry(lm_app *app, lm_cfg *cfg);
/* One HTTP client per worker thread, configured by cc (NULL: the defaults). */
lm_workerclient *lm_app_use_clients(lm_app *app, const lm_client_config *cc);
/* Also guards every route under /api/ with lm_guard_check. */
lm_guard *lm_app_use_guard(lm_app *app, lm_cfg *cfg);

/* Events (lib/events): the transport by EVENT_BROKER_URL, EVENT_RETENTION, EVENT_MAX_ATTEMPTS
 * (events.h); with produce the feed GET /api/v1/events and the outbox relay, woken by the
 * store's committed writes; with consume_from a consumer of that service's events, whose feed
 * is found at producer_url (read from the variable producer_url_env) or through disc, called
 * with a service token from guard — unless EVENT_CONSUME=false, or neither a fixed URL nor
 * a registry is there (one info line). NULL when store is NULL. */
typedef struct lm_app_events_opts {
    bool produce;
    const char *consume_from; /* "articles_api", or NULL */
    const char *const *patterns;
    size_t n_patterns;
    lm_consumer_apply_fn apply;
    void *ctx;
    const char *producer_url;     /* fixed, or NULL: discovery */
    const char *producer_url_env; /* its variable's name, for the error line */
} lm_app_events_opts;
lm_events *lm_app_use_events(lm_app *app, lm_cfg *cfg, lm_store *store, lm_disc *disc,
                             lm_guard *guard, const lm_app_events_opts *o);

#endif
