/* test_registry_state.c — the registry's catalog rules and its snapshot (services/registry
 * state.c and snapshot.c, compiled into this test: they are pure, with time passed in).
 * Covers Consul's default check IDs, idempotent re-registration, status kept across a
 * changed registration, index rules (heartbeats do not move indexes), TTL expiry,
 * deregister-after-critical, the passing and tag filters, and snapshot round trips. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../services/registry/snapshot.c"
#include "../../services/registry/state.c"

static int reg(rg_state *st, const char *json, int64_t now)
{
    json_error_t je;
    json_t *doc = json_loads(json, 0, &je);
    assert_non_null(doc);
    lm_consul_service def;
    char err[512];
    assert_int_equal(lm_consul_service_decode(doc, &def, err, sizeof err), 0);
    json_decref(doc);
    return rg_state_register(st, &def, now, err, sizeof err);
}

static size_t health_count(rg_state *st, const char *name, bool passing)
{
    json_t *a = rg_state_health_json(st, name, passing, NULL, 0);
    size_t n = json_array_size(a);
    json_decref(a);
    return n;
}

static int added, removed;
static void on_added(rg_check *c, void *ctx)
{
    (void)c;
    (void)ctx;
    added++;
}
static void on_removed(rg_check *c, void *ctx)
{
    (void)c;
    (void)ctx;
    removed++;
}

static void test_register_and_ids(void **state)
{
    (void)state;
    rg_state st;
    rg_state_init(&st, "node", "127.0.0.1", NULL);
    assert_int_equal(strlen(st.node_id), 36);
    rg_hooks h = {on_added, on_removed, NULL};
    rg_state_set_hooks(&st, &h);
    added = removed = 0;
    assert_int_equal(reg(&st, "{\"Name\":\"web\",\"ID\":\"w1\",\"Check\":{\"TTL\":\"1s\"}}", 0), 1);
    assert_non_null(rg_state_check(&st, "service:w1"));
    assert_int_equal(reg(&st,
                         "{\"Name\":\"web\",\"ID\":\"w2\",\"Checks\":[{\"TTL\":\"1s\"},"
                         "{\"HTTP\":\"http://h/\",\"Interval\":\"1s\"}]}",
                         0),
                     1);
    rg_check *c2 = rg_state_check(&st, "service:w2:2");
    assert_non_null(c2);
    assert_non_null(rg_state_check(&st, "service:w2:1"));
    assert_string_equal(c2->def.name, "Service 'web' check");
    assert_string_equal(c2->def.method, "GET");
    assert_int_equal(c2->status, LM_CONSUL_CRITICAL); /* Consul's initial status */
    assert_int_equal(added, 3);

    /* a check ID owned by another service is refused */
    json_t *doc = json_loads(
        "{\"Name\":\"x\",\"Check\":{\"CheckID\":\"service:w1\",\"TTL\":\"1s\"}}", 0, NULL);
    lm_consul_service def;
    char err[256];
    assert_int_equal(lm_consul_service_decode(doc, &def, err, sizeof err), 0);
    json_decref(doc);
    assert_int_equal(rg_state_register(&st, &def, 0, err, sizeof err), -1);
    assert_non_null(strstr(err, "already belongs to service \"w1\""));

    assert_true(rg_state_deregister(&st, "w2"));
    assert_false(rg_state_deregister(&st, "w2"));
    assert_int_equal(removed, 2);
    assert_null(rg_state_check(&st, "service:w2:1"));
    rg_state_free(&st);
    assert_int_equal(removed, 3);
}

