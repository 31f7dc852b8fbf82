// Sign in and sign up. The answer's token is ignored on purpose: the gateway also sets the
// HttpOnly session cookie and the CSRF cookie, which is all the browser needs.

import { post } from './api.js?v=__CHANCED_BUILD__';
import { h, busy, field, fieldError, notice } from './ui.js?v=__CHANCED_BUILD__';
import { explain } from './errors.js?v=__CHANCED_BUILD__';
import { link, navigate, signedIn } from './app.js?v=__CHANCED_BUILD__';

const USERNAME_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{2,31}$/;

// Password hashing is bounded on the server: a busy answer (503) is retried a few times.
async function send(path, body) {
  for (let attempt = 0; ; attempt++) {
    try {
      return await post(path, body, { quiet401: true });
    } catch (err) {
      if (err.code !== 'busy' || attempt >= 4) {
        throw err;
      }
      await new Promise((r) => setTimeout(r, 1000 * (err.retryAfter || 1)));
    }
  }
}

function hero() {
  const tickets = [['12,500', 't1'], ['48,000', 't2'], ['3,000', 't3']];
  return h('div', { class: 'auth-hero', 'aria-hidden': 'true' },
    h('div', { class: 'hero-copy' },
      h('p', { class: 'eyebrow' }, 'chanced'),
      h('p', { class: 'hero-title' }, 'Pick a category. Reveal a code. Get paid in Toman.'),
      h('p', { class: 'hero-text' }, 'Every code carries a reward that goes straight to your wallet.')),
    h('div', { class: 'hero-tickets' }, tickets.map(([amount, cls]) =>
      h('div', { class: ['hero-ticket', cls] }, h('span', { class: 'ht-label' }, 'reward'),
        h('span', { class: 'ht-amount' }, amount), h('span', { class: 'ht-unit' }, 'Toman')))));
}

function form(ctx, mode) {
  const signup = mode === 'signup';
  const user = h('input', { name: 'username', autocomplete: 'username', required: true, maxlength: '32',
    autocapitalize: 'none', spellcheck: 'false' });
  const pass = h('input', { name: 'password', type: 'password', required: true, minlength: '8', maxlength: '256',
    autocomplete: signup ? 'new-password' : 'current-password' });
  const submit = h('button', { type: 'submit', class: 'btn btn-primary btn-block' }, signup ? 'Create account' : 'Sign in');
  const msg = h('div', { class: 'form-msg', 'aria-live': 'polite' });
  const next = ctx.query.get('next');
  const safeNext = next && next.startsWith('/') && !next.startsWith('//') ? next : '/';

  const f = h('form', { class: 'auth-form', novalidate: true },
    h('h1', { class: 'page-title', tabindex: '-1' }, signup ? 'Create your account' : 'Welcome back'),
    h('p', { class: 'page-sub' }, signup ? 'It takes ten seconds. Then pick a category and claim your first code.'
      : 'Sign in to claim codes and see your wallet.'),
    msg,
    field('Username', user, signup ? '3 to 32 letters, digits, dot, dash or underscore' : null),
    field('Password', pass, signup ? 'At least 8 characters' : null),
    submit,
    h('p', { class: 'auth-switch' }, signup ? 'Already have an account? ' : 'New here? ',
      link((signup ? '/signin' : '/signup') + (next ? '?next=' + encodeURIComponent(next) : ''), {},
        signup ? 'Sign in' : 'Create an account')));

  f.addEventListener('submit', (e) => {
    e.preventDefault();
    msg.replaceChildren();
    fieldError(user, null);
    fieldError(pass, null);
    const username = user.value.trim();
    let bad = false;
    if (!username || (signup && !USERNAME_RE.test(username))) {
      fieldError(user, username ? 'Use 3 to 32 letters, digits, dot, dash or underscore, starting with a letter or digit.' : 'Enter your username.');
      bad = true;
    }
    if (!pass.value || (signup && pass.value.length < 8)) {
      fieldError(pass, pass.value ? 'Use at least 8 characters.' : 'Enter your password.');
      bad = true;
    }
    if (bad) {
      f.querySelector('[aria-invalid="true"]').focus();
      return;
    }
    busy(submit, async () => {
      try {
        const r = await send(signup ? '/auth/signup' : '/auth/login', { username, password: pass.value });
        pass.value = '';
        await signedIn(r.data.user);
        navigate(safeNext, { replace: true });
      } catch (err) {
        const { title, text } = explain(err);
        msg.replaceChildren(notice('error', title, text));
        if (err.code === 'username_taken') {
          fieldError(user, 'That username is taken.');
          user.focus();
        } else if (err.code === 'invalid_credentials') {
          pass.select();
          pass.focus();
        }
      }
    });
  });
  return f;
}

function page(ctx, mode) {
  ctx.root.appendChild(h('div', { class: 'auth' }, hero(), h('div', { class: 'auth-card card' }, form(ctx, mode))));
  const u = ctx.root.querySelector('input[name=username]');
  if (u) {
    u.focus();
  }
}

export function signin(ctx) {
  page(ctx, 'signin');
}

export function signup(ctx) {
  page(ctx, 'signup');
}

