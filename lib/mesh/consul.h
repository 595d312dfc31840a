/* consul.h — the Consul HTTP API wire format shared by our registry (server side) and the
 * registry client of every process (lm_consul).
 *
 * Both ends speak the same subset, so its rules live here once: Go-style durations ("10s",
 * "1m30s", "500ms"), Consul's key matching (case-insensitive, and snake_case aliases such as
 * deregister_critical_service_after, so python-consul's lowercase keys work), and the
 * service registration body (PUT /v1/agent/service/register) decoded into a validated
 * definition with a precise error message, or encoded from one in canonical Consul keys.
 *
 * Only TTL and HTTP checks exist here; other Consul check kinds (Script, TCP, gRPC, …) and
 * Connect fields are refused by name rather than silently ignored.
 *
 * Ownership: a decoded lm_consul_service owns every string and array in it;
 * lm_consul_service_free() releases them. Encoders return new jansson references.
 * Threading: pure functions, any thread. */
#ifndef LM_CONSUL_H
#define LM_CONSUL_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Limits on a registration (Consul's for Meta; ours elsewhere, against abuse). */
#define LM_CONSUL_MAX_ID       256 /* bytes of an ID, Name or CheckID */
#define LM_CONSUL_MAX_TAGS     64
#define LM_CONSUL_MAX_TAG      256
#define LM_CONSUL_MAX_META     64 /* keys */
#define LM_CONSUL_MAX_META_KEY 128
#define LM_CONSUL_MAX_META_VAL 512
#define LM_CONSUL_MAX_CHECKS   16
#define LM_CONSUL_MAX_HEADERS  32
#define LM_CONSUL_MAX_TEXT     4096 /* Notes, Address, HTTP URL */

typedef enum { LM_CONSUL_PASSING, LM_CONSUL_WARNING, LM_CONSUL_CRITICAL } lm_consul_status;

/* "passing", "warning", "critical". */
const char *lm_consul_status_name(lm_consul_status s);
/* Exact lowercase names (Consul's). */
bool lm_consul_status_parse(const char *s, lm_consul_status *out);

typedef enum { LM_CONSUL_CHECK_TTL, LM_CONSUL_CHECK_HTTP } lm_consul_check_type;

typedef struct lm_consul_header {
    char *name;
    char *value;
} lm_consul_header;

typedef struct lm_consul_check {
    char *id;    /* CheckID (or ID); NULL: the registry assigns "service:<ID>[:n]" */
    char *name;  /* NULL: "Service '<Name>' check" */
    char *notes; /* NULL when absent */
    lm_consul_check_type type;
    uint64_t ttl_ms; /* TTL checks: > 0 */
    char *http;      /* HTTP checks: http:// URL */
    char *method;    /* HTTP checks: NULL means GET */
    lm_consul_header *headers;
    size_t n_headers;
    uint64_t interval_ms;   /* HTTP checks: > 0 */
    uint64_t timeout_ms;    /* HTTP checks: 0 means the default (10 s) */
    uint64_t deregister_ms; /* DeregisterCriticalServiceAfter; 0: never */
    bool has_status;        /* Status given: the initial status */
    lm_consul_status status;
} lm_consul_check;

typedef struct lm_consul_kv {
    char *key;
    char *value;
} lm_consul_kv;

typedef struct lm_consul_service {
    char *id; /* never NULL after decode: Name when absent */
    char *name;
    char *address; /* "" when absent */
    int port;      /* 0..65535 */
    char **tags;
    size_t n_tags;
    lm_consul_kv *meta;
    size_t n_meta;
    bool enable_tag_override;
    int weight_passing, weight_warning; /* Weights; default 1 and 1 */
    lm_consul_check *checks;            /* Check then Checks, in order */
    size_t n_checks;
} lm_consul_service;

/* Go's time.ParseDuration grammar without a sign: "300ms", "1.5h", "2h45m", "0"; units ns,
 * us (µs), ms, s, m, h. Result in nanoseconds. False on anything else ("10x", "", "10"). */
/* How long to wait before trying the registry again after failures failed attempts in a
 * row: 250 ms doubling to 5 s. */
uint64_t lm_consul_retry_ms(unsigned failures);

bool lm_consul_parse_duration(const char *s, uint64_t *ns);
/* A duration in Consul's JSON: a duration string, or a number of nanoseconds. Result in
 * milliseconds, rounded up (so "1us" is not 0). False when malformed. */
bool lm_consul_duration_ms(const json_t *v, uint64_t *ms);
/* Formats ms for a Consul body: "10s", "1500ms". out >= 24 bytes. */
void lm_consul_format_duration(uint64_t ms, char *out, size_t outlen);

/* Consul's key matching: equal ignoring ASCII case and underscores ("CheckID", "check_id",
 * "checkid" are one key). */
bool lm_consul_key_eq(const char *a, const char *b);
/* Value of key in obj by that matching, or NULL. */
json_t *lm_consul_get(const json_t *obj, const char *key);

/* Decodes and validates a registration body. On failure returns -1 and writes a message
 * naming the field ("Check.TTL: invalid duration \"10x\"") into err; out is then empty. */
int lm_consul_service_decode(const json_t *body, lm_consul_service *out, char *err, size_t errlen);
/* The same for a single check object (where names the field in messages, e.g. "Check"). */
int lm_consul_check_decode(const json_t *obj, const char *where, lm_consul_check *out, char *err,
                           size_t errlen);
void lm_consul_service_free(lm_consul_service *s);
void lm_consul_check_free(lm_consul_check *c);
/* Deep copies. */
void lm_consul_service_copy(lm_consul_service *dst, const lm_consul_service *src);
void lm_consul_check_copy(lm_consul_check *dst, const lm_consul_check *src);
/* Same definition (ignoring a check's initial Status, which only matters once). */
bool lm_consul_service_equal(const lm_consul_service *a, const lm_consul_service *b);
bool lm_consul_check_equal(const lm_consul_check *a, const lm_consul_check *b);

/* Canonical Consul JSON of a definition (decodes back to an equal one). */
json_t *lm_consul_service_encode(const lm_consul_service *s);
json_t *lm_consul_check_encode(const lm_consul_check *c);

#endif
