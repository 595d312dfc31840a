/* refcheck.c — does a batch's article (and unit) exist? Asked of the articles service, the
 * owner of that data, through the runtime's HTTP client with a timeout; both lookups run in
 * parallel. When articles cannot answer (down, timeout, 5xx) the local replica of what it
 * said before decides (the seed's get_cached_articles), so known articles keep working
 * through an outage; an article unknown locally then is "unavailable" (503, nothing
 * written). A 404 from articles is authoritative: the article does not exist.
 *
 * Each lookup is a call under the process's policy for articles (lib/mesh/policy.h,
 * ARTICLES_*): its deadline is ARTICLES_TIMEOUT, or what is left of the caller's
 * X-Request-Timeout when that is less (none left: 504, nothing asked); a refused connection,
 * reset, timeout or bare gateway error is tried again, on another instance where there is
 * one, within the deadline and the retry budget; the service's circuit open, the replica
 * answers at once; over the bulkhead, the lookup fails fast into the replica.
 *
 * A per-worker memo keeps what this worker saw committed to the replica: units, which the
 * articles API never changes or deletes, are then not asked again; an article row equal to
 * the one committed less than a minute ago is not rewritten (articles is still asked: its
 * status may change). Only a committed write fills the memo, so the replica holds whatever
 * the memo claims. */
#include "charges.h"

#include "guard.h"
#include "outbound.h"
#include "policy.h"
#include "log.h"
#include "discovery.h"
#include "timefmt.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#define MEMO_UNITS      64
#define MEMO_ARTICLES   256 /* direct-mapped by id */
#define MEMO_ARTICLE_MS 60000

typedef struct memo_article {
    long long id, unit, days;
    char nr[72], status[16];
    int64_t written_ms;
} memo_article;

struct charges_memo {
    long long units[MEMO_UNITS];
    char kuerzel[MEMO_UNITS][24];
    int n_units;
    memo_article articles[MEMO_ARTICLES];
};

charges_memo *charges_memos_new(int n)
{
    return lm_xcalloc((size_t)n, sizeof(charges_memo));
}

void charges_memos_free(charges_memo *m)
{
    free(m);
}

static int memo_unit(const charges_memo *m, long long id)
{
    for (int i = 0; i < m->n_units; i++)
        if (m->units[i] == id) return i;
    return -1;
}

/* Does the replica hold exactly this article row, written less than a minute ago? */
static bool memo_article_current(const charges_memo *m, const charges_refs *r, int64_t now)
{
    const memo_article *a = &m->articles[r->artikel_id % MEMO_ARTICLES];
    return a->id == r->artikel_id && a->unit == r->article_unit && a->days == r->shelf_life_days &&
           !strcmp(a->nr, r->artikelnummer) && !strcmp(a->status, r->article_status) &&
           now - a->written_ms < MEMO_ARTICLE_MS;
}

void charges_refs_committed(charges_svc *svc, const lm_req *req, const charges_refs *r)
{
    charges_memo *m = &svc->memos[lm_req_worker_index(req)];
    if (!r->remembered) return;
    if (r->unit_fresh && r->unit_found && memo_unit(m, r->einheit_id) < 0 &&
        m->n_units < MEMO_UNITS) {
        m->units[m->n_units] = r->einheit_id;
        snprintf(m->kuerzel[m->n_units], sizeof m->kuerzel[0], "%s", r->unit_kuerzel);
        m->n_units++;
    }
    if (r->article_fresh && r->article_found && !r->article_replica_current) {
        memo_article *a = &m->articles[r->artikel_id % MEMO_ARTICLES];
        a->id = r->artikel_id;
        a->unit = r->article_unit;
        a->days = r->shelf_life_days;
        snprintf(a->nr, sizeof a->nr, "%s", r->artikelnummer);
        snprintf(a->status, sizeof a->status, "%s", r->article_status);
        a->written_ms = r->checked_ms;
    }
}

typedef struct refcheck {
    charges_svc *svc;
    lm_req *req;
    charges_refs *refs;
    charges_refs_done done;
    void *ctx;
    int pending;
    bool article_failed, unit_failed; /* articles did not answer authoritatively */
    bool open_circuit;    /* the breaker spared the calls: the replica was asked first */
    bool forced;          /* the replica could not answer: ask even through an open circuit */
    uint64_t deadline_ms; /* of the lookups (monotonic ms) */
} refcheck;

static void ask_both(refcheck *rc);

