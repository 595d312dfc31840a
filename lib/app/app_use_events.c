/* app_use_events.c — lm_app_use_events: a process's events (lib/events) wired to its store,
 * its discovery and its service tokens. See app_use.h. */
#include "app_use.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "url.h"

typedef struct app_events {
    lm_disc *disc;
    lm_guard *guard;
    bool fixed;
    lm_url url; /* the producer's fixed URL (host and port used) */
} app_events;

static void app_events_wrote(void *ctx)
{
    lm_events_notify(ctx);
}

/* The transport's resolver (control loop): the fixed URL or a discovered instance, and a
 * service token for the producer's audience. */
static bool app_events_resolve(void *ctx, const char *service, char *host, size_t hostlen,
                               int *port, lm_buf *authorization)
{
    app_events *a = ctx;
    if (a->fixed) {
        snprintf(host, hostlen, "%s", a->url.host);
        *port = a->url.port;
    } else {
        lm_disc_addr addr;
        if (!a->disc || !lm_disc_pick(a->disc, service, &addr)) return false;
        snprintf(host, hostlen, "%s", addr.host);
        *port = addr.port;
    }
    const char *tok = a->guard ? lm_guard_outbound_token(a->guard, service, "", "read") : NULL;
    if (tok) lm_buf_printf(authorization, "Bearer %s", tok);
    return true;
}

static void app_events_free(void *ctx)
{
    free(ctx);
}

lm_events *lm_app_use_events(lm_app *app, lm_cfg *cfg, lm_store *store, lm_disc *disc,
                             lm_guard *guard, const lm_app_events_opts *o)
{
    const char *broker = lm_cfg_str(cfg, "EVENT_BROKER_URL", NULL);
    char err[256];
    if (broker && *broker && !lm_transport_url_ok(broker, err, sizeof err))
        lm_cfg_error(cfg, "EVENT_BROKER_URL", "%s", err);
    uint64_t retention = lm_cfg_duration_ms(cfg, "EVENT_RETENTION", 7ull * 24 * 3600 * 1000, 1000,
                                            365ull * 24 * 3600 * 1000);
    long long attempts = lm_cfg_int(cfg, "EVENT_MAX_ATTEMPTS", 5, 1, 100);
    /* a consumer needs to know where its producer is: a fixed URL or discovery */
    const char *consume_from = o->consume_from;
    if (!lm_cfg_bool(cfg, "EVENT_CONSUME", true)) consume_from = NULL;
    if (consume_from && !o->producer_url && (!disc || lm_disc_get_mode(disc) == LM_DISC_NONE)) {
        lm_log_info("events: no registry and no %s: %s's events are not consumed",
                    o->producer_url_env ? o->producer_url_env : "producer URL", consume_from);
        consume_from = NULL;
    }
    app_events *a = calloc(1, sizeof *a);
    a->disc = disc;
    a->guard = guard;
    if (consume_from && o->producer_url) {
        if (lm_url_parse(o->producer_url, &a->url, err, sizeof err) == 0)
            a->fixed = true;
        else
            lm_cfg_error(cfg, o->producer_url_env ? o->producer_url_env : "EVENT_FEED_URL",
                         "must be an http:// URL: %s", err);
    } else if (consume_from && disc) {
        lm_disc_watch(disc, consume_from);
    }
    if (!store) {
        free(a);
        return NULL;
    }
    lm_events_cfg ec = {
        .service = lm_app_name(app),
        .broker_url = broker,
        .retention_ms = (long long)retention,
        .produce = o->produce,
        .consume =
            {
                .producer = consume_from,
                .patterns = o->patterns,
                .n_patterns = o->n_patterns,
                .apply = o->apply,
                .ctx = o->ctx,
                .max_attempts = (unsigned)attempts,
            },
        .resolve = app_events_resolve,
        .resolve_ctx = a,
    };
    lm_events *ev = lm_events_new(lm_store_db(store), &ec, lm_app_env(app));
    lm_events_routes(ev, lm_app_router(app));
    lm_store_on_wrote(store, app_events_wrote, ev);
    lm_app_add(app, lm_events_component(ev));
    lm_app_add(app, &(lm_component){.ctx = a, .stopped = app_events_free});
    return ev;
}
