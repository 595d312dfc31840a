/* clients.c — the gateway's API clients, from a JSON file:
 *   {"clients": [{"client_id": "dev", "secret_hash": "$argon2id$…",
 *                 "scope": "read write admin", "api_key_hashes": ["<hex BLAKE2b-256>"]}]}
 * Secrets are stored only as Argon2id hashes (verified off the loop, they are slow by
 * design); API keys, random and long, only as BLAKE2b hashes (fast, no salt needed for
 * 256-bit random keys). On first start the file is created with one client whose plain
 * credentials go to dev-client.json (mode 0600) for the newcomer — never a fixed default. */
#include "gateway.h"

#include "buf.h"
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

void gw_key_hash(const char *key, unsigned char out[32])
{
    crypto_generichash(out, 32, (const unsigned char *)key, strlen(key), NULL, 0);
}

void gw_random_token(char *out, size_t outlen, size_t bytes)
{
    unsigned char raw[48];
    randombytes_buf(raw, bytes);
    sodium_bin2base64(out, outlen, raw, bytes, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    sodium_memzero(raw, sizeof raw);
}

int gw_write_private(const char *path, const char *text, char *err, size_t errlen)
{
    char tmp[1100];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        snprintf(err, errlen, "cannot write %s: %s", tmp, strerror(errno));
        return -1;
    }
    size_t n = strlen(text);
    bool ok = write(fd, text, n) == (ssize_t)n && fsync(fd) == 0;
    close(fd);
    if (!ok || rename(tmp, path) != 0) {
        snprintf(err, errlen, "cannot write %s: %s", path, strerror(errno));
        unlink(tmp);
        return -1;
    }
    return 0;
}

static int create_first(const char *path, const char *dev_path, char *err, size_t errlen)
{
    char secret[80], api_key[80], hash[crypto_pwhash_STRBYTES];
    gw_random_token(secret, sizeof secret, 32);
    gw_random_token(api_key, sizeof api_key, 32);
    if (crypto_pwhash_str(hash, secret, strlen(secret), crypto_pwhash_OPSLIMIT_INTERACTIVE,
                          crypto_pwhash_MEMLIMIT_INTERACTIVE) != 0) {
        snprintf(err, errlen, "cannot hash the generated secret (out of memory?)");
        return -1;
    }
    unsigned char kh[32];
    char khex[65];
    gw_key_hash(api_key, kh);
    sodium_bin2hex(khex, sizeof khex, kh, sizeof kh);
    json_t *doc =
        json_pack("{s:[{s:s, s:s, s:s, s:[s]}]}", "clients", "client_id", "dev", "secret_hash",
                  hash, "scope", "read write admin", "api_key_hashes", khex);
    char *text = json_dumps(doc, JSON_INDENT(2));
    json_decref(doc);
    int rc = gw_write_private(path, text, err, errlen);
    free(text);
    if (rc) return rc;
    doc = json_pack("{s:s, s:s, s:s}", "client_id", "dev", "client_secret", secret, "api_key",
                    api_key);
    text = json_dumps(doc, JSON_INDENT(2));
    json_decref(doc);
    rc = gw_write_private(dev_path, text, err, errlen);
    sodium_memzero(text, strlen(text));
    free(text);
    sodium_memzero(secret, sizeof secret);
    sodium_memzero(api_key, sizeof api_key);
    if (rc == 0) lm_log_info("created client 'dev'; its credentials are in %s", dev_path);
    return rc;
}

/* "rate_limit": "100/s", "rate_limit_burst": 20, "service_rate_limits": {"charges_api": "5/s"}
 * (a per-service rate takes the client's burst, or its own count). */
