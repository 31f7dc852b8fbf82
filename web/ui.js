// DOM helpers: nodes are built with h() (never from HTML strings: the page runs under Trusted
// Types), plus toasts, banners, dialogs, busy buttons, responsive tables and copy-to-clipboard.

// h('button', {class: 'btn', onclick: fn}, 'Save') -> <button class="btn">Save</button>
export function h(tag, attrs, ...children) {
  const svg = tag.startsWith('svg:');
  const el = svg
    ? document.createElementNS('http://www.w3.org/2000/svg', tag.slice(4))
    : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) {
      continue;
    }
    if (k.startsWith('on') && typeof v === 'function') {
      el.addEventListener(k.slice(2), v);
    } else if (k === 'class') {
      el.setAttribute('class', Array.isArray(v) ? v.filter(Boolean).join(' ') : v);
    } else if (k === 'dataset') {
      Object.assign(el.dataset, v);
    } else if (k === 'value' && !svg) {
      el.value = v;
    } else if (k === 'checked' || k === 'selected' || k === 'disabled') {
      el[k] = Boolean(v);
      if (v) {
        el.setAttribute(k, '');
      }
    } else {
      el.setAttribute(k, v === true ? '' : String(v));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === undefined || c === null || c === false) {
      continue;
    }
    if (Array.isArray(c)) {
      append(el, c);
    } else if (c instanceof Node) {
      el.appendChild(c);
    } else {
      el.appendChild(document.createTextNode(String(c)));
    }
  }
}

export function clear(el) {
  el.replaceChildren();
  return el;
}

export function $(sel, root = document) {
  return root.querySelector(sel);
}

// ---- icons (inline SVG, drawn with currentColor) ----

const ICONS = {
  copy: 'M9 9h10v12H9zM5 15V3h10',
  check: 'M4 12l5 5L20 6',
  gift: 'M3 10h18v4H3zM5 14h14v7H5zM12 10v11M12 10c-2-5-7-4-6-1 1 2 6 1 6 1zm0 0c2-5 7-4 6-1-1 2-6 1-6 1z',
  wallet: 'M3 7h15a3 3 0 013 3v8a3 3 0 01-3 3H3zM3 7l12-4v4M16 14h2',
  ticket: 'M3 7h18v3a2 2 0 000 4v3H3v-3a2 2 0 000-4zM14 7v10',
  chart: 'M4 20V10M10 20V4M16 20v-7M22 20H2',
  plus: 'M12 5v14M5 12h14',
  search: 'M11 18a7 7 0 110-14 7 7 0 010 14zM21 21l-5-5',
  grid: 'M4 4h7v7H4zM13 4h7v7h-7zM4 13h7v7H4zM13 13h7v7h-7z',
  users: 'M9 11a4 4 0 100-8 4 4 0 000 8zM2 21v-1a6 6 0 0114 0v1M16 3a4 4 0 010 8M18 14a5 5 0 014 5v2',
  log: 'M5 4h14v16H5zM8 8h8M8 12h8M8 16h5',
  download: 'M12 3v12M7 10l5 5 5-5M4 21h16',
  refresh: 'M20 11a8 8 0 10-2.3 5.7M20 4v7h-7',
  alert: 'M12 3l10 18H2zM12 10v5M12 18v.5',
  info: 'M12 22a10 10 0 110-20 10 10 0 010 20zM12 11v6M12 7v.5',
  lock: 'M6 11h12v10H6zM8 11V7a4 4 0 018 0v4',
  logout: 'M15 4h4v16h-4M10 8l-4 4 4 4M6 12h10',
  close: 'M6 6l12 12M18 6L6 18',
  clock: 'M12 22a10 10 0 110-20 10 10 0 010 20zM12 6v6l4 2',
  sparkle: 'M12 2l2.2 6.8L21 11l-6.8 2.2L12 20l-2.2-6.8L3 11l6.8-2.2z',
  edit: 'M4 20h4L20 8l-4-4L4 16zM14 6l4 4',
  chevron: 'M9 6l6 6-6 6',
};

