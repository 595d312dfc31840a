/* router.c — segment-wise template matching. Route tables are small (tens of routes), so a
 * linear scan is both simplest and fast: no allocation per match. The path is resolved
 * before the method: the most specific shape of template that matches the path (see
 * shape_cmp) owns it, and a method none of that shape's routes takes is a 405, never a
 * fall-through to a less specific template. */
#include "router.h"

#include "buf.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

typedef struct segment {
    char *text; /* literal text, or the parameter name */
    size_t len;
    bool is_param;
    bool is_rest;
} segment;

typedef struct route {
    char method[16];
    char *template_path;
    segment *segs;
    size_t n_segs;
    lm_handler_fn handler;
    void *ctx;
    unsigned flags;
} route;

struct lm_router {
    route *routes;
    size_t n, cap;
};

lm_router *lm_router_new(void)
{
    return lm_xcalloc(1, sizeof(lm_router));
}

void lm_router_free(lm_router *r)
{
    if (!r) return;
    for (size_t i = 0; i < r->n; i++) {
        for (size_t j = 0; j < r->routes[i].n_segs; j++)
            free(r->routes[i].segs[j].text);
        free(r->routes[i].segs);
        free(r->routes[i].template_path);
    }
    free(r->routes);
    free(r);
}

size_t lm_router_count(const lm_router *r)
{
    return r->n;
}

const char *lm_router_template(const lm_router *r, int id)
{
    return id >= 0 && (size_t)id < r->n ? r->routes[id].template_path : NULL;
}

int lm_router_add(lm_router *r, const char *method, const char *tpl, lm_handler_fn handler,
                  void *ctx)
{
    return lm_router_add_flags(r, method, tpl, handler, ctx, 0);
}

int lm_router_add_flags(lm_router *r, const char *method, const char *tpl, lm_handler_fn handler,
                        void *ctx, unsigned flags)
{
    if (!tpl || tpl[0] != '/' || strlen(method) >= sizeof r->routes[0].method) return -1;
    segment *segs = NULL;
    size_t n = 0, params = 0;
    const char *p = tpl + 1;
    bool ok = true;
    for (;;) {
        const char *end = strchr(p, '/');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        segment s = {0};
        if (len >= 2 && p[0] == '{' && p[len - 1] == '}') {
            s.is_param = true;
            s.text = lm_xstrndup(p + 1, len - 2);
            s.len = len - 2;
            if (s.len > 3 && strcmp(s.text + s.len - 3, "...") == 0) {
                s.is_rest = true;
                s.len -= 3;
                s.text[s.len] = '\0';
                if (end) ok = false; /* rest parameter must be last */
            }
            if (s.len == 0 || ++params > LM_ROUTE_MAX_PARAMS) ok = false;
        } else {
            if (memchr(p, '{', len) || memchr(p, '}', len)) ok = false;
            s.text = lm_xstrndup(p, len);
            s.len = len;
        }
        segs = lm_xrealloc(segs, (n + 1) * sizeof *segs);
        segs[n++] = s;
        if (!end) break;
        p = end + 1;
    }
    if (!ok) {
        for (size_t i = 0; i < n; i++)
            free(segs[i].text);
        free(segs);
        return -1;
    }
    if (r->n == r->cap) {
        r->cap = r->cap ? r->cap * 2 : 16;
        r->routes = lm_xrealloc(r->routes, r->cap * sizeof *r->routes);
    }
    route *rt = &r->routes[r->n];
    memset(rt, 0, sizeof *rt);
    strcpy(rt->method, method);
    rt->template_path = lm_xstrdup(tpl);
    rt->segs = segs;
    rt->n_segs = n;
    rt->handler = handler;
    rt->ctx = ctx;
    rt->flags = flags;
    return (int)r->n++;
}

/* Matches path against rt: true with the parameters in m, false if the path has another
 * shape. */