static int parse_rates(gw_client *g, json_t *c, char *err, size_t errlen)
{
    json_t *rl = json_object_get(c, "rate_limit"), *burst = json_object_get(c, "rate_limit_burst");
    json_t *per = json_object_get(c, "service_rate_limits");
    if (rl && (!json_is_string(rl) || gw_rate_parse(json_string_value(rl), &g->rate) != 0)) {
        snprintf(err, errlen, "rate_limit must be a rate such as \"100/s\" or \"6000/m\"");
        return -1;
    }
    g->has_rate = rl != NULL;
    if (burst && (!json_is_integer(burst) || json_integer_value(burst) < 1 ||
                  json_integer_value(burst) > 100000000)) {
        snprintf(err, errlen, "rate_limit_burst must be an integer from 1 to 100000000");
        return -1;
    }
    if (burst && g->has_rate) g->rate.burst = (uint32_t)json_integer_value(burst);
    if (per && !json_is_object(per)) {
        snprintf(err, errlen, "service_rate_limits must be an object {\"service\": \"rate\"}");
        return -1;
    }
    g->service_rates = lm_xcalloc(json_object_size(per) + 1, sizeof *g->service_rates);
    const char *svc;
    json_t *v;
    json_object_foreach(per, svc, v)
    {
        gw_service_rate *sr = &g->service_rates[g->n_service_rates];
        if (strlen(svc) >= sizeof sr->service || !json_is_string(v) ||
            gw_rate_parse(json_string_value(v), &sr->rate) != 0) {
            snprintf(err, errlen, "service_rate_limits.%.64s must be a rate such as \"10/s\"", svc);
            return -1;
        }
        if (burst) sr->rate.burst = (uint32_t)json_integer_value(burst);
        snprintf(sr->service, sizeof sr->service, "%s", svc);
        g->n_service_rates++;
    }
    return 0;
}

int gw_clients_load(gw_clients *cs, const char *path, const char *dev_path, char *err,
                    size_t errlen)
{
    memset(cs, 0, sizeof *cs);
    if (sodium_init() < 0) {
        snprintf(err, errlen, "libsodium failed to initialise");
        return -1;
    }
    if (access(path, F_OK) != 0 && create_first(path, dev_path, err, errlen) != 0) return -1;
    json_error_t je;
    json_t *doc = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
    if (!doc) {
        snprintf(err, errlen, "%s: line %d: %s", path, je.line, je.text);
        return -1;
    }
    int rc = gw_clients_parse(cs, doc, path, err, errlen);
    json_decref(doc);
    if (rc == 0) lm_log_info("loaded %zu API client(s) from %s", cs->n, path);
    return rc;
}

int gw_clients_parse(gw_clients *cs, json_t *doc, const char *path, char *err, size_t errlen)
{
    memset(cs, 0, sizeof *cs);
    json_incref(doc); /* each error path below drops one reference */
    json_t *arr = json_object_get(doc, "clients");
    if (!json_is_array(arr)) {
        snprintf(err, errlen, "%s: expected {\"clients\": [...]}", path);
        json_decref(doc);
        return -1;
    }
    cs->items = lm_xcalloc(json_array_size(arr) + 1, sizeof *cs->items);
    size_t i;
    json_t *c;
    json_array_foreach(arr, i, c)
    {
        gw_client *g = &cs->items[cs->n];
        const char *id = json_string_value(json_object_get(c, "client_id"));
        const char *hash = json_string_value(json_object_get(c, "secret_hash"));
        const char *scope = json_string_value(json_object_get(c, "scope"));
        if (!id || !*id || strlen(id) >= sizeof g->id ||
            (hash && strlen(hash) >= sizeof g->secret_hash) ||
            (scope && strlen(scope) >= sizeof g->scope)) {
            snprintf(err, errlen, "%s: client %zu needs a client_id (and short fields)", path, i);
            json_decref(doc);
            gw_clients_free(cs);
            return -1;
        }
        snprintf(g->id, sizeof g->id, "%s", id);
        snprintf(g->secret_hash, sizeof g->secret_hash, "%s", hash ? hash : "");
        snprintf(g->scope, sizeof g->scope, "%s", scope ? scope : "read");
        if (parse_rates(g, c, err, errlen) != 0) {
            snprintf(err + strlen(err), errlen - strlen(err), " (%s, client %s)", path, id);
            json_decref(doc);
            cs->n++; /* g's rates are freed with the rest */
            gw_clients_free(cs);
            return -1;
        }
        json_t *keys = json_object_get(c, "api_key_hashes");
        g->api_keys = lm_xcalloc(json_array_size(keys) + 1, 32);
        size_t j;
        json_t *k;
        json_array_foreach(keys, j, k)
        {
            const char *hex = json_string_value(k);
            size_t bin_len = 0;
            if (!hex ||
                sodium_hex2bin(g->api_keys[g->n_api_keys], 32, hex, strlen(hex), NULL, &bin_len,
                               NULL) != 0 ||
                bin_len != 32) {
                snprintf(err, errlen, "%s: client %s: api_key_hashes must be 64 hex digits", path,
                         id);
                json_decref(doc);
                gw_clients_free(cs);
                return -1;
            }
            g->n_api_keys++;
        }
        for (size_t o = 0; o < cs->n; o++)
            if (!strcmp(cs->items[o].id, g->id)) {
                snprintf(err, errlen, "%s: client_id %s is given twice", path, id);
                json_decref(doc);
                cs->n++;
                gw_clients_free(cs);
                return -1;
            }
        cs->n++;
    }
    json_decref(doc);
    return 0;
}

