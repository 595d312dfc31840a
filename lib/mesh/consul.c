/* consul.c — Consul wire format: durations, key matching, registration bodies. See consul.h. */
#include "consul.h"

#include "buf.h"
#include "client.h"
#include "url.h"

#include <ctype.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ---- statuses ------------------------------------------------------------------------- */

const char *lm_consul_status_name(lm_consul_status s)
{
    switch (s) {
    case LM_CONSUL_PASSING:
        return "passing";
    case LM_CONSUL_WARNING:
        return "warning";
    default:
        return "critical";
    }
}

bool lm_consul_status_parse(const char *s, lm_consul_status *out)
{
    if (!s) return false;
    if (strcmp(s, "passing") == 0)
        *out = LM_CONSUL_PASSING;
    else if (strcmp(s, "warning") == 0)
        *out = LM_CONSUL_WARNING;
    else if (strcmp(s, "critical") == 0)
        *out = LM_CONSUL_CRITICAL;
    else
        return false;
    return true;
}

/* ---- durations ------------------------------------------------------------------------ */

static bool unit_of(const char **pp, uint64_t *unit)
{
    static const struct {
        const char *s;
        uint64_t ns;
    } units[] = {
        {"ns", 1ULL},           {"us", 1000ULL},
        {"\xc2\xb5s", 1000ULL}, /* U+00B5 micro sign */
        {"\xce\xbcs", 1000ULL}, /* U+03BC Greek mu */
        {"ms", 1000000ULL},     {"s", 1000000000ULL},
        {"m", 60000000000ULL},  {"h", 3600000000000ULL},
    };
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
        size_t n = strlen(units[i].s);
        if (strncmp(*pp, units[i].s, n) == 0) {
            *pp += n;
            *unit = units[i].ns;
            return true;
        }
    }
    return false;
}

bool lm_consul_parse_duration(const char *s, uint64_t *ns)
{
    if (!s || !*s) return false;
    if (strcmp(s, "0") == 0) {
        *ns = 0;
        return true;
    }
    uint64_t total = 0;
    const char *p = s;
    while (*p) {
        uint64_t whole = 0, frac = 0, scale = 1;
        bool digits = false;
        while (isdigit((unsigned char)*p)) {
            unsigned d = (unsigned)(*p++ - '0');
            if (whole > (UINT64_MAX - d) / 10) return false;
            whole = whole * 10 + d;
            digits = true;
        }
        if (*p == '.') {
            p++;
            while (isdigit((unsigned char)*p)) {
                if (scale < 1000000000000000000ULL) { /* further digits are below 1 ns */
                    frac = frac * 10 + (unsigned)(*p - '0');
                    scale *= 10;
                }
                p++;
                digits = true;
            }
        }
        uint64_t unit;
        if (!digits || !unit_of(&p, &unit)) return false;
        if (whole > UINT64_MAX / unit) return false;
        uint64_t v = whole * unit;
        if (frac) {
            long double f = (long double)frac * (long double)unit / (long double)scale;
            if (f > (long double)(UINT64_MAX - v)) return false;
            v += (uint64_t)f;
        }
        if (v > UINT64_MAX - total) return false;
        total += v;
    }
    if (total > (uint64_t)INT64_MAX) return false; /* Go's time.Duration is an int64 */
    *ns = total;
    return true;
}

static uint64_t ns_to_ms(uint64_t ns)
{
    return ns / 1000000 + (ns % 1000000 ? 1 : 0);
}

bool lm_consul_duration_ms(const json_t *v, uint64_t *ms)
{
    uint64_t ns;
    if (json_is_string(v)) {
        if (!lm_consul_parse_duration(json_string_value(v), &ns)) return false;
    } else if (json_is_integer(v)) {
        if (json_integer_value(v) < 0) return false;
        ns = (uint64_t)json_integer_value(v);
    } else {
        return false;
    }
    *ms = ns_to_ms(ns);
    return true;
}

