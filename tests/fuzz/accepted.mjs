// The requests a fuzz target saw answered 2xx against a real database
// (tests/fuzz/http_target.h writes them: METHOD, PATH, the body in hex),
// checked against the service's OpenAPI document with Ajv: a body the
// document refuses (not JSON, or not of the operation's schema, or absent
// where one is required) that the service accepted is a finding.
//   node tests/fuzz/accepted.mjs SERVICE FILE
import { readFileSync } from "node:fs";
import { parse } from "yaml";
import Ajv2020 from "ajv/dist/2020.js";
import addFormats from "ajv-formats";

const [service, file] = process.argv.slice(2);
const root = new URL("../../", import.meta.url).pathname;
const spec = parse(readFileSync(`${root}api/${service}.yaml`, "utf8"));
const ajv = new Ajv2020({ strict: false, allErrors: true });
addFormats(ajv);
ajv.addFormat("int64", true);
ajv.addSchema(spec, service);
const token = (s) => String(s).replaceAll("~", "~0").replaceAll("/", "~1");

// Each documented path as a pattern of its segments.
const templates = Object.keys(spec.paths).map((t) => ({
  template: t,
  pattern: new RegExp("^" + t.replace(/\{[^}]+\}/g, "[^/]+") + "$"),
}));

const lines = readFileSync(file, "utf8").split("\n").filter(Boolean);
const findings = [];
let checked = 0;
for (const line of lines) {
  const [method, target, hex = ""] = line.split("\t");
  const path = decodeURIComponent(target.split("?")[0].replace(/%(?![0-9a-fA-F]{2})/g, "%25"));
  const found = templates.find((t) => t.pattern.test(path));
  const op = found && spec.paths[found.template][method.toLowerCase()];
  if (!op?.requestBody) continue;
  checked++;
  let body;
  try {
    body = new TextDecoder("utf-8", { fatal: true }).decode(Buffer.from(hex, "hex"));
  } catch {
    findings.push(`${method} ${target}: accepted a body that is not UTF-8`);
    continue;
  }
  const media = op.requestBody.content?.["application/json"];
  if (!body) {
    if (op.requestBody.required) findings.push(`${method} ${target}: accepted without the required body`);
    continue;
  }
  let value;
  try {
    value = JSON.parse(body);
  } catch {
    findings.push(`${method} ${target}: accepted a body that is not JSON: ${JSON.stringify(body).slice(0, 200)}`);
    continue;
  }
  const ref = `${service}#/paths/${token(found.template)}/${method.toLowerCase()}/requestBody/content/application~1json/schema`;
  if (media && !ajv.validate({ $ref: ref }, value))
    findings.push(`${method} ${target}: accepted ${body.slice(0, 200)}: ${ajv.errorsText()}`);
}
for (const f of findings.slice(0, 20)) console.log(`FINDING ${f}`);
console.log(`accepted.mjs ${service}: ${lines.length} accepted requests, ${checked} with a body to check, ${findings.length} finding(s)`);
process.exit(findings.length ? 1 : 0);
