'use strict';
// Shared helpers for the interop CLIs: argv parsing, a stderr-only Nest
// logger (stdout is reserved for the one JSON result line), and output.
require('reflect-metadata');
const { Logger } = require('@nestjs/common');

// Nest's ConsoleLogger prints "log"/"warn" to stdout; the CLIs promise a
// machine-readable stdout, so every Nest log line goes to stderr instead.
const stderrLogger = {};
for (const level of ['log', 'error', 'warn', 'debug', 'verbose', 'fatal']) {
  stderrLogger[level] = (message, ...rest) => {
    if (process.env.INTEROP_QUIET === '1' && level !== 'error' && level !== 'fatal') return;
    const ctx = rest.length ? ` [${rest[rest.length - 1]}]` : '';
    const text = message instanceof Error ? message.stack || String(message)
      : typeof message === 'object' ? JSON.stringify(message) : String(message);
    process.stderr.write(`nest ${level}${ctx}: ${text}\n`);
  };
}
stderrLogger.setLogLevels = () => {};

function quietNestLogger() {
  Logger.overrideLogger(stderrLogger);
  return stderrLogger;
}

// --name value | --name=value | --flag (boolean when followed by another --x
// or nothing). Listed names in `booleans` never consume a value.
function parseArgs(argv, booleans = []) {
  const out = { _: [] };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (!a.startsWith('--')) { out._.push(a); continue; }
    const eq = a.indexOf('=');
    if (eq > 0) { out[a.slice(2, eq)] = a.slice(eq + 1); continue; }
    const name = a.slice(2);
    if (booleans.includes(name) || i + 1 >= argv.length || argv[i + 1].startsWith('--')) {
      out[name] = true;
    } else {
      out[name] = argv[++i];
    }
  }
  return out;
}

function parseJsonArg(name, text) {
  try {
    return JSON.parse(text);
  } catch (e) {
    usage(`--${name} is not valid JSON: ${e.message}`);
  }
}

function usage(msg) {
  process.stderr.write(`error: ${msg}\n`);
  process.exit(64);
}

// Write one line to stdout and exit only after it is flushed (stdout may be a
// pipe, where process.exit() could otherwise truncate the output).
function finish(obj, code) {
  process.stdout.write(JSON.stringify(obj) + '\n', () => process.exit(code));
}

module.exports = { quietNestLogger, parseArgs, parseJsonArg, usage, finish };