void lm_consul_format_duration(uint64_t ms, char *out, size_t outlen)
{
    if (ms % 1000 == 0)
        snprintf(out, outlen, "%" PRIu64 "s", ms / 1000);
    else
        snprintf(out, outlen, "%" PRIu64 "ms", ms);
}

/* ---- keys ----------------------------------------------------------------------------- */

bool lm_consul_key_eq(const char *a, const char *b)
{
    for (;;) {
        while (*a == '_')
            a++;
        while (*b == '_')
            b++;
        if (!*a || !*b) return !*a && !*b;
        if (tolower((unsigned char)*a) != tolower((unsigned char)*b)) return false;
        a++;
        b++;
    }
}

json_t *lm_consul_get(const json_t *obj, const char *key)
{
    const char *k;
    json_t *v;
    if (!json_is_object(obj)) return NULL;
    json_object_foreach((json_t *)obj, k, v)
    {
        if (lm_consul_key_eq(k, key)) return v;
    }
    return NULL;
}

/* ---- decoding ------------------------------------------------------------------------- */

typedef struct dec {
    char *err;
    size_t errlen;
    char where[64]; /* "" or "Check" or "Checks[2]" */
} dec;

static int fail(dec *d, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(dec *d, const char *field, const char *fmt, ...)
{
    char msg[384];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (d->err && d->errlen) {
        if (field && d->where[0])
            snprintf(d->err, d->errlen, "%s.%s: %s", d->where, field, msg);
        else if (field)
            snprintf(d->err, d->errlen, "%s: %s", field, msg);
        else if (d->where[0])
            snprintf(d->err, d->errlen, "%s: %s", d->where, msg);
        else
            snprintf(d->err, d->errlen, "%s", msg);
    }
    return -1;
}

/* Binds obj's members to names (matched as Consul does); refuses unknown and duplicate
 * keys. JSON null counts as absent. refused: names known to Consul that we do not
 * implement, reported as such. */
static int bind(dec *d, const json_t *obj, const char *const *names, size_t n, const json_t **vals,
                const char *const *refused, const char *refused_why)
{
    bool seen[32] = {false};
    const char *k;
    json_t *v;
    for (size_t i = 0; i < n; i++)
        vals[i] = NULL;
    json_object_foreach((json_t *)obj, k, v)
    {
        size_t i = 0;
        while (i < n && !lm_consul_key_eq(k, names[i]))
            i++;
        if (i == n) {
            for (size_t j = 0; refused && refused[j]; j++)
                if (lm_consul_key_eq(k, refused[j]))
                    return fail(d, NULL, "%s %s", refused[j], refused_why);
            return fail(d, NULL, "unknown or unsupported field \"%.64s\"", k);
        }
        if (seen[i])
            return fail(d, names[i], "given more than once (keys match case-insensitively)");
        seen[i] = true;
        vals[i] = json_is_null(v) ? NULL : v;
    }
    return 0;
}

static bool has_ctl(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f) return true;
    return false;
}

/* A string field; NULL v leaves *out NULL. */
static int get_str(dec *d, const json_t *v, const char *field, size_t max, bool nonempty,
                   char **out)
{
    *out = NULL;
    if (!v) return 0;
    if (!json_is_string(v)) return fail(d, field, "must be a string");
    const char *s = json_string_value(v);
    size_t n = json_string_length(v);
    if (strlen(s) != n) return fail(d, field, "must not contain NUL characters");
    if (n > max) return fail(d, field, "is longer than %zu bytes", max);
    if (nonempty && n == 0) return fail(d, field, "must not be empty");
    if (has_ctl(s)) return fail(d, field, "must not contain control characters");
    *out = lm_xstrdup(s);
    return 0;
}

