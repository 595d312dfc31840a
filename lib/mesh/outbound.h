/* outbound.h — the headers every call to another service carries on behalf of the request
 * being served (lm_outbound), set the same way by the gateway's proxy and by a service calling
 * another (DESIGN 3.5, 3.7): a child span's traceparent, the request's X-Request-ID and the
 * service token as "Authorization: Bearer …".
 *
 * Ownership: the values point into the caller's lm_outbound, which must live until the call
 * is sent (lm_client_send copies the headers). Threading: the request's loop thread. */
#ifndef LM_OUTBOUND_H
#define LM_OUTBOUND_H

#include <stddef.h>

#include "http.h"
#include "trace.h"

#define LM_OUTBOUND_HEADERS   3    /* at most this many are appended */
#define LM_OUTBOUND_TOKEN_MAX 4192 /* longer tokens are not sent */

typedef struct lm_outbound {
    lm_trace_ctx span; /* the child span the call is made in */
    char traceparent[LM_TRACEPARENT_LEN + 1];
    char authorization[LM_OUTBOUND_TOKEN_MAX + 8];
} lm_outbound;

/* Appends traceparent (a new child span of req's), X-Request-ID and, unless token is NULL,
 * Authorization: Bearer token to hs[n …] (room for LM_OUTBOUND_HEADERS more); returns the new
 * count. */
size_t lm_outbound_headers(lm_outbound *o, const lm_req *req, const char *token, lm_header *hs,
                           size_t n);

#endif
