/* json.h — JSON request bodies, their validation and JSON responses (lm_json).
 *
 * Services validate every body the same way, so the rules live here once: the body must be
 * application/json (415), well-formed (400 with jansson's line/column), an object (400);
 * fields are checked against a table of lm_field_spec: unknown fields, required fields,
 * types, string length in characters after trimming, numeric bounds, RFC 3339 times. All
 * field errors of a request are collected and sent together as one 422 problem with
 * errors: [{field, message}] (DESIGN 3.4), through lm_verrs (verrs.h).
 *
 * Ownership: lm_json_body_object returns a new reference (caller decrefs). lm_json_resp
 * steals the reference it is given. Threading: loop thread of the request (jansson objects
 * themselves are not shared between threads). */
#ifndef LM_JSON_H
#define LM_JSON_H

#include <jansson.h>
#include <stdbool.h>

#include "http.h"
#include "verrs.h"

typedef enum {
    LM_F_STRING,
    LM_F_INTEGER, /* JSON integer (no fraction) */
    LM_F_NUMBER,  /* any finite JSON number */
    LM_F_BOOLEAN,
    LM_F_DATETIME, /* RFC 3339 date-time string */
    LM_F_DATE_OR_DATETIME,
} lm_field_type;

typedef struct lm_field_spec {
    const char *name;
    lm_field_type type;
    bool required;  /* must be present (ignored when validating a partial update) */
    bool nullable;  /* JSON null allowed */
    bool read_only; /* server-set: present in responses, refused in requests */
    size_t max_len; /* strings: characters after trimming; 0 = no limit */
    size_t min_len; /* strings: characters after trimming */
    bool has_min, has_max, exclusive_min;
    double min, max;           /* numbers */
    const char *const *one_of; /* strings: allowed values, NULL-terminated */
} lm_field_spec;

/* Parses the request body as a JSON object. On failure sends the problem and returns NULL. */
json_t *lm_json_body_object(lm_req *req);

/* Validates obj against specs (n entries). partial: a PATCH, required is not enforced.
 * Strings are trimmed in place. Adds an error per offending field. */
void lm_json_validate(json_t *obj, const lm_field_spec *specs, size_t n, bool partial,
                      lm_verrs *errs);

/* Sends doc as application/json (compact); steals the reference. */
void lm_json_resp(lm_req *req, int status, json_t *doc);

/* Helpers for reading validated objects. */
const char *lm_json_str(const json_t *obj, const char *key); /* NULL if absent/null */
size_t lm_json_utf8_length(const char *s);

#endif
