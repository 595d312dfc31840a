/* openapi.c — GET /openapi.json: every exposed service's contract merged, paths under
 * /api/{service}, component names prefixed "{service}." (and every $ref rewritten to
 * match), plus the gateway's own POST /auth/token and its security schemes; GET /docs:
 * Swagger UI (npm swagger-ui-dist, served from GATEWAY_DOCS_DIR, no CDN) on that document.
 *
 * The contracts come from the services themselves: each service's GET /openapi.json on a
 * passing instance, fetched with the worker's client when the cached merge is older than
 * OPENAPI_TTL_MS. A service with no reachable instance is listed under
 * "x-lotmesh-unavailable" and left out until it answers again.
 *
 * Threading: fetches run on the requesting worker's loop; the cache is shared under a
 * mutex. The Swagger UI files are mapped read-only at start-up and served from the map. */
#include "gateway.h"

#include "json.h"
#include "log.h"
#include "workerclient.h"
#include "problem.h"
#include "discovery.h"

#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define OPENAPI_TTL_MS 10000

extern const char gw_docs_html[];
extern const unsigned long gw_docs_html_len;

static const char *const docs_files[] = {"swagger-ui.css", "swagger-ui-bundle.js", NULL};

typedef struct gw_openapi {
    pthread_mutex_t mu;
    char *doc; /* merged JSON text, owned */
    size_t len;
    uint64_t made_ms;
    struct {
        const char *data;
        size_t len;
    } files[2];
} gw_openapi;

typedef struct merge_job {
    gateway *gw;
    lm_req *req;
    size_t pending;
    json_t *docs[GW_MAX_SERVICES]; /* NULL: not fetched */
} merge_job;

/* ---- merging ---------------------------------------------------------------------------- */

static void rewrite_refs(json_t *v, const char *svc)
{
    if (json_is_object(v)) {
        const char *k;
        json_t *x;
        void *tmp;
        json_object_foreach_safe(v, tmp, k, x)
        {
            if (!strcmp(k, "$ref") && json_is_string(x)) {
                const char *ref = json_string_value(x);
                const char *prefix = "#/components/";
                size_t pl = strlen(prefix);
                const char *slash = !strncmp(ref, prefix, pl) ? strchr(ref + pl, '/') : NULL;
                if (slash) {
                    char out[512];
                    snprintf(out, sizeof out, "%.*s%s.%s", (int)(slash + 1 - ref), ref, svc,
                             slash + 1);
                    json_object_set_new(v, k, json_string(out));
                }
            } else {
                rewrite_refs(x, svc);
            }
        }
    } else if (json_is_array(v)) {
        size_t i;
        json_t *x;
        for (i = 0; i < json_array_size(v); i++) {
            x = json_array_get(v, i);
            rewrite_refs(x, svc);
        }
    }
}

static json_t *token_path(void)
{
    const char *doc =
        "{\"post\":{\"tags\":[\"gateway\"],\"operationId\":\"gateway.token\",\"summary\":"
        "\"OAuth2 client-credentials grant: an access token for /api/\",\"security\":[],"
        "\"requestBody\":{\"required\":true,\"content\":{\"application/x-www-form-urlencoded\":"
        "{\"schema\":{\"type\":\"object\",\"required\":[\"grant_type\"],\"properties\":{"
        "\"grant_type\":{\"const\":\"client_credentials\"},\"client_id\":{\"type\":\"string\"},"
        "\"client_secret\":{\"type\":\"string\"},\"scope\":{\"type\":\"string\"}}}}}},"
        "\"responses\":{\"200\":{\"description\":\"an access token\",\"content\":{"
        "\"application/json\":{\"schema\":{\"type\":\"object\",\"required\":[\"access_token\","
        "\"token_type\",\"expires_in\"],\"properties\":{\"access_token\":{\"type\":\"string\"},"
        "\"token_type\":{\"const\":\"Bearer\"},\"expires_in\":{\"type\":\"integer\"},\"scope\":"
        "{\"type\":\"string\"}}}}}},\"400\":{\"description\":\"a malformed request (OAuth2 "
        "error in the problem's error member)\",\"content\":{\"application/problem+json\":{"
        "\"schema\":{\"$ref\":\"#/components/schemas/gateway.Problem\"}}}},\"401\":{"
        "\"description\":\"unknown client or wrong secret\",\"content\":{"
        "\"application/problem+json\":{\"schema\":{\"$ref\":"
        "\"#/components/schemas/gateway.Problem\"}}}}}}}";
    return json_loads(doc, 0, NULL);
}

