/* envelope.h — one event as it travels (lm_envelope): CloudEvents 1.0 in structured JSON
 * mode (application/cloudevents+json), DESIGN 3.6. Both transports (the built-in feed and
 * RabbitMQ) carry exactly this text; the outbox stores it; consumers parse it with
 * lm_envelope_parse.
 *
 * The attributes, all required unless noted:
 *   specversion      "1.0"
 *   id               unique string (1..200 bytes)
 *   source           "/lotmesh/<service name>"
 *   type             "artikel.created" … — the RabbitMQ routing key (1..120 bytes, [a-z.])
 *   subject          the aggregate id as a decimal string
 *   time             RFC 3339
 *   datacontenttype  "application/json"
 *   data             a JSON object (the resource as the API returns it; {"id": N} for a
 *                    delete)
 *   sequence         the producer's outbox position: integer >= 1, only grows
 *   aggregateversion the resource's version: integer >= 1
 *   traceparent      optional: the writing request's W3C traceparent
 *
 * Ownership: an lm_envelope owns every string it points to (lm_envelope_clear frees them and
 * zeroes it). Threading: none shared; any thread may parse into its own envelope. */
#ifndef LM_ENVELOPE_H
#define LM_ENVELOPE_H

#include <stdbool.h>
#include <stddef.h>

#include "buf.h"

#define LM_ENVELOPE_MAX_BYTES (1u << 20) /* a larger message is refused as malformed */

typedef struct lm_envelope {
    long long sequence;         /* >= 1 */
    long long aggregateversion; /* >= 1 */
    long long subject_id;       /* subject as an integer (>= 1) */
    char *id;
    char *source;
    char *type;
    char *subject;
    char *time;
    char *traceparent; /* NULL when absent */
    char *data;        /* the data member as compact JSON text (an object) */
    char *json;        /* the whole structured event as received/produced (NUL-terminated) */
    size_t json_len;
} lm_envelope;

/* Parses text[0..len) (need not be NUL-terminated) into *out, which must be zeroed or
 * cleared. Returns 0, or -1 with *out cleared and one line why in err (e.g.
 * "sequence: must be an integer >= 1"). Unknown extension attributes are ignored. */
int lm_envelope_parse(const char *text, size_t len, lm_envelope *out, char *err, size_t errlen);

/* Parses a feed page: a JSON array of structured events. On success *out is a malloc'd
 * array of *n envelopes (each to be cleared, then free(*out)); sequences must rise strictly.
 * -1 and err otherwise (nothing to free). */
int lm_envelope_parse_array(const char *text, size_t len, lm_envelope **out, size_t *n, char *err,
                            size_t errlen);

/* Copies src into *dst (zeroed or cleared). */
void lm_envelope_copy(lm_envelope *dst, const lm_envelope *src);
void lm_envelope_clear(lm_envelope *e);

/* Writes one structured event to out (compact JSON). data_json: an object's JSON text
 * (inserted verbatim; the caller produced it); traceparent may be NULL. id and the other
 * strings are JSON-escaped. */
void lm_envelope_write(lm_buf *out, const char *id, const char *source, const char *type,
                       long long subject_id, const char *time, long long sequence,
                       long long aggregateversion, const char *traceparent, const char *data_json);

/* true when type is a well-formed event type (1..120 bytes of [a-z0-9_] parts joined by
 * '.'), the same rule the parser applies. */
bool lm_envelope_type_ok(const char *type);

/* true when pattern (an AMQP topic binding: "artikel.*", "charge.#", "einheit.created")
 * matches type: '*' matches exactly one word, '#' zero or more. */
bool lm_envelope_type_matches(const char *pattern, const char *type);

#endif
