// Ory Polis (@boxyhq/saml-jackson, mem engine) as the service provider of idbridge's IdP:
// a SAML connection is created from idbridge's IdP metadata, Polis's OAuth flow starts
// (authorize → an AuthnRequest on the HTTP-Redirect binding), idbridge answers it, Polis's ACS
// takes the Response, the code is exchanged and userInfo returns the profile.
//
// Line protocol (JSON per line): stdin {idpMetadata} → stdout {redirect_url, spMetadata}
// → stdin {SAMLResponse, RelayState} → stdout {profile} (or {error}).
import { createRequire } from 'node:module';
import { createInterface } from 'node:readline';
import crypto from 'node:crypto';

// Logs go to stderr: stdout carries the protocol.
console.log = console.info = console.warn = console.debug = (...a) => process.stderr.write(a.join(' ') + '\n');

const require = createRequire(process.env.POLIS_DIR + '/package.json');
const jackson = require('@boxyhq/saml-jackson');

const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
const next = async () => JSON.parse((await lines.next()).value);
const send = (o, done) => process.stdout.write(JSON.stringify(o) + '\n', done);

const TENANT = 'idbridge.test';
const PRODUCT = 'idbridge-interop';
const REDIRECT = 'https://app.polis.test/callback';
const externalUrl = 'https://polis.test';
const samlPath = '/api/oauth/saml';
const samlAudience = 'https://saml.polis.test';

try {
  const { connectionAPIController, oauthController, spConfig } = await jackson.controllers({
    externalUrl,
    samlPath,
    samlAudience,
    db: { engine: 'mem' },
    idpEnabled: false,
  });
  const { idpMetadata } = await next();
  await connectionAPIController.createSAMLConnection({
    name: 'idbridge',
    description: 'idbridge IdP',
    rawMetadata: idpMetadata,
    tenant: TENANT,
    product: PRODUCT,
    redirectUrl: JSON.stringify([REDIRECT]),
    defaultRedirectUrl: REDIRECT,
  });
  const verifier = crypto.randomBytes(32).toString('base64url');
  const challenge = crypto.createHash('sha256').update(verifier).digest('base64url');
  const { redirect_url } = await oauthController.authorize({
    tenant: TENANT,
    product: PRODUCT,
    redirect_uri: REDIRECT,
    state: 'app-state-1',
    response_type: 'code',
    client_id: 'dummy',
    code_challenge: challenge,
    code_challenge_method: 'S256',
  });
  if (!redirect_url) throw new Error('authorize returned no redirect_url');
  send({ redirect_url, spMetadata: await spConfig.toXMLMetadata() });

  const { SAMLResponse, RelayState } = await next();
  const acs = await oauthController.samlResponse({ SAMLResponse, RelayState });
  if (!acs.redirect_url) throw new Error('ACS: ' + JSON.stringify(acs));
  const back = new URL(acs.redirect_url);
  if (back.searchParams.get('state') !== 'app-state-1') throw new Error('state lost: ' + back);
  const token = await oauthController.token({
    code: back.searchParams.get('code'),
    grant_type: 'authorization_code',
    client_id: `tenant=${TENANT}&product=${PRODUCT}`,
    client_secret: 'dummy',
    redirect_uri: REDIRECT,
    code_verifier: verifier,
  });
  const profile = await oauthController.userInfo(token.access_token);
  // Jackson keeps timers alive (mem-store TTL sweeps): exit once the answer is out.
  send({ profile }, () => process.exit(0));
} catch (e) {
  send({ error: String(e && e.message ? e.message : e) }, () => process.exit(1));
}
