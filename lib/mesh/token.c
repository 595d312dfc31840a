/* token.c — JWT minting and verification on libjwt. See token.h. */
#include "token.h"

#include "buf.h"
#include "config.h"
#include "http.h"
#include "trace.h"

#include <errno.h>
#include <fcntl.h>
#include <unistd.h>
#include <jwt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define LEEWAY_S 30

static jwt_alg_t to_jwt(lm_token_alg a)
{
    switch (a) {
    case LM_TOKEN_RS256:
        return JWT_ALG_RS256;
    case LM_TOKEN_ES256:
        return JWT_ALG_ES256;
    default:
        return JWT_ALG_HS256;
    }
}

bool lm_token_alg_parse(const char *s, lm_token_alg *out)
{
    if (!strcmp(s, "HS256"))
        *out = LM_TOKEN_HS256;
    else if (!strcmp(s, "RS256"))
        *out = LM_TOKEN_RS256;
    else if (!strcmp(s, "ES256"))
        *out = LM_TOKEN_ES256;
    else
        return false;
    return true;
}

int lm_token_key_secret(lm_token_key *k, const void *secret, size_t len, char *err, size_t errlen)
{
    memset(k, 0, sizeof *k);
    if (len < 32) {
        snprintf(err, errlen, "an HS256 secret must have at least 32 bytes (has %zu)", len);
        return -1;
    }
    k->alg = LM_TOKEN_HS256;
    k->sign_key = lm_xmalloc(len);
    memcpy(k->sign_key, secret, len);
    k->sign_len = len;
    k->verify_key = lm_xmalloc(len);
    memcpy(k->verify_key, secret, len);
    k->verify_len = len;
    return 0;
}

static unsigned char *read_file(const char *path, size_t *len, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "cannot read key file %s", path);
        return NULL;
    }
    lm_buf b = LM_BUF_INIT;
    char tmp[4096];
    size_t n;
    while ((n = fread(tmp, 1, sizeof tmp, f)) > 0 && b.len < (1 << 20))
        lm_buf_append(&b, tmp, n);
    fclose(f);
    if (!b.len || !strstr(lm_buf_cstr(&b), "-----BEGIN")) {
        lm_buf_free(&b);
        snprintf(err, errlen, "key file %s is not PEM", path);
        return NULL;
    }
    return (unsigned char *)lm_buf_steal(&b, len);
}

int lm_token_key_pem(lm_token_key *k, lm_token_alg alg, const char *priv, const char *pub,
                     char *err, size_t errlen)
{
    memset(k, 0, sizeof *k);
    k->alg = alg;
    if (alg == LM_TOKEN_HS256) {
        snprintf(err, errlen, "HS256 takes a secret, not key files");
        return -1;
    }
    if (priv && !(k->sign_key = read_file(priv, &k->sign_len, err, errlen))) return -1;
    if (!(k->verify_key = read_file(pub, &k->verify_len, err, errlen))) {
        lm_token_key_free(k);
        return -1;
    }
    /* prove the pair works: a token minted here must verify here */
    if (k->sign_key) {
        lm_token_claims c = {.iss = "self-test", .aud = "self-test", .exp = time(NULL) + 60};
        char *t = lm_token_mint(k, &c);
        lm_token_claims out;
        bool ok = t && lm_token_verify(k, t, "self-test", "self-test", &out) == LM_TOKEN_OK;
        free(t);
        if (!ok) {
            snprintf(err, errlen, "the key files do not form a working %s key pair",
                     alg == LM_TOKEN_RS256 ? "RS256" : "ES256");
            lm_token_key_free(k);
            return -1;
        }
    }
    return 0;
}

void lm_token_key_free(lm_token_key *k)
{
    if (k->sign_key) memset(k->sign_key, 0, k->sign_len);
    if (k->verify_key) memset(k->verify_key, 0, k->verify_len);
    free(k->sign_key);
    free(k->verify_key);
    memset(k, 0, sizeof *k);
}

