/* admin_clients.c — client administration (gw_admin_clients): GET/POST /admin/clients,
 * GET/PATCH/DELETE /admin/clients/{id}, behind a credential with the admin scope.
 *
 * A create answers the client's secret and API key once (201); the file keeps only their
 * hashes (Argon2id, BLAKE2b). PATCH changes scope and limits, and with "rotate_secret" /
 * "rotate_api_key": true answers a new secret / key once (the old one stops working).
 * DELETE revokes: the client's access tokens stop working at once on this instance (every
 * request checks its client against the newest table) and on the others as soon as they see
 * the file change.
 *
 * Every change is a read-modify-write of the clients file under an exclusive flock on
 * "<file>.lock" (instances sharing the file never lose each other's change), validated by
 * the same parser as at start-up, written to a temporary file, fsynced and renamed over the
 * old one (atomic: a reader sees the old or the new file, never a part). It runs on the
 * thread pool (file I/O, Argon2id). Every instance watches the file (stat every
 * GATEWAY_CLIENTS_WATCH, 1 s, on its first worker's loop) and publishes what it reads
 * (gw_clients_publish): a change made through any instance is effective on all within about
 * a second. With RATE_LIMIT_URL a change is also announced in Redis (INCR of
 * "lotmesh:gateway:clients"), which every instance reads every 250 ms and reloads on, so a
 * file whose change its stat does not show at once (network file systems) is reread
 * anyway. A file that fails to parse is logged and the table in use stays.
 *
 * Threading: handlers on worker loops; jobs on the thread pool; publishing from any. */
#include "gateway.h"

#include "json.h"
#include "log.h"
#include "redis.h"

#include <hiredis/hiredis.h>

#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

enum { OP_CREATE, OP_PATCH, OP_DELETE, OP_RELOAD };

typedef struct admin_job {
    uv_work_t work;
    gateway *gw;
    lm_req *req; /* NULL for OP_RELOAD */
    int op;
    char id[128];
    json_t *input; /* owned */
    int status;
    char detail[400];
    json_t *result; /* owned: the response body */
    gw_clients fresh;
    bool have_fresh;
    char secret[80]; /* a new secret and its hash, made before the file is locked */
    char secret_hash[crypto_pwhash_STRBYTES];
} admin_job;

static bool admin(gateway *gw, lm_req *req)
{
    gw_principal who;
    gw_cors_actual(gw, req); /* errors too: the page must be able to read them */
    if (!gw_clientauth_check(gw, req, &who)) return false;
    if (!lm_token_has_scope(who.scope, "admin")) {
        lm_resp_problem(req, 403, "the admin scope is required");
        return false;
    }
    return true;
}

/* What an administrator sees of a client: never a hash. */
static json_t *public_view(json_t *entry)
{
    json_t *v = json_object();
    const char *copy[] = {"client_id", "scope", "rate_limit", "rate_limit_burst",
                          "service_rate_limits"};
    for (size_t i = 0; i < sizeof copy / sizeof *copy; i++) {
        json_t *x = json_object_get(entry, copy[i]);
        if (x) json_object_set(v, copy[i], x);
    }
    json_object_set_new(
        v, "api_keys",
        json_integer((json_int_t)json_array_size(json_object_get(entry, "api_key_hashes"))));
    return v;
}

static bool valid_id(const char *id)
{
    size_t n = strlen(id);
    if (n == 0 || n >= 128) return false;
    for (const char *p = id; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '-' || *p == '_' || *p == '.'))
            return false;
    return true;
}

static bool valid_scope(const char *scope)
{
    if (!scope || !*scope || strlen(scope) >= 128) return false;
    char buf[128];
    snprintf(buf, sizeof buf, "%s", scope);
    char *save = NULL;
    for (char *w = strtok_r(buf, " ", &save); w; w = strtok_r(NULL, " ", &save))
        if (strcmp(w, "read") && strcmp(w, "write") && strcmp(w, "admin")) return false;
    return true;
}

static int fail(admin_job *j, int status, const char *detail)
{
    j->status = status;
    size_t n = strlen(detail);
    if (n >= sizeof j->detail) n = sizeof j->detail - 1; /* cut, as a message may be */
    memcpy(j->detail, detail, n);
    j->detail[n] = '\0';
    return -1;
}

/* The new secret (made in job_work before the lock): its hash into entry, the plain text
 * into the result. */
static int new_secret(admin_job *j, json_t *entry)
{
    if (!j->secret_hash[0]) return fail(j, 503, "cannot hash the new secret (out of memory)");
    json_object_set_new(entry, "secret_hash", json_string(j->secret_hash));
    json_object_set_new(j->result, "client_secret", json_string(j->secret));
    return 0;
}

