/* snapshot.c — the registry's state on disk (rg_snap_*), so a restarted registry answers at
 * once with what it knew instead of an empty catalog while every instance re-registers.
 *
 * Format (JSON, versioned):
 *   {"Version":1,"Index":N,"CatalogIndex":N,"NodeID":"…","Names":{"name":index,…},
 *    "Services":[{"Service":<registration in Consul's keys, checks with their IDs>,
 *                 "CreateIndex":N,"ModifyIndex":N,
 *                 "CheckStates":[{"CheckID","Status","Output","CreateIndex","ModifyIndex"}]}]}
 * Definitions are stored as registrations and decoded by the same code as a PUT, so a
 * snapshot can never smuggle in what the API would refuse. Clocks are not stored: TTL and
 * deregistration clocks restart when the snapshot is loaded (an instance that died while
 * the registry was down goes critical one TTL later).
 *
 * Writing is atomic: a temporary file next to the target, fsync, rename; a crash leaves the
 * old snapshot or the new one, never a torn file. See state.h for the API. */
#include "state.h"

#include "buf.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SNAP_VERSION 1

json_t *rg_snap_encode(const rg_state *st)
{
    json_t *names = json_object();
    for (size_t i = 0; i < st->n_names; i++)
        json_object_set_new(names, st->names[i].name, json_integer((json_int_t)st->names[i].index));
    json_t *svcs = json_array();
    for (size_t i = 0; i < st->n_svcs; i++) {
        const rg_service *s = st->svcs[i];
        lm_consul_service def = s->def; /* shallow, with the checks put back */
        lm_consul_check *defs = s->n_checks ? lm_xcalloc(s->n_checks, sizeof *defs) : NULL;
        json_t *states = json_array();
        for (size_t j = 0; j < s->n_checks; j++) {
            const rg_check *c = s->checks[j];
            defs[j] = c->def;
            defs[j].has_status = false;
            json_array_append_new(states,
                                  json_pack("{s:s,s:s,s:s,s:I,s:I}", "CheckID", c->def.id, "Status",
                                            lm_consul_status_name(c->status), "Output", c->output,
                                            "CreateIndex", (json_int_t)c->create_index,
                                            "ModifyIndex", (json_int_t)c->modify_index));
        }
        def.checks = defs;
        def.n_checks = s->n_checks;
        json_array_append_new(svcs, json_pack("{s:o,s:I,s:I,s:o}", "Service",
                                              lm_consul_service_encode(&def), "CreateIndex",
                                              (json_int_t)s->create_index, "ModifyIndex",
                                              (json_int_t)s->modify_index, "CheckStates", states));
        free(defs);
    }
    return json_pack("{s:i,s:I,s:I,s:s,s:o,s:o}", "Version", SNAP_VERSION, "Index",
                     (json_int_t)st->index, "CatalogIndex", (json_int_t)st->catalog_index, "NodeID",
                     st->node_id, "Names", names, "Services", svcs);
}

static bool get_index(const json_t *o, const char *key, uint64_t *out)
{
    json_t *v = json_object_get(o, key);
    if (!json_is_integer(v) || json_integer_value(v) < 1) return false;
    *out = (uint64_t)json_integer_value(v);
    return true;
}

static int restore_service(rg_state *st, const json_t *item, size_t n, int64_t now, char *err,
                           size_t errlen)
{
    char msg[400];
    lm_consul_service def;
    uint64_t create, modify;
    json_t *states = json_object_get(item, "CheckStates");
    if (!json_is_object(item) || !get_index(item, "CreateIndex", &create) ||
        !get_index(item, "ModifyIndex", &modify) || !json_is_array(states)) {
        snprintf(err, errlen, "Services[%zu]: missing CreateIndex, ModifyIndex or CheckStates", n);
        return -1;
    }
    if (lm_consul_service_decode(json_object_get(item, "Service"), &def, msg, sizeof msg) != 0) {
        snprintf(err, errlen, "Services[%zu]: %s", n, msg);
        return -1;
    }
    if (rg_state_service(st, def.id)) {
        snprintf(err, errlen, "Services[%zu]: service ID \"%.64s\" appears twice", n, def.id);
        lm_consul_service_free(&def);
        return -1;
    }
    char id[LM_CONSUL_MAX_ID + 1];
    snprintf(id, sizeof id, "%s", def.id);
    if (rg_state_register(st, &def, now, msg, sizeof msg) < 0) {
        snprintf(err, errlen, "Services[%zu]: %s", n, msg);
        return -1;
    }
    rg_service *s = rg_state_service(st, id);
    s->create_index = create;
    s->modify_index = modify;
    size_t i;
    json_t *cs;
    json_array_foreach(states, i, cs)
    {
        const char *cid = json_string_value(json_object_get(cs, "CheckID"));
        const char *status = json_string_value(json_object_get(cs, "Status"));
        const char *output = json_string_value(json_object_get(cs, "Output"));
        rg_check *c = NULL;
        for (size_t j = 0; cid && j < s->n_checks && !c; j++)
            if (strcmp(s->checks[j]->def.id, cid) == 0) c = s->checks[j];
        lm_consul_status st_val;
        uint64_t ci, mi;
        if (!c || !lm_consul_status_parse(status, &st_val) || !output ||
            !get_index(cs, "CreateIndex", &ci) || !get_index(cs, "ModifyIndex", &mi)) {
            snprintf(err, errlen, "Services[%zu].CheckStates[%zu]: malformed or unknown check", n,
                     i);
            return -1;
        }
        c->status = st_val;
        c->critical_since = st_val == LM_CONSUL_CRITICAL ? now : -1;
        free(c->output);
        c->output = lm_xstrdup(output);
        c->create_index = ci;
        c->modify_index = mi;
    }
    return 0;
}

