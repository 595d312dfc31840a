/* sharedgen.c — the shared counter behind lm_sharedgen. See sharedgen.h.
 *
 * `seen` is this process's view: the counter value it has accounted for. A bump that finds
 * the counter at `seen` is this process's own and moves `seen` along; any other value means
 * someone else counted (or another thread of this process raced it) and the cache is flushed
 * before `seen` moves. A race can store an older `seen`, or flush twice: both only ever cost
 * a needless flush, never a missed one, because `seen` never gets ahead of a flush. */
#include "sharedgen.h"

#include "buf.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MAP_BYTES 4096

struct lm_sharedgen {
    _Atomic uint64_t *counter; /* in the shared mapping: [0] writes, [1] era, [2] file nonce,
                                * [3] the era the last fence covered */
    _Atomic uint64_t seen;
    void *map;
    lm_sharedgen_flush flush;
    void *ctx;
};

/* A random 64-bit number (from the kernel; the clock if that fails). */
static void random_nonce(uint64_t *out)
{
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    if (fd < 0 || read(fd, out, sizeof *out) != (ssize_t)sizeof *out) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        *out = (uint64_t)ts.tv_sec * 1000000007u ^ (uint64_t)ts.tv_nsec ^ (uint64_t)getpid();
    }
    if (fd >= 0) close(fd);
    if (*out == 0) *out = 1;
}

lm_sharedgen *lm_sharedgen_open(const char *path, lm_sharedgen_flush flush, void *ctx, char *err,
                                size_t errlen)
{
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0640);
    if (fd < 0) {
        snprintf(err, errlen, "cannot open %s: %s", path, strerror(errno));
        return NULL;
    }
    struct stat st;
    bool fresh = fstat(fd, &st) == 0 && st.st_size < MAP_BYTES;
    if (fstat(fd, &st) != 0 || (st.st_size < MAP_BYTES && ftruncate(fd, MAP_BYTES) != 0)) {
        snprintf(err, errlen, "cannot size %s: %s", path, strerror(errno));
        close(fd);
        return NULL;
    }
    void *map = mmap(NULL, MAP_BYTES, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd); /* the mapping keeps the file */
    if (map == MAP_FAILED) {
        snprintf(err, errlen, "cannot map %s: %s", path, strerror(errno));
        return NULL;
    }
    lm_sharedgen *g = lm_xcalloc(1, sizeof *g);
    g->map = map;
    g->flush = flush;
    g->ctx = ctx;
    g->counter = (_Atomic uint64_t *)map;
    atomic_init(&g->seen, atomic_load(g->counter));
    if (fresh) { /* two processes creating it at once: the last nonce wins, for both */
        uint64_t nonce = 0;
        random_nonce(&nonce);
        uint64_t zero = 0;
        atomic_compare_exchange_strong(&g->counter[2], &zero, nonce);
        /* a new file: no missed invalidation is known, nothing to fence */
        atomic_store(&g->counter[3], lm_sharedgen_era(g));
    }
    return g;
}

uint64_t lm_sharedgen_era(lm_sharedgen *g)
{
    return atomic_load(&g->counter[1]) + atomic_load(&g->counter[2]);
}

void lm_sharedgen_bump_era(lm_sharedgen *g)
{
    atomic_fetch_add(&g->counter[1], 1);
}

uint64_t lm_sharedgen_fenced(lm_sharedgen *g)
{
    return atomic_load(&g->counter[3]);
}

void lm_sharedgen_set_fenced(lm_sharedgen *g, uint64_t era)
{
    atomic_store(&g->counter[3], era);
}

void lm_sharedgen_close(lm_sharedgen *g)
{
    if (!g) return;
    munmap(g->map, MAP_BYTES);
    free(g);
}

void lm_sharedgen_bump(lm_sharedgen *g)
{
    uint64_t old = atomic_fetch_add(g->counter, 1);
    uint64_t expected = old;
    if (atomic_compare_exchange_strong(&g->seen, &expected, old + 1)) return; /* ours alone */
    g->flush(g->ctx);
    atomic_store(&g->seen, old + 1);
}

bool lm_sharedgen_sync(lm_sharedgen *g)
{
    uint64_t now = atomic_load(g->counter);
    if (now == atomic_load(&g->seen)) return false;
    g->flush(g->ctx);
    atomic_store(&g->seen, now);
    return true;
}
