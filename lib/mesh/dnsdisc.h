/* dnsdisc.h — discovery through DNS (lm_dnsdisc), the registry's mode for
 * SERVICE_REGISTRY_URL=dns:NAME=HOST:PORT;NAME=HOST:PORT (DESIGN 3.9): each HOST — on
 * Kubernetes a headless Service, whose name resolves to the address of every ready pod — is
 * resolved with getaddrinfo (libuv's thread pool, so /etc/hosts and DNS both count) at start
 * and then every refresh interval, and every answer is handed to the owner as the service's
 * complete list of addresses, sorted and without duplicates, all with PORT. A name that does
 * not exist or has no address (a headless Service without ready pods) is an answer with no
 * address; any other failure is reported as an error and the owner keeps what it had.
 *
 * Ownership: lm_dnsdisc_new returns an object the caller owns until lm_dnsdisc_stop, which
 * hands it over to the loop: it frees itself once its timers are closed and its lookups
 * returned. Threading: lm_dnsdisc_new and the accessors from any one thread before start;
 * lm_dnsdisc_start, lm_dnsdisc_stop and every callback on the loop given to start. */
#ifndef LM_DNSDISC_H
#define LM_DNSDISC_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct lm_dnsdisc lm_dnsdisc;

/* One answer for service: n addresses (numeric IPv4/IPv6 text, valid during the call), all
 * with port. status 0: an answer (n may be 0); otherwise a libuv error code (UV_EAI_*) and
 * n is 0: keep the previous list. */
typedef void (*lm_dnsdisc_fn)(void *ctx, const char *service, const char *const *addrs, size_t n,
                              int port, int status);

#define LM_DNSDISC_MAX_NAMES 64
#define LM_DNSDISC_MAX_ADDRS 256 /* addresses kept per name */

/* Parses spec (the part after "dns:"): "name=host:port;name=host:port", names unique, host a
 * DNS name or an IP address ([v6]:port for IPv6), port 1..65535. NULL with err when malformed. */
lm_dnsdisc *lm_dnsdisc_new(const char *spec, uint64_t refresh_ms, lm_dnsdisc_fn fn, void *ctx,
                           char *err, size_t errlen);
size_t lm_dnsdisc_count(const lm_dnsdisc *d);
const char *lm_dnsdisc_service(const lm_dnsdisc *d, size_t i);
const char *lm_dnsdisc_host(const lm_dnsdisc *d, size_t i);
int lm_dnsdisc_port(const lm_dnsdisc *d, size_t i);

/* Resolves every name now and then every refresh_ms. */
void lm_dnsdisc_start(lm_dnsdisc *d, uv_loop_t *loop);
/* Stops resolving; no callback runs after it returns. d must not be used afterwards. Also
 * frees a d that was never started. */
void lm_dnsdisc_stop(lm_dnsdisc *d);

#endif
