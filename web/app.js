// chanced web app: boot, session, client-side routes, top bar. Views live in player.js,
// admin.js and auth.js; every byte of data comes from the public /api/v1.

import { get, post, onApiEvent } from './api.js?v=__CHANCED_BUILD__';
import { h, clear, icon, banner, toast, busy, empty } from './ui.js?v=__CHANCED_BUILD__';
import { toman } from './fmt.js?v=__CHANCED_BUILD__';
import * as player from './player.js?v=__CHANCED_BUILD__';
import * as admin from './admin.js?v=__CHANCED_BUILD__';
import * as auth from './auth.js?v=__CHANCED_BUILD__';

// The signed-in user ({id, username, role, balance}) or null. Only public facts: the session
// itself lives in an HttpOnly cookie that scripts cannot read.
export const session = { me: null };

const ROUTES = [
  { path: '/', view: player.play, access: 'user', title: 'Play', nav: '/' },
  { path: '/codes', view: player.codes, access: 'user', title: 'My codes', nav: '/codes' },
  { path: '/wallet', view: player.wallet, access: 'user', title: 'Wallet', nav: '/wallet' },
  { path: '/signin', view: auth.signin, access: 'guest', title: 'Sign in' },
  { path: '/signup', view: auth.signup, access: 'guest', title: 'Create an account' },
  { path: '/admin', view: admin.overview, access: 'admin', title: 'Admin overview', nav: '/admin', sub: '/admin' },
  { path: '/admin/generate', view: admin.generate, access: 'admin', title: 'Generate codes', nav: '/admin', sub: '/admin/generate' },
  { path: '/admin/categories', view: admin.categories, access: 'admin', title: 'Categories', nav: '/admin', sub: '/admin/categories' },
  { path: '/admin/codes', view: admin.codes, access: 'admin', title: 'Code search', nav: '/admin', sub: '/admin/codes' },
  { path: '/admin/users', view: admin.users, access: 'admin', title: 'Users', nav: '/admin', sub: '/admin/users' },
  { path: '/admin/users/:id', view: admin.userWallet, access: 'admin', title: 'User wallet', nav: '/admin', sub: '/admin/users' },
  { path: '/admin/logs', view: admin.logs, access: 'admin', title: 'Audit log', nav: '/admin', sub: '/admin/logs' },
];

export const ADMIN_TABS = [
  ['/admin', 'Overview', 'chart'],
  ['/admin/generate', 'Generate', 'plus'],
  ['/admin/categories', 'Categories', 'grid'],
  ['/admin/codes', 'Codes', 'search'],
  ['/admin/users', 'Users', 'users'],
  ['/admin/logs', 'Audit log', 'log'],
];

function match(pathname) {
  const parts = pathname.replace(/\/+$/, '').split('/');
  for (const r of ROUTES) {
    const rp = r.path.replace(/\/+$/, '').split('/');
    if (rp.length !== parts.length) {
      continue;
    }
    const params = {};
    let ok = true;
    for (let i = 0; i < rp.length; i++) {
      if (rp[i].startsWith(':')) {
        params[rp[i].slice(1)] = decodeURIComponent(parts[i]);
      } else if (rp[i] !== parts[i]) {
        ok = false;
        break;
      }
    }
    if (ok) {
      return { route: r, params };
    }
  }
  return null;
}

// ---- navigation ----

let renderSeq = 0;
let cleanup = null;
let firstRender = true;

export function navigate(to, { replace = false, state = null } = {}) {
  const url = new URL(to, location.origin);
  if (url.pathname + url.search === location.pathname + location.search && !replace) {
    render();
    return;
  }
  history[replace ? 'replaceState' : 'pushState'](state, '', url.pathname + url.search + url.hash);
  render();
}

// Same-origin links marked data-link (or inside the app) navigate without a reload.
document.addEventListener('click', (e) => {
  const a = e.target.closest && e.target.closest('a[href]');
  if (!a || e.defaultPrevented || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) {
    return;
  }
  if (a.target || a.hasAttribute('download') || !a.hasAttribute('data-link')) {
    return;
  }
  const url = new URL(a.href);
  if (url.origin !== location.origin) {
    return;
  }
  e.preventDefault();
  navigate(url.pathname + url.search, { state: a.dataset.state ? JSON.parse(a.dataset.state) : null });
});

window.addEventListener('popstate', () => render());

export function link(href, attrs, ...children) {
  return h('a', { href, 'data-link': '', ...attrs }, ...children);
}

// ---- session ----

export async function refreshMe() {
  try {
    const r = await get('/me', { quiet401: true });
    session.me = r.data;
  } catch (e) {
    if (e.status === 401) {
      session.me = null;
    } else {
      throw e;
    }
  }
  renderChrome();
  return session.me;
}

// After a sign-in or sign-up answer (its token is not kept: the cookie carries the session).
export async function signedIn(user) {
  session.me = { ...user, balance: 0 };
  sessionLostShown = false;
  banner(null);
  await refreshMe();
}

export function setBalance(balance) {
  if (session.me && Number.isFinite(balance)) {
    session.me.balance = balance;
    renderChrome();
  }
}

let sessionLostShown = false;
onApiEvent((ev) => {
  if (ev !== 'session-lost' || !session.me) {
    return;
  }
  session.me = null;
  renderChrome();
  if (!sessionLostShown) {
    sessionLostShown = true;
    banner('Your session has ended. Please sign in again to continue.', 'warn');
  }
  const here = location.pathname + location.search;
  navigate('/signin' + (here !== '/' && !here.startsWith('/sign') ? '?next=' + encodeURIComponent(here) : ''), { replace: true });
});

