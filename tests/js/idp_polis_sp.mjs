// Ory Polis (@boxyhq/saml-jackson, mem engine) as a service provider of the RUNNING idbridge IdP
// (tests/tests/idp_e2e.rs): a SAML connection is created from idbridge's IdP metadata, Polis's
// OAuth flow starts (authorize → a signed AuthnRequest on HTTP-Redirect to idbridge's SSO URL),
// the test logs in at idbridge's login page (directory mode against slapd) and hands Polis the
// SAMLResponse idbridge posted; Polis's ACS verifies it, and its token + userInfo endpoints return
// the profile. A tampered Response must be refused (no code).
//
// Line protocol (one JSON object per line):
//   stdin {idpMetadata}                         → stdout {spMetadata}
//   stdin {authorize: "<state>"}                → stdout {redirect_url}
//   stdin {acs: {SAMLResponse, RelayState}, state} → stdout {profile} | {refused: "<why>"}
// End of stdin ends the script. Any unexpected failure: stdout {error}.
import { createRequire } from 'node:module';
import { createInterface } from 'node:readline';
import crypto from 'node:crypto';

// Logs go to stderr: stdout carries the protocol.
console.log = console.info = console.warn = console.debug = (...a) => process.stderr.write(a.join(' ') + '\n');

const require = createRequire(process.env.POLIS_DIR + '/package.json');
const jackson = require('@boxyhq/saml-jackson');

const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
const next = async () => {
  const { value, done } = await lines.next();
  return done ? null : JSON.parse(value);
};
const send = (o) => new Promise((ok) => process.stdout.write(JSON.stringify(o) + '\n', ok));

const TENANT = 'idbridge.test';
const PRODUCT = 'idbridge-e2e';
const REDIRECT = 'https://app.polis.test/callback';

try {
  const { connectionAPIController, oauthController, spConfig } = await jackson.controllers({
    externalUrl: 'https://polis.test',
    samlPath: '/api/oauth/saml',
    samlAudience: 'https://saml.polis.test',
    db: { engine: 'mem' },
    idpEnabled: false,
  });
  const { idpMetadata } = await next();
  await connectionAPIController.createSAMLConnection({
    name: 'idbridge',
    description: 'idbridge IdP (running server)',
    rawMetadata: idpMetadata,
    tenant: TENANT,
    product: PRODUCT,
    redirectUrl: JSON.stringify([REDIRECT]),
    defaultRedirectUrl: REDIRECT,
  });
  await send({ spMetadata: await spConfig.toXMLMetadata() });

  const verifiers = new Map();
  for (let msg = await next(); msg; msg = await next()) {
    if (msg.authorize) {
      const verifier = crypto.randomBytes(32).toString('base64url');
      verifiers.set(msg.authorize, verifier);
      const { redirect_url } = await oauthController.authorize({
        tenant: TENANT,
        product: PRODUCT,
        redirect_uri: REDIRECT,
        state: msg.authorize,
        response_type: 'code',
        client_id: 'dummy',
        code_challenge: crypto.createHash('sha256').update(verifier).digest('base64url'),
        code_challenge_method: 'S256',
      });
      if (!redirect_url) throw new Error('authorize returned no redirect_url');
      await send({ redirect_url });
    } else if (msg.acs) {
      let acs;
      try {
        acs = await oauthController.samlResponse(msg.acs);
      } catch (e) {
        await send({ refused: String(e && e.message ? e.message : e) });
        continue;
      }
      const back = acs.redirect_url ? new URL(acs.redirect_url) : null;
      const code = back && back.searchParams.get('code');
      if (!code) {
        await send({ refused: 'no code: ' + JSON.stringify(acs) });
        continue;
      }
      if (back.searchParams.get('state') !== msg.state) throw new Error('state lost: ' + back);
      const token = await oauthController.token({
        code,
        grant_type: 'authorization_code',
        client_id: `tenant=${TENANT}&product=${PRODUCT}`,
        client_secret: 'dummy',
        redirect_uri: REDIRECT,
        code_verifier: verifiers.get(msg.state),
      });
      const profile = await oauthController.userInfo(token.access_token);
      await send({ profile });
    } else {
      throw new Error('unknown message ' + JSON.stringify(msg));
    }
  }
  // Jackson keeps timers alive (mem-store TTL sweeps): exit once stdin ends.
  process.exit(0);
} catch (e) {
  await send({ error: String(e && e.stack ? e.stack : e) });
  process.exit(1);
}
