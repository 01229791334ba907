// bulkhead's dashboard: reads the public API of the daemon that served it and draws pools,
// workers (with sparklines of their sample history), recent outcomes with their evidence, events
// and the quarantine. Live: every event on GET /v1/events triggers a refresh, and a refresh runs
// at least every second (samples and ok outcomes make no events). Read-only; every text from the
// daemon goes in as textContent, never as markup (stderr tails are arbitrary bytes).
"use strict";

const REFRESH_MS = 1000;
const EVENT_DEBOUNCE_MS = 100;
const RECONNECT_MS = 1000;
const OUTCOMES_SHOWN = 100;
const EVENTS_SHOWN = 100;
const FAILURES = ["handler_error", "crashed", "hung", "timed_out", "oom_killed",
  "resource_exhausted", "poison", "overloaded", "unavailable", "cancelled"];

const state = {
  daemonStartedAt: null,  // seconds since the epoch: tells a restarted daemon apart
  outcomes: [],           // oldest first
  lastSeq: 0,
  expanded: new Set(),    // seqs of outcomes whose evidence is open
  events: [],             // newest first
  lastEventId: 0,
  streamLive: false,
  fetchFailed: false,
};

// ------------------------------------------------------------------ small DOM helpers

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

function row(cells, className) {
  const tr = el("tr", null, className);
  for (const cell of cells) {
    tr.appendChild(cell instanceof Node ? wrapCell(cell) : el("td", cell));
  }
  return tr;
}

function wrapCell(node) {
  if (node.tagName === "TD") return node;
  const td = el("td");
  td.appendChild(node);
  return td;
}

function fill(tableId, rows) {
  document.querySelector("#" + tableId + " tbody").replaceChildren(...rows);
}

function bytes(n) {
  if (n === null || n === undefined) return "-";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i === 0 ? n : n.toFixed(1)) + " " + units[i];
}

function duration(seconds) {
  if (seconds < 60) return seconds.toFixed(0) + " s";
  if (seconds < 3600) return (seconds / 60).toFixed(0) + " min";
  if (seconds < 86400) return (seconds / 3600).toFixed(1) + " h";
  return (seconds / 86400).toFixed(1) + " d";
}

function clock(epochSeconds) {
  return new Date(epochSeconds * 1000).toLocaleTimeString();
}

// A line of the values over the worker's sample history; the latest value beside it.
function sparkline(values, format) {
  const cell = el("td", null, "spark");
  const shown = values.filter((v) => typeof v === "number");
  if (shown.length > 1) {
    const width = 80, height = 18;
    const min = Math.min(...shown), max = Math.max(...shown);
    const y = (v) => max === min ? height / 2 : height - 1 - (v - min) * (height - 2) / (max - min);
    const points = shown.map((v, i) =>
      (i * width / (shown.length - 1)).toFixed(1) + "," + y(v).toFixed(1));
    const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
    svg.setAttribute("width", width);
    svg.setAttribute("height", height);
    svg.setAttribute("viewBox", "0 0 " + width + " " + height);
    const line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
    line.setAttribute("points", points.join(" "));
    svg.appendChild(line);
    const title = document.createElementNS("http://www.w3.org/2000/svg", "title");
    title.textContent = "min " + format(min) + ", max " + format(max);
    svg.appendChild(title);
    cell.appendChild(svg);
  }
  const latest = shown.length ? format(shown[shown.length - 1]) : "-";
  cell.appendChild(el("span", latest, "value"));
  return cell;
}

// ------------------------------------------------------------------ fetching

async function getJson(path) {
  const response = await fetch(path, { cache: "no-store" });
  if (!response.ok) throw new Error(path + ": HTTP " + response.status);
  return response.json();
}

let refreshing = false;
let refreshAgain = false;
let refreshTimer = null;

async function refresh() {
  if (refreshing) { refreshAgain = true; return; }
  refreshing = true;
  clearTimeout(refreshTimer);
  try {
    const summary = await getJson("/v1/pools");
    noteDaemon(summary.uptime_s, summary.shutting_down);
    const pools = await Promise.all(summary.pools.map(
      (p) => getJson("/v1/pools/" + encodeURIComponent(p.name)).catch(() => p)));
    const outcomes = await getJson("/v1/outcomes?since=" + state.lastSeq);
    const quarantine = await getJson("/v1/quarantine");
    state.fetchFailed = false;
    drawPools(pools);
    drawWorkers(pools);
    takeOutcomes(outcomes);
    drawQuarantine(quarantine.quarantine);
  } catch (error) {
    state.fetchFailed = true;
  } finally {
    drawConnection();
    refreshing = false;
    if (refreshAgain) {
      refreshAgain = false;
      refresh();
    } else {
      refreshTimer = setTimeout(refresh, REFRESH_MS);
    }
  }
}

