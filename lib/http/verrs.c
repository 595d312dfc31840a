/* verrs.c — validation errors, collected and sent as one problem. See verrs.h. */
#include "verrs.h"

#include "buf.h"
#include "problem.h"

#include <stdarg.h>
#include <stdlib.h>

void lm_verrs_add(lm_verrs *e, const char *field, const char *fmt, ...)
{
    lm_buf msg = LM_BUF_INIT;
    va_list ap;
    va_start(ap, fmt);
    lm_buf_vprintf(&msg, fmt, ap);
    va_end(ap);
    e->items = lm_xrealloc(e->items, (e->n + 1) * sizeof *e->items);
    e->items[e->n].field = lm_xstrdup(field);
    e->items[e->n].message = lm_buf_steal(&msg, NULL);
    e->n++;
}

void lm_verrs_free(lm_verrs *e)
{
    for (size_t i = 0; i < e->n; i++) {
        free(e->items[i].field);
        free(e->items[i].message);
    }
    free(e->items);
    e->items = NULL;
    e->n = 0;
}

void lm_verrs_send(lm_req *req, lm_verrs *e, int status, const char *detail)
{
    lm_field_error *fe = lm_xcalloc(e->n, sizeof *fe);
    for (size_t i = 0; i < e->n; i++) {
        fe[i].field = e->items[i].field;
        fe[i].message = e->items[i].message;
    }
    status = status ? status : 422;
    lm_problem p = {
        .status = status,
        .type = status == 409   ? "urn:lotmesh:problem:conflict"
                : status == 400 ? "urn:lotmesh:problem:invalid-parameters"
                                : "urn:lotmesh:problem:validation",
        .title = status == 409   ? "Conflict"
                 : status == 400 ? "Invalid parameters"
                                 : "Validation failed",
        .detail =
            detail ? detail : (e->n == 1 ? e->items[0].message : "the request has invalid fields"),
        .errors = fe,
        .n_errors = e->n,
    };
    lm_resp_problem_full(req, &p);
    free(fe);
    lm_verrs_free(e);
}
