/* client_wire.c — a request on the wire (lm_client_wire): method, path, header and host
 * validation and the request line, headers and body as bytes. See client_impl.h. */
#include "client_impl.h"

/* ---- building requests ------------------------------------------------------------------ */

/* tchar (RFC 9110 5.6.2), as a table: every header of every request is checked */
static const bool tchar[256] = {
    ['!'] = 1, ['#'] = 1, ['$'] = 1, ['%'] = 1, ['&'] = 1, ['\''] = 1, ['*'] = 1, ['+'] = 1,
    ['-'] = 1, ['.'] = 1, ['^'] = 1, ['_'] = 1, ['`'] = 1, ['|'] = 1,  ['~'] = 1, ['0'] = 1,
    ['1'] = 1, ['2'] = 1, ['3'] = 1, ['4'] = 1, ['5'] = 1, ['6'] = 1,  ['7'] = 1, ['8'] = 1,
    ['9'] = 1, ['A'] = 1, ['B'] = 1, ['C'] = 1, ['D'] = 1, ['E'] = 1,  ['F'] = 1, ['G'] = 1,
    ['H'] = 1, ['I'] = 1, ['J'] = 1, ['K'] = 1, ['L'] = 1, ['M'] = 1,  ['N'] = 1, ['O'] = 1,
    ['P'] = 1, ['Q'] = 1, ['R'] = 1, ['S'] = 1, ['T'] = 1, ['U'] = 1,  ['V'] = 1, ['W'] = 1,
    ['X'] = 1, ['Y'] = 1, ['Z'] = 1, ['a'] = 1, ['b'] = 1, ['c'] = 1,  ['d'] = 1, ['e'] = 1,
    ['f'] = 1, ['g'] = 1, ['h'] = 1, ['i'] = 1, ['j'] = 1, ['k'] = 1,  ['l'] = 1, ['m'] = 1,
    ['n'] = 1, ['o'] = 1, ['p'] = 1, ['q'] = 1, ['r'] = 1, ['s'] = 1,  ['t'] = 1, ['u'] = 1,
    ['v'] = 1, ['w'] = 1, ['x'] = 1, ['y'] = 1, ['z'] = 1,
};

bool lm_client_wire_valid_token(const char *s, size_t n)
{
    if (n == 0) return false;
    for (size_t i = 0; i < n; i++)
        if (!tchar[(unsigned char)s[i]]) return false;
    return true;
}

/* field-value: no control characters but HTAB (so no CR/LF/NUL: no request splitting) */
bool lm_client_wire_valid_value(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if ((ch < 0x20 && ch != '\t') || ch == 0x7f) return false;
    }
    return true;
}

bool lm_client_wire_valid_path(const char *p)
{
    if (strcmp(p, "*") == 0) return true;
    if (p[0] != '/') return false;
    for (const unsigned char *s = (const unsigned char *)p; *s; s++)
        if (*s <= 0x20 || *s == 0x7f) return false;
    return true;
}

/* The client writes these itself (or never): dropped from the caller's headers. By length
 * first — most names match none of the lengths. */
static bool is_framing_header(const char *name, size_t n)
{
    switch (n) {
    case 7:
        return strncasecmp(name, "upgrade", 7) == 0;
    case 10:
        return strncasecmp(name, "connection", 10) == 0 || strncasecmp(name, "keep-alive", 10) == 0;
    case 14:
        return strncasecmp(name, "content-length", 14) == 0;
    case 16:
        return strncasecmp(name, "proxy-connection", 16) == 0;
    case 17:
        return strncasecmp(name, "transfer-encoding", 17) == 0;
    default:
        return false;
    }
}

bool lm_client_wire_build(creq *r, const lm_client_opts *op, origin *o)
{
    lm_buf *w = &r->wire;
    lm_buf_printf(w, "%s %s HTTP/1.1\r\n", op->method, op->path);
    bool have_host = false;
    for (size_t i = 0; i < op->n_headers; i++) {
        const lm_header *h = &op->headers[i];
        if (!h->name || !h->value) return false;
        size_t nl = h->name_len ? h->name_len : strlen(h->name);
        size_t vl = h->value_len ? h->value_len : strlen(h->value);
        if (!lm_client_wire_valid_token(h->name, nl) || !lm_client_wire_valid_value(h->value, vl))
            return false;
        if (is_framing_header(h->name, nl)) continue;
        if (nl == 4 && strncasecmp(h->name, "host", 4) == 0) {
            if (have_host) continue;
            have_host = true;
        }
        lm_buf_append(w, h->name, nl);
        lm_buf_append(w, ": ", 2);
        lm_buf_append(w, h->value, vl);
        lm_buf_append(w, "\r\n", 2);
    }
    if (!have_host) lm_buf_printf(w, "Host: %s\r\n", o->host_hdr);
    if (op->stream_body) {
        if (op->stream_length >= 0)
            lm_buf_printf(w, "Content-Length: %lld\r\n", (long long)op->stream_length);
        else
            lm_buf_append_str(w, "Transfer-Encoding: chunked\r\n");
    } else if (op->body_len || !strcmp(op->method, "POST") || !strcmp(op->method, "PUT") ||
               !strcmp(op->method, "PATCH")) {
        lm_buf_printf(w, "Content-Length: %zu\r\n", op->body_len);
    }
    lm_buf_append(w, "\r\n", 2);
    if (!op->stream_body && op->body_len) lm_buf_append(w, op->body, op->body_len);
    return true;
}

bool lm_client_wire_idempotent(const char *m)
{
    return !strcmp(m, "GET") || !strcmp(m, "HEAD") || !strcmp(m, "PUT") || !strcmp(m, "DELETE") ||
           !strcmp(m, "OPTIONS");
}
