// Admin views: overview (figures and the claims chart), batch generation, categories with live
// figures and enable/disable, code search, users and their wallets, the audit log.

import { get, post, patch, qs, newKey, API_BASE } from './api.js?v=__CHANCED_BUILD__';
import {
  h, icon, busy, toast, pageHead, card, empty, badge, table, dialog, copyButton, moreButton,
  notice, spinner, field, fieldError,
} from './ui.js?v=__CHANCED_BUILD__';
import {
  num, toman, tomanRange, date, dateTime, dateTimeSec, relative, toLocalInput, fromLocalInput, elapsed,
} from './fmt.js?v=__CHANCED_BUILD__';
import { explain } from './errors.js?v=__CHANCED_BUILD__';
import { claimsChart, series } from './chart.js?v=__CHANCED_BUILD__';
import { link, session } from './app.js?v=__CHANCED_BUILD__';
import { walletView } from './player.js?v=__CHANCED_BUILD__';

const HOUR = 3600000;
const DAY = 86400000;
const LIVE_MS = 5000;

// Every category (pages of 1000), newest first.
async function allCategories() {
  const out = [];
  let cursor = null;
  for (let i = 0; i < 20; i++) {
    const r = await get('/admin/categories' + qs({ limit: 1000, cursor }));
    out.push(...r.data.items);
    cursor = r.data.next_cursor;
    if (!cursor) {
      break;
    }
  }
  return out.sort((a, b) => b.id - a.id);
}

function totals(cats) {
  const t = { categories: cats.length, enabled: 0, total: 0, assigned: 0, remaining: 0, paid: 0 };
  for (const c of cats) {
    t.enabled += c.enabled ? 1 : 0;
    t.total += c.total || 0;
    t.assigned += c.assigned || 0;
    t.remaining += c.remaining || 0;
    t.paid += c.paid_out || 0;
  }
  return t;
}

// "1,234,500" with a smaller "Toman" after it
function tomanValue(n) {
  return h('span', {}, num(n), h('span', { class: 'unit' }, ' Toman'));
}

function kpi(label, value, sub, testid) {
  return h('div', { class: 'kpi', 'data-testid': testid || null },
    h('span', { class: 'kpi-label' }, label), h('span', { class: 'kpi-value' }, value),
    sub ? h('span', { class: 'kpi-sub' }, sub) : null);
}

function kpis(t) {
  const exact = t.total ? (t.assigned / t.total) * 100 : 0;
  const pct = exact > 0 && exact < 1 ? '<1' : String(Math.round(exact));
  return h('div', { class: 'kpis' },
    kpi('Categories', num(t.categories), `${num(t.enabled)} enabled`),
    kpi('Codes', num(t.total), `${num(t.remaining)} still available`),
    kpi('Claimed', num(t.assigned), `${pct}% of all codes`),
    kpi('Paid out', tomanValue(t.paid), 'credited to wallets', 'kpi-paid'));
}

function errorNotice(err) {
  const { title, text } = explain(err);
  return notice('error', title, text);
}

// ---- overview ----

const RANGES = [
  ['24h', 'Last 24 hours', DAY, 'hour'],
  ['7d', 'Last 7 days', 7 * DAY, 'day'],
  ['30d', 'Last 30 days', 30 * DAY, 'day'],
];

export async function overview(ctx) {
  ctx.root.appendChild(pageHead('Overview', 'Codes, claims and payouts at a glance.',
    link('/admin/generate', { class: 'btn btn-primary' }, icon('plus'), h('span', {}, 'Generate codes'))));
  const figures = h('div', {}, h('div', { class: 'loading-row' }, spinner(), 'Loading figures…'));
  const chartBody = h('div', { class: 'chart-body' });
  const rangeSel = h('div', { class: 'segmented', role: 'group', 'aria-label': 'Period' });
  const chartCard = card({ class: 'chart-card' },
    h('div', { class: 'card-head' }, h('h2', { class: 'card-title' }, 'Claims and payouts'), rangeSel),
    chartBody);
  const recent = h('div', {});
  ctx.root.append(figures, chartCard,
    card({ class: 'card-flush' }, h('div', { class: 'card-head pad' }, h('h2', { class: 'card-title' }, 'Recent activity'),
      link('/admin/logs', { class: 'btn btn-ghost btn-sm' }, 'Open the audit log', icon('chevron'))), recent));

  let chart = null;
  let range = ctx.query.get('range') || '24h';
  async function loadChart() {
    const [, , span, bucket] = RANGES.find((r) => r[0] === range) || RANGES[0];
    const to = Date.now();
    const from = to - span;
    chartBody.replaceChildren(h('div', { class: 'loading-row' }, spinner(), 'Loading…'));
    try {
      const r = await get('/admin/logs/stats' + qs({ from, to, bucket, type: 'claim.credited' }));
      if (!ctx.alive()) {
        return;
      }
      if (chart) {
        chart.destroy();
      }
      chart = claimsChart(series(r.data.buckets || [], from, to, bucket, 'claim.credited'), { bucket });
      chartBody.replaceChildren(chart);
    } catch (err) {
      chartBody.replaceChildren(errorNotice(err));
    }
  }
  for (const [key, label] of RANGES) {
    const b = h('button', { type: 'button', class: 'seg', 'aria-pressed': String(key === range) }, label);
    b.addEventListener('click', () => {
      range = key;
      for (const x of rangeSel.children) {
        x.setAttribute('aria-pressed', String(x === b));
      }
      history.replaceState(history.state, '', '/admin?range=' + key);
      loadChart();
    });
    rangeSel.appendChild(b);
  }
  ctx.onLeave(() => chart && chart.destroy());

  const jobs = [
    allCategories().then((cats) => {
      figures.replaceChildren(kpis(totals(cats)));
    }).catch((err) => figures.replaceChildren(errorNotice(err))),
    loadChart(),
    get('/admin/logs?limit=8').then((r) => {
      recent.replaceChildren(r.data.items.length ? activityList(r.data.items)
        : h('p', { class: 'pad muted' }, 'No events yet.'));
    }).catch((err) => recent.replaceChildren(h('div', { class: 'pad' }, errorNotice(err)))),
  ];
  await Promise.all(jobs);
}

