#!/usr/bin/env node
// check.mjs — validates an OpenAPI 3.1 document and, optionally, JSON instances against its
// schemas. Used by the black-box contract tests (tests/blackbox/test_*_contract.py).
//
//   node check.mjs OPENAPI.json [SAMPLES.json]
//
// 1. The document against the OpenAPI 3.1 specification schema
//    (@seriousme/openapi-schema-validator), then every $ref resolved.
// 2. Every schema in it (components, parameters, headers, media types) compiled by Ajv in
//    strict mode as JSON Schema 2020-12 with formats: unknown keywords, bad types and
//    dangling references are errors (the specification schema does not look inside schemas).
// 3. SAMPLES (optional): a JSON array of {"label", "schema", "instance"}; "schema" is a JSON
//    pointer into the document ("#/components/schemas/Artikel") or an inline schema whose
//    $refs point into the document. Each instance is validated.
//
// Prints one JSON object {"valid": bool, "errors": [...], "samples": [{label, valid, errors}]}
// and exits 0 when everything is valid, 1 otherwise, 2 on usage errors.
import { readFileSync } from "node:fs";
import { argv, exit } from "node:process";

import { Validator } from "@seriousme/openapi-schema-validator";
import Ajv2020 from "ajv/dist/2020.js";
import addFormats from "ajv-formats";

const BASE = "https://lotmesh.invalid/openapi.json";

function out(result) {
  console.log(JSON.stringify(result, null, 1));
  exit(result.valid ? 0 : 1);
}

if (argv.length < 3) {
  console.error("usage: node check.mjs OPENAPI.json [SAMPLES.json]");
  exit(2);
}
const docText = readFileSync(argv[2], "utf8");
const doc = JSON.parse(docText);
const result = { valid: true, errors: [], samples: [] };

const spec = new Validator();
const res = await spec.validate(JSON.parse(docText));
if (!res.valid) {
  result.valid = false;
  result.errors.push({ where: "openapi", errors: res.errors });
  out(result);
}
try {
  spec.resolveRefs();
} catch (e) {
  result.valid = false;
  result.errors.push({ where: "$ref", errors: String(e) });
  out(result);
}

// Every component schema goes into one Ajv resource under $defs, with the document's
// "#/components/schemas/X" references rewritten to "#/$defs/X" of that resource.
const ajv = new Ajv2020({ strict: true, allErrors: true, validateFormats: true });
addFormats(ajv);
const PREFIX = "#/components/schemas/";
function rebase(schema) {
  return JSON.parse(JSON.stringify(schema), (k, v) =>
    k === "$ref" && typeof v === "string" && v.startsWith(PREFIX)
      ? BASE + "#/$defs/" + v.slice(PREFIX.length)
      : v);
}
const schemas = doc.components?.schemas ?? {};
try {
  ajv.addSchema({ $id: BASE, $defs: rebase(schemas) });
} catch (e) {
  result.valid = false;
  result.errors.push({ where: "#/components/schemas", errors: String(e.message || e) });
  out(result);
}

function compile(label, schema) {
  try {
    return ajv.compile(schema);
  } catch (e) {
    result.valid = false;
    result.errors.push({ where: label, errors: String(e.message || e) });
    return null;
  }
}

// every component schema
for (const name of Object.keys(schemas)) {
  compile(PREFIX + name, rebase({ $ref: `${PREFIX}${name}` }));
}
// every other schema in the document (parameters, headers, media types)
function walk(node, path) {
  if (!node || typeof node !== "object") return;
  if (path.length > 1 && path[0] === "components" && path[1] === "schemas") return;
  for (const [k, v] of Object.entries(node)) {
    const p = path.concat([k]);
    if (k === "schema" && v && typeof v === "object") {
      compile("#/" + p.map((s) => String(s).replace(/~/g, "~0").replace(/\//g, "~1")).join("/"),
        rebase(v));
    } else {
      walk(v, p);
    }
  }
}
walk(doc, []);

if (argv[3]) {
  const samples = JSON.parse(readFileSync(argv[3], "utf8"));
  for (const s of samples) {
    const schema = rebase(typeof s.schema === "string" ? { $ref: s.schema } : s.schema);
    const v = compile(`sample ${s.label}`, schema);
    if (!v) continue;
    const ok = v(s.instance);
    result.samples.push({ label: s.label, valid: ok, errors: ok ? [] : v.errors });
    if (!ok && s.expect_valid !== false) result.valid = false;
    if (ok && s.expect_valid === false) result.valid = false;
  }
}
out(result);
