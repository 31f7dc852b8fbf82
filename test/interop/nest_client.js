#!/usr/bin/env node
'use strict';
// A real NestJS TCP ClientProxy (ClientTCP) driven from the command line.
//
//   node nest_client.js call  --host H --port P --cmd C [--data JSON] [--timeout MS] [--stream]
//   node nest_client.js emit  --host H --port P --cmd C [--data JSON] [--count N] [--timeout MS]
//   node nest_client.js batch --host H --port P --file calls.json|- [--timeout MS]
//
// --pattern JSON may replace --cmd to send any pattern (object, or a string).
// stdout: exactly one JSON line. Exit 0 for any reply from the server
// (including {"ok":false,"err":...}); exit 2 on timeout or connection
// failure; exit 64 on bad usage. See README.md.
const { quietNestLogger, parseArgs, parseJsonArg, usage, finish } = require('./lib');
quietNestLogger();
const { ClientProxyFactory, Transport } = require('@nestjs/microservices');
const { lastValueFrom, timeout, toArray, TimeoutError } = require('rxjs');

const args = parseArgs(process.argv.slice(2), ['stream']);
const mode = args._[0];
if (!['call', 'emit', 'batch'].includes(mode)) usage('mode must be call, emit or batch');
if (!args.port) usage('--port is required');
const host = args.host || '127.0.0.1';
const port = Number(args.port);
const timeoutMs = Number(args.timeout || 5000);

const client = ClientProxyFactory.create({ transport: Transport.TCP, options: { host, port } });

function patternOf(spec) {
  if (spec.pattern !== undefined) return spec.pattern;
  if (spec.cmd === undefined) usage('--cmd or --pattern is required');
  return { cmd: spec.cmd };
}

// A "local" failure is an Error object made on this side (ECONNREFUSED,
// "Connection closed", TimeoutError). Anything else came from the server's
// "err" field, parsed from JSON, so it is never an Error instance.
function isLocalFailure(e) {
  return e instanceof Error;
}

function failure(e) {
  return {
    ok: false,
    // InvalidMessageException: Nest refuses a null/undefined pattern or data locally.
    failure: e instanceof TimeoutError ? 'timeout'
      : e && e.constructor && e.constructor.name === 'InvalidMessageException' ? 'invalid_message' : 'connection',
    message: e instanceof TimeoutError ? `no complete reply within ${timeoutMs} ms` : String(e.message || e),
  };
}

// Collect every value the reply stream emits. Nest's ClientTCP completes the
// observable on isDisposed:true and errors it on "err".
function runCall(pattern, data, stream) {
  const values = [];
  return new Promise((resolve) => {
    client.send(pattern, data).pipe(timeout(timeoutMs)).subscribe({
      next: (v) => values.push(v),
      error: (e) => {
        if (isLocalFailure(e)) return resolve({ local: e, values });
        const r = { ok: false, err: e === undefined ? null : e };
        if (stream) r.responses = values;
        resolve(r);
      },
      complete: () => {
        if (stream) return resolve({ ok: true, responses: values });
        if (values.length === 0) return resolve({ ok: true, empty: true });
        resolve({ ok: true, response: values[values.length - 1] });
      },
    });
  });
}

async function main() {
  if (mode === 'call') {
    const data = parseJsonArg('data', args.data === undefined ? '{}' : args.data);
    const pattern = args.pattern !== undefined ? parseJsonArg('pattern', args.pattern) : patternOf({ cmd: args.cmd });
    const r = await runCall(pattern, data, !!args.stream);
    client.close();
    if (r.local) {
      process.stderr.write(`nest_client: ${r.local.message || r.local}\n`);
      return finish(failure(r.local), 2);
    }
    return finish(r, 0);
  }

  if (mode === 'batch') {
    if (!args.file) usage('--file is required');
    const fs = require('fs');
    const text = fs.readFileSync(args.file === '-' ? 0 : args.file, 'utf8');
    const calls = parseJsonArg('file', text);
    if (!Array.isArray(calls)) usage('--file must hold a JSON array of {cmd|pattern, data, stream?}');
    // Connect first so every send below rides the same socket (ClientTCP
    // memoises its connection; sends made before it resolves share it too).
    try {
      await client.connect();
    } catch (e) {
      process.stderr.write(`nest_client: ${e.message || e}\n`);
      return finish(failure(e), 2);
    }
    const results = await Promise.all(
      calls.map((c) => runCall(patternOf(c), c.data === undefined ? {} : c.data, !!c.stream)));
    client.close();
    const local = results.find((r) => r.local);
    if (local) {
      process.stderr.write(`nest_client: ${local.local.message || local.local}\n`);
      return finish(failure(local.local), 2);
    }
    return finish(results, 0);
  }

  // emit
  const data = parseJsonArg('data', args.data === undefined ? '{}' : args.data);
  const pattern = args.pattern !== undefined ? parseJsonArg('pattern', args.pattern) : patternOf({ cmd: args.cmd });
  const count = Number(args.count || 1);
  try {
    for (let i = 0; i < count; i++) {
      await lastValueFrom(client.emit(pattern, data).pipe(timeout(timeoutMs)), { defaultValue: undefined });
    }
    // emit() resolves once the frame is handed to socket.write(). Ending the
    // socket flushes what is queued; wait for "finish" (all data handed to
    // the kernel, FIN sent) before reporting success.
    const sock = client.unwrap();
    await new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new TimeoutError()), timeoutMs);
      sock.once('finish', () => { clearTimeout(t); resolve(); });
      sock.once('error', (e) => { clearTimeout(t); reject(e); });
      client.close();
    });
  } catch (e) {
    process.stderr.write(`nest_client: ${e.message || e}\n`);
    return finish(failure(e), 2);
  }
  return finish({ ok: true }, 0);
}

main().catch((e) => {
  process.stderr.write(`nest_client: ${e.stack || e}\n`);
  finish({ ok: false, failure: 'internal', message: String(e.message || e) }, 2);
});