static json_t *merge(gateway *gw, json_t *const *docs)
{
    json_t *paths = json_object(), *components = json_object(), *tags = json_array();
    json_t *missing = json_array();
    json_object_set_new(paths, "/auth/token", token_path());
    json_t *schemas = json_object();
    json_object_set_new(
        schemas, "gateway.Problem",
        json_loads("{\"type\":\"object\",\"description\":\"RFC 9457 problem details\","
                   "\"required\":[\"type\",\"title\",\"status\"],\"properties\":{\"type\":{"
                   "\"type\":\"string\"},\"title\":{\"type\":\"string\"},\"status\":{\"type\":"
                   "\"integer\"},\"detail\":{\"type\":\"string\"},\"instance\":{\"type\":"
                   "\"string\"},\"trace_id\":{\"type\":\"string\"},\"error\":{\"type\":"
                   "\"string\"}}}",
                   0, NULL));
    json_object_set_new(components, "schemas", schemas);
    json_object_set_new(
        components, "securitySchemes",
        json_loads("{\"gateway.oauth2\":{\"type\":\"oauth2\",\"flows\":{\"clientCredentials\":{"
                   "\"tokenUrl\":\"/auth/token\",\"scopes\":{\"read\":\"read resources\","
                   "\"write\":\"change resources\",\"admin\":\"the gateway's admin pages\"}}}},"
                   "\"gateway.apiKey\":{\"type\":\"apiKey\",\"in\":\"header\",\"name\":"
                   "\"X-API-Key\"}}",
                   0, NULL));
    json_array_append_new(tags, json_pack("{s:s, s:s}", "name", "gateway", "description",
                                          "the gateway's own endpoints"));
    for (size_t s = 0; s < gw->n_services; s++) {
        const char *svc = gw->services[s];
        json_t *d = docs[s];
        if (!d) {
            json_array_append_new(missing, json_string(svc));
            continue;
        }
        rewrite_refs(d, svc);
        const char *sec;
        json_t *items;
        json_object_foreach(json_object_get(d, "components"), sec, items)
        {
            if (!strcmp(sec, "securitySchemes")) continue; /* service tokens: the gateway's job */
            json_t *dst = json_object_get(components, sec);
            if (!dst) json_object_set_new(components, sec, dst = json_object());
            const char *name;
            json_t *item;
            json_object_foreach(items, name, item)
            {
                char key[256];
                snprintf(key, sizeof key, "%s.%s", svc, name);
                json_object_set(dst, key, item);
            }
        }
        const char *path;
        json_t *ops;
        json_object_foreach(json_object_get(d, "paths"), path, ops)
        {
            char p[1024];
            snprintf(p, sizeof p, "/api/%s%s", svc, path);
            const char *method;
            json_t *op;
            json_object_foreach(ops, method, op)
            {
                if (!json_is_object(op)) continue;
                json_object_del(op, "security");
                json_t *oid = json_object_get(op, "operationId");
                if (json_is_string(oid)) {
                    char id[256];
                    snprintf(id, sizeof id, "%s.%s", svc, json_string_value(oid));
                    json_object_set_new(op, "operationId", json_string(id));
                }
                json_t *t = json_object_get(op, "tags");
                if (json_is_array(t)) {
                    size_t i;
                    json_t *tag;
                    json_array_foreach(t, i, tag)
                    {
                        char tn[256];
                        snprintf(tn, sizeof tn, "%s: %s", svc, json_string_value(tag));
                        json_array_set_new(t, i, json_string(tn));
                    }
                } else {
                    json_object_set_new(op, "tags", json_pack("[s]", svc));
                }
            }
            json_object_set(paths, p, ops);
        }
        size_t i;
        json_t *tag;
        json_array_foreach(json_object_get(d, "tags"), i, tag)
        {
            json_t *copy = json_deep_copy(tag);
            char tn[256];
            snprintf(tn, sizeof tn, "%s: %s", svc, json_string_value(json_object_get(tag, "name")));
            json_object_set_new(copy, "name", json_string(tn));
            json_array_append_new(tags, copy);
        }
    }
    json_t *out = json_pack(
        "{s:s, s:{s:s, s:s, s:s}, s:[{s:s, s:s}], s:o, s:o, s:o, s:[{s:[]}, {s:[]}]}", "openapi",
        "3.1.0", "info", "title", "lotmesh API (through the gateway)", "version", "1",
        "description",
        "Every service exposed by the gateway, at /api/{service}/…; authenticate with a Bearer "
        "access token from /auth/token or an X-API-Key.",
        "servers", "url", "/", "description", "the gateway", "tags", tags, "paths", paths,
        "components", components, "security", "gateway.oauth2", "gateway.apiKey");
    if (json_array_size(missing))
        json_object_set_new(out, "x-lotmesh-unavailable", missing);
    else
        json_decref(missing);
    return out;
}

