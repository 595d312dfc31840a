/* fuzz_text.c — libFuzzer target for the small text parsers of the resource flows: Unicode
 * case folding (lm_casefold, behind the articles search) and entity-tag lists (If-Match,
 * If-None-Match in lm_precond).
 *
 * Input: 1 selector byte, then the text. Oracle, beyond the sanitizers: folding keeps every
 * ASCII byte's lowercase, turns valid UTF-8 into valid UTF-8 and leaves invalid bytes as they
 * were; a tag list that matches a version under strong comparison (If-Match) also matches it
 * under weak comparison (If-None-Match), and "*" alone matches every version. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "casefold.h"
#include "precond.h"

static void die(const char *what)
{
    fprintf(stderr, "fuzz_text: invariant violated: %s\n", what);
    abort();
}

/* Length of the valid UTF-8 sequence at s, or 0. */
static size_t utf8_seq(const unsigned char *s, size_t n)
{
    if (s[0] < 0x80) return 1;
    size_t len = (s[0] & 0xE0) == 0xC0   ? 2
                 : (s[0] & 0xF0) == 0xE0 ? 3
                 : (s[0] & 0xF8) == 0xF0 ? 4
                                         : 0;
    if (!len || len > n) return 0;
    uint32_t c = s[0] & (0x7F >> len);
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80) return 0;
        c = (c << 6) | (s[i] & 0x3F);
    }
    static const uint32_t min[] = {0, 0, 0x80, 0x800, 0x10000};
    if (c < min[len] || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF)) return 0;
    return len;
}

static void check_fold(const unsigned char *s, size_t n)
{
    lm_buf out = LM_BUF_INIT;
    lm_casefold((const char *)s, n, &out);
    const unsigned char *o = (const unsigned char *)(out.data ? out.data : "");
    size_t i = 0, j = 0;
    while (i < n) { /* walk both: each input unit gives one output unit */
        size_t len = utf8_seq(s + i, n - i);
        if (s[i] < 0x80) {
            unsigned char want = s[i] >= 'A' && s[i] <= 'Z' ? s[i] + 32 : s[i];
            if (j >= out.len || o[j] != want) die("ASCII byte not lowercased exactly");
            i++, j++;
        } else if (!len) {
            if (j >= out.len || o[j] != s[i]) die("invalid byte not kept");
            i++, j++;
        } else {
            size_t olen = j < out.len ? utf8_seq(o + j, out.len - j) : 0;
            if (!olen) die("valid UTF-8 folded into invalid UTF-8");
            i += len, j += olen;
        }
    }
    if (j != out.len) die("output longer than its input's units");
    lm_buf_free(&out);
}

static void check_tags(const char *text, long long version)
{
    lm_header h = {
        .name = "If-None-Match", .name_len = 13, .value = text, .value_len = strlen(text)};
    lm_req req = {.headers = &h, .n_headers = 1};
    bool strong = lm_precond_if_match_list_ok(text, version);
    bool weak = lm_precond_if_none_match_hit(&req, version);
    if (strong && !weak) die("a strong match is not a weak match");
    if (!strcmp(text, "*") && !(strong && weak)) die("* does not match");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 4096) return 0;
    char *text = malloc(size); /* NUL-terminated copy of data[1..] */
    memcpy(text, data + 1, size - 1);
    text[size - 1] = '\0';
    if (data[0] & 1) {
        check_fold(data + 1, size - 1);
    } else {
        long long version = 1 + (data[0] >> 1); /* 1..128 */
        check_tags(text, version);
    }
    free(text);
    return 0;
}
