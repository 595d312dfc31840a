/* registration.c — this process's registration, heartbeats and deregistration on the
 * control loop, through one lm_client owned here (lm_registration). See registration.h.
 * Failures retry after lm_consul_retry_ms. */
#include "registration.h"

#include "buf.h"
#include "client.h"
#include "consul.h"
#include "log.h"
#include "parse.h"
#include "trace.h"
#include "url.h"

#include <jansson.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RETRY_MAX_MS     5000
#define REREGISTER_MS    30000 /* HTTP-check mode: idempotent re-registration */
#define REQ_TIMEOUT_MS   2000
#define DEREG_TIMEOUT_MS 2000

struct lm_registration {
    char name[64];   /* this process's service name */
    uv_loop_t *loop; /* the control loop */
    lm_component comp;
    bool active; /* registry mode */
    char url[256];
    char host[256];
    int port;

    /* settings */
    bool http_check;
    uint64_t ttl_ms, interval_ms, timeout_ms, dereg_ms;
    char address[256];
    char **tags;
    size_t n_tags;

    /* control loop */
    char id[512];
    char check_path[700];
    char *reg_body;
    lm_client *client;
    uv_timer_t hb_timer;    /* heartbeat (TTL) or re-registration (HTTP) */
    uv_timer_t retry_timer; /* registration retry */
    bool running, stopping, sent_registration;
    unsigned reg_failures;
    bool hb_failing;
    lm_client_req *reg_req, *hb_req, *dereg_req;

    atomic_bool registered;
    atomic_ullong m_registrations, m_hb_ok, m_hb_err, m_reg_err;
};

/* ---- registration (control loop) ------------------------------------------------------ */

static void register_send(lm_registration *reg);

static void on_retry_timer(uv_timer_t *t)
{
    register_send(t->data);
}

static void hb_send(lm_registration *reg);

static void on_hb_timer(uv_timer_t *t)
{
    lm_registration *reg = t->data;
    if (!atomic_load(&reg->registered)) return; /* a registration is under way */
    if (reg->http_check)
        register_send(reg);
    else
        hb_send(reg);
}

static void register_done(lm_client_req *r, lm_client_err err, const lm_client_response *resp,
                          void *ud)
{
    (void)r;
    lm_registration *reg = ud;
    reg->reg_req = NULL;
    if (err == LM_CLIENT_ERR_CANCELLED || reg->stopping) return;
    if (err == LM_CLIENT_OK && resp->status == 200) {
        if (!atomic_load(&reg->registered)) {
            lm_log_info("discovery: registered as %s with %s (%s check)", reg->id, reg->url,
                        reg->http_check ? "HTTP" : "TTL");
            atomic_fetch_add_explicit(&reg->m_registrations, 1, memory_order_relaxed);
        }
        atomic_store(&reg->registered, true);
        reg->reg_failures = 0;
        return;
    }
    atomic_fetch_add_explicit(&reg->m_reg_err, 1, memory_order_relaxed);
    if (reg->reg_failures++ == 0) {
        if (err != LM_CLIENT_OK)
            lm_log_warn("discovery: cannot register with %s (%s); retrying", reg->url,
                        lm_client_strerror(err));
        else
            lm_log_error("discovery: %s refused the registration: HTTP %d %.300s", reg->url,
                         resp->status, resp->body ? resp->body : "");
    }
    uv_timer_start(&reg->retry_timer, on_retry_timer, lm_consul_retry_ms(reg->reg_failures), 0);
}

static void register_send(lm_registration *reg)
{
    if (reg->stopping || reg->reg_req) return;
    lm_header h = {.name = "Content-Type", .value = "application/json"};
    lm_client_opts o = {
        .method = "PUT",
        .host = reg->host,
        .port = reg->port,
        .path = "/v1/agent/service/register",
        .headers = &h,
        .n_headers = 1,
        .body = reg->reg_body,
        .body_len = strlen(reg->reg_body),
        .connect_timeout_ms = REQ_TIMEOUT_MS,
        .queue_timeout_ms = REQ_TIMEOUT_MS,
        .response_timeout_ms = REQ_TIMEOUT_MS,
        .on_done = register_done,
        .ud = reg,
    };
    reg->sent_registration = true;
    reg->reg_req = lm_client_send(reg->client, &o);
    if (!reg->reg_req) uv_timer_start(&reg->retry_timer, on_retry_timer, RETRY_MAX_MS, 0);
}