static int get_duration(dec *d, const json_t *v, const char *field, uint64_t *ms)
{
    *ms = 0;
    if (!v) return 0;
    if (json_is_string(v) && !lm_consul_duration_ms(v, ms))
        return fail(d, field,
                    "invalid duration \"%.40s\" (expected e.g. \"10s\", \"1m30s\", \"500ms\")",
                    json_string_value(v));
    if (!json_is_string(v) && !lm_consul_duration_ms(v, ms))
        return fail(d, field,
                    "must be a duration string such as \"10s\" or a non-negative "
                    "number of nanoseconds");
    return 0;
}

static bool is_token(const char *s)
{
    if (!*s) return false;
    for (; *s; s++)
        if (!isalnum((unsigned char)*s) && !strchr("!#$%&'*+-.^_`|~", *s)) return false;
    return true;
}

static int add_header(dec *d, lm_consul_check *c, const char *name, const json_t *v)
{
    if (!json_is_string(v)) return fail(d, "Header", "values must be strings or arrays of strings");
    const char *s = json_string_value(v);
    if (strlen(s) != json_string_length(v) || strpbrk(s, "\r\n") || strlen(s) > LM_CONSUL_MAX_TEXT)
        return fail(d, "Header", "value of \"%.64s\" is not a valid header value", name);
    if (c->n_headers == LM_CONSUL_MAX_HEADERS)
        return fail(d, "Header", "more than %d header values", LM_CONSUL_MAX_HEADERS);
    c->headers = lm_xrealloc(c->headers, (c->n_headers + 1) * sizeof *c->headers);
    c->headers[c->n_headers].name = lm_xstrdup(name);
    c->headers[c->n_headers].value = lm_xstrdup(s);
    c->n_headers++;
    return 0;
}

static int get_headers(dec *d, const json_t *v, lm_consul_check *c)
{
    if (!v) return 0;
    if (!json_is_object(v)) return fail(d, "Header", "must be an object of header name to values");
    const char *k;
    json_t *vals;
    json_object_foreach((json_t *)v, k, vals)
    {
        if (!is_token(k) || strlen(k) > 128)
            return fail(d, "Header", "\"%.64s\" is not a valid header name", k);
        if (json_is_array(vals)) {
            size_t i;
            json_t *x;
            json_array_foreach(vals, i, x)
            {
                if (add_header(d, c, k, x) != 0) return -1;
            }
        } else if (add_header(d, c, k, vals) != 0) {
            return -1;
        }
    }
    return 0;
}

enum {
    C_CHECKID,
    C_ID,
    C_NAME,
    C_NOTES,
    C_STATUS,
    C_TTL,
    C_HTTP,
    C_METHOD,
    C_HEADER,
    C_INTERVAL,
    C_TIMEOUT,
    C_DEREG,
    C_TLSSKIP,
    C__N
};
static const char *const check_fields[C__N] = {
    "CheckID",      "ID",     "Name",   "Notes",    "Status",  "TTL",
    "HTTP",         "Method", "Header", "Interval", "Timeout", "DeregisterCriticalServiceAfter",
    "TLSSkipVerify"};
static const char *const check_refused[] = {"Script",
                                            "Args",
                                            "ScriptArgs",
                                            "TCP",
                                            "UDP",
                                            "GRPC",
                                            "GRPCUseTLS",
                                            "H2PING",
                                            "DockerContainerID",
                                            "Shell",
                                            "AliasNode",
                                            "AliasService",
                                            "OSService",
                                            "Body",
                                            "SuccessBeforePassing",
                                            "FailuresBeforeWarning",
                                            "FailuresBeforeCritical",
                                            NULL};

