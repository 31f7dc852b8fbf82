// What an API error means to a person: the gateway's stable problem `code`s, in plain words.

const MESSAGES = {
  category_exhausted: ['This category is used up', 'Every code of this category has been claimed. Try another category.'],
  user_limit_reached: ['You have reached the limit', 'You already claimed as many codes from this category as one player may.'],
  category_disabled: ['This category is paused', 'An administrator has paused this category. Try another one.'],
  not_in_window: ['Not open right now', 'This category can only be claimed during its time window.'],
  category_not_found: ['No such category', 'This category no longer exists. The list has been refreshed.'],
  rate_limited: ['Slow down a little', 'Too many requests in a short time.'],
  unauthenticated: ['Your session has ended', 'Please sign in again to continue.'],
  csrf_failed: ['Your session has ended', 'Please sign in again to continue.'],
  invalid_credentials: ['Wrong username or password', 'Check both and try again.'],
  account_disabled: ['This account is disabled', 'Contact an administrator if you think this is a mistake.'],
  username_taken: ['That username is taken', 'Choose another one.'],
  validation_failed: ['Please check the form', null],
  unknown_field: ['Please check the form', null],
  forbidden: ['Administrators only', 'Your account cannot open this page.'],
  not_found: ['Not found', 'Nothing matches that.'],
  too_many_codes: ['Batch too large', null],
  unavailable: ['Temporarily unavailable', 'A service behind the site is unavailable. Try again in a moment.'],
  busy: ['The server is busy', 'Try again in a moment.'],
  upstream_timeout: ['This is taking too long', 'The server did not answer in time. Try again in a moment.'],
  upstream_error: ['Something went wrong', 'A service behind the site failed. Try again in a moment.'],
  internal: ['Something went wrong', 'The request was not applied. Try again in a moment.'],
  network: ['You seem to be offline', 'The server could not be reached. Check your connection and try again.'],
  idempotency_key_reused: ['Please try again', 'That request was already used for something else.'],
  bad_query: ['Please check the filters', null],
};

// -> {title, text}: text uses the server's detail when we have no better words.
export function explain(err) {
  const code = err && err.code;
  const entry = MESSAGES[code];
  let title = entry ? entry[0] : 'Something went wrong';
  let text = entry ? entry[1] : null;
  const detail = err && err.problem && err.problem.detail;
  if (!text) {
    text = detail || (err && err.message) || 'Please try again.';
  }
  if (code === 'rate_limited' && err.retryAfter) {
    text = `Too many requests in a short time. Try again in ${err.retryAfter} s.`;
  }
  if (!entry && err && err.status) {
    title = `${title} (${err.status})`;
  }
  return { title, text };
}
