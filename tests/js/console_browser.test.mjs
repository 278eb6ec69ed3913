// The operator console and the Admin Portal in a real browser (Debian's chromium driven by
// playwright-core), against a real `idbridge serve` started by tests/tests/console_e2e.rs:
// an operator signs in, creates an organization and a SAML connection from a samlify IdP's
// metadata; an app's Admin Portal link (made with the Node SDK's adminPortal.generateLink)
// walks an IT admin through the same setup and is refused on second use. Every page is
// screenshotted at desktop and phone widths into $IDBRIDGE_ARTIFACTS, must not scroll
// sideways on a phone, and must log no console error (the CSP would report blocked content).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { randomBytes, generateKeyPairSync } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { createServer } from 'node:http';
import { inflateRawSync as inflate } from 'node:zlib';
import { resolve } from 'node:path';

import { chromium } from 'playwright-core';
import { WorkOS } from '@workos-inc/node';

import { validate } from './openapi_check.mjs';

const need = (k) => {
  const v = process.env[k];
  if (!v) throw new Error(`${k} must be set`);
  return v;
};
const BASE = need('IDBRIDGE_URL');
const API_KEY = need('IDBRIDGE_API_KEY');
const PORT = Number(need('IDBRIDGE_PORT'));
const USER = need('IDBRIDGE_CONSOLE_USER');
const PASSWORD = need('IDBRIDGE_CONSOLE_PASSWORD');
const ARTIFACTS = need('IDBRIDGE_ARTIFACTS');
const CHROMIUM = process.env.IDBRIDGE_CHROMIUM || '/usr/bin/chromium';
const HAVE_CHROMIUM = existsSync(CHROMIUM);
const PEERS = process.env.IDBRIDGE_PEERS_DIR || '/var/cache/idbridge-peers';
const SAMLIFY = join(PEERS, 'samlify', 'node_modules', 'samlify');
const HAVE_SAMLIFY = existsSync(SAMLIFY);
const TAG = randomBytes(3).toString('hex');
const SAMLIFY_SCRIPT = join(resolve(process.cwd(), '..', '..'), 'crates', 'saml', 'tests', 'peers', 'samlify_idp.js');
const skip = (!HAVE_CHROMIUM && 'chromium not installed') || (!HAVE_SAMLIFY && 'samlify not installed');

const workos = new WorkOS(API_KEY, { apiHostname: '127.0.0.1', https: false, port: PORT, maxRetries: 0 });