function activityList(items) {
  return h('ul', { class: 'activity' }, items.map((e) => h('li', {},
    typeBadge(e.type),
    h('span', { class: 'activity-msg' }, e.message || e.type),
    h('time', { class: 'muted', datetime: new Date(e.ts).toISOString(), title: dateTime(e.ts) }, relative(e.ts)))));
}

// ---- generate ----

export function generate(ctx) {
  const inp = (name, attrs = {}) => h('input', { name, ...attrs });
  const f = {
    name: inp('name', { maxlength: '100', placeholder: 'e.g. Spring campaign', autocomplete: 'off' }),
    categories: inp('categories', { type: 'number', min: '1', max: '1000', value: '3', required: true, inputmode: 'numeric' }),
    codes: inp('codes_per_category', { type: 'number', min: '1', max: '1000000', value: '1000', required: true, inputmode: 'numeric' }),
    min: inp('reward_min', { type: 'number', min: '1', value: '1000', required: true, inputmode: 'numeric' }),
    max: inp('reward_max', { type: 'number', min: '1', value: '100000', required: true, inputmode: 'numeric' }),
    step: inp('reward_step', { type: 'number', min: '1', value: '1000', inputmode: 'numeric' }),
    prefix: inp('prefix', { maxlength: '8', placeholder: 'optional', autocomplete: 'off', autocapitalize: 'characters', spellcheck: 'false' }),
    limit: inp('per_user_limit', { type: 'number', min: '1', max: '1000000', value: '1', inputmode: 'numeric' }),
    starts: inp('starts_at', { type: 'datetime-local' }),
    ends: inp('ends_at', { type: 'datetime-local' }),
  };
  const summary = h('div', { class: 'gen-summary', 'aria-live': 'polite' });
  const submit = h('button', { type: 'submit', class: 'btn btn-primary btn-lg' }, icon('sparkle'), h('span', {}, 'Generate codes'));
  const out = h('div', { class: 'gen-out' });
  const form = h('form', { class: 'gen-form', novalidate: true },
    h('fieldset', {}, h('legend', {}, 'What to create'),
      h('div', { class: 'grid-3' },
        field('Categories', f.categories, '1 to 1,000'),
        field('Codes per category', f.codes, 'up to 1,000,000'),
        field('Name', f.name, 'Categories are named “Name 1”, “Name 2”…'))),
    h('fieldset', {}, h('legend', {}, 'Rewards (Toman)'),
      h('div', { class: 'grid-3' },
        field('Lowest reward', f.min),
        field('Highest reward', f.max),
        field('Step', f.step, 'Rewards are multiples of this'))),
    h('fieldset', {}, h('legend', {}, 'Rules'),
      h('div', { class: 'grid-4' },
        field('Code prefix', f.prefix, '1–8 letters or digits'),
        field('Codes per player', f.limit, 'per category'),
        field('Opens', f.starts, 'empty: at once'),
        field('Closes', f.ends, 'empty: never'))),
    summary,
    h('div', { class: 'form-actions' }, submit));
  ctx.root.append(pageHead('Generate codes', 'Create categories of chance codes with rewards drawn from a range.'),
    h('div', { class: 'gen-layout' }, card({ class: 'gen-card' }, form), out));

  const val = (el) => (el.value.trim() === '' ? null : Number(el.value));
  function collect() {
    const body = {
      categories: val(f.categories), codes_per_category: val(f.codes),
      reward_min: val(f.min), reward_max: val(f.max),
    };
    const step = val(f.step);
    if (step) {
      body.reward_step = step;
    }
    const limit = val(f.limit);
    if (limit) {
      body.per_user_limit = limit;
    }
    if (f.name.value.trim()) {
      body.name = f.name.value.trim();
    }
    if (f.prefix.value.trim()) {
      body.prefix = f.prefix.value.trim().toUpperCase();
    }
    const s = fromLocalInput(f.starts.value);
    const e = fromLocalInput(f.ends.value);
    if (s) {
      body.starts_at = s;
    }
    if (e) {
      body.ends_at = e;
    }
    return body;
  }
  function validate(b) {
    const errs = [];
    const int = (v) => Number.isInteger(v) && v > 0;
    if (!int(b.categories) || b.categories > 1000) {
      errs.push([f.categories, 'A whole number from 1 to 1,000.']);
    }
    if (!int(b.codes_per_category) || b.codes_per_category > 1000000) {
      errs.push([f.codes, 'A whole number from 1 to 1,000,000.']);
    }
    if (!int(b.reward_min)) {
      errs.push([f.min, 'A whole number of Toman, at least 1.']);
    }
    if (!int(b.reward_max) || b.reward_max < b.reward_min) {
      errs.push([f.max, 'At least the lowest reward.']);
    }
    const step = b.reward_step || 1;
    if (!int(step)) {
      errs.push([f.step, 'A whole number, at least 1.']);
    } else if (b.reward_min % step || b.reward_max % step) {
      errs.push([f.step, 'Both rewards must be multiples of the step.']);
    }
    if (b.prefix && !/^[A-Z0-9]{1,8}$/.test(b.prefix)) {
      errs.push([f.prefix, '1 to 8 letters or digits.']);
    }
    if (b.per_user_limit !== undefined && !int(b.per_user_limit)) {
      errs.push([f.limit, 'A whole number, at least 1.']);
    }
    if (b.starts_at && b.ends_at && b.ends_at <= b.starts_at) {
      errs.push([f.ends, 'Must be after the opening time.']);
    }
    return errs;
  }
  function updateSummary() {
    const b = collect();
    const count = (b.categories || 0) * (b.codes_per_category || 0);
    const avg = b.reward_min && b.reward_max ? (b.reward_min + b.reward_max) / 2 : 0;
    summary.replaceChildren(h('div', { class: 'sum-row' },
      h('span', {}, h('strong', {}, num(b.categories || 0)), ' × ', h('strong', {}, num(b.codes_per_category || 0)),
        ' = ', h('strong', { 'data-testid': 'gen-count' }, num(count)), ' codes'),
      h('span', {}, 'rewards ', h('strong', {}, b.reward_min && b.reward_max ? tomanRange(b.reward_min, b.reward_max) : '—')),
      h('span', {}, 'expected payout ≈ ', h('strong', {}, toman(Math.round(avg * count))))),
    count > 2000000 ? notice('warn', 'Over the default batch limit', 'The server refuses more than 2,000,000 codes in one batch unless configured otherwise.') : '');
  }
  form.addEventListener('input', updateSummary);
  updateSummary();

  form.addEventListener('submit', (e) => {
    e.preventDefault();
    for (const el of Object.values(f)) {
      fieldError(el, null);
    }
    const body = collect();
    const errs = validate(body);
    if (errs.length) {
      for (const [el, msg] of errs) {
        fieldError(el, msg);
      }
      errs[0][0].focus();
      return;
    }
    const count = body.categories * body.codes_per_category;
    busy(submit, async () => {
      form.querySelectorAll('fieldset').forEach((fs) => { fs.disabled = true; });
      const started = Date.now();
      const clock = h('span', { class: 'gen-clock' }, '0:00');
      const fill = h('span', { class: 'bar-fill' });
      fill.style.width = '0%'; // (the CSSOM, not a style attribute: the CSP allows no inline styles)
      const bar = h('div', { class: 'bar', role: 'progressbar', 'aria-label': 'Codes written',
        'aria-valuemin': '0', 'aria-valuemax': String(count), 'aria-valuenow': '0',
        'data-testid': 'gen-bar' }, fill);
      const done = h('strong', { 'data-testid': 'gen-done' }, '0');
      const cats = h('span', { 'data-testid': 'gen-cats' }, '0');
      const pct = h('span', { class: 'gen-pct', 'data-testid': 'gen-pct' }, '0%');
      out.replaceChildren(card({ class: 'gen-progress', 'data-testid': 'gen-progress', 'aria-busy': 'true' },
        h('div', { class: 'gen-progress-head' }, spinner('Generating'),
          h('div', {}, h('strong', {}, `Generating ${num(count)} codes…`),
            h('p', { class: 'muted' }, 'Categories become claimable once the whole batch is written. ' +
              'You may leave this page: the batch goes on, and its state stays under Categories.'))),
        bar,
        h('p', { class: 'muted gen-stats' }, pct, ' · ', done, ` of ${num(count)} codes · `, cats,
          ` of ${num(body.categories)} categories · elapsed `, clock)));
      out.scrollIntoView({ block: 'nearest', behavior: 'smooth' });
      const timer = setInterval(() => { clock.textContent = elapsed((Date.now() - started) / 1000); }, 500);
      ctx.onLeave(() => clearInterval(timer));
      const show = (b) => {
        const n = Math.min(b.codes_written || 0, count);
        const p = count ? Math.floor((100 * n) / count) : 100;
        fill.style.width = p + '%';
        bar.setAttribute('aria-valuenow', String(n));
        pct.textContent = p + '%';
        done.textContent = num(n);
        cats.textContent = num(b.categories_done || 0);
      };
      try {
        /* The server answers at once (202) with the batch; its progress is polled. The key
         * makes a retried submit the same batch, never a second one. */
        const r = await post('/admin/batches', body, { headers: { 'Idempotency-Key': newKey() } });
        let b = r.data.batch;
        show(b);
        while (b.state === 'generating' && ctx.alive()) {
          await new Promise((ok) => setTimeout(ok, 300));
          b = (await get('/admin/batches/' + b.id)).data.batch;
          show(b);
        }
        clearInterval(timer);
        if (b.state === 'failed') {
          throw new Error(`Batch #${b.id} failed: ${b.error || 'unknown error'}. What it wrote was removed.`);
        }
        if (ctx.alive()) {
          out.replaceChildren(batchResult(b, (Date.now() - started) / 1000));
          out.querySelector('h2').focus();
        }
        toast(`Batch #${b.id}: ${num(b.total)} codes generated`, 'ok');
      } catch (err) {
        clearInterval(timer);
        out.replaceChildren(errorNotice(err));
      } finally {
        form.querySelectorAll('fieldset').forEach((fs) => { fs.disabled = false; });
      }
    });
  });
}

