/* buf.h — growable byte buffer (lm_buf).
 *
 * The one dynamic byte container of the runtime: request arenas, output queues, JSON text.
 * A buffer owns its memory; lm_buf_free() releases it. Growth doubles, so appends are
 * amortised O(1). Not thread-safe: a buffer belongs to whoever holds it.
 * Allocation failure aborts the process (lm_xmalloc): a service that cannot allocate a few
 * kilobytes cannot answer correctly anyway, and half-handled OOM paths are worse. */
#ifndef LM_BUF_H
#define LM_BUF_H

#include <stdarg.h>
#include <stddef.h>
#include <string.h>

typedef struct lm_buf {
    char *data; /* owned; NUL-terminated when len > 0 through lm_buf_cstr() */
    size_t len;
    size_t cap;
} lm_buf;

#define LM_BUF_INIT                                                                                \
    {                                                                                              \
        NULL, 0, 0                                                                                 \
    }

void *lm_xmalloc(size_t n);
void *lm_xcalloc(size_t count, size_t n);
void *lm_xrealloc(void *p, size_t n);
char *lm_xstrdup(const char *s);
char *lm_xstrndup(const char *s, size_t n);

void lm_buf_grow(lm_buf *b, size_t extra); /* slow path of lm_buf_reserve */
static inline void lm_buf_reserve(lm_buf *b, size_t extra)
{
    if (b->len + extra + 1 > b->cap) lm_buf_grow(b, extra);
}
static inline void lm_buf_append(lm_buf *b, const void *data, size_t n)
{
    if (n == 0) return;
    lm_buf_reserve(b, n);
    memcpy(b->data + b->len, data, n);
    b->len += n;
}
static inline void lm_buf_append_str(lm_buf *b, const char *s)
{
    lm_buf_append(b, s, strlen(s));
}
static inline void lm_buf_append_char(lm_buf *b, char c)
{
    lm_buf_reserve(b, 1);
    b->data[b->len++] = c;
}
#define LM_BUF_APPEND_LIT(b, lit) lm_buf_append((b), (lit), sizeof(lit) - 1)
void lm_buf_append_u64(lm_buf *b, unsigned long long v);
void lm_buf_printf(lm_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* A one-line error into a caller's fixed buffer err[errlen] (err may be NULL): for parsers
 * that return their reason. Returns -1, so a parser can `return lm_buf_errf(…)`. */
int lm_buf_errf(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void lm_buf_vprintf(lm_buf *b, const char *fmt, va_list ap)
    __attribute__((format(printf, 2, 0))); /* clang's -Wformat-nonliteral needs it */
/* Appends s as the inside of a JSON string (no surrounding quotes), escaping as RFC 8259
 * requires; invalid UTF-8 bytes become U+FFFD so the output is always valid JSON. */
void lm_buf_append_json_escaped(lm_buf *b, const char *s, size_t n);
/* Removes the first n bytes (n <= len). */
void lm_buf_consume(lm_buf *b, size_t n);
/* Returns a NUL-terminated view of the contents (valid until the next change). */
const char *lm_buf_cstr(lm_buf *b);
void lm_buf_reset(lm_buf *b); /* len = 0, keeps memory */
void lm_buf_free(lm_buf *b);  /* releases memory, back to LM_BUF_INIT */
/* Hands the memory to the caller (NUL-terminated, caller frees), leaves b empty. */
char *lm_buf_steal(lm_buf *b, size_t *len);

#endif