/* ---- fetching --------------------------------------------------------------------------- */

static void send_cached(gateway *gw, lm_req *req)
{
    gw_openapi *o = gw->openapi;
    pthread_mutex_lock(&o->mu);
    char *copy = lm_xmalloc(o->len + 1);
    memcpy(copy, o->doc, o->len);
    size_t len = o->len;
    pthread_mutex_unlock(&o->mu);
    lm_resp_header(req, "Cache-Control", "no-cache");
    lm_resp_send(req, 200, "application/json", copy, len);
    free(copy);
}

static void finish(merge_job *j)
{
    gateway *gw = j->gw;
    json_t *doc = merge(gw, j->docs);
    char *text = json_dumps(doc, JSON_COMPACT);
    json_decref(doc);
    for (size_t s = 0; s < gw->n_services; s++)
        json_decref(j->docs[s]);
    gw_openapi *o = gw->openapi;
    pthread_mutex_lock(&o->mu);
    free(o->doc);
    o->doc = text;
    o->len = strlen(text);
    o->made_ms = uv_now(lm_req_loop(j->req));
    pthread_mutex_unlock(&o->mu);
    send_cached(gw, j->req);
    free(j);
}

typedef struct fetch_ud {
    merge_job *job;
    size_t index;
} fetch_ud;

static void on_doc(lm_client_req *creq, lm_client_err err, const lm_client_response *resp, void *ud)
{
    (void)creq;
    fetch_ud *f = ud;
    merge_job *j = f->job;
    if (err == LM_CLIENT_OK && resp->status == 200) {
        json_t *d = json_loadb(resp->body, resp->body_len, 0, NULL);
        if (json_is_object(d))
            j->docs[f->index] = d;
        else
            json_decref(d);
    }
    if (!j->docs[f->index])
        lm_log_warn("openapi: no contract from %s (%s)", j->gw->services[f->index],
                    err ? lm_client_strerror(err) : "not a JSON object with status 200");
    free(f);
    if (--j->pending == 0) finish(j);
}

