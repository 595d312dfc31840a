/* trace.c — traceparent parsing/formatting, id generation. See trace.h. */
#include "trace.h"

#include <errno.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

static _Thread_local uint64_t rng_state[4];
static _Thread_local bool rng_seeded;

static uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static void rng_seed(void)
{
    if (lm_trace_random_bytes(rng_state, sizeof rng_state) != 0) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        rng_state[0] = (uint64_t)ts.tv_nsec ^ 0x9E3779B97F4A7C15ULL;
        rng_state[1] = (uint64_t)ts.tv_sec ^ (uint64_t)(uintptr_t)&rng_state;
        rng_state[2] = 0xD1B54A32D192ED03ULL;
        rng_state[3] = 0x8CB92BA72F3D8DD7ULL;
    }
    if (!(rng_state[0] | rng_state[1] | rng_state[2] | rng_state[3])) rng_state[0] = 1;
    rng_seeded = true;
}

uint64_t lm_trace_rand64(void)
{
    if (!rng_seeded) rng_seed();
    uint64_t *s = rng_state;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

int lm_trace_random_bytes(void *out, size_t n)
{
    uint8_t *p = out;
    while (n > 0) {
        ssize_t r = getrandom(p, n, 0);
        if (r < 0) {
            if (errno == EINTR) continue;
            return -errno;
        }
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

static void fill_nonzero(uint8_t *out, size_t n)
{
    uint64_t any;
    do { /* all zero is invalid for W3C ids: retry (p = 2^-64 per word) */
        any = 0;
        for (size_t i = 0; i < n; i += 8) {
            uint64_t r = lm_trace_rand64();
            size_t k = n - i < 8 ? n - i : 8;
            memcpy(out + i, &r, k);
            any |= k == 8 ? r : r & ((1ULL << (8 * k)) - 1);
        }
    } while (!any);
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1; /* W3C: lowercase only */
}

static bool hex_decode(const char *s, size_t n2, uint8_t *out)
{
    bool nonzero = false;
    for (size_t i = 0; i < n2 / 2; i++) {
        int hi = hexval(s[2 * i]), lo = hexval(s[2 * i + 1]);
        if (hi < 0 || lo < 0) return false;
        out[i] = (uint8_t)(hi << 4 | lo);
        nonzero |= out[i] != 0;
    }
    return nonzero;
}

bool lm_trace_parse(const char *v, size_t len, lm_trace_ctx *ctx)
{
    /* version "-" trace-id "-" parent-id "-" flags ; later versions may append "-" ... */
    if (len < LM_TRACEPARENT_LEN) return false;
    if (v[2] != '-' || v[35] != '-' || v[52] != '-') return false;
    int vh = hexval(v[0]), vl = hexval(v[1]);
    if (vh < 0 || vl < 0) return false;
    int version = vh << 4 | vl;
    if (version == 0xff) return false;
    if (version == 0 && len != LM_TRACEPARENT_LEN) return false;
    if (version != 0 && len > LM_TRACEPARENT_LEN && v[LM_TRACEPARENT_LEN] != '-') return false;
    lm_trace_ctx t;
    memset(&t, 0, sizeof t);
    if (!hex_decode(v + 3, 32, t.trace_id)) return false;
    if (!hex_decode(v + 36, 16, t.parent_span_id)) return false;
    uint8_t flags;
    int fh = hexval(v[53]), fl = hexval(v[54]);
    if (fh < 0 || fl < 0) return false;
    flags = (uint8_t)(fh << 4 | fl);
    t.flags = flags & 0x01;
    t.has_parent = true;
    *ctx = t;
    return true;
}

void lm_trace_begin(lm_trace_ctx *ctx, const char *traceparent, size_t len)
{
    if (!traceparent || !lm_trace_parse(traceparent, len, ctx)) {
        memset(ctx, 0, sizeof *ctx);
        fill_nonzero(ctx->trace_id, sizeof ctx->trace_id);
        ctx->flags = 0x01;
        ctx->has_parent = false;
    }
    fill_nonzero(ctx->span_id, sizeof ctx->span_id);
}

void lm_trace_hex_encode(const uint8_t *in, size_t n, char *out)
{
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hex[in[i] >> 4];
        out[2 * i + 1] = hex[in[i] & 15];
    }
    out[2 * n] = '\0';
}

void lm_trace_format(const lm_trace_ctx *ctx, char *out)
{
    memcpy(out, "00-", 3);
    lm_trace_hex_encode(ctx->trace_id, 16, out + 3);
    out[35] = '-';
    lm_trace_hex_encode(ctx->span_id, 8, out + 36);
    out[52] = '-';
    lm_trace_hex_encode(&ctx->flags, 1, out + 53);
}

void lm_trace_child(const lm_trace_ctx *ctx, lm_trace_ctx *child)
{
    lm_trace_ctx c = *ctx;
    memcpy(c.parent_span_id, ctx->span_id, 8);
    c.has_parent = true;
    fill_nonzero(c.span_id, sizeof c.span_id);
    *child = c;
}

void lm_trace_id_hex(const lm_trace_ctx *ctx, char out[33])
{
    lm_trace_hex_encode(ctx->trace_id, 16, out);
}

void lm_trace_span_id_hex(const uint8_t id[8], char out[17])
{
    lm_trace_hex_encode(id, 8, out);
}

static bool request_id_char(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           strchr("._:@/+=-", c) != NULL;
}

void lm_trace_request_id_assign(const char *value, size_t len, char out[LM_REQUEST_ID_MAX + 1])
{
    if (value && len > 0 && len <= LM_REQUEST_ID_MAX) {
        size_t i = 0;
        while (i < len && value[i] && request_id_char((unsigned char)value[i]))
            i++;
        if (i == len) {
            memcpy(out, value, len);
            out[len] = '\0';
            return;
        }
    }
    uint8_t raw[16];
    fill_nonzero(raw, sizeof raw);
    lm_trace_hex_encode(raw, sizeof raw, out);
}
