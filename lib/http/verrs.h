/* verrs.h — validation errors (lm_verrs): the field errors of one request, collected while
 * checking it and answered together as one problem with errors: [{field, message}]
 * (DESIGN 3.4) — 422 for a body's fields, 400 for query parameters, 409 for conflicts.
 *
 * Ownership: an lm_verrs owns its strings; zero-initialise it, and lm_verrs_send or
 * lm_verrs_free frees them. Threading: the request's loop thread. */
#ifndef LM_VERRS_H
#define LM_VERRS_H

#include <stdbool.h>
#include <stddef.h>

#include "http.h"

typedef struct lm_verrs {
    struct {
        char *field;
        char *message;
    } * items; /* owned */
    size_t n;
} lm_verrs;

void lm_verrs_add(lm_verrs *e, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static inline bool lm_verrs_any(const lm_verrs *e)
{
    return e->n > 0;
}
/* Sends them as one problem (status 422 unless given otherwise) and frees them. */
void lm_verrs_send(lm_req *req, lm_verrs *e, int status, const char *detail);
void lm_verrs_free(lm_verrs *e);

#endif
