// Player views: categories and the claim (with its reveal), my codes, the wallet.

import { get, post, newKey, qs } from './api.js?v=__CHANCED_BUILD__';
import {
  h, icon, busy, toast, pageHead, card, empty, badge, table, dialog, copyButton, moreButton,
  notice, spinner,
} from './ui.js?v=__CHANCED_BUILD__';
import { num, toman, tomanRange, dateTime, relative } from './fmt.js?v=__CHANCED_BUILD__';
import { explain } from './errors.js?v=__CHANCED_BUILD__';
import { link, setBalance, refreshMe } from './app.js?v=__CHANCED_BUILD__';

const PAGE = 50;
const categoryNames = new Map(); // id -> name, learnt from /categories

const reduceMotion = () => window.matchMedia('(prefers-reduced-motion: reduce)').matches;

// ---- play: the categories ----

export async function play(ctx) {
  const refresh = h('button', { type: 'button', class: 'btn btn-ghost' }, icon('refresh'), h('span', {}, 'Refresh'));
  const head = pageHead('Pick a category', 'Each claim reveals one random code and puts its reward in your wallet.', refresh);
  const status = h('div', { class: 'play-status', 'aria-live': 'polite' });
  const grid = h('div', { class: 'cat-grid', 'data-testid': 'categories' });
  const more = moreButton('Show more categories', async (cursor) => load(cursor, false));
  ctx.root.append(head, status, grid, more.el);
  more.set(null);

  async function load(cursor, replace = true) {
    const r = await get('/categories' + qs({ limit: PAGE, cursor }));
    if (!ctx.alive()) {
      return null;
    }
    if (replace) {
      grid.replaceChildren();
    }
    for (const c of r.data.items) {
      categoryNames.set(c.id, c.name);
      grid.appendChild(categoryCard(c, () => load(null)));
    }
    if (!grid.children.length) {
      grid.appendChild(empty('gift', 'Nothing to claim right now',
        'There are no open categories you can still claim from. New codes appear here as soon as an administrator adds them.'));
    }
    more.set(r.data.next_cursor);
    return r.data.next_cursor;
  }

  refresh.addEventListener('click', () => busy(refresh, () => load(null)));
  grid.appendChild(h('div', { class: 'loading-row' }, spinner(), 'Loading categories…'));
  await load(null);
}

function categoryCard(c, reload) {
  const left = c.per_user_limit ? Math.max(0, c.per_user_limit - (c.user_claims || 0)) : null;
  const btn = h('button', { type: 'button', class: 'btn btn-primary btn-block claim-btn',
    'aria-describedby': 'cat-' + c.id + '-name' }, icon('sparkle'), h('span', {}, 'Claim a code'));
  const msg = h('div', { class: 'cat-msg', 'aria-live': 'polite' });
  const meta = [];
  if (left !== null) {
    meta.push(h('span', {}, left === 1 ? 'You can claim 1 more' : `You can claim ${num(left)} more`));
  }
  if (c.ends_at) {
    meta.push(h('span', {}, icon('clock', 'icon icon-xs'), 'Ends ' + relative(c.ends_at)));
  }
  const low = c.remaining <= 10;
  const el = card({ class: 'cat-card', 'data-category': String(c.id) },
    h('div', { class: 'cat-top' },
      h('h2', { class: 'cat-name', id: 'cat-' + c.id + '-name' }, c.name || 'Category ' + c.id),
      h('span', { class: 'cat-id' }, '#' + c.id)),
    h('div', { class: 'cat-reward' }, h('span', { class: 'label' }, 'Reward'),
      h('span', { class: 'value' }, tomanRange(c.reward_min, c.reward_max))),
    h('div', { class: ['cat-remaining', low && 'is-low'] },
      h('span', { class: 'remaining-num' }, num(c.remaining)), h('span', {}, c.remaining === 1 ? ' code left' : ' codes left')),
    meta.length ? h('div', { class: 'cat-meta' }, meta) : null,
    msg, btn);
  btn.addEventListener('click', () => busy(btn, () => claim(c, msg, reload)));
  return el;
}

// POST /claims with an Idempotency-Key: a retry after a network error can never claim twice.
async function claim(c, msg, reload) {
  msg.replaceChildren();
  const key = newKey();
  let res = null;
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      res = await post('/claims', { category: c.id }, { headers: { 'Idempotency-Key': key } });
      break;
    } catch (err) {
      if (err.status === 0 && attempt < 2) {
        await sleep(800 * (attempt + 1));
        continue;
      }
      if (err.status === 401) {
        return; // the app shows the sign-in page
      }
      const { title, text } = explain(err);
      const kind = err.status === 409 || err.status === 404 ? 'warn' : 'error';
      msg.replaceChildren(notice(kind, title, err.status === 0
        ? 'We could not reach the server. If the claim went through, it is in My codes.' : text));
      msg.dataset.code = err.code;
      if (err.status === 409 || err.status === 404) {
        setTimeout(reload, 2500); // the list changed: show what is claimable now
      }
      return;
    }
  }
  if (res.status === 202) {
    pendingDialog(res.data, c, reload);
    return;
  }
  setBalance(res.data.balance);
  reveal(res.data, c, reload);
}