static bool match_route(const route *rt, const char *path, size_t len, lm_route_match *m)
{
    const char *p = path + 1, *end = path + len;
    size_t np = 0;
    for (size_t i = 0; i < rt->n_segs; i++) {
        const segment *s = &rt->segs[i];
        if (p > end) return false;
        if (s->is_rest) {
            if (p >= end) return false; /* rest needs at least one byte */
            m->params[np].name = s->text;
            m->params[np].raw = p;
            m->params[np].raw_len = (size_t)(end - p);
            np++;
            p = end + 1;
            break;
        }
        const char *slash = memchr(p, '/', (size_t)(end - p));
        const char *seg_end = slash ? slash : end;
        size_t seg_len = (size_t)(seg_end - p);
        if (s->is_param) {
            if (seg_len == 0) return false;
            m->params[np].name = s->text;
            m->params[np].raw = p;
            m->params[np].raw_len = seg_len;
            np++;
        } else if (seg_len != s->len || memcmp(p, s->text, seg_len) != 0) {
            return false;
        }
        p = seg_end + 1;
    }
    if (p <= end) return false; /* path has more segments than the template */
    m->n_params = np;
    return true;
}

static int seg_rank(const segment *s)
{
    return s->is_rest ? 0 : s->is_param ? 1 : 2;
}

/* Of two routes that both match one path: > 0 when a is more specific than b, < 0 when less,
 * 0 when they have the same shape. Segment by segment from the left, the first difference
 * decides: a literal beats a parameter, a parameter beats a rest parameter. Two routes that
 * match the same path and agree on every segment's kind agree on their literals (they equal
 * the path's) and on their length (both end at the path's end, or at a rest parameter). */
static int shape_cmp(const route *a, const route *b)
{
    size_t n = a->n_segs < b->n_segs ? a->n_segs : b->n_segs;
    for (size_t i = 0; i < n; i++) {
        int d = seg_rank(&a->segs[i]) - seg_rank(&b->segs[i]);
        if (d) return d;
    }
    return 0;
}

static bool allow_has(const char *allow, const char *method)
{
    size_t mlen = strlen(method);
    for (const char *t = allow; *t;) {
        size_t tlen = strcspn(t, ",");
        if (tlen == mlen && memcmp(t, method, mlen) == 0) return true;
        t += tlen;
        while (*t == ',' || *t == ' ')
            t++;
    }
    return false;
}

/* Adds a method to the Allow list, once; GET brings HEAD along. */
static void allow_add(char *allow, size_t cap, const char *method)
{
    size_t used = strlen(allow), mlen = strlen(method);
    if (!allow_has(allow, method) && used + mlen + 3 <= cap) {
        if (used) strcat(allow, ", ");
        strcat(allow, method);
    }
    if (strcmp(method, "GET") == 0) allow_add(allow, cap, "HEAD");
}

int lm_router_match(const lm_router *r, const char *method, const char *path, size_t len,
                    lm_route_match *m)
{
    memset(m, 0, offsetof(lm_route_match, params));
    m->route_id = -1;
    m->allow[0] = '\0';
    if (len == 0 || path[0] != '/') return LM_ROUTE_NOT_FOUND;
    bool is_head = strcmp(method, "HEAD") == 0;
    /* shape: the first route of the most specific shape matching the path, whatever its
     * method; hit: the first route of that shape that takes the method */
    int shape = -1, hit = -1;
    char allow[sizeof m->allow] = "";
    lm_route_match tmp;
    for (size_t i = 0; i < r->n; i++) {
        const route *rt = &r->routes[i];
        if (!match_route(rt, path, len, &tmp)) continue;
        int cmp = shape < 0 ? 1 : shape_cmp(rt, &r->routes[shape]);
        if (cmp < 0) continue;
        if (cmp > 0) { /* a more specific shape: what was found so far does not count */
            shape = (int)i;
            hit = -1;
            allow[0] = '\0';
        }
        bool method_ok = strcmp(rt->method, "*") == 0 || strcmp(rt->method, method) == 0 ||
                         (is_head && strcmp(rt->method, "GET") == 0);
        if (!method_ok) {
            allow_add(allow, sizeof allow, rt->method);
        } else if (hit < 0) {
            hit = (int)i;
            m->n_params = tmp.n_params;
            memcpy(m->params, tmp.params, sizeof tmp.params);
        }
    }
    if (shape < 0) return LM_ROUTE_NOT_FOUND;
    if (hit < 0) { /* the path's route, for metrics and the access log; no handler */
        m->route_id = shape;
        m->template_path = r->routes[shape].template_path;
        memcpy(m->allow, allow, sizeof allow);
        return LM_ROUTE_METHOD_NOT_ALLOWED;
    }
    m->route_id = hit;
    m->template_path = r->routes[hit].template_path;
    m->handler = r->routes[hit].handler;
    m->ctx = r->routes[hit].ctx;
    m->flags = r->routes[hit].flags;
    return LM_ROUTE_FOUND;
}