static void new_api_key(admin_job *j, json_t *entry)
{
    char key[80], hex[65];
    unsigned char h[32];
    gw_random_token(key, sizeof key, 32);
    gw_key_hash(key, h);
    sodium_bin2hex(hex, sizeof hex, h, sizeof h);
    json_object_set_new(entry, "api_key_hashes", json_pack("[s]", hex));
    json_object_set_new(j->result, "api_key", json_string(key));
    sodium_memzero(key, sizeof key);
}

/* scope, rate_limit, rate_limit_burst, service_rate_limits from the input (null removes a
 * limit); the parser checks the rates afterwards. */
static int apply_fields(admin_job *j, json_t *entry)
{
    json_t *scope = json_object_get(j->input, "scope");
    if (scope) {
        if (!json_is_string(scope) || !valid_scope(json_string_value(scope)))
            return fail(j, 422, "scope must be words of read, write, admin");
        json_object_set(entry, "scope", scope);
    }
    const char *limits[] = {"rate_limit", "rate_limit_burst", "service_rate_limits"};
    for (size_t i = 0; i < 3; i++) {
        json_t *v = json_object_get(j->input, limits[i]);
        if (json_is_null(v))
            json_object_del(entry, limits[i]);
        else if (v)
            json_object_set(entry, limits[i], v);
    }
    return 0;
}

static int check_keys(admin_job *j, const char *const *allowed)
{
    const char *k;
    json_t *v;
    json_object_foreach(j->input, k, v)
    {
        bool ok = false;
        for (const char *const *a = allowed; *a; a++)
            ok = ok || !strcmp(k, *a);
        if (!ok) {
            char d[200];
            snprintf(d, sizeof d, "unknown field '%.64s'", k);
            return fail(j, 400, d);
        }
    }
    return 0;
}

static int apply(admin_job *j, json_t *doc)
{
    json_t *arr = json_object_get(doc, "clients");
    size_t idx = (size_t)-1, i;
    json_t *c;
    json_array_foreach(arr, i, c)
    {
        const char *id = json_string_value(json_object_get(c, "client_id"));
        if (id && !strcmp(id, j->id)) idx = i;
    }
    j->result = json_object();
    if (j->op == OP_CREATE) {
        static const char *const allowed[] = {
            "client_id", "scope", "rate_limit", "rate_limit_burst", "service_rate_limits", NULL};
        if (check_keys(j, allowed)) return -1;
        json_t *given = json_object_get(j->input, "client_id");
        if (given && (!json_is_string(given) || !valid_id(json_string_value(given))))
            return fail(j, 422, "client_id must be 1 to 127 of A-Z a-z 0-9 . _ -");
        if (given) {
            snprintf(j->id, sizeof j->id, "%s", json_string_value(given));
            json_array_foreach(arr, i, c)
            {
                const char *id = json_string_value(json_object_get(c, "client_id"));
                if (id && !strcmp(id, j->id)) return fail(j, 409, "the client exists already");
            }
        } else {
            char r[40];
            gw_random_token(r, sizeof r, 9);
            snprintf(j->id, sizeof j->id, "c-%s", r);
        }
        json_t *entry = json_pack("{s:s, s:s}", "client_id", j->id, "scope", "read");
        json_array_append_new(arr, entry);
        if (apply_fields(j, entry) || new_secret(j, entry)) return -1;
        new_api_key(j, entry);
        j->status = 201;
        json_t *pv = public_view(entry);
        json_object_update(j->result, pv);
        json_decref(pv);
        return 0;
    }
    if (idx == (size_t)-1) return fail(j, 404, "no such client");
    json_t *entry = json_array_get(arr, idx);
    if (j->op == OP_DELETE) {
        json_array_remove(arr, idx);
        j->status = 204;
        return 0;
    }
    static const char *const allowed[] = {
        "scope",          "rate_limit", "rate_limit_burst", "service_rate_limits", "rotate_secret",
        "rotate_api_key", NULL};
    if (check_keys(j, allowed) || apply_fields(j, entry)) return -1;
    json_t *rs = json_object_get(j->input, "rotate_secret");
    json_t *rk = json_object_get(j->input, "rotate_api_key");
    if ((rs && !json_is_boolean(rs)) || (rk && !json_is_boolean(rk)))
        return fail(j, 422, "rotate_secret and rotate_api_key must be true or false");
    if (json_is_true(rs) && new_secret(j, entry)) return -1;
    if (json_is_true(rk)) new_api_key(j, entry);
    j->status = 200;
    json_t *pv = public_view(entry);
    json_object_update(j->result, pv);
    json_decref(pv);
    return 0;
}