function sleep(ms) {
  return new Promise((r) => setTimeout(r, ms));
}

// The reveal: a ticket that turns over, the reward counting up, the code with a copy button.
function reveal(result, c, reload) {
  const amount = h('span', { class: 'reveal-amount', 'data-testid': 'reveal-reward' }, toman(result.reward));
  const ticket = h('div', { class: ['ticket', reduceMotion() ? 'is-open' : 'is-closed'] },
    h('div', { class: 'ticket-face ticket-back', 'aria-hidden': 'true' }, h('span', {}, '?')),
    h('div', { class: 'ticket-face ticket-front' },
      h('span', { class: 'reveal-label' }, 'You won'),
      amount,
      h('span', { class: 'reveal-label' }, 'Your code'),
      h('code', { class: 'reveal-code', 'data-testid': 'reveal-code' }, result.code),
      copyButton(result.code, 'Copy code')));
  const again = h('button', { type: 'button', class: 'btn btn-secondary' }, 'Claim another');
  const codes = link('/codes', { class: 'btn btn-primary' }, 'See my codes');
  const d = dialog('Your code is revealed', h('div', { class: 'reveal' },
    ticket,
    h('p', { class: 'reveal-sub' }, 'From ', h('strong', {}, c.name || 'category ' + c.id),
      '. The reward is already in your wallet.'),
    h('p', { class: 'reveal-balance' }, 'New balance ', h('strong', { 'data-testid': 'reveal-balance' }, toman(result.balance))),
    h('div', { class: 'dialog-actions' }, again, codes)), { class: 'dialog-reveal', onClose: reload });
  again.addEventListener('click', d.close);
  codes.addEventListener('click', () => d.close());
  if (!reduceMotion()) {
    requestAnimationFrame(() => requestAnimationFrame(() => {
      ticket.classList.replace('is-closed', 'is-open');
      countUp(amount, result.reward, 900);
    }));
  }
}

function countUp(el, to, ms) {
  const start = performance.now();
  const step = (t) => {
    const p = Math.min(1, (t - start) / ms);
    const eased = 1 - Math.pow(1 - p, 3);
    el.textContent = toman(Math.round(to * eased));
    if (p < 1) {
      requestAnimationFrame(step);
    } else {
      el.textContent = toman(to);
    }
  };
  requestAnimationFrame(step);
}

// 202: the outcome is not known yet; poll the claim until it is credited or failed.
function pendingDialog(p, c, reload) {
  const body = h('div', { class: 'pending', 'data-testid': 'claim-pending' },
    h('div', { class: 'pending-spin' }, spinner('Confirming')),
    h('p', {}, h('strong', {}, 'Claim received. '), 'We are confirming it with the server; this usually takes a second or two.'),
    h('p', { class: 'muted' }, 'You can close this window: the code will show up in My codes once it is confirmed.'));
  let stop = false;
  const d = dialog('Confirming your claim', body, { onClose: () => { stop = true; reload(); } });
  (async () => {
    const until = Date.now() + 30000;
    while (!stop && Date.now() < until) {
      await sleep(1000);
      try {
        const r = await get('/claims/' + encodeURIComponent(p.claim_id));
        if (r.data.status === 'credited') {
          d.close();
          const me = await refreshMe();
          reveal({ ...r.data, balance: me ? me.balance : r.data.reward }, c, reload);
          return;
        }
        if (r.data.status === 'failed') {
          const { title, text } = explain({ code: r.data.error, problem: {} });
          body.replaceChildren(notice('warn', title, text));
          return;
        }
      } catch (err) {
        if (err.status === 401) {
          d.close();
          return;
        }
      }
    }
    if (!stop) {
      body.replaceChildren(notice('info', 'Still confirming',
        'This is taking longer than usual. Your claim is safe: it will appear in My codes as soon as it is confirmed.'),
        h('div', { class: 'dialog-actions' }, link('/codes', { class: 'btn btn-primary' }, 'Open My codes')));
    }
  })();
}

// ---- my codes ----

function statusBadge(s) {
  if (s === 'credited') {
    return badge('Credited', 'ok');
  }
  if (s === 'pending') {
    return badge('Confirming', 'warn');
  }
  return badge(s === 'failed' ? 'Not claimed' : s, 'muted');
}

