/* fuzz_url_router.c — libFuzzer target for the request-target helpers: percent-decoding
 * (lm_url_decode), http:// URLs (lm_url_parse), integers (lm_parse_int, lm_parse_uint),
 * query strings (lm_query_parse), routing (lm_router_match, and
 * lm_router_add on fuzzed templates), W3C traceparent (lm_trace_parse) and X-Request-ID.
 *
 * Input: 1 selector byte, then the text. Oracle, beyond the sanitizers: decoding never grows
 * and yields a C string of the reported length; query pairs are NUL-terminated inside their
 * storage and findable by key; route parameters point into the matched path; a parsed
 * traceparent formats back to a value that parses to the same ids; request ids are sane; a
 * parsed URL has a host, a port from 1 to 65535 and a path without spaces, and formats back
 * to a URL that parses the same; a parsed integer prints back as the text. */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "parse.h"
#include "router.h"
#include "trace.h"
#include "url.h"

static void die(const char *what)
{
    fprintf(stderr, "fuzz_url_router: invariant violated: %s\n", what);
    abort();
}

static void noop(struct lm_req *req, void *ctx)
{
    (void)req;
    (void)ctx;
}

static const lm_router *router(void)
{
    static lm_router *r;
    if (!r) {
        r = lm_router_new();
        lm_router_add(r, "GET", "/health", noop, NULL);
        lm_router_add(r, "GET", "/api/v1/charges", noop, NULL);
        lm_router_add(r, "GET", "/api/v1/charge/{id}", noop, NULL);
        lm_router_add(r, "PUT", "/api/v1/charge/{id}", noop, NULL);
        lm_router_add(r, "DELETE", "/api/v1/charge/{id}", noop, NULL);
        lm_router_add(r, "POST", "/api/v1/charge/create", noop, NULL);
        lm_router_add(r, "*", "/api/{service}/{path...}", noop, NULL);
        lm_router_add(r, "GET", "/a/{x}/b/{y}", noop, NULL);
        lm_router_add(r, "POST", "/a/{x}/b/{y}", noop, NULL);
        lm_router_add(r, "GET", "/files/{rest...}", noop, NULL);
        lm_router_add(r, "PATCH", "/", noop, NULL);
    }
    return r;
}

static void fuzz_decode(const char *s, size_t n)
{
    char *out = malloc(n + 1);
    for (int plus = 0; plus < 2; plus++) {
        size_t o = (size_t)-1;
        if (lm_url_decode(s, n, out, &o, plus)) {
            if (o > n) die("decoding grew");
            if (strlen(out) != o) die("decoded length does not match its NUL");
            if (!plus && !memchr(s, '%', n) && (o != n || memcmp(out, s, n) != 0))
                die("decoding changed text without escapes");
        }
    }
    free(out);
}

static void fuzz_query(const char *s, size_t n)
{
    lm_query q;
    if (lm_query_parse(s, n, &q) != 0) {
        if (q.n != 0 || q.pairs || q.storage) die("failed parse left state behind");
        return;
    }
    for (size_t i = 0; i < q.n; i++) {
        const lm_query_pair *p = &q.pairs[i];
        if (p->key < q.storage || p->value < q.storage) die("pair outside its storage");
        (void)strlen(p->key); /* ASan: terminated inside the allocation */
        (void)strlen(p->value);
        if (!lm_query_get(&q, p->key)) die("a parsed key is not found");
        if (lm_query_count(&q, p->key) == 0) die("a parsed key counts 0");
    }
    lm_query_free(&q);
}

static const char *const methods[] = {"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"};

static void fuzz_route(const char *s, size_t n, uint8_t sel)
{
    lm_route_match m;
    const char *method = methods[sel % (sizeof methods / sizeof *methods)];
    int rc = lm_router_match(router(), method, s, n, &m);
    if (rc == LM_ROUTE_FOUND) {
        if (!m.handler || m.route_id < 0 || !m.template_path) die("found without a route");
        if (m.n_params > LM_ROUTE_MAX_PARAMS) die("too many params");
        for (size_t i = 0; i < m.n_params; i++) {
            const lm_route_param *p = &m.params[i];
            if (p->raw < s || p->raw + p->raw_len > s + n) die("param outside the path");
            if (p->raw_len == 0) die("empty param");
            fuzz_decode(p->raw, p->raw_len);
        }
    } else if (rc == LM_ROUTE_METHOD_NOT_ALLOWED) {
        if (!m.allow[0] || strlen(m.allow) >= sizeof m.allow) die("405 without Allow");
    } else if (rc != LM_ROUTE_NOT_FOUND) {
        die("unknown match result");
    }
}

