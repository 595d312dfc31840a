/* url.c — http:// URLs, percent-encoding, strict percent-decoding and query parsing. See
 * url.h. */
#include "url.h"

#include "buf.h"

#include <stdio.h>
#include <stdlib.h>
#include <strings.h>
#include <uv.h>
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

int lm_url_parse(const char *url, lm_url *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
#define FAIL(...)                                                                                  \
    do {                                                                                           \
        if (err && errlen) snprintf(err, errlen, __VA_ARGS__);                                     \
        return -1;                                                                                 \
    } while (0)
    if (!url) FAIL("no URL");
    if (strncasecmp(url, "https://", 8) == 0)
        FAIL("'%.200s': https is not supported; the client speaks plain http:// only", url);
    if (strncasecmp(url, "http://", 7) != 0) FAIL("'%.200s': only http:// URLs are supported", url);
    const char *a = url + 7;
    size_t alen = strcspn(a, "/?#");
    const char *rest = a + alen;
    if (memchr(a, '@', alen)) FAIL("'%.200s': user information in URLs is not supported", url);
    const char *host = a;
    size_t hl;
    const char *port_s = NULL;
    size_t pl = 0;
    if (alen && a[0] == '[') {
        const char *close = memchr(a, ']', alen);
        if (!close) FAIL("'%.200s': unterminated IPv6 address", url);
        host = a + 1;
        hl = (size_t)(close - host);
        const char *after = close + 1;
        if (after < a + alen) {
            if (*after != ':') FAIL("'%.200s': junk after the IPv6 address", url);
            port_s = after + 1;
            pl = (size_t)(a + alen - port_s);
        }
        char tmp[64];
        struct sockaddr_in6 sa;
        if (hl == 0 || hl >= sizeof tmp) FAIL("'%.200s': bad IPv6 address", url);
        memcpy(tmp, host, hl);
        tmp[hl] = '\0';
        if (uv_ip6_addr(tmp, 0, &sa) != 0) FAIL("'%.200s': bad IPv6 address", url);
    } else {
        const char *colon = memchr(a, ':', alen);
        hl = colon ? (size_t)(colon - a) : alen;
        if (colon) {
            port_s = colon + 1;
            pl = (size_t)(a + alen - port_s);
        }
        for (size_t i = 0; i < hl; i++) {
            unsigned char ch = (unsigned char)host[i];
            if (!(ch == '-' || ch == '.' || ch == '_' || (ch >= '0' && ch <= '9') ||
                  (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z')))
                FAIL("'%.200s': bad character in host name", url);
        }
    }
    if (hl == 0) FAIL("'%.200s': no host", url);
    if (hl >= sizeof out->host) FAIL("'%.200s': host name too long", url);
    int port = 80;
    if (port_s) {
        if (pl == 0 || pl > 5) FAIL("'%.200s': bad port", url);
        port = 0;
        for (size_t i = 0; i < pl; i++) {
            if (port_s[i] < '0' || port_s[i] > '9') FAIL("'%.200s': bad port", url);
            port = port * 10 + (port_s[i] - '0');
        }
        if (port < 1 || port > 65535) FAIL("'%.200s': port out of range", url);
    }
    size_t plen = strcspn(rest, "#");
    if (plen >= sizeof out->path) FAIL("'%.200s': path too long", url);
    for (size_t i = 0; i < plen; i++)
        if ((unsigned char)rest[i] <= 0x20 || rest[i] == 0x7f)
            FAIL("'%.200s': space or control character in the path", url);
    strcpy(out->scheme, "http");
    memcpy(out->host, host, hl);
    out->host[hl] = '\0';
    out->port = port;
    if (plen && rest[0] == '?') { /* "http://h?x": the path is "/" */
        out->path[0] = '/';
        if (plen + 1 >= sizeof out->path) FAIL("'%.200s': path too long", url);
        memcpy(out->path + 1, rest, plen);
        out->path[plen + 1] = '\0';
    } else {
        memcpy(out->path, rest, plen);
        out->path[plen] = '\0';
    }
    return 0;
#undef FAIL
}