function batchResult(b, seconds) {
  const ids = b.categories || [];
  return card({ class: 'gen-result', 'data-testid': 'gen-result' },
    h('div', { class: 'result-head' }, h('span', { class: 'result-icon' }, icon('check')),
      h('div', {}, h('h2', { tabindex: '-1' }, `Batch #${b.id} is ready`),
        h('p', { class: 'muted' }, `${b.name ? b.name + ' · ' : ''}generated in ${elapsed(seconds)}`))),
    h('dl', { class: 'facts' },
      h('div', {}, h('dt', {}, 'Codes'), h('dd', { 'data-testid': 'gen-total' }, num(b.total))),
      h('div', {}, h('dt', {}, 'Rewards'), h('dd', {}, tomanRange(b.reward_min, b.reward_max))),
      h('div', {}, h('dt', {}, 'Total if all are claimed'), h('dd', {}, toman(b.total_reward))),
      h('div', {}, h('dt', {}, 'Per player'), h('dd', {}, num(b.per_user_limit || 1)))),
    h('p', { class: 'muted' }, `${ids.length} ${ids.length === 1 ? 'category' : 'categories'}:`),
    h('div', { class: 'chips', 'data-testid': 'gen-categories' }, ids.map((id) =>
      link('/admin/codes?category=' + id, { class: 'chip' }, '#' + id))),
    h('div', { class: 'form-actions' }, link('/admin/categories', { class: 'btn btn-primary' }, 'View categories')));
}

