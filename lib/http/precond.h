/* precond.h — optimistic concurrency over HTTP (lm_precond): a version per resource as a
 * strong ETag ("\"<version>\""), If-Match checked before PUT/PATCH/DELETE (RFC 9110 13.1.1:
 * strong comparison, "*" matches any current representation, weak tags never match), and
 * If-None-Match for conditional GETs (13.1.2, weak comparison: 304 when it names the current
 * version). */
#ifndef LM_PRECOND_H
#define LM_PRECOND_H

#include <stdbool.h>

#include "http.h"

#define LM_ETAG_LEN 24

void lm_precond_etag_format(long long version, char out[LM_ETAG_LEN]);
/* Adds the ETag header for version to the response being built. */
void lm_precond_resp_etag(lm_req *req, long long version);
/* All If-Match headers joined by ", " (caller frees), or NULL when there is none. Lets a
 * database job check the precondition inside its transaction without touching req. */
char *lm_precond_if_match_copy(const lm_req *req);
/* True when the If-Match list (as from lm_precond_if_match_copy) matches version. */
bool lm_precond_if_match_list_ok(const char *list, long long version);
/* True when If-None-Match names version (RFC 9110 13.1.2: weak comparison, "*" matches):
 * a GET may answer 304. False for version <= 0 and when the header is absent. */
bool lm_precond_if_none_match_hit(const lm_req *req, long long version);
/* Every header line called name (case-insensitive) joined by ", " (caller frees), or NULL. */
char *lm_precond_header_list_copy(const lm_req *req, const char *name);

#endif
