/* timefmt.h — RFC 3339 timestamps and dates (lm_timefmt).
 *
 * The APIs carry times as RFC 3339 strings (DESIGN 3.2). Internally a time is milliseconds
 * since the Unix epoch, UTC. Parsing is strict: "2026-11-24T10:00:00Z",
 * "2026-11-24T10:00:00.123+01:00"; a plain date "2026-11-24" is accepted where the caller
 * allows it (midnight UTC). Calendar validity is checked (no 2026-02-30). */
#ifndef LM_TIMEFMT_H
#define LM_TIMEFMT_H

#include <stdbool.h>
#include <stdint.h>

#define LM_TIME_STRLEN 32

/* Parses an RFC 3339 date-time (or, with allow_date, a full-date). */
bool lm_timefmt_parse(const char *s, bool allow_date, int64_t *unix_ms);
/* Formats as "2026-11-24T10:00:00Z" or with ".123" when there are milliseconds. */
void lm_timefmt_format(int64_t unix_ms, char out[LM_TIME_STRLEN]);
int64_t lm_timefmt_now_ms(void);

#endif