// ---- categories (live) ----

export async function categories(ctx) {
  const liveToggle = h('input', { type: 'checkbox', checked: true });
  const refresh = h('button', { type: 'button', class: 'btn btn-ghost' }, icon('refresh'), h('span', {}, 'Refresh'));
  const stamp = h('span', { class: 'muted live-stamp', 'aria-live': 'off' });
  ctx.root.appendChild(pageHead('Categories', 'Live figures of every category. Switch one off to stop claims at once.',
    h('label', { class: 'switch-label' }, liveToggle, h('span', {}, 'Live')), refresh));
  const figures = h('div', {});
  const body = h('div', {}, h('div', { class: 'loading-row' }, spinner(), 'Loading categories…'));
  ctx.root.append(figures, h('div', { class: 'live-line' }, stamp), body);
  const rows = new Map(); // id -> {tr, update}
  let tbody = null;

  function ensureTable() {
    if (tbody) {
      return;
    }
    tbody = h('tbody', {});
    const heads = ['Category', 'Status', 'Claimed', 'Remaining', 'Paid out', 'Rewards', 'Rules', ''];
    body.replaceChildren(card({ class: 'card-flush' }, h('div', { class: 'table-wrap' },
      h('table', { class: 'table table-cats', 'data-testid': 'categories-table' },
        h('caption', { class: 'sr-only' }, 'Categories'),
        h('thead', {}, h('tr', {}, heads.map((x, i) => h('th', { scope: 'col', class: [i >= 2 && i <= 4 && 'num'] }, x)))),
        tbody))));
  }

  async function load() {
    const cats = await allCategories();
    if (!ctx.alive()) {
      return;
    }
    figures.replaceChildren(kpis(totals(cats)));
    if (!cats.length) {
      tbody = null;
      rows.clear();
      body.replaceChildren(empty('grid', 'No categories yet', 'Generate a batch of codes to create the first categories.',
        link('/admin/generate', { class: 'btn btn-primary' }, 'Generate codes')));
      return;
    }
    ensureTable();
    let prev = null;
    for (const c of cats) {
      let row = rows.get(c.id);
      if (!row) {
        row = categoryRow(c);
        rows.set(c.id, row);
        tbody.insertBefore(row.tr, prev ? prev.nextSibling : tbody.firstChild);
      } else {
        row.update(c);
      }
      prev = row.tr;
    }
    stamp.textContent = 'Updated ' + new Date().toLocaleTimeString();
  }

  let timer = null;
  const schedule = () => {
    clearTimeout(timer);
    if (liveToggle.checked && ctx.alive()) {
      timer = setTimeout(async () => {
        if (!document.hidden) {
          try {
            await load();
          } catch {
            // the next tick tries again; a lost session is handled by the app
          }
        }
        schedule();
      }, LIVE_MS);
    }
  };
  liveToggle.addEventListener('change', schedule);
  refresh.addEventListener('click', () => busy(refresh, load));
  ctx.onLeave(() => clearTimeout(timer));
  await load();
  schedule();
}

function windowText(c) {
  if (!c.starts_at && !c.ends_at) {
    return 'open at any time';
  }
  const from = c.starts_at ? dateTime(c.starts_at) : 'now';
  const to = c.ends_at ? dateTime(c.ends_at) : 'no end';
  return `${from} → ${to}`;
}