export function icon(name, cls = 'icon') {
  return h('svg:svg', { class: cls, viewBox: '0 0 24 24', 'aria-hidden': 'true', focusable: 'false' },
    h('svg:path', { d: ICONS[name] || ICONS.info }));
}

// ---- feedback ----

// A short message in the corner; kind: 'ok' | 'error' | 'info'.
export function toast(message, kind = 'info', ms = 4500) {
  const box = document.getElementById('toasts');
  const t = h('div', { class: ['toast', 'toast-' + kind] },
    icon(kind === 'ok' ? 'check' : kind === 'error' ? 'alert' : 'info'), h('span', {}, message));
  box.appendChild(t);
  setTimeout(() => {
    t.classList.add('leaving');
    setTimeout(() => t.remove(), 300);
  }, ms);
}

// The banner under the top bar (e.g. "your session ended"); null clears it.
export function banner(message, kind = 'warn', action = null) {
  const slot = document.getElementById('banner');
  clear(slot);
  if (!message) {
    return;
  }
  slot.appendChild(h('div', { class: ['banner', 'banner-' + kind] },
    icon(kind === 'warn' ? 'alert' : 'info'), h('span', {}, message), action));
}

// An inline message block; kind: 'error' | 'warn' | 'info' | 'ok'.
export function notice(kind, title, text, ...extra) {
  return h('div', { class: ['notice', 'notice-' + kind], role: kind === 'error' ? 'alert' : 'status' },
    icon(kind === 'ok' ? 'check' : kind === 'info' ? 'info' : 'alert'),
    h('div', {}, title ? h('strong', {}, title) : null, text ? h('p', {}, text) : null, ...extra));
}

export function spinner(label) {
  return h('span', { class: 'spinner', role: label ? 'status' : null, 'aria-label': label || null,
    'aria-hidden': label ? null : 'true' });
}

// Runs fn while btn shows a spinner and is disabled; returns fn's result.
export async function busy(btn, fn) {
  if (btn.getAttribute('aria-busy') === 'true') {
    return undefined;
  }
  btn.setAttribute('aria-busy', 'true');
  btn.disabled = true;
  btn.classList.add('is-busy');
  try {
    return await fn();
  } finally {
    btn.removeAttribute('aria-busy');
    btn.disabled = false;
    btn.classList.remove('is-busy');
  }
}

// ---- layout pieces ----

export function pageHead(title, subtitle, ...actions) {
  return h('div', { class: 'page-head' },
    h('div', {},
      h('h1', { tabindex: '-1', class: 'page-title' }, title),
      subtitle ? h('p', { class: 'page-sub' }, subtitle) : null),
    actions.length ? h('div', { class: 'page-actions' }, ...actions) : null);
}

export function card(attrs, ...children) {
  return h('section', { ...attrs, class: ['card', attrs && attrs.class] }, ...children);
}

export function empty(iconName, title, text, ...extra) {
  return h('div', { class: 'empty' }, h('div', { class: 'empty-icon' }, icon(iconName)),
    h('h2', {}, title), text ? h('p', {}, text) : null, ...extra);
}

export function badge(text, kind = 'neutral') {
  return h('span', { class: ['badge', 'badge-' + kind] }, text);
}

// A table that turns into stacked cards on narrow screens: columns are
// {label, cell: (row) -> node|string, class?, num?: true}.
export function table(columns, rows, opts = {}) {
  const thead = h('thead', {}, h('tr', {}, columns.map((c) =>
    h('th', { scope: 'col', class: [c.class, c.num && 'num'] }, c.label))));
  const tbody = h('tbody', {}, rows.map((r) => {
    const tr = h('tr', { class: opts.rowClass ? opts.rowClass(r) : null },
      columns.map((c) => h('td', { class: [c.class, c.num && 'num'], 'data-label': c.label }, c.cell(r))));
    return opts.after ? [tr, opts.after(r)] : tr;
  }).flat().filter(Boolean));
  return h('div', { class: 'table-wrap' },
    h('table', { class: ['table', opts.class] }, opts.caption ? h('caption', { class: 'sr-only' }, opts.caption) : null,
      thead, tbody));
}