function noteDaemon(uptime, shuttingDown) {
  const startedAt = Date.now() / 1000 - uptime;
  if (state.daemonStartedAt !== null && Math.abs(startedAt - state.daemonStartedAt) > 2) {
    // A new daemon: its sequence numbers and event ids start over.
    state.outcomes = [];
    state.lastSeq = 0;
    state.expanded.clear();
    state.lastEventId = 0;
  }
  state.daemonStartedAt = startedAt;
  document.getElementById("uptime").textContent =
    "up " + duration(uptime) + (shuttingDown ? ", shutting down" : "");
}

function drawConnection() {
  const node = document.getElementById("connection");
  const live = state.streamLive && !state.fetchFailed;
  node.textContent = live ? "live" : state.fetchFailed ? "daemon not answering" : "reconnecting";
  node.className = "connection " + (live ? "up" : "down");
}

// ------------------------------------------------------------------ drawing

function failed(counters) {
  return FAILURES.reduce((sum, name) => sum + (counters[name] || 0), 0);
}

function drawPools(pools) {
  fill("pools", pools.map((p) => {
    const c = p.counters || {};
    // "+N": the pool's ready standbys (pool key standby), as in `bulkhead status`.
    const standby = p.standby_target
      ? " +" + (p.workers || []).filter((w) => w.state === "standby").length : "";
    const ready = el("td", p.ready_workers + " / " + p.workers_target + standby,
      p.ready_workers < p.workers_target ? "warn" : "");
    const breaker = el("td", p.breaker, p.breaker === "closed" ? "" : "bad");
    const zygote = p.zygote ? p.zygote.state + (p.zygote.refusal ? ": " + p.zygote.refusal : "")
      : "-";
    const tr = row([p.name, p.mode, ready, p.in_flight, p.queue_length + " / " + p.queue_limit,
      breaker, zygote, c.ok || 0, el("td", failed(c), failed(c) ? "bad" : ""), c.retries || 0,
      c.recycles || 0, p.quarantined]);
    tr.dataset.pool = p.name;
    return tr;
  }));
}

function drawWorkers(pools) {
  const rows = [];
  let gpu = false;  // the GPU column shows once any worker has a GPU reading (NVML, gpus)
  for (const p of pools) {
    for (const w of p.workers || []) {
      const history = (w.history || []).slice();  // oldest first
      if (!history.length && w.sample) history.push(w.sample);
      const series = (key) => history.map((s) => s[key]);
      const tr = row([w.id, el("td", w.state, "state-" + w.state), w.pid,
        duration(w.age_s), w.jobs_served, sparkline(series("rss_bytes"), bytes),
        sparkline(series("threads"), String), sparkline(series("maps"), String),
        sparkline(series("fds"), String)]);
      const gpuCell = sparkline(series("gpu_memory_bytes"), bytes);
      gpuCell.classList.add("gpu");
      tr.appendChild(gpuCell);
      gpu = gpu || history.some((s) => typeof s.gpu_memory_bytes === "number");
      tr.dataset.worker = w.id;
      rows.push(tr);
    }
  }
  fill("workers", rows);
  document.getElementById("workers").classList.toggle("has-gpu", gpu);
}

function takeOutcomes(answer) {
  if (answer.last_seq < state.lastSeq) {  // a restarted daemon not yet noticed by its uptime
    state.outcomes = [];
    state.expanded.clear();
  }
  const now = Date.now() / 1000;
  for (const o of answer.outcomes) {
    o.endedAt = now - o.age_s;
    state.outcomes.push(o);
  }
  state.outcomes = state.outcomes.slice(-OUTCOMES_SHOWN);
  state.lastSeq = answer.last_seq;
  drawOutcomes();
}

