/* articles.h — the articles service (registry name articles_api): Artikel and Einheiten
 * master data (DESIGN 3.3), each request a database job through the shared REST flow. */
#ifndef ARTICLES_H
#define ARTICLES_H

#include <stddef.h>

#include "router.h"
#include "store.h"

typedef struct articles_svc {
    lm_store *store;
} articles_svc;

extern const lm_db_migrations articles_migrations;

void artikel_routes(lm_router *r, articles_svc *svc);
void einheit_routes(lm_router *r, articles_svc *svc);

#endif
