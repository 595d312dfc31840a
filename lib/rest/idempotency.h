/* idempotency.h — Idempotency-Key for creates (lm_idem).
 *
 * A retried POST with the same Idempotency-Key must return the first result, not create a
 * second resource. The key, a fingerprint of the request (method, path, body) and the
 * response (status, Location, body) are stored in the service's own database, in the same
 * transaction as the create, so "created" and "remembered" commit together: a crash can
 * lose neither one without the other. Concurrent requests with one key are serialised by
 * the single writer, so the second sees the first's row. A key reused for a different
 * request is refused (422). Keys are kept for LM_IDEM_TTL_MS: an older key counts as new,
 * and lm_idem_store deletes expired keys every so often.
 *
 * Threading: lm_idem_key/fingerprint on the loop; lookup/store/purge inside write jobs. */
#ifndef LM_IDEMPOTENCY_H
#define LM_IDEMPOTENCY_H

#include <stdbool.h>
#include <stdint.h>

#include "db.h"
#include "http.h"

#define LM_IDEM_TTL_MS  (24LL * 3600 * 1000)
#define LM_IDEM_KEY_MAX 255

/* SQL for the service's migrations (SQLite, PostgreSQL). */
#define LM_IDEM_SCHEMA                                                                             \
    "CREATE TABLE idempotency_keys (key TEXT PRIMARY KEY, fingerprint TEXT NOT NULL,"              \
    " status INTEGER NOT NULL, location TEXT, body TEXT NOT NULL, created_ms INTEGER NOT NULL)"
#define LM_IDEM_SCHEMA_PG                                                                          \
    "CREATE TABLE idempotency_keys (key text PRIMARY KEY, fingerprint text NOT NULL,"              \
    " status integer NOT NULL, location text, body text NOT NULL, created_ms bigint NOT NULL)"

typedef enum { LM_IDEM_NONE, LM_IDEM_BAD, LM_IDEM_OK } lm_idem_key_state;

/* Reads the Idempotency-Key header: NONE (absent), BAD (empty, longer than 255 or not
 * printable ASCII), OK (copied into out). */
lm_idem_key_state lm_idem_key(const lm_req *req, char out[LM_IDEM_KEY_MAX + 1]);
/* Hex digest of method, path and body (out: 17 bytes). */
void lm_idem_fingerprint(const lm_req *req, char out[17]);

typedef struct lm_idem_hit {
    int status;     /* 0 when the key is new */
    bool mismatch;  /* key known, but for another request */
    char *location; /* owned, may be NULL */
    char *body;     /* owned */
} lm_idem_hit;

/* Looks the key up. Returns 0, or LM_DB_EIO. */
int lm_idem_lookup(lm_db_conn *c, const char *key, const char *fingerprint, lm_idem_hit *hit);
int lm_idem_store(lm_db_conn *c, const char *key, const char *fingerprint, int status,
                  const char *location, const char *body);
int lm_idem_purge(lm_db_conn *c, int64_t now_ms);
void lm_idem_hit_free(lm_idem_hit *hit);

#endif
