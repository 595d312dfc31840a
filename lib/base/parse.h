/* parse.h — the one parser of decimal integers, durations and sizes (lm_parse), for
 * configuration, path parameters, query parameters and header values alike.
 *
 * Every parser takes the whole NUL-terminated string: no leading or trailing space, no '+',
 * no other base, no overflow; on failure it returns false and leaves *out alone.
 * Threading: pure functions, any thread. */
#ifndef LM_PARSE_H
#define LM_PARSE_H

#include <stdbool.h>
#include <stdint.h>

/* [-]digits, within long long. */
bool lm_parse_int(const char *s, long long *out);
/* digits, within uint64_t. */
bool lm_parse_uint(const char *s, uint64_t *out);
/* Trims spaces and tabs at both ends of s, in place; returns the first kept character. */
char *lm_parse_trim(char *s);
/* A non-negative number with an optional unit: ms (default), s, m, h. */
bool lm_parse_duration_ms(const char *s, uint64_t *out);
/* A non-negative number of bytes with an optional unit: b, k/kb/kib, m/mb/mib, g/gb/gib
 * (all powers of 1024, any case). */
bool lm_parse_size(const char *s, uint64_t *out);

#endif