char *lm_token_mint(const lm_token_key *k, const lm_token_claims *c)
{
    if (!k->sign_key) return NULL;
    jwt_t *jwt = NULL;
    char *out = NULL;
    if (jwt_new(&jwt) != 0) return NULL;
    long long iat = c->iat ? c->iat : (long long)time(NULL);
    if (jwt_add_grant(jwt, "iss", c->iss) == 0 && jwt_add_grant(jwt, "aud", c->aud) == 0 &&
        (!c->sub[0] || jwt_add_grant(jwt, "sub", c->sub) == 0) &&
        (!c->scope[0] || jwt_add_grant(jwt, "scope", c->scope) == 0) &&
        jwt_add_grant_int(jwt, "iat", (long)iat) == 0 &&
        jwt_add_grant_int(jwt, "exp", (long)c->exp) == 0 &&
        jwt_set_alg(jwt, to_jwt(k->alg), k->sign_key, (int)k->sign_len) == 0) {
        char *s = jwt_encode_str(jwt);
        if (s) {
            out = lm_xstrdup(s);
            free(s);
        }
    }
    jwt_free(jwt);
    return out;
}

static void copy_grant(jwt_t *jwt, const char *name, char *out, size_t len)
{
    const char *v = jwt_get_grant(jwt, name);
    snprintf(out, len, "%s", v ? v : "");
}

lm_token_result lm_token_verify(const lm_token_key *k, const char *token, const char *iss,
                                const char *aud, lm_token_claims *out)
{
    jwt_t *jwt = NULL;
    memset(out, 0, sizeof *out); /* defined on every return */
    if (!token || strlen(token) > 8192) return LM_TOKEN_MALFORMED;
    if (jwt_decode(&jwt, token, k->verify_key, (int)k->verify_len) != 0 || !jwt)
        return LM_TOKEN_MALFORMED;
    lm_token_result r = LM_TOKEN_OK;
    if (jwt_get_alg(jwt) != to_jwt(k->alg)) {
        r = LM_TOKEN_MALFORMED; /* pinned algorithm: no confusion, no "none" */
        goto done;
    }
    copy_grant(jwt, "iss", out->iss, sizeof out->iss);
    copy_grant(jwt, "sub", out->sub, sizeof out->sub);
    copy_grant(jwt, "aud", out->aud, sizeof out->aud);
    copy_grant(jwt, "scope", out->scope, sizeof out->scope);
    out->iat = jwt_get_grant_int(jwt, "iat");
    out->exp = jwt_get_grant_int(jwt, "exp");
    if (out->exp <= 0 || out->exp + LEEWAY_S < (long long)time(NULL))
        r = LM_TOKEN_EXPIRED;
    else if (iss && strcmp(out->iss, iss) != 0)
        r = LM_TOKEN_WRONG_ISSUER;
    else if (aud && strcmp(out->aud, aud) != 0)
        r = LM_TOKEN_WRONG_AUDIENCE;
done:
    jwt_free(jwt);
    return r;
}

const char *lm_token_result_str(lm_token_result r)
{
    switch (r) {
    case LM_TOKEN_OK:
        return "valid";
    case LM_TOKEN_MALFORMED:
        return "the token is malformed, badly signed or of another algorithm";
    case LM_TOKEN_EXPIRED:
        return "the token has expired";
    case LM_TOKEN_WRONG_ISSUER:
        return "the token was not issued by the gateway";
    case LM_TOKEN_WRONG_AUDIENCE:
        return "the token is for another service";
    }
    return "?";
}

bool lm_token_has_scope(const char *scope, const char *want)
{
    size_t n = strlen(want);
    for (const char *p = scope; (p = strstr(p, want)); p += n)
        if ((p == scope || p[-1] == ' ') && (p[n] == '\0' || p[n] == ' ')) return true;
    return false;
}

