/* parse.c — decimal integers, durations and sizes. See parse.h. */
#include "parse.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

bool lm_parse_int(const char *s, long long *out)
{
    if (!s) return false;
    const char *digits = *s == '-' ? s + 1 : s;
    if (!isdigit((unsigned char)*digits)) return false;
    errno = 0;
    char *end;
    long long v = strtoll(s, &end, 10);
    if (errno || *end) return false;
    *out = v;
    return true;
}

char *lm_parse_trim(char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    size_t n = strlen(s);
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t'))
        s[--n] = '\0';
    return s;
}

/* Leading digits of s into *v (at least one); *end after them. False on overflow. */
static bool leading_uint(const char *s, uint64_t *v, const char **end)
{
    if (!s || !isdigit((unsigned char)*s)) return false;
    errno = 0;
    char *e;
    unsigned long long x = strtoull(s, &e, 10);
    if (errno) return false;
    *v = x;
    *end = e;
    return true;
}

bool lm_parse_uint(const char *s, uint64_t *out)
{
    uint64_t v;
    const char *end;
    if (!leading_uint(s, &v, &end) || *end) return false;
    *out = v;
    return true;
}

/* A non-negative decimal number followed by an optional unit from units[]. */
static bool parse_with_unit(const char *s, const char *const units[], const uint64_t mult[],
                            uint64_t *out)
{
    uint64_t v;
    const char *end;
    if (!leading_uint(s, &v, &end)) return false;
    uint64_t m = 1;
    if (*end) {
        size_t i;
        for (i = 0; units[i]; i++)
            if (strcasecmp(end, units[i]) == 0) break;
        if (!units[i]) return false;
        m = mult[i];
    }
    if (m && v > UINT64_MAX / m) return false;
    *out = v * m;
    return true;
}

bool lm_parse_duration_ms(const char *s, uint64_t *out)
{
    static const char *const units[] = {"ms", "s", "m", "h", NULL};
    static const uint64_t mult[] = {1, 1000, 60000, 3600000};
    return parse_with_unit(s, units, mult, out);
}

bool lm_parse_size(const char *s, uint64_t *out)
{
    static const char *const units[] = {"b",   "k", "kb", "kib", "m", "mb",
                                        "mib", "g", "gb", "gib", NULL};
    static const uint64_t mult[] = {1,       1024,    1024,    1024,       1048576,
                                    1048576, 1048576, 1 << 30, 1ULL << 30, 1ULL << 30};
    return parse_with_unit(s, units, mult, out);
}