function categoryRow(c0) {
  let c = c0;
  const sw = h('button', { type: 'button', role: 'switch', class: 'switch' }, h('span', { class: 'switch-knob' }));
  const state = h('span', { class: 'switch-text' });
  const name = h('strong', {});
  const sub = h('span', { class: 'muted small' });
  const claimed = h('span', {});
  const bar = h('span', { class: 'meter-fill' });
  const remaining = h('span', {});
  const paid = h('span', {});
  const rewards = h('span', {});
  const limit = h('span', { class: 'rule-limit' });
  const win = h('span', { class: 'muted small rule-window' });
  const label = c.name || 'category ' + c.id;
  const edit = h('button', { type: 'button', class: 'icon-btn', title: 'Edit', 'aria-label': 'Edit ' + label }, icon('edit'));
  const codesLink = link('/admin/codes?category=' + c.id, { class: 'icon-btn', title: 'Codes', 'aria-label': 'Codes of ' + label },
    icon('search'));
  const td = (lbl, cls, ...kids) => h('td', { 'data-label': lbl, class: cls }, h('div', { class: 'cell' }, ...kids));
  const tr = h('tr', { 'data-category': String(c.id) },
    td('Category', 'cat-cell', name, sub),
    td('Status', null, h('span', { class: 'switch-wrap' }, sw, state)),
    td('Claimed', 'num', claimed, h('span', { class: 'meter', 'aria-hidden': 'true' }, bar)),
    td('Remaining', 'num', remaining),
    td('Paid out', 'num', paid),
    td('Rewards', 'nowrap', rewards),
    td('Rules', 'rules-cell', limit, win),
    td('', 'row-actions', edit, codesLink));

  function update(next) {
    c = next;
    name.textContent = c.name || 'Category ' + c.id;
    sub.textContent = `#${c.id}${c.batch ? ' · batch ' + c.batch : ''}`;
    sw.setAttribute('aria-checked', String(Boolean(c.enabled)));
    sw.setAttribute('aria-label', `${c.enabled ? 'Disable' : 'Enable'} ${name.textContent}`);
    state.textContent = c.enabled ? (c.claimable ? 'Live' : (c.remaining ? 'On · outside window' : 'On · used up')) : 'Off';
    state.className = 'switch-text ' + (c.enabled && c.claimable ? 'is-live' : '');
    claimed.textContent = `${num(c.assigned)} / ${num(c.total)}`;
    bar.style.width = (c.total ? Math.round((c.assigned / c.total) * 100) : 0) + '%';
    remaining.textContent = num(c.remaining);
    paid.textContent = toman(c.paid_out);
    rewards.textContent = tomanRange(c.reward_min, c.reward_max);
    limit.textContent = `${num(c.per_user_limit)} per player`;
    win.textContent = windowText(c);
  }
  update(c);

  sw.addEventListener('click', () => busy(sw, async () => {
    const want = !c.enabled;
    try {
      const r = await patch('/admin/categories/' + c.id, { enabled: want });
      update({ ...c, ...r.data });
      toast(`${name.textContent} is ${want ? 'enabled' : 'disabled'}`, 'ok');
    } catch (err) {
      const { title, text } = explain(err);
      toast(`${title}: ${text}`, 'error');
    }
  }));
  edit.addEventListener('click', () => editCategory(c, (next) => update({ ...c, ...next })));
  return { tr, update };
}

function editCategory(c, done) {
  const limit = h('input', { type: 'number', min: '1', max: '1000000', value: String(c.per_user_limit || 1), required: true });
  const starts = h('input', { type: 'datetime-local', value: toLocalInput(c.starts_at) });
  const ends = h('input', { type: 'datetime-local', value: toLocalInput(c.ends_at) });
  const save = h('button', { type: 'submit', class: 'btn btn-primary' }, 'Save changes');
  const cancel = h('button', { type: 'button', class: 'btn btn-secondary' }, 'Cancel');
  const msg = h('div', { 'aria-live': 'polite' });
  const form = h('form', { class: 'stack', novalidate: true }, msg,
    field('Codes per player', limit),
    h('div', { class: 'grid-2' }, field('Opens', starts, 'empty: at once'), field('Closes', ends, 'empty: never')),
    h('div', { class: 'dialog-actions' }, cancel, save));
  const d = dialog(`Edit ${c.name || 'category ' + c.id}`, form);
  cancel.addEventListener('click', d.close);
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    const body = {};
    const l = Number(limit.value);
    if (!Number.isInteger(l) || l < 1) {
      fieldError(limit, 'A whole number, at least 1.');
      limit.focus();
      return;
    }
    if (l !== c.per_user_limit) {
      body.per_user_limit = l;
    }
    const s = fromLocalInput(starts.value);
    const en = fromLocalInput(ends.value);
    if (s && en && en <= s) {
      fieldError(ends, 'Must be after the opening time.');
      ends.focus();
      return;
    }
    if ((s || null) !== (c.starts_at || null)) {
      body.starts_at = s;
    }
    if ((en || null) !== (c.ends_at || null)) {
      body.ends_at = en;
    }
    if (!Object.keys(body).length) {
      d.close();
      return;
    }
    busy(save, async () => {
      try {
        const r = await patch('/admin/categories/' + c.id, body);
        done(r.data);
        toast('Category updated', 'ok');
        d.close();
      } catch (err) {
        msg.replaceChildren(errorNotice(err));
      }
    });
  });
}

// ---- code search ----

