/* test_discovery.c — discovery and registration (lib/mesh/discovery.c, registration.c):
 * static: parsing, health bodies into instance sets, configuration errors, and lookups through a
 * running app in static mode (round-robin on a worker's own cache and from the main thread). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "app.h"
#include "http.h"
#include "log.h"
#include "app_use.h"
#include "discovery.h"

typedef struct seen {
    char text[1024];
    int services;
} seen;

static void collect(void *ctx, const char *service, const char *const *hosts, const int *ports,
                    size_t n)
{
    seen *s = ctx;
    s->services++;
    size_t len = strlen(s->text);
    len += (size_t)snprintf(s->text + len, sizeof s->text - len, "%s=", service);
    for (size_t i = 0; i < n; i++)
        len += (size_t)snprintf(s->text + len, sizeof s->text - len, "%s%s:%d", i ? "," : "",
                                hosts[i], ports[i]);
    snprintf(s->text + len, sizeof s->text - len, ";");
}

static void test_parse_static(void **state)
{
    (void)state;
    char err[256];
    seen s = {0};
    assert_int_equal(lm_disc_parse_static("articles_api=http://127.0.0.1:8002,http://[::1]:8012/;"
                                          " charges_api = http://charges ;",
                                          collect, &s, err, sizeof err),
                     0);
    assert_int_equal(s.services, 2);
    assert_string_equal(s.text, "articles_api=127.0.0.1:8002,::1:8012;charges_api=charges:80;");

    static const struct {
        const char *spec, *fragment;
    } bad[] = {
        {"", "no service given"},
        {";;", "no service given"},
        {"articles_api", "is not name=url"},
        {"=http://h:1", "service name must be"},
        {"a=", "has no URL"},
        {"a=http://h:1;a=http://h:2", "given twice"},
        {"a=https://h:1", "https is not supported"},
        {"a=ftp://h", "a"},
        {"a=http://h:1/api", "has a path"},
        {"a=http://h:99999", "a"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = '\0';
        if (lm_disc_parse_static(bad[i].spec, NULL, NULL, err, sizeof err) != -1)
            fail_msg("\"%s\" was accepted", bad[i].spec);
        if (!strstr(err, bad[i].fragment))
            fail_msg("\"%s\": error \"%s\" lacks \"%s\"", bad[i].spec, err, bad[i].fragment);
    }
}

static void test_health_bodies(void **state)
{
    (void)state;
    char err[256];
    const char *body =
        "[{\"Node\":{\"Node\":\"n\",\"Address\":\"10.0.0.1\"},"
        "\"Service\":{\"ID\":\"a1\",\"Service\":\"a\",\"Tags\":[\"x\",\"y\"],\"Address\":\"\","
        "\"Port\":8002},\"Checks\":[]},"
        "{\"Node\":{\"Address\":\"10.0.0.1\"},\"Service\":{\"ID\":\"a2\",\"Address\":\"10.0.0.2\","
        "\"Port\":8012}}]";
    lm_disc_set *s = lm_disc_set_from_health(body, strlen(body), err, sizeof err);
    assert_non_null(s);
    assert_int_equal(lm_disc_set_count(s), 2);
    const lm_disc_instance *a = lm_disc_set_get(s, 0), *b = lm_disc_set_get(s, 1);
    assert_string_equal(a->id, "a1");
    assert_string_equal(a->host, "10.0.0.1"); /* Node.Address when Service.Address is empty */
    assert_int_equal(a->port, 8002);
    assert_int_equal(a->n_tags, 2);
    assert_string_equal(a->tags[1], "y");
    assert_string_equal(b->host, "10.0.0.2");
    assert_null(lm_disc_set_get(s, 2));
    lm_disc_set_release(s);

    s = lm_disc_set_from_health("[]", 2, err, sizeof err);
    assert_non_null(s);
    assert_int_equal(lm_disc_set_count(s), 0);
    lm_disc_set_release(s);

    assert_null(lm_disc_set_from_health("{}", 2, err, sizeof err));
    assert_non_null(strstr(err, "array"));
    assert_null(lm_disc_set_from_health("[", 1, err, sizeof err));
    assert_non_null(strstr(err, "malformed JSON"));
    const char *noport = "[{\"Service\":{\"ID\":\"a\",\"Address\":\"h\",\"Port\":0}}]";
    assert_null(lm_disc_set_from_health(noport, strlen(noport), err, sizeof err));
    assert_non_null(strstr(err, "entry 0"));
}

