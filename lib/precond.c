/* precond.c — ETag / If-Match. See precond.h. */
#include "precond.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

void lm_etag_format(long long version, char out[LM_ETAG_LEN])
{
    snprintf(out, LM_ETAG_LEN, "\"%lld\"", version);
}

void lm_resp_etag(lm_req *req, long long version)
{
    char etag[LM_ETAG_LEN];
    lm_etag_format(version, etag);
    lm_resp_header(req, "ETag", etag);
}

bool lm_has_if_match(const lm_req *req) { return lm_req_header(req, "if-match") != NULL; }

bool lm_if_match_ok(const lm_req *req, long long version)
{
    /* every If-Match header counts (a list may be split over several) */
    char etag[LM_ETAG_LEN];
    lm_etag_format(version, etag);
    size_t elen = strlen(etag);
    bool present = false;
    for (size_t i = 0; i < req->n_headers; i++) {
        if (strcasecmp(req->headers[i].name, "if-match") != 0) continue;
        present = true;
        const char *p = req->headers[i].value;
        while (*p) {
            while (*p == ' ' || *p == '\t' || *p == ',') p++;
            if (!*p) break;
            const char *start = p;
            if (*p == '"') {
                const char *end = strchr(p + 1, '"');
                if (!end) return false;
                p = end + 1;
            } else {
                while (*p && *p != ',') p++;
            }
            size_t n = (size_t)(p - start);
            while (n && (start[n - 1] == ' ' || start[n - 1] == '\t')) n--;
            if ((n == 1 && *start == '*') || (n == elen && memcmp(start, etag, n) == 0))
                return true;
        }
    }
    return !present;
}
