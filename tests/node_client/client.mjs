// A tradeloom client in Node.js, written from docs/protocol.md alone.
//
//   node client.mjs EVENTS_ENDPOINT CONTROL_ENDPOINT EXPECTED_LAST_SEQ
//
// It pings (DEALER), asks status (REQ), submits workflow "w", subscribes to everything,
// waits for the first heartbeat, replays from seq 1 up to the heartbeat's last_seq (paged),
// prints "live <last>" so the test publishes more, follows the live stream (dropping
// duplicates, replaying gaps) until EXPECTED_LAST_SEQ, and prints one JSON line of results.

import { decode, encode } from "@msgpack/msgpack";
import * as zmq from "zeromq";

const [eventsEndpoint, controlEndpoint, expectedLastArg] = process.argv.slice(2);
const expectedLast = Number(expectedLastArg);
const TIMEOUT_MS = 10000;

// User values may be maps keyed by integers, floats, booleans or nil (docs/protocol.md,
// section 1): this decoder refuses such keys by default, so they are given as strings.
const unpack = (data) => decode(data, {
  mapKeyConverter: (key) => (typeof key === "string" || typeof key === "number" ? key : String(key)),
});

// -- control: DEALER with an empty delimiter frame and request ids ------------------------
const dealer = new zmq.Dealer({ receiveTimeout: TIMEOUT_MS, linger: 0 });
dealer.connect(controlEndpoint);
let nextId = 1;

async function call(op, args = {}) {
  const id = nextId++;
  await dealer.send([Buffer.alloc(0), Buffer.from(encode({ v: 1, op, id, ...args }))]);
  for (;;) {
    const frames = await dealer.receive();
    const reply = unpack(frames[frames.length - 1]);
    if (reply.id !== id) continue; // a reply to an earlier request
    if (reply.v !== 1) throw new Error(`bad reply version ${reply.v}`);
    if (!reply.ok) {
      const err = new Error(`${reply.error.code}: ${reply.error.message}`);
      err.code = reply.error.code;
      throw err;
    }
    return reply.result;
  }
}

// -- control: one request through REQ ------------------------------------------------------
async function reqCall(op, args = {}) {
  const req = new zmq.Request({ receiveTimeout: TIMEOUT_MS, linger: 0 });
  req.connect(controlEndpoint);
  try {
    await req.send(Buffer.from(encode({ v: 1, op, ...args })));
    const [frame] = await req.receive();
    return unpack(frame);
  } finally {
    req.close();
  }
}

// -- the stream ----------------------------------------------------------------------------
const sub = new zmq.Subscriber({ receiveTimeout: TIMEOUT_MS, linger: 0 });
sub.connect(eventsEndpoint);
sub.subscribe(""); // everything, heartbeats included

let last = 0; // the last seq processed
const processed = [];
let outOfOrder = 0;
let replayCalls = 0;
let gapsReplayed = 0;
let duplicates = 0;

function processEvent(event) {
  if (event.seq <= last) {
    duplicates++;
    return;
  }
  if (event.seq !== last + 1) outOfOrder++;
  last = event.seq;
  processed.push(event);
}

async function replayRange(first, end) {
  let since = first;
  for (;;) {
    replayCalls++;
    const page = await call("replay", { since_seq: since, limit: 100 });
    for (const event of page.events) {
      if (event.seq > end) break;
      processEvent(event);
    }
    const next = page.next_seq;
    if (next > end || next > page.last_seq || next <= since) return;
    since = next;
  }
}

async function receiveEvent() {
  const [topic, payload] = await sub.receive();
  return { topic: topic.toString("utf8"), event: unpack(payload) };
}

const result = {};
try {
  const pong = await call("ping");
  result.pong = pong.pong === true && typeof pong.version === "string";
  const status = await reqCall("status");
  result.statusOk = status.v === 1 && status.ok === true && typeof status.result.state === "string";
  const bad = await reqCall("no_such_op");
  result.unknownOpCode = bad.ok === false ? bad.error.code : null;
  const submitted = await call("submit", { workflow: "w", inputs: { threshold: 10.5 } });
  result.executionId = submitted.execution_id;

  // wait for the first heartbeat; hold back what comes before it
  const held = [];
  let beat = null;
  while (beat === null) {
    const { topic, event } = await receiveEvent();
    if (topic === "system/heartbeat") beat = event;
    else held.push(event);
  }
  result.heartbeat = { hasSeq: "seq" in beat, epoch: beat.epoch, type: beat.type };

  await replayRange(1, beat.last_seq);
  for (const event of held) {
    if (event.seq > last + 1) {
      gapsReplayed++;
      await replayRange(last + 1, event.seq - 1);
    }
    processEvent(event);
  }
  process.stdout.write(`live ${last}\n`);

  while (last < expectedLast) {
    const { topic, event } = await receiveEvent();
    if (topic === "system/heartbeat") {
      if (event.last_seq > last) {
        gapsReplayed++;
        await replayRange(last + 1, event.last_seq);
      }
      continue;
    }
    if (!("seq" in event)) continue; // a notice outside the seq order
    if (event.seq > last + 1) {
      gapsReplayed++;
      await replayRange(last + 1, event.seq - 1);
    }
    processEvent(event);
  }

  const seqs = processed.map((e) => e.seq);
  result.count = seqs.length;
  result.contiguous = seqs.every((s, i) => s === i + 1);
  result.outOfOrder = outOfOrder;
  result.duplicates = duplicates;
  result.replayCalls = replayCalls;
  result.gapsReplayed = gapsReplayed;
  result.sawSubmitted = processed.some(
    (e) => e.type === "execution_started" && e.execution_id === result.executionId &&
      e.inputs.threshold === 10.5);
  result.topicsOk = processed.every((e) => e.v === 1 && typeof e.timestamp === "string");
} catch (err) {
  result.error = String(err && err.stack ? err.stack : err);
} finally {
  process.stdout.write(JSON.stringify(result) + "\n");
  sub.close();
  dealer.close();
}