static void test_indexes_and_reregistration(void **state)
{
    (void)state;
    rg_state st;
    rg_state_init(&st, "node", "127.0.0.1", NULL);
    const char *def = "{\"Name\":\"web\",\"ID\":\"w1\",\"Port\":80,\"Check\":{\"TTL\":\"10s\","
                      "\"Status\":\"passing\"}}";
    assert_int_equal(rg_state_name_index(&st, "web"), 1); /* never seen */
    assert_int_equal(reg(&st, def, 0), 1);
    uint64_t i1 = rg_state_index(&st);
    assert_int_equal(rg_state_name_index(&st, "web"), i1);
    assert_int_equal(rg_state_catalog_index(&st), i1);
    assert_int_equal(health_count(&st, "web", true), 1);

    /* the same definition again: nothing moves */
    assert_int_equal(reg(&st, def, 5), 0);
    assert_int_equal(rg_state_index(&st), i1);

    /* a heartbeat that keeps the status moves no index */
    assert_int_equal(rg_state_ttl_update(&st, "service:w1", LM_CONSUL_PASSING, "ok", 100), RG_OK);
    assert_int_equal(rg_state_index(&st), i1);
    assert_string_equal(rg_state_check(&st, "service:w1")->output, "ok");

    /* a status change moves the index and the name's, not the catalog's */
    assert_int_equal(rg_state_ttl_update(&st, "service:w1", LM_CONSUL_WARNING, NULL, 200), RG_OK);
    assert_true(rg_state_index(&st) > i1);
    assert_int_equal(rg_state_name_index(&st, "web"), rg_state_index(&st));
    assert_int_equal(rg_state_catalog_index(&st), i1);
    assert_int_equal(health_count(&st, "web", true), 0); /* warning is not passing */
    assert_int_equal(health_count(&st, "web", false), 1);

    /* a changed registration keeps the check's status (Consul restores check state) */
    assert_int_equal(reg(&st,
                         "{\"Name\":\"web\",\"ID\":\"w1\",\"Port\":81,\"Check\":{\"TTL\":\"10s\","
                         "\"Status\":\"passing\"}}",
                         300),
                     1);
    assert_int_equal(rg_state_check(&st, "service:w1")->status, LM_CONSUL_WARNING);
    assert_int_equal(rg_state_service(&st, "w1")->def.port, 81);
    assert_int_equal(rg_state_catalog_index(&st), rg_state_index(&st));

    /* renaming the service moves both names */
    uint64_t before = rg_state_index(&st);
    assert_int_equal(reg(&st, "{\"Name\":\"www\",\"ID\":\"w1\"}", 400), 1);
    assert_int_equal(rg_state_name_index(&st, "web"), before + 1);
    assert_int_equal(rg_state_name_index(&st, "www"), before + 1);
    assert_int_equal(health_count(&st, "web", false), 0);

    /* the name keeps its index after its last instance left */
    assert_true(rg_state_deregister(&st, "w1"));
    assert_int_equal(rg_state_name_index(&st, "www"), rg_state_index(&st));

    assert_int_equal(rg_state_ttl_update(&st, "nope", LM_CONSUL_PASSING, NULL, 0), RG_UNKNOWN);
    rg_state_free(&st);
}

static void test_ttl_expiry_and_reaping(void **state)
{
    (void)state;
    rg_state st;
    rg_state_init(&st, "node", "127.0.0.1", NULL);
    assert_int_equal(reg(&st,
                         "{\"Name\":\"a\",\"ID\":\"a1\",\"Check\":{\"TTL\":\"1s\","
                         "\"Status\":\"passing\",\"DeregisterCriticalServiceAfter\":\"3s\"}}",
                         1000),
                     1);
    assert_int_equal(reg(&st,
                         "{\"Name\":\"a\",\"ID\":\"a2\",\"Check\":{\"HTTP\":\"http://h/\","
                         "\"Interval\":\"1s\"}}",
                         1000),
                     1);
    assert_int_equal(rg_state_ttl_update(&st, "service:a2", LM_CONSUL_PASSING, NULL, 0),
                     RG_NOT_TTL);
    assert_int_equal(rg_state_tick(&st, 1500), 2000); /* a1's TTL is next */
    assert_int_equal(rg_state_tick(&st, 1999), 2000);
    assert_int_equal(rg_state_check(&st, "service:a1")->status, LM_CONSUL_PASSING);
    uint64_t i0 = rg_state_index(&st);
    assert_int_equal(rg_state_tick(&st, 2000), 5000); /* expired; removal due 3 s later */
    rg_check *c = rg_state_check(&st, "service:a1");
    assert_int_equal(c->status, LM_CONSUL_CRITICAL);
    assert_non_null(strstr(c->output, "TTL expired"));
    assert_true(rg_state_index(&st) > i0);
    assert_int_equal(st.ttl_expired, 1);

    /* a pass in time saves it and restarts the clocks */
    assert_int_equal(rg_state_ttl_update(&st, "service:a1", LM_CONSUL_PASSING, NULL, 4000), RG_OK);
    assert_int_equal(rg_state_tick(&st, 4500), 5000);
    assert_int_equal(rg_state_tick(&st, 5000), 8000); /* critical again at 5000 */
    assert_non_null(rg_state_service(&st, "a1"));
    assert_int_equal(rg_state_tick(&st, 7999), 8000);
    assert_int_equal(rg_state_tick(&st, 8000), INT64_MAX);
    assert_null(rg_state_service(&st, "a1"));
    assert_int_equal(st.reaped, 1);
    /* the HTTP check's result comes from probes, never from the clock */
    rg_check *h = rg_state_check(&st, "service:a2");
    assert_int_equal(h->status, LM_CONSUL_CRITICAL);
    rg_state_check_result(&st, h, LM_CONSUL_PASSING, "HTTP GET http://h/: 200 OK", 9000);
    assert_int_equal(health_count(&st, "a", true), 1);
    rg_state_free(&st);
}

