// Validates Kubernetes manifests against the API's OpenAPI schemas, offline (kubectl needs a
// cluster for that). Usage: node tests/manifests/validate.mjs FILE.yaml...
// Prints one line per object ("ok Kind/name" or "invalid Kind/name: reason") and exits 1 when
// any object is invalid or of an unknown apiVersion/kind. The schemas come from the npm package
// kubernetes-models (installed by scripts/install-deps.sh with `npm ci` in this directory).
// Types, enums, required fields and formats are checked; unknown fields are not (the API's
// schemas allow them; tests/integration/test_manifests_kubernetes.py checks the names that
// matter).
import { readFileSync } from "node:fs";
import { parseAllDocuments } from "yaml";

async function modelFor(apiVersion, kind) {
  const [group, version] = apiVersion.includes("/") ? apiVersion.split("/") : ["", apiVersion];
  const path = group ? `kubernetes-models/${group}/${version}/${kind}` : `kubernetes-models/${version}/${kind}`;
  try {
    const mod = await import(path);
    return mod[kind];
  } catch (e) {
    return null;
  }
}

let failed = 0;
let count = 0;
for (const file of process.argv.slice(2)) {
  const docs = parseAllDocuments(readFileSync(file, "utf8"));
  for (const doc of docs) {
    if (doc.errors.length > 0) {
      console.log(`invalid ${file}: YAML: ${doc.errors[0].message}`);
      failed++;
      continue;
    }
    const obj = doc.toJS();
    if (obj === null || obj === undefined) {
      continue;
    }
    count++;
    const id = `${obj.kind}/${obj.metadata?.name} (${file})`;
    const Model = await modelFor(obj.apiVersion ?? "", obj.kind ?? "");
    if (!Model) {
      console.log(`invalid ${id}: unknown apiVersion/kind ${obj.apiVersion} ${obj.kind}`);
      failed++;
      continue;
    }
    try {
      new Model(obj).validate();
      console.log(`ok ${id}`);
    } catch (e) {
      console.log(`invalid ${id}: ${e.message}`);
      failed++;
    }
  }
}
console.log(`${count - failed} valid, ${failed} invalid`);
process.exit(failed === 0 && count > 0 ? 0 : 1);
