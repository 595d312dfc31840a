/* state.c — the registry's catalog and its rules. See state.h. */
#include "state.h"

#include "buf.h"
#include "log.h"
#include "trace.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ---- set-up ---------------------------------------------------------------------------- */

void rg_state_init(rg_state *st, const char *node_name, const char *node_address,
                   const char *node_id)
{
    memset(st, 0, sizeof *st);
    st->index = st->catalog_index = 1;
    snprintf(st->node_name, sizeof st->node_name, "%s", node_name);
    snprintf(st->node_address, sizeof st->node_address, "%s", node_address);
    snprintf(st->datacenter, sizeof st->datacenter, "dc1");
    if (node_id) {
        snprintf(st->node_id, sizeof st->node_id, "%s", node_id);
    } else {
        unsigned char r[16] = {0};
        if (lm_trace_random_bytes(r, sizeof r) != 0)
            for (size_t i = 0; i < sizeof r; i += 8) {
                uint64_t x = lm_trace_rand64();
                memcpy(r + i, &x, 8);
            }
        r[6] = (unsigned char)((r[6] & 0x0f) | 0x40); /* UUID v4 */
        r[8] = (unsigned char)((r[8] & 0x3f) | 0x80);
        snprintf(st->node_id, sizeof st->node_id,
                 "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", r[0], r[1],
                 r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9], r[10], r[11], r[12], r[13], r[14],
                 r[15]);
    }
}

static void check_free(rg_check *c)
{
    lm_consul_check_free(&c->def);
    free(c->output);
    free(c);
}

static void service_free(rg_state *st, rg_service *s, bool hooks)
{
    for (size_t i = 0; i < s->n_checks; i++) {
        if (hooks && st->hooks.check_removed) st->hooks.check_removed(s->checks[i], st->hooks.ctx);
        check_free(s->checks[i]);
    }
    free(s->checks);
    lm_consul_service_free(&s->def);
    free(s);
}

void rg_state_free(rg_state *st)
{
    for (size_t i = 0; i < st->n_svcs; i++)
        service_free(st, st->svcs[i], true);
    free(st->svcs);
    for (size_t i = 0; i < st->n_names; i++)
        free(st->names[i].name);
    free(st->names);
    memset(st, 0, sizeof *st);
}

void rg_state_set_hooks(rg_state *st, const rg_hooks *hooks)
{
    st->hooks = *hooks;
}

/* ---- lookups --------------------------------------------------------------------------- */

/* Position of id in the sorted array, or where it would go (*found false). */
static size_t svc_pos(const rg_state *st, const char *id, bool *found)
{
    size_t lo = 0, hi = st->n_svcs;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int c = strcmp(st->svcs[mid]->def.id, id);
        if (c == 0) {
            *found = true;
            return mid;
        }
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    *found = false;
    return lo;
}

rg_service *rg_state_service(const rg_state *st, const char *id)
{
    bool found;
    size_t i = svc_pos(st, id, &found);
    return found ? st->svcs[i] : NULL;
}

static rg_check *check_in(const rg_service *s, const char *check_id)
{
    for (size_t i = 0; i < s->n_checks; i++)
        if (strcmp(s->checks[i]->def.id, check_id) == 0) return s->checks[i];
    return NULL;
}

rg_check *rg_state_check(const rg_state *st, const char *check_id)
{
    /* the common case, "service:<ID>[:n]", is found through its service */
    if (strncmp(check_id, "service:", 8) == 0) {
        const char *id = check_id + 8;
        rg_service *s = rg_state_service(st, id);
        rg_check *c = s ? check_in(s, check_id) : NULL;
        if (c) return c;
        const char *colon = strrchr(id, ':');
        if (colon) {
            char *base = lm_xstrndup(id, (size_t)(colon - id));
            s = rg_state_service(st, base);
            free(base);
            c = s ? check_in(s, check_id) : NULL;
            if (c) return c;
        }
    }
    for (size_t i = 0; i < st->n_svcs; i++) {
        rg_check *c = check_in(st->svcs[i], check_id);
        if (c) return c;
    }
    return NULL;
}