static void hb_done(lm_client_req *r, lm_client_err err, const lm_client_response *resp, void *ud)
{
    (void)r;
    lm_registration *reg = ud;
    reg->hb_req = NULL;
    if (err == LM_CLIENT_ERR_CANCELLED || reg->stopping) return;
    if (err == LM_CLIENT_OK && resp->status == 200) {
        atomic_fetch_add_explicit(&reg->m_hb_ok, 1, memory_order_relaxed);
        if (reg->hb_failing) lm_log_info("discovery: heartbeats to %s succeed again", reg->url);
        reg->hb_failing = false;
        return;
    }
    atomic_fetch_add_explicit(&reg->m_hb_err, 1, memory_order_relaxed);
    if (err == LM_CLIENT_OK &&
        (resp->status == 404 || /* older Consul agents answer 500 "Unknown check ID" */
         (resp->status == 500 && resp->body && strstr(resp->body, "Unknown check")))) {
        /* the registry does not know our check: it restarted without us, or removed us */
        lm_log_warn("discovery: %s no longer knows %s; registering again", reg->url, reg->id);
        atomic_store(&reg->registered, false);
        reg->hb_failing = false;
        register_send(reg);
        return;
    }
    if (!reg->hb_failing)
        lm_log_warn("discovery: heartbeat to %s failed (%s); retrying", reg->url,
                    err != LM_CLIENT_OK ? lm_client_strerror(err) : "unexpected status");
    reg->hb_failing = true;
}

static void hb_send(lm_registration *reg)
{
    if (reg->stopping || reg->hb_req) return;
    uint64_t t = reg->ttl_ms / 3;
    lm_client_opts o = {
        .method = "PUT",
        .host = reg->host,
        .port = reg->port,
        .path = reg->check_path,
        .connect_timeout_ms = t,
        .queue_timeout_ms = t,
        .response_timeout_ms = t,
        .on_done = hb_done,
        .ud = reg,
    };
    reg->hb_req = lm_client_send(reg->client, &o);
}

static void build_registration(lm_registration *reg, int port)
{
    const char *name = reg->name;
    uint8_t rnd[4];
    if (lm_trace_random_bytes(rnd, sizeof rnd) != 0) {
        uint64_t x = lm_trace_rand64();
        memcpy(rnd, &x, sizeof rnd);
    }
    snprintf(reg->id, sizeof reg->id, "%s-%s-%d-%02x%02x%02x%02x", name, reg->address, port, rnd[0],
             rnd[1], rnd[2], rnd[3]);
    lm_buf p = LM_BUF_INIT;
    lm_buf_append_str(&p, "/v1/agent/check/pass/service:");
    lm_url_append_segment(&p, reg->id);
    snprintf(reg->check_path, sizeof reg->check_path, "%s", lm_buf_cstr(&p));
    lm_buf_free(&p);

    lm_consul_service def = {0};
    def.id = reg->id;
    def.name = (char *)name;
    def.address = reg->address;
    def.port = port;
    def.tags = reg->tags;
    def.n_tags = reg->n_tags;
    def.weight_passing = def.weight_warning = 1;
    lm_consul_check c = {0};
    char url[400], check_name[300];
    snprintf(check_name, sizeof check_name, "%s alive", name);
    c.name = check_name;
    c.deregister_ms = reg->dereg_ms;
    c.has_status = true; /* we accept connections already */
    c.status = LM_CONSUL_PASSING;
    if (reg->http_check) {
        bool v6 = strchr(reg->address, ':') != NULL;
        snprintf(url, sizeof url, "http://%s%s%s:%d/health", v6 ? "[" : "", reg->address,
                 v6 ? "]" : "", port);
        c.type = LM_CONSUL_CHECK_HTTP;
        c.http = url;
        c.interval_ms = reg->interval_ms;
        c.timeout_ms = reg->timeout_ms;
    } else {
        c.type = LM_CONSUL_CHECK_TTL;
        c.ttl_ms = reg->ttl_ms;
    }
    def.checks = &c;
    def.n_checks = 1;
    json_t *doc = lm_consul_service_encode(&def);
    reg->reg_body = json_dumps(doc, JSON_COMPACT);
    json_decref(doc);
}

/* ---- lifecycle ------------------------------------------------------------------------- */

