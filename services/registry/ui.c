/* ui.c — GET /ui/: the registry's page in the manner of Consul's UI (DESIGN 3.7): services,
 * their instances with address, tags and checks, updating live. The page (ui.html, compiled
 * in) reads the registry's own Consul-style API (/v1/catalog/services, /v1/health/service/
 * {name}), so it shows exactly what clients of the registry see. GET /ui redirects to /ui/.
 * Open like the rest of the registry's API. */
#include "app.h"
#include "registry_server.h"

extern const char rg_ui_html[];
extern const unsigned long rg_ui_html_len;

static void handle_ui(lm_req *req, void *ctx)
{
    (void)ctx;
    lm_resp_header(req, "Cache-Control", "no-cache");
    lm_resp_header(req, "Content-Security-Policy",
                   "default-src 'self'; style-src 'self' 'unsafe-inline'; script-src 'self' "
                   "'unsafe-inline'; img-src 'self' data:");
    lm_resp_send(req, 200, "text/html; charset=utf-8", rg_ui_html, rg_ui_html_len);
}

static void handle_redirect(lm_req *req, void *ctx)
{
    (void)ctx;
    lm_resp_header(req, "Location", "/ui/");
    lm_resp_send(req, 301, NULL, "", 0);
}

void rg_ui_routes(lm_router *r)
{
    lm_router_add(r, "GET", "/ui/", handle_ui, NULL);
    lm_router_add(r, "GET", "/ui", handle_redirect, NULL);
}