bool lm_token_scope_allows(const char *scope, int method_id)
{
    bool reading = lm_method_is_read(method_id) || method_id == LM_METHOD_OPTIONS;
    return lm_token_has_scope(scope, "write") || (reading && lm_token_has_scope(scope, "read"));
}

int lm_token_key_secret_file(lm_token_key *k, const char *path, bool create, char *err,
                             size_t errlen)
{
    memset(k, 0, sizeof *k);
    FILE *f = fopen(path, "rb");
    if (!f && errno == ENOENT && create) {
        static const char b64[] =
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        unsigned char raw[64];
        char text[80];
        if (lm_trace_random_bytes(raw, sizeof raw) != 0) {
            snprintf(err, errlen, "no randomness for a new secret");
            return -1;
        }
        for (size_t i = 0; i < 64; i++)
            text[i] = b64[raw[i] & 63]; /* 6 random bits each */
        text[64] = '\n';
        int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fd >= 0) {
            bool ok = write(fd, text, 65) == 65 && fsync(fd) == 0;
            close(fd);
            if (!ok) {
                unlink(path);
                snprintf(err, errlen, "cannot write %s", path);
                return -1;
            }
        }
        memset(raw, 0, sizeof raw);
        f = fopen(path, "rb"); /* created now, or by a process racing us */
    }
    if (!f) {
        snprintf(err, errlen, "cannot read %s: %s", path, strerror(errno));
        return -1;
    }
    char buf[4096];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    while (n && (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' '))
        n--;
    int rc = lm_token_key_secret(k, buf, n, err, errlen);
    memset(buf, 0, sizeof buf);
    return rc;
}

int lm_token_key_from_env(lm_token_key *k, lm_cfg *cfg, bool signer)
{
    static const char *const algs[] = {"HS256", "RS256", "ES256", NULL};
    int alg = lm_cfg_enum(cfg, "SERVICE_TOKEN_ALG", "HS256", algs);
    char err[256];
    memset(k, 0, sizeof *k);
    if (!lm_cfg_ok(cfg)) return -1;
    if (alg == 0) {
        const char *secret = lm_cfg_str(cfg, "SERVICE_TOKEN_SECRET", NULL);
        if (secret) {
            if (lm_token_key_secret(k, secret, strlen(secret), err, sizeof err) != 0) {
                lm_cfg_error(cfg, "SERVICE_TOKEN_SECRET", "%s", err);
                return -1;
            }
            return 0;
        }
        char def[1024];
        snprintf(def, sizeof def, "%s/service-token.key", lm_cfg_data_dir());
        const char *path = lm_cfg_str(cfg, "SERVICE_TOKEN_SECRET_FILE", def);
        /* the installation's shared secret: whichever process starts first creates it */
        if (lm_token_key_secret_file(k, path, true, err, sizeof err) != 0) {
            lm_cfg_error(cfg, "SERVICE_TOKEN_SECRET_FILE", "%s", err);
            return -1;
        }
        return 0;
    }
    const char *priv = lm_cfg_str(cfg, "SERVICE_TOKEN_PRIVATE_KEY_FILE", NULL);
    const char *pub = lm_cfg_str(cfg, "SERVICE_TOKEN_PUBLIC_KEY_FILE", NULL);
    if (!pub || (signer && !priv)) {
        lm_cfg_error(cfg, pub ? "SERVICE_TOKEN_PRIVATE_KEY_FILE" : "SERVICE_TOKEN_PUBLIC_KEY_FILE",
                     "is required with SERVICE_TOKEN_ALG=%s", algs[alg]);
        return -1;
    }
    if (lm_token_key_pem(k, alg == 1 ? LM_TOKEN_RS256 : LM_TOKEN_ES256, signer ? priv : NULL, pub,
                         err, sizeof err) != 0) {
        lm_cfg_error(cfg, "SERVICE_TOKEN_PUBLIC_KEY_FILE", "%s", err);
        return -1;
    }
    return 0;
}