export async function codes(ctx) {
  const q = ctx.query;
  const code = h('input', { name: 'code', value: q.get('code') || '', autocomplete: 'off', spellcheck: 'false', placeholder: 'exact code' });
  const category = h('input', { name: 'category', type: 'number', min: '1', value: q.get('category') || '', inputmode: 'numeric' });
  const status = h('select', { name: 'status' },
    [['', 'Any'], ['available', 'Available'], ['assigned', 'Claimed']].map(([v, l]) =>
      h('option', { value: v, selected: (q.get('status') || '') === v }, l)));
  const user = h('input', { name: 'user', type: 'number', min: '1', value: q.get('user') || '', inputmode: 'numeric', placeholder: 'user id' });
  const go = h('button', { type: 'submit', class: 'btn btn-primary' }, icon('search'), h('span', {}, 'Search'));
  const form = h('form', { class: 'filters', role: 'search', novalidate: true },
    h('div', { class: 'filter-grid' }, field('Code', code), field('Category', category), field('Status', status), field('User', user)),
    h('div', { class: 'filter-actions' }, go));
  const out = h('div', {});
  ctx.root.append(pageHead('Code search', 'Find a code, or browse a category’s codes.'), card({}, form), out);

  async function search(push) {
    const params = {
      code: code.value.trim(), category: category.value.trim(), status: status.value, user: user.value.trim(),
    };
    if (!params.code && !params.category) {
      out.replaceChildren(notice('info', 'Enter a code or a category', 'Search needs a code, or a category to browse.'));
      return;
    }
    if (push) {
      history.replaceState(history.state, '', '/admin/codes' + qs(params));
    }
    const rows = [];
    const cols = [
      { label: 'Code', cell: (r) => h('span', { class: 'code-cell' }, h('code', { class: 'code' }, r.code), copyButton(r.code)) },
      { label: 'Category', cell: (r) => '#' + r.category },
      { label: 'Reward', num: true, cell: (r) => toman(r.reward) },
      { label: 'Status', cell: (r) => (r.status === 'assigned' ? badge('Claimed', 'accent') : badge('Available', 'ok')) },
      { label: 'Claimed by', cell: (r) => (r.user_id
        ? link('/admin/users/' + r.user_id, { 'data-state': JSON.stringify({ username: r.username || null }) },
          r.username || 'user', ' #' + r.user_id) : h('span', { class: 'muted' }, '—')) },
      { label: 'Claimed at', cell: (r) => (r.assigned_at ? dateTime(r.assigned_at) : '—') },
    ];
    const list = h('div', {});
    const more = moreButton('Load more codes', async (cursor) => {
      const r = await get('/admin/codes' + qs({ ...params, limit: 50, cursor }));
      rows.push(...r.data.items);
      draw();
      return r.data.next_cursor;
    });
    const draw = () => list.replaceChildren(rows.length
      ? card({ class: 'card-flush' }, table(cols, rows, { caption: 'Codes', class: 'table-codes' }))
      : empty('search', 'No codes match', 'Check the code or the filters.'));
    out.replaceChildren(h('div', { class: 'loading-row' }, spinner(), 'Searching…'));
    try {
      const r = await get('/admin/codes' + qs({ ...params, limit: 50 }));
      if (!ctx.alive()) {
        return;
      }
      rows.push(...r.data.items);
      draw();
      more.set(r.data.next_cursor);
      out.replaceChildren(list, more.el);
    } catch (err) {
      out.replaceChildren(err.status === 404 ? empty('search', 'No codes match', explain(err).text) : errorNotice(err));
    }
  }
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    busy(go, () => search(true));
  });
  if (q.get('code') || q.get('category')) {
    await search(false);
  }
}

// ---- users ----

export async function users(ctx) {
  const name = h('input', { name: 'username', value: ctx.query.get('username') || '', autocomplete: 'off', spellcheck: 'false', placeholder: 'starts with…' });
  const go = h('button', { type: 'submit', class: 'btn btn-primary' }, icon('search'), h('span', {}, 'Search'));
  const form = h('form', { class: 'filters filters-inline', role: 'search' }, field('Username', name), h('div', { class: 'filter-actions' }, go));
  const out = h('div', {});
  ctx.root.append(pageHead('Users', 'Players and administrators, newest first. Open a wallet, or disable an account.'), card({}, form), out);

  async function load() {
    const rows = [];
    const list = h('div', {});
    const cols = [
      { label: 'User', cell: (u) => h('span', { class: 'user-cell' }, h('span', { class: 'avatar avatar-sm', 'aria-hidden': 'true' }, u.username.slice(0, 1).toUpperCase()),
        h('span', {}, h('strong', {}, u.username), h('span', { class: 'muted small' }, ' #' + u.id))) },
      { label: 'Role', cell: (u) => (u.role === 'admin' ? badge('admin', 'accent') : badge('player', 'muted')) },
      { label: 'Status', cell: (u) => (u.disabled ? badge('Disabled', 'danger') : badge('Active', 'ok')) },
      { label: 'Balance', num: true, cell: (u) => toman(u.balance) },
      { label: 'Joined', cell: (u) => date(u.created_at) },
      { label: '', class: 'row-actions', cell: (u) => userActions(u, (next) => { Object.assign(u, next); draw(); }) },
    ];
    const draw = () => list.replaceChildren(rows.length
      ? card({ class: 'card-flush' }, table(cols, rows, { caption: 'Users' }))
      : empty('users', 'No users match', 'Try another beginning of a username.'));
    const more = moreButton('Load more users', async (cursor) => {
      const r = await get('/admin/users' + qs({ username: name.value.trim(), limit: 50, cursor }));
      rows.push(...r.data.items);
      draw();
      return r.data.next_cursor;
    });
    const r = await get('/admin/users' + qs({ username: name.value.trim(), limit: 50 }));
    if (!ctx.alive()) {
      return;
    }
    rows.push(...r.data.items);
    draw();
    more.set(r.data.next_cursor);
    out.replaceChildren(list, more.el);
  }
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    history.replaceState(history.state, '', '/admin/users' + qs({ username: name.value.trim() }));
    busy(go, () => load().catch((err) => out.replaceChildren(errorNotice(err))));
  });
  await load();
}

