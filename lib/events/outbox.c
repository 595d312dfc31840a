/* outbox.c — the outbox as the feed and the relay read it (outbox.h). */
#include "outbox.h"

#include <stdlib.h>
#include <string.h>

#include "timefmt.h"

static const char SQL_READ[] = "SELECT seq, event_id, type, subject, aggregateversion, time,"
                               " traceparent, data FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?";
/* the relay's watermark: every sequence up to it is published */
#define PUBLISHED_THROUGH                                                                          \
    "(SELECT coalesce(max(v), 0) FROM event_meta WHERE k = 'published_through')"

static char *ob_dup(const char *s)
{
    return s ? strdup(s) : NULL;
}

int lm_outbox_read(lm_db_conn *c, const char *source, long long after, int limit, lm_envelope **out,
                   size_t *n)
{
    *out = NULL;
    *n = 0;
    lm_db_st *st = lm_db_stmt(c, SQL_READ);
    if (!st) return LM_DB_EIO;
    lm_db_bind_int(st, 1, after);
    lm_db_bind_int(st, 2, limit);
    size_t cap = 0;
    lm_envelope *evs = NULL;
    lm_buf b = LM_BUF_INIT;
    int rc;
    while ((rc = lm_db_step(st)) == LM_DB_ROW) {
        if (*n == cap) {
            cap = cap ? cap * 2 : 16;
            evs = realloc(evs, cap * sizeof *evs);
        }
        lm_envelope *e = &evs[(*n)++];
        memset(e, 0, sizeof *e);
        e->sequence = lm_db_col_int(st, 0);
        e->id = ob_dup(lm_db_col_text(st, 1));
        e->source = ob_dup(source);
        e->type = ob_dup(lm_db_col_text(st, 2));
        e->subject_id = lm_db_col_int(st, 3);
        char sub[24];
        snprintf(sub, sizeof sub, "%lld", e->subject_id);
        e->subject = strdup(sub);
        e->aggregateversion = lm_db_col_int(st, 4);
        e->time = ob_dup(lm_db_col_text(st, 5));
        e->traceparent = ob_dup(lm_db_col_text(st, 6));
        e->data = ob_dup(lm_db_col_text(st, 7));
        b.len = 0;
        lm_envelope_write(&b, e->id, e->source, e->type, e->subject_id, e->time, e->sequence,
                          e->aggregateversion, e->traceparent, e->data ? e->data : "{}");
        e->json_len = b.len;
        e->json = malloc(b.len + 1);
        memcpy(e->json, b.data, b.len);
        e->json[b.len] = '\0';
    }
    lm_buf_free(&b);
    lm_db_reset(st);
    if (rc != LM_DB_DONE) {
        for (size_t i = 0; i < *n; i++)
            lm_envelope_clear(&evs[i]);
        free(evs);
        *n = 0;
        return LM_DB_EIO;
    }
    *out = evs;
    return 0;
}

int lm_outbox_pruned_through(lm_db_conn *c, long long *seq)
{
    *seq = 0;
    lm_db_st *st = lm_db_stmt(c, "SELECT v FROM event_meta WHERE k = 'pruned_through'");
    if (!st) return LM_DB_EIO;
    int rc = lm_db_step(st);
    if (rc == LM_DB_ROW) *seq = lm_db_col_int(st, 0);
    lm_db_reset(st);
    return rc == LM_DB_ROW || rc == LM_DB_DONE ? 0 : LM_DB_EIO;
}

int lm_outbox_published_through(lm_db_conn *c, long long *seq)
{
    *seq = 0;
    lm_db_st *st = lm_db_stmt(c, "SELECT " PUBLISHED_THROUGH);
    if (!st) return LM_DB_EIO;
    int rc = lm_db_step(st);
    if (rc == LM_DB_ROW) *seq = lm_db_col_int(st, 0);
    lm_db_reset(st);
    return rc == LM_DB_ROW ? 0 : LM_DB_EIO;
}

