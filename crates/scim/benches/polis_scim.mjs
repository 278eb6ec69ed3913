// Ory Polis (formerly BoxyHQ SAML Jackson) SCIM directory-sync endpoint on a loopback socket,
// for the comparison in crates/scim/benches/polis_scim.rs, which starts and stops this script.
//
//   node polis_scim.mjs
//
// Jackson is a library without an HTTP server (PEERS.md): this wraps it in node:http the way
// its Next.js API route does (pages/api/scim/v2.0/[...directory].ts in the Polis app): it parses
// the path into directoryId / resourceType / resourceId, the bearer token into apiSecret, the
// query (count and startIndex as numbers) and the JSON body, and answers with what
// directorySyncController.requests.handle returns. Engine: `mem` (in-memory, nothing durable).
//
// The package is the one scripts/bench-deps.sh installs (with --ignore-scripts) for the SAML
// benchmark under crates/saml/benches/polis. Prints one line `POLIS_READY {json}` with the
// port, the directory id and its SCIM secret, then serves until killed.

import { createRequire } from 'node:module';
import { createServer } from 'node:http';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const polisDir = join(here, '..', '..', 'saml', 'benches', 'polis');
const require = createRequire(join(polisDir, 'package.json'));

function fail(msg) {
  console.error(`polis-scim: ${msg}`);
  process.exit(1);
}

let jackson;
try {
  jackson = require('@boxyhq/saml-jackson');
} catch (e) {
  fail(`cannot load @boxyhq/saml-jackson from ${polisDir} (run scripts/bench-deps.sh): ${e.message}`);
}
const version = require('@boxyhq/saml-jackson/package.json').version;

// Without a webhook (none here: idbridge's events go to its log, no delivery is timed either)
// jackson logs one "Webhook not configured" error per event; printing them would slow it down.
const quiet = {
  info() {},
  warn() {},
  error(msg, ...rest) {
    if (!String(msg).startsWith('Webhook not configured')) console.error(msg, ...rest);
  },
};
const controllers = await jackson.controllers({
  externalUrl: 'http://127.0.0.1',
  samlPath: '/api/oauth/saml',
  samlAudience: 'https://saml.boxyhq.com',
  db: { engine: 'mem' },
  noAnalytics: true,
  logger: quiet,
});
const dsync = controllers.directorySyncController;

const { data: directory, error } = await dsync.directories.create({
  name: 'bench',
  tenant: 'bench.test',
  product: 'idbridge-bench',
  type: 'okta-scim-v2',
});
if (error) fail(`creating the directory: ${JSON.stringify(error)}`);

const prefix = '/api/scim/v2.0/';

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

function send(res, status, data) {
  const body = data === undefined ? '' : JSON.stringify(data);
  res.writeHead(status, {
    'content-type': 'application/scim+json',
    'content-length': Buffer.byteLength(body),
  });
  res.end(body);
}

const server = createServer(async (req, res) => {
  try {
    const url = new URL(req.url, 'http://127.0.0.1');
    if (!url.pathname.startsWith(prefix)) return send(res, 404, { detail: 'not found' });
    const [directoryId, resourceType, resourceId] = url.pathname
      .slice(prefix.length)
      .split('/')
      .filter(Boolean);
    const auth = req.headers.authorization || '';
    const apiSecret = auth.startsWith('Bearer ') ? auth.slice(7) : null;
    const text = await readBody(req);
    let body;
    if (text) {
      try {
        body = JSON.parse(text);
      } catch {
        return send(res, 400, { detail: 'invalid JSON' });
      }
    }
    const q = url.searchParams;
    const query = {
      count: q.has('count') ? Number(q.get('count')) : undefined,
      startIndex: q.has('startIndex') ? Number(q.get('startIndex')) : 1,
      filter: q.get('filter') ?? undefined,
    };
    const { status, data } = await dsync.requests.handle({
      method: req.method,
      body,
      directoryId,
      resourceType: resourceType || '',
      resourceId,
      apiSecret,
      query,
    });
    send(res, status, data);
  } catch (e) {
    send(res, 500, { detail: String(e && e.message ? e.message : e) });
  }
});
server.keepAliveTimeout = 60_000;
server.listen(0, '127.0.0.1', () => {
  const { port } = server.address();
  console.log(
    `POLIS_READY ${JSON.stringify({ port, directory_id: directory.id, secret: directory.scim.secret, version })}`,
  );
});