function userActions(u, changed) {
  const wallet = link('/admin/users/' + u.id, { class: 'btn btn-ghost btn-sm', 'data-state': JSON.stringify({ username: u.username }) },
    icon('wallet'), h('span', {}, 'Wallet'));
  if (session.me && session.me.id === u.id) {
    return h('span', { class: 'actions' }, wallet);
  }
  const toggle = h('button', { type: 'button', class: ['btn btn-sm', u.disabled ? 'btn-secondary' : 'btn-danger-ghost'] },
    u.disabled ? 'Enable' : 'Disable');
  const apply = () => busy(toggle, async () => {
    try {
      const r = await post(`/admin/users/${u.id}/${u.disabled ? 'enable' : 'disable'}`);
      changed(r.data);
      toast(`${u.username} is ${r.data.disabled ? 'disabled; their sessions are revoked' : 'enabled'}`, 'ok');
    } catch (err) {
      const { title, text } = explain(err);
      toast(`${title}: ${text}`, 'error');
    }
  });
  toggle.addEventListener('click', () => {
    if (u.disabled) {
      apply();
      return;
    }
    const yes = h('button', { type: 'button', class: 'btn btn-danger' }, 'Disable ' + u.username);
    const no = h('button', { type: 'button', class: 'btn btn-secondary' }, 'Cancel');
    const d = dialog(`Disable ${u.username}?`, h('div', {},
      h('p', {}, 'They are signed out everywhere at once and cannot sign in until enabled again. ',
        'Their codes and wallet stay as they are.'),
      h('div', { class: 'dialog-actions' }, no, yes)));
    no.addEventListener('click', d.close);
    yes.addEventListener('click', () => {
      d.close();
      apply();
    });
    no.focus();
  });
  return h('span', { class: 'actions' }, wallet, toggle);
}

export async function userWallet(ctx) {
  const id = ctx.params.id;
  if (!/^[1-9][0-9]{0,15}$/.test(id)) {
    ctx.root.appendChild(empty('users', 'No such user', 'That is not a user id.'));
    return;
  }
  const uname = ctx.state && ctx.state.username;
  ctx.root.appendChild(pageHead(uname ? `${uname}’s wallet` : `Wallet of user #${id}`, `User #${id}`,
    link('/admin/users', { class: 'btn btn-ghost' }, 'All users')));
  try {
    const r = await get(`/admin/users/${id}/wallet?limit=50`);
    if (!ctx.alive()) {
      return;
    }
    ctx.root.appendChild(walletView(r.data, async (cursor) => (await get(`/admin/users/${id}/wallet` + qs({ limit: 50, cursor }))).data,
      uname || `User #${id}`));
  } catch (err) {
    ctx.root.appendChild(err.status === 404 ? empty('users', 'No such user', 'There is no user with this id.') : errorNotice(err));
  }
}

// ---- audit log ----

const EVENT_TYPES = [
  'batch.generated', 'category.changed', 'code.assigned', 'claim.released', 'claim.credited', 'claim.failed',
  'user.signed_up', 'login.succeeded', 'login.failed', 'user.disabled', 'user.logged_out', 'admin.action',
];

function typeBadge(type) {
  const family = (type || '').split('.')[0];
  const kind = { claim: 'ok', code: 'ok', batch: 'accent', category: 'accent', admin: 'accent', login: 'muted', user: 'muted' }[family] || 'muted';
  return badge(type, type === 'login.failed' || type === 'claim.failed' || type === 'user.disabled' ? 'danger' : kind);
}

function subjectText(s) {
  if (!s) {
    return '';
  }
  const bits = [];
  if (s.username || s.user_id) {
    bits.push('user ' + (s.username || '') + (s.user_id ? ' #' + s.user_id : ''));
  }
  if (s.category) {
    bits.push('category #' + s.category);
  }
  if (s.categories) {
    bits.push(s.categories.length + ' categories');
  }
  if (s.batch) {
    bits.push('batch #' + s.batch);
  }
  if (s.code) {
    bits.push('code ' + s.code);
  }
  return bits.join(' · ');
}