static void finish(refcheck *rc)
{
    charges_refs_done done = rc->done;
    charges_refs *refs = rc->refs;
    void *ctx = rc->ctx;
    free(rc);
    done(refs, ctx);
}

/* ---- replica fallback ---------------------------------------------------------------- */

static int replica_job(lm_db_conn *c, void *arg)
{
    refcheck *rc = arg;
    charges_refs *r = rc->refs;
    if (rc->article_failed) {
        lm_db_st *st = lm_db_stmt(c, "SELECT artikelnummer, einheit_id, mindesthaltbarkeit_tage,"
                                     " status FROM artikel_replica WHERE id = ?");
        if (!st) return LM_DB_EIO;
        lm_db_bind_int(st, 1, r->artikel_id);
        int s = lm_db_step(st);
        if (s == LM_DB_ROW) {
            r->article_found = true;
            snprintf(r->artikelnummer, sizeof r->artikelnummer, "%s", lm_db_col_text(st, 0));
            r->article_unit = lm_db_col_int(st, 1);
            r->shelf_life_days = lm_db_col_type(st, 2) == LM_DB_NULL ? -1 : lm_db_col_int(st, 2);
            snprintf(r->article_status, sizeof r->article_status, "%s", lm_db_col_text(st, 3));
        } else if (s == LM_DB_DONE) {
            r->unavailable = true;
        } else {
            return LM_DB_EIO;
        }
        lm_db_reset(st);
    }
    if (rc->unit_failed) {
        lm_db_st *st = lm_db_stmt(c, "SELECT kuerzel FROM einheit_replica WHERE id = ?");
        if (!st) return LM_DB_EIO;
        lm_db_bind_int(st, 1, r->einheit_id);
        int s = lm_db_step(st);
        if (s == LM_DB_ROW) {
            r->unit_found = true;
            snprintf(r->unit_kuerzel, sizeof r->unit_kuerzel, "%s", lm_db_col_text(st, 0));
        } else if (s == LM_DB_DONE) {
            r->unavailable = true;
        } else {
            return LM_DB_EIO;
        }
        lm_db_reset(st);
    }
    return 0;
}

static void replica_done(int status, void *arg)
{
    refcheck *rc = arg;
    if (status != 0) rc->refs->unavailable = true;
    if (rc->open_circuit && rc->refs->unavailable) {
        /* The circuit is open but the replica cannot answer: the request would be a 503, so
         * asking articles costs nothing more — and notices at once when it is back. */
        charges_refs *r = rc->refs;
        rc->open_circuit = false;
        rc->forced = true;
        rc->article_failed = rc->unit_failed = false;
        r->unavailable = false;
        r->article_found = r->artikel_id == 0;
        r->unit_found = r->einheit_id == 0;
        ask_both(rc);
        return;
    }
    finish(rc);
}

static void one_done(refcheck *rc)
{
    if (--rc->pending > 0) return;
    if (rc->article_failed || rc->unit_failed) {
        lm_log(LM_LOG_WARN,
               &(lm_log_ctx){.request_id = rc->req->request_id, .trace = &rc->req->trace},
               "articles service did not answer; validating against the local replica");
        lm_db_read(lm_store_port(rc->svc->store, lm_req_worker_index(rc->req)), replica_job,
                   replica_done, rc);
        return;
    }
    finish(rc);
}

/* ---- the two lookups ------------------------------------------------------------------ */

/* What an answer from articles says: the resource as a JSON object (200, caller decrefs),
 * or NULL with *fresh set (404: authoritative, it does not exist) or *failed set (no answer,
 * a 5xx, a malformed body: the replica decides). */
static json_t *answer(refcheck *rc, lm_client_err err, const lm_client_response *resp, bool *fresh,
                      bool *failed)
{
    (void)rc;
    json_t *doc = NULL;
    if (err == LM_CLIENT_OK && resp->status == 404) {
        *fresh = true;
    } else if (err == LM_CLIENT_OK && resp->status == 200 &&
               (doc = json_loadb(resp->body, resp->body_len, 0, NULL)) && json_is_object(doc)) {
        *fresh = true;
        return doc;
    } else {
        *failed = true;
    }
    json_decref(doc);
    return NULL;
}