function drawOutcomes() {
  const rows = [];
  for (const o of state.outcomes.slice().reverse()) {
    const ok = o.outcome === "ok";
    const ms = o.timings ? o.timings.total_ms.toFixed(1) : "-";
    const detail = ok ? (o.worker || "") : (o.quarantined ? "quarantined: " : "") + o.detail;
    const tr = row([clock(o.endedAt), o.job, o.pool, el("td", o.outcome, ok ? "good" : "bad"),
      o.attempts.length, ms, detail], ok ? "" : "failure");
    tr.dataset.job = o.job;
    tr.dataset.outcome = o.outcome;
    if (!ok) {
      tr.addEventListener("click", () => {
        if (state.expanded.has(o.seq)) state.expanded.delete(o.seq);
        else state.expanded.add(o.seq);
        drawOutcomes();
      });
    }
    rows.push(tr);
    if (!ok && state.expanded.has(o.seq)) rows.push(evidenceRow(o));
  }
  fill("outcomes", rows);
}

function evidenceRow(o) {
  const td = el("td", null, "evidence");
  td.colSpan = 7;
  if (!o.attempts.length) td.appendChild(el("p", "no attempt ran: " + o.detail));
  for (const a of o.attempts) {
    const how = [a.outcome];
    if (a.signal) how.push(a.signal + (a.core_dumped ? " (core dumped)" : ""));
    if (a.exit_code !== null && a.exit_code !== undefined) how.push("exit " + a.exit_code);
    if (a.oom_killed) how.push("OOM-killed");
    if (a.limit) how.push("limit " + a.limit + (a.limit_value ? " = " + a.limit_value : ""));
    td.appendChild(el("h3", "attempt " + a.attempt + " on " + a.worker + " (pid " + a.pid +
      "), " + a.run_ms.toFixed(1) + " ms: " + how.join(", ")));
    td.appendChild(el("p", a.cause));
    if (a.last_sample) {
      const s = a.last_sample;
      td.appendChild(el("p", "last sample: RSS " + bytes(s.rss_bytes) + ", " + s.threads +
        " threads, " + (s.maps === null ? "?" : s.maps) + " maps, " + s.fds + " fds"));
    }
    if (a.stderr_tail) {
      td.appendChild(el("h4", "stderr (last bytes)"));
      td.appendChild(el("pre", a.stderr_tail, "stderr"));
    }
    if (a.stacks) {
      td.appendChild(el("h4", "stacks"));
      td.appendChild(el("pre", a.stacks, "stacks"));
    }
  }
  const tr = el("tr", null, "evidence-row");
  tr.appendChild(td);
  tr.dataset.evidenceFor = o.job;
  return tr;
}

function drawEvents() {
  fill("events", state.events.map((e) => {
    const bad = ["crashed", "hung", "oom_killed", "start_failed", "poisoned"].includes(e.kind);
    const tr = row([clock(e.time), e.pool, el("td", e.kind, bad ? "bad" : ""), e.worker || "",
      e.detail || ""]);
    tr.dataset.kind = e.kind;
    return tr;
  }));
}

function drawQuarantine(entries) {
  fill("quarantine", entries.map((q) => row([q.pool, q.fingerprint, q.job, duration(q.age_s),
    q.attempts.map((a) => a.worker + ": " + a.outcome + (a.signal ? " " + a.signal : ""))
      .join("; ")])));
}

// ------------------------------------------------------------------ the event stream

let eventTimer = null;

function onEvent(event) {
  state.events.unshift(event);
  state.events.length = Math.min(state.events.length, EVENTS_SHOWN);
  drawEvents();
  clearTimeout(eventTimer);
  eventTimer = setTimeout(refresh, EVENT_DEBOUNCE_MS);
}

// Server-Sent Events read with fetch (EventSource hands named events only to listeners of
// each name, and the kinds are open-ended). Reconnects with ?since= the last id seen.
async function follow() {
  for (;;) {
    try {
      const response = await fetch("/v1/events?since=" + state.lastEventId, { cache: "no-store" });
      if (!response.ok || !response.body) throw new Error("HTTP " + response.status);
      state.streamLive = true;
      drawConnection();
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          takeMessage(buffer.slice(0, end));
          buffer = buffer.slice(end + 2);
        }
      }
    } catch (error) {
      // the daemon went away or refused: try again below
    }
    state.streamLive = false;
    drawConnection();
    await new Promise((resolve) => setTimeout(resolve, RECONNECT_MS));
  }
}

function takeMessage(text) {
  let id = null, data = "";
  for (const line of text.split("\n")) {
    if (line.startsWith("id:")) id = Number(line.slice(3).trim());
    else if (line.startsWith("data:")) data += line.slice(5).trim();
  }
  if (!data) return;
  if (id !== null) state.lastEventId = id;
  try {
    onEvent(JSON.parse(data));
  } catch (error) {
    // not an event this page knows how to read: skip it
  }
}

refresh();
follow();
