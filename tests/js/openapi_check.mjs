// Validates a response body against the official WorkOS OpenAPI spec (@workos/openapi-spec),
// the same way organizations.test.mjs and sso.test.mjs do, so every SDK test file checks
// shapes with one validator.
//
// As a module: `validate(path, method, status, body)` throws an AssertionError on a mismatch.
// As a command (for the Python tests, whose venv has no JSON Schema validator):
//   node tests/js/openapi_check.mjs /sso/token post 200 < body.json
// exits 0 when the body matches, 1 with the schema errors when it does not.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

import Ajv2020 from 'ajv/dist/2020.js';
import addFormats from 'ajv-formats';
import YAML from 'yaml';

const require = createRequire(import.meta.url);
const spec = YAML.parse(readFileSync(require.resolve('@workos/openapi-spec/spec'), 'utf8'), {
  maxAliasCount: -1,
});
const SPEC_ID = 'https://idbridge.invalid/workos-openapi.json';
const ajv = new Ajv2020({ strict: false, allErrors: true, validateSchema: false });
addFormats(ajv);
ajv.addSchema({ $id: SPEC_ID, components: spec.components });

export function validate(path, method, status, body) {
  const op = spec.paths[path]?.[method];
  assert.ok(op, `the spec has no ${method.toUpperCase()} ${path}`);
  const schema = op.responses[String(status)]?.content?.['application/json']?.schema;
  assert.ok(schema, `${method} ${path} ${status} has no JSON schema in the spec`);
  const rooted = JSON.parse(JSON.stringify(schema).replaceAll('"#/components/', `"${SPEC_ID}#/components/`));
  const v = ajv.compile(rooted);
  assert.ok(v(body), `${method} ${path} ${status} does not match the spec:\n${JSON.stringify(v.errors, null, 2)}\n${JSON.stringify(body)}`);
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const [path, method, status] = process.argv.slice(2);
  if (!path || !method || !status) {
    console.error('usage: node openapi_check.mjs <path> <method> <status> < body.json');
    process.exit(2);
  }
  try {
    validate(path, method, status, JSON.parse(readFileSync(0, 'utf8')));
  } catch (e) {
    console.error(e.message);
    process.exit(1);
  }
}
