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
