// Claims and payouts over time, drawn as inline SVG (no library): bars for the number of claims,
// a line with a soft area for the Toman paid out. Keyboard: focus the chart, then ← → Home End.

import { h } from './ui.js?v=__CHANCED_BUILD__';
import { num, toman, compact, hour, day, date } from './fmt.js?v=__CHANCED_BUILD__';

const HOUR = 3600000;
const DAY = 86400000;

// A round axis maximum and step for values up to v, in `ticks` steps.
function niceScale(v, ticks, integer) {
  if (!(v > 0)) {
    return { max: ticks, step: 1 };
  }
  const raw = v / ticks;
  const mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const norm = raw / mag;
  let step = (norm <= 1 ? 1 : norm <= 2 ? 2 : norm <= 2.5 ? 2.5 : norm <= 5 ? 5 : 10) * mag;
  if (integer) {
    step = Math.max(1, Math.ceil(step));
  }
  return { max: step * ticks, step };
}

// One point per bucket from `from` to `to`, zeros where the server had no events.
export function series(buckets, from, to, bucket, type) {
  const size = bucket === 'day' ? DAY : HOUR;
  const byStart = new Map();
  for (const b of buckets) {
    if (type && b.type !== type) {
      continue;
    }
    const cur = byStart.get(b.start) || { count: 0, reward: 0 };
    cur.count += b.count || 0;
    cur.reward += b.reward || 0;
    byStart.set(b.start, cur);
  }
  const out = [];
  const first = Math.floor(from / size) * size;
  for (let t = first; t <= to; t += size) {
    const v = byStart.get(t) || { count: 0, reward: 0 };
    byStart.delete(t);
    out.push({ start: t, count: v.count, reward: v.reward });
  }
  // Buckets the server aligned differently (e.g. days in another zone): keep them, in order.
  for (const [t, v] of byStart) {
    out.push({ start: t, count: v.count, reward: v.reward });
  }
  out.sort((a, b) => a.start - b.start);
  return out;
}

function s(tag, attrs, ...children) {
  return h('svg:' + tag, attrs, ...children);
}