static void on_article(lm_client_req *creq, lm_client_err err, const lm_client_response *resp,
                       void *ud)
{
    (void)creq;
    refcheck *rc = ud;
    charges_refs *r = rc->refs;
    json_t *doc = answer(rc, err, resp, &r->article_fresh, &rc->article_failed);
    if (doc) {
        const char *nr = json_string_value(json_object_get(doc, "artikelnummer"));
        const char *st = json_string_value(json_object_get(doc, "status"));
        json_t *days = json_object_get(doc, "mindesthaltbarkeit_tage");
        r->article_found = true;
        snprintf(r->artikelnummer, sizeof r->artikelnummer, "%s", nr ? nr : "");
        snprintf(r->article_status, sizeof r->article_status, "%s", st ? st : "aktiv");
        r->article_unit = json_integer_value(json_object_get(doc, "einheit_id"));
        r->shelf_life_days = json_is_integer(days) ? json_integer_value(days) : -1;
        r->article_replica_current =
            memo_article_current(&rc->svc->memos[lm_req_worker_index(rc->req)], r, r->checked_ms);
        json_decref(doc);
    }
    one_done(rc);
}

static void on_unit(lm_client_req *creq, lm_client_err err, const lm_client_response *resp,
                    void *ud)
{
    (void)creq;
    refcheck *rc = ud;
    charges_refs *r = rc->refs;
    json_t *doc = answer(rc, err, resp, &r->unit_fresh, &rc->unit_failed);
    if (doc) {
        const char *k = json_string_value(json_object_get(doc, "kuerzel"));
        r->unit_found = true;
        snprintf(r->unit_kuerzel, sizeof r->unit_kuerzel, "%s", k ? k : "");
        json_decref(doc);
    }
    one_done(rc);
}

/* ---- a lookup under the policy ---------------------------------------------------------- */

typedef struct lookup {
    refcheck *rc;
    lm_client_done_fn cb; /* on_article / on_unit, once, with the last try's result */
    lm_call call;
    lm_disc_set *set;  /* the instances of articles */
    bool own_set;      /* a reference from discovery, released when done (else the fixed set) */
    uv_timer_t *timer; /* the backoff before a retry */
    lm_next next;
    char path[2300];
} lookup;

static void lookup_timer_closed(uv_handle_t *h)
{
    free(h);
}

static void lookup_free(lookup *lk)
{
    if (lk->timer) uv_close((uv_handle_t *)lk->timer, lookup_timer_closed);
    if (lk->own_set) lm_disc_set_release(lk->set);
    free(lk);
}

static bool lookup_send(lookup *lk);
static void lookup_give_up(lookup *lk, uint64_t now);

static void lookup_backoff_over(uv_timer_t *t)
{
    lookup *lk = t->data;
    if (!lookup_send(lk)) lookup_give_up(lk, uv_now(lm_req_loop(lk->rc->req)));
}

static void lookup_done(lm_client_req *creq, lm_client_err err, const lm_client_response *resp,
                        void *ud)
{
    lookup *lk = ud;
    refcheck *rc = lk->rc;
    uint64_t now = uv_now(lm_req_loop(rc->req));
    lm_outcome o = lm_policy_classify(err, resp);
    lm_policy_try_done(&lk->call, o, now);
    uint64_t ra =
        resp ? lm_policy_parse_retry_after(lm_client_response_header(resp, "retry-after")) : 0;
    if (lm_policy_next(&lk->call, o, ra, false, true, lk->set, true, now, &lk->next)) {
        if (lk->next.delay_ms == 0) {
            if (!lookup_send(lk)) lookup_give_up(lk, now);
            return;
        }
        if (!lk->timer) {
            lk->timer = lm_xmalloc(sizeof *lk->timer);
            uv_timer_init(lm_req_loop(rc->req), lk->timer);
            lk->timer->data = lk;
        }
        uv_timer_start(lk->timer, lookup_backoff_over, lk->next.delay_ms, 0);
        return;
    }
    lm_policy_end(&lk->call, o, now);
    lm_client_done_fn cb = lk->cb;
    lookup_free(lk);
    cb(creq, err, resp, rc);
}

/* A retry that could not be sent (no time left, a closing client): the last outcome stands,
 * the replica decides. */
static void lookup_give_up(lookup *lk, uint64_t now)
{
    refcheck *rc = lk->rc;
    lm_policy_try_done(&lk->call, LM_OUT_IGNORED, now);
    lm_policy_end(&lk->call, LM_OUT_IGNORED, now);
    lm_client_done_fn cb = lk->cb;
    lookup_free(lk);
    cb(NULL, LM_CLIENT_ERR_RESPONSE_TIMEOUT, NULL, rc);
}

