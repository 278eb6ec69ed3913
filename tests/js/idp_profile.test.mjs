// idbridge as an IdP (issue 16), the application's end: a second idbridge is the SP (a SAML
// connection created from the first idbridge's IdP metadata URL); tests/tests/idp_e2e.rs drives
// the browser part (AuthnRequest → login page on the first idbridge → password checked against
// slapd → signed assertion posted to the second idbridge's ACS) and hands the code here. The
// profile must arrive through the official WorkOS Node SDK with email, names, idp_id and groups.
import { test } from 'node:test';
import assert from 'node:assert/strict';

import { WorkOS } from '@workos-inc/node';

const need = (k) => {
  const v = process.env[k];
  if (!v) throw new Error(`${k} must be set`);
  return v;
};
const API_KEY = need('IDBRIDGE_API_KEY');
const CLIENT_ID = need('IDBRIDGE_CLIENT_ID');
const PORT = Number(need('IDBRIDGE_PORT'));
const CODE = need('IDBRIDGE_IDP_CODE');
const EXPECT = JSON.parse(need('IDBRIDGE_IDP_EXPECT'));

const workos = new WorkOS(API_KEY, {
  apiHostname: '127.0.0.1',
  https: false,
  port: PORT,
  maxRetries: 0,
  clientId: CLIENT_ID,
});

test('getProfileAndToken returns the directory user the first idbridge asserted', async () => {
  const { profile, accessToken } = await workos.sso.getProfileAndToken({ code: CODE, clientId: CLIENT_ID });
  assert.match(profile.id, /^prof_/);
  assert.equal(profile.email, EXPECT.email);
  assert.equal(profile.firstName, EXPECT.firstName);
  assert.equal(profile.lastName, EXPECT.lastName);
  assert.equal(profile.idpId, EXPECT.idpId);
  assert.equal(profile.connectionId, EXPECT.connectionId);
  assert.equal(profile.organizationId, EXPECT.organizationId);
  assert.deepEqual([...profile.groups].sort(), [...EXPECT.groups].sort());
  const again = await workos.sso.getProfile({ accessToken });
  assert.equal(again.id, profile.id);
  // The code was single-use.
  await assert.rejects(workos.sso.getProfileAndToken({ code: CODE, clientId: CLIENT_ID }));
});
