// Ory Polis (formerly BoxyHQ SAML Jackson) full SP-initiated SAML login rate, for the
// comparison in crates/api/benches/full_login.rs, which writes the directory this reads.
//
//   node polis_login.mjs <dir>
//
// <dir> holds idp-key.pem and idp-cert.pem (the IdP's signing pair) and params.json
// ({logins, idp_entity_id}). Per login this calls what Polis's Next.js routes call, in process
// (jackson is a library without an HTTP server, PEERS.md): oauthController.authorize ->
// (the IdP signs a response to the AuthnRequest, untimed) -> oauthController.samlResponse ->
// oauthController.token -> oauthController.userInfo. Only those four calls are timed, as the
// Rust side times only its four requests. Engine: `mem` (in-memory, nothing durable), the only
// one the --ignore-scripts install of scripts/bench-deps.sh can run.
//
// Every login must come back with the expected profile, and a tampered response must be
// rejected, so a broken call cannot look fast. Prints one line `POLIS_RESULT {json}`.

import { createRequire } from 'node:module';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { inflateRawSync } from 'node:zlib';

const here = dirname(fileURLToPath(import.meta.url));
const polisDir = join(here, '..', '..', 'saml', 'benches', 'polis');
const require = createRequire(join(polisDir, 'package.json'));

function fail(msg) {
  console.error(`polis-login: ${msg}`);
  process.exit(1);
}

let jackson;
try {
  jackson = require('@boxyhq/saml-jackson');
} catch (e) {
  fail(`cannot load @boxyhq/saml-jackson from ${polisDir} (run scripts/bench-deps.sh): ${e.message}`);
}
const jacksonRequire = createRequire(require.resolve('@boxyhq/saml-jackson/package.json'));
const saml20 = jacksonRequire('@boxyhq/saml20').default ?? jacksonRequire('@boxyhq/saml20');
const version = require('@boxyhq/saml-jackson/package.json').version;

const dir = process.argv[2];
if (!dir) fail('usage: node polis_login.mjs <dir>');
const params = JSON.parse(readFileSync(join(dir, 'params.json'), 'utf8'));
const privateKey = readFileSync(join(dir, 'idp-key.pem'), 'utf8');
const publicKey = readFileSync(join(dir, 'idp-cert.pem'), 'utf8');

const quiet = { info() {}, warn() {}, error() {} };
const externalUrl = 'http://127.0.0.1:5225';
const samlAudience = 'https://saml.bench.test';
const controllers = await jackson.controllers({
  externalUrl,
  samlPath: '/api/oauth/saml',
  samlAudience,
  db: { engine: 'mem' },
  noAnalytics: true,
  logger: quiet,
});
const { connectionAPIController, oauthController } = controllers;

const certBody = publicKey.replace(/-----(BEGIN|END) CERTIFICATE-----/g, '').replace(/\s+/g, '');
const metadataXml =
  `<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata" entityID="${params.idp_entity_id}">` +
  `<md:IDPSSODescriptor protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol">` +
  `<md:KeyDescriptor use="signing"><ds:KeyInfo xmlns:ds="http://www.w3.org/2000/09/xmldsig#"><ds:X509Data>` +
  `<ds:X509Certificate>${certBody}</ds:X509Certificate></ds:X509Data></ds:KeyInfo></md:KeyDescriptor>` +
  `<md:SingleSignOnService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect" Location="https://idp.bench.test/sso"/>` +
  `</md:IDPSSODescriptor></md:EntityDescriptor>`;
const redirectUri = 'https://app.bench.test/callback';
const tenant = 'bench.test';
const product = 'idbridge-bench';
await connectionAPIController.createSAMLConnection({
  rawMetadata: metadataXml,
  defaultRedirectUrl: redirectUri,
  redirectUrl: JSON.stringify([redirectUri]),
  tenant,
  product,
});
const clientId = `tenant=${tenant}&product=${product}`;
const acsUrl = `${externalUrl}/api/oauth/saml`;

