// Browser tests of the chanced web app against a running stack (started by
// test/integration/test_web.py):  node test/browser/run.mjs player|admin|denied
//
// Environment: CHANCED_WEB_URL (the gateway), CHANCED_WEB_ADMIN_USER / _PASSWORD (an admin made
// with `chanced admin create-user`), CHANCED_TEST_OUTPUT (screenshots go to its screenshots/).
// Prints "ok - step" lines; exits 1 on the first failure (with a screenshot of the page then).

import {
  launch, newPage, shot, step, assert, until, parseToman, apiLogin, generateReady, rand, BASE, DESKTOP, PHONE,
} from './lib.mjs';

const ADMIN_USER = process.env.CHANCED_WEB_ADMIN_USER || 'root';
const ADMIN_PASSWORD = process.env.CHANCED_WEB_ADMIN_PASSWORD || 'admin password 1';
const PASSWORD = 'correct horse 1';

async function signUp(page, username) {
  await page.goto('/');
  await page.waitForURL(/\/signin/);
  await page.getByRole('link', { name: 'Create an account' }).click();
  await page.waitForURL(/\/signup/);
  await page.getByLabel('Username').fill(username);
  await page.getByLabel('Password').fill(PASSWORD);
  await page.getByRole('button', { name: 'Create account' }).click();
  await page.getByRole('heading', { name: 'Pick a category' }).waitFor();
}

async function signIn(page, username, password) {
  await page.goto('/signin');
  await page.getByLabel('Username').fill(username);
  await page.getByLabel('Password').fill(password);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('heading', { name: 'Pick a category' }).waitFor();
}

async function headerBalance(page) {
  return parseToman(await page.getByTestId('balance').innerText());
}

// The card of a category: a batch of one category keeps the batch name, others get " 1", " 2"...
function card(page, name) {
  const re = new RegExp('^' + name.replace(/[.*+?^${}()|[\]\\]/g, '\\$&') + '( 1)?$');
  return page.locator('.cat-card', { has: page.getByRole('heading', { name: re }) });
}

// innerText with the narrow and no-break spaces of the number formats made plain
async function text(loc) {
  return (await loc.innerText()).replace(/[\u00a0\u2009\u202f]/g, ' ');
}

// ---- a player signs up, claims, sees the code, the balance and the history row ----