uint64_t rg_state_name_index(const rg_state *st, const char *name)
{
    for (size_t i = 0; i < st->n_names; i++)
        if (strcmp(st->names[i].name, name) == 0) return st->names[i].index;
    return 1; /* never seen: a watcher blocks until the name appears */
}

static void touch_name(rg_state *st, const char *name)
{
    for (size_t i = 0; i < st->n_names; i++)
        if (strcmp(st->names[i].name, name) == 0) {
            st->names[i].index = st->index;
            return;
        }
    if (st->n_names == st->cap_names) {
        st->cap_names = st->cap_names ? st->cap_names * 2 : 16;
        st->names = lm_xrealloc(st->names, st->cap_names * sizeof *st->names);
    }
    st->names[st->n_names].name = lm_xstrdup(name);
    st->names[st->n_names++].index = st->index;
}

bool rg_service_passing(const rg_service *s)
{
    for (size_t i = 0; i < s->n_checks; i++)
        if (s->checks[i]->status != LM_CONSUL_PASSING) return false;
    return true;
}

/* ---- changes --------------------------------------------------------------------------- */

/* A status change of c: new index, the name's index, the critical clock. */
static void set_status(rg_state *st, rg_check *c, lm_consul_status status, int64_t now)
{
    if (c->status == status) return;
    c->status = status;
    c->critical_since = status == LM_CONSUL_CRITICAL ? now : -1;
    c->modify_index = ++st->index; /* the service's own ModifyIndex stays: not its definition */
    touch_name(st, c->svc->def.name);
    st->dirty = true;
}

static void set_output(rg_check *c, const char *output)
{
    free(c->output);
    c->output = lm_xstrdup(output ? output : "");
}

static void svc_remove_at(rg_state *st, size_t i, bool hooks)
{
    rg_service *s = st->svcs[i];
    memmove(&st->svcs[i], &st->svcs[i + 1], (st->n_svcs - i - 1) * sizeof *st->svcs);
    st->n_svcs--;
    service_free(st, s, hooks);
}

static bool services_equal(const rg_service *old, const lm_consul_service *def)
{
    lm_consul_service a = old->def; /* shallow views without checks */
    lm_consul_service b = *def;
    a.n_checks = b.n_checks = 0;
    if (!lm_consul_service_equal(&a, &b) || old->n_checks != def->n_checks) return false;
    for (size_t i = 0; i < def->n_checks; i++)
        if (!lm_consul_check_equal(&old->checks[i]->def, &def->checks[i])) return false;
    return true;
}

