/* url.h — http:// URLs, percent-encoding and -decoding, query strings (lm_url, lm_query).
 *
 * Decoding is strict: a '%' not followed by two hex digits is an error, and so is a decoded
 * NUL byte, because every decoded value is later used as a C string. */
#ifndef LM_URL_H
#define LM_URL_H

#include <stdbool.h>
#include <stddef.h>

/* "http://host[:port][/path][?query]" (port default 80; IPv6 as "[::1]"). path is "" when
 * the URL has none and keeps the query; a fragment is dropped. Returns 0, or -1 with a
 * one-line reason in err (https:// is refused: the HTTP client speaks plain HTTP). Pure. */
typedef struct lm_url {
    char scheme[8]; /* "http" */
    char host[256]; /* IPv6 without brackets */
    int port;
    char path[2048];
} lm_url;

int lm_url_parse(const char *url, lm_url *out, char *err, size_t errlen);

/* Decodes n bytes of in into out (which has room for n + 1 bytes; decoding never grows) and
 * NUL-terminates it. plus_is_space: '+' means ' ' (query strings). Returns false on a bad
 * escape or a decoded NUL; out is then unspecified. */
bool lm_url_decode(const char *in, size_t n, char *out, size_t *out_len, bool plus_is_space);

/* Appends s to b percent-encoded as one path segment: everything but RFC 3986's unreserved
 * characters (ALPHA, DIGIT, "-", ".", "_", "~") is escaped. */
struct lm_buf;
void lm_url_append_segment(struct lm_buf *b, const char *s);

typedef struct lm_query_pair {
    const char *key;   /* decoded, NUL-terminated, points into storage */
    const char *value; /* decoded, "" when the pair had no '=' */
} lm_query_pair;

typedef struct lm_query {
    lm_query_pair *pairs; /* owned */
    size_t n;
    char *storage; /* owned */
} lm_query;

/* Parses "a=1&b=x%20y&flag". Empty pairs ("a=1&&b=2") are skipped. Returns 0, or -1 on a bad
 * escape (q is then empty and needs no free). On 0 the caller calls lm_query_free(). */
int lm_query_parse(const char *query, size_t len, lm_query *q);
/* First value for key, or NULL. */
const char *lm_query_get(const lm_query *q, const char *key);
/* Number of pairs whose key is key. */
size_t lm_query_count(const lm_query *q, const char *key);
void lm_query_free(lm_query *q);

#endif
