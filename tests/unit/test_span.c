/* test_span.c — spans, their OTLP/JSON encoding, the samplers, resource attributes, and the
 * trace store reading what the encoder writes (lm_span, lm_tracer, lm_tracestore). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <jansson.h>
#include <string.h>

#include "span.h"
#include "tracer.h"
#include "tracestore.h"

#define TP "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

static void make_span(lm_span *s, lm_trace_ctx *ctx)
{
    lm_trace_begin(ctx, TP, strlen(TP));
    lm_span_init(s, ctx, LM_SPAN_SERVER, "GET /api/v1/charges", 1000000000ull);
    s->end_unix_ns = 1002500000ull;
    lm_span_attr_cstr(s, "http.request.method", "GET");
    lm_span_attr_cstr(s, "url.path", "/api/v1/charges?x=\"\xc3\xa4\"");
    lm_span_attr_int(s, "http.response.status_code", 503);
    lm_span_attr_bool(s, "error", true);
    lm_span_attr_double(s, "ratio", 0.5);
    lm_span_attr_int(s, "neg", INT64_MIN);
    s->status = LM_SPAN_ERROR;
}

static void test_encode_roundtrip(void **state)
{
    (void)state;
    lm_span s;
    lm_trace_ctx ctx;
    make_span(&s, &ctx);
    lm_resource res = {0};
    assert_true(
        lm_resource_parse(&res, "service.name=charges_api, deployment.environment=te%20st"));
    lm_buf out = LM_BUF_INIT;
    lm_span_encode_otlp_json(&out, &res, &s, 1);
    json_error_t je;
    json_t *doc = json_loadb(out.data, out.len, 0, &je);
    assert_non_null(doc);
    json_t *sp = json_object_get(
        json_array_get(
            json_object_get(
                json_array_get(
                    json_object_get(json_array_get(json_object_get(doc, "resourceSpans"), 0),
                                    "scopeSpans"),
                    0),
                "spans"),
            0),
        "traceId");
    assert_string_equal(json_string_value(sp), "4bf92f3577b34da6a3ce929d0e0e4736");
    json_decref(doc);

    /* the store reads exactly what the encoder wrote */
    lm_tracestore *ts = lm_tracestore_new(4, 8);
    char err[256];
    assert_int_equal(lm_tracestore_ingest(ts, out.data, out.len, err, sizeof err), 1);
    json_t *spans = lm_tracestore_get(ts, "4BF92F3577B34DA6A3CE929D0E0E4736");
    assert_non_null(spans);
    json_t *got = json_array_get(spans, 0);
    assert_string_equal(json_string_value(json_object_get(got, "service")), "charges_api");
    assert_string_equal(json_string_value(json_object_get(got, "parent_span_id")),
                        "00f067aa0ba902b7");
    assert_int_equal(json_integer_value(json_object_get(got, "status")), 2);
    json_t *attrs = json_object_get(got, "attributes");
    assert_int_equal(json_integer_value(json_object_get(attrs, "http.response.status_code")), 503);
    assert_string_equal(json_string_value(json_object_get(attrs, "url.path")),
                        "/api/v1/charges?x=\"\xc3\xa4\"");
    assert_true(json_is_true(json_object_get(attrs, "error")));
    assert_true(json_integer_value(json_object_get(attrs, "neg")) == INT64_MIN);
    assert_true(json_real_value(json_object_get(got, "duration_ms")) > 2.49);
    json_decref(spans);
    json_t *recent = lm_tracestore_recent(ts, 10);
    assert_int_equal(json_array_size(recent), 1);
    assert_int_equal(json_integer_value(json_object_get(json_array_get(recent, 0), "errors")), 1);
    json_decref(recent);
    lm_tracestore_free(ts);
    lm_buf_free(&out);
    lm_resource_free(&res);
}

static void test_attr_limits(void **state)
{
    (void)state;
    lm_span s;
    lm_trace_ctx ctx;
    make_span(&s, &ctx);
    char big[2000];
    memset(big, 'a', sizeof big);
    big[LM_SPAN_TEXT - 60] = (char)0xc3; /* a two-byte sequence across the cut */
    big[LM_SPAN_TEXT - 59] = (char)0xa4;
    lm_span_attr_str(&s, "big", big, sizeof big);
    const lm_span_attr *a = lm_span_attr_get(&s, "big");
    assert_non_null(a);
    assert_true(s.text_len <= LM_SPAN_TEXT);
    for (int i = 0; i < 20; i++)
        lm_span_attr_int(&s, "n", i);
    assert_int_equal(s.n_attrs, LM_SPAN_MAX_ATTRS);
    lm_buf out = LM_BUF_INIT;
    lm_span_encode_otlp_json(&out, NULL, &s, 1);
    json_error_t je;
    json_t *doc = json_loadb(out.data, out.len, 0, &je);
    assert_non_null(doc);
    json_decref(doc);
    lm_buf_free(&out);
}

