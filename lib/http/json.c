/* json.c — JSON body parsing and table-driven validation. See json.h. */
#include "json.h"

#include "buf.h"
#include "problem.h"
#include "timefmt.h"

#include <ctype.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static bool is_json_type(const char *ct)
{
    if (!ct) return false;
    while (*ct == ' ')
        ct++;
    size_t n = strcspn(ct, "; ");
    return (n == 16 && strncasecmp(ct, "application/json", 16) == 0) ||
           (n > 5 && strncasecmp(ct + n - 5, "+json", 5) == 0);
}

json_t *lm_json_body_object(lm_req *req)
{
    if (!is_json_type(lm_req_header(req, "content-type"))) {
        lm_resp_problem(req, 415, "the request body must be JSON (Content-Type: application/json)");
        return NULL;
    }
    json_error_t err;
    json_t *doc = json_loadb(req->body, req->body_len, JSON_REJECT_DUPLICATES, &err);
    if (!doc) {
        /* jansson's own text names its flag (JSON_ALLOW_NUL); say what is wrong instead */
        const char *why = json_error_code(&err) == json_error_null_character
                              ? "\\u0000 (NUL) is not allowed in strings"
                              : err.text;
        lm_resp_problemf(req, 400, "malformed JSON at line %d, column %d: %s", err.line, err.column,
                         why);
        return NULL;
    }
    if (!json_is_object(doc)) {
        json_decref(doc);
        lm_resp_problem(req, 400, "the request body must be a JSON object");
        return NULL;
    }
    return doc;
}

size_t lm_json_utf8_length(const char *s)
{
    size_t n = 0;
    for (; *s; s++)
        n += ((unsigned char)*s & 0xC0) != 0x80;
    return n;
}

/* A bound of an integer field as an integer (saturating: bounds are whole numbers). */
static long long bound_ll(double d)
{
    if (d >= 9223372036854775807.0) return LLONG_MAX;
    if (d <= -9223372036854775808.0) return LLONG_MIN;
    return (long long)d;
}

static const char *type_name(lm_field_type t)
{
    switch (t) {
    case LM_F_STRING:
        return "a string";
    case LM_F_INTEGER:
        return "an integer";
    case LM_F_NUMBER:
        return "a number";
    case LM_F_BOOLEAN:
        return "true or false";
    case LM_F_DATETIME:
        return "an RFC 3339 date-time string";
    case LM_F_DATE_OR_DATETIME:
        return "an RFC 3339 date or date-time string";
    }
    return "?";
}

/* Trims ASCII whitespace; replaces the member's value when it changed. */
static const char *trim_member(json_t *obj, const char *key, json_t *v)
{
    const char *s = json_string_value(v);
    size_t len = json_string_length(v);
    size_t a = 0, b = len;
    while (a < b && isspace((unsigned char)s[a]))
        a++;
    while (b > a && isspace((unsigned char)s[b - 1]))
        b--;
    if (a == 0 && b == len) return s;
    json_object_set_new(obj, key, json_stringn(s + a, b - a));
    return json_string_value(json_object_get(obj, key));
}