int rg_snap_decode(rg_state *st, const json_t *doc, int64_t now, char *err, size_t errlen)
{
    uint64_t index, catalog;
    json_t *ver = json_object_get(doc, "Version");
    if (!json_is_object(doc) || !json_is_integer(ver)) {
        snprintf(err, errlen, "not a registry snapshot (no Version)");
        return -1;
    }
    if (json_integer_value(ver) != SNAP_VERSION) {
        snprintf(err, errlen, "snapshot version %lld is not supported (expected %d)",
                 (long long)json_integer_value(ver), SNAP_VERSION);
        return -1;
    }
    json_t *svcs = json_object_get(doc, "Services");
    json_t *names = json_object_get(doc, "Names");
    const char *node_id = json_string_value(json_object_get(doc, "NodeID"));
    if (!get_index(doc, "Index", &index) || !get_index(doc, "CatalogIndex", &catalog) ||
        !json_is_array(svcs) || !json_is_object(names) || !node_id || strlen(node_id) != 36) {
        snprintf(err, errlen, "malformed snapshot (Index, CatalogIndex, NodeID, Names, Services)");
        return -1;
    }
    snprintf(st->node_id, sizeof st->node_id, "%s", node_id);
    size_t i;
    json_t *item;
    json_array_foreach(svcs, i, item)
    {
        if (restore_service(st, item, i, now, err, errlen) != 0) return -1;
    }
    const char *k;
    json_t *v;
    json_object_foreach(names, k, v)
    {
        uint64_t ni =
            json_is_integer(v) && json_integer_value(v) > 0 ? (uint64_t)json_integer_value(v) : 0;
        if (!ni) {
            snprintf(err, errlen, "Names.%.64s: not a positive index", k);
            return -1;
        }
        bool found = false;
        for (size_t j = 0; j < st->n_names && !found; j++)
            if (strcmp(st->names[j].name, k) == 0) {
                st->names[j].index = ni;
                found = true;
            }
        if (!found) {
            if (st->n_names == st->cap_names) {
                st->cap_names = st->cap_names ? st->cap_names * 2 : 16;
                st->names = lm_xrealloc(st->names, st->cap_names * sizeof *st->names);
            }
            st->names[st->n_names].name = lm_xstrdup(k);
            st->names[st->n_names++].index = ni;
        }
    }
    st->index = index;
    st->catalog_index = catalog;
    st->dirty = false;
    return 0;
}

int rg_snap_write(const rg_state *st, const char *path, char *err, size_t errlen)
{
    json_t *doc = rg_snap_encode(st);
    char *text = json_dumps(doc, JSON_COMPACT);
    json_decref(doc);
    size_t len = strlen(text);
    lm_buf tmp = LM_BUF_INIT;
    lm_buf_printf(&tmp, "%s.tmp.%ld", path, (long)getpid());
    const char *tmpname = lm_buf_cstr(&tmp);
    int rc = -1;
    int fd = open(tmpname, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
    if (fd < 0) {
        snprintf(err, errlen, "cannot create %s: %s", tmpname, strerror(errno));
        goto out;
    }
    size_t off = 0;
    while (off < len) {
        ssize_t n = write(fd, text + off, len - off);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            snprintf(err, errlen, "cannot write %s: %s", tmpname, strerror(errno));
            close(fd);
            unlink(tmpname);
            goto out;
        }
        off += (size_t)n;
    }
    if (fsync(fd) != 0 || close(fd) != 0) {
        snprintf(err, errlen, "cannot sync %s: %s", tmpname, strerror(errno));
        unlink(tmpname);
        goto out;
    }
    if (rename(tmpname, path) != 0) {
        snprintf(err, errlen, "cannot rename %s to %s: %s", tmpname, path, strerror(errno));
        unlink(tmpname);
        goto out;
    }
    rc = 0;
out:
    lm_buf_free(&tmp);
    free(text);
    return rc;
}

int rg_snap_load(rg_state *st, const char *path, int64_t now, char *err, size_t errlen)
{
    if (access(path, F_OK) != 0 && errno == ENOENT) return 0;
    json_error_t jerr;
    json_t *doc = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
    if (!doc) {
        snprintf(err, errlen, "%s: line %d, column %d: %s", path, jerr.line, jerr.column,
                 jerr.text);
        return -1;
    }
    /* decode into a scratch state so a bad file leaves st untouched */
    rg_state tmp;
    rg_state_init(&tmp, st->node_name, st->node_address, st->node_id);
    char msg[400];
    int rc = rg_snap_decode(&tmp, doc, now, msg, sizeof msg);
    json_decref(doc);
    if (rc != 0) {
        snprintf(err, errlen, "%s: %s", path, msg);
        rg_state_free(&tmp);
        return -1;
    }
    tmp.hooks = st->hooks;
    rg_state_free(st);
    *st = tmp;
    return 1;
}
