/* fuzz_otlp.c — libFuzzer target for the trace store's OTLP/HTTP JSON ingestion
 * (lm_tracestore_ingest), the parser behind the gateway's POST /v1/traces.
 *
 * Oracle, beyond the sanitizers: a refused request leaves the store unchanged and gives a
 * reason; an accepted one takes at most as many spans as it added to the counters, the
 * store never holds more traces than its bound, and every trace it lists can be read back. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tracestore.h"

static void die(const char *what)
{
    fprintf(stderr, "fuzz_otlp: invariant violated: %s\n", what);
    abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    lm_tracestore *ts = lm_tracestore_new(3, 4);
    char err[256] = "";
    lm_tracestore_stats before, after;
    lm_tracestore_stats_get(ts, &before);
    long n = lm_tracestore_ingest(ts, (const char *)data, size, err, sizeof err);
    lm_tracestore_stats_get(ts, &after);
    if (n < 0) {
        if (!err[0]) die("refused without a reason");
        if (after.traces != before.traces || after.spans != before.spans) die("refused but stored");
    } else {
        if ((uint64_t)n > after.spans_received) die("took more spans than it received");
        if (after.traces > 3) die("over the trace bound");
        json_t *recent = lm_tracestore_recent(ts, 10);
        size_t i;
        json_t *t;
        json_array_foreach(recent, i, t)
        {
            json_t *spans =
                lm_tracestore_get(ts, json_string_value(json_object_get(t, "trace_id")));
            if (!spans || json_array_size(spans) == 0 || json_array_size(spans) > 4)
                die("a listed trace cannot be read back within its bound");
            json_decref(spans);
        }
        json_decref(recent);
    }
    lm_tracestore_free(ts);
    return 0;
}
