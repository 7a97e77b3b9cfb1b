// tradeloom dashboard: one WebSocket to the daemon's gateway (docs/protocol.md,
// "WebSocket gateway"). No framework, no build step: plain DOM, textContent only (event
// fields are data, never markup). The token lives in sessionStorage (this tab only).
"use strict";

const $ = (id) => document.getElementById(id);
const TOKEN_KEY = "tradeloom.token";
const MAX_LOG = 300;
const MAX_EXECUTIONS = 40;
const TERMINAL = new Set(["execution_completed", "execution_failed", "execution_halted",
                          "execution_cancelled"]);

// What the tests (and a curious operator in the console) can read.
const stats = window.tradeloomStats = {
  lastSeq: 0, received: 0, gaps: 0, duplicates: 0, connects: 0, lagged: 0, connected: false,
  state: null, resyncs: 0,
};

let ws = null;
let nextSeq = null;          // where the stream resumes: the seq after the last one seen
let retryMs = 500;
let requestId = 0;
const pending = new Map();   // request id -> callback(reply)
let warnAt = 0.8;
let statusTimer = null;
const executions = new Map(); // execution_id -> row data
const rateBuckets = [];       // events per second, last 60 s
const latencyBuckets = [];    // mean node duration_ms per second, last 60 s
let currentSecond = 0, secondCount = 0, secondLatency = [];

// -- token ------------------------------------------------------------------------------

function takeTokenFromFragment() {
  // #token=... never reaches the server (fragments are not sent): keep it, then wipe it.
  const match = location.hash.match(/token=([^&]+)/);
  if (match) {
    let token = match[1];
    try {
      token = decodeURIComponent(token);
    } catch (e) {
      // A lone "%" (a token of one's own choosing): not an escape, the token as written.
    }
    sessionStorage.setItem(TOKEN_KEY, token);
    history.replaceState(null, "", location.pathname + location.search);
  }
  return sessionStorage.getItem(TOKEN_KEY);
}

function askToken(message) {
  $("token-form").hidden = false;
  $("token-error").textContent = message || "";
  $("token-input").focus();
}

$("token-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, $("token-input").value.trim());
  $("token-form").hidden = true;
  connect();
});

// -- connection -------------------------------------------------------------------------

function connect() {
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (!token) { askToken(); return; }
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  ws = new WebSocket(`${scheme}//${location.host}/ws`);
  let refused = false;
  ws.onopen = () => {
    ws.send(JSON.stringify({token, since_seq: nextSeq, topics: [""]}));
  };
  ws.onmessage = (msg) => {
    const m = JSON.parse(msg.data);
    if (m.msg === "error" && m.error.code === "unauthorized") {
      refused = true;
      sessionStorage.removeItem(TOKEN_KEY);
      askToken("The daemon refused this token.");
      return;
    }
    onMessage(m);
  };
  ws.onclose = () => {
    stats.connected = false;
    clearInterval(statusTimer);
    setConn(false, "reconnecting…");
    for (const cb of pending.values()) cb({ok: false, error: {code: "closed", message: "connection closed"}});
    pending.clear();
    if (!refused) {
      setTimeout(connect, retryMs);
      retryMs = Math.min(retryMs * 2, 5000);
    }
  };
}

