/* app_use_store.c — lm_app_use_store, apart from app_use.c so that only processes with a
 * database link the data layer's client libraries. See app_use.h. */
#include "app_use.h"

lm_store *lm_app_use_store(lm_app *app, lm_cfg *cfg, const char *name,
                           const lm_db_migrations *migrations)
{
    lm_store *s = lm_store_open(cfg, lm_app_env(app), name, migrations);
    if (s) lm_app_add(app, lm_store_component(s));
    return s;
}