const DESKTOP = { viewport: { width: 1280, height: 900 } };
const PHONE = { viewport: { width: 390, height: 844 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true };

/** A samlify IdP's metadata XML, with a throwaway key pair made by openssl for this run. */
function samlifyMetadata(name) {
  const dir = mkdtempSync(join(tmpdir(), 'idbridge-console-js-'));
  try {
    execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-sha256', '-days', '30',
      '-subj', `/CN=${name}`, '-keyout', join(dir, 'key.pem'), '-out', join(dir, 'cert.pem')], { stdio: 'ignore' });
    const saml = createRequire(import.meta.url)(SAMLIFY);
    const idp = saml.IdentityProvider({
      entityID: `https://${name}.example.test/metadata`,
      privateKey: readFileSync(join(dir, 'key.pem'), 'utf8'),
      signingCert: readFileSync(join(dir, 'cert.pem'), 'utf8'),
      nameIDFormat: ['urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress'],
      singleSignOnService: [{ Binding: 'urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect', Location: `https://${name}.example.test/sso` }],
    });
    return idp.getMetadata();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

async function withBrowser(fn) {
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
  try {
    await fn(browser);
  } finally {
    await browser.close();
  }
}

/** A page that records console errors and failed requests. */
async function openPage(context) {
  const page = await context.newPage();
  page.errors = [];
  page.on('console', (m) => { if (m.type() === 'error') page.errors.push(m.text()); });
  page.on('pageerror', (e) => page.errors.push(String(e)));
  return page;
}

/** Screenshots the page, checks it fits the viewport width and logged no error. */
async function shoot(page, name) {
  mkdirSync(ARTIFACTS, { recursive: true });
  await page.screenshot({ path: join(ARTIFACTS, `${name}.png`), fullPage: true });
  const { scroll, width } = await page.evaluate(() => ({ scroll: document.documentElement.scrollWidth, width: window.innerWidth }));
  assert.ok(scroll <= width, `${name}: ${scroll}px wide in a ${width}px viewport (sideways scrolling)`);
  // No table cell is broken over lines (ids, dates, emails): wide tables scroll in their box.
  const broken = await page.evaluate(() => [...document.querySelectorAll('.table-wrap td')].filter((td) => {
    const range = document.createRange();
    range.selectNodeContents(td);
    const tops = [...range.getClientRects()].map((r) => r.top).sort((a, b) => a - b);
    return tops.some((t, i) => i > 0 && t - tops[i - 1] > 8);
  }).map((td) => td.innerText.slice(0, 40)));
  assert.deepEqual(broken, [], `${name}: table cells broken over lines`);
  assert.deepEqual(page.errors, [], `${name}: console errors`);
  // Every input, select and textarea has a label.
  const unlabelled = await page.evaluate(() => [...document.querySelectorAll('input:not([type=hidden]), select, textarea')]
    .filter((el) => !(el.labels && el.labels.length)).map((el) => el.name || el.id));
  assert.deepEqual(unlabelled, [], `${name}: inputs without a label`);
}

test('operator: sign in, create an organization and a SAML connection from samlify metadata', { skip }, async () => {
  const metadata = samlifyMetadata(`samlify-${TAG}`);
  await withBrowser(async (browser) => {
    for (const [size, options] of [['desktop', DESKTOP], ['phone', PHONE]]) {
      const context = await browser.newContext(options);
      const page = await openPage(context);
      // Without a session, the console sends us to sign in.
      await page.goto(`${BASE}/console/organizations`);
      assert.match(page.url(), /\/console\/login$/);
      await shoot(page, `console-login-${size}`);
      // Wrong password first: one clear message.
      await page.getByLabel('Username').fill(USER);
      await page.getByLabel('Password').fill('not the password');
      await page.getByRole('button', { name: 'Sign in' }).click();
      await page.waitForSelector('[role=alert]');
      assert.match(await page.locator('[role=alert]').innerText(), /Wrong username or password/);
      page.errors = page.errors.filter((e) => !/401/.test(e)); // the browser logs the 401 itself
      // Keyboard only: the username field has focus, Tab to the password, Enter submits.
      await page.getByLabel('Username').fill('');
      await page.getByLabel('Username').focus();
      await page.keyboard.type(USER);
      await page.keyboard.press('Tab');
      await page.keyboard.type(PASSWORD);
      await Promise.all([page.waitForURL(/\/console\/organizations$/), page.keyboard.press('Enter')]);
      await shoot(page, `console-organizations-${size}`);
      // Create an organization.
      const name = `Browser Org ${TAG} ${size}`;
      await page.getByLabel('Name', { exact: true }).fill(name);
      await page.getByLabel('Domains').fill(`${size}-${TAG}.example.com`);
      await Promise.all([page.waitForURL(/\/console\/organizations\/org_/), page.getByRole('button', { name: 'Create organization' }).click()]);
      assert.equal(await page.locator('h1').innerText(), name);
      await shoot(page, `console-organization-${size}`);
      // A SAML connection from the samlify IdP's metadata.
      await page.getByLabel('Identity provider').selectOption('OktaSAML');
      await page.getByLabel('Or paste the IdP metadata XML').fill(metadata);
      await Promise.all([page.waitForURL(/\/console\/connections\/conn_/), page.getByRole('button', { name: 'Create connection' }).click()]);
      const connId = page.url().split('/').pop();
      assert.equal(await page.getByLabel('SP metadata URL').inputValue(), `${BASE}/sso/saml/metadata/${connId}`);
      assert.match(await page.getByLabel('ACS URL (single sign-on URL)').inputValue(), new RegExp(connId));
      assert.match(await page.locator('main').innerText(), new RegExp(`samlify-${TAG}\\.example\\.test`));
      await shoot(page, `console-connection-${size}`);
      // The SP metadata URL shown really serves our metadata.
      const sp = await fetch(`${BASE}/sso/saml/metadata/${connId}`);
      assert.equal(sp.status, 200);
      for (const [label, path] of [['Directories', 'directories'], ['Events', 'events'], ['Health', 'health']]) {
        await Promise.all([page.waitForURL(new RegExp(`/console/${path}$`)), page.getByRole('link', { name: label, exact: true }).click()]);
        await shoot(page, `console-${path}-${size}`);
      }
      assert.match(await page.locator('main').innerText(), /idbridge \d+\.\d+\.\d+/);
      // Sign out: the pages need a new sign-in.
      await Promise.all([page.waitForURL(/\/console\/login$/), page.getByRole('button', { name: /Sign out/ }).click()]);
      await page.goto(`${BASE}/console/events`);
      assert.match(page.url(), /\/console\/login$/);
      const cookies = await context.cookies();
      assert.ok(!cookies.some((c) => c.name === 'idbridge_console'), 'the session cookie is gone');
      await context.close();
    }
  });
});

test('Admin Portal: adminPortal.generateLink → SAML setup in the browser → success_url; the link works once', { skip }, async () => {
  const org = await workos.organizations.createOrganization({ name: `Portal Org ${TAG}` });
  const other = await workos.organizations.createOrganization({ name: `Other Org ${TAG}` });
  const successUrl = `${BASE}/healthz?portal=done`;
  const { link } = await workos.adminPortal.generateLink({ organization: org.id, intent: 'sso', successUrl, returnUrl: `${BASE}/healthz?portal=back` });
  assert.match(link, new RegExp(`^${BASE}/portal/launch\\?token=`));
  // The raw answer matches WorkOS's spec (201, {link}).
  const raw = await fetch(`${BASE}/portal/generate_link`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${API_KEY}`, 'Content-Type': 'application/json' },
    body: JSON.stringify({ organization: org.id, intent: 'dsync' }),
  });
  validate('/portal/generate_link', 'post', raw.status, await raw.json());
  const missing = await fetch(`${BASE}/portal/generate_link`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${API_KEY}`, 'Content-Type': 'application/json' },
    body: JSON.stringify({ organization: 'org_01EHQMYV6MBK39QC5PZXHY59C3', intent: 'sso' }),
  });
  assert.equal(missing.status, 404);
  validate('/portal/generate_link', 'post', 404, await missing.json());
  const metadata = samlifyMetadata(`portal-${TAG}`);
  await withBrowser(async (browser) => {
    const context = await browser.newContext(PHONE);
    const page = await openPage(context);
    await page.goto(link);
    assert.match(page.url(), /\/portal$/);
    assert.match(await page.locator('main').innerText(), /Set up single sign-on/);
    assert.ok(!(await page.content()).includes(other.name), 'the other organization is not shown');
    await shoot(page, 'portal-sso-phone');
    await page.getByLabel('Identity provider').selectOption('AzureSAML');
    await page.getByLabel('IdP metadata URL').fill('');
    await page.getByLabel('Or paste the IdP metadata XML').fill(metadata);
    await Promise.all([page.waitForURL(/\/portal\/sso\/connections\/conn_/), page.getByRole('button', { name: 'Create connection' }).click()]);
    const connId = page.url().split('/').pop();
    assert.equal(await page.getByLabel('SP metadata URL').inputValue(), `${BASE}/sso/saml/metadata/${connId}`);
    await shoot(page, 'portal-connection-phone');
    await page.setViewportSize({ width: 1280, height: 900 });
    await shoot(page, 'portal-connection-desktop');
    // The connection belongs to the link's organization (read back through the SDK).
    const conn = await workos.sso.getConnection(connId);
    assert.equal(conn.organizationId, org.id);
    assert.equal(conn.type, 'AzureSAML');
    // Finish on success_url.
    await Promise.all([page.waitForURL((u) => u.toString() === successUrl), page.getByRole('link', { name: /Finish/ }).click()]);
    // The same link again: refused.
    const again = await openPage(await browser.newContext(DESKTOP));
    const resp = await again.goto(link);
    assert.equal(resp.status(), 410);
    assert.match(await again.locator('main').innerText(), /already used or has expired/);
    again.errors = again.errors.filter((e) => !/410/.test(e));
    await shoot(again, 'portal-link-used-desktop');
  });
});