/* Returns 0 with a check, 1 for an empty object (no check), -1 on error. */
static int check_decode(dec *d, const json_t *obj, lm_consul_check *c)
{
    memset(c, 0, sizeof *c);
    if (!json_is_object(obj)) return fail(d, NULL, "must be an object");
    if (json_object_size(obj) == 0) return 1;
    const json_t *v[C__N];
    if (bind(d, obj, check_fields, C__N, v, check_refused,
             "checks are not supported by this registry (TTL and HTTP checks are)") != 0)
        return -1;
    if (v[C_CHECKID] && v[C_ID]) return fail(d, "CheckID", "give CheckID or ID, not both");
    const json_t *idv = v[C_CHECKID] ? v[C_CHECKID] : v[C_ID];
    const char *idname = v[C_CHECKID] ? "CheckID" : "ID";
    char *status = NULL;
    if (get_str(d, idv, idname, LM_CONSUL_MAX_ID, true, &c->id) ||
        get_str(d, v[C_NAME], "Name", LM_CONSUL_MAX_ID, false, &c->name) ||
        get_str(d, v[C_NOTES], "Notes", LM_CONSUL_MAX_TEXT, false, &c->notes) ||
        get_str(d, v[C_STATUS], "Status", 16, false, &status) ||
        get_duration(d, v[C_TTL], "TTL", &c->ttl_ms) ||
        get_str(d, v[C_HTTP], "HTTP", LM_CONSUL_MAX_TEXT, true, &c->http) ||
        get_str(d, v[C_METHOD], "Method", 16, true, &c->method) || get_headers(d, v[C_HEADER], c) ||
        get_duration(d, v[C_INTERVAL], "Interval", &c->interval_ms) ||
        get_duration(d, v[C_TIMEOUT], "Timeout", &c->timeout_ms) ||
        get_duration(d, v[C_DEREG], "DeregisterCriticalServiceAfter", &c->deregister_ms))
        goto bad;
    if (v[C_TLSSKIP] && !json_is_boolean(v[C_TLSSKIP])) {
        fail(d, "TLSSkipVerify", "must be a boolean");
        goto bad;
    }
    if (status) {
        if (!lm_consul_status_parse(status, &c->status)) {
            fail(d, "Status", "must be \"passing\", \"warning\" or \"critical\" (got \"%.20s\")",
                 status);
            goto bad;
        }
        c->has_status = true;
    }
    free(status);
    status = NULL;
    if (c->method && !is_token(c->method)) {
        fail(d, "Method", "\"%.16s\" is not an HTTP method", c->method);
        goto bad;
    }
    bool ttl = v[C_TTL] != NULL, http = c->http != NULL;
    if (ttl && http) {
        fail(d, NULL, "give either TTL or HTTP, not both");
        goto bad;
    }
    if (!ttl && !http) {
        fail(d, NULL, "needs TTL, or HTTP with Interval (the check kinds this registry runs)");
        goto bad;
    }
    if (ttl) {
        c->type = LM_CONSUL_CHECK_TTL;
        if (c->ttl_ms == 0) {
            fail(d, "TTL", "must be greater than 0");
            goto bad;
        }
        if (v[C_INTERVAL]) {
            fail(d, NULL, "Interval and TTL cannot both be specified");
            goto bad;
        }
    } else {
        c->type = LM_CONSUL_CHECK_HTTP;
        lm_url u;
        char uerr[256];
        if (lm_url_parse(c->http, &u, uerr, sizeof uerr) != 0) {
            fail(d, "HTTP", "%s", uerr);
            goto bad;
        }
        if (c->interval_ms == 0) {
            fail(d, "Interval", "must be greater than 0 for an HTTP check");
            goto bad;
        }
    }
    return 0;
bad:
    free(status);
    lm_consul_check_free(c);
    return -1;
}

int lm_consul_check_decode(const json_t *obj, const char *where, lm_consul_check *out, char *err,
                           size_t errlen)
{
    dec d = {.err = err, .errlen = errlen};
    snprintf(d.where, sizeof d.where, "%s", where ? where : "");
    int rc = check_decode(&d, obj, out);
    if (rc == 1) return fail(&d, NULL, "is empty");
    return rc;
}