static void test_samplers(void **state)
{
    (void)state;
    lm_trace_ctx root, child_on, child_off;
    lm_trace_begin(&root, NULL, 0);
    lm_trace_begin(&child_on, TP, strlen(TP));
    lm_trace_begin(&child_off, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
                   strlen(TP));
    lm_sampler s = {LM_SAMPLER_PB_ALWAYS_OFF, 1};
    assert_false(lm_sampler_keep(&s, &root));
    assert_true(lm_sampler_keep(&s, &child_on));
    s.kind = LM_SAMPLER_PB_ALWAYS_ON;
    assert_false(lm_sampler_keep(&s, &child_off));
    assert_true(lm_sampler_keep(&s, &root));
    s.kind = LM_SAMPLER_ALWAYS_ON;
    assert_true(lm_sampler_keep(&s, &child_off));
    /* traceidratio: about the ratio of random roots, and the same answer every time */
    s.kind = LM_SAMPLER_RATIO;
    s.ratio = 0.25;
    int kept = 0;
    for (int i = 0; i < 4000; i++) {
        lm_trace_ctx t;
        lm_trace_begin(&t, NULL, 0);
        bool k = lm_sampler_keep(&s, &t);
        assert_int_equal(k, lm_sampler_keep(&s, &t));
        kept += k;
    }
    assert_in_range(kept, 800, 1200);
    s.ratio = 0;
    assert_false(lm_sampler_keep(&s, &root));
    s.kind = LM_SAMPLER_PB_RATIO;
    assert_true(lm_sampler_keep(&s, &child_on)); /* the parent decides */
}

static void test_resource_parse(void **state)
{
    (void)state;
    lm_resource r = {0};
    assert_true(lm_resource_parse(&r, "a=1,b=x%2Cy,,a=2"));
    assert_int_equal(r.n, 2);
    assert_string_equal(r.values[0], "2");
    assert_string_equal(r.values[1], "x,y");
    assert_false(lm_resource_parse(&r, "novalue"));
    assert_false(lm_resource_parse(&r, "=v"));
    assert_false(lm_resource_parse(&r, "k=%zz"));
    lm_resource_free(&r);
}

static void ingest_err(lm_tracestore *ts, const char *body, const char *want)
{
    char err[256] = "";
    assert_int_equal(lm_tracestore_ingest(ts, body, strlen(body), err, sizeof err), -1);
    if (!strstr(err, want)) fail_msg("error \"%s\" lacks \"%s\"", err, want);
}

static void test_store_refuses(void **state)
{
    (void)state;
    lm_tracestore *ts = lm_tracestore_new(2, 2);
    ingest_err(ts, "{", "malformed JSON");
    ingest_err(ts, "[]", "resourceSpans");
    ingest_err(ts, "{\"resourceSpans\":[{\"scopeSpans\":[{\"spans\":[{\"traceId\":\"00\"}]}]}]}",
               "resourceSpans[0].scopeSpans[0].spans[0].traceId");
    ingest_err(ts,
               "{\"resourceSpans\":[{\"scopeSpans\":[{\"spans\":[{\"traceId\":"
               "\"4bf92f3577b34da6a3ce929d0e0e4736\",\"spanId\":\"00f067aa0ba902b7\",\"name\":"
               "\"x\",\"startTimeUnixNano\":\"5\",\"endTimeUnixNano\":\"4\"}]}]}]}",
               "ends before it starts");
    lm_tracestore_stats st;
    lm_tracestore_stats_get(ts, &st);
    assert_int_equal(st.requests_refused, 4);
    assert_int_equal(st.traces, 0);
    /* bounds: three traces into a store of two, three spans into a trace of two */
#define FMT                                                                                        \
    "{\"resourceSpans\":[{\"scopeSpans\":[{\"spans\":[{\"traceId\":\"%032x\",\"spanId\":"          \
    "\"%016x\",\"name\":\"s\",\"startTimeUnixNano\":%d,\"endTimeUnixNano\":\"%d\"}]}]}]}"
    char body[512], err[128];
    for (int t = 1; t <= 3; t++)
        for (int s = 1; s <= 3; s++) {
            snprintf(body, sizeof body, FMT, t, s, t * 10 + s, t * 10 + s + 1);
            assert_true(lm_tracestore_ingest(ts, body, strlen(body), err, sizeof err) >= 0);
        }
    lm_tracestore_stats_get(ts, &st);
    assert_int_equal(st.traces, 2);
    assert_int_equal(st.traces_evicted, 1);
    assert_int_equal(st.spans_dropped, 3);
    assert_null(lm_tracestore_get(ts, "00000000000000000000000000000001"));
    json_t *t3 = lm_tracestore_get(ts, "00000000000000000000000000000003");
    assert_int_equal(json_array_size(t3), 2);
    json_decref(t3);
    json_t *recent = lm_tracestore_recent(ts, 1);
    assert_string_equal(json_string_value(json_object_get(json_array_get(recent, 0), "trace_id")),
                        "00000000000000000000000000000003");
    json_decref(recent);
    lm_tracestore_free(ts);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_encode_roundtrip), cmocka_unit_test(test_attr_limits),
        cmocka_unit_test(test_samplers),         cmocka_unit_test(test_resource_parse),
        cmocka_unit_test(test_store_refuses),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
