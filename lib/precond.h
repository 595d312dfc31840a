/* precond.h — optimistic concurrency over HTTP (lm_precond): a version per resource as a
 * strong ETag ("\"<version>\""), If-Match checked before PUT/PATCH/DELETE (RFC 9110 13.1.1:
 * strong comparison, "*" matches any current representation, weak tags never match). */
#ifndef LM_PRECOND_H
#define LM_PRECOND_H

#include <stdbool.h>

#include "http.h"

#define LM_ETAG_LEN 24

void lm_etag_format(long long version, char out[LM_ETAG_LEN]);
/* Adds the ETag header for version to the response being built. */
void lm_resp_etag(lm_req *req, long long version);
/* True when the request carries an If-Match header. */
bool lm_has_if_match(const lm_req *req);
/* True when If-Match is absent or matches version. */
bool lm_if_match_ok(const lm_req *req, long long version);
/* All If-Match headers joined by ", " (caller frees), or NULL when there is none. Lets a
 * database job check the precondition inside its transaction without touching req. */
char *lm_if_match_copy(const lm_req *req);
/* True when the If-Match list (as from lm_if_match_copy) matches version. */
bool lm_if_match_list_ok(const char *list, long long version);

#endif
