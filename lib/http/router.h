/* router.h — method + path-template routing (lm_router).
 *
 * Templates are literal segments and parameters: "/api/v1/charge/{id}"; a last segment
 * "{name...}" takes the rest of the path, slashes included ("/api/{service}/{path...}").
 * The path is resolved first, the method second. Of the templates that match a path, the
 * most specific shape owns it: compared segment by segment from the left, a literal beats a
 * parameter and a parameter beats a rest parameter, so "/api/v1/charge/create" and
 * "/api/v1/charge/{id}" coexist. Then the routes of that shape are asked for the method
 * ("*" takes any, HEAD is taken by GET, the first added wins); if none takes it, the answer
 * is LM_ROUTE_METHOD_NOT_ALLOWED with that shape's Allow list — a less specific template
 * never answers instead: with only POST on "/api/v1/charge/create", a GET on it is a 405
 * with "Allow: POST", not GET "/api/v1/charge/{id}" with id "create".
 *
 * Route ids are dense indexes from 0 in the order of lm_router_add(); metrics use them.
 * Ownership: the router copies templates. Threading: build it before the workers start;
 * after that it is read-only and lm_router_match() may be called from any thread. */
#ifndef LM_ROUTER_H
#define LM_ROUTER_H

#include <stddef.h>

#define LM_ROUTE_MAX_PARAMS 8

struct lm_req;
typedef void (*lm_handler_fn)(struct lm_req *req, void *ctx);

typedef struct lm_router lm_router;

typedef struct lm_route_param {
    const char *name; /* the template's name, owned by the router */
    const char *raw;  /* points into the matched path, not decoded, not NUL-terminated */
    size_t raw_len;
} lm_route_param;

/* Route flags. LM_ROUTE_STREAM_BODY: the handler runs as soon as the headers are complete
 * and receives the body as it arrives (lm_req_read_body), instead of after the whole body
 * was buffered. LM_ROUTE_UNTRACED: requests to it get no server span (telemetry plumbing
 * such as the trace receiver itself and /metrics, whose spans would only feed themselves). */
enum { LM_ROUTE_STREAM_BODY = 1u << 0, LM_ROUTE_UNTRACED = 1u << 1 };

/* LM_ROUTE_FOUND: everything set. LM_ROUTE_METHOD_NOT_ALLOWED: route_id and template_path
 * name the first route of the shape that owns the path (metrics count the 405 under that
 * template), allow is set, handler is NULL, no params. LM_ROUTE_NOT_FOUND: route_id -1. */
typedef struct lm_route_match {
    int route_id;
    unsigned flags;
    const char *template_path; /* owned by the router */
    lm_handler_fn handler;
    void *ctx;
    size_t n_params;
    lm_route_param params[LM_ROUTE_MAX_PARAMS];
    char allow[64]; /* "GET, HEAD, POST" on LM_ROUTE_METHOD_NOT_ALLOWED */
} lm_route_match;

enum { LM_ROUTE_FOUND = 0, LM_ROUTE_NOT_FOUND = 1, LM_ROUTE_METHOD_NOT_ALLOWED = 2 };

lm_router *lm_router_new(void);
void lm_router_free(lm_router *r);
/* method: "GET", "POST", … or "*" for any. Returns the route id, or -1 for a malformed
 * template (not starting with '/', unclosed '{', "{x...}" not last, too many params). */
int lm_router_add(lm_router *r, const char *method, const char *template_path,
                  lm_handler_fn handler, void *ctx);
int lm_router_add_flags(lm_router *r, const char *method, const char *template_path,
                        lm_handler_fn handler, void *ctx, unsigned flags);
int lm_router_match(const lm_router *r, const char *method, const char *path, size_t path_len,
                    lm_route_match *m);
size_t lm_router_count(const lm_router *r);
const char *lm_router_template(const lm_router *r, int route_id);

#endif