static void clear_env(void)
{
    static const char *const vars[] = {"SERVICE_REGISTRY_URL",
                                       "SERVICE_CHECK",
                                       "SERVICE_CHECK_TTL",
                                       "SERVICE_WATCH",
                                       "SERVICE_CHECK_TIMEOUT",
                                       "SERVICE_CHECK_INTERVAL",
                                       "SERVICE_TAGS",
                                       "SERVICE_ADDRESS",
                                       "PORT",
                                       "WORKERS"};
    for (size_t i = 0; i < sizeof vars / sizeof *vars; i++)
        unsetenv(vars[i]);
    setenv("LOG_LEVEL", "error", 1); /* keeps the test's output to its results */
}

/* ---- a running app in static mode ------------------------------------------------------ */

typedef struct run {
    lm_app *app;
    lm_disc *reg;
    sem_t started;
    int rc;
} run;

static void pick_handler(lm_req *req, void *ctx)
{
    run *r = ctx;
    lm_disc_addr a;
    char body[300];
    if (!lm_disc_pick(r->reg, lm_req_param(req, "name"), &a)) {
        lm_resp_send(req, 404, "text/plain", "none", 4);
        return;
    }
    int n = snprintf(body, sizeof body, "%s:%d", a.host, a.port);
    lm_resp_send(req, 200, "text/plain", body, (size_t)n);
}

static void on_started(void *ctx, int port)
{
    (void)port;
    sem_post(&((run *)ctx)->started);
}

static void *app_thread(void *arg)
{
    run *r = arg;
    r->rc = lm_app_run(r->app);
    return NULL;
}

/* One request on an open connection; returns the body (status in *status). */
static void get(int fd, const char *path, int *status, char *body, size_t bodylen)
{
    char req[300], buf[4096];
    int n = snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: t\r\n\r\n", path);
    assert_int_equal(write(fd, req, (size_t)n), n);
    size_t got = 0;
    for (;;) {
        ssize_t k = read(fd, buf + got, sizeof buf - 1 - got);
        assert_true(k > 0);
        got += (size_t)k;
        buf[got] = '\0';
        char *end = strstr(buf, "\r\n\r\n");
        char *cl = strcasestr(buf, "content-length:");
        if (end && cl && got >= (size_t)(end + 4 - buf) + (size_t)atoi(cl + 15)) break;
    }
    *status = atoi(buf + 9);
    snprintf(body, bodylen, "%s", strstr(buf, "\r\n\r\n") + 4);
}

/* The first configuration error of lm_app_use_registry with these variables ("" when none).
 * The app runs through its whole life (port 0) so both are released by their stopped hooks,
 * as in a process; with a registry URL it tries to register with a closed port meanwhile. */
static void open_with2(const char *url, const char *extra_name, const char *extra_val,
                       const char *name2, const char *val2, char *out, size_t outlen)
{
    clear_env();
    if (name2) setenv(name2, val2, 1);
    setenv("PORT", "0", 1);
    setenv("WORKERS", "1", 1);
    if (url) setenv("SERVICE_REGISTRY_URL", url, 1);
    if (extra_name) setenv(extra_name, extra_val, 1);
    run r = {0};
    sem_init(&r.started, 0, 0);
    lm_cfg cfg;
    lm_cfg_init(&cfg, "t");
    r.app = lm_app_new(&cfg, "t", 0);
    r.reg = lm_app_use_registry(r.app, &cfg);
    snprintf(out, outlen, "%s", cfg.error);
    lm_app_add(r.app, &(lm_component){.ctx = &r, .started = on_started});
    pthread_t th;
    pthread_create(&th, NULL, app_thread, &r);
    sem_wait(&r.started);
    lm_app_stop(r.app);
    pthread_join(th, NULL);
    assert_int_equal(r.rc, 0);
    lm_app_free(r.app);
    sem_destroy(&r.started);
}

static void open_with(const char *url, const char *extra_name, const char *extra_val, char *out,
                      size_t outlen)
{
    open_with2(url, extra_name, extra_val, NULL, NULL, out, outlen);
}

