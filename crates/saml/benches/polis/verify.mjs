// Ory Polis (formerly BoxyHQ SAML Jackson) ACS verification rate on one thread, for the
// comparison in crates/saml/benches/verify.rs, which writes the directory this reads.
//
//   node verify.mjs <dir>
//
// <dir> holds idp-cert.pem, manifest.json ({audience, idp_entity_id, responses: [{file,
// in_response_to, name_id}]}) and one base64 SAMLResponse file per response.
//
// Per response this runs what Polis's ACS handler (OAuthController.samlResponse in
// @boxyhq/saml-jackson, dist/controller/oauth.js) does on the CPU: base64-decode,
// saml20.parseIssuer, then jackson's own extractSAMLResponseAttributes (dist/saml/lib.js), which
// calls @boxyhq/saml20 validate (signature with the connection's publicKey, expiry, audience,
// InResponseTo = the session's AuthnRequest id) and maps the claims. The connection and session
// store look-ups and the authorization-code write are left out (in-memory in a benchmark, and
// they are not SAML verification), which favours Polis.
//
// Every response must be accepted with the expected subject and a tampered one must be
// rejected, so a broken call cannot look fast. Prints one line `POLIS_RESULT {json}`.

import { createRequire } from 'node:module';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import crypto from 'node:crypto';

const require = createRequire(import.meta.url);
// Load saml20 through jackson, so it is exactly the version Polis runs.
const jacksonRequire = createRequire(require.resolve('@boxyhq/saml-jackson/package.json'));
const jacksonPkg = jacksonRequire('./package.json');
const saml20 = jacksonRequire('@boxyhq/saml20').default ?? jacksonRequire('@boxyhq/saml20');
const saml20Version = jacksonRequire('@boxyhq/saml20/package.json').version;
const { extractSAMLResponseAttributes } = jacksonRequire('./dist/saml/lib.js');

function fail(msg) {
  console.error(`polis-bench: ${msg}`);
  process.exit(1);
}

const dir = process.argv[2];
if (!dir) fail('usage: node verify.mjs <dir>');
const manifest = JSON.parse(readFileSync(join(dir, 'manifest.json'), 'utf8'));
const certPem = readFileSync(join(dir, 'idp-cert.pem'), 'utf8');
const responses = manifest.responses.map((r) => ({
  ...r,
  b64: readFileSync(join(dir, r.file), 'utf8').trim(),
}));
if (responses.length === 0) fail('no responses');

// The connection as Polis stores it: createSAMLConnection runs saml20.parseMetadata on the IdP
// metadata and keeps the result as connection.idpMetadata.
const certBody = certPem.replace(/-----(BEGIN|END) CERTIFICATE-----/g, '').replace(/\s+/g, '');
const metadataXml =
  `<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata" entityID="${manifest.idp_entity_id}">` +
  `<md:IDPSSODescriptor protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol">` +
  `<md:KeyDescriptor use="signing"><ds:KeyInfo xmlns:ds="http://www.w3.org/2000/09/xmldsig#"><ds:X509Data>` +
  `<ds:X509Certificate>${certBody}</ds:X509Certificate></ds:X509Data></ds:KeyInfo></md:KeyDescriptor>` +
  `<md:SingleSignOnService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect" Location="https://idp.invalid/sso"/>` +
  `</md:IDPSSODescriptor></md:EntityDescriptor>`;
const idpMetadata = await saml20.parseMetadata(metadataXml, {});
if (idpMetadata.entityID !== manifest.idp_entity_id || !idpMetadata.publicKey) {
  fail('parseMetadata did not return the IdP entity id and certificate');
}
// Polis passes its SP private key (used only to decrypt encrypted assertions; ours are not).
const { privateKey } = crypto.generateKeyPairSync('rsa', {
  modulusLength: 2048,
  privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
  publicKeyEncoding: { type: 'spki', format: 'pem' },
});

/** Polis's ACS handling of one response; resolves to the profile or rejects. */
async function acs(b64, inResponseTo) {
  const rawResponse = Buffer.from(b64, 'base64').toString();
  const issuer = saml20.parseIssuer(rawResponse);
  if (issuer !== manifest.idp_entity_id) throw new Error(`unexpected issuer ${issuer}`);
  // Built as in OAuthController.samlResponse: publicKey wins over thumbprint when present.
  const validateOpts = { audience: manifest.audience, privateKey };
  if (idpMetadata.publicKey) validateOpts.publicKey = idpMetadata.publicKey;
  else validateOpts.thumbprint = idpMetadata.thumbprint;
  validateOpts.inResponseTo = inResponseTo;
  return extractSAMLResponseAttributes(rawResponse, validateOpts);
}

async function expectAccepted(r) {
  let profile;
  try {
    profile = await acs(r.b64, r.in_response_to);
  } catch (e) {
    fail(`${r.file} rejected: ${e?.message ?? e}${e?.inner ? ` (${e.inner.message})` : ''}`);
  }
  // claims.map puts the NameID (the nameidentifier claim) into claims.id.
  const got = profile?.claims?.id;
  if (got !== r.name_id) fail(`${r.file}: expected subject ${r.name_id}, got ${JSON.stringify(got)}`);
}

// The check must be able to fail: a response whose NameID was changed after signing.
{
  const r = responses[0];
  const xml = Buffer.from(r.b64, 'base64').toString();
  const tamperedXml = xml.replace(`>${r.name_id}<`, '>attacker@evil.test<');
  if (tamperedXml === xml) fail('could not build the tampered response');
  let accepted = false;
  try {
    await acs(Buffer.from(tamperedXml).toString('base64'), r.in_response_to);
    accepted = true;
  } catch {
    // expected
  }
  if (accepted) fail('a tampered response was accepted');
}

// Warm-up (JIT), as the Rust side warms xmlsec up.
for (const r of responses.slice(0, 5)) await expectAccepted(r);

const cpu0 = process.cpuUsage();
const wall0 = process.hrtime.bigint();
for (const r of responses) await expectAccepted(r);
const wallSecs = Number(process.hrtime.bigint() - wall0) / 1e9;
const cpu = process.cpuUsage(cpu0);
const cpuSecs = (cpu.user + cpu.system) / 1e6;

const result = {
  package: `@boxyhq/saml-jackson@${jacksonPkg.version}`,
  saml20: saml20Version,
  node: process.version,
  responses: responses.length,
  accepted: responses.length,
  tampered_rejected: true,
  cpu_secs: cpuSecs,
  wall_secs: wallSecs,
  per_cpu_sec: responses.length / cpuSecs,
  per_wall_sec: responses.length / wallSecs,
};
console.log(
  `Polis (${result.package}, saml20 ${saml20Version}, node ${process.version}): ` +
    `${result.per_cpu_sec.toFixed(0)}/s per CPU-second (${((cpuSecs * 1000) / responses.length).toFixed(3)} ms CPU each; ` +
    `wall-clock ${result.per_wall_sec.toFixed(0)}/s; ${responses.length} responses, all accepted; tampered one rejected)`,
);
console.log(`POLIS_RESULT ${JSON.stringify(result)}`);
