/* sqlparam.c — "?", "?N", ":name" → $N. See sqlparam.h. */
#include "sqlparam.h"

#include "buf.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

void lm_sqlparam_free(lm_sqlparam *p)
{
    for (int i = 0; i < LM_SQLPARAM_MAX; i++) {
        free(p->names[i]);
        p->names[i] = NULL;
    }
    p->n = 0;
}

/* "?N": N as an int, or 0 when it is out of range (too many digits included) */
static int number(const char **c)
{
    long v = 0;
    while (isdigit((unsigned char)**c)) {
        if (v <= LM_SQLPARAM_MAX) v = v * 10 + (**c - '0');
        (*c)++;
    }
    return v >= 1 && v <= LM_SQLPARAM_MAX ? (int)v : 0;
}

char *lm_sqlparam_translate(const char *sql, lm_sqlparam *p)
{
    memset(p, 0, sizeof *p);
    lm_buf b = LM_BUF_INIT;
    int max = 0;
    for (const char *c = sql; *c;) {
        if (*c == '\'' || *c == '"') { /* to the closing quote; '' inside is two literals */
            const char *e = strchr(c + 1, *c);
            size_t n = e ? (size_t)(e - c) + 1 : strlen(c);
            lm_buf_append(&b, c, n);
            c += n;
            continue;
        }
        int idx = 0;
        if (*c == '?') {
            c++;
            idx = isdigit((unsigned char)*c) ? number(&c) : max + 1;
        } else if (*c == ':' && (isalpha((unsigned char)c[1]) || c[1] == '_') &&
                   (c == sql || c[-1] != ':')) {
            const char *e = c + 1;
            while (isalnum((unsigned char)*e) || *e == '_')
                e++;
            size_t n = (size_t)(e - c);
            for (int i = 0; i < max && !idx; i++)
                if (p->names[i] && strlen(p->names[i]) == n && !strncmp(p->names[i], c, n))
                    idx = i + 1;
            if (!idx && max < LM_SQLPARAM_MAX) {
                idx = max + 1;
                p->names[idx - 1] = lm_xstrndup(c, n);
            }
            c = e;
        } else {
            lm_buf_append_char(&b, *c++);
            continue;
        }
        if (idx < 1 || idx > LM_SQLPARAM_MAX) {
            lm_buf_free(&b);
            lm_sqlparam_free(p);
            return NULL;
        }
        if (idx > max) max = idx;
        lm_buf_printf(&b, "$%d", idx);
    }
    p->n = max;
    return lm_buf_steal(&b, NULL);
}