// Returns an element that draws points (from series()) and redraws when resized.
export function claimsChart(points, { bucket = 'hour', label = 'Claims and payouts' } = {}) {
  const totalCount = points.reduce((a, p) => a + p.count, 0);
  const totalReward = points.reduce((a, p) => a + p.reward, 0);
  const tip = h('div', { class: 'chart-tip', hidden: true, 'aria-hidden': 'true' });
  const svgHost = h('div', { class: 'chart-svg' });
  const live = h('div', { class: 'sr-only', 'aria-live': 'polite' });
  const wrap = h('div', { class: 'chart' },
    h('div', { class: 'chart-legend' },
      h('span', { class: 'legend-item' }, h('span', { class: 'swatch swatch-bar' }), 'Claims ', h('strong', {}, num(totalCount))),
      h('span', { class: 'legend-item' }, h('span', { class: 'swatch swatch-line' }), 'Paid out ', h('strong', {}, toman(totalReward)))),
    svgHost, tip, live, dataTable(points, bucket));
  let active = -1;
  let geom = null;

  const when = (t) => (bucket === 'day' ? date(t) : date(t) + ', ' + hour(t));

  function draw() {
    const W = Math.max(280, svgHost.clientWidth || 640);
    const H = W < 520 ? 220 : 280;
    const m = { l: 40, r: 58, t: 14, b: 28 };
    const iw = W - m.l - m.r;
    const ih = H - m.t - m.b;
    const n = Math.max(1, points.length);
    const band = iw / n;
    const cs = niceScale(Math.max(0, ...points.map((p) => p.count)), 4, true);
    const rs = niceScale(Math.max(0, ...points.map((p) => p.reward)), 4, false);
    const yc = (v) => m.t + ih - (v / cs.max) * ih;
    const yr = (v) => m.t + ih - (v / rs.max) * ih;
    const xc = (i) => m.l + band * i + band / 2;
    geom = { band, m, xc, W };

    const grid = [];
    for (let i = 0; i <= 4; i++) {
      const y = m.t + ih - (i / 4) * ih;
      grid.push(s('line', { class: 'chart-grid', x1: m.l, x2: W - m.r, y1: y, y2: y }));
      grid.push(s('text', { class: 'chart-axis', x: m.l - 8, y: y + 4, 'text-anchor': 'end' }, num(cs.step * i)));
      grid.push(s('text', { class: 'chart-axis chart-axis-r', x: W - m.r + 8, y: y + 4, 'text-anchor': 'start' }, compact(rs.step * i)));
    }
    const labelEvery = Math.max(1, Math.ceil(n / Math.floor(iw / (bucket === 'day' ? 56 : 48))));
    const xlabels = points.map((p, i) => (i % labelEvery === 0
      ? s('text', { class: 'chart-axis', x: xc(i), y: H - 8, 'text-anchor': 'middle' }, bucket === 'day' ? day(p.start) : hour(p.start))
      : null));
    const bw = Math.max(2, Math.min(28, band * 0.62));
    const bars = points.map((p, i) => {
      const y = yc(p.count);
      return s('rect', { class: ['chart-bar', i === active && 'is-active'], x: xc(i) - bw / 2, y, width: bw,
        height: Math.max(0, m.t + ih - y), rx: Math.min(4, bw / 3) });
    });
    const line = points.map((p, i) => `${i ? 'L' : 'M'}${xc(i).toFixed(1)},${yr(p.reward).toFixed(1)}`).join('');
    const area = points.length
      ? `${line}L${xc(points.length - 1).toFixed(1)},${m.t + ih}L${xc(0).toFixed(1)},${m.t + ih}Z` : '';
    const dots = points.map((p, i) => (p.reward > 0 || i === active
      ? s('circle', { class: ['chart-dot', i === active && 'is-active'], cx: xc(i), cy: yr(p.reward), r: i === active ? 4.5 : 2.5 })
      : null));
    const cursor = active >= 0
      ? s('line', { class: 'chart-cursor', x1: xc(active), x2: xc(active), y1: m.t, y2: m.t + ih }) : null;
    const gid = 'g' + Math.random().toString(36).slice(2, 8);
    const svg = s('svg', {
      width: W, height: H, viewBox: `0 0 ${W} ${H}`, class: 'chart-el', role: 'img', tabindex: '0',
      'aria-label': `${label}: ${num(totalCount)} claims, ${toman(totalReward)} paid out. Use the arrow keys to read each ${bucket}.`,
    },
    s('defs', {}, s('linearGradient', { id: gid, x1: 0, x2: 0, y1: 0, y2: 1 },
      s('stop', { offset: '0%', class: 'chart-area-top' }), s('stop', { offset: '100%', class: 'chart-area-bottom' }))),
    grid, cursor, bars, s('path', { class: 'chart-area', d: area, fill: `url(#${gid})` }),
    s('path', { class: 'chart-line', d: line }), dots, xlabels,
    s('line', { class: 'chart-base', x1: m.l, x2: W - m.r, y1: m.t + ih, y2: m.t + ih }));
    svg.addEventListener('pointermove', (e) => {
      const r = svg.getBoundingClientRect();
      const i = Math.floor((e.clientX - r.left - m.l) / band);
      setActive(i >= 0 && i < points.length ? i : -1, false);
    });
    svg.addEventListener('pointerleave', () => setActive(-1, false));
    svg.addEventListener('keydown', onKey);
    svg.addEventListener('blur', () => setActive(-1, false));
    const hadFocus = svgHost.contains(document.activeElement);
    svgHost.replaceChildren(svg);
    if (hadFocus) {
      svg.focus();
    }
  }

  function onKey(e) {
    const last = points.length - 1;
    let i = active;
    if (e.key === 'ArrowRight') {
      i = Math.min(last, i + 1);
    } else if (e.key === 'ArrowLeft') {
      i = i < 0 ? last : Math.max(0, i - 1);
    } else if (e.key === 'Home') {
      i = 0;
    } else if (e.key === 'End') {
      i = last;
    } else {
      return;
    }
    e.preventDefault();
    setActive(i, true);
  }

  function setActive(i, announce) {
    if (i === active) {
      return;
    }
    active = i;
    draw();
    if (i < 0) {
      tip.hidden = true;
      return;
    }
    const p = points[i];
    tip.replaceChildren(h('strong', {}, when(p.start)),
      h('span', {}, h('span', { class: 'swatch swatch-bar' }), `${num(p.count)} ${p.count === 1 ? 'claim' : 'claims'}`),
      h('span', {}, h('span', { class: 'swatch swatch-line' }), toman(p.reward)));
    tip.hidden = false;
    const x = geom.xc(i);
    const left = Math.min(Math.max(8, x - tip.offsetWidth / 2), geom.W - tip.offsetWidth - 8);
    tip.style.left = left + 'px';
    if (announce) {
      live.textContent = `${when(p.start)}: ${p.count} claims, ${toman(p.reward)}`;
    }
  }

  const ro = new ResizeObserver(() => draw());
  ro.observe(svgHost);
  requestAnimationFrame(draw);
  wrap.destroy = () => ro.disconnect();
  return wrap;
}

function dataTable(points, bucket) {
  const rows = points.filter((p) => p.count || p.reward);
  return h('details', { class: 'chart-data' }, h('summary', {}, 'Show the numbers'),
    rows.length
      ? h('table', { class: 'table table-compact' },
        h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, bucket === 'day' ? 'Day' : 'Hour'),
          h('th', { scope: 'col', class: 'num' }, 'Claims'), h('th', { scope: 'col', class: 'num' }, 'Paid out'))),
        h('tbody', {}, rows.map((p) => h('tr', {},
          h('td', {}, bucket === 'day' ? date(p.start) : date(p.start) + ' ' + hour(p.start)),
          h('td', { class: 'num' }, num(p.count)), h('td', { class: 'num' }, toman(p.reward))))))
      : h('p', { class: 'muted' }, 'No claims in this period.'));
}