void gw_clients_free(gw_clients *cs)
{
    for (size_t i = 0; i < cs->n; i++) {
        free(cs->items[i].api_keys);
        free(cs->items[i].service_rates);
    }
    free(cs->items);
    memset(cs, 0, sizeof *cs);
}

const gw_client *gw_clients_find(const gw_clients *cs, const char *id)
{
    for (size_t i = 0; i < cs->n; i++)
        if (strcmp(cs->items[i].id, id) == 0) return &cs->items[i];
    return NULL;
}

const gw_client *gw_clients_by_api_key(const gw_clients *cs, const char *key)
{
    unsigned char h[32];
    gw_key_hash(key, h);
    for (size_t i = 0; i < cs->n; i++)
        for (size_t j = 0; j < cs->items[i].n_api_keys; j++)
            if (sodium_memcmp(cs->items[i].api_keys[j], h, 32) == 0) return &cs->items[i];
    return NULL;
}

/* ---- snapshots --------------------------------------------------------------------------- */

void gw_clients_publish(gateway *gw, gw_clients *fresh)
{
    gw_clients *snap = lm_xcalloc(1, sizeof *snap);
    *snap = *fresh;
    atomic_init(&snap->refs, 1); /* the gateway's */
    pthread_mutex_lock(&gw->clients_mu);
    gw_clients *old = gw->clients_cur;
    snap->version = old ? old->version + 1 : 1;
    gw->clients_cur = snap;
    atomic_store(&gw->clients_version, snap->version);
    pthread_mutex_unlock(&gw->clients_mu);
    gw_clients_release(old);
}

gw_clients *gw_clients_acquire(gateway *gw)
{
    pthread_mutex_lock(&gw->clients_mu);
    gw_clients *cs = gw->clients_cur;
    if (cs) atomic_fetch_add(&cs->refs, 1);
    pthread_mutex_unlock(&gw->clients_mu);
    return cs;
}

void gw_clients_release(gw_clients *cs)
{
    if (cs && atomic_fetch_sub(&cs->refs, 1) == 1) {
        gw_clients_free(cs);
        free(cs);
    }
}

const gw_clients *gw_clients_now(gateway *gw, int worker)
{
    gw_worker *w = &gw->workers[worker];
    if (!w->clients ||
        w->clients->version != atomic_load_explicit(&gw->clients_version, memory_order_acquire)) {
        gw_clients *old = w->clients;
        w->clients = gw_clients_acquire(gw);
        gw_clients_release(old);
    }
    return w->clients;
}
