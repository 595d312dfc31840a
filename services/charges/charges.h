/* charges.h — the charges service (registry name charges_api): the seed's Chargen-API
 * (DESIGN 3.2). A batch names an article and a unit that live in the articles service;
 * refcheck.c verifies them there and keeps a local replica for when articles is down. */
#ifndef CHARGES_H
#define CHARGES_H

#include "envelope.h"
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "policy.h"
#include "client.h"
#include "url.h"
#include "rest.h"
#include "router.h"
#include "store.h"
#include "workerclient.h"

/* An article or unit id, wherever charges takes one (a field of a batch, the artikel_id
 * filter): 1 to CHARGES_REF_ID_MAX, the maximum openapi.json documents. */
#define CHARGES_REF_ID_MAX 9200000000000000000LL

struct lm_disc;
struct lm_guard;
typedef struct charges_memo charges_memo; /* refcheck.c */

typedef struct charges_svc {
    lm_store *store;
    struct lm_disc *reg;               /* discovery of articles_api, unless ARTICLES_URL fixes it */
    struct lm_guard *guard;            /* tokens for the calls to articles */
    bool articles_fixed;               /* ARTICLES_URL given: no discovery */
    lm_url articles;                   /* ARTICLES_URL, or the standalone default */
    lm_workerclient *articles_clients; /* one client per worker */
    lm_policy *policy;                 /* the calls to articles (ARTICLES_*), one per process */
    struct lm_disc_set *fixed_set;     /* ARTICLES_URL (or the default) as one instance */
    charges_memo *memos;               /* one per worker: what is known committed to the replica */
    int n_workers;
} charges_svc;

extern const lm_db_migrations charges_migrations;

void charge_routes(lm_router *r, charges_svc *svc);

/* What the articles service (or the replica) says about a batch's article and unit. */
typedef struct charges_refs {
    long long artikel_id, einheit_id;
    bool article_found, unit_found;
    bool article_fresh, unit_fresh; /* from the articles service now, not the replica */
    bool unavailable;               /* articles unreachable and not known locally */
    bool deadline_spent;            /* the caller's X-Request-Timeout ran out: 504 */
    char article_status[16];
    long long shelf_life_days; /* -1: none */
    char artikelnummer[72];
    long long article_unit;
    char unit_kuerzel[24];
    int64_t checked_ms;           /* when articles was asked: the replica's gesehen_ms */
    bool article_replica_current; /* the replica holds this article row (memo): no write */
    bool remembered;              /* charges_refs_remember ran in the write job */
} charges_refs;

typedef void (*charges_refs_done)(charges_refs *refs, void *ctx);

/* Checks artikel_id and einheit_id (0: not changing, skipped) against the articles service,
 * falling back to the local replica; calls done on the request's loop. refs is owned by the
 * caller. */
void charges_check_refs(charges_svc *svc, lm_req *req, charges_refs *refs, charges_refs_done done,
                        void *ctx);
/* In a write job: records what the articles service said in the replica (what refs says
 * is already there, per charges_refs_committed, is not written again). */
int charges_refs_remember(lm_db_conn *c, charges_refs *refs);
/* In a write job: the replica's row of an article (shelf_life_days < 0: none) or a unit,
 * inserted or replaced; 0 or LM_DB_EIO. Strings are copied. */
int charges_replica_put_article(lm_db_conn *c, long long id, const char *artikelnummer,
                                long long einheit_id, long long shelf_life_days, const char *status,
                                int64_t seen_ms);
int charges_replica_put_unit(lm_db_conn *c, long long id, const char *kuerzel, int64_t seen_ms);
/* artikel.* / einheit.* events into the replica (replica.c; lib/events/consumer.h's apply). */
int charges_apply_article_event(lm_db_conn *c, const lm_envelope *ev, void *ctx);
/* After that job committed (refs->remembered), on the request's loop: remembers what the
 * replica now holds, so
 * a known unit is not asked of articles again (units never change through its API) and an
 * unchanged article row is not rewritten for a minute. */
void charges_refs_committed(charges_svc *svc, const lm_req *req, const charges_refs *refs);
/* The policy of the calls to articles and the fixed instance (main, after configuration);
 * errors go into cfg. */
void charges_refcheck_init(charges_svc *svc, lm_cfg *cfg);
void charges_refcheck_free(charges_svc *svc);
/* Per-worker memos for svc->memos (main), and their release. */
charges_memo *charges_memos_new(int n_workers);
void charges_memos_free(charges_memo *m);

#endif
