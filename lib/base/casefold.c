/* casefold.c — UTF-8 decode, towlower_l in C.UTF-8, encode. See casefold.h. */
#include "casefold.h"

#include <locale.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <wctype.h>

static locale_t utf8_locale;
static pthread_once_t once = PTHREAD_ONCE_INIT;

static void make_locale(void)
{
    utf8_locale = newlocale(LC_CTYPE_MASK, "C.UTF-8", (locale_t)0);
}

/* One code point from s[0..n) into *cp; its length, or 0 when the bytes are not UTF-8
 * (overlong forms, surrogates and values over U+10FFFF included). */
static size_t decode(const unsigned char *s, size_t n, uint32_t *cp)
{
    if (s[0] < 0x80) {
        *cp = s[0];
        return 1;
    }
    size_t len;
    uint32_t c, min;
    if ((s[0] & 0xE0) == 0xC0) {
        len = 2, c = s[0] & 0x1F, min = 0x80;
    } else if ((s[0] & 0xF0) == 0xE0) {
        len = 3, c = s[0] & 0x0F, min = 0x800;
    } else if ((s[0] & 0xF8) == 0xF0) {
        len = 4, c = s[0] & 0x07, min = 0x10000;
    } else {
        return 0;
    }
    if (len > n) return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80) return 0;
        c = (c << 6) | (s[i] & 0x3F);
    }
    if (c < min || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF)) return 0;
    *cp = c;
    return len;
}

static void encode(uint32_t c, lm_buf *out)
{
    char b[4];
    size_t n;
    if (c < 0x80) {
        b[0] = (char)c, n = 1;
    } else if (c < 0x800) {
        b[0] = (char)(0xC0 | (c >> 6)), b[1] = (char)(0x80 | (c & 0x3F)), n = 2;
    } else if (c < 0x10000) {
        b[0] = (char)(0xE0 | (c >> 12)), b[1] = (char)(0x80 | ((c >> 6) & 0x3F));
        b[2] = (char)(0x80 | (c & 0x3F)), n = 3;
    } else {
        b[0] = (char)(0xF0 | (c >> 18)), b[1] = (char)(0x80 | ((c >> 12) & 0x3F));
        b[2] = (char)(0x80 | ((c >> 6) & 0x3F)), b[3] = (char)(0x80 | (c & 0x3F)), n = 4;
    }
    lm_buf_append(out, b, n);
}

void lm_casefold(const char *s, size_t n, lm_buf *out)
{
    pthread_once(&once, make_locale);
    const unsigned char *p = (const unsigned char *)s;
    lm_buf_reserve(out, n);
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        if (p[i] < 0x80) { /* the common case */
            unsigned char ch = p[i++];
            lm_buf_append_char(out, (char)(ch >= 'A' && ch <= 'Z' ? ch + 32 : ch));
            continue;
        }
        size_t len = decode(p + i, n - i, &cp);
        if (!len) {
            lm_buf_append_char(out, (char)p[i++]);
            continue;
        }
        uint32_t lower = utf8_locale ? (uint32_t)towlower_l((wint_t)cp, utf8_locale) : cp;
        encode(lower, out);
        i += len;
    }
}
