#!/usr/bin/env node
'use strict';
// Reads (basic.get; ack, or requeue all at the end) up to N messages from a queue with plain amqplib and prints
// each as one JSON line: {"content":"<utf-8 body>","fields":{...},"properties":{...}}.
// It never declares anything (checkQueue only), so it works on any queue type.
//
//   node rmq_dump.js --url amqp://guest:guest@127.0.0.1:5672/ --queue chanced.events [--max 100] [--requeue]
//
// Last line: {"ok":true,"count":N,"queue":{"messageCount":...,"consumerCount":...}}
const amqp = require('amqplib');
const { parseArgs, usage, finish } = require('./lib');

const args = parseArgs(process.argv.slice(2), ['requeue']);
if (!args.queue) usage('--queue is required');
const url = args.url || 'amqp://guest:guest@127.0.0.1:5672/';
const max = Number(args.max || 100);

let done = false;
function fail(e) {
  if (done) return;
  done = true;
  finish({ ok: false, failure: 'error', message: String((e && e.message) || e) }, 2);
}

async function main() {
  const conn = await amqp.connect(url);
  conn.on('error', fail); // e.g. a 404 on checkQueue also arrives here
  const ch = await conn.createChannel();
  ch.on('error', fail);
  const q = await ch.checkQueue(args.queue);
  let n = 0;
  for (; n < max; n++) {
    const msg = await ch.get(args.queue, { noAck: false });
    if (!msg) break;
    const { content, fields, properties } = msg;
    process.stdout.write(JSON.stringify({ content: content.toString('utf8'), fields, properties }) + '\n');
    // Ack each message before the next basic.get (acks have no reply). With
    // --requeue nothing is settled until the end (a message nacked at once
    // would be the next basic.get's answer again).
    if (!args.requeue) ch.ack(msg);
  }
  if (args.requeue) ch.nackAll(true);
  // Acks and nacks are asynchronous. On a quorum queue a channel closed right
  // after them can lose the settlements (the messages come back), so do one
  // synchronous round trip and give the queue a moment before closing.
  await ch.checkQueue(args.queue);
  await new Promise((r) => setTimeout(r, 200));
  await ch.close();
  await conn.close();
  done = true;
  finish({ ok: true, count: n, queue: { messageCount: q.messageCount, consumerCount: q.consumerCount } }, 0);
}

main().catch(fail);
