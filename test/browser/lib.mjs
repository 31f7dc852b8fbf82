// Helpers for the browser tests: Debian's Chromium driven by playwright-core, steps that log
// and screenshot, and a small API client for setting the scene.

import { chromium } from 'playwright-core';
import fs from 'node:fs';
import path from 'node:path';

export const BASE = process.env.CHANCED_WEB_URL || 'http://127.0.0.1:8080';
const OUT = process.env.CHANCED_TEST_OUTPUT || path.resolve(path.dirname(new URL(import.meta.url).pathname), '../../build/test-output');
export const SHOTS = path.join(OUT, 'screenshots');

export const DESKTOP = { viewport: { width: 1280, height: 820 }, deviceScaleFactor: 1 };
export const PHONE = {
  viewport: { width: 390, height: 844 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true,
  userAgent: 'Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0 Mobile Safari/537.36',
};

const ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'];

export async function launch() {
  return chromium.launch({ executablePath: process.env.CHANCED_CHROMIUM || '/usr/bin/chromium', args: ARGS, headless: true });
}

// A new context whose console errors, page errors and CSP violations fail the test.
export async function newPage(browser, device, problems) {
  const context = await browser.newContext({ ...device, baseURL: BASE, colorScheme: 'light', locale: 'en-US', timezoneId: 'Asia/Tehran' });
  await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: BASE });
  const page = await context.newPage();
  page.setDefaultTimeout(15000);
  page.on('pageerror', (e) => problems.push('page error: ' + e.message));
  page.on('console', (m) => {
    const t = m.text();
    // A failed request is logged by the browser too; those the app expects are checked by the
    // steps (401 on a lost session, 409 on a used-up category, 403 for a player on /admin).
    if (m.type() === 'error' && !/Failed to load resource: the server responded with a status of (401|403|404|409)/.test(t)) {
      problems.push('console error: ' + t);
    }
  });
  return { context, page };
}

let shotSeq = 0;
const PREFIX = (process.argv[2] || 'web').replace(/[^a-z0-9-]/gi, '');
// A PNG of the page as a person sees it (the viewport), or of the whole page with full.
export async function shot(page, name, { full = false } = {}) {
  fs.mkdirSync(SHOTS, { recursive: true });
  const file = path.join(SHOTS, `${PREFIX}-${String(++shotSeq).padStart(2, '0')}-${name}.png`);
  // from the top: a sticky bar would otherwise be drawn where the page was scrolled to; and
  // without the toasts, which a full-page picture would draw in the middle of the page
  await page.evaluate((f) => {
    window.scrollTo(0, 0);
    const t = document.getElementById('toasts');
    if (t && f) {
      t.hidden = true;
    }
  }, full);
  await page.screenshot({ path: file, fullPage: full, animations: 'disabled', caret: 'hide' });
  await page.evaluate(() => {
    const t = document.getElementById('toasts');
    if (t) {
      t.hidden = false;
    }
  });
  console.log(`  screenshot ${file}`);
  return file;
}

export async function step(name, fn) {
  const t0 = Date.now();
  try {
    await fn();
    console.log(`ok - ${name} (${Date.now() - t0} ms)`);
  } catch (e) {
    console.log(`not ok - ${name}`);
    throw e;
  }
}

export function assert(cond, msg) {
  if (!cond) {
    throw new Error('assertion failed: ' + msg);
  }
}

export async function until(fn, what, ms = 20000, every = 500) {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) {
      return v;
    }
    if (Date.now() > end) {
      throw new Error('timed out waiting for ' + what);
    }
    await new Promise((r) => setTimeout(r, every));
  }
}

// "12,500 Toman" -> 12500
export function parseToman(s) {
  return Number(String(s).replace(/[^0-9]/g, ''));
}

// A bearer-token API client (Node's fetch), for what a test needs besides the browser.
export async function apiLogin(username, password, signup = false) {
  let r;
  for (let i = 0; i < 20; i++) { // 503 busy: password hashing saturated on a loaded machine
    r = await fetch(BASE + '/api/v1/auth/' + (signup ? 'signup' : 'login'), {
      method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ username, password }),
    });
    if (r.status !== 503) {
      break;
    }
    await new Promise((res) => setTimeout(res, 1000));
  }
  if (r.status !== (signup ? 201 : 200)) {
    throw new Error(`${signup ? 'signup' : 'login'} ${username}: ${r.status} ${await r.text()}`);
  }
  const token = (await r.json()).token;
  return async (method, p, body, headers = {}) => {
    const res = await fetch(BASE + '/api/v1' + p, {
      method, body: body === undefined ? undefined : JSON.stringify(body),
      headers: { Authorization: 'Bearer ' + token, ...(body === undefined ? {} : { 'Content-Type': 'application/json' }), ...headers },
    });
    const text = await res.text();
    return { status: res.status, json: text ? JSON.parse(text) : null };
  };
}

// POST /admin/batches answers 202 at once; this polls the batch until it is ready.
export async function generateReady(api, body) {
  const r = await api('POST', '/admin/batches', body);
  if (r.status !== 202) {
    throw new Error('batch: ' + r.status + ' ' + JSON.stringify(r.json));
  }
  let b = r.json.batch;
  for (let i = 0; b.state === 'generating' && i < 1200; i++) {
    await new Promise((res) => setTimeout(res, 100));
    b = (await api('GET', '/admin/batches/' + b.id)).json.batch;
  }
  if (b.state !== 'ready') {
    throw new Error('batch ' + b.id + ' ended ' + b.state + ': ' + JSON.stringify(b));
  }
  return b;
}

export function rand() {
  return Math.random().toString(36).slice(2, 8);
}