static int get_tags(dec *d, const json_t *v, lm_consul_service *s)
{
    if (!v) return 0;
    if (!json_is_array(v)) return fail(d, "Tags", "must be an array of strings");
    if (json_array_size(v) > LM_CONSUL_MAX_TAGS)
        return fail(d, "Tags", "more than %d tags", LM_CONSUL_MAX_TAGS);
    s->tags = lm_xcalloc(json_array_size(v) + 1, sizeof *s->tags);
    size_t i;
    json_t *t;
    json_array_foreach(v, i, t)
    {
        char field[32];
        snprintf(field, sizeof field, "Tags[%zu]", i);
        if (!t) return fail(d, field, "must be a string");
        if (get_str(d, t, field, LM_CONSUL_MAX_TAG, false, &s->tags[s->n_tags]) != 0) return -1;
        s->n_tags++;
    }
    return 0;
}

static bool meta_key_ok(const char *k)
{
    if (!*k) return false;
    for (const char *p = k; *p; p++)
        if (!isalnum((unsigned char)*p) && *p != '_' && *p != '-') return false;
    return true;
}

static int get_meta(dec *d, const json_t *v, lm_consul_service *s)
{
    if (!v) return 0;
    if (!json_is_object(v)) return fail(d, "Meta", "must be an object of string values");
    if (json_object_size(v) > LM_CONSUL_MAX_META)
        return fail(d, "Meta", "more than %d keys", LM_CONSUL_MAX_META);
    s->meta = lm_xcalloc(json_object_size(v) + 1, sizeof *s->meta);
    const char *k;
    json_t *x;
    json_object_foreach((json_t *)v, k, x)
    {
        if (!meta_key_ok(k) || strlen(k) > LM_CONSUL_MAX_META_KEY)
            return fail(d, "Meta", "key \"%.64s\" must be 1 to %d of A-Z a-z 0-9 _ -", k,
                        LM_CONSUL_MAX_META_KEY);
        if (strncasecmp(k, "consul-", 7) == 0)
            return fail(d, "Meta", "key \"%.64s\": the consul- prefix is reserved", k);
        char field[160];
        snprintf(field, sizeof field, "Meta.%s", k);
        char *val = NULL;
        if (!json_is_string(x)) return fail(d, field, "must be a string");
        if (get_str(d, x, field, LM_CONSUL_MAX_META_VAL, false, &val) != 0) return -1;
        s->meta[s->n_meta].key = lm_xstrdup(k);
        s->meta[s->n_meta].value = val;
        s->n_meta++;
    }
    return 0;
}

static int get_weights(dec *d, const json_t *v, lm_consul_service *s)
{
    s->weight_passing = 1;
    s->weight_warning = 1;
    if (!v) return 0;
    if (!json_is_object(v)) return fail(d, "Weights", "must be an object {Passing, Warning}");
    static const char *const names[] = {"Passing", "Warning"};
    const json_t *w[2];
    dec sub = *d;
    snprintf(sub.where, sizeof sub.where, "Weights"); /* Weights exist at the top level only */
    if (bind(&sub, v, names, 2, w, NULL, NULL) != 0) return -1;
    if (w[0]) {
        if (!json_is_integer(w[0]) || json_integer_value(w[0]) < 1 ||
            json_integer_value(w[0]) > 65535)
            return fail(&sub, "Passing", "must be an integer from 1 to 65535");
        s->weight_passing = (int)json_integer_value(w[0]);
    }
    if (w[1]) {
        if (!json_is_integer(w[1]) || json_integer_value(w[1]) < 0 ||
            json_integer_value(w[1]) > 65535)
            return fail(&sub, "Warning", "must be an integer from 0 to 65535");
        s->weight_warning = (int)json_integer_value(w[1]);
    }
    return 0;
}

static int add_check(dec *d, const json_t *obj, const char *where, lm_consul_service *s)
{
    dec sub = *d;
    snprintf(sub.where, sizeof sub.where, "%s", where);
    lm_consul_check c;
    int rc = check_decode(&sub, obj, &c);
    if (rc != 0) return rc < 0 ? -1 : 0;
    if (s->n_checks == LM_CONSUL_MAX_CHECKS) {
        lm_consul_check_free(&c);
        return fail(d, "Checks", "more than %d checks", LM_CONSUL_MAX_CHECKS);
    }
    s->checks = lm_xrealloc(s->checks, (s->n_checks + 1) * sizeof *s->checks);
    s->checks[s->n_checks++] = c;
    return 0;
}