static void handle_openapi(lm_req *req, void *ctx)
{
    gateway *gw = ctx;
    gw_openapi *o = gw->openapi;
    gw_cors_actual(gw, req);
    uint64_t now = uv_now(lm_req_loop(req));
    pthread_mutex_lock(&o->mu);
    bool fresh = o->doc && now - o->made_ms < OPENAPI_TTL_MS;
    pthread_mutex_unlock(&o->mu);
    if (fresh) {
        send_cached(gw, req);
        return;
    }
    merge_job *j = lm_xcalloc(1, sizeof *j);
    j->gw = gw;
    j->req = req;
    j->pending = 1; /* held until every fetch is started */
    lm_client *client = lm_workerclient_get(gw->upstreams, lm_req_worker_index(req));
    for (size_t s = 0; s < gw->n_services; s++) {
        lm_disc_set *set = lm_disc_instances(gw->reg, gw->services[s]);
        if (!set || lm_disc_set_count(set) == 0) {
            if (set) lm_disc_set_release(set);
            continue;
        }
        const lm_disc_instance *in = lm_disc_set_get(set, 0);
        fetch_ud *f = lm_xmalloc(sizeof *f);
        f->job = j;
        f->index = s;
        lm_client_opts opts = {.method = "GET",
                               .host = in->host,
                               .port = in->port,
                               .path = "/openapi.json",
                               .response_timeout_ms = 2000,
                               .on_done = on_doc,
                               .ud = f};
        if (lm_client_send(client, &opts))
            j->pending++;
        else
            free(f);
        lm_disc_set_release(set);
    }
    if (--j->pending == 0) finish(j);
}

/* ---- Swagger UI ------------------------------------------------------------------------- */

static void handle_docs(lm_req *req, void *ctx)
{
    gateway *gw = ctx;
    if (!gw->openapi->files[0].data) {
        lm_resp_problemf(req, 503,
                         "Swagger UI's files are not installed in %.300s (npm swagger-ui-dist: "
                         "run make build, or set GATEWAY_DOCS_DIR)",
                         gw->docs_dir);
        return;
    }
    lm_resp_send(req, 200, "text/html; charset=utf-8", gw_docs_html, gw_docs_html_len);
}

static void handle_docs_file(lm_req *req, void *ctx)
{
    gateway *gw = ctx;
    const char *name = lm_req_param(req, "file");
    for (int i = 0; docs_files[i]; i++) {
        if (strcmp(name, docs_files[i]) != 0 || !gw->openapi->files[i].data) continue;
        lm_resp_header(req, "Cache-Control", "public, max-age=86400");
        lm_resp_send(req, 200,
                     strstr(name, ".css") ? "text/css; charset=utf-8"
                                          : "text/javascript; charset=utf-8",
                     gw->openapi->files[i].data, gw->openapi->files[i].len);
        return;
    }
    lm_resp_problemf(req, 404, "no file %.100s under /docs", name);
}

static void map_files(gateway *gw)
{
    for (int i = 0; docs_files[i]; i++) {
        char path[1200];
        snprintf(path, sizeof path, "%s/%s", gw->docs_dir, docs_files[i]);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        struct stat st;
        if (fd < 0 || fstat(fd, &st) != 0 || st.st_size == 0) {
            if (fd >= 0) close(fd);
            lm_log_warn("docs: %s is missing: /docs answers 503 (npm swagger-ui-dist)", path);
            gw->openapi->files[0].data = NULL;
            return;
        }
        void *m = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
        close(fd);
        if (m == MAP_FAILED) {
            lm_log_warn("docs: cannot map %s", path);
            gw->openapi->files[0].data = NULL;
            return;
        }
        gw->openapi->files[i].data = m;
        gw->openapi->files[i].len = (size_t)st.st_size;
    }
}

static void on_stopped(void *ctx)
{
    gateway *gw = ctx;
    gw_openapi *o = gw->openapi;
    for (int i = 0; docs_files[i]; i++)
        if (o->files[i].data) munmap((void *)o->files[i].data, o->files[i].len);
    free(o->doc);
    pthread_mutex_destroy(&o->mu);
    free(o);
    gw->openapi = NULL;
}

void gw_openapi_routes(lm_router *r, gateway *gw)
{
    gw->openapi = lm_xcalloc(1, sizeof *gw->openapi);
    pthread_mutex_init(&gw->openapi->mu, NULL);
    map_files(gw);
    lm_router_add(r, "GET", "/openapi.json", handle_openapi, gw);
    lm_router_add(r, "GET", "/docs", handle_docs, gw);
    lm_router_add(r, "GET", "/docs/{file}", handle_docs_file, gw);
    lm_app_add(gw->app, &(lm_component){.ctx = gw, .stopped = on_stopped});
}
