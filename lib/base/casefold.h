/* casefold.h — case-insensitive text matching beyond ASCII (lm_casefold).
 *
 * SQLite's lower() folds ASCII only, so "ÄPFEL" would not find "äpfel". lm_casefold maps
 * every code point of UTF-8 text to its simple lowercase form (Unicode's one-to-one mapping,
 * from the C library's C.UTF-8 tables: Ä→ä, Σ→σ, ẞ→ß); bytes that are not valid UTF-8 pass
 * through unchanged. The data layer gives every SQLite connection the SQL function
 * casefold(text) built on it (db_sqlite.c); PostgreSQL's lower() uses the same C library
 * tables in a C.UTF-8 database (db_pg.c).
 *
 * If the C.UTF-8 locale is missing, folding falls back to ASCII (what lower() does).
 * Threading: any thread; the locale is created once. */
#ifndef LM_CASEFOLD_H
#define LM_CASEFOLD_H

#include <stddef.h>

#include "buf.h"

/* Appends the folded form of s[0..n) to out. */
void lm_casefold(const char *s, size_t n, lm_buf *out);

#endif