enum { S_ID, S_NAME, S_TAGS, S_ADDRESS, S_PORT, S_META, S_CHECK, S_CHECKS, S_ETO, S_WEIGHTS, S__N };
static const char *const service_fields[S__N] = {
    "ID",   "Name",  "Tags",   "Address",           "Port",
    "Meta", "Check", "Checks", "EnableTagOverride", "Weights"};
static const char *const service_refused[] = {
    "Kind",      "Proxy",    "Connect", "TaggedAddresses", "SocketPath", "Namespace",
    "Partition", "Locality", NULL};

int lm_consul_service_decode(const json_t *body, lm_consul_service *s, char *err, size_t errlen)
{
    dec d = {.err = err, .errlen = errlen};
    memset(s, 0, sizeof *s);
    s->weight_passing = s->weight_warning = 1;
    if (!json_is_object(body)) return fail(&d, NULL, "the registration must be a JSON object");
    const json_t *v[S__N];
    if (bind(&d, body, service_fields, S__N, v, service_refused,
             "is not supported by this registry") != 0)
        goto bad;
    if (!v[S_NAME]) {
        fail(&d, "Name", "is required");
        goto bad;
    }
    if (get_str(&d, v[S_NAME], "Name", LM_CONSUL_MAX_ID, true, &s->name) ||
        get_str(&d, v[S_ID], "ID", LM_CONSUL_MAX_ID, true, &s->id) ||
        get_str(&d, v[S_ADDRESS], "Address", 256, false, &s->address) ||
        get_tags(&d, v[S_TAGS], s) || get_meta(&d, v[S_META], s) ||
        get_weights(&d, v[S_WEIGHTS], s))
        goto bad;
    if (!s->id) s->id = lm_xstrdup(s->name);
    if (!s->address) s->address = lm_xstrdup("");
    if (v[S_PORT]) {
        if (!json_is_integer(v[S_PORT]) || json_integer_value(v[S_PORT]) < 0 ||
            json_integer_value(v[S_PORT]) > 65535) {
            fail(&d, "Port", "must be an integer from 0 to 65535");
            goto bad;
        }
        s->port = (int)json_integer_value(v[S_PORT]);
    }
    if (v[S_ETO]) {
        if (!json_is_boolean(v[S_ETO])) {
            fail(&d, "EnableTagOverride", "must be a boolean");
            goto bad;
        }
        s->enable_tag_override = json_is_true(v[S_ETO]);
    }
    if (v[S_CHECK] && add_check(&d, v[S_CHECK], "Check", s) != 0) goto bad;
    if (v[S_CHECKS]) {
        if (!json_is_array(v[S_CHECKS])) {
            fail(&d, "Checks", "must be an array of check objects");
            goto bad;
        }
        size_t i;
        json_t *c;
        json_array_foreach(v[S_CHECKS], i, c)
        {
            char where[32];
            snprintf(where, sizeof where, "Checks[%zu]", i);
            if (!json_is_null(c) && add_check(&d, c, where, s) != 0) goto bad;
        }
    }
    /* check IDs given explicitly must be distinct within the service */
    for (size_t i = 0; i < s->n_checks; i++)
        for (size_t j = i + 1; j < s->n_checks; j++)
            if (s->checks[i].id && s->checks[j].id &&
                strcmp(s->checks[i].id, s->checks[j].id) == 0) {
                fail(&d, "Checks", "check ID \"%.64s\" is given twice", s->checks[i].id);
                goto bad;
            }
    return 0;
bad:
    lm_consul_service_free(s);
    return -1;
}

void lm_consul_check_free(lm_consul_check *c)
{
    free(c->id);
    free(c->name);
    free(c->notes);
    free(c->http);
    free(c->method);
    for (size_t i = 0; i < c->n_headers; i++) {
        free(c->headers[i].name);
        free(c->headers[i].value);
    }
    free(c->headers);
    memset(c, 0, sizeof *c);
}