async function player(browser, problems) {
  const admin = await apiLogin(ADMIN_USER, ADMIN_PASSWORD);
  const tag = rand();
  await generateReady(admin, { categories: 3, codes_per_category: 20, reward_min: 1000,
    reward_max: 100000, reward_step: 500, name: `Spring ${tag}` });
  await generateReady(admin, { categories: 1, codes_per_category: 1, reward_min: 5000,
    reward_max: 5000, name: `Last one ${tag}` });
  await generateReady(admin, { categories: 1, codes_per_category: 5, reward_min: 2000,
    reward_max: 2000, name: `Slow ${tag}` });
  const chancePid = Number(process.env.CHANCED_WEB_CHANCE_PID || 0);

  const { context, page } = await newPage(browser, DESKTOP, problems);
  const username = 'pia_' + tag;
  let code;
  let reward;
  let total = 0; // the balance the player should have
  let codes = 0; // the codes the player should have
  try {
    await step('the sign-in page is shown to a visitor', async () => {
      await page.goto('/');
      await page.waitForURL(/\/signin/);
      await page.getByRole('heading', { name: 'Welcome back' }).waitFor();
      await shot(page, 'signin-desktop');
    });
    await step('a wrong password is refused with a clear message', async () => {
      await page.getByLabel('Username').fill('nobody_' + tag);
      await page.getByLabel('Password').fill('wrong password');
      await page.getByRole('button', { name: 'Sign in' }).click();
      await page.getByText('Wrong username or password').waitFor();
    });
    await step('a player signs up and sees the categories with rewards and what remains', async () => {
      await signUp(page, username);
      await card(page, `Spring ${tag} 1`).waitFor();
      const t = await text(card(page, `Spring ${tag} 1`));
      assert(/20\s+codes left/.test(t), 'remaining shown: ' + t);
      assert(t.includes('1,000 – 100,000 Toman'), 'reward range shown: ' + t);
      assert(await headerBalance(page) === 0, 'balance starts at 0');
      // the session lives in the HttpOnly cookie only: nothing in script-visible storage
      const seen = await page.evaluate(() => ({
        local: localStorage.length, session: sessionStorage.length, cookie: document.cookie,
      }));
      assert(seen.local === 0 && seen.session === 0, 'no web storage used: ' + JSON.stringify(seen));
      assert(!seen.cookie.includes('chanced_session') && seen.cookie.includes('chanced_csrf='), 'cookies: ' + seen.cookie);
      const jar = await context.cookies();
      const sess = jar.find((c) => c.name === 'chanced_session');
      assert(sess && sess.httpOnly && sess.sameSite === 'Strict', 'session cookie: ' + JSON.stringify(sess));
      await shot(page, 'play-desktop');
    });
    await step('claiming reveals the code and the reward, and the balance follows', async () => {
      await card(page, `Spring ${tag} 1`).getByRole('button', { name: 'Claim a code' }).click();
      const dlg = page.getByRole('dialog', { name: 'Your code is revealed' });
      await dlg.waitFor();
      code = (await dlg.getByTestId('reveal-code').innerText()).trim();
      assert(/^[A-Z0-9-]{6,}$/.test(code), 'a code: ' + code);
      await page.waitForTimeout(1200); // the ticket turns and the amount counts up
      reward = parseToman(await dlg.getByTestId('reveal-reward').innerText());
      assert(reward >= 1000 && reward <= 100000 && reward % 500 === 0, 'reward in range: ' + reward);
      assert(parseToman(await dlg.getByTestId('reveal-balance').innerText()) === reward, 'new balance in the dialog');
      await shot(page, 'reveal-desktop');
      total += reward;
      codes += 1;
      await until(async () => (await headerBalance(page)) === reward, 'header balance = reward', 5000, 100);
      await dlg.getByRole('button', { name: 'Copy code' }).click();
      const clip = await page.evaluate(() => navigator.clipboard.readText());
      assert(clip === code, 'copied to the clipboard: ' + clip);
      await page.keyboard.press('Escape');
      await dlg.waitFor({ state: 'detached' });
      // per-user limit 1: the category is gone from the list
      await until(async () => (await card(page, `Spring ${tag} 1`).count()) === 0, 'claimed category hidden', 5000, 100);
    });
    await step('an exhausted category says so', async () => {
      // another player takes the only code of "Last one" while this page still shows it
      const other = await apiLogin('oli_' + tag, PASSWORD, true);
      const cats = await other('GET', '/categories');
      const last = cats.json.items.find((c) => c.name.startsWith(`Last one ${tag}`));
      assert(last, 'the one-code category is listed');
      assert((await other('POST', '/claims', { category: last.id })).status === 201, 'the other player claims it');
      await card(page, `Last one ${tag}`).getByRole('button', { name: 'Claim a code' }).click();
      await card(page, `Last one ${tag}`).getByText('This category is used up').waitFor();
      await shot(page, 'exhausted-desktop');
    });
    await step('a reached limit says so', async () => {
      // the same player claims "Spring 3" elsewhere (another session) while this page shows it
      const same = await apiLogin(username, PASSWORD);
      const cats = await same('GET', '/categories');
      const c3 = cats.json.items.find((c) => c.name === `Spring ${tag} 3`);
      const elsewhere = await same('POST', '/claims', { category: c3.id });
      assert(elsewhere.status === 201, 'claimed elsewhere');
      total += elsewhere.json.reward;
      codes += 1;
      await card(page, `Spring ${tag} 3`).getByRole('button', { name: 'Claim a code' }).click();
      await card(page, `Spring ${tag} 3`).getByText('You have reached the limit').waitFor();
      await shot(page, 'limit-desktop');
    });
    await step('the wallet shows the balance and the history row', async () => {
      await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Wallet' }).click();
      await page.getByRole('heading', { name: 'Wallet' }).waitFor();
      assert(parseToman(await page.getByTestId('wallet-balance').innerText()) === total, 'wallet balance');
      const row = page.locator('table.table-ledger tbody tr', { hasText: code });
      await row.waitFor();
      const t = await text(row);
      assert(t.includes('+' + reward.toLocaleString('en-US')), 'history row amount: ' + t);
      await shot(page, 'wallet-desktop', { full: true });
    });
    await step('my codes lists the code with a copy button', async () => {
      await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'My codes' }).click();
      await page.getByRole('heading', { name: 'My codes' }).waitFor();
      const row = page.locator('table.table-codes tbody tr', { hasText: code });
      await row.waitFor();
      assert((await row.innerText()).includes('Credited'), 'status credited');
      await row.getByRole('button', { name: 'Copy ' + code }).click();
      await row.getByText('Copied').waitFor();
      await shot(page, 'codes-desktop');
    });
    await step('a pending claim (202) is confirmed, then revealed', async () => {
      assert(chancePid > 0, 'CHANCED_WEB_CHANCE_PID: the chance process to pause');
      await page.goto('/');
      const slow = card(page, `Slow ${tag}`);
      await slow.waitFor();
      process.kill(chancePid, 'SIGSTOP'); // chance does not answer: the gateway answers 202
      try {
        await slow.getByRole('button', { name: 'Claim a code' }).click();
        const waiting = page.getByRole('dialog', { name: 'Confirming your claim' });
        await waiting.getByText('Claim received').waitFor({ timeout: 20000 });
        await shot(page, 'pending-desktop');
      } finally {
        process.kill(chancePid, 'SIGCONT');
      }
      const dlg = page.getByRole('dialog', { name: 'Your code is revealed' });
      await dlg.waitFor({ timeout: 30000 }); // the reconciler credits it; the page polls
      await page.waitForTimeout(1200);
      assert(parseToman(await dlg.getByTestId('reveal-reward').innerText()) === 2000, 'pending reward');
      total += 2000;
      codes += 1;
      await until(async () => (await headerBalance(page)) === total, 'balance after the pending claim', 5000, 100);
      await page.keyboard.press('Escape');
    });
    await step('the keyboard reaches the navigation, with a visible focus', async () => {
      await page.goto('/');
      await page.getByRole('heading', { name: 'Pick a category' }).waitFor();
      await page.keyboard.press('Tab'); // skip link
      const skip = await page.evaluate(() => document.activeElement.textContent);
      assert(skip.includes('Skip to content'), 'first tab stop is the skip link: ' + skip);
      for (let i = 0; i < 6; i++) {
        await page.keyboard.press('Tab');
        const t = await page.evaluate(() => document.activeElement.textContent.trim());
        if (t === 'Wallet') {
          const outline = await page.evaluate(() => getComputedStyle(document.activeElement).outlineStyle);
          assert(outline !== 'none', 'focus is visible');
          await page.keyboard.press('Enter');
          await page.getByRole('heading', { name: 'Wallet' }).waitFor();
          return;
        }
      }
      throw new Error('Wallet link not reachable with Tab');
    });
    await step('a lost session sends the player to sign in, with a message', async () => {
      await context.clearCookies({ name: 'chanced_session' });
      await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'My codes' }).click();
      await page.getByText('Your session has ended').first().waitFor();
      await page.waitForURL(/\/signin\?next=%2Fcodes/);
      await shot(page, 'session-lost-desktop');
      await page.getByLabel('Username').fill(username);
      await page.getByLabel('Password').fill(PASSWORD);
      await page.getByRole('button', { name: 'Sign in' }).click();
      await page.getByRole('heading', { name: 'My codes' }).waitFor(); // back where the player was
    });
    await step('signing out ends the session', async () => {
      await page.getByRole('button', { name: 'Sign out' }).click();
      await page.getByRole('heading', { name: 'Welcome back' }).waitFor();
      const me = await page.evaluate(async () => (await fetch('/api/v1/me')).status);
      assert(me === 401, 'no session after sign-out: ' + me);
    });
  } catch (e) {
    await shot(page, 'FAILED-player');
    throw e;
  } finally {
    await context.close();
  }

  const phone = await newPage(browser, PHONE, problems);
  try {
    await step('on a phone: sign in, claim, wallet, codes', async () => {
      const p = phone.page;
      await signIn(p, username, PASSWORD);
      await shot(p, 'play-phone');
      await card(p, `Spring ${tag} 2`).getByRole('button', { name: 'Claim a code' }).click();
      const dlg = p.getByRole('dialog', { name: 'Your code is revealed' });
      await dlg.waitFor();
      await p.waitForTimeout(1200);
      total += parseToman(await dlg.getByTestId('reveal-reward').innerText());
      codes += 1;
      await shot(p, 'reveal-phone');
      await dlg.getByRole('link', { name: 'See my codes' }).click();
      await p.getByRole('heading', { name: 'My codes' }).waitFor();
      await until(async () => (await p.locator('table.table-codes tbody tr').count()) === codes, 'every code', 5000, 100);
      await shot(p, 'codes-phone');
      await p.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Wallet' }).click();
      await p.getByRole('heading', { name: 'Wallet' }).waitFor();
      assert(parseToman(await p.getByTestId('wallet-balance').innerText()) === total, 'phone wallet balance');
      await shot(p, 'wallet-phone');
      const overflow = await p.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
      assert(overflow <= 0, 'no sideways scrolling on a phone: ' + overflow);
    });
  } catch (e) {
    await shot(phone.page, 'FAILED-player-phone');
    throw e;
  } finally {
    await phone.context.close();
  }
}

