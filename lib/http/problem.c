/* problem.c — RFC 9457 problem documents. See problem.h. */
#include "problem.h"

#include "status.h"

#include <stdbool.h>
#include <stdio.h>
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
    kv_str(b, "title", p->title ? p->title : lm_status_reason(p->status), true);
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
