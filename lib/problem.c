/* problem.c — RFC 9457 problem responses. See problem.h. */
#include "problem.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void kv_str(lm_buf *b, const char *key, const char *val, bool comma)
{
    if (comma) lm_buf_append_char(b, ',');
    lm_buf_append_char(b, '"');
    lm_buf_append_str(b, key);
    lm_buf_append_str(b, "\":\"");
    lm_buf_append_json_escaped(b, val, strlen(val));
    lm_buf_append_char(b, '"');
}

void lm_problem_format(lm_buf *b, const lm_problem *p)
{
    lm_buf_append_char(b, '{');
    kv_str(b, "type", p->type ? p->type : "about:blank", false);
    kv_str(b, "title", p->title ? p->title : lm_http_reason(p->status), true);
    lm_buf_append_str(b, ",\"status\":");
    lm_buf_append_u64(b, (unsigned long long)p->status);
    if (p->detail) kv_str(b, "detail", p->detail, true);
    if (p->instance) kv_str(b, "instance", p->instance, true);
    if (p->trace_id) kv_str(b, "trace_id", p->trace_id, true);
    if (p->ext_name && p->ext_value) kv_str(b, p->ext_name, p->ext_value, true);
    if (p->n_errors) {
        lm_buf_append_str(b, ",\"errors\":[");
        for (size_t i = 0; i < p->n_errors; i++) {
            if (i) lm_buf_append_char(b, ',');
            lm_buf_append_char(b, '{');
            kv_str(b, "field", p->errors[i].field ? p->errors[i].field : "", false);
            kv_str(b, "message", p->errors[i].message ? p->errors[i].message : "", true);
            lm_buf_append_char(b, '}');
        }
        lm_buf_append_char(b, ']');
    }
    lm_buf_append_char(b, '}');
}

void lm_problem_send_full(lm_req *req, const lm_problem *p)
{
    char trace[33];
    char *instance = lm_xstrndup(req->path ? req->path : "", req->path ? req->path_len : 0);
    lm_problem q = *p;
    lm_trace_id_hex(&req->trace, trace);
    if (!q.trace_id) q.trace_id = trace;
    if (!q.instance && instance[0]) q.instance = instance;
    lm_buf body = LM_BUF_INIT;
    lm_problem_format(&body, &q);
    lm_resp_send(req, p->status, LM_PROBLEM_CONTENT_TYPE, body.data, body.len);
    lm_buf_free(&body);
    free(instance);
}

void lm_problem_send(lm_req *req, int status, const char *detail)
{
    lm_problem p = {.status = status, .detail = detail};
    lm_problem_send_full(req, &p);
}

void lm_problem_sendf(lm_req *req, int status, const char *fmt, ...)
{
    lm_buf detail = LM_BUF_INIT;
    va_list ap;
    va_start(ap, fmt);
    lm_buf_vprintf(&detail, fmt, ap);
    va_end(ap);
    lm_problem_send(req, status, lm_buf_cstr(&detail));
    lm_buf_free(&detail);
}