/* Sends the current try; false when it could not be sent. */
static bool lookup_send(lookup *lk)
{
    refcheck *rc = lk->rc;
    charges_svc *svc = rc->svc;
    lm_client *client = lm_workerclient_get(svc->articles_clients, lm_req_worker_index(rc->req));
    uint64_t now = uv_now(lm_req_loop(rc->req));
    const lm_disc_instance *in = lm_disc_set_get(lk->set, (size_t)lk->call.index);
    uint64_t try_ms = lm_call_try_timeout(&lk->call, now);
    const lm_policy_config *pc = lm_policy_get_config(svc->policy);
    char budget[24];
    snprintf(budget, sizeof budget, "%llu", (unsigned long long)lm_call_remaining(&lk->call, now));
    lm_header h[2 + LM_OUTBOUND_HEADERS] = {
        {.name = "Accept", .value = "application/json"},
        {.name = "X-Request-Timeout", .value = budget},
    };
    const char *tok = lm_guard_outbound_token(svc->guard, "articles_api", rc->req->caller, "read");
    lm_outbound ob;
    size_t n = lm_outbound_headers(&ob, rc->req, tok, h, 2);
    lm_client_opts o = {
        .method = "GET",
        .host = in->host,
        .port = in->port,
        .path = lk->path,
        .headers = h,
        .n_headers = n,
        .max_body = 64 * 1024,
        .connect_timeout_ms = pc->connect_timeout_ms < try_ms ? pc->connect_timeout_ms : try_ms,
        .response_timeout_ms = try_ms ? try_ms : 1,
        .on_done = lookup_done,
        .ud = lk,
        .span = &ob.span, /* reported as a client span when sampled */
    };
    return try_ms > 0 && client && lm_client_send(client, &o) != NULL;
}

/* Starts a lookup of path (under ARTICLES_URL's path when fixed). False when it cannot start
 * (no instance known, the circuit open, the bulkhead full): the replica decides. */
static bool ask(refcheck *rc, const char *path, lm_client_done_fn cb)
{
    charges_svc *svc = rc->svc;
    uint64_t now = uv_now(lm_req_loop(rc->req));
    lm_disc_set *set = svc->fixed_set;
    bool own = false;
    if (!svc->articles_fixed && svc->reg && lm_disc_get_mode(svc->reg) != LM_DISC_NONE) {
        set = lm_disc_instances(svc->reg, "articles_api");
        own = true;
    }
    if (!set || lm_disc_set_count(set) == 0) {
        if (set && own) lm_disc_set_release(set);
        return false; /* registry mode and no passing instance: articles is unavailable */
    }
    lookup *lk = lm_xcalloc(1, sizeof *lk);
    lk->rc = rc;
    lk->cb = cb;
    lk->set = set;
    lk->own_set = own;
    snprintf(lk->path, sizeof lk->path, "%s", path);
    lm_policy_verdict v = rc->forced
                              ? lm_policy_begin_forced(svc->policy, &lk->call, now, rc->deadline_ms)
                              : lm_policy_begin(svc->policy, &lk->call, now, rc->deadline_ms, true);
    if (v != LM_POLICY_GO) {
        if (v == LM_POLICY_OPEN) rc->open_circuit = true;
        lookup_free(lk);
        return false;
    }
    if (lm_policy_pick(&lk->call, set, true, now) < 0) {
        lm_policy_end(&lk->call, LM_OUT_IGNORED, now);
        lookup_free(lk);
        return false;
    }
    if (!lookup_send(lk)) {
        lm_policy_try_done(&lk->call, LM_OUT_IGNORED, now);
        lm_policy_end(&lk->call, LM_OUT_IGNORED, now);
        lookup_free(lk);
        return false;
    }
    return true;
}

