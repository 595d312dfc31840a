/* redis.h — one asynchronous Redis connection per event loop (lm_redis), on hiredis and its
 * libuv adapter: the transport under the Redis cache backend and the gateway's shared rate
 * limits (DESIGN 2: CACHE_URL, RATE_LIMIT_URL).
 *
 * Nothing here blocks a loop: commands are queued on the connection and answered through a
 * callback on the same loop. A connection that is down answers at once: lm_redis_cmd returns
 * -1 and calls nothing, so callers treat Redis as a miss (cache) or apply their fail-open or
 * fail-closed rule (limits) without waiting. Down means: not connected yet, refused, reset,
 * or a command unanswered for longer than timeout_ms (the connection is then dropped and
 * every command still pending is answered with reply NULL). It reconnects by itself with a
 * backoff from 100 ms to 2 s; on_state reports each change between up and down.
 *
 * Scripts given to lm_redis_new are loaded (SCRIPT LOAD) first on every new connection, so
 * lm_redis_eval can always use EVALSHA on it, also after Redis restarted empty.
 *
 * Ownership: lm_redis_new copies the address and the script texts. A reply passed to a
 * callback belongs to hiredis and is valid only during the call.
 * Threading: everything on the loop given to lm_redis_new (a worker's loop), except
 * lm_redis_parse_url (any thread). lm_redis_free closes its handles; the loop must run on
 * for them to finish closing (as it does while a worker stops). */
#ifndef LM_REDIS_H
#define LM_REDIS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

struct redisReply;

typedef struct lm_redis_addr {
    char host[256];
    int port;
    char password[256]; /* "" for none */
    int db;
} lm_redis_addr;

/* "redis://[[user]:password@]host[:port][/db]"; port 6379 and db 0 by default. Returns 0, or
 * -1 with a one-line reason in err (which never contains the password). */
int lm_redis_parse_url(const char *url, lm_redis_addr *out, char *err, size_t errlen);

typedef struct lm_redis lm_redis;

/* reply: NULL when the connection failed or timed out before an answer. */
typedef void (*lm_redis_cb)(void *ud, const struct redisReply *reply);
/* up: the connection just became usable (true) or was lost / could not be made (false);
 * why: a short reason when down. */
typedef void (*lm_redis_state_cb)(void *ud, bool up, const char *why);

lm_redis *lm_redis_new(uv_loop_t *loop, const lm_redis_addr *addr, uint64_t timeout_ms,
                       const char *const *scripts, size_t n_scripts, lm_redis_state_cb on_state,
                       void *state_ud);
void lm_redis_free(lm_redis *r);
bool lm_redis_up(const lm_redis *r);

/* Sends a command (binary-safe arguments). 0: cb will be called exactly once; -1: the
 * connection is down or too many commands are pending, cb is never called. */
int lm_redis_cmd(lm_redis *r, lm_redis_cb cb, void *ud, int argc, const char **argv,
                 const size_t *argvlen);
/* EVALSHA of script number script (as given to lm_redis_new) with numkeys keys followed by
 * the other arguments in argv; same contract as lm_redis_cmd. */
int lm_redis_eval(lm_redis *r, size_t script, lm_redis_cb cb, void *ud, int numkeys, int argc,
                  const char **argv, const size_t *argvlen);

#endif
