// A real OpenID Provider (the certified `oidc-provider` library) for idbridge-oidc's
// end-to-end test. Configured entirely from the environment; the signing key is generated at
// start-up, so restarting with another OP_KID is a key rotation.
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import Provider from 'oidc-provider';

const env = (name) => {
  const v = process.env[name];
  if (!v) { console.error(`missing ${name}`); process.exit(2); }
  return v;
};
const port = Number(env('OP_PORT'));
const alg = env('OP_ALG');
const kid = env('OP_KID');

const { privateKey } = alg.startsWith('ES')
  ? generateKeyPairSync('ec', { namedCurve: 'P-256' })
  : generateKeyPairSync('rsa', { modulusLength: 2048 });
const jwk = { ...privateKey.export({ format: 'jwk' }), kid, alg, use: 'sig' };
// Optional: per-login claim overrides as a JSON object (login → claims), so one provider can
// serve users whose groups map to different roles; other logins get the defaults below.
const users = process.env.OP_USERS ? JSON.parse(process.env.OP_USERS) : {};

const configuration = {
  clients: [{
    client_id: env('OP_CLIENT_ID'),
    client_secret: env('OP_CLIENT_SECRET'),
    redirect_uris: [env('OP_REDIRECT_URI')],
    token_endpoint_auth_method: env('OP_AUTH_METHOD'),
    id_token_signed_response_alg: alg,
    grant_types: ['authorization_code'],
    response_types: ['code'],
  }],
  jwks: { keys: [jwk] },
  async findAccount(ctx, id) {
    return {
      accountId: id,
      async claims() {
        return {
          sub: id,
          email: `${id}@example.com`,
          email_verified: true,
          given_name: 'Grace',
          family_name: 'Hopper',
          groups: ['navy', 'cobol'],
          ...users[id],
        };
      },
    };
  },
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['given_name', 'family_name'],
    groups: ['groups'],
  },
  scopes: ['openid', 'email', 'profile', 'groups'],
  features: { devInteractions: { enabled: true } },
  pkce: { required: () => true },
  cookies: { keys: [randomBytes(32).toString('hex')] },
};

const provider = new Provider(`http://127.0.0.1:${port}`, configuration);
provider.listen(port, '127.0.0.1', () => console.log('READY'));
