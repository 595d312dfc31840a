/* token.h — service tokens: short-lived JWTs the gateway mints per target service and every
 * service verifies (lm_token; DESIGN 3.5). HS256 with a shared secret by default, RS256 or
 * ES256 with a key pair in production (the gateway holds the private key, services only the
 * public one).
 *
 * Verification pins the algorithm configured here: a token whose header names another
 * algorithm is refused even if its signature would check under that algorithm (the classic
 * HS256-with-a-public-key confusion), and "none" never passes.
 *
 * Ownership: an lm_token_key owns its key bytes. Threading: a loaded key is read-only and
 * may be used from any thread; mint and verify allocate per call. */
#ifndef LM_TOKEN_H
#define LM_TOKEN_H

#include <stdbool.h>
#include <stddef.h>

typedef enum { LM_TOKEN_HS256, LM_TOKEN_RS256, LM_TOKEN_ES256 } lm_token_alg;

typedef struct lm_token_key {
    lm_token_alg alg;
    unsigned char *sign_key; /* secret or private key PEM; NULL: verify only */
    size_t sign_len;
    unsigned char *verify_key; /* secret or public key PEM */
    size_t verify_len;
} lm_token_key;

typedef struct lm_token_claims {
    char iss[64];
    char sub[128];
    char aud[64];
    char scope[128]; /* space-separated: "read write" */
    long long iat, exp;
} lm_token_claims;

/* Parses "HS256" | "RS256" | "ES256". */
bool lm_token_alg_parse(const char *s, lm_token_alg *out);
/* HS256: secret (>= 32 bytes). Copies. */
int lm_token_key_secret(lm_token_key *k, const void *secret, size_t len, char *err, size_t errlen);
/* RS256/ES256: PEM files; private_path may be NULL for a verifying-only key. */
int lm_token_key_pem(lm_token_key *k, lm_token_alg alg, const char *private_path,
                     const char *public_path, char *err, size_t errlen);
void lm_token_key_free(lm_token_key *k);
/* HS256 from a secret file; with create, a missing file is made (384 random bits, base64url,
 * mode 0600) so the processes of one installation share it without a fixed default. */
int lm_token_key_secret_file(lm_token_key *k, const char *path, bool create, char *err,
                             size_t errlen);

/* The service-token key from the environment, as every process reads it:
 *   SERVICE_TOKEN_ALG               HS256 (default) | RS256 | ES256
 *   SERVICE_TOKEN_SECRET            HS256 secret (>= 32 bytes), or
 *   SERVICE_TOKEN_SECRET_FILE       a file holding it (default <data dir>/service-token.key)
 *   SERVICE_TOKEN_PRIVATE_KEY_FILE  RS256/ES256, only the gateway (signs)
 *   SERVICE_TOKEN_PUBLIC_KEY_FILE   RS256/ES256 (verifies)
 * signer: RS256/ES256 needs the private key too. The default HS256 secret file is created
 * by whichever process of the installation starts first.
 * Errors are recorded in cfg. */
struct lm_cfg;
int lm_token_key_from_env(lm_token_key *k, struct lm_cfg *cfg, bool signer);

/* Signed compact JWT (caller frees), NULL if the key cannot sign. */
char *lm_token_mint(const lm_token_key *k, const lm_token_claims *c);

typedef enum {
    LM_TOKEN_OK = 0,
    LM_TOKEN_MALFORMED,     /* not a JWT, bad signature, wrong algorithm: 401 */
    LM_TOKEN_EXPIRED,       /* exp in the past (30 s leeway): 401 */
    LM_TOKEN_WRONG_ISSUER,  /* 401 */
    LM_TOKEN_WRONG_AUDIENCE /* a valid token for another service: 403 */
} lm_token_result;

/* Verifies signature, algorithm, exp, iss and aud; fills out on success. */
lm_token_result lm_token_verify(const lm_token_key *k, const char *token, const char *iss,
                                const char *aud, lm_token_claims *out);
const char *lm_token_result_str(lm_token_result r);
/* Does the space-separated scope list contain want? */
bool lm_token_has_scope(const char *scope, const char *want);
/* May a token with this scope make a request with this method (lm_method)? Reads (GET,
 * HEAD, OPTIONS) need "read" or "write", everything else "write". */
bool lm_token_scope_allows(const char *scope, int method_id);

#endif
