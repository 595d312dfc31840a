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

extern const char *const articles_migrations[];
extern const size_t articles_migrations_count;

void artikel_routes(lm_router *r, articles_svc *svc);
void einheit_routes(lm_router *r, articles_svc *svc);

#endif