async function signOut(btn) {
  await busy(btn, async () => {
    try {
      await post('/auth/logout');
    } catch (e) {
      if (e.status !== 401) {
        toast('Could not sign out: ' + e.message, 'error');
        return;
      }
    }
    session.me = null;
    renderChrome();
    toast('You are signed out', 'ok');
    navigate('/signin', { replace: true });
  });
}

// ---- chrome: main navigation and the account area ----

function renderChrome() {
  const nav = document.getElementById('mainnav');
  const account = document.getElementById('account');
  clear(nav);
  clear(account);
  const me = session.me;
  const here = match(location.pathname);
  const current = here ? here.route.nav : null;
  if (!me) {
    return;
  }
  const items = [['/', 'Play', 'gift'], ['/codes', 'My codes', 'ticket'], ['/wallet', 'Wallet', 'wallet']];
  if (me.role === 'admin') {
    items.push(['/admin', 'Admin', 'lock']);
  }
  nav.appendChild(h('ul', {}, items.map(([href, label, ic]) => h('li', {},
    link(href, { class: 'navlink', 'aria-current': current === href ? 'page' : null }, icon(ic), h('span', {}, label))))));
  const out = h('button', { type: 'button', class: 'btn btn-ghost btn-sm', title: 'Sign out' },
    icon('logout'), h('span', { class: 'hide-sm' }, 'Sign out'));
  out.addEventListener('click', () => signOut(out));
  account.appendChild(link('/wallet', { class: 'balance-pill', title: 'Your balance', 'data-testid': 'balance' },
    icon('wallet'), h('span', { class: 'balance-value' }, toman(me.balance))));
  account.appendChild(h('span', { class: 'who' },
    h('span', { class: 'avatar', 'aria-hidden': 'true' }, (me.username || '?').slice(0, 1).toUpperCase()),
    h('span', { class: 'who-name hide-sm' }, me.username),
    me.role === 'admin' ? h('span', { class: 'badge badge-accent hide-sm' }, 'admin') : null));
  account.appendChild(out);
}

// ---- rendering ----

function notFound(ctx) {
  ctx.root.appendChild(empty('search', 'Page not found', 'There is nothing at this address.',
    link('/', { class: 'btn btn-primary' }, 'Go to the start')));
}

function forbidden(ctx) {
  ctx.root.appendChild(h('div', { class: 'forbidden', 'data-testid': 'forbidden' },
    empty('lock', 'Administrators only',
      'This page is for administrators. Your account can play, see its codes and its wallet.',
      link('/', { class: 'btn btn-primary' }, 'Back to play'))));
  const h2 = ctx.root.querySelector('h2');
  h2.setAttribute('tabindex', '-1');
  h2.classList.add('page-title');
}

export async function render() {
  const seq = ++renderSeq;
  if (cleanup) {
    try {
      cleanup();
    } catch {
      // a view's cleanup must not stop navigation
    }
    cleanup = null;
  }
  const root = document.getElementById('main');
  const m = match(location.pathname);
  const me = session.me;
  let view = notFound;
  let title = 'Not found';
  if (m) {
    const r = m.route;
    title = r.title;
    if (r.access === 'guest' && me) {
      navigate(new URLSearchParams(location.search).get('next') || '/', { replace: true });
      return;
    }
    if (r.access !== 'guest' && !me) {
      const here = location.pathname + location.search;
      navigate('/signin' + (here !== '/' ? '?next=' + encodeURIComponent(here) : ''), { replace: true });
      return;
    }
    view = r.access === 'admin' && me.role !== 'admin' ? forbidden : r.view;
    if (view === forbidden) {
      title = 'Administrators only';
    }
  }
  document.title = title + ' · chanced';
  renderChrome();
  const ctx = {
    root: clear(root),
    params: m ? m.params : {},
    query: new URLSearchParams(location.search),
    state: history.state,
    route: m ? m.route : null,
    session,
    alive: () => seq === renderSeq,
    onLeave: (fn) => {
      const prev = cleanup;
      cleanup = () => {
        fn();
        if (prev) {
          prev();
        }
      };
    },
  };
  root.classList.toggle('main-wide', Boolean(m && m.route.access === 'admin'));
  if (m && m.route.access === 'admin' && view !== forbidden) {
    root.appendChild(adminTabs(m.route.sub));
    ctx.root = root.appendChild(h('div', { class: 'admin-body' }));
  }
  try {
    await view(ctx);
  } catch (e) {
    if (seq === renderSeq && e.status !== 401) {
      ctx.root.appendChild(h('div', { class: 'notice notice-error', role: 'alert' },
        icon('alert'), h('div', {}, h('strong', {}, 'This page could not be loaded'), h('p', {}, e.message || String(e)))));
    }
  }
  if (seq === renderSeq && !firstRender) {
    const t = root.querySelector('.page-title');
    if (t) {
      t.focus({ preventScroll: false });
    }
  }
  firstRender = false;
  window.scrollTo(0, 0);
}

function adminTabs(current) {
  return h('nav', { class: 'subnav', 'aria-label': 'Admin' }, h('ul', {}, ADMIN_TABS.map(([href, label, ic]) =>
    h('li', {}, link(href, { class: 'subnav-link', 'aria-current': current === href ? 'page' : null }, icon(ic), h('span', {}, label))))));
}

async function boot() {
  try {
    await refreshMe();
  } catch (e) {
    banner('The server is not answering right now (' + (e.message || 'error') + '). Retrying…', 'warn');
    setTimeout(boot, 3000);
    return;
  }
  banner(null);
  await render();
}

boot();