/** A throwaway key pair made by openssl for this run. */
function keyPair(cn) {
  const dir = mkdtempSync(join(tmpdir(), 'idbridge-console-js-'));
  try {
    execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-sha256', '-days', '30',
      '-subj', `/CN=${cn}`, '-keyout', join(dir, 'key.pem'), '-out', join(dir, 'cert.pem')], { stdio: 'ignore' });
    return { key: readFileSync(join(dir, 'key.pem'), 'utf8'), cert: readFileSync(join(dir, 'cert.pem'), 'utf8') };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * A samlify IdP on loopback: GET /sso takes our AuthnRequest (HTTP-Redirect) and shows a
 * "Continue" form that posts a samlify-signed response for `user` to the request's ACS, the
 * way a real IdP's login page does. `signWith` (another key) makes a response we must refuse.
 */
async function samlifyIdp(name, user) {
  const keys = keyPair(name);
  const state = { signWith: keys };
  const server = createServer((req, res) => {
    const url = new URL(req.url, 'http://127.0.0.1');
    if (url.pathname === '/favicon.ico') { res.writeHead(204); res.end(); return; }
    if (url.pathname !== '/sso') { res.writeHead(404); res.end(); return; }
    const xml = inflate(Buffer.from(url.searchParams.get('SAMLRequest'), 'base64')).toString('utf8');
    const reqId = /\sID="([^"]+)"/.exec(xml)[1];
    const acs = /AssertionConsumerServiceURL="([^"]+)"/.exec(xml)[1];
    const sp = /<(?:saml2?:)?Issuer[^>]*>([^<]+)</.exec(xml)[1];
    const response = execFileSync('node', [SAMLIFY_SCRIPT], {
      input: JSON.stringify({
        idp: entityID, idpKey: state.signWith.key, idpCert: state.signWith.cert, encrypt: false, sp, acs,
        signAssertion: true, signMessage: false, spCert: keys.cert, reqId, user,
        attributes: { id: [`samlify-${user}`], email: [user], firstName: ['Ada'], lastName: ['Lovelace'], groups: ['Engineering'] },
      }),
      env: { ...process.env, NODE_PATH: join(PEERS, 'samlify', 'node_modules') },
      encoding: 'utf8',
    }).trim();
    const esc = (v) => String(v).replace(/&/g, '&amp;').replace(/"/g, '&quot;').replace(/</g, '&lt;');
    res.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8' });
    res.end(`<!doctype html><title>samlify IdP</title><form method="post" action="${esc(acs)}">` +
      `<input type="hidden" name="SAMLResponse" value="${esc(response)}">` +
      `<input type="hidden" name="RelayState" value="${esc(url.searchParams.get('RelayState') || '')}">` +
      `<p>Signed in as ${esc(user)}</p><button type="submit">Continue</button></form>`);
  });
  await new Promise((ok) => server.listen(0, '127.0.0.1', ok));
  const base = `http://127.0.0.1:${server.address().port}`;
  const entityID = `${base}/metadata`;
  const saml = createRequire(import.meta.url)(SAMLIFY);
  const metadata = saml.IdentityProvider({
    entityID,
    signingCert: keys.cert,
    nameIDFormat: ['urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress'],
    singleSignOnService: [{ Binding: 'urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect', Location: `${base}/sso` }],
  }).getMetadata();
  return { metadata, state, close: () => new Promise((ok) => server.close(ok)) };
}

