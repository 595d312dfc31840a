/* outbound.c — the headers of a call made on behalf of a request. See outbound.h. */
#include "outbound.h"

#include <stdio.h>

size_t lm_outbound_headers(lm_outbound *o, const lm_req *req, const char *token, lm_header *hs,
                           size_t n)
{
    lm_trace_child(&req->trace, &o->span);
    lm_trace_format(&o->span, o->traceparent);
    hs[n++] = (lm_header){.name = "traceparent", .value = o->traceparent};
    hs[n++] = (lm_header){.name = "X-Request-ID", .value = req->request_id};
    if (token) {
        snprintf(o->authorization, sizeof o->authorization, "Bearer %s", token);
        hs[n++] = (lm_header){.name = "Authorization", .value = o->authorization};
    }
    return n;
}
