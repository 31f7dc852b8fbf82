#!/usr/bin/env node
'use strict';
// A tiny but real NestJS TCP microservice (NestFactory.createMicroservice),
// written in plain JS: decorators are applied with Reflect.decorate.
//
//   node nest_server.js [--host 127.0.0.1] [--port 0]
//
// stdout (one JSON object per line):
//   {"listening":true,"host":"127.0.0.1","port":40123}      once listening
//   {"event":{"cmd":"note"},"data":...}                     per received "note" event
// Nest's own log lines go to stderr. Stops on SIGTERM/SIGINT.
//
// Message patterns:
//   {cmd:'echo'}        returns data
//   {cmd:'stream'}      Observable of 3 values {"seq":1..3} (synchronous)
//   {cmd:'stream.slow'} the same, 20 ms apart, completing 20 ms after the last
//                       (so the final {"isDisposed":true} frame is separate)
//   {svc:'interop',cmd:'multi'}  returns {"multi":true,"data":data} (a two-key pattern)
//   {cmd:'empty'}       Observable that completes with no value
//   {cmd:'null'}        returns null
//   {cmd:'void'}        returns undefined
//   {cmd:'fail'}        throws RpcException({code:'bad_thing', message:...})
//   {cmd:'fail.string'} throws RpcException('plain string error')
//   {cmd:'crash'}       throws a plain Error (not an RpcException)
//   {cmd:'sleep'}       waits data.ms (default 100) then returns data
//   {cmd:'stats'}       {"connections":N,"notes":[...events seen...]}
// Event patterns:
//   {cmd:'note'}        recorded (see stats) and printed to stdout
const { quietNestLogger, parseArgs } = require('./lib');
const logger = quietNestLogger();
const { Controller, Module } = require('@nestjs/common');
const { NestFactory } = require('@nestjs/core');
const { MessagePattern, EventPattern, RpcException, Transport } = require('@nestjs/microservices');
const { of, EMPTY, interval, map, take, filter } = require('rxjs');

const state = { connections: 0, notes: [], printEvents: true };

class AppController {
  echo(data) { return data; }
  stream() { return of({ seq: 1 }, { seq: 2 }, { seq: 3 }); }
  // 3 values 20 ms apart, completion 20 ms after the last one: Nest then sends
  // the terminating {"isDisposed":true,"id":..} as a frame of its own.
  streamSlow() { return interval(20).pipe(take(4), filter((i) => i < 3), map((i) => ({ seq: i + 1 }))); }
  multi(data) { return { multi: true, data }; }
  empty() { return EMPTY; }
  nullValue() { return null; }
  voidValue() { return undefined; }
  fail() { throw new RpcException({ code: 'bad_thing', message: 'something bad happened' }); }
  failString() { throw new RpcException('plain string error'); }
  crash() { throw new Error('boom'); }
  async sleep(data) {
    const ms = data && Number.isFinite(data.ms) ? data.ms : 100;
    await new Promise((r) => setTimeout(r, ms));
    return data;
  }
  stats() { return { connections: state.connections, notes: state.notes }; }
  note(data) {
    state.notes.push(data);
    if (state.printEvents) process.stdout.write(JSON.stringify({ event: { cmd: 'note' }, data }) + '\n');
  }
}

function decorateMethod(cls, name, decorators) {
  const proto = cls.prototype;
  const desc = Reflect.decorate(decorators, proto, name, Object.getOwnPropertyDescriptor(proto, name));
  if (desc) Object.defineProperty(proto, name, desc);
}

decorateMethod(AppController, 'echo', [MessagePattern({ cmd: 'echo' })]);
decorateMethod(AppController, 'stream', [MessagePattern({ cmd: 'stream' })]);
decorateMethod(AppController, 'streamSlow', [MessagePattern({ cmd: 'stream.slow' })]);
decorateMethod(AppController, 'empty', [MessagePattern({ cmd: 'empty' })]);
decorateMethod(AppController, 'nullValue', [MessagePattern({ cmd: 'null' })]);
decorateMethod(AppController, 'voidValue', [MessagePattern({ cmd: 'void' })]);
decorateMethod(AppController, 'fail', [MessagePattern({ cmd: 'fail' })]);
decorateMethod(AppController, 'failString', [MessagePattern({ cmd: 'fail.string' })]);
decorateMethod(AppController, 'crash', [MessagePattern({ cmd: 'crash' })]);
decorateMethod(AppController, 'sleep', [MessagePattern({ cmd: 'sleep' })]);
decorateMethod(AppController, 'multi', [MessagePattern({ svc: 'interop', cmd: 'multi' })]);
decorateMethod(AppController, 'stats', [MessagePattern({ cmd: 'stats' })]);
decorateMethod(AppController, 'note', [EventPattern({ cmd: 'note' })]);
const DecoratedController = Reflect.decorate([Controller()], AppController);

class AppModule {}
const DecoratedModule = Reflect.decorate([Module({ controllers: [DecoratedController] })], AppModule);

// Starts the microservice; resolves to { app, host, port } once listening.
async function startServer({ host = '127.0.0.1', port = 0, printEvents = true } = {}) {
  state.printEvents = printEvents;
  const app = await NestFactory.createMicroservice(DecoratedModule, {
    transport: Transport.TCP,
    options: { host, port },
    logger,
  });
  const server = app.unwrap(); // the net.Server of ServerTCP
  server.on('connection', () => { state.connections++; });
  await app.listen();
  return { app, host, port: server.address().port, state };
}

module.exports = { startServer };

if (require.main === module) {
  const args = parseArgs(process.argv.slice(2));
  startServer({ host: args.host || '127.0.0.1', port: Number(args.port || 0) })
    .then(({ app, host, port }) => {
      process.stdout.write(JSON.stringify({ listening: true, host, port }) + '\n');
      const stop = () => app.close().finally(() => process.exit(0));
      process.on('SIGTERM', stop);
      process.on('SIGINT', stop);
    })
    .catch((e) => {
      process.stderr.write(`nest_server: ${e.stack || e}\n`);
      process.exit(1);
    });
}
