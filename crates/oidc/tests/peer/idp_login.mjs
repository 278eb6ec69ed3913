// openid-client (v6) as a relying party of idbridge's OpenID Provider served by the real
// `idbridge serve` (tests/tests/idp_e2e.rs): discovery (issuer checked exactly), an
// authorization URL with PKCE S256, nonce and state, the directory-mode login page filled in
// over plain HTTP (cookie, CSRF token and form action taken from the page), the code exchanged
// (ID token validated: signature against the JWKS, iss, aud, exp, iat, nonce, at_hash) and
// userinfo fetched; then the same code once more, which must be refused.
// Reads a JSON config on stdin, prints JSON on stdout.
import * as client from 'openid-client';
import { readFileSync } from 'node:fs';

const cfg = JSON.parse(readFileSync(0, 'utf8'));
const auth = cfg.authMethod === 'client_secret_post'
  ? client.ClientSecretPost(cfg.clientSecret)
  : client.ClientSecretBasic(cfg.clientSecret);
const config = await client.discovery(new URL(cfg.issuer), cfg.clientId, undefined, auth, {
  execute: [client.allowInsecureRequests],
});
client.enableNonRepudiationChecks(config);
const verifier = client.randomPKCECodeVerifier();
const challenge = await client.calculatePKCECodeChallenge(verifier);
const nonce = client.randomNonce();
const state = client.randomState();
const url = client.buildAuthorizationUrl(config, {
  redirect_uri: cfg.redirectUri,
  scope: cfg.scope,
  code_challenge: challenge,
  code_challenge_method: 'S256',
  nonce,
  state,
});
const page = await fetch(url, { redirect: 'manual' });
const html = await page.text();
if (page.status !== 200) throw new Error(`authorization endpoint answered ${page.status}: ${html}`);
const cookie = page.headers.getSetCookie().map((c) => c.split(';')[0]).join('; ');
const field = (name) => {
  const m = html.match(new RegExp(`name="${name}" value="([^"]*)"`));
  if (!m) throw new Error(`no ${name} on the login page: ${html}`);
  return m[1];
};
const action = html.match(/action="([^"]*)"/)[1];
const login = await fetch(new URL(action, url), {
  method: 'POST',
  redirect: 'manual',
  headers: { cookie, 'content-type': 'application/x-www-form-urlencoded' },
  body: new URLSearchParams({ k: field('k'), csrf: field('csrf'), login: cfg.login, password: cfg.password }),
});
const location = login.headers.get('location');
if (login.status !== 303 || !location) {
  throw new Error(`login form answered ${login.status}: ${await login.text()}`);
}
const tokens = await client.authorizationCodeGrant(config, new URL(location), {
  pkceCodeVerifier: verifier,
  expectedNonce: nonce,
  expectedState: state,
  idTokenExpected: true,
});
const claims = tokens.claims();
const userinfo = await client.fetchUserInfo(config, tokens.access_token, claims.sub);
let replay = null;
try {
  await client.authorizationCodeGrant(config, new URL(location), {
    pkceCodeVerifier: verifier,
    expectedNonce: nonce,
    expectedState: state,
  });
  replay = 'accepted';
} catch (e) {
  replay = e.error ?? e.code ?? String(e);
}
process.stdout.write(JSON.stringify({ claims, userinfo, scope: tokens.scope, replay, location }));
