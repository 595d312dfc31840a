/* client_wire.c — a request on the wire (lm_client_wire): method, path, header and host
 * validation and the request line, headers and body as bytes. See client_impl.h. */
#include "client_impl.h"

/* ---- building requests ------------------------------------------------------------------ */

static bool is_tchar(unsigned char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           (ch && strchr("!#$%&'*+-.^_`|~", ch));
}

bool lm_client_wire_valid_token(const char *s, size_t n)
{
    if (n == 0) return false;
    for (size_t i = 0; i < n; i++)
        if (!is_tchar((unsigned char)s[i])) return false;
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

static bool is_framing_header(const char *name, size_t n)
{
    static const char *const drop[] = {"content-length", "transfer-encoding", "connection",
                                       "keep-alive",     "upgrade",           "proxy-connection"};
    for (size_t i = 0; i < sizeof drop / sizeof drop[0]; i++)
        if (strlen(drop[i]) == n && strncasecmp(drop[i], name, n) == 0) return true;
    return false;
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
