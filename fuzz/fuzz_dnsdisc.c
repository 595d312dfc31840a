/* fuzz_dnsdisc.c — libFuzzer target for the dns: discovery spec parser
 * (SERVICE_REGISTRY_URL=dns:name=host:port;…, lm_dnsdisc_new in lib/mesh/dnsdisc.c).
 *
 * Input: the spec text. Oracle, beyond the sanitizers: a spec that parses has 1 to
 * LM_DNSDISC_MAX_NAMES distinct, non-empty service names, each with a non-empty host free of
 * spaces, brackets and '=' and a port from 1 to 65535; a spec that does not parse says why. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dnsdisc.h"

static void die(const char *what)
{
    fprintf(stderr, "fuzz_dnsdisc: invariant violated: %s\n", what);
    abort();
}

static void ignore(void *ctx, const char *service, const char *const *addrs, size_t n, int port,
                   int status)
{
    (void)ctx, (void)service, (void)addrs, (void)n, (void)port, (void)status;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *spec = malloc(size + 1);
    memcpy(spec, data, size);
    spec[size] = '\0';
    char err[256] = "";
    lm_dnsdisc *d = lm_dnsdisc_new(spec, 1000, ignore, NULL, err, sizeof err);
    if (!d) {
        if (!err[0]) die("refused without a reason");
    } else {
        size_t n = lm_dnsdisc_count(d);
        if (n < 1 || n > LM_DNSDISC_MAX_NAMES) die("name count out of range");
        for (size_t i = 0; i < n; i++) {
            const char *svc = lm_dnsdisc_service(d, i), *host = lm_dnsdisc_host(d, i);
            int port = lm_dnsdisc_port(d, i);
            if (!svc[0] || !host[0]) die("empty name or host");
            if (strpbrk(host, " \t[]=;")) die("host holds a separator");
            if (port < 1 || port > 65535) die("port out of range");
            for (size_t j = 0; j < i; j++)
                if (strcmp(svc, lm_dnsdisc_service(d, j)) == 0) die("a name twice");
        }
        lm_dnsdisc_stop(d);
    }
    free(spec);
    return 0;
}
