// gravd dashboard: plain modern JavaScript, no dependencies, no build step.
// Polls /v1/mesh and /v1/traffic, streams /v1/tail (server-sent events), reads /v1/events.
// Every value from the server is put in the page with textContent (never as HTML).

const POLL_MS = 2000;
const ANSWER_MS = 5000; // a request gravd has not answered by then fails (a stopped or cut-off gravd never answers)
const MAX_TAIL_ROWS = 500; // the page never holds more rows than this
const SVG = "http://www.w3.org/2000/svg";
const $ = (sel) => document.querySelector(sel);
const TIME_FORMAT = { hour: "2-digit", minute: "2-digit", second: "2-digit", fractionalSecondDigits: 3, hour12: false };
const short = (uuid) => (uuid || "?").slice(0, 8);

function el(tag, attrs = {}, text) {
  const node = tag.startsWith("svg:") ? document.createElementNS(SVG, tag.slice(4)) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

function row(cells, attrs = {}) {
  const tr = el("tr", attrs);
  for (const cell of cells) tr.append(cell instanceof Node ? cell : el("td", {}, String(cell)));
  return tr;
}

async function getJSON(url, options = {}) {
  const response = await fetch(url, { signal: AbortSignal.timeout(ANSWER_MS), ...options });
  const body = await response.json().catch(() => ({}));
  return { status: response.status, ok: response.ok, body };
}

function setStatus(text) { $("#status").textContent = text; }

// -- views -----------------------------------------------------------------------------------------

function showView(name) {
  for (const b of document.querySelectorAll("nav button")) b.classList.toggle("active", b.dataset.view === name);
  for (const s of document.querySelectorAll(".view")) s.hidden = s.id !== `view-${name}`;
  if (name === "events") loadEvents();
}

// -- mesh ------------------------------------------------------------------------------------------

let mesh = null;
// When gravd last answered, and whether a poll is waiting for it (one at a time: polls of a
// gravd that does not answer must not pile up).
const link = { answeredAt: null, polling: false };

// What the page shows was gravd's when it last answered: say since when, and grey it out.
function unreachable(err) {
  const since = link.answeredAt ? ` since ${link.answeredAt.toLocaleTimeString()}` : "";
  const why = err.name === "TimeoutError" ? `no answer within ${ANSWER_MS / 1000} s` : err.message;
  document.body.classList.add("stale");
  setStatus(`gravd unreachable${since} (${why}); what is shown is from then`);
}

async function pollMesh() {
  if (link.polling) return;
  link.polling = true;
  let answer;
  try {
    answer = await getJSON("/v1/mesh");
  } catch (err) {
    unreachable(err);
    return;
  } finally {
    link.polling = false;
  }
  const { ok, status, body } = answer;
  link.answeredAt = new Date();
  document.body.classList.remove("stale");
  if (!ok) { setStatus(`mesh: ${body.error || status}`); return; }
  mesh = body;
  $("#node-id").textContent = `node ${short(body.self)} · ${body.nodes.length} nodes`;
  setStatus(`updated ${link.answeredAt.toLocaleTimeString()}`);
  drawMesh(body);
  drawNodeTable(body);
  drawInterests(body);
}

// the graph's box (index.html's viewBox is 0 0 720 470): a node's three label lines take about
// 80 units above it or 75 below it, so the circle of nodes stays that far from the top and bottom
const CX = 360, CY = 235, R = 150;

function layout(nodes) {
  const cx = CX, cy = CY, r = nodes.length > 1 ? R : 0;
  const at = new Map();
  nodes.forEach((n, i) => {
    const a = (2 * Math.PI * i) / nodes.length - Math.PI / 2;
    at.set(n.uuid, { x: cx + r * Math.cos(a), y: cy + r * Math.sin(a) });
  });
  return at;
}

function drawMesh(doc) {
  const svg = $("#mesh-graph");
  svg.replaceChildren();
  const at = layout(doc.nodes);
  for (const link of doc.links) {
    const a = at.get(link.a), b = at.get(link.b);
    if (!a || !b) continue;
    const g = el("svg:g", { class: "link-group" });
    g.append(el("svg:line", {
      class: `link ${link.state}`, x1: a.x, y1: a.y, x2: b.x, y2: b.y,
      "data-a": link.a, "data-b": link.b, "data-state": link.state,
    }));
    const rtt = link.rtt_seconds == null ? "rtt ?" : `${(link.rtt_seconds * 1000).toFixed(1)} ms`;
    const detail = link.state === "open" ? rtt : link.state;
    const label = el("svg:text", { class: "link-label", x: (a.x + b.x) / 2, y: (a.y + b.y) / 2 + 4, "text-anchor": "middle" },
      `${link.transport || "?"} · ${detail}`);
    g.append(label);
    svg.append(g);
    // a card-coloured box behind the label: a line along the text shows between its letters
    const box = label.getBBox();
    g.insertBefore(el("svg:rect", {
      class: "link-label-bg", x: box.x - 3, y: box.y - 1, width: box.width + 6, height: box.height + 2, rx: 3,
    }), label);
  }
  for (const node of doc.nodes) {
    const p = at.get(node.uuid);
    const self = node.uuid === doc.self;
    const g = el("svg:g", {
      class: `node ${node.state}${self ? " self" : ""}`, "data-uuid": node.uuid, "data-state": node.state,
      transform: `translate(${p.x},${p.y})`,
    });
    const dy = p.y < CY ? -66 : 40; // labels away from the centre, where the links cross
    g.append(el("svg:circle", { r: 22 }));
    g.append(el("svg:title", {}, node.uuid));
    g.append(el("svg:text", { class: "node-name", y: dy, "text-anchor": "middle" }, short(node.uuid) + (self ? " (this node)" : "")));
    g.append(el("svg:text", { class: "node-state", y: dy + 15, "text-anchor": "middle" }, node.state));
    g.append(el("svg:text", { class: "node-leaves", y: dy + 30, "text-anchor": "middle" },
      `${node.leaves} ${node.leaves === 1 ? "leaf" : "leaves"} · ${node.pods} pods`));
    svg.append(g);
  }
}

function drawNodeTable(doc) {
  const body = $("#mesh-nodes tbody");
  body.replaceChildren(...doc.nodes.map((n) => row([
    el("td", { class: "mono", title: n.uuid }, short(n.uuid) + (n.uuid === doc.self ? " ★" : "")),
    n.state, n.version || "", n.pods,
    el("td", { title: (n.leaf_names || []).join(", ") || "no named apps" }, String(n.leaves)),
    el("td", { class: "mono" }, (n.endpoints || []).join(" ")), el("td", { class: "mono" }, n.monitor || ""),
  ], { "data-uuid": n.uuid })));
}

function badges(patterns) {
  const td = el("td");
  if (!patterns.length) td.append(el("span", { class: "muted" }, "nothing"));
  for (const p of patterns) td.append(el("span", { class: "badge mono" }, p));
  return td;
}

function drawInterests(doc) {
  $("#interests tbody").replaceChildren(...doc.nodes.map((n) => row([
    el("td", { class: "mono", title: n.uuid }, short(n.uuid)), n.pods, badges(n.interests || []), badges(n.leaf_interests || []),
  ], { "data-uuid": n.uuid })));
}

// -- traffic ---------------------------------------------------------------------------------------

function chart(title, samples, pick, capacity, w = 600) {
  const h = w / 5, pad = 28;
  const box = el("div", { class: "chart-box" });
  const series = ["in", "out", "dropped"].map((k) => samples.map((s) => pick(s)[k]));
  const max = Math.max(1, ...series.flat());
  const last = samples.length ? pick(samples[samples.length - 1]) : { in: 0, out: 0, dropped: 0 };
  box.append(el("div", { class: "chart-title" }, title));
  const legend = el("div", { class: "chart-legend" });
  for (const k of ["in", "out", "dropped"]) legend.append(el("span", { class: k }, `${k} ${last[k].toFixed(1)}/s`));
  box.append(legend);
  const svg = el("svg:svg", { class: "chart", viewBox: `0 0 ${w} ${h}` });
  svg.append(el("svg:line", { class: "axis", x1: pad, y1: h - 14, x2: w, y2: h - 14 }));
  svg.append(el("svg:text", { x: 0, y: 10 }, max.toFixed(0)));
  svg.append(el("svg:text", { x: 0, y: h - 14 }, "0"));
  svg.append(el("svg:text", { x: pad, y: h - 2 }, "-5 min"));
  svg.append(el("svg:text", { x: w - 24, y: h - 2 }, "now"));
  const x = (i) => pad + ((w - pad) * (capacity - samples.length + i)) / Math.max(1, capacity - 1);
  const y = (v) => h - 14 - ((h - 24) * v) / max;
  ["in", "out", "dropped"].forEach((k, j) => {
    const points = series[j].map((v, i) => `${x(i).toFixed(1)},${y(v).toFixed(1)}`).join(" ");
    svg.append(el("svg:polyline", { class: k, points }));
  });
  box.append(svg);
  return box;
}

let trafficPolling = false;

async function pollTraffic() {
  if (trafficPolling) return;
  trafficPolling = true;
  const { ok, body } = await getJSON("/v1/traffic").catch(() => ({ ok: false }));
  trafficPolling = false;
  if (!ok) return;
  const samples = body.samples, cap = body.capacity;
  $("#traffic-node").replaceChildren(chart("this node (mesh messages)", samples, (s) => s, cap, 900));
  const links = new Set(samples.flatMap((s) => Object.keys(s.links)));
  const zero = { in: 0, out: 0, dropped: 0 };
  $("#traffic-links").replaceChildren(...[...links].sort().map((uuid) =>
    chart(`link ${short(uuid)}`, samples, (s) => s.links[uuid] || zero, cap, 320)));
  $("#drops tbody").replaceChildren(...Object.entries(body.dropped_by_reason).map(([r, n]) => row([r, n])));
}

// -- live tail -------------------------------------------------------------------------------------

const tail = { source: null, paused: false, missed: 0, stats: null };

function tailInfo() {
  const s = tail.stats;
  const parts = [`${$("#tail tbody").rows.length} rows`];
  if (s) parts.push(`skipped ${s.skipped} (rate limit)`, `inbox drops ${s.inbox_dropped}`);
  if (tail.paused) parts.push(`paused, ${tail.missed} not shown`);
  $("#tail-info").textContent = parts.join(" · ");
}

function repreview() {
  for (const tr of $("#tail tbody").rows) tr.lastElementChild.textContent = preview(tr.message);
}

function preview(msg) {
  const mode = $("#tail-preview").value;
  if (mode === "json") return msg.json !== null ? JSON.stringify(msg.json) : "(not JSON)";
  if (mode === "hex") return msg.hex;
  return msg.text !== null ? msg.text + (msg.truncated ? "…" : "") : "(binary)";
}

function addRows(rows) {
  if (tail.paused) { tail.missed += rows.length; tailInfo(); return; }
  const body = $("#tail tbody");
  for (const msg of rows) {
    const tr = row([
      new Date(msg.time * 1000).toLocaleTimeString(undefined, TIME_FORMAT),
      el("td", { class: "mono" }, msg.type), msg.size, el("td", { class: "mono", title: msg.uuid }, msg.sender),
      el("td", { class: "mono data" }, preview(msg)),
    ], { class: "tail-row" });
    tr.message = msg;
    body.prepend(tr);
  }
  while (body.rows.length > MAX_TAIL_ROWS) body.lastElementChild.remove();
  tailInfo();
}

function startTail(event) {
  event?.preventDefault();
  stopTail();
  const url = `/v1/tail?pattern=${encodeURIComponent($("#tail-pattern").value.trim())}`;
  $("#tail-error").hidden = true;
  const source = new EventSource(url);
  tail.source = source;
  source.addEventListener("rows", (e) => addRows(JSON.parse(e.data)));
  source.addEventListener("stats", (e) => { tail.stats = JSON.parse(e.data); tailInfo(); });
  source.onopen = () => { $("#tail-error").hidden = true; }; // (again) after an interruption
  source.addEventListener("end", (e) => {
    const s = JSON.parse(e.data);
    tailError(s.dropped ? "this browser did not keep up and was dropped by gravd; press Tail again" : "the tail ended");
    stopTail();
  });
  source.onerror = () => {
    if (source.readyState === EventSource.CLOSED) explainTailFailure(url);
    else tailError("the tail stream was interrupted (gravd unreachable?); reconnecting…"); // the browser retries
  };
  $("#tail-pause").disabled = false;
  $("#tail-start").textContent = "Restart";
}

async function explainTailFailure(url) {
  const abort = new AbortController();
  const response = await fetch(url, { signal: abort.signal }).catch(() => null);
  abort.abort();
  if (response && !response.ok) {
    const body = await response.json().catch(() => ({}));
    tailError(body.error || `HTTP ${response.status}`);
  } else tailError("the tail stream was interrupted");
  stopTail();
}

function tailError(text) { const p = $("#tail-error"); p.textContent = text; p.hidden = false; }

function stopTail() {
  if (tail.source) tail.source.close();
  tail.source = null;
  $("#tail-pause").disabled = true;
}

function togglePause() {
  tail.paused = !tail.paused;
  tail.missed = 0;
  $("#tail-pause").textContent = tail.paused ? "Resume" : "Pause";
  tailInfo();
}

// -- events inbox ----------------------------------------------------------------------------------

const events = { page: 1, pageSize: 20, total: 0, asked: 0 };

// Only the newest request draws: a slow answer to an older filter must not overwrite a newer one.
async function loadEvents(event) {
  event?.preventDefault();
  const asked = ++events.asked;
  const q = new URLSearchParams({ page: events.page, page_size: events.pageSize });
  for (const k of ["severity", "category", "status"]) {
    const v = $(`#events-${k}`).value.trim();
    if (v) q.set(k, v);
  }
  const message = $("#events-message");
  const { status, ok, body } = await getJSON(`/v1/events?${q}`).catch(() => ({ status: 0, body: {} }));
  if (asked !== events.asked) return;
  message.hidden = ok;
  $("#events").hidden = !ok;
  if (!ok) {
    message.textContent = status === 404 ? "Events are not available on this node." : `Events could not be read: ${body.error || status}`;
    $("#events tbody").replaceChildren();
    return;
  }
  events.total = body.total;
  const pages = Math.max(1, Math.ceil(body.total / body.page_size));
  $("#events-page").textContent = `page ${body.page} of ${pages} · ${body.total} events`;
  $("#events tbody").replaceChildren(...body.events.map(eventRow));
}

function eventRow(ev) {
  const mark = el("td");
  if (ev.status !== "read") {
    const b = el("button", { type: "button" }, "Mark read");
    b.addEventListener("click", () => markRead(ev.id));
    mark.append(b);
  }
  return row([
    new Date(ev.created_at * 1000).toLocaleString(), // (Unix seconds)
    el("td", { class: `sev-${ev.severity}` }, ev.severity),
    ev.category, ev.action, ev.description, ev.status, mark,
  ], { class: ev.status === "read" ? "event" : "event unread", "data-id": ev.id });
}

// A failure is said under the filters, where the click was (the header is the mesh poll's), and
// the list is left as it is: reloading it would hide the message.
async function markRead(id) {
  const { ok, status, body } = await getJSON(`/v1/events/${encodeURIComponent(id)}`, {
    method: "PATCH", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ status: "read" }),
  }).catch((err) => ({ ok: false, status: 0, body: { error: `gravd unreachable (${err.message})` } }));
  if (!ok) {
    const message = $("#events-message");
    message.textContent = `Could not mark the event read: ${body.error || status}`;
    message.hidden = false;
    return;
  }
  loadEvents();
}

function turnPage(delta) {
  const pages = Math.max(1, Math.ceil(events.total / events.pageSize));
  events.page = Math.min(pages, Math.max(1, events.page + delta));
  loadEvents();
}

// -- start -----------------------------------------------------------------------------------------

function every(ms, fn) { fn(); setInterval(fn, ms); }

document.addEventListener("DOMContentLoaded", () => {
  for (const b of document.querySelectorAll("nav button")) b.addEventListener("click", () => showView(b.dataset.view));
  $("#tail-form").addEventListener("submit", startTail);
  $("#tail-pause").addEventListener("click", togglePause);
  $("#tail-preview").addEventListener("change", repreview);
  $("#tail-clear").addEventListener("click", () => { $("#tail tbody").replaceChildren(); tail.missed = 0; tailInfo(); });
  $("#events-form").addEventListener("submit", (e) => { events.page = 1; loadEvents(e); });
  $("#events-prev").addEventListener("click", () => turnPage(-1));
  $("#events-next").addEventListener("click", () => turnPage(1));
  every(POLL_MS, pollMesh);
  every(POLL_MS, pollTraffic);
});
