/* fuzz_sqlparam.c — libFuzzer target for lm_sqlparam_translate (the SQL parameter translation
 * db_pg.c applies to every statement: "?", "?N", ":name" → $N).
 *
 * Oracle, beyond the sanitizers: the translation changes parameters and nothing else — the
 * input without its parameter tokens equals the output without its $N tokens (quoted text
 * copied byte for byte); every $N of the output is from 1 to the reported count, the highest
 * is the count, and a name is recorded exactly for the numbers ":name" tokens got; a refused
 * text has a parameter number outside 1..LM_SQLPARAM_MAX. */
#include <ctype.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sqlparam.h"

static void die(const char *what)
{
    fprintf(stderr, "fuzz_sqlparam: invariant violated: %s\n", what);
    abort();
}

/* s without parameter tokens (input: ?, ?N, :name; output: $N) outside quotes, into out;
 * for the output, the numbers of its $N tokens go to nums (at most cap). Returns the count
 * of tokens dropped. */
static size_t strip(const char *s, bool output, char *out, int *nums, size_t cap)
{
    size_t k = 0, n = 0;
    for (const char *c = s; *c;) {
        if (*c == '\'' || *c == '"') {
            const char *e = strchr(c + 1, *c);
            size_t len = e ? (size_t)(e - c) + 1 : strlen(c);
            memcpy(out + k, c, len);
            k += len;
            c += len;
            continue;
        }
        if (output && *c == '$' && isdigit((unsigned char)c[1])) {
            long v = 0;
            for (c++; isdigit((unsigned char)*c); c++)
                v = v < 1000 ? v * 10 + (*c - '0') : v;
            if (n < cap) nums[n] = (int)v;
            n++;
            continue;
        }
        if (!output && *c == '?') {
            for (c++; isdigit((unsigned char)*c); c++)
                ;
            n++;
            continue;
        }
        if (!output && *c == ':' && (isalpha((unsigned char)c[1]) || c[1] == '_') &&
            (c == s || c[-1] != ':')) {
            for (c++; isalnum((unsigned char)*c) || *c == '_'; c++)
                ;
            n++;
            continue;
        }
        out[k++] = *c++;
    }
    out[k] = '\0';
    return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 4096) return 0;
    char *sql = malloc(size + 1);
    memcpy(sql, data, size);
    sql[size] = '\0'; /* an embedded NUL ends the text, as in C */
    lm_sqlparam p;
    char *pg = lm_sqlparam_translate(sql, &p);
    if (!pg) {
        for (int i = 0; i < LM_SQLPARAM_MAX; i++)
            if (p.names[i]) die("a refused text left names behind");
        free(sql);
        return 0;
    }
    size_t in_len = strlen(sql), out_len = strlen(pg);
    char *a = malloc(in_len + 1), *b = malloc(out_len + 1);
    int *nums = malloc(sizeof(int) * (out_len + 1));
    size_t n_in = strip(sql, false, a, NULL, 0);
    size_t n_out = strip(pg, true, b, nums, out_len + 1);
    /* a "$7" in the input outside quotes reads as a parameter in the output */
    if (strcmp(a, b) != 0 && strstr(sql, "$") == NULL) die("text other than parameters changed");
    if (!strstr(sql, "$")) {
        if (n_in != n_out) die("parameter count differs");
        int highest = 0;
        for (size_t i = 0; i < n_out; i++) {
            if (nums[i] < 1 || nums[i] > p.n) die("$N outside 1..n");
            if (nums[i] > highest) highest = nums[i];
        }
        if (highest != p.n) die("n is not the highest $N");
    }
    if (p.n < 0 || p.n > LM_SQLPARAM_MAX) die("n out of range");
    for (int i = 0; i < LM_SQLPARAM_MAX; i++) {
        if (!p.names[i]) continue;
        if (i >= p.n) die("a name beyond n");
        if (p.names[i][0] != ':') die("a name without its colon");
        char tok[8];
        snprintf(tok, sizeof tok, "$%d", i + 1);
        if (!strstr(pg, tok)) die("a named parameter that is not in the text");
    }
    lm_sqlparam_free(&p);
    free(nums);
    free(a);
    free(b);
    free(pg);
    free(sql);
    return 0;
}