static void on_started(void *ctx, int port)
{
    lm_registration *reg = ctx;
    if (!reg->active) return;
    uv_loop_t *loop = reg->loop;
    reg->client = lm_client_new(loop, NULL);
    uv_timer_init(loop, &reg->hb_timer);
    uv_timer_init(loop, &reg->retry_timer);
    reg->hb_timer.data = reg->retry_timer.data = reg;
    reg->running = true;
    build_registration(reg, port);
    register_send(reg);
    uint64_t every = reg->ttl_ms / 3;
    if (reg->http_check) { /* three probe intervals, within 1 s .. 30 s */
        every = reg->interval_ms * 3;
        every = every < 1000 ? 1000 : every > REREGISTER_MS ? REREGISTER_MS : every;
    }
    uv_timer_start(&reg->hb_timer, on_hb_timer, every, every);
}

static void close_control(lm_registration *reg)
{
    lm_client_close(reg->client, NULL, NULL);
    reg->client = NULL;
    uv_close((uv_handle_t *)&reg->hb_timer, NULL);
    uv_close((uv_handle_t *)&reg->retry_timer, NULL);
}

static void dereg_done(lm_client_req *r, lm_client_err err, const lm_client_response *resp,
                       void *ud)
{
    (void)r;
    lm_registration *reg = ud;
    reg->dereg_req = NULL;
    if (err == LM_CLIENT_OK && (resp->status == 200 || resp->status == 404))
        lm_log_info("discovery: deregistered %s from %s", reg->id, reg->url);
    else
        lm_log_warn("discovery: could not deregister %s from %s (%s); its check will lapse",
                    reg->id, reg->url,
                    err != LM_CLIENT_OK ? lm_client_strerror(err) : "unexpected status");
    atomic_store(&reg->registered, false);
    close_control(reg);
}

static void on_stopping(void *ctx)
{
    lm_registration *reg = ctx;
    if (!reg->running) return;
    reg->running = false;
    reg->stopping = true;
    uv_timer_stop(&reg->hb_timer);
    uv_timer_stop(&reg->retry_timer);
    if (reg->reg_req) lm_client_cancel(reg->reg_req);
    if (reg->hb_req) lm_client_cancel(reg->hb_req);
    if (!reg->sent_registration) {
        close_control(reg);
        return;
    }
    /* deregister before the server stops accepting: nobody is sent here any more */
    lm_buf path = LM_BUF_INIT;
    lm_buf_append_str(&path, "/v1/agent/service/deregister/");
    lm_url_append_segment(&path, reg->id);
    lm_client_opts o = {
        .method = "PUT",
        .host = reg->host,
        .port = reg->port,
        .path = lm_buf_cstr(&path),
        .connect_timeout_ms = DEREG_TIMEOUT_MS,
        .queue_timeout_ms = DEREG_TIMEOUT_MS,
        .response_timeout_ms = DEREG_TIMEOUT_MS,
        .on_done = dereg_done,
        .ud = reg,
    };
    reg->dereg_req = lm_client_send(reg->client, &o);
    lm_buf_free(&path);
    if (!reg->dereg_req) close_control(reg);
}

static void on_stopped(void *ctx)
{
    lm_registration *reg = ctx; /* every hook and handle that used it has ended */
    for (size_t i = 0; i < reg->n_tags; i++)
        free(reg->tags[i]);
    free(reg->tags);
    free(reg->reg_body);
    free(reg);
}

static bool ready_registered(void *ctx, lm_buf *why)
{
    lm_registration *reg = ctx;
    if (atomic_load(&reg->registered)) return true;
    lm_buf_printf(why, "not registered with %s", reg->url);
    return false;
}

static void render_metrics(lm_buf *out, void *ctx)
{
    lm_registration *reg = ctx;
#define LD(x) ((unsigned long long)atomic_load_explicit(&(x), memory_order_relaxed))
    lm_buf_printf(out,
                  "# HELP lotmesh_discovery_registered 1 while this instance is registered.\n"
                  "# TYPE lotmesh_discovery_registered gauge\n"
                  "lotmesh_discovery_registered %d\n"
                  "# HELP lotmesh_discovery_registrations_total Successful registrations "
                  "(more than one: the registry lost this instance).\n"
                  "# TYPE lotmesh_discovery_registrations_total counter\n"
                  "lotmesh_discovery_registrations_total %llu\n"
                  "# HELP lotmesh_discovery_registration_errors_total Failed registrations.\n"
                  "# TYPE lotmesh_discovery_registration_errors_total counter\n"
                  "lotmesh_discovery_registration_errors_total %llu\n"
                  "# HELP lotmesh_discovery_heartbeats_total TTL check passes by result.\n"
                  "# TYPE lotmesh_discovery_heartbeats_total counter\n"
                  "lotmesh_discovery_heartbeats_total{result=\"ok\"} %llu\n"
                  "lotmesh_discovery_heartbeats_total{result=\"error\"} %llu\n",
                  atomic_load(&reg->registered) ? 1 : 0, LD(reg->m_registrations),
                  LD(reg->m_reg_err), LD(reg->m_hb_ok), LD(reg->m_hb_err));
#undef LD
}

