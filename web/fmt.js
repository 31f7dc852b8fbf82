// Formatting: Toman amounts with thousands separators, counts, dates and durations.

const intFmt = new Intl.NumberFormat('en-US', { maximumFractionDigits: 0 });
const compactFmt = new Intl.NumberFormat('en-US', { notation: 'compact', maximumFractionDigits: 1 });
const dateTimeFmt = new Intl.DateTimeFormat(undefined, {
  year: 'numeric', month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit',
});
const dateTimeSecFmt = new Intl.DateTimeFormat(undefined, {
  year: 'numeric', month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit', second: '2-digit',
});
const dateFmt = new Intl.DateTimeFormat(undefined, { year: 'numeric', month: 'short', day: 'numeric' });
const hourFmt = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit' });
const dayFmt = new Intl.DateTimeFormat(undefined, { month: 'short', day: 'numeric' });

// 1234567 -> "1,234,567"
export function num(n) {
  return Number.isFinite(Number(n)) ? intFmt.format(Number(n)) : '—';
}

// 1234567 -> "1,234,567 Toman"
export function toman(n) {
  return Number.isFinite(Number(n)) ? intFmt.format(Number(n)) + '\u00a0Toman' : '—';
}

// 1234567 -> "1.2M"
export function compact(n) {
  return compactFmt.format(Number(n) || 0);
}

// "1,000 – 100,000 Toman"
export function tomanRange(min, max) {
  if (min === max) {
    return toman(min);
  }
  return num(min) + '\u2009–\u2009' + toman(max);
}

export function dateTime(ms) {
  return ms ? dateTimeFmt.format(new Date(Number(ms))) : '—';
}

export function dateTimeSec(ms) {
  return ms ? dateTimeSecFmt.format(new Date(Number(ms))) : '—';
}

export function date(ms) {
  return ms ? dateFmt.format(new Date(Number(ms))) : '—';
}

export function hour(ms) {
  return hourFmt.format(new Date(Number(ms)));
}

export function day(ms) {
  return dayFmt.format(new Date(Number(ms)));
}

export function isoTime(ms) {
  return new Date(Number(ms)).toISOString();
}

// "in 3 days", "2 hours ago"
export function relative(ms, now = Date.now()) {
  const diff = Number(ms) - now;
  const abs = Math.abs(diff);
  const units = [['day', 86400000], ['hour', 3600000], ['minute', 60000]];
  const rtf = new Intl.RelativeTimeFormat(undefined, { numeric: 'auto' });
  for (const [unit, size] of units) {
    if (abs >= size) {
      return rtf.format(Math.round(diff / size), unit);
    }
  }
  return diff >= 0 ? 'in under a minute' : 'just now';
}

// ms since epoch <-> value of an <input type="datetime-local"> (local time).
export function toLocalInput(ms) {
  if (!ms) {
    return '';
  }
  const d = new Date(Number(ms));
  const pad = (x) => String(x).padStart(2, '0');
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

export function fromLocalInput(value) {
  if (!value) {
    return null;
  }
  const t = new Date(value).getTime();
  return Number.isFinite(t) ? t : null;
}

// 65 -> "1:05"
export function elapsed(seconds) {
  const s = Math.max(0, Math.floor(seconds));
  return Math.floor(s / 60) + ':' + String(s % 60).padStart(2, '0');
}
