#!/usr/bin/env node
'use strict';
// Captures the exact bytes NestJS puts on the wire and writes them to
// test/data/nest_frames.txt (or the path given as the first argument).
//
//   node capture_frames.js [OUT]
//
// Setup, all in this process: the real Nest TCP microservice from
// nest_server.js, a byte-recording TCP relay in front of it, and a real
// ClientTCP (ClientProxyFactory) plus a raw socket that talk through the relay.
// The relay splits each direction into frames (length = UTF-16 code units)
// and every frame is labelled with the scenario that produced it.
//
// Deterministic output: the only randomness Nest puts on the wire is the
// request id (uid(21): 21 lowercase hex characters). The client instance's
// assignPacketId is replaced by one producing deterministic 21-hex ids of the
// same shape, so re-running this script reproduces the file byte for byte.
// Everything else (serialisation, framing, patterns) is Nest's own code.
const fs = require('fs');
const net = require('net');
const path = require('path');
const crypto = require('crypto');
process.env.INTEROP_QUIET = process.env.INTEROP_QUIET || '1';
const { quietNestLogger } = require('./lib');
quietNestLogger();
const { ClientProxyFactory, Transport } = require('@nestjs/microservices');
const { lastValueFrom, toArray, timeout, catchError, of, merge } = require('rxjs');
const { startServer } = require('./nest_server');

const OUT = process.argv[2] || path.join(__dirname, '..', 'data', 'nest_frames.txt');

// ---- frame splitting over raw bytes (what a C decoder has to do) ----------
// Returns the byte length of the first complete frame in buf, 0 if
// incomplete, throws on a corrupt length prefix.
function frameByteLength(buf) {
  const hash = buf.indexOf(0x23); // '#'
  if (hash < 0) return 0;
  const lenText = buf.subarray(0, hash).toString('latin1');
  if (!/^[0-9]+$/.test(lenText)) throw new Error(`corrupt length prefix ${JSON.stringify(lenText)}`);
  const units = Number(lenText);
  let p = hash + 1;
  let seen = 0;
  while (seen < units) {
    if (p >= buf.length) return 0;
    const b = buf[p];
    const n = b < 0x80 ? 1 : b < 0xe0 ? 2 : b < 0xf0 ? 3 : 4;
    if (p + n > buf.length) return 0;
    p += n;
    seen += n === 4 ? 2 : 1; // a 4-byte UTF-8 sequence is a surrogate pair in JS
  }
  return p;
}

const frames = []; // {label, dir, conn, bytes}
let scenario = 'unlabelled';

function recorder(dir, conn) {
  let pending = Buffer.alloc(0);
  return (chunk) => {
    pending = Buffer.concat([pending, chunk]);
    for (;;) {
      const n = frameByteLength(pending);
      if (!n) break;
      frames.push({ scenario, dir, conn, bytes: Buffer.from(pending.subarray(0, n)) });
      pending = pending.subarray(n);
    }
  };
}

function startRelay(upstreamPort) {
  let nconn = 0;
  const server = net.createServer((down) => {
    const conn = ++nconn;
    const up = net.connect(upstreamPort, '127.0.0.1');
    const c2s = recorder('c2s', conn);
    const s2c = recorder('s2c', conn);
    down.on('data', (d) => { c2s(d); up.write(d); });
    up.on('data', (d) => { s2c(d); down.write(d); });
    down.on('end', () => up.end());
    up.on('end', () => down.end());
    down.on('error', () => up.destroy());
    up.on('error', () => down.destroy());
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)));
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function run(label, fn) {
  scenario = label;
  const before = frames.length;
  const result = await fn();
  await sleep(60); // let trailing frames (events, late replies) pass the relay
  const got = frames.length - before;
  process.stderr.write(`${label}: ${got} frame(s)${result !== undefined ? ' -> ' + JSON.stringify(result) : ''}\n`);
  return result;
}

function collect(obs) {
  return lastValueFrom(obs.pipe(toArray(), timeout(3000),
    catchError((e) => of({ error: e instanceof Error ? e.message : e }))));
}

// A raw socket through the relay: write bytes, gather reply bytes.
function rawSession(port) {
  const sock = net.connect(port, '127.0.0.1');
  let received = Buffer.alloc(0);
  let closed = false;
  sock.on('data', (d) => { received = Buffer.concat([received, d]); });
  sock.on('close', () => { closed = true; });
  sock.on('error', () => {});
  return {
    ready: new Promise((r) => sock.once('connect', r)),
    write: (s) => new Promise((r) => sock.write(s, r)),
    reply: () => received.toString('utf8'),
    closed: () => closed,
    end: () => sock.end(),
  };
}