static void check_one(json_t *obj, const char *key, json_t *v, const lm_field_spec *f,
                      lm_verrs *errs)
{
    if (json_is_null(v)) {
        if (!f->nullable) lm_verrs_add(errs, key, "must not be null");
        return;
    }
    switch (f->type) {
    case LM_F_STRING:
    case LM_F_DATETIME:
    case LM_F_DATE_OR_DATETIME: {
        if (!json_is_string(v)) {
            lm_verrs_add(errs, key, "must be %s", type_name(f->type));
            return;
        }
        const char *s = trim_member(obj, key, v);
        if (strlen(s) != json_string_length(json_object_get(obj, key))) {
            lm_verrs_add(errs, key, "must not contain NUL characters");
            return;
        }
        size_t n = lm_json_utf8_length(s);
        if (f->type != LM_F_STRING) {
            int64_t ms;
            if (!lm_timefmt_parse(s, f->type == LM_F_DATE_OR_DATETIME, &ms))
                lm_verrs_add(errs, key, "must be %s, e.g. 2026-11-24T08:00:00Z",
                             type_name(f->type));
            return;
        }
        if (n < f->min_len)
            lm_verrs_add(errs, key,
                         f->min_len == 1 ? "must not be empty"
                                         : "must have at least %zu characters",
                         f->min_len);
        else if (f->max_len && n > f->max_len)
            lm_verrs_add(errs, key, "must have at most %zu characters", f->max_len);
        else if (f->one_of) {
            bool ok = false;
            lm_buf list = LM_BUF_INIT;
            for (const char *const *o = f->one_of; *o; o++) {
                ok |= strcmp(*o, s) == 0;
                lm_buf_printf(&list, "%s%s", o == f->one_of ? "" : ", ", *o);
            }
            if (!ok) lm_verrs_add(errs, key, "must be one of: %s", lm_buf_cstr(&list));
            lm_buf_free(&list);
        }
        return;
    }
    case LM_F_BOOLEAN:
        if (!json_is_boolean(v)) lm_verrs_add(errs, key, "must be true or false");
        return;
    case LM_F_INTEGER:
    case LM_F_NUMBER: {
        if (!(f->type == LM_F_INTEGER ? json_is_integer(v) : json_is_number(v))) {
            lm_verrs_add(errs, key, "must be %s", type_name(f->type));
            return;
        }
        if (f->type == LM_F_INTEGER) { /* exact: a double cannot tell 2^53 + 1 from 2^53 */
            long long i = (long long)json_integer_value(v);
            if (f->has_min && (f->exclusive_min ? i <= bound_ll(f->min) : i < bound_ll(f->min)))
                lm_verrs_add(errs, key, "must be %s %lld",
                             f->exclusive_min ? "greater than" : "at least", bound_ll(f->min));
            else if (f->has_max && i > bound_ll(f->max))
                lm_verrs_add(errs, key, "must be at most %lld", bound_ll(f->max));
            return;
        }
        double d = json_number_value(v);
        if (!isfinite(d)) {
            lm_verrs_add(errs, key, "must be a finite number");
            return;
        }
        if (f->has_min && (f->exclusive_min ? d <= f->min : d < f->min))
            lm_verrs_add(errs, key, "must be %s %g", f->exclusive_min ? "greater than" : "at least",
                         f->min);
        else if (f->has_max && d > f->max)
            lm_verrs_add(errs, key, "must be at most %g", f->max);
        return;
    }
    }
}

void lm_json_validate(json_t *obj, const lm_field_spec *specs, size_t n, bool partial,
                      lm_verrs *errs)
{
    const char *key;
    json_t *v;
    void *tmp;
    json_object_foreach_safe(obj, tmp, key, v)
    {
        const lm_field_spec *f = NULL;
        for (size_t i = 0; i < n; i++)
            if (strcmp(specs[i].name, key) == 0) f = &specs[i];
        if (!f) {
            lm_verrs_add(errs, key, "unknown field");
            continue;
        }
        if (f->read_only) {
            lm_verrs_add(errs, key, "is set by the server and cannot be written");
            continue;
        }
        check_one(obj, key, v, f, errs);
    }
    if (partial) return;
    for (size_t i = 0; i < n; i++)
        if (specs[i].required && !json_object_get(obj, specs[i].name))
            lm_verrs_add(errs, specs[i].name, "is required");
}

void lm_json_resp(lm_req *req, int status, json_t *doc)
{
    size_t len = json_dumpb(doc, NULL, 0, JSON_COMPACT);
    char *buf = lm_xmalloc(len ? len : 1);
    json_dumpb(doc, buf, len, JSON_COMPACT);
    json_decref(doc);
    lm_resp_send(req, status, "application/json", buf, len);
    free(buf);
}

const char *lm_json_str(const json_t *obj, const char *key)
{
    return json_string_value(json_object_get(obj, key));
}