static void job_work(uv_work_t *w)
{
    admin_job *j = w->data;
    const char *path = j->gw->clients_path;
    char lock_path[1100], err[1400];
    snprintf(lock_path, sizeof lock_path, "%s.lock", path);
    /* Argon2id takes its time: not while holding the lock other instances wait for */
    if (j->op == OP_CREATE ||
        (j->op == OP_PATCH && json_is_true(json_object_get(j->input, "rotate_secret")))) {
        gw_random_token(j->secret, sizeof j->secret, 32);
        if (crypto_pwhash_str(j->secret_hash, j->secret, strlen(j->secret),
                              crypto_pwhash_OPSLIMIT_INTERACTIVE,
                              crypto_pwhash_MEMLIMIT_INTERACTIVE) != 0)
            j->secret_hash[0] = '\0';
    }
    int lfd = open(lock_path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (lfd < 0 || flock(lfd, j->op == OP_RELOAD ? LOCK_SH : LOCK_EX) != 0) {
        snprintf(err, sizeof err, "cannot lock %s: %s", lock_path, strerror(errno));
        fail(j, 503, err);
        if (lfd >= 0) close(lfd);
        return;
    }
    json_error_t je;
    json_t *doc = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
    if (!doc) {
        snprintf(err, sizeof err, "%s: line %d: %s", path, je.line, je.text);
        fail(j, 503, err);
    } else if (j->op == OP_RELOAD || apply(j, doc) == 0) {
        if (gw_clients_parse(&j->fresh, doc, path, err, sizeof err) != 0) {
            fail(j, j->op == OP_RELOAD ? 503 : 422, err);
        } else {
            char *text = j->op == OP_RELOAD ? NULL : json_dumps(doc, JSON_INDENT(2));
            if (text && gw_write_private(path, text, err, sizeof err) != 0) {
                gw_clients_free(&j->fresh);
                fail(j, 503, err);
            } else {
                j->have_fresh = true;
            }
            if (text) sodium_memzero(text, strlen(text));
            free(text);
        }
    }
    json_decref(doc);
    flock(lfd, LOCK_UN);
    close(lfd);
}

#define ANNOUNCE_KEY "lotmesh:gateway:clients"

static void on_announced(void *ud, const struct redisReply *r)
{
    (void)ud;
    (void)r; /* lost: the others still see the file change */
}

static void job_after(uv_work_t *w, int status)
{
    admin_job *j = w->data;
    if (j->have_fresh) gw_clients_publish(j->gw, &j->fresh);
    if (j->have_fresh && j->op != OP_RELOAD && j->gw->limit_redis) {
        const char *argv[] = {"INCR", ANNOUNCE_KEY};
        lm_redis_cmd(j->gw->workers[lm_req_worker_index(j->req)].redis, on_announced, NULL, 2, argv,
                     NULL);
    }
    if (j->op == OP_RELOAD) {
        if (!j->have_fresh)
            lm_log_warn("clients file not reloaded, keeping the table in use: %s", j->detail);
        j->gw->clients_reloading = false;
    } else if (status != 0 || !j->have_fresh) {
        lm_resp_problem(j->req, j->status >= 400 ? j->status : 500, j->detail);
    } else {
        lm_log_info("client '%s': %s", j->id,
                    j->op == OP_CREATE   ? "created"
                    : j->op == OP_DELETE ? "revoked"
                                         : "changed");
        if (j->op == OP_DELETE) {
            lm_resp_send(j->req, 204, NULL, NULL, 0);
        } else {
            lm_resp_header(j->req, "Cache-Control", "no-store"); /* it may hold a secret */
            if (j->op == OP_CREATE) {
                char loc[200];
                snprintf(loc, sizeof loc, "/admin/clients/%s", j->id);
                lm_resp_header(j->req, "Location", loc);
            }
            lm_json_resp(j->req, j->status, j->result);
            j->result = NULL;
        }
    }
    json_decref(j->input);
    json_decref(j->result);
    sodium_memzero(j->secret, sizeof j->secret);
    free(j);
}

static void start_job(gateway *gw, lm_req *req, int op, const char *id)
{
    admin_job *j = lm_xcalloc(1, sizeof *j);
    j->gw = gw;
    j->req = req;
    j->op = op;
    if (id) snprintf(j->id, sizeof j->id, "%s", id);
    if (op == OP_CREATE || op == OP_PATCH) {
        json_error_t je;
        j->input = req->body_len ? json_loadb(req->body, req->body_len, 0, &je) : json_object();
        if (!json_is_object(j->input)) {
            json_decref(j->input);
            free(j);
            lm_resp_problem(req, 400, "the body must be a JSON object");
            return;
        }
    }
    j->work.data = j;
    uv_queue_work(lm_req_loop(req), &j->work, job_work, job_after);
}

static json_t *client_json(const gw_client *c)
{
    json_t *v = json_pack("{s:s, s:s, s:I}", "client_id", c->id, "scope", c->scope, "api_keys",
                          (json_int_t)c->n_api_keys);
    if (c->has_rate) {
        char r[64];
        const char *unit = c->rate.period_s == 1      ? "s"
                           : c->rate.period_s == 60   ? "m"
                           : c->rate.period_s == 3600 ? "h"
                                                      : "d";
        snprintf(r, sizeof r, "%u/%s", c->rate.count, unit);
        json_object_set_new(v, "rate_limit", json_string(r));
        json_object_set_new(v, "rate_limit_burst", json_integer(c->rate.burst));
    }
    return v;
}

static void handle_list(lm_req *req, void *ctx)
{
    gateway *gw = ctx;
    if (!admin(gw, req)) return;
    const gw_clients *cs = gw_clients_now(gw, lm_req_worker_index(req));
    json_t *arr = json_array();
    for (size_t i = 0; i < cs->n; i++)
        json_array_append_new(arr, client_json(&cs->items[i]));
    lm_json_resp(req, 200, arr);
}

static void handle_get(lm_req *req, void *ctx)
{
    gateway *gw = ctx;
    if (!admin(gw, req)) return;
    const gw_client *c =
        gw_clients_find(gw_clients_now(gw, lm_req_worker_index(req)), lm_req_param(req, "id"));
    if (!c) {
        lm_resp_problem(req, 404, "no such client");
        return;
    }
    lm_json_resp(req, 200, client_json(c));
}

static void handle_create(lm_req *req, void *ctx)
{
    gateway *gw = ctx;
    if (admin(gw, req)) start_job(gw, req, OP_CREATE, NULL);
}

static void handle_patch(lm_req *req, void *ctx)
{
    gateway *gw = ctx;
    if (admin(gw, req)) start_job(gw, req, OP_PATCH, lm_req_param(req, "id"));
}

static void handle_delete(lm_req *req, void *ctx)
{
    gateway *gw = ctx;
    if (admin(gw, req)) start_job(gw, req, OP_DELETE, lm_req_param(req, "id"));
}

/* ---- watching the file ---------------------------------------------------------------------- */

static void reload(gateway *gw, uv_loop_t *loop)
{
    if (gw->clients_reloading) return;
    gw->clients_reloading = true;
    admin_job *j = lm_xcalloc(1, sizeof *j);
    j->gw = gw;
    j->op = OP_RELOAD;
    j->work.data = j;
    uv_queue_work(loop, &j->work, job_work, job_after);
}

static void on_file_changed(uv_fs_poll_t *h, int status, const uv_stat_t *prev,
                            const uv_stat_t *curr)
{
    (void)prev;
    (void)curr;
    if (status >= 0) reload(h->data, h->loop); /* gone for now: keep the table */
}

static void on_counter(void *ud, const struct redisReply *r)
{
    gateway *gw = ud;
    long long v = r && r->type == REDIS_REPLY_STRING ? strtoll(r->str, NULL, 10)
                  : r && r->type == REDIS_REPLY_NIL  ? 0
                                                     : -1;
    if (v < 0) return; /* Redis does not answer: the file watch still works */
    /* the first answer too: a change announced between this instance's start-up read of the
     * file and its first look at the counter is in the counter's value already */
    if (gw->clients_announced < 0 || v != gw->clients_announced)
        reload(gw, gw->clients_announce.loop);
    gw->clients_announced = v;
}

static void on_announce_tick(uv_timer_t *t)
{
    gateway *gw = t->data;
    const char *argv[] = {"GET", ANNOUNCE_KEY};
    lm_redis_cmd(gw->workers[0].redis, on_counter, gw, 2, argv, NULL);
}

void gw_admin_clients_watch(gateway *gw, uv_loop_t *loop)
{
    uv_fs_poll_init(loop, &gw->clients_watch);
    gw->clients_watch.data = gw;
    uv_fs_poll_start(&gw->clients_watch, on_file_changed, gw->clients_path,
                     (unsigned)gw->clients_watch_ms);
    uv_timer_init(loop, &gw->clients_announce);
    gw->clients_announce.data = gw;
    gw->clients_announced = -1;
    if (gw->limit_redis) uv_timer_start(&gw->clients_announce, on_announce_tick, 250, 250);
}

void gw_admin_clients_unwatch(gateway *gw)
{
    uv_close((uv_handle_t *)&gw->clients_watch, NULL);
    uv_close((uv_handle_t *)&gw->clients_announce, NULL);
}

void gw_admin_clients_routes(lm_router *r, gateway *gw)
{
    lm_router_add(r, "GET", "/admin/clients", handle_list, gw);
    lm_router_add(r, "POST", "/admin/clients", handle_create, gw);
    lm_router_add(r, "GET", "/admin/clients/{id}", handle_get, gw);
    lm_router_add(r, "PATCH", "/admin/clients/{id}", handle_patch, gw);
    lm_router_add(r, "DELETE", "/admin/clients/{id}", handle_delete, gw);
}