function onMessage(m) {
  switch (m.msg) {
    case "welcome":
      if (nextSeq !== null && m.next_seq > m.last_seq + 1) {
        // The daemon's log ends before where this page left off: its journal was replaced
        // (a backup restored in place, another data_dir). The seqs after its last are new
        // events, not ones this page has: follow from there, as a fresh page would.
        stats.resyncs += 1;
        logLine(null, `the daemon's log ends at seq ${m.last_seq}, before this page's ` +
                      `${nextSeq - 1}: its journal was replaced; following from seq ${m.last_seq + 1}`);
        nextSeq = m.last_seq + 1;
        stats.lastSeq = m.last_seq;
        retryMs = 100;  // at once, not after the backoff of the outage it follows
        ws.close();  // reconnects from nextSeq
        return;
      }
      stats.connects += 1;
      stats.connected = true;
      retryMs = 500;
      warnAt = m.warn_at;
      if (nextSeq === null) nextSeq = m.next_seq;
      setConn(true, "live");
      setState(m.state);
      refreshStatus();
      refreshExecutions();
      statusTimer = setInterval(refreshStatus, 1000);
      break;
    case "events":
      for (const ev of m.events) onEvent(ev);
      nextSeq = Math.max(nextSeq || 0, m.next_seq);
      $("seq").textContent = `seq ${stats.lastSeq}`;
      break;
    case "heartbeat":
      setState(m.state);
      if (typeof m.next_seq === "number") nextSeq = Math.max(nextSeq || 0, m.next_seq);
      $("seq").textContent = `seq ${stats.lastSeq} / ${m.last_seq}`;
      break;
    case "gap":
      stats.gaps += 1;
      logLine(null, `gap: events ${m.first_missing_seq}-${m.last_missing_seq} are gone`);
      nextSeq = m.last_missing_seq + 1;
      break;
    case "lagged":
      // Every event before resume_seq was sent; reconnect from there.
      stats.lagged += 1;
      nextSeq = m.resume_seq;
      break;
    case "reply": {
      const cb = pending.get(m.id);
      pending.delete(m.id);
      if (cb) cb(m);
      break;
    }
    case "error":
      toast(`${m.error.code}: ${m.error.message}`);
      break;
  }
}

function request(op, args, cb) {
  if (!ws || ws.readyState !== WebSocket.OPEN) { cb && cb({ok: false, error: {code: "closed", message: "not connected"}}); return; }
  const id = ++requestId;
  if (cb) pending.set(id, cb);
  ws.send(JSON.stringify({id, op, ...args}));
}

// -- events -----------------------------------------------------------------------------

function onEvent(ev) {
  if (ev.seq <= stats.lastSeq) { stats.duplicates += 1; return; }
  if (stats.lastSeq && ev.seq !== stats.lastSeq + 1) stats.gaps += 1;
  stats.lastSeq = ev.seq;
  stats.received += 1;
  countForSparklines(ev);
  logLine(ev);
  if (ev.type === "emergency_state_changed") setState(ev.state, ev.reason);
  else if (ev.type === "execution_started") {
    upsertExecution({execution_id: ev.execution_id, workflow_id: ev.workflow_id,
                     status: "running", started_at: ev.timestamp});
  } else if (TERMINAL.has(ev.type)) {
    upsertExecution({execution_id: ev.execution_id, workflow_id: ev.workflow_id,
                     status: ev.status, duration_ms: ev.duration_ms, ended_at: ev.timestamp});
    if (!$("detail").hidden && $("detail-title").textContent === ev.execution_id) showExecution(ev.execution_id);
  } else if (ev.type && ev.type.startsWith("circuit_")) {
    setBreaker(ev.breaker, ev.type.slice("circuit_".length).replace("opened", "open").replace("closed", "closed"));
  } else if (ev.type && ev.type.startsWith("risk_limit_")) {
    setLimit(ev.limit, {value: ev.value, threshold: ev.threshold, utilization: ev.utilization});
  }
}

function topicOf(ev) {
  if (ev.workflow_id) return `workflow/${ev.workflow_id}/${ev.type}`;
  if (ev.type === "emergency_state_changed" || (ev.type || "").startsWith("risk_limit_")) return `emergency/${ev.type}`;
  return `system/${ev.type}`;
}

function logLine(ev, text) {
  const li = document.createElement("li");
  const seq = document.createElement("span");
  seq.className = "seq";
  seq.textContent = ev ? ev.seq : "!";
  li.append(seq, text || describe(ev));
  li.dataset.topic = ev ? topicOf(ev) : "system/gap";
  li.hidden = !matchesFilter(li);
  const log = $("log");
  log.prepend(li);
  while (log.childElementCount > MAX_LOG) log.lastElementChild.remove();
}

function describe(ev) {
  const parts = [ev.type];
  for (const key of ["execution_id", "node_id", "status", "state", "reason", "limit", "breaker", "error_type", "duration_ms"]) {
    if (ev[key] !== undefined && ev[key] !== null) parts.push(`${key}=${ev[key]}`);
  }
  return parts.join(" ");
}

function matchesFilter(li) {
  const kind = $("log-kind").value, text = $("log-filter").value.trim().toLowerCase();
  return (!kind || li.dataset.topic.startsWith(kind)) && (!text || li.textContent.toLowerCase().includes(text));
}