int rg_state_register(rg_state *st, lm_consul_service *def, int64_t now, char *err, size_t errlen)
{
    /* Consul's default check IDs and names */
    for (size_t i = 0; i < def->n_checks; i++) {
        lm_consul_check *c = &def->checks[i];
        if (!c->id) {
            lm_buf b = LM_BUF_INIT;
            lm_buf_printf(&b, "service:%s", def->id);
            if (def->n_checks > 1) lm_buf_printf(&b, ":%zu", i + 1);
            c->id = lm_buf_steal(&b, NULL);
        }
        if (!c->name) {
            lm_buf b = LM_BUF_INIT;
            lm_buf_printf(&b, "Service '%s' check", def->name);
            c->name = lm_buf_steal(&b, NULL);
        }
        if (c->type == LM_CONSUL_CHECK_HTTP && !c->method) c->method = lm_xstrdup("GET");
    }
    for (size_t i = 0; i < def->n_checks; i++) {
        rg_check *other = rg_state_check(st, def->checks[i].id);
        if (other && strcmp(other->svc->def.id, def->id) != 0) {
            snprintf(err, errlen, "check ID \"%.64s\" already belongs to service \"%.64s\"",
                     def->checks[i].id, other->svc->def.id);
            lm_consul_service_free(def);
            return -1;
        }
    }
    bool found;
    size_t pos = svc_pos(st, def->id, &found);
    rg_service *old = found ? st->svcs[pos] : NULL;
    if (old && services_equal(old, def)) {
        lm_consul_service_free(def);
        return 0;
    }

    st->index++;
    rg_service *s = lm_xcalloc(1, sizeof *s);
    s->def = *def;
    memset(def, 0, sizeof *def);
    s->n_checks = s->def.n_checks;
    s->checks = s->n_checks ? lm_xcalloc(s->n_checks, sizeof *s->checks) : NULL;
    for (size_t i = 0; i < s->n_checks; i++) {
        rg_check *c = lm_xcalloc(1, sizeof *c);
        c->def = s->def.checks[i];
        c->svc = s;
        c->modify_index = st->index;
        rg_check *prev = old ? check_in(old, c->def.id) : NULL;
        if (prev && prev->def.type == c->def.type) { /* keep its state */
            c->status = prev->status;
            c->output = lm_xstrdup(prev->output);
            c->critical_since = prev->critical_since;
            c->create_index = prev->create_index;
            c->ttl_deadline = prev->def.ttl_ms == c->def.ttl_ms ? prev->ttl_deadline
                                                                : now + (int64_t)c->def.ttl_ms;
        } else {
            c->status = c->def.has_status ? c->def.status : LM_CONSUL_CRITICAL;
            c->output = lm_xstrdup("");
            c->critical_since = c->status == LM_CONSUL_CRITICAL ? now : -1;
            c->create_index = st->index;
            c->ttl_deadline = now + (int64_t)c->def.ttl_ms;
        }
        s->checks[i] = c;
    }
    free(s->def.checks); /* moved into s->checks */
    s->def.checks = NULL;
    s->def.n_checks = 0;
    s->create_index = old ? old->create_index : st->index;
    s->modify_index = st->index;

    if (old) {
        if (strcmp(old->def.name, s->def.name) != 0) touch_name(st, old->def.name);
        service_free(st, old, true);
        st->svcs[pos] = s;
    } else {
        if (st->n_svcs == st->cap_svcs) {
            st->cap_svcs = st->cap_svcs ? st->cap_svcs * 2 : 16;
            st->svcs = lm_xrealloc(st->svcs, st->cap_svcs * sizeof *st->svcs);
        }
        memmove(&st->svcs[pos + 1], &st->svcs[pos], (st->n_svcs - pos) * sizeof *st->svcs);
        st->svcs[pos] = s;
        st->n_svcs++;
    }
    touch_name(st, s->def.name);
    st->catalog_index = st->index;
    st->dirty = true;
    for (size_t i = 0; i < s->n_checks; i++)
        if (st->hooks.check_added) st->hooks.check_added(s->checks[i], st->hooks.ctx);
    return 1;
}

bool rg_state_deregister(rg_state *st, const char *id)
{
    bool found;
    size_t pos = svc_pos(st, id, &found);
    if (!found) return false;
    st->index++;
    touch_name(st, st->svcs[pos]->def.name);
    st->catalog_index = st->index;
    st->dirty = true;
    svc_remove_at(st, pos, true);
    return true;
}

int rg_state_ttl_update(rg_state *st, const char *check_id, lm_consul_status status,
                        const char *note, int64_t now)
{
    rg_check *c = rg_state_check(st, check_id);
    if (!c) return RG_UNKNOWN;
    if (c->def.type != LM_CONSUL_CHECK_TTL) return RG_NOT_TTL;
    c->ttl_deadline = now + (int64_t)c->def.ttl_ms;
    set_output(c, note);
    set_status(st, c, status, now);
    return RG_OK;
}

