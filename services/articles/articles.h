/* articles.h — the articles service (registry name articles_api): Artikel and Einheiten
 * master data (DESIGN 3.3), each request a database job through the shared REST flow. */
#ifndef ARTICLES_H
#define ARTICLES_H

#include <stddef.h>

#include "db.h"
#include "envelope.h"
#include "router.h"
#include "store.h"

typedef struct articles_svc {
    lm_store *store;
} articles_svc;

extern const lm_db_migrations articles_migrations;

void artikel_routes(lm_router *r, articles_svc *svc);
void einheit_routes(lm_router *r, articles_svc *svc);
int artikel_apply_charge_event(lm_db_conn *c, const lm_envelope *ev, void *ctx);

#endif