/** authorize: returns the AuthnRequest id and the RelayState Polis bound to the login. */
async function authorize(i) {
  const r = await oauthController.authorize({
    tenant,
    product,
    client_id: 'dummy',
    redirect_uri: redirectUri,
    response_type: 'code',
    state: `st-${i}`,
  });
  if (!r.redirect_url) fail(`authorize gave no redirect: ${JSON.stringify(r)}`);
  const url = new URL(r.redirect_url);
  const req = url.searchParams.get('SAMLRequest');
  const relayState = url.searchParams.get('RelayState');
  if (!req || !relayState) fail(`authorize redirect without SAMLRequest/RelayState: ${r.redirect_url}`);
  const xml = inflateRawSync(Buffer.from(req, 'base64')).toString('utf8');
  const id = /\sID="([^"]+)"/.exec(xml)?.[1];
  if (!id) fail('no ID in the AuthnRequest');
  return { id, relayState };
}

/** The IdP's signed response (untimed: it is the IdP's work, not the SP's). */
async function idpResponse(requestId, email) {
  const xml = await saml20.createSAMLResponse({
    issuer: params.idp_entity_id,
    audience: samlAudience,
    acsUrl,
    requestId,
    claims: {
      email,
      raw: { id: email, email, firstName: 'Bench', lastName: 'User' },
    },
    privateKey,
    publicKey,
  });
  return Buffer.from(xml).toString('base64');
}

async function acs(samlResponse, relayState) {
  const r = await oauthController.samlResponse({ SAMLResponse: samlResponse, RelayState: relayState });
  if (!r.redirect_url) fail(`samlResponse gave no redirect: ${JSON.stringify(r)}`);
  const code = new URL(r.redirect_url).searchParams.get('code');
  if (!code) throw new Error(`no code in ${r.redirect_url}`);
  return code;
}

async function tokenAndProfile(code) {
  const t = await oauthController.token({
    code,
    client_id: clientId,
    client_secret: 'dummy',
    grant_type: 'authorization_code',
    redirect_uri: redirectUri,
  });
  if (!t.access_token) fail(`token gave no access_token: ${JSON.stringify(t)}`);
  return oauthController.userInfo(t.access_token);
}

// The check must be able to fail: a response whose subject was changed after signing.
{
  const { id, relayState } = await authorize(-1);
  const good = Buffer.from(await idpResponse(id, 'victim@bench.test'), 'base64').toString();
  const bad = good.replaceAll('victim@bench.test', 'attacker@evil.test');
  let accepted = false;
  try {
    await acs(Buffer.from(bad).toString('base64'), relayState);
    accepted = true;
  } catch {
    // expected
  }
  if (accepted) fail('a tampered response was accepted');
}

let spSecs = 0;
const elapsed = async (f) => {
  const t0 = process.hrtime.bigint();
  const v = await f();
  spSecs += Number(process.hrtime.bigint() - t0) / 1e9;
  return v;
};
async function login(i, timed) {
  const email = `user${i}@bench.test`;
  const run = timed ? elapsed : (f) => f();
  const { id, relayState } = await run(() => authorize(i));
  const resp = await idpResponse(id, email);
  const code = await run(() => acs(resp, relayState));
  const profile = await run(() => tokenAndProfile(code));
  if (profile?.email !== email) fail(`login ${i}: expected ${email}, got ${JSON.stringify(profile)}`);
}

for (let i = 0; i < 5; i++) await login(1_000_000 + i, false);
const cpu0 = process.cpuUsage();
for (let i = 0; i < params.logins; i++) await login(i, true);
const cpu = process.cpuUsage(cpu0);
console.log(
  `POLIS_RESULT ${JSON.stringify({
    version,
    logins: params.logins,
    sp_secs: spSecs,
    logins_per_sec: params.logins / spSecs,
    cpu_secs_incl_idp: (cpu.user + cpu.system) / 1e6,
  })}`,
);
// jackson keeps timers (cron, metrics) alive: leave once the result is out.
process.exit(0);