void rg_state_check_result(rg_state *st, rg_check *c, lm_consul_status status, const char *output,
                           int64_t now)
{
    set_output(c, output);
    set_status(st, c, status, now);
}

int64_t rg_state_tick(rg_state *st, int64_t now)
{
    int64_t next = INT64_MAX;
    for (size_t i = 0; i < st->n_svcs; i++) {
        rg_service *s = st->svcs[i];
        for (size_t j = 0; j < s->n_checks; j++) {
            rg_check *c = s->checks[j];
            if (c->def.type != LM_CONSUL_CHECK_TTL || c->status == LM_CONSUL_CRITICAL) continue;
            if (c->ttl_deadline <= now) {
                lm_buf b = LM_BUF_INIT;
                lm_buf_printf(&b, "TTL expired (last output before timeout follows): %s",
                              c->output);
                set_output(c, lm_buf_cstr(&b));
                lm_buf_free(&b);
                set_status(st, c, LM_CONSUL_CRITICAL, now);
                st->ttl_expired++;
                lm_log_info("check %s of service %s went critical: TTL of %llu ms expired",
                            c->def.id, s->def.id, (unsigned long long)c->def.ttl_ms);
            } else if (c->ttl_deadline < next) {
                next = c->ttl_deadline;
            }
        }
    }
    for (size_t i = 0; i < st->n_svcs;) {
        rg_service *s = st->svcs[i];
        bool reap = false;
        for (size_t j = 0; j < s->n_checks && !reap; j++) {
            rg_check *c = s->checks[j];
            if (!c->def.deregister_ms || c->status != LM_CONSUL_CRITICAL) continue;
            int64_t due = c->critical_since + (int64_t)c->def.deregister_ms;
            if (due <= now)
                reap = true;
            else if (due < next)
                next = due;
        }
        if (!reap) {
            i++;
            continue;
        }
        lm_log_info("deregistering service %s (%s): critical for longer than its "
                    "DeregisterCriticalServiceAfter",
                    s->def.id, s->def.name);
        st->reaped++;
        rg_state_deregister(st, s->def.id);
    }
    return next;
}

size_t rg_state_count_checks(const rg_state *st, lm_consul_status status)
{
    size_t n = 0;
    for (size_t i = 0; i < st->n_svcs; i++)
        for (size_t j = 0; j < st->svcs[i]->n_checks; j++)
            if (st->svcs[i]->checks[j]->status == status) n++;
    return n;
}

/* ---- response bodies ------------------------------------------------------------------- */

static bool has_tags(const rg_service *s, const char *const *tags, size_t n_tags)
{
    for (size_t i = 0; i < n_tags; i++) {
        bool hit = false;
        for (size_t j = 0; j < s->def.n_tags && !hit; j++)
            hit = strcasecmp(s->def.tags[j], tags[i]) == 0;
        if (!hit) return false;
    }
    return true;
}

static json_t *tags_json(const rg_service *s)
{
    json_t *a = json_array();
    for (size_t i = 0; i < s->def.n_tags; i++)
        json_array_append_new(a, json_string(s->def.tags[i]));
    return a;
}

static json_t *meta_json(const rg_service *s)
{
    json_t *o = json_object();
    for (size_t i = 0; i < s->def.n_meta; i++)
        json_object_set_new(o, s->def.meta[i].key, json_string(s->def.meta[i].value));
    return o;
}

static json_t *weights_json(const rg_service *s)
{
    return json_pack("{s:i,s:i}", "Passing", s->def.weight_passing, "Warning",
                     s->def.weight_warning);
}

static json_t *tagged_addresses(const rg_state *st)
{
    return json_pack("{s:s,s:s,s:s,s:s}", "lan", st->node_address, "lan_ipv4", st->node_address,
                     "wan", st->node_address, "wan_ipv4", st->node_address);
}

