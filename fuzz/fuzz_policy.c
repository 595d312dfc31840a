/* fuzz_policy.c — libFuzzer target for the call policy's header parsers and its judgement of
 * an answer: X-Request-Timeout, Retry-After and the Content-Type that tells a service's
 * considered answer (a problem document) from a bare gateway error.
 *
 * Input: the header value. Oracle, beyond the sanitizers: an accepted X-Request-Timeout is
 * all digits and at most 24 h; Retry-After never exceeds an hour; a 503 is either OK (a
 * problem document) or a gateway failure, and nothing else; a 200 is always OK. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "policy.h"

static void check(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "fuzz_policy: invariant violated: %s\n", what);
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    if (!s) return 0;
    memcpy(s, data, size);
    s[size] = '\0';
    uint64_t ms = 0;
    if (lm_policy_parse_timeout(s, &ms)) {
        check(ms <= 86400000, "timeout over 24 h");
        for (const char *p = s; *p; p++)
            check(*p >= '0' && *p <= '9', "timeout with a non-digit");
    }
    check(lm_policy_parse_retry_after(s) <= 3600000, "Retry-After over an hour");
    lm_header h = {.name = "Content-Type", .value = s};
    lm_client_response r = {.status = 503, .headers = &h, .n_headers = 1};
    lm_outcome o = lm_policy_classify(LM_CLIENT_OK, &r);
    check(o == LM_OUT_OK || o == LM_OUT_GATEWAY, "a 503 judged neither answer nor failure");
    r.status = 200;
    check(lm_policy_classify(LM_CLIENT_OK, &r) == LM_OUT_OK, "a 200 judged a failure");
    free(s);
    return 0;
}
