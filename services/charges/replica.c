/* replica.c — charges' article and unit replica kept from articles' events (artikel.*,
 * einheit.*; DESIGN 3.6): created and updated rows are written as the event carries them
 * (a blocked or renamed article is known without asking), a deleted article is removed.
 * Runs as the consumer's apply (lib/events/consumer.h) inside the job that also records the
 * event in the inbox; refcheck.c still asks articles for what the replica has never seen. */
#include "charges.h"

#include <jansson.h>
#include <string.h>

#include "timefmt.h"

int charges_replica_put_article(lm_db_conn *c, long long id, const char *artikelnummer,
                                long long einheit_id, long long shelf_life_days, const char *status,
                                int64_t seen_ms)
{
    lm_db_st *st =
        lm_db_stmt(c, "INSERT INTO artikel_replica (id, artikelnummer, einheit_id,"
                      " mindesthaltbarkeit_tage, status, gesehen_ms) VALUES (?, ?, ?, ?, ?, ?)"
                      " ON CONFLICT(id) DO UPDATE SET artikelnummer = excluded.artikelnummer,"
                      " einheit_id = excluded.einheit_id,"
                      " mindesthaltbarkeit_tage = excluded.mindesthaltbarkeit_tage,"
                      " status = excluded.status, gesehen_ms = excluded.gesehen_ms");
    if (!st) return LM_DB_EIO;
    lm_db_bind_int(st, 1, id);
    lm_db_bind_text(st, 2, artikelnummer, -1);
    lm_db_bind_int(st, 3, einheit_id);
    if (shelf_life_days >= 0)
        lm_db_bind_int(st, 4, shelf_life_days);
    else
        lm_db_bind_null(st, 4);
    lm_db_bind_text(st, 5, status, -1);
    lm_db_bind_int(st, 6, seen_ms);
    return lm_db_send(st) == 0 ? 0 : LM_DB_EIO;
}

int charges_replica_put_unit(lm_db_conn *c, long long id, const char *kuerzel, int64_t seen_ms)
{
    lm_db_st *st =
        lm_db_stmt(c, "INSERT INTO einheit_replica (id, kuerzel, gesehen_ms) VALUES (?, ?, ?)"
                      " ON CONFLICT(id) DO UPDATE SET kuerzel = excluded.kuerzel,"
                      " gesehen_ms = excluded.gesehen_ms");
    if (!st) return LM_DB_EIO;
    lm_db_bind_int(st, 1, id);
    lm_db_bind_text(st, 2, kuerzel, -1);
    lm_db_bind_int(st, 3, seen_ms);
    return lm_db_send(st) == 0 ? 0 : LM_DB_EIO;
}

static int replica_article(lm_db_conn *c, const lm_envelope *ev, json_t *d)
{
    json_t *nr = json_object_get(d, "artikelnummer"), *unit = json_object_get(d, "einheit_id");
    json_t *days = json_object_get(d, "mindesthaltbarkeit_tage");
    json_t *status = json_object_get(d, "status");
    if (!json_is_string(nr) || !json_is_integer(unit) || !json_is_string(status) ||
        !(json_is_integer(days) || json_is_null(days) || !days) ||
        (json_is_integer(days) && json_integer_value(days) < 0))
        return 422;
    return charges_replica_put_article(c, ev->subject_id, json_string_value(nr),
                                       json_integer_value(unit),
                                       json_is_integer(days) ? json_integer_value(days) : -1,
                                       json_string_value(status), lm_timefmt_now_ms());
}

static int replica_unit(lm_db_conn *c, const lm_envelope *ev, json_t *d)
{
    json_t *k = json_object_get(d, "kuerzel");
    if (!json_is_string(k)) return 422;
    return charges_replica_put_unit(c, ev->subject_id, json_string_value(k), lm_timefmt_now_ms());
}

int charges_apply_article_event(lm_db_conn *c, const lm_envelope *ev, void *ctx)
{
    (void)ctx;
    if (strcmp(ev->type, "artikel.deleted") == 0) {
        lm_db_st *st = lm_db_stmt(c, "DELETE FROM artikel_replica WHERE id = ?");
        if (!st) return LM_DB_EIO;
        lm_db_bind_int(st, 1, ev->subject_id);
        int rc = lm_db_step(st);
        lm_db_reset(st);
        return rc == LM_DB_DONE ? 0 : LM_DB_EIO;
    }
    bool article = !strcmp(ev->type, "artikel.created") || !strcmp(ev->type, "artikel.updated");
    bool unit = !strcmp(ev->type, "einheit.created") || !strcmp(ev->type, "einheit.updated");
    if (!article && !unit) return 0; /* nothing kept of other types */
    json_error_t je;
    json_t *d = json_loads(ev->data, 0, &je);
    if (!json_is_object(d)) {
        json_decref(d);
        return 422;
    }
    json_t *id = json_object_get(d, "id");
    int rc = !json_is_integer(id) || json_integer_value(id) != ev->subject_id ? 422
             : article ? replica_article(c, ev, d)
                       : replica_unit(c, ev, d);
    json_decref(d);
    return rc;
}
