/* fuzz_redis_url.c — libFuzzer target for lm_redis_parse_url (CACHE_URL, RATE_LIMIT_URL).
 *
 * Oracle, beyond the sanitizers: an accepted URL has a host (no '/', not empty), a port from
 * 1 to 65535 and a database from 0 to 1000; a refused one has one of the parser's fixed
 * reasons, so nothing of the URL (which may hold a password) reaches a log line. */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "redis.h"

static void die(const char *what)
{
    fprintf(stderr, "fuzz_redis_url: invariant violated: %s\n", what);
    abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char url[1024];
    if (size >= sizeof url) return 0;
    memcpy(url, data, size);
    url[size] = '\0';
    lm_redis_addr a;
    char err[200];
    if (lm_redis_parse_url(url, &a, err, sizeof err) == 0) {
        if (!a.host[0] || strchr(a.host, '/')) die("accepted without a host");
        if (a.port < 1 || a.port > 65535) die("port out of range");
        if (a.db < 0 || a.db > 1000) die("database out of range");
    } else {
        static const char *const fixed[] = {
            "must be redis://[:password@]host[:port][/db]", "the password is too long",
            "needs a host: redis://host[:port][/db]", "the port must be an integer from 1 to 65535",
            "the database must be an integer from 0 to 1000"};
        bool known = false;
        for (size_t i = 0; i < sizeof fixed / sizeof *fixed; i++)
            known = known || !strcmp(err, fixed[i]);
        if (!known) die("the reason is not one of the fixed ones (it may echo the URL)");
    }
    return 0;
}
