/* url.c — strict percent-decoding and query parsing. See url.h. */
#include "url.h"

#include "buf.h"

#include <stdlib.h>
#include <string.h>

static int hexdig(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

void lm_url_append_segment(lm_buf *b, const char *s)
{
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
            c == '-' || c == '_' || c == '.' || c == '~')
            lm_buf_append_char(b, (char)c);
        else
            lm_buf_printf(b, "%%%02X", c);
    }
}

bool lm_url_decode(const char *in, size_t n, char *out, size_t *out_len, bool plus_is_space)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        char c = in[i];
        if (c == '%') {
            if (i + 2 >= n) return false;
            int hi = hexdig(in[i + 1]), lo = hexdig(in[i + 2]);
            if (hi < 0 || lo < 0) return false;
            c = (char)(hi << 4 | lo);
            if (c == '\0') return false;
            i += 2;
        } else if (c == '+' && plus_is_space) {
            c = ' ';
        } else if (c == '\0') {
            return false;
        }
        out[o++] = c;
    }
    out[o] = '\0';
    if (out_len) *out_len = o;
    return true;
}

int lm_query_parse(const char *query, size_t len, lm_query *q)
{
    q->pairs = NULL;
    q->n = 0;
    q->storage = NULL;
    if (len == 0) return 0;
    size_t count = 1;
    for (size_t i = 0; i < len; i++)
        count += query[i] == '&';
    q->pairs = lm_xcalloc(count, sizeof *q->pairs);
    q->storage = lm_xmalloc(len + count + 1); /* each key/value gets its NUL */
    char *w = q->storage;
    size_t start = 0;
    for (size_t i = 0; i <= len; i++) {
        if (i < len && query[i] != '&') continue;
        if (i > start) {
            const char *pair = query + start;
            size_t plen = i - start;
            const char *eq = memchr(pair, '=', plen);
            size_t klen = eq ? (size_t)(eq - pair) : plen;
            size_t kout, vout = 0;
            if (!lm_url_decode(pair, klen, w, &kout, true)) goto bad;
            q->pairs[q->n].key = w;
            w += kout + 1;
            if (eq) {
                if (!lm_url_decode(eq + 1, plen - klen - 1, w, &vout, true)) goto bad;
            } else {
                *w = '\0';
            }
            q->pairs[q->n].value = w;
            w += vout + 1;
            q->n++;
        }
        start = i + 1;
    }
    return 0;
bad:
    lm_query_free(q);
    return -1;
}

const char *lm_query_get(const lm_query *q, const char *key)
{
    for (size_t i = 0; i < q->n; i++)
        if (strcmp(q->pairs[i].key, key) == 0) return q->pairs[i].value;
    return NULL;
}

size_t lm_query_count(const lm_query *q, const char *key)
{
    size_t c = 0;
    for (size_t i = 0; i < q->n; i++)
        c += strcmp(q->pairs[i].key, key) == 0;
    return c;
}

void lm_query_free(lm_query *q)
{
    free(q->pairs);
    free(q->storage);
    q->pairs = NULL;
    q->storage = NULL;
    q->n = 0;
}
