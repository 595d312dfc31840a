// k8s-check.mjs — offline validation of rendered Kubernetes manifests (the output of
// `kubectl kustomize`): every document is checked against the Kubernetes OpenAPI schemas of
// npm kubernetes-models (types, required fields, formats, enums), and strictly for unknown
// field names, which those schemas let through: the schema's compiled validator is run on a
// Proxy of the document that records which fields it looks at; a field of an object that the
// validator neither reads nor enumerates (maps such as labels are enumerated) is not in the
// schema, so it is reported.
// Usage: node k8s-check.mjs FILE.yaml...   Prints one line per problem and exits 1 if any,
// else one summary line per file ("FILE: N objects valid (Kind, …)").
import { readFileSync } from "node:fs";
import { parseAllDocuments } from "yaml";

function schemaName(apiVersion, kind) {
  // apps/v1 -> IoK8sApiAppsV1, v1 -> IoK8sApiCoreV1, networking.k8s.io/v1 -> IoK8sApiNetworkingV1
  const [group, version] = apiVersion.includes("/") ? apiVersion.split("/") : ["core", apiVersion];
  const g = group.split(".")[0];
  const cap = (s) => s.charAt(0).toUpperCase() + s.slice(1);
  return `IoK8sApi${cap(g)}${cap(version)}${kind}`;
}

function track(value, path, records) {
  if (value === null || typeof value !== "object") return value;
  const rec = { path, value, read: new Set(), enumerated: false };
  records.push(rec);
  const children = new Map();
  return new Proxy(value, {
    get(target, key, receiver) {
      const v = Reflect.get(target, key, receiver);
      if (typeof key !== "string") return v;
      rec.read.add(key);
      if (v !== null && typeof v === "object" && Object.hasOwn(target, key)) {
        if (!children.has(key)) children.set(key, track(v, `${path}/${key}`, records));
        return children.get(key);
      }
      return v;
    },
    has(target, key) {
      if (typeof key === "string") rec.read.add(key);
      return Reflect.has(target, key);
    },
    ownKeys(target) {
      rec.enumerated = true;
      return Reflect.ownKeys(target);
    },
  });
}

async function checkObject(obj, where) {
  const problems = [];
  if (!obj || typeof obj !== "object" || !obj.apiVersion || !obj.kind)
    return [`${where}: not a Kubernetes object (apiVersion and kind are required)`];
  const id = `${where} ${obj.kind}/${obj.metadata?.name ?? "?"}`;
  const modPath = `kubernetes-models/${obj.apiVersion}`;
  let mod;
  try {
    mod = await import(modPath);
  } catch {
    return [`${id}: unknown apiVersion ${obj.apiVersion}`];
  }
  const Model = mod[obj.kind];
  if (!Model) return [`${id}: unknown kind ${obj.kind} in ${obj.apiVersion}`];
  try {
    new Model(obj).validate();
  } catch (e) {
    for (const err of e.errors ?? [e])
      problems.push(`${id}: ${err.instancePath || "/"} ${err.message ?? String(err)}` +
                    (err.params ? ` ${JSON.stringify(err.params)}` : ""));
  }
  let validate;
  try {
    ({ validate } = await import(`kubernetes-models/_schemas/${schemaName(obj.apiVersion, obj.kind)}`));
  } catch {
    return [...problems, `${id}: no schema for the strict field check`];
  }
  const records = [];
  validate(track(obj, "", records));
  for (const rec of records) {
    if (Array.isArray(rec.value) || rec.enumerated) continue;
    for (const key of Object.keys(rec.value))
      if (!rec.read.has(key)) problems.push(`${id}: ${rec.path}/${key}: unknown field`);
  }
  return problems;
}

let failed = false;
for (const file of process.argv.slice(2)) {
  const docs = parseAllDocuments(readFileSync(file, "utf8"));
  const kinds = [];
  let n = 0;
  for (const [i, doc] of docs.entries()) {
    if (doc.errors.length) {
      failed = true;
      console.log(`${file} document ${i + 1}: YAML: ${doc.errors[0].message}`);
      continue;
    }
    const obj = doc.toJS();
    if (obj === null) continue;
    n++;
    const problems = await checkObject(obj, `${file} document ${i + 1}`);
    if (problems.length) failed = true;
    for (const p of problems) console.log(p);
    kinds.push(obj.kind);
  }
  if (n === 0) {
    failed = true;
    console.log(`${file}: no objects`);
  } else {
    console.log(`${file}: ${n} objects checked (${[...new Set(kinds)].sort().join(", ")})`);
  }
}
process.exit(failed ? 1 : 0);