static void fuzz_template(const char *s, size_t n)
{
    /* templates are C strings: the fuzzed text up to its first NUL */
    char *tpl = strndup(s, n);
    lm_router *r = lm_router_new();
    int id = lm_router_add(r, "GET", tpl, noop, NULL);
    if (id >= 0) {
        lm_route_match m;
        if (lm_router_match(r, "GET", tpl, strlen(tpl), &m) == LM_ROUTE_FOUND && m.route_id != id)
            die("template matched another route");
        lm_router_match(r, "POST", tpl, strlen(tpl), &m);
        lm_router_match(r, "GET", "/x/y/z", 6, &m);
    }
    lm_router_free(r);
    free(tpl);
}

static void fuzz_trace(const char *s, size_t n)
{
    lm_trace_ctx t, u;
    memset(&t, 0xAB, sizeof t);
    lm_trace_ctx before = t;
    if (lm_trace_parse(s, n, &t)) {
        /* parse gives the caller's span as parent; begin gives this request its own span,
         * which is what goes out: the next hop must parse it back as its parent */
        if (!t.has_parent) die("parsed context without parent");
        lm_trace_ctx mine;
        lm_trace_begin(&mine, s, n);
        if (memcmp(mine.trace_id, t.trace_id, 16) != 0 ||
            memcmp(mine.parent_span_id, t.parent_span_id, 8) != 0)
            die("begin did not continue the parsed trace");
        char buf[LM_TRACEPARENT_LEN + 1];
        lm_trace_format(&mine, buf);
        if (strlen(buf) != LM_TRACEPARENT_LEN) die("traceparent of the wrong length");
        if (!lm_trace_parse(buf, strlen(buf), &u)) die("formatted traceparent does not parse");
        if (memcmp(u.trace_id, t.trace_id, 16) != 0 || memcmp(u.parent_span_id, mine.span_id, 8))
            die("traceparent does not round-trip");
    } else if (memcmp(&t, &before, sizeof t) != 0) {
        die("failed parse changed the context");
    }
    lm_trace_begin(&t, s, n);
    lm_trace_child(&t, &u);
    if (memcmp(u.trace_id, t.trace_id, 16) != 0) die("child left the trace");
    char hex[33];
    lm_trace_id_hex(&t, hex);
    if (strlen(hex) != 32) die("trace id hex length");

    char rid[LM_REQUEST_ID_MAX + 1];
    lm_trace_request_id_assign(s, n, rid);
    size_t rl = strlen(rid);
    if (rl == 0 || rl > LM_REQUEST_ID_MAX) die("request id length");
    for (size_t i = 0; i < rl; i++)
        if (!strchr("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:@/+=-",
                    rid[i]))
            die("request id with a character outside its set");
}

static void fuzz_url_parse(const char *s, size_t n)
{
    char *text = strndup(s, n); /* URLs and integers are C strings */
    static lm_url u, v;
    char err[300];
    if (lm_url_parse(text, &u, err, sizeof err) == 0) {
        if (!u.host[0] || u.port < 1 || u.port > 65535) die("URL without host or port");
        for (const char *c = u.path; *c; c++)
            if ((unsigned char)*c <= 0x20 || *c == 0x7f) die("URL path with a space or control");
        static char again[2400];
        bool v6 = strchr(u.host, ':') != NULL;
        snprintf(again, sizeof again, "http://%s%s%s:%d%s", v6 ? "[" : "", u.host, v6 ? "]" : "",
                 u.port, u.path);
        if (lm_url_parse(again, &v, err, sizeof err) != 0 || strcmp(u.host, v.host) ||
            u.port != v.port || strcmp(u.path, v.path))
            die("URL does not round-trip");
    } else if (!err[0]) {
        die("URL refused without a reason");
    }
    long long i;
    uint64_t w;
    char back[32];
    if (lm_parse_int(text, &i)) {
        snprintf(back, sizeof back, "%lld", i);
        if (strcmp(back, text) != 0 && !(text[0] == '-' || text[0] == '0')) die("int round-trip");
    }
    if (lm_parse_uint(text, &w)) {
        if (text[0] < '0' || text[0] > '9') die("uint without a leading digit");
    }
    free(text);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    uint8_t sel = data[0];
    size_t n = size - 1;
    /* an exact-size copy: reading one byte past the input is an ASan report */
    char *s = malloc(n ? n : 1);
    memcpy(s, data + 1, n);
    fuzz_decode(s, n);
    fuzz_query(s, n);
    fuzz_url_parse(s, n);
    fuzz_route(s, n, sel);
    if (sel & 0x80) fuzz_template(s, n);
    fuzz_trace(s, n);
    free(s);
    return 0;
}