// A labelled form field; input is an element (input/select/textarea) given an id here.
let fieldSeq = 0;
export function field(label, input, hint) {
  const id = input.id || 'f' + (++fieldSeq);
  input.id = id;
  let hintEl = null;
  if (hint) {
    hintEl = h('span', { class: 'hint', id: id + '-hint' }, hint);
    input.setAttribute('aria-describedby', id + '-hint');
  }
  return h('div', { class: 'field' }, h('label', { for: id }, label), input, hintEl);
}

// Marks a form field invalid with a message (or clears it with null).
export function fieldError(input, message) {
  const wrap = input.closest('.field');
  const old = wrap && wrap.querySelector('.field-error');
  if (old) {
    old.remove();
  }
  if (!message) {
    input.removeAttribute('aria-invalid');
    return;
  }
  input.setAttribute('aria-invalid', 'true');
  const id = input.id + '-err';
  wrap.appendChild(h('span', { class: 'field-error', id }, message));
  input.setAttribute('aria-describedby', [input.getAttribute('aria-describedby'), id].filter(Boolean).join(' '));
}

// ---- dialogs ----

// Opens a modal <dialog>; returns {el, close}. content: nodes; onClose called once.
export function dialog(titleText, content, opts = {}) {
  const titleId = 'dlg' + (++fieldSeq);
  const closeBtn = h('button', { type: 'button', class: 'icon-btn dialog-close', 'aria-label': 'Close' }, icon('close'));
  const dlg = h('dialog', { class: ['dialog', opts.class], 'aria-labelledby': titleId },
    h('div', { class: 'dialog-head' }, h('h2', { id: titleId }, titleText), closeBtn),
    h('div', { class: 'dialog-body' }, content));
  let closed = false;
  const close = () => {
    if (closed) {
      return;
    }
    closed = true;
    if (dlg.open) {
      dlg.close();
    }
    dlg.remove();
    if (opts.onClose) {
      opts.onClose();
    }
  };
  closeBtn.addEventListener('click', close);
  dlg.addEventListener('close', close);
  dlg.addEventListener('click', (e) => {
    if (e.target === dlg) {
      close(); // a click on the backdrop
    }
  });
  document.body.appendChild(dlg);
  dlg.showModal();
  return { el: dlg, close };
}

// ---- clipboard ----

export async function copyText(text) {
  try {
    if (navigator.clipboard && window.isSecureContext) {
      await navigator.clipboard.writeText(text);
      return true;
    }
  } catch {
    // fall through to the selection fallback
  }
  const ta = h('textarea', { class: 'offscreen', readonly: true }, text);
  document.body.appendChild(ta);
  ta.select();
  let ok = false;
  try {
    ok = document.execCommand('copy');
  } catch {
    ok = false;
  }
  ta.remove();
  return ok;
}

// A "Copy" button for text; shows "Copied" for a moment.
export function copyButton(text, label = 'Copy') {
  const txt = h('span', {}, label);
  const btn = h('button', { type: 'button', class: 'btn btn-ghost btn-sm copy-btn', 'aria-label': label + ' ' + text },
    icon('copy'), txt);
  btn.addEventListener('click', async () => {
    const ok = await copyText(text);
    txt.textContent = ok ? 'Copied' : 'Copy failed';
    btn.classList.toggle('copied', ok);
    toast(ok ? 'Code copied to the clipboard' : 'Could not copy; select the code and copy it by hand', ok ? 'ok' : 'error', 2500);
    setTimeout(() => {
      txt.textContent = label;
      btn.classList.remove('copied');
    }, 1800);
  });
  return btn;
}

// "Load more" button for cursor pages: load(cursor) -> next cursor or null.
export function moreButton(label, load) {
  const btn = h('button', { type: 'button', class: 'btn btn-secondary' }, label);
  let cursor = null;
  const wrap = h('div', { class: 'more' }, btn);
  btn.addEventListener('click', () => busy(btn, async () => {
    cursor = await load(cursor);
    wrap.hidden = !cursor;
  }));
  return {
    el: wrap,
    set(next) {
      cursor = next;
      wrap.hidden = !next;
    },
  };
}

export function visuallyHidden(text) {
  return h('span', { class: 'sr-only' }, text);
}