function catLabel(id) {
  return categoryNames.get(id) || 'Category #' + id;
}

export async function codes(ctx) {
  ctx.root.appendChild(pageHead('My codes', 'Every code you claimed, newest first.'));
  const body = h('div', {});
  ctx.root.appendChild(body);
  const rows = [];
  const cols = [
    { label: 'Code', class: 'code-col', cell: (r) => r.code
      ? h('span', { class: 'code-cell' }, h('code', { class: 'code' }, r.code), copyButton(r.code))
      : h('span', { class: 'muted' }, 'Being confirmed…') },
    { label: 'Reward', num: true, cell: (r) => r.reward ? h('strong', {}, toman(r.reward)) : '—' },
    { label: 'Category', cell: (r) => catLabel(r.category) },
    { label: 'Status', cell: (r) => statusBadge(r.status) },
    { label: 'Claimed', cell: (r) => h('time', { datetime: new Date(r.created_at).toISOString() }, dateTime(r.created_at)) },
  ];
  const more = moreButton('Load older codes', (cursor) => load(cursor));
  // Refused attempts (a used-up category, a reached limit) are claims without a code: not listed.
  async function load(cursor) {
    let next = cursor;
    do {
      const r = await get('/claims' + qs({ limit: PAGE, cursor: next }));
      if (!ctx.alive()) {
        return null;
      }
      rows.push(...r.data.items.filter((c) => c.status !== 'failed'));
      next = r.data.next_cursor;
    } while (next && !rows.length);
    body.replaceChildren(rows.length
      ? card({ class: 'card-flush' }, table(cols, rows, { caption: 'My codes', class: 'table-codes' }))
      : empty('ticket', 'No codes yet', 'Claim your first code and it will be kept here.',
        link('/', { class: 'btn btn-primary' }, 'Pick a category')));
    more.set(next);
    return next;
  }
  ctx.root.appendChild(more.el);
  more.set(null);
  await loadNames();
  await load(null);
}

async function loadNames() {
  if (categoryNames.size) {
    return;
  }
  try {
    const r = await get('/categories?limit=200');
    for (const c of r.data.items) {
      categoryNames.set(c.id, c.name);
    }
  } catch {
    // names are a nicety: ids are shown instead
  }
}

// ---- wallet ----

export async function wallet(ctx) {
  ctx.root.appendChild(pageHead('Wallet', 'Your balance and every credit to it.'));
  const r = await get('/wallet' + qs({ limit: PAGE }));
  if (!ctx.alive()) {
    return;
  }
  setBalance(r.data.balance);
  await loadNames();
  ctx.root.appendChild(walletView(r.data, async (cursor) => (await get('/wallet' + qs({ limit: PAGE, cursor }))).data, null));
}

// Shared with the admin's view of a user's wallet: data is the first page, more(cursor) the next.
export function walletView(data, more, owner) {
  const rows = [...data.items];
  const wrap = h('div', { class: 'wallet' });
  const balance = card({ class: 'balance-card' },
    h('div', { class: 'balance-main' },
      h('span', { class: 'label' }, owner ? `${owner}'s balance` : 'Balance'),
      h('span', { class: 'balance-big', 'data-testid': 'wallet-balance' }, toman(data.balance))),
    h('div', { class: 'balance-side' }, icon('wallet', 'icon icon-xl')));
  const cols = [
    { label: 'Date', cell: (r) => h('time', { datetime: new Date(r.created_at).toISOString() }, dateTime(r.created_at)) },
    { label: 'Code', cell: (r) => h('code', { class: 'code' }, r.code) },
    { label: 'Category', cell: (r) => catLabel(r.category) },
    { label: 'Amount', num: true, cell: (r) => h('span', { class: 'amount-plus' }, '+' + toman(r.amount)) },
    { label: 'Balance after', num: true, cell: (r) => toman(r.balance_after) },
  ];
  const list = h('div', {});
  const draw = () => list.replaceChildren(rows.length
    ? card({ class: 'card-flush' }, h('h2', { class: 'card-title pad' }, 'History'),
      table(cols, rows, { caption: 'Wallet history', class: 'table-ledger' }))
    : empty('wallet', 'No credits yet', owner ? 'This user has not claimed anything yet.'
      : 'Rewards of the codes you claim are credited here.'));
  draw();
  const btn = moreButton('Load older entries', async (cursor) => {
    const page = await more(cursor);
    rows.push(...page.items);
    draw();
    return page.next_cursor;
  });
  btn.set(data.next_cursor);
  wrap.append(balance, list, btn.el);
  return wrap;
}