void lm_consul_service_free(lm_consul_service *s)
{
    free(s->id);
    free(s->name);
    free(s->address);
    for (size_t i = 0; i < s->n_tags; i++)
        free(s->tags[i]);
    free(s->tags);
    for (size_t i = 0; i < s->n_meta; i++) {
        free(s->meta[i].key);
        free(s->meta[i].value);
    }
    free(s->meta);
    for (size_t i = 0; i < s->n_checks; i++)
        lm_consul_check_free(&s->checks[i]);
    free(s->checks);
    memset(s, 0, sizeof *s);
}

static char *dup_or_null(const char *s)
{
    return s ? lm_xstrdup(s) : NULL;
}

void lm_consul_check_copy(lm_consul_check *dst, const lm_consul_check *src)
{
    *dst = *src;
    dst->id = dup_or_null(src->id);
    dst->name = dup_or_null(src->name);
    dst->notes = dup_or_null(src->notes);
    dst->http = dup_or_null(src->http);
    dst->method = dup_or_null(src->method);
    dst->headers = src->n_headers ? lm_xcalloc(src->n_headers, sizeof *dst->headers) : NULL;
    for (size_t i = 0; i < src->n_headers; i++) {
        dst->headers[i].name = lm_xstrdup(src->headers[i].name);
        dst->headers[i].value = lm_xstrdup(src->headers[i].value);
    }
}

void lm_consul_service_copy(lm_consul_service *dst, const lm_consul_service *src)
{
    *dst = *src;
    dst->id = dup_or_null(src->id);
    dst->name = dup_or_null(src->name);
    dst->address = dup_or_null(src->address);
    dst->tags = lm_xcalloc(src->n_tags + 1, sizeof *dst->tags);
    for (size_t i = 0; i < src->n_tags; i++)
        dst->tags[i] = lm_xstrdup(src->tags[i]);
    dst->meta = lm_xcalloc(src->n_meta + 1, sizeof *dst->meta);
    for (size_t i = 0; i < src->n_meta; i++) {
        dst->meta[i].key = lm_xstrdup(src->meta[i].key);
        dst->meta[i].value = lm_xstrdup(src->meta[i].value);
    }
    dst->checks = src->n_checks ? lm_xcalloc(src->n_checks, sizeof *dst->checks) : NULL;
    for (size_t i = 0; i < src->n_checks; i++)
        lm_consul_check_copy(&dst->checks[i], &src->checks[i]);
}

static bool str_eq(const char *a, const char *b)
{
    if (!a || !b) return a == b;
    return strcmp(a, b) == 0;
}

bool lm_consul_check_equal(const lm_consul_check *a, const lm_consul_check *b)
{
    if (!str_eq(a->id, b->id) || !str_eq(a->name, b->name) || !str_eq(a->notes, b->notes) ||
        a->type != b->type || a->ttl_ms != b->ttl_ms || !str_eq(a->http, b->http) ||
        !str_eq(a->method, b->method) || a->interval_ms != b->interval_ms ||
        a->timeout_ms != b->timeout_ms || a->deregister_ms != b->deregister_ms ||
        a->n_headers != b->n_headers)
        return false;
    for (size_t i = 0; i < a->n_headers; i++)
        if (!str_eq(a->headers[i].name, b->headers[i].name) ||
            !str_eq(a->headers[i].value, b->headers[i].value))
            return false;
    return true;
}