static void test_config_errors(void **state)
{
    (void)state;
    char err[512];
    open_with("http://127.0.0.1:1", NULL, NULL, err, sizeof err);
    assert_string_equal(err, "");
    open_with("https://registry:8500", NULL, NULL, err, sizeof err);
    assert_non_null(strstr(err, "SERVICE_REGISTRY_URL"));
    open_with("http://127.0.0.1:1/v1", NULL, NULL, err, sizeof err);
    assert_non_null(strstr(err, "got a path"));
    open_with("static:a", NULL, NULL, err, sizeof err);
    assert_non_null(strstr(err, "SERVICE_REGISTRY_URL"));
    open_with("http://127.0.0.1:1", "SERVICE_CHECK", "tcp", err, sizeof err);
    assert_non_null(strstr(err, "SERVICE_CHECK"));
    open_with("http://127.0.0.1:1", "SERVICE_CHECK_TTL", "10x", err, sizeof err);
    assert_non_null(strstr(err, "SERVICE_CHECK_TTL"));
    open_with2("http://127.0.0.1:1", "SERVICE_CHECK_TIMEOUT", "20s", "SERVICE_CHECK", "http", err,
               sizeof err);
    assert_non_null(strstr(err, "must not exceed SERVICE_CHECK_INTERVAL"));
    open_with("http://127.0.0.1:1", "SERVICE_TAGS", "a,b c", err, sizeof err);
    assert_non_null(strstr(err, "SERVICE_TAGS"));
    open_with("http://127.0.0.1:1", "SERVICE_ADDRESS", "a b", err, sizeof err);
    assert_non_null(strstr(err, "SERVICE_ADDRESS"));
    open_with("http://127.0.0.1:1", "SERVICE_WATCH", "a,,b", err, sizeof err);
    assert_string_equal(err, "");
    clear_env();
}

static void test_static_lookups(void **state)
{
    (void)state;
    clear_env();
    setenv("SERVICE_REGISTRY_URL",
           "static:articles_api=http://10.0.0.1:8002,http://10.0.0.2:8012;charges_api=http://c:1",
           1);
    setenv("PORT", "0", 1);
    setenv("WORKERS", "1", 1);
    setenv("ACCESS_LOG", "false", 1);
    run r = {0};
    sem_init(&r.started, 0, 0);
    lm_cfg cfg;
    lm_cfg_init(&cfg, "t");
    r.app = lm_app_new(&cfg, "t", 0);
    r.reg = lm_app_use_registry(r.app, &cfg);
    assert_string_equal(cfg.error, "");
    assert_int_equal(lm_disc_get_mode(r.reg), LM_DISC_STATIC);
    lm_router_add(lm_app_router(r.app), "GET", "/pick/{name}", pick_handler, &r);
    lm_app_add(r.app, &(lm_component){.ctx = &r, .started = on_started});
    pthread_t th;
    pthread_create(&th, NULL, app_thread, &r);
    sem_wait(&r.started);

    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)lm_app_port(r.app))};
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    int status;
    char body[300], first[300];
    /* on the worker: its own cache, round-robin over both instances */
    get(fd, "/pick/articles_api", &status, first, sizeof first);
    assert_int_equal(status, 200);
    get(fd, "/pick/articles_api", &status, body, sizeof body);
    assert_string_not_equal(body, first);
    assert_true(strcmp(body, "10.0.0.1:8002") == 0 || strcmp(body, "10.0.0.2:8012") == 0);
    get(fd, "/pick/articles_api", &status, body, sizeof body);
    assert_string_equal(body, first);
    get(fd, "/pick/charges_api", &status, body, sizeof body);
    assert_string_equal(body, "c:1");
    get(fd, "/pick/unknown_api", &status, body, sizeof body);
    assert_int_equal(status, 404);
    close(fd);

    /* from a thread without a worker cache */
    lm_disc_addr a, b;
    assert_true(lm_disc_pick(r.reg, "articles_api", &a));
    assert_true(lm_disc_pick(r.reg, "articles_api", &b));
    assert_int_not_equal(a.port, b.port);
    lm_disc_set *set = lm_disc_instances(r.reg, "articles_api");
    assert_int_equal(lm_disc_set_count(set), 2);
    lm_disc_set_release(set);
    assert_null(lm_disc_instances(r.reg, "unknown_api"));
    assert_int_equal(lm_disc_watch(r.reg, "another"), 0);
    char big[200];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    assert_int_equal(lm_disc_watch(r.reg, big), -1);

    lm_app_stop(r.app);
    pthread_join(th, NULL);
    assert_int_equal(r.rc, 0);
    lm_app_free(r.app);
    sem_destroy(&r.started);
    clear_env();
}

int main(void)
{
    lm_log_init("test", LM_LOG_WARN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_static),
        cmocka_unit_test(test_health_bodies),
        cmocka_unit_test(test_config_errors),
        cmocka_unit_test(test_static_lookups),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