static void test_filters_and_shapes(void **state)
{
    (void)state;
    rg_state st;
    rg_state_init(&st, "node", "10.0.0.9", NULL);
    reg(&st, "{\"Name\":\"a\",\"ID\":\"a1\",\"Tags\":[\"Primary\",\"v1\"],\"Port\":1}", 0);
    reg(&st, "{\"Name\":\"a\",\"ID\":\"a2\",\"Tags\":[\"v1\"],\"Address\":\"10.0.0.2\",\"Port\":2}",
        0);
    reg(&st, "{\"Name\":\"b\",\"ID\":\"b1\",\"Tags\":[\"x\"]}", 0);
    const char *t1[] = {"primary"}, *t2[] = {"v1", "primary"}, *t3[] = {"v2"};
    json_t *a = rg_state_health_json(&st, "a", true, t1, 1);
    assert_int_equal(json_array_size(a), 1); /* case-insensitive */
    json_t *e = json_array_get(a, 0);
    assert_string_equal(json_string_value(json_object_get(json_object_get(e, "Service"), "ID")),
                        "a1");
    assert_string_equal(json_string_value(json_object_get(json_object_get(e, "Node"), "Address")),
                        "10.0.0.9");
    assert_string_equal(json_string_value(json_object_get(
                            json_array_get(json_object_get(e, "Checks"), 0), "CheckID")),
                        "serfHealth");
    json_decref(a);
    a = rg_state_health_json(&st, "a", false, t2, 2);
    assert_int_equal(json_array_size(a), 1);
    json_decref(a);
    a = rg_state_catalog_service_json(&st, "a", t3, 1);
    assert_int_equal(json_array_size(a), 0);
    json_decref(a);
    a = rg_state_catalog_service_json(&st, "a", NULL, 0);
    assert_int_equal(json_array_size(a), 2);
    assert_string_equal(json_string_value(json_object_get(json_array_get(a, 1), "ServiceAddress")),
                        "10.0.0.2");
    json_decref(a);
    json_t *svcs = rg_state_catalog_services_json(&st);
    assert_int_equal(json_object_size(svcs), 2);
    assert_int_equal(json_array_size(json_object_get(svcs, "a")), 2); /* tags merged */
    json_decref(svcs);
    json_t *as = rg_state_agent_services_json(&st);
    assert_non_null(json_object_get(as, "b1"));
    json_decref(as);
    rg_state_free(&st);
}

