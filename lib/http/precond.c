/* precond.c — ETag / If-Match. See precond.h. */
#include "precond.h"

#include "buf.h"

#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

void lm_precond_etag_format(long long version, char out[LM_ETAG_LEN])
{
    snprintf(out, LM_ETAG_LEN, "\"%lld\"", version);
}

void lm_precond_resp_etag(lm_req *req, long long version)
{
    char etag[LM_ETAG_LEN];
    lm_precond_etag_format(version, etag);
    lm_resp_header(req, "ETag", etag);
}

/* Does the entity-tag list p name version? Strong comparison (If-Match) skips weak tags;
 * weak comparison (If-None-Match) compares W/"v" like "v". "*" matches any version. */
static bool tag_list_matches(const char *p, long long version, bool weak)
{
    char etag[LM_ETAG_LEN];
    lm_precond_etag_format(version, etag);
    size_t elen = strlen(etag);
    while (*p) {
        while (*p == ' ' || *p == '\t' || *p == ',')
            p++;
        if (!*p) break;
        bool is_weak = p[0] == 'W' && p[1] == '/' && p[2] == '"';
        if (is_weak) p += 2; /* parsed alike in both modes; only the comparison differs */
        const char *start = p;
        if (*p == '"') {
            const char *end = strchr(p + 1, '"');
            if (!end) return false;
            p = end + 1;
            const char *q = p; /* only whitespace may follow a tag before the next comma */
            while (*q == ' ' || *q == '\t')
                q++;
            if (*q && *q != ',') return false;
        } else {
            while (*p && *p != ',')
                p++; /* "*", or something that is no tag: never a match */
        }
        size_t n = (size_t)(p - start);
        while (n && (start[n - 1] == ' ' || start[n - 1] == '\t'))
            n--;
        if (n == 1 && *start == '*' && !is_weak) return true;
        if ((weak || !is_weak) && n == elen && memcmp(start, etag, n) == 0) return true;
    }
    return false;
}

bool lm_precond_if_match_list_ok(const char *p, long long version)
{
    return tag_list_matches(p, version, false);
}

bool lm_precond_if_none_match_hit(const lm_req *req, long long version)
{
    if (version <= 0) return false;
    char *list = lm_precond_header_list_copy(req, "if-none-match");
    bool hit = list && tag_list_matches(list, version, true);
    free(list);
    return hit;
}

char *lm_precond_if_match_copy(const lm_req *req)
{
    return lm_precond_header_list_copy(req, "if-match");
}

char *lm_precond_header_list_copy(const lm_req *req, const char *name)
{
    lm_buf all = LM_BUF_INIT;
    bool any = false;
    for (size_t i = 0; i < req->n_headers; i++) {
        if (strcasecmp(req->headers[i].name, name) != 0) continue;
        if (any) lm_buf_append_str(&all, ", ");
        lm_buf_append(&all, req->headers[i].value, req->headers[i].value_len);
        any = true;
    }
    if (!any) return NULL;
    return lm_buf_steal(&all, NULL);
}
