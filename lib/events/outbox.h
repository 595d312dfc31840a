/* outbox.h — reading the transactional outbox (lm_outbox): the rows lib/rest appends in the
 * write's transaction (rest.h, lm_rest_outbox_append; tables LM_OUTBOX_SCHEMA) become
 * envelopes for the feed and the relay; the relay's watermark of what is published; pruning
 * by retention.
 *
 * Every function runs inside a database job (the connection it is given) on a data-layer
 * thread. Ownership: envelopes filled here belong to the caller (lm_envelope_clear). */
#ifndef LM_OUTBOX_H
#define LM_OUTBOX_H

#include <stdbool.h>

#include "buf.h"
#include "db.h"
#include "envelope.h"

/* Rows with sequence > after, in order, at most limit. Each becomes an envelope with source
 * (e.g. "/lotmesh/articles_api"). *out: a malloc'd array of *n (free each with
 * lm_envelope_clear, then the array); NULL when none. 0 or LM_DB_EIO. */
int lm_outbox_read(lm_db_conn *c, const char *source, long long after, int limit, lm_envelope **out,
                   size_t *n);

/* The highest sequence retention removed (0: none). 0 or LM_DB_EIO. */
int lm_outbox_pruned_through(lm_db_conn *c, long long *seq);

/* The relay's watermark (event_meta "published_through"): every sequence up to it is
 * published (0: none). 0 or LM_DB_EIO. */
int lm_outbox_published_through(lm_db_conn *c, long long *seq);

/* Raises the watermark to through (never lowers it); a write job, its statement sent without
 * waiting (lm_db_send). 0 or LM_DB_EIO. */
int lm_outbox_mark_published(lm_db_conn *c, long long through);

/* Removes the oldest published rows whose event time is older than cutoff_ms — only a
 * prefix of the outbox, so "pruned through N" means every sequence <= N is gone — and
 * records pruned_through. *removed: the new pruned_through, 0 when nothing went (may be
 * NULL). A write job. */
int lm_outbox_prune(lm_db_conn *c, long long cutoff_ms, long long *removed);

/* Rows above the watermark, and the oldest one's age in ms at now_ms (0 when none). */
int lm_outbox_backlog(lm_db_conn *c, long long now_ms, long long *count, long long *oldest_age_ms);

#endif