function rawFrame(json) {
  // As chanced sends it: non-ASCII escaped, so length == bytes == UTF-16 units.
  const ascii = json.replace(/[\u0080-\uffff]/g, (c) => '\\u' + c.charCodeAt(0).toString(16).padStart(4, '0'));
  return `${ascii.length}#${ascii}`;
}

async function main() {
  const { app, port: nestPort, state } = await startServer({ host: '127.0.0.1', port: 0, printEvents: false });
  const relay = await startRelay(nestPort);
  const port = relay.address().port;

  const client = ClientProxyFactory.create({ transport: Transport.TCP, options: { host: '127.0.0.1', port } });
  let idSeq = 0;
  client.assignPacketId = (packet) =>
    Object.assign(packet, { id: crypto.createHash('sha256').update(`chanced-interop-${++idSeq}`).digest('hex').slice(0, 21) });
  await client.connect();
  const send = (p, d) => collect(client.send(p, d));
  const emit = (p, d) => collect(client.emit(p, d));
  const waitNotes = async (n) => { for (let i = 0; i < 100 && state.notes.length < n; i++) await sleep(10); };

  await run('echo.ascii', () => send({ cmd: 'echo' }, { user: 'alice', n: 42, ok: true, list: [1, 2, 3], nested: { a: null } }));
  await run('echo.persian_emoji', () => send({ cmd: 'echo' }, { name: 'سلام دنیا', emoji: '🎉', family: '👨‍👩‍👧', mixed: 'a—b ✓ é' }));
  await run('echo.escapes', () => send({ cmd: 'echo' }, { ctl: 'line1\nline2\t"q" \\ \u0001 \u007f', slash: '</script>', u2028: 'a\u2028b' }));
  await run('echo.string_data', () => send({ cmd: 'echo' }, 'just a string'));
  await run('echo.number_data', () => send({ cmd: 'echo' }, 12345.5));
  await run('echo.array_data', () => send({ cmd: 'echo' }, [1, 'two', { three: 3 }]));
  await run('echo.empty_object', () => send({ cmd: 'echo' }, {}));
  await run('stream', () => send({ cmd: 'stream' }, {}));
  await run('stream.slow', () => send({ cmd: 'stream.slow' }, {}));
  await run('empty', () => send({ cmd: 'empty' }, {}));
  await run('null', () => send({ cmd: 'null' }, {}));
  await run('void', () => send({ cmd: 'void' }, {}));
  await run('fail.rpc_object', () => send({ cmd: 'fail' }, { why: 'test' }));
  await run('fail.rpc_string', () => send({ cmd: 'fail.string' }, {}));
  await run('fail.plain_error', () => send({ cmd: 'crash' }, {}));
  await run('unknown_pattern', () => send({ cmd: 'no.such.thing' }, {}));
  await run('claim', () => send({ cmd: 'chance.claim' }, { claim_id: 'c-1', user_id: 7, username: 'علی', category: 'c42' }));
  await run('pattern.string', () => send('echo.as.string', { a: 1 }));
  await run('pattern.multikey', () => send({ svc: 'interop', cmd: 'multi' }, { a: 1 }));
  await run('out_of_order', () => Promise.all([
    send({ cmd: 'sleep' }, { ms: 80, i: 1 }),
    send({ cmd: 'sleep' }, { ms: 10, i: 2 }),
  ]));
  await run('event.note', async () => { const r = await emit({ cmd: 'note' }, { n: 1 }); await waitNotes(1); return r; });
  await run('event.note.persian_emoji', async () => { const r = await emit({ cmd: 'note' }, { text: 'کد شانس 🎁' }); await waitNotes(2); return r; });
  await run('event.multikey', () => emit({ z: 1, cmd: 'note', a: 'x' }, { n: 3 }));
  client.close();

  // ---- raw requests, shaped the way chanced sends (non-ASCII escaped) ----
  const raws = [
    ['raw.numeric_id', '{"pattern":{"cmd":"echo"},"data":{"x":1},"id":7}'],
    ['raw.null_id', '{"pattern":{"cmd":"echo"},"data":{"x":1},"id":null}'],
    ['raw.pattern_json_string', '{"pattern":"{\\"cmd\\":\\"echo\\"}","data":{"x":2},"id":"r2"}'],
    ['raw.pattern_unsorted_keys', '{"pattern":{"svc":"interop","cmd":"multi"},"data":{"x":3},"id":"r3"}'],
    ['raw.pattern_json_string_unsorted', '{"pattern":"{\\"svc\\":\\"interop\\",\\"cmd\\":\\"multi\\"}","data":{"x":5},"id":"r5"}'],
    ['raw.pattern_sorted_keys', '{"pattern":{"cmd":"multi","svc":"interop"},"data":{"x":6},"id":"r6"}'],
    ['raw.escaped_unicode', JSON.stringify({ pattern: { cmd: 'echo' }, data: { t: 'سلام 🎉' }, id: 'r4' })],
    ['raw.event_object_pattern', '{"pattern":{"cmd":"note"},"data":{"raw":true}}'],
  ];
  const raw = rawSession(port);
  await raw.ready;
  for (const [label, json] of raws) {
    await run(label, async () => { await raw.write(rawFrame(json)); await sleep(40); });
  }
  // pipelined, then split one byte at a time (still one connection)
  await run('raw.pipelined', async () => {
    await raw.write(rawFrame('{"pattern":{"cmd":"echo"},"data":1,"id":"p1"}') + rawFrame('{"pattern":{"cmd":"echo"},"data":2,"id":"p2"}'));
    await sleep(40);
  });
  await run('raw.byte_by_byte', async () => {
    for (const b of Buffer.from(rawFrame('{"pattern":{"cmd":"echo"},"data":"é","id":"b1"}'))) await raw.write(Buffer.from([b]));
    await sleep(40);
  });
  raw.end();

  // ---- malformed input: what Nest does (observations, not frames) ----
  const observations = [];
  for (const [what, bytes] of [
    ['corrupt length prefix', 'abc#{}'],
    ['invalid JSON body', '5#{bad}'],
    ['length shorter than JSON', '3#{"pattern":{"cmd":"echo"},"data":1,"id":"x"}'],
    ['valid frame then junk', rawFrame('{"pattern":{"cmd":"echo"},"data":1,"id":"ok"}') + 'zz#'],
  ]) {
    const s = rawSession(nestPort);
    await s.ready;
    await s.write(bytes);
    await sleep(150);
    observations.push({ input: bytes, reply: s.reply(), connection_closed_by_nest: s.closed() });
    s.end();
  }

  await app.close();
  relay.close();

  // ---- write the file ----
  const counters = new Map();
  const lines = [];
  for (const f of frames) {
    const base = `${f.dir}.${f.scenario}`;
    counters.set(base, (counters.get(base) || 0) + 1);
    f.label = base;
    f.n = counters.get(base);
  }
  for (const f of frames) {
    const label = counters.get(f.label) > 1 ? `${f.label}.${f.n}` : f.label;
    lines.push(Buffer.concat([Buffer.from(label + '\t'), f.bytes, Buffer.from('\n')]));
  }
  const header = [
    '# Frames captured from @nestjs/microservices ' + require('@nestjs/microservices/package.json').version +
      ' (TCP transport, JsonSocket), node ' + process.version + '.',
    '# Generated by test/interop/capture_frames.js - do not edit by hand.',
    '# Format: one frame per line: LABEL<TAB>FRAME<LF>. FRAME is the exact wire bytes (UTF-8),',
    '#   "<length>#<json>", length = UTF-16 code units of <json>; frames never contain TAB or LF.',
    '# LABEL = <dir>.<scenario>[.<n>]: c2s = client->server, s2c = server->client; n numbers',
    '#   several frames of one scenario in wire order.',
    '# c2s frames come from a real Nest ClientTCP, except raw.* scenarios: those c2s frames are',
    '#   hand-written the way chanced sends (non-ASCII escaped as \\uXXXX); their s2c replies are Nest\'s.',
    '# Request ids are deterministic 21-hex strings (same shape as Nest\'s uid(21)); see capture_frames.js.',
    '# Lines starting with # are comments.',
    '',
  ].join('\n') + '\n';
  fs.mkdirSync(path.dirname(OUT), { recursive: true });
  fs.writeFileSync(OUT, Buffer.concat([Buffer.from(header), ...lines]));
  process.stderr.write(`wrote ${frames.length} frames to ${OUT}\n`);
  process.stdout.write(JSON.stringify({ frames: frames.length, out: OUT, malformed: observations }, null, 1) + '\n');
}

main().catch((e) => { process.stderr.write(`capture_frames: ${e.stack || e}\n`); process.exit(1); });
