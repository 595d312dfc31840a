/* fuzz_envelope.c — libFuzzer target for the event envelope parser (lib/events/envelope.c):
 * lm_envelope_parse (one structured CloudEvent, as a RabbitMQ message body arrives) and
 * lm_envelope_parse_array (a feed page), and the topic matcher on the type.
 *
 * Oracle, beyond the sanitizers: a refusal gives a reason and leaves the envelope cleared;
 * an accepted event has every required attribute in range, and writing it back with
 * lm_envelope_write and parsing that again yields the same attributes; a feed page's
 * sequences rise strictly. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "envelope.h"

static void die(const char *what)
{
    fprintf(stderr, "fuzz_envelope: invariant violated: %s\n", what);
    abort();
}

static bool same(const char *a, const char *b)
{
    return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

static void check_accepted(const lm_envelope *e)
{
    if (e->sequence < 1 || e->aggregateversion < 1 || e->subject_id < 1) die("integer range");
    if (!e->id || !e->source || !e->type || !e->subject || !e->time || !e->data || !e->json)
        die("missing attribute");
    if (!lm_envelope_type_ok(e->type)) die("type accepted that type_ok refuses");
    if (!lm_envelope_type_matches(e->type, e->type)) die("a type does not match itself");
    if (!lm_envelope_type_matches("#", e->type)) die("# does not match");
    lm_buf b = LM_BUF_INIT;
    lm_envelope_write(&b, e->id, e->source, e->type, e->subject_id, e->time, e->sequence,
                      e->aggregateversion, e->traceparent, e->data);
    lm_envelope again = {0};
    char err[160];
    if (lm_envelope_parse(b.data, b.len, &again, err, sizeof err) != 0) die(err);
    if (again.sequence != e->sequence || again.aggregateversion != e->aggregateversion ||
        again.subject_id != e->subject_id || !same(again.id, e->id) ||
        !same(again.source, e->source) || !same(again.type, e->type) ||
        !same(again.time, e->time) || !same(again.traceparent, e->traceparent) ||
        !same(again.data, e->data))
        die("write/parse round trip differs");
    lm_envelope_clear(&again);
    lm_buf_free(&b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[256] = "";
    lm_envelope e = {0};
    if (lm_envelope_parse((const char *)data, size, &e, err, sizeof err) == 0) {
        check_accepted(&e);
        lm_envelope copy = {0};
        lm_envelope_copy(&copy, &e);
        if (!same(copy.json, e.json) || copy.json_len != e.json_len) die("copy differs");
        lm_envelope_clear(&copy);
        lm_envelope_clear(&e);
    } else {
        if (!err[0]) die("refused without a reason");
        if (e.id || e.json || e.data) die("refused but not cleared");
    }
    lm_envelope *evs = NULL;
    size_t n = 0;
    err[0] = '\0';
    if (lm_envelope_parse_array((const char *)data, size, &evs, &n, err, sizeof err) == 0) {
        for (size_t i = 0; i < n; i++) {
            check_accepted(&evs[i]);
            if (i && evs[i].sequence <= evs[i - 1].sequence) die("page sequences do not rise");
            lm_envelope_clear(&evs[i]);
        }
        free(evs);
    } else if (!err[0] || evs || n) {
        die("page refused without a reason or with output");
    }
    /* the input as a pattern against a fixed type, and as a type against fixed patterns */
    if (size < 128) {
        char s[128];
        memcpy(s, data, size);
        s[size] = '\0';
        (void)lm_envelope_type_matches(s, "artikel.created");
        if (lm_envelope_type_ok(s) && !lm_envelope_type_matches(s, s)) die("no self match");
    }
    return 0;
}