static json_t *node_json(const rg_state *st)
{
    return json_pack("{s:s,s:s,s:s,s:s,s:o,s:{s:s},s:I,s:I}", "ID", st->node_id, "Node",
                     st->node_name, "Address", st->node_address, "Datacenter", st->datacenter,
                     "TaggedAddresses", tagged_addresses(st), "Meta", "consul-network-segment", "",
                     "CreateIndex", (json_int_t)1, "ModifyIndex", (json_int_t)1);
}

static json_t *service_json(const rg_state *st, const rg_service *s, bool agent)
{
    json_t *o = json_object();
    json_object_set_new(o, "ID", json_string(s->def.id));
    json_object_set_new(o, "Service", json_string(s->def.name));
    json_object_set_new(o, "Tags", tags_json(s));
    json_object_set_new(o, "Address", json_string(s->def.address));
    json_object_set_new(o, "Meta", meta_json(s));
    json_object_set_new(o, "Port", json_integer(s->def.port));
    json_object_set_new(o, "Weights", weights_json(s));
    json_object_set_new(o, "EnableTagOverride", json_boolean(s->def.enable_tag_override));
    if (agent) {
        json_object_set_new(o, "Datacenter", json_string(st->datacenter));
    } else {
        json_object_set_new(o, "CreateIndex", json_integer((json_int_t)s->create_index));
        json_object_set_new(o, "ModifyIndex", json_integer((json_int_t)s->modify_index));
    }
    return o;
}

static json_t *check_json(const rg_state *st, const rg_check *c, bool agent)
{
    const rg_service *s = c->svc;
    json_t *o = json_object();
    json_object_set_new(o, "Node", json_string(st->node_name));
    json_object_set_new(o, "CheckID", json_string(c->def.id));
    json_object_set_new(o, "Name", json_string(c->def.name));
    json_object_set_new(o, "Status", json_string(lm_consul_status_name(c->status)));
    json_object_set_new(o, "Notes", json_string(c->def.notes ? c->def.notes : ""));
    json_object_set_new(o, "Output", json_string(c->output));
    json_object_set_new(o, "ServiceID", json_string(s->def.id));
    json_object_set_new(o, "ServiceName", json_string(s->def.name));
    json_object_set_new(o, "ServiceTags", tags_json(s));
    json_object_set_new(o, "Type",
                        json_string(c->def.type == LM_CONSUL_CHECK_TTL ? "ttl" : "http"));
    char buf[32];
    if (c->def.type == LM_CONSUL_CHECK_HTTP) {
        lm_consul_format_duration(c->def.interval_ms, buf, sizeof buf);
        json_object_set_new(o, "Interval", json_string(buf));
        lm_consul_format_duration(c->def.timeout_ms ? c->def.timeout_ms : 10000, buf, sizeof buf);
        json_object_set_new(o, "Timeout", json_string(buf));
    }
    if (agent) json_object_set_new(o, "Definition", json_object());
    json_object_set_new(o, "CreateIndex", json_integer((json_int_t)c->create_index));
    json_object_set_new(o, "ModifyIndex", json_integer((json_int_t)c->modify_index));
    return o;
}

static json_t *serf_check_json(const rg_state *st)
{
    return json_pack("{s:s,s:s,s:s,s:s,s:s,s:s,s:s,s:s,s:[],s:s,s:I,s:I}", "Node", st->node_name,
                     "CheckID", "serfHealth", "Name", "Serf Health Status", "Status", "passing",
                     "Notes", "", "Output", "Agent alive and reachable", "ServiceID", "",
                     "ServiceName", "", "ServiceTags", "Type", "", "CreateIndex", (json_int_t)1,
                     "ModifyIndex", (json_int_t)1);
}