function refilter() { for (const li of $("log").children) li.hidden = !matchesFilter(li); }
$("log-filter").addEventListener("input", refilter);
$("log-kind").addEventListener("change", refilter);

// -- state banner and the kill switch ---------------------------------------------------

function setState(state, reason) {
  if (!state) return;
  stats.state = state;
  const banner = $("banner");
  banner.className = `state-${state}`;
  banner.dataset.state = state;
  $("state").textContent = state;
  if (reason !== undefined) $("state-reason").textContent = reason || "";
}

function setConn(up, text) {
  $("conn").className = up ? "up" : "down";
  $("conn").textContent = text;
}

let confirmOp = null;
for (const button of document.querySelectorAll(".buttons button")) {
  button.addEventListener("click", () => {
    confirmOp = button.dataset.op;
    $("confirm-title").textContent = `${button.textContent}: are you sure?`;
    $("confirm-reason").value = `${button.textContent.toLowerCase()} from the dashboard`;
    $("confirm-force").checked = false;
    $("confirm-force-row").hidden = confirmOp !== "resume";
    $("confirm").hidden = false;
    $("confirm-reason").focus();
  });
}
$("confirm-cancel").addEventListener("click", () => { $("confirm").hidden = true; confirmOp = null; });
$("confirm-ok").addEventListener("click", () => {
  const op = confirmOp;
  $("confirm").hidden = true;
  confirmOp = null;
  if (!op) return;
  const args = {reason: $("confirm-reason").value || "dashboard"};
  if (op === "resume") args.force = $("confirm-force").checked;
  request(op, args, (reply) => {
    if (reply.ok) { setState(reply.result.state, args.reason); toast(`${op}: now ${reply.result.state}`); }
    else toast(`${op} refused: ${reply.error.code}: ${reply.error.message}`);
  });
});

function toast(text) {
  const el = $("toast");
  el.textContent = text;
  el.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { el.hidden = true; }, 5000);
}

// -- status: limits and breakers ---------------------------------------------------------

function refreshStatus() {
  request("status", {}, (reply) => {
    if (!reply.ok) return;
    const s = reply.result;
    warnAt = s.warn_at ?? warnAt;
    setState(s.state, s.reason);
    $("exec-counts").textContent = `${s.running} running, ${s.queued} queued`;
    for (const [name, limit] of Object.entries(s.limits || {})) setLimit(name, limit);
    for (const [key, state] of Object.entries(s.breakers || {})) setBreaker(key, state);
  });
}

function setLimit(name, limit) {
  let row = document.querySelector(`.limit[data-name="${CSS.escape(name)}"]`);
  if (!row) {
    row = document.createElement("div");
    row.className = "limit";
    row.dataset.name = name;
    row.innerHTML = '<div class="name"><span class="n"></span><span class="v"></span></div>' +
                    '<div class="bar"><div class="fill"></div><div class="warnline"></div></div>';
    row.querySelector(".n").textContent = name;
    $("limits").append(row);
  }
  const shown = Number(limit.utilization) || 0;  // as `tradeloom status` shows it
  const util = Math.max(0, shown);                // the bar: from empty to full
  const fill = row.querySelector(".fill");
  fill.style.width = `${Math.min(100, util * 100).toFixed(1)}%`;
  fill.className = "fill" + (util >= 1 ? " over" : util >= warnAt ? " warn" : "");
  row.querySelector(".warnline").style.left = `${(warnAt * 100).toFixed(1)}%`;
  row.querySelector(".v").textContent = `${fmt(limit.value)} / ${fmt(limit.threshold)} (${(shown * 100).toFixed(0)}%)`;
  row.dataset.utilization = util;
}

function setBreaker(key, state) {
  let li = document.querySelector(`#breakers li[data-key="${CSS.escape(key)}"]`);
  if (!li) {
    li = document.createElement("li");
    li.dataset.key = key;
    li.append(document.createElement("span"), document.createElement("span"));
    li.firstChild.textContent = key;
    $("breakers").append(li);
  }
  li.lastChild.textContent = state;
  li.lastChild.className = `breaker-${state}`;
}

const fmt = (x) => (typeof x === "number" ? (Math.round(x * 100) / 100).toString() : String(x));

// -- executions ---------------------------------------------------------------------------

