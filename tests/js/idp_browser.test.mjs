// The IdP login page in a real browser (Debian's chromium driven by playwright-core): a full
// SP-initiated login from a second idbridge (B) through the first idbridge's (A) login page ends
// on the app's redirect URI with a code. Driven by tests/tests/idp_e2e.rs, which starts slapd,
// both servers and hands over the authorize URL and a user's credentials. The login is done
// with the keyboard only (autofocus, Tab, Enter), and again on a phone-sized screen after a
// wrong password; screenshots of the login page are kept in $IDBRIDGE_ARTIFACTS. With
// "remember this browser" ticked, a second login from the same browser skips the login page.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync } from 'node:fs';
import { createServer } from 'node:http';
import { join } from 'node:path';

import { chromium } from 'playwright-core';

const need = (k) => {
  const v = process.env[k];
  if (!v) throw new Error(`${k} must be set`);
  return v;
};
const AUTHORIZE = JSON.parse(need('IDBRIDGE_AUTHORIZE_URLS'));
const CALLBACK = need('IDBRIDGE_SSO_CALLBACK');
const APP_PORT = Number(need('IDBRIDGE_APP_PORT'));
const LOGIN = need('IDBRIDGE_IDP_LOGIN');
const PASSWORD = need('IDBRIDGE_IDP_PASSWORD');
const ARTIFACTS = need('IDBRIDGE_ARTIFACTS');
const CHROMIUM = process.env.IDBRIDGE_CHROMIUM || '/usr/bin/chromium';
const HAVE_CHROMIUM = existsSync(CHROMIUM);

async function withBrowser(options, fn) {
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
  try {
    const context = await browser.newContext(options);
    const page = await context.newPage();
    await fn(page);
  } finally {
    await browser.close();
  }
}

// The app: answers its callback (the URL with the code is what counts).
const app = createServer((_req, res) => {
  res.writeHead(200, { 'content-type': 'text/html' });
  res.end('<p>the app</p>');
});
await new Promise((ok) => app.listen(APP_PORT, '127.0.0.1', ok));
after(() => app.close());

function assertCode(url) {
  const u = new URL(url);
  assert.equal(`${u.origin}${u.pathname}`, CALLBACK, url);
  assert.equal(u.searchParams.get('error'), null, url);
  assert.match(u.searchParams.get('code') ?? '', /.{16,}/, url);
}

test('keyboard-only SP-initiated login ends on the app with a code', { skip: !HAVE_CHROMIUM && 'chromium not installed' }, async () => {
  mkdirSync(ARTIFACTS, { recursive: true });
  await withBrowser({ viewport: { width: 1280, height: 800 } }, async (page) => {
    await page.goto(AUTHORIZE[0]);
    await page.waitForSelector('input[name=password]');
    assert.match(page.url(), /\/idp\/org_[^/]+\/saml\/sso/);
    await page.screenshot({ path: join(ARTIFACTS, 'idp-login-desktop.png'), fullPage: true });
    // The login field has focus; Tab reaches the password; Enter submits.
    assert.equal(await page.evaluate(() => document.activeElement?.id), 'login');
    await page.keyboard.type(LOGIN);
    await page.keyboard.press('Tab');
    assert.equal(await page.evaluate(() => document.activeElement?.id), 'password');
    await page.keyboard.type(PASSWORD);
    await Promise.all([
      page.waitForURL((u) => u.toString().startsWith(CALLBACK), { timeout: 15000 }),
      page.keyboard.press('Enter'),
    ]);
    assertCode(page.url());
  });
});

test('on a phone: no sideways scrolling, one message for a wrong password, then a code', { skip: !HAVE_CHROMIUM && 'chromium not installed' }, async () => {
  mkdirSync(ARTIFACTS, { recursive: true });
  await withBrowser({ viewport: { width: 390, height: 844 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true }, async (page) => {
    await page.goto(AUTHORIZE[1]);
    await page.waitForSelector('input[name=password]');
    const fits = await page.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth);
    assert.ok(fits, 'the login page scrolls sideways on a phone');
    await page.screenshot({ path: join(ARTIFACTS, 'idp-login-phone.png'), fullPage: true });
    await page.fill('#login', LOGIN);
    await page.fill('#password', 'not-the-password');
    await Promise.all([page.waitForLoadState('load'), page.tap('button[type=submit]')]);
    await page.waitForSelector('[role=alert]');
    assert.equal((await page.textContent('[role=alert]'))?.trim(), 'The username or password is incorrect.');
    await page.screenshot({ path: join(ARTIFACTS, 'idp-login-phone-refused.png'), fullPage: true });
    // The login name is kept; the password is not.
    assert.equal(await page.inputValue('#login'), LOGIN);
    assert.equal(await page.inputValue('#password'), '');
    await page.fill('#password', PASSWORD);
    await Promise.all([
      page.waitForURL((u) => u.toString().startsWith(CALLBACK), { timeout: 15000 }),
      page.tap('button[type=submit]'),
    ]);
    assertCode(page.url());
  });
});

test('remember this browser: the second login skips the password page', { skip: !HAVE_CHROMIUM && 'chromium not installed' }, async () => {
  mkdirSync(ARTIFACTS, { recursive: true });
  await withBrowser({ viewport: { width: 1280, height: 800 } }, async (page) => {
    await page.goto(AUTHORIZE[2]);
    await page.waitForSelector('input[name=remember]');
    await page.fill('#login', LOGIN);
    await page.fill('#password', PASSWORD);
    await page.check('#remember');
    await page.screenshot({ path: join(ARTIFACTS, 'idp-login-remember.png'), fullPage: true });
    await Promise.all([
      page.waitForURL((u) => u.toString().startsWith(CALLBACK), { timeout: 15000 }),
      page.click('button[type=submit]'),
    ]);
    assertCode(page.url());
    // The same browser again: every page it passes through is recorded; none is the login page.
    const seen = [];
    page.on('framenavigated', (f) => { if (f === page.mainFrame()) seen.push(f.url()); });
    await page.goto(AUTHORIZE[3]);
    await page.waitForURL((u) => u.toString().startsWith(CALLBACK), { timeout: 15000 });
    assertCode(page.url());
    assert.equal(await page.locator('input[name=password]').count(), 0);
    assert.ok(seen.some((u) => /\/idp\/org_[^/]+\/saml\/sso/.test(u)), `went through the IdP: ${seen}`);
    await page.screenshot({ path: join(ARTIFACTS, 'idp-remembered-second-login.png'), fullPage: true });
  });
});
