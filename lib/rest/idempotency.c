/* idempotency.c — Idempotency-Key storage. See idempotency.h. */
#include "idempotency.h"

#include "buf.h"
#include "hash.h"
#include "timefmt.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LM_IDEM_PURGE_EVERY 1024

lm_idem_key_state lm_idem_key(const lm_req *req, char out[LM_IDEM_KEY_MAX + 1])
{
    const char *k = lm_req_header(req, "idempotency-key");
    if (!k) return LM_IDEM_NONE;
    size_t n = strlen(k);
    if (n == 0 || n > LM_IDEM_KEY_MAX) return LM_IDEM_BAD;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)k[i] < 0x21 || (unsigned char)k[i] > 0x7e) return LM_IDEM_BAD;
    memcpy(out, k, n + 1);
    return LM_IDEM_OK;
}

void lm_idem_fingerprint(const lm_req *req, char out[17])
{
    uint64_t h = lm_hash_str(req->method);
    h = lm_hash_add(h, " ", 1);
    h = lm_hash_add(h, req->path, req->path_len);
    h = lm_hash_add(h, "\n", 1);
    h = lm_hash_add(h, req->body, req->body_len);
    snprintf(out, 17, "%016llx", (unsigned long long)h);
}

static char *dup_col(lm_db_st *st, int i)
{
    const char *t = lm_db_col_text(st, i);
    return t ? lm_xstrdup(t) : NULL;
}

int lm_idem_lookup(lm_db_conn *c, const char *key, const char *fingerprint, lm_idem_hit *hit)
{
    memset(hit, 0, sizeof *hit);
    lm_db_st *st = lm_db_stmt(c, "SELECT fingerprint, status, location, body FROM"
                                 " idempotency_keys WHERE key = ? AND created_ms >= ?");
    if (!st) return LM_DB_EIO;
    lm_db_bind_text(st, 1, key, -1);
    lm_db_bind_int(st, 2, lm_timefmt_now_ms() - LM_IDEM_TTL_MS); /* expired: a new key */
    int rc = lm_db_step(st);
    if (rc == LM_DB_DONE) return 0;
    if (rc != LM_DB_ROW) return LM_DB_EIO;
    const char *fp = lm_db_col_text(st, 0);
    hit->mismatch = !fp || strcmp(fp, fingerprint) != 0;
    hit->status = (int)lm_db_col_int(st, 1);
    hit->location = dup_col(st, 2);
    hit->body = dup_col(st, 3);
    lm_db_reset(st);
    return 0;
}

int lm_idem_store(lm_db_conn *c, const char *key, const char *fingerprint, int status,
                  const char *location, const char *body)
{
    /* now and then drop expired keys, so the table holds about one TTL's worth */
    static _Thread_local unsigned stores;
    if (++stores % LM_IDEM_PURGE_EVERY == 0) (void)lm_idem_purge(c, lm_timefmt_now_ms());
    /* ON CONFLICT: an expired row of the same key may still be there */
    lm_db_st *st = lm_db_stmt(c, "INSERT INTO idempotency_keys (key, fingerprint, status,"
                                 " location, body, created_ms) VALUES (?, ?, ?, ?, ?, ?)"
                                 " ON CONFLICT (key) DO UPDATE SET fingerprint ="
                                 " excluded.fingerprint, status = excluded.status,"
                                 " location = excluded.location, body = excluded.body,"
                                 " created_ms = excluded.created_ms");
    if (!st) return LM_DB_EIO;
    lm_db_bind_text(st, 1, key, -1);
    lm_db_bind_text(st, 2, fingerprint, -1);
    lm_db_bind_int(st, 3, status);
    if (location) lm_db_bind_text(st, 4, location, -1);
    lm_db_bind_text(st, 5, body, -1);
    lm_db_bind_int(st, 6, lm_timefmt_now_ms());
    return lm_db_step(st) == LM_DB_DONE ? 0 : LM_DB_EIO;
}

int lm_idem_purge(lm_db_conn *c, int64_t now_ms)
{
    lm_db_st *st = lm_db_stmt(c, "DELETE FROM idempotency_keys WHERE created_ms < ?");
    if (!st) return LM_DB_EIO;
    lm_db_bind_int(st, 1, now_ms - LM_IDEM_TTL_MS);
    return lm_db_step(st) == LM_DB_DONE ? 0 : LM_DB_EIO;
}

void lm_idem_hit_free(lm_idem_hit *hit)
{
    free(hit->location);
    free(hit->body);
    hit->location = hit->body = NULL;
}
