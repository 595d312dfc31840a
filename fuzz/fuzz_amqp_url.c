/* fuzz_amqp_url.c — libFuzzer target for lm_amqp_url_parse (EVENT_BROKER_URL).
 *
 * Oracle, beyond the sanitizers: an accepted URL has a host, a port from 1 to 65535 and a
 * non-empty vhost, and its redacted form (lm_amqp_url_redacted, what the logs show) parses
 * back to the same user, host, port and vhost without the password; a refused one gets a
 * reason from the parser's fixed set (nothing of the URL, which may hold a password, is
 * echoed). */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "amqp_url.h"

static void die(const char *what)
{
    fprintf(stderr, "fuzz_amqp_url: invariant violated: %s\n", what);
    abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char url[1200];
    if (size >= sizeof url) return 0;
    memcpy(url, data, size);
    url[size] = '\0';
    lm_amqp_url u;
    char err[200];
    if (lm_amqp_url_parse(url, &u, err, sizeof err) == 0) {
        if (!u.host[0]) die("accepted without a host");
        if (u.port < 1 || u.port > 65535) die("port out of range");
        if (!u.vhost[0]) die("accepted with an empty vhost");
        char red[1200];
        lm_amqp_url_redacted(&u, red, sizeof red);
        lm_amqp_url back;
        char err2[200];
        if (lm_amqp_url_parse(red, &back, err2, sizeof err2) != 0) die("redacted form refused");
        if (strcmp(back.user, u.user) || strcmp(back.host, u.host) || back.port != u.port ||
            strcmp(back.vhost, u.vhost))
            die("redacted form parses to a different broker");
        if (back.password[0]) die("redacted form carries a password");
    } else {
        static const char *const fixed[] = {
            "EVENT_BROKER_URL contains a space or control character",
            "EVENT_BROKER_URL is empty",
            "EVENT_BROKER_URL must start with amqp://",
            "EVENT_BROKER_URL: amqps (TLS) is not supported, use amqp://",
            "EVENT_BROKER_URL: bad IPv6 address (expected [addr])",
            "EVENT_BROKER_URL: bad character in the host",
            "EVENT_BROKER_URL: bad or too long password",
            "EVENT_BROKER_URL: bad or too long user name",
            "EVENT_BROKER_URL: bad or too long vhost",
            "EVENT_BROKER_URL: empty port after ':'",
            "EVENT_BROKER_URL: empty user name before '@'",
            ("EVENT_BROKER_URL: empty vhost after '/' (leave the '/' out, or use %2f for the "
             "default vhost)"),
            "EVENT_BROKER_URL: host name too long",
            "EVENT_BROKER_URL: no host",
            "EVENT_BROKER_URL: no query or fragment allowed",
            "EVENT_BROKER_URL: the port must be 1..65535",
            "EVENT_BROKER_URL: the vhost is one path segment (write '/' as %2f)",
            "EVENT_BROKER_URL: unexpected text after ']'"};
        bool known = false;
        for (size_t i = 0; i < sizeof fixed / sizeof *fixed; i++)
            known = known || !strcmp(err, fixed[i]);
        if (!known) die("the reason is not one of the fixed ones (it may echo the URL)");
    }
    return 0;
}
