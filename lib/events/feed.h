/* feed.h — the built-in event feed (lm_feed): GET /api/v1/events?after=N&limit=M&wait=S on a
 * producing service (DESIGN 3.6), served from its outbox.
 *
 *   after  the last sequence the consumer has (integer >= 0, default 0)
 *   limit  events at most (1..1000, default 100)
 *   wait   seconds to wait while there are none (0..60, default 0): a long poll, held on the
 *          worker's loop and woken by lm_feed_notify (this process's commits) or, for commits
 *          of other processes on the same database, by a re-read once a second
 * Answers a JSON array of structured CloudEvents (envelope.h) in sequence order; 400 problem
 * for a bad or unknown parameter; 410 problem with "oldest" (the oldest sequence still
 * available) and "pruned_through" when retention already removed events after `after`.
 * The route is under /api/, so the service-token guard applies.
 *
 * Ownership: the feed owns its per-worker state; db is borrowed and must outlive it.
 * Threading: lm_feed_new/routes/component on the main thread before the run; the handler and
 * worker hooks on worker threads; lm_feed_notify from any thread. */
#ifndef LM_FEED_H
#define LM_FEED_H

#include "component.h"
#include "db.h"
#include "router.h"

typedef struct lm_feed lm_feed;

/* source: the events' source ("/lotmesh/articles_api"), copied. */
lm_feed *lm_feed_new(lm_db *db, const char *source, int workers);
void lm_feed_routes(lm_feed *f, lm_router *r);
/* Per worker: a database port and the waiting polls; stopping answers every waiting poll;
 * stopped frees the feed. */
const lm_component *lm_feed_component(lm_feed *f);
/* New outbox rows were committed: wakes waiting polls. Any thread. */
void lm_feed_notify(lm_feed *f);

#endif
