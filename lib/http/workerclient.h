/* workerclient.h — one HTTP client per worker thread (lm_workerclient), as a component: each
 * worker's lm_client is made on its loop before it accepts and closed after its connections
 * are gone, for a process that calls other services from its handlers (the gateway's
 * upstreams, charges' calls to articles).
 *
 * Ownership: the process owns it once its component is installed (the stopped hook frees
 * it). A client from lm_workerclient_get is the worker's; do not keep it past the worker.
 * Threading: lm_workerclient_new on main before the process runs; lm_workerclient_get on the
 * worker's own thread; lm_workerclient_stats from any thread (it holds a lock against a
 * worker taking its client away meanwhile). */
#ifndef LM_WORKERCLIENT_H
#define LM_WORKERCLIENT_H

#include "client.h"
#include "component.h"

typedef struct lm_workerclient lm_workerclient;

/* cc (copied; NULL: lm_client_config_default) configures every worker's client. */
lm_workerclient *lm_workerclient_new(const lm_component_env *env, const lm_client_config *cc);
const lm_component *lm_workerclient_component(lm_workerclient *wc);
/* The client of worker (its index), NULL outside its lifetime. */
lm_client *lm_workerclient_get(lm_workerclient *wc, int worker);
/* The counters of every worker's client, summed. */
void lm_workerclient_stats(const lm_workerclient *wc, lm_client_stats *total);

#endif
