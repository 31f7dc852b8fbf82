#!/usr/bin/env node
'use strict';
// Emits events with a real NestJS RMQ ClientProxy (ClientRMQ), the way a Nest
// service would publish audit events to chanced's logger.
//
//   node rmq_emit.js --url amqp://guest:guest@127.0.0.1:5672/ --queue chanced.events \
//       --pattern '{"cmd":"log.event"}' --data '{...}' [--count 1]
//       [--queue-args '{"x-queue-type":"quorum",...}'] [--no-assert] [--no-durable]
//       [--persistent] [--headers '{"k":"v"}'] [--timeout 10000]
//
// --pattern: JSON (object or "string"); text that is not JSON is used as a string pattern.
// --queue-args: passed as queueOptions.arguments (must equal the consumer's
//   declaration, or RabbitMQ refuses the declare with PRECONDITION_FAILED).
// --no-assert: options.noAssert = true (supported by @nestjs/microservices >= 10.x,
//   read in ClientRMQ's constructor as options.noAssert ?? queueOptions.noAssert):
//   the client then does not declare the queue at all.
// --persistent: options.persistent = true (Nest's default is false: deliveryMode 1).
// stdout: {"ok":true,"count":N} (exit 0), or {"ok":false,"failure":...,"message":...} (exit 2).
const { quietNestLogger, parseArgs, parseJsonArg, usage, finish } = require('./lib');
quietNestLogger();
const { ClientProxyFactory, Transport, RmqRecordBuilder } = require('@nestjs/microservices');
const { lastValueFrom, timeout } = require('rxjs');

const args = parseArgs(process.argv.slice(2), ['no-assert', 'no-durable', 'persistent']);
if (!args.queue) usage('--queue is required');
if (args.pattern === undefined) usage('--pattern is required');
const url = args.url || 'amqp://guest:guest@127.0.0.1:5672/';
const count = Number(args.count || 1);
const timeoutMs = Number(args.timeout || 10000);
let pattern;
try { pattern = JSON.parse(args.pattern); } catch { pattern = args.pattern; }
const data = parseJsonArg('data', args.data === undefined ? '{}' : args.data);

const queueOptions = { durable: !args['no-durable'] };
if (args['queue-args'] !== undefined) queueOptions.arguments = parseJsonArg('queue-args', args['queue-args']);
const options = { urls: [url], queue: args.queue, queueOptions };
if (args['no-assert']) options.noAssert = true;
if (args.persistent) options.persistent = true;
if (args.headers !== undefined) options.headers = parseJsonArg('headers', args.headers);

const client = ClientProxyFactory.create({ transport: Transport.RMQ, options });

function describe(e) {
  if (e && e.err) e = e.err; // amqp-connection-manager wraps connect failures as {err, url}
  if (e && e.message) return e.message;
  return typeof e === 'object' ? JSON.stringify(e) : String(e);
}

let failed = false;
function fail(kind, e) {
  if (failed) return; // one failure line only: several listeners may report the same error
  failed = true;
  const message = describe(e);
  process.stderr.write(`rmq_emit: ${message}\n`);
  // Do not wait for a clean close: after a channel error amqp-connection-manager
  // keeps retrying its setup, which close() would wait on.
  finish({ ok: false, failure: kind, message }, 2);
}

// A refused queue declare (406 PRECONDITION_FAILED: arguments differ from the
// existing queue) surfaces as an unhandled 'error' event on the
// amqp-connection-manager ChannelWrapper: a Nest app would crash here. Report it.
process.on('uncaughtException', (e) => {
  fail(e && e.code === 406 ? 'precondition_failed' : 'error', e);
});

async function main() {
  const timer = setTimeout(() => fail('timeout', `not done within ${timeoutMs} ms (queue declare refused? broker down?)`), timeoutMs);
  try {
    await client.connect();
    for (let i = 0; i < count; i++) {
      // Resolves once the broker confirmed the publish (amqp-connection-manager
      // uses a confirm channel by default).
      await lastValueFrom(client.emit(pattern, data).pipe(timeout(timeoutMs)), { defaultValue: undefined });
    }
    await client.close();
  } catch (e) {
    clearTimeout(timer);
    return fail('error', e);
  }
  clearTimeout(timer);
  finish({ ok: true, count }, 0);
}

main();