/** Signs the operator in (the first test covers the form itself). */
async function signIn(page) {
  await page.goto(`${BASE}/console/login`);
  await page.getByLabel('Username').fill(USER);
  await page.getByLabel('Password').fill(PASSWORD);
  await Promise.all([page.waitForURL(/\/console\/organizations$/), page.getByRole('button', { name: 'Sign in' }).click()]);
}

test('operator: "Test sign-in" runs a real login through a samlify IdP and shows the profile, never a token', { skip: skip || (!existsSync(SAMLIFY_SCRIPT) && 'samlify_idp.js missing') }, async () => {
  const user = `ada-${TAG}@tsi-${TAG}.example.com`;
  const idp = await samlifyIdp(`test-sign-in-${TAG}`, user);
  try {
    await withBrowser(async (browser) => {
      const context = await browser.newContext(DESKTOP);
      const page = await openPage(context);
      await signIn(page);
      await page.getByLabel('Name', { exact: true }).fill(`Test Sign-in Org ${TAG}`);
      await page.getByLabel('Domains').fill(`tsi-${TAG}.example.com`);
      await Promise.all([page.waitForURL(/\/console\/organizations\/org_/), page.getByRole('button', { name: 'Create organization' }).click()]);
      await page.getByLabel('Identity provider').selectOption('GenericSAML');
      await page.getByLabel('Or paste the IdP metadata XML').fill(idp.metadata);
      await Promise.all([page.waitForURL(/\/console\/connections\/conn_/), page.getByRole('button', { name: 'Create connection' }).click()]);
      const connPage = page.url();
      // The IdP's login page, then back in the console with the profile.
      await Promise.all([page.waitForURL(/127\.0\.0\.1:\d+\/sso\?/), page.getByRole('button', { name: 'Test sign-in' }).click()]);
      await Promise.all([page.waitForURL(/\/console\/test-sign-in\/results\/[0-9a-f]{64}$/), page.getByRole('button', { name: 'Continue' }).click()]);
      const main = await page.locator('main').innerText();
      assert.match(main, /The sign-in worked/);
      assert.match(main, new RegExp(user.replace(/[.]/g, '\\.')));
      assert.match(main, /Lovelace/);
      assert.match(main, /prof_/);
      const html = await page.content();
      for (const secret of ['SAMLResponse', 'Assertion', 'access_token', 'code=', 'BEGIN CERTIFICATE']) {
        assert.ok(!html.includes(secret), `the result page shows no ${secret}`);
      }
      assert.ok(!page.url().includes('code='), 'the code is not in the result URL');
      await shoot(page, 'console-test-sign-in-desktop');
      const resultUrl = page.url();
      await page.setViewportSize({ width: 390, height: 844 });
      await shoot(page, 'console-test-sign-in-phone');
      // Another operator session (a new browser context) cannot read this result.
      const other = await openPage(await browser.newContext(DESKTOP));
      await signIn(other);
      const resp = await other.goto(resultUrl);
      assert.equal(resp.status(), 404);
      other.errors = [];
      // A response signed by a key the connection does not trust: the console shows why.
      idp.state.signWith = keyPair(`rogue-${TAG}`);
      await page.setViewportSize({ width: 1280, height: 900 });
      await page.goto(connPage);
      await Promise.all([page.waitForURL(/127\.0\.0\.1:\d+\/sso\?/), page.getByRole('button', { name: 'Test sign-in' }).click()]);
      await Promise.all([page.waitForURL(/\/console\/test-sign-in\/results\//), page.getByRole('button', { name: 'Continue' }).click()]);
      assert.match(await page.locator('main').innerText(), /The sign-in failed/);
      assert.ok(!(await page.locator('main').innerText()).includes('Lovelace'));
      await shoot(page, 'console-test-sign-in-failed-desktop');
    });
  } finally {
    await idp.close();
  }
});
