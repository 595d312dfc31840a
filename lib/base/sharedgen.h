/* sharedgen.h — a write counter shared by every process that writes one database
 * (lm_sharedgen), so that each process's in-process response cache notices the others' writes.
 *
 * Why: one installation may run several instances of a service on one SQLite file (WAL lets
 * processes share it; the gateway balances over them). An instance's cache is invalidated
 * precisely by its own writes, but it cannot know which rows another process changed. So
 * every write, in any process, bumps this counter after its commit and before its response;
 * a process that sees the counter move by more than its own bumps drops its whole cache
 * (lm_cache_invalidate_all). Cost: one atomic load per cached read, one atomic add per write.
 *
 * The counter is 8 bytes in a small file beside the database ("<db>-lmgen"), mapped shared
 * into every process, like SQLite's own -shm file. It holds no data worth keeping: a lost or
 * reset file only causes one needless cache flush.
 *
 * Threading: any thread, any process. Ownership: lm_sharedgen_open's result is the caller's,
 * released by lm_sharedgen_close. */
#ifndef LM_SHAREDGEN_H
#define LM_SHAREDGEN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct lm_sharedgen lm_sharedgen;

/* Called when another process wrote: drop everything cached. Runs on the thread that noticed,
 * before the new count is taken as seen, so no thread trusts the cache in between. */
typedef void (*lm_sharedgen_flush)(void *ctx);

/* Maps (creating if needed) the counter file at path. NULL and a one-line reason in err. */
lm_sharedgen *lm_sharedgen_open(const char *path, lm_sharedgen_flush flush, void *ctx, char *err,
                                size_t errlen);
void lm_sharedgen_close(lm_sharedgen *g);

/* After a committed write, before its response: counts it (flushes if another process wrote
 * since this one last looked). */
void lm_sharedgen_bump(lm_sharedgen *g);
/* Before trusting cached data: flushes if another process wrote since this one last looked.
 * True when it flushed. */
bool lm_sharedgen_sync(lm_sharedgen *g);

/* A second shared number, the era of a cache level shared beyond these processes (the Redis
 * level): lm_sharedgen_bump_era after a write whose invalidation could not reach that level,
 * before the write's response; a process that sees the era move stops trusting that level
 * until it has voided it (lib/rest/store.h). The era includes a random number drawn when the
 * file is created, so a lost or reset file counts as a move as well. */
uint64_t lm_sharedgen_era(lm_sharedgen *g);
void lm_sharedgen_bump_era(lm_sharedgen *g);
/* The era the last fence of that level covered (0: none yet), and recording one: a process
 * starting while they differ knows a missed invalidation may not be fenced yet. */
uint64_t lm_sharedgen_fenced(lm_sharedgen *g);
void lm_sharedgen_set_fenced(lm_sharedgen *g, uint64_t era);

#endif
