/* timefmt.c — RFC 3339 parsing/formatting without locale or timezone state. */
#include "timefmt.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

static bool digits(const char *s, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return false;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return true;
}

static bool leap(int y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static int days_in_month(int y, int m)
{
    static const int d[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    return m == 2 && leap(y) ? 29 : d[m - 1];
}

/* days since 1970-01-01 for a proleptic Gregorian date (Howard Hinnant's algorithm) */
static int64_t days_from_civil(int64_t y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

bool lm_timefmt_parse(const char *s, bool allow_date, int64_t *unix_ms)
{
    int y, mo, d, h = 0, mi = 0, sec = 0, ms = 0, off = 0;
    size_t len = strlen(s);
    if (len < 10 || !digits(s, 4, &y) || s[4] != '-' || !digits(s + 5, 2, &mo) || s[7] != '-' ||
        !digits(s + 8, 2, &d))
        return false;
    if (y < 1 || mo < 1 || mo > 12 || d < 1 || d > days_in_month(y, mo)) return false;
    const char *p = s + 10;
    if (*p == '\0') {
        if (!allow_date) return false;
    } else {
        if (*p != 'T' && *p != 't' && *p != ' ') return false;
        if (strlen(p) < 9 || !digits(p + 1, 2, &h) || p[3] != ':' || !digits(p + 4, 2, &mi) ||
            p[6] != ':' || !digits(p + 7, 2, &sec))
            return false;
        if (h > 23 || mi > 59 || sec > 59) return false; /* leap seconds not accepted */
        p += 9;
        if (*p == '.') {
            int n = 0, frac = 0;
            p++;
            while (*p >= '0' && *p <= '9') {
                if (n < 3) frac = frac * 10 + (*p - '0');
                n++;
                p++;
            }
            if (n == 0 || n > 9) return false;
            for (int i = n; i < 3; i++)
                frac *= 10;
            ms = frac;
        }
        if (*p == 'Z' || *p == 'z') {
            p++;
        } else if (*p == '+' || *p == '-') {
            int oh, om;
            if (!digits(p + 1, 2, &oh) || p[3] != ':' || !digits(p + 4, 2, &om) || oh > 23 ||
                om > 59)
                return false;
            off = (oh * 60 + om) * (*p == '-' ? -1 : 1);
            p += 6;
        } else {
            return false;
        }
        if (*p) return false;
    }
    int64_t days = days_from_civil(y, mo, d);
    int64_t secs = days * 86400 + h * 3600 + mi * 60 + sec - (int64_t)off * 60;
    *unix_ms = secs * 1000 + ms;
    return true;
}

void lm_timefmt_format(int64_t unix_ms, char out[LM_TIME_STRLEN])
{
    /* RFC 3339 has four-digit years: saturate outside 0001-01-01 .. 9999-12-31T23:59:59.999 */
    const int64_t lo = -62135596800000LL, hi = 253402300799999LL;
    if (unix_ms < lo) unix_ms = lo;
    if (unix_ms > hi) unix_ms = hi;
    int64_t secs = unix_ms >= 0 ? unix_ms / 1000 : (unix_ms - 999) / 1000;
    int ms = (int)(unix_ms - secs * 1000);
    time_t t = (time_t)secs;
    struct tm tm;
    gmtime_r(&t, &tm);
    char tmp[96]; /* gcc cannot prove the fields small */
    if (ms)
        snprintf(tmp, sizeof tmp, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                 tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ms);
    else
        snprintf(tmp, sizeof tmp, "%04d-%02d-%02dT%02d:%02d:%02dZ", tm.tm_year + 1900,
                 tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
    size_t n = strnlen(tmp, LM_TIME_STRLEN - 1);
    memcpy(out, tmp, n);
    out[n] = '\0';
}

int64_t lm_timefmt_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}
