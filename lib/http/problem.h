/* problem.h — RFC 9457 problem details (application/problem+json), the one error format of
 * every lotmesh process (DESIGN 3.4): type, title, status, detail, instance, trace_id, and
 * errors: [{field, message}] for validation failures.
 *
 * This module only formats (no request, no I/O), so the HTTP engine can use it for protocol
 * errors before any request exists; http.h's lm_resp_problem* send one for a request. */
#ifndef LM_PROBLEM_H
#define LM_PROBLEM_H

#include <stddef.h>

#include "buf.h"

typedef struct lm_field_error {
    const char *field; /* JSON field name, or "" for the body as a whole */
    const char *message;
} lm_field_error;

typedef struct lm_problem {
    int status;
    const char *type;     /* URI; NULL -> "about:blank" */
    const char *title;    /* NULL -> the reason phrase of status */
    const char *detail;   /* may be NULL */
    const char *instance; /* may be NULL */
    const char *trace_id; /* 32 hex digits, may be NULL */
    const lm_field_error *errors;
    size_t n_errors;
    const char *ext_name, *ext_value; /* one extension member (e.g. OAuth2's "error"), or NULL */
} lm_problem;

/* Appends the problem JSON object to out. */
void lm_problem_format(lm_buf *out, const lm_problem *p);

/* Sending a problem for a request: lm_resp_problem* in http.h. */

#define LM_PROBLEM_CONTENT_TYPE "application/problem+json"

#endif