static void test_snapshot_round_trip(void **state)
{
    (void)state;
    rg_state st;
    rg_state_init(&st, "node", "127.0.0.1", NULL);
    reg(&st,
        "{\"Name\":\"a\",\"ID\":\"a1\",\"Tags\":[\"t\"],\"Meta\":{\"k\":\"v\"},\"Port\":1,"
        "\"Check\":{\"TTL\":\"2s\",\"Status\":\"passing\"}}",
        0);
    reg(&st,
        "{\"Name\":\"b\",\"ID\":\"b1\",\"Checks\":[{\"TTL\":\"1s\"},{\"HTTP\":\"http://h:9/x\","
        "\"Interval\":\"1s\",\"Timeout\":\"500ms\",\"DeregisterCriticalServiceAfter\":\"1m\"}]}",
        0);
    reg(&st, "{\"Name\":\"gone\",\"ID\":\"g1\"}", 0);
    rg_state_deregister(&st, "g1");
    rg_state_ttl_update(&st, "service:b1:1", LM_CONSUL_WARNING, "slow", 10);

    char dir[] = "/tmp/lm-snap-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[256], err[512];
    snprintf(path, sizeof path, "%s/registry.json", dir);
    assert_int_equal(rg_snap_write(&st, path, err, sizeof err), 0);

    rg_state back;
    rg_state_init(&back, "node", "127.0.0.1", NULL);
    assert_int_equal(rg_snap_load(&back, path, 50, err, sizeof err), 1);
    assert_string_equal(back.node_id, st.node_id);
    assert_int_equal(rg_state_index(&back), rg_state_index(&st));
    assert_int_equal(rg_state_catalog_index(&back), rg_state_catalog_index(&st));
    assert_int_equal(rg_state_name_index(&back, "gone"), rg_state_name_index(&st, "gone"));
    assert_int_equal(rg_state_name_index(&back, "b"), rg_state_name_index(&st, "b"));
    assert_false(back.dirty);
    /* every response body is the same as before the restart */
    json_t *x = rg_state_agent_checks_json(&st), *y = rg_state_agent_checks_json(&back);
    assert_true(json_equal(x, y));
    json_decref(x);
    json_decref(y);
    x = rg_state_health_json(&st, "b", false, NULL, 0);
    y = rg_state_health_json(&back, "b", false, NULL, 0);
    assert_true(json_equal(x, y));
    json_decref(x);
    json_decref(y);
    x = rg_state_catalog_service_json(&st, "a", NULL, 0);
    y = rg_state_catalog_service_json(&back, "a", NULL, 0);
    assert_true(json_equal(x, y));
    json_decref(x);
    json_decref(y);
    /* TTL clocks restart at load time */
    assert_int_equal(rg_state_check(&back, "service:a1")->ttl_deadline, 50 + 2000);
    /* and an encode of the loaded state is the same document */
    x = rg_snap_encode(&st);
    y = rg_snap_encode(&back);
    assert_true(json_equal(x, y));
    json_decref(x);
    json_decref(y);
    rg_state_free(&back);

    /* no file: nothing loaded; a corrupt one: an error and an untouched state */
    rg_state empty;
    rg_state_init(&empty, "node", "127.0.0.1", NULL);
    char missing[300];
    snprintf(missing, sizeof missing, "%s/none.json", dir);
    assert_int_equal(rg_snap_load(&empty, missing, 0, err, sizeof err), 0);
    FILE *f = fopen(path, "w");
    fputs("{\"Version\":1,\"Index\":3,\"CatalogIndex\":3,\"NodeID\":\"x\",\"Names\":{},"
          "\"Services\":[]}",
          f);
    fclose(f);
    assert_int_equal(rg_snap_load(&empty, path, 0, err, sizeof err), -1);
    assert_non_null(strstr(err, "malformed snapshot"));
    f = fopen(path, "w");
    fputs("{\"Version\":1, \"Index\":", f);
    fclose(f);
    assert_int_equal(rg_snap_load(&empty, path, 0, err, sizeof err), -1);
    assert_non_null(strstr(err, "line 1"));
    f = fopen(path, "w");
    fprintf(f,
            "{\"Version\":1,\"Index\":3,\"CatalogIndex\":3,\"NodeID\":\"%s\",\"Names\":{},"
            "\"Services\":[{\"Service\":{\"Name\":\"a\",\"Port\":99999},\"CreateIndex\":1,"
            "\"ModifyIndex\":1,\"CheckStates\":[]}]}",
            st.node_id);
    fclose(f);
    assert_int_equal(rg_snap_load(&empty, path, 0, err, sizeof err), -1);
    assert_non_null(strstr(err, "Services[0]: Port"));
    assert_int_equal(empty.n_svcs, 0);
    rg_state_free(&empty);
    unlink(path);
    rmdir(dir);
    rg_state_free(&st);
}

int main(void)
{
    lm_log_init("test", LM_LOG_WARN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_register_and_ids),
        cmocka_unit_test(test_indexes_and_reregistration),
        cmocka_unit_test(test_ttl_expiry_and_reaping),
        cmocka_unit_test(test_filters_and_shapes),
        cmocka_unit_test(test_snapshot_round_trip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