void charges_check_refs(charges_svc *svc, lm_req *req, charges_refs *refs, charges_refs_done done,
                        void *ctx)
{
    refcheck *rc = lm_xcalloc(1, sizeof *rc);
    *rc = (refcheck){.svc = svc, .req = req, .refs = refs, .done = done, .ctx = ctx};
    refs->shelf_life_days = -1;
    refs->checked_ms = lm_timefmt_now_ms();
    uint64_t now = uv_now(lm_req_loop(req));
    rc->deadline_ms = now + lm_policy_get_config(svc->policy)->timeout_ms;
    uint64_t budget;
    if (lm_policy_parse_timeout(lm_req_header(req, "x-request-timeout"), &budget)) {
        uint64_t start = req->start_ns / 1000000u, until = start + budget;
        if (until <= now && (refs->artikel_id || refs->einheit_id)) {
            refs->deadline_spent = true; /* the caller has given up: ask nothing */
            finish(rc);
            return;
        }
        if (until < rc->deadline_ms) rc->deadline_ms = until;
    }
    if ((refs->artikel_id || refs->einheit_id) && !lm_policy_permits(svc->policy, now)) {
        /* circuit open: the replica answers what it can without waiting on articles */
        rc->open_circuit = true;
        rc->article_failed = refs->artikel_id != 0;
        rc->unit_failed = refs->einheit_id != 0;
        refs->article_found = refs->artikel_id == 0;
        refs->unit_found = refs->einheit_id == 0;
        lm_db_read(lm_store_port(svc->store, lm_req_worker_index(req)), replica_job, replica_done,
                   rc);
        return;
    }
    ask_both(rc);
}

void charges_refcheck_init(charges_svc *svc, lm_cfg *cfg)
{
    lm_policy_config pc;
    lm_policy_config_default(&pc, 2000, 2000, 30000);
    pc.breaker.half_open_calls = 1; /* one lookup that succeeds shows articles is back */
    pc.bulkhead = 256;
    lm_policy_config_env(&pc, cfg, "ARTICLES_");
    svc->policy = lm_policy_new("articles_api", &pc);
    char body[1400], err[128];
    snprintf(body, sizeof body,
             "[{\"Node\":{\"Address\":\"%s\"},\"Service\":{\"ID\":\"articles-%s-%d\","
             "\"Service\":\"articles_api\",\"Address\":\"%s\",\"Port\":%d},\"Checks\":[]}]",
             svc->articles.host, svc->articles.host, svc->articles.port, svc->articles.host,
             svc->articles.port);
    svc->fixed_set = lm_disc_set_from_health(body, strlen(body), err, sizeof err);
    if (!svc->fixed_set) lm_cfg_error(cfg, "ARTICLES_URL", "cannot be used: %s", err);
}

void charges_refcheck_free(charges_svc *svc)
{
    lm_policy_free(svc->policy);
    if (svc->fixed_set) lm_disc_set_release(svc->fixed_set);
}

/* Both lookups, in parallel (an id of 0 is not asked). */
static void ask_both(refcheck *rc)
{
    charges_svc *svc = rc->svc;
    charges_refs *refs = rc->refs;
    char path[2300];
    rc->pending = 2;
    /* an id of 0 means "not changing": nothing to check */
    snprintf(path, sizeof path, "%s/api/v1/article/%lld",
             svc->articles_fixed ? svc->articles.path : "", refs->artikel_id);
    if (refs->artikel_id == 0) {
        refs->article_found = true;
        rc->pending--;
    } else if (!ask(rc, path, on_article)) {
        rc->article_failed = true;
        rc->pending--;
    }
    snprintf(path, sizeof path, "%s/api/v1/unit/%lld",
             svc->articles_fixed ? svc->articles.path : "", refs->einheit_id);
    const charges_memo *memo = &svc->memos[lm_req_worker_index(rc->req)];
    int known = refs->einheit_id ? memo_unit(memo, refs->einheit_id) : -1;
    if (refs->einheit_id == 0) {
        refs->unit_found = true;
        rc->pending--;
    } else if (known >= 0) { /* committed to the replica before; units never change */
        refs->unit_found = true;
        snprintf(refs->unit_kuerzel, sizeof refs->unit_kuerzel, "%s", memo->kuerzel[known]);
        rc->pending--;
    } else if (!ask(rc, path, on_unit)) {
        rc->unit_failed = true;
        rc->pending--;
    }
    if (rc->pending == 0) {
        rc->pending = 1;
        one_done(rc);
    }
}

int charges_refs_remember(lm_db_conn *c, charges_refs *r)
{
    int64_t now = r->checked_ms;
    if (r->article_fresh && r->article_found && !r->article_replica_current &&
        charges_replica_put_article(c, r->artikel_id, r->artikelnummer, r->article_unit,
                                    r->shelf_life_days, r->article_status, now) != 0)
        return LM_DB_EIO;
    if (r->unit_fresh && r->unit_found &&
        charges_replica_put_unit(c, r->einheit_id, r->unit_kuerzel, now) != 0)
        return LM_DB_EIO;
    r->remembered = true; /* the job may still roll back: charges_refs_committed decides */
    return 0;
}