/* ---- opening --------------------------------------------------------------------------- */

static bool has_space_or_ctl(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s <= ' ' || *s == 0x7f) return true;
    return false;
}

static void parse_tags(lm_registration *reg, const char *list)
{
    if (!list) return;
    char *copy = lm_xstrdup(list), *save = NULL;
    for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        t = lm_parse_trim(t);
        if (!*t || reg->n_tags == LM_CONSUL_MAX_TAGS) continue;
        reg->tags = lm_xrealloc(reg->tags, (reg->n_tags + 1) * sizeof *reg->tags);
        reg->tags[reg->n_tags++] = lm_xstrdup(t);
    }
    free(copy);
}

lm_registration *lm_registration_open(lm_cfg *cfg, const lm_component_env *env, const lm_disc *d)
{
    lm_registration *reg = lm_xcalloc(1, sizeof *reg);
    snprintf(reg->name, sizeof reg->name, "%s", env->name);
    reg->loop = env->control;
    const lm_disc_registry *registry = lm_disc_get_registry(d);
    if (registry) {
        reg->active = true;
        snprintf(reg->url, sizeof reg->url, "%s", registry->url);
        snprintf(reg->host, sizeof reg->host, "%s", registry->host);
        reg->port = registry->port;
    }
    const char *addr = lm_cfg_str(cfg, "SERVICE_ADDRESS", NULL);
    const char *tags = lm_cfg_str(cfg, "SERVICE_TAGS", NULL);
    static const char *const kinds[] = {"ttl", "http", NULL};
    reg->http_check = lm_cfg_enum(cfg, "SERVICE_CHECK", "ttl", kinds) == 1;
    reg->ttl_ms = lm_cfg_duration_ms(cfg, "SERVICE_CHECK_TTL", 10000, 300, 3600000);
    reg->interval_ms = lm_cfg_duration_ms(cfg, "SERVICE_CHECK_INTERVAL", 10000, 100, 3600000);
    reg->timeout_ms = lm_cfg_duration_ms(cfg, "SERVICE_CHECK_TIMEOUT", 2000, 10, 600000);
    reg->dereg_ms = lm_cfg_duration_ms(cfg, "SERVICE_DEREGISTER_AFTER", 60000, 0, 7 * 86400000ULL);
    parse_tags(reg, tags);
    for (size_t i = 0; i < reg->n_tags; i++)
        if (strlen(reg->tags[i]) > LM_CONSUL_MAX_TAG || has_space_or_ctl(reg->tags[i]))
            lm_cfg_error(cfg, "SERVICE_TAGS",
                         "tags must be comma-separated words of at most %d bytes (got \"%.64s\")",
                         LM_CONSUL_MAX_TAG, reg->tags[i]);
    if (addr && (strlen(addr) > 255 || has_space_or_ctl(addr)))
        lm_cfg_error(cfg, "SERVICE_ADDRESS", "must be an IP address or host name (got \"%.64s\")",
                     addr);
    const char *bind = env->host;
    if (addr)
        snprintf(reg->address, sizeof reg->address, "%s", addr);
    else if (strcmp(bind, "0.0.0.0") == 0)
        snprintf(reg->address, sizeof reg->address, "127.0.0.1");
    else if (strcmp(bind, "::") == 0)
        snprintf(reg->address, sizeof reg->address, "::1");
    else
        snprintf(reg->address, sizeof reg->address, "%s", bind);
    if (reg->http_check && reg->timeout_ms > reg->interval_ms)
        lm_cfg_error(cfg, "SERVICE_CHECK_TIMEOUT", "must not exceed SERVICE_CHECK_INTERVAL");

    reg->comp = (lm_component){
        .ctx = reg, .started = on_started, .stopping = on_stopping, .stopped = on_stopped};
    if (reg->active) {
        reg->comp.ready_name = "registered";
        reg->comp.ready = ready_registered;
        reg->comp.metrics = render_metrics;
    }
    return reg;
}

const lm_component *lm_registration_component(lm_registration *reg)
{
    return &reg->comp;
}

const char *lm_registration_self_id(const lm_registration *reg)
{
    return reg->id;
}