// ---- an admin generates a batch and finds it in the categories and the audit log ----

async function admin(browser, problems) {
  const tag = rand();
  // some activity for the chart and the figures
  const api = await apiLogin(ADMIN_USER, ADMIN_PASSWORD);
  const seed = await generateReady(api, { categories: 3, codes_per_category: 40, reward_min: 2000,
    reward_max: 90000, reward_step: 1000, name: `Autumn ${tag}`, per_user_limit: 3 });
  const ghost = 'ghost_' + tag;
  for (let i = 0; i < 12; i++) {
    const r = await fetch(BASE + '/api/v1/auth/login', { method: 'POST', headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ username: ghost, password: 'not the password' }) });
    assert(r.status === 401, 'failed login');
  }
  for (let i = 0; i < 3; i++) {
    const p = await apiLogin(`sam${i}_${tag}`, PASSWORD, true);
    for (const cat of seed.categories.slice(0, i + 1)) {
      assert((await p('POST', '/claims', { category: cat })).status === 201, 'seed claim');
    }
  }

  const { page } = await newPage(browser, DESKTOP, problems);
  let batch;
  try {
    await step('an admin signs in and opens the overview with figures and the chart', async () => {
      await signIn(page, ADMIN_USER, ADMIN_PASSWORD);
      await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Admin' }).click();
      await page.getByRole('heading', { name: 'Overview' }).waitFor();
      await page.getByTestId('kpi-paid').waitFor();
      await page.locator('.chart-el').waitFor();
      await until(async () => (await page.locator('.chart-bar').count()) > 0, 'chart bars');
      const legend = await page.locator('.chart-legend').innerText();
      // the logger's store is shared by the whole test run: at least this test's six claims
      const m = /Claims\s+([\d,]+)/.exec(legend);
      assert(m && parseToman(m[1]) >= 6, 'the claims are in the chart: ' + legend);
      await page.locator('.activity li').first().waitFor();
      await shot(page, 'admin-overview-desktop', { full: true });
    });
    await step('the admin generates a batch and sees the result', async () => {
      await page.getByRole('navigation', { name: 'Admin' }).getByRole('link', { name: 'Generate' }).click();
      await page.getByRole('heading', { name: 'Generate codes' }).waitFor();
      // large enough to be seen on its way: the bar follows the server's real progress
      await page.getByLabel('Categories', { exact: true }).fill('2');
      await page.getByLabel('Codes per category').fill('150437');
      await page.getByLabel('Name').fill(`Web ${tag}`);
      await page.getByLabel('Lowest reward').fill('1000');
      await page.getByLabel('Highest reward').fill('73000');
      await page.getByLabel('Step').fill('1000');
      await page.getByLabel('Code prefix').fill('web');
      await page.getByLabel('Codes per player').fill('2');
      assert((await text(page.getByTestId('gen-count'))) === '300,874', 'summary count');
      await shot(page, 'admin-generate-desktop', { full: true });
      await page.getByRole('button', { name: 'Generate codes' }).click();
      const progress = page.getByTestId('gen-progress');
      await progress.waitFor();
      assert((await text(progress)).includes('Generating 300,874 codes'), 'progress panel');
      // the bar part-way: more than nothing, less than all, as reported by GET /admin/batches/{id}
      let seen = 0;
      await until(async () => {
        const pct = parseInt(await page.getByTestId('gen-pct').innerText(), 10);
        const now = Number(await page.getByTestId('gen-bar').getAttribute('aria-valuenow'));
        if (pct > 0 && pct < 100 && now > 0 && now < 300874) {
          seen = now;
          return true;
        }
        return false;
      }, 'the progress bar part-way', 60000, 50);
      await shot(page, 'admin-generate-progress-desktop', { full: true });
      const width = await page.locator('.bar-fill').evaluate((el) => el.style.width);
      assert(parseFloat(width) > 0 && parseFloat(width) < 100, 'bar width ' + width + ' at ' + seen);
      await page.getByTestId('gen-result').waitFor({ timeout: 120000 });
      assert((await text(page.getByTestId('gen-total'))) === '300,874', 'total codes');
      const chips = await page.getByTestId('gen-categories').locator('a').allInnerTexts();
      assert(chips.length === 2, 'two categories: ' + chips);
      batch = chips.map((c) => Number(c.replace('#', '')));
      await shot(page, 'admin-generate-result-desktop', { full: true });
    });
    await step('the batch is in the categories, with live figures; disable and enable', async () => {
      await page.getByRole('link', { name: 'View categories' }).click();
      await page.getByRole('heading', { name: 'Categories' }).waitFor();
      for (const id of batch) {
        const row = page.locator(`tr[data-category="${id}"]`);
        await row.waitFor();
        const t = await text(row);
        assert(t.includes(`Web ${tag}`) && t.includes('0 / 150,437') && t.includes('73,000 Toman'), 'row: ' + t);
      }
      const sw = page.locator(`tr[data-category="${batch[0]}"]`).getByRole('switch');
      assert((await sw.getAttribute('aria-checked')) === 'true', 'enabled');
      await sw.click();
      await until(async () => (await sw.getAttribute('aria-checked')) === 'false', 'disabled', 5000, 100);
      const cats = await api('GET', '/admin/categories?limit=1000');
      assert(cats.json.items.find((c) => c.id === batch[0]).enabled === false, 'disabled on the server');
      await shot(page, 'admin-categories-desktop');
      await sw.click();
      await until(async () => (await sw.getAttribute('aria-checked')) === 'true', 'enabled again', 5000, 100);
      // edit the per-player limit in the dialog
      const row0 = page.locator(`tr[data-category="${batch[0]}"]`);
      await row0.getByRole('button', { name: /^Edit / }).click();
      const dlg = page.getByRole('dialog', { name: /^Edit / });
      await dlg.getByLabel('Codes per player').fill('5');
      await dlg.getByRole('button', { name: 'Save changes' }).click();
      await dlg.waitFor({ state: 'detached' });
      await until(async () => (await row0.innerText()).includes('5 per player'), 'new limit shown', 5000, 100);
      // live: a claim elsewhere shows up without a reload
      const p = await apiLogin('liv_' + tag, PASSWORD, true);
      assert((await p('POST', '/claims', { category: batch[1] })).status === 201, 'live claim');
      await until(async () => (await page.locator(`tr[data-category="${batch[1]}"]`).innerText()).includes('1 / 150,437'),
        'live figures', 15000, 250);
    });
    await step('the audit log: filters in the address, paging, details and CSV export', async () => {
      await page.getByRole('navigation', { name: 'Admin' }).getByRole('link', { name: 'Audit log' }).click();
      await page.getByRole('heading', { name: 'Audit log' }).waitFor();
      await page.getByLabel('Type').selectOption('login.failed');
      await page.getByLabel('Message contains').fill(ghost);
      const rows = page.locator('table.table-logs tbody tr');
      await until(async () => {
        await page.getByRole('button', { name: 'Apply filters' }).click();
        await page.waitForTimeout(300);
        return (await rows.count()) === 12;
      }, 'the twelve failed logins');
      const t = await text(rows.first());
      assert(t.includes('login.failed') && t.includes(ghost), 'event row: ' + t);
      assert(page.url().includes('type=login.failed') && page.url().includes('q=' + ghost), 'filters in the address: ' + page.url());
      await shot(page, 'admin-logs-desktop');
      await rows.first().getByRole('button', { name: 'Details' }).click();
      const dlg = page.getByRole('dialog', { name: 'login.failed' });
      await dlg.waitFor();
      assert((await dlg.innerText()).includes('unknown_user'), 'details show the data');
      await page.keyboard.press('Escape');
      const href = await page.getByRole('link', { name: 'Export CSV' }).getAttribute('href');
      assert(href.startsWith('/api/v1/admin/logs.csv?') && href.includes('type=login.failed'), 'csv link: ' + href);
      const csv = await page.evaluate(async (u) => {
        const r = await fetch(u);
        return { status: r.status, type: r.headers.get('Content-Type'), body: await r.text() };
      }, href);
      assert(csv.status === 200 && csv.type.startsWith('text/csv'), 'csv answer');
      const lines = csv.body.trim().split('\r\n');
      assert(lines[0].startsWith('id,ts,time,service,type') && lines.length === 13, 'csv: header and 12 rows');
      // paging, 5 per page... the smallest page size is 25: page through everything instead
      await page.getByLabel('Type').selectOption('');
      await page.getByLabel('Message contains').fill('');
      await page.getByLabel('Per page').selectOption('25');
      await page.getByRole('button', { name: 'Apply filters' }).click();
      await page.getByText('Page 1').waitFor();
      const first = await rows.first().innerText();
      await page.getByRole('button', { name: 'Older' }).click();
      await page.getByText('Page 2').waitFor();
      assert((await rows.first().innerText()) !== first, 'another page');
      await page.getByRole('button', { name: 'Newer' }).click();
      await page.getByText('Page 1').waitFor();
    });
    await step('code search finds the batch codes', async () => {
      await page.goto(`/admin/codes?category=${batch[0]}`);
      await page.getByRole('heading', { name: 'Code search' }).waitFor();
      const rows = page.locator('table.table-codes tbody tr');
      await rows.first().waitFor();
      assert((await rows.count()) === 50, 'a page of 50 codes');
      const c = (await rows.first().locator('code').innerText()).trim();
      assert(c.startsWith('WEB'), 'prefixed code: ' + c);
      await shot(page, 'admin-codes-desktop');
      await page.getByLabel('Category').fill('');
      await page.getByLabel('Code').fill(c);
      await page.getByRole('button', { name: 'Search' }).click();
      await until(async () => (await rows.count()) === 1, 'one code found', 5000, 100);
    });
    await step('users and any user\'s wallet', async () => {
      await page.getByRole('navigation', { name: 'Admin' }).getByRole('link', { name: 'Users' }).click();
      await page.getByRole('heading', { name: 'Users' }).waitFor();
      await page.getByLabel('Username').fill('sam2_' + tag);
      await page.getByRole('button', { name: 'Search' }).click();
      const row = page.locator('tbody tr', { hasText: 'sam2_' + tag });
      await until(async () => (await page.locator('tbody tr').count()) === 1 && (await row.count()) === 1, 'one user');
      await shot(page, 'admin-users-desktop');
      // disabling asks first, then shows at once; enabling again
      await row.getByRole('button', { name: 'Disable' }).click();
      const confirm = page.getByRole('dialog', { name: `Disable sam2_${tag}?` });
      await confirm.getByRole('button', { name: `Disable sam2_${tag}` }).click();
      await row.getByText('Disabled', { exact: true }).waitFor();
      const users = await api('GET', '/admin/users?username=sam2_' + tag);
      assert(users.json.items[0].disabled === true, 'disabled on the server');
      await row.getByRole('button', { name: 'Enable' }).click();
      await row.getByText('Active', { exact: true }).waitFor();
      await row.getByRole('link', { name: 'Wallet' }).click();
      await page.getByRole('heading', { name: `sam2_${tag}’s wallet` }).waitFor();
      assert((await page.locator('table.table-ledger tbody tr').count()) === 3, 'three credits');
      await shot(page, 'admin-user-wallet-desktop', { full: true });
    });
  } catch (e) {
    await shot(page, 'FAILED-admin');
    throw e;
  } finally {
    await page.context().close();
  }

  const phone = await newPage(browser, PHONE, problems);
  try {
    await step('admin pages on a phone', async () => {
      const p = phone.page;
      await signIn(p, ADMIN_USER, ADMIN_PASSWORD);
      await p.goto('/admin');
      await p.locator('.chart-el').waitFor();
      await p.getByTestId('kpi-paid').waitFor();
      await shot(p, 'admin-overview-phone');
      await p.goto('/admin/categories');
      await p.locator(`tr[data-category="${batch[0]}"]`).waitFor();
      await shot(p, 'admin-categories-phone');
      const overflow = await p.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
      assert(overflow <= 0, 'no sideways scrolling on a phone: ' + overflow);
    });
  } catch (e) {
    await shot(phone.page, 'FAILED-admin-phone');
    throw e;
  } finally {
    await phone.context.close();
  }

  // Last, as it needs more than the gateway: chance's events reach the logger through RabbitMQ.
  const late = await newPage(browser, DESKTOP, problems);
  try {
    await signIn(late.page, ADMIN_USER, ADMIN_PASSWORD);
    const { page } = late;
    await step('the batch is in the audit log (its event comes through the chance relay)', async () => {
      await page.goto('/admin/logs?type=batch.generated&q=300%2C874+codes');
      await page.getByRole('heading', { name: 'Audit log' }).waitFor();
      const row = page.locator('table.table-logs tbody tr').first();
      await until(async () => {
        await page.getByRole('button', { name: 'Apply filters' }).click();
        await page.waitForTimeout(300);
        return (await row.count()) && (await row.innerText()).includes('batch.generated');
      }, 'the batch.generated event of the new batch in the audit log: chance publishes it to ' +
        'RabbitMQ through its relay, and the logger stores it', 30000);
      const t = await text(row);
      assert(t.includes('300,874 codes in 2 categories') && t.includes(ADMIN_USER), 'event row: ' + t);
      await row.getByRole('button', { name: 'Details' }).click();
      const dlg = page.getByRole('dialog', { name: 'batch.generated' });
      await dlg.waitFor();
      assert((await dlg.innerText()).includes(String(batch[0])), 'details list the categories');
      await shot(page, 'admin-logs-batch-desktop');
      await page.keyboard.press('Escape');
    });
  } catch (e) {
    await shot(late.page, 'FAILED-admin-relay');
    throw e;
  } finally {
    await late.context.close();
  }
}

