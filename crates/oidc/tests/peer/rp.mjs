// An independent relying party for idbridge's OpenID Provider: openid-client (v6, on
// oauth4webapi + jose) discovers the provider, builds an authorization URL with PKCE S256,
// nonce and state, follows it (the test provider logs a fixed user in and redirects back with a
// code), exchanges the code (validating the ID token: iss, aud, exp, iat, nonce, at_hash, and —
// with enableNonRepudiationChecks, which openid-client leaves off by default for tokens fetched
// over TLS — its signature against the JWKS), and fetches userinfo.
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
const res = await fetch(url, { redirect: 'manual' });
const location = res.headers.get('location');
if (res.status !== 302 || !location) {
  throw new Error(`authorization endpoint answered ${res.status}: ${await res.text()}`);
}
const tokens = await client.authorizationCodeGrant(config, new URL(location), {
  pkceCodeVerifier: verifier,
  expectedNonce: nonce,
  expectedState: state,
  idTokenExpected: true,
});
const claims = tokens.claims();
const userinfo = await client.fetchUserInfo(config, tokens.access_token, claims.sub);
process.stdout.write(JSON.stringify({ claims, userinfo, scope: tokens.scope, tokenType: tokens.token_type }));