export async function logs(ctx) {
  const q = ctx.query;
  const el = {
    from: h('input', { type: 'datetime-local', value: q.get('from') ? toLocalInput(Number(q.get('from'))) : '' }),
    to: h('input', { type: 'datetime-local', value: q.get('to') ? toLocalInput(Number(q.get('to'))) : '' }),
    service: h('select', {}, ['', 'gateway', 'chance', 'logger'].map((v) => h('option', { value: v, selected: q.get('service') === v }, v || 'Any'))),
    type: h('select', {}, ['', ...EVENT_TYPES].map((v) => h('option', { value: v, selected: q.get('type') === v }, v || 'Any'))),
    user: h('input', { value: q.get('user') || '', placeholder: 'id or username', autocomplete: 'off', spellcheck: 'false' }),
    category: h('input', { type: 'number', min: '1', value: q.get('category') || '', inputmode: 'numeric' }),
    code: h('input', { value: q.get('code') || '', autocomplete: 'off', spellcheck: 'false' }),
    q: h('input', { type: 'search', value: q.get('q') || '', placeholder: 'words in the message', maxlength: '100' }),
    limit: h('select', {}, ['25', '50', '100'].map((v) => h('option', { value: v, selected: (q.get('limit') || '50') === v }, v))),
  };
  const apply = h('button', { type: 'submit', class: 'btn btn-primary' }, 'Apply filters');
  const reset = h('button', { type: 'button', class: 'btn btn-ghost' }, 'Reset');
  const csv = h('a', { class: 'btn btn-secondary', download: 'audit.csv', href: '#' }, icon('download'), h('span', {}, 'Export CSV'));
  const form = h('form', { class: 'filters', role: 'search', novalidate: true },
    h('div', { class: 'filter-grid filter-grid-logs' },
      field('From', el.from), field('To', el.to), field('Service', el.service), field('Type', el.type),
      field('User', el.user), field('Category', el.category), field('Code', el.code), field('Message contains', el.q)),
    h('div', { class: 'filter-actions' }, field('Per page', el.limit), reset, apply));
  const out = h('div', {});
  const pager = h('div', { class: 'pager' });
  ctx.root.append(pageHead('Audit log', 'Every operation of every service, newest first.', csv), card({}, form), out, pager);

  let stack = [];    // cursors of the pages before the current one
  let cursor = null; // the current page's cursor (null: the first page)

  function filters() {
    const f = {
      from: fromLocalInput(el.from.value), to: fromLocalInput(el.to.value), service: el.service.value,
      type: el.type.value, user: el.user.value.trim(), category: el.category.value.trim(), code: el.code.value.trim(),
      q: el.q.value.trim(),
    };
    return f;
  }

  async function load() {
    const f = filters();
    for (const x of Object.values(el)) {
      fieldError(x, null);
    }
    if (f.from && f.to && f.to < f.from) {
      fieldError(el.to, 'Must be after “From”.');
      el.to.focus();
      return;
    }
    history.replaceState(history.state, '', '/admin/logs' + qs({ ...f, limit: el.limit.value === '50' ? null : el.limit.value }));
    csv.href = API_BASE + '/admin/logs.csv' + qs(f);
    out.replaceChildren(h('div', { class: 'loading-row' }, spinner(), 'Loading events…'));
    let r;
    try {
      r = await get('/admin/logs' + qs({ ...f, limit: el.limit.value, cursor }));
    } catch (err) {
      out.replaceChildren(errorNotice(err));
      pager.replaceChildren();
      return;
    }
    if (!ctx.alive()) {
      return;
    }
    const items = r.data.items;
    const cols = [
      { label: 'Time', class: 'nowrap', cell: (e) => h('time', { datetime: new Date(e.ts).toISOString() }, dateTimeSec(e.ts)) },
      { label: 'Event', cell: (e) => typeBadge(e.type) },
      { label: 'Service', cell: (e) => e.service },
      { label: 'By', cell: (e) => (e.actor ? `${e.actor.username || e.actor.role || ''}${e.actor.id ? ' #' + e.actor.id : ''}` : h('span', { class: 'muted' }, '—')) },
      { label: 'Subject', cell: (e) => subjectText(e.subject) },
      { label: 'Message', class: 'msg-col', cell: (e) => e.message },
      { label: '', class: 'row-actions', cell: (e) => detailsButton(e) },
    ];
    out.replaceChildren(items.length
      ? card({ class: 'card-flush' }, table(cols, items, { caption: 'Audit events', class: 'table-logs' }))
      : empty('log', 'No events match', 'Widen the period or clear some filters.'));
    const newer = h('button', { type: 'button', class: 'btn btn-secondary', disabled: !stack.length }, 'Newer');
    const older = h('button', { type: 'button', class: 'btn btn-secondary', disabled: !r.data.next_cursor }, 'Older');
    newer.addEventListener('click', () => {
      cursor = stack.pop() || null;
      load();
    });
    older.addEventListener('click', () => {
      stack.push(cursor);
      cursor = r.data.next_cursor;
      load();
    });
    pager.replaceChildren(newer, h('span', { class: 'muted' }, `Page ${stack.length + 1}`), older);
  }

  form.addEventListener('submit', (e) => {
    e.preventDefault();
    stack = [];
    cursor = null;
    busy(apply, load);
  });
  reset.addEventListener('click', () => {
    for (const k of ['from', 'to', 'user', 'category', 'code', 'q']) {
      el[k].value = '';
    }
    el.service.value = '';
    el.type.value = '';
    stack = [];
    cursor = null;
    load();
  });
  await load();
}

function detailsButton(e) {
  const b = h('button', { type: 'button', class: 'btn btn-ghost btn-sm' }, 'Details');
  b.addEventListener('click', () => {
    dialog(e.type, h('div', { class: 'stack' },
      h('p', { class: 'muted' }, dateTimeSec(e.ts), ' · ', e.service, ' · ', h('code', {}, e._id)),
      h('p', {}, e.message),
      h('pre', { class: 'json' }, JSON.stringify({ actor: e.actor, subject: e.subject, data: e.data }, null, 2))));
  });
  return b;
}

