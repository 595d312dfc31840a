/* amqp_url.c — see amqp_url.h. */
#include "amqp_url.h"

#include "url.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "buf.h"

/* Decodes in[0..n) into out (size cap <= 256); false when the result does not fit or the
 * text has a bad escape. Each decoded byte takes at most 3 encoded ones. */
static bool decode(const char *in, size_t n, char *out, size_t cap)
{
    char tmp[3 * 256 + 1];
    size_t len;
    if (n > 3 * (cap - 1) || n >= sizeof tmp || !lm_url_decode(in, n, tmp, &len, false) ||
        len >= cap)
        return false;
    memcpy(out, tmp, len + 1);
    return true;
}

/* Hex digits, ':' and '.' (an embedded IPv4), with at least one ':'. */
static bool ipv6_ok(const char *h)
{
    bool colon = false;
    for (const char *c = h; *c; c++) {
        bool hex = (*c >= '0' && *c <= '9') || (*c >= 'a' && *c <= 'f') || (*c >= 'A' && *c <= 'F');
        if (!hex && *c != ':' && *c != '.') return false;
        colon = colon || *c == ':';
    }
    return colon;
}

int lm_amqp_url_parse(const char *url, lm_amqp_url *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    if (!url || !*url) return lm_buf_errf(err, errlen, "EVENT_BROKER_URL is empty");
    static const char scheme[] = "amqp://";
    if (strncmp(url, "amqps://", 8) == 0)
        return lm_buf_errf(err, errlen,
                           "EVENT_BROKER_URL: amqps (TLS) is not supported, use amqp://");
    if (strncmp(url, scheme, sizeof scheme - 1) != 0)
        return lm_buf_errf(err, errlen, "EVENT_BROKER_URL must start with amqp://");
    const char *p = url + sizeof scheme - 1;
    for (const char *c = p; *c; c++) {
        if ((unsigned char)*c <= 0x20 || *c == 0x7f)
            return lm_buf_errf(err, errlen,
                               "EVENT_BROKER_URL contains a space or control character");
        if (*c == '?' || *c == '#')
            return lm_buf_errf(err, errlen, "EVENT_BROKER_URL: no query or fragment allowed");
    }
    const char *slash = strchr(p, '/');
    const char *auth_end = slash ? slash : p + strlen(p);
    /* userinfo: the last '@' before the path (a password may not contain a raw '@') */
    const char *at = NULL;
    for (const char *c = p; c < auth_end; c++)
        if (*c == '@') at = c;
    strcpy(out->user, "guest");
    strcpy(out->password, "guest");
    const char *host = p;
    if (at) {
        const char *colon = memchr(p, ':', (size_t)(at - p));
        const char *uend = colon ? colon : at;
        if (uend == p)
            return lm_buf_errf(err, errlen, "EVENT_BROKER_URL: empty user name before '@'");
        if (!decode(p, (size_t)(uend - p), out->user, sizeof out->user))
            return lm_buf_errf(err, errlen, "EVENT_BROKER_URL: bad or too long user name");
        if (colon) {
            if (!decode(colon + 1, (size_t)(at - colon - 1), out->password, sizeof out->password))
                return lm_buf_errf(err, errlen, "EVENT_BROKER_URL: bad or too long password");
        } else {
            out->password[0] = '\0';
        }
        host = at + 1;
    }
    /* host[:port] */
    const char *hend;
    const char *port_s = NULL;
    if (*host == '[') {
        const char *close = memchr(host, ']', (size_t)(auth_end - host));
        if (!close || close == host + 1)
            return lm_buf_errf(err, errlen, "EVENT_BROKER_URL: bad IPv6 address (expected [addr])");
        if ((size_t)(close - host - 1) >= sizeof out->host)
            return lm_buf_errf(err, errlen, "EVENT_BROKER_URL: host name too long");
        memcpy(out->host, host + 1, (size_t)(close - host - 1));
        if (!ipv6_ok(out->host))
            return lm_buf_errf(err, errlen, "EVENT_BROKER_URL: bad IPv6 address (expected [addr])");
        hend = close + 1;
        if (hend < auth_end) {
            if (*hend != ':')
                return lm_buf_errf(err, errlen, "EVENT_BROKER_URL: unexpected text after ']'");
            port_s = hend + 1;
        }
    } else {
        const char *colon = memchr(host, ':', (size_t)(auth_end - host));
        hend = colon ? colon : auth_end;
        if ((size_t)(hend - host) >= sizeof out->host)
            return lm_buf_errf(err, errlen, "EVENT_BROKER_URL: host name too long");
        memcpy(out->host, host, (size_t)(hend - host));
        for (const char *c = host; c < hend; c++)
            if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') ||
                  (*c >= '0' && *c <= '9') || *c == '-' || *c == '.' || *c == '_'))
                return lm_buf_errf(err, errlen, "EVENT_BROKER_URL: bad character in the host");
        if (colon) port_s = colon + 1;
    }
    if (!out->host[0]) return lm_buf_errf(err, errlen, "EVENT_BROKER_URL: no host");
    out->port = 5672;
    if (port_s) {
        if (port_s == auth_end)
            return lm_buf_errf(err, errlen, "EVENT_BROKER_URL: empty port after ':'");
        long v = 0;
        for (const char *c = port_s; c < auth_end; c++) {
            if (*c < '0' || *c > '9' || v > 65535)
                return lm_buf_errf(err, errlen, "EVENT_BROKER_URL: the port must be 1..65535");
            v = v * 10 + (*c - '0');
        }
        if (v < 1 || v > 65535)
            return lm_buf_errf(err, errlen, "EVENT_BROKER_URL: the port must be 1..65535");
        out->port = (int)v;
    }
    /* vhost: one segment; "%2f" encodes "/" */
    if (!slash) {
        strcpy(out->vhost, "/");
        return 0;
    }
    const char *v = slash + 1;
    if (strchr(v, '/'))
        return lm_buf_errf(err, errlen,
                           "EVENT_BROKER_URL: the vhost is one path segment (write '/' as %%2f)");
    if (!*v)
        return lm_buf_errf(
            err, errlen,
            "EVENT_BROKER_URL: empty vhost after '/' (leave the '/' out, or use %%2f "
            "for the default vhost)");
    if (!decode(v, strlen(v), out->vhost, sizeof out->vhost))
        return lm_buf_errf(err, errlen, "EVENT_BROKER_URL: bad or too long vhost");
    return 0;
}

/* Appends s percent-encoded (all but RFC 3986's unreserved characters) at out[*n..cap). */
static void encode(const char *s, char *out, size_t cap, size_t *n)
{
    for (const char *c = s; *c && *n + 4 < cap; c++) {
        unsigned char ch = (unsigned char)*c;
        if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
            ch == '-' || ch == '.' || ch == '_' || ch == '~')
            out[(*n)++] = (char)ch;
        else
            *n += (size_t)snprintf(out + *n, cap - *n, "%%%02X", ch);
    }
    out[*n] = '\0';
}

void lm_amqp_url_redacted(const lm_amqp_url *u, char *out, size_t outlen)
{
    char vh[3 * sizeof u->vhost + 1], us[3 * sizeof u->user + 1];
    size_t n = 0, m = 0;
    encode(u->vhost, vh, sizeof vh, &n);
    encode(u->user, us, sizeof us, &m);
    bool v6 = strchr(u->host, ':') != NULL;
    snprintf(out, outlen, "amqp://%s@%s%s%s:%d/%s", us, v6 ? "[" : "", u->host, v6 ? "]" : "",
             u->port, vh);
}
