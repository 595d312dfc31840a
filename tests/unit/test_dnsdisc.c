/* test_dnsdisc.c — discovery through DNS (lib/mesh/dnsdisc.c): the dns: spec parser (names,
 * host:port and [v6]:port, every malformed form), and resolution on a real libuv loop:
 * numeric hosts and localhost answer sorted, duplicate-free lists with the configured port,
 * refreshes repeat, and stop frees everything while a lookup may still be in flight (ASan). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>
#include <uv.h>

#include "dnsdisc.h"

typedef struct answers {
    int calls;
    char text[1024];
} answers;

static void record(void *ctx, const char *service, const char *const *addrs, size_t n, int port,
                   int status)
{
    answers *a = ctx;
    a->calls++;
    size_t len = strlen(a->text);
    len += (size_t)snprintf(a->text + len, sizeof a->text - len, "%s(%d)=", service, status);
    for (size_t i = 0; i < n; i++)
        len += (size_t)snprintf(a->text + len, sizeof a->text - len, "%s%s:%d", i ? "," : "",
                                addrs[i], port);
    snprintf(a->text + len, sizeof a->text - len, ";");
}

static void test_parse(void **state)
{
    (void)state;
    char err[256];
    lm_dnsdisc *d = lm_dnsdisc_new(" articles_api = articles-api:8002 ; charges_api=[::1]:8001;",
                                   5000, record, NULL, err, sizeof err);
    assert_non_null(d);
    assert_int_equal(lm_dnsdisc_count(d), 2);
    assert_string_equal(lm_dnsdisc_service(d, 0), "articles_api");
    assert_string_equal(lm_dnsdisc_host(d, 0), "articles-api");
    assert_int_equal(lm_dnsdisc_port(d, 0), 8002);
    assert_string_equal(lm_dnsdisc_host(d, 1), "::1");
    assert_int_equal(lm_dnsdisc_port(d, 1), 8001);
    assert_null(lm_dnsdisc_service(d, 2));
    lm_dnsdisc_stop(d); /* never started: frees */
}

static void test_parse_errors(void **state)
{
    (void)state;
    static const struct {
        const char *spec, *msg;
    } bad[] = {
        {"", "no service given"},
        {" ; ", "no service given"},
        {"articles", "is not name=host:port"},
        {"=h:1", "service name must be"},
        {"a=h", "is not host:port"},
        {"a=h:", "port from 1 to 65535"},
        {"a=:80", "port from 1 to 65535"},
        {"a=h:0", "port from 1 to 65535"},
        {"a=h:65536", "port from 1 to 65535"},
        {"a=h:8x", "port from 1 to 65535"},
        {"a=h:-1", "port from 1 to 65535"},
        {"a=::1:80", "is not host:port"},
        {"a=[::1]80", "is not [address]:port"},
        {"a=h/x:80", "is not a host name or address"},
        {"a=h:1;a=g:2", "given twice"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char err[256] = "";
        lm_dnsdisc *d = lm_dnsdisc_new(bad[i].spec, 1000, record, NULL, err, sizeof err);
        if (d || !strstr(err, bad[i].msg))
            fail_msg("spec \"%s\": got %s, err \"%s\" (want \"%s\")", bad[i].spec,
                     d ? "an object" : "NULL", err, bad[i].msg);
    }
}

static void test_resolves_and_refreshes(void **state)
{
    (void)state;
    uv_loop_t loop;
    uv_loop_init(&loop);
    answers a = {0};
    char err[256];
    lm_dnsdisc *d = lm_dnsdisc_new("v4=127.0.0.1:81;v6=[::1]:82", 20, record, &a, err, sizeof err);
    assert_non_null(d);
    lm_dnsdisc_start(d, &loop);
    /* each name answers at start and every 20 ms: run until at least three rounds */
    while (a.calls < 6)
        uv_run(&loop, UV_RUN_ONCE);
    assert_non_null(strstr(a.text, "v4(0)=127.0.0.1:81;"));
    assert_non_null(strstr(a.text, "v6(0)=::1:82;"));
    lm_dnsdisc_stop(d);
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0); /* everything closed and freed */
    assert_int_equal(uv_loop_close(&loop), 0);
}

static void test_stop_with_a_lookup_in_flight(void **state)
{
    (void)state;
    uv_loop_t loop;
    uv_loop_init(&loop);
    answers a = {0};
    char err[256];
    lm_dnsdisc *d = lm_dnsdisc_new("l=localhost:80", 1000, record, &a, err, sizeof err);
    assert_non_null(d);
    lm_dnsdisc_start(d, &loop); /* the lookup is queued on the thread pool */
    lm_dnsdisc_stop(d);         /* no callback after this */
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(a.calls, 0);
    assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse),
        cmocka_unit_test(test_parse_errors),
        cmocka_unit_test(test_resolves_and_refreshes),
        cmocka_unit_test(test_stop_with_a_lookup_in_flight),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
