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

static char *dup_col(sqlite3_stmt *st, int i)
{
    const unsigned char *t = sqlite3_column_text(st, i);
    return t ? lm_xstrdup((const char *)t) : NULL;
}

int lm_idem_lookup(lm_db_conn *c, const char *key, const char *fingerprint, lm_idem_hit *hit)
{
    memset(hit, 0, sizeof *hit);
    sqlite3_stmt *st = lm_db_stmt(c, "SELECT fingerprint, status, location, body FROM"
                                     " idempotency_keys WHERE key = ? AND created_ms >= ?");
    if (!st) return LM_DB_EIO;
    sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, lm_timefmt_now_ms() - LM_IDEM_TTL_MS); /* expired: a new key */
    int rc = sqlite3_step(st);
    if (rc == SQLITE_DONE) return 0;
    if (rc != SQLITE_ROW) return LM_DB_EIO;
    const char *fp = (const char *)sqlite3_column_text(st, 0);
    hit->mismatch = !fp || strcmp(fp, fingerprint) != 0;
    hit->status = sqlite3_column_int(st, 1);
    hit->location = dup_col(st, 2);
    hit->body = dup_col(st, 3);
    sqlite3_reset(st);
    return 0;
}

int lm_idem_store(lm_db_conn *c, const char *key, const char *fingerprint, int status,
                  const char *location, const char *body)
{
    /* now and then drop expired keys, so the table holds about one TTL's worth */
    static _Thread_local unsigned stores;
    if (++stores % LM_IDEM_PURGE_EVERY == 0) (void)lm_idem_purge(c, lm_timefmt_now_ms());
    /* OR REPLACE: an expired row of the same key may still be there */
    sqlite3_stmt *st = lm_db_stmt(c, "INSERT OR REPLACE INTO idempotency_keys (key, fingerprint,"
                                     " status, location, body, created_ms)"
                                     " VALUES (?, ?, ?, ?, ?, ?)");
    if (!st) return LM_DB_EIO;
    sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, fingerprint, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 3, status);
    if (location) sqlite3_bind_text(st, 4, location, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 5, body, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 6, lm_timefmt_now_ms());
    return sqlite3_step(st) == SQLITE_DONE ? 0 : LM_DB_EIO;
}

int lm_idem_purge(lm_db_conn *c, int64_t now_ms)
{
    sqlite3_stmt *st = lm_db_stmt(c, "DELETE FROM idempotency_keys WHERE created_ms < ?");
    if (!st) return LM_DB_EIO;
    sqlite3_bind_int64(st, 1, now_ms - LM_IDEM_TTL_MS);
    return sqlite3_step(st) == SQLITE_DONE ? 0 : LM_DB_EIO;
}

void lm_idem_hit_free(lm_idem_hit *hit)
{
    free(hit->location);
    free(hit->body);
    hit->location = hit->body = NULL;
}