bool lm_consul_service_equal(const lm_consul_service *a, const lm_consul_service *b)
{
    if (!str_eq(a->id, b->id) || !str_eq(a->name, b->name) || !str_eq(a->address, b->address) ||
        a->port != b->port || a->n_tags != b->n_tags || a->n_meta != b->n_meta ||
        a->enable_tag_override != b->enable_tag_override ||
        a->weight_passing != b->weight_passing || a->weight_warning != b->weight_warning ||
        a->n_checks != b->n_checks)
        return false;
    for (size_t i = 0; i < a->n_tags; i++)
        if (!str_eq(a->tags[i], b->tags[i])) return false;
    for (size_t i = 0; i < a->n_meta; i++)
        if (!str_eq(a->meta[i].key, b->meta[i].key) || !str_eq(a->meta[i].value, b->meta[i].value))
            return false;
    for (size_t i = 0; i < a->n_checks; i++)
        if (!lm_consul_check_equal(&a->checks[i], &b->checks[i])) return false;
    return true;
}

/* ---- encoding ------------------------------------------------------------------------- */

static void set_duration(json_t *o, const char *key, uint64_t ms)
{
    char buf[32];
    lm_consul_format_duration(ms, buf, sizeof buf);
    json_object_set_new(o, key, json_string(buf));
}

json_t *lm_consul_check_encode(const lm_consul_check *c)
{
    json_t *o = json_object();
    if (c->id) json_object_set_new(o, "CheckID", json_string(c->id));
    if (c->name) json_object_set_new(o, "Name", json_string(c->name));
    if (c->notes) json_object_set_new(o, "Notes", json_string(c->notes));
    if (c->type == LM_CONSUL_CHECK_TTL) {
        set_duration(o, "TTL", c->ttl_ms);
    } else {
        json_object_set_new(o, "HTTP", json_string(c->http));
        if (c->method) json_object_set_new(o, "Method", json_string(c->method));
        if (c->n_headers) {
            json_t *h = json_object();
            for (size_t i = 0; i < c->n_headers; i++) {
                json_t *arr = json_object_get(h, c->headers[i].name);
                if (!arr) {
                    arr = json_array();
                    json_object_set_new(h, c->headers[i].name, arr);
                }
                json_array_append_new(arr, json_string(c->headers[i].value));
            }
            json_object_set_new(o, "Header", h);
        }
        set_duration(o, "Interval", c->interval_ms);
        if (c->timeout_ms) set_duration(o, "Timeout", c->timeout_ms);
    }
    if (c->deregister_ms) set_duration(o, "DeregisterCriticalServiceAfter", c->deregister_ms);
    if (c->has_status)
        json_object_set_new(o, "Status", json_string(lm_consul_status_name(c->status)));
    return o;
}

json_t *lm_consul_service_encode(const lm_consul_service *s)
{
    json_t *o = json_object();
    json_object_set_new(o, "ID", json_string(s->id));
    json_object_set_new(o, "Name", json_string(s->name));
    json_t *tags = json_array();
    for (size_t i = 0; i < s->n_tags; i++)
        json_array_append_new(tags, json_string(s->tags[i]));
    json_object_set_new(o, "Tags", tags);
    json_object_set_new(o, "Address", json_string(s->address ? s->address : ""));
    json_object_set_new(o, "Port", json_integer(s->port));
    json_t *meta = json_object();
    for (size_t i = 0; i < s->n_meta; i++)
        json_object_set_new(meta, s->meta[i].key, json_string(s->meta[i].value));
    json_object_set_new(o, "Meta", meta);
    json_object_set_new(o, "EnableTagOverride", json_boolean(s->enable_tag_override));
    json_object_set_new(
        o, "Weights",
        json_pack("{s:i,s:i}", "Passing", s->weight_passing, "Warning", s->weight_warning));
    if (s->n_checks) {
        json_t *checks = json_array();
        for (size_t i = 0; i < s->n_checks; i++)
            json_array_append_new(checks, lm_consul_check_encode(&s->checks[i]));
        json_object_set_new(o, "Checks", checks);
    }
    return o;
}

uint64_t lm_consul_retry_ms(unsigned failures)
{
    uint64_t ms = 250;
    for (unsigned i = 1; i < failures && ms < 5000; i++)
        ms *= 2;
    return ms < 5000 ? ms : 5000;
}
