/* sqlparam.h — the parameters of the neutral SQL dialect (db.h: "?", "?N" and ":name") turned
 * into PostgreSQL's $N when db_pg.c prepares a statement. String literals ('…') and quoted
 * names ("…") are copied as they are; "::" casts are not parameters.
 *
 * Rules (those of SQLite, so one text means the same on both backends): "?N" is parameter N;
 * "?" is one more than the highest number so far; ":name" gets the number of its first
 * occurrence, or one more than the highest so far.
 *
 * Ownership: the returned text and p->names belong to the caller (lm_sqlparam_free). Any
 * thread; no state. */
#ifndef LM_SQLPARAM_H
#define LM_SQLPARAM_H

#define LM_SQLPARAM_MAX 32

typedef struct lm_sqlparam {
    int n;                        /* parameters: the highest $N of the text */
    char *names[LM_SQLPARAM_MAX]; /* ":name" of $i+1 (owned), or NULL */
} lm_sqlparam;

/* The text of sql with $N parameters (owned), p filled in; NULL when a parameter number is
 * outside 1..LM_SQLPARAM_MAX (p then holds nothing). */
char *lm_sqlparam_translate(const char *sql, lm_sqlparam *p);
void lm_sqlparam_free(lm_sqlparam *p);

#endif