json_t *rg_state_health_json(const rg_state *st, const char *name, bool passing,
                             const char *const *tags, size_t n_tags)
{
    json_t *arr = json_array();
    for (size_t i = 0; i < st->n_svcs; i++) {
        const rg_service *s = st->svcs[i];
        if (strcmp(s->def.name, name) != 0 || !has_tags(s, tags, n_tags)) continue;
        if (passing && !rg_service_passing(s)) continue;
        json_t *checks = json_array();
        json_array_append_new(checks, serf_check_json(st));
        for (size_t j = 0; j < s->n_checks; j++)
            json_array_append_new(checks, check_json(st, s->checks[j], false));
        json_array_append_new(arr, json_pack("{s:o,s:o,s:o}", "Node", node_json(st), "Service",
                                             service_json(st, s, false), "Checks", checks));
    }
    return arr;
}

json_t *rg_state_catalog_service_json(const rg_state *st, const char *name, const char *const *tags,
                                      size_t n_tags)
{
    json_t *arr = json_array();
    for (size_t i = 0; i < st->n_svcs; i++) {
        const rg_service *s = st->svcs[i];
        if (strcmp(s->def.name, name) != 0 || !has_tags(s, tags, n_tags)) continue;
        json_t *o = json_object();
        json_object_set_new(o, "ID", json_string(st->node_id));
        json_object_set_new(o, "Node", json_string(st->node_name));
        json_object_set_new(o, "Address", json_string(st->node_address));
        json_object_set_new(o, "Datacenter", json_string(st->datacenter));
        json_object_set_new(o, "TaggedAddresses", tagged_addresses(st));
        json_object_set_new(o, "NodeMeta", json_pack("{s:s}", "consul-network-segment", ""));
        json_object_set_new(o, "ServiceKind", json_string(""));
        json_object_set_new(o, "ServiceID", json_string(s->def.id));
        json_object_set_new(o, "ServiceName", json_string(s->def.name));
        json_object_set_new(o, "ServiceTags", tags_json(s));
        json_object_set_new(o, "ServiceAddress", json_string(s->def.address));
        json_object_set_new(o, "ServiceWeights", weights_json(s));
        json_object_set_new(o, "ServiceMeta", meta_json(s));
        json_object_set_new(o, "ServicePort", json_integer(s->def.port));
        json_object_set_new(o, "ServiceEnableTagOverride",
                            json_boolean(s->def.enable_tag_override));
        json_object_set_new(o, "CreateIndex", json_integer((json_int_t)s->create_index));
        json_object_set_new(o, "ModifyIndex", json_integer((json_int_t)s->modify_index));
        json_array_append_new(arr, o);
    }
    return arr;
}

json_t *rg_state_catalog_services_json(const rg_state *st)
{
    json_t *o = json_object();
    for (size_t i = 0; i < st->n_svcs; i++) {
        const rg_service *s = st->svcs[i];
        json_t *tags = json_object_get(o, s->def.name);
        if (!tags) {
            tags = json_array();
            json_object_set_new(o, s->def.name, tags);
        }
        for (size_t j = 0; j < s->def.n_tags; j++) {
            bool dup = false;
            size_t k;
            json_t *t;
            json_array_foreach(tags, k, t)
            {
                if (strcmp(json_string_value(t), s->def.tags[j]) == 0) dup = true;
            }
            if (!dup) json_array_append_new(tags, json_string(s->def.tags[j]));
        }
    }
    return o;
}

json_t *rg_state_agent_services_json(const rg_state *st)
{
    json_t *o = json_object();
    for (size_t i = 0; i < st->n_svcs; i++)
        json_object_set_new(o, st->svcs[i]->def.id, service_json(st, st->svcs[i], true));
    return o;
}

json_t *rg_state_agent_checks_json(const rg_state *st)
{
    json_t *o = json_object();
    for (size_t i = 0; i < st->n_svcs; i++)
        for (size_t j = 0; j < st->svcs[i]->n_checks; j++) {
            const rg_check *c = st->svcs[i]->checks[j];
            json_object_set_new(o, c->def.id, check_json(st, c, true));
        }
    return o;
}