function refreshExecutions() {
  request("executions", {limit: MAX_EXECUTIONS}, (reply) => {
    if (!reply.ok) return;
    for (const e of reply.result.slice().reverse()) upsertExecution(e);
  });
}

function upsertExecution(e) {
  const known = executions.get(e.execution_id) || {};
  const row = Object.assign(known, Object.fromEntries(Object.entries(e).filter(([, v]) => v !== undefined && v !== null)));
  executions.set(e.execution_id, row);
  renderExecutions();
}

function renderExecutions() {
  const rows = [...executions.values()].sort((a, b) => {
    const ra = a.status === "running" ? 0 : 1, rb = b.status === "running" ? 0 : 1;
    return ra - rb || String(b.started_at || "").localeCompare(String(a.started_at || ""));
  }).slice(0, MAX_EXECUTIONS);
  for (const id of [...executions.keys()]) if (!rows.some((r) => r.execution_id === id)) executions.delete(id);
  const body = $("executions").tBodies[0];
  body.replaceChildren(...rows.map((r) => {
    const tr = document.createElement("tr");
    tr.dataset.id = r.execution_id;
    tr.dataset.status = r.status;
    const cells = [r.execution_id, r.workflow_id, r.status, duration(r)];
    for (const text of cells) { const td = document.createElement("td"); td.textContent = text ?? ""; tr.append(td); }
    tr.children[2].className = `status-${r.status}`;
    tr.addEventListener("click", () => showExecution(r.execution_id));
    return tr;
  }));
}

function duration(r) {
  if (r.duration_ms !== undefined) return `${Math.round(r.duration_ms)} ms`;
  if (r.status === "running" && r.started_at) return `${Math.max(0, Date.now() - Date.parse(r.started_at))} ms…`;
  return "";
}

function showExecution(id) {
  request("execution", {execution_id: id}, (reply) => {
    $("detail").hidden = false;
    $("detail-title").textContent = id;
    $("detail-body").textContent = reply.ok ? JSON.stringify(reply.result, null, 2) : `${reply.error.code}: ${reply.error.message}`;
  });
}

// -- sparklines ----------------------------------------------------------------------------

function countForSparklines(ev) {
  const second = Math.floor(Date.now() / 1000);
  if (second !== currentSecond) rollSecond(second);
  secondCount += 1;
  if (ev.type === "node_completed" && typeof ev.duration_ms === "number") secondLatency.push(ev.duration_ms);
}

function rollSecond(second) {
  if (currentSecond) {
    for (let s = currentSecond; s < second && s < currentSecond + 60; s++) {
      rateBuckets.push(s === currentSecond ? secondCount : 0);
      latencyBuckets.push(s === currentSecond && secondLatency.length ? secondLatency.reduce((a, b) => a + b, 0) / secondLatency.length : null);
    }
    while (rateBuckets.length > 60) rateBuckets.shift();
    while (latencyBuckets.length > 60) latencyBuckets.shift();
  }
  currentSecond = second; secondCount = 0; secondLatency = [];
}

function spark(canvas, values) {
  const ctx = canvas.getContext("2d"), w = canvas.width, h = canvas.height;
  ctx.clearRect(0, 0, w, h);
  const nums = values.filter((v) => v !== null);
  if (!nums.length) return;
  const max = Math.max(...nums, 1);
  ctx.strokeStyle = "#64b5f6";
  ctx.beginPath();
  values.forEach((v, i) => {
    if (v === null) return;
    const x = (i / 59) * w, y = h - 2 - (v / max) * (h - 4);
    i ? ctx.lineTo(x, y) : ctx.moveTo(x, y);
  });
  ctx.stroke();
}

setInterval(() => {
  rollSecond(Math.floor(Date.now() / 1000));
  spark($("spark-rate"), rateBuckets);
  spark($("spark-latency"), latencyBuckets);
  const lastRate = rateBuckets[rateBuckets.length - 1];
  const lastLat = latencyBuckets.filter((v) => v !== null).pop();
  $("rate").textContent = lastRate !== undefined ? `${lastRate} events/s` : "";
  $("latency").textContent = lastLat !== undefined ? `${Math.round(lastLat)} ms` : "";
  if ([...executions.values()].some((r) => r.status === "running")) renderExecutions();
}, 1000);

takeTokenFromFragment();
connect();
