/* client_pool.c — per-origin pools (lm_client_pool): origins, their LIFO stacks of idle
 * keep-alive connections, their FIFO wait queues, and the client's idle and queue timers.
 * See client_impl.h. */
#include "client_impl.h"

/* ---- origins ---------------------------------------------------------------------------- */

origin *lm_client_pool_origin_get(lm_client *c, const char *host, size_t host_len, int port)
{
    for (origin *o = c->origins; o; o = o->next)
        if (o->port == port && strlen(o->host) == host_len &&
            strncasecmp(o->host, host, host_len) == 0)
            return o;
    origin *o = lm_xcalloc(1, sizeof *o);
    o->c = c;
    o->host = lm_xstrndup(host, host_len);
    o->port = port;
    bool v6 = strchr(o->host, ':') != NULL;
    lm_buf hh = LM_BUF_INIT;
    lm_buf_printf(&hh, v6 ? "[%s]" : "%s", o->host);
    if (port != 80) lm_buf_printf(&hh, ":%d", port);
    o->host_hdr = lm_buf_steal(&hh, NULL);
    struct sockaddr_in *a4 = (struct sockaddr_in *)&o->addr;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&o->addr;
    if (uv_ip4_addr(o->host, port, a4) == 0 || uv_ip6_addr(o->host, port, a6) == 0)
        o->numeric = true;
    o->next = c->origins;
    c->origins = o;
    return o;
}

void lm_client_pool_origin_unref(origin *o)
{
    if (--o->refs) return;
    lm_client *c = o->c;
    for (origin **pp = &c->origins; *pp; pp = &(*pp)->next) {
        if (*pp == o) {
            *pp = o->next;
            break;
        }
    }
    free(o->host);
    free(o->host_hdr);
    free(o);
}

static void queue_timer_arm(lm_client *c, uint64_t deadline);

void lm_client_pool_enqueue(origin *o, creq *r)
{
    lm_client *c = o->c;
    r->state = R_QUEUED;
    r->queue_deadline =
        r->queue_to == LM_CLIENT_NO_TIMEOUT ? UINT64_MAX : uv_now(c->loop) + r->queue_to;
    q_append(&o->q_head, &o->q_tail, r);
    o->n_queued++;
    STAT_ADD(c, queued, 1);
    queue_timer_arm(c, r->queue_deadline);
}

void lm_client_pool_dequeue(creq *r)
{
    origin *o = r->o;
    q_remove(&o->q_head, &o->q_tail, r);
    o->n_queued--;
    STAT_SUB(r->c, queued, 1);
    r->state = R_NEW;
}

void lm_client_pool_idle_remove(cconn *k)
{
    origin *o = k->o;
    lm_client *c = k->c;
    if (k->o_prev)
        k->o_prev->o_next = k->o_next;
    else
        o->idle = k->o_next;
    if (k->o_next) k->o_next->o_prev = k->o_prev;
    if (k->g_prev)
        k->g_prev->g_next = k->g_next;
    else
        c->idle_head = k->g_next;
    if (k->g_next)
        k->g_next->g_prev = k->g_prev;
    else
        c->idle_tail = k->g_prev;
    k->o_next = k->o_prev = k->g_next = k->g_prev = NULL;
    o->n_idle--;
    STAT_SUB(c, conns_idle, 1);
}

/* Gives queued requests the free connections and slots of their origin. Never calls back. */
void lm_client_pool_origin_pump(origin *o)
{
    lm_client *c = o->c;
    while (o->q_head && !c->closing) {
        creq *r = o->q_head;
        if (o->idle) {
            cconn *k = o->idle;
            lm_client_pool_idle_remove(k);
            lm_client_pool_dequeue(r);
            lm_client_conn_dispatch(k, r);
        } else if (o->n_conns < c->cfg.max_conns_per_origin) {
            lm_client_pool_dequeue(r);
            lm_client_conn_new(o, r);
        } else {
            break;
        }
    }
}

/* ---- timers ----------------------------------------------------------------------------- */

static void on_queue_timer(uv_timer_t *t)
{
    lm_client *c = t->data;
    uint64_t now = uv_now(c->loop), next = UINT64_MAX;
    c->queue_due = UINT64_MAX;
    for (origin *o = c->origins; o; o = o->next) {
        creq *rn;
        for (creq *r = o->q_head; r; r = rn) {
            rn = r->q_next;
            if (r->queue_deadline <= now) {
                lm_client_pool_dequeue(r);
                lm_client_req_fail_later(r, LM_CLIENT_ERR_QUEUE_TIMEOUT);
            } else if (r->queue_deadline < next) {
                next = r->queue_deadline;
            }
        }
    }
    if (next != UINT64_MAX) queue_timer_arm(c, next);
}

static void queue_timer_arm(lm_client *c, uint64_t deadline)
{
    if (deadline == UINT64_MAX || deadline >= c->queue_due || c->closing) return;
    uint64_t now = uv_now(c->loop);
    c->queue_due = deadline;
    uv_timer_start(&c->queue_timer, on_queue_timer, deadline > now ? deadline - now : 0, 0);
}

void lm_client_pool_on_idle_timer(uv_timer_t *t)
{
    lm_client *c = t->data;
    uint64_t now = uv_now(c->loop);
    while (c->idle_head && now - c->idle_head->idle_since >= c->cfg.idle_timeout_ms)
        lm_client_conn_close(c->idle_head, true);
    if (c->idle_head && !c->closing)
        uv_timer_start(&c->idle_timer, lm_client_pool_on_idle_timer,
                       c->idle_head->idle_since + c->cfg.idle_timeout_ms - now, 0);
}