// ---- a player cannot reach admin pages ----

async function denied(browser, problems) {
  const { page } = await newPage(browser, DESKTOP, problems);
  try {
    await step('a player sees no admin link and is refused every admin page', async () => {
      await signUp(page, 'pat_' + rand());
      const nav = await page.getByRole('navigation', { name: 'Main' }).innerText();
      assert(!nav.includes('Admin'), 'no admin link: ' + nav);
      for (const p of ['/admin', '/admin/generate', '/admin/categories', '/admin/codes', '/admin/users', '/admin/users/1', '/admin/logs']) {
        await page.goto(p);
        await page.getByTestId('forbidden').waitFor();
        assert(await page.getByRole('heading', { name: 'Administrators only' }).isVisible(), 'refused: ' + p);
        assert((await page.locator('.subnav, .admin-body').count()) === 0, 'no admin UI on ' + p);
      }
      await shot(page, 'denied-desktop');
      const status = await page.evaluate(async () => (await fetch('/api/v1/admin/categories')).status);
      assert(status === 403, 'the API refuses too: ' + status);
    });
  } catch (e) {
    await shot(page, 'FAILED-denied');
    throw e;
  } finally {
    await page.context().close();
  }
}

const SCENARIOS = { player, admin, denied };

async function main() {
  const name = process.argv[2];
  const fn = SCENARIOS[name];
  if (!fn) {
    console.error('usage: node run.mjs ' + Object.keys(SCENARIOS).join('|'));
    process.exit(64);
  }
  const browser = await launch();
  const problems = [];
  let failed = false;
  try {
    await fn(browser, problems);
  } catch (e) {
    console.log(e.stack || String(e));
    failed = true;
  } finally {
    await browser.close();
  }
  if (problems.length) {
    console.log('browser problems:\n  ' + problems.join('\n  '));
    failed = true;
  }
  console.log(failed ? `${name}: FAILED` : `${name}: passed`);
  process.exit(failed ? 1 : 0);
}

main();