int lm_outbox_mark_published(lm_db_conn *c, long long through)
{
    lm_db_st *st = lm_db_stmt(c, "INSERT INTO event_meta (k, v) VALUES ('published_through', ?)"
                                 " ON CONFLICT(k) DO UPDATE SET v = excluded.v"
                                 " WHERE excluded.v > event_meta.v");
    if (!st) return LM_DB_EIO;
    lm_db_bind_int(st, 1, through);
    return lm_db_send(st) == 0 ? 0 : LM_DB_EIO;
}

int lm_outbox_prune(lm_db_conn *c, long long cutoff_ms, long long *removed)
{
    if (removed) *removed = 0;
    /* the end of the prefix: the row before the first one that must stay (not published
     * yet, or not older than the cutoff). Times are RFC 3339 UTC text and compare as text,
     * but a whole second is written without ".000" and sorts after its own fractions: a
     * cutoff with a fraction makes every such error keep a row (< 1 s longer), never drop one
     * early. */
    if (cutoff_ms % 1000 == 0) cutoff_ms--;
    char cutoff[LM_TIME_STRLEN];
    lm_timefmt_format(cutoff_ms, cutoff);
    lm_db_st *st =
        lm_db_stmt(c, "SELECT max(seq) FROM outbox WHERE seq <= " PUBLISHED_THROUGH
                      " AND seq < (SELECT coalesce(min(seq), 9223372036854775807) FROM outbox"
                      " WHERE time >= ?)");
    if (!st) return LM_DB_EIO;
    lm_db_bind_text(st, 1, cutoff, -1);
    int rc = lm_db_step(st);
    long long upto =
        rc == LM_DB_ROW && lm_db_col_type(st, 0) != LM_DB_NULL ? lm_db_col_int(st, 0) : 0;
    lm_db_reset(st);
    if (rc != LM_DB_ROW && rc != LM_DB_DONE) return LM_DB_EIO;
    if (upto <= 0) return 0;
    st = lm_db_stmt(c, "DELETE FROM outbox WHERE seq <= ?");
    if (!st) return LM_DB_EIO;
    lm_db_bind_int(st, 1, upto);
    rc = lm_db_step(st);
    lm_db_reset(st);
    if (rc != LM_DB_DONE) return LM_DB_EIO;
    st = lm_db_stmt(c,
                    "INSERT INTO event_meta (k, v) VALUES ('pruned_through', ?)"
                    " ON CONFLICT(k) DO UPDATE SET v = excluded.v WHERE excluded.v > event_meta.v");
    if (!st) return LM_DB_EIO;
    lm_db_bind_int(st, 1, upto);
    rc = lm_db_step(st);
    lm_db_reset(st);
    if (rc != LM_DB_DONE) return LM_DB_EIO;
    if (removed) *removed = upto;
    return 0;
}

int lm_outbox_backlog(lm_db_conn *c, long long now_ms, long long *count, long long *oldest_age_ms)
{
    *count = 0;
    *oldest_age_ms = 0;
    lm_db_st *st =
        lm_db_stmt(c, "SELECT count(*), min(seq) FROM outbox WHERE seq > " PUBLISHED_THROUGH);
    if (!st) return LM_DB_EIO;
    int rc = lm_db_step(st);
    long long first = 0;
    if (rc == LM_DB_ROW) {
        *count = lm_db_col_int(st, 0);
        if (lm_db_col_type(st, 1) != LM_DB_NULL) first = lm_db_col_int(st, 1);
    }
    lm_db_reset(st);
    if (rc != LM_DB_ROW) return LM_DB_EIO;
    if (!first) return 0;
    st = lm_db_stmt(c, "SELECT time FROM outbox WHERE seq = ?");
    if (!st) return LM_DB_EIO;
    lm_db_bind_int(st, 1, first);
    rc = lm_db_step(st);
    int64_t ms;
    if (rc == LM_DB_ROW && lm_timefmt_parse(lm_db_col_text(st, 0), false, &ms))
        *oldest_age_ms = now_ms > ms ? now_ms - ms : 0;
    lm_db_reset(st);
    return rc == LM_DB_ROW || rc == LM_DB_DONE ? 0 : LM_DB_EIO;
}
